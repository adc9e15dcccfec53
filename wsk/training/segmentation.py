"""Segmentation training (§4.2): DeepLab-LargeFOV trained as one of the paper's four variants.

``AN_A``/``SN_A`` learn from the localization maps (Eq. 2) with ``SoftMultiLabelCrossEntropy``
(Eq. 4), ``AN_B``/``SN_B`` from the rough masks (Eq. 5) with ``SparseCrossEntropyIgnore``, on
all training images (``A*``) or the single-label ones (``S*``). Inputs come from
``wsk.data.pipelines`` (scale, pad, crop, flip, targets on the logits' grid: stride 8, or the
recipe's ``output_stride``). The model goes to
``WORK/seg/<name>/model.keras`` with its description; checkpoints and logs sit beside it.
"""

import dataclasses
import os

import keras

from wsk import storage
from wsk.classes import IGNORE_LABEL
from wsk.data.pipelines import (check_crop_size, load_hard_target, load_soft_target, segmentation_dataset,
                                steps_per_epoch)
from wsk.data.sources import open_dataset
from wsk.data.voc import PAPER_TRAIN, single_label_ids
from wsk.errors import WskError
from wsk.io import image_size, remove_paths
from wsk.losses import SoftMultiLabelCrossEntropy, SparseCrossEntropyIgnore
from wsk.models import deeplab_largefov
from wsk.models.description import recipe_max_side, segmentation_description
from wsk.models.pretrained import copy_hcp_trunk
from wsk.models.saving import load_model, save_model
from wsk.recipes import HCP_BACKBONE, get_variant, seg_schedule
from wsk.stages import progress
from wsk.training.class_biases import CALIBRATION_MIN_UNSEEN, calibrate
from wsk.training.class_weights import balanced_class_weights, target_class_mass
from wsk.training.digest import inputs_digest, up_to_date
from wsk.training.engine import (as_float32, compile_for_training, dtype_policy, epoch_variable, fit, is_chief,
                                 make_strategy, recipe_part, require_tensorflow_backend, resolve_precision)
from wsk.workdir import WorkDir


def segmentation_name(variant, refine=True):
    """The folder name of a segmentation network: the variant, ``-noref`` without refinement."""
    return variant if refine else f"{variant}-noref"


def target_paths(workdir, kind, ids):
    """The training targets of ``ids`` in ``workdir``: localization maps (``kind`` "soft") or rough masks."""
    return [workdir.locmap(i) if kind == "soft" else workdir.mask(i) for i in ids]


def segmentation_training_set(root, work, variant, refine=True, check=True, split=PAPER_TRAIN):
    """``(dataset, ids, image paths, target paths)`` of a variant (§4.2).

    All ``split`` images (``A*``) or the single-label ones (``S*``); targets are the
    localization maps (``*_A``) or the rough masks (``*_B``) of ``WorkDir(work, refine)``.
    A missing target is a ``WskError`` (run ``wsk pseudo`` first); with ``check`` every target
    is also read once (``check_targets``).
    """
    spec = get_variant(variant)
    dataset = open_dataset(root, split)
    ids = single_label_ids(dataset) if spec.single_label else list(dataset.ids)
    if not ids:
        raise WskError(f"{variant}: no training image "
                       f"({'single-label ' if spec.single_label else ''}{split} is empty)", root)
    wd = WorkDir(work, refine=refine)
    targets = target_paths(wd, spec.target, ids)
    missing = [p for p in targets if not storage.exists(p)]
    if missing:
        raise WskError(f"{len(missing)} of {len(ids)} training targets are missing "
                       f"(run `wsk pseudo` first), e.g. this one", missing[0])
    images = [dataset.image_path(i) for i in ids]
    if check:
        check_targets(images, targets, spec.target, dataset.num_classes, variant)
    return dataset, ids, images, targets


def calibration_set(dataset, ids, targets, workdir, kind):
    """``(ids, targets)`` a variant's class biases are fitted on (``wsk.training.class_biases``): the
    split's images it did not train on (S*: the multi-label ones), with their targets of the same
    kind, when at least ``CALIBRATION_MIN_UNSEEN`` have one; else its training ``ids`` and ``targets``.

    A network's own training images flatter it: there it is confident and right, and biases fitted
    there lower every class it learnt (SN_A, tuning style 10: -0.5 to -1.75 in logits), which new
    images then lose. Images it never saw, with the same layout as the photographs at test time
    (several objects), show what it misses."""
    trained = set(ids)
    unseen = [i for i in dataset.ids if i not in trained]
    have = [(i, p) for i, p in zip(unseen, target_paths(workdir, kind, unseen)) if storage.exists(p)]
    if len(have) < CALIBRATION_MIN_UNSEEN:
        return list(ids), list(targets)
    return [i for i, _ in have], [p for _, p in have]


def check_targets(images, targets, kind, num_classes, name):
    """Read every training target once before training, so a damaged file stops the run at the
    start (listing every bad file) rather than epochs into it."""
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


def segmentation_loss(variant, recipe, class_weights=None):
    """The loss of a variant under ``recipe`` (a ``SegRecipe``): Eq. 4 on localization maps
    (sharpened by ``recipe.target_power``), or cross-entropy on rough masks; on every pixel of the
    crop where ``recipe.loss_on_pixels``, on the logits' grid otherwise; each class's terms scaled by
    ``class_weights`` (None: 1)."""
    if get_variant(variant).target == "soft":
        return SoftMultiLabelCrossEntropy(from_logits=True, target_power=recipe.target_power,
                                          upsample=recipe.loss_on_pixels, class_weights=class_weights)
    return SparseCrossEntropyIgnore(ignore_label=IGNORE_LABEL, from_logits=True, upsample=recipe.loss_on_pixels,
                                    class_weights=class_weights)


def _architecture(recipe, num_classes, backbone_weights=None):
    """The recipe's DeepLab-LargeFOV, its trunk from ``backbone_weights`` (None: initialised)."""
    return deeplab_largefov(num_classes=num_classes, backbone_weights=backbone_weights, width=recipe.width,
                            dropout=recipe.dropout, output_stride=recipe.output_stride)


def _network(recipe, num_classes, hcp_model_path):
    """DeepLab-LargeFOV with the recipe's starting trunk (ImageNet, a file, a zoo card or the HCP)."""
    if recipe.backbone_weights == HCP_BACKBONE:
        return copy_hcp_trunk(_architecture(recipe, num_classes), hcp_model_path)
    return _architecture(recipe, num_classes, recipe.backbone_weights)


def train_segmentation(root, work, variant, recipe="paper", strategy="default", pseudo_dir_refine=True,
                       force=False, callbacks=(), verbose=1, printer=print, split=PAPER_TRAIN):
    """Train DeepLab-LargeFOV as ``variant`` (AN_A, SN_A, AN_B, SN_B) on ``split`` and save it.

    The model goes to ``WorkDir(work).seg_model(name)`` with ``name`` the variant (``-noref``
    appended when ``pseudo_dir_refine`` is False, i.e. trained on the targets computed without
    cross-image refinement), with its ``model.json`` description. ``strategy``: ``default``,
    ``mirrored``, ``multiworker`` or a ``tf.distribute.Strategy``; ``recipe.batch_size`` is the
    global batch. Returns the trained Keras model.
    """
    require_tensorflow_backend()
    max_side = recipe_max_side(recipe)   # the whole recipe's training scale, for the description
    recipe, spec, strategy, wd = recipe_part(recipe, "seg"), get_variant(variant), make_strategy(strategy), WorkDir(work)
    name = segmentation_name(variant, pseudo_dir_refine)
    model_path = wd.seg_model(name)
    check_crop_size(recipe.crop_size, recipe.output_stride)
    dataset, ids, images, targets = segmentation_training_set(root, work, variant, pseudo_dir_refine,
                                                              check=False, split=split)
    recipe = seg_schedule(recipe, len(ids), len(dataset.ids))
    from_hcp = recipe.backbone_weights == HCP_BACKBONE
    calibration = (calibration_set(dataset, ids, targets, WorkDir(work, refine=pseudo_dir_refine), spec.target)
                   if recipe.calibrate_biases else None)
    calibration_files = sorted(set(calibration[1]) - set(targets)) if calibration else []
    digest = inputs_digest(recipe, list(targets) + ([wd.hcp_model] if from_hcp else []) + calibration_files)
    if not force and up_to_date(model_path, digest, printer):
        return load_model(model_path)
    check_targets(images, targets, spec.target, dataset.num_classes, variant)
    class_weights = None
    if recipe.class_balance:
        mass = target_class_mass(images, targets, spec.target, dataset.num_classes,
                                 recipe.target_power if spec.target == "soft" else 1.0, recipe.seed)
        class_weights = [round(float(w), 4) for w in balanced_class_weights(mass, recipe.class_balance)]
        printer(f"{name}: class weights {dict(zip(dataset.class_names, class_weights))}")
    batch = min(recipe.batch_size, len(ids))
    steps = steps_per_epoch(len(ids), batch)
    folder = wd.seg_dir(name)
    if not is_chief(strategy):   # other workers keep their own state apart from the chief's
        folder = os.path.join(folder, f"worker-{strategy.cluster_resolver.task_id}")
    if force or storage.exists(model_path):   # trained from other inputs: start afresh
        remove_paths(os.path.join(folder, "checkpoints"), os.path.join(folder, "logs"))
    keras.utils.set_random_seed(recipe.seed)
    first_epoch = epoch_variable()
    data = segmentation_dataset(images, targets, spec.target, dataset.num_classes, recipe.crop_size,
                                batch, recipe.epochs, recipe.seed, scale_range=recipe.scale_range,
                                first_epoch=first_epoch, copy_paste=recipe.copy_paste,
                                target_stride=1 if recipe.loss_on_pixels else recipe.output_stride)
    precision = resolve_precision(recipe.precision)
    with strategy.scope(), dtype_policy(precision):
        model = _network(recipe, dataset.num_classes, wd.hcp_model)
        compile_for_training(model, segmentation_loss(variant, recipe, class_weights), recipe.lr, recipe.last_lr, recipe, steps)
    printer(f"{name}: {len(ids)} images, batch {batch}, {recipe.epochs} epochs, "
            f"{strategy.num_replicas_in_sync} replica(s), {precision}")
    fit(model, data, recipe.epochs, steps, os.path.join(folder, "checkpoints"), os.path.join(folder, "logs"),
        first_epoch, callbacks, verbose)
    if is_chief(strategy):   # the float32 network that is calibrated and saved; other workers save nothing
        model = as_float32(model, lambda: _architecture(recipe, dataset.num_classes))
        description = segmentation_description(dataset.class_names, variant, spec.target == "soft",
                                               spec.single_label, pseudo_dir_refine, recipe, len(ids),
                                               digest, max_side=max_side)
        metrics = {"precision": precision}   # what it trained in (recipe "auto": by the hardware)
        if class_weights is not None:
            metrics["class_weights"] = class_weights   # in class order
        if recipe.calibrate_biases:
            record = calibrate(model, dataset, *calibration, spec.target, max_side, recipe.seed)
            record["images"] = "unseen" if calibration_files else "trained"
            metrics["calibration"] = record
            printer(f"{name}: class biases {dict(zip(dataset.class_names, record['class_biases']))}; mIoU against the "
                    f"targets of {len(calibration[0])} {record['images']} images "
                    f"{record['pseudo_label_miou']['before']} -> {record['pseudo_label_miou']['after']}")
        description = dataclasses.replace(description, metrics=metrics)
        save_model(model, model_path, description)
        printer(f"saved {model_path}")
    return model
