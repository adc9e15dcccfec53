"""``wsk eval``: mIoU of predicted label maps against a dataset's ground truth (Table 1 layout)."""

import os

import click

from wsk import storage
from wsk.cli.options import data_options, pop_data, source_of
from wsk.cli.predict import crf_options, crf_params
from wsk.errors import WskError
from wsk.stages import default_jobs


def prediction_sources(pred_dirs):
    """``[(column name, predict)]`` for each ``--pred`` folder (``predict(id)`` -> label map).

    A column is named after its folder (the full path where two folders share a name).
    Other sources (a model) plug in as further ``(name, callable)`` pairs.
    """
    # deferred on purpose: `wsk --help` stays fast (the stages import TensorFlow)
    from wsk.metrics import PredictionFolder

    full = [d.rstrip("/") if storage.is_url(d) else os.path.normpath(d) for d in pred_dirs]
    names = [os.path.basename(d) for d in full]
    return [(name if names.count(name) == 1 else d, PredictionFolder(d)) for name, d in zip(names, full)]


def model_results(root, split, model_paths, crf, jobs, crf_backend="keras", max_side=None):
    """``EvalResult`` of each model on the split: without CRF, and with it when ``crf`` is given.
    ``max_side`` None: each model's training scale (``wsk.zoo.recorded_max_side``)."""
    # deferred on purpose: `wsk --help` stays fast (the stages import TensorFlow)
    from wsk.models.saving import load_model
    from wsk.predict import evaluate_model
    from wsk.zoo import recorded_max_side

    results = []
    for path in model_paths:
        name = os.path.basename(os.path.dirname(storage.absolute(path))) or os.path.basename(path)
        model = load_model(path)
        side = recorded_max_side(path) if max_side is None else max_side
        results.append(evaluate_model(model, root, split, jobs=jobs, name=name, max_side=side))
        if crf is not None:
            results.append(evaluate_model(model, root, split, crf=crf, jobs=jobs, name=f"{name}+CRF",
                                          crf_backend=crf_backend, max_side=side))
    return results


@click.command("eval")
@data_options
@click.option("--split", default=None,
              help="Split of DATA to evaluate on [default: val; a COCO JSON without --val: its own images].")
@click.option("--pred", "pred_dirs", multiple=True, type=click.Path(file_okay=False),
              help="Folder of predicted label maps <id>.png (class indices); repeat to compare "
                   "several results side by side.")
@click.option("--model", "model_paths", multiple=True, type=click.Path(dir_okay=False),
              help="A trained .keras segmentation model to run over the split; repeat for several "
                   "(one column each, named after the model's folder, e.g. SN_B).")
@crf_options
@click.option("--jobs", "-j", type=click.IntRange(1), default=None,
              help="CRF worker processes [default: all cores].")
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Also write the results (IoU per class, mIoU, pixel accuracy, confusion matrix) here.")
@click.option("--max-side", type=click.IntRange(min=1), default=None,
              help="--model: the longer side, pixels, the network and the CRF run at; the labels come "
                   "back at each image's size [default: each model's training scale, else 500].")
def evaluate(split, pred_dirs, model_paths, json_path, jobs, max_side, **crf_settings):
    """Evaluate predictions on a split of the dataset DATA (a VOC folder, a labels file, a COCO JSON).

    Accumulates one confusion matrix over the split (pixels labelled 255 ignored) and
    prints IoU per class and mIoU in %, one column per result, as Table 1 of the paper.
    Every image of the split needs a prediction of the size of its ground truth.
    With --model, the network predicts the split (padding to the 8k+1 grid, aligned-corner
    upsampling); with --crf each model gives two columns, without and with the dense CRF.
    """
    # deferred on purpose: `wsk --help` stays fast (the stages import TensorFlow)
    from wsk.data.sources import open_dataset
    from wsk.io import save_json
    from wsk.metrics import evaluate_dataset, evaluation_report, format_table

    if not pred_dirs and not model_paths:
        raise WskError("nothing to evaluate: give --pred DIR (a folder of <id>.png label maps) "
                       "or --model MODEL.keras")
    source = source_of(**pop_data(crf_settings))
    split = split or ("train" if source.kind == "coco" and not source.val else "val")
    root = source
    dataset = open_dataset(source, split)
    if not dataset.ids:
        raise WskError(f"split {split!r} lists no images", source.path)
    results = [evaluate_dataset(dataset, predict, name=name) for name, predict in prediction_sources(pred_dirs)]
    backend = crf_settings.pop("crf_backend")
    results += model_results(root, split, model_paths, crf_params(**crf_settings), jobs or default_jobs(),
                             backend, max_side)
    click.echo(format_table({r.name: r.iou for r in results}, dataset.class_names))
    for r in results:
        click.echo(f"{r.name}: mIoU {100 * r.mean_iou:.1f}%, pixel accuracy {100 * r.pixel_accuracy:.1f}% "
                   f"on {len(dataset)} images")
    if json_path:
        save_json(json_path, evaluation_report(dataset, results))
        click.echo(f"Wrote {json_path}")


COMMANDS = [evaluate]
