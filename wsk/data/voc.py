"""PASCAL VOC 2012 and SBD layouts: image ids per split, image-level labels, masks, object counts.

A dataset root holds::

    JPEGImages/<id>.jpg                 the photographs
    Annotations/<id>.xml                optional VOC XML; its objects give the image-level labels
    SegmentationClass/<id>.png          optional palette PNG ground truth (indices; 255 = ignore)
    SegmentationClassAug/<id>.png       SBD's masks, used where SegmentationClass has none
    SegmentationObject/<id>.png         optional instance masks (used to count objects without XML)
    ImageSets/Segmentation/<split>.txt  image lists (also ImageSets/SegmentationAug/, ImageSets/Main/)
    classes.txt                         optional class list, background first (VOC's by default)

Two split names are computed rather than read (§4.1, §4.2 of the paper):
``paper_train`` is the intersection of classification ``trainval`` and ``train_aug``
(10,269 images on VOC 2012 + SBD) and ``paper_train_single`` its single-label subset (6,628).
"""

import collections
import itertools
import os
import xml.etree.ElementTree as ET

import numpy as np
from scipy import ndimage

from wsk.classes import IGNORE_LABEL, load_class_names
from wsk.data.ids import IdList, sorted_ids
from wsk.data.sources import MaskFiles
from wsk import storage
from wsk.errors import WskError
from wsk.io import IMAGE_SUFFIXES, read_image, read_label_png

IMAGE_DIR = "JPEGImages"
ANNOTATION_DIR = "Annotations"
MASK_DIRS = ("SegmentationClass", "SegmentationClassAug")
OBJECT_DIR = "SegmentationObject"
# Where split lists are looked for, first match wins.
SPLIT_DIRS = (("ImageSets", "Segmentation"), ("ImageSets", "SegmentationAug"), ("ImageSets", "Main"))
# Classification trainval and SBD's train_aug list (DeepLab keeps it at the root or beside the others).
CLASSIFICATION_TRAINVAL = ("ImageSets", "Main", "trainval.txt")
TRAIN_AUG_LISTS = (("ImageSets", "Segmentation", "train_aug.txt"),
                   ("ImageSets", "SegmentationAug", "train_aug.txt"),
                   ("train_aug.txt",))
PAPER_TRAIN = "paper_train"
PAPER_TRAIN_SINGLE = "paper_train_single"

VOCObject = collections.namedtuple("VOCObject", "name class_index difficult box")
VOCObject.__doc__ = "One ``<object>`` of a VOC XML file; ``box`` is (xmin, ymin, xmax, ymax) or None."


def parse_id_line(line):
    """The image id on one line of a list file, or None for a blank line.

    Accepts VOC lists (``2007_000033``), per-class lists (``2007_000033  1``) and
    DeepLab's lists (``/JPEGImages/2007_000033.jpg /SegmentationClassAug/2007_000033.png``).
    """
    fields = line.split()
    if not fields:
        return None
    name = fields[0].replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, suffix = name.rpartition(".")
    return stem if dot and suffix.lower() in ("jpg", "jpeg", "png") else name


def read_id_list(path):
    """Every id of a list file in file order, duplicates kept (see ``duplicate_ids``), as an ``IdList``."""
    try:
        with storage.open_file(path, "r", encoding="utf-8") as f:
            return IdList(i for i in map(parse_id_line, f) if i is not None)
    except FileNotFoundError:
        raise WskError("image list not found", path) from None
    except (OSError, UnicodeDecodeError) as err:
        raise WskError(f"not a readable image list ({err})", path) from None


def duplicate_ids(ids):
    """``{id: count}`` for the ids listed more than once. Found on a sorted ``IdList`` (a string at a
    time), not a counter or a sorted list of every id (60 bytes an id: 6 MB at 100,000,
    bench_refinement_memory)."""
    counts = ((i, sum(1 for _ in group)) for i, group in itertools.groupby(sorted_ids(ids)))
    return {i: n for i, n in counts if n > 1}


def find_split_file(root, split):
    """The list file of ``split``: ImageSets/Segmentation, then SegmentationAug, then Main."""
    tried = []
    for parts in SPLIT_DIRS:
        path = os.path.join(root, *parts, f"{split}.txt")
        if storage.isfile(path):
            return path
        tried.append(os.path.join(*parts, f"{split}.txt"))
    raise WskError(f"no image list for split {split!r} (looked for {', '.join(tried)})", root)


def list_split_ids(root, split):
    """Ids of a split read from its list file; an id listed twice is a ``WskError``."""
    path = find_split_file(root, split)
    ids = read_id_list(path)
    twice = duplicate_ids(ids)
    if twice:
        first = sorted(twice)[0]
        raise WskError(f"{len(twice)} id(s) listed more than once, e.g. {first!r} ({twice[first]} times)", path)
    return ids


def _first_existing(root, candidates):
    for parts in candidates:
        path = os.path.join(root, *parts)
        if storage.isfile(path):
            return path
    return None


def train_aug_list(root):
    """The path of SBD's ``train_aug`` list, or None."""
    return _first_existing(root, TRAIN_AUG_LISTS)


def paper_training_ids(root):
    """The paper's training set (§4.1): classification ``trainval`` ∩ ``train_aug``, sorted.

    ``trainval`` is ImageSets/Main/trainval.txt; ``train_aug`` is
    ImageSets/Segmentation/train_aug.txt (or SBD's list, see ``TRAIN_AUG_LISTS``).
    On VOC 2012 with SBD this gives 10,269 images.
    """
    root = os.fspath(root)
    trainval_path = os.path.join(root, *CLASSIFICATION_TRAINVAL)
    if not storage.isfile(trainval_path):
        raise WskError("classification trainval list not found (needed for the paper's training set)",
                       trainval_path)
    aug_path = train_aug_list(root)
    if aug_path is None:
        raise WskError("no train_aug list (looked for "
                       + ", ".join(os.path.join(*p) for p in TRAIN_AUG_LISTS) + ")", root)
    return IdList(sorted(set(read_id_list(trainval_path)) & set(read_id_list(aug_path))))


def single_label_ids(dataset, ids=None):
    """The ids (of ``ids``, default all of ``dataset``) whose image carries exactly one class (§4.2)."""
    return [i for i in (dataset.ids if ids is None else ids) if len(dataset.labels(i)) == 1]


def split_ids(root, split):
    """Ids of ``split`` (an ``IdList``): a list file, or one of the computed splits
    ``paper_train``/``paper_train_single``."""
    if split == PAPER_TRAIN:
        ids = paper_training_ids(root)
    elif split == PAPER_TRAIN_SINGLE:
        ids = IdList(single_label_ids(VOCDataset(root, PAPER_TRAIN)))
    else:
        ids = list_split_ids(root, split)
    if not ids:
        where = find_split_file(root, split) if split not in (PAPER_TRAIN, PAPER_TRAIN_SINGLE) else root
        raise WskError(f"split {split!r} has no image", where)
    return ids


def parse_annotation(path, class_names):
    """Every ``<object>`` of a VOC XML file (difficult ones included) as ``VOCObject``s.

    An unreadable file or a name that is not an object class is a ``WskError`` naming the file.
    """
    try:
        with storage.open_file(path, "rb") as f:
            tree = ET.parse(f)
    except FileNotFoundError:
        raise WskError("annotation not found", path) from None
    except (ET.ParseError, OSError) as err:
        raise WskError(f"not readable XML ({err})", path) from None
    index = {name: i for i, name in enumerate(class_names)}
    objects = []
    for obj in tree.getroot().iter("object"):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise WskError("an <object> has no <name>", path)
        if index.get(name, 0) == 0:  # unknown, or background (not an object class)
            raise WskError(f"unknown class name {name!r}", path)
        difficult = (obj.findtext("difficult") or "0").strip() == "1"
        box = None
        bndbox = obj.find("bndbox")
        if bndbox is not None:
            try:
                box = tuple(int(float(bndbox.findtext(k))) for k in ("xmin", "ymin", "xmax", "ymax"))
            except (TypeError, ValueError):
                raise WskError(f"object {name!r} has a malformed <bndbox>", path) from None
        objects.append(VOCObject(name, index[name], difficult, box))
    return objects


def labels_from_mask(mask, num_classes, path=None):
    """Image-level labels of a ground-truth mask: the sorted object classes present (no 0, no 255)."""
    values = np.unique(mask)
    bad = [int(v) for v in values if v >= num_classes and v != IGNORE_LABEL]
    if bad:
        raise WskError(f"mask holds value(s) {bad} that are no class index (0..{num_classes - 1} or "
                       f"{IGNORE_LABEL})", path)
    return tuple(int(v) for v in values if 0 < v < num_classes)


MIN_REGION_SHARE = 0.001  # without instances, regions under 0.1% of the image are not objects


def count_mask_objects(class_mask, instance_mask=None):
    """``{class: objects}`` counted from masks (used where no XML exists).

    With an instance mask (SegmentationObject), each instance counts once for the class most
    of its pixels carry. Otherwise each 8-connected region of a class is one object, ignoring
    specks under ``MIN_REGION_SHARE`` of the image (a class present only as specks counts once).
    VOC's ignore borders separate touching objects; an occluded object cut in two counts twice.
    """
    counts = {}
    if instance_mask is not None:
        for inst in np.unique(instance_mask):
            if inst in (0, IGNORE_LABEL):
                continue
            classes = class_mask[instance_mask == inst]
            classes = classes[(classes != 0) & (classes != IGNORE_LABEL)]
            if classes.size:
                cls = int(np.bincount(classes).argmax())
                counts[cls] = counts.get(cls, 0) + 1
        return counts
    min_pixels = MIN_REGION_SHARE * class_mask.size
    for value in np.unique(class_mask):
        if value in (0, IGNORE_LABEL):
            continue
        regions, n = ndimage.label(class_mask == value, structure=np.ones((3, 3), bool))
        sizes = np.bincount(regions.ravel())[1:]
        counts[int(value)] = max(1, int((sizes >= min_pixels).sum()))
    return counts


class VOCDataset(MaskFiles):
    """One split of a VOC-layout dataset.

    ``ids`` come from the split's list file (or are given); ``class_names`` from ``classes_file``,
    else ROOT/classes.txt, else VOC's 21; ``labels(id)`` are the image-level labels (1-based, background excluded).
    """

    def __init__(self, root, split, ids=None, classes_file=None):
        self.root = os.fspath(root)
        if not storage.isdir(self.root):
            raise WskError("dataset folder not found", self.root)
        self.split = split
        self.classes_file = classes_file
        self.class_names = load_class_names(self.root, classes_file)
        self.num_classes = len(self.class_names)
        self.ids = split_ids(self.root, split) if ids is None else IdList(ids)
        self._labels = {}

    def __len__(self):
        return len(self.ids)

    @property
    def source(self):
        """The ``wsk.data.sources.DataSource`` a worker opens this dataset from."""
        from wsk.data.sources import DataSource

        return DataSource("voc", storage.absolute(self.root), classes=self.classes_file)

    def __repr__(self):
        return f"VOCDataset({self.root!r}, {self.split!r}, {len(self.ids)} images)"

    def image_path(self, image_id):
        """JPEGImages/<id>.jpg (or another image suffix where that exists)."""
        for suffix in IMAGE_SUFFIXES:
            path = os.path.join(self.root, IMAGE_DIR, image_id + suffix)
            if storage.exists(path):
                return path
        return os.path.join(self.root, IMAGE_DIR, image_id + IMAGE_SUFFIXES[0])

    def image(self, image_id):
        """The photograph as RGB uint8 ``(H, W, 3)``."""
        return read_image(self.image_path(image_id))

    def annotation_path(self, image_id):
        """Annotations/<id>.xml, or None when absent."""
        path = os.path.join(self.root, ANNOTATION_DIR, image_id + ".xml")
        return path if storage.isfile(path) else None

    def annotation(self, image_id):
        """The XML objects (``VOCObject``s), or None when the image has no XML."""
        path = self.annotation_path(image_id)
        return None if path is None else parse_annotation(path, self.class_names)

    def mask_path(self, image_id):
        """SegmentationClass/<id>.png, else SegmentationClassAug/<id>.png, else None."""
        return _first_existing(self.root, [(d, image_id + ".png") for d in MASK_DIRS])

    def object_mask_path(self, image_id):
        """SegmentationObject/<id>.png, or None."""
        return _first_existing(self.root, [(OBJECT_DIR, image_id + ".png")])

    def labels(self, image_id):
        """Image-level labels: sorted class indices of the XML's objects, else of the mask."""
        if image_id not in self._labels:
            objects = self.annotation(image_id)
            if objects is not None:
                labels = tuple(sorted({o.class_index for o in objects}))
            else:
                path = self.mask_path(image_id)
                if path is None:
                    raise WskError("no image-level labels: neither Annotations XML nor a mask",
                                   os.path.join(self.root, ANNOTATION_DIR, image_id + ".xml"))
                labels = labels_from_mask(read_label_png(path), self.num_classes, path)
            self._labels[image_id] = labels
        return self._labels[image_id]

    def objects(self, image_id):
        """``{class index: number of objects}``: from the XML, else from the masks (``count_mask_objects``)."""
        objects = self.annotation(image_id)
        if objects is not None:
            return dict(collections.Counter(o.class_index for o in objects))
        mask = self.mask(image_id)
        if mask is None:
            raise WskError("cannot count objects: neither Annotations XML nor a mask",
                           os.path.join(self.root, ANNOTATION_DIR, image_id + ".xml"))
        path = self.object_mask_path(image_id)
        return count_mask_objects(mask, None if path is None else read_label_png(path))


def object_counts(dataset, ids=None):
    """Objects per class over ``ids`` (Table 2 of the paper): ``{class index: count}``, every class."""
    counts = dict.fromkeys(range(1, dataset.num_classes), 0)
    for image_id in dataset.ids if ids is None else ids:
        for cls, n in dataset.objects(image_id).items():
            counts[cls] += n
    return counts
