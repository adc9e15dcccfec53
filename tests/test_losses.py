"""Eq. 4 (soft multi-label cross-entropy) and the ignore-aware sparse cross-entropy, against NumPy
references written here and against Keras's own sparse categorical cross-entropy."""

import numpy as np
import pytest

import keras

from wsk.losses import SoftMultiLabelCrossEntropy, SparseCrossEntropyIgnore


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _eq4_numpy(targets, log_p):
    """J = -eta sum_t sum_ij sum_m p-hat log p, p-hat = targets / sum_m targets, eta = 1/#counted."""
    total, counted = 0.0, 0
    flat_t = targets.reshape(-1, targets.shape[-1])
    flat_l = log_p.reshape(-1, log_p.shape[-1])
    for t, lp in zip(flat_t, flat_l):
        mass = t.sum()
        if mass == 0:
            continue
        counted += 1
        total -= float(np.sum(t / mass * lp))
    return total / counted


def _soft_targets(rng, shape):
    targets = rng.uniform(0, 1, shape) * (rng.uniform(0, 1, shape) < 0.5)   # sparse soft maps
    targets[0, 0, :] = 0            # a padded row: zero mass everywhere
    targets[1, 2, 3] = 0            # a single unlabeled position
    return targets


def _np(x):
    return float(keras.ops.convert_to_numpy(x))


def test_eq4_matches_numpy_on_soft_targets_with_zero_mass_positions():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (2, 5, 6, 4))
    targets = _soft_targets(rng, (2, 5, 6, 4))
    assert (targets.sum(-1) == 0).sum() >= 7
    expected = _eq4_numpy(targets, _log_softmax(logits))
    got = _np(SoftMultiLabelCrossEntropy()(targets.astype(np.float32), logits.astype(np.float32)))
    assert got == pytest.approx(expected, rel=1e-5)


def test_eq4_zero_mass_positions_do_not_change_the_loss():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 1, (1, 3, 3, 5)).astype(np.float32)
    targets = rng.uniform(0.1, 1, (1, 3, 3, 5)).astype(np.float32)
    loss = SoftMultiLabelCrossEntropy()
    targets[0, 1, 1] = 0
    changed = logits.copy()
    changed[0, 1, 1] = [9, -9, 4, 0, 3]     # whatever is predicted there does not count
    assert _np(loss(targets, logits)) == pytest.approx(_np(loss(targets, changed)), rel=1e-6)


def test_eq4_targets_normalised_per_position():
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 1, (2, 4, 4, 3)).astype(np.float32)
    targets = rng.uniform(0.1, 1, (2, 4, 4, 3)).astype(np.float32)
    scale = rng.uniform(0.5, 20, (2, 4, 4, 1)).astype(np.float32)
    loss = SoftMultiLabelCrossEntropy()
    assert _np(loss(targets * scale, logits)) == pytest.approx(_np(loss(targets, logits)), rel=1e-5)


def test_target_power_sharpens_the_targets_by_hand():
    # one position, targets (0.6, 0.4, 0), logits (0, ln 2, 0): p = (1/4, 1/2, 1/4)
    targets = np.array([[0.6, 0.4, 0.0]], np.float32)
    logits = np.array([[0.0, np.log(2.0), 0.0]], np.float32)
    # gamma 1: -(0.6 ln 1/4 + 0.4 ln 1/2) = 1.2 ln 2 + 0.4 ln 2 = 1.6 ln 2
    assert _np(SoftMultiLabelCrossEntropy()(targets, logits)) == pytest.approx(1.6 * np.log(2), rel=1e-5)
    # gamma 2: (0.36, 0.16) / 0.52 -> -(0.36 ln 1/4 + 0.16 ln 1/2) / 0.52 = (0.88 / 0.52) ln 2
    got = _np(SoftMultiLabelCrossEntropy(target_power=2.0)(targets, logits))
    assert got == pytest.approx(0.88 / 0.52 * np.log(2), rel=1e-5)
    # a large gamma is the one-hot target (1, 0, 0): -ln 1/4
    got = _np(SoftMultiLabelCrossEntropy(target_power=60.0)(targets, logits))
    assert got == pytest.approx(2 * np.log(2), rel=1e-4)
    with pytest.raises(ValueError, match="target_power"):
        SoftMultiLabelCrossEntropy(target_power=0)


def _upsample_naive(logits, height, width):
    """Caffe's Interp (aligned corners), one output pixel at a time."""
    batch, h, w, channels = logits.shape
    out = np.zeros((batch, height, width, channels))
    for i in range(height):
        for j in range(width):
            y, x = i * (h - 1) / (height - 1), j * (w - 1) / (width - 1)
            y0, x0 = min(int(np.floor(y)), h - 2), min(int(np.floor(x)), w - 2)
            dy, dx = y - y0, x - x0
            out[:, i, j] = ((1 - dy) * (1 - dx) * logits[:, y0, x0] + (1 - dy) * dx * logits[:, y0, x0 + 1]
                            + dy * (1 - dx) * logits[:, y0 + 1, x0] + dy * dx * logits[:, y0 + 1, x0 + 1])
    return out


def test_upsample_counts_every_pixel_of_targets_at_the_crops_resolution():
    rng = np.random.default_rng(7)
    logits = rng.normal(0, 2, (2, 3, 4, 5)).astype(np.float32)        # a stride-4 grid of a 9 x 13 crop
    targets = _soft_targets(rng, (2, 9, 13, 5)).astype(np.float32)
    expected = _eq4_numpy(targets, _log_softmax(_upsample_naive(logits.astype(np.float64), 9, 13)))
    got = _np(SoftMultiLabelCrossEntropy(upsample=True)(targets, logits))
    assert got == pytest.approx(expected, rel=1e-5)
    labels = rng.integers(0, 5, (2, 9, 13))
    labels[0, :2] = 255                                                # ignored rows
    one_hot = np.eye(5)[np.where(labels == 255, 0, labels)] * (labels != 255)[..., None]
    expected = _eq4_numpy(one_hot, _log_softmax(_upsample_naive(logits.astype(np.float64), 9, 13)))
    got = _np(SparseCrossEntropyIgnore(upsample=True)(labels, logits))
    assert got == pytest.approx(expected, rel=1e-5)
    # a per-image weight reaches every pixel: image 1 alone
    got = _np(SoftMultiLabelCrossEntropy(upsample=True, reduction="sum")(targets, logits, np.array([0.0, 1.0])))
    expected = _eq4_numpy(targets[1:], _log_softmax(_upsample_naive(logits[1:].astype(np.float64), 9, 13)))
    assert got == pytest.approx(expected * (targets[1].sum(-1) > 0).sum(), rel=1e-5)


def test_eq4_one_hot_equals_sparse_categorical_cross_entropy():
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 3, (2, 7, 5, 21)).astype(np.float32)
    labels = rng.integers(0, 21, (2, 7, 5))
    one_hot = np.eye(21, dtype=np.float32)[labels]
    keras_sce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    expected = _np(keras_sce(labels, logits))
    assert _np(SoftMultiLabelCrossEntropy()(one_hot, logits)) == pytest.approx(expected, rel=1e-5)


def test_eq4_from_probabilities_hcp_image_labels():
    # HCP: the model outputs max-pooled softmax probabilities; targets are y / ||y||_1.
    rng = np.random.default_rng(4)
    probs = rng.uniform(0.01, 0.99, (3, 20)).astype(np.float32)
    labels = np.zeros((3, 20), np.float32)
    labels[0, [2, 7]] = 1
    labels[1, 14] = 1
    labels[2, [0, 1, 19]] = 1
    expected = np.mean([-np.sum(y / y.sum() * np.log(p)) for y, p in zip(labels, probs)])
    got = _np(SoftMultiLabelCrossEntropy(from_logits=False)(labels, probs))
    assert got == pytest.approx(expected, rel=1e-5)
    # A zero probability is clipped, not -inf.
    probs[0, 2] = 0.0
    assert np.isfinite(_np(SoftMultiLabelCrossEntropy(from_logits=False)(labels, probs)))


def test_eq4_reduction_none_returns_per_position_terms():
    rng = np.random.default_rng(5)
    logits = rng.normal(0, 1, (1, 2, 2, 3))
    targets = rng.uniform(0, 1, (1, 2, 2, 3))
    targets[0, 0, 1] = 0
    terms = keras.ops.convert_to_numpy(SoftMultiLabelCrossEntropy(reduction=None)(
        targets.astype(np.float32), logits.astype(np.float32)))
    lp = _log_softmax(logits)
    expected = -np.sum(targets / np.maximum(targets.sum(-1, keepdims=True), 1e-30) * lp, axis=-1)
    assert terms.shape == (1, 2, 2)
    np.testing.assert_allclose(terms, expected, rtol=1e-5)
    assert terms[0, 0, 1] == 0


def test_eq4_per_image_sample_weight():
    rng = np.random.default_rng(6)
    logits = rng.normal(0, 1, (2, 3, 3, 4))
    targets = rng.uniform(0.1, 1, (2, 3, 3, 4))
    weights = np.array([0.0, 2.0])
    lp = _log_softmax(logits)
    per_pos = -np.sum(targets / targets.sum(-1, keepdims=True) * lp, axis=-1)   # (2, 3, 3)
    expected = (per_pos * weights[:, None, None]).sum() / per_pos.size
    got = _np(SoftMultiLabelCrossEntropy()(targets.astype(np.float32), logits.astype(np.float32),
                                           sample_weight=weights.astype(np.float32)))
    assert got == pytest.approx(expected, rel=1e-5)


def test_sparse_ignore_matches_numpy_and_keras_ignore_class():
    rng = np.random.default_rng(7)
    logits = rng.normal(0, 2, (2, 6, 5, 21))
    labels = rng.integers(0, 21, (2, 6, 5))
    labels[0, :2] = 255
    labels[1, 3, 4] = 255
    lp = _log_softmax(logits)
    keep = labels != 255
    expected = -np.mean(np.take_along_axis(lp, np.where(keep, labels, 0)[..., None], -1)[..., 0][keep])
    loss = SparseCrossEntropyIgnore()
    got = _np(loss(labels, logits.astype(np.float32)))
    assert got == pytest.approx(expected, rel=1e-5)
    keras_value = _np(keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255)(
        labels, logits.astype(np.float32)))
    assert got == pytest.approx(keras_value, rel=1e-5)
    # Labels shaped (..., 1) work the same.
    assert _np(loss(labels[..., None], logits.astype(np.float32))) == pytest.approx(got, rel=1e-6)


def test_sparse_ignore_all_ignored_gives_zero():
    logits = np.zeros((1, 2, 2, 3), np.float32)
    labels = np.full((1, 2, 2), 255)
    assert _np(SparseCrossEntropyIgnore()(labels, logits)) == 0.0


def test_losses_serialize_round_trip():
    for loss in (SoftMultiLabelCrossEntropy(from_logits=False, name="soft"),
                 SoftMultiLabelCrossEntropy(target_power=2.0, upsample=True),
                 SparseCrossEntropyIgnore(ignore_label=7, from_logits=True, upsample=True)):
        again = keras.losses.deserialize(keras.losses.serialize(loss))
        assert type(again) is type(loss)
        assert again.get_config() == loss.get_config()
    assert SparseCrossEntropyIgnore(ignore_label=7).get_config()["ignore_label"] == 7
    assert SoftMultiLabelCrossEntropy(target_power=2.0).get_config()["target_power"] == 2.0


def test_losses_round_trip_through_keras_file(tmp_path):
    inputs = keras.Input((4, 4, 2))
    outputs = keras.layers.Conv2D(3, 1, name="fc8")(inputs)
    model = keras.Model(inputs, outputs)
    for loss in (SoftMultiLabelCrossEntropy(from_logits=True, target_power=2.0),
                 SparseCrossEntropyIgnore(ignore_label=9)):
        model.compile("sgd", loss)
        path = tmp_path / f"{type(loss).__name__}.keras"
        model.save(path)
        loaded = keras.models.load_model(path)
        assert type(loaded.loss) is type(loss)
        assert loaded.loss.get_config() == loss.get_config()


def test_soft_loss_trains_a_model():
    # model.fit with the loss: the loss goes down on a fixed batch.
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(8)
    x = rng.normal(0, 1, (4, 6, 6, 3)).astype(np.float32)
    y = rng.uniform(0, 1, (4, 6, 6, 5)).astype(np.float32)
    y[:, 0] = 0
    inputs = keras.Input((6, 6, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(5, 3, padding="same")(inputs))
    model.compile(keras.optimizers.SGD(0.5), SoftMultiLabelCrossEntropy())
    history = model.fit(x, y, epochs=5, batch_size=4, verbose=0).history["loss"]
    assert history[-1] < history[0]


def test_compiled_loss_uses_eq4_normaliser():
    # model.evaluate goes through Keras's compile machinery: eta must still count positions.
    rng = np.random.default_rng(9)
    logits = rng.normal(0, 2, (4, 3, 4, 5))
    targets = _soft_targets(rng, (4, 3, 4, 5))
    inputs = keras.Input((3, 4, 5))
    model = keras.Model(inputs, keras.layers.Identity()(inputs))
    model.compile(loss=SoftMultiLabelCrossEntropy())
    got = model.evaluate(logits.astype(np.float32), targets.astype(np.float32), batch_size=4,
                         verbose=0)
    assert got == pytest.approx(_eq4_numpy(targets, _log_softmax(logits)), rel=1e-5)


def test_class_weights_scale_each_class_term_by_hand():
    # Two positions of one-hot targets, classes 0 and 2, ignored label 255 at a third; weights 0.5, 1, 3.
    logits = np.array([[[[2.0, 0.0, -1.0], [0.5, 0.5, 1.0], [9.0, 0.0, 0.0]]]], np.float32)
    log_p = _log_softmax(logits.astype(np.float64))[0, 0]
    expected = -(0.5 * log_p[0, 0] + 3.0 * log_p[1, 2]) / 2          # eta: the two counted positions
    labels = np.array([[[0, 2, 255]]])
    got = _np(SparseCrossEntropyIgnore(class_weights=[0.5, 1.0, 3.0])(labels, logits))
    assert got == pytest.approx(expected, rel=1e-5)
    # soft targets: -sum_m w_m p-hat^m log p^m, p-hat normalised first; a massless position does not count
    targets = np.array([[[[1.0, 0.0, 3.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.0]]]], np.float32)
    expected = -((0.5 * 0.25 * log_p[0, 0] + 3.0 * 0.75 * log_p[0, 2]) + 1.0 * log_p[1, 1]) / 2
    got = _np(SoftMultiLabelCrossEntropy(class_weights=[0.5, 1.0, 3.0])(targets, logits))
    assert got == pytest.approx(expected, rel=1e-5)
    # weights of 1 are the unweighted loss
    assert _np(SoftMultiLabelCrossEntropy(class_weights=[1, 1, 1])(targets, logits)) == pytest.approx(
        _np(SoftMultiLabelCrossEntropy()(targets, logits)), rel=1e-6)


def test_class_weights_serialize_and_must_not_be_negative():
    loss = SparseCrossEntropyIgnore(class_weights=[0.25, 4.0])
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert again.get_config()["class_weights"] == [0.25, 4.0]
    assert SoftMultiLabelCrossEntropy().get_config()["class_weights"] is None
    with pytest.raises(ValueError, match="class_weights"):
        SoftMultiLabelCrossEntropy(class_weights=[1.0, -0.5])
