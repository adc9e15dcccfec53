"""ImageNet VGG-16 -> DeepLab-LargeFOV / HCP weights (§4.2: both networks start from VGG-16 [18]).

The source is ``keras.applications.VGG16(include_top=True)``: ImageNet weights from the Keras
cache (downloaded on first use) or a saved VGG-16 weights file. Its layers map as

* ``block{b}_conv{i}`` -> ``conv{b}_{i}`` (copied);
* DeepLab: ``fc1`` (7x7x512 -> 4096) -> ``fc6`` by decimation, as DeepLab does for LargeFOV:
  spatial taps 0, 3, 6 and every 4th output channel give a 3x3x512x1024 kernel (used with
  dilation 12); ``fc2`` -> ``fc7`` keeps every 4th input and output channel (1x1x1024x1024);
* HCP: ``fc1`` -> ``fc6`` and ``fc2`` -> ``fc7`` copied unchanged (224 x 224 inputs).

``fc8`` / ``predictions`` (the 1000-way classifier) is never used: fc8 keeps its Gaussian init.
"""

import os

import keras
import numpy as np

from wsk.errors import WskError
from wsk.models.vgg import conv_names

FC6_TAPS = (0, 3, 6)   # rows/columns of the 7x7 fc1 kernel kept for the 3x3 fc6
FC_DECIMATION = 4      # 4096 -> 1024 channels


def keras_vgg16_name(name):
    """The Keras VGG-16 name of a Caffe-named layer: ``conv3_2`` -> ``block3_conv2``."""
    block, i = name[len("conv"):].split("_")
    return f"block{block}_conv{i}"


def load_vgg16(weights):
    """The Keras VGG-16 with its top, with ``weights``: ``"imagenet"`` or a weights file path."""
    if weights == "imagenet":
        try:
            return keras.applications.VGG16(weights="imagenet", include_top=True)
        except OSError as err:  # no network and nothing in the Keras cache
            raise WskError("could not get the ImageNet VGG-16 weights into the Keras cache "
                           f"(~/.keras/models; {err}); give the path of a saved VGG-16 instead"
                           ) from err
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise WskError("VGG-16 weights file not found (give 'imagenet' or a saved VGG-16)", path)
    model = keras.applications.VGG16(weights=None, include_top=True)
    try:
        model.load_weights(path)
    except Exception as err:  # any loader failure means the file is not a VGG-16
        raise WskError(f"not a Keras VGG-16 weights file ({type(err).__name__}: {err})", path) from err
    return model


def vgg16_arrays(weights):
    """``{name: [kernel, bias]}`` of VGG-16 as NumPy arrays, keyed by Keras layer name."""
    vgg = load_vgg16(weights)
    names = [keras_vgg16_name(n) for n in conv_names()] + ["fc1", "fc2"]
    return {name: [np.asarray(w) for w in vgg.get_layer(name).get_weights()] for name in names}


def decimate_fc6(kernel, bias):
    """fc1 ``(25088, 4096)`` -> DeepLab fc6 ``(3, 3, 512, 1024)``: taps 0, 3, 6, every 4th output."""
    kernel = kernel.reshape(7, 7, -1, kernel.shape[-1])
    taps = list(FC6_TAPS)
    return kernel[taps][:, taps][..., ::FC_DECIMATION], bias[::FC_DECIMATION]


def decimate_fc7(kernel, bias):
    """fc2 ``(4096, 4096)`` -> DeepLab fc7 ``(1, 1, 1024, 1024)``: every 4th input and output."""
    kernel = kernel[::FC_DECIMATION, ::FC_DECIMATION]
    return kernel.reshape((1, 1) + kernel.shape), bias[::FC_DECIMATION]


def _check_shapes(model, name, shapes, weights):
    """Refuse, naming the weights, a layer whose weight shapes are not ``shapes``."""
    have = [tuple(w.shape) for w in model.get_layer(name).weights]
    if have != [tuple(s) for s in shapes]:
        raise WskError(f"cannot load VGG-16 into layer {name}: it has shapes {have}, the "
                       f"converted weights {[tuple(s) for s in shapes]} (ImageNet weights need "
                       "width=1.0 and, for HCP, 224x224 hypotheses)",
                       None if weights == "imagenet" else weights)


def _assign(model, name, arrays, weights):
    _check_shapes(model, name, [a.shape for a in arrays], weights)
    model.get_layer(name).set_weights(arrays)


def _assign_convs(model, source, weights):
    for name in conv_names():
        _assign(model, name, source[keras_vgg16_name(name)], weights)


def load_into_deeplab(model, weights):
    """Set a DeepLab-LargeFOV's conv1-5, fc6, fc7 from VGG-16 (fc6/fc7 decimated); fc8 untouched."""
    _check_shapes(model, "fc6", [(3, 3, 512, 1024), (1024,)], weights)  # before any download
    source = vgg16_arrays(weights)
    _assign_convs(model, source, weights)
    _assign(model, "fc6", decimate_fc6(*source["fc1"]), weights)
    _assign(model, "fc7", decimate_fc7(*source["fc2"]), weights)
    return model


def load_into_hcp(model, weights):
    """Set an HCP's conv1-5, fc6, fc7 from VGG-16 (copied unchanged); fc8 untouched."""
    _check_shapes(model, "fc6", [(7 * 7 * 512, 4096), (4096,)], weights)  # before any download
    source = vgg16_arrays(weights)
    _assign_convs(model, source, weights)
    _assign(model, "fc6", source["fc1"], weights)
    _assign(model, "fc7", source["fc2"], weights)
    return model


def is_vgg16_source(backbone_weights):
    """Whether ``backbone_weights`` names Keras's ImageNet VGG-16 ("imagenet" or a saved VGG-16
    file), which takes pixel-scale inputs, rather than a wsk-trained trunk (a zoo name)."""
    if backbone_weights is None:
        return False
    path = os.fspath(backbone_weights)
    return (path == "imagenet" or os.path.exists(path) or os.sep in path
            or path.endswith((".h5", ".keras")))
