"""A session's state: set, delete, merge, commits with a head check and commit ids, and
loading from snapshots plus the log."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest
from conftest import tree_snapshot

import fsstore
from fsstore import STATE_RECORD, SnapshotPolicy
from fsstore.fsio import FileIO
from fsstore.snapshot import SnapshotDir
from fsstore.state import merge_patch


def fold(reader) -> dict:
    """The state computed straight from the log, independently of fsstore's loader."""
    state: dict = {}
    for event in reader.events(include_internal=True):
        if event.kind != STATE_RECORD:
            continue
        for op in event.data["ops"]:
            if op[0] == "set":
                state[op[1]] = op[2]
            elif op[0] == "delete":
                state.pop(op[1], None)
            else:
                state = merge_patch(state, op[1])
    return state


# --- merge patch (RFC 7386, appendix A) ---------------------------------------------------

@pytest.mark.parametrize(("target", "patch", "result"), [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
])
def test_merge_patch_follows_rfc_7386(target, patch, result):
    assert merge_patch(target, patch) == result


# --- state operations ----------------------------------------------------------------------

def test_set_get_delete_and_merge_change_the_state(store):
    with store.create_session("s") as session:
        assert session.state() == {}
        session.set_state("plan", ["read", "fix"])
        session.set_state("empty", None)
        session.merge_state({"count": 1, "tools": {"grep": 1}})
        session.merge_state({"grep": None, "sed": 2}, key="tools")
        session.delete_state("missing")
        session.delete_state("count")
        expected = {"plan": ["read", "fix"], "empty": None, "tools": {"sed": 2}}
        assert session.state() == expected
        assert session.get_state("plan") == ["read", "fix"]
        assert session.get_state("nope", 7) == 7
    assert store.read_session("s").state() == expected
    assert fold(store.read_session("s")) == expected


def test_state_reads_are_copies(store):
    with store.create_session("s") as session:
        session.set_state("plan", ["a"])
        session.get_state("plan").append("b")
        session.state()["plan"].append("c")
        assert session.state() == {"plan": ["a"]}
        value = {"nested": [1]}
        session.set_state("v", value)
        value["nested"].append(2)  # the caller's object is not the stored one
        assert session.get_state("v") == {"nested": [1]}


def test_state_changes_are_log_records(store):
    with store.create_session("s") as session:
        seq = session.set_state("k", 1)
        (event,) = session.events(after_seq=seq - 1, include_internal=True)
        assert (event.seq, event.kind) == (seq, STATE_RECORD)
        assert event.data == {"ops": [["set", "k", 1]]}


@pytest.mark.parametrize(("call", "args"), [
    ("set_state", (1, "v")),
    ("set_state", ("k", object())),
    ("set_state", ("k", {"nested": 2**65})),
    ("merge_state", (["not", "a", "dict"],)),
    ("merge_state", ({1: "int key"},)),
    ("delete_state", (None,)),
])
def test_bad_state_changes_raise_invalid_state_and_write_nothing(store, call, args):
    with store.create_session("s") as session:
        session.set_state("k", 1)
        before = tree_snapshot(store.path)
        with pytest.raises(fsstore.InvalidState):
            getattr(session, call)(*args)
        assert tree_snapshot(store.path) == before
        assert session.state() == {"k": 1}


def test_state_survives_reopen_and_is_rebuilt_from_the_log_alone(store):
    with store.create_session("s") as session:
        for i in range(20):
            session.merge_state({f"k{i % 5}": i})
        session.snapshot()
        session.merge_state({"after": True})
        expected = session.state()
    with store.open_session("s") as session:
        assert session.state() == expected
    for name in os.listdir(os.path.join(store.path, "sessions", "s", "state")):
        os.unlink(os.path.join(store.path, "sessions", "s", "state", name))
    assert store.read_session("s").state() == expected == fold(store.read_session("s"))


# --- commits -------------------------------------------------------------------------------

def test_commit_writes_events_and_state_change_as_one_batch(store):
    with store.create_session("s") as session:
        session.append({"before": 1})
        result = session.commit([{"a": 1}, {"b": 2}], state_patch={"done": ["a", "b"]})
        assert result.seqs == [2, 3] and result.head == 4 and not result.duplicate
        events = list(session.events(include_internal=True))
        assert [e.kind for e in events[1:]] == ["event", "event", STATE_RECORD]
        assert len({e.ts for e in events[1:]}) == 1  # one frame: one timestamp
        assert session.state() == {"done": ["a", "b"]}


def test_commit_with_the_expected_head_lands(store):
    with store.create_session("s") as session:
        session.append({"x": 1})
        result = session.commit([{"y": 2}], state_patch={"n": 1}, expected_head=1)
        assert result.head == 3
        assert session.commit([{"z": 3}], expected_head=3).seqs == [4]


@pytest.mark.parametrize("expected", [0, 1, 5, 99])
def test_commit_with_a_stale_or_future_head_conflicts_and_writes_nothing(store, expected):
    with store.create_session("s") as session:
        session.append_many([{"x": 1}, {"x": 2}, {"x": 3}])
        before = tree_snapshot(store.path)
        with pytest.raises(fsstore.HeadConflict) as caught:
            session.commit([{"y": 1}], state_patch={"n": 1}, expected_head=expected)
        assert (caught.value.expected, caught.value.actual) == (expected, 3)
        assert "head 3" in str(caught.value)
        assert tree_snapshot(store.path) == before
        assert session.head == 3 and session.state() == {}


INGRESS = """
import sys, fsstore
store = fsstore.open_store(sys.argv[1], create=False)
with store.open_session("s", shared=True) as session:
    session.queue.enqueue("wake", {"from": "another process"})
    session.inputs.submit("a user typed this meanwhile")
"""


def ingress_from_another_process(store) -> None:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run([sys.executable, "-c", INGRESS, store.path], check=True, env=env)


def test_queue_items_and_inputs_between_read_and_commit_do_not_conflict(store):
    store.create_session("s").close()
    with store.open_session("s", shared=True) as session:
        session.commit([{"n": 1}], state_patch={"n": 1})
        head, revision = session.head, session.revision
        assert revision == fsstore.Revision(1, 2)
        ingress_from_another_process(store)
        assert session.head == head + 2 and session.revision == revision  # fresh, unmoved
        session.commit([{"n": 2}], state_patch={"n": 2}, expected_head=head)
        revision = session.revision
        ingress_from_another_process(store)
        with store.open_session("s", shared=True) as other:
            other.queue.enqueue("from another handle")
        session.commit([{"n": 3}], state_patch={"n": 3}, expected_revision=revision)
        assert session.state() == {"n": 3}
        head, revision = session.head, session.revision
        with store.open_session("s", shared=True) as other:
            other.commit([{"n": "other"}])  # a commit lands: both checks now conflict
        for check in ({"expected_head": head}, {"expected_revision": revision}):
            before = tree_snapshot(store.path)
            with pytest.raises(fsstore.HeadConflict):
                session.commit([{"n": 4}], **check)
            assert tree_snapshot(store.path) == before
    assert [e.data["n"] for e in store.read_session("s").events()] == [1, 2, 3, "other"]


def test_a_shared_sessions_head_and_revision_are_fresh_without_a_write(store):
    store.create_session("s").close()
    with store.open_session("s", shared=True) as reader, \
            store.open_session("s", shared=True) as writer:
        writer.append({"n": 1})
        assert (reader.head, reader.revision, reader.current_turn) == (1, (1, 1), 1)
        writer.finish_turn()
        writer.queue.enqueue("job")
        assert (reader.head, reader.revision.seq) == (3, 2)
        assert store.read_session("s").revision == reader.revision == writer.revision


def test_the_revision_moves_with_history_state_and_clear_but_not_ingress(small_store):
    with small_store.create_session("s") as session:
        assert session.revision == (1, 0)
        moves = [lambda: session.append({"x": 1}), lambda: session.set_state("k", 1),
                 lambda: session.commit([], commit_id="c"), lambda: session.finish_turn(),
                 lambda: session.save_session_with_updates(title="t"), session.clear]
        for write in moves:
            before = session.revision
            write()
            assert session.revision != before
            assert session.revision.seq == session.head
        revision = session.revision
        for i in range(30):  # across segments: the reader walks back to find it
            session.queue.enqueue("job", {"pad": "p" * 300, "i": i})
            session.inputs.submit({"pad": "p" * 300})
        assert session.revision == revision and session.head == revision.seq + 60
        assert small_store.read_session("s").revision == revision
        session.update_metadata(title="not history")  # session.json only
        assert session.revision == revision
    with small_store.open_session("s") as session:  # found again on open
        assert session.revision == revision


def test_a_clear_conflicts_with_a_revision_read_before_it(store):
    with store.create_session("s") as session:
        session.set_state("k", 1)
        revision = session.revision
        session.clear()
        with pytest.raises(fsstore.HeadConflict, match="cleared"):
            session.commit([], state_patch={"k": 2}, expected_revision=revision)
        with pytest.raises(fsstore.SeqOutOfRange):
            session.commit([], expected_revision=5)
        session.commit([], state_patch={"k": 2}, expected_revision=session.revision)
        assert session.state() == {"k": 2}


def test_a_commit_id_is_stored_once(store):
    with store.create_session("s") as session:
        first = session.commit([{"a": 1}], state_patch={"n": 1}, commit_id="c-1")
        before = tree_snapshot(store.path)
        again = session.commit([{"a": 1}], state_patch={"n": 1}, commit_id="c-1")
        assert again == first._replace(duplicate=True)
        assert tree_snapshot(store.path) == before
        # a duplicate is answered before the head check: the retry of a commit that
        # landed must not conflict with itself
        assert session.commit([{"a": 1}], commit_id="c-1", expected_head=0).duplicate


def test_commit_ids_are_remembered_across_reopen_with_and_without_snapshots(store):
    with store.create_session("s") as session:
        first = session.commit([{"a": 1}], commit_id="early")
        session.snapshot()
        second = session.commit([{"b": 1}, {"c": 1}], commit_id="late")
    with store.open_session("s") as session:
        assert session.commit([{"a": 1}], commit_id="early") == first._replace(duplicate=True)
        assert session.commit([], commit_id="late") == second._replace(duplicate=True)
        head = session.head
    state_dir = os.path.join(store.path, "sessions", "s", "state")
    for name in os.listdir(state_dir):
        os.unlink(os.path.join(state_dir, name))
    with store.open_session("s") as session:
        assert session.commit([{"a": 1}], commit_id="early").duplicate
        assert session.head == head


def test_commit_ids_are_remembered_for_a_bounded_window(tmp_path):
    store = fsstore.open_store(tmp_path / "store", snapshots=SnapshotPolicy(commit_ids=3))
    with store.create_session("s") as session:
        for i in range(5):
            session.commit([{"i": i}], commit_id=f"c{i}")
        assert session.commit([{"i": 4}], commit_id="c4").duplicate
        assert session.commit([{"i": 2}], commit_id="c2").duplicate
        assert not session.commit([{"i": 0}], commit_id="c0").duplicate  # forgotten


@pytest.mark.parametrize("commit_id", ["", 5, "x" * 257])
def test_bad_commit_ids_are_refused(store, commit_id):
    with store.create_session("s") as session:
        with pytest.raises(fsstore.InvalidEvent):
            session.commit([{"a": 1}], commit_id=commit_id)
        assert session.head == 0


def test_an_empty_commit_writes_nothing(store):
    with store.create_session("s") as session:
        session.append({"a": 1})
        result = session.commit([], expected_head=1)
        assert (result.seqs, result.head) == ([], 1)
        assert session.head == 1


def test_a_commit_into_a_finished_turn_is_refused_whole(store):
    with store.create_session("s") as session:
        session.append({"a": 1}, turn=1)
        session.finish_turn()
        with pytest.raises(fsstore.TurnError):
            session.commit([{"b": 1}], state_patch={"n": 1}, turn=1)
        assert session.state() == {} and session.head == 2


def test_commits_and_state_are_refused_on_a_closed_session(store):
    session = store.create_session("s")
    session.close()
    with pytest.raises(fsstore.SessionClosed):
        session.commit([{"a": 1}], commit_id="x")
    with pytest.raises(fsstore.SessionClosed):
        session.set_state("k", 1)


# --- metadata with updates -----------------------------------------------------------------

def test_save_session_with_updates_commits_metadata_and_events_together(store):
    with store.create_session("s", title="old") as session:
        seqs = session.save_session_with_updates(
            [{"ctx": 1}, {"ctx": 2}], title="new", tags=["t"], metadata={"m": 1})
        assert seqs == [1, 2]
        (record,) = session.events(after_seq=2, include_internal=True)
        assert record.kind == fsstore.METADATA_RECORD
        assert record.data == {"title": "new", "tags": ["t"], "metadata": {"m": 1}}
    info = store.read_session("s").info()
    assert (info.title, info.tags, info.metadata, info.head) == ("new", ["t"], {"m": 1}, 3)


def test_a_crash_between_the_log_and_the_manifest_is_rolled_forward(store, monkeypatch):
    session = store.create_session("s", title="old")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies before session.json is rewritten

    monkeypatch.setattr(fsstore.session_metadata.ManifestFile, "write", crash)
    with pytest.raises(KeyboardInterrupt):
        session.save_session_with_updates([{"ctx": 1}], title="new")
    monkeypatch.undo()
    session._writer.close()
    session._access.lock.release()
    assert store.read_session("s").title == "old"
    with store.open_session("s"):
        pass
    assert store.read_session("s").title == "new"


def _manifest_write_fails(monkeypatch, exc: BaseException) -> None:
    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(fsstore.session_metadata.ManifestFile, "write", fail)


ENQUEUE = {"op": "enqueue", "kind": "job", "payload": {"n": 1}, "priority": 0,
           "max_attempts": 3}


def test_metadata_a_crash_left_before_queue_records_is_rolled_forward_from_its_record(
        store, monkeypatch):
    session = store.create_session("s", title="old", tags=["a"], metadata={"k": 1})
    _manifest_write_fails(monkeypatch, KeyboardInterrupt())  # the process dies there
    with pytest.raises(KeyboardInterrupt):
        session.save_session_with_updates([{"ctx": 1}], title="new", metadata={"k": 2})
    monkeypatch.undo()
    # queue, input and lease records may follow it (an earlier fsstore appended them
    # before rolling forward): the metadata record is the last of the other records
    writer = session._writer
    writer.append([("fsstore.queue", ENQUEUE)], writer.last_turn or 0, time.time())
    writer.append([("fsstore.lease", {"token": 1})], writer.last_turn or 0, time.time())
    writer.close()
    session._access.lock.release()
    with store.open_session("s") as reopened:
        assert (reopened.title, reopened.tags, reopened.metadata) == ("new", ["a"], {"k": 2})
        assert [item.payload for item in reopened.queue.items()] == [{"n": 1}]
    with open(os.path.join(store.path, "sessions", "s", "session.json")) as file:
        manifest = json.load(file)
    assert manifest["metadata_seq"] == 2


@pytest.mark.parametrize("write", ["enqueue", "append", "submit input"])
def test_a_failed_manifest_write_is_rolled_forward_before_the_writers_next_write(
        store, monkeypatch, write):
    session = store.create_session("s", title="old", metadata={"k": 1})
    _manifest_write_fails(monkeypatch, OSError(28, "No space left on device"))
    with pytest.raises(OSError):
        session.save_session_with_updates([{"ctx": 1}], title="new", metadata={"k": 2})
    monkeypatch.undo()
    if write == "enqueue":
        session.queue.enqueue("job", {"n": 1})
    elif write == "append":
        session.append({"later": 1})
    else:
        session.inputs.submit({"text": "hi"})
    assert (store.read_session("s").title, session.metadata) == ("new", {"k": 2})
    session.close()
    reopened = store.open_session("s")
    assert (reopened.title, reopened.metadata) == ("new", {"k": 2})
    reopened.close()


def test_metadata_another_shared_writer_committed_is_rolled_forward_by_one_already_open(
        store, monkeypatch):
    store.create_session("s", title="old", metadata={"k": 1}).close()
    first = store.open_session("s", shared=True)
    second = store.open_session("s", shared=True)
    _manifest_write_fails(monkeypatch, OSError(28, "No space left on device"))
    with pytest.raises(OSError):
        second.save_session_with_updates([{"ctx": 1}], title="new", metadata={"k": 2})
    monkeypatch.undo()
    first.append({"later": 1})  # opened before the metadata record was written
    assert (store.read_session("s").title, first.title) == ("new", "new")
    # the second writer's own update keeps the fields it does not give as they are now
    second.update_metadata(tags=["t"])
    first.close()
    second.close()
    info = store.read_session("s").info()
    assert (info.title, info.tags, info.metadata) == ("new", ["t"], {"k": 2})


def test_a_metadata_record_whose_data_is_not_a_map_is_corruption(store):
    session = store.create_session("s", title="old")
    writer = session._writer
    writer.append([(fsstore.METADATA_RECORD, ["new"])], 1, time.time())
    writer.close()
    session._access.lock.release()
    with pytest.raises(fsstore.CorruptionError, match="not a map"):
        store.open_session("s")
    assert store.read_session("s").title == "old"


def test_bad_metadata_in_save_session_with_updates_writes_nothing(store):
    with store.create_session("s") as session:
        before = tree_snapshot(store.path)
        with pytest.raises(fsstore.InvalidMetadata):
            session.save_session_with_updates([{"ctx": 1}], title=5)
        assert tree_snapshot(store.path) == before


# --- snapshots -----------------------------------------------------------------------------

def snapshot_names(store, session_id="s") -> list[str]:
    folder = os.path.join(store.path, "sessions", session_id, "state")
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_snapshots_are_taken_every_n_events_and_pruned(tmp_path):
    store = fsstore.open_store(tmp_path / "store",
                               snapshots=SnapshotPolicy(every_events=10, keep=2))
    with store.create_session("s") as session:
        for i in range(35):
            session.append({"i": i})
        assert snapshot_names(store) == ["00000000000000000020.snap",
                                         "00000000000000000030.snap"]


def test_snapshots_are_taken_every_n_bytes_of_log(tmp_path):
    store = fsstore.open_store(tmp_path / "store", snapshots=SnapshotPolicy(
        every_events=None, every_bytes=10_000))
    with store.create_session("s") as session:
        for i in range(30):
            session.append({"i": i, "pad": "x" * 1000})  # frames of just over 1 KB
        assert snapshot_names(store) == [f"{seq:020d}.snap" for seq in (10, 20, 30)]


def test_no_snapshot_is_taken_without_a_policy_that_asks(tmp_path):
    store = fsstore.open_store(tmp_path / "store", snapshots=SnapshotPolicy(
        every_events=None, every_bytes=None))
    with store.create_session("s") as session:
        for i in range(100):
            session.append({"i": i})
        assert snapshot_names(store) == []
        assert session.snapshot() == 100
        assert snapshot_names(store) == ["00000000000000000100.snap"]


@pytest.mark.parametrize("settings", [
    {"every_events": 0}, {"every_bytes": -1}, {"keep": 0}, {"commit_ids": 0},
    {"every_events": 1.5}, {"keep": True},
])
def test_bad_snapshot_policies_are_refused(settings):
    with pytest.raises(fsstore.InvalidSetting):
        SnapshotPolicy(**settings)


class CountingIO(FileIO):
    def __init__(self) -> None:
        self.read_bytes = 0

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        data = super().pread(fd, size, offset)
        self.read_bytes += len(data)
        return data


@pytest.mark.parametrize("chain", [False, True], ids=["unchained", "chained"])
def test_loading_from_a_snapshot_reads_only_the_log_after_it(tmp_path, chain):
    store = fsstore.open_store(tmp_path / "store", segment_size=64 << 10, chain=chain)
    with store.create_session("s") as session:
        for i in range(3000):
            session.append({"i": i, "pad": "x" * 100})
        session.merge_state({"a": 1})
        session.snapshot()
        session.append_many([{"after": 1}, {"after": 2}])
        session.merge_state({"b": 2})
    io = CountingIO()
    reader = fsstore.open_store(tmp_path / "store", io=io).read_session("s")
    assert reader.state() == {"a": 1, "b": 2}
    # of a log of over 400 KiB, in 64 KiB segments; a chained one's replay also hashes
    # the run of the snapshot's segment from its start (FORMAT.md 3.4): at most a segment
    assert io.read_bytes < (16 << 10) + ((64 << 10) if chain else 0)


def damage(path: str, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x40]))


@pytest.mark.parametrize("where", ["header", "body", "truncated", "empty"])
def test_a_damaged_snapshot_is_skipped_and_reported(store, where):
    with store.create_session("s") as session:
        session.set_state("a", 1)
        session.snapshot()
        session.set_state("b", 2)
        last = session.snapshot()
        session.set_state("c", 3)
    path = os.path.join(store.path, "sessions", "s", "state", f"{last:020d}.snap")
    if where == "header":
        damage(path, 20)
    elif where == "body":
        damage(path, os.path.getsize(path) - 2)
    else:
        with open(path, "r+b") as handle:
            handle.truncate(0 if where == "empty" else os.path.getsize(path) - 3)
    reader = store.read_session("s")
    assert reader.state() == {"a": 1, "b": 2, "c": 3}
    (finding,) = reader.state_findings
    assert finding.level == "problem" and finding.path == path
    assert [f.path for f in store.verify() if f.level == "problem"] == [path]


@pytest.mark.parametrize("chain", [False, True], ids=["unchained", "chained"])
def test_a_snapshot_past_the_end_of_the_log_is_not_trusted(tmp_path, chain):
    store = fsstore.open_store(tmp_path / "store", chain=chain)
    with store.create_session("s") as session:
        session.set_state("a", 1)
        position, link = session._writer.position, session._writer.head_link
    # chained: made with the chain's MAC, as one who holds its key could
    reader = store.read_session("s")
    SnapshotDir(FileIO(), os.path.join(store.path, "sessions", "s"), reader.identity,
                reader._snapshots.chain).write(
        50, 1, position, {"state": {"forged": True}, "commits": []}, link)
    assert store.read_session("s").state() == {"a": 1}
    (finding,) = store.verify()
    assert finding.level == "note" and "past the end of the log" in finding.message


def test_a_snapshot_of_records_a_crash_took_back_is_not_trusted(store):
    log = os.path.join(store.path, "sessions", "s", "log", "00000000000000000001.fslog")
    with store.create_session("s", durability="none") as session:
        session.set_state("a", 1)
        session.sync()
        synced = os.path.getsize(log)
        session.set_state("lost", True)  # never synced: a power loss takes it back
        session.snapshot()
        folder = os.path.join(store.path, "sessions", "s", "state")
        (name,) = os.listdir(folder)
        with open(os.path.join(folder, name), "rb") as handle:
            snapshot_bytes = handle.read()
    with open(log, "r+b") as handle:  # the power loss: the unsynced record is gone ...
        handle.truncate(synced)
    with store.open_session("s") as session:  # ... and another takes its seq
        assert session.set_state("other", 2) == 2
    with open(os.path.join(folder, name), "wb") as handle:
        handle.write(snapshot_bytes)
    reader = store.read_session("s")
    assert reader.state() == {"a": 1, "other": 2}
    assert "no longer holds the record" in reader.state_findings[0].message
    assert [f.level for f in store.verify()] == ["note"]


def test_clear_empties_the_state_and_its_snapshots(store):
    with store.create_session("s") as session:
        session.set_state("a", 1)
        session.snapshot()
        session.clear()
        assert session.state() == {}
        assert snapshot_names(store) == []
        session.set_state("b", 2)
    assert store.read_session("s").state() == {"b": 2}


def test_a_snapshot_of_the_log_before_a_clear_is_skipped(store):
    with store.create_session("s") as session:
        session.set_state("a", 1)
        session.snapshot()
        folder = os.path.join(store.path, "sessions", "s", "state")
        (name,) = os.listdir(folder)
        with open(os.path.join(folder, name), "rb") as handle:
            kept = handle.read()
        session.clear()
        session.set_state("b", 2)
    with open(os.path.join(folder, name), "wb") as handle:  # a crash kept it
        handle.write(kept)
    reader = store.read_session("s")
    assert reader.state() == {"b": 2}
    assert reader.state_findings[0].level == "note"


# --- time travel ---------------------------------------------------------------------------

def test_state_at_every_seq_matches_the_history(small_store):
    states = {0: {}}
    with small_store.create_session("s") as session:
        for i in range(40):
            if i % 3 == 0:
                session.commit([{"i": i}], state_patch={"k": i, f"x{i % 4}": i})
            else:
                session.append({"i": i, "pad": "p" * 200})
            if i == 20:
                session.checkpoint("middle")
            if i == 30:
                session.snapshot()
            states[session.head] = session.state()
        head = session.head
    reader = small_store.read_session("s")
    current: dict = {}
    for seq in range(head + 1):
        current = states.get(seq, current)
        assert reader.state_at(seq) == current, seq


def test_state_at_outside_the_history_is_refused(store):
    with store.create_session("s") as session:
        session.append_many([{"a": 1}, {"a": 2}])
        for seq in (3, -1, "1", True):
            with pytest.raises(fsstore.SeqOutOfRange):
                session.state_at(seq)
        session.clear()
        session.set_state("k", 1)
        with pytest.raises(fsstore.SeqOutOfRange):
            session.state_at(1)
        assert session.state_at(2) == {}
        assert session.state_at(3) == {"k": 1}


def test_events_until_a_seq_inside_a_batch_stops_there_across_segments(small_store):
    with small_store.create_session("s") as session:
        for _ in range(10):
            session.append_many([{"pad": "x" * 300}] * 3)
        for until in range(31):
            seqs = [e.seq for e in session.events(until_seq=until, include_internal=True)]
            assert seqs == list(range(1, until + 1))


def test_a_segment_missing_after_the_snapshot_is_reported_not_skipped(small_store):
    with small_store.create_session("s") as session:
        session.set_state("a", 1)
        session.snapshot()
        for i in range(40):
            session.commit([{"pad": "p" * 300}], state_patch={"i": i})
    log = os.path.join(small_store.path, "sessions", "s", "log")
    segments = sorted(name for name in os.listdir(log) if name.endswith(".fslog"))
    os.unlink(os.path.join(log, segments[len(segments) // 2]))
    with pytest.raises(fsstore.CorruptionError) as caught:
        small_store.read_session("s").state()
    assert caught.value.path.startswith(log)


def test_async_state_commit_and_checkpoint(store):
    async def main():
        async with store.create_session("s") as session:
            result = await session.acommit([{"a": 1}], state_patch={"k": 1}, commit_id="c")
            assert result.head == 2
            assert (await session.acommit([{"a": 1}], commit_id="c")).duplicate
            info = await session.acheckpoint("cp", kind="turn")
            assert (info.label, info.kind, info.seq) == ("cp", "turn", 2)
            assert await session.astate() == {"k": 1}
            assert await session.astate_at(1) == {}

    asyncio.run(main())


# --- records and bodies a hand or a newer fsstore wrote ---------------------------------------


@pytest.mark.parametrize("chain", [False, True], ids=["unchained", "chained"])
@pytest.mark.parametrize("ops, field", [
    ([["merge", 5]], "ops[0]"), ([["merge", [1]]], "ops[0]"), ([["set", 1, 2]], "ops[0]"),
    ([["delete", b"k"]], "ops[0]"), ([["set", "k"]], "ops[0]"), ("x", "ops"),
    ([["rename", "a", "b"]], "ops[0]"),
])
def test_a_state_record_that_does_not_fit_its_type_is_an_error_never_ignored(
        tmp_path, ops, field, chain):
    from chained_forge import append_chained
    from forge import append_raw

    store = fsstore.open_store(tmp_path / "store", chain=chain)
    with store.create_session("s") as session:
        session.set_state("a", 1)
    (append_chained if chain else append_raw)(store, "s", [(STATE_RECORD, {"ops": ops})])
    with pytest.raises(fsstore.FormatVersionError) as caught:
        store.read_session("s").state()
    assert field in str(caught.value) and "seq 2" in str(caught.value)


@pytest.mark.parametrize("change, part", [
    (lambda body: body.update(state={1: "a"}), "body"),
    (lambda body: body.update(state=[1]), "body"),
    (lambda body: body.update(commits=[["c", "x", 1]]), "body"),
    (lambda body: body.update(queue=[[1, {"kind": "k"}]]), "queue"),
    (lambda body: body["queue"][0][1].update(status="claimed"), "queue"),
    (lambda body: body["queue"][0][1].update(priority="high"), "queue"),
    (lambda body: body.update(queue=5), "queue"),
    (lambda body: body["inputs"][0][1].update(status="consumed"), "inputs"),
    (lambda body: body["inputs"][0][1].update(turn="1"), "inputs"),
])
@pytest.mark.parametrize("chain", [False, True], ids=["unchained", "chained"])
def test_a_snapshot_body_that_does_not_fit_its_type_is_skipped_and_named(
        tmp_path, change, part, chain):
    from chained_forge import rewrite_snapshot

    store = fsstore.open_store(tmp_path / "store", chain=chain)
    with store.create_session("s") as session:
        session.set_state("a", 1)
        session.queue.enqueue("job", {"n": 1})
        session.inputs.submit("hello")
        last = session.snapshot()
    path = os.path.join(store.path, "sessions", "s", "state", f"{last:020d}.snap")
    rewrite_snapshot(store.read_session("s"), path, change)  # chained: MAC recomputed
    reader = store.read_session("s")
    assert reader.state() == {"a": 1}
    assert [w.payload for w in reader.queue.items()] == [{"n": 1}]
    assert [i.payload for i in reader.inputs.items()] == ["hello"]
    (finding,) = reader.state_findings
    assert finding.path == path and f"snapshot {part} is malformed" in finding.message


def test_state_values_with_extension_types_are_refused_and_nothing_is_written(store):
    import msgspec

    with store.create_session("s") as session:
        before = tree_snapshot(store.path)
        for call in (lambda: session.set_state("k", msgspec.msgpack.Ext(5, b"abc")),
                     lambda: session.merge_state({"k": [msgspec.msgpack.Ext(1, b"")]}),
                     lambda: session.commit([], state_patch={"k": msgspec.Raw(b"\xc1")})):
            with pytest.raises(fsstore.InvalidState):
                call()
        assert tree_snapshot(store.path) == before
    assert store.read_session("s").state() == {}
