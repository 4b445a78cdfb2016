from __future__ import annotations

import json
import os

import pytest
from conftest import tree_snapshot
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
    assert json.loads(text) == {"format": "fsstore-store", "version": "1.3"}
    assert text.endswith("\n") and store.session_ids() == []
    assert fsstore.open_store(tmp_path / "new" / "store").path == store.path


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
    session_manifest.write_text(json.dumps(dict(data, version="2.0")))
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
    real_stat = os.stat

    def stat_of_a_new_file(path, *args, **kwargs):
        result = real_stat(path, *args, **kwargs)
        if path == lock_file:
            return os.stat_result((*result[:1], result.st_ino + 1, *result[2:]))
        return result

    monkeypatch.setattr(os, "stat", stat_of_a_new_file)
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
    assert {f.level for f in notes} == {"note"} and len(notes) == 2
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
