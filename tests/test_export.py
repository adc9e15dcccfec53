"""wsk export: a SavedModel served by TensorFlow alone, uint8 images of any size in, labels out."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

WIDTH = 0.0625
NAMES = ("background", "red", "green")
SIZES = ((2, 37, 50), (1, 24, 17))   # (batch, height, width): neither is 8k + 1

# Runs in a fresh interpreter with TensorFlow only: wsk must not be needed to serve the export.
SERVE = """
import sys, numpy as np, tensorflow as tf
out, inputs, result = sys.argv[1:4]
assert not any(name == "wsk" or name.startswith("wsk.") for name in sys.modules)
serve = tf.saved_model.load(out).signatures["serving_default"]
arrays = {}
with np.load(inputs) as data:
    for key in sorted(data.files):
        outputs = serve(images=tf.constant(data[key]))
        for name, value in outputs.items():
            arrays[f"{key}_{name}"] = value.numpy()
assert not any(name == "wsk" or name.startswith("wsk.") for name in sys.modules)
np.savez(result, **arrays)
"""


def _serve_in_tensorflow_only(out, images, tmp_path):
    """Call ``serving_default`` of the SavedModel at ``out`` in a subprocess that imports TF only."""
    inputs, result = tmp_path / "inputs.npz", tmp_path / "result.npz"
    np.savez(inputs, **{f"x{i}": batch for i, batch in enumerate(images)})
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH="")
    done = subprocess.run([sys.executable, "-c", SERVE, str(out), str(inputs), str(result)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(result) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def seg_model():
    from wsk.models import deeplab_largefov

    model = deeplab_largefov(num_classes=len(NAMES), width=WIDTH)
    rng = np.random.default_rng(3)
    # Larger weights than He init at this width, so that the classes really compete per pixel.
    model.set_weights([rng.normal(0, 0.3, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (b, h, w, 3), dtype=np.uint8) for b, h, w in SIZES]


@pytest.fixture(scope="module")
def exported(seg_model, tmp_path_factory):
    from wsk.export import export_savedmodel

    out = tmp_path_factory.mktemp("export") / "seg"
    assert export_savedmodel(seg_model, out, NAMES) == str(out)
    return out


def test_tensorflow_only_serving_matches_keras(exported, seg_model, images, tmp_path):
    from keras import ops

    from wsk.models.inference import segment

    served = _serve_in_tensorflow_only(exported, images, tmp_path)
    for i, batch in enumerate(images):
        b, h, w, _ = batch.shape
        labels, probabilities = (ops.convert_to_numpy(t) for t in segment(seg_model, batch))
        assert served[f"x{i}_labels"].dtype == np.int32
        assert served[f"x{i}_labels"].shape == (b, h, w)
        assert served[f"x{i}_probabilities"].dtype == np.float32
        assert served[f"x{i}_probabilities"].shape == (b, h, w, len(NAMES))
        np.testing.assert_array_equal(served[f"x{i}_labels"], labels)
        np.testing.assert_allclose(served[f"x{i}_probabilities"], probabilities, atol=1e-5)
        # Labels are the argmax of the probabilities, and more than one class is predicted.
        np.testing.assert_array_equal(served[f"x{i}_labels"], served[f"x{i}_probabilities"].argmax(-1))
    assert len(np.unique(np.concatenate([served[k].ravel() for k in served if k.endswith("_labels")]))) > 1


def test_saved_model_cli_lists_the_signature(exported):
    cli = pathlib.Path(sys.executable).with_name("saved_model_cli")
    if not cli.exists():
        pytest.skip("saved_model_cli is not installed beside this Python")
    done = subprocess.run([str(cli), "show", "--dir", str(exported), "--tag_set", "serve",
                           "--signature_def", "serving_default"], capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    text = done.stdout
    inputs, outputs = text.split("The given SavedModel SignatureDef contains the following output(s):")
    assert "inputs['images'] tensor_info:" in inputs
    assert "dtype: DT_UINT8" in inputs and "shape: (-1, -1, -1, 3)" in inputs
    labels = outputs.split("outputs['labels'] tensor_info:")[1].split("outputs[")[0]
    assert "dtype: DT_INT32" in labels and "shape: (-1, -1, -1)" in labels
    probabilities = outputs.split("outputs['probabilities'] tensor_info:")[1].split("outputs[")[0]
    assert "dtype: DT_FLOAT" in probabilities and f"shape: (-1, -1, -1, {len(NAMES)})" in probabilities


def test_class_names_are_an_asset(exported):
    assert (exported / "assets" / "classes.txt").read_text().splitlines() == list(NAMES)
    info = json.loads((exported / "assets" / "wsk_model.json").read_text())
    assert info["task"] == "segmentation" and info["class_names"] == list(NAMES)


def test_hcp_export_scores_the_resized_whole_image(tmp_path):
    import keras
    from keras import ops

    from wsk.export import export_savedmodel
    from wsk.models import hcp, preprocess_input

    model = hcp(num_classes=3, image_size=32, width=WIDTH)
    rng = np.random.default_rng(5)
    model.set_weights([rng.normal(0, 0.05, w.shape).astype(np.float32) for w in model.get_weights()])
    out = export_savedmodel(model, tmp_path / "hcp", ("red", "green", "blue"))
    batches = [rng.integers(0, 256, (2, 45, 61, 3), dtype=np.uint8),
               rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)]
    served = _serve_in_tensorflow_only(out, batches, tmp_path)
    for i, batch in enumerate(batches):
        # Reference: the full HCP model with one hypothesis per image, the image resized to S x S.
        resized = ops.image.resize(batch.astype(np.float32), (32, 32), interpolation="bilinear")
        hypotheses = ops.expand_dims(preprocess_input(resized), 1)
        expected = keras.ops.convert_to_numpy(model(hypotheses, training=False))
        got = served[f"x{i}_probabilities"]
        assert got.shape == (len(batch), 3)
        np.testing.assert_allclose(got, expected, atol=1e-5)
        np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)
    assert (pathlib.Path(out) / "assets" / "classes.txt").read_text().split() == ["red", "green", "blue"]


def test_cli_exports_a_zoo_model_by_name(seg_model, tmp_path, monkeypatch):
    import hashlib

    from wsk.cli.main import cli

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.delenv("WSK_ZOO_REGISTRY", raising=False)
    weights = tmp_path / "seg.keras"
    seg_model.save(weights)
    runner = CliRunner()
    added = runner.invoke(cli, ["zoo", "add", "deeplab_largefov.exported", str(weights), "--builder",
                                "deeplab_largefov", "--arg", f"num_classes={len(NAMES)}", "--arg",
                                f"width={WIDTH}", "--classes", _classes_root(tmp_path)])
    assert added.exit_code == 0, added.output
    out = tmp_path / "served"
    result = runner.invoke(cli, ["export", "deeplab_largefov.exported", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "saved_model.pb").is_file()
    assert (out / "assets" / "classes.txt").read_text().splitlines() == list(NAMES)
    info = json.loads((out / "assets" / "wsk_model.json").read_text())
    assert info["source"] == {"zoo": "deeplab_largefov.exported",
                              "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    again = runner.invoke(cli, ["export", "deeplab_largefov.exported", str(out)])
    assert again.exit_code == 1 and "already exists" in again.output
    # A .keras file whose class count is not VOC's needs --classes.
    bare = runner.invoke(cli, ["export", str(weights), str(tmp_path / "bare")])
    assert bare.exit_code == 1 and "--classes" in bare.output
    assert not (tmp_path / "bare").exists()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_export_of_a_trained_file_takes_classes_from_its_sidecar(seg_model, tmp_path):
    from wsk.export import export
    from wsk.models.saving import save_model

    path = tmp_path / "seg" / "model.keras"
    path.parent.mkdir()
    save_model(seg_model, path, {"architecture": "deeplab_largefov", "class_names": list(NAMES),
                                 "num_classes": len(NAMES), "width": WIDTH})
    out = export(path, tmp_path / "out")
    assert (pathlib.Path(out) / "assets" / "classes.txt").read_text().splitlines() == list(NAMES)


def _classes_root(tmp_path):
    root = tmp_path / "dataset"
    root.mkdir()
    (root / "classes.txt").write_text("\n".join(NAMES) + "\n")
    return str(root)


def test_serving_refuses_float_and_four_channel_input(exported):
    import tensorflow as tf

    serve = tf.saved_model.load(str(exported)).signatures["serving_default"]
    refused = (TypeError, ValueError, tf.errors.InvalidArgumentError)
    with pytest.raises(refused, match="expected to be a uint8 tensor but is a float tensor"):
        serve(images=tf.zeros((1, 9, 9, 3), tf.float32))
    with pytest.raises(refused, match=r"\[1,9,9,4\]|\(1, 9, 9, 4\)|shape"):
        serve(images=tf.zeros((1, 9, 9, 4), tf.uint8))


@pytest.mark.slow   # end to end: wsk predict twice, wsk export with the CRF (about 55 s of CPU)
def test_export_with_the_crf_equals_wsk_predict_on_voc_photos(tmp_path, voc_sample):
    """`wsk export --crf` serves the labels of `wsk predict --crf --crf-backend keras` (>= 99.9% of
    pixels, real VOC photos resized to max_side 160); its `padded` signature gives a batch of two
    differently sized photos the labels of each alone, and its wsk_model.json records max_side."""
    import tensorflow as tf

    from wsk.cli.main import cli
    from wsk.io import read_image, read_label_png
    from wsk.models import deeplab_largefov
    from wsk.recipes import RECIPES

    model = deeplab_largefov(num_classes=21, width=RECIPES["tiny"].seg.width)
    rng = np.random.default_rng(11)
    # An unsure softmax (std 0.1), which the CRF really changes, on a network of the tiny recipe's width.
    model.set_weights([rng.normal(0, 0.1, w.shape).astype(np.float32) for w in model.get_weights()])
    weights = tmp_path / "seg.keras"
    model.save(weights)
    photos = sorted((voc_sample / "JPEGImages").glob("*.jpg"))[:2]
    runner = CliRunner()
    options = ["--crf", "--max-side", "160"]
    predicted = runner.invoke(cli, ["predict", str(weights), *map(str, photos), "--out", str(tmp_path / "png"),
                                    "--crf-backend", "keras", *options])
    assert predicted.exit_code == 0, predicted.output
    plain = runner.invoke(cli, ["predict", str(weights), *map(str, photos), "--out", str(tmp_path / "plain"),
                                "--max-side", "160"])
    assert plain.exit_code == 0, plain.output
    exported = runner.invoke(cli, ["export", str(weights), str(tmp_path / "served"), *options])
    assert exported.exit_code == 0, exported.output
    info = json.loads((tmp_path / "served" / "assets" / "wsk_model.json").read_text())
    assert info["max_side"] == 160 and info["crf"]["iterations"] == 10
    loaded = tf.saved_model.load(str(tmp_path / "served"))
    serve, padded = loaded.signatures["serving_default"], loaded.signatures["padded"]
    images = [read_image(photo) for photo in photos]
    assert len({image.shape for image in images}) == 2
    alone = []
    for photo, image in zip(photos, images):
        served = serve(images=tf.constant(image[None]))
        labels = served["labels"].numpy()[0]
        assert labels.shape == image.shape[:2]
        assert max(served["probabilities"].shape[1:3]) == 160       # the working size: VOC photos are larger
        expected = read_label_png(tmp_path / "png" / f"{photo.stem}.png")
        assert (labels == expected).mean() >= 0.999
        without = read_label_png(tmp_path / "plain" / f"{photo.stem}.png")
        assert (expected != without).mean() > 0.01    # the CRF did something
        alone.append(labels)
    height, width = (max(image.shape[i] for image in images) for i in (0, 1))
    batch = np.full((2, height, width, 3), 255, np.uint8)
    for b, image in enumerate(images):
        batch[b, :image.shape[0], :image.shape[1]] = image
    sizes = np.array([image.shape[:2] for image in images], np.int32)
    together = padded(images=tf.constant(batch), sizes=tf.constant(sizes))["labels"].numpy()
    for b, image in enumerate(images):
        np.testing.assert_array_equal(together[b, :image.shape[0], :image.shape[1]], alone[b])
