"""Segmentation metrics as the VOC development kit computes them, and the paper's table layout.

A confusion matrix ``cm[g, p]`` counts pixels of ground-truth class ``g`` predicted as ``p``,
summed over the whole dataset (not averaged per image); pixels whose ground truth is 255 are
ignored. IoU of class ``c`` is ``cm[c, c] / (row c + column c - cm[c, c])``. A class with zero
union (absent from both ground truth and prediction) has IoU NaN and is left out of the mean,
as the VOC devkit does; mIoU is the mean over the remaining classes.
"""

import dataclasses
import os

import numpy as np
from sklearn.metrics import average_precision_score

from wsk import storage
from wsk.classes import IGNORE_LABEL, short_name
from wsk.errors import WskError
from wsk.io import read_label_png
from wsk.stages import progress


def confusion_matrix(gt, pred, num_classes, ignore=IGNORE_LABEL):
    """The ``(C, C)`` int64 confusion matrix of one label map (rows ground truth, columns prediction)."""
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise WskError(f"prediction has shape {pred.shape}, ground truth {gt.shape}")
    keep = gt != ignore
    g = gt[keep].astype(np.int64)
    p = pred[keep].astype(np.int64)
    if g.size and (g.min() < 0 or g.max() >= num_classes):
        raise WskError(f"ground truth holds values outside 0..{num_classes - 1} and {ignore}")
    if p.size and (p.min() < 0 or p.max() >= num_classes):
        raise WskError(f"prediction holds values outside 0..{num_classes - 1}")
    return np.bincount(g * num_classes + p, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


class ConfusionMatrix:
    """A confusion matrix accumulated over a dataset: ``update(gt, pred)`` per image."""

    def __init__(self, num_classes, ignore=IGNORE_LABEL):
        self.num_classes = num_classes
        self.ignore = ignore
        self.matrix = np.zeros((num_classes, num_classes), np.int64)
        self.images = 0

    def update(self, gt, pred):
        self.matrix += confusion_matrix(gt, pred, self.num_classes, self.ignore)
        self.images += 1
        return self

    def iou(self):
        return iou_per_class(self.matrix)

    def mean_iou(self):
        return mean_iou(self.matrix)

    def pixel_accuracy(self):
        return pixel_accuracy(self.matrix)


def iou_per_class(cm):
    """Per-class IoU in [0, 1] (float64 ``(C,)``); NaN where a class has zero union."""
    cm = np.asarray(cm, np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


def mean_iou(cm):
    """Mean IoU over the classes present in ground truth or prediction (NaN if none)."""
    iou = iou_per_class(cm)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def pixel_accuracy(cm):
    """Share of the counted (non-ignored) pixels predicted correctly (NaN if none counted)."""
    cm = np.asarray(cm)
    total = cm.sum()
    return float(np.trace(cm) / total) if total else float("nan")


def _percent(value):
    return "-" if value is None or not np.isfinite(value) else f"{100 * value:.1f}"


def format_table(columns, class_names):
    """The paper's Table 1 layout: a row per class (short names), a column per result, mIoU last.

    ``columns`` maps a result name to its per-class IoU (fractions, NaN for absent classes);
    numbers are printed in % with one decimal, NaN as ``-``.
    """
    names = list(columns)
    values = [np.asarray(columns[n], np.float64) for n in names]
    for name, iou in zip(names, values):
        if iou.shape != (len(class_names),):
            raise WskError(f"result {name!r} has {iou.size} IoU values for {len(class_names)} classes")
    first = max([len("Categories"), len("mIoU")] + [len(short_name(c)) for c in class_names])
    widths = [max(6, len(n)) for n in names]
    lines = ["  ".join([f"{'Categories':<{first}s}"] + [f"{n:>{w}s}" for n, w in zip(names, widths)])]
    for c, class_name in enumerate(class_names):
        cells = [f"{_percent(v[c]):>{w}s}" for v, w in zip(values, widths)]
        lines.append("  ".join([f"{short_name(class_name):<{first}s}"] + cells))
    means = [float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for v in values]
    lines.append("  ".join([f"{'mIoU':<{first}s}"] + [f"{_percent(m):>{w}s}" for m, w in zip(means, widths)]))
    return "\n".join(lines)


@dataclasses.dataclass
class EvalResult:
    """The outcome of evaluating one set of predictions on a dataset split."""

    name: str
    class_names: tuple
    matrix: np.ndarray

    @property
    def iou(self):
        return iou_per_class(self.matrix)

    @property
    def mean_iou(self):
        return mean_iou(self.matrix)

    @property
    def pixel_accuracy(self):
        return pixel_accuracy(self.matrix)

    def to_dict(self):
        """A JSON-ready dict: IoU per class (null when NaN), mIoU, pixel accuracy, the matrix."""
        def clean(value):
            return None if not np.isfinite(value) else float(value)

        return {
            "name": self.name,
            "classes": list(self.class_names),
            "iou": {c: clean(v) for c, v in zip(self.class_names, self.iou)},
            "miou": clean(self.mean_iou),
            "pixel_accuracy": clean(self.pixel_accuracy),
            "confusion_matrix": self.matrix.tolist(),
        }


class PredictionFolder:
    """Predicted label maps stored as ``DIR/<id>.png`` (palette or grey PNG, class indices)."""

    def __init__(self, folder):
        self.folder = os.fspath(folder)
        if not storage.isdir(self.folder):
            raise WskError("prediction folder not found", self.folder)

    def path(self, image_id):
        return os.path.join(self.folder, f"{image_id}.png")

    def __call__(self, image_id):
        path = self.path(image_id)
        if not storage.exists(path):
            raise WskError("prediction missing", path)
        return read_label_png(path)


def evaluate_dataset(dataset, predict, name="result", show_progress=True):
    """Accumulate the confusion matrix of ``predict(id)`` against every ground truth of ``dataset``.

    ``predict`` maps an image id to an ``(H, W)`` label map (e.g. a ``PredictionFolder`` or a
    model's prediction function); ``predict.path(id)``, when present, names the file in errors.
    A missing ground truth, a prediction of another size or with unknown classes is a ``WskError``.
    Returns an ``EvalResult``.
    """
    locate = getattr(predict, "path", dataset.image_path)
    cm = ConfusionMatrix(dataset.num_classes)

    def one(image_id):
        gt = dataset.mask(image_id)
        if gt is None:
            raise WskError(f"image {image_id} has no ground-truth mask for evaluation", dataset.root)
        pred = np.asarray(predict(image_id))
        if pred.shape != gt.shape:
            shape = "x".join(map(str, pred.shape[1::-1])) if pred.ndim >= 2 else str(pred.shape)
            raise WskError(f"prediction is {shape} but the ground truth is {gt.shape[1]}x{gt.shape[0]}",
                           locate(image_id))
        try:
            cm.update(gt, pred)
        except WskError as err:
            where = dataset.mask_path(image_id) if err.problem.startswith("ground truth") else locate(image_id)
            raise WskError(err.problem, where) from None

    if show_progress:
        with progress(dataset.ids, label=f"evaluating {name}") as bar:
            for image_id in bar:
                one(image_id)
    else:
        for image_id in dataset.ids:
            one(image_id)
    return EvalResult(name, tuple(dataset.class_names), cm.matrix)


def evaluation_report(dataset, results):
    """The JSON document of ``wsk eval``: dataset, split, image count and each ``EvalResult``."""
    return {
        "root": dataset.root,
        "split": dataset.split,
        "num_images": len(dataset.ids),
        "results": [r.to_dict() for r in results],
    }


def multilabel_average_precision(y_true, y_score):
    """Multi-label classification mAP (HCP): ``(mAP, {column: AP})``, AP per class by sklearn's
    ``average_precision_score``, macro-averaged over the classes with at least one positive
    image (mAP is NaN when there is none)."""
    y_true = np.asarray(y_true) > 0
    y_score = np.asarray(y_score, np.float64)
    if y_true.shape != y_score.shape or y_true.ndim != 2:
        raise WskError(f"labels {y_true.shape} and scores {y_score.shape} must be the same (N, C)")
    per_class = {c: float(average_precision_score(y_true[:, c], y_score[:, c]))
                 for c in range(y_true.shape[1]) if y_true[:, c].any()}
    return (float(np.mean(list(per_class.values()))) if per_class else float("nan")), per_class
