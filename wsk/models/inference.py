"""Dense prediction with DeepLab-LargeFOV at test time, the way DeepLab's Caffe models do it.

One implementation shared by ``wsk predict``, ``wsk eval --model``, the SavedModel export and
``Segmenter``, the zoo's model for raw images (``wsk.zoo.load(name).predict(images)``),
so it uses ``keras.ops`` only (no TensorFlow import) and accepts dynamic image sizes: on the
TensorFlow backend every size below may be a scalar tensor inside a traced graph.

The test-time procedure (DeepLab [7], the segmentation network of §3.3 of the paper):

1. ``preprocess_input``: RGB -> BGR minus the ImageNet mean colour;
2. ``pad_to_grid``: pad bottom/right to a size ``8k + 1`` with the mean colour (zero after
   preprocessing), so that the stride-8 logits (``k + 1`` of them) sit exactly on every
   eighth pixel (``4k + 1`` and every fourth pixel for a network of output stride 4: the stride
   is the network's own, ``network_output_stride``);
3. the network gives logits at its output stride;
4. ``upsample_aligned``: bilinear up-sampling with aligned corners (Caffe's ``Interp`` layer)
   to the padded size, then crop back to the image;
5. softmax over classes and argmax.

Photos larger than the network's training scale (``segment_photos``, what ``wsk predict``, the
``Segmenter`` and the SavedModel run): the photo is resized down to at most ``max_side`` (area
average), segmented (and refined by the dense CRF) there, and its scores are up-sampled back to the
photo's size a band of rows at a time, so memory stays bounded whatever the photo's size.
"""

import dataclasses

import keras
import numpy as np
from keras import ops

from wsk.crf import CRFParams
from wsk.errors import WskError
from wsk.models.deeplab import OUTPUT_STRIDE
from wsk.models.dense_crf import dense_crf_marginals
from wsk.models.description import recipe_max_side
from wsk.models.preprocessing import preprocess_input


def grid_size(size, multiple=OUTPUT_STRIDE):
    """The smallest ``multiple * k + 1 >= size`` (330 -> 337, 321 -> 321 for ``multiple=8``).

    ``size`` may be an int or a scalar integer tensor.
    """
    return ((size + multiple - 2) // multiple) * multiple + 1


def pad_to_grid(images, multiple=OUTPUT_STRIDE):
    """Pad preprocessed images ``(B, H, W, C)`` at the bottom and right with zeros to ``8k + 1``.

    Zero is the mean colour once ``preprocess_input`` has subtracted the mean, as in DeepLab's
    test-time padding. Returns the padded ``(B, grid_size(H), grid_size(W), C)`` tensor.
    """
    images = ops.convert_to_tensor(images)
    _, height, width, _ = ops.shape(images)
    pad_h = grid_size(height, multiple) - height
    pad_w = grid_size(width, multiple) - width
    return ops.pad(images, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])


def _aligned_source(size_in, size_out):
    """For each output index ``i`` the two input indices and the weight of the second one.

    Output pixel ``i`` samples input coordinate ``i * (in - 1) / (out - 1)`` (0 when
    ``out == 1``), as Caffe's ``Interp`` layer and ``align_corners=True`` do. The product is
    taken in integers before the division so that coordinates that are whole numbers come
    out exactly.
    """
    index = ops.arange(size_out, dtype="int32")
    numerator = ops.cast(index * (size_in - 1), "float32")
    denominator = ops.cast(ops.maximum(size_out - 1, 1), "float32")
    position = numerator / denominator
    low = ops.minimum(ops.cast(ops.floor(position), "int32"), size_in - 1)
    high = ops.minimum(low + 1, size_in - 1)
    weight = position - ops.cast(low, "float32")
    return low, high, weight


def upsample_aligned(logits, height, width):
    """Bilinear resize of ``(B, h, w, C)`` to ``(B, height, width, C)`` with aligned corners.

    Corner pixels of the input and output coincide, and output pixel ``(i, j)`` interpolates
    the input at ``(i * (h - 1) / (height - 1), j * (w - 1) / (width - 1))``: DeepLab/Caffe's
    ``Interp`` layer. Built from gathers and linear interpolation (``keras.ops``), so ``height``
    and ``width`` may be symbolic. Returns float32.
    """
    logits = ops.cast(ops.convert_to_tensor(logits), "float32")
    _, size_h, size_w, _ = ops.shape(logits)
    top, bottom, weight_y = _aligned_source(size_h, height)
    left, right, weight_x = _aligned_source(size_w, width)
    weight_y = ops.reshape(weight_y, (1, -1, 1, 1))
    weight_x = ops.reshape(weight_x, (1, 1, -1, 1))
    upper = ops.take(logits, top, axis=1)
    lower = ops.take(logits, bottom, axis=1)
    rows = upper + (lower - upper) * weight_y
    west = ops.take(rows, left, axis=2)
    east = ops.take(rows, right, axis=2)
    return west + (east - west) * weight_x


PROBE_SIDE = 129   # 128 + 1: a side every power-of-two stride up to 128 maps to k + 1 logits


def network_output_stride(model):
    """The output stride of a segmentation network: the ``s`` for which an ``s k + 1`` input gives
    ``k + 1`` logits, read from the network's own output shape for a ``PROBE_SIDE`` input (no
    pixel is computed). DeepLab-LargeFOV's is 8, or 4 (``deeplab_largefov(output_stride=4)``);
    a saved network carries its own, so nothing else needs to record it."""
    side = model.compute_output_shape((1, PROBE_SIDE, PROBE_SIDE, 3))[1]
    if side is None or side < 2 or (PROBE_SIDE - 1) % (side - 1):
        raise WskError(f"{model.name}: a {PROBE_SIDE}-pixel input gives {side} logits, which is "
                       f"no output stride (an s k + 1 input must give k + 1)")
    return (PROBE_SIDE - 1) // (side - 1)


def segment(model, images, stride=None):
    """Segment a batch of equally sized RGB images ``(B, H, W, 3)`` (uint8 or float, 0..255).

    ``model`` maps preprocessed images to logits at output stride ``stride`` (a
    ``deeplab_largefov`` model; None: ``network_output_stride(model)``). Returns ``(labels, probabilities)``: ``labels`` int32
    ``(B, H, W)`` (argmax) and ``probabilities`` float32 ``(B, H, W, C)`` (softmax of the
    logits up-sampled with aligned corners to the padded size and cropped to ``H x W``).
    Backend tensors come back; ``keras.ops.convert_to_numpy`` turns them into arrays.
    """
    images = ops.convert_to_tensor(images)
    if len(images.shape) != 4:
        raise ValueError(f"segment() takes a batch (B, H, W, 3), got shape {tuple(images.shape)}")
    _, height, width, _ = ops.shape(images)
    stride = network_output_stride(model) if stride is None else stride
    padded = pad_to_grid(preprocess_input(images), stride)
    logits = model(padded, training=False)
    logits = upsample_aligned(logits, grid_size(height, stride), grid_size(width, stride))
    logits = logits[:, :height, :width, :]
    probabilities = ops.softmax(logits, axis=-1)
    labels = ops.cast(ops.argmax(logits, axis=-1), "int32")
    return labels, probabilities


# --- photos of any size: the network (and the CRF) run at most at ``max_side`` -------------------

TILE_ROWS = 64   # rows of labels up-sampled at once: 64 x 4000 x 21 float32 scores is 21 MB


def _is_static(*sizes):
    return all(isinstance(size, int) for size in sizes)


def working_size(height, width, max_side):
    """The size the network runs at: ``(height, width)`` scaled so that the longer side is
    ``max_side`` (rounded half up, at least 1; aspect kept), or unchanged when it fits (never up).

    ``max_side`` None: unchanged. Integer arithmetic throughout, so ints and scalar int tensors
    give the same sizes (a 4000 x 3000 photo at 500: 500 x 375).
    """
    if max_side is None:
        return height, width
    if _is_static(height, width):
        longer = max(height, width)
        if longer <= max_side:
            return height, width
        return tuple(max(1, (2 * side * max_side + longer) // (2 * longer)) for side in (height, width))
    longer = ops.maximum(height, width)
    return tuple(ops.where(longer <= max_side, side,
                           ops.maximum(1, (2 * side * max_side + longer) // (2 * longer)))
                 for side in (height, width))


def _area_weights(size_in, size_out):
    """``(size_out, size_in)`` box-filter weights: output pixel ``i`` averages the input interval
    ``[i * in / out, (i + 1) * in / out)``, each input pixel weighted by its overlap with it."""
    index = ops.arange(size_out, dtype="int32")
    scale = ops.cast(size_out, "float32")
    start = ops.cast(index * size_in, "float32") / scale
    end = ops.cast((index + 1) * size_in, "float32") / scale
    pixel = ops.cast(ops.arange(size_in, dtype="int32"), "float32")[None, :]
    overlap = ops.minimum(end[:, None], pixel + 1.0) - ops.maximum(start[:, None], pixel)
    return ops.maximum(overlap, 0.0) * (scale / ops.cast(size_in, "float32"))


def resize_image(images, height, width):
    """Area (box-filter) resize of RGB images ``(B, H, W, 3)`` to ``(B, height, width, 3)``,
    rounded half up to whole intensity levels (float32 in 0..255), as a resized photo file would
    be. The same size gives the images back as they are. Sizes may be symbolic."""
    images = ops.cast(ops.convert_to_tensor(images), "float32")
    _, size_h, size_w, _ = ops.shape(images)
    rows = ops.einsum("oh,bhwc->bowc", _area_weights(size_h, height), images)
    resized = ops.einsum("pw,bowc->bopc", _area_weights(size_w, width), rows)
    return ops.clip(ops.floor(resized + 0.5), 0.0, 255.0)


def _half_pixel_source(size_in, size_out):
    """For each output index the two input indices and the weight of the second: output pixel
    ``i`` samples input coordinate ``(i + 1/2) * in / out - 1/2``, clamped to the image (pixel
    centres aligned, as when scores of a resized photo go back to the photo)."""
    index = ops.arange(size_out, dtype="int32")
    position = ops.cast((2 * index + 1) * size_in - size_out, "float32") / ops.cast(2 * size_out, "float32")
    position = ops.clip(position, 0.0, ops.cast(size_in - 1, "float32"))
    low = ops.cast(ops.floor(position), "int32")
    high = ops.minimum(low + 1, size_in - 1)
    return low, high, position - ops.cast(low, "float32")


def _tile_labels(scores, rows, columns):
    """Argmax ``(B, T, W)`` of the bilinear scores at output rows ``rows`` = ``(top, bottom, weight)``."""
    top, bottom, weight_y = rows
    left, right, weight_x = columns
    upper = ops.take(scores, top, axis=1)
    lower = ops.take(scores, bottom, axis=1)
    band = upper + (lower - upper) * ops.reshape(weight_y, (1, -1, 1, 1))
    west = ops.take(band, left, axis=2)
    east = ops.take(band, right, axis=2)
    return ops.cast(ops.argmax(west + (east - west) * ops.reshape(weight_x, (1, 1, -1, 1)), axis=-1), "int32")


def upsample_labels(scores, height, width, tile_rows=TILE_ROWS):
    """Labels ``(B, height, width)`` int32: the argmax of ``scores`` ``(B, h, w, C)`` bilinearly
    up-sampled (``_half_pixel_source``) to ``height x width``, ``tile_rows`` output rows at a time,
    so that no ``(B, height, width, C)`` tensor is ever held. Sizes may be symbolic."""
    scores = ops.cast(ops.convert_to_tensor(scores), "float32")
    _, size_h, size_w, _ = ops.shape(scores)
    columns = _half_pixel_source(size_w, width)
    top, bottom, weight_y = _half_pixel_source(size_h, height)
    if _is_static(height):
        tiles = [_tile_labels(scores, (top[start:start + tile_rows], bottom[start:start + tile_rows],
                                       weight_y[start:start + tile_rows]), columns)
                 for start in range(0, height, tile_rows)]
        return tiles[0] if len(tiles) == 1 else ops.concatenate(tiles, axis=1)
    count = (height + tile_rows - 1) // tile_rows

    def tile(k):
        index = ops.minimum(k * tile_rows + ops.arange(tile_rows, dtype="int32"), height - 1)
        return _tile_labels(scores, (ops.take(top, index), ops.take(bottom, index),
                                     ops.take(weight_y, index)), columns)

    tiles = ops.map(tile, ops.arange(count, dtype="int32"))            # (tiles, B, T, W)
    labels = ops.reshape(ops.transpose(tiles, (1, 0, 2, 3)), (ops.shape(scores)[0], -1, width))
    return labels[:, :height]


def _crf_marginals(images, probabilities, crf, max_side):
    """The dense CRF's marginals (``wsk.models.dense_crf``) of images at the working size.

    With symbolic sizes (a graph over images of any size) both are placed on a fixed
    ``max_side x max_side`` canvas whose extra pixels stay out of the lattice (``sizes``)."""
    _, height, width, classes = ops.shape(probabilities)
    if _is_static(height, width):
        return dense_crf_marginals(images, probabilities, crf)
    if max_side is None:
        raise WskError("the dense CRF in a graph over images of any size needs a max_side")
    rows = ops.minimum(ops.arange(max_side, dtype="int32"), height - 1)
    cols = ops.minimum(ops.arange(max_side, dtype="int32"), width - 1)
    canvas = [ops.take(ops.take(x, rows, axis=1), cols, axis=2) for x in (images, probabilities)]
    sizes = ops.ones_like(canvas[1][:, 0, 0, :1], "int32") * ops.stack([height, width])[None]
    return dense_crf_marginals(canvas[0], canvas[1], crf, sizes)[:, :height, :width]


def segment_photos(model, images, max_side=None, crf=None):
    """Segment equally sized RGB photos ``(B, H, W, 3)`` of any size in bounded memory.

    Each photo is resized (``resize_image``) to ``working_size(H, W, max_side)``, segmented there
    (``segment``), refined by the dense CRF when ``crf`` (a ``wsk.crf.CRFParams``) is given, and its
    scores up-sampled back to ``H x W`` a band of rows at a time (``upsample_labels``). Returns
    ``(labels, probabilities)``: int32 ``(B, H, W)`` and float32 softmax (or CRF marginals) at the
    working size. A photo that fits in ``max_side`` gives ``segment``'s labels.
    """
    images = ops.convert_to_tensor(images)
    if len(images.shape) != 4:
        raise ValueError(f"segment_photos() takes a batch (B, H, W, 3), got shape {tuple(images.shape)}")
    _, height, width, _ = ops.shape(images)
    work_h, work_w = working_size(height, width, max_side)
    if not (_is_static(work_h, work_w) and (work_h, work_w) == (height, width)):
        images = resize_image(images, work_h, work_w)
    _, probabilities = segment(model, images)
    if crf is not None:
        probabilities = _crf_marginals(images, probabilities, crf, max_side)
    return upsample_labels(probabilities, height, width), probabilities


def segment_padded(model, images, sizes, max_side=None, crf=None):
    """``segment_photos`` of each image of a padded batch alone: ``images`` ``(B, H, W, 3)`` whose
    image ``b`` is its top-left ``sizes[b] = (height, width)``. Returns labels ``(B, H, W)`` int32,
    0 outside each image; the padding never reaches the network or the CRF."""
    images = ops.convert_to_tensor(images)
    _, height, width, _ = ops.shape(images)

    def one(image, size):
        labels = segment_photos(model, image[None, :size[0], :size[1]], max_side, crf)[0][0]
        return ops.pad(labels, [[0, height - size[0]], [0, width - size[1]]])

    try:
        sizes = np.asarray(ops.convert_to_numpy(sizes), np.int64).tolist()   # eager: a loop
    except Exception:   # symbolic: mapped in the graph
        return ops.map(lambda args: one(*args), (images, ops.cast(sizes, "int32")))
    return ops.stack([one(images[b], size) for b, size in enumerate(sizes)])


@keras.saving.register_keras_serializable(package="wsk")
class Segmenter(keras.Model):
    """A segmentation network that takes raw images: uint8 RGB ``(B, H, W, 3)`` of any size in,
    int32 label maps ``(B, H, W)`` out, as keras-hub's ``ImageSegmenter`` does.

    Preprocessing, padding to ``8k + 1``, aligned-corner up-sampling, the resize to at most
    ``max_side`` and back, and the dense CRF when ``crf`` (a ``wsk.crf.CRFParams``) is given run
    inside (``segment_photos``, the same code as ``wsk predict`` and the SavedModel export).
    ``max_side`` None is the paper's training scale (``recipe_max_side()``). ``network`` is the raw
    DeepLab-LargeFOV (preprocessed input, logits at its output stride); ``class_names`` name the outputs.
    ``segmenter(images, sizes)`` segments a padded batch (``segment_padded``);
    ``segmenter.segment(images)`` gives ``(labels, probabilities at the working size)``.
    """

    def __init__(self, network, class_names=None, max_side=None, crf=None, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.class_names = None if class_names is None else tuple(class_names)
        self.max_side = recipe_max_side() if max_side is None else int(max_side)
        if self.max_side < 1:
            raise WskError(f"max_side must be a positive number of pixels, got {max_side}")
        self.crf = CRFParams(**crf) if isinstance(crf, dict) else crf
        self.built = network.built   # nothing of its own to build: saved at once with the network's weights

    def call(self, images, sizes=None):
        if sizes is not None:
            return segment_padded(self.network, images, sizes, self.max_side, self.crf)
        return segment_photos(self.network, images, self.max_side, self.crf)[0]

    def segment(self, images):
        """``(labels int32 (B, H, W), probabilities float32 (B, h, w, C))`` of raw RGB images,
        the probabilities (CRF marginals with ``crf``) at the working size."""
        return segment_photos(self.network, images, self.max_side, self.crf)

    def get_config(self):
        return {**super().get_config(), "network": keras.saving.serialize_keras_object(self.network),
                "class_names": None if self.class_names is None else list(self.class_names),
                "max_side": self.max_side,
                "crf": None if self.crf is None else dataclasses.asdict(self.crf)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["network"] = keras.saving.deserialize_keras_object(config["network"])
        return cls(**config)
