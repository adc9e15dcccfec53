"""The pseudo labels' last two steps, one image at a time (worker processes run these; nothing
here imports Keras, except the dense CRF over the rough masks where a recipe asks for it):
localization maps (§3.3.1, Eq. 2) ``locmaps/<id>.npz`` and rough masks (§3.3.2, Eq. 5)
``masks/<id>.png``, each recording what it was made from."""

import json

import numpy as np

from wsk import storage
from wsk.errors import WskError
from wsk.io import file_stamp, label_png_made_from, load_npz, read_label_png, save_npz, write_label_png
from wsk.proposals.container import Proposals
from wsk.pseudo.files import LOCMAP_KEYS, LOCMAP_VERSION, kept_entry
from wsk.pseudo.localization import localization_maps
from wsk.pseudo.rough_masks import crf_rough_mask, rough_masks
from wsk.stages import readable_npz
from wsk.workdir import WorkDir


def locmap_made_from(workdir, image_id):
    """What an image's localization maps are made from: its kept proposals (``refined/<id>.json``)
    and the stamp of its proposals file."""
    return {"kept": kept_entry(workdir.refined(image_id)), "proposals": file_stamp(workdir.proposals(image_id))}


def locmap_valid(path, made_from=None):
    """Whether ``path`` holds maps of this version (made from ``made_from``, when given)."""
    arrays = readable_npz(path, LOCMAP_KEYS)
    if arrays is None or int(arrays["version"]) != LOCMAP_VERSION:
        return False
    if made_from is None:
        return True
    return "made_from" in arrays and json.loads(str(arrays["made_from"])) == made_from


def map_image(work, refine, num_classes, image_id):
    """Write ``locmaps/<id>.npz``: the image's Eq. 2 maps from its kept proposals."""
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


def mask_made_from(workdir, top, vote, image_id, crf=False):
    """What an image's rough mask is made from: its maps, its scores, Eq. 5's region count, how
    the regions are combined (``vote``) and whether a dense CRF followed (``crf``). ``vote`` and
    ``crf`` are recorded only when not the paper's (a union, no CRF), so that masks made before
    they existed stay valid."""
    made_from = {"locmap": file_stamp(workdir.locmap(image_id)), "scores": file_stamp(workdir.scores(image_id)),
                 "top": int(top)}
    if vote:
        made_from["vote"] = float(vote)
    if crf:
        made_from["crf"] = True
    return made_from


def mask_valid(path, made_from=None):
    """Whether ``path`` is a readable mask (made from ``made_from``, when given)."""
    if not storage.exists(path):
        return False
    try:
        read_label_png(path)
    except WskError:
        return False
    return made_from is None or label_png_made_from(path) == made_from


def mask_image(work, refine, top, vote, image_id, image=None):
    """Write ``masks/<id>.png``: the image's Eq. 5 rough mask as a palette PNG; where ``image``
    (its ``(H, W, 3)`` uint8 pixels) is given, after a dense CRF (``crf_rough_mask``)."""
    workdir = WorkDir(work, refine)
    proposals = Proposals.load(workdir.proposals(image_id))
    scores = load_npz(workdir.scores(image_id), required=("scores",))["scores"]
    locmap = load_npz(workdir.locmap(image_id), required=LOCMAP_KEYS)
    mask = rough_masks(proposals, scores, locmap["maps"], locmap["labels"], top, vote)
    if image is not None:
        mask = crf_rough_mask(image, mask, locmap["maps"], locmap["labels"])
    write_label_png(workdir.mask(image_id), mask,
                    made_from=mask_made_from(workdir, top, vote, image_id, crf=image is not None))
