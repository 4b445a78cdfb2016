"""Who may write a session, and when (fsstore/writer_access.py): the exclusive lock, the
shared mutex, and what an open that fails lets go of."""

from __future__ import annotations

import inspect
import os

import pytest

import fsstore
from fsstore.lease import LeaseOwner
from fsstore.writer_access import acquire_writer_lock

ELSEWHERE = LeaseOwner("another-host", 4242, None, "remote")


def _lock_is_free(store: fsstore.Store, session_id: str = "s") -> bool:
    path = os.path.join(store.path, "sessions", session_id)
    try:
        acquire_writer_lock(path, session_id, 0).release()
    except fsstore.SessionLocked:
        return False
    return True


def test_an_exclusive_open_refused_by_a_lease_leaves_the_lock_free(store):
    store.create_session("s").close()
    store.claim_lease("s", ELSEWHERE, ttl=30)
    with pytest.raises(fsstore.SessionLocked, match="leased to"):
        store.open_session("s")  # refused under the lock, after taking it
    assert _lock_is_free(store)


def test_a_shared_open_refused_by_a_lost_lease_leaves_the_mutex_free(store):
    store.create_session("s").close()
    lease = store.claim_lease("s", "me", ttl=30).lease
    store.release_lease(lease)
    store.claim_lease("s", ELSEWHERE, ttl=30)
    with pytest.raises(fsstore.LeaseLost):
        store.open_session("s", lease=lease)  # refused under the mutex, after taking it
    assert _lock_is_free(store)


def test_an_exclusive_writer_holds_the_lock_until_it_closes(store):
    session = store.create_session("s")
    assert not _lock_is_free(store)
    session.close()
    assert _lock_is_free(store)


def test_a_shared_writer_takes_the_lock_only_inside_a_write(store):
    store.create_session("s").close()
    with store.open_session("s", shared=True) as session:
        assert _lock_is_free(store)
        seen = []
        with session._access.writing(fenced=False):
            seen.append(_lock_is_free(store))
        assert seen == [False]
        session.queue.enqueue("job")
        assert _lock_is_free(store)


def test_an_operation_holds_a_shared_sessions_lock_across_its_calls(store):
    store.create_session("s").close()
    with store.open_session("s", shared=True) as session:
        with session.operation():
            session.append({"kind": "note", "n": 1})
            assert not _lock_is_free(store)  # no other writer between the two calls
            session.append({"kind": "note", "n": 2})
            with session.operation():  # re-entrant
                assert session.head == 2
        assert _lock_is_free(store)
    with store.open_session("s") as exclusive, exclusive.operation():
        exclusive.append({"kind": "note", "n": 3})  # the only writer: nothing to take


def test_a_shared_writer_of_a_deleted_session_closes_quietly(store, caplog):
    store.create_session("s").close()
    session = store.open_session("s", shared=True)
    session.messages.append({"role": "user", "parts": [{"type": "text", "text": "hi"}]})
    store.delete_session("s")
    with caplog.at_level("WARNING"):
        session.close()
    assert session.closed
    assert caplog.records == []  # nothing of it is left to mark: no warning


def _text(session: fsstore.Session, text: str) -> None:
    session.messages.append({"role": "user", "parts": [{"type": "text", "text": text}]})


def _texts(session: fsstore.SessionReader) -> list[str]:
    return [message.parts[0].text for message in session.messages.all()]


def test_a_shared_writer_appends_where_readers_look_after_another_cleared_twice(store):
    other = fsstore.open_store(store.path)
    store.create_session("s").close()
    clearing = store.open_session("s", shared=True)
    late = other.open_session("s", shared=True)
    _text(clearing, "p0")
    clearing.clear()
    _text(clearing, "p1")
    clearing.clear()  # the segment that followed the late writer's one is gone too
    _text(late, "q1")
    assert late.revision == (3, 3)
    clearing.close()
    late.close()
    assert _texts(fsstore.open_store(store.path).read_session("s")) == ["q1"]


def test_a_shared_writer_finds_the_log_after_another_sealed_its_segment_for_a_fork(store):
    other = fsstore.open_store(store.path)
    store.create_session("s").close()
    late = store.open_session("s", shared=True)
    forking = other.open_session("s", shared=True)
    late.append({"kind": "note", "t": "a0"})
    forking.fork("f").close()  # seals the segment late has open; the fork links it
    forking.append({"kind": "note", "t": "b1"})
    forking.clear()  # the segment that followed it is gone too
    late.append({"kind": "note", "t": "a2"})
    late.clear()
    late.append({"kind": "note", "t": "a3"})
    late.close()
    forking.close()
    fresh = fsstore.open_store(store.path)
    assert [e.data["t"] for e in fresh.read_session("s").events()] == ["a3"]
    assert [e.data["t"] for e in fresh.read_session("f").events()] == ["a0"]
    assert fresh.verify() == []


def test_a_shared_writer_renames_a_stale_tail_hint_and_appends_at_the_tail(store):
    store.create_session("s").close()
    with store.open_session("s", shared=True) as session:
        session.append({"kind": "note", "t": "one"})
        hint = os.path.join(store.path, "sessions", "s", "log", "tail.hint")
        os.unlink(hint)  # as a crash between a segment's rename and the hint's leaves it
        session.append({"kind": "note", "t": "two"})
        assert os.path.exists(hint)
        session.append({"kind": "note", "t": "three"})
    assert [e.data["t"] for e in store.read_session("s").events()] == ["one", "two", "three"]


def test_a_shared_writer_of_a_session_deleted_and_made_again_writes_nothing(store):
    store.create_session("s").close()
    stale = store.open_session("s", shared=True)
    _text(stale, "old")
    store.delete_session("s")
    store.create_session("s").close()
    with pytest.raises(fsstore.SessionNotFound, match="made again"):
        _text(stale, "lost?")
    stale.close()
    assert _texts(store.read_session("s")) == []
    with store.open_session("s", shared=True) as fresh:
        _text(fresh, "new")
    assert _texts(store.read_session("s")) == ["new"]


def test_write_methods_keep_their_names_docstrings_and_signatures():
    append = fsstore.Session.append
    assert append.__name__ == "append"
    assert append.__doc__ and "Append one event" in append.__doc__
    assert list(inspect.signature(append).parameters) == ["self", "event", "turn", "kind", "ts"]
