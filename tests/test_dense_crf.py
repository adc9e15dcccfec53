"""The keras.ops dense CRF (wsk.models.dense_crf) against pydensecrf and an exact Gaussian filter."""

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from wsk.crf import CRFParams, dense_crf
from wsk.errors import WskError
from wsk.models.dense_crf import DenseCRF, dense_crf_marginals
from wsk.models.permutohedral import build_lattice, lattice_filter, lower_bound, vertex_slots

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bench():
    spec = importlib.util.spec_from_file_location("bench_crf", os.path.join(REPO, "benchmarks", "bench_crf.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _scene(height, width, classes, seed):
    """Two-region colour image and noisy softmax (the halves disagree with the colours a little)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 40, (height, width, 3)).astype(np.uint8)
    image[:, width // 2:] += 150
    probabilities = rng.dirichlet(np.ones(classes), (height, width)).astype(np.float32)
    return image, probabilities


def _naive_one_step(image, probabilities, params):
    """One iteration, densecrf-style, with exact Gaussians and symmetric normalisation (O(N^2))."""
    height, width, classes = probabilities.shape
    ys, xs = np.mgrid[:height, :width]
    pos = np.stack([xs.ravel(), ys.ravel()], 1) / params.pos_xy_std
    bi = np.concatenate([np.stack([xs.ravel(), ys.ravel()], 1) / params.bi_xy_std,
                         image.reshape(-1, 3) / params.bi_rgb_std], 1)
    q = np.clip(probabilities.reshape(-1, classes), 1e-8, 1)
    q = q / q.sum(1, keepdims=True)
    energy = np.log(np.clip(probabilities.reshape(-1, classes), 1e-8, 1))
    for features, w in ((pos, params.pos_w), (bi, params.bi_w)):
        kernel = np.exp(-0.5 * ((features[:, None] - features[None]) ** 2).sum(-1))
        norm = 1 / np.sqrt(kernel.sum(1))
        energy = energy + w * norm[:, None] * (kernel @ (norm[:, None] * q))
    out = np.exp(energy - energy.max(1, keepdims=True))
    return (out / out.sum(1, keepdims=True)).reshape(height, width, classes)


@pytest.mark.parametrize("sparse", [False, True], ids=["keras.ops", "tf.sparse"])
def test_lattice_filter_approximates_the_gaussian(sparse):
    """The lattice's row-normalised blur is a Gaussian of std 1 in feature units, approximately:
    with the segment sums and gathers of ``keras.ops``, and with TensorFlow's sparse products."""
    rng = np.random.default_rng(0)
    height, width = 20, 24
    ys, xs = np.mgrid[:height, :width]
    features = (np.stack([xs.ravel(), ys.ravel()], 1) / 2.0).astype(np.float32)
    values = np.stack([np.sin(xs / 3.0).ravel(), rng.uniform(0, 1, height * width)], 1).astype(np.float32)
    lattice = build_lattice(features, np.ones(height * width, bool), [width / 2.0, height / 2.0])
    if sparse:
        if keras.backend.backend() != "tensorflow":
            pytest.skip("the sparse products are TensorFlow's")
        from wsk.crf import _tensorflow_sparse

        plain, lattice = lattice, _tensorflow_sparse(lattice)
    approx = np.asarray(lattice_filter(values, lattice)) / np.asarray(
        lattice_filter(np.ones((height * width, 1), np.float32), lattice))
    kernel = np.exp(-0.5 * ((features[:, None] - features[None]) ** 2).sum(-1))
    exact = kernel @ values / kernel.sum(1, keepdims=True)
    # the smooth channel is blurred alike; the noise channel's blur keeps the exact one's mean
    assert np.abs(approx[:, 0] - exact[:, 0]).max() < 0.1
    assert np.corrcoef(approx[:, 1], exact[:, 1])[0, 1] > 0.8
    assert abs(approx[:, 1].mean() - exact[:, 1].mean()) < 0.02
    if sparse:   # the normalisation and weight folded into the matrices: w * n * K(n * q), as keras.ops does it
        n = rng.uniform(0.5, 2.0, height * width).astype(np.float32)
        folded = np.asarray(lattice_filter(values, _tensorflow_sparse(plain, n, 3.0)))
        unfolded = 3.0 * n[:, None] * np.asarray(lattice_filter(n[:, None] * values, plain))
        np.testing.assert_allclose(folded, unfolded, rtol=1e-4, atol=1e-4 * np.abs(unfolded).max())


def test_eager_crf_under_tensorflow_uses_the_sparse_products(monkeypatch):
    """``wsk.crf``'s eager path gives both kernels' lattices TensorFlow's sparse splat, blur and slice."""
    import wsk.crf

    if keras.backend.backend() != "tensorflow":
        pytest.skip("the sparse products are TensorFlow's")
    given = []

    def counted(lattice, *args):
        given.append(tuple(lattice.weight.shape))
        return real(lattice, *args)

    real = wsk.crf._tensorflow_sparse
    monkeypatch.setattr(wsk.crf, "_tensorflow_sparse", counted)
    monkeypatch.setenv("WSK_CRF_COMPILE_PIXELS", "0")
    image, probabilities = _scene(20, 30, 3, seed=2)
    dense_crf(image, probabilities)
    # padded to 32 x 32 points; the Gaussian kernel's lattice has 3 corners a point, the bilateral's 6
    assert sorted(given) == [(32 * 32, 3)] * 2 + [(32 * 32, 6)] * 2   # for the normaliser, then folded


def test_one_step_close_to_the_exact_mean_field_step():
    image, probabilities = _scene(12, 14, 3, seed=1)
    params = CRFParams(bi_xy_std=6.0, bi_rgb_std=20.0, pos_xy_std=1.5, iterations=1, reference_side=None)
    ours = np.asarray(dense_crf_marginals(image[None], probabilities[None], params))[0]
    exact = _naive_one_step(image, probabilities, params)
    assert np.abs(ours - exact).max() < 0.15
    assert np.mean(ours.argmax(-1) == exact.argmax(-1)) > 0.95


@pytest.mark.parametrize("params", [CRFParams(iterations=1), CRFParams(),
                                    CRFParams(bi_xy_std=10.0, pos_xy_std=2.0, reference_side=None)])
def test_agrees_with_pydensecrf(params):
    pytest.importorskip("pydensecrf.densecrf")
    image, probabilities = _scene(30, 41, 4, seed=2)
    _, reference = dense_crf(image, probabilities, **dataclasses.asdict(params), backend="densecrf")
    ours = np.asarray(dense_crf_marginals(image[None], probabilities[None], params))[0]
    # float32 rounding may put a point in a neighbouring simplex (a handful of pixels here,
    # whose marginals then differ by up to ~0.2 after 10 iterations, spread by the bilateral
    # kernel's reach): the mean stays small and the labels agree
    assert np.abs(ours - reference).mean() < 1e-3
    assert np.mean(ours.argmax(-1) == reference.argmax(-1)) >= 0.995


def test_padded_batch_equals_single_images():
    params = CRFParams(iterations=3)
    first = _scene(20, 30, 3, seed=3)
    second = _scene(26, 17, 3, seed=4)
    images = np.zeros((2, 26, 30, 3), np.uint8)
    probabilities = np.full((2, 26, 30, 3), 1 / 3, np.float32)
    for index, (image, p) in enumerate((first, second)):
        images[index, :image.shape[0], :image.shape[1]] = image
        probabilities[index, :image.shape[0], :image.shape[1]] = p
    images[1, :, 17:] = 255          # padding unlike the image: it must not leak in
    batch = np.asarray(dense_crf_marginals(images, probabilities, params, sizes=[[20, 30], [26, 17]]))
    for index, (image, p) in enumerate((first, second)):
        single = np.asarray(dense_crf_marginals(image[None], p[None], params))[0]
        np.testing.assert_allclose(batch[index, :image.shape[0], :image.shape[1]], single, atol=1e-5)


def test_layer_round_trips_its_config():
    layer = DenseCRF(**dataclasses.asdict(CRFParams(bi_w=5.0, iterations=2, reference_side=None)))
    config = layer.get_config()
    assert config["bi_w"] == 5.0 and config["iterations"] == 2 and config["reference_side"] is None
    again = keras.layers.deserialize(keras.layers.serialize(layer))
    image, probabilities = _scene(10, 12, 3, seed=5)
    np.testing.assert_allclose(np.asarray(again(image[None], probabilities[None])),
                               np.asarray(dense_crf_marginals(image[None], probabilities[None], layer.params)),
                               atol=1e-6)


def test_backend_errors(monkeypatch):
    image, probabilities = _scene(8, 8, 2, seed=6)
    with pytest.raises(WskError, match="unknown CRF backend"):
        dense_crf(image, probabilities, backend="cuda")
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    with pytest.raises(WskError, match=r"pip install 'wsk\[densecrf\]'"):
        dense_crf(image, probabilities, backend="densecrf")


def test_voc_sample_corrupted_unaries(voc_sample):
    """Done-when check of issue 23: agreement >= 98% and +CRF mIoU within 1.0 of pydensecrf."""
    pytest.importorskip("pydensecrf.densecrf")
    bench = _bench()
    cases = bench.voc_cases(limit=3)
    masks = [mask for _, _, mask, _ in cases]
    reference = [dense_crf(image, p, backend="densecrf")[0] for _, image, _, p in cases]
    ours = [dense_crf(image, p, backend="keras")[0] for _, image, _, p in cases]
    agreement = np.mean([np.mean(a == b) for a, b in zip(ours, reference)])
    assert agreement >= 0.98
    unary = bench.miou(masks, [p.argmax(-1) for _, _, _, p in cases])
    assert bench.miou(masks, reference) > unary + 5      # the CRF does refine these unaries
    assert abs(bench.miou(masks, ours) - bench.miou(masks, reference)) <= 1.0


JAX_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.modules["tensorflow"] = None
    import numpy as np
    from wsk.crf import CRFParams
    from wsk.models.dense_crf import dense_crf_marginals
    args = json.loads(sys.argv[1])
    out = dense_crf_marginals(np.array(args["image"], np.uint8)[None],
                              np.array(args["p"], np.float32)[None], CRFParams(iterations=4))
    print(json.dumps(np.asarray(out)[0].argmax(-1).tolist()))
""")


def test_jax_backend_gives_the_same_labels():
    pytest.importorskip("jax")
    image, probabilities = _scene(18, 22, 3, seed=7)
    expected = np.asarray(dense_crf_marginals(image[None], probabilities[None], CRFParams(iterations=4)))[0]
    result = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT, json.dumps({"image": image.tolist(), "p": probabilities.tolist()})],
        env=dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=REPO), capture_output=True, text=True,
        timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert np.array_equal(np.array(json.loads(result.stdout.strip().splitlines()[-1])), expected.argmax(-1))


def test_layer_in_a_saved_model_with_a_free_batch_size(tmp_path):
    """In a functional model (batch size None, traced as a graph by predict) and a .keras file."""
    image_in = keras.Input((20, 24, 3))
    prob_in = keras.Input((20, 24, 3))
    model = keras.Model([image_in, prob_in], DenseCRF(iterations=3)(image_in, prob_in))
    model.save(tmp_path / "crf.keras")
    loaded = keras.models.load_model(tmp_path / "crf.keras")
    scenes = [_scene(20, 24, 3, seed=seed) for seed in (8, 9)]
    images = np.stack([s[0] for s in scenes]).astype(np.float32)
    probabilities = np.stack([s[1] for s in scenes])
    eager = np.asarray(dense_crf_marginals(images, probabilities, CRFParams(iterations=3)))
    np.testing.assert_allclose(loaded.predict([images, probabilities], verbose=0), eager, atol=1e-5)


def test_vertex_slots_steps():
    """Grids grow by 2, 1.5 and 4/3 in turn (1, 2, 3, 4, 6, 8, 12, 16 buckets), capped at the bound."""
    assert [vertex_slots(c, 10**9) // 1024 for c in (0, 1, 1024, 1025, 2049, 3073, 4097, 6145, 8193, 12289)] \
        == [1, 1, 1, 2, 3, 4, 6, 8, 12, 16]
    assert vertex_slots(5000, 3000) == 3000


@pytest.mark.parametrize("length", [1, 7, 1024, 1025])
def test_lower_bound_is_searchsorted_left(length):
    rng = np.random.default_rng(length)
    ordered = np.sort(rng.integers(0, 40, length)).astype(np.int32)
    queries = rng.integers(-3, 44, 200).astype(np.int32)
    expected = [sum(value < q for value in ordered) for q in queries]   # naive: entries below
    assert np.asarray(lower_bound(ordered, queries)).tolist() == expected


def test_compiled_keras_crf_equals_eager(monkeypatch):
    """wsk.crf's compiled small-image path gives the eager marginals (padding out of the lattice)."""
    import wsk.crf

    monkeypatch.delenv(wsk.crf.COMPILE_PIXELS_ENV, raising=False)   # conftest sets 0: never compiled
    assert wsk.crf.compiled_pixels() == 128 * 128
    image, probabilities = _scene(30, 41, 4, seed=10)
    compilations = wsk.crf._compiled_steps.cache_info().misses
    _, compiled = dense_crf(image, probabilities, iterations=3)
    assert wsk.crf._compiled_steps.cache_info().misses == compilations + 2   # lattice, then marginals
    eager = np.asarray(dense_crf_marginals(image[None], probabilities[None], CRFParams(iterations=3)))[0]
    np.testing.assert_allclose(compiled, eager, atol=1e-5)
