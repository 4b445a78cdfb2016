"""The row sources a search reads: a live shard (memory-mapped) and the unsealed rows of
the write-ahead log (in memory). Filters and the search kernel see both through
:class:`RowSource`: a row count, each row's links, metadata and norm, and the vectors
as a (dim, rows) matrix."""

from __future__ import annotations

import abc
import os
from typing import Any

import numpy as np

from .. import layout
from ..fsio import FileIO
from .filters import BoolArray, IntArray, MetadataColumn, build_metadata_column
from .shard_files import (
    DocsFile,
    ShardEntry,
    decode_content,
    decode_metadata,
    norms_of,
    open_vectors,
    read_deleted,
)
from .types import DistanceMetric, VectorDocument
from .validate import Row


class RowSource(abc.ABC):
    """What filters and search need of a set of rows (a shard, or the unsealed rows).

    The metadata columns and the metric factors are built on first use and kept: a
    shard never changes, and the unsealed rows drop them when they do."""

    size: int  # the number of rows; every column has this length

    def __init__(self) -> None:
        self._columns: dict[str, MetadataColumn] = {}
        self._aux: dict[str, np.ndarray] = {}

    @abc.abstractmethod
    def link_column(self, name: str) -> IntArray:
        """The linked event's ``seq`` or ``turn`` (``name`` without the ``$``) of every
        row; -1 where the row has none."""

    @abc.abstractmethod
    def metadata_of(self, row: int) -> dict[str, Any]:
        """The decoded metadata of one row."""

    @abc.abstractmethod
    def norms(self) -> np.ndarray:
        """The L2 norm of every row's vector (float32)."""

    @abc.abstractmethod
    def dead_rows(self) -> BoolArray | None:
        """A mask of the deleted rows, or None when there are none."""

    @abc.abstractmethod
    def matrix(self) -> np.ndarray:
        """The vectors as (dim, rows)."""

    @abc.abstractmethod
    def gather(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of ``rows`` as (dim, len(rows))."""

    @abc.abstractmethod
    def document(self, row: int, with_embedding: bool = True) -> VectorDocument:
        """One row as a document."""

    @abc.abstractmethod
    def doc_id(self, row: int) -> str:
        """One row's document id (what ties between equal scores are ordered by)."""

    def metadata_column(self, key: str) -> MetadataColumn:
        """The column of one metadata key over the rows, as
        :func:`~fsstore.vectors.filters.build_metadata_column` builds it."""
        column = self._columns.get(key)
        if column is None:
            missing = object()
            values = (self.metadata_of(row).get(key, missing) for row in range(self.size))
            column = self._columns[key] = build_metadata_column(values, self.size)
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


class Shard(RowSource):
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

    def dead_rows(self) -> BoolArray | None:
        return self.dead if self.dead_count else None

    def find(self, doc_id: str) -> int | None:
        row = self.docs.find(doc_id)
        if row is None or (self.dead is not None and self.dead[row]):
            return None
        return row

    def link_column(self, name: str) -> IntArray:
        return self.docs.seq if name == "seq" else self.docs.turn

    def metadata_of(self, row: int) -> dict[str, Any]:
        metadata: dict[str, Any] = self.docs.decoded("meta", row)
        return metadata

    def norms(self) -> np.ndarray:
        norms: np.ndarray = self.docs.norms
        return norms

    def matrix(self) -> np.ndarray:
        # (dim, rows), C-contiguous: column blocks are contiguous.
        matrix: np.ndarray = self.vectors.T
        return matrix

    def gather(self, rows: np.ndarray) -> np.ndarray:
        gathered: np.ndarray = np.asarray(self.vectors[rows]).T
        return gathered

    def doc_id(self, row: int) -> str:
        return self.docs.id_of(row)

    def document(self, row: int, with_embedding: bool = True) -> VectorDocument:
        docs = self.docs
        seq, turn = docs.seq.item(row), docs.turn.item(row)
        return VectorDocument(
            docs.id_of(row), np.array(self.vectors[row]) if with_embedding else None,
            docs.decoded("content", row), self.metadata_of(row),
            None if seq < 0 else seq, None if turn < 0 else turn)


class UnsealedRows(RowSource):
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

    def add(self, row: Row) -> None:
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

    def dead_rows(self) -> BoolArray | None:
        return None if self.live == self.size else ~self.alive[:self.size]

    def link_column(self, name: str) -> IntArray:
        return (self.seq if name == "seq" else self.turn)[:self.size]

    def metadata_of(self, row: int) -> dict[str, Any]:
        return decode_metadata(self.metas[row])  # checked when written or replayed

    def norms(self) -> np.ndarray:
        norms: np.ndarray = self._norms[:self.size]
        return norms

    def matrix(self) -> np.ndarray:
        matrix: np.ndarray = self.vectors[:self.size].T
        return matrix

    def gather(self, rows: np.ndarray) -> np.ndarray:
        gathered: np.ndarray = self.vectors[rows].T
        return gathered

    def doc_id(self, row: int) -> str:
        return self.ids[row]

    def document(self, row: int, with_embedding: bool = True) -> VectorDocument:
        seq, turn = int(self.seq[row]), int(self.turn[row])
        return VectorDocument(
            self.ids[row], self.vectors[row].copy() if with_embedding else None,
            decode_content(self.contents[row]), self.metadata_of(row),
            None if seq < 0 else seq, None if turn < 0 else turn)

