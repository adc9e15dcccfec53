"""Where a builder's starting weights come from: ImageNet, a saved VGG-16, a pretrained trunk or a
trained model of the zoo, or (the demo) the HCP trained on its images (§3.1).

The builders' two options, as in ``keras.applications``: ``backbone_weights`` sets the VGG-16
trunk ("imagenet" or a saved VGG-16 file, converted by ``wsk.models.imagenet``; any other string
is a trunk card of the zoo, such as ``hcp_vgg16.corpus64``), then ``weights``, a zoo card whose
trained weights replace them all.
"""

from wsk import storage
from wsk.errors import WskError
from wsk.models.imagenet import is_vgg16_source
from wsk.models.saving import copy_layers, load_model, load_weights_file
from wsk.models.tasks import model_task
from wsk.models.vgg import conv_names
from wsk.registry import fetch


def load_trunk(model, name):
    """Copy conv1_1 ... conv5_3 of the zoo model ``name`` (a pretrained trunk card) into ``model``,
    and fc6/fc7 too when ``model`` is an HCP (DeepLab's fc6 is a dilated convolution, not HCP's
    dense layer: it keeps its init). The trunk's fc8 (its corpus classes) is never copied."""
    source = load_model(fetch(name))
    names = list(conv_names())
    if model_task(model) == "classification":   # an HCP
        names += ["fc6", "fc7"]
    return copy_layers(model, source, names, f"trunk {name}")


def copy_hcp_trunk(model, hcp_path):
    """Copy conv1_1 ... conv5_3 of the trained HCP at ``hcp_path`` into ``model`` (DeepLab-LargeFOV).

    The demo's stand-in for ImageNet initialisation: HCP is the same VGG-16 trunk, trained in
    on the same images' labels (§3.1). fc6/fc7 stay freshly initialised.
    """
    if not storage.exists(hcp_path):
        raise WskError("the recipe initialises the segmentation trunk from HCP, which is not trained "
                       "yet (run `wsk train hcp` first)", hcp_path)
    return copy_layers(model, load_model(hcp_path), conv_names(), hcp_path)


def apply_weights(model, backbone_weights, weights, convert):
    """Apply a builder's ``backbone_weights`` (through ``convert``, ``load_into_deeplab`` or
    ``load_into_hcp``, for ImageNet; ``load_trunk`` for a zoo trunk), then ``weights`` (a zoo card
    name). Returns ``model``."""
    if is_vgg16_source(backbone_weights):
        convert(model, backbone_weights)
    elif backbone_weights is not None:
        load_trunk(model, backbone_weights)
    if weights is not None:
        load_weights_file(model, fetch(weights), weights)
    return model
