"""One test per hook of ``wsk.keras_private`` (every use of private Keras API in wsk): each checks
the behaviour the hook provides against numbers worked out here, so a Keras release that keeps a
private name but changes what it does fails as well as one that removes it."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402

from wsk.keras_private import build_from_spec, optimizer_variable_index, set_seed_counters  # noqa: E402
from wsk.optimizers import CaffeSGD, step_schedule  # noqa: E402
from wsk.training.callbacks import AtomicBackupAndRestore, ResumeEpoch  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MULTIPLIERS = [(r"fc8/kernel$", 10.0, 1.0), (r"fc8/bias$", 20.0, 0.0), (r"bias$", 2.0, 0.0)]


def _linear(kernel, bias, name="fc8"):
    inputs = keras.Input((kernel.shape[0],))
    layer = keras.layers.Dense(kernel.shape[1], name=name)
    model = keras.Model(inputs, layer(inputs))
    layer.set_weights([kernel, bias])
    return model


def _caffe_minibatches(x, y, kernel, bias, steps, batch, base_lr, step_size, gamma, momentum, decay):
    """Caffe's SGD by hand on y = x W + b, mean squared error, batches taken in order: per step k
    lr = base_lr gamma^(k // step_size), v = m v + lr lr_mult (g + decay decay_mult w), w -= v,
    with fc8's multipliers (kernel x10 decayed, bias x20 not). Returns the weights and the
    loss of each step (before its update)."""
    w = {"kernel": kernel.astype(np.float64), "bias": bias.astype(np.float64)}
    v = {name: np.zeros_like(value) for name, value in w.items()}
    mults = {"kernel": (10.0, 1.0), "bias": (20.0, 0.0)}
    losses = []
    for k in range(steps):
        start = (k * batch) % len(x)
        xb, yb = x[start:start + batch].astype(np.float64), y[start:start + batch].astype(np.float64)
        residual = xb @ w["kernel"] + w["bias"] - yb
        losses.append(float(np.mean(residual ** 2)))
        n = residual.size
        grads = {"kernel": 2.0 / n * xb.T @ residual, "bias": 2.0 / n * residual.sum(axis=0)}
        lr = base_lr * gamma ** (k // step_size)
        for name, (lr_mult, decay_mult) in mults.items():
            v[name] = momentum * v[name] + lr * lr_mult * (grads[name] + decay * decay_mult * w[name])
            w[name] = w[name] - v[name]
    return w, losses


def _problem(rows=8):
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (rows, 3)).astype(np.float32)
    y = rng.normal(0, 1, (rows, 1)).astype(np.float32)
    return x, y, np.array([[0.5], [-1.0], [2.0]], np.float32), np.array([0.3], np.float32)


SGD = dict(base_lr=0.01, step_size=2, gamma=0.5, momentum=0.9, decay=0.05)


def _caffe_sgd():
    return CaffeSGD(step_schedule(SGD["base_lr"], SGD["step_size"], SGD["gamma"]),
                    momentum=SGD["momentum"], weight_decay=SGD["decay"], multipliers=MULTIPLIERS)


def test_optimizer_variable_index_gives_each_variable_its_own_multipliers_and_velocity():
    """Gradients applied in another order than the build's, and to a subset: each variable must
    still get its own multipliers and velocity (by hand below)."""
    conv, fc8 = keras.layers.Dense(2, name="conv"), keras.layers.Dense(2, name="fc8")
    conv.build((None, 2))
    fc8.build((None, 2))
    variables = [conv.kernel, conv.bias, fc8.kernel, fc8.bias]
    rng = np.random.default_rng(0)
    start = [rng.normal(0, 1, v.shape).astype(np.float32) for v in variables]
    for variable, value in zip(variables, start):
        variable.assign(value)
    optimizer = CaffeSGD(0.1, momentum=0.5, weight_decay=0.01, multipliers=MULTIPLIERS)
    optimizer.build(variables)
    assert [optimizer_variable_index(optimizer, v) for v in reversed(variables)] == [3, 2, 1, 0]
    mults = [(1.0, 1.0), (2.0, 0.0), (10.0, 1.0), (20.0, 0.0)]   # conv kernel, conv bias, fc8 ...
    w = [s.astype(np.float64) for s in start]
    vel = [np.zeros_like(s) for s in w]
    for order in ([3, 0], [1, 2, 0], [2]):
        grads = {i: rng.normal(0, 1, w[i].shape).astype(np.float32) for i in order}
        optimizer.apply_gradients([(grads[i], variables[i]) for i in order])
        for i in order:
            lr_mult, decay_mult = mults[i]
            vel[i] = 0.5 * vel[i] + 0.1 * lr_mult * (grads[i] + 0.01 * decay_mult * w[i])
            w[i] = w[i] - vel[i]
    for variable, want in zip(variables, w):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), want, rtol=1e-5, atol=1e-6)


def test_build_from_spec_builds_layers_loss_metrics_and_optimizer_from_shapes_alone():
    import tensorflow as tf

    model = keras.Sequential([keras.layers.Dense(3, name="conv"), keras.layers.Dense(2, name="fc8")],
                             name="net")   # named: an unnamed model's prefix depends on the models made before
    model.compile(optimizer=_caffe_sgd(), loss="mse", metrics=["mae"])
    assert not model.built and len(model.metrics_variables) == 2      # the loss tracker's
    build_from_spec(model, (tf.TensorSpec((None, 5), tf.float32), tf.TensorSpec((None, 2), tf.float32)))
    assert model.built
    shapes = {v.path: tuple(v.shape) for v in model.trainable_variables}
    assert shapes == {"net/conv/kernel": (5, 3), "net/conv/bias": (3,),
                      "net/fc8/kernel": (3, 2), "net/fc8/bias": (2,)}
    optimizer = model.optimizer
    assert optimizer.built
    assert [tuple(v.shape) for v in optimizer.velocities] == [tuple(v.shape) for v in model.trainable_variables]
    assert [optimizer_variable_index(optimizer, v) for v in model.trainable_variables] == [0, 1, 2, 3]
    assert optimizer.multipliers_for("net/fc8/bias") == (20.0, 0.0)
    assert [v.path for v in model.metrics_variables] == [
        "loss/total", "loss/count", "mean_absolute_error/total", "mean_absolute_error/count"]
    assert int(optimizer.iterations) == 0          # built, not trained


def test_backup_resumes_at_the_saved_epoch_with_weights_and_optimizer_state(tmp_path):
    """Train 2 of 3 epochs (2 steps each) with a backup, stop, rebuild a fresh model with other
    weights, resume: fit must start at epoch 3 and end at the weights of 6 uninterrupted Caffe
    steps worked out by hand (so the momentum and the schedule's step count were restored too)."""
    x, y, kernel, bias = _problem()
    folder = str(tmp_path / "backup")
    begun = []

    class Stop(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt      # a kill right after epoch 2's backup

    class Begun(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            begun.append(epoch)

    model = _linear(kernel, bias)
    model.compile(_caffe_sgd(), "mse")
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0,
                  callbacks=[AtomicBackupAndRestore(folder), Stop()])
    record = json.loads(open(os.path.join(folder, "training_metadata.json")).read())
    assert (record["epoch"], record["batch"]) == (2, 0)
    assert os.path.exists(os.path.join(folder, "latest.weights.h5"))

    fresh = _linear(np.zeros_like(kernel), np.zeros_like(bias))
    fresh.compile(_caffe_sgd(), "mse")
    history = fresh.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0,
                        callbacks=[AtomicBackupAndRestore(folder), Begun()])
    assert begun == [2] and len(history.history["loss"]) == 1
    want, losses = _caffe_minibatches(x, y, kernel, bias, steps=6, batch=4, **SGD)
    got_kernel, got_bias = fresh.get_layer("fc8").get_weights()
    np.testing.assert_allclose(got_kernel, want["kernel"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_bias, want["bias"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(history.history["loss"][0], np.mean(losses[4:]), rtol=1e-5)
    assert not os.path.exists(folder)               # removed once fit ends


def _dropout_model(seed=7):
    return keras.Sequential([keras.Input((256,)), keras.layers.Dropout(0.5, seed=seed)])


def test_seed_counters_repeat_the_dropout_draws():
    ones = np.ones((1, 256), np.float32)
    model = _dropout_model()
    (state,) = [v for v in model.non_trainable_variables]
    seed = int(keras.ops.convert_to_numpy(state)[0])
    set_seed_counters(model, 1000)
    first = keras.ops.convert_to_numpy(model(ones, training=True))
    second = keras.ops.convert_to_numpy(model(ones, training=True))
    assert 0.3 < np.mean(first == 0) < 0.7 and not np.array_equal(first, second)
    set_seed_counters(model, 1000)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(ones, training=True)), first)
    assert list(keras.ops.convert_to_numpy(state)) == [seed, 1001]   # the seed kept, one draw counted
    other = _dropout_model()                    # a rebuilt model, its generator used before
    other(ones, training=True)
    set_seed_counters(other, 1000)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(other(ones, training=True)), first)
    set_seed_counters(other, 2000)
    assert not np.array_equal(keras.ops.convert_to_numpy(other(ones, training=True)), first)


def test_resumed_fit_repeats_the_epochs_dropout(tmp_path):
    """ResumeEpoch sets the dropout counters by epoch: an interrupted and resumed run (fresh model)
    ends at the same weights as an uninterrupted one; without the counters it would not."""
    x, y, kernel, bias = _problem()
    kernel = np.tile(kernel, (4, 1))
    x = np.tile(x, (1, 4))

    def run(folder, stop_after=None, counters=True):
        inputs = keras.Input((12,))
        dense = keras.layers.Dense(1, name="fc8")
        model = keras.Model(inputs, dense(keras.layers.Dropout(0.5, seed=11)(inputs)))
        dense.set_weights([kernel, bias])
        model.compile(_caffe_sgd(), "mse")
        model(x[:1], training=True)                  # a draw before fit: the counter moves on

        class Stop(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch == stop_after:
                    raise KeyboardInterrupt

        first_epoch = keras.Variable(0, dtype="int64", trainable=False)
        callbacks = [ResumeEpoch(first_epoch)] if counters else []
        model.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0,
                  callbacks=callbacks + [AtomicBackupAndRestore(folder), Stop()])
        return model.get_layer("fc8").get_weights()[0]

    whole = run(str(tmp_path / "whole"))
    with pytest.raises(KeyboardInterrupt):
        run(str(tmp_path / "cut"), stop_after=0)
    np.testing.assert_allclose(run(str(tmp_path / "cut")), whole, rtol=1e-6)
    with pytest.raises(KeyboardInterrupt):
        run(str(tmp_path / "plain"), stop_after=0, counters=False)
    assert not np.allclose(run(str(tmp_path / "plain"), counters=False), whole, rtol=1e-6)


WORKER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    strategy = tf.distribute.MultiWorkerMirroredStrategy()   # TF_CONFIG names this worker
    import keras
    from wsk.optimizers import CaffeSGD, step_schedule
    from wsk.training.engine import prepare_multi_worker_fit

    args = json.loads(sys.argv[1])
    x, y = np.array(args["x"], np.float32), np.array(args["y"], np.float32)
    s = args["sgd"]
    with strategy.scope():
        model = keras.Sequential([keras.layers.Dense(1, name="fc8")])   # built from the spec
        model.compile(CaffeSGD(step_schedule(s["base_lr"], s["step_size"], s["gamma"]),
                               momentum=s["momentum"], weight_decay=s["decay"],
                               multipliers=[tuple(m) for m in args["multipliers"]]), "mse")
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(len(x)).repeat().with_options(options)
    prepare_multi_worker_fit(model, dataset)
    model.get_layer("fc8").set_weights([np.array(args["kernel"], np.float32),
                                        np.array(args["bias"], np.float32)])

    class Losses(keras.callbacks.Callback):
        values = []
        def on_train_batch_end(self, batch, logs=None):
            self.values.append(float(np.mean(logs["loss"])))

    model.fit(dataset, epochs=3, steps_per_epoch=1, verbose=0, callbacks=[Losses()])
    kernel, bias = model.get_layer("fc8").get_weights()
    print("RESULT" + json.dumps({"losses": Losses.values, "kernel": kernel.tolist(), "bias": bias.tolist(),
                                 "replicas": strategy.num_replicas_in_sync}))
""")


def test_two_workers_build_from_the_spec_and_report_the_same_loss():
    """Two MultiWorkerMirroredStrategy workers on 127.0.0.1 (a model built from the dataset's
    spec, fit's own build skipped, the logs given a worker axis): each worker sees half of every
    batch, and both report the whole batch's loss and end at the weights of full-batch Caffe
    steps worked out by hand."""
    from test_train import _free_ports, _result

    x, y, kernel, bias = _problem()
    args = json.dumps({"x": x.tolist(), "y": y.tolist(), "kernel": kernel.tolist(), "bias": bias.tolist(),
                       "sgd": SGD, "multipliers": MULTIPLIERS})
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    processes = [subprocess.Popen(
        [sys.executable, "-c", WORKER, args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=dict(env, TF_CONFIG=json.dumps({"cluster": {"worker": workers},
                                                       "task": {"type": "worker", "index": index}})))
        for index in range(2)]
    results = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=300)
            results.append(_result(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    want, losses = _caffe_minibatches(x, y, kernel, bias, steps=3, batch=len(x), **SGD)
    for result in results:
        assert result["replicas"] == 2
        np.testing.assert_allclose(result["losses"], losses, rtol=1e-5)
        np.testing.assert_allclose(result["kernel"], want["kernel"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(result["bias"], want["bias"], rtol=1e-5, atol=1e-6)
