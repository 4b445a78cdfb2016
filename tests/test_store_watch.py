"""A store watcher's hints (fsstore/store_watch.py): one inotify watch on sessions/ and
one per session's log/, a wake-up reads only the sessions hinted, and at the inotify
limit the sessions left unwatched are polled: every change is still notified."""

from __future__ import annotations

import errno
import sys
import time

import pytest

import fsstore
from fsstore import SessionChange, store_watch
from fsstore import watch as watch_module

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="inotify is Linux only")


def collect_until(watcher, wanted, timeout=30.0):
    """Notifications until every one of ``wanted`` came (or the timeout: the test
    then fails naming what is missing)."""
    found: list[SessionChange] = []
    deadline = time.monotonic() + timeout
    while not set(wanted) <= set(found) and time.monotonic() < deadline:
        found += watcher.get(timeout=0.5)
    return found


def make(store, count):
    for number in range(count):
        store.create_session(f"s{number}").close()


def test_a_store_watcher_holds_one_watch_per_session_and_one_for_sessions(store):
    make(store, 5)
    with store.watch(poll_interval=60) as watcher:
        notifier = watcher._notifier
        assert isinstance(notifier, store_watch.SessionsNotifier)
        assert notifier.watches == 6 and not notifier.unwatched
        store.create_session("late").close()
        found = collect_until(watcher, [SessionChange("created", "late", 0, 1)])
        assert SessionChange("created", "late", 0, 1) in found
        assert notifier.watches == 7


def test_a_wake_up_reads_only_the_sessions_hinted(store, monkeypatch):
    make(store, 6)
    with store.watch(poll_interval=60) as watcher:
        read = []
        real = store.read_session
        monkeypatch.setattr(store, "read_session", lambda i: read.append(i) or real(i))
        with store.open_session("s3") as session:
            session.append({"n": 1})
        found = collect_until(watcher, [SessionChange("changed", "s3", 1, 1)])
        assert found == [SessionChange("changed", "s3", 1, 1)]
        assert set(read) == {"s3"}


def limited(allowed):
    """An ``add_watch`` that refuses with ENOSPC (max_user_watches reached) after
    ``allowed`` watches."""
    real = store_watch.add_watch
    count = [0]

    def add_watch(fd, path, mask):
        count[0] += 1
        if count[0] > allowed:
            raise OSError(errno.ENOSPC, "inotify watch limit reached", path)
        return real(fd, path, mask)

    return add_watch


def test_at_the_watch_limit_every_change_is_still_notified(store, monkeypatch):
    make(store, 6)
    # sessions/ and two sessions' log/ are watched; the other four, and every session
    # made later, are polled.
    monkeypatch.setattr(store_watch, "add_watch", limited(3))
    with store.watch(poll_interval=0.05) as watcher:
        notifier = watcher._notifier
        assert isinstance(notifier, store_watch.SessionsNotifier)
        assert notifier.watches == 3 and len(notifier.unwatched) == 4
        wanted = []
        for number in range(6):
            with store.open_session(f"s{number}") as session:
                session.append_many([{"n": n} for n in range(number + 1)])
            wanted.append(SessionChange("changed", f"s{number}", number + 1, 1))
        with store.create_session("new") as session:
            session.append({"n": 1})
        found = collect_until(watcher, wanted)
        assert set(wanted) <= set(found), set(wanted) - set(found)
        # A notification tells a session's state now: a change and a delete read in
        # one wake-up are one "deleted"; so the delete waits for the changes' reads.
        store.delete_session("s5")
        found += collect_until(watcher, [SessionChange("deleted", "s5")])
        assert SessionChange("deleted", "s5") in found
        assert [c.session_id for c in found if c.kind == "created"] == ["new"]
        assert "new" in notifier.unwatched and "s5" not in notifier.unwatched
        with store.open_session("new") as session:
            session.append({"n": 2})
        found = collect_until(watcher, [SessionChange("changed", "new", 2, 1)])
        assert SessionChange("changed", "new", 2, 1) in found


def test_when_sessions_cannot_be_watched_every_session_is_polled(store, monkeypatch):
    make(store, 3)
    monkeypatch.setattr(store_watch, "add_watch", limited(0))
    monkeypatch.setattr(watch_module, "_new_observer", _observer_refuses)
    with store.watch(poll_interval=0.05) as watcher:
        assert isinstance(watcher._notifier, watch_module.PollingNotifier)
        with store.open_session("s1") as session:
            session.append({"n": 1})
        found = collect_until(watcher, [SessionChange("changed", "s1", 1, 1)])
        assert SessionChange("changed", "s1", 1, 1) in found


def _observer_refuses(*args, **kwargs):
    raise OSError(errno.EMFILE, "inotify instance limit reached")


def test_a_queue_overflow_reads_every_session_again(store):
    make(store, 2)
    notifier = store_watch.SessionsNotifier(store.path, store.session_ids)
    try:
        event = store_watch._EVENT.pack(-1, store_watch._IN_Q_OVERFLOW, 0, 0)
        assert notifier._parse(event) == ([], set(), True)
    finally:
        notifier.close()


def test_a_session_made_with_the_store_watched_is_watched_before_it_is_read(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    with store.watch(poll_interval=60) as watcher, store.create_session("a") as session:
        wanted = [SessionChange("created", "a", 0, 1)]
        assert SessionChange("created", "a", 0, 1) in collect_until(watcher, wanted)
        session.append({"n": 1})  # a hint from the watch on its log/
        found = collect_until(watcher, [SessionChange("changed", "a", 1, 1)])
        assert SessionChange("changed", "a", 1, 1) in found
