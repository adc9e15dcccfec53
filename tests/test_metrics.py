"""wsk.metrics against a hand-computed confusion matrix and a naive per-pixel reference."""

import math

import numpy as np
import pytest

from wsk.data.voc import VOCDataset
from wsk.errors import WskError
from wsk.io import write_label_png
from wsk.metrics import (ConfusionMatrix, PredictionFolder, confusion_matrix, evaluate_dataset, format_table,
                         iou_per_class, mean_iou, pixel_accuracy)

# 3x4 image, two ignored pixels; class 3 appears nowhere.
GT = np.array([[0, 0, 1, 1],
               [0, 255, 1, 2],
               [2, 2, 255, 0]], np.uint8)
PRED = np.array([[0, 1, 1, 1],
                 [0, 0, 2, 2],
                 [2, 0, 1, 0]], np.uint8)
# Counted by hand, pixel by pixel (rows ground truth, columns prediction).
CM = np.array([[3, 1, 0, 0],
               [0, 2, 1, 0],
               [1, 0, 2, 0],
               [0, 0, 0, 0]])


def naive_confusion(gt, pred, num_classes):
    cm = np.zeros((num_classes, num_classes), np.int64)
    for g, p in zip(gt.ravel().tolist(), pred.ravel().tolist()):
        if g != 255:
            cm[g, p] += 1
    return cm


def test_confusion_matrix_by_hand():
    assert np.array_equal(confusion_matrix(GT, PRED, 4), CM)


def test_iou_miou_accuracy_by_hand():
    iou = iou_per_class(CM)
    # IoU_0 = 3 / (4 + 4 - 3), IoU_1 = 2 / (3 + 3 - 2), IoU_2 = 2 / (3 + 3 - 2), class 3 absent
    assert iou[:3] == pytest.approx([0.6, 0.5, 0.5])
    assert math.isnan(iou[3])
    assert mean_iou(CM) == pytest.approx((0.6 + 0.5 + 0.5) / 3)  # NaN class left out
    assert pixel_accuracy(CM) == pytest.approx(7 / 10)
    assert math.isnan(mean_iou(np.zeros((3, 3))))


def test_accumulator_sums_images_and_matches_naive_reference():
    rng = np.random.default_rng(3)
    acc = ConfusionMatrix(5)
    total = np.zeros((5, 5), np.int64)
    for _ in range(4):
        gt = rng.integers(0, 5, (13, 17)).astype(np.uint8)
        gt[rng.random(gt.shape) < 0.2] = 255
        pred = rng.integers(0, 5, gt.shape).astype(np.uint8)
        acc.update(gt, pred)
        total += naive_confusion(gt, pred, 5)
    assert acc.images == 4
    assert np.array_equal(acc.matrix, total)
    tp = np.diag(total).astype(float)
    naive_iou = [tp[c] / (total[c].sum() + total[:, c].sum() - tp[c]) for c in range(5)]
    assert acc.iou() == pytest.approx(naive_iou)
    assert acc.mean_iou() == pytest.approx(np.mean(naive_iou))
    assert acc.pixel_accuracy() == pytest.approx(tp.sum() / total.sum())


def test_confusion_matrix_rejects_bad_input():
    with pytest.raises(WskError, match="shape"):
        confusion_matrix(GT, PRED[:, :3], 4)
    with pytest.raises(WskError, match="prediction holds values outside 0..3"):
        confusion_matrix(GT, np.full(GT.shape, 4, np.uint8), 4)
    with pytest.raises(WskError, match="ground truth holds values"):
        confusion_matrix(np.full(GT.shape, 9, np.uint8), PRED, 4)
    # a wrong prediction under an ignored pixel does not matter
    pred = PRED.copy()
    pred[1, 1] = 0
    assert np.array_equal(confusion_matrix(GT, pred, 4), CM)


def test_format_table_layout():
    table = format_table({"AN_A": [0.694, 0.376, float("nan")], "SN_B": [0.807, 0.546, 0.25]},
                         ("background", "aeroplane", "disc"))
    rows = [line.split() for line in table.splitlines()]
    assert rows[0] == ["Categories", "AN_A", "SN_B"]
    assert rows[1] == ["bkg", "69.4", "80.7"]
    assert rows[2] == ["plane", "37.6", "54.6"]
    assert rows[3] == ["disc", "-", "25.0"]
    # mIoU: (69.4 + 37.6) / 2 = 53.5 and (80.7 + 54.6 + 25.0) / 3 = 53.43
    assert rows[4] == ["mIoU", "53.5", "53.4"]
    with pytest.raises(WskError, match="2 IoU values for 3 classes"):
        format_table({"x": [0.1, 0.2]}, ("background", "aeroplane", "disc"))


def test_evaluate_dataset_on_synthetic(synthetic_root, tmp_path):
    ds = VOCDataset(synthetic_root, "val")
    perfect, background = tmp_path / "perfect", tmp_path / "bkg"
    total = np.zeros((ds.num_classes, ds.num_classes), np.int64)
    for i in ds.ids:
        gt = ds.mask(i)
        clean = np.where(gt == 255, 0, gt)
        write_label_png(perfect / f"{i}.png", clean)
        write_label_png(background / f"{i}.png", np.zeros_like(gt))
        total += naive_confusion(gt, np.zeros_like(gt), ds.num_classes)
    result = evaluate_dataset(ds, PredictionFolder(perfect), name="perfect", show_progress=False)
    present = [c for c in range(ds.num_classes) if total[c].sum()]
    assert result.mean_iou == 1.0 and result.pixel_accuracy == 1.0
    assert np.isnan(result.iou).sum() == ds.num_classes - len(present)
    result = evaluate_dataset(ds, PredictionFolder(background), name="bkg", show_progress=False)
    # all-background: IoU_bkg = bkg pixels / counted pixels, every present object class 0
    bkg_iou = total[0, 0] / total.sum()
    assert result.iou[0] == pytest.approx(bkg_iou)
    assert result.mean_iou == pytest.approx(bkg_iou / len(present))
    doc = result.to_dict()
    assert doc["miou"] == pytest.approx(bkg_iou / len(present))
    assert doc["iou"]["background"] == pytest.approx(bkg_iou)


def test_evaluate_dataset_errors_name_the_file(synthetic_root, tmp_path):
    ds = VOCDataset(synthetic_root, "val")
    first, second = ds.ids[:2]
    write_label_png(tmp_path / f"{first}.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(WskError, match="prediction is 5x5 but the ground truth is 64x64") as err:
        evaluate_dataset(ds, PredictionFolder(tmp_path), show_progress=False)
    assert err.value.path == str(tmp_path / f"{first}.png")
    write_label_png(tmp_path / f"{first}.png", np.zeros((64, 64), np.uint8))
    with pytest.raises(WskError, match="prediction missing") as err:
        evaluate_dataset(ds, PredictionFolder(tmp_path), show_progress=False)
    assert err.value.path == str(tmp_path / f"{second}.png")
    with pytest.raises(WskError, match="prediction folder not found"):
        PredictionFolder(tmp_path / "absent")
