"""Proposal scoring (§3.1): crop, roi and masked modes of a tiny random-init HCP, and RoI max pooling."""

import numpy as np
import pytest

from wsk.errors import WskError
from wsk.pseudo.regions import proposals_from_masks
from wsk.pseudo.scoring import ProposalScorer, check_boxes, erase_outside, masked_frame, roi_max_pool

SIZE = 32


@pytest.fixture(scope="module")
def tiny_hcp():
    import keras

    from wsk.models import hcp

    keras.utils.set_random_seed(0)
    return hcp(num_classes=3, image_size=SIZE, width=0.0625)


def hcp_softmax(model, image):
    """The HCP model itself on one hypothesis: its (C,) softmax (max over one hypothesis)."""
    from wsk.models import preprocess_input

    x = preprocess_input(image[None, None].astype(np.float32))
    return np.asarray(model(x, training=False))[0]


def test_roi_max_pool_by_hand():
    features = np.arange(16, dtype=np.float32).reshape(4, 4, 1)
    # a box over the whole 64 x 64 frame (stride 16): 2 x 2 bins are the quadrant maxima
    out = roi_max_pool(features, np.array([[0, 0, 64, 64]]), grid=2, stride=16)
    np.testing.assert_array_equal(out[0, :, :, 0], [[5, 7], [13, 15]])
    # a box inside one cell (pixels 20..30 -> cell 1) repeats that cell in every bin
    out = roi_max_pool(features, np.array([[20, 20, 30, 30]]), grid=2, stride=16)
    np.testing.assert_array_equal(out[0, :, :, 0], [[5, 5], [5, 5]])
    # 3 columns (cells 1..3 from pixels 17..64) and 1 row into 2 x 2 bins: [1] and [2, 3]
    out = roi_max_pool(features, np.array([[17, 0, 64, 15]]), grid=2, stride=16)
    np.testing.assert_array_equal(out[0, :, :, 0], [[1, 3], [1, 3]])


def naive_roi_pool(features, box, grid, stride):
    hf, wf = features.shape[:2]
    x0 = min(int(np.floor(box[0] / stride)), wf - 1)
    y0 = min(int(np.floor(box[1] / stride)), hf - 1)
    x1 = max(min(int(np.ceil(box[2] / stride)), wf), x0 + 1)
    y1 = max(min(int(np.ceil(box[3] / stride)), hf), y0 + 1)
    h, w = y1 - y0, x1 - x0
    out = np.zeros((grid, grid, features.shape[2]), features.dtype)
    for i in range(grid):
        r0 = i * h // grid
        r1 = max((i + 1) * h // grid, r0 + 1)
        for j in range(grid):
            c0 = j * w // grid
            c1 = max((j + 1) * w // grid, c0 + 1)
            out[i, j] = features[y0 + r0:y0 + r1, x0 + c0:x0 + c1].max(axis=(0, 1))
    return out


def test_roi_max_pool_matches_naive_bins():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(7, 9, 3)).astype(np.float32)
    x0 = rng.integers(0, 140, 40)
    y0 = rng.integers(0, 110, 40)
    boxes = np.stack([x0, y0, x0 + rng.integers(1, 144 - x0), y0 + rng.integers(1, 112 - y0)], 1)
    out = roi_max_pool(features, boxes, grid=3, stride=16)
    for box, got in zip(boxes, out):
        np.testing.assert_array_equal(got, naive_roi_pool(features, box, 3, 16))


def test_crop_mode_whole_image_box_equals_hcp(tiny_hcp):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    boxes = np.array([[0, 0, SIZE, SIZE], [4, 2, 20, 30], [10, 10, 11, 12]])
    scores, features = ProposalScorer(tiny_hcp, "crop", batch_size=2)(image, boxes)
    assert scores.shape == (3, 3) and scores.dtype == np.float32
    assert features.shape[0] == 3 and features.dtype == np.float32
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(scores[0], hcp_softmax(tiny_hcp, image), rtol=1e-4, atol=1e-6)
    # a box's score is the HCP score of that box cropped and resized to S x S (bilinear)
    import cv2

    crop = cv2.resize(image[2:30, 4:20].astype(np.float32), (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(scores[1], hcp_softmax(tiny_hcp, crop), rtol=1e-4, atol=1e-6)


def test_roi_mode_whole_image_at_input_size_equals_hcp(tiny_hcp):
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    # roi_scale 1: the image keeps its size S, the whole-image box pools exactly the trunk grid
    scorer = ProposalScorer(tiny_hcp, "roi", roi_scale=1.0)
    scores, features = scorer(image, np.array([[0, 0, SIZE, SIZE], [0, 0, 16, 16]]))
    np.testing.assert_allclose(scores[0], hcp_softmax(tiny_hcp, image), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
    crop_scores, crop_features = ProposalScorer(tiny_hcp, "crop")(image, np.array([[0, 0, SIZE, SIZE]]))
    np.testing.assert_allclose(features[0], crop_features[0], rtol=1e-4, atol=1e-5)


def test_boxes_are_clipped_and_empty_boxes_refused():
    np.testing.assert_array_equal(check_boxes(np.array([[-3, 0, 50, 9]]), (10, 40)), [[0, 0, 40, 9]])
    with pytest.raises(WskError):
        check_boxes(np.array([[5, 5, 5, 9]]), (10, 10))
    with pytest.raises(WskError):
        check_boxes(np.zeros((2, 3)), (10, 10))


def test_unknown_mode_is_a_wsk_error(tiny_hcp):
    with pytest.raises(WskError):
        ProposalScorer(tiny_hcp, "pixels")


MEAN_RGB = np.array([122.675, 116.669, 104.008], np.float32)   # the Caffe VGG mean, in RGB order


def test_masked_hypotheses_by_hand():
    image = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    masks = np.zeros((2, 4, 4), bool)
    masks[0, :2, :2] = True          # top-left quadrant
    masks[1, 1:, 3] = True           # right column, rows 1..3
    segments = proposals_from_masks(masks)
    # at the image's own size: the region's pixels as they are, every other pixel the mean pixel
    out = erase_outside(masked_frame(image, segments, 4), segments, [0, 1])
    for k in range(2):
        expected = np.where(masks[k][..., None], image.astype(np.float32), MEAN_RGB)
        np.testing.assert_allclose(out[k], expected, rtol=0, atol=1e-4)
    # doubled: output pixel (i, j) belongs to the region when source pixel (i // 2, j // 2) does
    big = erase_outside(masked_frame(image, segments, 8), segments, [1])[0]
    inside = np.repeat(np.repeat(masks[1], 2, 0), 2, 1)
    np.testing.assert_allclose(big[~inside], np.broadcast_to(MEAN_RGB, big[~inside].shape), atol=1e-4)
    import cv2

    resized = cv2.resize(image.astype(np.float32), (8, 8), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(big[inside], resized[inside], atol=1e-3)


def test_masked_mode_scores_the_region_alone_in_place(tiny_hcp):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    masks = np.zeros((3, SIZE, SIZE), bool)
    masks[0] = True
    masks[1, 4:20, 6:30] = True
    masks[2, 20:, :10] = True
    masks[2, 25:, 25:] = True    # two pieces: the box is wide, the segment is not
    segments = proposals_from_masks(masks)
    scores, features = ProposalScorer(tiny_hcp, "masked", batch_size=2)(image, segments.boxes, segments)
    assert scores.shape == (3, 3) and features.shape[0] == 3
    np.testing.assert_allclose(scores[0], hcp_softmax(tiny_hcp, image), rtol=1e-4, atol=1e-6)
    for k in (1, 2):
        erased = np.where(masks[k][..., None], image.astype(np.float32), MEAN_RGB)
        np.testing.assert_allclose(scores[k], hcp_softmax(tiny_hcp, erased), rtol=1e-4, atol=1e-6)
    with pytest.raises(WskError, match="segments"):
        ProposalScorer(tiny_hcp, "masked")(image, segments.boxes)
