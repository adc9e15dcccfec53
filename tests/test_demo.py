"""``wsk demo`` on a tiny setting: every stage runs, every row is printed, the numbers are the files'."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

ROWS = ["pseudo-labels: loc. maps", "pseudo-labels: rough masks", "pseudo-labels: loc. maps (no refinement)",
        "pseudo-labels: rough masks (no refinement)", "val: AN_A", "val: AN_A+CRF", "val: SN_A", "val: SN_A+CRF",
        "val: AN_B", "val: AN_B+CRF", "val: SN_B", "val: SN_B+CRF"]
STAGES = ["synthetic dataset", "proposals", "hcp", "scoring", "refinement statistics", "refinement",
          "localization maps", "rough masks", "pseudo-labels, no refinement", "segmentation", "evaluation", "export",
          "total"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    from wsk.cli.main import cli

    work = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(cli, ["demo", "--work", str(work), "--images", "16", "--size", "64",
                                      "--tiny", "--jobs", "1"])
    assert result.exit_code == 0, result.output
    return work, result.output


def test_demo_prints_every_row_and_stage(demo_run):
    _, output = demo_run
    for row in ROWS + STAGES:
        assert row in output, row


def test_demo_prints_the_quality_report(demo_run):
    work, output = demo_run
    assert "Quality of each stage on paper_train" in output
    for row in ("proposal ceiling (IoU)", "labels with a candidate", "top proposal IoU", "candidate precision",
                "kept precision"):
        assert row in output, row
    report = json.loads((work / "run-summary.json").read_text())["quality"]
    assert 0 < report["overall"]["proposal_ceiling_miou"] <= 1
    assert (work / "quality.json").is_file()


def test_demo_rough_mask_miou_is_the_files_miou(demo_run):
    """The printed rough-mask mIoU equals an independent count over the PNGs on disk."""
    work, output = demo_run
    root = work / "data"
    ids = sorted(set((root / "ImageSets/Main/trainval.txt").read_text().split())
                 & set((root / "ImageSets/Segmentation/train_aug.txt").read_text().split()))
    classes = (root / "classes.txt").read_text().split()
    n = len(classes)
    counts = np.zeros((n, n), np.int64)
    for image_id in ids:
        gt = np.asarray(Image.open(root / "SegmentationClass" / f"{image_id}.png")).astype(np.int64)
        pred = np.asarray(Image.open(work / "masks" / f"{image_id}.png")).astype(np.int64)
        keep = gt != 255
        for g, p in zip(gt[keep], pred[keep]):
            counts[g, p] += 1
    union = counts.sum(0) + counts.sum(1) - np.diag(counts)
    iou = np.diag(counts)[union > 0] / union[union > 0]
    line = next(l for l in output.splitlines() if l.startswith("pseudo-labels: rough masks "))
    assert float(line.split()[-1]) == pytest.approx(100 * iou.mean(), abs=0.051)
    report = json.loads((work / "run-summary.json").read_text())
    assert report["pseudo"]["results"][1]["name"] == "rough masks"
    assert report["pseudo"]["results"][1]["miou"] == pytest.approx(iou.mean(), abs=1e-9)


def test_demo_resumes_without_recomputing(demo_run):
    """A second run on the same folder reuses every stage's files (models are not retrained)."""
    from wsk.cli.main import cli

    work, _ = demo_run
    model = work / "seg" / "SN_B" / "model.keras"
    before = model.stat().st_mtime_ns
    result = CliRunner().invoke(cli, ["demo", "--work", str(work), "--images", "16", "--size", "64",
                                      "--tiny", "--jobs", "1", "--no-crf"])
    assert result.exit_code == 0, result.output
    assert model.stat().st_mtime_ns == before
    assert "exists: not retrained" in result.output


def test_a_copied_work_directory_resumes_without_recomputing(demo_run, tmp_path):
    """A work directory copied without its files' times (``cp -r``, a sync to a bucket) is still what
    it was made from: the demo on the copy retrains no model and rewrites no per-image output."""
    from wsk.cli.main import cli

    work, _ = demo_run
    copy = tmp_path / "copy"
    shutil.copytree(work, copy, copy_function=shutil.copyfile)   # every file gets a new mtime
    outputs = [copy / "hcp" / "hcp.keras"] + [copy / "seg" / v / "model.keras" for v in ("AN_A", "SN_A", "AN_B", "SN_B")]
    outputs += [next((copy / folder).iterdir()) for folder in ("proposals", "scores", "refined", "locmaps", "masks")]
    before = {path: path.stat().st_mtime_ns for path in outputs}
    result = CliRunner().invoke(cli, ["demo", "--work", str(copy), "--images", "16", "--size", "64",
                                      "--tiny", "--jobs", "1", "--no-crf"])
    assert result.exit_code == 0, result.output
    assert {path: path.stat().st_mtime_ns for path in outputs} == before
    assert "retraining" not in result.output


def test_the_crf_backends_agree_on_the_demo_variants(demo_run):
    """Issue 23's quality bar on the demo: each variant's +CRF val mIoU with the keras CRF within
    2.0 of pydensecrf's, and within 1.0 on average over the four."""
    from wsk.crf import CRFParams
    from wsk.models.saving import load_model
    from wsk.predict import evaluate_model

    work, _ = demo_run
    gaps = []
    for variant in ("AN_A", "SN_A", "AN_B", "SN_B"):
        model = load_model(str(work / "seg" / variant / "model.keras"))
        miou = {backend: 100.0 * float(evaluate_model(model, str(work / "data"), "val", crf=CRFParams(),
                                                      crf_backend=backend, max_side=64).mean_iou)
                for backend in ("keras", "densecrf")}
        gaps.append(miou["keras"] - miou["densecrf"])
    assert max(abs(gap) for gap in gaps) <= 2.0 and abs(sum(gaps) / len(gaps)) <= 1.0, gaps
