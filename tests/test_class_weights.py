"""wsk.training.class_weights: class weights balanced on the training targets' class shares."""

import numpy as np
import pytest
from PIL import Image

from wsk.io import save_npz, write_label_png
from wsk.training.class_weights import balanced_class_weights, target_class_mass


def test_power_one_gives_every_class_the_same_total_weight():
    # shares 0.7, 0.2, 0.1: w = (1 / f) / 3, so f * w = 1/3 for each class and sum f w = 1
    weights = balanced_class_weights([70, 20, 10], 1.0)
    assert weights == pytest.approx([1 / 2.1, 1 / 0.6, 1 / 0.3])


def test_power_one_half_by_hand_and_power_zero_is_no_weighting():
    # f ** -0.5 = 1.19523, 2.23607, 3.16228; sum f ** 0.5 = 0.83666 + 0.44721 + 0.31623 = 1.60010
    weights = balanced_class_weights([7, 2, 1], 0.5)
    assert weights == pytest.approx([1.19523 / 1.60010, 2.23607 / 1.60010, 3.16228 / 1.60010], rel=1e-4)
    assert balanced_class_weights([7, 2, 1], 0.0) == pytest.approx([1, 1, 1])


def test_a_class_without_mass_weighs_one_and_no_mass_at_all_gives_ones():
    weights = balanced_class_weights([30, 0, 10], 1.0)
    assert weights == pytest.approx([1 / 1.5, 1.0, 1 / 0.5])   # held shares 0.75, 0.25 over 2 classes
    assert balanced_class_weights([0, 0], 1.0).tolist() == [1.0, 1.0]


def _image(path, height, width):
    Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(path)
    return str(path)


def test_target_mass_counts_mask_pixels_and_normalised_map_mass(tmp_path):
    # masks: 4x5 with 6 pixels of class 2, 2 ignored (255), the rest background; 2x2 all class 1
    first = np.zeros((4, 5), np.uint8)
    first[0, :3], first[1, :3], first[3, :2] = 2, 2, 255
    images = [_image(tmp_path / "a.jpg", 4, 5), _image(tmp_path / "b.jpg", 2, 2)]
    write_label_png(tmp_path / "a.png", first)
    write_label_png(tmp_path / "b.png", np.ones((2, 2), np.uint8))
    mass = target_class_mass(images, [str(tmp_path / "a.png"), str(tmp_path / "b.png")], "hard", 3)
    assert mass.tolist() == [12, 4, 6]
    # maps (C, H, W) 1x2: pixel (0, 0) holds 1 and 3 (shares 0.25, 0.75), pixel (0, 1) nothing
    maps = np.zeros((3, 1, 2), np.float32)
    maps[0, 0, 0], maps[2, 0, 0] = 1.0, 3.0
    save_npz(tmp_path / "m.npz", maps=maps)
    image = [_image(tmp_path / "c.jpg", 1, 2)]
    assert target_class_mass(image, [str(tmp_path / "m.npz")], "soft", 3) == pytest.approx([0.25, 0, 0.75])
    # squared first, as Eq. 4 reads them with target_power 2: 1 and 9 give 0.1 and 0.9
    assert target_class_mass(image, [str(tmp_path / "m.npz")], "soft", 3, target_power=2.0) == pytest.approx(
        [0.1, 0, 0.9])
