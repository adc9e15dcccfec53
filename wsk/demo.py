"""``wsk demo``: the whole paper on a synthetic dataset that wsk generates, on CPU, in minutes.

It is "generate a dataset, then ``wsk run``" (``wsk.driver.run_all``), with the four variants
(AN_A, SN_A, AN_B, SN_B), the no-refinement ablation of Table 3, and the dense CRF: one code path
with any user's data. Every number printed is measured on this run's files; nothing is looked up.
"""

import os

from wsk.data.styles import get_style
from wsk.data.synthetic import generate_dataset
from wsk.driver import Timer, run_all
from wsk.recipes import VARIANTS
from wsk.run_record import open_run
from wsk.stages import default_jobs

VARIANT_ORDER = tuple(VARIANTS)   # AN_A, SN_A, AN_B, SN_B: the paper's Table 1 order


def run_demo(work, images=480, size=64, seed=0, jobs=None, recipe="demo", tiny=False, crf=True,
             verbose=1, printer=print, style="shapes", crf_backend="keras"):
    """Generate the synthetic dataset into ``WORK/data`` (``images``/``size``/``seed``/``style``),
    then run every stage into ``work``; returns the summary dict (``wsk.driver.report_run``).
    ``tiny`` uses the ``tiny`` recipe (one epoch per step: a smoke run, not a result)."""
    work = os.path.abspath(os.fspath(work))
    root = os.path.join(work, "data")
    timer = Timer()
    with timer("synthetic dataset"):
        if not os.path.exists(os.path.join(root, "classes.txt")):
            generate_dataset(root, num_images=images, size=size, seed=seed, style=get_style(style))
    run = open_run(work, root, recipe="tiny" if tiny else recipe, command={"command": "wsk demo", "params": {"images": images, "size": size, "seed": seed, "style": style,
                                                         "tiny": tiny, "crf": crf}},
                   jobs=jobs or default_jobs(), variants=VARIANT_ORDER, crf=crf, seed=seed, verbose=verbose,
                   crf_backend=crf_backend)
    summary = run_all(run, ablation=True, printer=printer, timer=timer)
    summary["dataset"] = {"images": images, "size": size, "seed": seed, "style": style}
    return summary
