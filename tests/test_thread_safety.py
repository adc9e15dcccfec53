"""Target reading in the training pipeline is safe from tf.data's worker threads (issue 11).

``np.load`` parses every ``.npy`` header with ``ast.literal_eval``, which is not thread-safe on
CPython 3.11.7 and made ``wsk demo`` fail with "AST constructor recursion depth mismatch" under
``segmentation_dataset``'s parallel map. The stress test reads 1,000 localization-map targets
through the real pipeline and fails if any worker thread parses Python source on the way (as the
old ``np.load`` reader did, deterministically), or if any target comes back wrong.
"""

import ast
import threading

import numpy as np
import pytest

from wsk.data.pipelines import segmentation_dataset
from wsk.io import load_npz, save_npz, write_image
from wsk.models.preprocessing import MEAN_BGR

N = 1000
SIDE = 9   # a crop of 9 keeps the whole image; the logits grid is 2 x 2


@pytest.fixture(scope="module")
def targets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stress")
    images, maps = [], []
    for i in range(N):
        image = folder / f"{i:04d}.png"
        write_image(str(image), np.full((SIDE, SIDE, 3), 20 + 50 * (i % 3), np.uint8))
        target = np.zeros((3, SIDE, SIDE), np.float16)
        target[i % 3] = 1
        path = folder / f"{i:04d}.npz"
        save_npz(str(path), version=np.int32(1), maps=target, labels=np.array([i % 3], np.int32))
        images.append(str(image))
        maps.append(str(path))
    return images, maps


def test_thousand_targets_through_the_parallel_pipeline(targets, monkeypatch):
    import wsk.data.pipelines as pipelines

    images, maps = targets
    # read per element, in tf.data's threads (a dataset larger than the in-memory budget does)
    monkeypatch.setattr(pipelines, "IN_MEMORY_BYTES", 0)
    offenders = []
    original = ast.literal_eval

    def guarded(*args, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            offenders.append(threading.current_thread().name)
        return original(*args, **kwargs)

    monkeypatch.setattr(ast, "literal_eval", guarded)
    data = segmentation_dataset(images, maps, "soft", 3, SIDE, batch_size=20, epochs=1, seed=0,
                                scale_range=(1.0, 1.0))
    seen = 0
    for batch_images, batch_targets in data.as_numpy_iterator():
        value = np.rint(batch_images[:, 0, 0, 2] + MEAN_BGR[2]).astype(int)   # the red channel
        expected_class = (value - 20) // 50
        np.testing.assert_allclose(batch_targets.sum(-1), 1.0, atol=1e-6)
        assert (batch_targets.argmax(-1) == expected_class[:, None, None]).all()
        seen += len(batch_images)
    assert seen == N
    assert not offenders, f"{len(offenders)} target reads parsed Python source in worker threads"


def test_load_npz_matches_numpy_on_every_dtype(tmp_path):
    arrays = {"f16": np.arange(12, dtype=np.float16).reshape(3, 4), "text": np.array("crop"),
              "scalar": np.int32(3), "fortran": np.asfortranarray(np.arange(15.0).reshape(3, 5)),
              "empty": np.zeros((0, 4), np.int32), "flags": np.array([True, False])}
    path = str(tmp_path / "a.npz")
    save_npz(path, **arrays)
    loaded = load_npz(path)
    assert sorted(loaded) == sorted(arrays)
    for key, value in arrays.items():
        value = np.asarray(value)
        assert loaded[key].dtype == value.dtype and loaded[key].shape == value.shape
        np.testing.assert_array_equal(loaded[key], value)


def test_load_npz_refuses_object_arrays(tmp_path):
    from wsk.errors import WskError

    path = str(tmp_path / "obj.npz")
    np.savez(path, a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(WskError, match="damaged file.*object arrays"):
        load_npz(path)


def test_in_memory_and_per_element_image_and_target_reading_give_the_same_batches(targets, monkeypatch):
    import wsk.data.pipelines as pipelines

    images, maps = targets[0][:40], targets[1][:40]

    def batches():
        data = segmentation_dataset(images, maps, "soft", 3, SIDE, batch_size=20, epochs=1, seed=0)
        return [b for b in data.as_numpy_iterator()]

    in_memory = batches()
    monkeypatch.setattr(pipelines, "IN_MEMORY_BYTES", 0)   # every image and target read per element
    for (a_x, a_y), (b_x, b_y) in zip(in_memory, batches()):
        np.testing.assert_array_equal(a_x, b_x)
        np.testing.assert_array_equal(a_y, b_y)
