"""Proposal scoring: crop (the paper's), roi (one trunk pass) and masked, side by side in one run.

    python benchmarks/bench_scoring.py ROOT WORK [--split paper_train] [--images 100]

Uses WORK's proposals and trained HCP (after `wsk demo` or `wsk train hcp`) on the first
``--images`` images of the split with ground-truth masks, and prints, per mode: seconds per
image, the share of image labels with a candidate (score > threshold), the mean IoU of each
label's top-scored proposal, the candidates' precision (IoU >= 0.5 against their label) and
the mean number of candidates per label, and the median rank (0 = top) of each label's
best-overlapping proposal in that label's score order. Nothing is written into WORK.
"""

import time

import click
import numpy as np

from wsk.data.voc import VOCDataset
from wsk.proposals.container import Proposals
from wsk.proposals.stage import ground_truth_objects
from wsk.pseudo.candidates import select_candidates
from wsk.pseudo.report import IOU_HIT, label_ious
from wsk.pseudo.scoring import ProposalScorer
from wsk.pseudo.score_stage import load_hcp_model
from wsk.recipes import SCORE_MODES, get_recipe
from wsk.workdir import WorkDir


@click.command()
@click.argument("root", type=click.Path(exists=True, file_okay=False))
@click.argument("work", type=click.Path(exists=True, file_okay=False))
@click.option("--split", default="paper_train", show_default=True)
@click.option("--images", type=click.IntRange(1), default=100, show_default=True)
@click.option("--recipe", default="demo", show_default=True, help="Gives the candidate threshold.")
def main(root, work, split, images, recipe):
    dataset = VOCDataset(root, split)
    ids = dataset.ids[:images]
    workdir = WorkDir(work)
    model = load_hcp_model(workdir.hcp_model)
    threshold = get_recipe(recipe).pseudo.candidate_threshold
    rows = {}
    for mode in SCORE_MODES:
        scorer = ProposalScorer(model, mode)
        labels = with_candidate = top = candidates = hits = 0
        seconds, best_ranks = 0.0, []
        for image_id in ids:
            proposals = Proposals.load(workdir.proposals(image_id))
            image = dataset.image(image_id)
            start = time.perf_counter()
            scores, _ = scorer(image, proposals.boxes, proposals)
            seconds += time.perf_counter() - start
            masks, classes, valid = ground_truth_objects(dataset, image_id)
            ious = label_ious(proposals, list(zip(classes.tolist(), masks)), valid)
            chosen, chosen_labels = select_candidates(scores, dataset.labels(image_id), threshold)
            for label in dataset.labels(image_id):
                if label not in ious:
                    continue
                own = chosen[chosen_labels == label]
                labels += 1
                with_candidate += len(own) > 0
                top += ious[label][int(np.argmax(scores[:, label - 1]))]
                candidates += len(own)
                hits += int((ious[label][own] >= IOU_HIT).sum())
                order = np.argsort(-scores[:, label - 1], kind="stable")
                best_ranks.append(int(np.flatnonzero(order == np.argmax(ious[label]))[0]))
        rows[mode] = {"s/image": seconds / len(ids), "labels with a candidate": with_candidate / labels,
                      "top proposal IoU": top / labels, "candidate precision": hits / max(candidates, 1),
                      "candidates per label": candidates / labels,
                      "best proposal's rank": float(np.median(best_ranks))}
    click.echo(f"{len(ids)} images of {split}, {len(Proposals.load(workdir.proposals(ids[0])))} proposals "
               f"on the first; HCP {workdir.hcp_model}")
    click.echo(f"{'':26s}" + "".join(f"{m:>10s}" for m in SCORE_MODES))
    for key in rows[SCORE_MODES[0]]:
        click.echo(f"{key:26s}" + "".join(f"{rows[m][key]:>10.3f}" for m in SCORE_MODES))


if __name__ == "__main__":
    main()
