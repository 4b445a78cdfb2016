"""The fsstore sessions FsstoreSession objects work through (fsstore.integrations.agents).

Within one process, every shared ``FsstoreSession`` on one SDK session id works through
one :class:`Opened`: one fsstore session opened shared, one copy of the items read
(``agents_cache.py``) and one queue of writes. So two objects on one id in one process
share a writer and a copy instead of taking turns at the session's mutex, and an object
made for each request of a server starts from the copy its predecessor left.

- **Kept open.** An Opened whose last object closed (or was collected) stays open,
  among the ``IDLE`` most recently let go, for the next object on its id. A shared
  session holds no lock between operations, so keeping it open keeps nobody out; what
  it holds is its files' descriptors (the log segment, the message index, the lock and
  lease files). Before an idle one is taken again, its ``session.json`` must still name
  the same session (uid): one deleted meanwhile, or deleted and made again, is closed
  and opened afresh, never written through descriptors of files that are gone.
- **Group commit.** Writes (``add_items``, ``pop_item``, ``clear_session``) are queued
  in call order and run by one worker thread at a time, which takes the whole queue:
  consecutive ``add_items`` calls then go to the log as one batch, one frame and one
  fdatasync. Each call's items are still all there or none after a crash (a batch that
  holds them is), and twenty concurrent calls cost about one durable write instead of
  twenty. A call whose items are refused is never part of a batch that lands: the
  calls of a refused batch are run again one by one, so each gets its own answer.
- **Which key.** Opened objects are shared by the store (the same :class:`Store`
  object, or for a path, its real path), the fsstore session id, the durability and the
  lock timeout. A process made by ``fork`` starts with none: its parent's descriptors,
  and the locks on them, are not its own.
- **Exclusive.** ``FsstoreSession(shared=False)`` opens its own, not shared with
  anything, held until it is closed.
"""

from __future__ import annotations

import atexit
import collections
import concurrent.futures
import os
import threading
from collections.abc import Callable, Hashable
from typing import Any

from .. import identity, layout, manifest
from ..errors import CorruptionError, FsStoreError, InvalidInput
from ..message_types import Message
from ..session import Session
from .agents_cache import ItemCache

#: Sessions kept open, per process, after their last FsstoreSession let go of them.
IDLE = 16
#: Most messages one group commit writes as one batch.
BATCH_LIMIT = 512


class _Write:
    """One queued write: for an ``add_items``, ``prepare`` makes the messages it
    appends, which ``run`` appends alone; any other write is ``run`` alone."""

    __slots__ = ("future", "messages", "prepare", "run")

    def __init__(self, run: Callable[[list[Message] | None], Any],
                 prepare: Callable[[], list[Message]] | None) -> None:
        self.run = run
        self.prepare = prepare
        self.messages: list[Message] | None = None
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        # Running from the start: a waiter that is cancelled cannot cancel the write
        # (it waits for the write to end, then raises the cancellation).
        self.future.set_running_or_notify_cancel()


class Opened:
    """One fsstore session opened for FsstoreSession objects, its copy of the items read,
    and its queue of writes."""

    def __init__(self, key: Hashable, session: Session,
                 texts_of: Callable[[Message], list[str]]) -> None:
        self.key = key
        self.session = session
        self.cache = ItemCache(texts_of)
        self.users = 0
        #: The process that opened it: a child made by fork must open its own.
        self.pid = os.getpid()
        self._queue: list[_Write] = []
        self._draining = False
        self._lock = threading.Lock()

    def submit(self, run: Callable[[list[Message] | None], Any],
               prepare: Callable[[], list[Message]] | None = None
               ) -> concurrent.futures.Future[Any]:
        """Queue a write (see :class:`_Write`) and, unless one is running, start a
        worker thread that drains the queue. Returns the write's future."""
        write = _Write(run, prepare)
        with self._lock:
            self._queue.append(write)
            start = not self._draining
            self._draining = True
        if start:
            _workers.submit(self._drain)
        return write.future

    def _drain(self) -> None:
        """Run the queued writes until the queue is empty: each run of consecutive
        appends as one batch (up to ``BATCH_LIMIT`` messages), every other write
        alone."""
        while True:
            with self._lock:
                writes = self._queue
                if not writes:
                    self._draining = False
                    return
                self._queue = []
            ready = []
            for write in writes:
                if write.prepare is not None:
                    try:
                        write.messages = write.prepare()
                    except BaseException as exc:  # refused: nothing of it is written
                        write.future.set_exception(exc)
                        continue
                ready.append(write)
            start = 0
            while start < len(ready):
                end, size = start + 1, len(ready[start].messages or ())
                if ready[start].messages is not None:
                    while end < len(ready) and ready[end].messages is not None \
                            and size + len(ready[end].messages or ()) <= BATCH_LIMIT:
                        size += len(ready[end].messages or ())
                        end += 1
                self._run(ready[start:end])
                start = end

    def _run(self, writes: list[_Write]) -> None:
        if len(writes) > 1:
            together = [message for write in writes for message in write.messages or ()]
            session = self.session
            try:
                with session.operation():  # see agents._add
                    stored = session.messages.append_many(together)
                    self.cache.appended(session, stored)
            except InvalidInput:
                pass  # one call's items were refused: each call alone gets its answer
            except BaseException as exc:  # nothing of the batch landed: all get it
                for write in writes:
                    write.future.set_exception(exc)
                return
            else:
                for write in writes:
                    write.future.set_result(None)
                return
        for write in writes:
            try:
                result = write.run(write.messages)
            except BaseException as exc:
                write.future.set_exception(exc)
            else:
                write.future.set_result(result)


#: The threads that drain queues: one per session at a time, so as many sessions as
#: this write at once.
def _new_workers() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(max_workers=8,
                                                 thread_name_prefix="fsstore-agents")


_workers = _new_workers()
_lock = threading.Lock()
_in_use: dict[Hashable, Opened] = {}
_idle: collections.OrderedDict[Hashable, Opened] = collections.OrderedDict()


def take(key: Hashable, open_session: Callable[[], Session],
         texts_of: Callable[[Message], list[str]]) -> Opened:
    """The Opened of ``key``, for one more user: the one in use, else an idle one that
    still names its session, else a new one, of ``open_session()``. Blocks."""
    stale = None
    with _lock:
        found = _in_use.get(key)
        if found is None:
            found = _idle.pop(key, None)
            if found is not None and (found.session.closed
                                      or not _same_session(found.session)):
                stale, found = found, None
        if found is not None:
            _in_use[key] = found
            found.users += 1
            return found
    if stale is not None:
        _close(stale)
    session = open_session()
    with _lock:
        found = _in_use.get(key)
        if found is None:
            found = _in_use[key] = Opened(key, session, texts_of)
        found.users += 1
    if found.session is not session:  # another thread opened it meanwhile: use that one
        session.close()
    return found


def give_back(opened: Opened) -> None:
    """One user of ``opened`` let go of it: the last one leaves it idle, closing the
    least recently used idle session beyond ``IDLE`` (or closes it, when it was
    discarded)."""
    closing = []
    with _lock:
        opened.users -= 1
        if opened.users > 0:
            return
        if _in_use.get(opened.key) is opened:
            del _in_use[opened.key]
            _idle[opened.key] = opened
            while len(_idle) > IDLE:
                closing.append(_idle.popitem(last=False)[1])
        else:
            closing.append(opened)
    for stale in closing:
        _close(stale)


def discard(opened: Opened) -> None:
    """``opened`` cannot be used again (its session was deleted): no new user gets it,
    and the last of its users closes it."""
    with _lock:
        if _in_use.get(opened.key) is opened:
            del _in_use[opened.key]


def close_idle() -> None:
    """Close every idle session (at exit, and for tests)."""
    with _lock:
        idle = list(_idle.values())
        _idle.clear()
    for opened in idle:
        _close(opened)


def _close(opened: Opened) -> None:
    session = opened.session
    try:
        # A session deleted, or deleted and made again, closes without writing (a shared
        # writer writes nothing under a lock file other than its own).
        session.close()
    except (OSError, FsStoreError):
        pass  # deleted or damaged meanwhile: nothing of it is left to keep


def _same_session(session: Session) -> bool:
    """Whether the session's folder still holds the session that was opened."""
    opened_as = session.identity
    if opened_as is None:
        return False  # a session from before uids: nothing to tell it by
    path = layout.session_manifest_path(session.path)
    try:
        data = manifest.read(session.io, path, manifest.SESSION_FORMAT)
        now = identity.from_manifest(data, path)
    except (OSError, CorruptionError):
        return False
    return now is not None and now.uid == opened_as.uid


def _forget_after_fork() -> None:
    # The parent's descriptors (and the flocks on them) are shared with the child: the
    # child opens its own, and never closes or locks through the parent's.
    global _lock, _workers
    _lock = threading.Lock()
    _workers = _new_workers()
    _in_use.clear()
    _idle.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
atexit.register(close_idle)
