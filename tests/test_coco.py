"""COCO instances JSONs: classes, ids, labels, hand-worked masks, the index and bad input.

Rasterisation convention checked here (pycocotools): a polygon rectangle with integer corners
x0 < x1, y0 < y1 covers columns x0 .. x1-1 and rows y0 .. y1-1. RLE counts run down the
columns (column-major), starting with a run of zeros.
"""

import json
import os

import numpy as np
import pytest
from PIL import Image

from wsk.data import coco
from wsk.data.sources import DataSource, open_dataset
from wsk.errors import WskError

H, W = 6, 8
A, B = "COCO_train2014_000000000009", "COCO_train2014_000000000025"


def rect(x0, y0, x1, y1):
    return [x0, y0, x1, y0, x1, y1, x0, y1]


# category ids 18, 1, 3 (listed unsorted) -> classes by sorted id: 1 person, 2 traffic light, 3 dog
CATEGORIES = [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}, {"id": 3, "name": "traffic light"}]
IMAGES = [
    {"id": 9, "file_name": A + ".jpg", "height": H, "width": W},
    {"id": 25, "file_name": B + ".png", "height": H, "width": W},
    {"id": 30, "file_name": "COCO_train2014_000000000030.jpg", "height": H, "width": W},  # crowd only
    {"id": 31, "file_name": "COCO_train2014_000000000031.jpg", "height": H, "width": W},  # nothing
]
ANNOTATIONS = [
    # image A: a small person listed BEFORE the large dog it lies on, and a crowd of traffic lights
    {"id": 102, "image_id": 9, "category_id": 1, "iscrowd": 0, "area": 4.0, "segmentation": [rect(2, 1, 4, 3)]},
    {"id": 101, "image_id": 9, "category_id": 18, "iscrowd": 0, "area": 24.0, "segmentation": [rect(0, 0, 6, 4)]},
    # uncompressed RLE: 33 zeros, then pixels 33..37 column-major = column 5 rows 3-5, column 6 rows 0-1
    {"id": 103, "image_id": 9, "category_id": 3, "iscrowd": 1, "area": 5.0,
     "segmentation": {"counts": [33, 5, 10], "size": [H, W]}},
    # image B: a compressed RLE traffic light (rows 2-4, columns 4-6: counts 26,3,3,3,3,3,7)
    {"id": 201, "image_id": 25, "category_id": 3, "iscrowd": 0, "area": 9.0,
     "segmentation": {"counts": "j0330004", "size": [H, W]}},
    {"id": 202, "image_id": 25, "category_id": 1, "iscrowd": 0, "area": 4.0, "segmentation": [rect(0, 0, 2, 2)]},
    # one person in two polygons: column 0 rows 4-5, and columns 6-7 row 0
    {"id": 203, "image_id": 25, "category_id": 1, "iscrowd": 0, "area": 4.0,
     "segmentation": [rect(0, 4, 1, 6), rect(6, 0, 8, 1)]},
    {"id": 301, "image_id": 30, "category_id": 18, "iscrowd": 1, "area": 48.0,
     "segmentation": {"counts": [0, 48], "size": [H, W]}},
]

X = 255
MASK_A = np.array([
    [3, 3, 3, 3, 3, 3, X, 0],
    [3, 3, 1, 1, 3, 3, X, 0],
    [3, 3, 1, 1, 3, 3, 0, 0],
    [3, 3, 3, 3, 3, X, 0, 0],
    [0, 0, 0, 0, 0, X, 0, 0],
    [0, 0, 0, 0, 0, X, 0, 0],
], np.uint8)
MASK_B = np.array([
    [1, 1, 0, 0, 0, 0, 1, 1],
    [1, 1, 0, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 2, 2, 2, 0],
    [0, 0, 0, 0, 2, 2, 2, 0],
    [1, 0, 0, 0, 2, 2, 2, 0],
    [1, 0, 0, 0, 0, 0, 0, 0],
], np.uint8)


def write_coco(folder, images=IMAGES, annotations=ANNOTATIONS, categories=CATEGORIES, name="instances.json"):
    img_dir = folder / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    for img in images:
        Image.fromarray(np.full((img["height"], img["width"], 3), 90, np.uint8)).save(img_dir / img["file_name"])
    path = folder / name
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return str(path), str(img_dir)


@pytest.fixture
def coco_files(tmp_path):
    return write_coco(tmp_path)


def source_of(path, images, **kw):
    return DataSource("coco", path, images=images, **kw)


@pytest.mark.parametrize("indexed", [False, True])
def test_ids_classes_labels_objects(coco_files, tmp_path, indexed):
    path, images = coco_files
    ds = open_dataset(source_of(path, images, index=str(tmp_path / "idx") if indexed else None), "train")
    assert isinstance(ds, coco.CocoDataset) and len(ds) == 2
    assert ds.ids == [A, B]
    assert ds.class_names == ("background", "person", "traffic light", "dog")
    assert ds.num_classes == 4
    assert ds.category_map == {1: 1, 3: 2, 18: 3}
    assert ds.dropped == 2    # image 30 (a crowd only) and image 31 (no annotation)
    assert ds.labels(A) == (1, 3)            # the crowd of traffic lights is no label
    assert ds.labels(B) == (1, 2)
    assert ds.objects(A) == {1: 1, 3: 1}
    assert ds.objects(B) == {1: 2, 2: 1}    # two person annotations, one in two polygons
    assert ds.image_path(B) == os.path.join(images, B + ".png")
    assert ds.image(A).shape == (H, W, 3)
    assert ds.has_mask(A) and ds.mask_path(A) == f"{path}#{A}.jpg"
    assert ds.object_mask_path(A) is None and ds.annotation(A) is None
    assert repr(ds) == f"CocoDataset({path!r}, 'train', 2 images)"


def test_category_map_function():
    assert coco.category_map([{"id": 90, "name": "b"}, {"id": 1, "name": "a"}, {"id": 13, "name": "c"}]) \
        == {1: 1, 13: 2, 90: 3}
    assert coco.category_map([{"id": 5, "name": "a"}], ("background", "x", "a")) == {5: 2}


@pytest.mark.parametrize("indexed", [False, True])
def test_masks_hand_worked(coco_files, tmp_path, indexed):
    path, images = coco_files
    ds = coco.CocoDataset(source_of(path, images, index=str(tmp_path / "idx") if indexed else None), "train")
    for image_id, expected in ((A, MASK_A), (B, MASK_B)):
        mask = ds.mask(image_id)
        assert mask.dtype == np.uint8 and mask.shape == (H, W)
        np.testing.assert_array_equal(mask, expected, err_msg=image_id)


def test_index_files_and_no_second_read(coco_files, tmp_path, monkeypatch):
    path, images = coco_files
    index = tmp_path / "idx"
    source = source_of(path, images, index=str(index))
    reads = []
    real_read = coco._read_coco
    monkeypatch.setattr(coco, "_read_coco", lambda p: reads.append(p) or real_read(p))
    coco.CocoDataset(source, "train")
    assert reads == [path]
    meta = json.loads((index / "train.json").read_text())
    assert meta["ids"] == [A, B] and meta["dropped"] == 2 and meta["json"] == path
    assert meta["labels"] == [[1, 3], [1, 2]] and meta["sizes"] == [[H, W], [H, W]]
    assert meta["category_map"] == {"1": 1, "3": 2, "18": 3}
    assert sorted(os.listdir(index / "train")) == [A + ".json", B + ".json"]   # not the dropped ones
    record = json.loads((index / "train" / f"{A}.json").read_text())
    assert [(r["category_id"], r["iscrowd"]) for r in record] == [(1, 0), (18, 0), (3, 1)]

    # a fresh worker process: no caches; it reads the index and the one record, never the JSON
    coco._index_file.cache_clear()
    coco._memory_index.cache_clear()
    loaded = []
    real_load = coco.load_json
    monkeypatch.setattr(coco, "load_json", lambda p: loaded.append(os.path.relpath(p, index)) or real_load(p))
    worker = coco.CocoDataset(source, "train", ids=[B])
    np.testing.assert_array_equal(worker.mask(B), MASK_B)
    assert reads == [path]
    assert loaded == ["train.json", os.path.join("train", B + ".json")]
    with pytest.raises(WskError, match="not in split"):
        coco.CocoDataset(source, "train", ids=["COCO_train2014_000000000030"])   # dropped


def test_index_rebuilt_when_json_changes(coco_files, tmp_path, monkeypatch):
    path, images = coco_files
    source = source_of(path, images, index=str(tmp_path / "idx"))
    assert coco.CocoDataset(source, "train").ids == [A, B]
    reads = []
    real_read = coco._read_coco
    monkeypatch.setattr(coco, "_read_coco", lambda p: reads.append(p) or real_read(p))
    coco.CocoDataset(source, "train")
    assert reads == []
    # image B loses its annotations: it is dropped, its record removed
    write_coco(tmp_path, annotations=[a for a in ANNOTATIONS if a["image_id"] != 25])
    ds = coco.CocoDataset(source, "train")
    assert reads == [path]
    assert ds.ids == [A] and ds.dropped == 3
    assert os.listdir(tmp_path / "idx" / "train") == [A + ".json"]
    np.testing.assert_array_equal(ds.mask(A), MASK_A)


def test_val_split_and_split_errors(coco_files, tmp_path):
    path, images = coco_files
    with pytest.raises(WskError, match="no validation JSON"):
        coco.CocoDataset(source_of(path, images), "val")
    with pytest.raises(WskError, match="'train', 'val'"):
        coco.CocoDataset(source_of(path, images), "test")
    val_path, val_images = write_coco(tmp_path / "v", images=IMAGES[1:2],
                                      annotations=[a for a in ANNOTATIONS if a["image_id"] == 25])
    source = source_of(path, images, val=val_path, val_images=val_images, index=str(tmp_path / "idx"))
    val = open_dataset(source, "val")
    assert val.ids == [B] and val.dropped == 0 and val.root == val_path
    np.testing.assert_array_equal(val.mask(B), MASK_B)
    assert os.path.isfile(tmp_path / "idx" / "val.json")
    assert open_dataset(source, "train").ids == [A, B]


def test_class_list_maps_by_name(coco_files, tmp_path):
    path, images = coco_files
    classes = tmp_path / "classes.txt"
    classes.write_text("background\ndog\ncat\nperson\ntraffic light\n")
    ds = coco.CocoDataset(source_of(path, images, classes=str(classes)), "train")
    assert ds.class_names == ("background", "dog", "cat", "person", "traffic light")
    assert ds.category_map == {18: 1, 1: 3, 3: 4}
    assert ds.labels(A) == (1, 3) and ds.labels(B) == (3, 4)
    expected = MASK_A.copy()
    expected[MASK_A == 3], expected[MASK_A == 1] = 1, 3
    np.testing.assert_array_equal(ds.mask(A), expected)
    classes.write_text("background\ndog\nperson\n")
    with pytest.raises(WskError, match="'traffic light'") as err:
        coco.CocoDataset(source_of(path, images, classes=str(classes)), "train")
    assert err.value.path == path


def test_not_coco_json(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"images": [], "labels": []}))
    with pytest.raises(WskError, match="not a COCO instances JSON") as err:
        coco.CocoDataset(source_of(str(path), str(tmp_path)), "train")
    assert err.value.path == str(path)
    path.write_text("{broken")
    with pytest.raises(WskError, match="not readable JSON"):
        coco.CocoDataset(source_of(str(path), str(tmp_path)), "train")


def test_missing_image_file(coco_files):
    path, images = coco_files
    os.remove(os.path.join(images, B + ".png"))
    os.remove(os.path.join(images, "COCO_train2014_000000000030.jpg"))   # dropped: not needed
    with pytest.raises(WskError) as err:
        coco.CocoDataset(source_of(path, images), "train")
    assert err.value.path == path
    assert err.value.problem.splitlines() == ["1 problem(s) in this COCO JSON:",
                                              f"{os.path.join(images, B + '.png')}: image file not found"]


def test_bad_annotations_collected(tmp_path):
    annotations = ANNOTATIONS + [
        {"id": 900, "image_id": 77, "category_id": 1, "iscrowd": 0, "segmentation": [rect(0, 0, 1, 1)]},
        {"id": 901, "image_id": 9, "category_id": 2, "iscrowd": 0, "segmentation": [rect(0, 0, 1, 1)]},
        {"id": 902, "image_id": 9, "category_id": 1, "iscrowd": 1, "segmentation": {"counts": [3, 4], "size": [H, W]}},
    ]
    images = IMAGES + [dict(IMAGES[0], id=99)]   # the same file name (and stem) twice
    path, img_dir = write_coco(tmp_path, images=images, annotations=annotations)
    with pytest.raises(WskError) as err:
        coco.CocoDataset(source_of(path, img_dir), "train")
    lines = err.value.problem.splitlines()
    assert lines[0] == "4 problem(s) in this COCO JSON:"
    assert lines[1] == f"{os.path.join(img_dir, A + '.jpg')}: same id {A!r} as {A}.jpg"
    assert lines[2] == f"{path}: annotation 900 refers to an unknown image"
    assert lines[3] == f"{path}: annotation 901 refers to an unknown category 2"
    assert lines[4] == f"{path}: annotation 902: RLE counts sum to 7, not 6 x 8"
