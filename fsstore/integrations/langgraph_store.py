"""LangGraph long-term memory over fsstore: :class:`FsstoreStore` (a ``BaseStore``).

A store is one fsstore session (id from ``session_id_for("lg-store", name)``). Each item
is one key of the session's state, so every put and delete is a state record in its log
and the items at any seq can be rebuilt (``state_at``); fsstore's snapshots keep opening
fast. With an ``index`` (dims and an embedding function), the texts of each item are
embedded into the session's vector collection ``memory``, and ``search(query=...)``
ranks by cosine similarity there. TTLs (in minutes, as LangGraph counts them) are kept
with each item, on fsstore's clock (wall time): reads leave expired items out,
``sweep_ttl`` deletes them.

Several writers: the session is opened shared, so any number of stores on one name, in
one process or in several, read and write it side by side. Each batch is one operation
of the session (its mutex held, caught up with the other writers' items and vectors), so
its reads, the vectors it replaces and the state it writes are of one moment, and no
writer's vectors are lost to another's view of the collection (fsstore's shared
collections catch up before every call: ``VectorCollection.catch_up``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

from langgraph.store.base import (
    BaseStore,
    GetOp,
    IndexConfig,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    ensure_embeddings,
    get_text_at_path,
    tokenize_path,
    validate_op_namespace,
)

from .. import clock
from ..errors import CollectionNotFound
from ..log_writer import Durability
from ..session import Session
from ..store import Store, open_store
from ..vectors import VectorDocument
from ._ids import ensure_session
from .langgraph_checkpoint import FRAMEWORK, session_id_for, session_title

__all__ = ["FsstoreStore", "store_session_id"]

STORE_KIND = "lg-store"
COLLECTION = "memory"

# An item in the state: a list, so that a state merge patch replaces it whole.
_NS, _KEY, _VALUE, _CREATED, _UPDATED, _EXPIRES, _TTL, _VECTORS = range(8)


def store_session_id(name: str) -> str:
    """The id of the session that holds the LangGraph store ``name``."""
    return session_id_for(STORE_KIND, name)


def _state_key(namespace: Sequence[str], key: str) -> str:
    # JSON with ASCII escapes: any labels and key, one state key each, and never a path.
    return json.dumps([*namespace, key])


def _vector_id(namespace: Sequence[str], key: str, path: str) -> str:
    return hashlib.sha256(json.dumps([*namespace, key, path]).encode()).hexdigest()[:40]


def _time(stamp: float) -> datetime:
    return datetime.fromtimestamp(stamp, timezone.utc)


def _matches(condition: MatchCondition, namespace: tuple[str, ...]) -> bool:
    path = tuple(condition.path)
    if len(namespace) < len(path):
        return False
    part = namespace[:len(path)] if condition.match_type == "prefix" else namespace[
        len(namespace) - len(path):]
    return all(p == "*" or p == n for p, n in zip(path, part, strict=True))


def _compare(value: Any, wanted: Any) -> bool:
    """LangGraph's filter semantics (those of its InMemoryStore and PostgresStore)."""
    if isinstance(wanted, dict):
        if any(k.startswith("$") for k in wanted):
            return all(_operator(value, op, arg) for op, arg in wanted.items())
        return isinstance(value, dict) and all(
            _compare(value.get(k), v) for k, v in wanted.items())
    if isinstance(wanted, (list, tuple)):
        return (isinstance(value, (list, tuple)) and len(value) == len(wanted)
                and all(_compare(a, b) for a, b in zip(value, wanted, strict=True)))
    return bool(value == wanted)


def _operator(value: Any, op: str, arg: Any) -> bool:
    if op == "$eq":
        return bool(value == arg)
    if op == "$ne":
        return bool(value != arg)
    if op in ("$gt", "$gte", "$lt", "$lte"):
        try:
            left, right = float(value), float(arg)
        except (TypeError, ValueError):
            return False
        return {"$gt": left > right, "$gte": left >= right,
                "$lt": left < right, "$lte": left <= right}[op]
    raise ValueError(f"unsupported filter operator {op!r}: use $eq, $ne, $gt, $gte, $lt, $lte")


class _Items:
    """The items as one batch reads them: a key at a time (``get_state``, no copy of
    the rest), or all of them, copied once, for searches and listings."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.whole: dict[str, Any] | None = None

    def get(self, state_key: str) -> Any:
        if self.whole is not None:
            return self.whole.get(state_key)
        return self.session.get_state(state_key)

    def all(self) -> dict[str, Any]:
        if self.whole is None:
            self.whole = self.session.state()
        return self.whole


class FsstoreStore(BaseStore):
    """LangGraph's ``BaseStore`` over one fsstore session::

        from fsstore.integrations.langgraph import FsstoreStore

        memory = FsstoreStore("agent-sessions", index={"dims": 384, "embed": embed})
        memory.put(("users", "ada"), "prefs", {"text": "likes short answers"})
        memory.search(("users",), query="how should I answer?")

    ``store`` is a :class:`fsstore.Store` or a path; ``name`` picks the memory (one
    session each). ``index``: ``dims``, ``embed`` (LangChain ``Embeddings``, a function of
    a list of texts, or ``"provider:model"``) and ``fields`` (paths into the value,
    default the whole value). ``ttl``: LangGraph's ``TTLConfig`` (``default_ttl`` in
    minutes, ``refresh_on_read``). ``durability`` is the session's (default: the
    store's). Values are what msgpack holds (tuples come back as lists). Async methods
    run the sync path in a worker thread, embedding excepted, which uses the embedder's
    async API. Stores on one name, in this process or others, share its items and
    vectors: each batch runs under the session's mutex, after catching up.
    """

    supports_ttl = True

    def __init__(self, store: Store | str | os.PathLike[str], *, name: str = "default",
                 index: IndexConfig | None = None, ttl: TTLConfig | None = None,
                 durability: Durability | str | None = None) -> None:
        self.owns_store = not isinstance(store, Store)
        self.store: Store = open_store(store) if not isinstance(store, Store) else store
        self.name = name
        self.ttl_config = ttl
        self.index_config = index
        self.embeddings = ensure_embeddings(index.get("embed")) if index else None
        self.fields = [(p, tokenize_path(p) if p != "$" else p)
                       for p in ((index or {}).get("fields") or ["$"])]
        self.lock = threading.RLock()
        session_id = store_session_id(name)
        ensure_session(self.store, session_id, title=session_title("store", name), metadata={
            "framework": FRAMEWORK, "framework_id": name, "kind": "store"})
        self.session: Session = self.store.open_session(session_id, shared=True,
                                                        durability=durability)

    def close(self) -> None:
        """Close the store's session (and the fsstore store, if this opened it)."""
        with self.lock:
            self.session.close()
            if self.owns_store:
                self.store.close()

    def __enter__(self) -> FsstoreStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- batches ---

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run ``ops`` in order of kind as LangGraph's stores do: reads see the items as
        they were before the batch's puts, which are applied last (the last put of a
        key wins)."""
        ops = list(ops)
        texts, queries = self._to_embed(ops)
        vectors = (self.embeddings.embed_documents(texts)
                   if texts and self.embeddings else [])
        query_vectors = {q: self.embeddings.embed_query(q)
                         for q in queries} if self.embeddings else {}
        return self._run(ops, vectors, query_vectors)

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        ops = list(ops)
        texts, queries = self._to_embed(ops)
        vectors: list[list[float]] = []
        query_vectors: dict[str, list[float]] = {}
        if self.embeddings is not None:
            if texts:
                vectors = await self.embeddings.aembed_documents(texts)
            found = await asyncio.gather(*(self.embeddings.aembed_query(q) for q in queries))
            query_vectors = dict(zip(queries, found, strict=True))
        return await asyncio.to_thread(self._run, ops, vectors, query_vectors)

    def _texts_of(self, op: PutOp) -> list[tuple[str, str]]:
        """(path, text) pairs of a put to embed."""
        if op.value is None or op.index is False or self.embeddings is None:
            return []
        paths = (self.fields if op.index is None
                 else [(p, tokenize_path(p)) for p in op.index])
        pairs = []
        for path, tokens in paths:
            found = get_text_at_path(op.value, tokens)
            if len(found) == 1:
                pairs.append((path, found[0]))
            else:
                pairs.extend((f"{path}.{i}", text) for i, text in enumerate(found))
        return pairs

    def _to_embed(self, ops: list[Op]) -> tuple[list[str], list[str]]:
        for op in ops:
            validate_op_namespace(op)
        puts = self._last_puts(ops)
        texts = [text for op in puts.values() for _, text in self._texts_of(op)]
        queries = sorted({op.query for op in ops if isinstance(op, SearchOp) and op.query})
        return texts, queries if self.embeddings is not None else []

    @staticmethod
    def _last_puts(ops: list[Op]) -> dict[tuple[tuple[str, ...], str], PutOp]:
        puts: dict[tuple[tuple[str, ...], str], PutOp] = {}
        for op in ops:
            if isinstance(op, PutOp):
                puts[(tuple(op.namespace), op.key)] = op
        return puts

    def _run(self, ops: list[Op], vectors: list[list[float]],
             query_vectors: dict[str, list[float]]) -> list[Result]:
        # One operation: another writer's put cannot fall between this batch's reads,
        # the stale vectors it finds and the state it writes.
        with self.lock, self.session.operation():
            state = _Items(self.session)
            now = clock.now()
            refreshed: dict[str, Any] = {}
            results: list[Result] = []
            for op in ops:
                if isinstance(op, GetOp):
                    results.append(self._get(state, op, now, refreshed))
                elif isinstance(op, SearchOp):
                    results.append(self._search(state, op, now, refreshed, query_vectors))
                elif isinstance(op, ListNamespacesOp):
                    results.append(self._namespaces(state, op, now))
                elif isinstance(op, PutOp):
                    results.append(None)
                else:
                    raise ValueError(f"unknown operation {type(op).__name__}")
            self._put(state, self._last_puts(ops), iter(vectors), now, refreshed)
            return results

    # --- reads ---

    def _live(self, record: Any, now: float) -> bool:
        return record[_EXPIRES] is None or record[_EXPIRES] > now

    def _refresh(self, state_key: str, record: list[Any], now: float, wanted: bool,
                 refreshed: dict[str, Any]) -> None:
        if wanted and record[_TTL] is not None:
            record[_EXPIRES] = now + record[_TTL] * 60
            refreshed[state_key] = record

    def _get(self, state: _Items, op: GetOp, now: float,
             refreshed: dict[str, Any]) -> Item | None:
        state_key = _state_key(op.namespace, op.key)
        record = state.get(state_key)
        if record is None or not self._live(record, now):
            return None
        self._refresh(state_key, record, now, op.refresh_ttl, refreshed)
        return Item(value=record[_VALUE], key=record[_KEY], namespace=tuple(record[_NS]),
                    created_at=_time(record[_CREATED]), updated_at=_time(record[_UPDATED]))

    def _search(self, state: _Items, op: SearchOp, now: float,
                refreshed: dict[str, Any],
                query_vectors: dict[str, list[float]]) -> list[SearchItem]:
        prefix = tuple(op.namespace_prefix)
        chosen: dict[str, list[Any]] = {}
        for state_key, record in state.all().items():
            if (tuple(record[_NS][:len(prefix)]) == prefix and self._live(record, now)
                    and all(_compare(record[_VALUE].get(k), v)
                            for k, v in (op.filter or {}).items())):
                chosen[state_key] = record
        scored: list[tuple[float | None, str]] = []
        if op.query and op.query in query_vectors:
            scores: dict[str, float] = {}
            try:
                collection = self.session.collection(COLLECTION)
            except CollectionNotFound:
                collection = None
            if collection is not None and collection.count():
                levels = {f"n{i}": label for i, label in enumerate(prefix)}
                for hit in collection.search(query_vectors[op.query], k=collection.count(),
                                             filter=levels or None):
                    key = hit.metadata.get("k")
                    if key in chosen and key not in scores:  # the best text of each item
                        scores[key] = hit.score
            ranked = sorted(scores, key=lambda k: -scores[k])
            scored = [(scores[k], k) for k in ranked]
            scored += [(None, k) for k in chosen if k not in scores]
        else:
            scored = [(None, k) for k in sorted(
                chosen, key=lambda k: chosen[k][_UPDATED], reverse=True)]
        found = []
        for score, state_key in scored[op.offset:op.offset + op.limit]:
            record = chosen[state_key]
            self._refresh(state_key, record, now, op.refresh_ttl, refreshed)
            found.append(SearchItem(
                namespace=tuple(record[_NS]), key=record[_KEY], value=record[_VALUE],
                created_at=_time(record[_CREATED]), updated_at=_time(record[_UPDATED]),
                score=score))
        return found

    def _namespaces(self, state: _Items, op: ListNamespacesOp,
                    now: float) -> list[tuple[str, ...]]:
        found = {tuple(r[_NS]) for r in state.all().values() if self._live(r, now)}
        if op.match_conditions:
            found = {ns for ns in found if all(_matches(c, ns) for c in op.match_conditions)}
        if op.max_depth is not None:
            found = {ns[:op.max_depth] for ns in found}
        return sorted(found)[op.offset:op.offset + op.limit]

    # --- writes ---

    def _put(self, state: _Items, puts: dict[tuple[tuple[str, ...], str], PutOp],
             vectors: Iterable[list[float]], now: float, patch: dict[str, Any]) -> None:
        """Apply the puts (and the TTL refreshes in ``patch``) as one state record.
        Vectors go first: a crash between leaves vectors of no item (ignored, and
        replaced by the next put of the key: their ids are the item's), never an item
        whose vectors are missing without a trace."""
        stale: list[str] = []
        documents: list[VectorDocument] = []
        vector_of = iter(vectors)
        for (namespace, key), op in puts.items():
            state_key = _state_key(namespace, key)
            old = state.get(state_key)
            if old is not None:
                stale.extend(old[_VECTORS])
            if op.value is None:
                patch[state_key] = None  # a merge patch's None deletes the key
                continue
            ids = []
            levels = {f"n{i}": label for i, label in enumerate(namespace)}
            for path, _text in self._texts_of(op):
                doc_id = _vector_id(namespace, key, path)
                ids.append(doc_id)
                documents.append(VectorDocument(doc_id, next(vector_of),
                                                metadata={"k": state_key, "path": path,
                                                          **levels}))
            ttl = op.ttl
            created = old[_CREATED] if old is not None else now
            patch[state_key] = [list(namespace), key, dict(op.value), created, now,
                                None if ttl is None else now + ttl * 60, ttl, ids]
        keep = {d.id for d in documents}
        if stale or documents:
            collection = self._collection()
            gone = [i for i in stale if i not in keep]
            if gone:
                collection.delete(gone)
            if documents:
                collection.upsert(documents)
        if patch:
            self.session.commit(state_patch=patch)

    def _collection(self) -> Any:
        try:
            return self.session.collection(COLLECTION)
        except CollectionNotFound:
            dims = int((self.index_config or {}).get("dims", 0))
            return self.session.create_collection(COLLECTION, dims, metric="cosine")

    def sweep_ttl(self) -> int:
        """Delete the items whose TTL ran out (and their vectors); return how many."""
        with self.lock, self.session.operation():
            now = clock.now()
            doomed = {k: r for k, r in self.session.state().items() if not self._live(r, now)}
            stale = [i for r in doomed.values() for i in r[_VECTORS]]
            if stale:
                self._collection().delete(stale)
            if doomed:
                self.session.commit(state_patch=dict.fromkeys(doomed))
            return len(doomed)

    async def asweep_ttl(self) -> int:
        return await asyncio.to_thread(self.sweep_ttl)
