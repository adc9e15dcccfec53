"""``wsk predict MODEL IMAGES... --out DIR``: label maps from a trained segmentation network.

``crf_options`` and ``crf_params`` are shared with ``wsk eval --model``.
"""

import functools

import click

from wsk.crf import CRF_BACKENDS, CRFParams


def crf_options(command):
    """Add ``--crf`` and the dense CRF parameters (defaults: DeepLab-LargeFOV's) to a command."""
    defaults = CRFParams()
    options = [
        click.option("--crf/--no-crf", default=False, show_default=True,
                     help="Refine the network's softmax with a fully connected CRF."),
        click.option("--crf-bi-w", type=float, default=defaults.bi_w, show_default=True,
                     help="CRF: weight of the appearance (bilateral) kernel."),
        click.option("--crf-bi-xy-std", type=float, default=defaults.bi_xy_std, show_default=True,
                     help="CRF: spatial std of the appearance kernel (pixels at --crf-reference-side)."),
        click.option("--crf-bi-rgb-std", type=float, default=defaults.bi_rgb_std, show_default=True,
                     help="CRF: colour std of the appearance kernel."),
        click.option("--crf-pos-w", type=float, default=defaults.pos_w, show_default=True,
                     help="CRF: weight of the smoothness (Gaussian) kernel."),
        click.option("--crf-pos-xy-std", type=float, default=defaults.pos_xy_std, show_default=True,
                     help="CRF: spatial std of the smoothness kernel (pixels at --crf-reference-side)."),
        click.option("--crf-iterations", type=int, default=defaults.iterations, show_default=True,
                     help="CRF: mean-field iterations."),
        click.option("--crf-backend", type=click.Choice(CRF_BACKENDS), default=CRF_BACKENDS[0],
                     show_default=True,
                     help="CRF: keras (wsk's own, in the process) or densecrf (pydensecrf, "
                          "pip install 'wsk[densecrf]'); the same CRF."),
        click.option("--crf-reference-side", type=float, default=defaults.reference_side, show_default=True,
                     help="CRF: the longer image side the spatial stds are given for; each image scales "
                          "them by its own longer side over this (0: absolute pixels)."),
    ]
    return functools.reduce(lambda cmd, option: option(cmd), reversed(options), command)


def crf_params(crf, crf_bi_w, crf_bi_xy_std, crf_bi_rgb_std, crf_pos_w, crf_pos_xy_std,
               crf_iterations, crf_reference_side):
    """The ``CRFParams`` the ``crf_options`` ask for, or ``None`` without ``--crf``."""
    if not crf:
        return None
    return CRFParams(bi_w=crf_bi_w, bi_xy_std=crf_bi_xy_std, bi_rgb_std=crf_bi_rgb_std,
                     pos_w=crf_pos_w, pos_xy_std=crf_pos_xy_std, iterations=crf_iterations,
                     reference_side=crf_reference_side or None)


@click.command("predict")
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--out", "-o", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for the label PNGs (one <id>.png per image, palette colours).")
@click.option("--format", "layout", type=click.Choice(["png", "voc-test"]), default="png",
              show_default=True,
              help="png: OUT/<id>.png; voc-test: OUT/results/VOC2012/Segmentation/"
                   "comp6_test_cls/<id>.png, the layout the PASCAL evaluation server takes.")
@crf_options
@click.option("--jobs", "-j", type=int, default=None,
              help="CRF worker processes [default: all cores].")
@click.option("--batch-size", type=int, default=1, show_default=True,
              help="Images of the same size segmented together.")
@click.option("--max-side", type=click.IntRange(min=1), default=None,
              help="Longer side, pixels, the network and the CRF run at; larger photos are resized "
                   "down and their labels come back at the photo's size [default: the model's "
                   "training scale from its description, else 500].")
def predict(model, images, out_dir, layout, jobs, batch_size, max_side, **crf):
    """Segment IMAGES (files or folders of images) with MODEL, a .keras segmentation network.

    Images whose PNG already exists (and has the image's size) are skipped, so an
    interrupted run resumes where it stopped.
    """
    # deferred on purpose: `wsk --help` stays fast (the stages import TensorFlow)
    from wsk.models.saving import load_model
    from wsk.predict import image_files, predict_images
    from wsk.zoo import recorded_max_side
    from wsk.stages import default_jobs

    backend = crf.pop("crf_backend")
    params = crf_params(**crf)
    files = image_files(images)
    network = load_model(model)
    report = predict_images(network, files, out_dir, crf=params, crf_backend=backend,
                            jobs=default_jobs() if jobs is None else max(1, jobs),
                            batch_size=batch_size, layout=layout,
                            max_side=recorded_max_side(model) if max_side is None else max_side)
    click.echo(report.summary(), err=True)
    report.raise_if_failed()


COMMANDS = [predict]
