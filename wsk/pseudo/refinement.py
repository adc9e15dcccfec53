"""Cross-image contextual refinement (§3.2, Eq. 1), streaming: the functions the pipeline runs.

Candidates of one class are compared with the candidates of the *other* images that
share the label. With ``x`` a candidate of image ``i`` and image ``i'`` holding
``n_{i'}`` candidates ``y``, Eq. 1 averages over the other images

    dis(x) = 1/(N-1) * sum_{i' != i} 1/n_{i'} * sum_y ||x - y||^2.

Because ``1/n * sum_y ||x - y||^2 = ||x||^2 - 2 x . mean_{i'} + meansq_{i'}`` (``mean`` the
mean vector, ``meansq`` the mean squared norm of image ``i'``'s candidates), the sum over
the other images only needs the class-wide sums of those per-image statistics minus the
image's own: the cost is linear in the number of candidates, not quadratic.

So the refinement streams over a dataset one image at a time:

* the PCA of §3.2 is fitted from the accumulated first and second moments of the features
  (``Moments``, ``pca_from_moments``);
* Eq. 1 needs per class only the number of images with candidates, the sum of their means and
  the sum of their mean squared norms (``ClassTotals``, whose ``distances`` is Eq. 1);
* ``refinement_statistics`` makes both in two passes, ``refine_image`` ranks one image's
  candidates against them.

**The contrast order** (``order="contrast"``, the demo's) adds what Eq. 1 cannot see: the class's
false alarms. An image without class ``k`` cannot hold it, so its highest class-``k`` proposals
(``wsk.pseudo.candidates.select_negatives``) show what the class's score picks up besides the
object: background regions whose edge traces the object's outline, parts of other objects. The
same streamed totals (``ClassTotals``), summed over those false alarms, give each candidate Eq. 1's
average distance to them, ``dis_neg(x)``, and the candidates kept are those whose
``dis(x) - dis_neg(x)`` is smallest: closer to the class's candidates in other images than to its
false alarms. With both written out this is ``2 x . (m_neg - m) + const``: a nearest-class-mean
classifier between the class's candidates and its false alarms.

Memory is ``O(D^2 + classes x d)``, whatever the number of candidates, and no more than one
image's candidates are held at a time. The refinement stage (``wsk.pseudo.refine_stage``) and the
Beam pipeline (``wsk.pipeline``) run these; ``cross_image_refinement`` is the same two calls over
candidates held in memory.
"""

import dataclasses
import math

import numpy as np

from wsk.errors import WskError
from wsk.recipes import ORDERS, PseudoConfig


def check_ranking(keep, order):
    """A ``WskError`` unless ``keep`` lies in (0, 1] and ``order`` is one of ``ORDERS``."""
    if not 0.0 < keep <= 1.0:
        raise WskError(f"the kept fraction must lie in (0, 1], got {keep}")
    if order not in ORDERS:
        raise WskError(f"refinement order must be one of {', '.join(ORDERS)}, got {order!r}")


def rank_and_keep(distances, keep=PseudoConfig.refine_keep, order=PseudoConfig.refine_order):
    """Indices of the ``ceil(keep * n)`` best of ``n`` distances, best first.

    The paper says, in §3.2: "We re-rank the proposals of the i-th image following the
    calculated average distance in a descending order. After the re-ranking, the top half of
    proposals are selected", and in the caption of Fig. 3: "we rank the selected proposals in a
    descending order according to the calculated distances". Read literally, both keep the
    proposals *farthest* from the other images' (``order="farthest"``). The same paragraph wants
    "those proposals which tightly include an object [...] ranked on the top", and tight
    proposals of one class are the ones that resemble each other across images, i.e. the
    *closest* (``order="closest"``, the recipes' default: small distances first).
    Ties keep the lower index first.
    """
    check_ranking(keep, order)
    distances = np.asarray(distances, dtype=np.float64)
    count = math.ceil(keep * len(distances))
    key = -distances if order == "farthest" else distances
    return np.argsort(key, kind="stable")[:count].astype(np.int64)


@dataclasses.dataclass
class Moments:
    """Count, sum and sum of outer products of feature rows (float64): what the PCA needs."""

    count: int = 0
    total: np.ndarray | None = None    # (D,)
    outer: np.ndarray | None = None    # (D, D)

    def add(self, features):
        """Accumulate ``(n, D)`` rows; returns ``self``."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2:
            raise WskError(f"features must be (candidates, dimensions), got shape {features.shape}")
        if not len(features):
            return self
        if self.total is None:
            dim = features.shape[1]
            self.total, self.outer = np.zeros(dim), np.zeros((dim, dim))
        elif features.shape[1] != len(self.total):
            raise WskError(f"candidate features differ in dimension: {features.shape[1]} and {len(self.total)}")
        self.count += len(features)
        self.total += features.sum(axis=0)
        self.outer += features.T @ features
        return self

    def merge(self, other):
        """The moments of both sets of rows (either may be empty)."""
        if other.total is None:
            return self
        if self.total is None:
            return Moments(other.count, other.total.copy(), other.outer.copy())
        return Moments(self.count + other.count, self.total + other.total, self.outer + other.outer)


@dataclasses.dataclass(frozen=True)
class Projection:
    """``(x - mean) @ components``: the leading principal axes keeping the PCA energy."""

    mean: np.ndarray          # (D,)
    components: np.ndarray    # (D, d)

    def __call__(self, features):
        return (np.asarray(features, dtype=np.float64) - self.mean) @ self.components

    @property
    def dims(self):
        return int(self.components.shape[1])


def pca_from_moments(moments, energy=PseudoConfig.pca_energy):
    """The PCA of §3.2 ("PCA to reserve 98% energy"), fitted from ``Moments`` alone: a ``Projection``.

    The fewest leading eigenvectors of the covariance whose explained variance exceeds
    ``energy`` of the total (scikit-learn's rule for a float ``n_components``). None when there
    is nothing to fit (fewer than two rows or dimensions, no variance): the features are then
    used as they are (Eq. 1's distances are unchanged by leaving them unprojected).
    """
    if not 0.0 < energy < 1.0:
        raise WskError(f"PCA energy must lie in (0, 1), got {energy}")
    if moments.count < 2 or moments.total is None or len(moments.total) < 2:
        return None
    mean = moments.total / moments.count
    covariance = (moments.outer - moments.count * np.outer(mean, mean)) / (moments.count - 1)
    values, vectors = np.linalg.eigh(covariance)
    values, vectors = np.clip(values[::-1], 0.0, None), vectors[:, ::-1]
    if values.sum() <= 0:
        return None
    ratio = np.cumsum(values) / values.sum()
    dims = min(int(np.searchsorted(ratio, energy, side="right")) + 1, len(values))
    return Projection(mean, vectors[:, :dims])


def fit_projection(moments, energy=PseudoConfig.pca_energy):
    """``(projection, pca_dims)``: ``pca_from_moments``, and the dimension Eq. 1 then works in
    (``D`` without a projection, None without any candidate)."""
    projection = pca_from_moments(moments, energy)
    if projection is not None:
        return projection, projection.dims
    return None, None if moments.total is None else len(moments.total)


def reduce_with(projection, features):
    """``features`` projected by ``projection``, or as they are (float64) when it is None."""
    return projection(features) if projection is not None else np.asarray(features, np.float64)


def image_statistics(features, labels):
    """``{label: (mean (d,), mean squared norm)}`` of one image's candidates per label."""
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    if features.ndim != 2 or labels.shape != features.shape[:1]:
        raise WskError(f"features of shape {features.shape} do not fit {labels.shape} candidate labels")
    out = {}
    for label in np.unique(labels):
        rows = features[labels == label]
        out[int(label)] = (rows.mean(axis=0), float(np.einsum("ij,ij->", rows, rows)) / len(rows))
    return out


@dataclasses.dataclass
class ClassTotals:
    """Per class: images with candidates, the sum of their means, the sum of their mean squared
    norms (Eq. 1's sums over the other images are these minus the image's own)."""

    images: dict = dataclasses.field(default_factory=dict)
    means: dict = dataclasses.field(default_factory=dict)
    meansq: dict = dataclasses.field(default_factory=dict)

    def add(self, statistics):
        """Add one image's ``image_statistics``; returns ``self``."""
        for label, (mean, meansq) in statistics.items():
            self.images[label] = self.images.get(label, 0) + 1
            self.means[label] = self.means.get(label, 0.0) + mean
            self.meansq[label] = self.meansq.get(label, 0.0) + meansq
        return self

    def merge(self, other):
        merged = ClassTotals(dict(self.images), dict(self.means), dict(self.meansq))
        for label, count in other.images.items():
            merged.images[label] = merged.images.get(label, 0) + count
            merged.means[label] = merged.means.get(label, 0.0) + other.means[label]
            merged.meansq[label] = merged.meansq.get(label, 0.0) + other.meansq[label]
        return merged

    def distances(self, label, features, own=None):
        """Eq. 1 for one image's ``(n, d)`` candidates of ``label`` whose statistics are ``own``
        (``image_statistics``), averaged over the *other* images; None when no other image has
        candidates of ``label``. ``own`` None: over every image counted (totals the image is not in,
        such as the false alarms of a class it holds)."""
        others = self.images.get(label, 0) - (0 if own is None else 1)
        if others < 1:
            return None
        mean, meansq = (0.0, 0.0) if own is None else own
        other_mean = (self.means[label] - mean) / others
        other_meansq = (self.meansq[label] - meansq) / others
        features = np.asarray(features, dtype=np.float64)
        return np.einsum("ij,ij->i", features, features) - 2.0 * features @ other_mean + other_meansq


def refine_image(features, labels, projection, totals, keep=PseudoConfig.refine_keep,
                 order=PseudoConfig.refine_order, negatives=None):
    """``{label: kept candidate rows, best first}`` of one image (§3.2), from the dataset's
    ``projection`` and ``totals`` (``refinement_statistics``): for each label, the rows of its
    ``ceil(keep * n)`` candidates ranked by Eq. 1 in ``order`` (``rank_and_keep``), or all of them
    when no other image has candidates of the label. ``order="contrast"`` ranks by Eq. 1 minus the
    average distance to the class's false alarms, ``negatives`` (``class_totals`` of the false alarms); a class
    without false alarms is ranked by Eq. 1 alone."""
    check_ranking(keep, order)
    labels = np.asarray(labels)
    if not len(labels):
        return {}
    reduced = reduce_with(projection, features)
    own = image_statistics(reduced, labels)
    kept = {}
    for label, stats in own.items():
        rows = np.flatnonzero(labels == label)
        dist = totals.distances(label, reduced[rows], stats)
        if dist is not None and order == "contrast" and negatives is not None:
            alarms = negatives.distances(label, reduced[rows])
            dist = dist if alarms is None else dist - alarms
        kept[label] = rows if dist is None else rows[rank_and_keep(dist, keep, order)]
    return kept


def refinement_statistics(read, ids, energy=PseudoConfig.pca_energy):
    """What Eq. 1 needs of a whole dataset, streaming: ``(projection, totals, pca_dims)``.

    ``read(image_id)`` returns ``(features (n, D), candidate labels (n,))`` of that image's
    candidates; it is called twice per image (the moments for the PCA, then the class totals
    of the projected features). ``projection`` is None when no PCA could be fitted (the
    features are then used as they are) and ``pca_dims`` is then ``D`` (None without any
    candidate). ``refine_image`` then ranks each image's candidates.
    """
    moments = Moments()
    for image_id in ids:
        moments.add(read(image_id)[0])
    projection, dims = fit_projection(moments, energy)
    return projection, class_totals(read, ids, projection), dims


def class_totals(read, ids, projection):
    """The ``ClassTotals`` of rows read one image at a time, streaming: ``read(image_id)`` returns
    ``(features (m, D), classes (m,))`` of that image's candidates (Eq. 1) or false alarms (the
    contrast order), projected by the candidates' ``projection`` (None: as they are)."""
    totals = ClassTotals()
    for image_id in ids:
        features, labels = read(image_id)
        if len(labels):
            totals.add(image_statistics(reduce_with(projection, features), labels))
    return totals


def cross_image_refinement(candidates, keep=PseudoConfig.refine_keep, order=PseudoConfig.refine_order,
                           energy=PseudoConfig.pca_energy, negatives=None):
    """§3.2 over candidates held in memory: ``refinement_statistics`` then ``refine_image``.

    ``candidates`` maps image id -> ``(features (n, D), candidate labels (n,))``; ``negatives``
    (the contrast order) maps image id -> ``(features (m, D), classes (m,))`` of its false alarms.
    Returns image id -> ``{label: kept candidate rows, best first}`` (``{}`` for an image without
    candidates): what the refinement stage writes for each image, for a set small enough to hold.
    """
    check_ranking(keep, order)
    projection, totals, _ = refinement_statistics(candidates.__getitem__, list(candidates), energy)
    alarms = None if negatives is None else class_totals(negatives.__getitem__, list(negatives), projection)
    return {image_id: refine_image(*candidates[image_id], projection, totals, keep, order, alarms)
            for image_id in candidates}
