"""Reading the segmented append log: a session's authoritative history.

A :class:`LogReader` finds a log's segments (the newest segment header says where the
log starts), reads them forwards one at a time (:meth:`LogReader.events`) or from the end
(:meth:`LogReader.last_events`), finds the end of the log without scanning the history
(:meth:`LogReader.tail`), and checks the whole log (:meth:`LogReader.check`). It takes
no locks and reads alongside a writer in any process.

The frame format and the parse of one segment's bytes are in ``log_format.py``, the
segment header in ``segment_header.py``, the writer in ``log_writer.py``; docs/FORMAT.md
has the grammar and the damage rules.

Damage never reads as a shorter or another history: the header (``segment_header.py``)
names the session that wrote the segment and carries a synced mark, which a barrier
moves after its fdatasync, so that synced records gone missing are reported; damage
followed by a valid frame of a later seq, at any byte offset, is corruption, not a torn
tail; and the oldest segment must start at the log start.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import heapq
import itertools
import math
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, NamedTuple

from . import chain_check, chain_reads, frame_reads, layout
from .errors import CorruptionError, Finding, FormatVersionError, FsStoreError
from .frame_reads import Frame
from .fsio import FileIO
from .identity import Identity
from .log_format import (
    _FRAME_HEADER,
    _U32,
    BASE_FRAMES,
    FRAME_HEADER_SIZE,
    MAX_FRAME_PAYLOAD,
    MAX_SEGMENT_FILE,
    TRAILER_SIZE,
    Base,
    Event,
    SegmentScan,
    _parse_frame,
    _tail_of,
    decode_base,
    decode_payload,
    frame_end,
)
from .segment_file import (
    ChunkCache,
    LoadedSegment,
    SegmentFile,
    decompress_chunks,
    open_compacted,
    read_ahead,
)
from .segment_header import (
    SEGMENT_HEADER_SIZE,
    SegmentHeader,
    check_synced,
    decode_segment_header,
)
from .tail_hint import mark_binds, read_tail_hint

if TYPE_CHECKING:
    from concurrent.futures import Future

    from .chain_check import ChainRules, ChainRun

#: How many files back a segment merged into a compacted file is looked for.
_MERGE_LOOKBACK = 1024
#: How many compacted segments a replay decompresses ahead, in a thread, of the one it reads.
READ_AHEAD = 2
#: How often ``LogReader.last_events`` starts again when a clear removes what it reads.
_REREADS_AFTER_CLEAR = 3


class SegmentEnd(NamedTuple):
    """Where a segment's good data ends: the offset after its last good frame, the seq
    after that frame's last event, and that event's (ts, turn, kind), None if empty."""

    end: int
    next_seq: int
    last: tuple[float, int, str] | None


class LogPosition(NamedTuple):
    """A frame boundary: byte ``offset`` of the segment whose first seq is ``segment``,
    and the crc field of the frame that ends there (0 at the start of a segment).
    Snapshots record the position after the last event they cover: loading one reads
    only the log after it, and the crc proves the log still holds what it was folded
    from."""

    segment: int
    offset: int
    frame_crc: int = 0


class LogTail(NamedTuple):
    """What the end of a log says, read without scanning the history."""

    head: int  # last seq written; log_start - 1 when the log is empty
    log_start: int  # first seq of the log (moves forward on clear)
    last_ts: float | None
    last_turn: int | None
    last_kind: str | None

    @property
    def event_count(self) -> int:
        return self.head - self.log_start + 1


class LogReader:
    """Reads a session's log without locks, alongside a writer in any process.

    What it returns is always a prefix of what was written: a batch being written is
    invisible until all of it is there, because its checksum covers all of it.
    """

    def __init__(self, io: FileIO, path: str, identity: Identity | None = None) -> None:
        self.io = io
        self.path = path
        # The session's uid and the uids it accepts (None: a session from before uids, or
        # a log that is not a session's, such as a collection's write-ahead log).
        self.identity = identity
        self.chain: ChainRules | None = None  # the session's chain (FORMAT.md 3.4), if any
        self.vouched = chain_reads.RunCache()  # runs checked by reads at known places
        self._first_turns: dict[int, int | None] = {}
        self._chunks = ChunkCache()  # decompressed chunks of compacted segments
        self._merged_into: dict[int, int] = {}  # merged segment -> its compacted file
        # the base of the log start's file, by that file's identity (FORMAT.md 3.3)
        self._bases: dict[int, tuple[tuple[int, ...], Base | None]] = {}

    def segment_path(self, first_seq: int) -> str:
        return os.path.join(self.path, layout.segment_name(first_seq))

    def list_segments(self) -> list[int]:
        """First seqs of the segment files present, sorted, including any a clear left."""
        try:
            names = self.io.listdir(self.path)
        except FileNotFoundError:
            raise CorruptionError("the log folder is missing", path=self.path) from None
        firsts = layout.segment_seqs(names)
        if not firsts:
            raise CorruptionError("the log folder holds no segment", path=self.path)
        return firsts

    def checked_header(self, raw: bytes, first_seq: int, path: str) -> SegmentHeader:
        """Decode a segment's header and check it against the file's name and place: its
        first seq is the one in its name, and it was written by this session or one it
        descends from (its uid, section 3.1)."""
        header = decode_segment_header(raw, path)
        if header.first_seq != first_seq:
            raise CorruptionError(f"segment header says first seq {header.first_seq}, its "
                                  "name says otherwise", path=path, offset=0)
        if self.identity is not None and header.has_uid:
            self.identity.check(header.uid, "segment", path)
        return header

    def read_header(self, first_seq: int) -> SegmentHeader:
        path = self.segment_path(first_seq)
        fd = self.io.open(path, os.O_RDONLY)
        try:
            raw = self.io.pread(fd, SEGMENT_HEADER_SIZE, 0)
            return self.binding_mark(self.checked_header(raw, first_seq, path),
                                     self.io.size(fd), path)
        finally:
            self.io.close(fd)

    def binding_mark(self, header: SegmentHeader, size: int, path: str) -> SegmentHeader:
        """``header`` with the synced mark the segment at ``path`` is held to, ``size``
        being the bytes its file holds. A mark past the end of the file binds in the
        folder its writer wrote (there, synced records were lost); in a copy it claims
        nothing, since a copy tool that sized the file before it read the header
        (``tar``, ``rsync``, ``git add``) copies a mark newer than the frames it copied
        (docs/FORMAT.md, 3.1), and nor does it in a copy a writer took since the header
        was read (``mark_binds``)."""
        if header.synced_end <= size or mark_binds(self.io, self.path, path):
            return header
        return dataclasses.replace(header, synced_end=0)

    def live_segments(self) -> tuple[list[int], int]:
        """The segments of the log as the newest segment header defines it, and log_start.
        Segments before log_start are what an interrupted clear left behind. Raises
        CorruptionError when the oldest live segment does not start at log_start: the
        segments before it are missing."""
        for _attempt in range(2):
            firsts = self.list_segments()
            log_start = self.read_header(firsts[-1]).log_start
            live = [s for s in firsts if s >= log_start]
            if live[0] == log_start:
                return live, log_start
            # A clear renames its segment in before it unlinks the old ones, so a listing
            # taken while it unlinks can miss both: look once more before calling it damage.
        raise CorruptionError(
            f"the log starts at seq {log_start} (so its newest segment's header says), but "
            f"its oldest segment starts at seq {live[0]}: the segments holding seqs "
            f"{log_start} to {live[0] - 1} are missing; restore them from a backup (a "
            "folder copied while its session was cleared or compacted misses them too: "
            "copy it again, or copy with fsstore backup)",
            path=self.segment_path(live[0]), offset=0)

    def open_segment(self, first_seq: int) -> SegmentFile:
        """The segment ``first_seq`` opened for reading, its header checked (against its
        name and this session's identity): a plain segment file, a compacted one, or
        the part of a compacted file that a compaction merged that segment into (from
        that segment's first frame to the end of the file). FileNotFoundError when no
        file holds it (a clear removed it)."""
        path = self.segment_path(first_seq)
        try:
            fd = self.io.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return self._open_merged(first_seq)
        return self._open_fd(fd, path, first_seq, first_seq)

    def _open_fd(self, fd: int, path: str, file_first: int, first_seq: int) -> SegmentFile:
        try:
            header = self.binding_mark(
                self.checked_header(self.io.pread(fd, SEGMENT_HEADER_SIZE, 0),
                                    file_first, path), self.io.size(fd), path)
            if header.compacted:
                return open_compacted(self.io, fd, path, header, first_seq, self._chunks)
            if first_seq != file_first:
                raise FileNotFoundError(f"{path} holds no segment {first_seq}")
            return SegmentFile(self.io, fd, path, header, first_seq)
        except BaseException:
            self.io.close(fd)
            raise

    def holds_segment(self, first_seq: int) -> bool:
        """Whether the log still holds segment ``first_seq``: as a file, or merged into a
        compacted one (remembered, so that a check costs two ``lstat`` calls)."""
        if self.io.exists(self.segment_path(first_seq)):
            return True
        holder = self._merged_into.get(first_seq)
        if holder is not None and self.io.exists(self.segment_path(holder)):
            return True
        try:
            with self.open_segment(first_seq) as segment:
                self._merged_into[first_seq] = segment.header.first_seq
        except FileNotFoundError:
            return False
        return True

    def file_place(self, segment: int) -> tuple[int, int]:
        """Where segment ``segment`` is: the first seq of the compacted file a compaction
        merged it into (even while its own file is still there, a leftover) and what to
        add to an offset in it to get one in that file's logical bytes; else itself and
        0. The same for every place naming one frame, merged or not (FORMAT.md 3.2)."""
        try:
            with self._open_merged(segment) as holder:
                return holder.header.first_seq, holder.file_offset(0)
        except FileNotFoundError:
            return segment, 0

    def _open_merged(self, first_seq: int) -> SegmentFile:
        """A segment a compaction merged into the compacted file before it: the file
        named after the greatest first seq below ``first_seq`` holds it, if any does."""
        try:
            firsts = [s for s in layout.segment_seqs(self.io.listdir(self.path))
                      if s < first_seq]
        except FileNotFoundError:
            firsts = []
        # Plain files between the compacted file and this segment are leftovers of the
        # same merge (a compaction interrupted before it unlinked them): look past them.
        for holder in reversed(firsts[-_MERGE_LOOKBACK:]):
            path = self.segment_path(holder)
            try:
                fd = self.io.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # unlinked meanwhile: a leftover
            try:
                compacted = self.checked_header(self.io.pread(fd, SEGMENT_HEADER_SIZE, 0),
                                                holder, path).compacted
            except BaseException:
                self.io.close(fd)
                raise
            if compacted:
                return self._open_fd(fd, path, holder, first_seq)
            self.io.close(fd)
        raise FileNotFoundError(f"{self.segment_path(first_seq)}: no such segment")

    def history_base(self) -> Base | None:
        """The base frame the log starts with (FORMAT.md 3.3): where retention dropped
        the history before it, with the state image there; None when nothing was
        dropped. Read from the log start's file once per file (cached by its identity)."""
        return self.base_of(self.live_segments()[1])

    def base_of(self, log_start: int) -> Base | None:
        """The base at the start of the file named ``log_start`` (see history_base)."""
        try:
            segment = self.open_segment(log_start)
        except FileNotFoundError:
            return None
        with segment:
            if not (segment.starts_with_base
                    and _may_hold_base(segment.header, segment.first_seq)):
                return None  # known from the member table: nothing decompressed
            key = (segment.io.size(segment.fd), *segment.identity)
            cached = self._bases.get(log_start)
            if cached is not None and cached[0] == key:
                return cached[1]
            fields = segment.pread(FRAME_HEADER_SIZE, SEGMENT_HEADER_SIZE)
            if (len(fields) < FRAME_HEADER_SIZE
                    or _FRAME_HEADER.unpack(fields)[4] not in BASE_FRAMES):
                raise CorruptionError("compacted segment's member table says it starts "
                                      "with a base record, but it does not",
                                      path=segment.path, offset=SEGMENT_HEADER_SIZE)
            length, frame_type = _FRAME_HEADER.unpack(fields)[1], _FRAME_HEADER.unpack(fields)[4]
            size = frame_end(0, length, frame_type)
            raw = segment.pread(min(size, segment.size), SEGMENT_HEADER_SIZE)
            frame = _parse_frame(raw, memoryview(raw), 0, len(raw))
            if frame is None or frame.first_seq != log_start:
                raise CorruptionError("damaged record in a sealed segment",
                                      path=segment.path, offset=SEGMENT_HEADER_SIZE)
            base = Base(log_start + frame.event_count - 1,
                        decode_base(frame.payload, segment.path, SEGMENT_HEADER_SIZE),
                        segment.path, SEGMENT_HEADER_SIZE)
            self._bases[log_start] = (key, base)
            return base

    def forget_first_turn(self, first_seq: int) -> None:
        """Drop the cached first turn of segment ``first_seq``: retention replaced its
        first record by a base frame."""
        self._first_turns.pop(first_seq, None)

    def read_segment(self, first_seq: int) -> bytes:
        return self.load_segment(first_seq)[0]

    def raw_segment(self, first_seq: int) -> bytes:
        """The bytes of the segment file named ``first_seq`` as they are on disk
        (compressed, for a compacted one): what a copy of the file holds."""
        path = self.segment_path(first_seq)
        return self.io.read_file(path, MAX_SEGMENT_FILE)

    def load_segment(self, first_seq: int) -> tuple[bytes, SegmentHeader]:
        """A whole segment and its checked header: for a compacted segment, its logical
        bytes (the header, then its frames as a plain segment holds them). One read of a
        plain file: the header comes first in it, so its synced mark never claims more
        than the frames read after it hold (a writer writes the mark only after the
        frames are synced)."""
        with self.open_segment(first_seq) as segment:
            return self._load(segment)

    def _load(self, segment: SegmentFile) -> tuple[bytes, SegmentHeader]:
        if segment.size > MAX_SEGMENT_FILE:
            raise CorruptionError(f"segment file of {segment.size} bytes is larger than any "
                                  "writer makes; it is not read", path=segment.path)
        buf = segment.read_all()
        if segment.compacted:
            return buf, segment.scan_header
        # the header as read with the frames (its mark), not as read before them
        return buf, self.binding_mark(
            self.checked_header(buf, segment.first_seq, segment.path), len(buf),
            segment.path)

    def scan_segment(self, first_seq: int, is_last: bool, after_seq: int = 0,
                     until_seq: float = math.inf, marker: bytes | None = None,
                     loaded: LoadedSegment | None = None, before: ChainRun | None = None,
                     hashed: Future[tuple[bytes, int, int] | None] | None = None) -> SegmentScan:
        """A scan of one whole segment, checked against its header's synced mark and its
        chain (continuing ``before``, chain_check.py). A compacted segment is sealed: it
        never ends in a torn tail."""
        loaded = loaded or self._load_whole(first_seq)
        buf, header, members, path, base_first, more, origin = loaded
        is_last = is_last and not header.compacted
        chain = chain_check.check_loaded(self.chain, loaded, first_seq, is_last, before,
                                         hashed)
        scan = SegmentScan(buf, path, first_seq, is_last, after_seq, until_seq, marker=marker,
                           synced_end=header.synced_end, members=members, chain=chain,
                           allow_base=base_first and _may_hold_base(header, first_seq),
                           origin=origin, more=more)
        scan.compacted = header.compacted
        return scan

    def _load_whole(self, first_seq: int) -> LoadedSegment:
        with self.open_segment(first_seq) as segment:
            if segment.compacted:
                packed = segment.read_packed()
                return LoadedSegment.compacted(segment, packed, decompress_chunks(packed))
            buf, header = self._load(segment)
            return LoadedSegment(buf, header, (), segment.path)

    def _read_ahead(self, first_seq: int) -> Future[LoadedSegment] | None:
        """Segment ``first_seq``, when compacted, read here and decompressed in a thread
        (``read_ahead``); None when it is not compacted, or cannot be read: then it is
        read when it is wanted, and what that raises is raised."""
        try:
            with self.open_segment(first_seq) as segment:
                return read_ahead(segment) if segment.compacted else None
        except (OSError, FsStoreError):
            return None

    def _hash_ahead(self, first_seq: int, hashing: dict[int, tuple[
            LoadedSegment, Future[tuple[bytes, int, int] | None] | None]]) -> None:
        """Read segment ``first_seq`` of a chained log here and hash its run in the
        prefetch thread, while the caller reads the one before it. Not when it cannot be
        read: then it is read when it is wanted, and what that raises is raised."""
        try:
            loaded = self._load_whole(first_seq)
        except (OSError, FsStoreError):
            return
        hashing[first_seq] = (loaded, chain_check.hash_ahead(self.chain, loaded))

    def newest_segments(self) -> tuple[list[int], int]:
        """The newest one or two live segments and log_start, without parsing every name:
        segment names are fixed-width and zero-padded, so the largest names are the newest
        segments."""
        names = [name for name in self.io.listdir(self.path) if layout.is_segment_name(name)]
        firsts = layout.segment_seqs(heapq.nlargest(2, names))
        if not firsts:
            raise CorruptionError("the log folder holds no segment", path=self.path)
        log_start = self.read_header(firsts[-1]).log_start
        return [s for s in firsts if s >= log_start], log_start

    def tail(self) -> LogTail:
        """Head, log start and the last event's ts, turn and kind, in O(1)."""
        newest, log_start, end = self.locate_tail()
        end = chain_reads.vouched_tail(self, newest, end)  # (its chain value, checked)
        return LogTail(end.next_seq - 1, log_start, *(end.last or (None, None, None)))

    def locate_tail(self) -> tuple[int, int, SegmentEnd]:
        """The newest segment, log_start, and where that segment's good data ends (with
        the log's last event, which is in the segment before when the newest is empty).

        The newest segment is the one ``tail.hint`` names when the hint holds: a segment
        is always created under the seq after the last one written, so the hinted segment
        is the newest exactly when no segment is named after its own last seq. Otherwise
        (no hint, a stale or unreadable one, an empty newest segment) the folder is
        listed.
        """
        hinted = self.hinted_segment()
        if hinted is not None:
            try:
                log_start = self.read_header(hinted).log_start
                end = self.segment_end(hinted)
            except FileNotFoundError:
                pass  # removed by a clear: the hint is stale
            else:
                if end.next_seq > hinted and not self.io.exists(
                        self.segment_path(end.next_seq)):
                    return hinted, log_start, end
        segments, log_start = self.newest_segments()
        end = self.segment_end(segments[-1])
        if end.last is None and len(segments) > 1:
            # the newest segment is still empty (a crash can fall between creating a
            # segment and writing its first frame): the last event is in the one before
            end = end._replace(last=self.segment_end(segments[-2]).last)
        return segments[-1], log_start, end

    def hinted_segment(self) -> int | None:
        """The segment ``tail.hint`` names, None when it names none (missing, unreadable)."""
        hint = read_tail_hint(self.io, self.path)
        return None if hint is None else hint.segment

    def segment_end(self, first_seq: int) -> SegmentEnd:
        """Where a segment's good data ends, found from the end of its data when that end
        is a whole frame (the common case), else by walking the segment from its start."""
        # The header first (open_segment reads it): its synced mark then never claims
        # more than what is read after it holds (a writer marks only frames already synced).
        with self.open_segment(first_seq) as segment:
            path, header = segment.path, segment.scan_header
            if segment.size > MAX_SEGMENT_FILE:
                raise CorruptionError("segment file is larger than any writer makes; it is "
                                      "not read", path=path)
            data_end = segment.data_end()
            if data_end <= SEGMENT_HEADER_SIZE:
                check_synced(SEGMENT_HEADER_SIZE, header.synced_end, path)
                return SegmentEnd(SEGMENT_HEADER_SIZE, first_seq, None)
            if data_end % 8 == 0 and data_end >= header.synced_end:
                (frame_size,) = _U32.unpack(segment.pread(4, data_end - TRAILER_SIZE))
                start = data_end - frame_size
                if start >= SEGMENT_HEADER_SIZE and start % 8 == 0:
                    raw = segment.pread(frame_size, start)
                    frame = _parse_frame(raw, memoryview(raw), 0, len(raw))
                    if frame is not None and frame.first_seq >= first_seq:
                        return SegmentEnd(data_end, frame.first_seq + frame.event_count,
                                          _tail_of(frame._replace(offset=start), path))
        return self.walked_end(first_seq)

    def walked_end(self, first_seq: int) -> SegmentEnd:
        """Where a segment's good data ends, found by walking it from its start."""
        scan = self.scan_segment(first_seq, is_last=True)
        for _ in scan:
            pass
        last = scan.last
        return SegmentEnd(scan.end, scan.expect_seq,
                          None if last is None else (last.ts, last.turn, last.kind))

    def scans(self, after_seq: int = 0, until_seq: float = math.inf,
              marker: bytes | None = None) -> Iterator[SegmentScan]:
        """A scan of each live segment from the one holding ``after_seq + 1`` on. Each must
        be iterated to its end before the next is asked for (seqs are checked across).

        A compaction may merge segments while they are read: a segment whose file is
        gone is read from the compacted file that holds it now, and a file of a segment
        merged into the one just read (left by a compaction that was interrupted, or that
        is still unlinking them) holds frames already read, and is passed over."""
        segments, log_start = self.live_segments()
        index = max(bisect.bisect_right(segments, max(after_seq + 1, log_start)) - 1, 0)
        if index > 0:
            # Files of history that retention dropped may still be there (a retention
            # interrupted before it unlinked them): start after the base, not in them.
            base = self.base_of(log_start)
            if base is not None and after_seq < base.seq:
                after_seq = base.seq
                index = max(bisect.bisect_right(segments, after_seq + 1) - 1, 0)
        expect = segments[index]
        merged: tuple[int, ...] = ()
        passed_over = False  # the file just read was compacted: lower files are leftovers
        before: ChainRun | None = None  # the chain of the segment just read
        ahead: dict[int, Future[LoadedSegment]] = {}  # segments being read ahead
        # the next plain segment of a chained log, read, its run being hashed ahead
        hashing: dict[int, tuple[LoadedSegment, Future[tuple[bytes, int, int] | None] | None]] = {}
        for position in range(index, len(segments)):
            first = segments[position]
            if first > until_seq or expect > until_seq:
                return
            if _passed_over(first, expect, merged, passed_over):
                ahead.pop(first, None)  # a leftover read ahead: its frames were read
                hashing.pop(first, None)
                continue
            if first != expect:
                raise CorruptionError(
                    f"segment starts at seq {first} but the one before ends at seq {expect - 1}",
                    path=self.segment_path(first), offset=0)
            try:
                loaded, hashed = hashing.pop(first, None) or (
                    _collect(ahead.pop(first, None)), None)
                scan = self.scan_segment(first, position == len(segments) - 1, after_seq,
                                         until_seq, marker, loaded=loaded, before=before,
                                         hashed=hashed)
            except FileNotFoundError:
                # Cleared by the writer meanwhile (what was read is a prefix), or dropped
                # by a retention: then the log goes on after its base.
                base = self.base_of(log_start) if first > log_start else None
                if base is None or base.seq < first:
                    return
                expect, merged, passed_over, before = base.seq + 1, (), True, None
                continue
            if scan.compacted:
                # Decompress the next segments in a thread while this one is read: the
                # replay of a compacted log then costs about what a plain one does.
                for later in segments[position + 1:position + 1 + READ_AHEAD]:
                    if later not in ahead:
                        found = self._read_ahead(later)
                        if found is None:
                            break
                        ahead[later] = found
            elif self.chain is not None and position + 1 < len(segments):
                self._hash_ahead(segments[position + 1], hashing)
            yield scan
            expect, merged, passed_over = scan.expect_seq, scan.members, scan.compacted
            before = scan.chain
            del scan  # hold one segment in memory at a time (and those read ahead)

    def events(
        self, after_seq: int = 0, until_seq: int | None = None, limit: int | None = None
    ) -> Iterator[Event]:
        """Events with ``after_seq < seq <= until_seq``, at most ``limit`` of them, read one
        segment at a time."""
        until = math.inf if until_seq is None else until_seq
        events = itertools.chain.from_iterable(self.scans(after_seq, until))
        return events if limit is None else itertools.islice(events, max(limit, 0))

    def last_events(
        self, count: int, after_seq: int = 0, until_seq: int | None = None,
        keep: Callable[[Event], bool] | None = None,
    ) -> list[Event]:
        """The last ``count`` events with ``after_seq < seq <= until_seq`` (of those,
        only the ones ``keep`` accepts, when given), in seq order. Read from the end: the
        segment holding ``until_seq`` (the newest, by default) first, then the one before
        it, until ``count`` are found; a small ``count`` reads the last segment or two
        however long the log is.

        Each segment is checked as a forward read checks it: damage raises
        CorruptionError naming the file and offset, the newest segment may end in a torn
        tail (a writer died, or is writing), and each segment must end where the one
        after it begins. A clear that removes the segments while they are read makes it
        read the new log from its end."""
        if count <= 0:
            return []
        until = math.inf if until_seq is None else until_seq
        for attempt in range(_REREADS_AFTER_CLEAR + 1):
            try:
                return self._last_events(count, after_seq, until, keep)
            except FileNotFoundError:
                # A clear renamed a new segment in and unlinked the ones listed: what was
                # read belongs to the log before it. The last try lets the error out.
                if attempt == _REREADS_AFTER_CLEAR:
                    raise
        raise AssertionError("unreachable")

    def _last_events(self, count: int, after_seq: int, until: float,
                     keep: Callable[[Event], bool] | None) -> list[Event]:
        segments, log_start = self.live_segments()
        position = bisect.bisect_right(segments, until) - 1
        looked = False  # for a base (dropped history is never read), once a sealed file is
        found: list[list[Event]] = []  # newest segment's events first
        wanted = count
        later: int | None = None  # first seq of the segment read just before (the next one)
        while position >= 0 and wanted > 0:
            first = segments[position]
            if not looked and first > log_start and position < len(segments) - 1:
                base, looked = self.base_of(log_start), True
                after_seq = after_seq if base is None else max(after_seq, base.seq)
            if later is not None and later - 1 <= after_seq:
                break  # this segment and all before it are at or before after_seq
            scan_after = after_seq
            if keep is None and later is not None:
                # Every seq counts: the wanted ones are the last ``wanted`` before ``later``
                # (and at most ``until``); frames before them are checked, not decoded.
                scan_after = max(after_seq, int(min(until, later - 1)) - wanted)
            # a compacted file may hold the segments after it too: read it up to ``later``
            scan_until = until if later is None else min(until, later - 1)
            scan = self.scan_segment(first, position == len(segments) - 1, scan_after,
                                     scan_until)
            tail: collections.deque[Event] = collections.deque(maxlen=wanted)
            tail.extend(scan if keep is None else filter(keep, scan))
            if later is not None and scan.expect_seq != later and until >= later:
                raise CorruptionError(
                    f"segment starts at seq {later} but the one before ends at seq "
                    f"{scan.expect_seq - 1}", path=self.segment_path(later), offset=0)
            found.append(list(tail))
            wanted -= len(tail)
            later = first
            position -= 1
        return [event for events in reversed(found) for event in events]

    def position_holds(self, position: LogPosition, seq: int) -> bool:
        """Whether ``position`` is the boundary right after ``seq`` in this log: the frame
        ending there is checksum-valid, ends with ``seq`` and has the recorded crc (or
        the offset is the start of a segment that starts with ``seq + 1``). One small
        read. A log that lost its unsynced tail and was written again, or was cleared or
        replaced, fails it."""
        first, offset, frame_crc = position
        if offset == SEGMENT_HEADER_SIZE:
            return first == seq + 1
        if offset < SEGMENT_HEADER_SIZE or offset % 8 or first > seq:
            return False
        try:
            segment = self.open_segment(first)
        except FileNotFoundError:
            return False
        with segment:
            if offset > segment.size:
                return False
            (frame_size,) = _U32.unpack(segment.pread(4, offset - TRAILER_SIZE))
            start = offset - frame_size
            if start < SEGMENT_HEADER_SIZE or start % 8 or frame_size > MAX_FRAME_PAYLOAD:
                return False
            raw = segment.pread(frame_size, start)
        frame = _parse_frame(raw, memoryview(raw), 0, len(raw))
        return (frame is not None and frame.first_seq + frame.event_count - 1 == seq
                and _U32.unpack_from(raw)[0] == frame_crc)

    def scans_from(
        self, position: LogPosition, after_seq: int, until_seq: float = math.inf,
        marker: bytes | None = None,
    ) -> Iterator[SegmentScan]:
        """Like :meth:`scans`, but starting at ``position`` (the boundary right after
        ``after_seq``, see :meth:`position_holds`): the segment it names from that offset,
        then each following segment, found by name. Reads nothing before the position, so
        the cost follows what comes after it, not the length of the history. Stops at the
        end of the last segment, or at a missing one: a caller that needs everything
        compares ``expect_seq`` of the last scan with the log's head."""
        first, offset, _ = position
        expect, before = after_seq + 1, None
        while True:
            try:
                segment = self.open_segment(first)
            except FileNotFoundError:
                return
            with segment:
                path, size, header = segment.path, segment.size, segment.scan_header
                if size > MAX_SEGMENT_FILE:
                    raise CorruptionError(f"segment file of {size} bytes is larger than any "
                                          "writer makes; it is not read", path=path)
                # the header before the frames (see load_segment)
                buf = segment.pread(size - offset, offset) if offset < size else b""
                chain = chain_check.check_view(self.chain, segment, buf, offset, before)
                members = segment.members_after  # (where a chained member's run starts)
            scan = SegmentScan(buf, path, expect, not header.compacted, after_seq, until_seq,
                               origin=offset, marker=marker, segment=first,
                               synced_end=header.synced_end, chain=chain, members=members,
                               allow_base=segment.starts_with_base
                               and _may_hold_base(header, first))
            yield scan
            if scan.expect_seq > until_seq:
                return
            if scan.torn_at is not None and self.io.exists(self.segment_path(scan.expect_seq)):
                raise CorruptionError("damaged record in a sealed segment", path=path,
                                      offset=scan.torn_at)
            if scan.expect_seq == first:
                # Nothing in this segment (an empty last segment, or one cut to its header):
                # the next segment would be this one again. The caller compares where the
                # scans ended with the log's head.
                return
            first, offset, expect = scan.expect_seq, SEGMENT_HEADER_SIZE, scan.expect_seq
            before = scan.chain
            del scan, buf

    def read_frames(self, first_seq: int, start: int, end: int, *, decode: bool = True
                    ) -> list[Frame]:
        """The frames in bytes ``start`` to ``end`` of segment ``first_seq``, in one read
        (see ``frame_reads.read_frames``)."""
        return frame_reads.read_frames(self, first_seq, start, end, decode=decode)

    def frames_from(self, position: LogPosition, marker: bytes | None = None,
                    next_seq: int | None = None) -> Iterator[Frame]:
        """The frames from ``position`` (a frame boundary) to the end of the log (see
        ``frame_reads.frames_from``)."""
        return frame_reads.frames_from(self, position, marker, next_seq)

    def goes_on(self, segment: SegmentFile, next_seq: int) -> bool:
        """Whether the log goes on at ``next_seq`` after ``segment``, read to its end
        (see ``frame_reads.goes_on``)."""
        return frame_reads.goes_on(self, segment, next_seq)

    def first_turn(self, first_seq: int) -> int | None:
        """The turn of a segment's first record, None if it has none yet. Cached: a
        record, once written, never changes."""
        if first_seq in self._first_turns:
            return self._first_turns[first_seq]
        try:
            segment = self.open_segment(first_seq)
        except FileNotFoundError:
            return None
        with segment:
            path = segment.path
            fields = segment.pread(FRAME_HEADER_SIZE, SEGMENT_HEADER_SIZE)
            if len(fields) < FRAME_HEADER_SIZE:
                return None
            _, length, _, _, frame_type = _FRAME_HEADER.unpack(fields)
            size = frame_end(0, length, frame_type)
            # a damaged length must not make us allocate it: read no more than the file has
            size = min(size, segment.size - SEGMENT_HEADER_SIZE)
            raw = segment.pread(size, SEGMENT_HEADER_SIZE)
        frame = _parse_frame(raw, memoryview(raw), 0, len(raw))
        if frame is None:
            return None  # empty, or being written; a full read reports any damage
        if frame.frame_type in BASE_FRAMES:
            turn = decode_base(frame.payload, path, SEGMENT_HEADER_SIZE).turn
            self._first_turns[first_seq] = turn
            return turn
        turn = decode_payload(frame.payload, frame.event_count, path, SEGMENT_HEADER_SIZE)[1]
        self._first_turns[first_seq] = turn
        return turn

    def check(self) -> list[Finding]:
        """Read every segment and report each problem with its file and offset: what any
        read would refuse (damage, missing segments, synced records gone, another
        session's segment), as a problem; what readers ignore, as a note."""
        findings: list[Finding] = []
        try:
            firsts = self.list_segments()
        except CorruptionError as exc:
            return [Finding("problem", exc.path, None, _reason(exc))]
        try:
            log_start = self.read_header(firsts[-1]).log_start
        except (CorruptionError, FormatVersionError) as exc:
            return [Finding("problem", self.segment_path(firsts[-1]), 0, _reason(exc))]
        for name in sorted(self.io.listdir(self.path)):
            full = os.path.join(self.path, name)
            if name.endswith(layout.TORN_SUFFIX):
                findings.append(Finding("note", full, None,
                                        "bytes of a torn tail a writer set aside after a crash"))
            elif layout.is_scratch(name):
                findings.append(Finding("note", full, None,
                                        "temp file of an interrupted write; removed at the "
                                        "next rollover or clear"))
        live = [s for s in firsts if s >= log_start]
        for stale in (s for s in firsts if s < log_start):
            findings.append(Finding("note", self.segment_path(stale), None,
                                    "segment from before an interrupted clear; removed at "
                                    "the next rollover or clear"))
        if live[0] != log_start:
            findings.append(Finding(
                "problem", self.segment_path(live[0]), 0,
                f"the log starts at seq {log_start} (so its newest segment's header says), "
                f"but its oldest segment starts at seq {live[0]}: the segments holding seqs "
                f"{log_start} to {live[0] - 1} are missing"))
        expect: int | None = live[0]
        merged: tuple[int, ...] = ()
        dropped = False  # the file just read starts with a base (retention)
        passed_over = False  # the file just read was compacted
        before: ChainRun | None = None  # the chain of the segment just read
        for position, first in enumerate(live):
            path = self.segment_path(first)
            if _passed_over(first, expect, merged, passed_over):
                findings.append(Finding("note", path, None, (
                    "segment of history dropped by a retention that was interrupted; "
                    "readers pass over it, the next retention or compaction removes it")
                    if dropped and first not in merged else (
                    "segment merged into a compacted file by a compaction that was "
                    "interrupted; readers pass over it, the next compaction removes it")))
                continue
            if expect is not None and first != expect:
                findings.append(Finding("problem", path, 0,
                                        f"seq gap: segment starts at {first}, the previous one "
                                        f"ends at {expect - 1}"))
            is_last = position == len(live) - 1
            try:
                scan = self.scan_segment(first, is_last, before=before)
                for _ in scan:
                    pass
            except (CorruptionError, FormatVersionError) as exc:
                offset = exc.offset if isinstance(exc, CorruptionError) else None
                findings.append(Finding("problem", path, offset, _reason(exc)))
                expect = before = None  # unknown; do not report a cascade of gaps
                continue
            except FileNotFoundError:
                findings.append(Finding("problem", path, None,
                                        "segment vanished while it was checked (a clear "
                                        "meanwhile?); check again"))
                expect = before = None
                continue
            if scan.torn_at is not None:
                findings.append(chain_check.cut_finding(scan) or Finding(
                    "note", path, scan.torn_at,
                    f"torn tail of {scan.data_end - scan.torn_at} bytes (a writer stopped "
                    "mid-append); readers ignore it, the next writer sets it aside"))
            expect, merged, before = scan.expect_seq, scan.members, scan.chain
            passed_over, dropped = scan.compacted, scan.base is not None
        return findings


def _passed_over(first: int, expect: int | None, merged: tuple[int, ...],
                 after_compacted: bool) -> bool:
    """Whether readers pass over the file of segment ``first``, met where the log goes
    on at ``expect``: a leftover of a merge (a segment merged into the file just read, or
    any file below ``expect`` after a compacted one), or of an interrupted retention."""
    return expect is not None and first < expect and (first in merged or after_compacted)


def _may_hold_base(header: SegmentHeader, first_seq: int) -> bool:
    """Whether a base frame may start this view of a segment: the compacted file the log
    started with when it was written, read from its start (FORMAT.md 3.3)."""
    return bool(header.compacted and first_seq == header.first_seq == header.log_start)


def _collect(ahead: Future[LoadedSegment] | None) -> LoadedSegment | None:
    """What a read ahead loaded; None to load it anew (also when it failed: the load in
    the caller's thread raises what it raises)."""
    if ahead is None:
        return None
    try:
        return ahead.result()
    except Exception:
        return None


def _reason(exc: Exception) -> str:
    return exc.reason if isinstance(exc, CorruptionError) else str(exc)
