"""``wsk data check``: validate a dataset (a VOC folder, a labels file, a COCO JSON) and summarise it.

Every problem is collected (not raised) with the file it concerns: a missing or unreadable
image, a mask of another size than its image, a mask value that is no class, an unknown class
name, an empty label set, an id listed twice in a list file, an image without any labels.
"""

import collections
import contextlib
import dataclasses
import os

from wsk import storage
from wsk.classes import load_class_names, short_name
from wsk.data import voc
from wsk.errors import WskError
from wsk.io import read_image, read_label_png
from wsk.stages import progress


@dataclasses.dataclass
class CheckReport:
    """What ``check_dataset`` found: split sizes, per-class counts and ``(path, problem)`` pairs."""

    root: str
    class_names: tuple
    splits: dict = dataclasses.field(default_factory=dict)       # "Segmentation/val" -> #ids
    problems: list = dataclasses.field(default_factory=list)     # (path, problem)
    labels: dict = dataclasses.field(default_factory=dict)       # id -> labels (readable ones)
    objects: dict = dataclasses.field(default_factory=dict)      # id -> {class: objects}
    paper_ids: list | None = None                                # trainval ∩ train_aug, when listed

    def add(self, path, problem):
        self.problems.append((os.fspath(path), problem))

    @property
    def ok(self):
        return not self.problems

    def _per_class(self, ids):
        images = collections.Counter()
        objects = collections.Counter()
        for image_id in ids:
            for cls in self.labels.get(image_id, ()):
                images[cls] += 1
            for cls, n in self.objects.get(image_id, {}).items():
                objects[cls] += n
        return images, objects

    def format(self):
        """The summary printed by ``wsk data check`` (problems listed last)."""
        lines = [f"Dataset {self.root}: {len(self.class_names) - 1} object classes + background, "
                 f"{len(self.labels)} labelled images"]
        lines.append("Images per split:")
        for name, n in self.splits.items():
            lines.append(f"  {name:<28s}{n:>7d}")
        single = [i for i, lab in self.labels.items() if len(lab) == 1]
        multi = [i for i, lab in self.labels.items() if len(lab) > 1]
        lines.append(f"Labels: {len(single)} single-label, {len(multi)} multi-label images")
        images, objects = self._per_class(self.labels)
        header = f"  {'class':<14s}{'images':>8s}{'objects':>9s}"
        if self.paper_ids is not None:
            paper_single = [i for i in self.paper_ids if len(self.labels.get(i, ())) == 1]
            lines.append(f"Paper training set (Main/trainval ∩ train_aug): {len(self.paper_ids)} images, "
                         f"{len(paper_single)} single-label; objects per class as in Table 2:")
            _, paper_all = self._per_class(self.paper_ids)
            _, paper_one = self._per_class(paper_single)
            header += f"{'train all':>11s}{'train single':>14s}"
        lines.append(header)
        for cls in range(1, len(self.class_names)):
            row = f"  {short_name(self.class_names[cls]):<14s}{images[cls]:>8d}{objects[cls]:>9d}"
            if self.paper_ids is not None:
                row += f"{paper_all[cls]:>11d}{paper_one[cls]:>14d}"
            lines.append(row)
        row = f"  {'total':<14s}{sum(images.values()):>8d}{sum(objects.values()):>9d}"
        if self.paper_ids is not None:
            row += f"{sum(paper_all.values()):>11d}{sum(paper_one.values()):>14d}"
        lines.append(row)
        if self.problems:
            lines.append(f"{len(self.problems)} problem(s):")
            lines.extend(f"  {path}: {problem}" for path, problem in self.problems)
        else:
            lines.append("No problems found.")
        return "\n".join(lines)


def list_files(root, class_names):
    """The split list files of a dataset as ``{"Segmentation/val": path}`` (Main's per-class lists skipped)."""
    found = {}
    class_prefixes = tuple(f"{name}_" for name in class_names[1:])
    for parts in voc.SPLIT_DIRS:
        folder = os.path.join(root, *parts)
        if not storage.isdir(folder):
            continue
        for name in sorted(storage.listdir(folder)):
            if name.endswith(".txt") and not name.startswith(class_prefixes):
                found[f"{parts[-1]}/{name[:-4]}"] = os.path.join(folder, name)
    extra = voc.train_aug_list(root)
    if extra is not None and extra not in found.values():
        found["train_aug"] = extra
    return found


def _check_image(dataset, image_id, report):
    """Check one image and its annotation/masks; record its labels and objects when readable."""
    try:
        height, width = read_image(dataset.image_path(image_id)).shape[:2]
    except WskError as err:
        report.add(err.path, err.problem)
        height = width = None
    masks = {}
    for path in (dataset.mask_path(image_id), dataset.object_mask_path(image_id)):
        if path is None:
            continue
        try:
            mask = read_label_png(path)
        except WskError as err:
            report.add(err.path, err.problem)
            continue
        if height is not None and mask.shape != (height, width):
            report.add(path, f"mask is {mask.shape[1]}x{mask.shape[0]} but its image is {width}x{height}")
            continue
        masks[path] = mask
    class_mask = masks.get(dataset.mask_path(image_id))
    xml_path = dataset.annotation_path(image_id)
    objects = None
    try:
        if xml_path is not None:
            source = xml_path
            objects = voc.parse_annotation(xml_path, dataset.class_names)
            labels = tuple(sorted({o.class_index for o in objects}))
            counts = dict(collections.Counter(o.class_index for o in objects))
        elif class_mask is not None:
            source = dataset.mask_path(image_id)
            labels = voc.labels_from_mask(class_mask, dataset.num_classes, source)
            counts = voc.count_mask_objects(class_mask, masks.get(dataset.object_mask_path(image_id)))
        elif dataset.mask_path(image_id) is None:
            report.add(os.path.join(dataset.root, voc.ANNOTATION_DIR, image_id + ".xml"),
                       "no image-level labels: neither Annotations XML nor a mask")
            return
        else:
            return  # the mask's own problem is already reported
    except WskError as err:
        report.add(err.path, err.problem)
        return
    if class_mask is not None and objects is not None:
        try:
            voc.labels_from_mask(class_mask, dataset.num_classes, dataset.mask_path(image_id))
        except WskError as err:
            report.add(err.path, err.problem)
    if not labels:
        report.add(source, "empty label set (no object of any class)")
        return
    report.labels[image_id] = labels
    report.objects[image_id] = counts


def check_dataset(root, show_progress=True):
    """Validate every listed image of a VOC-layout dataset; return a ``CheckReport``.

    Problems are collected, each with its file. A class list that cannot be read, or a root
    that is no folder, is raised at once as a ``WskError``.
    """
    root = os.fspath(root)
    if not storage.isdir(root):
        raise WskError("dataset folder not found", root)
    class_names = load_class_names(root)
    report = CheckReport(root, class_names)
    lists = list_files(root, class_names)
    if not lists:
        report.add(os.path.join(root, "ImageSets"), "no image lists found (ImageSets/Segmentation/*.txt "
                   "or ImageSets/Main/*.txt)")
    all_ids = {}
    for name, path in lists.items():
        try:
            ids = voc.read_id_list(path)
        except WskError as err:
            report.add(err.path, err.problem)
            continue
        if not ids:
            report.add(path, "empty image list (no image id in it)")
        for image_id, n in sorted(voc.duplicate_ids(ids).items()):
            report.add(path, f"id {image_id!r} listed {n} times")
        report.splits[name] = len(set(ids))
        all_ids.update(dict.fromkeys(ids))
    dataset = voc.VOCDataset(root, None, ids=list(all_ids))
    items = dataset.ids
    if show_progress:
        with progress(items, label="checking") as bar:
            for image_id in bar:
                _check_image(dataset, image_id, report)
    else:
        for image_id in items:
            _check_image(dataset, image_id, report)
    if storage.isfile(os.path.join(root, *voc.CLASSIFICATION_TRAINVAL)) and voc.train_aug_list(root):
        report.paper_ids = voc.paper_training_ids(root)
    return report


def source_splits(source):
    """The split names of a non-VOC ``DataSource``: a labels file's, or COCO's train (and val)."""
    if source.kind == "labels":
        from wsk.data.labels_file import load_index

        return sorted(load_index(source.path, source.classes, source.val_fraction).splits)
    return ["train"] + (["val"] if source.val else [])


def check_source(source, show_progress=True):
    """``check_dataset`` for any ``wsk.data.sources.DataSource``: a VOC folder as above; a labels
    file or a COCO JSON is parsed whole (a bad row stops it, naming its row), then every image
    (and mask) of every split is decoded. Returns a ``CheckReport``."""
    from wsk.data.sources import open_dataset

    if source.kind == "voc":
        return check_dataset(source.path, show_progress)
    splits = source_splits(source)
    first = open_dataset(source, splits[0])
    report = CheckReport(source.path, first.class_names)
    for split in splits:
        dataset = open_dataset(source, split)
        report.splits[split] = len(dataset.ids)
        with progress(dataset.ids, label=f"checking {split}") if show_progress else contextlib.nullcontext(
                dataset.ids) as bar:
            for image_id in bar:
                _check_decoded(dataset, image_id, report)
    return report


def _check_decoded(dataset, image_id, report):
    """Decode one image and its mask (a parsed labels file or COCO index already checked the rest)."""
    try:
        height, width = read_image(dataset.image_path(image_id)).shape[:2]
        mask = dataset.mask(image_id)
    except WskError as err:
        report.add(err.path or dataset.image_path(image_id), err.problem)
        return
    if mask is not None and mask.shape != (height, width):
        report.add(dataset.mask_path(image_id), f"mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
                   f"{width}x{height}")
        return
    report.labels[image_id] = dataset.labels(image_id)
    report.objects[image_id] = dataset.objects(image_id)
