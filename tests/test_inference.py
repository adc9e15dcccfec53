"""wsk.models.inference: grid padding, Caffe-style aligned up-sampling and segment()."""

import keras
import numpy as np
import pytest
from keras import ops

from wsk.models.inference import grid_size, pad_to_grid, segment, upsample_aligned

MEAN_BGR = np.array([104.008, 116.669, 122.675], np.float32)


def naive_upsample(x, height, width):
    """Reference: aligned-corner bilinear resize of (B, h, w, C), one output pixel at a time."""
    batch, h, w, channels = x.shape
    out = np.zeros((batch, height, width, channels), np.float64)
    for i in range(height):
        y = i * (h - 1) / (height - 1) if height > 1 else 0.0
        y0 = min(int(np.floor(y)), h - 1)
        y1 = min(y0 + 1, h - 1)
        dy = y - y0
        for j in range(width):
            xx = j * (w - 1) / (width - 1) if width > 1 else 0.0
            x0 = min(int(np.floor(xx)), w - 1)
            x1 = min(x0 + 1, w - 1)
            dx = xx - x0
            out[:, i, j] = ((1 - dy) * (1 - dx) * x[:, y0, x0] + (1 - dy) * dx * x[:, y0, x1]
                            + dy * (1 - dx) * x[:, y1, x0] + dy * dx * x[:, y1, x1])
    return out


def as_image(values):
    """(h, w) -> (1, h, w, 1) float32."""
    return np.asarray(values, np.float32)[None, :, :, None]


def test_upsample_2x2_to_3x3_by_hand():
    # Corners stay; the new middle row/column are averages of their two neighbours.
    out = ops.convert_to_numpy(upsample_aligned(as_image([[0, 0], [0, 4]]), 3, 3))[0, :, :, 0]
    np.testing.assert_allclose(out, [[0, 0, 0], [0, 1, 2], [0, 2, 4]], atol=1e-6)


def test_upsample_3x3_to_5x5_by_hand():
    # A single peak of 8 spreads as the product of two tents (0, .5, 1, .5, 0).
    peak = [[0, 0, 0], [0, 8, 0], [0, 0, 0]]
    out = ops.convert_to_numpy(upsample_aligned(as_image(peak), 5, 5))[0, :, :, 0]
    expected = [[0, 0, 0, 0, 0],
                [0, 2, 4, 2, 0],
                [0, 4, 8, 4, 0],
                [0, 2, 4, 2, 0],
                [0, 0, 0, 0, 0]]
    np.testing.assert_allclose(out, expected, atol=1e-6)
    # A ramp 0, 1, 2 along x becomes 0, .5, 1, 1.5, 2 in every row.
    ramp = np.tile([0.0, 1.0, 2.0], (3, 1))
    out = ops.convert_to_numpy(upsample_aligned(as_image(ramp), 5, 5))[0, :, :, 0]
    np.testing.assert_allclose(out, np.tile([0, 0.5, 1, 1.5, 2], (5, 1)), atol=1e-6)


@pytest.mark.parametrize("shape, size", [
    ((2, 5, 7, 3), (33, 49)),    # stride 8 exactly: the test-time case
    ((1, 4, 6, 2), (10, 13)),    # ratios that are not whole numbers
    ((1, 6, 3, 1), (4, 2)),      # shrinking
    ((1, 1, 3, 2), (5, 7)),      # a single row in
    ((1, 4, 4, 1), (1, 6)),      # a single row out samples the first row
])
def test_upsample_matches_naive_loop(shape, size):
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    out = ops.convert_to_numpy(upsample_aligned(x, *size))
    assert out.shape == (shape[0], *size, shape[3])
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, naive_upsample(x.astype(np.float64), *size), atol=1e-5)


def test_upsample_in_a_graph_with_dynamic_sizes():
    if keras.backend.backend() != "tensorflow":
        pytest.skip("dynamic shapes are a TensorFlow-backend feature")
    import tensorflow as tf

    function = tf.function(upsample_aligned, input_signature=[
        tf.TensorSpec([None, None, None, None], tf.float32),
        tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32)])
    graph = function.get_concrete_function()  # traced once, with no size known
    for shape, size in [((1, 5, 7, 3), (33, 49)), ((2, 3, 2, 4), (9, 4))]:
        x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
        out = graph(tf.constant(x), tf.constant(size[0]), tf.constant(size[1])).numpy()
        np.testing.assert_allclose(out, naive_upsample(x.astype(np.float64), *size), atol=1e-5)


@pytest.mark.parametrize("size, padded", [(330, 337), (321, 321), (1, 1), (9, 9), (10, 17), (500, 505),
                                          (513, 513), (8, 9)])
def test_grid_size(size, padded):
    assert grid_size(size) == padded
    assert (padded - 1) % 8 == 0 and padded >= size > padded - 8


def test_pad_to_grid_pads_bottom_right_with_zeros():
    x = np.random.default_rng(0).normal(size=(2, 330, 321, 3)).astype(np.float32) + 5
    out = ops.convert_to_numpy(pad_to_grid(x))
    assert out.shape == (2, 337, 321, 3)
    np.testing.assert_array_equal(out[:, :330], x)
    assert not out[:, 330:].any()
    small = ops.convert_to_numpy(pad_to_grid(np.ones((1, 10, 17, 2), np.float32)))
    assert small.shape == (1, 17, 17, 2)
    assert small[0, :10, :17].all() and not small[0, 10:].any()


def grid_sampler(num_classes=3):
    """Stand-in network: a 1x1 convolution of stride 8 (logits (H-1)//8+1 of an 8k+1 input).

    Its logits at grid point (i, j) are a fixed linear map of the preprocessed pixel (8i, 8j).
    """
    inputs = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(num_classes, 1, strides=8)
    model = keras.Model(inputs, conv(inputs))
    kernel = np.random.default_rng(3).normal(size=(1, 1, 3, num_classes)).astype(np.float32) * 0.05
    bias = np.linspace(-0.5, 0.5, num_classes).astype(np.float32)
    conv.set_weights([kernel, bias])
    return model, kernel[0, 0], bias


def expected_segmentation(images, kernel, bias):
    """NumPy reference of segment() for ``grid_sampler``: pad, sample, up-sample, crop, softmax."""
    batch, height, width, _ = images.shape
    padded_h, padded_w = (height + 6) // 8 * 8 + 1, (width + 6) // 8 * 8 + 1
    x = np.zeros((batch, padded_h, padded_w, 3), np.float64)
    x[:, :height, :width] = images[..., ::-1].astype(np.float64) - MEAN_BGR
    logits = x[:, ::8, ::8] @ kernel.astype(np.float64) + bias
    dense = naive_upsample(logits, padded_h, padded_w)[:, :height, :width]
    exp = np.exp(dense - dense.max(-1, keepdims=True))
    return exp / exp.sum(-1, keepdims=True)


@pytest.mark.parametrize("shape", [(1, 30, 41, 3), (2, 17, 24, 3), (1, 33, 9, 3)])
def test_segment_with_a_stand_in_network(shape):
    model, kernel, bias = grid_sampler()
    images = np.random.default_rng(4).integers(0, 256, size=shape, dtype=np.uint8)
    labels, probabilities = segment(model, images)
    labels, probabilities = ops.convert_to_numpy(labels), ops.convert_to_numpy(probabilities)
    assert labels.shape == shape[:3] and labels.dtype == np.int32
    assert probabilities.shape == (*shape[:3], 3) and probabilities.dtype == np.float32
    expected = expected_segmentation(images, kernel, bias)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
    margin = np.sort(expected, -1)[..., -1] - np.sort(expected, -1)[..., -2]
    clear = margin > 1e-4  # ties within rounding may go either way
    np.testing.assert_array_equal(labels[clear], expected.argmax(-1)[clear])


def test_segment_with_deeplab_largefov():
    from wsk.models import deeplab_largefov

    keras.utils.set_random_seed(0)
    model = deeplab_largefov(num_classes=5, width=0.0625)
    rng = np.random.default_rng(5)
    for shape in [(1, 50, 37, 3), (2, 33, 64, 3)]:
        images = rng.integers(0, 256, size=shape, dtype=np.uint8)
        labels, probabilities = segment(model, images)
        labels, probabilities = ops.convert_to_numpy(labels), ops.convert_to_numpy(probabilities)
        assert labels.shape == shape[:3]
        assert probabilities.shape == (*shape[:3], 5)
        # Reference: the network on the zero-padded 8k+1 input, then the naive resize.
        padded_h, padded_w = (shape[1] + 6) // 8 * 8 + 1, (shape[2] + 6) // 8 * 8 + 1
        x = np.zeros((shape[0], padded_h, padded_w, 3), np.float32)
        x[:, :shape[1], :shape[2]] = images[..., ::-1].astype(np.float32) - MEAN_BGR
        logits = ops.convert_to_numpy(model(x, training=False)).astype(np.float64)
        assert logits.shape[1:3] == ((padded_h - 1) // 8 + 1, (padded_w - 1) // 8 + 1)
        dense = naive_upsample(logits, padded_h, padded_w)[:, :shape[1], :shape[2]]
        exp = np.exp(dense - dense.max(-1, keepdims=True))
        np.testing.assert_allclose(probabilities, exp / exp.sum(-1, keepdims=True), atol=1e-5)
        assert set(np.unique(labels)) <= set(range(5))


def test_segment_rejects_a_single_image():
    model, _, _ = grid_sampler()
    with pytest.raises(ValueError, match="batch"):
        segment(model, np.zeros((9, 9, 3), np.uint8))


def test_segment_in_a_graph_with_dynamic_sizes():
    # As in the SavedModel export: one trace, uint8 images of any size.
    if keras.backend.backend() != "tensorflow":
        pytest.skip("dynamic shapes are a TensorFlow-backend feature")
    import tensorflow as tf

    from wsk.models import deeplab_largefov

    keras.utils.set_random_seed(1)
    model = deeplab_largefov(num_classes=4, width=0.0625)
    graph = tf.function(lambda images: segment(model, images), input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.uint8)]).get_concrete_function()
    rng = np.random.default_rng(6)
    for shape in [(1, 41, 26, 3), (2, 19, 35, 3)]:
        images = rng.integers(0, 256, size=shape, dtype=np.uint8)
        labels, probabilities = graph(tf.constant(images))
        eager_labels, eager_probabilities = segment(model, images)
        assert labels.shape == shape[:3] and probabilities.shape == (*shape[:3], 4)
        eager_probabilities = ops.convert_to_numpy(eager_probabilities)
        np.testing.assert_allclose(probabilities.numpy(), eager_probabilities, atol=1e-5)
        top_two = np.sort(eager_probabilities, -1)[..., -2:]
        clear = top_two[..., 1] - top_two[..., 0] > 1e-4
        np.testing.assert_array_equal(labels.numpy()[clear], ops.convert_to_numpy(eager_labels)[clear])
