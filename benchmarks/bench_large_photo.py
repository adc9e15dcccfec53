"""A phone photo through ``wsk predict --crf``: peak memory and time (issue 23, photos of any size).

    .venv/bin/python benchmarks/bench_large_photo.py [--width 1.0] [--size 4000x3000] [--max-side N]

Builds a DeepLab-LargeFOV of the given width (1.0: the paper's) with 21 classes and **random
weights** (memory and time do not depend on the weights), saves it as ``.keras`` without a
description (so ``wsk predict`` runs at its default ``max_side``, the paper's 500 px), makes a
photo of ``--size`` (a VOC-sample photo scaled up when ../shared/voc-sample is there, else a
smooth synthetic one) and runs ``wsk predict MODEL PHOTO --out DIR --crf --jobs 1`` in a child
process. Reports the child's peak resident memory (``resource.getrusage(RUSAGE_CHILDREN)``, the
largest of the children this script waited for: only that one), its wall time, and the size of
the label PNG it wrote, which must be the photo's. Prints one JSON line; ``--json FILE`` also
writes it. The issue's target: under 3 GB peak RSS for 4000 x 3000 on CPU.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOC_SAMPLE = os.path.join(os.path.dirname(REPO), "shared", "voc-sample")
CLASSES = 21
TARGET_BYTES = 3 * 2**30


def make_photo(path, width, height):
    """A JPEG of ``width x height``: the first VOC-sample photo scaled up, else smooth gradients."""
    folder = os.path.join(VOC_SAMPLE, "JPEGImages")
    photos = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    if photos:
        with Image.open(os.path.join(folder, photos[0])) as photo:
            image = photo.convert("RGB").resize((width, height), Image.BICUBIC)
        source = f"voc-sample/{photos[0]} scaled up"
    else:
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        pixels = np.stack([255 * xs / width, 255 * ys / height, 128 + 100 * np.sin(xs / 300 + ys / 200)], -1)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        source = "synthetic gradients"
    image.save(path, quality=90)
    return source


def make_model(path, width):
    """A random-weight DeepLab-LargeFOV of ``width`` with 21 classes, saved at ``path`` (no sidecar)."""
    from wsk.models import deeplab_largefov

    deeplab_largefov(num_classes=CLASSES, width=width, backbone_weights=None).save(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--size", default="4000x3000", help="WIDTHxHEIGHT of the photo")
    parser.add_argument("--max-side", type=int, default=None, help="wsk predict --max-side (default: its own)")
    parser.add_argument("--no-crf", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="wsk-bench-large-") as tmp:
        model, photo, out = (os.path.join(tmp, name) for name in ("model.keras", "photo.jpg", "out"))
        source = make_photo(photo, width, height)
        subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); "
                        f"import bench_large_photo as b; b.make_model({model!r}, {args.width!r})"],
                       check=True, cwd=REPO)
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        command = [sys.executable, "-m", "wsk.cli", "predict", model, photo, "--out", out, "--jobs", "1"]
        command += [] if args.no_crf else ["--crf", "--crf-backend", "keras"]
        command += [] if args.max_side is None else ["--max-side", str(args.max_side)]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        seconds = time.perf_counter() - start
        if done.returncode:
            sys.exit(f"wsk predict failed:\n{done.stderr[-3000:]}")
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024   # KiB on Linux
        if peak <= before * 1024:
            sys.exit("the model-building child used more memory than wsk predict: peak not measured")
        with Image.open(os.path.join(out, "photo.png")) as labels:
            label_size = list(labels.size)
    result = {"photo": [width, height], "photo_source": source, "network_width": args.width,
              "weights": "random", "crf": not args.no_crf, "max_side": args.max_side or "wsk predict's default",
              "seconds": round(seconds, 1), "peak_rss_gb": round(peak / 2**30, 3),
              "labels_size": label_size, "labels_at_photo_size": label_size == [width, height],
              "under_3_gb": peak < TARGET_BYTES}
    print(json.dumps(result))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
