"""wsk.data.labels_file: CSV and JSON Lines datasets against a VOC layout and hand-worked rows."""

import csv
import hashlib
import json
import os
import pickle
import shutil
import unicodedata

import numpy as np
import pytest

from wsk.data import labels_file
from wsk.data.labels_file import ALL_SPLIT, BadRows, LabelsFileDataset
from wsk.data.sources import DataSource, open_dataset
from wsk.data.synthetic import generate_dataset
from wsk.data.voc import VOCDataset
from wsk.errors import WskError
from wsk.io import write_image, write_label_png

# where test 1 puts each VOC image (index % 3), with spaces, non-ASCII names and depth
NEW_NAMES = ("a b/ç/img {i:04d} é.jpg", "deep/er/still/x {i}.jpg", "日本/写真 {i}.jpg")


def source(path, **kwargs):
    return DataSource("labels", str(path), **kwargs)


def write_csv(path, header, rows):
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def make_images(root, names, size=(8, 8)):
    for name in names:
        write_image(root / name, np.full(size + (3,), 90, np.uint8))


@pytest.fixture(scope="module")
def voc_and_copies(tmp_path_factory):
    """A 12-image synthetic VOC dataset and a CSV and a JSONL listing renamed copies of it."""
    voc_root = tmp_path_factory.mktemp("voc")
    generate_dataset(voc_root, num_images=12, size=48, seed=0)
    files = tmp_path_factory.mktemp("labels")
    voc = {split: VOCDataset(voc_root, split) for split in ("train", "val")}
    csv_rows, json_lines, expected = [], [], {}
    for split, ds in voc.items():
        for voc_id in ds.ids:
            i = int(voc_id.rsplit("_", 1)[1])
            image = NEW_NAMES[i % 3].format(i=i)
            mask = f"masks/ç {i}.png"
            for rel, src in ((image, ds.image_path(voc_id)), (mask, ds.mask_path(voc_id))):
                (files / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, files / rel)
            names = [ds.class_names[c] for c in ds.labels(voc_id)]
            csv_rows.append((image, "; ".join(names), split, mask))
            # the JSONL leaves out every other mask
            line = {"image": image, "labels": names, "split": split}
            if i % 2 == 0:
                line["mask"] = mask
            json_lines.append(json.dumps(line, ensure_ascii=i % 4 == 0))
            expected[unicodedata.normalize("NFC", image[:-len(".jpg")])] = (ds, voc_id, split)
    write_csv(files / "labels.csv", ("image", "labels", "split", "mask"), csv_rows)
    (files / "labels.jsonl").write_text("\n\n".join(json_lines) + "\n", encoding="utf-8")
    return voc_root, files, expected


@pytest.mark.parametrize("name", ["labels.csv", "labels.jsonl"])
def test_equals_voc_layout(voc_and_copies, name):
    voc_root, files, expected = voc_and_copies
    src = source(files / name, classes=str(voc_root / "classes.txt"))
    every = LabelsFileDataset(src, ALL_SPLIT)
    assert sorted(every.ids) == sorted(expected) and len(every) == 12
    assert every.root == str(files)
    assert every.class_names == ("background", "disc", "square", "triangle", "ring", "cross")
    assert every.num_classes == 6
    for split in ("train", "val"):   # synthetic: every 4th image (3, 7, 11) is val
        ds = open_dataset(src, split)
        assert sorted(ds.ids) == sorted(i for i, e in expected.items() if e[2] == split)
        assert len(ds) == (3 if split == "val" else 9)
    for image_id, (voc, voc_id, _) in expected.items():
        i = int(voc_id.rsplit("_", 1)[1])
        assert image_id == unicodedata.normalize("NFC", NEW_NAMES[i % 3].format(i=i)[:-4])
        assert "/" in image_id
        assert every.labels(image_id) == voc.labels(voc_id)
        np.testing.assert_array_equal(every.image(image_id), voc.image(voc_id))
        assert every.image_path(image_id) == str(files / NEW_NAMES[i % 3].format(i=i))
        assert every.annotation(image_id) is None and every.object_mask_path(image_id) is None
        if name == "labels.csv" or i % 2 == 0:
            assert every.has_mask(image_id)
            np.testing.assert_array_equal(every.mask(image_id), voc.mask(voc_id))
            objects = every.objects(image_id)
            assert set(objects) == set(voc.labels(voc_id)) and min(objects.values()) >= 1
        else:
            assert not every.has_mask(image_id) and every.mask(image_id) is None
            assert every.mask_path(image_id) is None
            assert every.objects(image_id) == dict.fromkeys(voc.labels(voc_id), 1)


def test_classes_from_the_labels(voc_and_copies):
    voc_root, files, expected = voc_and_copies
    ds = LabelsFileDataset(source(files / "labels.csv"), ALL_SPLIT)
    # the 12 images hold all five shapes: sorted by name, background first
    assert ds.class_names == ("background", "cross", "disc", "ring", "square", "triangle")
    for image_id, (voc, voc_id, _) in expected.items():
        assert [ds.class_names[c] for c in ds.labels(image_id)] == sorted(
            voc.class_names[c] for c in voc.labels(voc_id))


def test_bad_rows_are_listed_together(tmp_path):
    make_images(tmp_path, ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"])
    write_label_png(tmp_path / "c.png", np.zeros((8, 8), np.uint8))
    write_label_png(tmp_path / "small.png", np.zeros((6, 8), np.uint8))
    (tmp_path / "classes.txt").write_text("background\ncat\ndog\ntraffic light\n")
    path = tmp_path / "labels.csv"
    path.write_text(
        "image,labels,split,mask\n"              # 1
        "a.jpg,cat ; traffic light,train,\n"     # 2 good
        "b.jpg,dragon,train,\n"                  # 3 unknown class
        "\n"                                     # 4 blank
        "missing.jpg,cat,train,\n"               # 5 missing image
        "c.jpg,dog,val,c.png\n"                  # 6 good, with a mask
        "a.jpg,dog,val,\n"                       # 7 duplicate of row 2
        "d.jpg,,train,\n"                        # 8 empty labels
        "e.jpg,cat,train,small.png\n",           # 9 mask 8x6 for an 8x8 image
        encoding="utf-8")
    with pytest.raises(BadRows) as caught:
        LabelsFileDataset(source(path, classes=str(tmp_path / "classes.txt")), "train")
    err = caught.value
    assert isinstance(err, WskError)
    assert [line.split(": ", 1)[0] for line in err.lines] == [f"{path}:{row}" for row in (3, 5, 7, 8, 9)]
    reasons = [line.split(": ", 1)[1] for line in err.lines]
    assert "unknown class" in reasons[0] and "'dragon'" in reasons[0]
    assert "image not found" in reasons[1] and "missing.jpg" in reasons[1]
    assert "duplicate" in reasons[2] and "row 2" in reasons[2]
    assert reasons[3] == "empty labels cell"
    assert "mask is 8x6 but its image is 8x8" in reasons[4]
    assert str(err) == "\n".join(err.lines)
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is BadRows and again.lines == err.lines and str(again) == str(err)
    # without those rows the file opens; "traffic light" keeps its space
    path.write_text("image,labels,split,mask\na.jpg,cat ; traffic light,train,\nc.jpg,dog,val,c.png\n")
    ds = LabelsFileDataset(source(path, classes=str(tmp_path / "classes.txt")), "train")
    assert ds.ids == ["a"] and ds.labels("a") == (1, 3)


def test_case_duplicates_paths_outside_and_malformed_rows(tmp_path):
    (tmp_path / "data").mkdir()
    make_images(tmp_path / "data", ["Cat/x.jpg", "cat/X.png", "ok.jpg"])
    make_images(tmp_path, ["outside.jpg"])
    path = tmp_path / "data" / "labels.csv"
    path.write_text(
        "image,labels\n"                         # 1
        "Cat/x.jpg,cat\n"                        # 2
        "cat/X.png,cat\n"                        # 3 same id but for case
        "../outside.jpg,cat\n"                   # 4
        "sub/../../outside.jpg,cat\n"            # 5
        f"{tmp_path / 'outside.jpg'},cat\n"      # 6 absolute
        "ok.jpg,cat,val\n"                       # 7 three fields
        "ok.jpg,background;cat\n",               # 8
        encoding="utf-8")
    with pytest.raises(BadRows) as caught:
        LabelsFileDataset(source(path), "train")
    lines = caught.value.lines
    assert len(lines) == 6
    assert lines[0] == f"{path}:3: image id 'cat/X' differs only by case from row 2"
    assert lines[1].startswith(f"{path}:4: ") and "leaves the labels file's folder" in lines[1]
    assert lines[2].startswith(f"{path}:5: ") and "leaves the labels file's folder" in lines[2]
    assert lines[3].startswith(f"{path}:6: ") and "absolute" in lines[3]
    assert lines[4] == f"{path}:7: malformed row: 3 fields, the header has 2"
    assert lines[5].startswith(f"{path}:8: ") and "background" in lines[5]


def test_malformed_json_lines(tmp_path):
    make_images(tmp_path, ["a.jpg", "b.jpg"])
    path = tmp_path / "labels.jsonl"
    path.write_text('{"image": "a.jpg", "labels": ["cat"]}\n'       # 1 good
                    '\n'                                            # 2 blank
                    '{"image": "b.jpg", "labels": "cat"}\n'         # 3 labels not a list
                    '{"image": "b.jpg", "labels": ["cat"]\n'        # 4 bad JSON
                    '["b.jpg"]\n'                                   # 5 not an object
                    '{"image": "b.jpg", "labels": [], "x": 1}\n'    # 6 unknown key
                    '{"image": "b.jpg", "labels": []}\n'            # 7 empty labels
                    '{"image": "b.jpg", "labels": ["cat"], "mask": 3}\n')   # 8 mask not a string
    with pytest.raises(BadRows) as caught:
        LabelsFileDataset(source(path), "train")
    assert [line.split(": ", 1)[0].rsplit(":", 1)[1] for line in caught.value.lines] == [
        "3", "4", "5", "6", "7", "8"]
    assert caught.value.lines[0].endswith("labels must be a list of class names")
    assert caught.value.lines[4].endswith("empty labels cell")


def test_rows_are_numbered_as_lines_across_quoted_newlines(tmp_path):
    make_images(tmp_path, ["a.jpg"])
    path = tmp_path / "labels.csv"
    path.write_text('image,labels\n"a.jpg","cat;\ndog"\n\nmissing.jpg,cat\n')   # a 2-3, blank 4
    with pytest.raises(BadRows) as caught:
        LabelsFileDataset(source(path), "train")
    assert caught.value.lines == [f"{path}:5: image not found: {tmp_path / 'missing.jpg'}"]


def test_header_and_extra_columns_refused(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("image,labels,weight\na.jpg,cat,1\n")
    with pytest.raises(WskError, match="header image,labels"):
        LabelsFileDataset(source(path), "train")


def test_nfd_names_on_disk_give_nfc_ids(tmp_path):
    nfd_cafe = unicodedata.normalize("NFD", "café.jpg")
    nfd_resume = unicodedata.normalize("NFD", "résumé.jpg")
    make_images(tmp_path, [nfd_cafe, nfd_resume])
    path = tmp_path / "labels.csv"
    # the first row names the file as it is on disk (NFD), the second in NFC
    write_csv(path, ("image", "labels"), [(nfd_cafe, "cat"), ("résumé.jpg", "dog")])
    ds = LabelsFileDataset(source(path), ALL_SPLIT)
    assert ds.ids == ["caf\u00e9", "r\u00e9sum\u00e9"]
    assert ds.image_path("caf\u00e9") == str(tmp_path / nfd_cafe)
    assert ds.image_path("r\u00e9sum\u00e9") == str(tmp_path / nfd_resume)
    assert ds.image("r\u00e9sum\u00e9").shape == (8, 8, 3)
    assert ds.class_names == ("background", "cat", "dog") and ds.labels("r\u00e9sum\u00e9") == (2,)
    with pytest.raises(WskError, match="no image 'nope'"):
        ds.labels("nope")
    with pytest.raises(WskError, match="no image"):
        LabelsFileDataset(source(path), ALL_SPLIT, ids=["nope"])


def naive_val(image_id, fraction):
    """The hash rule, written again: sha1 of the UTF-8 id, first 8 hex digits over 2**32."""
    return int(hashlib.sha1(image_id.encode("utf-8")).hexdigest()[:8], 16) / 2**32 < fraction


@pytest.fixture
def two_hundred(tmp_path):
    (tmp_path / "img").mkdir()
    write_image(tmp_path / "img" / "000.jpg", np.zeros((4, 4, 3), np.uint8))
    for i in range(1, 200):
        shutil.copyfile(tmp_path / "img" / "000.jpg", tmp_path / "img" / f"{i:03d}.jpg")
    path = tmp_path / "labels.csv"
    write_csv(path, ("image", "labels"), [(f"img/{i:03d}.jpg", "cat") for i in range(200)])
    return path


def test_val_fraction_is_a_deterministic_hash(two_hundred):
    ids = [f"img/{i:03d}" for i in range(200)]
    val = LabelsFileDataset(source(two_hundred), "val").ids
    train = LabelsFileDataset(source(two_hundred), "train").ids
    assert set(val) == {i for i in ids if naive_val(i, 0.1)}
    assert 10 <= len(val) <= 30 and sorted(val + train) == ids
    labels_file._parse.cache_clear()   # a fresh parse (another process) splits the same way
    assert LabelsFileDataset(source(two_hundred), "val").ids == val
    quarter = LabelsFileDataset(source(two_hundred, val_fraction=0.25), "val").ids
    assert set(quarter) == {i for i in ids if naive_val(i, 0.25)} and set(val) <= set(quarter)
    with pytest.raises(WskError, match="no split 'test': this file has train, val"):
        LabelsFileDataset(source(two_hundred), "test")
    with pytest.raises(WskError, match=r"has no image"):
        LabelsFileDataset(source(two_hundred, val_fraction=0.0), "val")


def test_split_column_refuses_val_fraction_and_lists_splits(tmp_path):
    make_images(tmp_path, ["a.jpg", "b.jpg", "c.jpg"])
    path = tmp_path / "labels.csv"
    write_csv(path, ("image", "labels", "split"), [("a.jpg", "cat", "train"), ("b.jpg", "cat", "holdout"),
                                                    ("c.jpg", "cat", "train")])
    with pytest.raises(WskError, match="--val-fraction is for files without a split column"):
        LabelsFileDataset(source(path, val_fraction=0.2), "train")
    with pytest.raises(WskError) as caught:
        LabelsFileDataset(source(path), "val")
    assert str(caught.value).startswith(f"{path}: no split 'val': this file has holdout, train")
    assert LabelsFileDataset(source(path), "holdout").ids == ["b"]
    assert LabelsFileDataset(source(path), ALL_SPLIT).ids == ["a", "b", "c"]
    write_csv(path, ("image", "labels", "split"), [("a.jpg", "cat", ""), ("b.jpg", "cat", "all")])
    with pytest.raises(BadRows) as caught:
        LabelsFileDataset(source(path), "train")
    assert caught.value.lines == [f"{path}:2: empty split cell",
                                  f"{path}:3: split 'all' is reserved (it names every row)"]


def test_parsed_once_per_process(two_hundred, monkeypatch):
    labels_file._parse.cache_clear()
    calls = []
    real = labels_file._records
    monkeypatch.setattr(labels_file, "_records", lambda path: calls.append(path) or real(path))
    checked = []
    real_on_disk = labels_file._on_disk
    monkeypatch.setattr(labels_file, "_on_disk", lambda *a: checked.append(a) or real_on_disk(*a))
    src = source(two_hundred)
    for _ in range(100):
        ds = LabelsFileDataset(src, "train", ids=["img/007"])
        assert ds.ids == ["img/007"] and ds.labels("img/007") == (1,)
    assert calls == [str(two_hundred)] and len(checked) == 200   # one parse, one look per image
    os.utime(two_hundred, ns=(1, 1))   # another mtime, the same rows: not parsed again
    LabelsFileDataset(src, "train", ids=["img/007"])
    assert len(calls) == 1
    with open(two_hundred, "a") as f:   # a rewritten file (other content) is parsed again
        f.write("\n")
    LabelsFileDataset(src, "train", ids=["img/007"])
    assert len(calls) == 2
