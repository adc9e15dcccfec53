"""The pseudo-label stages over a dataset split, each resumable (``wsk pseudo``).

``run_pseudo`` runs the pseudo-label entries of ``wsk.stage_list.STAGES``, in order:

1. scoring (§3.1): ``WORK/scores/<id>.npz`` per image, shared by the refined and the
   unrefined (``--no-refine``) pipelines;
2. refinement (§3.2, Eq. 1): the statistics of the whole split in ``refinement.npz``, then each
   image's kept proposals in ``refined/<id>.json`` (``wsk.pseudo.refine_stage``; without
   refinement: every candidate);
3. localization maps (§3.3.1, Eq. 2): ``locmaps/<id>.npz``;
4. rough masks (§3.3.2, Eq. 5): ``masks/<id>.png``.

Each stage skips outputs that exist and record exactly the inputs they would be made from now
(key ``made_from``), so a rerun after any change, or after a kill between two stages, redoes
exactly the stale outputs.

A label with no candidate at all (no proposal scored above the threshold) falls back to its
single best-scoring proposal, so every label of an image has a localization map and a rough mask;
its ``refined/<id>.json`` lists such labels under ``fallback``.
"""

import dataclasses

from wsk.data.sources import open_dataset
from wsk.recipes import PseudoConfig, get_recipe
from wsk.run_record import Run
from wsk.stage_list import PSEUDO_STAGES, run_stages
from wsk.stages import worker_pool


def pseudo_run(data, work, split, refine=True, mode=None, config=PseudoConfig(), jobs=1):
    """A ``Run`` of the pseudo-label stages alone, for library use without ``run.json``: the paper
    recipe with ``config`` (``mode`` overriding its scoring mode)."""
    config = dataclasses.replace(config, score_mode=mode) if mode else config
    dataset = open_dataset(data, split)
    recipe = dataclasses.replace(get_recipe("paper"), name="custom", pseudo=config)
    return Run(dataset.source, str(work), split, "val", recipe, tuple(dataset.class_names), jobs=jobs, refine=refine)


def run_pseudo(data, work, split="train", refine=True, mode=None, config=PseudoConfig(), jobs=1):
    """Scoring -> refinement -> localization maps -> rough masks over ``split`` of DATA (a path or
    a ``wsk.data.sources.DataSource``) into ``work``, where the proposals and ``hcp/hcp.keras``
    are; ``refine=False`` is Table 3's ablation, written under ``WORK/noref``; ``mode`` overrides
    ``config.score_mode``; ``jobs`` worker processes compute the per-image stages but scoring.
    Returns ``{stage name: StageReport}``."""
    run = pseudo_run(data, work, split, refine, mode, config, jobs)
    with worker_pool(jobs) as pool:
        return run_stages(PSEUDO_STAGES, run, pool)
