"""What the messages tests share: an oracle that decodes a session's messages from its
log (never through ``messages.idx``), checks that every read agrees with it, and ways
to write a conversation and to cut, flip and read the index's bytes.
"""

from __future__ import annotations

import os
import random
from typing import Any

import msgspec

import fsstore
from fsstore import MESSAGE_RECORD, Message
from fsstore.message_index import HEADER, ROW, Row

INDEX = "messages.idx"

# --- the oracle: messages decoded from the log, not through the index ------------------


def plain(value: Any) -> Any:
    """``value`` (Structs included) as the msgpack builtins it is stored as."""
    return msgspec.msgpack.decode(msgspec.msgpack.encode(value))


def summary(message: Message) -> tuple[Any, ...]:
    """Everything a read returns of a message, comparable."""
    return (message.id, message.role, plain(message.parts), plain(message.metadata),
            message.seq, message.turn, message.created, message.updated, message.version)


def log_messages(reader: fsstore.SessionReader, at_seq: int | None = None
                 ) -> list[tuple[Any, ...]]:
    """The live messages after ``at_seq`` as the log's message records say, in the order
    they were first added: a fold of ``events``, which never touches the index."""
    found: dict[str, list[Any]] = {}
    for event in reader.events(until_seq=at_seq, include_internal=True):
        if event.kind != MESSAGE_RECORD:
            continue
        data = event.data
        if data["op"] == "add":
            stored = data["message"]
            found[stored["id"]] = [stored["id"], stored["role"], stored["parts"],
                                   stored["metadata"], event.seq, event.turn, event.ts,
                                   event.ts, 1]
        elif data["op"] == "edit":
            stored = data["message"]
            entry = found[stored["id"]]
            entry[1:6] = [stored["role"], stored["parts"], stored["metadata"], event.seq,
                          event.turn]
            entry[7], entry[8] = event.ts, data["version"]
        else:
            del found[data["id"]]
    return [tuple(entry) for entry in found.values()]


def check_reads(reader: fsstore.SessionReader, *, at_seqs: tuple[int, ...] = ()
                ) -> list[tuple[Any, ...]]:
    """Every read of ``reader.messages`` gives exactly the log's messages; returns them."""
    expected = log_messages(reader)
    messages = reader.messages
    assert [summary(m) for m in messages.all()] == expected
    assert messages.count() == len(expected)
    for n in (0, 1, 3, len(expected) + 1):
        assert [summary(m) for m in messages.last(n)] == (expected[-n:] if n else [])
    assert [summary(m) for m in messages.page(limit=4)] == expected[:4]
    for position, entry in enumerate(expected):
        assert summary(messages.get(entry[0])) == entry
        if position % 5 == 0:
            assert [summary(m) for m in messages.page(after=entry[0], limit=3)] == \
                expected[position + 1 : position + 4]
            assert [summary(m) for m in messages.page(before=entry[0], limit=3)] == \
                expected[max(position - 3, 0) : position]
    for at_seq in at_seqs:
        old = log_messages(reader, at_seq)
        assert [summary(m) for m in messages.all(at_seq=at_seq)] == old, at_seq
        assert [summary(m) for m in messages.last(2, at_seq=at_seq)] == old[-2:], at_seq
        assert messages.count(at_seq=at_seq) == len(old), at_seq
    return expected


def problems(store: fsstore.Store) -> list[str]:
    return [str(f) for f in store.verify() if f.level == "problem"]


def index_findings(store: fsstore.Store) -> list[fsstore.Finding]:
    return [f for f in store.verify() if f.path.endswith(INDEX)]


def text(role: str, words: str, message_id: str | None = None, **metadata: Any
         ) -> dict[str, Any]:
    message: dict[str, Any] = {"role": role, "parts": [{"type": "text", "text": words}]}
    if message_id is not None:
        message["id"] = message_id
    if metadata:
        message["metadata"] = metadata
    return message


def conversation(session: fsstore.Session, rounds: int, prefix: str = "m",
                 pad: int = 120) -> None:
    """A user message, an assistant tool call with usage, the tool's result and an
    answer per round (4 messages, 5 index rows), in batches of 1 and 2."""
    for i in range(rounds):
        session.messages.append(text("user", f"question {i} " + "q" * pad, f"{prefix}{i}u"))
        session.messages.append_many([
            {"id": f"{prefix}{i}c", "role": "assistant",
             "parts": [{"type": "reasoning", "text": "think", "signature": b"\x00sig"},
                       {"type": "tool_call", "call_id": f"{prefix}{i}call", "name": "ls",
                        "arguments": {"path": "/" * (i % 3)}}],
             "metadata": {"model": "m-1", "usage": {"input": 10 + i, "output": 5},
                          "cost": {"amount": 0.25}}},
            {"id": f"{prefix}{i}r", "role": "tool",
             "parts": [{"type": "tool_result", "call_id": f"{prefix}{i}call",
                        "output": "x" * pad, "is_error": i % 4 == 3}]},
        ])
        session.messages.append(text("assistant", f"answer {i}", f"{prefix}{i}a",
                                     model="m-2", usage={"input": 3, "output": 7}))


def session_dir(store: fsstore.Store, session_id: str = "s") -> str:
    return store.read_session(session_id).path


def index_path(store: fsstore.Store, session_id: str = "s") -> str:
    return os.path.join(session_dir(store, session_id), INDEX)


def index_rows(path: str) -> list[Row]:
    """The rows of an index file, unchecked (a test's view of the bytes)."""
    with open(path, "rb") as handle:
        raw = handle.read()
    rows = []
    for at in range(HEADER.size, len(raw) - ROW.size + 1, ROW.size):
        seq, segment, hashed, target, live, offset, size, op, _ = ROW.unpack(
            raw[at : at + ROW.size])
        rows.append(Row(seq, segment, hashed, target, live, offset, size, op & 0x7F,
                        bool(op & 0x80)))
    return rows


def flip(path: str, offset: int, mask: int = 0x01) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ mask]))


def cut(path: str, size: int) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(size)


def writes_again_and_verifies_clean(store: fsstore.Store, session_id: str = "s") -> None:
    """The writer opens, reads right, appends a message; then verify finds nothing."""
    with store.open_session(session_id) as writer:
        check_reads(writer)
        writer.messages.append(text("user", "after the damage", "after-damage"))
        check_reads(writer)
    check_reads(store.read_session(session_id))
    assert store.verify() == []


def written_session(tmp_path, rounds: int = 6, **options: Any) -> fsstore.Store:
    store = fsstore.open_store(tmp_path / "store", **options)
    with store.create_session("s") as session:
        conversation(session, rounds)
        session.messages.edit(text("user", "edited", "m1u"))
        session.messages.delete("m2a")
    return store


class MessageWorkload:
    """Random message operations (batches with tool calls and results, edits, deletes,
    plain events, finished turns), deterministic for a seed."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.live: list[str] = []
        self.step = 0

    def run(self, session: fsstore.Session) -> None:
        rng, self.step = self.rng, self.step + 1
        step, choice = self.step, rng.random()
        if choice < 0.5 or len(self.live) < 2:
            batch: list[dict[str, Any]] = []
            for j in range(rng.randint(1, 3)):
                message_id = f"w{step}-{j}"
                if j and rng.random() < 0.5:
                    call = f"call{step}-{j - 1}"
                    batch[-1]["parts"].append({"type": "tool_call", "call_id": call,
                                               "name": "run"})
                    batch.append({"id": message_id, "role": "tool", "parts": [
                        {"type": "tool_result", "call_id": call, "output": step}]})
                else:
                    batch.append(text(rng.choice(["user", "assistant"]),
                                      "t" * rng.randint(0, 500), message_id,
                                      usage={"input": step, "output": j}))
            session.messages.append_many(batch)
            self.live += [message["id"] for message in batch]
        elif choice < 0.65:
            message_id = rng.choice(self.live)
            session.messages.edit(text("assistant", f"edit {step}", message_id))
        elif choice < 0.75:
            message_id = self.live.pop(rng.randrange(len(self.live)))
            session.messages.delete(message_id)
        elif choice < 0.9:
            session.append_many([{"step": step}] * rng.randint(1, 3))
        else:
            session.finish_turn()
