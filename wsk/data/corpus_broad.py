"""The broad pretraining corpus (``wsk pretrain --corpus broad``): the basic corpus of
``wsk.data.corpus`` widened for transfer to data wsk never made — more shapes and textures, smaller
and partly hidden objects, photograph-filled occluders, and backgrounds mostly from photographs
(every offline ``skimage.data`` photograph but the photo style's, scikit-learn's two, and extra
photographs given with ``--backgrounds``). Its classes extend the basic ones (``BROAD_CLASSES``)."""

import math

import cv2
import numpy as np
import skimage.data

from wsk.data import synthetic
from wsk.data.corpus import (_PHOTO_CACHE, CORPUS_SEED_TAG, CORPUS_SHAPES, CORPUS_TEXTURES, MAX_OBJECTS, PHOTOS,
                             _object_colours, _polygon, corpus_shape, corpus_texture)
from wsk.errors import WskError


# ----------------------------------------------------------------------------- broad corpus
BROAD_SHAPES = CORPUS_SHAPES + ("octagon", "trapezoid", "parallelogram", "rectangle", "kite", "clover",
                                "tshape")
BROAD_TEXTURES = CORPUS_TEXTURES + ("brick", "plaid", "triangles", "rays")
BROAD_OBJECTS = tuple((s, t) for s in BROAD_SHAPES for t in BROAD_TEXTURES)
BROAD_CLASSES = tuple(f"shape:{s}" for s in BROAD_SHAPES) + tuple(f"texture:{t}" for t in BROAD_TEXTURES)
BROAD_SCALE_RANGE = (0.25, 1.0)       # nearer the demo's and the photo style's 0.2 than the basic 0.3
BROAD_MIN_VISIBLE = 0.5               # partly hidden objects (by objects and by occluders)
BROAD_TEXTURE_STRETCH = (0.8, 1.3)    # texture periods scaled by this much
# easy images: one object at 40% to 100% of the side, no distractor, occluder or artefact. Measured:
# without them (all images hard, 0.2..1.0 scale, 45% visible) the trunk stayed at chance for 3
# epochs of 80,000 images; the basic corpus learns from its first epoch
BROAD_EASY_SHARE = 0.35
BROAD_EASY_SCALE_RANGE = (0.4, 1.0)
# every skimage.data photograph that ships offline, but the photo style's (``cat`` is ``chelsea``),
# and scikit-learn's two sample images; not the drawings (logo, colorwheel, checkerboard, ...)
BROAD_PHOTOS = PHOTOS + ("text", "microaneurysms", "motorcycle_left", "motorcycle_right",
                         "sklearn:china", "sklearn:flower")
EXTRA_PHOTO_SIDE = 800     # extra photographs are shrunk to this longer side when read


def _convex(u, v, radius, vertices):
    """Inside the convex polygon of ``vertices`` (in units of ``radius``, either orientation)."""
    points = [(a * radius, b * radius) for a, b in vertices]
    crosses = [(x1 - x0) * (v - y0) - (y1 - y0) * (u - x0)
               for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1])]
    return np.logical_and.reduce([c >= 0 for c in crosses]) | np.logical_and.reduce([c <= 0 for c in crosses])


def broad_shape(name, u, v, radius):
    """Boolean mask of any of ``BROAD_SHAPES`` (the corpus's, or one of the seven more)."""
    if name == "octagon":
        return _polygon(u, v, radius, 8)
    if name == "trapezoid":
        return _convex(u, v, radius, [(-1, 0.6), (1, 0.6), (0.5, -0.6), (-0.5, -0.6)])
    if name == "parallelogram":
        return _convex(u, v, radius, [(-0.95, 0.5), (0.35, 0.5), (0.95, -0.5), (-0.35, -0.5)])
    if name == "rectangle":
        return (np.abs(u) <= 0.85 * radius) & (np.abs(v) <= 0.5 * radius)
    if name == "kite":
        return _convex(u, v, radius, [(0, -1), (0.6, -0.3), (0, 1), (-0.6, -0.3)])
    if name == "clover":   # three rounded lobes
        return np.hypot(u, v) <= radius * (0.6 + 0.4 * np.cos(3 * np.arctan2(v, u)))
    if name == "tshape":
        bar = (np.abs(u) <= 0.85 * radius) & (v >= -0.85 * radius) & (v <= -0.4 * radius)
        stem = (np.abs(u) <= 0.22 * radius) & (v > -0.4 * radius) & (v <= 0.85 * radius)
        return bar | stem
    return corpus_shape(name, u, v, radius)


def broad_texture(name, u, v, size, rng):
    """Mixing weights of any of ``BROAD_TEXTURES`` (the corpus's, or one of the four more)."""
    if name not in ("brick", "plaid", "triangles", "rays"):
        return corpus_texture(name, u, v, size, rng)
    period = np.float32(size * rng.uniform(0.09, 0.16))
    width = max(1.0, 0.2 * float(period))
    if name == "brick":    # running bond: every other row shifted by half a brick
        height, length = 0.6 * period, 1.2 * period
        shift = np.mod(np.floor(v / height), 2) * length / 2
        return ((np.mod(v, height) < width) | (np.mod(u + shift, length) < width)).astype(np.float32)
    if name == "plaid":    # two crossing bands of unequal period: 0, 1/2 or 1
        across = np.sin(2 * np.pi * u / period) > 0.3
        along = np.sin(2 * np.pi * v / (1.6 * period)) > 0.3
        return (0.5 * across + 0.5 * along).astype(np.float32)
    if name == "triangles":   # three families of lines 60 degrees apart
        lines = np.zeros(u.shape, bool)
        for phi in (0.0, math.pi / 3, 2 * math.pi / 3):
            lines |= np.mod(u * math.cos(phi) + v * math.sin(phi), period) < width
        return lines.astype(np.float32)
    rays = int(rng.integers(6, 11))   # "rays": sectors from the object's centre
    return (np.sin(rays * np.arctan2(v, u)) > 0).astype(np.float32)


def _load_photo(name):
    if name.startswith("sklearn:"):
        from sklearn.datasets import load_sample_image
        return load_sample_image(name.split(":", 1)[1] + ".jpg")
    if name.startswith("motorcycle_"):
        return skimage.data.stereo_motorcycle()[0 if name.endswith("left") else 1]
    return getattr(skimage.data, name)()


def _broad_photo(name):
    """A named photograph (``BROAD_PHOTOS``) or a file path, as float32 RGB."""
    if name not in BROAD_PHOTOS:
        return _extra_photo(name)
    if name not in _PHOTO_CACHE:
        image = np.asarray(_load_photo(name))
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        _PHOTO_CACHE[name] = image[..., :3].astype(np.float32)
    return _PHOTO_CACHE[name]


def _extra_photo(path):
    """An extra background photograph (any file ``wsk.io.read_image`` reads), shrunk to
    ``EXTRA_PHOTO_SIDE``."""
    if path not in _PHOTO_CACHE:
        from wsk.io import read_image

        try:
            image = np.asarray(read_image(path))
        except Exception as error:   # noqa: BLE001 - any unreadable file is the user's error
            raise WskError(f"cannot read background photograph {path}: {error}") from error
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        image = image[..., :3].astype(np.float32)
        if min(image.shape[:2]) < 32:
            raise WskError(f"background photograph {path} is smaller than 32 px")
        scale = EXTRA_PHOTO_SIDE / max(image.shape[:2])
        if scale < 1:
            image = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                               interpolation=cv2.INTER_AREA)
        _PHOTO_CACHE[path] = image
    return _PHOTO_CACHE[path]


def broad_photo_crop(size, rng, photos):
    """A random square crop (10% to 100% of the shorter side) of a random photograph, resized,
    turned by a multiple of 90 degrees, maybe mirrored, colour-jittered, sometimes grey or blurred."""
    photo = _broad_photo(photos[int(rng.integers(len(photos)))])
    h, w = photo.shape[:2]
    side = max(8, int(rng.uniform(0.1, 1.0) * min(h, w)))
    y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = cv2.resize(photo[y0:y0 + side, x0:x0 + side], (size, size),
                      interpolation=cv2.INTER_AREA if side > size else cv2.INTER_LINEAR)
    crop = np.rot90(crop, int(rng.integers(4)))
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    crop = np.ascontiguousarray(crop)
    if rng.random() < 0.2:
        crop = np.repeat(crop.mean(axis=2, keepdims=True), 3, axis=2)
    elif rng.random() < 0.3:
        crop = crop[..., rng.permutation(3)]
    mean = crop.mean(axis=(0, 1))
    contrast = np.float32(rng.uniform(0.6, 1.3))
    tint = rng.uniform(0.7, 1.3, 3).astype(np.float32)
    crop = (crop - mean) * contrast + mean * tint + np.float32(rng.uniform(-30, 30))
    if rng.random() < 0.2:
        crop = cv2.GaussianBlur(crop, (0, 0), rng.uniform(0.5, 1.5))
    return np.clip(crop, 0, 255).astype(np.float32)


def broad_background(size, rng, photos):
    """A photograph (60%), procedural clutter (20%) or a blend of the two (20%)."""
    kind = rng.random()
    if kind < 0.6:
        return broad_photo_crop(size, rng, photos)
    if kind < 0.8:
        return synthetic._background(size, rng)
    alpha = np.float32(rng.uniform(0.3, 0.7))
    return alpha * broad_photo_crop(size, rng, photos) + (1 - alpha) * synthetic._background(size, rng)


def _keeps_visible(owner, areas, cover, share):
    """Whether every object keeps ``share`` of its pixels outside ``cover``."""
    return all(((owner == j) & ~cover).sum() >= share * area for j, area in enumerate(areas, start=1))


def render_broad_image(size, classes, rng, photos=BROAD_PHOTOS, easy=False):
    """One ``(S, S, 3)`` uint8 image showing one object per index of ``BROAD_OBJECTS`` in ``classes``
    (``easy``: large objects, no distractor, occluder, blur or JPEG artefact)."""
    x, y = synthetic._grid(size)
    image = broad_background(size, rng, photos)
    owner = np.zeros((size, size), np.int32)
    areas = []
    for _ in range(0 if easy else int(rng.integers(0, 3))):   # small untextured distractors: not objects
        radius = size * rng.uniform(0.04, 0.12) / 2
        cx, cy = rng.uniform(0, size, 2)
        u, v = synthetic._frame(x, y, cx, cy, rng.uniform(0, 2 * np.pi))
        shape = broad_shape(BROAD_SHAPES[int(rng.integers(len(BROAD_SHAPES)))], u, v, radius)
        image[shape] = rng.uniform(0, 255, 3).astype(np.float32)
    for cls in classes:
        shape_name, texture_name = BROAD_OBJECTS[cls]
        for _try in range(20):
            radius = size * rng.uniform(*(BROAD_EASY_SCALE_RANGE if easy else BROAD_SCALE_RANGE)) / 2
            low = min(0.5 * radius, size / 2)
            cx, cy = rng.uniform(low, size - low, 2)
            u, v = synthetic._frame(x, y, cx, cy, rng.uniform(0, 2 * np.pi))
            mask = broad_shape(shape_name, u, v, radius)
            if mask.sum() >= 16 and _keeps_visible(owner, areas, mask, BROAD_MIN_VISIBLE):
                break
        stretch = np.float32(rng.uniform(*BROAD_TEXTURE_STRETCH))
        weight = broad_texture(texture_name, u / stretch, v / stretch, size, rng)[mask][:, None]
        a, b = _object_colours(image[mask].mean(axis=0) if mask.any() else image.mean((0, 1)), rng)
        image[mask] = (a * (1 - weight) + b * weight).astype(np.float32)
        areas.append(int(mask.sum()))
        owner[mask] = len(areas)
    if not easy and rng.random() < 0.25:   # an occluder: a piece of another photograph over part of the objects
        patch = broad_photo_crop(size, rng, photos)
        for _try in range(5):
            radius = size * rng.uniform(0.15, 0.45) / 2
            cx, cy = rng.uniform(0, size, 2)
            u, v = synthetic._frame(x, y, cx, cy, rng.uniform(0, 2 * np.pi))
            cover = broad_shape(BROAD_SHAPES[int(rng.integers(len(BROAD_SHAPES)))], u, v, radius)
            if _keeps_visible(owner, areas, cover, BROAD_MIN_VISIBLE):
                image[cover] = patch[cover]
                break
    image += rng.normal(0, rng.uniform(1, 6), image.shape).astype(np.float32)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    if easy:
        return image
    if rng.random() < 0.15:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.4, 0.9))
    if rng.random() < 0.3:   # JPEG artefacts, as in any photograph read from disk
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(50, 96))])
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    return image


def broad_item(size, seed, index, backgrounds=()):
    """``(image, multi-hot labels over BROAD_CLASSES)`` of image ``index`` of the broad corpus."""
    rng = np.random.default_rng([CORPUS_SEED_TAG, 2, seed, index])   # 2: the broad corpus's stream
    easy = rng.random() < BROAD_EASY_SHARE
    count = int(rng.integers(1, MAX_OBJECTS + 1)) if not easy and rng.random() < 0.7 else 1
    objects = [int(c) for c in rng.integers(0, len(BROAD_OBJECTS), count)]
    labels = np.zeros(len(BROAD_CLASSES), np.float32)
    for k in objects:
        shape_name, texture_name = BROAD_OBJECTS[k]
        labels[BROAD_CLASSES.index(f"shape:{shape_name}")] = 1.0
        labels[BROAD_CLASSES.index(f"texture:{texture_name}")] = 1.0
    return render_broad_image(size, objects, rng, BROAD_PHOTOS + tuple(backgrounds), easy), labels
