"""The permutohedral lattice of Adams, Baek and Davis (Eurographics 2010) in ``keras.ops``, as
Krähenbühl and Koltun's ``densecrf`` (pydensecrf) builds and filters with it (``wsk.models.dense_crf``
runs the mean field over it):

* features ``f`` ``(N, d)`` elevated onto the hyperplane of ``Z^{d+1}`` with the per-dimension scale
  ``sqrt(2/3) (d+1) / sqrt((i+1)(i+2))`` (the lattice's expected std, Adams et al. §3.1);
* splat with barycentric weights, blur along the axes ``0..d`` in order with ``[1/2, 1, 1/2]`` (a
  missing neighbour counts as zero), slice with the same weights times ``1 / (1 + 2^-d)``; the
  self-term is kept.

There is no hash table: lattice vertices get integer codes (mixed radix over bounds known from the
features' upper bounds), sorted, numbered by cumulative sums; a vertex's code and its neighbours are
found by searches among sorted arrays. ``image_codes`` and ``lattice_from_codes`` are the two
fixed-shape steps ``wsk.crf`` compiles (a grid of ``slots`` rows: ``vertex_slots`` eagerly, the
static bound traced). Padding stays out of the lattice.
"""

import collections
import math

import numpy as np
from keras import ops

from wsk.errors import WskError

INT32_MAX = 2**31 - 1
SLOT_BUCKET = 1024   # vertex grids are sized in steps of this and 1.5x, 4/3x above (vertex_slots)

# a lattice: each point's d+1 simplex corners, vertex ids and barycentric weights (N, d+1) (padding:
# weight 0 on the empty slot S, last); neighbours (d+1, 2, S+1): each vertex's two along each axis
# splat, blur, slice: optionally functions that do the same splat (N, C) -> (rows, C), blur (rows, C) ->
# (rows, C) and slice (rows, C) -> (N, C), the slice's constant 1 / (1 + 2^-d) included, by the
# backend's sparse products (``wsk.models.dense_crf.marginals_from_codes``' ``sparse``); else None
Lattice = collections.namedtuple("Lattice", "vertex weight neighbours splat blur slice",
                                 defaults=(None, None, None))
# image_codes' output: point-corner order by code, sorted codes (padding: INT32_MAX), ids, weights
Codes = collections.namedtuple("Codes", "order ordered ids weight")


def _round_half_away(x):
    """Round to the nearest integer, halves away from zero (C's ``round``)."""
    return ops.sign(x) * ops.floor(ops.abs(x) + 0.5)


def _scale_factors(d):
    """The lattice's per-dimension scale (Adams et al. 2010, §3.1: expected std of the blur)."""
    inv_std = math.sqrt(2.0 / 3.0) * (d + 1)
    return [inv_std / math.sqrt((i + 1) * (i + 2)) for i in range(d)]


def _key_layout(upper, d):
    """Per-coordinate base and radix of the vertex keys, from the features' upper bounds.

    Features lie in ``[0, upper[i]]``. Returns ``(bases, radices)`` for the ``d`` stored key
    coordinates (each key ``k_i = base_i + (d+1) a_i + r``, ``0 <= a_i < radix_i``).
    """
    factors = _scale_factors(d)
    scaled = [u * f for u, f in zip(upper, factors)]
    dim = d + 1
    margin = 3 * dim + 1
    bases, radices = [], []
    for j in range(d):
        if j == 0:
            low, high = 0.0, sum(scaled)
        else:
            low, high = -j * scaled[j - 1], sum(scaled[j:])
        base = math.floor((low - margin) / dim) * dim
        bases.append(base)
        radices.append(int(math.ceil((high + margin - base) / dim)) + 1)
    return bases, radices


def _encode(keys, bases, radices, dim):
    """Integer code of keys ``(..., d)`` and whether every coordinate is inside the layout."""
    code = None
    inside = None
    for i, (base, radix) in enumerate(zip(bases, radices)):
        shifted = keys[..., i] - base
        digit = ops.floor_divide(shifted, dim)
        if code is None:
            code = shifted - dim * digit            # the remainder r, the same on every coordinate
        code = code * radix + digit
        ok = (digit >= 0) & (digit < radix)
        inside = ok if inside is None else inside & ok
    return code, inside


def _decode(codes, bases, radices, dim):
    """Keys ``(P, d)`` of codes ``(P,)`` (inverse of ``_encode`` within one block)."""
    digits = []
    rest = codes
    for radix in reversed(radices):
        digits.append(ops.mod(rest, radix))
        rest = ops.floor_divide(rest, radix)
    remainder = rest
    digits.reverse()
    return ops.stack([base + dim * a + remainder for base, a in zip(bases, digits)], axis=-1)


def vertex_slots(count, total):
    """Rows of a vertex grid for ``count`` vertices (of at most ``total``): ``SLOT_BUCKET`` times
    1, 2, 3, 4, 6, 8, 12, 16, ... (a few sizes, so that compiled shapes repeat across images)."""
    steps = max(1, -(-int(count) // SLOT_BUCKET))
    size = 1
    while size < steps:
        size = 2 if size == 1 else size * 3 // 2 if size & (size - 1) == 0 else size * 4 // 3
    return min(int(total), size * SLOT_BUCKET)


def image_codes(features, valid, upper):
    """One image's ``(Codes, vertex count)``: ``features`` ``(N, d)`` in ``[0, upper[i]]``, ``valid`` ``(N,)``."""
    points, d = features.shape
    dim = d + 1
    total = points * dim
    bases, radices = _key_layout(upper, d)
    if dim * math.prod(radices) >= INT32_MAX:
        raise WskError(f"the CRF lattice needs {dim * math.prod(radices)} codes per image, over int32: "
                       "use coarser CRF standard deviations or a smaller image")
    factors = _scale_factors(d)

    # elevate onto the hyperplane x . 1 = 0 of Z^{d+1} (Adams et al. §3.1)
    elevated = [None] * dim
    total_sum = ops.zeros_like(features[..., 0])
    for j in range(d, 0, -1):
        scaled = features[..., j - 1] * np.float32(factors[j - 1])
        elevated[j] = total_sum - np.float32(j) * scaled
        total_sum = total_sum + scaled
    elevated[0] = total_sum
    elevated = ops.stack(elevated, axis=-1)                                   # (N, d+1)

    # nearest remainder-0 point, then the simplex's ordering (rank) of the residuals
    rounded = _round_half_away(elevated * np.float32(1.0 / dim))
    rem0 = rounded * np.float32(dim)
    offset_sum = ops.cast(ops.sum(rounded, axis=-1, keepdims=True), "int32")
    residual = elevated - rem0
    # rank_i: #{j > i: v_j > v_i} + #{j < i: v_j >= v_i}, pair by pair (no (N, d+1, d+1) comparison)
    ranks = [offset_sum[..., 0]] * dim
    for i in range(dim):
        for j in range(i + 1, dim):
            below = ops.cast(residual[..., i] < residual[..., j], "int32")
            ranks[i], ranks[j] = ranks[i] + below, ranks[j] + (1 - below)
    rank = ops.stack(ranks, axis=-1)
    below = ops.cast(rank < 0, "int32") - ops.cast(rank > d, "int32")
    rank = rank + below * dim
    rem0 = rem0 + ops.cast(below, "float32") * np.float32(dim)

    # barycentric weights of the d+1 corners
    residual = (elevated - rem0) * np.float32(1.0 / dim)
    spread = (ops.one_hot(d - rank, dim + 1) - ops.one_hot(d - rank + 1, dim + 1))
    bary = ops.sum(residual[..., None] * spread, axis=-2)                     # (N, d+2)
    weight = ops.concatenate([bary[..., :1] + 1.0 + bary[..., dim:], bary[..., 1:dim]], axis=-1)
    weight = weight * ops.cast(valid, "float32")[..., None]

    # corner r's key: rem0 + r, or rem0 + r - (d+1) where the coordinate ranks above d - r
    corner = np.arange(dim, dtype=np.int32)[:, None]                          # (d+1, 1)
    rank_k = rank[..., None, :d]                                              # (N, 1, d)
    keys = (ops.cast(rem0[..., None, :d], "int32") + corner
            - dim * ops.cast(rank_k > d - corner, "int32"))                   # (N, d+1, d)
    code, _ = _encode(keys, bases, radices, dim)
    code = ops.reshape(ops.where(valid[..., None], code, INT32_MAX), (total,))

    # vertex ids: sort the codes, number the distinct ones
    order = ops.argsort(code)
    ordered = ops.take(code, order)
    fresh = ops.concatenate([ops.ones((1,), "int32"),
                             ops.cast(ordered[1:] != ordered[:-1], "int32")], axis=0)
    ids = ops.cumsum(fresh) - 1
    count = ops.max(ops.where(ordered == INT32_MAX, -1, ids)) + 1
    return Codes(order, ordered, ids, weight), count


def lattice_from_codes(codes, slots, upper, search=None):
    """One image's ``Lattice`` from its ``Codes``, on a vertex grid of ``slots`` rows (plus the
    empty slot): at least its vertex count, a static int. ``search``: ``ops.searchsorted``'s left
    side (None) or ``lower_bound`` (for XLA, ``wsk.crf``'s compiled path)."""
    search = search or (lambda ordered, queries: ops.searchsorted(ordered, queries, side="left"))
    order, ordered, ids, weight = codes
    points, dim = weight.shape
    d = dim - 1
    total = points * dim
    bases, radices = _key_layout(upper, d)
    ids = ops.where(ordered == INT32_MAX, slots, ids)                        # still sorted
    # each vertex's code: the sorted code at its first entry (ids are sorted: a search per vertex);
    # a slot past the count has none, and its code is INT32_MAX, so the vertices' codes stay sorted
    slot_ids = ops.arange(slots, dtype="int32")
    first_entry = ops.minimum(search(ids, slot_ids), total - 1)
    real = ops.take(ids, first_entry) == slot_ids
    unique = ops.where(real, ops.take(ordered, first_entry), INT32_MAX)      # (S,) sorted
    keys = _decode(unique, bases, radices, dim)                               # (S, d)

    # neighbours along each axis, all 2(d+1) steps at once: a vertex's id is its rank among the
    # vertices' sorted codes
    steps = np.full((dim, 2, d), 1, np.int32) * np.array([-1, 1], np.int32)[None, :, None]
    for axis in range(d):
        steps[axis, :, axis] = [d, -d]
    neighbour, inside = _encode(keys[None] + steps.reshape(2 * dim, 1, d), bases, radices, dim)   # (2(d+1), S)
    at = ops.minimum(search(unique, ops.reshape(neighbour, (-1,))), slots - 1)
    hit = (ops.reshape(ops.take(unique, at), (2 * dim, slots)) == neighbour) & inside & real
    neighbours = ops.reshape(ops.where(hit, ops.reshape(at, (2 * dim, slots)), slots), (dim, 2, slots))
    neighbours = ops.concatenate([neighbours, ops.full((dim, 2, 1), slots, "int32")], axis=-1)
    vertex = ops.reshape(ops.scatter(order[:, None], ids, (total,)), (points, dim))
    return Lattice(vertex=vertex, weight=weight, neighbours=neighbours)


def lower_bound(ordered, queries):
    """``searchsorted(ordered, queries, side="left")`` by a branchless binary search (XLA under
    TensorFlow lowers ``searchsorted`` to a queries-by-sequence comparison: out of memory at VOC
    size; eagerly ``ops.searchsorted`` is faster)."""
    total = ordered.shape[0]
    found = ops.zeros_like(queries)
    step = 1 << max(0, (total - 1).bit_length())
    while step:
        probe = found + step
        below = ops.take(ordered, ops.minimum(probe, total) - 1) < queries
        found = ops.where((probe <= total) & below, probe, found)
        step >>= 1
    return found


def build_lattice(features, valid, upper):
    """The permutohedral lattice of one image's features ``(N, d)`` float32 in ``[0, upper[i]]``;
    ``valid`` ``(N,)`` bool (False: padding, kept out). Returns a ``Lattice`` (its grid cut to the
    vertices present where they are known now, ``vertex_slots``)."""
    codes, count = image_codes(ops.convert_to_tensor(features, "float32"), ops.convert_to_tensor(valid), upper)
    return lattice_from_codes(codes, slots_for(count, codes.ordered.shape[0]), upper)


def slots_for(count, total):
    """``vertex_slots`` where the count is known now (eager), else the static bound ``total``."""
    try:
        count = int(ops.convert_to_numpy(ops.max(count)))
    except Exception:      # symbolic (graph or jit tracing): keep the static bound
        return total
    return vertex_slots(count, total)


def lattice_filter(values, lattice, unroll=True):
    """Splat ``values`` ``(N, C)``, blur, slice: the unnormalised Gaussian filter. ``unroll``: the
    blur's axes as a Python loop (eager: JAX would compile an ``ops.fori_loop`` at every call, 120
    ms against 8 at VOC size) or, False, as ``ops.fori_loop`` (traced for a compiler, which then
    keeps each axis' grid instead of re-fusing them)."""
    vertex, weight, neighbours, splat, blur_, slice_ = lattice
    rows = neighbours.shape[-1]
    dim = weight.shape[-1]
    if splat is not None:
        grid = splat(values)
    else:   # one corner at a time: no (N, d+1, C) intermediate (3x faster eagerly at VOC size)
        grid = ops.segment_sum(values * weight[:, :1], vertex[:, 0], num_segments=rows)
        for corner in range(1, dim):
            grid = grid + ops.segment_sum(values * weight[:, corner:corner + 1], vertex[:, corner],
                                          num_segments=rows)

    def blur(axis, grid):
        pair = ops.take(neighbours, axis, axis=0)
        return grid + 0.5 * (ops.take(grid, pair[0], axis=0) + ops.take(grid, pair[1], axis=0))

    if blur_ is not None:
        grid = blur_(grid)
    elif unroll:
        for axis in range(dim):
            grid = blur(axis, grid)
    else:
        grid = ops.fori_loop(0, dim, blur, grid)
    if slice_ is not None:
        return slice_(grid)
    scale = np.float32(1.0 / (1.0 + 2.0 ** -(dim - 1)))
    out = ops.take(grid, vertex[:, 0], axis=0) * weight[:, :1]
    for corner in range(1, dim):
        out = out + ops.take(grid, vertex[:, corner], axis=0) * weight[:, corner:corner + 1]
    return scale * out
