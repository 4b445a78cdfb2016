"""Vector collections of a session: numpy shards, searched exactly.

A collection folder (docs/FORMAT.md, section 15)::

    vectors/NAME/
      collection.json             definition and the live shards (replaced by rename)
      wal/                        a log (log.py) of the upserts and deletes not yet sealed
      SHARD.vec.npy               the vectors: a plain .npy, Fortran (column) order
      SHARD.docs                  ids, norms, event links, content and metadata
      SHARD.GEN.del.npy           the deleted rows of SHARD (sorted uint32)

Writes go to the write-ahead log first and are searched from memory; every
``SEAL_ROWS`` documents they are sealed into a new shard, and shards of a size tier are
merged ``TIER_FANOUT`` at a time. Every shard file is written whole under a temp name and
renamed in; ``collection.json`` names the live files, so a crash leaves the last state
it named, plus the log's records after it.

Opening a collection memory-maps its shards (nothing is copied, nothing is read in
proportion to their size) and replays the log, which sealing keeps short.

Search is brute force, hence exact. Shards are stored column-major so that scoring a
block of rows is one BLAS matrix-vector product over contiguous memory, and the top k
are picked block by block while the scores are still in cache: only rows that beat the
current k-th best are looked at again.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import math
import mmap
import os
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgspec
import numpy as np
from crc32c import crc32c

from . import layout, manifest
from .errors import (
    CollectionExists,
    CollectionNotFound,
    CorruptionError,
    Finding,
    FormatVersionError,
    InvalidCollection,
    InvalidDocument,
    InvalidFilter,
    InvalidQuery,
    SessionClosed,
    WriteFailed,
)
from .fsio import FileIO, safe_opener
from .log import (
    Durability,
    LogReader,
    LogWriter,
    encode_segment_header,
    refuse_msgpack_ext,
    write_tail_hint,
)

COLLECTION_FORMAT = "fsstore-collection"

SEAL_ROWS = 4096  # documents held in the log (and memory) before they become a shard
SEAL_BYTES = 8 << 20  # log bytes, likewise; an upsert this big is written as a shard
TIER_FANOUT = 4  # shards of one size tier merged at once
MAX_DIM = 65536
MAX_ID_BYTES = 1024
MAX_DOC_BYTES = 4 << 20  # content and metadata of one document, encoded
MAX_NPY_HEADER = 4096
CHUNK_ROWS = 16384  # rows scored per BLAS call: the scores stay in cache

DTYPES: dict[str, np.dtype] = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(ext_hook=refuse_msgpack_ext)
_NONE = _encoder.encode(None)
_EMPTY_MAP = _encoder.encode({})


class DistanceMetric(str, enum.Enum):
    """How a query and a document are compared. Results come best first:

    - ``cosine``: the cosine similarity, from -1 to 1, higher is better. A stored zero
      vector scores 0; a zero query is refused (it has no direction).
    - ``dot``: the dot product, higher is better.
    - ``euclidean``: the euclidean distance, lower is better.
    """

    COSINE = "cosine"
    DOT = "dot"
    EUCLIDEAN = "euclidean"

    @classmethod
    def of(cls, value: DistanceMetric | str, error: type[Exception] = InvalidQuery
           ) -> DistanceMetric:
        try:
            return cls(value)
        except ValueError:
            names = ", ".join(m.value for m in cls)
            raise error(f"unknown metric {value!r}: use one of {names}") from None


@dataclass
class VectorDocument:
    """A document to store: an ``id`` (str), its ``embedding`` (a sequence of numbers or
    a 1-D numpy array of the collection's dimension), optional text ``content``, a
    ``metadata`` dict (msgpack values; keys may not start with ``$``) and optionally the
    ``seq`` and ``turn`` of the event it comes from."""

    id: str
    embedding: Any
    content: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    seq: int | None = None
    turn: int | None = None


class VectorSearchResult(NamedTuple):
    """One hit. ``score`` is as :class:`DistanceMetric` says; ``session_id`` is set by
    ``Store.search``."""

    id: str
    score: float
    content: str | None
    metadata: dict[str, Any]
    seq: int | None
    turn: int | None
    session_id: str | None = None


@dataclass(frozen=True)
class CollectionInfo:
    """What ``collections()`` reports of one collection."""

    name: str
    dim: int
    dtype: str
    metric: str
    count: int  # live documents
    bytes: int  # on disk, all its files
    shards: int
    deleted: int  # deleted rows still in shards, until a merge drops them
    unsealed: int  # documents in the log, not yet in a shard


# --- validation ----------------------------------------------------------------------------


def check_collection_name(name: object) -> str:
    """Collection names follow the session id rule (they name a folder)."""
    try:
        return layout.check_session_id(name)
    except Exception as exc:
        raise InvalidCollection(str(exc).replace("session id", "collection name")) from None


def _as_vectors(value: Any, dim: int, what: str, error: type[Exception],
                dtype: np.dtype = DTYPES["float32"]) -> np.ndarray:
    """``value`` as an array of ``dtype`` of shape (dim,) or (n, dim), all finite."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise error(f"{what}: not an array of numbers ({exc})") from None
    if array.dtype.kind not in "fiu":
        raise error(f"{what}: must hold real numbers, not {array.dtype}")
    if array.ndim not in (1, 2) or array.shape[-1] != dim:
        raise error(f"{what}: has shape {array.shape}; the collection's dimension is {dim}")
    with np.errstate(over="ignore", invalid="ignore"):
        converted = np.ascontiguousarray(array, dtype=dtype)
    if not np.isfinite(converted).all():
        bad = "NaN or infinite values" if np.issubdtype(array.dtype, np.floating) and \
            not np.isfinite(array).all() else f"values too large for {dtype.name}"
        raise error(f"{what}: holds {bad}")
    return converted


class _Row(NamedTuple):
    """A validated document, ready to store."""

    id: str
    vector: np.ndarray  # (dim,) in the collection's dtype
    content: bytes  # msgpack
    metadata: bytes  # msgpack map
    seq: int  # -1: none
    turn: int  # -1: none


def _check_link(value: Any, name: str, doc_id: str) -> int:
    if value is None:
        return -1
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise InvalidDocument(f"document {doc_id!r}: {name} must be an int >= 0 or None, "
                              f"not {value!r}")
    return value


def check_id(doc_id: object, error: type[Exception] = InvalidDocument) -> str:
    if not isinstance(doc_id, str) or not doc_id:
        raise error(f"document id must be a non-empty str, not {doc_id!r}")
    if len(doc_id.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        raise error(f"document id {doc_id[:40]!r}... is over {MAX_ID_BYTES} bytes")
    try:
        doc_id.encode()
    except UnicodeEncodeError:
        raise error(f"document id {doc_id!r} is not valid unicode (lone surrogate)") from None
    return doc_id


def _validate(doc: VectorDocument | Mapping[str, Any], dim: int, dtype: np.dtype) -> _Row:
    if isinstance(doc, Mapping):
        unknown = set(doc) - {"id", "embedding", "content", "metadata", "seq", "turn"}
        if unknown or "id" not in doc or "embedding" not in doc:
            raise InvalidDocument(f"a document needs 'id' and 'embedding' (and may have "
                                  f"content, metadata, seq, turn); got keys {sorted(doc)}")
        doc = VectorDocument(**doc)
    elif not isinstance(doc, VectorDocument):
        raise InvalidDocument(f"expected a VectorDocument or a mapping, not "
                              f"{type(doc).__name__}")
    doc_id = check_id(doc.id)
    vector = _as_vectors(doc.embedding, dim, f"document {doc_id!r} embedding",
                         InvalidDocument, dtype)
    if vector.ndim != 1:
        raise InvalidDocument(f"document {doc_id!r}: embedding must be one vector")
    if doc.content is not None and not isinstance(doc.content, str):
        raise InvalidDocument(f"document {doc_id!r}: content must be a str or None")
    metadata = doc.metadata if doc.metadata is not None else {}
    if not isinstance(metadata, Mapping):
        raise InvalidDocument(f"document {doc_id!r}: metadata must be a dict")
    for key in metadata:
        if not isinstance(key, str) or key.startswith("$"):
            raise InvalidDocument(f"document {doc_id!r}: metadata key {key!r} must be a "
                                  "str not starting with '$' (reserved for filters)")
    try:
        content = _encoder.encode(doc.content)
        meta = _encoder.encode(dict(metadata))
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidDocument(f"document {doc_id!r}: metadata cannot be stored as msgpack "
                              f"({exc})") from None
    if len(content) + len(meta) > MAX_DOC_BYTES:
        raise InvalidDocument(f"document {doc_id!r}: content and metadata encode to "
                              f"{len(content) + len(meta)} bytes, over {MAX_DOC_BYTES}; keep "
                              "large payloads as attachments")
    return _Row(doc_id, vector, content, meta, _check_link(doc.seq, "seq", doc_id),
                _check_link(doc.turn, "turn", doc_id))


def check_k(k: object) -> int:
    """``k`` if it is a result count a search takes, else InvalidQuery."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidQuery(f"k must be an int >= 1, not {k!r}")
    return k


def _id_hash(doc_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "little")


# --- filters -------------------------------------------------------------------------------

_RANGE_OPS = {"$gt": np.greater, "$gte": np.greater_equal, "$lt": np.less,
              "$lte": np.less_equal}
_LINKS = ("$seq", "$turn")


def _scalar_key(value: Any) -> tuple[str, Any] | None:
    """How a non-numeric scalar is told apart: True is not 1, "1" is not 1."""
    if value is None:
        return ("n", None)
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, str):
        return ("s", value)
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class VectorFilter:
    """Conditions on a document, all of which must hold. Built from a mapping::

        {"role": "user"}                          equality (numbers compare by value)
        {"tag": {"$in": ["deploy", "ci"]}}        membership
        {"score": {"$gte": 0.5, "$lt": 2}}        numeric range ($gt $gte $lt $lte)
        {"$seq": {"$gte": 100}, "$turn": 3}       the linked event's seq or turn

    A document without the key (or without a linked event) matches no condition on it.
    Equality and membership match scalars (str, number, bool, None); lists and maps in
    metadata match nothing.
    """

    def __init__(self, conditions: Mapping[str, Any]) -> None:
        if not isinstance(conditions, Mapping):
            raise InvalidFilter(f"a filter is a mapping, not {type(conditions).__name__}")
        self.conditions: list[tuple[str, str, Any]] = []
        for key, spec in conditions.items():
            if not isinstance(key, str) or (key.startswith("$") and key not in _LINKS):
                raise InvalidFilter(f"filter key {key!r}: use a metadata key or one of "
                                    f"{', '.join(_LINKS)}")
            ops = spec if isinstance(spec, Mapping) else {"$eq": spec}
            if not ops:
                raise InvalidFilter(f"filter on {key!r} has no condition")
            for op, operand in ops.items():
                self.conditions.append((key, op, self._check(key, op, operand)))

    @staticmethod
    def _check(key: str, op: Any, operand: Any) -> Any:
        link = key in _LINKS
        if op == "$eq":
            values = [operand]
        elif op == "$in":
            if not isinstance(operand, (list, tuple, set, frozenset)):
                raise InvalidFilter(f"filter on {key!r}: $in takes a list, not {operand!r}")
            values = list(operand)
        elif op in _RANGE_OPS:
            if not _is_number(operand) or not math.isfinite(operand):
                raise InvalidFilter(f"filter on {key!r}: {op} takes a finite number, not "
                                    f"{operand!r}")
            return operand
        else:
            raise InvalidFilter(f"filter on {key!r}: unknown operator {op!r}; use $eq, $in, "
                                f"{', '.join(_RANGE_OPS)}")
        for value in values:
            if link and (not _is_number(value) or value != int(value)):
                raise InvalidFilter(f"filter on {key!r}: seqs and turns are ints, not "
                                    f"{value!r}")
            if not _is_number(value) and _scalar_key(value) is None:
                raise InvalidFilter(f"filter on {key!r}: {op} compares scalars (str, "
                                    f"number, bool, None), not {value!r}")
        return values

    @classmethod
    def of(cls, value: VectorFilter | Mapping[str, Any] | None) -> VectorFilter | None:
        if value is None or isinstance(value, VectorFilter):
            return value
        return cls(value)

    def mask(self, rows: _RowSource) -> np.ndarray:
        """Which rows of ``rows`` match."""
        result = np.ones(rows.size, dtype=bool)
        for key, op, operand in self.conditions:
            if key in _LINKS:
                column = rows.link_column(key[1:])
                present = column >= 0
                if op in _RANGE_OPS:
                    result &= present & _RANGE_OPS[op](column, operand)
                else:
                    result &= present & np.isin(column, np.array(operand, dtype=np.int64))
                continue
            numbers, codes, table = rows.metadata_column(key)
            if op in _RANGE_OPS:
                with np.errstate(invalid="ignore"):
                    result &= _RANGE_OPS[op](numbers, operand)  # NaN (absent) is False
                continue
            wanted_numbers = [v for v in operand if _is_number(v)]
            wanted_codes = [table[k] for k in map(_scalar_key, operand) if k in table]
            hit = np.isin(numbers, np.array(wanted_numbers, dtype=np.float64))
            if wanted_codes:
                hit |= np.isin(codes, np.array(wanted_codes, dtype=np.int32))
            result &= hit
        return result


def _metadata_column(values: Iterable[Any], size: int
                     ) -> tuple[np.ndarray, np.ndarray, dict[tuple[str, Any], int]]:
    """One metadata key of every row: numbers as float64 (NaN elsewhere), other scalars as
    codes into ``table`` (-1 elsewhere)."""
    numbers = np.full(size, np.nan)
    codes = np.full(size, -1, dtype=np.int32)
    table: dict[tuple[str, Any], int] = {}
    for row, value in enumerate(values):
        if _is_number(value):
            numbers[row] = value
        else:
            key = _scalar_key(value)
            if key is not None:
                codes[row] = table.setdefault(key, len(table))
    return numbers, codes, table


class _RowSource:
    """What filters and search need of a set of rows (a shard, or the unsealed rows)."""

    size: int

    def __init__(self) -> None:
        self._columns: dict[str, tuple[np.ndarray, np.ndarray, dict[tuple[str, Any], int]]] = {}
        self._aux: dict[str, np.ndarray] = {}

    def link_column(self, name: str) -> np.ndarray:
        raise NotImplementedError

    def metadata_of(self, row: int) -> dict[str, Any]:
        raise NotImplementedError

    def norms(self) -> np.ndarray:
        raise NotImplementedError

    def dead_rows(self) -> np.ndarray | None:
        raise NotImplementedError

    def matrix(self) -> np.ndarray:
        """The vectors as (dim, rows)."""
        raise NotImplementedError

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of ``rows`` as (dim, len(rows))."""
        raise NotImplementedError

    def document(self, row: int, with_embedding: bool = True) -> VectorDocument:
        raise NotImplementedError

    def metadata_column(self, key: str
                        ) -> tuple[np.ndarray, np.ndarray, dict[tuple[str, Any], int]]:
        # Built on first use and kept: a shard never changes, and the unsealed rows drop
        # their cache when they do.
        column = self._columns.get(key)
        if column is None:
            missing = object()
            values = (self.metadata_of(row).get(key, missing) for row in range(self.size))
            column = self._columns[key] = _metadata_column(values, self.size)
        return column

    def aux(self, metric: DistanceMetric) -> np.ndarray | None:
        """Per-row factors that turn dot products into the metric's ranking key."""
        if metric is DistanceMetric.DOT:
            return None
        cached = self._aux.get(metric.value)
        if cached is None:
            norms = self.norms()
            if metric is DistanceMetric.COSINE:
                cached = np.zeros(self.size, dtype=np.float32)
                np.divide(1.0, norms, out=cached, where=norms > 0)
            else:
                cached = np.square(norms, dtype=np.float32)
            self._aux[metric.value] = cached
        return cached


# --- shard files ---------------------------------------------------------------------------

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
    hashes = np.array([_id_hash(i) for i in ids], dtype="<u8")
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


class _DocsFile:
    """A memory-mapped docs file: sections are numpy views, nothing is read up front."""

    def __init__(self, path: str, rows: int) -> None:
        self.path = path
        with open(path, "rb", opener=safe_opener) as handle:
            size = os.fstat(handle.fileno()).st_size
            raw = handle.read(DOCS_HEADER_SIZE)
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
            self._map = mmap.mmap(handle.fileno(), size, prot=mmap.PROT_READ)
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
        raw = self.raw(section, row)
        if raw == _NONE:  # most documents: no content, or no metadata
            return None
        if raw == _EMPTY_MAP:
            return {}
        try:
            return _decoder.decode(raw)
        except (msgspec.DecodeError, ValueError) as exc:
            offsets = getattr(self, self._OFFSETS[section])
            raise CorruptionError(f"row {row}: {section} does not decode ({exc})",
                                  path=self.path,
                                  offset=self.sections[section][0] + int(offsets[row])) from None

    def find(self, doc_id: str) -> int | None:
        return self.find_hashed(doc_id, _id_hash(doc_id))

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


def open_vectors(path: str, rows: int, dim: int, dtype: np.dtype) -> np.ndarray:
    """Memory-map a shard's vectors, refusing anything but the expected plain array:
    a bounded header parsed without pickling, the dtype, Fortran order, the shape, and a
    file size that matches."""
    with open(path, "rb", opener=safe_opener) as handle:
        try:
            version = np.lib.format.read_magic(handle)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"npy version {version}")
            shape, fortran, found = read(handle, max_header_size=MAX_NPY_HEADER)
        except (ValueError, SyntaxError, TypeError, EOFError) as exc:
            raise CorruptionError(f"not a readable .npy header ({exc})", path=path,
                                  offset=0) from None
        offset = handle.tell()
        size = os.fstat(handle.fileno()).st_size
    if found.hasobject:
        raise CorruptionError("holds an object array; fsstore never unpickles", path=path)
    if found != dtype:
        raise CorruptionError(f"holds {found}; the collection stores {dtype}", path=path)
    if shape != (rows, dim):
        raise CorruptionError(f"has shape {shape}; the collection expects ({rows}, {dim})",
                              path=path)
    if not fortran:
        raise CorruptionError("is in C order; shards are Fortran (column) order", path=path)
    if size != offset + rows * dim * dtype.itemsize:
        raise CorruptionError(f"is {size} bytes; its header says "
                              f"{offset + rows * dim * dtype.itemsize}", path=path)
    with open(path, "rb", opener=safe_opener) as handle:  # the file checked, not a swap
        return np.memmap(handle, dtype=dtype, mode="r", offset=offset, shape=(rows, dim),
                         order="F")


def write_shard(io: FileIO, folder: str, name: str, vectors: np.ndarray, ids: Sequence[str],
                seqs: np.ndarray, turns: np.ndarray, contents: Sequence[bytes],
                metas: Sequence[bytes]) -> dict[str, Any]:
    """Write a shard's two files under temp names, fsync them, rename them in and fsync
    the folder. Returns its entry for ``collection.json``. Nothing names the files yet:
    until the manifest does, a crash leaves only leftovers the next writer removes."""
    rows, dim = vectors.shape
    norms = _norms(vectors)
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
            crc = _file_crc(vec_temp)[1]
        io.fsync(fd)
    finally:
        io.close(fd)
    io.write_new(docs_temp, docs)
    io.rename(vec_temp, os.path.join(folder, vec_name))
    io.rename(docs_temp, os.path.join(folder, docs_name))
    io.fsync_dir(folder)
    return {"name": name, "rows": rows, "vectors_bytes": len(header) + rows * dim *
            vectors.itemsize, "vectors_crc": crc, "docs_bytes": len(docs),
            "docs_crc": crc32c(docs), "deleted": None, "deleted_rows": 0}


def _file_crc(path: str) -> tuple[int, int]:
    """(size, crc32c) of a whole file."""
    crc, size = 0, 0
    with open(path, "rb", opener=safe_opener) as handle:
        while chunk := handle.read(8 << 20):
            crc = crc32c(chunk, crc)
            size += len(chunk)
    return size, crc


def _norms(vectors: np.ndarray) -> np.ndarray:
    if not len(vectors):
        return np.zeros(0, dtype=np.float32)
    return np.sqrt(np.einsum("ij,ij->i", vectors, vectors, dtype=np.float32)).astype(
        np.float32)


def _read_deleted(path: str, rows: int) -> np.ndarray:
    """A shard's deleted rows: a 1-D uint32 .npy of ascending rows within the shard."""
    try:
        with open(path, "rb", opener=safe_opener) as handle:
            deleted = np.load(handle, allow_pickle=False, max_header_size=MAX_NPY_HEADER)
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError) as exc:
        raise CorruptionError(f"not a readable .npy file ({exc})", path=path) from None
    if deleted.dtype != np.dtype("<u4") or deleted.ndim != 1:
        raise CorruptionError(f"holds {deleted.dtype} {deleted.shape}; deleted rows are a "
                              "1-D uint32 array", path=path)
    if len(deleted) and (deleted[-1] >= rows or np.any(np.diff(deleted.astype(np.int64)) <= 0)):
        raise CorruptionError(f"deleted rows are not ascending within the shard's {rows}",
                              path=path)
    return deleted


def _encode_npy(array: np.ndarray) -> bytes:
    sink = _BytesSink()
    np.lib.format.write_array(sink, array, allow_pickle=False)
    return sink.data


class _Shard(_RowSource):
    """A live shard: its vectors and docs memory-mapped, its deleted rows in memory."""

    def __init__(self, folder: str, entry: Mapping[str, Any], dim: int, dtype: np.dtype,
                 manifest_path: str) -> None:
        super().__init__()
        try:
            self.name = layout.check_shard_name(entry["name"])
            self.size = self.rows = int(entry["rows"])
            self.entry = dict(entry)
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptionError(f"a shard entry is malformed ({exc!r})",
                                  path=manifest_path) from None
        self.vectors_path = os.path.join(folder, layout.shard_vectors_name(self.name))
        self.docs_path = os.path.join(folder, layout.shard_docs_name(self.name))
        self.vectors = open_vectors(self.vectors_path, self.rows, dim, dtype)
        self.docs = _DocsFile(self.docs_path, self.rows)
        self.dead: np.ndarray | None = None
        self.dead_count = 0
        deleted = entry.get("deleted")
        if deleted is not None:
            rows = _read_deleted(os.path.join(folder, layout.check_deleted_name(deleted)),
                                 self.rows)
            if len(rows):
                self.dead = np.zeros(self.rows, dtype=bool)
                self.dead[rows] = True
                self.dead_count = len(rows)

    @property
    def live(self) -> int:
        return self.rows - self.dead_count

    def kill(self, row: int) -> None:
        if self.dead is None:
            self.dead = np.zeros(self.rows, dtype=bool)
        if not self.dead[row]:
            self.dead[row] = True
            self.dead_count += 1

    def dead_rows(self) -> np.ndarray | None:
        return self.dead if self.dead_count else None

    def find(self, doc_id: str) -> int | None:
        row = self.docs.find(doc_id)
        if row is None or (self.dead is not None and self.dead[row]):
            return None
        return row

    def link_column(self, name: str) -> np.ndarray:
        return self.docs.seq if name == "seq" else self.docs.turn

    def metadata_of(self, row: int) -> dict[str, Any]:
        value = self.docs.decoded("meta", row)
        return value if isinstance(value, dict) else {}

    def norms(self) -> np.ndarray:
        return self.docs.norms

    def matrix(self) -> np.ndarray:
        return self.vectors.T  # (dim, rows), C-contiguous: column blocks are contiguous

    def gather(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.vectors[rows]).T

    def document(self, row: int, with_embedding: bool = True) -> VectorDocument:
        docs = self.docs
        seq, turn = docs.seq.item(row), docs.turn.item(row)
        return VectorDocument(
            docs.id_of(row), np.array(self.vectors[row]) if with_embedding else None,
            docs.decoded("content", row), self.metadata_of(row),
            None if seq < 0 else seq, None if turn < 0 else turn)


class _Unsealed(_RowSource):
    """The documents in the log since the last seal, held in memory in arrays that grow."""

    def __init__(self, dim: int, dtype: np.dtype) -> None:
        super().__init__()
        self.dim, self.dtype = dim, dtype
        self.size = 0
        self.vectors = np.empty((64, dim), dtype=dtype)
        self._norms = np.empty(64, dtype=np.float32)
        self.seq = np.empty(64, dtype=np.int64)
        self.turn = np.empty(64, dtype=np.int64)
        self.alive = np.empty(64, dtype=bool)
        self.ids: list[str] = []
        self.contents: list[bytes] = []
        self.metas: list[bytes] = []
        self.index: dict[str, int] = {}  # live id -> row
        self.log_bytes = 0

    def add(self, row: _Row) -> None:
        size = self.size
        if size == len(self.alive):
            grow = 2 * size
            for name in ("vectors", "_norms", "seq", "turn", "alive"):
                old = getattr(self, name)
                new = np.empty((grow,) + old.shape[1:], dtype=old.dtype)
                new[:size] = old[:size]
                setattr(self, name, new)
        self.vectors[size] = row.vector
        self._norms[size] = _norms(row.vector[None, :])[0]
        self.seq[size], self.turn[size], self.alive[size] = row.seq, row.turn, True
        self.ids.append(row.id)
        self.contents.append(row.content)
        self.metas.append(row.metadata)
        self.index[row.id] = size
        self.size = size + 1
        self._changed()

    def kill(self, doc_id: str) -> bool:
        row = self.index.pop(doc_id, None)
        if row is None:
            return False
        self.alive[row] = False
        self._changed()
        return True

    def _changed(self) -> None:
        self._columns.clear()
        self._aux.clear()

    @property
    def live(self) -> int:
        return len(self.index)

    def dead_rows(self) -> np.ndarray | None:
        return None if self.live == self.size else ~self.alive[:self.size]

    def link_column(self, name: str) -> np.ndarray:
        return (self.seq if name == "seq" else self.turn)[:self.size]

    def metadata_of(self, row: int) -> dict[str, Any]:
        value = _decoder.decode(self.metas[row])
        return value if isinstance(value, dict) else {}

    def norms(self) -> np.ndarray:
        return self._norms[:self.size]

    def matrix(self) -> np.ndarray:
        return self.vectors[:self.size].T

    def gather(self, rows: np.ndarray) -> np.ndarray:
        return self.vectors[rows].T

    def document(self, row: int, with_embedding: bool = True) -> VectorDocument:
        seq, turn = int(self.seq[row]), int(self.turn[row])
        return VectorDocument(
            self.ids[row], self.vectors[row].copy() if with_embedding else None,
            _decoder.decode(self.contents[row]), self.metadata_of(row),
            None if seq < 0 else seq, None if turn < 0 else turn)


# --- search ----------------------------------------------------------------------------


def _floor(scores: np.ndarray, k: int) -> np.ndarray | None:
    """A key that every one of the best ``k`` of each row of ``scores`` reaches: the k-th
    best of every step-th score (the k-th best of a subset is never above the k-th best
    of the whole). It leaves about ``k * step`` candidates to look at again, at the cost
    of a partition of a ``step``-th of the scores."""
    width = scores.shape[-1]
    step = min(16, width // (4 * k))
    if step < 2:
        return None
    sample = scores[..., ::step]
    at = sample.shape[-1] - k
    return np.partition(sample, at, axis=-1)[..., at]


def _top_k(matrix: np.ndarray, queries: np.ndarray, k: int, metric: DistanceMetric,
           aux: np.ndarray | None, blocked: np.ndarray | None
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The best ``k`` rows of ``matrix`` (dim x rows) for each query, by ranking key
    (higher is better): the dot product, times 1/norm for cosine, or 2 dot - norm^2 for
    euclidean. Rows that are ``blocked`` are never returned. Returns flat arrays
    (query, key, row), unordered.

    Rows are scored a block at a time, and only those at or above a floor (the k-th best
    so far, or one found from a sample of the block) are kept: selection then costs one
    comparison per row while the block's scores are still in cache."""
    rows = matrix.shape[1]
    count = len(queries)
    convert = matrix.dtype != np.float32
    best_query = np.empty(0, dtype=np.int64)
    best_keys = np.empty(0, dtype=np.float32)
    best_rows = np.empty(0, dtype=np.int64)
    # Keys must beat the k-th best so far; ties with it cannot improve the top k.
    threshold = np.full(count, -np.inf, dtype=np.float32)
    single = count == 1
    query = queries[0]
    for start in range(0, rows, CHUNK_ROWS):
        end = min(start + CHUNK_ROWS, rows)
        block = matrix[:, start:end]
        if convert:
            block = block.astype(np.float32)
        scores = query @ block if single else queries @ block
        if aux is not None:
            if metric is DistanceMetric.COSINE:
                scores *= aux[start:end]
            else:
                scores *= 2
                scores -= aux[start:end]
        if blocked is not None:
            scores[..., blocked[start:end]] = -np.inf
        limit = np.nextafter(threshold, np.float32(np.inf))
        floor = _floor(scores, k)
        if floor is not None:
            limit = np.maximum(limit, floor)
        if single:
            found = np.flatnonzero(scores >= limit[0])
            if not found.size:
                continue
            keys = np.concatenate((best_keys, scores[found]))
            found = np.concatenate((best_rows, found + start))
            if keys.size > k:
                keep = np.argpartition(keys, keys.size - k)[keys.size - k:]
                keys, found = keys[keep], found[keep]
                threshold[0] = keys.min()
            best_keys, best_rows = keys, found
            best_query = np.zeros(keys.size, dtype=np.int64)
            continue
        which, columns = np.nonzero(scores >= limit[:, None])
        if not which.size:
            continue
        which = np.concatenate((best_query, which))
        keys = np.concatenate((best_keys, scores[which[len(best_query):], columns]))
        found = np.concatenate((best_rows, columns + start))
        order = np.lexsort((-keys, which))  # by query, then best first
        which, keys, found = which[order], keys[order], found[order]
        rank = np.arange(which.size) - np.searchsorted(which, which)
        kept = rank < k
        full = rank == k - 1
        threshold[which[full]] = keys[full]
        best_query, best_keys, best_rows = which[kept], keys[kept], found[kept]
    return best_query, best_keys, best_rows


def _score(metric: DistanceMetric, key: float, query_norm: float) -> float:
    """The reported score of a ranking key."""
    if metric is DistanceMetric.COSINE:
        return min(1.0, max(-1.0, key / float(query_norm)))
    if metric is DistanceMetric.EUCLIDEAN:
        return math.sqrt(max(float(query_norm) ** 2 - key, 0.0))
    return key


def _search_rows(source: _RowSource, queries: np.ndarray, k: int, metric: DistanceMetric,
                 allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top k of one row source, under an optional mask of allowed rows."""
    aux = source.aux(metric)
    if allowed is not None:
        picked = np.flatnonzero(allowed)
        if len(picked) * 16 < source.size:
            # A narrow filter: gather the few rows rather than score them all.
            which, keys, rows = _top_k(source.gather(picked), queries, k, metric,
                                       None if aux is None else aux[picked], None)
            return which, keys, picked[rows]
        return _top_k(source.matrix(), queries, k, metric, aux, ~allowed)
    return _top_k(source.matrix(), queries, k, metric, aux, None)


# --- the collection ----------------------------------------------------------------------


class VectorCollection:
    """One vector collection of a session. A writer's collection (from
    ``Session.collection``) takes upserts and deletes; a reader's (from
    ``SessionReader.collection``) sees the collection as it was when opened.

    Thread-safe: calls are serialised.
    """

    def __init__(self, io: FileIO, path: str, *, durability: Durability | None = None,
                 writable: bool = False,
                 guard: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
                 ) -> None:
        self.io = io
        self.path = path
        # Each write runs inside guard(): a shared session's mutex and lease fence.
        self._guard = guard or contextlib.nullcontext
        self.manifest_path = os.path.join(path, layout.COLLECTION_MANIFEST)
        self._lock = threading.RLock()
        self._writable = writable
        self._wal: LogWriter | None = None
        self._failed: BaseException | None = None
        self._closed = False
        wal_path = os.path.join(path, layout.WAL_DIR)
        io.check_folders(path, wal_path)  # never read or write through a symlinked folder
        if not writable:
            self._load_for_reading(wal_path)
            return
        self._read_manifest()
        self._remove_leftovers()
        try:
            self._shards = self._open_shards()
        except FileNotFoundError as exc:
            raise CorruptionError("missing, though the manifest names it; restore it from "
                                  "a backup", path=str(exc.filename)) from None
        self._wal = LogWriter(io, wal_path, durability or Durability())
        self._unsealed = _Unsealed(self.dim, self._dtype)
        self._dirty: set[str] = set()  # shards with deletes not yet in a deleted file
        try:
            self._check_wal_start(self._wal.log_start)
            self._replay(self._wal.reader)
        except BaseException:
            self._wal.close()
            raise

    # --- opening ---

    def _read_manifest(self) -> None:
        try:
            data = manifest.read(self.io, self.manifest_path, COLLECTION_FORMAT)
        except FileNotFoundError:
            raise CollectionNotFound(f"no vector collection at {self.path}") from None
        try:
            self.name = str(data["name"])
            self.dim = int(data["dim"])
            self.dtype = str(data["dtype"])
            self._dtype = DTYPES[self.dtype]
            self.metric = DistanceMetric(data["metric"])
            self._generation = int(data["generation"])
            self._wal_seq = int(data["wal_seq"])
            self._next_shard = int(data["next_shard"])
            if not isinstance(data["shards"], list) or not 1 <= self.dim <= MAX_DIM:
                raise ValueError("bad shards or dim")
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptionError(f"malformed collection manifest ({exc!r})",
                                  path=self.manifest_path) from None
        self._manifest = data

    def _open_shards(self) -> list[_Shard]:
        return [_Shard(self.path, entry, self.dim, self._dtype, self.manifest_path)
                for entry in self._manifest["shards"]]

    def _check_wal_start(self, log_start: int) -> None:
        # A seal writes the manifest before it clears the log, so the log never starts
        # after the first seq the manifest leaves to it.
        if log_start > self._wal_seq + 1:
            raise CorruptionError(
                f"the log starts at seq {log_start} but this manifest covers only up to "
                f"{self._wal_seq}: records in between are missing", path=self.manifest_path)

    def _load_for_reading(self, wal_path: str) -> None:
        # A writer may seal or merge meanwhile: it removes shard files and clears the log
        # only after the manifest that stops naming them. Seeing either, read again.
        for attempt in range(5):
            self._read_manifest()
            generation = self._generation
            try:
                self._shards = self._open_shards()
                reader = LogReader(self.io, wal_path)
                if reader.live_segments()[1] > self._wal_seq + 1:
                    raise FileNotFoundError
                self._unsealed = _Unsealed(self.dim, self._dtype)
                self._replay(reader)
                self._read_manifest()
            except FileNotFoundError as exc:
                if attempt == 4:
                    raise CorruptionError("missing, though the manifest names it; restore "
                                          "it from a backup", path=str(exc.filename)) from None
                continue
            if self._generation == generation:
                return
        raise CorruptionError("the collection kept changing while being read; try again",
                              path=self.manifest_path)

    def _replay(self, reader: LogReader) -> None:
        for event in reader.events(after_seq=self._wal_seq):
            data = event.data
            try:
                if event.kind == "upsert":
                    vector = np.frombuffer(data["v"], dtype=self._dtype)
                    if vector.shape != (self.dim,):
                        raise ValueError(f"vector of {vector.size} values")
                    self._apply_upsert(_Row(data["id"], vector, data["c"], data["m"],
                                            data["s"], data["t"]))
                elif event.kind == "delete":
                    for doc_id in data["ids"]:
                        self._apply_delete(doc_id)
                else:
                    raise ValueError(f"unknown record kind {event.kind!r}")
            except (KeyError, TypeError, ValueError) as exc:
                raise CorruptionError(f"log record {event.seq} is malformed ({exc})",
                                      path=reader.path) from None

    def _remove_leftovers(self) -> None:
        """Unlink files no manifest names: a seal or merge a crash interrupted, shards a
        merge replaced, deleted files superseded. Only a writer does this."""
        keep = {layout.COLLECTION_MANIFEST, layout.WAL_DIR}
        for entry in self._manifest["shards"]:
            keep.add(layout.shard_vectors_name(entry.get("name", "")))
            keep.add(layout.shard_docs_name(entry.get("name", "")))
            if entry.get("deleted"):
                keep.add(entry["deleted"])
        removed = False
        for name in self.io.listdir(self.path):
            if name not in keep and (layout.is_shard_file(name) or
                                     name.startswith(layout.TEMP_PREFIX)):
                self.io.unlink(os.path.join(self.path, name))
                removed = True
        if removed:
            self.io.fsync_dir(self.path)

    # --- reading ---

    def _sources(self) -> list[_RowSource]:
        return [*self._shards, self._unsealed]

    def count(self) -> int:
        """Live documents."""
        with self._lock:
            return sum(s.live for s in self._shards) + self._unsealed.live

    def info(self) -> CollectionInfo:
        with self._lock:
            size = 0
            for folder, _dirs, files in os.walk(self.path):
                for name in files:
                    try:
                        size += os.stat(os.path.join(folder, name)).st_size
                    except FileNotFoundError:
                        pass
            return CollectionInfo(self.name, self.dim, self.dtype, self.metric.value,
                                  self.count(), size, len(self._shards),
                                  sum(s.dead_count for s in self._shards),
                                  self._unsealed.live)

    def _locate(self, doc_id: str) -> tuple[_RowSource, int] | None:
        row = self._unsealed.index.get(doc_id)
        if row is not None:
            return self._unsealed, row
        for shard in reversed(self._shards):
            found = shard.find(doc_id)
            if found is not None:
                return shard, found
        return None

    def get(self, ids: Iterable[str]) -> list[VectorDocument | None]:
        """The documents with these ids, in order; None where there is none."""
        ids = [check_id(i, InvalidQuery) for i in _as_list(ids, "ids")]
        with self._lock:
            result: list[VectorDocument | None] = []
            for doc_id in ids:
                place = self._locate(doc_id)
                result.append(None if place is None else place[0].document(place[1]))
            return result

    def search(self, query: Any, k: int = 10, *, metric: DistanceMetric | str | None = None,
               filter: VectorFilter | Mapping[str, Any] | None = None,
               ) -> list[VectorSearchResult]:
        """The ``k`` documents nearest the vector ``query``, best first, by exact search.

        ``metric`` defaults to the collection's; ``filter`` is a :class:`VectorFilter` or
        the mapping that builds one. For many queries at once use ``search_batch``.
        """
        vector = _as_vectors(query, self.dim, "query", InvalidQuery)
        if vector.ndim != 1:
            raise InvalidQuery(f"query has shape {vector.shape}: search takes one vector; "
                               "use search_batch for several")
        return self._search(vector[None, :], k, metric, filter)[0]

    def search_batch(self, queries: Any, k: int = 10, *,
                     metric: DistanceMetric | str | None = None,
                     filter: VectorFilter | Mapping[str, Any] | None = None,
                     ) -> list[list[VectorSearchResult]]:
        """``search`` for each row of the 2-D ``queries``, in one pass over the shards
        (matrix-matrix products): one list of results per query."""
        matrix = _as_vectors(queries, self.dim, "queries", InvalidQuery)
        if matrix.ndim != 2:
            raise InvalidQuery(f"queries has shape {matrix.shape}: search_batch takes a 2-D "
                               "array of vectors")
        return self._search(matrix, k, metric, filter)

    def _search(self, queries: np.ndarray, k: int, metric: DistanceMetric | str | None,
                filter: VectorFilter | Mapping[str, Any] | None,
                ) -> list[list[VectorSearchResult]]:
        k = check_k(k)
        chosen = self.metric if metric is None else DistanceMetric.of(metric)
        conditions = VectorFilter.of(filter)
        if not len(queries):
            return []
        norms = np.sqrt(np.einsum("ij,ij->i", queries, queries, dtype=np.float64))
        if chosen is DistanceMetric.COSINE and not norms.all():
            raise InvalidQuery("a zero query vector has no direction under cosine; use "
                               "metric 'dot' or 'euclidean', or another query")
        with self._lock:
            self._check_open()
            parts = []
            sources = self._sources()
            for number, source in enumerate(sources):
                if source.size == 0:
                    continue
                dead = source.dead_rows()
                allowed = None if dead is None else ~dead
                if conditions is not None:
                    mask = conditions.mask(source)
                    allowed = mask if allowed is None else allowed & mask
                if allowed is not None and not allowed.any():
                    continue
                which, keys, rows = _search_rows(source, queries, k, chosen, allowed)
                parts.append((which, keys, rows, np.full(which.size, number)))
            results: list[list[VectorSearchResult]] = [[] for _ in range(len(queries))]
            if parts:
                which, keys, rows, origin = (np.concatenate(p) for p in zip(*parts,
                                                                           strict=True))
                for position in np.lexsort((-keys, which)).tolist():
                    hits = results[which[position]]
                    if len(hits) < k:
                        hits.append(self._result(
                            sources[origin[position]], int(rows[position]),
                            _score(chosen, float(keys[position]), norms[which[position]])))
        return results

    @staticmethod
    def _result(source: _RowSource, row: int, score: float) -> VectorSearchResult:
        document = source.document(row, with_embedding=False)
        return VectorSearchResult(document.id, score, document.content, document.metadata,
                                  document.seq, document.turn)

    # --- writing ---

    def _check_open(self) -> None:
        if self._closed:
            raise SessionClosed(f"{self.path}: the collection's session is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if not self._writable:
            raise InvalidCollection(f"{self.path}: opened for reading; open the session "
                                    "for writing to change its collections")
        if self._failed is not None:
            raise WriteFailed(f"{self.path}: an earlier write failed ({self._failed}); "
                              "reopen the session")

    def upsert(self, documents: Iterable[VectorDocument | Mapping[str, Any]]) -> int:
        """Add documents, replacing any with the same id (the last of a repeated id wins).
        All are stored or none: on a bad document nothing is written. Returns how many
        were stored. Durable as the session's durability mode says."""
        rows: dict[str, _Row] = {}
        with self._guard(), self._lock:
            self._check_writable()
            for doc in _as_list(documents, "documents"):
                row = _validate(doc, self.dim, self._dtype)
                rows.pop(row.id, None)
                rows[row.id] = row
            if not rows:
                return 0
            batch = list(rows.values())
            size = sum(r.vector.nbytes + len(r.content) + len(r.metadata) + len(r.id)
                       for r in batch)
            if len(batch) >= SEAL_ROWS or size >= SEAL_BYTES:
                self._guarded(self._upsert_as_shard, batch)
            else:
                wal = self._wal
                assert wal is not None
                wal.append([("upsert", {"id": r.id, "v": r.vector.tobytes(), "c": r.content,
                                        "m": r.metadata, "s": r.seq, "t": r.turn})
                            for r in batch], 0, time.time())
                for row in batch:
                    self._apply_upsert(row)
                self._unsealed.log_bytes += size
                if self._unsealed.size >= SEAL_ROWS or self._unsealed.log_bytes >= SEAL_BYTES:
                    self._guarded(self._seal_and_merge)
            return len(batch)

    def delete(self, ids: Iterable[str]) -> int:
        """Delete documents by id; ids not present are ignored. Returns how many were
        deleted. Rows in shards become tombstones until a merge drops them."""
        with self._guard(), self._lock:
            self._check_writable()
            wanted = list(dict.fromkeys(check_id(i) for i in _as_list(ids, "ids")))
            present = [i for i in wanted if self._locate(i) is not None]
            if not present:
                return 0
            wal = self._wal
            assert wal is not None
            wal.append([("delete", {"ids": present})], 0, time.time())
            for doc_id in present:
                self._apply_delete(doc_id)
            if self._unsealed.size >= SEAL_ROWS:
                self._guarded(self._seal_and_merge)
            return len(present)

    def _apply_upsert(self, row: _Row) -> None:
        self._apply_delete(row.id)
        self._unsealed.add(row)

    def _apply_delete(self, doc_id: str) -> None:
        if self._unsealed.kill(doc_id):
            return
        for shard in reversed(self._shards):
            found = shard.find(doc_id)
            if found is not None:
                shard.kill(found)
                if self._writable:
                    self._dirty.add(shard.name)
                return

    def sync(self) -> None:
        """Make every upsert and delete so far durable, whatever the durability mode."""
        with self._guard(), self._lock:
            self._check_writable()
            assert self._wal is not None
            self._wal.sync()

    def flush(self) -> None:
        """Seal the unsealed documents into a shard now (it also happens every
        ``SEAL_ROWS`` documents) and merge shards as the size tiers call for."""
        with self._guard(), self._lock:
            self._check_writable()
            self._guarded(self._seal_and_merge)

    def compact(self) -> None:
        """Seal, then merge every shard into one without its deleted rows."""
        with self._guard(), self._lock:
            self._check_writable()
            self._guarded(self._seal)
            if len(self._shards) > 1 or any(s.dead_count for s in self._shards):
                self._guarded(self._merge, list(self._shards))

    def _guarded(self, operation: Any, *args: Any) -> None:
        try:
            operation(*args)
        except OSError as exc:
            # Memory may now be ahead of the disk: refuse further writes until reopened.
            self._failed = exc
            raise WriteFailed(f"{self.path}: {exc}; reopen the session (the collection "
                              "keeps what was written before)") from exc

    def _shard_name(self) -> str:
        name = layout.shard_name(self._next_shard)
        self._next_shard += 1
        return name

    def _commit(self, shards: list[dict[str, Any]]) -> None:
        """Replace collection.json: the one step that makes a seal or merge visible."""
        assert self._wal is not None
        data = dict(self._manifest, shards=shards, generation=self._generation + 1,
                    wal_seq=self._wal.head, next_shard=self._next_shard,
                    version=manifest.VERSION)
        manifest.write(self.io, self.manifest_path, data)
        self._manifest, self._generation, self._wal_seq = data, data["generation"], \
            data["wal_seq"]

    def _deleted_entries(self) -> dict[str, dict[str, Any]]:
        """Write a new deleted-rows file for each shard with new deletes."""
        updated = {}
        for shard in self._shards:
            if shard.name in self._dirty and shard.dead is not None:
                name = layout.deleted_name(shard.name, self._generation + 1)
                rows = np.flatnonzero(shard.dead).astype("<u4")
                self.io.atomic_write(os.path.join(self.path, name), _encode_npy(rows))
                updated[shard.name] = dict(shard.entry, deleted=name, deleted_rows=len(rows))
        return updated

    def _seal(self) -> None:
        unsealed, wal = self._unsealed, self._wal
        assert wal is not None
        if wal.head == self._wal_seq:
            return
        # The log must hold what the manifest says it covers, or a crash could take back
        # records below wal_seq and later ones would reuse their seqs unseen.
        wal.sync()
        new_shard = None
        if unsealed.live:
            rows = np.array(sorted(unsealed.index.values()), dtype=np.int64)
            new_shard = write_shard(
                self.io, self.path, self._shard_name(), unsealed.vectors[rows],
                [unsealed.ids[r] for r in rows], unsealed.seq[rows], unsealed.turn[rows],
                [unsealed.contents[r] for r in rows], [unsealed.metas[r] for r in rows])
        self._commit_shards(new_shard)
        wal.clear()  # after the manifest that covers it; a replay skips what it covers
        self._unsealed = _Unsealed(self.dim, self._dtype)

    def _commit_shards(self, new_shard: dict[str, Any] | None) -> None:
        """Write a deleted-rows file for each shard with new deletes, and name them (and
        ``new_shard``, a shard just written) in one manifest; then drop the files the
        manifest no longer names."""
        updated = self._deleted_entries()
        old_deleted = [s.entry.get("deleted") for s in self._shards if s.name in updated]
        entries = [updated.get(s.name, dict(s.entry)) for s in self._shards]
        self._commit(entries if new_shard is None else [*entries, new_shard])
        for shard in self._shards:
            if shard.name in updated:
                shard.entry = updated[shard.name]
        if new_shard is not None:
            self._shards.append(_Shard(self.path, new_shard, self.dim, self._dtype,
                                       self.manifest_path))
        self._dirty.clear()
        self._unlink([name for name in old_deleted if name])

    def _unlink(self, names: Iterable[str]) -> None:
        removed = False
        for name in names:
            try:
                self.io.unlink(os.path.join(self.path, name))
                removed = True
            except FileNotFoundError:
                pass
        if removed:
            self.io.fsync_dir(self.path)

    def _seal_and_merge(self) -> None:
        self._seal()
        while (group := self._merge_candidates()):
            self._merge(group)

    def _merge_candidates(self) -> list[_Shard]:
        """Shards to merge next: any shard a quarter deleted (rewritten alone), else the
        oldest ``TIER_FANOUT`` shards of one size tier (tier t: live rows below
        SEAL_ROWS * 4^(t+1)), which keeps the shard count logarithmic."""
        for shard in self._shards:
            if shard.dead_count * 4 > shard.rows:
                return [shard]
        tiers: dict[int, list[_Shard]] = {}
        for shard in self._shards:
            tier = 0
            while shard.live >= SEAL_ROWS * TIER_FANOUT ** (tier + 1):
                tier += 1
            tiers.setdefault(tier, []).append(shard)
            if len(tiers[tier]) == TIER_FANOUT:
                return tiers[tier]
        return []

    def _merge(self, group: list[_Shard]) -> None:
        """Write the live rows of ``group`` as one shard and drop the group's files."""
        vectors, ids, seqs, turns, contents, metas = [], [], [], [], [], []
        for shard in group:
            live = (np.arange(shard.rows) if shard.dead is None
                    else np.flatnonzero(~shard.dead))
            docs = shard.docs
            vectors.append(np.asarray(shard.vectors[live]))
            seqs.append(docs.seq[live])
            turns.append(docs.turn[live])
            for row in live.tolist():
                ids.append(docs.id_of(row))
                contents.append(bytes(docs.raw("content", row)))
                metas.append(bytes(docs.raw("meta", row)))
        names = {s.name for s in group}
        entries = [dict(s.entry) for s in self._shards if s.name not in names]
        merged = None
        if ids:
            merged = write_shard(self.io, self.path, self._shard_name(),
                                 np.concatenate(vectors), ids, np.concatenate(seqs),
                                 np.concatenate(turns), contents, metas)
            entries.append(merged)
        self._commit(entries)
        self._shards = [s for s in self._shards if s.name not in names]
        if merged is not None:
            self._shards.append(_Shard(self.path, merged, self.dim, self._dtype,
                                       self.manifest_path))
        dropped = []
        for shard in group:
            dropped += [os.path.basename(shard.vectors_path), os.path.basename(shard.docs_path)]
            if shard.entry.get("deleted"):
                dropped.append(shard.entry["deleted"])
        self._unlink(dropped)

    def _upsert_as_shard(self, batch: list[_Row]) -> None:
        """A large upsert skips the log: seal what is pending, write the batch as a shard
        and its replacements as deleted rows, and name both in one manifest."""
        self._seal()
        replaced: list[tuple[_Shard, int]] = []
        for row in batch:
            for shard in self._shards:
                found = shard.find(row.id)
                if found is not None:
                    replaced.append((shard, found))
                    break
        entry = write_shard(self.io, self.path, self._shard_name(),
                            np.stack([r.vector for r in batch]), [r.id for r in batch],
                            np.array([r.seq for r in batch]), np.array([r.turn for r in batch]),
                            [r.content for r in batch], [r.metadata for r in batch])
        # Deletes go in memory first so the deleted files can be written; a failure
        # from here on leaves the writer failed (reopen reads the disk again).
        for shard, position in replaced:
            shard.kill(position)
            self._dirty.add(shard.name)
        self._commit_shards(entry)
        while (group := self._merge_candidates()):
            self._merge(group)

    # --- checks and lifecycle ---

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._wal is not None:
                self._wal.close()

    def __repr__(self) -> str:
        return f"<VectorCollection {self.path} dim={self.dim} {self.metric.value}>"


def check_collection(io: FileIO, path: str) -> list[Finding]:
    """Read every file of the collection at ``path`` whole and report each problem:
    shard files missing, damaged (size or crc32c differs from the manifest's record) or
    malformed, a damaged log, files no manifest names. Changes nothing."""
    manifest_path = os.path.join(path, layout.COLLECTION_MANIFEST)
    try:
        data = manifest.read(io, manifest_path, COLLECTION_FORMAT)
        dim, dtype = int(data["dim"]), DTYPES[data["dtype"]]
        shards = list(data["shards"])
    except (CorruptionError, FormatVersionError) as exc:
        return [Finding("problem", manifest_path, getattr(exc, "offset", None), str(exc))]
    except (KeyError, TypeError, ValueError) as exc:
        return [Finding("problem", manifest_path, None, f"malformed manifest ({exc!r})")]
    findings: list[Finding] = []
    live = {layout.COLLECTION_MANIFEST, layout.WAL_DIR}
    for entry in shards:
        name = str(entry.get("name", ""))
        damaged = False
        for file, size_key, crc_key in (
                (layout.shard_vectors_name(name), "vectors_bytes", "vectors_crc"),
                (layout.shard_docs_name(name), "docs_bytes", "docs_crc")):
            live.add(file)
            file_path = os.path.join(path, file)
            try:
                size, crc = _file_crc(file_path)
            except FileNotFoundError:
                findings.append(Finding("problem", file_path, None, "missing, though the "
                                        "manifest names it; restore it from a backup"))
                damaged = True
                continue
            if size != entry.get(size_key) or crc != entry.get(crc_key):
                findings.append(Finding("problem", file_path, None, f"{size} bytes with "
                                        f"crc32c {crc:#010x}; the manifest recorded "
                                        f"{entry.get(size_key)} bytes, crc32c "
                                        f"{entry.get(crc_key)}: damaged; restore it from a "
                                        "backup"))
                damaged = True
        if entry.get("deleted"):
            live.add(str(entry["deleted"]))
        if damaged:
            continue
        try:
            shard = _Shard(path, entry, dim, dtype, manifest_path)
            for problem in shard.docs.check():
                findings.append(Finding("problem", shard.docs_path, None, problem))
        except (CorruptionError, FormatVersionError) as exc:
            findings.append(Finding("problem", getattr(exc, "path", path),
                                    getattr(exc, "offset", None), str(exc)))
        except FileNotFoundError as exc:
            findings.append(Finding("problem", str(exc.filename), None, "missing, though the "
                                    "manifest names it"))
    findings.extend(LogReader(io, os.path.join(path, layout.WAL_DIR)).check())
    for name in sorted(io.listdir(path)):
        if name not in live:
            findings.append(Finding("note", os.path.join(path, name), None,
                                    "not named by the manifest (left by an interrupted seal "
                                    "or merge); the next writer removes it"))
    return findings


def _as_list(values: Any, what: str) -> list[Any]:
    if isinstance(values, (str, bytes, Mapping, VectorDocument)):
        raise InvalidQuery(f"{what} must be a list, not a single {type(values).__name__}")
    try:
        return list(values)
    except TypeError:
        raise InvalidQuery(f"{what} must be a list, not {type(values).__name__}") from None


# --- the vectors/ folder of a session ------------------------------------------------------


def collection_names(io: FileIO, session_path: str) -> list[str]:
    folder = layout.vectors_dir(session_path)
    if not io.exists(folder):
        return []
    return sorted(n for n in io.listdir(folder) if not layout.is_scratch(n))


def scratch_names(io: FileIO, session_path: str) -> list[str]:
    """Folders an interrupted create (``.tmp-``) or drop (``.trash-``) left in vectors/."""
    folder = layout.vectors_dir(session_path)
    if not io.exists(folder):
        return []
    return sorted(n for n in io.listdir(folder) if layout.is_scratch(n))


def _remove_scratch(io: FileIO, session_path: str) -> None:
    folder = layout.vectors_dir(session_path)
    for name in scratch_names(io, session_path):
        io.rmtree(os.path.join(folder, name))


def create_collection(io: FileIO, session_path: str, name: str, dim: int, dtype: str,
                      metric: DistanceMetric | str) -> str:
    """Build the collection folder under a temp name and rename it in whole."""
    name = check_collection_name(name)
    if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= MAX_DIM:
        raise InvalidCollection(f"dim must be an int from 1 to {MAX_DIM}, not {dim!r}")
    if dtype not in DTYPES:
        raise InvalidCollection(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    chosen = DistanceMetric.of(metric, InvalidCollection)
    folder = layout.vectors_dir(session_path)
    final = os.path.join(folder, name)
    if io.exists(final):
        raise CollectionExists(f"collection {name!r} already exists at {final}")
    if not io.exists(folder):
        io.mkdir(folder)
        io.fsync_dir(session_path)
    _remove_scratch(io, session_path)
    temp = os.path.join(folder, layout.temp_name(name))
    io.mkdir(temp)
    try:
        wal = os.path.join(temp, layout.WAL_DIR)
        io.mkdir(wal)
        io.write_new(os.path.join(wal, layout.segment_name(1)), encode_segment_header(1, 1))
        write_tail_hint(io, wal, 1)
        io.fsync_dir(wal)
        io.write_new(os.path.join(temp, layout.COLLECTION_MANIFEST), manifest.encode({
            "format": COLLECTION_FORMAT, "version": manifest.VERSION, "name": name,
            "dim": dim, "dtype": dtype, "metric": chosen.value,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "generation": 0, "wal_seq": 0, "next_shard": 1, "shards": []}))
        io.fsync_dir(temp)
        io.rename(temp, final)
    except OSError as exc:
        io.rmtree(temp)
        if io.exists(final):
            raise CollectionExists(f"collection {name!r} already exists at {final}") from None
        raise WriteFailed(f"{final}: creating the collection failed ({exc})") from exc
    io.fsync_dir(folder)
    return final


def drop_collection(io: FileIO, session_path: str, name: str) -> None:
    """Rename the folder out of sight, then remove it: a crash leaves it whole or gone
    from the list (its trash is removed by the next drop or ``remove_leftovers``)."""
    name = check_collection_name(name)
    folder = layout.vectors_dir(session_path)
    final = os.path.join(folder, name)
    if not io.exists(os.path.join(final, layout.COLLECTION_MANIFEST)):
        raise CollectionNotFound(f"no collection {name!r} in {session_path}")
    trash = os.path.join(folder, layout.trash_name(name))
    io.rename(final, trash)
    io.fsync_dir(folder)
    _remove_scratch(io, session_path)
