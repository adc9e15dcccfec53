"""Where a dataset comes from: a VOC folder, a labels file (CSV or JSON Lines) or a COCO JSON.

Every stage, ``wsk data check``, ``wsk run`` and the Beam pipeline take a dataset as DATA and open
one split of it with ``open_dataset(data, split)``. DATA is a ``DataSource`` (what ``WORK/run.json``
records) or a path, whose form says which source it is (``as_source``):

=====================  ======================================================================
a folder               PASCAL VOC / SBD layout (``wsk.data.voc.VOCDataset``)
``*.csv``, ``*.jsonl``  one row per image: ``image``, ``labels``, optional ``split`` and ``mask``
                       (``wsk.data.labels_file``)
``*.json``             a COCO instances file (2014 or 2017) with its image folder given as
                       ``images`` (``wsk.data.coco``)
=====================  ======================================================================

Each opened split has the same interface (``VOCDataset``'s): ``ids``, ``class_names`` (background
first), ``num_classes``, ``image_path(id)``, ``image(id)``, ``labels(id)`` (sorted 1-based class
indices), ``has_mask(id)``, ``mask(id)`` (``(H, W)`` uint8, 255 = ignore, or None),
``mask_path(id)`` (the file to name in messages, or None), ``object_mask_path(id)`` and
``objects(id)`` (``{class: objects}``).

A ``DataSource`` is a small frozen value: it pickles into worker processes and Beam workers,
which open the split themselves (each source caches its parsed index once per process).
"""

import dataclasses
import os

from wsk import storage
from wsk.errors import WskError

KINDS = ("voc", "labels", "coco")
LABELS_SUFFIXES = (".csv", ".jsonl")
COCO_SUFFIXES = (".json",)
DEFAULT_VAL_FRACTION = 0.1   # a labels file without a split column: a tenth of its rows validate


@dataclasses.dataclass(frozen=True)
class DataSource:
    """A dataset's source, as ``WORK/run.json`` records it.

    ``kind``: ``voc``, ``labels`` or ``coco``; ``path``: the VOC folder, the labels file or the
    COCO training JSON (absolute). ``classes``: a class-list file (background first) or None (VOC:
    ``ROOT/classes.txt`` or VOC's 21; labels file: its labels sorted; COCO: its 80 categories).
    ``val_fraction``: a labels file without a split column puts this share of its rows, chosen
    by a hash of their ids, in ``val`` (None: ``DEFAULT_VAL_FRACTION``). COCO: ``images`` is the
    training JSON's image folder, ``val`` and ``val_images`` the validation JSON and its folder,
    ``index`` the folder where the JSONs are indexed into per-image records (``WORK/dataset``).
    """

    kind: str
    path: str
    classes: str | None = None
    val_fraction: float | None = None
    images: str | None = None
    val: str | None = None
    val_images: str | None = None
    index: str | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise WskError(f"unknown dataset kind {self.kind!r}; one of {', '.join(KINDS)}")

    def to_json(self):
        """The fields that are set, for ``run.json``."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data):
        return cls(**data)

    @property
    def default_splits(self):
        """``(training split, validation split)`` that ``wsk run`` uses unless told otherwise."""
        if self.kind == "voc":
            from wsk.data.voc import PAPER_TRAIN

            return PAPER_TRAIN, "val"
        return "train", "val"


class MaskFiles:
    """``has_mask`` and ``mask`` of a source whose ground truth is one index PNG per image,
    found by its ``mask_path(id)`` (VOC, a labels file)."""

    def has_mask(self, image_id):
        """Whether the image has a ground-truth mask."""
        return self.mask_path(image_id) is not None

    def mask(self, image_id):
        """Ground-truth class indices ``(H, W)`` uint8 (255 = ignore), or None when absent."""
        from wsk.io import read_label_png

        path = self.mask_path(image_id)
        return None if path is None else read_label_png(path)


def _absolute(path):
    return storage.absolute(path)


def as_source(data, images=None, classes=None, val_fraction=None, val=None, val_images=None, index=None):
    """The ``DataSource`` of DATA: a ``DataSource`` is returned as it is; a path by its form
    (module docstring). A COCO JSON needs its image folder (``images``)."""
    if isinstance(data, DataSource):
        return data
    path = os.fspath(data)
    lower = path.lower()
    if lower.endswith(LABELS_SUFFIXES):
        kind = "labels"
    elif lower.endswith(COCO_SUFFIXES):
        kind = "coco"
        if images is None:
            raise WskError("a COCO instances JSON needs its image folder: give --images DIR", path)
    elif storage.isdir(path):
        kind = "voc"
    elif not storage.exists(path):
        raise WskError("dataset not found", path)
    else:
        raise WskError("not a dataset: give a VOC folder, a labels file (.csv, .jsonl) or a COCO "
                       "instances .json", path)
    if kind != "labels" and val_fraction is not None:
        raise WskError("--val-fraction is for labels files (this dataset has its own splits)", path)
    if kind != "coco" and (images or val or val_images):
        raise WskError("--images, --val and --val-images are for COCO instances JSONs", path)
    return DataSource(kind, _absolute(path), classes=_absolute(classes), val_fraction=val_fraction,
                      images=_absolute(images), val=_absolute(val), val_images=_absolute(val_images),
                      index=_absolute(index))


def open_dataset(data, split, ids=None):
    """One split of DATA (a ``DataSource`` or a path) with the interface in the module docstring;
    ``ids`` restricts it to those images (a worker opens its own image alone)."""
    source = as_source(data)
    if source.kind == "voc":
        from wsk.data.voc import VOCDataset

        return VOCDataset(source.path, split, ids=ids, classes_file=source.classes)
    if source.kind == "labels":
        from wsk.data.labels_file import LabelsFileDataset

        return LabelsFileDataset(source, split, ids=ids)
    from wsk.data.coco import CocoDataset

    return CocoDataset(source, split, ids=ids)
