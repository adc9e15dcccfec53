"""The wsk model zoo (installed as ``wsk.zoo``): pretrained models by name in Keras code.

    import wsk.zoo
    wsk.zoo.list()                                    # names, built-in cards then the user's
    wsk.zoo.info("deeplab_largefov.synthetic_snb")    # its card (see wsk.registry)
    segmenter = wsk.zoo.load("deeplab_largefov.synthetic_snb")   # raw uint8 images in, label maps out
    labels = segmenter.predict(images)                # images: (B, H, W, 3) uint8 RGB, any H, W
    net = wsk.zoo.network("deeplab_largefov.synthetic_snb")  # the raw network (logits at stride 8)
    path = wsk.zoo.fetch("deeplab_largefov.synthetic_snb")   # the verified weights file

``network`` builds the card's ``wsk.models`` builder and loads the weights into it, so
``wsk.zoo.network(name)`` is what a builder's ``weights="<zoo name>"`` means (see ``load_weights``);
``load`` wraps a segmentation network in ``wsk.models.Segmenter``, which segments raw images.
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

import keras

import wsk.models
from wsk import registry
from wsk.classes import VOC_CLASSES
from wsk.errors import WskError
from wsk.models.description import PREPROCESSING, ModelDescription, recipe_max_side
from wsk.models.saving import load_model, load_weights_file, read_sidecar
from wsk.models.tasks import model_task
from wsk.recipes import RECIPES
from wsk.registry import download, fetch, get_card

__all__ = ["list", "info", "load", "network", "fetch", "add", "load_weights"]


def list():  # noqa: A001 - the zoo's public name, as in the issue
    """Names of every model in the zoo: built-in cards first, then the user registry's."""
    return [name for name in registry.all_cards()]


def info(name):
    """A copy of the card of model ``name`` (``source`` says ``builtin`` or ``user``)."""
    return dict(get_card(name))


def build(card):
    """The architecture of ``card`` (a dict with ``name``, ``builder``, ``builder_args``) from its
    ``wsk.models`` builder, with freshly initialised weights."""
    if card.get("builder") not in registry.BUILDERS:
        raise WskError(f"model {card['name']}: unknown builder {card.get('builder')!r}")
    builder = getattr(wsk.models, card["builder"])
    try:
        return builder(**card["builder_args"])
    except TypeError as err:
        raise WskError(f"model {card['name']}: builder {card['builder']} rejects its arguments ({err})")


def load_weights(model, name):
    """Load model ``name``'s weights into ``model`` (built by the same builder); return ``model``.

    This is the ``weights="<zoo name>"`` path of the builders, like ``keras.applications``'
    ``weights="imagenet"``: ``deeplab_largefov(..., weights=name)`` builds, then calls this.
    """
    return load_weights_file(model, fetch(name), name)


def network(name, weights=True):
    """The raw network of model ``name`` (uncompiled), with its trained weights when ``weights``:
    DeepLab-LargeFOV's logits of preprocessed images (at its output stride, 8 or 4), or HCP's scores.

    Cards with a builder are built by ``wsk.models`` and given the weights; cards without one load
    the whole ``.keras`` file with ``safe_mode=True`` (``weights=False`` then re-initialises it).
    """
    card = get_card(name)
    if card["builder"] is not None:
        model = build(card)
        return load_weights(model, name) if weights else model
    model = load_model(fetch(name))
    return model if weights else keras.models.clone_model(model)


def load(name, weights=True):
    """Model ``name``, ready for its task, with its trained weights when ``weights``.

    A segmentation model comes as a ``wsk.models.Segmenter``: ``load(name).predict(images)`` takes
    uint8 RGB images of any size and returns their label maps, running at most at the card's
    ``card_max_side`` (the raw network is its
    ``.network``, the card's classes its ``.class_names``). An HCP classifier comes as its network.
    """
    card = get_card(name)
    model = network(name, weights)
    if card["task"] == "segmentation":
        return wsk.models.Segmenter(model, card["class_names"], max_side=card_max_side(card),
                                    name=name.replace(".", "_"))
    return model


def model_card(name, model, class_names, weights, builder=None, builder_args=None, **extra):
    """A card (dict) describing ``model``: task, classes, input size and preprocessing read off it.

    ``weights`` is ``{"file"|"url", "sha256", "size"}``; ``extra`` adds ``recipe``, ``dataset``,
    ``metrics``, ``licence``, ``description``. The class count must equal the model's outputs.
    """
    registry.check_name(name)
    task = model_task(model)
    outputs = model.outputs[0].shape[-1]
    if len(class_names) != outputs:
        raise WskError(f"model {name} has {outputs} outputs but {len(class_names)} class names were given")
    input_size = None if task == "segmentation" else [int(model.inputs[0].shape[2]),
                                                       int(model.inputs[0].shape[3])]
    card = {"name": name, "task": task, "builder": builder, "builder_args": dict(builder_args or {}),
            "class_names": [str(n) for n in class_names], "preprocessing": PREPROCESSING.to_json(),
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
    if model_task(model) == "classification" and class_names and class_names[0] == "background":
        return class_names[1:]
    return class_names


def default_class_names(model):
    """VOC's classes when the model's output count matches them (21 with background, 20 without)."""
    outputs = model.outputs[0].shape[-1]
    if outputs == len(VOC_CLASSES):
        return VOC_CLASSES
    if outputs == len(VOC_CLASSES) - 1 and model_task(model) == "classification":
        return VOC_CLASSES[1:]
    return None


def training_description(model_path):
    """The ``ModelDescription`` ``wsk train`` wrote beside a model (``model.json`` for
    ``model.keras``), or None when there is none."""
    record = read_sidecar(model_path)
    return None if record is None else ModelDescription.from_json(record, model_path)


def recorded_max_side(model_path):
    """The ``max_side`` of the ``wsk train`` description beside ``model_path``, else the paper's
    training scale (``wsk.models.description.recipe_max_side()``)."""
    description = training_description(model_path)
    return (description is not None and description.max_side) or recipe_max_side()


def card_max_side(card):
    """The longer side, pixels, a card's segmentation model runs at: its training record's
    ``max_side``, else its recipe's training scale (``recipe_max_side``), else the paper's."""
    recorded = (card.get("training") or {}).get("max_side")
    if recorded:
        return int(recorded)
    recipe = card.get("recipe")
    return recipe_max_side(recipe if isinstance(recipe, str) and recipe in RECIPES else "paper")


def training_record(description):
    """The ``training`` entry of a card: a model's description less what the card holds already."""
    if description is None:
        return None
    return {key: value for key, value in description.to_json().items()
            if key not in ("class_names", "preprocessing")}


def class_names_of(model, path, class_names=None):
    """The class names of the trained ``model`` loaded from ``path``, fitted to it by ``classes_for``.

    ``class_names`` if given, else those of the ``wsk train`` sidecar beside ``path``, else VOC's
    when the output count fits; none of these is a ``WskError`` asking for them.
    """
    if class_names is None:
        description = training_description(path)
        class_names = None if description is None else description.class_names
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
    is_url = bool(registry.URL_PATTERN.match(str(source)))
    if is_url:
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
    description = None if is_url else training_description(source)
    if description is not None:
        if builder is None or (builder == description.architecture and not builder_args):
            builder, builder_args = description.architecture, description.builder_args()
        extra.setdefault("training", training_record(description))
    if not is_url:
        load_model(source)   # a damaged file is refused, naming the user's file, before any copy
    path = download(url, sha256, file, force=overwrite)
    try:
        model = load_model(path)
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
