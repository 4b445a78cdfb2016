"""tools/bench.py's vector search rows: fsstore's collections beside faiss, each contender
measured in a process of its own.

    python3 tools/bench.py --vectors-only [--quick]
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import shutil
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench import _status_kib, ratio, row  # type: ignore[import-not-found]

import fsstore

# --- vector search ---------------------------------------------------------------------

VECTOR_DIM = 384


def build_collection(root: str, name: str, matrix: Any) -> fsstore.Store:
    """A store whose session "s" holds ``matrix`` as collection "c" (metric dot, the
    metric of faiss's IndexFlatIP), written in bulk upserts of 100k."""
    store = fsstore.open_store(os.path.join(root, name))
    with store.create_session("s") as session:
        collection = session.create_collection("c", VECTOR_DIM, metric="dot")
        for start in range(0, len(matrix), 100_000):
            part = matrix[start:start + 100_000]
            collection.upsert([fsstore.VectorDocument(f"d{start + i}", row)
                               for i, row in enumerate(part)])
    return store


def spawned(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` run in a fresh interpreter (multiprocessing's spawn start method), and
    its result. The process has exited when this returns, and the OpenMP and BLAS threads
    it started with it: threads a contender leaves spinning for a while after its last
    call must not be charged to the next contender (on 2 cores, faiss's idle OpenMP
    threads made fsstore's single query 40 times slower)."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(fn, *args).result()


def faiss_probe() -> tuple[str, int] | None:
    """faiss's version and its default thread count, or None when it is not installed;
    asked in a process of its own, so that this process never loads OpenMP."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss.__version__, faiss.omp_get_max_threads()


def search_contender(contender: str, threads: int, folder: str, matrix_path: str,
                     queries: Any, first: int, repeats: int, batches: int) -> dict[str, Any]:
    """Run in a spawned process: one contender ("fsstore", or "faiss" on ``threads``
    threads) alone. Warms up, then times ``repeats`` single queries (query ``first``
    onwards, modulo 64) and ``batches`` batches of all 64 queries, one after another.
    Returns the samples in seconds, the ids of query 0's top 10 (checked against the
    other contenders'), and for fsstore its peak RSS in KiB and the collection's bytes."""
    result: dict[str, Any] = {}
    if contender == "fsstore":
        collection = fsstore.open_store(folder, create=False).read_session("s").collection("c")

        def one(query: Any) -> Any:
            return collection.search(query, 10)

        def ids(found: Any) -> list[str]:
            return [hit.id for hit in found]

        def batch() -> object:
            return collection.search_batch(queries, 10)
        result["bytes"] = collection.info().bytes
    else:
        import faiss
        import numpy as np
        faiss.omp_set_num_threads(threads)
        index = faiss.IndexFlatIP(queries.shape[1])
        index.add(np.load(matrix_path, mmap_mode="r"))  # copied into the index

        def one(query: Any) -> Any:
            return index.search(query[None, :], 10)

        def ids(found: Any) -> list[str]:
            return [f"d{i}" for i in found[1][0]]

        def batch() -> object:
            return index.search(queries, 10)
    result["top10"] = ids(one(queries[0]))
    for query in queries[1:4]:  # the first calls page in the shards and start the threads
        one(query)
    batch()
    single = []
    for repeat in range(first, first + repeats):
        query = queries[repeat % len(queries)]
        start = time.perf_counter()
        one(query)
        single.append(time.perf_counter() - start)
    batched = []
    for _ in range(batches):
        start = time.perf_counter()
        batch()
        batched.append(time.perf_counter() - start)
    result["single"], result["batch"] = single, batched
    result["peak_kib"] = _status_kib("VmHWM")
    return result


def search_contenders(faiss_threads: int | None) -> list[str]:
    """The vector search contenders: fsstore, and faiss (when ``faiss_threads``, its
    OpenMP thread count, is given) on one thread and on all of them. On a one-core
    machine the two faiss runs are one: measured twice under one name, their samples
    would merge into a median of neither."""
    if faiss_threads is None:
        return ["fsstore"]
    if faiss_threads == 1:
        return ["fsstore", "faiss 1"]
    return ["fsstore", "faiss 1", f"faiss {faiss_threads}"]


def measure_search(folder: str, matrix_path: str, queries: Any, contenders: list[str],
                   threads: int, rounds: int, repeats: int,
                   batches: int) -> tuple[dict[str, float], dict[str, float], dict[str, Any]]:
    """Median ms of one query and of a batch of 64 for each contender ("fsstore",
    "faiss 1", "faiss T"), each measured in ``rounds`` processes of its own, one
    contender after another in each round (so that a busy moment of the machine does
    not fall on one contender only); and what fsstore's processes reported. Checks that
    every contender finds the same top 10."""
    assert len(set(contenders)) == len(contenders), contenders  # one sample list each
    samples: dict[str, dict[str, list[float]]] = {
        name: {"single": [], "batch": []} for name in contenders}
    fsstore_report: dict[str, Any] = {"peak_kib": 0}
    expected = None  # query 0's top 10, as the first process found it
    for round_ in range(rounds):
        for name in contenders:
            contender, _, using = name.partition(" ")
            report = spawned(search_contender, contender, int(using or threads), folder,
                             matrix_path, queries, round_ * repeats, repeats, batches)
            samples[name]["single"] += report["single"]
            samples[name]["batch"] += report["batch"]
            if contender == "fsstore":
                fsstore_report = {**report,
                                  "peak_kib": max(report["peak_kib"], fsstore_report["peak_kib"])}
            expected = expected or report["top10"]
            assert report["top10"] == expected, (name, report["top10"], expected)

    def median_ms(kind: str) -> dict[str, float]:
        return {name: statistics.median(s[kind]) * 1000 for name, s in samples.items()}
    return median_ms("single"), median_ms("batch"), fsstore_report


def vector_rows(root: str, quick: bool) -> None:
    import numpy as np
    probe = spawned(faiss_probe)
    sizes = (10_000, 50_000) if quick else (10_000, 100_000, 1_000_000)
    # per process: single queries and batches; then processes per contender
    repeats, batches, rounds = (5, 1, 3) if quick else (11, 2, 3)
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((64, VECTOR_DIM), dtype=np.float32)
    setting = (f"median of {repeats * rounds} queries and {batches * rounds} batches of 64, "
               f"from {rounds} processes per contender and N, each contender alone in its "
               "process")
    if probe is None:
        print(f"\nExact top-10 search, {VECTOR_DIM}-dim float32, metric dot; {setting}. "
              "faiss-cpu is not installed (pip install -e '.[bench]'): fsstore alone")
        threads = 1
    else:
        version, threads = probe
        on = "1 thread" if threads == 1 else f"1 and {threads} threads"
        print(f"\nExact top-10 search, {VECTOR_DIM}-dim float32, metric dot; faiss-cpu "
              f"{version} IndexFlatIP (in memory) with {on}; {setting}")
    contenders = search_contenders(None if probe is None else threads)
    faiss_names = contenders[1:]
    for count in sizes:
        matrix = rng.standard_normal((count, VECTOR_DIM), dtype=np.float32)
        matrix_path = os.path.join(root, f"vectors-{count}.npy")
        np.save(matrix_path, matrix)  # memory-mapped by each faiss process
        build_collection(root, f"vectors-{count}", matrix)
        del matrix
        folder = os.path.join(root, f"vectors-{count}")
        single, batch, report = measure_search(folder, matrix_path, queries, contenders,
                                               threads, rounds, repeats, batches)
        os.remove(matrix_path)
        print(f"  N = {count:,}")
        best_single = min((single[name] for name in faiss_names), default=None)
        best_batch = min((batch[name] for name in faiss_names), default=None)
        row("    one query, fsstore (memory-mapped shard)", f"{single['fsstore']:.3f} ms",
            ratio(single["fsstore"], best_single, "faiss's best time") if best_single else "")
        for name in faiss_names:
            row(f"      {name} thread(s)", f"{single[name]:.3f} ms")
        row("    batch of 64, fsstore", f"{64000 / batch['fsstore']:,.0f} q/s",
            ratio(best_batch, batch["fsstore"], "faiss's best throughput") if best_batch else "")
        for name in faiss_names:
            row(f"      {name} thread(s)", f"{64000 / batch[name]:,.0f} q/s")
        if count == sizes[-1]:
            peak, on_disk = report["peak_kib"], report["bytes"]
            row(f"    peak RSS of a process searching {count:,}", f"{peak / 1024:,.0f} MiB",
                ratio(peak * 1024, on_disk, f"the collection on disk ({on_disk >> 20:,} MiB)"))
        if count != 100_000 and count != sizes[-1]:
            shutil.rmtree(folder)

    base = 100_000 if 100_000 in sizes else sizes[-1]
    folder = os.path.join(root, f"vectors-{base}")
    docs = [fsstore.VectorDocument(f"new{i}", row)
            for i, row in enumerate(rng.standard_normal((10_000, VECTOR_DIM),
                                                        dtype=np.float32))]
    print(f"\nUpserting 10,000 documents one call each into a {base:,}-document collection")
    for mode in ("flush", "fsync"):
        store = fsstore.open_store(folder, durability=mode)
        with store.open_session("s") as session:
            collection = session.collection("c")
            start = time.perf_counter()
            for doc in docs:
                collection.upsert([doc])
            elapsed = time.perf_counter() - start
            info = collection.info()
            collection.delete([d.id for d in docs])
        row(f"  durability {mode!r}", f"{elapsed:.2f} s",
            f"{len(docs) / elapsed:,.0f}/s; then {info.shards} shards, {info.unsealed} "
            "unsealed")
    shutil.rmtree(folder, ignore_errors=True)
