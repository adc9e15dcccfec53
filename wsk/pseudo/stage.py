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

import functools

from wsk.data.voc import VOCDataset
from wsk.io import remove_temporaries
from wsk.pseudo.refine_stage import refinement_stage
from wsk.pseudo.score_stage import scoring_stage
from wsk.pseudo.targets import locmap_made_from, locmap_valid, map_image, mask_image, mask_made_from, mask_valid
from wsk.recipes import PseudoConfig
from wsk.stages import run_per_image, worker_pool
from wsk.workdir import WorkDir


def run_pseudo(root, work, split="train", refine=True, mode=None, config=PseudoConfig(),
               jobs=1, model=None, batch_size=32):
    """Scoring -> refinement -> localization maps -> rough masks over ``split`` of ``root``.

    ``work`` is the work directory (proposals and the HCP model are read from it);
    ``refine=False`` skips refinement (Table 3's ablation) and writes under ``WORK/noref``;
    ``mode`` ("crop"/"roi") overrides ``config.score_mode``; ``model`` may pass an HCP model
    already in memory; ``jobs`` worker processes compute maps and masks. Returns the four
    ``StageReport``s in a dict keyed by stage name.
    """

    mode = mode or config.score_mode
    dataset = VOCDataset(root, split)
    workdir = WorkDir(work, refine)
    reports = {}
    reports["scoring"] = scoring_stage(dataset, workdir, mode, config, model, batch_size)
    reports["refinement"] = refinement_stage(
        dataset, workdir, config, mode, rescored=bool(reports["scoring"].done))
    with worker_pool(jobs) as pool:   # one set of workers for maps and masks
        reports["locmaps"] = locmap_stage(dataset, workdir, pool)
        reports["masks"] = mask_stage(dataset, workdir, config.rough_top_regions, pool)
    return reports


def locmap_stage(dataset, workdir, pool=None):
    """Stage 3 (Eq. 2): ``locmaps/<id>.npz`` of every image whose map is missing or stale."""
    # an output is reused only when it records exactly the inputs it would be made from now, so
    # a rerun after any change or kill (even between two stages) redoes exactly what is stale
    remove_temporaries(workdir.locmaps_dir)
    report = run_per_image(
        "localization maps", dataset.ids,
        functools.partial(map_image, workdir.root, workdir.refine, dataset.num_classes),
        is_done=lambda i: locmap_valid(workdir.locmap(i), locmap_made_from(workdir, i)), pool=pool)
    report.raise_if_failed()
    return report


def mask_stage(dataset, workdir, top, pool=None):
    """Stage 4 (Eq. 5, ``top`` regions): ``masks/<id>.png`` of every image whose mask is missing
    or stale."""
    remove_temporaries(workdir.masks_dir)
    report = run_per_image(
        "rough masks", dataset.ids, functools.partial(mask_image, workdir.root, workdir.refine, top),
        is_done=lambda i: mask_valid(workdir.mask(i), mask_made_from(workdir, top, i)), pool=pool)
    report.raise_if_failed()
    return report
