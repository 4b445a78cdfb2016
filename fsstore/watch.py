"""Change notifications: follow a session's log, or a store's sessions, from any process.

Filesystem events are only hints. A session watcher reads them from an inotify
descriptor of its own, through libc (on Linux), and falls back to watchdog's observer
where inotify is not to be had; a store watcher uses the observer. inotify drops events
when its queue overflows, and watchdog drops them silently. So a watcher never trusts
them for content. Each hint (and, failing hints, each ``poll_interval``) makes it re-read
the log from the position after the last event it delivered. What it reads is what any
reader reads: whole, checksum-valid batches, in seq order, so a batch is delivered whole
and a torn tail being written is never delivered until it is complete.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import select
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from . import layout
from .aio import AsyncWatcherMixin
from .chain_check import taken_as_is
from .chain_reads import vouch
from .errors import FsStoreError, InvalidSetting, SessionNotFound
from .fsio import FileIO
from .lazy import LazyModule
from .log import LogReader, LogTail
from .log_format import Event, SegmentScan
from .segment_file import SegmentFile
from .segment_header import SEGMENT_HEADER_SIZE

if TYPE_CHECKING:
    import asyncio

    from watchdog.events import FileSystemEvent, FileSystemEventHandler
    from watchdog.observers.api import BaseObserver
else:
    asyncio = LazyModule("asyncio")  # imported by the first async iteration

DEFAULT_POLL_INTERVAL = 1.0


class LogCleared(NamedTuple):
    """Delivered in place of events a watcher will never see: the session's log was
    cleared, and now starts at ``log_start`` (seqs go on; nothing before it remains)."""

    session_id: str
    log_start: int


class SessionChange(NamedTuple):
    """A store-level notification: a session ``"created"``, ``"changed"`` (its new
    ``head``), ``"cleared"`` (its log now starts at ``log_start``) or ``"deleted"``."""

    kind: str
    session_id: str
    head: int | None = None
    log_start: int | None = None


# --- hints -------------------------------------------------------------------------------


class Notifier(Protocol):
    """Where a watcher's hints come from (the seam tests replace)."""

    def wait(self, timeout: float) -> bool:
        """Block until a hint or ``timeout``; True if hinted. Consumes the hint."""
        ...

    def close(self) -> None: ...


@functools.cache
def _hint_class() -> Callable[[threading.Event, bool], FileSystemEventHandler]:
    # watchdog (and its observer thread machinery) is imported by the first watcher that
    # uses it, not by every program that imports fsstore to read a session.
    from watchdog.events import FileSystemEventHandler

    class _Hint(FileSystemEventHandler):
        # Only changes. A watcher reading the log opens its files: were opens and reads
        # hints, each read would wake the watcher to read again.
        CHANGES = frozenset(("modified", "created", "moved", "deleted", "closed"))

        def __init__(self, event: threading.Event, directories: bool) -> None:
            self.event = event
            self.directories = directories

        def on_any_event(self, event: FileSystemEvent) -> None:
            # A change to a file also reports its folder as modified: a session watcher
            # needs only the file's. A store watcher wants folders too (sessions are
            # folders).
            if event.event_type in self.CHANGES and (self.directories
                                                     or not event.is_directory):
                self.event.set()

    return _Hint


def _new_observer() -> BaseObserver:
    from watchdog.observers import Observer  # here: see _hint_class

    return Observer()


class WatchdogNotifier:
    """Hints from watchdog's observer (inotify on Linux) on some folders. Raises OSError
    when the observer cannot watch them (on Linux: out of inotify instances or watches)."""

    def __init__(self, folders: Iterable[str], *, recursive: bool = False,
                 directories: bool = False) -> None:
        self._event = threading.Event()
        self._observer = _new_observer()
        handler = _hint_class()(self._event, directories)
        self._handler = handler
        try:
            for folder in folders:
                self._observer.schedule(handler, folder, recursive=recursive)
            self._observer.start()
        except BaseException:
            self.close()
            raise

    def wait(self, timeout: float) -> bool:
        hinted = self._event.wait(timeout)
        self._event.clear()
        return hinted

    def close(self) -> None:
        self._observer.stop()
        if self._observer.is_alive():
            self._observer.join()


class PollingNotifier:
    """No hints at all: a watcher with it reads every ``poll_interval``. The last
    resort, when neither inotify nor watchdog's observer can watch (out of inotify
    instances: 128 per user by default, one per session watcher)."""

    def __init__(self) -> None:
        self._closed = threading.Event()

    def wait(self, timeout: float) -> bool:
        self._closed.wait(timeout)
        return False

    def close(self) -> None:
        self._closed.set()


# inotify(7) through libc's own wrappers: a documented Linux interface whose flag values
# are kernel ABI (include/uapi/linux/inotify.h), so no release of a Python package can
# change them under a watcher.
_IN_MODIFY = 0x00000002
_IN_CLOSE_WRITE = 0x00000008
_IN_MOVED_TO = 0x00000080
_IN_CREATE = 0x00000100
_IN_DELETE = 0x00000200
_CHANGES = _IN_MODIFY | _IN_CLOSE_WRITE | _IN_CREATE | _IN_MOVED_TO | _IN_DELETE


class _Libc(NamedTuple):
    inotify_init1: Callable[[int], int]
    inotify_add_watch: Callable[[int, bytes, int], int]


_libc: _Libc | None = None


def _inotify_libc() -> _Libc:
    """libc's ``inotify_init1`` and ``inotify_add_watch``, with their C types declared.
    Raises OSError where there are none (not Linux, or a libc without them)."""
    global _libc
    if _libc is None:
        if not sys.platform.startswith("linux"):
            raise OSError(errno.ENOSYS, f"inotify is Linux only, not {sys.platform}")
        libc = ctypes.CDLL(None, use_errno=True)  # the libc this process already runs on
        try:
            init1, add_watch = libc.inotify_init1, libc.inotify_add_watch
        except AttributeError:
            raise OSError(errno.ENOSYS, "this libc has no inotify_init1") from None
        init1.argtypes, init1.restype = [ctypes.c_int], ctypes.c_int
        add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        add_watch.restype = ctypes.c_int
        _libc = _Libc(init1, add_watch)
    return _libc


class InotifyNotifier:
    """Hints read straight from an inotify descriptor of its own (Linux, through libc):
    the waiting thread sleeps in ``select`` on it, so a hint costs two system calls, with
    no thread between the kernel and the watcher. Only changes are asked for: a watcher
    reading the log opens its files, and opens must not wake it. A queue overflow is a
    hint like any other. Raises OSError when inotify is not to be had (not Linux, out of
    instances or watches): :func:`_notifier_for` then falls back to watchdog's observer.

    ``close`` may come from any thread while others wait (a watcher's callback thread,
    the worker thread of its async iterator): it wakes them, and the descriptors are
    closed by whoever leaves last, so a thread still in ``wait`` never selects on, or
    reads, a descriptor number the process has meanwhile given to another file."""

    def __init__(self, folders: Iterable[str]) -> None:
        libc = _inotify_libc()
        # Close-on-exec: a child process spawned meanwhile must not keep the watches alive.
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            error = ctypes.get_errno()
            raise OSError(error, f"inotify_init1 failed: {os.strerror(error)}")
        self._fd = fd
        # close() writes here, so that a thread waiting in select wakes at once (and any
        # later select too: the byte is never read).
        try:
            self._wake_read, self._wake_write = os.pipe()
        except BaseException:
            os.close(fd)  # an inotify instance is a scarce, per-user resource (128)
            raise
        self._lock = threading.Lock()
        self._waiters = 0  # threads between entering wait and leaving it
        self._closing = False  # close() was called: no new waits, descriptors on the way out
        self._released = False  # the descriptors are closed
        for folder in folders:
            if libc.inotify_add_watch(fd, os.fsencode(folder), _CHANGES) < 0:
                error = ctypes.get_errno()
                self.close()
                raise OSError(error, f"inotify_add_watch failed: {os.strerror(error)}",
                              folder)

    def wait(self, timeout: float) -> bool:
        with self._lock:
            closed = self._closing
            if not closed:
                self._waiters += 1  # from here on, close() leaves the descriptors open
        if closed:
            time.sleep(timeout)  # closed: no hint will ever come
            return False
        try:
            return self._wait(timeout)
        finally:
            with self._lock:
                self._waiters -= 1
                last_out = self._closing and self._waiters == 0
            if last_out:
                self._release()

    def _wait(self, timeout: float) -> bool:
        """Select and drain; only while counted in ``_waiters`` (the descriptors stay open)."""
        ready, _, _ = select.select([self._fd, self._wake_read], [], [], timeout)
        if self._fd not in ready or self._wake_read in ready:
            return False  # timed out, or woken by close
        try:
            while os.read(self._fd, 65536):  # drain: one hint for everything so far
                pass
        except BlockingIOError:
            pass  # drained (the descriptor is non-blocking)
        return True

    def close(self) -> None:
        """Wake every waiting thread; the descriptors are closed now if none waits, else
        by the last one to leave ``wait`` (at once: the wake-up is immediate)."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            os.write(self._wake_write, b"x")
            last_out = self._waiters == 0
        if last_out:
            self._release()

    def _release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        os.close(self._fd)  # removes its watches
        os.close(self._wake_write)
        os.close(self._wake_read)

    @property
    def closed(self) -> bool:
        """Whether the descriptors are closed (after ``close``, once no thread waits)."""
        return self._released


def _notifier_for(folder: str) -> Notifier:
    """The cheapest hints this platform has: an inotify descriptor of the watcher's own
    on Linux, else (or when inotify fails for any reason) a watchdog observer, else
    (when that fails too) none: the watcher polls."""
    try:
        return InotifyNotifier([folder])
    except (OSError, AttributeError):
        pass  # not Linux, no inotify, out of inotify instances or watches
    return _observer_or_polling([folder])


def _observer_or_polling(folders: list[str], *, recursive: bool = False,
                         directories: bool = False) -> Notifier:
    try:
        return WatchdogNotifier(folders, recursive=recursive, directories=directories)
    except OSError:
        # On Linux the observer is inotify too: out of instances or watches, hints are
        # not to be had, and the watcher reads every poll_interval instead.
        return PollingNotifier()


# --- one session ---------------------------------------------------------------------------


def _check_interval(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 3600:
        raise InvalidSetting(f"poll_interval is seconds in (0, 3600], not {value!r}")
    return float(value)


class _Watcher(AsyncWatcherMixin):
    """What both watchers share: waiting for hints, iterators, a callback thread, and the
    async twins of the blocking calls (``aget``, ``apoll``, ``aclose``, ``async with``)."""

    def __init__(self, notifier: Notifier, poll_interval: float) -> None:
        self._notifier = notifier
        self._interval = _check_interval(poll_interval)
        self._closed = threading.Event()
        self._reading = threading.Lock()
        self._thread: threading.Thread | None = None
        # What stopped the callback thread (a damaged log, its chain failing, the session
        # deleted): kept, and raised by the next get() and by close(), so that it is
        # seen where the watcher is used, not only printed by the dead thread.
        self._failed: BaseException | None = None
        self._failure_raised = False
        # Set when the last read reached the end of what was written: then nothing new
        # can be there without a hint, and the next get may wait before reading.
        self._caught_up = False

    def poll(self) -> list[Any]:
        raise NotImplementedError

    def get(self, timeout: float | None = None) -> list[Any]:
        """What changed since the last delivery, waiting up to ``timeout`` seconds (None:
        until something does, or the watcher is closed) for the first of it."""
        self._raise_failure()
        deadline = None if timeout is None else time.monotonic() + timeout
        skip = self._caught_up
        while not self._closed.is_set():
            if not skip:
                with self._reading:
                    # Checked again under the lock close() takes: a close between the
                    # loop's check and here has let go of the segment, which a poll
                    # would open again, and nothing would ever close.
                    if self._closed.is_set():
                        break
                    found = self.poll()
                if found:
                    return found
            skip = False
            wait = self._interval
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                wait = min(wait, left)
            self._notifier.wait(wait)
        return []

    def __iter__(self) -> Iterator[Any]:
        """Everything, as it comes, until ``close``."""
        while not self._closed.is_set():
            yield from self.get(None)

    async def __aiter__(self) -> AsyncIterator[Any]:
        while not self._closed.is_set():
            found = await asyncio.to_thread(self.get, self._interval)
            for item in found:
                yield item

    def start(self, callback: Callable[[Any], object]) -> None:
        """Call ``callback`` with each change, in order, from a thread, until ``close``."""
        if self._thread is not None:
            raise InvalidSetting("this watcher already runs a callback")

        def run() -> None:
            try:
                while not self._closed.is_set():
                    for item in self.get(self._interval):
                        callback(item)
            except BaseException as exc:  # the callback's own errors too
                self._failed = exc
                self._closed.set()
                self._notifier.close()

        self._thread = threading.Thread(target=run, name="fsstore-watch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop: iterators end, the callback thread and the observer are joined (an
        iterator's worker thread lets go of the notifier as it wakes, at once). Raises
        what stopped the callback thread, if anything did (see :attr:`error`)."""
        self._closed.set()
        self._notifier.close()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self._raise_failure()

    @property
    def error(self) -> BaseException | None:
        """What stopped the callback thread (the watcher is closed then), else None."""
        return self._failed

    def _raise_failure(self) -> None:
        """Raise what stopped the callback thread, once: the first get() or close()
        after it raises it, and the watcher stays closed."""
        failed = self._failed
        if failed is not None and not self._failure_raised:
            self._failure_raised = True
            raise failed

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class SessionWatcher(_Watcher):
    """Delivers every event of a session after ``after_seq``, exactly once and in order,
    and a :class:`LogCleared` when the log was cleared. ``last_seq`` is the last seq
    delivered: a watcher made again from it misses nothing and repeats nothing.

    It keeps the segment it follows open and reads on from where it stopped: a wake-up
    with nothing new costs a read of a few bytes and one name looked up (it never stats
    the segment: a stat just before the writer's fdatasync slows that fdatasync)."""

    def __init__(self, log: LogReader, session_id: str, after_seq: int = 0, *,
                 poll_interval: float = DEFAULT_POLL_INTERVAL,
                 notifier: Notifier | None = None) -> None:
        if isinstance(after_seq, bool) or not isinstance(after_seq, int) or after_seq < 0:
            raise InvalidSetting(f"after_seq must be an int >= 0, not {after_seq!r}")
        # a keyed chain's records are delivered with its key only: refused here, at the
        # call, not in the thread a callback watcher starts (ChainKeyRequired)
        taken_as_is(log.chain)
        self.session_id = session_id
        self.last_seq = after_seq
        self._log = log
        self._io = log.io
        self._file: SegmentFile | None = None  # the segment followed, where its read ends
        self._segment = 0
        self._offset = 0
        self._next_seq = 0
        self._log_start: int | None = None
        super().__init__(notifier or _notifier_for(log.path), poll_interval)

    def poll(self) -> list[Event | LogCleared]:
        """Read what was written after the last delivered event, without waiting."""
        found: list[Event | LogCleared] = []
        if self._file is None and not self._find(found):
            return found
        while True:
            self._read_on(found)
            # A segment is named after its first seq, so a segment named after the next
            # seq means this one is finished: read on there now, whether or not this read
            # found anything (the hint that woke this read may have been the rollover's
            # only one, and the events after it would wait for the next write).
            assert self._file is not None
            if (self._segment == self.last_seq + 1
                    or not self._log.goes_on(self._file, self.last_seq + 1)):
                return found
            # The writer went on in a segment named after the next seq (a rollover, or a
            # clear: its header says where the log starts now).
            self._close_segment()
            if not self._open(self.last_seq + 1, found) and not self._find(found):
                return found

    def _find(self, found: list[Event | LogCleared]) -> bool:
        """Locate the segment holding ``last_seq + 1`` (the first time, or when the one
        followed is gone)."""
        try:
            segments, log_start = self._log.live_segments()
        except FileNotFoundError:
            raise SessionNotFound(f"session {self.session_id!r} is gone") from None
        if log_start > self.last_seq + 1:
            found.append(LogCleared(self.session_id, log_start))
            self.last_seq = log_start - 1
        base = self._log.base_of(log_start)
        if base is not None:
            # History retention dropped (FORMAT.md 5.6) is passed over, and so are the
            # files of it still there (a retention unlinking them, or interrupted).
            self.last_seq = max(self.last_seq, base.seq)
            segments = [s for s in segments if s == log_start or s > base.seq]
        holding = [s for s in segments if s <= self.last_seq + 1]
        first = holding[-1] if holding else (segments[0] if segments else None)
        return first is not None and self._open(first, found)

    def _open(self, first: int, found: list[Event | LogCleared]) -> bool:
        try:
            # a segment a compaction merged into a compacted file is read from there
            segment = self._log.open_segment(first)
        except FileNotFoundError:
            return False
        header = segment.header
        if self._log_start is not None and header.log_start > self._log_start:
            found.append(LogCleared(self.session_id, header.log_start))
            self.last_seq = max(self.last_seq, header.log_start - 1)
        self._log_start = header.log_start
        self._file, self._segment, self._offset = segment, first, SEGMENT_HEADER_SIZE
        self._next_seq = first  # the seq of the frame at _offset
        return True

    def _read_on(self, found: list[Event | LogCleared]) -> None:
        """The whole frames after the current offset of the segment followed."""
        assert self._file is not None
        path = self._file.path
        chunk = _READ_CHUNK
        while True:
            buf = self._file.pread(chunk, self._offset)
            self._caught_up = len(buf) < chunk
            if not buf.strip(b"\0"):
                return
            header = self._file.header
            allow_base = self._file.starts_with_base and self._segment == header.log_start
            # a compacted file's later members each start a run of their own (type 4)
            members = self._file.members_after
            scan = SegmentScan(buf, path, self._next_seq, True, self.last_seq,
                               origin=self._offset, segment=self._segment, members=members,
                               chain=taken_as_is(self._log.chain), allow_base=allow_base)
            events = list(scan)
            if scan.end > self._offset:
                # delivered only once the chain vouches for them, as a replay's are
                # (FORMAT.md 3.4): a last record torn inside its chain value is read
                # again at the next wake-up, as a torn tail is
                stop = vouch(self._log, self._file, self._offset, scan.end, scan.expect_seq,
                             torn_ok=True)
                if stop < scan.end:
                    scan = SegmentScan(buf[:stop - self._offset], path, self._next_seq,
                                       True, self.last_seq, origin=self._offset,
                                       segment=self._segment, members=members,
                                       chain=taken_as_is(self._log.chain),
                                       allow_base=allow_base)
                    events = list(scan)
            for event in events:
                found.append(event)
                self.last_seq = event.seq
            self._offset, self._next_seq = scan.end, scan.expect_seq
            if len(buf) < chunk or scan.torn_at is None:
                return  # read to the end of the file, or stopped inside what was read
            if scan.torn_at == scan.end and scan.end == scan.origin:
                chunk *= 2  # a frame larger than the chunk: read more of it
            # else: loop, reading on from the new offset

    def _close_segment(self) -> None:
        if self._file is not None:
            segment, self._file = self._file, None
            segment.close()

    def close(self) -> None:
        super().close()
        with self._reading:
            self._close_segment()


_READ_CHUNK = 64 << 10


# --- a whole store -------------------------------------------------------------------------


class WatchedSession(Protocol):
    """What a :class:`StoreWatcher` reads of each session (a ``SessionReader`` is one)."""

    @property
    def log_tail(self) -> LogTail:
        """The end of the session's log, read without a scan; SessionNotFound (or
        FileNotFoundError) once it is gone, another FsStoreError while it is damaged."""


class WatchedStore(Protocol):
    """What a :class:`StoreWatcher` needs of a store (a ``Store`` is one): the folder
    its sessions are in, their ids, and a reader of each (``read_session``, which
    raises SessionNotFound once the session is gone)."""

    @property
    def path(self) -> str: ...

    def session_ids(self) -> list[str]: ...

    def read_session(self, session_id: str) -> WatchedSession: ...


#: How many times a store watcher reads a session whose log files are replaced under it
#: (each clear or compaction of it meanwhile takes one) before it leaves it for a later read.
_TAIL_TRIES = 5


class StoreWatcher(_Watcher):
    """Delivers :class:`SessionChange` notifications for the sessions of a store.

    On Linux its hints name the sessions that changed (fsstore/store_watch.py: one
    inotify watch on ``sessions/`` and one per session's ``log/``), and a wake-up reads
    those sessions' tails only, and those whose ``log/`` could not be watched (the
    inotify limit): never every session. Elsewhere, or when not even ``sessions/`` can
    be watched, every session is read at each wake-up, as with a ``notifier`` given.

    Starting it sets the watches, then reads each session's head and log start once:
    a change that ends after the watcher is made is notified, compared with what was
    read then. Of a session whose log ends at its segment's synced mark (one written
    with the default durability, not being written), only ``tail.hint``, the newest
    segment's header and its last frame are read (fsstore/watch_start.py: tens of
    microseconds, where a reader takes half a millisecond); of any other, its reader's
    ``log_tail``, as at every later wake-up. A session damaged so that its reader
    refuses it but its log's end reads counts as there from the start; like any known
    session that cannot be read, it is not announced while it cannot be read."""

    def __init__(self, store: WatchedStore, *, poll_interval: float = DEFAULT_POLL_INTERVAL,
                 notifier: Notifier | None = None, include_existing: bool = False) -> None:
        self._store = store
        self._known: dict[str, tuple[int, int]] = {}
        self._rescan = True  # the first poll reads every session
        sessions = layout.sessions_dir(store.path)
        if notifier is None:
            from .store_watch import store_notifier

            try:
                notifier = store_notifier(store.path, store.session_ids)
            except OSError:
                # Not Linux, or out of inotify instances or watches for sessions/ itself.
                notifier = _observer_or_polling([sessions], recursive=True,
                                                directories=True)
        super().__init__(notifier, poll_interval)
        if not include_existing:
            # The notifier watches first: a change after a session's read below wakes it.
            self._known = self._heads(quick=True)
            self._rescan = False

    def _heads(self, quick: bool = False) -> dict[str, tuple[int, int]]:
        """Every session's (head, log start). ``quick`` (the start, which announces
        nothing): from the newest segment's header and last frame alone where those
        vouch for what the session's reader would say (fsstore/watch_start.py), through
        the reader elsewhere."""
        heads: dict[str, tuple[int, int]] = {}
        io = getattr(self._store, "io", None) if quick else None
        io = io if isinstance(io, FileIO) else None  # a store of the seam's own
        if io is not None:
            from .watch_start import quick_log_end

            sessions = layout.sessions_dir(self._store.path)
        for session_id in self._store.session_ids():
            if io is not None:
                found = quick_log_end(io, os.path.join(sessions, session_id))
                if found is not None:
                    heads[session_id] = found
                    continue
            self._head(session_id, heads, self._known.get(session_id))
        return heads

    def _head(self, session_id: str, heads: dict[str, tuple[int, int]],
              known: tuple[int, int] | None) -> None:
        """Read one session's head and log start into ``heads`` (left out: gone)."""
        for _ in range(_TAIL_TRIES):
            try:
                tail = self._store.read_session(session_id).log_tail
            except SessionNotFound:
                return  # deleted meanwhile
            except FileNotFoundError:
                # A file of its log went while it was read: a clear or a compaction
                # replaced it (or the session was deleted, which the next read says).
                # Not a deletion: a live session must not be announced deleted and made.
                continue
            except FsStoreError:
                break
            heads[session_id] = (tail.head, tail.log_start)
            return
        # Damaged (verify reports it), or its log replaced at every try: not announced
        # while it cannot be read, nor as deleted if it was seen before (``known``).
        if known is not None:
            heads[session_id] = known

    def _now(self) -> tuple[dict[str, tuple[int, int]],
                            dict[str, tuple[int, int] | None]]:
        """The sessions' (head, log start) now, and what was known before of those to
        compare: every session read, or only those hinted (and unwatched) read again."""
        take = getattr(self._notifier, "take", None)
        rescan, hinted = (True, set()) if take is None else take()
        if rescan or self._rescan:
            self._rescan = False
            now = self._heads()
            return now, {i: self._known.get(i) for i in sorted(now.keys() | self._known.keys())}
        now = self._known  # updated in place: a wake-up costs what it reads, not the store
        before = {i: now.pop(i, None) for i in sorted(hinted)}
        for session_id, was in before.items():
            self._head(session_id, now, was)
            if session_id not in now:
                self._notifier.forget(session_id)  # type: ignore[attr-defined]
        return now, before

    def poll(self) -> list[SessionChange]:
        now, compared = self._now()
        found, deleted = [], []
        for session_id, before in compared.items():
            current = now.get(session_id)
            if current is None:
                if before is not None:
                    deleted.append(SessionChange("deleted", session_id))
                continue
            head, start = current
            if before is None:
                found.append(SessionChange("created", session_id, head, start))
            elif start != before[1]:
                found.append(SessionChange("cleared", session_id, head, start))
            elif head != before[0]:
                found.append(SessionChange("changed", session_id, head, start))
        self._known = now
        return found + deleted
