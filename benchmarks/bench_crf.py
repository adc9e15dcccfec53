"""The dense CRF's two backends side by side, in one run (issue 23).

    .venv/bin/python benchmarks/bench_crf.py [--images N (0: the demo only)] [--demo WORK]

* seconds per image at 64 px and at VOC size (500x375, 21 classes): the keras CRF
  (``wsk.models.dense_crf``) on the TensorFlow backend in this process and on the JAX backend in a
  child process, 2 images at a time in threads (as ``wsk predict --jobs 2`` runs it), and pydensecrf
  as 2 worker processes (as ``wsk predict`` runs it);
* pixel agreement of the keras CRF's labels with pydensecrf's;
* on ../shared/voc-sample, 21-class unaries made from the ground truth by a fixed seeded corruption
  (``corrupted_softmax``: shift, blur, label noise), the +CRF mIoU of both against the ground truth.

* with ``--demo WORK`` (a finished ``wsk demo --work WORK``), the +CRF mIoU of each of the four
  variants on the demo's val set with both backends, and the seconds each backend's evaluation took.
Thread and process counts follow the machine (2 cores here); compare ratios from one run.

``bench_crf.py --images 4`` (2 cores, nothing else running), seconds an image and the keras CRF's
throughput over pydensecrf's; the pixel agreement was 1.0 everywhere, and the VOC sample's
corrupted unaries went 58.57 -> 78.35 mIoU with both:

==============  ===============  ==========  ===========  ==========  ==========
size            densecrf 2 proc  keras, TF   keras, JAX   TF ratio    JAX ratio
==============  ===============  ==========  ===========  ==========  ==========
64 px           0.018            0.082       0.104        0.218       0.174
VOC 500 x 375   0.534            0.865       3.581        0.618       0.139
==============  ===============  ==========  ===========  ==========  ==========

At VOC size the ratios were 0.084 (TF) and 0.12 (JAX) before, in order: the splat went corner by
corner (no ``(N, d+1, C)`` intermediate); eager runs looped the blur and the iterations in Python
(JAX compiled an ``ops.fori_loop`` at every call); TensorFlow's eager path splat, blurred and sliced
by sparse products with the normalisation and weight folded in (``wsk.crf._tensorflow_sparse``);
the lattice searched neighbours among the vertices, not every point-corner; and two images ran at
once in threads, as ``wsk predict`` and ``wsk eval`` now run them (one image at a time kept about
one core busy: 1.37 -> 0.90 s an image). Run to run, the ratios move by about 10% on this machine.
"""

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time

import cv2
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOC_SAMPLE = os.path.join(os.path.dirname(REPO), "shared", "voc-sample")
CLASSES = 21
VOC_SIZE = (375, 500)


def corrupted_softmax(mask, seed, classes=CLASSES):
    """Unaries from a ground-truth mask (``255`` counts as background): a fixed seeded corruption.

    One-hot labels shifted by up to 12 px, blurred (Gaussian, sigma 6 px), mixed 50/50 with
    label noise (a random Dirichlet class distribution per 24 px block) and with a 5% uniform floor.
    """
    rng = np.random.default_rng(seed)
    height, width = mask.shape
    labels = np.where(mask == 255, 0, mask).astype(np.int64)
    onehot = np.eye(classes, dtype=np.float32)[labels]
    dy, dx = rng.integers(-12, 13, 2)
    onehot = np.roll(onehot, (int(dy), int(dx)), axis=(0, 1))
    blurred = np.stack([cv2.GaussianBlur(onehot[..., c], (0, 0), 6.0) for c in range(classes)], -1)
    blocks = rng.dirichlet(np.full(classes, 0.3), (height // 24 + 1, width // 24 + 1)).astype(np.float32)
    noise = np.repeat(np.repeat(blocks, 24, 0), 24, 1)[:height, :width]
    mixed = 0.5 * blurred + 0.5 * noise + 0.05 / classes
    return (mixed / mixed.sum(-1, keepdims=True)).astype(np.float32)


def voc_cases(limit=None):
    """``[(id, image uint8, mask, corrupted softmax)]`` of the VOC sample (empty when absent)."""
    from wsk.io import read_image, read_label_png

    path = os.path.join(VOC_SAMPLE, "ImageSets", "Segmentation", "val.txt")
    if not os.path.exists(path):
        return []
    ids = open(path).read().split()[:limit]
    cases = []
    for index, image_id in enumerate(ids):
        image = read_image(os.path.join(VOC_SAMPLE, "JPEGImages", f"{image_id}.jpg"))
        mask = read_label_png(os.path.join(VOC_SAMPLE, "SegmentationClass", f"{image_id}.png"))
        cases.append((image_id, image, mask, corrupted_softmax(mask, seed=index)))
    return cases


def miou(masks, labels):
    from wsk.metrics import confusion_matrix, mean_iou

    matrix = sum(confusion_matrix(m, l, CLASSES) for m, l in zip(masks, labels))
    return 100.0 * float(mean_iou(matrix))


def _densecrf_labels(args):
    from wsk.crf import dense_crf

    image, probabilities = args
    return dense_crf(image, probabilities, backend="densecrf")[0]


def densecrf_pool(pairs, processes=2):
    """pydensecrf over ``pairs`` in ``processes`` spawned workers: (labels, seconds per image)."""
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        pool.map(_densecrf_labels, pairs[:processes])           # start-up out of the timing
        start = time.perf_counter()
        labels = pool.map(_densecrf_labels, pairs, chunksize=1)
    return labels, (time.perf_counter() - start) / len(pairs)


def keras_labels(pairs, threads=2):
    """The keras CRF in this process, ``threads`` images at a time in threads, as ``wsk predict`` and
    ``wsk eval`` run it with ``--jobs 2`` (``wsk.predict``): (labels, seconds per image)."""
    import concurrent.futures

    from wsk.crf import dense_crf

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda pair: dense_crf(*pair), pairs[:threads]))   # warm-up out of the timing
        start = time.perf_counter()
        labels = list(pool.map(lambda pair: dense_crf(*pair)[0], pairs))
    return labels, (time.perf_counter() - start) / len(pairs)


def workloads(count, voc):
    """``{name: [(image, softmax)]}``: ``count`` images at 64 px and at VOC size (21 classes)."""
    sources = voc or [(None, np.random.default_rng(0).integers(0, 255, (375, 500, 3), np.uint8),
                       np.zeros((375, 500), np.uint8), corrupted_softmax(np.zeros((375, 500), np.uint8), 0))]
    loads = {"64px": [], "voc500x375": []}
    for index in range(count):
        _, image, mask, _ = sources[index % len(sources)]
        for name, (height, width) in (("64px", (48, 64)), ("voc500x375", VOC_SIZE)):
            small = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
            small_mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
            loads[name].append((small, corrupted_softmax(small_mask, seed=100 + index)))
    return loads


def demo_crf_miou(work, variants=("AN_A", "SN_A", "AN_B", "SN_B")):
    """``{variant: {backend: +CRF mIoU}}`` on a finished demo's val set, and the mean differences."""
    from wsk.crf import CRF_BACKENDS, CRFParams
    from wsk.models.saving import load_model
    from wsk.predict import evaluate_model

    out, seconds = {}, dict.fromkeys(CRF_BACKENDS, 0.0)
    for variant in variants:
        model = load_model(os.path.join(work, "seg", variant, "model.keras"))
        out[variant] = {}
        for backend in CRF_BACKENDS:
            start = time.perf_counter()
            result = evaluate_model(model, os.path.join(work, "data"), "val", crf=CRFParams(),
                                    crf_backend=backend)
            seconds[backend] += time.perf_counter() - start
            out[variant][backend] = round(100.0 * float(result.mean_iou), 2)
    gaps = [row["keras"] - row["densecrf"] for row in out.values()]
    out["mean_keras_minus_densecrf"] = round(float(np.mean(gaps)), 2)
    out["max_abs_gap"] = round(float(np.max(np.abs(gaps))), 2)
    out["evaluation_seconds"] = {backend: round(value, 1) for backend, value in seconds.items()}
    return out


def worker(count):
    """Child process (``--worker``): the keras CRF's timings and labels on this Keras backend."""
    voc = voc_cases()
    out = {}
    for name, pairs in workloads(count, voc).items():
        labels, seconds = keras_labels(pairs)
        out[name] = {"seconds": seconds, "labels": [l.tolist() for l in labels]}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=6, help="images per timing")
    parser.add_argument("--demo", default=None, help="a finished `wsk demo` work directory")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.images)))
        return
    if args.images == 0:    # the demo's mIoU only
        print(json.dumps({"demo_val_crf_miou": demo_crf_miou(args.demo) if args.demo else "no --demo"}, indent=1))
        return
    voc = voc_cases()
    loads = workloads(args.images, voc)
    jax = subprocess.run([sys.executable, __file__, "--worker", "--images", str(args.images)],
                         env=dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3"),
                         capture_output=True, text=True, check=True)
    jax = json.loads(jax.stdout.strip().splitlines()[-1])
    report = {}
    for name, pairs in loads.items():
        reference, dense_s = densecrf_pool(pairs)
        labels, keras_s = keras_labels(pairs)
        agree = np.mean([np.mean(a == b) for a, b in zip(labels, reference)])
        jax_agree = np.mean([np.mean(np.array(a) == b) for a, b in zip(jax[name]["labels"], reference)])
        report[name] = {"densecrf_2proc_s_per_image": round(dense_s, 4),
                        "keras_tf_s_per_image": round(keras_s, 4),
                        "keras_jax_s_per_image": round(jax[name]["seconds"], 4),
                        "tf_throughput_over_densecrf": round(dense_s / keras_s, 3),
                        "jax_throughput_over_densecrf": round(dense_s / jax[name]["seconds"], 3),
                        "pixel_agreement_tf": round(float(agree), 5),
                        "pixel_agreement_jax": round(float(jax_agree), 5)}
    if voc:
        pairs = [(image, p) for _, image, _, p in voc]
        masks = [mask for _, _, mask, _ in voc]
        reference, _ = densecrf_pool(pairs)
        labels, _ = keras_labels(pairs)
        report["voc_sample_corrupted"] = {
            "images": len(voc),
            "miou_unaries": round(miou(masks, [p.argmax(-1) for _, p in pairs]), 2),
            "miou_densecrf": round(miou(masks, reference), 2),
            "miou_keras": round(miou(masks, labels), 2),
            "pixel_agreement": round(float(np.mean([np.mean(a == b) for a, b in zip(labels, reference)])), 5)}
    else:
        report["voc_sample_corrupted"] = f"skipped: {VOC_SAMPLE} is absent"
    report["demo_val_crf_miou"] = ("skipped: no demo work directory given" if args.demo is None
                                   else demo_crf_miou(args.demo))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
