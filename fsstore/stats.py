"""Counts and sizes of a session and of a store, for a host to chart: how many records,
turns, messages, segments, snapshots, checkpoints, attachments, vectors, queue items and
turn inputs there are, who holds the lease, when the history starts and ends, and the
bytes each kind of file takes (``fsstore stats``, ``fsstore du``).

What is read of each session, so that the cost of a store's count follows the number
of its sessions and segments, never the length of their histories:

- each folder of a session is listed once, with the size of each file (``FileIO.entries``);
- each segment's first 64 bytes (its header: a major version 2 is a compacted segment),
  the end of the newest segment (``LogReader.tail``: the head, the log start, the newest
  record's time and turn) and the first frame of the oldest live segment (its time);
- the state at the head, as every state read loads it (docs/FORMAT.md, section 11.4):
  the newest snapshot's body, and the log after that snapshot only. It gives the state's
  keys, the queue and the inputs by status and the live messages (the usage fold,
  section 20.4);
- the lease file, and each vector collection (opened as a reader opens it: its
  manifest, its shards and the write-ahead log since its last seal).

A store's count (``Store.stats``) opens each file of a session once and reads a small
one whole at its first read (``_CountIO``), takes the segment names and headers from
its own listing and reads, and walks a log of one plain segment and no snapshot once
for its end, its first record's time and its state (``_one_pass``). What it reports is
what ``session_stats`` of each session reports (a test compares them on sessions of
every shape).

No history is read from its start: a session's log is only scanned when its records are
counted by kind (``events_by_kind=True``, ``fsstore stats SESSION --kinds``), which is
offered for one session, never for a store. Every result is a frozen msgspec Struct with
``to_dict()``, plain JSON a host can turn into metrics.
"""

from __future__ import annotations

import _io
import errno
import math
import os
import re
import struct
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import msgspec

from . import chain_session, identity, layout
from . import state as state_module
from .chain import ChainKey
from .errors import CollectionNotFound, CorruptionError, FsStoreError, SessionNotFound
from .fsio import FileIO, FolderEntry
from .lease import NO_LEASE, read_lease
from .log import LogReader, LogTail, SegmentEnd
from .log_format import Base, SegmentScan, frame_end
from .segment_header import SEGMENT_HEADER_SIZE, SegmentHeader
from .session_metadata import ManifestFile
from .snapshot import SnapshotDir
from .state import FOLDED_KINDS, StateImage
from .turns import NEUTRAL_KINDS, TURN_FINISHED
from .vectors import VectorCollectionReader
from .vectors.collection_chain import of_log
from .work import CLAIMED, CONSUMED, DEAD, PENDING, READY

QUEUE_STATUSES = (READY, CLAIMED, DEAD)
INPUT_STATUSES = (PENDING, CLAIMED, CONSUMED)

#: A segment header's major version (the u16 at byte 8): 2 is a compacted segment.
_MAJOR = struct.Struct("<H")
_COMPACTED_MAJOR = 2
_HEADER = 64  # a segment header's size
_FRAME_HEADER = struct.Struct("<IIQII")  # crc, length, first_seq, count, type: 24 bytes
_BLOB_NAME = re.compile(r"[0-9a-f]{64}(\.zst)?\Z")
_FOLDER_KINDS = {layout.LOG_DIR: "log", layout.STATE_DIR: "snapshots",
                 layout.CHECKPOINTS_DIR: "checkpoints", layout.BLOBS_DIR: "blobs",
                 layout.VECTORS_DIR: "vectors"}


class _Result(msgspec.Struct, frozen=True, kw_only=True):
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (dicts, lists, str, int, float, None), for ``json.dumps``."""
        found: dict[str, Any] = msgspec.to_builtins(self)
        return found


class ByteCounts(_Result, frozen=True, kw_only=True):
    """Bytes on disk by kind of file: the log's segments (``log``), the state snapshots
    (``snapshots``), checkpoints, attachments (``blobs``), vector collections
    (``vectors``), the message index (``index``) and the rest (``other``: manifests, the
    lock and lease files, leftovers of interrupted writes)."""

    log: int = 0
    snapshots: int = 0
    checkpoints: int = 0
    blobs: int = 0
    vectors: int = 0
    index: int = 0
    other: int = 0

    @property
    def total(self) -> int:
        return sum(getattr(self, kind) for kind in BYTE_KINDS)

    def largest_first(self) -> list[tuple[str, int]]:
        """``(kind, bytes)`` pairs, largest first (ties in ``BYTE_KINDS`` order)."""
        return sorted(((kind, getattr(self, kind)) for kind in BYTE_KINDS),
                      key=lambda pair: -pair[1])


#: The kinds of bytes ``fsstore du`` tells apart, in the order it prints them.
BYTE_KINDS: tuple[str, ...] = ByteCounts.__struct_fields__


class _Counts(_Result, frozen=True, kw_only=True):
    """The counts of a session that a store sums (``SessionStats``, ``StoreStats``)."""

    #: Records in the log since its start, the store's own (state, queue, input, lease,
    #: message, metadata, turn_finished) included: ``head - log_start + 1``.
    records: int
    #: The newest turn's number (0 before any). Turns are numbered from 1 and go up by
    #: one per finished turn unless the caller numbers them, so this is the number of
    #: turns begun; ``turn_count`` (with ``events_by_kind``) counts the turns that hold a
    #: record.
    turns: int
    #: Messages not deleted (the messages API; the usage fold, FORMAT.md section 20.4).
    messages: int
    #: Keys of the state at the head: what ``key_count()`` answers.
    state_keys: int
    #: Live segments (those from the log start on), those sealed (every one but the
    #: newest), and those compacted (segment major version 2), with all the bytes of
    #: ``log/``.
    segments: int
    sealed_segments: int
    compressed_segments: int
    log_bytes: int
    snapshots: int
    checkpoints: int
    blobs: int
    blob_bytes: int
    collections: int
    #: Live vector documents of all collections (each collection is opened: its manifest,
    #: its shards' headers and ids, and its write-ahead log since the last seal).
    vector_documents: int


class SessionStats(_Counts, frozen=True, kw_only=True):
    """What ``SessionReader.session_stats`` counts. Counts that need a scan of the log
    (``events_by_kind``, ``turn_count``) are None unless asked for."""

    id: str
    path: str
    title: str | None
    head: int
    log_start: int
    #: Queue items by status (``ready``, ``claimed``, ``dead``; completed items leave the
    #: queue) and turn inputs by status (``pending``, ``claimed``, ``consumed``).
    queue: dict[str, int]
    inputs: dict[str, int]
    #: Who holds the execution lease (its label, else ``pid@host``), None when it is
    #: free; ``lease_live``: held and not expired.
    lease_holder: str | None
    lease_live: bool
    lease_token: int
    lease_expires: float | None
    #: The time (seconds since the epoch) of the first record since the log start and
    #: of the last one; None for an empty log.
    oldest_event: float | None
    newest_event: float | None
    bytes: ByteCounts
    #: Records by kind (the store's own included), and the turns that hold a record of a
    #: kind other than queue, input and lease records: only with ``events_by_kind``.
    events_by_kind: dict[str, int] | None = None
    turn_count: int | None = None


class DamagedSession(_Result, frozen=True, kw_only=True):
    """A session that could not be read, with where and why (``fsstore verify`` says
    more)."""

    id: str
    path: str
    reason: str


class StoreStats(_Counts, frozen=True, kw_only=True):
    """What ``Store.stats`` counts: the sessions' counts summed, each session's own, and
    the sessions that could not be read. A file shared by hard link between sessions (a
    fork's segments and attachments) counts once in ``bytes`` and ``log_bytes``/
    ``blob_bytes``, for the first session (by id) that holds it."""

    sessions: int
    queue: dict[str, int]
    inputs: dict[str, int]
    #: Sessions whose lease is held and not expired.
    leased: int
    oldest_event: float | None
    newest_event: float | None
    bytes: ByteCounts
    per_session: list[SessionStats]
    damaged: list[DamagedSession]

    @property
    def key_count(self) -> int:
        return self.state_keys


class SessionBytes(_Result, frozen=True, kw_only=True):
    """One session's line of ``Store.disk_usage``."""

    id: str
    total: int
    bytes: ByteCounts


class DiskUsage(_Result, frozen=True, kw_only=True):
    """What ``Store.disk_usage`` finds: the bytes of each session by kind, largest
    first, the store's totals by kind, and the bytes outside the sessions
    (``outside_sessions``: the store manifest, workspaces, the leftovers of interrupted
    creates and deletes). A file shared by hard link counts once, for the first session
    (by id) that holds it; ``total`` includes ``outside_sessions``."""

    total: int
    bytes: ByteCounts
    outside_sessions: int
    sessions: list[SessionBytes]
    damaged: list[DamagedSession]


class StatsSource(NamedTuple):
    """What a session gives ``session_stats``: its folder, manifest fields, log reader,
    and a loader of its state at the head (``SessionReader`` builds it)."""

    io: FileIO
    path: str
    session_id: str
    title: str | None
    log: LogReader
    load_image: Callable[[], StateImage]


#: A file of at most this many bytes is read whole by a count, at its first read.
_WHOLE_FILE = 256 << 10


class _CountIO(FileIO):
    """The reads of one count of a session (``Store.stats``): each file is opened once
    and, when small, read whole at its first read, so the manifest, the segments, the
    snapshot and the lease file cost one open and one read each however many times the
    log reader, the state load and the count look at them. A file keeps the bytes it
    had at that read for the rest of the count, as an open descriptor would keep a file
    a writer replaced meanwhile. A sealed segment (``in_parts``) is read only where it
    is asked for: its header, and its first frame for the oldest one. Everything else
    (listings, stats) goes to ``base``, the store's FileIO; ``release`` closes what the
    count opened."""

    def __init__(self, base: FileIO) -> None:
        self.base = base
        self._fds: dict[str, int] = {}  # path -> its descriptor, open until ``release``
        self._released = False
        self._mine: set[int] = set()
        self._read: dict[int, bytes] = {}  # descriptor -> the file's bytes, read whole
        self._lock = threading.Lock()  # the log reader may load a segment in a thread
        self._names: dict[str, set[str]] = {}  # folder -> the names the count listed
        #: Files read only in the parts asked for (a count's sealed segments).
        self.in_parts: set[str] = set()
        self._parts: set[int] = set()

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        if flags != os.O_RDONLY or self._released:
            # A count never writes. After ``release``, what a log reader's thread still
            # loads (a prefetch the count did not wait for) opens and closes its own.
            return self.base.open(path, flags, mode)
        with self._lock:
            fd = self._fds.get(path)
            if fd is None:
                folder, name = os.path.split(path)
                listed = self._names.get(folder)
                if listed is not None and name not in listed:
                    # Not in the count's listing of its folder: a segment merged into a
                    # compacted file, looked for under its own name first. A file made
                    # since the listing is after what the count reads.
                    raise FileNotFoundError(errno.ENOENT, f"{path}: no such file")
                fd = self._fds[path] = self.base.open(path, flags, mode)
                self._mine.add(fd)
                if path in self.in_parts:
                    self._parts.add(fd)
            return fd

    def close(self, fd: int) -> None:
        if fd not in self._mine:
            self.base.close(fd)  # closed by ``release`` otherwise

    def afresh(self) -> None:
        """Open, read and list each file and folder again when next asked for (the files
        read so far stay open until ``release``: a reader may still hold one)."""
        with self._lock:
            self._fds, self._read, self._names = {}, {}, {}

    def release(self) -> None:
        """Close every file the count opened, and forget what it read: the count is
        over."""
        with self._lock:
            fds, self._mine, self._fds, self._read = self._mine, set(), {}, {}
            self._names, self._released = {}, True
            self._parts = set()
        for fd in fds:
            self.base.close(fd)

    def _whole(self, fd: int) -> bytes | None:
        found = self._read.get(fd)
        if found is None and fd in self._mine and fd not in self._parts:
            size = self.base.size(fd)
            if size <= _WHOLE_FILE:
                found = self._read[fd] = self.base.pread(fd, size, 0)
        return found

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        whole = self._whole(fd)
        if whole is None:
            return self.base.pread(fd, size, offset)
        return whole[offset:offset + size]

    def size(self, fd: int) -> int:
        whole = self._whole(fd)
        return self.base.size(fd) if whole is None else len(whole)

    def open_file(self, path: str) -> _io.BufferedReader:
        return self.base.open_file(path)

    def listdir(self, path: str) -> list[str]:
        names = self._names.get(path)
        return self.base.listdir(path) if names is None else list(names)

    def entries(self, path: str) -> list[FolderEntry]:
        found = self.base.entries(path)
        self._names[path] = {entry.name for entry in found}  # the log reader's listdir
        return found

    def exists(self, path: str) -> bool:
        return self.base.exists(path)

    def check_folder(self, path: str) -> bool:
        return self.base.check_folder(path)

    def check_folders(self, *paths: str) -> None:
        self.base.check_folders(*paths)


class _CountingLog(LogReader):
    """The log reader of one count of a session (``Store.stats``): it takes the segment
    names from the folder listing the count made (the newest of them in place of
    ``tail.hint``), the segment headers it read, and the end of the log it found, so the
    state load that follows reads neither again; a header is decoded once per count,
    and whether the log starts with a base looked up once. Once the load looks again (a
    writer cleared or compacted the log meanwhile), everything is read afresh, the files
    too (``_CountIO.afresh``)."""

    def __init__(self, io: FileIO, path: str, accepted: identity.Identity | None) -> None:
        super().__init__(io, path, accepted)
        self.listed: list[int] = []
        self.headers: dict[int, SegmentHeader] = {}
        self.snapshot_names: list[str] = []
        self._kept: tuple[int, int, SegmentEnd] | None = None
        self._handed = False
        self._fresh = False
        self._decoded: dict[tuple[int, str, bytes], SegmentHeader] = {}
        self._base_of: dict[int, Base | None] = {}

    def list_segments(self) -> list[int]:
        if self.listed and not self._fresh:
            return list(self.listed)
        return super().list_segments()

    def hinted_segment(self) -> int | None:
        if self.listed and not self._fresh:
            return self.listed[-1]  # the newest segment, as the count's listing found it
        return super().hinted_segment()

    def read_header(self, first_seq: int) -> SegmentHeader:
        header = None if self._fresh else self.headers.get(first_seq)
        return header if header is not None else super().read_header(first_seq)

    def checked_header(self, raw: bytes, first_seq: int, path: str) -> SegmentHeader:
        key = (first_seq, path, bytes(raw[:SEGMENT_HEADER_SIZE]))
        header = self._decoded.get(key)
        if header is None:
            header = self._decoded[key] = super().checked_header(raw, first_seq, path)
        return header

    def base_of(self, log_start: int) -> Base | None:
        if log_start not in self._base_of:
            self._base_of[log_start] = super().base_of(log_start)
        return self._base_of[log_start]

    def reset(self) -> None:
        """Forget what the last count found: the next count lists and reads afresh."""
        self.listed, self.headers, self.snapshot_names = [], {}, []
        self._kept, self._handed, self._fresh = None, False, False
        self._base_of = {}

    def locate_tail(self) -> tuple[int, int, SegmentEnd]:
        if self._kept is not None and not self._handed:
            self._handed = True  # the count's tail, handed to the state load once
            return self._kept
        if self._kept is not None:
            self._fresh = True
            self._base_of = {}
            if isinstance(self.io, _CountIO):
                self.io.afresh()
        self._kept = super().locate_tail()
        return self._kept


class _ListedSnapshots(SnapshotDir):
    """A session's ``state/`` as the count listed it."""

    def __init__(self, io: FileIO, path: str, accepted: identity.Identity | None,
                 log: _CountingLog) -> None:
        super().__init__(io, path, accepted, log.chain)  # its snapshots are bound to it
        self._log = log

    def seqs(self) -> list[int]:
        return layout.snapshot_seqs(self._log.snapshot_names)


def folder_source(io: FileIO, path: str, session_id: str,
                  chain_key: ChainKey | None = None) -> StatsSource:
    """What ``session_stats`` reads of the session folder ``path``, without the rest of
    a ``SessionReader``: its manifest (title, identity), its log, and its state loaded
    as a reader loads it (the newest snapshot, then the log after it), its chain
    checked as a reader checks it (under ``chain_key``, else the environment's key).
    Raises SessionNotFound when the folder holds no session."""
    io.check_folder(path)  # the folders in it are checked by their listing
    manifest = ManifestFile(io, path, session_id)
    accepted = identity.from_manifest(manifest.raw, manifest.path)
    log = _CountingLog(io, layout.log_dir(path), accepted)
    log.chain = chain_session.rules_of(manifest.meta.chain, chain_key, path, manifest.path)
    snapshots = _ListedSnapshots(io, path, accepted, log)

    def load_image() -> StateImage:
        return state_module.load(io, log, snapshots).image

    return StatsSource(io, path, session_id, manifest.meta.title, log, load_image)


class _Tally:
    """Bytes by kind, counting a file shared by hard link once (``seen`` is kept across
    sessions by a store's totals)."""

    def __init__(self, seen: set[tuple[int, int]] | None) -> None:
        self.bytes = dict.fromkeys(BYTE_KINDS, 0)
        self.seen = seen
        self.added: list[tuple[int, int]] = []  # what this tally put in ``seen``
        #: The files with more than one name it counted: (inode, kind, bytes, whether an
        #: attachment), so that a cached count can be summed as this one was.
        self.shared: list[SharedFile] = []

    def add(self, kind: str, entry: FolderEntry, blob: bool = False) -> int:
        """Count ``entry`` under ``kind``; return the bytes counted (0 for a file that
        another session counted already)."""
        if entry.inode is not None and self.seen is not None:
            if entry.inode in self.seen:
                return 0
            self.seen.add(entry.inode)
            self.added.append(entry.inode)
            self.shared.append(SharedFile(entry.inode, kind, entry.size, blob))
        self.bytes[kind] += entry.size
        return entry.size


class SharedFile(NamedTuple):
    """A file a session's count found with more than one name (a hard link a fork
    shares), as ``_Tally`` counted it."""

    inode: tuple[int, int]
    kind: str
    size: int
    blob: bool  # an attachment: counted in ``blob_bytes`` too


def _entries(io: FileIO, path: str) -> list[FolderEntry]:
    try:
        return io.entries(path)
    except FileNotFoundError:
        return []  # a folder made when first needed (state/, blobs/, ...)


class _Listing:
    """One listing of each folder of a session: the bytes by kind, and the names the
    counts need."""

    def __init__(self, io: FileIO, path: str | None, seen: set[tuple[int, int]] | None
                 ) -> None:
        """List the session folder ``path`` (None: list nothing yet, see ``_walk``)."""
        self.io = io
        self.tally = _Tally(seen)
        self.segments: list[str] = []
        self.snapshots: list[str] = []
        self.checkpoints: list[str] = []
        self.blobs = self.blob_bytes = 0
        self.collections: list[str] = []
        #: Names of the session's folders that are something else (a symlink, a file).
        self.not_folders: list[str] = []
        #: The names in the session folder.
        self.names: set[str] = set()
        for entry in _entries(io, path) if path is not None else ():
            self.names.add(entry.name)
            folder = os.path.join(path or "", entry.name)
            if entry.kind != "folder" and entry.name in _FOLDER_KINDS:
                self.not_folders.append(folder)
            if entry.kind == "folder" and entry.name in _FOLDER_KINDS:
                kind = _FOLDER_KINDS[entry.name]
                if kind == "log":
                    self.segments = self._files(folder, kind)
                elif kind == "snapshots":
                    self.snapshots = self._files(folder, kind)
                elif kind == "checkpoints":
                    self.checkpoints = self._files(folder, kind)
                elif kind == "blobs":
                    self._walk(folder, kind)
                else:
                    self._vectors(folder)
            elif entry.kind == "folder":
                self._walk(folder, "other")
            elif entry.kind == "file":
                self.tally.add("index" if entry.name == layout.MESSAGE_INDEX else "other",
                               entry)

    def _files(self, folder: str, kind: str) -> list[str]:
        """Count the files of ``folder`` (and anything under it) as ``kind``; return the
        names of its files."""
        names = []
        for entry in _entries(self.io, folder):
            if entry.kind == "file":
                self.tally.add(kind, entry)
                names.append(entry.name)
            elif entry.kind == "folder":
                self._walk(os.path.join(folder, entry.name), kind)
        return names

    def _walk(self, folder: str, kind: str) -> None:
        for entry in _entries(self.io, folder):
            if entry.kind == "folder":
                self._walk(os.path.join(folder, entry.name), kind)
            elif entry.kind == "file":
                blob = kind == "blobs" and _BLOB_NAME.match(entry.name) is not None
                counted = self.tally.add(kind, entry, blob)
                if blob:
                    self.blobs += 1
                    self.blob_bytes += counted

    def _vectors(self, folder: str) -> None:
        for entry in _entries(self.io, folder):
            if entry.kind == "folder":
                self._walk(os.path.join(folder, entry.name), "vectors")
                if not layout.is_scratch(entry.name):  # not one being created or dropped
                    self.collections.append(os.path.join(folder, entry.name))
            elif entry.kind == "file":
                self.tally.add("vectors", entry)


def disk_usage(io: FileIO, path: str, seen: set[tuple[int, int]] | None = None
               ) -> ByteCounts:
    """The bytes of a session folder by kind, from one listing of each of its folders
    (nothing is read). ``seen``: hard-linked files counted already."""
    return ByteCounts(**_Listing(io, path, seen).tally.bytes)


#: How many times a count starts again when a file it listed is removed meanwhile.
_RECOUNTS = 3


def session_stats(source: StatsSource, *, events_by_kind: bool = False,
                  seen: set[tuple[int, int]] | None = None,
                  shared: list[SharedFile] | None = None) -> SessionStats:
    """See ``SessionReader.session_stats``. ``seen``: the hard-linked files counted
    already (a store's totals); ``shared``: given, gets those this count counted."""
    for attempt in range(_RECOUNTS):
        listing = _Listing(source.io, source.path, seen)
        try:
            found = _count(source, listing, events_by_kind)
            if shared is not None:
                shared.extend(listing.tally.shared)
            return found
        except FileNotFoundError:
            # A file the listing named was removed before it was read: a writer's clear
            # or a snapshot prune (readers take no lock). Count again from a new
            # listing, the bytes counted so far taken back.
            if attempt == _RECOUNTS - 1:
                raise
        except CorruptionError:
            # The log read as damaged: really so, or the listing was taken while a
            # writer's clear unlinked its segments (a listing is not atomic: it can hold
            # some of them and not others, nor the new one). Damage only when the log
            # folder still holds what was listed.
            if attempt == _RECOUNTS - 1 or not _log_moved(source, listing):
                raise
        if seen is not None:
            seen.difference_update(listing.tally.added)
        if isinstance(source.log, _CountingLog):
            source.log.reset()
        if isinstance(source.io, _CountIO):
            source.io.afresh()  # read the files afresh too
    raise AssertionError("unreachable")


def _log_moved(source: StatsSource, listing: _Listing) -> bool:
    """Whether the segments in the log folder are no longer those ``listing`` found."""
    io = source.io.base if isinstance(source.io, _CountIO) else source.io
    try:
        now = io.listdir(layout.log_dir(source.path))
    except FileNotFoundError:
        return False
    return layout.segment_seqs(now) != layout.segment_seqs(listing.segments)


def _count(source: StatsSource, listing: _Listing, events_by_kind: bool) -> SessionStats:
    io, path = source.io, source.path
    # Nothing is read through a symlink in place of a session's folder: refused, as
    # every reader refuses it (UnsafePath, NotAFolder).
    io.check_folders(*listing.not_folders)
    log = source.log
    if isinstance(io, _CountIO):
        io.in_parts = {log.segment_path(first)
                       for first in layout.segment_seqs(listing.segments)[:-1]}
    heads = _heads(io, log, listing.segments)
    if isinstance(log, _CountingLog):
        log.listed = sorted(heads)
        log.headers = {first: header for first, (_, header) in heads.items()
                       if header is not None}
        log.snapshot_names = listing.snapshots
    found = (_one_pass(log, heads, listing.snapshots) if isinstance(log, _CountingLog)
             else None)
    if found is None:
        tail = log.tail()
        segments = _segments(log, heads, tail.log_start, tail.head)
    else:
        tail, segments, _ = found
    documents = 0
    for folder in listing.collections:
        try:
            # the store's own FileIO: a collection keeps files open (numpy) past a count
            collection = VectorCollectionReader(io.base if isinstance(io, _CountIO) else io,
                                                folder, of_log(log, os.path.basename(folder)))
        except CollectionNotFound:
            continue  # dropped meanwhile
        try:
            documents += collection.count()
        finally:
            collection.close()
    image = source.load_image() if found is None else found[2]
    # A session that never had a lease has no lease file: not even an open is spent.
    lease = (read_lease(io, layout.lease_path(path)) if layout.LEASE_FILE in listing.names
             else NO_LEASE)
    holder = None
    if lease.held and lease.owner is not None:
        holder = lease.owner.label or f"{lease.owner.pid}@{lease.owner.host}"
    kinds, turn_count = _scan(source.log) if events_by_kind else (None, None)
    return SessionStats(
        id=source.session_id, path=path, title=source.title, records=tail.event_count,
        head=tail.head, log_start=tail.log_start, turns=tail.last_turn or 0,
        messages=sum(image.usage.roles.values()), state_keys=len(image.state),
        segments=segments.live, sealed_segments=max(segments.live - 1, 0),
        compressed_segments=segments.compressed, log_bytes=listing.tally.bytes["log"],
        snapshots=len(layout.snapshot_seqs(listing.snapshots)),
        checkpoints=len(layout.checkpoint_ids(listing.checkpoints)),
        blobs=listing.blobs, blob_bytes=listing.blob_bytes,
        collections=len(listing.collections), vector_documents=documents,
        queue=_by_status(QUEUE_STATUSES, image.work.items.values()),
        inputs=_by_status(INPUT_STATUSES, image.inputs.items.values()),
        lease_holder=holder, lease_live=holder is not None and time.time() < lease.expires_at,
        lease_token=lease.token, lease_expires=lease.expires_at if holder else None,
        oldest_event=segments.oldest_ts, newest_event=_finite(tail.last_ts),
        bytes=ByteCounts(**listing.tally.bytes), events_by_kind=kinds,
        turn_count=turn_count)


def _one_pass(log: _CountingLog, heads: dict[int, tuple[bytes, SegmentHeader | None]],
              snapshots: list[str]) -> tuple[LogTail, _Segments, StateImage] | None:
    """The end of the log, its segment counts and its state, in one read and one walk of
    its only segment, when the log is one plain segment and no snapshot: the state is
    then the fold of the whole log, so the state load would read the segment whole
    anyway, and the walk finds the first record's time and the last record as the tail
    and the first frame's reads would. What it gives is theirs: the same checks run
    (checksums, seqs, the synced mark; a torn tail is the end). None otherwise."""
    if not heads or layout.snapshot_seqs(snapshots) or log.chain is not None:
        return None  # (a chain is checked by the reads of the general way)
    newest = max(heads)
    header = heads[newest][1]
    if header is None or header.compacted or header.log_start != newest:
        return None  # older live segments, a compacted one, or a damaged header
    buf, header = log.load_segment(newest)  # the header as read with the frames
    if header.compacted or header.log_start != newest:
        return None  # replaced since its header was read: the general way copes
    path = log.segment_path(newest)
    scan = SegmentScan(buf, path, newest, True, newest - 1, synced_end=header.synced_end)
    image = StateImage(newest - 1, newest)
    first_ts = None
    for event in scan:
        if first_ts is None:
            first_ts = event.ts
        if event.kind in FOLDED_KINDS:
            image.apply(event, path)
    image.seq = head = scan.expect_seq - 1
    last = scan.last
    tail = LogTail(head, newest, *((None, None, None) if last is None
                                   else (last.ts, last.turn, last.kind)))
    return tail, _Segments(1, 0, _finite(first_ts)), image


class _Segments(NamedTuple):
    live: int
    compressed: int
    oldest_ts: float | None


def _heads(io: FileIO, log: LogReader, names: list[str]
           ) -> dict[int, tuple[bytes, SegmentHeader | None]]:
    """The first bytes of each segment in ``names``: its header and the header of its
    first frame (one read), with the header decoded and checked when it can be (a
    damaged one is left for the log reader to report, a compacted one to read)."""
    heads = {}
    for name in names:
        first = layout.parse_segment_name(name)
        if first is None:
            continue  # tail.hint, a torn tail set aside, a temp file
        path = log.segment_path(first)
        try:
            raw = io.read_head(path, _HEADER + _FRAME_HEADER.size)
        except FileNotFoundError:
            # Removed since the listing: a writer's clear unlinking the segments before
            # its new log start (readers take no lock). It is in the log no more.
            continue
        try:
            header: SegmentHeader | None = log.checked_header(raw[:_HEADER], first, path)
        except FsStoreError:
            header = None
        heads[first] = (raw, header)
    return heads


def _segments(log: LogReader, heads: dict[int, tuple[bytes, SegmentHeader | None]],
              log_start: int, head: int) -> _Segments:
    """Count the live segments (those from the log start on) and those compacted (a
    header of major version 2), and find the time of the log's first record."""
    live, compressed, oldest = 0, 0, None
    for first, (raw, _) in sorted(heads.items()):
        if first < log_start:
            continue  # what an interrupted clear left
        live += 1
        major = _MAJOR.unpack_from(raw, 8)[0] if len(raw) >= 10 else 0
        if major == _COMPACTED_MAJOR:
            compressed += 1
        if first == log_start and head >= log_start:
            oldest = _first_ts(log, first, raw, major)
    return _Segments(live, compressed, oldest)


def _first_ts(log: LogReader, first: int, raw: bytes, major: int) -> float | None:
    """The time of the first record of segment ``first`` (the oldest live one), from
    its first frame: read at byte 64 of a plain segment (whose first bytes ``raw``
    hold its length), and of a compacted one (one chunk decompressed, which the state
    load then finds in the log reader's cache). A compacted file that starts with a
    base (retention) is read through the log reader: its first record follows the
    base."""
    if major == 1:
        if len(raw) < _HEADER + _FRAME_HEADER.size:
            return None  # no frame yet
        fields = raw[_HEADER:]
    else:
        with log.open_segment(first) as segment:
            if segment.starts_with_base or not segment.compacted:
                fields = b""
            else:
                fields = segment.pread(_FRAME_HEADER.size, _HEADER)
        if len(fields) < _FRAME_HEADER.size:
            event = next(iter(log.events(first - 1, limit=1)), None)
            return None if event is None else _finite(event.ts)
    _, length, _, _, frame_type = _FRAME_HEADER.unpack_from(fields)
    size = frame_end(0, length, frame_type)
    frames = log.read_frames(first, _HEADER, _HEADER + size)
    return _finite(frames[0].ts) if frames else None


def _by_status(statuses: tuple[str, ...], items: Iterable[dict[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(statuses, 0)
    for item in items:
        counts[item["status"]] = counts.get(item["status"], 0) + 1
    return counts


def _finite(ts: float | None) -> float | None:
    return ts if ts is not None and math.isfinite(ts) else None


def _scan(log: LogReader) -> tuple[dict[str, int], int]:
    """Records by kind, and the turns holding a record: a read of the whole log."""
    kinds: dict[str, int] = {}
    turns: set[int] = set()
    for event in log.events():
        kinds[event.kind] = kinds.get(event.kind, 0) + 1
        if event.kind not in NEUTRAL_KINDS and event.kind != TURN_FINISHED:
            turns.add(event.turn)
    return dict(sorted(kinds.items())), len(turns)


def store_stats(io: FileIO, root: str, session_ids: Iterable[str],
                on_session: Callable[[str], object] | None = None, *,
                chain_key: ChainKey | None = None) -> StoreStats:
    """See ``Store.stats``."""
    seen: set[tuple[int, int]] = set()
    found: list[SessionStats] = []
    damaged: list[DamagedSession] = []
    for session_id in session_ids:
        if on_session is not None:
            on_session(session_id)
        counted = count_session(io, root, session_id, seen, chain_key=chain_key)
        if isinstance(counted, SessionStats):
            found.append(counted)
        elif counted is not None:
            damaged.append(counted)
    return summed(found, damaged)


def count_session(io: FileIO, root: str, session_id: str, seen: set[tuple[int, int]],
                  shared: list[SharedFile] | None = None, *, chain_key: ChainKey | None = None
                  ) -> SessionStats | DamagedSession | None:
    """One session's line of ``Store.stats``: its counts, or why it cannot be read, or
    None when it is gone (deleted meanwhile). ``seen`` and ``shared``: see
    ``session_stats``."""
    path = layout.session_dir(root, session_id)
    count_io = _CountIO(io)
    try:
        return session_stats(folder_source(count_io, path, session_id, chain_key), seen=seen,
                             shared=shared)
    except SessionNotFound:
        return None  # deleted meanwhile: it is no longer in the store
    except (FsStoreError, OSError, ValueError) as exc:
        if not io.exists(layout.session_manifest_path(path)):
            return None  # deleted while it was counted
        # One damaged session hides no other: it is named, with why, and the rest
        # are counted.
        return DamagedSession(id=session_id, path=_damaged_path(exc) or path,
                              reason=" ".join(str(exc).split()) or type(exc).__name__)
    finally:
        count_io.release()


def _damaged_path(exc: BaseException) -> str:
    return str(getattr(exc, "path", None) or getattr(exc, "filename", None) or "")


def summed(found: list[SessionStats], damaged: list[DamagedSession]) -> StoreStats:
    totals = {name: sum(getattr(s, name) for s in found)
              for name in _Counts.__struct_fields__}
    queue = dict.fromkeys(QUEUE_STATUSES, 0)
    inputs = dict.fromkeys(INPUT_STATUSES, 0)
    for session in found:
        for status, count in session.queue.items():
            queue[status] = queue.get(status, 0) + count
        for status, count in session.inputs.items():
            inputs[status] = inputs.get(status, 0) + count
    oldest = [s.oldest_event for s in found if s.oldest_event is not None]
    newest = [s.newest_event for s in found if s.newest_event is not None]
    sizes = ByteCounts(**{kind: sum(getattr(s.bytes, kind) for s in found)
                          for kind in BYTE_KINDS})
    return StoreStats(
        sessions=len(found) + len(damaged), **totals, queue=queue, inputs=inputs,
        leased=sum(1 for s in found if s.lease_live),
        oldest_event=min(oldest, default=None), newest_event=max(newest, default=None),
        bytes=sizes, per_session=found, damaged=damaged)


def store_disk_usage(io: FileIO, root: str, session_ids: Iterable[str]) -> DiskUsage:
    """See ``Store.disk_usage``."""
    seen: set[tuple[int, int]] = set()
    rows: list[SessionBytes] = []
    damaged: list[DamagedSession] = []
    ids = set()
    for session_id in session_ids:
        path = layout.session_dir(root, session_id)
        ids.add(session_id)
        try:
            io.check_folders(*layout.session_folders(path))
            counts = disk_usage(io, path, seen)
        except (FsStoreError, OSError) as exc:
            damaged.append(DamagedSession(id=session_id, path=_damaged_path(exc) or path,
                                          reason=" ".join(str(exc).split())))
            continue
        rows.append(SessionBytes(id=session_id, total=counts.total, bytes=counts))
    rows.sort(key=lambda row: (-row.total, row.id))
    outside = _Listing(io, None, seen)  # a tally of the files outside the sessions
    for entry in _entries(io, root):
        if entry.kind == "file":
            outside.tally.add("other", entry)
        elif entry.kind == "folder" and entry.name != layout.SESSIONS_DIR:
            outside._walk(os.path.join(root, entry.name), "other")
    sessions = layout.sessions_dir(root)
    for entry in _entries(io, sessions):
        if entry.name in ids:
            continue
        if entry.kind == "file":
            outside.tally.add("other", entry)
        elif entry.kind == "folder":  # a session being created or deleted
            outside._walk(os.path.join(sessions, entry.name), "other")
    sizes = ByteCounts(**{kind: sum(getattr(r.bytes, kind) for r in rows)
                          for kind in BYTE_KINDS})
    extra = outside.tally.bytes["other"]
    return DiskUsage(total=sizes.total + extra, bytes=sizes, outside_sessions=extra,
                     sessions=rows, damaged=damaged)
