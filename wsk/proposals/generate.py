"""Segment proposals by hierarchical grouping (selective-search style), fast and in NumPy.

The paper scores about 2,000 MCG proposals per image (§3.1) and builds localization maps and
rough masks from their regions (§3.3). ``generate`` makes comparable segment proposals:

1. Over-segment the image with Felzenszwalb's graph method (scikit-image) at several
   scales; the finest is the *base* superpixel map that the ``Proposals`` container
   stores, and every coarser over-segmentation is expressed as unions of base superpixels
   (each base superpixel goes to the coarse segment holding most of its pixels).
2. For every *strategy* (an over-segmentation, a colour space and a similarity measure),
   greedily merge the most similar pair of adjacent regions until one region is left;
   every region ever formed is a proposal. Similarity is a weighted sum of colour-histogram
   intersection (25 bins per channel), texture intersection (gradient-orientation
   histograms: 8 orientations x 10 magnitudes per channel), size (small regions merge
   first) and fill (regions whose box they fill merge first).
3. Rank as selective search does: a region's position in its hierarchy (1 for the whole
   image) times a random number, lowest first; identical regions found by several
   strategies are kept once; the first ``max_proposals`` are returned.

All randomness comes from ``seed``, so the result is deterministic.
"""

import dataclasses
import heapq

import cv2
import numpy as np
from skimage.segmentation import felzenszwalb

from wsk.proposals.container import Proposals, superpixel_boxes
from wsk.proposals.features import (COLOUR_BINS, MAGNITUDE_BINS, ORIENTATIONS, adjacency, colour_bins,
                                    colour_space, region_histograms, texture_bins, unique_pairs)
from wsk.recipes import PseudoConfig

REFERENCE_AREA = 500 * 375  # image size the Felzenszwalb scales below are tuned for

# Similarity measures as weights of (colour, texture, size, fill).
SIMILARITIES = {
    "CTSF": (1.0, 1.0, 1.0, 1.0),
    "TSF": (0.0, 1.0, 1.0, 1.0),
    "CSF": (1.0, 0.0, 1.0, 1.0),
    "CS": (1.0, 0.0, 1.0, 0.0),
    "F": (0.0, 0.0, 0.0, 1.0),
    "S": (0.0, 0.0, 1.0, 0.0),
}


@dataclasses.dataclass(frozen=True)
class Strategy:
    """One hierarchy: which over-segmentation (index into ``scales``), colour space, similarity."""

    scale: int
    colour: str
    similarity: str


def default_strategies():
    """The diversification used by ``generate``: 3 scales x colour spaces x similarity measures."""
    strategies = []
    for scale in (0, 1, 2):
        for colour in ("hsv", "lab", "rgi"):
            for similarity in ("CTSF", "TSF"):
                strategies.append(Strategy(scale, colour, similarity))
    return tuple(strategies)


DEFAULT_SCALES = (50.0, 150.0, 300.0)
COARSE_AREA = REFERENCE_AREA // 4  # coarser over-segmentations run at most at this size


# ---------------------------------------------------------------------------------------------
# over-segmentation
# ---------------------------------------------------------------------------------------------
def oversegment(image, scale, sigma=0.8, max_area=None):
    """Felzenszwalb-Huttenlocher superpixels (scikit-image) ``(H, W)`` int64 with ids ``0..n-1``.

    ``scale`` is for a 500 x 375 image; smaller images use a proportionally smaller scale and
    minimum segment size, so that a 64-pixel image still gets a few dozen superpixels.
    With ``max_area``, a larger image is segmented at a reduced size (same relative scale)
    and the labels are enlarged back with nearest-neighbour interpolation.
    """
    height, width = image.shape[:2]
    if max_area is not None and height * width > max_area:
        shrink = (max_area / (height * width)) ** 0.5
        small = cv2.resize(image, (max(2, round(width * shrink)), max(2, round(height * shrink))),
                           interpolation=cv2.INTER_AREA)
        labels = oversegment(small, scale, sigma)
        return cv2.resize(labels.astype(np.int32), (width, height),
                          interpolation=cv2.INTER_NEAREST).astype(np.int64)
    area = image.shape[0] * image.shape[1]
    factor = min(1.0, area / REFERENCE_AREA) ** 0.5
    effective = max(scale * factor, 1.0)
    min_size = max(int(round(effective)), 4)
    labels = felzenszwalb(image, scale=effective, sigma=sigma, min_size=min_size)
    return compact_labels(labels)


def compact_labels(labels):
    """Relabel an integer map so that its ids are ``0..n-1`` (order kept)."""
    labels = np.asarray(labels, np.int64)
    present = np.bincount(labels.ravel()) > 0
    table = np.cumsum(present) - 1
    return table[labels]


def majority_assignment(base, coarse, num_base):
    """For every base superpixel, the coarse segment holding most of its pixels, relabelled ``0..n-1``."""
    num_coarse = int(coarse.max()) + 1
    counts = np.bincount(base.ravel() * num_coarse + coarse.ravel(), minlength=num_base * num_coarse)
    return compact_labels(counts.reshape(num_base, num_coarse).argmax(axis=1))


# ---------------------------------------------------------------------------------------------
# hierarchical grouping
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Hierarchy:
    """The regions one strategy formed: initial regions ``0..n-1``, then one per merge.

    ``order`` lists the base superpixels so that region ``t`` covers
    ``order[start[t]:start[t] + count[t]]``; ``boxes`` (T, 4) are the regions' boxes.
    """

    order: np.ndarray
    start: np.ndarray
    count: np.ndarray
    boxes: np.ndarray


def _region_table(colour, texture, sizes, boxes, weights, total):
    """Room for all ``total`` regions, the first ``n`` filled: ``(hist, size, box)``.

    The weighted histogram intersections add up to one intersection of the joined (weighted)
    histograms; boxes are kept as ``(x0, y0, -x1, -y1)`` so that the box around two regions is
    their element-wise minimum.
    """
    n = len(sizes)
    w_colour, w_texture = weights[:2]
    parts = [w * h for w, h in ((w_colour, colour), (w_texture, texture)) if w]
    hist = np.zeros((total, sum(p.shape[1] for p in parts)), np.float32)
    if parts:
        hist[:n] = np.concatenate(parts, axis=1)
    size = np.zeros(total, np.float64)
    size[:n] = sizes
    box = np.zeros((total, 4), np.float64)
    box[:n] = np.asarray(boxes) * np.array([1, 1, -1, -1])
    return hist, size, box


def _merge_neighbours(neighbours, i, j, t):
    """Regions ``i`` and ``j`` become region ``t``: its neighbours are theirs, who now neighbour ``t``."""
    nbrs = neighbours[i] | neighbours[j]
    nbrs.discard(i)
    nbrs.discard(j)
    for k in nbrs:
        nk = neighbours[k]
        nk.discard(i)
        nk.discard(j)
        nk.add(t)
    neighbours.append(nbrs)
    neighbours[i] = neighbours[j] = None
    return nbrs


def group(colour, texture, sizes, boxes, pairs, weights, image_area):
    """Greedy hierarchical grouping of ``n`` initial regions; returns ``(left, right)`` children
    of each merged region ``n + k`` and the boxes ``(T, 4)`` of all regions.

    ``colour`` (n, Bc) and ``texture`` (n, Bt) are L1-normalised histograms, ``sizes`` (n,)
    pixel counts, ``boxes`` (n, 4), ``pairs`` (M, 2) adjacent regions, ``weights`` the
    (colour, texture, size, fill) weights of the similarity
    ``s = wc * sum min(Ci, Cj) + wt * sum min(Ti, Tj) + ws * (1 - (|ri| + |rj|) / A)
    + wf * (1 - (|Bij| - |ri| - |rj|) / A)`` with ``Bij`` the box around both regions.
    """
    n = len(sizes)
    total = 2 * n - 1
    _, _, w_size, w_fill = weights
    hist, size, box = _region_table(colour, texture, sizes, boxes, weights, total)
    inv_area = 1.0 / image_area
    constant = w_size + w_fill

    def similarity(i, others):
        """s of region(s) ``i`` with each of ``others`` (index arrays, or one index and an array)."""
        score = constant - (w_size + w_fill) * (size[i] + size[others]) * inv_area
        if hist.shape[1]:
            score += np.minimum(hist[i], hist[others]).sum(axis=1)
        if w_fill:
            union = np.minimum(box[i], box[others])
            score -= w_fill * ((union[:, 2] + union[:, 0]) * (union[:, 3] + union[:, 1])) * inv_area
        return score

    a, b = pairs[:, 0], pairs[:, 1]
    heap = list(zip((-similarity(a, b)).tolist(), a.tolist(), b.tolist()))
    heapq.heapify(heap)
    neighbours = [set() for _ in range(n)]
    for i, j in zip(a.tolist(), b.tolist()):
        neighbours[i].add(j)
        neighbours[j].add(i)

    alive = [True] * n + [False] * (total - n)
    left = np.zeros(max(n - 1, 0), np.int64)
    right = np.zeros(max(n - 1, 0), np.int64)
    t = n
    pop, push = heapq.heappop, heapq.heappush
    while heap:
        _, i, j = pop(heap)
        if not (alive[i] and alive[j]):
            continue
        si, sj = size[i], size[j]
        s = si + sj
        hist[t] = (hist[i] * si + hist[j] * sj) / s
        size[t] = s
        box[t] = np.minimum(box[i], box[j])
        alive[i] = alive[j] = False
        alive[t] = True
        nbrs = _merge_neighbours(neighbours, i, j, t)
        left[t - n], right[t - n] = i, j
        if nbrs:
            others = list(nbrs)
            for k, value in zip(others, similarity(t, others).tolist()):
                push(heap, (-value, t, k))
        t += 1
    return left[:t - n], right[:t - n], (box[:t] * np.array([1, 1, -1, -1])).astype(np.int64)


def hierarchy_layout(assignment, left, right, n):
    """Order the base superpixels so that every region of the merge tree is a contiguous run.

    ``assignment`` maps base superpixels to the ``n`` initial regions; returns ``Hierarchy``
    fields ``order``, ``start``, ``count`` for all ``n + len(left)`` regions.
    """
    total = n + len(left)
    count = np.zeros(total, np.int64)
    count[:n] = np.bincount(assignment, minlength=n)
    for k in range(len(left)):
        count[n + k] = count[left[k]] + count[right[k]]
    start = np.zeros(total, np.int64)
    # roots (regions never merged) are laid side by side; children follow their parent
    merged_child = np.zeros(total, bool)
    merged_child[left] = True
    merged_child[right] = True
    offset = 0
    for root in np.flatnonzero(~merged_child)[::-1].tolist():
        start[root] = offset
        offset += count[root]
    for k in range(len(left) - 1, -1, -1):
        parent = n + k
        start[left[k]] = start[parent]
        start[right[k]] = start[parent] + count[left[k]]
    order = np.argsort(start[assignment], kind="stable")
    return order, start, count


# ---------------------------------------------------------------------------------------------
# the whole generator
# ---------------------------------------------------------------------------------------------
def generate(image, max_proposals=PseudoConfig.max_proposals, scales=DEFAULT_SCALES, strategies=None, seed=0, sigma=0.8,
             coarse_area=COARSE_AREA):
    """Segment proposals of an RGB image: a ``Proposals`` with at most ``max_proposals`` regions.

    ``scales`` are Felzenszwalb scales (the first, finest, gives the stored superpixel map),
    ``strategies`` a sequence of ``Strategy`` (default ``default_strategies()``); ranking
    mixes the strategies' hierarchies with random weights drawn from ``seed``.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 2:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    strategies = tuple(default_strategies() if strategies is None else strategies)
    rng = np.random.default_rng(seed)
    height, width = image.shape[:2]
    area = float(height * width)

    base = oversegment(image, scales[0], sigma)
    num_base = int(base.max()) + 1
    base_sizes = np.bincount(base.ravel(), minlength=num_base).astype(np.float64)
    base_boxes = superpixel_boxes(base, num_base).astype(np.int64)
    base_pairs = adjacency(base)

    colours = sorted({s.colour for s in strategies})
    features = {}
    for name in colours:
        channels = colour_space(image, name)
        features[name] = (region_histograms(base, colour_bins(channels), num_base, 3 * COLOUR_BINS),
                          region_histograms(base, texture_bins(channels), num_base,
                                            3 * ORIENTATIONS * MAGNITUDE_BINS))

    if max(s.scale for s in strategies) >= len(scales):
        raise ValueError(f"a strategy names scale {max(s.scale for s in strategies)} of only {len(scales)}")
    assignments = {}
    for index in sorted({s.scale for s in strategies}):
        if index == 0:
            assignments[0] = np.arange(num_base)
        else:
            coarse = oversegment(image, scales[index], sigma, max_area=coarse_area)
            assignments[index] = majority_assignment(base, coarse, num_base)

    hierarchies = [build_hierarchy(assignments[strategy.scale], features[strategy.colour], base_sizes,
                                   base_boxes, base_pairs, SIMILARITIES[strategy.similarity], area)
                   for strategy in strategies]
    return rank_regions(base, hierarchies, max_proposals, rng)


def build_hierarchy(assignment, features, base_sizes, base_boxes, base_pairs, weights, image_area):
    """Group the initial regions given by ``assignment`` (base superpixel -> region) into a
    ``Hierarchy``; ``features`` are the base superpixels' (colour, texture) histogram counts."""
    n = int(assignment.max()) + 1
    sizes = np.bincount(assignment, weights=base_sizes, minlength=n)
    colour, texture = (_aggregate(h, assignment, n) for h in features)
    colour /= np.maximum(colour.sum(axis=1, keepdims=True), 1e-12)
    texture /= np.maximum(texture.sum(axis=1, keepdims=True), 1e-12)
    pairs = assignment[base_pairs]
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    pairs = unique_pairs(pairs.min(axis=1) * n + pairs.max(axis=1), n)
    left, right, boxes = group(colour, texture, sizes, _aggregate_boxes(base_boxes, assignment, n), pairs,
                               weights, image_area)
    order, start, count = hierarchy_layout(assignment, left, right, n)
    return Hierarchy(order, start, count, boxes)


def rank_regions(base, hierarchies, max_proposals, rng):
    """Mix the hierarchies' regions into one ranked, duplicate-free ``Proposals`` on ``base``.

    A region's priority is its position in its hierarchy counted from the top (the last merge
    is 1) times a uniform random number; lowest first, as selective search ranks. Identical
    regions are recognised by the sum of random 64-bit codes of their superpixels.
    """
    num_base = int(base.max()) + 1
    sp_hash = rng.integers(0, np.iinfo(np.uint64).max, size=num_base, dtype=np.uint64, endpoint=True)
    offsets = np.cumsum([0] + [len(h.order) for h in hierarchies])
    order = np.concatenate([h.order for h in hierarchies])
    start = np.concatenate([h.start + offset for h, offset in zip(hierarchies, offsets)])
    count = np.concatenate([h.count for h in hierarchies])
    box = np.concatenate([h.boxes for h in hierarchies])
    priority = np.concatenate([(len(h.count) - np.arange(len(h.count))) * rng.random(len(h.count))
                               for h in hierarchies])

    cums = np.concatenate([[np.uint64(0)], np.cumsum(sp_hash[order], dtype=np.uint64)])
    with np.errstate(over="ignore"):
        key = cums[start + count] - cums[start]
    ranked = np.argsort(priority, kind="stable")
    _, first = np.unique(key[ranked], return_index=True)
    kept = ranked[np.sort(first)][:max_proposals]

    lengths = count[kept]
    ptr = np.zeros(len(kept) + 1, np.int64)
    np.cumsum(lengths, out=ptr[1:])
    within = np.arange(ptr[-1]) - np.repeat(ptr[:-1], lengths)
    members = order[np.repeat(start[kept], lengths) + within]
    # each region's superpixels sorted, as the container documents
    members = members[np.lexsort((members, np.repeat(np.arange(len(kept)), lengths)))]
    scores = 1.0 - np.arange(len(kept), dtype=np.float32) / max(len(kept), 1)
    return Proposals(base, ptr, members, box[kept], scores)


def _aggregate(per_base, assignment, n):
    """Sum of per-base-superpixel rows within each initial region: ``(n, D)``."""
    if n == len(assignment):
        out = np.zeros_like(per_base)
        out[assignment] = per_base
        return out
    order = np.argsort(assignment, kind="stable")
    starts = np.searchsorted(assignment[order], np.arange(n))
    return np.add.reduceat(per_base[order], starts, axis=0)


def _aggregate_boxes(base_boxes, assignment, n):
    """Union of base-superpixel boxes within each initial region: ``(n, 4)``."""
    order = np.argsort(assignment, kind="stable")
    starts = np.searchsorted(assignment[order], np.arange(n))
    sorted_boxes = base_boxes[order]
    out = np.empty((n, 4), np.int64)
    out[:, :2] = np.minimum.reduceat(sorted_boxes[:, :2], starts, axis=0)
    out[:, 2:] = np.maximum.reduceat(sorted_boxes[:, 2:], starts, axis=0)
    return out
