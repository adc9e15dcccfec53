"""Cross-image refinement (§3.2, Eq. 1) and its PCA against naive NumPy references."""

import math

import numpy as np
import pytest

from wsk.errors import WskError
from wsk.pseudo import cross_image_refinement, reduce_features
from wsk.pseudo.refinement import Moments, eq1_distances, pca_from_moments, refine_image, refinement_statistics


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


def random_class_features(rng, images, dim):
    return {f"img{i}": rng.normal(size=(rng.integers(1, 8), dim)) * rng.uniform(0.5, 2.0)
            + rng.normal(size=dim) for i in range(images)}


def test_closed_form_distances_equal_naive_eq1():
    rng = np.random.default_rng(0)
    per_image = random_class_features(rng, 6, 5)
    fast = eq1_distances(per_image)
    slow = naive_eq1(per_image)
    for image_id in per_image:
        np.testing.assert_allclose(fast[image_id], slow[image_id], rtol=1e-10)


@pytest.mark.parametrize("order", ["closest", "farthest"])
@pytest.mark.parametrize("keep", [0.5, 0.3, 1.0])
def test_kept_sets_equal_naive(order, keep):
    rng = np.random.default_rng(1)
    features = {3: random_class_features(rng, 7, 4), 11: random_class_features(rng, 4, 4),
                5: {"only": rng.normal(size=(5, 4))}}
    kept = cross_image_refinement(features, keep=keep, order=order)
    assert set(kept) == {3, 11, 5}
    for class_index, per_image in features.items():
        expected = naive_kept(per_image, keep, order)
        assert set(kept[class_index]) == set(per_image)
        for image_id in per_image:
            got = kept[class_index][image_id]
            assert len(got) == len(set(got.tolist()))
            assert set(got.tolist()) == expected[image_id], (class_index, image_id)


def test_orders_pick_opposite_ends():
    # image a: one candidate near the other images' candidates, one far away
    features = {1: {"a": np.array([[0.0, 0.0], [10.0, 0.0]]),
                    "b": np.array([[0.0, 1.0]]), "c": np.array([[1.0, 0.0], [0.0, -1.0]])}}
    assert cross_image_refinement(features, order="closest")[1]["a"].tolist() == [0]
    assert cross_image_refinement(features, order="farthest")[1]["a"].tolist() == [1]
    # half of 1 candidate rounds up: b keeps its only candidate
    assert cross_image_refinement(features)[1]["b"].tolist() == [0]


def test_single_image_class_keeps_everything():
    rng = np.random.default_rng(2)
    features = {4: {"x": rng.normal(size=(6, 3)), "empty": np.zeros((0, 3))}}
    kept = cross_image_refinement(features, keep=0.5, order="closest")
    assert sorted(kept[4]["x"].tolist()) == list(range(6))
    assert kept[4]["empty"].tolist() == []


def test_images_without_candidates_do_not_count_in_eq1():
    rng = np.random.default_rng(3)
    per_image = random_class_features(rng, 3, 4)
    with_empty = dict(per_image, none=np.zeros((0, 4)))
    a = eq1_distances(per_image)
    b = eq1_distances(with_empty)
    for image_id in per_image:
        np.testing.assert_allclose(a[image_id], b[image_id])
    assert len(b["none"]) == 0


def test_bad_arguments_are_wsk_errors():
    with pytest.raises(WskError):
        cross_image_refinement({1: {"a": np.zeros((2, 2))}}, order="descending")
    with pytest.raises(WskError):
        cross_image_refinement({1: {"a": np.zeros((2, 2))}}, keep=0.0)
    with pytest.raises(WskError):
        cross_image_refinement({1: {"a": np.zeros((2, 2)), "b": np.zeros((2, 3))}})


def test_pca_keeps_98_percent_energy_and_no_more_components_than_needed():
    rng = np.random.default_rng(4)
    spectrum = 0.75 ** np.arange(40)
    features = rng.normal(size=(400, 40)) * spectrum + rng.normal(size=40)
    reduced = reduce_features(features, energy=0.98)
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


def test_pca_energy_of_the_reduced_features_matches_numpy():
    rng = np.random.default_rng(5)
    features = rng.normal(size=(60, 120)) @ rng.normal(size=(120, 120))   # fewer rows than columns
    reduced = reduce_features(features, energy=0.98)
    centred = features - features.mean(axis=0)
    kept_energy = np.sum((reduced - reduced.mean(axis=0)) ** 2) / np.sum(centred ** 2)
    assert kept_energy >= 0.98


def test_pca_degenerate_inputs_pass_through():
    one = np.ones((1, 5))
    np.testing.assert_array_equal(reduce_features(one), one)
    flat = np.ones((4, 5))
    np.testing.assert_array_equal(reduce_features(flat), flat)


# --- streaming refinement (flat memory): the same PCA and Eq. 1 from accumulated statistics ------

def naive_pca(features, energy):
    """PCA by SVD of the centred rows: the fewest leading axes keeping more than ``energy``."""
    centred = features - features.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    ratio = np.cumsum(singular ** 2) / np.sum(singular ** 2)
    d = int(np.searchsorted(ratio, energy, side="right")) + 1
    return centred @ vt[:d].T


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
    dim = 12
    images = {}
    for n in range(9):
        count = int(rng.integers(0, 7))
        images[f"im{n}"] = (rng.normal(size=(count, dim)) * (0.6 ** np.arange(dim)) + rng.normal(size=dim),
                            rng.choice([2, 5, 9], size=count))
    images["alone"] = (rng.normal(size=(3, dim)), np.array([7, 7, 7]))   # class 7: one image only
    reads = []

    def read(image_id):
        reads.append(image_id)
        return images[image_id]

    projection, totals, dims = refinement_statistics(read, list(images), energy=0.98)
    assert sorted(reads) == sorted(list(images) * 2)
    # the reference: PCA of all candidates stacked, then Eq. 1 literally, class by class
    ids = list(images)
    stacked = np.concatenate([images[i][0] for i in ids])
    reduced = naive_pca(stacked, 0.98)
    assert dims == reduced.shape[1]
    offsets = np.cumsum([0] + [len(images[i][1]) for i in ids])
    for label in (2, 5, 9, 7):
        per_image = {}
        for n, image_id in enumerate(ids):
            rows = np.flatnonzero(images[image_id][1] == label)
            if len(rows):
                per_image[image_id] = reduced[offsets[n]:offsets[n + 1]][rows]
        expected = naive_kept(per_image, 0.5, order)
        for image_id in per_image:
            got = refine_image(*images[image_id], projection, totals, 0.5, order)[label]
            rows = np.flatnonzero(images[image_id][1] == label)
            assert set(got.tolist()) == {int(rows[j]) for j in expected[image_id]}, (label, image_id)
    assert refine_image(*images["alone"], projection, totals)[7].tolist() == [0, 1, 2]
    assert refine_image(np.zeros((0, dim)), np.zeros(0, int), projection, totals) == {}
