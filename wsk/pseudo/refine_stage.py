"""Stage 2 of the pseudo labels (§3.2, Eq. 1): ``refined.json``, the proposals kept per image and
label after cross-image refinement (without it: every candidate; a label without candidate falls
back to its best proposal)."""

import numpy as np

from wsk.io import load_npz, save_json
from wsk.pseudo.files import REFINED_VERSION, SCORE_KEYS, read_refined
from wsk.pseudo.refinement import cross_image_refinement, reduce_features
from wsk.stages import StageReport, progress


def refinement_settings(refine, config, mode):
    """The settings recorded in ``refined.json``; when any differs, maps and masks are redone
    (``rough_top_regions`` is Eq. 5's, recorded here so that changing it remakes the masks)."""
    return {"refine": bool(refine), "keep": config.refine_keep, "order": config.refine_order,
            "pca_energy": config.pca_energy, "threshold": config.candidate_threshold, "mode": mode,
            "rough_top_regions": config.rough_top_regions}


def refine_candidates(records, labels_by_image, refine, config):
    """Kept proposals per image and label (§3.2), from each image's scores file contents.

    ``records`` maps image id -> the arrays of its scores file; ``labels_by_image`` its
    ground-truth classes. Returns ``(images, fallback, pca_dims)`` as stored in
    ``refined.json``: ``images[id][label]`` the kept proposal indices (best first).
    """
    images = {image_id: {} for image_id in records}
    pca_dims = None
    if refine:
        ids = [i for i in records if len(records[i]["candidates"])]
        if ids:
            stacked = np.concatenate([records[i]["features"] for i in ids])
            reduced = reduce_features(stacked, config.pca_energy)
            pca_dims = int(reduced.shape[1])
            offsets = np.cumsum([0] + [len(records[i]["candidates"]) for i in ids])
            by_class, rows_of = {}, {}
            for n, image_id in enumerate(ids):
                own = reduced[offsets[n]:offsets[n + 1]]
                cand_labels = records[image_id]["candidate_labels"]
                for label in np.unique(cand_labels):
                    rows = np.flatnonzero(cand_labels == label)
                    by_class.setdefault(int(label), {})[image_id] = own[rows]
                    rows_of[(int(label), image_id)] = rows
            kept = cross_image_refinement(by_class, keep=config.refine_keep, order=config.refine_order)
            for label, per_image in kept.items():
                for image_id, keep_rows in per_image.items():
                    chosen = records[image_id]["candidates"][rows_of[(label, image_id)][keep_rows]]
                    images[image_id][label] = chosen
    else:
        for image_id, rec in records.items():
            for label in np.unique(rec["candidate_labels"]):
                images[image_id][int(label)] = rec["candidates"][rec["candidate_labels"] == label]
    fallback = {}
    for image_id, rec in records.items():
        for label in labels_by_image[image_id]:
            if len(images[image_id].get(label, ())) == 0:
                images[image_id][label] = np.array([np.argmax(rec["scores"][:, label - 1])])
                fallback.setdefault(image_id, []).append(int(label))
    images = {i: {str(k): [int(p) for p in v] for k, v in sorted(per.items())} for i, per in images.items()}
    return images, fallback, pca_dims


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
    records, labels = {}, {}
    with progress(dataset.ids, label="refinement: reading scores") as bar:
        for image_id in bar:
            records[image_id] = load_npz(workdir.scores(image_id), required=SCORE_KEYS)
            labels[image_id] = [int(k) for k in dataset.labels(image_id)]
    images, fallback, pca_dims = refine_candidates(records, labels, workdir.refine, config)
    save_json(workdir.refined, {"version": REFINED_VERSION, "settings": settings,
                                "pca_dims": pca_dims, "images": images, "fallback": fallback})
    report.done = list(dataset.ids)
    return report
