"""Consistent, incremental backups of a store taken while writers append
(docs/FORMAT.md, section 23).

A backup is a store folder (``DEST``) that :func:`fsstore.open_store` opens like any
other: restoring is copying it back. :func:`backup_store` fills or refreshes it; each
session's copy is a prefix of whole batches of its log, and its state, checkpoints,
snapshots, blobs and vector collections agree with that prefix. Per session:

1. ``session.json``, read whole (it is replaced by rename, so the read sees one version);
2. the vector collections: each ``collection.json`` first, then the shard files its
   states name (a seal never unlinks those for 600 seconds: FORMAT 15.8), then its
   ``wal/`` as a log (step 4), so the copy holds everything after the manifest's
   ``wal_seq``;
3. the blobs present now;
4. the log: while holding the ``log/`` folder lock that compaction, retention, a
   vacuum's reclaim and a fork hold while they replace files, the segment files are
   listed and *opened* (not read); the lock is let go at once. A descriptor keeps the
   file it opened, whatever rename or unlink follows, and a sealed segment never
   changes in place, so copying from the descriptors later gives the very set of files
   of one moment. The newest segment, which the writer appends to in place, is read
   header first and then cut at the end of its last whole frame: the copy's head;
5. checkpoints and snapshots at or before that head (those made after it are left out:
   their seq is past the copy's log);
6. the blobs again: a commit in the copied prefix was written after its blob's put, so
   its blob is there now (or was at step 3);
7. the lease file; ``writer.lock`` is made empty (a lock; its token record only repeats
   the lease file's token, section 16.4). ``messages.idx`` and ``tail.hint`` are caches
   and are left out: a reader lists ``log/``, a writer rebuilds the index.
8. ``session.json`` again: another uid means the session was deleted and made again
   under its id meanwhile, and the copy starts again (it would mix the two);
9. every file whose bytes were copied (not linked) is checked (a sealed segment's
   frames, a blob's digest, a shard's crc32c): damage in the source fails the session,
   named with the source file and offset, and DEST keeps its previous copy.

The copy is built as ``DEST/sessions/.tmp-ID-HEX8/``, made durable (one ``syncfs`` of
DEST's filesystem where Linux has it, else an fsync of each file and folder), checked
(its head read back; the whole of ``verify`` with ``verify=True``), and then put in place of
the previous copy by two renames (the old one to ``.trash-ID-HEX8``, removed after).
``DEST/.fsstore-backup.json`` records each session's head and whether the last backup
completed: it says ``"complete": false`` from the first write of a backup to its last.

Incremental: a file that never changes once it has its name (a sealed segment, a blob,
a shard file, a checkpoint or snapshot) is hard-linked from the previous copy of the
session in ``DEST`` (or from ``link_dest``, a previous backup, like ``rsync
--link-dest``) when one is there under the same name with the same size (and, for the
kinds whose names a rewrite reuses, the same header bytes), so a backup costs what
changed. Files that several sessions share by hard link (a fork's sealed segments and
blobs) are copied once and linked.
"""

from __future__ import annotations

import datetime
import os
import secrets
import stat
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import layout
from .backup_check import (
    BACKUP_FORMAT,
    BACKUP_VERSION,
    _check_dest,
    _check_link_dest,
    _discard,
    _never,
    _real_folder,
    _recorded,
    _reference_entries,
    _shard_entries,
    _source_damage,
    _tally,
    _uid,
    _valid_entry,
    _within,
    _write_backup_manifest,
)
from .backup_check import BACKUP_MANIFEST as BACKUP_MANIFEST
from .backup_check import verify_backup as verify_backup
from .errors import CorruptionError, FsStoreError, SessionNotFound
from .fsio import FileIO, folder_lock

if TYPE_CHECKING:
    from .store import Store

#: How long a backup waits for the ``log/`` folder lock of a session (a compaction of a
#: large log holds it for its whole run), in seconds.
LOCK_WAIT = 60.0
#: A session none of whose files changed for this long (ns) before a backup began has
#: its folder's fingerprint recorded, so that the next backup can tell it did not change
#: since and leave its copy as it is (FORMAT 7.7, "racy stamps").
QUIET_NS = 3_000_000_000
#: How often a session is copied again when its files changed under the copy (a clear
#: unlinked a listed segment, a collection's shard went before it was opened).
ATTEMPTS = 5

_SEGMENT_HEADER = 64
_SNAPSHOT_HEADER = 80
_SNAPSHOT_SEQS = struct.Struct("<QQ")  # seq, log_start: bytes 16-31 of a snapshot header
_CHUNK = 1 << 20
# Never in a payload the scan must decode: frames are only checked (see SegmentScan)
_NO_MARKER = b"\xc1\xc1fsstore-backup-scan\xc1\xc1"


class _Changed(Exception):
    """A file the copy listed went away before it was opened: copy the session again."""


@dataclass
class BackupReport:
    """What :func:`backup_store` did. ``files_linked``/``bytes_linked`` count files taken
    by hard link from an earlier copy (no bytes read or written), ``files_copied``/
    ``bytes_copied`` those written anew."""

    dest: str
    sessions: int = 0
    files_copied: int = 0
    bytes_copied: int = 0
    files_linked: int = 0
    bytes_linked: int = 0
    seconds: float = 0.0
    # sessions whose folder and copy did not change since the last backup: left as they were
    unchanged: int = 0
    # per session backed up: the seq its copy ends at (the copy's head)
    heads: dict[str, int] = field(default_factory=dict)
    # sessions DEST held that the store no longer does (a whole-store backup removes them)
    removed: list[str] = field(default_factory=list)
    # sessions not backed up, with why; DEST keeps their previous copy, if any
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form of the report."""
        return {"dest": self.dest, "sessions": self.sessions, "complete": self.complete,
                "files_copied": self.files_copied, "bytes_copied": self.bytes_copied,
                "files_linked": self.files_linked, "bytes_linked": self.bytes_linked,
                "seconds": self.seconds, "unchanged": self.unchanged,
                "heads": dict(self.heads),
                "removed": list(self.removed), "failed": dict(self.failed)}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()





class _Copier:
    """Copies files into the folder being built, taking what it can by hard link: from
    an earlier copy (the reference folders) or from a file this backup already copied
    (the same source file under two sessions' names, as forks share them)."""

    def __init__(self, io: FileIO, report: BackupReport, store_root: str) -> None:
        self.io = io
        self.report = report
        # (device, inode, size, mtime) of a source file -> the copy made of it: the
        # folder of that session's copy (``root``, while it is built) and the file in it
        self.copied: dict[tuple[int, int, int, int], tuple[str, str]] = {}
        self.root = ""
        self.moved: dict[str, str] = {}  # a session copy's build folder -> its final one
        self.unsynced: list[str] = []  # files written, to fsync before the copy is used
        self.references: list[str] = []
        self._newest: dict[str, str | None] = {}
        self.store_real = os.path.realpath(store_root)
        self._real_roots: dict[str, str | None] = {}

    # --- taking a file from an earlier copy ---

    def _link(self, source: str, target: str) -> bool:
        try:
            self.io.link(source, target)
        except OSError:
            return False  # another filesystem, no links: copy it
        return True

    def reuse(self, relative: str, size: int, head: bytes | None = None,
              sealed_segment: bool = False,
              accept: Callable[[str], bool] | None = None) -> str | None:
        """A reference file at ``relative`` that holds what the source file holds: same
        size, and the same first bytes ``head`` when given. A segment is taken only when
        it was sealed when copied (not the newest of its reference's log). ``accept``:
        whether a reference folder (a session's copy) may give the file at all."""
        for root in self.references:
            if accept is not None and not accept(root):
                continue
            path = os.path.join(root, relative)
            if not self.safe(root, path):
                continue
            try:
                info = os.lstat(path)
            except OSError:
                continue
            if not stat.S_ISREG(info.st_mode) or info.st_size != size:
                continue
            if sealed_segment and self._newest_segment(os.path.dirname(path)) == \
                    os.path.basename(path):
                continue
            if head is not None:
                try:
                    if self.io.read_head(path, len(head)) != head:
                        continue
                except (OSError, FsStoreError):
                    continue
            return path
        return None

    def safe(self, root: str, path: str) -> bool:
        """Whether ``path`` in the reference folder ``root`` is reached through no
        symlink from ``root``'s parent on, and is not in the store: a hostile or damaged
        DEST (a session's copy, or a ``.trash-`` folder, made a symlink into the store)
        must never give DEST a hard link to one of the store's files, which a writer
        may append to in place."""
        if root not in self._real_roots:
            real = os.path.join(os.path.realpath(os.path.dirname(root)),
                                os.path.basename(root))
            self._real_roots[root] = None if _within(real, self.store_real) else real
        real_root = self._real_roots[root]
        if real_root is None:
            return False
        return os.path.realpath(path) == os.path.join(real_root,
                                                      os.path.relpath(path, root))

    def _newest_segment(self, folder: str) -> str | None:
        if folder not in self._newest:
            try:
                names = sorted(n for n in os.listdir(folder) if layout.is_segment_name(n))
            except OSError:
                names = []
            self._newest[folder] = names[-1] if names else None
        return self._newest[folder]

    # --- copying ---

    def take(self, fd: int, target: str, relative: str, *, head_bytes: int = 0,
             sealed_segment: bool = False,
             accept: Callable[[str], bool] | None = None) -> bool:
        """Make ``target`` a copy of the open source file ``fd``: linked from a reference
        or from an earlier copy of the same file when one holds it, else copied (and
        fsynced with the rest of the session's copy). ``head_bytes``: how many first
        bytes a reference must share (for files whose names a rewrite reuses);
        ``accept``, as in :meth:`reuse`. True when
        the bytes were copied (to be checked: a link takes a file checked before)."""
        info = os.fstat(fd)
        size = info.st_size
        key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        head = self.io.pread(fd, head_bytes, 0) if head_bytes else None
        found = self.reuse(relative, size, head, sealed_segment, accept)
        if found is None and key in self.copied:
            root, path = self.copied[key]
            found = os.path.join(self.moved.get(root, root), path)
        if found is not None and self._link(found, target):
            self.report.files_linked += 1
            self.report.bytes_linked += size
            return False
        out = self.io.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            offset = 0
            while offset < size:
                chunk = self.io.pread(fd, min(_CHUNK, size - offset), offset)
                if not chunk:
                    break  # cut short meanwhile (a seal cuts preallocated zeros)
                self.io.pwrite(out, chunk, offset)
                offset += len(chunk)
        finally:
            self.io.close(out)
        self.unsynced.append(target)
        self.report.files_copied += 1
        self.report.bytes_copied += offset
        if offset == size:
            self.copied[key] = (self.root, relative)
        return True

    def write(self, target: str, data: bytes) -> None:
        self.write_unsynced(target, data)
        self.report.files_copied += 1
        self.report.bytes_copied += len(data)

    def write_unsynced(self, target: str, data: bytes) -> None:
        out = self.io.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            self.io.pwrite(out, data, 0)
        finally:
            self.io.close(out)
        self.unsynced.append(target)

    def reuse_exact(self, relative: str, data: bytes, target: str) -> bool:
        """Link a reference file holding exactly ``data`` (the newest segment of a
        session that did not change since the reference was copied)."""
        for root in self.references:
            path = os.path.join(root, relative)
            if not self.safe(root, path):
                continue
            try:
                if os.lstat(path).st_size != len(data) or self.io.read_file(
                        path, len(data)) != data:
                    continue
            except (OSError, FsStoreError, ValueError):
                continue
            if self._link(path, target):
                self.report.files_linked += 1
                self.report.bytes_linked += len(data)
                return True
        return False

    def sync(self) -> None:
        """fsync every file written since the last call. Deferred to the end of a
        session's copy: the kernel writes them back meanwhile, and one fsync after
        another then waits far less than an fsync after each write would."""
        for path in self.unsynced:
            fd = self.io.open(path, os.O_RDONLY)
            try:
                self.io.fsync(fd)
            finally:
                self.io.close(fd)
        self.unsynced.clear()

    def take_path(self, source: str, target: str, relative: str, **how: Any) -> bool | None:
        """:meth:`take` of the file at ``source``; None when it is gone."""
        try:
            fd = self.io.open(source, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            return self.take(fd, target, relative, **how)
        finally:
            self.io.close(fd)


def _mkdir(io: FileIO, path: str) -> None:
    if not os.path.isdir(path):
        io.mkdir(path)


def _names(io: FileIO, path: str) -> list[str]:
    try:
        return sorted(io.listdir(path))
    except FileNotFoundError:
        return []


class _SessionCopy:
    """One session copied into ``target`` (a new folder)."""

    def __init__(self, io: FileIO, copier: _Copier, source: str, target: str) -> None:
        self.io = io
        self.copier = copier
        self.source = source
        self.target = target
        self.blobs: set[str] = set()
        self.folders: list[str] = [target]
        self._made: set[str] = set()
        self.head = 0
        self.log_start = 1
        # Files whose bytes were copied (not linked), checked before the copy is used:
        # damage in the source must fail the session, never replace a good copy.
        self.sealed: list[tuple[str, int]] = []  # (log folder, first seq)
        self.copied_blobs: list[str] = []  # digests
        self.shard_files: list[tuple[str, tuple[int, int]]] = []  # copy, (size, crc32c)
        self.newest: tuple[str, int] | None = None  # the log's newest segment, when copied

    def mkdir(self, relative: str) -> str:
        """Make the folder ``relative`` (and those above it) in the copy; each is
        fsynced at the end of the copy."""
        path = self.target
        for part in relative.split(os.sep):
            path = os.path.join(path, part)
            if path not in self._made:
                _mkdir(self.io, path)
                self._made.add(path)
                self.folders.append(path)
        return path

    def run(self) -> None:
        io, source = self.io, self.source
        try:
            manifest = io.read_file(layout.session_manifest_path(source), 1 << 20)
        except FileNotFoundError:
            raise SessionNotFound(f"{source}: the session was deleted") from None
        self.copier.write(os.path.join(self.target, layout.SESSION_MANIFEST), manifest)
        self.collections()
        self.copy_blobs()
        self.head, self.log_start = self.copy_log(layout.LOG_DIR, lock=True)
        self.copy_images(layout.CHECKPOINTS_DIR, layout.CHECKPOINT_SUFFIX)
        self.copy_images(layout.STATE_DIR, layout.SNAPSHOT_SUFFIX)
        self.copy_blobs()
        self.copy_repairs()
        try:
            lease = io.read_file(layout.lease_path(source), 1 << 20)
        except FileNotFoundError:
            pass
        else:
            self.copier.write(layout.lease_path(self.target), lease)
        self.copier.write_unsynced(layout.writer_lock_path(self.target), b"")
        self.check_same_session(manifest)
        self.check_copied()
        if type(io) is FileIO and _syncfs(self.target):
            self.copier.unsynced.clear()  # one call made every file and folder durable
            return
        self.copier.sync()
        for folder in reversed(self.folders):
            io.fsync_dir(folder)

    def check_same_session(self, manifest: bytes) -> None:
        """The session was not deleted and created again under its id while it was
        copied: its manifest names the uid it named when the copy began. Otherwise the
        copy would mix the old session's manifest with the new one's files (a copy that
        does not open: its segments are another session's)."""
        try:
            now = self.io.read_file(layout.session_manifest_path(self.source), 1 << 20)
        except FileNotFoundError:
            raise SessionNotFound(f"{self.source}: the session was deleted") from None
        if now != manifest and _uid(now) != _uid(manifest):
            raise _Changed(f"{self.source}: the session was deleted and created again")

    def check_copied(self) -> None:
        """Check the frames of each sealed segment and the digest of each blob whose
        bytes this copy read from the source (a linked file was checked when first
        copied). Damage raises CorruptionError naming the source file and offset."""
        from .blobs import BLOB_MARKER, BlobReader, find_refs
        from .chain_session import unchecked_reader  # a chain: the copy's verify checks it
        log = layout.log_dir(self.target)
        segments = [(folder, first, False) for folder, first in self.sealed]
        if self.newest is not None:
            segments.append((*self.newest, True))
        try:
            # The events of the session's log that hold a blob reference are decoded (a
            # frame without the marker is only checked): each blob they name must be in
            # the copy, which a put before the commit and steps 3 and 6 make sure of,
            # unless the source lost it.
            refs: dict[str, tuple[str, int]] = {}
            for folder, first, last in segments:
                scan = unchecked_reader(self.io, folder).scan_segment(
                    first, last, marker=BLOB_MARKER if folder == log else _NO_MARKER)
                for event in scan:
                    named: set[str] = set()
                    find_refs(event.data, named)
                    for ref in named:
                        refs.setdefault(ref, (scan.path, event.seq))
            blobs = BlobReader(self.io, self.target)
            for ref, (path, seq) in sorted(refs.items()):
                if not blobs.exists(ref):
                    raise CorruptionError(f"the event at seq {seq} refers to blob {ref}, "
                                          "which the session does not hold", path=path)
            for digest in self.copied_blobs:
                blobs.verify_blob(f"sha256:{digest}")
            from .vectors.shard_files import file_crc
            for path, (size, crc) in self.shard_files:
                found = file_crc(self.io, path)
                if found != (size, crc):
                    raise CorruptionError(
                        f"{found[0]} bytes with crc32c 0x{found[1]:08x}; collection.json "
                        f"recorded {size} bytes, crc32c 0x{crc:08x}: damaged", path=path)
        except FsStoreError as exc:
            if isinstance(exc, SessionNotFound):
                raise
            raise _source_damage(exc, self.source, self.target) from None

    # --- the log ---

    def copy_log(self, relative: str, *, lock: bool) -> tuple[int, int]:
        """Copy the log at ``relative`` (``log`` or a collection's ``wal``); return the
        copy's head and log start."""
        from .compaction import log_folder_lock
        folder = os.path.join(self.source, relative)
        held: list[tuple[str, int]] = []
        try:
            # The listing and the opens under the lock a compaction or a retention holds
            # while it replaces files: the descriptors then hold one moment's set of files.
            if lock:
                with log_folder_lock(folder, LOCK_WAIT):
                    held = self._open_listed(folder)
            else:
                held = self._open_listed(folder)
            target = self.mkdir(relative)
            segments = [(n, fd) for n, fd in held if layout.is_segment_name(n)]
            if not segments:
                raise CorruptionError("the log folder holds no segment", path=folder)
            newest_name, newest_fd = segments[-1]
            header = self.io.pread(newest_fd, _SEGMENT_HEADER, 0)
            log_start = _log_start(header, os.path.join(folder, newest_name))
            for name, fd in held:
                first = layout.parse_segment_name(name)
                if first is not None and first < log_start:
                    continue  # left by an interrupted clear: no read needs it
                if name == newest_name:
                    continue
                # A .torn file (the bytes a recovery cut off, named by seq and offset)
                # has no header to tell two apart: a session made again under its id can
                # leave one of the same name and size. Always copied: it is rare, small.
                if self.copier.take(fd, os.path.join(target, name),
                                    os.path.join(self._relative(target), name),
                                    head_bytes=_SEGMENT_HEADER if first is not None else 0,
                                    sealed_segment=first is not None,
                                    accept=None if first is not None else _never
                                    ) and first is not None:
                    self.sealed.append((target, first))
            head = self._copy_newest(newest_fd, header, os.path.join(folder, newest_name),
                                     os.path.join(target, newest_name))
            return head, log_start
        finally:
            for _name, fd in held:
                self.io.close(fd)

    def _relative(self, path: str) -> str:
        return os.path.relpath(path, self.target)

    def _open_listed(self, folder: str) -> list[tuple[str, int]]:
        held: list[tuple[str, int]] = []
        try:
            for name in _names(self.io, folder):
                if not (layout.is_segment_name(name) or name.endswith(layout.TORN_SUFFIX)):
                    continue  # the hint, temp files
                try:
                    held.append((name, self.io.open(os.path.join(folder, name), os.O_RDONLY)))
                except FileNotFoundError:
                    raise _Changed(f"{folder}/{name} went away while listed") from None
        except BaseException:
            for _name, fd in held:
                self.io.close(fd)
            raise
        return held

    def _copy_newest(self, fd: int, header: bytes, path: str, target: str) -> int:
        """Copy the segment a writer appends to, header first (its synced mark then
        claims no more than the frames read after it), cut at the end of its last
        whole frame. Returns the last seq the copy holds."""
        from .chain_session import unchecked_scan
        from .segment_header import decode_segment_header
        decoded = decode_segment_header(header, path)
        size = os.fstat(fd).st_size
        if decoded.compacted:  # written whole before it got its name: copy it as it is
            if self.copier.take(fd, target, self._relative(target)):
                self.sealed.append((os.path.dirname(target), decoded.first_seq))
            from .chain_session import unchecked_reader
            tail = unchecked_reader(self.io, os.path.dirname(target)).segment_end(decoded.first_seq)
            return tail.next_seq - 1
        data = header + self.io.pread(fd, max(0, size - _SEGMENT_HEADER), _SEGMENT_HEADER)
        scan = unchecked_scan(data, path, decoded.first_seq, marker=_NO_MARKER)
        try:
            for _ in scan:
                pass
            end = scan.end
        except FsStoreError as exc:
            # Damage in the source (not a torn tail, which the scan stops at): the session
            # is not backed up, and DEST keeps its previous copy. Copying it as it is
            # would put a damaged copy in place of a good one.
            raise _source_damage(exc, path) from None
        if not self.copier.reuse_exact(self._relative(target), data[:end], target):
            self.copier.write(target, data[:end])
            self.newest = (os.path.dirname(target), decoded.first_seq)
        return scan.expect_seq - 1

    # --- checkpoints, snapshots ---

    def copy_images(self, relative: str, suffix: str) -> None:
        folder = os.path.join(self.source, relative)
        names = [n for n in _names(self.io, folder) if n.endswith(suffix)
                 and not layout.is_scratch(n)]
        if not names:
            return
        target = self.mkdir(relative)
        for name in names:
            try:
                fd = self.io.open(os.path.join(folder, name), os.O_RDONLY)
            except FileNotFoundError:
                continue  # deleted, or pruned (snapshots): not part of the copy
            try:
                head = self.io.pread(fd, _SNAPSHOT_HEADER, 0)
                if len(head) == _SNAPSHOT_HEADER:
                    seq, log_start = _SNAPSHOT_SEQS.unpack_from(head, 16)
                    if seq > self.head:
                        continue  # made after the copy's head: past the copy's log
                    if suffix == layout.SNAPSHOT_SUFFIX and log_start != self.log_start:
                        continue  # of the log before a clear: no load uses it
                self.copier.take(fd, os.path.join(target, name),
                                 os.path.join(relative, name), head_bytes=_SNAPSHOT_HEADER)
            finally:
                self.io.close(fd)

    # --- blobs, repairs ---

    def copy_blobs(self) -> None:
        root = os.path.join(layout.blobs_dir(self.source), "sha256")
        for fan in _names(self.io, root):
            if layout.is_scratch(fan):
                continue
            folder = os.path.join(root, fan)
            for name in _names(self.io, folder):
                relative = os.path.join(layout.BLOBS_DIR, "sha256", fan, name)
                if name.startswith(".") or relative in self.blobs:
                    continue
                self.mkdir(os.path.dirname(relative))
                taken = self.copier.take_path(os.path.join(folder, name),
                                              os.path.join(self.target, relative), relative)
                if taken is not None:
                    self.blobs.add(relative)
                digest = name.split(".")[0]
                if taken and len(digest) == 64 and all(c in "0123456789abcdef"
                                                       for c in digest):
                    self.copied_blobs.append(digest)

    def copy_repairs(self) -> None:
        """``.repair-`` folders: a repair's evidence, kept whole (FORMAT 7.6)."""
        for name in _names(self.io, self.source):
            if name.startswith(layout.REPAIR_PREFIX):
                self.copy_tree(name)

    def copy_tree(self, relative: str) -> None:
        source = os.path.join(self.source, relative)
        self.mkdir(relative)
        for entry in self.io.entries(source):
            path = os.path.join(relative, entry.name)
            if entry.kind == "folder":
                self.copy_tree(path)
            elif entry.kind == "file":
                self.copier.take_path(os.path.join(self.source, path),
                                      os.path.join(self.target, path), path)

    # --- vector collections ---

    def collections(self) -> None:
        folder = layout.vectors_dir(self.source)
        names = [n for n in _names(self.io, folder) if not n.startswith(".")]
        if not names:
            return
        self.mkdir(layout.VECTORS_DIR)
        for name in names:
            self.collection(os.path.join(layout.VECTORS_DIR, name))

    def collection(self, relative: str) -> None:
        source = os.path.join(self.source, relative)
        self.mkdir(relative)
        manifest_path = os.path.join(source, layout.COLLECTION_MANIFEST)
        try:
            raw = self.io.read_file(manifest_path, 4 << 20)
        except FileNotFoundError:
            raw = None
        entries = _shard_entries(raw)
        if entries is None:  # missing or damaged: copied as it is, for verify to report
            for entry in self.io.entries(source):
                if entry.kind == "file" and not entry.name.startswith("."):
                    path = os.path.join(relative, entry.name)
                    self.copier.take_path(os.path.join(self.source, path),
                                          os.path.join(self.target, path), path,
                                          accept=_never)
        else:
            described: dict[str, dict[str, object]] = {}  # a reference's, read once
            for name in sorted(entries):
                path = os.path.join(relative, name)
                # A collection dropped and made again (or its session deleted and made
                # again) numbers its shards from 1 again: a reference file of the same
                # name and size may hold other vectors. It is taken only when the
                # reference's collection.json describes it as the source's does (size
                # and crc32c of the shard's files, its deleted rows).
                def same(root: str, name: str = name) -> bool:
                    if root not in described:
                        described[root] = _reference_entries(
                            self.io, os.path.join(root, relative))
                    return described[root].get(name) == entries[name]
                # a file a state names stays 600 s after it stops being named (15.8)
                taken = self.copier.take_path(os.path.join(self.source, path),
                                              os.path.join(self.target, path), path,
                                              accept=same)
                if taken is None:
                    raise _Changed(f"{self.source}/{path} went away")
                record = _recorded(entries[name], name)
                if taken and record is not None:
                    self.shard_files.append((os.path.join(self.target, path), record))
            if raw is not None:
                self.copier.write(os.path.join(self.target, relative,
                                               layout.COLLECTION_MANIFEST), raw)
        if os.path.isdir(os.path.join(source, layout.WAL_DIR)):
            self.copy_log(os.path.join(relative, layout.WAL_DIR), lock=False)


def _syncfs(path: str) -> bool:
    """``syncfs(2)`` of the filesystem holding ``path`` (Linux): every file and folder
    written there made durable in one call, where an fsync of each of a session's files
    and folders waits for each in turn (about 5x slower for a first backup). False where
    there is no such call, or it failed: then each is fsynced."""
    if not hasattr(os, "uname") or os.uname().sysname != "Linux":
        return False
    import ctypes
    try:
        syncfs = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return False
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return bool(syncfs(fd) == 0)
    finally:
        os.close(fd)


def _log_start(header: bytes, path: str) -> int:
    from .segment_header import decode_segment_header
    return decode_segment_header(header, path).log_start


# --- the backup ---------------------------------------------------------------------


def backup_store(store: Store, dest: str | os.PathLike[str],
                 session_ids: Iterable[str] | None = None, *,
                 link_dest: str | os.PathLike[str] | None = None,
                 verify: bool = False) -> BackupReport:
    """Back up ``store`` (or only ``session_ids``) into the folder ``dest``, beside
    writers in any process, and return what it did (:class:`BackupReport`).

    ``dest`` is made a store (it must be missing, empty, or an earlier backup); each
    session's copy replaces the one ``dest`` held, whole. A whole-store backup also
    removes from ``dest`` the sessions the store no longer holds, and copies the store
    manifest and the workspaces. Files that did not change since the copy already in
    ``dest``, or in ``link_dest`` (an earlier backup, as ``rsync --link-dest``), are
    hard-linked from it, not copied. With ``verify``, each session's copy is verified
    (``SessionReader.verify``) before it replaces the previous one; a copy with problems
    is not put in place and the session is named in ``failed``.

    Raises InvalidBackupDest (nothing written) when ``dest`` is inside the store, holds
    it, or is a folder that is neither empty nor a backup, or ``link_dest`` is no
    backup; SessionNotFound for a named
    session the store does not hold.
    """
    started = time.monotonic()
    io = store.io
    dest = os.path.abspath(os.fspath(dest))
    report = BackupReport(dest)
    _check_dest(io, store.path, dest)  # before anything is written: a refusal writes nothing
    references = [] if link_dest is None else [os.path.abspath(os.fspath(link_dest))]
    for root in references:
        _check_link_dest(io, store.path, root)
    whole = session_ids is None
    ids = store.session_ids() if session_ids is None else list(dict.fromkeys(session_ids))
    for session_id in ids:
        layout.check_session_id(session_id)
        if not whole and not store.has_session(session_id):
            raise SessionNotFound(f"{session_id!r}: no such session in {store.path}")

    missing = []
    folder = dest
    while not os.path.isdir(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    for folder in reversed(missing):  # DEST, and the folders above it that are missing
        try:
            io.mkdir(folder)
        except OSError:  # unless a backup beside this one made it just now
            if not os.path.isdir(folder):
                raise
        io.fsync_dir(os.path.dirname(folder))
    with folder_lock(dest):  # two backups into DEST take turns (a nightly job overrunning)
        return _backup_into(store, dest, ids, whole, references, verify, report, started)


def _backup_into(store: Store, dest: str, ids: list[str], whole: bool, references: list[str],
                 verify: bool, report: BackupReport, started: float) -> BackupReport:
    io = store.io
    previous = _check_dest(io, store.path, dest)  # again: a backup beside may have ended
    # The manifest first, saying "incomplete": a crash from here on leaves DEST marked.
    record: dict[str, Any] = previous if previous is not None else {
        "format": BACKUP_FORMAT, "version": BACKUP_VERSION, "sessions": {}}
    record.update(complete=False, started=_now(), finished=None, source=store.path)
    # A manifest is read, not trusted: an entry that names no session id, or records no
    # seq, is dropped (the session is copied anew when asked for).
    record["sessions"] = {name: entry for name, entry in record["sessions"].items()
                          if _valid_entry(name, entry)}
    # A new DEST is made a store before it is marked a backup, so that it opens at every
    # point (a kill in between leaves an empty store, which _check_dest takes for an
    # empty folder); an earlier backup is marked incomplete first.
    if previous is not None:
        _write_backup_manifest(io, dest, record)
    sessions_dir = layout.sessions_dir(dest)
    manifest_path = layout.store_manifest_path(dest)
    store_manifest = io.read_file(layout.store_manifest_path(store.path), 1 << 20)
    if not os.path.exists(manifest_path) or io.read_file(manifest_path, 1 << 20) != \
            store_manifest:
        io.atomic_write(manifest_path, store_manifest)
    if not os.path.isdir(sessions_dir):
        io.mkdir(sessions_dir)
        io.fsync_dir(dest)
    if previous is None:
        _write_backup_manifest(io, dest, record)

    leftovers = [n for n in _names(io, sessions_dir) if layout.is_scratch(n)]
    for name in leftovers:
        if name.startswith(layout.TEMP_PREFIX):  # an interrupted backup's build: never whole
            _discard(io, os.path.join(sessions_dir, name))
            continue
        # A previous copy renamed aside by a backup killed before it renamed the new one
        # in: whole (only a removal's trash is removed file by file, and it is named
        # apart), so it is put back.
        aside = _trashed_id(name)
        if aside is not None and not os.path.lexists(os.path.join(sessions_dir, aside)) \
                and _real_folder(os.path.join(sessions_dir, name)):
            io.rename(os.path.join(sessions_dir, name), os.path.join(sessions_dir, aside))
            io.fsync_dir(sessions_dir)
    leftovers = [n for n in _names(io, sessions_dir) if layout.is_scratch(n)]
    copier = _Copier(io, report, store.path)
    gone: set[str] = set()
    for session_id in ids:
        trashed = [os.path.join(sessions_dir, n) for n in leftovers
                   if _trashed_id(n) == session_id]
        copier.references = [os.path.join(sessions_dir, session_id), *trashed,
                             *(os.path.join(root, layout.SESSIONS_DIR, session_id)
                               for root in references)]
        entry = _backup_session(store, copier, sessions_dir, session_id, verify, report,
                                record["sessions"].get(session_id))
        if entry is not None:
            record["sessions"][session_id] = entry
        elif whole and report.failed.get(session_id) == _DELETED and \
                not store.has_session(session_id):
            # Gone from the store: a whole-store backup mirrors that, as for a session
            # deleted before it began (not a failure: the command would exit 1 for
            # every session an agent deletes while a nightly backup runs).
            del report.failed[session_id]
            gone.add(session_id)
    ids = [i for i in ids if i not in gone]
    if whole:
        for name in _names(io, sessions_dir):
            if name not in ids and not layout.is_scratch(name) and os.path.isdir(
                    os.path.join(sessions_dir, name)):
                _remove(io, sessions_dir, name)
                record["sessions"].pop(name, None)
                report.removed.append(name)
        for name in list(record["sessions"]):
            if name not in ids:
                record["sessions"].pop(name)
        _copy_workspaces(io, store.path, dest)
    for name in _names(io, sessions_dir):
        if name.startswith(layout.TRASH_PREFIX):
            _discard(io, os.path.join(sessions_dir, name))
    record.update(complete=report.complete, finished=_now())
    _write_backup_manifest(io, dest, record)
    report.sessions = len(report.heads)
    report.seconds = round(time.monotonic() - started, 6)
    return report


def _stamps(io: FileIO, path: str) -> tuple[str, int]:
    """A fingerprint of a folder: a hash of the ``lstat`` stamps (name, mode, mtime, size,
    inode) of every name in it, as the stats cache takes them (FORMAT 7.7) but without
    link counts, which change when another name of a file goes (an earlier backup
    deleted, a fork's copy rebuilt); and its newest mtime (ns). ("", 0) when it is gone."""
    import hashlib
    try:
        stamps = sorted(stamp[:5] for stamp in io.stamps(path))
    except FileNotFoundError:
        return "", 0
    digest = hashlib.blake2b(repr(stamps).encode(), digest_size=16).hexdigest()
    return digest, max(stamp[2] for stamp in stamps)


def _unchanged(io: FileIO, source: str, copy: str, entry: Any) -> tuple[str, int] | None:
    """Whether the session's copy in DEST is still what the last backup made of the
    session as it still is: both folders' fingerprints are the ones recorded then. Returns
    the source's fingerprint and newest mtime when it is not (None when it is)."""
    stamps = _stamps(io, source)
    if (isinstance(entry, dict) and isinstance(entry.get("fingerprints"), list)
            and entry["fingerprints"] == [stamps[0], _stamps(io, copy)[0]]
            and stamps[0]):
        return None
    return stamps


def _backup_session(store: Store, copier: _Copier, sessions_dir: str, session_id: str,
                    verify: bool, report: BackupReport,
                    entry: Any = None) -> dict[str, Any] | None:
    """Copy one session into DEST and put it in place; its manifest entry, or None when
    it was not backed up (named in ``report.failed``). A session whose folder and copy
    did not change since the last backup (``entry``, its record) is left as it is."""
    from .chain_session import unchecked_reader
    io = store.io
    source = layout.session_dir(store.path, session_id)
    final = os.path.join(sessions_dir, session_id)
    started = time.time_ns()
    stamps = _unchanged(io, source, final, entry)
    if stamps is None:
        report.unchanged += 1
        report.heads[session_id] = int(entry["head"])
        return dict(entry)
    why = ""
    for _attempt in range(ATTEMPTS):
        temp = os.path.join(sessions_dir, f"{layout.TEMP_PREFIX}{session_id}-"
                                          f"{secrets.token_hex(4)}")
        io.mkdir(temp)
        copier.root = temp
        copier.unsynced.clear()
        try:
            copy = _SessionCopy(io, copier, source, temp)
            copy.run()
            # The check: the copy's log ends where the copy was cut.
            head = unchecked_reader(io, layout.log_dir(temp)).tail().head
            if head != copy.head:
                raise CorruptionError(f"the copy's log ends at seq {head}, not at the "
                                      f"{copy.head} copied", path=layout.log_dir(temp))
            if verify:
                from .session_reader import SessionReader
                reader = SessionReader(io, temp, session_id, chain_key=store.chain_key)
                problems = [f for f in reader.verify() if f.level == "problem"]
                if problems:
                    raise CorruptionError(f"the copy does not verify: {problems[0]}",
                                          path=temp)
        except (_Changed, FileNotFoundError) as exc:
            # a file listed went away before it was read (a clear, a dropped collection)
            io.rmtree(temp)
            why = " ".join(str(exc).split())
            continue
        except SessionNotFound:
            io.rmtree(temp)
            report.failed[session_id] = _DELETED
            return None
        except (FsStoreError, OSError) as exc:
            io.rmtree(temp)
            report.failed[session_id] = " ".join(str(exc).split())
            return None
        except BaseException:
            io.rmtree(temp)
            raise
        files = _tally(io, temp)
        _put_in_place(io, sessions_dir, session_id, temp)
        copier.moved[temp] = os.path.join(sessions_dir, session_id)
        report.heads[session_id] = copy.head
        made = {"head": copy.head, "log_start": copy.log_start, "backed_up": _now(),
                "files": files}
        # Recorded only when no file of the session changed in the QUIET_NS before the
        # backup began: a change in the same tick of the file system's clock as the
        # stamp before it would leave the stamp as it was (the stats cache's rule).
        if stamps[0] and stamps[1] < started - QUIET_NS:
            made["fingerprints"] = [stamps[0], _stamps(io, final)[0]]
        return made
    report.failed[session_id] = f"its files kept changing under the copy ({why})"
    return None


def _put_in_place(io: FileIO, sessions_dir: str, session_id: str, temp: str) -> None:
    """Replace DEST's copy of the session by ``temp``: the old one renamed aside, the
    new one renamed in, ``sessions/`` fsynced. A crash between the two renames leaves
    the old copy whole under its ``.trash-`` name (and the backup marked incomplete)."""
    final = os.path.join(sessions_dir, session_id)
    if os.path.lexists(final):
        io.rename(final, os.path.join(sessions_dir, layout.trash_name(session_id)))
    io.rename(temp, final)
    io.fsync_dir(sessions_dir)


_DELETED = "deleted while the backup ran"


def _trashed_id(name: str) -> str | None:
    """The session whose previous copy ``.trash-ID-HEX8`` is; None for other names."""
    if not name.startswith(layout.TRASH_PREFIX) or name[-9:-8] != "-":
        return None
    session_id = name[len(layout.TRASH_PREFIX):-9]
    try:
        int(name[-8:], 16)
        return layout.check_session_id(session_id)
    except ValueError:
        return None


def _remove(io: FileIO, sessions_dir: str, name: str) -> None:
    """Remove DEST's copy of a session the store no longer holds. Its trash name is
    not a previous copy's (``.trash-.removed-...``: no session id starts with a dot), so
    a removal cut short is never put back."""
    trash = os.path.join(sessions_dir, layout.trash_name(".removed-" + name))
    io.rename(os.path.join(sessions_dir, name), trash)
    io.fsync_dir(sessions_dir)
    _discard(io, trash)


def _copy_workspaces(io: FileIO, root: str, dest: str) -> None:
    """Mirror the store's workspace files (each replaced atomically when it differs)."""
    source = layout.workspaces_dir(root)
    target = layout.workspaces_dir(dest)
    names = [n for n in _names(io, source) if layout.workspace_ids([n])]
    if not names and not os.path.isdir(target):
        return
    _mkdir(io, target)
    for name in names:
        try:
            data = io.read_file(os.path.join(source, name), 1 << 20)
        except FileNotFoundError:
            continue  # deleted meanwhile
        path = os.path.join(target, name)
        if not os.path.exists(path) or io.read_file(path, 1 << 20) != data:
            io.atomic_write(path, data)
    for name in _names(io, target):
        if name not in names and (layout.workspace_ids([name]) or layout.is_scratch(name)):
            io.unlink(os.path.join(target, name))
    io.fsync_dir(target)
