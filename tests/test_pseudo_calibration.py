"""Candidate thresholds calibrated on the images without the class (``wsk.pseudo.calibration``)."""

import math

import numpy as np
import pytest

from wsk.errors import WskError
from wsk.pseudo.calibration import BINS, NegativeMaxima, calibrated_rows, calibrated_thresholds
from wsk.pseudo.refine_stage import kept_proposals
from wsk.recipes import PseudoConfig


def image(column0, column1):
    """A (3, 2) softmax whose two columns hold the given values."""
    return np.stack([column0, column1], axis=1)


def test_thresholds_by_hand():
    maxima = NegativeMaxima()
    # four images without class 1 (column 0): their highest class-1 scores 0.20005, 0.50005, 0.95125, 0.97005
    for top in (0.20005, 0.50005, 0.95125, 0.97005):
        maxima.add(image([0.1, top, 0.0], [0.9, 1 - top, 1.0]), labels=[2])
    # an image with both classes counts for neither, however high it scores
    maxima.add(image([0.99, 0.5, 0.5], [0.01, 0.5, 0.99]), labels=[1, 2])
    assert maxima.counts.sum(axis=1).tolist() == [4, 0]
    # q 0.75 of 4 maxima: the 3rd smallest, 0.95125, in bin 9512 of 10,000: threshold 0.9513
    thresholds = calibrated_thresholds(maxima, 0.75, floor=0.9)
    assert thresholds[0] == pytest.approx(0.9513, abs=1e-12)
    assert thresholds[1] == 0.9          # class 2 is in every image: the fixed threshold
    # q 0.5: the 2nd smallest, 0.50005, is under the floor, which wins
    assert calibrated_thresholds(maxima, 0.5, floor=0.9)[0] == 0.9
    assert calibrated_thresholds(maxima, 0.5, floor=0.0)[0] == pytest.approx(0.5001, abs=1e-12)
    # q 1: the largest
    assert calibrated_thresholds(maxima, 1.0, floor=0.0)[0] == pytest.approx(0.9701, abs=1e-12)


def test_thresholds_match_a_naive_quantile_of_the_per_image_maxima():
    rng = np.random.default_rng(3)
    classes, images = 4, 300
    labels = [sorted(set(rng.integers(1, classes + 1, size=rng.integers(1, 3)).tolist())) for _ in range(images)]
    scores = [rng.dirichlet(np.full(classes, 0.3), size=rng.integers(1, 40)) for _ in range(images)]
    maxima = NegativeMaxima()
    for s, l in zip(scores, labels):
        maxima.add(s, l)
    for quantile in (0.5, 0.75, 0.9, 0.999):
        got = calibrated_thresholds(maxima, quantile, floor=0.3)
        for k in range(classes):
            negatives = [s[:, k].max() for s, l in zip(scores, labels) if k + 1 not in l]
            # the ceil(q n)-th smallest maximum, and the upper edge of its histogram bin
            x = np.sort(negatives)[math.ceil(quantile * len(negatives)) - 1]
            assert x == np.quantile(negatives, quantile, method="inverted_cdf")
            expected = max(0.3, (math.floor(x * BINS) + 1) / BINS)
            assert got[k] == pytest.approx(expected, abs=1e-12), (quantile, k)
            # what the threshold promises: at least the fraction q of the maxima lie below it
            assert np.mean(np.asarray(negatives) < got[k]) >= quantile


def test_merged_parts_equal_one_pass():
    rng = np.random.default_rng(0)
    items = [(rng.dirichlet(np.ones(3), size=5), [int(rng.integers(1, 4))]) for _ in range(20)]
    whole, a, b = NegativeMaxima(), NegativeMaxima(), NegativeMaxima()
    for n, (s, l) in enumerate(items):
        whole.add(s, l)
        (a if n % 2 else b).add(s, l)
    np.testing.assert_array_equal(a.merge(b).counts, whole.counts)
    np.testing.assert_array_equal(NegativeMaxima().merge(whole).counts, whole.counts)
    assert calibrated_thresholds(NegativeMaxima(), 0.75, 0.9).shape == (0,)


def test_bad_input_is_a_clear_error():
    with pytest.raises(WskError, match="quantile must lie in"):
        calibrated_thresholds(NegativeMaxima().add(np.ones((1, 2)) / 2, [1]), 0.0, 0.9)
    with pytest.raises(WskError, match="2 classes added to statistics of 3"):
        NegativeMaxima().add(np.ones((1, 3)) / 3, [1]).add(np.ones((1, 2)) / 2, [1])
    with pytest.raises(WskError, match="must be \\(proposals, classes\\)"):
        NegativeMaxima().add(np.ones(3), [1])


def test_calibrated_rows_and_kept_proposals_by_hand():
    # 4 proposals, 2 classes; the image holds both; candidates above 0.5: proposals 0, 1 for class 1,
    # proposal 2 and 3 for class 2
    scores = np.array([[0.97, 0.03], [0.93, 0.07], [0.08, 0.92], [0.4, 0.6]])
    rec = {"scores": scores, "candidates": np.array([0, 1, 2, 3]), "candidate_labels": np.array([1, 1, 2, 2]),
           "features": np.eye(4)}
    thresholds = np.array([0.95, 0.99])
    assert calibrated_rows(scores, rec["candidates"], rec["candidate_labels"], thresholds).tolist() == [
        True, False, False, False]
    config = PseudoConfig()
    kept, fallback = kept_proposals(rec, [1, 2], None, None, False, config, thresholds)
    # class 1 keeps proposal 0 (0.97 > 0.95); class 2 keeps none of its candidates (0.92 and 0.6 are not
    # above 0.99) and falls back to its best-scoring proposal, 2
    assert kept == {"1": [0], "2": [2]} and fallback == [2]
    # without thresholds every candidate stays
    kept, fallback = kept_proposals(rec, [1, 2], None, None, False, config)
    assert kept == {"1": [0, 1], "2": [2, 3]} and fallback == []
