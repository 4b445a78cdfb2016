"""The 64-byte header of a log segment (docs/FORMAT.md, sections 3 and 3.1).

Version 1.1 of the header fills the 20 bytes version 1.0 reserved:

- ``uid``: the session that wrote the segment, so that a reader refuses another
  session's segment put in its place (``identity.py``);
- ``static_crc``: a CRC of the bytes that never change (0-47);
- the synced mark ``synced_end`` and its CRC: the frames before that offset were made
  durable by a barrier, so a reader can tell them missing. A writer rewrites only the
  mark's 12 bytes, after the fdatasync that made the frames durable.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass

from .checksum import crc32c
from .errors import CorruptionError, FormatVersionError
from .identity import NO_UID

SEGMENT_MAGIC = b"\x89FSLOG\r\n"
SEGMENT_MAJOR = 1
SEGMENT_MINOR = 1
#: A compacted segment (format 1.6, FORMAT.md 3.2): sealed frames, zstd-compressed.
COMPACTED_MAJOR = 2
COMPACTED_MINOR = 0
_SEGMENT_HEADER = struct.Struct("<8sHHIQQQ20sI")
SEGMENT_HEADER_SIZE = _SEGMENT_HEADER.size  # 64
# Version 1.1 fills the 20 reserved bytes: the session's uid, a CRC of the fields that
# never change (bytes 0-47), and the synced mark with its own CRC (docs/FORMAT.md 3.1).
_IDENTITY = struct.Struct("<QI")  # uid, static_crc: bytes 40-51
_MARK = struct.Struct("<II")  # synced_end, mark_crc: bytes 52-59
_STATIC_END = 48  # bytes 0-47: magic .. uid
MARK_AT = 52
_U32 = struct.Struct("<I")
# A compacted header's bytes 40-59: uid, plain_end, member count, chunk count.
_COMPACTED = struct.Struct("<QIII")


def encode_segment_header(first_seq: int, log_start: int, uid: int = NO_UID) -> bytes:
    """A new segment's header (version 1.1): its range, the session's uid, no synced
    mark yet."""
    fixed = _SEGMENT_HEADER.pack(
        SEGMENT_MAGIC, SEGMENT_MAJOR, SEGMENT_MINOR, SEGMENT_HEADER_SIZE,
        first_seq, log_start, time.time_ns(), bytes(20), 0,
    )[:40] + _IDENTITY.pack(uid, 0)[:8]
    return mark_segment_header(fixed + _U32.pack(crc32c(fixed)), 0)


def mark_segment_header(static: bytes, synced_end: int) -> bytes:
    """The 64-byte header of a 1.1 segment whose first 52 bytes are ``static`` (never
    rewritten with other values), with the synced mark ``synced_end``."""
    mark = _U32.pack(synced_end)
    body = static + mark + _U32.pack(crc32c(static[_STATIC_END:] + mark))
    return body + _U32.pack(crc32c(body))


def encode_compacted_header(first_seq: int, log_start: int, uid: int, plain_end: int,
                            members: int, chunks: int) -> bytes:
    """The header of a compacted segment (version 2.0, FORMAT.md 3.2)."""
    body = _SEGMENT_HEADER.pack(
        SEGMENT_MAGIC, COMPACTED_MAJOR, COMPACTED_MINOR, SEGMENT_HEADER_SIZE,
        first_seq, log_start, time.time_ns(), bytes(20), 0,
    )[:40] + _COMPACTED.pack(uid, plain_end, members, chunks)
    return body + _U32.pack(crc32c(body))


@dataclass(frozen=True)
class SegmentHeader:
    first_seq: int
    log_start: int
    created_ns: int
    minor: int = 0
    uid: int = NO_UID  # the session that wrote it (1.1); NO_UID in a 1.0 header
    synced_end: int = 0  # a barrier made the frames before this offset durable (1.1)
    static: bytes = b""  # the 52 bytes a writer keeps when it rewrites the mark (1.1)
    # A compacted segment (2.0): its logical size and table lengths; ``raw`` the header.
    compacted: bool = False
    plain_end: int = 0
    members: int = 0
    chunks: int = 0
    raw: bytes = b""

    @property
    def has_uid(self) -> bool:
        """Whether the header names the session that wrote it (1.1 and compacted)."""
        return self.compacted or self.minor >= 1


def decode_segment_header(raw: bytes, path: str) -> SegmentHeader:
    """Check and decode a segment header.

    A 1.1 header is rewritten in place by barriers (its synced mark). The bytes that
    never change carry their own CRC, so a rewrite that tore (a crash, or a copy or a
    reader that caught it half done) still leaves a readable header: the mark is then
    taken as absent unless its own CRC holds, which claims less and is always safe."""
    if len(raw) < SEGMENT_HEADER_SIZE:
        raise CorruptionError("segment header is cut short", path=path, offset=0)
    magic, major, minor, header_size, first_seq, log_start, created_ns, _, crc = (
        _SEGMENT_HEADER.unpack_from(raw)
    )
    if magic != SEGMENT_MAGIC:
        raise CorruptionError("not an fsstore segment (bad magic)", path=path, offset=0)
    whole = crc32c(raw[: SEGMENT_HEADER_SIZE - 4]) == crc
    if major == COMPACTED_MAJOR and whole:
        return _decode_compacted(raw, first_seq, log_start, created_ns, minor, header_size,
                                 path)
    uid, static_crc = _IDENTITY.unpack_from(raw, 40)
    versioned = major == SEGMENT_MAJOR and minor >= 1
    static_ok = versioned and crc32c(raw[:_STATIC_END]) == static_crc
    if not whole and not static_ok:
        raise CorruptionError("segment header checksum mismatch", path=path, offset=0)
    if major > SEGMENT_MAJOR:
        raise FormatVersionError(
            f"{path}: segment format {major}.{minor} is newer than the "
            f"{COMPACTED_MAJOR}.{COMPACTED_MINOR} this fsstore reads; upgrade fsstore to "
            "read it")
    if header_size != SEGMENT_HEADER_SIZE:
        raise CorruptionError(f"unexpected segment header size {header_size}", path=path, offset=0)
    if log_start > first_seq or first_seq == 0:
        raise CorruptionError(f"segment header says the log starts at seq {log_start}, after "
                              f"its own first seq {first_seq}", path=path, offset=0)
    if not versioned:
        return SegmentHeader(first_seq, log_start, created_ns, minor)
    if not static_ok:
        raise CorruptionError("segment header checksum mismatch (its fixed fields)",
                              path=path, offset=0)
    synced_end, mark_crc = _MARK.unpack_from(raw, MARK_AT)
    if crc32c(raw[_STATIC_END:MARK_AT + 4]) != mark_crc:
        if whole:
            raise CorruptionError("segment header's synced mark does not match its "
                                  "checksum", path=path, offset=MARK_AT)
        synced_end = 0  # a torn rewrite of the mark: claim nothing
    elif 0 < synced_end < SEGMENT_HEADER_SIZE:
        raise CorruptionError(f"segment header's synced mark {synced_end} is out of range",
                              path=path, offset=MARK_AT)
    return SegmentHeader(first_seq, log_start, created_ns, minor, uid, synced_end,
                         bytes(raw[:MARK_AT]))


def _decode_compacted(raw: bytes, first_seq: int, log_start: int, created_ns: int,
                      minor: int, header_size: int, path: str) -> SegmentHeader:
    """A compacted header whose CRC holds (it is written once, never rewritten)."""
    if header_size != SEGMENT_HEADER_SIZE:
        raise CorruptionError(f"unexpected segment header size {header_size}", path=path, offset=0)
    if log_start > first_seq or first_seq == 0:
        raise CorruptionError(f"segment header says the log starts at seq {log_start}, after "
                              f"its own first seq {first_seq}", path=path, offset=0)
    uid, plain_end, members, chunks = _COMPACTED.unpack_from(raw, 40)
    if plain_end <= SEGMENT_HEADER_SIZE:
        raise CorruptionError(f"compacted segment header says it holds {plain_end} bytes",
                              path=path, offset=48)
    # the whole data of a sealed segment was synced before it was compacted
    return SegmentHeader(first_seq, log_start, created_ns, minor, uid, plain_end, b"",
                         True, plain_end, members, chunks, bytes(raw[:SEGMENT_HEADER_SIZE]))


def check_synced(end: int, synced_end: int, path: str) -> None:
    """Raise if the good records of a segment end (at ``end``) before what a barrier made
    durable (``synced_end``, the header's mark): synced records are gone (zeroed, cut
    off or damaged), which no crash can cause."""
    if end < synced_end:
        raise CorruptionError(
            f"the segment's records end at byte {end}, but a barrier (finish_turn, sync, "
            f"close or an fsync append) made them durable up to byte {synced_end}: "
            "records that were synced are missing or damaged; restore the segment from a "
            "backup (a folder that is itself a copy put back where it was taken from: "
            "delete its log/tail.hint, docs/FORMAT.md section 3.1)", path=path, offset=end)
