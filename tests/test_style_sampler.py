"""The generalization benchmark's style sampler (wsk.data.style_sampler): deterministic per seed,
within the ranges the benchmark's docstring states, colour independent of class, fresh test seeds
per commit, and the three new shapes the corpus never draws."""

import ast
import colorsys
import dataclasses
import importlib.util
import math
import os
import re

import numpy as np
import pytest
from scipy import integrate

from wsk.data import corpus, style_sampler as ss, synthetic
from wsk.data.corpus_broad import BROAD_SHAPES, BROAD_TEXTURES
from wsk.data.synthetic import render_image

BENCH = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "bench_generalization.py")
SEEDS = range(200)


@pytest.fixture(scope="module")
def draws():
    return [ss.sample_style(seed) for seed in SEEDS]


def docstring_ranges():
    """``{label: value text}`` of the "Sampler ranges" block of the benchmark's docstring."""
    with open(BENCH, encoding="utf-8") as f:
        doc = ast.get_docstring(ast.parse(f.read()))
    block = doc.split("Sampler ranges", 1)[1].split("\n\n", 2)[1]
    return {m.group(1): m.group(2) for m in re.finditer(r"^ {4}(\S.*?\S) {2,}(\S.*)$", block, re.M)}


def span(text):
    """``(low, high)`` of ``"a to b..."``."""
    low, high = re.match(r"([\d.]+) to ([\d.]+)", text).groups()
    return float(low), float(high)


def test_the_docstring_states_the_constants_the_code_uses():
    doc = docstring_ranges()
    assert int(doc["classes per style"]) == ss.CLASSES_PER_STYLE == 5
    assert span(doc["unseen shapes per style"]) == ss.UNSEEN_PER_STYLE
    assert doc["unseen shapes per style"].split(", of ")[1].split(", ") == list(ss.UNSEEN_SHAPES)
    assert f"({len(BROAD_SHAPES)})" in doc["other shapes"] and f"({len(BROAD_TEXTURES)})" in doc["textures"]
    assert span(doc["texture stretch"]) == ss.TEXTURE_STRETCH
    assert span(doc["texture contrast"]) == ss.TEXTURE_CONTRAST
    assert doc["colour policies"].split(", ") == list(ss.COLOUR_POLICIES)
    assert doc["background sources"].split(", ") == list(ss.BACKGROUND_SOURCES)
    assert span(doc["photographs per style"]) == ss.PHOTOS_PER_STYLE
    assert span(doc["object scale low end"]) == ss.SCALE_LOW
    assert span(doc["object scale high end"]) == ss.SCALE_HIGH
    assert tuple(int(s) for s in doc["tuning seeds"].split(", ")) == ss.TUNING_SEEDS


def test_a_style_is_a_function_of_its_seed():
    assert ss.sample_style(7) == ss.sample_style(7)
    images = []
    for _ in range(2):
        style = ss.build_style(ss.sample_style(10))   # a photo style: photographs, crops, jitter
        images.append([render_image(48, [1, 3], np.random.default_rng([10, i]), style)[0] for i in range(3)])
    for a, b in zip(*images):
        np.testing.assert_array_equal(a, b)


def test_draws_stay_within_the_stated_ranges_and_fill_them(draws):
    lows = [d.scale_range[0] for d in draws]
    highs = [d.scale_range[1] for d in draws]
    for values, (low, high) in ((lows, ss.SCALE_LOW), (highs, ss.SCALE_HIGH),
                                ([d.texture_stretch for d in draws], ss.TEXTURE_STRETCH),
                                ([d.texture_contrast for d in draws], ss.TEXTURE_CONTRAST)):
        assert low <= min(values) and max(values) <= high
        # uniform over the range: 200 draws come within 3% of both ends (the chance that one
        # end is missed is 2 * 0.97 ** 200 = 0.5%; the seeds are fixed, so this is not flaky)
        assert min(values) - low < 0.03 * (high - low) and high - max(values) < 0.03 * (high - low)
    seen_unseen = set()
    for d in draws:
        assert len(set(d.shapes)) == len(d.shapes) == 5 and len(set(d.textures)) == 5
        assert set(d.shapes) <= set(BROAD_SHAPES) | set(ss.UNSEEN_SHAPES)
        assert set(d.textures) <= set(BROAD_TEXTURES)
        unseen = [s for s in d.shapes if s in ss.UNSEEN_SHAPES]
        assert ss.UNSEEN_PER_STYLE[0] <= len(unseen) <= ss.UNSEEN_PER_STYLE[1]
        seen_unseen.update(unseen)
        if d.background == "clutter":
            assert d.photos == ()
        else:
            assert ss.PHOTOS_PER_STYLE[0] <= len(set(d.photos)) == len(d.photos) <= ss.PHOTOS_PER_STYLE[1]
            assert set(d.photos) <= set(ss.PHOTO_POOL)
    assert seen_unseen == set(ss.UNSEEN_SHAPES)
    assert {d.background for d in draws} == set(ss.BACKGROUND_SOURCES)
    assert {d.colour_policy for d in draws} == set(ss.COLOUR_POLICIES)
    assert {len(d.photos) for d in draws if d.photos} == set(range(ss.PHOTOS_PER_STYLE[0], ss.PHOTOS_PER_STYLE[1] + 1))
    # the tuning seeds were picked to cover every background source and colour policy
    tuning = [ss.sample_style(s) for s in ss.TUNING_SEEDS]
    assert {d.background for d in tuning} == set(ss.BACKGROUND_SOURCES)
    assert {d.colour_policy for d in tuning} == set(ss.COLOUR_POLICIES)


def test_objects_are_drawn_at_the_styles_scale():
    draw = dataclasses.replace(ss.sample_style(1), shapes=("disc",) * 5, scale_range=(0.3, 0.4))
    style = ss.build_style(draw)
    # a disc of diameter d * 64 px covers pi / 4 (d * 64)^2 pixels (border band included)
    for i in range(20):
        _, class_map, _, objects = render_image(64, [1], np.random.default_rng([0, i]), style)
        xmin, ymin, xmax, ymax = objects[0][1]
        if objects[0][2]:
            continue   # truncated by the image border
        diameter = max(xmax - xmin, ymax - ymin) + 1
        assert 0.3 * 64 - 2 <= diameter <= 0.4 * 64 + 2


def test_different_seeds_draw_different_shape_sets(draws):
    sets = [frozenset(d.shapes) for d in draws[:50]]
    assert len(set(sets)) == 50
    assert len({d.shapes for d in draws}) == len(draws)


def test_fresh_seeds_follow_the_commit():
    a = ss.fresh_seeds("0123456789abcdef0123456789abcdef01234567", 3)
    b = ss.fresh_seeds("0123456789abcdef0123456789abcdef01234568", 3)
    assert a == ss.fresh_seeds("0123456789abcdef0123456789abcdef01234567\n", 3)
    assert len(set(a)) == 3 and not set(a) & set(b)
    assert not set(a + b) & set(ss.TUNING_SEEDS)
    assert ss.fresh_seeds("0123456789abcdef0123456789abcdef01234567", 5)[:3] == a


# ------------------------------------------------------------------------ colour is not class
def hue_sector(rgb):
    """Which sixth of the hue circle an RGB colour falls in."""
    h, _, _ = colorsys.rgb_to_hsv(*(np.asarray(rgb, np.float64) / 255))
    return min(int(h * 6), 5)


def sector_shares(style, cls, n, size=32):
    """Shares of the 6 hue sectors among the mean colours of ``n`` single objects of class ``cls``."""
    counts = np.zeros(6)
    for i in range(n):
        rgb, class_map, _, _ = render_image(size, [cls], np.random.default_rng([cls, i]), style)
        counts[hue_sector(rgb[class_map == cls].mean(axis=0))] += 1
    return counts / n


def colour_gap(style, n):
    """Largest difference of the hue-sector shares of classes 1 and 2, and its tolerance.

    The tolerance: if both classes draw colours from one distribution, the difference of a
    sector's shares over n objects each has standard deviation sqrt(2 p (1 - p) / n), p the
    sector's pooled share; 4 of them, for each of the 6 sectors, would be exceeded by chance
    with probability below 6 * 6.3e-5.

    Why the hue of an object's mean colour: with the ``shade`` policy an object's two colours
    are a and c * a or a + c * (255 - a), so every mixture of them has a's hue, whatever the
    texture's share of each; with ``mixed`` on clutter (whose colours are symmetric under any
    permutation of R, G, B) each sector has share 1/6 whatever the texture.
    """
    first, second = sector_shares(style, 1, n), sector_shares(style, 2, n)
    pooled = (first + second) / 2
    tolerance = 4 * np.sqrt(2 * pooled * (1 - pooled) / n)
    return np.abs(first - second), tolerance


@pytest.mark.parametrize("policy, background", [("shade", "photo"), ("mixed", "clutter")])
def test_object_colours_do_not_tell_the_class(policy, background):
    draw = dataclasses.replace(ss.sample_style(10), colour_policy=policy, background=background,
                               photos=() if background == "clutter" else ss.sample_style(10).photos)
    style = ss.build_style(draw)
    assert style.colours in (synthetic._colours, corpus._object_colours)   # takes no class
    gap, tolerance = colour_gap(style, 150)
    assert (gap <= tolerance).all(), (gap, tolerance)


def test_the_colour_measure_sees_a_colour_tied_to_a_class():
    """The measure above is not blind: class 2 painted in reddish colours only is caught."""
    style = ss.build_style(dataclasses.replace(ss.sample_style(10), colour_policy="shade", background="clutter",
                                               photos=()))

    def reddish(background_mean, rng):
        a = np.array([rng.uniform(150, 255), rng.uniform(0, 60), rng.uniform(0, 60)])
        return a, a * 0.25

    tied = dataclasses.replace(style, colours=reddish)
    first, second = sector_shares(style, 1, 150), sector_shares(tied, 2, 150)
    pooled = (first + second) / 2
    assert (np.abs(first - second) > 4 * np.sqrt(2 * pooled * (1 - pooled) / 150)).any()


# -------------------------------------------------------------------------------- new shapes
def pixel_area(name, radius=200):
    y, x = np.mgrid[-radius - 2:radius + 3, -radius - 2:radius + 3].astype(np.float64)
    return ss.style_shape(name, x, y, radius).sum()


def test_new_shapes_cover_the_areas_of_their_geometry():
    r = 200.0
    # hourglass: |v| <= 0.9 r, |u| <= 0.1 r + 0.7 |v|
    hourglass = 2 * integrate.quad(lambda v: 2 * (0.1 * r + 0.7 * v), 0, 0.9 * r)[0]
    # chevron: a band 0.45 r wide along u for every v in [-0.9 r, 0.9 r]
    chevron = 1.8 * r * 0.45 * r
    # keyhole: a disc of radius 0.45 r centred at v = -0.4 r, and a stem from v = -0.4 r to 0.9 r of
    # half-width 0.12 r + 0.22 t (t = v + 0.4 r), less where they overlap (t < 0.45 r)
    stem = integrate.quad(lambda t: 2 * (0.12 * r + 0.22 * t), 0, 1.3 * r)[0]
    overlap = integrate.quad(lambda t: 2 * min(0.12 * r + 0.22 * t, math.sqrt(max((0.45 * r) ** 2 - t * t, 0))),
                             0, 0.45 * r)[0]
    keyhole = math.pi * (0.45 * r) ** 2 + stem - overlap
    for name, area in (("hourglass", hourglass), ("chevron", chevron), ("keyhole", keyhole)):
        assert pixel_area(name) == pytest.approx(area, rel=0.01), name


def test_new_shapes_are_unseen_by_the_pretraining_corpus():
    assert not set(ss.UNSEEN_SHAPES) & set(BROAD_SHAPES)
    assert not set(ss.UNSEEN_SHAPES) & set(corpus.CORPUS_SHAPES)


# ----------------------------------------------------------------- the benchmark's summary
def load_bench():
    """benchmarks/bench_generalization.py as a module (not on sys.path: nothing else becomes importable)."""
    spec = importlib.util.spec_from_file_location("bench_generalization", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def style(classes, stages, per_class):
    return {"draw": {}, "classes": list(classes), "stages": stages, "per_class": per_class}


def test_the_best_network_is_chosen_on_the_tuning_styles_and_reported_on_the_test_styles():
    bench = load_bench()
    names = ("background", "disc", "star")
    tuning = [style(names, {"val: AN_B": 50.0, "val: SN_B": 40.0, "val: AN_B+CRF": 52.0}, {}),
              style(names, {"val: AN_B": 60.0, "val: SN_B": 30.0, "val: AN_B+CRF": 61.0}, {})]
    test = [style(names, {"val: AN_B": 20.0, "val: SN_B": 70.0, "val: AN_B+CRF": 22.0}, {}),
            style(names, {"val: AN_B": 30.0, "val: SN_B": 80.0, "val: AN_B+CRF": 33.0}, {})]
    # AN_B: 55 on the tuning styles against SN_B's 35; SN_B is better on the test styles, unseen
    assert bench.best_variant(tuning, ("AN_A", "AN_B", "SN_B")) == "AN_B"
    rows = bench.summary_rows(tuning, test, "AN_B")
    assert rows["best network"]["test"] == [20.0, 30.0]
    assert rows["best network+CRF"]["test"] == [22.0, 33.0]
    assert bench.statistics(rows["best network"]["test"]) == {"mean": 25.0, "std": 5.0, "min": 20.0, "max": 30.0,
                                                              "n": 2}


def test_class_means_pool_classes_by_name_and_the_thresholds_are_the_issues():
    bench = load_bench()
    assert dict(bench.DONE_WHEN) == {"HCP val mAP": 0.85, "pseudo-labels: rough masks": 55.0,
                                     "pseudo-labels: lowest class mean": 30.0, "best network": 50.0,
                                     "every variant: lowest class mean": 15.0}
    rough = "pseudo-labels: rough masks"
    test = [style(("background", "disc", "star"), {"HCP val mAP": 0.9, rough: 60.0, "val: AN_B": 52.0},
                  {rough: [90.0, 40.0, 20.0], "val: AN_B": [80.0, 30.0, 16.0], "val: AN_B+CRF": [80.0, 9.0, 50.0]}),
            style(("background", "star", "arrow"), {"HCP val mAP": 0.7, rough: 56.0, "val: AN_B": 49.0},
                  {rough: [80.0, 60.0, 31.0], "val: AN_B": [70.0, 20.0, 40.0], "val: AN_B+CRF": [70.0, 30.0, 40.0]})]
    assert bench.class_means(test, rough) == {"background": 85.0, "disc": 40.0, "star": 40.0, "arrow": 31.0}
    rows = bench.summary_rows(test, test, "AN_B")
    assert rows["pseudo-labels: lowest class mean"]["test"] == [31.0]
    assert rows["every variant: lowest class mean"]["test"] == [18.0]    # star: (16 + 20) / 2
    assert rows["every variant+CRF: lowest class mean"]["test"] == [9.0]   # disc
    lines = {line.split("  ")[0]: line for line in bench.table(rows).splitlines()}
    assert lines["HCP val mAP"].endswith(">= 0.85: FAIL")                  # mean 0.8
    assert lines["pseudo-labels: rough masks"].endswith(">= 55: pass")      # 58
    assert lines["pseudo-labels: lowest class mean"].endswith(">= 30: pass")   # 31
    assert lines["best network"].endswith(">= 50: pass")                    # 50.5
    assert lines["every variant: lowest class mean"].endswith(">= 15: pass")   # 18
    assert "done when" not in lines["every variant+CRF: lowest class mean"]
