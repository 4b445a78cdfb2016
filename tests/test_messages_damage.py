"""The messages API under crashes and damage: crash states from the crash simulator
(``crashsim.CrashSimIO``), real kill -9 of writer processes, index files cut, copied and
restored by hand, bytes flipped in the index and in the log.

Every check compares what ``session.messages`` returns with an independent decode of
the session's ``fsstore.message`` records (``messagekit.log_messages``): the log is the
authority, ``messages.idx`` a cache of it.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
from collections.abc import Callable
from typing import Any

import pytest
from conftest import tree_snapshot
from crashsim import VARIANTS, CrashSimIO
from messagekit import (
    INDEX,
    MessageWorkload,
    check_reads,
    conversation,
    cut,
    flip,
    index_findings,
    index_path,
    index_rows,
    log_messages,
    problems,
    session_dir,
    summary,
    text,
    writes_again_and_verifies_clean,
    written_session,
)
from procs import Child, run_and_kill

import fsstore
from fsstore import MESSAGE_RECORD, CorruptionError, MessageExists
from fsstore.message_index import HEADER, ROW

# --- crashes ---------------------------------------------------------------------------


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
    store.create_session("s").close()
    # A shared writer writes each batch's index rows at once (an exclusive one holds
    # them until it has 256 or closes), so the copy has rows for the unsynced frames.
    with store.open_session("s", shared=True) as session:
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
            states[0] += 1
            # The judgement depends on the files alone: a state met before is not judged again.
            if not io.materialize_unseen(dest, variant, random.Random(states[0] - 1)):
                continue
            try:
                check_crash_state(dest)
            except BaseException as exc:
                exc.add_note(f"crash state {states[0] - 1} ({variant}) after step "
                             f"{workload.step}")
                raise
            shutil.rmtree(dest)

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
    # the variants and the rollovers are the tests below.
    assert power_loss_workload(tmp_path, durability, seed=1, steps=14,
                               variants=("lost", "kept")) > 25


@pytest.mark.long
@pytest.mark.parametrize("seed", range(2, 12))
@pytest.mark.parametrize("durability", sorted(DURABILITIES))
def test_every_power_loss_state_of_many_message_workloads_reads_the_logs_messages(
        tmp_path, durability, seed):
    power_loss_workload(tmp_path, durability, seed=seed, steps=60, variants=("lost", "kept"))


def test_every_torn_index_write_of_a_message_workload_reads_the_logs_messages(tmp_path):
    power_loss_workload(tmp_path, "fsync", seed=1, steps=14, variants=("torn",))


def test_every_garbled_index_write_of_a_message_workload_reads_the_logs_messages(tmp_path):
    power_loss_workload(tmp_path, "flush", seed=1, steps=14, variants=("garbage",))


def test_every_crash_state_of_a_message_workload_across_segments_reads_the_logs_messages(
        tmp_path):
    power_loss_workload(tmp_path, "flush", seed=1, steps=14, variants=("kept",),
                        segment_size=4096)


# --- the crash states above that fail, reduced to one case each ------------------------


def test_a_torn_index_write_that_kept_the_first_rows_of_a_batch_loses_no_message(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    with store.create_session("s") as session:
        session.messages.append(text("user", "a", "a"))
        session.messages.append_many([text("user", "b", "b"), text("user", "c", "c")])
    path = index_path(store)
    assert len(index_rows(path)) == 3
    cut(path, HEADER.size + 2 * ROW.size)  # the batch's rows were one write, torn
    assert [entry[0] for entry in check_reads(store.read_session("s"))] == ["a", "b", "c"]


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


def test_zeros_a_power_loss_left_at_the_end_of_the_index_are_dropped_as_a_torn_tail(
        tmp_path):
    store = written_session(tmp_path)
    with open(index_path(store), "ab") as handle:
        handle.write(bytes(2 * ROW.size))
    check_reads(store.read_session("s"))
    writes_again_and_verifies_clean(store)


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


@pytest.mark.parametrize("chain", [False, True], ids=["unchained", "chained"])
def test_damage_to_the_last_messages_record_never_makes_it_vanish(tmp_path, chain):
    store = fsstore.open_store(tmp_path / "store", chain=chain)
    with store.create_session("s") as session:
        conversation(session, 2)
    with store.open_session("s") as session:  # a writer that writes no message: no MARK
        session.append_many([{"plain": i} for i in range(3)])
    segment, at = segment_of(store, b"answer 1")
    flip(segment, at)
    reader = store.read_session("s")
    raises_corruption(lambda: reader.messages.get("m1a"), segment, None)
    raises_corruption(reader.messages.all, segment, None)
    if chain:  # a writer takes up the active segment's run only when it holds (3.4)
        error = raises_corruption(lambda: store.open_session("s"), segment, None)
        assert "chain" in str(error)
    else:
        with store.open_session("s") as writer, pytest.raises(CorruptionError):
            writer.messages.append(text("user", "again", "m1a"))
    raises_corruption(lambda: store.read_session("s").messages.get("m1a"), segment, None)


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
    # Shared: a shared writer writes each batch's index rows at once (an exclusive one
    # holds them until it has 256 or closes).
    session = store.open_session("s", shared=True)
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


class FullDiskIO(fsstore.FileIO):
    """Plain I/O whose next write to the message index, once armed, writes half of its
    bytes and fails with ENOSPC (a full disk, in a process that goes on)."""

    def __init__(self) -> None:
        self.armed = False

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> None:
        if self.armed and os.readlink(f"/proc/self/fd/{fd}").endswith(INDEX):
            self.armed = False
            super().pwrite(fd, bytes(data)[: len(data) // 2], offset)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        super().pwrite(fd, data, offset)


@pytest.mark.parametrize("batch", [1, 3],
    ids=["one message", "three messages"])
def test_a_full_disk_while_writing_index_rows_loses_no_message(tmp_path, batch):
    io = FullDiskIO()
    store = fsstore.open_store(tmp_path / "store", io=io)
    store.create_session("s").close()
    # Shared: its index rows are written with each batch (an exclusive writer holds
    # them until it has 256 or closes).
    with store.open_session("s", shared=True) as session:
        conversation(session, 2)
        io.armed = True
        stored = session.messages.append_many(
            [text("user", f"full {j}", f"full{j}") for j in range(batch)])
        assert not io.armed and [m.seq for m in stored] == list(
            range(session.head - batch + 1, session.head + 1))  # acknowledged: in the log
        check_reads(session)
        check_reads(store.read_session("s"))
        session.messages.append(text("user", "next", "next"))
        check_reads(session)
        with pytest.raises(MessageExists):
            session.messages.append(text("user", "again", f"full{batch - 1}"))
    check_reads(store.read_session("s"))
    assert store.verify() == []


@pytest.mark.parametrize("chain", [False, True], ids=["unchained", "chained"])
@pytest.mark.parametrize("op", ["delete", "edit"])
def test_an_edit_or_delete_of_a_message_whose_add_a_repair_lost_is_indexed(
        tmp_path, chain, op):
    # the add is an fsstore.lost record after the repair: the delete leaves nothing,
    # the edit starts the message afresh (FORMAT.md 20.3), and reads do not raise
    import fsstore as fs

    root = tmp_path / "store"
    store = fs.open_store(root, chain=chain, segment_size=4096)
    with store.create_session("s") as session:
        for n in range(3):
            session.messages.append(fs.Message.of_text("user", f"m{n}", id=f"m{n}"))
            with session._writer.lock:
                session._writer.roll_over()
        if op == "delete":
            session.messages.delete("m1")
        else:
            session.messages.edit(fs.Message.of_text("user", "m1 again", id="m1"))
    log = root / "sessions" / "s" / "log"
    second = sorted(log.glob("*.fslog"))[1]  # holds m1's add
    data = bytearray(second.read_bytes())
    data[100] ^= 0xFF
    second.write_bytes(bytes(data))
    report = fs.open_store(root).repair("s")
    assert 2 in {s for r in report.lost for s in range(r.first, r.last + 1)}
    reader = fs.open_store(root).read_session("s")
    texts = [m.text for m in reader.messages.all()]
    assert "m0" in texts and "m1" not in texts
    assert ("m1 again" in texts) == (op == "edit")
    assert [f for f in fs.open_store(root).verify() if f.level == "problem"] == []
