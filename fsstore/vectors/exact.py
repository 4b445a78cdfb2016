"""Exact scores and a deterministic order for search (docs/FORMAT.md, section 15.6).

A float32 matrix product (BLAS) adds a dot product up in an order that depends on where
the row sits in the matrix and on the CPU: the same row scored in a shard of 1,000 rows
and in a matrix of 1,000,000 can differ in its last bits. Ranking by those scores would
make a search's answer depend on how the rows happen to be laid out (one collection,
its shards, a store-wide search cache). So the BLAS pass only picks *candidates*: every
row whose approximate key is within twice a proven error bound of the k-th best
approximate key. Those few are then scored exactly from the stored values (every
product of two float32 values is exact in float64, and ``math.fsum`` rounds the sum
once), and ranked by that score, ties by the caller's key (a document id; a session id
then a document id for ``Store.search``). The answer is then a function of the stored
values alone: the same whichever layout or machine computed it.

The error bound: a dot product of n float32 terms, summed in any order, is within
gamma_n * sum |q_i x_i| <= gamma_n |q| |x| of the exact value (gamma_n = n u / (1 - n u),
u = 2^-24); the factors that make the ranking key (1/|x|, |x|^2, computed once per row
in float32) add a few u more. :func:`slack` takes (n + 16) u, times 1.5.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import tuning
from .rows import RowSource
from .types import DistanceMetric

_U = 2.0 ** -24


def slack(metric: DistanceMetric, dim: int, query_norms: np.ndarray, max_norm: float
          ) -> np.ndarray:
    """A bound (float64, one per query) on how far a row's approximate ranking key can
    be from its exact value, for rows whose stored norm is at most ``max_norm``."""
    gamma = 1.5 * (dim + 16) * _U
    top = max_norm * (1.0 + gamma) + 1e-30
    if metric is DistanceMetric.COSINE:
        bound = 2.0 * gamma * query_norms
    elif metric is DistanceMetric.DOT:
        bound = 2.0 * gamma * query_norms * top
    else:
        bound = 2.0 * gamma * (2.0 * query_norms * top + top * top)
    # The smallest float32 step near the keys matters for tiny vectors: add a few.
    return np.asarray(bound + 1e-37, dtype=np.float64)


def _floor(scores: np.ndarray, k: int) -> np.ndarray | None:
    """The k-th best of every step-th score of each row (at most the k-th best of the
    row): a cheap lower bound that keeps few candidates of a large block."""
    width = scores.shape[-1]
    step = min(16, width // (4 * k))
    if step < 2:
        return None
    sample = scores[..., ::step]
    at = sample.shape[-1] - k
    return np.partition(sample, at, axis=-1)[..., at]


def _prune(which: np.ndarray, keys: np.ndarray, rows: np.ndarray, k: int,
           margin: np.ndarray, threshold: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep, for each query, the rows whose key is at least its k-th best key less its
    ``margin``; raise ``threshold`` to that k-th best."""
    order = np.lexsort((-keys, which))
    which, keys, rows = which[order], keys[order], rows[order]
    rank = np.arange(which.size) - np.searchsorted(which, which)
    full = rank == k - 1
    threshold[which[full]] = np.maximum(threshold[which[full]], keys[full])
    kept = keys >= threshold[which] - margin[which]
    return which[kept], keys[kept], rows[kept]


def candidates(matrix: np.ndarray, queries: np.ndarray, k: int, metric: DistanceMetric,
               aux: np.ndarray | None, blocked: np.ndarray | None, margin: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows of ``matrix`` (dim x rows) that may be among the exact best ``k`` of
    each query: every row whose approximate key (the dot product, times ``aux`` for
    cosine, or 2 dot - ``aux`` for euclidean) is at least the k-th best approximate key
    less ``margin`` (per query: twice :func:`slack`). Rows ``blocked`` are never
    returned. Flat arrays (query, approximate key, row), unordered.

    Scored a block of ``tuning.CHUNK_ROWS`` rows at a time, keeping only the rows at or
    above a floor while the block's scores are in cache."""
    rows = matrix.shape[1]
    count = len(queries)
    convert = matrix.dtype != np.float32
    pool_q = np.empty(0, dtype=np.int64)
    pool_keys = np.empty(0, dtype=np.float32)
    pool_rows = np.empty(0, dtype=np.int64)
    threshold = np.full(count, -np.inf, dtype=np.float64)
    lowest = -float(np.finfo(np.float32).max)  # a blocked row's -inf never passes
    single = count == 1
    query = queries[0]
    for start in range(0, rows, tuning.CHUNK_ROWS):
        end = min(start + tuning.CHUNK_ROWS, rows)
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
        limit = np.maximum(threshold - margin, lowest)
        floor = _floor(scores, k)
        if floor is not None:
            limit = np.maximum(limit, floor.astype(np.float64) - margin)
        if single:
            found = np.flatnonzero(scores >= limit[0])
            if not found.size:
                continue
            which = np.zeros(found.size, dtype=np.int64)
            keys = scores[found]
        else:
            which, found = np.nonzero(scores >= limit[:, None].astype(np.float32))
            if not which.size:
                continue
            keys = scores[which, found]
            # float32 rounding of the limit may let a few more in: harmless.
        pool_q = np.concatenate((pool_q, which))
        pool_keys = np.concatenate((pool_keys, keys))
        pool_rows = np.concatenate((pool_rows, found + start))
        if pool_keys.size > k * count:
            pool_q, pool_keys, pool_rows = _prune(pool_q, pool_keys, pool_rows, k, margin,
                                                  threshold)
    if pool_keys.size:
        pool_q, pool_keys, pool_rows = _prune(pool_q, pool_keys, pool_rows, k, margin,
                                              threshold)
    return pool_q, pool_keys, pool_rows


def narrow(parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, Any]], count: int,
           k: int, margin: np.ndarray) -> list[list[tuple[Any, int]]]:
    """Candidates of several row sources (each ``(which, keys, rows, origin)``) cut to
    those within ``margin`` of the k-th best key over all of them: for each query, the
    ``(origin, row)`` pairs to score exactly."""
    found: list[list[tuple[Any, int]]] = [[] for _ in range(count)]
    if not parts:
        return found
    which = np.concatenate([p[0] for p in parts])
    keys = np.concatenate([p[1] for p in parts]).astype(np.float64)
    rows = np.concatenate([p[2] for p in parts])
    origin = np.concatenate([np.full(p[0].size, number) for number, p in enumerate(parts)])
    threshold = np.full(count, -np.inf)
    order = np.lexsort((-keys, which))
    which, keys, rows, origin = which[order], keys[order], rows[order], origin[order]
    rank = np.arange(which.size) - np.searchsorted(which, which)
    full = rank == k - 1
    threshold[which[full]] = keys[full]
    kept = np.flatnonzero(keys >= threshold[which] - margin[which])
    for position in kept.tolist():
        found[int(which[position])].append((parts[int(origin[position])][3],
                                            int(rows[position])))
    return found


def exact_scores(vectors: np.ndarray, query: np.ndarray, metric: DistanceMetric
                 ) -> list[float]:
    """The exact score of each row of ``vectors`` (n x dim, as stored) for ``query``:
    ``dot``, ``cosine`` (dot / (|x| |q|), clamped to [-1, 1]; 0 for a zero row) or the
    ``euclidean`` distance, from sums rounded once (``math.fsum`` of products that are
    exact in float64), then rounded to float32 (the precision of what is stored; a
    bound given as a float32 then compares as written)."""
    rounded: list[float] = np.asarray(_exact(vectors, query, metric), dtype=np.float32).tolist()
    return rounded


def _exact(vectors: np.ndarray, query: np.ndarray, metric: DistanceMetric) -> list[float]:
    if not len(vectors):
        return []
    q = np.asarray(query, dtype=np.float64)
    rows = np.asarray(vectors, dtype=np.float64)
    products = (rows * q).tolist()
    if metric is DistanceMetric.DOT:
        return [math.fsum(p) for p in products]
    if metric is DistanceMetric.COSINE:
        q_norm = math.sqrt(math.fsum((q * q).tolist()))
        squares = (rows * rows).tolist()
        scores = []
        for p, s in zip(products, squares, strict=True):
            norm = math.sqrt(math.fsum(s))
            scores.append(0.0 if norm == 0.0 else
                          min(1.0, max(-1.0, math.fsum(p) / (norm * q_norm))))
        return scores
    q_squares = (q * q).tolist()
    squares = (rows * rows).tolist()
    return [math.sqrt(max(math.fsum([*q_squares, *(-2.0 * x for x in p), *s]), 0.0))
            for p, s in zip(products, squares, strict=True)]


def rank_key(metric: DistanceMetric, score: float) -> float:
    """A sort key under which the better score comes first."""
    return score if metric.lower_is_better else -score


def max_norm(norms: np.ndarray) -> float:
    """The largest of a row source's stored norms (0 for none)."""
    return float(norms.max()) if len(norms) else 0.0


def source_candidates(source: RowSource, queries: np.ndarray, k: int,
                      metric: DistanceMetric, allowed: np.ndarray | None, margin: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`candidates` of one row source under an optional mask of allowed rows."""
    aux = source.aux(metric)
    if allowed is not None:
        picked = np.flatnonzero(allowed)
        if len(picked) * 16 < source.size:
            # A narrow filter: gather the few rows rather than score them all.
            which, keys, rows = candidates(source.gather(picked), queries, k, metric,
                                           None if aux is None else aux[picked], None,
                                           margin)
            return which, keys, picked[rows]
        return candidates(source.matrix(), queries, k, metric, aux, ~allowed, margin)
    return candidates(source.matrix(), queries, k, metric, aux, None, margin)


def scored(pairs: Sequence[tuple[RowSource, int]], query: np.ndarray,
           metric: DistanceMetric) -> list[tuple[RowSource, int, float]]:
    """``(source, row, exact score)`` of each pair, the rows of a source gathered once."""
    by_source: dict[int, tuple[RowSource, list[int]]] = {}
    for source, row in pairs:
        by_source.setdefault(id(source), (source, []))[1].append(row)
    found: list[tuple[RowSource, int, float]] = []
    for source, rows in by_source.values():
        scores = exact_scores(source.gather(np.asarray(rows, dtype=np.int64)).T, query,
                              metric)
        found.extend((source, row, score) for row, score in zip(rows, scores, strict=True))
    return found
