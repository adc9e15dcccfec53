"""The bad-input table (README, "Bad input"): each input is read correctly or refused in one line.

Rows tested elsewhere: an XML naming an unknown class and a mask of another size
(``test_cli_data.py::test_check_reports_each_problem_with_its_file``), a corrupt ``.keras``
(``test_zoo.py::test_add_refuses_a_damaged_file_naming_it``, ``test_predict.py``), a zoo file with
the wrong sha256 (``test_zoo.py::test_wrong_sha256_is_deleted_and_refused``), a SavedModel called
with float or 4-channel input (``test_export.py::test_serving_refuses_float_and_four_channel_input``).
"""

import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from wsk.cli.main import cli
from wsk.data.voc import VOCDataset
from wsk.errors import WskError
from wsk.io import MAX_IMAGE_PIXELS, image_size, read_image

RGB = np.array([[[200, 30, 60], [10, 220, 90]], [[0, 0, 0], [255, 255, 255]]], np.uint8)


def _save(img, path, **kwargs):
    img.save(path, **kwargs)
    return str(path)


def test_grey_jpeg_becomes_three_equal_channels(tmp_path):
    path = _save(Image.fromarray(np.full((4, 5), 77, np.uint8), "L"), tmp_path / "g.jpg", quality=100)
    image = read_image(path)
    assert image.shape == (4, 5, 3) and image.dtype == np.uint8
    assert (image == 77).all()


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = _save(Image.fromarray(np.full((8, 8, 3), (200, 40, 40), np.uint8)).convert("CMYK"),
                 tmp_path / "c.jpg", quality=100)
    image = read_image(path)
    assert image.shape == (8, 8, 3)
    assert abs(int(image[..., 0].mean()) - 200) <= 6 and abs(int(image[..., 1].mean()) - 40) <= 6


def test_rgba_png_drops_alpha(tmp_path):
    rgba = np.concatenate([RGB, np.full((2, 2, 1), 10, np.uint8)], axis=2)
    np.testing.assert_array_equal(read_image(_save(Image.fromarray(rgba, "RGBA"), tmp_path / "a.png")), RGB)


def test_sixteen_bit_png_keeps_its_top_eight_bits(tmp_path):
    values = np.array([[0, 256], [4096, 65535]], np.uint16)
    image = read_image(_save(Image.fromarray(values), tmp_path / "w.png"))
    np.testing.assert_array_equal(image[..., 0], [[0, 1], [16, 255]])


def test_palette_png_photo_gives_its_colours_not_indices(tmp_path):
    img = Image.fromarray(RGB).quantize(colors=4)
    np.testing.assert_array_equal(read_image(_save(img, tmp_path / "p.png")), RGB)


def test_one_pixel_wide_image(tmp_path):
    path = _save(Image.fromarray(np.full((7, 1, 3), 9, np.uint8)), tmp_path / "thin.png")
    assert read_image(path).shape == (7, 1, 3) and image_size(path) == (7, 1)


def test_huge_image_is_refused_from_its_header(tmp_path):
    path = _save(Image.new("L", (10_000, 8_000)), tmp_path / "huge.png")
    assert 10_000 * 8_000 > MAX_IMAGE_PIXELS
    with pytest.raises(WskError, match=r"huge.png: image is 10000x8000: outside 1 pixel"):
        read_image(path)


def test_exif_rotation_is_applied_once_everywhere(tmp_path):
    img = Image.fromarray(np.zeros((4, 6, 3), np.uint8))
    exif = img.getexif()
    exif[0x0112] = 6   # rotate 90 degrees clockwise to view
    path = _save(img, tmp_path / "r.jpg", exif=exif)
    assert read_image(path).shape == (6, 4, 3) and image_size(path) == (6, 4)


@pytest.fixture()
def dataset(synthetic_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    return root


def test_truncated_jpeg_is_refused_by_data_check_and_the_reader(dataset):
    image_id = VOCDataset(dataset, "train").ids[0]
    path = dataset / "JPEGImages" / f"{image_id}.jpg"
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(WskError, match="damaged image"):
        read_image(str(path))
    result = CliRunner().invoke(cli, ["data", "check", str(dataset)])
    assert result.exit_code == 1
    assert f"{path}: damaged image" in result.output
    assert "Traceback" not in result.output


def test_empty_split_is_refused(dataset):
    (dataset / "ImageSets" / "Segmentation" / "val.txt").write_text("")
    result = CliRunner().invoke(cli, ["data", "check", str(dataset)])
    assert result.exit_code == 1
    assert "ImageSets/Segmentation/val.txt: empty image list" in result.output
    with pytest.raises(WskError, match="split 'val' has no image"):
        VOCDataset(dataset, "val")
