"""Class weights for the segmentation losses, balanced on the training targets' class shares.

A thin class (a bar, a keyhole) holds few of the training targets' pixels, so Eq. 4 and the
cross-entropy spend few of their gradients on it, and the network underfits it: its pixels go to
background even on the images it trained on. Class ``m`` of share ``f_m`` (of the targets' mass, after
Eq. 4's normalisation and ``target_power``) is weighted ``w_m ~ f_m ** -power``, scaled so that
``sum_m f_m w_m = 1``: over the training set the mean weight of a pixel is 1, so the loss keeps the
paper's scale and learning rate, and ``power`` 1 gives every class the same total weight. A class the
targets never hold gets 1. The shares are read from at most ``WEIGHT_IMAGES`` training targets.
Not in the paper (§4.2); ``SegRecipe.class_balance`` turns it on (``wsk.recipes``).
"""

import numpy as np

from wsk.data.pipelines import load_hard_target, load_soft_target
from wsk.io import image_size
from wsk.stages import progress

WEIGHT_IMAGES = 1000


def target_class_mass(images, targets, kind, num_classes, target_power=1.0, seed=0, limit=WEIGHT_IMAGES):
    """``(C,)`` float64: each class's mass in the training ``targets`` (paths, beside their ``images``)
    of ``kind`` "soft" (localization maps, each pixel's maps raised to ``target_power`` and normalised
    to sum 1, as Eq. 4 reads them) or "hard" (rough masks: pixel counts, 255 left out); from at most
    ``limit`` of them, drawn with ``seed``."""
    chosen = np.sort(np.random.default_rng(seed).permutation(len(targets))[:limit])
    mass = np.zeros(num_classes, np.float64)
    with progress(chosen.tolist(), label="class weights: reading targets") as indices:
        for k in indices:
            height, width = image_size(images[k])
            if kind == "soft":
                maps = load_soft_target(targets[k], height, width, num_classes).astype(np.float64) ** target_power
                total = maps.sum(axis=-1, keepdims=True)
                mass += (maps / np.where(total > 0, total, 1.0)).reshape(-1, num_classes).sum(axis=0)
            else:
                labels = load_hard_target(targets[k], height, width, num_classes)
                mass += np.bincount(labels[labels < num_classes], minlength=num_classes)
    return mass


def balanced_class_weights(mass, power):
    """``(C,)`` float64 weights ``w_m ~ f_m ** -power`` with ``sum_m f_m w_m = 1``, ``f`` the shares
    of ``mass``; a class of no mass, or every class where there is none, gets 1."""
    mass = np.asarray(mass, np.float64)
    weights = np.ones_like(mass)
    held = mass > 0
    if not held.any():
        return weights
    shares = mass[held] / mass[held].sum()
    raw = shares ** -float(power)
    weights[held] = raw / float((shares * raw).sum())
    return weights
