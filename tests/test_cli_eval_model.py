"""``wsk eval --model``: a saved network is run over a split and scored, without and with CRF."""

import json

import numpy as np
from click.testing import CliRunner
from PIL import Image


def _background_model(path, num_classes=21):
    """A stride-8 network that always predicts class 0 (zero kernel, bias 5 on background)."""
    import keras

    model = keras.Sequential([keras.Input((None, None, 3)),
                              keras.layers.Conv2D(num_classes, 1, strides=8, name="fc8")])
    bias = np.zeros(num_classes, np.float32)
    bias[0] = 5.0
    model.get_layer("fc8").set_weights([np.zeros((1, 1, 3, num_classes), np.float32), bias])
    model.save(path)


def test_eval_model_scores_every_labelled_pixel_as_background(tmp_path, voc_sample):
    from wsk.cli.main import cli

    folder = tmp_path / "BG"
    folder.mkdir()
    _background_model(folder / "model.keras")
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(cli, ["eval", str(voc_sample), "--model", str(folder / "model.keras"),
                                      "--crf", "--crf-iterations", "1", "--jobs", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    # Independent count: every labelled pixel of every mask lands in column 0 (background).
    expected = np.zeros((21, 21), np.int64)
    for png in sorted((voc_sample / "SegmentationClass").glob("*.png")):
        mask = np.asarray(Image.open(png))
        expected[:, 0] += np.bincount(mask[mask != 255].ravel(), minlength=21)[:21]
    report = json.loads(out.read_text())
    names = [r["name"] for r in report["results"]]
    assert names == ["BG", "BG+CRF"]
    np.testing.assert_array_equal(np.array(report["results"][0]["confusion_matrix"]), expected)
    background_iou = expected[0, 0] / expected[:, 0].sum()
    assert abs(report["results"][0]["iou"]["background"] - background_iou) < 1e-9
    assert "BG+CRF" in result.output and "mIoU" in result.output


def test_eval_without_sources_names_what_to_give(voc_sample):
    from wsk.cli.main import cli

    result = CliRunner().invoke(cli, ["eval", str(voc_sample)])
    assert result.exit_code != 0 and "--model" in result.output and "Traceback" not in result.output
