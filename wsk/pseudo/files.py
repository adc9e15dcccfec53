"""The files the pseudo-label stages write and read (``wsk.pseudo.stage``): their versions, keys,
and the reader of an image's kept proposals (light: worker processes import it)."""

from wsk import storage
from wsk.errors import WskError
from wsk.io import load_json

SCORES_VERSION = 1
LOCMAP_VERSION = 1
REFINED_VERSION = 2          # 1: one refined.json for the whole split (wsk 0.1)
STATISTICS_VERSION = 2       # 1: no calibrated thresholds (wsk 0.2)
SCORE_KEYS = ("version", "scores", "candidates", "candidate_labels", "features", "mode", "threshold",
              "inputs")
# kept by the contrast refinement order only (``wsk.pseudo.candidates.select_negatives``): the false
# alarms of the classes an image lacks, and their fc7 features; ``negatives_per_class`` says how many
NEGATIVE_KEYS = ("negatives_per_class", "negatives", "negative_labels", "negative_features")
LOCMAP_KEYS = ("version", "maps", "labels")
STATISTICS_KEYS = ("version", "settings", "scores_digest", "pca_dims", "mean", "components", "labels",
                   "images", "means", "meansq", "thresholds")
# Eq. 1's totals of the false alarms (``NEGATIVE_KEYS``), for the contrast order only
NEGATIVE_STATISTICS_KEYS = ("negative_labels", "negative_images", "negative_means", "negative_meansq")


def read_refined(path):
    """The record ``refined/<id>.json`` at ``path`` (``{version, made_from, kept, fallback}``), or
    None when it is missing, damaged or of another version."""
    if not storage.exists(path):
        return None
    try:
        data = load_json(path)
    except WskError:
        return None
    if not isinstance(data, dict) or data.get("version") != REFINED_VERSION:
        return None
    if not isinstance(data.get("kept"), dict) or not isinstance(data.get("made_from"), dict):
        return None
    return data


def kept_entry(path):
    """``{"<label>": [proposal indices, best first]}`` of one image's refinement record; a
    missing or damaged record is a ``WskError`` (rerun ``wsk pseudo``)."""
    data = read_refined(path)
    if data is None:
        raise WskError("missing or damaged refinement record (rerun `wsk pseudo`)", path)
    return data["kept"]
