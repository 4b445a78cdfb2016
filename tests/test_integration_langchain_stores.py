"""FsstoreByteStore, FsstoreStore and FsstoreVectorStore beyond LangChain's standard
suites: exact values and metadata, refusals that write nothing, namespaces, filters,
relevance scores and maximal marginal relevance."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from procs import Child

pytest.importorskip("langchain_core")

from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402

import fsstore  # noqa: E402
from fsstore.integrations.langchain import (  # noqa: E402
    FsstoreByteStore,
    FsstoreStore,
    FsstoreVectorStore,
    session_id_for,
)


class AxisEmbeddings(Embeddings):
    """Texts on known directions: ``"x"`` along the first axis, ``"x y"`` between the
    first two, and so on (letters a to h)."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.embed_query(text) for text in texts]

    def embed_query(self, text: str) -> list[float]:
        vector = [0.0] * 8
        for word in text.split():
            vector["abcdefgh".index(word[0])] += 1.0
        return vector


# --- key-value stores -------------------------------------------------------------------


def test_keys_are_any_string_and_never_a_path(tmp_path) -> None:
    keys = ["../../etc/passwd", "a/b", "", "\x00", "CON", "日本", "x" * 1000]
    with FsstoreByteStore(tmp_path / "store", namespace="ns/../..") as kv:
        kv.mset([(key, key.encode()) for key in keys])
        assert kv.mget(keys) == [key.encode() for key in keys]
        assert list(kv.yield_keys()) == sorted(keys)
        assert list(kv.yield_keys(prefix="a/")) == ["a/b"]
        assert kv.fsstore_session_id == session_id_for("lc-kv", "ns/../..")
    assert sorted(os.listdir(tmp_path)) == ["store"]


def test_namespaces_and_the_two_stores_are_apart(tmp_path) -> None:
    store = fsstore.open_store(tmp_path)
    with FsstoreByteStore(store, "one") as one, FsstoreByteStore(store, "two") as two, \
            FsstoreStore(store, "one") as any_one:
        one.mset([("k", b"1")])
        assert two.mget(["k"]) == [None]
        assert any_one.mget(["k"]) == [None]


def test_values_read_back_exactly_or_are_refused_with_nothing_written(tmp_path) -> None:
    value = {"list": [1, 2.5, None, True, "s", b"\x00"], "nested": {"x": {"y": []}}}
    with FsstoreStore(tmp_path, "v") as kv:
        kv.mset([("ok", value)])
        for bad in ((1, 2), {1, 2}, {"a": (1,)}, object(), 2**70, float("nan")):
            with pytest.raises(fsstore.InvalidState):
                kv.mset([("other", 1), ("bad", bad)])
        assert kv.mget(["ok", "other", "bad"]) == [value, None, None]
        assert type(kv.mget(["ok"])[0]["list"][4]) is str


def test_a_byte_store_holds_only_bytes(tmp_path) -> None:
    with FsstoreByteStore(tmp_path) as kv, pytest.raises(fsstore.InvalidState):
        kv.mset([("k", "not bytes")])  # type: ignore[list-item]


def test_the_last_value_of_a_repeated_key_wins(tmp_path) -> None:
    with FsstoreByteStore(tmp_path) as kv:
        kv.mset([("k", b"1"), ("k", b"2")])
        assert kv.mget(["k"]) == [b"2"]


def test_two_stores_on_one_namespace_share_it(tmp_path) -> None:
    with FsstoreByteStore(tmp_path, "n") as first, FsstoreByteStore(tmp_path, "n") as second:
        first.mset([("k", b"v")])
        assert second.mget(["k"]) == [b"v"]
        second.mdelete(["k"])
        assert first.mget(["k"]) == [None]


def test_a_store_keeps_its_values_across_opens(tmp_path) -> None:
    with FsstoreStore(tmp_path, "n") as kv:
        kv.mset([("k", {"a": 1})])
    with FsstoreStore(tmp_path, "n") as kv:
        assert kv.mget(["k"]) == [{"a": 1}]


def test_a_closed_store_refuses_calls(tmp_path) -> None:
    kv = FsstoreByteStore(tmp_path)
    kv.close()
    with pytest.raises(fsstore.SessionClosed):
        kv.mget(["k"])


# --- vector store -----------------------------------------------------------------------


@pytest.fixture
def vectors(tmp_path):
    with FsstoreVectorStore(AxisEmbeddings(), tmp_path / "store", name="kb:1/x") as store:
        yield store


def test_documents_carry_exactly_the_callers_metadata(vectors: FsstoreVectorStore) -> None:
    metadata = {"source": "a.md", "page": 3, "score": 0.5, "tags": ["x", "y"],
                "nested": {"ok": True, "none": None}, "raw": b"\x01"}
    ids = vectors.add_texts(["a", "b"], [metadata, {}], ids=["doc/1", None])  # type: ignore[list-item]
    assert ids[0] == "doc/1" and len(ids[1]) == 36
    assert vectors.get_by_ids(ids) == [Document(id="doc/1", page_content="a", metadata=metadata),
                                       Document(id=ids[1], page_content="b", metadata={})]
    assert vectors.similarity_search("a", k=1)[0].metadata == metadata


def test_metadata_that_would_not_read_back_equal_is_refused(vectors: FsstoreVectorStore
                                                            ) -> None:
    vectors.add_texts(["a"], ids=["kept"])
    for bad in ({"pair": (1, 2)}, {"when": object()}, {"$seq": 1}):
        with pytest.raises(fsstore.InvalidDocument):
            vectors.add_texts(["b", "c"], [{}, bad], ids=["x", "y"])
    assert vectors.get_by_ids(["kept", "x", "y"]) == [Document(id="kept", page_content="a")]


def test_scores_filters_and_relevance(vectors: FsstoreVectorStore) -> None:
    vectors.add_documents([Document("a", metadata={"kind": "x"}),
                           Document("a b", metadata={"kind": "y"}),
                           Document("c", metadata={"kind": "x"})], ids=["1", "2", "3"])
    scored = vectors.similarity_search_with_score("a", k=3)
    assert [doc.id for doc, _ in scored] == ["1", "2", "3"]
    assert [round(score, 4) for _, score in scored] == [1.0, 0.7071, 0.0]
    relevance = vectors.similarity_search_with_relevance_scores("a", k=3)
    assert [round(score, 4) for _, score in relevance] == [1.0, 0.8536, 0.5]
    assert [doc.id for doc in vectors.similarity_search("a", k=3, filter={"kind": "x"})] \
        == ["1", "3"]
    assert [doc.id for doc in vectors.similarity_search_by_vector([0, 0, 1] + [0] * 5, k=1)] \
        == ["3"]


def test_maximal_marginal_relevance_prefers_diverse_documents(vectors: FsstoreVectorStore
                                                              ) -> None:
    vectors.add_texts(["a", "a", "a b", "b"], ids=["a1", "a2", "ab", "b"])
    nearest = [doc.id for doc in vectors.similarity_search("a", k=2)]
    assert sorted(nearest) == ["a1", "a2"]
    diverse = [doc.id for doc in vectors.max_marginal_relevance_search(
        "a", k=2, fetch_k=4, lambda_mult=0.3)]
    assert diverse[0] in ("a1", "a2") and diverse[1] in ("ab", "b")
    assert asyncio.run(vectors.amax_marginal_relevance_search(
        "a", k=2, fetch_k=4, lambda_mult=0.3)) == vectors.max_marginal_relevance_search(
        "a", k=2, fetch_k=4, lambda_mult=0.3)


def test_delete_without_ids_empties_the_vector_store(vectors: FsstoreVectorStore) -> None:
    vectors.add_texts(["a", "b"], ids=["1", "2"])
    assert vectors.delete() is True
    assert vectors.similarity_search("a") == []
    vectors.add_texts(["c"], ids=["3"])
    assert [doc.id for doc in vectors.similarity_search("c", k=5)] == ["3"]


def test_async_searches_match_the_sync_ones(vectors: FsstoreVectorStore) -> None:
    async def run() -> None:
        await vectors.aadd_texts(["a", "b", "a b"], ids=["1", "2", "3"])
        assert await vectors.asimilarity_search("a", k=2) == vectors.similarity_search("a", 2)
        assert await vectors.asimilarity_search_with_score("b") == \
            vectors.similarity_search_with_score("b")
        assert await vectors.asimilarity_search_by_vector([1.0] + [0.0] * 7, k=1) == \
            vectors.similarity_search_by_vector([1.0] + [0.0] * 7, k=1)
        assert await vectors.aget_by_ids(["3", "missing"]) == vectors.get_by_ids(["3"])
        await vectors.adelete(["1"])
        assert vectors.get_by_ids(["1"]) == []
    asyncio.run(run())


def test_from_texts_and_a_second_object_see_the_same_documents(tmp_path) -> None:
    made = FsstoreVectorStore.from_texts(["a", "b"], AxisEmbeddings(), [{"n": 1}, {"n": 2}],
                                         ids=["1", "2"], store=tmp_path, name="kb")
    with made, FsstoreVectorStore(AxisEmbeddings(), tmp_path, "kb") as other:
        assert other.get_by_ids(["2"]) == [Document(id="2", page_content="b",
                                                    metadata={"n": 2})]
    with FsstoreVectorStore(AxisEmbeddings(), tmp_path, "kb") as reopened:
        assert [doc.id for doc in reopened.similarity_search("b", k=1)] == ["2"]


def test_euclidean_scores_are_distances(tmp_path) -> None:
    with FsstoreVectorStore(AxisEmbeddings(), tmp_path, metric="euclidean") as vectors:
        vectors.add_texts(["a", "b"], ids=["1", "2"])
        scored = vectors.similarity_search_with_score("a", k=2)
        assert [(doc.id, round(score, 4)) for doc, score in scored] == [("1", 0.0),
                                                                        ("2", 1.4142)]


def test_a_store_sees_what_another_process_wrote(tmp_path) -> None:
    code = ("import sys\nfrom fsstore.integrations.langchain import FsstoreByteStore\n"
            "with FsstoreByteStore(sys.argv[1], 'n') as kv:\n"
            "    kv.mset([('child', b'1')]); kv.mdelete(['parent'])\n")
    with FsstoreByteStore(tmp_path, "n") as kv:
        kv.mset([("parent", b"0")])
        subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
        assert kv.mget(["parent", "child"]) == [None, b"1"]
        assert list(kv.yield_keys()) == ["child"]


# --- several writers on one vector store name ---


def test_two_vector_store_objects_on_one_name_see_and_keep_each_others_documents(
        tmp_path) -> None:
    with FsstoreVectorStore(AxisEmbeddings(), tmp_path, "kb") as one, \
            FsstoreVectorStore(AxisEmbeddings(), fsstore.open_store(tmp_path), "kb") as two:
        for number in range(3):
            one.add_texts(["a"], ids=[f"one-{number}"])
            two.add_texts(["b"], ids=[f"two-{number}"])
        two.delete(["one-0"])
        for vectors in (one, two):
            found = vectors.similarity_search("b", k=3)
            assert sorted(str(doc.id) for doc in found) == ["two-0", "two-1", "two-2"]
            assert len(vectors.similarity_search("a", k=10)) == 5
    assert stored_ids(tmp_path, "kb") == ["one-1", "one-2", "two-0", "two-1", "two-2"]


def add_texts_child(store_path: str, writer: str, count: str) -> None:
    """A child process: ``count`` adds, one document each, to the vector store "shared"."""
    with FsstoreVectorStore(AxisEmbeddings(), store_path, name="shared") as vectors:
        print("READY", flush=True)
        for number in range(int(count)):
            vectors.add_texts([f"a b{number % 3}"], [{"w": writer}], ids=[f"{writer}-{number}"])
    print("DONE END", flush=True)


def stored_ids(store_path: object, name: str) -> list[str]:
    """The ids in the vector store's collection, as a reader of the disk finds them."""
    store = fsstore.open_store(str(store_path))
    collection = store.read_session(session_id_for("lc-vectors", name)).collection("langchain")
    return sorted(hit.id for hit in collection.search([1.0] + [0.0] * 7,
                                                      k=max(collection.count(), 1)))


def test_two_processes_adding_to_one_vector_store_lose_no_document(tmp_path) -> None:
    count = 20
    with FsstoreVectorStore(AxisEmbeddings(), tmp_path, name="shared") as here:
        here.add_texts(["a"], ids=["first"])  # the collection exists before they start
        with Child.function(add_texts_child, tmp_path, "p1", count) as one, \
                Child.function(add_texts_child, tmp_path, "p2", count) as two:
            one.wait_for("READY")
            two.wait_for("READY")
            for number in range(5):  # this process adds too, meanwhile
                here.add_texts(["a c"], ids=[f"here-{number}"])
            one.wait_for("DONE")
            two.wait_for("DONE")
            one.finish()
            two.finish()
        expected = sorted([f"p{w}-{n}" for w in (1, 2) for n in range(count)]
                          + [f"here-{n}" for n in range(5)] + ["first"])
        # This object sees what the others wrote, by id and by search.
        assert sorted(str(doc.id) for doc in here.get_by_ids(expected)) == expected
        found = here.similarity_search("a", k=100, filter={"w": "p2"})
        assert sorted(str(doc.id) for doc in found) == sorted(f"p2-{n}" for n in range(count))
    assert stored_ids(tmp_path, "shared") == expected


def test_a_vector_store_emptied_by_another_process_keeps_the_documents_added_after(
        tmp_path) -> None:
    code = ("import sys\nfrom fsstore.integrations.langchain import FsstoreVectorStore\n"
            "from test_integration_langchain_stores import AxisEmbeddings\n"
            "with FsstoreVectorStore(AxisEmbeddings(), sys.argv[1], 'kb') as vectors:\n"
            "    vectors.delete()\n")
    with FsstoreVectorStore(AxisEmbeddings(), tmp_path, "kb") as vectors:
        vectors.add_texts(["a", "b"], ids=["1", "2"])
        with Child.script(code, tmp_path) as child:
            child.finish()
            assert child.returncode == 0, child.describe()
        assert vectors.get_by_ids(["1", "2"]) == []
        vectors.add_texts(["c"], ids=["3"])
        assert [doc.id for doc in vectors.similarity_search("c", k=5)] == ["3"]
    assert stored_ids(tmp_path, "kb") == ["3"]
