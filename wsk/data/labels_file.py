"""A labels file: one row per image, as CSV or JSON Lines, in or above its images' folders.

CSV (the header comes first; other columns are refused)::

    image,labels,split,mask
    street/0001.jpg,car;traffic light,train,
    a b/ç/img 0002.jpg,person,val,masks/0002.png

JSON Lines (one object per line; blank lines are skipped)::

    {"image": "street/0001.jpg", "labels": ["car", "traffic light"], "split": "train"}

``image`` is a path relative to the file's folder (any depth, any name, ``\\`` read as ``/``;
``..`` and absolute paths are refused); ``labels`` the object classes present (CSV: separated
by ``;``, spaces around each name stripped), never ``background``; ``split`` (optional column)
the row's split; ``mask`` (optional) a ground-truth index PNG of the image's size (255 =
ignore), relative too.

An image's id is its relative path with ``/`` separators, minus its suffix, NFC-normalised
(``a b/ç/img 0002``); a file whose name is written in the other Unicode form on disk is found.
Classes come from the source's class list, else from the labels: sorted, ``background`` first.
Without a split column, the rows whose id hashes below ``val_fraction`` (``val_share``) form
``val`` and the others ``train``, the same on every parse; ``all`` names every row of any file.

The whole file is parsed and checked once per process and file version (``load_index``): a
missing image or mask, a mask of another size, an unknown class, a duplicate id (or one that
differs only by case), an empty cell, a malformed row. Every bad row is reported at once, as
``FILE:ROW: reason`` lines of one ``BadRows`` error (ROW is the line number, the header being 1).
Nothing is written.
"""

import collections
import csv
import functools
import hashlib
import json
import os
import posixpath
import unicodedata

from wsk.classes import IGNORE_LABEL, load_class_names
from wsk.data.ids import IdList
from wsk.data.sources import DEFAULT_VAL_FRACTION, MaskFiles, as_source
from wsk.data.voc import count_mask_objects
from wsk import storage
from wsk.errors import WskError
from wsk.io import image_size, read_image

ALL_SPLIT = "all"           # every row, whatever its split
COLUMNS = ("image", "labels", "split", "mask")
REQUIRED = ("image", "labels")
LABEL_SEPARATOR = ";"

Row = collections.namedtuple("Row", "line image labels split mask")
Row.__doc__ = "One image: its line, image and mask paths (absolute; mask None if absent), labels, split."
Index = collections.namedtuple("Index", "path class_names rows splits")
Index.__doc__ = "A parsed labels file: class names, ``{id: Row}`` in file order, ``{split: ids}``."


class BadRows(WskError):
    """The bad rows of a labels file: ``lines`` holds one ``FILE:ROW: reason`` per row and
    ``str()`` is those lines joined by newlines (print it as it is)."""

    def __init__(self, path, lines):
        self.lines = list(lines)
        super().__init__(f"{len(self.lines)} bad row(s)", path)

    def __str__(self):
        return "\n".join(self.lines)

    def __reduce__(self):   # pickles into and out of worker processes
        return type(self), (self.path, self.lines)


class _Bad(Exception):
    """Why one row is bad (internal)."""


def val_share(image_id):
    """Where an id falls in [0, 1): the first 32 bits of the sha1 of its UTF-8 bytes."""
    return int(hashlib.sha1(image_id.encode("utf-8")).hexdigest()[:8], 16) / 2**32


def _json_fields(text):
    """The fields of one JSON line, or ``_Bad``."""
    try:
        obj = json.loads(text)
    except ValueError as err:
        raise _Bad(f"malformed row: not JSON ({err})") from None
    if not isinstance(obj, dict) or set(obj) - set(COLUMNS):
        raise _Bad(f"malformed row: not an object with keys {', '.join(COLUMNS)}")
    labels = obj.get("labels")
    if not isinstance(labels, list) or not all(isinstance(n, str) for n in labels):
        raise _Bad("malformed row: labels must be a list of class names")
    if not isinstance(obj.get("image"), str) or not all(
            isinstance(obj.get(k), (str, type(None))) for k in ("split", "mask")):
        raise _Bad("malformed row: image, split and mask must be strings")
    return obj


def _csv_records(f, path):
    """``(has a split column, records)`` of a CSV file (``_records``)."""
    reader = csv.reader(f)
    header = [cell.strip().lower() for cell in next(reader, [])]
    if set(header) - set(COLUMNS) or set(REQUIRED) - set(header) or len(set(header)) != len(header):
        raise WskError(f"the first line must be the header image,labels[,split][,mask], found "
                       f"{','.join(header)!r}", path)
    records, line = [], reader.line_num + 1
    for cells in reader:
        if len(cells) > 1 or "".join(cells).strip():   # not a blank line
            fields = dict(zip(header, (cell.strip() for cell in cells)))
            fields["labels"] = fields.get("labels", "").split(LABEL_SEPARATOR)
            records.append((line, fields if len(cells) == len(header) else _Bad(
                f"malformed row: {len(cells)} fields, the header has {len(header)}")))
        line = reader.line_num + 1
    return "split" in header, records


def _records(path):
    """``(has a split column, [(line, fields dict or _Bad)])`` of a CSV or JSON Lines file."""
    try:
        with storage.open_file(path, "r", encoding="utf-8-sig", newline="") as f:
            if not path.lower().endswith(".jsonl"):
                return _csv_records(f, path)
            records = []
            for line, text in enumerate(f, 1):
                if text.strip():
                    try:
                        records.append((line, _json_fields(text)))
                    except _Bad as err:
                        records.append((line, err))
            return any("split" in fields for _, fields in records if isinstance(fields, dict)), records
    except FileNotFoundError:
        raise WskError("labels file not found", path) from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise WskError(f"not a readable UTF-8 labels file ({err})", path) from None


def _relative(text, what):
    """The normalised relative path a cell gives (``/`` separators), or ``_Bad``."""
    rel = (text or "").replace("\\", "/")
    if not rel:
        raise _Bad(f"empty {what} cell")
    if rel.startswith("/") or rel[1:3] == ":/":
        raise _Bad(f"{what} path {text!r} is absolute (give it relative to the labels file's folder)")
    rel = posixpath.normpath(rel)
    if rel == ".." or rel.startswith("../"):
        raise _Bad(f"{what} path {text!r} leaves the labels file's folder")
    return rel


def _on_disk(root, rel):
    """The file ``rel`` names under ``root`` as written, else in NFC or NFD, or None."""
    for form in dict.fromkeys((rel, unicodedata.normalize("NFC", rel), unicodedata.normalize("NFD", rel))):
        path = os.path.join(root, *form.split("/"))
        if storage.isfile(path):
            return path
    return None


def _check(root, rel, fields, has_split, lookup, classes):
    """``(labels, split, image, mask)`` of a row (image ``rel``, its id checked), or ``_Bad``."""
    names = [n.strip() for n in fields["labels"]]
    if not any(names):
        raise _Bad("empty labels cell")
    if not all(names):
        raise _Bad(f"an empty class name in labels {LABEL_SEPARATOR.join(names)!r}")
    if "background" in names:
        raise _Bad("'background' is no image label (list the object classes)")
    unknown = [] if lookup is None else sorted({n for n in names if n not in lookup})
    if unknown:
        raise _Bad(f"unknown class(es) {', '.join(map(repr, unknown))} (not in {classes})")
    split = (fields.get("split") or "").strip()
    if has_split and not split:
        raise _Bad("empty split cell")
    if split == ALL_SPLIT:
        raise _Bad(f"split {ALL_SPLIT!r} is reserved (it names every row)")
    image = _on_disk(root, rel)
    if image is None:
        raise _Bad(f"image not found: {os.path.join(root, rel)}")
    mask = None
    if fields.get("mask"):
        mask_rel = _relative(fields["mask"], "mask")
        mask = _on_disk(root, mask_rel)
        if mask is None:
            raise _Bad(f"mask not found: {os.path.join(root, mask_rel)}")
        try:
            (h, w), (mh, mw) = image_size(image), image_size(mask)
        except WskError as err:
            raise _Bad(str(err)) from None
        if (mh, mw) != (h, w):
            raise _Bad(f"mask is {mw}x{mh} but its image is {w}x{h}: {mask}")
    return tuple(dict.fromkeys(names)), split or None, image, mask


@functools.lru_cache(maxsize=8)
def _parse(path, stamp, classes, val_fraction):
    """The ``Index`` of one version of a labels file (its ``wsk.storage.stamp`` keys the cache)."""
    has_split, records = _records(path)
    if has_split and val_fraction is not None:
        raise WskError("--val-fraction is for files without a split column (this one has one)", path)
    fraction = DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction
    if not 0 <= fraction < 1:
        raise WskError(f"the validation fraction must be in [0, 1), got {fraction}", path)
    class_names = None if classes is None else load_class_names(path=classes)
    lookup = None if class_names is None else {n: i for i, n in enumerate(class_names)}
    root, bad, rows, seen, folded = os.path.dirname(path), [], {}, {}, {}
    for line, fields in records:
        try:
            if isinstance(fields, _Bad):
                raise fields
            rel = _relative(fields["image"], "image")
            image_id = unicodedata.normalize("NFC", posixpath.splitext(rel)[0])
            if image_id in seen:
                raise _Bad(f"duplicate image {image_id!r}: same as row {seen[image_id]}")
            if image_id.casefold() in folded:
                first = folded[image_id.casefold()]
                raise _Bad(f"image id {image_id!r} differs only by case from row {first}")
            seen[image_id] = folded[image_id.casefold()] = line
            labels, split, image, mask = _check(root, rel, fields, has_split, lookup, classes)
            rows[image_id] = Row(line, image, labels, split, mask)
        except _Bad as err:
            bad.append(f"{path}:{line}: {err}")
    if bad:
        raise BadRows(path, bad)
    if not rows:
        raise WskError("no image rows", path)
    if class_names is None:
        class_names = ("background",) + tuple(sorted({n for row in rows.values() for n in row.labels}))
        if len(class_names) > IGNORE_LABEL:
            raise WskError(f"{len(class_names)} classes: at most {IGNORE_LABEL} fit a palette PNG", path)
        lookup = {n: i for i, n in enumerate(class_names)}
    splits = {} if has_split else {"train": [], "val": []}
    for image_id, row in rows.items():
        split = row.split if has_split else ("val" if val_share(image_id) < fraction else "train")
        rows[image_id] = row._replace(labels=tuple(sorted(lookup[n] for n in row.labels)), split=split)
        splits.setdefault(split, []).append(image_id)
    return Index(path, tuple(class_names), rows, splits)


def load_index(path, classes=None, val_fraction=None):
    """The parsed ``Index`` of a labels file, cached per process until the file changes."""
    path = storage.absolute(path)
    stamp = storage.stamp(path)
    if stamp == "missing":
        raise WskError("labels file not found", path)
    return _parse(path, stamp, storage.absolute(classes), val_fraction)


class LabelsFileDataset(MaskFiles):
    """One split of a labels file (module docstring), with ``VOCDataset``'s interface.

    ``source``: a ``DataSource`` of kind ``labels`` (or the file's path); ``ids`` restricts the
    split to those images (a worker opens its own image alone: the parse is cached).
    """

    def __init__(self, source, split, ids=None):
        source = as_source(source)
        if source.kind != "labels":
            raise WskError(f"not a labels file (a {source.kind} dataset)", source.path)
        self.source = source
        self._index = load_index(source.path, source.classes, source.val_fraction)
        self.path = self._index.path
        self.root = os.path.dirname(self.path)
        self.split = split
        self.class_names = self._index.class_names
        self.num_classes = len(self.class_names)
        splits = self._index.splits
        if split != ALL_SPLIT and split not in splits:
            raise WskError(f"no split {split!r}: this file has {', '.join(sorted(splits))} "
                           f"({ALL_SPLIT!r} gives every row)", self.path)
        if ids is None:
            ids = list(self._index.rows) if split == ALL_SPLIT else splits[split]
            if not ids:
                raise WskError(f"split {split!r} has no image", self.path)
        self.ids = IdList(ids)
        for image_id in self.ids:
            self._row(image_id)

    def __len__(self):
        return len(self.ids)

    def __repr__(self):
        return f"LabelsFileDataset({self.path!r}, {self.split!r}, {len(self.ids)} images)"

    def _row(self, image_id):
        try:
            return self._index.rows[image_id]
        except KeyError:
            raise WskError(f"no image {image_id!r} in this labels file", self.path) from None

    def image_path(self, image_id):
        """The image file (absolute)."""
        return self._row(image_id).image

    def image(self, image_id):
        """The photograph as RGB uint8 ``(H, W, 3)``."""
        return read_image(self.image_path(image_id))

    def labels(self, image_id):
        """Image-level labels: sorted 1-based class indices."""
        return self._row(image_id).labels

    def mask_path(self, image_id):
        """The ground-truth mask file, or None."""
        return self._row(image_id).mask

    def object_mask_path(self, image_id):
        """None: a labels file has no instance masks."""
        return None

    def annotation(self, image_id):
        """None: a labels file has no XML objects."""
        return None

    def objects(self, image_id):
        """``{class index: objects}``: counted in the mask (``count_mask_objects``), else one per label."""
        mask = self.mask(image_id)
        if mask is None:
            return dict.fromkeys(self.labels(image_id), 1)
        return count_mask_objects(mask)
