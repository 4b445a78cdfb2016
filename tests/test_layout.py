from __future__ import annotations

import pytest

from fsstore import InvalidSessionId, layout

HOSTILE_IDS = [
    "", ".", "..", "../x", "../../etc/passwd", "/etc/passwd", "a/b", "a\\b", "x\x00y",
    ".hidden", ".tmp-abc", ".trash-abc", "a" * 129, "sp ace", "tab\t", "new\nline",
    "é", "~user", "$HOME", "*", "a:b",
]


@pytest.mark.parametrize("session_id", HOSTILE_IDS)
def test_hostile_session_ids_are_refused(session_id):
    with pytest.raises(InvalidSessionId):
        layout.check_session_id(session_id)


def test_non_string_ids_are_refused():
    for value in (None, 7, b"abc", ["a"]):
        with pytest.raises(InvalidSessionId):
            layout.check_session_id(value)


@pytest.mark.parametrize("session_id", ["a", "A-b_c.d", "0" * 128, "20261121T055212Z-3fa9c2d1",
                                        "_x", "-x", "x.."])
def test_allowed_session_ids_pass(session_id):
    assert layout.check_session_id(session_id) == session_id


def test_generated_ids_are_allowed_and_sort_by_time():
    first = layout.new_session_id()
    assert layout.check_session_id(first) == first
    assert first[:16] <= layout.new_session_id()[:16]


def test_segment_names_sort_in_log_order_and_parse_back():
    seqs = [1, 9, 10, 4711, 10**12, 2**64 - 1]
    names = [layout.segment_name(seq) for seq in seqs]
    assert sorted(names) == names
    assert [layout.parse_segment_name(name) for name in names] == seqs
    assert layout.parse_segment_name("1.fslog") is None
    assert layout.parse_segment_name(names[0] + ".tmp") is None
    for near_miss in ("0000000000000000000x.fslog", "+0000000000000000001.fslog",
                      "000000000000000000١٢.fslog", "00000000000000000001.fslox"):
        assert layout.parse_segment_name(near_miss) is None
