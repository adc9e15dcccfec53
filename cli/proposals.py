"""``wsk proposals``: generate segment proposals, import MCG proposals, measure their quality."""

import click

from wsk.cli.options import data_options, open_cli_run, pop_data, recipe_option, view_run
from wsk.errors import WskError
from wsk.recipes import RECIPES


def _finish(report):
    """Print a stage summary and list every failure with its file; fail when any image failed."""
    click.echo(report.summary())
    for _, message in report.failed:
        click.echo(f"  failed: {message}", err=True)
    if report.failed:
        raise WskError(f"{len(report.failed)} image(s) failed (listed above); the others are kept, "
                       "run the same command again to retry them")


def _counts(_ctx, _param, value):
    try:
        counts = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter("a comma-separated list of positive integers, e.g. 100,500,1000,2000") from None
    if not counts or min(counts) < 1:
        raise click.BadParameter("a comma-separated list of positive integers, e.g. 100,500,1000,2000")
    return counts


_recipe = click.option("--recipe", type=click.Choice(list(RECIPES)), default="paper", show_default=True,
                       help="Recipe giving --max-proposals.")
_max_proposals = click.option("--max-proposals", type=click.IntRange(min=1), default=None,
                              help="Proposals kept per image, best first [default: the recipe's, 2000 "
                                   "for paper, about what §3.1 scores].")


@click.group("proposals")
def proposals():
    """Segment proposals (§3.1): the regions HCP scores and the pseudo labels are built from."""


@proposals.command("run")
@data_options
@click.argument("work", type=click.Path(file_okay=False))
@click.option("--split", default=None,
              help="Split of DATA to process [default: WORK/run.json's; paper_train on VOC (§4.1), else train].")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Worker processes [default: the cores available].")
@recipe_option
@_max_proposals
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the ranking's random mixing.")
def run(work, split, jobs, recipe, max_proposals, seed, **kwargs):
    """Generate proposals for every training image of DATA into WORK/proposals/<id>.npz.

    Hierarchical grouping over superpixels with several colour spaces, similarity
    measures and scales (selective-search style), ranked and capped. Images whose
    output is already valid are skipped, so an interrupted run resumes.
    """
    # deferred on purpose: `wsk --help` stays fast (the stages import TensorFlow)
    from wsk.stage_list import run_stage
    from wsk.stages import default_jobs

    the_run = open_cli_run(work, pop_data(kwargs), recipe=recipe, split=split,
                           overrides={"pseudo.max_proposals": max_proposals}, jobs=jobs or default_jobs(), seed=seed)
    _finish(run_stage("proposals", the_run))


@proposals.command("import-mcg")
@click.argument("mcg_dir", type=click.Path(file_okay=False))
@click.argument("work", type=click.Path(file_okay=False))
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Worker processes [default: the cores available].")
@_recipe
@_max_proposals
def import_mcg_command(mcg_dir, work, jobs, recipe, max_proposals):
    """Convert published MCG proposals (MCG_DIR/<id>.mat) into WORK/proposals/<id>.npz.

    Each file holds `superpixels` (ids from 1), `labels` (each proposal's superpixel
    ids) and `scores`, as the MCG release writes them.
    """
    # deferred on purpose: `wsk --help` stays fast (the stages import TensorFlow)
    from wsk.proposals import import_mcg
    from wsk.recipes import get_recipe
    from wsk.stages import default_jobs

    limit = max_proposals or get_recipe(recipe).pseudo.max_proposals   # MCG's best-scored first
    _finish(import_mcg(mcg_dir, work, jobs=jobs or default_jobs(), max_proposals=limit))


@proposals.command("eval")
@data_options
@click.argument("work", type=click.Path(file_okay=False))
@click.option("--split", default="val", show_default=True, help="Split of DATA to evaluate.")
@click.option("--counts", default="100,500,1000,2000", show_default=True, callback=_counts,
              help="Numbers of best-ranked proposals to evaluate.")
def evaluate(work, split, counts, **kwargs):
    """Average best overlap (ABO) and recall at IoU 0.5 of the proposals in WORK.

    Ground-truth objects are SegmentationObject instances, or connected components of
    each class of SegmentationClass; pixels labelled 255 are ignored. Prints a row per
    class and overall, and writes WORK/eval/proposals.json.
    """
    # deferred on purpose: `wsk --help` stays fast (the stages import TensorFlow)
    from wsk.io import save_json
    from wsk.proposals import evaluate_proposals
    from wsk.workdir import WorkDir

    run = view_run(work, pop_data(kwargs), split)
    split = run.split
    report = evaluate_proposals(run.source, work, split=split, counts=counts)
    click.echo(report.format())
    if report.skipped:
        click.echo(f"{len(report.skipped)} image(s) without a ground-truth mask skipped", err=True)
    path = WorkDir(work).eval_json("proposals")
    save_json(path, dict(report.summary(), split=split))
    click.echo(f"Wrote {path}")


COMMANDS = [proposals]
