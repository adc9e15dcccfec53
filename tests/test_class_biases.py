"""wsk.training.class_biases: the per-class logit biases fitted on a network's own pseudo-labels."""

import numpy as np
import pytest

from wsk.training.class_biases import BIAS_GRID, fit_class_biases


def naive_miou(targets, labels, num_classes):
    """Mean IoU over the classes present in the targets or the labels, one class at a time."""
    ious = []
    for c in range(num_classes):
        inter = np.sum((targets == c) & (labels == c))
        union = np.sum((targets == c) | (labels == c))
        if union:
            ious.append(inter / union)
    return float(np.mean(ious))


def test_a_class_ranked_below_background_by_a_margin_gets_the_smallest_bias_that_recovers_it():
    # Ten class-1 pixels score 0.6 under background; ten background pixels score 2.0 under it.
    # Class 1 is labelled where -0.6 + b > 0 (b > 0.6) and background pixels turn to 1 where b > 2:
    # every b in (0.6, 2] labels every pixel right (mIoU 1); b <= 0.6 gives (10/20 + 0) / 2 and
    # b > 2 gives (0 + 10/20) / 2. The grid's values in (0.6, 2] are 0.75 ... 2.0; the nearest 0 wins.
    scores = np.array([[0.0, -0.6]] * 10 + [[0.0, -2.0]] * 10, np.float32)
    targets = np.array([1] * 10 + [0] * 10)
    biases = fit_class_biases(scores, targets, 2)
    assert biases.tolist() == [0.0, 0.75]
    assert naive_miou(targets, (scores + biases).argmax(1), 2) == 1.0
    assert naive_miou(targets, scores.argmax(1), 2) == 0.25


def test_one_free_bias_is_the_exhaustive_grid_search():
    rng = np.random.default_rng(3)
    for trial in range(5):
        targets = rng.integers(0, 2, 400)
        scores = np.stack([rng.normal(0, 1, 400), rng.normal(0, 1, 400) + 1.5 * targets - 1.2], 1)
        # the naive search: every grid value, the best mIoU, ties to the value nearest 0 (then the lower)
        results = [(naive_miou(targets, (scores + [0, v]).argmax(1), 2), v) for v in BIAS_GRID]
        best = max(score for score, _ in results)
        expected = min((v for score, v in results if score >= best - 1e-12), key=lambda v: (abs(v), v))
        biases = fit_class_biases(scores, targets, 2)
        assert biases[0] == 0.0 and biases[1] == pytest.approx(expected), trial


def test_the_fit_never_lowers_the_agreement_and_ignores_255_and_absent_classes():
    rng = np.random.default_rng(0)
    n, classes = 3000, 4
    targets = rng.choice([0, 1, 2], n, p=[0.6, 0.3, 0.1])          # class 3 is in no target
    scores = rng.normal(0, 1, (n, classes)).astype(np.float32)
    scores[np.arange(n), targets] += 1.0
    scores[:, 2] -= 1.5                                             # the rare class under-predicted
    scores[:, 3] -= 6.0                                             # class 3 never wins
    ignored = targets.copy()
    ignored[:500] = 255
    biases = fit_class_biases(scores, ignored, classes)
    kept = slice(500, None)
    before = naive_miou(targets[kept], scores[kept].argmax(1), classes)
    after = naive_miou(targets[kept], (scores[kept] + biases).argmax(1), classes)
    assert after > before + 0.02
    assert biases[0] == 0.0 and biases[2] >= 0.5
    assert biases[3] == 0.0     # a class the targets never hold, never predicted: left alone
    # pixels marked 255 play no part: the fit on the kept pixels alone is the same
    np.testing.assert_array_equal(biases, fit_class_biases(scores[kept], targets[kept], classes))


def test_no_target_pixels_leave_every_bias_at_zero():
    assert fit_class_biases(np.zeros((3, 3)), np.full(3, 255), 3).tolist() == [0.0, 0.0, 0.0]


def test_add_class_biases_shifts_the_logits_by_exactly_the_biases():
    keras = pytest.importorskip("keras")
    from wsk.training.class_biases import add_class_biases

    inputs = keras.Input((5, 5, 2))
    model = keras.Model(inputs, keras.layers.Conv2D(3, 1, name="fc8", bias_initializer="ones")(inputs))
    x = np.random.default_rng(1).normal(size=(1, 5, 5, 2)).astype(np.float32)
    before = np.asarray(model(x))
    add_class_biases(model, [0.0, 0.5, -1.25])
    np.testing.assert_allclose(np.asarray(model(x)) - before,
                               np.broadcast_to([0.0, 0.5, -1.25], before.shape), atol=1e-6)


class ToyDataset:
    """Two 9 x 9 images: background red 100, a 3 x 3 object red 114 (class 1)."""

    class_names = ("background", "thing")

    def __init__(self):
        self.images = {}
        for k, (top, left) in enumerate([(1, 1), (4, 5)]):
            image = np.full((9, 9, 3), 100, np.uint8)
            image[top:top + 3, left:left + 3, 0] = 114
            self.images[f"im{k}"] = (image, (top, left))

    def image(self, image_id):
        return self.images[image_id][0]


def toy_network():
    """Logits at stride 1: background 0; class 1 = 0.1 (R - 122.675) + 0.2675, so -0.6 on the
    object (R 114) and -2.0 on the background (R 100); preprocessing puts R - 122.675 in channel 2."""
    keras = pytest.importorskip("keras")
    inputs = keras.Input((None, None, 3))
    fc8 = keras.layers.Conv2D(2, 1, name="fc8")
    model = keras.Model(inputs, fc8(inputs))
    kernel = np.zeros((1, 1, 3, 2), np.float32)
    kernel[0, 0, 2, 1] = 0.1
    fc8.set_weights([kernel, np.array([0.0, 0.2675], np.float32)])
    return model


def toy_targets(tmp_path, dataset):
    from wsk.io import write_label_png

    paths = []
    for image_id, (_, (top, left)) in dataset.images.items():
        mask = np.zeros((9, 9), np.uint8)
        mask[top:top + 3, left:left + 3] = 1
        mask[0, 0] = 255
        paths.append(str(tmp_path / f"{image_id}.png"))
        write_label_png(paths[-1], mask)
    return paths


def test_calibrate_finds_the_hand_computed_bias_of_a_network_and_adds_it(tmp_path):
    # The hand case of the first test, through the images, the masks and the network: every object
    # pixel is 0.6 under background, every background pixel 2.0 under, so the bias is 0.75.
    from wsk.models.inference import segment
    from wsk.training.class_biases import calibrate

    dataset, model = ToyDataset(), toy_network()
    targets = toy_targets(tmp_path, dataset)
    record = calibrate(model, dataset, list(dataset.images), targets, "hard", max_side=None)
    assert record["class_biases"] == [0.0, 0.75]
    assert record["pixels"] == 2 * 80                        # 81 pixels an image, one marked 255
    # before: background only, IoU 71/80 on background and 0 on the object; after: every pixel right
    assert record["pseudo_label_miou"] == {"before": round(100 * (71 / 80) / 2, 2), "after": 100.0}
    labels = np.asarray(segment(model, dataset.image("im1")[None])[0])[0]
    expected = np.zeros((9, 9), np.int64)
    expected[4:7, 5:8] = 1
    np.testing.assert_array_equal(labels, expected)


def test_calibration_pixels_draw_the_budget_and_pair_scores_with_their_targets(tmp_path):
    from wsk.training.class_biases import calibration_pixels

    dataset, model = ToyDataset(), toy_network()
    targets = toy_targets(tmp_path, dataset)
    scores, labels = calibration_pixels(model, dataset, list(dataset.images), targets, "hard", None, pixels=40)
    assert scores.shape == (40, 2) and labels.shape == (40,)      # 20 pixels from each image
    margin = scores[:, 1] - scores[:, 0]                           # log p1 - log p0 = the logit margin
    np.testing.assert_allclose(margin[labels == 1], -0.6, atol=1e-4)
    np.testing.assert_allclose(margin[labels == 0], -2.0, atol=1e-4)
    assert set(labels.tolist()) <= {0, 1, 255}


def test_soft_targets_give_the_maps_argmax_and_255_where_no_map_has_mass(tmp_path):
    from wsk.io import save_npz
    from wsk.training.class_biases import target_labels

    maps = np.zeros((3, 1, 3), np.float16)          # (C, H, W): three pixels
    maps[:, 0, 0] = [0.2, 0.5, 0.3]                 # class 1 leads
    maps[:, 0, 1] = [0.6, 0.0, 0.4]                 # background leads
    save_npz(tmp_path / "m.npz", maps=maps)         # pixel 2: no mass, ignored by Eq. 4's loss
    assert target_labels(tmp_path / "m.npz", "soft", 1, 3, 3).tolist() == [[1, 0, 255]]
