"""The one exception type for problems a user can fix (bad files, bad arguments)."""

import os


class WskError(Exception):
    """A user-facing error. ``str(err)`` is one line: ``<file>: <problem>`` when a file is named."""

    def __init__(self, problem, path=None):
        self.path = None if path is None else os.fspath(path)
        self.problem = str(problem)
        super().__init__(f"{self.path}: {self.problem}" if self.path else self.problem)
