"""The search kernel: the best k rows of a row source for a block of queries, by exact
(brute force) scoring (docs/FORMAT.md, section 15.6).

Shards are stored column-major so that scoring a block of rows is one BLAS
matrix-vector product over contiguous memory, and the top k are picked block by block
while the scores are still in cache: only rows that beat the current k-th best are
looked at again."""

from __future__ import annotations

import math

import numpy as np

from . import tuning
from .rows import RowSource
from .types import DistanceMetric


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


def reported_score(metric: DistanceMetric, key: float, query_norm: float) -> float:
    """The reported score of a ranking key."""
    if metric is DistanceMetric.COSINE:
        return min(1.0, max(-1.0, key / float(query_norm)))
    if metric is DistanceMetric.EUCLIDEAN:
        return math.sqrt(max(float(query_norm) ** 2 - key, 0.0))
    return key


def search_rows(source: RowSource, queries: np.ndarray, k: int, metric: DistanceMetric,
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
