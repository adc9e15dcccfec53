"""``wsk demo``: the whole paper on a synthetic dataset, on CPU, in minutes.

Stages (each resumable; rerunning the demo on the same work directory skips what is done):
synthetic dataset -> proposals -> HCP (two-step fine-tuning) -> pseudo-labels with and without
cross-image refinement -> the stage-by-stage quality report on the training set
(``wsk.pseudo.report``: proposal ceiling, candidates, pseudo-label mIoU) -> the four DeepLab-LargeFOV
variants (AN_A, SN_A, AN_B, SN_B) -> val mIoU without and with dense CRF -> one table.
Every number printed is measured on this run's files; nothing is looked up.
"""

import contextlib
import os
import time

from wsk.crf import CRFParams
from wsk.data.styles import get_style
from wsk.data.synthetic import generate_dataset
from wsk.data.voc import PAPER_TRAIN, VOCDataset
from wsk.io import save_json
from wsk.metrics import evaluation_report, format_table
from wsk.predict import evaluate_model
from wsk.proposals import run_proposals
from wsk.pseudo.stage import run_pseudo
from wsk.pseudo.report import format_quality, pseudo_label_results, quality_report
from wsk.recipes import VARIANTS, get_recipe
from wsk.stages import default_jobs
from wsk.training import train_hcp, train_segmentation

VARIANT_ORDER = tuple(VARIANTS)   # AN_A, SN_A, AN_B, SN_B: the paper's Table 1 order


class _Timer:
    """Wall-clock time of each named stage, in the order they ran."""

    def __init__(self):
        self.seconds = {}

    @contextlib.contextmanager
    def __call__(self, name):
        start = time.perf_counter()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def run_demo(work, images=480, size=64, seed=0, jobs=None, recipe="demo", tiny=False, crf=True,
             verbose=1, printer=print, style="shapes"):
    """Run every stage into ``work`` and return ``{"pseudo": [...], "segmentation": [...], "times": {...}}``.

    ``images``/``size``/``seed``/``style`` define the synthetic dataset; ``tiny`` uses the ``tiny`` recipe
    (one epoch per step: a smoke run, not a result). Prints the final table with ``printer``.
    """
    recipe = get_recipe("tiny" if tiny else recipe) if isinstance(recipe, str) else recipe
    jobs = jobs or default_jobs()
    work = os.fspath(work)
    root = os.path.join(work, "data")
    timer = _Timer()

    with timer("synthetic dataset"):
        if not os.path.exists(os.path.join(root, "classes.txt")):
            generate_dataset(root, num_images=images, size=size, seed=seed, style=get_style(style))
    with timer("proposals"):
        run_proposals(root, work, split=PAPER_TRAIN, jobs=jobs, max_proposals=recipe.pseudo.max_proposals,
                      seed=seed).raise_if_failed()
    with timer("HCP training"):
        hcp_model = train_hcp(root, work, recipe, verbose=verbose, printer=printer)
    for refine in (True, False):
        with timer("pseudo-labels" if refine else "pseudo-labels, no refinement"):
            run_pseudo(root, work, split=PAPER_TRAIN, refine=refine, config=recipe.pseudo, jobs=jobs,
                       model=hcp_model)
    with timer("pseudo-label quality report"):
        train_set = VOCDataset(root, PAPER_TRAIN)
        quality = quality_report(train_set, work, refine=True)
        pseudo = pseudo_label_results(train_set, work)
    printer(format_quality(quality))

    val = VOCDataset(root, "val")
    seg_results = {}
    for variant in VARIANT_ORDER:
        with timer(f"train {variant}"):
            model = train_segmentation(root, work, variant, recipe, verbose=verbose, printer=printer)
        with timer(f"eval {variant}"):
            seg_results[variant] = evaluate_model(model, root, "val", jobs=jobs, name=variant)
        if crf:
            with timer(f"eval {variant} + CRF"):
                seg_results[f"{variant}+CRF"] = evaluate_model(model, root, "val", crf=CRFParams(), jobs=jobs,
                                                               name=f"{variant}+CRF")

    report = {
        "recipe": recipe.name, "dataset": {"images": images, "size": size, "seed": seed, "style": style},
        "pseudo": evaluation_report(train_set, pseudo), "quality": quality,
        "segmentation": evaluation_report(val, list(seg_results.values())),
        "times": timer.seconds,
    }
    save_json(os.path.join(work, "demo.json"), report)
    printer(summary_table(pseudo, seg_results, timer.seconds, val.class_names, format_table))
    printer(f"(all numbers measured in this run; details in {os.path.join(work, 'demo.json')})")
    return report


def summary_table(pseudo, seg_results, seconds, class_names, format_table):
    """The demo's printout: per-class IoU (Table 1 layout), then one row per result with its time."""
    lines = ["", "Pseudo-labels on the training set (IoU %, Table 3 style):",
             format_table({r.name: r.iou for r in pseudo}, class_names), "",
             "Segmentation on val (IoU %, Table 1 layout):",
             format_table({name: r.iou for name, r in seg_results.items()}, class_names), "",
             f"{'result':<44s}{'mIoU %':>8s}"]
    for r in pseudo:
        lines.append(f"{'pseudo-labels: ' + r.name:<44s}{100 * r.mean_iou:>8.1f}")
    for name, r in seg_results.items():
        lines.append(f"{'val: ' + name:<44s}{100 * r.mean_iou:>8.1f}")
    lines += ["", f"{'stage':<44s}{'seconds':>8s}"]
    lines += [f"{name:<44s}{s:>8.1f}" for name, s in seconds.items()]
    lines.append(f"{'total':<44s}{sum(seconds.values()):>8.1f}")
    return "\n".join(lines)
