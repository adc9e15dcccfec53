"""The wsk model zoo (installed as ``wsk.zoo``): pretrained models by name in Keras code.

    import wsk.zoo
    wsk.zoo.list()                                    # names, built-in cards then the user's
    wsk.zoo.info("deeplab_largefov.synthetic_snb")    # its card (see wsk.zoo.registry)
    model = wsk.zoo.load("deeplab_largefov.synthetic_snb")   # uncompiled Keras model with weights
    path = wsk.zoo.fetch("deeplab_largefov.synthetic_snb")   # the verified weights file

``load`` builds the card's ``wsk.models`` builder and loads the weights into it, so
``wsk.zoo.load(name)`` is what a builder's ``weights="<zoo name>"`` means (see ``load_weights``).
Weights are downloaded with ``keras.utils.get_file`` into ``<keras home>/models/wsk`` and checked
against the card's sha256; a file whose hash differs is deleted and refused. Whole ``.keras`` models
(cards without a builder) are loaded with ``safe_mode=True``; nothing is ever extracted.

Your own models: ``wsk zoo add NAME MODEL.keras`` (or a URL with ``--sha256``) writes a card into
the user registry (``$WSK_ZOO_REGISTRY`` or ``<keras home>/wsk_zoo.json``). A built-in card with
shipped weights is made from a trained model by one command, which also measures its mIoU::

    python benchmarks/make_zoo_card.py WORK/seg/SN_B/model.keras deeplab_largefov.synthetic_snb \
        --images N --size S --seed K --recipe demo

(``tests/test_zoo.py`` regenerates that synthetic validation set and checks the recorded mIoU.)
"""

import os
import pathlib
import re

from wsk.errors import WskError
from wsk.zoo import registry
from wsk.zoo.registry import get_card

__all__ = ["list", "info", "load", "fetch", "add", "load_weights"]

_URL = re.compile(r"^(https?|file)://")


def list():  # noqa: A001 - the zoo's public name, as in the issue
    """Names of every model in the zoo: built-in cards first, then the user registry's."""
    return [name for name in registry.all_cards()]


def info(name):
    """A copy of the card of model ``name`` (``source`` says ``builtin`` or ``user``)."""
    return dict(get_card(name))


def _download(url, sha256, file, force=False):
    """Fetch ``url`` into the cache as ``file`` with ``keras.utils.get_file``; verify its sha256.

    A file whose sha256 differs is deleted and the download refused with a ``WskError``.
    """
    import keras

    folder = registry.cache_dir()
    os.makedirs(folder, exist_ok=True)  # get_file falls back to /tmp/.keras when it is missing
    target = os.path.join(folder, file)
    try:
        path = keras.utils.get_file(fname=file, origin=url, file_hash=sha256, hash_algorithm="sha256",
                                    cache_dir=registry.keras_home(), cache_subdir=registry.CACHE_SUBDIR,
                                    extract=False, force_download=force)
    except ValueError as err:  # get_file: hash mismatch after the download
        if os.path.exists(target):
            found = registry.sha256_of(target)
            os.remove(target)
            raise WskError(f"downloaded weights have sha256 {found}, not {sha256}; the file was deleted",
                           url) from None
        raise WskError(f"download failed ({err})", url) from None
    except Exception as err:  # URL errors, interrupted transfers (get_file removes partial files)
        raise WskError(f"download failed ({err})", url) from None
    path = os.path.normpath(path)
    if path != os.path.normpath(target):
        raise WskError(f"keras.utils.get_file wrote {path}, outside the cache folder {folder}", url)
    found = registry.sha256_of(path)
    if found != sha256:  # never trust a cache hit blindly
        os.remove(path)
        raise WskError(f"weights have sha256 {found}, not {sha256}; the file was deleted", path)
    return path


def fetch(name, force=False):
    """The local path of model ``name``'s weights, downloaded into the Keras cache if needed.

    Shipped weights (cards without a url) are read in place from ``wsk/zoo/weights``. Either way the
    file's sha256 must equal the card's, else ``WskError`` (a mismatching download is deleted).
    """
    card = get_card(name)
    weights = card["weights"]
    file = registry.weights_filename(card)
    if weights.get("url") is None:
        path = os.path.join(registry.WEIGHTS_DIR, file)
        if not os.path.isfile(path):
            raise WskError(f"the shipped weights of {name} are missing (reinstall wsk)", path)
        found = registry.sha256_of(path)
        if found != weights["sha256"]:
            raise WskError(f"shipped weights of {name} have sha256 {found}, not {weights['sha256']} "
                           "(reinstall wsk)", path)
        return path
    return _download(weights["url"], weights["sha256"], file, force=force)


def _load_whole(path):
    """A whole ``.keras`` model, loaded by ``wsk.predict.load_model`` (``safe_mode=True``, uncompiled)."""
    from wsk.predict import load_model

    return load_model(path)


def build(card):
    """The architecture of ``card`` (a dict with ``name``, ``builder``, ``builder_args``) from its
    ``wsk.models`` builder, with freshly initialised weights."""
    import wsk.models

    if card.get("builder") not in registry.BUILDERS:
        raise WskError(f"model {card['name']}: unknown builder {card.get('builder')!r}")
    builder = getattr(wsk.models, card["builder"])
    try:
        return builder(**card["builder_args"])
    except TypeError as err:
        raise WskError(f"model {card['name']}: builder {card['builder']} rejects its arguments ({err})")


def load_weights_file(model, path, name):
    """Load the weights of the ``.keras`` file ``path`` into ``model``; a mismatch is a ``WskError``."""
    try:
        model.load_weights(path)
    except Exception as err:
        raise WskError(f"weights of {name} do not fit the card's architecture ({type(err).__name__}: "
                       f"{err})", path) from None


def load_weights(model, name):
    """Load model ``name``'s weights into ``model`` (built by the same builder); return ``model``.

    This is the ``weights="<zoo name>"`` path of the builders, like ``keras.applications``'
    ``weights="imagenet"``: ``deeplab_largefov(..., weights=name)`` builds, then calls this.
    """
    load_weights_file(model, fetch(name), name)
    return model


def load(name, weights=True):
    """Model ``name`` as an uncompiled Keras model, with its trained weights when ``weights``.

    Cards with a builder are built by ``wsk.models`` and given the weights; cards without one load
    the whole ``.keras`` file with ``safe_mode=True`` (``weights=False`` then re-initialises it).
    """
    card = get_card(name)
    if card["builder"] is not None:
        model = build(card)
        return load_weights(model, name) if weights else model
    import keras

    model = _load_whole(fetch(name))
    return model if weights else keras.models.clone_model(model)


def preprocessing_record():
    """The ``preprocessing`` entry of a card: ``wsk.models.preprocess_input`` and the mean it subtracts."""
    from wsk.models.preprocessing import MEAN_BGR

    return {"function": "wsk.models.preprocess_input", "input": "RGB, 0..255",
            "channel_order": "BGR", "mean": [float(v) for v in MEAN_BGR]}


def model_card(name, model, class_names, weights, builder=None, builder_args=None, **extra):
    """A card (dict) describing ``model``: task, classes, input size and preprocessing read off it.

    ``weights`` is ``{"file"|"url", "sha256", "size"}``; ``extra`` adds ``recipe``, ``dataset``,
    ``metrics``, ``licence``, ``description``. The class count must equal the model's outputs.
    """
    registry.check_name(name)
    rank = len(model.inputs[0].shape)
    task = {4: "segmentation", 5: "classification"}.get(rank)
    if task is None:
        raise WskError(f"model {name}: input rank {rank} is neither a segmentation (B, H, W, 3) nor an "
                       "HCP (B, M, S, S, 3) model")
    outputs = model.outputs[0].shape[-1]
    if len(class_names) != outputs:
        raise WskError(f"model {name} has {outputs} outputs but {len(class_names)} class names were given")
    input_size = None if task == "segmentation" else [int(model.inputs[0].shape[2]),
                                                       int(model.inputs[0].shape[3])]
    card = {"name": name, "task": task, "builder": builder, "builder_args": dict(builder_args or {}),
            "class_names": [str(n) for n in class_names], "preprocessing": preprocessing_record(),
            "input_size": input_size, "weights": dict(weights), "recipe": None, "dataset": None,
            "metrics": None, "licence": None, "description": ""}
    card.update(extra)
    return card


def classes_for(model, class_names):
    """``class_names`` fitted to ``model``: a dataset's list loses ``background`` for an HCP model.

    ``None`` gives VOC's classes when the output count fits them, else ``None``.
    """
    if class_names is None:
        return default_class_names(model)
    class_names = tuple(class_names)
    if len(model.inputs[0].shape) == 5 and class_names and class_names[0] == "background":
        return class_names[1:]
    return class_names


def default_class_names(model):
    """VOC's classes when the model's output count matches them (21 with background, 20 without)."""
    from wsk.classes import VOC_CLASSES

    outputs = model.outputs[0].shape[-1]
    if outputs == len(VOC_CLASSES):
        return VOC_CLASSES
    if outputs == len(VOC_CLASSES) - 1 and len(model.inputs[0].shape) == 5:
        return VOC_CLASSES[1:]
    return None


def training_description(model_path):
    """The JSON sidecar ``wsk train`` writes beside a model (``model.json`` for ``model.keras``), or None.

    It names the architecture, class names, width (and HCP's image size) and the recipe.
    """
    from wsk.io import load_json
    from wsk.train import sidecar_path

    path = sidecar_path(model_path)
    return load_json(path) if os.path.isfile(path) else None


def training_record(description):
    """The ``training`` entry of a card: a ``wsk train`` sidecar less what the card holds already."""
    if not description:
        return None
    return {key: value for key, value in description.items() if key not in ("class_names", "preprocessing")}


def builder_from_description(description):
    """``(builder, builder_args)`` that rebuild a model from its ``wsk train`` sidecar, or ``(None, {})``."""
    if not description or description.get("architecture") not in registry.BUILDERS:
        return None, {}
    names = description.get("class_names") or []
    if description["architecture"] == "deeplab_largefov":
        args = {"num_classes": description.get("num_classes", len(names)), "width": description["width"]}
    else:
        args = {"num_classes": len(names), "image_size": description["image_size"],
                "width": description["width"]}
    return description["architecture"], args


def class_names_of(model, path, class_names=None):
    """The class names of the trained ``model`` loaded from ``path``, fitted to it by ``classes_for``.

    ``class_names`` if given, else those of the ``wsk train`` sidecar beside ``path``, else VOC's
    when the output count fits; none of these is a ``WskError`` asking for them.
    """
    if class_names is None:
        class_names = (training_description(path) or {}).get("class_names")
    names = classes_for(model, class_names)
    if names is None:
        raise WskError(f"the model has {model.outputs[0].shape[-1]} classes; give their names "
                       "(--classes DATASET_ROOT or its classes.txt)", path)
    return names


def add(name, source, sha256=None, class_names=None, builder=None, builder_args=None, overwrite=False,
        **extra):
    """Register a trained model as ``name`` in the user registry; return its card.

    ``source`` is a ``.keras`` file or an ``http(s)://``/``file://`` URL (then ``sha256`` is
    required). The weights are copied into the Keras cache at once (so the card keeps working if
    the source moves), the model is opened with ``safe_mode=True`` to read its classes and input
    size, and when ``builder`` is given the weights must load into ``builder(**builder_args)``.
    Beside a ``.keras`` written by ``wsk train``, its JSON sidecar supplies the class names and the
    builder with its arguments (unless given); without either, ``class_names`` default to VOC's
    when the output count fits, else they are required.
    """
    registry.check_name(name)
    existing = registry.all_cards().get(name)
    if existing is not None and (existing["source"] == "builtin" or not overwrite):
        raise WskError(f"{name} is already a {existing['source']} model"
                       + ("" if existing["source"] == "builtin" else " (use --overwrite to replace it)"),
                       registry.registry_path())
    file = f"{name}.keras"
    if _URL.match(str(source)):
        if not sha256:
            raise WskError("a URL needs its sha256 (--sha256)", source)
        url = str(source)
    else:
        source = os.path.abspath(os.fspath(source))
        if not os.path.isfile(source):
            raise WskError("model file not found", source)
        if not source.endswith(".keras"):
            raise WskError("expected a .keras model file", source)
        found = registry.sha256_of(source)
        if sha256 and str(sha256).lower() != found:
            raise WskError(f"file has sha256 {found}, not {sha256}", source)
        sha256, url = found, pathlib.Path(source).as_uri()
    sha256 = str(sha256).lower()
    if not registry.SHA256_PATTERN.match(sha256):
        raise WskError(f"{sha256!r} is not a sha256 (64 hex digits)")
    if builder is not None and builder not in registry.BUILDERS:
        raise WskError(f"unknown builder {builder!r}; known: {', '.join(registry.BUILDERS)}")
    description = None if _URL.match(str(source)) else training_description(source)
    if description is not None:
        known, known_args = builder_from_description(description)
        if builder is None or (builder == known and not builder_args):
            builder, builder_args = known, known_args
        extra.setdefault("training", training_record(description))
    if not _URL.match(str(source)):
        _load_whole(source)   # a damaged file is refused, naming the user's file, before any copy
    path = _download(url, sha256, file, force=overwrite)
    try:
        model = _load_whole(path)
        class_names = class_names_of(model, source, class_names)
        weights = {"file": file, "url": url, "sha256": sha256, "size": os.path.getsize(path)}
        card = model_card(name, model, class_names, weights, builder=builder, builder_args=builder_args,
                          **extra)
        if builder is not None:
            load_weights_file(build(card), path, name)
    except WskError:
        os.remove(path)       # nothing that was refused stays in the cache
        raise
    registry.register(card, overwrite=overwrite)
    return dict(card, source="user")
