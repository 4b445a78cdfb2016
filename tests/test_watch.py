"""Change notifications: a session followed from another process, exactly once and in
order, whatever the filesystem events do; a store's sessions followed; no leaks."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
import threading
import time
import types

import pytest
from procs import run

import fsstore
from fsstore import LogCleared, SessionChange
from fsstore import watch as watch_module


class Deaf:
    """A notifier that never hints: only the periodic re-read finds anything."""

    def __init__(self) -> None:
        self.closed = threading.Event()

    def wait(self, timeout: float) -> bool:
        self.closed.wait(timeout)
        return False

    def close(self) -> None:
        self.closed.set()


def open_files() -> int:
    """How many descriptors this process has open (0 where /proc does not say)."""
    return len(os.listdir("/proc/self/fd")) if os.path.exists("/proc/self/fd") else 0


def collect(watcher, count: int, timeout: float = 30.0) -> list:
    found: list = []
    deadline = time.monotonic() + timeout
    while len(found) < count and time.monotonic() < deadline:
        found += watcher.get(timeout=0.5)
    return found


WRITER = textwrap.dedent("""
    import sys, time, fsstore
    store = fsstore.open_store(sys.argv[1], segment_size=4096)
    with store.open_session("s") as session:
        n = 0
        for batch in range(int(sys.argv[2])):
            size = 1 + batch % 4
            session.append_many([{"n": n + j, "batch": batch, "size": size, "pad": "x" * 300}
                                 for j in range(size)])
            n += size
            if batch % 7 == 0:
                time.sleep(0.001)
    print(n)
""")


@pytest.mark.stress
@pytest.mark.parametrize("notifier", ["watchdog", "deaf"])
def test_every_event_from_another_process_arrives_once_in_order_and_batches_whole(
        store, notifier):
    store.create_session("s").close()
    hint = Deaf() if notifier == "deaf" else None
    with store.read_session("s").watch(poll_interval=0.05, notifier=hint) as watcher:
        (total_line,) = run(WRITER, store.path, 300)
        total = int(total_line)
        found = collect(watcher, total)
    assert [e.data["n"] for e in found] == list(range(total))  # once, in order
    assert [e.seq for e in found] == list(range(1, total + 1))
    segments = os.listdir(os.path.join(store.path, "sessions", "s", "log"))
    assert len(segments) > 10  # the events crossed many rollovers
    for event in found:  # batches are delivered whole: never a batch's first part alone
        assert sum(1 for e in found if e.data["batch"] == event.data["batch"]) == \
            event.data["size"]
    assert watcher.last_seq == total


def test_a_watcher_resumes_from_its_last_seq_missing_and_repeating_nothing(store):
    with store.create_session("s") as session:
        session.append_many([{"n": n} for n in range(5)])
        first = store.read_session("s").watch(after_seq=0, poll_interval=0.05)
        got = collect(first, 5)
        first.close()
        session.append_many([{"n": n} for n in range(5, 9)])
        again = store.read_session("s").watch(after_seq=first.last_seq, poll_interval=0.05)
        got += collect(again, 4)
        again.close()
    assert [e.data["n"] for e in got] == list(range(9))


def test_a_clear_is_delivered_as_a_notification(store):
    with store.create_session("s") as session:
        session.append({"n": 1})
        with store.read_session("s").watch(poll_interval=0.05) as watcher:
            assert [e.data for e in collect(watcher, 1)] == [{"n": 1}]
            session.append({"n": 2})
            session.clear()
            session.append({"n": 3})
            found = collect(watcher, 2)
    assert found[0] == LogCleared("s", 3) or found[0].data == {"n": 2}
    assert LogCleared("s", 3) in found and found[-1].data == {"n": 3}


def test_a_torn_tail_is_not_delivered_until_it_is_whole(store):
    with store.create_session("s") as session:
        session.append({"n": 1})
        session.append({"n": 2, "pad": "y" * 500})
    log = os.path.join(store.path, "sessions", "s", "log")
    (segment,) = [n for n in os.listdir(log) if n.endswith(".fslog")]
    path = os.path.join(log, segment)
    with open(path, "rb") as handle:
        raw = handle.read()
    whole_first = len(raw) - 100  # inside the second frame (of about 580 bytes)
    with open(path, "r+b") as handle:
        handle.truncate(whole_first)
    with store.read_session("s").watch(poll_interval=0.05) as watcher:
        assert [e.data["n"] for e in collect(watcher, 2, timeout=0.5)] == [1]
        with open(path, "r+b") as handle:  # the rest of the write lands
            handle.seek(whole_first)
            handle.write(raw[whole_first:])
        assert [e.data["n"] for e in collect(watcher, 1)] == [2]


def test_the_iterator_the_async_iterator_and_the_callback(store):
    with store.create_session("s") as session:
        session.append_many([{"n": n} for n in range(3)])
    reader = store.read_session("s")
    with reader.watch(poll_interval=0.05) as watcher:
        it = iter(watcher)
        assert [next(it).data["n"] for _ in range(3)] == [0, 1, 2]

    async def follow() -> list:
        got = []
        with reader.watch(poll_interval=0.05) as watcher:
            async for event in watcher:
                got.append(event.data["n"])
                if len(got) == 3:
                    break
        return got
    assert asyncio.run(follow()) == [0, 1, 2]

    seen: list = []
    done = threading.Event()

    def deliver(event) -> None:
        seen.append(event.data["n"])
        if len(seen) == 4:
            done.set()
    watcher = reader.watch(poll_interval=0.05, callback=deliver)
    with store.open_session("s") as session:
        session.append({"n": 3})
    assert done.wait(10)
    watcher.close()
    assert seen == [0, 1, 2, 3]


def test_starting_and_stopping_hundreds_of_watchers_leaks_nothing(store, long_run):
    store.create_session("s").close()
    reader = store.read_session("s")
    for _ in range(5):  # watchdog's first start sets up what it keeps
        reader.watch().close()
    threads, files = threading.active_count(), open_files()
    # Counts are compared exactly, so one thread or descriptor left per watcher shows at
    # any count: 200 by default, a thousand with --long.
    for _ in range(1000 if long_run else 200):
        watcher = reader.watch(poll_interval=0.05)
        watcher.get(timeout=0)
        watcher.close()
    assert threading.active_count() == threads
    assert open_files() == files


def test_a_store_watcher_sees_sessions_created_changed_cleared_and_deleted(store):
    store.create_session("old").close()
    with store.watch(poll_interval=0.05) as watcher:
        with store.create_session("new") as session:
            session.append({"x": 1})
        found = collect(watcher, 1)
        while not any(c.kind == "changed" or (c.kind == "created" and c.head == 1)
                      for c in found):
            found += watcher.get(timeout=5)
        with store.open_session("old") as session:
            session.append({"y": 1})
            session.clear()
        found += watcher.get(timeout=5)
        store.delete_session("new")
        found += collect(watcher, 1)
    kinds = [(c.kind, c.session_id) for c in found]
    assert ("created", "new") in kinds and ("deleted", "new") in kinds
    assert ("cleared", "old") in kinds or ("changed", "old") in kinds
    assert SessionChange("deleted", "new") in found


def test_the_store_watcher_reports_the_existing_sessions_when_asked(store):
    store.create_session("a").close()
    with store.watch(include_existing=True) as watcher:
        assert watcher.get(timeout=1) == [SessionChange("created", "a", 0, 1)]


class PublicReads:
    """A store as a StoreWatcher may use it: its path, session ids and readers only."""

    def __init__(self, store) -> None:
        self._store = store

    @property
    def path(self) -> str:
        return self._store.path

    def session_ids(self) -> list[str]:
        return self._store.session_ids()

    def read_session(self, session_id: str):
        return self._store.read_session(session_id)


def test_a_store_watcher_reads_the_store_through_its_public_reads_only(store):
    store.create_session("a").close()
    watcher = watch_module.StoreWatcher(PublicReads(store), poll_interval=0.05,
                                        notifier=Deaf())
    with watcher:
        with store.open_session("a") as session:
            session.append({"x": 1})
        assert collect(watcher, 1) == [SessionChange("changed", "a", 1, 1)]


class ReplacedUnder(PublicReads):
    """A store whose session readers' tails meet a log file gone ``times`` times first,
    as when a clear or a compaction replaces the newest segment while it is read."""

    def __init__(self, store, times: int) -> None:
        super().__init__(store)
        self.times = times

    def read_session(self, session_id: str):
        reader = self._store.read_session(session_id)
        outer = self

        class Reader:
            @property
            def log_tail(self):
                if outer.times > 0:
                    outer.times -= 1
                    raise FileNotFoundError(2, "No such file or directory", "log/segment")
                return reader.log_tail
        return Reader()


@pytest.mark.parametrize("times", [1, 4, 5])
def test_a_session_whose_log_is_replaced_while_it_is_read_is_not_taken_for_deleted(
        store, times):
    store.create_session("a").close()
    reads = ReplacedUnder(store, 0)
    watcher = watch_module.StoreWatcher(reads, poll_interval=0.05, notifier=Deaf())
    with watcher:
        with store.open_session("a") as session:
            session.append({"x": 1})
        reads.times = times
        found = watcher.poll()
        if times < watch_module._TAIL_TRIES:  # read again until it reads
            assert found == [SessionChange("changed", "a", 1, 1)]
        else:  # left as it was known for a later read: never "deleted"
            assert found == []
            assert watcher.poll() == [SessionChange("changed", "a", 1, 1)]
        store.delete_session("a")
        reads.times = 1
        assert watcher.poll() == [SessionChange("deleted", "a")]


def test_bad_watch_settings_are_refused(store):
    store.create_session("s").close()
    reader = store.read_session("s")
    for bad in ({"after_seq": -1}, {"after_seq": "3"}, {"poll_interval": 0},
                {"poll_interval": True}):
        with pytest.raises(fsstore.InvalidSetting):
            reader.watch(**bad)


def test_a_watcher_can_start_in_the_middle_of_a_large_segment(store):
    with store.create_session("s") as session:
        for start in range(0, 3000, 500):
            session.append_many([{"n": n, "pad": "p" * 200} for n in range(start, start + 500)])
        with store.read_session("s").watch(after_seq=2500, poll_interval=0.05) as watcher:
            session.append({"n": 3000})
            found = collect(watcher, 501)
    assert [e.data["n"] for e in found] == list(range(2500, 3001))


def test_a_watched_session_forked_and_rolled_over_delivers_everything(store):
    with store.create_session("s") as session:
        session.append({"n": 0})
        with store.read_session("s").watch(poll_interval=0.05) as watcher:
            assert len(collect(watcher, 1)) == 1
            session.fork("f").close()  # seals the active segment: a rollover
            session.append_many([{"n": 1}, {"n": 2}])
            found = collect(watcher, 2)
    assert [e.data["n"] for e in found] == [1, 2]


def test_store_watchers_started_and_stopped_leak_nothing(store):
    store.watch().close()
    threads, files = threading.active_count(), open_files()
    for _ in range(100):
        with store.watch(poll_interval=0.05) as watcher:
            watcher.get(timeout=0)
    assert threading.active_count() == threads
    assert open_files() == files


def test_a_store_watcher_goes_on_past_a_damaged_session(store):
    for name in ("a", "b"):
        store.create_session(name).close()
    manifest = os.path.join(store._session_path("b"), "session.json")
    with open(manifest, "rb") as handle:
        good = handle.read()
    with open(manifest, "wb") as handle:
        handle.write(b"\x00garbage")
    with store.watch(notifier=Deaf(), include_existing=True) as watcher:
        assert watcher.poll() == [SessionChange("created", "a", 0, 1)]  # b is not announced
        with store.open_session("a") as session:
            session.append({"x": 1})
        assert watcher.poll() == [SessionChange("changed", "a", 1, 1)]
        with open(manifest, "wb") as handle:
            handle.write(good)
        assert watcher.poll() == [SessionChange("created", "b", 0, 1)]
        # A known session that becomes unreadable is not taken for deleted.
        log = os.path.join(store._session_path("a"), "log")
        with open(os.path.join(log, sorted(os.listdir(log))[0]), "r+b") as handle:
            handle.write(b"\xff" * 64)
        assert watcher.poll() == []
        store.create_session("c").close()
        assert watcher.poll() == [SessionChange("created", "c", 0, 1)]


# --- where hints come from ---------------------------------------------------------------


def _hinted_by(notifier, folder) -> bool:
    """Whether a file written in ``folder`` wakes ``notifier`` (waiting at most 30 s): a
    hint, since ``wait`` is True only when hinted."""
    with open(os.path.join(folder, "touched"), "ab") as handle:
        handle.write(b"x")
    return notifier.wait(30)


def _hints_come_from(kind: type, store) -> None:
    """A session watcher's hints come from a notifier of ``kind``, which a change wakes;
    and a watcher that has caught up waits for that hint (not its hour-long interval)."""
    store.create_session("s").close()
    reader = store.read_session("s")
    notifier = watch_module._notifier_for(reader._log.path)
    try:
        assert isinstance(notifier, kind)
        assert _hinted_by(notifier, reader._log.path)
    finally:
        notifier.close()
    with reader.watch(poll_interval=3600) as watcher:
        assert isinstance(watcher._notifier, kind)
        assert watcher.get(timeout=0) == []  # caught up: the next get waits for a hint
        with store.open_session("s") as session:
            session.append({"n": 1})
        assert [e.data for e in watcher.get(timeout=30)] == [{"n": 1}]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux only")
def test_a_session_watcher_on_linux_takes_its_hints_from_inotify_through_libc(store):
    _hints_come_from(watch_module.InotifyNotifier, store)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux only")
def test_the_inotify_descriptor_is_not_inherited_by_child_processes(tmp_path):
    notifier = watch_module.InotifyNotifier([str(tmp_path)])
    try:
        assert os.get_inheritable(notifier._fd) is False
    finally:
        notifier.close()


def inotify_descriptors() -> int:
    """How many inotify descriptors this process has open."""
    folder = "/proc/self/fd"
    found = 0
    for name in os.listdir(folder):
        try:
            found += os.readlink(os.path.join(folder, name)) == "anon_inode:inotify"
        except OSError:
            pass  # the listing's own descriptor, closed by now
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux only")
def test_a_notifier_closed_under_a_waiting_thread_never_touches_a_reused_descriptor(
        tmp_path, monkeypatch):
    before = inotify_descriptors()
    notifier = watch_module.InotifyNotifier([str(tmp_path)])
    own = (notifier._fd, notifier._wake_read, notifier._wake_write)
    selecting, go = threading.Event(), threading.Event()
    real_select = watch_module.select.select

    def paused_select(*args):
        # The waiting thread holds the descriptors' numbers and is about to select on
        # them: it stops here until close() has run and other files were opened.
        selecting.set()
        go.wait()
        return real_select(*args)

    monkeypatch.setattr(watch_module, "select", types.SimpleNamespace(select=paused_select))
    hinted: list[bool] = []
    waiter = threading.Thread(target=lambda: hinted.append(notifier.wait(60)))
    waiter.start()
    opened: list[int] = []
    try:
        assert selecting.wait(60)
        notifier.close()
        # Files opened now take the lowest free numbers: the notifier's own, had close
        # freed them under the waiter. Always readable, so a select on them returns at
        # once, and a read would move their offset.
        data = tmp_path / "data"
        data.write_bytes(b"another file of this process")
        while not opened or opened[-1] < max(own):
            opened.append(os.open(data, os.O_RDONLY))
        go.set()
        waiter.join(60)
        assert not waiter.is_alive()
        assert hinted == [False]  # woken by close: no hint
        assert [os.lseek(fd, 0, os.SEEK_CUR) for fd in opened] == [0] * len(opened)
    finally:
        go.set()
        for fd in opened:
            os.close(fd)
    assert notifier.closed and inotify_descriptors() == before  # the waiter closed them


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux only")
def test_closing_a_watcher_whose_callback_thread_waits_closes_its_descriptors(store):
    store.create_session("s").close()
    before = inotify_descriptors()
    watcher = store.read_session("s").watch(poll_interval=3600, callback=lambda event: None)
    notifier = watcher._notifier
    assert isinstance(notifier, watch_module.InotifyNotifier)
    while notifier._waiters == 0:  # until the callback thread waits for a hint
        time.sleep(0.001)
    watcher.close()
    assert notifier.closed and inotify_descriptors() == before
    assert not watcher._thread.is_alive()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux only")
def test_closing_a_watcher_whose_async_iterator_waits_ends_it_and_closes_its_descriptors(
        store):
    store.create_session("s").close()
    before = inotify_descriptors()

    async def main() -> None:
        watcher = store.read_session("s").watch(poll_interval=3600)
        notifier = watcher._notifier

        async def follow() -> list:
            return [item async for item in watcher]

        following = asyncio.ensure_future(follow())
        while notifier._waiters == 0:  # until its worker thread waits for a hint
            await asyncio.sleep(0.001)
        await watcher.aclose()
        assert await following == []  # the worker thread was woken, and the loop ended
        assert notifier.closed

    asyncio.run(main())
    assert inotify_descriptors() == before


class _CloseFirst:
    """A lock that lets ``watcher.close`` run to its end (in another thread) just before
    it is first taken: a close landing between a get's check and its read."""

    def __init__(self, watcher) -> None:
        self.watcher = watcher
        self.lock = threading.Lock()
        self.armed = True

    def __enter__(self) -> None:
        if self.armed:
            self.armed = False
            closing = threading.Thread(target=self.watcher.close)
            closing.start()
            closing.join()
        self.lock.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.lock.release()


def test_a_get_that_a_close_overtakes_does_not_open_the_log_again(store):
    with store.create_session("s") as session:
        session.append({"n": 1})
    watcher = store.read_session("s").watch(notifier=Deaf())
    watcher._reading = _CloseFirst(watcher)
    assert watcher.get(timeout=0) == []
    assert watcher.closed and watcher._file is None  # no segment left open by nobody


def test_inotify_refusing_a_folder_closes_what_it_opened(tmp_path):
    before = open_files()
    with pytest.raises(OSError) as raised:
        watch_module.InotifyNotifier([str(tmp_path / "missing")])
    assert str(tmp_path / "missing") in str(raised.value)
    assert open_files() == before


def _no_libc_inotify() -> None:
    raise AttributeError("inotify_init1")  # a libc (or a binding) without the call


def _out_of_instances() -> None:
    raise OSError(24, "inotify_init1 failed: Too many open files")


@pytest.mark.parametrize("failure", ["not linux", "no inotify in libc", "out of instances"])
def test_without_inotify_a_watcher_falls_back_to_watchdog_and_still_notices_changes(
        store, monkeypatch, failure):
    if failure == "not linux":
        monkeypatch.setattr(watch_module, "_libc", None)
        monkeypatch.setattr(watch_module.sys, "platform", "darwin")
    else:
        monkeypatch.setattr(watch_module, "_inotify_libc",
                            _no_libc_inotify if "libc" in failure else _out_of_instances)
    _hints_come_from(watch_module.WatchdogNotifier, store)


def test_events_past_a_rollover_come_with_those_before_it(tmp_path):
    store = fsstore.open_store(tmp_path / "s", segment_size=4096)
    store.create_session("s").close()
    with store.read_session("s").watch(poll_interval=3600) as watcher:
        assert watcher.get(timeout=0) == []
        with store.open_session("s") as session:
            seqs = [session.append({"i": i, "pad": "x" * 500}) for i in range(10)]
        assert len(os.listdir(fsstore.layout.log_dir(session.path))) > 1  # it rolled over
        # The hint wakes one read, which delivers them all: none of them waits for
        # another hint (the rollover's was used up) or for the hour-long interval.
        assert [e.seq for e in watcher.get(timeout=30)] == seqs


def _observer_refuses(*args, **kwargs):
    raise OSError(24, "inotify instance limit reached")


def test_when_no_hints_can_be_had_a_watcher_polls_and_still_notices_changes(
        store, monkeypatch):
    monkeypatch.setattr(watch_module, "_inotify_libc", _out_of_instances)
    monkeypatch.setattr(watch_module, "_new_observer", _observer_refuses)
    store.create_session("s").close()
    with store.read_session("s").watch(poll_interval=0.05) as watcher, \
            store.watch(poll_interval=0.05) as store_watcher:
        assert isinstance(watcher._notifier, watch_module.PollingNotifier)
        assert isinstance(store_watcher._notifier, watch_module.PollingNotifier)
        with store.open_session("s") as session:
            session.append({"n": 1})
        assert [e.data for e in collect(watcher, 1)] == [{"n": 1}]
        assert [c.kind for c in collect(store_watcher, 1)] == ["changed"]


def test_an_inotify_notifier_that_cannot_make_its_pipe_closes_its_instance(
        tmp_path, monkeypatch):
    before = open_files()

    def no_pipe():
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(watch_module.os, "pipe", no_pipe)
    with pytest.raises(OSError):
        watch_module.InotifyNotifier([str(tmp_path)])
    assert open_files() == before
