"""The record format of the segmented append log: frames, their checksums and limits, the
events they hold, and the parse of one segment's bytes (:class:`SegmentScan`).

Format (docs/FORMAT.md has the grammar, a worked hex example and the damage rules)::

    segment = header(64 bytes) frame* zero*
    frame   = crc:u32 length:u32 first_seq:u64 count:u32 type:u32   (24 bytes)
              payload(length bytes)  zero-pad to 8  [anchor:32] [chain:32]
              frame_size:u32 "FSE\\n"

Frames of types 3 and 4 are *chained* (FORMAT.md 3.4): their trailer carries a chain
value (and, on a segment's first frame, the anchor), which ``chain_frames.py`` writes and
``chain_check.py`` verifies; their checksum stops before the trailer, which the chain
covers. Here they are parsed like events, and placed (a type 4 starts a segment, a type
3 follows a chained frame).

One frame holds one batch, so a batch is atomic: its checksum covers all of it (every
byte after the crc field). The trailer repeats the frame size and ends in a non-zero
byte, so the last frame of a segment is found from the end of its data without reading
the segment from the start: opening a session costs the same for 10 events as for 10
million.

A writer in durability "fsync" preallocates zeros at the end of the active segment, so
that an fdatasync does not also commit a size change, and cuts them off when it seals
the segment.

The segment header is ``segment_header.py``; the reader that finds a log's segments and
reads them is ``log.py``, the writer ``log_writer.py``. Writers encode with the readers'
own decoder and limits (:func:`encode_frame`), so the two cannot drift apart.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple, cast

import msgspec

from .chain import CHAIN_SIZE
from .checksum import crc32c
from .errors import CorruptionError, FormatVersionError, InvalidEvent, InvalidSeq, RecordTooLarge
from .nesting import MAX_NESTING, too_deep
from .segment_header import SEGMENT_HEADER_SIZE, check_synced

if TYPE_CHECKING:
    from .chain_check import ChainRun

_FRAME_HEADER = struct.Struct("<IIQII")
FRAME_HEADER_SIZE = _FRAME_HEADER.size  # 24
_TRAILER = struct.Struct("<I4s")
TRAILER_SIZE = _TRAILER.size  # 8
TRAILER_MAGIC = b"FSE\n"
FRAME_EVENTS = 1
#: A base frame (FORMAT.md 3.3): the snapshot that replaces the history retention
#: dropped; only ever the first frame of a compacted segment starting the log.
FRAME_BASE = 2
#: Chained events (FORMAT.md 3.4): a chain value in the trailer. Type 4 is a segment's
#: (a compacted member's) first chained frame and also holds the anchor, the chain value
#: before it; type 5 is a chained base frame (its anchor the chain value after the history
#: it stands for: ``chain_base.py``).
FRAME_CHAINED = 3
FRAME_CHAIN_START = 4
FRAME_CHAINED_BASE = 5
#: The bytes a chained frame's trailer holds before its frame_size: anchor and value.
CHAIN_FIELDS = {FRAME_CHAINED: CHAIN_SIZE, FRAME_CHAIN_START: 2 * CHAIN_SIZE,
                FRAME_CHAINED_BASE: 2 * CHAIN_SIZE}
#: The types of base frames: plain or chained.
BASE_FRAMES = frozenset({FRAME_BASE, FRAME_CHAINED_BASE})
#: The types of frames that hold events: plain or chained.
EVENT_FRAMES = frozenset({FRAME_EVENTS, FRAME_CHAINED, FRAME_CHAIN_START})
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


def frame_end(off: int, length: int, frame_type: int) -> int:
    """Where the frame starting at ``off`` ends, its payload ``length`` bytes long."""
    return (off + ((FRAME_HEADER_SIZE + length + 7) & ~7) + CHAIN_FIELDS.get(frame_type, 0)
            + TRAILER_SIZE)


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
    payload = encode_payload(ts, turn, entries, max_bytes, check=check)
    return _framed(frame_body(payload, first_seq, len(entries), FRAME_EVENTS))


def encode_payload(ts: float, turn: int, entries: Sequence[tuple[str, Any]], max_bytes: int,
                   *, check: bool = True) -> bytes:
    """The payload of a frame holding ``entries`` (see :func:`encode_frame`)."""
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
    return payload


def frame_body(payload: bytes, first_seq: int, count: int, frame_type: int) -> bytes:
    """A frame's bytes after its crc up to its trailer: the header's fields, the payload,
    the padding."""
    pad = -(FRAME_HEADER_SIZE + len(payload)) & 7
    return b"".join((_FRAME_FIELDS.pack(len(payload), first_seq, count, frame_type), payload,
                     _ZEROS[:pad]))


def _framed(body: bytes) -> bytes:
    """An unchained frame of ``body`` (see frame_body): its checksum covers the trailer."""
    body += _U32.pack(4 + len(body) + TRAILER_SIZE) + TRAILER_MAGIC
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
    frame_type: int = FRAME_EVENTS

    @property
    def size(self) -> int:
        return frame_end(0, len(self.payload), self.frame_type)


def _parse_frame(buf: bytes | memoryview, view: memoryview, off: int, limit: int
                 ) -> _Frame | None:
    """The checksum-valid frame starting at ``off``, or None."""
    if off + FRAME_HEADER_SIZE + TRAILER_SIZE > limit:
        return None
    crc, length, first_seq, count, frame_type = _FRAME_HEADER.unpack_from(buf, off)
    if length > MAX_FRAME_PAYLOAD or count == 0:
        return None
    body_end = off + ((FRAME_HEADER_SIZE + length + 7) & ~7)
    chained = CHAIN_FIELDS.get(frame_type, 0)
    end = body_end + chained + TRAILER_SIZE
    if end > limit:
        return None
    frame_size, magic = _TRAILER.unpack_from(buf, end - TRAILER_SIZE)
    if magic != TRAILER_MAGIC or frame_size != end - off:
        return None
    # a chained frame's checksum stops before its chain fields: the frame's own chain value
    # covers its crc, so the crc cannot cover the value (FORMAT.md 3.4)
    if crc32c(view[off + 4 : body_end if chained else end]) != crc:
        return None
    start = off + FRAME_HEADER_SIZE
    return _Frame(off, first_seq, count, view[start : start + length], frame_type)


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
    decoder: msgspec.msgpack.Decoder[Any] = _decoder,
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
    if frame.frame_type in BASE_FRAMES:
        base = decode_base(frame.payload, path, frame.offset)
        return base.ts, base.turn, base.kind
    ts, turn, entries = decode_payload(frame.payload, frame.event_count, path, frame.offset,
                                       _tail_decoder)
    try:
        kind, _ = _entry_kind_decoder.decode(entries[-1])
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CorruptionError(f"record payload does not decode: {exc}", path=path,
                              offset=frame.offset) from None
    return ts, turn, kind


# --- base frames (FORMAT.md 3.3) ------------------------------------------------------


class BaseRecord(msgspec.Struct, frozen=True):
    """A base frame's payload: the state image at the last seq it covers (``image``, as
    ``StateImage.body()`` gives it, left encoded until asked for) and the ts, turn and
    kind of that seq's record."""

    image: msgspec.Raw
    ts: float
    turn: Turn
    kind: str


_base_decoder = msgspec.msgpack.Decoder(BaseRecord, ext_hook=refuse_msgpack_ext)


class Base(NamedTuple):
    """The base a log starts with: seqs ``log_start`` to ``seq`` were dropped by
    retention, and ``record`` holds the state image at ``seq``."""

    seq: int
    record: BaseRecord
    path: str
    offset: int

    def image_body(self) -> Any:
        """The image, decoded (CorruptionError, naming the file, when it does not)."""
        try:
            return msgspec.msgpack.decode(self.record.image, ext_hook=refuse_msgpack_ext)
        except (msgspec.DecodeError, ValueError, RecursionError) as exc:
            raise CorruptionError(f"base record's image does not decode: {exc}",
                                  path=self.path, offset=self.offset) from None


def decode_base(payload: bytes | memoryview, path: str, offset: int) -> BaseRecord:
    """A checksum-valid base frame's payload, or CorruptionError."""
    try:
        return _base_decoder.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError, RecursionError) as exc:
        raise CorruptionError(f"base record payload does not decode: {exc}", path=path,
                              offset=offset) from None


def encode_base_frame(first_seq: int, last_seq: int, image: dict[str, Any], ts: float,
                      turn: int, kind: str) -> bytes:
    """The base frame standing for seqs ``first_seq`` to ``last_seq``."""
    payload = base_payload(image, ts, turn, kind)
    return _framed(frame_body(payload, first_seq, last_seq - first_seq + 1, FRAME_BASE))


def base_payload(image: dict[str, Any], ts: float, turn: int, kind: str) -> bytes:
    """A base frame's payload (RecordTooLarge when it is over a record's limit)."""
    payload = _encoder.encode({"image": image, "ts": ts, "turn": turn, "kind": kind})
    length = len(payload)
    if length > MAX_FRAME_PAYLOAD:
        raise RecordTooLarge(f"the state image encodes to {length} bytes, over the "
                             f"{MAX_FRAME_PAYLOAD} a record may hold")
    return payload


def chain_damage(what: str, path: str, offset: int) -> CorruptionError:
    """Damage to the chain (FORMAT.md 3.4): ``what`` names "the chain"."""
    return CorruptionError(f"{what}; restore the file from a backup (were records changed, "
                           "removed or added?)", path=path, offset=offset)


def base_misplaced(path: str, offset: int) -> CorruptionError:
    return CorruptionError("base record (of history dropped by retention) where none may "
                           "be: it is allowed only as the first record of the compacted "
                           "segment the log starts with", path=path, offset=offset)


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

    def __init__(self, buf: bytes | memoryview, path: str, expect_seq: int, is_last: bool,
                 after_seq: int = 0, until_seq: float = math.inf, *, origin: int = 0,
                 marker: bytes | None = None, segment: int | None = None,
                 synced_end: int = 0, members: tuple[int, ...] = (),
                 allow_base: bool = False,
                 more: Sequence[bytes | memoryview] = (), chain: ChainRun | None = None,
                 ) -> None:
        # The bytes after ``buf``, in pieces each starting where the one before ends: the
        # decompressed chunks of a compacted segment, walked one after the other rather
        # than joined into one copy. A chunk holds whole frames (FORMAT.md 3.2), so no
        # frame starts in one piece and ends in the next: one that would is damage.
        self.more = more
        if marker is not None:  # searched with bytes.find
            buf, self.more = bytes(buf), [bytes(piece) for piece in more]
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
        # Segments merged into this (compacted) one after its start: files still under
        # their names are leftovers of the merge, holding the same frames.
        self.members = members
        # The chain of this segment, checked before the walk (chain_check.py); None when
        # the session has none: then a chained frame is damage.
        self.chain = chain
        self.compacted = False  # read from a compacted segment (set by the reader)
        # Whether a base frame may start the segment (the compacted segment the log
        # starts with, read from its start), and the base found there.
        self.allow_base = allow_base
        self.base: Base | None = None
        self.end = max(origin, SEGMENT_HEADER_SIZE)
        self.last: Event | None = None
        self.torn_at: int | None = None

    @property
    def data_end(self) -> int:
        pieces = [self.buf, *self.more]
        last = pieces[-1]
        if last and last[-1] == 0:  # zeros a writer preallocated (a copy of the last piece)
            last = bytes(last).rstrip(b"\0")
        return self.origin + sum(len(piece) for piece in pieces[:-1]) + len(last)

    def __iter__(self) -> Iterator[Event]:
        # The hot path of every read. The frame checks are those of _parse_frame, inlined
        # with the decoding into one loop, and the state kept in locals: a call, a
        # generator hop or an attribute write per frame costs as much as the checksum.
        unpack_header, checksum = _FRAME_HEADER.unpack_from, crc32c
        decode, new_event = _decoder.decode, tuple.__new__
        after_seq, expect = self.after_seq, self.expect_seq
        first_wanted, past_wanted = self.after_seq + 1, self.until_seq + 1
        marker, origin = self.marker, self.origin
        buf, pieces = self.buf, iter(self.more)
        off = self.end - origin
        decoded = None
        # Chained frames (FORMAT.md 3.4): whether the last frame was one (None: unknown,
        # for a walk that starts after the segment's first frame), the members' first seqs
        # (where a type 4 may stand), where a frame whose chain value failed (a tear) stops
        # the walk, and the bytes a chain value that held vouches for.
        run = False if origin + off == SEGMENT_HEADER_SIZE else None
        starts, chain_fields, trailer = frozenset(self.members), CHAIN_FIELDS, _TRAILER.unpack_from
        chain = self.chain
        cut = math.inf if chain is None or chain.cut is None else chain.cut
        covered = 0 if chain is None else chain.covered
        try:
            while True:
                view, limit = memoryview(buf), int(min(len(buf), cut - origin))
                while off + FRAME_HEADER_SIZE + TRAILER_SIZE <= limit:
                    crc, length, seq, count, frame_type = unpack_header(buf, off)
                    if length > MAX_FRAME_PAYLOAD or count == 0:
                        break
                    end = off + ((FRAME_HEADER_SIZE + length + 7) & ~7) + TRAILER_SIZE
                    if frame_type > FRAME_BASE and frame_type in chain_fields:
                        body_end, end = end - TRAILER_SIZE, end + chain_fields[frame_type]
                        if end > limit:
                            break
                        # Bytes a chain value vouches for (checked before the walk) are
                        # what the writer wrote: their checksums and trailers too. The
                        # rest (the last frame's trailer, a torn tail) are checked here;
                        # the checksum stops before the chain fields.
                        if origin + end > covered and (
                                trailer(buf, end - TRAILER_SIZE) != (end - off, TRAILER_MAGIC)
                                or checksum(view[off + 4 : body_end]) != crc):
                            break
                        if frame_type == FRAME_CHAINED and run and not (starts and seq in starts):
                            frame_type = FRAME_EVENTS  # in its place: read as events
                        elif frame_type != FRAME_CHAINED_BASE:
                            run = self._chained(frame_type, run, origin + off, seq in starts)
                            frame_type = FRAME_EVENTS
                        else:  # placed as a base is (below); its chain is chain_check's
                            run = self._chained(frame_type, run, origin + off, seq in starts)
                            frame_type = FRAME_BASE
                    # The checksum covers the trailer too, so a frame that passes it has the
                    # trailer _parse_frame checks: no need to unpack it here.
                    elif end > limit or checksum(view[off + 4 : end]) != crc:
                        break
                    elif run and frame_type == FRAME_EVENTS:
                        raise chain_damage("unchained record after chained ones: the chain "
                                           "stops here", self.path, origin + off)
                    if seq != expect:
                        raise CorruptionError(
                            f"record has seq {seq}, expected {expect} (duplicated, reordered or "
                            "stale record)", path=self.path, offset=origin + off)
                    if frame_type == FRAME_BASE:
                        if not (self.allow_base and origin + off == SEGMENT_HEADER_SIZE):
                            raise base_misplaced(self.path, origin + off)
                        if seq >= past_wanted:
                            return
                        payload = view[off + FRAME_HEADER_SIZE : off + FRAME_HEADER_SIZE + length]
                        record = decode_base(payload, self.path, origin + off)
                        expect = seq + count
                        self.base = Base(expect - 1, record, self.path, origin + off)
                        decoded = None
                        self.last = new_event(Event, (expect - 1, record.ts, record.turn,
                                                      record.kind, None))
                        off = end
                        continue
                    if frame_type != FRAME_EVENTS:
                        raise FormatVersionError(
                            f"{self.path}: record type {frame_type} at byte {origin + off} is "
                            "unknown to this fsstore; upgrade fsstore to read it")
                    if seq >= past_wanted:
                        return  # ``end`` and ``expect_seq`` stay at this frame: the boundary
                    expect = seq + count
                    if expect > first_wanted and (marker is None or cast(bytes, buf).find(
                            marker, off + FRAME_HEADER_SIZE,
                            off + FRAME_HEADER_SIZE + length) >= 0):
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
                if off != limit:
                    break  # no whole frame at ``off``: the end, or damage
                following = next(pieces, None)
                if following is None:
                    break
                origin, off, buf = origin + limit, 0, following
        finally:
            self.expect_seq, self.end = expect, origin + off
            if decoded is not None:
                ts, turn, entries = decoded
                kind, data = entries[-1]
                self.last = new_event(Event, (expect - 1, ts, turn, kind, data))
            elif self.last is not None and self.last.seq != expect - 1:
                self.last = None  # the base, with frames after it not decoded
        if self.end < self.data_end:
            self._stopped_at(buf, origin, off)
        check_synced(self.end, self.synced_end, self.path)

    def _chained(self, frame_type: int, run: bool | None, at: int, member_start: bool
                 ) -> bool:
        """Check the place of a checksum-valid chained frame at byte ``at``, ``run``
        saying whether the frame before it was chained: a type 4 starts the segment or a
        member, a type 3 follows a chained frame of its member; the session must have a
        chain. Returns True (the frame before the next one is chained)."""
        if self.chain is None:
            raise chain_damage("chained record in a log that has no chain (its session "
                               "declares none)", self.path, at)
        start = at == SEGMENT_HEADER_SIZE or member_start
        if frame_type == FRAME_CHAINED_BASE:
            return True
        if frame_type == FRAME_CHAIN_START and not start:
            raise chain_damage("record starting the chain of a segment (type 4) where none "
                               "starts", self.path, at)
        if frame_type == FRAME_CHAINED and (start or run is False):
            raise chain_damage("chained record (type 3) that follows no chained record: "
                               "the chain does not start here", self.path, at)
        return True

    def _stopped_at(self, buf: bytes | memoryview, origin: int, off: int) -> None:
        """The walk found no whole frame at byte ``off`` of the piece ``buf`` (which holds
        the file from byte ``origin``): damage, or the torn tail of the last segment (read
        whole, in one piece)."""
        at = origin + off
        if self.chain is not None and at == self.chain.cut:
            # the last frame, wholly unsynced, holds a chain value that failed: a write torn
            # inside it, taken for a torn tail (check reports it: a forged frame lands here)
            self.torn_at = at
            return
        if not self.is_last:
            raise CorruptionError("damaged record in a sealed segment", path=self.path, offset=at)
        buf = bytes(buf)  # searched with bytes.find (a plain segment's is bytes: no copy)
        later = _valid_frame_after(buf, memoryview(buf), off, len(buf), self.expect_seq)
        if later is not None:
            raise CorruptionError(
                f"damaged record followed by a valid one (seq {later.first_seq} at byte "
                f"{origin + later.offset}); {later.offset - off} bytes cannot be read",
                path=self.path, offset=at)
        self.torn_at = at


def check_seq(seq: object, name: str = "seq") -> int:
    """``seq`` if it is an int >= 0 (a seq some session may have); InvalidSeq if not."""
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise InvalidSeq(f"{name} must be an int >= 0, not {seq!r}")
    return seq
