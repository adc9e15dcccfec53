"""``wsk export MODEL_OR_ZOO_NAME OUT``: a TensorFlow SavedModel for TensorFlow Serving."""

import click

from wsk.cli.options import PathOrURL
from wsk.cli.predict import crf_options, crf_params
from wsk.errors import WskError


@click.command("export")
@click.argument("model")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--classes", type=PathOrURL(exists=True), default=None,
              help="Dataset root (or its classes.txt) naming the classes of a .keras model; "
                   "default: the zoo card's, or VOC's when the class count fits.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.option("--max-side", type=click.IntRange(min=1), default=None,
              help="Longer side, pixels, the exported model runs the network and the CRF at; larger "
                   "photos are resized down and their labels come back at their own size "
                   "[default: the model's training scale from its description or card, else 500].")
@crf_options
def export(model, out, classes, overwrite, max_side, **crf):
    """Export MODEL (a .keras file or a zoo name) as a SavedModel in OUT.

    Signature `serving_default`: `images` uint8 [batch, height, width, 3] RGB of any size ->
    `labels` int32 [batch, height, width] and `probabilities` float32 [batch, h, w, classes] at the
    working size (segmentation; with --crf, the dense CRF's marginals), or `probabilities` float32
    [batch, classes] (HCP). Signature `padded` (segmentation): `images` and `sizes` int32
    [batch, 2] of a padded batch -> `labels`. Class names are in OUT/assets/classes.txt.
    """
    # deferred on purpose: `wsk --help` stays fast (the stages import TensorFlow)
    from wsk.export import SIGNATURE, export as export_model

    if crf.pop("crf_backend") != "keras":
        raise WskError("the exported model's CRF is wsk's own (--crf-backend keras)")
    path = export_model(model, out, classes=classes, overwrite=overwrite, max_side=max_side,
                        crf=crf_params(**crf))
    click.echo(f"wrote {path} (signature {SIGNATURE}; "
               f"check with: saved_model_cli show --dir {path} --tag_set serve --signature_def {SIGNATURE})")


COMMANDS = [export]
