"""What a trained model was made from, as one digest in its sidecar: a rerun retrains exactly when
the recipe, the starting trunk, or an input file (targets, proposals, images) or label changed."""

import dataclasses
import hashlib
import json

from wsk import storage
from wsk.errors import WskError
from wsk.io import file_stamp
from wsk.models.imagenet import is_vgg16_source
from wsk.models.saving import read_sidecar
from wsk.recipes import HCP_BACKBONE
from wsk.registry import get_card



def backbone_stamp(backbone_weights):
    """What a recipe's starting trunk is: a zoo card's sha256, a file's stamp, or the name itself
    (a retrained trunk card makes every model trained from it stale)."""
    if backbone_weights in (None, "imagenet", HCP_BACKBONE):
        return backbone_weights
    if is_vgg16_source(backbone_weights):
        return file_stamp(backbone_weights)
    return get_card(backbone_weights)["weights"]["sha256"]


def inputs_digest(recipe, files=(), extra=None):
    """A digest of what a model is trained from: the recipe, its starting trunk, the stamp of its
    input files (targets, proposals) and ``extra`` (e.g. the image-level labels)."""
    text = json.dumps({"recipe": dataclasses.asdict(recipe), "files": file_stamp(*files),
                       "backbone": backbone_stamp(recipe.backbone_weights), "extra": extra}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def up_to_date(model_path, digest, printer):
    """Whether ``model_path`` exists and its sidecar says it was trained from ``digest``."""
    if not storage.exists(model_path):
        return False
    try:
        recorded = (read_sidecar(model_path) or {}).get("inputs_digest")
    except WskError:
        recorded = None
    if recorded == digest:
        printer(f"{model_path} exists: not retrained (use --force to retrain)")
        return True
    printer(f"{model_path} was trained with another recipe or other targets: retraining")
    return False
