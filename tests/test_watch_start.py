"""A store watcher's start (fsstore/watch_start.py): each session's head and log start
read from its newest segment's header and last frame where those vouch for what its
reader would say, through the reader elsewhere; a wrong hint or a tail past its synced
mark never gives a baseline the reader would not."""

from __future__ import annotations

import os
import sys

from fsstore import SessionChange, layout
from fsstore.segment_header import (
    SEGMENT_HEADER_SIZE,
    decode_segment_header,
    mark_segment_header,
)
from fsstore.watch_start import quick_log_end

sys.path.insert(0, os.path.dirname(__file__))
from test_watch import Deaf  # noqa: E402


def quick(store, session_id):
    return quick_log_end(store.io, store._session_path(session_id))


def reader_says(store, session_id):
    tail = store.read_session(session_id).log_tail
    return tail.head, tail.log_start


def log_folder(store, session_id):
    return layout.log_dir(store._session_path(session_id))


def test_the_quick_read_gives_what_the_reader_gives(small_store):
    store = small_store
    store.create_session("fresh").close()
    with store.create_session("appended") as session:
        session.append_many([{"n": n} for n in range(5)])
    with store.create_session("rolled") as session:
        for n in range(60):  # segments of 4 KiB: several rollovers
            session.append({"n": n, "pad": "p" * 200})
    with store.create_session("cleared") as session:
        session.append_many([{"n": n} for n in range(3)])
        session.clear()
        session.append({"after": 1})
    assert len([n for n in os.listdir(log_folder(store, "rolled")) if n.endswith(".fslog")]) > 2
    # A session with no record yet has an empty segment: the reader reads it.
    assert quick(store, "fresh") is None
    for session_id in ("appended", "rolled", "cleared"):
        assert quick(store, session_id) == reader_says(store, session_id), session_id
    assert quick(store, "cleared")[1] > 1 and quick(store, "rolled")[0] == 60


def test_a_stale_hint_is_not_trusted(small_store):
    store = small_store
    with store.create_session("s") as session:
        for n in range(60):
            session.append({"n": n, "pad": "p" * 200})
    log = log_folder(store, "s")
    segments = sorted(n for n in os.listdir(log) if n.endswith(".fslog"))
    # The older segment's mark at its end, as a writer's barrier leaves it: all that
    # tells the hint is stale then is the segment named after the seq past its end.
    oldest = os.path.join(log, segments[0])
    with open(oldest, "r+b") as handle:
        header = decode_segment_header(handle.read(SEGMENT_HEADER_SIZE), oldest)
        handle.seek(0)
        handle.write(mark_segment_header(header.static, os.path.getsize(oldest)))
    hint = os.path.join(log, "tail.hint")
    with open(hint, "rb") as handle:
        lines = handle.read().split(b"\n")
    # A hint naming an older segment (one a newer segment follows), then a missing one.
    for named in (segments[0], "00000000000009999999.fslog"):
        with open(hint, "wb") as handle:
            handle.write(b"\n".join([named.encode(), *lines[1:]]))
        assert quick(store, "s") is None
    with store.watch(notifier=Deaf()) as watcher:
        with store.open_session("s") as session:
            session.append({"n": 60})
        assert watcher.poll() == [SessionChange("changed", "s", 61, 1)]


def test_a_tail_past_its_synced_mark_is_left_to_the_reader(store):
    with store.create_session("unsynced", durability="none") as session:
        session.append({"n": 1})
    assert quick(store, "unsynced") is None
    assert reader_says(store, "unsynced") == (1, 1)
    with store.create_session("s") as session:
        session.append({"n": 1})
    assert quick(store, "s") == (1, 1)
    # Bytes past the mark (a frame being written, or torn): the reader decides.
    segment = os.path.join(log_folder(store, "s"), layout.segment_name(1))
    with open(segment, "ab") as handle:
        handle.write(b"\x01" * 16)
    assert quick(store, "s") is None


def test_the_start_reads_through_the_reader_only_what_the_quick_read_cannot_vouch_for(
        store, monkeypatch):
    with store.create_session("synced") as session:
        session.append({"n": 1})
    with store.create_session("unsynced", durability="none") as session:
        session.append({"n": 1})
    read = []
    real = store.read_session
    monkeypatch.setattr(store, "read_session", lambda i: read.append(i) or real(i))
    with store.watch(notifier=Deaf()) as watcher:
        assert read == ["unsynced"]
        assert watcher._known == {"synced": (1, 1), "unsynced": (1, 1)}
        for session_id in ("synced", "unsynced"):
            with store.open_session(session_id) as session:
                session.append({"n": 2})
        assert sorted(watcher.poll()) == [SessionChange("changed", "synced", 2, 1),
                                          SessionChange("changed", "unsynced", 2, 1)]


def test_a_session_whose_manifest_is_gone_is_left_to_the_reader(store):
    store.create_session("s").close()
    os.unlink(os.path.join(store._session_path("s"), "session.json"))
    assert quick(store, "s") is None
    with store.watch(notifier=Deaf()) as watcher:
        assert "s" not in watcher._known
