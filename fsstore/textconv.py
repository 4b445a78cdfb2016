"""The text form of fsstore's files (docs/FORMAT.md, section 21): what ``fsstore
textconv FILE`` prints, and so what ``git diff`` shows of a store committed to git.

Each kind of file is printed in a form that is stable (the same bytes always print the
same text) and that grows the way the file does, so that a diff shows what changed:

- a segment (plain or compacted, of a session's log or a collection's ``wal/``): a
  header line, then one JSON line per event in the form of ``fsstore cat``;
- a snapshot or checkpoint, a lease file, a manifest: sorted, indented JSON;
- a vector shard: a summary (rows, dim, checksum), and its documents one per line;
- a blob: its digest, size and (sniffed) media type, and a text blob's text;
- the message index, the tail hint, the writer lock, a torn tail: what each holds.

The file's kind is recognised from its name (git hands textconv a temporary copy whose
name ends in the original's: ``XXXXXX_00000000000000000001.fslog``) or, failing that,
from its magic bytes. Damage is never fatal: what can be read is printed, and each
damaged range is a line of its own, ``{"damage": {"file", "offset", ...}}``. Nothing is
written, and no lock is taken.

Only light modules are imported here: numpy and zstandard (compacted segments, blobs,
shards, the message index) are imported by the functions that need them, so that a
git diff of a plain segment does not pay for them.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from . import layout
from .checksum import crc32c
from .defaults import TEXTCONV_COMMAND
from .errors import CorruptionError, FormatVersionError, FsStoreError
from .fsio import FileIO
from .identity import to_text as uid_text
from .log_format import (
    _FRAME_HEADER,
    BASE_FRAMES,
    EVENT_FRAMES,
    MAX_SEGMENT_FILE,
    Base,
    Event,
    _parse_frame,
    _valid_frame_after,
    base_misplaced,
    decode_base,
    decode_payload,
)
from .segment_header import (
    COMPACTED_MAJOR,
    SEGMENT_HEADER_SIZE,
    SEGMENT_MAGIC,
    SegmentHeader,
    decode_segment_header,
)

#: Text blobs and unknown text files larger than this print their first bytes only.
MAX_TEXT_BYTES = 1 << 20
#: Files read whole (manifests, hints, lock files) are refused past this size.
MAX_SMALL_FILE = 16 << 20

_SNAPSHOT_MAGIC = b"\x89FSSNAP\n"
_DOCS_MAGIC = b"\x89FSVDOC\n"
_NPY_MAGIC = b"\x93NUMPY"
_INDEX_MAGIC = b"\x89FSMIDX\n"
_LEASE_MAGIC = b"FSLEASE1"
_TOKEN_MAGIC = b"FSTOKEN1"
_BLOB_NAME = re.compile(r"(?:\A|_)([0-9a-f]{64})(\.zst)?\Z")
_TORN_NAME = re.compile(r"(?:\A|_)([0-9]{20})@([0-9]+)\.torn\Z")
_TEXT_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
# Media types told from a blob's first bytes (a blob file does not record its type: the
# reference to it in an event does).
_SNIFFED = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"),
            (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"), (b"%PDF-", "application/pdf"),
            (b"PK\x03\x04", "application/zip"), (b"\x1f\x8b", "application/gzip"),
            (b"\x28\xb5\x2f\xfd", "application/zstd"), (b"\x93NUMPY", "application/x-npy"))


class Damage(NamedTuple):
    """A range of a file that textconv could not read as what the file should hold.

    ``offset`` is a byte offset in the file (None when the whole file is meant), or, with
    ``decompressed``, in the decompressed image of a compacted segment. ``kind`` is
    ``"damaged"`` or ``"torn tail"`` (what a writer that stopped mid-append leaves, which
    readers treat as the end of the log: a note, not a problem)."""

    path: str
    offset: int | None
    reason: str
    length: int | None = None
    kind: str = "damaged"
    decompressed: bool = False

    def line(self) -> str:
        item: dict[str, Any] = {"file": self.path, "offset": self.offset,
                                "reason": self.reason, "kind": self.kind}
        if self.length is not None:
            item["length"] = self.length
        if self.decompressed:
            item["decompressed"] = True
        return _dumps({"damage": item}, sort_keys=True)


def _dumps(value: Any, **options: Any) -> str:
    # The forms `fsstore cat` prints (bytes as {"$base64": ...}, README "Command line"):
    # one encoder for every command that prints what a store holds.
    from .cli._common import dumps

    return dumps(value, **options)


def _event_line(event: Event) -> str:
    from .cli._common import event_json

    return event_json(event)


def _document(value: Any) -> list[str]:
    """Sorted, indented JSON: one line per key, so that a diff shows the keys that changed."""
    return _dumps(value, sort_keys=True, indent=2).split("\n")


# --- entry points ------------------------------------------------------------------------


def lines(path: str, io: FileIO | None = None) -> Iterator[str]:
    """The text form of the fsstore file at ``path``, line by line (without newlines).

    Raises only when the file cannot be opened at all (missing, a folder, a symlink:
    ``FsStoreError`` or ``OSError``); damage inside it is printed as damage lines."""
    io = io or FileIO()
    name = os.path.basename(path)
    fd = io.open(path, os.O_RDONLY)
    try:
        size = io.size(fd)
        head = io.pread(fd, 1024, 0)
    finally:
        io.close(fd)
    render = _RENDERERS[kind_of(name, head, size)]
    try:
        yield from render(io, path, size)
    except (FsStoreError, OSError, ValueError, struct.error, RecursionError) as exc:
        # Each renderer handles the damage it expects; this is the last line of defence,
        # so that a damaged file never stops a git diff.
        offset = exc.offset if isinstance(exc, CorruptionError) else None
        yield Damage(path, offset, f"cannot be read further: {_why(exc)}").line()


def kind_of(name: str, head: bytes, size: int) -> str:
    """The kind of fsstore file a file is, from its name (or the end of it: git's
    temporary copies keep the name after a prefix) and, failing that, its first bytes."""
    if _BLOB_NAME.search(name):
        return "blob"
    by_suffix = ((layout.SEGMENT_SUFFIX, "segment"), (layout.TORN_SUFFIX, "torn"),
                 (layout.SNAPSHOT_SUFFIX, "snapshot"), (layout.CHECKPOINT_SUFFIX, "snapshot"),
                 (layout.DELETED_SUFFIX, "deleted"), (layout.VECTORS_SUFFIX, "vectors"),
                 (layout.DOCS_SUFFIX, "docs"), (".json", "json"))
    for suffix, kind in by_suffix:
        if name.endswith(suffix):
            return kind
    by_name = ((layout.MESSAGE_INDEX, "index"), (layout.TAIL_HINT, "hint"),
               (layout.WRITER_LOCK, "token"), (layout.LEASE_FILE, "lease"),
               (layout.WORKSPACE_LOCK, "lock"))
    for known, kind in by_name:
        if name == known or name.endswith("_" + known):
            return kind
    by_magic = ((SEGMENT_MAGIC, "segment"), (_SNAPSHOT_MAGIC, "snapshot"),
                (_DOCS_MAGIC, "docs"), (_NPY_MAGIC, "vectors"), (_INDEX_MAGIC, "index"),
                (_LEASE_MAGIC, "lease"), (_TOKEN_MAGIC, "token"))
    for magic, kind in by_magic:
        if head.startswith(magic):
            return kind
    if head[512:520] == _LEASE_MAGIC:
        return "lease"
    if head[32:40] == _TOKEN_MAGIC:
        return "token"
    return "other"


def _why(exc: BaseException) -> str:
    if isinstance(exc, CorruptionError):
        return exc.reason
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _read_whole(io: FileIO, path: str, limit: int) -> bytes:
    fd = io.open(path, os.O_RDONLY)
    try:
        size = io.size(fd)
        if size > limit:
            raise CorruptionError(f"file of {size} bytes is larger than any writer makes; "
                                  "it is not read", path=path)
        return io.pread(fd, size, 0)
    finally:
        io.close(fd)


# --- segments (FORMAT.md 3, 3.2, 3.3) ----------------------------------------------------


def _segment(io: FileIO, path: str, size: int) -> Iterator[str]:
    raw = _read_whole(io, path, MAX_SEGMENT_FILE)
    major = int.from_bytes(raw[8:10], "little") if raw[:8] == SEGMENT_MAGIC else None
    if major == COMPACTED_MAJOR:
        yield from _compacted(raw, path)
        return
    header: SegmentHeader | None = None
    try:
        header = decode_segment_header(raw, path)
    except (CorruptionError, FormatVersionError) as exc:
        # salvage reads such a file frame by frame too: its frames are still printed
        yield Damage(path, 0, f"{_why(exc)}; the records after it are read one by one",
                     min(len(raw), SEGMENT_HEADER_SIZE)).line()
    else:
        yield _header_line(header)
    first = header.first_seq if header is not None else None
    synced_end = header.synced_end if header is not None else None
    yield from _frames(raw, path, first, synced_end=synced_end, sealed=False,
                       base_allowed=False)


def _header_line(header: SegmentHeader, tables: Any = None) -> str:
    # The synced mark is left out: a writer rewrites it in place at each barrier, and it
    # is no part of the history (a diff of an active segment shows only added events).
    item: dict[str, Any] = {
        "fsstore": "segment", "first_seq": header.first_seq, "log_start": header.log_start,
        "created_ns": header.created_ns,
        "uid": uid_text(header.uid) if header.has_uid else None,
        "version": f"{COMPACTED_MAJOR if header.compacted else 1}.{header.minor}"}
    if tables is not None:
        item["compacted"] = True
        item["members"] = [member.first_seq for member in tables.members]
        item["chunks"] = len(tables.chunks)
    return _dumps(item, sort_keys=True)


def _compacted(raw: bytes, path: str) -> Iterator[str]:
    from .salvage import _compacted_image  # a damaged chunk read as zeros
    from .segment_file import decode_tables

    try:
        image, header, bad = _compacted_image(raw, path)
        tables = decode_tables(raw, header, path, len(raw))
    except (CorruptionError, FormatVersionError) as exc:
        # its tables place the chunks: without them nothing in it can be read
        offset = exc.offset if isinstance(exc, CorruptionError) else 0
        yield Damage(path, offset, f"compacted segment cannot be read: {_why(exc)}").line()
        return
    yield _header_line(header, tables)
    for chunk in bad:
        yield Damage(path, chunk.packed_at, f"{chunk.reason}: its records (from byte "
                     f"{chunk.plain_start} of the decompressed image) are not shown",
                     chunk.packed_size).line()
    yield from _frames(image, path, header.first_seq, synced_end=len(image), sealed=True,
                       base_allowed=tables.base_first and header.first_seq == header.log_start)


def _frames(buf: bytes, path: str, expect: int | None, *, synced_end: int | None,
            sealed: bool, base_allowed: bool) -> Iterator[str]:
    """Every checksum-valid frame of a segment image, in file order, as event lines; each
    range that holds none as a damage line (resynchronising at the next valid frame, as
    salvage does). ``synced_end``: the header's synced mark (None: unknown, the header
    is damaged). ``sealed``: an image with no tail a writer may still be appending to (a
    compacted segment's); offsets in it are then those of the decompressed image."""
    view, limit = memoryview(buf), len(buf)
    data_end = max(SEGMENT_HEADER_SIZE, len(buf.rstrip(b"\0")))  # preallocated zeros
    off = SEGMENT_HEADER_SIZE
    while off < data_end:
        frame = _parse_frame(buf, view, off, limit)
        if frame is None:
            later = _valid_frame_after(buf, view, off, limit)
            stop = data_end if later is None else later.offset
            damage = _bad_bytes(path, off, stop, tail=later is None and not sealed,
                                synced_end=synced_end, image=sealed)
            if later is not None and expect is not None and later.first_seq > expect:
                lost = f"{expect}" if later.first_seq == expect + 1 else (
                    f"{expect}-{later.first_seq - 1}")
                damage = damage._replace(reason=f"{damage.reason}: seq(s) {lost} lost")
            yield damage.line()
            if later is None:
                break
            off, expect = stop, later.first_seq  # the damage accounts for the seqs between
            continue
        size = frame.size
        first, count = frame.first_seq, frame.event_count
        if expect is not None and first != expect:
            yield Damage(path, off, f"record has seq {first}, expected {expect} "
                         "(duplicated, reordered or stale record, or records missing)",
                         size, decompressed=sealed).line()
        frame_type = _FRAME_HEADER.unpack_from(buf, off)[4]
        if frame_type in BASE_FRAMES:  # chained or not (its values are verify's to check)
            yield from _base(frame.payload, path, off, first, count,
                             placed=base_allowed and off == SEGMENT_HEADER_SIZE,
                             image=sealed)
        elif frame_type not in EVENT_FRAMES:  # (a chain's values are for verify to check)
            yield Damage(path, off, f"record type {frame_type} is unknown to this fsstore "
                         "(written by a newer one?); upgrade fsstore to read it", size,
                         decompressed=sealed).line()
        else:
            try:
                ts, turn, entries = decode_payload(frame.payload, count, path, off)
            except CorruptionError as exc:
                yield Damage(path, off, f"a checksum-valid record that no writer writes: "
                             f"{exc.reason}", size, decompressed=sealed).line()
            else:
                for index, (kind, data) in enumerate(entries):
                    yield _event_line(Event(first + index, ts, turn, kind, data))
        expect = first + count
        off += size
    if synced_end is not None and data_end <= off < synced_end:
        yield Damage(path, off, f"the records end at byte {off}, but a barrier made them "
                     f"durable up to byte {synced_end} (the segment's synced mark): "
                     "records that were synced are missing", decompressed=sealed).line()


def _bad_bytes(path: str, off: int, stop: int, *, tail: bool, synced_end: int | None,
               image: bool) -> Damage:
    if not tail:
        return Damage(path, off, f"{stop - off} bytes that are no valid record", stop - off,
                      decompressed=image)
    if synced_end is None:
        return Damage(path, off, "bytes that are no valid record at the end of a segment "
                      "whose header is damaged, so its synced mark is unknown: a torn "
                      "append, or synced records damaged", stop - off)
    if off >= synced_end:
        return Damage(path, off, "bytes that are no whole record after the last one (a "
                      "writer stopped mid-append, or a copy caught an append half done): "
                      "readers end the log before them", stop - off, "torn tail")
    return Damage(path, off, f"damaged records with no valid record after them, before "
                  f"the segment's synced mark (byte {synced_end})", stop - off)


def _base(payload: memoryview, path: str, off: int, first: int, count: int, *,
          placed: bool, image: bool) -> Iterator[str]:
    if not placed:
        yield Damage(path, off, base_misplaced(path, off).reason, decompressed=image).line()
    try:
        record = decode_base(payload, path, off)
        body = Base(first + count - 1, record, path, off).image_body()
    except CorruptionError as exc:
        yield Damage(path, off, exc.reason, decompressed=image).line()
        return
    yield _dumps({"base": {"first_seq": first, "last_seq": first + count - 1,
                           "ts": record.ts, "turn": record.turn, "kind": record.kind,
                           "image": body}})


# --- snapshots and checkpoints (FORMAT.md 11.2) --------------------------------------------


def _snapshot(io: FileIO, path: str, size: int) -> Iterator[str]:
    from . import snapshot

    raw = _read_whole(io, path, snapshot.HEADER_SIZE + snapshot.MAX_META_BYTES
                      + snapshot.MAX_BODY_BYTES)
    damage: list[Damage] = []
    try:
        header = snapshot.decode_header(raw, path)
    except (CorruptionError, FormatVersionError) as exc:
        yield Damage(path, 0, _why(exc), min(len(raw), snapshot.HEADER_SIZE)).line()
        return
    kinds = {snapshot.KIND_SNAPSHOT: "snapshot", snapshot.KIND_CHECKPOINT: "checkpoint"}
    document: dict[str, Any] = {
        "fsstore": kinds.get(header.kind, f"snapshot file of kind {header.kind}"),
        "version": f"{snapshot.SNAPSHOT_MAJOR}.{header.minor}", "seq": header.seq,
        "log_start": header.log_start, "created_ns": header.created_ns,
        "position": {"segment": header.position.segment, "offset": header.position.offset,
                     "frame_crc": header.position.frame_crc}}
    expected = snapshot.HEADER_SIZE + header.meta_len + header.body_len
    if len(raw) != expected:
        damage.append(Damage(path, min(len(raw), expected), f"snapshot file is {len(raw)} "
                             f"bytes, its header says {expected} (torn or damaged)"))
    for name, start, length, crc in (
            ("meta", snapshot.HEADER_SIZE, header.meta_len, header.meta_crc),
            ("body", snapshot.HEADER_SIZE + header.meta_len, header.body_len,
             header.body_crc)):
        part = raw[start:start + length]
        if len(part) != length or crc32c(part) != crc:
            damage.append(Damage(path, start, f"snapshot {name} is cut short or does not "
                                 "match its checksum: not shown", length))
            continue
        try:
            document[name] = snapshot._decode_map(part, name, path, start)
        except CorruptionError as exc:
            damage.append(Damage(path, start, exc.reason, length))
    yield from _document(document)
    for item in damage:
        yield item.line()


# --- blobs (FORMAT.md 14.1) ----------------------------------------------------------------


def _blob(io: FileIO, path: str, size: int) -> Iterator[str]:
    from .blobs import _ZSTD_HEADER, ZSTD_MAGIC

    match = _BLOB_NAME.search(os.path.basename(path))
    assert match is not None
    hex_digest, compressed = match.group(1), match.group(2) is not None
    info: dict[str, Any] = {"fsstore": "blob", "digest": f"sha256:{hex_digest}",
                            "stored": "zstd" if compressed else "plain"}
    import hashlib  # here: OpenSSL loads in ~10 ms, and a segment needs none of it

    hasher = hashlib.sha256()
    kept = bytearray()
    damage: Damage | None = None
    total = 0
    decode_errors: tuple[type[Exception], ...] = ()
    with io.open_file(path) as handle:
        reader: Any = handle
        if compressed:
            head = handle.read(_ZSTD_HEADER.size)
            if len(head) < _ZSTD_HEADER.size or head[:4] != ZSTD_MAGIC:
                yield _dumps(info, sort_keys=True)
                yield Damage(path, 0, "compressed blob without its FSZ1 header").line()
                return
            recorded = _ZSTD_HEADER.unpack(head)[1]
            import zstandard

            decode_errors = (zstandard.ZstdError,)
            reader = zstandard.ZstdDecompressor().stream_reader(
                handle, read_across_frames=False, closefd=False)
        else:
            recorded = size
        try:
            while True:
                # never more than one byte past the recorded size: a decompression bomb
                # is stopped there, as the blob reader stops it
                chunk = reader.read(min(1 << 20, recorded - total + 1))
                if not chunk:
                    break
                total += len(chunk)
                if total > recorded:
                    damage = Damage(path, None, f"blob produces more than its recorded "
                                    f"{recorded} bytes (a decompression bomb, or damage)")
                    break
                hasher.update(chunk)
                if len(kept) <= MAX_TEXT_BYTES:
                    kept += chunk[:MAX_TEXT_BYTES + 1 - len(kept)]
        except decode_errors as exc:
            damage = Damage(path, None, f"compressed blob does not decode: {exc}")
    info["size"] = recorded
    text = _as_text(bytes(kept[:MAX_TEXT_BYTES]), whole=len(kept) <= MAX_TEXT_BYTES)
    info["media_type"] = _media_type(bytes(kept[:64]), text)
    if damage is None and total != recorded:
        damage = Damage(path, None, f"blob ends after {total} of its {recorded} bytes")
    elif damage is None and hasher.hexdigest() != hex_digest:
        damage = Damage(path, None, "blob content does not match its digest (its name)")
    yield _dumps(info, sort_keys=True)
    if damage is not None:
        yield damage.line()
    if text is not None:
        yield from _text_lines(text)
        if len(kept) > MAX_TEXT_BYTES:
            yield _dumps({"not_shown": {"after_bytes": MAX_TEXT_BYTES, "bytes": total}},
                         sort_keys=True)


def _text_lines(text: str) -> list[str]:
    """The lines of ``text``, split at newlines only (a form feed or a vertical tab in
    a line stays in it)."""
    found = text.split("\n")
    if found and found[-1] == "":
        found.pop()
    return found


def _as_text(data: bytes, whole: bool) -> str | None:
    """``data`` as text, if it is UTF-8 (cut at a character's start when ``whole`` is
    false) without control characters other than tab, newline, CR and form feed."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if whole or exc.start < len(data) - 3:
            return None
        text = data[:exc.start].decode("utf-8")
    return None if _TEXT_CONTROLS.search(text) else text


def _media_type(head: bytes, text: str | None) -> str:
    for magic, media_type in _SNIFFED:
        if head.startswith(magic):
            return media_type
    if text is None:
        return "application/octet-stream"
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        try:
            json.loads(text)
        except ValueError:
            pass
        else:
            return "application/json"
    return "text/plain"


# --- vector shards (FORMAT.md 15.1) --------------------------------------------------------


def _vectors(io: FileIO, path: str, size: int) -> Iterator[str]:
    from .vectors.shard_files import file_crc, open_regular, read_npy_header

    _, crc = file_crc(io, path)
    info: dict[str, Any] = {"fsstore": "vectors", "bytes": size, "crc32c": crc}
    fd = open_regular(io, path)
    try:
        try:
            shape, fortran, dtype, offset = read_npy_header(io, fd, size, path)
        except CorruptionError as exc:
            yield _dumps(info, sort_keys=True)
            yield Damage(path, exc.offset, exc.reason).line()
            return
    finally:
        io.close(fd)
    info.update({"shape": list(shape), "dtype": dtype.str, "fortran_order": fortran})
    if len(shape) == 2:
        info.update({"rows": shape[0], "dim": shape[1]})
    yield _dumps(info, sort_keys=True)
    expected = offset + dtype.itemsize * _product(shape)
    if size != expected:
        yield Damage(path, min(size, expected), f"file is {size} bytes, its .npy header "
                     f"says {expected}").line()


def _product(shape: tuple[int, ...]) -> int:
    total = 1
    for n in shape:
        total *= n
    return total


def _deleted(io: FileIO, path: str, size: int) -> Iterator[str]:
    from .vectors.shard_files import MAX_ROWS, read_deleted

    try:
        rows = read_deleted(io, path, MAX_ROWS)
    except CorruptionError as exc:
        yield _dumps({"fsstore": "deleted rows", "bytes": size}, sort_keys=True)
        yield Damage(path, exc.offset, exc.reason).line()
        return
    yield _dumps({"fsstore": "deleted rows", "count": len(rows)}, sort_keys=True)
    for row in rows.tolist():
        yield str(row)


def _docs(io: FileIO, path: str, size: int) -> Iterator[str]:
    from .vectors.shard_files import _DOCS_HEADER, DocsFile, file_crc

    _, crc = file_crc(io, path)
    head = io.read_head(path, _DOCS_HEADER.size)
    rows = _DOCS_HEADER.unpack(head)[4] if len(head) == _DOCS_HEADER.size else 0
    yield _dumps({"fsstore": "documents", "bytes": size, "crc32c": crc, "rows": rows},
                 sort_keys=True)
    try:
        docs = DocsFile(io, path, rows)
    except (CorruptionError, FormatVersionError) as exc:
        offset = exc.offset if isinstance(exc, CorruptionError) else 0
        yield Damage(path, offset, _why(exc)).line()
        return
    seqs, turns = docs.seq.tolist(), docs.turn.tolist()
    for row in range(rows):
        try:
            item = {"row": row, "id": docs.id_of(row), "seq": None if seqs[row] < 0 else
                    seqs[row], "turn": None if turns[row] < 0 else turns[row],
                    "content": docs.decoded("content", row),
                    "metadata": docs.decoded("meta", row)}
        except CorruptionError as exc:
            yield Damage(path, exc.offset, exc.reason).line()
            continue
        yield _dumps(item)


# --- the message index (FORMAT.md 20.3) ----------------------------------------------------

_OPS = {1: "add", 2: "edit", 3: "delete", 4: "call", 5: "mark"}


def _index(io: FileIO, path: str, size: int) -> Iterator[str]:
    from .message_index import HEADER, MAGIC, ROW, _unpack_row

    raw = _read_whole(io, path, MAX_SEGMENT_FILE)
    if len(raw) < HEADER.size:
        yield _dumps({"fsstore": "message index"}, sort_keys=True)
        yield Damage(path, 0, "message index header is cut short", len(raw)).line()
        return
    magic, major, minor, row_size, uid, log_start, crc = HEADER.unpack_from(raw)
    yield _dumps({"fsstore": "message index", "version": f"{major}.{minor}",
                  "uid": uid_text(uid), "log_start": log_start}, sort_keys=True)
    if magic != MAGIC or crc32c(raw[:32]) != crc or row_size != ROW.size:
        yield Damage(path, 0, "message index header is damaged (magic, checksum or row "
                     "size): its rows are read as version 1.0 rows", HEADER.size).line()
    off, number = HEADER.size, 0
    while off + ROW.size <= len(raw):
        try:
            row = _unpack_row(raw[off:off + ROW.size], path, off)
        except CorruptionError as exc:
            yield Damage(path, off, exc.reason, ROW.size).line()
        else:
            yield _dumps({"row": number, "seq": row.seq, "op": _OPS.get(row.op, row.op),
                          "last_of_frame": row.group_end, "segment": row.segment,
                          "offset": row.offset, "size": row.size,
                          "hash": f"{row.hash:016x}", "target": row.target,
                          "live": row.live})
        off += ROW.size
        number += 1
    if off < len(raw):
        yield Damage(path, off, "a row cut short (a write a crash tore)", len(raw) - off,
                     "torn tail").line()


# --- small files: the tail hint, leases, locks, torn tails --------------------------------


def _hint(io: FileIO, path: str, size: int) -> Iterator[str]:
    raw = _read_whole(io, path, MAX_SMALL_FILE)
    text = raw.decode("utf-8", "backslashreplace")
    lines = (text[:-1] if text.endswith("\n") else text).split("\n")
    shown: dict[str, Any] = {"fsstore": "tail hint", "names": lines[0]}
    folder = lines[1].removeprefix("folder ") if len(lines) == 2 else ""
    is_inode = folder.isascii() and folder.isdigit()  # "²" is a digit, not a number
    if is_inode:
        shown["folder"] = int(folder)
    yield _dumps(shown, sort_keys=True)
    if (not layout.is_segment_name(lines[0]) or not text.endswith("\n")
            or len(lines) > 2 or (len(lines) == 2 and not is_inode)):
        yield Damage(path, 0, "not a segment name, a folder line and a newline (only a "
                     "hint: readers list log/ instead)", len(raw)).line()


def _lease(io: FileIO, path: str, size: int) -> Iterator[str]:
    from .lease import SLOT_SIZE, _decode_slot

    raw = _read_whole(io, path, MAX_SMALL_FILE)
    slots: list[Any] = []
    damage: list[Damage] = []
    if len(raw) != 2 * SLOT_SIZE:
        damage.append(Damage(path, min(len(raw), 2 * SLOT_SIZE), f"lease file is "
                             f"{len(raw)} bytes, not the {2 * SLOT_SIZE} of its two slots"))
    for slot in (0, 1):
        chunk = raw[slot * SLOT_SIZE:(slot + 1) * SLOT_SIZE]
        if not chunk.strip(b"\0"):
            slots.append(None)  # never written
            continue
        try:
            state = _decode_slot(chunk, path, slot * SLOT_SIZE)
        except (CorruptionError, FormatVersionError) as exc:
            slots.append("damaged")
            damage.append(Damage(path, slot * SLOT_SIZE, _why(exc), SLOT_SIZE))
            continue
        owner = state.owner
        slots.append({"generation": state.generation, "token": state.token,
                      "state": "held" if state.held else "released",
                      "expires": state.expires_at, "acquired": state.acquired_at,
                      "owner": None if owner is None else {
                          "host": owner.host, "pid": owner.pid, "started": owner.started,
                          "label": owner.label}})
    yield from _document({"fsstore": "lease", "slots": slots})
    for item in damage:
        yield item.line()


def _token(io: FileIO, path: str, size: int) -> Iterator[str]:
    from .lease import TOKEN_RECORD_SIZE, TOKEN_SLOT_SIZE, decode_token_record

    head = io.read_head(path, TOKEN_RECORD_SIZE)
    try:
        record = decode_token_record(head, path)
    except FormatVersionError as exc:
        yield _dumps({"fsstore": "writer lock"}, sort_keys=True)
        yield Damage(path, 0, str(exc), len(head)).line()
        return
    yield _dumps({"fsstore": "writer lock", "token": record.token,
                  "generation": record.generation}, sort_keys=True)
    if record.damaged_slot is not None:
        yield Damage(path, record.damaged_slot * TOKEN_SLOT_SIZE, "a slot of the fencing "
                     "token record is damaged (a torn write?)", TOKEN_SLOT_SIZE).line()


def _lock(io: FileIO, path: str, size: int) -> Iterator[str]:
    yield _dumps({"fsstore": "lock", "bytes": size}, sort_keys=True)


def _torn(io: FileIO, path: str, size: int) -> Iterator[str]:
    match = _TORN_NAME.search(os.path.basename(path))
    info: dict[str, Any] = {"fsstore": "torn tail", "bytes": size,
                            "sha256": _sha256(io, path)}
    if match is not None:
        info.update({"segment": int(match.group(1)), "offset": int(match.group(2))})
    yield _dumps(info, sort_keys=True)


def _sha256(io: FileIO, path: str) -> str:
    import hashlib

    hasher = hashlib.sha256()
    with io.open_file(path) as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


# --- manifests and other JSON (FORMAT.md 2, 15.1, 19) -------------------------------------


def _json(io: FileIO, path: str, size: int) -> Iterator[str]:
    from . import manifest

    raw = _read_whole(io, path, MAX_SMALL_FILE)
    try:
        data = manifest.loads(raw, path)
    except CorruptionError as exc:
        yield from _raw_text(raw)
        yield Damage(path, _json_error_at(raw), exc.reason).line()
        return
    yield from _document(data)
    problem = _manifest_problem(data, path)
    if problem is not None:
        yield Damage(path, None, problem).line()


def _manifest_problem(data: Any, path: str) -> str | None:
    """What the typed reader of a manifest says is wrong with it (None: nothing, or not
    a manifest fsstore checks field by field)."""
    from . import manifest

    if not isinstance(data, dict):
        return None
    try:
        kind = data.get("format")
        if kind == manifest.STORE_FORMAT:
            manifest.check_version(data.get("version"), path)
            manifest.decode_as(data, manifest.StoreManifest, path)
        elif kind == manifest.SESSION_FORMAT:
            manifest.check_version(data.get("version"), path,
                                   major_read=manifest.CHAINED_SESSION_MAJOR)
            manifest.decode_session(data, path)
        elif kind == "fsstore-collection":
            import msgspec

            from .vectors.collection_file import CollectionManifest

            try:
                msgspec.convert(data, CollectionManifest)
            except (msgspec.ValidationError, RecursionError) as exc:
                return f"malformed collection manifest ({exc})"
    except (CorruptionError, FormatVersionError) as exc:
        return _why(exc)
    return None


def _json_error_at(raw: bytes) -> int | None:
    """The byte offset where JSON stops parsing, if it does."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return len(text[:exc.pos].encode("utf-8"))
    except (ValueError, RecursionError):
        return None
    return None


def _raw_text(raw: bytes) -> Iterator[str]:
    yield from _text_lines(raw.decode("utf-8", "backslashreplace"))


def _other(io: FileIO, path: str, size: int) -> Iterator[str]:
    """A file textconv does not know: its text as it is, or a summary."""
    if size <= MAX_TEXT_BYTES:
        raw = _read_whole(io, path, MAX_TEXT_BYTES)
        text = _as_text(raw, whole=True)
        if text is not None:
            yield from _text_lines(text)
            return
    yield _dumps({"fsstore": "unknown file", "bytes": size, "sha256": _sha256(io, path)},
                 sort_keys=True)


_RENDERERS: dict[str, Callable[[FileIO, str, int], Iterator[str]]] = {
    "segment": _segment, "snapshot": _snapshot, "blob": _blob, "vectors": _vectors,
    "deleted": _deleted, "docs": _docs, "index": _index, "hint": _hint, "lease": _lease,
    "token": _token, "lock": _lock, "torn": _torn, "json": _json, "other": _other,
}

__all__ = ["MAX_TEXT_BYTES", "TEXTCONV_COMMAND", "Damage", "kind_of", "lines"]
