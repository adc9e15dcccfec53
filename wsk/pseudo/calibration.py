"""Candidate thresholds calibrated per class on the images without the class (§3.1).

HCP has no background class: its softmax shares 1 among the object classes, so a proposal that
holds no object still scores near 1 for some class. Where classes are told apart by shape, a
background region whose edge traces an object's outline scores as that object. §3.1's fixed
threshold cannot tell such regions from the object, and in the classes they favour most
candidates are background.

The training images that do not hold class ``k`` show what class ``k``'s score does on background:
each one's highest class-``k`` proposal score is a false alarm. With ``candidate_quantile`` ``q``,
class ``k``'s threshold is the ``q``-quantile of those per-image maxima, and never below the fixed
threshold: with ``q = 0.75``, only a quarter of the images without the class hold any proposal
that would pass. Measured on ``bench_generalization``'s tuning styles 1 / 3 / 10 (demo recipe,
480 images, rough masks on the 360 training images; ``q`` among 0.5, 0.75 and 0.9):

=============================  ===================  ===================
                               fixed 0.9            calibrated, q 0.75
=============================  ===================  ===================
rough-mask mIoU                54.0 / 64.9 / 63.1   56.6 / 65.2 / 64.6
its weakest class              10.0 / 37.9 / 11.4   25.1 / 39.6 / 17.4
labels left without candidate  60 / 107 / 99        150 / 158 / 173
=============================  ===================  ===================

A label left without a candidate keeps its best-scoring proposal, as before
(``wsk.pseudo.refine_stage``).

The maxima are counted in a histogram of ``BINS`` bins over [0, 1] per class, so the statistic is
a sum over images (the refinement statistics pass, locally and on Beam) and its memory does not
grow with the split. A threshold is the upper edge of the bin that holds the quantile, so a
candidate's score beats at least the fraction ``q`` of the per-image maxima.
"""

import dataclasses

import numpy as np

from wsk.errors import WskError
from wsk.pseudo.candidates import hcp_column

BINS = 10000


@dataclasses.dataclass
class NegativeMaxima:
    """Per class, a histogram of the highest score of each training image without the class."""

    counts: np.ndarray | None = None   # (C, BINS) int64, C the HCP's object classes

    def add(self, scores, labels):
        """Count one image: ``scores`` its ``(P, C)`` proposal softmax, ``labels`` its classes
        (dataset indices, 1-based). Returns ``self``."""
        scores = np.asarray(scores, np.float64)
        if scores.ndim != 2:
            raise WskError(f"proposal scores must be (proposals, classes), got shape {scores.shape}")
        if self.counts is None:
            self.counts = np.zeros((scores.shape[1], BINS), np.int64)
        if scores.shape[1] != len(self.counts):
            raise WskError(f"scores of {scores.shape[1]} classes added to statistics of {len(self.counts)}")
        absent = np.setdiff1d(np.arange(scores.shape[1]), [hcp_column(label) for label in labels])
        if len(scores) and len(absent):
            bins = np.clip(np.floor(scores[:, absent].max(axis=0) * BINS).astype(np.int64), 0, BINS - 1)
            np.add.at(self.counts, (absent, bins), 1)
        return self

    def merge(self, other):
        """The statistics of both (a Beam combine)."""
        if self.counts is None or other.counts is None:
            return self if other.counts is None else other
        return NegativeMaxima(self.counts + other.counts)


def calibrated_thresholds(maxima, quantile, floor):
    """``(C,)`` float64: class ``k``'s candidate threshold, ``max(floor, t_k)``.

    ``t_k`` is ``(b + 1) / BINS`` for the first bin ``b`` where the cumulative count of class
    ``k``'s per-image maxima reaches ``quantile`` times their number: the upper edge of the bin of
    the ``ceil(quantile * n)``-th smallest maximum. A class without any image lacking it gets ``floor``.
    """
    if not 0.0 < quantile <= 1.0:
        raise WskError(f"the candidate quantile must lie in (0, 1], got {quantile}")
    counts = maxima.counts
    if counts is None:
        return np.zeros(0, np.float64)
    totals = counts.sum(axis=1)
    cumulative = np.cumsum(counts, axis=1)
    reached = cumulative >= np.ceil(quantile * totals - 1e-9)[:, None]
    edges = (np.argmax(reached, axis=1) + 1) / BINS
    return np.where(totals > 0, np.maximum(edges, floor), float(floor))


def calibrated_rows(scores, candidates, candidate_labels, thresholds):
    """The ``(K,)`` bool rows of an image's candidates (``candidates`` proposal indices,
    ``candidate_labels`` their classes) whose score beats their class's calibrated threshold."""
    candidate_labels = np.asarray(candidate_labels, np.int64)
    if not len(candidate_labels):
        return np.zeros(0, bool)
    values = np.asarray(scores)[np.asarray(candidates, np.int64), candidate_labels - 1]
    return values > np.asarray(thresholds)[candidate_labels - 1]


CANDIDATE_KEYS = ("candidates", "candidate_labels", "features")   # the per-candidate arrays of a scores file


def calibrated_candidates(rec, thresholds):
    """The per-candidate arrays of a scores file's arrays ``rec`` (``candidates``,
    ``candidate_labels``, and ``features`` where ``rec`` holds them), kept for the candidates whose
    score beats their class's ``thresholds`` (all of them when None)."""
    keys = [key for key in CANDIDATE_KEYS if key in rec]
    if thresholds is None:
        return {key: rec[key] for key in keys}
    rows = calibrated_rows(rec["scores"], rec["candidates"], rec["candidate_labels"], thresholds)
    return {key: rec[key][rows] for key in keys}


def calibrated_features(rec, thresholds):
    """``(features, candidate_labels)`` of the candidates ``calibrated_candidates`` keeps: what the
    statistics of Eq. 1 read of one image."""
    kept = calibrated_candidates(rec, thresholds)
    return kept["features"], kept["candidate_labels"]
