"""The synthetic dataset styles by name (``wsk data synth --style``, ``wsk demo --style``).

``shapes``: the demo's five shape/texture classes on procedural clutter (``wsk.data.synthetic``).
``photo``: five other shape/texture classes, one shape unseen by the pretraining corpus, on
photographs the corpus never shows (``wsk.data.corpus.PHOTO_STYLE``): a generalisation check.
"""

from wsk.data.corpus import PHOTO_STYLE
from wsk.data.synthetic import SHAPES_STYLE
from wsk.errors import WskError

STYLES = {style.name: style for style in (SHAPES_STYLE, PHOTO_STYLE)}


def get_style(name):
    """The ``Style`` called ``name``."""
    try:
        return STYLES[name]
    except KeyError:
        raise WskError(f"unknown style {name!r}; choose one of {', '.join(STYLES)}") from None
