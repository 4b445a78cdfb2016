"""Vector collections: documents in and out, exact search against a reference
computation, filters, shards, merges, damage and hostile input."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import tree_snapshot
from crc32c import crc32c
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runlength import examples
from test_vector_filters import reference_match as reference_matches

import fsstore
from fsstore import (
    CollectionExists,
    CollectionNotFound,
    CorruptionError,
    InvalidCollection,
    InvalidDocument,
    InvalidFilter,
    InvalidQuery,
    VectorDocument,
)
from fsstore.vectors import tuning

METRICS = ("cosine", "dot", "euclidean")


@pytest.fixture
def small_shards(monkeypatch):
    """Seal every 8 documents and score 16 rows per block, so that a few dozen documents
    cross shards, merges and blocks."""
    monkeypatch.setattr(tuning, "SEAL_ROWS", 8)
    monkeypatch.setattr(tuning, "CHUNK_ROWS", 16)


def docs_of(matrix, prefix="d", **fields):
    return [VectorDocument(f"{prefix}{i}", row, **fields) for i, row in enumerate(matrix)]


def collection_dir(store, session_id, name):
    return os.path.join(store.path, "sessions", session_id, "vectors", name)


# --- a reference computation, written without fsstore's code ---------------------------


def reference_score(vector, query, metric):
    v, q = np.asarray(vector, np.float64), np.asarray(query, np.float64)
    if metric == "dot":
        return float(v @ q)
    if metric == "euclidean":
        return float(np.linalg.norm(v - q))
    norm = np.linalg.norm(v)
    return 0.0 if norm == 0 else float(v @ q / (norm * np.linalg.norm(q)))


def reference_search(documents, query, k, metric, conditions=None):
    scored = [(reference_score(d.embedding, query, metric), d.id)
              for d in documents.values() if reference_matches(d, conditions)]
    scored.sort(key=lambda item: item[0] if metric == "euclidean" else -item[0])
    return scored[:k], dict((i, s) for s, i in scored)


def tolerance(metric, query, documents):
    scale = max([1.0] + [float(np.linalg.norm(np.asarray(d.embedding, np.float64)))
                         for d in documents.values()])
    q = float(np.linalg.norm(np.asarray(query, np.float64)))
    if metric == "cosine":
        return 1e-5
    if metric == "dot":
        return 1e-5 * max(1.0, scale * q)
    return 1e-2 * max(1.0, scale + q)  # the distance's expansion loses digits near 0


def assert_agrees(results, documents, query, k, metric, conditions=None):
    """Same ids in the same order as the reference, scores within tolerance; where the
    reference has scores closer than the tolerance, either order of those ids is right."""
    expected, all_scores = reference_search(documents, query, k, metric, conditions)
    tol = tolerance(metric, query, documents)
    assert len(results) == len(expected), (results, expected)
    assert len({r.id for r in results}) == len(results)
    for got, (score, doc_id) in zip(results, expected, strict=True):
        assert math.isclose(got.score, score, abs_tol=tol), (got, score)
        assert got.id in all_scores, got
        assert math.isclose(got.score, all_scores[got.id], abs_tol=tol), (got, all_scores)
        if got.id != doc_id:  # allowed only between scores the tolerance cannot tell apart
            assert abs(all_scores[got.id] - score) <= 2 * tol, (got, doc_id, score)
        document = documents[got.id]
        assert (got.content, got.metadata, got.seq, got.turn) == (
            document.content, document.metadata, document.seq, document.turn)


# --- creating and listing ---------------------------------------------------------------


def test_a_new_collection_is_listed_with_its_settings(store):
    with store.create_session("s") as session:
        session.create_collection("notes", 4, dtype="float16", metric="dot")
        session.collection("notes").upsert(docs_of(np.eye(4)))
        (info,) = session.collections()
    assert (info.name, info.dim, info.dtype, info.metric, info.count) == (
        "notes", 4, "float16", "dot", 4)
    assert info.bytes > 0 and info.unsealed == 4
    assert store.read_session("s").collections() == [info]


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", ".hidden", "x" * 200, 7,
                                  "nul\x00"])
def test_a_hostile_collection_name_is_refused_and_touches_nothing(store, name):
    with store.create_session("s") as session:
        before = tree_snapshot(store.path)
        with pytest.raises(InvalidCollection):
            session.create_collection(name, 4)
        with pytest.raises(InvalidCollection):
            session.collection(name)
        assert tree_snapshot(store.path) == before


@pytest.mark.parametrize("dim, dtype, metric", [
    (0, "float32", "cosine"), (-1, "float32", "cosine"), (True, "float32", "cosine"),
    (4.0, "float32", "cosine"), (10**6, "float32", "cosine"), (4, "float64", "cosine"),
    (4, "object", "cosine"), (4, "float32", "manhattan")])
def test_bad_collection_settings_are_refused(store, dim, dtype, metric):
    with store.create_session("s") as session:
        before = tree_snapshot(store.path)
        with pytest.raises(InvalidCollection):
            session.create_collection("c", dim, dtype=dtype, metric=metric)
        assert tree_snapshot(store.path) == before


def test_a_taken_name_or_a_missing_collection_raise_typed_errors(store):
    with store.create_session("s") as session:
        session.create_collection("c", 2)
        with pytest.raises(CollectionExists):
            session.create_collection("c", 3)
        with pytest.raises(CollectionNotFound):
            session.collection("missing")
        with pytest.raises(CollectionNotFound):
            session.drop_collection("missing")
    with pytest.raises(CollectionNotFound):
        store.read_session("s").collection("missing")


def test_dropping_a_collection_removes_its_folder(store):
    with store.create_session("s") as session:
        session.create_collection("c", 2).upsert(docs_of(np.ones((3, 2))))
        session.drop_collection("c")
        assert session.collections() == []
        assert os.listdir(os.path.join(store.path, "sessions", "s", "vectors")) == []
        session.create_collection("c", 5)  # the name is free again
        assert session.collection("c").dim == 5


# --- documents ----------------------------------------------------------------------------


def test_upsert_get_and_delete_round_trip(store):
    with store.create_session("s") as session:
        collection = session.create_collection("c", 3)
        stored = collection.upsert([
            VectorDocument("a", [1, 2, 3], content="alpha", metadata={"k": [1, {"x": None}]},
                           seq=4, turn=2),
            {"id": "b", "embedding": np.array([0.5, 0, 0])},
        ])
        assert stored == 2
        a, b, missing = collection.get(["a", "b", "zz"])
        assert missing is None
        assert a.embedding.tolist() == [1, 2, 3] and a.embedding.dtype == np.float32
        assert (a.content, a.metadata, a.seq, a.turn) == ("alpha", {"k": [1, {"x": None}]}, 4, 2)
        assert (b.content, b.metadata, b.seq, b.turn) == (None, {}, None, None)
        assert collection.delete(["a", "zz"]) == 1
        assert collection.get(["a"]) == [None]
        assert collection.count() == 1


def test_an_upsert_replaces_a_document_with_the_same_id_wherever_it_lives(store, small_shards):
    with store.create_session("s") as session:
        collection = session.create_collection("c", 2, metric="dot")
        collection.upsert(docs_of(np.ones((20, 2))))  # a shard of its own
        collection.upsert([VectorDocument("d3", [5, 5], content="new")])  # in the log
        collection.upsert([VectorDocument("d3", [7, 7], content="newer"),
                           VectorDocument("d4", [1, 2]), VectorDocument("d4", [9, 9])])
        assert collection.count() == 20
        assert collection.get(["d3"])[0].content == "newer"
        assert collection.get(["d4"])[0].embedding.tolist() == [9, 9]  # the last one wins
        top = collection.search([1, 1], 2)
        assert [r.id for r in top] == ["d4", "d3"]


def test_documents_survive_reopen_from_the_log_and_from_shards(store, small_shards):
    matrix = np.arange(60, dtype=np.float32).reshape(20, 3)
    with store.create_session("s") as session:
        collection = session.create_collection("c", 3)
        for doc in docs_of(matrix):
            collection.upsert([doc])  # 2 seals, then 4 in the log
        collection.delete(["d0", "d19"])
    for reader in (store.open_session("s"), store.read_session("s")):
        collection = reader.collection("c")
        info = collection.info()
        assert (info.count, info.shards, info.unsealed) == (18, 2, 3)
        got = collection.get([f"d{i}" for i in range(20)])
        assert got[0] is None and got[19] is None
        for i in range(1, 19):
            assert got[i].embedding.tolist() == matrix[i].tolist()
        if isinstance(reader, fsstore.Session):
            reader.close()


BAD_DOCUMENTS = [
    VectorDocument("", [1, 2]),
    VectorDocument(7, [1, 2]),
    VectorDocument("x" * 2000, [1, 2]),
    VectorDocument("\ud800", [1, 2]),
    VectorDocument("a", [1, 2, 3]),
    VectorDocument("a", [[1, 2]]),
    VectorDocument("a", [float("nan"), 1]),
    VectorDocument("a", [float("inf"), 1]),
    VectorDocument("a", [1e39, 1]),  # beyond float32
    VectorDocument("a", ["1", "2"]),
    VectorDocument("a", [True, False]),
    VectorDocument("a", np.array([1, 2], dtype=object)),
    VectorDocument("a", [1, 2], content=b"bytes"),
    VectorDocument("a", [1, 2], metadata={"$seq": 1}),
    VectorDocument("a", [1, 2], metadata={1: "x"}),
    VectorDocument("a", [1, 2], metadata={"x": object()}),
    VectorDocument("a", [1, 2], metadata=["x"]),
    VectorDocument("a", [1, 2], content="x" * (5 << 20)),
    VectorDocument("a", [1, 2], seq=-1),
    VectorDocument("a", [1, 2], turn="3"),
    VectorDocument("a", [1, 2], seq=True),
    {"id": "a"},
    {"id": "a", "embedding": [1, 2], "extra": 1},
    "not a document",
]


@pytest.mark.parametrize("bad", BAD_DOCUMENTS, ids=range(len(BAD_DOCUMENTS)))
def test_a_bad_document_writes_nothing_of_its_call(store, bad):
    with store.create_session("s") as session:
        collection = session.create_collection("c", 2)
        collection.upsert([VectorDocument("keep", [1, 1])])
        before = tree_snapshot(store.path)
        with pytest.raises((InvalidDocument, InvalidQuery)) as raised:
            collection.upsert([VectorDocument("fine", [1, 0]), bad])
        assert isinstance(raised.value, fsstore.FsStoreError)
        assert tree_snapshot(store.path) == before
        assert collection.count() == 1 and collection.get(["fine"]) == [None]


def test_float16_overflow_is_refused_and_float16_halves_the_shard(store):
    with store.create_session("s") as session:
        half = session.create_collection("half", 8, dtype="float16")
        with pytest.raises(InvalidDocument, match="too large for float16"):
            half.upsert([VectorDocument("a", [70000.0] * 8)])
        full = session.create_collection("full", 8)
        matrix = np.random.default_rng(0).standard_normal((5000, 8))
        half.upsert(docs_of(matrix))
        full.upsert(docs_of(matrix))
        sizes = {}
        for name in ("half", "full"):
            folder = collection_dir(store, "s", name)
            (vec,) = [n for n in os.listdir(folder) if n.endswith(".vec.npy")]
            sizes[name] = os.path.getsize(os.path.join(folder, vec))
        assert sizes["half"] < 0.55 * sizes["full"]
        query = matrix[7]
        assert half.search(query, 1)[0].id == "d7"
        assert abs(half.search(query, 1)[0].score - 1) < 1e-3


# --- search -------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", METRICS)
def test_search_agrees_with_the_reference_across_shards_log_and_deletes(store, small_shards,
                                                                        metric):
    rng = np.random.default_rng(3)
    matrix = rng.standard_normal((120, 6)).astype(np.float32)
    documents = {d.id: d for d in docs_of(matrix, metadata={"g": 1})}
    with store.create_session("s") as session:
        collection = session.create_collection("c", 6, metric=metric)
        collection.upsert(list(documents.values())[:100])  # one shard, bulk
        for doc in list(documents.values())[100:]:
            collection.upsert([doc])  # sealed in eights, and some left in the log
        deleted = [f"d{i}" for i in range(0, 120, 7)]
        collection.delete(deleted)
        for doc_id in deleted:
            del documents[doc_id]
        queries = rng.standard_normal((5, 6)).astype(np.float32)
        for k in (1, 3, 10, 200):
            for query in queries:
                assert_agrees(collection.search(query, k), documents, query, k, metric)
            batch = collection.search_batch(queries, k)
            for query, results in zip(queries, batch, strict=True):
                assert_agrees(results, documents, query, k, metric)


def test_a_batch_of_queries_returns_a_list_per_query(store):
    with store.create_session("s") as session:
        collection = session.create_collection("c", 2, metric="dot")
        collection.upsert(docs_of(np.eye(2)))
        results = collection.search_batch([[1, 0], [0, 1], [2, 1]], 1)
        assert [[r.id for r in rs] for rs in results] == [["d0"], ["d1"], ["d0"]]
        assert collection.search_batch(np.zeros((0, 2)), 3) == []
        with pytest.raises(InvalidQuery, match="search_batch"):
            collection.search([[1, 0]], 1)
        with pytest.raises(InvalidQuery, match="2-D"):
            collection.search_batch([1, 0], 1)


def test_the_metric_can_be_chosen_per_search(store):
    with store.create_session("s") as session:
        collection = session.create_collection("c", 2)  # cosine by default
        collection.upsert([VectorDocument("long", [10, 0]), VectorDocument("near", [1, 0.1])])
        assert collection.search([1, 0], 1)[0].id == "long"  # same direction: cosine 1
        assert collection.search([1, 0], 1, metric="euclidean")[0].id == "near"
        assert collection.search([1, 0], 1, metric=fsstore.DistanceMetric.DOT)[0].id == "long"
        by_distance = collection.search([1, 0], 2, metric="euclidean")
        assert [round(r.score, 4) for r in by_distance] == [0.1, 9.0]  # lower is better


def test_zero_vectors_under_cosine(store):
    with store.create_session("s") as session:
        collection = session.create_collection("c", 2)
        collection.upsert([VectorDocument("zero", [0, 0]), VectorDocument("x", [-1, 0])])
        results = collection.search([1, 0], 2)
        assert [(r.id, r.score) for r in results] == [("zero", 0.0), ("x", -1.0)]
        with pytest.raises(InvalidQuery, match="zero query"):
            collection.search([0, 0], 1)
        assert collection.search([0, 0], 1, metric="dot")[0].score == 0.0


@pytest.mark.parametrize("query, k, metric", [
    ([1, 2, 3], 1, None), ([[1]], 1, None), ([float("nan"), 1], 1, None),
    ([float("inf"), 1], 1, None), ("ab", 1, None), ([1, 1], 0, None), ([1, 1], -2, None),
    ([1, 1], 1.5, None), ([1, 1], True, None), ([1, 1], 1, "hamming"), (None, 1, None)])
def test_bad_queries_raise_typed_errors(store, query, k, metric):
    with store.create_session("s") as session:
        collection = session.create_collection("c", 2)
        collection.upsert(docs_of(np.eye(2)))
        with pytest.raises(InvalidQuery):
            collection.search(query, k, metric=metric)


def test_k_beyond_the_count_returns_everything_and_an_empty_collection_nothing(store):
    with store.create_session("s") as session:
        collection = session.create_collection("c", 2)
        assert collection.search([1, 0], 5) == []
        collection.upsert(docs_of(np.eye(2)))
        assert len(collection.search([1, 0], 5)) == 2


# --- filters ------------------------------------------------------------------------------

FILTER_DOCS = [
    VectorDocument("a", [1, 0], metadata={"role": "user", "n": 1, "flag": True}, seq=5, turn=1),
    VectorDocument("b", [1, 0.1], metadata={"role": "tool", "n": 2.5, "flag": 1}, seq=9, turn=2),
    VectorDocument("c", [1, 0.2], metadata={"role": "user", "n": "3", "flag": None}, turn=2),
    VectorDocument("d", [1, 0.3], metadata={"role": ["user"], "n": 4}, seq=20, turn=3),
    VectorDocument("e", [1, 0.4], metadata={}, seq=21),
]
FILTERS = [
    ({"role": "user"}, ["a", "c"]),
    ({"role": {"$in": ["tool", "user"]}}, ["a", "b", "c"]),
    ({"n": 1}, ["a"]),
    ({"n": 1.0}, ["a"]),
    ({"n": {"$gte": 2, "$lt": 4}}, ["b"]),
    ({"n": {"$gt": 0}}, ["a", "b", "d"]),
    ({"flag": True}, ["a"]),
    ({"flag": 1}, ["b"]),
    ({"flag": None}, ["c"]),
    ({"flag": {"$in": [True, None]}}, ["a", "c"]),
    ({"$seq": {"$gte": 9}}, ["b", "d", "e"]),
    ({"$seq": 5}, ["a"]),
    ({"$turn": {"$in": [2, 3]}}, ["b", "c", "d"]),
    ({"$turn": 2, "role": "user"}, ["c"]),
    ({"role": "nobody"}, []),
    ({"missing": {"$lt": 100}}, []),
]


@pytest.mark.parametrize("conditions, expected", FILTERS)
def test_filters_select_by_metadata_and_linked_event(store, small_shards, conditions,
                                                     expected):
    with store.create_session("s") as session:
        collection = session.create_collection("c", 2)
        collection.upsert(FILTER_DOCS[:3])
        collection.seal()  # a shard, and the rest in the log
        collection.upsert(FILTER_DOCS[3:])
        for source in (collection, store.read_session("s").collection("c")):
            got = source.search([1, 0], 10, filter=conditions)
            assert [r.id for r in got] == expected
            wrapped = source.search([1, 0], 10, filter=fsstore.VectorFilter(conditions))
            assert [r.id for r in wrapped] == expected


def test_a_narrow_filter_over_a_large_shard_gathers_the_rows_it_needs(store):
    matrix = np.random.default_rng(1).standard_normal((5000, 4)).astype(np.float32)
    docs = [VectorDocument(f"d{i}", row, metadata={"bucket": i % 1000})
            for i, row in enumerate(matrix)]
    documents = {d.id: d for d in docs}
    with store.create_session("s") as session:
        collection = session.create_collection("c", 4)
        collection.upsert(docs)
        for conditions in ({"bucket": 7}, {"bucket": {"$lt": 500}}):
            results = collection.search(matrix[7], 4, filter=conditions)
            assert_agrees(results, documents, matrix[7], 4, "cosine", conditions)


@pytest.mark.parametrize("conditions", [
    {"role": {"$regex": "u.*"}}, {"$id": "a"}, {"n": {"$gt": "3"}}, {"n": {"$gt": True}},
    {"n": {"$gt": float("nan")}}, {"n": {"$in": "abc"}}, {"n": {"$in": [[[1]]]}},
    {"n": [{"a": 1}]}, {"$seq": "5"}, {"$turn": {"$in": [1.5]}}, {"n": {}}, {3: 1}, "role"])
def test_bad_filters_raise_typed_errors(store, conditions):
    with store.create_session("s") as session:
        collection = session.create_collection("c", 2)
        collection.upsert(FILTER_DOCS)
        with pytest.raises(InvalidFilter):
            collection.search([1, 0], 3, filter=conditions)


# --- agreement with the reference, by hypothesis ----------------------------------------

small_ints = st.integers(-3, 3)
SCALARS = st.sampled_from(["red", "blue", None, True, False, 1, 2.5, 0])


@st.composite
def collections_and_queries(draw):
    dim = draw(st.integers(1, 5))
    count = draw(st.integers(0, 40))
    documents = {}
    for i in range(count):
        metadata = draw(st.fixed_dictionaries({}, optional={"color": SCALARS,
                                                            "n": st.integers(0, 9)}))
        documents[f"d{i}"] = VectorDocument(
            f"d{i}", draw(st.lists(small_ints, min_size=dim, max_size=dim)),
            metadata=metadata, seq=draw(st.none() | st.integers(0, 50)),
            turn=draw(st.none() | st.integers(0, 5)))
    query = draw(st.lists(small_ints, min_size=dim, max_size=dim))
    return dim, documents, query


FILTER_CHOICES = st.sampled_from([None, {"color": "red"}, {"color": {"$in": [1, None, True]}},
                                  {"n": {"$gte": 3, "$lte": 7}}, {"$seq": {"$lt": 25}},
                                  {"$turn": 2}, {"color": 0, "n": {"$gt": 1}}])


@settings(max_examples=examples(30, 60), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=collections_and_queries(), metric=st.sampled_from(METRICS),
       k=st.integers(1, 12), conditions=FILTER_CHOICES, deletes=st.integers(0, 10))
def test_search_agrees_with_the_reference_for_every_metric_and_filter(
        tmp_path_factory, small_shards, data, metric, k, conditions, deletes):
    dim, documents, query = data
    if metric == "cosine" and not any(query):
        query[0] = 1
    root = tmp_path_factory.mktemp("vectors")
    store = fsstore.open_store(root)
    with store.create_session("s") as session:
        collection = session.create_collection("c", dim, metric=metric)
        docs = list(documents.values())
        collection.upsert(docs[: len(docs) // 2])
        for doc in docs[len(docs) // 2:]:
            collection.upsert([doc])
        gone = [f"d{i}" for i in range(0, len(docs), max(1, len(docs) // max(deletes, 1)))]
        collection.delete(gone[:deletes])
        for doc_id in gone[:deletes]:
            documents.pop(doc_id)
        assert_agrees(collection.search(query, k, filter=conditions), documents, query, k,
                      metric, conditions)
        collection.compact()
        assert collection.info().shards <= 1
        assert_agrees(collection.search(query, k, filter=conditions), documents, query, k,
                      metric, conditions)
    reader = store.read_session("s").collection("c")
    assert_agrees(reader.search(query, k, filter=conditions), documents, query, k, metric,
                  conditions)
    shutil.rmtree(root)


# --- shards, seals and merges -------------------------------------------------------------


def test_one_at_a_time_upserts_never_rewrite_the_shards(store, small_shards):
    with store.create_session("s") as session:
        collection = session.create_collection("c", 2)
        collection.upsert(docs_of(np.ones((64, 2)), prefix="big"))
        folder = collection_dir(store, "s", "c")
        (big,) = [n for n in os.listdir(folder) if n.endswith(".vec.npy")]
        inode = os.stat(os.path.join(folder, big)).st_ino
        for i in range(7):
            collection.upsert([VectorDocument(f"new{i}", [i, 1])])
        assert os.stat(os.path.join(folder, big)).st_ino == inode
        assert collection.info().unsealed == 7  # in the log, not in any shard


def test_size_tiers_keep_the_shard_count_logarithmic(store, small_shards):
    with store.create_session("s") as session:
        collection = session.create_collection("c", 2)
        counts = []
        for i in range(600):
            collection.upsert([VectorDocument(f"d{i}", [i, 1])])
            counts.append(collection.info().shards)
        assert max(counts) <= 3 * (tuning.TIER_FANOUT - 1) + 1
        assert collection.count() == 600
        assert [d.id for d in collection.get(["d0", "d599"])] == ["d0", "d599"]


def test_deletes_are_tombstones_until_a_merge_drops_them(store, small_shards):
    with store.create_session("s") as session:
        collection = session.create_collection("c", 2)
        collection.upsert(docs_of(np.ones((40, 2))))
        collection.delete(["d1", "d2"])
        collection.seal()
        folder = collection_dir(store, "s", "c")
        assert any(n.endswith(".del.npy") for n in os.listdir(folder))
        assert collection.info().deleted == 2
        collection.compact()
        info = collection.info()
        assert (info.deleted, info.shards, info.count) == (0, 1, 38)
        # Kept for copies under way (FORMAT.md 15.8), until a commit after the grace.
        retired = [n for n in os.listdir(folder) if n.endswith(".del.npy")]
        manifest = json.loads(Path(folder, "collection.json").read_text())
        assert set(retired) <= {name for name, _since in manifest["retired"]}


def test_files_no_state_names_are_removed_by_the_first_commit_after_the_grace(
        store, small_shards, monkeypatch):
    with store.create_session("s") as session:
        collection = session.create_collection("c", 2)
        collection.upsert(docs_of(np.ones((40, 2))))
        collection.delete(["d1", "d2"])
        collection.compact()
        folder = collection_dir(store, "s", "c")
        before = set(os.listdir(folder))
        monkeypatch.setattr(tuning, "COPY_GRACE_SECONDS", 0.0)
        collection.upsert([VectorDocument("x", [1, 1])])
        collection.seal()
        manifest = json.loads(Path(folder, "collection.json").read_text())
        kept = {n for n in os.listdir(folder) if n.endswith((".npy", ".docs"))}
        named = {name for entry in manifest["shards"] for name in
                 (entry["name"] + ".vec.npy", entry["name"] + ".docs", entry["deleted"])}
        named |= {name for state in manifest["pinned"] for entry in state["shards"] for name in
                  (entry["name"] + ".vec.npy", entry["name"] + ".docs", entry["deleted"])}
        named |= {name for name, _since in manifest["retired"]}
        assert kept <= named and before - set(os.listdir(folder))


def test_a_shard_a_quarter_deleted_is_rewritten(store, small_shards):
    with store.create_session("s") as session:
        collection = session.create_collection("c", 2)
        collection.upsert(docs_of(np.ones((40, 2))))
        collection.delete([f"d{i}" for i in range(11)])
        collection.seal()
        info = collection.info()
        assert (info.deleted, info.count) == (0, 29)


def test_shards_are_plain_npy_files_in_column_order(store):
    matrix = np.random.default_rng(2).standard_normal((5000, 3)).astype(np.float32)
    with store.create_session("s") as session:
        session.create_collection("c", 3).upsert(docs_of(matrix))
    folder = collection_dir(store, "s", "c")
    (vec,) = [n for n in os.listdir(folder) if n.endswith(".vec.npy")]
    loaded = np.load(os.path.join(folder, vec), allow_pickle=False)
    assert loaded.flags.f_contiguous and np.array_equal(loaded, matrix)


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="needs /proc/self/io")
def test_opening_a_collection_maps_its_shard_without_reading_it(store):
    matrix = np.random.default_rng(2).standard_normal((40_000, 128)).astype(np.float32)
    with store.create_session("s") as session:
        session.create_collection("c", 128).upsert(docs_of(matrix))

    def bytes_read():
        with open("/proc/self/io") as handle:
            return dict(line.split(": ") for line in handle.read().splitlines())["rchar"]

    before = int(bytes_read())
    collection = store.read_session("s").collection("c")
    read = int(bytes_read()) - before
    assert read < 1 << 20, read  # the shard is 20 MB
    vectors = collection._shards[0].vectors
    assert not vectors.flags.owndata and not vectors.flags.writeable  # a read-only map
    assert collection.search(matrix[5], 1)[0].id == "d5"


def test_readers_see_a_whole_collection_while_a_writer_seals_and_merges(store, small_shards):
    with store.create_session("s") as session:
        collection = session.create_collection("c", 2, metric="dot")
        collection.upsert([VectorDocument("anchor", [100, 100])])
        stop = threading.Event()
        errors = []

        def read() -> None:
            while not stop.is_set():
                try:
                    reader = store.read_session("s").collection("c")
                    count = reader.count()
                    top = reader.search([1, 1], 1)
                    assert top[0].id == "anchor" and count >= 1
                except Exception as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)
                    return

        thread = threading.Thread(target=read)
        thread.start()
        try:
            for i in range(300):
                collection.upsert([VectorDocument(f"d{i}", [i % 7, 1])])
                if i % 50 == 49:
                    collection.delete([f"d{i - 3}"])
        finally:
            stop.set()
            thread.join()
        assert errors == []


# --- damage --------------------------------------------------------------------------------


def shard_files(store, session_id="s", name="c"):
    folder = collection_dir(store, session_id, name)
    names = sorted(os.listdir(folder))
    vec = [os.path.join(folder, n) for n in names if n.endswith(".vec.npy")]
    docs = [os.path.join(folder, n) for n in names if n.endswith(".docs")]
    return vec[0], docs[0]


@pytest.fixture
def sealed(store):
    with store.create_session("s") as session:
        session.create_collection("c", 3).upsert(
            docs_of(np.arange(15000, dtype=np.float32).reshape(5000, 3), content="x"))
    return store


def test_a_pickled_object_array_is_refused_without_unpickling(sealed, tmp_path):
    vec, _ = shard_files(sealed)
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    array = np.empty((5000, 3), dtype=object)
    array[0, 0] = Payload()
    with open(vec, "wb") as handle:
        np.save(handle, array, allow_pickle=True)
    with pytest.raises(CorruptionError, match="object") as raised:
        sealed.read_session("s").collection("c")
    assert raised.value.path == vec
    assert not marker.exists()


@pytest.mark.parametrize("replacement, message", [
    (np.zeros((4999, 3), np.float32, order="F"), "shape"),
    (np.zeros((5000, 4), np.float32, order="F"), "shape"),
    (np.zeros((5000, 3), np.float64, order="F"), "float64"),
    (np.zeros((5000, 3), np.float32, order="C"), "C order"),
])
def test_a_shard_of_the_wrong_shape_dtype_or_order_is_refused(sealed, replacement, message):
    vec, _ = shard_files(sealed)
    np.save(vec, replacement)
    with pytest.raises(CorruptionError, match=message) as raised:
        sealed.read_session("s").collection("c")
    assert raised.value.path == vec


def test_a_huge_npy_header_is_refused_before_it_is_parsed(sealed):
    vec, _ = shard_files(sealed)
    header = b"{'descr': '<f4', 'fortran_order': True, 'shape': (5000, 3), " + \
        b" " * 100_000 + b"}\n"
    with open(vec, "wb") as handle:
        handle.write(b"\x93NUMPY\x02\x00" + len(header).to_bytes(4, "little") + header)
    with pytest.raises(CorruptionError, match="header") as raised:
        sealed.read_session("s").collection("c")
    assert raised.value.path == vec


@pytest.mark.parametrize("cut", [0, 10, 200, 1000])
def test_a_truncated_shard_file_is_refused_naming_it(sealed, cut):
    for path in shard_files(sealed):
        saved = Path(path).read_bytes()
        with open(path, "r+b") as handle:
            handle.truncate(len(saved) - 1 - cut)
        with pytest.raises(CorruptionError) as raised:
            sealed.read_session("s").collection("c")
        assert raised.value.path == path
        with open(path, "wb") as handle:
            handle.write(saved)


def test_docs_whose_id_count_differs_from_the_rows_are_refused(sealed):
    _, docs = shard_files(sealed)
    raw = bytearray(Path(docs).read_bytes())
    rows = int.from_bytes(raw[16:24], "little")
    raw[16:24] = (rows - 1).to_bytes(8, "little")
    raw[60:64] = crc32c(bytes(raw[:60])).to_bytes(4, "little")
    Path(docs).write_bytes(raw)
    with pytest.raises(CorruptionError, match="4999 ids but its shard has 5000 rows"):
        sealed.read_session("s").collection("c")


def test_a_damaged_docs_header_is_refused(sealed):
    _, docs = shard_files(sealed)
    raw = bytearray(Path(docs).read_bytes())
    raw[30] ^= 0x40
    Path(docs).write_bytes(raw)
    with pytest.raises(CorruptionError, match="checksum") as raised:
        sealed.read_session("s").collection("c")
    assert (raised.value.path, raised.value.offset) == (docs, 60)


def test_verify_finds_a_flipped_bit_in_any_shard_byte(sealed):
    for path in shard_files(sealed):
        size = os.path.getsize(path)
        for offset in (size // 3, size - 1):
            raw = bytearray(Path(path).read_bytes())
            raw[offset] ^= 0x01
            Path(path).write_bytes(raw)
            problems = [f for f in sealed.verify() if f.level == "problem"]
            assert [f.path for f in problems][:1] == [path], problems
            raw[offset] ^= 0x01
            Path(path).write_bytes(raw)
    assert [f for f in sealed.verify() if f.level == "problem"] == []


def test_a_damaged_offset_table_is_reported_with_its_offset(sealed):
    _, docs = shard_files(sealed)
    collection = sealed.read_session("s").collection("c")
    table = collection._shards[0].docs.sections["content_offsets"][0]
    raw = bytearray(Path(docs).read_bytes())
    raw[table + 8 * 3 + 7] = 0x7F  # row 3's content offset: far past the section
    Path(docs).write_bytes(raw)
    with pytest.raises(CorruptionError) as raised:
        sealed.read_session("s").collection("c").get(["d3"])
    assert (raised.value.path, raised.value.offset) == (docs, table + 8 * 3)


def test_a_missing_shard_file_is_reported(sealed):
    vec, _ = shard_files(sealed)
    os.unlink(vec)
    with pytest.raises(CorruptionError, match="missing") as raised:
        sealed.read_session("s").collection("c")
    assert raised.value.path == vec
    problems = [f for f in sealed.verify() if f.level == "problem"]
    assert problems and problems[0].path == vec


def test_a_newer_collection_format_is_refused(store):
    with store.create_session("s") as session:
        session.create_collection("c", 2)
    path = os.path.join(collection_dir(store, "s", "c"), "collection.json")
    version = fsstore.manifest.VERSION
    text = Path(path).read_text().replace(f'"version": "{version}"', '"version": "2.0"')
    Path(path).write_text(text)
    with pytest.raises(fsstore.FormatVersionError):
        store.read_session("s").collection("c")


def test_a_reader_collection_has_no_write_methods(store):
    with store.create_session("s") as session:
        session.create_collection("c", 2).upsert([VectorDocument("a", [1, 2])])
    before = tree_snapshot(store.path)
    collection = store.read_session("s").collection("c")
    assert type(collection) is fsstore.VectorCollectionReader
    assert not isinstance(collection, fsstore.VectorCollection)
    for name in ("upsert", "delete", "sync", "seal", "compact"):
        assert not hasattr(collection, name)
        assert not hasattr(fsstore.VectorCollectionReader, name)
    with pytest.raises(AttributeError, match="open for reading.*open the session for writing"):
        collection.upsert([VectorDocument("b", [1, 2])])
    with pytest.raises(AttributeError, match=r"has no delete\(\)"):
        collection.delete(["a"])
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        collection.nonsense  # noqa: B018
    assert collection.count() == 1 and tree_snapshot(store.path) == before


def test_a_writer_collection_is_a_reader_with_write_methods(store):
    with store.create_session("s") as session:
        collection = session.create_collection("c", 2)
        assert type(collection) is fsstore.VectorCollection
        assert isinstance(collection, fsstore.VectorCollectionReader)
        assert session.collection("c") is collection
    assert not hasattr(fsstore.VectorCollection, "flush")  # renamed seal(): one meaning


def test_a_closed_session_closes_its_collections(store):
    session = store.create_session("s")
    collection = session.create_collection("c", 2)
    session.close()
    with pytest.raises(fsstore.SessionClosed):
        collection.upsert([VectorDocument("a", [1, 2])])
    with pytest.raises(fsstore.SessionClosed):
        collection.search([1, 2], 1)


READS = {
    "search": lambda c: c.search([1, 2], 1),
    "search_batch": lambda c: c.search_batch([[1, 2]], 1),
    "get": lambda c: c.get(["a"]),
    "count": lambda c: c.count(),
    "info": lambda c: c.info(),
}


@pytest.mark.parametrize("read", sorted(READS))
@pytest.mark.parametrize("opened_for", ["writing", "reading"])
def test_every_read_of_a_closed_collection_raises_session_closed(store, read, opened_for):
    with store.create_session("s") as session:
        session.create_collection("c", 2).upsert([VectorDocument("a", [1, 2])])
    if opened_for == "writing":
        session = store.open_session("s")
        collection = session.collection("c")
        session.close()
    else:
        collection = store.read_session("s").collection("c")
        collection.close()
    with pytest.raises(fsstore.SessionClosed, match="closed"):
        READS[read](collection)
    assert store.read_session("s").collection("c").get(["a"])[0] is not None


# --- across sessions ----------------------------------------------------------------------


def test_store_search_merges_every_session_and_names_each_hit(store):
    rng = np.random.default_rng(4)
    everything = {}
    for session_id in ("a", "b", "c"):
        with store.create_session(session_id) as session:
            matrix = rng.standard_normal((30, 4)).astype(np.float32)
            docs = docs_of(matrix, prefix=session_id)
            session.create_collection("memory", 4).upsert(docs)
            everything.update({d.id: d for d in docs})
    store.create_session("no-memory").close()
    query = rng.standard_normal(4)
    results = store.search("memory", query, 7)
    assert_agrees(results, everything, query, 7, "cosine")
    assert all(r.session_id == r.id[0] for r in results)
    only_b = store.search("memory", query, 3, sessions=["b"])
    assert {r.session_id for r in only_b} == {"b"}
    batch = store.search_batch("memory", [query, -query], 2)
    assert len(batch) == 2 and [r.id for r in batch[0]] == [r.id for r in results[:2]]
    assert store.search("nothing", query, 3) == []
    far = store.search("memory", query, 5, metric="euclidean")
    assert [r.score for r in far] == sorted(r.score for r in far)


def test_store_search_refuses_mixed_metrics_unless_one_is_given(store):
    for session_id, metric in (("a", "dot"), ("b", "cosine")):
        with store.create_session(session_id) as session:
            session.create_collection("m", 2, metric=metric).upsert(docs_of(np.eye(2)))
    with pytest.raises(InvalidQuery, match="metric"):
        store.search("m", [1, 0], 1)
    assert len(store.search("m", [1, 0], 4, metric="dot")) == 4
    with pytest.raises(fsstore.SessionNotFound):
        store.search("m", [1, 0], 1, sessions=["zz"])
    with pytest.raises(InvalidQuery, match="session 'a'"):
        store.search("m", [1, 0, 0], 1)


if sys.platform == "win32":  # pragma: no cover
    pytest.skip("POSIX only", allow_module_level=True)


def test_a_reader_outlasts_a_writer_that_changes_the_collection_during_many_reads(
        store, monkeypatch):
    from fsstore.vectors.reader import VectorCollectionReader

    with store.create_session("s") as session:
        writer = session.create_collection("c", 2)
        writer.upsert([VectorDocument("d0", [1, 0])])
        replay = VectorCollectionReader._replay
        collisions = []

        def colliding_replay(self, reader):
            if len(collisions) < 12:  # a seal inside each of the first 12 reads
                collisions.append(len(collisions))
                writer.upsert([VectorDocument(f"d{len(collisions)}", [1, 0])])
                writer.seal()
            return replay(self, reader)

        monkeypatch.setattr(VectorCollectionReader, "_replay", colliding_replay)
        reader = store.read_session("s").collection("c")
        assert len(collisions) == 12 and reader.count() == 13
