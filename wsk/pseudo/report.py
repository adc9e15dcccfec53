"""Where pseudo-label quality is lost: each stage against what the stage before allowed.

When the dataset has ground-truth masks, ``quality_report`` measures, per class and overall:

* **proposal ceiling**: each ground-truth object painted with its best-overlapping proposal, as
  mIoU against the ground truth: what any selection from these proposals could reach;
* **labels with a candidate**: the share of image labels with at least one proposal scored above
  the threshold (§3.1; its class's calibrated threshold where ``refinement.npz`` holds them,
  ``wsk.pseudo.calibration``); the others fall back to their single best-scored proposal;
* **top proposal IoU**: the mean, over image labels, of the IoU of the label's top-scored proposal;
* **candidate precision**: the share of candidates (§3.1) whose IoU is >= 0.5, and the same for the
  proposals kept by refinement (§3.2);
* **pseudo-label mIoU** of the localization maps' argmax (Eq. 2) and of the rough masks (Eq. 5),
  with and without refinement (each where it was computed).

A proposal's IoU "against its label" is its best IoU over the ground-truth objects of that class in
the image (``wsk.proposals.stage.ground_truth_objects``: ``SegmentationObject`` instances, else the
connected regions of each class, as ``wsk proposals eval`` counts them). Pixels marked 255 in the
ground truth count nowhere.
"""

import numpy as np

from wsk import storage
from wsk.errors import WskError
from wsk.io import load_npz, save_json
from wsk.metrics import ConfusionMatrix, PredictionFolder, evaluate_dataset, format_table, iou_per_class
from wsk.proposals.container import Proposals
from wsk.proposals.stage import ground_truth_objects
from wsk.pseudo.calibration import calibrated_candidates
from wsk.pseudo.files import read_refined
from wsk.pseudo.refine_stage import load_statistics
from wsk.stages import progress
from wsk.workdir import WorkDir

IOU_HIT = 0.5


def has_ground_truth(dataset):
    """Whether every image of ``dataset`` has a ground-truth mask (then the report can be made)."""
    return bool(dataset.ids) and all(dataset.has_mask(i) for i in dataset.ids)


def proposal_ious(proposals, target, valid):
    """``(P,)`` IoU of every proposal with the boolean ``target`` mask, over the ``valid`` pixels."""
    sp = proposals.superpixels
    n = proposals.num_superpixels
    inter = proposals.region_sums(np.bincount(sp[target & valid], minlength=n).astype(np.float64))
    area = proposals.region_sums(np.bincount(sp[valid], minlength=n).astype(np.float64))
    union = area + float((target & valid).sum()) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def label_ious(proposals, objects, valid):
    """``{class: (P,) best IoU of each proposal over that class's objects}``."""
    best = {}
    for cls, where in objects:
        iou = proposal_ious(proposals, where, valid)
        best[cls] = np.maximum(best[cls], iou) if cls in best else iou
    return best


def ceiling_map(proposals, objects, valid):
    """An ``(H, W)`` label map: every object painted with its best proposal (largest objects first,
    so that smaller ones stay visible), background elsewhere."""
    out = np.zeros(proposals.shape, np.uint8)
    for cls, where in sorted(objects, key=lambda o: -int(o[1].sum())):
        best = int(np.argmax(proposal_ious(proposals, where, valid)))
        out[proposals.mask(best)] = cls
    return out


class _Tally:
    """Per-class sums of the report's counts."""

    def __init__(self, num_classes):
        z = lambda: np.zeros(num_classes, np.float64)  # noqa: E731
        self.labels, self.with_candidate, self.top_iou = z(), z(), z()
        self.candidates, self.candidate_hits, self.kept, self.kept_hits = z(), z(), z(), z()

    def add(self, cls, ious, scores_column, candidates, kept):
        self.labels[cls] += 1
        self.with_candidate[cls] += len(candidates) > 0
        self.top_iou[cls] += ious[int(np.argmax(scores_column))]
        self.candidates[cls] += len(candidates)
        self.candidate_hits[cls] += int((ious[candidates] >= IOU_HIT).sum())
        self.kept[cls] += len(kept)
        self.kept_hits[cls] += int((ious[kept] >= IOU_HIT).sum())


def _ratio(num, den):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _kept_set(workdir, image_id):
    """An image's kept proposals (``refined/<id>.json``), empty when it has no record."""
    data = read_refined(workdir.refined(image_id))
    return {} if data is None else data["kept"]


def locmap_argmax(workdir):
    """A prediction function for ``evaluate_dataset``: the argmax of an image's localization maps."""
    def predict(image_id):
        return np.argmax(load_npz(workdir.locmap(image_id), required=("maps",))["maps"], axis=0)

    predict.path = workdir.locmap
    return predict


def pseudo_label_results(dataset, work):
    """``EvalResult``s of the maps' argmax and of the rough masks, with and without refinement,
    for those of the four that were computed for every image of ``dataset``."""
    results = []
    for refine in (True, False):
        wd = WorkDir(work, refine)
        suffix = "" if refine else " (no refinement)"
        if all(storage.exists(wd.locmap(i)) for i in dataset.ids):
            results.append(evaluate_dataset(dataset, locmap_argmax(wd), name=f"loc. maps{suffix}",
                                            show_progress=False))
        if all(storage.exists(wd.mask(i)) for i in dataset.ids):
            results.append(evaluate_dataset(dataset, PredictionFolder(wd.masks_dir),
                                            name=f"rough masks{suffix}", show_progress=False))
    return results


def quality_report(dataset, work, refine=True):
    """The stage-by-stage report (module docstring) of ``WORK`` over ``dataset``, as a dict; also
    written to ``WorkDir.quality`` (``WORK/quality.json``, ``WORK/noref/quality.json`` without refinement). Needs the
    scores of every image; images without a ground-truth mask are a ``WskError``."""
    workdir = WorkDir(work, refine)
    c = dataset.num_classes
    tally = _Tally(c)
    ceiling = ConfusionMatrix(c)
    thresholds = load_statistics(workdir.refinement)[2] if storage.exists(workdir.refinement) else None
    with progress(dataset.ids, label="quality report") as bar:
        for image_id in bar:
            truth = ground_truth_objects(dataset, image_id)
            if truth is None:
                raise WskError("the quality report needs ground-truth masks", dataset.image_path(image_id))
            masks, classes, valid = truth
            objects = list(zip(classes.tolist(), masks))
            proposals = Proposals.load(workdir.proposals(image_id))
            ceiling.update(dataset.mask(image_id), ceiling_map(proposals, objects, valid))
            scores = load_npz(workdir.scores(image_id), required=("scores", "candidates", "candidate_labels"))
            calibrated = calibrated_candidates(scores, thresholds)
            candidates, candidate_labels = calibrated["candidates"], calibrated["candidate_labels"]
            ious = label_ious(proposals, objects, valid)
            kept = _kept_set(workdir, image_id)
            for label in dataset.labels(image_id):
                if label not in ious:
                    continue   # labelled but not in the mask (e.g. wholly ignored)
                cands = candidates[candidate_labels == label]
                tally.add(label, ious[label], scores["scores"][:, label - 1], cands,
                          np.asarray(kept.get(str(label), []), np.int64))
    pseudo = {r.name: r for r in pseudo_label_results(dataset, work)}
    rows = {
        "proposal ceiling (IoU)": iou_per_class(ceiling.matrix),
        "labels with a candidate": _ratio(tally.with_candidate, tally.labels),
        "top proposal IoU": _ratio(tally.top_iou, tally.labels),
        "candidate precision": _ratio(tally.candidate_hits, tally.candidates),
        "kept precision": _ratio(tally.kept_hits, tally.kept),
    }
    report = {
        "split": dataset.split, "images": len(dataset.ids), "refine": bool(refine), "iou_hit": IOU_HIT,
        "class_names": list(dataset.class_names),
        "overall": {
            "proposal_ceiling_miou": float(np.nanmean(rows["proposal ceiling (IoU)"])),
            "labels_with_candidate": float(tally.with_candidate.sum() / max(tally.labels.sum(), 1)),
            "top_proposal_iou": float(tally.top_iou.sum() / max(tally.labels.sum(), 1)),
            "candidate_precision": float(tally.candidate_hits.sum() / max(tally.candidates.sum(), 1)),
            "kept_precision": float(tally.kept_hits.sum() / max(tally.kept.sum(), 1)),
            "candidates_per_label": float(tally.candidates.sum() / max(tally.labels.sum(), 1)),
            **{f"{name} mIoU": r.mean_iou for name, r in pseudo.items()},
        },
        "per_class": {name: [None if not np.isfinite(v) else float(v) for v in values]
                      for name, values in rows.items()},
        "pseudo_labels": {name: [None if not np.isfinite(v) else float(v) for v in r.iou]
                          for name, r in pseudo.items()},
    }
    report["per_class"]["labels with a candidate"][0] = None   # background has no labels
    save_json(workdir.quality, report)
    return report


def format_quality(report):
    """The report as two tables: proposal-selection quality, then pseudo-label IoU (%)."""
    names = report["class_names"]
    as_array = lambda v: np.array([np.nan if x is None else x for x in v], np.float64)  # noqa: E731
    first = {name: as_array(values) for name, values in report["per_class"].items()}
    overall = report["overall"]
    lines = [f"Quality of each stage on {report['split']} ({report['images']} images; %, "
             f"'mIoU' row = mean over classes):",
             format_table(first, names),
             f"overall: proposal ceiling {100 * overall['proposal_ceiling_miou']:.1f} mIoU; "
             f"labels with a candidate {100 * overall['labels_with_candidate']:.1f}%; "
             f"top proposal IoU {100 * overall['top_proposal_iou']:.1f}; "
             f"candidate precision {100 * overall['candidate_precision']:.1f}% "
             f"({overall['candidates_per_label']:.1f} per label); "
             f"kept precision {100 * overall['kept_precision']:.1f}%"]
    if report["pseudo_labels"]:
        lines += ["", "Pseudo-labels (IoU %):",
                  format_table({k: as_array(v) for k, v in report["pseudo_labels"].items()}, names)]
    return "\n".join(lines)
