"""``wsk pipeline``: the per-image stages on Apache Beam (the optional extra ``wsk[beam]``)."""

import click

from wsk.cli.options import data_options, open_cli_run, pop_data, recipe_option
from wsk.recipes import PIPELINE_STAGES, SCORE_MODES


@click.command("pipeline", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@data_options
@click.argument("work", type=click.Path(file_okay=False))
@click.option("--split", default=None, help="Training split [default: WORK/run.json's, else the dataset's].")
@click.option("--stages", type=click.Choice(PIPELINE_STAGES), default="all", show_default=True,
              help="proposals: before HCP is trained (it needs them); pseudo: scoring to rough masks "
                   "(needs WORK/hcp/hcp.keras); all: both.")
@recipe_option
@click.option("--mode", type=click.Choice(SCORE_MODES), default=None,
              help="Scoring mode [default: the recipe's].")
@click.option("--refine/--no-refine", default=True, show_default=True,
              help="Cross-image refinement (Eq. 1); --no-refine writes under WORK/noref.")
@click.pass_context
def pipeline(ctx, work, split, stages, recipe, mode, refine, **kwargs):
    """Run proposals -> scoring -> refinement -> maps -> masks over the training split of DATA on Apache Beam.

    Writes exactly the files of `wsk proposals` and `wsk pseudo` into WORK (interchangeable with
    them, resumable). Options Beam knows pass through to it, e.g. `--runner DirectRunner
    --direct_num_workers 2 --direct_running_mode multi_processing`, or `--runner DataflowRunner
    --project P --region R --temp_location gs://...` (WORK must then be storage that every worker
    mounts). Needs `pip install wsk[beam]`.
    """
    # deferred on purpose: Beam is an optional extra, and `wsk --help` stays fast
    try:
        from wsk.pipeline import run_pipeline
    except ImportError as err:
        raise click.ClickException(f"wsk pipeline needs Apache Beam: pip install 'wsk[beam]' ({err})") from None
    run = open_cli_run(work, pop_data(kwargs), recipe=recipe, overrides={"pseudo.score_mode": mode}, split=split,
                       refine=refine)
    run_pipeline(run, stages=stages, beam_args=ctx.args)
    click.echo(f"wsk pipeline: {stages} stages of {run.split} written to {run.work}")


COMMANDS = [pipeline]
