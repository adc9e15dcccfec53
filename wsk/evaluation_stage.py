"""The last two stages of ``wsk run`` (``wsk.stage_list``): Table 1 on the validation split, and
the best variant exported.

* **evaluation** (§4.3): every trained variant on the validation split, without and with the dense
  CRF, where that split has ground truth; each result is kept in ``WORK/eval/<name>.json`` with the
  stamp of the model it measured, so a rerun only measures what changed.
* **export**: the best variant — the highest val mIoU (without CRF: what the exported network
  computes) where there is ground truth, else the recipe's declared variant — as a SavedModel in
  ``WORK/export/<variant>/``, ready for ``wsk zoo add``.
"""

import numpy as np

from wsk import storage
from wsk.errors import WskError
from wsk.io import file_stamp, load_json, save_json
from wsk.metrics import EvalResult
from wsk.stages import StageReport


def trained_variants(run):
    """The variants this run trains (its ``--variants``, else the recipe's)."""
    return tuple(run.variants or (run.recipe.variant,))


def _model_path(run, variant):
    from wsk.training.segmentation import segmentation_name

    return run.workdir.seg_model(segmentation_name(variant, run.refine))


def validation_set(run):
    """The validation split when every image of it has a ground-truth mask, else None."""
    try:
        val = run.dataset(run.val_split)
    except WskError:
        return None
    if not val.ids or not all(val.has_mask(i) for i in val.ids):
        return None
    return val


def _result_name(run, variant, crf):
    from wsk.training.segmentation import segmentation_name

    return segmentation_name(variant, run.refine) + ("+CRF" if crf else "")


def stored_result(run, name, made_from):
    """The ``EvalResult`` kept for ``name``, or None when absent or not ``made_from`` (``_made_from``)."""
    path = run.workdir.eval_json(name)
    if not storage.exists(path):
        return None
    data = load_json(path)
    if data.get("made_from") != made_from:
        return None
    return EvalResult(data["name"], tuple(data["class_names"]), np.asarray(data["matrix"], np.int64))


def _made_from(run, model_path):
    """What a result is measured from: the model file, the split, and the scale the model ran at (the
    one it trained at, its description's ``max_side``)."""
    from wsk.zoo import recorded_max_side

    return {"model": file_stamp(model_path), "split": run.val_split, "max_side": recorded_max_side(model_path)}


def evaluation_results(run):
    """``{name: EvalResult}`` of the trained variants (and +CRF) measured so far, in Table 1 order."""
    results = {}
    for variant in trained_variants(run):
        made_from = _made_from(run, _model_path(run, variant))   # the model's description, read once
        for crf in (False, True):
            name = _result_name(run, variant, crf)
            result = stored_result(run, name, made_from)
            if result is not None:
                results[name] = result
    return results


def evaluate_variants(run):
    """The evaluation stage (module docstring); a ``StageReport`` of the results measured."""
    from wsk.crf import CRFParams
    from wsk.models.saving import load_model
    from wsk.predict import evaluate_model

    report = StageReport("evaluation")
    if validation_set(run) is None:
        report.note = f"skipped: no ground-truth mask for every image of {run.val_split!r}"
        return report
    for variant in trained_variants(run):
        path = _model_path(run, variant)
        model, made_from = None, _made_from(run, path)
        for crf in ((False, True) if run.crf else (False,)):
            name = _result_name(run, variant, crf)
            if stored_result(run, name, made_from) is not None:
                report.skipped.append(name)
                continue
            model = model or load_model(path)
            result = evaluate_model(model, run.source, run.val_split, crf=CRFParams() if crf else None,
                                    jobs=run.jobs, name=name, crf_backend=run.crf_backend,
                                    max_side=made_from["max_side"], batch_size=None)
            save_json(run.workdir.eval_json(name), {
                "name": name, "class_names": list(result.class_names), "matrix": result.matrix.tolist(),
                "miou": float(result.mean_iou), "made_from": made_from})
            report.done.append(name)
    return report


def best_variant(run):
    """``(variant, why)``: the highest val mIoU without CRF, else the recipe's declared variant."""
    results = evaluation_results(run)
    scored = [(results[_result_name(run, v, False)].mean_iou, v) for v in trained_variants(run)
              if _result_name(run, v, False) in results]
    if scored:
        miou, variant = max(scored)
        return variant, f"best val mIoU {100 * miou:.1f} on {run.val_split!r}"
    variant = run.recipe.variant if run.recipe.variant in trained_variants(run) else trained_variants(run)[0]
    return variant, f"the recipe's variant (no validation ground truth in {run.val_split!r})"


def export_folder(run, variant):
    return run.workdir.path("export", variant)


def export_best(run):
    """The export stage (module docstring); its ``StageReport`` names the exported variant."""
    from wsk.export import export

    variant, why = best_variant(run)
    model_path = _model_path(run, variant)
    out = export_folder(run, variant)
    record = run.workdir.path("export", f"{variant}.json")
    made_from = {"model": file_stamp(model_path), "why": why}
    report = StageReport("export")
    if storage.exists(out) and storage.exists(record) and load_json(record).get("made_from") == made_from:
        report.skipped.append(variant)
        return report
    export(model_path, out, overwrite=True)
    save_json(record, {"variant": variant, "model": model_path, "savedmodel": out, "made_from": made_from})
    report.done.append(variant)
    return report
