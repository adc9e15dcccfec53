"""Run one pipeline stage over many images: resumable, parallel, with a progress bar.

Every stage writes one file per image. ``run_per_image`` skips images whose output
already exists and is valid, runs the rest (in worker processes when ``jobs > 1``),
and collects failures instead of stopping, so nothing already computed is lost.
"""

import collections.abc
import concurrent.futures
import contextlib
import dataclasses
import itertools
import multiprocessing
import os
import sys

import click

from wsk import storage
from wsk.errors import WskError
from wsk.io import load_npz


IN_FLIGHT = 8   # items submitted per worker process ahead of their results (run_per_image)


@dataclasses.dataclass
class StageReport:
    """What a stage did: ids computed, ids skipped as already done, and ``(id, message)`` failures."""

    name: str
    done: list = dataclasses.field(default_factory=list)
    skipped: list = dataclasses.field(default_factory=list)
    failed: list = dataclasses.field(default_factory=list)
    note: str | None = None   # why a whole stage did nothing (e.g. no ground truth to evaluate on)

    def summary(self):
        if self.note:
            return f"{self.name}: {self.note}"
        return (f"{self.name}: {len(self.done)} computed, {len(self.skipped)} already done, "
                f"{len(self.failed)} failed")

    def raise_if_failed(self):
        """Raise one ``WskError`` listing the failures (each names its file)."""
        if self.failed:
            lines = "; ".join(message for _, message in self.failed[:10])
            more = f" (+{len(self.failed) - 10} more)" if len(self.failed) > 10 else ""
            raise WskError(f"{self.name}: {len(self.failed)} image(s) failed: {lines}{more}")


def say_recomputing(err):
    """The line a stage prints when an earlier output it finds is damaged (it is then recomputed)."""
    click.echo(f"{err.path}: {err.problem}; recomputing it", err=True)


def progress(iterable=None, length=None, label=""):
    """A progress bar on stderr (click's), used by every long stage."""
    return click.progressbar(iterable, length=length, label=label, file=sys.stderr,
                             show_pos=True, show_eta=True)


def _call(work, item):
    try:
        work(item)
        return item, None
    except WskError as err:
        return item, str(err)
    except Exception as err:  # keep going: one bad image must not lose the others
        return item, f"{item}: {type(err).__name__}: {err}"


@contextlib.contextmanager
def worker_pool(jobs):
    """``jobs`` worker processes (spawned: safe beside TensorFlow's threads) for several
    ``run_per_image`` calls, so that they start once; None when ``jobs <= 1``."""
    if jobs <= 1:
        yield None
        return
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs,
                                                mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


class Picked(collections.abc.Sequence):
    """The items of ``items`` whose flag in ``flags`` (a byte an item) is set, in ``items``' order:
    what a ``StageReport`` of ``run_per_image`` lists, without a list of them (bench_refinement_memory)."""

    def __init__(self, items, flags):
        self.items, self.flags = items, flags

    def __len__(self):
        return self.flags.count(1)

    def __iter__(self):
        return itertools.compress(self.items, self.flags)

    def __getitem__(self, k):
        return list(self)[k]

    def __eq__(self, other):
        if not isinstance(other, collections.abc.Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return list(self) == list(other)

    __hash__ = None

    def __repr__(self):
        return repr(list(self))


def run_per_image(name, items, work, is_done=None, jobs=1, pool=None):
    """Apply ``work(item)`` to every item of the sequence ``items`` not yet done; return a ``StageReport``
    whose ``done`` and ``skipped`` list the items in ``items``' order.

    ``work`` writes the item's output itself (atomically) and must be picklable when it runs
    in worker processes: those of ``pool`` (a ``worker_pool``), or ``jobs > 1`` started for this
    call (a module-level function or a ``functools.partial`` of one).
    ``is_done(item)`` says whether a valid output already exists; or ``is_done`` is those answers,
    one flag per item in ``items``' order (``wsk.stage_list.run_stage`` asks them once beforehand).
    Memory per item is two bytes: its done flag and its computed flag (bench_refinement_memory).
    """
    if is_done is None:
        done = bytes(len(items))
    elif callable(is_done):
        done = bytearray(bool(is_done(item)) for item in items)
    else:
        done = is_done if isinstance(is_done, (bytes, bytearray)) else bytes(map(bool, is_done))
    computed = bytearray(len(items))
    report = StageReport(name, done=Picked(items, computed), skipped=Picked(items, done))
    todo = ((k, item) for k, item in enumerate(items) if not done[k])
    pending = len(items) - len(report.skipped)
    if not pending:
        return report
    with progress(length=pending, label=name) as bar:
        def finished(k, item, error):
            if error:
                report.failed.append((item, error))
            else:
                computed[k] = 1
            bar.update(1)

        if pool is None and jobs <= 1:
            for k, item in todo:
                finished(k, *_call(work, item))
        else:
            with contextlib.ExitStack() as stack:
                pool = pool or stack.enter_context(worker_pool(jobs))
                # a few items per worker in flight, not one future per item (2 KB each: 200 MB at 100,000)
                running = {}
                while True:
                    for k, item in itertools.islice(todo, IN_FLIGHT * max(1, jobs) - len(running)):
                        running[pool.submit(_call, work, item)] = k
                    if not running:
                        break
                    ready, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
                    for future in ready:
                        finished(running.pop(future), *future.result())
    return report


def default_jobs():
    """Worker processes to use by default: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def readable_npz(path, keys):
    """The arrays of a stage output ``path``, or None when it is missing or damaged (then the stage
    recomputes it, and a line says so)."""
    if not storage.exists(path):
        return None
    try:
        return load_npz(path, required=keys)
    except WskError as err:
        say_recomputing(err)
        return None
