"""wsk.data.pipelines: targets on the logits' grid, soft-target normalisation, aligned
augmentation, determinism and resumption of the epoch stream, HCP inputs."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from wsk.data import augmentation, pipelines  # noqa: E402
from wsk.errors import WskError  # noqa: E402
from wsk.io import save_npz, write_image, write_label_png  # noqa: E402

MEAN_BGR = np.array([104.008, 116.669, 122.675], np.float32)
# Far-apart colours: class k of a synthetic image is painted COLOURS[k].
COLOURS = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], np.uint8)


def to_rgb(preprocessed):
    """Undo BGR-minus-mean by hand."""
    return (np.asarray(preprocessed) + MEAN_BGR)[..., ::-1]


def colour_class(rgb):
    """Class of each pixel: the nearest of COLOURS."""
    d = ((rgb[..., None, :] - COLOURS[None, None].astype(np.float32)) ** 2).sum(-1)
    return d.argmin(-1)


def blocky_classes(height, width):
    """An asymmetric class map: four unequal blocks (no mirror symmetry either way)."""
    classes = np.zeros((height, width), np.uint8)
    classes[: height // 3, : width // 4] = 1
    classes[: height // 3, width // 4:] = 2
    classes[height // 3:, : (2 * width) // 3] = 3
    classes[height // 3:, (2 * width) // 3:] = 4
    classes[height - 9:, 5:12] = 1
    return classes


@pytest.fixture(scope="module")
def pair_files(tmp_path_factory):
    """Three images painted from their class maps, with masks and one-hot localization maps."""
    folder = tmp_path_factory.mktemp("pairs")
    images, masks, maps = [], [], []
    for i, (h, w) in enumerate([(41, 57), (57, 49), (49, 41)]):
        classes = blocky_classes(h, w)
        write_image(folder / f"{i}.png", COLOURS[classes])
        write_label_png(folder / f"{i}_mask.png", classes)
        save_npz(folder / f"{i}.npz", maps=np.stack([(classes == k) for k in range(5)]).astype(np.float16))
        images.append(str(folder / f"{i}.png"))
        masks.append(str(folder / f"{i}_mask.png"))
        maps.append(str(folder / f"{i}.npz"))
    return images, masks, maps


def test_shrink_picks_every_eighth_pixel_of_a_hand_made_grid():
    grid = np.arange(17)[:, None] * 100 + np.arange(17)[None, :]     # value = 100 * row + col
    expected = np.array([[0, 8, 16], [800, 808, 816], [1600, 1608, 1616]])
    np.testing.assert_array_equal(pipelines.shrink_to_logits(grid), expected)
    np.testing.assert_array_equal(pipelines.shrink_to_logits(tf.constant(grid)).numpy(), expected)


def test_shrink_at_stride_4_picks_every_fourth_pixel():
    grid = np.arange(9)[:, None] * 100 + np.arange(9)[None, :]
    expected = np.array([[0, 4, 8], [400, 404, 408], [800, 804, 808]])
    np.testing.assert_array_equal(pipelines.shrink_to_logits(grid, 4), expected)
    assert pipelines.check_crop_size(65, 4) == 17 and pipelines.check_crop_size(33, 4) == 9
    with pytest.raises(WskError, match="4k\\+1"):
        pipelines.check_crop_size(63, 4)


def test_crop_sizes_must_be_8k_plus_1():
    assert pipelines.check_crop_size(321) == 41     # the paper's crop, DeepLab's 41x41 logits
    assert pipelines.check_crop_size(97) == 13
    assert pipelines.check_crop_size(33) == 5
    with pytest.raises(WskError, match="8k\\+1"):
        pipelines.check_crop_size(320)


def test_soft_targets_are_the_maps_normalised_across_channels(tmp_path):
    rng = np.random.default_rng(0)
    maps = rng.random((3, 33, 41)).astype(np.float16)
    maps[:, 0, 8] = 0          # a pixel on the grid without mass
    write_image(tmp_path / "a.png", rng.integers(0, 255, (33, 41, 3), np.uint8))
    save_npz(tmp_path / "a.npz", maps=maps)
    data = pipelines.segmentation_dataset([str(tmp_path / "a.png")], [str(tmp_path / "a.npz")],
                                          "soft", 3, 33, 1, 1, seed=0, scale_range=(1, 1), flip=False)
    (image, target), = list(data)
    assert target.shape == (1, 5, 5, 3)
    # Crop 33 of a 33x41 image at scale 1: rows 0..32 and columns x..x+32 for some x; find x
    # from the image and normalise the picked pixels by hand.
    raw = maps.astype(np.float32)
    found = False
    for x in range(41 - 33 + 1):
        picked = raw[:, 0:33:8, x:x + 33:8].transpose(1, 2, 0)
        sums = picked.sum(-1, keepdims=True)
        expected = np.where(sums > 0, picked / np.where(sums > 0, sums, 1), 0)
        if np.allclose(target[0].numpy(), expected, atol=1e-6):
            found = True
    assert found
    sums = target.numpy().sum(-1)
    assert np.all((np.abs(sums - 1) < 1e-5) | (sums == 0))


def test_soft_targets_sum_to_one_where_they_have_mass_and_padding_has_none(pair_files):
    images, _, maps = pair_files
    data = pipelines.segmentation_dataset(images, maps, "soft", 5, 33, 3, 4, seed=1,
                                          scale_range=(0.4, 0.7))
    seen_padding = False
    for image, target in data:
        sums = target.numpy().sum(-1)
        assert np.all((np.abs(sums - 1) < 1e-5) | (sums == 0))
        padded = np.all(image.numpy()[:, ::8, ::8] == 0, axis=-1)   # mean colour, preprocessed
        np.testing.assert_array_equal(sums == 0, padded)
        seen_padding |= bool(padded.any())
    assert seen_padding     # scales below 33/41 always pad


@pytest.mark.parametrize("kind, stride", [("hard", 8), ("soft", 8), ("hard", 4), ("soft", 4), ("soft", 1)])
def test_augmentation_keeps_image_and_target_aligned(pair_files, kind, stride):
    images, masks, maps = pair_files
    data = pipelines.segmentation_dataset(images, masks if kind == "hard" else maps, kind, 5, 33, 3,
                                          6, seed=3, scale_range=(0.5, 1.5), target_stride=stride)
    agree = total = 0
    for image, target in data:
        rgb = to_rgb(image.numpy()[:, ::stride, ::stride])    # the pixels the targets sit on
        target = target.numpy()
        assert target.shape[1:3] == ((33 - 1) // stride + 1,) * 2
        if kind == "hard":
            valid, labels = target != 255, target
        else:
            valid, labels = target.sum(-1) > 0, target.argmax(-1)
        # Padding: ignore label / no mass exactly where the image is the mean colour.
        np.testing.assert_array_equal(~valid, np.all(image.numpy()[:, ::stride, ::stride] == 0, axis=-1))
        from_pixels = colour_class(rgb)
        agree += int((from_pixels[valid] == labels[valid]).sum())
        total += int(valid.sum())
    assert total > 100
    assert agree / total > 0.97      # only a few picks can straddle a block edge after rescaling


def test_misaligned_flip_would_be_detected(pair_files):
    """The alignment check above fails when only the image is flipped (the test can fail)."""
    images, masks, _ = pair_files
    data = pipelines.segmentation_dataset(images, masks, "hard", 5, 33, 3, 2, seed=3,
                                          scale_range=(1, 1), flip=False)
    agree = total = 0
    for image, target in data:
        rgb = to_rgb(image.numpy()[:, :, ::-1][:, ::8, ::8])
        target = target.numpy()
        valid = target != 255
        agree += int((colour_class(rgb)[valid] == target[valid]).sum())
        total += int(valid.sum())
    assert agree / total < 0.9


def test_stream_is_deterministic_and_resumes_at_an_epoch(pair_files):
    images, masks, _ = pair_files

    def batches(first_epoch=None):
        data = pipelines.segmentation_dataset(images, masks, "hard", 5, 33, 1, 4, seed=7,
                                              first_epoch=first_epoch)
        return [(x.numpy(), y.numpy()) for x, y in data]

    full, again = batches(), batches()
    assert len(full) == 4 * 3
    for (x1, y1), (x2, y2) in zip(full, again):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert not all(np.array_equal(full[0][0], x) for x, _ in full[1:])   # it is random
    variable = tf.Variable(0, dtype=tf.int64)
    data = pipelines.segmentation_dataset(images, masks, "hard", 5, 33, 1, 4, seed=7,
                                          first_epoch=variable)
    variable.assign(2)          # set before iterating, as ResumeEpoch does
    resumed = [(x.numpy(), y.numpy()) for x, y in data]
    assert len(resumed) == 2 * 3
    for (x1, y1), (x2, y2) in zip(full[6:], resumed):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)


def test_epoch_stream_visits_every_item_once_per_epoch():
    stream = pipelines.epoch_stream(7, 3, 2, seed=0)
    indices = [int(i) for i, _ in stream]
    assert len(indices) == 12               # 2 full batches of 3 per epoch
    for epoch in (indices[:6], indices[6:]):
        assert len(set(epoch)) == 6 and set(epoch) <= set(range(7))
    with pytest.raises(WskError, match="batch"):
        pipelines.epoch_stream(2, 3, 1, seed=0)


def test_hcp_label_vector():
    np.testing.assert_allclose(pipelines.hcp_label_vector((1, 3), 5), [0.5, 0, 0.5, 0, 0])
    np.testing.assert_allclose(pipelines.hcp_label_vector((4,), 4), [0, 0, 0, 1])
    with pytest.raises(WskError):
        pipelines.hcp_label_vector((0,), 4)
    with pytest.raises(WskError):
        pipelines.hcp_label_vector((), 4)


def test_crop_hypotheses_at_their_own_size_are_the_image_slices():
    image = np.arange(20 * 30 * 3, dtype=np.float32).reshape(20, 30, 3)
    boxes = np.array([[2, 3, 10, 11], [20, 12, 28, 20]])          # two 8x8 boxes
    crops = pipelines.crop_hypotheses(tf.constant(image), tf.constant(boxes), 8).numpy()
    np.testing.assert_allclose(crops[0], image[3:11, 2:10])
    np.testing.assert_allclose(crops[1], image[12:20, 20:28])
    # A 2x2 box doubled: bilinear with half-pixel centres keeps the corner pixels.
    crop = pipelines.crop_hypotheses(tf.constant(image), tf.constant([[0, 0, 2, 2]]), 4).numpy()[0]
    np.testing.assert_allclose(crop[0, 0], image[0, 0])
    np.testing.assert_allclose(crop[3, 3], image[1, 1])
    np.testing.assert_allclose(crop[0, 1], 0.75 * image[0, 0] + 0.25 * image[0, 1])


def test_hcp_batches(pair_files):
    images, _, _ = pair_files
    labels = np.array([[1, 0], [0.5, 0.5], [0, 1]], np.float32)
    boxes = np.array([[[0, 0, 8, 8], [8, 8, 40, 40]]] * 3)
    data = pipelines.hcp_training_dataset(images, labels, 32, 3, 2, seed=0, boxes=boxes)
    batches = list(data)
    assert len(batches) == 2
    for x, y in batches:
        assert x.shape == (3, 2, 32, 32, 3) and y.shape == (3, 2)
        np.testing.assert_allclose(np.sort(y.numpy(), axis=0), np.sort(labels, axis=0))
        # The first box covers the top-left block only: class 1, red.
        rgb = to_rgb(x.numpy()[:, 0])
        assert np.all(colour_class(rgb) == 1)
    whole = list(pipelines.hcp_eval_dataset(images, 32, 2))
    assert [w.shape[:2] for w in whole] == [(2, 1), (1, 1)]


def test_bad_targets_are_wsk_errors_naming_the_file(tmp_path):
    save_npz(tmp_path / "m.npz", maps=np.zeros((3, 10, 12), np.float16))
    with pytest.raises(WskError, match="m.npz.*10x12.*9x12"):
        pipelines.load_soft_target(str(tmp_path / "m.npz"), 9, 12, 3)
    with pytest.raises(WskError, match="m.npz.*\\(4, H, W\\)"):
        pipelines.load_soft_target(str(tmp_path / "m.npz"), 10, 12, 4)
    write_label_png(tmp_path / "m.png", np.full((10, 12), 7, np.uint8))
    with pytest.raises(WskError, match="m.png.*\\[7\\]"):
        pipelines.load_hard_target(str(tmp_path / "m.png"), 10, 12, 5)



def test_foreground_of_masks_and_maps_by_hand():
    mask = tf.constant([[0, 1, 255], [2, 0, 3]], tf.int32)
    np.testing.assert_array_equal(augmentation.foreground(mask, "hard").numpy(), [[0, 1, 0], [1, 0, 1]])
    maps = tf.constant([[[0.6, 0.4], [0.3, 0.7], [0.0, 0.0]]], tf.float32)   # bg wins, class wins, no mass
    np.testing.assert_array_equal(augmentation.foreground(maps, "soft").numpy(), [[0, 1, 0]])


def test_paste_objects_fills_only_the_crops_background_by_hand():
    image = tf.zeros((2, 3, 3))
    target = tf.constant([[0, 1, 0], [255, 0, 0]], tf.int32)
    other_image = tf.ones((2, 3, 3))
    other_target = tf.constant([[2, 2, 0], [2, 2, 255]], tf.int32)
    pasted_image, pasted_target = (t.numpy() for t in augmentation.paste_objects(
        (image, target), (other_image, other_target), "hard"))
    # class 2 goes where the crop has background or no label, never over its class 1
    np.testing.assert_array_equal(pasted_target, [[2, 1, 0], [2, 2, 0]])
    np.testing.assert_array_equal(pasted_image[..., 0], [[1, 0, 0], [1, 1, 0]])
    maps = tf.constant([[[0.9, 0.1, 0.0], [0.2, 0.8, 0.0]]])
    other_maps = tf.constant([[[0.3, 0.0, 0.7], [0.1, 0.0, 0.9]]])
    _, pasted_maps = augmentation.paste_objects((tf.zeros((1, 2, 3)), maps), (tf.ones((1, 2, 3)), other_maps), "soft")
    np.testing.assert_allclose(pasted_maps.numpy(), [[[0.3, 0.0, 0.7], [0.2, 0.8, 0.0]]])


def test_copy_paste_adds_the_other_images_object_with_its_label(tmp_path):
    """Two images of one square object each, apart: a crop holds its own square, or both squares
    whole, colours and labels agreeing; at probability 0.5 (x 1/2 for the partner being the other
    image) about a quarter of the crops."""
    images, masks = [], []
    for k, (y, x) in ((1, (2, 2)), (2, (18, 20))):
        labels = np.zeros((33, 33), np.uint8)
        labels[y:y + 10, x:x + 10] = k
        write_image(tmp_path / f"{k}.png", COLOURS[labels])
        write_label_png(tmp_path / f"{k}_mask.png", labels)
        images.append(str(tmp_path / f"{k}.png"))
        masks.append(str(tmp_path / f"{k}_mask.png"))
    data = pipelines.segmentation_dataset(images, masks, "hard", 5, 33, 2, 40, seed=0, target_stride=1,
                                          flip=False, copy_paste=0.5)
    mixed = 0
    for image, target in data.unbatch():
        labels = target.numpy()
        np.testing.assert_array_equal(colour_class(to_rgb(image.numpy())), labels)
        counts = {k: int((labels == k).sum()) for k in (1, 2)}
        assert sorted(counts.values()) in ([0, 100], [100, 100])
        mixed += min(counts.values()) == 100
    # 80 crops, each pasted with probability 0.5 x 1/2: 20 +- 3.9
    assert 8 <= mixed <= 32
