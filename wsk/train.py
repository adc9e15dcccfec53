"""Training (§4.2): the HCP classifier's two fine-tuning steps and the four segmentation networks.

``train_hcp`` follows §4.2 and [30]: *image fine-tuning* (the whole image is the one
hypothesis; last layer at ``image_last_lr``, the others at ``image_lr``), then
*hypothesis fine-tuning* with the ``hypotheses`` (10) boxes that
``wsk.proposals.select_hypotheses`` picks from each image's proposals (last layer at
``hypothesis_last_lr``, the others at ``hypothesis_lr``). Both steps: batches of
``batch_size`` images, lr x ``lr_gamma`` every ``lr_step_epochs`` epochs, Caffe SGD with
momentum and L2 weight decay, loss ``SoftMultiLabelCrossEntropy`` on the image's label vector
normalised to sum one (HCP column ``j`` is dataset class ``j + 1``). After every epoch the
validation multi-label mAP on the dataset's ``val`` split is printed (``MultiLabelMAP``).

``train_segmentation`` trains DeepLab-LargeFOV as one of the variants of §4.2:
``AN_A``/``SN_A`` on the localization maps (Eq. 2, ``SoftMultiLabelCrossEntropy``, Eq. 4) and
``AN_B``/``SN_B`` on the rough masks (Eq. 5, ``SparseCrossEntropyIgnore``), with all the
training images (``A``) or the single-label ones (``S``). Inputs come from
``wsk.data.pipelines`` (scale, pad, crop, flip, targets on the stride-8 grid).

Both run on the paper's training set (``VOCDataset(root, "paper_train")``), read every
number from a recipe (``wsk.recipes``), and leave in their folder of the work directory:

* ``checkpoints/``: the ``AtomicBackupAndRestore`` state (Keras's ``BackupAndRestore``, written
  atomically), written after every epoch.
  Rerunning an interrupted command continues from the last finished epoch with the same
  weights, optimizer state, learning rate and data order (``ResumeEpoch``); the folder is
  removed when the run finishes.
* ``logs/``: TensorBoard logs (loss, learning rate, validation mAP for HCP) when the
  ``tensorboard`` package is installed, and always ``history.csv`` with the same numbers.
* the final model as ``.keras``, written atomically, plus a JSON sidecar with the same stem
  (``hcp/hcp.json``, ``seg/<variant>/model.json``) describing what the zoo and the predictors
  need: architecture, class names, preprocessing, output stride, recipe. The sidecar is
  written first, so a present ``.keras`` always has its description. The saved model is an
  uncompiled copy of the trained one (no optimizer state, no custom loss needed to load it).

HCP's image fine-tuning result is kept as ``hcp/image_finetuned.keras`` so an interrupted
hypothesis step never repeats the first step. A finished model is not retrained unless
``force=True``.
"""

import contextlib
import dataclasses
import os
import re

import numpy as np

from wsk.errors import WskError
from wsk.io import atomic_path, save_json, sha256_of
from wsk.predict import load_model  # noqa: F401  (the one loader of .keras files: safe_mode, clear errors)
from wsk.recipes import HCPRecipe, Recipe, SegRecipe, get_recipe
from wsk.workdir import WorkDir

TRAIN_SPLIT = "paper_train"
VAL_SPLIT = "val"
STRATEGIES = ("default", "mirrored", "multiworker")
SIDECAR_VERSION = 1
HCP_BACKBONE = "hcp"   # SegRecipe.backbone_weights: start from the trained HCP's conv layers (demo)


@dataclasses.dataclass(frozen=True)
class Variant:
    """One segmentation network of §4.2: its supervision and its training images."""

    name: str
    target: str          # "soft": localization maps (Network_A); "hard": rough masks (Network_B)
    single_label: bool   # S*: single-label images only; A*: all training images


VARIANTS = {
    "AN_A": Variant("AN_A", "soft", False),
    "SN_A": Variant("SN_A", "soft", True),
    "AN_B": Variant("AN_B", "hard", False),
    "SN_B": Variant("SN_B", "hard", True),
}


# --- recipes, strategies ------------------------------------------------------------------------

def _recipe_part(recipe, kind):
    """The ``HCPRecipe``/``SegRecipe`` of ``recipe`` (a name, a ``Recipe`` or the part itself)."""
    if isinstance(recipe, str):
        recipe = get_recipe(recipe)
    if isinstance(recipe, Recipe):
        return getattr(recipe, kind)
    expected = HCPRecipe if kind == "hcp" else SegRecipe
    if not isinstance(recipe, expected):
        raise WskError(f"expected a recipe name, a Recipe or a {expected.__name__}, got {recipe!r}")
    return recipe


def make_strategy(name="default"):
    """The ``tf.distribute`` strategy called ``name``.

    ``default``: the current (single-device) strategy; ``mirrored``: ``MirroredStrategy`` over
    the local GPUs (or CPUs); ``multiworker``: ``MultiWorkerMirroredStrategy`` over the machines
    named by the ``TF_CONFIG`` environment variable (create it before any other TF work).
    """
    import tensorflow as tf

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


def _require_tensorflow_backend():
    import keras

    if keras.backend.backend() != "tensorflow":
        raise WskError("training uses tf.data and tf.distribute: set KERAS_BACKEND=tensorflow "
                       f"(the backend is {keras.backend.backend()!r})")


# --- metrics and callbacks ----------------------------------------------------------------------

def multilabel_average_precision(y_true, y_score):
    """Multi-label mAP: ``(mAP, {column: AP})``, AP per class by sklearn's
    ``average_precision_score``, macro-averaged over the classes with at least one positive
    image (mAP is NaN when there is none)."""
    from sklearn.metrics import average_precision_score

    y_true = np.asarray(y_true) > 0
    y_score = np.asarray(y_score, np.float64)
    if y_true.shape != y_score.shape or y_true.ndim != 2:
        raise WskError(f"labels {y_true.shape} and scores {y_score.shape} must be the same (N, C)")
    per_class = {c: float(average_precision_score(y_true[:, c], y_score[:, c]))
                 for c in range(y_true.shape[1]) if y_true[:, c].any()}
    return (float(np.mean(list(per_class.values()))) if per_class else float("nan")), per_class


def _callback_base():
    import keras

    return keras.callbacks.Callback


def _backup_base():
    import keras

    return keras.callbacks.BackupAndRestore


def _loss_base():
    import keras

    return keras.losses.Loss


class MultiLabelMAP(_callback_base()):
    """After every epoch: predict ``inputs`` (a dataset of HCP inputs), print the validation
    mAP against ``labels`` ``(N, C)`` and add it to the logs as ``val_mAP`` (so TensorBoard
    and History record it). ``class_names`` label the per-class APs kept in ``self.history``."""

    def __init__(self, inputs, labels, class_names=None, printer=print, newline=False):
        super().__init__()
        self.newline = newline      # end Keras's progress bar line first
        self.inputs = inputs
        self.labels = np.asarray(labels)
        self.class_names = class_names
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


class ResumeEpoch(_callback_base()):
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
        for state in self.model.variables:
            if state.path.endswith("seed_generator_state"):
                seed = np.asarray(state.numpy() if hasattr(state, "numpy") else state.value)
                state.assign(np.array([seed[0], epoch * self.EPOCH_STRIDE], dtype=seed.dtype))


class AtomicBackupAndRestore(_backup_base()):
    """``keras.callbacks.BackupAndRestore`` whose backup survives a kill at any moment.

    Keras writes the weights, then the epoch, in place: a kill between the two resumes the new
    weights at the old epoch, and a kill during the first leaves a torn file. Here both are written
    to temporary files and renamed, and the epoch record holds the weights' sha256: a backup whose
    two files do not belong together is discarded with a line, and the step restarts from its
    start (which gives the same result: data order and dropout are functions of the epoch).
    """

    def __init__(self, backup_dir, printer=print):
        super().__init__(backup_dir)
        self.printer = printer

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        with atomic_path(self._weights_path) as tmp_weights:
            self.model.save_weights(tmp_weights, overwrite=True)
            record = {"epoch": self._current_epoch, "batch": self._last_batch_seen,
                      "weights_sha256": sha256_of(tmp_weights)}
        save_json(self._training_metadata_path, record)

    def _load_model(self):
        from wsk.io import load_json

        have_weights = os.path.exists(self._weights_path)
        have_record = os.path.exists(self._training_metadata_path)
        if have_weights or have_record:
            try:
                record = load_json(self._training_metadata_path) if have_record else {}
            except WskError:
                record = {}
            if not have_weights or record.get("weights_sha256") != sha256_of(self._weights_path):
                self.printer(f"{self.backup_dir}: the last backup was interrupted while being written; "
                             "restarting this step from its start")
                _clear(self._weights_path, self._training_metadata_path)
                return
        super()._load_model()


class _Diverged(Exception):
    """Raised by ``TerminateOnNaNKeepCheckpoint`` to leave ``fit`` at once."""


class TerminateOnNaNKeepCheckpoint(_callback_base()):
    """Stop training at a NaN/inf loss, as ``keras.callbacks.TerminateOnNaN`` does, but by
    raising: the epoch is not ended, so ``BackupAndRestore`` keeps the last good epoch instead
    of backing up broken weights, and nothing is saved as the final model."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            raise _Diverged(f"the loss became {float(loss)} at batch {batch}")


@contextlib.contextmanager
def _data_errors():
    """Turn a ``WskError`` raised inside the tf.data pipeline back into a ``WskError``."""
    import tensorflow as tf

    try:
        yield
    except tf.errors.OpError as err:
        found = re.search(r"WskError: ([^\n]*)", str(err))
        if found:
            raise WskError(found.group(1)) from None
        raise


def _fit(model, dataset, epochs, steps, checkpoint_dir, log_dir, first_epoch, callbacks=(),
         verbose=1):
    """``model.fit`` over the all-epoch ``dataset`` with resumption (``BackupAndRestore`` in
    ``checkpoint_dir``, removed at the end), TensorBoard logs in ``log_dir`` and the NaN stop;
    returns the History. Every epoch's logs also go to ``log_dir/history.csv`` (appended on
    resume)."""
    import keras

    os.makedirs(log_dir, exist_ok=True)
    all_callbacks = [ResumeEpoch(first_epoch), TerminateOnNaNKeepCheckpoint(), *callbacks,
                     AtomicBackupAndRestore(checkpoint_dir),
                     keras.callbacks.CSVLogger(os.path.join(log_dir, "history.csv"), append=True),
                     keras.callbacks.TensorBoard(log_dir, write_graph=False, update_freq="epoch",
                                                 profile_batch=0)]
    try:
        with _data_errors():
            history = model.fit(dataset, epochs=epochs, steps_per_epoch=steps, shuffle=False,
                                callbacks=all_callbacks, verbose=verbose)
        if os.path.isdir(checkpoint_dir) and not os.listdir(checkpoint_dir):
            os.rmdir(checkpoint_dir)   # BackupAndRestore removes its files at the end, not the folder
        return history
    except _Diverged as err:
        raise WskError(f"training diverged: {err}; the last finished epoch is kept here "
                       "(lower the learning rate, or rerun to resume)", checkpoint_dir) from None


def _clear(*paths):
    """Remove files or folders (those that exist)."""
    import shutil

    for path in paths:
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def _epoch_variable():
    import tensorflow as tf

    with tf.device("/cpu:0"):
        return tf.Variable(0, dtype=tf.int64, trainable=False, name="first_epoch")


class _ReplicaScaledLoss(_loss_base()):
    """``loss / replicas``: what Keras's own mean-reduced losses return under a ``tf.distribute``
    strategy, so that the gradients summed over the replicas are those of the global mean."""

    def __init__(self, loss, replicas):
        super().__init__(name=loss.name)
        self.loss = loss
        self.replicas = replicas

    def __call__(self, y_true, y_pred, sample_weight=None):
        return self.loss(y_true, y_pred, sample_weight) / self.replicas


def scale_loss_for_replicas(loss, strategy, y_true, y_pred):
    """``loss``, wrapped in ``_ReplicaScaledLoss`` when it does not divide itself by the number
    of replicas of ``strategy`` (probed on ``y_true``, ``y_pred``: one example)."""
    replicas = strategy.num_replicas_in_sync
    if replicas == 1:
        return loss
    plain = float(loss(y_true, y_pred))
    with strategy.scope():
        scoped = float(loss(y_true, y_pred))
    if plain and abs(scoped * replicas - plain) <= 1e-6 * abs(plain):
        return loss          # the loss already scales (as keras.losses do)
    return _ReplicaScaledLoss(loss, replicas)


def compile_for_training(model, loss, base_lr, last_lr, recipe, steps_per_epoch):
    """Compile ``model`` with the paper's optimizer: Caffe SGD (momentum, L2 decay), the last
    layer ``fc8`` at ``last_lr`` and the others at ``base_lr`` (biases x2, no decay), both
    multiplied by ``lr_gamma`` every ``lr_step_epochs`` epochs. Unless the trunk is Keras's
    VGG-16 (trained on pixel-scale inputs), conv1_1 is in wsk's from-scratch scale (trained from
    scratch, from HCP, or from a wsk-pretrained trunk, which was trained that way) and its kernel
    gets the matching multipliers (``wsk.models.vgg.from_scratch_multipliers``)."""
    from wsk.models.imagenet import is_vgg16_source
    from wsk.models.vgg import from_scratch_multipliers
    from wsk.optimizers import CaffeSGD, deeplab_multipliers, step_schedule

    schedule = step_schedule(base_lr, recipe.lr_step_epochs * steps_per_epoch, recipe.lr_gamma)
    multipliers = deeplab_multipliers("fc8", last_lr / base_lr)
    if not is_vgg16_source(recipe.backbone_weights):   # conv1_1 in the from-scratch scale
        multipliers = from_scratch_multipliers() + multipliers
    optimizer = CaffeSGD(schedule, momentum=recipe.momentum, weight_decay=recipe.weight_decay,
                         multipliers=multipliers)
    model.compile(optimizer=optimizer, loss=loss)
    return model


def _copy_model(model):
    """A fresh uncompiled model with ``model``'s architecture and weights."""
    import keras

    copy = keras.Model.from_config(model.get_config())   # clone_model would compile it
    copy.set_weights(model.get_weights())
    return copy


def sidecar_path(model_path):
    """The JSON description beside a saved model: same stem, ``.json``."""
    return os.path.splitext(os.fspath(model_path))[0] + ".json"


def save_model(model, path, description=None):
    """Write ``description`` (JSON sidecar) then an uncompiled copy of ``model`` to ``path``
    (``.keras``), each atomically."""
    if description is not None:
        save_json(sidecar_path(path), description)
    with atomic_path(path) as tmp:
        _copy_model(model).save(tmp)


def init_trunk_from_hcp(model, hcp_path):
    """Copy conv1_1 ... conv5_3 of the trained HCP at ``hcp_path`` into ``model`` (DeepLab-LargeFOV).

    The demo's stand-in for ImageNet initialisation (which needs a download): HCP is the same
    VGG-16 trunk, trained in stage 2 on the same images' labels. fc6/fc7 stay freshly initialised
    (DeepLab's fc6 is a dilated 3x3 convolution, HCP's a dense layer over pool5).
    """
    from wsk.models.vgg import VGG16_BLOCKS

    if not os.path.exists(hcp_path):
        raise WskError("the recipe initialises the segmentation trunk from HCP, which is not trained "
                       "yet (run `wsk train hcp` first)", hcp_path)
    source = load_model(hcp_path)
    for block, (_, convs) in enumerate(VGG16_BLOCKS, start=1):
        for index in range(1, convs + 1):
            name = f"conv{block}_{index}"
            weights = source.get_layer(name).get_weights()
            target = model.get_layer(name)
            if [w.shape for w in weights] != [w.shape for w in target.get_weights()]:
                raise WskError(f"{name} of the HCP model does not fit the segmentation network "
                               "(another width?)", hcp_path)
            target.set_weights(weights)
    return model


def backbone_stamp(backbone_weights):
    """What a recipe's starting trunk is: a zoo card's sha256, a file's stamp, or the name itself
    (a retrained trunk card makes every model trained from it stale)."""
    from wsk.io import file_stamp
    from wsk.models.imagenet import is_vgg16_source

    if backbone_weights in (None, "imagenet", HCP_BACKBONE):
        return backbone_weights
    if is_vgg16_source(backbone_weights):
        return file_stamp(backbone_weights)
    from wsk.zoo.registry import get_card

    return get_card(backbone_weights)["weights"]["sha256"]


def inputs_digest(recipe, files=(), extra=None):
    """A digest of what a model is trained from: the recipe, its starting trunk, the stamp of its
    input files (targets, proposals) and ``extra`` (e.g. the image-level labels)."""
    import hashlib
    import json

    from wsk.io import file_stamp

    text = json.dumps({"recipe": dataclasses.asdict(recipe), "files": file_stamp(*files),
                       "backbone": backbone_stamp(recipe.backbone_weights), "extra": extra}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def up_to_date(model_path, digest, printer):
    """Whether ``model_path`` exists and its sidecar says it was trained from ``digest``."""
    from wsk.io import load_json

    if not os.path.exists(model_path):
        return False
    try:
        recorded = load_json(sidecar_path(model_path)).get("inputs_digest")
    except WskError:
        recorded = None
    if recorded == digest:
        printer(f"{model_path} exists: not retrained (use --force to retrain)")
        return True
    printer(f"{model_path} was trained with another recipe or other targets: retraining")
    return False


def _preprocessing_description():
    from wsk.models import MEAN_BGR

    return {"function": "wsk.models.preprocess_input", "input": "RGB, uint8 or float in [0, 255]",
            "channel_order": "BGR", "mean_bgr": list(MEAN_BGR)}


# --- HCP ----------------------------------------------------------------------------------------

def _hcp_targets(dataset, ids):
    from wsk.data.pipelines import hcp_label_vector

    c = dataset.num_classes - 1
    return np.stack([hcp_label_vector(dataset.labels(i), c) for i in ids])


def hypothesis_boxes(work, ids, m, printer=print):
    """``(N, m, 4)`` int32 boxes: ``select_hypotheses`` on each image's stored proposals.

    The boxes are kept in ``WORK/hcp/hypotheses-<m>.npz`` (``ids``, ``boxes``, ``stamps``: the
    proposal files' modification times) and reused by later runs for the images whose proposal
    file is unchanged (selection costs a normalised cut per image).
    """
    from wsk.io import load_npz, save_npz
    from wsk.proposals import Proposals, select_hypotheses
    from wsk.stages import progress

    work = WorkDir(work) if not isinstance(work, WorkDir) else work
    missing = [i for i in ids if not os.path.exists(work.proposals(i))]
    if missing:
        raise WskError(f"{len(missing)} image(s) have no proposals (run `wsk proposals` first), "
                       f"e.g. {missing[0]}", work.proposals(missing[0]))
    cache_path = os.path.join(work.hcp_dir, f"hypotheses-{m}.npz")
    cached = {}
    if os.path.exists(cache_path):
        try:
            arrays = load_npz(cache_path, required=("ids", "boxes", "stamps"))
            cached = {i: (b, t) for i, b, t in zip(arrays["ids"].tolist(), arrays["boxes"],
                                                    arrays["stamps"].tolist())}
        except WskError as err:
            printer(f"ignoring the hypothesis cache: {err}")
    stamp = lambda i: os.stat(work.proposals(i)).st_mtime_ns  # noqa: E731
    wanted = set(ids)
    cached = {i: (b, t) for i, (b, t) in cached.items() if i not in wanted or t == stamp(i)}
    todo = [i for i in ids if i not in cached]
    if todo:
        with progress(todo, label=f"selecting {m} hypotheses") as bar:
            for image_id in bar:
                chosen = np.asarray(select_hypotheses(Proposals.load(work.proposals(image_id)), m=m))
                if chosen.shape != (m, 4):
                    raise WskError(f"select_hypotheses gave boxes of shape {chosen.shape}, not "
                                   f"({m}, 4)", work.proposals(image_id))
                cached[image_id] = (chosen, stamp(image_id))
        keys = sorted(cached)
        save_npz(cache_path, ids=np.array(keys),
                 boxes=np.stack([cached[k][0] for k in keys]).astype(np.int32),
                 stamps=np.array([cached[k][1] for k in keys], np.int64))
    return np.stack([cached[i][0] for i in ids]).astype(np.int32)


def _hcp_validation(root, work, recipe, hypotheses, printer=print):
    """``(inputs dataset, labels)`` of the ``val`` split, or None when there is none.

    With ``hypotheses`` and stored proposals for every val image, the val images are scored
    through their selected hypotheses; otherwise through the whole image.
    """
    from wsk.data.pipelines import hcp_eval_dataset
    from wsk.data.voc import VOCDataset

    try:
        val = VOCDataset(root, VAL_SPLIT)
    except WskError as err:
        printer(f"no validation: {err}")
        return None
    if not val.ids:
        return None
    labels = _hcp_targets(val, val.ids)
    boxes = None
    if hypotheses and all(os.path.exists(work.proposals(i)) for i in val.ids):
        boxes = hypothesis_boxes(work, val.ids, recipe.hypotheses, printer)
    paths = [val.image_path(i) for i in val.ids]
    return hcp_eval_dataset(paths, recipe.image_size, recipe.batch_size, boxes), labels


def _hcp_step(model, name, recipe, train_paths, labels, boxes, work, root, base_lr, last_lr,
              epochs, folder, callbacks, verbose, printer):
    """One fine-tuning step of HCP (image or hypothesis): compile, fit, return the model."""
    from wsk.data.pipelines import hcp_training_dataset, steps_per_epoch
    from wsk.losses import SoftMultiLabelCrossEntropy

    batch = min(recipe.batch_size, len(train_paths))
    steps = steps_per_epoch(len(train_paths), batch)
    compile_for_training(model, SoftMultiLabelCrossEntropy(from_logits=False), base_lr, last_lr,
                         recipe, steps)
    first_epoch = _epoch_variable()
    data = hcp_training_dataset(train_paths, labels, recipe.image_size, batch, epochs,
                                recipe.seed + (0 if boxes is None else 1), boxes=boxes,
                                first_epoch=first_epoch)
    extra = list(callbacks)
    validation = _hcp_validation(root, work, recipe, boxes is not None, printer)
    if validation is not None:
        extra.insert(0, MultiLabelMAP(*validation, printer=printer, newline=verbose == 1))
    printer(f"HCP {name} fine-tuning: {len(train_paths)} images, batch {batch}, {epochs} epochs")
    _fit(model, data, epochs, steps, os.path.join(folder, "checkpoints", name),
         os.path.join(folder, "logs", name), first_epoch, extra, verbose)
    return model


def train_hcp(root, work, recipe="paper", force=False, callbacks=(), verbose=1, printer=print):
    """Fine-tune HCP in the two steps of §4.2 and save it to ``WorkDir(work).hcp_model``.

    Returns the trained Keras model (``wsk.models.hcp``: ``(B, M, S, S, 3)`` -> ``(B, c)``).
    ``recipe``: ``"paper"``, ``"demo"``, a ``Recipe`` or an ``HCPRecipe``. ``callbacks`` are
    added to both steps' ``fit``. An existing model is loaded and returned unless ``force``.
    """
    import keras

    from wsk.data.voc import VOCDataset
    from wsk.models import hcp

    _require_tensorflow_backend()
    recipe = _recipe_part(recipe, "hcp")
    work = WorkDir(work)
    dataset = VOCDataset(root, TRAIN_SPLIT)
    ids = list(dataset.ids)
    # trained from: the recipe, the proposals (hypotheses), the images and their labels
    digest = inputs_digest(recipe, [work.proposals(i) for i in ids] + [dataset.image_path(i) for i in ids],
                           extra={i: list(dataset.labels(i)) for i in ids})
    if not force and up_to_date(work.hcp_model, digest, printer):
        return load_model(work.hcp_model)
    if os.path.exists(work.hcp_model):
        force = True   # trained from other inputs: start afresh
    paths = [dataset.image_path(i) for i in ids]
    labels = _hcp_targets(dataset, ids)
    boxes = hypothesis_boxes(work, ids, recipe.hypotheses, printer)   # fail early, before training
    folder = work.hcp_dir
    image_model_path = os.path.join(folder, "image_finetuned.keras")
    description = {
        "format": SIDECAR_VERSION, "architecture": "hcp", "class_names": list(dataset.class_names[1:]),
        "column_to_dataset_class": "column j is dataset class j + 1", "image_size": recipe.image_size,
        "width": recipe.width, "hypotheses": recipe.hypotheses,
        "output": "max over hypotheses of softmax",
        "preprocessing": _preprocessing_description(), "recipe": dataclasses.asdict(recipe),
        "training_images": len(ids), "inputs_digest": digest,
    }

    if force:   # start afresh: no stale checkpoint to resume, no old logs
        _clear(os.path.join(folder, "checkpoints"), os.path.join(folder, "logs"), image_model_path)
    keras.utils.set_random_seed(recipe.seed)
    if os.path.exists(image_model_path):
        printer(f"image fine-tuning already done: {image_model_path}")
    else:
        model = hcp(num_classes=dataset.num_classes - 1, hypotheses=None, image_size=recipe.image_size,
                    backbone_weights=recipe.backbone_weights, width=recipe.width)
        _hcp_step(model, "image", recipe, paths, labels, None, work, root, recipe.image_lr,
                  recipe.image_last_lr, recipe.image_epochs, folder, callbacks, verbose, printer)
        save_model(model, image_model_path)
    # the hypothesis step starts from the same random state (dropout seeds are drawn when the model
    # is loaded) whether or not the image step ran in this process: a rerun after a kill between
    # the two steps gives the same model
    keras.utils.set_random_seed(recipe.seed + 1)
    model = load_model(image_model_path)
    _hcp_step(model, "hypothesis", recipe, paths, labels, boxes, work, root, recipe.hypothesis_lr,
              recipe.hypothesis_last_lr, recipe.hypothesis_epochs, folder, callbacks, verbose, printer)
    save_model(model, work.hcp_model, description)
    printer(f"saved {work.hcp_model}")
    return load_model(work.hcp_model)


# --- segmentation ------------------------------------------------------------------------------

def segmentation_name(variant, refine=True):
    """The folder name of a segmentation network: the variant, ``-noref`` without refinement."""
    return variant if refine else f"{variant}-noref"


def segmentation_training_set(root, work, variant, refine=True, check=True):
    """``(dataset, ids, image paths, target paths)`` of a variant (§4.2).

    All ``paper_train`` images (``A*``) or the single-label ones (``S*``); targets are the
    localization maps (``*_A``) or the rough masks (``*_B``) of ``WorkDir(work, refine)``.
    A missing target is a ``WskError`` (run ``wsk pseudo`` first); with ``check`` every target
    is also read once (``check_targets``).
    """
    from wsk.data.voc import VOCDataset, single_label_ids

    if variant not in VARIANTS:
        raise WskError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    spec = VARIANTS[variant]
    dataset = VOCDataset(root, TRAIN_SPLIT)
    ids = single_label_ids(dataset) if spec.single_label else list(dataset.ids)
    if not ids:
        raise WskError(f"{variant}: no training image "
                       f"({'single-label ' if spec.single_label else ''}paper_train is empty)", root)
    wd = WorkDir(work, refine=refine)
    targets = [wd.locmap(i) if spec.target == "soft" else wd.mask(i) for i in ids]
    missing = [p for p in targets if not os.path.exists(p)]
    if missing:
        raise WskError(f"{len(missing)} of {len(ids)} training targets are missing "
                       f"(run `wsk pseudo` first), e.g. this one", missing[0])
    images = [dataset.image_path(i) for i in ids]
    if check:
        check_targets(images, targets, spec.target, dataset.num_classes, variant)
    return dataset, ids, images, targets


def check_targets(images, targets, kind, num_classes, name):
    """Read every training target once before training, so a damaged file stops the run at the
    start (listing every bad file) rather than epochs into it."""
    from wsk.data.pipelines import load_hard_target, load_soft_target
    from wsk.io import image_size
    from wsk.stages import progress

    load = load_soft_target if kind == "soft" else load_hard_target
    bad = []
    with progress(list(zip(images, targets)), label=f"{name}: checking targets") as pairs:
        for image_path, target in pairs:
            try:
                load(target, *image_size(image_path), num_classes)
            except WskError as err:
                bad.append(err)
    if bad:
        listed = "; ".join(str(err) for err in bad[:5]) + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else "")
        raise WskError(f"{len(bad)} training target(s) are damaged (rerun `wsk pseudo`): {listed}")


def segmentation_loss(variant):
    """The loss of a variant: Eq. 4 on localization maps, or cross-entropy on rough masks."""
    from wsk.classes import IGNORE_LABEL
    from wsk.losses import SoftMultiLabelCrossEntropy, SparseCrossEntropyIgnore

    if VARIANTS[variant].target == "soft":
        return SoftMultiLabelCrossEntropy(from_logits=True)
    return SparseCrossEntropyIgnore(ignore_label=IGNORE_LABEL, from_logits=True)


def train_segmentation(root, work, variant, recipe="paper", strategy="default", pseudo_dir_refine=True,
                       force=False, callbacks=(), verbose=1, printer=print):
    """Train DeepLab-LargeFOV as ``variant`` (AN_A, SN_A, AN_B, SN_B) and save it.

    The model goes to ``WorkDir(work).seg_model(name)`` with ``name`` the variant (``-noref``
    appended when ``pseudo_dir_refine`` is False, i.e. trained on the targets computed without
    cross-image refinement), with its ``model.json`` sidecar. ``strategy``: ``default``,
    ``mirrored``, ``multiworker`` or a ``tf.distribute.Strategy``; ``recipe.batch_size`` is the
    global batch. Returns the trained Keras model.
    """
    import keras

    from wsk.classes import IGNORE_LABEL
    from wsk.data.pipelines import check_crop_size, segmentation_dataset, steps_per_epoch
    from wsk.models import deeplab_largefov

    _require_tensorflow_backend()
    recipe = _recipe_part(recipe, "seg")
    strategy = make_strategy(strategy)
    wd = WorkDir(work)
    name = segmentation_name(variant, pseudo_dir_refine)
    model_path = wd.seg_model(name)
    check_crop_size(recipe.crop_size)
    dataset, ids, images, targets = segmentation_training_set(root, work, variant, pseudo_dir_refine,
                                                              check=False)
    from_hcp = recipe.backbone_weights == HCP_BACKBONE
    digest = inputs_digest(recipe, list(targets) + ([wd.hcp_model] if from_hcp else []))
    if not force and up_to_date(model_path, digest, printer):
        return load_model(model_path)
    if os.path.exists(model_path):
        force = True   # trained from other inputs: start afresh
    check_targets(images, targets, VARIANTS[variant].target, dataset.num_classes, variant)
    spec = VARIANTS[variant]
    batch = min(recipe.batch_size, len(ids))
    steps = steps_per_epoch(len(ids), batch)
    folder = wd.seg_dir(name)
    if not is_chief(strategy):   # other workers keep their own state apart from the chief's
        folder = os.path.join(folder, f"worker-{strategy.cluster_resolver.task_id}")

    if force:
        _clear(os.path.join(folder, "checkpoints"), os.path.join(folder, "logs"))
    keras.utils.set_random_seed(recipe.seed)
    first_epoch = _epoch_variable()
    data = segmentation_dataset(images, targets, spec.target, dataset.num_classes, recipe.crop_size,
                                batch, recipe.epochs, recipe.seed, scale_range=recipe.scale_range,
                                first_epoch=first_epoch)
    with strategy.scope():
        model = deeplab_largefov(num_classes=dataset.num_classes,
                                 backbone_weights=None if from_hcp else recipe.backbone_weights,
                                 width=recipe.width)
        if from_hcp:
            init_trunk_from_hcp(model, wd.hcp_model)
        c = dataset.num_classes
        probe_target = (np.ones((1, 1, 1, c), np.float32) if spec.target == "soft"
                        else np.zeros((1, 1, 1), np.int32))
        probe = (probe_target, np.zeros((1, 1, 1, c), np.float32))
        loss = scale_loss_for_replicas(segmentation_loss(variant), strategy, *probe)
        compile_for_training(model, loss, recipe.lr, recipe.last_lr, recipe, steps)
    printer(f"{name}: {len(ids)} images, batch {batch}, {recipe.epochs} epochs, "
            f"{strategy.num_replicas_in_sync} replica(s)")
    _fit(model, data, recipe.epochs, steps, os.path.join(folder, "checkpoints"),
         os.path.join(folder, "logs"), first_epoch, callbacks, verbose)
    description = {
        "format": SIDECAR_VERSION, "architecture": "deeplab_largefov", "variant": variant,
        "refined": bool(pseudo_dir_refine),
        "supervision": ("localization maps (Eq. 2), soft cross-entropy (Eq. 4)" if spec.target == "soft"
                        else "rough masks (Eq. 5), cross-entropy ignoring 255"),
        "single_label_only": spec.single_label, "class_names": list(dataset.class_names),
        "num_classes": dataset.num_classes, "ignore_label": IGNORE_LABEL, "output_stride": 8,
        "output": "logits (N, (H-1)//8+1, (W-1)//8+1, num_classes)",
        "preprocessing": _preprocessing_description(), "width": recipe.width,
        "crop_size": recipe.crop_size, "recipe": dataclasses.asdict(recipe),
        "training_images": len(ids), "inputs_digest": digest,
    }
    if is_chief(strategy):
        save_model(model, model_path, description)
        printer(f"saved {model_path}")
    return model
