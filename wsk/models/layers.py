"""Caffe's pooling, exactly, as Keras 3 layers (``keras.ops`` only, any backend).

Caffe pools in *ceil* mode: a window of size ``k`` with stride ``s`` and padding ``p`` gives
``ceil((n + 2p - k) / s) + 1`` outputs (``pooling_layer.cpp``). Keras's ``padding="same"``
pads differently and in general gives other numbers, so the DeepLab-LargeFOV and HCP
pools are built here:

* max: pad with ``-inf`` (``p`` before, ``p + s - 1`` after, which covers the ceil-mode
  window) and take a "valid" max pool. A window therefore holds the maximum of the image
  values it overlaps, as Caffe's clipped window does.
* average: pad with zeros, sum each window, and divide by the number of positions of the
  window that lie inside ``[-p, n + p)`` -- Caffe counts the padding in the divisor
  (``count_include_pad``) but not the ceil-mode overhang beyond it.

Caffe also drops a last window that would start inside the padding; that can only happen
when ``p + s > k``, which these layers refuse.

``AtrousConv2D`` is a dilated ``Conv2D`` that skips the taps that cannot land on the input:
DeepLab-LargeFOV's fc6 (3x3, dilation 12, or 24 at output stride 4) on a small image is a 1x1
convolution, exactly, and TensorFlow on a CPU would still compute the dilated one by
space-to-batch (the demo's networks at stride 4 took about 75 ms a training step with it, 49
without).
"""

import math

import keras
from keras import ops


def caffe_pool_size(size, pool_size, strides, padding):
    """The length of Caffe's pooled output for an input of length ``size`` (ceil mode)."""
    if size is None:
        return None
    return int(math.ceil((size + 2 * padding - pool_size) / strides)) + 1


@keras.saving.register_keras_serializable(package="wsk")
class CaffePooling2D(keras.layers.Layer):
    """Caffe ``Pooling`` layer (MAX or AVE) with square kernel, stride and padding.

    Input and output are channels-last ``(N, H, W, C)``; the output has
    ``ceil((H + 2p - k) / s) + 1`` rows (and the same for columns).
    """

    def __init__(self, mode="max", pool_size=3, strides=2, padding=1, **kwargs):
        super().__init__(**kwargs)
        if mode not in ("max", "avg"):
            raise ValueError(f"mode must be 'max' or 'avg', not {mode!r}")
        pool_size, strides, padding = int(pool_size), int(strides), int(padding)
        if pool_size < 1 or strides < 1 or padding < 0:
            raise ValueError("pool_size and strides must be >= 1 and padding >= 0")
        if padding + strides > pool_size:
            raise ValueError(
                f"padding {padding} + stride {strides} > kernel {pool_size}: Caffe would drop a "
                "window that starts in the padding; this layer does not implement that case")
        self.mode = mode
        self.pool_size = pool_size
        self.strides = strides
        self.padding = padding

    def _pad(self, x, value):
        p, extra = self.padding, self.padding + self.strides - 1
        return ops.pad(x, [[0, 0], [p, extra], [p, extra], [0, 0]], constant_values=value)

    def _valid_pool(self, x, op):
        return op(x, pool_size=self.pool_size, strides=self.strides, padding="valid")

    def call(self, inputs):
        if self.mode == "max":
            return self._valid_pool(self._pad(inputs, float("-inf")), ops.max_pool)
        # Window sums over the zero-padded input, divided by Caffe's divisor: the number of
        # window positions inside [-p, n + p) (padding counted). Both are taken as means over
        # the k*k window, whose common factor cancels.
        means = self._valid_pool(self._pad(inputs, 0.0), ops.average_pool)
        inside = ops.ones_like(inputs[:1, :, :, :1])
        if self.padding:
            p = self.padding
            inside = ops.pad(inside, [[0, 0], [p, p], [p, p], [0, 0]], constant_values=1.0)
        tail = self.strides - 1
        if tail:
            inside = ops.pad(inside, [[0, 0], [0, tail], [0, tail], [0, 0]], constant_values=0.0)
        counts = self._valid_pool(inside, ops.average_pool)
        return means / counts

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        size = lambda d: caffe_pool_size(d, self.pool_size, self.strides, self.padding)  # noqa: E731
        return (n, size(h), size(w), c)

    def get_config(self):
        config = super().get_config()
        config.update(mode=self.mode, pool_size=self.pool_size, strides=self.strides,
                      padding=self.padding)
        return config


@keras.saving.register_keras_serializable(package="wsk")
class AtrousConv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D`` (stride 1, ``"same"`` padding, channels last) that drops the taps of
    an axis whose dilation is at least the input's size there.

    With ``"same"`` padding, output row ``i`` of a ``k``-tap kernel dilated by ``d`` reads input rows
    ``i + (t - (k - 1) / 2) d``; when ``d >= H`` every tap but the centre falls in the zero padding
    for every ``i``, so the centre row of the kernel, undilated, gives the same output. Axes whose
    size is unknown (a graph over images of any size) keep the full dilated kernel. Same weights,
    same outputs as ``Conv2D``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.padding != "same" or self.data_format != "channels_last" or tuple(self.strides) != (1, 1):
            raise ValueError("AtrousConv2D takes stride 1, 'same' padding and channels_last only")
        if any(k % 2 == 0 for k in self.kernel_size):
            raise ValueError(f"AtrousConv2D takes odd kernel sizes, not {self.kernel_size}")

    def call(self, inputs):
        kernel, rates = self.kernel, list(self.dilation_rate)
        for axis in (0, 1):
            size, taps = inputs.shape[1 + axis], self.kernel_size[axis]
            if isinstance(size, int) and taps > 1 and rates[axis] >= size:
                centre = (taps - 1) // 2
                kernel = kernel[centre:centre + 1] if axis == 0 else kernel[:, centre:centre + 1]
                rates[axis] = 1
        outputs = ops.conv(inputs, kernel, strides=1, padding="same", dilation_rate=tuple(rates))
        if self.use_bias:
            outputs = ops.add(outputs, self.bias)
        return self.activation(outputs) if self.activation is not None else outputs
