"""``wsk run``: every entry of ``wsk.stage_list.STAGES`` in order over one work directory, then the
report: the pseudo-label quality report and Table 1 where ground truth exists, the best variant
exported. ``wsk demo`` is "generate a dataset, then this".

Each stage is resumable, so rerunning the same command continues where it stopped; one line per
stage says what it did, and ``WORK/run-summary.json`` keeps the results and each stage's time.
"""

import contextlib
import dataclasses
import os
import time

from wsk.io import save_json
from wsk.stage_list import PSEUDO_STAGES, run_stage, run_stages, stages_until
from wsk.stages import worker_pool


class Timer:
    """Wall-clock seconds of each named step, in the order they ran."""

    def __init__(self):
        self.seconds = {}

    @contextlib.contextmanager
    def __call__(self, name):
        start = time.perf_counter()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def run_all(run, until=None, ablation=False, printer=print, timer=None):
    """Run the stages of ``run`` (a ``wsk.run_record.Run``) up to ``until``; with ``ablation`` the
    pseudo-label stages again without refinement (Table 3). Prints and returns the summary dict;
    ``timer`` (a ``Timer``) may hold earlier steps' times to report with the stages'."""
    timer = timer or Timer()
    stages = stages_until(until)
    with worker_pool(run.jobs) as pool:
        for number, stage in enumerate(stages, start=1):
            printer(f"[{number}/{len(stages)}] {stage.name} ({stage.section or 'wsk'}) -> WORK/{stage.outputs}")
            with timer(stage.name):
                report = run_stage(stage, run, pool)
            printer(f"      {report.summary()}")
            report.raise_if_failed()
            if ablation and stage.name == PSEUDO_STAGES[-1]:
                noref = dataclasses.replace(run, refine=False)
                with timer("pseudo-labels, no refinement"):
                    run_stages(PSEUDO_STAGES, noref, pool)
    return report_run(run, stages, timer, printer)


def report_run(run, stages, timer, printer=print):
    """Print what the run measured (quality report, pseudo-labels, Table 1, export) and write
    ``WORK/run-summary.json``."""
    from wsk.evaluation_stage import best_variant, evaluation_results, export_folder
    from wsk.metrics import evaluation_report, format_table
    from wsk.pseudo.report import format_quality, has_ground_truth, pseudo_label_results, quality_report

    names = {stage.name for stage in stages}
    summary = {"recipe": run.recipe.name, "split": run.split, "val_split": run.val_split}
    train = run.dataset()
    pseudo, seg = [], {}
    with timer("reports"):
        if "rough masks" in names and has_ground_truth(train):
            summary["quality"] = quality_report(train, run.work, refine=run.refine)
            printer(format_quality(summary["quality"]))
            pseudo = pseudo_label_results(train, run.work)
            summary["pseudo"] = evaluation_report(train, pseudo)
        if "evaluation" in names:
            seg = evaluation_results(run)
            if seg:
                summary["segmentation"] = evaluation_report(run.dataset(run.val_split), list(seg.values()))
    printer(summary_table(pseudo, seg, timer.seconds, run.classes, format_table,
                          pseudo_table="quality" not in summary))   # the quality report shows it
    if "export" in names:
        variant, why = best_variant(run)
        folder = export_folder(run, variant)
        summary["export"] = {"variant": variant, "why": why, "savedmodel": folder}
        printer(f"\nexported {variant} ({why}): {folder}\n"
                f"register it: wsk zoo add NAME {run.workdir.seg_model(variant)}")
    summary["times"] = timer.seconds
    save_json(os.path.join(run.work, "run-summary.json"), summary)
    printer(f"(all numbers measured in this run; details in {os.path.join(run.work, 'run-summary.json')})")
    return summary


def summary_table(pseudo, seg_results, seconds, class_names, format_table, pseudo_table=True):
    """The printout: per-class IoU (Table 1 layout), one row per result, then each step's time."""
    lines = []
    if pseudo and pseudo_table:
        lines += ["", "Pseudo-labels on the training set (IoU %, Table 3 style):",
                  format_table({r.name: r.iou for r in pseudo}, class_names)]
    if seg_results:
        lines += ["", "Segmentation on val (IoU %, Table 1 layout):",
                  format_table({name: r.iou for name, r in seg_results.items()}, class_names)]
    if pseudo or seg_results:
        lines += ["", f"{'result':<44s}{'mIoU %':>8s}"]
        lines += [f"{'pseudo-labels: ' + r.name:<44s}{100 * r.mean_iou:>8.1f}" for r in pseudo]
        lines += [f"{'val: ' + name:<44s}{100 * r.mean_iou:>8.1f}" for name, r in seg_results.items()]
    lines += ["", f"{'stage':<44s}{'seconds':>8s}"]
    lines += [f"{name:<44s}{s:>8.1f}" for name, s in seconds.items()]
    lines.append(f"{'total':<44s}{sum(seconds.values()):>8.1f}")
    return "\n".join(lines)
