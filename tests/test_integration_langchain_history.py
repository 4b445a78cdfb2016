"""FsstoreChatMessageHistory: LangChain messages kept as fsstore messages, read back
exactly, and a RunnableWithMessageHistory conversation on it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from typing import Any

import pytest

pytest.importorskip("langchain_core")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel  # noqa: E402
from langchain_core.messages import (  # noqa: E402
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    HumanMessageChunk,
    RemoveMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder  # noqa: E402
from langchain_core.runnables.history import RunnableWithMessageHistory  # noqa: E402

import fsstore  # noqa: E402
from fsstore import layout  # noqa: E402
from fsstore.integrations.langchain import (  # noqa: E402
    FsstoreChatMessageHistory,
    from_fsstore,
    session_id_for,
)

# --- LangChain message shapes ------------------------------------------------------------

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=10)
json_scalar = (st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1)
               | st.floats(allow_nan=False, allow_infinity=False) | text)
json_value = st.recursive(json_scalar, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(text, inner, max_size=3), max_leaves=6)
json_object = st.dictionaries(text, json_value, max_size=3)
message_id = st.none() | st.sampled_from(["m1", "m2", "run-7"]) | text | st.just("a\nb")
call_id = st.none() | st.sampled_from(["call_1", "call_2", "toolu_9"]) | text
block = st.one_of(
    text,
    st.builds(lambda t, extra: {"type": "text", "text": t, **extra}, text,
              st.dictionaries(st.sampled_from(["id", "annotations", "extras"]), json_value,
                              max_size=2)),
    st.builds(lambda t: {"type": "reasoning", "reasoning": t}, text),
    st.builds(lambda t, s: {"type": "thinking", "thinking": t, **s}, text,
              st.just({}) | st.builds(lambda sig: {"signature": sig}, text)),
    st.builds(lambda url: {"type": "image", "url": url, "mime_type": "image/png"}, text),
    st.builds(lambda t: {"type": "text", "text": t}, json_scalar),  # not a str text
    json_object,
)
content = text | st.lists(block, max_size=4)
common = {"content": content, "additional_kwargs": json_object, "response_metadata":
          json_object | st.fixed_dictionaries({"model_name": st.sampled_from(["gpt-x", "m"]),
                                               "finish_reason": st.sampled_from(
                                                   ["stop", "tool_calls", "odd"])}),
          "name": st.none() | text, "id": message_id}
tool_call = st.fixed_dictionaries({"name": text, "args": json_object, "id": call_id})
usage = st.none() | st.builds(
    lambda i, o, total, details: {"input_tokens": i, "output_tokens": o,
                                  "total_tokens": i + o if total is None else total,
                                  **details},
    st.integers(0, 10**6), st.integers(0, 10**6), st.none() | st.integers(0, 10**7),
    st.just({}) | st.fixed_dictionaries(
        {"input_token_details": st.fixed_dictionaries({"cache_read": st.integers(0, 99)}),
         "output_token_details": st.fixed_dictionaries({"reasoning": st.integers(0, 99)})}))
ai_fields = {**common, "tool_calls": st.lists(tool_call, max_size=2),
             "invalid_tool_calls": st.lists(st.fixed_dictionaries(
                 {"name": st.none() | text, "args": st.none() | text, "id": call_id,
                  "error": st.none() | text, "type": st.just("invalid_tool_call")}),
                 max_size=1),
             "usage_metadata": usage}
messages = st.one_of(
    st.builds(HumanMessage, **common),
    st.builds(SystemMessage, **common),
    st.builds(AIMessage, **ai_fields),
    st.builds(AIMessageChunk, **ai_fields),
    st.builds(HumanMessageChunk, **common),
    st.builds(ToolMessage, **common, tool_call_id=st.sampled_from(["call_1", "x"]) | text,
              artifact=json_value, status=st.sampled_from(["success", "error"])),
    st.builds(FunctionMessage, **{**common, "name": text}),
    st.builds(ChatMessage, **common, role=st.sampled_from(["user", "assistant", "critic"])),
)


batches_of_messages = st.lists(st.lists(messages, max_size=4), min_size=1, max_size=3)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=batches_of_messages)
def test_every_langchain_message_reads_back_equal(batches: list[list[BaseMessage]]) -> None:
    _check_round_trip(batches)


@pytest.mark.long
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=batches_of_messages)
def test_every_langchain_message_reads_back_equal_long(batches: list[list[BaseMessage]]
                                                       ) -> None:
    _check_round_trip(batches)


def _check_round_trip(batches: list[list[BaseMessage]]) -> None:
    with tempfile.TemporaryDirectory() as root, \
            FsstoreChatMessageHistory("thread:1/../x", root) as history:
        for batch in batches:
            history.add_messages(batch)
        added = [message for batch in batches for message in batch]
        assert history.messages == added
        with FsstoreChatMessageHistory("thread:1/../x", root) as again:
            assert again.messages == added  # from the disk, through another object


def test_a_value_json_cannot_hold_exactly_is_refused_and_nothing_written(tmp_path) -> None:
    with FsstoreChatMessageHistory("t", tmp_path) as history:
        history.add_message(HumanMessage("kept"))
        for bad in (HumanMessage("x", additional_kwargs={"pair": (1, 2)}),
                    AIMessage("x", response_metadata={"raw": b"\x00"}),
                    ToolMessage("x", tool_call_id="c", artifact={1, 2}),
                    RemoveMessage(id="m1")):  # a command to LangGraph, not a message
            with pytest.raises(fsstore.InvalidMessage):
                history.add_messages([HumanMessage("batched"), bad])
        assert history.messages == [HumanMessage("kept")]


def test_messages_are_typed_fsstore_messages_with_usage(tmp_path) -> None:
    store = fsstore.open_store(tmp_path)
    with FsstoreChatMessageHistory("chat-1", store) as history:
        history.add_messages([
            SystemMessage("be brief"),
            HumanMessage("weather?"),
            AIMessage("", tool_calls=[{"name": "weather", "args": {"city": "Oslo"},
                                       "id": "call_1"}],
                      usage_metadata={"input_tokens": 12, "output_tokens": 5,
                                      "total_tokens": 17},
                      response_metadata={"model_name": "gpt-x", "finish_reason": "tool_calls"}),
            ToolMessage("rain", tool_call_id="call_1"),
            AIMessage("It rains.", usage_metadata={"input_tokens": 20, "output_tokens": 3,
                                                   "total_tokens": 23}),
        ])
        session_id = history.fsstore_session_id
    reader = store.read_session(session_id)
    stored = reader.messages.all()
    assert [m.role for m in stored] == ["system", "user", "assistant", "tool", "assistant"]
    call = stored[2].tool_calls[0]
    assert (call.call_id, call.name, call.arguments) == ("call_1", "weather", {"city": "Oslo"})
    assert stored[2].metadata.model == "gpt-x"
    assert stored[2].metadata.finish_reason == "tool_calls"
    result = stored[3].tool_results[0]
    assert (result.call_id, result.output, result.orphan) == ("call_1", "rain", False)
    assert stored[4].text == "It rains."
    totals = reader.usage()[""]
    assert (totals.input, totals.output) == (32, 8)


def test_messages_other_code_appended_read_back_by_role(tmp_path) -> None:
    store = fsstore.open_store(tmp_path)
    with FsstoreChatMessageHistory("mixed", store) as history:
        with store.open_session(history.fsstore_session_id, shared=True) as session:
            session.messages.append(fsstore.Message.of_text("user", "hello", id="u1"))
            session.messages.append({"role": "assistant", "id": "a1", "parts": [
                {"type": "text", "text": "calling"},
                {"type": "tool_call", "call_id": "c1", "name": "f", "arguments": {"x": 1}}]})
            session.messages.append({"role": "tool", "id": "t1", "parts": [
                {"type": "tool_result", "call_id": "c1", "output": "42"}]})
            session.messages.append({"role": "assistant", "id": "a2", "parts": [
                {"type": "tool_call", "call_id": "c2", "name": "f", "arguments": {}},
                {"type": "tool_call", "call_id": "c3", "name": "g", "arguments": {}}]})
            session.messages.append({"role": "tool", "id": "t2", "parts": [
                {"type": "tool_result", "call_id": "c2", "output": "two", "is_error": True},
                {"type": "tool_result", "call_id": "c3", "output": ["three"]}]})
        assert history.messages == [
            HumanMessage("hello", id="u1"),
            AIMessage("calling", id="a1", tool_calls=[{"name": "f", "args": {"x": 1},
                                                       "id": "c1"}]),
            ToolMessage("42", tool_call_id="c1", id="t1"),
            AIMessage("", id="a2", tool_calls=[{"name": "f", "args": {}, "id": "c2"},
                                               {"name": "g", "args": {}, "id": "c3"}]),
            ToolMessage("two", tool_call_id="c2", id="t2", status="error"),
            ToolMessage(["three"], tool_call_id="c3", id="t2"),
        ]
        assert from_fsstore(store.read_session(history.fsstore_session_id)
                            .messages.get("u1")) == HumanMessage("hello", id="u1")


def test_a_repeated_langchain_id_and_an_unanswered_tool_result_are_kept(tmp_path) -> None:
    with FsstoreChatMessageHistory("t", tmp_path) as history:
        first = [HumanMessage("a", id="same"), AIMessage("b", id="same"),
                 ToolMessage("late", tool_call_id="never-called")]
        history.add_messages(first)
        history.add_messages(first[:1])
        history.clear()
        history.add_messages(first)
        assert history.messages == first


def test_clear_empties_the_history(tmp_path) -> None:
    with FsstoreChatMessageHistory("t", tmp_path) as history:
        history.add_messages([HumanMessage("a"), AIMessage("b")])
        history.clear()
        assert history.messages == []
        history.add_message(HumanMessage("c"))
        assert history.messages == [HumanMessage("c")]


def test_async_methods_match_the_sync_ones(tmp_path) -> None:
    async def run() -> list[BaseMessage]:
        with FsstoreChatMessageHistory("t", tmp_path) as history:
            await history.aadd_messages([HumanMessage("a"), AIMessage("b")])
            await history.aclear()
            await history.aadd_messages([HumanMessage("c")])
            return await history.aget_messages()
    assert asyncio.run(run()) == [HumanMessage("c")]


def _chain(root: Any) -> RunnableWithMessageHistory:
    model = GenericFakeChatModel(messages=iter([AIMessage("Hi Ada."),
                                                AIMessage("Your name is Ada.")] * 2))
    prompt = ChatPromptTemplate.from_messages([
        ("system", "You are terse."), MessagesPlaceholder("history"), ("human", "{question}")])
    return RunnableWithMessageHistory(
        prompt | model, lambda session_id: FsstoreChatMessageHistory(session_id, root),
        input_messages_key="question", history_messages_key="history")


def _ids_dropped(messages: list[BaseMessage]) -> list[tuple[str, Any]]:
    return [(message.type, message.content) for message in messages]


# LangChain 1.x deprecates RunnableWithMessageHistory in favour of LangGraph's persistence
# (fsstore.integrations.langgraph), but still ships and documents it.
_deprecated = pytest.mark.filterwarnings("ignore:RunnableWithMessageHistory is deprecated")


@_deprecated
def test_runnable_with_message_history_keeps_the_conversation(tmp_path) -> None:
    chain = _chain(tmp_path)
    config = {"configurable": {"session_id": "user:ada/chat#1"}}
    chain.invoke({"question": "I am Ada."}, config=config)
    reply = chain.invoke({"question": "What is my name?"}, config=config)
    assert reply.content == "Your name is Ada."
    with FsstoreChatMessageHistory("user:ada/chat#1", tmp_path) as history:
        assert _ids_dropped(history.messages) == [
            ("human", "I am Ada."), ("ai", "Hi Ada."),
            ("human", "What is my name?"), ("ai", "Your name is Ada.")]


@_deprecated
def test_runnable_with_message_history_async(tmp_path) -> None:
    chain = _chain(tmp_path)
    config = {"configurable": {"session_id": "s"}}

    async def run() -> None:
        await chain.ainvoke({"question": "I am Ada."}, config=config)
        await chain.ainvoke({"question": "What is my name?"}, config=config)
    asyncio.run(run())
    with FsstoreChatMessageHistory("s", tmp_path) as history:
        assert [m.type for m in history.messages] == ["human", "ai", "human", "ai"]


@pytest.mark.parametrize("hostile", ["../../etc/passwd", "a/b\\c", "\x00", "CON", "",
                                     ".", "x" * 500, "日本語:スレッド"])
def test_hostile_ids_never_reach_a_path(tmp_path, hostile: str) -> None:
    store = fsstore.open_store(tmp_path / "store")
    with FsstoreChatMessageHistory(hostile, store) as history:
        history.add_message(HumanMessage("hi"))
        session_id = history.fsstore_session_id
    assert session_id == session_id_for("lc-chat", hostile)
    assert layout.check_session_id(session_id, new=True) == session_id
    assert os.listdir(tmp_path) == ["store"]
    info = {info.id: info for info in store.list_sessions()}[session_id]
    assert info.metadata["framework_id"] == hostile
    assert info.metadata["framework"] == "langchain"


def test_import_fsstore_imports_no_langchain() -> None:
    code = ("import sys, fsstore, fsstore.integrations\n"
            "assert not [m for m in sys.modules if m.startswith('langchain')], sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_different_ids_and_kinds_get_different_sessions() -> None:
    ids = {session_id_for(kind, name) for kind in ("lc-chat", "lc-kv")
           for name in ("a/b", "a_b", "a:b", "A/B")}
    assert len(ids) == 8


def test_two_processes_append_to_one_history(tmp_path) -> None:
    code = ("import sys\nfrom langchain_core.messages import HumanMessage\n"
            "from fsstore.integrations.langchain import FsstoreChatMessageHistory as H\n"
            "with H('shared', sys.argv[1]) as h:\n"
            "    h.add_message(HumanMessage('from the child'))\n")
    with FsstoreChatMessageHistory("shared", tmp_path) as history:
        history.add_message(HumanMessage("from the parent"))
        subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
        history.add_message(HumanMessage("parent again"))
        assert [m.content for m in history.messages] == [
            "from the parent", "from the child", "parent again"]


def test_twenty_concurrent_async_adds_lose_nothing(tmp_path) -> None:
    async def run() -> list[BaseMessage]:
        with FsstoreChatMessageHistory("busy", tmp_path) as history:
            await asyncio.gather(*(history.aadd_messages([HumanMessage(f"q{n}"),
                                                          AIMessage(f"a{n}")])
                                   for n in range(20)))
            return await history.aget_messages()
    got = asyncio.run(run())
    assert sorted(m.content for m in got) == sorted(
        [f"q{n}" for n in range(20)] + [f"a{n}" for n in range(20)])
    pairs = [(got[i].content, got[i + 1].content) for i in range(0, 40, 2)]
    assert all(q[1:] == a[1:] for q, a in pairs)  # each batch stays whole and in order
