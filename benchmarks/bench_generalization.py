"""Generalization: the whole pipeline on randomly drawn dataset styles it was never tuned on.

    python benchmarks/bench_generalization.py OUT [--recipe demo] [--quick] [--test-styles 3] [--commit HASH]
                                              [--crf-backend keras] [--jobs N]

Each style is drawn from a seed by ``wsk.data.style_sampler`` (shapes, textures, colours,
backgrounds, object scale), rendered in the VOC layout by ``generate_dataset`` (480 images at
64 px: 360 train + 120 val, as ``wsk demo``; ``--quick``: 160, 120 + 40) into
``OUT/<recipe>-<images>x<size>/style-<seed>/data`` and run through the stages of ``wsk run`` up
to the evaluation (``wsk.driver.run_all``: the four variants, without and with the dense CRF)
beside it. Reruns continue where they stopped.

* **Tuning styles** have the fixed seeds ``TUNING_SEEDS``. Every recipe decision is made on them,
  and so is this benchmark's one: the "best network" is the variant with the highest mean val mIoU
  (without CRF) over the tuning styles.
* **Test styles** (``--test-styles``, 3) get fresh seeds at each evaluation, derived from the
  current commit (``git rev-parse HEAD``; ``--commit`` reproduces a recorded evaluation), so that
  no decision can have seen them. The seeds used are printed.

Per style, stage by stage: the HCP val mAP of the saved model, the quality report
(``wsk.pseudo.report``: proposal ceiling, labels with a candidate, top proposal IoU, candidate
precision, localization maps and rough masks mIoU on the training set) and each variant's val mIoU
without and with the CRF, with per-class IoU. Printed and written to
``OUT/generalization-<commit>-<recipe>-<images>.json``: mean, standard deviation, min and max over
the test styles, the tuning styles' mean beside them, and the generalization targets
(``DONE_WHEN``) marked pass/fail. Classes differ between styles, so a class's mean is over the
test styles that have it (by name); background is a class of every style. "every variant: lowest
class mean" is the lowest such mean of any variant without CRF (the +CRF row is shown beside it).
(No plot: matplotlib is not a dependency.)

Sampler ranges (``wsk.data.style_sampler``'s constants; written before any tuning, never narrowed):

    classes per style        5
    unseen shapes per style  1 to 2, of hourglass, chevron, keyhole, arrow
    other shapes             the broad corpus's BROAD_SHAPES (23)
    textures                 one per class, all different, of the broad corpus's BROAD_TEXTURES (16)
    texture stretch          0.7 to 1.4
    texture contrast         0.5 to 1.0
    colour policies          shade, mixed
    background sources       clutter, photo, mixed
    photographs per style    2 to 6
    object scale low end     0.15 to 0.35
    object scale high end    0.6 to 1.0
    objects per image        1 to 3 (generate_dataset's plan)
    tuning seeds             1, 3, 10
"""

import csv
import json
import math
import os
import subprocess

import click
import numpy as np

from wsk.crf import CRF_BACKENDS
from wsk.data import style_sampler
from wsk.errors import WskError

QUICK_IMAGES, FULL_IMAGES, SIZE = 160, 480, 64
# the generalization targets (wsk's issue 22), over the test styles' means: (row, threshold)
DONE_WHEN = (("HCP val mAP", 0.85), ("pseudo-labels: rough masks", 55.0),
             ("pseudo-labels: lowest class mean", 30.0), ("best network", 50.0),
             ("every variant: lowest class mean", 15.0))


def git_commit():
    """The checkout's ``git rev-parse HEAD``."""
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=os.path.dirname(os.path.abspath(__file__)),
                              capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as error:
        raise WskError(f"cannot read the commit hash (git rev-parse HEAD): {error}; give --commit") from None
    return done.stdout.strip()


def hcp_val_map(workdir):
    """The val mAP of the saved HCP model: the better kept epoch of its two steps where the recipe
    keeps the best epoch (``wsk.training.hcp`` keeps the hypothesis step unless it lowered the mAP),
    else the hypothesis step's last epoch (``history.csv``)."""
    from wsk.training.callbacks import best_epoch
    from wsk.training.hcp import best_prefix

    kept = [best_epoch(best_prefix(workdir, step)) for step in ("image", "hypothesis")]
    if all(kept):
        return max(value for _, value in kept)
    for step in ("hypothesis", "image"):
        path = os.path.join(workdir.hcp_dir, "logs", step, "history.csv")
        if os.path.exists(path):
            with open(path, newline="", encoding="utf-8") as f:
                rows = [row for row in csv.DictReader(f) if row.get("val_mAP")]
            if rows:
                return float(rows[-1]["val_mAP"])
    return None


def run_style(out, seed, recipe, images, jobs, crf_backend, printer):
    """Draw, render and run style ``seed`` up to the evaluation (nothing is exported); returns its
    measurements (``style_result``)."""
    from wsk.data.synthetic import generate_dataset
    from wsk.demo import VARIANT_ORDER
    from wsk.driver import run_all
    from wsk.run_record import open_run

    draw = style_sampler.sample_style(seed)
    work = os.path.join(out, f"{recipe}-{images}x{SIZE}", f"style-{seed}")
    root = os.path.join(work, "data")
    if not os.path.exists(os.path.join(root, "classes.txt")):
        generate_dataset(root, num_images=images, size=SIZE, seed=seed, style=style_sampler.build_style(draw),
                         overwrite=True)
    run = open_run(work, root, recipe=recipe, jobs=jobs, variants=VARIANT_ORDER, crf=True, seed=0, verbose=0,
                   crf_backend=crf_backend,
                   command={"command": "bench_generalization.py", "params": {"seed": seed, "images": images}})
    summary = run_all(run, until="evaluation", printer=lambda line: printer(f"  [style {seed}] {line}"))
    return style_result(draw, summary, hcp_val_map(run.workdir))


def style_result(draw, summary, hcp_map):
    """One style's numbers (percent, mAP as a fraction): ``{"draw", "stages", "classes", "per_class"}``."""
    quality = summary["quality"]
    overall = quality["overall"]
    stages = {"HCP val mAP": hcp_map,
              "proposal ceiling": 100 * overall["proposal_ceiling_miou"],
              "labels with a candidate": 100 * overall["labels_with_candidate"],
              "top proposal IoU": 100 * overall["top_proposal_iou"],
              "candidate precision": 100 * overall["candidate_precision"]}
    per_class = {}
    for name in ("loc. maps", "rough masks"):
        if name in quality["pseudo_labels"]:
            stages[f"pseudo-labels: {name}"] = 100 * overall[f"{name} mIoU"]
            per_class[f"pseudo-labels: {name}"] = percent(quality["pseudo_labels"][name])
    for result in summary.get("segmentation", {}).get("results", []):
        stages[f"val: {result['name']}"] = 100 * result["miou"]
        per_class[f"val: {result['name']}"] = percent(result["iou"][c] for c in result["classes"])
    return {"draw": draw.to_dict(), "stages": stages, "classes": quality["class_names"], "per_class": per_class}


def percent(values):
    return [None if v is None else 100 * v for v in values]


def best_variant(results, variants):
    """The variant with the highest mean val mIoU (without CRF) over ``results`` (the tuning styles)."""
    means = {v: statistics([r["stages"].get(f"val: {v}") for r in results])["mean"] for v in variants}
    scored = [(m, v) for v, m in means.items() if m is not None]
    if not scored:
        raise WskError("no variant was evaluated on the tuning styles")
    return max(scored)[1]


def class_means(results, row):
    """``{class name: mean IoU over the styles that have it}`` of per-class row ``row``."""
    pooled = {}
    for r in results:
        for name, value in zip(r["classes"], r["per_class"].get(row, [])):
            if value is not None:
                pooled.setdefault(name, []).append(value)
    return {name: float(np.mean(v)) for name, v in pooled.items()}


def summary_rows(tuning, test, best):
    """``{row: {"tuning", "test": [...]}}``: each stage's values, the best network's and the
    lowest class means (the done-when's per-class conditions)."""
    names = []
    for r in tuning + test:
        names += [n for n in r["stages"] if n not in names]
    rows = {n: {"tuning": [r["stages"].get(n) for r in tuning], "test": [r["stages"].get(n) for r in test]}
            for n in names}
    for suffix in ("", "+CRF"):
        rows[f"best network{suffix}"] = dict(rows.get(f"val: {best}{suffix}", {"tuning": [], "test": []}))
    lowest = lambda results, row: min(class_means(results, row).values(), default=float("nan"))  # noqa: E731
    rows["pseudo-labels: lowest class mean"] = {
        "tuning": [lowest(tuning, "pseudo-labels: rough masks")], "test": [lowest(test, "pseudo-labels: rough masks")]}
    for suffix in ("", "+CRF"):
        variant_rows = sorted({n for r in tuning + test for n in r["per_class"]
                               if n.startswith("val: ") and n.endswith("+CRF") == bool(suffix)})
        rows[f"every variant{suffix}: lowest class mean"] = {
            kind: [min((lowest(results, n) for n in variant_rows), default=float("nan"))]
            for kind, results in (("tuning", tuning), ("test", test))}
    return rows


def statistics(values):
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "min": float(np.min(values)),
            "max": float(np.max(values)), "n": len(values)}


def table(rows):
    """The printed table: tuning mean, then test mean, std, min, max, threshold and pass/fail."""
    thresholds = dict(DONE_WHEN)
    lines = [f"{'stage':<42s}{'tuning':>8s}{'test':>8s}{'std':>7s}{'min':>7s}{'max':>7s}  done when",
             "-" * 98]
    for name, values in rows.items():
        digits = 3 if name == "HCP val mAP" else 1
        fmt = lambda v, w: f"{'-':>{w}s}" if v is None else f"{v:>{w}.{digits}f}"  # noqa: E731
        tune, test = statistics(values["tuning"]), statistics(values["test"])
        line = (f"{name:<42s}{fmt(tune['mean'], 8)}{fmt(test['mean'], 8)}{fmt(test['std'], 7)}"
                f"{fmt(test['min'], 7)}{fmt(test['max'], 7)}")
        if name in thresholds:
            ok = test["mean"] is not None and test["mean"] >= thresholds[name]
            line += f"  >= {thresholds[name]:g}: {'pass' if ok else 'FAIL'}"
        lines.append(line)
    return "\n".join(lines)


@click.command()
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--recipe", default="demo", show_default=True, help="The recipe every style runs.")
@click.option("--quick", is_flag=True, help=f"{QUICK_IMAGES} images per style instead of {FULL_IMAGES}.")
@click.option("--test-styles", type=click.IntRange(1), default=3, show_default=True)
@click.option("--commit", default=None, help="Derive the test seeds from this hash instead of HEAD's.")
@click.option("--jobs", type=click.IntRange(1), default=None, help="Worker processes (default: all cores).")
@click.option("--crf-backend", type=click.Choice(CRF_BACKENDS), default=CRF_BACKENDS[0], show_default=True,
              help="The dense CRF of the +CRF results (as wsk demo's).")
def main(out, recipe, quick, test_styles, commit, jobs, crf_backend):
    try:
        measure(out, recipe, quick, test_styles, commit, jobs, crf_backend)
    except WskError as error:
        raise click.ClickException(str(error)) from None


def measure(out, recipe, quick, test_styles, commit, jobs, crf_backend):
    from wsk.demo import VARIANT_ORDER
    from wsk.recipes import get_recipe
    from wsk.stages import default_jobs

    get_recipe(recipe)   # an unknown name fails before any work
    commit = commit or git_commit()
    images = QUICK_IMAGES if quick else FULL_IMAGES
    tuning_seeds, test_seeds = list(style_sampler.TUNING_SEEDS), style_sampler.fresh_seeds(commit, test_styles)
    print(f"tuning seeds: {' '.join(map(str, tuning_seeds))}")
    print(f"test seeds (from commit {commit}): {' '.join(map(str, test_seeds))}")
    results = {}
    for kind, seeds in (("tuning", tuning_seeds), ("test", test_seeds)):
        for seed in seeds:
            draw = style_sampler.sample_style(seed)
            print(f"{kind} style {seed}: shapes {', '.join(draw.shapes)}; textures {', '.join(draw.textures)}; "
                  f"{draw.background} background; {draw.colour_policy} colours; scale "
                  f"{draw.scale_range[0]:.2f}-{draw.scale_range[1]:.2f}", flush=True)
            results[seed] = run_style(out, seed, recipe, images, jobs or default_jobs(), crf_backend, print)
    tuning, test = [results[s] for s in tuning_seeds], [results[s] for s in test_seeds]
    best = best_variant(tuning, VARIANT_ORDER)
    rows = summary_rows(tuning, test, best)
    print(f"\nGeneralization, recipe {recipe!r}, {images} images of {SIZE} px per style; best network "
          f"(on the tuning styles): {best}; %, mAP as a fraction; test = {len(test_seeds)} fresh styles")
    print(table(rows))
    path = os.path.join(out, f"generalization-{commit[:12]}-{recipe}-{images}.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"commit": commit, "recipe": recipe, "images": images, "size": SIZE, "crf_backend": crf_backend,
                   "tuning_seeds": tuning_seeds, "test_seeds": test_seeds, "best_variant": best,
                   "done_when": dict(DONE_WHEN),
                   "rows": {n: {"tuning": statistics(v["tuning"]), "test": statistics(v["test"])}
                            for n, v in rows.items()},
                   "class_means": {kind: {row: class_means(rs, row)
                                          for row in sorted({n for r in rs for n in r["per_class"]})}
                                   for kind, rs in (("tuning", tuning), ("test", test))},
                   "styles": {str(s): dict(r, kind="tuning" if s in tuning_seeds else "test")
                              for s, r in results.items()}}, f, indent=1)
    print(f"written: {path}")


if __name__ == "__main__":
    main()
