"""wsk.predict and `wsk predict`: label PNGs of the right size, CRF workers, resuming, evaluation."""

import json
import os

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from wsk.cli.main import cli
from wsk.crf import CRFParams
from wsk.errors import WskError
from wsk.io import read_label_png, write_image
from wsk.models.saving import load_model  # noqa: E402
from wsk.predict import (PENDING_DIR, evaluate_model, image_files, output_folder,
                         predict_images)

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def colour_model(num_classes=3, bias=None):
    """Stand-in network: logits at stride 8 = the preprocessed (B, G, R) pixel / 50.

    For a uniform image the label is the channel furthest above DeepLab's mean colour:
    blue (0, 0, 255) -> (151, -117, -123) -> class 0; green -> 1; red (255, 0, 0) ->
    (-104, -117, 132) -> class 2. With ``bias`` and a zero kernel it predicts argmax(bias).
    """
    inputs = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(num_classes, 1, strides=8, name="fc8")
    model = keras.Model(inputs, conv(inputs))
    if bias is None:
        kernel = np.eye(3, num_classes, dtype=np.float32)[None, None] / 50
        conv.set_weights([kernel, np.zeros(num_classes, np.float32)])
    else:
        conv.set_weights([np.zeros((1, 1, 3, num_classes), np.float32), np.asarray(bias, np.float32)])
    return model


def uniform_image(path, colour, height, width):
    write_image(path, np.tile(np.asarray(colour, np.uint8), (height, width, 1)))


@pytest.fixture()
def colour_images(tmp_path):
    """Three uniform PNG photos of two sizes, and the class each must get."""
    folder = tmp_path / "images"
    uniform_image(folder / "r.png", RED, 30, 41)
    uniform_image(folder / "g.png", GREEN, 17, 24)
    uniform_image(folder / "b.png", BLUE, 30, 41)
    return folder, {"b": 0, "g": 1, "r": 2}, {"b": (30, 41), "g": (17, 24), "r": (30, 41)}


def png_size(path):
    with Image.open(path) as img:
        return img.size[1], img.size[0]


def test_output_folder_layouts(tmp_path):
    assert output_folder(tmp_path, "png") == str(tmp_path)
    assert output_folder(tmp_path, "voc-test") == os.path.join(
        str(tmp_path), "results", "VOC2012", "Segmentation", "comp6_test_cls")
    with pytest.raises(WskError, match="format"):
        output_folder(tmp_path, "jpeg")


def test_image_files(tmp_path, colour_images):
    folder, _, _ = colour_images
    uniform_image(tmp_path / "x.jpg", RED, 9, 9)
    (folder / "notes.txt").write_text("not an image")
    found = image_files([folder, tmp_path / "x.jpg"])
    assert sorted(found) == ["b", "g", "r", "x"]
    assert found["x"] == str(tmp_path / "x.jpg")
    uniform_image(tmp_path / "r.jpg", RED, 9, 9)
    with pytest.raises(WskError, match="'r'"):
        image_files([folder, tmp_path / "r.jpg"])
    with pytest.raises(WskError, match="missing"):
        image_files([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(WskError, match="no images"):
        image_files([tmp_path / "empty"])


def test_load_model_errors(tmp_path):
    with pytest.raises(WskError, match="nothere.keras"):
        load_model(tmp_path / "nothere.keras")
    (tmp_path / "broken.keras").write_bytes(b"not a zip archive")
    with pytest.raises(WskError, match="broken.keras: not a loadable Keras model"):
        load_model(tmp_path / "broken.keras")
    (tmp_path / "model.h5").write_bytes(b"x")
    with pytest.raises(WskError, match=r"model.h5: .*\.keras"):
        load_model(tmp_path / "model.h5")


def test_predict_cli_writes_pngs_and_resumes(tmp_path, colour_images):
    folder, classes, sizes = colour_images
    colour_model().save(tmp_path / "model.keras")
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(cli, ["predict", str(tmp_path / "model.keras"), str(folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "3 computed, 0 already done, 0 failed" in result.output
    for image_id, cls in classes.items():
        labels = read_label_png(out / f"{image_id}.png")
        assert labels.shape == sizes[image_id]
        assert (labels == cls).all(), image_id
    stamps = {name: os.stat(out / name).st_mtime_ns for name in os.listdir(out)}

    result = runner.invoke(cli, ["predict", str(tmp_path / "model.keras"), str(folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "0 computed, 3 already done" in result.output
    assert stamps == {name: os.stat(out / name).st_mtime_ns for name in os.listdir(out)}

    # A damaged PNG, one of the wrong size and a missing one are computed again.
    (out / "r.png").write_bytes(b"\x89PNG damaged")
    Image.fromarray(np.zeros((5, 5), np.uint8), mode="P").save(out / "g.png")
    os.remove(out / "b.png")
    result = runner.invoke(cli, ["predict", str(tmp_path / "model.keras"), str(folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "3 computed, 0 already done" in result.output
    for image_id, cls in classes.items():
        assert (read_label_png(out / f"{image_id}.png") == cls).all()
        assert png_size(out / f"{image_id}.png") == sizes[image_id]


def test_predict_cli_voc_test_layout_and_errors(tmp_path, colour_images):
    folder, classes, sizes = colour_images
    colour_model().save(tmp_path / "model.keras")
    runner = CliRunner()
    result = runner.invoke(cli, ["predict", str(tmp_path / "model.keras"), str(folder / "g.png"),
                                 "--out", str(tmp_path / "sub"), "--format", "voc-test"])
    assert result.exit_code == 0, result.output
    path = tmp_path / "sub" / "results" / "VOC2012" / "Segmentation" / "comp6_test_cls" / "g.png"
    labels = read_label_png(path)
    assert labels.shape == sizes["g"] and (labels == classes["g"]).all()
    with Image.open(path) as img:
        assert img.mode == "P"  # the server takes indexed PNGs
    # A missing model is an error naming the file.
    result = runner.invoke(cli, ["predict", str(tmp_path / "none.keras"), str(folder), "--out",
                                 str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "none.keras: model file not found" in result.output


def test_unreadable_images_are_reported_and_the_rest_written(tmp_path, colour_images):
    folder, classes, _ = colour_images
    (folder / "bad.png").write_bytes(b"not an image")
    report = predict_images(colour_model(), image_files([folder]), tmp_path / "out")
    assert report.done == ["b", "g", "r"]
    assert [image_id for image_id, _ in report.failed] == ["bad"]
    assert "bad.png" in report.failed[0][1]
    with pytest.raises(WskError, match="1 image"):
        report.raise_if_failed()


def two_colour_image(path, height, width, edge):
    """Red left of column ``edge``, blue right of it; the truth is class 2 left, 0 right."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, :edge] = RED
    image[:, edge:] = BLUE
    write_image(path, image)
    truth = np.zeros((height, width), np.uint8)
    truth[:, :edge] = 2
    return truth


def test_crf_in_workers_matches_crf_in_process(tmp_path, monkeypatch):
    # Edges between the stride-8 grid points: the network alone blurs them, the CRF snaps back.
    import wsk.predict

    calls = []
    run_workers = wsk.predict._run_crf_workers
    monkeypatch.setattr(wsk.predict, "_run_crf_workers", lambda *a: calls.append(a[1]) or run_workers(*a))
    truths = {"a": two_colour_image(tmp_path / "img" / "a.png", 33, 45, 13),
              "b": two_colour_image(tmp_path / "img" / "b.png", 26, 30, 21),
              "c": two_colour_image(tmp_path / "img" / "c.png", 33, 45, 27)}
    images = image_files([tmp_path / "img"])
    model = colour_model()
    plain = predict_images(model, images, tmp_path / "plain")
    serial = predict_images(model, images, tmp_path / "serial", crf=CRFParams(), jobs=1,
                            crf_backend="densecrf")
    small = predict_images(model, images, tmp_path / "small", crf=CRFParams(), jobs=2)   # keras: 2 threads
    keras_serial = predict_images(model, images, tmp_path / "keras-serial", crf=CRFParams(), jobs=1)
    assert calls == []   # three small images: workers would cost more than they save
    monkeypatch.setattr(wsk.predict, "CRF_WORKERS_MIN_PIXELS", 0)
    parallel = predict_images(model, images, tmp_path / "parallel", crf=CRFParams(), jobs=2, batch_size=2,
                              crf_backend="densecrf")   # workers: the densecrf backend only
    assert sorted(i for ids in calls for i in ids) == ["a", "b", "c"]
    for report in (plain, serial, small, keras_serial, parallel):
        assert report.done == ["a", "b", "c"] and not report.failed
    assert not os.path.exists(tmp_path / "parallel" / PENDING_DIR)
    for image_id, truth in truths.items():
        before = read_label_png(tmp_path / "plain" / f"{image_id}.png")
        one = read_label_png(tmp_path / "serial" / f"{image_id}.png")
        two = read_label_png(tmp_path / "parallel" / f"{image_id}.png")
        np.testing.assert_array_equal(one, two)
        np.testing.assert_array_equal(read_label_png(tmp_path / "small" / f"{image_id}.png"),
                                      read_label_png(tmp_path / "keras-serial" / f"{image_id}.png"))
        assert (one == truth).mean() > (before == truth).mean()
        assert (one == truth).mean() > 0.98


def test_predict_cli_with_deeplab_and_crf_on_real_photos(tmp_path, voc_sample):
    from wsk.models import deeplab_largefov

    keras.utils.set_random_seed(0)
    deeplab_largefov(num_classes=21, width=0.0625).save(tmp_path / "deeplab.keras")
    photos = [voc_sample / "JPEGImages" / f"{image_id}.jpg" for image_id in ("2007_000033", "2009_000573")]
    out = tmp_path / "out"
    args = ["predict", str(tmp_path / "deeplab.keras"), *map(str, photos), "--out", str(out), "--crf",
            "--jobs", "2", "--crf-iterations", "3"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    for photo in photos:
        with Image.open(photo) as img:
            width, height = img.size
        labels = read_label_png(out / f"{photo.stem}.png")
        assert labels.shape == (height, width)
        assert labels.max() < 21
    result = CliRunner().invoke(cli, args)
    assert "0 computed, 2 already done" in result.output


def test_evaluate_model_counts_every_labelled_pixel(tmp_path, voc_sample):
    from wsk.data.voc import VOCDataset

    bias = np.zeros(21, np.float32)
    bias[0] = 5.0  # always "background"
    matrix = evaluate_model(colour_model(21, bias), voc_sample, "val", out_dir=tmp_path / "pred")
    dataset = VOCDataset(voc_sample, "val")
    expected = np.zeros((21, 21), np.int64)
    for image_id in dataset.ids:
        mask = np.asarray(Image.open(voc_sample / "SegmentationClass" / f"{image_id}.png"))
        expected[:, 0] += np.bincount(mask[mask != 255].ravel(), minlength=21)[:21]
    np.testing.assert_array_equal(matrix.matrix, expected)
    assert len(os.listdir(tmp_path / "pred")) == len(dataset.ids) == 15
    with pytest.raises(WskError, match="3 classes"):
        evaluate_model(colour_model(3), voc_sample, "val")


def test_exif_rotated_photos_get_labels_of_their_decoded_size(tmp_path):
    # OpenCV applies the EXIF orientation, so the PNG has the rotated size (and resumes).
    image = Image.fromarray(np.tile(np.asarray(RED, np.uint8), (20, 33, 1)))
    exif = Image.Exif()
    exif[274] = 6  # rotate 90 degrees when shown
    image.save(tmp_path / "turned.jpg", exif=exif.tobytes())
    uniform_image(tmp_path / "plain.jpg", RED, 33, 20)
    images = image_files([tmp_path / "turned.jpg", tmp_path / "plain.jpg"])
    report = predict_images(colour_model(), images, tmp_path / "out", batch_size=2)
    assert report.done == ["plain", "turned"]
    assert read_label_png(tmp_path / "out" / "turned.png").shape == (33, 20)
    assert predict_images(colour_model(), images, tmp_path / "out").skipped == ["turned", "plain"]


def test_predict_runs_at_the_recorded_max_side_and_writes_the_photo_size(tmp_path):
    """A 300 x 200 photo predicted by a model whose description records max_side 64: the network
    runs at 64 x 43 (wsk.models.inference.segment_photos, tested against a naive reference in
    test_inference) and the PNG has the photo's 300 x 200; --max-side overrides the record."""
    from keras import ops

    from wsk.models import deeplab_largefov
    from wsk.models.description import recipe_max_side, segmentation_description
    from wsk.models.inference import segment_photos
    from wsk.models.saving import save_model
    from wsk.recipes import RECIPES

    assert (recipe_max_side("paper"), recipe_max_side("demo"), recipe_max_side("tiny")) == (500, 64, 64)
    model = deeplab_largefov(num_classes=3, width=0.0625)
    rng = np.random.default_rng(3)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype(np.float32) for w in model.get_weights()])
    description = segmentation_description(("background", "a", "b"), "AN_B", False, False, True,
                                           RECIPES["tiny"].seg, 1, "0" * 64, max_side=recipe_max_side("tiny"))
    assert description.to_json()["max_side"] == 64
    path = tmp_path / "seg" / "model.keras"
    path.parent.mkdir()
    save_model(model, path, description.to_json())
    blocks = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    photo = np.repeat(np.repeat(blocks, 10, 0), 10, 1)
    write_image(tmp_path / "photo.png", photo)
    for out, options, side in (("recorded", [], 64), ("given", ["--max-side", "100"], 100)):
        result = CliRunner().invoke(cli, ["predict", str(path), str(tmp_path / "photo.png"),
                                          "--out", str(tmp_path / out), *options])
        assert result.exit_code == 0, result.output
        labels = read_label_png(tmp_path / out / "photo.png")
        assert labels.shape == (200, 300) and len(np.unique(labels)) > 1
        expected = ops.convert_to_numpy(segment_photos(model, photo[None], side)[0])[0]
        np.testing.assert_array_equal(labels, expected)
    assert (read_label_png(tmp_path / "recorded" / "photo.png")
            != read_label_png(tmp_path / "given" / "photo.png")).any()
    # wsk eval --model runs at the same scale: with the max side 64 labels as ground truth, every pixel
    # is right at the recorded scale and some are wrong at --max-side 100
    truth = ops.convert_to_numpy(segment_photos(model, photo[None], 64)[0])[0].astype(np.uint8)
    Image.fromarray(truth).save(tmp_path / "truth.png")
    (tmp_path / "tags.csv").write_text("image,labels,split,mask\nphoto.png,a;b,val,truth.png\n")
    for options, exact in (([], True), (["--max-side", "100"], False)):
        result = CliRunner().invoke(cli, ["eval", str(tmp_path / "tags.csv"), "--model", str(path), "--no-crf",
                                          "--json", str(tmp_path / "eval.json"), *options])
        assert result.exit_code == 0, result.output
        accuracy = json.loads((tmp_path / "eval.json").read_text())["results"][0]["pixel_accuracy"]
        assert (accuracy == 1.0) == exact, (options, accuracy)


def test_batches_of_none_hold_at_most_batch_pixels():
    from wsk.predict import BATCH_PIXELS, _batches

    assert BATCH_PIXELS == 65536
    sizes = {f"s{i}": (64, 64) for i in range(20)}                  # 65536 // 4096 = 16 a batch
    sizes.update({f"v{i}": (375, 500) for i in range(2)})           # larger than the budget: one
    sizes.update({f"m{i}": (100, 100) for i in range(7)})           # 65536 // 10000 = 6
    batches = [len(b) for b in _batches(sizes, list(sizes), None)]
    assert batches == [16, 4, 1, 1, 6, 1]
    assert [len(b) for b in _batches(sizes, list(sizes), 8)] == [8, 8, 4, 2, 7]   # a count, whatever the size


def test_batched_predictions_are_the_one_at_a_time_ones(tmp_path):
    from wsk.models import deeplab_largefov

    keras.utils.set_random_seed(2)
    model = deeplab_largefov(num_classes=4, width=0.0625, output_stride=4)
    rng = np.random.default_rng(8)
    images = {}
    for i in range(5):
        write_image(tmp_path / f"{i}.png", rng.integers(0, 256, (33, 40, 3), np.uint8))
        images[str(i)] = str(tmp_path / f"{i}.png")
    predict_images(model, images, tmp_path / "one", batch_size=1, max_side=64)
    report = predict_images(model, images, tmp_path / "auto", batch_size=None, max_side=64)
    assert sorted(report.done) == sorted(images)
    for i in images:
        np.testing.assert_array_equal(read_label_png(tmp_path / "auto" / f"{i}.png"),
                                      read_label_png(tmp_path / "one" / f"{i}.png"))
