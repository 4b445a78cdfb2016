"""``Store.search``: one collection name searched across every session (docs/FORMAT.md,
section 25).

The sessions whose collection is unchanged since the search cache (search_cache.py)
copied it are scored there, a few large shards in one BLAS pass each; the others
(changed, made since, not yet settled) are opened and searched in their folders. Each
side gives exact scores (vectors/exact.py), so the merge, by score then session id then
document id, is the answer of searching every collection on its own and merging. Filters
on session fields (tags, workspace, times) are answered by the store catalog first:
the sessions they rule out are never stamped, opened or scored. Afterwards the search
copies the sessions it had to open into the cache, when they have been still long
enough and no other process is rewriting it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from . import catalog, layout
from . import search_cache as cache
from .errors import CollectionNotFound, FsStoreError, InvalidQuery, SessionNotFound

if TYPE_CHECKING:
    from .store import Store
    from .vectors import DistanceMetric, VectorFilter, VectorSearchResult
    from .vectors.reader import VectorCollectionReader

_LOCK = threading.Lock()

#: Session fields a search may be narrowed by, as ``Store.list_sessions`` takes them.
SESSION_FILTERS = ("tags", "workspace", "created_after", "created_before",
                   "updated_after", "updated_before")


def _loaded(store: Store, name: str) -> cache.Loaded | None:
    held: dict[str, cache.Loaded | None] = store.__dict__.setdefault("_search_caches", {})
    with _LOCK:
        found = cache.load(store.io, store.path, name, held.get(name))
        held[name] = found
        return found


def search(store: Store, collection: str, query: Any, batch: bool, k: int,
           metric: DistanceMetric | str | None,
           filter: VectorFilter | Mapping[str, Any] | None,
           sessions: Iterable[str] | None, bounds: dict[str, float | None],
           where: dict[str, Any]) -> list[list[VectorSearchResult]]:
    """See ``Store.search``; ``where`` holds the session filters (SESSION_FILTERS)."""
    from . import vectors
    from .vectors import DistanceMetric
    from .vectors.reader import live_rows
    from .vectors.validate import as_vectors

    name = vectors.check_collection_name(collection)
    vectors.check_k(k)
    chosen = None if metric is None else DistanceMetric.of(metric)
    min_score, max_distance = bounds["min_score"], bounds["max_distance"]
    # The bounds' numbers are refused before any session is read, found or not; whether
    # a bound fits the metric waits for the metric, when the collections give it.
    vectors.check_score_bound(chosen or (DistanceMetric.EUCLIDEAN if max_distance is not None
                                         else DistanceMetric.COSINE), min_score, max_distance)
    conditions = vectors.VectorFilter.of(filter)
    explicit = sessions is not None
    ids = list(dict.fromkeys(sessions)) if sessions is not None else sorted(
        catalog.session_names(store.io, layout.sessions_dir(store.path)))
    if any(where.get(key) is not None for key in SESSION_FILTERS):
        kept = {info.id for info in store.list_page(order="id", limit=None, **where).sessions}
        ids = [session_id for session_id in ids if session_id in kept]
    loaded = _loaded(store, name)
    gone: set[str] = set()
    if loaded is not None and not explicit and not any(where.values()):
        gone = set(loaded.parts) - set(ids)  # sessions deleted since: forget them
    folders = {session_id: layout.session_dir(store.path, session_id) for session_id in ids}

    # Which sessions the cache answers for: their stamps still hold.
    clean: dict[str, cache.Part] = {}
    unknown: list[str] = []
    absent = {} if loaded is None else dict(loaded.index.absent)
    for session_id in ids:
        part = None if loaded is None else loaded.parts.get(session_id)
        if part is not None and cache.holds(store.io, folders[session_id], name,
                                             loaded.stamps[session_id]):  # type: ignore[union-attr]
            clean[session_id] = part
            continue
        seen = absent.get(session_id)
        if part is None and seen is not None and \
                cache.absent_stamp(store.io, folders[session_id]) == list(seen):
            continue  # had no such collection, and has made none since
        unknown.append(session_id)

    used: DistanceMetric | None = chosen
    merged: list[list[tuple[Any, ...]]] | None = None
    fresh: list[cache.Rows] = []
    no_collection: list[tuple[str, list[Any]]] = []

    def adopt(found: DistanceMetric, session_id: str) -> DistanceMetric:
        nonlocal used
        if used is None:
            used = found
            vectors.check_score_bound(used, min_score, max_distance)
        elif chosen is None and found is not used:
            raise InvalidQuery(
                f"collection {name!r} uses metric {found.value} in session "
                f"{session_id!r} but {used.value} elsewhere; pass metric= to compare")
        return used

    def add(session_id: str, results: list[list[VectorSearchResult]]) -> None:
        nonlocal merged
        tagged = [[(r.score, session_id, r.id, r._replace(session_id=session_id))
                   for r in rs] for rs in results]
        merged = tagged if merged is None else [a + b for a, b in zip(merged, tagged,
                                                                       strict=True)]

    # Sessions the cache does not answer for: searched in their folders.
    for session_id in unknown:
        folder = folders[session_id]
        stamp = cache.collection_stamp(store.io, folder, name)
        seen_stamp = cache.absent_stamp(store.io, folder) if stamp is None else None
        try:
            found = store.read_session(session_id).collection(name)
        except SessionNotFound:
            if explicit:
                raise
            gone.add(session_id)
            continue  # deleted meanwhile
        except CollectionNotFound:
            gone.add(session_id)
            if seen_stamp is not None:
                no_collection.append((session_id, seen_stamp))
            continue
        except FsStoreError:
            if explicit:
                raise
            gone.add(session_id)
            continue  # damaged: verify reports it; the other sessions are searched
        adopt(found.metric, session_id)
        try:
            results = (found.search_batch(query, k, metric=used, filter=conditions, **bounds)
                       if batch else
                       [found.search(query, k, metric=used, filter=conditions, **bounds)])
        except InvalidQuery as exc:
            raise type(exc)(f"session {session_id!r}: {exc}") from None
        except FsStoreError:
            if explicit:
                raise
            gone.add(session_id)
            continue  # damaged shards: as above
        add(session_id, results)
        if stamp is not None and cache.settled(stamp) and _fits(found, loaded):
            fresh.append(cache.Rows(session_id, found.metric.value, stamp,
                                    live_rows(found), found.dim, found.dtype))

    # The sessions the cache answers for: each cache shard scored at once.
    if clean and loaded is not None:
        for metric_name, session_id in {p.metric: p.session for p in clean.values()}.items():
            adopt(DistanceMetric(metric_name), session_id)
        assert used is not None
        dim = loaded.index.dim
        queries = as_vectors(query, dim, "queries" if batch else "query", InvalidQuery)
        if queries.ndim != (2 if batch else 1):
            raise InvalidQuery(f"{'queries' if batch else 'query'} has shape "
                               f"{queries.shape}: search takes one vector; use "
                               "search_batch for several" if not batch else
                               f"queries has shape {queries.shape}: search_batch takes a "
                               "2-D array of vectors")
        if not batch:
            queries = queries[None, :]
        add_cached = _search_cache(loaded, clean, queries, k, used, conditions, bounds)
        merged = add_cached if merged is None else [
            a + b for a, b in zip(merged, add_cached, strict=True)]

    if (fresh or gone & set(loaded.parts if loaded else ()) or no_collection) and \
            not (loaded is None and not fresh):
        _refresh(store, name, loaded, fresh, gone, no_collection)
    if merged is None:
        return [[] for _ in range(len(query))] if batch else [[]]
    lower_first = used is not None and used.lower_is_better
    return [[item[3] for item in sorted(
        rs, key=lambda item: (item[0] if lower_first else -item[0], item[1], item[2]))[:k]]
        for rs in merged]


def _fits(found: VectorCollectionReader, loaded: cache.Loaded | None) -> bool:
    """Whether a collection's rows can go in the cache (same dimension and dtype)."""
    return loaded is None or (found.dim == loaded.index.dim
                              and found.dtype == loaded.index.dtype)


def _search_cache(loaded: cache.Loaded, clean: dict[str, cache.Part], queries: np.ndarray,
                  k: int, metric: DistanceMetric, conditions: VectorFilter | None,
                  bounds: dict[str, float | None]) -> list[list[tuple[Any, ...]]]:
    """The exact best ``k`` of the cache rows of the ``clean`` sessions, as
    ``(score, session, id, result)`` per query."""
    from .vectors import VectorSearchResult, exact
    from .vectors.validate import check_score_bound

    bound = check_score_bound(metric, bounds["min_score"], bounds["max_distance"])
    norms = np.sqrt(np.einsum("ij,ij->i", queries, queries, dtype=np.float64))
    if metric.value == "cosine" and not norms.all():
        raise InvalidQuery("a zero query vector has no direction under cosine; use "
                           "metric 'dot' or 'euclidean', or another query")
    by_shard: dict[str, list[cache.Part]] = {}
    for part in clean.values():
        by_shard.setdefault(part.shard, []).append(part)
    top = max((loaded.max_norm[name] for name in by_shard), default=0.0)
    margin = 2 * exact.slack(metric, loaded.index.dim, norms, top)
    parts = []
    for shard_name, held in by_shard.items():
        shard = loaded.shards[shard_name]
        allowed: np.ndarray | None = None
        if sum(p.rows for p in held) != shard.size:
            allowed = np.zeros(shard.size, dtype=bool)
            for part in held:
                allowed[part.start:part.start + part.rows] = True
        if conditions is not None:
            mask = conditions.mask(shard)
            allowed = mask if allowed is None else allowed & mask
        if allowed is not None and not allowed.any():
            continue
        which, keys, rows = exact.source_candidates(shard, queries, k, metric, allowed,
                                                    margin)
        parts.append((which, keys, rows, shard_name))
    results: list[list[tuple[Any, ...]]] = []
    for number, pairs in enumerate(exact.narrow(parts, len(queries), k, margin)):
        shards = [(loaded.shards[shard_name], row) for shard_name, row in pairs]
        names = {id(loaded.shards[n]): n for n in by_shard}
        ranked = sorted(((exact.rank_key(metric, score),
                          loaded.session_of(names[id(source)], row), source.doc_id(row),
                          source, row, score)
                         for source, row, score in exact.scored(shards, queries[number],
                                                                metric)),
                        key=lambda item: item[:3])
        hits = []
        for _key, session_id, doc_id, source, row, score in ranked[:k]:
            if bound is None or bound.keeps(score):
                document = source.document(row, with_embedding=False)
                hits.append((score, session_id, doc_id, VectorSearchResult(
                    doc_id, score, document.content, document.metadata, document.seq,
                    document.turn, session_id)))
        results.append(hits)
    return results


def _refresh(store: Store, name: str, loaded: cache.Loaded | None, fresh: list[cache.Rows],
             gone: set[str], no_collection: list[tuple[str, list[Any]]]) -> None:
    """Copy ``fresh`` sessions into the cache and forget ``gone`` ones, unless another
    process is at it (then the next search does). A cache that cannot be written (a
    read-only store, a full disk) is left as it was: searches stay right, only slower."""
    io = store.io
    folder = cache.folder_of(store.path, name)
    try:
        for path in (os.path.dirname(folder), folder):
            if not io.exists(path):
                io.mkdir(path)
    except (OSError, FsStoreError):
        return
    if loaded is None:
        dim, dtype = fresh[0].dim, fresh[0].dtype
    else:
        dim, dtype = loaded.index.dim, loaded.index.dtype
    fresh = [rows for rows in fresh if (rows.dim, rows.dtype) == (dim, dtype)]
    absent = dict(() if loaded is None else loaded.index.absent)
    for session_id in gone:
        absent.pop(session_id, None)
    absent.update((session_id, stamp) for session_id, stamp in no_collection
                  if cache.settled(stamp))
    with cache.locked(io, folder) as held:
        if not held:
            return
        # Another process may have rewritten the cache since it was loaded: start from
        # the index as it is now, so that its work is kept.
        current = cache.load(io, store.path, name, loaded)
        if current is not None and (current.index.dim, current.index.dtype) != (dim, dtype):
            return
        try:
            cache.write(io, store.path, name, dim, dtype, current, fresh, gone,
                        sorted(absent.items()))
        except (OSError, FsStoreError):
            return
