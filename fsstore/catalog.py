"""The store catalog (``catalog`` and ``catalog.log`` in the store's root; docs/FORMAT.md,
section 24): what a listing needs of each session, kept so that a page of a store of
100,000 sessions reads a few columns of two files and a few stamps, not 100,000
manifests.

It is a cache, never the source of truth. ``catalog`` is a snapshot: one entry per
session (its manifest fields and what ``SessionReader.info`` read of its log), with the
stamp of ``sessions/`` and the offset of ``catalog.log`` it covers. ``catalog.log`` is a
journal: every writer of this version that creates, deletes or closes a session, or
rewrites its ``session.json``, appends the session's id to it (:func:`note`), after the
change. A reader opens the snapshot (laid out for pages, fsstore/catalog_snapshot.py:
entries are decoded only for the rows a page shows), reads again each session named in
the journal after that offset, and lists ``sessions/`` again when its stamp moved (a
session made or removed by a writer that does not journal: an older fsstore, a copy by
hand). Each entry also keeps the stamps of its manifest, log folder and newest segment:
an entry shown in a page is checked against them and read again when they moved (a
writer still appending), so a row shown is as fresh as ``info()``.

Why the journal holds ids, not entries: an entry is as large as the session's metadata
(up to 1 MiB), and a record must stay under ``PIPE_BUF`` to be appended whole without a
lock; reading the manifest again also means the record's order among writers never
matters. Why each record comes after its change: a reader that saw the record reads the
change; one that did not will see the record at its next listing.

Damage never gives a wrong answer: a snapshot section or entry that does not check
when read (the listing then starts again from a rebuild), a journal record that does
not check, a journal replaced or cut below the offset the snapshot covers, each makes
the reader rebuild the catalog from the session folders.
"""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import msgspec

from . import layout
from .catalog_snapshot import Entry, Row, Snapshot, SnapshotDamaged, encode, row_of
from .errors import FsStoreError
from .fsio import FileIO

__all__ = ["Entry", "SnapshotDamaged", "View"]

# session_metadata.py journals through this module, and session_reader.py imports it.
if TYPE_CHECKING:
    from .session_reader import SessionInfo

#: A stamp younger than this (ns) when it was taken may not show a change made in the
#: same tick of the filesystem's clock ("racy git"): such an entry is always read again.
SETTLE_NS = 2_000_000_000
#: Sessions read again (journal records, stale rows) before a lister rewrites the
#: snapshot, so that the next lister need not read them again.
COMPACT_AFTER = 16
#: A journal larger than this is replaced by the next rebuild, which a lister starts.
JOURNAL_LIMIT = 4 << 20


def snapshot_path(root: str) -> str:
    return os.path.join(root, layout.CATALOG)


def journal_path(root: str) -> str:
    return os.path.join(root, layout.CATALOG_JOURNAL)


def record(session_id: str) -> bytes:
    """A journal record: the id and the CRC-32 of its bytes, in hex, and a line feed."""
    raw = session_id.encode()
    return b"%s %08x\n" % (raw, zlib.crc32(raw))


def note(io: FileIO, session_path: str) -> None:
    """Journal that the session at ``session_path`` changed (made, deleted, closed, its
    manifest rewritten): called after the change. Nothing when the store has no catalog
    yet (its first listing builds one from the folders) or the folder is no store's
    session. Never raises: when the record cannot be appended the snapshot is removed,
    so the next listing rebuilds rather than answer from a catalog that missed it."""
    sessions = os.path.dirname(session_path)
    if os.path.basename(sessions) != layout.SESSIONS_DIR:
        return
    root = os.path.dirname(sessions)
    try:
        io.append(journal_path(root), record(os.path.basename(session_path)))
    except (OSError, FsStoreError):
        try:
            io.unlink_if_there(snapshot_path(root))
        except (OSError, FsStoreError):
            pass  # nothing more can be done: the stamps of shown rows still hold

def read_snapshot(io: FileIO, root: str) -> Snapshot | None:
    """The snapshot, opened (close it); None when it is missing or its magic, version
    or table does not check. Its sections are checked as they are read."""
    return Snapshot.open(io, snapshot_path(root))


def write_snapshot(io: FileIO, root: str, rows: Iterable[Row],
                   sessions_stamp: tuple[int, int, int] | None,
                   journal: tuple[int, int]) -> bytes:
    """Write the snapshot of ``rows`` by temp file and rename, and return its bytes.
    A cache: a store that cannot be written (read-only, full) is listed without it."""
    data = encode(rows, sessions_stamp, journal)
    try:
        io.atomic_write(snapshot_path(root), data)
    except (OSError, FsStoreError):
        pass
    return data


def _settled(stamp: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
    if stamp is not None and time.time_ns() - stamp[0] < SETTLE_NS:
        return None  # racy: a session made in the same tick would not move it
    return stamp


def read_journal(io: FileIO, root: str, offset: int) -> tuple[list[str], int] | None:
    """The ids journaled from ``offset`` on, and the offset after the last whole record;
    None when a record does not check (damage: rebuild). A last record without its line
    feed is a torn append (a crash): it is left for the next read, as if not there."""
    try:
        fd = io.open(journal_path(root), os.O_RDONLY)
    except (OSError, FsStoreError):
        return None
    try:
        data = io.pread(fd, io.size(fd) - offset, offset) if io.size(fd) > offset else b""
    finally:
        io.close(fd)
    end = data.rfind(b"\n") + 1
    ids = []
    for line in data[:end].split(b"\n")[:-1]:
        raw, _, crc = line.rpartition(b" ")
        if len(crc) != 8 or crc != b"%08x" % zlib.crc32(raw):
            return None
        try:
            ids.append(layout.check_session_id(raw.decode()))
        except (UnicodeDecodeError, ValueError):
            return None
    return ids, offset + end

class View:
    """What a listing reads: the snapshot's rows, less those ``hidden`` (read again
    since, or gone), and the entries read again since (``extra``, by id: sessions
    changed, made, or shown with stamps that moved)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.hidden: set[int] = set()
        self.extra: dict[str, Entry] = {}

    def replace(self, session_id: str, entry: Entry | None, row: int | None = None) -> None:
        """Use ``entry`` (None: gone) for ``session_id`` in place of its snapshot row
        (``row`` when known, else looked up)."""
        if row is None:
            row = self.snapshot.find(session_id)
        if row is not None:
            self.hidden.add(row)
        if entry is None:
            self.extra.pop(session_id, None)
        else:
            self.extra[session_id] = entry


class Catalog:
    """A store's catalog: :meth:`view` gives the snapshot and what changed since, else
    a rebuild; ``read(session_id)`` is ``Store``'s reading of one session (None when it
    is not there; a damaged session's ``SessionInfo`` with ``damaged`` set)."""

    def __init__(self, io: FileIO, root: str,
                 read: Callable[[str], SessionInfo | None]) -> None:
        self.io = io
        self.root = root
        self.read = read
        self.sessions = layout.sessions_dir(root)
        self.refreshed = 0  # entries read again since the snapshot was loaded
        self._view: View | None = None
        #: The stamp of sessions/ and the journal offset the view covers (None: it
        #: is not to be written, as for a store that cannot be).
        self._covers: tuple[tuple[int, int, int] | None, tuple[int, int]] | None = None

    def close(self) -> None:
        """Close the snapshot file the view reads."""
        if self._view is not None:
            self._view.snapshot.close()

    def view(self) -> View:
        """The snapshot, the journal after it, and ``sessions/`` listed again when its
        stamp moved; a rebuild when the snapshot or journal does not hold. Rewrites
        the snapshot when it had to read much (a listing of ``sessions/``, a long
        journal). Raises SnapshotDamaged when a section it reads does not check (the
        caller rebuilds)."""
        snapshot = read_snapshot(self.io, self.root)
        if snapshot is None:
            return self.rebuild()
        view = self._view = View(snapshot)
        journal = self.io.stamp(journal_path(self.root))
        if (journal is None or journal[2] != snapshot.journal[0]
                or journal[1] < snapshot.journal[1] or journal[1] > JOURNAL_LIMIT):
            return self.rebuild()
        read = read_journal(self.io, self.root, snapshot.journal[1])
        if read is None:
            return self.rebuild()
        ids, offset = read
        for session_id in dict.fromkeys(ids):
            view.replace(session_id, self.make(session_id))
            self.refreshed += 1
        # Taken before the listing: a session made after it moves the stamp again.
        stamp = self.io.stamp(self.sessions)
        listed = stamp is None or stamp != snapshot.sessions_stamp
        if listed:
            names = set(self._names())
            for row, session_id in enumerate(snapshot.ids()):
                if session_id not in names:
                    view.replace(session_id, None, row)
                names.discard(session_id)
            for session_id in names - view.extra.keys():
                view.replace(session_id, self.make(session_id), None)
                self.refreshed += 1
        self._covers = (stamp if listed else snapshot.sessions_stamp, (journal[2], offset))
        if listed or self.refreshed >= COMPACT_AFTER:
            self.save()
        return view

    def rebuild(self) -> View:
        """Every entry read from the session folders, and the snapshot written. A
        journal past its limit (or missing, or damaged) is first replaced by an empty
        one: a record appended to the old one after that is lost, but its change was
        made before, so the reads below see it."""
        self.close()
        path = journal_path(self.root)
        journal = self.io.stamp(path)
        try:
            if journal is None or journal[1] > 0:
                temp = path + ".new"
                self.io.unlink_if_there(temp)
                self.io.append(temp, b"", create=True)
                self.io.rename(temp, path)
            journal = self.io.stamp(path)
        except (OSError, FsStoreError):
            journal = None  # a read-only store: listed without a catalog
        stamp = self.io.stamp(self.sessions)
        rows = []
        for session_id in self._names():
            entry = self.make(session_id)
            if entry is not None:
                rows.append(row_of(entry))
        if journal is None:
            self._covers = None
            data = encode(rows, None, (0, 0))
        else:
            self._covers = (_settled(stamp), (journal[2], journal[1]))
            data = write_snapshot(self.io, self.root, rows, *self._covers)
        snapshot = Snapshot.parse(data, snapshot_path(self.root))
        assert snapshot is not None  # made just now
        self._view = View(snapshot)
        self.refreshed = 0
        return self._view

    def flush(self) -> None:
        """Rewrite the snapshot when rows shown were read again often enough since it
        was loaded (or written) that the next listing would read them again too."""
        if self.refreshed >= COMPACT_AFTER:
            self.save()

    def save(self) -> None:
        """Write the view as the new snapshot: the old one's rows copied as they are
        (no entry decoded), those read again encoded."""
        if self._view is None or self._covers is None:
            return
        view = self._view
        rows = [*view.snapshot.rows(view.hidden), *map(row_of, view.extra.values())]
        write_snapshot(self.io, self.root, rows, _settled(self._covers[0]), self._covers[1])
        self.refreshed = 0

    def _names(self) -> list[str]:
        return session_names(self.io, self.sessions)

    def _reread(self, entries: dict[str, Entry], session_id: str) -> Entry | None:
        entry = self.make(session_id)
        self.refreshed += 1
        if entry is None:
            entries.pop(session_id, None)
        else:
            entries[session_id] = entry
        return entry

    def make(self, session_id: str) -> Entry | None:
        """The entry of a session read now (None when it is not there). Stamps first:
        a change made while it is read moves them, and the entry is read again."""
        stamp = self._stamp(session_id)
        info = self.read(session_id)
        if info is None:
            return None
        if info.damaged is not None or stamp is None or any(
                time.time_ns() - value < SETTLE_NS for value in (stamp[0][0], stamp[1],
                                                                 stamp[3][0])):
            stamp = None
        return entry_of(info, () if stamp is None else stamp)

    def _stamp(self, session_id: str) -> tuple[Any, ...] | None:
        folder = layout.session_dir(self.root, session_id)
        manifest = self.io.stamp(layout.session_manifest_path(folder))
        log = layout.log_dir(folder)
        log_stamp = self.io.stamp(log)
        if manifest is None or log_stamp is None:
            return None
        try:
            segments = [n for n in self.io.listdir(log) if layout.is_segment_name(n)]
        except (OSError, FsStoreError):
            return None
        if not segments:
            return None
        newest = max(segments)
        segment = self.io.stamp(os.path.join(log, newest))
        if segment is None:
            return None
        return (manifest, log_stamp[0], newest, segment[:2])

    def _holds(self, entry: Entry) -> bool:
        """Whether the session's manifest, log folder and newest segment are as the
        entry stamped them (an unchanged log folder has no newer segment)."""
        manifest, log_mtime, newest, segment = entry.stamp
        # Plain joins (the id was checked when the entry was made): this runs per row.
        folder = os.path.join(self.sessions, entry.id)
        now = self.io.stamp(os.path.join(folder, layout.SESSION_MANIFEST))
        if now is None or list(now) != list(manifest):
            return False
        log = os.path.join(folder, layout.LOG_DIR)
        now = self.io.stamp(log)
        if now is None or now[0] != log_mtime:
            return False
        now = self.io.stamp(os.path.join(log, newest))
        return now is not None and list(now[:2]) == list(segment)

    def fresh(self, entry: Entry, row: int | None) -> Entry | None:
        """``entry`` (of snapshot row ``row``; None: one read again) if its stamps
        still hold, else the session read again (None: it is gone). What a row shown
        in a page costs: three ``lstat``s."""
        if entry.stamp and self._holds(entry):
            return entry
        self.refreshed += 1
        made = self.make(entry.id)
        if self._view is not None:
            self._view.replace(entry.id, made, row)
        return made


def entry_of(info: SessionInfo, stamp: tuple[Any, ...]) -> Entry:
    parent = info.parent
    spawned = info.spawned_by
    return Entry(
        id=info.id, created=info.created, updated=info.updated,
        event_count=info.event_count, head=info.head, history_start=info.history_start,
        title=info.title, tags=list(info.tags),
        metadata=msgspec.Raw(msgspec.msgpack.encode(info.metadata)),
        parent=None if parent is None else (parent.parent, parent.seq, parent.checkpoint),
        spawned_by=None if spawned is None else (spawned.parent, spawned.seq, spawned.turn),
        damaged=info.damaged, stamp=stamp)


def metadata_of(entry: Entry) -> dict[str, Any]:
    value = msgspec.msgpack.decode(entry.metadata)
    return value if isinstance(value, dict) else {}


def info_of(entry: Entry, root: str) -> SessionInfo:
    """The ``SessionInfo`` an entry stands for (what ``Store.list_sessions`` gives)."""
    from .session_reader import ForkOrigin, SessionInfo, SpawnOrigin

    return SessionInfo(
        id=entry.id, path=layout.session_dir(root, entry.id), created=entry.created,
        updated=entry.updated, event_count=entry.event_count, head=entry.head,
        title=entry.title, tags=list(entry.tags), metadata=metadata_of(entry),
        parent=None if entry.parent is None else ForkOrigin(*entry.parent),
        damaged=entry.damaged,
        spawned_by=None if entry.spawned_by is None else SpawnOrigin(*entry.spawned_by),
        history_start=entry.history_start)


def session_names(io: FileIO, sessions: str) -> list[str]:
    """The names in the ``sessions/`` folder that are session ids (scratch names and
    foreign files are not sessions), unsorted; none when the folder is not there. Unlike
    ``Store.session_ids``, no manifest is looked at: one listing of one folder."""
    try:
        names = io.listdir(sessions)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        try:
            found.append(layout.check_session_id(name))
        except ValueError:
            continue
    return found
