"""The files of a vector collection's shards, decoded and checked in one place
(docs/FORMAT.md, section 15): a shard's ``.vec.npy`` and ``.docs``, its deleted rows,
the values stored in documents and the records of the collection's write-ahead log.
``collection.json`` is in ``collection_file``.

Everything here and there reads bytes that may be damaged or hostile. Each reader bounds what it
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
import mmap
import os
import re
import stat
import struct
from collections.abc import Sequence
from typing import Annotated, Any

import msgspec
import numpy as np

from .. import layout
from ..checksum import crc32c
from ..errors import CorruptionError, FormatVersionError, InvalidDocument
from ..fsio import FileIO
from ..log_format import refuse_msgpack_ext

MAX_DIM = 65536
MAX_NPY_HEADER = 4096
MAX_ROWS = 2**32 - 1  # hash_rows are u32
MAX_ID_BYTES = 1024
#: The deepest nesting of lists and maps in a document's metadata; the map itself is 1.
MAX_VALUE_DEPTH = 64
MIN_INT, MAX_INT = -(2**63), 2**64 - 1  # what msgpack holds

DTYPES: dict[str, np.dtype] = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}

_encoder = msgspec.msgpack.Encoder()
_content_decoder = msgspec.msgpack.Decoder(type=str | None, ext_hook=refuse_msgpack_ext)
_meta_decoder = msgspec.msgpack.Decoder(type=dict[str, Any], ext_hook=refuse_msgpack_ext)
_NONE = _encoder.encode(None)
_EMPTY_MAP = _encoder.encode({})

_U32 = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
_U63 = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


# --- a shard as collection.json names it -----------------------------------------------


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
    content: str | None = _decode(_content_decoder, raw)
    return content


def decode_metadata(raw: bytes | memoryview) -> dict[str, Any]:
    """A document's metadata map, as stored; ValueError if it is not a map of str keys."""
    if raw == _EMPTY_MAP:
        return {}
    metadata: dict[str, Any] = _decode(_meta_decoder, raw)
    return metadata


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
    mapped: np.ndarray = np.ndarray((rows, dim), dtype=dtype, buffer=buffer, offset=offset,
                                    order="F")
    return mapped


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
    norms: np.ndarray = np.sqrt(np.einsum("ij,ij->i", vectors, vectors,
                                          dtype=np.float32)).astype(np.float32)
    return norms


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

