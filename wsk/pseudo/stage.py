"""The pseudo-label stages over a dataset split, each resumable (design.md's work directory).

``run_pseudo`` runs, in order:

1. scoring (§3.1): ``WORK/scores/<id>.npz`` per image, shared by the refined and the
   unrefined (``--no-refine``) pipelines;
2. refinement (§3.2, Eq. 1): ``refined.json``, the proposals kept per image and label
   (without refinement: every candidate);
3. localization maps (§3.3.1, Eq. 2): ``locmaps/<id>.npz``;
4. rough masks (§3.3.2, Eq. 5): ``masks/<id>.png``.

Each stage skips outputs that exist and are valid. ``refined.json`` is rewritten when a
score was computed in this run or its settings changed. Every map records what it was made
from (its kept proposals and the stamp of its proposals file, key ``made_from``) and every mask
likewise (the stamps of its map and scores and Eq. 5's region count, in a PNG text chunk), so a
rerun after any change, or after a kill between two stages, redoes exactly the stale outputs.

A label with no candidate at all (no proposal scored above the threshold) falls back to its
single best-scoring proposal, so every label of an image has a localization map and a
rough mask; ``refined.json`` lists such labels under ``fallback``.

``refined.json`` (version ``REFINED_VERSION``)::

    {"version": 1, "settings": {...}, "pca_dims": d,
     "images": {"<id>": {"<class index>": [proposal indices, best first], ...}, ...},
     "fallback": {"<id>": [class indices], ...}}
"""

import json
import os

import numpy as np

from wsk.errors import WskError
from wsk.io import (file_stamp, label_png_made_from, load_json, load_npz, read_label_png, save_json, save_npz,
                    write_label_png)
from wsk.recipes import PseudoConfig
from wsk.stages import StageReport, progress, run_per_image, say_recomputing
from wsk.workdir import WorkDir

SCORES_VERSION = 1
LOCMAP_VERSION = 1
REFINED_VERSION = 1
SCORE_KEYS = ("version", "scores", "candidates", "candidate_labels", "features", "mode", "threshold",
              "inputs")
LOCMAP_KEYS = ("version", "maps", "labels")


# -- HCP model ---------------------------------------------------------------------------
def load_hcp_model(path):
    """The trained HCP model saved at ``path`` (``WorkDir.hcp_model``, by ``wsk train hcp``)."""
    if not os.path.isfile(path):
        raise WskError("HCP model not found (train it first: `wsk train hcp ROOT WORK`)", path)
    from wsk.predict import load_model

    return load_model(path)


# -- 1. scoring --------------------------------------------------------------------------
def score_inputs(workdir, image_id):
    """The stamp of what an image's scores are made from: the HCP model and its proposals."""
    return file_stamp(workdir.hcp_model, workdir.proposals(image_id))


def _readable_npz(path, keys):
    """The arrays of ``path``, or None when it is missing or damaged (then it is recomputed, and a
    line says so)."""
    if not os.path.exists(path):
        return None
    try:
        return load_npz(path, required=keys)
    except WskError as err:
        say_recomputing(err)
        return None


def scores_valid(path, mode, threshold, inputs):
    """Whether ``path`` holds a scores file of this version, scoring mode and threshold, computed
    from the inputs stamped ``inputs`` (a retrained HCP or new proposals make it stale)."""
    arrays = _readable_npz(path, SCORE_KEYS)
    return arrays is not None and (int(arrays["version"]) == SCORES_VERSION and str(arrays["mode"]) == mode
            and bool(np.isclose(float(arrays["threshold"]), threshold)) and str(arrays["inputs"]) == inputs)


def score_image(scorer, dataset, workdir, image_id, threshold):
    """Score every proposal of one image and write ``WORK/scores/<id>.npz`` (§3.1)."""
    from wsk.proposals.container import Proposals
    from wsk.pseudo.candidates import select_candidates

    proposals_path = workdir.proposals(image_id)
    proposals = Proposals.load(proposals_path)
    image = dataset.image(image_id)
    if tuple(image.shape[:2]) != tuple(proposals.shape):
        raise WskError(f"proposals of size {proposals.shape} do not fit the {image.shape[:2]} image "
                       "(recompute the proposals)", proposals_path)
    scores, features = scorer(image, proposals.boxes)
    candidates, candidate_labels = select_candidates(scores, dataset.labels(image_id), threshold)
    save_npz(workdir.scores(image_id), version=np.int32(SCORES_VERSION), scores=scores,
             candidates=candidates, candidate_labels=candidate_labels,
             features=features[candidates].astype(np.float32), mode=np.array(scorer.mode),
             threshold=np.float32(threshold), inputs=np.array(score_inputs(workdir, image_id)))


def scoring_stage(dataset, workdir, mode, config, model=None, batch_size=32):
    """Stage 1: ``scores/<id>.npz`` for every image of ``dataset`` (loads the model only if needed)."""
    from wsk.pseudo.scoring import ProposalScorer

    threshold = config.candidate_threshold
    done = {i for i in dataset.ids
            if scores_valid(workdir.scores(i), mode, threshold, score_inputs(workdir, i))}
    scorer = None
    if len(done) < len(dataset.ids):
        net = model if model is not None else load_hcp_model(workdir.hcp_model)
        classes = int(net.output_shape[-1])
        if classes != dataset.num_classes - 1:
            raise WskError(f"the HCP model has {classes} classes, the dataset "
                           f"{dataset.num_classes - 1} object classes", workdir.hcp_model)
        scorer = ProposalScorer(net, mode, batch_size=batch_size)
    report = run_per_image("scoring", dataset.ids,
                           lambda image_id: score_image(scorer, dataset, workdir, image_id, threshold),
                           is_done=done.__contains__)
    report.raise_if_failed()
    return report


# -- 2. refinement -----------------------------------------------------------------------
def refinement_settings(refine, config, mode):
    """The settings recorded in ``refined.json``; when any differs, maps and masks are redone
    (``rough_top_regions`` is Eq. 5's, recorded here so that changing it remakes the masks)."""
    return {"refine": bool(refine), "keep": config.refine_keep, "order": config.refine_order,
            "pca_energy": config.pca_energy, "threshold": config.candidate_threshold, "mode": mode,
            "rough_top_regions": config.rough_top_regions}


def _read_refined(path):
    if not os.path.exists(path):
        return None
    try:
        data = load_json(path)
    except WskError:
        return None
    if not isinstance(data, dict) or data.get("version") != REFINED_VERSION:
        return None
    if not isinstance(data.get("images"), dict) or not isinstance(data.get("settings"), dict):
        return None
    return data


def refine_candidates(records, labels_by_image, refine, config):
    """Kept proposals per image and label (§3.2), from each image's scores file contents.

    ``records`` maps image id -> the arrays of its scores file; ``labels_by_image`` its
    ground-truth classes. Returns ``(images, fallback, pca_dims)`` as stored in
    ``refined.json``: ``images[id][label]`` the kept proposal indices (best first).
    """
    from wsk.pseudo.refinement import cross_image_refinement, reduce_features

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
    old = _read_refined(workdir.refined)
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


# -- 3. localization maps ----------------------------------------------------------------
_REFINED_CACHE = {}


def _refined_images(path):
    """``images`` of ``refined.json``, read once per process (per file version)."""
    key = (path, os.stat(path).st_mtime_ns)
    if key not in _REFINED_CACHE:
        data = _read_refined(path)
        if data is None:
            raise WskError("damaged refinement file (rerun `wsk pseudo`)", path)
        _REFINED_CACHE.clear()
        _REFINED_CACHE[key] = data["images"]
    return _REFINED_CACHE[key]


def locmap_made_from(workdir, image_id):
    """What an image's localization maps are made from: its kept proposals (``refined.json``)
    and the stamp of its proposals file."""
    entry = _refined_images(workdir.refined).get(image_id)
    if entry is None:
        raise WskError(f"image {image_id} is not in the refinement file", workdir.refined)
    return {"kept": entry, "proposals": file_stamp(workdir.proposals(image_id))}


def locmap_valid(path, made_from=None):
    """Whether ``path`` holds maps of this version (made from ``made_from``, when given)."""
    arrays = _readable_npz(path, LOCMAP_KEYS)
    if arrays is None or int(arrays["version"]) != LOCMAP_VERSION:
        return False
    if made_from is None:
        return True
    return "made_from" in arrays and json.loads(str(arrays["made_from"])) == made_from


def map_image(work, refine, num_classes, image_id):
    """Write ``locmaps/<id>.npz``: the image's Eq. 2 maps from its kept proposals."""
    from wsk.proposals.container import Proposals
    from wsk.pseudo.localization import localization_maps

    workdir = WorkDir(work, refine)
    made_from = locmap_made_from(workdir, image_id)
    entry = made_from["kept"]
    proposals = Proposals.load(workdir.proposals(image_id))
    kept = {int(label): np.asarray(indices, np.int64) for label, indices in entry.items()}
    for label, indices in kept.items():
        if len(indices) and indices.max() >= len(proposals):
            raise WskError(f"proposal {indices.max()} kept for class {label} is beyond the "
                           f"{len(proposals)} proposals (rerun scoring)", workdir.proposals(image_id))
    maps = localization_maps(proposals, kept, num_classes)
    save_npz(workdir.locmap(image_id), version=np.int32(LOCMAP_VERSION),
             maps=maps.astype(np.float16), labels=np.array(sorted(kept), np.int32),
             made_from=np.array(json.dumps(made_from, sort_keys=True)))


# -- 4. rough masks ----------------------------------------------------------------------
def mask_made_from(workdir, top, image_id):
    """What an image's rough mask is made from: its maps, its scores and Eq. 5's region count."""
    return {"locmap": file_stamp(workdir.locmap(image_id)), "scores": file_stamp(workdir.scores(image_id)),
            "top": int(top)}


def mask_valid(path, made_from=None):
    """Whether ``path`` is a readable mask (made from ``made_from``, when given)."""
    if not os.path.exists(path):
        return False
    try:
        read_label_png(path)
    except WskError:
        return False
    return made_from is None or label_png_made_from(path) == made_from


def mask_image(work, refine, top, image_id):
    """Write ``masks/<id>.png``: the image's Eq. 5 rough mask as a palette PNG."""
    from wsk.proposals.container import Proposals
    from wsk.pseudo.rough_masks import rough_masks

    workdir = WorkDir(work, refine)
    proposals = Proposals.load(workdir.proposals(image_id))
    scores = load_npz(workdir.scores(image_id), required=("scores",))["scores"]
    locmap = load_npz(workdir.locmap(image_id), required=LOCMAP_KEYS)
    mask = rough_masks(proposals, scores, locmap["maps"], locmap["labels"], top)
    write_label_png(workdir.mask(image_id), mask, made_from=mask_made_from(workdir, top, image_id))


# -- all stages --------------------------------------------------------------------------
def run_pseudo(root, work, split="train", refine=True, mode=None, config=PseudoConfig(),
               jobs=1, model=None, batch_size=32):
    """Scoring -> refinement -> localization maps -> rough masks over ``split`` of ``root``.

    ``work`` is the work directory (proposals and the HCP model are read from it);
    ``refine=False`` skips refinement (Table 3's ablation) and writes under ``WORK/noref``;
    ``mode`` ("crop"/"roi") overrides ``config.score_mode``; ``model`` may pass an HCP model
    already in memory; ``jobs`` worker processes compute maps and masks. Returns the four
    ``StageReport``s in a dict keyed by stage name.
    """
    import functools

    from wsk.data.voc import VOCDataset

    mode = mode or config.score_mode
    dataset = VOCDataset(root, split)
    workdir = WorkDir(work, refine)
    reports = {}
    reports["scoring"] = scoring_stage(dataset, workdir, mode, config, model, batch_size)
    reports["refinement"] = refinement_stage(
        dataset, workdir, config, mode, rescored=bool(reports["scoring"].done))
    # an output is reused only when it records exactly the inputs it would be made from now, so
    # a rerun after any change or kill (even between two stages) redoes exactly what is stale
    maps_done = lambda i: locmap_valid(workdir.locmap(i), locmap_made_from(workdir, i))  # noqa: E731
    reports["locmaps"] = run_per_image(
        "localization maps", dataset.ids,
        functools.partial(map_image, workdir.root, refine, dataset.num_classes),
        is_done=maps_done, jobs=jobs)
    reports["locmaps"].raise_if_failed()
    top = config.rough_top_regions
    reports["masks"] = run_per_image(
        "rough masks", dataset.ids, functools.partial(mask_image, workdir.root, refine, top),
        is_done=lambda i: mask_valid(workdir.mask(i), mask_made_from(workdir, top, i)), jobs=jobs)
    reports["masks"].raise_if_failed()
    return reports

