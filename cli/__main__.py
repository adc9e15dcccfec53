"""``python -m wsk.cli``: the same as the ``wsk`` command."""

from wsk.cli.main import main

main()
