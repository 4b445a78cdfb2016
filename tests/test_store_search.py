"""Store.search across sessions: exactly the brute-force answer, whether the search cache
(search/NAME/) answers for a session or its folder does, whatever changed since."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from procs import child_env

import fsstore
from fsstore import search_cache
from fsstore.vectors import VectorDocument

DIM = 8


@pytest.fixture(autouse=True)
def settle_now(monkeypatch):
    # Stamps are trusted at once here, so the cache answers in these tests.
    monkeypatch.setattr(search_cache, "SETTLE_NS", 0)


def fill(store, count=5, rows=40, metric="cosine", seed=0, seal_every=2, tags=None):
    rng = np.random.default_rng(seed)
    for number in range(count):
        session = store.create_session(f"s{number:02d}",
                                       tags=(tags or {}).get(number, []))
        collection = session.create_collection("c", DIM, metric=metric)
        collection.upsert([VectorDocument(f"d{i:03d}", rng.standard_normal(DIM),
                                          metadata={"i": i, "odd": i % 2 == 1})
                           for i in range(rows)])
        if number % seal_every == 0:
            collection.seal()
        session.close()


def brute(store, query, k, metric=None, sessions=None, keep=lambda doc: True):
    """Every live document of every collection scored in float64, best first, ties by
    session then id."""
    from fsstore.vectors.reader import live_documents

    scored = []
    for session_id in sessions if sessions is not None else store.session_ids():
        try:
            collection = store.read_session(session_id).collection("c")
        except fsstore.CollectionNotFound:
            continue
        used = metric or collection.metric.value
        q = np.asarray(query, dtype=np.float32).astype(np.float64)
        for doc in live_documents(collection):
            if not keep(doc):
                continue
            v = np.asarray(doc.embedding, dtype=np.float64)
            if used == "dot":
                score = float(q @ v)
            elif used == "cosine":
                norm = np.linalg.norm(v)
                score = 0.0 if norm == 0 else float(q @ v / (norm * np.linalg.norm(q)))
            else:
                score = float(np.linalg.norm(q - v))
            scored.append((score if used == "euclidean" else -score, session_id, doc.id))
    return sorted(scored)[:k]


def merged(store, query, k, **kwargs):
    """Each collection searched on its own, merged by score, session id, id."""
    found = []
    for session_id in store.session_ids():
        try:
            collection = store.read_session(session_id).collection("c")
        except fsstore.CollectionNotFound:
            continue
        for hit in collection.search(query, k, **kwargs):
            lower = (kwargs.get("metric") or collection.metric.value) == "euclidean"
            found.append((hit.score if lower else -hit.score, session_id, hit.id, hit.score))
    return [(s, i, score) for _key, s, i, score in sorted(found)[:k]]


def answer(results):
    return [(r.session_id, r.id, r.score) for r in results]


def check(store, query, k=7, **kwargs):
    got = answer(store.search("c", query, k, **kwargs))
    assert got == merged(store, query, k, **kwargs)
    reference = brute(store, query, k, kwargs.get("metric"))
    if "filter" not in kwargs:
        assert [(s, i) for s, i, _ in got] == [(s, i) for _, s, i in reference]
        assert np.allclose([x for _, _, x in got], [abs(x) for x, _, _ in reference],
                           rtol=1e-5, atol=1e-6)
    return got


@pytest.mark.parametrize("metric", ["cosine", "dot", "euclidean"])
def test_store_search_is_the_brute_force_answer_from_the_cache_and_the_folders(tmp_path,
                                                                              metric):
    store = fsstore.open_store(tmp_path / "store")
    fill(store, metric=metric)
    query = np.random.default_rng(9).standard_normal(DIM)
    first = check(store, query)  # folders; the cache is built afterwards
    assert os.path.exists(tmp_path / "store" / "search" / "c" / "index")
    assert check(store, query) == first  # from the cache
    batch = store.search_batch("c", np.stack([query, -query]), 7)
    assert answer(batch[0]) == first
    assert answer(batch[1]) == merged(store, -query, 7)


def test_metadata_filters_and_bounds_hold_over_the_cache(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    fill(store)
    query = np.random.default_rng(3).standard_normal(DIM)
    store.search("c", query)  # builds the cache
    for kwargs in ({"filter": {"odd": True}}, {"filter": {"i": {"$lt": 5}}},
                   {"min_score": 0.3}, {"metric": "dot"}):
        got = check(store, query, **kwargs)
        if "filter" in kwargs:
            assert got and all(int(i[1:]) % 2 == 1 for _s, i, _x in got) \
                if kwargs["filter"] == {"odd": True} else all(int(i[1:]) < 5
                                                              for _s, i, _x in got)


def test_ties_are_ordered_by_session_then_document_id(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    for session_id in ("b", "a", "c"):
        with store.create_session(session_id) as session:
            collection = session.create_collection("c", DIM, metric="dot")
            collection.upsert([VectorDocument(doc, np.ones(DIM)) for doc in ("y", "x")])
    for _ in range(2):  # folders, then the cache
        hits = store.search("c", np.ones(DIM), 4)
        assert [(r.session_id, r.id) for r in hits] == [("a", "x"), ("a", "y"), ("b", "x"),
                                                        ("b", "y")]


def test_session_filters_prune_whole_sessions(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    fill(store, tags={1: ["keep"], 3: ["keep"]})
    query = np.ones(DIM)
    store.search("c", query)
    got = store.search("c", query, 50, tags=["keep"])
    assert {r.session_id for r in got} == {"s01", "s03"}
    assert answer(got) == answer(store.search("c", query, 50, sessions=["s01", "s03"]))
    workspace = store.create_workspace(name="w")
    store.add_to_workspace(workspace.id, "s02")
    assert {r.session_id for r in store.search("c", query, 50, workspace=workspace.id)} \
        == {"s02"}
    assert store.search("c", query, 5, created_after="2999-01-01") == []


def test_deleted_and_unsealed_documents_and_new_sessions_after_the_cache(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    fill(store)
    query = np.random.default_rng(5).standard_normal(DIM)
    best = store.search("c", query, 3)
    with store.open_session(best[0].session_id) as session:
        session.collection("c").delete([best[0].id])  # a shard row, or an unsealed one
    with store.open_session("s01") as session:
        session.collection("c").upsert([VectorDocument("near", query)])  # unsealed
    with store.create_session("new") as session:
        session.create_collection("c", DIM).upsert([VectorDocument("n", -query)])
    store.delete_session("s04")
    for _ in range(2):  # before and after the cache catches up
        got = check(store, query, 10)
        assert (best[0].session_id, best[0].id) not in [(s, i) for s, i, _ in got]
        assert got[0][:2] == ("s01", "near")
        assert "s04" not in {s for s, _i, _x in got}


def test_a_collection_changed_in_another_process_is_never_answered_from_the_cache(
        tmp_path):
    path = str(tmp_path / "store")
    store = fsstore.open_store(path)
    fill(store)
    query = np.ones(DIM)
    store.search("c", query)
    before = check(store, query, 5)
    script = ("import sys, numpy as np, fsstore\n"
              "from fsstore.vectors import VectorDocument\n"
              "store = fsstore.open_store(sys.argv[1])\n"
              "with store.open_session('s03') as session:\n"
              "    c = session.collection('c')\n"
              "    c.upsert([VectorDocument('best', np.ones(8))])\n"
              f"    c.delete([{before[0][1]!r}]) if {before[0][0]!r} == 's03' else None\n")
    subprocess.run([sys.executable, "-c", script, path], check=True, env=child_env(),
                   timeout=120)
    after = check(store, query, 5)
    assert after[0][:2] == ("s03", "best")
    script = script.replace("c.upsert([VectorDocument('best', np.ones(8))])",
                            "c.delete(['best']); c.seal()")
    subprocess.run([sys.executable, "-c", script, path], check=True, env=child_env(),
                   timeout=120)
    assert "best" not in [i for _s, i, _x in check(store, query, 5)]


def test_a_damaged_cache_is_rebuilt_and_never_gives_a_wrong_answer(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    fill(store)
    query = np.random.default_rng(7).standard_normal(DIM)
    right = check(store, query)
    folder = tmp_path / "store" / "search" / "c"
    index = folder / "index"
    for damage in ("index", "shard", "missing"):
        store = fsstore.open_store(tmp_path / "store")  # nothing held in memory
        if damage == "index":
            data = bytearray(index.read_bytes())
            data[-3] ^= 0xFF
            index.write_bytes(bytes(data))
        else:
            shard = sorted(folder.glob("*.vec.npy"))[0]
            if damage == "missing":
                shard.unlink()
            else:
                shard.write_bytes(shard.read_bytes()[:-4])  # cut short
        assert check(store, query) == right
        assert check(store, query) == right  # rebuilt
        assert index.exists()


def test_chained_and_unchained_sessions_are_searched_alike(tmp_path):
    chained = fsstore.open_store(tmp_path / "chained", chain=True)
    plain = fsstore.open_store(tmp_path / "plain")
    fill(chained)
    fill(plain)
    query = np.random.default_rng(2).standard_normal(DIM)
    for _ in range(2):
        assert check(chained, query) == check(plain, query)
    # An edited collection.json of a chained session fails its MAC: that session is
    # passed over (verify reports it), never answered from its old cached rows.
    manifest = tmp_path / "chained" / "sessions" / "s01" / "vectors" / "c" / "collection.json"
    data = json.loads(manifest.read_text())
    data["created"] = "2000-01-01T00:00:00Z"
    manifest.write_text(json.dumps(data))
    assert "s01" not in {r.session_id for r in chained.search("c", query, 200)}


def test_a_session_without_the_collection_is_remembered_and_noticed_when_it_makes_one(
        tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    fill(store, count=2)
    store.create_session("empty").close()
    query = np.ones(DIM)
    store.search("c", query)
    store.search("c", query)
    with store.open_session("empty") as session:
        session.create_collection("c", DIM).upsert([VectorDocument("z", query * 5)])
    assert store.search("c", query, 1)[0].session_id == "empty"
