"""wsk.data.voc on hand-made layouts (XML, masks, lists) and on the real voc-sample photographs."""

import collections

import numpy as np
import pytest

from wsk.classes import VOC_CLASSES
from wsk.data import voc
from wsk.data.voc import VOCDataset, object_counts, paper_training_ids, single_label_ids
from wsk.errors import WskError
from wsk.io import write_image, write_label_png

C = {name: i for i, name in enumerate(VOC_CLASSES)}


def xml_text(*objects):
    """A VOC annotation with ``(name, difficult)`` objects."""
    body = "".join(
        f"<object><name>{name}</name><difficult>{int(difficult)}</difficult>"
        f"<bndbox><xmin>2</xmin><ymin>3</ymin><xmax>10</xmax><ymax>12</ymax></bndbox></object>"
        for name, difficult in objects)
    return f"<annotation><filename>x.jpg</filename>{body}</annotation>"


def make_layout(root, lists, xml=None, masks=None, size=(8, 8)):
    """Write ImageSets lists, JPEGs for every listed id, optional XML (id -> text) and masks."""
    ids = set()
    for rel, names in lists.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{n}\n" for n in names))
        ids.update(voc.parse_id_line(n) for n in names)
    for i in ids:
        write_image(root / "JPEGImages" / f"{i}.jpg", np.full(size + (3,), 100, np.uint8))
    for i, text in (xml or {}).items():
        (root / "Annotations").mkdir(exist_ok=True)
        (root / "Annotations" / f"{i}.xml").write_text(text)
    for i, mask in (masks or {}).items():
        write_label_png(root / "SegmentationClass" / f"{i}.png", mask)
    return root


def test_parse_id_line():
    assert voc.parse_id_line("2007_000033\n") == "2007_000033"
    assert voc.parse_id_line("2008_000002  -1") == "2008_000002"
    assert voc.parse_id_line("/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png") == "2007_000032"
    assert voc.parse_id_line("   \n") is None


def test_labels_and_objects_from_xml(tmp_path):
    make_layout(tmp_path, {"ImageSets/Segmentation/train.txt": ["a"]},
                xml={"a": xml_text(("person", True), ("dog", False), ("person", False))})
    ds = VOCDataset(tmp_path, "train")
    assert ds.ids == ["a"] and ds.num_classes == 21
    assert ds.labels("a") == (12, 15)  # dog, person; the difficult person counts too
    assert ds.objects("a") == {15: 2, 12: 1}
    objects = ds.annotation("a")
    assert [o.difficult for o in objects] == [True, False, False]
    assert objects[0].box == (2, 3, 10, 12)
    assert ds.mask("a") is None and ds.mask_path("a") is None


@pytest.mark.parametrize("text, problem", [
    (xml_text(("unicorn", False)), "unknown class name 'unicorn'"),
    (xml_text(("background", False)), "unknown class name 'background'"),
    ("<annotation><object><name>dog</name>", "not readable XML"),
])
def test_bad_xml(tmp_path, text, problem):
    make_layout(tmp_path, {"ImageSets/Segmentation/train.txt": ["a"]}, xml={"a": text})
    with pytest.raises(WskError, match=problem) as err:
        VOCDataset(tmp_path, "train").labels("a")
    assert err.value.path.endswith("Annotations/a.xml")


def test_labels_from_mask_when_no_xml(tmp_path):
    mask = np.zeros((8, 8), np.uint8)
    mask[1:3, 1:3] = 7
    mask[5:7, 4:7] = 3
    mask[0, :] = 255
    make_layout(tmp_path, {"ImageSets/Segmentation/val.txt": ["m"]}, masks={"m": mask})
    ds = VOCDataset(tmp_path, "val")
    assert ds.labels("m") == (3, 7)
    assert np.array_equal(ds.mask("m"), mask)
    assert ds.objects("m") == {3: 1, 7: 1}


def test_mask_value_outside_classes(tmp_path):
    mask = np.zeros((8, 8), np.uint8)
    mask[2, 2] = 30
    make_layout(tmp_path, {"ImageSets/Segmentation/val.txt": ["m"]}, masks={"m": mask})
    with pytest.raises(WskError, match=r"value\(s\) \[30\]") as err:
        VOCDataset(tmp_path, "val").labels("m")
    assert err.value.path.endswith("SegmentationClass/m.png")


def test_sbd_masks_and_no_labels(tmp_path):
    make_layout(tmp_path, {"ImageSets/Segmentation/train.txt": ["s", "n"]})
    mask = np.zeros((8, 8), np.uint8)
    mask[3:5, 3:5] = 19
    write_label_png(tmp_path / "SegmentationClassAug" / "s.png", mask)
    ds = VOCDataset(tmp_path, "train")
    assert ds.mask_path("s").endswith("SegmentationClassAug/s.png")
    assert ds.labels("s") == (19,)
    with pytest.raises(WskError, match="neither Annotations XML nor a mask"):
        ds.labels("n")


def test_count_objects_components_instances_and_specks():
    mask = np.zeros((100, 100), np.uint8)
    mask[10:30, 10:30] = 3          # object 1 of class 3
    mask[30, 10:30] = 255            # VOC border between the two
    mask[31:50, 10:30] = 3          # object 2 of class 3, touching only through the border
    mask[60:70, 60:90] = 7
    mask[95:97, 95:97] = 7          # a 4-pixel speck: under 0.1% of 10,000 pixels
    assert voc.count_mask_objects(mask) == {3: 2, 7: 1}
    speck_only = np.zeros((100, 100), np.uint8)
    speck_only[0, 0] = 5
    assert voc.count_mask_objects(speck_only) == {5: 1}
    # instances: two touching objects of class 3 in one region, told apart by SegmentationObject
    touching = np.zeros((20, 20), np.uint8)
    touching[2:10, 2:18] = 3
    instances = np.zeros((20, 20), np.uint8)
    instances[2:10, 2:10] = 1
    instances[2:10, 10:18] = 2
    assert voc.count_mask_objects(touching) == {3: 1}
    assert voc.count_mask_objects(touching, instances) == {3: 2}


def test_split_lookup_order_and_errors(tmp_path):
    make_layout(tmp_path, {"ImageSets/Segmentation/train.txt": ["a", "b"],
                           "ImageSets/Main/train.txt": ["a", "b", "c"],
                           "ImageSets/Main/val.txt": ["d"],
                           "ImageSets/Segmentation/twice.txt": ["a", "b", "a"]},
                xml={i: xml_text(("cat", False)) for i in "abcd"})
    assert VOCDataset(tmp_path, "train").ids == ["a", "b"]  # Segmentation before Main
    assert VOCDataset(tmp_path, "val").ids == ["d"]          # Main where Segmentation has none
    with pytest.raises(WskError, match="no image list for split 'test'"):
        VOCDataset(tmp_path, "test")
    with pytest.raises(WskError, match="listed more than once, e.g. 'a' \\(2 times\\)") as err:
        VOCDataset(tmp_path, "twice")
    assert err.value.path.endswith("ImageSets/Segmentation/twice.txt")
    with pytest.raises(WskError, match="dataset folder not found"):
        VOCDataset(tmp_path / "absent", "train")


def paper_layout(root, aug_rel="ImageSets/Segmentation/train_aug.txt", aug_lines=None):
    """trainval = a..f; train_aug = c..h: the paper's set is c, d, e, f."""
    xml = {"a": xml_text(("cat", False)),
           "b": xml_text(("dog", False)),
           "c": xml_text(("cat", False), ("cat", True)),                 # single-label, 2 cats
           "d": xml_text(("person", False), ("horse", False)),           # multi-label
           "e": xml_text(("person", False)),                             # single-label
           "f": xml_text(("person", False), ("person", False), ("dog", False)),  # multi-label
           "g": xml_text(("cat", False)), "h": xml_text(("cat", False))}
    lines = aug_lines or ["c", "d", "e", "f", "g", "h"]
    return make_layout(root, {"ImageSets/Main/trainval.txt": list("fabcde"), aug_rel: lines}, xml=xml)


def test_paper_training_sets(tmp_path):
    paper_layout(tmp_path)
    assert paper_training_ids(tmp_path) == ["c", "d", "e", "f"]
    ds = VOCDataset(tmp_path, "paper_train")
    assert ds.ids == ["c", "d", "e", "f"]
    assert single_label_ids(ds) == ["c", "e"]
    assert VOCDataset(tmp_path, "paper_train_single").ids == ["c", "e"]
    # Table 2: objects per class on all images and on single-label ones (difficult counted)
    counts = object_counts(ds)
    assert counts[C["cat"]] == 2 and counts[C["person"]] == 4 and counts[C["horse"]] == 1
    assert counts[C["dog"]] == 1 and sum(counts.values()) == 8 and len(counts) == 20
    single = object_counts(ds, single_label_ids(ds))
    assert single[C["cat"]] == 2 and single[C["person"]] == 1 and sum(single.values()) == 3


def test_paper_training_sets_with_deeplab_list(tmp_path):
    lines = [f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png" for i in "cdegh"]
    paper_layout(tmp_path, aug_rel="train_aug.txt", aug_lines=lines)
    assert paper_training_ids(tmp_path) == ["c", "d", "e"]


def test_paper_training_sets_need_both_lists(tmp_path):
    make_layout(tmp_path, {"ImageSets/Main/trainval.txt": ["a"]})
    with pytest.raises(WskError, match="no train_aug list"):
        paper_training_ids(tmp_path)
    with pytest.raises(WskError, match="trainval list not found"):
        paper_training_ids(tmp_path / "ImageSets")


def test_voc_sample_labels_from_masks(voc_sample):
    ds = VOCDataset(voc_sample, "val")
    assert len(ds) == 15 and ds.class_names == VOC_CLASSES
    assert ds.annotation_path("2007_000033") is None
    labels = {i: ds.labels(i) for i in ds.ids}
    assert labels["2007_000033"] == (C["aeroplane"],)
    # the README of voc-sample: 12 single-label, 3 multi-label; aeroplane in 4 images, bird/person/sheep in 2
    assert sum(len(v) == 1 for v in labels.values()) == 12
    per_class = collections.Counter(c for v in labels.values() for c in v)
    assert per_class[C["aeroplane"]] == 4
    assert per_class[C["bird"]] == per_class[C["person"]] == per_class[C["sheep"]] == 2
    assert per_class[C["dog"]] == 0
    for i in ds.ids:  # each label is a class a naive scan of the mask finds
        mask = ds.mask(i)
        naive = sorted({int(v) for v in mask.ravel().tolist() if v not in (0, 255)})
        assert list(labels[i]) == naive
        assert mask.shape == ds.image(i).shape[:2]
    assert ds.image("2007_000033").shape == (366, 500, 3)
