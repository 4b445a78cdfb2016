"""One session folder: its manifest, its log and its writer lock, composed.

:class:`SessionReader` reads without locks, from any process, while a writer appends.
:class:`Session` is the one writer: it holds the session's writer lock for as long as it
is open, so a second writer in any thread or process is refused (or waits).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, NamedTuple, TypeVar

import filelock

from . import identity, layout, manifest, vectors
from . import lease as lease_module
from . import state as state_module
from .blobs import (
    BLOB_MARKER,
    DEFAULT_GRACE_SECONDS,
    BlobReader,
    BlobStore,
    GcReport,
    find_refs,
    link_blobs,
)
from .errors import (
    CheckpointExists,
    CheckpointNotFound,
    CorruptionError,
    Finding,
    FormatVersionError,
    HeadConflict,
    InvalidEvent,
    InvalidMetadata,
    InvalidSetting,
    SeqOutOfRange,
    SessionLocked,
    SessionNotFound,
    TurnError,
    WriteFailed,
)
from .fsio import FileIO
from .lease import Lease, LeaseFile, SessionMutex
from .log import (
    DEFAULT_MAX_RECORD_BYTES,
    DEFAULT_SEGMENT_SIZE,
    Durability,
    Event,
    LogReader,
    LogWriter,
    copy_log_prefix,
)
from .snapshot import (
    CHECKPOINT_KINDS,
    CheckpointDir,
    CheckpointInfo,
    SnapshotDir,
    SnapshotPolicy,
)
from .state import STATE_RECORD, Loaded, StateImage, copy_value, normalize_ops
from .vectors import CollectionInfo, DistanceMetric, VectorCollection
from .watch import LogCleared, Notifier, SessionWatcher
from .work import INPUT_RECORD, QUEUE_RECORD, QueuedWork, TurnInput, TurnInputs, WorkQueue

#: Kinds starting with this are the store's own records; callers cannot append them.
RESERVED_KIND_PREFIX = "fsstore."
#: The record ``finish_turn`` appends: the turn's close barrier, visible in the log.
TURN_FINISHED = "fsstore.turn_finished"
#: The record ``save_session_with_updates`` ends its batch with: the new title, tags and
#: metadata, so that they commit with the updates (session.json follows it).
METADATA_RECORD = "fsstore.metadata"
DEFAULT_KIND = "event"
MAX_COMMIT_ID = 256

_UNSET: Any = object()
_F = TypeVar("_F", bound=Callable[..., Any])
#: Record kinds from outside the session's turns: they do not move its current turn.
NEUTRAL_KINDS = frozenset((QUEUE_RECORD, INPUT_RECORD))


class Turn(NamedTuple):
    """A turn's events (without its ``fsstore.turn_finished`` record) and whether it was
    finished."""

    number: int
    events: list[Event]
    finished: bool


class CommitResult(NamedTuple):
    """What ``commit`` wrote: the seqs of its events, the head after it (the seq of its
    state record when it has one), its commit id, and whether it is the stored result
    of an earlier commit under the same id (nothing new was written)."""

    seqs: list[int]
    head: int
    commit_id: str | None
    duplicate: bool = False


class ForkOrigin(NamedTuple):
    """Where a forked session came from: its parent, and the parent's seq (and
    checkpoint, if it was forked at one) its history ends at."""

    parent: str
    seq: int
    checkpoint: str | None


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
    parent: ForkOrigin | None = None


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
    session_id: str, title: str | None, tags: Iterable[str], metadata: Mapping[str, Any] | None,
    uid: identity.Identity | None = None,
) -> dict[str, Any]:
    """A new session's manifest, with a new uid unless ``uid`` (a fork's) is given."""
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
        **(uid or identity.Identity.of(identity.mint())).manifest_fields(),
    }


class SessionReader:
    """Read access to one session: its metadata, events and turns. Takes no lock."""

    def __init__(self, io: FileIO, path: str, session_id: str,
                 snapshots: SnapshotPolicy | None = None) -> None:
        self.io = io
        self.id = session_id
        self.path = path
        manifest_path = layout.session_manifest_path(path)
        try:
            self._manifest = manifest.read(io, manifest_path, manifest.SESSION_FORMAT)
        except FileNotFoundError:
            raise SessionNotFound(f"no session {session_id!r} at {path}") from None
        #: The session's uid and the uids of the files it may hold (None: created before
        #: format 1.3): segments and snapshots of another session are refused.
        self.identity = identity.from_manifest(self._manifest, manifest_path)
        self._log = LogReader(io, layout.log_dir(path), self.identity)
        self._policy = snapshots or SnapshotPolicy()
        self._snapshots = SnapshotDir(io, path, self.identity)
        self._checkpoints = CheckpointDir(io, path, self.identity)
        #: The session's attachments: get, open, exists, stat (and put, for a writer).
        self.blobs: BlobReader = BlobReader(io, path)
        #: What the last state load found wrong with snapshot files (they were skipped).
        self.state_findings: list[Finding] = []

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
            tags=self.tags, metadata=self.metadata, parent=self.parent,
        )

    @property
    def parent(self) -> ForkOrigin | None:
        """Where this session was forked from; None if it was not."""
        record = self._manifest.get("parent")
        if not isinstance(record, dict):
            return None
        return ForkOrigin(str(record.get("id")), int(record.get("seq", 0)),
                          record.get("checkpoint"))

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
        findings = self._log.check()
        try:
            tail = self._log.tail()
        except (CorruptionError, FormatVersionError, OSError):
            tail = None
        for seq in self._snapshots.seqs():
            path = self._snapshots.file_path(seq)
            try:
                file = self._snapshots.read(path)
            except (CorruptionError, FormatVersionError) as exc:
                findings.append(Finding("problem", path, getattr(exc, "offset", None),
                                        f"{_reason(exc)}; state loads skip this snapshot"))
                continue
            except FileNotFoundError:
                continue
            if tail is not None and file.header.log_start != tail.log_start:
                findings.append(Finding("note", path, None, "snapshot of the log before a "
                                        "clear; skipped, and pruned by the next snapshot"))
            elif tail is not None and file.header.seq > tail.head:
                findings.append(Finding("note", path, None, f"snapshot covers seq "
                                        f"{file.header.seq}, past the end of the log "
                                        f"({tail.head}): a crash took back records that were "
                                        "not yet synced; state loads do not use it"))
            elif tail is not None and not self._log.position_holds(file.header.position,
                                                                   file.header.seq):
                findings.append(Finding("note", path, None, "snapshot of records a crash took "
                                        "back (others were written since); state loads skip "
                                        "it, and the next snapshot prunes it"))
        for checkpoint_id in self._checkpoints.ids():
            path = self._checkpoints.file_path(checkpoint_id)
            try:
                self._checkpoints.read(path)
                self._checkpoints.info(checkpoint_id)  # its meta matches its name
            except (CorruptionError, FormatVersionError) as exc:
                findings.append(Finding("problem", path, getattr(exc, "offset", None),
                                        _reason(exc)))
            except FileNotFoundError:
                continue
        findings.extend(self.blobs.check(verify=True))
        for name in vectors.collection_names(self.io, self.path):
            findings.extend(vectors.check_collection(
                self.io, os.path.join(layout.vectors_dir(self.path), name)))
        lease_path = layout.lease_path(self.path)
        try:
            current = lease_module.read_lease(self.io, lease_path)
            if current.damaged_slot is not None:
                findings.append(Finding(
                    "note", lease_path, current.damaged_slot * lease_module.SLOT_SIZE,
                    "one lease slot is damaged (a torn write); the other is used, and the "
                    "next claim skips a token"))
        except (CorruptionError, FormatVersionError) as exc:
            findings.append(Finding("problem", lease_path, getattr(exc, "offset", None),
                                    _reason(exc)))
        for name in vectors.scratch_names(self.io, self.path):
            findings.append(Finding("note", os.path.join(layout.vectors_dir(self.path), name),
                                    None, "left by an interrupted create or drop of a "
                                    "collection; the next create or drop removes it"))
        for folder in (self._snapshots.path, self._checkpoints.path):
            if self.io.exists(folder):
                for name in sorted(self.io.listdir(folder)):
                    if name.startswith(layout.TEMP_PREFIX):
                        findings.append(Finding("note", os.path.join(folder, name), None,
                                                "temp file of an interrupted write"))
        return findings

    # --- watching ---

    def watch(self, after_seq: int = 0, *, poll_interval: float = 1.0,
              callback: Callable[[Event | LogCleared], object] | None = None,
              notifier: Notifier | None = None) -> SessionWatcher:
        """Follow the session: every event after ``after_seq``, exactly once and in order,
        as it is written, from any process; a :class:`LogCleared` when the log is
        cleared. Iterate the watcher (blocking; ``async for`` works too), call its
        ``get(timeout)``, or pass ``callback`` to have a thread deliver to it. Close it
        when done. Filesystem events wake it; every ``poll_interval`` seconds it reads
        again anyway, so a lost event only delays a delivery."""
        watcher = SessionWatcher(self._log, self.id, after_seq, poll_interval=poll_interval,
                                 notifier=notifier)
        if callback is not None:
            watcher.start(callback)
        return watcher

    # --- queued work and turn inputs ---

    def queued_work(self, status: str | None = None) -> list[QueuedWork]:
        """The session's work queue as the log has it (ready, claimed, dead items)."""
        work = self._load_state().image.work
        return [work.view(i) for i in sorted(work.items)
                if status is None or work.items[i]["status"] == status]

    def turn_inputs(self, status: str | None = None) -> list[TurnInput]:
        """The session's turn inputs as the log has them, in arrival order."""
        inputs = self._load_state().image.inputs
        return [inputs.view(i) for i in inputs.items
                if status is None or inputs.items[i]["status"] == status]

    # --- vector collections ---

    def collections(self) -> list[CollectionInfo]:
        """Each vector collection's name, dimension, dtype, metric, count and bytes."""
        return [self.collection(name).info()
                for name in vectors.collection_names(self.io, self.path)]

    def collection(self, name: str) -> VectorCollection:
        """The vector collection ``name``, as it is now (read-only: searches and gets)."""
        name = vectors.check_collection_name(name)
        return VectorCollection(self.io, os.path.join(layout.vectors_dir(self.path), name))

    # --- state ---

    def _load_state(self, until_seq: int | None = None, *, past: bool = False) -> Loaded:
        self._before_read()
        loaded = state_module.load(
            self.io, self._log, self._snapshots, until_seq=until_seq,
            window=self._policy.commit_ids,
            extra_bases=self._checkpoint_bases() if past else (),
        )
        self.state_findings = loaded.findings
        return loaded

    def _checkpoint_bases(self) -> list[tuple[int, str]]:
        """Checkpoints of the log as it stands (not of the log before a clear), as bases
        for a state in the past."""
        log_start = self._log.tail().log_start
        bases = []
        for checkpoint_id in self._checkpoints.ids():
            path = self._checkpoints.file_path(checkpoint_id)
            try:
                header = self._checkpoints.read(path, with_body=False).header
            except (CorruptionError, FormatVersionError, FileNotFoundError):
                continue  # a damaged one is no base; verify reports it
            if header.log_start == log_start:
                bases.append((header.seq, path))
        return bases

    def state(self) -> dict[str, Any]:
        """The whole state at the head: the newest sound snapshot plus a replay of the
        state records after it. A copy: changing it changes nothing stored."""
        return self._load_state().image.state

    def get_state(self, key: str, default: Any = None) -> Any:
        """One key of the state (a copy), or ``default``."""
        return self.state().get(key, default)

    def state_at(self, seq: int) -> dict[str, Any]:
        """The state as it was right after ``seq`` (0 or ``log_start - 1``: before any
        event). Starts from the newest snapshot or checkpoint at or before ``seq``."""
        _check_seq(seq)
        return self._load_state(seq, past=True).image.state

    # --- checkpoints ---

    def checkpoints(self) -> list[CheckpointInfo]:
        """Every checkpoint (id, label, kind, seq, created), oldest first. A damaged
        checkpoint file is left out and logged; ``verify`` reports it."""
        infos = []
        for checkpoint_id in self._checkpoints.ids():
            try:
                infos.append(self._checkpoints.info(checkpoint_id))
            except FileNotFoundError:
                continue
            except (CorruptionError, FormatVersionError) as exc:
                state_module.logger.warning("checkpoint skipped: %s", exc)
        return sorted(infos, key=lambda info: (info.seq, info.created, info.id))

    def checkpoint_info(self, checkpoint_id: str) -> CheckpointInfo:
        try:
            return self._checkpoints.info(checkpoint_id)
        except FileNotFoundError:
            raise CheckpointNotFound(
                f"session {self.id!r} has no checkpoint {checkpoint_id!r}") from None

    def load_checkpoint(self, checkpoint_id: str) -> dict[str, Any]:
        """The state a checkpoint froze. A checkpoint whose state is damaged is never
        trusted: its state is rebuilt from the log when the log still holds that history
        (reported in ``state_findings``), else CorruptionError is raised."""
        return self._checkpoint_image(checkpoint_id).state

    def _checkpoint_image(self, checkpoint_id: str) -> StateImage:
        info = self.checkpoint_info(checkpoint_id)
        path = self._checkpoints.file_path(checkpoint_id)
        try:
            return StateImage.from_file(self._checkpoints.read(path), self._policy.commit_ids,
                                        path)
        except FileNotFoundError:
            raise CheckpointNotFound(
                f"session {self.id!r} has no checkpoint {checkpoint_id!r}") from None
        except CorruptionError as exc:
            header = self._checkpoints.read(path, with_body=False).header
            if header.log_start != self._log.tail().log_start:
                raise
            loaded = self._load_state(info.seq)
            self.state_findings = [*loaded.findings, Finding(
                "problem", path, exc.offset, f"{exc.reason}; the state was rebuilt from "
                "the log")]
            state_module.logger.warning("%s", self.state_findings[-1])
            return loaded.image

    # --- forks ---

    def copy_history(self, dest: str, *, at_seq: int | None = None,
                     at_checkpoint: str | None = None,
                     uid: identity.Identity | None = None) -> ForkOrigin:
        """Write this session's history up to ``at_seq`` (default: the head), or up to
        the seq checkpoint ``at_checkpoint`` froze, into the folder ``dest`` as the
        ``log/`` and ``state/`` of a new session, and return where it ends.

        Sealed segments are shared by hard link, the rest copied (``log.copy_log_prefix``),
        and the state there becomes the new session's snapshot. What is written anew
        carries ``uid``, the new session's identity. All of it is fsynced.
        ``Store.fork_session`` builds a fork with it.
        """
        tail = self._log.tail()
        if at_checkpoint is not None:
            image = self._checkpoint_image(at_checkpoint)
            if image.log_start != tail.log_start:
                raise SeqOutOfRange(
                    f"session {self.id!r} was cleared after checkpoint {at_checkpoint!r}: "
                    "the history up to it is gone, so it cannot be forked (load_checkpoint "
                    "still returns its state)")
            seq = image.seq
        else:
            seq = tail.head if at_seq is None else at_seq
            image = self._load_state(seq, past=True).image
        log_path = layout.log_dir(dest)
        self.io.mkdir(log_path)
        try:
            position = copy_log_prefix(self.io, self._log, log_path, seq,
                                       identity.NO_UID if uid is None else uid.uid)
        except FileNotFoundError as exc:
            raise SeqOutOfRange(
                f"session {self.id!r} was cleared or deleted while it was being forked "
                f"({exc.filename}); retry") from None
        SnapshotDir(self.io, dest, uid).write(seq, tail.log_start, position, image.body())
        link_blobs(self.io, self.path, dest)
        return ForkOrigin(self.id, seq, at_checkpoint)

    # --- async ---

    async def aget_turn(self, number: int) -> Turn | None:
        return await asyncio.to_thread(self.get_turn, number)

    async def aget_turns(self) -> list[Turn]:
        return await asyncio.to_thread(self.get_turns)

    async def astate(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.state)

    async def astate_at(self, seq: int) -> dict[str, Any]:
        return await asyncio.to_thread(self.state_at, seq)

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


def _writes(fenced: bool = True) -> Callable[[_F], _F]:
    """Run a Session method as one write operation: for a shared session, under the
    session's mutex, after the fence (when ``fenced``) and a catch-up with the log."""
    def wrap(method: _F) -> _F:
        @functools.wraps(method)
        def run(self: Session, *args: Any, **kwargs: Any) -> Any:
            with self._writing(fenced):
                return method(self, *args, **kwargs)
        return run  # type: ignore[return-value]
    return wrap


class Session(SessionReader):
    """The writer of one session. Open it with ``Store.open_session`` or
    ``Store.create_session``; close it (or use ``with``) to release the writer lock.

    Opened exclusively (the default), it holds the session's writer lock while open. A
    shared session (``lease=`` or ``shared=True``) takes the lock for each write
    operation instead, and catches up with what other processes wrote; with a lease,
    each write of events, state or collections is fenced by the lease's token
    (docs/FORMAT.md, section 16).

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
        snapshots: SnapshotPolicy | None = None,
        store: Any = None,
        blob_compression: str = "auto",
        lease: Lease | None = None,
        shared: bool = False,
    ) -> None:
        chosen = Durability.of(durability)
        self._lease = lease
        self._lock_timeout = lock_timeout
        self._mutex: SessionMutex | None = None
        self._lease_file: LeaseFile | None = None
        self._lock: filelock.BaseFileLock | None = None
        self._checked_depth = 0
        if lease is not None or shared:
            if chosen.mode == "none" or chosen.grouped:
                raise InvalidSetting(
                    "a shared session hands every write to the OS before it lets another "
                    "writer in: use durability 'flush' or 'fsync', without group commit")
            if lease is not None and lease.session_id != session_id:
                raise InvalidSetting(f"that lease is for session {lease.session_id!r}, not "
                                     f"{session_id!r}")
            if not os.path.isfile(layout.session_manifest_path(path)):
                raise SessionNotFound(f"no session {session_id!r} at {path}")
            self._mutex = SessionMutex(layout.writer_lock_path(path), session_id)
            self._lease_file = LeaseFile(io, path, self._mutex)
            self._mutex.acquire(lock_timeout)
        else:
            self._lock = acquire_writer_lock(path, session_id, lock_timeout)
        try:
            super().__init__(io, path, session_id, snapshots)
            if lease is not None:
                assert self._lease_file is not None
                lease_module.check_current(self._lease_file, lease)
            elif self._mutex is None:
                self._refuse_if_leased()
            self._writer = writer = LogWriter(
                io, layout.log_dir(path), chosen, segment_size, max_record_bytes,
                neutral_kinds=NEUTRAL_KINDS, identity=self.identity,
            )
            self._log = writer.reader
            self._store = store
            self.blobs: BlobStore = BlobStore(io, path, blob_compression)
            # The state is loaded on first use (most appends never need it); until then
            # the newest snapshot's name says when the next one is due. An empty log has
            # the empty state: nothing to load.
            self._image: StateImage | None = None
            if writer.head == writer.log_start - 1:
                self._image = StateImage(writer.head, writer.log_start, self._policy.commit_ids)
            snapshot_seqs = self._snapshots.seqs()
            self._snapshot_seq = snapshot_seqs[-1] if snapshot_seqs else writer.log_start - 1
            self._snapshot_bytes = 0
            self._collections: dict[str, VectorCollection] = {}
            self._claimed_inputs: tuple[int, list[int]] | None = None  # (turn, ids)
            self._roll_metadata_forward()
        except BaseException:
            if hasattr(self, "_writer"):
                self._writer.close()
            if self._lock is not None:
                self._lock.release()
            if self._mutex is not None:
                self._mutex.release()
                if self._lease_file is not None:
                    self._lease_file.close()
                self._mutex.close()
            raise
        if self._mutex is not None:
            self._mutex.release()
        #: The session's queue of work: enqueue, claim, complete, fail, release.
        self.queue = WorkQueue(self)
        #: User input that arrives while a turn runs: submit, then claim in the next turn.
        self.inputs = TurnInputs(self)

    # --- shared writing ---

    def _refuse_if_leased(self) -> None:
        file = self._lease_file
        current = (lease_module.read_lease(self.io, layout.lease_path(self.path))
                   if file is None else file.read())
        if current.held and current.owner is not None and time.time() < current.expires_at \
                and current.owner.alive() is not False:
            raise SessionLocked(
                f"session {self.id!r} is leased to {current.owner.label or current.owner.pid}"
                f" on {current.owner.host} until {current.expires_at:.3f} (token "
                f"{current.token}); claim the lease (Store.claim_lease) to write")

    @contextlib.contextmanager
    def _writing(self, fenced: bool) -> Iterator[None]:
        mutex = self._mutex
        if mutex is None:
            yield
            return
        mutex.acquire(self._lock_timeout)
        try:
            outermost = mutex.depth == 1
            if fenced and not self._checked_depth:
                if self._lease is not None:
                    assert self._lease_file is not None
                    lease_module.check_current(self._lease_file, self._lease)
                else:
                    self._refuse_if_leased()
                self._checked_depth = mutex.depth
            if outermost:
                self._catch_up()
            yield
            if outermost:
                # Everything reaches the OS before the next writer reads the log.
                self._writer.flush()
        finally:
            if self._checked_depth == mutex.depth:
                self._checked_depth = 0
            mutex.release()

    def _ingress(self, build: Callable[[StateImage, float], tuple[list[tuple[str, Any]],
                                                             Callable[[int], Any]]],
                 *, fenced: bool) -> Any:
        """One queue or input operation: under the mutex, with the image caught up,
        ``build`` decides the records (or raises); they are appended as one batch, made
        durable, and folded; ``build``'s second result turns the first seq into the
        answer."""
        with self._writing(fenced):
            writer = self._writer
            with writer.lock:
                writer.check_usable()
                image = self._loaded()
                now = time.time()
                entries, finish = build(image, now)
                if not entries:
                    return finish(0)
                # Records from outside the turns carry the current turn, and do not move it.
                first = writer.append(entries, writer.last_turn or 0, now)
                self._fold(first, entries, now)
                writer.sync()  # queued work and inputs are durable when the call returns
                if self._snapshot_due():
                    self._auto_snapshot()
                return finish(first)

    def _fold(self, first: int, entries: list[tuple[str, Any]], ts: float) -> None:
        """Fold appended queue and input records into the loaded image."""
        image = self._image
        if image is None:
            return
        for offset, (kind, data) in enumerate(entries):
            if kind == QUEUE_RECORD:
                image.work.apply(first + offset, ts, data)
            elif kind == INPUT_RECORD:
                image.inputs.apply(first + offset, ts, data)

    @_writes(fenced=False)
    def _view(self) -> StateImage:
        """The image, caught up with the log (queue and inputs read from it)."""
        with self._writer.lock:
            return self._loaded()

    def _catch_up(self) -> None:
        """Fold in what other writers appended since this one last held the mutex."""
        writer = self._writer
        with writer.lock:
            head = writer.head
            before = writer.refresh()
            if before is None:
                return
            image = self._image
            if image is None:
                return
            if writer.log_start != image.log_start or writer.head < head:
                self._image = None  # cleared meanwhile: load afresh when needed
                return
            try:
                if writer.followed is not None:  # read forward already: fold what it read
                    for event in writer.followed_events():
                        if event.kind in state_module.FOLDED_KINDS:
                            image.apply(event, self._log.path)
                    image.seq = writer.head
                else:
                    state_module.catch_up(self._log, image, before, head, writer.head)
            except (CorruptionError, FormatVersionError, SeqOutOfRange):
                self._image = None

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

    @_writes()
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
            seq = writer.append(entries, self._resolve_turn(turn), stamp)
            if self._snapshot_due():
                self._auto_snapshot()
        return seq

    @_writes()
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
            if self._snapshot_due():
                self._auto_snapshot()
        return list(range(first, first + len(entries)))

    @_writes()
    def finish_turn(self, turn: int | None = None, *, checkpoint: bool = False) -> None:
        """Close a turn: record that it is finished and make everything appended so far
        durable (fsync; with plain durability ``none`` only handed to the OS). Finishing
        the current turn again does nothing more than the barrier. With ``checkpoint``,
        also freeze the state under a checkpoint of kind ``"turn"``."""
        with self._writer.lock:
            current = self._writer.last_turn
            number = current if turn is None else turn
            if number is None:
                raise TurnError(f"session {self.id!r} has no turn to finish")
            if not (number == current and self._turn_finished()):
                entries: list[tuple[str, Any]] = []
                claimed = self._claimed_inputs
                if claimed is not None and claimed[0] == number:
                    # The inputs this turn claimed are consumed by it, in the same batch
                    # as its close: both or neither survive a crash.
                    entries.append((INPUT_RECORD, {"op": "consume", "ids": claimed[1],
                                                   "turn": number}))
                entries.append((TURN_FINISHED, {}))
                stamp = time.time()
                first = self._writer.append(entries, self._resolve_turn(number), stamp)
                self._fold(first, entries, stamp)
                self._claimed_inputs = None
            if self.durability.syncs:
                self._writer.sync()
            else:
                self._writer.flush()
            if checkpoint:
                self.checkpoint(f"turn {number}", kind="turn")

    @_writes(fenced=False)
    def sync(self) -> None:
        """Make everything appended so far durable, whatever the durability mode: the
        log, and the upserts and deletes of the collections open for writing."""
        self._writer.sync()
        for opened in list(self._collections.values()):
            opened.sync()

    @_writes()
    def clear(self) -> None:
        """Empty the log, and with it the state (the fold of the log); the session, its
        metadata and its checkpoints stay. Seqs are never reused: the next event gets
        ``head + 1``. Durable when it returns."""
        writer = self._writer
        with writer.lock:
            writer.clear()
            # Snapshots of the old log no longer fit it (their log start differs, so
            # loads skip them even if a crash keeps them); remove them now.
            self._snapshots.prune(0)
            self._image = StateImage(writer.head, writer.log_start, self._policy.commit_ids)
            self._snapshot_seq, self._snapshot_bytes = writer.head, writer.bytes_appended

    @_writes()
    def update_metadata(
        self, *, title: str | None = _UNSET, tags: Iterable[str] = _UNSET,
        metadata: Mapping[str, Any] = _UNSET,
    ) -> None:
        """Replace the given fields of the session manifest, atomically."""
        with self._writer.lock:
            self._write_manifest(self._metadata_fields(title, tags, metadata))

    @_writes()
    def save_session_with_updates(
        self, updates: Iterable[Mapping[str, Any]] = (), *, title: str | None = _UNSET,
        tags: Iterable[str] = _UNSET, metadata: Mapping[str, Any] = _UNSET,
        turn: int | None = None, kind: str | None = None,
    ) -> list[int]:
        """Append ``updates`` and replace the given metadata fields in one atomic step;
        return the updates' seqs. Durable when it returns.

        The batch ends with an ``fsstore.metadata`` record holding the new fields, so the
        updates and the metadata commit together in one log write. ``session.json`` is
        rewritten right after; if a crash falls in between, the next writer to open the
        session rewrites it from that record.
        """
        entries = [(_kind_of(event, kind), event) for event in updates]
        writer = self._writer
        with writer.lock:
            fields = self._metadata_fields(title, tags, metadata)
            entries.append((METADATA_RECORD, {k: fields[k] for k in _METADATA_FIELDS}))
            first = writer.append(entries, self._resolve_turn(turn), time.time())
            writer.sync()
            self._write_manifest(fields, metadata_seq=writer.head)
        return list(range(first, first + len(entries) - 1))

    def _metadata_fields(self, title: Any, tags: Any, metadata: Any) -> dict[str, Any]:
        return new_manifest(
            self.id,
            self.title if title is _UNSET else title,
            self.tags if tags is _UNSET else tags,
            self.metadata if metadata is _UNSET else metadata,
        )

    def _write_manifest(self, fields: Mapping[str, Any], metadata_seq: int | None = None) -> None:
        updated = dict(self._manifest)
        for key in (*_METADATA_FIELDS, "updated"):
            if key in fields:
                updated[key] = fields[key]
        if metadata_seq is not None:
            updated["metadata_seq"] = metadata_seq
        updated["version"] = manifest.VERSION
        manifest.write(self.io, layout.session_manifest_path(self.path), updated)
        self._manifest = updated

    def _roll_metadata_forward(self) -> None:
        """Finish a ``save_session_with_updates`` that a crash cut off between its log
        write and its manifest write: then its metadata record is the log's last."""
        writer = self._writer
        if writer.last_kind != METADATA_RECORD:
            return
        if int(self._manifest.get("metadata_seq") or 0) >= writer.head:
            return
        record = next(iter(self._log.events(after_seq=writer.head - 1)))
        fields = {k: record.data.get(k) for k in _METADATA_FIELDS}
        self._write_manifest({**fields, "updated": _now_iso()}, metadata_seq=record.seq)

    # --- state ---

    def _loaded(self) -> StateImage:
        """The state image at the head, loaded on first use. Call with the lock held."""
        if self._image is None:
            self._writer.flush()
            loaded = state_module.load(self.io, self._log, self._snapshots,
                                       window=self._policy.commit_ids)
            self.state_findings = loaded.findings
            self._image = loaded.image
        return self._image

    @_writes(fenced=False)
    def state(self) -> dict[str, Any]:
        with self._writer.lock:
            return copy_value(self._loaded().state)

    @_writes(fenced=False)
    def get_state(self, key: str, default: Any = None) -> Any:
        with self._writer.lock:
            state = self._loaded().state
            return copy_value(state[key]) if key in state else default

    @_writes()
    def set_state(self, key: str, value: Any, *, turn: int | None = None) -> int:
        """Set one key of the state; return the seq of the state record."""
        return self._commit([], [["set", key, value]], None, None, turn, None).head

    @_writes()
    def delete_state(self, key: str, *, turn: int | None = None) -> int:
        """Remove one key of the state (no error if absent); return the record's seq."""
        return self._commit([], [["delete", key]], None, None, turn, None).head

    @_writes()
    def merge_state(self, patch: Mapping[str, Any], *, key: str | None = None,
                    turn: int | None = None) -> int:
        """Apply a JSON merge patch (RFC 7386) to the whole state, or to the value under
        ``key``: dicts merge, ``None`` deletes, anything else replaces. Returns the
        record's seq."""
        whole = patch if key is None else {key: patch}
        return self._commit([], [["merge", whole]], None, None, turn, None).head

    @_writes()
    def commit(
        self, events: Iterable[Mapping[str, Any]] = (), *,
        state_patch: Mapping[str, Any] | None = None, expected_head: int | None = None,
        commit_id: str | None = None, turn: int | None = None, kind: str | None = None,
        ts: float | None = None,
    ) -> CommitResult:
        """Append ``events`` and apply ``state_patch`` (a JSON merge patch of the state)
        as one batch: after a crash all of it is there or none.

        ``expected_head``: commit only if the head is still that seq, else raise
        HeadConflict and write nothing. ``commit_id``: a commit under an id already
        committed (among the last ``SnapshotPolicy.commit_ids``) writes nothing and
        returns the first commit's result, with ``duplicate`` set.
        """
        entries = [(_kind_of(event, kind), event) for event in events]
        ops = [] if state_patch is None else [["merge", state_patch]]
        return self._commit(entries, ops, expected_head, commit_id, turn, ts)

    def _commit(
        self, entries: list[tuple[str, Any]], ops: list[list[Any]], expected_head: int | None,
        commit_id: str | None, turn: int | None, ts: float | None,
    ) -> CommitResult:
        if commit_id is not None and (not isinstance(commit_id, str) or not commit_id
                                      or len(commit_id) > MAX_COMMIT_ID):
            raise InvalidEvent(f"commit_id must be a str of 1 to {MAX_COMMIT_ID} characters, "
                               f"not {commit_id!r}")
        if expected_head is not None:
            _check_seq(expected_head, "expected_head")
        ops = normalize_ops(ops) if ops else ops
        stamp = time.time() if ts is None else float(ts)
        writer = self._writer
        with writer.lock:
            writer.check_usable()
            image = self._loaded() if ops or commit_id is not None else None
            if image is not None and commit_id is not None and commit_id in image.commits:
                done = image.commits[commit_id]
                return CommitResult(list(range(done.first_seq, done.last_seq)), done.last_seq,
                                    commit_id, True)
            head = writer.head
            if expected_head is not None and expected_head != head:
                when = "is ahead of" if expected_head > head else "is behind"
                raise HeadConflict(
                    f"session {self.id!r}: expected head {expected_head} {when} the head "
                    f"{head}; nothing was written: re-read the session and retry",
                    expected=expected_head, actual=head)
            count = len(entries)
            if ops or commit_id is not None:
                record: dict[str, Any] = {"ops": ops}
                if commit_id is not None:
                    record["commit"], record["events"] = commit_id, count
                entries.append((STATE_RECORD, record))
            if not entries:
                return CommitResult([], head, commit_id)
            first = writer.append(entries, self._resolve_turn(turn), stamp)
            last = first + len(entries) - 1
            if image is not None:
                image.apply_ops(ops)
                if commit_id is not None:
                    image.remember_commit(commit_id, first, last)
            if self._snapshot_due():
                self._auto_snapshot()
        return CommitResult(list(range(first, first + count)), last, commit_id)

    # --- snapshots ---

    def _snapshot_due(self) -> bool:
        policy, writer = self._policy, self._writer
        return ((policy.every_events is not None
                 and writer.head - self._snapshot_seq >= policy.every_events)
                or (policy.every_bytes is not None
                    and writer.bytes_appended - self._snapshot_bytes >= policy.every_bytes))

    def _auto_snapshot(self) -> None:
        # The append that got here has succeeded: a failed snapshot (a cache) must not
        # turn it into an error. A failed log sync has failed the writer, so the next
        # call reports that.
        try:
            self.snapshot()
        except (OSError, CorruptionError, FormatVersionError) as exc:
            state_module.logger.warning("session %r: automatic snapshot failed: %s",
                                        self.id, exc)
            self._snapshot_seq, self._snapshot_bytes = (
                self._writer.head, self._writer.bytes_appended)

    @_writes()
    def snapshot(self) -> int:
        """Write a snapshot of the state at the head now; return its seq.

        The log is not synced for it: a snapshot records the crc of the frame it was
        folded up to, and a load uses it only while the log holds that very frame. A crash
        that takes back unsynced records leaves the snapshot ahead of the log, and unused.
        """
        writer = self._writer
        with writer.lock:
            image = self._loaded()
            seq = writer.head
            try:
                self._snapshots.write(seq, writer.log_start, writer.position, image.body())
                self._snapshots.prune(self._policy.keep)
            except OSError as exc:
                raise WriteFailed(f"{self._snapshots.path}: snapshot failed "
                                  f"({exc.strerror or exc}); the log is unharmed") from exc
            self._snapshot_seq, self._snapshot_bytes = seq, writer.bytes_appended
            return seq

    # --- checkpoints ---

    @_writes()
    def checkpoint(self, label: str | None = None, *, kind: str = "manual",
                   checkpoint_id: str | None = None) -> CheckpointInfo:
        """Freeze the state at the head under a checkpoint id (fresh and time-ordered
        unless given). It stays loadable as the log grows, and after a clear."""
        if kind not in CHECKPOINT_KINDS:
            raise InvalidSetting(f"checkpoint kind must be one of {CHECKPOINT_KINDS}, not "
                                 f"{kind!r}")
        if label is not None and not isinstance(label, str):
            raise InvalidMetadata(f"checkpoint label must be a str, not {type(label).__name__}")
        if checkpoint_id is None:
            checkpoint_id = layout.new_checkpoint_id()
        path = self._checkpoints.file_path(checkpoint_id)  # checks the id
        writer = self._writer
        with writer.lock:
            if self.io.exists(path):
                raise CheckpointExists(
                    f"session {self.id!r} already has a checkpoint {checkpoint_id!r}")
            image = self._loaded()
            writer.sync()
            return self._checkpoints.write(checkpoint_id, label, kind, writer.head,
                                           writer.log_start, writer.position, image.body())

    @_writes()
    def delete_checkpoint(self, checkpoint_id: str) -> None:
        path = self._checkpoints.file_path(checkpoint_id)
        with self._writer.lock:
            if not self.io.exists(path):
                raise CheckpointNotFound(
                    f"session {self.id!r} has no checkpoint {checkpoint_id!r}")
            self._checkpoints.delete(checkpoint_id)

    # --- attachments ---

    @_writes()
    def gc(self, *, grace: float = DEFAULT_GRACE_SECONDS, dry_run: bool = False,
           verify: bool = False) -> GcReport:
        """Remove the blobs nothing refers to: no event of the log, no state (the state
        is the fold of the log) and no checkpoint. A blob is removed only once it is
        older than ``grace`` seconds, and never one this writer put: a put is followed by
        the commit that refers to it, and a crash in between leaves an orphan that a
        later gc removes. Forks hold their own links to shared blobs. With ``dry_run``
        nothing is removed; with ``verify`` every blob is hashed and damage reported.
        Damage in the log or a checkpoint stops the gc (it could hide references)."""
        writer = self._writer
        with writer.lock:  # no commit lands while the references are gathered
            writer.flush()
            referenced: set[str] = set()
            for scan in self._log.scans(0, math.inf, BLOB_MARKER):
                for event in scan:
                    find_refs(event.data, referenced)
            for checkpoint_id in self._checkpoints.ids():
                path = self._checkpoints.file_path(checkpoint_id)
                find_refs(self._checkpoints.read(path).body, referenced)
            return self.blobs.gc(referenced, grace=grace, dry_run=dry_run, verify=verify)

    # --- vector collections ---

    @_writes()
    def create_collection(self, name: str, dim: int, *, dtype: str = "float32",
                          metric: DistanceMetric | str = "cosine") -> VectorCollection:
        """Create the vector collection ``name`` of ``dim``-dimensional vectors stored as
        ``dtype`` (``float32``, or ``float16`` to halve memory and disk), searched by
        ``metric`` unless a search says otherwise. Returns it, open for writing."""
        self._writer.check_usable()
        vectors.create_collection(self.io, self.path, name, dim, dtype, metric)
        return self.collection(name)

    @_writes()
    def collection(self, name: str) -> VectorCollection:
        """The vector collection ``name``, open for writing (upsert, delete, compact)."""
        name = vectors.check_collection_name(name)
        with self._writer.lock:
            self._writer.check_usable()
            opened = self._collections.get(name)
            if opened is None:
                opened = self._collections[name] = VectorCollection(
                    self.io, os.path.join(layout.vectors_dir(self.path), name),
                    durability=self._writer.durability, writable=True,
                    guard=lambda: self._writing(True))
            return opened

    @_writes()
    def drop_collection(self, name: str) -> None:
        """Remove the vector collection ``name`` and all its files."""
        name = vectors.check_collection_name(name)
        with self._writer.lock:
            self._writer.check_usable()
            opened = self._collections.pop(name, None)
            if opened is not None:
                opened.close()
            vectors.drop_collection(self.io, self.path, name)

    # --- fork ---

    @_writes()
    def copy_history(self, dest: str, *, at_seq: int | None = None,
                     at_checkpoint: str | None = None,
                     uid: identity.Identity | None = None) -> ForkOrigin:
        writer = self._writer
        with writer.lock:  # no clear or rollover in between
            writer.flush()
            if at_checkpoint is None and at_seq in (None, writer.head):
                # Seal the active segment, so that the whole history is in sealed
                # segments, which are shared: nothing is copied.
                writer.roll_over()
            return super().copy_history(dest, at_seq=at_seq, at_checkpoint=at_checkpoint,
                                        uid=uid)

    def fork(
        self, new_id: str | None = None, *, at_seq: int | None = None,
        at_checkpoint: str | None = None, **options: Any,
    ) -> Session:
        """Fork this session: see ``Store.fork_session``. Returns the new session, open
        for writing."""
        if self._store is None:
            raise InvalidSetting("this session was not opened through a Store; use "
                                 "Store.fork_session")
        return self._store.fork_session(self.id, new_id, at_seq=at_seq,
                                        at_checkpoint=at_checkpoint, source=self, **options)

    # --- lifecycle ---

    def close(self) -> None:
        """Sync as the durability mode promises and release the writer lock."""
        try:
            for opened in self._collections.values():
                opened.close()
            self._writer.close()
        finally:
            if self._lock is not None and self._lock.is_locked:
                self._lock.release()
            if self._mutex is not None:
                if self._lease_file is not None:
                    self._lease_file.close()
                self._mutex.close()

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

    async def acommit(self, events: Iterable[Mapping[str, Any]] = (),
                      **options: Any) -> CommitResult:
        events = list(events)
        return await asyncio.to_thread(self.commit, events, **options)

    async def acheckpoint(self, label: str | None = None, **options: Any) -> CheckpointInfo:
        return await asyncio.to_thread(self.checkpoint, label, **options)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


_METADATA_FIELDS = ("title", "tags", "metadata")


def _check_seq(seq: object, name: str = "seq") -> int:
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise SeqOutOfRange(f"{name} must be an int >= 0, not {seq!r}")
    return seq


def _reason(exc: Exception) -> str:
    return exc.reason if isinstance(exc, CorruptionError) else str(exc)


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
