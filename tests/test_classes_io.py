"""wsk.classes and wsk.io: palette, palette PNG round trip, class list file, atomic writes."""

import os

import numpy as np
import pytest
from PIL import Image

from wsk.classes import IGNORE_LABEL, VOC_CLASSES, load_class_names, short_name, voc_palette
from wsk.errors import WskError
from wsk.io import atomic_path, load_npz, remove_temporaries, read_label_png, save_json, load_json, save_npz, write_label_png

# Colours of the VOC development kit's colour map, written out by hand.
KNOWN_COLOURS = {
    0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 3: (128, 128, 0), 4: (0, 0, 128),
    5: (128, 0, 128), 6: (0, 128, 128), 7: (128, 128, 128), 8: (64, 0, 0), 9: (192, 0, 0),
    12: (64, 0, 128), 15: (192, 128, 128), 20: (0, 64, 128), 255: (224, 224, 192),
}


def test_voc_class_list():
    assert len(VOC_CLASSES) == 21 and VOC_CLASSES[0] == "background"
    assert VOC_CLASSES[1] == "aeroplane" and VOC_CLASSES[15] == "person" and VOC_CLASSES[20] == "tvmonitor"
    assert IGNORE_LABEL == 255


def test_palette_known_colours():
    palette = voc_palette()
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    for index, colour in KNOWN_COLOURS.items():
        assert tuple(palette[index]) == colour, index
    assert len({tuple(c) for c in palette}) == 256  # every index has its own colour


def test_palette_matches_real_voc_mask(voc_sample):
    """The palette stored in an official VOC ground-truth PNG is ours."""
    with Image.open(voc_sample / "SegmentationClass" / "2007_000033.png") as img:
        stored = np.array(img.getpalette()[: 3 * 256], np.uint8).reshape(-1, 3)
    assert np.array_equal(stored[:21], voc_palette()[:21])
    assert tuple(stored[255]) == (224, 224, 192)


def test_label_png_round_trip(tmp_path):
    labels = np.zeros((7, 9), np.uint8)
    labels[1:3, 2:5] = 1
    labels[4, :] = 15
    labels[5, 3] = 20
    labels[:, 8] = 255
    path = tmp_path / "m.png"
    write_label_png(path, labels)
    back = read_label_png(path)
    assert back.dtype == np.uint8 and np.array_equal(back, labels)
    with Image.open(path) as img:
        assert img.mode == "P"
        rgb = np.array(img.convert("RGB"))
    assert tuple(rgb[1, 2]) == (128, 0, 0)
    assert tuple(rgb[4, 0]) == (192, 128, 128)
    assert tuple(rgb[0, 8]) == (224, 224, 192)


def test_label_png_reads_grey_and_rejects_rgb(tmp_path):
    grey = tmp_path / "g.png"
    Image.fromarray(np.array([[0, 3], [255, 7]], np.uint8), mode="L").save(grey)
    assert read_label_png(grey).tolist() == [[0, 3], [255, 7]]
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(rgb)
    with pytest.raises(WskError, match="palette or grey") as err:
        read_label_png(rgb)
    assert err.value.path == str(rgb)
    with pytest.raises(WskError, match="not found"):
        read_label_png(tmp_path / "absent.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(WskError, match="not a readable PNG"):
        read_label_png(bad)
    with pytest.raises(WskError):
        write_label_png(tmp_path / "x.png", np.zeros((2, 2, 3)))


def test_class_list_file(tmp_path):
    assert load_class_names(tmp_path) == VOC_CLASSES
    assert load_class_names(None) == VOC_CLASSES
    (tmp_path / "classes.txt").write_text("# my classes\nbackground\n\ncat\n  dog  \n")
    assert load_class_names(tmp_path) == ("background", "cat", "dog")


@pytest.mark.parametrize("text, problem", [
    ("cat\nbackground\n", "first class must be 'background'"),
    ("background\ncat\ncat\n", "listed twice"),
    ("background\n", "at least one object class"),
])
def test_class_list_errors(tmp_path, text, problem):
    (tmp_path / "classes.txt").write_text(text)
    with pytest.raises(WskError, match=problem) as err:
        load_class_names(tmp_path)
    assert str(err.value).startswith(str(tmp_path / "classes.txt"))


def test_short_names():
    assert short_name("aeroplane") == "plane" and short_name("tvmonitor") == "tv"
    assert short_name("background") == "bkg" and short_name("disc") == "disc"


def test_atomic_path_success_and_failure(tmp_path):
    target = tmp_path / "sub" / "out.npz"
    with atomic_path(target) as tmp:
        assert tmp.endswith(".npz") and os.path.dirname(tmp) == str(target.parent)
        with open(tmp, "w") as f:
            f.write("first")
        assert not target.exists()  # nothing visible before the body finishes
    assert target.read_text() == "first"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            with open(tmp, "w") as f:
                f.write("half-written")
            raise RuntimeError("crash")
    assert target.read_text() == "first"  # the old file survives a crash
    assert sorted(os.listdir(target.parent)) == ["out.npz"]  # no temporary left behind


def test_remove_temporaries_deletes_what_a_killed_write_left_and_nothing_else(tmp_path):
    # a SIGKILL mid-write never runs atomic_path's clean-up: an entered, never exited writer is that state
    writers = [atomic_path(tmp_path / name) for name in ("a.npz", "b.png", "refined.json", "noext")]
    for writer in writers:   # (kept referenced: a collected writer would clean up after itself)
        writer.__enter__()
    kept = ["a.npz", ".hidden", "x.tmp.npz", ".a.npz.short.tmp.npz", "notes.txt"]
    for name in kept:
        (tmp_path / name).write_text("keep")
    assert len(set(os.listdir(tmp_path))) == len(kept) + 4
    assert remove_temporaries(tmp_path) == 4
    assert sorted(os.listdir(tmp_path)) == sorted(kept)
    assert remove_temporaries(tmp_path / "missing") == 0


def test_npz_and_json_round_trip(tmp_path):
    save_npz(tmp_path / "a.npz", x=np.arange(4, dtype=np.int32))
    assert load_npz(tmp_path / "a.npz", required=("x",))["x"].tolist() == [0, 1, 2, 3]
    with pytest.raises(WskError, match="missing y"):
        load_npz(tmp_path / "a.npz", required=("y",))
    (tmp_path / "broken.npz").write_bytes(b"garbage")
    with pytest.raises(WskError, match="damaged"):
        load_npz(tmp_path / "broken.npz")
    save_json(tmp_path / "r.json", {"b": 1, "a": [1.5]})
    assert load_json(tmp_path / "r.json") == {"a": [1.5], "b": 1}
