"""fsstore as LangGraph's checkpointer (fsstore/integrations/langgraph_checkpoint.py):
LangGraph's published conformance suite, real graphs, and how a thread sits on disk."""

from __future__ import annotations

import asyncio
import os
import pickle
import subprocess
import sys
import threading
from typing import Annotated, Any, TypedDict

import pytest

pytest.importorskip("langgraph.checkpoint.conformance")

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage  # noqa: E402
from langgraph.checkpoint.base import ERROR, INTERRUPT  # noqa: E402
from langgraph.checkpoint.conformance import checkpointer_test, validate  # noqa: E402
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES  # noqa: E402
from langgraph.checkpoint.conformance.test_utils import (  # noqa: E402
    generate_checkpoint,
    generate_config,
    generate_metadata,
)
from langgraph.checkpoint.memory import InMemorySaver  # noqa: E402
from langgraph.graph import END, START, StateGraph  # noqa: E402
from langgraph.graph.message import add_messages  # noqa: E402
from langgraph.types import Command, interrupt  # noqa: E402

import fsstore  # noqa: E402
from fsstore.integrations.langgraph import (  # noqa: E402
    FsstoreSaver,
    session_id_for,
    thread_session_id,
)


@pytest.fixture
def saver(tmp_path):
    with FsstoreSaver(tmp_path / "store") as saver:
        yield saver


def records(saver: FsstoreSaver, thread_id: str, kind: str) -> list[Any]:
    reader = saver.store.read_session(thread_session_id(thread_id))
    return [event.data for event in reader.events() if event.kind == kind]


def put(saver: FsstoreSaver, thread_id: str, values: dict[str, Any],
        versions: dict[str, Any], parent: dict | None = None, **metadata: Any) -> dict:
    config = generate_config(thread_id)
    if parent is not None:
        config["configurable"]["checkpoint_id"] = parent["configurable"]["checkpoint_id"]
    checkpoint = generate_checkpoint(channel_values=dict(values))
    checkpoint["channel_versions"] = dict(versions)
    return saver.put(config, checkpoint, generate_metadata(**metadata),
                     {k: versions[k] for k in values})


# --- LangGraph's conformance suite ---

def test_conformance_suite_passes_at_every_capability(tmp_path):
    stores = iter(range(100))

    @checkpointer_test(name="FsstoreSaver")
    async def fsstore_saver():
        with FsstoreSaver(tmp_path / f"store-{next(stores)}") as saver:
            yield saver

    report = asyncio.run(validate(fsstore_saver))
    failures = {name: result.failures for name, result in report.results.items()
                if result.passed is not True}
    assert failures == {}
    assert {name for name, result in report.results.items() if result.detected} == {
        capability.value for capability in ALL_CAPABILITIES}
    assert report.conformance_level() == "FULL"


# --- real graphs ---

class State(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    approved: bool


def build_graph(saver: FsstoreSaver) -> Any:
    def agent(state: State) -> State:
        return {"messages": [AIMessage(content=f"reply to {state['messages'][-1].content}")]}

    def review(state: State) -> State:
        return {"approved": interrupt({"question": "send it?"}) == "yes"}

    builder = StateGraph(State)
    builder.add_node("agent", agent)
    builder.add_node("review", review)
    builder.add_edge(START, "agent")
    builder.add_edge("agent", "review")
    builder.add_edge("review", END)
    return builder.compile(checkpointer=saver)


def contents(state: dict[str, Any]) -> list[str]:
    return [message.content for message in state["messages"]]


def test_graph_interrupts_resumes_time_travels_and_forks(saver):
    graph = build_graph(saver)
    config = {"configurable": {"thread_id": "support/ticket:42"}}
    first = graph.invoke({"messages": [HumanMessage("hi")]}, config)
    assert first["__interrupt__"][0].value == {"question": "send it?"}
    assert graph.get_state(config).next == ("review",)
    resumed = graph.invoke(Command(resume="yes"), config)
    assert resumed["approved"] is True and contents(resumed) == ["hi", "reply to hi"]
    graph.invoke({"messages": [HumanMessage("and now?")]}, config)
    done = graph.invoke(Command(resume="no"), config)
    assert done["approved"] is False
    assert contents(done) == ["hi", "reply to hi", "and now?", "reply to and now?"]

    history = list(graph.get_state_history(config))
    assert [h.metadata["step"] for h in history] == list(range(6, -2, -1))
    before_second_reply = next(h for h in history if h.metadata["step"] == 4)
    assert before_second_reply.next == ("agent",)
    # Time travel: replaying from an earlier checkpoint runs the rest again from there.
    replayed = graph.invoke(None, before_second_reply.config)
    assert contents(replayed) == ["hi", "reply to hi", "and now?", "reply to and now?"]
    assert "__interrupt__" in replayed
    # A fork: change the past, and run on from the change.
    fork = graph.update_state(before_second_reply.config,
                              {"messages": [HumanMessage("something else")]})
    forked = graph.invoke(None, fork)
    assert contents(forked) == ["hi", "reply to hi", "and now?", "something else",
                                "reply to something else"]
    # The fork's messages are stored as the tail they add to the past's version.
    tails = [r for r in records(saver, "support/ticket:42", "langgraph.value")
             if r["ch"] == "messages" and "base" in r]
    past = saver.get_tuple(before_second_reply.config).checkpoint["channel_versions"]
    # the main line, the replay and the fork each extend the version the past had
    assert sum(r["base"] == past["messages"] for r in tails) == 3
    # The main line is still whole beside the branches.
    main = graph.get_state({"configurable": {"thread_id": "support/ticket:42",
                                             "checkpoint_id": history[0].config[
                                                 "configurable"]["checkpoint_id"]}})
    assert contents(main.values) == contents(done)


def test_graph_runs_with_ainvoke(saver):
    graph = build_graph(saver)
    config = {"configurable": {"thread_id": "async-thread"}}

    async def run() -> dict[str, Any]:
        await graph.ainvoke({"messages": [HumanMessage("hello")]}, config)
        state = await graph.aget_state(config)
        assert state.next == ("review",)
        return await graph.ainvoke(Command(resume="yes"), config)

    final = asyncio.run(run())
    assert final["approved"] is True and contents(final) == ["hello", "reply to hello"]
    # A saver opened afresh on the same folder reads the thread back from the log.
    with FsstoreSaver(saver.store.path) as again:
        state = build_graph(again).get_state(config)
        assert contents(state.values) == ["hello", "reply to hello"]
        assert state.values["approved"] is True


# --- how values are stored ---

def test_a_grown_list_is_stored_as_the_tail_it_added(saver):
    messages = [HumanMessage(f"message {i} " + "x" * 1000, id=str(i)) for i in range(100)]
    parent = put(saver, "t", {"messages": list(messages)}, {"messages": "1"})
    for step in range(2, 12):
        messages += [AIMessage(f"step {step}", id=f"a{step}"),
                     HumanMessage(f"more {step}", id=f"h{step}")]
        parent = put(saver, "t", {"messages": list(messages)}, {"messages": str(step)},
                     parent=parent)
    stored = records(saver, "t", "langgraph.value")
    assert "base" not in stored[0] and len(stored[0]["b"]) > 100_000
    assert [r["base"] for r in stored[1:]] == [str(step) for step in range(1, 11)]
    assert max(len(r["b"]) for r in stored[1:]) < 1_000  # two short messages each
    assert saver.get_tuple(generate_config("t")).checkpoint["channel_values"][
        "messages"] == messages
    history = [t.checkpoint["channel_values"]["messages"] for t in saver.list(
        generate_config("t"))]
    assert [len(m) for m in history] == list(range(120, 98, -2))
    with FsstoreSaver(saver.store.path) as fresh:  # rebuilt from the tails alone
        assert fresh.get_tuple(generate_config("t")).checkpoint["channel_values"][
            "messages"] == messages
        assert [t.checkpoint["channel_values"]["messages"] for t in fresh.list(
            generate_config("t"))] == history
    # A value read back is the caller's to change: the next read is as stored.
    saver.get_tuple(generate_config("t")).checkpoint["channel_values"]["messages"].clear()
    assert saver.get_tuple(generate_config("t")).checkpoint["channel_values"][
        "messages"] == messages


def test_a_list_changed_other_than_by_appending_is_stored_whole(saver):
    parent = put(saver, "t", {"items": [1, 2, 3]}, {"items": "1"})
    put(saver, "t", {"items": [1, 9, 3, 4]}, {"items": "2"}, parent=parent)
    stored = records(saver, "t", "langgraph.value")
    assert ["base" in r for r in stored] == [False, False]
    assert saver.get_tuple(generate_config("t")).checkpoint["channel_values"] == {
        "items": [1, 9, 3, 4]}


def test_a_message_a_node_changes_in_place_is_stored_changed_and_history_kept(tmp_path):
    def edit_first(state: State) -> State:
        state["messages"][0].content += "+edited"  # in place: discouraged, but legal
        return {"messages": [AIMessage("reply")]}

    builder = StateGraph(State)
    builder.add_node("edit", edit_first)
    builder.add_edge(START, "edit")
    builder.add_edge("edit", END)
    config = {"configurable": {"thread_id": "t"}}

    def history(saver: Any) -> list[list[str]]:
        graph = builder.compile(checkpointer=saver)
        return [contents(snapshot.values) if snapshot.values else []
                for snapshot in graph.get_state_history(config)]

    seen = []
    for saver in (InMemorySaver(), FsstoreSaver(tmp_path / "store")):
        graph = builder.compile(checkpointer=saver)
        # durability="sync": each checkpoint is saved before the next node runs (with
        # "async", a node may change a message while a slower saver still writes it).
        graph.invoke({"messages": [HumanMessage("hi", id="h1")]}, config, durability="sync")
        graph.invoke({"messages": [HumanMessage("again", id="h2")]}, config,
                     durability="sync")
        seen.append(history(saver))
        if isinstance(saver, FsstoreSaver):
            saver.close()
    assert seen[0][0] == ["hi+edited+edited", "reply", "again", "reply"]
    assert seen[1] == seen[0]
    with FsstoreSaver(tmp_path / "store") as reopened:
        assert history(reopened) == seen[0]


def test_a_value_read_back_and_changed_in_place_changes_nothing_stored(saver):
    messages = [HumanMessage("one", id="1"), AIMessage("two", id="2")]
    parent = put(saver, "t", {"messages": list(messages)}, {"messages": "1"})
    read = saver.get_tuple(generate_config("t")).checkpoint["channel_values"]["messages"]
    read[1].additional_kwargs["nested"] = ["changed"]  # inside a field: still its own
    again = saver.get_tuple(generate_config("t")).checkpoint["channel_values"]["messages"]
    assert again == messages
    read[1].additional_kwargs.clear()
    read[0].content = "changed by the caller"
    put(saver, "t", {"messages": read + [HumanMessage("three", id="3")]}, {"messages": "2"},
        parent=parent)
    history = [t.checkpoint["channel_values"]["messages"] for t in saver.list(
        generate_config("t"))]
    assert [m.content for m in history[1]] == ["one", "two"]
    assert [m.content for m in history[0]] == ["changed by the caller", "two", "three"]
    with FsstoreSaver(saver.store.path) as fresh:
        assert [[m.content for m in t.checkpoint["channel_values"]["messages"]]
                for t in fresh.list(generate_config("t"))] == [
            ["changed by the caller", "two", "three"], ["one", "two"]]


def test_a_list_that_equals_its_base_only_loosely_is_stored_whole(saver):
    parent = put(saver, "t", {"xs": [True, 1.0, -0.0, {"b": 2, "a": 1}]}, {"xs": "1"})
    grown = [1, 1, 0.0, {"a": 1, "b": 2}, "new"]  # == the base plus one, but not alike
    put(saver, "t", {"xs": grown}, {"xs": "2"}, parent=parent)
    assert ["base" in r for r in records(saver, "t", "langgraph.value")] == [False, False]
    with FsstoreSaver(saver.store.path) as fresh:
        read = fresh.get_tuple(generate_config("t")).checkpoint["channel_values"]["xs"]
    assert [type(x) for x in read] == [int, int, float, dict, str]
    assert list(read[3]) == ["a", "b"] and str(read[2]) == "0.0"


def test_an_entrypoint_given_a_list_runs_twice_on_one_thread(saver):
    from langgraph.func import entrypoint

    @entrypoint(checkpointer=saver)
    def echo(items: list[str]) -> list[str]:
        return items

    config = {"configurable": {"thread_id": "t"}}
    assert echo.invoke(["a"], config) == ["a"]
    assert echo.invoke(["a", "b"], config) == ["a", "b"]  # its input's base was empty


def test_list_of_every_thread_is_newest_first_across_threads(saver):
    for thread_id in ("zzz-old", "aaa-old", "zzz-new", "aaa-new"):
        put(saver, thread_id, {"x": 1}, {"x": "1"})
    listed = [t.config["configurable"]["thread_id"] for t in saver.list(None)]
    assert listed == ["aaa-new", "zzz-new", "aaa-old", "zzz-old"]
    assert [t.config["configurable"]["thread_id"] for t in saver.list(None, limit=2)] == [
        "aaa-new", "zzz-new"]


def test_value_bytes_beyond_the_budget_are_read_back_from_the_log(saver, monkeypatch):
    from fsstore.integrations import langgraph_checkpoint

    monkeypatch.setattr(langgraph_checkpoint, "_HELD_BYTES", 50_000)
    states = [{"step": step, "blob": "x" * 20_000 + str(step)} for step in range(8)]
    parent = None
    for step, state in enumerate(states):
        parent = put(saver, "t", {"state": state, "log": [f"m{n}" for n in range(step + 1)]},
                     {"state": str(step + 1), "log": str(step + 1)}, parent=parent)
    thread = saver.threads["t"]
    assert thread.held_bytes <= 50_000 + 21_000  # the budget, and the newest value
    history = [t.checkpoint["channel_values"] for t in saver.list(generate_config("t"))]
    assert [h["state"] for h in history] == states[::-1]
    assert [h["log"] for h in history] == [[f"m{n}" for n in range(k)]
                                           for k in range(8, 0, -1)]
    assert thread.held_bytes <= 50_000 + 21_000
    with FsstoreSaver(saver.store.path) as fresh:  # a log read from the start
        assert [t.checkpoint["channel_values"] for t in fresh.list(
            generate_config("t"))] == history
        assert fresh.threads["t"].held_bytes <= 50_000 + 21_000


def test_each_channel_value_is_stored_once_per_version(saver):
    config = generate_config("t")
    checkpoint = generate_checkpoint(channel_values={"a": "A", "b": "B"})
    checkpoint["channel_versions"] = {"a": "1", "b": "1"}
    first = saver.put(config, checkpoint, generate_metadata(), {"a": "1", "b": "1"})
    checkpoint = generate_checkpoint(channel_values={"a": "A", "b": "B2"})
    checkpoint["channel_versions"] = {"a": "1", "b": "2"}
    config["configurable"]["checkpoint_id"] = first["configurable"]["checkpoint_id"]
    saver.put(config, checkpoint, generate_metadata(step=1), {"b": "2"})
    assert [(r["ch"], r["v"]) for r in records(saver, "t", "langgraph.value")] == [
        ("a", "1"), ("b", "1"), ("b", "2")]
    assert saver.get_tuple(generate_config("t")).checkpoint["channel_values"] == {
        "a": "A", "b": "B2"}


def test_serializer_output_is_kept_as_opaque_bytes(tmp_path, monkeypatch):
    class Opaque:
        def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
            return "pickle", pickle.dumps(obj)

        def loads_typed(self, data: tuple[str, bytes]) -> Any:
            return pickle.loads(data[1])

    with FsstoreSaver(tmp_path / "store", serde=Opaque()) as saver:
        put(saver, "t", {"secret": {"k": 1}}, {"secret": "1"})
        (stored,) = records(saver, "t", "langgraph.value")
        assert (stored["t"], stored["b"]) == ("pickle", pickle.dumps({"k": 1}))
        with FsstoreSaver(saver.store.path) as plain:  # never unpickles on its own
            monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
            with pytest.raises(Exception):  # noqa: B017 - the default serde refuses it
                plain.get_tuple(generate_config("t"))


def test_a_repeated_task_write_is_stored_once_and_special_channels_replace(saver):
    config = put(saver, "t", {}, {})
    saver.put_writes(config, [("a", 1), ("b", 2)], "task-1")
    saver.put_writes(config, [("a", 10), ("b", 20)], "task-1")  # a retry: same (task, idx)
    saver.put_writes(config, [(ERROR, "boom")], "task-2")
    saver.put_writes(config, [(ERROR, "boom again"), (INTERRUPT, "ask")], "task-2")
    assert len(records(saver, "t", "langgraph.writes")) == 3
    writes = saver.get_tuple(config).pending_writes
    assert sorted(writes) == sorted([("task-1", "a", 1), ("task-1", "b", 2),
                                     ("task-2", ERROR, "boom again"),
                                     ("task-2", INTERRUPT, "ask")])


def test_a_task_write_another_saver_stored_meanwhile_is_not_stored_again(tmp_path):
    with FsstoreSaver(tmp_path / "s") as one, FsstoreSaver(tmp_path / "s") as two:
        config = put(one, "t", {}, {})
        dumps = one.serde.dumps_typed

        def and_meanwhile(value: Any) -> Any:
            if value == "mine":  # the other saver stores the same (task, idx) first
                two.put_writes(config, [("a", "theirs")], "task-1")
            return dumps(value)
        one.serde.dumps_typed = and_meanwhile
        one.put_writes(config, [("a", "mine")], "task-1")
        assert len(records(one, "t", "langgraph.writes")) == 1
        assert one.get_tuple(config).pending_writes == [("task-1", "a", "theirs")]


# --- thread ids ---

@pytest.mark.parametrize("thread_id", ["../../etc/passwd", "a/b:c", "NUL", "\x00", "é" * 300])
def test_a_thread_id_never_reaches_a_path(saver, thread_id):
    put(saver, thread_id, {"x": 1}, {"x": "1"})
    session_id = thread_session_id(thread_id)
    assert session_id == session_id_for("lg-thread", thread_id)
    assert session_id.startswith("lg-thread-") and len(session_id) <= len("lg-thread-") + 74
    assert os.listdir(os.path.join(saver.store.path, "sessions")) == [session_id]
    assert saver.store.read_session(session_id).metadata == {
        "framework": "langgraph", "framework_id": thread_id, "kind": "thread"}
    assert saver.store.read_session(session_id).title.startswith("LangGraph thread ")
    (listed,) = saver.list(None)
    assert listed.config["configurable"]["thread_id"] == thread_id


def test_session_id_kind_is_checked():
    with pytest.raises(fsstore.InvalidSessionId):
        session_id_for("../x", "t")


# --- several savers, copies, pruning ---

def test_two_savers_on_one_store_see_each_others_checkpoints(tmp_path):
    with FsstoreSaver(tmp_path / "s") as one, FsstoreSaver(tmp_path / "s") as two:
        first = put(one, "shared", {"n": 1}, {"n": "1"})
        assert two.get_tuple(generate_config("shared")).checkpoint["channel_values"] == {"n": 1}
        second = put(two, "shared", {"n": 2}, {"n": "2"}, parent=first)
        put(one, "shared", {"n": 3}, {"n": "3"}, parent=second)
        assert [t.checkpoint["channel_values"]["n"] for t in two.list(
            generate_config("shared"))] == [3, 2, 1]


def test_copy_thread_is_a_fork_sharing_the_history(saver):
    config = put(saver, "source", {"n": 1}, {"n": "1"})
    saver.put_writes(config, [("n", 2)], "task")
    saver.copy_thread("source", "copy")
    copied = saver.get_tuple(generate_config("copy"))
    assert copied.checkpoint["channel_values"] == {"n": 1}
    assert copied.pending_writes == [("task", "n", 2)]
    assert copied.config["configurable"]["thread_id"] == "copy"
    lineage = saver.store.lineage(thread_session_id("copy"))
    assert lineage.ancestors[0].parent == thread_session_id("source")
    with pytest.raises(fsstore.SessionExists):
        saver.copy_thread("source", "copy")


def test_prune_keeps_the_latest_and_refuses_unknown_strategies(saver):
    first = put(saver, "t", {"n": 1}, {"n": "1"})
    latest = put(saver, "t", {"n": 2}, {"n": "2"}, parent=first)
    saver.prune(["t"])
    assert [t.config for t in saver.list(generate_config("t"))] == [latest]
    with pytest.raises(fsstore.InvalidSetting):
        saver.prune(["t"], strategy="keep_some")
    saver.prune(["t"], strategy="delete")
    assert not saver.store.has_session(thread_session_id("t"))


def test_async_methods_run_in_a_worker_thread(saver, monkeypatch):
    seen = []
    real = FsstoreSaver.get_tuple

    def spy(self: FsstoreSaver, config: Any) -> Any:
        seen.append(threading.get_ident())
        return real(self, config)

    monkeypatch.setattr(FsstoreSaver, "get_tuple", spy)
    asyncio.run(saver.aget_tuple(generate_config("t")))
    assert seen and seen[0] != threading.get_ident()


def test_import_fsstore_does_not_import_langgraph():
    code = "import sys, fsstore; sys.exit('langgraph' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_a_thread_deleted_and_made_again_elsewhere_is_read_afresh(tmp_path):
    with FsstoreSaver(tmp_path / "s") as one, FsstoreSaver(tmp_path / "s") as two:
        put(one, "t", {"n": 1}, {"n": "1"})
        two.delete_thread("t")
        put(two, "t", {"n": 2}, {"n": "2"})  # as many records as the first thread had
        assert one.get_tuple(generate_config("t")).checkpoint["channel_values"] == {"n": 2}


def test_a_tail_whose_base_is_missing_is_reported_as_damage(saver):
    put(saver, "t", {"items": [1]}, {"items": "1"})
    with saver.store.open_session(thread_session_id("t"), shared=True) as session:
        session.append({"kind": "langgraph.value", "ns": "", "ch": "items", "v": "2",
                        "t": "msgpack", "b": b"\x91\x02", "base": "0"})
        session.append({"kind": "langgraph.checkpoint", "ns": "", "id": "2" * 36,
                        "parent": None, "t": "msgpack", "b": b"\x80", "mt": "msgpack",
                        "mb": b"\x80", "cv": {"items": "2"}, "run": None})
    with pytest.raises(fsstore.CorruptionError, match="version '0'"):
        saver.get_tuple(generate_config("t"))


def test_a_list_of_items_that_do_not_compare_is_stored_whole(saver):
    import numpy as np

    first = put(saver, "t", {"arrays": [np.zeros(2)]}, {"arrays": "1"})
    put(saver, "t", {"arrays": [np.ones(2), np.ones(3)]}, {"arrays": "2"}, parent=first)
    assert ["base" in r for r in records(saver, "t", "langgraph.value")] == [False, False]
    (a, b) = saver.get_tuple(generate_config("t")).checkpoint["channel_values"]["arrays"]
    assert a.tolist() == [1, 1] and b.tolist() == [1, 1, 1]


def test_subgraph_checkpoints_live_in_their_namespaces(saver):
    def inner(state: State) -> State:
        return {"messages": [AIMessage(content="from the subgraph")]}

    sub = StateGraph(State)
    sub.add_node("inner", inner)
    sub.add_edge(START, "inner")
    sub.add_edge("inner", END)
    builder = StateGraph(State)
    builder.add_node("sub", sub.compile())
    builder.add_edge(START, "sub")
    builder.add_edge("sub", END)
    graph = builder.compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "nested"}}
    assert contents(graph.invoke({"messages": [HumanMessage("go")]}, config)) == [
        "go", "from the subgraph"]
    namespaces = {t.config["configurable"]["checkpoint_ns"] for t in saver.list(config)}
    assert "" in namespaces and any(ns.startswith("sub:") for ns in namespaces)


def test_prune_keeps_what_a_delta_channel_is_rebuilt_from(saver):
    from langgraph.channels import DeltaChannel

    def extend(state: list[str], writes: list[Any]) -> list[str]:
        out = list(state)
        for write in writes:
            out.extend(write if isinstance(write, list) else [write])
        return out

    Logged = TypedDict(  # noqa: UP013 - a class here could not resolve its annotations
        "Logged", {"log": Annotated[list, DeltaChannel(extend, snapshot_frequency=3)]})

    def node(state: dict[str, Any]) -> dict[str, Any]:
        return {"log": [f"n{len(state['log'])}"]}

    builder = StateGraph(Logged)
    builder.add_node("node", node)
    builder.add_edge(START, "node")
    builder.add_edge("node", END)
    graph = builder.compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "delta"}}
    for turn in range(5):
        graph.invoke({"log": [f"in{turn}"]}, config)
    before = graph.get_state(config).values
    saver.prune(["delta"])
    assert 1 < len(list(saver.list(config))) < 15  # the snapshot's descendants stay
    assert graph.get_state(config).values == before


def test_threads_take_the_durability_given(tmp_path):
    with FsstoreSaver(tmp_path / "s", durability="fsync") as saver:
        put(saver, "t", {"n": 1}, {"n": "1"})
        assert saver.threads["t"].session.durability == fsstore.Durability("fsync")


def test_another_process_continues_a_thread(saver):
    first = put(saver, "shared", {"messages": ["a"]}, {"messages": "1"})
    child = """
import sys
from langgraph.checkpoint.conformance.test_utils import (
    generate_checkpoint, generate_config, generate_metadata)
from fsstore.integrations.langgraph import FsstoreSaver
with FsstoreSaver(sys.argv[1]) as saver:
    parent = saver.get_tuple(generate_config("shared"))
    config = generate_config("shared", checkpoint_id=parent.config["configurable"]["checkpoint_id"])
    checkpoint = generate_checkpoint(channel_values={"messages": ["a", "b"]})
    checkpoint["channel_versions"] = {"messages": "2"}
    saver.put(config, checkpoint, generate_metadata(step=1), {"messages": "2"})
"""
    subprocess.run([sys.executable, "-c", child, saver.store.path], check=True)
    latest = saver.get_tuple(generate_config("shared"))
    assert latest.checkpoint["channel_values"] == {"messages": ["a", "b"]}
    assert latest.parent_config == first
    assert records(saver, "shared", "langgraph.value")[-1]["base"] == "1"


def test_a_refused_put_writes_nothing(saver):
    first = put(saver, "t", {"items": [1]}, {"items": "1"})
    head = saver.store.read_session(thread_session_id("t")).head

    class Unserializable:
        pass

    with pytest.raises(Exception):  # noqa: B017 - the serializer's own error
        put(saver, "t", {"items": [1, 2], "bad": Unserializable()},
            {"items": "2", "bad": "2"}, parent=first)
    assert saver.store.read_session(thread_session_id("t")).head == head
    assert ("", "items", "2") not in saver.threads["t"].decoded
    assert saver.get_tuple(generate_config("t")).checkpoint["channel_values"] == {"items": [1]}
