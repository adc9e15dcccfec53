"""``wsk.data.ids.IdList`` against a plain list of the same ids, and the stage runner's reports."""

import concurrent.futures
import pickle
import random
import time

import pytest

from wsk.data.ids import IdList
from wsk.data.voc import duplicate_ids
from wsk.errors import WskError
from wsk.stages import run_per_image

IDS = ["2008_000002", "b", "a", "ab", "é/x", "e/x", "日本/写真", "a b", "2007_000032"]


def test_behaves_as_the_list_it_was_made_from():
    ids = IdList(IDS)
    assert len(ids) == len(IDS) and list(ids) == IDS and ids == IDS and ids == tuple(IDS)
    for k in range(-len(IDS), len(IDS)):
        assert ids[k] == IDS[k]
    for s in (slice(None), slice(2, 5), slice(1, None, 3), slice(None, None, -1), slice(7, 2, -2)):
        assert isinstance(ids[s], IdList) and list(ids[s]) == IDS[s]
    with pytest.raises(IndexError):
        ids[len(IDS)]
    assert ids != IDS[:-1] and ids != IDS[::-1] and IdList() == [] and not IdList()
    assert "a b" in ids and "zz" not in ids
    assert ids[:2] + ids[2:] == IDS and ["x"] + ids == ["x"] + IDS and ids + ("x",) == IDS + ["x"]
    assert pickle.loads(pickle.dumps(ids)) == IDS


def test_sorted_is_pythons_order():
    """Prefixes before their extensions, code points beyond ASCII last (as ``sorted`` orders str)."""
    assert list(IdList(IDS).sorted()) == sorted(IDS)
    rng = random.Random(0)
    many = ["".join(rng.choice("ab/é_0") for _ in range(rng.randrange(1, 6))) for _ in range(2000)]
    assert list(IdList(many).sorted()) == sorted(many)


def test_a_voc_id_costs_its_bytes_and_one_offset():
    """100,000 ids like ``2007_000032``: 11 UTF-8 bytes and an 8-byte offset each, 19 in all (a
    list of str: about 64)."""
    ids = IdList(f"2007_{n:06d}" for n in range(100_000))
    assert len(ids._blob) + ids._ends.nbytes == 100_000 * 19


def test_duplicates_are_counted():
    assert duplicate_ids(["x", "y", "x", "z", "y", "x"]) == {"x": 3, "y": 2}
    assert duplicate_ids(IdList(IDS)) == {}


def _work(item):
    time.sleep(0.002 * (ord(item[-1]) % 5))   # later items often finish first
    if item == "bad":
        raise WskError("cannot be read", f"/data/{item}.jpg")


def test_reports_list_the_items_in_their_order_without_a_copy():
    items = IdList(["c", "bad", "a", "e", "d", "b", "f"])
    done = bytearray([0, 0, 1, 0, 0, 1, 0])
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        report = run_per_image("stage", items, _work, is_done=done, jobs=3, pool=pool)
    assert report.done == ["c", "e", "d", "f"] and len(report.done) == 4
    assert report.skipped == ["a", "b"] and len(report.skipped) == 2
    assert [item for item, _ in report.failed] == ["bad"] and "/data/bad.jpg" in report.failed[0][1]
    assert report.summary() == "stage: 4 computed, 2 already done, 1 failed"
    assert report.done.items is items and report.skipped.items is items   # flags, not lists of ids
