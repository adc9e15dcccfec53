"""Localization maps (Eq. 2) and rough masks (Eq. 5) against hand-built proposals and scores."""

import numpy as np
import pytest

from wsk.errors import WskError
from wsk.pseudo import localization_maps, rough_masks
from wsk.pseudo.regions import proposals_from_masks


def column_masks(height, width, spans):
    """Masks covering rows ``r0:r1`` and columns ``c0:c1`` for each ``(r0, r1, c0, c1)``."""
    masks = np.zeros((len(spans), height, width), bool)
    for i, (r0, r1, c0, c1) in enumerate(spans):
        masks[i, r0:r1, c0:c1] = True
    return masks


def test_proposals_from_masks_reproduce_the_masks():
    rng = np.random.default_rng(0)
    masks = rng.random((7, 5, 6)) < 0.4
    masks[0] = False        # an empty mask survives too
    proposals = proposals_from_masks(masks)
    np.testing.assert_array_equal(proposals.masks(), masks)
    assert proposals.areas.tolist() == masks.sum(axis=(1, 2)).tolist()


def test_eq2_by_hand():
    # 3 x 4 image; class 2 keeps proposals 0 (left half) and 1 (top row);
    # class 4 keeps proposal 2 (right column)
    masks = column_masks(3, 4, [(0, 3, 0, 2), (0, 1, 0, 4), (0, 3, 3, 4)])
    proposals = proposals_from_masks(masks)
    maps = localization_maps(proposals, {2: [0, 1], 4: [2]}, num_classes=6)
    assert maps.shape == (6, 3, 4) and maps.dtype == np.float32
    p2 = np.array([[1.0, 1.0, 0.5, 0.5],
                   [0.5, 0.5, 0.0, 0.0],
                   [0.5, 0.5, 0.0, 0.0]])
    p4 = np.array([[0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 1]], float)
    bg = np.array([[0.0, 0.0, 0.5, 0.0],      # top-right: 1 - 0.5 - 1 < 0 -> 0
                   [0.5, 0.5, 1.0, 0.0],
                   [0.5, 0.5, 1.0, 0.0]])
    np.testing.assert_allclose(maps[2], p2)
    np.testing.assert_allclose(maps[4], p4)
    np.testing.assert_allclose(maps[0], bg)
    for absent in (1, 3, 5):
        assert not maps[absent].any()


def test_eq2_matches_mean_of_masks_on_random_proposals():
    rng = np.random.default_rng(1)
    masks = rng.random((12, 9, 7)) < 0.5
    proposals = proposals_from_masks(masks)
    kept = {1: [0, 3, 5, 7], 3: [2, 11]}
    maps = localization_maps(proposals, kept, num_classes=4)
    expected = {k: masks[v].mean(axis=0) for k, v in kept.items()}
    np.testing.assert_allclose(maps[1], expected[1], rtol=1e-6)
    np.testing.assert_allclose(maps[3], expected[3], rtol=1e-6)
    np.testing.assert_allclose(maps[0], np.maximum(0, 1 - expected[1] - expected[3]), atol=1e-6)
    assert not maps[2].any()


def test_eq2_rejects_label_without_proposal_and_background():
    proposals = proposals_from_masks(column_masks(2, 2, [(0, 2, 0, 1)]))
    with pytest.raises(WskError):
        localization_maps(proposals, {1: []}, num_classes=3)
    with pytest.raises(WskError):
        localization_maps(proposals, {0: [0]}, num_classes=3)


def hand_case():
    """4 x 4 image, proposals: r0 left half, r1 right half, r2 top-left 2x2, r3 whole image."""
    masks = column_masks(4, 4, [(0, 4, 0, 2), (0, 4, 2, 4), (0, 2, 0, 2), (0, 4, 0, 4)])
    maps = np.zeros((4, 4, 4), np.float32)            # background + 3 object classes
    maps[1] = np.array([1.0, 0.5, 0.0, 0.0])[None, :]  # p^1 by column
    maps[3] = np.array([0.0, 0.8, 0.8, 0.8])[None, :]  # p^3 by column
    scores = np.array([[0.6, 0.0, 0.1],                # HCP columns: classes 1, 2, 3
                       [0.1, 0.0, 0.3],
                       [0.7, 0.0, 0.0],
                       [0.2, 0.0, 0.9]])
    return proposals_from_masks(masks), scores, maps


def test_eq5_top_regions_and_overlap_rule_by_hand():
    proposals, scores, maps = hand_case()
    # class 1: v = s + mean p^1 = 0.6+0.75, 0.1+0, 0.7+0.75, 0.2+0.375 -> top 2: r2, r0 (left half)
    # class 3: v = 0.1+0.4, 0.3+0.8, 0.0+0.4, 0.9+0.6 -> top 2: r3, r1 (whole image)
    # overlap (left half): column 0 p^1 = 1 > 0 -> 1; column 1 p^1 = 0.5 < 0.8 -> 3
    mask = rough_masks(proposals, scores, maps, labels=(1, 3), top=2)
    expected = np.tile(np.array([1, 3, 3, 3], np.uint8), (4, 1))
    np.testing.assert_array_equal(mask, expected)
    assert mask.dtype == np.uint8


def test_eq5_top_one_and_background():
    proposals, scores, maps = hand_case()
    # class 1 alone, top 1: r2 (v = 1.45) -> top-left 2x2; everything else background
    mask = rough_masks(proposals, scores, maps, labels=(1,), top=1)
    expected = np.zeros((4, 4), np.uint8)
    expected[:2, :2] = 1
    np.testing.assert_array_equal(mask, expected)
    # class 3 alone, top 1: r3 (v = 1.5) -> whole image
    assert (rough_masks(proposals, scores, maps, labels=(3,), top=1) == 3).all()


def test_eq5_vote_keeps_what_enough_top_regions_cover_by_hand():
    proposals, scores, maps = hand_case()
    # class 3, top 2: r3 (whole image) and r1 (right half): only the right half has both
    expected = np.zeros((4, 4), np.uint8)
    expected[:, 2:] = 3
    np.testing.assert_array_equal(rough_masks(proposals, scores, maps, labels=(3,), top=2, vote=1.0), expected)
    # class 1, top 3: r2 (v 1.45, top-left 2x2), r0 (1.35, left half), r3 (0.575, whole image).
    # Cover counts: top-left 2x2 -> 3, rest of the left half -> 2, right half -> 1.
    for vote, rows, cols in ((1.0, 2, 2), (0.6, 4, 2), (0.5, 4, 2), (0.3, 4, 4), (0.0, 4, 4)):
        expected = np.zeros((4, 4), np.uint8)
        expected[:rows, :cols] = 1
        np.testing.assert_array_equal(rough_masks(proposals, scores, maps, labels=(1,), top=3, vote=vote),
                                      expected, err_msg=f"vote {vote}")


def naive_rough_mask(masks, scores, maps, labels, top, vote=0.0):
    chosen = {}
    for k in labels:
        v = [scores[r, k - 1] + maps[k][masks[r]].mean() for r in range(len(masks))]
        order = sorted(range(len(masks)), key=lambda r: (-v[r], r))[:top]
        if vote:
            chosen[k] = masks[order].sum(axis=0) >= vote * len(order)
        else:
            chosen[k] = masks[order].any(axis=0)
    out = np.zeros(masks.shape[1:], np.uint8)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            best = None
            for k in sorted(labels):
                if chosen[k][i, j] and (best is None or maps[k][i, j] > maps[best][i, j]):
                    best = k
            out[i, j] = 0 if best is None else best
    return out


def test_eq5_matches_naive_reference_on_random_proposals():
    rng = np.random.default_rng(2)
    for trial in range(5):
        masks = rng.random((25, 10, 11)) < 0.3
        masks[:, 0, 0] = True                         # no empty region
        proposals = proposals_from_masks(masks)
        scores = rng.dirichlet(np.ones(5), size=25)
        maps = rng.random((6, 10, 11)).astype(np.float32)
        labels = (1, 4, 5)
        got = rough_masks(proposals, scores, maps, labels, top=10)
        np.testing.assert_array_equal(got, naive_rough_mask(masks, scores, maps, labels, 10))
        for top, vote in ((10, 0.5), (7, 0.4), (20, 0.3)):
            got = rough_masks(proposals, scores, maps, labels, top=top, vote=vote)
            np.testing.assert_array_equal(got, naive_rough_mask(masks, scores, maps, labels, top, vote))


def test_eq5_shape_mismatch_is_a_wsk_error():
    proposals, scores, maps = hand_case()
    with pytest.raises(WskError):
        rough_masks(proposals, scores, maps[:, :3], labels=(1,))
    with pytest.raises(WskError):
        rough_masks(proposals, scores[:3], maps, labels=(1,))


def test_crf_unary_by_hand():
    from wsk.pseudo.rough_masks import crf_unary

    # 1 x 2 image, classes 0..3, the image holds class 2: channels [background, 2]
    mask = np.array([[0, 2]], np.uint8)
    maps = np.zeros((4, 1, 2), np.float32)
    maps[0] = [[0.5, 0.25]]
    maps[2] = [[0.5, 0.75]]
    maps[3] = [[0.9, 0.9]]                           # not the image's: left out
    # pixel 0: 0.5 * [1, 0] + 0.4 * [0.5, 0.5] + 0.1 / 2 = [0.75, 0.25]
    # pixel 1: 0.5 * [0, 1] + 0.4 * [0.25, 0.75] + 0.05 = [0.15, 0.85]
    np.testing.assert_allclose(crf_unary(mask, maps, labels=[2]), [[[0.75, 0.25], [0.15, 0.85]]], atol=1e-6)


def test_crf_moves_a_rough_mask_edge_onto_the_image_edge():
    from wsk.pseudo.rough_masks import crf_rough_mask

    # a dark object on the left 16 columns of a bright 32 x 32 image; Eq. 2's map puts the class
    # (3) on the object at 0.6. A rough mask that stops 4 columns short of the object's edge, or runs
    # 4 columns past it, ends on the edge after the CRF.
    image = np.full((32, 32, 3), 230, np.uint8)
    image[:, :16] = 20
    maps = np.zeros((5, 32, 32), np.float32)
    maps[3, :, :16] = 0.6
    maps[0] = 1 - maps[3]
    expected = np.zeros((32, 32), np.uint8)
    expected[:, :16] = 3
    for stop in (12, 20):
        mask = np.zeros((32, 32), np.uint8)
        mask[:, :stop] = 3
        got = crf_rough_mask(image, mask, maps, labels=[3])
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, expected, err_msg=f"mask up to column {stop}")
    # an image without labels keeps its (all-background) mask
    np.testing.assert_array_equal(crf_rough_mask(image, np.zeros((32, 32), np.uint8), maps, labels=[]), 0)
