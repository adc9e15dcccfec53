"""Run a trained segmentation network over images: label PNGs, optional dense CRF, evaluation.

``predict_images`` / ``predict_dataset`` write one palette PNG per image id and resume: an id
whose PNG already exists, is readable and has the image's size is skipped. The network runs
in this process on batches of equally sized images at most ``max_side`` on the longer side (a larger
photo is resized down, segmented, refined, and its labels up-sampled back to its own size a band of
rows at a time: ``wsk.models.inference``); the dense CRF (``wsk.crf``) runs in this process, in
``jobs`` threads beside the network, except with the densecrf backend, ``jobs > 1`` and photos that
fit ``max_side``: then in worker processes (``wsk.stages.run_per_image``) that read the softmax
saved to a temporary ``.npz`` per image.

Output layouts (``layout``):

``png``        ``OUT/<id>.png``
``voc-test``   ``OUT/results/VOC2012/Segmentation/comp6_test_cls/<id>.png``, the archive layout
               the PASCAL VOC evaluation server takes (comp6: trained with data beyond VOC).
"""

import concurrent.futures
import dataclasses
import functools
import os
import shutil
import tempfile

import numpy as np
from keras import ops
from PIL import Image

from wsk import storage
from wsk.crf import dense_crf, refine_saved
from wsk.data.sources import open_dataset
from wsk.errors import WskError
from wsk.models.description import recipe_max_side
from wsk.models.inference import resize_image, segment, upsample_labels, working_size
from wsk.models.tasks import raw_network
from wsk.io import IMAGE_SUFFIXES, image_size, read_image, remove_temporaries, save_npz, write_label_png
from wsk.metrics import PredictionFolder, evaluate_dataset
from wsk.stages import IN_FLIGHT, StageReport, progress, run_per_image, worker_pool

LAYOUTS = {
    "png": (),
    "voc-test": ("results", "VOC2012", "Segmentation", "comp6_test_cls"),
}
# Below this many pixels in all, the dense CRF runs in this process: starting workers costs more
# than they save (measured on the demo's 120 val images of 64 x 64: 17 s here, 40 s with 2 workers).
CRF_WORKERS_MIN_PIXELS = 16 * 2**20
# Softmax maps waiting for a CRF worker live here (inside the output folder) until their PNG exists.
PENDING_DIR = ".crf-pending"
# ``batch_size=None`` (what the evaluation stage passes): as many same-size images in a batch as fit
# in this many pixels, so the demo's 64 px images go 16 at a time and VOC's photos one at a time
BATCH_PIXELS = 1 << 16


def output_folder(out_dir, layout="png"):
    """The folder that receives the PNGs for ``layout`` (``png`` or ``voc-test``)."""
    if layout not in LAYOUTS:
        raise WskError(f"unknown output format {layout!r}; choose one of {', '.join(LAYOUTS)}")
    return os.path.join(os.fspath(out_dir), *LAYOUTS[layout])


def image_files(paths):
    """``{id: path}`` for image files and folders of images (ids are file names without suffix).

    Folders contribute their image files (not recursively), sorted by name. A missing path, a
    folder without images or two images with the same id are ``WskError``s.
    """
    found = {}
    for path in paths:
        path = os.fspath(path)
        if storage.isdir(path):
            names = sorted(name for name in storage.listdir(path)
                           if name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith("."))
            if not names:
                raise WskError("no images in this folder", path)
            files = [os.path.join(path, name) for name in names]
        elif storage.isfile(path):
            files = [path]
        else:
            raise WskError("no such image or folder", path)
        for file in files:
            image_id = os.path.splitext(os.path.basename(file))[0]
            if image_id in found and storage.absolute(found[image_id]) != storage.absolute(file):
                raise WskError(f"two images have the id {image_id!r} (also {found[image_id]})", file)
            found[image_id] = file
    return found


def _valid_png(png_path, image_path):
    """Whether ``png_path`` is a readable palette/grey PNG of the image's size."""
    if not storage.exists(png_path):
        return False
    try:
        with storage.open_file(png_path) as f, Image.open(f) as img:
            if img.format != "PNG" or img.mode not in ("P", "L"):
                return False
            img.load()
            width, height = img.size
        return (height, width) == image_size(image_path)
    except Exception:
        return False


def _segment_arrays(model, images, max_side):
    """A NumPy batch resized to its working size (``wsk.models.inference.working_size``) and
    segmented there: the working-size images (uint8) and softmax maps, NumPy."""
    images = np.stack(images)
    height, width = working_size(images.shape[1], images.shape[2], max_side)
    if (height, width) != images.shape[1:3]:
        images = ops.convert_to_numpy(resize_image(images, height, width)).astype(np.uint8)
    _, probabilities = segment(raw_network(model), images)
    return images, ops.convert_to_numpy(probabilities)


def _batches(sizes, ids, batch_size):
    """Lists of at most ``batch_size`` ids of the same image size, in first-seen order; ``None``:
    as many as hold ``BATCH_PIXELS`` pixels at their size (at least one). Same-size images in one
    network call get the labels they get alone, in a fraction of the calls."""
    groups = {}
    for image_id in ids:
        groups.setdefault(sizes[image_id], []).append(image_id)
    for (height, width), group in groups.items():
        step = batch_size or max(1, BATCH_PIXELS // (height * width))
        for start in range(0, len(group), step):
            yield group[start:start + step]


def predict_images(model, images, out_dir, crf=None, jobs=1, batch_size=1, layout="png",
                   name="predict", crf_backend="keras", max_side=None):
    """Segment ``images`` (``{id: image path}``) with ``model`` and write ``<id>.png`` label maps.

    The network and the CRF run at most at ``max_side`` on the longer side (None: the paper's
    training scale, ``recipe_max_side()``); the labels come back at each photo's own size.

    ``crf``: ``None`` (argmax of the network's softmax) or a ``wsk.crf.CRFParams``, run by
    ``crf_backend`` (``wsk.crf.CRF_BACKENDS``; keras runs in this process, ``jobs`` images at a time
    in threads). With the densecrf CRF,
    ``jobs > 1`` and at least ``CRF_WORKERS_MIN_PIXELS`` pixels in all, the softmax of each image
    is saved to ``OUT/.crf-pending/<id>.npz`` and the CRF runs in ``jobs`` worker processes
    (started once), a chunk of images at a time. Images of different
    sizes go through the network in separate batches of at most ``batch_size`` (None: as many as
    hold ``BATCH_PIXELS`` pixels).
    Returns the ``StageReport`` (computed, already done, failed ids with their messages).
    """
    if batch_size is not None and batch_size < 1:
        raise WskError(f"batch size must be at least 1, got {batch_size}")
    max_side = recipe_max_side() if max_side is None else max_side
    if max_side < 1:
        raise WskError(f"max side must be at least 1 pixel, got {max_side}")
    folder = output_folder(out_dir, layout)
    out_path = {image_id: os.path.join(folder, f"{image_id}.png") for image_id in images}
    remove_temporaries(folder)
    remove_temporaries(os.path.join(folder, PENDING_DIR))
    report = StageReport(name)
    todo = []
    for image_id in images:
        if _valid_png(out_path[image_id], images[image_id]):
            report.skipped.append(image_id)
        else:
            todo.append(image_id)
    sizes = {}
    for image_id in todo:
        try:
            sizes[image_id] = image_size(images[image_id])
        except WskError as err:
            report.failed.append((image_id, str(err)))
    todo = [image_id for image_id in todo if image_id in sizes]
    pixels = sum(height * width for height, width in sizes.values())
    deferred = (crf is not None and crf_backend == "densecrf" and jobs > 1
                and pixels >= CRF_WORKERS_MIN_PIXELS)   # photos larger than max_side stay here
    # Deferred CRF: bound the softmax maps on disk by running the workers a chunk at a time.
    chunk = max(8 * jobs, 32) if deferred else len(todo) or 1
    with worker_pool(jobs if deferred and todo else 1) as pool:   # started once, for every chunk
        for start in range(0, len(todo), chunk):
            ids = todo[start:start + chunk]
            pending = _run_network(model, images, ids, sizes, out_path, folder, crf, deferred,
                                   batch_size, report, name, crf_backend, max_side,
                                   threads=jobs if crf is not None and not deferred else 1)
            if pending:
                _run_crf_workers(images, pending, folder, out_path, crf, pool, report, name)
    pending_dir = os.path.join(folder, PENDING_DIR)
    if not storage.is_url(pending_dir) and os.path.isdir(pending_dir) and not os.listdir(pending_dir):
        os.rmdir(pending_dir)   # an object store has no empty folder
    report.done.sort()
    return report


def _run_network(model, images, ids, sizes, out_path, folder, crf, deferred, batch_size, report,
                 name, crf_backend, max_side, threads=1):
    """Network (and in-process CRF) over ``ids``; returns ids whose softmax awaits a CRF worker.

    The in-process CRF runs in ``threads`` threads beside the network, a few images each in flight
    (``_label_and_write``): the keras CRF keeps about one core busy, and two images at once on 2
    cores went from 1.37 to 0.90 s an image at VOC size (bench_crf), with the same labels."""
    pending = []
    with progress(length=len(ids), label=name) as bar, \
            concurrent.futures.ThreadPoolExecutor(max(1, threads)) as crf_threads:
        running = {}

        def settle(wait):
            done, _ = concurrent.futures.wait(running, return_when=wait)
            for future in done:
                image_id, error = running.pop(future), future.exception()
                if error is None:
                    report.done.append(image_id)
                elif isinstance(error, WskError):
                    report.failed.append((image_id, str(error)))
                else:
                    raise error

        for batch in _batches(sizes, ids, batch_size):
            pixels, good = [], []
            for image_id in batch:
                try:
                    pixels.append(read_image(images[image_id]))
                    good.append(image_id)
                except WskError as err:
                    report.failed.append((image_id, str(err)))
            shapes, outputs = {pixel.shape for pixel in pixels}, []
            if len(shapes) > 1:  # a header that lied about the size: one image at a time
                outputs = [_segment_arrays(model, [pixel], max_side) for pixel in pixels]
                outputs = [(small[0], probabilities[0]) for small, probabilities in outputs]
            elif pixels:
                outputs = list(zip(*_segment_arrays(model, pixels, max_side)))
            for image_id, pixel, (small, probabilities) in zip(good, pixels, outputs):
                try:
                    if deferred and small.shape == pixel.shape:
                        save_npz(_pending_path(folder, image_id),
                                 probabilities=probabilities.astype(np.float32))
                        pending.append(image_id)
                        continue
                except WskError as err:
                    report.failed.append((image_id, str(err)))
                    continue
                running[crf_threads.submit(_label_and_write, small, probabilities, pixel.shape[:2],
                                           out_path[image_id], crf, crf_backend)] = image_id
                while len(running) >= IN_FLIGHT * max(1, threads):
                    settle(concurrent.futures.FIRST_COMPLETED)
            bar.update(len(batch))
        while running:
            settle(concurrent.futures.ALL_COMPLETED)
    return pending


def _label_and_write(small, probabilities, size, out_path, crf, crf_backend):
    """One image's labels at its own ``size`` (after the CRF, where ``crf`` is given), written."""
    if crf is not None:
        _, probabilities = dense_crf(small, probabilities, **dataclasses.asdict(crf), backend=crf_backend)
    labels = upsample_labels(probabilities[None], *size)[0]
    write_label_png(out_path, ops.convert_to_numpy(labels))


def _pending_path(folder, image_id):
    return os.path.join(folder, PENDING_DIR, f"{image_id}.npz")


def _run_crf_workers(images, ids, folder, out_path, crf, pool, report, name):
    """Dense CRF in the worker ``pool`` over saved softmax maps (``wsk.crf.refine_saved``)."""

    tasks = {image_id: (images[image_id], _pending_path(folder, image_id), out_path[image_id])
             for image_id in ids}
    crf_report = run_per_image(f"{name} (dense CRF)", ids, functools.partial(
        refine_saved, tasks=tasks, params=crf), pool=pool)
    report.done.extend(crf_report.done)
    report.failed.extend(crf_report.failed)


def predict_dataset(model, dataset, out_dir, crf=None, jobs=1, batch_size=1, layout="png",
                    crf_backend="keras", max_side=None):
    """``predict_images`` over every id of a ``wsk.data.VOCDataset``; returns the ``StageReport``."""
    images = {image_id: dataset.image_path(image_id) for image_id in dataset.ids}
    return predict_images(model, images, out_dir, crf=crf, jobs=jobs, batch_size=batch_size,
                          layout=layout, name=f"predict {dataset.split}", crf_backend=crf_backend,
                          max_side=max_side)


def evaluate_model(model, root, split, crf=None, jobs=1, out_dir=None, batch_size=1, name=None,
                   crf_backend="keras", max_side=None):
    """Predict the ``split`` of the dataset ``root`` (``wsk.data.sources``: a path or a ``DataSource``) with ``model`` and score it.

    ``max_side``: the longer side the network and the CRF run at (``predict_images``); pass the
    model's training scale (``wsk.zoo.recorded_max_side``).

    Returns a ``wsk.metrics.EvalResult`` (confusion matrix summed over every image of the split
    against its ground-truth mask, 255 ignored) called ``name``. Predictions go to ``out_dir``
    (kept, and reused when run again) or to a temporary folder. An image without a mask, a model
    whose class count differs from the dataset's, or a failed prediction is a ``WskError``.
    """

    dataset = open_dataset(root, split)
    model_classes = model.outputs[0].shape[-1] if getattr(model, "outputs", None) else None
    if model_classes is not None and model_classes != dataset.num_classes:
        raise WskError(f"the model predicts {model_classes} classes, the dataset has "
                       f"{dataset.num_classes}", dataset.root)
    for image_id in dataset.ids:
        if not dataset.has_mask(image_id):
            raise WskError(f"image {image_id} of split {split!r} has no ground-truth mask", dataset.root)
    temporary = tempfile.mkdtemp(prefix="wsk-eval-") if out_dir is None else None
    folder = temporary or os.fspath(out_dir)
    try:
        report = predict_dataset(model, dataset, folder, crf=crf, jobs=jobs, batch_size=batch_size,
                                 crf_backend=crf_backend, max_side=max_side)
        report.raise_if_failed()
        return evaluate_dataset(dataset, PredictionFolder(folder), name=name or f"model on {split}")
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
