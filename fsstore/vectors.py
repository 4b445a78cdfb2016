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
it named, plus the log's records after it. The states it replaced stay pinned, and the
files no state names stay on disk, for ``COPY_GRACE_SECONDS``: a copy of the folder taken
meanwhile finds a whole state (section 15.8). The files themselves are decoded and
checked in ``vector_files``; ``vector_check`` is the collection's part of ``verify``.

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
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgspec
import numpy as np

from . import layout, manifest
from .aio import AsyncVectorCollectionMixin
from .errors import (
    CollectionExists,
    CollectionNotFound,
    CorruptionError,
    InvalidCollection,
    InvalidDocument,
    InvalidFilter,
    InvalidQuery,
    SessionClosed,
    WriteFailed,
)
from .fsio import FileIO
from .log import Durability, LogReader, encode_segment_header
from .log_writer import LogWriter, write_tail_hint
from .vector_check import check_collection as check_collection
from .vector_files import (
    COLLECTION_FORMAT,
    COPY_GRACE_SECONDS,
    DTYPES,
    MAX_DIM,
    MAX_ID_BYTES,
    CollectionManifest,
    DeleteRecord,
    DocsFile,
    PinnedState,
    ShardEntry,
    check_value,
    decode_content,
    decode_metadata,
    decode_record,
    encode_manifest,
    encode_npy,
    missing_are_newest,
    newer_than,
    norms_of,
    open_vectors,
    pin_states,
    read_deleted,
    read_manifest,
    retire,
    write_shard,
)

SEAL_ROWS = 4096  # documents held in the log (and memory) before they become a shard
SEAL_BYTES = 8 << 20  # log bytes, likewise; an upsert this big is written as a shard
TIER_FANOUT = 4  # shards of one size tier merged at once
MAX_DOC_BYTES = 4 << 20  # content and metadata of one document, encoded
CHUNK_ROWS = 16384  # rows scored per BLAS call: the scores stay in cache

_encoder = msgspec.msgpack.Encoder()


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
    if doc.content is not None:
        check_value(doc.content, f"document {doc_id!r} content")
    metadata = doc.metadata if doc.metadata is not None else {}
    if not isinstance(metadata, Mapping):
        raise InvalidDocument(f"document {doc_id!r}: metadata must be a dict")
    for key in metadata:
        if not isinstance(key, str) or key.startswith("$"):
            raise InvalidDocument(f"document {doc_id!r}: metadata key {key!r} must be a "
                                  "str not starting with '$' (reserved for filters)")
    metadata = dict(metadata)
    # Only what reads back equal: a reader refuses extension types, msgspec.Raw would be
    # written unchecked, and nesting is bounded (vector_files.check_value).
    check_value(metadata, f"document {doc_id!r} metadata")
    try:
        content = _encoder.encode(doc.content)
        meta = _encoder.encode(metadata)
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


class _Shard(_RowSource):
    """A live shard: its vectors and docs memory-mapped, its deleted rows in memory."""

    def __init__(self, io: FileIO, folder: str, entry: ShardEntry, dim: int,
                 dtype: np.dtype) -> None:
        super().__init__()
        self.name = entry.name  # checked against the layout rules when decoded
        self.size = self.rows = entry.rows
        self.entry = entry
        self.vectors_path = os.path.join(folder, layout.shard_vectors_name(self.name))
        self.docs_path = os.path.join(folder, layout.shard_docs_name(self.name))
        self.vectors = open_vectors(io, self.vectors_path, self.rows, dim, dtype)
        self.docs = DocsFile(io, self.docs_path, self.rows)
        self.dead: np.ndarray | None = None
        self.dead_count = 0
        if entry.deleted is not None:
            rows = read_deleted(io, os.path.join(folder, entry.deleted), self.rows)
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
        return self.docs.decoded("meta", row)

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
        self._norms[size] = norms_of(row.vector[None, :])[0]
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
        return decode_metadata(self.metas[row])  # checked when written or replayed

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
            decode_content(self.contents[row]), self.metadata_of(row),
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


class VectorCollection(AsyncVectorCollectionMixin):
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
        self._wal = LogWriter(io, wal_path, durability or Durability())
        self._dirty: set[str] = set()  # shards with deletes not yet in a deleted file
        try:
            self._open_state(self._wal.log_start, self._wal.head)
            self._replay(self._wal.reader)
        except BaseException:
            self._wal.close()
            raise

    # --- opening ---

    def _read_manifest(self) -> None:
        try:
            decoded, raw = read_manifest(self.io, self.manifest_path)
        except FileNotFoundError:
            raise CollectionNotFound(f"no vector collection at {self.path} (its "
                                     f"{layout.COLLECTION_MANIFEST} is missing)") from None
        self._manifest, self._raw_manifest = decoded, raw
        self.name = decoded.name
        self.dim = decoded.dim
        self.dtype = decoded.dtype
        self._dtype = DTYPES[self.dtype]
        self.metric = DistanceMetric(decoded.metric)
        self._generation = decoded.generation
        self._next_shard = decoded.next_shard

    def _open_state(self, log_start: int, head: int) -> None:
        """Open the shards of the newest state of the manifest that is whole here: the
        current one, or else a pinned earlier one (a copy of the folder taken during a
        seal or merge may lack the current state's new files; a pinned state's files and
        log records are kept until no such copy can be under way, section 15.8). Every
        whole state holds the same documents once the log after it is replayed. Damage
        (a file that is there but wrong) is never skipped over."""
        newer = newer_than(self._manifest, self.io.listdir(self.path))
        if newer:
            raise CorruptionError(
                f"older than the files beside it ({', '.join(newer[:3])} and others its "
                "writer had not made yet): a restored or foreign collection.json; restore "
                "the matching one from a backup", path=self.manifest_path)
        first_problem: CorruptionError | None = None
        for state in self._manifest.states():
            problem = None
            if state.wal_seq + 1 < log_start:
                problem = CorruptionError(
                    f"the log starts at seq {log_start} but the state of generation "
                    f"{state.generation} covers only up to {state.wal_seq}: records in "
                    "between are missing", path=self.manifest_path)
            elif state.wal_seq > head:
                problem = CorruptionError(
                    f"the log ends at seq {head} but the state of generation "
                    f"{state.generation} covers up to {state.wal_seq}: its last records "
                    "are missing", path=self.manifest_path)
            else:
                try:
                    shards = [_Shard(self.io, self.path, entry, self.dim, self._dtype)
                              for entry in state.shards]
                except FileNotFoundError as exc:
                    problem = CorruptionError("missing, though the manifest names it; "
                                              "restore it from a backup",
                                              path=str(exc.filename))
                    if first_problem is None and not self._copy_artefact(state):
                        raise problem from None
            if problem is not None:
                first_problem = first_problem or problem
                if state.bulk:
                    # An earlier state and the log after it lack this bulk upsert's
                    # documents: reading it would drop them. (A copy taken while the
                    # bulk upsert committed lands here too: take it again.)
                    raise CorruptionError(
                        f"{first_problem.reason}; the documents of a bulk upsert are in "
                        "its missing files (in a copy taken while it committed, copy "
                        "again)", path=first_problem.path) from None
                continue
            self._shards, self._wal_seq = shards, state.wal_seq
            self._state = state
            self._unsealed = _Unsealed(self.dim, self._dtype)
            return
        assert first_problem is not None
        raise first_problem

    def _copy_artefact(self, state: PinnedState) -> bool:
        """Whether the files of ``state`` that are missing are all newer than every shard
        file here, as in a copy taken during a seal or merge; else they are damage."""
        names = self.io.listdir(self.path)
        missing = [name for entry in state.shards for name in entry.files()
                   if name not in names]
        return missing_are_newest(names, missing)

    def _load_for_reading(self, wal_path: str) -> None:
        # A writer may seal or merge meanwhile and remove files (once no state names
        # them) or move the log's start; seeing either, read again.
        for attempt in range(5):
            self._read_manifest()
            generation = self._generation
            try:
                reader = LogReader(self.io, wal_path)
                tail = reader.tail()
                self._open_state(tail.log_start, tail.head)
                self._replay(reader)
                self._read_manifest()
            except (FileNotFoundError, CorruptionError):
                if attempt == 4:
                    raise
                continue
            if self._generation == generation:
                return
        raise CorruptionError("the collection kept changing while being read; try again",
                              path=self.manifest_path)

    def _replay(self, reader: LogReader) -> None:
        for event in reader.events(after_seq=self._wal_seq):
            try:
                record = decode_record(event.kind, event.data,
                                       self.dim * self._dtype.itemsize)
                if isinstance(record, DeleteRecord):
                    for doc_id in record.ids:
                        self._apply_delete(check_id(doc_id, ValueError))
                    continue
                vector = np.frombuffer(record.v, dtype=self._dtype)
                if vector.shape != (self.dim,):
                    raise ValueError(f"vector of {vector.size} values")
                self._apply_upsert(_Row(check_id(record.id, ValueError), vector, record.c,
                                        record.m, record.s, record.t))
            except ValueError as exc:
                raise CorruptionError(f"log record {event.seq} is malformed ({exc})",
                                      path=reader.path) from None

    def _remove_leftovers(self) -> None:
        """Unlink files no state of the manifest names: a seal or merge a crash
        interrupted, files a copy caught after the manifest it holds. Only a writer does
        this."""
        keep = self._manifest.named_files() | self._manifest.retired_names()
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

    def _commit(self, shards: list[ShardEntry], bulk: bool = False) -> None:
        """Replace collection.json: the one step that makes a seal or merge visible.

        Then start a new log segment (so that a replay after this manifest's ``wal_seq``
        reads one seal's worth of log), and remove the files no state names any more.
        The state this manifest replaces stays pinned (its files, and the log after its
        ``wal_seq``) for a grace period when the newest pin is that old: a copy of the
        folder taken meanwhile may hold an older ``collection.json`` or miss the new
        files, and must still find a whole state (section 15.8)."""
        wal = self._wal
        assert wal is not None
        before = self._manifest
        if self._state.generation != before.generation:
            # Opened on an earlier state (a copy lacking the current one's files): that
            # is the state this manifest replaces.
            before = msgspec.structs.replace(
                before, shards=self._state.shards, wal_seq=self._state.wal_seq,
                bulk=self._state.bulk,
                pinned=[p for p in before.pinned if p.generation < self._state.generation])
        now = time.time()
        pins = pin_states(before, now, COPY_GRACE_SECONDS)
        named = {name for state in [*pins] for entry in state.shards
                 for name in entry.files()}
        named |= {name for entry in shards for name in entry.files()}
        retired, expired = retire(before, named, now, COPY_GRACE_SECONDS)
        # The log may start after the oldest state's wal_seq, at a segment that begins
        # there (a seal starts one; older stores' logs may lack it: then earlier). The
        # start moves at most once a grace period: the segments before the old start go
        # when it moves again, and a copy holding a newest segment from before the first
        # move may still read them.
        oldest = min([wal.head, *(state.wal_seq for state in pins)]) + 1
        firsts = [first for first in wal.reader.list_segments() if first <= oldest]
        start = max(firsts, default=wal.log_start)
        moved = before.log_moved
        if start <= wal.log_start or 0 <= now - moved < COPY_GRACE_SECONDS:
            start = wal.log_start
        else:
            moved = now
        while True:
            data = encode_manifest(
                self._raw_manifest, shards=shards, generation=self._generation + 1,
                wal_seq=wal.head, next_shard=self._next_shard, version=manifest.VERSION,
                pinned=pins, bulk=bulk, retired=retired, log_moved=moved)
            if len(manifest.encode(data)) <= manifest.MAX_MANIFEST_BYTES // 2 or not (
                    retired or len(pins) > 1):
                break
            # Heavy churn: keep the manifest well within what readers take, at the cost
            # of the copy guarantee (section 15.8): the oldest retired files go now,
            # then the oldest pins.
            if retired:
                cut = max(1, len(retired) // 2)
                expired += [name for name, _since in retired[:cut]]
                retired = retired[cut:]
            else:
                dropped, pins = pins[-1], pins[:-1]
                still = {name for state in pins for entry in state.shards
                         for name in entry.files()}
                still |= {name for entry in shards for name in entry.files()}
                expired += [name for entry in dropped.shards for name in entry.files()
                            if name not in still]
        manifest.write(self.io, self.manifest_path, data)
        self._manifest = msgspec.convert(data, CollectionManifest)
        self._raw_manifest = data
        self._generation, self._wal_seq = self._generation + 1, wal.head
        self._state = self._manifest.states()[0]
        wal.roll_over(start if start > wal.log_start else None)
        self._unlink(expired)

    def _deleted_entries(self) -> dict[str, ShardEntry]:
        """Write a new deleted-rows file for each shard with new deletes."""
        updated = {}
        # In shard order: a copy's reader tells files made later by their names.
        for shard in sorted(self._shards, key=lambda shard: shard.name):
            if shard.name in self._dirty and shard.dead is not None:
                name = layout.deleted_name(shard.name, self._generation + 1)
                rows = np.flatnonzero(shard.dead).astype("<u4")
                self.io.atomic_write(os.path.join(self.path, name), encode_npy(rows))
                updated[shard.name] = msgspec.structs.replace(
                    shard.entry, deleted=name, deleted_rows=len(rows))
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
        self._unsealed = _Unsealed(self.dim, self._dtype)

    def _commit_shards(self, new_shard: ShardEntry | None, bulk: bool = False) -> None:
        """Write a deleted-rows file for each shard with new deletes, and name them (and
        ``new_shard``, a shard just written) in one manifest."""
        updated = self._deleted_entries()
        entries = [updated.get(s.name, s.entry) for s in self._shards]
        self._commit(entries if new_shard is None else [*entries, new_shard], bulk)
        for shard in self._shards:
            if shard.name in updated:
                shard.entry = updated[shard.name]
        if new_shard is not None:
            self._shards.append(_Shard(self.io, self.path, new_shard, self.dim,
                                       self._dtype))
        self._dirty.clear()

    def _unlink(self, names: Iterable[str]) -> None:
        removed = False
        for name in sorted(names):
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
        entries = [s.entry for s in self._shards if s.name not in names]
        merged = None
        if ids:
            merged = write_shard(self.io, self.path, self._shard_name(),
                                 np.concatenate(vectors), ids, np.concatenate(seqs),
                                 np.concatenate(turns), contents, metas)
            entries.append(merged)
        self._commit(entries)  # removes the group's files once no state names them
        self._shards = [s for s in self._shards if s.name not in names]
        if merged is not None:
            self._shards.append(_Shard(self.io, self.path, merged, self.dim, self._dtype))

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
        self._commit_shards(entry, bulk=True)
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


def _as_list(values: Any, what: str) -> list[Any]:
    if isinstance(values, (str, bytes, Mapping, VectorDocument)):
        raise InvalidQuery(f"{what} must be a list, not a single {type(values).__name__}")
    try:
        return list(values)
    except TypeError:
        raise InvalidQuery(f"{what} must be a list, not {type(values).__name__}") from None


# --- the vectors/ folder of a session ------------------------------------------------------


def _vectors_names(io: FileIO, session_path: str) -> list[str]:
    folder = layout.vectors_dir(session_path)
    if not io.exists(folder):
        return []
    try:
        return io.listdir(folder)
    except NotADirectoryError:
        raise CorruptionError("a file where the session's vectors/ folder should be; "
                              "remove it or restore the folder from a backup",
                              path=folder) from None


def collection_names(io: FileIO, session_path: str) -> list[str]:
    """The collections of a session: the names in vectors/ that may name one."""
    return sorted(n for n in _vectors_names(io, session_path) if not layout.is_scratch(n)
                  and _is_collection_name(n))


def _is_collection_name(name: str) -> bool:
    try:
        check_collection_name(name)
    except InvalidCollection:
        return False
    return True


def scratch_names(io: FileIO, session_path: str) -> list[str]:
    """Folders an interrupted create (``.tmp-``) or drop (``.trash-``) left in vectors/."""
    return sorted(n for n in _vectors_names(io, session_path) if layout.is_scratch(n))


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
