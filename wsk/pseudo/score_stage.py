"""Proposal scoring (§3.1): every proposal of an image scored by the trained HCP,
``WORK/scores/<id>.npz`` (softmax, candidates above the threshold, their fc7 features; for the
contrast refinement order also the false alarms of the classes the image lacks and their features).

The candidates' features are stored as float16 (half the disk of float32, which older files
hold; both read alike). Measured on the demo's 360 training images (20,934 candidates): the
streamed refinement keeps the same proposals for 562 of 580 image labels as from float32, the
others swap near-tied candidates; float32 PCA (wsk 0.1) itself differed from float64 on 28.
"""

import numpy as np

from wsk import storage
from wsk.errors import WskError
from wsk.io import file_stamp, save_npz
from wsk.models.saving import load_model
from wsk.proposals.container import Proposals
from wsk.pseudo.candidates import select_candidates, select_negatives
from wsk.pseudo.files import NEGATIVE_KEYS, SCORE_KEYS, SCORES_VERSION
from wsk.stages import readable_npz

FLOAT16_MAX = float(np.finfo(np.float16).max)   # fc7 features are ReLU outputs: only the top can overflow


def load_hcp_model(path):
    """The trained HCP model saved at ``path`` (``WorkDir.hcp_model``, by ``wsk train hcp``)."""
    if not storage.isfile(path):
        raise WskError("HCP model not found (train it first: `wsk train hcp ROOT WORK`)", path)

    return load_model(path)


def score_inputs(workdir, image_id):
    """The stamp of what an image's scores are made from: the HCP model and its proposals."""
    return file_stamp(workdir.hcp_model, workdir.proposals(image_id))


def scores_valid(path, mode, threshold, inputs, negatives=0):
    """Whether ``path`` holds a scores file of this version, scoring mode and threshold, computed
    from the inputs stamped ``inputs`` (a retrained HCP or new proposals make it stale), with
    ``negatives`` false alarms per absent class where any are asked for (a file without them, or
    with another count, is stale then; files of the other orders may hold them or not)."""
    arrays = readable_npz(path, SCORE_KEYS)
    if arrays is None or not (int(arrays["version"]) == SCORES_VERSION and str(arrays["mode"]) == mode
                              and bool(np.isclose(float(arrays["threshold"]), threshold))
                              and str(arrays["inputs"]) == inputs):
        return False
    return not negatives or (all(key in arrays for key in NEGATIVE_KEYS)
                             and int(arrays["negatives_per_class"]) == negatives)


def score_image(scorer, dataset, workdir, image_id, threshold, negatives=0):
    """Score every proposal of one image and write ``WORK/scores/<id>.npz`` (§3.1), with the
    ``negatives`` false alarms of each absent class (``select_negatives``) when asked."""
    proposals_path = workdir.proposals(image_id)
    proposals = Proposals.load(proposals_path)
    image = dataset.image(image_id)
    if tuple(image.shape[:2]) != tuple(proposals.shape):
        raise WskError(f"proposals of size {proposals.shape} do not fit the {image.shape[:2]} image "
                       "(recompute the proposals)", proposals_path)
    scores, features = scorer(image, proposals.boxes, proposals)
    labels = dataset.labels(image_id)
    candidates, candidate_labels = select_candidates(scores, labels, threshold)
    extra = {}
    if negatives:
        rows, row_labels = select_negatives(scores, labels, negatives)
        extra = {"negatives_per_class": np.int32(negatives), "negatives": rows, "negative_labels": row_labels,
                 "negative_features": half_features(features[rows])}
    save_npz(workdir.scores(image_id), version=np.int32(SCORES_VERSION), scores=scores,
             candidates=candidates, candidate_labels=candidate_labels,
             features=half_features(features[candidates]), mode=np.array(scorer.mode),
             threshold=np.float32(threshold), inputs=np.array(score_inputs(workdir, image_id)), **extra)


def half_features(features):
    """fc7 features as float16 for the scores file (the largest clipped to float16's range)."""
    return np.minimum(features, FLOAT16_MAX).astype(np.float16)
