"""Turn a trained segmentation model into a built-in zoo card with shipped weights, measured.

    python benchmarks/make_zoo_card.py WORK/seg/SN_B/model.keras deeplab_largefov.synthetic_snb \\
        --images 200 --size 96 --seed 0 --recipe demo [--eval EVAL.json --eval-command "wsk eval ..."]

``--images/--size/--seed`` are the ``wsk data synth`` arguments of the synthetic dataset the model
was trained on. The script

1. rebuilds the model with its ``wsk.models`` builder (arguments from the ``wsk train`` sidecar
   ``model.json`` beside MODEL, else ``--width`` or the recipe's width) and loads the trained
   weights into it, which checks that the card's builder really reproduces the model;
2. regenerates the synthetic dataset from those arguments and measures mIoU on ``--split``
   (``wsk.models.inference.segment``, no CRF; ``wsk.metrics``). With ``--eval`` (the JSON of
   ``wsk eval --json``) the recorded mIoU and command are that evaluation's, and the two
   measurements must agree within 0.5 points;
3. writes the clean, uncompiled model to ``zoo/weights/NAME.keras`` and the card to
   ``zoo/cards/NAME.json`` (sha256, size, classes, preprocessing, recipe, dataset, mIoU and the
   command that measured it, licence).

``tests/test_zoo.py`` regenerates the same validation set from the card and checks the mIoU.
"""

import hashlib
import os
import shlex
import sys
import tempfile

import click
from keras import ops

import wsk.zoo
from wsk import registry
from wsk.data.synthetic import generate_dataset
from wsk.data.voc import VOCDataset
from wsk.errors import WskError
from wsk.io import atomic_path, load_json
from wsk.metrics import evaluate_dataset
from wsk.models.inference import segment
from wsk.models.saving import load_model, load_weights_file
from wsk.recipes import get_recipe

TOLERANCE = 0.005   # 0.5 mIoU points


def measure(model, dataset):
    """``wsk.metrics.EvalResult`` of ``model`` (through ``wsk.models.inference.segment``) on ``dataset``."""

    def predict(image_id):
        labels, _ = segment(model, dataset.image(image_id)[None])
        return ops.convert_to_numpy(labels)[0]

    return evaluate_dataset(dataset, predict, name="zoo card")


def masks_fingerprint(dataset):
    """sha256 over the split's ids and decoded ground-truth masks: changes when the generator does."""
    digest = hashlib.sha256()
    for image_id in dataset.ids:
        digest.update(image_id.encode())
        digest.update(dataset.mask(image_id).tobytes())
    return digest.hexdigest()


def eval_json_miou(path, split, num_images, result_name=None):
    """The mIoU (fraction) recorded by ``wsk eval --json`` at ``path``, checked against the split."""
    report = load_json(path)
    if report.get("split") != split or report.get("num_images") != num_images:
        raise WskError(f"evaluates split {report.get('split')!r} with {report.get('num_images')} images, "
                       f"not {split!r} with {num_images}", path)
    results = report.get("results") or []
    if result_name is not None:
        results = [r for r in results if r.get("name") == result_name]
    if len(results) != 1 or results[0].get("miou") is None:
        raise WskError("expected exactly one result with an mIoU (choose one with --eval-result)", path)
    return float(results[0]["miou"])


@click.command()
@click.argument("model_path", type=click.Path(exists=True, dir_okay=False))
@click.argument("name")
@click.option("--images", "num_images", type=int, required=True, help="wsk data synth --images")
@click.option("--size", type=int, required=True, help="wsk data synth --size")
@click.option("--seed", type=int, required=True, help="wsk data synth --seed")
@click.option("--split", default="val", show_default=True, help="Split the mIoU is measured on.")
@click.option("--recipe", default="demo", show_default=True, help="Recipe the model was trained with.")
@click.option("--width", type=float, default=None, help="Builder width when MODEL has no sidecar.")
@click.option("--eval", "eval_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="JSON of `wsk eval --json` that measured this model.")
@click.option("--eval-command", default=None, help="The command that wrote --eval.")
@click.option("--eval-result", default=None, help="Name of the result in --eval, if it holds several.")
@click.option("--licence", default="Apache-2.0", show_default=True)
@click.option("--description", default=None)
def main(model_path, name, num_images, size, seed, split, recipe, width, eval_path, eval_command,
         eval_result, licence, description):
    """Write zoo/weights/NAME.keras and zoo/cards/NAME.json for MODEL_PATH."""
    registry.check_name(name)
    if eval_path and not eval_command:
        raise WskError("--eval needs --eval-command (the command that measured it)")
    trained = load_model(model_path)
    if len(trained.inputs[0].shape) != 4:
        raise WskError("built-in cards are measured on segmentation models only", model_path)
    sidecar = wsk.zoo.training_description(model_path)
    with tempfile.TemporaryDirectory(prefix="wsk-zoo-card-") as tmp:
        root = os.path.join(tmp, "synthetic")
        generate_dataset(root, num_images=num_images, size=size, seed=seed)
        dataset = VOCDataset(root, split)
        class_names = list(dataset.class_names)
        if sidecar is not None and list(sidecar.class_names) != class_names:
            raise WskError(f"the model was trained on classes {list(sidecar.class_names)}, the dataset "
                           f"has {class_names}", model_path)
        if sidecar is not None:
            builder, builder_args = sidecar.architecture, sidecar.builder_args()
        else:
            builder = "deeplab_largefov"
            builder_args = {"num_classes": len(class_names),
                            "width": width if width is not None else get_recipe(recipe).seg.width}
        card = {"name": name, "builder": builder, "builder_args": builder_args}
        model = wsk.zoo.build(card)
        load_weights_file(model, model_path, name)
        result = measure(model, dataset)
        fingerprint = masks_fingerprint(dataset)
    measured = result.mean_iou
    command = "python benchmarks/make_zoo_card.py " + shlex.join(sys.argv[1:])
    miou = measured
    if eval_path:
        miou = eval_json_miou(eval_path, split, len(dataset.ids), eval_result)
        if abs(miou - measured) > TOLERANCE:
            raise WskError(f"records mIoU {100 * miou:.2f} but the model measures {100 * measured:.2f} "
                           f"on the regenerated {split} set (other dataset arguments?)", eval_path)
        command = eval_command

    weights_path = os.path.join(registry.WEIGHTS_DIR, f"{name}.keras")
    with atomic_path(weights_path) as tmp_path:
        model.save(tmp_path)
    os.chmod(weights_path, 0o644)  # shipped in the package: readable by everyone
    weights = {"file": f"{name}.keras", "url": None, "sha256": registry.sha256_of(weights_path),
               "size": os.path.getsize(weights_path)}
    metrics = {"miou": round(miou, 6), "split": split, "crf": False, "images": len(dataset.ids),
               "masks_sha256": fingerprint,
               "command": command,
               "iou": {c: (None if v != v else round(float(v), 6)) for c, v in zip(class_names, result.iou)}}
    data = {"name": "synthetic", "generator": "wsk.data.synthetic.generate_dataset",
            "num_images": num_images, "size": size, "seed": seed,
            "command": f"wsk data synth DIR --images {num_images} --size {size} --seed {seed}"}
    card = wsk.zoo.model_card(
        name, model, class_names, weights, builder=builder, builder_args=builder_args, recipe=recipe,
        dataset=data, metrics=metrics, licence=licence, training=wsk.zoo.training_record(sidecar),
        description=description or f"DeepLab-LargeFOV ({builder_args.get('width')} width) trained by the "
                                   f"{recipe} recipe on the synthetic dataset")
    card_path = registry.write_builtin_card(card)
    click.echo(f"{name}: mIoU {100 * miou:.2f} on {len(dataset.ids)} {split} images "
               f"(measured here: {100 * measured:.2f})")
    click.echo(f"wrote {weights_path} ({weights['size']} bytes, sha256 {weights['sha256']})")
    click.echo(f"wrote {card_path}")


if __name__ == "__main__":
    try:
        main(standalone_mode=True)
    except WskError as err:
        sys.exit(f"Error: {err}")
