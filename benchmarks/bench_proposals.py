"""Time ``wsk.proposals.generate`` per image and measure proposal quality (ABO, recall).

The speed target is at most 1.5 s for a 500 x 375 image on one core; pin the process:

    taskset -c 0 python benchmarks/bench_proposals.py                      # ../shared/voc-sample
    taskset -c 0 python benchmarks/bench_proposals.py ROOT --split val --limit 50
    python benchmarks/bench_proposals.py ROOT --native                      # time at the images' own size

Every image of ROOT's split is resized to ``--size`` (500x375 by default) and timed
(after one warm-up call). With ground-truth masks, ABO and recall at 100/500/1000/2000
proposals are measured on the images at their own size.
"""

import argparse
import os
import pathlib
import statistics
import sys
import time

import cv2

from wsk.data.voc import VOCDataset
from wsk.proposals import generate
from wsk.proposals.quality import DEFAULT_COUNTS, QualityReport
from wsk.proposals.stage import ground_truth_objects

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO.parent / "shared" / "voc-sample"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", nargs="?", default=str(DEFAULT_ROOT), help="VOC-layout dataset")
    parser.add_argument("--split", default="val")
    parser.add_argument("--size", default="500x375", help="WxH every image is resized to for timing")
    parser.add_argument("--native", action="store_true", help="time at each image's own size instead")
    parser.add_argument("--max-proposals", type=int, default=2000)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images")
    parser.add_argument("--no-quality", action="store_true", help="skip ABO/recall")
    args = parser.parse_args(argv)



    dataset = VOCDataset(args.root, args.split)
    ids = dataset.ids[: args.limit] if args.limit else dataset.ids
    width, height = (int(v) for v in args.size.lower().split("x"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{len(ids)} images of {args.root} ({args.split}); cores available: {cores}"
          + ("" if cores == 1 else "  (pin one core with `taskset -c 0` for the 1-core target)"))

    images = [dataset.image(i) for i in ids]
    generate(images[0], max_proposals=args.max_proposals)  # warm-up (imports, caches)
    times, cpu_times, counts = [], [], []
    for image in images:
        if not args.native:
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        start, cpu_start = time.perf_counter(), time.process_time()
        proposals = generate(image, max_proposals=args.max_proposals)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
        counts.append(len(proposals))
    where = "own size" if args.native else f"{width}x{height}"
    print(f"time per image ({where}): mean {statistics.mean(times):.3f} s, median "
          f"{statistics.median(times):.3f} s, max {max(times):.3f} s (wall clock)")
    print(f"CPU time per image ({where}): mean {statistics.mean(cpu_times):.3f} s, max {max(cpu_times):.3f} s "
          "(what one core spends, whatever else the machine runs)")
    print(f"proposals per image: mean {statistics.mean(counts):.0f}, min {min(counts)}, max {max(counts)}")

    if args.no_quality:
        return 0
    report = QualityReport(dataset.class_names, DEFAULT_COUNTS)
    for image_id, image in zip(ids, images):
        truth = ground_truth_objects(dataset, image_id)
        if truth is None:
            continue
        masks, classes, valid = truth
        report.add(generate(image, max_proposals=args.max_proposals), masks, classes, valid)
    if not report.proposals_per_image:
        print("no ground-truth masks: quality not measured")
        return 0
    print(f"quality at the images' own size ({len(report.proposals_per_image)} images with masks):")
    print(report.format())
    overall = report.summary()["overall"]
    print("ABO " + "  ".join(f"@{n}: {overall['abo'][str(n)]:.3f}" for n in DEFAULT_COUNTS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
