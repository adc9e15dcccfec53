"""The `wsk pseudo` command on the synthetic dataset: outputs, formats, and resuming."""

import json
import math
import os

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from wsk.io import save_npz
from wsk.workdir import WorkDir

HCP_SIZE = 32
CELL = 16


def grid_proposals(height, width):
    """Every rectangle of whole 16 x 16 cells: hand-made proposals over a cell superpixel map."""
    from wsk.proposals.container import Proposals

    rows, cols = -(-height // CELL), -(-width // CELL)
    superpixels = (np.arange(height)[:, None] // CELL) * cols + np.arange(width)[None, :] // CELL
    regions = []
    for r0 in range(rows):
        for r1 in range(r0 + 1, rows + 1):
            for c0 in range(cols):
                for c1 in range(c0 + 1, cols + 1):
                    regions.append([r * cols + c for r in range(r0, r1) for c in range(c0, c1)])
    return Proposals.from_regions(superpixels, regions)


@pytest.fixture(scope="module")
def work(synthetic_root, tmp_path_factory):
    """A work dir with grid proposals for every image and a tiny random-init HCP whose fc8 is
    scaled up so that its softmax is peaked (some proposals pass 0.5, some labels do not)."""
    import keras

    from wsk.data.voc import VOCDataset
    from wsk.models import hcp

    work = tmp_path_factory.mktemp("work")
    dataset = VOCDataset(synthetic_root, "train")
    for image_id in dataset.ids:
        height, width = dataset.image(image_id).shape[:2]
        grid_proposals(height, width).save(WorkDir(work).proposals(image_id))
    keras.utils.set_random_seed(0)
    model = hcp(num_classes=dataset.num_classes - 1, image_size=HCP_SIZE, width=0.0625)
    fc8 = model.get_layer("fc8")
    kernel, bias = fc8.get_weights()
    fc8.set_weights([kernel * 3000.0, bias])
    os.makedirs(WorkDir(work).hcp_dir, exist_ok=True)
    model.save(WorkDir(work).hcp_model)
    return work


def run_cli(*args):
    from wsk.cli.main import cli

    result = CliRunner().invoke(cli, ["pseudo", *map(str, args)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def mtimes(folder):
    return {name: os.stat(os.path.join(folder, name)).st_mtime_ns for name in os.listdir(folder)}


def naive_thresholds(wd, dataset, quantile, floor):
    """Each class's calibrated threshold worked out directly from the scores files: the
    ceil(q n)-th smallest of its highest score on each image without it, raised to the upper edge
    of its 1/10,000 bin (the last bin holds 1.0 too), and at least the fixed threshold ``floor``."""
    thresholds = []
    for k in range(1, dataset.num_classes):
        maxima = sorted(float(np.load(wd.scores(i))["scores"][:, k - 1].max()) for i in dataset.ids
                        if k not in dataset.labels(i))
        x = maxima[math.ceil(quantile * len(maxima)) - 1] if maxima else 0.0
        thresholds.append(max(floor, min(math.floor(x * 10000) + 1, 10000) / 10000))
    return np.array(thresholds)


def check_records(wd, dataset, thresholds, floor):
    """The refinement records of ``wd`` against the calibrated ``thresholds`` worked out by hand:
    each label keeps the top half of its candidates above its class's threshold (all of them when no
    other image has such candidates, Eq. 1; every one without refinement), or falls back to its
    best-scoring proposal. Returns (candidates above the thresholds, refined away, calibrated away)."""
    np.testing.assert_allclose(np.load(wd.refinement)["thresholds"], thresholds, atol=1e-12)

    def calibrated(scores, label):
        own = scores["candidates"][scores["candidate_labels"] == label]
        assert (scores["scores"][own, label - 1] > floor).all()   # the scores file: above the fixed threshold
        return own, own[scores["scores"][own, label - 1] > thresholds[label - 1]]

    seen = refined_away = calibrated_away = 0
    for image_id in dataset.ids:
        record = json.loads(open(wd.refined(image_id)).read())
        entry = {int(k): v for k, v in record["kept"].items()}
        scores = np.load(wd.scores(image_id))
        assert sorted(entry) == sorted(dataset.labels(image_id))
        for label in dataset.labels(image_id):
            above, own = calibrated(scores, label)
            seen += len(own)
            calibrated_away += len(above) - len(own)
            if len(own) == 0:       # fallback: the best-scoring proposal for the label
                assert label in record["fallback"]
                assert entry[label] == [int(np.argmax(scores["scores"][:, label - 1]))]
            elif not wd.refine:     # every calibrated candidate, in score order
                assert entry[label] == own.tolist()
            else:
                assert set(entry[label]) <= set(own.tolist())
                images_with_label = sum(1 for i in dataset.ids if len(calibrated(np.load(wd.scores(i)), label)[1]))
                expected = len(own) if images_with_label == 1 else -(-len(own) // 2)
                assert len(entry[label]) == expected
                refined_away += len(own) - len(entry[label])
    return seen, refined_away, calibrated_away


def test_pseudo_outputs_and_resume(synthetic_root, work):
    from wsk.data.voc import VOCDataset

    dataset = VOCDataset(synthetic_root, "train")
    ids = dataset.ids
    out = run_cli(synthetic_root, work, "--mode", "roi", "--recipe", "demo", "--jobs", "1")
    assert f"scoring: {len(ids)} computed" in out
    wd = WorkDir(work)

    check_records(wd, dataset, naive_thresholds(wd, dataset, 0.75, 0.9), 0.9)
    records = {i: json.loads(open(wd.refined(i)).read()) for i in ids}
    refined = {"images": {i: r["kept"] for i, r in records.items()}}
    for image_id in ids:
        labels = dataset.labels(image_id)
        scores = np.load(wd.scores(image_id))
        assert scores["scores"].shape == (len(grid_proposals(64, 64)), dataset.num_classes - 1)
        assert scores["features"].shape[0] == len(scores["candidates"])
        assert scores["features"].dtype == np.float16   # stored compactly (wsk.pseudo.score_stage)
        locmap = np.load(wd.locmap(image_id))
        maps = locmap["maps"].astype(np.float32)
        assert locmap["maps"].dtype == np.float16
        assert maps.shape == (dataset.num_classes, 64, 64)
        absent = [k for k in range(1, dataset.num_classes) if k not in labels]
        assert not maps[absent].any()
        np.testing.assert_allclose(maps[0], np.maximum(0, 1 - maps[1:].sum(axis=0)), atol=2e-3)
        with Image.open(wd.mask(image_id)) as png:
            assert png.mode == "P" and png.size == (64, 64)
            assert set(np.unique(np.array(png))) <= {0, *labels}

    # delete part of every output folder, then resume
    victims = ids[:3]
    deleted = {path: open(path, "rb").read() for path in (wd.scores(victims[0]), wd.locmap(victims[1]))}
    os.remove(wd.scores(victims[0]))
    os.remove(wd.locmap(victims[1]))
    os.remove(wd.mask(victims[2]))
    before_maps = mtimes(os.path.dirname(wd.locmap(ids[0])))
    before_masks = mtimes(wd.masks_dir)
    out = run_cli(synthetic_root, work, "--mode", "roi", "--recipe", "demo", "--jobs", "1")
    assert f"scoring: 1 computed, {len(ids) - 1} already done" in out
    assert f"localization maps: 1 computed, {len(ids) - 1} already done" in out
    # the recomputed scores and map are the deleted files byte for byte, so the masks made from them
    # stay valid: only the deleted mask is made again
    assert all(open(path, "rb").read() == content for path, content in deleted.items())
    assert f"rough masks: 1 computed, {len(ids) - 1} already done" in out
    after_maps = mtimes(os.path.dirname(wd.locmap(ids[0])))
    after_masks = mtimes(wd.masks_dir)
    assert set(after_maps) == set(before_maps) | {f"{victims[1]}.npz"}
    assert all(after_maps[k] == v for k, v in before_maps.items())
    assert set(after_masks) == set(before_masks) | {f"{victims[2]}.png"}
    assert all(after_masks[k] == v for k, v in before_masks.items())

    # scores with other values (Eq. 5 reads them): the mask made from them is made again
    original = open(wd.scores(victims[0]), "rb").read()
    scores = dict(np.load(wd.scores(victims[0])))
    scores["scores"] = scores["scores"] * np.float32(0.5)
    save_npz(wd.scores(victims[0]), **scores)
    out = run_cli(synthetic_root, work, "--mode", "roi", "--recipe", "demo", "--jobs", "1")
    assert "scoring: 0 computed" in out and "rough masks: 1 computed" in out
    assert mtimes(wd.masks_dir)[f"{victims[0]}.png"] != after_masks[f"{victims[0]}.png"]
    with open(wd.scores(victims[0]), "wb") as f:   # the scores back as they were (other tests share WORK)
        f.write(original)
    assert "rough masks: 1 computed" in run_cli(synthetic_root, work, "--mode", "roi", "--recipe", "demo", "--jobs", "1")

    # a third run does nothing
    out = run_cli(synthetic_root, work, "--mode", "roi", "--recipe", "demo", "--jobs", "1")
    assert "localization maps: 0 computed" in out and "rough masks: 0 computed" in out

    # an image's refinement record rewritten after its map was made (here: its kept set differs
    # from what its map was made from): the rerun redoes that image's map and mask, and nothing else
    victim = ids[0]
    label = next(iter(refined["images"][victim]))
    record = json.loads(open(wd.refined(victim)).read())
    record["kept"][label] = [record["kept"][label][0] + 1]   # another proposal
    with open(wd.refined(victim), "w") as f:
        json.dump(record, f)
    out = run_cli(synthetic_root, work, "--mode", "roi", "--recipe", "demo", "--jobs", "1")
    assert "localization maps: 1 computed" in out and "rough masks: 1 computed" in out
    # a record from other settings (or damaged) is redone, and so are the map and mask made from it
    record["made_from"]["settings"]["keep"] = 0.25
    with open(wd.refined(victim), "w") as f:
        json.dump(record, f)
    out = run_cli(synthetic_root, work, "--mode", "roi", "--recipe", "demo", "--jobs", "1")
    assert f"refinement: 1 computed, {len(ids) - 1} already done" in out
    assert "localization maps: 1 computed" in out and "rough masks: 1 computed" in out


def test_no_refine_shares_scores_and_keeps_all_candidates(synthetic_root, work):
    from wsk.data.voc import VOCDataset

    run_cli(synthetic_root, work, "--mode", "roi", "--recipe", "demo", "--jobs", "1")
    out = run_cli(synthetic_root, work, "--mode", "roi", "--recipe", "demo", "--jobs", "1",
                  "--no-refine")
    ids = VOCDataset(synthetic_root, "train").ids
    assert f"scoring: 0 computed, {len(ids)} already done" in out
    noref = WorkDir(work, refine=False)
    assert noref.refined_dir != WorkDir(work).refined_dir
    # the demo calibrates its thresholds: the statistics file holds them alone, under noref/
    assert noref.refinement != WorkDir(work).refinement
    assert np.load(noref.refinement)["components"].size == 0
    dataset = VOCDataset(synthetic_root, "train")
    check_records(noref, dataset, naive_thresholds(noref, dataset, 0.75, 0.9), 0.9)
    for image_id in ids:
        assert os.path.exists(noref.mask(image_id)) and os.path.exists(noref.locmap(image_id))


def fabricate_scores(wd, dataset, threshold, seed=0):
    """Scores files as a trained HCP writes them (a random network has no classes to find): each
    label's class peaks on a few of the image's proposals, and one proposal of every image is a
    false alarm of each class. Stamped with the work directory's model and proposals, so
    the scoring stage takes them as done."""
    from wsk.io import save_npz
    from wsk.pseudo.candidates import select_candidates
    from wsk.pseudo.files import SCORES_VERSION
    from wsk.pseudo.score_stage import score_inputs

    rng = np.random.default_rng(seed)
    classes, count = dataset.num_classes - 1, len(grid_proposals(64, 64))
    for image_id in dataset.ids:
        logits = rng.normal(size=(count, classes))
        for label in dataset.labels(image_id):
            logits[rng.choice(count, 6, replace=False), label - 1] += rng.uniform(4.0, 9.0, 6)
        logits[rng.choice(count, classes, replace=False), np.arange(classes)] += rng.uniform(2.0, 9.0, classes)
        scores = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        candidates, candidate_labels = select_candidates(scores, dataset.labels(image_id), threshold)
        save_npz(wd.scores(image_id), version=np.int32(SCORES_VERSION), scores=scores.astype(np.float32),
                 candidates=candidates, candidate_labels=candidate_labels,
                 features=rng.normal(size=(len(candidates), 8)).astype(np.float16), mode=np.array("roi"),
                 threshold=np.float32(threshold), inputs=np.array(score_inputs(wd, image_id)))


def test_calibrated_thresholds_drop_candidates_then_refinement_ranks_the_rest(synthetic_root, work, tmp_path, capsys):
    import dataclasses
    import shutil

    from wsk.data.voc import VOCDataset
    from wsk.pseudo.stage import run_pseudo
    from wsk.recipes import PseudoConfig

    copy = tmp_path / "w"
    shutil.copytree(work, copy)
    dataset = VOCDataset(synthetic_root, "train")
    fabricate_scores(WorkDir(copy), dataset, 0.9)
    config = dataclasses.replace(PseudoConfig(), score_mode="roi", candidate_threshold=0.9, candidate_quantile=0.5)
    for refine in (True, False):
        reports = run_pseudo(synthetic_root, copy, split="train", config=config, refine=refine)
        assert not reports["scoring"].done     # the fabricated scores are taken as they are
        wd = WorkDir(copy, refine=refine)
        thresholds = naive_thresholds(wd, dataset, 0.5, 0.9)
        assert (thresholds > 0.9).any() and (thresholds < 1.0).all()
        seen, refined_away, calibrated_away = check_records(wd, dataset, thresholds, 0.9)
        assert seen > 0 and calibrated_away > 0     # the thresholds keep some candidates and drop others
        assert refined_away > 0 if refine else refined_away == 0
    # another quantile: new statistics, and every record redone
    reports = run_pseudo(synthetic_root, copy, split="train", config=dataclasses.replace(config, candidate_quantile=0.6))
    assert sorted(reports["refinement"].done) == sorted(dataset.ids)
    # a statistics file of an older version (wsk 0.2's, without thresholds) is stale, not damaged
    from wsk.io import save_npz

    save_npz(WorkDir(copy).refinement, version=np.int32(1), settings=np.array(""), scores_digest=np.array(""))
    capsys.readouterr()
    reports = run_pseudo(synthetic_root, copy, split="train", config=dataclasses.replace(config, candidate_quantile=0.6))
    assert reports["refinement statistics"].done and "damaged" not in "".join(capsys.readouterr())


def test_missing_model_is_reported_with_its_path(synthetic_root, tmp_path):
    from wsk.cli.main import cli

    result = CliRunner().invoke(cli, ["pseudo", str(synthetic_root), str(tmp_path / "empty")])
    assert result.exit_code != 0
    assert "Error:" in result.output and "hcp.keras" in result.output


def test_viz_writes_one_figure_per_id(synthetic_root, work):
    from wsk.cli.main import cli
    from wsk.data.voc import VOCDataset

    run_cli(synthetic_root, work, "--mode", "roi", "--recipe", "demo", "--jobs", "1")
    ids = VOCDataset(synthetic_root, "train").ids[:2]
    out = work / "figs"
    result = CliRunner().invoke(cli, ["viz", str(synthetic_root), str(work), "--ids", ",".join(ids),
                                      "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for image_id in ids:
        with Image.open(out / f"{image_id}.png") as png:
            assert png.mode == "RGB" and png.size[1] > 64
    result = CliRunner().invoke(cli, ["viz", str(synthetic_root), str(work), "--ids", "nope"])
    assert result.exit_code != 0 and "nope" in result.output


def test_model_of_another_dataset_is_refused(synthetic_root, tmp_path):
    from wsk.cli.main import cli
    from wsk.data.voc import VOCDataset
    from wsk.models import hcp

    dataset = VOCDataset(synthetic_root, "train")
    for image_id in dataset.ids:
        grid_proposals(64, 64).save(WorkDir(tmp_path).proposals(image_id))
    os.makedirs(WorkDir(tmp_path).hcp_dir)
    hcp(num_classes=dataset.num_classes + 1, image_size=HCP_SIZE, width=0.0625).save(
        WorkDir(tmp_path).hcp_model)
    result = CliRunner().invoke(cli, ["pseudo", str(synthetic_root), str(tmp_path)])
    assert result.exit_code != 0
    assert "classes" in result.output and "hcp.keras" in result.output


def test_retrained_model_or_new_proposals_make_scores_stale(synthetic_root, work, tmp_path):
    """Scores made by an older HCP model (or from older proposals) are recomputed, not reused."""
    import shutil

    from wsk.data.voc import VOCDataset

    copy = tmp_path / "w"
    shutil.copytree(work, copy)
    if os.path.exists(copy / "run.json"):   # another test's run (on split paper_train): this one is on train
        os.remove(copy / "run.json")
    ids = VOCDataset(synthetic_root, "train").ids
    run_cli(synthetic_root, copy, "--mode", "roi", "--recipe", "demo", "--jobs", "1", "--split", "train")
    assert "scoring: 0 computed" in run_cli(synthetic_root, copy, "--mode", "roi", "--recipe", "demo",
                                            "--jobs", "1", "--split", "train")
    model_path = WorkDir(copy).hcp_model
    before = np.load(WorkDir(copy).scores(ids[0]))["scores"]
    from wsk.models.saving import load_model
    from wsk.models.saving import save_model

    model = load_model(model_path)     # a really retrained model: other weights in fc8
    kernel, bias = model.get_layer("fc8").get_weights()
    model.get_layer("fc8").set_weights([kernel[:, ::-1], bias[::-1]])
    save_model(model, model_path)
    out = run_cli(synthetic_root, copy, "--mode", "roi", "--recipe", "demo", "--jobs", "1", "--split", "train")
    assert f"scoring: {len(ids)} computed" in out
    after = np.load(WorkDir(copy).scores(ids[0]))["scores"]
    np.testing.assert_allclose(after, before[:, ::-1], rtol=1e-4, atol=1e-6)   # made by the new model
    proposals = WorkDir(copy).proposals(ids[0])
    shutil.copyfile(proposals, str(proposals) + ".tmp")   # the same proposals, a new file: nothing is stale
    os.replace(str(proposals) + ".tmp", proposals)
    out = run_cli(synthetic_root, copy, "--mode", "roi", "--recipe", "demo", "--jobs", "1", "--split", "train")
    assert "scoring: 0 computed" in out
    arrays = dict(np.load(proposals))
    arrays["scores"] = arrays["scores"][::-1].copy()   # other proposal scores: the image's scores are redone
    save_npz(proposals, **arrays)
    out = run_cli(synthetic_root, copy, "--mode", "roi", "--recipe", "demo", "--jobs", "1", "--split", "train")
    assert "scoring: 1 computed" in out


def test_changing_the_number_of_rough_mask_regions_remakes_the_masks(synthetic_root, work, tmp_path):
    import dataclasses
    import shutil

    from wsk.data.voc import VOCDataset
    from wsk.pseudo.stage import run_pseudo
    from wsk.recipes import get_recipe

    copy = tmp_path / "w"
    shutil.copytree(work, copy)
    config = dataclasses.replace(get_recipe("demo").pseudo, score_mode="roi")
    run_pseudo(synthetic_root, copy, split="train", config=config)
    reports = run_pseudo(synthetic_root, copy, split="train", config=config)
    assert not reports["rough masks"].done
    reports = run_pseudo(synthetic_root, copy, split="train",
                         config=dataclasses.replace(config, rough_top_regions=1))
    assert sorted(reports["rough masks"].done) == sorted(VOCDataset(synthetic_root, "train").ids)


class _Counted:
    """A thread pool that counts the items submitted and not yet worked on (at each submission)."""

    def __init__(self, pool):
        import threading

        self.pool, self.lock, self.submitted, self.finished, self.most = pool, threading.Lock(), 0, 0, 0

    def work(self, item):
        import time

        time.sleep(0.0005)
        with self.lock:
            self.finished += 1

    def submit(self, fn, *args):
        with self.lock:
            self.submitted += 1
            self.most = max(self.most, self.submitted - self.finished)
        return self.pool.submit(fn, *args)


def test_the_stage_runner_keeps_a_few_images_per_worker_in_flight_not_the_split():
    """A stage over 600 images with 2 workers never has more than 8 per worker submitted ahead of
    the work (one future per image held 2 KB each in the parent: 200 MB at 100,000 images)."""
    import concurrent.futures

    from wsk.stages import run_per_image

    with concurrent.futures.ThreadPoolExecutor(2) as threads:
        pool = _Counted(threads)
        report = run_per_image("stage", [f"{i:04d}" for i in range(600)], pool.work, jobs=2, pool=pool)
    assert report.done == [f"{i:04d}" for i in range(600)] and not report.failed
    assert pool.finished == 600 and pool.most <= 16


def test_rough_crf_remakes_the_masks_as_the_crf_over_eq5s(synthetic_root, work, tmp_path):
    import dataclasses
    import shutil

    from wsk.data.voc import VOCDataset
    from wsk.io import label_png_made_from, load_npz, read_image, read_label_png
    from wsk.pseudo.rough_masks import crf_rough_mask
    from wsk.pseudo.stage import run_pseudo
    from wsk.recipes import get_recipe

    copy = tmp_path / "w"
    shutil.copytree(work, copy)
    config = dataclasses.replace(get_recipe("demo").pseudo, score_mode="roi", rough_crf=False)
    run_pseudo(synthetic_root, copy, split="train", config=config)
    wd, dataset = WorkDir(copy), VOCDataset(synthetic_root, "train")
    plain = {i: read_label_png(wd.mask(i)) for i in dataset.ids}
    assert all("crf" not in label_png_made_from(wd.mask(i)) for i in dataset.ids)
    reports = run_pseudo(synthetic_root, copy, split="train", config=dataclasses.replace(config, rough_crf=True))
    assert sorted(reports["rough masks"].done) == sorted(dataset.ids)   # remade, the CRF recorded
    for i in dataset.ids:
        assert label_png_made_from(wd.mask(i))["crf"] is True
        locmap = load_npz(wd.locmap(i))
        expected = crf_rough_mask(read_image(dataset.image_path(i)), plain[i], locmap["maps"], locmap["labels"])
        np.testing.assert_array_equal(read_label_png(wd.mask(i)), expected, err_msg=i)
        assert set(np.unique(expected)) <= {0} | set(locmap["labels"].tolist())
    reports = run_pseudo(synthetic_root, copy, split="train", config=dataclasses.replace(config, rough_crf=True))
    assert not reports["rough masks"].done
