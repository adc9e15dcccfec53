"""``wsk pipeline`` on Beam's DirectRunner writes what the local commands write, file for file."""

import dataclasses
import inspect
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

beam = pytest.importorskip("apache_beam")
keras = pytest.importorskip("keras")

from wsk.io import read_label_png  # noqa: E402
from wsk.models import hcp  # noqa: E402
from wsk.models.saving import save_model  # noqa: E402
from wsk.pipeline import run_pipeline  # noqa: E402
from wsk.proposals.stage import run_proposals  # noqa: E402
from wsk.pseudo.stage import pseudo_run, run_pseudo  # noqa: E402
from wsk.data.voc import VOCDataset  # noqa: E402
from wsk.recipes import PseudoConfig  # noqa: E402
from wsk.workdir import WorkDir  # noqa: E402

# every proposal a candidate (a random HCP scores near 1/C), then thresholds calibrated per class: the
# calibration and the refinement both have work to do; the contrast order sums the false alarms too
CONFIG = dataclasses.replace(PseudoConfig(), candidate_threshold=0.0, candidate_quantile=0.5, max_proposals=40,
                             score_mode="roi", refine_order="contrast", refine_negatives=3)
BEAM_ARGS = ["--runner=DirectRunner"]


def random_hcp(path, num_classes):
    keras.utils.set_random_seed(0)
    save_model(hcp(num_classes=num_classes, image_size=32, width=0.0625), path)


def local_and_beam(root, split, tmp_path):
    """Two work directories with the same HCP: one made by the local stages, one by Beam."""
    num_classes = VOCDataset(root, split).num_classes
    local, on_beam = WorkDir(tmp_path / "local"), WorkDir(tmp_path / "beam")
    random_hcp(local.hcp_model, num_classes - 1)
    os.makedirs(on_beam.hcp_dir, exist_ok=True)
    shutil.copy2(local.hcp_model, on_beam.hcp_model)
    run_proposals(root, local.root, split, max_proposals=CONFIG.max_proposals).raise_if_failed()
    run_pseudo(root, local.root, split, config=CONFIG, jobs=1)
    run_pipeline(_run(root, on_beam.root, split), beam_args=BEAM_ARGS)
    return local, on_beam


def _run(root, work, split, refine=True):
    return pseudo_run(root, work, split, refine=refine, config=CONFIG)


def assert_same_outputs(root, split, local, on_beam):
    ids = VOCDataset(root, split).ids
    for image_id in ids:
        a, b = np.load(local.proposals(image_id)), np.load(on_beam.proposals(image_id))
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:   # boxes, superpixels, regions and the record of what made them
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{image_id} proposals {key}")
        a, b = np.load(local.scores(image_id)), np.load(on_beam.scores(image_id))
        for key in ("candidates", "candidate_labels", "mode", "threshold", "negatives", "negative_labels"):
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{image_id} scores {key}")
        np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-6)
        np.testing.assert_allclose(a["features"].astype(np.float32), b["features"].astype(np.float32), atol=1e-3)
        a, b = np.load(local.locmap(image_id)), np.load(on_beam.locmap(image_id))
        np.testing.assert_array_equal(a["labels"], b["labels"])
        np.testing.assert_allclose(a["maps"].astype(np.float32), b["maps"].astype(np.float32), atol=1e-6)
        np.testing.assert_array_equal(read_label_png(local.mask(image_id)), read_label_png(on_beam.mask(image_id)))
    kept = 0
    for image_id in ids:
        a, b = json.load(open(local.refined(image_id))), json.load(open(on_beam.refined(image_id)))
        assert (a["kept"], a["fallback"]) == (b["kept"], b["fallback"])
        kept += sum(len(v) for v in a["kept"].values())
    assert kept > len(ids)   # refined sets
    a, b = np.load(local.refinement), np.load(on_beam.refinement)
    for key in ("settings", "pca_dims", "labels", "images", "thresholds", "negative_labels", "negative_images"):
        np.testing.assert_array_equal(a[key], b[key])
    np.testing.assert_allclose(a["components"], b["components"], atol=1e-6)
    np.testing.assert_allclose(a["negative_means"], b["negative_means"], atol=1e-6)


def test_pipeline_equals_local_stages_on_synthetic_images(synthetic_root, tmp_path):
    local, on_beam = local_and_beam(synthetic_root, "train", tmp_path)
    assert_same_outputs(synthetic_root, "train", local, on_beam)
    ids = VOCDataset(synthetic_root, "train").ids
    assert int(np.load(on_beam.refinement)["pca_dims"]) >= 1
    assert (np.load(on_beam.refinement)["thresholds"] > 0).all()   # calibrated above the fixed 0
    # resumable: a second run on the same work directory rewrites no per-image file
    outputs = [on_beam.proposals, on_beam.scores, on_beam.refined, on_beam.locmap, on_beam.mask]
    before = {path(i): os.stat(path(i)).st_mtime_ns for path in outputs for i in ids}
    run_pipeline(_run(synthetic_root, on_beam.root, "train"), beam_args=BEAM_ARGS)
    assert {p: os.stat(p).st_mtime_ns for p in before} == before
    # without refinement (Table 3's ablation, WORK/noref): every candidate kept, same files
    run_pseudo(synthetic_root, local.root, "train", refine=False, config=CONFIG, jobs=1)
    run_pipeline(_run(synthetic_root, on_beam.root, "train", refine=False), stages="pseudo", beam_args=BEAM_ARGS)
    local_noref, beam_noref = WorkDir(local.root, refine=False), WorkDir(on_beam.root, refine=False)
    a, b = np.load(local_noref.refinement), np.load(beam_noref.refinement)   # the thresholds alone
    np.testing.assert_array_equal(a["thresholds"], b["thresholds"])
    assert a["components"].size == 0 and b["components"].size == 0
    for image_id in ids:
        assert json.load(open(local_noref.refined(image_id)))["kept"] == json.load(
            open(beam_noref.refined(image_id)))["kept"]
        np.testing.assert_array_equal(read_label_png(local_noref.mask(image_id)),
                                      read_label_png(beam_noref.mask(image_id)))


def test_pipeline_equals_local_stages_on_real_voc_photos(voc_sample, tmp_path):
    # four of the photos, read in place: a split list beside links to the sample's folders
    root = tmp_path / "voc"
    os.makedirs(root / "ImageSets" / "Segmentation")
    for folder in ("JPEGImages", "SegmentationClass"):
        os.symlink(voc_sample / folder, root / folder)
    ids = sorted(p[:-4] for p in os.listdir(voc_sample / "JPEGImages"))[:4]
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids) + "\n")
    local, on_beam = local_and_beam(root, "val", tmp_path)
    assert_same_outputs(root, "val", local, on_beam)


def test_pipeline_stages_split_around_hcp_training(synthetic_root, tmp_path):
    work = WorkDir(tmp_path / "w")
    run_pipeline(_run(synthetic_root, work.root, "train"), stages="proposals", beam_args=BEAM_ARGS)
    ids = VOCDataset(synthetic_root, "train").ids
    assert all(os.path.exists(work.proposals(i)) for i in ids)
    assert not os.path.exists(work.refined_dir)    # nothing past proposals without an HCP model


def test_beam_loads_the_scoring_model_once_per_worker_in_setup_and_clears_temporaries(synthetic_root, tmp_path,
                                                                                      monkeypatch):
    """DirectRunner runs one worker in this process: the HCP is loaded once in ``setup`` for all the
    images it scores, and the temporary files a killed run left in the stages' folders are removed."""
    import wsk.stage_list as stage_list

    work = WorkDir(tmp_path / "w")
    random_hcp(work.hcp_model, VOCDataset(synthetic_root, "train").num_classes - 1)
    run = _run(synthetic_root, work.root, "train")
    run_pipeline(run, stages="proposals", beam_args=BEAM_ARGS)
    left = [os.path.join(work.scores_dir, ".syn_00000.npz.abcd1234.tmp.npz"),
            os.path.join(work.locmaps_dir, ".syn_00001.npz.efgh5678.tmp.npz")]
    for path in left:        # what a SIGKILL during atomic writes leaves behind
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "wb").close()
    loads, scored = [], []
    original = stage_list.get_stage("scoring")

    def setup(the_run):   # called from a DoFn's setup, never from its process
        frames = [(f.function, f.frame.f_locals.get("self")) for f in inspect.stack()]
        loads.append(any(name == "setup" and isinstance(obj, beam.DoFn) for name, obj in frames)
                     and not any(name == "process" and isinstance(obj, beam.DoFn) for name, obj in frames))
        return original.setup(the_run)

    def per_image(the_run, resource, image_id):
        scored.append(resource)
        original.per_image(the_run, resource, image_id)

    patched = tuple(dataclasses.replace(s, setup=setup, per_image=per_image) if s.name == "scoring" else s
                    for s in stage_list.STAGES)
    monkeypatch.setattr(stage_list, "STAGES", patched)
    run_pipeline(run, stages="pseudo", beam_args=BEAM_ARGS)
    ids = VOCDataset(synthetic_root, "train").ids
    assert len(scored) == len(ids) and loads == [True] and all(r is scored[0] for r in scored)
    assert not any(os.path.exists(p) for p in left)


# Run in a fresh process by the test below: the Beam pipeline's pseudo stages on WORK, killed by
# SIGKILL inside the atomic write of its third localization map (after the temporary is written,
# before it is renamed), as a preempted worker would be.
KILLED_RUN = """
import os, pickle, signal, sys
import numpy as np
import wsk.io, wsk.pseudo.targets
from wsk.pipeline import run_pipeline

written = []

def save_npz(path, **arrays):
    written.append(path)
    if len(written) == 3:
        with wsk.io.atomic_path(path) as tmp:
            np.savez_compressed(tmp, **arrays)
            os.kill(os.getpid(), signal.SIGKILL)
    wsk.io.save_npz(path, **arrays)

wsk.pseudo.targets.save_npz = save_npz
with open(sys.argv[1], "rb") as f:
    run = pickle.load(f)
run_pipeline(run, stages="pseudo", beam_args=["--runner=DirectRunner"])
"""


def _temporaries(work):
    return [name for _, _, names in os.walk(work) for name in names if name.startswith(".") and ".tmp" in name]


@pytest.mark.slow
def test_a_beam_run_killed_mid_write_leaves_a_temporary_that_the_rerun_removes(synthetic_root, tmp_path):
    """A Beam run killed inside a stage (two maps written, the third's temporary on disk) is
    resumed by the next run: no temporary left, and every file equal to an uninterrupted run's."""
    local, killed = WorkDir(tmp_path / "local"), WorkDir(tmp_path / "killed")
    random_hcp(local.hcp_model, VOCDataset(synthetic_root, "train").num_classes - 1)
    run_proposals(synthetic_root, local.root, "train", max_proposals=CONFIG.max_proposals).raise_if_failed()
    run_pseudo(synthetic_root, local.root, "train", config=CONFIG, jobs=1)
    for folder in ("proposals", "hcp"):   # copy2: the same stamps, so the killed run starts at scoring
        shutil.copytree(os.path.join(local.root, folder), os.path.join(killed.root, folder))
    with open(tmp_path / "run.pickle", "wb") as f:
        pickle.dump(_run(synthetic_root, killed.root, "train"), f)
    done = subprocess.run([sys.executable, "-c", KILLED_RUN, str(tmp_path / "run.pickle")],
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    ids = VOCDataset(synthetic_root, "train").ids
    maps = [n for n in os.listdir(killed.locmaps_dir) if not n.startswith(".")]
    assert len(maps) == 2 and len(_temporaries(killed.root)) == 1     # killed mid-work, mid-write
    masks = os.listdir(killed.masks_dir) if os.path.exists(killed.masks_dir) else []
    assert {m[:-4] for m in masks} <= {m[:-4] for m in maps}   # Beam fuses the two: each map's mask, at most
    assert all(os.path.exists(killed.scores(i)) for i in ids) and os.path.exists(killed.refinement)
    assert len(os.listdir(killed.refined_dir)) >= 3   # the third map's record was written before it
    run_pipeline(_run(synthetic_root, killed.root, "train"), stages="pseudo", beam_args=BEAM_ARGS)
    assert _temporaries(killed.root) == []
    assert_same_outputs(synthetic_root, "train", local, killed)


def test_the_pipeline_graph_holds_no_image_ids(tmp_path):
    """The ids are read by the workers, not embedded in the pipeline: its graph (what a launcher holds
    and sends to Dataflow) is the same size for a split of 70,000 images and of 140,000 (both read
    in the most shards, 64)."""
    from wsk.pipeline import MAX_SHARDS, build_pipeline, id_shards

    assert id_shards(70000) == id_shards(140000) == MAX_SHARDS == 64
    sizes = []
    for n in (70000, 140000):
        root = tmp_path / f"voc{n}"
        os.makedirs(root / "ImageSets" / "Segmentation")
        (root / "ImageSets" / "Segmentation" / "train.txt").write_text("".join(f"{i:07d}\n" for i in range(n)))
        pipeline = beam.Pipeline(options=beam.options.pipeline_options.PipelineOptions(BEAM_ARGS))
        build_pipeline(pipeline, _run(root, tmp_path / f"w{n}", "train"), "all")
        sizes.append(len(pipeline.to_runner_api().SerializeToString()))
    # beam.Create of 20,000 ids added 59 KB (measured); the two paths differ by a few characters
    assert abs(sizes[1] - sizes[0]) < 200, sizes


def test_id_shards_cover_the_split_once(tmp_path):
    """About 1,000 ids a shard, at most 64 shards; the shards' ids are the split's, each once."""
    from wsk.pipeline import _shard_ids, id_shards

    assert [id_shards(n) for n in (1, 1000, 1001, 2500, 64000, 64001, 10**6)] == [1, 1, 2, 3, 64, 64, 64]
    root = tmp_path / "voc"
    os.makedirs(root / "ImageSets" / "Segmentation")
    ids = [f"{i:05d}" for i in range(2500)]
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("".join(f"{i}\n" for i in ids))
    run = _run(root, tmp_path / "w", "train")
    shards = [list(_shard_ids(k, run, 3)) for k in range(3)]
    assert [len(s) for s in shards] == [834, 833, 833]
    assert sorted(sum(shards, [])) == ids
