"""Every use of Keras's private API in wsk, in one module (``keras`` only, no TensorFlow import).

wsk needs five things that public Keras 3 does not offer. Each is one small function or class
here; the rest of wsk calls only these, and ``tests/test_keras_private.py`` checks the behaviour
each one provides (not only that the private name still exists), so a Keras release that keeps a
name but changes its meaning fails there too.

Verified (``tests/test_keras_private.py``, ``tests/test_optimizers.py``, ``tests/test_train.py``'s
backup tests) on Keras 3.10.0 with TensorFlow 2.16.2 and 2.19.1, and on Keras 3.15.1 with TensorFlow 2.21.0,
the newest releases then; ``setup.cfg`` bounds ``keras`` and ``tensorflow`` to that range.

What each hook relies on:

* ``optimizer_variable_index``: ``Optimizer._get_variable_index(variable)`` is the position of
  ``variable`` in the list the optimizer was built with (so in the lists ``add_optimizer_variables``
  made), for a plain or a ``tf.distribute`` variable.
* ``build_from_spec``: ``Model._symbolic_build(data_batch=...)`` builds the layers, the compiled
  loss and metrics and the optimizer from the shapes and dtypes of a batch's structure alone.
* ``skip_fit_build``: the TensorFlow trainer's ``fit`` calls ``Model._maybe_symbolic_build`` on
  its first batch (all-reduced across the replicas, eagerly) before training; an instance
  attribute of that name shadows the method.
* ``BackupHooks``: ``keras.callbacks.BackupAndRestore`` writes a backup in ``_save_model``, which
  ``on_epoch_end`` calls after setting ``_current_epoch`` to the number of finished epochs and
  ``_last_batch_seen`` to 0; it restores one in ``_load_model``, which ``on_train_begin`` calls,
  which loads the weights (the optimizer's state included) and sets ``model._initial_epoch``,
  the epoch ``fit`` then starts at; its two files are ``_weights_path`` and
  ``_training_metadata_path``.
* ``set_seed_counters``: a ``keras.random.SeedGenerator`` keeps its state in a non-trainable
  variable named ``seed_generator_state`` holding ``[seed, counter]``; each draw is a function of
  that state and adds one to the counter, and the variable is not in the backup.
"""

import keras
import numpy as np

SEED_STATE_NAME = "seed_generator_state"


def optimizer_variable_index(optimizer, variable):
    """The position of ``variable`` in the list ``optimizer`` was built with."""
    return optimizer._get_variable_index(variable)


def build_from_spec(model, batch_spec):
    """Build ``model``'s layers, compiled loss and metrics and optimizer from ``batch_spec``, the
    ``(x, y)`` structure of objects with ``shape`` and ``dtype`` (a ``tf.data`` element spec);
    no data is read. Call it inside the model's distribution strategy scope."""
    model._symbolic_build(data_batch=batch_spec)


def skip_fit_build(model):
    """Make ``model.fit`` skip its build from a first batch (build the model first)."""
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None


class BackupHooks(keras.callbacks.BackupAndRestore):
    """``keras.callbacks.BackupAndRestore`` with its private steps under public names: a subclass
    overrides ``save_backup``/``load_backup`` (Keras's own steps are ``keras_save_backup`` and
    ``keras_load_backup``) and reads ``weights_path``, ``metadata_path`` and ``position``."""

    @property
    def weights_path(self):
        """The backup's weights file (optimizer state included)."""
        return self._weights_path

    @property
    def metadata_path(self):
        """The backup's JSON record of the position."""
        return self._training_metadata_path

    @property
    def position(self):
        """``{"epoch": finished epochs, "batch": last batch seen}`` when a backup is written."""
        return {"epoch": int(self._current_epoch), "batch": int(self._last_batch_seen)}

    def save_backup(self):
        self.keras_save_backup()

    def load_backup(self):
        self.keras_load_backup()

    def keras_save_backup(self):
        """Keras's own write of the backup."""
        super()._save_model()

    def keras_load_backup(self):
        """Keras's own restore: the weights, and the epoch ``fit`` starts at."""
        super()._load_model()

    def _save_model(self):
        self.save_backup()

    def _load_model(self):
        self.load_backup()


def seed_states(model):
    """The state variables of ``model``'s seed generators (dropout's, for one)."""
    return [v for v in model.variables if v.path.endswith(SEED_STATE_NAME)]


def set_seed_counters(model, counter):
    """Set the counter of every seed generator of ``model`` to ``counter``, keeping its seed, so
    the random draws that follow are the ones that followed the last time it was ``counter``."""
    for state in seed_states(model):
        seed = np.asarray(state.numpy() if hasattr(state, "numpy") else state.value)
        state.assign(np.array([seed[0], counter], dtype=seed.dtype))
