"""wsk.zoo: cards, sha256-checked downloads into the Keras cache, the user registry, shipped weights."""

import hashlib
import json
import os
import pathlib

import numpy as np
import pytest
from click.testing import CliRunner

WIDTH = 0.0625
NAMES4 = ["background", "red", "green", "blue"]


def _sha256(path):
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    """An empty Keras home for the test; the user registry defaults to a file inside it."""
    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.delenv("WSK_ZOO_REGISTRY", raising=False)
    return home


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny DeepLab-LargeFOV with non-default weights saved as ``.keras``: (path, weights)."""
    from wsk.models import deeplab_largefov

    model = deeplab_largefov(num_classes=4, width=WIDTH)
    rng = np.random.default_rng(1)
    model.set_weights([rng.normal(0, 0.1, w.shape).astype(np.float32) for w in model.get_weights()])
    path = tmp_path_factory.mktemp("trained") / "seg.keras"
    model.save(path)
    return path, model.get_weights()


def _write_registry(home, card):
    home.mkdir(parents=True, exist_ok=True)
    (home / "wsk_zoo.json").write_text(json.dumps({"version": 1, "models": {card["name"]: card}}))


def _card(name, url, sha256, builder="deeplab_largefov"):
    return {"name": name, "task": "segmentation", "builder": builder,
            "builder_args": {"num_classes": 4, "width": WIDTH}, "class_names": NAMES4,
            "weights": {"url": url, "sha256": sha256}}


def _same_weights(model, weights):
    got = model.get_weights()
    return len(got) == len(weights) and all(np.array_equal(a, b) for a, b in zip(got, weights))


def test_load_from_file_url_with_correct_sha256(keras_home, trained):
    import wsk.zoo

    path, weights = trained
    _write_registry(keras_home, _card("deeplab_largefov.unit", path.as_uri(), _sha256(path)))
    assert "deeplab_largefov.unit" in wsk.zoo.list()
    model = wsk.zoo.load("deeplab_largefov.unit")
    assert _same_weights(model, weights)
    cached = keras_home / "models" / "wsk" / "deeplab_largefov.unit.keras"
    assert cached.is_file() and _sha256(cached) == _sha256(path)
    assert wsk.zoo.fetch("deeplab_largefov.unit") == str(cached)
    fresh = wsk.zoo.load("deeplab_largefov.unit", weights=False)
    assert not _same_weights(fresh, weights)


def test_builder_takes_weights_zoo_name(keras_home, trained):
    """``deeplab_largefov(..., weights=NAME)`` loads a card's weights as keras.applications does "imagenet"."""
    from wsk.models import deeplab_largefov

    path, weights = trained
    _write_registry(keras_home, _card("deeplab_largefov.unit", path.as_uri(), _sha256(path)))
    assert _same_weights(deeplab_largefov(num_classes=4, width=WIDTH, weights="deeplab_largefov.unit"), weights)


def test_wrong_sha256_is_deleted_and_refused(keras_home, trained):
    import wsk.zoo
    from wsk.errors import WskError

    path, _ = trained
    wrong = hashlib.sha256(b"something else").hexdigest()
    _write_registry(keras_home, _card("deeplab_largefov.bad", path.as_uri(), wrong))
    with pytest.raises(WskError, match="sha256"):
        wsk.zoo.load("deeplab_largefov.bad")
    cache = keras_home / "models" / "wsk"
    assert not (cache / "deeplab_largefov.bad.keras").exists()
    assert [p for p in cache.iterdir() if p.is_file()] == []


def test_tampered_cache_is_downloaded_again(keras_home, trained):
    import wsk.zoo

    path, weights = trained
    _write_registry(keras_home, _card("deeplab_largefov.unit", path.as_uri(), _sha256(path)))
    cached = pathlib.Path(wsk.zoo.fetch("deeplab_largefov.unit"))
    cached.write_bytes(b"tampered")
    assert _same_weights(wsk.zoo.load("deeplab_largefov.unit"), weights)
    assert _sha256(cached) == _sha256(path)


@pytest.mark.parametrize("card_change, problem", [
    ({"builder": "os.system"}, "unknown builder"),
    ({"name": "../escape.keras"}, "arch.tag"),
    ({"weights": {"url": "ftp://host/x.keras", "sha256": "0" * 64}}, "url"),
    ({"weights": {"url": "file:///x.keras", "sha256": "abc"}}, "sha256"),
    ({"weights": {"url": "file:///x.keras", "sha256": "0" * 64, "file": "../../x.keras"}}, "plain"),
    ({"class_names": ["red", "green", "blue", "background"]}, "background"),
])
def test_bad_cards_are_refused(keras_home, card_change, problem):
    import wsk.zoo
    from wsk.errors import WskError

    card = dict(_card("deeplab_largefov.unit", "file:///x.keras", "0" * 64), **card_change)
    _write_registry(keras_home, card)
    with pytest.raises(WskError, match=problem) as err:
        wsk.zoo.list()
    assert "wsk_zoo.json" in str(err.value)


def test_cli_add_then_load(keras_home, trained, tmp_path):
    import wsk.zoo
    from wsk.cli.main import cli

    path, weights = trained
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / "classes.txt").write_text("\n".join(NAMES4) + "\n")
    runner = CliRunner()
    result = runner.invoke(cli, ["zoo", "add", "deeplab_largefov.mine", str(path), "--classes", str(dataset),
                                 "--builder", "deeplab_largefov", "--arg", "num_classes=4",
                                 "--arg", f"width={WIDTH}", "--miou", "12.5"])
    assert result.exit_code == 0, result.output
    registry = json.loads((keras_home / "wsk_zoo.json").read_text())
    card = registry["models"]["deeplab_largefov.mine"]
    assert card["weights"]["sha256"] == _sha256(path)
    assert card["weights"]["size"] == path.stat().st_size
    assert card["class_names"] == NAMES4
    assert card["builder_args"] == {"num_classes": 4, "width": WIDTH}
    assert card["metrics"]["miou"] == pytest.approx(0.125)
    model = wsk.zoo.load("deeplab_largefov.mine")
    assert _same_weights(model, weights)

    listing = runner.invoke(cli, ["zoo", "list"])
    assert listing.exit_code == 0
    row = next(line for line in listing.output.splitlines() if line.startswith("deeplab_largefov.mine"))
    assert row.split()[1:5] == ["segmentation", "4", "12.5", "user"]
    info = runner.invoke(cli, ["zoo", "info", "deeplab_largefov.mine"])
    assert json.loads(info.output)["weights"]["sha256"] == _sha256(path)

    fetched = runner.invoke(cli, ["zoo", "fetch", "deeplab_largefov.mine"])
    assert fetched.exit_code == 0
    cached = keras_home / "models" / "wsk" / "deeplab_largefov.mine.keras"
    assert fetched.output.strip().splitlines()[-1] == str(cached)

    # The builders' weights="<zoo name>" path: weights into a model built by the caller.
    from wsk.models import deeplab_largefov

    assert _same_weights(wsk.zoo.load_weights(deeplab_largefov(num_classes=4, width=WIDTH),
                                              "deeplab_largefov.mine"), weights)

    again = runner.invoke(cli, ["zoo", "add", "deeplab_largefov.mine", str(path), "--classes", str(dataset)])
    assert again.exit_code == 1 and "--overwrite" in again.output
    unknown = runner.invoke(cli, ["zoo", "info", "deeplab_largefov.nothing"])
    assert unknown.exit_code == 1 and "deeplab_largefov.mine" in unknown.output


def test_add_whole_model_without_builder_loads_with_safe_mode(keras_home, trained, tmp_path):
    import wsk.zoo

    path, weights = trained
    source = tmp_path / "copy.keras"
    source.write_bytes(path.read_bytes())
    card = wsk.zoo.add("deeplab_largefov.whole", source, class_names=NAMES4)
    assert card["builder"] is None
    assert card["weights"]["url"] == source.as_uri()
    source.unlink()  # the source may go away: the verified copy in the Keras cache is used
    model = wsk.zoo.load("deeplab_largefov.whole")
    assert _same_weights(model, weights)


def test_add_reads_the_wsk_train_sidecar(keras_home, trained, tmp_path):
    """A model saved by ``wsk train`` carries its classes and builder arguments in model.json."""
    import keras

    import wsk.zoo
    from wsk.models.saving import save_model

    path, weights = trained
    model = keras.saving.load_model(path, compile=False)
    target = tmp_path / "seg" / "model.keras"
    target.parent.mkdir()
    save_model(model, target, {"architecture": "deeplab_largefov", "variant": "SN_B",
                               "class_names": NAMES4, "num_classes": 4, "width": WIDTH})
    card = wsk.zoo.add("deeplab_largefov.trained", target)
    assert card["builder"] == "deeplab_largefov"
    assert card["builder_args"] == {"num_classes": 4, "width": WIDTH}
    assert card["class_names"] == NAMES4
    assert card["training"]["variant"] == "SN_B"
    assert _same_weights(wsk.zoo.load("deeplab_largefov.trained"), weights)


def test_add_refuses_wrong_sha256_and_builder_mismatch(keras_home, trained):
    import wsk.zoo
    from wsk.errors import WskError

    path, _ = trained
    with pytest.raises(WskError, match="sha256"):
        wsk.zoo.add("deeplab_largefov.x", path, sha256="0" * 64, class_names=NAMES4)
    with pytest.raises(WskError, match="do not fit"):
        wsk.zoo.add("deeplab_largefov.y", path, class_names=NAMES4, builder="deeplab_largefov",
                    builder_args={"num_classes": 4, "width": 2 * WIDTH})
    with pytest.raises(WskError, match="3 class names"):
        wsk.zoo.add("deeplab_largefov.z", path, class_names=NAMES4[:3])
    assert not (keras_home / "wsk_zoo.json").exists()
    assert not list((keras_home / "models" / "wsk").glob("*.keras"))   # refused files are not cached


def test_add_refuses_a_damaged_file_naming_it(keras_home, tmp_path):
    import wsk.zoo
    from wsk.errors import WskError

    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip")
    with pytest.raises(WskError) as err:
        wsk.zoo.add("deeplab_largefov.bad", bad, class_names=NAMES4)
    assert str(bad) in str(err.value)
    assert not (keras_home / "models" / "wsk").exists() or not list((keras_home / "models" / "wsk").iterdir())


def test_add_hcp_drops_background_of_dataset_classes(keras_home, tmp_path):
    import wsk.zoo
    from wsk.models import hcp

    model = hcp(num_classes=3, image_size=32, width=WIDTH)
    path = tmp_path / "hcp.keras"
    model.save(path)
    card = wsk.zoo.add("hcp.mine", path, class_names=NAMES4)
    assert card["task"] == "classification"
    assert card["class_names"] == NAMES4[1:]
    assert card["input_size"] == [32, 32]


# --------------------------------------------------------------------- shipped (built-in) cards
def _shipped_cards():
    from wsk import registry

    return [card for card in registry.builtin_cards().values() if card["weights"].get("url") is None]


def _naive_miou(pairs, num_classes, ignore=255):
    """Mean over classes (present in truth or prediction) of TP / (TP + FP + FN), 255 ignored."""
    intersection = np.zeros(num_classes)
    union = np.zeros(num_classes)
    for truth, predicted in pairs:
        valid = truth != ignore
        for c in range(num_classes):
            t, p = (truth == c) & valid, (predicted == c) & valid
            intersection[c] += np.sum(t & p)
            union[c] += np.sum(t | p)
    present = union > 0
    return float(np.mean(intersection[present] / union[present]))


def test_builtin_cards_are_complete():
    from wsk import registry

    assert registry.builtin_cards(), "the package ships no built-in card"
    for card in registry.builtin_cards().values():
        path = os.path.join(registry.WEIGHTS_DIR, registry.weights_filename(card))
        assert os.path.isfile(path), card["name"]
        assert _sha256(path) == card["weights"]["sha256"]
        assert os.path.getsize(path) == card["weights"]["size"]
        for key in ("recipe", "dataset", "metrics", "licence", "preprocessing"):
            assert card.get(key), (card["name"], key)
        assert card["metrics"].get("command"), card["name"]
    # issue 22: the weights the package ships come to 10 MB at most, in all
    shipped = sum(os.path.getsize(os.path.join(registry.WEIGHTS_DIR, name))
                  for name in os.listdir(registry.WEIGHTS_DIR))
    assert shipped <= 10_000_000, shipped


def test_shipped_card_predicts_synthetic_val_at_its_miou(tmp_path, keras_home):
    """Regenerate the card's synthetic val set and re-measure its mIoU with a NumPy reference."""
    cards = [c for c in _shipped_cards() if (c.get("dataset") or {}).get("name") == "synthetic"]
    assert cards, "no built-in card for the synthetic dataset (benchmarks/make_zoo_card.py adds one)"
    import wsk.zoo
    from keras import ops

    from wsk.data.synthetic import generate_dataset
    from wsk.data.voc import VOCDataset

    for card in cards:
        data = card["dataset"]
        root = tmp_path / card["name"]
        generate_dataset(root, num_images=data["num_images"], size=data["size"], seed=data["seed"])
        dataset = VOCDataset(root, card["metrics"]["split"])
        assert list(dataset.class_names) == card["class_names"]
        digest = hashlib.sha256()
        for image_id in dataset.ids:
            digest.update(image_id.encode())
            digest.update(np.ascontiguousarray(dataset.mask(image_id), np.uint8).tobytes())
        assert digest.hexdigest() == card["metrics"]["masks_sha256"], (
            f"{card['name']}: the synthetic generator changed since this card was made; remake it "
            "with benchmarks/make_zoo_card.py")
        segmenter = wsk.zoo.load(card["name"])
        pairs = []
        for image_id in dataset.ids:
            labels = segmenter.predict(dataset.image(image_id)[None], verbose=0)
            pairs.append((dataset.mask(image_id), np.asarray(labels)[0]))
        measured = _naive_miou(pairs, len(card["class_names"]))
        assert abs(measured - card["metrics"]["miou"]) <= 0.005, (card["name"], measured)


def test_zoo_segmenter_takes_raw_photos_like_wsk_predict(tmp_path, keras_home, voc_sample):
    """``wsk.zoo.load(name).predict(image)`` on real VOC photos (uint8 RGB, their own sizes) gives the
    label maps ``wsk predict`` writes with the same weights; saved and reloaded as ``.keras`` it still
    does, and its SavedModel export serves the same maps."""
    import tensorflow as tf

    import wsk.zoo
    from wsk.cli.main import cli
    from wsk.export import export_savedmodel
    from wsk.io import read_image, read_label_png
    from wsk.models import Segmenter
    from wsk.models.saving import load_model

    name = "deeplab_largefov.synthetic_snb"
    segmenter = wsk.zoo.load(name)
    assert isinstance(segmenter, Segmenter) and segmenter.class_names[0] == "background"
    photos = sorted((voc_sample / "JPEGImages").glob("*.jpg"))[:3]
    out = tmp_path / "predicted"
    result = CliRunner().invoke(cli, ["predict", wsk.zoo.fetch(name), *map(str, photos), "--out", str(out),
                                      "--max-side", str(segmenter.max_side)])   # the card's (no sidecar here)
    assert result.exit_code == 0, result.output
    saved = tmp_path / "segmenter.keras"
    segmenter.save(saved)
    reloaded = load_model(saved)
    assert reloaded.class_names == segmenter.class_names
    exported = export_savedmodel(reloaded, tmp_path / "exported", reloaded.class_names)
    served = tf.saved_model.load(exported).signatures["serving_default"]
    sizes = set()
    for photo in photos:
        image = read_image(photo)
        sizes.add(image.shape)
        expected = read_label_png(out / f"{photo.stem}.png")
        labels = segmenter.predict(image[None], verbose=0)[0]
        assert labels.shape == image.shape[:2]
        np.testing.assert_array_equal(labels, expected)
        np.testing.assert_array_equal(reloaded.predict(image[None], verbose=0)[0], expected)
        np.testing.assert_array_equal(served(images=tf.constant(image[None]))["labels"].numpy()[0], expected)
    assert len(sizes) > 1   # photos of different sizes, each segmented at its own size
