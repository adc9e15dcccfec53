"""The ``Proposals`` container: segment proposals as unions of superpixels, and its ``.npz`` format.

A proposal set stores one superpixel map per image (``H x W`` integer ids ``0..S-1``) and,
for each ranked region, the superpixels it covers in compressed-sparse-row form
(``region_ptr`` of length ``P + 1`` into ``region_sp``), its box and its score. Region
masks, areas and superpixel-level overlaps (IoU with ground truth, §3.3) all follow from
these arrays without storing ``P`` full-size masks.

File format (``WORK/proposals/<id>.npz``, version ``FORMAT_VERSION``):

=================  ==============  =========================================================
``version``        () int32        format version
``superpixels``    (H, W) int32    superpixel id of every pixel, ``0..S-1``
``region_ptr``     (P + 1,) int64  region ``i`` covers ``region_sp[region_ptr[i]:region_ptr[i+1]]``
``region_sp``      (N,) int32      superpixel ids, each region's ids sorted and distinct
``boxes``          (P, 4) int32    ``x0, y0, x1, y1`` (inclusive-exclusive) of each region
``scores``         (P,) float32    ranking score, highest first (regions are stored in rank order)
``made_from``      () str          optional: JSON of what made the file (method, settings, the
                                   image's stamp); a stage reuses a file only when it matches
=================  ==============  =========================================================
"""

import json

import numpy as np
from scipy.sparse import csr_matrix

from wsk.errors import WskError
from wsk.io import load_npz, save_npz

FORMAT_VERSION = 1
_KEYS = ("version", "superpixels", "region_ptr", "region_sp", "boxes", "scores")


def superpixel_boxes(superpixels, num_superpixels=None):
    """Boxes ``(S, 4)`` int32 ``x0, y0, x1, y1`` (exclusive ends) of every superpixel id
    (an id with no pixel gets the empty box ``W, H, 0, 0``)."""
    superpixels = np.asarray(superpixels)
    height, width = superpixels.shape
    count = int(superpixels.max(initial=-1)) + 1 if num_superpixels is None else int(num_superpixels)
    flat = superpixels.ravel()
    order = np.argsort(flat, kind="stable")
    ids = flat[order]
    rows, cols = np.divmod(order, width)
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    boxes = np.empty((count, 4), np.int64)
    boxes[:] = (width, height, 0, 0)
    present = ids[starts]
    boxes[present, 0] = np.minimum.reduceat(cols, starts)
    boxes[present, 1] = np.minimum.reduceat(rows, starts)
    boxes[present, 2] = np.maximum.reduceat(cols, starts) + 1
    boxes[present, 3] = np.maximum.reduceat(rows, starts) + 1
    return boxes.astype(np.int32)


class Proposals:
    """Ranked segment proposals of one image, each a union of superpixels.

    ``superpixels`` (H, W) int32, ``region_ptr`` (P+1,) int64, ``region_sp`` (N,) int32,
    ``boxes`` (P, 4) int32 ``x0, y0, x1, y1``, ``scores`` (P,) float32 (regions in rank order).
    """

    def __init__(self, superpixels, region_ptr, region_sp, boxes, scores):
        self.superpixels = np.ascontiguousarray(superpixels, np.int32)
        self.region_ptr = np.ascontiguousarray(region_ptr, np.int64)
        self.region_sp = np.ascontiguousarray(region_sp, np.int32)
        self.boxes = np.ascontiguousarray(boxes, np.int32)
        if self.boxes.size == 0:
            self.boxes = self.boxes.reshape(0, 4)
        self.scores = np.ascontiguousarray(scores, np.float32)
        problem = self._check()
        if problem:
            raise WskError(f"inconsistent proposals: {problem}")
        self._sp_areas = None

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_regions(cls, superpixels, regions, scores=None):
        """Build from a superpixel map and a list of superpixel-id arrays (one per region, in
        rank order); boxes are computed, scores default to ``1 - rank / P``."""
        superpixels = np.asarray(superpixels)
        num_sp = int(superpixels.max(initial=-1)) + 1
        regions = [np.unique(np.asarray(r, np.int64)) for r in regions]
        lengths = np.array([len(r) for r in regions], np.int64)
        ptr = np.zeros(len(regions) + 1, np.int64)
        np.cumsum(lengths, out=ptr[1:])
        members = np.concatenate(regions) if regions else np.zeros(0, np.int64)
        boxes = regions_boxes(superpixel_boxes(superpixels, num_sp), ptr, members)
        if scores is None:
            scores = 1.0 - np.arange(len(regions), dtype=np.float32) / max(len(regions), 1)
        return cls(superpixels, ptr, members, boxes, scores)

    # -- accessors ----------------------------------------------------------------------
    def __len__(self):
        return len(self.region_ptr) - 1

    @property
    def shape(self):
        """``(H, W)`` of the image."""
        return self.superpixels.shape

    @property
    def num_superpixels(self):
        return int(self.superpixels.max(initial=-1)) + 1

    @property
    def superpixel_areas(self):
        """Pixels of every superpixel, ``(S,)`` int64."""
        if self._sp_areas is None:
            self._sp_areas = np.bincount(self.superpixels.ravel(), minlength=self.num_superpixels)
        return self._sp_areas

    @property
    def areas(self):
        """Pixels of every region, ``(P,)`` int64."""
        return self.region_sums(self.superpixel_areas)

    def region_sums(self, per_superpixel):
        """Sum of a per-superpixel quantity ``(S, ...)`` over each region's superpixels: ``(P, ...)``."""
        values = np.asarray(per_superpixel)
        if len(self) == 0:
            return np.zeros((0,) + values.shape[1:], values.dtype)
        gathered = values[self.region_sp]
        cums = np.concatenate([np.zeros((1,) + values.shape[1:], gathered.dtype),
                               np.cumsum(gathered, axis=0)])
        return cums[self.region_ptr[1:]] - cums[self.region_ptr[:-1]]

    def members(self, i):
        """Superpixel ids covered by region ``i``."""
        return self.region_sp[self.region_ptr[i]:self.region_ptr[i + 1]]

    def membership(self, indices=None):
        """Boolean ``(K, S)`` matrix: row ``k`` marks the superpixels of region ``indices[k]``."""
        indices = np.arange(len(self)) if indices is None else np.asarray(indices, np.int64).ravel()
        starts, ends = self.region_ptr[indices], self.region_ptr[indices + 1]
        lengths = ends - starts
        rows = np.repeat(np.arange(len(indices)), lengths)
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        table = np.zeros((len(indices), self.num_superpixels), bool)
        table[rows, self.region_sp[np.repeat(starts, lengths) + offsets]] = True
        return table

    def sparse_membership(self):
        """``scipy.sparse.csr_matrix`` ``(P, S)`` of ones: region-by-superpixel incidence."""
        data = np.ones(len(self.region_sp), np.float64)
        return csr_matrix((data, self.region_sp, self.region_ptr), shape=(len(self), self.num_superpixels))

    def mask(self, i):
        """Region ``i`` as a boolean ``(H, W)`` mask."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"proposal {i} out of range (there are {len(self)})")
        table = np.zeros(self.num_superpixels, bool)
        table[self.members(i % len(self))] = True
        return table[self.superpixels]

    def masks(self, indices=None):
        """Regions ``indices`` (default all) as a boolean ``(K, H, W)`` array."""
        return self.membership(indices)[:, self.superpixels]

    def subset(self, indices):
        """A new ``Proposals`` holding regions ``indices`` (in that order) on the same superpixels."""
        indices = np.asarray(indices, np.int64).ravel()
        parts = [self.members(i) for i in indices]
        lengths = np.array([len(p) for p in parts], np.int64)
        ptr = np.zeros(len(indices) + 1, np.int64)
        np.cumsum(lengths, out=ptr[1:])
        members = np.concatenate(parts) if parts else np.zeros(0, np.int32)
        return Proposals(self.superpixels, ptr, members, self.boxes[indices], self.scores[indices])

    # -- files --------------------------------------------------------------------------
    def save(self, path, made_from=None):
        """Write the ``.npz`` file atomically (format documented in this module); ``made_from``
        (a JSON-able dict) records the method, settings and input it was computed from."""
        extra = {} if made_from is None else {"made_from": np.array(json.dumps(made_from, sort_keys=True))}
        save_npz(path, version=np.int32(FORMAT_VERSION), superpixels=self.superpixels,
                 region_ptr=self.region_ptr, region_sp=self.region_sp, boxes=self.boxes,
                 scores=self.scores, **extra)

    @staticmethod
    def made_from(path):
        """The ``made_from`` record of a proposals file (a dict), or None when it has none or is
        unreadable."""
        try:
            arrays = load_npz(path, required=("made_from",))
        except WskError:
            return None
        return json.loads(str(arrays["made_from"]))

    @classmethod
    def load(cls, path):
        """Read a file written by ``save``; a damaged or foreign file is a ``WskError`` naming it."""
        return cls.load_recorded(path)[0]

    @classmethod
    def load_recorded(cls, path):
        """``(proposals, made_from)`` from one read of the file (``made_from`` None when it has none);
        a damaged or foreign file is a ``WskError`` naming it."""
        arrays = load_npz(path, required=_KEYS)
        version = arrays["version"]
        if version.shape != () or int(version) != FORMAT_VERSION:
            raise WskError(f"proposals format version {version.tolist()} is not {FORMAT_VERSION} "
                           "(recompute with `wsk proposals run`)", path)
        try:
            record = json.loads(str(arrays["made_from"])) if "made_from" in arrays else None
            return cls(arrays["superpixels"], arrays["region_ptr"], arrays["region_sp"],
                       arrays["boxes"], arrays["scores"]), record
        except WskError as err:
            problem = err.problem.removeprefix("inconsistent proposals: ")
            raise WskError(f"damaged proposals file: {problem}", path) from None
        except (TypeError, ValueError) as err:  # arrays of the wrong kind (e.g. boxes not of 4 columns)
            raise WskError(f"damaged proposals file: {err}", path) from None

    @staticmethod
    def is_valid(path):
        """Whether ``path`` holds a readable proposals file of the current version."""
        try:
            Proposals.load(path)
            return True
        except WskError:
            return False

    def _check(self):
        sp, ptr, members = self.superpixels, self.region_ptr, self.region_sp
        if sp.ndim != 2 or sp.size == 0:
            return f"superpixels must be a non-empty 2-D map, got shape {sp.shape}"
        if sp.min() < 0:
            return "superpixel ids must be >= 0"
        if ptr.ndim != 1 or len(ptr) < 1 or ptr[0] != 0 or ptr[-1] != len(members):
            return f"region_ptr ({ptr.shape}) does not index region_sp ({members.shape})"
        if np.any(np.diff(ptr) < 0):
            return "region_ptr is not non-decreasing"
        if members.ndim != 1 or (members.size and (members.min() < 0 or members.max() > sp.max())):
            return "region_sp holds ids that are not superpixels of the map"
        count = len(ptr) - 1
        if self.boxes.shape != (count, 4):
            return f"boxes have shape {self.boxes.shape}, expected ({count}, 4)"
        if self.scores.shape != (count,):
            return f"scores have shape {self.scores.shape}, expected ({count},)"
        return None

    def __repr__(self):
        return f"Proposals({len(self)} regions over {self.num_superpixels} superpixels, {self.shape})"


def regions_boxes(sp_boxes, region_ptr, region_sp):
    """Box ``(P, 4)`` of each region: the union of its superpixels' boxes."""
    count = len(region_ptr) - 1
    boxes = np.zeros((count, 4), np.int32)
    nonempty = np.diff(region_ptr) > 0
    if not nonempty.any():
        return boxes
    gathered = np.asarray(sp_boxes)[region_sp]
    starts = region_ptr[:-1][nonempty]
    boxes[nonempty, 0] = np.minimum.reduceat(gathered[:, 0], starts)
    boxes[nonempty, 1] = np.minimum.reduceat(gathered[:, 1], starts)
    boxes[nonempty, 2] = np.maximum.reduceat(gathered[:, 2], starts)
    boxes[nonempty, 3] = np.maximum.reduceat(gathered[:, 3], starts)
    return boxes
