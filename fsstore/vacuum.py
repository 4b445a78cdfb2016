"""Vacuum: remove what a session or a store no longer needs, and report it.

A session's vacuum (``Session.vacuum``) runs in its writer, under the writer lock, so no
append, snapshot, rollover or clear of that writer races it. It removes, each a *kind*
of the :class:`VacuumReport` (docs/FORMAT.md, section 7.5):

- ``snapshots``: snapshots no state load would use (of a log before a clear, past the
  end of the log, at a position the log no longer holds) and usable ones beyond the
  newest ``SnapshotPolicy.keep``;
- ``log_leftovers``: segments before the log start and ``.tmp-`` files in ``log/``
  (an interrupted clear or segment create; the next rollover would unlink them too);
- ``torn_files``: ``log/*.torn`` files (torn tails a writer set aside on open) older than
  ``torn_grace`` (7 days by default);
- ``temp_files`` and ``trash_folders``: ``.tmp-`` names in the session folder, ``state/``,
  ``checkpoints/``, ``blobs/`` and ``vectors/``, and ``.trash-`` folders in ``vectors/``,
  older than ``grace`` (an hour by default);
- ``vector_files``: files of a vector collection that no state of its manifest names (an
  interrupted seal or merge left them) and merged shards retired longer than the copy
  grace period (section 15.8);
- ``orphaned_blobs``: the attachments ``Session.gc`` removes.

``queue_records`` and ``input_records`` live inside the log: the records of done work
(completed items, purged dead letters, pruned consumed inputs) in sealed segments are
replaced by ``fsstore.reclaimed`` markers, their files rewritten by compaction's
crash-safe path (``reclaim.py``; FORMAT.md 17.2). It runs first, since it writes a
snapshot at the head and removes the older ones (counted as ``snapshots``). The count
is of records, the bytes are how much the files rewritten shrank.
``message_tombstones`` are the messages deleted at least ``message_grace`` seconds
before the vacuum (0 by default: every message deleted before it) and live at no
checkpoint: the same rewrite replaces their add and edit records by redacted records
(``reclaim_messages.py``), which keep only what the usage fold and the message index
read; the delete (the tombstone) stays, so the id is never reused. The count is of
messages, the bytes are the log's, as for queue records.

A store's vacuum (``Store.vacuum``) vacuums each session in turn, opening it as its
writer (a session another writer holds, or an owner leases, is skipped and named in
``skipped``), then the store's own leftovers: ``sessions/.trash-*`` and workspace temp
files (``Store.remove_leftovers``), and ``.tmp-`` names in ``sessions/`` and the store
root older than ``grace``.

Everything is planned first, then removed one name at a time (``unlink`` or ``rmtree``),
and each folder touched is fsynced: a crash leaves some of the plan removed and the rest
in place, each of which readers ignore or a later vacuum removes. A dry run returns the
plan as the report and removes nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from . import layout, vectors
from .blobs import DEFAULT_GRACE_SECONDS, GcReport
from .defaults import DEFAULT_TORN_GRACE_SECONDS
from .errors import (
    CorruptionError,
    Finding,
    FormatVersionError,
    FsStoreError,
    InvalidSetting,
    SessionLocked,
    SessionNotFound,
)
from .fsio import FileIO
from .reclaim import RECLAIM_KINDS, Reclaimed, ReclaimTarget, reclaim_records
from .vectors.collection_file import read_manifest

if TYPE_CHECKING:
    from .session import Session

__all__ = [
    "DEFAULT_GRACE_SECONDS", "DEFAULT_TORN_GRACE_SECONDS", "KINDS", "LOG_RECORD_KINDS",
    "Removed", "SessionVacuum", "VacuumReport", "reclaim_log_records", "tree_bytes",
    "vacuum_session", "vacuum_store",
]

#: What a vacuum reclaims by rewriting the log (``message_tombstones``: deleted messages
#: whose content it redacted).
LOG_RECORD_KINDS = ("queue_records", "input_records", "message_tombstones")

#: Every kind a report holds, in the order a vacuum works through them.
KINDS = ("log_leftovers", "torn_files", "snapshots", "temp_files", "trash_folders",
         "vector_files", "orphaned_blobs", *LOG_RECORD_KINDS, "dropped_history")


@dataclass(frozen=True)
class Removed:
    """What a vacuum removed of one kind (or, in a dry run, would remove): how many
    files or folders, their bytes (a folder's: the files in it), and their paths (none
    for blobs, which the gc counts). For log records: how many were reclaimed, and how
    many bytes the log files shrank by."""

    count: int = 0
    bytes: int = 0
    paths: tuple[str, ...] = ()

    def plus(self, other: Removed) -> Removed:
        return Removed(self.count + other.count, self.bytes + other.bytes,
                       self.paths + other.paths)


def _no_removals() -> dict[str, Removed]:
    return {kind: Removed() for kind in KINDS}


@dataclass(frozen=True)
class VacuumReport:
    """What a vacuum removed (or, with ``dry_run``, would remove), by kind.

    A session's report has ``session_id``; a store's has ``session_id`` None, its own
    leftovers and every session's removals added up in ``removed``, each session's own
    report in ``sessions`` and the sessions it could not vacuum, with why, in
    ``skipped``. ``findings`` are the problems met on the way (a damaged snapshot left
    in place, a gc stopped by damage): a vacuum never removes what it cannot read, and
    goes on with the next kind. :meth:`to_dict` is the form for metrics and ``--json``.
    """

    dry_run: bool
    removed: Mapping[str, Removed] = field(default_factory=_no_removals)
    seconds: float = 0.0
    findings: tuple[Finding, ...] = ()
    session_id: str | None = None
    sessions: Mapping[str, VacuumReport] = field(default_factory=dict)
    skipped: Mapping[str, str] = field(default_factory=dict)

    @property
    def count(self) -> int:
        """Files and folders removed, and log records reclaimed, of every kind."""
        return sum(removed.count for removed in self.removed.values())

    @property
    def messages_redacted(self) -> int:
        """Messages whose content this vacuum removed from the log (0 in a dry run)."""
        return 0 if self.dry_run else self.removed["message_tombstones"].count

    @property
    def bytes(self) -> int:
        """Bytes removed, of every kind."""
        return sum(removed.bytes for removed in self.removed.values())

    def paths(self) -> list[str]:
        """Every path removed, kind by kind (blobs are counted, not named)."""
        return [path for kind in KINDS for path in self.removed[kind].paths]

    def to_dict(self, *, paths: bool = False) -> dict[str, Any]:
        """Plain JSON-ready numbers: ``{"dry_run", "seconds", "count", "bytes",
        "removed": {KIND: {"count", "bytes"}}, "findings": [...], "skipped": {...},
        "sessions": {ID: the session's dict}}`` (``session_id`` for a session's), with
        each kind's ``paths`` too when ``paths`` is true."""
        removed: dict[str, dict[str, Any]] = {}
        for kind in KINDS:
            item = self.removed[kind]
            removed[kind] = {"count": item.count, "bytes": item.bytes}
            if paths:
                removed[kind]["paths"] = list(item.paths)
        data: dict[str, Any] = {
            "dry_run": self.dry_run, "seconds": self.seconds, "count": self.count,
            "bytes": self.bytes, "removed": removed,
            "findings": [f._asdict() for f in self.findings]}
        if self.session_id is not None:
            data["session_id"] = self.session_id
        else:
            data["sessions"] = {session_id: part.to_dict(paths=paths)
                                for session_id, part in self.sessions.items()}
            data["skipped"] = dict(self.skipped)
        return data


def _added(parts: Iterable[Mapping[str, Removed]]) -> dict[str, Removed]:
    total = _no_removals()
    for part in parts:
        for kind, removed in part.items():
            total[kind] = total[kind].plus(removed)
    return total


# --- planning and removing ----------------------------------------------------------------


class _Item(NamedTuple):
    kind: str
    path: str
    size: int
    folder: bool


def _older(path: str, now: float, grace: float) -> bool:
    """Whether ``path`` last changed ``grace`` seconds ago or more (False when gone)."""
    try:
        return now - os.lstat(path).st_mtime >= grace
    except FileNotFoundError:
        return False


def tree_bytes(path: str) -> int:
    """The bytes of a file, or of the files in a folder (links not followed); 0 when
    it is gone."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return 0
    if not os.path.isdir(path) or os.path.islink(path):
        return info.st_size
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except FileNotFoundError:
                continue
    return total


def _item(kind: str, path: str) -> _Item:
    folder = os.path.isdir(path) and not os.path.islink(path)
    return _Item(kind, path, tree_bytes(path), folder)


def _names(io: FileIO, folder: str) -> list[str]:
    try:
        return sorted(io.listdir(folder))
    except FileNotFoundError:
        return []


def _remove(io: FileIO, items: list[_Item], findings: list[Finding]) -> list[_Item]:
    """Remove the planned names, then fsync each folder touched; return those removed.
    A name already gone (a concurrent delete finished it) is not counted; one that
    cannot be removed is a problem finding, and the rest go on."""
    done: list[_Item] = []
    folders: list[str] = []
    for item in items:
        try:
            if item.folder:
                io.rmtree(item.path)
            else:
                io.unlink(item.path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            findings.append(Finding("problem", item.path, None,
                                    f"could not be removed ({exc}); it stays"))
            continue
        done.append(item)
        parent = os.path.dirname(item.path)
        if parent not in folders:
            folders.append(parent)
    for folder in folders:
        try:
            io.fsync_dir(folder)
        except OSError as exc:
            findings.append(Finding("problem", folder, None, f"fsync failed ({exc}); the "
                                    "removals in it may come back after a power loss"))
    return done


def _tally(items: Iterable[_Item]) -> dict[str, Removed]:
    totals = _no_removals()
    for item in items:
        totals[item.kind] = totals[item.kind].plus(Removed(1, item.size, (item.path,)))
    return totals


def _problem(exc: BaseException, path: str, what: str) -> Finding:
    return Finding("problem", getattr(exc, "path", None) or path, getattr(exc, "offset", None),
                   f"{what}: {exc}")


# --- a session ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionVacuum(ReclaimTarget):
    """What a session's writer hands its vacuum (``Session.vacuum`` builds it, under the
    writer lock): what a reclaim of log records needs (``reclaim.ReclaimTarget``: the
    log and snapshots as the writer sees them, ...), and the session's id, how many
    snapshots to keep, the collections it has open (their own writers tidy their
    folders) and its blob gc."""

    session_id: str
    keep: int
    open_collections: frozenset[str]
    gc: Callable[[float, bool], GcReport]
    #: A chained session's: what writes bridges to session.json (chain_bridges.py).
    bridge: Callable[[list[tuple[bytes, bytes]]], None] | None = None


def vacuum_session(target: SessionVacuum, *, dry_run: bool = False,
                   grace: float = DEFAULT_GRACE_SECONDS,
                   torn_grace: float = DEFAULT_TORN_GRACE_SECONDS,
                   message_grace: float = 0.0) -> VacuumReport:
    """Vacuum one session (see the module docstring); the caller holds its writer lock."""
    started = time.monotonic()
    _check_grace(grace, "grace")
    _check_grace(torn_grace, "torn_grace")
    _check_grace(message_grace, "message_grace")
    now = time.time()
    findings: list[Finding] = []
    reclaimed = reclaim_log_records(target, dry_run, message_grace, now)
    findings += reclaimed.findings
    gone = [_Item("snapshots", path, size, False) for path, size in reclaimed.snapshots]
    plan: list[_Item] = []
    for step in (_log_leftovers, _torn_files, _snapshots, _temp_files, _vector_files):
        try:
            plan += step(target, now, grace, torn_grace, findings)
        except (FsStoreError, OSError) as exc:
            findings.append(_problem(exc, target.path, f"{step.__name__[1:]} left alone"))
    if dry_run:  # a real reclaim removed them before the snapshots were listed
        plan = [item for item in plan if item.path not in {i.path for i in gone}]
    removed = _tally(gone + (plan if dry_run else _remove(target.io, plan, findings)))
    try:
        gc = target.gc(grace, dry_run)
        removed["orphaned_blobs"] = Removed(gc.reclaimed, gc.reclaimed_bytes)
        findings.extend(f for f in gc.damaged if f.level == "problem")
    except (FsStoreError, OSError) as exc:
        findings.append(_problem(exc, layout.blobs_dir(target.path),
                                 "attachments left alone (gc stopped)"))
    for kind in RECLAIM_KINDS.values():
        removed[kind] = Removed(reclaimed.records[kind], reclaimed.bytes[kind])
    return VacuumReport(dry_run, removed, time.monotonic() - started, tuple(findings),
                        target.session_id)


def reclaim_log_records(target: SessionVacuum, dry_run: bool, message_grace: float = 0.0,
                        now: float | None = None) -> Reclaimed:
    """What only a rewrite of the log reclaims: the queue and input records of done
    work, and the content of messages deleted at least ``message_grace`` seconds
    before ``now`` (``reclaim.py``)."""
    return reclaim_records(target, dry_run=dry_run, message_grace=message_grace, now=now,
                           bridge=target.bridge)


def _check_grace(value: float, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise InvalidSetting(f"{name} must be a number of seconds >= 0, not {value!r}")


def _log_leftovers(target: SessionVacuum, now: float, grace: float, torn_grace: float,
                   findings: list[Finding]) -> list[_Item]:
    """Segments before the log start and temp files in ``log/``. Under the writer lock
    no rollover or clear is in progress, so these are leftovers whatever their age."""
    log = target.log
    _live, log_start = log.live_segments()
    names = _names(target.io, log.path)
    items = [_item("log_leftovers", log.segment_path(first))
             for first in layout.segment_seqs(names) if first < log_start]
    items += [_item("log_leftovers", os.path.join(log.path, name)) for name in names
              if name.startswith(layout.TEMP_PREFIX)]
    return items


def _torn_files(target: SessionVacuum, now: float, grace: float, torn_grace: float,
                findings: list[Finding]) -> list[_Item]:
    """``log/*.torn`` files older than ``torn_grace``: bytes a writer set aside when it
    cut a torn tail off (section 7.1), kept that long for a look."""
    folder = target.log.path
    return [_item("torn_files", os.path.join(folder, name)) for name in _names(target.io, folder)
            if name.endswith(layout.TORN_SUFFIX)
            and _older(os.path.join(folder, name), now, torn_grace)]


def _snapshots(target: SessionVacuum, now: float, grace: float, torn_grace: float,
               findings: list[Finding]) -> list[_Item]:
    """Snapshots a state load would skip (11.4), then usable ones beyond the newest
    ``keep``. A damaged snapshot or one of a newer format stays, reported."""
    _live, log_start = target.log.live_segments()
    doomed: list[str] = []
    usable: list[str] = []
    for seq in target.snapshots.seqs():
        path = target.snapshots.file_path(seq)
        try:
            header = target.snapshots.read(path, with_body=False).header
        except FileNotFoundError:
            continue
        except (CorruptionError, FormatVersionError) as exc:
            findings.append(_problem(exc, path, "snapshot left in place"))
            continue
        if (header.log_start != log_start or header.seq > target.head
                or not target.log.position_holds(header.position, header.seq)):
            doomed.append(path)
        else:
            usable.append(path)
    doomed += usable[:max(len(usable) - target.keep, 0)]
    return [_item("snapshots", path) for path in sorted(doomed)]


def _temp_files(target: SessionVacuum, now: float, grace: float, torn_grace: float,
                findings: list[Finding]) -> list[_Item]:
    """``.tmp-`` names (and ``.trash-`` folders in ``vectors/``) older than ``grace``:
    a write or a collection create may hold a young one without the writer lock."""
    items = []
    session = target.path
    folders = [session, layout.state_dir(session), layout.checkpoints_dir(session),
               layout.blobs_dir(session), layout.vectors_dir(session)]
    for folder in folders:
        for name in _names(target.io, folder):
            path = os.path.join(folder, name)
            if name.startswith(layout.TEMP_PREFIX):
                kind = "temp_files"
            elif name.startswith(layout.TRASH_PREFIX) and folder == folders[-1]:
                kind = "trash_folders"
            else:
                continue
            if _older(path, now, grace):
                items.append(_item(kind, path))
    return items


def _vector_files(target: SessionVacuum, now: float, grace: float, torn_grace: float,
                  findings: list[Finding]) -> list[_Item]:
    """Per collection: files no state of its manifest names (what its writer removes
    when it opens; skipped for a collection this session has open, whose seal may be
    writing one), and retired files past the copy grace period (section 15.8)."""
    items = []
    for name in vectors.collection_names(target.io, target.path):
        folder = os.path.join(layout.vectors_dir(target.path), name)
        manifest_path = os.path.join(folder, layout.COLLECTION_MANIFEST)
        try:
            target.io.check_folders(folder)
            decoded, _raw = read_manifest(target.io, manifest_path)
        except FileNotFoundError:
            continue  # a folder without a manifest is not a collection: verify says so
        except (FsStoreError, OSError, ValueError) as exc:
            findings.append(_problem(exc, manifest_path, "collection left alone"))
            continue
        named = decoded.named_files()
        copy_grace = vectors.tuning.COPY_GRACE_SECONDS
        expired = {file for file, since in decoded.retired
                   if now - since >= copy_grace and file not in named}
        keep = named | decoded.retired_names()
        for file in _names(target.io, folder):
            if file in expired:
                pass
            elif name in target.open_collections or file in keep or not (
                    layout.is_shard_file(file) or file.startswith(layout.TEMP_PREFIX)):
                continue
            path = os.path.join(folder, file)
            if os.path.isfile(path) and not os.path.islink(path):
                items.append(_item("vector_files", path))
    return items


# --- a store --------------------------------------------------------------------------------


class _StoreLike(Protocol):
    path: str
    io: FileIO

    def session_ids(self) -> list[str]: ...
    def has_session(self, session_id: str) -> bool: ...
    def open_session(self, session_id: str, *, lock_timeout: float | None = None
                     ) -> Session: ...
    def remove_leftovers(self) -> list[str]: ...


def vacuum_store(store: _StoreLike, session_ids: Iterable[str] | None = None, *,
                 dry_run: bool = False, grace: float = DEFAULT_GRACE_SECONDS,
                 torn_grace: float = DEFAULT_TORN_GRACE_SECONDS, lock_timeout: float = 0.0,
                 on_session: Callable[[str], object] | None = None,
                 message_grace: float = 0.0) -> VacuumReport:
    """Vacuum every session of ``store`` (or those named), then the store's own
    leftovers (see the module docstring). ``on_session(id)`` is called after each
    session (a progress bar's step)."""
    started = time.monotonic()
    _check_grace(grace, "grace")
    _check_grace(torn_grace, "torn_grace")
    _check_grace(message_grace, "message_grace")
    explicit = session_ids is not None
    ids = list(dict.fromkeys(session_ids)) if session_ids is not None else store.session_ids()
    if explicit:
        for session_id in ids:  # refused before anything is removed
            if not store.has_session(session_id):
                raise SessionNotFound(f"no session {session_id!r} in the store {store.path}")
    parts: dict[str, VacuumReport] = {}
    skipped: dict[str, str] = {}
    findings: list[Finding] = []
    for session_id in ids:
        try:
            with store.open_session(session_id, lock_timeout=lock_timeout) as session:
                part = session.vacuum(dry_run=dry_run, grace=grace, torn_grace=torn_grace,
                                      message_grace=message_grace)
            parts[session_id] = part
            findings.extend(part.findings)
        except SessionNotFound:
            if explicit:
                skipped[session_id] = "deleted meanwhile"
        except SessionLocked as exc:
            skipped[session_id] = str(exc)
        except (FsStoreError, OSError) as exc:
            skipped[session_id] = str(exc)
            findings.append(_problem(exc, os.path.join(layout.sessions_dir(store.path),
                                                       session_id), "session not vacuumed"))
        if on_session is not None:
            on_session(session_id)
    own = _store_leftovers(store, dry_run, grace, findings)
    removed = _added([own, *(part.removed for part in parts.values())])
    return VacuumReport(dry_run, removed, time.monotonic() - started, tuple(findings),
                        None, parts, skipped)


def _store_leftovers(store: _StoreLike, dry_run: bool, grace: float,
                     findings: list[Finding]) -> dict[str, Removed]:
    """``sessions/.trash-*`` and ``workspaces/.tmp-*`` (what ``remove_leftovers``
    removes, at any age), and ``.tmp-`` names in ``sessions/`` (a session being created
    or forked) and the root (a store manifest being written) older than ``grace``."""
    now = time.time()
    sessions = layout.sessions_dir(store.path)
    workspaces = layout.workspaces_dir(store.path)
    leftovers = [_item("trash_folders", os.path.join(sessions, name))
                 for name in _names(store.io, sessions) if name.startswith(layout.TRASH_PREFIX)]
    if os.path.isdir(workspaces):
        leftovers += [_item("temp_files", os.path.join(workspaces, name))
                      for name in _names(store.io, workspaces)
                      if name.startswith(layout.TEMP_PREFIX)]
    young_safe = []
    for folder in (sessions, store.path):
        for name in _names(store.io, folder):
            path = os.path.join(folder, name)
            if name.startswith(layout.TEMP_PREFIX) and _older(path, now, grace):
                young_safe.append(_item("temp_files", path))
    if dry_run:
        return _tally(leftovers + young_safe)
    try:
        gone = set(store.remove_leftovers())
    except (FsStoreError, OSError) as exc:
        findings.append(_problem(exc, store.path, "leftovers not removed"))
        gone = set()
    done = [item for item in leftovers if item.path in gone]
    done += _remove(store.io, young_safe, findings)
    return _tally(done)
