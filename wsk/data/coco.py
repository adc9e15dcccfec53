"""COCO instances JSONs (2014 or 2017) as datasets, with ground-truth masks rasterised by pycocotools.

Format: a JSON with ``images`` (``id``, ``file_name``, ``height``, ``width``), ``annotations``
(``image_id``, ``category_id``, ``segmentation``, ``iscrowd``, ``area``) and ``categories``
(``id``, ``name``). A segmentation is a list of polygons ``[x1, y1, x2, y2, ...]``, an
uncompressed RLE ``{"counts": [ints], "size": [h, w]}`` (crowds) or a compressed RLE
(``counts`` a string). Polygons of fewer than 3 points paint nothing.

Splits: one JSON is one split. ``train`` is ``source.path`` with its images in ``source.images``;
``val`` is ``source.val`` with its images in ``source.val_images``.

Ids: an image's id is its file name's stem (``COCO_train2014_000000000009``), so predictions are
``<stem>.png``; two images with the same stem are refused.

Classes: background, then the categories sorted by category id: category ``c`` is class
``1 + rank of c among the sorted category ids`` (COCO's ids 1..90 with gaps give 81 classes:
1 -> 1 person, ..., 13 -> 12 stop sign, ..., 90 -> 80 toothbrush); ``category_map`` computes it.
With a class list (``source.classes``) categories map by name into that list instead.

Labels: the sorted classes of an image's non-crowd annotations. Images without any non-crowd
annotation are dropped (``CocoDataset.dropped`` counts them).

Masks (``mask(id)``): 0 (background) where nothing is painted; the non-crowd annotations are
painted with their class in descending order of their rasterised pixel area (ties: JSON order),
so smaller objects lying on larger ones stay visible; then every crowd region is set to 255
(ignore) on top of everything. A polygon covers pixel (row r, column c) where the point
(c, r) lies inside it (pycocotools: a rectangle with integer corners x0 < x1, y0 < y1 covers
columns x0 .. x1-1 and rows y0 .. y1-1).

Index: the JSON is read once per split. With ``source.index`` (a folder, ``WORK/dataset``) the
first opening writes ``<index>/<split>.json`` (JSON path and stamp, image folder, sorted ids,
file names, sizes, labels, objects, class names, category map, dropped) and one record of
annotations per image, ``<index>/<split>/<id>.json``, and rebuilds them when the JSON (or the
class list) changes. A worker opening ``CocoDataset(source, split, ids=[id])`` reads only the
index (once per process) and that image's record. Without ``source.index`` the index is kept in
memory (once per process). Open a split once in the main process before starting workers.
"""

import collections
import contextlib
import functools
import json
import os

import numpy as np

from wsk.classes import IGNORE_LABEL, load_class_names
from wsk.data.ids import IdList
from wsk import storage
from wsk.errors import WskError
from wsk.io import atomic_path, file_stamp, load_json, read_image

SPLITS = ("train", "val")
INDEX_VERSION = 1
MAX_LISTED = 20    # problems listed in one WskError


def category_map(categories, class_names=None, path=None):
    """``{category id: class index}``: ``1 + rank`` of the id among the sorted category ids, or,
    given ``class_names`` (background first), the position of the category's name there."""
    if class_names is None:
        return {cid: rank + 1 for rank, cid in enumerate(sorted(int(c["id"]) for c in categories))}
    where = {name: i for i, name in enumerate(class_names) if i > 0}
    missing = [c["name"] for c in categories if c["name"] not in where]
    if missing:
        raise WskError(f"categories not in the class list: {', '.join(map(repr, missing))}", path)
    return {int(c["id"]): where[c["name"]] for c in categories}


def _read_coco(path):
    """The parsed COCO JSON (the one read of a large file)."""
    data = load_json(path)
    keys = ("images", "annotations", "categories")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in keys):
        raise WskError("not a COCO instances JSON (needs lists 'images', 'annotations', 'categories')", path)
    return data


def _segmentation_problem(seg, h, w):
    """Why a segmentation cannot be rasterised on an ``h`` x ``w`` image, or None."""
    if isinstance(seg, list):
        ok = all(isinstance(p, list) and len(p) % 2 == 0 and
                 all(isinstance(v, (int, float)) for v in p) for p in seg)
        return None if ok else "segmentation polygons must be lists of x, y numbers"
    if not isinstance(seg, dict) or not isinstance(seg.get("counts"), (list, str)):
        return "segmentation is neither polygons nor an RLE"
    if list(seg.get("size", ())) != [h, w]:
        return f"RLE size {seg.get('size')} is not the image's [{h}, {w}]"
    counts = seg["counts"]
    if isinstance(counts, list) and not all(isinstance(n, int) and n >= 0 for n in counts):
        return "RLE counts must be non-negative integers"
    if isinstance(counts, list) and sum(counts) != h * w:
        return f"RLE counts sum to {sum(counts)}, not {h} x {w}"
    return None


def _build(json_path, images_dir, classes_file):
    """``(index, records)`` of a COCO JSON: the index dict (module docstring) and
    ``{id: [annotations]}``; every problem is collected into one ``WskError``."""
    data = _read_coco(json_path)
    try:
        categories = [{"id": int(c["id"]), "name": str(c["name"])} for c in data["categories"]]
    except (KeyError, TypeError, ValueError):
        raise WskError("every category needs an 'id' and a 'name'", json_path) from None
    if len({c["id"] for c in categories}) != len(categories) or not categories:
        raise WskError("category ids are missing or listed twice", json_path)
    if classes_file is None:
        class_names = ("background",) + tuple(c["name"] for c in sorted(categories, key=lambda c: c["id"]))
        if len(set(class_names)) != len(class_names) or len(class_names) > IGNORE_LABEL:
            raise WskError(f"category names must be unique, not 'background', and at most "
                           f"{IGNORE_LABEL - 1}; give a class list", json_path)
    else:
        class_names = load_class_names(path=classes_file)
    cmap = category_map(categories, None if classes_file is None else class_names, json_path)
    problems, images, stems = [], {}, {}
    for img in data["images"]:
        try:
            key, name, h, w = img["id"], str(img["file_name"]), int(img["height"]), int(img["width"])
        except (KeyError, TypeError, ValueError):
            problems.append(f"{json_path}: image {str(img)[:60]} lacks an id, file_name, height or width")
            continue
        stem = os.path.splitext(os.path.basename(name))[0]
        if stem in stems:
            problems.append(f"{os.path.join(images_dir, name)}: same id {stem!r} as {stems[stem]}")
            continue
        stems[stem] = name
        images[key] = (stem, name, h, w)
    records = collections.defaultdict(list)
    for ann in data["annotations"]:
        what = f"{json_path}: annotation {ann.get('id', '?') if isinstance(ann, dict) else str(ann)[:40]}"
        if not isinstance(ann, dict) or ann.get("image_id") not in images:
            problems.append(f"{what} refers to an unknown image")
            continue
        if ann.get("category_id") not in cmap:
            problems.append(f"{what} refers to an unknown category {ann.get('category_id')!r}")
            continue
        stem, _, h, w = images[ann["image_id"]]
        problem = _segmentation_problem(ann.get("segmentation"), h, w)
        if problem:
            problems.append(f"{what}: {problem}")
            continue
        records[stem].append({"segmentation": ann["segmentation"], "iscrowd": int(bool(ann.get("iscrowd"))),
                              "category_id": ann["category_id"], "area": ann.get("area")})
    index = {"ids": [], "file_names": [], "sizes": [], "labels": [], "objects": [], "dropped": 0,
             "class_names": list(class_names), "category_map": {str(k): v for k, v in cmap.items()}}
    for stem, name, h, w in sorted(images.values()):
        objects = collections.Counter(cmap[a["category_id"]] for a in records[stem] if not a["iscrowd"])
        if not objects:
            index["dropped"] += 1
            records.pop(stem, None)
            continue
        if not storage.isfile(os.path.join(images_dir, name)):
            problems.append(f"{os.path.join(images_dir, name)}: image file not found")
        index["ids"].append(stem)
        index["file_names"].append(name)
        index["sizes"].append([h, w])
        index["labels"].append(sorted(objects))
        index["objects"].append(sorted(objects.items()))
    if problems:
        more = f"\n... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise WskError(f"{len(problems)} problem(s) in this COCO JSON:\n"
                       + "\n".join(problems[:MAX_LISTED]) + more, json_path)
    return index, dict(records)


class _Index:
    """A parsed index with its id -> position map (shared, read-only, per process)."""

    def __init__(self, meta, records=None):
        self.meta, self.records = meta, records
        self.position = {image_id: i for i, image_id in enumerate(meta["ids"])}


@functools.lru_cache(maxsize=8)
def _index_file(path, stamp):
    return _Index(load_json(path))


@functools.lru_cache(maxsize=2)
def _memory_index(json_path, images_dir, classes_file, key):
    meta, records = _build(json_path, images_dir, classes_file)
    return _Index(dict(meta, **dict(key)), records)


def _read_index_file(path):
    stamp = storage.stamp(path)
    try:
        return None if stamp == "missing" else _index_file(path, stamp)
    except (OSError, WskError):
        return None


def _write_json(path, obj):
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, separators=(",", ":"))


def open_index(source, split, json_path, images_dir):
    """The ``_Index`` of one split: read from ``source.index`` (built there when absent or stale),
    or built in memory without one."""
    key = {"version": INDEX_VERSION, "json": json_path, "stamp": file_stamp(json_path), "images": images_dir,
           "classes": source.classes, "classes_stamp": source.classes and file_stamp(source.classes)}
    if source.index is None:
        return _memory_index(json_path, images_dir, source.classes, tuple(key.items()))
    path = os.path.join(source.index, f"{split}.json")
    index = _read_index_file(path)
    if index is not None and all(index.meta.get(k) == v for k, v in key.items()):
        return index
    meta, records = _build(json_path, images_dir, source.classes)
    folder = os.path.join(source.index, split)
    storage.makedirs(folder)
    for name in storage.listdir(folder) if storage.isdir(folder) else ():   # records of images the JSON no longer keeps
        if name.endswith(".json") and not name.startswith(".") and name[:-5] not in records:
            with contextlib.suppress(FileNotFoundError):
                storage.remove(os.path.join(folder, name))
    for image_id, anns in records.items():
        _write_json(os.path.join(folder, f"{image_id}.json"), anns)
    _write_json(path, dict(meta, **key))   # last: a complete index means complete records
    return _Index(dict(meta, **key))


class CocoDataset:
    """One split of a COCO instances JSON with ``VOCDataset``'s interface (module docstring)."""

    def __init__(self, source, split, ids=None):
        from wsk.data.sources import as_source

        self.source = as_source(source)
        self.split = split
        if split not in SPLITS:
            raise WskError(f"unknown COCO split {split!r}; one of {', '.join(map(repr, SPLITS))}",
                           self.source.path)
        if split == "train":
            self.root, self.images_dir = self.source.path, self.source.images
        else:
            if self.source.val is None:
                raise WskError("no validation JSON was given (--val and --val-images)", self.source.path)
            self.root, self.images_dir = self.source.val, self.source.val_images
        if self.images_dir is None:
            raise WskError(f"the {split} JSON needs its image folder", self.root)
        self._index = open_index(self.source, split, self.root, self.images_dir)
        meta = self._index.meta
        self.class_names = tuple(meta["class_names"])
        self.num_classes = len(self.class_names)
        self.category_map = {int(k): v for k, v in meta["category_map"].items()}
        self.dropped = meta["dropped"]
        self.ids = IdList(meta["ids"] if ids is None else ids)
        unknown = [i for i in self.ids if i not in self._index.position]
        if unknown:
            raise WskError(f"{len(unknown)} id(s) not in split {split!r} (or dropped: no non-crowd "
                           f"object), e.g. {unknown[0]!r}", self.root)

    def __len__(self):
        return len(self.ids)

    def __repr__(self):
        return f"CocoDataset({self.root!r}, {self.split!r}, {len(self.ids)} images)"

    def _at(self, field, image_id):
        try:
            return self._index.meta[field][self._index.position[image_id]]
        except KeyError:
            raise WskError(f"image {image_id!r} is not in split {self.split!r}", self.root) from None

    def image_path(self, image_id):
        return os.path.join(self.images_dir, self._at("file_names", image_id))

    def image(self, image_id):
        """The photograph as RGB uint8 ``(H, W, 3)``."""
        return read_image(self.image_path(image_id))

    def labels(self, image_id):
        """Sorted class indices of the image's non-crowd annotations."""
        return tuple(self._at("labels", image_id))

    def objects(self, image_id):
        """``{class index: number of non-crowd annotations}``."""
        return {int(c): n for c, n in self._at("objects", image_id)}

    def mask_path(self, image_id):
        """Where the mask comes from, for messages: ``<json>#<file name>``."""
        return f"{self.root}#{self._at('file_names', image_id)}"

    def has_mask(self, image_id):   # every COCO image has its annotations
        return True

    def object_mask_path(self, image_id):
        return None

    def annotation(self, image_id):   # no VOC XML
        return None

    def annotations(self, image_id):
        """The image's annotation records (segmentation, iscrowd, category_id, area)."""
        self._at("ids", image_id)
        if self._index.records is not None:
            return self._index.records[image_id]
        return load_json(os.path.join(self.source.index, self.split, f"{image_id}.json"))

    def mask(self, image_id):
        """Ground-truth class indices ``(H, W)`` uint8: 0 background, 255 crowd (module docstring)."""
        try:
            from pycocotools import mask as rles
        except ImportError:
            raise WskError("COCO masks need pycocotools: pip install pycocotools") from None
        h, w = self._at("sizes", image_id)
        objects, crowds = [], []
        for ann in self.annotations(image_id):
            seg = ann["segmentation"]
            if isinstance(seg, list):
                polygons = [p for p in seg if len(p) >= 6]
                if not polygons:
                    continue
                rle = rles.merge(rles.frPyObjects(polygons, h, w))
            elif isinstance(seg["counts"], list):
                rle = rles.frPyObjects(seg, h, w)
            else:
                rle = {"size": seg["size"], "counts": seg["counts"].encode("ascii")}
            if ann["iscrowd"]:
                crowds.append(rle)
            else:   # largest first; ties in JSON order
                objects.append((-int(rles.area(rle)), len(objects), rle, self.category_map[ann["category_id"]]))
        mask = np.zeros((h, w), np.uint8)
        for _, _, rle, cls in sorted(objects, key=lambda o: o[:2]):
            mask[rles.decode(rle).astype(bool)] = cls
        for rle in crowds:
            mask[rles.decode(rle).astype(bool)] = IGNORE_LABEL
        return mask
