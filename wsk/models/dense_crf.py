"""The fully connected CRF of ``wsk.crf`` in ``keras.ops``: batched, on any Keras backend.

Mean-field inference of Krähenbühl and Koltun (NIPS 2011) with the two Potts kernels of
``wsk.crf.CRFParams``: ``Q = softmax(-U + sum_m w_m K_m Q)``, ``U = -log p``. Each Gaussian
filter ``K_m`` is the permutohedral-lattice approximation of Adams, Baek and Davis
(Eurographics 2010) as Krähenbühl and Koltun's ``densecrf`` (pydensecrf) uses it:

* features ``(x, y) / xy_std`` (appearance kernel: ``(x, y) / xy_std, (r, g, b) / rgb_std``),
  elevated onto the hyperplane of ``Z^{d+1}`` with the per-dimension scale ``sqrt(2/3) (d+1) /
  sqrt((i+1)(i+2))`` (the lattice's expected std, Adams et al. §3.1);
* splat with barycentric weights, blur along the axes ``0..d`` in order with ``[1/2, 1, 1/2]`` (a
  missing neighbour counts as zero), slice with the same weights times ``1 / (1 + 2^-d)``;
  the self-term is kept;
* symmetric normalisation: ``K Q = n * filter(n * Q)``, ``n = 1 / sqrt(filter(1))``.

There is no hash table: lattice vertices get integer codes (mixed radix over bounds known from
the parameters), sorted, numbered by cumulative sums; neighbours by ``searchsorted``. One lattice
per kernel per image, reused by every iteration, in two fixed-shape steps that ``wsk.crf`` compiles:
``lattice_codes``, then ``marginals_from_codes`` (a grid of ``slots`` rows: ``vertex_slots`` eagerly,
the static bound traced). Padding stays out of the lattice. A known batch is a Python loop over
images, a free one (or ``unroll=False``) ``ops.map``; likewise the blur's axes and the mean-field iterations
are Python loops (eager) or ``ops.fori_loop`` (traced for a compiler).
"""

import collections
import functools
import dataclasses
import math

import keras
import numpy as np
from keras import ops

from wsk.crf import MIN_PROBABILITY, CRFParams
from wsk.errors import WskError

INT32_MAX = 2**31 - 1
SLOT_BUCKET = 1024   # vertex grids are sized in steps of this and 1.5x, 4/3x above (vertex_slots)
RGB_MAX = 255.0

# a lattice: each point's d+1 simplex corners, vertex ids and barycentric weights (N, d+1) (padding:
# weight 0 on the empty slot S, last); neighbours (d+1, 2, S+1): each vertex's two along each axis
# splat, blur, slice: optionally functions that do the same splat (N, C) -> (rows, C), blur (rows, C) ->
# (rows, C) and slice (rows, C) -> (N, C), the slice's constant 1 / (1 + 2^-d) included, by the
# backend's sparse products (``marginals_from_codes``' ``sparse``); else None
Lattice = collections.namedtuple("Lattice", "vertex weight neighbours splat blur slice",
                                 defaults=(None, None, None))
# lattice_codes' output: point-corner order by code, sorted codes (padding: INT32_MAX), ids, weights
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


def _codes(features, valid, upper):
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


def _lattice(codes, slots, upper, search=None):
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
    codes, count = _codes(ops.convert_to_tensor(features, "float32"), ops.convert_to_tensor(valid), upper)
    return _lattice(codes, _slots(count, codes.ordered.shape[0]), upper)


def _slots(count, total):
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


def _message(lattice, norm, w, unroll, q):
    """One kernel's term of the mean-field update, ``w * norm * K(norm * q)`` (``norm`` ``(N, 1)``)."""
    return w * norm * lattice_filter(q * norm, lattice, unroll)


def _normaliser(lattice, valid, unroll=True):
    """``1 / sqrt(filter(1))`` per point (0 on padding): symmetric normalisation."""
    norm = lattice_filter(ops.cast(valid, "float32")[:, None], lattice, unroll)[:, 0]
    return ops.where(valid, 1.0 / ops.sqrt(norm + 1e-20), 0.0)


def _valid(sizes, height, width):
    """``(B, H*W)``: inside each image's valid ``sizes`` ``(B, 2)`` (its top-left corner)."""
    rows = ops.arange(height, dtype="int32")[None, :, None] < sizes[:, None, None, :1]
    return ops.reshape(rows & (ops.arange(width, dtype="int32")[None, None, :] < sizes[:, None, None, 1:]),
                       (-1, height * width))


def _kernels(images, sizes, params):
    """The features ``(B, N, d)`` of the kernels with a nonzero weight, and the valid mask ``(B, N)``."""
    height, width = images.shape[1], images.shape[2]
    valid = _valid(sizes, height, width)
    sizes_f = ops.cast(sizes, "float32")
    if params.reference_side is None:
        scale = ops.ones_like(sizes_f[:, :1])
    else:
        scale = ops.max(sizes_f, axis=-1, keepdims=True) / np.float32(params.reference_side)
    ys, xs = np.meshgrid(np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32),
                         indexing="ij")
    xs, ys = xs.reshape(1, -1), ys.reshape(1, -1)
    pos = ops.stack([xs / (params.pos_xy_std * scale), ys / (params.pos_xy_std * scale)], axis=-1)
    rgb = ops.reshape(ops.clip(ops.cast(images, "float32"), 0.0, RGB_MAX), (-1, height * width, 3))
    bi = ops.concatenate([ops.stack([xs / (params.bi_xy_std * scale),
                                     ys / (params.bi_xy_std * scale)], axis=-1),
                          rgb / np.float32(params.bi_rgb_std)], axis=-1)
    kernels = [(pos, params.pos_w), (bi, params.bi_w)]
    return [features for features, w in kernels if w != 0], valid


def _uppers(params, height, width):
    """The features' upper bounds of the kernels with a nonzero weight (``_kernels``' order)."""
    reach = float(max(height, width) if params.reference_side is None else params.reference_side)
    uppers = [([reach / params.pos_xy_std] * 2, params.pos_w),
              ([reach / params.bi_xy_std] * 2 + [RGB_MAX / params.bi_rgb_std] * 3, params.bi_w)]
    return [upper for upper, w in uppers if w != 0]


def _per_image(fn, xs, unroll):
    """``fn`` over the leading axis of the structure ``xs``: a Python loop (``unroll``) or ``ops.map``."""
    if not unroll:
        return ops.map(fn, xs)
    leaves = keras.tree.flatten(xs)
    outs = [fn(keras.tree.pack_sequence_as(xs, [leaf[b] for leaf in leaves]))
            for b in range(leaves[0].shape[0])]
    return keras.tree.map_structure(lambda *parts: ops.stack(parts, axis=0), *outs)


def lattice_codes(images, sizes, params, unroll=True):
    """The first step, ``images`` ``(B, H, W, 3)``, ``sizes`` ``(B, 2)`` -> ``(codes, counts)``: batched
    ``Codes`` per kernel with a nonzero weight, ``(B, kernels)`` vertex counts (for ``vertex_slots``)."""
    kernels, valid = _kernels(images, sizes, params)
    uppers = _uppers(params, images.shape[1], images.shape[2])

    def one(args):
        features, image_valid = args
        pairs = [_codes(f, image_valid, upper) for f, upper in zip(features, uppers)]
        counts = [count for _, count in pairs]
        return tuple(codes for codes, _ in pairs), ops.stack(counts) if counts else ops.zeros((0,), "int32")

    return _per_image(one, (tuple(kernels), valid), unroll)


def marginals_from_codes(probabilities, sizes, params, codes, slots, unroll=True, search=None, sparse=None):
    """The second step: the mean field on lattices of ``slots`` (one static int per kernel) rows
    built from ``lattice_codes``' ``codes`` (``search``: ``_lattice``'s); returns the marginals
    ``(B, H, W, C)``. ``sparse``: None, or ``sparse(lattice, norm=None, w=1)``, which gives a
    ``Lattice`` the ``splat``, ``blur`` and ``slice`` functions of ``w * norm * K(norm * q)`` by the
    backend's sparse products, the symmetric normalisation and the weight folded into the matrices
    (``wsk.crf``, where they are faster; with ``norm`` None, of ``K q``). It is called on each
    ``_lattice``, then on what it gave with the normaliser and the weight."""
    _, height, width, classes = probabilities.shape
    valid = _valid(sizes, height, width)
    log_p = ops.log(ops.clip(ops.reshape(probabilities, (-1, height * width, classes)), MIN_PROBABILITY, 1.0))
    weights = [np.float32(w) for w in (params.pos_w, params.bi_w) if w != 0]
    uppers = _uppers(params, height, width)

    def one(args):
        image_log_p, image_valid, image_codes = args
        lattices = [_lattice(c, s, upper, search) for c, s, upper in zip(image_codes, slots, uppers)]
        if sparse is None:
            norms = [_normaliser(lattice, image_valid, unroll)[:, None] for lattice in lattices]
            messages = [functools.partial(_message, lattice, norm, w, unroll)
                        for lattice, norm, w in zip(lattices, norms, weights)]
        else:
            lattices = [sparse(lattice) for lattice in lattices]
            norms = [_normaliser(lattice, image_valid, unroll) for lattice in lattices]
            messages = [functools.partial(lattice_filter, lattice=sparse(lattice, norm, w), unroll=unroll)
                        for lattice, norm, w in zip(lattices, norms, weights)]

        def step(_, q):
            energy = image_log_p
            for message in messages:
                energy = energy + message(q)
            return ops.softmax(energy, axis=-1)

        q = ops.softmax(image_log_p, axis=-1)
        if not unroll:
            return ops.fori_loop(0, int(params.iterations), step, q)
        for iteration in range(int(params.iterations)):   # eager: no per-call compilation (lattice_filter)
            q = step(iteration, q)
        return q

    q = _per_image(one, (log_p, valid, tuple(codes)), unroll)
    return ops.reshape(q, (-1, height, width, classes))


def dense_crf_marginals(images, probabilities, params, sizes=None, sparse=None):
    """Mean-field marginals of the dense CRF, ``(B, H, W, C)`` float32.

    ``images``: RGB ``(B, H, W, 3)``, uint8 or float in 0..255; ``probabilities``: softmax
    ``(B, H, W, C)``; ``params``: a ``wsk.crf.CRFParams``; ``sizes``: optional ``(B, 2)`` int valid
    ``(height, width)`` of each image, its top-left corner (the rest is padding, kept out of the
    lattice; its marginals are the clipped input probabilities). Spatial stds scale by each image's
    own longer side over ``params.reference_side``. ``sparse``: ``marginals_from_codes``'.
    """
    probabilities, images = ops.convert_to_tensor(probabilities, "float32"), ops.convert_to_tensor(images)
    if sizes is None:
        sizes = ops.ones_like(probabilities[:, 0, 0, :1], "int32") * np.array(probabilities.shape[1:3], np.int32)
    sizes = ops.cast(ops.convert_to_tensor(sizes), "int32")
    unroll = probabilities.shape[0] is not None
    codes, counts = lattice_codes(images, sizes, params, unroll)
    slots = tuple(_slots(counts[:, k], c.ordered.shape[-1]) for k, c in enumerate(codes))
    return marginals_from_codes(probabilities, sizes, params, codes, slots, unroll, sparse=sparse)


@keras.saving.register_keras_serializable(package="wsk")
class DenseCRF(keras.layers.Layer):
    """The dense CRF as a layer: ``call(images, probabilities, sizes=None)`` -> marginals.

    Built from ``CRFParams``' fields (``DenseCRF(**dataclasses.asdict(CRFParams()))``).
    """

    def __init__(self, bi_w=CRFParams.bi_w, bi_xy_std=CRFParams.bi_xy_std,
                 bi_rgb_std=CRFParams.bi_rgb_std, pos_w=CRFParams.pos_w,
                 pos_xy_std=CRFParams.pos_xy_std, iterations=CRFParams.iterations,
                 reference_side=CRFParams.reference_side, **kwargs):
        super().__init__(**kwargs)
        self.params = CRFParams(bi_w, bi_xy_std, bi_rgb_std, pos_w, pos_xy_std, iterations,
                                reference_side)

    def call(self, images, probabilities, sizes=None):
        return dense_crf_marginals(images, probabilities, self.params, sizes)

    def compute_output_shape(self, images_shape, probabilities_shape, sizes_shape=None):
        return tuple(probabilities_shape)

    def get_config(self):
        config = super().get_config()
        config.update(dataclasses.asdict(self.params))
        return config
