"""The synthetic generator's guarantees, checked on the files it writes (conftest: 24 images, 64 px, seed 0)."""

import collections
import filecmp
import os
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from wsk.data.check import check_dataset
from wsk.data.synthetic import border_band, generate_dataset
from wsk.data.voc import VOCDataset, paper_training_ids
from wsk.errors import WskError
from wsk.io import read_image, read_label_png

CLASSES = ["background", "disc", "square", "triangle", "ring", "cross"]


def xml_objects(root, image_id):
    tree = ET.parse(os.path.join(root, "Annotations", f"{image_id}.xml"))
    return [(o.findtext("name"), tuple(int(o.find("bndbox").findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")))
            for o in tree.getroot().iter("object")]


def all_ids(root):
    with open(os.path.join(root, "ImageSets", "Main", "trainval.txt")) as f:
        return f.read().split()


def test_layout_and_splits(synthetic_root):
    assert (synthetic_root / "classes.txt").read_text().split() == CLASSES
    ids = all_ids(synthetic_root)
    assert len(ids) == 24 and len(set(ids)) == 24
    lists = {}
    for folder in ("Main", "Segmentation"):
        for split in ("train", "val", "trainval"):
            lists[folder, split] = (synthetic_root / "ImageSets" / folder / f"{split}.txt").read_text().split()
    train, val = lists["Segmentation", "train"], lists["Segmentation", "val"]
    assert not set(train) & set(val) and sorted(train + val) == sorted(ids)
    assert len(val) == 6  # 25%
    assert lists["Main", "train"] == train and lists["Main", "val"] == val
    assert paper_training_ids(synthetic_root) == sorted(train)
    for i in ids:
        assert read_image(synthetic_root / "JPEGImages" / f"{i}.jpg").shape == (64, 64, 3)
        for folder in ("SegmentationClass", "SegmentationObject"):
            assert read_label_png(synthetic_root / folder / f"{i}.png").shape == (64, 64)
    report = check_dataset(synthetic_root, show_progress=False)
    assert report.problems == []


def test_labels_agree_with_masks_and_objects(synthetic_root):
    ds = VOCDataset(synthetic_root, "trainval")
    counts = collections.Counter()
    for i in ds.ids:
        objects = xml_objects(synthetic_root, i)
        xml_labels = sorted({CLASSES.index(name) for name, _ in objects})
        mask = ds.mask(i)
        mask_labels = sorted({int(v) for v in np.unique(mask)} - {0, 255})
        assert xml_labels == mask_labels, i
        assert list(ds.labels(i)) == xml_labels
        instances = read_label_png(synthetic_root / "SegmentationObject" / f"{i}.png")
        assert sorted(set(np.unique(instances).tolist()) - {0, 255}) == list(range(1, len(objects) + 1))
        for k, (name, (x0, y0, x1, y1)) in enumerate(objects, start=1):
            ys, xs = np.nonzero(instances == k)
            assert set(mask[ys, xs].tolist()) == {CLASSES.index(name)}  # instance k is of its XML class
            assert x0 <= xs.min() + 1 and xs.max() + 1 <= x1 and y0 <= ys.min() + 1 and ys.max() + 1 <= y1
        counts[len(objects)] += 1
    assert set(counts) == {1, 2, 3}


def test_single_label_share_and_same_class_groups(synthetic_root):
    ds = VOCDataset(synthetic_root, "trainval")
    single = [i for i in ds.ids if len(ds.labels(i)) == 1]
    assert len(single) / len(ds.ids) >= 0.4
    assert any(len(xml_objects(synthetic_root, i)) > 1 for i in single)  # several objects of one class
    assert all(len(ds.labels(i)) >= 1 for i in ds.ids)
    assert {c for i in ds.ids for c in ds.labels(i)} == {1, 2, 3, 4, 5}


def test_object_scale_range(synthetic_root):
    shares = []
    for i in all_ids(synthetic_root):
        instances = read_label_png(synthetic_root / "SegmentationObject" / f"{i}.png")
        for k in set(np.unique(instances).tolist()) - {0, 255}:
            shares.append((instances == k).sum() / instances.size)
    assert min(shares) < 0.06   # a few percent of the image
    assert max(shares) > 0.35   # most of the image
    assert min(shares) > 0.002  # never a speck


def test_border_band_is_thin_and_separates_regions(synthetic_root):
    for i in all_ids(synthetic_root):
        mask = read_label_png(synthetic_root / "SegmentationClass" / f"{i}.png")
        instances = read_label_png(synthetic_root / "SegmentationObject" / f"{i}.png")
        assert np.array_equal(mask == 255, instances == 255)
        band = instances == 255
        assert 0 < band.mean() < 0.3  # long borders at 64 px (rings, crosses) reach ~20%
        # no two different regions touch without 255 between them (4-neighbours)
        for a, b in ((instances[:, :-1], instances[:, 1:]), (instances[:-1, :], instances[1:, :])):
            touching = (a != b) & (a != 255) & (b != 255)
            assert not touching.any(), i
        # thin: most band pixels touch a labelled pixel, all are within 3 px of one (slivers
        # squeezed between objects vanish into the band, as in VOC)
        assert near_labelled(band, 1)[band].mean() > 0.85, i
        assert near_labelled(band, 3)[band].all(), i


def test_border_band_on_a_straight_edge():
    instances = np.zeros((6, 8), np.int32)
    instances[:, 4:] = 1  # an edge between columns 3 and 4
    expected = np.zeros((6, 8), bool)
    expected[:, 3:5] = True  # one pixel on each side
    assert np.array_equal(border_band(instances, 1), expected)
    expected[:, 2:6] = True
    assert np.array_equal(border_band(instances, 2), expected)


def near_labelled(band, radius):
    """Pixels with a non-band pixel in their (2 radius + 1)^2 window (naive shifts)."""
    height, width = band.shape
    padded = np.pad(~band, radius)
    near = np.zeros_like(band)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            near |= padded[dy:dy + height, dx:dx + width]
    return near


def test_colour_does_not_tell_the_class(synthetic_root):
    means, labels = [], []
    for i in all_ids(synthetic_root):
        rgb = read_image(synthetic_root / "JPEGImages" / f"{i}.jpg").astype(float)
        mask = read_label_png(synthetic_root / "SegmentationClass" / f"{i}.png")
        instances = read_label_png(synthetic_root / "SegmentationObject" / f"{i}.png")
        for k in set(np.unique(instances).tolist()) - {0, 255}:
            where = instances == k
            means.append(rgb[where].mean(0))
            labels.append(int(mask[where][0]))
    means, labels = np.array(means), np.array(labels)
    # leave-one-out nearest neighbour on an object's mean colour is near chance (1/5)
    dist = np.abs(means[:, None] - means[None]).sum(-1)
    np.fill_diagonal(dist, np.inf)
    accuracy = (labels[dist.argmin(1)] == labels).mean()
    assert accuracy < 0.5
    # each class appears in very different colours
    for c in set(labels.tolist()):
        members = means[labels == c]
        if len(members) >= 3:
            assert np.abs(members[:, None] - members[None]).sum(-1).max() > 100, c


def test_deterministic_for_a_seed(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for root, seed in ((a, 5), (b, 5), (c, 6)):
        generate_dataset(root, num_images=6, size=48, seed=seed)
    files = sorted(os.path.relpath(os.path.join(d, f), a) for d, _, fs in os.walk(a) for f in fs)
    assert len(files) == 6 * 4 + 8  # image, 2 masks, XML per image; 7 lists + classes.txt
    match, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert mismatch == [] and errors == []
    images = [f for f in files if f.startswith("JPEGImages")]
    _, different, _ = filecmp.cmpfiles(a, c, images, shallow=False)
    assert len(different) == len(images)


def test_refuses_bad_arguments_and_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(WskError, match="not empty"):
        generate_dataset(tmp_path, num_images=4, size=32, seed=0)
    generate_dataset(tmp_path, num_images=4, size=32, seed=0, overwrite=True)
    assert (tmp_path / "keep.txt").read_text() == "mine"  # only its own folders are replaced
    with pytest.raises(WskError, match="at least 4 images"):
        generate_dataset(tmp_path / "x", num_images=3)
    with pytest.raises(WskError, match="at least 32 px"):
        generate_dataset(tmp_path / "y", num_images=8, size=16)
