"""The VGG-16 convolutional trunk (conv1_1 ... conv5_3) shared by DeepLab-LargeFOV and HCP.

Layers are named as in the Caffe prototxts (``conv{block}_{i}``) so that weights, optimizer
multiplier patterns and model surgery address them the same way in both networks.
``width`` scales every channel count for the small CPU variants; the structure is unchanged.
"""

import keras

# (output channels, number of 3x3 convolutions) for blocks 1..5 of VGG-16 [Simonyan & Zisserman].
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))

# Root mean square of preprocessed pixels (BGR minus mean), measured on VOC photographs (~72).
# Random (non-ImageNet) initialisation divides conv1_1's He variance by its square so that
# activations start near unit scale instead of pixel scale; ImageNet weights replace it.
# Training such a conv1_1 needs the matching learning-rate multipliers
# (``from_scratch_multipliers``), or its steps are PIXEL_RMS**2 times too large.
PIXEL_RMS = 72.0


def _initializer(name):
    """He-normal, with conv1_1 scaled for pixel-valued inputs (see ``PIXEL_RMS``)."""
    scale = 2.0 / PIXEL_RMS**2 if name == "conv1_1" else 2.0
    return keras.initializers.VarianceScaling(scale=scale, mode="fan_in",
                                              distribution="truncated_normal")


def from_scratch_multipliers():
    """``[(pattern, lr_mult, decay_mult)]`` for SGD on a randomly initialised trunk.

    The input is in pixel units (RMS ``PIXEL_RMS``) and conv1_1 is initialised ``PIXEL_RMS``
    times smaller than He; its gradient is therefore ``PIXEL_RMS`` times larger, so one SGD
    step changes it ``PIXEL_RMS**2`` times more, relative to its size, than any other layer
    (with lr 0.01 the first steps destroy it and the network dies). Training ``w`` with
    ``lr_mult = 1 / PIXEL_RMS**2`` and ``decay_mult = PIXEL_RMS**2`` is exactly SGD (with L2
    decay) on ``w' = PIXEL_RMS * w`` fed with unit-scale images, as the initialisation intends.
    Put these rules before the others (``wsk.optimizers.CaffeSGD``: the first match wins).
    Not for ImageNet weights, which were trained on pixel-valued inputs at multiplier 1.
    """
    return [(r"(^|/)conv1_1/kernel$", 1.0 / PIXEL_RMS**2, PIXEL_RMS**2)]


def scaled(channels, width):
    """``channels`` scaled by ``width`` (rounded, at least 1): the channel count of a variant."""
    if not width > 0:
        raise ValueError(f"width must be positive, not {width!r}")
    return max(1, int(round(channels * width)))


def block_conv_names():
    """The convolution names of blocks 1..5: ``[["conv1_1", "conv1_2"], ..., [..., "conv5_3"]]``."""
    return [[f"conv{b}_{i}" for i in range(1, n + 1)] for b, (_, n) in enumerate(VGG16_BLOCKS, start=1)]


def conv_names():
    """The 13 convolution names in order: ``conv1_1, conv1_2, conv2_1, ..., conv5_3``."""
    return [name for names in block_conv_names() for name in names]


def conv_blocks(width=1.0, dilations=(1, 1, 1, 1, 1)):
    """The VGG-16 convolutions as five lists of ``Conv2D`` layers (3x3, ReLU, "same" padding).

    ``dilations[b]`` is the dilation rate of block ``b + 1``; DeepLab-LargeFOV dilates block 5
    by 2 (Caffe pad 2 = "same" for a 3x3 kernel dilated by 2).
    """
    return [
        [keras.layers.Conv2D(scaled(channels, width), 3, padding="same", dilation_rate=rate,
                             activation="relu", kernel_initializer=_initializer(name), name=name)
         for name in names]
        for names, (channels, _), rate in zip(block_conv_names(), VGG16_BLOCKS, dilations)
    ]
