"""Figures of the pseudo labels, like Fig. 4 and 5 of the paper.

One row per image: the photograph, the localization map of each of its labels and of
background (Eq. 2) as heat overlays, and the rough mask (Eq. 5) in the VOC palette,
each panel captioned with its class name.
"""

import os

import cv2
import numpy as np

from wsk import storage
from wsk.classes import voc_palette
from wsk.data.sources import open_dataset
from wsk.errors import WskError
from wsk.io import load_npz, read_label_png, write_image
from wsk.workdir import WorkDir

CAPTION_HEIGHT = 22
MIN_PANEL_SIDE = 160     # small images are enlarged so that captions stay readable
GAP = 4


def heat_overlay(image, prob, alpha=0.55):
    """RGB uint8: ``prob`` (H, W) in [0, 1] as a JET heat map blended over ``image``."""
    heat = cv2.applyColorMap(np.clip(np.asarray(prob, np.float32) * 255.0, 0, 255).astype(np.uint8),
                             cv2.COLORMAP_JET)[:, :, ::-1]
    blended = alpha * heat.astype(np.float32) + (1.0 - alpha) * image.astype(np.float32)
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def colour_mask(mask):
    """RGB uint8 of an (H, W) label map in the VOC palette."""
    return voc_palette()[np.asarray(mask, np.uint8)]


def captioned(panel, text):
    """``panel`` with a white caption strip holding ``text`` above it."""
    strip = np.full((CAPTION_HEIGHT, panel.shape[1], 3), 255, np.uint8)
    scale = 0.45
    (width, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    if width > panel.shape[1] - 4:
        scale *= (panel.shape[1] - 4) / width
    cv2.putText(strip, text, (2, CAPTION_HEIGHT - 7), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1,
                cv2.LINE_AA)
    return np.concatenate([strip, panel], axis=0)


def figure(image, maps, labels, mask, class_names):
    """RGB uint8 figure of one image: photo | heat map per label | background | rough mask.

    ``maps`` are the ``(C+1, H, W)`` localization maps, ``labels`` the image's classes,
    ``mask`` the ``(H, W)`` rough mask (or None to leave it out).
    """
    image = np.asarray(image, np.uint8)
    height, width = image.shape[:2]
    if np.asarray(maps).shape[1:] != (height, width):
        raise WskError(f"localization maps of shape {np.asarray(maps).shape[1:]} do not fit the "
                       f"{height}x{width} image")
    factor = max(1.0, MIN_PANEL_SIDE / min(height, width))
    size = (round(width * factor), round(height * factor))

    def enlarge(array, nearest=False):
        method = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
        return array if factor == 1.0 else cv2.resize(array, size, interpolation=method)

    photo = enlarge(image)
    panels = [captioned(photo, "image")]
    for label in list(labels) + [0]:
        prob = enlarge(np.asarray(maps[label], np.float32))
        panels.append(captioned(heat_overlay(photo, prob), class_names[label]))
    if mask is not None:
        panels.append(captioned(enlarge(colour_mask(mask), nearest=True), "rough mask"))
    gap = np.full((panels[0].shape[0], GAP, 3), 255, np.uint8)
    row = [panels[0]]
    for panel in panels[1:]:
        row += [gap, panel]
    return np.concatenate(row, axis=1)


def write_figures(root, work, ids=None, out=None, split="paper_train", refine=True, limit=8):
    """Write ``<out>/<id>.png`` figures (default ``WORK/viz`` or ``WORK/noref/viz``).

    ``ids`` default to the first ``limit`` images of ``split`` that have localization maps.
    Returns the written paths.
    """
    workdir = WorkDir(work, refine)
    if ids is None:
        ids = [i for i in open_dataset(root, split).ids if storage.exists(workdir.locmap(i))][:limit]
        if not ids:
            raise WskError("no localization maps to show (run `wsk pseudo` first)",
                           os.path.dirname(workdir.locmap("x")))
    missing = [i for i in ids if not storage.exists(workdir.locmap(i))]
    if missing:
        raise WskError(f"no localization map for image id {missing[0]!r} (an id of the dataset that "
                       "`wsk pseudo` has labelled?)", workdir.locmap(missing[0]))
    dataset = open_dataset(root, split, ids=ids)
    out = out or os.path.join(os.path.dirname(workdir.refined_dir), "viz")
    paths = []
    for image_id in ids:
        locmap = load_npz(workdir.locmap(image_id), required=("maps", "labels"))
        mask_path = workdir.mask(image_id)
        mask = read_label_png(mask_path) if storage.exists(mask_path) else None
        picture = figure(dataset.image(image_id), locmap["maps"], locmap["labels"].tolist(), mask,
                         dataset.class_names)
        path = os.path.join(out, f"{image_id}.png")
        write_image(path, picture)
        paths.append(path)
    return paths
