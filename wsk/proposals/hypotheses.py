"""Hypotheses for HCP training (§3.1, following HCP [30]): m diverse boxes per image.

HCP trains on a few hypotheses per image rather than all proposals: proposals with a tiny
area or an extreme aspect ratio are dropped, the remaining boxes are grouped by
normalised cut on their IoU affinity into ``m`` clusters, and the best-ranked proposal of
each cluster is kept.
"""

import warnings

import numpy as np
from sklearn.cluster import SpectralClustering

from wsk.recipes import HCPRecipe

MIN_AREA_FRACTION = 900 / (500 * 375)  # HCP drops boxes under 900 pixels on ~500 x 375 images
MAX_ASPECT = 4.0                       # ... and boxes more than 4 times longer than wide
MAX_CANDIDATES = 500                   # only the best-ranked proposals enter the clustering


def box_iou(boxes_a, boxes_b):
    """IoU ``(A, B)`` of boxes ``x0, y0, x1, y1`` (exclusive ends)."""
    a = np.asarray(boxes_a, np.float64)[:, None, :]
    b = np.asarray(boxes_b, np.float64)[None, :, :]
    width = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    height = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = width * height
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def usable_hypotheses(boxes, image_shape, min_area_fraction=MIN_AREA_FRACTION, max_aspect=MAX_ASPECT):
    """Boolean ``(P,)``: boxes at least ``min_area_fraction`` of the image, aspect ratio at most ``max_aspect``."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    width = boxes[:, 2] - boxes[:, 0]
    height = boxes[:, 3] - boxes[:, 1]
    area = width * height
    aspect = np.maximum(width, height) / np.maximum(np.minimum(width, height), 1e-9)
    return (area >= min_area_fraction * image_shape[0] * image_shape[1]) & (aspect <= max_aspect) & (area > 0)


def cluster_boxes(boxes, m, seed=0):
    """Normalised-cut clusters (spectral clustering on the precomputed IoU affinity): ``(K,)`` labels."""
    affinity = box_iou(boxes, boxes)
    model = SpectralClustering(n_clusters=m, affinity="precomputed", random_state=seed,
                               assign_labels="discretize")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "graph is not fully connected" is expected for far-apart boxes
        return model.fit_predict(affinity)


def hypothesis_indices(proposals, m=HCPRecipe.hypotheses, seed=0, min_area_fraction=MIN_AREA_FRACTION, max_aspect=MAX_ASPECT,
                       max_candidates=MAX_CANDIDATES):
    """Indices ``(m,)`` of the proposals chosen as HCP hypotheses, best-ranked first; ``-1`` stands
    for the whole image, used when fewer than ``m`` usable proposals (or clusters) exist."""
    usable = np.flatnonzero(usable_hypotheses(proposals.boxes, proposals.shape, min_area_fraction, max_aspect))
    usable = usable[:max_candidates]  # proposals are stored in rank order
    if len(usable) <= m:
        chosen = list(usable)
    else:
        labels = cluster_boxes(proposals.boxes[usable], m, seed)
        chosen = sorted(int(usable[labels == c].min()) for c in np.unique(labels))
    chosen += [-1] * (m - len(chosen))
    return np.array(chosen, np.int64)


def select_hypotheses(proposals, m=HCPRecipe.hypotheses, seed=0, **options):
    """The ``(m, 4)`` int32 boxes HCP trains on: one best-ranked proposal per normalised-cut cluster,
    padded with the whole image ``(0, 0, W, H)`` when fewer exist (see ``hypothesis_indices``)."""
    indices = hypothesis_indices(proposals, m, seed, **options)
    height, width = proposals.shape
    boxes = np.tile(np.array([0, 0, width, height], np.int32), (m, 1))
    real = indices >= 0
    boxes[real] = proposals.boxes[indices[real]]
    return boxes
