"""Segmentation training augmentation of one ``(image, target)`` pair, image and target alike.

Steps 1 and 3-5 of ``wsk.data.pipelines``' segmentation batches: DeepLab's random scale, padding,
crop and mirror (``augment_segmentation``), and the optional copy-paste of another pair's objects
(``paste_objects``). Targets are ``(H, W, C+1)`` float32 localization maps (``SOFT``, Network_A) or
``(H, W)`` int32 rough-mask labels with 255 ignored (``HARD``, Network_B).
"""

import tensorflow as tf

from wsk.classes import IGNORE_LABEL

SOFT, HARD = "soft", "hard"


def split_seed(seed, n):
    """``n`` independent stateless seeds ``(2,)`` from one."""
    return tf.random.experimental.stateless_split(seed, num=n)


def augment_segmentation(image, target, seed, crop_size, scale_range, kind, flip=True):
    """DeepLab's training augmentation of one pair, the same geometry for image and target.

    ``image`` ``(H, W, 3)`` preprocessed float32; ``target`` ``(H, W, C+1)`` float32 maps
    (``kind="soft"``) or ``(H, W)`` int32 labels (``kind="hard"``); ``seed`` a ``(2,)``
    stateless seed. Returns the ``crop_size`` crop of both (steps 1, 3, 4 of
    ``wsk.data.pipelines``), before shrinking.
    """
    scale_seed, y_seed, x_seed, flip_seed = tf.unstack(split_seed(seed, 4))
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    hard = kind == HARD
    if hard:
        target = target[:, :, None]
    low, high = float(scale_range[0]), float(scale_range[1])
    if (low, high) != (1.0, 1.0):
        scale = tf.random.stateless_uniform([], seed=scale_seed, minval=low, maxval=high)
        new_h = tf.maximum(1, tf.cast(tf.round(tf.cast(height, tf.float32) * scale), tf.int32))
        new_w = tf.maximum(1, tf.cast(tf.round(tf.cast(width, tf.float32) * scale), tf.int32))
        image = tf.image.resize(image, [new_h, new_w], method="bilinear")
        target = tf.image.resize(target, [new_h, new_w],
                                 method="nearest" if hard else "bilinear")
        target = tf.cast(target, tf.int32) if hard else target
        height, width = new_h, new_w
    pad_h = tf.maximum(crop_size - height, 0)
    pad_w = tf.maximum(crop_size - width, 0)
    paddings = [[0, pad_h], [0, pad_w], [0, 0]]
    image = tf.pad(image, paddings, constant_values=0.0)
    target = tf.pad(target, paddings, constant_values=IGNORE_LABEL if hard else 0)
    height, width = height + pad_h, width + pad_w
    y = tf.random.stateless_uniform([], seed=y_seed, maxval=height - crop_size + 1, dtype=tf.int32)
    x = tf.random.stateless_uniform([], seed=x_seed, maxval=width - crop_size + 1, dtype=tf.int32)
    image = image[y:y + crop_size, x:x + crop_size]
    target = target[y:y + crop_size, x:x + crop_size]
    if flip:
        flipped = tf.random.stateless_uniform([], seed=flip_seed) < 0.5
        image = tf.cond(flipped, lambda: tf.reverse(image, [1]), lambda: image)
        target = tf.cond(flipped, lambda: tf.reverse(target, [1]), lambda: target)
    image = tf.ensure_shape(image, [crop_size, crop_size, 3])
    if hard:
        target = tf.ensure_shape(target[:, :, 0], [crop_size, crop_size])
    else:
        target = tf.ensure_shape(target, [crop_size, crop_size, None])
    return image, target


def foreground(target, kind):
    """``(H, W)`` bool: where a crop's target gives an object class: a rough mask's labels other than
    background and 255, or the pixels whose localization maps have mass and peak off background."""
    if kind == HARD:
        return (target != 0) & (target != IGNORE_LABEL)
    return (tf.argmax(target, axis=-1) != 0) & (tf.reduce_sum(target, axis=-1) > 0)


def paste_objects(pair, other_pair, kind):
    """Step 5: the ``(image, target)`` crop ``pair`` with the object pixels of ``other_pair``
    (``foreground``) pasted where ``pair`` has none, image and target alike, so that no object of
    ``pair`` is cut."""
    (image, target), (other_image, other_target) = pair, other_pair
    paste = foreground(other_target, kind) & ~foreground(target, kind)
    return (tf.where(paste[:, :, None], other_image, image),
            tf.where(paste if kind == HARD else paste[:, :, None], other_target, target))
