"""Does a trained network reproduce its pseudo-labels? Per class, on its own training images.

    python benchmarks/bench_soft_targets.py WORK [WORK ...] [--variant AN_A] [--images 200]

A class present in the pseudo-labels and missing from the network is a training problem, not a
pseudo-label one. For each class, over its ground-truth pixels on the first ``--images`` training
images of WORK, this prints:

* the mean probability the targets give the class there (``*_A``: the localization maps, normalised
  across channels as Eq. 4 takes them; ``*_B``: the rough masks, 1 or 0) and the network's softmax;
* the share of those pixels where the class beats background, in the targets and in the network;
* the IoU with the ground truth of the targets' argmax and of the network's labels.

A class whose targets win its pixels and whose network does not lost its margin in training (what
``SegRecipe.target_power`` and ``SegRecipe.loss_on_pixels`` address for Network_A; ``wsk.recipes``).
A WORK needs a trained ``seg/<variant>`` model, its targets and a dataset with ground-truth masks
(``wsk run``'s, ``wsk demo``'s or ``bench_generalization.py``'s work directories).
"""

import argparse

import numpy as np

from wsk.io import load_npz, read_label_png
from wsk.metrics import confusion_matrix, iou_per_class
from wsk.models.inference import segment_photos
from wsk.models.saving import load_model
from wsk.pseudo.localization import normalised_maps
from wsk.recipes import get_variant
from wsk.run_record import open_run


def target_probabilities(workdir, variant, image_id, num_classes):
    """``(C, H, W)`` float32: the variant's training target of one image, as probabilities."""
    if get_variant(variant).target == "soft":
        return normalised_maps(load_npz(workdir.locmap(image_id), required=("maps",))["maps"])
    mask = read_label_png(workdir.mask(image_id))
    return (mask[None] == np.arange(num_classes).reshape(-1, 1, 1)).astype(np.float32)


def measure(work, variant, images):
    """Per class: pixels, mean target and network probability, their win shares, and both IoUs."""
    run = open_run(work, write=False)
    dataset = run.dataset()
    classes = len(dataset.class_names)
    model = load_model(run.workdir.seg_model(variant))
    sums = np.zeros((classes, 5))          # pixels, target p, network p, target wins, network wins
    cm_target = np.zeros((classes, classes), np.int64)
    cm_network = np.zeros((classes, classes), np.int64)
    for image_id in list(dataset.ids)[:images]:
        truth = read_label_png(dataset.mask_path(image_id)).astype(np.int64)
        target = target_probabilities(run.workdir, variant, image_id, classes)
        labels, probabilities = segment_photos(model, dataset.image(image_id)[None])
        labels = np.asarray(labels)[0]
        probabilities = np.asarray(probabilities)[0].transpose(2, 0, 1)
        if probabilities.shape[1:] != truth.shape:
            raise SystemExit(f"{work}: {image_id}: the network's scores are {probabilities.shape[1:]}, "
                             f"the image {truth.shape}; this benchmark takes images within the network's scale")
        cm_target += confusion_matrix(truth, target.argmax(axis=0), classes)
        cm_network += confusion_matrix(truth, labels, classes)
        for k in np.unique(truth[truth < classes]):
            if k == 0:
                continue
            pixels = truth == k
            sums[k] += (pixels.sum(), target[k][pixels].sum(), probabilities[k][pixels].sum(),
                        (target[k] > target[0])[pixels].sum(), (probabilities[k] > probabilities[0])[pixels].sum())
    return dataset.class_names, sums, iou_per_class(cm_target), iou_per_class(cm_network)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("works", nargs="+", metavar="WORK")
    parser.add_argument("--variant", default="AN_A")
    parser.add_argument("--images", type=int, default=200)
    args = parser.parse_args()
    for work in args.works:
        names, sums, iou_target, iou_network = measure(work, args.variant, args.images)
        print(f"{work} ({args.variant}, first {args.images} training images)")
        print(f"  {'class':12s} {'pixels':>7s} {'target p':>9s} {'net p':>6s} {'target wins':>12s} "
              f"{'net wins':>9s} {'IoU target':>11s} {'IoU net':>8s}")
        for k in range(1, len(names)):
            count = max(sums[k, 0], 1)
            print(f"  {names[k]:12s} {int(sums[k, 0]):7d} {sums[k, 1] / count:9.2f} {sums[k, 2] / count:6.2f} "
                  f"{sums[k, 3] / count:12.0%} {sums[k, 4] / count:9.0%} {100 * iou_target[k]:11.1f} "
                  f"{100 * iou_network[k]:8.1f}")


if __name__ == "__main__":
    main()
