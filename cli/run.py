"""``wsk run``: every stage on your data, in one resumable command."""

import sys

import click

from wsk.cli.options import data_options, open_cli_run, pop_data, recipe_option
from wsk.recipes import VARIANTS
from wsk.stage_list import STAGE_NAMES


def _variants(_ctx, _param, value):
    if value is None:
        return ()
    names = tuple(VARIANTS) if value.strip().lower() == "all" else tuple(v.strip() for v in value.split(",") if v.strip())
    unknown = [v for v in names if v not in VARIANTS]
    if unknown or not names:
        raise click.BadParameter(f"comma-separated variants of {', '.join(VARIANTS)}, or 'all'")
    return names


@click.command("run")
@data_options
@click.argument("work", type=click.Path(file_okay=False))
@recipe_option
@click.option("--split", default=None, help="Training split [default: paper_train on VOC, train otherwise].")
@click.option("--val-split", default=None, help="Validation split [default: val].")
@click.option("--variants", default=None, callback=_variants,
              help="Networks to train, e.g. AN_B,SN_B or all [default: the recipe's, SN_B for paper].")
@click.option("--until", type=click.Choice(STAGE_NAMES), default=None, help="Stop after this stage.")
@click.option("--ablation", is_flag=True, help="Also the pseudo-labels without refinement (Table 3).")
@click.option("--no-crf", is_flag=True, help="Evaluate without the dense CRF only.")
@click.option("--jobs", type=click.IntRange(1), default=None, help="Worker processes [default: all cores].")
def run(work, recipe, split, val_split, variants, until, ablation, no_crf, jobs, **kwargs):
    """Run every stage on DATA into WORK: proposals, HCP, scoring, refinement (Eq. 1),
    localization maps (Eq. 2), rough masks (Eq. 5), DeepLab-LargeFOV, evaluation, export.

    DATA is a VOC folder, a labels file (.csv with header image,labels[,split][,mask], or .jsonl)
    or a COCO instances .json with --images DIR. The first command on WORK records the dataset,
    splits, classes and recipe in WORK/run.json; later commands use them, and refuse others.
    Rerunning resumes. Prints the quality report and Table 1 where ground truth exists, and
    exports the best variant as a SavedModel.
    """
    # deferred on purpose: `wsk --help` stays fast (the stages import TensorFlow)
    from wsk.driver import run_all
    from wsk.stages import default_jobs

    the_run = open_cli_run(work, pop_data(kwargs), recipe=recipe, split=split, val_split=val_split,
                           jobs=jobs or default_jobs(), variants=variants, crf=not no_crf,
                           verbose=1 if sys.stderr.isatty() else 2)
    click.echo(f"wsk run: {the_run.source.kind} dataset {the_run.source.path}, recipe {the_run.recipe.name}, "
               f"training split {the_run.split!r}, validation {the_run.val_split!r}, work {the_run.work}", err=True)
    run_all(the_run, until=until, ablation=ablation, printer=click.echo)


COMMANDS = [run]
