"""Hypotheses-CNN-Pooling (HCP) [30], the multi-label classifier of §3.1 (Fig. 2).

A shared VGG-16 (conv1-5, fc6 4096, fc7 4096, both with dropout, fc8 ``num_classes``)
scores every hypothesis of an image; a softmax per hypothesis and a cross-hypothesis
max-pooling give the image's multi-label prediction. Image fine-tuning is the same model
with one hypothesis, the whole image.

For the pseudo-label stage (§3.1-§3.2) the same layers are rewired, sharing weights:
``hcp_hypothesis_model`` gives per-hypothesis softmax scores and the 4096-d fc7 features,
``hcp_parts`` splits the network at conv5_3 so that region pooling of one trunk pass can
feed the head.
"""

import keras
from keras import ops

from wsk.errors import WskError
from wsk.models.imagenet import load_into_hcp
from wsk.models.layers import CaffePooling2D
from wsk.models.pretrained import apply_weights
from wsk.models.vgg import block_conv_names, conv_blocks, scaled

FC_CHANNELS = 4096
DROPOUT = 0.5
TRUNK_STRIDE = 16   # conv5_3, before pool5
NET_STRIDE = 32     # after pool5


@keras.saving.register_keras_serializable(package="wsk")
class FoldHypotheses(keras.layers.Layer):
    """``(B, M, S, S, 3)`` -> ``(B*M, S, S, 3)``: every hypothesis becomes one sample."""

    def call(self, inputs):
        return ops.reshape(inputs, (-1,) + tuple(inputs.shape[2:]))

    def compute_output_shape(self, input_shape):
        b, m = input_shape[:2]
        return (None if b is None or m is None else b * m,) + tuple(input_shape[2:])


@keras.saving.register_keras_serializable(package="wsk")
class CrossHypothesisMaxPooling(keras.layers.Layer):
    """Cross-hypothesis max-pooling (Fig. 2): scores ``(B*M, C)`` -> ``(B, C)``, max over the M.

    Called on ``[scores, hypotheses]``; the hypotheses tensor ``(B, M, ...)`` only gives M.
    """

    def call(self, inputs):
        scores, hypotheses = inputs
        m = ops.shape(hypotheses)[1]
        return ops.max(ops.reshape(scores, (-1, m, scores.shape[-1])), axis=1)

    def compute_output_shape(self, input_shape):
        scores_shape, hyp_shape = input_shape
        return (hyp_shape[0], scores_shape[-1])


def _trunk(x, layer):
    """conv1_1 ... conv5_3 with pool1..pool4 between the blocks (``layer(name)`` gives a layer)."""
    for block, names in enumerate(block_conv_names(), start=1):
        for name in names:
            x = layer(name)(x)
        if block < 5:
            x = layer(f"pool{block}")(x)
    return x


def _head(x, layer):
    """pool5, fc6, fc7 (the features) and fc8 + softmax (the scores)."""
    x = layer("pool5")(x)
    x = layer("flatten")(x)
    x = layer("drop6")(layer("fc6")(x))
    features = layer("fc7")(x)
    scores = layer("prob")(layer("fc8")(layer("drop7")(features)))
    return {"scores": scores, "features": features}


def _layers(num_classes, width):
    """All HCP layers by name (Caffe names: conv1_1..conv5_3, pool1..pool5, fc6, fc7, fc8)."""
    layers = {conv.name: conv for block in conv_blocks(width) for conv in block}
    for block in range(1, 6):
        layers[f"pool{block}"] = CaffePooling2D("max", 2, 2, 0, name=f"pool{block}")
    layers["flatten"] = keras.layers.Flatten(name="flatten")
    for name in ("fc6", "fc7"):
        layers[name] = keras.layers.Dense(scaled(FC_CHANNELS, width), activation="relu",
                                          kernel_initializer="he_normal", name=name)
    layers["drop6"] = keras.layers.Dropout(DROPOUT, name="drop6")
    layers["drop7"] = keras.layers.Dropout(DROPOUT, name="drop7")
    layers["fc8"] = keras.layers.Dense(num_classes,
                                       kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                                       name="fc8")
    layers["prob"] = keras.layers.Softmax(name="prob")
    return layers


def hcp(num_classes=20, hypotheses=None, image_size=224, backbone_weights=None, width=1.0, weights=None):
    """Build HCP: preprocessed hypotheses ``(B, M, S, S, 3)`` -> ``(B, num_classes)``.

    The output is the max over the M hypotheses of each hypothesis's softmax (Fig. 2).
    ``hypotheses`` fixes M (None: any); ``image_size`` S must be a multiple of 32.
    ``backbone_weights``: None, ``"imagenet"`` or a saved VGG-16 weights file (fc6/fc7 copied;
    needs S = 224 and width 1.0). ``weights``: a ``wsk.zoo`` card name whose trained weights are loaded.
    """
    if image_size % NET_STRIDE:
        raise WskError(f"HCP image_size must be a multiple of {NET_STRIDE}, not {image_size}")
    layers = _layers(num_classes, width)
    inputs = keras.Input(shape=(hypotheses, image_size, image_size, 3), name="hypotheses")
    folded = FoldHypotheses(name="fold_hypotheses")(inputs)
    scores = _head(_trunk(folded, layers.__getitem__), layers.__getitem__)["scores"]
    outputs = CrossHypothesisMaxPooling(name="cross_hypothesis_max_pooling")([scores, inputs])
    model = keras.Model(inputs, outputs, name="hcp")
    return apply_weights(model, backbone_weights, weights, load_into_hcp)


def hcp_image_size(model):
    """The hypothesis side S of an HCP model (its input is ``(B, M, S, S, 3)``)."""
    return model.input_shape[-2]


def hcp_hypothesis_model(model):
    """The shared CNN of ``model`` alone: ``(N, S, S, 3)`` -> ``{"scores": (N, C), "features": (N, D)}``.

    ``scores`` are the per-hypothesis softmax, ``features`` the fc7 activations (D = 4096 at
    width 1.0, §3.2). Weights are shared with ``model``.
    """
    size = hcp_image_size(model)
    inputs = keras.Input(shape=(size, size, 3), name="hypothesis")
    outputs = _head(_trunk(inputs, model.get_layer), model.get_layer)
    return keras.Model(inputs, outputs, name="hcp_hypothesis")


def hcp_parts(model):
    """Split ``model`` at conv5_3 into ``(trunk, head)``, sharing its weights.

    ``trunk``: ``(N, H, W, 3)`` preprocessed images of any size -> conv5_3 features (stride 16).
    ``head``: ``(N, S/16, S/16, C5)`` region features -> ``{"scores", "features"}``; it applies
    pool5 itself, so ``head(trunk(x))`` equals the hypothesis model on S x S inputs.
    """
    size = hcp_image_size(model)
    image = keras.Input(shape=(None, None, 3), name="image")
    trunk = keras.Model(image, _trunk(image, model.get_layer), name="hcp_trunk")
    side = size // TRUNK_STRIDE
    channels = model.get_layer("conv5_3").filters
    regions = keras.Input(shape=(side, side, channels), name="region_features")
    head = keras.Model(regions, _head(regions, model.get_layer), name="hcp_head")
    return trunk, head
