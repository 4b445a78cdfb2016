"""fsstore as LangGraph's long-term memory store (fsstore/integrations/langgraph_store.py):
namespaced items in a session's state, semantic search through its vector collection,
TTLs."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import numpy as np
import pytest
from procs import Child

pytest.importorskip("langgraph.store.base")

from langgraph.graph import END, START, StateGraph  # noqa: E402
from langgraph.store.base import BaseStore, InvalidNamespaceError  # noqa: E402

import fsstore  # noqa: E402
from fsstore.integrations.langgraph import (  # noqa: E402
    FsstoreSaver,
    FsstoreStore,
    store_session_id,
)

WORDS = ["deploy", "script", "quotes", "short", "answers", "long", "essays", "coffee",
         "tea", "morning"]


def embed(texts: list[str]) -> list[list[float]]:
    """A bag of known words: texts sharing words are near."""
    vectors = []
    for text in texts:
        vector = np.zeros(len(WORDS) + 1)
        for word in text.lower().split():
            vector[WORDS.index(word) if word in WORDS else len(WORDS)] += 1
        vectors.append(vector.tolist())
    return vectors


INDEX: Any = {"dims": len(WORDS) + 1, "embed": embed, "fields": ["text"]}


@pytest.fixture
def memory(tmp_path):
    with FsstoreStore(tmp_path / "store", index=INDEX) as memory:
        yield memory


def test_items_are_put_got_updated_and_deleted(memory, clock):
    memory.put(("users", "ada"), "prefs", {"text": "short answers", "tone": None})
    first = memory.get(("users", "ada"), "prefs")
    assert first.value == {"text": "short answers", "tone": None}
    assert first.namespace == ("users", "ada") and first.key == "prefs"
    clock.advance(5)
    memory.put(("users", "ada"), "prefs", {"text": "long essays"})
    second = memory.get(("users", "ada"), "prefs")
    assert second.value == {"text": "long essays"}  # replaced whole, not merged
    assert second.created_at == first.created_at
    assert (second.updated_at - first.updated_at).total_seconds() == 5
    memory.delete(("users", "ada"), "prefs")
    assert memory.get(("users", "ada"), "prefs") is None
    assert memory.get(("nobody",), "nothing") is None


def test_items_live_in_the_state_of_one_session_and_survive_reopening(memory):
    memory.put(("a:b/c", "/"), "../key", {"n": 1})
    session_id = store_session_id("default")
    assert os.listdir(os.path.join(memory.store.path, "sessions")) == [session_id]
    reader = memory.store.read_session(session_id)
    assert reader.metadata == {"framework": "langgraph", "framework_id": "default",
                               "kind": "store"}
    assert len(reader.state()) == 1
    with FsstoreStore(memory.store.path) as again:
        assert again.get(("a:b/c", "/"), "../key").value == {"n": 1}
    with FsstoreStore(memory.store.path, name="other", durability="fsync") as other:
        assert other.get(("a:b/c", "/"), "../key") is None
        assert other.session.durability == fsstore.Durability("fsync")


def test_search_filters_by_prefix_and_value_newest_first(memory, clock):
    for n in range(5):
        memory.put(("docs", "team" if n % 2 else "me"), f"d{n}", {"n": n, "tag": {"k": n % 2}})
        clock.advance(1)
    memory.put(("other",), "x", {"n": 99})
    found = memory.search(("docs",))
    assert [i.key for i in found] == ["d4", "d3", "d2", "d1", "d0"]
    assert [i.key for i in memory.search(("docs", "team"))] == ["d3", "d1"]
    assert [i.key for i in memory.search(("docs",), filter={"n": {"$gte": 2, "$lt": 4}})] == [
        "d3", "d2"]
    assert [i.key for i in memory.search(("docs",), filter={"tag": {"k": 1}})] == ["d3", "d1"]
    assert [i.key for i in memory.search(("docs",), filter={"n": {"$ne": 0}}, limit=2,
                                         offset=1)] == ["d3", "d2"]
    assert all(i.score is None for i in found)


def test_semantic_search_ranks_by_meaning_through_the_vector_collection(memory):
    memory.put(("notes",), "a", {"text": "deploy script quotes"})
    memory.put(("notes",), "b", {"text": "coffee morning"})
    memory.put(("notes",), "c", {"text": "tea"}, index=False)  # stored, not embedded
    memory.put(("elsewhere",), "d", {"text": "deploy script"})
    found = memory.search(("notes",), query="morning coffee")
    assert [i.key for i in found] == ["b", "a", "c"]
    assert found[0].score == pytest.approx(1.0) and found[2].score is None
    def count() -> int:
        reader = memory.store.read_session(store_session_id("default"))
        return reader.collection("memory").count()

    assert count() == 3
    # A changed text replaces the item's vectors; a delete removes them.
    memory.put(("notes",), "b", {"text": "deploy"})
    assert [i.key for i in memory.search(("notes",), query="deploy")][:2] == ["b", "a"]
    memory.delete(("notes",), "a")
    assert count() == 2


def test_list_namespaces_by_prefix_suffix_depth_and_page(memory):
    for namespace in [("a", "x", "1"), ("a", "y", "1"), ("b", "x"), ("a", "x", "2")]:
        memory.put(namespace, "k", {"v": 1})
    assert memory.list_namespaces() == [("a", "x", "1"), ("a", "x", "2"), ("a", "y", "1"),
                                        ("b", "x")]
    assert memory.list_namespaces(prefix=("a", "*", "1")) == [("a", "x", "1"), ("a", "y", "1")]
    assert memory.list_namespaces(suffix=("x",)) == [("b", "x")]
    assert memory.list_namespaces(max_depth=2) == [("a", "x"), ("a", "y"), ("b", "x")]
    assert memory.list_namespaces(limit=2, offset=1) == [("a", "x", "2"), ("a", "y", "1")]


def test_ttl_hides_expired_items_refreshes_on_read_and_is_swept(memory, clock):
    memory.put(("tmp",), "kept", {"v": 1}, ttl=1)  # minutes
    memory.put(("tmp",), "dropped", {"text": "deploy"}, ttl=1)
    clock.advance(1)
    memory.put(("tmp",), "forever", {"v": 3})
    clock.advance(44)
    assert memory.get(("tmp",), "kept").value == {"v": 1}  # refreshed: 60 s from now
    clock.advance(45)
    assert memory.get(("tmp",), "dropped") is None
    assert [i.key for i in memory.search(("tmp",))] == ["forever", "kept"]
    assert memory.sweep_ttl() == 1
    assert set(memory.store.read_session(store_session_id("default")).state()) == {
        '["tmp", "kept"]', '["tmp", "forever"]'}
    clock.advance(120)
    assert memory.get(("tmp",), "kept", refresh_ttl=False) is None


def test_invalid_namespaces_and_values_are_refused_with_nothing_written(memory):
    with pytest.raises(InvalidNamespaceError):
        memory.put(("a.b",), "k", {"v": 1})
    with pytest.raises(fsstore.InvalidState):
        memory.put(("a",), "k", {"v": object()})
    assert memory.store.read_session(store_session_id("default")).state() == {}


def test_async_calls_and_a_graph_that_remembers(memory, tmp_path):
    async def run() -> Any:
        await memory.aput(("users", "ada"), "prefs", {"text": "short answers"})
        return await memory.asearch(("users",), query="short")

    assert [i.key for i in asyncio.run(run())] == ["prefs"]

    def remember(state: dict[str, Any], *, store: BaseStore) -> dict[str, Any]:
        store.put(("users", state["user"]), "last", {"text": state["text"]})
        return {"text": store.get(("users", state["user"]), "prefs").value["text"]}

    builder = StateGraph(dict)
    builder.add_node("remember", remember)
    builder.add_edge(START, "remember")
    builder.add_edge("remember", END)
    with FsstoreSaver(memory.store) as saver:
        graph = builder.compile(checkpointer=saver, store=memory)
        out = graph.invoke({"user": "ada", "text": "coffee"},
                           {"configurable": {"thread_id": "t"}})
    assert out["text"] == "short answers"
    assert memory.get(("users", "ada"), "last").value == {"text": "coffee"}


# --- several writers on one store name ---


def scored_keys(memory: FsstoreStore, query: str) -> dict[str, float | None]:
    return {item.key: item.score for item in memory.search(("w",), query=query, limit=100)}


def test_two_store_objects_on_one_name_keep_every_items_vectors(tmp_path):
    path = tmp_path / "store"
    with FsstoreStore(path, name="mem", index=INDEX) as one, \
            FsstoreStore(path, name="mem", index=INDEX) as two:
        for number in range(3):
            one.put(("w",), f"one-{number}", {"text": "coffee morning"})
            two.put(("w",), f"two-{number}", {"text": "tea morning"})
        for memory in (one, two):
            found = scored_keys(memory, "morning")
            assert len(found) == 6 and None not in found.values()
            # the three of equal score first (in the order of their documents' ids)
            assert sorted(list(scored_keys(memory, "coffee"))[:3]) == sorted(
                f"one-{n}" for n in range(3))
        # A put of one object replaces the vectors the other wrote for that key.
        one.put(("w",), "two-0", {"text": "deploy script"})
        assert list(scored_keys(two, "deploy script"))[0] == "two-0"
        two.delete(("w",), "one-1")
        assert "one-1" not in scored_keys(one, "coffee")
    with FsstoreStore(path, name="mem", index=INDEX) as reopened:
        found = scored_keys(reopened, "morning")
        assert len(found) == 5 and None not in found.values()
        reader = reopened.store.read_session(store_session_id("mem"))
        assert reader.collection("memory").count() == 5


def put_items_child(store_path: str, writer: str, count: str) -> None:
    """A child process: ``count`` puts, one item each, to the store "mem"."""
    with FsstoreStore(store_path, name="mem", index=INDEX) as memory:
        print("READY", flush=True)
        for number in range(int(count)):
            memory.put(("w",), f"{writer}-{number}", {"text": "deploy script"})
    print("DONE END", flush=True)


def test_two_processes_on_one_store_keep_every_items_vectors(tmp_path):
    path, count = tmp_path / "store", 15
    with FsstoreStore(path, name="mem", index=INDEX) as here:
        with Child.function(put_items_child, path, "p1", count) as first, \
                Child.function(put_items_child, path, "p2", count) as second:
            first.wait_for("READY")
            second.wait_for("READY")
            for number in range(5):  # this process puts too, meanwhile
                here.put(("w",), f"here-{number}", {"text": "coffee"})
            first.wait_for("DONE")
            second.wait_for("DONE")
            first.finish()
            second.finish()
        # What this object sees, and what a fresh one reads from the disk.
        expected = {f"{w}-{n}" for w in ("p1", "p2") for n in range(count)}
        expected |= {f"here-{n}" for n in range(5)}
        found = scored_keys(here, "deploy script")
        assert set(found) == expected and None not in found.values()
    with FsstoreStore(path, name="mem", index=INDEX) as reopened:
        found = scored_keys(reopened, "deploy script")
        assert set(found) == expected and None not in found.values()
        reader = reopened.store.read_session(store_session_id("mem"))
        assert reader.collection("memory").count() == len(expected)
