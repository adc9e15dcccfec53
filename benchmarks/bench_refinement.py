"""Time cross-image refinement (Eq. 1, closed form) against the naive pairwise computation.

    python benchmarks/bench_refinement.py [--dim 512] [--per-image 10] [--memory-gb 2]

One class whose candidates (``--per-image`` per image, ``--dim``-dimensional, as after the
PCA of §3.2) are spread over ``N / per_image`` images: the worst case, every candidate
compared with every other. The naive method builds the full ``N x N`` matrix of squared
distances and averages its blocks per image; it runs only where that matrix fits in
``--memory-gb``.
"""

import argparse
import math
import time

import numpy as np

from wsk.pseudo import ClassTotals, refine_image
from wsk.pseudo.refinement import image_statistics, rank_and_keep


def closed_form_refinement(per_image, keep=0.5, order="closest"):
    """Eq. 1 as the pipeline runs it (``ClassTotals``, features unprojected): kept rows per image."""
    labels = {i: np.ones(len(f), np.int64) for i, f in per_image.items()}
    totals = ClassTotals()
    for image_id, feats in per_image.items():
        totals.add(image_statistics(feats, labels[image_id]))
    return {i: refine_image(f, labels[i], None, totals, keep, order)[1] for i, f in per_image.items()}


def naive_refinement(per_image, keep=0.5, order="closest"):
    """Eq. 1 from the full pairwise distance matrix, blocks averaged per image."""
    ids = list(per_image)
    feats = np.concatenate([per_image[i] for i in ids])
    owner = np.repeat(np.arange(len(ids)), [len(per_image[i]) for i in ids])
    sq = np.einsum("ij,ij->i", feats, feats)
    dist = sq[:, None] + sq[None, :] - 2.0 * feats @ feats.T          # (N, N)
    counts = np.bincount(owner)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    block_means = np.add.reduceat(dist, starts, axis=1) / counts        # (N, images)
    block_means[np.arange(len(feats)), owner] = 0.0
    eq1 = block_means.sum(axis=1) / (len(ids) - 1)
    kept, start = {}, 0
    for j, image_id in enumerate(ids):
        kept[image_id] = rank_and_keep(eq1[start:start + counts[j]], keep, order)
        start += counts[j]
    return kept


def timed(fn, *args, repeat=3):
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best, out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--per-image", type=int, default=10)
    parser.add_argument("--memory-gb", type=float, default=2.0)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'candidates':>10} {'images':>7} {'closed form s':>14} {'naive s':>10} {'ratio':>8}  same kept")
    for n in args.sizes:
        images = n // args.per_image
        per_image = {f"i{j}": rng.normal(size=(args.per_image, args.dim)) for j in range(images)}
        fast_t, fast = timed(closed_form_refinement, per_image)
        needed = 8 * n * n * 2 / 1e9          # distance matrix + temporaries
        if needed <= args.memory_gb:
            slow_t, slow = timed(naive_refinement, per_image, repeat=1)
            same = all(set(fast[i].tolist()) == set(slow[i].tolist()) for i in per_image)
            print(f"{n:>10} {images:>7} {fast_t:>14.4f} {slow_t:>10.3f} {slow_t / fast_t:>8.1f}  {same}")
        else:
            print(f"{n:>10} {images:>7} {fast_t:>14.4f} {'-':>10} {'-':>8}  "
                  f"(naive needs ~{needed:.0f} GB)")


if __name__ == "__main__":
    main()
