"""kill -9 inside every stage command, after its first output and before its last; rerun; get what an
uninterrupted run gets.

For each command, in pipeline order, on ``_recipe()`` (``tiny`` with two epochs per training step, so
that a training run has a backup before its final model): run A goes straight through; run B is
started and watched, its outputs counted every ``POLL_S`` seconds, and killed (SIGKILL to its whole
process group) as soon as it has written an output it did not find at its start (from the
command's ``kill_at`` output on) and has not written its last; once per entry of ``kill_at``, then
B is rerun to the end.

What is counted as a command's outputs (``written``) and as its last (``finished``):

* ``proposals``: ``proposals/<id>.npz``; last: one per training image (as many as A wrote);
* ``train hcp``: the finished epochs its backups record (``hcp/checkpoints/{image,hypothesis}``; the
  image step's whole count once ``image_finetuned.keras`` exists); last: ``hcp/hcp.keras``. It is
  killed twice: once in the image step, then once a hypothesis-step backup exists, so both steps
  are resumed from a backup;
* ``pseudo``: ``scores/``, ``refinement.npz``, ``refined/``, ``locmaps/`` and ``masks/``; last: as
  many files as A wrote;
* ``train seg``: the finished epochs its backup records; last: ``seg/SN_B/model.keras``;
* ``predict``: the label PNGs of ``PREDICT_COPIES`` copies of the dataset's images; last: one each;
* ``eval`` (``trainval``): the prediction PNGs it writes to its temporary folders (``TMPDIR`` is
  ``WORK/tmp``; a killed run leaves its folder there); last: ``eval.json``.

At each kill the test asserts that the process was still running (it died of the SIGKILL), that
it had written at least one output and not its last, and that what it left is still partial.
Then B's outputs must equal A's: the same arrays in every ``.npz`` (their ``made_from``/``inputs``
records name other files and are left out), the same pixels in every PNG, the same
``refined/<id>.json`` kept sets, the same mIoUs, and for the two training stages weights equal
within ``WEIGHTS_ATOL`` absolute (resumed training repeats the same epochs, with the same data order
and dropout, from the last backup; multi-threaded float sums could reorder, though measured
differences have been 0).

``predict`` and ``eval`` run pydensecrf's CRF where it is installed: what is tested is resumption,
and the Keras CRF compiles in every process (tens of seconds on 2 cores; it has its own tests).
"""

import dataclasses
import importlib.util
import json
import shutil
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

WEIGHTS_ATOL = 1e-4        # the largest |A - B| allowed in any weight of a resumed training run
POLL_S = 0.003             # how often a watched run's outputs are counted
DEADLINE_S = 900           # a run that takes longer is killed and fails the test
PREDICT_COPIES = 2         # predict this many copies of each image: a window wide enough to kill in
CRF_BACKEND = "densecrf" if importlib.util.find_spec("pydensecrf") else "keras"
PROVENANCE = ("made_from", "inputs")   # records of what a file was made from: they name A's or B's files


def _recipe():
    from wsk.recipes import RECIPES

    tiny = RECIPES["tiny"]
    return dataclasses.replace(tiny, hcp=dataclasses.replace(tiny.hcp, image_epochs=2, hypothesis_epochs=2),
                               seg=dataclasses.replace(tiny.seg, epochs=2))


def _wsk(args, log, env):
    return subprocess.Popen([sys.executable, "-m", "wsk.cli", *map(str, args)],
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **env),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _run(args, log_path, env):
    with open(log_path, "wb") as log:
        proc = _wsk(args, log, env)
        try:
            proc.wait(timeout=DEADLINE_S)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert proc.returncode == 0, log_path.read_text()[-3000:]


def _kill_mid_work(args, log_path, env, progress, kill_at):
    """Start the command and SIGKILL its process group once ``progress()`` (``(written, finished)``)
    shows an output written by this run, the ``kill_at``-th or later, and not the last one.
    Returns ``(written at the kill, written after it)``."""
    found, _ = progress()
    want = max(kill_at, found + 1)
    seen = (found, False)
    with open(log_path, "wb") as log:
        proc = _wsk(args, log, env)
        deadline = time.monotonic() + DEADLINE_S
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                seen = progress()
                if seen[0] >= want and not seen[1]:
                    os.killpg(proc.pid, signal.SIGKILL)
                    break
                time.sleep(POLL_S)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    after = progress()
    tail = log_path.read_text()[-2000:]
    assert proc.returncode == -signal.SIGKILL, (
        f"it ended (exit code {proc.returncode}) before it could be killed with {want}+ outputs and not "
        f"its last: {seen} when last looked at\n{tail}")
    assert want <= seen[0] and not seen[1], seen
    assert after[0] > 0 and not after[1], f"the kill left {after}"
    return seen[0], after[0]


def _count(folder, suffix):
    """Files ``*<suffix>`` in ``folder``, temporaries (``.*``) left out."""
    if not os.path.isdir(folder):
        return 0
    return sum(1 for name in os.listdir(folder) if name.endswith(suffix) and not name.startswith("."))


def _backed_up(folder):
    """The finished epochs the training backup in ``folder`` records (0 without one)."""
    if not os.path.isdir(folder):
        return 0
    for name in os.listdir(folder):
        if name.endswith(".json") and not name.startswith("."):
            try:
                with open(os.path.join(folder, name)) as f:
                    return int(json.load(f)["epoch"])
            except (OSError, ValueError, KeyError, TypeError):
                return 0
    return 0


def _files_progress(folders, total):
    def progress():
        written = sum(_count(folder, suffix) for folder, suffix in folders)
        return written, written >= total()
    return progress


def _hcp_progress(work, image_epochs):
    hcp = work / "hcp"

    def progress():
        image = image_epochs if (hcp / "image_finetuned.keras").exists() else _backed_up(hcp / "checkpoints" / "image")
        return image + _backed_up(hcp / "checkpoints" / "hypothesis"), (hcp / "hcp.keras").exists()
    return progress


def _seg_progress(work):
    def progress():
        return _backed_up(work / "seg" / "SN_B" / "checkpoints"), (work / "seg" / "SN_B" / "model.keras").exists()
    return progress


def _eval_progress(work):
    def progress():
        tmp = work / "tmp"
        written = sum(_count(os.path.join(tmp, name), ".png") for name in os.listdir(tmp)) if tmp.is_dir() else 0
        return written, (work / "eval.json").exists()
    return progress


def _arrays(path):
    with np.load(path) as data:
        return {k: data[k] for k in data.files if k not in PROVENANCE}


def _same_npz_folder(a, b):
    names = sorted(os.listdir(a))
    assert names == sorted(os.listdir(b)) and names
    for name in names:
        left, right = _arrays(os.path.join(a, name)), _arrays(os.path.join(b, name))
        assert sorted(left) == sorted(right), name
        for key in left:
            np.testing.assert_array_equal(left[key], right[key], err_msg=f"{name}:{key}")


def _same_png_folder(a, b):
    names = sorted(n for n in os.listdir(a) if n.endswith(".png"))
    assert names == sorted(n for n in os.listdir(b) if n.endswith(".png")) and names
    for name in names:
        np.testing.assert_array_equal(np.array(Image.open(os.path.join(a, name))),
                                      np.array(Image.open(os.path.join(b, name))), err_msg=name)


def _same_weights(a, b):
    from wsk.models.saving import load_model

    left, right = load_model(str(a)).get_weights(), load_model(str(b)).get_weights()
    assert len(left) == len(right) and left
    for x, y in zip(left, right):
        np.testing.assert_allclose(x, y, rtol=0, atol=WEIGHTS_ATOL)
    return max(float(np.max(np.abs(x - y))) for x, y in zip(left, right))


def _same_refined(a, b):
    names = sorted(os.listdir(a))
    assert names == sorted(os.listdir(b)) and names
    for name in names:
        left, right = json.loads((a / name).read_text()), json.loads((b / name).read_text())
        assert (left["kept"], left["fallback"]) == (right["kept"], right["fallback"]), name


def _same_pseudo(a, b):
    _same_npz_folder(a / "scores", b / "scores")
    _same_npz_folder(a / "locmaps", b / "locmaps")
    _same_png_folder(a / "masks", b / "masks")
    _same_refined(a / "refined", b / "refined")


def _same_eval(a, b):
    left, right = json.loads(a.read_text()), json.loads(b.read_text())
    assert [r["miou"] for r in left["results"]] == [r["miou"] for r in right["results"]]


def test_killed_stages_resume_to_the_uninterrupted_result(tmp_path):
    from wsk.data.synthetic import generate_dataset
    from wsk.run_record import open_run

    root = tmp_path / "data"
    generate_dataset(root, num_images=8, size=64, seed=3)
    recipe = _recipe()
    works = {"A": tmp_path / "A", "B": tmp_path / "B"}
    for work in works.values():
        open_run(str(work), str(root), recipe=recipe)   # run.json: every stage command runs this recipe
    photos = tmp_path / "photos"   # the images to predict: PREDICT_COPIES copies of each
    photos.mkdir()
    for copy in range(PREDICT_COPIES):
        for image in sorted((root / "JPEGImages").iterdir()):
            shutil.copyfile(image, photos / f"{copy}_{image.name}")
    crf = ["--crf", "--crf-backend", CRF_BACKEND]
    model = lambda w: w / "seg" / "SN_B" / "model.keras"  # noqa: E731
    pseudo_dirs = lambda w: [(w / "scores", ".npz"), (w, "refinement.npz"), (w / "refined", ".json"),  # noqa: E731
                             (w / "locmaps", ".npz"), (w / "masks", ".png")]
    A = works["A"]
    # name, arguments(work), environment(work), progress(work) -> () -> (written, finished),
    # kill_at (one kill each: the least output count it waits for), comparison of A and B
    commands = [
        ("proposals", lambda w: ["proposals", "run", root, w, "--jobs", 1], lambda w: {},
         lambda w: _files_progress([(w / "proposals", ".npz")], lambda: _count(A / "proposals", ".npz")), (1,),
         lambda: _same_npz_folder(works["A"] / "proposals", works["B"] / "proposals")),
        ("train hcp", lambda w: ["train", "hcp", root, w, "--quiet"], lambda w: {},
         lambda w: _hcp_progress(w, recipe.hcp.image_epochs), (1, recipe.hcp.image_epochs + 1),
         lambda: _same_weights(works["A"] / "hcp" / "hcp.keras", works["B"] / "hcp" / "hcp.keras")),
        ("pseudo", lambda w: ["pseudo", root, w, "--jobs", 1, "--no-report"], lambda w: {},
         lambda w: _files_progress(pseudo_dirs(w), lambda: sum(_count(f, s) for f, s in pseudo_dirs(A))), (1,),
         lambda: _same_pseudo(works["A"], works["B"])),
        ("train seg", lambda w: ["train", "seg", root, w, "--variant", "SN_B", "--quiet"], lambda w: {},
         _seg_progress, (1,),
         lambda: _same_weights(model(works["A"]), model(works["B"]))),
        ("predict", lambda w: ["predict", model(w), photos, "--out", w / "pred", *crf], lambda w: {},
         lambda w: _files_progress([(w / "pred", ".png")], lambda: _count(photos, ".jpg")), (1,),
         lambda: _same_png_folder(works["A"] / "pred", works["B"] / "pred")),
        ("eval", lambda w: ["eval", root, "--split", "trainval", "--model", model(w), *crf, "--json", w / "eval.json"],
         lambda w: {"TMPDIR": str(w / "tmp")}, _eval_progress, (1,),
         lambda: _same_eval(works["A"] / "eval.json", works["B"] / "eval.json")),
    ]
    for work in works.values():
        (work / "tmp").mkdir()
    for name, args, env, progress, kill_at, same in commands:
        slug, B = name.replace(" ", "-"), works["B"]
        _run(args(A), tmp_path / f"{slug}-A.log", env(A))
        kills = [_kill_mid_work(args(B), tmp_path / f"{slug}-B{k}.log", env(B), progress(B), at)
                 for k, at in enumerate(kill_at)]
        _run(args(B), tmp_path / f"{slug}-B.log", env(B))
        difference = same()
        print(f"{name}: killed with {kills} outputs (at the kill, after it)"
              + ("" if difference is None else f"; largest weight difference {difference:g}"))
