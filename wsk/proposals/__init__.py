"""Segment proposals (§3.1, §3.3): regions with masks, not only boxes.

* ``Proposals``: the container (superpixel map + regions as superpixel sets) and its ``.npz`` file;
* ``generate``: fast hierarchical-grouping proposals (selective-search style) of one image;
* ``load_mcg`` / ``import_mcg``: precomputed MCG proposals [29], the paper's own;
* ``select_hypotheses``: the m hypotheses per image that HCP [30] trains on;
* ``QualityReport`` / ``evaluate_proposals``: average best overlap and recall;
* ``run_proposals``: generation over a dataset split (parallel, resumable).
"""

from wsk.proposals.container import FORMAT_VERSION, Proposals
from wsk.proposals.generate import Strategy, default_strategies, generate
from wsk.proposals.hypotheses import hypothesis_indices, select_hypotheses
from wsk.proposals.mcg import load_mcg
from wsk.proposals.quality import QualityReport, best_overlaps, objects_from_classes, overlaps
from wsk.proposals.stage import evaluate_proposals, import_mcg, run_proposals

__all__ = ["FORMAT_VERSION", "Proposals", "QualityReport", "Strategy", "best_overlaps", "default_strategies",
           "evaluate_proposals", "generate", "hypothesis_indices", "import_mcg", "load_mcg",
           "objects_from_classes", "overlaps", "run_proposals", "select_hypotheses"]
