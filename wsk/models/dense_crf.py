"""The fully connected CRF of ``wsk.crf`` in ``keras.ops``: batched, on any Keras backend.

Mean-field inference of Krähenbühl and Koltun (NIPS 2011) with the two Potts kernels of
``wsk.crf.CRFParams``: ``Q = softmax(-U + sum_m w_m K_m Q)``, ``U = -log p``. Each Gaussian
filter ``K_m`` is the permutohedral-lattice approximation (``wsk.models.permutohedral``) as
Krähenbühl and Koltun's ``densecrf`` (pydensecrf) uses it, over the features ``(x, y) / xy_std``
(appearance kernel: ``(x, y) / xy_std, (r, g, b) / rgb_std``), with symmetric normalisation:
``K Q = n * filter(n * Q)``, ``n = 1 / sqrt(filter(1))``.

One lattice per kernel per image, reused by every iteration, in two fixed-shape steps that
``wsk.crf`` compiles: ``lattice_codes``, then ``marginals_from_codes`` (a grid of ``slots`` rows:
``wsk.models.permutohedral.vertex_slots`` eagerly, the static bound traced). A known batch is a
Python loop over images, a free one (or ``unroll=False``) ``ops.map``; likewise the blur's axes
and the mean-field iterations are Python loops (eager) or ``ops.fori_loop`` (traced for a compiler).
"""

import dataclasses
import functools

import keras
import numpy as np
from keras import ops

from wsk.crf import MIN_PROBABILITY, CRFParams
from wsk.models.permutohedral import image_codes, lattice_filter, lattice_from_codes, slots_for

RGB_MAX = 255.0


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
        pairs = [image_codes(f, image_valid, upper) for f, upper in zip(features, uppers)]
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
        lattices = [lattice_from_codes(c, s, upper, search) for c, s, upper in zip(image_codes, slots, uppers)]
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
    slots = tuple(slots_for(counts[:, k], c.ordered.shape[-1]) for k, c in enumerate(codes))
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
