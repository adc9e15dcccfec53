"""``wsk pseudo``: proposal scoring, cross-image refinement, localization maps, rough masks."""

import dataclasses

import click

from wsk.recipes import ORDERS, RECIPES, SCORE_MODES


@click.command("pseudo")
@click.argument("root", type=click.Path(file_okay=False))
@click.argument("work", type=click.Path(file_okay=False))
@click.option("--split", default="paper_train", show_default=True,
              help="Image list of ROOT to label (paper_train: the paper's training set, §4.1).")
@click.option("--refine/--no-refine", default=True, show_default=True,
              help="Cross-image refinement (Eq. 1); --no-refine is Table 3's ablation, "
                   "written under WORK/noref.")
@click.option("--mode", type=click.Choice(SCORE_MODES), default=None,
              help="Scoring: crop each proposal's box (the paper), pool boxes from one trunk pass "
                   "(fast), or show HCP the whole image with all but the proposal's segment erased "
                   "(masked) [default: the recipe's].")
@click.option("--recipe", type=click.Choice(list(RECIPES)), default="paper", show_default=True,
              help="Recipe giving the thresholds, refinement order and scoring mode.")
@click.option("--refine-order", type=click.Choice(ORDERS), default=None,
              help="Which half of each image's candidates refinement keeps: those closest to the other "
                   "images' (tight proposals, the paper's intent) or farthest (§3.2's literal "
                   "'descending order') [default: the recipe's, closest].")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Worker processes for maps and masks [default: the cores available].")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Proposals per HCP batch.")
@click.option("--report/--no-report", default=True, show_default=True,
              help="When ROOT has ground-truth masks, print and write the stage-by-stage quality "
                   "report (WORK/quality.json).")
def pseudo(root, work, split, refine, mode, recipe, refine_order, jobs, batch_size, report):
    """Turn image-level labels into pseudo labels for the images of a split of ROOT.

    Scores every proposal of WORK/proposals with the HCP model WORK/hcp/hcp.keras
    (WORK/scores), keeps the candidates above 0.5 and refines them across images
    (WORK/refined.json), then writes localization maps (WORK/locmaps, Eq. 2) and rough
    masks (WORK/masks, palette PNGs, Eq. 5). Each step skips what is already done, so an
    interrupted run resumes; scores are shared with --no-refine. Where the images have
    ground-truth masks, a report shows how much each stage keeps of what the one before
    allowed (wsk.pseudo.report).
    """
    # deferred on purpose: `wsk --help` stays fast (the stages import TensorFlow)
    from wsk.pseudo.stage import run_pseudo
    from wsk.recipes import get_recipe
    from wsk.stages import default_jobs

    config = get_recipe(recipe).pseudo
    if refine_order:
        config = dataclasses.replace(config, refine_order=refine_order)
    reports = run_pseudo(root, work, split=split, refine=refine, mode=mode, config=config,
                         jobs=jobs or default_jobs(),
                         batch_size=batch_size)
    for stage_report in reports.values():
        click.echo(stage_report.summary())
    if report:
        # deferred on purpose: `wsk --help` stays fast (the stages import TensorFlow)
        from wsk.data.voc import VOCDataset
        from wsk.pseudo.report import format_quality, has_ground_truth, quality_report

        dataset = VOCDataset(root, split)
        if has_ground_truth(dataset):
            click.echo(format_quality(quality_report(dataset, work, refine=refine)))


COMMANDS = [pseudo]
