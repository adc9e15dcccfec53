"""Throughput of DeepLab-LargeFOV (321 x 321 crops) and HCP (10 hypotheses of 224 x 224) on the
current Keras backend: forward images/s and training-step images/s (Eq. 4 loss, Caffe SGD).

Runs on any backend and needs no TensorFlow on JAX, e.g.::

    KERAS_BACKEND=jax python benchmarks/bench_models.py --batch-size 8 --width 1.0
    python benchmarks/bench_models.py --model deeplab --batch-size 2 --width 0.125 --steps 3

An HCP "image" is one sample of ``--hypotheses`` crops. The first (compiling) call of each
kind is excluded from the timing.
"""

import argparse
import json
import sys
import time

import numpy as np


def _device():
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return ", ".join(str(d) for d in jax.devices())
    if keras.backend.backend() == "torch":
        import torch

        return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return "default"


def _time(fn, steps):
    fn()                                  # compile / warm up
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return time.perf_counter() - start


def bench(name, model, loss, inputs, targets, steps, lr_last):
    """Forward and training-step throughput (images/s) of ``model`` on one fixed batch."""
    from wsk.optimizers import CaffeSGD, deeplab_multipliers

    model.compile(CaffeSGD(0.001, multipliers=deeplab_multipliers("fc8", lr_last)), loss)
    batch = len(inputs)
    forward = _time(lambda: np.asarray(model.predict_on_batch(inputs)), steps)
    train = _time(lambda: float(np.asarray(model.train_on_batch(inputs, targets))), steps)
    return {"model": name, "batch_size": batch, "steps": steps,
            "forward_images_per_s": batch * steps / forward,
            "train_images_per_s": batch * steps / train}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("deeplab", "hcp", "both"), default="both")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=10, help="timed steps after one warm-up")
    parser.add_argument("--crop", type=int, default=321, help="DeepLab input side")
    parser.add_argument("--hypotheses", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=224, help="HCP hypothesis side")
    parser.add_argument("--json", action="store_true", help="print one JSON line per model")
    args = parser.parse_args(argv)

    import keras

    from wsk.losses import SoftMultiLabelCrossEntropy
    from wsk.models import deeplab_largefov, deeplab_output_size, hcp

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    header = {"backend": keras.backend.backend(), "device": _device(), "width": args.width}
    results = []
    if args.model in ("deeplab", "both"):
        side = deeplab_output_size(args.crop)
        model = deeplab_largefov(num_classes=21, width=args.width)
        x = rng.normal(0, 60, (args.batch_size, args.crop, args.crop, 3)).astype(np.float32)
        y = rng.uniform(0, 1, (args.batch_size, side, side, 21)).astype(np.float32)
        results.append(bench(f"deeplab_largefov {args.crop}x{args.crop}", model,
                             SoftMultiLabelCrossEntropy(), x, y, args.steps, 10))
        del model
    if args.model in ("hcp", "both"):
        s, m = args.image_size, args.hypotheses
        model = hcp(num_classes=20, hypotheses=m, image_size=s, width=args.width)
        x = rng.normal(0, 60, (args.batch_size, m, s, s, 3)).astype(np.float32)
        y = (rng.uniform(0, 1, (args.batch_size, 20)) < 0.15).astype(np.float32)
        y[:, 0] = 1
        results.append(bench(f"hcp {m}x{s}x{s}", model, SoftMultiLabelCrossEntropy(from_logits=False),
                             x, y, args.steps, 100))
    for result in results:
        if args.json:
            print(json.dumps({**header, **result}))
        else:
            print(f"{result['model']:<28} backend={header['backend']} width={args.width} "
                  f"batch={result['batch_size']}: forward {result['forward_images_per_s']:.2f} "
                  f"images/s, train step {result['train_images_per_s']:.2f} images/s")
    print(f"device: {header['device']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
