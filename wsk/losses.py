"""Segmentation and HCP losses in pure Keras 3 (``keras.ops``; no TensorFlow import).

* ``SoftMultiLabelCrossEntropy``: the multi-label cross-entropy of Eq. 4, trained on the
  localization maps (Network_A, §3.3.1) and on HCP's normalised image labels.
* ``SparseCrossEntropyIgnore``: the single-label cross-entropy on rough masks (Network_B,
  §3.3.2) or ground truth, ignoring label 255.
"""

import keras
from keras import ops

from wsk.classes import IGNORE_LABEL

_EPSILON = 1e-7


def _log_probabilities(y_pred, from_logits):
    """log p of Eq. 3: log-softmax of logits, or the log of (clipped) probabilities."""
    if from_logits:
        return ops.log_softmax(y_pred, axis=-1)
    return ops.log(ops.clip(y_pred, _EPSILON, 1.0))


def soft_cross_entropy_terms(y_true, y_pred, from_logits=True, target_power=1.0, class_weights=None):
    """Per-position terms of Eq. 4 and which positions count.

    ``y_true`` ``(..., C)`` holds non-negative target weights; at every position they are
    raised to ``target_power`` (1: as given, the paper) and divided by their sum (the
    "cross-channel" normalisation of p-hat), and positions whose sum is zero (padding, no label)
    do not count. Returns ``(terms, counted)``, both shaped ``y_true.shape[:-1]``:
    ``terms = -sum_m w_m p-hat^m log p^m`` (0 where not counted) and ``counted`` as 0/1 floats.
    ``class_weights`` ``(C,)``: the ``w_m``; None: all 1 (Eq. 4).
    """
    y_pred = ops.cast(y_pred, "float32")
    y_true = ops.cast(y_true, "float32")
    if target_power != 1.0:
        y_true = ops.power(y_true, target_power)
    mass = ops.sum(y_true, axis=-1)
    counted = ops.cast(mass > 0, "float32")
    targets = y_true / ops.expand_dims(ops.where(mass > 0, mass, 1.0), -1)
    if class_weights is not None:
        targets = targets * ops.convert_to_tensor(class_weights, "float32")
    terms = -ops.sum(targets * _log_probabilities(y_pred, from_logits), axis=-1)
    return terms * counted, counted


def _expand_to_rank(weights, rank):
    """Give per-image (or per-position) ``weights`` rank ``rank`` by trailing axes of size 1."""
    weights = ops.cast(weights, "float32")
    while len(weights.shape) > rank and weights.shape[-1] == 1:
        weights = ops.squeeze(weights, -1)
    while len(weights.shape) < rank:
        weights = ops.expand_dims(weights, -1)
    return weights


class _PositionAveragedLoss(keras.losses.Loss):
    """A loss averaged over the positions that count: Eq. 4 with eta = 1 / (counted positions).

    ``upsample``: the logits (``y_pred``, on the network's output grid) are first up-sampled to the
    targets' height and width as at test time (``wsk.models.inference.upsample_aligned``), so that
    targets given at the crop's resolution count at every pixel (``SegRecipe.loss_on_pixels``).
    False: ``y_pred`` and ``y_true`` share their grid (targets picked on the logits' grid, DeepLab).

    The reduction is Keras's own (``keras.losses.Loss.__call__``), so sample weights, the
    reductions and the scaling under a ``tf.distribute`` strategy (each replica's mean divided by
    the number of replicas) behave as for any Keras loss. ``call`` returns the per-position terms;
    for the mean reductions (``"sum_over_batch_size"``, the default, and ``"mean"``) they are
    multiplied by ``positions / counted positions``, so that Keras's mean over all positions is the
    mean over the counted ones. ``"sum"`` sums the terms; ``None``/``"none"`` returns them (0 where
    not counted). A per-image ``sample_weight`` ``(B,)`` is broadcast over the positions.

    ``class_weights``: ``C`` floats, class ``m``'s term scaled by ``w_m``
    (``wsk.training.class_weights``: balanced on the training targets); None: all 1, as the paper.
    """

    REDUCTIONS = (None, "none", "sum", "sum_over_batch_size", "mean")

    def __init__(self, from_logits=True, reduction="sum_over_batch_size", name=None, dtype=None,
                 upsample=False, class_weights=None):
        if reduction not in self.REDUCTIONS:
            raise ValueError(f"reduction must be one of {self.REDUCTIONS}, not {reduction!r} (Eq. 4 "
                             "averages over the counted positions)")
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.from_logits = bool(from_logits)
        self.upsample = bool(upsample)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        if self.class_weights is not None and not all(w >= 0 for w in self.class_weights):
            raise ValueError(f"class_weights must be non-negative, not {class_weights!r}")

    def terms(self, y_true, y_pred):
        """``(terms, counted)`` per position; see ``soft_cross_entropy_terms``."""
        raise NotImplementedError

    def call(self, y_true, y_pred):
        if self.upsample:
            from wsk.models.inference import upsample_aligned

            shape = ops.shape(y_true)
            y_pred = upsample_aligned(y_pred, shape[1], shape[2])
        terms, counted = self.terms(y_true, y_pred)
        if self.reduction not in ("sum_over_batch_size", "mean"):
            return terms
        positions = ops.cast(ops.size(counted), "float32")
        # Eq. 4's eta = 1 / (number of counted positions), through Keras's division by all positions
        return terms * ops.divide_no_nan(positions, ops.sum(counted))

    def __call__(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            sample_weight = _expand_to_rank(sample_weight, len(y_pred.shape) - 1)
            positions = ops.shape(y_true)[:3] if self.upsample else ops.shape(y_pred)[:-1]
            sample_weight = ops.broadcast_to(sample_weight, positions)
        return super().__call__(y_true, y_pred, sample_weight)

    def get_config(self):
        config = super().get_config()
        config.update(from_logits=self.from_logits, upsample=self.upsample, class_weights=self.class_weights)
        return config


@keras.saving.register_keras_serializable(package="wsk")
class SoftMultiLabelCrossEntropy(_PositionAveragedLoss):
    """Eq. 4: J = -eta sum_t sum_(i,j) sum_m p-hat_t^m(i,j) log p_t^m(i,j).

    ``y_true`` ``(..., C)``: soft targets (localization maps, or HCP's image label vector
    y / ||y||_1), normalised here to sum to 1 at every position; positions of zero mass are
    left out and eta = 1 / (number of counted positions in the batch). ``y_pred`` ``(..., C)``:
    logits (``from_logits=True``, softmax of Eq. 3 applied here) or probabilities (HCP's
    max-pooled softmax; clipped before the log). With one-hot targets this is the sparse
    categorical cross-entropy.

    ``target_power`` gamma sharpens the targets before that normalisation, p-hat^m ~ (p^m)^gamma:
    1 is Eq. 4 (the paper); gamma > 1 moves each position's target towards its largest channel
    and gamma -> infinity makes it one-hot (``wsk.recipes`` docstring: what it does to Network_A).
    """

    def __init__(self, from_logits=True, target_power=1.0, reduction="sum_over_batch_size", name=None,
                 dtype=None, upsample=False, class_weights=None):
        super().__init__(from_logits=from_logits, reduction=reduction, name=name, dtype=dtype,
                         upsample=upsample, class_weights=class_weights)
        if not float(target_power) > 0:
            raise ValueError(f"target_power must be positive, not {target_power!r}")
        self.target_power = float(target_power)

    def terms(self, y_true, y_pred):
        return soft_cross_entropy_terms(y_true, y_pred, self.from_logits, self.target_power, self.class_weights)

    def get_config(self):
        config = super().get_config()
        config.update(target_power=self.target_power)
        return config


@keras.saving.register_keras_serializable(package="wsk")
class SparseCrossEntropyIgnore(_PositionAveragedLoss):
    """Single-label cross-entropy on hard masks (Network_B), averaged over labelled positions.

    ``y_true``: class indices ``(...)`` or ``(..., 1)``; ``ignore_label`` (255) and any index
    outside ``[0, C)`` are left out. ``y_pred``: logits or probabilities ``(..., C)``.
    Computed as Eq. 4 on one-hot targets.
    """

    def __init__(self, ignore_label=IGNORE_LABEL, from_logits=True, reduction="sum_over_batch_size",
                 name=None, dtype=None, upsample=False, class_weights=None):
        super().__init__(from_logits=from_logits, reduction=reduction, name=name, dtype=dtype,
                         upsample=upsample, class_weights=class_weights)
        self.ignore_label = int(ignore_label)

    def terms(self, y_true, y_pred):
        labels = ops.convert_to_tensor(y_true)
        if len(labels.shape) == len(y_pred.shape):
            labels = ops.squeeze(labels, -1)
        labels = ops.cast(labels, "int32")
        labels = ops.where(labels == self.ignore_label, -1, labels)
        # one_hot of -1 or of an index >= C is all zeros: zero mass, not counted.
        one_hot = ops.one_hot(labels, y_pred.shape[-1], dtype="float32")
        return soft_cross_entropy_terms(one_hot, y_pred, self.from_logits, class_weights=self.class_weights)

    def get_config(self):
        config = super().get_config()
        config.update(ignore_label=self.ignore_label)
        return config
