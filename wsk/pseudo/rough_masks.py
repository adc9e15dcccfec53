"""Rough segmentation masks (§3.3.2, Eq. 5)."""

import numpy as np

from wsk.errors import WskError
from wsk.pseudo.candidates import hcp_column
from wsk.pseudo.localization import normalised_maps
from wsk.pseudo.regions import mean_mask, region_means, union_mask
from wsk.recipes import PseudoConfig

# the unary of the dense CRF over a rough mask (``crf_unary``): this much probability on the mask's
# label, this much spread as the normalised localization maps, and the rest evenly over the labels
CRF_MASK_WEIGHT = 0.5
CRF_MAP_WEIGHT = 0.4


def region_confidence(proposals, scores, locmap, label):
    """Eq. 5 for every region: ``v_r = s_r^k + (1/|r|) sum_{(i,j) in r} p^k(i, j)``.

    ``scores`` is the ``(P, C)`` HCP softmax (column ``label - 1``), ``locmap`` the label's
    ``(H, W)`` localization map. The region means come from per-superpixel sums of ``p^k``
    pushed through the CSR membership. Empty regions get ``-inf``. Returns ``(P,)`` float64.
    """
    scores = np.asarray(scores)
    if scores.shape[0] != len(proposals):
        raise WskError(f"{scores.shape[0]} proposal scores for {len(proposals)} proposals")
    value = scores[:, hcp_column(label)].astype(np.float64) + region_means(proposals, locmap)
    value[proposals.areas <= 0] = -np.inf
    return value


def combine_regions(proposals, indices, vote=PseudoConfig.rough_vote):
    """The ``(H, W)`` bool mask that regions ``indices`` form: their union (the paper, ``vote`` 0),
    or the pixels that at least a fraction ``vote`` of them cover (a vote: one loose region, that
    also holds background, no longer sets the mask's extent)."""
    if not vote:
        return union_mask(proposals, indices)
    return mean_mask(proposals, indices) >= vote - 1e-9   # k of n regions: k / n >= vote, exactly


def rough_masks(proposals, scores, maps, labels, top=PseudoConfig.rough_top_regions, vote=PseudoConfig.rough_vote):
    """The ``(H, W)`` uint8 rough mask of one image (§3.3.2).

    For each ground-truth ``label`` (dataset index), the ``top`` regions of highest Eq. 5
    confidence (ties: lower proposal index first) are combined into the label's mask: united
    (``vote`` 0, the paper) or voted on (``combine_regions``). A pixel
    inside the masks of several labels takes the label with the larger localization value
    ``maps[label]`` there (ties: the lower class index); a pixel in no mask is background (0).
    ``maps`` are the image's ``(C+1, H, W)`` localization maps (Eq. 2).
    """
    maps = np.asarray(maps)
    labels = sorted(set(int(k) for k in labels))
    if maps.shape[1:] != tuple(proposals.shape):
        raise WskError(f"localization maps of shape {maps.shape[1:]} do not fit proposals of "
                       f"shape {proposals.shape}")
    out = np.zeros(proposals.shape, np.uint8)
    if not labels:
        return out
    best = np.full(proposals.shape, -np.inf, np.float32)
    for label in labels:
        value = region_confidence(proposals, scores, maps[label], label)
        order = np.argsort(-value, kind="stable")[:top]
        order = order[np.isfinite(value[order])]
        covered = combine_regions(proposals, order, vote)
        local = maps[label].astype(np.float32)
        wins = covered & (local > best)
        out[wins] = label
        best[wins] = local[wins]
    return out


def image_channels(labels):
    """The CRF's channels for an image holding ``labels``: background, then its labels in order."""
    return [0] + sorted(set(int(k) for k in labels))


def crf_unary(mask, maps, labels):
    """The ``(H, W, L)`` unary probabilities of the CRF over one rough mask, over the channels
    ``image_channels(labels)``.

    ``CRF_MASK_WEIGHT`` on the rough mask's label, ``CRF_MAP_WEIGHT`` times the localization maps
    (Eq. 2) of those labels, normalised to sum to 1 at each pixel (``normalised_maps``), and the rest
    ``1 / L`` each. A mask pixel outside those labels (255, ignored) takes no mask share, a pixel where
    those maps hold no mass no map share.
    """
    channels = image_channels(labels)
    local = normalised_maps(np.asarray(maps)[channels])
    onehot = np.asarray(mask)[None] == np.asarray(channels).reshape(-1, 1, 1)
    rest = 1.0 - CRF_MASK_WEIGHT - CRF_MAP_WEIGHT
    unary = CRF_MASK_WEIGHT * onehot + CRF_MAP_WEIGHT * local + rest / len(channels)
    unary /= unary.sum(axis=0, keepdims=True)   # 1 already, except where the mask or maps held no label
    return unary.transpose(1, 2, 0).astype(np.float32)


def crf_rough_mask(image, mask, maps, labels, backend="keras"):
    """The rough mask after a dense CRF (``wsk.crf.dense_crf``, DeepLab-LargeFOV's parameters scaled
    to the image) on ``crf_unary``: boundaries follow the image's colour edges, and each pixel keeps
    one of the image's labels or background. ``image`` ``(H, W, 3)`` uint8. Returns ``(H, W)`` uint8."""
    from wsk.crf import dense_crf

    mask = np.asarray(mask)
    if not len(labels):
        return mask.astype(np.uint8)
    channels = np.array(image_channels(labels), np.uint8)
    picked, _ = dense_crf(image, crf_unary(mask, maps, labels), backend=backend)
    return channels[np.asarray(picked)]
