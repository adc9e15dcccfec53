"""The fully connected CRF of ``wsk.crf`` in ``keras.ops``: batched, on any Keras backend.

Mean-field inference of Krähenbühl and Koltun (NIPS 2011) with the two Potts kernels of
``wsk.crf.CRFParams``: ``Q = softmax(-U + sum_m w_m K_m Q)``, ``U = -log p``. Each Gaussian
filter ``K_m`` is the permutohedral-lattice approximation of Adams, Baek and Davis
(Eurographics 2010) as Krähenbühl and Koltun's ``densecrf`` (pydensecrf) uses it:

* features ``(x, y) / xy_std`` (appearance kernel: ``(x, y) / xy_std, (r, g, b) / rgb_std``),
  elevated onto the hyperplane of ``Z^{d+1}`` with the per-dimension scale
  ``sqrt(2/3) (d+1) / sqrt((i+1)(i+2))`` (the lattice's expected std, Adams et al. §3.1);
* splat with barycentric weights, blur along the axes ``0..d`` in order with ``[1/2, 1, 1/2]``
  (a missing neighbour counts as zero), slice back with the same weights times
  ``1 / (1 + 2^-d)``; the self-term is kept;
* symmetric normalisation: ``K Q = n * filter(n * Q)``, ``n = 1 / sqrt(filter(1))``.

There is no hash table: lattice vertices get integer codes (mixed radix over bounds known from
the parameters), which are sorted; vertex ids come from cumulative sums over the sorted codes and
neighbours from ``searchsorted``. One lattice per kernel per batch (images are separate blocks of
the code; where the batch's codes would overflow int32, one lattice per image, merged), built once
and reused for every iteration. Pixels outside each image's valid size (padding for batching) stay
out of the lattice. Eagerly, the vertex grid is cut to the vertices present (in steps of
``SLOT_BUCKET``); traced (graph, jit) it keeps its static bound, one row per point and corner, and a
free batch size is mapped one image at a time.
"""

import collections
import math

import keras
import numpy as np
from keras import ops

from wsk.crf import MIN_PROBABILITY, CRFParams
from wsk.errors import WskError

INT32_MAX = 2**31 - 1
SLOT_BUCKET = 1024   # vertex grids are sized in steps of this, so that shapes repeat across images
RGB_MAX = 255.0


# a lattice in sorted-entry order (point, sorted_weight, sorted_vertex: one entry per point and
# corner, sorted by vertex) and in point order (vertex, weight: (B*N, d+1)); neighbours (d+1, 2, S+1)
Lattice = collections.namedtuple(
    "Lattice", "point sorted_weight sorted_vertex vertex weight neighbours")


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


def build_lattice(features, valid, upper):
    """The permutohedral lattice of a batch of feature sets.

    ``features`` ``(B, N, d)`` float32 in ``[0, upper[i]]``; ``valid`` ``(B, N)`` bool (False:
    padding, kept out). Returns a ``Lattice``: ``sorted_vertex`` the vertex id of each point's
    ``d+1`` simplex corners in the order of their codes (padding: the empty slot ``S``, last),
    ``point`` and ``sorted_weight`` their point and barycentric weight; ``vertex`` and ``weight``
    the same ``(B*N, d+1)`` per point (weight 0 on padding); ``neighbours`` ``(d+1, 2, S+1)`` each
    vertex's two neighbours along each axis (missing: the empty slot ``S``, whose grid row stays 0).
    """
    batch, points, d = features.shape   # batch known: dense_crf_marginals maps a free one
    block = (d + 1) * math.prod(_key_layout(upper, d)[1])
    if block >= INT32_MAX:
        raise WskError(f"the CRF lattice needs {block} codes per image, over int32: "
                       "use coarser CRF standard deviations or a smaller image")
    if batch is not None and batch > 1 and block * batch >= INT32_MAX:
        # the codes of the whole batch overflow int32: one lattice per image, merged
        return _merge([_build(features[b:b + 1], valid[b:b + 1], upper) for b in range(batch)], points)
    return _build(features, valid, upper)


def _merge(lattices, points):
    """One lattice of the per-image ``lattices`` (vertex ids offset; padding on weight-0 entries)."""
    sizes = [lattice.neighbours.shape[-1] - 1 for lattice in lattices]
    slots = sum(sizes)
    parts = {name: [] for name in Lattice._fields}
    offset = 0
    for index, (lattice, size) in enumerate(zip(lattices, sizes)):
        def shift(ids, empty, size=size, offset=offset):
            return ops.where(ids == size, empty, ids + offset)
        # padding entries (id `size`, weight 0) go on the image's last slot: the ids stay sorted
        parts["sorted_vertex"].append(shift(lattice.sorted_vertex, offset + size - 1))
        parts["point"].append(lattice.point + index * points)
        parts["sorted_weight"].append(lattice.sorted_weight)
        parts["vertex"].append(shift(lattice.vertex, slots))
        parts["weight"].append(lattice.weight)
        parts["neighbours"].append(shift(lattice.neighbours[..., :size], slots))
        offset += size
    dim = lattices[0].weight.shape[-1]
    merged = {name: ops.concatenate(values, axis=-1 if name == "neighbours" else 0)
              for name, values in parts.items()}
    merged["neighbours"] = ops.concatenate([merged["neighbours"], ops.full((dim, 2, 1), slots, "int32")],
                                           axis=-1)
    return Lattice(**merged)


def _build(features, valid, upper):
    """``build_lattice`` with every image's codes in one int32 range."""
    batch, points, d = features.shape
    dim = d + 1
    total = batch * points * dim
    bases, radices = _key_layout(upper, d)
    block = dim * math.prod(radices)
    factors = _scale_factors(d)

    # elevate onto the hyperplane x . 1 = 0 of Z^{d+1} (Adams et al. §3.1)
    elevated = [None] * dim
    total_sum = ops.zeros_like(features[..., 0])
    for j in range(d, 0, -1):
        scaled = features[..., j - 1] * np.float32(factors[j - 1])
        elevated[j] = total_sum - np.float32(j) * scaled
        total_sum = total_sum + scaled
    elevated[0] = total_sum
    elevated = ops.stack(elevated, axis=-1)                                   # (B, N, d+1)

    # nearest remainder-0 point, then the simplex's ordering (rank) of the residuals
    rounded = _round_half_away(elevated * np.float32(1.0 / dim))
    rem0 = rounded * np.float32(dim)
    offset_sum = ops.cast(ops.sum(rounded, axis=-1, keepdims=True), "int32")
    residual = elevated - rem0
    less = ops.cast(residual[..., :, None] < residual[..., None, :], "int32")   # [i, j]: v_i < v_j
    upper_tri = np.triu(np.ones((dim, dim), np.int32), 1)
    rank = (ops.sum(less * upper_tri, axis=-1)
            + ops.sum((1 - less) * upper_tri, axis=-2)) + offset_sum
    below = ops.cast(rank < 0, "int32") - ops.cast(rank > d, "int32")
    rank = rank + below * dim
    rem0 = rem0 + ops.cast(below, "float32") * np.float32(dim)

    # barycentric weights of the d+1 corners
    residual = (elevated - rem0) * np.float32(1.0 / dim)
    spread = (ops.one_hot(d - rank, dim + 1) - ops.one_hot(d - rank + 1, dim + 1))
    bary = ops.sum(residual[..., None] * spread, axis=-2)                     # (B, N, d+2)
    weight = ops.concatenate([bary[..., :1] + 1.0 + bary[..., dim:], bary[..., 1:dim]], axis=-1)
    weight = weight * ops.cast(valid, "float32")[..., None]

    # corner r's key: rem0 + r, or rem0 + r - (d+1) where the coordinate ranks above d - r
    corner = np.arange(dim, dtype=np.int32)[:, None]                          # (d+1, 1)
    rank_k = rank[..., None, :d]                                              # (B, N, 1, d)
    keys = (ops.cast(rem0[..., None, :d], "int32") + corner
            - dim * ops.cast(rank_k > d - corner, "int32"))                   # (B, N, d+1, d)
    code, _ = _encode(keys, bases, radices, dim)
    code = code + ops.reshape(ops.arange(batch, dtype="int32") * block, (batch, 1, 1))
    code = ops.where(valid[..., None], code, INT32_MAX)
    code = ops.reshape(code, (total,))

    # vertex ids: sort the codes, number the distinct ones
    order = ops.argsort(code)
    ordered = ops.take(code, order)
    fresh = ops.concatenate([ops.ones((1,), "int32"),
                             ops.cast(ordered[1:] != ordered[:-1], "int32")], axis=0)
    ids = ops.cumsum(fresh) - 1
    count = ops.max(ops.where(ordered == INT32_MAX, -1, ids)) + 1
    slots = _slots(count, total)
    ids = ops.where(ordered == INT32_MAX, slots, ids)
    # each vertex's code: the sorted code at its first entry
    first_entry = ops.searchsorted(ids, ops.arange(slots, dtype="int32"), side="left")
    unique = ops.take(ordered, ops.minimum(first_entry, total - 1))

    # neighbours along each axis, found by searchsorted among the sorted codes
    local = ops.mod(unique, block)
    keys = _decode(local, bases, radices, dim)                                # (S, d)
    real = ops.arange(slots, dtype="int32") < count
    neighbours = []
    for axis in range(dim):
        for sign in (1, -1):
            step = np.full((d,), -sign, np.int32)
            if axis < d:
                step[axis] = sign * d
            neighbour, inside = _encode(keys + step, bases, radices, dim)
            neighbour = neighbour + (unique - local)
            at = ops.minimum(ops.searchsorted(ordered, neighbour, side="left"), total - 1)
            hit = (ops.take(ordered, at) == neighbour) & inside & real
            neighbours.append(ops.where(hit, ops.take(ids, at), slots))
    neighbours = ops.reshape(ops.stack(neighbours, axis=0), (dim, 2, slots))
    neighbours = ops.concatenate([neighbours, ops.full((dim, 2, 1), slots, "int32")], axis=-1)

    weight = ops.reshape(weight, (total,))
    vertex = ops.reshape(ops.take(ids, ops.argsort(order)), (batch * points, dim))
    return Lattice(point=ops.floor_divide(order, dim), sorted_weight=ops.take(weight, order),
                   sorted_vertex=ids, vertex=vertex, weight=ops.reshape(weight, (batch * points, dim)),
                   neighbours=neighbours)


def _slots(count, total):
    """Rows of the vertex grid: the vertex count where it is known now (eager), else the bound."""
    try:
        count = int(ops.convert_to_numpy(count))
    except Exception:      # symbolic (graph or jit tracing): keep the static bound
        return total
    return min(total, max(1, -(-count // SLOT_BUCKET)) * SLOT_BUCKET)


def _sorted_segment_sum(data, ids, rows):
    """``segment_sum`` over ``ids`` sorted ascending with the last id ``rows - 1`` present."""
    if keras.backend.backend() == "tensorflow":     # TF's sorted kernel takes no num_segments
        return ops.segment_sum(data, ids, sorted=True)
    return ops.segment_sum(data, ids, num_segments=rows, sorted=True)


def lattice_filter(values, lattice):
    """Splat ``values`` ``(B*N, C)``, blur, slice: the unnormalised Gaussian filter."""
    return _filter(values, _prepare(lattice))


def _prepare(lattice):
    """What every filtering with ``lattice`` reuses, sliced once: one extra zero-weight entry on
    the empty slot (the sorted segment sum then has every row), the neighbour lists split."""
    rows = lattice.neighbours.shape[-1]
    dim = lattice.weight.shape[-1]
    point = ops.concatenate([lattice.point, ops.zeros((1,), "int32")], axis=0)
    weight = ops.concatenate([lattice.sorted_weight, ops.zeros((1,), "float32")], axis=0)[:, None]
    ids = ops.concatenate([lattice.sorted_vertex, ops.full((1,), rows - 1, "int32")], axis=0)
    neighbours = [(lattice.neighbours[axis, 0], lattice.neighbours[axis, 1]) for axis in range(dim)]
    return point, weight, ids, rows, neighbours, lattice.vertex, lattice.weight[:, None, :]


def _filter(values, prepared):
    point, sorted_weight, ids, rows, neighbours, vertex, weight = prepared
    grid = _sorted_segment_sum(ops.take(values, point, axis=0) * sorted_weight, ids, rows)
    for first, second in neighbours:
        grid = grid + 0.5 * (ops.take(grid, first, axis=0) + ops.take(grid, second, axis=0))
    d = len(neighbours) - 1
    alpha = np.float32(1.0 / (1.0 + 2.0 ** -d))
    gathered = ops.take(grid, vertex, axis=0)                                 # (B*N, d+1, C)
    return alpha * ops.squeeze(ops.matmul(weight, gathered), axis=1)


def _normaliser(lattice, valid_flat):
    """``1 / sqrt(filter(1))`` per point (0 on padding): symmetric normalisation."""
    ones = ops.cast(valid_flat, "float32")[:, None]
    norm = _filter(ones, lattice)[:, 0]
    return ops.where(valid_flat, 1.0 / ops.sqrt(norm + 1e-20), 0.0)


def _features(images, sizes, params, height, width):
    """Positional ``(B, N, 2)`` and bilateral ``(B, N, 5)`` features and their upper bounds."""
    batch = images.shape[0]
    sizes_f = ops.cast(sizes, "float32")
    if params.reference_side is None:
        scale = ops.ones((batch, 1), "float32")
        reach = float(max(height, width))
    else:
        scale = ops.max(sizes_f, axis=-1, keepdims=True) / np.float32(params.reference_side)
        reach = float(params.reference_side)
    ys, xs = np.meshgrid(np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32),
                         indexing="ij")
    xs, ys = xs.reshape(1, -1), ys.reshape(1, -1)
    pos = ops.stack([xs / (params.pos_xy_std * scale), ys / (params.pos_xy_std * scale)], axis=-1)
    rgb = ops.reshape(ops.clip(ops.cast(images, "float32"), 0.0, RGB_MAX), (batch, -1, 3))
    bi = ops.concatenate([ops.stack([xs / (params.bi_xy_std * scale),
                                     ys / (params.bi_xy_std * scale)], axis=-1),
                          rgb / np.float32(params.bi_rgb_std)], axis=-1)
    pos_upper = [reach / params.pos_xy_std] * 2
    bi_upper = [reach / params.bi_xy_std] * 2 + [RGB_MAX / params.bi_rgb_std] * 3
    return (pos, pos_upper), (bi, bi_upper)


def dense_crf_marginals(images, probabilities, params, sizes=None):
    """Mean-field marginals of the dense CRF, ``(B, H, W, C)`` float32.

    ``images``: RGB ``(B, H, W, 3)``, uint8 or float in 0..255; ``probabilities``: softmax
    ``(B, H, W, C)``; ``params``: a ``wsk.crf.CRFParams``; ``sizes``: optional ``(B, 2)`` int valid
    ``(height, width)`` of each image, its top-left corner (the rest is padding, kept out of the
    lattice; its marginals are the clipped input probabilities). Spatial stds scale by each image's
    own longer side over ``params.reference_side``.
    """
    probabilities = ops.convert_to_tensor(probabilities, "float32")
    images = ops.convert_to_tensor(images)
    batch, height, width, classes = probabilities.shape
    if sizes is None:
        sizes = ops.ones_like(probabilities[:, 0, 0, :2], "int32") * np.array([height, width], np.int32)
    sizes = ops.cast(ops.convert_to_tensor(sizes), "int32")
    if batch is None:   # symbolic batch (a graph with a free batch size): one image at a time
        return ops.map(lambda args: _marginals(args[0][None], args[1][None], params, args[2][None])[0],
                       (images, probabilities, sizes))
    return _marginals(images, probabilities, params, sizes)


def _marginals(images, probabilities, params, sizes):
    """``dense_crf_marginals`` with a known batch size and ``sizes`` given."""
    batch, height, width, classes = probabilities.shape
    rows = ops.arange(height, dtype="int32")[None, :, None] < sizes[:, None, None, :1]
    cols = ops.arange(width, dtype="int32")[None, None, :] < sizes[:, None, None, 1:]
    valid = ops.reshape(rows & cols, (batch, height * width))
    valid_flat = ops.reshape(valid, (-1,))

    log_p = ops.log(ops.clip(ops.reshape(probabilities, (-1, classes)), MIN_PROBABILITY, 1.0))
    q = ops.softmax(log_p, axis=-1)
    kernels = []
    for (features, upper), w in zip(_features(images, sizes, params, height, width),
                                    (params.pos_w, params.bi_w)):
        if w == 0:
            continue
        lattice = _prepare(build_lattice(features, valid, upper))
        kernels.append((lattice, _normaliser(lattice, valid_flat), np.float32(w)))
    for _ in range(int(params.iterations)):
        energy = log_p
        for lattice, norm, w in kernels:
            energy = energy + w * norm[:, None] * _filter(q * norm[:, None], lattice)
        q = ops.softmax(energy, axis=-1)
    return ops.reshape(q, (batch, height, width, classes))


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
        config.update(bi_w=self.params.bi_w, bi_xy_std=self.params.bi_xy_std,
                      bi_rgb_std=self.params.bi_rgb_std, pos_w=self.params.pos_w,
                      pos_xy_std=self.params.pos_xy_std, iterations=self.params.iterations,
                      reference_side=self.params.reference_side)
        return config
