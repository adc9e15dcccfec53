"""Candidate selection (§3.1): softmax score strictly above 0.5 for a ground-truth label."""

import numpy as np
import pytest

from wsk.errors import WskError
from wsk.pseudo import select_candidates


def test_threshold_is_strict_and_labels_map_to_hcp_columns():
    # 5 proposals x 4 object classes; dataset class k is HCP column k - 1
    scores = np.array([
        [0.10, 0.50, 0.20, 0.20],
        [0.05, 0.90, 0.02, 0.03],
        [0.40, 0.10, 0.20, 0.30],
        [0.20, 0.50001, 0.10, 0.19999],
        [0.70, 0.10, 0.10, 0.10],
    ])
    candidates, labels = select_candidates(scores, labels=(2, 1))
    # class 2 (column 1): proposals 1 (0.9) and 3 (0.50001), ranked by score; 0 (exactly 0.5) excluded
    # class 1 (column 0): proposal 4 (0.7)
    assert candidates.tolist() == [1, 3, 4]
    assert labels.tolist() == [2, 2, 1]
    assert candidates.dtype == np.int32 and labels.dtype == np.int32


def test_label_without_candidate_and_image_without_labels():
    scores = np.full((3, 2), 0.5)
    candidates, labels = select_candidates(scores, labels=(1, 2))
    assert candidates.tolist() == [] and labels.tolist() == []
    candidates, labels = select_candidates(scores, labels=())
    assert candidates.shape == (0,) and labels.shape == (0,)


def test_custom_threshold():
    scores = np.array([[0.3], [0.2], [0.35]])
    assert select_candidates(scores, (1,), threshold=0.25)[0].tolist() == [2, 0]


def test_bad_labels_are_wsk_errors():
    with pytest.raises(WskError):
        select_candidates(np.zeros((2, 3)), labels=(0,))       # background is not an HCP class
    with pytest.raises(WskError):
        select_candidates(np.zeros((2, 3)), labels=(4,))       # beyond the model's classes
    with pytest.raises(WskError):
        select_candidates(np.zeros(3), labels=(1,))
