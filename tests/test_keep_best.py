"""HCP training length by validation (``HCPRecipe.keep_best``): ``KeepBestEpoch`` keeps the epoch of
best validation mAP, across a resumed ``fit``."""

import keras
import numpy as np

from wsk.training.callbacks import KeepBestEpoch, best_epoch


class FixedScores(keras.callbacks.Callback):
    """Logs a given val_mAP per epoch and remembers each epoch's weights."""

    def __init__(self, values):
        super().__init__()
        self.values, self.weights = list(values), []

    def on_epoch_end(self, epoch, logs=None):
        logs["val_mAP"] = self.values[epoch]
        self.weights.append([w.copy() for w in self.model.get_weights()])


def _model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model


def test_the_best_epoch_is_restored_and_remembered_across_a_resume(tmp_path):
    x, y = np.random.default_rng(0).normal(size=(16, 3)), np.zeros((16, 2))
    model, scores = _model(), FixedScores([0.3, 0.7, 0.5, 0.6])
    best = KeepBestEpoch(tmp_path / "best" / "image")
    model.fit(x, y, epochs=4, batch_size=4, verbose=0, callbacks=[scores, best])
    assert best.restore(model) == (2, 0.7)
    for got, want in zip(model.get_weights(), scores.weights[1]):   # epoch 2's weights, not epoch 4's
        np.testing.assert_array_equal(got, want)
    assert best_epoch(tmp_path / "best" / "image") == (2, 0.7)
    # a resumed fit (epochs 3-4 again, lower scores) keeps the best of the earlier epochs
    again = KeepBestEpoch(tmp_path / "best" / "image")
    model.fit(x, y, epochs=4, initial_epoch=2, batch_size=4, verbose=0,
              callbacks=[FixedScores([0, 0, 0.65, 0.4]), again])
    assert again.restore(model) == (2, 0.7)
    for got, want in zip(model.get_weights(), scores.weights[1]):
        np.testing.assert_array_equal(got, want)
    assert best_epoch(tmp_path / "nothing") is None
