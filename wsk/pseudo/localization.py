"""Class-wise localization maps (§3.3.1, Eq. 2)."""

import numpy as np

from wsk.errors import WskError
from wsk.pseudo.regions import mean_mask


def localization_maps(proposals, kept_by_label, num_classes):
    """Build the ``(num_classes, H, W)`` float32 localization maps of one image (Eq. 2).

    ``proposals`` are the image's ``wsk.proposals.Proposals``;
    ``kept_by_label`` maps each ground-truth class (dataset index, 1-based) to the proposal
    indices kept for it (refined candidates). ``num_classes`` counts background (channel 0).

    Channel ``k`` of a label is the pixel-wise mean of its kept proposal masks (each pixel:
    number of kept proposals covering it / number kept); channel 0 (background) is
    ``max(0, 1 - sum_k p^k)``; classes not in the image stay zero. A label with no kept
    proposal is an error here: the caller chooses a fallback (see ``wsk.pseudo.stage``).
    """
    maps = np.zeros((num_classes,) + tuple(proposals.shape), np.float32)
    for label, indices in kept_by_label.items():
        if not 1 <= label < num_classes:
            raise WskError(f"class {label} is not an object class of a {num_classes}-class dataset")
        if len(indices) == 0:
            raise WskError(f"class {label} has no proposal to build its localization map")
        maps[label] = mean_mask(proposals, indices)
    maps[0] = np.maximum(0.0, 1.0 - maps[1:].sum(axis=0))
    return maps


def normalised_maps(maps):
    """Localization maps ``(C, H, W)`` divided by their sum over channels at every pixel that has
    mass (§3.3.1's cross-channel normalisation, the p-hat of Eq. 4); pixels without mass stay zero."""
    maps = np.asarray(maps, np.float32)
    total = maps.sum(axis=0, keepdims=True)
    return np.divide(maps, total, out=np.zeros_like(maps), where=total > 0)
