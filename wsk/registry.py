"""Model cards: what a named model is, where its weights live, and how well it did.

A *card* is a JSON object describing one named model (``arch.tag``, e.g.
``deeplab_largefov.synthetic_snb``):

==================  ==========================================================================
``name``            ``arch.tag``: lower case letters, digits and ``_``, one or more dots
``task``            ``segmentation`` (DeepLab-LargeFOV, §3.4) or ``classification`` (HCP, §3.1)
``builder``         a builder of ``wsk.models`` (``deeplab_largefov`` or ``hcp``), or ``null``
                    when the weights file is a whole ``.keras`` model loaded with ``safe_mode``
``builder_args``    keyword arguments of the builder (``num_classes``, ``width``, ...)
``class_names``     output classes in order (segmentation: background first)
``preprocessing``   what the network expects: ``function`` and the BGR mean it subtracts
``input_size``      ``[S, S]`` for HCP, ``null`` (any size) for segmentation
``weights``         ``file`` (name of the ``.keras`` file), ``url`` (``null`` when the file ships
                    in ``wsk/zoo/weights``), ``sha256``, ``size`` (bytes)
``recipe``          the training recipe (``wsk.recipes``), ``dataset`` the data it was trained on
                    (for the synthetic set: generator arguments ``num_images``, ``size``, ``seed``)
``training``        the ``wsk train`` sidecar of the model (variant, supervision, recipe settings)
``metrics``         measured results, e.g. ``{"miou": 0.71, "split": "val", "command": "..."}``
                    (``miou`` is a fraction, 0..1)
``licence``         licence of the weights
==================  ==========================================================================

Built-in cards are the JSON files of ``wsk/zoo/cards``; user cards live in one registry file,
``$WSK_ZOO_REGISTRY`` or ``<keras home>/wsk_zoo.json`` (``{"version": 1, "models": {name: card}}``),
written atomically. ``fetch`` gives a card's weights file (shipped, or downloaded with
``keras.utils.get_file`` and checked against the card's sha256).

This is the lowest layer of the zoo: it knows cards and files, never networks, so that the
builders of ``wsk.models`` can take a zoo name (``weights=``, ``backbone_weights=``) and
``wsk.zoo``, which builds networks, sits above both.
"""

import dataclasses
import importlib.util
import json
import os
import re

import keras

from wsk.classes import check_background_first
from wsk.errors import WskError
from wsk.io import load_json, save_json
from wsk.storage import sha256_of

CARD_VERSION = 1
# the installed wsk.zoo package's folder, found without importing it (it imports wsk.models)
PACKAGE_DIR = os.path.dirname(os.path.abspath(importlib.util.find_spec("wsk.zoo").origin))
CARDS_DIR = os.path.join(PACKAGE_DIR, "cards")
WEIGHTS_DIR = os.path.join(PACKAGE_DIR, "weights")
REGISTRY_ENV = "WSK_ZOO_REGISTRY"
REGISTRY_FILE = "wsk_zoo.json"
CACHE_SUBDIR = os.path.join("models", "wsk")

# Only these builders of wsk.models may be named by a card (a card never names arbitrary code),
# each with the task it does.
BUILDERS = {"deeplab_largefov": "segmentation", "hcp": "classification"}
TASKS = tuple(dict.fromkeys(BUILDERS.values()))
URL_PATTERN = re.compile(r"^(https?|file)://")

NAME_PATTERN = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
REQUIRED = ("name", "task", "builder", "builder_args", "class_names", "weights")


def keras_home():
    """The Keras cache folder: ``$KERAS_HOME`` (read now, not at import) or ``~/.keras``."""
    home = os.environ.get("KERAS_HOME")
    if home:
        return os.path.abspath(os.path.expanduser(home))
    base = os.path.expanduser("~")
    return os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")


def registry_path():
    """The user registry file: ``$WSK_ZOO_REGISTRY`` or ``<keras home>/wsk_zoo.json``."""
    return os.path.abspath(os.environ.get(REGISTRY_ENV) or os.path.join(keras_home(), REGISTRY_FILE))


def cache_dir():
    """The folder downloaded weights go to: ``<keras home>/models/wsk``."""
    return os.path.join(keras_home(), CACHE_SUBDIR)


def check_name(name, source=None):
    """Return ``name`` if it is a valid ``arch.tag`` model name, else raise ``WskError``.

    The pattern keeps a name usable as a file name inside the cache folder (no ``/``, no ``..``).
    """
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise WskError(f"model name {name!r} must look like 'arch.tag' (lower case letters, digits, "
                       "'_', parts joined by '.')", source)
    return name


def weights_filename(card, source=None):
    """The local file name of a card's weights (``<name>.keras`` unless the card says otherwise).

    It must be a plain file name, so the weights can only land inside the cache folder.
    """
    file = card["weights"].get("file") or f"{card['name']}.keras"
    if os.path.basename(file) != file or not file.endswith(".keras") or file.startswith("."):
        raise WskError(f"model {card['name']}: weights file {file!r} must be a plain '.keras' file name",
                       source)
    return file


@dataclasses.dataclass(frozen=True)
class ModelCard:
    """A card's fields, typed and checked (the table in this module's docstring); cards travel as
    the dicts ``to_json`` gives, and ``validate_card`` reads one back through this."""

    name: str
    task: str
    builder: str | None
    builder_args: dict
    class_names: list
    weights: dict
    preprocessing: dict | None = None
    input_size: list | None = None
    recipe: object = None
    dataset: dict | None = None
    metrics: dict | None = None
    licence: str | None = None
    description: str = ""
    training: dict | None = None
    card_version: int = CARD_VERSION

    def __post_init__(self):
        name = check_name(self.name)
        if self.task not in TASKS:
            raise WskError(f"model {name}: task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.builder is not None:
            if self.builder not in BUILDERS:
                raise WskError(f"model {name}: unknown builder {self.builder!r}; known: {', '.join(BUILDERS)}")
            if BUILDERS[self.builder] != self.task:
                raise WskError(f"model {name}: builder {self.builder} does not do {self.task}")
        if not isinstance(self.builder_args, dict):
            raise WskError(f"model {name}: builder_args must be an object")
        names = self.class_names
        if not isinstance(names, list) or len(names) < 1 or not all(isinstance(n, str) for n in names):
            raise WskError(f"model {name}: class_names must be a list of strings")
        if self.task == "segmentation":
            check_background_first(names, f"model {name}")
        weights = self.weights
        if not isinstance(weights, dict) or not SHA256_PATTERN.match(str(weights.get("sha256", ""))):
            raise WskError(f"model {name}: weights need a sha256 (64 lower-case hex digits)")
        url = weights.get("url")
        if url is not None and not (isinstance(url, str) and URL_PATTERN.match(url)):
            raise WskError(f"model {name}: weights url must be http(s):// or file://, got {url!r}")
        file = weights_filename(dataclasses.asdict(self))
        if url is None and not os.path.isfile(os.path.join(WEIGHTS_DIR, file)):
            raise WskError(f"model {name}: no weights url and no shipped file {file}")

    @classmethod
    def from_json(cls, card, source=None):
        """The card a JSON object holds; a missing, unknown or ill-typed field is a ``WskError``
        naming ``source``."""
        if not isinstance(card, dict):
            raise WskError("a model card must be a JSON object", source)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        missing = [key for key in REQUIRED if key not in card]
        if missing:
            raise WskError(f"model card {card.get('name', '?')!r} lacks {', '.join(missing)}", source)
        unknown = sorted(set(card) - set(fields))
        if unknown:
            raise WskError(f"model card {card.get('name', '?')!r} has unknown fields {', '.join(unknown)}",
                           source)
        try:
            return cls(**card)
        except WskError as err:
            raise WskError(err.problem, source) from None

    def to_json(self):
        return dataclasses.asdict(self)


def validate_card(card, source=None):
    """Check a card (a dict) through ``ModelCard``; return it. Problems are a ``WskError`` naming
    ``source``."""
    ModelCard.from_json(card, source)
    return card


def builtin_cards():
    """The cards shipped in ``wsk/zoo/cards``, by name."""
    cards = {}
    if not os.path.isdir(CARDS_DIR):
        return cards
    for file in sorted(os.listdir(CARDS_DIR)):
        if not file.endswith(".json"):
            continue
        path = os.path.join(CARDS_DIR, file)
        card = validate_card(load_json(path), path)
        if card["name"] != file[: -len(".json")]:
            raise WskError(f"card file must be named after its model, {card['name']}.json", path)
        cards[card["name"]] = dict(card, source="builtin")
    return cards


def _read_registry(path):
    if not os.path.exists(path):
        return {"version": CARD_VERSION, "models": {}}
    data = load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise WskError("not a wsk zoo registry (expected {'version': 1, 'models': {...}})", path)
    if data.get("version") != CARD_VERSION:
        raise WskError(f"registry version {data.get('version')!r} is not {CARD_VERSION}", path)
    return data


def user_cards():
    """The cards of the user registry, by name."""
    path = registry_path()
    models = _read_registry(path)["models"]
    cards = {}
    for name, card in models.items():
        validate_card(card, path)
        if card["name"] != name:
            raise WskError(f"entry {name!r} holds a card named {card['name']!r}", path)
        cards[name] = dict(card, source="user")
    return cards


def all_cards():
    """Built-in cards then user cards, by name (a user card never hides a built-in one)."""
    cards = builtin_cards()
    for name, card in user_cards().items():
        cards.setdefault(name, card)
    return cards


def get_card(name):
    """The card called ``name``; an unknown name is a ``WskError`` listing the known ones."""
    cards = all_cards()
    if name not in cards:
        known = ", ".join(sorted(cards)) or "none"
        raise WskError(f"no model called {name!r} in the zoo (known: {known}; registry: {registry_path()})")
    return cards[name]


def register(card, overwrite=False):
    """Validate ``card`` and write it into the user registry (atomically); return the registry path."""
    path = registry_path()
    card = {key: value for key, value in card.items() if key != "source"}
    card.setdefault("card_version", CARD_VERSION)
    validate_card(card, path)
    if card["name"] in builtin_cards():
        raise WskError(f"{card['name']} is a built-in model; choose another name", path)
    data = _read_registry(path)
    if card["name"] in data["models"] and not overwrite:
        raise WskError(f"{card['name']} is already registered (use --overwrite to replace it)", path)
    data["models"][card["name"]] = card
    save_json(path, data)
    return path


def write_builtin_card(card):
    """Write ``card`` as ``wsk/zoo/cards/<name>.json`` (atomically); return its path."""
    card = {key: value for key, value in card.items() if key != "source"}
    card.setdefault("card_version", CARD_VERSION)
    path = os.path.join(CARDS_DIR, f"{check_name(card['name'])}.json")
    validate_card(card, path)
    save_json(path, card)
    os.chmod(path, 0o644)  # shipped in the package: readable by everyone
    return path


def card_json(card):
    """A card as indented JSON text (for ``wsk zoo info``)."""
    return json.dumps(card, indent=2, sort_keys=True)


def download(url, sha256, file, force=False):
    """Fetch ``url`` into the cache as ``file`` with ``keras.utils.get_file``; verify its sha256.

    A file whose sha256 differs is deleted and the download refused with a ``WskError``.
    """
    folder = cache_dir()
    os.makedirs(folder, exist_ok=True)  # get_file falls back to /tmp/.keras when it is missing
    target = os.path.join(folder, file)
    try:
        path = keras.utils.get_file(fname=file, origin=url, file_hash=sha256, hash_algorithm="sha256",
                                    cache_dir=keras_home(), cache_subdir=CACHE_SUBDIR,
                                    extract=False, force_download=force)
    except ValueError as err:  # get_file: hash mismatch after the download
        if os.path.exists(target):
            found = sha256_of(target)
            os.remove(target)
            raise WskError(f"downloaded weights have sha256 {found}, not {sha256}; the file was deleted",
                           url) from None
        raise WskError(f"download failed ({err})", url) from None
    except Exception as err:  # URL errors, interrupted transfers (get_file removes partial files)
        raise WskError(f"download failed ({err})", url) from None
    path = os.path.normpath(path)
    if path != os.path.normpath(target):
        raise WskError(f"keras.utils.get_file wrote {path}, outside the cache folder {folder}", url)
    found = sha256_of(path)
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
    file = weights_filename(card)
    if weights.get("url") is None:
        path = os.path.join(WEIGHTS_DIR, file)
        if not os.path.isfile(path):
            raise WskError(f"the shipped weights of {name} are missing (reinstall wsk)", path)
        found = sha256_of(path)
        if found != weights["sha256"]:
            raise WskError(f"shipped weights of {name} have sha256 {found}, not {weights['sha256']} "
                           "(reinstall wsk)", path)
        return path
    return download(weights["url"], weights["sha256"], file, force=force)
