"""ROOT and WORK as URLs (``wsk.storage``): the stages write the same files on ``memory://``, on a local
S3 server (moto, through s3fs) and through ``file://`` as on local disk, provenance records
(``made_from``, ``inputs``: stamps and paths) excepted."""

import dataclasses
import os
import socket

import numpy as np
import pytest
from PIL import Image

fsspec = pytest.importorskip("fsspec")
keras = pytest.importorskip("keras")

from wsk import io, storage  # noqa: E402
from wsk.data.voc import VOCDataset  # noqa: E402
from wsk.errors import WskError  # noqa: E402
from wsk.models import hcp  # noqa: E402
from wsk.models.saving import save_model  # noqa: E402
from wsk.proposals.stage import run_proposals  # noqa: E402
from wsk.pseudo.stage import run_pseudo  # noqa: E402
from wsk.recipes import PseudoConfig  # noqa: E402
from wsk.workdir import WorkDir  # noqa: E402

# every proposal a candidate (a random HCP scores near 1/C): refinement then has work to do
CONFIG = dataclasses.replace(PseudoConfig(), candidate_threshold=0.0, max_proposals=40, score_mode="roi")
PROVENANCE = ("made_from", "inputs", "scores_digest")
NOT_COMPARED = ("run.json",)   # names the dataset's path or URL: a provenance record


# ------------------------------------------------------------------------------------ helpers
def _files(root):
    """``{name relative to root, with /: path or URL}`` of every file under ``root``."""
    root = os.fspath(root)
    cut = len(root.rstrip("/")) + 1
    return {found[cut:].replace(os.sep, "/"): found for found in storage.walk_files(root)}


def assert_same_files(expected_root, root):
    """The same file names under both, and the same contents, provenance records excepted."""
    expected, found = _files(expected_root), _files(root)
    assert sorted(found) == sorted(expected)
    assert len(expected) > 10
    for name, path in expected.items():
        other = found[name]
        if name in NOT_COMPARED:
            continue
        if name.endswith(".npz"):
            a, b = io.load_npz(path), io.load_npz(other)
            assert sorted(a) == sorted(b), name
            for key in a:
                if key not in PROVENANCE:
                    np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name} {key}")
        elif name.endswith(".json"):
            a, b = io.load_json(path), io.load_json(other)
            if isinstance(a, dict):
                a, b = ({k: v for k, v in d.items() if k not in PROVENANCE} for d in (a, b))
            assert a == b, name
        elif name.endswith(".png"):
            np.testing.assert_array_equal(io.read_label_png(path), io.read_label_png(other), err_msg=name)
        else:   # the HCP model, copied in
            assert storage.read_bytes(path) == storage.read_bytes(other), name


def random_hcp(path, num_classes):
    keras.utils.set_random_seed(0)
    save_model(hcp(num_classes=num_classes, image_size=32, width=0.0625), path)


def file_stages(root, work, jobs=1):
    run_proposals(root, work, "train", jobs=jobs, max_proposals=CONFIG.max_proposals).raise_if_failed()
    for report in run_pseudo(root, work, "train", config=CONFIG, jobs=1).values():
        assert not report.failed


@pytest.fixture(scope="module")
def on_disk(synthetic_root, tmp_path_factory):
    """The file stages on local disk: the work directory every URL's is compared with."""
    work = WorkDir(tmp_path_factory.mktemp("on-disk"))
    random_hcp(work.hcp_model, VOCDataset(synthetic_root, "train").num_classes - 1)
    file_stages(synthetic_root, work.root)
    return work


# ------------------------------------------------------------------------------ wsk.io on URLs
def test_url_readers_and_writers_give_what_was_written(tmp_path):
    base = "memory://readers"
    rgb = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    storage.upload(str(tmp_path / "a.png"), f"{base}/data/a.png")
    np.testing.assert_array_equal(io.read_image(f"{base}/data/a.png"), rgb)
    assert io.image_size(f"{base}/data/a.png") == (4, 5)

    io.save_npz(f"{base}/work/x.npz", a=np.array([1.5, -2.0], np.float32))
    np.testing.assert_array_equal(io.load_npz(f"{base}/work/x.npz")["a"], [1.5, -2.0])
    labels = np.array([[0, 1], [255, 2]], np.uint8)
    io.write_label_png(f"{base}/work/m.png", labels, made_from={"k": 1})
    np.testing.assert_array_equal(io.read_label_png(f"{base}/work/m.png"), labels)
    assert io.label_png_made_from(f"{base}/work/m.png") == {"k": 1}
    io.save_json(f"{base}/work/sub/r.json", {"b": [1, 2]})
    assert storage.read_bytes(f"{base}/work/sub/r.json") == b'{\n  "b": [\n    1,\n    2\n  ]\n}\n'

    assert sorted(storage.listdir(f"{base}/work")) == ["m.png", "sub", "x.npz"]
    assert sorted(_files(f"{base}/work")) == ["m.png", "sub/r.json", "x.npz"]
    assert storage.isdir(f"{base}/work/sub") and storage.isfile(f"{base}/work/x.npz")
    before = io.file_stamp(f"{base}/work/x.npz")
    io.save_npz(f"{base}/work/x.npz", a=np.zeros(3))
    assert io.file_stamp(f"{base}/work/x.npz") != before   # a rewritten file makes its users stale
    storage.remove(f"{base}/work/x.npz")
    assert not storage.exists(f"{base}/work/x.npz") and io.file_stamp(f"{base}/work/x.npz") == "missing"
    with pytest.raises(WskError, match="memory://readers/work/x.npz: file not found"):
        io.load_npz(f"{base}/work/x.npz")
    with pytest.raises(WskError, match="image not found"):
        io.read_image(f"{base}/data/none.jpg")


def test_a_url_write_uploads_once_after_the_body_and_nothing_when_it_fails(monkeypatch):
    url = "memory://atomic/out.json"
    puts = []
    upload = storage.upload
    monkeypatch.setattr(storage, "upload", lambda local, to: (puts.append((to, open(local).read())), upload(local, to)))
    with pytest.raises(RuntimeError):
        with io.atomic_path(url) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("killed mid-write")
    assert puts == [] and not storage.exists(url) and not os.path.exists(tmp)
    with io.atomic_path(url) as tmp:
        with open(tmp, "w") as f:
            f.write("whole")
        assert puts == [] and not storage.exists(url)   # nothing appears before the body ends
    assert puts == [(url, "whole")] and storage.read_bytes(url) == b"whole" and not os.path.exists(tmp)
    assert io.remove_temporaries("memory://atomic") == 0   # a URL never holds a temporary


def test_file_and_local_paths():
    assert storage.absolute("file:///data/voc") == "/data/voc"
    assert storage.absolute("s3://bucket/voc/") == "s3://bucket/voc"
    assert storage.absolute("voc") == os.path.join(os.getcwd(), "voc")
    assert not storage.is_url("/data/voc") and not storage.is_url("C:/voc") and storage.is_url("gs://b/x")


def test_a_local_stamp_is_the_content_so_a_copy_keeps_it_and_new_bytes_change_it(tmp_path):
    """``"size:sha256 prefix"``, worked out here with hashlib: a copy with another mtime has the same
    stamp; a file of the same size and mtime with other bytes does not; a missing file is "missing"."""
    import hashlib
    import shutil

    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"wsk" * 1000)
    assert storage.stamp(str(a)) == f"3000:{hashlib.sha256(b'wsk' * 1000).hexdigest()[:24]}"
    shutil.copyfile(a, b)
    os.utime(b, ns=(1, 1))
    assert storage.stamp(str(b)) == storage.stamp(str(a))
    b.write_bytes(b"ksw" * 1000)   # same size; a new stat key, so it is read again
    os.utime(b, ns=(1, 1))
    assert storage.stamp(str(b)) == f"3000:{hashlib.sha256(b'ksw' * 1000).hexdigest()[:24]}"
    assert storage.stamp(str(tmp_path / "none")) == "missing"


def test_save_npz_writes_the_same_bytes_for_the_same_arrays_whatever_the_time(tmp_path, monkeypatch):
    """numpy dates each member with the time of writing; wsk's writer does not, so a recomputed
    output with the same arrays keeps its stamp. np.load reads it back."""
    import time
    import zipfile

    arrays = {"maps": np.arange(12, dtype=np.float16).reshape(3, 4), "version": np.int32(2), "note": np.array("x")}
    io.save_npz(str(tmp_path / "a.npz"), **arrays)
    later = time.time() + 86400
    monkeypatch.setattr(time, "time", lambda: later)
    monkeypatch.setattr(time, "localtime", lambda *a: time.gmtime(later))
    io.save_npz(str(tmp_path / "b.npz"), **arrays)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with zipfile.ZipFile(tmp_path / "a.npz") as archive:
        assert sorted(archive.namelist()) == ["maps.npy", "note.npy", "version.npy"]
    loaded = np.load(tmp_path / "a.npz")
    for name, value in arrays.items():
        assert loaded[name].dtype == np.asarray(value).dtype
        np.testing.assert_array_equal(loaded[name], value)


def test_a_url_stamp_prefers_the_stores_checksum_to_its_time(monkeypatch):
    """S3 gives an ETag, GCS an md5Hash: a copy keeps them, where it gets a new time."""

    class Store:
        def __init__(self, info):
            self.info = lambda inner: info

    for info, expected in (({"size": 3, "ETag": '"abc"', "LastModified": "t1"}, '3:"abc"'),
                           ({"size": 3, "md5Hash": "xyz", "updated": "t2"}, "3:xyz"),
                           ({"size": 3, "created": 5.0}, "3:5.0")):
        monkeypatch.setattr(storage, "filesystem", lambda path, info=info: (Store(info), path))
        assert storage.stamp("s3://bucket/x.npz") == expected


# ---------------------------------------------------------------------------- the stages on URLs
@pytest.mark.slow
def test_file_stages_on_memory_write_what_they_write_on_disk(synthetic_root, on_disk):
    """ROOT and WORK on ``memory://``, one job (memory:// lives in this process)."""
    root, work = "memory://stages/data", "memory://stages/work"
    storage.sync_up(str(synthetic_root), root)
    storage.upload(on_disk.hcp_model, WorkDir(work).hcp_model)
    file_stages(root, work)
    assert_same_files(on_disk.root, work)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3(monkeypatch):
    """A local S3 server (moto) on 127.0.0.1 with one bucket; s3fs finds it through the environment
    (worker processes inherit it)."""
    server_module = pytest.importorskip("moto.server")
    port = _free_port()
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}.items():
        monkeypatch.setenv(key, value)
    s3fs = pytest.importorskip("s3fs")
    s3fs.S3FileSystem.clear_instance_cache()   # none left pointing at another test's server
    s3fs.S3FileSystem().mkdir("wsk-test")
    try:
        yield "s3://wsk-test"
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()


@pytest.mark.slow
def test_per_image_stages_and_beam_on_s3_write_what_they_write_on_disk(synthetic_root, on_disk, s3):
    """ROOT and WORK on S3: the local per-image stages (proposals in two worker processes) and the
    Beam pipeline (DirectRunner) each write the files the stages write on disk."""
    pytest.importorskip("apache_beam")
    from wsk.pipeline import run_pipeline
    from wsk.pseudo.stage import pseudo_run

    root = f"{s3}/data"
    assert storage.sync_up(str(synthetic_root), root) == len(_files(synthetic_root))
    for name in ("stages", "beam"):
        storage.upload(on_disk.hcp_model, WorkDir(f"{s3}/{name}").hcp_model)
    file_stages(root, f"{s3}/stages", jobs=2)
    assert_same_files(on_disk.root, f"{s3}/stages")
    run_pipeline(pseudo_run(root, f"{s3}/beam", "train", config=CONFIG), beam_args=["--runner=DirectRunner"])
    assert_same_files(on_disk.root, f"{s3}/beam")


# ------------------------------------------------------------------------------- `wsk run` on URLs
RUN = ["--recipe", "tiny", "--variants", "SN_B", "--no-crf", "--jobs", "1"]
RUN_PROVENANCE = PROVENANCE + ("stamps", "inputs_digest", "times", "source", "model", "savedmodel", "path", "root")
NOT_READ = ("saved_model.pb", "fingerprint.pb", "variables.data-00000-of-00001", "variables.index")


def _run_files(root):
    """``_files`` with TensorBoard's event files (named by time, host and process) as their folder."""
    return {(name.rsplit("/", 1)[0] + "/<events>" if "/events.out.tfevents." in name else name): path
            for name, path in _files(root).items()}


def _without(value, keys):
    if isinstance(value, dict):
        return {k: _without(v, keys) for k, v in value.items() if k not in keys}
    return value


def assert_same_run(expected_root, root, kinds_wanted=("npz", "json", "png", "keras", "csv", "txt"),
                    until=None):
    """What ``wsk run`` wrote under both: the same file names, the same arrays, label maps, JSON
    (provenance: stamps, paths, digests of stamps and times excepted), trained weights and logs.
    ``until``: ``root`` holds a run stopped early; its files are compared with the same files of
    ``expected_root``, and must include every file that one has under ``until`` (a folder)."""
    expected, found = _run_files(expected_root), _run_files(root)
    if until is not None:
        assert set(found) <= set(expected)
        assert {n for n in expected if n.startswith(until + "/")} <= set(found)
        expected = {name: path for name, path in expected.items() if name in found}
        found.pop("run-summary.json"), expected.pop("run-summary.json")   # a summary of what ran
    assert sorted(found) == sorted(expected)
    kinds = set()
    for name, path in expected.items():
        other, base = found[name], name.rsplit("/", 1)[-1]
        if name in NOT_COMPARED or base == "<events>" or base in NOT_READ:
            continue   # run.json names the dataset; events hold wall times; a SavedModel its trace
        kind = name.rsplit(".", 1)[-1]
        kinds.add(kind)
        if kind == "npz":
            a, b = io.load_npz(path), io.load_npz(other)
            assert sorted(a) == sorted(b), name
            for key in set(a) - set(RUN_PROVENANCE):
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name} {key}")
        elif kind == "json":
            assert _without(io.load_json(path), RUN_PROVENANCE) == _without(io.load_json(other), RUN_PROVENANCE), name
        elif kind == "png":
            np.testing.assert_array_equal(io.read_label_png(path), io.read_label_png(other), err_msg=name)
        elif kind == "keras":
            from wsk.models.saving import load_model

            for a, b in zip(load_model(path).get_weights(), load_model(other).get_weights(), strict=True):
                np.testing.assert_array_equal(a, b, err_msg=name)
        else:   # history.csv, classes.txt
            assert storage.read_bytes(path) == storage.read_bytes(other), name
    assert kinds == set(kinds_wanted)


def wsk(*args):
    from click.testing import CliRunner

    from wsk.cli.main import cli

    result = CliRunner().invoke(cli, [str(arg) for arg in args])
    assert result.exit_code == 0, result.output
    return result.output


def wsk_run(data, work, *more):
    return wsk("run", data, work, *RUN, *more)


@pytest.fixture(scope="module")
def run_on_disk(synthetic_root, tmp_path_factory):
    """``wsk run`` on local paths: what every URL's run is compared with."""
    work = tmp_path_factory.mktemp("run-on-disk")
    wsk_run(str(synthetic_root), str(work))
    return work


@pytest.mark.slow
def test_wsk_run_on_file_urls_writes_what_it_writes_on_plain_paths(synthetic_root, run_on_disk, tmp_path):
    """``file://`` is the local path (the whole run on a URL is the ``memory://`` test's): the stages
    up to the rough masks, HCP training included."""
    output = wsk_run(f"file://{synthetic_root}", f"file://{tmp_path}/work", "--until", "rough masks")
    assert_same_run(run_on_disk, tmp_path / "work", until="masks",
                    kinds_wanted=("npz", "json", "png", "keras", "csv"))
    assert f"{tmp_path}/work/run-summary.json" in output   # the URL, printed as its local path


@pytest.fixture(scope="module")
def run_on_memory(synthetic_root):
    """``wsk run`` with DATA and WORK on ``memory://``: ``(DATA, WORK, printout)``."""
    root, work = "memory://run/data", "memory://run/work"
    storage.sync_up(str(synthetic_root), root)
    return root, work, wsk_run(root, work)


@pytest.mark.slow
def test_wsk_run_on_memory_writes_what_it_writes_on_disk(run_on_disk, run_on_memory):
    """DATA and WORK on ``memory://``: every stage, HCP and segmentation training (their backups and
    logs made locally and uploaded), evaluation and the SavedModel export."""
    _, work, output = run_on_memory
    assert_same_run(run_on_disk, work)
    assert "exported SN_B" in output and f"{work}/export/SN_B" in output
    assert not storage.exists(f"{work}/seg/SN_B/checkpoints")   # the backup goes when training ends
    assert storage.exists(f"{work}/export/SN_B/saved_model.pb")


@pytest.mark.slow
def test_predict_eval_viz_and_check_on_urls_give_what_they_give_on_disk(synthetic_root, run_on_disk,
                                                                       run_on_memory, tmp_path):
    """``wsk predict`` (model, images and output on ``memory://``), ``wsk eval --pred`` (JSON to a
    URL) and ``wsk viz`` on the URL run, and ``wsk data check`` on the URL dataset: the label maps,
    the confusion matrix ``wsk run`` measured on disk, the figures and the report of local paths."""
    root, work, _ = run_on_memory
    val = VOCDataset(synthetic_root, "val").ids
    wsk("predict", f"{work}/seg/SN_B/model.keras", *[f"{root}/JPEGImages/{i}.jpg" for i in val],
        "--out", "memory://run/pred", "--jobs", "1")
    wsk("predict", run_on_disk / "seg" / "SN_B" / "model.keras", *[synthetic_root / "JPEGImages" / f"{i}.jpg" for i in val],
        "--out", tmp_path / "pred", "--jobs", "1")
    for image_id in val:
        np.testing.assert_array_equal(io.read_label_png(f"memory://run/pred/{image_id}.png"),
                                      io.read_label_png(tmp_path / "pred" / f"{image_id}.png"))
    wsk("eval", root, "--split", "val", "--pred", "memory://run/pred", "--json", "memory://run/eval.json")
    measured = io.load_json("memory://run/eval.json")["results"][0]["confusion_matrix"]
    assert measured == io.load_json(run_on_disk / "eval" / "SN_B.json")["matrix"]   # wsk run, on disk

    figures = wsk("viz", root, work, "--limit", "2").split()
    local = wsk("viz", synthetic_root, run_on_disk, "--limit", "2", "--out", tmp_path / "viz").split()
    assert [f.rsplit("/", 1)[-1] for f in figures] == [f.rsplit("/", 1)[-1] for f in local] and len(local) == 2
    assert all(f.startswith(f"{work}/viz/") for f in figures)
    for url, path in zip(figures, local):
        np.testing.assert_array_equal(io.read_image(url), io.read_image(path))
    assert wsk("data", "check", root).replace(root, "ROOT") == wsk("data", "check", synthetic_root).replace(
        str(synthetic_root), "ROOT")


# --------------------------------------------------------------------------- training on a URL WORK
def test_fit_on_a_url_uploads_each_backup_and_resumes_from_it(tmp_path, monkeypatch):
    """``wsk.training.engine.fit`` with its checkpoints and logs on ``memory://``: interrupted at the
    start of epoch 3, the URL holds the backup of epoch 2 and two rows of history; a rerun downloads
    the backup, runs epochs 3 and 4 only and ends with the weights of plain gradient descent worked
    out by hand; the backup is then gone from the URL and no local copy is left behind."""
    tf = pytest.importorskip("tensorflow")
    from wsk.training.engine import epoch_variable, fit

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))   # the local copies go here
    x, y = np.ones((4, 2), np.float32), np.zeros((4, 1), np.float32)
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    start = [np.array([[0.5], [-0.25]], np.float32), np.array([0.25], np.float32)]
    lr, work = 0.1, "memory://fit/seg"

    def model():
        net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        net.set_weights(start)
        net.compile(optimizer=keras.optimizers.SGD(lr), loss="mse")
        return net

    class Seen(keras.callbacks.Callback):
        def __init__(self, stop_at=None):
            super().__init__()
            self.epochs, self.stop_at = [], stop_at

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == self.stop_at:
                raise KeyboardInterrupt   # a kill once epochs 1 and 2 are backed up
            self.epochs.append(epoch)

    def run(callback):
        return fit(model(), data, 4, 1, f"{work}/checkpoints", f"{work}/logs", epoch_variable(), [callback], 0)

    with pytest.raises(KeyboardInterrupt):
        run(Seen(stop_at=2))
    assert io.load_json(f"{work}/checkpoints/training_metadata.json")["epoch"] == 2
    assert storage.exists(f"{work}/checkpoints/latest.weights.h5")
    rows = storage.read_bytes(f"{work}/logs/history.csv").decode().splitlines()
    assert [row.split(",")[0] for row in rows] == ["epoch", "0", "1"]
    assert os.listdir(tmp_path) == []

    seen = Seen()
    history = run(seen)
    assert seen.epochs == [2, 3] and len(history.history["loss"]) == 2
    # by hand: every output is p = k1 + k2 + b (x is ones, y zeros); the mean squared error's gradient
    # is 2p for k1, k2 and b alike, so each step subtracts lr * 2p from each of them
    k1, k2, b = 0.5, -0.25, 0.25
    for _ in range(4):
        p = k1 + k2 + b
        k1, k2, b = k1 - lr * 2 * p, k2 - lr * 2 * p, b - lr * 2 * p
    net = history.model
    np.testing.assert_allclose(net.get_weights()[0].ravel(), [k1, k2], rtol=1e-6)
    np.testing.assert_allclose(net.get_weights()[1], [b], rtol=1e-6)
    rows = storage.read_bytes(f"{work}/logs/history.csv").decode().splitlines()
    assert [row.split(",")[0] for row in rows] == ["epoch", "0", "1", "2", "3"]
    assert not storage.exists(f"{work}/checkpoints/latest.weights.h5")
    assert not storage.exists(f"{work}/checkpoints/training_metadata.json")
    assert os.listdir(tmp_path) == []
