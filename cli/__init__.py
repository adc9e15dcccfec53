"""The ``wsk`` command line (installed as ``wsk.cli``)."""
