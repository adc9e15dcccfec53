"""``wsk pseudo``: proposal scoring, cross-image refinement, localization maps, rough masks."""

import click

from wsk.cli.options import data_options, open_cli_run, pop_data, recipe_option
from wsk.recipes import ORDERS, SCORE_MODES


@click.command("pseudo")
@data_options
@click.argument("work", type=click.Path(file_okay=False))
@click.option("--split", default=None,
              help="Split of DATA to label [default: WORK/run.json's; paper_train on VOC (§4.1), else train].")
@click.option("--refine/--no-refine", default=True, show_default=True,
              help="Cross-image refinement (Eq. 1); --no-refine is Table 3's ablation, "
                   "written under WORK/noref.")
@click.option("--mode", type=click.Choice(SCORE_MODES), default=None,
              help="Scoring: crop each proposal's box (the paper), pool boxes from one trunk pass "
                   "(fast), or show HCP the whole image with all but the proposal's segment erased "
                   "(masked) [default: the recipe's].")
@recipe_option
@click.option("--refine-order", type=click.Choice(ORDERS), default=None,
              help="Which half of each image's candidates refinement keeps: those closest to the other "
                   "images' (tight proposals, the paper's intent), farthest (§3.2's literal "
                   "'descending order'), or closer to them than to the class's false alarms in the "
                   "images without it (contrast) [default: the recipe's: closest (paper), contrast (demo)].")
@click.option("--rough-crf/--no-rough-crf", default=None,
              help="A dense CRF over each rough mask, so that its edges follow the image's "
                   "[default: the recipe's: off in paper and demo (wsk.recipes: it raised the masks, "
                   "not the networks)].")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Worker processes for maps and masks [default: the cores available].")
@click.option("--report/--no-report", default=True, show_default=True,
              help="When ROOT has ground-truth masks, print and write the stage-by-stage quality "
                   "report (WORK/quality.json).")
def pseudo(work, split, refine, mode, recipe, refine_order, rough_crf, jobs, report, **kwargs):
    """Turn image-level labels into pseudo labels for the training images of DATA.

    Scores every proposal of WORK/proposals with the HCP model WORK/hcp/hcp.keras
    (WORK/scores), keeps the candidates above the threshold (each class's own, calibrated on the
    images without it, where the recipe says so) and refines them across images
    (WORK/refinement.npz, WORK/refined/), then writes localization maps (WORK/locmaps, Eq. 2) and rough
    masks (WORK/masks, palette PNGs, Eq. 5). Each step skips what is already done, so an
    interrupted run resumes; scores are shared with --no-refine. Where the images have
    ground-truth masks, a report shows how much each stage keeps of what the one before
    allowed (wsk.pseudo.report).
    """
    # deferred on purpose: `wsk --help` stays fast (the stages import TensorFlow)
    from wsk.stage_list import PSEUDO_STAGES, run_stages
    from wsk.stages import default_jobs, worker_pool

    run = open_cli_run(work, pop_data(kwargs), recipe=recipe, split=split, refine=refine,
                       overrides={"pseudo.score_mode": mode, "pseudo.refine_order": refine_order,
                                  "pseudo.rough_crf": rough_crf},
                       jobs=jobs or default_jobs())
    with worker_pool(run.jobs) as pool:
        reports = run_stages(PSEUDO_STAGES, run, pool)
    for stage_report in reports.values():
        click.echo(stage_report.summary())
    if report:
        from wsk.pseudo.report import format_quality, has_ground_truth, quality_report

        dataset = run.dataset()
        if has_ground_truth(dataset):
            click.echo(format_quality(quality_report(dataset, run.work, refine=refine)))


COMMANDS = [pseudo]
