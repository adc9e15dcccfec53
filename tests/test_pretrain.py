"""The pretraining corpus, `wsk pretrain` and trunks named by zoo card (`backbone_weights=<name>`)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import wsk.zoo
from wsk.cli.main import cli
from wsk.data.corpus import CORPUS_CLASSES, CORPUS_SHAPES, CORPUS_TEXTURES, generate_corpus
from wsk.errors import WskError
from wsk.models import deeplab_largefov, hcp, preprocess_input
from wsk.pretrain import fold_into_hcp, normalised_trunk

WIDTH = 0.0625


def test_corpus_is_deterministic_and_labels_every_object_by_shape_and_texture():
    a_images, a_labels = generate_corpus(40, 48, seed=1)
    b_images, b_labels = generate_corpus(40, 48, seed=1, jobs=2)
    np.testing.assert_array_equal(a_images, b_images)
    np.testing.assert_array_equal(a_labels, b_labels)
    assert not np.array_equal(generate_corpus(40, 48, seed=2)[0], a_images)
    shapes = a_labels[:, :len(CORPUS_SHAPES)].sum(1)
    textures = a_labels[:, len(CORPUS_SHAPES):].sum(1)
    assert len(CORPUS_CLASSES) == len(CORPUS_SHAPES) + len(CORPUS_TEXTURES) == 28
    assert ((shapes >= 1) & (shapes <= 3) & (textures >= 1) & (textures <= 3)).all()
    # a later slice is the same images as the tail of a longer run
    np.testing.assert_array_equal(generate_corpus(10, 48, seed=1, start=30)[0], a_images[30:])


def test_folding_the_normalisation_gives_the_same_network():
    rng = np.random.default_rng(0)
    net = normalised_trunk(7, 64, WIDTH)
    for layer in net.layers:      # random statistics, so that folding has something to do
        if layer.name.endswith("_bn"):
            g, b, m, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 2, g.shape), rng.normal(0, 0.5, b.shape),
                               rng.normal(0, 0.5, m.shape), rng.uniform(0.5, 2, v.shape)])
    images = preprocess_input(rng.integers(0, 256, (3, 64, 64, 3)).astype(np.float32))
    folded = fold_into_hcp(net, 7, 64, WIDTH)
    np.testing.assert_allclose(folded.predict(images[:, None], verbose=0), net.predict(images, verbose=0),
                               rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def trunk_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain")
    result = CliRunner().invoke(cli, ["pretrain", str(out), "--images", "128", "--val-images", "32",
                                      "--epochs", "1", "--width", str(WIDTH), "--jobs", "1"])
    assert result.exit_code == 0, result.output
    return out


def test_pretrain_writes_the_trunk_and_its_record(trunk_dir):
    record = json.loads((trunk_dir / "trunk.json").read_text())
    assert record["architecture"] == "hcp" and record["class_names"] == list(CORPUS_CLASSES)
    metrics = record["metrics"]
    assert record["command"].startswith("wsk pretrain ") and metrics["seconds"]["total"] > 0
    assert 0 < metrics["val_mAP"] <= 1 and len(metrics["val_mAP_per_epoch"]) == 1
    assert record["recipe"]["images"] == 128 and record["training_images"] == 128


def test_builders_take_a_trunk_by_zoo_name(trunk_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.delenv("WSK_ZOO_REGISTRY", raising=False)
    wsk.zoo.add("hcp_vgg16.test_trunk", str(trunk_dir / "trunk.keras"))
    trunk = wsk.zoo.load("hcp_vgg16.test_trunk")
    classifier = hcp(num_classes=5, image_size=64, width=WIDTH, backbone_weights="hcp_vgg16.test_trunk")
    segmenter = deeplab_largefov(num_classes=6, width=WIDTH, backbone_weights="hcp_vgg16.test_trunk")
    for name in ("conv1_1", "conv3_2", "conv5_3"):
        for model in (classifier, segmenter):
            for got, want in zip(model.get_layer(name).get_weights(), trunk.get_layer(name).get_weights()):
                np.testing.assert_array_equal(got, want)
    for name in ("fc6", "fc7"):   # HCP's fc6/fc7 are the trunk's; fc8 (the corpus classes) is not
        np.testing.assert_array_equal(classifier.get_layer(name).get_weights()[0],
                                      trunk.get_layer(name).get_weights()[0])
    with pytest.raises(WskError, match="does not fit the model"):
        hcp(num_classes=5, image_size=64, width=2 * WIDTH, backbone_weights="hcp_vgg16.test_trunk")


BUILTIN_TRUNK = "hcp_vgg16.corpus64"   # the demo recipe's starting trunk (zoo/cards)


def test_builtin_trunk_loads_by_name_and_classifies_a_fresh_corpus(tmp_path, monkeypatch):
    from wsk.metrics import multilabel_average_precision

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    card = wsk.zoo.info(BUILTIN_TRUNK)
    trunk = wsk.zoo.network(BUILTIN_TRUNK)
    n, size = 400, card["dataset"]["size"]
    # another corpus seed: images the trunk neither trained on nor was selected on
    images, labels = generate_corpus(n, size, seed=card["dataset"]["seed"] + 1)
    scores = trunk.predict(preprocess_input(images)[:, None], batch_size=200, verbose=0)
    measured = multilabel_average_precision(labels, scores)[0]
    # the floor: the card's held-out mAP less 4 standard errors of a 400-image mAP (bootstrap
    # over these images); a random ranking's AP is its class's prevalence, far below it
    rng = np.random.default_rng(0)
    resampled = [multilabel_average_precision(labels[i], scores[i])[0]
                 for i in (rng.integers(0, n, n) for _ in range(40))]
    floor = card["metrics"]["mAP"] - 4 * float(np.std(resampled))
    chance = float(labels.mean(axis=0).mean())
    assert floor > 3 * chance, (floor, chance)
    assert measured >= floor, (measured, floor)
    # a builder takes it by name: HCP's conv and fc6/fc7 layers are the card's
    classifier = hcp(num_classes=5, image_size=size, width=card["builder_args"]["width"],
                     backbone_weights=BUILTIN_TRUNK)
    for name in ("conv1_1", "conv5_3", "fc7"):
        np.testing.assert_array_equal(classifier.get_layer(name).get_weights()[0],
                                      trunk.get_layer(name).get_weights()[0])
