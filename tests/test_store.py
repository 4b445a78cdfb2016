from __future__ import annotations

import contextlib
import gc
import json
import os
import signal

import pytest
from conftest import tree_snapshot
from crashsim import VARIANTS, CrashSimIO
from procs import run
from test_layout import HOSTILE_IDS

import fsstore
from fsstore import (
    FormatVersionError,
    InvalidSessionId,
    NotAStore,
    SessionExists,
    SessionLocked,
    SessionNotFound,
    StoreNotFound,
    layout,
)
from fsstore.log import LogReader


def test_open_store_creates_a_store_with_a_diffable_manifest(tmp_path):
    store = fsstore.open_store(tmp_path / "new" / "store")
    text = (tmp_path / "new" / "store" / "fsstore.json").read_text()
    # A new store chains its sessions (FORMAT.md 3.4 "Which sessions"): unkeyed, as no key
    # is at hand.
    assert json.loads(text) == {"format": "fsstore-store", "version": "1.7",
                                "chain": {"alg": "sha256"}}
    assert text.endswith("\n") and store.session_ids() == []
    assert fsstore.open_store(tmp_path / "new" / "store").path == store.path
    fsstore.open_store(tmp_path / "plain", chain=False)
    assert json.loads((tmp_path / "plain" / "fsstore.json").read_text()) == {
        "format": "fsstore-store", "version": "1.7"}


def test_open_store_refuses_to_adopt_a_folder_of_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    before = tree_snapshot(tmp_path)
    with pytest.raises(NotAStore):
        fsstore.open_store(tmp_path)
    assert tree_snapshot(tmp_path) == before


def test_open_store_refuses_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotAStore, match="is a file"):
        fsstore.open_store(tmp_path / "file")


def test_open_store_without_create_needs_an_existing_store(tmp_path):
    with pytest.raises(StoreNotFound):
        fsstore.open_store(tmp_path / "missing", create=False)
    assert not (tmp_path / "missing").exists()


def test_a_store_or_session_of_a_newer_major_format_is_refused(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    store.create_session("s").close()
    session_manifest = tmp_path / "store" / "sessions" / "s" / "session.json"
    data = json.loads(session_manifest.read_text())
    # (major 2 is a chained session's, FORMAT.md 3.4: the next major after it)
    session_manifest.write_text(json.dumps(dict(data, version="3.0")))
    with pytest.raises(FormatVersionError):
        store.read_session("s")
    with pytest.raises(FormatVersionError):
        store.open_session("s")
    (tmp_path / "store" / "fsstore.json").write_text(
        json.dumps({"format": "fsstore-store", "version": "3.1"}))
    with pytest.raises(FormatVersionError, match="3.1"):
        fsstore.open_store(tmp_path / "store")


@pytest.mark.parametrize("session_id", HOSTILE_IDS)
def test_hostile_session_ids_get_a_typed_error_and_touch_nothing(tmp_path, session_id):
    store = fsstore.open_store(tmp_path / "store")
    store.create_session("real").close()
    before = tree_snapshot(tmp_path)
    calls = [store.create_session, store.open_session, store.read_session, store.has_session,
             store.delete_session]
    for call in calls:
        with pytest.raises(InvalidSessionId):
            call(session_id)
    assert tree_snapshot(tmp_path) == before


def test_create_open_exists_and_delete(store):
    session = store.create_session(title="generated id")
    assert layout.check_session_id(session.id)
    session.close()
    store.create_session("named").close()
    assert store.has_session("named") and "named" in store and "other" not in store
    with pytest.raises(SessionExists):
        store.create_session("named")
    with pytest.raises(SessionNotFound):
        store.open_session("other")
    with pytest.raises(SessionNotFound):
        store.read_session("other")
    store.delete_session("named")
    assert store.session_ids() == [session.id]
    assert sorted(os.listdir(os.path.join(store.path, "sessions"))) == [session.id]
    with pytest.raises(SessionNotFound):
        store.delete_session("named")


def test_delete_refuses_while_a_writer_has_the_session(store):
    session = store.create_session("s")
    with pytest.raises(SessionLocked):
        store.delete_session("s")
    session.close()
    store.delete_session("s")


def test_a_lock_taken_on_a_lock_file_that_was_replaced_is_refused(store, monkeypatch):
    # A writer that opened writer.lock, then waited while a delete renamed the session
    # away and a create made a new one, holds a lock on the old file: it must not write.
    store.create_session("s").close()
    lock_file = layout.writer_lock_path(store._session_path("s"))
    real_lstat = os.lstat

    def stat_of_a_new_file(path, *args, **kwargs):
        result = real_lstat(path, *args, **kwargs)
        if path == lock_file:
            return os.stat_result((*result[:1], result.st_ino + 1, *result[2:]))
        return result

    monkeypatch.setattr(os, "lstat", stat_of_a_new_file)
    with pytest.raises(SessionNotFound, match="deleted and made again"):
        store.open_session("s")
    monkeypatch.undo()
    store.open_session("s").close()  # the refused acquisition was rolled back


def test_list_sessions_reads_only_the_end_of_each_log(small_store, monkeypatch):
    for name, count in (("a", 3), ("b", 200)):
        with small_store.create_session(name, title=name.upper(), tags=["t"]) as session:
            for index in range(count):
                session.append({"i": index, "pad": "p" * 100})
    calls = []
    real = LogReader.read_segment
    monkeypatch.setattr(LogReader, "read_segment",
                        lambda self, first: calls.append(first) or real(self, first))
    infos = small_store.list_sessions()
    assert calls == []  # no whole segment was read, let alone the whole log
    assert [(i.id, i.event_count, i.head, i.title, i.tags) for i in infos] == [
        ("a", 3, 3, "A", ["t"]), ("b", 200, 200, "B", ["t"])]
    assert all(i.created <= i.updated for i in infos)


def test_leftovers_of_interrupted_operations_are_not_sessions(store):
    store.create_session("s").close()
    sessions = os.path.join(store.path, "sessions")
    os.mkdir(os.path.join(sessions, ".trash-old-1234"))
    os.mkdir(os.path.join(sessions, ".tmp-new-5678"))
    (open(os.path.join(sessions, "stray.txt"), "w")).close()
    assert store.session_ids() == ["s"]
    notes = store.verify()
    assert {f.level for f in notes} == {"note"} and len(notes) == 3  # stray.txt, noted
    assert store.remove_leftovers() == [os.path.join(sessions, ".trash-old-1234")]


def test_find_store_walks_up_like_git_and_honours_the_environment(tmp_path, monkeypatch):
    store = fsstore.open_store(tmp_path / "store")
    deep = tmp_path / "store" / "sessions" / "x" / "y"
    deep.mkdir(parents=True)
    monkeypatch.delenv("FSSTORE_STORE", raising=False)
    assert fsstore.find_store(deep) == store.path
    monkeypatch.chdir(deep)
    assert fsstore.find_store() == store.path
    monkeypatch.setenv("FSSTORE_STORE", str(tmp_path / "elsewhere"))
    assert fsstore.find_store() == str(tmp_path / "elsewhere")
    monkeypatch.delenv("FSSTORE_STORE")
    with pytest.raises(StoreNotFound, match="--store"):
        fsstore.find_store(tmp_path)


def test_every_error_is_an_fsstore_error_and_its_builtin():
    assert issubclass(SessionNotFound, KeyError)
    assert issubclass(SessionNotFound, fsstore.FsStoreError)
    assert issubclass(SessionExists, FileExistsError)
    assert issubclass(InvalidSessionId, ValueError)
    assert issubclass(SessionLocked, TimeoutError)
    assert str(SessionNotFound("no session 'x'")) == "no session 'x'"


# --- deleting a leased session ----------------------------------------------------------------


def test_delete_refuses_a_session_with_a_live_lease_unless_forced(store):
    store.create_session("s").close()
    store.claim_lease("s", "worker", ttl=600)
    before = tree_snapshot(store._session_path("s"))
    with pytest.raises(SessionLocked, match="leased to worker.*force=True"):
        store.delete_session("s")
    assert tree_snapshot(store._session_path("s")) == before
    store.delete_session("s", force=True)
    assert not store.has_session("s")


def test_delete_goes_ahead_once_the_lease_is_released_or_expired(store, clock):
    store.create_session("released").close()
    store.create_session("expired").close()
    store.release_lease(store.claim_lease("released").lease)
    store.delete_session("released")
    store.claim_lease("expired", "worker", ttl=30)
    with pytest.raises(SessionLocked, match="leased to worker"):
        store.delete_session("expired")
    clock.advance(30)  # the lease's end: from here on it is expired
    store.delete_session("expired")
    assert store.session_ids() == []


# --- one damaged session never breaks the store -----------------------------------------------


def _store_with_damaged_sessions(store):
    """A readable session "good" (with a collection and a fork) beside three damaged ones:
    garbage session.json, a garbage log segment header, a garbage collection.json."""
    for name in ("good", "bad-manifest", "bad-log", "bad-collection"):
        with store.create_session(name, title=name) as session:
            session.append({"kind": "m", "text": name})
            session.create_collection("v", 2).upsert(
                [fsstore.VectorDocument(f"{name}-doc", [1.0, 0.5])])
    store.fork_session("good", "fork").close()
    path = store._session_path
    with open(os.path.join(path("bad-manifest"), "session.json"), "wb") as handle:
        handle.write(b"\x00garbage{")
    segment = sorted(os.listdir(os.path.join(path("bad-log"), "log")))[0]
    with open(os.path.join(path("bad-log"), "log", segment), "r+b") as handle:
        handle.write(b"\xff" * 64)
    with open(os.path.join(path("bad-collection"), "vectors", "v", "collection.json"),
              "wb") as handle:
        handle.write(b"[1, 2")


def test_list_sessions_marks_a_damaged_session_and_lists_the_others(store):
    _store_with_damaged_sessions(store)
    infos = {info.id: info for info in store.list_sessions()}
    assert sorted(infos) == ["bad-collection", "bad-log", "bad-manifest", "fork", "good"]
    assert infos["good"].damaged is None and infos["good"].event_count == 1
    assert infos["bad-collection"].damaged is None  # its events read fine
    assert "session.json" in infos["bad-manifest"].damaged
    assert ".fslog" in infos["bad-log"].damaged
    assert infos["bad-log"].title == "bad-log"  # what its manifest says is kept


def test_search_skips_a_damaged_session_unless_it_is_named(store):
    _store_with_damaged_sessions(store)
    found = store.search("v", [1.0, 0.5], k=10)
    assert sorted(r.session_id for r in found) == ["bad-log", "good"]  # forks share no vectors
    with pytest.raises(fsstore.CorruptionError, match="collection.json"):
        store.search("v", [1.0, 0.5], sessions=["good", "bad-collection"])


def test_lineage_and_verify_go_on_past_a_damaged_session(store):
    _store_with_damaged_sessions(store)
    assert [r.session for r in store.lineage("good").forks] == ["fork"]
    findings = store.verify()
    damaged = {f.path.split(os.sep + "sessions" + os.sep)[1].split(os.sep)[0]
               for f in findings if f.level == "problem"}
    assert damaged == {"bad-manifest", "bad-log", "bad-collection"}
    assert all(isinstance(f, fsstore.Finding) for f in findings)


# --- a store releases what it holds ------------------------------------------------------------


def _open_descriptors() -> int:
    # Collect first: objects left by earlier tests would otherwise close their
    # descriptors in the middle of a count.
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def five_sessions(tmp_path):
    root = tmp_path / "store"
    with fsstore.open_store(root) as store:
        for i in range(5):
            store.create_session(f"s{i}").close()
    return root


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
def test_a_closed_store_holds_no_descriptors(five_sessions):
    before = _open_descriptors()
    for _ in range(20):
        with fsstore.open_store(five_sessions) as store:
            for i in range(5):
                store.release_lease(store.claim_lease(f"s{i}").lease)
    assert _open_descriptors() == before
    store.claim_lease("s0")  # a closed store still works, and is closed again
    store.close()
    assert _open_descriptors() == before


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
def test_a_store_dropped_without_close_releases_its_descriptors(five_sessions):
    before = _open_descriptors()
    for _ in range(4):  # each a gc pass over the whole heap: a leak shows at once
        store = fsstore.open_store(five_sessions)
        for i in range(5):
            store.release_lease(store.claim_lease(f"s{i}").lease)
        del store
        gc.collect()
    assert _open_descriptors() == before


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
def test_a_store_keeps_descriptors_for_a_bounded_number_of_sessions(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    for i in range(40):
        store.create_session(f"s{i}").close()
    before = _open_descriptors()
    for i in range(40):
        store.release_lease(store.claim_lease(f"s{i}").lease)
    assert _open_descriptors() - before <= 2 * 16
    store.close()
    assert _open_descriptors() == before


# --- creating a store is all or nothing ---------------------------------------------------------


def test_a_crash_at_any_step_of_creating_a_store_leaves_a_store_or_nothing(tmp_path):
    parent = tmp_path / "parent"
    parent.mkdir()
    io = CrashSimIO(str(parent))
    states = []

    def crash_here():
        for variant in VARIANTS:
            dest = tmp_path / f"crash{len(states)}"
            io.materialize(str(dest), variant)
            states.append(dest)

    io.on_op = crash_here
    fsstore.open_store(parent / "store", io=io)
    assert len(states) >= 5 * len(VARIANTS)
    for dest in states:
        with pytest.raises(StoreNotFound) if not (dest / "store" / "fsstore.json").exists() \
                else contextlib.nullcontext():
            fsstore.open_store(dest / "store", create=False)
        store = fsstore.open_store(dest / "store")
        store.create_session("s").close()
        assert store.verify() == []


def test_a_store_killed_before_its_manifest_is_renamed_is_finished_by_the_next_open(tmp_path):
    script = (
        "import os, signal, sys\n"
        "import fsstore\n"
        "class KilledBeforeRename(fsstore.FileIO):\n"
        "    def rename(self, src, dst):\n"
        "        if dst.endswith('fsstore.json'):\n"
        "            os.kill(os.getpid(), signal.SIGKILL)\n"
        "        super().rename(src, dst)\n"
        "fsstore.open_store(sys.argv[1], io=KilledBeforeRename())\n")
    root = tmp_path / "store"
    run(script, root, returncode=-signal.SIGKILL)
    assert not (root / "fsstore.json").exists() and (root / "sessions").is_dir()
    with pytest.raises(StoreNotFound, match="creation was interrupted"):
        fsstore.open_store(root, create=False)
    store = fsstore.open_store(root)
    store.create_session("s").close()
    assert fsstore.open_store(root, create=False).session_ids() == ["s"]


def test_a_folder_with_a_session_but_no_manifest_is_not_taken_for_a_leftover(tmp_path):
    (tmp_path / "store" / "sessions" / "s").mkdir(parents=True)
    with pytest.raises(NotAStore):
        fsstore.open_store(tmp_path / "store")


# --- creating a session leaves nothing when it fails ---------------------------------------------


def test_a_create_session_failing_at_any_step_leaves_no_folder(tmp_path):
    root = tmp_path / "store"
    fsstore.open_store(root).close()
    for step in range(1, 100):
        io = CrashSimIO(str(root))
        io.fail_at = step
        store = fsstore.open_store(root, io=io)
        try:
            store.create_session("s").close()
        except OSError:
            assert os.listdir(root / "sessions") in ([], ["s"])  # ["s"]: failed after the rename
            if os.listdir(root / "sessions"):
                fsstore.open_store(root).delete_session("s")
            continue
        break
    else:
        raise AssertionError("create_session never succeeded")
    assert step > 5


def test_a_session_its_reader_would_refuse_is_not_left_behind(store):
    with pytest.raises(fsstore.FsStoreError):
        store.create_session("s", metadata={"big": "x" * (2 << 20)})
    assert os.listdir(os.path.join(store.path, "sessions")) == []
    assert store.list_sessions() == []
