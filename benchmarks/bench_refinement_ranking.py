"""Does Eq. 1 rank the tight candidates first? Its distance against each candidate's IoU, per work directory.

    python benchmarks/bench_refinement_ranking.py WORK [WORK ...] [--images 200]

§3.2 assumes that the candidates tightly around an object resemble each other across images, so
that Eq. 1's distance to the other images' candidates is smallest for them. For each (image,
label) of the first ``--images`` training images with at least 4 candidates, this measures, with
the work directory's own ``refinement.npz`` (projection and class totals) and the ground truth:

* the Spearman correlation of the candidates' Eq. 1 distances with their IoU with the label's
  objects (negative: the closest are the tightest, as §3.2 assumes), and with their area;
* the mean IoU and area of all candidates, of the closest half and of the farthest half (what
  ``refine_order`` "closest" and "farthest" keep, ``wsk.pseudo.refinement.rank_and_keep``);
* where ``refinement.npz`` holds the false alarms' totals (``refine_order`` "contrast"), the same for
  the contrast order's key, Eq. 1's distance minus the average distance to the false alarms.

Means over the groups. A WORK needs its scores, proposals, ``refinement.npz`` and a dataset with
ground-truth masks (``wsk run``'s, ``wsk demo``'s or ``bench_generalization.py``'s work directories).
"""

import argparse
import warnings

import numpy as np
from scipy.stats import ConstantInputWarning, spearmanr

from wsk.errors import WskError
from wsk.io import load_npz
from wsk.proposals.container import Proposals
from wsk.proposals.stage import ground_truth_objects
from wsk.pseudo.files import SCORE_KEYS
from wsk.pseudo.refine_stage import load_negatives, load_statistics
from wsk.pseudo.refinement import image_statistics, reduce_with
from wsk.pseudo.report import label_ious
from wsk.run_record import open_run

MIN_CANDIDATES = 4


def ranking_groups(work, images):
    """``[(distances, ious, areas), ...]``: one per (image, label) with enough candidates."""
    run = open_run(work, write=False)
    dataset, workdir = run.dataset(), run.workdir
    projection, totals, _ = load_statistics(workdir.refinement)
    try:
        negatives = load_negatives(workdir.refinement)
    except WskError:   # made for another order
        negatives = None
    groups = []
    for image_id in dataset.ids[:images]:
        truth = ground_truth_objects(dataset, image_id)
        if truth is None:
            raise WskError("needs ground-truth masks", dataset.image_path(image_id))
        masks, classes, valid = truth
        proposals = Proposals.load(workdir.proposals(image_id))
        ious = label_ious(proposals, list(zip(classes.tolist(), masks)), valid)
        rec = load_npz(workdir.scores(image_id), required=SCORE_KEYS)
        reduced = reduce_with(projection, rec["features"])
        labels = rec["candidate_labels"]
        for label, stats in image_statistics(reduced, labels).items():
            rows = np.flatnonzero(labels == label)
            distances = totals.distances(label, reduced[rows], stats)
            if len(rows) < MIN_CANDIDATES or label not in ious or distances is None:
                continue
            candidates = rec["candidates"][rows]
            areas = np.array([proposals.mask(int(p)).mean() for p in candidates])
            alarms = None if negatives is None else negatives.distances(label, reduced[rows])
            contrast = None if alarms is None else np.asarray(distances) - alarms
            groups.append((np.asarray(distances), ious[label][candidates], areas, contrast))
    return groups


def summarize(groups):
    """The means over groups printed for one work directory."""
    out = {"groups": len(groups)}
    warnings.simplefilter("ignore", ConstantInputWarning)   # a group of equal IoUs has no correlation (NaN, skipped)
    for name, index in (("IoU", 1), ("area", 2)):
        out[f"spearman(distance, {name})"] = float(np.nanmean([spearmanr(g[0], g[index])[0] for g in groups]))
        halves = {"all": [], "closest half": [], "farthest half": []}
        for g in groups:
            order, half = np.argsort(g[0], kind="stable"), len(g[0]) // 2
            halves["all"].append(g[index].mean())
            halves["closest half"].append(g[index][order[:half]].mean())
            halves["farthest half"].append(g[index][order[-half:]].mean())
        out.update({f"{name}: {k}": float(np.mean(v)) for k, v in halves.items()})
    if groups and all(g[3] is not None for g in groups):
        out["spearman(contrast, IoU)"] = float(np.nanmean([spearmanr(g[3], g[1])[0] for g in groups]))
        out["IoU: contrast half"] = float(np.mean([g[1][np.argsort(g[3], kind="stable")[:len(g[3]) // 2]].mean()
                                                   for g in groups]))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("works", nargs="+")
    parser.add_argument("--images", type=int, default=200)
    args = parser.parse_args()
    results = {work: summarize(ranking_groups(work, args.images)) for work in args.works}
    keys = list(dict.fromkeys(key for result in results.values() for key in result))
    print(f"{'':32}" + "".join(f"{w[-24:]:>26}" for w in args.works))
    for key in keys:
        print(f"{key:32}" + "".join(f"{results[w].get(key, float('nan')):>26.3f}" for w in args.works))


if __name__ == "__main__":
    main()
