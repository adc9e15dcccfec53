"""Proposal scoring with the trained HCP network (§3.1).

Every proposal of an image goes through HCP: the softmax over the object classes and the
fc7 feature of each proposal. Three modes:

``crop``  each proposal's box is cropped from the image and resized to the HCP input size,
          as in the paper; crops go through the hypothesis network in batches.
``roi``   the convolution trunk runs once per image (resized so that its shorter side is
          ``roi_scale`` times the HCP input size); each box is max-pooled from the stride-16
          conv5_3 features onto the head's input grid (RoI max pooling) and sent through
          the head (pool5, fc6, fc7, softmax): the fast mode for thousands of proposals.
``masked`` the whole image, resized to the HCP input size as in image fine-tuning, with every
          pixel outside the proposal's *segment* set to the mean pixel (zero after
          preprocessing): HCP sees the region alone, in place and at the scale it has in the
          image. Crops magnify a small region's texture to the full input, out of the
          distribution HCP was fine-tuned on, and a box shows whatever else lies in it
          (measured in ``wsk.recipes``, the demo recipe's notes).
"""


import cv2
import keras
import numpy as np

from wsk import models
from wsk.errors import WskError
from wsk.models.hcp import TRUNK_STRIDE
from wsk.models.preprocessing import MEAN_BGR, crop_hypothesis
from wsk.recipes import SCORE_MODES, PseudoConfig



def _to_numpy(tensor):
    return np.asarray(keras.ops.convert_to_numpy(tensor))


def check_boxes(boxes, shape):
    """``(P, 4)`` int64 boxes ``(x0, y0, x1, y1)`` (end exclusive) clipped to an image of ``shape``.

    A box that is empty inside the image is a ``WskError``.
    """
    boxes = np.asarray(boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise WskError(f"proposal boxes must be (P, 4), got shape {boxes.shape}")
    height, width = shape[:2]
    boxes = boxes.astype(np.int64).copy()
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
    empty = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if np.any(empty):
        raise WskError(f"proposal {int(np.argmax(empty))} has an empty box inside a "
                       f"{width}x{height} image")
    return boxes


def crop_boxes(image, boxes, size):
    """``(P, size, size, 3)`` float32 crops: each box of ``image`` resized to ``size`` (``crop_hypothesis``)."""
    return np.stack([_to_numpy(crop_hypothesis(image, box, size)) for box in boxes])


def masked_frame(image, segments, size):
    """``(resized, superpixels)``: ``image`` (RGB, ``(H, W, 3)``) resized to ``size x size``
    (``crop_hypothesis`` of the whole image), and the superpixel map of ``segments``
    (``wsk.proposals.Proposals`` of that image) sampled at the nearest source pixel of every output
    pixel (centre ``(i + 0.5) * H / size``). Computed once per image for all its masked hypotheses."""
    height, width = image.shape[:2]
    resized = _to_numpy(crop_hypothesis(image, (0, 0, width, height), size)).astype(np.float32)
    rows = np.minimum(((np.arange(size) + 0.5) * height / size).astype(np.int64), height - 1)
    cols = np.minimum(((np.arange(size) + 0.5) * width / size).astype(np.int64), width - 1)
    return resized, segments.superpixels[rows][:, cols]


def erase_outside(frame, segments, indices):
    """``(len(indices), size, size, 3)`` float32: the ``masked_frame`` ``frame`` once per region
    ``indices[k]`` of ``segments``, every pixel outside that region set to the mean pixel."""
    resized, superpixels = frame
    inside = segments.membership(np.asarray(indices, np.int64))[:, superpixels]
    fill = np.asarray(MEAN_BGR[::-1], np.float32)
    return np.where(inside[..., None], resized[None], fill)


def roi_max_pool(features, boxes, grid, stride=16):
    """RoI max pooling: each box's cells of ``features`` max-pooled onto a ``grid x grid`` map.

    ``features`` is ``(Hf, Wf, C)`` at ``stride`` pixels per cell; ``boxes`` are ``(P, 4)``
    pixel boxes ``(x0, y0, x1, y1)``, end exclusive, in the frame the features were computed
    on. A box covers cells ``floor(x0 / stride) .. ceil(x1 / stride)`` (at least one); its
    ``h`` rows are split into ``grid`` contiguous bins starting at ``floor(i * h / grid)``
    (a bin is one cell when ``h < grid``), and likewise for columns. Returns
    ``(P, grid, grid, C)``.
    """
    features = np.asarray(features)
    hf, wf = features.shape[:2]
    boxes = np.asarray(boxes, dtype=np.float64)
    x0 = np.clip(np.floor(boxes[:, 0] / stride), 0, wf - 1).astype(np.int64)
    y0 = np.clip(np.floor(boxes[:, 1] / stride), 0, hf - 1).astype(np.int64)
    x1 = np.maximum(np.clip(np.ceil(boxes[:, 2] / stride), 0, wf).astype(np.int64), x0 + 1)
    y1 = np.maximum(np.clip(np.ceil(boxes[:, 3] / stride), 0, hf).astype(np.int64), y0 + 1)
    steps = np.arange(grid)
    out = np.empty((len(boxes), grid, grid, features.shape[2]), features.dtype)
    for i in range(len(boxes)):
        sub = features[y0[i]:y1[i], x0[i]:x1[i]]
        sub = np.maximum.reduceat(sub, steps * sub.shape[0] // grid, axis=0)
        out[i] = np.maximum.reduceat(sub, steps * sub.shape[1] // grid, axis=1)
    return out


class ProposalScorer:
    """Scores proposal boxes with a trained HCP model (``wsk.models.hcp``).

    ``scorer(image, boxes, segments=None)`` returns ``(scores, features)``: the ``(P, C)``
    float32 softmax over the object classes (column ``j`` is dataset class ``j + 1``) and the
    ``(P, D)`` float32 fc7 features of the ``P`` boxes of an RGB uint8 image. The ``masked``
    mode needs ``segments``, the image's ``wsk.proposals.Proposals`` whose boxes these are.
    """

    def __init__(self, model, mode=PseudoConfig.score_mode, batch_size=64, roi_scale=2.0):
        if mode not in SCORE_MODES:
            raise WskError(f"scoring mode must be one of {', '.join(SCORE_MODES)}, got {mode!r}")
        self.mode = mode
        self.batch_size = int(batch_size)
        self.roi_scale = float(roi_scale)
        self.image_size = int(models.hcp_image_size(model))
        self._preprocess = models.preprocess_input
        if mode in ("crop", "masked"):
            self._hypothesis = models.hcp_hypothesis_model(model)
        else:
            self._trunk, self._head = models.hcp_parts(model)
            self.grid = int(self._head.inputs[0].shape[1])
            self.stride = TRUNK_STRIDE

    def _batched(self, network, inputs):
        scores, features = [], []
        for start in range(0, len(inputs), self.batch_size):
            # predict_on_batch runs the backend's compiled predict step: about twice as fast on CPU
            # as an eager call at batch 32, which matters for masked scoring (one pass per proposal)
            out = network.predict_on_batch(inputs[start:start + self.batch_size])
            scores.append(_to_numpy(out["scores"]).astype(np.float32))
            features.append(_to_numpy(out["features"]).astype(np.float32))
        return np.concatenate(scores), np.concatenate(features)

    def __call__(self, image, boxes, segments=None):
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise WskError(f"an RGB image must be (H, W, 3), got shape {image.shape}")
        boxes = check_boxes(boxes, image.shape)
        if len(boxes) == 0:
            raise WskError("no proposal to score")
        if self.mode == "roi":
            return self._score_roi(image, boxes)
        if self.mode == "masked":
            if segments is None or len(segments) != len(boxes) or tuple(segments.shape) != image.shape[:2]:
                raise WskError("masked scoring needs the image's proposals (segments) with its boxes")

            frame = masked_frame(image, segments, self.image_size)

            def hypotheses(start, stop):
                return erase_outside(frame, segments, np.arange(start, stop))
        else:
            def hypotheses(start, stop):
                return crop_boxes(image, boxes[start:stop], self.image_size)
        scores, features = [], []
        # chunk by chunk so thousands of S x S hypotheses never sit in memory at once
        chunk = self.batch_size * 8
        for start in range(0, len(boxes), chunk):
            inputs = self._preprocess(hypotheses(start, min(start + chunk, len(boxes))))
            s, f = self._batched(self._hypothesis, _to_numpy(inputs))
            scores.append(s)
            features.append(f)
        return np.concatenate(scores), np.concatenate(features)

    def _score_roi(self, image, boxes):
        height, width = image.shape[:2]
        scale = self.roi_scale * self.image_size / min(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        resized = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        trunk_in = _to_numpy(self._preprocess(resized[None].astype(np.float32)))
        conv = _to_numpy(self._trunk(trunk_in, training=False))[0]
        factors = np.array([size[0] / width, size[1] / height] * 2)
        pooled = roi_max_pool(conv, boxes * factors, self.grid, self.stride)
        return self._batched(self._head, pooled)


def score_proposals(model, image, boxes, mode=PseudoConfig.score_mode, batch_size=64, roi_scale=2.0,
                    segments=None):
    """HCP softmax ``(P, C)`` and fc7 features ``(P, D)`` of an image's proposal boxes (§3.1).

    One-off convenience over ``ProposalScorer`` (which builds the sub-networks once; use it
    directly for many images).
    """
    return ProposalScorer(model, mode, batch_size, roi_scale)(image, boxes, segments)
