"""Compaction: a log's sealed segments rewritten zstd-compressed, small ones merged
(docs/FORMAT.md, section 5.5).

A compaction never touches the active (newest) segment, never holds the writer lock,
and never changes a frame: a compacted file holds the very frames of the segments it
replaces, so every seq, checksum and recorded place (a snapshot's position, a row of
the message index) stays valid. It works beside a writer appending in any process, and
beside readers, who see every event once and in order (``log.LogReader.scans``).

Per group of sealed segments it:

1. reads them through the reader (every frame checked) and builds the compacted file
   in the session folder as ``.tmp-compact-HEX8``, outside ``log/`` (whose temp files a
   writer removes at its next rollover);
2. reads that file back, decompressing every chunk, and compares it with the frames it
   was made from; fsyncs it;
3. renames it over the group's first segment (an atomic replace) and fsyncs ``log/``;
4. unlinks the group's other segments, in seq order, and fsyncs ``log/``.

A crash before step 3 leaves the log as it was and a temp file (removed by vacuum). A
crash after it leaves the other segments as *leftovers*: files holding the same frames
as the compacted file that merged them. Readers pass over them; the next compaction
unlinks them; verify lists them as notes. A reader that had a replaced file open keeps
reading it: a file is replaced by rename and unlinked, never written in place. A fork
sharing a segment by hard link keeps its own name for the old file.

A chained session's chain survives as it is: every byte a chain value covers and every
member boundary is kept (each member is one run), the runs are checked before they are
copied, and the file keeps the header uid of the group's first file, which a genesis
binds (FORMAT.md 3.4, 5.5).

Compactions of one session serialise on an ``flock`` of its ``log/`` folder, which a
fork also takes while it links the parent's segments (a fork must not link a file a
compaction is about to unlink).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import layout
from .chain_check import UNCHECKED, ChainRun, check_segment
from .defaults import DEFAULT_LEVEL as DEFAULT_LEVEL  # re-exported: the default lives there
from .defaults import DEFAULT_TARGET_BYTES as DEFAULT_TARGET_BYTES
from .errors import ChainKeyMismatch, ChainKeyRequired, CorruptionError, SessionLocked
from .fsio import FileIO
from .identity import NO_UID
from .log import LogReader
from .log_format import SegmentScan
from .segment_file import SegmentFile, encode_compacted, open_compacted
from .segment_header import SEGMENT_HEADER_SIZE, SegmentHeader, decode_segment_header

TEMP_PREFIX = ".tmp-compact-"


def add_part(total: Any, session_id: str, part: Any, summed: Iterable[str]) -> None:
    """Add the report of one session to a store's ``total`` (a ``CompactReport`` or a
    ``RetainReport``): kept under ``parts``, counted in ``sessions``, and each field
    named in ``summed`` added up."""
    total.parts[session_id] = part
    total.sessions += 1
    for name in summed:
        setattr(total, name, getattr(total, name) + getattr(part, name))


def report_dict(report: Any, fields: Iterable[str], **more: Any) -> dict[str, Any]:
    """A report as plain JSON-ready values: ``fields``, then ``more``, then each
    session's part (``parts``) and the sessions skipped, when there are any."""
    out: dict[str, Any] = {name: getattr(report, name) for name in fields}
    out.update(more)
    if report.parts:
        out["parts"] = {sid: part.to_dict() for sid, part in report.parts.items()}
    if report.skipped:
        out["skipped"] = dict(report.skipped)
    return out


_SUMMED = ("segments_before", "segments_after", "bytes_before", "bytes_after", "plain_bytes",
           "files_written", "leftovers_removed")


@dataclass
class CompactReport:
    """What a compaction did (or, with ``dry_run``, would do), for one session or, summed,
    a store. Bytes are those of the segment files on disk; ``plain_bytes`` the frames
    they hold (what a reader decompresses)."""

    sessions: int = 0
    segments_before: int = 0
    segments_after: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    plain_bytes: int = 0
    files_written: int = 0
    leftovers_removed: int = 0
    seconds: float = 0.0
    dry_run: bool = False
    # per session id (a store's compaction): that session's report
    parts: dict[str, CompactReport] = field(default_factory=dict)
    # sessions a store compaction could not compact, with why (nothing changed in them)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """Bytes before over bytes after (1.0 when nothing changed)."""
        return self.bytes_before / self.bytes_after if self.bytes_after else 1.0

    def add(self, session_id: str, part: CompactReport) -> None:
        add_part(self, session_id, part, _SUMMED)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form: the totals, the ratio, and each session's part."""
        return report_dict(self, ("sessions", *_SUMMED, "seconds", "dry_run"),
                           ratio=round(self.ratio, 3))


@contextlib.contextmanager
def log_folder_lock(log_path: str, timeout: float) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the ``log/`` folder: what compactions of one
    session, and forks of it, serialise on. Waits up to ``timeout`` seconds, then raises
    SessionLocked. The kernel releases it when the process dies."""
    fd = os.open(log_path, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise SessionLocked(
                        f"{log_path}: another compaction or a fork of this session is "
                        f"running; try again when it ends (waited {timeout:g} s)") from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)  # releases the lock


@dataclass
class Source:
    """A sealed segment file as compaction (and a reclaim) sees it."""

    first: int
    disk_bytes: int
    plain_bytes: int  # its frames' bytes
    compacted: bool
    members: tuple[int, ...]  # the segments it holds (itself first)


def compact_log(io: FileIO, reader: LogReader, session_path: str, uid: int = NO_UID, *,
                target_bytes: int = DEFAULT_TARGET_BYTES, level: int = DEFAULT_LEVEL,
                dry_run: bool = False, lock_timeout: float = 0.0) -> CompactReport:
    """Compact the sealed segments of the log ``reader`` reads (see the module's
    docstring), and return what it did. ``uid`` is the session's (written into the
    compacted headers). With ``dry_run`` nothing is written: the report counts the
    files it would write and their plain bytes, not their compressed size."""
    started = time.monotonic()
    report = CompactReport(dry_run=dry_run)
    with log_folder_lock(reader.path, lock_timeout):
        sources, leftovers = sealed_sources(reader)
        files = reader.list_segments()
        report.segments_before = len(files)
        report.bytes_before = sum(io.file_size(reader.segment_path(s)) for s in files)
        report.segments_after = len(files)
        report.bytes_after = report.bytes_before
        if not dry_run:
            for first in leftovers:  # of a compaction that was interrupted
                _unlink(io, reader.segment_path(first))
            if leftovers:
                io.fsync_dir(reader.path)
        report.leftovers_removed = len(leftovers)
        report.segments_after -= len(leftovers)
        report.bytes_after -= sum(io.file_size(reader.segment_path(s)) for s in leftovers
                                  ) if dry_run else 0
        for group in _groups(sources, target_bytes):
            if len(group) == 1 and group[0].compacted:
                continue
            report.files_written += 1
            report.plain_bytes += sum(source.plain_bytes for source in group)
            report.segments_after -= len(group) - 1
            if dry_run:
                continue
            written = _compact_group(io, reader, session_path, group, uid, level)
            report.bytes_after += written - sum(source.disk_bytes for source in group)
        if not dry_run:
            report.bytes_after = sum(io.file_size(reader.segment_path(s))
                                     for s in reader.list_segments())
            report.segments_after = len(reader.list_segments())
    report.seconds = round(time.monotonic() - started, 6)
    return report


def sealed_sources(reader: LogReader) -> tuple[list[Source], list[int]]:
    """The sealed segment files of the live log (every one but the newest), and the
    leftovers among them: files of segments already merged into a compacted file."""
    segments, log_start = reader.live_segments()
    sources: list[Source] = []
    leftovers: list[int] = []
    merged: set[int] = set()
    base = reader.base_of(log_start)
    dropped = log_start if base is None else base.seq  # files up to it: retention's
    for first in segments[:-1]:
        if first in merged or log_start < first <= dropped:
            leftovers.append(first)
            continue
        with reader.open_segment(first) as segment:
            members = _members(segment)
            sources.append(Source(first, reader.io.file_size(segment.path),
                                   segment.size - SEGMENT_HEADER_SIZE, segment.compacted,
                                   members))
        merged.update(members[1:])
    return sources, leftovers


def _members(segment: SegmentFile) -> tuple[int, ...]:
    if segment.tables is None:
        return (segment.first_seq,)
    return tuple(member.first_seq for member in segment.tables.members)


def _groups(sources: list[Source], target_bytes: int) -> list[list[Source]]:
    """Consecutive sealed segments merged while they fit in ``target_bytes`` together:
    a segment as large as the target stays alone (and is only compressed)."""
    groups: list[list[Source]] = []
    for source in sources:
        if source.plain_bytes == 0:
            groups.append([])  # an empty segment (no writer seals one) ends a run
        elif groups and groups[-1] and sum(
                s.plain_bytes for s in groups[-1]) + source.plain_bytes <= target_bytes:
            groups[-1].append(source)
        else:
            groups.append([source])
    return [group for group in groups if group]


def _compact_group(io: FileIO, reader: LogReader, session_path: str, group: list[Source],
                   uid: int, level: int) -> int:
    """Write one compacted file for ``group`` and put it in place; return its size."""
    return write_group(io, reader, session_path, group, group_members(reader, group), uid,
                       level)


def group_members(reader: LogReader, group: list[Source]) -> list[tuple[int, bytes]]:
    """The frames of the segments ``group``'s files hold, as (first seq, frames) in seq
    order, every frame checked and the seqs continuous across the group."""
    members: list[tuple[int, bytes]] = []
    expect = group[0].first
    before: ChainRun | None = None  # the chain of the file before, in the group
    for source in group:
        buf, header = reader.load_segment(source.first)
        path = reader.segment_path(source.first)
        # A chained log's runs checked (each member's, and the links across the group)
        # before their bytes are copied: the compacted file keeps every chain value, and
        # a compaction must not give a forged record a new file to hide in.
        chain = _checked_chain(reader, buf, path, header, source, before)
        # every frame checked, and the seqs continuous across the group
        scan = SegmentScan(buf, path, expect, False, after_seq=2**64,
                           synced_end=header.synced_end, members=source.members[1:],
                           chain=chain,
                           allow_base=source.first == header.log_start
                           and reader.base_of(source.first) is not None)
        for _ in scan:
            pass
        if scan.end != len(buf.rstrip(b"\0")) or scan.expect_seq == expect:
            raise CorruptionError("sealed segment does not end in a whole record; it is "
                                  "not compacted (run fsstore verify)", path=path,
                                  offset=scan.end)
        starts = source.members
        offsets = _member_offsets(reader, source, buf)
        for index, member_first in enumerate(starts):
            end = offsets[index + 1] if index + 1 < len(offsets) else scan.end
            members.append((member_first, bytes(buf[offsets[index]:end])))
        expect, before = scan.expect_seq, chain
    return members


def _checked_chain(reader: LogReader, buf: bytes, path: str, header: SegmentHeader,
                   source: Source, before: ChainRun | None) -> ChainRun | None:
    """The chain of ``source`` (its bytes ``buf``) checked, continuing ``before``; None
    for a log without a chain. Without a keyed chain's key the runs cannot be checked:
    they are taken as they are (``UNCHECKED``: checksums still checked), which is sound
    because a compaction copies every byte a chain value covers and every member
    boundary unchanged, so each run verifies (or fails) afterwards exactly as before."""
    rules = reader.chain
    if rules is None:
        return None
    try:
        return check_segment(rules, [buf], 0, path=path, header=header,
                             first_seq=source.first, members=source.members[1:],
                             is_last=False, before=before)
    except (ChainKeyRequired, ChainKeyMismatch):
        return UNCHECKED


def write_group(io: FileIO, reader: LogReader, session_path: str, group: list[Source],
                members: list[tuple[int, bytes]], uid: int, level: int = DEFAULT_LEVEL
                ) -> int:
    """Steps 1 to 4 of the module's docstring for ``members`` (the frames of ``group``,
    or a reclaim's rewrite of them, ``reclaim.py``): the compacted file written in the
    session folder, read back and compared, renamed over the group's first file; then
    the group's other files unlinked. Returns the new file's size."""
    temp, size = stage_group(io, reader, session_path, group, members, uid, level)
    install_group(io, reader, group, temp)
    return size


def stage_group(io: FileIO, reader: LogReader, session_path: str, group: list[Source],
                members: list[tuple[int, bytes]], uid: int, level: int = DEFAULT_LEVEL
                ) -> tuple[str, int]:
    """Steps 1 and 2 of :func:`write_group`: the compacted file of ``members`` written
    to a temp file in the session folder and read back; returns its path and size."""
    first = group[0].first
    header = reader.read_header(first)
    log_start = header.log_start
    if reader.chain is not None:
        # a chain's genesis binds the uid in the header of the file the log starts with
        # (an ancestor's, in a fork sharing its parent's first file): kept, so that the
        # first member still anchors where it did
        uid = header.uid
    data = encode_compacted(first, log_start, uid, members, level)
    import secrets  # here: it loads OpenSSL (hashlib), which readers never need

    temp = os.path.join(session_path, TEMP_PREFIX + secrets.token_hex(4))
    io.write_new(temp, data)
    try:
        _verify_written(io, temp, first, members)
    except BaseException:
        _unlink(io, temp)
        raise
    return temp, len(data)


def install_group(io: FileIO, reader: LogReader, group: list[Source], temp: str) -> None:
    """Steps 3 and 4 of :func:`write_group`: the staged file ``temp`` renamed over the
    group's first file, then the group's other files unlinked."""
    try:
        io.rename(temp, reader.segment_path(group[0].first))
    except BaseException:
        _unlink(io, temp)
        raise
    io.fsync_dir(reader.path)
    # The compacted file holds them now: unlink the others, in seq order (a reader that
    # finds the next one gone while the one it read is still there takes it that the
    # log ends: LogReader.goes_on).
    for source in group[1:]:
        _unlink(io, reader.segment_path(source.first))
    if len(group) > 1:
        io.fsync_dir(reader.path)


def discard_staged(io: FileIO, temp: str) -> None:
    """Remove a file :func:`stage_group` staged and that will not be put in place."""
    _unlink(io, temp)


def _member_offsets(reader: LogReader, source: Source, buf: bytes) -> list[int]:
    """Where each segment held by ``source`` starts in its bytes."""
    if not source.compacted:
        return [SEGMENT_HEADER_SIZE]
    with reader.open_segment(source.first) as segment:
        assert segment.tables is not None
        return [member.start for member in segment.tables.members]


def _verify_written(io: FileIO, path: str, first: int, members: list[tuple[int, bytes]]
                    ) -> None:
    """Read a compacted file back as a reader will, and compare it with its source."""
    fd = io.open(path, os.O_RDONLY)
    header = decode_segment_header(io.pread(fd, SEGMENT_HEADER_SIZE, 0), path)
    with open_compacted(io, fd, path, header, first, None) as segment:
        plain = segment.read_all()[SEGMENT_HEADER_SIZE:]
        held = tuple(m.first_seq for m in segment.tables.members) if segment.tables else ()
    if plain != b"".join(frames for _, frames in members) or held != tuple(
            member for member, _ in members):
        raise CorruptionError("the compacted file does not read back as the segments it "
                              "was made from; nothing was replaced", path=path)




def _unlink(io: FileIO, path: str) -> None:
    # the one place compaction removes a file: tests stop it here to leave leftovers
    io.unlink_if_there(path)


def is_compaction_temp(name: str) -> bool:
    """A compaction's temp file in a session folder (``.tmp-compact-HEX8``)."""
    return name.startswith(TEMP_PREFIX) and layout.is_scratch(name)
