"""Shared fixtures: the real VOC photographs in ../shared/voc-sample and a tiny synthetic dataset."""

import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The tests segment a handful of images: the keras CRF runs eagerly, which is then cheaper than one
# XLA compilation per shape and parameter set (~25 s each). Subprocesses inherit it. The compiled path
# has its own test (test_dense_crf::test_compiled_keras_crf_equals_eager).
os.environ["WSK_CRF_COMPILE_PIXELS"] = "0"

REPO = pathlib.Path(__file__).resolve().parents[1]
VOC_SAMPLE = REPO.parent / "shared" / "voc-sample"


@pytest.fixture(scope="session")
def voc_sample():
    """15 real VOC 2012 val photographs with official masks (read in place, never copied)."""
    if not (VOC_SAMPLE / "JPEGImages").is_dir():
        pytest.skip(f"real-data fixture {VOC_SAMPLE} is absent (CI keeps shared/ beside the checkout)")
    return VOC_SAMPLE


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A small synthetic VOC-layout dataset, generated once per test session."""
    from wsk.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("synthetic")
    generate_dataset(root, num_images=24, size=64, seed=0)
    return root
