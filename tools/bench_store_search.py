"""Store-wide vector search (``Store.search``) against one collection of the same vectors
and against faiss: 1,000 sessions of 1,000 vectors and 100 sessions of 1,000.

    python3 tools/bench.py --store-search-only           # 100 and 1,000 sessions
    python3 tools/bench.py --store-search-only --quick   # 20 and 100 sessions

Vectors are 384-dim float32 (as the vector rows of bench_vectors.py), standard normal,
metric dot, top 10. Each session's collection is written through the API (one upsert,
sealed); the floor is one collection holding the same vectors, in one session, and
faiss-cpu's IndexFlatIP over the same matrix in memory, when installed (the ``bench``
extra). The store search is timed once its search cache (``search/c/``, FORMAT 25)
holds every session: a first search builds it (timed apart), a second one, once every
collection's stamps are older than 2 s, copies the rest. Single queries and batches of
32; median of several, in this process, warm page cache. Stores are built once and kept
in ``fsstore-store-search/SIZE`` next to the run's temp folder; delete it to build them
again. A program, not a test.
"""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
from bench import median_seconds, row  # type: ignore[import-not-found]

import fsstore
from fsstore import search_cache

DIM = 384
PER_SESSION = 1_000
BATCH = 32


def _vectors(sessions: int) -> np.ndarray:
    return np.random.default_rng(sessions).standard_normal((sessions * PER_SESSION, DIM),
                                                            dtype=np.float32)


def build(path: str, sessions: int) -> float:
    """A store of ``sessions`` sessions of PER_SESSION vectors in collection ``c`` and a
    session ``floor`` holding all of them in collection ``all``; seconds taken (0 when
    it was there)."""
    done = os.path.join(path, "built")
    if os.path.exists(done):
        return 0.0
    start = time.perf_counter()
    shutil.rmtree(path, ignore_errors=True)
    store = fsstore.open_store(path, durability="none")
    matrix = _vectors(sessions)
    for number in range(sessions):
        with store.create_session(f"s{number:05d}") as session:
            collection = session.create_collection("c", DIM, metric="dot")
            part = matrix[number * PER_SESSION:(number + 1) * PER_SESSION]
            collection.upsert([fsstore.VectorDocument(f"d{i}", v) for i, v in enumerate(part)])
            collection.seal()
    with store.create_session("floor") as session:
        collection = session.create_collection("all", DIM, metric="dot")
        step = 100_000
        for begin in range(0, len(matrix), step):
            collection.upsert([fsstore.VectorDocument(f"d{begin + i}", v)
                               for i, v in enumerate(matrix[begin:begin + step])])
        collection.seal()
    open(done, "w").close()
    return time.perf_counter() - start


def store_search_rows(root: str, quick: bool) -> None:
    sizes = (20, 100) if quick else (100, 1_000)
    repeats = 5 if quick else 9
    try:
        import faiss  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        faiss = None
    base = os.path.join(os.path.dirname(root), "fsstore-store-search")
    rng = np.random.default_rng(7)
    queries = rng.standard_normal((BATCH, DIM), dtype=np.float32)
    print(f"\nStore-wide exact top-10 search, {DIM}-dim float32, metric dot, sessions of "
          f"{PER_SESSION:,} vectors, against one collection of the same vectors"
          + ("" if faiss is None else f" and faiss-cpu {faiss.__version__} IndexFlatIP")
          + f"; median of {repeats}, single queries and batches of {BATCH}")
    for sessions in sizes:
        path = os.path.join(base, str(sessions))
        built = build(path, sessions)
        store = fsstore.open_store(path)
        shutil.rmtree(os.path.join(path, "search"), ignore_errors=True)
        ids = [f"s{n:05d}" for n in range(sessions)]
        print(f"  {sessions:,} sessions ({sessions * PER_SESSION:,} vectors)"
              + (f", built in {built:,.0f} s" if built else ""))
        begin = time.perf_counter()
        store.search("c", queries[0], 10, sessions=ids)
        first = time.perf_counter() - begin
        time.sleep(search_cache.SETTLE_NS / 1e9)
        store.search("c", queries[0], 10, sessions=ids)  # copies the last settled ones
        row("    first search (cache built)", f"{first * 1e3:,.0f} ms")
        index = None
        if faiss is not None:
            index = faiss.IndexFlatIP(DIM)
            index.add(_vectors(sessions))
        _size_rows(store, ids, queries, index, repeats)
        store.close()


def _size_rows(store: fsstore.Store, ids: list[str], queries: np.ndarray, index: object,
               repeats: int) -> None:
    floor = store.read_session("floor").collection("all")
    floor.search(queries[0], 10)
    got = store.search("c", queries[1], 10, sessions=ids)
    want = floor.search(queries[1], 10)
    assert [r.score for r in got] == [r.score for r in want], "not the same answer"
    cases = [("one query", lambda: store.search("c", queries[1], 10, sessions=ids),
              lambda: floor.search(queries[1], 10), queries[1:2]),
             (f"batch of {BATCH}", lambda: store.search_batch("c", queries, 10, sessions=ids),
              lambda: floor.search_batch(queries, 10), queries)]
    for label, over_store, over_floor, asked in cases:
        wide = median_seconds(over_store, repeats)
        one = median_seconds(over_floor, repeats)
        row(f"    {label}: store search", f"{wide * 1e3:,.1f} ms",
            f"{wide / one:5.2f}x one collection")
        row(f"    {label}: one collection (floor)", f"{one * 1e3:,.1f} ms")
        if index is not None:
            flat = median_seconds(lambda asked=asked: index.search(asked, 10),  # type: ignore[attr-defined]
                         repeats)
            row(f"    {label}: faiss IndexFlatIP", f"{flat * 1e3:,.1f} ms",
                f"{wide / flat:5.2f}x store search / faiss")
