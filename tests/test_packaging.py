"""The installed layout: ``cli/`` and ``zoo/`` live only as ``wsk.cli`` and ``wsk.zoo``; the console script works."""

import importlib.util
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_cli_and_zoo_are_subpackages_of_wsk_only():
    assert pathlib.Path(importlib.util.find_spec("wsk.cli").origin).parent == REPO / "cli"
    assert pathlib.Path(importlib.util.find_spec("wsk.zoo").origin).parent == REPO / "zoo"
    for top in ("cli", "zoo"):
        spec = importlib.util.find_spec(top)
        # Nothing installed as a top-level ``cli`` or ``zoo`` (another project's is not ours).
        assert spec is None or REPO not in pathlib.Path(spec.origin or "").parents, spec


def test_wsk_help_lists_every_command(tmp_path):
    # run from an empty folder: from the checkout's parent, a checkout folder named "wsk" would be
    # imported as a namespace package in place of the installed one
    out = subprocess.run([sys.executable, "-m", "wsk.cli", "--help"], capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    for command in ("data", "demo", "eval", "export", "predict", "proposals", "pseudo", "train", "viz", "zoo"):
        assert f"  {command} " in out.stdout, (command, out.stdout)
