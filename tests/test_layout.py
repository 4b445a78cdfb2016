from __future__ import annotations

import os

import pytest

import fsstore
from fsstore import InvalidCheckpointId, InvalidSessionId, layout

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


WINDOWS_UNSAFE_IDS = ["CON", "con", "Nul", "PRN", "aux", "COM1", "com9", "LPT1", "lpt0",
                      "NUL.txt", "con.tar.gz", "x.", "abc..", "COM1."]


@pytest.mark.parametrize("session_id", WINDOWS_UNSAFE_IDS)
def test_new_ids_unsafe_on_windows_are_refused(session_id):
    with pytest.raises(InvalidSessionId, match="Windows"):
        layout.check_session_id(session_id, new=True)
    with pytest.raises(InvalidCheckpointId, match="Windows"):
        layout.check_checkpoint_id(session_id, new=True)


@pytest.mark.parametrize("session_id", ["CONSOLE", "nul_", "COM10", "xCON", "LPT", "-x",
                                        "a.b", "con-1", "x.y.z"])
def test_new_ids_that_merely_resemble_device_names_are_allowed(session_id):
    assert layout.check_session_id(session_id, new=True) == session_id


@pytest.mark.parametrize("session_id", ["CON", "nul.txt", "x."])
def test_store_refuses_a_new_session_or_fork_with_an_unsafe_id_and_writes_nothing(
        tmp_path, session_id):
    from conftest import tree_snapshot

    store = fsstore.open_store(tmp_path / "s")
    store.create_session("a").close()
    before = tree_snapshot(store.path)
    with pytest.raises(InvalidSessionId):
        store.create_session(session_id)
    with pytest.raises(InvalidSessionId):
        store.fork_session("a", session_id)
    with store.open_session("a") as session, pytest.raises(InvalidCheckpointId):
        session.checkpoint(checkpoint_id=session_id)
    assert tree_snapshot(store.path) == before


@pytest.mark.parametrize("session_id", ["CON", "nul.txt", "x."])
def test_an_existing_session_whose_id_the_new_rule_refuses_still_opens(
        tmp_path, monkeypatch, session_id):
    store = fsstore.open_store(tmp_path / "s")
    with monkeypatch.context() as older:  # as an older fsstore, without the new rule
        older.setattr(layout, "unsafe_on_windows", lambda name: False)
        with store.create_session(session_id, title="old") as session:
            session.append({"x": 1})
            session.checkpoint(checkpoint_id="con")
    assert store.session_ids() == [session_id]
    reader = store.read_session(session_id)
    assert reader.title == "old" and [c.id for c in reader.checkpoints()] == ["con"]
    assert reader.load_checkpoint("con") == {}
    with store.open_session(session_id) as session:
        session.append({"x": 2})
    with store.fork_session(session_id, "copy") as fork:
        assert fork.parent is not None and fork.parent.parent == session_id
    store.delete_session(session_id)
    assert store.session_ids() == ["copy"]


def test_fixture_session_ids_pass_the_rule_for_new_ids():
    root = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures")
    stores = [os.path.join(root, version, "store") for version in os.listdir(root)
              if version.startswith("v")]  # fixtures/transcripts holds no store
    assert len(stores) >= 7
    for store in stores:
        for name in os.listdir(os.path.join(store, "sessions")):
            assert layout.check_session_id(name, new=True) == name
