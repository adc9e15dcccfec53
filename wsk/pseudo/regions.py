"""Per-pixel arithmetic of Eq. 2 and Eq. 5 on proposals stored as unions of superpixels.

A ``wsk.proposals.Proposals`` holds an ``(H, W)`` superpixel map and, per region, the
superpixels it covers (CSR). Means of masks (Eq. 2), unions (Eq. 5's top regions) and
region means of a map (Eq. 5's second term) are computed per superpixel and mapped back
to pixels, never by stacking ``P`` full-size masks.
"""

import numpy as np

from wsk.errors import WskError
from wsk.proposals.container import Proposals


def mean_mask(proposals, indices):
    """``(H, W)`` float64 pixel-wise mean of the masks of regions ``indices``.

    A pixel's value is the number of those regions covering it divided by their number
    (Eq. 2's sum over the refined proposals divided by their count); zeros when empty.
    """
    indices = np.asarray(indices, dtype=np.int64).ravel()
    if len(indices) == 0:
        return np.zeros(proposals.shape)
    counts = proposals.membership(indices).sum(axis=0, dtype=np.float64)
    return (counts / len(indices))[proposals.superpixels]


def union_mask(proposals, indices):
    """``(H, W)`` bool union of the masks of regions ``indices``."""
    indices = np.asarray(indices, dtype=np.int64).ravel()
    if len(indices) == 0:
        return np.zeros(proposals.shape, bool)
    return proposals.membership(indices).any(axis=0)[proposals.superpixels]


def region_means(proposals, values):
    """``(P,)`` float64 mean of an ``(H, W)`` map over each region (0 for an empty region).

    Per-superpixel sums of the map (``np.bincount`` over the superpixel map) are summed over
    each region's superpixels through the CSR membership and divided by the region's area.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.shape != tuple(proposals.shape):
        raise WskError(f"a map of shape {values.shape} does not fit proposals of shape "
                       f"{tuple(proposals.shape)}")
    per_superpixel = np.bincount(proposals.superpixels.ravel(), weights=values.ravel(),
                                 minlength=proposals.num_superpixels)
    sums = proposals.region_sums(per_superpixel)
    areas = proposals.areas.astype(np.float64)
    return np.divide(sums, areas, out=np.zeros_like(sums), where=areas > 0)


def proposals_from_masks(masks, scores=None):
    """``Proposals`` of ``(P, H, W)`` boolean masks (in rank order).

    Pixels covered by exactly the same set of masks form one superpixel, so every mask is
    an exact union of superpixels. Used for hand-made or imported mask proposals.
    """
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise WskError(f"masks must be (regions, height, width), got shape {masks.shape}")
    count, height, width = masks.shape
    flat = masks.reshape(count, -1)
    _, first, inverse = np.unique(np.packbits(flat.T, axis=1), axis=0, return_index=True,
                                  return_inverse=True)
    superpixels = inverse.reshape(height, width)
    regions = [np.flatnonzero(flat[i, first]) for i in range(count)]
    return Proposals.from_regions(superpixels, regions, scores)
