"""The messages API in company: readers following a writer in another process, two
shared writers, copies taken while messages are appended; forks, clears, checkpoints,
snapshots, durability modes, watch and ``fsstore cat``; and every kind of bad input,
refused with nothing changed on disk.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from conftest import tree_snapshot
from messagekit import (
    INDEX,
    MessageWorkload,
    check_reads,
    conversation,
    log_messages,
    problems,
    session_dir,
    summary,
    text,
    written_session,
)
from procs import Child, run, whole_lines

import fsstore
from fsstore import (
    INLINE_FILE_LIMIT,
    MESSAGE_RECORD,
    FsStoreError,
    InvalidMessage,
    Message,
    MessageExists,
    MessageNotFound,
)

# --- concurrency -----------------------------------------------------------------------


def follow_content(number: int) -> str:
    return f"follow {number} " + "f" * (number % 50)


def following_writer(root: str, total: str) -> None:
    """Append messages f0, f1, ... in batches of 1 to 3; every 7th is edited later."""
    session = fsstore.open_store(root).open_session("s", lock_timeout=30)
    print("READY", flush=True)
    number = 0
    while number < int(total):
        size = min(1 + number % 3, int(total) - number)
        session.messages.append_many([text("user", follow_content(number + j), f"f{number + j}")
                                      for j in range(size)])
        number += size
        if number % 7 == 0:
            session.messages.edit(text("assistant", "edited " + follow_content(number - 5),
                                       f"f{number - 5}"))
    session.close()
    print("DONE", flush=True)


def right_follow(message: Message) -> bool:
    number = int(message.id[1:])  # type: ignore[index]
    return message.text in (follow_content(number), "edited " + follow_content(number))


@pytest.mark.stress
def test_a_reader_following_a_message_writer_in_another_process_sees_a_prefix(tmp_path):
    root = tmp_path / "store"
    fsstore.open_store(root).create_session("s").close()
    total = 400
    reader = fsstore.open_store(root).read_session("s")
    seen, reads = 0, 0
    with Child.function(following_writer, str(root), total) as child:
        child.wait_for("READY")
        while seen < total:
            messages = reader.messages.all()
            assert [m.id for m in messages] == [f"f{n}" for n in range(len(messages))]
            assert all(right_follow(m) for m in messages)
            assert len(messages) >= seen, "went backwards"
            last = reader.messages.last(3)
            assert all(right_follow(m) for m in last)
            assert [m.id for m in last] == [f"f{n}" for n in range(
                int(last[0].id[1:]), int(last[0].id[1:]) + len(last))] if last else True
            assert reader.messages.count() >= len(messages)
            if messages:
                probe = messages[len(messages) // 2]
                assert right_follow(reader.messages.get(probe.id))  # type: ignore[arg-type]
            seen, reads = len(messages), reads + 1
        child.wait_for("DONE")
    assert reads > 2
    check_reads(reader)
    assert fsstore.open_store(root).verify() == []


def shared_message_writer(root: str, name: str, count: str) -> None:
    """A shared writer: appends its messages, each tool result answering the call of its
    previous message, through the same session as another shared writer."""
    session = fsstore.open_store(root).open_session("s", shared=True, lock_timeout=60)
    print("READY", flush=True)
    for number in range(int(count)):
        parts: list[dict[str, Any]] = [{"type": "tool_call", "call_id": f"{name}c{number}",
                                        "name": "run"}]
        if number:
            parts.append({"type": "tool_result", "call_id": f"{name}c{number - 1}",
                          "output": number})
        batch = [{"id": f"{name}{number}", "role": "assistant", "parts": parts}]
        if number % 5 == 0:
            batch.append(text("user", f"{name} says {number}", f"{name}{number}u"))
        session.messages.append_many(batch)
        if number % 10 == 7:
            session.messages.delete(f"{name}{number - 7}u")
    session.close()
    print("DONE", flush=True)


@pytest.mark.stress
def test_two_shared_writers_appending_messages_to_one_session_lose_none(tmp_path):
    root = tmp_path / "store"
    fsstore.open_store(root).create_session("s").close()
    count = 60
    with Child.function(shared_message_writer, str(root), "a", count) as first, \
            Child.function(shared_message_writer, str(root), "b", count) as second:
        for child in (first, second):
            child.wait_for("DONE")
    store = fsstore.open_store(root)
    reader = store.read_session("s")
    expected = check_reads(reader)
    for name in "ab":
        mine = [entry[0] for entry in expected if entry[0].startswith(name)
                and not entry[0].endswith("u")]
        assert mine == [f"{name}{n}" for n in range(count)]
    assert reader.stats().tool_calls == 2 * count
    assert store.verify() == []
    with store.open_session("s") as writer:
        check_reads(writer)
        with pytest.raises(MessageExists):
            writer.messages.append(text("user", "dup", "b7"))


def copied_writer(root: str) -> None:
    """Append messages p0, p1, ... one per call, printing ``ACK n`` after each."""
    session = fsstore.open_store(root).open_session("s", lock_timeout=30)
    print("READY", flush=True)
    number = 0
    while True:
        session.messages.append({"id": f"p{number}", "role": "assistant", "parts": [
            {"type": "text", "text": "p" * (number % 300)},
            {"type": "tool_call", "call_id": f"c{number}", "name": "x"}]})
        print("ACK", number, "END", flush=True)
        number += 1


def acked(child: Child) -> int:
    """How many messages the child has acknowledged so far."""
    child.drain()
    numbers = [int(line[1]) for line in whole_lines(child.lines) if line[0] == "ACK"]
    return max(numbers, default=-1) + 1


@pytest.mark.stress
def test_a_copy_of_a_session_taken_while_messages_are_appended_opens_as_a_prefix(tmp_path):
    root = tmp_path / "store"
    fsstore.open_store(root).create_session("s").close()
    copies: list[tuple[str, int]] = []
    with Child.function(copied_writer, str(root)) as child:
        child.wait_for("READY")
        child.wait_for("ACK")
        for number in range(4):
            before = acked(child)
            dest = str(tmp_path / f"copy{number}")
            if number % 2:
                run("import shutil, sys; shutil.copytree(sys.argv[1], sys.argv[2])",
                    str(root), dest)
            else:
                assert os.system(f"cp -r '{root}' '{dest}'") == 0
            copies.append((dest, before))
            while acked(child) < before + 20:
                child.readline()
    for dest, before in copies:
        store = fsstore.open_store(dest, create=False)
        reader = store.read_session("s")
        expected = check_reads(reader)
        ids = [entry[0] for entry in expected]
        assert ids == [f"p{n}" for n in range(len(ids))]
        assert len(ids) >= before, "a message acknowledged before the copy is missing"
        assert problems(store) == []
        with store.open_session("s") as writer:
            check_reads(writer)
            writer.messages.append({"id": "after", "role": "tool", "parts": [
                {"type": "tool_result", "call_id": f"c{len(ids) - 1}", "output": 1}]})
        check_reads(store.read_session("s"))
        assert [f for f in store.verify() if f.level == "problem" or f.path.endswith(INDEX)
                ] == []


# --- with the session's other features ---------------------------------------------------


def usage_of_log(reader: fsstore.SessionReader, at_seq: int | None = None
                 ) -> tuple[dict[str, tuple[Any, ...]], dict[str, int], int, int]:
    """Token and cost totals by model, live messages by role, tool calls and tool errors,
    folded from the log's message records as usage.py documents them (an edit replaces
    the old version's usage, a delete keeps it)."""
    current: dict[str, dict[str, Any]] = {}
    by_model: dict[str, list[Any]] = {}

    def book(message: dict[str, Any], sign: int) -> None:
        metadata = message.get("metadata") or {}
        usage, cost = metadata.get("usage") or {}, metadata.get("cost")
        if not usage and cost is None:
            return
        totals = by_model.setdefault(metadata.get("model") or "", [0] * 6 + [{}])
        for number, name in enumerate(("input", "output", "cached_input", "cache_write",
                                       "reasoning")):
            totals[number] += sign * usage.get(name, 0)
        totals[5] += sign
        if cost is not None:
            currency = cost.get("currency", "USD")
            totals[6][currency] = totals[6].get(currency, 0.0) + sign * cost["amount"]

    for event in reader.events(until_seq=at_seq, include_internal=True):
        if event.kind != MESSAGE_RECORD:
            continue
        data = event.data
        if data["op"] == "add":
            current[data["message"]["id"]] = data["message"]
            book(data["message"], 1)
        elif data["op"] == "edit":
            book(current[data["message"]["id"]], -1)
            current[data["message"]["id"]] = data["message"]
            book(data["message"], 1)
        else:
            del current[data["id"]]
    roles: dict[str, int] = {}
    calls = errors = 0
    for message in current.values():
        roles[message["role"]] = roles.get(message["role"], 0) + 1
        for part in message["parts"]:
            calls += part["type"] == "tool_call"
            errors += part["type"] == "tool_result" and bool(part.get("is_error"))
    totals = {model: (*values[:6], {k: round(v, 9) for k, v in values[6].items() if v})
              for model, values in by_model.items() if any(values[:6]) or values[6]}
    return totals, roles, calls, errors


def usage_read(reader: fsstore.SessionReader, at_seq: int | None = None
               ) -> tuple[dict[str, tuple[Any, ...]], dict[str, int], int, int]:
    totals = {model: (t.input, t.output, t.cached_input, t.cache_write, t.reasoning,
                      t.messages, {k: round(v, 9) for k, v in t.cost.items() if v})
              for model, t in reader.usage(by="model", at_seq=at_seq).items()}
    totals = {model: value for model, value in totals.items() if any(value[:6]) or value[6]}
    stats = reader.stats(at_seq=at_seq)
    return totals, stats.messages_by_role, stats.tool_calls, stats.tool_errors


def usage_workload(session: fsstore.Session) -> None:
    conversation(session, 4)
    session.messages.edit({"id": "m1c", "role": "assistant", "parts": [
        {"type": "tool_call", "call_id": "m1call", "name": "ls"}],
        "metadata": {"model": "m-3", "usage": {"input": 100, "reasoning": 4},
                     "cost": {"amount": 2.5, "currency": "EUR"}}})
    session.messages.delete("m2c")
    session.finish_turn()
    conversation(session, 2, prefix="n")
    session.messages.edit(text("user", "no usage now", "n0a"))


@pytest.mark.parametrize("at", ["inside a batch", "before an edit", "head"])
def test_a_fork_has_the_parents_messages_up_to_its_seq_then_its_own(tmp_path, at):
    store = written_session(tmp_path)  # m1u edited, m2a deleted, at the end
    parent = store.read_session("s")
    parent_messages = check_reads(parent)
    seq = {"inside a batch": parent.messages.get("m3c").seq,  # m3c and m3r: one frame
           "before an edit": parent.head - 2, "head": parent.head}[at]
    with store.fork_session("s", "f", at_seq=seq) as child:
        inherited = check_reads(child)
        assert inherited == log_messages(parent, seq)
        assert [m.id for m in child.messages.all()] == [m.id for m in parent.messages.all(
            at_seq=seq)]
        assert usage_read(child) == usage_of_log(parent, seq)
        had = {entry[0] for entry in inherited}
        later = [entry[0] for entry in parent_messages if entry[0] not in had]
        for message_id in later[:2]:  # the parent's later ids are free in the child
            child.messages.append(text("user", "the child's own", message_id))
        child.messages.append({"id": "own", "role": "tool", "parts": [
            {"type": "tool_result", "call_id": "m0call", "output": "found the call"}]})
        check_reads(child)
    check_reads(store.read_session("f"))
    assert check_reads(store.read_session("s")) == parent_messages
    assert store.verify() == []


def test_a_clear_empties_the_messages_and_frees_their_ids(tmp_path):
    store = written_session(tmp_path)
    with store.open_session("s") as writer:
        writer.clear()
        assert (writer.messages.all(), writer.messages.count(), writer.messages.last(5)) == (
            [], 0, [])
        with pytest.raises(MessageNotFound):
            writer.messages.get("m0u")
        with pytest.raises(MessageNotFound):
            writer.messages.history("m0u")
        with pytest.raises(InvalidMessage):  # the call went with the log
            writer.messages.append({"role": "tool", "parts": [
                {"type": "tool_result", "call_id": "m0call"}]})
        assert usage_read(writer) == ({}, {}, 0, 0)
        reader = store.read_session("s")
        assert reader.messages.all() == [] and reader.messages.count() == 0
        conversation(writer, 2)  # the same ids again
        check_reads(writer)
    check_reads(store.read_session("s"))
    assert store.verify() == []


def test_messages_and_usage_at_a_checkpoints_seq_are_those_of_the_checkpoint(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    with store.create_session("s") as session:
        conversation(session, 3, prefix="a")
        first = session.checkpoint("first")
        usage_workload(session)
        second = session.checkpoint("second")
        session.messages.delete("a0u")
    reader = store.read_session("s")
    for checkpoint in (first, second):
        old = log_messages(reader, checkpoint.seq)
        assert [summary(m) for m in reader.messages.last(50, at_seq=checkpoint.seq)] == old
        assert [summary(m) for m in reader.messages.last(2, at_seq=checkpoint.seq)] == old[-2:]
        assert usage_read(reader, checkpoint.seq) == usage_of_log(reader, checkpoint.seq)
    check_reads(reader, at_seqs=(first.seq, second.seq, second.seq - 1))
    assert reader.messages.get("a0u", at_seq=second.seq).text.startswith("question 0")
    assert not reader.messages.exists("a0u")


def test_usage_and_stats_read_from_snapshots_equal_the_fold_of_the_log(tmp_path):
    policy = fsstore.SnapshotPolicy(every_events=4, keep=2)
    store = fsstore.open_store(tmp_path / "store", snapshots=policy)
    with store.create_session("s") as session:
        usage_workload(session)
        assert usage_read(session) == usage_of_log(session)
    state = os.path.join(session_dir(store), "state")
    assert any(name.endswith(".snap") for name in os.listdir(state))
    reader = store.read_session("s")
    from_snapshot = usage_read(reader)
    assert from_snapshot == usage_of_log(reader)
    assert from_snapshot[0]["m-3"][6] == {"EUR": 2.5}
    assert reader.stats().turns == 1
    with store.open_session("s") as writer:  # reopened: the fold starts at a snapshot
        assert usage_read(writer) == from_snapshot
        conversation(writer, 1, prefix="z")
        assert usage_read(writer) == usage_of_log(writer)
    for name in os.listdir(state):  # without snapshots: the whole log folded
        os.unlink(os.path.join(state, name))
    assert usage_read(store.read_session("s")) == usage_of_log(store.read_session("s"))


@pytest.mark.parametrize("durability", ["none", "group", "flush", "fsync"])
def test_messages_read_right_in_every_durability_mode(tmp_path, durability):
    setting = (fsstore.Durability("none", group_commit_records=3) if durability == "group"
               else fsstore.Durability(durability))
    store = fsstore.open_store(tmp_path / "store", durability=setting)
    with store.create_session("s") as session:
        workload = MessageWorkload(3)
        for step in range(40):
            workload.run(session)
            if step % 8 == 0:
                check_reads(session)
                check_reads(store.read_session("s"))  # what the OS has: a prefix, read right
        check_reads(session)
    check_reads(store.read_session("s"))
    assert store.verify() == []


def test_watch_delivers_each_message_record_once_in_order(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    session = store.create_session("s")
    with store.read_session("s").watch(poll_interval=0.05) as watcher:
        conversation(session, 2)
        session.messages.edit(text("user", "edited", "m0u"))
        session.messages.delete("m1a")
        session.close()
        seen: list[fsstore.Event] = []
        while len(seen) < 10:
            seen += watcher.get(timeout=30)
    logged = [e for e in store.read_session("s").events(include_internal=True)]
    assert seen == logged
    assert [e.data["op"] for e in seen if e.kind == MESSAGE_RECORD][-2:] == ["edit", "delete"]


def test_cat_prints_the_message_records(tmp_path, capsys):
    from fsstore.cli import main

    store = written_session(tmp_path)
    assert main(["--store", store.path, "cat", "s"]) == 0
    out = capsys.readouterr().out
    import json

    lines = [json.loads(line) for line in out.splitlines()]
    records = [line["data"] for line in lines if line["kind"] == MESSAGE_RECORD]
    assert len(records) == len([e for e in store.read_session("s").events(
        include_internal=True) if e.kind == MESSAGE_RECORD])
    assert [r["op"] for r in records][-2:] == ["edit", "delete"]
    assert {r["message"]["id"] for r in records if r["op"] == "add"} >= {"m0u", "m5a"}


# --- bad input ---------------------------------------------------------------------------


def tool_result(call_id: str, **fields: Any) -> dict[str, Any]:
    return {"role": "tool", "parts": [{"type": "tool_result", "call_id": call_id, **fields}]}


#: Refused appends: (name, messages given to append_many, the error, the field named).
REFUSED_APPENDS: list[tuple[str, list[Any], type[FsStoreError], str | None]] = [
    ("unknown role", [{"role": "robot", "parts": []}], InvalidMessage, "role"),
    ("role of another type", [{"role": 1, "parts": []}], InvalidMessage, "role"),
    ("unknown part type", [{"role": "user", "parts": [{"type": "video"}]}], InvalidMessage,
     "parts[0]"),
    ("part without its field", [{"role": "user", "parts": [{"type": "text"}]}],
     InvalidMessage, "parts[0]"),
    ("orphan tool result", [tool_result("never-called")], InvalidMessage, "call_id"),
    ("result before its call in the batch", [tool_result("later"), {
        "role": "assistant", "parts": [{"type": "tool_call", "call_id": "later",
                                        "name": "x"}]}], InvalidMessage, "call_id"),
    ("inline file over the limit", [{"role": "user", "parts": [
        {"type": "file", "media_type": "a/b", "data": b"x" * (INLINE_FILE_LIMIT + 1)}]}],
     InvalidMessage, "parts[0].data"),
    ("file of two sources", [{"role": "user", "parts": [
        {"type": "file", "media_type": "a/b", "data": b"x", "url": "http://x"}]}],
     InvalidMessage, "parts[0]"),
    ("file of a bad blob ref", [{"role": "user", "parts": [
        {"type": "file", "media_type": "a/b", "blob": {"sha256": "zz"}}]}], InvalidMessage,
     "parts[0].blob"),
    ("bytes in metadata", [text("user", "x", extra={"k": b"bytes"})], InvalidMessage,
     "metadata.extra"),
    ("NaN in metadata", [text("user", "x", extra={"k": float("nan")})], InvalidMessage,
     "metadata.extra"),
    ("int key in metadata", [text("user", "x", extra={1: "x"})], InvalidMessage, None),
    ("bytes in tool arguments", [{"role": "assistant", "parts": [
        {"type": "tool_call", "call_id": "c", "name": "x", "arguments": {"a": b"x"}}]}],
     InvalidMessage, "parts[0].arguments"),
    ("negative tokens", [text("user", "x", usage={"input": -1})], InvalidMessage,
     "metadata.usage"),
    ("infinite cost", [text("user", "x", cost={"amount": float("inf")})], InvalidMessage,
     "metadata.cost"),
    ("negative latency", [text("user", "x", latency=-1.0)], InvalidMessage,
     "metadata.latency"),
    ("existing id", [text("user", "x", "m0u")], MessageExists, None),
    ("deleted id", [text("user", "x", "m2a")], MessageExists, None),
    ("id twice in a batch", [text("user", "x", "twice"), text("user", "y", "twice")],
     MessageExists, None),
    ("a bad second message", [text("user", "fine", "fine"), {"role": "robot"}],
     InvalidMessage, "role"),
    ("an existing id second", [text("user", "fine", "fine"), text("user", "x", "m5a")],
     MessageExists, None),
    ("not a message", ["hello"], InvalidMessage, "message"),
] + [(f"id {hostile!r}", [text("user", "x", hostile)], InvalidMessage, "id")
     for hostile in ["", "a\x00b", "line\nbreak", "\x1b[31mred", "tab\t", "del\x7f",
                     "x" * 257, 12, b"bytes"]]


@pytest.mark.parametrize("name, messages, error, field", REFUSED_APPENDS,
                         ids=[case[0] for case in REFUSED_APPENDS])
def test_a_refused_append_changes_nothing_on_disk(tmp_path, name, messages, error, field):
    store = written_session(tmp_path)
    with store.open_session("s") as session:
        session.messages.count()  # the index is up to date: a read writes nothing
        before = tree_snapshot(session_dir(store))
        with pytest.raises(error) as caught:
            session.messages.append_many(messages)
        assert tree_snapshot(session_dir(store)) == before
        if field is not None:
            assert field in caught.value.field, caught.value.field  # type: ignore[attr-defined]
            assert field.split(".")[0].split("[")[0] in str(caught.value)
        if len(messages) == 1:
            with pytest.raises(error):
                session.messages.append(messages[0])
            assert tree_snapshot(session_dir(store)) == before
        check_reads(session)
    assert store.verify() == []


#: Refused edits and deletes: (name, the call on session.messages, the error).
REFUSED_CHANGES: list[tuple[str, Callable[[Any], object], type[FsStoreError]]] = [
    ("edit of a missing id", lambda m: m.edit(text("user", "x", "nope")), MessageNotFound),
    ("edit of a deleted id", lambda m: m.edit(text("user", "x", "m2a")), MessageNotFound),
    ("edit without an id", lambda m: m.edit(text("user", "x")), InvalidMessage),
    ("edit to an unknown role", lambda m: m.edit({"id": "m0u", "role": "x"}), InvalidMessage),
    ("edit adding an orphan result", lambda m: m.edit({"id": "m0u", **tool_result("nope")}),
     InvalidMessage),
    ("delete of a missing id", lambda m: m.delete("nope"), MessageNotFound),
    ("delete of a deleted id", lambda m: m.delete("m2a"), MessageNotFound),
    ("delete of a hostile id", lambda m: m.delete("a\nb"), InvalidMessage),
    ("delete of a non-str id", lambda m: m.delete(5), InvalidMessage),
]


@pytest.mark.parametrize("name, change, error", REFUSED_CHANGES,
                         ids=[case[0] for case in REFUSED_CHANGES])
def test_a_refused_edit_or_delete_changes_nothing_on_disk(tmp_path, name, change, error):
    store = written_session(tmp_path)
    with store.open_session("s") as session:
        session.messages.count()
        before = tree_snapshot(session_dir(store))
        with pytest.raises(error):
            change(session.messages)
        assert tree_snapshot(session_dir(store)) == before
        check_reads(session)
    assert store.verify() == []


def test_reads_of_hostile_ids_raise_typed_errors(tmp_path):
    store = written_session(tmp_path)
    reader = store.read_session("s")
    for hostile in ["", "a\x00b", "\x1b[2J", "x" * 257, 7, None]:
        reads = [reader.messages.get, reader.messages.history]
        if hostile is not None:  # page(before=None): no cursor
            reads += [lambda i: reader.messages.page(before=i),
                      lambda i: reader.messages.page(after=i)]
        for read in reads:
            with pytest.raises(InvalidMessage):
                read(hostile)
    assert not reader.messages.exists("never")
    with pytest.raises(MessageNotFound):
        reader.messages.page(after="never")


@pytest.mark.parametrize("refuse", ["orphan result", "edit of a missing id",
                                    "delete of a missing id"])
def test_a_refused_message_on_a_session_without_an_index_writes_no_file(tmp_path, refuse):
    store = fsstore.open_store(tmp_path / "store")
    with store.create_session("s") as session:
        session.append({"plain": 1})
        session.sync()
        before = tree_snapshot(session_dir(store))
        with pytest.raises((InvalidMessage, MessageNotFound)):
            {"orphan result": lambda: session.messages.append(tool_result("c")),
             "edit of a missing id": lambda: session.messages.edit(text("user", "x", "m")),
             "delete of a missing id": lambda: session.messages.delete("m")}[refuse]()
        assert tree_snapshot(session_dir(store)) == before


def test_a_refused_map_key_names_the_map_it_is_in(tmp_path):
    store = written_session(tmp_path)
    with store.open_session("s") as session, pytest.raises(InvalidMessage) as caught:
        session.messages.append(text("user", "x", extra={1: "x"}))
    assert caught.value.field == "metadata.extra"


@pytest.mark.parametrize("hostile", ["\x85next line", "\x9b31mred", "\x90dcs"])
def test_ids_with_c1_control_characters_are_refused(tmp_path, hostile):
    store = written_session(tmp_path)
    with store.open_session("s") as session:
        before = tree_snapshot(session_dir(store))
        with pytest.raises(InvalidMessage):
            session.messages.append(text("user", "x", hostile))
        assert tree_snapshot(session_dir(store)) == before


def test_reads_of_an_id_with_a_lone_surrogate_raise_typed_errors(tmp_path):
    store = written_session(tmp_path)
    reader = store.read_session("s")
    for read in (reader.messages.get, reader.messages.history, reader.messages.exists):
        with pytest.raises((InvalidMessage, MessageNotFound)):
            read("a\ud800b")


def test_huge_token_counts_never_make_an_acknowledged_append_raise(tmp_path):
    policy = fsstore.SnapshotPolicy(every_events=2, keep=2)
    store = fsstore.open_store(tmp_path / "store", snapshots=policy)
    with store.create_session("s") as session:
        huge = {"input": 2**64 - 1}
        try:
            session.messages.append(text("assistant", "a", "a", usage=huge))
        except InvalidMessage:
            pass  # refused before it is written: fine
        try:
            session.messages.append(text("assistant", "b", "b", usage=huge))
        except InvalidMessage:
            pass  # refused before it is written: fine
        head = session.head
        session.messages.append(text("user", "c", "c"))
        assert session.head == head + 1
        session.snapshot()
    check_reads(store.read_session("s"))


def test_usage_by_day_never_goes_negative_when_an_edit_crosses_midnight(tmp_path,
                                                                        monkeypatch):
    import time

    store = fsstore.open_store(tmp_path / "store")
    midnight = 1796083200.0  # 2026-12-01T00:00:00Z
    with store.create_session("s") as session:
        monkeypatch.setattr(time, "time", lambda: midnight - 1)
        session.messages.append(text("assistant", "streaming", "a", model="m",
                                     usage={"input": 100}, cost={"amount": 1.0}))
        monkeypatch.setattr(time, "time", lambda: midnight + 3600)
        session.messages.edit(text("assistant", "done", "a", model="m",
                                   usage={"input": 10}, cost={"amount": 0.1}))
        monkeypatch.undo()
        assert session.usage()[""].input == 10
        days = session.usage(by="day")
    assert all(totals.input >= 0 and all(v >= 0 for v in totals.cost.values())
               for totals in days.values()), days


@pytest.mark.parametrize("where", ["before the log start", "past the head"])
def test_messages_at_a_seq_the_log_does_not_hold_are_refused_as_state_at_is(tmp_path,
                                                                           where):
    store = fsstore.open_store(tmp_path / "store")
    with store.create_session("s") as session:
        conversation(session, 2)
        session.clear()
        conversation(session, 1, prefix="after")
        at = 3 if where == "before the log start" else session.head + 10
    reader = store.read_session("s")
    with pytest.raises(fsstore.SeqOutOfRange):
        reader.state_at(at)
    with pytest.raises(fsstore.SeqOutOfRange):
        reader.stats(at_seq=at)
    for read in (lambda: reader.messages.all(at_seq=at), lambda: reader.messages.count(
            at_seq=at), lambda: reader.messages.last(5, at_seq=at)):
        with pytest.raises(fsstore.SeqOutOfRange):
            read()
