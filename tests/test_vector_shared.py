"""Vector collections of a shared session (fsstore/vectors/writer.py, ``catch_up``): each
writer, in this process or another, takes in what the others wrote before each call,
so no acknowledged upsert or delete is lost to another writer's view."""

from __future__ import annotations

import numpy as np
import pytest
from procs import Child

import fsstore
from fsstore.vectors import tuning


def vector(number: int) -> list[float]:
    return [1.0, float(number % 7), float(number % 3), 0.5]


def doc(doc_id: str, number: int = 0) -> dict[str, object]:
    return {"id": doc_id, "embedding": vector(number), "metadata": {"n": number}}


@pytest.fixture
def two(store):
    store.create_session("s").close()
    with store.open_session("s", shared=True) as one, \
            store.open_session("s", shared=True) as other:
        one.create_collection("c", 4)
        yield one, other


def exclusive_ids(store) -> list[str]:
    with store.open_session("s") as session:
        collection = session.collection("c")
        found = collection.search(vector(0), k=max(collection.count(), 1))
        return sorted(hit.id for hit in found)


def test_two_shared_writers_keep_and_see_each_others_documents(store, two):
    one, other = two
    for number in range(5):
        one.collection("c").upsert([doc(f"one-{number}", number)])
        other.collection("c").upsert([doc(f"other-{number}", number)])
    expected = sorted([f"one-{n}" for n in range(5)] + [f"other-{n}" for n in range(5)])
    for session in two:
        collection = session.collection("c")
        assert collection.count() == 10
        assert [d is not None for d in collection.get(expected)] == [True] * 10
        assert sorted(h.id for h in collection.search(vector(0), k=20)) == expected
    # A delete of a document the other wrote, and a replacement of one.
    assert one.collection("c").delete(["other-0"]) == 1
    other.collection("c").upsert([doc("one-1", 99)])
    assert one.collection("c").get(["one-1"])[0].metadata == {"n": 99}
    assert other.collection("c").get(["other-0"]) == [None]
    one.close()
    other.close()
    assert exclusive_ids(store) == [i for i in expected if i != "other-0"]


def test_seals_and_merges_of_one_writer_keep_the_others_documents(store, two, monkeypatch):
    monkeypatch.setattr(tuning, "SEAL_ROWS", 4)
    monkeypatch.setattr(tuning, "TIER_FANOUT", 2)
    one, other = two
    written = []
    for number in range(30):
        writer = two[number % 2]
        writer.collection("c").upsert([doc(f"d{number}", number)])
        written.append(f"d{number}")
        if number % 7 == 6:
            writer.collection("c").delete([f"d{number - 3}"])
            written.remove(f"d{number - 3}")
        if number == 20:
            other.collection("c").compact()
    assert one.collection("c").info().shards >= 1
    for session in two:
        assert session.collection("c").count() == len(written)
    one.close()
    other.close()
    assert exclusive_ids(store) == sorted(written)


def test_a_collection_another_writer_dropped_is_reported_and_one_made_again_is_read(two):
    one, other = two
    held = other.collection("c")
    held.upsert([doc("old")])
    one.drop_collection("c")
    with pytest.raises(fsstore.CollectionNotFound):
        held.upsert([doc("lost?")])
    with pytest.raises(fsstore.CollectionNotFound):
        held.count()
    with pytest.raises(fsstore.CollectionNotFound):
        other.collection("c")
    one.create_collection("c", 4).upsert([doc("new")])
    assert held.count() == 1 and held.get(["new", "old"])[1] is None
    other.collection("c").upsert([doc("newer", 1)])
    assert sorted(h.id for h in one.collection("c").search(vector(1), k=5)) == [
        "new", "newer"]


def upsert_child(store_path: str, writer: str, count: str) -> None:
    """A child process: ``count`` upserts of one document each (and a delete of every
    fifth, of the document before it) to the collection "c" of the shared session "s",
    sealing every 8 documents, merging two shards at a time and compacting every 50."""
    tuning.SEAL_ROWS = 8
    tuning.TIER_FANOUT = 2
    store = fsstore.open_store(store_path)
    with store.open_session("s", shared=True) as session:
        collection = session.collection("c")
        print("READY", flush=True)
        for number in range(int(count)):
            collection.upsert([doc(f"{writer}-{number}", number)])
            if number % 5 == 4:
                collection.delete([f"{writer}-{number - 1}"])
            if number % 50 == 49:
                collection.compact()
    print("DONE END", flush=True)


@pytest.mark.parametrize("count", [40, pytest.param(1000, marks=pytest.mark.long)])
def test_two_processes_upserting_one_collection_lose_nothing(store, count):
    with store.create_session("s") as session:
        session.create_collection("c", 4)
    with Child.function(upsert_child, store.path, "p1", count) as first, \
            Child.function(upsert_child, store.path, "p2", count) as second:
        first.wait_for("READY")
        second.wait_for("READY")
        with store.open_session("s", shared=True) as here:  # this process writes too
            for number in range(10):
                here.collection("c").upsert([doc(f"here-{number}", number)])
        first.wait_for("DONE")
        second.wait_for("DONE")
        first.finish()
        second.finish()
    expected = sorted([f"p{w}-{n}" for w in (1, 2) for n in range(count) if n % 5 != 3]
                      + [f"here-{n}" for n in range(10)])
    assert exclusive_ids(store) == expected
    reader = store.read_session("s").collection("c")
    assert reader.count() == len(expected)
    assert np.allclose(reader.get(["p2-7"])[0].embedding, vector(7))
