"""Who may write a session, and when: the exclusive writer lock, or the shared mutex.

An exclusive writer holds the session's ``writer.lock`` from open to close. A shared
writer (``lease=`` or ``shared=True``) takes the same flock for each write operation
instead, catches up with what other processes wrote, and (with a lease) fences each
write of events, state or collections by the lease's token (docs/FORMAT.md, section 16).

A :class:`~fsstore.session.Session` holds one :class:`WriterAccess` and runs each write
operation inside :meth:`WriterAccess.writing`, which calls back into the session only
through the two steps it was handed (:meth:`WriterAccess.attach`).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator

from . import clock, layout
from . import lease as lease_module
from .errors import InvalidSetting, SessionLocked, SessionNotFound
from .fsio import FileIO
from .lease import Lease, LeaseFile, SessionMutex, WriterLock
from .log_writer import Durability, LogWriter


def acquire_writer_lock(path: str, session_id: str, timeout: float) -> WriterLock:
    """Hold the session's ``writer.lock`` exclusively (see ``lease.WriterLock``); the
    lock file is opened as every store file is: never through a symlink."""
    lock_path = layout.writer_lock_path(path)
    if not os.path.isfile(layout.session_manifest_path(path)):
        raise SessionNotFound(f"no session {session_id!r} at {path}")
    lock = WriterLock(lock_path, session_id)
    try:
        lock.acquire(timeout)
    except SessionLocked:
        raise SessionLocked(
            f"session {session_id!r} is open for writing by another writer (lock "
            f"{lock_path}); close it there, or pass lock_timeout=SECONDS to wait") from None
    return lock


class WriterAccess:
    """A session writer's right to write: the exclusive :class:`WriterLock`, or the
    shared :class:`SessionMutex` (with its :class:`LeaseFile`, and the lease if one was
    given).

    Made before the session opens its log, holding the lock (or the mutex) through the
    open: :meth:`check_opened` refuses a leased session, :meth:`attach` hands over the
    log writer and the session's catch-up and roll-forward steps, then :meth:`opened`
    (or, on failure, :meth:`abandon`).
    """

    def __init__(self, io: FileIO, path: str, session_id: str, durability: Durability,
                 lease: Lease | None, shared: bool, lock_timeout: float) -> None:
        self.io = io
        self.path = path
        self.session_id = session_id
        self.lease = lease
        self.lock_timeout = lock_timeout
        self.mutex: SessionMutex | None = None
        self.lease_file: LeaseFile | None = None
        self.lock: WriterLock | None = None
        self._checked_depth = 0
        self._lease_logged: tuple[int, int] | None = None  # (token, log start) logged
        self._writer: LogWriter  # set by attach(), as are the two steps below
        self._catch_up: Callable[[], None]
        self._roll_forward: Callable[[], None]
        if lease is not None or shared:
            if durability.mode == "none" or durability.grouped:
                raise InvalidSetting(
                    "a shared session hands every write to the OS before it lets another "
                    "writer in: use durability 'flush' or 'fsync', without group commit")
            if lease is not None and lease.session_id != session_id:
                raise InvalidSetting(f"that lease is for session {lease.session_id!r}, not "
                                     f"{session_id!r}")
            if not os.path.isfile(layout.session_manifest_path(path)):
                raise SessionNotFound(f"no session {session_id!r} at {path}")
            self.mutex = SessionMutex(layout.writer_lock_path(path), session_id)
            self.lease_file = LeaseFile(io, path, self.mutex)
            self.mutex.acquire(lock_timeout)
            #: The lock file this handle opened the session under: another one under the
            #: name means the session was deleted and made again (SessionMutex.epoch).
            self._epoch = self.mutex.epoch
        else:
            self.lock = acquire_writer_lock(path, session_id, lock_timeout)

    @property
    def shared(self) -> bool:
        """Whether the mutex is taken per write operation (other writers write between)."""
        return self.mutex is not None

    # --- opening ---

    def check_opened(self) -> None:
        """At open, under the lock or the mutex: the given lease must be current; without
        one, no other owner may hold a live lease."""
        if self.lease is not None:
            assert self.lease_file is not None
            lease_module.check_current(self.lease_file, self.lease)
        elif self.mutex is None:
            self.refuse_if_leased()

    def attach(self, writer: LogWriter, *, catch_up: Callable[[], None],
               roll_forward: Callable[[], None]) -> None:
        """The session's log writer, once it exists, and the two steps a write operation
        starts with: ``catch_up`` folds in what other writers appended since this one
        last held the mutex (the log writer has not been refreshed yet; shared writers
        only); ``roll_forward`` finishes a metadata update a crash (or a failed manifest
        write) cut off between its log write and its manifest write, before anything is
        appended after it."""
        self._writer = writer
        self._catch_up = catch_up
        self._roll_forward = roll_forward

    def opened(self) -> None:
        """The session is open: a shared writer lets the mutex go until its first write."""
        if self.mutex is not None:
            self.mutex.release()

    def abandon(self) -> None:
        """The open failed: let go of everything taken (the log writer is closed by the
        caller)."""
        if self.lock is not None:
            self.lock.release()
        if self.mutex is not None:
            self.mutex.release()
            if self.lease_file is not None:
                self.lease_file.close()
            self.mutex.close()

    # --- shared writing ---

    def refuse_if_leased(self) -> None:
        file = self.lease_file
        current = (lease_module.read_lease(self.io, layout.lease_path(self.path))
                   if file is None else file.read())
        if current.held and current.owner is not None and clock.now() < current.expires_at \
                and current.owner.alive() is not False:
            raise SessionLocked(
                f"session {self.session_id!r} is leased to "
                f"{current.owner.label or current.owner.pid}"
                f" on {current.owner.host} until {current.expires_at:.3f} (token "
                f"{current.token}); claim the lease (Store.claim_lease) to write")

    @contextlib.contextmanager
    def writing(self, fenced: bool) -> Iterator[None]:
        """One write operation: for a shared session, under the mutex (waiting up to
        ``lock_timeout``), after the fence (when ``fenced``: the lease must be current,
        or no other owner may hold one) and, for the outermost operation, a catch-up with
        the log; everything reaches the OS before the mutex is let go. Re-entrant."""
        mutex = self.mutex
        if mutex is None:
            self._roll_forward()  # one comparison unless a manifest write failed
            yield
            return
        mutex.acquire(self.lock_timeout)
        try:
            self._check_same_session(mutex)
            outermost = mutex.depth == 1
            fence = fenced and not self._checked_depth
            if fence:
                if self.lease is not None:
                    assert self.lease_file is not None
                    lease_module.check_current(self.lease_file, self.lease)
                else:
                    self.refuse_if_leased()
                self._checked_depth = mutex.depth
            if outermost:
                self._catch_up()
                # Metadata another writer (or this one) committed to the log but not to
                # session.json is rolled forward before anything is appended after it.
                self._roll_forward()
            if fence and self.lease is not None:
                self.log_lease(self.lease.token)
            yield
            if outermost:
                # Everything reaches the OS before the next writer reads the log.
                self._writer.flush()
        finally:
            if self._checked_depth == mutex.depth:
                self._checked_depth = 0
            mutex.release()

    def _check_same_session(self, mutex: SessionMutex) -> None:
        """The mutex was taken on a lock file other than the one this handle opened the
        session under: the session was deleted and made again meanwhile. Its log, index
        and state are another session's, and this handle's descriptors name files that
        are gone: writing through them would lose the write. SessionNotFound: open the
        session again."""
        if mutex.epoch != self._epoch:
            raise SessionNotFound(
                f"session {self.session_id!r} was deleted (and made again) since this "
                f"handle opened it ({self.path}); open it again")

    def log_lease(self, token: int) -> None:
        """Before this handle's first fenced write to a log, record its lease token in the
        log (section 16.4): the log then shows the leased writes and their highest token,
        whatever becomes of the lease file. Once per handle and log (again after a clear)."""
        writer = self._writer
        with writer.lock:
            if self._lease_logged == (token, writer.log_start):
                return
            writer.check_usable()
            writer.append([(lease_module.LEASE_RECORD, {"token": token})],
                          writer.last_turn or 0, time.time())
            self._lease_logged = (token, writer.log_start)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The shared mutex alone (waiting up to ``lock_timeout``): no fence, and no
        catch-up with the session's log, for what reads only other files under it (a
        shared vector collection catching up with its own). Re-entrant."""
        mutex = self.mutex
        assert mutex is not None, "only a shared session has a mutex to take"
        mutex.acquire(self.lock_timeout)
        try:
            self._check_same_session(mutex)
            yield
        finally:
            mutex.release()

    def fresh(self) -> contextlib.AbstractContextManager[None]:
        """For a shared session, the mutex and a catch-up with what other processes
        wrote: what a read of the head, the revision or the turn returns is current.
        An exclusive writer is the only one, so its own view is current."""
        if self.mutex is None or self._writer.closed:
            return contextlib.nullcontext()
        return self.writing(False)

    # --- closing ---

    def close_writer(self) -> None:
        """Close the log writer: an exclusive one as it is; a shared one under the mutex
        (see :meth:`close_shared`)."""
        if self.mutex is None:
            self._writer.close()
        else:
            self.close_shared(self.mutex)

    def close_shared(self, mutex: SessionMutex) -> None:
        writer = self._writer
        if writer.closed:
            return
        try:
            mutex.acquire(self.lock_timeout)
        except SessionNotFound:
            writer.close(sync=False)  # deleted: nothing of it is left to make durable
            return
        except BaseException:
            writer.close(sync=False)  # without the mutex, write nothing to the log
            raise
        if mutex.epoch != self._epoch:  # deleted and made again: nothing of it is left
            mutex.release()
            writer.close(sync=False)
            return
        try:
            try:
                if not writer.failed:
                    writer.refresh()  # onto the active segment, if it moved
            finally:
                writer.close()
        finally:
            mutex.release()

    def release(self) -> None:
        """At close, after the writer: release the writer lock, close the mutex's
        descriptors."""
        if self.lock is not None and self.lock.is_locked:
            self.lock.release()
        if self.mutex is not None:
            if self.lease_file is not None:
                self.lease_file.close()
            self.mutex.close()
