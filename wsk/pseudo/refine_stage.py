"""Cross-image refinement over a split (§3.2, Eq. 1), in two steps that never hold all images:

1. **statistics** (``statistics_stage``, with refinement or calibrated thresholds): one streaming
   pass over the scores files counts each class's highest score on the images without it
   (``wsk.pseudo.calibration``, with ``candidate_quantile``), two more fit the PCA from the
   calibrated candidates' moments and sum Eq. 1's per-class totals
   (``wsk.pseudo.refinement.refinement_statistics``, with refinement), and with the contrast order
   one more sums the same totals over the false alarms (``class_totals``); all are written to
   ``WORK/refinement.npz`` with the settings and the digest of the scores they were made from;
2. **per image** (``refine_image_file``): each image's candidates, those under their class's
   calibrated threshold dropped, ranked against those statistics, its kept proposals written to
   ``WORK/refined/<id>.json`` (without refinement: every candidate). A label without any
   candidate keeps its best-scoring proposal and is listed under ``fallback``.

Each record says what it was made from (settings, the stamp of its scores file and of the
statistics file), so a rerun after any change redoes exactly the stale ones. The local stage, the
stage list (``wsk.stage_list``) and the Beam pipeline call these same functions.
"""

import functools
import hashlib

import numpy as np

from wsk.data.ids import sorted_ids
from wsk.data.sources import open_dataset
from wsk.errors import WskError
from wsk.io import file_stamp, load_npz, save_json, save_npz
from wsk.pseudo.calibration import NegativeMaxima, calibrated_candidates, calibrated_features, calibrated_thresholds
from wsk.pseudo.candidates import negatives_per_class
from wsk.pseudo.files import (NEGATIVE_KEYS, NEGATIVE_STATISTICS_KEYS, REFINED_VERSION, SCORE_KEYS, STATISTICS_KEYS,
                              STATISTICS_VERSION, read_refined)
from wsk.pseudo.refinement import ClassTotals, Projection, class_totals, refine_image, refinement_statistics
from wsk.stages import StageReport, progress, readable_npz
from wsk.workdir import WorkDir


def refinement_settings(refine, config, mode):
    """The settings every refinement record holds; when any differs, the records, maps and masks
    are redone (``rough_top_regions`` is Eq. 5's, recorded so that changing it remakes the masks;
    ``quantile`` only when thresholds are calibrated, so that older records stay valid)."""
    settings = {"refine": bool(refine), "keep": config.refine_keep, "order": config.refine_order,
                "pca_energy": config.pca_energy, "threshold": config.candidate_threshold, "mode": mode,
                "rough_top_regions": config.rough_top_regions}
    if config.candidate_quantile is not None:
        settings["quantile"] = config.candidate_quantile
    if negatives_per_class(config):
        settings["negatives"] = negatives_per_class(config)
    return settings


def uses_negatives(refine, config):
    """Whether the refinement ranks against the false alarms (the contrast order, with refinement)."""
    return bool(refine) and negatives_per_class(config) > 0


def false_alarms(rec, path=None):
    """``(features, classes)`` of the false alarms the arrays ``rec`` of the scores file ``path`` hold."""
    if any(key not in rec for key in NEGATIVE_KEYS):
        raise WskError("scores without the false alarms the contrast refinement order needs "
                       "(rerun `wsk pseudo` to rescore)", path)
    return rec["negative_features"], rec["negative_labels"]


def needs_statistics(refine, config):
    """Whether the refinement stage reads ``refinement.npz``: for Eq. 1, or for calibrated thresholds."""
    return bool(refine) or config.candidate_quantile is not None


def scores_digest(workdir, ids):
    """A digest of the stamps of every image's scores file: the statistics' inputs."""
    digest = hashlib.sha256()
    for image_id in sorted_ids(ids):   # a string at a time, not a sorted list of them
        digest.update(f"{image_id}\t{file_stamp(workdir.scores(image_id))}\n".encode())
    return digest.hexdigest()


# ------------------------------------------------------------------------------- statistics
def _totals_arrays(totals, dims, prefix=""):
    labels = sorted(totals.images)
    return {f"{prefix}labels": np.array(labels, np.int64),
            f"{prefix}images": np.array([totals.images[k] for k in labels], np.int64),
            # the false alarms keep their own width where no candidate fixed one (no projection, no candidate)
            f"{prefix}means": (np.array([totals.means[k] for k in labels], np.float64).reshape(len(labels), -1)
                               if labels else np.zeros((0, dims))),
            f"{prefix}meansq": np.array([totals.meansq[k] for k in labels], np.float64)}


def _totals(arrays, prefix=""):
    labels = [int(k) for k in arrays[f"{prefix}labels"]]
    return ClassTotals(dict(zip(labels, (int(n) for n in arrays[f"{prefix}images"]))),
                       dict(zip(labels, arrays[f"{prefix}means"])),
                       dict(zip(labels, (float(v) for v in arrays[f"{prefix}meansq"]))))


def save_statistics(path, settings, digest, projection, totals, pca_dims, thresholds=None, negatives=None):
    """Write ``refinement.npz``: the projection (empty when none was fitted), the class totals, the
    calibrated thresholds (empty without calibration) and the false alarms' totals (the contrast
    order only)."""
    dims = projection.dims if projection is not None else (pca_dims or 0)
    extra = {} if negatives is None else _totals_arrays(negatives, dims, "negative_")
    save_npz(path, version=np.int32(STATISTICS_VERSION), settings=np.array(repr(sorted(settings.items()))),
             scores_digest=np.array(digest), pca_dims=np.int64(-1 if pca_dims is None else pca_dims),
             mean=np.zeros(0) if projection is None else projection.mean,
             components=np.zeros((0, 0)) if projection is None else projection.components,
             thresholds=np.zeros(0) if thresholds is None else np.asarray(thresholds, np.float64),
             **_totals_arrays(totals, dims), **extra)


def statistics_made_from(path, settings, digest):
    """Whether ``refinement.npz`` at ``path`` was made with ``settings`` from scores of ``digest``."""
    header = readable_npz(path, ("version",))   # another version is stale, not damaged
    if header is None or int(header["version"]) != STATISTICS_VERSION:
        return False
    arrays = readable_npz(path, STATISTICS_KEYS)
    return (arrays is not None
            and str(arrays["settings"]) == repr(sorted(settings.items()))
            and str(arrays["scores_digest"]) == digest)


@functools.lru_cache(maxsize=2)
def _statistics(path, stamp):
    arrays = load_npz(path, required=STATISTICS_KEYS)
    projection = Projection(arrays["mean"], arrays["components"]) if arrays["components"].size else None
    thresholds = arrays["thresholds"] if arrays["thresholds"].size else None
    negatives = _totals(arrays, "negative_") if all(k in arrays for k in NEGATIVE_STATISTICS_KEYS) else None
    return projection, _totals(arrays), thresholds, negatives


def load_statistics(path):
    """``(projection, totals, thresholds)`` of ``refinement.npz``, read once per process and file
    version (``thresholds`` None without calibration)."""
    return _statistics(path, file_stamp(path))[:3]


def load_negatives(path):
    """The false alarms' ``ClassTotals`` of ``refinement.npz`` (the contrast order); a file
    without them is a ``WskError`` (rerun `wsk pseudo`)."""
    negatives = _statistics(path, file_stamp(path))[3]
    if negatives is None:
        raise WskError("refinement statistics without the false alarms' totals (rerun `wsk pseudo`)", path)
    return negatives


def statistics_stage(dataset, workdir, config, mode, refine=True):
    """Step 1: ``refinement.npz`` of the split, unless it is already made from these scores and
    settings: the calibrated thresholds (with ``config.candidate_quantile``), then Eq. 1's
    statistics of the candidates that pass them (with ``refine``). Returns the ``StageReport``."""
    report = StageReport("refinement statistics")
    settings = refinement_settings(refine, config, mode)
    digest = scores_digest(workdir, dataset.ids)
    if statistics_made_from(workdir.refinement, settings, digest):
        report.skipped = dataset.ids
        return report
    calibrate = config.candidate_quantile is not None
    contrast = uses_negatives(refine, config)
    passes = int(calibrate) + 2 * int(bool(refine)) + int(contrast)
    with progress(length=passes * len(dataset.ids), label="refinement statistics (streaming the scores)") as bar:
        def scores(image_id):
            bar.update(1)
            return load_npz(workdir.scores(image_id), required=SCORE_KEYS)

        thresholds = None
        if calibrate:
            maxima = NegativeMaxima()
            for image_id in dataset.ids:
                maxima.add(scores(image_id)["scores"], dataset.labels(image_id))
            thresholds = calibrated_thresholds(maxima, config.candidate_quantile, config.candidate_threshold)
        projection, totals, pca_dims, negatives = None, ClassTotals(), None, None
        if refine:
            projection, totals, pca_dims = refinement_statistics(
                lambda image_id: calibrated_features(scores(image_id), thresholds), dataset.ids, config.pca_energy)
        if contrast:
            negatives = class_totals(lambda image_id: false_alarms(scores(image_id), workdir.scores(image_id)),
                                     dataset.ids, projection)
    save_statistics(workdir.refinement, settings, digest, projection, totals, pca_dims, thresholds, negatives)
    report.done = dataset.ids
    return report


# -------------------------------------------------------------------------------- per image
def kept_proposals(rec, labels, projection, totals, refine, config, thresholds=None, negatives=None):
    """One image's kept proposals: ``({"<label>": kept proposal indices}, fallback labels)``.

    ``rec``: its scores file's arrays; ``labels``: its ground-truth classes; ``projection`` and
    ``totals``: the dataset's statistics (unused without ``refine``: every candidate is kept);
    ``thresholds``: the calibrated per-class thresholds (None: the scores file's candidates);
    ``negatives``: the false alarms' totals (the contrast order).
    A label without any candidate keeps its best-scoring proposal and is a fallback label.
    """
    calibrated = calibrated_candidates(rec, thresholds)
    features, candidate_labels = calibrated["features"], calibrated["candidate_labels"]
    candidates = calibrated["candidates"]
    if refine:
        rows = refine_image(features, candidate_labels, projection, totals, config.refine_keep,
                            config.refine_order, negatives)
    else:
        rows = {int(label): np.flatnonzero(candidate_labels == label) for label in np.unique(candidate_labels)}
    kept = {label: candidates[r] for label, r in rows.items()}
    fallback = []
    for label in labels:
        if len(kept.get(label, ())) == 0:
            kept[label] = np.array([np.argmax(rec["scores"][:, label - 1])])
            fallback.append(int(label))
    return {str(k): [int(p) for p in v] for k, v in sorted(kept.items())}, fallback


def refined_made_from(workdir, settings, image_id):
    """What an image's refinement record is made from: the settings, its scores and (with
    refinement or calibration) the statistics file."""
    statistics = settings["refine"] or "quantile" in settings   # needs_statistics, from the record's settings
    return {"settings": settings, "scores": file_stamp(workdir.scores(image_id)),
            "statistics": file_stamp(workdir.refinement) if statistics else None}


def refined_valid(workdir, settings, image_id):
    """Whether the image's refinement record exists and is made from what it would be now."""
    data = read_refined(workdir.refined(image_id))
    return data is not None and data["made_from"] == refined_made_from(workdir, settings, image_id)


def refine_image_file(data, split, work, refine, config, mode, image_id):
    """Step 2 for one image: write ``refined/<id>.json`` (a worker of the ``refinement`` stage)."""
    workdir = WorkDir(work, refine)
    settings = refinement_settings(refine, config, mode)
    made_from = refined_made_from(workdir, settings, image_id)
    statistics = needs_statistics(refine, config)
    projection, totals, thresholds = load_statistics(workdir.refinement) if statistics else (None, None, None)
    negatives = load_negatives(workdir.refinement) if uses_negatives(refine, config) else None
    labels = [int(k) for k in open_dataset(data, split, ids=[image_id]).labels(image_id)]
    rec = load_npz(workdir.scores(image_id), required=SCORE_KEYS)
    kept, fallback = kept_proposals(rec, labels, projection, totals, refine, config, thresholds, negatives)
    save_json(workdir.refined(image_id), {"version": REFINED_VERSION, "made_from": made_from, "kept": kept,
                                          "fallback": fallback})
