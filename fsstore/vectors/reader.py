"""Reading a vector collection: :class:`VectorCollectionReader` opens the newest whole
state its ``collection.json`` names, replays the write-ahead log after it, and searches
(docs/FORMAT.md, sections 15.5 and 15.6).

Opening memory-maps the shards (nothing is copied, nothing is read in proportion to
their size) and replays the log, which sealing keeps short. Search is brute force,
hence exact (``exact``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import layout
from ..aio import AsyncVectorCollectionReaderMixin
from ..errors import CollectionNotFound, CorruptionError, InvalidQuery, SessionClosed
from ..fsio import FileIO
from ..log import LogReader
from . import exact
from .collection_chain import CollectionChain
from .collection_file import (
    CollectionManifest,
    PinnedState,
    missing_are_newest,
    newer_than,
    read_manifest,
)
from .filters import VectorFilter
from .rows import RowSource, Shard, UnsealedRows
from .shard_files import DTYPES, DeleteRecord, decode_record
from .types import CollectionInfo, DistanceMetric, VectorDocument, VectorSearchResult
from .validate import Row, as_list, as_vectors, check_id, check_k, check_score_bound

#: What a writer has and a reader lacks; a reader names them when one is asked for.
_WRITE_METHODS = frozenset({"upsert", "delete", "sync", "seal", "compact"})


_READ_ATTEMPTS = 30  # reads of a collection a writer keeps changing (see _load_for_reading)


class VectorCollectionReader(AsyncVectorCollectionReaderMixin):
    """One vector collection of a session, open for reading (from
    ``SessionReader.collection``): search, get, count and info over the collection as
    it was when opened. It has no write methods; :class:`VectorCollection`, a writer's
    collection, adds them.

    Thread-safe: calls are serialised.
    """

    name: str
    dim: int
    dtype: str
    metric: DistanceMetric
    _dtype: np.dtype
    _manifest: CollectionManifest
    _raw_manifest: dict[str, Any]
    _generation: int
    _next_shard: int
    _shards: list[Shard]
    _wal_seq: int
    _state: PinnedState
    _unsealed: UnsealedRows

    def __init__(self, io: FileIO, path: str, chain: CollectionChain | None = None) -> None:
        self.io = io
        # The session's hash chain, when it has one (collection_chain.py): every open
        # checks the manifest's MAC, the deleted rows' hashes and the WAL's value.
        self._chain = chain
        self.path = path
        self.manifest_path = os.path.join(path, layout.COLLECTION_MANIFEST)
        self._lock = threading.RLock()
        self._closed = False
        wal_path = os.path.join(path, layout.WAL_DIR)
        io.check_folders(path, wal_path)  # never read or write through a symlinked folder
        self._open(wal_path)

    if not TYPE_CHECKING:  # type checkers see the methods a class really has
        def __getattr__(self, name: str) -> Any:
            # Reached only for names the class lacks: say why a write method is missing.
            if name in _WRITE_METHODS:
                raise AttributeError(
                    f"{self.path}: this collection is open for reading and has no {name}(); "
                    "open the session for writing (Store.open_session) to change it",
                    name=name, obj=self)
            if name == "flush":
                raise AttributeError(
                    f"{type(self).__name__} has no flush(): a writer's seal() seals the "
                    "logged documents into a shard", name=name, obj=self)
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}",
                                 name=name, obj=self)

    # --- opening ---

    def _open(self, wal_path: str) -> None:
        self._load_for_reading(wal_path)

    def _read_manifest(self) -> None:
        try:
            decoded, raw = read_manifest(self.io, self.manifest_path)
        except FileNotFoundError:
            raise CollectionNotFound(f"no vector collection at {self.path} (its "
                                     f"{layout.COLLECTION_MANIFEST} is missing)") from None
        if self._chain is not None:
            self._chain.check_manifest(raw, self.manifest_path)
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
                    shards = [Shard(self.io, self.path, entry, self.dim, self._dtype)
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
            self._unsealed = UnsealedRows(self.dim, self._dtype)
            return
        assert first_problem is not None
        raise first_problem

    def _check_bound(self, reader: LogReader, log_start: int) -> None:
        """For a chained session: the opened state's deleted-rows files are the ones the
        manifest hashed, and the WAL's value after its ``wal_seq`` is the one recorded
        (the shard files, large, are hashed by verify)."""
        if self._chain is None:
            return
        state = self._state
        self._chain.check_files(self.io, self.path, self._raw_manifest,
                                [e.deleted for e in state.shards if e.deleted is not None])
        self._chain.check_wal(reader, self._raw_manifest, state.generation, state.wal_seq,
                              log_start)

    def _copy_artefact(self, state: PinnedState) -> bool:
        """Whether the files of ``state`` that are missing are all newer than every shard
        file here, as in a copy taken during a seal or merge; else they are damage."""
        names = self.io.listdir(self.path)
        missing = [name for entry in state.shards for name in entry.files()
                   if name not in names]
        return missing_are_newest(names, missing)

    def _load_for_reading(self, wal_path: str) -> None:
        # A writer may seal or merge meanwhile and remove files (once no state names
        # them) or move the log's start; seeing either, read again. A writer sealing
        # continuously can change the collection inside every read on a busy machine:
        # the reads back off (up to about a second in all) so that one fits between two
        # seals, rather than failing a reader of a collection that is only busy. A read
        # that fails is tried five times at most.
        failures = 0
        for attempt in range(_READ_ATTEMPTS):
            if attempt:
                time.sleep(min(0.0005 * 2 ** attempt, 0.05))
            self._read_manifest()
            generation = self._generation
            try:
                reader = LogReader(self.io, wal_path)
                if self._chain is not None:
                    reader.chain = self._chain.wal_rules(self._raw_manifest)
                tail = reader.tail()
                self._open_state(tail.log_start, tail.head)
                self._check_bound(reader, tail.log_start)
                self._replay(reader)
                self._read_manifest()
            except (FileNotFoundError, CorruptionError):
                failures += 1
                if failures == 5 or attempt == _READ_ATTEMPTS - 1:
                    raise
                continue
            if self._generation == generation:
                return
        raise CorruptionError("the collection kept changing while being read; try again",
                              path=self.manifest_path)

    def _replay(self, reader: LogReader, after_seq: int | None = None) -> None:
        """Apply the log's records after ``after_seq`` (default: those after the state's
        ``wal_seq``, which its shards do not hold)."""
        for event in reader.events(after_seq=self._wal_seq if after_seq is None
                                   else after_seq):
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
                self._apply_upsert(Row(check_id(record.id, ValueError), vector, record.c,
                                        record.m, record.s, record.t))
            except ValueError as exc:
                raise CorruptionError(f"log record {event.seq} is malformed ({exc})",
                                      path=reader.path) from None

    def _apply_upsert(self, row: Row) -> None:
        self._apply_delete(row.id)
        self._unsealed.add(row)

    def _apply_delete(self, doc_id: str) -> Shard | None:
        """Drop ``doc_id`` from memory; the shard it was deleted from, if any."""
        if self._unsealed.kill(doc_id):
            return None
        for shard in reversed(self._shards):
            found = shard.find(doc_id)
            if found is not None:
                shard.kill(found)
                return shard
        return None

    # --- reading ---

    def _sources(self) -> list[RowSource]:
        return [*self._shards, self._unsealed]

    def count(self) -> int:
        """Live documents."""
        with self._lock:
            self._check_open()
            return sum(s.live for s in self._shards) + self._unsealed.live

    def info(self) -> CollectionInfo:
        """The collection's name, dimension, dtype, metric, count, bytes on disk, shards,
        deleted rows not yet merged away, and documents not yet sealed."""
        with self._lock:
            self._check_open()
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

    def _locate(self, doc_id: str) -> tuple[RowSource, int] | None:
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
        ids = [check_id(i, InvalidQuery) for i in as_list(ids, "ids")]
        with self._lock:
            self._check_open()
            result: list[VectorDocument | None] = []
            for doc_id in ids:
                place = self._locate(doc_id)
                result.append(None if place is None else place[0].document(place[1]))
            return result

    def search(self, query: Any, k: int = 10, *, metric: DistanceMetric | str | None = None,
               filter: VectorFilter | Mapping[str, Any] | None = None,
               min_score: float | None = None, max_distance: float | None = None,
               ) -> list[VectorSearchResult]:
        """The ``k`` documents nearest the vector ``query``, best first, by exact search.

        ``metric`` defaults to the collection's; ``filter`` is a :class:`VectorFilter` or
        the mapping that builds one. ``min_score`` drops results scoring below it under
        ``cosine`` and ``dot`` (whose scores are similarities), ``max_distance`` those
        farther than it under ``euclidean`` (whose score is the distance); a result
        exactly at the bound is kept, and the other bound is refused. The ``k`` results
        are the best ``k`` of the documents within the bound: fewer when fewer are. For
        many queries at once use ``search_batch``.
        """
        vector = as_vectors(query, self.dim, "query", InvalidQuery)
        if vector.ndim != 1:
            raise InvalidQuery(f"query has shape {vector.shape}: search takes one vector; "
                               "use search_batch for several")
        return self._search(vector[None, :], k, metric, filter, min_score, max_distance)[0]

    def search_batch(self, queries: Any, k: int = 10, *,
                     metric: DistanceMetric | str | None = None,
                     filter: VectorFilter | Mapping[str, Any] | None = None,
                     min_score: float | None = None, max_distance: float | None = None,
                     ) -> list[list[VectorSearchResult]]:
        """``search`` for each row of the 2-D ``queries``, in one pass over the shards
        (matrix-matrix products): one list of results per query. A score may differ from
        ``search``'s in the last bits of float32 (BLAS adds a matrix product up in
        another order on some CPUs), so results that tie within that rounding may trade
        places, and one that ties with a bound may fall on the other side of it."""
        matrix = as_vectors(queries, self.dim, "queries", InvalidQuery)
        if matrix.ndim != 2:
            raise InvalidQuery(f"queries has shape {matrix.shape}: search_batch takes a 2-D "
                               "array of vectors")
        return self._search(matrix, k, metric, filter, min_score, max_distance)

    def _search(self, queries: np.ndarray, k: int,
                metric: DistanceMetric | str | None,
                filter: VectorFilter | Mapping[str, Any] | None,
                min_score: float | None, max_distance: float | None,
                ) -> list[list[VectorSearchResult]]:
        k = check_k(k)
        chosen = self.metric if metric is None else DistanceMetric.of(metric)
        bound = check_score_bound(chosen, min_score, max_distance)
        conditions = VectorFilter.of(filter)
        if not len(queries):
            return []
        norms = np.sqrt(np.einsum("ij,ij->i", queries, queries, dtype=np.float64))
        if chosen is DistanceMetric.COSINE and not norms.all():
            raise InvalidQuery("a zero query vector has no direction under cosine; use "
                               "metric 'dot' or 'euclidean', or another query")
        with self._lock:
            self._check_open()
            sources = [source for source in self._sources() if source.size]
            top = max((exact.max_norm(source.norms()) for source in sources), default=0.0)
            margin = 2 * exact.slack(chosen, self.dim, norms, top)
            parts = []
            for source in sources:
                dead = source.dead_rows()
                allowed = None if dead is None else ~dead
                if conditions is not None:
                    mask = conditions.mask(source)
                    allowed = mask if allowed is None else allowed & mask
                if allowed is not None and not allowed.any():
                    continue
                which, keys, rows = exact.source_candidates(source, queries, k, chosen,
                                                            allowed, margin)
                parts.append((which, keys, rows, source))
            results: list[list[VectorSearchResult]] = []
            for number, pairs in enumerate(exact.narrow(parts, len(queries), k, margin)):
                ranked = sorted(((exact.rank_key(chosen, score), source.doc_id(row), row,
                                  source, score)
                                 for source, row, score in exact.scored(
                                     pairs, queries[number], chosen)),
                                key=lambda item: item[:2])
                hits = []
                # The score only worsens down a query's ranking, so the best k within
                # the bound are the ones of the best k overall within it.
                for _key, _id, row, source, score in ranked[:k]:
                    if bound is None or bound.keeps(score):
                        hits.append(self._result(source, row, score))
                results.append(hits)
        return results

    @staticmethod
    def _result(source: RowSource, row: int, score: float) -> VectorSearchResult:
        document = source.document(row, with_embedding=False)
        return VectorSearchResult(document.id, score, document.content, document.metadata,
                                  document.seq, document.turn)

    def _check_open(self) -> None:
        # Every public read checks it: once its session let the collection go, another
        # writer may change the folder, and an answer from the state held here would be
        # stale without saying so.
        if self._closed:
            raise SessionClosed(f"{self.path}: the collection's session is closed")

    # --- lifecycle ---

    def close(self) -> None:
        """Let the collection go; later calls raise SessionClosed."""
        with self._lock:
            self._closed = True

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path} dim={self.dim} {self.metric.value}>"


def live_documents(collection: VectorCollectionReader) -> Iterator[VectorDocument]:
    """Every live document of ``collection``, its embedding as stored (its dtype), shard
    by shard then the unsealed ones: what ``fsstore export`` writes. Internal."""
    for source in collection._sources():
        dead = source.dead_rows()
        for row in range(source.size):
            if dead is None or not dead[row]:
                yield source.document(row)


def live_rows(collection: VectorCollectionReader) -> list[tuple[RowSource, np.ndarray]]:
    """Each row source of ``collection`` (shards, then the unsealed rows) with its live
    rows: what the store's search cache copies. Internal."""
    found = []
    for source in collection._sources():
        dead = source.dead_rows()
        rows = np.arange(source.size) if dead is None else np.flatnonzero(~dead)
        if len(rows):
            found.append((source, rows))
    return found
