"""``events(last=N)``: the end of a log, read from the end (``LogReader.last_events``)."""

from __future__ import annotations

import asyncio
import os

import pytest

import fsstore
from fsstore import CorruptionError, InvalidSetting, layout

SEGMENT = 4096


def _long_session(store, session_id="s", turns=40):
    """A session of many 4 KiB segments, with the store's own records between the
    caller's (state records, turn_finished records, a queue record)."""
    with store.create_session(session_id) as session:
        for turn in range(1, turns + 1):
            session.append_many([{"n": turn, "pad": "p" * 300}] * 3, turn=turn)
            session.set_state("turn", turn)
            if turn % 7 == 0:
                session.queue.enqueue("job", {"turn": turn})
            session.finish_turn(turn)
        return session.path


def _segments(session_path):
    log = layout.log_dir(session_path)
    return [os.path.join(log, n) for n in sorted(os.listdir(log)) if n.endswith(".fslog")]


def _opened_segments(reader, monkeypatch):
    """The segment files ``reader`` opens from now on."""
    opened: list[str] = []
    real_open = reader.io.open

    def counting_open(path, *args, **kwargs):
        if str(path).endswith(".fslog"):
            opened.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(reader.io, "open", counting_open)
    return opened


@pytest.fixture
def long_store(tmp_path):
    return fsstore.open_store(tmp_path / "store", segment_size=SEGMENT)


def test_last_n_events_are_the_tail_of_the_forward_read(long_store):
    _long_session(long_store)
    reader = long_store.read_session("s")
    for internal in (False, True):
        every = list(reader.events(include_internal=internal))
        for n in (0, 1, 2, 5, 17, 60, len(every) - 1, len(every), len(every) + 10):
            got = list(reader.events(last=n, include_internal=internal))
            assert got == (every[-n:] if n else []), (n, internal)


def test_last_combines_with_after_and_until_as_the_end_of_that_range(long_store):
    _long_session(long_store)
    reader = long_store.read_session("s")
    every = list(reader.events(include_internal=True))
    head = every[-1].seq
    for internal in (False, True):
        for after, until in ((0, None), (0, 50), (30, 200), (100, head), (0, 3), (head, None),
                             (40, 41), (200, 100)):
            forward = list(reader.events(after, until, include_internal=internal))
            for n in (1, 4, 25, 1000):
                got = list(reader.events(after, until, last=n, include_internal=internal))
                assert got == forward[-n:], (after, until, n, internal)


def test_a_small_last_on_a_long_log_reads_only_the_last_segments(long_store, monkeypatch):
    path = _long_session(long_store, turns=60)
    files = _segments(path)
    assert len(files) >= 20
    reader = long_store.read_session("s")
    opened = _opened_segments(reader, monkeypatch)
    assert len(list(reader.events(last=3))) == 3
    # the newest, and the one before at most (and the log start's header: whether
    # retention dropped the history before some seq, FORMAT.md 3.3)
    assert set(opened) <= {*files[-2:], files[0]}, opened
    opened.clear()
    every = list(reader.events(include_internal=True))
    assert set(opened) == set(files)  # the forward read, for contrast
    opened.clear()
    until = every[len(every) // 2].seq
    list(reader.events(until_seq=until, last=2, include_internal=True))
    holding = [f for f in files if layout.parse_segment_name(os.path.basename(f)) <= until][-1]
    # the listing's newest header, and the segments at the seq asked for
    assert set(opened) - {files[-1], files[0]} <= {holding, files[files.index(holding) - 1]}


def test_only_the_store_own_records_at_the_end_are_read_past(long_store):
    with long_store.create_session("s") as session:
        session.append({"n": 1})
        for i in range(200):  # segments of nothing but queue records after it
            session.queue.enqueue("job", {"i": i, "pad": "q" * 200})
    reader = long_store.read_session("s")
    assert len(_segments(reader.path)) > 5
    (only,) = reader.events(last=5)
    assert only.data == {"n": 1}
    assert [e.kind for e in reader.events(last=2, include_internal=True)] == [
        "fsstore.queue", "fsstore.queue"]


def test_a_writer_reads_its_own_last_events_before_they_are_synced(long_store):
    with long_store.create_session("s", durability="none") as session:
        session.append_many([{"n": n} for n in range(5)])
        assert [e.data["n"] for e in session.events(last=2)] == [3, 4]


def test_a_torn_tail_of_the_newest_segment_is_the_end_not_an_error(long_store):
    path = _long_session(long_store, turns=5)
    reader = long_store.read_session("s")
    want = list(reader.events(last=4, include_internal=True))
    newest = _segments(path)[-1]
    with open(newest, "r+b") as handle:  # half a frame, as a writer dying mid-append leaves
        data_end = len(handle.read().rstrip(b"\0"))
        handle.seek(data_end)
        handle.write(b"\x11" * 24)
    assert list(reader.events(last=4, include_internal=True)) == want


def test_damage_in_a_segment_read_backwards_names_the_file_and_offset(long_store):
    path = _long_session(long_store, turns=20)
    files = _segments(path)
    victim = files[-3]
    with open(victim, "r+b") as handle:
        handle.seek(200)
        byte = handle.read(1)
        handle.seek(200)
        handle.write(bytes([byte[0] ^ 0x40]))
    reader = long_store.read_session("s")
    assert len(list(reader.events(last=2))) == 2  # the end is sound: nothing read there
    with pytest.raises(CorruptionError) as caught:
        list(reader.events(last=10_000))
    assert caught.value.path == victim and caught.value.offset is not None
    assert victim in str(caught.value)


def test_a_missing_middle_segment_is_a_gap_not_a_shorter_answer(long_store):
    path = _long_session(long_store, turns=20)
    files = _segments(path)
    os.unlink(files[-3])
    reader = long_store.read_session("s")
    with pytest.raises(CorruptionError, match="ends at seq") as caught:
        list(reader.events(last=10_000))
    assert caught.value.path == files[-2]


def test_last_is_an_int_and_does_not_combine_with_limit(store):
    with store.create_session("s") as session:
        session.append({"n": 1})
    reader = store.read_session("s")
    for bad in (-1, True, 1.5, "3"):
        with pytest.raises(InvalidSetting, match="last"):
            reader.events(last=bad)
    with pytest.raises(InvalidSetting, match="not both"):
        reader.events(limit=2, last=2)
    assert list(reader.events(last=0)) == []


def test_last_after_a_clear_reads_the_new_log_only(store):
    with store.create_session("s") as session:
        session.append_many([{"n": n} for n in range(5)])
        session.clear()
        session.append({"n": "after"})
    reader = store.read_session("s")
    assert [e.data["n"] for e in reader.events(last=10)] == ["after"]


def test_aevents_last_gives_the_same_events(long_store):
    _long_session(long_store, turns=10)
    reader = long_store.read_session("s")

    async def read():
        return [e async for e in reader.aevents(last=7, include_internal=True)]

    assert asyncio.run(read()) == list(reader.events(last=7, include_internal=True))


def test_fsstore_tail_starts_with_the_last_records_of_a_long_log(long_store, capsys):
    import json

    from fsstore.cli import main

    _long_session(long_store, turns=30)
    want = [e.seq for e in long_store.read_session("s").events(last=4, include_internal=True)]
    assert main(["--store", long_store.path, "tail", "s", "-n", "4", "--json"]) == 0
    assert [json.loads(line)["seq"] for line in capsys.readouterr().out.splitlines()] == want


def test_last_beside_a_writer_that_rolls_over_and_clears_is_always_a_run_of_the_log(
        long_store):
    import threading

    with long_store.create_session("s") as session:
        session.append({"n": 0})
    reader = long_store.read_session("s")
    done = threading.Event()

    def write():
        with long_store.open_session("s") as writer:
            for round_ in range(30):
                for i in range(20):
                    writer.append({"n": i, "pad": "w" * 400})
                if round_ % 10 == 9:
                    writer.clear()
        done.set()

    thread = threading.Thread(target=write)
    thread.start()
    reads = 0
    try:
        while not done.is_set() or reads < 5:
            got = [e.seq for e in reader.events(last=6, include_internal=True)]
            if got:  # empty right after a clear
                assert got == list(range(got[0], got[0] + len(got))), got
            reads += 1
    finally:
        thread.join()


def test_a_count_past_any_log_means_every_event(store):
    with store.create_session("s") as session:
        session.append_many([{"n": n} for n in range(5)])
        everything = [e.seq for e in session.events()]
        for huge in (2**63, 10**30):
            assert [e.seq for e in session.events(last=huge)] == everything
            assert [e.seq for e in session.events(limit=huge)] == everything
