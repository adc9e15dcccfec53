"""SavedModel export for TensorFlow Serving: raw uint8 images in, label maps (or class scores) out.

``export(model_or_name, out)`` writes a SavedModel through ``keras.export.ExportArchive`` whose
``serving_default`` signature takes ``images``: uint8 ``[batch, height, width, 3]`` RGB of any size.

* Segmentation (DeepLab-LargeFOV): DeepLab's preprocessing, padding to ``8k + 1``, aligned-corner
  up-sampling, the resize to at most ``max_side`` and back and, exported with a ``crf``, the dense
  CRF run inside the graph (``wsk.models.inference.segment_photos``, the same code as ``wsk
  predict``); outputs ``labels`` int32 ``[batch, height, width]`` and ``probabilities`` float32
  ``[batch, h, w, classes]`` at the working size (the photo's own when it fits ``max_side``): the
  softmax, or the CRF's marginals. A second signature, ``padded``, takes ``images`` and ``sizes``
  int32 ``[batch, 2]`` (each image's height and width at its top left; the rest is padding, which
  never reaches the network or the CRF) and returns ``labels`` (0 outside each image).
* Classification (HCP, §3.1): each image is resized to the model's ``S x S`` inside the graph
  and scored as one hypothesis, the whole image; output ``probabilities`` float32
  ``[batch, classes]`` (the per-hypothesis softmax, which the cross-hypothesis max leaves as is
  for one hypothesis).

``OUT/assets/classes.txt`` lists the class names, one per line, in output order, and
``OUT/assets/wsk_model.json`` records the task, classes, source, ``max_side`` and CRF parameters. The SavedModel is written to
a temporary folder beside ``OUT`` and renamed, so ``OUT`` is either complete or absent; an ``OUT``
that is a URL (``wsk.storage``) is written in a local folder, then uploaded file by file.
Needs the TensorFlow backend (``KERAS_BACKEND=tensorflow``, Keras's default).
"""

import dataclasses
import os
import shutil
import tempfile

import keras
import tensorflow as tf
from keras import ops

import wsk.zoo
from wsk import storage
from wsk.classes import CLASS_LIST_FILE, load_class_names
from wsk.errors import WskError
from wsk.models.inference import segment_padded, segment_photos
from wsk.models.tasks import model_task, raw_network
from wsk.io import save_json
from wsk.models import hcp_hypothesis_model, preprocess_input
from wsk.models.description import recipe_max_side
from wsk.models.hcp import hcp_image_size
from wsk.models.preprocessing import resize_hypotheses
from wsk.models.saving import load_model

SIGNATURE = "serving_default"
PADDED_SIGNATURE = "padded"
INPUT_NAME = "images"
SIZES_NAME = "sizes"
CLASSES_ASSET = "classes.txt"
INFO_ASSET = "wsk_model.json"


def class_names_from(classes):
    """Class names from ``classes``: a dataset root (its ``classes.txt``) or a ``classes.txt`` file."""
    classes = storage.absolute(classes)
    if storage.isfile(classes):
        if os.path.basename(classes) != CLASS_LIST_FILE:
            raise WskError(f"a class list file must be called {CLASS_LIST_FILE}", classes)
        return load_class_names(os.path.dirname(classes))
    if not storage.isdir(classes):
        raise WskError("no such dataset folder or classes.txt", classes)
    return load_class_names(classes)


def resolve(model_or_name, classes=None):
    """``(model, class_names, source)`` for a ``.keras`` path or a zoo model name.

    A zoo model brings its card's classes; a ``.keras`` file takes ``classes`` (dataset root or
    ``classes.txt``; for an HCP model the background entry is dropped), else those of the
    ``wsk train`` sidecar beside it, else VOC's when the output count fits. The class count must
    equal the model's.
    """
    spec = os.fspath(model_or_name)
    if storage.exists(spec) or spec.endswith(".keras"):
        model = raw_network(load_model(spec))
        source = {"file": storage.absolute(spec)}
        names = wsk.zoo.class_names_of(model, spec, None if classes is None else class_names_from(classes))
    else:
        card = wsk.zoo.info(spec)
        model = wsk.zoo.network(spec)
        source = {"zoo": spec, "sha256": card["weights"]["sha256"]}
        names = card["class_names"] if classes is None else wsk.zoo.classes_for(
            model, class_names_from(classes))
    outputs = model.outputs[0].shape[-1]
    if len(names) != outputs:
        raise WskError(f"the model has {outputs} classes but {len(names)} class names were given", spec)
    return model, tuple(names), source


def segmentation_endpoint(model, max_side, crf=None):
    """The serving function of a segmentation model: ``images`` uint8 -> labels, probabilities."""

    def serve(images):
        labels, probabilities = segment_photos(model, images, max_side, crf)
        return {"labels": ops.cast(labels, "int32"), "probabilities": ops.cast(probabilities, "float32")}

    return serve


def padded_endpoint(model, max_side, crf=None):
    """The ``padded`` serving function: ``images`` uint8 and ``sizes`` int32 ``[batch, 2]`` -> labels."""

    def serve(images, sizes):
        return {"labels": ops.cast(segment_padded(model, images, sizes, max_side, crf), "int32")}

    return serve


def classification_endpoint(model):
    """The serving function of an HCP model: ``images`` uint8 of any size -> class probabilities.

    Each image is resized (bilinear) to the model's ``S x S``, preprocessed, and scored as one
    hypothesis by the shared network (``hcp_hypothesis_model``).
    """

    hypothesis = hcp_hypothesis_model(model)
    size = hcp_image_size(model)

    def serve(images):
        scores = hypothesis(preprocess_input(resize_hypotheses(images, size)), training=False)["scores"]
        return {"probabilities": ops.cast(scores, "float32")}

    return serve, hypothesis


def _write_assets(folder, class_names, info):
    assets = os.path.join(folder, "assets")
    os.makedirs(assets, exist_ok=True)
    with open(os.path.join(assets, CLASSES_ASSET), "w", encoding="utf-8") as f:
        f.write("".join(f"{name}\n" for name in class_names))
    save_json(os.path.join(assets, INFO_ASSET), info)


def export_savedmodel(model, out, class_names, source=None, overwrite=False, max_side=None, crf=None):
    """Write ``model`` as a SavedModel at ``out`` with the ``serving_default`` signature; return ``out``.

    ``out`` must not exist unless ``overwrite``. See the module docstring for the signature. A
    segmentation model runs at most at ``max_side`` (None: a ``Segmenter``'s own, else
    ``recipe_max_side()``, the paper's training scale) and, with ``crf`` (a ``wsk.crf.CRFParams``;
    None: a ``Segmenter``'s own), refines its softmax by the dense CRF.
    """
    if keras.backend.backend() != "tensorflow":
        raise WskError(f"SavedModel export needs KERAS_BACKEND=tensorflow, not {keras.backend.backend()}")
    out = storage.absolute(out)
    if storage.exists(out) and not overwrite:
        raise WskError("already exists (use --overwrite to replace it)", out)
    if max_side is None:   # a Segmenter's own, else the paper's training scale
        max_side = getattr(model, "max_side", None) or recipe_max_side()
    crf = getattr(model, "crf", None) if crf is None else crf
    max_side = int(max_side)
    model = raw_network(model)
    task = model_task(model)
    if max_side < 1:
        raise WskError(f"max side must be at least 1 pixel, got {max_side}")
    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = tf.TensorSpec(shape=(None, None, None, 3), dtype=tf.uint8, name=INPUT_NAME)
    if task == "segmentation":
        archive.add_endpoint(SIGNATURE, segmentation_endpoint(model, max_side, crf), input_signature=[spec])
        sizes = tf.TensorSpec(shape=(None, 2), dtype=tf.int32, name=SIZES_NAME)
        archive.add_endpoint(PADDED_SIGNATURE, padded_endpoint(model, max_side, crf),
                             input_signature=[spec, sizes])
    else:
        serve, hypothesis = classification_endpoint(model)
        archive.track(hypothesis)
        archive.add_endpoint(SIGNATURE, serve, input_signature=[spec])
    url = storage.is_url(out)   # a URL: made in a local folder, then uploaded
    parent = tempfile.mkdtemp(prefix="wsk-export-") if url else os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.", suffix=".tmp", dir=parent)
    try:
        archive.write_out(tmp, verbose=False)
        info = {"task": task, "class_names": list(class_names), "signature": SIGNATURE,
                "input": INPUT_NAME, "source": source or {}}
        if task == "classification":
            info["input_size"] = [hcp_image_size(model)] * 2
        else:
            info.update(max_side=max_side, crf=None if crf is None else dataclasses.asdict(crf),
                        signatures=[SIGNATURE, PADDED_SIGNATURE])
        _write_assets(tmp, class_names, info)
        storage.rmtree(out)
        if url:
            storage.sync_up(tmp, out)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if url:
            shutil.rmtree(parent, ignore_errors=True)
    return out


def export(model_or_name, out, classes=None, overwrite=False, max_side=None, crf=None):
    """Export a ``.keras`` model file or a zoo model by name as a SavedModel at ``out``; return ``out``.

    ``max_side`` None: the one the model's description (or zoo card) records
    (``wsk.zoo.recorded_max_side``, ``wsk.zoo.card_max_side``); ``crf``: a ``wsk.crf.CRFParams``.
    """
    model, class_names, source = resolve(model_or_name, classes)
    if max_side is None and model_task(model) == "segmentation":
        max_side = (wsk.zoo.card_max_side(wsk.zoo.info(source["zoo"])) if "zoo" in source
                    else wsk.zoo.recorded_max_side(os.fspath(model_or_name)))
    return export_savedmodel(model, out, class_names, source=source, overwrite=overwrite,
                             max_side=max_side, crf=crf)
