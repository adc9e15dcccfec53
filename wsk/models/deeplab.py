"""DeepLab-LargeFOV [7], the segmentation network of §3.3 (Network_A and Network_B).

Layer by layer as DeepLab's ``train.prototxt`` for the LargeFOV model:

=========  ==========================================================
conv1-4    VGG-16 3x3 convolutions + ReLU
pool1-3    max 3x3, stride 2, pad 1 (Caffe ceil mode)
pool4      max 3x3, stride 1, pad 1
conv5      3x3, dilation 2 + ReLU
pool5      max 3x3, stride 1, pad 1
pool5a     average 3x3, stride 1, pad 1 (padding counted in the divisor)
fc6        3x3, dilation 12, 1024 channels + ReLU, dropout 0.5
fc7        1x1, 1024 channels + ReLU, dropout 0.5
fc8        1x1, ``num_classes`` channels, Gaussian init (std 0.01): the logits
=========  ==========================================================

The logits are at output stride 8: 321 -> 41, 353 -> 45, 513 -> 65.

``output_stride=4`` computes the same filters twice as densely, by DeepLab's own means (the
"hole" algorithm of [7], §3.1, which turned VGG-16's stride 32 into 8): pool3 keeps stride 1,
and every convolution after it doubles its dilation (conv4 2, conv5 4, fc6 24), so each still
spans the pixels it spans at stride 8 (the 3x3 stride-1 pools after pool3 span half as many, as
pool4 and pool5 already do at stride 8). The weights keep their shapes, so a trunk trained at one
stride loads at the other. The logits sit on every fourth pixel: 65 -> 17, 321 -> 81.
"""

import keras

from wsk.models.imagenet import load_into_deeplab
from wsk.models.layers import AtrousConv2D, CaffePooling2D, caffe_pool_size
from wsk.models.pretrained import apply_weights
from wsk.models.vgg import conv_blocks, scaled

OUTPUT_STRIDE = 8   # DeepLab-LargeFOV's: one logit per 8 input pixels
# output stride -> (stride, pad) of the 3x3 max pools pool1..pool5, the dilation of the convolutions
# of blocks 1..5, and fc6's dilation; the pool strides multiply to the output stride
LAYOUTS = {
    8: (((2, 1), (2, 1), (2, 1), (1, 1), (1, 1)), (1, 1, 1, 1, 2), 12),
    4: (((2, 1), (2, 1), (1, 1), (1, 1), (1, 1)), (1, 1, 1, 2, 4), 24),
}
FC_CHANNELS = 1024
DROPOUT = 0.5


def _layout(output_stride):
    if output_stride not in LAYOUTS:
        raise ValueError(f"DeepLab-LargeFOV's output stride is one of {sorted(LAYOUTS)}, not {output_stride!r}")
    return LAYOUTS[output_stride]


def deeplab_output_size(size, output_stride=OUTPUT_STRIDE):
    """The side of DeepLab-LargeFOV's logits for an input side ``size`` (Caffe ceil-mode pools).

    ``(size - 1) // s + 1`` for output stride ``s`` when ``size % s == 1`` (321, 353, 513, ...);
    other sizes can give one more, as Caffe does.
    """
    for stride, pad in _layout(output_stride)[0]:
        size = caffe_pool_size(size, 3, stride, pad)
    return size


def deeplab_largefov(num_classes=21, input_shape=(None, None, 3), backbone_weights=None, width=1.0,
                     weights=None, dropout=DROPOUT, output_stride=OUTPUT_STRIDE):
    """Build DeepLab-LargeFOV: preprocessed BGR image ``(N, H, W, 3)`` -> logits ``(N, h, w, C)``.

    ``backbone_weights``: None (He-initialised), ``"imagenet"`` (Keras's VGG-16 ImageNet
    weights, fc6/fc7 decimated as DeepLab does) or the path of a saved VGG-16 weights file.
    ``width`` scales every channel count except the logits (small CPU variants); ``dropout`` is
    the rate after fc6 and fc7 (0.5 in DeepLab; it acts in training only). ``output_stride``: 8
    (DeepLab-LargeFOV) or 4 (the same filters, twice as densely; see the module docstring).
    With 21 classes and width 1.0 the model has 20,505,429 parameters.
    ``weights``: the name of a ``wsk.zoo`` card whose trained weights are loaded (fetched
    into the Keras cache with their sha256 checked), as ``keras.applications`` takes "imagenet".
    """
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    pools, dilations, fc6_dilation = _layout(output_stride)
    x = inputs
    for block, (convs, (stride, pad)) in enumerate(zip(conv_blocks(width, dilations), pools), start=1):
        for conv in convs:
            x = conv(x)
        x = CaffePooling2D("max", 3, stride, pad, name=f"pool{block}")(x)
    x = CaffePooling2D("avg", 3, 1, 1, name="pool5a")(x)
    x = AtrousConv2D(scaled(FC_CHANNELS, width), 3, padding="same", dilation_rate=fc6_dilation,
                     activation="relu", kernel_initializer="he_normal", name="fc6")(x)
    x = keras.layers.Dropout(dropout, name="drop6")(x)
    x = keras.layers.Conv2D(scaled(FC_CHANNELS, width), 1, activation="relu",
                            kernel_initializer="he_normal", name="fc7")(x)
    x = keras.layers.Dropout(dropout, name="drop7")(x)
    logits = keras.layers.Conv2D(num_classes, 1,
                                 kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                                 name="fc8")(x)
    model = keras.Model(inputs, logits, name="deeplab_largefov")
    return apply_weights(model, backbone_weights, weights, load_into_deeplab)
