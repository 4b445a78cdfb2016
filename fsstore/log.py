"""The segmented msgpack append log: a session's authoritative history.

Format (docs/FORMAT.md has the grammar, a worked hex example and the damage rules)::

    segment = header(64 bytes) frame* zero*
    frame   = crc:u32 length:u32 first_seq:u64 count:u32 type:u32   (24 bytes)
              payload(length bytes)  zero-pad to 8  frame_size:u32 "FSE\\n"

One frame holds one batch, so a batch is atomic: its checksum covers all of it (every
byte after the crc field). The trailer repeats the frame size and ends in a non-zero
byte, so the last frame of a segment is found from the end of its data without reading
the segment from the start: opening a session costs the same for 10 events as for 10
million.

A writer in durability "fsync" preallocates zeros at the end of the active segment, so
that an fdatasync does not also commit a size change, and cuts them off when it seals
the segment.

Damage never reads as a shorter or another history: the header (``segment_header.py``)
names the session that wrote the segment and carries a synced mark, which a barrier
moves after its fdatasync, so that synced records gone missing are reported; damage
followed by a valid frame of a later seq, at any byte offset, is corruption, not a torn
tail; and the oldest segment must start at the log start.
"""

from __future__ import annotations

import bisect
import errno
import heapq
import itertools
import math
import os
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, NamedTuple

import msgspec
from crc32c import crc32c

from . import layout
from .errors import (
    CorruptionError,
    Finding,
    FormatVersionError,
    InvalidEvent,
    InvalidSetting,
    RecordTooLarge,
    SessionClosed,
    WriteFailed,
)
from .fsio import FileIO
from .identity import NO_UID, Identity
from .nesting import MAX_NESTING, too_deep
from .segment_header import MARK_AT, check_synced, decode_segment_header, mark_segment_header
from .segment_header import SEGMENT_HEADER_SIZE as SEGMENT_HEADER_SIZE
from .segment_header import SEGMENT_MAGIC as SEGMENT_MAGIC
from .segment_header import SEGMENT_MAJOR as SEGMENT_MAJOR
from .segment_header import SEGMENT_MINOR as SEGMENT_MINOR
from .segment_header import SegmentHeader as SegmentHeader
from .segment_header import encode_segment_header as encode_segment_header

_FRAME_HEADER = struct.Struct("<IIQII")
FRAME_HEADER_SIZE = _FRAME_HEADER.size  # 24
_TRAILER = struct.Struct("<I4s")
TRAILER_SIZE = _TRAILER.size  # 8
TRAILER_MAGIC = b"FSE\n"
FRAME_EVENTS = 1
_FRAME_FIELDS = struct.Struct("<IQII")  # the frame header after its crc
_U32 = struct.Struct("<I")
_ZEROS = bytes(8)

#: No frame payload may exceed this; a larger length field is damage, so a corrupt
#: length can never make a reader allocate more.
MAX_FRAME_PAYLOAD = 64 << 20
DEFAULT_SEGMENT_SIZE = 4 << 20
MAX_SEGMENT_SIZE = 1 << 30
#: No writer makes a larger segment file (the size, one frame past it, preallocation).
MAX_SEGMENT_FILE = MAX_SEGMENT_SIZE + MAX_FRAME_PAYLOAD + (1 << 20)
DEFAULT_MAX_RECORD_BYTES = 16 << 20
_PREALLOCATE_MIN = 64 << 10
_PREALLOCATE_MAX = 1 << 20
_BUFFER_LIMIT = 64 << 10  # durability "none" hands batches to the OS in chunks this big
_FOLLOW_CHUNK = 64 << 10  # a shared writer reads what others appended this much at a time


class Event(NamedTuple):
    """One stored event."""

    seq: int
    ts: float
    turn: int
    kind: str
    data: Any


def refuse_msgpack_ext(code: int, data: memoryview) -> Any:
    """msgspec ext_hook: stored values hold no msgpack extension types (no pickles)."""
    raise ValueError(f"msgpack extension type {code} is not allowed")


_encoder = msgspec.msgpack.Encoder()
# a turn is unsigned (docs/FORMAT.md, section 9): msgpack bounds it to 64 bits
Turn = Annotated[int, msgspec.Meta(ge=0)]
_decoder = msgspec.msgpack.Decoder(
    type=tuple[float, Turn, list[tuple[str, Any]]], ext_hook=refuse_msgpack_ext
)
# The tail of a log needs only the last event's kind: leave the other events undecoded,
# so opening a session costs the same whatever the size of its last batch.
_tail_decoder = msgspec.msgpack.Decoder(type=tuple[float, Turn, list[msgspec.Raw]])
_entry_kind_decoder = msgspec.msgpack.Decoder(type=tuple[str, msgspec.Raw])


# --- durability --------------------------------------------------------------------------

DURABILITY_MODES = ("fsync", "flush", "none")


@dataclass(frozen=True)
class Durability:
    """When appended batches reach the disk.

    ``mode``:
      - ``"fsync"``: each append call is fdatasynced before it returns;
      - ``"flush"`` (default): each append call is handed to the OS before it returns
        (survives the process being killed); fsync at ``finish_turn``, ``sync`` and close;
      - ``"none"``: batches are buffered in the process and handed to the OS in 64 KiB
        chunks, at ``finish_turn``, ``sync`` and close; never fsynced, unless with group
        commit.

    Group commit (``group_commit_ms``, ``group_commit_records``), with ``"flush"`` or
    ``"none"``: when that many milliseconds have passed since the oldest unsynced append,
    or that many records are unsynced, whatever is buffered is written and fsynced, by the
    appending thread or a background one. ``finish_turn`` then fsyncs too.
    """

    mode: str = "flush"
    group_commit_ms: float | None = None
    group_commit_records: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in DURABILITY_MODES:
            raise InvalidSetting(
                f"durability mode must be one of {DURABILITY_MODES}, not {self.mode!r}")
        grouped = self.group_commit_ms is not None or self.group_commit_records is not None
        if grouped and self.mode == "fsync":
            raise InvalidSetting("group commit goes with durability mode 'flush' or 'none', "
                                 "not 'fsync' (which already syncs every append)")
        if self.group_commit_ms is not None and not self.group_commit_ms > 0:
            raise InvalidSetting("group_commit_ms must be > 0")
        if self.group_commit_records is not None and self.group_commit_records < 1:
            raise InvalidSetting("group_commit_records must be >= 1")

    @classmethod
    def of(cls, value: Durability | str | None) -> Durability:
        if value is None:
            return cls()
        if isinstance(value, Durability):
            return value
        return cls(mode=value)

    @property
    def grouped(self) -> bool:
        return self.group_commit_ms is not None or self.group_commit_records is not None

    @property
    def syncs(self) -> bool:
        """Whether barriers (finish_turn, close) fsync: all but plain ``"none"``."""
        return self.mode != "none" or self.grouped


# --- encoding ----------------------------------------------------------------------------


def encode_frame(
    first_seq: int, ts: float, turn: int, entries: Sequence[tuple[str, Any]], max_bytes: int,
    *, check: bool = True,
) -> bytes:
    """One frame holding ``entries`` as seqs ``first_seq ..``. Raises InvalidEvent when an
    event cannot be encoded, or would not read back (the payload is checked with the
    readers' own decoder and limits, so writer and readers cannot drift apart);
    RecordTooLarge when the payload exceeds ``max_bytes``. ``check=False`` skips the
    check, for entries just decoded from a valid frame (a fork re-encoding a batch an
    older writer wrote, which may nest deeper than writers now allow)."""
    try:
        payload = _encoder.encode((ts, turn, entries))
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise InvalidEvent(f"event cannot be stored as msgpack: {exc}") from None
    length = len(payload)
    if length > max_bytes:
        raise RecordTooLarge(
            f"batch of {len(entries)} event(s) encodes to {length} bytes, over the limit of "
            f"{max_bytes}; split the batch, or store large payloads as attachments"
        )
    if check:
        _check_written(payload, len(entries))
    pad = -(FRAME_HEADER_SIZE + length) & 7
    body = b"".join((
        _FRAME_FIELDS.pack(length, first_seq, len(entries), FRAME_EVENTS),
        payload,
        _ZEROS[:pad],
        _U32.pack(FRAME_HEADER_SIZE + length + pad + TRAILER_SIZE),
    ))
    body += TRAILER_MAGIC
    return _U32.pack(crc32c(body)) + body


def _check_written(payload: bytes, count: int) -> None:
    """Refuse (InvalidEvent) a payload a reader would refuse, or nested deeper than
    writers allow."""
    try:
        decoded = decode_payload(payload, count, "(the batch being written)", 0)[2]
    except CorruptionError as exc:
        raise InvalidEvent(f"event would not read back, so it is not stored: {exc.reason}"
                           ) from None
    # Readers decode any depth their stack allows (and report deeper as damage); writers
    # keep far below that, so that what they write reads back in any reader.
    if too_deep(payload, decoded, MAX_NESTING - 1):
        raise InvalidEvent(f"event nests arrays and maps deeper than {MAX_NESTING} levels "
                           "(an event's data starts at level 4), so it is not stored")


# --- parsing -----------------------------------------------------------------------------


class _Frame(NamedTuple):
    offset: int
    first_seq: int
    event_count: int
    payload: memoryview


def _parse_frame(buf: bytes, view: memoryview, off: int, limit: int) -> _Frame | None:
    """The checksum-valid frame starting at ``off``, or None."""
    if off + FRAME_HEADER_SIZE + TRAILER_SIZE > limit:
        return None
    crc, length, first_seq, count, _ = _FRAME_HEADER.unpack_from(buf, off)
    if length > MAX_FRAME_PAYLOAD or count == 0:
        return None
    end = off + ((FRAME_HEADER_SIZE + length + 7) & ~7) + TRAILER_SIZE
    if end > limit:
        return None
    frame_size, magic = _TRAILER.unpack_from(buf, end - TRAILER_SIZE)
    if magic != TRAILER_MAGIC or frame_size != end - off:
        return None
    if crc32c(view[off + 4 : end]) != crc:
        return None
    start = off + FRAME_HEADER_SIZE
    return _Frame(off, first_seq, count, view[start : start + length])


def _valid_frame_after(buf: bytes, view: memoryview, off: int, limit: int,
                       min_seq: int = 0) -> _Frame | None:
    """A checksum-valid frame of seq ``min_seq`` or later starting after ``off``, at any
    byte offset (a byte inserted into or cut from a segment shifts every later frame off
    the 8-byte grid). Found by its trailer magic, so the search runs at ``bytes.find``
    speed rather than one Python step per byte."""
    pos = buf.find(TRAILER_MAGIC, off + FRAME_HEADER_SIZE + 4, limit)
    while pos != -1:
        end = pos + 4
        (frame_size,) = _U32.unpack_from(buf, end - TRAILER_SIZE)
        start = end - frame_size
        if off < start and frame_size >= FRAME_HEADER_SIZE + TRAILER_SIZE:
            frame = _parse_frame(buf, view, start, limit)
            if frame is not None and frame.first_seq >= min_seq:
                return frame
        pos = buf.find(TRAILER_MAGIC, pos + 1, limit)
    return None


def decode_payload(
    payload: bytes | memoryview, count: int, path: str, offset: int,
    decoder: msgspec.msgpack.Decoder = _decoder,
) -> tuple[float, int, list[Any]]:
    """(ts, turn, [(kind, data), ...]) of a checksum-valid frame's payload. Refuses (with
    CorruptionError) what FORMAT.md says no writer writes: another shape, an extension
    type, a negative turn, nesting too deep to decode, a wrong event count."""
    try:
        ts, turn, entries = decoder.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError, RecursionError) as exc:
        # The checksum matched, so these bytes are what a writer wrote: not a torn write.
        reason = ("nests arrays and maps too deep to decode" if isinstance(exc, RecursionError)
                  else f"does not decode: {exc}")
        raise CorruptionError(f"record payload {reason}", path=path, offset=offset) from None
    if len(entries) != count:
        raise CorruptionError(f"record holds {len(entries)} events, its header says "
                              f"{count}", path=path, offset=offset)
    return ts, turn, entries


def _tail_of(frame: _Frame, path: str) -> tuple[float, int, str]:
    ts, turn, entries = decode_payload(frame.payload, frame.event_count, path, frame.offset,
                                       _tail_decoder)
    try:
        kind, _ = _entry_kind_decoder.decode(entries[-1])
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CorruptionError(f"record payload does not decode: {exc}", path=path,
                              offset=frame.offset) from None
    return ts, turn, kind


class SegmentScan:
    """Reads the events of one segment image, checking checksums and seq order.

    Iterating yields each :class:`Event` with ``after_seq < seq <= until_seq``; frames
    wholly before ``after_seq`` are checked but not decoded. Afterwards ``end`` is the
    offset after the last good frame, ``expect_seq`` the seq after its last event, and
    ``last`` that event (None if its frame was skipped). Damage is classified when the
    walk stops:

    - a torn tail: the bytes after the last good frame of the *last* segment hold no
      checksum-valid frame. A writer died mid-append; readers stop there, and ``torn_at``
      says where. Not an error.
    - anything else (damage in a sealed segment, a bad frame followed by a good one, a
      good frame with the wrong seq) raises CorruptionError naming the file and offset.
    """

    def __init__(self, buf: bytes, path: str, expect_seq: int, is_last: bool,
                 after_seq: int = 0, until_seq: float = math.inf, *, origin: int = 0,
                 marker: bytes | None = None, segment: int | None = None,
                 synced_end: int = 0) -> None:
        self.buf = buf
        self.path = path
        self.segment = expect_seq if segment is None else segment  # its first seq
        self.expect_seq = expect_seq
        self.is_last = is_last
        self.after_seq = after_seq
        self.until_seq = until_seq
        # ``buf`` holds the file from byte ``origin`` on (the whole segment when 0, with its
        # header); the walk starts at the first frame in it. Offsets reported are the file's.
        self.origin = origin
        # Frames whose payload lacks ``marker`` are checked but not decoded: a reader that
        # wants only the store's own records skips the rest at bytes.find speed.
        self.marker = marker
        # A barrier made the records before this offset durable (the header's synced
        # mark): a walk that ends before it found synced records missing or damaged.
        self.synced_end = synced_end
        self.end = max(origin, SEGMENT_HEADER_SIZE)
        self.last: Event | None = None
        self.torn_at: int | None = None

    @property
    def data_end(self) -> int:
        return self.origin + len(self.buf.rstrip(b"\0"))

    def __iter__(self) -> Iterator[Event]:
        # The hot path of every read. The frame checks are those of _parse_frame, inlined
        # with the decoding into one loop, and the state kept in locals: a call, a
        # generator hop or an attribute write per frame costs as much as the checksum.
        buf, view, limit = self.buf, memoryview(self.buf), len(self.buf)
        unpack_header, checksum = _FRAME_HEADER.unpack_from, crc32c
        decode, new_event = _decoder.decode, tuple.__new__
        after_seq, expect = self.after_seq, self.expect_seq
        first_wanted, past_wanted = self.after_seq + 1, self.until_seq + 1
        marker, origin = self.marker, self.origin
        off = self.end - origin
        decoded = None
        try:
            while off + FRAME_HEADER_SIZE + TRAILER_SIZE <= limit:
                crc, length, seq, count, frame_type = unpack_header(buf, off)
                if length > MAX_FRAME_PAYLOAD or count == 0:
                    break
                end = off + ((FRAME_HEADER_SIZE + length + 7) & ~7) + TRAILER_SIZE
                # The checksum covers the trailer too, so a frame that passes it has the
                # trailer _parse_frame checks: no need to unpack it here.
                if end > limit or checksum(view[off + 4 : end]) != crc:
                    break
                if seq != expect:
                    raise CorruptionError(
                        f"record has seq {seq}, expected {expect} (duplicated, reordered or "
                        "stale record)", path=self.path, offset=origin + off)
                if frame_type != FRAME_EVENTS:
                    raise FormatVersionError(
                        f"{self.path}: record type {frame_type} at byte {origin + off} is "
                        "unknown to this fsstore; upgrade fsstore to read it")
                if seq >= past_wanted:
                    return  # ``end`` and ``expect_seq`` stay at this frame: the boundary
                expect = seq + count
                if expect > first_wanted and (marker is None or buf.find(
                        marker, off + FRAME_HEADER_SIZE, off + FRAME_HEADER_SIZE + length) >= 0):
                    payload = view[off + FRAME_HEADER_SIZE : off + FRAME_HEADER_SIZE + length]
                    try:
                        decoded = ts, turn, entries = decode(payload)
                    except (msgspec.DecodeError, msgspec.ValidationError, ValueError,
                            RecursionError):
                        # raises, saying where
                        decode_payload(payload, count, self.path, origin + off)
                        raise
                    if len(entries) != count:
                        decode_payload(payload, count, self.path, origin + off)
                    if seq >= first_wanted and expect <= past_wanted:  # the whole batch
                        for kind, data in entries:
                            yield new_event(Event, (seq, ts, turn, kind, data))
                            seq += 1
                    else:
                        for kind, data in entries:
                            if seq >= past_wanted:
                                return
                            if seq > after_seq:
                                yield new_event(Event, (seq, ts, turn, kind, data))
                            seq += 1
                else:
                    decoded = None  # not decoded: `last` cannot describe it
                off = end
        finally:
            self.expect_seq, self.end = expect, origin + off
            if decoded is not None:
                ts, turn, entries = decoded
                kind, data = entries[-1]
                self.last = new_event(Event, (expect - 1, ts, turn, kind, data))
        if self.end < self.data_end:
            self._stopped_at(off, view)
        check_synced(self.end, self.synced_end, self.path)

    def _stopped_at(self, off: int, view: memoryview) -> None:
        at = self.origin + off
        if not self.is_last:
            raise CorruptionError("damaged record in a sealed segment", path=self.path, offset=at)
        later = _valid_frame_after(self.buf, view, off, len(self.buf), self.expect_seq)
        if later is not None:
            raise CorruptionError(
                f"damaged record followed by a valid one (seq {later.first_seq} at byte "
                f"{self.origin + later.offset}); {later.offset - off} bytes cannot be read",
                path=self.path, offset=at)
        self.torn_at = at


# --- reading -----------------------------------------------------------------------------


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
        self._first_turns: dict[int, int | None] = {}

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
        if self.identity is not None and header.minor >= 1:
            self.identity.check(header.uid, "segment", path)
        return header

    def read_header(self, first_seq: int) -> SegmentHeader:
        path = self.segment_path(first_seq)
        fd = self.io.open(path, os.O_RDONLY)
        try:
            raw = self.io.pread(fd, SEGMENT_HEADER_SIZE, 0)
        finally:
            self.io.close(fd)
        return self.checked_header(raw, first_seq, path)

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
            f"{log_start} to {live[0] - 1} are missing; restore them from a backup",
            path=self.segment_path(live[0]), offset=0)

    def read_segment(self, first_seq: int) -> bytes:
        return self.load_segment(first_seq)[0]

    def load_segment(self, first_seq: int) -> tuple[bytes, SegmentHeader]:
        """A whole segment file and its checked header. One read: the header comes first
        in it, so its synced mark never claims more than the frames read after it hold
        (a writer writes the mark only after the frames are synced)."""
        path = self.segment_path(first_seq)
        fd = self.io.open(path, os.O_RDONLY)
        try:
            size = self.io.size(fd)
            if size > MAX_SEGMENT_FILE:
                raise CorruptionError(f"segment file of {size} bytes is larger than any writer "
                                      "makes; it is not read", path=path)
            buf = self.io.pread(fd, size, 0)
        finally:
            self.io.close(fd)
        return buf, self.checked_header(buf, first_seq, path)

    def scan_segment(self, first_seq: int, is_last: bool, after_seq: int = 0,
                     until_seq: float = math.inf, marker: bytes | None = None) -> SegmentScan:
        """A scan of one whole segment, checked against its header's synced mark."""
        buf, header = self.load_segment(first_seq)
        return SegmentScan(buf, self.segment_path(first_seq), first_seq, is_last, after_seq,
                           until_seq, marker=marker, synced_end=header.synced_end)

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
        _, log_start, end = self.locate_tail()
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
        hinted = self._hinted_segment()
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

    def _hinted_segment(self) -> int | None:
        try:
            raw = self.io.read_file(layout.tail_hint_path(self.path), 64)
        except (OSError, ValueError):
            return None
        return layout.parse_segment_name(raw.decode("ascii", "replace").strip())

    def segment_end(self, first_seq: int) -> SegmentEnd:
        """Where a segment's good data ends, found from the end of its data when that end
        is a whole frame (the common case), else by walking the segment from its start."""
        path = self.segment_path(first_seq)
        fd = self.io.open(path, os.O_RDONLY)
        try:
            if self.io.size(fd) > MAX_SEGMENT_FILE:
                raise CorruptionError("segment file is larger than any writer makes; it is "
                                      "not read", path=path)
            # The header first: its synced mark then never claims more than what is read
            # after it holds (a writer marks only frames already synced).
            header = self.checked_header(self.io.pread(fd, SEGMENT_HEADER_SIZE, 0),
                                         first_seq, path)
            data_end = _data_end(self.io, fd)
            if data_end <= SEGMENT_HEADER_SIZE:
                check_synced(SEGMENT_HEADER_SIZE, header.synced_end, path)
                return SegmentEnd(SEGMENT_HEADER_SIZE, first_seq, None)
            if data_end % 8 == 0 and data_end >= header.synced_end:
                (frame_size,) = _U32.unpack(self.io.pread(fd, 4, data_end - TRAILER_SIZE))
                start = data_end - frame_size
                if start >= SEGMENT_HEADER_SIZE and start % 8 == 0:
                    raw = self.io.pread(fd, frame_size, start)
                    frame = _parse_frame(raw, memoryview(raw), 0, len(raw))
                    if frame is not None and frame.first_seq >= first_seq:
                        return SegmentEnd(data_end, frame.first_seq + frame.event_count,
                                          _tail_of(frame._replace(offset=start), path))
        finally:
            self.io.close(fd)
        scan = self.scan_segment(first_seq, is_last=True)
        for _ in scan:
            pass
        last = scan.last
        return SegmentEnd(scan.end, scan.expect_seq,
                          None if last is None else (last.ts, last.turn, last.kind))

    def scans(self, after_seq: int = 0, until_seq: float = math.inf,
              marker: bytes | None = None) -> Iterator[SegmentScan]:
        """A scan of each live segment from the one holding ``after_seq + 1`` on. Each must
        be iterated to its end before the next is asked for (seqs are checked across)."""
        segments, log_start = self.live_segments()
        index = max(bisect.bisect_right(segments, max(after_seq + 1, log_start)) - 1, 0)
        expect = segments[index]
        for position in range(index, len(segments)):
            first = segments[position]
            path = self.segment_path(first)
            if first > until_seq or expect > until_seq:
                return
            if first != expect:
                raise CorruptionError(
                    f"segment starts at seq {first} but the one before ends at seq {expect - 1}",
                    path=path, offset=0)
            try:
                scan = self.scan_segment(first, position == len(segments) - 1, after_seq,
                                         until_seq, marker)
            except FileNotFoundError:
                return  # cleared by the writer meanwhile: what was read is a prefix
            yield scan
            expect = scan.expect_seq
            del scan  # hold one segment in memory at a time

    def events(
        self, after_seq: int = 0, until_seq: int | None = None, limit: int | None = None
    ) -> Iterator[Event]:
        """Events with ``after_seq < seq <= until_seq``, at most ``limit`` of them, read one
        segment at a time."""
        until = math.inf if until_seq is None else until_seq
        events = itertools.chain.from_iterable(self.scans(after_seq, until))
        return events if limit is None else itertools.islice(events, max(limit, 0))

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
        path = self.segment_path(first)
        try:
            fd = self.io.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            if offset > self.io.size(fd):
                return False
            (frame_size,) = _U32.unpack(self.io.pread(fd, 4, offset - TRAILER_SIZE))
            start = offset - frame_size
            if start < SEGMENT_HEADER_SIZE or start % 8 or frame_size > MAX_FRAME_PAYLOAD:
                return False
            raw = self.io.pread(fd, frame_size, start)
        finally:
            self.io.close(fd)
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
        expect = after_seq + 1
        while True:
            path = self.segment_path(first)
            try:
                fd = self.io.open(path, os.O_RDONLY)
            except FileNotFoundError:
                return
            try:
                size = self.io.size(fd)
                if size > MAX_SEGMENT_FILE:
                    raise CorruptionError(f"segment file of {size} bytes is larger than any "
                                          "writer makes; it is not read", path=path)
                # the header before the frames (see load_segment)
                header = self.checked_header(self.io.pread(fd, SEGMENT_HEADER_SIZE, 0), first,
                                             path)
                buf = self.io.pread(fd, size - offset, offset) if offset < size else b""
            finally:
                self.io.close(fd)
            scan = SegmentScan(buf, path, expect, True, after_seq, until_seq, origin=offset,
                               marker=marker, segment=first, synced_end=header.synced_end)
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
            del scan, buf

    def first_turn(self, first_seq: int) -> int | None:
        """The turn of a segment's first record, None if it has none yet. Cached: a
        record, once written, never changes."""
        if first_seq in self._first_turns:
            return self._first_turns[first_seq]
        path = self.segment_path(first_seq)
        try:
            fd = self.io.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fields = self.io.pread(fd, FRAME_HEADER_SIZE, SEGMENT_HEADER_SIZE)
            if len(fields) < FRAME_HEADER_SIZE:
                return None
            length = _FRAME_HEADER.unpack(fields)[1]
            size = ((FRAME_HEADER_SIZE + length + 7) & ~7) + TRAILER_SIZE
            # a damaged length must not make us allocate it: read no more than the file has
            size = min(size, self.io.size(fd) - SEGMENT_HEADER_SIZE)
            raw = self.io.pread(fd, size, SEGMENT_HEADER_SIZE)
        finally:
            self.io.close(fd)
        frame = _parse_frame(raw, memoryview(raw), 0, len(raw))
        if frame is None:
            return None  # empty, or being written; a full read reports any damage
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
        for position, first in enumerate(live):
            path = self.segment_path(first)
            if expect is not None and first != expect:
                findings.append(Finding("problem", path, 0,
                                        f"seq gap: segment starts at {first}, the previous one "
                                        f"ends at {expect - 1}"))
            is_last = position == len(live) - 1
            try:
                scan = self.scan_segment(first, is_last)
                for _ in scan:
                    pass
            except (CorruptionError, FormatVersionError) as exc:
                offset = exc.offset if isinstance(exc, CorruptionError) else None
                findings.append(Finding("problem", path, offset, _reason(exc)))
                expect = None  # unknown; do not report a cascade of gaps
                continue
            except FileNotFoundError:
                findings.append(Finding("problem", path, None,
                                        "segment vanished while it was checked (a clear "
                                        "meanwhile?); check again"))
                expect = None
                continue
            if scan.torn_at is not None:
                findings.append(Finding(
                    "note", path, scan.torn_at,
                    f"torn tail of {scan.data_end - scan.torn_at} bytes (a writer stopped "
                    "mid-append); readers ignore it, the next writer sets it aside"))
            expect = scan.expect_seq
        return findings


def _reason(exc: Exception) -> str:
    return exc.reason if isinstance(exc, CorruptionError) else str(exc)


def _data_end(io: FileIO, fd: int) -> int:
    """Offset just past the last non-zero byte: the end of the data when the file ends in
    preallocated zeros. Reads backwards over the zeros only."""
    pos = io.size(fd)
    chunk = 4096  # a sealed segment ends in data: one small read answers
    while pos > SEGMENT_HEADER_SIZE:
        start = max(SEGMENT_HEADER_SIZE, pos - chunk)
        stripped = io.pread(fd, pos - start, start).rstrip(b"\0")
        if stripped:
            return start + len(stripped)
        pos = start
        chunk = min(chunk * 4, _PREALLOCATE_MAX)
    return SEGMENT_HEADER_SIZE


# --- writing -----------------------------------------------------------------------------


def write_tail_hint(io: FileIO, log_path: str, first_seq: int) -> None:
    """Name the newest segment in ``tail.hint``, so that opening the log need not list
    it. Only a hint: readers check it (see ``LogReader.locate_tail``)."""
    name = layout.segment_name(first_seq) + "\n"
    io.atomic_write(layout.tail_hint_path(log_path), name.encode())


def check_settings(segment_size: int, max_record_bytes: int) -> None:
    if not 0 < max_record_bytes <= MAX_FRAME_PAYLOAD:
        raise InvalidSetting(f"max_record_bytes must be in 1..{MAX_FRAME_PAYLOAD}, not "
                             f"{max_record_bytes}")
    if not 4096 <= segment_size <= MAX_SEGMENT_SIZE:
        raise InvalidSetting(f"segment_size must be from 4096 to {MAX_SEGMENT_SIZE} bytes, not "
                             f"{segment_size}")


class LogWriter:
    """The one writer of a log (the session's writer lock sees to it that there is only
    one). Thread-safe: every call takes ``self.lock``."""

    def __init__(
        self,
        io: FileIO,
        path: str,
        durability: Durability,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        neutral_kinds: frozenset[str] = frozenset(),
        identity: Identity | None = None,
    ) -> None:
        check_settings(segment_size, max_record_bytes)
        # Batches ending in a neutral kind leave last_turn and last_kind as they were:
        # the session's queue and input records come from outside its turns.
        self.neutral_kinds = neutral_kinds
        self.io = io
        self.path = path
        self.reader = LogReader(io, path, identity)
        # New segments carry the session's uid (none for a session from before uids).
        self._uid = NO_UID if identity is None else identity.uid
        self.durability = durability
        self.segment_size = segment_size
        self.max_record_bytes = max_record_bytes
        self.lock = threading.RLock()
        # Preallocation pays when every append fsyncs: an overwrite of space the file
        # already has needs no size change committed. Group commit syncs too rarely for
        # it to matter, and extending the file would hold up appends.
        self._mode = durability.mode
        self._preallocate = durability.mode == "fsync"
        self._grouped = durability.grouped
        self._group_interval = (durability.group_commit_ms or 0) / 1000
        self._fd: int | None = None
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._unsynced_records = 0
        self._unsynced_since = 0.0
        self._failed: BaseException | None = None
        self._closed = False
        self._syncing = False
        self.recovered_torn_tail: str | None = None
        self.bytes_appended = 0  # log bytes this writer wrote (snapshot policies use it)
        # The frames the last refresh read forward, or None when it relocated the tail.
        self.followed: list[tuple[_Frame, int]] | None = None
        self._recover()
        self._syncer: threading.Thread | None = None
        self._wake = threading.Condition(self.lock)
        if durability.group_commit_ms is not None:
            self._syncer = threading.Thread(
                target=self._group_commit_loop, name=f"fsstore-sync {path}", daemon=True)
            self._syncer.start()

    # --- state after recovery ---

    def _recover(self) -> None:
        """Find the end of the log and set aside a torn tail, reading only the end of the
        log. (Leftovers of an interrupted clear or rollover wait for the next one.)"""
        io, reader = self.io, self.reader
        first, self.log_start, found = reader.locate_tail()
        # Segments before this start are removed at the next rollover or clear; after a
        # roll_over that moves the start, only those before the start it replaced.
        self._kept_start = self.log_start
        end = found.end
        self.head = found.next_seq - 1
        self.last_turn = found.last[1] if found.last else None
        self.last_kind = found.last[2] if found.last else None
        # The seq of the last record not of a neutral kind (log_start - 1: none).
        self.significant_head = self.head if found.last else self.log_start - 1
        if self.last_kind in self.neutral_kinds:
            significant = self._last_significant(first, end)
            self.last_turn, self.last_kind, self.significant_head = (
                significant or (None, None, self.log_start - 1))
        fd = io.open(reader.segment_path(first), os.O_RDWR)
        try:
            # Only the last segment can be unfinished: a segment is sealed before its
            # successor is created.
            data_end = _data_end(io, fd)
            if data_end > end:
                # segment_end walked the segment and found nothing valid past `end`.
                self._set_aside_torn_tail(fd, first, end, data_end)
        except BaseException:
            io.close(fd)
            raise
        self._fd, self._end, self.segment = fd, end, first
        self._last_crc: bytes | None = None  # of the frame ending at _end; read when asked
        self._allocated = io.size(fd)
        self._written_end = end
        # The synced mark of the active segment (1.1 segments only; an older one gets
        # none until the next rollover): its fixed header bytes and the end it claims.
        header = reader.read_header(first)
        self._mark_static: bytes | None = header.static or None
        self._marked_end = header.synced_end
        # Frames past the mark may be in the page cache only (a writer killed before its
        # barrier, or one in flush mode that never had one): they count as unsynced, so
        # the next barrier fdatasyncs them before it writes a mark claiming them. Earlier
        # segments were fsynced when they were sealed.
        self.synced_head = self.head if header.synced_end >= end else first - 1
        self._mark_unsynced = False  # a mark was written since the last fdatasync

    def _last_significant(self, first: int, end: int) -> tuple[int, str, int] | None:
        """(turn, kind, last seq) of the last frame whose last record is not of a neutral kind,
        walking back from ``end`` of segment ``first`` frame by frame (each frame ends in
        its size) and into earlier segments."""
        reader = self.reader
        segments = [s for s in reader.live_segments()[0] if s <= first]
        for segment in reversed(segments):
            path = reader.segment_path(segment)
            fd = self.io.open(path, os.O_RDONLY)
            try:
                pos = end if segment == first else _data_end(self.io, fd)
                while pos > SEGMENT_HEADER_SIZE:
                    (size,) = _U32.unpack(self.io.pread(fd, 4, pos - TRAILER_SIZE))
                    start = pos - size
                    raw = self.io.pread(fd, size, start) if start >= SEGMENT_HEADER_SIZE else b""
                    frame = _parse_frame(raw, memoryview(raw), 0, len(raw)) if raw else None
                    if frame is None:
                        raise CorruptionError("damaged record in the log", path=path,
                                              offset=start)
                    _, turn, kind = _tail_of(frame._replace(offset=start), path)
                    if kind not in self.neutral_kinds:
                        return turn, kind, frame.first_seq + frame.event_count - 1
                    pos = start
            finally:
                self.io.close(fd)
        return None

    def _set_aside_torn_tail(self, fd: int, first_seq: int, end: int, data_end: int) -> None:
        """Copy the torn bytes to a ``.torn`` file beside the segment, then cut them off.
        Nothing is thrown away unseen: ``fsstore verify`` lists the file."""
        raw = self.io.pread(fd, data_end - end, end)
        target = os.path.join(self.path, layout.torn_tail_name(first_seq, end))
        self.io.atomic_write(target, raw)
        self.io.truncate(fd, end)
        self.io.fsync(fd)
        self.recovered_torn_tail = target

    # --- appending ---

    def append(self, entries: Sequence[tuple[str, Any]], turn: int, ts: float) -> int:
        """Write one batch as one frame; return its first seq."""
        with self.lock:
            if self._failed is not None or self._closed:
                self.check_usable()
            first = self.head + 1
            frame = encode_frame(first, ts, turn, entries, self.max_record_bytes)
            try:
                size = len(frame)
                if self._end + size > self.segment_size and self._end > SEGMENT_HEADER_SIZE:
                    self._roll_over()
                mode = self._mode
                if mode == "none":
                    self._pending.append(frame)
                    self._pending_bytes += size
                    self._end += size
                    if self._pending_bytes >= _BUFFER_LIMIT:
                        self._write_pending()
                else:
                    if self._preallocate and self._end + size > self._allocated:
                        self._extend(self._end + size)
                    self.io.pwrite(self._fd, frame, self._end)  # type: ignore[arg-type]
                    self._end = self._written_end = self._end + size
                self.head += len(entries)
                self.bytes_appended += size
                self._last_crc = frame[:4]
                if entries[-1][0] not in self.neutral_kinds:
                    self.last_turn, self.last_kind = turn, entries[-1][0]
                    self.significant_head = self.head
                if mode == "fsync":
                    self.io.fdatasync(self._fd)  # type: ignore[arg-type]
                    self.synced_head = self.head
                    self._mark_unsynced = False
                    self._mark_synced(self._end)
                elif self._grouped:
                    self._group_commit_after(len(entries))
            except OSError as exc:
                raise self._fail(exc) from exc
            return first

    def _write_pending(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._pending_bytes = 0
            if self._preallocate and self._written_end + len(data) > self._allocated:
                self._extend(self._written_end + len(data))
            self.io.pwrite(self._fd, data, self._written_end)  # type: ignore[arg-type]
            self._written_end += len(data)

    def _extend(self, needed: int) -> None:
        """Preallocate zeros so that later fdatasyncs overwrite space the file already has
        and need not commit a size change each time."""
        grow = min(max(self._allocated, _PREALLOCATE_MIN), _PREALLOCATE_MAX)
        target = max(needed, min(self._allocated + grow, max(self.segment_size, needed)))
        zeros = bytes(min(target - self._allocated, _PREALLOCATE_MAX))
        pos = self._allocated
        while pos < target:
            chunk = zeros[: target - pos]
            self.io.pwrite(self._fd, chunk, pos)  # type: ignore[arg-type]
            pos += len(chunk)
        self.io.fdatasync(self._fd)  # type: ignore[arg-type]
        self._allocated = target

    def _group_commit_after(self, records: int) -> None:
        first = self._unsynced_records == 0
        if first:
            self._unsynced_since = time.monotonic()
        self._unsynced_records += records
        limit_records = self.durability.group_commit_records
        if limit_records is not None and self._unsynced_records >= limit_records:
            if self._syncer is None:
                self._sync_locked()
            else:
                self._wake.notify_all()
        elif first and self._syncer is not None:
            self._wake.notify_all()
        elif self._syncer is None:
            return
        elif time.monotonic() - self._unsynced_since >= self._group_interval:
            self._wake.notify_all()  # the syncer is late (say the GIL was busy): nudge it

    def _group_commit_loop(self) -> None:
        """The group-commit thread: every ``group_commit_ms`` that has unsynced appends,
        write them out under the lock, then fdatasync *outside* it, so appends go on
        while the disk works. Whatever touches the file descriptor exclusively (seal,
        clear, close) first waits for a sync in flight."""
        assert self.durability.group_commit_ms is not None
        interval = self.durability.group_commit_ms / 1000
        limit_records = self.durability.group_commit_records
        with self.lock:
            while not self._closed and self._failed is None:
                if self._unsynced_records == 0:
                    self._wake.wait()
                    continue
                remaining = self._unsynced_since + interval - time.monotonic()
                if remaining > 0 and not (
                        limit_records is not None and self._unsynced_records >= limit_records):
                    self._wake.wait(remaining)
                    continue
                try:
                    self._write_pending()
                except OSError as exc:
                    self._fail(exc)
                    return
                target, fd, synced_end = self.head, self._fd, self._written_end
                self._unsynced_records = 0
                self._syncing = True
                error: OSError | None = None
                self.lock.release()
                try:
                    self.io.fdatasync(fd)  # type: ignore[arg-type]
                except OSError as exc:
                    error = exc
                finally:
                    self.lock.acquire()
                    self._syncing = False
                    self._wake.notify_all()
                if error is not None:
                    self._fail(error)
                    return
                self.synced_head = max(self.synced_head, target)
                if fd == self._fd:  # seal, clear and close wait for a sync in flight
                    try:
                        self._mark_synced(synced_end)
                    except OSError as exc:
                        self._fail(exc)
                        return

    def _wait_for_sync(self) -> None:
        while self._syncing:
            self._wake.wait()

    # --- barriers ---

    def flush(self) -> None:
        """Hand buffered batches (durability ``none``) to the OS."""
        with self.lock:
            self.check_usable()
            try:
                self._write_pending()
            except OSError as exc:
                raise self._fail(exc) from exc

    def sync(self) -> None:
        """Make everything appended so far durable."""
        with self.lock:
            self.check_usable()
            self._sync_locked()

    def _sync_locked(self) -> None:
        try:
            self._write_pending()
            if self.synced_head != self.head:
                self.io.fdatasync(self._fd)  # type: ignore[arg-type]
                self._mark_unsynced = False
            self.synced_head = self.head
            self._unsynced_records = 0
            self._mark_synced(self._written_end)
        except OSError as exc:
            raise self._fail(exc) from exc

    def _mark_synced(self, end: int) -> None:
        """Record in the active segment's header that its frames before ``end`` are
        durable (docs/FORMAT.md, section 3.1), so that a reader can tell them missing.

        Called only after the fdatasync that made them durable, and not synced itself:
        the mark reaches the disk with the next barrier's fdatasync (or the kernel's
        writeback). So it never claims frames a crash could take back, costs one 64-byte
        pwrite and no fsync, and lags at most one barrier behind after a power loss.
        Only the 12 bytes that change are written (the mark, its CRC, the header's CRC):
        a write that tears or persists as garbage leaves the fixed fields and their CRC
        whole, and a reader then takes the mark as absent."""
        if self._mark_static is None or end <= max(self._marked_end, SEGMENT_HEADER_SIZE):
            return
        header = mark_segment_header(self._mark_static, end)
        self.io.pwrite(self._fd, header[MARK_AT:], MARK_AT)  # type: ignore[arg-type]
        self._marked_end = end
        self._mark_unsynced = True

    def refresh(self) -> LogPosition | None:
        """Catch up with what other processes appended since this writer last wrote.
        Returns None if the log did not move, else where it ended before (the boundary
        after the old head), from which the new records can be read.

        Shared writers (docs/FORMAT.md, section 16) take the session's mutex for each
        operation and call this first: another holder of the mutex may have appended
        frames, rolled the segment over, or cleared the log.
        Reads 8 bytes and looks up one name when nothing moved."""
        with self.lock:
            self.check_usable()
            self._write_pending()
            fd = self._fd
            assert fd is not None
            try:
                probe = self.io.pread(fd, 8, self._end)
                grown = probe != bytes(len(probe))
                if not grown and not self.io.exists(self.reader.segment_path(self.head + 1)):
                    return None
                before = self.position
                self.followed = []
                if grown and self._follow(fd) and not self.io.exists(
                        self.reader.segment_path(self.head + 1)):
                    return before
                self._fd = None
                self.io.close(fd)
                appended = self.bytes_appended
                self._recover()
                self.bytes_appended = appended
                self.followed = None
            except OSError as exc:
                raise self._fail(exc) from exc
            return before

    def _follow(self, fd: int) -> bool:
        """Take in the frames other writers appended to this segment after our end, read
        forward from it (the common case under a shared lock: no re-listing, and no stat
        of the segment, which would slow its next fdatasync). False when what follows is
        not whole frames then zeros or the end: then ``refresh`` finds the tail afresh."""
        buf = self.io.pread(fd, _FOLLOW_CHUNK, self._end)
        view = memoryview(buf)
        path = self.reader.segment_path(self.segment)
        off, head, frames = 0, self.head, []
        while True:
            frame = _parse_frame(buf, view, off, len(buf))
            if frame is None or frame.first_seq != head + 1:
                break
            frames.append(frame)
            head += frame.event_count
            off += ((FRAME_HEADER_SIZE + len(frame.payload) + 7) & ~7) + TRAILER_SIZE
        # Whole frames, then zeros or the end of the file: a frame (torn or cut off by the
        # chunk) would begin with its non-zero checksum and length.
        if not frames or buf[off:off + 8].strip(b"\0"):
            return False
        for frame in reversed(frames):
            _, turn, kind = _tail_of(frame._replace(offset=self._end + frame.offset), path)
            if kind not in self.neutral_kinds:
                self.last_turn, self.last_kind = turn, kind
                self.significant_head = frame.first_seq + frame.event_count - 1
                break
        self._last_crc = bytes(buf[frames[-1].offset:frames[-1].offset + 4])
        self.followed = [(frame, self._end + frame.offset) for frame in frames]
        self._end = self._written_end = self._end + off
        self._allocated = max(self._allocated, self._end)
        self.head = head
        return True

    def followed_events(self) -> Iterator[Event]:
        """The events the last ``refresh`` took in by reading forward (empty when it had
        to find the tail afresh: then read them with ``LogReader.scans_from``)."""
        path = self.reader.segment_path(self.segment)
        for frame, offset in self.followed or ():
            ts, turn, entries = decode_payload(frame.payload, frame.event_count, path, offset)
            for index, (kind, data) in enumerate(entries):
                yield Event(frame.first_seq + index, ts, turn, kind, data)

    # --- segments ---

    @property
    def position(self) -> LogPosition:
        """Where the next frame goes: the boundary right after ``head``."""
        with self.lock:
            if self._end == SEGMENT_HEADER_SIZE:
                return LogPosition(self.segment, self._end)
            if self._last_crc is None:  # the frame recovery found: read its crc field
                fd = self._fd
                assert fd is not None
                (size,) = _U32.unpack(self.io.pread(fd, 4, self._end - TRAILER_SIZE))
                self._last_crc = self.io.pread(fd, 4, self._end - size)
            return LogPosition(self.segment, self._end, _U32.unpack(self._last_crc)[0])

    def roll_over(self, log_start: int | None = None) -> None:
        """Seal the active segment now, if it holds any record, and start the next one.

        ``log_start``, the first seq of a segment from the current start on (or the next
        seq), moves the start of the log there: readers skip the segments before it.
        Those stay on disk until the start moves again, because a copy of the folder
        taken meanwhile may hold a newest segment from before the move, which still
        needs them."""
        with self.lock:
            self.check_usable()
            moved = log_start is not None and log_start != self.log_start
            if moved and not (self.log_start < log_start and (  # type: ignore[operator]
                    log_start == self.head + 1 or log_start in self.reader.list_segments())):
                raise ValueError(f"{self.path}: log start {log_start} is not a segment "
                                 f"after the current start {self.log_start}")
            if self._end > SEGMENT_HEADER_SIZE or moved:
                try:
                    self._roll_over(log_start if moved else None)
                except OSError as exc:
                    raise self._fail(exc) from exc

    def _roll_over(self, log_start: int | None = None) -> None:
        self._seal()
        if log_start is not None:
            self._kept_start, self.log_start = self.log_start, log_start
        self._start_segment(self.head + 1, self.log_start)
        self._remove_leftovers(self._kept_start)

    def _remove_leftovers(self, log_start: int) -> None:
        """Unlink segments before ``log_start`` (an interrupted clear left them; readers
        ignore them) and temp files (an interrupted segment create left them)."""
        names = self.io.listdir(self.path)
        leftovers = [self.reader.segment_path(s) for s in layout.segment_seqs(names)
                     if s < log_start]
        leftovers += [os.path.join(self.path, name) for name in names
                      if name.startswith(layout.TEMP_PREFIX)]
        for path in leftovers:
            self.io.unlink(path)
        if leftovers:
            self.io.fsync_dir(self.path)

    def _seal(self) -> None:
        """Make the active segment final: data durable, preallocated zeros cut off. A crash
        in between leaves zeros or not; both read the same."""
        self._wait_for_sync()
        fd = self._fd
        assert fd is not None
        self._write_pending()
        if self._allocated > self._end:
            self.io.truncate(fd, self._end)
        self.io.fsync(fd)
        self.synced_head = self.head
        self._unsynced_records = 0
        self._fd = None
        self.io.close(fd)

    def _start_segment(self, first_seq: int, log_start: int) -> None:
        """Create a segment whole under a temp name, then rename it in: a segment file
        never exists with a partial header."""
        data = encode_segment_header(first_seq, log_start, self._uid)
        if self._preallocate:
            data += bytes(_PREALLOCATE_MIN)
        final = self.reader.segment_path(first_seq)
        temp = os.path.join(self.path, layout.temp_name(layout.segment_name(first_seq)))
        fd = self.io.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL)
        try:
            self.io.pwrite(fd, data, 0)
            self.io.fsync(fd)
            self.io.rename(temp, final)
        except BaseException:
            self.io.close(fd)
            raise
        self.io.fsync_dir(self.path)
        self._fd, self.segment = fd, first_seq
        self._mark_static, self._marked_end = data[:MARK_AT], SEGMENT_HEADER_SIZE
        self._last_crc = bytes(4)
        self._end = self._written_end = SEGMENT_HEADER_SIZE
        self._allocated = len(data)
        write_tail_hint(self.io, self.path, first_seq)

    def clear(self) -> None:
        """Empty the log. Seqs go on from the old head: a new segment whose header says the
        log starts at ``head + 1`` is made durable first, then the old segments go."""
        with self.lock:
            self.check_usable()
            self._wait_for_sync()
            try:
                self._write_pending()
                fd, self._fd = self._fd, None
                assert fd is not None
                self.io.close(fd)
                start = self.head + 1
                self._start_segment(start, start)
                self._remove_leftovers(start)
            except OSError as exc:
                raise self._fail(exc) from exc
            self.log_start = self._kept_start = start
            self.synced_head = self.head
            self._unsynced_records = 0
            self.last_turn = self.last_kind = None
            self.significant_head = self.head

    # --- lifecycle ---

    def close(self, sync: bool = True) -> None:
        """Sync what the durability mode promises at close, and release the file. With
        ``sync`` false, the file is released with nothing written to it (a shared writer
        that could not take the session's mutex, so may hold a segment since sealed)."""
        with self.lock:
            if self._closed:
                return
            self._wait_for_sync()
            try:
                if self._failed is None and self._fd is not None and sync:
                    if self.durability.syncs:
                        self._sync_locked()
                        if self._mark_unsynced:
                            # a second fdatasync, at close only: the mark the last barrier
                            # wrote reaches the disk too, without waiting for the next one
                            self._mark_unsynced = False
                            try:
                                self.io.fdatasync(self._fd)
                            except OSError as exc:
                                raise self._fail(exc) from exc
                    else:
                        self._write_pending()
            finally:
                self._closed = True
                self._wake.notify_all()
                if self._fd is not None:
                    fd, self._fd = self._fd, None
                    self.io.close(fd)
        if self._syncer is not None and self._syncer is not threading.current_thread():
            self._syncer.join()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def failed(self) -> bool:
        """Whether a write or sync failed: the writer accepts nothing more."""
        return self._failed is not None

    def check_usable(self) -> None:
        if self._failed is not None:
            raise WriteFailed(
                f"{self.path}: an earlier write failed ({self._failed}); reopen the session")
        if self._closed:
            raise SessionClosed(f"{self.path}: the session is closed")

    def _fail(self, exc: OSError) -> WriteFailed:
        """A failed write or fsync ends this writer: the OS may have dropped the pages, so
        nothing after it could be trusted. Reopening recovers the durable prefix."""
        self._failed = exc
        self._pending.clear()
        error = WriteFailed(f"{self.path}: write failed ({exc.strerror or exc}); the batch was "
                            "not acknowledged and nothing more is accepted: reopen the session")
        error.errno = exc.errno
        return error


# --- forking -----------------------------------------------------------------------------

# Errors of os.link that mean "this filesystem will not share the file": copy it instead.
# docs/FORMAT.md section 13 lists the same names (tests/test_log.py checks it).
NO_LINK_ERRNO_NAMES = ("EXDEV", "EPERM", "EMLINK", "ENOTSUP", "EOPNOTSUPP", "ENOSYS")
NO_LINK_ERRNOS = frozenset(getattr(errno, name) for name in NO_LINK_ERRNO_NAMES
                           if hasattr(errno, name))


def copy_log_prefix(io: FileIO, source: LogReader, dest: str, at_seq: int,
                    uid: int = NO_UID) -> LogPosition:
    """Fill ``dest`` (an empty folder) with a log whose history is ``source``'s up to and
    including ``at_seq``, and return the position right after ``at_seq`` in it.

    Sealed segments that lie wholly within the history are shared by hard link (copied
    where the filesystem refuses links): a sealed segment never changes again, and a
    link keeps its bytes alive when the source is cleared or deleted. The segment holding
    ``at_seq`` is copied up to it, the batch it ends inside cut to its first events,
    under a new header carrying ``uid`` (the new session's). All of it is fsynced; the
    caller renames ``dest``'s session into place.
    """
    segments, log_start = source.live_segments()
    position: LogPosition | None = None
    for index, first in enumerate(segments):
        if first > at_seq:
            break
        following = segments[index + 1] if index + 1 < len(segments) else None
        target = os.path.join(dest, layout.segment_name(first))
        if following is not None and following <= at_seq + 1:
            _link_or_copy(io, source, first, target)
            continue
        position = _copy_segment_prefix(io, source, first, target, at_seq, log_start,
                                        is_last=following is None, uid=uid)
        break
    if position is None:
        # The history ends where a segment ends (or is empty): start a fresh one after it.
        position = LogPosition(at_seq + 1, SEGMENT_HEADER_SIZE, 0)
        io.write_new(os.path.join(dest, layout.segment_name(at_seq + 1)),
                     encode_segment_header(at_seq + 1, log_start, uid))
    write_tail_hint(io, dest, position.segment)
    io.fsync_dir(dest)
    return position


def _link_or_copy(io: FileIO, source: LogReader, first_seq: int, target: str) -> None:
    try:
        io.link(source.segment_path(first_seq), target)
        return
    except OSError as exc:
        if exc.errno not in NO_LINK_ERRNOS:
            raise
    io.write_new(target, source.read_segment(first_seq))


def _copy_segment_prefix(io: FileIO, source: LogReader, first_seq: int, target: str,
                         at_seq: int, log_start: int, is_last: bool, uid: int) -> LogPosition:
    path = source.segment_path(first_seq)
    buf = source.read_segment(first_seq)
    # Walk the frames up to at_seq without decoding them (all are before after_seq).
    scan = SegmentScan(buf, path, first_seq, is_last, after_seq=at_seq, until_seq=at_seq)
    for _ in scan:
        pass
    if scan.expect_seq <= at_seq:
        raise CorruptionError(f"the log ends at seq {scan.expect_seq - 1}, before seq {at_seq}",
                              path=path, offset=scan.end)
    data = [encode_segment_header(first_seq, log_start, uid),
            buf[SEGMENT_HEADER_SIZE : scan.end]]
    if scan.expect_seq != at_seq + 1:
        # at_seq falls inside the batch at scan.end: keep that batch's first events only
        frame = _parse_frame(buf, memoryview(buf), scan.end, len(buf))
        assert frame is not None  # the scan checked it
        ts, turn, entries = decode_payload(frame.payload, frame.event_count, path, frame.offset)
        kept = [tuple(entry) for entry in entries[: at_seq - frame.first_seq + 1]]
        data.append(encode_frame(frame.first_seq, ts, turn, kept, MAX_FRAME_PAYLOAD,
                                 check=False))
    content = b"".join(data)
    io.write_new(target, content)
    (last_size,) = _U32.unpack_from(content, len(content) - TRAILER_SIZE)
    (last_crc,) = _U32.unpack_from(content, len(content) - last_size)
    return LogPosition(first_seq, len(content), last_crc)
