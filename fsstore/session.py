"""One session folder, written: where the session's parts meet.

:class:`SessionReader` (``session_reader.py``) reads without locks, from any process,
while a writer appends. :class:`Session` is the one writer: it holds the session's
writer lock for as long as it is open, so a second writer in any thread or process is
refused (or waits), or, shared, takes it for each write. It composes the log writer, the
state image with its snapshots and checkpoints, the attachments, the vector collections,
the work queue and the turn inputs; who may write and when is ``writer_access.py``, the
title, tags and metadata in session.json are ``session_metadata.py``.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Concatenate, NamedTuple, ParamSpec, Protocol, TypeVar

from . import catalog, chain_bindings, chain_bridges, clock, identity, layout, vectors
from . import state as state_module
from .aio import AsyncSessionMixin
from .aio_maintenance import AsyncSessionMaintenanceMixin
from .blobs import BLOB_MARKER, DEFAULT_GRACE_SECONDS, BlobStore, GcReport, find_refs
from .chain import ChainKey
from .chain_session import writer_head_hash
from .errors import (
    CheckpointExists,
    CheckpointNotFound,
    CorruptionError,
    FormatVersionError,
    FsStoreError,
    InvalidEvent,
    InvalidMetadata,
    InvalidSetting,
    SeqOutOfRange,
    SessionNotFound,
    TurnError,
    WriteFailed,
)
from .frame_reads import Frame
from .fsio import FileIO
from .lease import Lease
from .log_format import DEFAULT_MAX_RECORD_BYTES, DEFAULT_SEGMENT_SIZE, check_seq
from .log_writer import Durability, LogWriter
from .message_index import MessageIndex
from .messages import Messages, message_rows
from .retention import RetainReport, RetentionPolicy, retain_log, with_dropped_history
from .session_metadata import METADATA_FIELDS, METADATA_RECORD
from .session_reader import CopiedHistory, ForkOrigin, SessionInfo, SessionReader
from .snapshot import CHECKPOINT_KINDS, CheckpointInfo, SnapshotPolicy
from .state import STATE_RECORD, StateImage, copy_value, normalize_ops
from .turns import (
    MESSAGE_RECORD,
    NEUTRAL_KINDS,
    TURN_FINISHED,
    Revision,
    Turn,
    check_expected,
    check_revision_arg,
    check_ts,
    event_kind,
)
from .unset import UNSET
from .usage import UsageFold
from .vacuum import DEFAULT_TORN_GRACE_SECONDS, SessionVacuum, VacuumReport, vacuum_session
from .vectors import DistanceMetric, VectorCollection
from .work import INPUT_RECORD, QUEUE_RECORD, Build, TurnInputs, WorkQueue
from .writer_access import WriterAccess

__all__ = [
    # defined here
    "CommitResult", "Session",
    # the package takes these from here too (``fsstore.SessionReader``, ...)
    "METADATA_RECORD", "TURN_FINISHED", "ForkOrigin", "Revision", "SessionInfo",
    "SessionReader", "Turn",
]

MAX_COMMIT_ID = 256

_T = TypeVar("_T")
_P = ParamSpec("_P")
_Method = Callable[Concatenate["Session", _P], _T]


class SessionForker(Protocol):
    """What a Session needs of the store that opened it: to fork it (a ``Store`` is
    one; see ``Store.fork_session``)."""

    def fork_session(
        self, source_id: str, new_id: str | None = None, *, at_seq: int | None = None,
        at_checkpoint: str | None = None, title: str | None = ...,
        tags: Iterable[str] = ..., metadata: Mapping[str, Any] = ...,
        durability: Durability | str | None = None, source: Session | None = None,
    ) -> Session: ...


class CommitResult(NamedTuple):
    """What ``commit`` wrote: the seqs of its events, the head after it (the seq of its
    state record when it has one), its commit id, and whether it is the stored result
    of an earlier commit under the same id (nothing new was written)."""

    seqs: list[int]
    head: int
    commit_id: str | None
    duplicate: bool = False


def _writes(fenced: bool = True) -> Callable[[_Method[_P, _T]], _Method[_P, _T]]:
    """Run a Session method as one write operation: for a shared session, under the
    session's mutex, after the fence (when ``fenced``) and a catch-up with the log."""
    def wrap(method: _Method[_P, _T]) -> _Method[_P, _T]:
        def run(self: Session, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
            with self._access.writing(fenced):
                return method(self, *args, **kwargs)
        functools.update_wrapper(run, method)  # its name, docstring and signature
        return run
    return wrap


class Session(SessionReader, AsyncSessionMixin, AsyncSessionMaintenanceMixin):
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
        store: SessionForker | None = None,
        blob_compression: str = "auto",
        lease: Lease | None = None,
        shared: bool = False,
        chain_key: ChainKey | None = None,
    ) -> None:
        chosen = Durability.of(durability)
        io.check_folders(path)  # before its writer.lock is opened through it
        #: Who may write, and when: the exclusive writer lock, or the shared mutex.
        self._access = access = WriterAccess(io, path, session_id, chosen, lease, shared,
                                             lock_timeout)
        try:
            super().__init__(io, path, session_id, snapshots, chain_key=chain_key)
            access.check_opened()
            self._writer = writer = LogWriter(
                io, layout.log_dir(path), chosen, segment_size, max_record_bytes,
                neutral_kinds=NEUTRAL_KINDS, identity=self.identity, chain=self._log.chain,
            )
            self._manifest_file.sealer = chain_bindings.manifest_sealer(writer)
            access.attach(writer, catch_up=self._catch_up,
                          roll_forward=self._roll_metadata_forward)
            self._log = writer.reader
            self._message_index_file = MessageIndex(
                io, path, self._log, identity.NO_UID if self.identity is None
                else self.identity.uid, writable=True)
            self._message_index_file.owned = not access.shared
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
            access.abandon()
            raise
        access.opened()
        ingress = SessionIngress(self)
        #: The session's queue of work: enqueue, claim, complete, fail, release.
        self.queue: WorkQueue = WorkQueue(ingress)
        #: User input that arrives while a turn runs: submit, then claim in the next turn.
        self.inputs: TurnInputs = TurnInputs(ingress)
        #: The session's conversation: append, edit and delete messages, and read them.
        self.messages: Messages = Messages(SessionMessages(self))

    # --- queue and input ingress (what ``SessionIngress`` runs) ---

    def _ingress(self, build: Build[_T], *, fenced: bool) -> _T:
        """One queue or input operation: under the mutex, with the image caught up,
        ``build`` decides the records (or raises); they are appended as one batch, made
        durable, and folded; ``build``'s second result turns the first seq into the
        answer."""
        with self._access.writing(fenced):
            writer = self._writer
            with writer.lock:
                writer.check_usable()
                image = self._loaded()
                now = clock.now()
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

    def _inputs_claimed(self, turn: int, ids: list[int]) -> None:
        self._claimed_inputs = (turn, ids)  # finish_turn consumes them

    def _fold(self, first: int, entries: list[tuple[str, Any]], ts: float,
              turn: int = 0) -> None:
        """Fold appended queue, input, message and turn_finished records into the
        loaded image."""
        image = self._image
        if image is None:
            return
        for offset, (kind, data) in enumerate(entries):
            if kind == QUEUE_RECORD:
                image.work.apply(first + offset, ts, data)
            elif kind == INPUT_RECORD:
                image.inputs.apply(first + offset, ts, data)
            elif kind == MESSAGE_RECORD:
                image.usage.apply(ts, turn, data)
            elif kind == TURN_FINISHED:
                image.usage.turn_finished(ts, turn)

    # --- messages (what ``messages.Messages`` writes and reads through) ---

    @contextlib.contextmanager
    def _message_index(self) -> Iterator[MessageIndex]:
        """The message index, under the writer's lock, brought up to the log: rows the
        file lacks (a crash fell between a batch and its rows) are written."""
        with self._access.writing(False), self._writer.lock:
            yield self._fresh_message_index()

    def _fresh_message_index(self) -> MessageIndex:
        writer = self._writer
        writer.check_usable()
        writer.flush()
        index = self._message_index_file
        index.refresh(writer.head, writer.log_start, writer=True)
        return index

    @_writes()
    def _append_messages(
        self, build: Callable[[MessageIndex], list[dict[str, Any]]], turn: int | None,
        ts: float | None = None,
    ) -> tuple[int, float, int]:
        """Append the message records ``build`` makes from the fresh index (it raises
        to refuse them, before anything is written) as one batch, then their index rows;
        return the first seq, the batch's ts and its turn."""
        writer = self._writer
        with writer.lock:
            index = self._fresh_message_index()
            entries = [(MESSAGE_RECORD, record) for record in build(index)]
            number = self._resolve_turn(turn)
            stamp = time.time() if ts is None else check_ts(ts)
            first = writer.append(entries, number, stamp)
            # The rows point at the frame: it must be in the segment file before they
            # are (durability "none" buffers frames in memory).
            writer.flush()
            segment, offset, size = writer.last_frame
            frame = Frame(segment, offset, size, first, len(entries), stamp, number, None)
            try:
                index.add_rows(message_rows(index, first, entries, frame), write=True,
                               defer=not self._access.shared)
            except OSError as exc:
                # The batch is in the log, which is the authority: the next refresh
                # indexes it from there.
                state_module.logger.warning("session %r: message index write failed: %s",
                                            self.id, exc)
                index.forget()
            self._fold(first, entries, stamp, number)
            if self._snapshot_due():
                self._auto_snapshot()
            return first, stamp, number

    def _usage_fold(self, at_seq: int | None) -> UsageFold:
        if at_seq is None:
            with self._access.writing(False), self._writer.lock:
                return copy.deepcopy(self._loaded().usage)  # appends go on meanwhile
        return super()._usage_fold(at_seq)

    @_writes(fenced=False)
    def _view(self) -> StateImage:
        """The image, caught up with the log (queue and inputs read from it)."""
        with self._writer.lock:
            return self._loaded()

    def _catch_up(self) -> None:
        """Fold in what other writers appended since this one last held the mutex
        (``WriterAccess.writing`` calls it for a shared writer)."""
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
        """The last seq written. Every record moves it (queue and input records too);
        for a shared session it is read after catching up with other writers."""
        with self._access.fresh():
            return self._writer.head

    @property
    def revision(self) -> Revision:
        """See :attr:`SessionReader.revision`; kept by the writer in O(1), and for a
        shared session read after catching up with other writers."""
        with self._access.fresh():
            writer = self._writer
            return Revision(writer.log_start, writer.significant_head)

    head_hash = property(lambda self: writer_head_hash(self._writer, self._access.fresh))

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
        with self._access.fresh():
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
        entries = [(event_kind(event, kind), event)]
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
        entries = [(event_kind(event, kind), event) for event in events]
        if not entries:
            return []
        stamp = time.time() if ts is None else float(ts)
        with self._writer.lock:
            first = self._writer.append(entries, self._resolve_turn(turn), stamp)
            if self._snapshot_due():
                self._auto_snapshot()
        return list(range(first, first + len(entries)))

    @_writes()
    def finish_turn(self, turn: int | None = None, *, checkpoint: bool = False,
                    ts: float | None = None) -> None:
        """Close a turn: record that it is finished and make everything appended so far
        durable (fsync; with plain durability ``none`` only handed to the OS). Finishing
        the current turn again does nothing more than the barrier. With ``checkpoint``,
        also freeze the state under a checkpoint of kind ``"turn"``. ``ts`` (default
        now) stamps the record: an import gives the time the turn ended at its source."""
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
                stamp = time.time() if ts is None else check_ts(ts)
                resolved = self._resolve_turn(number)
                first = self._writer.append(entries, resolved, stamp)
                self._fold(first, entries, stamp, resolved)
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

    def operation(self) -> contextlib.AbstractContextManager[None]:
        """Several calls as one operation: for a shared session the mutex is taken, and
        the handle caught up with other writers, once for all of them, so they see each
        other's writes and nothing of another writer's between them (and cost one
        catch-up, not one each). Re-entrant. An exclusive session's calls need it not
        (it is the only writer), and get a no-op. Keep it short: other writers wait."""
        return self._access.fresh()

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
    def retain(self, *, keep_turns: int | None = None, keep_since: float | None = None,
               keep: str = "all", dry_run: bool = False,
               policy: RetentionPolicy | None = None) -> RetainReport:
        """Drop old history by ``policy`` (or the rules given: :class:`RetentionPolicy`)
        and report it. State, queue, inputs, usage and checkpoints stay exact; the
        dropped history becomes its state image (docs/FORMAT.md 5.6), seqs go on and
        :attr:`history_start` moves. ``dry_run`` changes nothing. Durable on return."""
        if policy is None:
            policy = RetentionPolicy(keep_turns, keep_since, keep)
        writer = self._writer
        with writer.lock:
            report = retain_log(self.io, writer, self._snapshots, self.path,
                                identity.NO_UID if self.identity is None else self.identity.uid,
                                policy, self._policy.commit_ids, dry_run=dry_run)
            if report.seqs_dropped and not dry_run:
                self._message_index_file.forget()  # its rows name dropped files
        return report

    @_writes(fenced=False)
    def set_retention(self, policy: RetentionPolicy | None) -> None:
        """Keep ``policy`` in the manifest (None removes it), for ``vacuum``."""
        file = self._manifest_file
        with self._writer.lock:
            if self._access.shared:
                file.reload()
            file.write({"retention": None if policy is None else policy.to_manifest()})

    @_writes()
    def update_metadata(
        self, *, title: str | None = UNSET, tags: Iterable[str] = UNSET,
        metadata: Mapping[str, Any] = UNSET,
    ) -> None:
        """Replace the given fields of the session manifest, atomically."""
        file = self._manifest_file
        with self._writer.lock:
            file.write(file.fields(title, tags, metadata, reload=self._access.shared))

    @_writes()
    def save_session_with_updates(
        self, updates: Iterable[Mapping[str, Any]] = (), *, title: str | None = UNSET,
        tags: Iterable[str] = UNSET, metadata: Mapping[str, Any] = UNSET,
        turn: int | None = None, kind: str | None = None,
    ) -> list[int]:
        """Append ``updates`` and replace the given metadata fields in one atomic step;
        return the updates' seqs. Durable when it returns.

        The batch ends with an ``fsstore.metadata`` record holding the new fields, so the
        updates and the metadata commit together in one log write. ``session.json`` is
        rewritten right after; if a crash falls in between, the next writer to open the
        session rewrites it from that record.
        """
        entries = [(event_kind(event, kind), event) for event in updates]
        writer, file = self._writer, self._manifest_file
        with writer.lock:
            fields = file.fields(title, tags, metadata, reload=self._access.shared)
            entries.append((METADATA_RECORD, {k: fields[k] for k in METADATA_FIELDS}))
            # Checked before the log write: a manifest a reader would refuse is refused
            # here, with nothing written (metadata_seq's digits cannot tip it over).
            file.encode(fields, metadata_seq=writer.head + len(entries))
            first = writer.append(entries, self._resolve_turn(turn), time.time())
            writer.sync()
            file.write(fields, metadata_seq=writer.head)
        return list(range(first, first + len(entries) - 1))

    def _roll_metadata_forward(self) -> None:
        """See ``ManifestFile.roll_forward``: at open, and at the start of each write
        operation (``WriterAccess.writing`` calls it)."""
        self._manifest_file.roll_forward(self._writer)

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
            state: dict[str, Any] = copy_value(self._loaded().state)
            return state

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
        entries = [(event_kind(event, kind), event) for event in events]
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
            check_seq(expected_head, "expected_head")
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
                self._snapshots.write(seq, writer.log_start, writer.position, image.body(),
                                      writer.head_link)
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
                                           writer.log_start, writer.position, image.body(),
                                           writer.head_link)

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

    @_writes()
    def vacuum(self, *, dry_run: bool = False, grace: float = DEFAULT_GRACE_SECONDS,
               torn_grace: float = DEFAULT_TORN_GRACE_SECONDS, message_grace: float = 0.0
               ) -> VacuumReport:
        """Remove what the session no longer needs and report it by kind (``fsstore.vacuum``):
        old snapshots, leftovers of interrupted writes, temp and trash files older than
        ``grace`` s, torn tails older than ``torn_grace``, unneeded vector files, orphaned
        attachments, records of done work, content of messages deleted ``message_grace``
        s ago (FORMAT 17.2). Under the writer lock. ``dry_run`` removes nothing."""
        writer = self._writer
        with writer.lock:
            policy = self.retention  # the manifest's retention policy first (5.6)
            retained = self.retain(policy=policy, dry_run=dry_run) if policy else None
            writer.flush()  # what position_holds reads is in the file
            uid = identity.NO_UID if self.identity is None else self.identity.uid
            target = SessionVacuum(
                self.io, self.path, self._log, writer.head, uid, self._policy.commit_ids,
                self._snapshots, self._checkpoints, self._loaded, writer.sync,
                self._snapshot, self.id, self._policy.keep, frozenset(self._collections),
                lambda grace, dry_run: self.gc(grace=grace, dry_run=dry_run),
                chain_bridges.bridge_writer(self._manifest_file, self._log.chain))
            report = vacuum_session(target, dry_run=dry_run, grace=grace,
                                    torn_grace=torn_grace, message_grace=message_grace)
            self._message_index_file.renew(report.messages_redacted > 0)
        return report if retained is None else with_dropped_history(report, retained)

    # --- vector collections ---

    @_writes()
    def create_collection(self, name: str, dim: int, *, dtype: str = "float32",
                          metric: DistanceMetric | str = "cosine") -> VectorCollection:
        """Create the vector collection ``name`` of ``dim``-dimensional vectors stored as
        ``dtype`` (``float32``, or ``float16`` to halve memory and disk), searched by
        ``metric`` unless a search says otherwise. Returns it, open for writing."""
        self._writer.check_usable()
        vectors.create_collection(self.io, self.path, name, dim, dtype, metric,
                                  vectors.chain_of(self, name))
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
                    durability=self._writer.durability,
                    guard=lambda: self._access.writing(True),
                    # Shared: other writers' upserts, deletes and seals are taken in
                    # before each call, under the mutex (VectorCollection.catch_up).
                    shared=self._access.locked if self._access.shared else None,
                    chain=vectors.chain_of(self, name))
                return opened
        # One opened earlier may since have been dropped by another writer: say so.
        opened.catch_up()
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
    def _copy_history(self, dest: str, *, at_seq: int | None = None,
                     at_checkpoint: str | None = None,
                     uid: identity.Identity | None = None) -> CopiedHistory:
        writer = self._writer
        with writer.lock:  # no clear or rollover in between
            writer.flush()
            if at_checkpoint is None and at_seq in (None, writer.head):
                # Seal the active segment, so that the whole history is in sealed
                # segments, which are shared: nothing is copied.
                writer.roll_over()
            return super()._copy_history(dest, at_seq=at_seq, at_checkpoint=at_checkpoint,
                                        uid=uid)

    def fork(
        self, new_id: str | None = None, *, at_seq: int | None = None,
        at_checkpoint: str | None = None, title: str | None = UNSET,
        tags: Iterable[str] = UNSET, metadata: Mapping[str, Any] = UNSET,
        durability: Durability | str | None = None,
    ) -> Session:
        """Fork this session: see ``Store.fork_session``. Returns the new session, open
        for writing; its title, tags and metadata are this session's unless given."""
        if self._store is None:
            raise InvalidSetting("this session was not opened through a Store; use "
                                 "Store.fork_session")
        return self._store.fork_session(self.id, new_id, at_seq=at_seq,
                                        at_checkpoint=at_checkpoint, title=title, tags=tags,
                                        metadata=metadata, durability=durability, source=self)

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
            self._mark_messages_indexed()
            self._access.close_writer()
        finally:
            self._message_index_file.close()
            self._access.release()
        catalog.note(self.io, self.path)  # its head and time, for listings' order

    def _mark_messages_indexed(self) -> None:
        """Let the message index say it covers the log up to the head, so that readers
        need not read the records after the last message to learn they hold none. A
        cache: a failure is logged, not raised."""
        writer = self._writer
        index = self._message_index_file
        if writer.closed or writer.failed or index.row_count == 0:
            return
        try:
            with self._access.writing(False), writer.lock:
                index = self._fresh_message_index()
                last = writer.position_of_last_frame()
                if last is None:
                    index.write_rows()
                else:
                    segment, offset, size = last
                    index.mark(writer.head, Frame(segment, offset, size, 0, 0, 0.0, 0, None))
        except SessionNotFound:
            return  # deleted meanwhile: no index is left to mark
        except (OSError, FsStoreError) as exc:
            state_module.logger.warning("session %r: message index mark failed: %s",
                                        self.id, exc)

    @property
    def closed(self) -> bool:
        return self._writer.closed

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<fsstore.Session {self.id!r} head={self.head} path={self.path!r}>"


class SessionMessages:
    """A session's side of its messages (``messages.MessageWriterHost``): what
    :class:`Messages` writes and reads through. Internal."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def index(self) -> contextlib.AbstractContextManager[MessageIndex]:
        return self._session._message_index()

    def append_records(
        self, build: Callable[[MessageIndex], list[dict[str, Any]]], turn: int | None,
        ts: float | None,
    ) -> tuple[int, float, int]:
        return self._session._append_messages(build, turn, ts)


class SessionIngress:
    """A session's side of its queue and inputs (``work.Ingress``): what
    :class:`WorkQueue` and :class:`TurnInputs` write and read through. Internal to the
    package: it runs the session's own ingress, under its writer access."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def view(self) -> StateImage:
        return self._session._view()

    def run(self, build: Build[_T], *, fenced: bool) -> _T:
        return self._session._ingress(build, fenced=fenced)

    def running_turn(self) -> int:
        return self._session._resolve_turn(None)

    def inputs_claimed(self, turn: int, ids: list[int]) -> None:
        self._session._inputs_claimed(turn, ids)
