"""What every adapter shares: framework ids to session ids, and their sessions made."""

from __future__ import annotations

import pytest

import fsstore
from fsstore.integrations._ids import ensure_session, session_id_for


def test_a_session_another_writer_opened_between_its_making_and_open_is_made(tmp_path):
    # create_session opens what it made exclusively; a process that opened it shared in
    # between makes that open fail with SessionLocked, though the session is there.
    store = fsstore.open_store(tmp_path)
    made = session_id_for("agents", "user 42")
    real_create = store.create_session

    def create_then_lose_the_race(session_id, **fields):
        real_create(session_id, **fields).close()
        raise fsstore.SessionLocked(f"session {session_id!r} is open for writing")

    store.create_session = create_then_lose_the_race  # type: ignore[method-assign]
    ensure_session(store, made, metadata={"framework": "test", "framework_id": "user 42"})
    assert store.has_session(made)
    ensure_session(store, made, metadata={})  # there already: nothing to do


def test_framework_ids_never_reach_a_path():
    for hostile in ("../../etc", "a/b", "CON", "", "\x00", "é" * 300):
        session_id = session_id_for("lc-chat", hostile)
        assert "/" not in session_id and session_id.startswith("lc-chat-")
    assert session_id_for("lc-chat", "x") != session_id_for("lc-kv", "x")
    with pytest.raises(fsstore.InvalidSessionId):
        session_id_for("../x", "t")
