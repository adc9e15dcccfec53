"""The ``wsk`` click group. Each command group lives in its own module of ``wsk.cli``."""

import importlib
import os
import sys
import traceback

import click

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from wsk import __version__  # noqa: E402
from wsk.errors import WskError  # noqa: E402

# One module per command group; each exposes COMMANDS, a list of click commands.
COMMAND_MODULES = ("run", "data", "evaluate", "proposals", "train", "pseudo", "viz", "predict",
                   "export", "zoo_cmd", "demo", "pretrain", "pipeline")


class _Group(click.Group):
    """Turns a ``WskError`` into ``Error: <file>: <problem>`` (bad rows: one ``FILE:ROW: reason``
    line each) and a non-zero exit."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except WskError as err:
            lines = getattr(err, "lines", None)   # a labels file's bad rows: one `FILE:ROW: reason` each
            if lines:
                for line in lines:
                    click.echo(line, err=True)
                ctx.exit(1)
            raise click.ClickException(str(err)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wsk")
def cli():
    """wsk: semantic segmentation learned from image-level labels (Wei et al., 2016).

    Run `wsk demo` for the whole pipeline on a synthetic dataset, or the stages one
    by one: data -> proposals -> train hcp -> pseudo -> train seg -> predict/eval -> export.
    """


for _name in COMMAND_MODULES:
    for _command in importlib.import_module(f"wsk.cli.{_name}").COMMANDS:
        cli.add_command(_command)


def exit_now(code):
    """Flush and leave at once with ``code``, skipping the interpreter's finalisation.

    After an error in training, tf.data iterators are destroyed during finalisation; their
    destructor waits for in-flight ``numpy_function`` calls, which need the GIL that the
    destroying thread holds, and the process would hang after printing its error. Every
    output is already written atomically, so nothing is lost by not finalising.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv=None):
    """Console-script entry point: success returns; any failure prints its message and exits
    at once with a non-zero code (``exit_now``)."""
    try:
        return cli.main(args=argv, prog_name="wsk")
    except SystemExit as done:
        if done.code in (None, 0):
            raise
        exit_now(done.code if isinstance(done.code, int) else 1)
    except KeyboardInterrupt:
        click.echo("Interrupted: finished files are kept; run the same command again to resume.", err=True)
        exit_now(130)
    except BaseException:   # a bug: show it, then leave without hanging
        traceback.print_exc()
        exit_now(1)
