"""Fully connected CRF over the network's softmax output (DeepLab-CRF [7], used in §4 of the paper).

The energy is the unary ``-log p(x_i)`` of the up-sampled softmax plus two Potts pairwise
kernels (Krähenbühl and Koltun's dense CRF):

* appearance: ``bi_w * exp(-|p_i - p_j|^2 / (2 bi_xy_std^2) - |I_i - I_j|^2 / (2 bi_rgb_std^2))``
* smoothness: ``pos_w * exp(-|p_i - p_j|^2 / (2 pos_xy_std^2))``

``CRFParams()`` holds DeepLab-LargeFOV's cross-validated values for PASCAL VOC. Its spatial
standard deviations are in pixels of a VOC photo (longer side ``VOC_IMAGE_SIDE``, 500 px); an image
of another size scales them by its longer side over 500 (``reference_side``), so that the kernels
reach as far relative to the objects. On VOC nothing changes. On the demo's 64 px images the unscaled
values smooth over 3 px (a cross arm) and reach across the whole image: measured on the demo's val
set, scaling lifted AN_A+CRF from 41.2 to 45.8 mIoU (cross 20.8 -> 33.7), AN_B+CRF 64.6 -> 65.7,
SN_B+CRF 35.3 -> 40.0 (cross 3.1 -> 17.8), SN_A+CRF 30.8 -> 31.9.
Two backends compute the same energy with the same approximation (the permutohedral-lattice
mean field): ``keras`` (the default; ``wsk.models.dense_crf``, in ``keras.ops``, batched, any
Keras backend, in this process) and ``densecrf`` (pydensecrf, the reference; the optional
``wsk[densecrf]``, which needs a C++ compiler to install; run one image per worker process).
This module imports neither Keras nor TensorFlow (the keras backend imports them when first
used), so CRF worker processes start quickly.
"""

import dataclasses
import functools
import os

import numpy as np

from wsk import storage
from wsk.errors import WskError
from wsk.io import load_npz, read_image, write_label_png

# Probabilities are clipped here before the log, so that a zero never becomes an infinite unary.
MIN_PROBABILITY = 1e-8
VOC_IMAGE_SIDE = 500.0   # PASCAL VOC photos' longer side, pixels: where DeepLab's values were validated
CRF_BACKENDS = ("keras", "densecrf")   # the default first (module docstring)
KERAS_PAD = 32           # the keras backend pads each image's sides to a multiple of this
# padded images up to this many pixels run compiled (XLA: ~25 s once per shape on 2 loaded cores,
# then 0.07 s per 64 px image against 0.35 s eager); larger ones eagerly (a compilation per shape
# and vertex count costs more than the images of a dataset save). The environment variable
# COMPILE_PIXELS_ENV overrides it (0: always eager, cheaper when segmenting a handful of images).
KERAS_COMPILED_PIXELS = 128 * 128
COMPILE_PIXELS_ENV = "WSK_CRF_COMPILE_PIXELS"


@dataclasses.dataclass(frozen=True)
class CRFParams:
    """Dense CRF parameters; the defaults are DeepLab-LargeFOV's for PASCAL VOC."""

    bi_w: float = 4.0          # weight of the appearance (bilateral) kernel
    bi_xy_std: float = 121.0   # its spatial standard deviation, pixels
    bi_rgb_std: float = 5.0    # its colour standard deviation, intensity levels
    pos_w: float = 3.0         # weight of the smoothness (Gaussian) kernel
    pos_xy_std: float = 3.0    # its spatial standard deviation, pixels
    iterations: int = 10       # mean-field iterations
    # the longer image side, pixels, the spatial stds are given for; each image scales them by its own
    # longer side over this (module docstring). None: the stds are absolute pixels on every image.
    reference_side: float | None = VOC_IMAGE_SIDE

    def __post_init__(self):
        for name in ("bi_xy_std", "bi_rgb_std", "pos_xy_std", "reference_side"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise WskError(f"CRF parameter {name} must be positive, got {getattr(self, name)}")
        for name in ("bi_w", "pos_w"):
            if not getattr(self, name) >= 0:
                raise WskError(f"CRF parameter {name} must be non-negative, got {getattr(self, name)}")
        if int(self.iterations) != self.iterations or self.iterations < 0:
            raise WskError(f"CRF iterations must be a non-negative integer, got {self.iterations}")


def dense_crf(image, probabilities, bi_w=CRFParams.bi_w, bi_xy_std=CRFParams.bi_xy_std,
              bi_rgb_std=CRFParams.bi_rgb_std, pos_w=CRFParams.pos_w,
              pos_xy_std=CRFParams.pos_xy_std, iterations=CRFParams.iterations,
              reference_side=CRFParams.reference_side, backend="keras"):
    """Refine a softmax map with a fully connected CRF.

    ``image``: RGB uint8 ``(H, W, 3)``; ``probabilities``: ``(H, W, C)`` per-pixel class
    probabilities (each pixel sums to one). The spatial stds act as ``std * max(H, W) /
    reference_side`` pixels (as given when ``reference_side`` is None). ``backend``: one of
    ``CRF_BACKENDS`` (module docstring). Returns ``(labels, refined)``: ``labels`` int32
    ``(H, W)`` the argmax of ``refined``, float32 ``(H, W, C)`` the CRF's mean-field marginals.
    """
    params = CRFParams(bi_w, bi_xy_std, bi_rgb_std, pos_w, pos_xy_std, iterations, reference_side)
    if backend not in CRF_BACKENDS:
        raise WskError(f"unknown CRF backend {backend!r}; choose one of {', '.join(CRF_BACKENDS)}")
    image = np.asarray(image)
    probabilities = np.asarray(probabilities, np.float32)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise WskError(f"the CRF needs an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    if probabilities.ndim != 3 or probabilities.shape[:2] != image.shape[:2]:
        raise WskError(f"the CRF needs probabilities (H, W, C) of the image's size {image.shape[:2]}, "
                       f"got {probabilities.shape}")
    if backend == "keras":
        refined = _keras_crf(image, probabilities, params)
    else:
        refined = _densecrf(image, probabilities, params)
    return refined.argmax(axis=-1).astype(np.int32), refined


def _keras_crf(image, probabilities, params):
    """``wsk.models.dense_crf`` on one image, padded to a multiple of ``KERAS_PAD`` (shapes repeat);
    compiled (``_compiled_steps``) up to ``KERAS_COMPILED_PIXELS``, eager above."""
    height, width, classes = probabilities.shape
    padded_h, padded_w = -(-height // KERAS_PAD) * KERAS_PAD, -(-width // KERAS_PAD) * KERAS_PAD
    images = np.zeros((1, padded_h, padded_w, 3), np.uint8)
    images[0, :height, :width] = image
    padded = np.full((1, padded_h, padded_w, classes), 1.0 / classes, np.float32)
    padded[0, :height, :width] = probabilities
    sizes = np.array([[height, width]], np.int32)
    if padded_h * padded_w > compiled_pixels():   # compiling costs more than it saves here
        import keras   # only when asked for

        from wsk.models.dense_crf import dense_crf_marginals

        sparse = _tensorflow_sparse if keras.backend.backend() == "tensorflow" else None
        marginals = dense_crf_marginals(images, padded, params, sizes, sparse=sparse)
    else:   # grids at their static bound: one compilation per padded shape
        codes, _ = _compiled_steps(params, None)(images, sizes)
        slots = tuple(int(c.ordered.shape[-1]) for c in codes)
        marginals = _compiled_steps(params, slots)(padded, sizes, codes)
    return np.ascontiguousarray(np.asarray(marginals)[0, :height, :width], np.float32)


def _tensorflow_sparse(lattice, norm=None, w=1.0):
    """``lattice`` with the ``splat``, ``blur`` and ``slice`` functions of ``w * norm * K(norm * q)``
    (``norm`` ``(N,)``; None: of ``K q``) as products with ``tf.SparseTensor``s (``marginals_from_codes``'
    ``sparse``), for the eager keras CRF under TensorFlow. Given a lattice it made itself, it keeps
    the matrices' indices and changes their values. ``tf.sparse.sparse_dense_matmul`` is
    multithreaded, needs no ``(N, C)`` gather per corner, and the normalisation and weight ride in
    the matrices' values instead of passes over ``(N, C)``.

    Measured at VOC size, 21 classes, against ``keras.ops``' segment sums and gathers: a bilateral
    filter 41 ms against 162, each axis' blur as a three-entries-a-row matrix 1.4 ms against 10.6;
    the splat through ``keras.ops.matmul``, which reshapes sparse operands to batches, 140 ms. The
    splat's entries stay in point order: sorting them by vertex cost 200 ms a lattice and saved
    nothing. XLA does not compile these products, and JAX's BCOO was no faster than ``keras.ops``
    (46 and 45 ms against 41 and 66 for a splat and a slice), so the other paths keep theirs."""
    import tensorflow as tf

    def times(matrix):
        return functools.partial(tf.sparse.sparse_dense_matmul, matrix)

    points, dim = lattice.weight.shape
    weight = lattice.weight if norm is None else lattice.weight * norm[:, None]
    weight = tf.reshape(weight, [-1])
    scale = np.float32(w / (1.0 + 2.0 ** -(dim - 1)))
    if lattice.splat is not None:   # this function's own lattice: new values on the same indices
        splat, slice_ = lattice.splat.args[0], lattice.slice.args[0]
        return lattice._replace(splat=times(tf.SparseTensor(splat.indices, weight, splat.dense_shape)),
                                slice=times(tf.SparseTensor(slice_.indices, scale * weight, slice_.dense_shape)))
    rows = lattice.neighbours.shape[-1]
    vertex = tf.reshape(tf.cast(lattice.vertex, tf.int64), [-1])
    point = tf.repeat(tf.range(points, dtype=tf.int64), dim)
    splat = tf.SparseTensor(tf.stack([vertex, point], axis=1), weight, (rows, points))
    slice_ = tf.SparseTensor(tf.stack([point, vertex], axis=1), scale * weight, (points, rows))
    # each axis' blur, grid + (left + right) / 2, as a (rows, rows) matrix of three entries a row
    row = tf.range(rows, dtype=tf.int64)
    blurs = [tf.SparseTensor(tf.reshape(tf.stack([row, row, row, tf.cast(left, tf.int64), row,
                                                  tf.cast(right, tf.int64)], axis=1), (-1, 2)),
                             tf.tile(tf.constant([1.0, 0.5, 0.5]), [rows]), (rows, rows))
             for left, right in tf.unstack(lattice.neighbours, axis=0)]

    def blur(grid):
        for axis in blurs:
            grid = tf.sparse.sparse_dense_matmul(axis, grid)
        return grid

    return lattice._replace(splat=times(splat), blur=blur, slice=times(slice_))


def compiled_pixels():
    """The largest padded image (pixels) the keras backend compiles for: ``KERAS_COMPILED_PIXELS``,
    or the environment's ``COMPILE_PIXELS_ENV`` (read at each call)."""
    value = os.environ.get(COMPILE_PIXELS_ENV)
    if value is None:
        return KERAS_COMPILED_PIXELS
    try:
        return int(value)
    except ValueError:
        raise WskError(f"{COMPILE_PIXELS_ENV} must be a whole number of pixels, got {value!r}") from None


@functools.lru_cache(maxsize=None)
def _compiled_steps(params, slots):
    """``wsk.models.dense_crf``'s two steps for ``params`` compiled by the Keras backend (XLA under
    TensorFlow and JAX, once per input shape): ``lattice_codes`` (``slots`` None) or
    ``marginals_from_codes`` on grids of ``slots`` rows. Other backends run them as they are."""
    import keras

    from wsk.models.dense_crf import lattice_codes, marginals_from_codes
    from wsk.models.permutohedral import lower_bound

    if slots is None:
        def step(images, sizes):
            return lattice_codes(images, sizes, params, unroll=False)
    else:
        def step(probabilities, sizes, codes):
            return marginals_from_codes(probabilities, sizes, params, codes, slots, unroll=False,
                                        search=lower_bound)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        return tf.function(step, jit_compile=True)
    if keras.backend.backend() == "jax":
        import jax
        return jax.jit(step)
    return step


def _densecrf(image, probabilities, params):
    """pydensecrf's ``DenseCRF2D`` (the reference; an optional dependency, ``wsk[densecrf]``)."""
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError:
        raise WskError("the densecrf CRF backend needs pydensecrf: pip install 'wsk[densecrf]' "
                       "(or use --crf-backend keras)") from None
    height, width, classes = probabilities.shape
    scale = 1.0 if params.reference_side is None else max(height, width) / params.reference_side
    unary = -np.log(np.clip(probabilities, MIN_PROBABILITY, 1.0))
    unary = np.ascontiguousarray(unary.reshape(height * width, classes).T)
    crf = dcrf.DenseCRF2D(width, height, classes)
    crf.setUnaryEnergy(unary)
    crf.addPairwiseGaussian(sxy=params.pos_xy_std * scale, compat=params.pos_w)
    crf.addPairwiseBilateral(sxy=params.bi_xy_std * scale, srgb=params.bi_rgb_std,
                             rgbim=np.ascontiguousarray(image), compat=params.bi_w)
    marginals = np.asarray(crf.inference(int(params.iterations)), np.float32)
    return np.ascontiguousarray(marginals.reshape(classes, height, width).transpose(1, 2, 0))


def refine_saved(image_id, tasks, params, backend="densecrf"):
    """CRF worker for ``wsk.stages.run_per_image``: one image's saved softmax -> label PNG.

    ``tasks[image_id]`` is ``(image_path, probabilities_npz, out_png)``; the ``.npz`` holds
    ``probabilities`` (H, W, C) float. The PNG is written atomically, then the ``.npz`` removed.
    """
    image_path, probabilities_path, out_path = tasks[image_id]
    probabilities = load_npz(probabilities_path, required=("probabilities",))["probabilities"]
    image = read_image(image_path)
    if probabilities.shape[:2] != image.shape[:2]:
        raise WskError(f"saved probabilities are {probabilities.shape[:2]}, the image "
                       f"{image.shape[:2]}", probabilities_path)
    labels, _ = dense_crf(image, probabilities, **dataclasses.asdict(params), backend=backend)
    write_label_png(out_path, labels)
    storage.remove(probabilities_path)
