"""The HCP classifier (§3.1; trained as §4.2 and [30] say): HCP fine-tuned in two steps on the image-level labels.

*Image fine-tuning*: the whole image is the one hypothesis (last layer at ``image_last_lr``, the
others at ``image_lr``). *Hypothesis fine-tuning*: the ``hypotheses`` (10) boxes that
``wsk.proposals.select_hypotheses`` picks from each image's proposals (last layer at
``hypothesis_last_lr``, the others at ``hypothesis_lr``). Both steps: batches of ``batch_size``
images, lr x ``lr_gamma`` every ``lr_step_epochs`` epochs, Caffe SGD with momentum and L2 decay,
loss ``SoftMultiLabelCrossEntropy`` on the label vector normalised to sum one (HCP column ``j`` is
dataset class ``j + 1``), validation mAP on ``val`` after every epoch.

The image step's result is kept as ``hcp/image_finetuned.keras`` so an interrupted hypothesis
step never repeats the first step; the final model is ``hcp/hcp.keras`` with its description.
"""

import dataclasses
import os

import keras
import numpy as np

from wsk import storage
from wsk.data.pipelines import hcp_eval_dataset, hcp_label_vector, hcp_training_dataset, steps_per_epoch
from wsk.data.sources import open_dataset
from wsk.data.voc import PAPER_TRAIN
from wsk.errors import WskError
from wsk.io import file_stamp, load_npz, remove_paths, save_npz
from wsk.losses import SoftMultiLabelCrossEntropy
from wsk.models import hcp
from wsk.models.description import hcp_description
from wsk.models.saving import load_model, save_model
from wsk.proposals import Proposals, select_hypotheses
from wsk.stages import progress
from wsk.training.callbacks import KeepBestEpoch, MultiLabelMAP, best_epoch
from wsk.training.digest import inputs_digest, up_to_date
from wsk.training.engine import compile_for_training, epoch_variable, fit, recipe_part, require_tensorflow_backend
from wsk.workdir import WorkDir

VAL_SPLIT = "val"


def hcp_targets(dataset, ids):
    """``(N, c)`` HCP label vectors (``hcp_label_vector``) of ``ids``."""
    c = dataset.num_classes - 1
    return np.stack([hcp_label_vector(dataset.labels(i), c) for i in ids])


def _cached_hypotheses(cache_path, printer):
    if not storage.exists(cache_path):
        return {}
    try:
        arrays = load_npz(cache_path, required=("ids", "boxes", "stamps"))
    except WskError as err:
        printer(f"ignoring the hypothesis cache: {err}")
        return {}
    return {i: (b, t) for i, b, t in zip(arrays["ids"].tolist(), arrays["boxes"], arrays["stamps"].tolist())}


def hypothesis_boxes(work, ids, m, printer=print):
    """``(N, m, 4)`` int32 boxes: ``select_hypotheses`` on each image's stored proposals.

    The boxes are kept in ``WORK/hcp/hypotheses-<m>.npz`` (``ids``, ``boxes``, ``stamps``: the
    proposal files' ``file_stamp``) and reused by later runs for the images whose proposal
    file is unchanged (selection costs a normalised cut per image).
    """
    work = work if isinstance(work, WorkDir) else WorkDir(work)
    missing = [i for i in ids if not storage.exists(work.proposals(i))]
    if missing:
        raise WskError(f"{len(missing)} image(s) have no proposals (run `wsk proposals` first), "
                       f"e.g. {missing[0]}", work.proposals(missing[0]))
    cache_path = os.path.join(work.hcp_dir, f"hypotheses-{m}.npz")

    def stamp(image_id):
        return file_stamp(work.proposals(image_id))

    wanted = set(ids)
    cached = {i: (b, t) for i, (b, t) in _cached_hypotheses(cache_path, printer).items()
              if i not in wanted or t == stamp(i)}
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
                 stamps=np.array([cached[k][1] for k in keys], str))
    return np.stack([cached[i][0] for i in ids]).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class HCPRun:
    """What both fine-tuning steps share: the recipe, the data and where things go."""

    root: str
    work: WorkDir
    recipe: object            # HCPRecipe
    paths: list               # training image paths
    labels: np.ndarray        # (N, c) label vectors
    callbacks: tuple = ()
    verbose: int = 1
    printer: object = print
    val_split: str = VAL_SPLIT

    def validation(self, with_hypotheses):
        """``(inputs dataset, labels)`` of the validation split, or None when there is none.

        With ``with_hypotheses`` and stored proposals for every val image, the val images are
        scored through their selected hypotheses; otherwise through the whole image.
        """
        try:
            val = open_dataset(self.root, self.val_split)
        except WskError as err:
            self.printer(f"no validation: {err}")
            return None
        if not val.ids:
            return None
        boxes = None
        if with_hypotheses and all(storage.exists(self.work.proposals(i)) for i in val.ids):
            boxes = hypothesis_boxes(self.work, val.ids, self.recipe.hypotheses, self.printer)
        paths = [val.image_path(i) for i in val.ids]
        return (hcp_eval_dataset(paths, self.recipe.image_size, self.recipe.batch_size, boxes),
                hcp_targets(val, val.ids))


def fine_tune(model, run, name, boxes, base_lr, last_lr, epochs):
    """One fine-tuning step of HCP (``name``: image or hypothesis): compile, fit, return the model."""
    recipe = run.recipe
    batch = min(recipe.batch_size, len(run.paths))
    steps = steps_per_epoch(len(run.paths), batch)
    compile_for_training(model, SoftMultiLabelCrossEntropy(from_logits=False), base_lr, last_lr,
                         recipe, steps)
    first_epoch = epoch_variable()
    data = hcp_training_dataset(run.paths, run.labels, recipe.image_size, batch, epochs,
                                recipe.seed + (0 if boxes is None else 1), boxes=boxes,
                                first_epoch=first_epoch)
    extra = list(run.callbacks)
    validation = run.validation(boxes is not None)
    best = None
    if validation is not None:
        extra.insert(0, MultiLabelMAP(*validation, printer=run.printer, newline=run.verbose == 1))
        if recipe.keep_best:
            best = KeepBestEpoch(best_prefix(run.work, name))
            extra.insert(1, best)
    run.printer(f"HCP {name} fine-tuning: {len(run.paths)} images, batch {batch}, {epochs} epochs")
    folder = run.work.hcp_dir
    fit(model, data, epochs, steps, os.path.join(folder, "checkpoints", name),
        os.path.join(folder, "logs", name), first_epoch, extra, run.verbose)
    if best is not None:
        epoch, value = best.restore(model)
        run.printer(f"HCP {name} fine-tuning: kept epoch {epoch} of {epochs} (validation mAP {value:.4f})")
    return model


def best_prefix(work, name):
    """Where ``KeepBestEpoch`` keeps the best epoch of HCP step ``name`` (image or hypothesis)."""
    return os.path.join(work.hcp_dir, "best", name)


def train_hcp(root, work, recipe="paper", force=False, callbacks=(), verbose=1, printer=print,
              split=PAPER_TRAIN, val_split=VAL_SPLIT):
    """Fine-tune HCP in the two steps of §4.2 on ``split`` and save it to ``WorkDir(work).hcp_model``.

    Returns the trained Keras model (``wsk.models.hcp``: ``(B, M, S, S, 3)`` -> ``(B, c)``).
    ``recipe``: ``"paper"``, ``"demo"``, a ``Recipe`` or an ``HCPRecipe``. ``callbacks`` are
    added to both steps' ``fit``. An up-to-date model is loaded and returned unless ``force``.
    """
    require_tensorflow_backend()
    recipe = recipe_part(recipe, "hcp")
    work = WorkDir(work)
    dataset = open_dataset(root, split)
    ids = list(dataset.ids)
    # trained from: the recipe, the proposals (hypotheses), the images and their labels
    digest = inputs_digest(recipe, [work.proposals(i) for i in ids] + [dataset.image_path(i) for i in ids],
                           extra={i: list(dataset.labels(i)) for i in ids})
    if not force and up_to_date(work.hcp_model, digest, printer):
        return load_model(work.hcp_model)
    boxes = hypothesis_boxes(work, ids, recipe.hypotheses, printer)   # fail early, before training
    image_model_path = os.path.join(work.hcp_dir, "image_finetuned.keras")
    if force or storage.exists(work.hcp_model):   # start afresh: no stale checkpoint, no old logs
        remove_paths(os.path.join(work.hcp_dir, "checkpoints"), os.path.join(work.hcp_dir, "logs"),
                     os.path.join(work.hcp_dir, "best"), image_model_path)
    run = HCPRun(root, work, recipe, [dataset.image_path(i) for i in ids], hcp_targets(dataset, ids),
                 tuple(callbacks), verbose, printer, val_split)
    keras.utils.set_random_seed(recipe.seed)
    if storage.exists(image_model_path):
        printer(f"image fine-tuning already done: {image_model_path}")
    else:
        model = hcp(num_classes=dataset.num_classes - 1, hypotheses=None, image_size=recipe.image_size,
                    backbone_weights=recipe.backbone_weights, width=recipe.width)
        fine_tune(model, run, "image", None, recipe.image_lr, recipe.image_last_lr, recipe.image_epochs)
        save_model(model, image_model_path)
    # the hypothesis step starts from the same random state (dropout seeds are drawn when the model
    # is loaded) whether or not the image step ran in this process: a rerun after a kill between
    # the two steps gives the same model
    keras.utils.set_random_seed(recipe.seed + 1)
    model = load_model(image_model_path)
    fine_tune(model, run, "hypothesis", boxes, recipe.hypothesis_lr, recipe.hypothesis_last_lr,
              recipe.hypothesis_epochs)
    image_best, hypothesis_best = best_epoch(best_prefix(work, "image")), best_epoch(best_prefix(work, "hypothesis"))
    if recipe.keep_best and image_best and hypothesis_best and hypothesis_best[1] < image_best[1]:
        printer(f"the hypothesis step lowered the validation mAP ({hypothesis_best[1]:.4f} < {image_best[1]:.4f}): "
                "keeping the image step's model")
        model = load_model(image_model_path)
    save_model(model, work.hcp_model, hcp_description(dataset.class_names[1:], recipe, len(ids), digest))
    printer(f"saved {work.hcp_model}")
    return load_model(work.hcp_model)
