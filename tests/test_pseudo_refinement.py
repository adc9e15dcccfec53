"""Cross-image refinement (§3.2, Eq. 1) and its PCA, as the pipeline runs them (streaming), against
naive NumPy references: Eq. 1 by its double loop, the PCA by an SVD of all candidates stacked."""

import math

import numpy as np
import pytest

from wsk.errors import WskError
from wsk.pseudo import (ClassTotals, Moments, cross_image_refinement, pca_from_moments, refine_image,
                        refinement_statistics)
from wsk.pseudo.refinement import image_statistics


def naive_eq1(per_image):
    """Eq. 1 literally: for each candidate, loop over the other images and their candidates."""
    ids = [i for i in per_image if len(per_image[i])]
    out = {}
    for i in ids:
        dists = []
        for x in per_image[i]:
            total = 0.0
            for other in ids:
                if other == i:
                    continue
                total += np.mean([np.sum((x - y) ** 2) for y in per_image[other]])
            dists.append(total / (len(ids) - 1))
        out[i] = np.array(dists)
    return out


def naive_kept(per_image, keep, order):
    if sum(len(f) > 0 for f in per_image.values()) < 2:
        return {image_id: set(range(len(f))) for image_id, f in per_image.items()}
    dists = naive_eq1(per_image)
    kept = {}
    for image_id, feats in per_image.items():
        n = len(feats)
        ranked = sorted(range(n), key=lambda j: dists[image_id][j] if order == "closest"
                        else -dists[image_id][j])
        kept[image_id] = set(ranked[:math.ceil(keep * n)])
    return kept


def naive_pca(features, energy):
    """PCA by SVD of the centred rows: the fewest leading axes keeping more than ``energy``."""
    centred = features - features.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    ratio = np.cumsum(singular ** 2) / np.sum(singular ** 2)
    d = int(np.searchsorted(ratio, energy, side="right")) + 1
    return centred @ vt[:d].T


def naive_refinement(images, keep, order, energy):
    """§3.2 from scratch: the PCA of every candidate stacked, then Eq. 1's double loop class by class.
    ``images``: id -> (features, labels); returns id -> {label: set of kept rows}."""
    ids = list(images)
    stacked = np.concatenate([images[i][0] for i in ids])
    reduced = np.split(naive_pca(stacked, energy), np.cumsum([len(images[i][1]) for i in ids])[:-1])
    reduced = dict(zip(ids, reduced))
    out = {i: {} for i in ids}
    for label in {int(k) for i in ids for k in images[i][1]}:
        rows = {i: np.flatnonzero(images[i][1] == label) for i in ids}
        per_image = {i: reduced[i][r] for i, r in rows.items() if len(r)}
        for i, kept in naive_kept(per_image, keep, order).items():
            out[i][label] = {int(rows[i][j]) for j in kept}
    return out


def random_images(rng, images, dim, labels=(2, 5, 9)):
    """id -> (features, labels): 0-7 candidates an image, a decaying spectrum, per-image offsets."""
    out = {}
    for n in range(images):
        count = int(rng.integers(0, 8))
        out[f"im{n}"] = (rng.normal(size=(count, dim)) * (0.6 ** np.arange(dim)) * rng.uniform(0.5, 2.0)
                         + rng.normal(size=dim), rng.choice(labels, size=count))
    return out


def eq1_by_class_totals(per_image, label=1):
    """Eq. 1 of one class's candidates (id -> (n, D)) through ``ClassTotals``, features unprojected."""
    stats = {i: image_statistics(f, [label] * len(f)) for i, f in per_image.items()}
    totals = ClassTotals()
    for s in stats.values():
        totals.add(s)
    return {i: totals.distances(label, f, stats[i][label]) if len(f) else np.zeros(0)
            for i, f in per_image.items()}


def test_class_totals_distances_equal_naive_eq1():
    rng = np.random.default_rng(0)
    per_image = {f"img{i}": rng.normal(size=(rng.integers(1, 8), 5)) * rng.uniform(0.5, 2.0) + rng.normal(size=5)
                 for i in range(6)}
    fast = eq1_by_class_totals(per_image)
    slow = naive_eq1(per_image)
    for image_id in per_image:
        np.testing.assert_allclose(fast[image_id], slow[image_id], rtol=1e-10)
    # by hand: a = {(0, 0), (2, 0)}, b = {(0, 2)}: for (0, 0), N - 1 = 1 other image, distance 4;
    # for (2, 0): 4 + 4 = 8; for b's (0, 2): the mean of 4 and 8 = 6
    hand = eq1_by_class_totals({"a": np.array([[0.0, 0.0], [2.0, 0.0]]), "b": np.array([[0.0, 2.0]])})
    np.testing.assert_allclose(hand["a"], [4.0, 8.0])
    np.testing.assert_allclose(hand["b"], [6.0])


@pytest.mark.parametrize("order", ["closest", "farthest"])
@pytest.mark.parametrize("keep", [0.5, 0.3, 1.0])
def test_kept_sets_equal_naive(order, keep):
    rng = np.random.default_rng(1)
    images = random_images(rng, 9, 12)
    images["alone"] = (rng.normal(size=(5, 12)), np.array([7] * 5))   # class 7: one image only
    kept = cross_image_refinement(images, keep=keep, order=order)
    expected = naive_refinement(images, keep, order, 0.98)
    assert set(kept) == set(images)
    for image_id in images:
        assert set(kept[image_id]) == set(expected[image_id]), image_id
        for label, rows in kept[image_id].items():
            assert len(rows) == len(set(rows.tolist()))
            assert set(rows.tolist()) == expected[image_id][label], (label, image_id)
    assert sorted(kept["alone"][7].tolist()) == list(range(5))


def test_orders_pick_opposite_ends():
    # image a: one candidate near the other images' candidates, one far away (the PCA keeps the
    # axis of the far one, along which the order is decided)
    one = np.ones(1, int)
    images = {"a": (np.array([[0.0, 0.0], [10.0, 0.0]]), one.repeat(2)), "b": (np.array([[0.0, 1.0]]), one),
              "c": (np.array([[1.0, 0.0], [0.0, -1.0]]), one.repeat(2))}
    assert cross_image_refinement(images, order="closest")["a"][1].tolist() == [0]
    assert cross_image_refinement(images, order="farthest")["a"][1].tolist() == [1]
    # half of 1 candidate rounds up: b keeps its only candidate
    assert cross_image_refinement(images)["b"][1].tolist() == [0]


def test_single_image_class_keeps_everything_and_an_image_without_candidates_nothing():
    rng = np.random.default_rng(2)
    images = {"x": (rng.normal(size=(6, 3)), np.full(6, 4)), "empty": (np.zeros((0, 3)), np.zeros(0, int))}
    kept = cross_image_refinement(images, keep=0.5, order="closest")
    assert sorted(kept["x"][4].tolist()) == list(range(6))
    assert kept["empty"] == {}


def test_images_without_candidates_do_not_count_in_eq1():
    rng = np.random.default_rng(3)
    per_image = {f"img{i}": rng.normal(size=(rng.integers(1, 8), 4)) for i in range(3)}
    a = eq1_by_class_totals(per_image)
    b = eq1_by_class_totals(dict(per_image, none=np.zeros((0, 4))))
    for image_id in per_image:
        np.testing.assert_allclose(a[image_id], b[image_id])
    assert len(b["none"]) == 0


def test_bad_arguments_are_wsk_errors():
    images = {"a": (np.zeros((2, 2)), np.ones(2, int))}
    with pytest.raises(WskError, match="order"):
        cross_image_refinement(images, order="descending")
    with pytest.raises(WskError, match="fraction"):
        cross_image_refinement(images, keep=0.0)
    with pytest.raises(WskError, match="dimension"):
        cross_image_refinement(dict(images, b=(np.zeros((2, 3)), np.ones(2, int))))
    with pytest.raises(WskError, match="labels"):
        cross_image_refinement({"a": (np.zeros((2, 2)), np.ones(3, int))})


def test_pca_keeps_98_percent_energy_and_no_more_components_than_needed():
    rng = np.random.default_rng(4)
    spectrum = 0.75 ** np.arange(40)
    features = rng.normal(size=(400, 40)) * spectrum + rng.normal(size=40)
    reduced = pca_from_moments(Moments().add(features), energy=0.98)(features)
    centred = features - features.mean(axis=0)
    singular = np.linalg.svd(centred, compute_uv=False)
    ratio = np.cumsum(singular ** 2) / np.sum(singular ** 2)
    d = reduced.shape[1]
    assert 1 < d < 40
    assert ratio[d - 1] >= 0.98
    assert ratio[d - 2] < 0.98
    # the projections are those on the d leading principal axes (Gram matrices agree)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    expected = centred @ vt[:d].T
    np.testing.assert_allclose(reduced @ reduced.T, expected @ expected.T, atol=1e-8)


def test_pca_energy_with_fewer_rows_than_columns():
    rng = np.random.default_rng(5)
    features = rng.normal(size=(60, 120)) @ rng.normal(size=(120, 120))
    reduced = pca_from_moments(Moments().add(features), energy=0.98)(features)
    centred = features - features.mean(axis=0)
    kept_energy = np.sum((reduced - reduced.mean(axis=0)) ** 2) / np.sum(centred ** 2)
    assert kept_energy >= 0.98
    assert reduced.shape[1] == naive_pca(features, 0.98).shape[1] < 60


# --- the statistics alone: moments merged as Beam combines them, degenerate inputs ---------------

def test_pca_from_moments_equals_svd_of_the_stacked_rows():
    rng = np.random.default_rng(6)
    spectrum = 0.7 ** np.arange(30)
    chunks = [rng.normal(size=(n, 30)) * spectrum + 3.0 for n in (5, 40, 1, 0, 60)]
    moments = Moments()
    for chunk in chunks:
        moments.add(chunk)
    stacked = np.concatenate(chunks)
    projection = pca_from_moments(moments, 0.98)
    expected = naive_pca(stacked, 0.98)
    assert projection.dims == expected.shape[1]
    assert 1 < projection.dims < 30
    got = projection(stacked)   # equal up to the sign of each axis: compare Gram matrices
    np.testing.assert_allclose(got @ got.T, expected @ expected.T, atol=1e-8)
    # merged partial moments (a Beam-style combine) give the same statistics
    merged = Moments().add(np.concatenate(chunks[:2])).merge(Moments().add(np.concatenate(chunks[2:])))
    np.testing.assert_allclose(merged.outer, moments.outer)
    assert merged.count == len(stacked) == 106


def test_pca_from_moments_degenerate_inputs_give_no_projection():
    assert pca_from_moments(Moments().add(np.ones((1, 4)))) is None
    assert pca_from_moments(Moments().add(np.ones((5, 4)))) is None   # no variance
    assert pca_from_moments(Moments()) is None
    with pytest.raises(WskError, match="dimension"):
        Moments().add(np.ones((2, 3))).add(np.ones((2, 4)))


@pytest.mark.parametrize("order", ["closest", "farthest"])
def test_streaming_refinement_keeps_what_naive_eq1_on_naive_pca_keeps(order):
    rng = np.random.default_rng(7)
    images = random_images(rng, 9, 12)
    images["alone"] = (rng.normal(size=(3, 12)), np.array([7, 7, 7]))   # class 7: one image only
    reads = []

    def read(image_id):
        reads.append(image_id)
        return images[image_id]

    projection, totals, dims = refinement_statistics(read, list(images), energy=0.98)
    assert sorted(reads) == sorted(list(images) * 2)      # two passes, one image at a time
    assert dims == naive_pca(np.concatenate([f for f, _ in images.values()]), 0.98).shape[1] < 12
    assert totals.images == {label: sum(label in labels for _, labels in images.values()) for label in (2, 5, 9, 7)}
    expected = naive_refinement(images, 0.5, order, 0.98)
    for image_id, (features, labels) in images.items():
        got = refine_image(features, labels, projection, totals, 0.5, order)
        assert {k: set(v.tolist()) for k, v in got.items()} == expected[image_id], image_id
    assert refine_image(*images["alone"], projection, totals)[7].tolist() == [0, 1, 2]
    assert refine_image(np.zeros((0, 12)), np.zeros(0, int), projection, totals) == {}


# --- the public names are what the pipeline runs -------------------------------------------------

def write_scores(workdir, image_id, labels, classes, rng, proposals=20, dim=10):
    """A scores file as the scoring stage writes it: 0-5 candidates per label, float16 features."""
    from wsk.io import save_npz
    from wsk.pseudo.files import SCORES_VERSION

    candidates, candidate_labels = [], []
    for label in labels:
        count = int(rng.integers(0, 6))
        candidates += rng.choice(proposals, size=count, replace=False).tolist()
        candidate_labels += [label] * count
    features = rng.normal(size=(len(candidates), dim)) * 0.7 ** np.arange(dim) + rng.normal(size=dim)
    save_npz(workdir.scores(image_id), version=np.int32(SCORES_VERSION), scores=rng.random((proposals, classes)),
             candidates=np.array(candidates, np.int32), candidate_labels=np.array(candidate_labels, np.int32),
             features=features.astype(np.float16), mode=np.array("roi"), threshold=np.float32(0.5),
             inputs=np.array("test"))


def test_wsk_pseudos_public_names_are_the_functions_the_pipeline_runs(synthetic_root, tmp_path, monkeypatch):
    import json

    import wsk.pseudo
    import wsk.pseudo.refinement
    from wsk.io import load_npz
    from wsk.pseudo import refine_stage
    from wsk.pseudo.stage import pseudo_run
    from wsk.stage_list import run_stages

    # the refinement stage and the Beam pipeline call the very objects wsk.pseudo exports
    assert refine_stage.refinement_statistics is wsk.pseudo.refinement_statistics
    assert refine_stage.refine_image is wsk.pseudo.refine_image
    assert refine_stage.ClassTotals is wsk.pseudo.ClassTotals
    pytest.importorskip("apache_beam")
    import wsk.pipeline

    assert wsk.pipeline.Moments is wsk.pseudo.Moments and wsk.pipeline.ClassTotals is wsk.pseudo.ClassTotals
    # the other steps' stage modules call the exported objects too, and nothing else is exported but
    # the in-memory call of the refinement (checked against the naive reference below)
    from wsk.pseudo import score_stage, targets

    assert score_stage.select_candidates is wsk.pseudo.select_candidates
    assert targets.localization_maps is wsk.pseudo.localization_maps and targets.rough_masks is wsk.pseudo.rough_masks
    run_by_the_stages = {"select_candidates", "ClassTotals", "Moments", "pca_from_moments", "refinement_statistics",
                         "refine_image", "localization_maps", "rough_masks"}
    assert set(wsk.pseudo.__all__) == run_by_the_stages | {"cross_image_refinement"}

    # and a run of the stage list's refinement entries goes through them: spies on the exported objects
    calls = []
    eq1, pca = wsk.pseudo.ClassTotals.distances, wsk.pseudo.pca_from_moments
    assert wsk.pseudo.refinement.pca_from_moments is pca
    monkeypatch.setattr(wsk.pseudo.ClassTotals, "distances", lambda *a: calls.append("Eq. 1") or eq1(*a))
    monkeypatch.setattr(wsk.pseudo.refinement, "pca_from_moments", lambda *a: calls.append("PCA") or pca(*a))
    run = pseudo_run(synthetic_root, tmp_path / "work", "train")
    dataset, workdir = run.dataset(), run.workdir
    rng = np.random.default_rng(8)
    for image_id in dataset.ids:
        write_scores(workdir, image_id, [int(k) for k in dataset.labels(image_id)], dataset.num_classes - 1, rng)
    run_stages(("refinement statistics", "refinement"), run)
    assert calls.count("PCA") == 1 and calls.count("Eq. 1") > 0

    # what it wrote is what the naive PCA and Eq. 1 keep (and what cross_image_refinement keeps)
    images = {}
    for image_id in dataset.ids:
        rec = load_npz(workdir.scores(image_id))
        images[image_id] = (rec["features"].astype(np.float64), rec["candidate_labels"])
    expected = naive_refinement(images, 0.5, "closest", 0.98)
    in_memory = cross_image_refinement(images)
    refined = 0
    for image_id in dataset.ids:
        candidates = load_npz(workdir.scores(image_id))["candidates"]
        kept = json.loads(open(workdir.refined(image_id)).read())["kept"]
        for label, rows in expected[image_id].items():
            assert set(kept[str(label)]) == {int(candidates[r]) for r in rows}, (image_id, label)
            assert set(in_memory[image_id][label].tolist()) == rows
            refined += len(rows) < (images[image_id][1] == label).sum()
    assert refined > 0       # refinement dropped candidates somewhere


# --- the contrast order: Eq. 1 against the class's false alarms ----------------------------------

def contrast_images():
    """Class 1 in 1-D: image A's four candidates, one candidate in each of B and C, and false alarms
    of class 1 in D and E (images without it). By hand, with Eq. 1's average over images:
    dis(x) = ((x-3)^2 + (x-4)^2) / 2 and dis_neg(x) = ((x-1)^2 + (x-2)^2) / 2, so for x = 3, 1.5, 5, 0:
    dis = 0.5, 4.25, 2.5, 12.5; dis_neg = 2.5, 0.25, 12.5, 2.5; dis - dis_neg = -2, 4, -10, 10."""
    one = np.array([1])
    candidates = {"A": (np.array([[3.0], [1.5], [5.0], [0.0]]), np.array([1, 1, 1, 1])),
                  "B": (np.array([[3.0]]), one), "C": (np.array([[4.0]]), one)}
    alarms = {"D": (np.array([[1.0]]), one), "E": (np.array([[2.0]]), one)}
    return candidates, alarms


@pytest.mark.parametrize("keep, contrast, closest", [(0.25, [2], [0]), (0.5, [2, 0], [0, 2]),
                                                     (0.75, [2, 0, 1], [0, 2, 1])])
def test_contrast_order_ranks_by_eq1_minus_the_distance_to_the_false_alarms(keep, contrast, closest):
    from wsk.pseudo.refinement import class_totals

    candidates, alarms = contrast_images()
    totals = ClassTotals()
    for features, labels in candidates.values():
        totals.add(image_statistics(features, labels))
    negatives = class_totals(alarms.__getitem__, list(alarms), None)
    assert negatives.images == {1: 2}
    np.testing.assert_allclose(negatives.distances(1, candidates["A"][0]), [2.5, 0.25, 12.5, 2.5])
    a = candidates["A"]
    assert refine_image(*a, None, totals, keep, "contrast", negatives)[1].tolist() == contrast
    assert refine_image(*a, None, totals, keep, "closest", negatives)[1].tolist() == closest
    # without false alarms of the class, the contrast order is Eq. 1's closest first
    assert refine_image(*a, None, totals, keep, "contrast", ClassTotals())[1].tolist() == closest
    assert refine_image(*a, None, totals, keep, "contrast")[1].tolist() == closest


def test_contrast_in_memory_equals_the_hand_ranking():
    candidates, alarms = contrast_images()
    rng = np.random.default_rng(3)
    # a second dimension of pure noise a 98% PCA drops leaves the hand ranking as it is
    lifted = {i: (np.hstack([f * 10, rng.normal(size=(len(f), 1)) * 1e-3]), l) for i, (f, l) in candidates.items()}
    lifted_alarms = {i: (np.hstack([f * 10, np.zeros((len(f), 1))]), l) for i, (f, l) in alarms.items()}
    kept = cross_image_refinement(lifted, keep=0.5, order="contrast", negatives=lifted_alarms)
    assert kept["A"][1].tolist() == [2, 0]
    assert cross_image_refinement(lifted, keep=0.5, order="closest")["A"][1].tolist() == [0, 2]


def test_select_negatives_takes_each_absent_class_top_proposals_by_hand():
    from wsk.pseudo.candidates import negatives_per_class, select_negatives
    from wsk.recipes import PseudoConfig

    scores = np.array([[0.1, 0.7, 0.2],
                       [0.5, 0.1, 0.4],
                       [0.5, 0.2, 0.3],
                       [0.2, 0.3, 0.5]])
    rows, labels = select_negatives(scores, [2], 2)   # class 2 (column 1) is in the image
    assert rows.tolist() == [1, 2, 3, 1] and labels.tolist() == [1, 1, 3, 3]   # the tie 1, 2: lower first
    rows, labels = select_negatives(scores, [1, 2, 3], 2)
    assert rows.tolist() == [] and labels.tolist() == []
    assert select_negatives(scores, [], 1)[0].tolist() == [1, 0, 3]
    assert negatives_per_class(PseudoConfig(refine_order="contrast", refine_negatives=7)) == 7
    assert negatives_per_class(PseudoConfig(refine_order="closest", refine_negatives=7)) == 0


def test_a_scores_file_without_false_alarms_is_stale_for_the_contrast_order(tmp_path):
    from wsk.pseudo.score_stage import scores_valid
    from wsk.workdir import WorkDir

    workdir = WorkDir(tmp_path)
    write_scores(workdir, "a", [1, 2], 4, np.random.default_rng(0))
    path = workdir.scores("a")
    assert scores_valid(path, "roi", 0.5, "test")
    assert not scores_valid(path, "roi", 0.5, "test", negatives=10)   # rescored for the contrast order
    from wsk.io import load_npz, save_npz

    rec = load_npz(path)
    save_npz(path, **rec, negatives_per_class=np.int32(10), negatives=np.zeros(20, np.int32),
             negative_labels=np.repeat([3, 4], 10).astype(np.int32), negative_features=np.zeros((20, 10), np.float16))
    assert scores_valid(path, "roi", 0.5, "test", negatives=10)
    assert not scores_valid(path, "roi", 0.5, "test", negatives=5)
    assert scores_valid(path, "roi", 0.5, "test")   # the other orders read what they need of it


def test_false_alarms_missing_from_a_scores_file_is_a_one_line_error_naming_it(tmp_path):
    from wsk.io import load_npz
    from wsk.pseudo.refine_stage import false_alarms
    from wsk.workdir import WorkDir

    workdir = WorkDir(tmp_path)
    write_scores(workdir, "a", [1], 3, np.random.default_rng(1))
    with pytest.raises(WskError, match="false alarms") as err:
        false_alarms(load_npz(workdir.scores("a")), workdir.scores("a"))
    assert str(workdir.scores("a")) in str(err.value) and "\n" not in str(err.value)
