"""Caffe-style SGD against a hand-written NumPy update; multipliers, step schedule, serialization,
and model.fit under tf.distribute.MirroredStrategy."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import keras

from wsk.models import deeplab_largefov
from wsk.optimizers import CaffeSGD, deeplab_multipliers, step_schedule

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def caffe_reference(x, y, kernel, bias, steps, base_lr, step_size, gamma, momentum, decay,
                    mults):
    """Caffe's SGD by hand on a linear layer y = x W + b with mean squared error.

    ``mults``: {"kernel": (lr_mult, decay_mult), "bias": (...)}. Per step k:
    lr = base_lr * gamma ** (k // step_size); g = dL/dw;
    v = momentum v + lr lr_mult (g + decay decay_mult w); w = w - v.
    """
    w = {"kernel": kernel.astype(np.float64).copy(), "bias": bias.astype(np.float64).copy()}
    v = {name: np.zeros_like(value) for name, value in w.items()}
    n = len(x)
    for k in range(steps):
        lr = base_lr * gamma ** (k // step_size)
        residual = x @ w["kernel"] + w["bias"] - y                  # (N, 1)
        grads = {"kernel": 2.0 / n * x.T @ residual, "bias": 2.0 / n * residual.sum(axis=0)}
        for name in ("kernel", "bias"):
            lr_mult, decay_mult = mults[name]
            v[name] = momentum * v[name] + lr * lr_mult * (grads[name] + decay * decay_mult * w[name])
            w[name] = w[name] - v[name]
    return w


def _problem():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (8, 3)).astype(np.float32)
    y = rng.normal(0, 1, (8, 1)).astype(np.float32)
    kernel = np.array([[0.5], [-1.0], [2.0]], np.float32)
    bias = np.array([0.3], np.float32)
    return x, y, kernel, bias


def _linear_model(kernel, bias):
    inputs = keras.Input((3,))
    layer = keras.layers.Dense(1, name="fc8")
    model = keras.Model(inputs, layer(inputs))
    layer.set_weights([kernel, bias])
    return model


SETTINGS = dict(steps=5, base_lr=0.01, step_size=2, gamma=0.1, momentum=0.9, decay=0.05)


def test_fit_matches_hand_written_caffe_update():
    x, y, kernel, bias = _problem()
    model = _linear_model(kernel, bias)
    optimizer = CaffeSGD(step_schedule(SETTINGS["base_lr"], SETTINGS["step_size"], SETTINGS["gamma"]),
                         momentum=SETTINGS["momentum"], weight_decay=SETTINGS["decay"],
                         multipliers=deeplab_multipliers("fc8", 10))
    model.compile(optimizer, "mse")
    model.fit(x, y, batch_size=8, epochs=SETTINGS["steps"], shuffle=False, verbose=0)
    expected = caffe_reference(x, y, kernel, bias, mults={"kernel": (10, 1), "bias": (20, 0)},
                               **SETTINGS)
    got_kernel, got_bias = model.get_layer("fc8").get_weights()
    np.testing.assert_allclose(got_kernel, expected["kernel"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_bias, expected["bias"], rtol=1e-5, atol=1e-6)
    # Not Keras's SGD: with decoupled decay or without the multipliers the weights would differ.
    plain = caffe_reference(x, y, kernel, bias, mults={"kernel": (1, 1), "bias": (1, 1)}, **SETTINGS)
    assert not np.allclose(got_kernel, plain["kernel"], rtol=1e-3)


def test_apply_gradients_two_variables_by_hand():
    layer = keras.layers.Dense(2, name="conv1_1")
    layer.build((None, 3))
    rng = np.random.default_rng(1)
    w0 = rng.normal(0, 1, (3, 2)).astype(np.float32)
    b0 = rng.normal(0, 1, (2,)).astype(np.float32)
    layer.set_weights([w0, b0])
    optimizer = CaffeSGD(0.1, momentum=0.8, weight_decay=0.01)   # DeepLab groups by default
    w, b = w0.astype(np.float64), b0.astype(np.float64)
    vw, vb = np.zeros_like(w), np.zeros_like(b)
    for _ in range(4):
        gw = rng.normal(0, 1, w.shape).astype(np.float32)
        gb = rng.normal(0, 1, b.shape).astype(np.float32)
        optimizer.apply_gradients([(gw, layer.kernel), (gb, layer.bias)])
        vw = 0.8 * vw + 0.1 * 1 * (gw + 0.01 * 1 * w)      # weights: lr x1, decay x1
        vb = 0.8 * vb + 0.1 * 2 * (gb + 0.01 * 0 * b)      # biases: lr x2, no decay
        w, b = w - vw, b - vb
    got_w, got_b = layer.get_weights()
    np.testing.assert_allclose(got_w, w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_b, b, rtol=1e-5, atol=1e-6)


def test_deeplab_multiplier_groups_on_real_variable_paths():
    model = deeplab_largefov(num_classes=3, width=0.0625)
    optimizer = CaffeSGD(0.001)
    by_path = {v.path: optimizer.multipliers_for(v.path) for v in model.trainable_variables}
    assert by_path["fc8/kernel"] == (10.0, 1.0)
    assert by_path["fc8/bias"] == (20.0, 0.0)
    assert by_path["conv1_1/kernel"] == (1.0, 1.0)
    assert by_path["conv5_3/bias"] == (2.0, 0.0)
    assert by_path["fc6/kernel"] == (1.0, 1.0)
    assert len(by_path) == 2 * 16
    hcp_last = CaffeSGD(0.0001, multipliers=deeplab_multipliers("fc8", 100))
    assert hcp_last.multipliers_for("fc8/kernel") == (100.0, 1.0)
    assert hcp_last.multipliers_for("fc8/bias") == (200.0, 0.0)
    assert hcp_last.multipliers_for("something/else") == (1.0, 1.0)


def test_step_schedule():
    schedule = step_schedule(0.001, step_size=100, gamma=0.1)
    values = [float(keras.ops.convert_to_numpy(schedule(step))) for step in (0, 99, 100, 250)]
    assert values == pytest.approx([0.001, 0.001, 0.0001, 0.00001], rel=1e-6)


def test_config_round_trip():
    optimizer = CaffeSGD(step_schedule(0.01, 5, 0.5), momentum=0.8, weight_decay=0.001,
                         multipliers=[("fc8", 10, 1), ("bias", 2, 0)])
    again = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(again, CaffeSGD)
    assert again.momentum == 0.8 and again.caffe_weight_decay == 0.001
    assert again.multipliers == [("fc8", 10.0, 1.0), ("bias", 2.0, 0.0)]
    assert again.weight_decay is None          # Keras's decoupled decay stays off
    lr = again.learning_rate if not callable(again._learning_rate) else again._learning_rate(7)
    assert float(keras.ops.convert_to_numpy(lr)) == pytest.approx(0.005)


MIRRORED = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from wsk.optimizers import CaffeSGD, deeplab_multipliers, step_schedule
    args = json.loads(sys.argv[1])
    x, y = np.array(args["x"], np.float32), np.array(args["y"], np.float32)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        inputs = keras.Input((3,))
        layer = keras.layers.Dense(1, name="fc8")
        model = keras.Model(inputs, layer(inputs))
        layer.set_weights([np.array(args["kernel"], np.float32), np.array(args["bias"], np.float32)])
        s = args["settings"]
        model.compile(CaffeSGD(step_schedule(s["base_lr"], s["step_size"], s["gamma"]),
                               momentum=s["momentum"], weight_decay=s["decay"],
                               multipliers=deeplab_multipliers("fc8", 10)), "mse")
    model.fit(x, y, batch_size=8, epochs=s["steps"], shuffle=False, verbose=0)
    k, b = layer.get_weights()
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "kernel": k.tolist(),
                      "bias": b.tolist()}))
""")


def test_fit_under_mirrored_strategy_matches_hand_update():
    x, y, kernel, bias = _problem()
    args = json.dumps({"x": x.tolist(), "y": y.tolist(), "kernel": kernel.tolist(),
                       "bias": bias.tolist(), "settings": SETTINGS})
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    run = subprocess.run([sys.executable, "-c", MIRRORED, args], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    expected = caffe_reference(x, y, kernel, bias, mults={"kernel": (10, 1), "bias": (20, 0)},
                               **SETTINGS)
    np.testing.assert_allclose(result["kernel"], expected["kernel"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result["bias"], expected["bias"], rtol=1e-5, atol=1e-6)


def test_global_clipnorm_scales_the_gradients_before_caffes_update():
    """``global_clipnorm`` (the demo's ``SegRecipe.clip_norm``): gradients whose global norm is over
    the limit are scaled to it before the multipliers, the decay and the momentum, by hand:
    kernel gradient (3, 4) and bias gradient 12 have global norm 13; clipped to 6.5 they halve."""
    kernel, bias = keras.Variable(np.array([[1.0], [2.0]], np.float32), name="kernel"), keras.Variable(
        np.array([0.5], np.float32), name="bias")
    optimizer = CaffeSGD(0.1, momentum=0.9, weight_decay=0.01, global_clipnorm=6.5,
                         multipliers=[(r"bias", 2.0, 0.0), (r"kernel", 1.0, 1.0)])
    grads = [np.array([[3.0], [4.0]], np.float32), np.array([12.0], np.float32)]
    for _ in range(2):
        optimizer.apply_gradients(zip([keras.ops.convert_to_tensor(g) for g in grads], [kernel, bias]))
    # by hand: clipped g_k = (1.5, 2), g_b = 6 at each step (the norm is 13 both times)
    w_k, w_b, v_k, v_b = np.array([1.0, 2.0]), 0.5, np.zeros(2), 0.0
    for _ in range(2):
        v_k = 0.9 * v_k + 0.1 * (np.array([1.5, 2.0]) + 0.01 * w_k)
        v_b = 0.9 * v_b + 0.1 * 2.0 * 6.0
        w_k, w_b = w_k - v_k, w_b - v_b
    np.testing.assert_allclose(keras.ops.convert_to_numpy(kernel).ravel(), w_k, rtol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bias), [w_b], rtol=1e-6)
    assert CaffeSGD.from_config(optimizer.get_config()).global_clipnorm == 6.5


def test_compile_for_training_clips_at_the_recipes_clip_norm():
    """The recipe's ``clip_norm`` reaches the optimizer that trains (``wsk.training.engine``)."""
    import dataclasses

    from wsk.recipes import get_recipe
    from wsk.training.engine import compile_for_training

    for clip in (None, 7.0):
        recipe = dataclasses.replace(get_recipe("paper").seg, clip_norm=clip)
        model = compile_for_training(_linear_model(*_problem()[2:]), "mse", 0.01, 0.1, recipe, 10)
        assert model.optimizer.global_clipnorm == clip
