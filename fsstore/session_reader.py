"""Read access to one session folder: its manifest, log, state, checkpoints, vector
collections and attachments, composed, without any lock.

:class:`SessionReader` reads from any process while a writer appends; the writer,
:class:`~fsstore.session.Session`, extends it.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import os
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from . import chain_bindings, chain_session, identity, layout, manifest
from .aio import AsyncSessionReaderMixin
from .aio_maintenance import AsyncReaderMaintenanceMixin
from .aio_messages import AsyncUsageMixin
from .aio_stats import AsyncSessionStatsMixin
from .defaults import DEFAULT_LEVEL, DEFAULT_TARGET_BYTES
from .errors import (
    ChainBindingBroken,
    CheckpointNotFound,
    CorruptionError,
    Finding,
    FormatVersionError,
    InvalidSetting,
    SeqOutOfRange,
)
from .fsio import FileIO
from .identity import NO_UID
from .log import LogReader, LogTail
from .log_format import Event, check_seq
from .log_writer import copy_log_prefix
from .session_metadata import ManifestFile
from .snapshot import CheckpointDir, CheckpointInfo, SnapshotDir, SnapshotFile, SnapshotPolicy
from .turns import (
    Revision,
    Turn,
    callers_events,
    is_callers,
    read_turn,
    read_turns,
    revision_of,
)

# Imported where used, not here: a program that reads events (``fsstore cat``, run per
# file by git) must not pay for state folds, messages, checks, counts, vectors (numpy)
# or watching.
if TYPE_CHECKING:
    from .blobs import BlobReader
    from .chain import ChainKey
    from .chain_check import ChainRules
    from .compaction import CompactReport
    from .message_index import MessageIndex
    from .messages import MessagesReader
    from .retention import RetentionPolicy
    from .state import Loaded, StateImage
    from .stats import SessionStats, StatsSource
    from .usage import ExecutionStats, UsageFold, UsageTotals
    from .vectors import CollectionInfo, VectorCollectionReader
    from .watch import LogCleared, Notifier, SessionWatcher
    from .work import TurnInputsReader, WorkQueueReader


class ForkOrigin(NamedTuple):
    """Where a forked session came from: its parent, and the parent's seq (and
    checkpoint, if it was forked at one) its history ends at."""

    parent: str
    seq: int
    checkpoint: str | None


class CopiedHistory(NamedTuple):
    """What a fork's copy of a history gives ``Store.fork_session``: where it came from,
    and the fork's ``chain`` (its manifest's, FORMAT.md 3.4; None for a fork of a session
    without one)."""

    origin: ForkOrigin
    chain: dict[str, Any] | None


class SpawnOrigin(NamedTuple):
    """Which session spawned this one (a sub-agent started in one of its turns): the
    parent, the parent's seq it was spawned at, and the turn of the parent's record
    there (None when no record of a turn is there: seq 0, or a cleared history)."""

    parent: str
    seq: int
    turn: int | None


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
    spawned_by: SpawnOrigin | None = None
    #: The first seq of the history the log holds: the log start, or the seq after the
    #: history retention dropped (``SessionReader.history_start``). 0: unknown.
    history_start: int = 0


#: How long a fork waits for a compaction of its parent to end.
_FORK_WAITS_FOR_COMPACTION = 60.0
#: Held while a reader makes a member on first use (see _made_once).
_MEMBER_MADE = threading.RLock()
_T = TypeVar("_T")


def _made_once(reader: SessionReader, name: str, make: Callable[[], _T]) -> _T:
    """The member ``name`` of ``reader``, made by ``make`` if no thread made it yet.
    Called by its cached_property, which on Python 3.12 and later takes no lock: two
    threads' first reads would each make one, and hold different objects (two message
    indexes, each with the file open). Under the lock the first one made is the one
    stored; cached_property then stores that same object again. An RLock: making one
    member may read another."""
    with _MEMBER_MADE:
        found: _T | None = reader.__dict__.get(name)
        if found is None:
            found = reader.__dict__[name] = make()
        return found


class SessionReader(AsyncSessionReaderMixin, AsyncUsageMixin, AsyncReaderMaintenanceMixin,
                    AsyncSessionStatsMixin):
    """Read access to one session: its metadata, events and turns. Takes no lock."""

    def __init__(self, io: FileIO, path: str, session_id: str,
                 snapshots: SnapshotPolicy | None = None, *,
                 chain_key: ChainKey | None = None) -> None:
        self.io = io
        self.id = session_id
        self.path = path
        io.check_folders(*layout.session_folders(path))  # no symlinked folder in a session
        self._manifest_file = ManifestFile(io, path, session_id)
        #: The session's uid and the uids of the files it may hold (None: created before
        #: format 1.3): segments and snapshots of another session are refused.
        self.identity = identity.from_manifest(self._manifest, self._manifest_file.path)
        self._log = LogReader(io, layout.log_dir(path), self.identity)
        # Its hash chain (FORMAT.md 3.4), if it has one: every read of the log checks it.
        self._log.chain = chain_session.rules_of(self._meta.chain, chain_key, path,
                                                 self._manifest_file.path)
        # ... which session.json is bound to (chain_bindings.py)
        check = self._manifest_file.checker = chain_bindings.manifest_checker(
            self._log.chain, self._manifest_file.path)
        if check is not None:
            check(self._manifest_file.raw)
        self._policy = snapshots or SnapshotPolicy()
        self._snapshots = SnapshotDir(io, path, self.identity, self._log.chain)
        self._checkpoints = CheckpointDir(io, path, self.identity, self._log.chain)
        #: What the last state load found wrong with snapshot files (they were skipped).
        self.state_findings: list[Finding] = []

    # The attachments, queue, inputs and conversation are made on first use (a writer
    # sets its own in __init__), so that reading events imports none of their modules.
    # Each is made once under a lock (_made_once): a reader shared by threads (async
    # twins run in worker threads) gives every thread the one object, on every Python
    # (cached_property locks on 3.10 and 3.11 only).

    @functools.cached_property
    def blobs(self) -> BlobReader:
        """The session's attachments: get, open, exists, stat (and put, for a writer)."""
        from .blobs import BlobReader

        return _made_once(self, "blobs", lambda: BlobReader(self.io, self.path))

    @functools.cached_property
    def queue(self) -> WorkQueueReader:
        """The session's queue of work, as the log has it: ``queue.items(status)``."""
        from .work import WorkQueueReader

        return _made_once(self, "queue", lambda: WorkQueueReader(_ReaderFolds(self)))

    @functools.cached_property
    def inputs(self) -> TurnInputsReader:
        """The session's turn inputs, as the log has them: ``inputs.items(status)``."""
        from .work import TurnInputsReader

        return _made_once(self, "inputs", lambda: TurnInputsReader(_ReaderFolds(self)))

    @functools.cached_property
    def messages(self) -> MessagesReader:
        """The session's conversation: ``messages.last(50)``, ``messages.get(id)``, ..."""
        from .messages import MessagesReader

        return _made_once(self, "messages", lambda: MessagesReader(ReaderMessages(self)))

    @functools.cached_property
    def _message_index_file(self) -> MessageIndex:
        from .message_index import MessageIndex

        # One index per reader: it keeps its file open and what it read of the log.
        return _made_once(self, "_message_index_file", lambda: MessageIndex(
            self.io, self.path, self._log,
            NO_UID if self.identity is None else self.identity.uid))

    # --- metadata ---

    @property
    def _manifest(self) -> dict[str, Any]:
        """session.json as last read (or written, by a writer): all of it."""
        return self._manifest_file.raw

    @property
    def _meta(self) -> manifest.SessionManifest:
        return self._manifest_file.meta

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
        start = self._history_start(tail.log_start)
        path = layout.session_manifest_path(self.path)
        updated = manifest.iso_to_epoch(self._meta.updated, path, "updated")
        if tail.last_ts is not None and math.isfinite(tail.last_ts):
            updated = max(updated, tail.last_ts)
        return SessionInfo(
            id=self.id, path=self.path,
            created=manifest.iso_to_epoch(self._meta.created, path, "created"),
            updated=updated, event_count=tail.head - start + 1, head=tail.head,
            title=self.title, tags=self.tags, metadata=self.metadata, parent=self.parent,
            spawned_by=self.spawned_by, history_start=start,
        )

    @property
    def history_start(self) -> int:
        """The first seq of the history the log holds: where ``events()`` starts. The
        log start, or, when retention dropped older history, the seq after it."""
        self._before_read()
        return self._history_start(self._log.tail().log_start)

    def _history_start(self, log_start: int) -> int:
        base = self._log.base_of(log_start)
        return log_start if base is None else base.seq + 1

    @property
    def retention(self) -> RetentionPolicy | None:
        """The retention policy kept in the session manifest, None if none is."""
        value = self._meta.retention
        if value is None:
            return None
        from .retention import RetentionPolicy

        return RetentionPolicy.from_manifest(value, layout.session_manifest_path(self.path))

    @property
    def parent(self) -> ForkOrigin | None:
        """Where this session was forked from; None if it was not."""
        record = self._meta.parent
        if record is None:
            return None
        return ForkOrigin(record.id, record.seq, record.checkpoint)

    @property
    def spawned_by(self) -> SpawnOrigin | None:
        """Which session spawned this one, and where; None if none did."""
        record = self._meta.spawned_by
        if record is None:
            return None
        return SpawnOrigin(record.id, record.seq, record.turn)

    # --- events ---

    @property
    def head(self) -> int:
        """The last seq written (0 for a session that never had an event). Every record
        moves it, queue and input records too: check commits against :attr:`revision`."""
        return self._log.tail().head

    @property
    def chain_rules(self) -> ChainRules | None:
        """The rules of the session's hash chain (FORMAT.md 3.4); None without one."""
        return self._log.chain

    @property
    def head_hash(self) -> str | None:
        """The hash chain's value after the head, ``"SEQ:HEX"`` (docs/FORMAT.md 3.4): it
        vouches for the whole history up to ``SEQ``, so a copy of it kept elsewhere tells
        whether that history was changed since. None for a session without a chain.
        Read from the end of the log, its last segment's chain checked (a keyed chain
        needs its key: ChainKeyRequired)."""
        self._before_read()
        return chain_session.read_head_hash(self._log)

    @property
    def log_tail(self) -> LogTail:
        """What the end of the log says now, read from its last segment without a scan:
        the head, the log's start (where a clear moved it), and the time, turn and kind
        of the last record (the store's own records included)."""
        self._before_read()
        return self._log.tail()

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
        reads. ``limit`` and ``last`` are the two ends of the same range: pass one.

        Refused before anything is read: a seq that is not an int >= 0 (InvalidSeq), a
        ``limit`` or ``last`` that is not (InvalidSetting), or both of them."""
        check_events_args(after_seq, until_seq, limit, last)
        # A count past any log means "all of them"; numbers past sys.maxsize overflow islice
        # and deque.
        limit = None if limit is None else min(limit, sys.maxsize)
        last = None if last is None else min(last, sys.maxsize)
        self._before_read()
        if last is not None:
            def callers(event: Event) -> bool:
                return is_callers(event.kind)
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

    def verify(self, expect_head: str | None = None, *, exact: bool = False
               ) -> list[Finding]:
        """Read everything a read would read and report each problem; changes nothing and
        never raises, but for ImportError naming a module fsstore needs that is not
        installed (see :mod:`fsstore.check`).

        ``expect_head``: a :attr:`head_hash` kept from before (a pin, docs/FORMAT.md
        3.5). The session must still hold the history it vouched for: the record ending
        at its seq must carry its value, else a problem (records cut off the end, the
        folder put back from an older copy, the history changed); later records get a
        note counting them, or a problem with ``exact``. A session without a chain is a
        problem then. InvalidPins, before anything is read, for text that is no head
        hash."""
        from .chain_pins import check_head, parse_head_hash
        from .check import SessionParts, check_session

        if expect_head is not None:
            parse_head_hash(expect_head)
        parts = SessionParts(self._manifest, self._log, self._snapshots, self._checkpoints,
                             self._policy.commit_ids, self._message_index_file)
        findings = check_session(self, parts)
        if expect_head is not None:
            findings += check_head(self._log, self.path, expect_head, exact=exact)
        return findings

    # --- maintenance ---

    def compact(self, *, dry_run: bool = False, target_bytes: int = DEFAULT_TARGET_BYTES,
                level: int = DEFAULT_LEVEL, lock_timeout: float = 0.0) -> CompactReport:
        """Rewrite the log's sealed segments zstd-compressed, merging consecutive ones
        into files of about ``target_bytes`` of records, and return a report (bytes
        before and after). Every record, seq and recorded place stays as it was; only
        the files change (docs/FORMAT.md, section 5.5). Works beside a writer, in any
        process, without its lock: the active segment is never touched. Another
        compaction of the session running raises SessionLocked (after ``lock_timeout``
        seconds). With ``dry_run`` nothing changes and the report counts the files it
        would write. Damage in a sealed segment raises CorruptionError naming it, and
        that segment stays as it is."""
        from .compaction import compact_log

        return compact_log(self.io, self._log, self.path,
                           NO_UID if self.identity is None else self.identity.uid,
                           target_bytes=target_bytes, level=level, dry_run=dry_run,
                           lock_timeout=lock_timeout)

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
        from .watch import SessionWatcher

        watcher = SessionWatcher(self._log, self.id, after_seq, poll_interval=poll_interval,
                                 notifier=notifier)
        if callback is not None:
            watcher.start(callback)
        return watcher

    # --- messages ---

    @contextlib.contextmanager
    def _message_index(self) -> Iterator[MessageIndex]:
        """The message index, brought up to the log's end (``messages.py`` reads it)."""
        self._before_read()
        index = self._message_index_file
        index.refresh(writer=False)
        yield index

    def usage(self, *, by: str | None = None, at_seq: int | None = None
              ) -> dict[str, UsageTotals]:
        """Tokens and cost of the session's messages: all under ``""``, or keyed by
        ``by="model"`` or ``by="day"`` (UTC). A fold of the log kept in snapshots, so it
        costs a state load. ``at_seq`` as for ``state_at``."""
        from .usage import check_usage_by

        check_usage_by(by)
        return self._usage_fold(at_seq).totals(by)

    def stats(self, *, at_seq: int | None = None) -> ExecutionStats:
        """The session's execution statistics: messages by role, tool calls and tool
        errors, tokens and cost, finished turns and their wall time."""
        return self._usage_fold(at_seq).stats()

    def _usage_fold(self, at_seq: int | None) -> UsageFold:
        if at_seq is None:
            return self._load_state().image.usage
        return self._load_state(check_seq(at_seq, "at_seq"), past=True).image.usage

    # --- counts (fsstore/stats.py) ---

    def session_stats(self, *, events_by_kind: bool = False) -> SessionStats:
        """Counts and sizes of the session, for a host to chart (a
        :class:`~fsstore.stats.SessionStats`; ``to_dict()`` gives JSON): records, turns,
        messages, state keys, segments (sealed, compacted) and the bytes of the log,
        snapshots, checkpoints, attachments and their bytes, vector collections and
        documents, queue items and turn inputs by status, the lease holder, the times of
        the first and last records, and the bytes by kind of file.

        Read from the session's folder listings, segment headers, the end of the log and
        the state at the head (the newest snapshot and the log after it), never the
        whole history, so the cost does not grow with it. ``events_by_kind=True`` also
        counts the records by kind and the turns holding a record: that reads the whole
        log."""
        from .stats import session_stats

        return session_stats(self._stats_source(), events_by_kind=events_by_kind)

    def key_count(self) -> int:
        """The number of keys in the session's state at the head (``state()``'s keys):
        what post-cortex's ``get_key_count`` answers for a store of keys. Not events,
        messages or queue items: those are in :meth:`session_stats`. Costs a state load."""
        return len(self._view().state)

    def _stats_source(self) -> StatsSource:
        from .stats import StatsSource

        self._before_read()
        return StatsSource(self.io, self.path, self.id, self.title, self._log, self._view)

    # --- queued work and turn inputs ---

    def _view(self) -> StateImage:
        """The fold the queue and the inputs list from: loaded afresh by a reader."""
        return self._load_state().image

    # --- vector collections ---

    def collections(self) -> list[CollectionInfo]:
        """Each vector collection's name, dimension, dtype, metric, count and bytes."""
        from . import vectors

        return [self.collection(name).info()
                for name in vectors.collection_names(self.io, self.path)]

    def collection(self, name: str) -> VectorCollectionReader:
        """The vector collection ``name``, as it is now (read-only: searches and gets)."""
        from . import vectors

        name = vectors.check_collection_name(name)
        return vectors.VectorCollectionReader(
            self.io, os.path.join(layout.vectors_dir(self.path), name),
            vectors.chain_of(self, name))

    # --- state ---

    def _load_state(self, until_seq: int | None = None, *, past: bool = False) -> Loaded:
        from . import state as state_module

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
        check_seq(seq)
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
                from .state import logger

                logger.warning("checkpoint skipped: %s", exc)
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
        from .state import StateImage, logger

        info = self.checkpoint_info(checkpoint_id)
        path = self._checkpoints.file_path(checkpoint_id)
        try:
            file = self._checkpoints.read(path)
            chain_bindings.check_checkpoint_link(self._log, file.header, file.meta, path)
            return StateImage.from_file(file, self._policy.commit_ids, path)
        except FileNotFoundError:
            raise CheckpointNotFound(
                f"session {self.id!r} has no checkpoint {checkpoint_id!r}") from None
        except ChainBindingBroken:
            raise  # not damage a rebuild hides: the file was made or changed against the chain
        except CorruptionError as exc:
            header = self._checkpoints.read(path, with_body=False).header
            if header.log_start != self._log.tail().log_start:
                raise
            loaded = self._load_state(info.seq)
            self.state_findings = [*loaded.findings, Finding(
                "problem", path, exc.offset, f"{exc.reason}; the state was rebuilt from "
                "the log")]
            logger.warning("%s", self.state_findings[-1])
            return loaded.image

    # --- forks ---

    def _copy_history(self, dest: str, *, at_seq: int | None = None,
                     at_checkpoint: str | None = None,
                     uid: identity.Identity | None = None) -> CopiedHistory:
        """Write this session's history up to ``at_seq`` (default: the head), or up to
        the seq checkpoint ``at_checkpoint`` froze, into the folder ``dest`` as the
        ``log/`` and ``state/`` of a new session, and return where it ends.

        Sealed segments are shared by hard link, the rest copied (``log.copy_log_prefix``),
        and the state there becomes the new session's snapshot. What is written anew
        carries ``uid``, the new session's identity. All of it is fsynced.
        ``Store.fork_session`` builds a fork with it. A chained session's fork continues
        its chain: its own records start a segment anchored on its junction.
        """
        from . import compaction  # its folder lock, looked up when it is taken

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
            image = None
        log_path = layout.log_dir(dest)
        self.io.mkdir(log_path)
        try:
            # A compaction must not unlink a segment while it is linked here, and a
            # vacuum's reclaim must not rewrite the files between the fold and the links:
            # the fork's snapshot is the fold of the very files it links.
            with compaction.log_folder_lock(self._log.path, _FORK_WAITS_FOR_COMPACTION):
                if image is None:
                    image = self._load_state(seq, past=True).image
                position = copy_log_prefix(self.io, self._log, log_path, seq,
                                           identity.NO_UID if uid is None else uid.uid)
        except FileNotFoundError as exc:
            raise SeqOutOfRange(
                f"session {self.id!r} was cleared or deleted while it was being forked "
                f"({exc.filename}); retry") from None
        link = None
        if self._log.chain is not None:  # the fork's snapshot is bound to its chain
            fork_log = LogReader(self.io, log_path)
            fork_log.chain = self._log.chain
            link = chain_bindings.link_at(fork_log, position)
        SnapshotDir(self.io, dest, uid, self._log.chain).write(seq, tail.log_start, position,
                                                               image.body(), link)
        from .blobs import link_blobs

        link_blobs(self.io, self.path, dest)
        # the fork's own records start at position.segment (a chained copy makes it so)
        chain = chain_session.fork_chain(self._meta.chain, position.segment - 1,
                                         identity.NO_UID if uid is None else uid.uid)
        return CopiedHistory(ForkOrigin(self.id, seq, at_checkpoint), chain)


class _ReaderFolds:
    """What a reader's queue and inputs list from (``work.FoldSource``): the fold of
    the log, loaded afresh for each listing (a writer's is its own, kept current)."""

    def __init__(self, reader: SessionReader) -> None:
        self._reader = reader

    def view(self) -> StateImage:
        return self._reader._view()


class ReaderMessages:
    """A reader's side of its messages (``messages.MessageHost``). Internal."""

    def __init__(self, reader: SessionReader) -> None:
        self._reader = reader

    def index(self) -> contextlib.AbstractContextManager[MessageIndex]:
        return self._reader._message_index()


class ExportView:
    """What ``fsstore export`` reads of a session besides its public reads: the manifest
    as it is on disk, the log's frames, the state image at a seq and checkpoint files.
    Internal to the package: not public API."""

    def __init__(self, reader: SessionReader) -> None:
        self._reader = reader

    def manifest(self) -> dict[str, Any]:
        return dict(self._reader._manifest)

    def log(self) -> LogReader:
        return self._reader._log

    def image(self, seq: int) -> StateImage:
        return self._reader._load_state(seq).image

    def checkpoint_file(self, checkpoint_id: str) -> SnapshotFile:
        checkpoints = self._reader._checkpoints
        return checkpoints.read(checkpoints.file_path(checkpoint_id))


def copy_history(reader: SessionReader, dest: str, *, at_seq: int | None = None,
                 at_checkpoint: str | None = None,
                 uid: identity.Identity | None = None) -> CopiedHistory:
    """``reader``'s history written into the folder ``dest`` as a new session's ``log/``
    and ``state/`` (see ``SessionReader._copy_history``; a writer seals its active
    segment first, when that spares a copy): what ``Store.fork_session`` builds a fork
    with. Internal to the package: not public API."""
    return reader._copy_history(dest, at_seq=at_seq, at_checkpoint=at_checkpoint, uid=uid)


def check_events_args(after_seq: object, until_seq: object, limit: object,
                      last: object) -> None:
    """What ``events()`` (and ``aevents``, before its first read) refuses."""
    check_seq(after_seq, "after_seq")
    if until_seq is not None:
        check_seq(until_seq, "until_seq")
    for name, count in (("limit", limit), ("last", last)):
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)
                                  or count < 0):
            raise InvalidSetting(f"{name} must be an int >= 0 or None, not {count!r}")
    if limit is not None and last is not None:
        raise InvalidSetting("events() takes limit (the first N events) or last (the last N), "
                             "not both")


def chain_parts(reader: SessionReader) -> tuple[manifest.ChainRecord | None, LogReader]:
    """``reader``'s chain as its manifest declares it (None: no chain) and its log, read
    under the chain's rules: what a pinned head is checked against (``chain_pins.py``).
    Internal to the package: not public API."""
    return reader._meta.chain, reader._log
