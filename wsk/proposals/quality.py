"""Proposal quality: average best overlap (ABO) and recall against ground-truth objects.

For every ground-truth object the *best overlap* is the highest IoU that any proposal mask
reaches with it; ABO averages it over objects and recall counts the objects whose best
overlap reaches 0.5. Pixels labelled 255 (object borders in VOC) count in neither the
object nor the proposal. Both follow from superpixel-level intersection counts, so the
IoUs of thousands of proposals with every object cost one sparse product.
"""

import numpy as np
from scipy import ndimage

from wsk.classes import IGNORE_LABEL

DEFAULT_COUNTS = (100, 500, 1000, 2000)
RECALL_IOU = 0.5


def objects_from_instances(instance_map, class_map, ignore=IGNORE_LABEL):
    """Ground-truth objects of a ``SegmentationObject`` map: ``(masks (O, H, W) bool, classes (O,))``.

    Each instance id (not 0, not ``ignore``) is an object; its class is the most frequent
    class of ``class_map`` under it (background instances are dropped).
    """
    instance_map = np.asarray(instance_map)
    class_map = np.asarray(class_map)
    masks, classes = [], []
    for instance in np.unique(instance_map):
        if instance in (0, ignore):
            continue
        mask = instance_map == instance
        labels = class_map[mask]
        labels = labels[(labels != ignore) & (labels != 0)]
        if labels.size == 0:
            continue
        masks.append(mask)
        classes.append(int(np.bincount(labels).argmax()))
    return _stack(masks, class_map.shape), np.array(classes, np.int64)


def objects_from_classes(class_map, min_fraction=0.002, ignore=IGNORE_LABEL):
    """Ground-truth objects from a class map alone: the 8-connected components of every object
    class, ``(masks (O, H, W) bool, classes (O,))``.

    Components smaller than ``min_fraction`` of the image are dropped: without instance maps,
    slivers cut off an object by its ignore border (or by resizing) are not objects.
    """
    class_map = np.asarray(class_map)
    minimum = min_fraction * class_map.size
    masks, classes = [], []
    for cls in np.unique(class_map):
        if cls in (0, ignore):
            continue
        components, count = ndimage.label(class_map == cls, structure=np.ones((3, 3), bool))
        sizes = np.bincount(components.ravel(), minlength=count + 1)
        for component in range(1, count + 1):
            if sizes[component] >= max(minimum, 1):
                masks.append(components == component)
                classes.append(int(cls))
    return _stack(masks, class_map.shape), np.array(classes, np.int64)


def _stack(masks, shape):
    return np.stack(masks) if masks else np.zeros((0,) + tuple(shape), bool)


def overlaps(proposals, object_masks, valid=None):
    """IoU ``(P, O)`` of every proposal with every object mask, counting only ``valid`` pixels.

    Computed from superpixel counts: ``|r ∩ o| = sum over the superpixels s of r of |s ∩ o|``.
    """
    object_masks = np.asarray(object_masks, bool)
    sp = proposals.superpixels
    num_sp = proposals.num_superpixels
    if object_masks.shape[1:] != sp.shape:
        raise ValueError(f"object masks {object_masks.shape[1:]} and proposals {sp.shape} differ in size")
    valid = np.ones(sp.shape, bool) if valid is None else np.asarray(valid, bool)
    flat = sp[valid]
    valid_area = np.bincount(flat, minlength=num_sp).astype(np.float64)
    object_sp = np.stack([np.bincount(flat, weights=m[valid], minlength=num_sp) for m in object_masks]) \
        if len(object_masks) else np.zeros((0, num_sp))
    incidence = proposals.sparse_membership()
    intersection = np.asarray(incidence @ object_sp.T)           # (P, O)
    region_area = np.asarray(incidence @ valid_area).ravel()      # (P,)
    object_area = object_sp.sum(axis=1)                           # (O,)
    union = region_area[:, None] + object_area[None, :] - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def best_overlaps(proposals, object_masks, valid=None, counts=DEFAULT_COUNTS):
    """Best IoU of each object among the first ``n`` proposals, for each ``n`` in ``counts``:
    ``(len(counts), O)`` (proposals are stored in rank order)."""
    iou = overlaps(proposals, object_masks, valid)
    if iou.shape[0] == 0:
        return np.zeros((len(counts), iou.shape[1]))
    running = np.maximum.accumulate(iou, axis=0)
    rows = [min(n, len(iou)) - 1 for n in counts]
    return running[rows]


class QualityReport:
    """Accumulates best overlaps per object and class; ``summary()`` gives ABO and recall."""

    def __init__(self, class_names, counts=DEFAULT_COUNTS):
        self.class_names = tuple(class_names)
        self.counts = tuple(int(n) for n in counts)
        self._best = []     # (len(counts), O) per image
        self._classes = []  # (O,) per image
        self.proposals_per_image = []
        self.skipped = []   # ids of images without ground truth

    def add(self, proposals, object_masks, object_classes, valid=None):
        """Add one image's proposals and ground-truth objects."""
        self._best.append(best_overlaps(proposals, object_masks, valid, self.counts))
        self._classes.append(np.asarray(object_classes, np.int64))
        self.proposals_per_image.append(len(proposals))

    @property
    def best(self):
        """``(len(counts), O)`` best overlaps of all objects added so far."""
        return np.concatenate(self._best, axis=1) if self._best else np.zeros((len(self.counts), 0))

    @property
    def classes(self):
        return np.concatenate(self._classes) if self._classes else np.zeros(0, np.int64)

    def summary(self):
        """Dict: ``overall`` and ``per_class`` (name -> ``{objects, abo: {n: v}, recall: {n: v}}``)."""
        best, classes = self.best, self.classes

        def stats(columns):
            chosen = best[:, columns]
            return {
                "objects": int(chosen.shape[1]),
                "abo": {str(n): float(chosen[k].mean()) if chosen.shape[1] else None
                        for k, n in enumerate(self.counts)},
                "recall": {str(n): float((chosen[k] >= RECALL_IOU).mean()) if chosen.shape[1] else None
                           for k, n in enumerate(self.counts)},
            }

        per_class = {}
        for cls in np.unique(classes):
            name = self.class_names[cls] if cls < len(self.class_names) else str(cls)
            per_class[name] = stats(classes == cls)
        per_image = np.asarray(self.proposals_per_image, np.float64)
        return {"overall": stats(np.ones(len(classes), bool)), "per_class": per_class,
                "images": len(self.proposals_per_image),
                "mean_proposals": float(per_image.mean()) if per_image.size else 0.0}

    def format(self):
        """A text table: a row per class then ``overall``, ABO and recall at each count."""
        summary = self.summary()
        head = ["class", "objects"] + [f"ABO@{n}" for n in self.counts] + [f"R@{n}" for n in self.counts]
        rows = [head]
        items = list(summary["per_class"].items()) + [("overall", summary["overall"])]
        for name, entry in items:
            cells = [name, str(entry["objects"])]
            for key in ("abo", "recall"):
                cells += ["-" if entry[key][str(n)] is None else f"{entry[key][str(n)]:.3f}" for n in self.counts]
            rows.append(cells)
        widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
        lines = ["  ".join(cell.rjust(w) if c else cell.ljust(w) for c, (cell, w) in enumerate(zip(r, widths)))
                 for r in rows]
        lines.append(f"{summary['images']} images, {summary['mean_proposals']:.0f} proposals per image on average")
        return "\n".join(lines)
