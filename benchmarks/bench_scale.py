"""How each stage's time and memory grow with the number of images (issue: VOC scale and beyond).

    python benchmarks/bench_scale.py [--sizes 100 300 1000] [--side 432] [--jobs 2]
                                     [--proposals 500] [--workers 16] [--out /tmp/wsk-scale]

For each N it writes a synthetic dataset of N training images (``wsk data synth``, square images
of ``--side`` pixels: 432 x 432 holds as many pixels as VOC's 500 x 375) and runs every stage
on them, each in its own process, so that each stage's peak resident memory is its own
(``os.wait4``: the largest of the process and its workers):

proposals, hypotheses (the normalised cut of HCP's hypothesis step), HCP training (one epoch
per step of the demo recipe), scoring (roi), refinement (streaming, Eq. 1), localization maps
(Eq. 2), rough masks (Eq. 5), segmentation training (AN_B, one epoch of the demo recipe) and
prediction with the dense CRF of the same N images.

It prints seconds per image and peak RSS per stage side by side for the sizes, the spread of
seconds per image between the smallest and the largest N and the growth of peak RSS between the
two largest, then projects the wall time to 10,269 images (the paper's training set) and to
1,000,000 on this machine and on ``--workers`` machines like it (per-image stages split
across machines, training data-parallel; refinement's two streaming passes likewise, its
statistics combined). Each stage's time excludes starting Python and importing TensorFlow
(timed inside the child); the RSS includes them.
"""

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time

from wsk.crf import CRFParams
from wsk.data.voc import VOCDataset
from wsk.models.saving import load_model
from wsk.predict import predict_dataset
from wsk.proposals.stage import run_proposals
from wsk.pseudo.stage import pseudo_run
from wsk.recipes import RECIPES
from wsk.stage_list import run_stages
from wsk.stages import worker_pool
from wsk.training import train_hcp, train_segmentation
from wsk.training.hcp import hypothesis_boxes
from wsk.workdir import WorkDir

STAGES = ("proposals", "hypotheses", "hcp", "scoring", "refinement", "locmaps", "masks",
          "seg", "predict")
PROJECT_TO = (10269, 1000000)


def run_stage(stage, root, work, jobs, proposals):
    """Run one stage in this process (the child); returns its wall seconds."""
    demo = RECIPES["demo"]
    one_epoch = dataclasses.replace(demo, hcp=dataclasses.replace(demo.hcp, image_epochs=1, hypothesis_epochs=1),
                                    seg=dataclasses.replace(demo.seg, epochs=1))
    dataset, workdir = VOCDataset(root, "train"), WorkDir(work)
    start = time.perf_counter()
    if stage == "proposals":
        run_proposals(root, work, "train", jobs=jobs, max_proposals=proposals).raise_if_failed()
    elif stage == "hypotheses":
        hypothesis_boxes(workdir, dataset.ids, demo.hcp.hypotheses)
    elif stage == "hcp":
        train_hcp(root, work, one_epoch, verbose=0, val_split="train")
    elif stage in ("scoring", "refinement", "locmaps", "masks"):   # the entries of wsk.stage_list.STAGES
        names = {"scoring": ("scoring",), "refinement": ("refinement statistics", "refinement"),
                 "locmaps": ("localization maps",), "masks": ("rough masks",)}[stage]
        with worker_pool(jobs) as pool:
            run_stages(names, pseudo_run(root, work, "train", mode="roi", config=demo.pseudo, jobs=jobs), pool)
    elif stage == "seg":
        train_segmentation(root, work, "AN_B", one_epoch, verbose=0)
    elif stage == "predict":
        model = load_model(workdir.seg_model("AN_B"))
        predict_dataset(model, dataset, os.path.join(work, "predict"), crf=CRFParams(), jobs=jobs).raise_if_failed()
    else:
        raise SystemExit(f"unknown stage {stage}")
    return time.perf_counter() - start


def measure(stage, root, work, jobs, proposals):
    """``(seconds, peak RSS in MB)`` of one stage run as a child process."""
    result = os.path.join(work, f"bench-{stage}.json")
    command = [sys.executable, os.path.abspath(__file__), "--child", stage, "--root", root, "--work", work,
               "--jobs", str(jobs), "--proposals", str(proposals)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    with open(os.path.join(work, f"bench-{stage}.log"), "w") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise SystemExit(f"stage {stage} failed (see {log.name})")
    with open(result) as f:
        seconds = json.load(f)["seconds"]
    return seconds, usage.ru_maxrss / 1024.0


def synthesize(root, images, side):
    subprocess.run([sys.executable, "-m", "wsk.cli", "data", "synth", root, "--images", str(images),
                    "--size", str(side), "--force"], check=True, stdout=subprocess.DEVNULL)


def table(sizes, results):
    lines = ["stage        " + "".join(f"  N={n:<5} s/img   RSS MB" for n in sizes)]
    for stage in STAGES:
        cells = "".join(f"  {results[n][stage][0] / n:>11.4f} {results[n][stage][1]:>8.0f}" for n in sizes)
        lines.append(f"{stage:<12} {cells}")
    return "\n".join(lines)


def verdicts(sizes, results):
    """Growth from the smallest to the largest N: seconds per image (total / N, and the marginal
    cost of the images added between the two largest sizes, which leaves out start-up costs such
    as spawning workers and loading models) and peak RSS between the two largest sizes."""
    small, large = sizes[0], sizes[-1]
    before = sizes[-2] if len(sizes) > 1 else small
    lines = [f"{'stage':<12} {'s/img ratio':>12} {'marginal s/img':>15} {'RSS ratio':>10}",
             f"{'':<12} {f'N={large}/{small}':>12} {f'N={before}..{large}':>15} {f'N={large}/{before}':>10}"]
    for stage in STAGES:
        ratio = (results[large][stage][0] / large) / (results[small][stage][0] / small)
        marginal = ((results[large][stage][0] - results[before][stage][0]) / (large - before)
                    if large > before else float("nan"))
        rss = results[large][stage][1] / results[before][stage][1]
        lines.append(f"{stage:<12} {ratio:>12.2f} {marginal:>15.4f} {rss:>10.2f}")
    return "\n".join(lines)


def projections(results, n, workers):
    per_image = {stage: results[n][stage][0] / n for stage in STAGES}
    peak = max(rss for _, rss in results[n].values())
    lines = [f"projection from N={n} (per-image cost held flat; peak RSS {peak:.0f} MB per machine):"]
    for target in PROJECT_TO:
        one = sum(per_image.values()) * target
        lines.append(f"  {target:>9,} images: {one / 3600:8.1f} h on this machine, "
                     f"{one / workers / 3600:8.2f} h on {workers} machines like it")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--side", type=int, default=432)
    parser.add_argument("--jobs", type=int, default=os.cpu_count())
    parser.add_argument("--proposals", type=int, default=500)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--out", default="/tmp/wsk-scale")
    parser.add_argument("--child")
    parser.add_argument("--root")
    parser.add_argument("--work")
    args = parser.parse_args()
    if args.child:
        seconds = run_stage(args.child, args.root, args.work, args.jobs, args.proposals)
        with open(os.path.join(args.work, f"bench-{args.child}.json"), "w") as f:
            json.dump({"seconds": seconds}, f)
        return
    results = {}
    for n in args.sizes:
        root, work = os.path.join(args.out, f"data-{n}"), os.path.join(args.out, f"work-{n}")
        os.makedirs(work, exist_ok=True)
        synthesize(root, round(n / 0.75), args.side)   # 75% of a synth dataset is train
        results[n] = {}
        for stage in STAGES:
            results[n][stage] = measure(stage, root, work, args.jobs, args.proposals)
            print(f"N={n} {stage}: {results[n][stage][0]:.1f} s, peak RSS {results[n][stage][1]:.0f} MB",
                  flush=True)
    print(f"\n{args.side} x {args.side} images, {args.proposals} proposals, {args.jobs} jobs\n")
    print(table(args.sizes, results))
    print()
    print(verdicts(args.sizes, results))
    print()
    print(projections(results, args.sizes[-1], args.workers))


if __name__ == "__main__":
    main()
