"""The stage-by-stage quality report (wsk.pseudo.report) on a hand-made 4x6 example.

Ground truth (one row shown; every row the same, except one ignored pixel at row 0, column 2)::

    columns   0 1 | 2 3 | 4 5
    class     1 1 | 0 0 | 2 2

Superpixels are the six columns. Proposals: p0 = {0,1}, p1 = {0..3}, p2 = {4}, p3 = {3,4,5},
p4 = {2}. Every number below is counted by hand from this picture.
"""

import numpy as np
import pytest

from wsk.io import save_json, save_npz, write_image, write_label_png
from wsk.proposals.container import Proposals
from wsk.data.voc import VOCDataset
from wsk.pseudo.report import format_quality, has_ground_truth, proposal_ious, quality_report
from wsk.workdir import WorkDir


@pytest.fixture()
def tiny(tmp_path):
    root, work = tmp_path / "data", tmp_path / "work"
    gt = np.zeros((4, 6), np.uint8)
    gt[:, 0:2] = 1
    gt[:, 4:6] = 2
    gt[0, 2] = 255
    write_label_png(str(root / "SegmentationClass" / "img0.png"), gt)
    write_image(str(root / "JPEGImages" / "img0.jpg"), np.full((4, 6, 3), 128, np.uint8))
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("img0\n")
    (root / "classes.txt").write_text("background\na\nb\n")
    superpixels = np.tile(np.arange(6, dtype=np.int32), (4, 1))
    proposals = Proposals.from_regions(superpixels, [[0, 1], [0, 1, 2, 3], [4], [3, 4, 5], [2]])
    wd = WorkDir(str(work))
    proposals.save(wd.proposals("img0"))
    # HCP columns: class 1 -> 0, class 2 -> 1. Class 1's top is p1, class 2's top is p4 (wrong).
    scores = np.array([[0.8, 0.1], [0.9, 0.1], [0.1, 0.4], [0.1, 0.6], [0.1, 0.7]], np.float32)
    save_npz(wd.scores("img0"), scores=scores, candidates=np.array([1, 0, 4, 3], np.int32),
             candidate_labels=np.array([1, 1, 2, 2], np.int32))
    save_json(wd.refined("img0"), {"version": 2, "made_from": {}, "kept": {"1": [0], "2": [4]}, "fallback": []})
    return str(root), str(work), proposals


def test_proposal_ious_by_hand(tiny):
    _, _, proposals = tiny
    target = np.zeros((4, 6), bool)
    target[:, 4:6] = True
    valid = np.ones((4, 6), bool)
    np.testing.assert_allclose(proposal_ious(proposals, target, valid), [0, 0, 0.5, 8 / 12, 0])


def test_report_numbers_by_hand(tiny):
    root, work, _ = tiny
    dataset = VOCDataset(root, "train")
    assert has_ground_truth(dataset)
    report = quality_report(dataset, work)
    overall = report["overall"]
    # ceiling map: cols 0-1 class 1 (p0), cols 3-5 class 2 (p3), col 2 background.
    # bkg: gt 7 valid px (col 2 rows 1-3, col 3), predicted 3 valid px (col 2) -> 3/7;
    # class 1: 8/8; class 2: gt 8, predicted 12 -> 8/12.
    ceiling = report["per_class"]["proposal ceiling (IoU)"]
    np.testing.assert_allclose(ceiling, [3 / 7, 1.0, 8 / 12])
    assert overall["proposal_ceiling_miou"] == pytest.approx((3 / 7 + 1 + 8 / 12) / 3)
    # top-scored: class 1 -> p1, IoU 8 / 15 (p1 has 15 valid px); class 2 -> p4, IoU 0
    np.testing.assert_allclose(report["per_class"]["top proposal IoU"][1:], [8 / 15, 0.0])
    assert overall["top_proposal_iou"] == pytest.approx(4 / 15)
    assert overall["labels_with_candidate"] == 1.0
    # candidates: class 1 {p1 0.53, p0 1.0} both hits; class 2 {p4 0, p3 0.67}: one
    np.testing.assert_allclose(report["per_class"]["candidate precision"][1:], [1.0, 0.5])
    assert overall["candidate_precision"] == pytest.approx(3 / 4)
    # kept: class 1 p0 (hit), class 2 p4 (miss)
    assert overall["kept_precision"] == pytest.approx(1 / 2)
    text = format_quality(report)
    assert "proposal ceiling 69.8 mIoU" in text and "top proposal IoU 26.7" in text


def test_no_ground_truth_means_no_report(tiny, tmp_path):
    root, _, _ = tiny
    (tmp_path / "data" / "SegmentationClass" / "img0.png").unlink()
    (tmp_path / "data" / "Annotations").mkdir()
    (tmp_path / "data" / "Annotations" / "img0.xml").write_text(
        "<annotation><object><name>a</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax>"
        "<ymax>4</ymax></bndbox></object></annotation>")
    assert not has_ground_truth(VOCDataset(root, "train"))


def test_report_counts_the_candidates_that_pass_the_calibrated_thresholds(tiny):
    from wsk.pseudo.refine_stage import save_statistics
    from wsk.pseudo.refinement import ClassTotals

    root, work, _ = tiny
    dataset = VOCDataset(root, "train")
    # class 1 at 0.85: p1 (0.9) passes, p0 (0.8) does not; class 2 at 0.65: p4 (0.7) passes, p3 (0.6) not
    save_statistics(WorkDir(work).refinement, {}, "", None, ClassTotals(), None, np.array([0.85, 0.65]))
    report = quality_report(dataset, work)
    # class 1 {p1, IoU 0.53}: a hit; class 2 {p4, IoU 0}: a miss
    np.testing.assert_allclose(report["per_class"]["candidate precision"][1:], [1.0, 0.0])
    assert report["overall"]["labels_with_candidate"] == 1.0
    # class 1 at 0.95: none of its candidates passes
    save_statistics(WorkDir(work).refinement, {}, "", None, ClassTotals(), None, np.array([0.95, 0.65]))
    assert quality_report(dataset, work)["overall"]["labels_with_candidate"] == 0.5
