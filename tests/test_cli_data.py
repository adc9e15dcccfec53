"""`wsk data check`, `wsk data synth` and `wsk eval` through click's test runner."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from wsk.cli.main import cli
from wsk.io import read_label_png, write_label_png


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def dataset(synthetic_root, tmp_path):
    """A private copy of the synthetic dataset, free to damage."""
    root = tmp_path / "ds"
    shutil.copytree(synthetic_root, root)
    return root


def first_train_id(root):
    return (root / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[0]


def test_check_voc_sample(voc_sample):
    result = run("data", "check", voc_sample)
    assert result.exit_code == 0, result.output
    assert "Segmentation/val" in result.output and "15 labelled images" in result.output
    assert "12 single-label, 3 multi-label" in result.output
    assert "No problems found." in result.output
    rows = {line.split()[0]: line.split()[1:] for line in result.output.splitlines() if line.startswith("  ")}
    assert rows["plane"][0] == "4" and rows["sheep"][0] == "2" and rows["dog"][0] == "0"


def test_check_synthetic(synthetic_root):
    result = run("data", "check", synthetic_root)
    assert result.exit_code == 0, result.output
    assert "Segmentation/train" in result.output and "Segmentation/val" in result.output
    assert "Paper training set (Main/trainval ∩ train_aug): 18 images" in result.output
    assert "No problems found." in result.output


def _missing_image(root, i):
    (root / "JPEGImages" / f"{i}.jpg").unlink()
    return f"JPEGImages/{i}.jpg: image not found"


def _unreadable_image(root, i):
    (root / "JPEGImages" / f"{i}.jpg").write_bytes(b"\xff\xd8 truncated")
    return f"JPEGImages/{i}.jpg: not a readable image"


def _mask_size(root, i):
    write_label_png(root / "SegmentationClass" / f"{i}.png", np.zeros((10, 12), np.uint8))
    return f"SegmentationClass/{i}.png: mask is 12x10 but its image is 64x64"


def _unknown_class(root, i):
    path = root / "Annotations" / f"{i}.xml"
    text = path.read_text()
    name = text.split("<name>")[1].split("</name>")[0]
    path.write_text(text.replace(f"<name>{name}</name>", "<name>dragon</name>"))
    return f"Annotations/{i}.xml: unknown class name 'dragon'"


def _empty_xml(root, i):
    (root / "Annotations" / f"{i}.xml").write_text("<annotation><filename>x.jpg</filename></annotation>")
    return f"Annotations/{i}.xml: empty label set"


def _empty_mask(root, i):
    (root / "Annotations" / f"{i}.xml").unlink()
    write_label_png(root / "SegmentationClass" / f"{i}.png", np.zeros((64, 64), np.uint8))
    return f"SegmentationClass/{i}.png: empty label set"


def _bad_mask_value(root, i):
    (root / "Annotations" / f"{i}.xml").unlink()
    mask = read_label_png(root / "SegmentationClass" / f"{i}.png")
    mask[0, 0] = 9  # 6 classes: 9 is none of them
    write_label_png(root / "SegmentationClass" / f"{i}.png", mask)
    return f"SegmentationClass/{i}.png: mask holds value(s) [9]"


def _no_labels(root, i):
    (root / "Annotations" / f"{i}.xml").unlink()
    (root / "SegmentationClass" / f"{i}.png").unlink()
    return f"Annotations/{i}.xml: no image-level labels"


def _listed_twice(root, i):
    path = root / "ImageSets" / "Segmentation" / "train.txt"
    path.write_text(path.read_text() + f"{i}\n")
    return f"ImageSets/Segmentation/train.txt: id '{i}' listed 2 times"


@pytest.mark.parametrize("damage", [_missing_image, _unreadable_image, _mask_size, _unknown_class, _empty_xml,
                                    _empty_mask, _bad_mask_value, _no_labels, _listed_twice])
def test_check_reports_each_problem_with_its_file(dataset, damage):
    expected = damage(dataset, first_train_id(dataset))
    result = run("data", "check", dataset)
    assert result.exit_code == 1
    assert f"{dataset}/{expected}" in result.output
    assert f"Error: {dataset}: 1 problem(s) found" in result.output
    assert "Traceback" not in result.output


def test_check_lists_several_problems(dataset):
    ids = (dataset / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    _missing_image(dataset, ids[0])
    _unknown_class(dataset, ids[1])
    result = run("data", "check", dataset)
    assert result.exit_code == 1 and "2 problem(s):" in result.output


def test_check_bad_root_and_class_list(tmp_path):
    result = run("data", "check", tmp_path / "absent")
    assert result.exit_code == 1 and f"Error: {tmp_path / 'absent'}: dataset not found" in result.output
    (tmp_path / "classes.txt").write_text("cat\n")
    result = run("data", "check", tmp_path)
    assert result.exit_code == 1 and f"Error: {tmp_path / 'classes.txt'}:" in result.output


def test_synth_command(tmp_path):
    out = tmp_path / "syn"
    result = run("data", "synth", out, "--images", 8, "--size", 48, "--seed", 3)
    assert result.exit_code == 0, result.output
    assert "train 6, val 2" in result.output
    assert len(list((out / "JPEGImages").glob("*.jpg"))) == 8
    assert read_label_png(out / "SegmentationClass" / "syn_00000.png").shape == (48, 48)
    result = run("data", "synth", out, "--images", 8, "--size", 48)
    assert result.exit_code == 1 and f"Error: {out}: folder exists and is not empty" in result.output
    assert run("data", "synth", out, "--images", 8, "--size", 48, "--force").exit_code == 0
    result = run("data", "synth", tmp_path / "x", "--images", 2)
    assert result.exit_code == 2 and "--images" in result.output


def _write_predictions(root, folder, split="val", size=None):
    ids = (root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
    for i in ids:
        gt = read_label_png(root / "SegmentationClass" / f"{i}.png")
        pred = np.where(gt == 255, 0, gt) if size is None else np.zeros(size, np.uint8)
        write_label_png(folder / f"{i}.png", pred)
    return ids


def test_eval_command(synthetic_root, tmp_path):
    perfect, empty = tmp_path / "perfect", tmp_path / "empty"
    ids = _write_predictions(synthetic_root, perfect)
    for i in ids:
        write_label_png(empty / f"{i}.png", np.zeros((64, 64), np.uint8))
    out = tmp_path / "eval" / "r.json"
    result = run("eval", synthetic_root, "--split", "val", "--pred", perfect, "--pred", empty, "--json", out)
    assert result.exit_code == 0, result.output
    lines = [line.split() for line in result.output.splitlines()]
    assert ["Categories", "perfect", "empty"] in lines
    miou = next(line for line in lines if line and line[0] == "mIoU")
    assert miou[1] == "100.0"
    bkg = next(line for line in lines if line and line[0] == "bkg")
    assert bkg[1] == "100.0"
    report = json.loads(out.read_text())
    assert report["split"] == "val" and report["num_images"] == len(ids)
    assert [r["name"] for r in report["results"]] == ["perfect", "empty"]
    assert report["results"][0]["miou"] == 1.0
    # all-background: every present object class scores 0
    assert all(v in (0.0, None) for c, v in report["results"][1]["iou"].items() if c != "background")


def test_eval_errors_name_the_file(synthetic_root, tmp_path):
    preds = tmp_path / "p"
    ids = _write_predictions(synthetic_root, preds, size=(64, 60))
    result = run("eval", synthetic_root, "--pred", preds)
    assert result.exit_code == 1
    assert f"Error: {preds / (ids[0] + '.png')}: prediction is 60x64 but the ground truth is 64x64" in result.output
    _write_predictions(synthetic_root, preds)
    (preds / f"{ids[-1]}.png").unlink()
    result = run("eval", synthetic_root, "--pred", preds)
    assert result.exit_code == 1 and f"Error: {preds / (ids[-1] + '.png')}: prediction missing" in result.output
    assert "Traceback" not in result.output
    result = run("eval", synthetic_root)
    assert result.exit_code == 1 and "give --pred DIR" in result.output
    result = run("eval", synthetic_root, "--split", "test", "--pred", preds)
    assert result.exit_code == 1 and "no image list for split 'test'" in result.output


def test_eval_on_voc_sample(voc_sample, tmp_path):
    preds = tmp_path / "gt"
    ids = _write_predictions(voc_sample, preds)
    result = run("eval", voc_sample, "--pred", preds)
    assert result.exit_code == 0, result.output
    assert f"gt: mIoU 100.0%, pixel accuracy 100.0% on {len(ids)} images" in result.output
    # classes absent from the 15 photographs print as '-'
    assert next(line.split() for line in result.output.splitlines() if line.startswith("dog ")) == ["dog", "-"]


@pytest.mark.parametrize("args, words", [
    (["data", "--help"], ["check", "synth"]),
    (["data", "check", "--help"], ["DATA", "JPEGImages", "labels file", "COCO", "non-zero"]),
    (["data", "synth", "--help"], ["OUT", "--images", "--size", "--seed", "--force"]),
    (["eval", "--help"], ["DATA", "--split", "--pred", "--json", "mIoU"]),
])
def test_help_describes_arguments(args, words):
    result = run(*args)
    assert result.exit_code == 0
    for word in words:
        assert word in result.output, word
