"""The pretraining corpus: wsk's offline stand-in for ImageNet (the README's "Pretrained trunk").

The paper starts HCP and DeepLab-LargeFOV from an ImageNet VGG-16, a network that has seen
1,000 classes before it meets VOC's 20. Offline, a corpus generated here plays that part: it
is large, broader than any dataset it is fine-tuned on, and labelled at image level only.

* **Objects** pair any of ``CORPUS_SHAPES`` (16 shapes: the demo's five among many others) with
  any of ``CORPUS_TEXTURES`` (12 texture families): ``16 x 12 = 192`` kinds of object.
* **Classes** (``CORPUS_CLASSES``, 28) are the shapes and the textures, ``"shape:<name>"`` and
  ``"texture:<name>"``: an image is labelled with the shape and the texture of each object in
  it. A network that predicts them has to see shape *and* texture, whichever combination a
  dataset it is then fine-tuned on uses. (The 192 joint classes were measured too: from random
  weights they stay at chance for the first 400 steps, where the 28 factors start to learn.)
* **Images** hold 1 to 3 objects at 30% to 100% of the image side, overlapping but each at least
  60% visible (a label must be seen to be learnt: smaller or hidden objects measurably stalled
  learning), painted in
  random colours (a colour and a shade of it, or two unrelated colours), on one of three
  backgrounds: the procedural clutter of ``wsk.data.synthetic``, a random crop of a photograph
  that scikit-image ships in ``skimage.data`` (rescaled, tinted, possibly mirrored), or a blend
  of both. Some images carry small untextured distractor shapes, which are not objects.
* **Labels** are a multi-hot vector over the classes; no mask or box is ever written.

Seeds are drawn from their own sequence (``CORPUS_SEED_TAG``), so no image of a corpus can
coincide with an image of a ``wsk data synth`` dataset, whatever the seeds.

**The broad corpus** (``generate_corpus(..., corpus="broad")``, ``wsk pretrain --corpus broad``;
the above is ``"basic"``, the default) widens every axis for a trunk that transfers to data
wsk did not draw: ``BROAD_SHAPES`` (23: the 16 and seven more) x ``BROAD_TEXTURES`` (16: the 12
and four more), ``BROAD_CLASSES`` (39, the basic 28 first in their order); texture periods
scaled by 0.8 to 1.3; objects at 25% to 100% of the side, each at least 50% visible, partly
hidden by photograph-filled occluders in some images; up to two distractors; backgrounds
mostly photographs (``BROAD_PHOTOS``: every ``skimage.data`` photograph that ships offline but
the photo style's, scikit-learn's two sample images, and any extra photographs given by path),
cropped at 10% to 100% of their side, turned, mirrored, colour-jittered, sometimes grey or
blurred; JPEG artefacts and blur on some finished images. A share of the images
(``BROAD_EASY_SHARE``) is easy: one large object, nothing else. The "arrow" stays unseen.
"""

import math
import multiprocessing

import cv2
import numpy as np
import skimage.data

from wsk.data import synthetic
from wsk.errors import WskError

CORPUS_SHAPES = ("disc", "square", "triangle", "ring", "cross", "ellipse", "star", "hexagon",
                 "pentagon", "diamond", "crescent", "heart", "lshape", "semicircle", "bar", "frame")
CORPUS_TEXTURES = ("stripes", "dots", "checker", "grid", "noise", "zigzag", "concentric", "hatch",
                   "waves", "solid", "gradient", "spots")
CORPUS_OBJECTS = tuple((s, t) for s in CORPUS_SHAPES for t in CORPUS_TEXTURES)
CORPUS_CLASSES = tuple(f"shape:{s}" for s in CORPUS_SHAPES) + tuple(f"texture:{t}" for t in CORPUS_TEXTURES)
CORPUS_SEED_TAG = 0x5EED_C0DE   # first word of every corpus seed: disjoint from wsk data synth's
SCALE_RANGE = (0.3, 1.0)    # object diameter / image side: big enough to show shape and texture
MAX_OBJECTS = 3
MIN_VISIBLE = 0.6           # every object keeps this share of its pixels in front of later ones
PHOTOS = ("camera", "coins", "moon", "immunohistochemistry", "hubble_deep_field", "brick", "grass",
          "gravel", "cell", "clock", "retina", "page")
# the photo style's backgrounds: photographs the corpus never shows (a generalisation check)
HELD_OUT_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
CORPORA = ("basic", "broad")   # the broad one: wsk.data.corpus_broad


# ----------------------------------------------------------------------------------- shapes
def _polygon(u, v, radius, sides):
    """A regular polygon of circumradius ``radius`` (one vertex up)."""
    theta = np.arctan2(v, u) + math.pi / 2
    sector = 2 * math.pi / sides
    local = np.mod(theta, sector) - sector / 2
    return np.hypot(u, v) * np.cos(local) <= radius * math.cos(math.pi / sides)


def corpus_shape(name, u, v, radius):
    """Boolean mask of shape ``name`` of circumradius about ``radius``, centred at u = v = 0."""
    if name in synthetic.TEXTURES:
        return synthetic._shape(name, u, v, radius)
    r = np.hypot(u, v)
    if name == "ellipse":
        return (u / radius) ** 2 + (v / (0.55 * radius)) ** 2 <= 1
    if name == "star":
        theta = np.arctan2(v, u)
        return r <= radius * (0.62 + 0.38 * np.cos(5 * theta))
    if name == "hexagon":
        return _polygon(u, v, radius, 6)
    if name == "pentagon":
        return _polygon(u, v, radius, 5)
    if name == "diamond":
        return np.abs(u) / radius + np.abs(v) / (0.6 * radius) <= 1
    if name == "crescent":
        return (r <= radius) & (np.hypot(u - 0.45 * radius, v) > 0.8 * radius)
    if name == "heart":
        x, y = u / (0.8 * radius), -v / (0.8 * radius) + 0.2
        return (x * x + y * y - 1) ** 3 - x * x * y ** 3 <= 0
    if name == "lshape":
        au = u + 0.3 * radius
        av = v + 0.3 * radius
        vertical = (np.abs(au) <= 0.3 * radius) & (np.abs(v) <= 0.9 * radius)
        horizontal = (np.abs(av - 0.6 * radius) <= 0.3 * radius) & (np.abs(u) <= 0.9 * radius)
        return vertical | horizontal
    if name == "semicircle":
        return (r <= radius) & (v <= 0.15 * radius)
    if name == "bar":
        return (np.abs(u) <= radius) & (np.abs(v) <= 0.3 * radius)
    if name == "frame":
        m = np.maximum(np.abs(u), np.abs(v))
        return (m <= 0.8 * radius) & (m >= 0.45 * radius)
    if name == "arrow":   # not a corpus shape: the photo style's unseen class
        shaft = (np.abs(v) <= 0.22 * radius) & (u >= -radius) & (u <= 0.2 * radius)
        head = (u >= 0.1 * radius) & (u <= radius) & (np.abs(v) <= 0.75 * (radius - u))
        return shaft | head
    raise ValueError(name)


# --------------------------------------------------------------------------------- textures
def corpus_texture(name, u, v, size, rng):
    """Mixing weights in [0, 1] of an object's two colours for texture family ``name``."""
    if name in ("stripes", "dots", "checker", "grid", "noise"):
        return synthetic._texture(name, u, v, 1.0, size, rng)
    period = np.float32(size * rng.uniform(0.09, 0.16))
    if name == "zigzag":
        tri = np.abs(np.mod(v / period, 1.0) - 0.5) * period
        return (np.sin(2 * np.pi * (u + tri) / period) > 0).astype(np.float32)
    if name == "concentric":
        return (np.sin(2 * np.pi * np.hypot(u, v) / period) > 0).astype(np.float32)
    if name == "hatch":
        width = max(1.0, 0.22 * float(period))
        return (np.mod(u + v, period) < width).astype(np.float32)
    if name == "waves":
        return (0.5 + 0.5 * np.sin(2 * np.pi * u / period + 2.5 * np.sin(2 * np.pi * v / (2 * period))))
    if name == "solid":
        return np.full(u.shape, np.float32(rng.uniform(0.0, 0.15)))
    if name == "gradient":
        span = np.float32(size * rng.uniform(0.3, 0.8))
        return np.clip(u / span + 0.5, 0, 1).astype(np.float32)
    if name == "spots":   # sparse random blobs
        cells = (rng.random((size // 4 + 2, size // 4 + 2)) < 0.3).astype(np.float32)

        return cv2.resize(cells, (size, size), interpolation=cv2.INTER_NEAREST)[:u.shape[0], :u.shape[1]]
    raise ValueError(name)


# ------------------------------------------------------------------------------ backgrounds
_PHOTO_CACHE = {}


def _photo(name):
    """A photograph shipped with scikit-image as float32 RGB (grey ones stacked)."""
    if name not in _PHOTO_CACHE:
        image = np.asarray(getattr(skimage.data, name)())
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        _PHOTO_CACHE[name] = image[..., :3].astype(np.float32)
    return _PHOTO_CACHE[name]


def photo_background(size, rng, photos=PHOTOS):
    """A random crop of a random ``skimage.data`` photograph, resized, tinted, maybe mirrored."""
    photo = _photo(photos[int(rng.integers(len(photos)))])
    h, w = photo.shape[:2]
    side = int(rng.uniform(0.2, 1.0) * min(h, w))
    y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = cv2.resize(photo[y0:y0 + side, x0:x0 + side], (size, size), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    tint = rng.uniform(0.6, 1.3, 3).astype(np.float32)
    return np.clip(crop * tint + rng.uniform(-30, 30), 0, 255).astype(np.float32)


def corpus_background(size, rng):
    """Procedural clutter, a photograph, or a blend of the two (a third each)."""
    kind = rng.random()
    if kind < 1 / 3:
        return synthetic._background(size, rng)
    photo = photo_background(size, rng)
    if kind < 2 / 3:
        return photo
    alpha = np.float32(rng.uniform(0.3, 0.7))
    return alpha * photo + (1 - alpha) * synthetic._background(size, rng)


def _object_colours(image_mean, rng):
    """The demo's colour-and-shade pair, or two unrelated colours (half each)."""
    if rng.random() < 0.5:
        return synthetic._colours(image_mean, rng)
    a, b = rng.uniform(0, 255, (2, 3))
    if np.abs(a - b).sum() < 120:
        b = 255 - a
    return a, b


# ----------------------------------------------------------------------------- photo style
PHOTO_TEXTURES = {"arrow": "stripes", "hexagon": "concentric", "heart": "spots", "crescent": "checker",
                  "ellipse": "hatch"}


def _photo_style_texture(name, u, v, radius, size, rng):
    return corpus_texture(PHOTO_TEXTURES[name], u, v, size, rng)


def _photo_style_background(size, rng):
    return photo_background(size, rng, HELD_OUT_PHOTOS)


# ``wsk data synth --style photo``: other shapes (one, the arrow, unseen by the corpus) on
# photographs the corpus never shows; the demo recipe's generalisation check.
PHOTO_STYLE = synthetic.Style("photo", ("background",) + tuple(PHOTO_TEXTURES), corpus_shape,
                              _photo_style_texture, _photo_style_background)


# ---------------------------------------------------------------------------------- images
def render_corpus_image(size, classes, rng):
    """One ``(S, S, 3)`` uint8 image showing one object per index of ``CORPUS_OBJECTS`` in ``classes``."""
    x, y = synthetic._grid(size)
    image = corpus_background(size, rng)
    owner = np.zeros((size, size), np.int32)   # which object is in front at each pixel (0: none)
    areas = []
    for _ in range(int(rng.integers(0, 2))):   # untextured distractors: not objects
        radius = size * rng.uniform(0.04, 0.12) / 2
        cx, cy = rng.uniform(0, size, 2)
        u, v = synthetic._frame(x, y, cx, cy, rng.uniform(0, 2 * np.pi))
        shape = corpus_shape(CORPUS_SHAPES[int(rng.integers(len(CORPUS_SHAPES)))], u, v, radius)
        image[shape] = rng.uniform(0, 255, 3).astype(np.float32)
    for cls in classes:
        shape_name, texture_name = CORPUS_OBJECTS[cls]
        for _try in range(20):
            radius = size * rng.uniform(*SCALE_RANGE) / 2
            low = min(0.6 * radius, size / 2)
            cx, cy = rng.uniform(low, size - low, 2)
            u, v = synthetic._frame(x, y, cx, cy, rng.uniform(0, 2 * np.pi))
            mask = corpus_shape(shape_name, u, v, radius)
            # in front, and every earlier object keeps MIN_VISIBLE of its pixels
            if mask.sum() >= 16 and all(((owner == j) & ~mask).sum() >= MIN_VISIBLE * area
                                        for j, area in enumerate(areas, start=1)):
                break
        weight = corpus_texture(texture_name, u, v, size, rng)[mask][:, None]
        a, b = _object_colours(image[mask].mean(axis=0) if mask.any() else image.mean((0, 1)), rng)
        image[mask] = (a * (1 - weight) + b * weight).astype(np.float32)
        areas.append(int(mask.sum()))
        owner[mask] = len(areas)
    image += rng.normal(0, rng.uniform(1, 6), image.shape).astype(np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def corpus_seed(seed, index):
    """The generator of image ``index`` of corpus ``seed`` (tagged: never a ``wsk data synth`` seed)."""
    return np.random.default_rng([CORPUS_SEED_TAG, seed, index])


def corpus_item(size, seed, index):
    """``(image uint8 (S, S, 3), multi-hot labels over CORPUS_CLASSES (K,) float32)`` of image ``index``."""
    rng = corpus_seed(seed, index)
    count = int(rng.integers(1, MAX_OBJECTS + 1)) if rng.random() < 0.7 else 1
    objects = [int(c) for c in rng.integers(0, len(CORPUS_OBJECTS), count)]
    labels = np.zeros(len(CORPUS_CLASSES), np.float32)
    for k in objects:
        shape_name, texture_name = CORPUS_OBJECTS[k]
        labels[CORPUS_CLASSES.index(f"shape:{shape_name}")] = 1.0
        labels[CORPUS_CLASSES.index(f"texture:{texture_name}")] = 1.0
    return render_corpus_image(size, objects, rng), labels


def _render_range(args):
    from wsk.data.corpus_broad import broad_item

    size, seed, start, stop, corpus, backgrounds = args
    if corpus == "basic":
        items = [corpus_item(size, seed, i) for i in range(start, stop)]
    else:
        items = [broad_item(size, seed, i, backgrounds) for i in range(start, stop)]
    return np.stack([a for a, _ in items]), np.stack([b for _, b in items])


def corpus_classes(corpus="basic"):
    """The class names of corpus ``corpus`` (``"basic"``: ``CORPUS_CLASSES``, ``"broad"``: ``BROAD_CLASSES``)."""
    from wsk.data.corpus_broad import BROAD_CLASSES

    if corpus not in CORPORA:
        raise WskError(f"unknown corpus {corpus!r} (one of {', '.join(CORPORA)})")
    return CORPUS_CLASSES if corpus == "basic" else BROAD_CLASSES


def generate_corpus(num_images, size=64, seed=0, start=0, jobs=1, corpus="basic", backgrounds=()):
    """``(images (N, S, S, 3) uint8, labels (N, K) float32)``: images ``start .. start + N - 1``.

    ``corpus``: ``"basic"`` (``CORPUS_CLASSES``) or ``"broad"`` (``BROAD_CLASSES``, which also
    takes ``backgrounds``, paths of extra photographs). Deterministic: the same arguments give
    the same arrays, whatever ``jobs``.
    """
    if num_images < 1 or size < 32:
        raise WskError(f"a corpus needs at least 1 image of at least 32 px (got {num_images}, {size})")
    corpus_classes(corpus)
    if backgrounds and corpus == "basic":
        raise WskError("extra background photographs are for the broad corpus (corpus='broad')")
    backgrounds = tuple(str(p) for p in backgrounds)
    from wsk.data.corpus_broad import _extra_photo

    for path in backgrounds:
        _extra_photo(path)     # fail early on an unreadable file
    chunk = 500
    tasks = [(size, seed, s, min(s + chunk, start + num_images), corpus, backgrounds)
             for s in range(start, start + num_images, chunk)]
    if jobs > 1 and len(tasks) > 1:
        with multiprocessing.get_context("spawn").Pool(jobs) as pool:
            parts = pool.map(_render_range, tasks)
    else:
        parts = [_render_range(t) for t in tasks]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
