"""Training (§4.2): the HCP classifier (§3.1, ``wsk.training.hcp``), and the four
DeepLab-LargeFOV variants (``wsk.training.segmentation``), on the shared engine
(``wsk.training.engine``: strategies, the paper's optimizer, resumable ``fit``).

Both read every number from a recipe (``wsk.recipes``) and leave in their folder of the work
directory ``checkpoints/`` (atomic backups after every epoch: a rerun continues from the last
finished epoch with the same weights, optimizer state, learning rate, data order and dropout;
removed at the end), ``logs/`` (TensorBoard, ``history.csv``) and the final ``.keras`` with its
``ModelDescription`` sidecar. A finished model is retrained only when what it was made from
changed (``wsk.training.digest``) or with ``force=True``.
"""

from wsk.recipes import STRATEGIES, VARIANTS, Variant, get_variant
from wsk.training.engine import make_strategy
from wsk.training.hcp import train_hcp
from wsk.training.segmentation import train_segmentation

__all__ = ["STRATEGIES", "VARIANTS", "Variant", "get_variant", "make_strategy", "train_hcp",
           "train_segmentation"]
