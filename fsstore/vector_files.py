"""The files of a vector collection, decoded and checked in one place (docs/FORMAT.md,
section 15): ``collection.json``, a shard's ``.vec.npy`` and ``.docs``, its deleted rows,
and the records of the collection's write-ahead log.

Everything here reads bytes that may be damaged or hostile. Each reader bounds what it
reads by the file's real size (never by a size the file declares), checks every name
against the layout rules before it becomes a path, and ends in the data or a
``CorruptionError`` naming the file: never another exception, a hang or an allocation
the file asked for. ``collection.json`` and each shard entry are decoded through one
typed schema (msgspec Structs); nesting is bounded.

Writers refuse, with ``InvalidDocument``, every value these readers would refuse or give
back different (:func:`check_value`).
"""

from __future__ import annotations

import hashlib
import math
import mmap
import os
import re
import stat
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
from crc32c import crc32c

from . import layout, manifest
from .errors import CorruptionError, FormatVersionError, InvalidDocument
from .fsio import FileIO
from .log import refuse_msgpack_ext

COLLECTION_FORMAT = "fsstore-collection"
MAX_DIM = 65536
MAX_NPY_HEADER = 4096
MAX_ROWS = 2**32 - 1  # hash_rows are u32
MAX_ID_BYTES = 1024
#: The deepest nesting of lists and maps in a document's metadata; the map itself is 1.
MAX_VALUE_DEPTH = 64
MIN_INT, MAX_INT = -(2**63), 2**64 - 1  # what msgpack holds
#: How long files and log records a seal or merge stops naming stay on disk (seconds),
#: so that a copy of the folder taken meanwhile (cp -r, tar) still holds a whole state.
COPY_GRACE_SECONDS = 600.0
MAX_PINNED = 64  # earlier states named in collection.json
MAX_RETIRED = 8192  # files kept for copies after no state names them

DTYPES: dict[str, np.dtype] = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}

_encoder = msgspec.msgpack.Encoder()
_content_decoder = msgspec.msgpack.Decoder(type=str | None, ext_hook=refuse_msgpack_ext)
_meta_decoder = msgspec.msgpack.Decoder(type=dict[str, Any], ext_hook=refuse_msgpack_ext)
_NONE = _encoder.encode(None)
_EMPTY_MAP = _encoder.encode({})

_U32 = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
_U63 = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


# --- collection.json --------------------------------------------------------------------


class ShardEntry(msgspec.Struct, frozen=True, omit_defaults=False):
    """One live shard as ``collection.json`` names it."""

    name: str
    rows: Annotated[int, msgspec.Meta(ge=0, le=MAX_ROWS)]
    vectors_bytes: _U63
    vectors_crc: _U32
    docs_bytes: _U63
    docs_crc: _U32
    deleted: str | None = None
    deleted_rows: Annotated[int, msgspec.Meta(ge=0, le=MAX_ROWS)] = 0

    def __post_init__(self) -> None:
        # Names become paths: check them here, once, before any code sees the entry.
        layout.check_shard_name(self.name)
        if self.deleted is not None:
            layout.check_deleted_name(self.deleted)
            if not self.deleted.startswith(self.name + "."):
                raise ValueError(f"deleted-rows file {self.deleted!r} is not of shard "
                                 f"{self.name!r}")

    def files(self) -> list[str]:
        names = [layout.shard_vectors_name(self.name), layout.shard_docs_name(self.name)]
        return names if self.deleted is None else [*names, self.deleted]


def _check_shards(shards: list[ShardEntry]) -> None:
    names = [s.name for s in shards]
    if len(set(names)) != len(names):
        raise ValueError("a shard is named twice")


class PinnedState(msgspec.Struct, frozen=True):
    """An earlier state of the collection, kept whole on disk (its files, and the log
    records after its ``wal_seq``) from ``pinned`` until ``keep_until`` (unix seconds),
    for copies of the folder taken meanwhile (section 15.8). ``bulk``: the commit that
    made this state added documents the log before it lacks (an upsert written straight
    to a shard)."""

    generation: _U63
    wal_seq: _U63
    pinned: float
    keep_until: float
    shards: list[ShardEntry]
    bulk: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.pinned) and math.isfinite(self.keep_until)):
            raise ValueError("pinned and keep_until must be finite times")
        _check_shards(self.shards)


class CollectionManifest(msgspec.Struct, frozen=True):
    """``collection.json``: the fields this version reads, typed and checked. Unknown
    top-level keys are kept in the file by writers (a reader accepts any minor version)."""

    format: str
    version: Any
    name: str
    dim: Annotated[int, msgspec.Meta(ge=1, le=MAX_DIM)]
    dtype: Literal["float32", "float16"]
    metric: Literal["cosine", "dot", "euclidean"]
    generation: _U63
    wal_seq: _U63
    next_shard: Annotated[int, msgspec.Meta(ge=1, le=10**layout.SHARD_DIGITS)]
    shards: list[ShardEntry]
    created: str | None = None
    pinned: list[PinnedState] = []
    bulk: bool = False  # as PinnedState.bulk, for the current state
    retired: list[tuple[str, float]] = []  # files no state names, and since when
    log_moved: float = 0.0  # when a commit last moved the start of wal/

    def retired_names(self) -> set[str]:
        return {name for name, _since in self.retired}

    def __post_init__(self) -> None:
        layout.check_session_id(self.name)
        _check_shards(self.shards)
        if len(self.pinned) > MAX_PINNED:
            raise ValueError(f"more than {MAX_PINNED} pinned states")
        newer = self.generation
        for state in self.pinned:
            if state.generation >= newer or state.wal_seq > self.wal_seq:
                raise ValueError("pinned states are not older than the manifest, newest "
                                 "first")
            newer = state.generation
        if len(self.retired) > MAX_RETIRED:
            raise ValueError(f"more than {MAX_RETIRED} retired files")
        if not math.isfinite(self.log_moved):
            raise ValueError("log_moved is not a finite time")
        for name, since in self.retired:
            check_file_name(name)
            if not math.isfinite(since):
                raise ValueError(f"retired file {name!r}: time is not finite")
        top = max((int(s.name) for s in self.shards), default=0)
        if top >= self.next_shard:
            raise ValueError(f"shard {top:08d} is not below next_shard {self.next_shard}")

    def states(self) -> list[PinnedState]:
        """The current state first, then the pinned ones, newest first."""
        return [PinnedState(self.generation, self.wal_seq, 0.0, 0.0, self.shards,
                            self.bulk), *self.pinned]

    def named_files(self) -> set[str]:
        """Every file a state of this manifest names (its shards and deleted rows)."""
        return {name for state in self.states() for entry in state.shards
                for name in entry.files()}


def check_file_name(name: str) -> str:
    """``name`` if it is a shard file or deleted-rows file name (section 15.1), else
    ValueError: never a path."""
    if name.endswith(layout.DELETED_SUFFIX):
        return layout.check_deleted_name(name)
    for suffix in (layout.VECTORS_SUFFIX, layout.DOCS_SUFFIX):
        if name.endswith(suffix):
            layout.check_shard_name(name[:-len(suffix)])
            return name
    raise ValueError(f"bad shard file name {name!r}")


def retire(before: CollectionManifest, after: set[str], now: float, grace: float
           ) -> tuple[list[tuple[str, float]], list[str]]:
    """The retired files of the manifest that replaces ``before`` (whose states name
    ``after``), and the files to unlink now. A file no state names any more is kept
    ``grace`` seconds more: a copy that took an older ``collection.json`` may still be
    about to copy it."""
    kept: dict[str, float] = {}
    expired = []
    for name, since in before.retired:
        if 0 <= now - since < grace or name in after:
            kept[name] = since
        else:
            expired.append(name)
    for name in before.named_files() - after:
        kept.setdefault(name, now)
    retired = sorted(kept.items(), key=lambda item: (item[1], item[0]))
    if len(retired) > MAX_RETIRED:  # the oldest go early
        expired += [name for name, _since in retired[:len(retired) - MAX_RETIRED]]
        retired = retired[len(retired) - MAX_RETIRED:]
    return retired, sorted(set(expired) - after)


def read_manifest(io: FileIO, path: str) -> tuple[CollectionManifest, dict[str, Any]]:
    """``collection.json`` decoded and checked, with the raw mapping (whose unknown keys a
    writer keeps). Raises FileNotFoundError if it is missing, FormatVersionError if a newer
    major wrote it, CorruptionError naming the file for anything else."""
    try:
        data = manifest.read(io, path, COLLECTION_FORMAT)
    except RecursionError:
        raise CorruptionError("JSON nested too deep to be a collection manifest; restore it "
                              "from a backup", path=path) from None
    except FileNotFoundError:
        if os.path.lexists(path):  # a dangling symlink
            raise CorruptionError("not a readable file (a dangling symlink?)",
                                  path=path) from None
        raise
    except (FormatVersionError, CorruptionError):
        raise
    except OSError as exc:  # a folder, or a file the OS will not read
        raise CorruptionError(f"cannot be read ({exc.strerror or exc}); restore it from a "
                              "backup", path=path) from None
    try:
        decoded = msgspec.convert(data, CollectionManifest)
    except (msgspec.ValidationError, RecursionError) as exc:
        raise CorruptionError(f"malformed collection manifest ({exc}); restore it from a "
                              "backup", path=path) from None
    return decoded, data


def encode_manifest(base: Mapping[str, Any], **fields: Any) -> dict[str, Any]:
    """``base`` (the raw manifest: unknown keys kept) with ``fields`` replaced, as plain
    JSON values, checked against the schema so nothing a reader refuses is written."""
    data = dict(base)
    data.update(msgspec.to_builtins(fields))
    msgspec.convert(data, CollectionManifest)  # a bug, not the caller's: let it raise
    return data


def pin_states(current: CollectionManifest, now: float, grace: float) -> list[PinnedState]:
    """The pinned states of the manifest that replaces ``current`` at time ``now``.

    A copy started at time s needs a state whose files existed at s and that holds every
    document acknowledged by then once the log after it is replayed: the state current
    at s, or an earlier one linked to it by seals and merges only (which move documents
    from the log into shards, never add any). So when a state is replaced, it is pinned
    for ``grace`` seconds, or, when the newest pin is younger than ``grace`` and stands for
    it (no bulk upsert since), that pin's time is extended instead: a pin lives at most
    about twice ``grace``, which bounds the log it keeps (section 15.8)."""
    pins = [pin for pin in current.pinned if pin.keep_until >= now]
    newest = pins[0] if pins else None
    if current.bulk or newest is None or not 0 <= now - newest.pinned < grace:
        pins.insert(0, PinnedState(current.generation, current.wal_seq, now, now + grace,
                                   current.shards, current.bulk))
    else:
        pins[0] = msgspec.structs.replace(newest, keep_until=now + grace)
    return pins[:MAX_PINNED]


def newer_than(manifest: CollectionManifest, names: Iterable[str]) -> list[str]:
    """The shard files among ``names`` that no writer of ``manifest`` could have made yet:
    a shard number above ``next_shard`` or a deleted-rows generation above the next
    generation. Beside them, ``collection.json`` is older than the folder (restored from
    an older backup, or another collection's): reading it would drop documents."""
    found = []
    for name in names:
        try:
            check_file_name(name)
        except ValueError:
            continue
        if int(name[:layout.SHARD_DIGITS]) > manifest.next_shard or (
                name.endswith(layout.DELETED_SUFFIX) and int(
                    name[layout.SHARD_DIGITS + 1:2 * layout.SHARD_DIGITS + 1])
                > manifest.generation + 1):
            found.append(name)
    return sorted(found)


def missing_are_newest(present: Iterable[str], missing: Iterable[str]) -> bool:
    """Whether every file in ``missing`` was made after every shard file in ``present``,
    so that it is in a copy of the folder taken during a seal or merge: such a copy lists
    the folder first and misses only files made later. Files are made in the order of
    their names: shard numbers grow, a shard's ``.vec.npy`` comes before its ``.docs``,
    deleted-rows generations grow, and within one the shards' files come in shard order.
    A file lost to damage is rarely the newest: then this is False."""
    def order(name: str) -> tuple[int, int, int] | None:
        try:
            if name.endswith(layout.DELETED_SUFFIX):
                layout.check_deleted_name(name)
                generation = int(name[layout.SHARD_DIGITS + 1:2 * layout.SHARD_DIGITS + 1])
                return 1, generation, int(name[:layout.SHARD_DIGITS])
            number = int(layout.check_shard_name(name[:layout.SHARD_DIGITS]))
            return 0, number, 0 if name.endswith(layout.VECTORS_SUFFIX) else 1
        except ValueError:
            return None
    missing_orders = [o for o in map(order, missing) if o is not None]
    for name in present:
        found = order(name) if layout.is_shard_file(name) else None
        if found and any(found[0] == m[0] and found >= m for m in missing_orders):
            return False
    return True


# --- values stored in documents -----------------------------------------------------------


def check_value(value: object, what: str) -> None:
    """Raise InvalidDocument unless ``value`` reads back equal from msgpack: None, bool,
    ints from -2**63 to 2**64-1, floats, valid Unicode strs, bytes, lists and tuples (read
    back as lists), dicts with str keys, nested at most MAX_VALUE_DEPTH levels. Anything
    else (extension types, msgspec.Raw, datetimes, sets, objects) is refused."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if item is None or isinstance(item, (bool, float, bytes)):
            continue
        if isinstance(item, str):
            _check_text(item, what)
        elif isinstance(item, int):
            if not MIN_INT <= item <= MAX_INT:
                raise InvalidDocument(f"{what}: int {item} is outside {MIN_INT}..{MAX_INT}")
        elif isinstance(item, (dict, list, tuple)):
            if level > MAX_VALUE_DEPTH:
                raise InvalidDocument(f"{what} is nested more than {MAX_VALUE_DEPTH} levels")
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str):
                        raise InvalidDocument(f"{what}: key {key!r} is a "
                                              f"{type(key).__name__}; keys are strs")
                    _check_text(key, what)
                    stack.append((child, level + 1))
            else:
                stack.extend((child, level + 1) for child in item)
        else:
            raise InvalidDocument(f"{what}: a {type(item).__name__} cannot be stored "
                                  "(use None, bool, int, float, str, bytes, list, dict)")


def _check_text(text: str, what: str) -> None:
    try:
        text.encode()
    except UnicodeEncodeError:
        raise InvalidDocument(f"{what}: {text[:40]!r} is not valid Unicode (a lone "
                              "surrogate)") from None


def decode_content(raw: bytes | memoryview) -> str | None:
    """A document's content, as stored; ValueError if it is not a str or nil."""
    if raw == _NONE:
        return None
    return _decode(_content_decoder, raw)


def decode_metadata(raw: bytes | memoryview) -> dict[str, Any]:
    """A document's metadata map, as stored; ValueError if it is not a map of str keys."""
    if raw == _EMPTY_MAP:
        return {}
    return _decode(_meta_decoder, raw)


def _decode(decoder: msgspec.msgpack.Decoder[Any], raw: bytes | memoryview) -> Any:
    try:
        return decoder.decode(raw)
    except RecursionError:
        raise ValueError("nested too deep") from None
    except msgspec.DecodeError as exc:
        raise ValueError(str(exc)) from None


# --- write-ahead log records -------------------------------------------------------------


class UpsertRecord(msgspec.Struct, frozen=True):
    """The data of an ``upsert`` event of ``wal/`` (section 15.3)."""

    id: str
    v: bytes
    c: bytes
    m: bytes
    s: Annotated[int, msgspec.Meta(ge=-1, le=2**63 - 1)]
    t: Annotated[int, msgspec.Meta(ge=-1, le=2**63 - 1)]


class DeleteRecord(msgspec.Struct, frozen=True):
    """The data of a ``delete`` event of ``wal/``."""

    ids: list[str]


def decode_record(kind: str, data: Any, vector_bytes: int) -> UpsertRecord | DeleteRecord:
    """A log record's data, typed and checked (ids, a vector of ``vector_bytes``, content
    and metadata that decode); ValueError if it is not what the writer writes."""
    try:
        if kind == "upsert":
            record: UpsertRecord | DeleteRecord = msgspec.convert(data, UpsertRecord)
            assert isinstance(record, UpsertRecord)
            ids = [record.id]
            if len(record.v) != vector_bytes:
                raise ValueError(f"a vector of {len(record.v)} bytes, not {vector_bytes}")
            decode_content(record.c)
            decode_metadata(record.m)
        elif kind == "delete":
            record = msgspec.convert(data, DeleteRecord)
            assert isinstance(record, DeleteRecord)
            ids = record.ids
        else:
            raise ValueError(f"unknown record kind {kind!r}")
    except (msgspec.ValidationError, RecursionError) as exc:
        raise ValueError(str(exc)) from None
    for doc_id in ids:
        if not doc_id or len(doc_id.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
            raise ValueError(f"document id {doc_id[:40]!r} is empty or too long")
    return record


# --- opening files -------------------------------------------------------------------------


def open_regular(io: FileIO, path: str) -> int:
    """A read-only descriptor on the store file ``path``: never through a symlink, never
    a FIFO (which would block) or a device (which would never end). FileNotFoundError if
    it is missing; CorruptionError naming it for anything else."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = io.open(path, flags)
    except FileNotFoundError:
        raise
    except CorruptionError:
        raise
    except OSError as exc:
        raise CorruptionError(f"cannot be opened ({exc.strerror or exc}): a symlink, a "
                              "folder or an unreadable file where a collection file should "
                              "be", path=path) from None
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        io.close(fd)
        raise CorruptionError(f"cannot be read ({exc})", path=path) from None
    if not stat.S_ISREG(mode):
        io.close(fd)
        raise CorruptionError("is not a regular file; restore it from a backup", path=path)
    return fd


def file_crc(io: FileIO, path: str) -> tuple[int, int]:
    """(size, crc32c) of a whole file, read up to its size when opened."""
    fd = open_regular(io, path)
    try:
        size = io.size(fd)
        crc, offset = 0, 0
        while offset < size:
            chunk = io.pread(fd, min(8 << 20, size - offset), offset)
            if not chunk:
                break
            crc = crc32c(chunk, crc)
            offset += len(chunk)
        return offset, crc
    finally:
        io.close(fd)


_NPY_MAGIC = b"\x93NUMPY"
# The header numpy writes: a dict literal with sorted keys, padded with spaces to a
# newline. Parsed by this pattern, never by ast (numpy's parser is ast.literal_eval,
# which fails in odd ways on hostile bytes and, on CPython 3.11, when two threads parse
# at once: "SystemError: AST constructor recursion depth mismatch").
_NPY_HEADER = re.compile(
    r"\{'descr': *'([<>|=]?[A-Za-z][0-9]{0,2})', *'fortran_order': *(True|False), *"
    r"'shape': *\(((?:[0-9]{1,19}, *)*[0-9]{0,19})\),? *\} *\n?\Z")


def read_npy_header(io: FileIO, fd: int, size: int, path: str
                    ) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran_order, dtype, data offset) of a ``.npy`` file of format 1.0 or
    2.0 whose header is at most MAX_NPY_HEADER bytes; any other header is a
    CorruptionError."""
    start = io.pread(fd, 12, 0)
    if len(start) < 10 or start[:6] != _NPY_MAGIC or start[6:8] not in (b"\x01\x00",
                                                                       b"\x02\x00"):
        raise CorruptionError("not a .npy file of format 1.0 or 2.0 (bad magic)", path=path,
                              offset=0)
    if start[6] == 1:
        (length,), offset = struct.unpack("<H", start[8:10]), 10
    else:
        if len(start) < 12:
            raise CorruptionError("the .npy header is cut short", path=path, offset=0)
        (length,), offset = struct.unpack("<I", start[8:12]), 12
    if length > MAX_NPY_HEADER or offset + length > size:
        raise CorruptionError(f"the .npy header says it is {length} bytes: over "
                              f"{MAX_NPY_HEADER}, or past the end of the file", path=path,
                              offset=8)
    text = io.pread(fd, length, offset).decode("latin-1")
    match = _NPY_HEADER.match(text)
    if match is None:
        raise CorruptionError(f"not a readable .npy header ({text[:120]!r})", path=path,
                              offset=offset)
    descr, fortran, shape_text = match.groups()
    try:
        found = np.dtype(descr)
    except TypeError:
        raise CorruptionError(f"the .npy header names an unknown dtype {descr!r}",
                              path=path, offset=offset) from None
    if found.hasobject:
        raise CorruptionError("holds an object array; fsstore never unpickles", path=path)
    shape = tuple(int(n) for n in shape_text.replace(" ", "").split(",") if n)
    return shape, fortran == "True", found, offset + length


# --- shard files ---------------------------------------------------------------------------


def id_hash(doc_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "little")

_DOCS_MAGIC = b"\x89FSVDOC\n"
_DOCS_HEADER = struct.Struct("<8sHHIQQQQ12xI")  # ... reserved, header crc
DOCS_HEADER_SIZE = _DOCS_HEADER.size  # 64
DOCS_MAJOR, DOCS_MINOR = 1, 0


def _docs_layout(rows: int, ids: int, content: int, meta: int) -> dict[str, tuple[int, int]]:
    """Offset and length of each section of a docs file."""
    sections = [("hashes", 8 * rows), ("seq", 8 * rows), ("turn", 8 * rows),
                ("id_offsets", 8 * (rows + 1)), ("content_offsets", 8 * (rows + 1)),
                ("meta_offsets", 8 * (rows + 1)), ("norms", 4 * rows),
                ("hash_rows", 4 * rows), ("ids", ids), ("content", content), ("meta", meta)]
    result, offset = {}, DOCS_HEADER_SIZE
    for name, length in sections:
        result[name] = (offset, length)
        offset += length
    result["end"] = (offset, 0)
    return result


def _offsets(parts: Sequence[bytes]) -> np.ndarray:
    offsets = np.zeros(len(parts) + 1, dtype="<u8")
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    return offsets


def encode_docs(ids: Sequence[str], norms: np.ndarray, seqs: np.ndarray, turns: np.ndarray,
                contents: Sequence[bytes], metas: Sequence[bytes]) -> bytes:
    rows = len(ids)
    id_bytes = [i.encode() for i in ids]
    hashes = np.array([id_hash(i) for i in ids], dtype="<u8")
    order = np.argsort(hashes, kind="stable")
    parts = [hashes[order].tobytes(), np.asarray(seqs, "<i8").tobytes(),
             np.asarray(turns, "<i8").tobytes(), _offsets(id_bytes).tobytes(),
             _offsets(contents).tobytes(), _offsets(metas).tobytes(),
             np.asarray(norms, "<f4").tobytes(), order.astype("<u4").tobytes(),
             b"".join(id_bytes), b"".join(contents), b"".join(metas)]
    head = _DOCS_HEADER.pack(_DOCS_MAGIC, DOCS_MAJOR, DOCS_MINOR, 0, rows,
                             len(parts[8]), len(parts[9]), len(parts[10]), 0)
    head = head[:-4] + struct.pack("<I", crc32c(head[:-4]))
    return head + b"".join(parts)


class DocsFile:
    """A memory-mapped docs file: sections are numpy views, nothing is read up front."""

    def __init__(self, io: FileIO, path: str, rows: int) -> None:
        self.path = path
        fd = open_regular(io, path)
        try:
            size = io.size(fd)
            raw = io.pread(fd, DOCS_HEADER_SIZE, 0)
            if len(raw) < DOCS_HEADER_SIZE:
                raise CorruptionError(f"docs file of {size} bytes is shorter than its "
                                      "header", path=path, offset=0)
            magic, major, _minor, _flags, count, ids, content, meta, crc = \
                _DOCS_HEADER.unpack(raw)
            if magic != _DOCS_MAGIC:
                raise CorruptionError("not a docs file (bad magic)", path=path, offset=0)
            if crc != crc32c(raw[:-4]):
                raise CorruptionError("docs header checksum mismatch", path=path, offset=60)
            if major > DOCS_MAJOR:
                raise FormatVersionError(f"{path}: docs format {major} is newer than this "
                                         f"fsstore reads ({DOCS_MAJOR}); upgrade fsstore")
            if count != rows:
                raise CorruptionError(f"holds {count} ids but its shard has {rows} rows",
                                      path=path, offset=16)
            self.sections = _docs_layout(rows, ids, content, meta)
            if self.sections["end"][0] != size:
                raise CorruptionError(f"is {size} bytes; its header says "
                                      f"{self.sections['end'][0]}", path=path)
            self._map = mmap.mmap(fd, size, prot=mmap.PROT_READ)
        finally:
            io.close(fd)
        self.rows = rows
        self.hashes = self._array("hashes", "<u8")
        self.seq = self._array("seq", "<i8")
        self.turn = self._array("turn", "<i8")
        self.id_offsets = self._array("id_offsets", "<u8")
        self.content_offsets = self._array("content_offsets", "<u8")
        self.meta_offsets = self._array("meta_offsets", "<u8")
        self.norms = self._array("norms", "<f4")
        self.hash_rows = self._array("hash_rows", "<u4")

    def _array(self, name: str, dtype: str) -> np.ndarray:
        offset, length = self.sections[name]
        return np.frombuffer(self._map, dtype=dtype, count=length // np.dtype(dtype).itemsize,
                             offset=offset)

    _OFFSETS = {"ids": "id_offsets", "content": "content_offsets", "meta": "meta_offsets"}

    def raw(self, section: str, row: int) -> bytes:
        """The bytes of ``row`` in the ``ids``, ``content`` or ``meta`` section."""
        table = self._OFFSETS[section]
        start, length = self.sections[section]
        begin, end = getattr(self, table)[row:row + 2].tolist()
        if not begin <= end <= length:
            raise CorruptionError(f"row {row}: {section} offsets {begin}..{end} outside the "
                                  f"{length}-byte section", path=self.path,
                                  offset=self.sections[table][0] + 8 * row)
        return self._map[start + begin:start + end]

    def id_of(self, row: int) -> str:
        raw = self.raw("ids", row)
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise CorruptionError(f"row {row}: id is not UTF-8", path=self.path) from None

    def decoded(self, section: str, row: int) -> Any:
        """A row's content (str or None) or metadata (a dict)."""
        raw = self.raw(section, row)
        try:
            return decode_content(raw) if section == "content" else decode_metadata(raw)
        except ValueError as exc:
            offsets = getattr(self, self._OFFSETS[section])
            raise CorruptionError(f"row {row}: {section} does not decode ({exc})",
                                  path=self.path,
                                  offset=self.sections[section][0] + int(offsets[row])) from None

    def find(self, doc_id: str) -> int | None:
        return self.find_hashed(doc_id, id_hash(doc_id))

    def find_hashed(self, doc_id: str, key: int) -> int | None:
        hashes = self.hashes
        position = int(np.searchsorted(hashes, np.uint64(key)))
        while position < self.rows and int(hashes[position]) == key:
            row = int(self.hash_rows[position])
            if row >= self.rows:
                raise CorruptionError(f"hash index names row {row} of {self.rows}",
                                      path=self.path)
            if self.id_of(row) == doc_id:
                return row
            position += 1
        return None

    def check(self) -> list[str]:
        """Structural checks that need the whole file (verify)."""
        problems = []
        for section, name in self._OFFSETS.items():
            offsets = getattr(self, name)
            length = self.sections[section][1]
            if offsets[0] != 0 or np.any(np.diff(offsets.astype(np.int64)) < 0) or \
                    offsets[-1] != length:
                problems.append(f"{name} are not ascending within the section")
        if np.any(self.hashes[1:] < self.hashes[:-1]) or \
                np.any(self.hash_rows >= self.rows):
            problems.append("the id hash index is not sorted or names rows it lacks")
        return problems


def _npy_header(dtype: np.dtype, rows: int, dim: int) -> bytes:
    buffer = _BytesSink()
    np.lib.format.write_array_header_1_0(buffer, {
        "descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": True,
        "shape": (rows, dim)})
    return buffer.data


class _BytesSink:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


def open_vectors(io: FileIO, path: str, rows: int, dim: int, dtype: np.dtype) -> np.ndarray:
    """Memory-map a shard's vectors, refusing anything but the expected plain array:
    a bounded header parsed without pickling, the dtype, Fortran order, the shape, and a
    file size that matches."""
    fd = open_regular(io, path)
    try:
        size = io.size(fd)
        shape, fortran, found, offset = read_npy_header(io, fd, size, path)
        if found != dtype:
            raise CorruptionError(f"holds {found}; the collection stores {dtype}", path=path)
        if shape != (rows, dim):
            raise CorruptionError(f"has shape {shape}; the collection expects ({rows}, "
                                  f"{dim})", path=path)
        if not fortran:
            raise CorruptionError("is in C order; shards are Fortran (column) order",
                                  path=path)
        if size != offset + rows * dim * dtype.itemsize:
            raise CorruptionError(f"is {size} bytes; its header says "
                                  f"{offset + rows * dim * dtype.itemsize}", path=path)
        if rows == 0:
            return np.zeros((0, dim), dtype=dtype, order="F")
        buffer = mmap.mmap(fd, size, prot=mmap.PROT_READ)
    finally:
        io.close(fd)
    return np.ndarray((rows, dim), dtype=dtype, buffer=buffer, offset=offset, order="F")


def write_shard(io: FileIO, folder: str, name: str, vectors: np.ndarray, ids: Sequence[str],
                seqs: np.ndarray, turns: np.ndarray, contents: Sequence[bytes],
                metas: Sequence[bytes]) -> ShardEntry:
    """Write a shard's two files under temp names, fsync them, rename them in and fsync
    the folder. Returns its entry for ``collection.json``. Nothing names the files yet:
    until the manifest does, a crash leaves only leftovers the next writer removes."""
    rows, dim = vectors.shape
    norms = norms_of(vectors)
    docs = encode_docs(ids, norms, seqs, turns, contents, metas)
    vec_name, docs_name = layout.shard_vectors_name(name), layout.shard_docs_name(name)
    vec_temp = os.path.join(folder, layout.temp_name(vec_name))
    docs_temp = os.path.join(folder, layout.temp_name(docs_name))
    header = _npy_header(vectors.dtype, rows, dim)
    fd = io.open(vec_temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        io.pwrite(fd, header, 0)
        # Column order: transpose a block of rows at a time, so that no whole transposed
        # copy of a large shard is ever held in memory.
        block = max(1, (8 << 20) // (dim * vectors.itemsize))
        column_bytes = rows * vectors.itemsize
        for start in range(0, rows, block):
            part = np.ascontiguousarray(vectors[start:start + block].T)
            if rows <= block:
                io.pwrite(fd, part.data, len(header))
                crc = crc32c(part.data, crc32c(header))
                break
            for column in range(dim):
                io.pwrite(fd, part[column].data, len(header) + column * column_bytes
                          + start * vectors.itemsize)
        else:
            crc = file_crc(io, vec_temp)[1]
        io.fsync(fd)
    finally:
        io.close(fd)
    io.write_new(docs_temp, docs)
    io.rename(vec_temp, os.path.join(folder, vec_name))
    io.rename(docs_temp, os.path.join(folder, docs_name))
    io.fsync_dir(folder)
    return ShardEntry(name, rows, len(header) + rows * dim * vectors.itemsize, crc,
                      len(docs), crc32c(docs))


def norms_of(vectors: np.ndarray) -> np.ndarray:
    if not len(vectors):
        return np.zeros(0, dtype=np.float32)
    return np.sqrt(np.einsum("ij,ij->i", vectors, vectors, dtype=np.float32)).astype(
        np.float32)


def read_deleted(io: FileIO, path: str, rows: int) -> np.ndarray:
    """A shard's deleted rows: a 1-D uint32 .npy of ascending rows within the shard, read
    up to the file's real size whatever its header claims."""
    fd = open_regular(io, path)
    try:
        size = io.size(fd)
        shape, _fortran, found, offset = read_npy_header(io, fd, size, path)
        if found != np.dtype("<u4") or len(shape) != 1:
            raise CorruptionError(f"holds {found} {shape}; deleted rows are a 1-D uint32 "
                                  "array", path=path)
        if size != offset + 4 * shape[0]:
            raise CorruptionError(f"is {size} bytes; its header says {offset + 4 * shape[0]}",
                                  path=path)
        deleted = np.frombuffer(io.pread(fd, size - offset, offset), dtype="<u4")
    finally:
        io.close(fd)
    if len(deleted) != shape[0]:
        raise CorruptionError("shorter than its header says", path=path)
    if len(deleted) and (deleted[-1] >= rows or np.any(np.diff(deleted.astype(np.int64)) <= 0)):
        raise CorruptionError(f"deleted rows are not ascending within the shard's {rows}",
                              path=path)
    return deleted


def encode_npy(array: np.ndarray) -> bytes:
    sink = _BytesSink()
    np.lib.format.write_array(sink, array, allow_pickle=False)
    return sink.data

