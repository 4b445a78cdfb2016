"""Reading frames at known places: the frames in a given byte range of a segment (what
the message index points at) and every frame from a frame boundary to the end of the log
(the message index catching up, an export's walk), without the segment-at-a-time scans
of ``log.py``. ``LogReader.read_frames``, ``frames_from`` and ``goes_on`` call these.

Each frame is checked against its checksum, and in a chained log (FORMAT.md 3.4) its
chain value, by the run of its segment up to it (``chain_reads.vouch``), before it is
returned.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from .chain_reads import vouch
from .errors import CorruptionError
from .log_format import (
    _FRAME_HEADER,
    BASE_FRAMES,
    FRAME_HEADER_SIZE,
    MAX_FRAME_PAYLOAD,
    MAX_SEGMENT_FILE,
    TRAILER_SIZE,
    _parse_frame,
    _valid_frame_after,
    base_misplaced,
    decode_base,
    decode_payload,
)
from .segment_header import SEGMENT_HEADER_SIZE

if TYPE_CHECKING:
    from .log import LogPosition, LogReader
    from .segment_file import SegmentFile


class Frame(NamedTuple):
    """One frame read at a known place: segment ``segment``, bytes ``offset`` to
    ``offset + size``; ``entries`` is None when it was not decoded."""

    segment: int
    offset: int
    size: int
    first_seq: int
    event_count: int
    ts: float
    turn: int
    entries: list[tuple[str, Any]] | None
    payload: memoryview | None = None  # the undecoded payload, when not decoded


#: What ``frames_from`` reads of a segment first: enough for a few small frames.
_FIRST_CHUNK = 16 * 1024


def _holds_more(raw: bytes) -> bool:
    """Whether bytes where no whole frame starts may hold the start of a longer one: a
    frame header with a length (else they are zeros a writer preallocated, or damage)."""
    if len(raw) < FRAME_HEADER_SIZE:
        return False
    _, length, _, count, _ = _FRAME_HEADER.unpack_from(raw)
    fits = length + FRAME_HEADER_SIZE <= len(raw) - TRAILER_SIZE
    return bool(0 < length <= MAX_FRAME_PAYLOAD and count > 0 and not fits)


def _walk_frames(raw: bytes, path: str, origin: int, segment: int,
                 marker: bytes | None = None, *, decode: bool = True) -> Iterator[Frame]:
    """The whole checksum-valid frames at the start of ``raw`` (file bytes from
    ``origin``), until the first bytes that are not one."""
    view, off, limit = memoryview(raw), 0, len(raw)
    expect: int | None = None
    while True:
        frame = _parse_frame(raw, view, off, limit)
        if frame is None or (expect is not None and frame.first_seq != expect):
            return
        size = frame.size
        ts, turn, entries = 0.0, 0, None
        if frame.frame_type in BASE_FRAMES:
            # the base of a log retention shortened: no events, only where they go on
            if origin + off != SEGMENT_HEADER_SIZE:
                raise base_misplaced(path, origin + off)
            base = decode_base(frame.payload, path, origin + off)
            yield Frame(segment, origin + off, size, frame.first_seq, frame.event_count,
                        base.ts, base.turn, None, None if decode else frame.payload)
        elif not decode:
            yield Frame(segment, origin + off, size, frame.first_seq, frame.event_count, ts,
                        turn, None, frame.payload)
        else:
            if marker is None or raw.find(marker, off + FRAME_HEADER_SIZE, off + size) >= 0:
                ts, turn, entries = decode_payload(frame.payload, frame.event_count, path,
                                                   origin + off)
            yield Frame(segment, origin + off, size, frame.first_seq, frame.event_count, ts,
                        turn, entries)
        expect = frame.first_seq + frame.event_count
        off += size


def read_frames(log: LogReader, first_seq: int, start: int, end: int, *, decode: bool = True
                ) -> list[Frame]:
    """The frames in bytes ``start`` to ``end`` of segment ``first_seq``, in one read:
    what the message index points at. Each is checksum-checked; with ``decode``
    false its payload is left for the caller to decode (``Frame.payload``). Raises
    CorruptionError naming the file and offset when those bytes are not whole
    checksum-valid frames (the caller's positions are wrong, or the segment is
    damaged), FileNotFoundError when the segment is gone (a clear)."""
    _need_key(log)
    with log.open_segment(first_seq) as segment:
        path = segment.path
        raw = segment.pread(end - start, start) if end > start else b""
        frames = list(_walk_frames(raw, path, start, first_seq, decode=decode))
        if len(raw) != end - start or sum(frame.size for frame in frames) != end - start:
            walked = start + sum(frame.size for frame in frames)
            raise CorruptionError(f"no whole record at byte {walked} (bytes {start} to "
                                  f"{end} were expected to hold whole records)", path=path,
                                  offset=walked)
        if frames:
            # vouched for by the run of their segment up to them (FORMAT.md 3.4)
            last = frames[-1]
            vouch(log, segment, start, end, last.first_seq + last.event_count, read=raw)
    return frames


def frames_from(log: LogReader, position: LogPosition, marker: bytes | None = None,
                next_seq: int | None = None) -> Iterator[Frame]:
    """The frames from ``position`` (a frame boundary) to the end of the log, segment
    after segment, decoding only those whose payload holds ``marker``. ``next_seq``
    is the seq after the frame that ends at ``position``, when the caller knows it:
    where the log goes on when that frame ended its segment.

    Stops at the end of the log, and at a torn tail (bytes that are no whole frame
    at the end of the newest segment, with no valid frame after them). Damage, bytes
    that are no frame in a sealed segment or followed by a valid frame, raises
    CorruptionError naming the file and offset, as ``events`` does: what it returns
    is a prefix of the log, never a part with a hole. Reads a segment in growing
    chunks, so that a look for new frames at the end of the log reads a few KiB,
    not the zeros a writer preallocated after it."""
    _need_key(log)
    segment, offset, _ = position
    while True:
        try:
            opened = log.open_segment(segment)
        except FileNotFoundError:
            return
        path = opened.path
        try:
            size = min(opened.size, MAX_SEGMENT_FILE)
            chunk = _FIRST_CHUNK
            while offset < size:
                raw = opened.pread(min(chunk, size - offset), offset)
                frames = list(_walk_frames(raw, path, offset, segment, marker))
                if frames and next_seq is not None and frames[0].first_seq != next_seq:
                    raise CorruptionError(
                        f"record has seq {frames[0].first_seq}, expected {next_seq}",
                        path=path, offset=offset)
                walked = sum(frame.size for frame in frames)
                if frames:
                    # vouched for by the run of their segment up to them (FORMAT.md 3.4);
                    # a last record torn inside its chain value ends the log, as a torn
                    # tail does
                    last = frames[-1]
                    stop = vouch(log, opened, offset, offset + walked,
                                 last.first_seq + last.event_count, torn_ok=True)
                    if stop < offset + walked:
                        yield from (frame for frame in frames if frame.offset < stop)
                        return
                for frame in frames:
                    next_seq = frame.first_seq + frame.event_count
                    yield frame
                if walked == 0:
                    if _holds_more(raw) and len(raw) < size - offset:
                        chunk *= 4  # a frame longer than what was read: read more
                        continue
                    sealed = next_seq is not None and log.io.exists(
                        log.segment_path(next_seq))
                    if sealed or opened.compacted or raw.rstrip(b"\0"):
                        # more than the zeros of the end
                        _check_stop(log, opened, offset, size, next_seq)
                    break
                offset += walked
                chunk = min(max(chunk, walked), 1 << 26)
        finally:
            opened.close()
        # An empty segment (its header only) gives no frame: the next seq is its own
        # first seq, and the log ends there.
        if (next_seq is None or next_seq <= segment
                or not goes_on(log, opened, next_seq)):
            return
        segment, offset = next_seq, SEGMENT_HEADER_SIZE

def goes_on(log: LogReader, segment: SegmentFile, next_seq: int) -> bool:
    """Whether the log goes on at ``next_seq`` after ``segment``, read to its end.

    A segment file named ``next_seq`` says so. Without one, the log ends there,
    unless a compaction merged the segment just read (a leftover file, read before
    it went) and the next one into a compacted file: it unlinks the merged files in
    seq order, so when the next one is gone and the one just read is still there,
    the next one was never merged: the log ends."""
    if log.io.exists(log.segment_path(next_seq)):
        return True
    gone = not log.io.exists(segment.path)
    header = segment.header
    if gone or (not segment.compacted and segment.first_seq == header.log_start):
        # Dropped by a retention meanwhile (unlinked, or the log start's file,
        # replaced by the base): the log goes on after the base.
        base = log.history_base()
        if base is not None and base.seq >= next_seq - 1 >= segment.first_seq:
            return True
    if segment.compacted or not gone:
        return False
    try:
        log.open_segment(next_seq).close()
    except FileNotFoundError:
        return False
    return True

def _need_key(log: LogReader) -> None:
    """A keyed chain's records are read with its key only (ChainKeyRequired without it),
    before anything is read."""
    if log.chain is not None:
        log.chain.mac  # noqa: B018


def _check_stop(log: LogReader, segment: SegmentFile, offset: int, size: int,
                next_seq: int | None) -> None:
    """``frames_from`` found no whole frame at ``offset``: the end of the log or a
    torn tail, unless the log goes on after it (damage). A compacted segment is
    sealed, and ends in its last frame."""
    path = segment.path
    if segment.compacted or (next_seq is not None
                             and log.io.exists(log.segment_path(next_seq))):
        if segment.data_end() > offset:
            raise CorruptionError("damaged record in a sealed segment", path=path,
                                  offset=offset)
        return
    rest = segment.pread(size - offset, offset)
    if not rest.rstrip(b"\0"):
        return  # the end of the log: nothing, or zeros a writer preallocated
    later = _valid_frame_after(rest, memoryview(rest), 0, len(rest))
    if later is not None:
        raise CorruptionError(
            f"damaged record followed by a valid one (seq {later.first_seq} at byte "
            f"{offset + later.offset})", path=path, offset=offset)
