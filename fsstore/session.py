"""One session folder: its manifest, its log and its writer lock, composed.

:class:`SessionReader` reads without locks, from any process, while a writer appends.
:class:`Session` is the one writer: it holds the session's writer lock for as long as it
is open, so a second writer in any thread or process is refused (or waits).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, NamedTuple, TypeVar

from . import identity, layout, manifest, vectors
from . import lease as lease_module
from . import state as state_module
from .aio import UNSET, AsyncSessionMixin, AsyncSessionReaderMixin
from .blobs import (
    BLOB_MARKER,
    DEFAULT_GRACE_SECONDS,
    BlobReader,
    BlobStore,
    GcReport,
    find_refs,
    link_blobs,
)
from .check import check_session
from .errors import (
    CheckpointExists,
    CheckpointNotFound,
    CorruptionError,
    Finding,
    FormatVersionError,
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
from .lease import Lease, LeaseFile, SessionMutex, WriterLock
from .log import (
    DEFAULT_MAX_RECORD_BYTES,
    DEFAULT_SEGMENT_SIZE,
    Durability,
    Event,
    LogReader,
)
from .log_writer import LogWriter, copy_log_prefix
from .snapshot import (
    CHECKPOINT_KINDS,
    CheckpointDir,
    CheckpointInfo,
    SnapshotDir,
    SnapshotPolicy,
)
from .state import STATE_RECORD, Loaded, StateImage, copy_value, normalize_ops
from .turns import (
    NEUTRAL_KINDS,
    RESERVED_KIND_PREFIX,
    TURN_FINISHED,
    Revision,
    Turn,
    callers_events,
    check_expected,
    check_revision_arg,
    read_turn,
    read_turns,
    revision_of,
)
from .vectors import CollectionInfo, DistanceMetric, VectorCollection
from .watch import LogCleared, Notifier, SessionWatcher
from .work import (
    INPUT_RECORD,
    QUEUE_RECORD,
    TurnInputs,
    TurnInputsReader,
    WorkQueue,
    WorkQueueReader,
)

#: The record ``save_session_with_updates`` ends its batch with: the new title, tags and
#: metadata, so that they commit with the updates (session.json follows it).
METADATA_RECORD = "fsstore.metadata"
DEFAULT_KIND = "event"
MAX_COMMIT_ID = 256

_UNSET: Any = UNSET  # a method's and its async twin's default (see fsstore.aio)
_F = TypeVar("_F", bound=Callable[..., Any])


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
    #: Records in the log since its start, the store's own records (state, queue, input,
    #: lease, metadata, turn_finished) included: ``head - log_start + 1``, read from the tail of
    #: the log without a scan. Count the caller's events with ``sum(1 for _ in
    #: session.events())``.
    event_count: int
    head: int
    title: str | None
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    parent: ForkOrigin | None = None
    #: Why the session could not be read (``Store.list_sessions`` lists it anyway, with
    #: what it could read); None for a readable session. ``fsstore verify`` says more.
    damaged: str | None = None


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def new_manifest(
    session_id: str, title: str | None, tags: Iterable[str], metadata: Mapping[str, Any] | None,
    uid: identity.Identity | None = None,
) -> dict[str, Any]:
    """A new session's manifest. Raises InvalidMetadata, before anything is written, for
    a title, tags or metadata a reader would refuse (wrong types, not JSON, too deep, or
    a manifest over 1 MiB)."""
    title, tags, metadata = manifest.check_metadata(title, tags, metadata)
    now = _now_iso()
    data = {
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
    return json.loads(manifest.encode(data))  # what a reader gets back: checked, as JSON


class SessionReader(AsyncSessionReaderMixin):
    """Read access to one session: its metadata, events and turns. Takes no lock."""

    def __init__(self, io: FileIO, path: str, session_id: str,
                 snapshots: SnapshotPolicy | None = None) -> None:
        self.io = io
        self.id = session_id
        self.path = path
        io.check_folders(*layout.session_folders(path))  # no symlinked folder in a session
        manifest_path = layout.session_manifest_path(path)
        try:
            self._manifest = manifest.read(io, manifest_path, manifest.SESSION_FORMAT)
        except FileNotFoundError:
            raise SessionNotFound(f"no session {session_id!r} at {path}") from None
        self._meta = manifest.decode_session(self._manifest, manifest_path)
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
        #: The session's queue of work, as the log has it: ``queue.items(status)``.
        self.queue: WorkQueueReader = WorkQueueReader(self)
        #: The session's turn inputs, as the log has them: ``inputs.items(status)``.
        self.inputs: TurnInputsReader = TurnInputsReader(self)

    # --- metadata ---

    @property
    def title(self) -> str | None:
        return self._meta.title

    @property
    def tags(self) -> list[str]:
        return list(self._meta.tags or [])

    @property
    def metadata(self) -> dict[str, Any]:
        return copy.deepcopy(self._meta.metadata or {})

    def info(self) -> SessionInfo:
        tail = self._log.tail()
        path = layout.session_manifest_path(self.path)
        updated = manifest.iso_to_epoch(self._meta.updated, path, "updated")
        if tail.last_ts is not None and math.isfinite(tail.last_ts):
            updated = max(updated, tail.last_ts)
        return SessionInfo(
            id=self.id, path=self.path,
            created=manifest.iso_to_epoch(self._meta.created, path, "created"),
            updated=updated, event_count=tail.event_count, head=tail.head, title=self.title,
            tags=self.tags, metadata=self.metadata, parent=self.parent,
        )

    @property
    def parent(self) -> ForkOrigin | None:
        """Where this session was forked from; None if it was not."""
        record = self._meta.parent
        if record is None:
            return None
        return ForkOrigin(record.id, record.seq, record.checkpoint)

    # --- events ---

    @property
    def head(self) -> int:
        """The last seq written (0 for a session that never had an event). Every record
        moves it, queue and input records too: check commits against :attr:`revision`."""
        return self._log.tail().head

    @property
    def revision(self) -> Revision:
        """The session's :class:`Revision`: it moves only with what the history and state
        depend on, not with queue items or turn inputs. Read from the tail of the log;
        when the log ends in queue or input records, the segments before are read back
        to the last record that is neither."""
        return revision_of(self._log)

    def _before_read(self) -> None:
        """Hook: a writer hands its buffered batches to the OS so it reads its own writes."""

    def events(
        self, after_seq: int = 0, until_seq: int | None = None, limit: int | None = None,
        *, last: int | None = None, include_internal: bool = False,
    ) -> Iterator[Event]:
        """Stream the caller's events with ``after_seq < seq <= until_seq`` in order, at
        most ``limit`` of them, one segment in memory at a time. With
        ``include_internal``, the store's own records (``fsstore.*`` kinds: state, queue,
        input, lease, metadata and turn_finished records) come too, for debugging and
        export. A queue, input or lease record's ``turn`` is the turn current when it was
        written; it belongs to no turn.

        ``last=N`` gives the last N of those events instead of the first ones (still in
        seq order), read from the end of the log: the head need not be known, and a small
        N reads the last segment or two however long the log is. With ``until_seq`` it
        pages backwards (the N events up to a seq); ``after_seq`` bounds how far back it
        reads. ``limit`` and ``last`` are the two ends of the same range: pass one."""
        if last is not None:
            if isinstance(last, bool) or not isinstance(last, int) or last < 0:
                raise InvalidSetting(f"last must be an int >= 0, not {last!r}")
            if limit is not None:
                raise InvalidSetting("events() takes limit (the first N events) or last (the "
                                     "last N), not both")
        self._before_read()
        if last is not None:
            def callers(event: Event) -> bool:
                return not event.kind.startswith(RESERVED_KIND_PREFIX)
            keep = None if include_internal else callers
            return iter(self._log.last_events(last, after_seq, until_seq, keep))
        if include_internal:
            return self._log.events(after_seq, until_seq, limit)
        return callers_events(self._log.events(after_seq, until_seq), limit)

    def get_turn(self, number: int, *, include_internal: bool = False) -> Turn | None:
        """Turn ``number``: the caller's events in it and whether it was finished; None
        if no record belongs to it. Queue and input records belong to no turn, so they
        never join a turn, finished or not. ``include_internal`` adds the turn's state and
        metadata records (see :class:`Turn`).

        Turns never go backwards in a log, so the turn is found by a binary search over
        the first turn of each segment, then read from there.
        """
        self._before_read()
        return read_turn(self._log, number, include_internal)

    def get_turns(self, *, include_internal: bool = False) -> list[Turn]:
        """Every turn in log order (see :meth:`get_turn`)."""
        self._before_read()
        return read_turns(self._log.events(), include_internal)

    def verify(self) -> list[Finding]:
        """Read everything a read would read and report each problem; changes nothing and
        never raises (see :mod:`fsstore.check`)."""
        return check_session(self)

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

    def _view(self) -> StateImage:
        """The image the queue and the inputs list from: loaded afresh by a reader."""
        return self._load_state().image

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


class Session(SessionReader, AsyncSessionMixin):
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
        io.check_folders(path)  # before its writer.lock is opened through it
        self._lease = lease
        self._lock_timeout = lock_timeout
        self._mutex: SessionMutex | None = None
        self._lease_file: LeaseFile | None = None
        self._lock: WriterLock | None = None
        self._checked_depth = 0
        self._lease_logged: tuple[int, int] | None = None  # (token, log start) logged
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
        self.queue: WorkQueue = WorkQueue(self)
        #: User input that arrives while a turn runs: submit, then claim in the next turn.
        self.inputs: TurnInputs = TurnInputs(self)

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
            self._roll_metadata_forward()  # one comparison unless a manifest write failed
            yield
            return
        mutex.acquire(self._lock_timeout)
        try:
            outermost = mutex.depth == 1
            fence = fenced and not self._checked_depth
            if fence:
                if self._lease is not None:
                    assert self._lease_file is not None
                    lease_module.check_current(self._lease_file, self._lease)
                else:
                    self._refuse_if_leased()
                self._checked_depth = mutex.depth
            if outermost:
                self._catch_up()
                # Metadata another writer (or this one) committed to the log but not to
                # session.json is rolled forward before anything is appended after it.
                self._roll_metadata_forward()
            if fence and self._lease is not None:
                self._log_lease(self._lease.token)
            yield
            if outermost:
                # Everything reaches the OS before the next writer reads the log.
                self._writer.flush()
        finally:
            if self._checked_depth == mutex.depth:
                self._checked_depth = 0
            mutex.release()

    def _log_lease(self, token: int) -> None:
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

    def _fresh(self) -> contextlib.AbstractContextManager[None]:
        """For a shared session, the mutex and a catch-up with what other processes
        wrote: what a read of the head, the revision or the turn returns is current.
        An exclusive writer is the only one, so its own view is current."""
        if self._mutex is None or self.closed:
            return contextlib.nullcontext()
        return self._writing(False)

    @property
    def head(self) -> int:
        """The last seq written. Every record moves it (queue and input records too);
        for a shared session it is read after catching up with other writers."""
        with self._fresh():
            return self._writer.head

    @property
    def revision(self) -> Revision:
        """See :attr:`SessionReader.revision`; kept by the writer in O(1), and for a
        shared session read after catching up with other writers."""
        with self._fresh():
            writer = self._writer
            return Revision(writer.log_start, writer.significant_head)

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
        """The turn of the last record that is not a queue or input record, or None."""
        with self._fresh():
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
            # Checked before the log write: a manifest a reader would refuse is refused
            # here, with nothing written (metadata_seq's digits cannot tip it over).
            self._encode_manifest(fields, metadata_seq=writer.head + len(entries))
            first = writer.append(entries, self._resolve_turn(turn), time.time())
            writer.sync()
            self._write_manifest(fields, metadata_seq=writer.head)
        return list(range(first, first + len(entries) - 1))

    def _reload_manifest(self) -> None:
        path = layout.session_manifest_path(self.path)
        self._manifest = manifest.read(self.io, path, manifest.SESSION_FORMAT)
        self._meta = manifest.decode_session(self._manifest, path)

    def _metadata_fields(self, title: Any, tags: Any, metadata: Any) -> dict[str, Any]:
        if self._mutex is not None:
            # Other shared writers may have changed session.json since this one read it:
            # the fields not given keep their current values, not this writer's copy.
            self._reload_manifest()
        return new_manifest(
            self.id,
            self.title if title is _UNSET else title,
            self.tags if tags is _UNSET else tags,
            self.metadata if metadata is _UNSET else metadata,
        )

    def _encode_manifest(self, fields: Mapping[str, Any], metadata_seq: int | None = None
                         ) -> tuple[dict[str, Any], bytes]:
        """The manifest with ``fields`` replaced, and its bytes; InvalidMetadata if a
        reader would refuse it. Keys this version does not know are kept."""
        updated = dict(self._manifest)
        for key in (*_METADATA_FIELDS, "updated"):
            if key in fields:
                updated[key] = fields[key]
        if metadata_seq is not None:
            updated["metadata_seq"] = metadata_seq
        updated["version"] = manifest.VERSION
        return updated, manifest.encode(updated)

    def _write_manifest(self, fields: Mapping[str, Any], metadata_seq: int | None = None) -> None:
        _, raw = self._encode_manifest(fields, metadata_seq)
        path = layout.session_manifest_path(self.path)
        self.io.atomic_write(path, raw)
        self._manifest = json.loads(raw)  # exactly what a reader gets back
        self._meta = manifest.decode_session(self._manifest, path)

    def _roll_metadata_forward(self) -> None:
        """Finish a ``save_session_with_updates`` cut off between its log write and its
        manifest write (by a crash, or a manifest write that failed): its metadata record
        is then the log's last record that is not a queue, input or lease record (those
        come from outside the turns and may follow it), and its seq is after
        ``metadata_seq``. Runs at open and at the start of each write operation, after a
        shared writer caught up (``_writing``), so that no append lands before it: a
        writer already open, or the one whose manifest write failed, rolls it forward
        too (section 12.3 of docs/FORMAT.md)."""
        writer = self._writer
        with writer.lock:
            if writer.last_kind != METADATA_RECORD or writer.closed or writer.failed:
                return  # the common case: one comparison
            seq = writer.significant_head
            if (self._meta.metadata_seq or 0) >= seq:
                return
            # Another writer may have rewritten session.json since this one read it (a
            # shared session): only a manifest still behind the record is rolled forward.
            self._reload_manifest()
            if (self._meta.metadata_seq or 0) >= seq:
                return
            writer.flush()
            record = next(iter(self._log.events(after_seq=seq - 1, until_seq=seq)), None)
            if record is None or record.seq != seq or record.kind != METADATA_RECORD:
                raise CorruptionError(f"the log's {METADATA_RECORD} record at seq {seq} "
                                      "cannot be read back", path=self._log.path)
            if not isinstance(record.data, dict):
                raise CorruptionError(f"{METADATA_RECORD} record at seq {seq} holds "
                                      f"{type(record.data).__name__}, not a map of the "
                                      "metadata fields", path=self._log.path)
            data = record.data
            try:
                title, tags, metadata = manifest.check_metadata(
                    data.get("title"), data.get("tags", ()), data.get("metadata"))
            except InvalidMetadata as exc:
                raise CorruptionError(f"{METADATA_RECORD} record at seq {seq} holds "
                                      f"metadata a manifest cannot: {exc}",
                                      path=self._log.path) from None
            fields = {"title": title, "tags": tags, "metadata": metadata,
                      "updated": _now_iso()}
            self._write_manifest(fields, metadata_seq=seq)

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
        ts: float | None = None, expected_revision: Revision | None = None,
    ) -> CommitResult:
        """Append ``events`` and apply ``state_patch`` (a JSON merge patch of the state)
        as one batch: after a crash all of it is there or none.

        ``expected_revision`` (from :attr:`revision`): commit only if the session's
        revision is still that one, i.e. no caller event, state record, commit, finished
        turn or metadata record was written since, and no clear happened; queue items and
        turn inputs that arrived meanwhile do not count. Else raise HeadConflict and write
        nothing. ``expected_head`` (a head, or a revision's seq, read earlier): the same
        check by seq, which passes when nothing but queue and input records was written
        after that seq; it cannot see a clear that left nothing after the old head, which
        ``expected_revision`` does. ``commit_id``: a commit under an id already committed
        (among the last ``SnapshotPolicy.commit_ids``) writes nothing and returns the
        first commit's result, with ``duplicate`` set.
        """
        entries = [(_kind_of(event, kind), event) for event in events]
        ops = [] if state_patch is None else [["merge", state_patch]]
        return self._commit(entries, ops, expected_head, commit_id, turn, ts,
                            expected_revision)

    def _commit(
        self, entries: list[tuple[str, Any]], ops: list[list[Any]], expected_head: int | None,
        commit_id: str | None, turn: int | None, ts: float | None,
        expected_revision: Revision | None = None,
    ) -> CommitResult:
        if commit_id is not None and (not isinstance(commit_id, str) or not commit_id
                                      or len(commit_id) > MAX_COMMIT_ID):
            raise InvalidEvent(f"commit_id must be a str of 1 to {MAX_COMMIT_ID} characters, "
                               f"not {commit_id!r}")
        if expected_head is not None:
            _check_seq(expected_head, "expected_head")
        if expected_revision is not None:
            check_revision_arg(expected_revision)
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
            check_expected(self.id, Revision(writer.log_start, writer.significant_head), head,
                           expected_head, expected_revision)
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
        # Called inside that write (under the mutex, caught up with the log), and not
        # fenced again: a snapshot is a cache of the log, not a write of events or state,
        # so queue and input ingress from a shared writer without the lease takes them
        # too, rather than have the lease refuse (and the log warn) every N records.
        try:
            self._snapshot()
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
        return self._snapshot()

    def _snapshot(self) -> int:
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
        layout.check_checkpoint_id(checkpoint_id, new=True)
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
        """Sync as the durability mode promises and release the writer lock.

        A shared session closes under the mutex, after catching up with the log (waiting
        for the mutex as its writes do, ``lock_timeout``): another writer may have sealed
        the segment this one has open (a rollover, or the seal a fork does first) or
        cleared the log, and a sealed segment, perhaps hard-linked into a fork, is never
        written again; the sync and its synced mark go to the segment that is active now.
        If the mutex cannot be had, the session is closed without that sync (its batches
        were handed to the OS when each write returned) and SessionLocked is raised."""
        try:
            for opened in self._collections.values():
                opened.close()
            if self._mutex is None:
                self._writer.close()
            else:
                self._close_shared(self._mutex)
        finally:
            if self._lock is not None and self._lock.is_locked:
                self._lock.release()
            if self._mutex is not None:
                if self._lease_file is not None:
                    self._lease_file.close()
                self._mutex.close()

    def _close_shared(self, mutex: SessionMutex) -> None:
        writer = self._writer
        if writer.closed:
            return
        try:
            mutex.acquire(self._lock_timeout)
        except SessionNotFound:
            writer.close(sync=False)  # deleted: nothing of it is left to make durable
            return
        except BaseException:
            writer.close(sync=False)  # without the mutex, write nothing to the log
            raise
        try:
            try:
                if not writer.failed:
                    writer.refresh()  # onto the active segment, if it moved
            finally:
                writer.close()
        finally:
            mutex.release()

    @property
    def closed(self) -> bool:
        return self._writer.closed

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<fsstore.Session {self.id!r} head={self.head} path={self.path!r}>"


_METADATA_FIELDS = ("title", "tags", "metadata")


def _check_seq(seq: object, name: str = "seq") -> int:
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise SeqOutOfRange(f"{name} must be an int >= 0, not {seq!r}")
    return seq


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
