"""Saving and loading trained models: the lowest layer every stage, the zoo and the CLI share.

A model is one ``.keras`` file (Keras 3 format, loaded with ``safe_mode=True``) plus, for a model
``wsk train`` made, a JSON sidecar with the same stem describing it (``wsk.models.description``).
Importing this registers wsk's serialisable losses and optimizer, so any saved model loads.
"""

import os

import keras

import wsk.losses  # noqa: F401  (registers the custom losses a compiled model may name)
import wsk.optimizers  # noqa: F401  (registers CaffeSGD)
from wsk import storage
from wsk.errors import WskError
from wsk.io import atomic_path, load_json, save_json


def sidecar_path(model_path):
    """The JSON description beside a saved model: same stem, ``.json``."""
    return os.path.splitext(os.fspath(model_path))[0] + ".json"


def read_sidecar(model_path):
    """The sidecar beside ``model_path`` as a dict, or None when there is none."""
    path = sidecar_path(model_path)
    return load_json(path) if storage.isfile(path) else None


def copy_model(model):
    """A fresh uncompiled model with ``model``'s architecture and weights."""
    copy = keras.Model.from_config(model.get_config())   # clone_model would compile it
    copy.set_weights(model.get_weights())
    return copy


def save_model(model, path, description=None):
    """Write ``description`` (JSON sidecar; a dict or a ``ModelDescription``) then an uncompiled
    copy of ``model`` to ``path`` (``.keras``), each atomically: a present ``.keras`` always has
    its description."""
    if description is not None:
        record = description.to_json() if hasattr(description, "to_json") else description
        save_json(sidecar_path(path), record)
    with atomic_path(path) as tmp:
        copy_model(model).save(tmp)


def load_model(path, compile=False):
    """Load a ``.keras`` model (segmentation, HCP or a trunk) with ``safe_mode=True``.

    A missing, misnamed or damaged file is a ``WskError`` naming it.
    """
    path = os.fspath(path)
    if not storage.isfile(path):
        raise WskError("model file not found", path)
    if not path.endswith(".keras"):
        raise WskError("a model must be a .keras file (Keras 3 format)", path)
    try:
        with storage.local_copy(path) as local:   # a URL: downloaded first
            return keras.saving.load_model(local, compile=compile, safe_mode=True)
    except Exception as err:  # zipfile.BadZipFile, ValueError, KeyError, OSError ...
        raise WskError(f"not a loadable Keras model ({type(err).__name__}: {err})", path) from None


def load_weights_file(model, path, name):
    """Load the weights of the ``.keras`` file ``path`` into ``model``; a mismatch is a ``WskError``
    naming model ``name`` and the file. Returns ``model``.

    Keras keys a file's weights by each layer's class, so a file saved before a layer changed class
    with the same weights (DeepLab-LargeFOV's fc6 became ``AtrousConv2D``) does not load that way;
    it then loads layer by layer, by name (``copy_layers``)."""
    try:
        model.load_weights(path)
    except Exception as err:
        try:
            copy_layers(model, load_model(path), [layer.name for layer in model.layers if layer.weights], path)
        except Exception:
            raise WskError(f"weights of {name} do not fit the model's architecture ({type(err).__name__}: "
                           f"{err})", path) from None
    return model


def copy_layers(model, source, names, origin):
    """Set the layers ``names`` of ``model`` to those of ``source``; shapes must agree (else a
    ``WskError`` naming ``origin``, e.g. "another width?")."""
    for layer_name in names:
        arrays = source.get_layer(layer_name).get_weights()
        have = [tuple(w.shape) for w in model.get_layer(layer_name).weights]
        if have != [a.shape for a in arrays]:
            raise WskError(f"layer {layer_name} of {origin} does not fit the model: shapes "
                           f"{[a.shape for a in arrays]}, the model's {have} (another width or image size?)")
        model.get_layer(layer_name).set_weights(arrays)
    return model
