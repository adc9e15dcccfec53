"""Import precomputed MCG proposals [29] (the paper's own proposals, §3.1) into ``Proposals``.

The published per-image MCG files (``<id>.mat``) hold ``superpixels`` (H x W, ids from 1),
``labels`` (a cell array: for each ranked proposal, the ids of the superpixels it covers)
and ``scores`` (one per proposal). They map one to one onto the container: superpixel
ids become 0-based, regions are ordered by descending score.
"""

import os

import numpy as np
from scipy.io import loadmat

from wsk import storage
from wsk.errors import WskError
from wsk.proposals.container import Proposals

MCG_KEYS = ("superpixels", "labels", "scores")


def load_mcg(path, max_proposals=None):
    """Read one MCG ``.mat`` file into ``Proposals`` (best score first, at most ``max_proposals``).

    A missing key, a superpixel map that is not 2-D, a count of ``labels`` different from
    the count of ``scores`` or a superpixel id outside the map is a ``WskError`` naming the file.
    """
    try:
        with storage.open_file(path) as f:   # a path or a URL (wsk.storage)
            data = loadmat(f)
    except FileNotFoundError:
        raise WskError("MCG file not found", path) from None
    except Exception as err:  # scipy raises ValueError, TypeError, MatReadError, OSError ...
        raise WskError(f"not a readable MATLAB file ({type(err).__name__}: {err})", path) from None
    missing = [key for key in MCG_KEYS if key not in data]
    if missing:
        raise WskError(f"not an MCG proposals file: missing {', '.join(missing)}", path)

    superpixels = np.asarray(data["superpixels"])
    if superpixels.ndim != 2 or superpixels.size == 0 or not np.issubdtype(superpixels.dtype, np.number):
        raise WskError(f"'superpixels' must be a 2-D id map, got shape {superpixels.shape}", path)
    superpixels = superpixels.astype(np.int64)
    if superpixels.min() < 1:
        raise WskError("'superpixels' ids must start at 1 (MATLAB convention)", path)
    num_sp = int(superpixels.max())

    labels = np.asarray(data["labels"], dtype=object).ravel()
    scores = np.asarray(data["scores"], dtype=np.float64).ravel()
    if len(labels) != len(scores):
        raise WskError(f"{len(labels)} proposals in 'labels' but {len(scores)} 'scores'", path)

    regions = []
    for index, cell in enumerate(labels):
        ids = np.asarray(cell).ravel()
        if ids.size and not np.issubdtype(ids.dtype, np.number):
            raise WskError(f"proposal {index + 1} in 'labels' does not hold superpixel ids", path)
        ids = ids.astype(np.int64)
        if ids.size and (ids.min() < 1 or ids.max() > num_sp):
            raise WskError(f"proposal {index + 1} names superpixel ids outside 1..{num_sp}", path)
        regions.append(ids - 1)

    order = np.argsort(-scores, kind="stable")
    if max_proposals is not None:
        order = order[:max_proposals]
    return Proposals.from_regions(superpixels - 1, [regions[i] for i in order], scores[order])


def mcg_files(mcg_dir):
    """``{image id: path}`` of the ``.mat`` files in ``mcg_dir``."""
    if not storage.isdir(mcg_dir):
        raise WskError("MCG folder not found", mcg_dir)
    return {name[:-4]: os.path.join(mcg_dir, name) for name in sorted(storage.listdir(mcg_dir))
            if name.endswith(".mat")}
