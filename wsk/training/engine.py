"""The training engine both stages share: distribution strategies, the paper's optimizer, and a
resumable ``fit`` (``AtomicBackupAndRestore`` checkpoints, epoch-exact data and dropout, the NaN
stop, CSV and TensorBoard logs)."""

import contextlib
import os
import re

import keras
import tensorflow as tf

from wsk import storage
from wsk.errors import WskError
from wsk.keras_private import build_from_spec, skip_fit_build
from wsk.models.imagenet import is_vgg16_source
from wsk.models.vgg import from_scratch_multipliers
from wsk.optimizers import CaffeSGD, deeplab_multipliers, step_schedule
from wsk.recipes import PRECISIONS, STRATEGIES, HCPRecipe, Recipe, SegRecipe, get_recipe
from wsk.training.callbacks import (AtomicBackupAndRestore, Diverged, ResumeEpoch,
                                    TerminateOnNaNKeepCheckpoint, UploadFolder)



def recipe_part(recipe, kind):
    """The ``HCPRecipe``/``SegRecipe`` of ``recipe`` (a name, a ``Recipe`` or the part itself)."""
    if isinstance(recipe, str):
        recipe = get_recipe(recipe)
    if isinstance(recipe, Recipe):
        return getattr(recipe, kind)
    expected = HCPRecipe if kind == "hcp" else SegRecipe
    if not isinstance(recipe, expected):
        raise WskError(f"expected a recipe name, a Recipe or a {expected.__name__}, got {recipe!r}")
    return recipe


CPUINFO = "/proc/cpuinfo"   # where Linux lists the CPU's flags


def native_bfloat16():
    """Whether this machine computes bfloat16 in hardware: a GPU of compute capability 8.0 or more, or
    (no GPU) a CPU that lists ``avx512_bf16`` or ``amx_bf16`` among its flags in ``CPUINFO`` (Linux).
    Elsewhere bfloat16 is emulated, slower than float32."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return all(tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0)) >= (8, 0)
                   for gpu in gpus)
    try:
        with open(CPUINFO) as f:
            flags = {flag for line in f if line.startswith("flags") for flag in line.split(":", 1)[1].split()}
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_precision(name):
    """The Keras dtype policy ``SegRecipe.precision`` ``name`` trains in: "auto" is "mixed_bfloat16"
    where the hardware computes bfloat16 (``native_bfloat16``), "float32" elsewhere."""
    if name not in PRECISIONS:
        raise WskError(f"precision must be one of {', '.join(PRECISIONS)}, not {name!r}")
    if name == "auto":
        return "mixed_bfloat16" if native_bfloat16() else "float32"
    return name


@contextlib.contextmanager
def dtype_policy(name):
    """Layers built inside take Keras's dtype policy ``name`` ("float32" or "mixed_bfloat16":
    bfloat16 arithmetic, float32 weights; ``resolve_precision``). The global policy is restored on leaving."""
    if name not in PRECISIONS or name == "auto":
        raise WskError(f"a dtype policy is float32 or mixed_bfloat16, not {name!r}")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def as_float32(model, build):
    """``model`` itself when it computes in float32; else a float32 network from ``build()`` (the same
    architecture) holding ``model``'s weights, which a mixed policy keeps in float32 already: what is
    calibrated, saved, exported and served is a float32 network wherever it was trained."""
    if model.compute_dtype == "float32":
        return model
    with dtype_policy("float32"):
        twin = build()
    twin.set_weights(model.get_weights())
    return twin


def require_tensorflow_backend():
    """Training uses tf.data and tf.distribute: refuse any other Keras backend, in one line."""
    if keras.backend.backend() != "tensorflow":
        raise WskError("training uses tf.data and tf.distribute: set KERAS_BACKEND=tensorflow "
                       f"(the backend is {keras.backend.backend()!r})")


def make_strategy(name="default"):
    """The ``tf.distribute`` strategy called ``name`` (a strategy object is returned as is).

    ``default``: the current (single-device) strategy; ``mirrored``: ``MirroredStrategy`` over
    the local GPUs (or CPUs); ``multiworker``: ``MultiWorkerMirroredStrategy`` over the machines
    named by the ``TF_CONFIG`` environment variable (create it before any other TF work).
    """
    if not isinstance(name, str):
        return name
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise WskError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


def is_chief(strategy):
    """Whether this process writes the outputs (always, except on non-chief workers)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in (resolver.cluster_spec().as_dict() or {})
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def compile_for_training(model, loss, base_lr, last_lr, recipe, steps_per_epoch):
    """Compile ``model`` with the paper's optimizer: Caffe SGD (momentum, L2 decay), the last
    layer ``fc8`` at ``last_lr`` and the others at ``base_lr`` (biases x2, no decay), both
    multiplied by ``lr_gamma`` every ``lr_step_epochs`` epochs. Unless the trunk is Keras's
    VGG-16 (trained on pixel-scale inputs), conv1_1 is in wsk's from-scratch scale (trained from
    scratch, from HCP, or from a wsk-pretrained trunk, which was trained that way) and its kernel
    gets the matching multipliers (``wsk.models.vgg.from_scratch_multipliers``). A recipe with a
    ``clip_norm`` (``SegRecipe``) clips each step's gradients to that global norm."""
    schedule = step_schedule(base_lr, recipe.lr_step_epochs * steps_per_epoch, recipe.lr_gamma)
    multipliers = deeplab_multipliers("fc8", last_lr / base_lr)
    if not is_vgg16_source(recipe.backbone_weights):   # conv1_1 in the from-scratch scale
        multipliers = from_scratch_multipliers() + multipliers
    # HCPRecipe has no clip_norm: a new field would change every trained HCP's inputs digest (a retrain)
    optimizer = CaffeSGD(schedule, momentum=recipe.momentum, weight_decay=recipe.weight_decay,
                         multipliers=multipliers, global_clipnorm=getattr(recipe, "clip_norm", None))
    model.compile(optimizer=optimizer, loss=loss)
    return model


def epoch_variable():
    """The variable ``ResumeEpoch`` sets to a (resumed) run's first epoch; the data pipeline reads it."""
    with tf.device("/cpu:0"):
        return tf.Variable(0, dtype=tf.int64, trainable=False, name="first_epoch")


@contextlib.contextmanager
def _data_errors():
    """Turn a ``WskError`` raised inside the tf.data pipeline back into a ``WskError``."""
    try:
        yield
    except tf.errors.OpError as err:
        found = re.search(r"WskError: ([^\n]*)", str(err))
        if found:
            raise WskError(found.group(1)) from None
        raise


def prepare_multi_worker_fit(model, dataset):
    """Work around two faults of Keras 3's ``fit`` under ``MultiWorkerMirroredStrategy``
    (keras-team/keras#20585):

    * it builds the model from a first batch that it all-reduces across the workers, eagerly,
      which fails ("Attempt to convert a value (PerReplica ...)") and only needs the batch's
      shapes: the model is built here from the dataset's element spec and ``fit``'s own build
      step is skipped;
    * it averages each step's logs over the workers along axis 0, which fails for the scalar
      loss: the logs (the metrics' results, already synchronised across the replicas, so the
      same on every worker) are given that axis, of length one, and the mean over it and the
      workers is the value itself.
    """
    with model.distribute_strategy.scope():
        build_from_spec(model, dataset.element_spec)
    skip_fit_build(model)
    train_step = model.train_step
    model.train_step = lambda data: {name: tf.reshape(value, [1]) for name, value in train_step(data).items()}


def fit(model, dataset, epochs, steps, checkpoint_dir, log_dir, first_epoch, callbacks=(), verbose=1):
    """``model.fit`` over the all-epoch ``dataset``, resumable; returns the History.

    ``checkpoint_dir`` holds the ``AtomicBackupAndRestore`` state (removed at the end), and
    ``log_dir`` the TensorBoard logs and ``history.csv`` (appended on resume). A NaN loss
    stops the run with a ``WskError``, the last finished epoch kept.

    Either may be a URL (``wsk.storage``): Keras then writes to a local copy of it (with the files
    already there: a resumed run finds its last backup and history), and each backup and, every
    epoch, the logs are uploaded.
    """
    with storage.local_folder(checkpoint_dir) as local_checkpoints, storage.local_folder(log_dir) as local_logs:
        os.makedirs(local_logs, exist_ok=True)
        all_callbacks = [ResumeEpoch(first_epoch), TerminateOnNaNKeepCheckpoint(), *callbacks,
                         AtomicBackupAndRestore(local_checkpoints, mirror=_url_or_none(checkpoint_dir)),
                         keras.callbacks.CSVLogger(os.path.join(local_logs, "history.csv"), append=True),
                         keras.callbacks.TensorBoard(local_logs, write_graph=False, update_freq="epoch",
                                                     profile_batch=0)]
        if storage.is_url(log_dir):
            all_callbacks.append(UploadFolder(local_logs, log_dir))
        if isinstance(model.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy):
            prepare_multi_worker_fit(model, dataset)
        try:
            with _data_errors():
                history = model.fit(dataset, epochs=epochs, steps_per_epoch=steps, shuffle=False,
                                    callbacks=all_callbacks, verbose=verbose)
        except Diverged as err:
            raise WskError(f"training diverged: {err}; the last finished epoch is kept here "
                           "(lower the learning rate, or rerun to resume)", checkpoint_dir) from None
        if storage.is_url(checkpoint_dir):
            storage.rmtree(checkpoint_dir)   # the backup Keras removed at the end of fit
        elif os.path.isdir(checkpoint_dir) and not os.listdir(checkpoint_dir):
            os.rmdir(checkpoint_dir)   # BackupAndRestore removes its files at the end, not the folder
        return history


def _url_or_none(path):
    return path if storage.is_url(path) else None
