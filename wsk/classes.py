"""Class names, the VOC colour palette and the ignore label: the one source of truth."""

import functools
import os

import numpy as np

from wsk import storage
from wsk.errors import WskError

IGNORE_LABEL = 255
BACKGROUND = "background"   # class 0 of every segmentation class list

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)

# Short names used in the paper's tables (Table 1 and Table 2).
VOC_SHORT_NAMES = {
    "background": "bkg", "aeroplane": "plane", "bicycle": "bike", "diningtable": "table",
    "motorbike": "mbike", "pottedplant": "plant", "tvmonitor": "tv",
}

CLASS_LIST_FILE = "classes.txt"


def voc_palette():
    """A copy of the standard 256-entry VOC colour map (see ``_voc_palette``)."""
    return _voc_palette().copy()


@functools.lru_cache(maxsize=1)
def _voc_palette():
    """The standard 256-entry PASCAL VOC colour map as a (256, 3) uint8 array.

    Entry ``i`` spreads the bits of ``i`` over the three channels from the most
    significant bit down, as in the VOC development kit; 255 (ignore) is (224, 224, 192).
    """
    palette = np.zeros((256, 3), np.uint8)
    for index in range(256):
        value, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= ((value >> 0) & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        palette[index] = (r, g, b)
    return palette


def load_class_names(root=None, path=None):
    """Class names of a dataset: the class-list file ``path``, else ``ROOT/classes.txt``
    (background first), else VOC's list.

    The file holds one name per line; blank lines and ``#`` comments are skipped.
    """
    if path is None:
        if root is None:
            return VOC_CLASSES
        path = os.path.join(root, CLASS_LIST_FILE)
        if not storage.exists(path):
            return VOC_CLASSES
    try:
        with storage.open_file(path, "r", encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
    except FileNotFoundError:
        raise WskError("class list not found", path) from None
    if len(names) < 2:
        raise WskError("a class list needs background and at least one object class", path)
    check_background_first(names, path)
    if len(set(names)) != len(names):
        raise WskError("class names are listed twice", path)
    if len(names) > IGNORE_LABEL:
        raise WskError(f"at most {IGNORE_LABEL} classes fit a palette PNG", path)
    return tuple(names)


def check_background_first(names, where=None):
    """The one rule of every segmentation class list: class 0 is ``background`` (a ``WskError``
    naming ``where`` otherwise)."""
    if not names or names[0] != BACKGROUND:
        found = repr(names[0]) if names else "no class"
        raise WskError(f"the first class must be '{BACKGROUND}', found {found}", where)


def short_name(name):
    """The column label the paper uses for a class (``plane`` for ``aeroplane``)."""
    return VOC_SHORT_NAMES.get(name, name)
