"""The messages API under crashes, damage, concurrency and hostile input.

Every check compares what ``session.messages`` returns with an independent decode of
the session's ``fsstore.message`` records (``log_messages``): the log is the authority,
``messages.idx`` a cache of it. Crash states come from the crash simulator
(``crashsim.CrashSimIO``), from real kill -9 of writer processes, and from cutting and
copying files by hand; damage is bytes flipped in the index and in the log.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from conftest import tree_snapshot
from crashsim import VARIANTS, CrashSimIO
from procs import Child, run, run_and_kill, whole_lines

import fsstore
from fsstore import (
    INLINE_FILE_LIMIT,
    MESSAGE_RECORD,
    CorruptionError,
    FsStoreError,
    InvalidMessage,
    Message,
    MessageExists,
    MessageNotFound,
)
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


# --- crashes ---------------------------------------------------------------------------


def written_session(tmp_path, rounds: int = 6, **options: Any) -> fsstore.Store:
    store = fsstore.open_store(tmp_path / "store", **options)
    with store.create_session("s") as session:
        conversation(session, rounds)
        session.messages.edit(text("user", "edited", "m1u"))
        session.messages.delete("m2a")
    return store


@pytest.mark.parametrize("rows_left", [0, 1, 7, "half a row", "all but the last row"])
def test_index_rows_a_crash_cut_after_their_frame_are_indexed_from_the_log(
        tmp_path, rows_left):
    store = written_session(tmp_path)
    path = index_path(store)
    count = len(index_rows(path))
    keep = {"half a row": count - 1 + 0.5, "all but the last row": count - 1}.get(
        rows_left, rows_left)
    cut(path, HEADER.size + int(keep * ROW.size))
    reader = store.read_session("s")
    expected = check_reads(reader, at_seqs=(3, 9, 20))
    assert len(expected) == 23
    findings = index_findings(store)
    assert [f.level for f in findings] == ["note"], findings
    assert "reads index the rest from the log" in findings[0].message
    with store.open_session("s") as writer:  # the writer's reads write the missing rows
        check_reads(writer)
    assert store.verify() == []
    writes_again_and_verifies_clean(store)


def frame_ends(store: fsstore.Store) -> list[tuple[int, int, int]]:
    """(segment, frame end, last seq of the frame) of every message frame, from the index."""
    return sorted({(row.segment, row.offset + row.size, row.seq)
                   for row in index_rows(index_path(store)) if row.op != 5})


def power_loss_copy(tmp_path, synced_rounds: int, unsynced_rounds: int) -> fsstore.Store:
    """A copy of a store taken while its writer is open: ``synced_rounds`` of the
    conversation made durable (finish_turn), ``unsynced_rounds`` more handed to the OS
    only. The frames after the synced mark are what a power loss may take back."""
    store = fsstore.open_store(tmp_path / "store")
    with store.create_session("s") as session:
        conversation(session, synced_rounds)
        session.messages.edit(text("user", "edited", "m1u"))
        session.finish_turn()
        conversation(session, unsynced_rounds, prefix="late")
        session.messages.delete("m0a")
        shutil.copytree(store.path, tmp_path / "copy")
    return fsstore.open_store(tmp_path / "copy", create=False)


@pytest.mark.parametrize("frames_lost", [1, 2, 5])
def test_index_rows_whose_frames_a_power_loss_took_are_not_used(tmp_path, frames_lost):
    store = power_loss_copy(tmp_path, 3, 2)
    had = {entry[0] for entry in log_messages(store.read_session("s"))}
    segment, end, last_seq = frame_ends(store)[-1 - frames_lost]
    cut(os.path.join(session_dir(store), "log", f"{segment:020d}.fslog"), end)
    reader = store.read_session("s")
    assert reader.head == last_seq  # the log's tail is gone, the index kept its rows
    expected = check_reads(reader)
    lost = sorted(had - {entry[0] for entry in expected})
    assert len(lost) == {1: 0, 2: 1, 5: 4}[frames_lost]
    findings = index_findings(store)
    assert [f.level for f in findings] == ["note"], findings
    assert "past what the log holds" in findings[0].message
    # The writer appends plain events over the lost frames' places, then messages that
    # reuse the lost ids (they are free again): no row of the old index may be taken for
    # them.
    with store.open_session("s") as writer:
        writer.append_many([{"pad": "p" * 100}] * 3)
        check_reads(store.read_session("s"))
        for message_id in lost:
            writer.messages.append(text("user", "again", message_id))
            check_reads(store.read_session("s"))
        writer.messages.append_many([text("user", "x"), text("user", "y")])
        check_reads(writer)
    check_reads(store.read_session("s"))
    assert store.verify() == []


def test_an_index_copied_from_another_session_is_not_used(tmp_path):
    store = written_session(tmp_path)
    with store.create_session("other") as other:
        conversation(other, 8, prefix="o")
    shutil.copyfile(index_path(store, "other"), index_path(store))
    expected = check_reads(store.read_session("s"))
    assert {entry[0][0] for entry in expected} == {"m"}
    findings = index_findings(store)
    assert [f.level for f in findings] == ["note"] and "another log" in findings[0].message
    writes_again_and_verifies_clean(store)
    check_reads(store.read_session("other"))


def test_an_index_from_before_a_clear_is_not_used(tmp_path):
    store = written_session(tmp_path)
    with open(index_path(store), "rb") as handle:
        old = handle.read()
    with store.open_session("s") as writer:
        writer.clear()
        assert writer.messages.all() == []
        conversation(writer, 1, prefix="new")
    with open(index_path(store), "wb") as handle:  # a backup from before the clear
        handle.write(old)
    expected = check_reads(store.read_session("s"))
    assert [entry[0] for entry in expected] == ["new0u", "new0c", "new0r", "new0a"]
    findings = index_findings(store)
    assert [f.level for f in findings] == ["note"] and "another log" in findings[0].message
    writes_again_and_verifies_clean(store)


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


def check_crash_state(dest: str) -> None:
    """A crash state of a message workload: the store opens; a reader and then the
    writer read exactly the log's messages; verify finds no problem; the writer
    appends; verify then finds nothing wrong with the index."""
    store = fsstore.open_store(dest, create=False)
    check_reads(store.read_session("s"))
    assert problems(store) == []
    with store.open_session("s") as writer:
        check_reads(writer)
        writer.messages.append(text("user", "after the crash"))
    check_reads(store.read_session("s"))
    findings = store.verify()  # a torn log tail set aside stays a note
    assert [f for f in findings if f.level == "problem" or f.path.endswith(INDEX)] == []


DURABILITIES = {
    "fsync": fsstore.Durability("fsync"),
    "flush": fsstore.Durability("flush"),
    "none+group": fsstore.Durability("none", group_commit_records=3),
}


def power_loss_workload(tmp_path, durability: str, seed: int, steps: int,
                        variants: tuple[str, ...] = VARIANTS,
                        segment_size: int = 1 << 20, close_crashes: bool = False) -> int:
    """Run a message workload through the crash simulator, checking every crash state
    (``variants`` of it) after every I/O call; the close only with ``close_crashes``."""
    root = tmp_path / "store"
    fsstore.open_store(root).create_session("s").close()
    io = CrashSimIO(str(root))
    session = fsstore.open_store(root, io=io, segment_size=segment_size,
                                 durability=DURABILITIES[durability]).open_session("s")
    workload = MessageWorkload(seed)
    states = [0]

    def crash_here() -> None:
        for variant in variants:
            dest = str(tmp_path / f"crash-{states[0]}")
            io.materialize(dest, variant, random.Random(states[0]))
            try:
                check_crash_state(dest)
            except BaseException as exc:
                exc.add_note(f"crash state {states[0]} ({variant}) after step {workload.step}")
                raise
            shutil.rmtree(dest)
            states[0] += 1

    io.on_op = crash_here
    for _ in range(steps):
        workload.run(session)
    if not close_crashes:
        io.on_op = None
    session.close()
    return states[0]


@pytest.mark.parametrize("durability", sorted(DURABILITIES))
def test_every_power_loss_state_of_a_message_workload_reads_the_logs_messages(
        tmp_path, durability):
    # Unsynced writes kept (a killed process) or lost (a power loss), in one segment:
    # the variants and the rollovers that fail are the xfail tests below.
    assert power_loss_workload(tmp_path, durability, seed=1, steps=14,
                               variants=("lost", "kept")) > 40


@pytest.mark.long
@pytest.mark.parametrize("seed", range(2, 12))
@pytest.mark.parametrize("durability", sorted(DURABILITIES))
def test_every_power_loss_state_of_many_message_workloads_reads_the_logs_messages(
        tmp_path, durability, seed):
    power_loss_workload(tmp_path, durability, seed=seed, steps=60, variants=("lost", "kept"))


@pytest.mark.xfail(strict=True, reason=(
    "BUG: rows_for (message_index.py:444) flags the last row of every message record, "
    "not of every frame; a torn index write that keeps the rows of the first records of "
    "a batch ends on a flagged row, taken as covering the whole frame, so the batch's "
    "later messages are never indexed (reads miss them)"))
def test_every_torn_index_write_of_a_message_workload_reads_the_logs_messages(tmp_path):
    power_loss_workload(tmp_path, "fsync", seed=1, steps=14, variants=("torn",))


@pytest.mark.xfail(strict=True, reason=(
    "BUG: a power loss that leaves other bytes (zeros, garbage) in the index's unsynced "
    "last rows makes every message read raise CorruptionError, the writer's too; "
    "_load_file_rows (message_index.py:223) reads the last row with its checksum check "
    "instead of treating a bad tail as a torn one"))
def test_every_garbled_index_write_of_a_message_workload_reads_the_logs_messages(tmp_path):
    power_loss_workload(tmp_path, "flush", seed=1, steps=14, variants=("garbage",))


@pytest.mark.xfail(strict=True, reason=(
    "BUG: LogReader.frames_from (log.py:485) stops when its start position is the end of "
    "a segment, though the next segment exists; the index's catch-up starts there "
    "whenever a crash fell between a frame that opened a new segment and its rows, and "
    "marks the whole log covered (message_index.py:333): those messages are never "
    "indexed"))
def test_every_crash_state_of_a_message_workload_across_segments_reads_the_logs_messages(
        tmp_path):
    power_loss_workload(tmp_path, "flush", seed=1, steps=14, variants=("kept",),
                        segment_size=4096)


# --- the crash states above that fail, reduced to one case each ------------------------


@pytest.mark.xfail(strict=True, reason=(
    "BUG: rows_for (message_index.py:444) flags the last row of every message record, "
    "and message_rows (messages.py) keeps those flags, so a frame of two messages has two "
    "flagged rows; a torn index write that kept only the first is taken as covering the "
    "whole frame (_take_last, message_index.py:293) and the second message is never "
    "indexed"))
def test_a_torn_index_write_that_kept_the_first_rows_of_a_batch_loses_no_message(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    with store.create_session("s") as session:
        session.messages.append(text("user", "a", "a"))
        session.messages.append_many([text("user", "b", "b"), text("user", "c", "c")])
    path = index_path(store)
    assert len(index_rows(path)) == 3
    cut(path, HEADER.size + 2 * ROW.size)  # the batch's rows were one write, torn
    assert [entry[0] for entry in check_reads(store.read_session("s"))] == ["a", "b", "c"]


@pytest.mark.xfail(strict=True, reason=(
    "BUG: LogReader.frames_from (log.py:485) returns when no frame follows its start "
    "position in that segment, even when the next segment exists; MessageIndex._catch_up "
    "starts at the end of the last indexed frame, which is the end of a segment after a "
    "rollover, then marks the log covered up to its head (message_index.py:333): a "
    "message whose rows a crash lost, first in a new segment, is never indexed"))
def test_a_message_opening_a_new_segment_whose_rows_a_crash_lost_is_read(tmp_path):
    store = fsstore.open_store(tmp_path / "store", segment_size=4096)
    log = os.path.join(tmp_path, "store", "sessions", "s", "log")
    with store.create_session("s") as session:
        number = 0
        while len([n for n in os.listdir(log) if n.endswith(".fslog")]) < 2:
            session.messages.append(text("user", "x" * 600, f"m{number}"))
            number += 1
    path = index_path(store)
    cut(path, os.path.getsize(path) - ROW.size)  # a crash between the frame and its row
    expected = check_reads(store.read_session("s"))
    assert len(expected) == number
    with store.open_session("s") as writer:
        check_reads(writer)
        with pytest.raises(MessageExists):
            writer.messages.append(text("user", "again", f"m{number - 1}"))


@pytest.mark.xfail(strict=True, reason=(
    "BUG: a power loss that leaves zeros (or other bytes) in the index's unsynced last "
    "rows makes every message read raise CorruptionError, the writer's included, until "
    "the file is deleted by hand: MessageIndex._load_file_rows (message_index.py:239) "
    "reads the last row through _read_row, whose checksum failure is raised, where a "
    "cut group is dropped; the index is a cache whose tail a crash may garble"))
def test_zeros_a_power_loss_left_at_the_end_of_the_index_are_dropped_as_a_torn_tail(
        tmp_path):
    store = written_session(tmp_path)
    with open(index_path(store), "ab") as handle:
        handle.write(bytes(2 * ROW.size))
    check_reads(store.read_session("s"))
    writes_again_and_verifies_clean(store)


@pytest.mark.xfail(strict=True, reason=(
    "BUG: a read refused for a damaged last index row is not refused again: "
    "MessageIndex.refresh (message_index.py:222) has set _log_start before "
    "_load_file_rows raises, so the next refresh skips the file's check, takes none of "
    "its rows and indexes the log instead; a writer then rewrites the rows from the "
    "file's start and leaves the damaged ones after its own"))
def test_a_read_refused_for_a_damaged_last_index_row_is_refused_again(tmp_path):
    store = written_session(tmp_path)
    path = index_path(store)
    flip(path, os.path.getsize(path) - 3)
    reader = store.read_session("s")
    outcomes: list[Any] = []
    for _ in range(2):
        try:
            outcomes.append([summary(m) for m in reader.messages.all()])
        except CorruptionError as exc:
            outcomes.append(("refused", exc.path, exc.offset))
    assert outcomes[0] == outcomes[1]
    if outcomes[0][0] != "refused":  # taken for a torn tail: then read right
        assert outcomes[0] == log_messages(reader)


@pytest.mark.xfail(strict=True, reason=(
    "BUG: verify reports a problem on a healthy session whose writer closed after plain "
    "events (leaving a MARK row) and later appended messages: check_index "
    "(message_index.py:604) compares the file's rows, MARK rows left out, with rows built "
    "from the log without MARK rows, but a row's 'first row' field counts the MARK rows"))
def test_verify_finds_nothing_wrong_after_a_writer_closed_past_its_last_message(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    with store.create_session("s") as session:
        session.messages.append(text("user", "a", "a"))
        session.append({"plain": 1})  # the close marks the index as covering it
    with store.open_session("s") as session:
        session.messages.append(text("user", "b", "b"))
        session.messages.edit(text("user", "b2", "b"))
    check_reads(store.read_session("s"))
    assert store.verify() == []


# --- damage ----------------------------------------------------------------------------


def raises_corruption(read: Callable[[], object], path: str, offset: int | None
                      ) -> CorruptionError:
    with pytest.raises(CorruptionError) as caught:
        read()
    assert caught.value.path == path, caught.value
    if offset is not None:
        assert caught.value.offset == offset, caught.value
    assert path in str(caught.value)
    return caught.value


@pytest.mark.parametrize("byte", [0, 9, 17, 33, 47, 51, 53])
def test_a_damaged_index_row_is_reported_with_its_offset_never_followed(tmp_path, byte):
    store = written_session(tmp_path)
    path = index_path(store)
    number = 7
    at = HEADER.size + number * ROW.size
    flip(path, at + byte)
    reader = store.read_session("s")
    before = tree_snapshot(session_dir(store))
    for read in (reader.messages.all, lambda: reader.messages.get("m3u"),
                 lambda: reader.messages.page(limit=30), lambda: reader.messages.history("m1u")):
        raises_corruption(read, path, at)
        raises_corruption(read, path, at)  # and again: not bypassed once reported
    assert [f.level for f in index_findings(store)] == ["problem"]
    (finding,) = index_findings(store)
    assert (finding.offset, "checksum" in finding.message) == (at, True)
    with store.open_session("s") as writer:
        raises_corruption(writer.messages.all, path, at)
        raises_corruption(lambda: writer.messages.append(text("user", "x", "x")), path, at)
    assert tree_snapshot(session_dir(store)) == before  # reported, not repaired
    os.unlink(path)  # what the error says to do
    writes_again_and_verifies_clean(store)


@pytest.mark.parametrize("byte", [0, 8, 10, 12, 16, 24, 32])
def test_a_damaged_index_header_is_not_used_and_the_writer_writes_it_anew(tmp_path, byte):
    store = written_session(tmp_path)
    path = index_path(store)
    flip(path, byte)
    expected = check_reads(store.read_session("s"))
    assert len(expected) == 23
    (finding,) = index_findings(store)
    assert (finding.level, finding.offset) == ("problem", 0) and "header" in finding.message
    writes_again_and_verifies_clean(store)


def reads_right_or_refuse(reader: fsstore.SessionReader) -> None:
    """Every read gives the log's messages or raises CorruptionError: never a wrong one."""
    expected = log_messages(reader)
    reads: list[tuple[Callable[[], object], object]] = [
        (lambda: [summary(m) for m in reader.messages.all()], expected),
        (lambda: [summary(m) for m in reader.messages.last(5)], expected[-5:]),
        (lambda: [summary(m) for m in reader.messages.page(limit=7)], expected[:7]),
        (reader.messages.count, len(expected))]
    reads += [((lambda i=entry[0]: summary(reader.messages.get(i))), entry)
              for entry in expected]
    for read, want in reads:
        try:
            got = read()
        except CorruptionError:
            continue
        assert got == want


@pytest.mark.xfail(strict=True, reason=(
    "BUG: two index rows swapped (checksums valid) make all() give a message the "
    "'created' time of the other: MessagesReader._build (messages.py:322) takes it from "
    "the row at the message's place without checking that row names the same message "
    "(its hash) as the newest version's row"))
def test_index_rows_swapped_with_valid_checksums_never_give_a_wrong_message(tmp_path):
    store = written_session(tmp_path)
    path = index_path(store)
    rows = index_rows(path)
    first, second = 4, 9  # two ADD rows of other messages, other frames
    assert rows[first].op == rows[second].op == 1
    with open(path, "r+b") as handle:
        raw = bytearray(handle.read())
        a = HEADER.size + first * ROW.size
        b = HEADER.size + second * ROW.size
        raw[a : a + ROW.size], raw[b : b + ROW.size] = raw[b : b + ROW.size], raw[a : a + ROW.size]
        handle.seek(0)
        handle.write(raw)
    reads_right_or_refuse(store.read_session("s"))
    (finding,) = index_findings(store)
    assert finding.level == "problem" and f"row {first} says" in finding.message
    os.unlink(path)
    writes_again_and_verifies_clean(store)


@pytest.mark.xfail(strict=True, reason=(
    "BUG: an index row overwritten by a copy of its neighbour (valid checksum) makes "
    "all() raise KeyError, not CorruptionError: MessagesReader._all (messages.py:304) "
    "looks up newest[number] for an ADD row whose 'first row' field is not its own "
    "number; a row's checksum does not cover its place and reads do not check it"))
def test_an_index_row_overwritten_by_a_copy_of_its_neighbour_is_never_followed(tmp_path):
    store = written_session(tmp_path)
    path = index_path(store)
    rows = index_rows(path)
    assert rows[0].op == rows[1].op == 1
    with open(path, "r+b") as handle:
        handle.seek(HEADER.size)
        row = handle.read(ROW.size)
        handle.write(row)  # row 1 := row 0
    reads_right_or_refuse(store.read_session("s"))


def segment_of(store: fsstore.Store, needle: bytes) -> tuple[str, int]:
    """The segment file holding ``needle`` and its offset there."""
    log = os.path.join(session_dir(store), "log")
    for name in sorted(os.listdir(log)):
        if name.endswith(".fslog"):
            with open(os.path.join(log, name), "rb") as handle:
                data = handle.read()
            if needle in data:
                return os.path.join(log, name), data.index(needle)
    raise AssertionError(needle)


def test_a_damaged_message_record_is_reported_naming_its_segment(tmp_path):
    store = written_session(tmp_path, segment_size=4096)
    segment, at = segment_of(store, b"question 3 ")
    flip(segment, at)
    reader = store.read_session("s")
    error = raises_corruption(lambda: reader.messages.get("m3u"), segment, None)
    assert error.offset is not None and error.offset <= at
    raises_corruption(reader.messages.all, segment, error.offset)
    # Reads that do not touch the damaged record still answer, and rightly.
    assert reader.messages.get("m5a").text == "answer 5"
    assert [m.id for m in reader.messages.last(3)] == ["m5c", "m5r", "m5a"]
    assert any(f.level == "problem" and f.path == segment for f in store.verify())


@pytest.mark.xfail(strict=True, reason=(
    "BUG: with no index rows for them (the index deleted, as the errors advise, or of "
    "another log), messages after damage in a sealed segment silently vanish: all() and "
    "count() give the messages before it, get() says MessageNotFound, while events() "
    "raises CorruptionError. MessageIndex._catch_up (message_index.py:311) reads with "
    "LogReader.frames_from, which stops at damage by design, then takes the log as "
    "indexed up to its head (message_index.py:333)"))
def test_damage_in_a_sealed_segment_never_shortens_the_conversation_silently(tmp_path):
    store = written_session(tmp_path, segment_size=4096)
    segment, at = segment_of(store, b"question 1 ")
    flip(segment, at)
    os.unlink(index_path(store))
    reader = store.read_session("s")
    with pytest.raises(CorruptionError):
        list(reader.events())
    for read in (reader.messages.all, reader.messages.count,
                 lambda: reader.messages.get("m5a"), lambda: reader.messages.last(30)):
        raises_corruption(read, segment, None)


@pytest.mark.xfail(strict=True, reason=(
    "BUG: damage to the frame of the index's last message (not a torn tail: records "
    "follow it) makes that message silently vanish, and the writer then accepts its id "
    "again: _load_file_rows/_holds (message_index.py:239, 265) take an unreadable frame "
    "for one a power loss took back and drop its row, then _catch_up stops silently at "
    "the damage (frames_from) and marks the log covered"))
def test_damage_to_the_last_messages_record_never_makes_it_vanish(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    with store.create_session("s") as session:
        conversation(session, 2)
    with store.open_session("s") as session:  # a writer that writes no message: no MARK
        session.append_many([{"plain": i} for i in range(3)])
    segment, at = segment_of(store, b"answer 1")
    flip(segment, at)
    reader = store.read_session("s")
    raises_corruption(lambda: reader.messages.get("m1a"), segment, None)
    raises_corruption(reader.messages.all, segment, None)
    with store.open_session("s") as writer, pytest.raises(CorruptionError):
        writer.messages.append(text("user", "again", "m1a"))


# --- kill -9 -----------------------------------------------------------------------------


def message_writer_child(root: str, seed: str, durability: str = "flush") -> None:
    """A writer process: append message batches (tool calls and their results among
    them), edits and deletes, printing ``ACK <id>...`` once each call has returned."""
    store = fsstore.open_store(root, durability=durability)
    session = store.open_session("s", lock_timeout=30)
    rng = random.Random(int(seed))
    print("READY", flush=True)
    step = 0
    live: list[str] = []
    while True:
        step += 1
        choice = rng.random()
        if choice < 0.8 or not live:
            ids = [f"k{seed}-{step}-{j}" for j in range(rng.randint(1, 3))]
            batch = [text("user", "x" * rng.randint(0, 400), message_id) for message_id in ids]
            batch[0]["parts"].append({"type": "tool_call", "call_id": f"c{seed}-{step}",
                                      "name": "run"})
            session.messages.append_many(batch)
            live += ids
            print("ACK", *ids, "END", flush=True)
        elif choice < 0.9:
            session.messages.edit(text("assistant", f"edited {step}", rng.choice(live)))
        else:
            session.messages.delete(live.pop(rng.randrange(len(live))))


def kill_9_message_trials(tmp_path, trials: int) -> None:
    root = tmp_path / "store"
    fsstore.open_store(root).create_session("s").close()
    rng = random.Random(5)
    acked: set[str] = set()
    for trial in range(trials):
        lines = run_and_kill(message_writer_child, [str(root), str(trial)],
                             rng.uniform(0.02, 0.12))
        acked |= {message_id for line in lines if line[0] == "ACK" for message_id in line[1:]}
        store = fsstore.open_store(root)
        reader = store.read_session("s")
        history = {e.data.get("message", {}).get("id") for e in reader.events(
            include_internal=True) if e.kind == MESSAGE_RECORD}
        assert acked <= history, "an acknowledged message was lost"
        check_reads(reader)
        assert problems(store) == []
        with store.open_session("s") as writer:
            check_reads(writer)
    assert acked
    assert fsstore.open_store(root).verify() == []


@pytest.mark.stress
def test_kill_9_of_a_message_writer_at_random_moments_reads_the_logs_messages(tmp_path):
    kill_9_message_trials(tmp_path, trials=3)


@pytest.mark.stress
@pytest.mark.long
def test_kill_9_of_a_message_writer_hundreds_of_times_reads_the_logs_messages(tmp_path):
    kill_9_message_trials(tmp_path, trials=300)


def dying_message_writer(root: str, where: str) -> None:
    """Append two messages, then a third batch, and kill -9 this process at ``where``:
    "rows" after the batch's frame is in its segment, before its index rows;
    "half rows" after half of the rows' bytes are in the index."""
    import signal

    from fsstore.fsio import FileIO

    store = fsstore.open_store(root)
    session = store.open_session("s")
    session.messages.append(text("user", "one", "one"))
    session.messages.append(text("user", "two", "two"))
    real_pwrite = FileIO.pwrite

    def pwrite(self: FileIO, fd: int, data: bytes | memoryview, offset: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(INDEX):
            if where == "half rows":
                real_pwrite(self, fd, bytes(data)[: len(data) // 2], offset)
            os.kill(os.getpid(), signal.SIGKILL)
        real_pwrite(self, fd, data, offset)

    FileIO.pwrite = pwrite  # type: ignore[method-assign]
    session.messages.append({"id": "three", "role": "assistant", "parts": [
        {"type": "tool_call", "call_id": "c1", "name": "a"},
        {"type": "tool_call", "call_id": "c2", "name": "b"}]})
    print("NOT KILLED", flush=True)


@pytest.mark.parametrize("where", ["rows", "half rows"])
def test_a_writer_killed_between_a_frame_and_its_index_rows_loses_no_message(
        tmp_path, where):
    root = tmp_path / "store"
    fsstore.open_store(root).create_session("s").close()
    with Child.function(dying_message_writer, str(root), where) as child:
        lines = child.finish()
        assert child.returncode == -9, child.describe()
    assert "NOT KILLED" not in lines
    store = fsstore.open_store(root)
    rows = index_rows(index_path(store))
    assert len(rows) == {"rows": 2, "half rows": 3}[where]  # the third's are cut
    expected = check_reads(store.read_session("s"))
    assert [entry[0] for entry in expected] == ["one", "two", "three"]
    assert [f.level for f in index_findings(store)] == ["note"]
    with store.open_session("s") as writer:
        writer.messages.append({"id": "four", "role": "tool", "parts": [
            {"type": "tool_result", "call_id": "c2", "output": 1}]})  # finds the call
        with pytest.raises(MessageExists):
            writer.messages.append(text("user", "dup", "three"))
    check_reads(store.read_session("s"))
    assert store.verify() == []


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


@pytest.mark.xfail(strict=True, reason=(
    "BUG: a refused append, edit or delete on a session with no messages.idx yet writes "
    "the file: the refusal (an orphan tool result, an edit or delete of a missing id, a "
    "duplicate id) is decided in build() after Session._fresh_message_index "
    "(session.py:243) has refreshed the index, which creates it (MessageIndex.create)"))
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


@pytest.mark.xfail(strict=True, reason=(
    "BUG: a map key of the wrong type in a message is refused naming the field "
    "'message', not the map: check_message's _PATH (message_types.py) parses msgspec's "
    "'at `$.path`' but not its 'at `key` in `$.path`' form"))
def test_a_refused_map_key_names_the_map_it_is_in(tmp_path):
    store = written_session(tmp_path)
    with store.open_session("s") as session, pytest.raises(InvalidMessage) as caught:
        session.messages.append(text("user", "x", extra={1: "x"}))
    assert caught.value.field == "metadata.extra"


@pytest.mark.xfail(strict=True, reason=(
    "BUG: check_id (message_types.py, the _ID pattern) refuses C0 controls and DEL only; "
    "C1 controls (U+0080 to U+009F: NEL, CSI, ...) pass, though the docstring promises "
    "ids 'without control characters'; U+009B is the 8-bit terminal escape (CSI)"))
@pytest.mark.parametrize("hostile", ["\x85next line", "\x9b31mred", "\x90dcs"])
def test_ids_with_c1_control_characters_are_refused(tmp_path, hostile):
    store = written_session(tmp_path)
    with store.open_session("s") as session:
        before = tree_snapshot(session_dir(store))
        with pytest.raises(InvalidMessage):
            session.messages.append(text("user", "x", hostile))
        assert tree_snapshot(session_dir(store)) == before


@pytest.mark.xfail(strict=True, reason=(
    "BUG: an id with a lone surrogate passes check_id (message_types.py) on reads, then "
    "message_hash (message_index.py) encodes it to UTF-8: get, exists, history, delete "
    "raise UnicodeEncodeError, not an FsStoreError (appends are refused as they should: "
    "msgspec cannot encode it)"))
def test_reads_of_an_id_with_a_lone_surrogate_raise_typed_errors(tmp_path):
    store = written_session(tmp_path)
    reader = store.read_session("s")
    for read in (reader.messages.get, reader.messages.history, reader.messages.exists):
        with pytest.raises((InvalidMessage, MessageNotFound)):
            read("a\ud800b")


@pytest.mark.xfail(strict=True, reason=(
    "BUG: token counts are bounded only by >= 0 (message_types._check_metadata) and by "
    "msgpack's 2**64 - 1 per message, so the usage fold of two messages can pass 2**64: "
    "then every snapshot raises OverflowError (not caught by Session._auto_snapshot, "
    "session.py:650), so the append that triggers an automatic snapshot raises after "
    "its records are in the log, and checkpoint() and fork() fail from then on"))
def test_huge_token_counts_never_make_an_acknowledged_append_raise(tmp_path):
    policy = fsstore.SnapshotPolicy(every_events=2, keep=2)
    store = fsstore.open_store(tmp_path / "store", snapshots=policy)
    with store.create_session("s") as session:
        huge = {"input": 2**64 - 1}
        session.messages.append(text("assistant", "a", "a", usage=huge))
        try:
            session.messages.append(text("assistant", "b", "b", usage=huge))
        except InvalidMessage:
            pass  # refused before it is written: fine
        head = session.head
        session.messages.append(text("user", "c", "c"))
        assert session.head == head + 1
        session.snapshot()
    check_reads(store.read_session("s"))


def test_a_reader_holding_the_index_open_reads_right_after_a_clear_and_a_rebuild(tmp_path):
    store = written_session(tmp_path)
    reader = store.read_session("s")
    check_reads(reader)  # the reader has the index file open
    with store.open_session("s") as writer:
        writer.clear()
        check_reads(reader)  # the old file, of the old log: not used
        conversation(writer, 1, prefix="new")  # the writer writes a new file
        check_reads(reader)
    flip(index_path(store), 12)  # a damaged header: the next writer writes it anew
    check_reads(reader)
    with store.open_session("s") as writer:
        writer.messages.append(text("user", "more", "more"))
        check_reads(reader)
    assert [m.id for m in reader.messages.last(2)] == ["new0a", "more"]
    assert store.verify() == []


@pytest.mark.parametrize("kind", ["symlink", "folder", "fifo"])
def test_an_index_that_is_not_a_regular_file_is_refused_never_read_through(tmp_path, kind):
    store = written_session(tmp_path)
    path = index_path(store)
    os.unlink(path)
    {"symlink": lambda: os.symlink(os.path.join(session_dir(store), "session.json"), path),
     "folder": lambda: os.mkdir(path), "fifo": lambda: os.mkfifo(path)}[kind]()
    reader = store.read_session("s")
    raises_corruption(reader.messages.all, path, None)
    with store.open_session("s") as writer:
        raises_corruption(lambda: writer.messages.append(text("user", "x")), path, None)
    assert [f.level for f in index_findings(store)] == ["problem"]
    (os.rmdir if kind == "folder" else os.unlink)(path)
    writes_again_and_verifies_clean(store)


@pytest.mark.xfail(strict=True, reason=(
    "BUG: usage(by='day') goes negative when a message is edited on a later day than it "
    "was added: UsageFold.apply (usage.py, op 'edit') takes the old version's usage off "
    "the edit record's day, where it was never booked (the 'was' map does not say the "
    "old version's day)"))
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


@pytest.mark.xfail(strict=True, reason=(
    "BUG: messages reads at a seq the log does not hold answer as if it did: before a "
    "clear's new log start all(at_seq=) gives [] and count 0 (the messages then were "
    "cleared), past the head it gives today's messages, where state_at() and stats() "
    "raise SeqOutOfRange; MessagesReader._rows (messages.py:222) checks only at_seq's "
    "type (check_seq), not that it lies between the log start - 1 and the head"))
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
