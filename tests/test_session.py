from __future__ import annotations

import asyncio
import errno
import fcntl
import math
import os
import threading
import time

import pytest
from conftest import msgpack_values, tree_snapshot
from crashsim import CrashSimIO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runlength import examples

import fsstore
from fsstore import (
    TURN_FINISHED,
    Durability,
    InvalidEvent,
    RecordTooLarge,
    SessionClosed,
    SessionLocked,
    TurnError,
    WriteFailed,
)
from fsstore import lease as lease_module

events_strategy = st.dictionaries(st.text(max_size=10), msgpack_values, max_size=6)


@settings(max_examples=examples(30, 60), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(events_strategy, min_size=1, max_size=5), min_size=1, max_size=8),
       durability=st.sampled_from(["fsync", "flush", "none"]))
def test_arbitrary_events_survive_append_close_and_reopen_exactly(tmp_path_factory, batches,
                                                                  durability):
    store = fsstore.open_store(tmp_path_factory.mktemp("s") / "store", segment_size=4096,
                               durability=durability)
    expected = []
    with store.create_session("s") as session:
        for turn, batch in enumerate(batches, start=1):
            seqs = session.append_many(batch, turn=turn)
            expected.extend(zip(seqs, [turn] * len(batch), batch, strict=True))
    events = list(store.read_session("s").events())
    assert [(e.seq, e.turn, e.data) for e in events] == expected
    with store.open_session("s") as session:  # and again through a writer's reopen
        assert session.head == len(expected)
        assert [(e.seq, e.turn, e.data) for e in session.events()] == expected


def test_each_event_carries_seq_timestamp_turn_and_kind(store):
    with store.create_session("s") as session:
        before = time.time()
        session.append({"type": "message", "text": "hi"})
        session.append({"kind": "tool_call"})
        session.append({"kind": 7}, kind="custom")
        session.append({"plain": True})
        session.append({"given": "ts"}, ts=1234.5)
        events = list(session.events())
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert [e.kind for e in events] == ["message", "tool_call", "custom", "event", "event"]
    assert all(e.turn == 1 for e in events)
    assert before <= events[0].ts <= time.time() and events[-1].ts == 1234.5


def test_seqs_are_gapless_and_monotonic_across_batches_and_reopens(store):
    with store.create_session("s") as session:
        assert session.append_many([{"a": 1}, {"a": 2}]) == [1, 2]
        assert session.append_many([]) == []
        assert session.append({"a": 3}) == 3
    with store.open_session("s") as session:
        assert session.append_many([{"a": i} for i in range(3)]) == [4, 5, 6]


def test_the_log_tail_says_where_the_log_ends_and_starts_for_readers_and_writers(store):
    with store.create_session("s") as session:
        session.append({"x": 1}, turn=3)
        session.inputs.submit("hi")
        assert session.log_tail[:2] == (2, 1)  # a writer reads its own writes
        assert session.log_tail.last_turn == 3
        assert session.log_tail.last_kind == "fsstore.input"
        session.clear()
        reader = store.read_session("s")
        assert (reader.log_tail.head, reader.log_tail.log_start) == (2, 3)
        assert reader.log_tail.event_count == 0


def test_turns_default_to_the_current_turn_and_move_on_after_finish(store):
    with store.create_session("s") as session:
        assert session.current_turn is None
        session.append({"n": 1})
        session.append({"n": 2})
        session.finish_turn()
        session.append({"n": 3})
        assert session.current_turn == 2
    reader = store.read_session("s")
    turns = reader.get_turns()
    assert [(t.number, [e.data["n"] for e in t.events], t.finished) for t in turns] == [
        (1, [1, 2], True), (2, [3], False)]
    assert [e.kind for e in reader.events()] == ["event"] * 3
    kinds = [e.kind for e in reader.events(include_internal=True)]
    assert kinds == ["event", "event", TURN_FINISHED, "event"]


def test_queue_and_input_records_never_join_a_turn_finished_or_not(store):
    with store.create_session("s") as session:
        session.queue.enqueue("early")  # before any turn: makes no turn 0
        session.append({"n": 1})
        session.finish_turn()
        session.queue.enqueue("wake", {"why": "timer"})
        session.inputs.submit("are you there?")
    with store.open_session("s", shared=True) as ingress:
        ingress.queue.enqueue("later")
        ingress.inputs.submit("still there?")
    reader = store.read_session("s")
    assert reader.get_turn(0) is None
    assert reader.get_turn(1) == fsstore.Turn(1, reader.get_turn(1).events, True)
    assert [e.data for e in reader.get_turn(1).events] == [{"n": 1}]
    assert [e.data for e in reader.get_turn(1, include_internal=True).events] == [{"n": 1}]
    assert [(t.number, len(t.events), t.finished) for t in reader.get_turns()] == [(1, 1, True)]
    with store.open_session("s") as session:
        session.append({"n": 2})  # the next turn, whatever arrived after the finish
        assert session.current_turn == 2
    assert [e.data for e in reader.get_turn(1).events] == [{"n": 1}]
    assert [(t.number, [e.data for e in t.events]) for t in reader.get_turns()] == [
        (1, [{"n": 1}]), (2, [{"n": 2}])]


def test_reads_return_the_callers_events_and_the_stores_own_records_only_when_asked(store):
    with store.create_session("s") as session:
        session.commit([{"n": 1}], state_patch={"plan": "x"})
        session.queue.enqueue("job")
        session.save_session_with_updates([{"n": 2}], title="t")
        session.set_state("k", 1)
        session.inputs.submit("hi")
        session.finish_turn()
        session.append({"n": 3})
    reader = store.read_session("s")
    assert [e.data for e in reader.events()] == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert [e.data for e in reader.events(after_seq=1, limit=1)] == [{"n": 2}]
    every = [e.kind for e in reader.events(include_internal=True)]
    assert every == ["event", fsstore.STATE_RECORD, "fsstore.queue", "event",
                     fsstore.METADATA_RECORD, fsstore.STATE_RECORD, "fsstore.input",
                     TURN_FINISHED, "event"]
    turn = reader.get_turn(1, include_internal=True)
    assert [e.kind for e in turn.events] == ["event", fsstore.STATE_RECORD, "event",
                                             fsstore.METADATA_RECORD, fsstore.STATE_RECORD]
    assert [e.kind for e in reader.get_turn(1).events] == ["event", "event"]
    assert reader.get_turns(include_internal=True)[0] == turn
    info = reader.info()  # counts every record, the store's own included
    assert info.event_count == len(every) == info.head


def test_a_finished_turn_read_across_segments_stays_whole_while_ingress_arrives(small_store):
    with small_store.create_session("s") as session:
        session.append_many([{"i": i, "pad": "p" * 300} for i in range(8)])
        session.finish_turn()
        for i in range(30):
            session.queue.enqueue("job", {"i": i, "pad": "q" * 300})
        before = small_store.read_session("s").get_turn(1)
        session.append({"next": 1})
    reader = small_store.read_session("s")
    assert reader.get_turn(1) == before and len(before.events) == 8 and before.finished
    assert [e.data for e in reader.get_turn(2).events] == [{"next": 1}]
    assert [t.number for t in reader.get_turns()] == [1, 2]


def test_finish_turn_is_a_barrier_and_a_finished_turn_takes_no_more_events(store):
    with store.create_session("s") as session:
        session.append({"n": 1}, turn=5)
        assert session.synced_head == 0  # flush mode: handed to the OS, not yet fsynced
        session.finish_turn(5)
        assert session.synced_head == session.head == 2
        session.finish_turn(5)  # again: only the barrier
        assert session.head == 2
        head = session.head
        with pytest.raises(TurnError, match="turn 5 is finished"):
            session.append({"n": 2}, turn=5)
        with pytest.raises(TurnError, match="older than the current turn"):
            session.append({"n": 2}, turn=4)
        with pytest.raises(TurnError):
            session.finish_turn(3)
        assert session.head == head
        session.finish_turn(7)  # an empty turn can be finished
        assert session.get_turn(7) == fsstore.Turn(7, [], True)
        assert session.get_turn(6) is None
    with store.create_session("empty") as empty, pytest.raises(TurnError, match="no turn"):
        empty.finish_turn()


def test_turns_stay_ordered_when_a_crash_left_an_empty_last_segment(small_store):
    with small_store.create_session("s") as session:
        for turn in (1, 2, 3):
            session.append_many([{"pad": "p" * 900}] * 2, turn=turn)
        session.finish_turn(3)
        head = session.head
    # what a crash between creating the next segment and writing to it leaves
    log = os.path.join(small_store.path, "sessions", "s", "log")
    with open(os.path.join(log, fsstore.layout.segment_name(head + 1)), "wb") as handle:
        uid = small_store.read_session("s").identity.uid
        handle.write(fsstore.segment_header.encode_segment_header(head + 1, 1, uid))
    reader = small_store.read_session("s")
    info = reader.info()
    assert info.head == head and info.event_count == head
    with small_store.open_session("s") as session:
        assert session.head == head and session.current_turn == 3
        with pytest.raises(TurnError):
            session.append({"x": 1}, turn=2)
        assert session.append({"x": 1}) == head + 1  # turn 3 is finished: this is turn 4
    assert reader.get_turn(4).events[0].seq == head + 1


def test_get_turn_finds_each_turn_across_many_segments(small_store):
    expected = {}
    with small_store.create_session("s") as session:
        for turn in range(1, 60, 2):  # odd turns only, of varying size
            events = [{"turn": turn, "j": j, "pad": "p" * 400} for j in range(turn % 7 + 1)]
            session.append_many(events, turn=turn)
            if turn % 3:
                session.finish_turn(turn)
            expected[turn] = ([e["j"] for e in events], bool(turn % 3))
    reader = small_store.read_session("s")
    assert len(os.listdir(os.path.join(reader.path, "log"))) > 10
    for turn in range(0, 62):
        found = reader.get_turn(turn)
        if turn in expected:
            assert found is not None
            assert ([e.data["j"] for e in found.events], found.finished) == expected[turn]
        else:
            assert found is None
    assert [t.number for t in reader.get_turns()] == sorted(expected)


def test_bad_events_are_refused_and_nothing_is_written(store):
    session = store.create_session("s")
    session.append({"ok": 1})
    before = tree_snapshot(store.path)
    for bad in ([1, 2], "text", None, {"x": object()}, {"x": {1, 2, 3j}}):
        with pytest.raises(InvalidEvent):
            session.append(bad)
    for kind in ("fsstore.turn_finished", "fsstore.anything", ""):
        with pytest.raises(InvalidEvent, match="not allowed"):
            session.append({"x": 1}, kind=kind)
    for turn in (-1, 1.5, "2", True):
        with pytest.raises(InvalidEvent):
            session.append({"x": 1}, turn=turn)
    with pytest.raises(InvalidEvent):
        session.append_many([{"ok": 2}, {"bad": object()}])  # a batch is all or nothing
    assert tree_snapshot(store.path) == before and session.head == 1
    session.close()


def test_an_oversized_batch_is_refused_and_nothing_is_written(tmp_path):
    store = fsstore.open_store(tmp_path / "store", max_record_bytes=1000)
    with store.create_session("s") as session:
        before = tree_snapshot(store.path)
        with pytest.raises(RecordTooLarge, match="attachments"):
            session.append({"big": b"x" * 2000})
        with pytest.raises(RecordTooLarge):
            session.append_many([{"x": "y" * 300}] * 4)
        assert tree_snapshot(store.path) == before
        assert session.append({"small": 1}) == 1


def test_durability_fsync_acknowledges_each_append_only_once_synced(store):
    with store.create_session("s", durability="fsync") as session:
        for index in range(5):
            session.append({"i": index})
            assert session.synced_head == session.head


def test_durability_none_buffers_until_a_barrier(tmp_path):
    store = fsstore.open_store(tmp_path / "store", durability="none")
    session = store.create_session("s")
    session.append({"i": 1})
    other = fsstore.open_store(tmp_path / "store").read_session("s")
    assert other.head == 0  # still in the writer's buffer
    assert [e.seq for e in session.events()] == [1]  # a writer reads its own writes
    session.append({"i": 2})
    session.finish_turn()
    assert other.head == 3 and session.synced_head == 0  # handed to the OS, never fsynced
    session.close()


def test_group_commit_by_record_count(store):
    with store.create_session("s", durability=Durability("flush", group_commit_records=3)) as s:
        s.append({"i": 1})
        s.append({"i": 2})
        assert s.synced_head == 0
        s.append({"i": 3})
        assert s.synced_head == 3


def test_group_commit_by_time_syncs_in_the_background_when_appends_pause(store):
    with store.create_session("s", durability=Durability("flush", group_commit_ms=5)) as s:
        s.append({"i": 1})
        deadline = time.monotonic() + 30  # a generous bound, not a timing assertion
        while s.synced_head != 1 and time.monotonic() < deadline:
            time.sleep(0.002)
        assert s.synced_head == 1


def test_group_commit_over_the_in_process_buffer_writes_and_syncs_together(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    durability = Durability("none", group_commit_records=3)
    with store.create_session("s", durability=durability) as session:
        other = fsstore.open_store(tmp_path / "store").read_session("s")
        session.append({"i": 1})
        session.append({"i": 2})
        assert other.head == 0 and session.synced_head == 0  # still in the process
        session.append({"i": 3})
        assert other.head == 3 and session.synced_head == 3  # written and fsynced at once
        session.append({"i": 4})
        session.finish_turn()  # a barrier fsyncs with group commit
        assert session.synced_head == 5


def test_settings_are_checked_with_a_typed_error(tmp_path):
    with pytest.raises(fsstore.InvalidSetting):
        Durability("sometimes")
    with pytest.raises(fsstore.InvalidSetting):
        Durability("fsync", group_commit_ms=10)
    for options in ({"segment_size": 100}, {"segment_size": 2 << 30},
                    {"max_record_bytes": 0}, {"max_record_bytes": 1 << 40}):
        with pytest.raises(fsstore.InvalidSetting):
            fsstore.open_store(tmp_path / "s", **options)
    assert not (tmp_path / "s").exists()
    assert Durability("none", group_commit_ms=10).syncs and not Durability("none").syncs
    with pytest.raises(ValueError):  # also the builtin
        Durability("flush", group_commit_records=0)


def test_a_second_writer_is_refused_in_the_same_process_and_from_another_thread(store):
    session = store.create_session("s")
    with pytest.raises(SessionLocked, match="lock_timeout"):
        store.open_session("s")
    errors = []

    def other_thread():
        try:
            store.open_session("s", lock_timeout=0.05)
        except SessionLocked as exc:
            errors.append(exc)

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    assert len(errors) == 1
    session.close()
    store.open_session("s").close()


class _RefusalSpy:
    """The fcntl module, but telling when a flock(2) was refused: a writer is then
    waiting for the lock, not just about to ask for it."""

    def __init__(self) -> None:
        self.refused = threading.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(fcntl, name)

    def flock(self, fd: int, operation: int) -> None:
        try:
            fcntl.flock(fd, operation)
        except BlockingIOError:
            self.refused.set()
            raise


def test_a_waiting_writer_gets_the_session_once_the_first_closes(store, monkeypatch):
    session = store.create_session("s")
    session.append({"from": "first"})
    spy = _RefusalSpy()
    monkeypatch.setattr(lease_module, "fcntl", spy)
    got = []

    def waiter():
        with store.open_session("s", lock_timeout=60) as second:
            got.append(second.append({"from": "second"}))

    thread = threading.Thread(target=waiter)
    thread.start()
    try:
        assert spy.refused.wait(60)  # the second writer was turned away: it waits now
        assert got == []
    finally:
        session.close()
        thread.join()
    assert got == [2]


def test_one_session_object_is_safe_from_many_threads(store):
    session = store.create_session("s")

    def work(worker):
        for index in range(200):
            session.append_many([{"w": worker, "i": index}] * 2)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    session.close()
    events = list(store.read_session("s").events())
    assert [e.seq for e in events] == list(range(1, 1601))
    for first, second in zip(events[::2], events[1::2], strict=True):
        assert first.data == second.data  # each batch landed whole and together


def test_a_closed_session_refuses_use(store):
    session = store.create_session("s")
    session.close()
    session.close()  # closing twice is fine
    with pytest.raises(SessionClosed):
        session.append({"x": 1})


def test_metadata_updates_are_atomic_and_listed(store):
    with store.create_session("s", title="first", tags=["a"], metadata={"k": 1}) as session:
        session.update_metadata(title="second")
        session.update_metadata(metadata={"k": 2, "nested": [1, 2]})
        with pytest.raises(fsstore.InvalidMetadata):
            session.update_metadata(metadata={"bad": object()})
        with pytest.raises(fsstore.InvalidMetadata):
            session.update_metadata(title=7)
        with pytest.raises(fsstore.InvalidMetadata):
            session.update_metadata(tags=["ok", 3])
    (info,) = store.list_sessions()
    assert (info.title, info.tags, info.metadata) == ("second", ["a"], {"k": 2, "nested": [1, 2]})


def test_async_variants_do_not_block_the_event_loop(store):
    async def main():
        session = store.create_session("s")
        ticks = []

        async def ticker():
            for _ in range(5):
                ticks.append(1)
                await asyncio.sleep(0)

        seqs, _ = await asyncio.gather(session.aappend_many([{"i": i} for i in range(3)]),
                                       ticker())
        assert seqs == [1, 2, 3]
        assert await session.aappend({"i": 3}) == 4
        await session.afinish_turn()
        turn = await session.aget_turn(1)
        assert turn is not None and turn.finished and len(turn.events) == 4
        assert len(await session.aget_turns()) == 1
        assert [event.seq async for event in session.aevents(batch=2)] == [1, 2, 3, 4]
        seen = [event.seq async for event in session.aevents(batch=2, include_internal=True)]
        assert seen == [1, 2, 3, 4, 5]
        await session.aclear()
        await session.aclose()
        assert ticks == [1] * 5

    asyncio.run(main())


def test_a_failed_fsync_is_never_acknowledged_and_reopening_recovers_the_prefix(tmp_path):
    root = tmp_path / "store"
    store = fsstore.open_store(root)
    store.create_session("s").close()
    for errno_value in (errno.ENOSPC, errno.EIO):
        io = CrashSimIO(str(root))
        io.fail_errno = errno_value
        faulty = fsstore.open_store(root, io=io, durability="fsync")
        session = faulty.open_session("s")
        head = session.head
        session.append({"ok": True})
        io.fail_at = io.ops + 2  # the fdatasync of the next append
        with pytest.raises(WriteFailed) as caught:
            session.append({"lost": True})
        assert caught.value.errno == errno_value
        with pytest.raises(WriteFailed, match="reopen"):
            session.append({"after": "failure"})
        session.close()
        events = list(store.read_session("s").events())
        # the failed batch reached the page cache but was never acknowledged: it may or
        # may not be there, and anything after it was refused
        assert [e.seq for e in events] in (list(range(1, head + 2)), list(range(1, head + 3)))
    with store.open_session("s") as session:
        session.append({"healthy": True})
    assert [f for f in store.verify() if f.level == "problem"] == []


def test_a_failed_write_that_tore_its_record_is_set_aside_on_reopen(tmp_path):
    root = tmp_path / "store"
    store = fsstore.open_store(root)
    store.create_session("s").close()
    io = CrashSimIO(str(root))
    session = fsstore.open_store(root, io=io).open_session("s")
    session.append({"first": 1})
    io.fail_at = io.ops + 1  # the pwrite: half the record reaches the file, then ENOSPC
    with pytest.raises(WriteFailed):
        session.append({"second": "x" * 500})
    session.close()
    with store.open_session("s") as reopened:
        assert reopened.head == 1 and reopened.recovered_torn_tail is not None
        assert reopened.append({"third": 3}) == 2


def test_floats_keep_their_exact_value(store):
    with store.create_session("s") as session:
        session.append({"v": [math.pi, -0.0, 1e308, math.inf, 5e-324]})
    (event,) = store.read_session("s").events()
    assert event.data["v"] == [math.pi, -0.0, 1e308, math.inf, 5e-324]
