"""Class-bias calibration of a trained segmentation network on the pseudo-labels of its training split.

A network trained on weak targets under-predicts the classes whose targets are diffuse or thin: on
its own training images it gives them fewer pixels than the targets do, and at test time they fall
to background. This adds one constant per class to the logits (the bias of ``fc8``), chosen so that
the network's labels agree best, in mean IoU, with the pseudo-labels of the training split: those of
the images it did not train on where there are enough (S*: the multi-label ones), else its own
(``wsk.training.segmentation.calibration_set``). It needs no ground truth and no held-out labels,
and, folded into the weights, it travels with the model into
``wsk export`` and the zoo. Background's bias stays 0: only the differences matter to the argmax.

The fit is coordinate ascent over ``BIAS_GRID``: each foreground class in turn takes the grid value
that maximises the mIoU with the others held, ``BIAS_ROUNDS`` times over. It runs on pixels drawn
from at most ``CALIBRATION_IMAGES`` training images, ``CALIBRATION_PIXELS`` pixels in all.
Not in the paper (§4.2); ``SegRecipe.calibrate_biases`` turns it on (``wsk.recipes``).
"""

import cv2
import numpy as np

from wsk.classes import IGNORE_LABEL
from wsk.data.pipelines import load_hard_target, load_soft_target
from wsk.metrics import confusion_matrix, mean_iou
from wsk.stages import progress

BIAS_GRID = np.round(np.arange(-2.0, 4.0001, 0.25), 2)   # logit units
BIAS_ROUNDS = 2
CALIBRATION_IMAGES = 1000
CALIBRATION_PIXELS = 2 ** 21
# the fewest training images a variant did not train on (S*: the multi-label ones) that it is fitted on
# instead of its own (wsk.training.segmentation.calibration_set)
CALIBRATION_MIN_UNSEEN = 50
BATCH = 16   # equally sized images segmented at one call


def _miou(targets, labels, num_classes):
    """``wsk.metrics.mean_iou`` of flat ``labels`` against flat ``targets`` (no ignored entries)."""
    return mean_iou(confusion_matrix(targets, labels, num_classes))


def fit_class_biases(scores, targets, num_classes, grid=BIAS_GRID, rounds=BIAS_ROUNDS):
    """Per-class biases ``(C,)`` float32 (background's 0) that maximise the mIoU of
    ``argmax(scores + biases)`` against ``targets``.

    ``scores``: ``(N, C)`` logits or log-probabilities of ``N`` pixels; ``targets``: ``(N,)`` class
    indices, entries outside ``0..C-1`` ignored. Coordinate ascent over ``grid``; a tie keeps the
    value nearest 0, so a class the targets never hold stays at 0."""
    scores = np.asarray(scores, np.float32)
    targets = np.asarray(targets).astype(np.int64)
    keep = (targets >= 0) & (targets < num_classes)
    scores, targets = scores[keep], targets[keep]
    biases = np.zeros(num_classes, np.float32)
    if not targets.size:
        return biases
    grid = np.asarray(grid, np.float32)[np.argsort(np.abs(grid), kind="stable")]   # ties: nearest 0
    for _ in range(rounds):
        for c in range(1, num_classes):
            others = scores + biases
            others[:, c] = -np.inf
            rival, rival_label = others.max(axis=1), others.argmax(axis=1)
            best_value, best_score = biases[c], None
            for value in grid:
                labels = np.where(scores[:, c] + value > rival, c, rival_label)
                score = _miou(targets, labels, num_classes)
                if best_score is None or score > best_score + 1e-12:
                    best_value, best_score = value, score
            biases[c] = best_value
    return biases


def target_labels(path, kind, height, width, num_classes):
    """A training target as ``(H, W)`` class indices: a rough mask's labels (255 kept, ignored by the
    fit), or the argmax of the localization maps (Eq. 4 normalises them, which keeps the argmax; a
    pixel where every map is 0, which the loss ignores, is 255)."""
    if kind == "soft":
        maps = load_soft_target(path, height, width, num_classes)
        return np.where(maps.sum(axis=-1) > 0, maps.argmax(axis=-1), IGNORE_LABEL).astype(np.int64)
    return load_hard_target(path, height, width, num_classes).astype(np.int64)


def calibration_pixels(model, dataset, ids, targets, kind, max_side, seed=0,
                       images=CALIBRATION_IMAGES, pixels=CALIBRATION_PIXELS):
    """``(scores (N, C) float32, targets (N,) int64)``: the network's log-probabilities and the
    targets' labels at pixels drawn from up to ``images`` of the training ``ids`` (with their
    ``targets`` paths), at the size the network runs at (``working_size`` for ``max_side``)."""
    from wsk.models.inference import segment_photos   # keras-backed; imported on use

    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.permutation(len(ids))[:images])
    per_image = max(1, pixels // max(len(chosen), 1))
    all_scores, all_targets = [], []

    def sample(batch):   # equally sized images, segmented at one call
        _, probabilities = segment_photos(model, np.stack([image for image, _ in batch]), max_side)
        for probabilities, (image, k) in zip(np.asarray(probabilities), batch):
            labels = target_labels(targets[k], kind, *image.shape[:2], len(dataset.class_names))
            h, w = probabilities.shape[:2]
            if (h, w) != labels.shape:
                labels = cv2.resize(labels.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
            flat = probabilities.reshape(h * w, -1)
            take = rng.choice(h * w, per_image, replace=False) if per_image < h * w else slice(None)
            all_scores.append(np.log(np.maximum(flat[take], 1e-12)))
            all_targets.append(labels.reshape(-1)[take].astype(np.int64))

    batch = []
    with progress(chosen.tolist(), label="calibrating class biases") as indices:
        for k in indices:
            image = dataset.image(ids[k])
            if batch and (len(batch) == BATCH or batch[0][0].shape != image.shape):
                sample(batch)
                batch = []
            batch.append((image, k))
    if batch:
        sample(batch)
    return np.concatenate(all_scores).astype(np.float32), np.concatenate(all_targets)


def add_class_biases(model, biases, layer="fc8"):
    """Add ``biases`` ``(C,)`` to the bias of the network's logit layer (``fc8``), in place."""
    logits = model.get_layer(layer)
    kernel, bias = logits.get_weights()
    logits.set_weights([kernel, (bias + np.asarray(biases, bias.dtype)).astype(bias.dtype)])
    return model


def calibrate(model, dataset, ids, targets, kind, max_side, seed=0):
    """Fit the class biases of a trained network on the training-split ``ids`` and their ``targets``
    (``kind`` "soft" or "hard") and add them to it. Returns its record: the biases in class order and
    the mIoU against the targets on the sampled pixels before and after."""
    num_classes = len(dataset.class_names)
    scores, labels = calibration_pixels(model, dataset, ids, targets, kind, max_side, seed)
    biases = fit_class_biases(scores, labels, num_classes)
    keep = labels < num_classes
    before = _miou(labels[keep], scores[keep].argmax(axis=1), num_classes)
    after = _miou(labels[keep], (scores[keep] + biases).argmax(axis=1), num_classes)
    add_class_biases(model, biases)
    return {"class_biases": [round(float(b), 2) for b in biases],   # in the model's class order
            "pseudo_label_miou": {"before": round(100 * before, 2), "after": round(100 * after, 2)},
            "pixels": int(keep.sum())}
