"""``WORK/run.json``: what made a work directory, written by its first command, read by every later one.

It records the **run fields** — the dataset (``wsk.data.sources.DataSource``), the training and
validation splits, the class names and the recipe's name and *values* — with the wsk version, and
appends the arguments of every command run on the directory (as IRN records its runs)::

    {"format": 1, "wsk": "0.2.0", "dataset": {"kind": "labels", "path": "/data/tags.csv"},
     "split": "train", "val_split": "val", "classes": ["background", "cat", "dog"],
     "recipe": {"name": "demo", "hcp": {...}, "seg": {...}, "pseudo": {...}},
     "adopted_from": null, "commands": [{"command": "wsk run", "params": {...}, "wsk": "0.2.0", "time": "..."}]}

A later command that gives a run field differently stops with one line naming ``WORK/run.json``
and the field; one that gives none uses the recorded ones. The recorded values win over the
current definition of a recipe name, so a later wsk that changes ``demo`` leaves the directory as
it was made. Command fields (the split given to ``eval``, ``viz`` or ``predict``, ``--jobs``) stay free.

A work directory made before run.json existed is **adopted** (``adopt``): its HCP sidecar
(``hcp/hcp.json``: the HCP recipe and classes), its scores (mode and threshold), its
``refined.json`` settings and its proposals' settings give the recorded values; flags that
disagree with them are refused as above.
"""

import dataclasses
import datetime
import os

from wsk import storage
from wsk.errors import WskError
from wsk.io import load_json, load_npz, save_json
from wsk.recipes import RECIPES, HCPRecipe, PseudoConfig, Recipe, SegRecipe, get_recipe

FORMAT = 1
_PARTS = {"hcp": HCPRecipe, "seg": SegRecipe, "pseudo": PseudoConfig}


# ------------------------------------------------------------------------------ recipes as JSON
def recipe_to_json(recipe):
    """``{"name": ..., "hcp": {...}, "seg": {...}, "pseudo": {...}}`` (tuples as lists)."""
    values = {part: dataclasses.asdict(getattr(recipe, part)) for part in _PARTS}
    return {"name": recipe.name, "variant": recipe.variant, **_jsonable(values)}


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


def recipe_from_json(record, where):
    """The ``Recipe`` recorded in ``record``: its values, whatever the name means today."""
    try:
        parts = {}
        for part, cls in _PARTS.items():
            names = {f.name: f for f in dataclasses.fields(cls)}
            values = dict(record[part])
            unknown = sorted(set(values) - set(names))
            if unknown:
                raise WskError(f"recipe.{part} has field(s) this wsk does not know: {', '.join(unknown)}", where)
            for key, value in values.items():
                if isinstance(value, list):
                    values[key] = tuple(value)
            parts[part] = cls(**values)
        return Recipe(str(record["name"]), parts["hcp"], parts["seg"], parts["pseudo"], str(record["variant"]))
    except (KeyError, TypeError) as err:
        raise WskError(f"malformed recipe record ({err})", where) from None


def recipe_differences(recorded, given):
    """``["pseudo.score_mode", ...]``: the recipe fields whose values differ."""
    a, b = recipe_to_json(recorded), recipe_to_json(given)
    differ = [f"recipe.{part}.{key}" for part in _PARTS for key in a[part] if a[part][key] != b[part].get(key)]
    return differ + (["recipe.variant"] if a["variant"] != b["variant"] else [])


# ------------------------------------------------------------------------------------- record
@dataclasses.dataclass(frozen=True)
class RunRecord:
    """The run fields of a work directory (module docstring)."""

    dataset: dict
    split: str
    val_split: str
    classes: tuple
    recipe: Recipe
    adopted_from: tuple | None = None
    dataset_info: dict | None = None   # COCO: the category id -> class index map, images dropped

    def to_json(self):
        return {"format": FORMAT, "dataset": self.dataset, "split": self.split, "val_split": self.val_split,
                "classes": list(self.classes), "recipe": recipe_to_json(self.recipe),
                "adopted_from": None if self.adopted_from is None else list(self.adopted_from),
                "dataset_info": self.dataset_info}

    @classmethod
    def from_json(cls, data, where):
        try:
            if data.get("format") != FORMAT:
                raise WskError(f"run record format {data.get('format')!r}; this wsk reads {FORMAT}", where)
            return cls(dict(data["dataset"]), str(data["split"]), str(data["val_split"]), tuple(data["classes"]),
                       recipe_from_json(data["recipe"], where),
                       None if data.get("adopted_from") is None else tuple(data["adopted_from"]), data.get("dataset_info"))
        except (KeyError, TypeError, AttributeError) as err:
            raise WskError(f"malformed run record ({err})", where) from None


# the fields of a recorded dataset that name files or folders (``wsk.data.sources.DataSource``)
_DATASET_PATHS = ("path", "classes", "images", "val", "val_images", "index")


def _dataset_in(work, dataset, inward):
    """``dataset`` (a recorded source) with the paths inside the local folder ``work`` made relative to
    it (``inward``), or those relative paths made absolute again: a work directory that holds its own
    data (the demo's ``data/``, a COCO index) still finds it once copied or moved."""
    if storage.is_url(work):
        return dataset
    out = dict(dataset)
    for key in _DATASET_PATHS:
        value = out.get(key)
        if not isinstance(value, str) or storage.is_url(value):
            continue
        if inward and os.path.isabs(value):
            inside = os.path.relpath(value, work)
            if inside != os.curdir and not inside.startswith(os.pardir):
                out[key] = inside
        elif not inward and not os.path.isabs(value):
            out[key] = os.path.join(work, value)
    return out


def read_record(path):
    """The ``RunRecord`` at ``path``, or None when there is none. Dataset paths recorded relative to
    the work directory come back absolute (``_dataset_in``)."""
    if not storage.exists(path):
        return None
    data = load_json(path)
    if not isinstance(data, dict):
        raise WskError("malformed run record (not a JSON object)", path)
    record = RunRecord.from_json(data, path)
    return dataclasses.replace(record, dataset=_dataset_in(os.path.dirname(path), record.dataset, inward=False))


def write_record(path, record, command=None):
    """Write ``record``, keeping the commands already logged and appending ``command`` (a dict:
    the command and its arguments). Dataset paths inside the work directory are written relative to it."""
    from wsk import __version__

    commands = []
    if storage.exists(path):
        commands = list(load_json(path).get("commands", []))
    if command is not None:
        commands.append(dict(command, wsk=__version__,
                             time=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")))
    record = dataclasses.replace(record, dataset=_dataset_in(os.path.dirname(path), record.dataset, inward=True))
    save_json(path, dict(record.to_json(), wsk=__version__, commands=commands))


def conflicts(recorded, given, where):
    """Raise one ``WskError`` naming ``where`` and the first run field ``given`` sets differently
    (a field of ``given`` left as None was not given)."""
    if given.dataset is not None:   # the options a command leaves out keep their recorded values
        for key, value in given.dataset.items():
            if key != "index" and recorded.dataset.get(key) != value:
                raise WskError(f"dataset.{key} is {recorded.dataset.get(key)!r} here, not {value!r} "
                               "(a work directory holds one run: use another WORK)", where)
    for field in ("split", "val_split", "classes"):
        value = getattr(given, field)
        if value is not None and value != getattr(recorded, field):
            raise WskError(f"{field} is {_show(getattr(recorded, field))} here, not {_show(value)} "
                           "(a work directory holds one run: use another WORK)", where)
    if given.recipe is not None:
        differ = recipe_differences(recorded.recipe, given.recipe)
        if differ:
            old = _field(recorded.recipe, differ[0])
            new = _field(given.recipe, differ[0])
            raise WskError(f"{differ[0]} is {old!r} here (recipe {recorded.recipe.name!r}), not {new!r} "
                           f"(recipe {given.recipe.name!r}); omit the flag to use the recorded recipe, "
                           "or use another WORK", where)


def _field(recipe, dotted):
    parts = dotted.split(".")[1:]
    value = recipe
    for name in parts:
        value = getattr(value, name)
    return value


def _show(value):
    if isinstance(value, dict):
        return repr(value.get("path", value))
    if isinstance(value, tuple) and len(value) > 6:
        return f"{len(value)} classes {value[:3]}..."
    return repr(value)


# ------------------------------------------------------------------------------------ adoption
def legacy_facts(work):
    """``({"recipe.pseudo.score_mode": value, ...}, [files read])`` from a work directory made
    before run.json: the HCP sidecar, one scores file, ``refined.json`` and one proposals file."""
    from wsk.workdir import WorkDir

    wd = WorkDir(work)
    facts, files = {}, []
    sidecar = os.path.join(wd.hcp_dir, "hcp.json")
    if storage.exists(sidecar):
        recipe = load_json(sidecar).get("recipe") or {}
        facts.update({f"recipe.hcp.{k}": tuple(v) if isinstance(v, list) else v for k, v in recipe.items()})
        files.append(sidecar)
    scores = _npz_files(wd.scores_dir)
    if scores:
        arrays = load_npz(scores[0], required=("mode", "threshold"))
        facts["recipe.pseudo.score_mode"] = str(arrays["mode"])
        facts["recipe.pseudo.candidate_threshold"] = round(float(arrays["threshold"]), 6)
        files.append(scores[0])
    if storage.exists(wd.legacy_refined):
        settings = load_json(wd.legacy_refined).get("settings", {})
        for key, field in (("keep", "refine_keep"), ("order", "refine_order"), ("pca_energy", "pca_energy"),
                           ("threshold", "candidate_threshold"), ("mode", "score_mode"),
                           ("rough_top_regions", "rough_top_regions")):
            if key in settings:
                value = settings[key]
                facts[f"recipe.pseudo.{field}"] = round(value, 6) if isinstance(value, float) else value
        files.append(wd.legacy_refined)
    proposals = _npz_files(wd.proposals_dir)
    if proposals:
        from wsk.proposals.container import Proposals

        _, made = Proposals.load_recorded(proposals[0])
        if isinstance(made, dict) and "max_proposals" in made and made.get("method") == "wsk.proposals.generate":
            facts["recipe.pseudo.max_proposals"] = made["max_proposals"]
        files.append(proposals[0])
    return facts, files


def _npz_files(folder):
    """The ``.npz`` files directly in ``folder`` (a path or a URL), sorted; temporaries (``.``) left out."""
    if not storage.isdir(folder):
        return []
    return [os.path.join(folder, name) for name in sorted(storage.listdir(folder))
            if name.endswith(".npz") and not name.startswith(".")]


def _disagreeing(recipe, facts):
    out = []
    for dotted, value in facts.items():
        current = _field(recipe, dotted)
        current = round(current, 6) if isinstance(current, float) else current
        if current != value:
            out.append((dotted, current, value))
    return out


def adopt(work, given_recipe=None):
    """``(recipe, files)`` for a work directory made before run.json, or None when it holds no
    record of any stage. With ``given_recipe`` its values must agree with the records (else a
    ``WskError`` naming the record); without, the named recipe that agrees is taken, else the one
    agreeing most, with the recorded values replacing its own."""
    facts, files = legacy_facts(work)
    if not files:
        return None
    if given_recipe is not None:
        bad = _disagreeing(given_recipe, facts)
        if bad:
            dotted, current, value = bad[0]
            raise WskError(f"{dotted} was {value!r} when this work directory was made, not {current!r} "
                           f"(recipe {given_recipe.name!r}); omit the flag to adopt the recorded values",
                           files[0])
        return given_recipe, files
    ranked = sorted(RECIPES.values(), key=lambda r: len(_disagreeing(r, facts)))
    base = ranked[0]
    bad = _disagreeing(base, facts)
    if not bad:
        return base, files
    replaced = {part: dataclasses.replace(getattr(base, part), **{
        key: value for dotted, _, value in bad if dotted.split(".")[1] == part for key in [dotted.split(".")[2]]})
        for part in _PARTS}
    return Recipe(f"{base.name}+adopted", replaced["hcp"], replaced["seg"], replaced["pseudo"], base.variant), files


# ------------------------------------------------------------------------------------ the run
@dataclasses.dataclass(frozen=True)
class Run:
    """What every stage of one work directory runs with: the recorded run fields and this
    command's own (``jobs``, ``refine``, ``variants``, ``crf``). Picklable: workers receive it."""

    source: object            # wsk.data.sources.DataSource
    work: str
    split: str
    val_split: str
    recipe: Recipe
    classes: tuple = ()
    jobs: int = 1
    refine: bool = True
    variants: tuple = ()
    crf: bool = True
    crf_backend: str = "keras"   # wsk.crf.CRF_BACKENDS
    seed: int = 0
    verbose: int = 1          # Keras fit: 1 a progress bar, 2 a line per epoch
    ids: tuple | None = None  # only these images of the training split (None: all)

    @property
    def workdir(self):
        from wsk.workdir import WorkDir

        return WorkDir(self.work, self.refine)

    def dataset(self, split=None, ids=None):
        """A split of the run's dataset (the training split, or its ``ids``, by default)."""
        from wsk.data.sources import open_dataset

        if split is None and ids is None:
            ids = self.ids
        return open_dataset(self.source, split or self.split, ids=ids)


def _apply(recipe, overrides):
    """``recipe`` with ``{"pseudo.refine_order": value, ...}`` replaced (None values are not given)."""
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if not given:
        return recipe
    parts = {part: getattr(recipe, part) for part in _PARTS}
    for dotted, value in given.items():
        part, key = dotted.split(".")
        parts[part] = dataclasses.replace(parts[part], **{key: value})
    return dataclasses.replace(recipe, **parts)


def open_run(work, data=None, recipe=None, overrides=None, split=None, val_split=None, command=None,
             write=True, **fields):
    """The ``Run`` of ``work``: its ``run.json`` checked against what this command gives, or, for a
    new work directory, made from it (and written, with ``command`` logged, unless ``write`` is
    False). ``data``: a ``DataSource`` or a path (``wsk.data.sources.as_source``); ``recipe``: a
    name, a ``Recipe`` or None; ``overrides``: recipe values a flag gave (``{"seg.scale_range":
    (0.5, 1.5)}``, None: not given). A differing run field is a ``WskError`` naming run.json.
    ``fields``: the command fields of ``Run`` (``jobs``, ``refine``, ``variants``, ``crf``,
    ``crf_backend``, ``seed``).
    """
    from wsk.data.sources import as_source, open_dataset
    from wsk.workdir import WorkDir

    work = storage.absolute(work)
    wd = WorkDir(work)
    path = wd.run_record
    base = get_recipe(recipe) if isinstance(recipe, str) else recipe
    source = None
    if data is not None:
        source = as_source(data)
        if source.kind == "coco" and source.index is None:
            source = dataclasses.replace(source, index=wd.dataset_index)
    recorded = read_record(path)
    if recorded is None:
        if source is None:
            raise WskError("no run.json: give the dataset (DATA) to the first command on this work directory", path)
        adopted = adopt(work, base and _apply(base, overrides))
        if adopted is not None:
            final, files = adopted
            final = _apply(final, overrides) if base is None else final
        else:
            final, files = _apply(base or get_recipe("paper"), overrides), None
        train_split, val_default = source.default_splits
        split = split or train_split
        val_split = val_split or val_default
        training = open_dataset(source, split)   # a bad dataset stops here, before WORK is written
        info = None
        if source.kind == "coco":
            info = {"category_map": {str(k): v for k, v in training.category_map.items()},
                    "dropped": {split: training.dropped}}
        recorded = RunRecord(source.to_json(), split, val_split, tuple(training.class_names), final,
                             None if files is None else tuple(files), info)
    else:
        if base is not None and base.name == recorded.recipe.name:
            base = None   # the recorded values of that name win, even if this wsk defines it otherwise
        given_recipe = None
        if base is not None or any(v is not None for v in (overrides or {}).values()):
            given_recipe = _apply(base or recorded.recipe, overrides)
        given = RunRecord(None if source is None else source.to_json(), split, val_split, None, given_recipe)
        conflicts(recorded, given, path)
    if write:
        write_record(path, recorded, command)
    from wsk.data.sources import DataSource

    return Run(DataSource.from_json(recorded.dataset), work, recorded.split, recorded.val_split, recorded.recipe,
               recorded.classes, **fields)
