"""The callbacks every wsk training run uses: validation mAP, epoch-exact resumption, atomic backups,
and a NaN stop that keeps the last good epoch."""

import os

import keras
import numpy as np

from wsk import storage
from wsk.errors import WskError
from wsk.io import atomic_path, load_json, remove_paths, save_json
from wsk.storage import sha256_of
from wsk.keras_private import BackupHooks, set_seed_counters
from wsk.metrics import multilabel_average_precision


class MultiLabelMAP(keras.callbacks.Callback):
    """After every epoch: predict ``inputs`` (a dataset of HCP inputs), print the validation
    mAP against ``labels`` ``(N, C)`` and add it to the logs as ``val_mAP`` (so TensorBoard
    and History record it). The per-class APs are kept in ``self.history``."""

    def __init__(self, inputs, labels, printer=print, newline=False):
        super().__init__()
        self.newline = newline      # end Keras's progress bar line first
        self.inputs = inputs
        self.labels = np.asarray(labels)
        self.printer = printer
        self.history = []

    def evaluate(self):
        """``(mAP, per-class AP)`` of the current model on the validation inputs."""
        scores = self.model.predict(self.inputs, verbose=0)
        return multilabel_average_precision(self.labels, scores)

    def on_epoch_end(self, epoch, logs=None):
        value, per_class = self.evaluate()
        self.history.append((value, per_class))
        if logs is not None:
            logs["val_mAP"] = value
        line = f"epoch {epoch + 1}: validation mAP {value:.4f} over {len(per_class)} classes"
        self.printer(("\n" if self.newline else "") + line)


class ResumeEpoch(keras.callbacks.Callback):
    """Make the randomness of epoch ``e`` a function of ``e``, so a resumed ``fit`` repeats it.

    ``BackupAndRestore`` makes a resumed ``fit`` start at a later epoch with the saved weights
    and optimizer state; two things it does not restore are handled here:

    * the data: the first ``on_epoch_begin`` writes the starting epoch into ``variable``,
      which ``wsk.data.pipelines.epoch_stream`` reads before producing its first element;
    * dropout: at every epoch the counter of each seed-generator state (``[seed, counter]``,
      not part of the backup) is set to ``epoch * EPOCH_STRIDE``.
    """

    EPOCH_STRIDE = 1_000_003   # more draws than any epoch takes

    def __init__(self, variable):
        super().__init__()
        self.variable = variable
        self._started = False

    def on_train_begin(self, logs=None):
        self._started = False

    def on_epoch_begin(self, epoch, logs=None):
        if not self._started:
            self.variable.assign(epoch)
            self._started = True
        set_seed_counters(self.model, epoch * self.EPOCH_STRIDE)


class AtomicBackupAndRestore(BackupHooks):
    """``keras.callbacks.BackupAndRestore`` whose backup survives a kill at any moment.

    Keras writes the weights, then the epoch, in place: a kill between the two resumes the new
    weights at the old epoch, and a kill during the first leaves a torn file. Here both are written
    to temporary files and renamed, and the epoch record holds the weights' sha256: a backup whose
    two files do not belong together is discarded with a line, and the step restarts from its
    start (which gives the same result: data order and dropout are functions of the epoch).

    With ``mirror`` (a URL: ``backup_dir`` is then its local copy, ``wsk.storage.local_folder``)
    each backup is also uploaded there, the weights then the record, one ``put`` each: a kill
    between the two leaves a pair that does not belong together, discarded as above.
    """

    def __init__(self, backup_dir, printer=print, mirror=None):
        super().__init__(backup_dir)
        self.printer = printer
        self.mirror = mirror

    def save_backup(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        with atomic_path(self.weights_path) as tmp_weights:
            self.model.save_weights(tmp_weights, overwrite=True)
            record = dict(self.position, weights_sha256=sha256_of(tmp_weights))
        save_json(self.metadata_path, record)
        if self.mirror is not None:
            for path in (self.weights_path, self.metadata_path):
                storage.upload(path, self.mirror.rstrip("/") + "/" + os.path.basename(path))

    def load_backup(self):
        have_weights = os.path.exists(self.weights_path)
        have_record = os.path.exists(self.metadata_path)
        if have_weights or have_record:
            try:
                record = load_json(self.metadata_path) if have_record else {}
            except WskError:
                record = {}
            if not have_weights or record.get("weights_sha256") != sha256_of(self.weights_path):
                self.printer(f"{self.backup_dir}: the last backup was interrupted while being written; "
                             "restarting this step from its start")
                remove_paths(self.weights_path, self.metadata_path)
                return
        self.keras_load_backup()


class UploadFolder(keras.callbacks.Callback):
    """After every epoch and at the end of training, upload the files of the local folder ``local``
    to the URL ``url`` (``wsk.storage.sync_up``): the logs of a run whose WORK is a URL. Put it after
    the callbacks that write there (``CSVLogger``, ``TensorBoard``)."""

    def __init__(self, local, url):
        super().__init__()
        self.local, self.url = local, url

    def on_epoch_end(self, epoch, logs=None):
        storage.sync_up(self.local, self.url)

    def on_train_end(self, logs=None):
        storage.sync_up(self.local, self.url)


class Diverged(Exception):
    """Raised by ``TerminateOnNaNKeepCheckpoint`` to leave ``fit`` at once."""


class TerminateOnNaNKeepCheckpoint(keras.callbacks.Callback):
    """Stop training at a NaN/inf loss, as ``keras.callbacks.TerminateOnNaN`` does, but by
    raising: the epoch is not ended, so ``BackupAndRestore`` keeps the last good epoch instead
    of backing up broken weights, and nothing is saved as the final model."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            raise Diverged(f"the loss became {float(loss)} at batch {batch}")


class KeepBestEpoch(keras.callbacks.Callback):
    """Keep the weights of the epoch with the best ``monitor`` (``val_mAP``, set by
    ``MultiLabelMAP`` earlier in the callback list): ``<prefix>.weights.h5`` and ``<prefix>.json``
    (``{"epoch", "value"}``), written atomically, so a resumed ``fit`` still knows the best epoch
    of the epochs it does not repeat. ``restore(model)`` loads them after ``fit``."""

    def __init__(self, prefix, monitor="val_mAP"):
        super().__init__()
        self.prefix, self.monitor = os.fspath(prefix), monitor
        self.epoch, self.value = None, -np.inf

    @property
    def record_path(self):
        return self.prefix + ".json"

    @property
    def weights_path(self):
        return self.prefix + ".weights.h5"

    def on_train_begin(self, logs=None):
        if storage.exists(self.record_path) and storage.exists(self.weights_path):
            record = load_json(self.record_path)
            self.epoch, self.value = int(record["epoch"]), float(record["value"])

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not value > self.value:
            return
        self.epoch, self.value = epoch + 1, float(value)
        with atomic_path(self.weights_path) as tmp:
            self.model.save_weights(tmp)
        save_json(self.record_path, {"epoch": self.epoch, "value": self.value})

    def restore(self, model):
        """Load the best epoch's weights into ``model``; returns ``(epoch, value)`` (None, -inf
        when no epoch was measured)."""
        if self.epoch is not None:
            with storage.local_copy(self.weights_path) as local:
                model.load_weights(local)
        return self.epoch, self.value


def best_epoch(prefix):
    """``(epoch, value)`` recorded by a ``KeepBestEpoch`` at ``prefix``, or None."""
    path = os.fspath(prefix) + ".json"
    if not storage.exists(path):
        return None
    record = load_json(path)
    return int(record["epoch"]), float(record["value"])
