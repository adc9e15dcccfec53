"""``wsk export MODEL_OR_ZOO_NAME OUT``: a TensorFlow SavedModel for TensorFlow Serving."""

import click


@click.command("export")
@click.argument("model")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--classes", type=click.Path(exists=True), default=None,
              help="Dataset root (or its classes.txt) naming the classes of a .keras model; "
                   "default: the zoo card's, or VOC's when the class count fits.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def export(model, out, classes, overwrite):
    """Export MODEL (a .keras file or a zoo name) as a SavedModel in OUT.

    Signature `serving_default`: `images` uint8 [batch, height, width, 3] RGB of any size ->
    `labels` int32 [batch, height, width] and `probabilities` float32 [batch, height, width,
    classes] (segmentation), or `probabilities` float32 [batch, classes] (HCP). Class names are in
    OUT/assets/classes.txt.
    """
    # deferred on purpose: `wsk --help` stays fast (the stages import TensorFlow)
    from wsk.export import SIGNATURE, export as export_model

    path = export_model(model, out, classes=classes, overwrite=overwrite)
    click.echo(f"wrote {path} (signature {SIGNATURE}; "
               f"check with: saved_model_cli show --dir {path} --tag_set serve --signature_def {SIGNATURE})")


COMMANDS = [export]
