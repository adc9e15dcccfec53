"""Dense prediction with DeepLab-LargeFOV at test time, the way DeepLab's Caffe models do it.

One implementation shared by ``wsk predict``, ``wsk eval --model``, the SavedModel export and
``Segmenter``, the zoo's model for raw images (``wsk.zoo.load(name).predict(images)``),
so it uses ``keras.ops`` only (no TensorFlow import) and accepts dynamic image sizes: on the
TensorFlow backend every size below may be a scalar tensor inside a traced graph.

The test-time procedure (DeepLab [7], the segmentation network of §3.3 of the paper):

1. ``preprocess_input``: RGB -> BGR minus the ImageNet mean colour;
2. ``pad_to_grid``: pad bottom/right to a size ``8k + 1`` with the mean colour (zero after
   preprocessing), so that the stride-8 logits (``k + 1`` of them) sit exactly on every
   eighth pixel;
3. the network gives logits at output stride 8;
4. ``upsample_aligned``: bilinear up-sampling with aligned corners (Caffe's ``Interp`` layer)
   to the padded size, then crop back to the image;
5. softmax over classes and argmax.
"""

import keras
from keras import ops

from wsk.models.deeplab import OUTPUT_STRIDE
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


def segment(model, images, stride=OUTPUT_STRIDE):
    """Segment a batch of equally sized RGB images ``(B, H, W, 3)`` (uint8 or float, 0..255).

    ``model`` maps preprocessed images to logits at output stride ``stride`` (a
    ``deeplab_largefov`` model). Returns ``(labels, probabilities)``: ``labels`` int32
    ``(B, H, W)`` (argmax) and ``probabilities`` float32 ``(B, H, W, C)`` (softmax of the
    logits up-sampled with aligned corners to the padded size and cropped to ``H x W``).
    Backend tensors come back; ``keras.ops.convert_to_numpy`` turns them into arrays.
    """
    images = ops.convert_to_tensor(images)
    if len(images.shape) != 4:
        raise ValueError(f"segment() takes a batch (B, H, W, 3), got shape {tuple(images.shape)}")
    _, height, width, _ = ops.shape(images)
    padded = pad_to_grid(preprocess_input(images), stride)
    logits = model(padded, training=False)
    logits = upsample_aligned(logits, grid_size(height, stride), grid_size(width, stride))
    logits = logits[:, :height, :width, :]
    probabilities = ops.softmax(logits, axis=-1)
    labels = ops.cast(ops.argmax(logits, axis=-1), "int32")
    return labels, probabilities


@keras.saving.register_keras_serializable(package="wsk")
class Segmenter(keras.Model):
    """A segmentation network that takes raw images: uint8 RGB ``(B, H, W, 3)`` of any size in,
    int32 label maps ``(B, H, W)`` out, as keras-hub's ``ImageSegmenter`` does.

    Preprocessing, padding to ``8k + 1`` and aligned-corner up-sampling run inside (``segment``,
    the same code as ``wsk predict`` and the SavedModel export). ``network`` is the raw
    DeepLab-LargeFOV (preprocessed input, stride-8 logits); ``class_names`` name the outputs.
    ``segmenter.segment(images)`` gives ``(labels, probabilities)``.
    """

    def __init__(self, network, class_names=None, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.class_names = None if class_names is None else tuple(class_names)
        self.built = network.built   # nothing of its own to build: saved at once with the network's weights

    def call(self, images):
        return segment(self.network, images)[0]

    def segment(self, images):
        """``(labels int32 (B, H, W), probabilities float32 (B, H, W, C))`` of raw RGB images."""
        return segment(self.network, images)

    def get_config(self):
        return {**super().get_config(), "network": keras.saving.serialize_keras_object(self.network),
                "class_names": None if self.class_names is None else list(self.class_names)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["network"] = keras.saving.deserialize_keras_object(config["network"])
        return cls(**config)
