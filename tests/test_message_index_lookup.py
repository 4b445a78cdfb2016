"""The message index's lookup of rows by id hash (message_index._Lookup): rows appended
after it was built are counted as they come, not by walking them on every append."""

from __future__ import annotations

import numpy as np

from fsstore import message_index
from fsstore.message_index import ADD, MARK, Row, _Lookup


class _NoWalk(dict):
    """The lookup's recent rows; walking them (values()) fails the test."""

    def values(self):
        raise AssertionError("an append walked every recent row")


def _rows(count: int, op: int = ADD) -> list[Row]:
    return [Row(seq=n + 1, segment=1, hash=1000 + n, target=n, live=n + 1, offset=64,
                size=100, op=op) for n in range(count)]


def test_noting_appended_rows_does_not_walk_the_rows_noted_before(monkeypatch):
    monkeypatch.setattr(message_index, "_UNSORTED_LIMIT", 5)
    lookup = _Lookup(np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64), 0)
    lookup.recent = _NoWalk()
    lookup.note(_rows(3), 0)
    lookup.note(_rows(2, op=MARK), 3)  # a MARK names no message: not counted
    assert not lookup.rebuild_needed
    lookup.note(_rows(3), 5)
    assert lookup.rebuild_needed  # 6 rows noted, over the limit of 5
    assert lookup.find(1000) == [0, 5]
