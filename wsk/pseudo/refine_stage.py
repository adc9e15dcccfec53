"""Stage 2 of the pseudo labels (§3.2, Eq. 1): ``refined.json``, the proposals kept per image and
label after cross-image refinement (without it: every candidate; a label without candidate falls
back to its best proposal)."""

import numpy as np

from wsk.io import load_npz, save_json
from wsk.pseudo.files import REFINED_VERSION, SCORE_KEYS, read_refined
from wsk.pseudo.refinement import refine_image, refinement_statistics
from wsk.stages import StageReport, progress


def refinement_settings(refine, config, mode):
    """The settings recorded in ``refined.json``; when any differs, maps and masks are redone
    (``rough_top_regions`` is Eq. 5's, recorded here so that changing it remakes the masks)."""
    return {"refine": bool(refine), "keep": config.refine_keep, "order": config.refine_order,
            "pca_energy": config.pca_energy, "threshold": config.candidate_threshold, "mode": mode,
            "rough_top_regions": config.rough_top_regions}


def refine_candidates(read, ids, labels_by_image, refine, config):
    """Kept proposals per image and label (§3.2), streaming over the images' scores files.

    ``read(image_id)`` returns the arrays of that image's scores file (``SCORE_KEYS``); it is
    called three times per image with refinement (``refinement_statistics`` twice, then the
    ranking), once without, so only one image's candidates are in memory at a time.
    ``labels_by_image`` maps each id to its ground-truth classes. Returns
    ``(images, fallback, pca_dims)`` as stored in ``refined.json``: ``images[id][label]`` the
    kept proposal indices (best first).
    """
    def candidates(image_id):
        rec = read(image_id)
        return rec["features"], rec["candidate_labels"]

    pca_dims = projection = totals = None
    if refine:
        projection, totals, pca_dims = refinement_statistics(candidates, ids, config.pca_energy)
    images, fallback = {}, {}
    for image_id in ids:
        images[image_id], missing = kept_proposals(read(image_id), labels_by_image[image_id], projection,
                                                   totals, refine, config)
        if missing:
            fallback[image_id] = missing
    return images, fallback, pca_dims


def kept_proposals(rec, labels, projection, totals, refine, config):
    """One image's ``refined.json`` entry: ``({"<label>": kept proposal indices}, fallback labels)``.

    ``rec``: its scores file's arrays; ``labels``: its ground-truth classes; ``projection`` and
    ``totals``: the dataset's ``refinement_statistics`` (unused without ``refine``: every
    candidate is kept). A label without any candidate keeps its best-scoring proposal and is
    listed among the fallback labels.
    """
    candidate_labels = rec["candidate_labels"]
    if refine:
        rows = refine_image(rec["features"], candidate_labels, projection, totals, config.refine_keep,
                            config.refine_order)
    else:
        rows = {int(label): np.flatnonzero(candidate_labels == label) for label in np.unique(candidate_labels)}
    kept = {label: rec["candidates"][r] for label, r in rows.items()}
    fallback = []
    for label in labels:
        if len(kept.get(label, ())) == 0:
            kept[label] = np.array([np.argmax(rec["scores"][:, label - 1])])
            fallback.append(int(label))
    return {str(k): [int(p) for p in v] for k, v in sorted(kept.items())}, fallback


def write_refined(workdir, settings, pca_dims, images, fallback):
    """Write ``refined.json`` (``REFINED_VERSION``, atomically)."""
    save_json(workdir.refined, {"version": REFINED_VERSION, "settings": settings, "pca_dims": pca_dims,
                                "images": images, "fallback": fallback})


def refinement_stage(dataset, workdir, config, mode, rescored):
    """Stage 2: ``refined.json`` (rewritten when a score was recomputed or the settings changed).
    Returns the ``StageReport``."""
    report = StageReport("refinement")
    settings = refinement_settings(workdir.refine, config, mode)
    old = read_refined(workdir.refined)
    if (old is not None and not rescored and old["settings"] == settings
            and sorted(old["images"]) == sorted(dataset.ids)):
        report.skipped = list(dataset.ids)
        return report
    labels = {image_id: [int(k) for k in dataset.labels(image_id)] for image_id in dataset.ids}
    passes = 3 if workdir.refine else 1
    with progress(length=passes * len(dataset.ids), label="refinement (streaming the scores)") as bar:
        def read(image_id):
            bar.update(1)
            return load_npz(workdir.scores(image_id), required=SCORE_KEYS)

        images, fallback, pca_dims = refine_candidates(read, dataset.ids, labels, workdir.refine, config)
    write_refined(workdir, settings, pca_dims, images, fallback)
    report.done = list(dataset.ids)
    return report
