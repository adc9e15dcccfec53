"""A split's image ids held compactly: one UTF-8 buffer and an offsets array.

A Python list of ids costs about 64 bytes an id (the string object and the list's pointer); at
100,000 images that is 6.4 MB in every process that opens the split, the stage parents included.
``IdList`` keeps the ids' bytes and one 8-byte offset each (a VOC id: about 20 bytes), and makes a
string only when one is asked for. It is a read-only ``Sequence``: ``len``, indexing, slicing
(another ``IdList``), iteration, ``+`` (a list, as a list's), and equality with any sequence of the
same strings.
"""

import array
import collections.abc
import itertools

import numpy as np


class IdList(collections.abc.Sequence):
    """Image ids, in the order given, stored as UTF-8 bytes (module docstring)."""

    __slots__ = ("_blob", "_ends")

    def __init__(self, ids=()):
        blob, ends = bytearray(), array.array("q")   # not a list: 36 bytes an int while building
        for image_id in ids:
            blob += image_id.encode("utf-8")
            ends.append(len(blob))
        self._blob = bytes(blob)
        self._ends = np.frombuffer(ends, np.int64) if ends else np.zeros(0, np.int64)

    def __len__(self):
        return len(self._ends)

    def _start(self, k):
        return int(self._ends[k - 1]) if k else 0

    def __getitem__(self, k):
        if isinstance(k, slice):
            return IdList(self[i] for i in range(*k.indices(len(self))))
        if k < 0:
            k += len(self)
        if not 0 <= k < len(self):
            raise IndexError("IdList index out of range")
        return self._blob[self._start(k):int(self._ends[k])].decode("utf-8")

    def __iter__(self):
        return (raw.decode("utf-8") for raw in self._raw())

    def __eq__(self, other):
        if not isinstance(other, collections.abc.Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None

    def __add__(self, other):   # as a list's: a list
        return list(self) + list(other)

    def __radd__(self, other):
        return list(other) + list(self)

    def __repr__(self):
        shown = ", ".join(repr(i) for i in itertools.islice(self, 3))
        return f"IdList([{shown}{', ...' if len(self) > 3 else ''}], {len(self)} ids)"

    def __reduce__(self):
        return (_rebuild, (self._blob, self._ends))

    def sorted(self):
        """The same ids in Python's ``sorted`` order, as an ``IdList`` (UTF-8's byte order is the
        code points' order), without making a string for each id."""
        width = int(np.diff(self._ends, prepend=0).max()) if len(self) else 1
        fixed = np.zeros(len(self), f"S{width}")
        for k, image_id in enumerate(self._raw()):
            fixed[k] = image_id
        order = np.argsort(fixed, kind="stable")
        return IdList(self[int(k)] for k in order)

    def _raw(self):
        """Each id's UTF-8 bytes, in order."""
        start = 0
        for end in self._ends:
            end = int(end)
            yield self._blob[start:end]
            start = end


def sorted_ids(ids):
    """``sorted(ids)`` as an ``IdList``, made a string at a time (``IdList.sorted``)."""
    return (ids if isinstance(ids, IdList) else IdList(ids)).sorted()


def _rebuild(blob, ends):
    ids = IdList()
    ids._blob, ids._ends = blob, ends
    return ids
