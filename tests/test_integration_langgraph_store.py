"""fsstore as LangGraph's long-term memory store (fsstore/integrations/langgraph_store.py):
namespaced items in a session's state, semantic search through its vector collection,
TTLs."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import numpy as np
import pytest

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


@pytest.fixture
def memory(tmp_path):
    with FsstoreStore(tmp_path / "store", index={"dims": len(WORDS) + 1, "embed": embed,
                                                 "fields": ["text"]}) as memory:
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
