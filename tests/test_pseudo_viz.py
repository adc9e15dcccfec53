"""Figures of localization maps and rough masks (Fig. 4/5 style)."""

import numpy as np
import pytest

from wsk.classes import voc_palette
from wsk.errors import WskError
from wsk.viz import CAPTION_HEIGHT, GAP, MIN_PANEL_SIDE, figure, heat_overlay

NAMES = ("background", "disc", "square", "ring")


def test_heat_overlay_blends_jet_over_the_image():
    image = np.full((2, 2, 3), 100, np.uint8)
    prob = np.array([[0.0, 1.0], [0.0, 1.0]])
    out = heat_overlay(image, prob, alpha=0.5)
    # JET maps 0 to dark blue (0, 0, 128 in RGB) and 1 (255) to dark red (128, 0, 0)
    np.testing.assert_allclose(out[0, 0], [50, 50, 114], atol=1)
    np.testing.assert_allclose(out[0, 1], [114, 50, 50], atol=1)


def test_figure_layout_and_mask_colours():
    height, width = 40, 80
    image = np.zeros((height, width, 3), np.uint8)
    maps = np.zeros((4, height, width), np.float16)
    maps[1, :, :40] = 1.0
    maps[3, :, 40:] = 0.5
    maps[0] = np.maximum(0, 1 - maps[1:].astype(np.float32).sum(0))
    mask = np.zeros((height, width), np.uint8)
    mask[:, :40] = 1
    mask[:, 40:] = 3
    out = figure(image, maps, [1, 3], mask, NAMES)
    factor = MIN_PANEL_SIDE / height                       # 40 px -> 160 px panels
    panel_w = int(width * factor)
    panels = 1 + 2 + 1 + 1                                 # image, 2 labels, background, mask
    assert out.shape == (CAPTION_HEIGHT + MIN_PANEL_SIDE, panels * panel_w + (panels - 1) * GAP, 3)
    mask_panel = out[CAPTION_HEIGHT:, -panel_w:]
    palette = voc_palette()
    np.testing.assert_array_equal(mask_panel[80, 10], palette[1])
    np.testing.assert_array_equal(mask_panel[80, panel_w - 10], palette[3])
    # captions are drawn: dark text pixels in every white strip
    for index in range(panels):
        x0 = index * (panel_w + GAP)
        assert out[:CAPTION_HEIGHT, x0:x0 + panel_w].min() < 128


def test_figure_refuses_maps_of_another_size():
    with pytest.raises(WskError):
        figure(np.zeros((10, 10, 3), np.uint8), np.zeros((4, 9, 10)), [1], None, NAMES)
