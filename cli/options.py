"""What every command that reads a dataset or a work directory shares: DATA and its options, and
the run record (``WORK/run.json``) every stage command opens."""

import click

from wsk import storage
from wsk.recipes import RECIPES


class PathOrURL(click.Path):
    """``click.Path``, except that a URL (``wsk.storage``: ``s3://``, ``gs://``, ...) passes
    unchecked, its reader saying when it is missing; a ``file://`` URL is checked as its path."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and storage.is_url(value):
            value = storage.absolute(value)
            if storage.is_url(value):
                return value
        return super().convert(value, param, ctx)


def data_options(command):
    """DATA (a VOC folder, a labels file ``.csv``/``.jsonl`` or a COCO ``.json``) and its options."""
    options = [
        click.argument("data", type=click.Path()),
        click.option("--images", "images_dir", type=PathOrURL(exists=True, file_okay=False), default=None,
                     help="COCO: the image folder of the instances JSON."),
        click.option("--classes", "classes_file", type=PathOrURL(exists=True, dir_okay=False), default=None,
                     help="A class list, one name a line, background first [default: VOC's folder "
                          "classes.txt or its 21; a labels file's labels sorted; COCO's categories]."),
        click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
                     help="A labels file without a split column: this share of its rows validates "
                          "[default: 0.1, chosen by a hash of each image's id]."),
        click.option("--val", "val_json", type=PathOrURL(exists=True, dir_okay=False), default=None,
                     help="COCO: the validation instances JSON (split 'val')."),
        click.option("--val-images", type=PathOrURL(exists=True, file_okay=False), default=None,
                     help="COCO: the image folder of --val."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def source_of(data, images_dir=None, classes_file=None, val_fraction=None, val_json=None, val_images=None):
    """The ``DataSource`` the DATA options name."""
    from wsk.data.sources import as_source

    return as_source(data, images=images_dir, classes=classes_file, val_fraction=val_fraction, val=val_json,
                     val_images=val_images)


recipe_option = click.option(
    "--recipe", type=click.Choice(list(RECIPES)), default=None,
    help="paper: §4.2's numbers (VGG-16 from ImageNet); demo: small and fast, for a CPU; tiny: a smoke "
         "run [default: the one WORK/run.json recorded, else paper].")


def open_cli_run(work, data_kwargs, recipe=None, overrides=None, split=None, val_split=None, **fields):
    """``wsk.run_record.open_run`` with this command and its arguments logged in run.json."""
    from wsk.run_record import open_run

    ctx = click.get_current_context()
    command = {"command": " ".join(["wsk"] + ctx.command_path.split()[1:]), "params": {k: v if isinstance(v, (str, int, float, bool, type(None)))
                                                       else str(v) for k, v in ctx.params.items()}}
    run = open_run(work, source_of(**data_kwargs), recipe=recipe, overrides=overrides, split=split,
                   val_split=val_split, command=command, **fields)
    if run.source.kind == "coco":
        dropped = run.dataset().dropped
        if dropped:
            click.echo(f"{run.source.path}: {dropped} image(s) without a non-crowd object dropped", err=True)
    return run


def pop_data(kwargs):
    """Remove the DATA options from a command's keyword arguments; return them as one dict."""
    return {key: kwargs.pop(key) for key in ("data", "images_dir", "classes_file", "val_fraction", "val_json",
                                             "val_images")}


def view_run(work, data_kwargs, split=None):
    """The ``Run`` a read-only command (``proposals eval``, ``viz``) looks at, with ``split`` (or
    the recorded training split) as its split: run.json checked against DATA when there is one,
    nothing written either way."""
    import dataclasses

    from wsk import storage
    from wsk.pseudo.stage import pseudo_run
    from wsk.run_record import open_run
    from wsk.workdir import WorkDir

    source = source_of(**data_kwargs)
    if storage.exists(WorkDir(storage.absolute(work)).run_record):
        run = open_run(work, source, write=False)
        return dataclasses.replace(run, split=split or run.split)
    return pseudo_run(source, work, split or source.default_splits[0])
