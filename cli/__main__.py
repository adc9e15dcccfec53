"""``python -m wsk.cli``: the same as the ``wsk`` command."""

from wsk.cli.main import main

if __name__ == "__main__":   # not again in the corpus's spawned workers
    main()
