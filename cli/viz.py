"""``wsk viz``: figures of the localization maps and rough masks (Fig. 4 and 5)."""

import click

from wsk.cli.options import data_options, pop_data, view_run


def _ids(_ctx, _param, values):
    ids = [i.strip() for value in values for i in value.split(",") if i.strip()]
    return ids or None


@click.command("viz")
@data_options
@click.argument("work", type=click.Path(file_okay=False))
@click.option("--ids", multiple=True, callback=_ids,
              help="Image ids (repeat or comma-separate) [default: the first --limit of --split].")
@click.option("--split", default=None, help="Split the images come from [default: WORK/run.json's training split].")
@click.option("--limit", type=click.IntRange(min=1), default=8, show_default=True,
              help="Images shown when no --ids are given.")
@click.option("--refine/--no-refine", default=True, show_default=True,
              help="Show the refined pseudo labels or those of the --no-refine ablation.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output folder [default: WORK/viz, or WORK/noref/viz].")
def viz(work, ids, split, limit, refine, out, **kwargs):
    """Write one PNG per image: the photo, each label's localization map and background's
    as heat overlays, and the rough mask, side by side and captioned (Fig. 4 and 5)."""
    # deferred on purpose: `wsk --help` stays fast (the stages import TensorFlow)
    from wsk.viz import write_figures

    run = view_run(work, pop_data(kwargs), split)
    paths = write_figures(run.source, work, ids=ids, out=out, split=run.split, refine=refine, limit=limit)
    for path in paths:
        click.echo(path)


COMMANDS = [viz]
