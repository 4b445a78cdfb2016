"""``fsstore show`` reading message records, ``fsstore usage``, and the demo store's
conversation recorded through the messages API."""

from __future__ import annotations

import json
import os

import pytest

import fsstore
from fsstore import FilePart, Message, TextPart
from fsstore.cli import main
from fsstore.cli.usage import money


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("cli") / "demo")
    assert main(["demo", path]) == 0
    store = fsstore.open_store(path, create=False)
    return path, store, store.session_ids()


def test_the_demo_records_its_conversation_as_messages_with_models_usage_and_cost(demo):
    _, store, (session_id, fork_id, sub_id) = demo
    reader = store.read_session(session_id)
    messages = reader.messages.all()
    assert [m.role for m in messages[:3]] == ["user", "assistant", "tool"]
    assert {m.role for m in messages} == {"user", "assistant", "tool"}
    first = messages[1]
    assert first.metadata.model == "claude-sonnet-4" and first.metadata.provider == "anthropic"
    assert first.metadata.finish_reason == "tool_calls" and first.metadata.latency == 1.4
    assert first.metadata.usage.input == 812 and first.metadata.cost.currency == "USD"
    assert [type(p).__name__ for p in first.parts] == ["ReasoningPart", "TextPart",
                                                       "ToolCallPart"]
    assert messages[2].tool_results[0].is_error
    assert any(isinstance(p, FilePart) for p in messages[2].parts)
    edited = [m for m in messages if m.version == 2]
    assert len(edited) == 1 and [v.op for v in reader.messages.history(edited[0].id)] == [
        "add", "edit"]
    stats = reader.stats()
    assert (stats.turns, stats.tool_calls, stats.tool_errors) == (3, 6, 1)
    assert stats.messages_by_role == {"assistant": 9, "tool": 6, "user": 3}
    sub = store.read_session(sub_id)
    assert list(sub.usage(by="model")) == ["gpt-4.1-mini"]
    assert sub.messages.last(1)[0].text.startswith("Two callers")
    assert list(store.usage(by="model")) == ["claude-sonnet-4", "gpt-4.1-mini"]
    # The fork shares turn 1, whose usage the store counts once.
    assert fork_id not in store.usage(by="session")
    assert store.usage()[""].input == reader.usage()[""].input + sub.usage()[""].input


def test_show_renders_messages_parts_tool_results_turn_usage_and_totals(demo, capsys):
    path, store, (session_id, _, sub_id) = demo
    code, out, _ = run(capsys, "--store", path, "show", session_id)
    assert code == 0
    assert "assistant    msg_" in out and "claude-sonnet-4 (anthropic), tool_calls, " \
        "812 in / 31 out (reasoning 19), 0.002901 USD, 1.40 s" in out
    assert "[reasoning, signed] The user reports a CI failure" in out
    lines = out.splitlines()
    call = next(i for i, line in enumerate(lines) if "call run_tests(" in line)
    assert '{"path":"billing/tests","args":["-x","-q"]}' in lines[call]
    assert lines[call + 1].strip().startswith("-> error: ")  # the result under its call
    assert "results of call_0001: under the calls above" in out
    assert "[file text/plain pytest-output.txt, 400 B, blob " in out
    assert "edited (version 2)" in out and '[data test_report] {"passed":42' in out
    assert out.count("turn usage: ") == 3
    assert "totals: 18 messages (assistant 9, tool 6, user 3), 6 tool calls (1 failed), " \
        "3 finished turns" in out
    assert "  model claude-sonnet-4: " in out
    assert f"spawned {sub_id} at seq " in out
    code, out, _ = run(capsys, "--store", path, "show", sub_id)
    assert "gpt-4.1-mini (openai)" in out and "call grep(" in out


def test_show_renders_deletes_files_orphans_and_escapes_control_characters(tmp_path, capsys):
    store = fsstore.open_store(tmp_path / "s")
    with store.create_session("s") as session:
        session.messages.append(Message(role="user", id="u1", parts=[
            TextPart(text="\x1b[31mred\nfake line"),
            FilePart(media_type="image/png", name="a.png", data=b"\x89PNG"),
            FilePart(media_type="image/png", url="https://example.com/b.png")]))
        session.messages.append({"role": "tool", "id": "t1", "parts": [
            {"type": "tool_result", "call_id": "elsewhere", "output": "late", "orphan": True}]})
        session.messages.append({"role": "assistant", "id": "a1", "parts": [
            {"type": "tool_call", "call_id": "c9", "name": "wait", "arguments": {}}]})
        session.messages.delete("u1")
        session.append({"role": "user", "content": "a plain event"}, kind="message")
    code, out, _ = run(capsys, "--store", store.path, "show", "s")
    assert code == 0 and "\x1b" not in out
    assert "\\x1b[31mred fake line" in out  # escaped, and on its own line
    assert not any(line.startswith("fake line") for line in out.splitlines())
    assert "[file image/png a.png, 4 B inline]" in out
    assert "[file image/png, url https://example.com/b.png]" in out
    assert "result of elsewhere, orphan -> ok: late" in out
    assert "-> no result in this session" in out
    assert "deleted      u1 (a user message)" in out
    assert "message      user: a plain event" in out  # other events print as before
    assert "totals: 2 messages (assistant 1, tool 1), 1 tool calls (0 failed)" in out


def test_show_of_a_session_without_messages_prints_no_totals(tmp_path, capsys):
    store = fsstore.open_store(tmp_path / "s")
    with store.create_session("s") as session:
        session.append({"role": "user", "content": "hi"}, kind="message")
    code, out, _ = run(capsys, "--store", store.path, "show", "s")
    assert code == 0 and "totals:" not in out and "turn usage" not in out


def test_usage_prints_an_aligned_table_by_model_session_and_day(demo, capsys):
    path, store, (session_id, _, sub_id) = demo
    code, out, _ = run(capsys, "--store", path, "usage")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["USAGE", "INPUT", "OUTPUT", "CACHED",
                                              "CACHE-WRITE", "REASONING", "MESSAGES", "COST"]
    total = store.usage()[""]
    assert lines[1].startswith("all sessions") and f"{total.input:,}" in lines[1]
    assert lines[1].endswith(f"{money(total.cost['USD'])} USD")
    code, out, _ = run(capsys, "--store", path, "usage", "--by", "model")
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == ["MODEL", "claude-sonnet-4",
                                                   "gpt-4.1-mini", "total"]
    # aligned: every number column ends where its heading ends
    end = lines[0].index("MESSAGES") + len("MESSAGES")
    assert all(line[end - 1].isdigit() and line[end] == " " for line in lines[1:])
    code, out, _ = run(capsys, "--store", path, "usage", "--by", "session")
    assert [line.split()[0] for line in out.splitlines()[1:]] == [session_id, sub_id, "total"]
    code, out, _ = run(capsys, "--store", path, "usage", sub_id)
    assert out.splitlines()[1].startswith(sub_id) and "0.000309 USD" in out
    code, out, _ = run(capsys, "--store", path, "usage", "--by", "day")
    assert out.splitlines()[0].startswith("DAY (UTC)") and len(out.splitlines()) == 2


def test_usage_json_holds_every_total(demo, capsys):
    path, store, (_, _, sub_id) = demo
    code, out, _ = run(capsys, "--store", path, "usage", "--by", "model", "--json")
    printed = json.loads(out)
    assert code == 0 and printed["by"] == "model" and printed["skipped"] == {}
    want = store.usage(by="model")["gpt-4.1-mini"]
    assert printed["groups"]["gpt-4.1-mini"] == {
        "input": want.input, "output": want.output, "cached_input": want.cached_input,
        "cache_write": 0, "reasoning": 0, "total_tokens": want.total_tokens,
        "messages": 2, "cost": want.cost}
    assert printed["total"]["input"] == store.usage()[""].input
    code, out, _ = run(capsys, "--store", path, "usage", sub_id, "--json")
    assert json.loads(out)["session"] == sub_id


def test_usage_names_a_session_it_cannot_read_and_exits_1(tmp_path, capsys):
    store = fsstore.open_store(tmp_path / "s")
    for name in ("good", "bad"):
        with store.create_session(name) as session:
            session.messages.append({"role": "assistant", "metadata": {
                "model": "m", "usage": {"input": 7}, "cost": {"amount": 0.5}}})
    with open(os.path.join(store.path, "sessions", "bad", "session.json"), "w") as handle:
        handle.write("{not json")
    code, out, err = run(capsys, "--store", store.path, "usage")
    assert code == 1 and "all sessions      7" in out
    assert err.startswith("fsstore: left out session bad, which cannot be read: ")
    assert "fsstore verify" in err


def test_usage_of_a_store_without_usage_says_so(tmp_path, capsys):
    store = fsstore.open_store(tmp_path / "s")
    store.create_session("quiet").close()
    code, out, _ = run(capsys, "--store", store.path, "usage")
    assert code == 0 and out.startswith("no usage recorded in ")
    code, _, err = run(capsys, "--store", store.path, "usage", "nowhere")
    assert code == 2 and "nowhere" in err


def test_money_shows_two_decimals_or_as_many_as_needed():
    assert [money(x) for x in (2.25, 3, 0.0042, 1234.5, 0.0000004)] == [
        "2.25", "3.00", "0.0042", "1,234.50", "0.00"]
