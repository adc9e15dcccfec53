"""Cross-image contextual refinement (§3.2, Eq. 1).

Candidates of one class are compared with the candidates of the *other* images that
share the label. With ``x`` a candidate of image ``i`` and image ``i'`` holding
``n_{i'}`` candidates ``y``, Eq. 1 averages over the other images

    dis(x) = 1/(N-1) * sum_{i' != i} 1/n_{i'} * sum_y ||x - y||^2.

Because ``1/n * sum_y ||x - y||^2 = ||x||^2 - 2 x . mean_{i'} + meansq_{i'}`` (``mean`` the
mean vector, ``meansq`` the mean squared norm of image ``i'``'s candidates), the sum over
the other images only needs the class-wide sums of those per-image statistics minus the
image's own: the cost is linear in the number of candidates, not quadratic.

The same algebra lets the refinement stream over a dataset's scores files (``refine_stream``):
the PCA is fitted from the accumulated first and second moments of the features
(``Moments``, ``pca_from_moments``), and Eq. 1 needs per class only the number of images with
candidates, the sum of their means and the sum of their mean squared norms
(``ClassTotals``). Memory is then ``O(D^2 + classes x d)``, whatever the number of candidates,
and no more than one image's candidates are held at a time.
"""

import dataclasses
import math

import numpy as np
from sklearn.decomposition import PCA

from wsk.errors import WskError
from wsk.recipes import ORDERS, PseudoConfig



def reduce_features(features, energy=PseudoConfig.pca_energy):
    """Project ``(N, D)`` candidate features on the principal components keeping ``energy``.

    §3.2: PCA fitted once over all candidates keeps the fewest leading components whose
    explained variance is at least (scikit-learn: more than) ``energy`` of the total.
    Returns the ``(N, d)`` projections (float32 input stays float32, anything else is
    float64). With fewer than two candidates, or features without variance, there is
    nothing to fit and the features are returned as they are (distances, all Eq. 1 needs,
    are then unchanged).
    """
    features = np.asarray(features)
    if features.dtype != np.float32:
        features = features.astype(np.float64)
    if features.ndim != 2:
        raise WskError(f"features must be (candidates, dimensions), got shape {features.shape}")
    if not 0.0 < energy < 1.0:
        raise WskError(f"PCA energy must lie in (0, 1), got {energy}")
    n, dim = features.shape
    if n < 2 or dim < 2 or not np.any(features.var(axis=0) > 0):
        return features
    # covariance_eigh works on the D x D covariance: fast when candidates outnumber dimensions.
    solver = "covariance_eigh" if n > dim else "full"
    pca = PCA(n_components=energy, svd_solver=solver)
    return pca.fit_transform(features)


def eq1_distances(features_by_image):
    """Eq. 1 for every candidate of one class, in closed form.

    ``features_by_image`` maps image id -> ``(n_i, D)`` features of that image's candidates
    for the class. Images without candidates are left out (Eq. 1 divides by ``n_{i'}``), so
    ``N`` counts the images with at least one candidate. Returns image id -> ``(n_i,)``
    float64 distances, or ``None`` for every image when ``N < 2`` (no other image to compare).
    """
    stats = {}
    for image_id, feats in features_by_image.items():
        feats = np.asarray(feats, dtype=np.float64)
        if feats.ndim != 2:
            raise WskError(f"features of image {image_id} must be (candidates, dimensions), "
                           f"got shape {feats.shape}")
        if len(feats):
            sq = np.einsum("ij,ij->i", feats, feats)
            stats[image_id] = (feats, sq, feats.mean(axis=0), sq.mean())
    if len(stats) < 2:
        return {image_id: None for image_id in features_by_image}
    dims = {s[0].shape[1] for s in stats.values()}
    if len(dims) != 1:
        raise WskError(f"candidate features of one class differ in dimension: {sorted(dims)}")
    total_mean = sum(s[2] for s in stats.values())
    total_meansq = sum(s[3] for s in stats.values())
    others = len(stats) - 1
    out = {}
    for image_id in features_by_image:
        if image_id not in stats:
            out[image_id] = np.zeros(0)
            continue
        feats, sq, mean, meansq = stats[image_id]
        other_mean = (total_mean - mean) / others
        other_meansq = (total_meansq - meansq) / others
        out[image_id] = sq - 2.0 * feats @ other_mean + other_meansq
    return out


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
    if order not in ORDERS:
        raise WskError(f"refinement order must be one of {', '.join(ORDERS)}, got {order!r}")
    distances = np.asarray(distances, dtype=np.float64)
    count = math.ceil(keep * len(distances))
    key = distances if order == "closest" else -distances
    return np.argsort(key, kind="stable")[:count].astype(np.int64)


def cross_image_refinement(features_by_image, keep=PseudoConfig.refine_keep, order=PseudoConfig.refine_order):
    """Refine the candidates of every class across images (§3.2, Eq. 1).

    ``features_by_image`` is ``{class_index: {image_id: (n_i, D) features}}``: for each class,
    the (PCA-reduced) features of each image's candidates for that class, rows in the
    image's candidate order. Returns ``{class_index: {image_id: kept row indices}}``: for
    each image, the rows (int64, best first) of its ``ceil(keep * n_i)`` candidates ranked
    by Eq. 1 in ``order`` ("closest" or "farthest", see ``rank_and_keep``). A class whose
    candidates all come from one image has no other image to compare with: that image keeps
    every candidate. An image with no candidate keeps none.
    """
    if not 0.0 < keep <= 1.0:
        raise WskError(f"the kept fraction must lie in (0, 1], got {keep}")
    if order not in ORDERS:
        raise WskError(f"refinement order must be one of {', '.join(ORDERS)}, got {order!r}")
    kept = {}
    for class_index, per_image in features_by_image.items():
        distances = eq1_distances(per_image)
        kept[class_index] = {}
        for image_id, feats in per_image.items():
            dist = distances[image_id]
            if dist is None:
                kept[class_index][image_id] = np.arange(len(feats), dtype=np.int64)
            else:
                kept[class_index][image_id] = rank_and_keep(dist, keep, order)
    return kept


# --- streaming: moments, PCA from them, class totals (the same Eq. 1, one image at a time) -------

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
    """The ``Projection`` of ``reduce_features`` (§3.2), fitted from ``Moments`` alone.

    The fewest leading eigenvectors of the covariance whose explained variance exceeds
    ``energy`` of the total (scikit-learn's rule for a float ``n_components``). None when there
    is nothing to fit (fewer than two rows or dimensions, no variance): features are then used
    as they are, as ``reduce_features`` does.
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

    def distances(self, label, features, own):
        """Eq. 1 for one image's ``(n, d)`` candidates of ``label`` whose statistics are ``own``
        (``image_statistics``); None when no other image has candidates of ``label``."""
        others = self.images.get(label, 0) - 1
        if others < 1:
            return None
        mean, meansq = own
        other_mean = (self.means[label] - mean) / others
        other_meansq = (self.meansq[label] - meansq) / others
        features = np.asarray(features, dtype=np.float64)
        return np.einsum("ij,ij->i", features, features) - 2.0 * features @ other_mean + other_meansq


def refine_image(features, labels, projection, totals, keep=PseudoConfig.refine_keep,
                 order=PseudoConfig.refine_order):
    """``{label: kept candidate rows, best first}`` of one image (§3.2), from the dataset's
    ``projection`` and ``totals``: what ``cross_image_refinement`` keeps for it."""
    labels = np.asarray(labels)
    if not len(labels):
        return {}
    reduced = reduce_with(projection, features)
    own = image_statistics(reduced, labels)
    kept = {}
    for label, stats in own.items():
        rows = np.flatnonzero(labels == label)
        dist = totals.distances(label, reduced[rows], stats)
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
    totals = ClassTotals()
    for image_id in ids:
        features, labels = read(image_id)
        if len(labels):
            totals.add(image_statistics(reduce_with(projection, features), labels))
    return projection, totals, dims
