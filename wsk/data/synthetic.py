"""A small synthetic dataset in the VOC layout, for the demo and the tests.

Five object classes differ by shape *and* texture family, never by colour (each object is
painted in a random colour and a much darker or brighter shade of it, so its texture is a
luminance pattern)::

    disc      stripes          square    dots           triangle   checker
    ring      grid of lines    cross     noise

(a smooth gradient would look like the smooth background to a small receptive field, so the
ring carries a grid of thin lines instead).

Every image shows 1 to 3 objects (same or different classes, possibly overlapping, later ones
in front) at scales from a few percent to most of the image, on a cluttered background (smooth
colour field, faint waves, thin lines, soft blobs). Half of the images (rounded up) are
single-label. Ground truth follows VOC: ``SegmentationClass`` and ``SegmentationObject``
palette PNGs with a thin band of 255 (ignore) along every object border, ``Annotations`` XML
with boxes, ``ImageSets/Main`` and ``ImageSets/Segmentation`` lists (``train``/``val`` 75/25,
``trainval``, and ``train_aug`` = ``train`` so that ``paper_training_ids`` works).
Everything is drawn with vectorised NumPy and is a function of the seed.
"""

import dataclasses
import math
import os
import shutil
import xml.etree.ElementTree as ET

import cv2
import numpy as np
from scipy import ndimage

from wsk.classes import CLASS_LIST_FILE, IGNORE_LABEL, voc_palette
from wsk.errors import WskError
from wsk.io import atomic_path, write_image, write_label_png

SYNTHETIC_CLASSES = ("background", "disc", "square", "triangle", "ring", "cross")
TEXTURES = {"disc": "stripes", "square": "dots", "triangle": "checker", "ring": "grid", "cross": "noise"}
SINGLE_LABEL_SHARE = 0.5        # share of single-label images (rounded up)
SCALE_RANGE = (0.2, 1.0)        # object diameter / image side, drawn uniformly
TEXTURE_PERIOD = (0.1, 0.15)    # texture period / image side (6-10 px at 64 px)
MIN_VISIBLE = 0.5               # an occluded object keeps at least half of its pixels
VAL_EVERY = 4                   # every 4th image goes to val: train/val = 75/25
OUTPUTS = ("JPEGImages", "Annotations", "SegmentationClass", "SegmentationObject", "ImageSets",
           CLASS_LIST_FILE)


# ----------------------------------------------------------------------------------- drawing
def _grid(size):
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return x + 0.5, y + 0.5


def _blend(image, alpha, colour):
    """Alpha-blend ``colour`` over ``image`` in place (float32 throughout)."""
    image += alpha[..., None] * (np.asarray(colour, np.float32) - image)


def _background(size, rng):
    """A cluttered background ``(S, S, 3)`` float32: smooth colours, waves, thin lines, soft blobs."""
    x, y = _grid(size)
    k = int(rng.integers(3, 7))
    base = rng.uniform(70, 185, 3)
    coarse = np.clip(base + rng.uniform(-55, 55, (k, k, 3)), 20, 235).astype(np.float32)
    image = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    # faint waves
    fx, fy = (rng.uniform(0.5, 1.5, 2) * 2 * np.pi / (size * rng.uniform(0.1, 0.3))).astype(np.float32)
    wobble = np.float32(rng.uniform(1, 3)) * np.sin(y * np.float32(2 * np.pi / size * rng.uniform(1, 3)))
    wave = np.float32(rng.uniform(6, 16)) * np.sin(fx * x + fy * y + wobble)
    image += wave[..., None] * rng.uniform(0.5, 1.0, 3).astype(np.float32)
    # thin lines, all at once: distance of every pixel to each segment
    n = int(rng.integers(3, 9))
    ends = rng.uniform(0, size, (n, 4)).astype(np.float32)[:, :, None, None]
    x0, y0, x1, y1 = ends[:, 0], ends[:, 1], ends[:, 2], ends[:, 3]
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((x - x0) * dx + (y - y0) * dy) / np.maximum(dx * dx + dy * dy, 1e-6), 0, 1)
    dist = np.hypot(x - (x0 + t * dx), y - (y0 + t * dy))
    alphas = np.clip(1.2 - dist, 0, 1) * rng.uniform(0.3, 0.7, (n, 1, 1)).astype(np.float32)
    for alpha, colour in zip(alphas, rng.uniform(30, 225, (n, 3))):
        _blend(image, alpha, colour)
    # soft blobs (no sharp border, unlike objects)
    n = int(rng.integers(2, 5))
    centres = rng.uniform(0, size, (n, 2, 1, 1)).astype(np.float32)
    sigma = (size * rng.uniform(0.05, 0.2, (n, 1, 1))).astype(np.float32)
    alphas = np.exp(-((x - centres[:, 0]) ** 2 + (y - centres[:, 1]) ** 2) / (2 * sigma ** 2))
    alphas *= rng.uniform(0.3, 0.6, (n, 1, 1)).astype(np.float32)
    for alpha, colour in zip(alphas, rng.uniform(30, 225, (n, 3))):
        _blend(image, alpha, colour)
    return image


def _frame(x, y, cx, cy, angle):
    """Coordinates ``(u, v)`` of every pixel in an object's rotated frame."""
    c, s = math.cos(angle), math.sin(angle)
    return (x - cx) * c + (y - cy) * s, -(x - cx) * s + (y - cy) * c


def _shape(name, u, v, radius):
    """Boolean mask of a shape of circumradius ``radius`` centred at u = v = 0."""
    if name == "disc":
        return u * u + v * v <= radius * radius
    if name == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8 * radius
    if name == "triangle":
        r = 1.15 * radius  # about the area of the others
        inside = np.ones(u.shape, bool)
        for k in range(3):
            phi = -math.pi / 2 + 2 * math.pi * k / 3
            inside &= u * math.cos(phi) + v * math.sin(phi) <= r / 2
        return inside
    if name == "ring":
        r2 = u * u + v * v
        return (r2 <= radius * radius) & (r2 >= (0.5 * radius) ** 2)
    if name == "cross":
        au, av = np.abs(u), np.abs(v)
        arm = 0.3 * radius
        return ((au <= arm) & (av <= radius)) | ((av <= arm) & (au <= radius))
    raise ValueError(name)


def _texture(name, u, v, radius, size, rng):
    """Mixing weights in [0, 1] of an object's two colours: its class's texture family."""
    period = size * rng.uniform(*TEXTURE_PERIOD)
    if name == "stripes":
        return (np.sin(2 * np.pi * u / period) > 0).astype(np.float32)
    if name == "dots":
        du = np.mod(u, period) - period / 2
        dv = np.mod(v, period) - period / 2
        return (du * du + dv * dv <= (0.3 * period) ** 2).astype(np.float32)
    if name == "checker":
        cell = 0.7 * period
        return np.mod(np.floor(u / cell) + np.floor(v / cell), 2).astype(np.float32)
    if name == "grid":
        width = max(1.0, 0.2 * period)
        return ((np.mod(u, period) < width) | (np.mod(v, period) < width)).astype(np.float32)
    if name == "noise":
        block = max(1, size // 64)
        cells = rng.random((size // block + 1, size // block + 1)).astype(np.float32)
        return np.repeat(np.repeat(cells, block, 0), block, 1)[:size, :size]
    raise ValueError(name)


def _colours(background_mean, rng, tries=50):
    """An object's two colours: a random colour and a much darker or brighter shade of it.

    The hue is random (colour never tells the class); the texture is a luminance pattern,
    which small networks pick up fast. Of the tries, the pair that contrasts most with the
    background under the object is kept.
    """
    best, best_score = None, -1.0
    for _ in range(tries):
        a = rng.uniform(0, 255, 3)
        b = a * 0.25 if a.mean() > 128 else a + (255 - a) * 0.75
        score = min(np.abs(a - background_mean).sum(), np.abs(b - background_mean).sum())
        if score > best_score:
            best, best_score = (a, b), score
        if score >= 150:
            break
    return best


def border_band(instances, radius):
    """Pixels within ``radius`` of a border between two regions of ``instances`` (VOC's ignore band)."""
    footprint = np.ones((2 * radius + 1, 2 * radius + 1), bool)
    high = ndimage.maximum_filter(instances, footprint=footprint, mode="nearest")
    low = ndimage.minimum_filter(instances, footprint=footprint, mode="nearest")
    return high != low


@dataclasses.dataclass(frozen=True)
class Style:
    """What a synthetic dataset draws: its classes, each class's shape and texture, its backgrounds.

    ``shape(name, u, v, radius)`` is the class's boolean mask in its rotated frame;
    ``texture(name, u, v, radius, size, rng)`` its two colours' mixing weights; ``background(size,
    rng)`` a float32 ``(S, S, 3)`` image; ``colours(background mean, rng)`` an object's two colours
    (never a function of its class); ``scale_range`` the object diameter / image side, drawn uniformly.
    """

    name: str
    class_names: tuple
    shape: object
    texture: object
    background: object
    colours: object = _colours
    scale_range: tuple = SCALE_RANGE


def _class_texture(name, u, v, radius, size, rng):
    return _texture(TEXTURES[name], u, v, radius, size, rng)


SHAPES_STYLE = Style("shapes", SYNTHETIC_CLASSES, _shape, _class_texture, _background)


def render_image(size, classes, rng, style=SHAPES_STYLE):
    """Draw one image with one object per entry of ``classes`` (class indices, back to front).

    Returns ``(rgb uint8 (S,S,3), class mask uint8, instance mask uint8, objects)`` where
    ``objects`` lists ``(class index, (xmin, ymin, xmax, ymax) 1-based inclusive, truncated)``.
    The masks carry 255 on the border band; every object keeps some pixels outside the band.
    """
    x, y = _grid(size)
    band_radius = max(1, round(size / 200))
    for _attempt in range(100):
        image = style.background(size, rng)
        instances = np.zeros((size, size), np.int32)
        areas = []
        placed = True
        for k, cls in enumerate(classes, start=1):
            for _try in range(30):
                radius = size * rng.uniform(*style.scale_range) / 2
                low = min(0.7 * radius, size / 2)  # at most 30% of the radius outside the image
                cx, cy = rng.uniform(low, size - low, 2)
                u, v = _frame(x, y, cx, cy, rng.uniform(0, 2 * np.pi))
                shape = style.shape(style.class_names[cls], u, v, radius)
                # the new object goes in front: every earlier one keeps MIN_VISIBLE of its pixels
                if shape.sum() >= 12 and all(
                        ((instances == j) & ~shape).sum() >= MIN_VISIBLE * areas[j - 1] for j in range(1, k)):
                    break
            else:
                placed = False
                break
            areas.append(int(shape.sum()))
            texture = style.texture(style.class_names[cls], u, v, radius, size, rng)
            a, b = style.colours(image[shape].mean(axis=0), rng)
            weight = texture[shape][:, None]
            image[shape] = (a * (1 - weight) + b * weight).astype(np.float32)
            instances[shape] = k
        if not placed:
            continue
        band = border_band(instances, band_radius)
        inner = [int(((instances == k) & ~band).sum()) for k in range(1, len(classes) + 1)]
        if min(inner) < 4:
            continue
        break
    else:  # pragma: no cover - 100 failed layouts would mean broken parameters
        raise RuntimeError("could not lay out the objects")
    image += rng.normal(0, 3, image.shape).astype(np.float32)
    rgb = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    class_map = np.zeros((size, size), np.uint8)
    objects = []
    for k, cls in enumerate(classes, start=1):
        where = instances == k
        class_map[where] = cls
        ys, xs = np.nonzero(where)
        box = (int(xs.min()) + 1, int(ys.min()) + 1, int(xs.max()) + 1, int(ys.max()) + 1)
        truncated = xs.min() == 0 or ys.min() == 0 or xs.max() == size - 1 or ys.max() == size - 1
        objects.append((cls, box, bool(truncated)))
    object_map = instances.astype(np.uint8)
    class_map[band] = IGNORE_LABEL
    object_map[band] = IGNORE_LABEL
    return rgb, class_map, object_map, objects


# ----------------------------------------------------------------------------------- layout
def plan_labels(num_images, num_classes, rng):
    """Per image, the class index of each object (1-3 objects), balanced over classes.

    ``ceil(SINGLE_LABEL_SHARE * N)`` images are single-label (one object, or 2-3 of one class);
    the others hold at least two different classes.
    """
    objects = num_classes - 1
    primaries = np.concatenate([rng.permutation(objects) + 1
                                for _ in range(num_images // objects + 1)])[:num_images]
    single = np.zeros(num_images, bool)
    single[:math.ceil(SINGLE_LABEL_SHARE * num_images)] = True
    single = rng.permutation(single)
    plans = []
    for primary, is_single in zip(primaries, single):
        if is_single:
            count = 1 if rng.random() < 0.7 else int(rng.integers(2, 4))
            plans.append([int(primary)] * count)
        else:
            count = int(rng.integers(2, 4))
            second = int(rng.choice([c for c in range(1, num_classes) if c != primary]))
            rest = [int(rng.integers(1, num_classes)) for _ in range(count - 2)]
            classes = [int(primary), second] + rest
            plans.append([classes[i] for i in rng.permutation(count)])
    return plans


def _annotation_xml(image_id, size, objects, class_names):
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "synthetic"
    ET.SubElement(root, "filename").text = f"{image_id}.jpg"
    dims = ET.SubElement(root, "size")
    for tag, value in (("width", size), ("height", size), ("depth", 3)):
        ET.SubElement(dims, tag).text = str(value)
    ET.SubElement(root, "segmented").text = "1"
    for cls, box, truncated in objects:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = class_names[cls]
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = str(int(truncated))
        ET.SubElement(obj, "difficult").text = "0"
        bndbox = ET.SubElement(obj, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), box):
            ET.SubElement(bndbox, tag).text = str(value)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def _write_text(path, text):
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def _write_list(path, ids):
    _write_text(path, "".join(f"{i}\n" for i in ids))


def generate_dataset(root, num_images=200, size=96, seed=0, overwrite=False, style=SHAPES_STYLE):
    """Write a synthetic VOC-layout dataset of ``num_images`` ``size``x``size`` images to ``root``.

    ``style`` (a ``Style``; ``wsk.data.styles.STYLES`` names them) says what is drawn.
    Returns ``{"train": ids, "val": ids}``. The same arguments always give the same files.
    ``root`` must be absent or empty unless ``overwrite`` (then the dataset's own folders and
    ``classes.txt`` are replaced; nothing else there is touched).
    """
    if num_images < 4:
        raise WskError(f"need at least 4 images (train and val), got {num_images}")
    if size < 32:
        raise WskError(f"images must be at least 32 px, got {size}")
    root = os.fspath(root)
    if os.path.isdir(root) and os.listdir(root):
        if not overwrite:
            raise WskError("folder exists and is not empty (choose another or overwrite it)", root)
        for name in OUTPUTS:
            path = os.path.join(root, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
    elif os.path.exists(root) and not os.path.isdir(root):
        raise WskError("exists and is not a folder", root)
    class_names = style.class_names
    palette = voc_palette()
    plans = plan_labels(num_images, len(class_names), np.random.default_rng(seed))
    splits = {"train": [], "val": []}
    for index, classes in enumerate(plans):
        image_id = f"syn_{index:05d}"
        rng = np.random.default_rng([seed, index])
        rgb, class_map, object_map, objects = render_image(size, classes, rng, style)
        write_image(os.path.join(root, "JPEGImages", f"{image_id}.jpg"), rgb)
        write_label_png(os.path.join(root, "SegmentationClass", f"{image_id}.png"), class_map, palette)
        write_label_png(os.path.join(root, "SegmentationObject", f"{image_id}.png"), object_map, palette)
        _write_text(os.path.join(root, "Annotations", f"{image_id}.xml"),
                    _annotation_xml(image_id, size, objects, class_names))
        splits["val" if index % VAL_EVERY == VAL_EVERY - 1 else "train"].append(image_id)
    trainval = sorted(splits["train"] + splits["val"])
    for folder in ("Main", "Segmentation"):
        for name, ids in (("train", splits["train"]), ("val", splits["val"]), ("trainval", trainval)):
            _write_list(os.path.join(root, "ImageSets", folder, f"{name}.txt"), ids)
    _write_list(os.path.join(root, "ImageSets", "Segmentation", "train_aug.txt"), splits["train"])
    _write_text(os.path.join(root, CLASS_LIST_FILE), "".join(f"{name}\n" for name in class_names))
    return splits
