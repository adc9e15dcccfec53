"""DeepLab-LargeFOV and HCP: Caffe pooling, sizes, parameter counts, layer settings, ImageNet
conversion, cross-hypothesis max-pooling, preprocessing and .keras round trips.

Expected values are worked out by hand (pooling examples, parameter counts) or by a NumPy
reference written here, never taken from the code under test.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import keras

from wsk.errors import WskError
from wsk.losses import SoftMultiLabelCrossEntropy
from wsk.models import (CaffePooling2D, deeplab_largefov, deeplab_output_size, hcp,
                        hcp_hypothesis_model, hcp_parts, preprocess_input)
from wsk.optimizers import CaffeSGD

SMALL = 0.0625  # width of the CPU-sized variants: 4, 8, 16, 32, 32 conv channels, fc 64 / 256


def _pool(layer, image):
    """Run a pooling layer on one single-channel H x W image."""
    x = np.asarray(image, dtype=np.float32)[None, :, :, None]
    return keras.ops.convert_to_numpy(layer(x))[0, :, :, 0]


# --- Caffe pooling, worked by hand -------------------------------------------------------------

def test_caffe_max_pool_3x3_stride2_pad1_on_even_input():
    # x[r, c] = -(4r + c + 1): all negative, so zero padding would show up as 0 in border windows.
    x = -(np.arange(16).reshape(4, 4) + 1)
    # Caffe: out = ceil((4 + 2 - 3) / 2) + 1 = 3; windows cover rows/cols {0,1}, {1,2,3}, {3}.
    # The max of a window is its top-left element: -(4 * r0 + c0 + 1) with r0, c0 in {0, 1, 3}.
    expected = [[-1, -2, -4],
                [-5, -6, -8],
                [-13, -14, -16]]
    np.testing.assert_array_equal(_pool(CaffePooling2D("max", 3, 2, 1), x), expected)


def test_caffe_average_pool_counts_padding_like_caffe():
    x = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    # 3x3, stride 1, pad 1: every window's divisor is 9, padding included.
    expected = np.array([[12, 21, 16], [27, 45, 33], [24, 39, 28]]) / 9.0
    np.testing.assert_allclose(_pool(CaffePooling2D("avg", 3, 1, 1), x), expected, rtol=1e-6)


def test_caffe_average_pool_ceil_overhang_not_counted():
    # 4x4 ones, 3x3 stride 2 pad 1 -> 3x3. Caffe's divisor counts rows/cols in [-1, 5) only:
    # windows start at -1, 1, 3 -> (real, counted) per axis: (2, 3), (3, 3), (1, 2).
    real = np.array([2, 3, 1])
    counted = np.array([3, 3, 2])
    expected = np.outer(real, real) / np.outer(counted, counted)
    np.testing.assert_allclose(_pool(CaffePooling2D("avg", 3, 2, 1), np.ones((4, 4))), expected,
                               rtol=1e-6)


def test_caffe_max_pool_2x2_ceil_mode():
    # HCP's 2x2 stride 2 pool on 5 columns gives ceil(3 / 2) + 1 = 3 (Keras "valid" would give 2).
    x = np.arange(25).reshape(5, 5)
    expected = [[6, 8, 9], [16, 18, 19], [21, 23, 24]]
    np.testing.assert_array_equal(_pool(CaffePooling2D("max", 2, 2, 0), x), expected)


def test_caffe_pooling_refuses_windows_starting_in_padding():
    with pytest.raises(ValueError):
        CaffePooling2D("max", 3, 2, 2)


@pytest.mark.parametrize("size, out", [(321, 41), (353, 45), (513, 65), (97, 13)])
def test_deeplab_output_size_formula(size, out):
    # ceil((n + 2 - 3) / 2) + 1 three times: 321 -> 161 -> 81 -> 41 etc.
    assert deeplab_output_size(size) == out


@pytest.mark.parametrize("shape, dilation, taken", [
    ((2, 5, 7, 3), 12, ((1, 1), (1, 1))),      # fc6 on a small map: both axes collapse to the centre
    ((1, 5, 30, 3), 12, ((1, 3), (1, 12))),    # only the short axis collapses
    ((1, 12, 13, 3), 12, ((1, 3), (1, 12))),   # d >= H collapses, d < W (13) keeps its taps
    ((1, 30, 30, 3), 12, ((3, 3), (12, 12))),  # nothing collapses
    ((1, 9, 9, 3), 2, ((3, 3), (2, 2))),
])
def test_atrous_conv_matches_conv2d_and_skips_the_taps_off_the_input(monkeypatch, shape, dilation, taken):
    import wsk.models.layers as layers

    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype(np.float32)
    plain = keras.layers.Conv2D(4, 3, padding="same", dilation_rate=dilation, activation="relu")
    atrous = layers.AtrousConv2D(4, 3, padding="same", dilation_rate=dilation, activation="relu")
    plain.build(shape)
    atrous.build(shape)
    weights = [rng.normal(size=w.shape).astype(np.float32) for w in plain.get_weights()]
    plain.set_weights(weights)
    atrous.set_weights(weights)
    calls = []
    real_conv = layers.ops.conv

    def spy(inputs, kernel, **kwargs):
        calls.append((tuple(kernel.shape[:2]), tuple(kwargs["dilation_rate"])))
        return real_conv(inputs, kernel, **kwargs)

    monkeypatch.setattr(layers.ops, "conv", spy)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(atrous(x)), keras.ops.convert_to_numpy(plain(x)),
                               rtol=1e-5, atol=1e-5)
    assert calls == [taken]


def test_atrous_conv_refuses_what_it_cannot_shortcut():
    from wsk.models.layers import AtrousConv2D

    with pytest.raises(ValueError, match="stride 1"):
        AtrousConv2D(4, 3, padding="valid", dilation_rate=2)
    with pytest.raises(ValueError, match="odd"):
        AtrousConv2D(4, 2, padding="same", dilation_rate=2)


# --- DeepLab-LargeFOV --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_deeplab():
    keras.utils.set_random_seed(0)
    return deeplab_largefov(num_classes=5, width=SMALL)


@pytest.mark.parametrize("size, out", [(321, 41), (353, 45), (513, 65)])
def test_deeplab_logits_at_output_stride_8(small_deeplab, size, out):
    x = np.zeros((1, size, size, 3), np.float32)
    assert tuple(small_deeplab.predict(x, verbose=0).shape) == (1, out, out, 5)


def test_deeplab_non_square_input(small_deeplab):
    x = np.zeros((1, 97, 65, 3), np.float32)
    assert tuple(small_deeplab(x).shape) == (1, 13, 9, 5)


def test_deeplab_at_output_stride_4_is_the_same_filters_dilated_twice_as_much():
    keras.utils.set_random_seed(0)
    dense = deeplab_largefov(num_classes=5, width=SMALL, output_stride=4)
    # pool3 keeps stride 1; every layer after it doubles its dilation (conv4 1 -> 2, conv5 2 -> 4,
    # fc6 12 -> 24), as DeepLab turned VGG's stride 32 into 8
    strides = {f"pool{b}": dense.get_layer(f"pool{b}").strides for b in range(1, 6)}
    assert strides == {"pool1": 2, "pool2": 2, "pool3": 1, "pool4": 1, "pool5": 1}
    for name, rate in {"conv3_3": 1, "conv4_1": 2, "conv4_3": 2, "conv5_1": 4, "conv5_3": 4, "fc6": 24}.items():
        assert dense.get_layer(name).dilation_rate == (rate, rate), name
    # the same weights, layer by layer: a stride-8 model's weights load as they are
    sparse = deeplab_largefov(num_classes=5, width=SMALL)
    assert [w.shape for w in dense.get_weights()] == [w.shape for w in sparse.get_weights()]
    # logits on every fourth pixel: (size - 1) / 4 + 1
    for size, out in [(65, 17), (33, 9), (321, 81)]:
        assert deeplab_output_size(size, output_stride=4) == out
    assert tuple(dense(np.zeros((1, 65, 33, 3), np.float32)).shape) == (1, 17, 9, 5)
    with pytest.raises(ValueError, match="output stride"):
        deeplab_largefov(num_classes=5, width=SMALL, output_stride=16)


def test_deeplab_full_size_parameter_count():
    model = deeplab_largefov(num_classes=21)
    vgg_convs = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
                 (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
    convs = sum(9 * cin * cout + cout for cin, cout in vgg_convs)
    assert convs == 14_714_688
    fc6 = 9 * 512 * 1024 + 1024
    fc7 = 1024 * 1024 + 1024
    fc8 = 1024 * 21 + 21
    assert convs + fc6 + fc7 + fc8 == 20_505_429
    assert model.count_params() == 20_505_429


def test_deeplab_layers_strides_and_dilations(small_deeplab):
    m = small_deeplab
    conv_rates = {f"conv{b}_{i}": (2, 2) if b == 5 else (1, 1)
                  for b, n in enumerate((2, 2, 3, 3, 3), start=1) for i in range(1, n + 1)}
    for name, rate in conv_rates.items():
        layer = m.get_layer(name)
        assert layer.kernel_size == (3, 3) and layer.strides == (1, 1), name
        assert layer.dilation_rate == rate, name
        assert layer.padding == "same" and layer.activation is keras.activations.relu, name
    for name, (mode, stride) in {"pool1": ("max", 2), "pool2": ("max", 2), "pool3": ("max", 2),
                                 "pool4": ("max", 1), "pool5": ("max", 1),
                                 "pool5a": ("avg", 1)}.items():
        layer = m.get_layer(name)
        assert isinstance(layer, CaffePooling2D), name
        assert (layer.mode, layer.pool_size, layer.strides, layer.padding) == (mode, 3, stride, 1), name
    fc6, fc7, fc8 = (m.get_layer(n) for n in ("fc6", "fc7", "fc8"))
    assert fc6.kernel_size == (3, 3) and fc6.dilation_rate == (12, 12)
    assert fc7.kernel_size == (1, 1) and fc8.kernel_size == (1, 1)
    assert fc6.filters == fc7.filters == 64          # 1024 * 0.0625
    assert fc8.filters == 5
    assert m.get_layer("drop6").rate == 0.5 and m.get_layer("drop7").rate == 0.5
    assert fc8.activation is keras.activations.linear


def test_deeplab_layer_order(small_deeplab):
    names = [layer.name for layer in small_deeplab.layers[1:]]
    expected = ["conv1_1", "conv1_2", "pool1", "conv2_1", "conv2_2", "pool2",
                "conv3_1", "conv3_2", "conv3_3", "pool3", "conv4_1", "conv4_2", "conv4_3", "pool4",
                "conv5_1", "conv5_2", "conv5_3", "pool5", "pool5a",
                "fc6", "drop6", "fc7", "drop7", "fc8"]
    assert names == expected


def test_fc8_gaussian_init_std_001():
    keras.utils.set_random_seed(1)
    model = deeplab_largefov(num_classes=21, width=0.25)  # fc8 kernel 256 x 21
    kernel = keras.ops.convert_to_numpy(model.get_layer("fc8").kernel)
    assert abs(kernel.std() - 0.01) < 0.001 and abs(kernel.mean()) < 0.001
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.get_layer("fc8").bias), 0)


# --- HCP ----------------------------------------------------------------------------------------

def test_hcp_full_size_parameter_count():
    model = hcp(num_classes=20)
    vgg_convs = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
                 (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
    convs = sum(3 * 3 * cin * cout + cout for cin, cout in vgg_convs)
    fc6 = (7 * 7 * 512) * 4096 + 4096     # pool5 of a 224 input is 7 x 7 x 512
    fc7 = 4096 * 4096 + 4096
    fc8 = 4096 * 20 + 20
    assert model.count_params() == convs + fc6 + fc7 + fc8


@pytest.fixture(scope="module")
def small_hcp():
    keras.utils.set_random_seed(0)
    return hcp(num_classes=6, image_size=64, width=SMALL)


def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def test_hcp_is_max_over_hypotheses_of_softmax(small_hcp):
    rng = np.random.default_rng(0)
    x = preprocess_input(rng.uniform(0, 255, (2, 3, 64, 64, 3)))
    features = hcp_hypothesis_model(small_hcp).predict(x.reshape(6, 64, 64, 3), verbose=0)["features"]
    fc8 = small_hcp.get_layer("fc8")
    w, b = (keras.ops.convert_to_numpy(v).astype(np.float64) for v in (fc8.kernel, fc8.bias))
    logits = (features.astype(np.float64) @ w + b).reshape(2, 3, 6)
    expected = _softmax(logits).max(axis=1)
    got = small_hcp.predict(x, verbose=0)
    assert got.shape == (2, 6)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # Any number of hypotheses: one hypothesis (image fine-tuning) is that hypothesis's softmax.
    one = small_hcp.predict(x[:, :1], verbose=0)
    np.testing.assert_allclose(one, _softmax(logits[:, 0]), rtol=1e-5, atol=1e-6)


def test_hcp_hypothesis_model_scores_and_fc7_features(small_hcp):
    rng = np.random.default_rng(1)
    x = preprocess_input(rng.uniform(0, 255, (4, 64, 64, 3)))
    hyp = hcp_hypothesis_model(small_hcp)
    out = hyp.predict(x, verbose=0)
    assert out["scores"].shape == (4, 6) and out["features"].shape == (4, 256)  # 4096 * 0.0625
    # features are fc7 after ReLU; scores the softmax of fc8 applied to them.
    fc8 = small_hcp.get_layer("fc8")
    w, b = (keras.ops.convert_to_numpy(v) for v in (fc8.kernel, fc8.bias))
    assert (out["features"] >= 0).all()
    np.testing.assert_allclose(out["scores"], _softmax(out["features"].astype(np.float64) @ w + b),
                               rtol=1e-4, atol=1e-6)
    assert hyp.get_layer("fc6") is small_hcp.get_layer("fc6")   # weights shared


def test_hcp_parts_trunk_then_head_equals_hypothesis_model(small_hcp):
    rng = np.random.default_rng(2)
    x = preprocess_input(rng.uniform(0, 255, (2, 64, 64, 3)))
    trunk, head = hcp_parts(small_hcp)
    features = trunk.predict(x, verbose=0)
    assert features.shape == (2, 4, 4, 32)          # stride 16, conv5_3 channels 512 * 0.0625
    assert tuple(head.input_shape) == (None, 4, 4, 32)
    direct = hcp_hypothesis_model(small_hcp).predict(x, verbose=0)
    split = head.predict(features, verbose=0)
    np.testing.assert_allclose(split["scores"], direct["scores"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(split["features"], direct["features"], rtol=1e-5, atol=1e-6)
    # The trunk takes any image size: 100 -> 50 -> 25 -> 13 -> 7 (Caffe ceil-mode 2x2 pools).
    assert trunk.predict(np.zeros((1, 100, 80, 3), np.float32), verbose=0).shape == (1, 7, 5, 32)


def test_hcp_rejects_size_not_multiple_of_32():
    with pytest.raises(WskError):
        hcp(image_size=100, width=SMALL)


# --- ImageNet VGG-16 conversion -----------------------------------------------------------------

@pytest.fixture(scope="module")
def random_vgg16(tmp_path_factory):
    """A VGG-16 with random weights saved locally (no download), and its weights by layer."""
    keras.utils.set_random_seed(3)
    vgg = keras.applications.VGG16(weights=None, include_top=True)
    path = tmp_path_factory.mktemp("vgg") / "vgg16_random.weights.h5"
    vgg.save_weights(path)
    arrays = {layer.name: [np.asarray(keras.ops.convert_to_numpy(w)) for w in layer.weights]
              for layer in vgg.layers if layer.weights}
    del vgg
    return path, arrays


def _weights(model, name):
    return [keras.ops.convert_to_numpy(w) for w in model.get_layer(name).weights]


def _conv_pairs():
    return [(f"conv{b}_{i}", f"block{b}_conv{i}")
            for b, n in enumerate((2, 2, 3, 3, 3), start=1) for i in range(1, n + 1)]


def test_imagenet_conversion_deeplab(random_vgg16):
    path, src = random_vgg16
    model = deeplab_largefov(num_classes=21, backbone_weights=path)
    for ours, theirs in _conv_pairs():
        for a, b in zip(_weights(model, ours), src[theirs]):
            np.testing.assert_array_equal(a, b)
    # fc6: fc1's flattened 7x7x512 rows, tap (i, j) at rows (7 i + j) * 512 ... + 512,
    # taps 0, 3, 6 and output channels 0, 4, 8, ...
    fc1_kernel, fc1_bias = src["fc1"]
    expected = np.empty((3, 3, 512, 1024), np.float32)
    for a, i in enumerate((0, 3, 6)):
        for b, j in enumerate((0, 3, 6)):
            row = (7 * i + j) * 512
            expected[a, b] = fc1_kernel[row:row + 512, 0::4]
    fc6_kernel, fc6_bias = _weights(model, "fc6")
    np.testing.assert_array_equal(fc6_kernel, expected)
    np.testing.assert_array_equal(fc6_bias, fc1_bias[[4 * k for k in range(1024)]])
    # fc7: every 4th input and output channel of fc2.
    fc2_kernel, fc2_bias = src["fc2"]
    fc7_kernel, fc7_bias = _weights(model, "fc7")
    assert fc7_kernel.shape == (1, 1, 1024, 1024)
    assert fc7_kernel[0, 0, 5, 7] == fc2_kernel[20, 28]
    np.testing.assert_array_equal(fc7_kernel[0, 0], fc2_kernel[0::4, 0::4])
    np.testing.assert_array_equal(fc7_bias, fc2_bias[0::4])
    # fc8 keeps its Gaussian init (the 1000-way classifier is dropped).
    assert _weights(model, "fc8")[0].shape == (1, 1, 1024, 21)


def test_imagenet_conversion_hcp(random_vgg16):
    path, src = random_vgg16
    model = hcp(num_classes=20, backbone_weights=path)
    for ours, theirs in _conv_pairs() + [("fc6", "fc1"), ("fc7", "fc2")]:
        for a, b in zip(_weights(model, ours), src[theirs]):
            np.testing.assert_array_equal(a, b)


def test_imagenet_conversion_errors(random_vgg16, tmp_path):
    path, _ = random_vgg16
    with pytest.raises(WskError, match="width=1.0"):
        deeplab_largefov(width=0.5, backbone_weights=path)
    # Small variants are refused before anything is downloaded.
    with pytest.raises(WskError, match="width=1.0"):
        hcp(image_size=64, width=SMALL, backbone_weights="imagenet")
    missing = tmp_path / "nope.weights.h5"
    with pytest.raises(WskError, match="nope.weights.h5: VGG-16 weights file not found"):
        deeplab_largefov(backbone_weights=missing)
    junk = tmp_path / "junk.weights.h5"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(WskError, match="junk.weights.h5: not a Keras VGG-16 weights file"):
        deeplab_largefov(backbone_weights=junk)


# --- preprocessing ------------------------------------------------------------------------------

def test_preprocess_input_bgr_minus_mean():
    rgb = np.array([[[[10, 20, 30], [255, 0, 128]]]], dtype=np.uint8)
    expected = np.array([[[[30 - 104.008, 20 - 116.669, 10 - 122.675],
                           [128 - 104.008, 0 - 116.669, 255 - 122.675]]]], dtype=np.float32)
    got = preprocess_input(rgb)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    tensor = preprocess_input(keras.ops.convert_to_tensor(rgb))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(tensor), expected, rtol=1e-6)


def test_preprocess_input_inside_tf_data_on_jax_backend():
    # The data pipelines map it over tf.data while the model runs on JAX.
    script = textwrap.dedent("""
        import json
        import numpy as np
        import tensorflow as tf
        import keras
        from wsk.models import preprocess_input
        rgb = np.array([[[10, 20, 30]]], np.uint8)
        data = tf.data.Dataset.from_tensors(rgb).map(preprocess_input)
        value = next(iter(data.as_numpy_iterator()))
        print(json.dumps([keras.backend.backend(), value.dtype.name, value.tolist()]))
    """)
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    backend, dtype, value = json.loads(run.stdout.strip().splitlines()[-1])
    assert backend == "jax" and dtype == "float32"
    np.testing.assert_allclose(value, [[[30 - 104.008, 20 - 116.669, 10 - 122.675]]], rtol=1e-6)


# --- .keras round trips -------------------------------------------------------------------------

def test_keras_file_round_trip_deeplab(tmp_path, small_deeplab):
    small_deeplab.compile(CaffeSGD(0.001), SoftMultiLabelCrossEntropy())
    path = tmp_path / "deeplab.keras"
    small_deeplab.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(4).normal(0, 50, (1, 33, 41, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), small_deeplab.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
    assert isinstance(loaded.get_layer("pool5a"), CaffePooling2D)
    assert loaded.get_layer("pool5a").mode == "avg"
    assert isinstance(loaded.loss, SoftMultiLabelCrossEntropy) and loaded.loss.from_logits
    assert isinstance(loaded.optimizer, CaffeSGD)


def test_keras_file_round_trip_hcp(tmp_path, small_hcp):
    small_hcp.compile(CaffeSGD(0.001), SoftMultiLabelCrossEntropy(from_logits=False))
    path = tmp_path / "hcp.keras"
    small_hcp.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(5).normal(0, 50, (2, 4, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), small_hcp.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-7)
    assert isinstance(loaded.loss, SoftMultiLabelCrossEntropy) and not loaded.loss.from_logits
    # The pseudo-label views work on a loaded model too.
    out = hcp_hypothesis_model(loaded).predict(x[0], verbose=0)
    np.testing.assert_allclose(out["scores"].max(axis=0), small_hcp.predict(x[:1], verbose=0)[0],
                               rtol=1e-5, atol=1e-7)


def test_weights_saved_with_a_plain_conv2d_fc6_load_by_name(tmp_path):
    """A file saved before fc6 became AtrousConv2D (Keras keys weights by class) loads layer by
    layer, by name, and gives the same logits; other shapes are still refused."""
    from wsk.models.saving import load_weights_file

    keras.utils.set_random_seed(3)
    model = deeplab_largefov(num_classes=4, width=SMALL)
    old_config = model.get_config()
    for layer in old_config["layers"]:
        if layer["config"]["name"] == "fc6":
            layer["class_name"], layer["module"], layer["registered_name"] = "Conv2D", "keras.layers", None
    old = keras.Model.from_config(old_config)
    assert type(old.get_layer("fc6")) is keras.layers.Conv2D
    rng = np.random.default_rng(0)
    old.set_weights([rng.normal(size=w.shape).astype(np.float32) * 0.1 for w in old.get_weights()])
    old.save(tmp_path / "old.keras")
    fresh = deeplab_largefov(num_classes=4, width=SMALL)
    with pytest.raises(ValueError):
        fresh.load_weights(tmp_path / "old.keras")            # Keras's own keys do not match
    load_weights_file(fresh, tmp_path / "old.keras", "old")
    x = rng.normal(size=(1, 33, 41, 3)).astype(np.float32) * 50
    np.testing.assert_allclose(keras.ops.convert_to_numpy(fresh(x)), keras.ops.convert_to_numpy(old(x)),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(WskError, match="do not fit"):
        load_weights_file(deeplab_largefov(num_classes=5, width=SMALL), tmp_path / "old.keras", "old")
