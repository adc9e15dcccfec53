"""The ``wsk`` click group. Each command group lives in its own module of ``wsk.cli``."""

import importlib
import os
import sys

import click

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from wsk import __version__  # noqa: E402
from wsk.errors import WskError  # noqa: E402

# One module per command group; each exposes COMMANDS, a list of click commands.
COMMAND_MODULES = ("data", "evaluate", "proposals", "train", "pseudo", "viz", "predict",
                   "export", "zoo_cmd", "demo", "pretrain")


class _Group(click.Group):
    """Turns a ``WskError`` into ``Error: <file>: <problem>`` and a non-zero exit."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except WskError as err:
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


def main(argv=None):
    """Console-script entry point."""
    try:
        return cli.main(args=argv, prog_name="wsk")
    except KeyboardInterrupt:
        click.echo("Interrupted: finished files are kept; run the same command again to resume.", err=True)
        sys.exit(130)
