"""``wsk proposals run|import-mcg|eval`` on tiny datasets written by the tests."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from wsk.cli.main import cli
from wsk.io import write_image, write_label_png
from wsk.proposals import Proposals, run_proposals
from wsk.workdir import WorkDir


def _dataset(root, ids, size=48, split="train"):
    rng = np.random.default_rng(0)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    for k, image_id in enumerate(ids):
        image = np.full((size, size, 3), 30 * k, np.uint8)
        image[10:30, 12:36] = rng.integers(120, 255, 3)
        write_image(root / "JPEGImages" / f"{image_id}.jpg", image)
    (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


def _invoke(*args):
    result = CliRunner().invoke(cli, list(map(str, args)))
    return result, result.output + (result.stderr if hasattr(result, "stderr") else "")


def test_run_resumes_and_recomputes_only_a_deleted_output(tmp_path):
    root = _dataset(tmp_path / "data", ["a", "b", "c"])
    work = WorkDir(tmp_path / "work")
    result, out = _invoke("proposals", "run", root, work.root, "--split", "train", "--jobs", 1, "--max-proposals", 50)
    assert result.exit_code == 0, out
    assert "3 computed, 0 already done, 0 failed" in out
    times = {i: (tmp_path / "work" / "proposals" / f"{i}.npz").stat().st_mtime_ns for i in "abc"}
    for i in "abc":
        props = Proposals.load(work.proposals(i))
        assert 0 < len(props) <= 50 and props.shape == (48, 48)

    (tmp_path / "work" / "proposals" / "b.npz").unlink()
    result, out = _invoke("proposals", "run", root, work.root, "--split", "train", "--jobs", 1, "--max-proposals", 50)
    assert result.exit_code == 0, out
    assert "1 computed, 2 already done, 0 failed" in out
    for i in "ac":
        assert (tmp_path / "work" / "proposals" / f"{i}.npz").stat().st_mtime_ns == times[i]
    assert Proposals.is_valid(work.proposals("b"))

    # a damaged output is not "done": it is recomputed
    (tmp_path / "work" / "proposals" / "c.npz").write_bytes(b"broken")
    result, out = _invoke("proposals", "run", root, work.root, "--split", "train", "--jobs", 1, "--max-proposals", 50)
    assert "1 computed, 2 already done" in out and Proposals.is_valid(work.proposals("c"))


def test_changed_settings_or_image_recompute_the_proposals(tmp_path):
    root = _dataset(tmp_path / "data", ["a", "b"])
    args = ["proposals", "run", root, tmp_path / "work", "--split", "train", "--jobs", 1]
    assert "2 computed" in _invoke(*args, "--max-proposals", 50)[1]
    made = Proposals.made_from(WorkDir(tmp_path / "work").proposals("a"))
    assert made["max_proposals"] == 50 and made["seed"] == 0 and made["method"] == "wsk.proposals.generate"
    assert "0 computed, 2 already done" in _invoke(*args, "--max-proposals", 50)[1]
    # another proposal count is another run: WORK/run.json refuses it, naming the field
    result, out = _invoke(*args, "--max-proposals", 40)
    assert result.exit_code == 1 and "run.json: recipe.pseudo.max_proposals is 50" in out
    assert "2 computed, 0 already done" in _invoke(*args, "--seed", 1)[1]          # the seed is the command's
    write_image(root / "JPEGImages" / "b.jpg", np.zeros((48, 48, 3), np.uint8))   # a new photo
    assert "1 computed, 1 already done" in _invoke(*args, "--seed", 1)[1]
    # the library has no run record: other settings recompute every file
    report = run_proposals(root, tmp_path / "work", "train", max_proposals=40, seed=1)
    assert len(report.done) == 2 and Proposals.made_from(WorkDir(tmp_path / "work").proposals("a"))["max_proposals"] == 40


def test_run_lists_failures_with_their_file_and_keeps_the_rest(tmp_path):
    root = _dataset(tmp_path / "data", ["a", "bad", "c"])
    (root / "JPEGImages" / "bad.jpg").write_bytes(b"not a jpeg")
    work = WorkDir(tmp_path / "work")
    result, out = _invoke("proposals", "run", root, work.root, "--split", "train", "--jobs", 2, "--max-proposals", 20)
    assert result.exit_code != 0
    assert "2 computed, 0 already done, 1 failed" in out
    assert "bad.jpg: not a readable image" in out
    assert Proposals.is_valid(work.proposals("a")) and Proposals.is_valid(work.proposals("c"))


def test_eval_reports_hand_computed_abo_and_recall(tmp_path):
    root = tmp_path / "data"
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("p\nq\n")
    work = WorkDir(tmp_path / "work")
    # image p: one aeroplane in the top-left quadrant, a row under it ignored
    mask_p = np.zeros((8, 8), np.uint8)
    mask_p[0:4, 0:4] = 1
    mask_p[4, 0:4] = 255
    write_label_png(root / "SegmentationClass" / "p.png", mask_p)
    quadrants = np.repeat(np.repeat(np.array([[0, 1], [2, 3]]), 4, axis=0), 4, axis=1)
    # left half: 32 pixels, 4 ignored -> IoU 16 / 28; quadrant 1 misses it
    Proposals.from_regions(quadrants, [[0, 2], [1]]).save(work.proposals("p"))
    # image q: two bicycles (two components of class 2), rows 0-1 and rows 6-7
    mask_q = np.zeros((8, 8), np.uint8)
    mask_q[0:2] = 2
    mask_q[6:8] = 2
    write_label_png(root / "SegmentationClass" / "q.png", mask_q)
    bands = np.repeat(np.array([0, 0, 1, 1, 1, 1, 2, 2]), 8).reshape(8, 8)  # rows 0-1, 2-5, 6-7
    # whole image: 16 / 64 with each; then rows 0-1 exactly
    Proposals.from_regions(bands, [[0, 1, 2], [0]]).save(work.proposals("q"))

    result, out = _invoke("proposals", "eval", root, work.root, "--counts", "1,2")
    assert result.exit_code == 0, out
    summary = json.loads((tmp_path / "work" / "eval" / "proposals.json").read_text())
    overall = summary["overall"]
    assert overall["objects"] == 3
    assert overall["abo"]["1"] == pytest.approx((16 / 28 + 0.25 + 0.25) / 3)
    assert overall["abo"]["2"] == pytest.approx((16 / 28 + 1.0 + 0.25) / 3)
    assert overall["recall"]["1"] == pytest.approx(1 / 3)
    assert overall["recall"]["2"] == pytest.approx(2 / 3)
    assert summary["per_class"]["bicycle"]["abo"]["2"] == pytest.approx(0.625)
    assert "aeroplane" in out and "overall" in out


def test_eval_without_proposals_is_an_error_naming_the_file(tmp_path):
    root = tmp_path / "data"
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("p\n")
    result, out = _invoke("proposals", "eval", root, tmp_path / "work")
    assert result.exit_code == 1
    assert "p.npz: 1 image(s) of 'val' have no proposals" in out


def test_import_mcg_command(tmp_path):
    from scipy.io import savemat

    mcg = tmp_path / "mcg"
    mcg.mkdir()
    superpixels = np.array([[1, 1, 2], [3, 3, 2]], np.uint16)
    cells = np.empty((2, 1), dtype=object)
    cells[0, 0] = np.array([[2.0], [3.0]])
    cells[1, 0] = np.array([[1.0]])
    savemat(mcg / "x.mat", {"superpixels": superpixels, "labels": cells, "scores": np.array([[0.3], [0.7]])})
    savemat(mcg / "y.mat", {"superpixels": superpixels, "scores": np.array([[0.3]])})  # no labels
    work = WorkDir(tmp_path / "work")
    result, out = _invoke("proposals", "import-mcg", mcg, work.root, "--jobs", 1)
    assert result.exit_code == 1
    assert "1 computed, 0 already done, 1 failed" in out
    assert "y.mat: not an MCG proposals file: missing labels" in out
    props = Proposals.load(work.proposals("x"))
    np.testing.assert_array_equal(props.masks(), [[[1, 1, 0], [0, 0, 0]], [[0, 0, 1], [1, 1, 1]]])
    np.testing.assert_allclose(props.scores, [0.7, 0.3])
