"""Object candidates (§3.1): proposals whose HCP softmax score for a ground-truth label exceeds 0.5."""

import numpy as np

from wsk.errors import WskError
from wsk.recipes import PseudoConfig


def hcp_column(label):
    """The HCP output column of dataset class ``label``.

    HCP has one output per *object* class (no background), so dataset class ``k``
    (1-based, 0 being background) is HCP column ``k - 1``.
    """
    if label < 1:
        raise WskError(f"class index {label} is not an object class (background is 0)")
    return int(label) - 1


def select_candidates(scores, labels, threshold=PseudoConfig.candidate_threshold):
    """Select the object candidates of one image (§3.1).

    ``scores`` is the ``(P, C)`` HCP softmax of the image's ``P`` proposals over the ``C``
    object classes; ``labels`` are the image's ground-truth classes as dataset indices
    (1-based). For each label, in the order given, the proposals are ranked by their score
    for that label in descending order (ties: lower proposal index first) and those whose
    score is strictly greater than ``threshold`` are kept.

    Returns ``(candidates, candidate_labels)``: two ``(K,)`` int32 arrays, the proposal
    index and the dataset class of each candidate. A proposal may be a candidate of
    several labels (then it appears once per label).
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise WskError(f"proposal scores must be (proposals, classes), got shape {scores.shape}")
    candidates, candidate_labels = [], []
    for label in labels:
        column = hcp_column(label)
        if column >= scores.shape[1]:
            raise WskError(f"class {label} has no HCP output (the model has {scores.shape[1]} classes)")
        values = scores[:, column]
        order = np.argsort(-values, kind="stable")
        chosen = order[values[order] > threshold]
        candidates.append(chosen)
        candidate_labels.append(np.full(len(chosen), label))
    if not candidates:
        return np.zeros(0, np.int32), np.zeros(0, np.int32)
    return (np.concatenate(candidates).astype(np.int32),
            np.concatenate(candidate_labels).astype(np.int32))


def negatives_per_class(config):
    """How many false alarms per absent class the scoring stage keeps (``select_negatives``): the
    config's ``refine_negatives`` for the ``contrast`` refinement order, else none."""
    return int(config.refine_negatives) if config.refine_order == "contrast" else 0


def select_negatives(scores, labels, count):
    """The false alarms of one image: for each object class that is *not* among its ``labels``
    (dataset indices, 1-based), the ``count`` proposals of highest score for that class (ties: lower
    proposal index first), classes in increasing order. None of them can hold the class, whatever
    they score: the image does not. The contrast refinement (``wsk.pseudo.refinement``) compares
    each candidate with the class's false alarms in the images without it.

    Returns ``(negatives, negative_labels)``: two ``(M,)`` int32 arrays, the proposal index and the
    dataset class of each false alarm.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise WskError(f"proposal scores must be (proposals, classes), got shape {scores.shape}")
    present = {hcp_column(label) for label in labels}
    negatives, negative_labels = [], []
    for column in range(scores.shape[1]):
        if column in present or count <= 0:
            continue
        chosen = np.argsort(-scores[:, column], kind="stable")[:count]
        negatives.append(chosen)
        negative_labels.append(np.full(len(chosen), column + 1))
    if not negatives:
        return np.zeros(0, np.int32), np.zeros(0, np.int32)
    return (np.concatenate(negatives).astype(np.int32),
            np.concatenate(negative_labels).astype(np.int32))
