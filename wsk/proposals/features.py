"""Per-pixel and per-region features of the hierarchical grouping (``wsk.proposals.generate``):
colour spaces, colour and texture histogram bins, region histograms and region adjacency."""

import cv2
import numpy as np

COLOUR_BINS = 25
ORIENTATIONS = 8
MAGNITUDE_BINS = 10


def colour_space(image, name):
    """The image in colour space ``name`` as float32 ``(H, W, 3)`` with every channel in [0, 1].

    ``hsv``, ``lab`` (OpenCV's 8-bit encodings), ``rgb``, ``rgi`` (normalised r, g and intensity).
    """
    if name == "rgb":
        return image.astype(np.float32) / 255.0
    if name == "hsv":
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV).astype(np.float32)
        return hsv / np.array([180.0, 255.0, 255.0], np.float32)
    if name == "lab":
        return cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32) / 255.0
    if name == "rgi":
        rgb = image.astype(np.float32)
        total = rgb.sum(axis=2, keepdims=True) + 1e-6
        out = np.empty_like(rgb)
        out[..., :2] = rgb[..., :2] / total
        out[..., 2] = total[..., 0] / (3 * 255.0)
        return np.clip(out, 0.0, 1.0)
    raise ValueError(f"unknown colour space {name!r}")


def colour_bins(channels):
    """Per-pixel colour-histogram bin ``(H, W, 3)`` int64, channel ``c`` offset by ``c * 25``."""
    bins = np.minimum((channels * COLOUR_BINS).astype(np.int64), COLOUR_BINS - 1)
    return bins + np.arange(3) * COLOUR_BINS


def texture_bins(channels):
    """Per-pixel texture-histogram bin ``(H, W, 3)``: gradient orientation (8) x magnitude (10)
    of the Gaussian-smoothed channel, channel ``c`` offset by ``c * 80``."""
    out = np.empty(channels.shape, np.int64)
    per_channel = ORIENTATIONS * MAGNITUDE_BINS
    for c in range(3):
        smooth = cv2.GaussianBlur(channels[..., c], (0, 0), 1.0)
        gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)
        magnitude = np.sqrt(gx * gx + gy * gy)
        angle = np.arctan2(gy, gx)  # -pi..pi
        orientation = ((angle + np.pi) * (ORIENTATIONS / (2 * np.pi))).astype(np.int64) % ORIENTATIONS
        top = float(magnitude.max())
        level = np.minimum((magnitude * (MAGNITUDE_BINS / top)).astype(np.int64), MAGNITUDE_BINS - 1) \
            if top > 0 else np.zeros(magnitude.shape, np.int64)
        out[..., c] = c * per_channel + orientation * MAGNITUDE_BINS + level
    return out


def region_histograms(labels, bins, num_labels, num_bins):
    """Histogram counts ``(num_labels, num_bins)`` float64 of per-pixel ``bins`` (H, W, 3) per label."""
    codes = (labels.ravel()[:, None] * num_bins + bins.reshape(-1, bins.shape[-1])).ravel()
    return np.bincount(codes, minlength=num_labels * num_bins).reshape(num_labels, num_bins).astype(np.float64)


def adjacency(labels):
    """Distinct pairs ``(a, b)``, ``a < b``, of labels that touch (4-connectivity), ``(M, 2)`` int64."""
    count = int(labels.max()) + 1
    codes = []
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        differ = a != b
        first, second = a[differ].astype(np.int64), b[differ].astype(np.int64)
        codes.append(np.minimum(first, second) * count + np.maximum(first, second))
    return unique_pairs(np.concatenate(codes), count)


def unique_pairs(codes, count):
    """Decode distinct ``a * count + b`` codes into sorted ``(M, 2)`` pairs."""
    codes = np.unique(codes)
    return np.stack([codes // count, codes % count], axis=1)
