"""Segment files as readers see them: plain segments and compacted ones (docs/FORMAT.md,
section 3.2).

A *compacted* segment (segment header major version 2) is what compaction makes of
sealed segments: their frames, byte for byte, zstd-compressed in independent chunks,
and possibly several segments merged into one file. Readers see its *logical* bytes:
the header followed by the frames exactly as a plain segment would hold them, so every
parse, checksum and seq check of the log applies unchanged. Each merged segment stays a
*member* of the file under its own first seq, so a place in the log recorded before the
merge (a snapshot's position, a row of the message index: a segment's first seq and a
byte offset in it) keeps naming the same frame: it is read at the member's start in the
file plus its offset.

A :class:`SegmentFile` is one segment opened for reading: a plain file read with
``pread``, or a compacted file whose chunks are decompressed as they are read. A replay
reads the next compacted segments ahead (:func:`read_ahead`): their compressed chunks
read and checked in the reader's thread, decompressed in a background one.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import os
import struct
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from .checksum import crc32c
from .errors import CorruptionError
from .fsio import FileIO
from .log_format import _PREALLOCATE_MAX, MAX_FRAME_PAYLOAD, MAX_SEGMENT_FILE, frame_end
from .segment_header import (
    COMPACTED_MAJOR,
    SEGMENT_HEADER_SIZE,
    SegmentHeader,
    encode_compacted_header,
)

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

    import zstandard

_MEMBER = struct.Struct("<QII")  # first_seq, start (logical offset), reserved
_CHUNK = struct.Struct("<IIII")  # plain_start, plain_size, packed_size, packed_crc
_TABLES_END = struct.Struct("<II")  # tables_crc, reserved
#: A chunk holds whole frames, about this many plain bytes (one frame may be larger).
CHUNK_BYTES = 1 << 20
#: The most plain bytes one chunk may hold: one largest frame, or CHUNK_BYTES of frames.
MAX_CHUNK_PLAIN = MAX_FRAME_PAYLOAD + (1 << 20)
#: A reader refuses tables longer than this (no writer makes them).
MAX_TABLE_ENTRIES = 1 << 20
#: Decompressed chunks a reader keeps (per LogReader), for reads at known places.
_CACHED_CHUNKS = 8


class Member(NamedTuple):
    first_seq: int  # the first seq of the segment it was
    start: int  # where its frames start in the file's logical bytes


class Chunk(NamedTuple):
    plain_start: int
    plain_size: int
    packed_at: int  # where its compressed bytes start in the file
    packed_size: int
    packed_crc: int


class CompactedTables(NamedTuple):
    members: list[Member]
    chunks: list[Chunk]
    #: the first member starts with a base frame (FORMAT.md 3.3): flag 1 of its entry
    base_first: bool = False


#: A member table entry's flag: the member starts with a base frame (only the first).
MEMBER_BASE = 1


def encode_compacted(first_seq: int, log_start: int, uid: int,
                     members: Sequence[tuple[int, bytes]], level: int = 3) -> bytes:
    """A compacted segment file holding ``members``: (first seq, the frames of that
    segment, the bytes after its header up to its last frame), in seq order."""
    plain: list[bytes] = []
    table: list[Member] = []
    at = SEGMENT_HEADER_SIZE
    # a base frame (type 2) first: flagged, so that readers know without decompressing
    base_first = bool(members) and struct.unpack_from("<I", members[0][1], 20)[0] in (2, 5)
    for member_first, frames in members:
        table.append(Member(member_first, at))
        plain.append(frames)
        at += len(frames)
    plain_end = at
    import zstandard  # here, not at the top: a reader of plain segments never needs it

    compressor = zstandard.ZstdCompressor(level=level, write_content_size=True)
    chunks: list[tuple[int, int, bytes]] = []
    data = b"".join(plain)
    off = 0
    for start, end in _chunk_bounds(data):
        packed = compressor.compress(data[start:end])
        chunks.append((SEGMENT_HEADER_SIZE + start, end - start, packed))
        off = end
    assert off == len(data)
    tables = b"".join(_MEMBER.pack(m.first_seq, m.start, MEMBER_BASE if i == 0 and base_first
                                   else 0) for i, m in enumerate(table)) + b"".join(
        _CHUNK.pack(start, size, len(packed), crc32c(packed)) for start, size, packed in chunks)
    header = encode_compacted_header(first_seq, log_start, uid, plain_end, len(table),
                                     len(chunks))
    return b"".join([header, tables, _TABLES_END.pack(crc32c(tables), 0),
                     *(packed for _, _, packed in chunks)])


def _chunk_bounds(data: bytes) -> list[tuple[int, int]]:
    """Chunk limits at frame boundaries: each frame ends in its size (the u32 before its
    last 4 bytes), so the frames are walked from their sizes without decoding them."""
    bounds: list[tuple[int, int]] = []
    start = off = 0
    view = memoryview(data)
    while off < len(data):
        length, frame_type = struct.unpack_from("<I12xI", view, off + 4)
        off = frame_end(off, length, frame_type)
        if off - start >= CHUNK_BYTES:
            bounds.append((start, off))
            start = off
    if start < len(data):
        bounds.append((start, len(data)))
    return bounds


def decode_tables(raw: bytes, header: SegmentHeader, path: str, file_size: int
                  ) -> CompactedTables:
    """The member and chunk tables of a compacted segment (``raw``: the file's bytes from
    its start, at least through the tables), checked against its header and size."""
    members, count = header.members, header.chunks
    entries = members + count
    tables_end = SEGMENT_HEADER_SIZE + entries * 16
    if not 0 < members <= entries <= MAX_TABLE_ENTRIES or len(raw) < tables_end + 8:
        raise CorruptionError("compacted segment's tables are cut short or too long",
                              path=path, offset=SEGMENT_HEADER_SIZE)
    tables = raw[SEGMENT_HEADER_SIZE:tables_end]
    tables_crc, reserved = _TABLES_END.unpack_from(raw, tables_end)
    # the reserved word is outside the CRC: zero, or a flipped bit would go unseen
    if crc32c(tables) != tables_crc or reserved != 0:
        raise CorruptionError("compacted segment's tables do not match their checksum "
                              "(or the reserved word after it is not 0)",
                              path=path, offset=SEGMENT_HEADER_SIZE)
    entries_raw = [_MEMBER.unpack_from(tables, 16 * i) for i in range(members)]
    member_list = [Member(first, start) for first, start, _ in entries_raw]
    for index, (_, _, flags) in enumerate(entries_raw):
        if flags & ~MEMBER_BASE or (flags and index):
            raise CorruptionError(f"compacted segment's member {index} has flags {flags} "
                                  "that no writer sets", path=path,
                                  offset=SEGMENT_HEADER_SIZE + 16 * index)
    for index, member in enumerate(member_list):
        if index == 0:
            bad = member.first_seq != header.first_seq or member.start != SEGMENT_HEADER_SIZE
        else:
            before = member_list[index - 1]
            bad = (member.first_seq <= before.first_seq or member.start <= before.start
                   or member.start >= header.plain_end)
        if bad:
            raise CorruptionError(f"compacted segment's member {index} is out of order",
                                  path=path, offset=SEGMENT_HEADER_SIZE + 16 * index)
    chunk_list: list[Chunk] = []
    plain_at, packed_at = SEGMENT_HEADER_SIZE, tables_end + 8
    for index in range(count):
        start, size, packed_size, packed_crc = _CHUNK.unpack_from(tables, 16 * (members + index))
        if start != plain_at or not 0 < size <= MAX_CHUNK_PLAIN or packed_size == 0:
            raise CorruptionError(f"compacted segment's chunk {index} is out of place",
                                  path=path, offset=SEGMENT_HEADER_SIZE + 16 * (members + index))
        chunk_list.append(Chunk(start, size, packed_at, packed_size, packed_crc))
        plain_at += size
        packed_at += packed_size
    if plain_at != header.plain_end or packed_at != file_size:
        raise CorruptionError(
            f"compacted segment's chunks hold {plain_at} plain bytes in a file of "
            f"{file_size} bytes; its header says {header.plain_end} plain bytes and "
            f"the chunks {packed_at} bytes of file", path=path, offset=0)
    return CompactedTables(member_list, chunk_list, bool(entries_raw[0][2] & MEMBER_BASE))


class ChunkCache:
    """The last few decompressed chunks of compacted segments a reader read, so that
    reads at known places (the message index) do not decompress a chunk each time.
    Keyed by the file's identity: a compacted file never changes once it has its name."""

    def __init__(self) -> None:
        self._chunks: collections.OrderedDict[tuple[int, ...], bytes] = (
            collections.OrderedDict())
        self._lock = threading.Lock()  # a reader may be used from several threads

    def get(self, key: tuple[int, ...]) -> bytes | None:
        with self._lock:
            found = self._chunks.get(key)
            if found is not None:
                self._chunks.move_to_end(key)
            return found

    def put(self, key: tuple[int, ...], plain: bytes) -> None:
        with self._lock:
            self._chunks[key] = plain
            while len(self._chunks) > _CACHED_CHUNKS:
                self._chunks.popitem(last=False)


class SegmentFile:
    """One segment opened for reading, plain or compacted, under the first seq it was
    asked for. Offsets are those of the segment as a plain file: ``pread(n, 64)`` reads
    its first frame. For a member of a merged compacted file, the view starts at the
    member (its frames, then those of the members after it in the same file)."""

    def __init__(self, io: FileIO, fd: int, path: str, header: SegmentHeader,
                 first_seq: int, tables: CompactedTables | None = None,
                 base: int = SEGMENT_HEADER_SIZE, cache: ChunkCache | None = None,
                 identity: tuple[int, ...] = ()) -> None:
        self.io = io
        self.fd = fd
        self.path = path
        self.header = header
        self.first_seq = first_seq
        self.tables = tables
        # The view's byte 64 is byte ``base`` of the file's logical bytes.
        self._shift = base - SEGMENT_HEADER_SIZE
        self._cache = cache
        self._identity = identity
        self._size = None if tables is None else header.plain_end - self._shift

    @property
    def size(self) -> int:
        """The segment's size: a plain file's, taken when first asked (reads at known
        places need none), or a compacted view's logical size."""
        if self._size is None:
            self._size = self.io.size(self.fd)
        return self._size

    @property
    def identity(self) -> tuple[int, ...]:
        """The compacted file's (device, inode, size, mtime): it never changes once it has
        its name, so what was read of it can be kept under this key. Empty for a plain
        segment."""
        return self._identity

    @property
    def starts_with_base(self) -> bool:
        """Whether this view starts with a base frame, so its member table says: a
        compacted file read from its start, whose first member is flagged."""
        return bool(self.tables is not None and self.tables.base_first
                    and self._shift == 0)

    @property
    def compacted(self) -> bool:
        return self.tables is not None

    @property
    def scan_header(self) -> SegmentHeader:
        """The header a scan of this view checks against: a compacted file was synced
        whole before it got its name, so its mark claims every frame in the view."""
        if self.tables is None:
            return self.header
        return dataclasses.replace(self.header, synced_end=self.size)

    @property
    def members_after(self) -> tuple[int, ...]:
        """First seqs of the segments merged into this file after the view's start: a
        file of that name is a leftover of the merge (the same frames), not the next
        segment."""
        if self.tables is None:
            return ()
        start = self._shift + SEGMENT_HEADER_SIZE
        return tuple(m.first_seq for m in self.tables.members if m.start > start)

    def close(self) -> None:
        self.io.close(self.fd)

    def __enter__(self) -> SegmentFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pread(self, size: int, offset: int) -> bytes:
        """Up to ``size`` bytes at ``offset`` of the segment; shorter only at its end."""
        if self.tables is None:
            return self.io.pread(self.fd, size, offset)
        if offset < SEGMENT_HEADER_SIZE:
            head = self.header.raw[offset:SEGMENT_HEADER_SIZE]
            rest = self.pread(size - len(head), SEGMENT_HEADER_SIZE) if size > len(head) else b""
            return head[:size] + rest
        start = offset + self._shift
        return b"".join(self._plain(start, min(start + size, self.header.plain_end)))

    def file_offset(self, offset: int) -> int:
        """The offset in the file's logical bytes of the view's ``offset``."""
        return offset + self._shift

    def read_all(self) -> bytes:
        """The whole segment: its header, then every frame from the view's start on."""
        if self.tables is None:
            return self.io.pread(self.fd, self.size, 0)
        packed = self.read_packed()
        pieces = decompress_chunks(packed)
        if pieces:
            pieces[0] = memoryview(pieces[0])[packed.skip:]
        return b"".join([self.header.raw, *pieces])

    def read_packed(self) -> PackedChunks:
        """A compacted view's chunks as the file holds them, read in one ``pread`` and
        each checked (its checksum, the size its zstd header claims), for
        :func:`decompress_chunks` to decompress, in this thread or another; not through
        the cache, which a whole read would only churn."""
        if self.tables is None:
            raise ValueError(f"{self.path} is not a compacted segment")
        start = self._shift + SEGMENT_HEADER_SIZE
        chunks = self._chunks_between(start, self.header.plain_end)
        if not chunks:
            return PackedChunks(self.path, [], [], 0)
        at = chunks[0].packed_at
        raw = memoryview(self.io.pread(
            self.fd, chunks[-1].packed_at + chunks[-1].packed_size - at, at))
        packed = [raw[chunk.packed_at - at:chunk.packed_at - at + chunk.packed_size]
                  for chunk in chunks]
        for chunk, data in zip(chunks, packed, strict=True):
            _check_packed(chunk, data, self.path)
        return PackedChunks(self.path, chunks, packed, start - chunks[0].plain_start)

    def data_end(self) -> int:
        """Offset just past the last non-zero byte (a compacted file ends in a frame)."""
        if self.tables is not None:
            return self.size
        return file_data_end(self.io, self.fd)

    def _chunks_between(self, start: int, end: int) -> list[Chunk]:
        """The chunks holding logical bytes ``start`` to ``end`` of a compacted file."""
        assert self.tables is not None
        chunks = self.tables.chunks
        if end <= start:
            return []
        index = max(bisect.bisect_right(chunks, start, key=_plain_start) - 1, 0)
        found = []
        while index < len(chunks) and chunks[index].plain_start < end:
            found.append(chunks[index])
            index += 1
        return found

    def _plain(self, start: int, end: int) -> list[bytes]:
        """The logical bytes ``start`` to ``end`` of a compacted file, one piece per chunk
        they touch, each chunk read through the cache (a read at a known place, whose
        chunk the next read likely needs again)."""
        parts = []
        for chunk in self._chunks_between(start, end):
            plain = self._chunk(chunk)
            low = max(start, chunk.plain_start) - chunk.plain_start
            high = min(end, chunk.plain_start + chunk.plain_size) - chunk.plain_start
            parts.append(plain if low == 0 and high == len(plain) else plain[low:high])
        return parts

    def _chunk(self, chunk: Chunk) -> bytes:
        """One chunk, decompressed, through the cache."""
        key = (*self._identity, chunk.plain_start)
        if self._cache is not None:
            found = self._cache.get(key)
            if found is not None:
                return found
        packed = self.io.pread(self.fd, chunk.packed_size, chunk.packed_at)
        _check_packed(chunk, packed, self.path)
        plain = _decompress(chunk, packed, self.path)
        if self._cache is not None:
            self._cache.put(key, plain)
        return plain


class LoadedSegment(NamedTuple):
    """A segment read whole for a scan: a plain one's file in ``buf``; a compacted
    view's frames as they decompress, chunk by chunk (never joined: a copy), in ``buf``
    and ``more``, ``buf`` holding the view from byte ``origin`` on (its first chunk may
    start before the view: a scan starts at byte 64)."""

    buf: bytes | memoryview
    header: SegmentHeader
    members: tuple[int, ...]
    path: str
    base_first: bool = False
    more: tuple[bytes | memoryview, ...] = ()
    origin: int = 0

    @classmethod
    def compacted(cls, segment: SegmentFile, packed: PackedChunks,
                  pieces: list[bytes | memoryview]) -> LoadedSegment:
        """A compacted ``segment``'s view, its chunks ``packed`` decompressed (``pieces``)."""
        first, *more = pieces or [b""]
        return cls(first, segment.scan_header, segment.members_after, segment.path,
                   segment.starts_with_base, tuple(more), SEGMENT_HEADER_SIZE - packed.skip)


_ahead: tuple[int, ThreadPoolExecutor] | None = None
_ahead_lock = threading.Lock()


def read_ahead(segment: SegmentFile) -> Future[LoadedSegment]:
    """The compacted ``segment``'s view, read here and decompressed in the background,
    while the caller reads the segment before it: the replay of a compacted log then
    costs about what a plain one does, when a core is free. Only the decompression runs
    in the thread (one shared thread; made again in a forked child, where the parent's
    thread does not run): zstd releases the GIL while it works, and the reads and checks
    stay here, where each would make the thread wait for the GIL again."""
    packed = segment.read_packed()
    return prefetch_pool().submit(_decompressed, segment, packed)


def prefetch_pool() -> ThreadPoolExecutor:
    """The one thread that works ahead of a replay (decompression, the chain's hash),
    made again in a forked child, where the parent's thread does not run."""
    from concurrent.futures import ThreadPoolExecutor

    global _ahead
    with _ahead_lock:
        if _ahead is None or _ahead[0] != os.getpid():
            _ahead = (os.getpid(), ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="fsstore-prefetch"))
        return _ahead[1]


def _decompressed(segment: SegmentFile, packed: PackedChunks) -> LoadedSegment:
    return LoadedSegment.compacted(segment, packed, decompress_chunks(packed))


class PackedChunks(NamedTuple):
    """Chunks of a compacted file read and checked, not yet decompressed."""

    path: str
    chunks: list[Chunk]
    packed: list[memoryview]  # each chunk's compressed bytes
    skip: int  # bytes of the first chunk before the view's start


def decompress_chunks(packed: PackedChunks) -> list[bytes | memoryview]:
    """The chunks of ``packed`` decompressed, each ``bytes`` or a read-only memoryview
    of its ``plain_size`` bytes. With python-zstandard's C backend all of them decompress in one
    call that releases the GIL once: a thread decompressing ahead of a reader then waits
    for the GIL once per segment, not once per chunk (each wait lasts as long as the
    reader's thread keeps the GIL, up to the interpreter's switch interval, 5 ms)."""
    import zstandard

    chunks, path = packed.chunks, packed.path
    if len(chunks) > 1 and _multi():
        sizes = struct.pack(f"<{len(chunks)}Q", *(chunk.plain_size for chunk in chunks))
        try:
            frames: list[bytes | bytearray | memoryview] = list(packed.packed)
            found = _decompressor().multi_decompress_to_buffer(frames,
                                                               decompressed_sizes=sizes)
        except zstandard.ZstdError:
            pass  # decompressed one by one below, to name the chunk that fails
        else:
            # the sizes were given, and each chunk's zstd header claims its own (checked):
            # a chunk decompressing to another size fails above
            # (a buffer segment holds its part of one buffer for them all: typeshed
            # does not know it has the buffer protocol)
            pieces: list[bytes | memoryview] = [memoryview(found[index])  # type: ignore[arg-type]
                                                for index in range(len(chunks))]
            if [len(piece) for piece in pieces] == [c.plain_size for c in chunks]:
                return pieces
    return [_decompress(chunk, data, path) for chunk, data in
            zip(chunks, packed.packed, strict=True)]


def _check_packed(chunk: Chunk, packed: bytes | memoryview, path: str) -> None:
    """Refuse a chunk's compressed bytes whose checksum fails, or whose zstd header claims
    another size than the table's: zstd allocates the size a frame's header claims before
    it decompresses, and damage there must not make a reader allocate gigabytes (a writer
    always records the size, which is the table's)."""
    # the checksum holding the GIL (some tens of microseconds): released, a thread
    # decompressing ahead would wait for the GIL again after it (see decompress_chunks)
    import zstandard

    if len(packed) != chunk.packed_size or crc32c(packed, 0, 0) != chunk.packed_crc:
        raise CorruptionError("compacted chunk does not match its checksum",
                              path=path, offset=chunk.packed_at)
    try:
        claimed = zstandard.frame_content_size(packed)
    except zstandard.ZstdError as exc:
        raise CorruptionError(f"compacted chunk does not decompress: {exc}",
                              path=path, offset=chunk.packed_at) from None
    if claimed != chunk.plain_size:
        raise CorruptionError(
            f"compacted chunk says it decompresses to {claimed} bytes, its table "
            f"says {chunk.plain_size}", path=path, offset=chunk.packed_at)


def _decompress(chunk: Chunk, packed: bytes | memoryview, path: str) -> bytes:
    """A chunk's checked compressed bytes (see _check_packed), decompressed."""
    import zstandard

    try:
        plain = _decompressor().decompress(packed, max_output_size=chunk.plain_size)
    except zstandard.ZstdError as exc:
        raise CorruptionError(f"compacted chunk does not decompress: {exc}",
                              path=path, offset=chunk.packed_at) from None
    if len(plain) != chunk.plain_size:
        raise CorruptionError(
            f"compacted chunk decompresses to {len(plain)} bytes, its table says "
            f"{chunk.plain_size}", path=path, offset=chunk.packed_at)
    return plain


def file_data_end(io: FileIO, fd: int) -> int:
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


def _plain_start(chunk: Chunk) -> int:
    return chunk.plain_start


_local = threading.local()
#: Whether python-zstandard's C backend is the one loaded: it decompresses many frames in
#: one call (its cffi one does not). None until a compacted read first asks (zstandard is
#: imported then, not by every reader).
_MULTI: bool | None = None


def _multi() -> bool:
    global _MULTI
    if _MULTI is None:
        import zstandard

        _MULTI = zstandard.backend == "cext"
    return _MULTI


def _decompressor() -> zstandard.ZstdDecompressor:
    """This thread's decompressor: one is reused (making one per chunk costs more than a
    small chunk's decompression), but not shared, as python-zstandard's are not safe to
    use from two threads at once."""
    found: zstandard.ZstdDecompressor | None = getattr(_local, "decompressor", None)
    if found is None:
        import zstandard

        found = _local.decompressor = zstandard.ZstdDecompressor()
    return found


def open_compacted(io: FileIO, fd: int, path: str, header: SegmentHeader, first_seq: int,
                   cache: ChunkCache | None) -> SegmentFile:
    """A compacted file opened under ``first_seq``: its own first seq, or a member's."""
    size = io.size(fd)
    if size > MAX_SEGMENT_FILE or header.plain_end > MAX_SEGMENT_FILE:
        raise CorruptionError(f"compacted segment of {size} bytes ({header.plain_end} plain) "
                              "is larger than any writer makes; it is not read", path=path)
    head = io.pread(fd, SEGMENT_HEADER_SIZE + 16 * (header.members + header.chunks) + 8, 0)
    tables = decode_tables(head, header, path, size)
    base = SEGMENT_HEADER_SIZE
    if first_seq != header.first_seq:
        found = [m for m in tables.members if m.first_seq == first_seq]
        if not found:
            raise FileNotFoundError(f"{path} holds no segment {first_seq}")
        base = found[0].start
    info = os.fstat(fd)
    identity = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
    return SegmentFile(io, fd, path, header, first_seq, tables, base, cache, identity)


__all__ = ["COMPACTED_MAJOR", "ChunkCache", "LoadedSegment", "PackedChunks", "SegmentFile",
           "decompress_chunks", "encode_compacted", "file_data_end", "open_compacted",
           "prefetch_pool", "read_ahead"]
