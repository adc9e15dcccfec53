"""DeepLab's input preprocessing: RGB to BGR, minus the Caffe VGG-16 mean (104.008, 116.669, 122.675).

One function for training, inference and export, so the three can never disagree.
"""

import sys

import numpy as np
from keras import ops

# Mean pixel of DeepLab's VGG-16 model, in BGR order (the order the network sees).
MEAN_BGR = (104.008, 116.669, 122.675)


def preprocess_input(images):
    """RGB images ``(..., H, W, 3)``, uint8 or float in [0, 255] -> BGR minus ``MEAN_BGR``, float32.

    A NumPy array (or nested list) gives a NumPy array; a TensorFlow tensor (a ``tf.data``
    map, an exported serving function) gives a TensorFlow tensor whatever the Keras backend;
    any other backend tensor gives a tensor of that backend.
    """
    mean = np.asarray(MEAN_BGR, dtype=np.float32)
    if isinstance(images, (np.ndarray, list, tuple)) or np.isscalar(images):
        return np.asarray(images, dtype=np.float32)[..., ::-1] - mean
    tf = _tensorflow_of(images)
    if tf is not None:  # a tf.data pipeline or a TF graph, whatever the Keras backend
        return tf.reverse(tf.cast(images, tf.float32), axis=[-1]) - mean
    x = ops.cast(images, "float32")
    return ops.flip(x, axis=-1) - ops.convert_to_tensor(mean)


def _tensorflow_of(x):
    """The (already loaded) TensorFlow module when ``x`` is a TensorFlow tensor, else None.

    Nothing is imported: a TensorFlow tensor can only exist once TensorFlow is loaded, so
    ``wsk.models`` stays importable without TensorFlow.
    """
    if type(x).__module__.split(".")[0] != "tensorflow":
        return None
    return sys.modules.get("tensorflow")


def resize_hypotheses(images, size):
    """Images ``(..., H, W, 3)`` resized to ``(..., size, size, 3)`` float32: bilinear with half-pixel
    centres, no antialiasing. HCP's hypotheses are made this way wherever they are made (training
    crops, proposal scoring, the exported classifier)."""
    return ops.image.resize(ops.cast(images, "float32"), (size, size), interpolation="bilinear",
                            antialias=False)


def crop_hypothesis(image, box, size):
    """Box ``(x0, y0, x1, y1)`` (end exclusive, inside the image) of ``image`` ``(H, W, 3)``, resized to
    ``(size, size, 3)`` by ``resize_hypotheses``: one HCP hypothesis (§3.1)."""
    x0, y0, x1, y1 = box[0], box[1], box[2], box[3]
    return resize_hypotheses(image[y0:y1, x0:x1], size)
