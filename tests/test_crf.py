"""wsk.crf: the dense CRF sharpens a blurred prediction along colour edges."""

import dataclasses
import os

import numpy as np
import pytest

from wsk.crf import CRFParams, dense_crf, refine_saved
from wsk.errors import WskError
from wsk.io import read_image, read_label_png, save_npz, write_image


def two_regions(height=40, width=64, edge=32, seed=0):
    """A sharp two-region photo (dark left, bright right, a little noise) and its true labels."""
    image = np.zeros((height, width, 3), np.int32)
    image[:, :edge] = (40, 60, 50)
    image[:, edge:] = (200, 180, 190)
    noise = np.random.default_rng(seed).integers(-6, 7, image.shape)
    truth = np.zeros((height, width), np.int64)
    truth[:, edge:] = 1
    return np.clip(image + noise, 0, 255).astype(np.uint8), truth


def blurred_prediction(height=40, width=64, centre=26.0, softness=6.0):
    """Class-1 probability rising smoothly along x, centred 6 px left of the true edge."""
    p1 = 1.0 / (1.0 + np.exp(-(np.arange(width) - centre) / softness))
    probabilities = np.zeros((height, width, 2), np.float32)
    probabilities[..., 1] = p1
    probabilities[..., 0] = 1.0 - p1
    return probabilities


def iou(labels, truth, cls):
    return np.logical_and(labels == cls, truth == cls).sum() / np.logical_or(labels == cls, truth == cls).sum()


def test_crf_improves_a_blurred_prediction_of_a_sharp_edge():
    image, truth = two_regions()
    probabilities = blurred_prediction()
    before = probabilities.argmax(-1)
    accuracy_before = (before == truth).mean()
    assert accuracy_before == pytest.approx(59 / 64)  # columns 27..31 are wrong (26 is a tie: 0)
    labels, refined = dense_crf(image, probabilities)
    assert labels.shape == (40, 64) and labels.dtype == np.int32
    assert refined.shape == (40, 64, 2) and refined.dtype == np.float32
    np.testing.assert_allclose(refined.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(labels, refined.argmax(-1))
    accuracy_after = (labels == truth).mean()
    assert accuracy_after > accuracy_before
    assert accuracy_after >= 0.99
    assert min(iou(labels, truth, 0), iou(labels, truth, 1)) > max(iou(before, truth, 0), iou(before, truth, 1))


def test_without_the_appearance_kernel_the_edge_is_not_found():
    # The colour edge is what moves the boundary: with bi_w = 0 the CRF only smooths.
    image, truth = two_regions()
    probabilities = blurred_prediction()
    labels, _ = dense_crf(image, probabilities, bi_w=0.0)
    assert (labels == truth).mean() < 0.95


def test_zero_iterations_return_the_input():
    # Mean field starts from Q = exp(-unary) / Z, which is the input softmax itself.
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(12, 17, 4))
    probabilities = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32)
    image = rng.integers(0, 256, (12, 17, 3), dtype=np.uint8)
    labels, refined = dense_crf(image, probabilities, iterations=0)
    np.testing.assert_allclose(refined, probabilities, atol=1e-5)
    np.testing.assert_array_equal(labels, probabilities.argmax(-1))


def test_crf_params_defaults_and_checks():
    assert dataclasses.astuple(CRFParams()) == (4.0, 121.0, 5.0, 3.0, 3.0, 10, 500.0)
    with pytest.raises(WskError, match="bi_rgb_std"):
        CRFParams(bi_rgb_std=0)
    with pytest.raises(WskError, match="iterations"):
        CRFParams(iterations=-1)
    with pytest.raises(WskError, match="reference_side"):
        CRFParams(reference_side=0)
    image, _ = two_regions()
    with pytest.raises(WskError, match="size"):
        dense_crf(image, blurred_prediction(height=39))
    with pytest.raises(WskError, match="uint8"):
        dense_crf(image.astype(np.float32), blurred_prediction())


def test_spatial_stds_scale_with_the_longer_image_side():
    # DeepLab's stds are pixels of a 500 px VOC photo: a 40 x 64 image uses 64/500 = 0.128 of them,
    # the same as giving 121 * 0.128 = 15.488 and 3 * 0.128 = 0.384 in absolute pixels.
    image, _ = two_regions()
    probabilities = blurred_prediction()
    scaled = dense_crf(image, probabilities)[1]
    absolute = dense_crf(image, probabilities, bi_xy_std=15.488, pos_xy_std=0.384, reference_side=None)[1]
    np.testing.assert_allclose(scaled, absolute, atol=1e-6)
    unscaled = dense_crf(image, probabilities, reference_side=None)[1]
    assert np.abs(scaled - unscaled).max() > 0.01
    # a 500 px wide image is VOC's size: the stds act as given
    wide, _ = two_regions(height=8, width=500, edge=250)
    wide_p = blurred_prediction(height=8, width=500, centre=240.0)
    np.testing.assert_allclose(dense_crf(wide, wide_p)[1], dense_crf(wide, wide_p, reference_side=None)[1],
                               atol=1e-6)


def test_at_64_px_the_scaled_crf_keeps_a_thin_object():
    # A 2 px bar, 20 levels brighter than a noisy (+-15) grey background, found by the network at 0.7.
    # VOC's 3 px smoothness and 121 px appearance reach, unscaled, wash it out at 64 px; scaled to the
    # image (0.38 px, 15.5 px) they keep it.
    rng = np.random.default_rng(0)
    image = np.full((64, 64, 3), 120, np.int32)
    image[:, 31:33] += 20
    image = np.clip(image + rng.integers(-15, 16, image.shape), 0, 255).astype(np.uint8)
    probabilities = np.zeros((64, 64, 2), np.float32)
    probabilities[...] = (0.8, 0.2)
    probabilities[:, 31:33] = (0.3, 0.7)
    assert dense_crf(image, probabilities)[0][:, 31:33].mean() >= 0.75   # 0.78 to 0.95 over 6 seeds
    assert dense_crf(image, probabilities, reference_side=None)[0][:, 31:33].mean() <= 0.1


def test_crf_on_a_real_photo(voc_sample):
    image = read_image(voc_sample / "JPEGImages" / "2007_000033.jpg")
    mask = read_label_png(voc_sample / "SegmentationClass" / "2007_000033.png")
    height, width = image.shape[:2]
    assert mask.shape == (height, width)
    # A coarse prediction: the true mask seen through 8x8 blocks, mixed with a uniform guess.
    classes = 21
    coarse = np.where(mask == 255, 0, mask)[::8, ::8]
    onehot = np.eye(classes, dtype=np.float32)[coarse]
    blocky = np.repeat(np.repeat(onehot, 8, 0), 8, 1)[:height, :width]
    probabilities = 0.6 * blocky + 0.4 / classes
    labels, refined = dense_crf(image, probabilities)
    assert labels.shape == (height, width)
    assert refined.shape == (height, width, classes)
    assert set(np.unique(labels)) <= set(np.unique(coarse))
    valid = mask != 255
    accuracy_before = (probabilities.argmax(-1) == mask)[valid].mean()
    accuracy_after = (labels == mask)[valid].mean()
    # the CRF really acts (a no-op CRF fails here): it moves the blocky borders (0.46% of the
    # pixels at the defaults, measured), and not at the cost of accuracy
    assert (labels != probabilities.argmax(-1)).mean() >= 0.002
    assert accuracy_after >= accuracy_before


def test_refine_saved_writes_the_png_and_drops_the_npz(tmp_path):
    image, truth = two_regions()
    write_image(tmp_path / "a.png", image)
    save_npz(tmp_path / "a.npz", probabilities=blurred_prediction())
    tasks = {"a": (str(tmp_path / "a.png"), str(tmp_path / "a.npz"), str(tmp_path / "out" / "a.png"))}
    refine_saved("a", tasks, CRFParams())
    labels = read_label_png(tmp_path / "out" / "a.png")
    assert (labels == truth).mean() >= 0.99
    assert not os.path.exists(tmp_path / "a.npz")
    # Probabilities of another size than the image are refused, naming the file.
    save_npz(tmp_path / "b.npz", probabilities=blurred_prediction(height=20))
    tasks["b"] = (str(tmp_path / "a.png"), str(tmp_path / "b.npz"), str(tmp_path / "out" / "b.png"))
    with pytest.raises(WskError, match="b.npz"):
        refine_saved("b", tasks, CRFParams())


def test_compile_threshold_comes_from_the_environment(monkeypatch):
    import wsk.crf

    monkeypatch.setenv(wsk.crf.COMPILE_PIXELS_ENV, "4096")
    assert wsk.crf.compiled_pixels() == 4096
    monkeypatch.setenv(wsk.crf.COMPILE_PIXELS_ENV, "64 px")
    image, _ = two_regions()
    with pytest.raises(WskError, match="WSK_CRF_COMPILE_PIXELS must be a whole number of pixels, got '64 px'"):
        dense_crf(image, blurred_prediction())
