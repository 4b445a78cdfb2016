"""One session folder: its manifest, its log and its writer lock, composed.

:class:`SessionReader` reads without locks, from any process, while a writer appends.
:class:`Session` is the one writer: it holds the session's writer lock for as long as it
is open, so a second writer in any thread or process is refused (or waits).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, NamedTuple

import filelock

from . import layout, manifest
from .errors import (
    Finding,
    InvalidEvent,
    InvalidMetadata,
    SessionLocked,
    SessionNotFound,
    TurnError,
)
from .fsio import FileIO
from .log import (
    DEFAULT_MAX_RECORD_BYTES,
    DEFAULT_SEGMENT_SIZE,
    Durability,
    Event,
    LogReader,
    LogWriter,
)

#: Kinds starting with this are the store's own records; callers cannot append them.
RESERVED_KIND_PREFIX = "fsstore."
#: The record ``finish_turn`` appends: the turn's close barrier, visible in the log.
TURN_FINISHED = "fsstore.turn_finished"
DEFAULT_KIND = "event"

_UNSET: Any = object()


class Turn(NamedTuple):
    """A turn's events (without its ``fsstore.turn_finished`` record) and whether it was
    finished."""

    number: int
    events: list[Event]
    finished: bool


@dataclass(frozen=True)
class SessionInfo:
    """What ``Store.list_sessions`` says of a session, read without scanning its log."""

    id: str
    path: str
    created: float  # seconds since the epoch
    updated: float  # the later of the last event and the last metadata change
    event_count: int
    head: int
    title: str | None
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _iso_to_epoch(value: object) -> float:
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return 0.0


def _check_json(name: str, value: object) -> None:
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise InvalidMetadata(f"session {name} must be JSON-able: {exc}") from None


def new_manifest(
    session_id: str, title: str | None, tags: Iterable[str], metadata: Mapping[str, Any] | None
) -> dict[str, Any]:
    tags = list(tags)
    metadata = dict(metadata or {})
    if title is not None and not isinstance(title, str):
        raise InvalidMetadata(f"session title must be a str, not {type(title).__name__}")
    if not all(isinstance(tag, str) for tag in tags):
        raise InvalidMetadata("session tags must all be strs")
    _check_json("metadata", metadata)
    now = _now_iso()
    return {
        "format": manifest.SESSION_FORMAT,
        "version": manifest.VERSION,
        "id": session_id,
        "created": now,
        "updated": now,
        "title": title,
        "tags": tags,
        "metadata": metadata,
    }


class SessionReader:
    """Read access to one session: its metadata, events and turns. Takes no lock."""

    def __init__(self, io: FileIO, path: str, session_id: str) -> None:
        self.io = io
        self.id = session_id
        self.path = path
        manifest_path = layout.session_manifest_path(path)
        try:
            self._manifest = manifest.read(io, manifest_path, manifest.SESSION_FORMAT)
        except FileNotFoundError:
            raise SessionNotFound(f"no session {session_id!r} at {path}") from None
        self._log = LogReader(io, layout.log_dir(path))

    # --- metadata ---

    @property
    def title(self) -> str | None:
        return self._manifest.get("title")

    @property
    def tags(self) -> list[str]:
        return list(self._manifest.get("tags") or [])

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self._manifest.get("metadata") or {})

    def info(self) -> SessionInfo:
        tail = self._log.tail()
        updated = _iso_to_epoch(self._manifest.get("updated"))
        if tail.last_ts is not None:
            updated = max(updated, tail.last_ts)
        return SessionInfo(
            id=self.id, path=self.path, created=_iso_to_epoch(self._manifest.get("created")),
            updated=updated, event_count=tail.event_count, head=tail.head, title=self.title,
            tags=self.tags, metadata=self.metadata,
        )

    # --- events ---

    @property
    def head(self) -> int:
        """The last seq written (0 for a session that never had an event)."""
        return self._log.tail().head

    def _before_read(self) -> None:
        """Hook: a writer hands its buffered batches to the OS so it reads its own writes."""

    def events(
        self, after_seq: int = 0, until_seq: int | None = None, limit: int | None = None
    ) -> Iterator[Event]:
        """Stream events with ``after_seq < seq <= until_seq`` in order, one segment in
        memory at a time. Includes the store's own records (``fsstore.*`` kinds)."""
        self._before_read()
        return self._log.events(after_seq, until_seq, limit)

    def get_turn(self, number: int) -> Turn | None:
        """Turn ``number``'s events and whether it was finished; None if it has none.

        Turns never go backwards in a log, so the turn is found by a binary search over
        the first turn of each segment, then read from there.
        """
        self._before_read()
        segments, _ = self._log.live_segments()
        low, high = 0, len(segments)
        while low < high:
            middle = (low + high) // 2
            first_turn = self._log.first_turn(segments[middle])
            if first_turn is not None and first_turn < number:
                low = middle + 1
            else:
                high = middle
        start = segments[max(low - 1, 0)] - 1
        events: list[Event] = []
        finished = False
        for event in self._log.events(after_seq=start):
            if event.turn < number:
                continue
            if event.turn > number:
                break
            if event.kind == TURN_FINISHED:
                finished = True
            else:
                events.append(event)
        if not events and not finished:
            return None
        return Turn(number, events, finished)

    def get_turns(self) -> list[Turn]:
        """Every turn in log order."""
        turns: list[Turn] = []
        for event in self.events():
            if not turns or turns[-1].number != event.turn:
                turns.append(Turn(event.turn, [], False))
            if event.kind == TURN_FINISHED:
                turns[-1] = turns[-1]._replace(finished=True)
            else:
                turns[-1].events.append(event)
        return turns

    def verify(self) -> list[Finding]:
        """Read everything and report each problem; changes nothing."""
        return self._log.check()

    # --- async ---

    async def aget_turn(self, number: int) -> Turn | None:
        return await asyncio.to_thread(self.get_turn, number)

    async def aget_turns(self) -> list[Turn]:
        return await asyncio.to_thread(self.get_turns)

    async def aevents(
        self, after_seq: int = 0, until_seq: int | None = None, batch: int = 1000
    ) -> AsyncIterator[Event]:
        """Like :meth:`events`; reads ``batch`` events at a time in a worker thread."""
        def read_batch(after: int) -> list[Event]:
            return list(self.events(after, until_seq, batch))

        while True:
            chunk = await asyncio.to_thread(read_batch, after_seq)
            for event in chunk:
                yield event
            if len(chunk) < batch:
                return
            after_seq = chunk[-1].seq


class Session(SessionReader):
    """The writer of one session. Open it with ``Store.open_session`` or
    ``Store.create_session``; close it (or use ``with``) to release the writer lock.

    Thread-safe: calls from several threads are serialised.
    """

    def __init__(
        self,
        io: FileIO,
        path: str,
        session_id: str,
        *,
        durability: Durability | str | None = None,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        lock_timeout: float = 0.0,
    ) -> None:
        self._lock = acquire_writer_lock(path, session_id, lock_timeout)
        try:
            super().__init__(io, path, session_id)
            self._writer = LogWriter(
                io, layout.log_dir(path), Durability.of(durability), segment_size,
                max_record_bytes,
            )
        except BaseException:
            self._lock.release()
            raise
        self._log = self._writer.reader

    @property
    def durability(self) -> Durability:
        return self._writer.durability

    @property
    def head(self) -> int:
        return self._writer.head

    @property
    def synced_head(self) -> int:
        """The last seq known to be on disk (fsynced)."""
        return self._writer.synced_head

    @property
    def recovered_torn_tail(self) -> str | None:
        """Where opening set aside a torn tail left by a crash, if it found one."""
        return self._writer.recovered_torn_tail

    def _before_read(self) -> None:
        self._writer.flush()

    # --- turns ---

    @property
    def current_turn(self) -> int | None:
        """The turn of the last record, or None for an empty log."""
        return self._writer.last_turn

    def _turn_finished(self) -> bool:
        return self._writer.last_kind == TURN_FINISHED

    def _resolve_turn(self, turn: int | None) -> int:
        current = self._writer.last_turn
        if turn is None:
            if current is None:
                return 1
            return current + 1 if self._turn_finished() else current
        if isinstance(turn, bool) or not isinstance(turn, int) or turn < 0:
            raise InvalidEvent(f"turn must be an int >= 0, not {turn!r}")
        if current is not None:
            if turn < current:
                raise TurnError(
                    f"session {self.id!r}: turn {turn} is older than the current turn "
                    f"{current}; turns only go forward")
            if turn == current and self._turn_finished():
                raise TurnError(
                    f"session {self.id!r}: turn {turn} is finished; append to turn "
                    f"{turn + 1} or later")
        return turn

    # --- appending ---

    def append(
        self, event: Mapping[str, Any], *, turn: int | None = None, kind: str | None = None,
        ts: float | None = None,
    ) -> int:
        """Append one event; return its seq.

        ``turn`` defaults to the current turn, or the next one if the current turn is
        finished. ``kind`` defaults to the event's ``"kind"`` or ``"type"`` value when that
        is a str, else ``"event"``. ``ts`` defaults to now.
        """
        entries = [(_kind_of(event, kind), event)]
        stamp = time.time() if ts is None else float(ts)
        writer = self._writer
        with writer.lock:
            return writer.append(entries, self._resolve_turn(turn), stamp)

    def append_many(
        self, events: Iterable[Mapping[str, Any]], *, turn: int | None = None,
        kind: str | None = None, ts: float | None = None,
    ) -> list[int]:
        """Append a batch atomically (after a crash all of it is there or none); return
        the seqs given to it, gapless and increasing."""
        entries = [(_kind_of(event, kind), event) for event in events]
        if not entries:
            return []
        stamp = time.time() if ts is None else float(ts)
        with self._writer.lock:
            first = self._writer.append(entries, self._resolve_turn(turn), stamp)
        return list(range(first, first + len(entries)))

    def finish_turn(self, turn: int | None = None) -> None:
        """Close a turn: record that it is finished and make everything appended so far
        durable (fsync; with plain durability ``none`` only handed to the OS). Finishing
        the current turn again does nothing more than the barrier."""
        with self._writer.lock:
            current = self._writer.last_turn
            number = current if turn is None else turn
            if number is None:
                raise TurnError(f"session {self.id!r} has no turn to finish")
            if not (number == current and self._turn_finished()):
                self._writer.append(
                    [(TURN_FINISHED, {})], self._resolve_turn(number), time.time())
            if self.durability.syncs:
                self._writer.sync()
            else:
                self._writer.flush()

    def sync(self) -> None:
        """Make everything appended so far durable, whatever the durability mode."""
        self._writer.sync()

    def clear(self) -> None:
        """Empty the log; the session and its metadata stay. Seqs are never reused: the
        next event gets ``head + 1``. Durable when it returns."""
        self._writer.clear()

    def update_metadata(
        self, *, title: str | None = _UNSET, tags: Iterable[str] = _UNSET,
        metadata: Mapping[str, Any] = _UNSET,
    ) -> None:
        """Replace the given fields of the session manifest, atomically."""
        with self._writer.lock:
            updated = dict(self._manifest)
            fresh = new_manifest(
                self.id,
                self.title if title is _UNSET else title,
                self.tags if tags is _UNSET else tags,
                self.metadata if metadata is _UNSET else metadata,
            )
            for key in ("title", "tags", "metadata", "updated"):
                updated[key] = fresh[key]
            manifest.write(self.io, layout.session_manifest_path(self.path), updated)
            self._manifest = updated

    # --- lifecycle ---

    def close(self) -> None:
        """Sync as the durability mode promises and release the writer lock."""
        try:
            self._writer.close()
        finally:
            if self._lock.is_locked:
                self._lock.release()

    @property
    def closed(self) -> bool:
        return self._writer.closed

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<fsstore.Session {self.id!r} head={self.head} path={self.path!r}>"

    # --- async ---

    async def aappend(self, event: Mapping[str, Any], **options: Any) -> int:
        return await asyncio.to_thread(self.append, event, **options)

    async def aappend_many(self, events: Iterable[Mapping[str, Any]], **options: Any) -> list[int]:
        events = list(events)
        return await asyncio.to_thread(self.append_many, events, **options)

    async def afinish_turn(self, turn: int | None = None) -> None:
        await asyncio.to_thread(self.finish_turn, turn)

    async def aclear(self) -> None:
        await asyncio.to_thread(self.clear)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _kind_of(event: object, kind: str | None) -> str:
    if type(event) is not dict and not isinstance(event, Mapping):  # dict first: it is fast
        raise InvalidEvent(f"an event must be a dict, not {type(event).__name__}")
    if kind is None:
        found = event.get("kind") or event.get("type")
        kind = found if isinstance(found, str) else DEFAULT_KIND
    elif not isinstance(kind, str):
        raise InvalidEvent(f"kind must be a str, not {type(kind).__name__}")
    if not kind or kind.startswith(RESERVED_KIND_PREFIX):
        raise InvalidEvent(
            f"kind {kind!r} is not allowed: kinds must be non-empty and not start with "
            f"{RESERVED_KIND_PREFIX!r} (reserved for the store's own records)")
    return kind


def acquire_writer_lock(path: str, session_id: str, timeout: float) -> filelock.BaseFileLock:
    lock_path = layout.writer_lock_path(path)

    def same_file(fd: int) -> None:
        # A delete renames the session folder away while holding this lock. A writer that
        # opened the lock file before the rename and waited would now hold a lock on the
        # deleted session: refuse it, or two writers could run (one on a new session of
        # the same id).
        held = os.fstat(fd)
        try:
            current = os.stat(lock_path)
        except FileNotFoundError:
            raise SessionNotFound(f"session {session_id!r} was deleted") from None
        if (held.st_dev, held.st_ino) != (current.st_dev, current.st_ino):
            raise SessionNotFound(f"session {session_id!r} was deleted and made again")

    if not os.path.isfile(layout.session_manifest_path(path)):
        raise SessionNotFound(f"no session {session_id!r} at {path}")
    lock = filelock.FileLock(
        lock_path, timeout=timeout, thread_local=False, preserve_lock_file=True,
        fallback_to_soft=False, on_acquired=same_file,
    )
    try:
        lock.acquire()
    except filelock.Timeout:
        raise SessionLocked(
            f"session {session_id!r} is open for writing by another writer (lock "
            f"{lock_path}); close it there, or pass lock_timeout=SECONDS to wait") from None
    except FileNotFoundError:
        raise SessionNotFound(f"session {session_id!r} was deleted") from None
    return lock
