"""The built-in pretrained trunk (``wsk.recipes.PRETRAINED_TRUNK``): loaded by name, it classifies
a freshly generated corpus, and the builders copy it as they copy "imagenet"."""

import numpy as np
import pytest

import wsk.zoo
from wsk.data.corpus import CORPUS_CLASSES, generate_corpus
from wsk.errors import WskError
from wsk.models import deeplab_largefov, hcp, preprocess_input
from wsk.recipes import PRETRAINED_TRUNK, get_recipe
from wsk.train import multilabel_average_precision

FRESH_SEED = 424242   # never used to make the card (its corpus is seed 0)


def test_trunk_classifies_a_fresh_corpus_well_above_chance():
    card = wsk.zoo.info(PRETRAINED_TRUNK)
    model = wsk.zoo.load(PRETRAINED_TRUNK)
    images, labels = generate_corpus(400, card["builder_args"]["image_size"], seed=FRESH_SEED)
    scores = model.predict(preprocess_input(images)[:, None], batch_size=200, verbose=0)
    measured, per_class = multilabel_average_precision(labels, scores)
    # A random ranking's expected AP is the class's prevalence: chance mAP is their mean.
    chance = float(np.mean([labels[:, c].mean() for c in per_class]))
    # 400 images give each AP a sampling error of a few points; the card's mAP on its own
    # 2,000 held-out images less 0.05 leaves room for it and still fails a broken trunk.
    floor = max(card["metrics"]["mAP"] - 0.05, 3 * chance)
    assert measured >= floor, (measured, floor, chance)


def test_builders_take_the_trunk_by_name():
    trunk = wsk.zoo.load(PRETRAINED_TRUNK)
    width = wsk.zoo.info(PRETRAINED_TRUNK)["builder_args"]["width"]
    classifier = hcp(num_classes=5, image_size=64, width=width, backbone_weights=PRETRAINED_TRUNK)
    segmenter = deeplab_largefov(num_classes=6, width=width, backbone_weights=PRETRAINED_TRUNK)
    for name in ("conv1_1", "conv3_2", "conv5_3"):
        for model in (classifier, segmenter):
            for got, want in zip(model.get_layer(name).get_weights(), trunk.get_layer(name).get_weights()):
                np.testing.assert_array_equal(got, want)
    for name in ("fc6", "fc7"):   # HCP's fc6/fc7 are the trunk's; its fc8 (the corpus classes) is not
        np.testing.assert_array_equal(classifier.get_layer(name).get_weights()[0],
                                      trunk.get_layer(name).get_weights()[0])
    assert classifier.get_layer("fc8").get_weights()[0].shape[1] == 5 != len(CORPUS_CLASSES)


def test_a_trunk_of_another_width_is_refused_clearly():
    with pytest.raises(WskError, match="build the model at the trunk's width"):
        hcp(num_classes=5, image_size=64, width=0.25, backbone_weights=PRETRAINED_TRUNK)


def test_the_demo_recipe_starts_from_the_trunk_and_the_paper_from_imagenet():
    demo, paper = get_recipe("demo"), get_recipe("paper")
    assert demo.hcp.backbone_weights == demo.seg.backbone_weights == PRETRAINED_TRUNK
    assert paper.hcp.backbone_weights == paper.seg.backbone_weights == "imagenet"
