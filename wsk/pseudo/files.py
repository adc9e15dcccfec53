"""The files the pseudo-label stages write and read (``wsk.pseudo.stage``): their versions, keys,
and ``refined.json``'s reader (light: worker processes import it)."""

import os

from wsk.errors import WskError
from wsk.io import load_json

SCORES_VERSION = 1
LOCMAP_VERSION = 1
REFINED_VERSION = 1
SCORE_KEYS = ("version", "scores", "candidates", "candidate_labels", "features", "mode", "threshold",
              "inputs")
LOCMAP_KEYS = ("version", "maps", "labels")
_REFINED_CACHE = {}


def read_refined(path):
    """The contents of ``refined.json`` at ``path``, or None when it is missing, damaged or of
    another version."""
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


def refined_images(path):
    """``images`` of ``refined.json``, read once per process (per file version)."""
    key = (path, os.stat(path).st_mtime_ns)
    if key not in _REFINED_CACHE:
        data = read_refined(path)
        if data is None:
            raise WskError("damaged refinement file (rerun `wsk pseudo`)", path)
        _REFINED_CACHE.clear()
        _REFINED_CACHE[key] = data["images"]
    return _REFINED_CACHE[key]
