"""The GPU machines' path: KERAS_BACKEND=jax with TensorFlow impossible to import.

A subprocess blocks ``tensorflow`` (``sys.modules["tensorflow"] = None``) before anything is
imported, then imports wsk.models, wsk.losses and wsk.optimizers, runs a small
DeepLab-LargeFOV forward pass and a training step with Eq. 4 and Caffe SGD, an HCP forward
pass, and the hand-checked optimizer problem; the parent checks the numbers it reports.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from test_losses import _eq4_numpy, _log_softmax
from test_optimizers import SETTINGS, _problem, caffe_reference

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import json, sys
    sys.modules["tensorflow"] = None          # any `import tensorflow` now raises ImportError
    import numpy as np
    import keras
    import wsk.models, wsk.losses, wsk.optimizers
    from wsk.models import deeplab_largefov, hcp, hcp_hypothesis_model, preprocess_input
    from wsk.losses import SoftMultiLabelCrossEntropy
    from wsk.optimizers import CaffeSGD, deeplab_multipliers, step_schedule

    args = json.loads(sys.argv[1])
    out = {"backend": keras.backend.backend()}
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)

    model = deeplab_largefov(num_classes=3, width=0.0625)
    images = preprocess_input(rng.uniform(0, 255, (2, 33, 33, 3)))
    logits = np.asarray(model.predict(images, verbose=0))
    out["logits_shape"] = list(logits.shape)
    targets = rng.uniform(0, 1, (2, 5, 5, 3)).astype(np.float32)
    targets[:, 0] = 0                          # padded row: zero mass
    model.compile(CaffeSGD(0.01), SoftMultiLabelCrossEntropy())
    before = [np.array(w) for w in model.get_weights()]
    out["train_loss"] = float(model.train_on_batch(images, targets))
    after = model.get_weights()
    out["changed"] = [bool(np.any(a != b)) for a, b in zip(before, after)]

    loss_logits = np.array(args["loss_logits"], np.float32)
    loss_targets = np.array(args["loss_targets"], np.float32)
    out["eq4"] = float(SoftMultiLabelCrossEntropy()(loss_targets, loss_logits))

    net = hcp(num_classes=4, hypotheses=3, image_size=64, width=0.0625)
    hyp = preprocess_input(rng.uniform(0, 255, (2, 3, 64, 64, 3)))
    out["hcp"] = np.asarray(net.predict(hyp, verbose=0)).tolist()
    scores = hcp_hypothesis_model(net).predict(hyp.reshape(6, 64, 64, 3), verbose=0)["scores"]
    out["hcp_scores"] = np.asarray(scores).reshape(2, 3, 4).tolist()

    s = args["settings"]
    inputs = keras.Input((3,))
    layer = keras.layers.Dense(1, name="fc8")
    linear = keras.Model(inputs, layer(inputs))
    layer.set_weights([np.array(args["kernel"], np.float32), np.array(args["bias"], np.float32)])
    linear.compile(CaffeSGD(step_schedule(s["base_lr"], s["step_size"], s["gamma"]),
                            momentum=s["momentum"], weight_decay=s["decay"],
                            multipliers=deeplab_multipliers("fc8", 10)), "mse")
    linear.fit(np.array(args["x"], np.float32), np.array(args["y"], np.float32), batch_size=8,
               epochs=s["steps"], shuffle=False, verbose=0)
    out["linear"] = [w.tolist() for w in layer.get_weights()]

    out["tensorflow_modules"] = sorted(k for k, v in sys.modules.items()
                                       if k.split(".")[0] == "tensorflow" and v is not None)
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def jax_run():
    pytest.importorskip("jax")
    rng = np.random.default_rng(9)
    loss_logits = rng.normal(0, 2, (2, 3, 4, 5))
    loss_targets = rng.uniform(0, 1, (2, 3, 4, 5))
    loss_targets[0, 1] = 0
    x, y, kernel, bias = _problem()
    args = {"loss_logits": loss_logits.tolist(), "loss_targets": loss_targets.tolist(),
            "x": x.tolist(), "y": y.tolist(), "kernel": kernel.tolist(), "bias": bias.tolist(),
            "settings": SETTINGS}
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    run = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(args)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    return result, args


def test_imports_and_runs_on_jax_without_tensorflow(jax_run):
    result, _ = jax_run
    assert result["backend"] == "jax"
    assert result["tensorflow_modules"] == []


def test_deeplab_forward_and_training_step_on_jax(jax_run):
    result, _ = jax_run
    assert result["logits_shape"] == [2, 5, 5, 3]        # 33 -> 17 -> 9 -> 5
    assert np.isfinite(result["train_loss"]) and result["train_loss"] > 0
    assert all(result["changed"])                         # every kernel and bias was updated


def test_eq4_on_jax_matches_numpy(jax_run):
    result, args = jax_run
    targets = np.array(args["loss_targets"])
    expected = _eq4_numpy(targets, _log_softmax(np.array(args["loss_logits"])))
    assert result["eq4"] == pytest.approx(expected, rel=1e-5)


def test_hcp_on_jax_is_max_of_hypothesis_softmax(jax_run):
    result, _ = jax_run
    scores = np.array(result["hcp_scores"])
    np.testing.assert_allclose(scores.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(result["hcp"], scores.max(axis=1), rtol=1e-5, atol=1e-7)


def test_caffe_sgd_on_jax_matches_hand_update(jax_run):
    result, args = jax_run
    x, y, kernel, bias = _problem()
    expected = caffe_reference(x, y, kernel, bias, mults={"kernel": (10, 1), "bias": (20, 0)},
                               **args["settings"])
    np.testing.assert_allclose(result["linear"][0], expected["kernel"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result["linear"][1], expected["bias"], rtol=1e-5, atol=1e-6)
