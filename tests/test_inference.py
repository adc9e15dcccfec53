"""wsk.models.inference: grid padding, Caffe-style aligned up-sampling and segment()."""

import keras
import numpy as np
import pytest
from keras import ops

from wsk.errors import WskError
from wsk.models.inference import grid_size, network_output_stride, pad_to_grid, segment, upsample_aligned

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


def grid_sampler(num_classes=3, stride=8):
    """Stand-in network: a 1x1 convolution of stride ``s`` (logits (H-1)//s+1 of an sk+1 input).

    Its logits at grid point (i, j) are a fixed linear map of the preprocessed pixel (si, sj).
    """
    inputs = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(num_classes, 1, strides=stride)
    model = keras.Model(inputs, conv(inputs))
    kernel = np.random.default_rng(3).normal(size=(1, 1, 3, num_classes)).astype(np.float32) * 0.05
    bias = np.linspace(-0.5, 0.5, num_classes).astype(np.float32)
    conv.set_weights([kernel, bias])
    return model, kernel[0, 0], bias


def expected_segmentation(images, kernel, bias, stride=8):
    """NumPy reference of segment() for ``grid_sampler``: pad, sample, up-sample, crop, softmax."""
    batch, height, width, _ = images.shape
    padded_h = (height + stride - 2) // stride * stride + 1
    padded_w = (width + stride - 2) // stride * stride + 1
    x = np.zeros((batch, padded_h, padded_w, 3), np.float64)
    x[:, :height, :width] = images[..., ::-1].astype(np.float64) - MEAN_BGR
    logits = x[:, ::stride, ::stride] @ kernel.astype(np.float64) + bias
    dense = naive_upsample(logits, padded_h, padded_w)[:, :height, :width]
    exp = np.exp(dense - dense.max(-1, keepdims=True))
    return exp / exp.sum(-1, keepdims=True)


@pytest.mark.parametrize("shape, stride", [((1, 30, 41, 3), 8), ((2, 17, 24, 3), 8), ((1, 33, 9, 3), 8),
                                           ((1, 30, 41, 3), 4), ((2, 18, 11, 3), 4)])
def test_segment_with_a_stand_in_network(shape, stride):
    # segment() reads the stride off the network: a stride-4 network is padded to 4k + 1 (30 -> 33)
    model, kernel, bias = grid_sampler(stride=stride)
    images = np.random.default_rng(4).integers(0, 256, size=shape, dtype=np.uint8)
    labels, probabilities = segment(model, images)
    labels, probabilities = ops.convert_to_numpy(labels), ops.convert_to_numpy(probabilities)
    assert labels.shape == shape[:3] and labels.dtype == np.int32
    assert probabilities.shape == (*shape[:3], 3) and probabilities.dtype == np.float32
    expected = expected_segmentation(images, kernel, bias, stride)
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


def test_network_output_stride_is_read_off_the_network():
    from wsk.models import deeplab_largefov

    assert network_output_stride(grid_sampler(stride=8)[0]) == 8
    assert network_output_stride(grid_sampler(stride=4)[0]) == 4
    assert network_output_stride(deeplab_largefov(num_classes=3, width=0.0625)) == 8
    assert network_output_stride(deeplab_largefov(num_classes=3, width=0.0625, output_stride=4)) == 4
    # a 129-pixel side gives 43 logits at stride 3: 128 / 42 is no whole stride
    with pytest.raises(WskError, match="no output stride"):
        network_output_stride(grid_sampler(stride=3)[0])


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


# --- photos of any size: resize to max_side, segment, labels back at the photo's size ----------

def naive_area_resize(image, height, width):
    """Reference: each output pixel is the mean of the input area it covers (float64, unrounded)."""
    size_h, size_w = image.shape[:2]
    out = np.zeros((height, width, image.shape[2]))
    for i in range(height):
        y0, y1 = i * size_h / height, (i + 1) * size_h / height
        for j in range(width):
            x0, x1 = j * size_w / width, (j + 1) * size_w / width
            total = 0.0
            for y in range(int(np.floor(y0)), int(np.ceil(y1))):
                for x in range(int(np.floor(x0)), int(np.ceil(x1))):
                    area = (min(y + 1, y1) - max(y, y0)) * (min(x + 1, x1) - max(x, x0))
                    total = total + area * image[y, x].astype(np.float64)
            out[i, j] = total / ((y1 - y0) * (x1 - x0))
    return out


def naive_half_pixel_labels(scores, height, width):
    """Reference: argmax of scores (h, w, C) bilinearly sampled at ((i+.5) h/H - .5, (j+.5) w/W - .5)."""
    h, w = scores.shape[:2]
    out = np.zeros((height, width), np.int64)
    for i in range(height):
        y = min(max((i + 0.5) * h / height - 0.5, 0.0), h - 1)
        y0 = int(np.floor(y))
        y1, dy = min(y0 + 1, h - 1), y - y0
        for j in range(width):
            x = min(max((j + 0.5) * w / width - 0.5, 0.0), w - 1)
            x0 = int(np.floor(x))
            x1, dx = min(x0 + 1, w - 1), x - x0
            value = ((1 - dy) * (1 - dx) * scores[y0, x0] + (1 - dy) * dx * scores[y0, x1]
                     + dy * (1 - dx) * scores[y1, x0] + dy * dx * scores[y1, x1])
            out[i, j] = np.argmax(value)
    return out


def random_deeplab(num_classes=3, seed=3, std=0.3):
    from wsk.models import deeplab_largefov

    model = deeplab_largefov(num_classes=num_classes, width=0.0625)
    rng = np.random.default_rng(seed)
    # Larger weights than He init at this width, so that the classes really compete per pixel
    # (std 0.3: confident; 0.1: an unsure softmax, which the CRF changes).
    model.set_weights([rng.normal(0, std, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def smooth_photo(height, width, seed=0):
    """A photo-like uint8 image: a few smooth colour blobs (random pixels make every label noise)."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width] / max(height, width)
    image = np.zeros((height, width, 3))
    for _ in range(6):
        cy, cx, radius = rng.uniform(0, 1, 3) * [height / max(height, width), width / max(height, width), 0.4]
        blob = np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * (0.05 + radius) ** 2))
        image += blob[..., None] * rng.uniform(-120, 120, 3)
    return np.clip(128 + image, 0, 255).astype(np.uint8)


def test_working_size_by_hand():
    from wsk.models.inference import working_size

    assert working_size(3000, 4000, 500) == (375, 500)      # a phone photo at the paper's scale
    assert working_size(200, 300, 64) == (43, 64)           # 200 * 64 / 300 = 42.67
    assert working_size(300, 200, 64) == (64, 43)
    assert working_size(10, 20, 64) == (10, 20)             # never up
    assert working_size(1, 1000, 64) == (1, 64)             # at least 1
    assert working_size(30, 1000, 64) == (2, 64)            # 1.92 rounds to 2
    symbolic = working_size(ops.convert_to_tensor(3000), ops.convert_to_tensor(4000), 500)
    assert [int(ops.convert_to_numpy(s)) for s in symbolic] == [375, 500]
    symbolic = working_size(ops.convert_to_tensor(10), ops.convert_to_tensor(20), 64)
    assert [int(ops.convert_to_numpy(s)) for s in symbolic] == [10, 20]


@pytest.mark.parametrize("size, out", [((13, 17), (5, 7)), ((20, 9), (8, 4)), ((12, 12), (12, 12))])
def test_resize_image_is_the_rounded_area_mean(size, out):
    from wsk.models.inference import resize_image

    image = np.random.default_rng(2).integers(0, 256, (*size, 3), dtype=np.uint8)
    got = ops.convert_to_numpy(resize_image(image[None], *out))[0]
    exact = naive_area_resize(image, *out)
    assert got.shape == (*out, 3)
    np.testing.assert_array_equal(got, np.round(got))
    near_half = np.abs(exact - np.floor(exact) - 0.5) < 1e-3     # float32 may round these either way
    np.testing.assert_array_equal(got[~near_half], np.floor(exact + 0.5)[~near_half])
    assert np.abs(got - exact).max() <= 0.5 + 1e-3
    if size == out:
        np.testing.assert_array_equal(got, image)


@pytest.mark.parametrize("tile_rows", [4, 64])
def test_upsample_labels_in_tiles_matches_naive_bilinear(tile_rows):
    from wsk.models.inference import upsample_labels

    scores = np.random.default_rng(4).normal(size=(2, 6, 9, 5)).astype(np.float32)
    got = ops.convert_to_numpy(upsample_labels(scores, 23, 31, tile_rows=tile_rows))
    assert got.shape == (2, 23, 31) and got.dtype == np.int32
    for b in range(2):
        np.testing.assert_array_equal(got[b], naive_half_pixel_labels(scores[b].astype(np.float64), 23, 31))
    same = ops.convert_to_numpy(upsample_labels(scores, 6, 9, tile_rows=tile_rows))
    np.testing.assert_array_equal(same, scores.argmax(-1))   # the same size: the argmax


def test_upsample_labels_in_a_graph_with_dynamic_sizes():
    if keras.backend.backend() != "tensorflow":
        pytest.skip("dynamic shapes are a TensorFlow-backend feature")
    import tensorflow as tf

    from wsk.models.inference import upsample_labels

    graph = tf.function(lambda s, h, w: upsample_labels(s, h, w, tile_rows=4), input_signature=[
        tf.TensorSpec([None, None, None, 5]), tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32)])
    scores = np.random.default_rng(5).normal(size=(1, 5, 7, 5)).astype(np.float32)
    got = graph(tf.constant(scores), tf.constant(18), tf.constant(11)).numpy()
    np.testing.assert_array_equal(got[0], naive_half_pixel_labels(scores[0].astype(np.float64), 18, 11))


def test_a_300x200_photo_at_max_side_64_comes_back_300x200():
    from wsk.models.inference import segment_photos

    model = random_deeplab()
    photo = smooth_photo(200, 300)
    labels, probabilities = segment_photos(model, photo[None], max_side=64)
    labels = ops.convert_to_numpy(labels)[0]
    assert labels.shape == (200, 300) and ops.convert_to_numpy(probabilities).shape == (1, 43, 64, 3)
    # Reference: resize by hand, the network (segment, tested above) at 43 x 64, naive up-sampling.
    small = np.floor(naive_area_resize(photo, 43, 64) + 0.5).astype(np.uint8)
    _, expected = segment(model, small[None])
    expected = naive_half_pixel_labels(ops.convert_to_numpy(expected)[0].astype(np.float64), 200, 300)
    assert len(np.unique(expected)) > 1
    assert (labels == expected).mean() > 0.999
    # A photo that fits in max_side is segmented as it is.
    fits, _ = segment_photos(model, photo[None, :40, :60], max_side=64)
    np.testing.assert_array_equal(ops.convert_to_numpy(fits),
                                  ops.convert_to_numpy(segment(model, photo[None, :40, :60])[0]))


def test_segmenter_with_crf_keras_file_and_padded_batch(tmp_path):
    """Segmenter(crf=...) gives the CRF-refined labels of wsk.crf.dense_crf at the working size,
    up-sampled; the same after a .keras round trip; a padded batch equals each image alone."""
    from wsk.crf import CRFParams, dense_crf
    from wsk.models import Segmenter
    from wsk.models.saving import load_model

    model = random_deeplab(seed=7, std=0.1)
    params = CRFParams(reference_side=None, bi_xy_std=20.0)   # a CRF that moves labels at 64 px
    segmenter = Segmenter(model, ("background", "a", "b"), max_side=64, crf=params)
    photo = smooth_photo(120, 90, seed=1)
    labels = ops.convert_to_numpy(segmenter(photo[None]))[0]
    assert labels.shape == (120, 90)
    small = np.floor(naive_area_resize(photo, 64, 48) + 0.5).astype(np.uint8)
    _, softmax = segment(model, small[None])
    _, marginals = dense_crf(small, ops.convert_to_numpy(softmax)[0], **vars(params), backend="keras")
    expected = naive_half_pixel_labels(marginals.astype(np.float64), 120, 90)
    without_crf = naive_half_pixel_labels(ops.convert_to_numpy(softmax)[0].astype(np.float64), 120, 90)
    assert (expected != without_crf).mean() > 0.03          # the CRF changed something (10% measured)
    assert (labels == expected).mean() > 0.999
    path = tmp_path / "segmenter.keras"
    segmenter.save(path)
    reloaded = load_model(path)
    assert (reloaded.max_side, reloaded.crf) == (64, params)
    np.testing.assert_array_equal(ops.convert_to_numpy(reloaded(photo[None]))[0], labels)
    other = smooth_photo(50, 70, seed=2)
    batch = np.zeros((2, 120, 90, 3), np.uint8)
    batch[0], batch[1, :50, :70] = photo, other
    batch[1, 50:] = 255   # padding that would change the network and the CRF if it reached them
    padded = ops.convert_to_numpy(reloaded(batch, np.array([[120, 90], [50, 70]])))
    np.testing.assert_array_equal(padded[0], labels)
    np.testing.assert_array_equal(padded[1, :50, :70], ops.convert_to_numpy(reloaded(other[None]))[0])
    assert not padded[1, 50:].any() and not padded[1, :, 70:].any()
