"""Hints for a store watcher (``Store.watch``, docs/FORMAT.md section 19.2) that say
which sessions changed, so that a wake-up reads those sessions' tails, not every
session's: on Linux, one inotify descriptor of the watcher's own with one watch on
``sessions/`` and one on each session's ``log/`` folder (what a session's head and log
start live in), so a store of N sessions takes N + 1 watches, whatever each session
holds (watchdog's recursive observer took one per folder under ``sessions/``).

The limits are the user's: ``fs.inotify.max_user_watches`` (watches) and
``max_user_instances`` (descriptors). A session whose ``log/`` cannot be watched (the
limit reached: ENOSPC; out of memory; its folder missing while it is made or damaged)
is read again at every wake-up instead, at least every ``poll_interval``: it is
polled, never lost. When not even ``sessions/`` can be watched (no inotify, out of
instances), :func:`store_notifier` raises and the watcher falls back as before
(watchdog's observer, else polling every session). A queue overflow (the kernel
dropped events) makes the next wake-up read every session again.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import threading
from collections.abc import Callable

from . import layout
from .watch import InotifyNotifier, _inotify_libc

_IN_MODIFY = 0x00000002
_IN_CLOSE_WRITE = 0x00000008
_IN_MOVED_FROM = 0x00000040
_IN_MOVED_TO = 0x00000080
_IN_CREATE = 0x00000100
_IN_DELETE = 0x00000200
_IN_DELETE_SELF = 0x00000400
_IN_MOVE_SELF = 0x00000800
_IN_Q_OVERFLOW = 0x00004000
_IN_IGNORED = 0x00008000
_IN_ISDIR = 0x40000000
_IN_ONLYDIR = 0x01000000
#: On sessions/: sessions made (renamed into place) and deleted (renamed to trash).
_SESSIONS_MASK = (_IN_CREATE | _IN_MOVED_TO | _IN_MOVED_FROM | _IN_DELETE | _IN_DELETE_SELF
                  | _IN_MOVE_SELF | _IN_ONLYDIR)
#: On a session's log/: appends, new segments, clears and compactions (renames).
_LOG_MASK = (_IN_MODIFY | _IN_CLOSE_WRITE | _IN_CREATE | _IN_MOVED_TO | _IN_MOVED_FROM
             | _IN_DELETE | _IN_ONLYDIR)
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, length of the name after it


def add_watch(fd: int, path: str, mask: int) -> int:
    """``inotify_add_watch``: the watch descriptor, or OSError with the errno (ENOSPC at
    ``max_user_watches``). The seam tests replace to reach the limit."""
    wd = _inotify_libc().inotify_add_watch(fd, os.fsencode(path), mask)
    if wd < 0:
        error = ctypes.get_errno()
        raise OSError(error, f"inotify_add_watch failed: {os.strerror(error)}", path)
    return wd


class SessionsNotifier(InotifyNotifier):
    """A :class:`~fsstore.watch.Notifier` whose hints name the sessions that changed
    (:meth:`take`). ``unwatched``: the sessions whose ``log/`` it could not watch,
    which the watcher reads at every wake-up. ``watches``: how many it holds."""

    def __init__(self, root: str, session_ids: Callable[[], list[str]]) -> None:
        super().__init__([])
        self.sessions = layout.sessions_dir(root)
        self._state = threading.Lock()
        self._by_wd: dict[int, str] = {}
        self.unwatched: set[str] = set()
        self._dirty: set[str] = set()
        self._rescan = False
        try:
            self._sessions_wd = add_watch(self._fd, self.sessions, _SESSIONS_MASK)
        except OSError:
            self.close()
            raise
        # Listed after sessions/ is watched: a session made meanwhile is in one or other.
        for session_id in session_ids():
            self._watch(session_id)

    @property
    def watches(self) -> int:
        """The inotify watches held: ``sessions/``'s and one per watched ``log/``."""
        with self._state:
            return 1 + len(self._by_wd)

    def _watch(self, session_id: str) -> None:
        """Watch the session's ``log/``; on failure (the limit, or no folder yet) it is
        polled. Called before the session is read, so a change after the read hints."""
        log = os.path.join(self.sessions, session_id, layout.LOG_DIR)
        with self._lock:
            if self._closing:
                return  # the descriptor may be on its way out
            try:
                wd = add_watch(self._fd, log, _LOG_MASK)
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.ENOMEM, errno.ENOENT,
                                     errno.ENOTDIR, errno.EACCES, errno.EMFILE):
                    raise
                if exc.errno == errno.ENOENT and not os.path.isdir(os.path.dirname(log)):
                    return  # gone: the watch on sessions/ tells if it comes back
                with self._state:
                    self.unwatched.add(session_id)
                return
        with self._state:
            self._by_wd[wd] = session_id
            self.unwatched.discard(session_id)

    def forget(self, session_id: str) -> None:
        """The session is gone: no longer polled."""
        with self._state:
            self.unwatched.discard(session_id)

    def take(self) -> tuple[bool, set[str]]:
        """Whether every session must be read again (a queue overflow, ``sessions/``
        replaced), and the sessions hinted since the last call, with the unwatched ones."""
        with self._state:
            rescan, dirty = self._rescan, self._dirty | self.unwatched
            self._rescan, self._dirty = False, set()
        return rescan, dirty

    def _wait(self, timeout: float) -> bool:
        import select

        ready, _, _ = select.select([self._fd, self._wake_read], [], [], timeout)
        if self._fd not in ready or self._wake_read in ready:
            return False
        data = b""
        try:
            while chunk := os.read(self._fd, 65536):
                data += chunk
        except BlockingIOError:
            pass  # drained (the descriptor is non-blocking)
        made, hinted, rescan = self._parse(data)
        for session_id in made:
            self._watch(session_id)  # before the hint: the read that follows is after it
        with self._state:
            self._dirty |= hinted
            self._rescan = self._rescan or rescan
        return True

    def _parse(self, data: bytes) -> tuple[list[str], set[str], bool]:
        """The sessions each event names (hinted), those made (to be watched), and
        whether every session must be read again."""
        made: list[str] = []
        hinted: set[str] = set()
        rescan = False
        offset = 0
        with self._state:
            while offset + _EVENT.size <= len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                raw = data[offset + _EVENT.size:offset + _EVENT.size + length]
                offset += _EVENT.size + length
                name = os.fsdecode(raw.rstrip(b"\0"))
                if mask & _IN_Q_OVERFLOW:
                    rescan = True  # events were dropped: read every session
                elif wd == self._sessions_wd:
                    if mask & (_IN_DELETE_SELF | _IN_MOVE_SELF | _IN_IGNORED):
                        rescan = True
                    elif _is_session(name):
                        hinted.add(name)
                        if mask & (_IN_CREATE | _IN_MOVED_TO) and mask & _IN_ISDIR:
                            made.append(name)
                elif wd in self._by_wd:
                    session_id = self._by_wd[wd]
                    hinted.add(session_id)
                    if mask & _IN_IGNORED:
                        # Its log/ (or the session) went: watched again if it is back.
                        del self._by_wd[wd]
                        made.append(session_id)
        return made, hinted, rescan


def _is_session(name: str) -> bool:
    try:
        layout.check_session_id(name)
    except ValueError:
        return False  # a temp or trash name: its rename to or from an id tells
    return True


def store_notifier(root: str, session_ids: Callable[[], list[str]]) -> SessionsNotifier:
    """A :class:`SessionsNotifier` on the store at ``root``; OSError when inotify is not
    to be had or ``sessions/`` cannot be watched."""
    try:
        return SessionsNotifier(root, session_ids)
    except AttributeError:
        raise OSError(errno.ENOSYS, "no inotify") from None
