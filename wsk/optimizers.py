"""Caffe's SGD in Keras 3 (``keras.ops``; no TensorFlow import), as the paper trains (§4.2, [17]).

Caffe's update for a parameter ``w`` with gradient ``g``::

    v <- momentum * v + lr * lr_mult * (g + weight_decay * decay_mult * w)
    w <- w - v

Weight decay is L2 added to the gradient (Caffe's semantics), not Keras's decoupled decay,
and each variable has its own learning-rate and decay multipliers, chosen by regular
expressions on the variable path (``"fc8/kernel"``): DeepLab's groups are weights x1,
biases x2 without decay, and the last layer x10 (x20 for its bias).
"""

import re

import keras
from keras import ops

from wsk.keras_private import optimizer_variable_index


def deeplab_multipliers(last_layer="fc8", last_mult=10):
    """DeepLab's multiplier groups as ``[(pattern, lr_mult, decay_mult), ...]`` (first match wins).

    ``last_layer`` weights get ``last_mult`` (x10 in DeepLab, x100 for HCP's image fine-tuning
    where the last layer trains at 0.01 and the rest at 0.0001), its bias ``2 * last_mult``;
    other weights x1, other biases x2; biases are not decayed.
    """
    last = re.escape(last_layer)
    return [
        (rf"(^|/){last}/kernel$", float(last_mult), 1.0),
        (rf"(^|/){last}/bias$", 2.0 * float(last_mult), 0.0),
        (r"(^|/)bias$", 2.0, 0.0),
        (r"(^|/)kernel$", 1.0, 1.0),
    ]


def step_schedule(base_lr, step_size, gamma=0.1):
    """Caffe's "step" policy: ``base_lr * gamma ** floor(iteration / step_size)``."""
    return keras.optimizers.schedules.ExponentialDecay(
        initial_learning_rate=float(base_lr), decay_steps=int(step_size), decay_rate=float(gamma),
        staircase=True)


def _normalise_multipliers(multipliers):
    rules = []
    for rule in multipliers or ():
        pattern, lr_mult, decay_mult = rule
        re.compile(pattern)
        rules.append((str(pattern), float(lr_mult), float(decay_mult)))
    return rules


@keras.saving.register_keras_serializable(package="wsk")
class CaffeSGD(keras.optimizers.Optimizer):
    """SGD with Caffe momentum, L2 weight decay in the gradient and per-variable multipliers.

    ``multipliers``: ``[(pattern, lr_mult, decay_mult), ...]``; the first pattern found
    (``re.search``) in a variable's path gives its multipliers, unmatched variables get
    (1, 1). Defaults to ``deeplab_multipliers()``. ``learning_rate`` may be a schedule such
    as ``step_schedule``; it is read at the iteration count before the step, as Caffe does.
    """

    def __init__(self, learning_rate=0.001, momentum=0.9, weight_decay=0.0005, multipliers=None,
                 name="caffe_sgd", **kwargs):
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, name=name, weight_decay=None, **kwargs)
        if not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], not {momentum!r}")
        if float(weight_decay) < 0:
            raise ValueError(f"weight_decay must be >= 0, not {weight_decay!r}")
        self.momentum = float(momentum)
        self.caffe_weight_decay = float(weight_decay)
        self.multipliers = _normalise_multipliers(
            deeplab_multipliers() if multipliers is None else multipliers)

    def multipliers_for(self, path):
        """``(lr_mult, decay_mult)`` of the variable at ``path`` (first matching rule, else 1, 1)."""
        for pattern, lr_mult, decay_mult in self.multipliers:
            if re.search(pattern, path):
                return lr_mult, decay_mult
        return 1.0, 1.0

    def build(self, variables):
        """Create one velocity per variable and fix each variable's multipliers by its path."""
        if self.built:
            return
        super().build(variables)
        self.velocities = self.add_optimizer_variables(variables, "velocity")
        self._variable_multipliers = [self.multipliers_for(v.path) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        """v <- m v + lr lr_mult (g + decay decay_mult w); w <- w - v."""
        index = optimizer_variable_index(self, variable)
        lr_mult, decay_mult = self._variable_multipliers[index]
        gradient = ops.cast(gradient, variable.dtype)
        decay = self.caffe_weight_decay * decay_mult
        if decay:
            gradient = ops.add(gradient, ops.multiply(variable, ops.cast(decay, variable.dtype)))
        step = ops.multiply(gradient, ops.cast(learning_rate, variable.dtype) * lr_mult)
        velocity = self.velocities[index]
        self.assign(velocity, ops.add(ops.multiply(velocity, ops.cast(self.momentum, variable.dtype)),
                                      step))
        self.assign_sub(variable, velocity)

    def get_config(self):
        config = super().get_config()
        config.update(momentum=self.momentum, weight_decay=self.caffe_weight_decay,
                      multipliers=[list(rule) for rule in self.multipliers])
        return config
