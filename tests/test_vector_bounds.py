"""Score bounds of a vector search (``min_score`` for cosine and dot, ``max_distance`` for
euclidean), against a brute-force reference, and ``seal()``."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import tree_snapshot
from test_vectors import METRICS, collection_dir, docs_of, reference_score

import fsstore
from fsstore import InvalidQuery, SessionClosed, VectorDocument
from fsstore.vectors import tuning


@pytest.fixture
def small_shards(monkeypatch):
    monkeypatch.setattr(tuning, "SEAL_ROWS", 8)
    monkeypatch.setattr(tuning, "CHUNK_ROWS", 16)


def bound_of(metric, value):
    return {"max_distance": value} if metric == "euclidean" else {"min_score": value}


def within(metric, score, value):
    return score <= value if metric == "euclidean" else score >= value


def integer_documents(rng, count, dim):
    """Small integer vectors, many repeated: their dot products are exact in float32, so
    equal scores are equal, and a bound can sit exactly on one. (Not so distances: the
    kernel works from float32 norms.)"""
    matrix = rng.integers(-3, 4, size=(count, dim)).astype(np.float32)
    matrix[count // 2:] = matrix[:count - count // 2]  # every score at least twice
    return {d.id: d for d in docs_of(matrix)}


def filled(session, metric, documents, dim):
    """A collection holding ``documents`` in a bulk shard, sealed shards and the log."""
    collection = session.create_collection("c", dim, metric=metric)
    docs = list(documents.values())
    collection.upsert(docs[:len(docs) // 2])
    for doc in docs[len(docs) // 2:]:
        collection.upsert([doc])
    return collection


def test_min_score_keeps_exactly_the_documents_at_or_above_it_ties_included(
        store, small_shards):
    metric = "dot"
    rng = np.random.default_rng(7)
    documents = integer_documents(rng, 60, 4)
    query = np.array([1, -2, 0, 3], dtype=np.float32)
    scores = {i: reference_score(d.embedding, query, metric) for i, d in documents.items()}
    with store.create_session("s") as session:
        collection = filled(session, metric, documents, 4)
        assert collection.info().shards >= 1 and collection.info().unsealed > 0
        # Every distinct score as the bound: the documents scoring exactly it are kept.
        for value in sorted(set(scores.values())):
            expected = {i for i, s in scores.items() if within(metric, s, value)}
            for k in (1, 5, 200):
                results = collection.search(query, k, **bound_of(metric, value))
                assert len(results) == min(k, len(expected))
                assert {r.id for r in results} <= expected
                assert all(within(metric, r.score, value) for r in results)
                assert [r.score for r in results] == sorted(
                    (scores[i] for i in expected), reverse=metric != "euclidean")[:k]


@pytest.mark.parametrize("metric", METRICS)
def test_a_bound_on_float_vectors_cuts_the_unbounded_ranking_at_its_own_scores(
        store, small_shards, metric):
    rng = np.random.default_rng(11)
    matrix = rng.standard_normal((90, 5)).astype(np.float32)
    matrix[60:] = matrix[:30]  # equal scores: a bound at one keeps them all
    documents = {d.id: d for d in docs_of(matrix)}
    queries = rng.standard_normal((3, 5)).astype(np.float32)
    with store.create_session("s") as session:
        collection = filled(session, metric, documents, 5)
        collection.delete(["d3", "d50", "d89"])
        for query in queries:
            everything = collection.search(query, 100)
            assert len(everything) == 87
            reference = {i: reference_score(d.embedding, query, metric)
                         for i, d in documents.items() if i not in ("d3", "d50", "d89")}
            for result in everything:
                assert math.isclose(result.score, reference[result.id], abs_tol=1e-4)
            for cut in (0, 1, 17, 40, 86):
                value = everything[cut].score  # a bound equal to a result's own score
                kept = [r for r in everything if within(metric, r.score, value)]
                assert len(kept) >= cut + 1
                assert collection.search(query, 100, **bound_of(metric, value)) == kept
                assert collection.search(query, 5, **bound_of(metric, value)) == kept[:5]
            # d0 and d60 are one vector: a bound at their score keeps both.
            twins = [r for r in everything if r.id in ("d0", "d60")]
            assert len(twins) == 2 and twins[0].score == twins[1].score
            kept = collection.search(query, 100, **bound_of(metric, twins[0].score))
            assert {"d0", "d60"} <= {r.id for r in kept}
            bound = everything[9].score
            batch = collection.search_batch(queries, 10, **bound_of(metric, bound))
            for one_query, results in zip(queries, batch, strict=True):
                alone = collection.search(one_query, 10, **bound_of(metric, bound))
                agree_up_to_rounding(results, alone, bound)


def agree_up_to_rounding(batch, alone, bound, tol=1e-4):
    """A batch's results are a query's own, but for float32 rounding: BLAS scores a block
    of queries (a matrix product) in another order of additions than one query (a
    matrix-vector product), and on some CPUs the last bits differ. So results may trade
    places only among scores that tie within rounding, and the bound or the k-th best may
    take in or leave out only a result that ties with it."""
    for mine, theirs in zip(batch, alone, strict=False):
        assert math.isclose(mine.score, theirs.score, rel_tol=tol, abs_tol=tol)
    cuts = [bound] + [r[-1].score for r in (batch, alone) if r]
    for result in {r.id: r for r in batch}.keys() ^ {r.id: r for r in alone}.keys():
        score = next(r.score for r in batch + alone if r.id == result)
        assert any(math.isclose(score, cut, rel_tol=tol, abs_tol=tol) for cut in cuts), result


def test_a_bound_and_a_filter_both_apply(store):
    with store.create_session("s") as session:
        collection = session.create_collection("c", 2, metric="dot")
        collection.upsert([VectorDocument(f"d{i}", [i, 0], metadata={"even": i % 2 == 0})
                           for i in range(10)])
        results = collection.search([1, 0], 10, min_score=4, filter={"even": True})
        assert [(r.id, r.score) for r in results] == [("d8", 8.0), ("d6", 6.0), ("d4", 4.0)]
        assert collection.search([1, 0], 10, min_score=10) == []  # nothing that good
        assert len(collection.search([1, 0], 10, min_score=-math.inf)) == 10


def test_max_distance_keeps_the_documents_exactly_at_it(store):
    with store.create_session("s") as session:
        collection = session.create_collection("c", 2, metric="euclidean")
        # From (1, 1): "a" and its copy "b" at 5, "far" at 5.66, "near" at 1.
        collection.upsert([VectorDocument("a", [4, 5]), VectorDocument("b", [4, 5]),
                           VectorDocument("far", [5, 5]), VectorDocument("near", [1, 2])])
        distances = {r.id: r.score for r in collection.search([1, 1], 10)}
        assert math.isclose(distances["a"], 5, rel_tol=1e-6) and distances["a"] == \
            distances["b"]
        at_five = collection.search([1, 1], 10, max_distance=distances["a"])
        assert [r.id for r in at_five][0] == "near" and {r.id for r in at_five} == {
            "near", "a", "b"}
        below = collection.search([1, 1], 10, max_distance=np.nextafter(distances["a"], 0))
        assert [r.id for r in below] == ["near"]
        assert collection.search([1, 1], 10, max_distance=0.5) == []
        assert [r.id for r in collection.search([4, 5], 10, max_distance=0)] == ["a", "b"] or \
            [r.id for r in collection.search([4, 5], 10, max_distance=0)] == ["b", "a"]


@pytest.mark.parametrize("metric, arguments, message", [
    ("cosine", {"min_score": float("nan")}, "min_score"),
    ("cosine", {"min_score": "0.5"}, "min_score"),
    ("dot", {"min_score": True}, "min_score"),
    ("dot", {"min_score": [1]}, "min_score"),
    ("euclidean", {"max_distance": float("nan")}, "max_distance"),
    ("euclidean", {"max_distance": "1"}, "max_distance"),
    ("euclidean", {"max_distance": -1}, "max_distance"),
    ("euclidean", {"min_score": 0.5}, "use max_distance"),
    ("cosine", {"max_distance": 0.5}, "use min_score"),
    ("dot", {"max_distance": 0.5, "min_score": 1}, "use min_score"),
])
def test_a_bad_bound_raises_invalid_query_naming_it(store, metric, arguments, message):
    with store.create_session("s") as session:
        collection = session.create_collection("c", 2, metric=metric)
        collection.upsert(docs_of(np.eye(2)))
        with pytest.raises(InvalidQuery, match=message):
            collection.search([1, 0], 3, **arguments)
        with pytest.raises(InvalidQuery, match=message):
            collection.search_batch([[1, 0]], 3, **arguments)
        with pytest.raises(InvalidQuery, match=message):
            collection.search_batch(np.zeros((0, 2)), 3, **arguments)


def test_a_bound_follows_the_metric_chosen_per_search(store):
    with store.create_session("s") as session:
        collection = session.create_collection("c", 2)  # cosine
        collection.upsert([VectorDocument("x", [3, 4])])
        assert [r.id for r in collection.search([0, 0], 1, metric="euclidean",
                                                max_distance=5)] == ["x"]
        assert collection.search([0, 0], 1, metric="euclidean", max_distance=4.99) == []
        with pytest.raises(InvalidQuery, match="max_distance"):
            collection.search([1, 0], 1, metric="euclidean", min_score=0.1)
        assert collection.search([1, 0], 1, min_score=np.float32(0.6))[0].id == "x"


def test_a_reader_searches_with_bounds_too(store):
    with store.create_session("s") as session:
        session.create_collection("c", 2, metric="dot").upsert(docs_of(np.eye(2)))
    reader = store.read_session("s").collection("c")
    assert [r.id for r in reader.search([1, 0.5], 5, min_score=0.5)] == ["d0", "d1"]
    assert [r.id for r in reader.search([1, 0.5], 5, min_score=0.51)] == ["d0"]


# --- seal() -------------------------------------------------------------------------------


def test_seal_moves_the_logged_documents_into_a_shard_and_search_sees_the_same(store):
    matrix = np.random.default_rng(5).standard_normal((30, 3)).astype(np.float32)
    with store.create_session("s") as session:
        collection = session.create_collection("c", 3)
        for doc in docs_of(matrix):
            collection.upsert([doc])
        collection.delete(["d4"])
        before = collection.search(matrix[0], 10)
        assert (collection.info().shards, collection.info().unsealed) == (0, 29)
        collection.seal()
        info = collection.info()
        assert (info.shards, info.unsealed, info.count) == (1, 0, 29)
        assert collection.search(matrix[0], 10) == before
    reader = store.read_session("s").collection("c")
    assert reader.search(matrix[0], 10) == before
    assert reader.info().shards == 1


def test_seal_with_nothing_logged_changes_nothing(store):
    with store.create_session("s") as session:
        collection = session.create_collection("c", 2)
        collection.seal()  # an empty collection
        collection.upsert(docs_of(np.eye(2)))
        collection.seal()
        snapshot = tree_snapshot(collection_dir(store, "s", "c"))
        collection.seal()
        assert tree_snapshot(collection_dir(store, "s", "c")) == snapshot
        assert collection.info().shards == 1


def test_seal_merges_the_shards_of_a_full_tier(store, small_shards):
    with store.create_session("s") as session:
        collection = session.create_collection("c", 2)
        for round_ in range(tuning.TIER_FANOUT - 1):
            collection.upsert([VectorDocument(f"r{round_}", [round_, 1])])
            collection.seal()
        assert collection.info().shards == tuning.TIER_FANOUT - 1
        collection.upsert([VectorDocument("last", [9, 1])])
        collection.seal()  # the tier is full: its shards become one
        assert collection.info().shards == 1
        assert collection.count() == tuning.TIER_FANOUT


def test_seal_after_the_session_closed_raises_session_closed(store):
    session = store.create_session("s")
    collection = session.create_collection("c", 2)
    collection.upsert(docs_of(np.eye(2)))
    session.close()
    with pytest.raises(SessionClosed):
        collection.seal()
    assert store.read_session("s").collection("c").info().unsealed == 2


def test_patching_tuning_changes_when_the_next_upsert_seals(store, monkeypatch):
    # The sizes are read from fsstore.vectors.tuning at call time, and only there: the
    # package itself defines none, so an assignment to it cannot look like it worked.
    assert not hasattr(fsstore.vectors, "SEAL_ROWS")
    with store.create_session("s") as session:
        collection = session.create_collection("c", 2)
        collection.upsert(docs_of(np.ones((3, 2)), prefix="a"))
        assert (collection.info().shards, collection.info().unsealed) == (0, 3)
        monkeypatch.setattr(tuning, "SEAL_ROWS", 3)
        collection.upsert(docs_of(np.ones((1, 2)), prefix="b"))
        assert (collection.info().shards, collection.info().unsealed) == (1, 0)


def test_a_search_across_sessions_keeps_the_bound_in_every_session(store):
    for session_id, vectors in (("a", [[1, 0], [0.6, 0.8]]), ("b", [[0.8, 0.6], [0, 1]])):
        with store.create_session(session_id) as session:
            session.create_collection("c", 2, metric="dot").upsert(docs_of(np.array(vectors)))
    found = store.search("c", [1, 0], 10, min_score=0.7)
    assert [(r.session_id, round(r.score, 6)) for r in found] == [("a", 1.0), ("b", 0.8)]
    [batch] = store.search_batch("c", [[1, 0]], 10, min_score=0.7)
    assert batch == found
    assert store.search("c", [1, 0], 10, min_score=1.5) == []


def test_a_bad_bound_across_sessions_is_refused_before_any_session_is_searched(store):
    with store.create_session("a") as session:
        session.create_collection("c", 2, metric="dot").upsert(docs_of(np.eye(2)))
    with pytest.raises(InvalidQuery, match="^max_distance does not apply to metric dot"):
        store.search("c", [1, 0], 3, max_distance=1.0)
    with pytest.raises(InvalidQuery, match="min_score must be a number"):
        store.search("c", [1, 0], 3, metric="dot", min_score=float("nan"))
    for arguments in ({"min_score": "high"}, {"max_distance": -1},
                      {"min_score": 0.5, "max_distance": 1.0}):
        with pytest.raises(InvalidQuery):  # whether or not a session has the collection
            store.search("absent", [1, 0], 3, **arguments)


@pytest.mark.parametrize("bound", [10**400, -10**400])
def test_a_bound_past_floats_range_is_refused(store, bound):
    with store.create_session("s") as session:
        collection = session.create_collection("c", 2, metric="dot")
        collection.upsert(docs_of(np.eye(2)))
        with pytest.raises(InvalidQuery, match="within float's range"):
            collection.search([1, 0], 3, min_score=bound)
    with pytest.raises(InvalidQuery, match="within float's range"):
        store.search("c", [1, 0], 3, min_score=bound)
