"""Random dataset styles drawn from a seed: the generalization benchmark's datasets
(``benchmarks/bench_generalization.py``, whose docstring states the ranges below).

A style (``sample_style(seed)``, a ``StyleDraw``; ``build_style`` turns it into a
``wsk.data.synthetic.Style`` for ``generate_dataset``) draws:

* **shapes**: ``CLASSES_PER_STYLE`` different shapes, ``UNSEEN_PER_STYLE`` of them from
  ``UNSEEN_SHAPES`` (the photo style's arrow and ``NEW_SHAPES``, drawn here only: the pretraining
  corpus never shows them), the others from the broad corpus's ``BROAD_SHAPES``;
* **textures**: one texture family of ``BROAD_TEXTURES`` per class, all different (a class is its
  shape *and* its texture), their periods scaled by one ``TEXTURE_STRETCH`` factor and the second
  colour mixed in at most ``TEXTURE_CONTRAST``;
* **colours**: a ``COLOUR_POLICIES`` entry, the same for every class: an object's colours are
  drawn independently of its class;
* **backgrounds**: a ``BACKGROUND_SOURCES`` entry: procedural clutter, crops of
  ``PHOTOS_PER_STYLE`` photographs of ``PHOTO_POOL`` (every offline ``skimage.data`` and
  scikit-learn photograph wsk uses), or per image either of them or a blend;
* **object scale**: a diameter / image side range with its low end in ``SCALE_LOW`` and its high
  end in ``SCALE_HIGH``; the count per image is ``generate_dataset``'s plan (1 to 3 objects).

Shapes, textures and backgrounds are the corpus's functions (``wsk.data.corpus``,
``wsk.data.corpus_broad``); only the three ``NEW_SHAPES`` are drawn here. Test seeds come from a
commit hash (``fresh_seeds``), so that a style no decision has seen can be drawn at each commit.
"""

import dataclasses
import hashlib

import numpy as np

from wsk.data import corpus, synthetic
from wsk.data.corpus_broad import BROAD_PHOTOS, BROAD_SHAPES, BROAD_TEXTURES, broad_photo_crop, broad_shape, \
    broad_texture

CLASSES_PER_STYLE = 5
NEW_SHAPES = ("hourglass", "chevron", "keyhole")   # no other generator of wsk draws them
UNSEEN_SHAPES = NEW_SHAPES + ("arrow",)             # never in the pretraining corpus
UNSEEN_PER_STYLE = (1, 2)                           # how many classes have an unseen shape (inclusive)
SHAPE_POOL = BROAD_SHAPES + UNSEEN_SHAPES
TEXTURE_POOL = BROAD_TEXTURES
TEXTURE_STRETCH = (0.7, 1.4)     # one factor per style on the texture periods
TEXTURE_CONTRAST = (0.5, 1.0)    # the second colour's largest mixing weight
COLOUR_POLICIES = ("shade", "mixed")   # the demo's colour and shade; or that or two unrelated colours
BACKGROUND_SOURCES = ("clutter", "photo", "mixed")
PHOTO_POOL = BROAD_PHOTOS + corpus.HELD_OUT_PHOTOS
PHOTOS_PER_STYLE = (2, 6)        # photographs a photo or mixed style crops from (inclusive)
SCALE_LOW = (0.15, 0.35)         # the style's smallest object diameter / image side
SCALE_HIGH = (0.6, 1.0)          # the style's largest
SAMPLER_TAG = 0x57_7E5           # first word of every style seed's generator
# the styles every recipe decision is made on, fixed before any run: the smallest seeds whose draws
# between them hold every background source and every colour policy (1: clutter, 3: mixed, 10: photo)
TUNING_SEEDS = (1, 3, 10)


# ----------------------------------------------------------------------------------- shapes
def new_shape(name, u, v, radius):
    """Boolean mask of one of ``NEW_SHAPES`` of circumradius about ``radius``, centred at u = v = 0."""
    au, av = np.abs(u), np.abs(v)
    if name == "hourglass":   # two triangles tip to tip
        return (av <= 0.9 * radius) & (au <= 0.1 * radius + 0.7 * av)
    if name == "chevron":     # a thick V
        offset = u - (0.9 * av - 0.45 * radius)
        return (av <= 0.9 * radius) & (offset >= 0) & (offset <= 0.45 * radius)
    if name == "keyhole":     # a disc on a widening stem
        head = np.hypot(u, v + 0.4 * radius) <= 0.45 * radius
        stem = (v >= -0.4 * radius) & (v <= 0.9 * radius) & (au <= 0.12 * radius + 0.22 * (v + 0.4 * radius))
        return head | stem
    raise ValueError(name)


def style_shape(name, u, v, radius):
    """Boolean mask of any shape of ``SHAPE_POOL``."""
    return new_shape(name, u, v, radius) if name in NEW_SHAPES else broad_shape(name, u, v, radius)


# ------------------------------------------------------------------------------ backgrounds
def photo_crop(size, rng, photos):
    """A crop of one of ``photos``: the broad corpus's cropper for its photographs, the photo
    style's for the ones the corpus never shows."""
    name = photos[int(rng.integers(len(photos)))]
    if name in BROAD_PHOTOS:
        return broad_photo_crop(size, rng, (name,))
    return corpus.photo_background(size, rng, (name,))


def mixed_background(size, rng, photos):
    """Procedural clutter, a photograph or a blend of the two, a third each."""
    kind = rng.random()
    if kind < 1 / 3:
        return synthetic._background(size, rng)
    photo = photo_crop(size, rng, photos)
    if kind < 2 / 3:
        return photo
    alpha = np.float32(rng.uniform(0.3, 0.7))
    return alpha * photo + (1 - alpha) * synthetic._background(size, rng)


# ------------------------------------------------------------------------------------ style
@dataclasses.dataclass(frozen=True)
class StyleDraw:
    """What ``sample_style`` drew (plain values: printable and JSON-ready)."""

    seed: int
    shapes: tuple          # class 1..5's shapes
    textures: tuple        # class 1..5's texture families
    texture_stretch: float
    texture_contrast: float
    colour_policy: str
    background: str
    photos: tuple          # empty for clutter
    scale_range: tuple

    def to_dict(self):
        return dataclasses.asdict(self)


def sample_style(seed):
    """The ``StyleDraw`` of ``seed`` (the same seed, the same draw)."""
    rng = np.random.default_rng([SAMPLER_TAG, int(seed)])
    unseen = int(rng.integers(UNSEEN_PER_STYLE[0], UNSEEN_PER_STYLE[1] + 1))
    seen = [s for s in SHAPE_POOL if s not in UNSEEN_SHAPES]
    shapes = [UNSEEN_SHAPES[i] for i in rng.choice(len(UNSEEN_SHAPES), unseen, replace=False)]
    shapes += [seen[i] for i in rng.choice(len(seen), CLASSES_PER_STYLE - unseen, replace=False)]
    shapes = [shapes[i] for i in rng.permutation(CLASSES_PER_STYLE)]
    textures = [TEXTURE_POOL[i] for i in rng.choice(len(TEXTURE_POOL), CLASSES_PER_STYLE, replace=False)]
    background = BACKGROUND_SOURCES[int(rng.integers(len(BACKGROUND_SOURCES)))]
    count = int(rng.integers(PHOTOS_PER_STYLE[0], PHOTOS_PER_STYLE[1] + 1))
    photos = tuple(PHOTO_POOL[i] for i in sorted(rng.choice(len(PHOTO_POOL), count, replace=False)))
    return StyleDraw(
        seed=int(seed), shapes=tuple(shapes), textures=tuple(textures),
        texture_stretch=float(rng.uniform(*TEXTURE_STRETCH)),
        texture_contrast=float(rng.uniform(*TEXTURE_CONTRAST)),
        colour_policy=COLOUR_POLICIES[int(rng.integers(len(COLOUR_POLICIES)))],
        background=background, photos=() if background == "clutter" else photos,
        scale_range=(float(rng.uniform(*SCALE_LOW)), float(rng.uniform(*SCALE_HIGH))))


def build_style(draw):
    """The ``wsk.data.synthetic.Style`` of a ``StyleDraw`` (class names: its shapes)."""
    texture_of = dict(zip(draw.shapes, draw.textures))
    stretch = np.float32(draw.texture_stretch)
    contrast = np.float32(draw.texture_contrast)

    def texture(name, u, v, radius, size, rng):
        return contrast * broad_texture(texture_of[name], u / stretch, v / stretch, size, rng)

    if draw.background == "clutter":
        background = synthetic._background
    elif draw.background == "photo":
        def background(size, rng):
            return photo_crop(size, rng, draw.photos)
    else:
        def background(size, rng):
            return mixed_background(size, rng, draw.photos)

    colours = synthetic._colours if draw.colour_policy == "shade" else corpus._object_colours
    return synthetic.Style(f"sampled-{draw.seed}", ("background",) + draw.shapes, style_shape, texture,
                           background, colours=colours, scale_range=draw.scale_range)


def fresh_seeds(commit, count):
    """``count`` style seeds derived from the commit hash ``commit`` (a new commit, new seeds),
    never one of ``TUNING_SEEDS``."""
    seeds, k = [], 0
    while len(seeds) < count:
        digest = hashlib.sha256(f"{commit.strip()}:{k}".encode()).digest()
        seed = int.from_bytes(digest[:4], "big")
        if seed not in TUNING_SEEDS and seed not in seeds:
            seeds.append(seed)
        k += 1
    return seeds
