"""Compaction under attack: damage, bombs, leftovers, forks, clears and old formats
(FORMAT.md 3.2, 5.5). Each test compares what readers return before and after."""

from __future__ import annotations

import os
import shutil
import struct
import threading
import tracemalloc
from pathlib import Path

import pytest
import zstandard
from crc32c import crc32c

import fsstore
from fsstore import compaction
from fsstore.errors import CorruptionError, SessionLocked
from fsstore.segment_header import SEGMENT_HEADER_SIZE

TEXT = "the deploy script fails on a path with spaces; quote $1 and retry " * 4
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def build(root: Path, turns: int = 60, segment_size: int = 8192,
          session_id: str = "s") -> fsstore.Store:
    """A session of messages (some edited and deleted), state, tool calls and
    snapshots over many small segments."""
    store = fsstore.open_store(root, segment_size=segment_size)
    with store.create_session(session_id) as session:
        write_turns(session, 1, turns)
    return store


def write_turns(session: fsstore.Session, start: int, end: int) -> None:
    for turn in range(start, end + 1):
        message = fsstore.Message.of_text("user", f"{turn}: {TEXT}")
        session.messages.append(message)
        session.append({"tool": "read_file", "n": turn}, kind="tool_call", turn=turn)
        session.commit([], state_patch={"turn": turn, "notes": {str(turn): TEXT[:40]}})
        if turn % 7 == 0:
            target = session.messages.last(3)[0]
            session.messages.edit(fsstore.Message.of_text("user", f"edited {turn}",
                                                          id=target.id))
        if turn % 11 == 0:
            session.messages.delete(session.messages.last(2)[0].id)
        if turn % 20 == 0:
            session.snapshot()
        session.finish_turn(turn)


def everything(reader: fsstore.SessionReader) -> list[tuple]:
    return [tuple(event) for event in reader.events(include_internal=True)]


def picture(reader: fsstore.SessionReader) -> dict:
    """What the readers of a session return, to compare before and after compaction."""
    events = everything(reader)
    head = events[-1][0] if events else 0
    out: dict = {"events": events, "head": reader.head, "state": reader.state()}
    for last in (1, 2, 5, 33, 150, 10_000):
        out[f"last{last}"] = [tuple(e) for e in reader.events(last=last,
                                                              include_internal=True)]
    start = events[0][0] - 1 if events else 0
    for after in sorted({start, start + 1, start + 7, head // 3, head // 2, head - 3, head}):
        if after >= start:
            out[f"after{after}"] = [tuple(e) for e in reader.events(
                after_seq=after, include_internal=True)][:40]
    for at in sorted({start + 1, head // 4, head // 2, head - 1, head}):
        if at > start:
            out[f"state_at{at}"] = reader.state_at(at)
    messages = reader.messages.last(10_000)
    out["messages"] = [(m.id, m.text) for m in messages]
    out["get"] = [reader.messages.get(m.id).text for m in messages[::5]]
    out["history"] = [[tuple(v) for v in reader.messages.history(m.id)]
                      for m in messages[::9]]
    out["page"] = [m.id for m in reader.messages.page(limit=7)]
    if messages:
        out["page_before"] = [m.id for m in reader.messages.page(
            before=messages[len(messages) // 2].id, limit=9)]
    out["usage"] = repr(reader.usage())
    return out


def segment_names(store: fsstore.Store, session_id: str = "s") -> list[str]:
    log = Path(store.path) / "sessions" / session_id / "log"
    return sorted(name for name in os.listdir(log) if name.endswith(".fslog"))


def problems(store: fsstore.Store, session_ids: list[str] | None = None) -> list:
    return [f for f in store.verify(session_ids) if f.level == "problem"]


def interrupted(store: fsstore.Store, monkeypatch, **kwargs) -> None:
    """A compaction that stopped after renaming its files in, before it unlinked the
    segments they merged: they stay as leftovers."""
    real = compaction._unlink
    monkeypatch.setattr(compaction, "_unlink",
                        lambda io, path: None if path.endswith(".fslog") else real(io, path))
    store.read_session(kwargs.pop("session_id", "s")).compact(**kwargs)
    monkeypatch.setattr(compaction, "_unlink", real)


def compacted_path(store: fsstore.Store, session_id: str = "s") -> Path:
    return Path(store.path) / "sessions" / session_id / "log" / segment_names(store,
                                                                              session_id)[0]


# --- damage and bombs ---------------------------------------------------------------


def tables_of(data: bytes) -> tuple[int, int, int]:
    members, chunks = struct.unpack_from("<II", data, 52)
    return members, chunks, SEGMENT_HEADER_SIZE + 16 * (members + chunks)


def rewrite_chunk(data: bytearray, index: int, packed: bytes) -> bytes:
    """``data`` with chunk ``index``'s bytes replaced by ``packed`` (of the same size),
    its table entry's checksum and the tables' checksum made to match."""
    members, chunks, tables_end = tables_of(bytes(data))
    at = SEGMENT_HEADER_SIZE + 16 * (members + index)
    plain_start, plain_size, packed_size, _ = struct.unpack_from("<IIII", data, at)
    assert len(packed) == packed_size
    packed_at = tables_end + 8 + sum(
        struct.unpack_from("<IIII", data, SEGMENT_HEADER_SIZE + 16 * (members + i))[2]
        for i in range(index))
    data[packed_at:packed_at + packed_size] = packed
    struct.pack_into("<IIII", data, at, plain_start, plain_size, packed_size, crc32c(packed))
    struct.pack_into("<I", data, tables_end,
                     crc32c(bytes(data[SEGMENT_HEADER_SIZE:tables_end])))
    return bytes(data)


@pytest.mark.parametrize("claimed", [1 << 31, 1 << 45])
def test_a_chunk_whose_zstd_header_claims_a_huge_size_is_refused_without_allocating_it(
        tmp_path, claimed):
    store = build(tmp_path / "store", turns=30)
    store.compact()
    path = compacted_path(store)
    data = bytearray(path.read_bytes())
    members, _, tables_end = tables_of(bytes(data))
    packed_size = struct.unpack_from("<IIII", data, SEGMENT_HEADER_SIZE + 16 * members)[2]
    packed_at = tables_end + 8
    packed = bytes(data[packed_at:packed_at + packed_size])
    # the zstd frame header: magic, descriptor, window / content size. Rewritten to an
    # 8-byte content size field claiming ``claimed`` bytes, the blocks kept, cut to size
    descriptor = packed[4]
    single = descriptor & 0x20
    size_field = {0: 1 if single else 0, 1: 2, 2: 4, 3: 8}[descriptor >> 6]
    head = 5 + (0 if single else 1)
    bomb = (packed[:4] + bytes([(descriptor & 0x3F) | 0xC0]) + packed[5:head]
            + struct.pack("<Q", claimed) + packed[head + size_field:])
    bomb = bomb[:packed_size].ljust(packed_size, b"\0")
    assert zstandard.frame_content_size(bomb) == claimed
    path.write_bytes(rewrite_chunk(data, 0, bomb))
    tracemalloc.start()
    try:
        with pytest.raises(CorruptionError) as caught:
            list(store.read_session("s").events())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert caught.value.path == str(path)
    assert peak < 64 << 20
    assert problems(store)[0].path == str(path)


def test_every_byte_flip_in_a_compacted_files_header_and_tables_is_reported(tmp_path):
    """Every byte of the header, the member and chunk tables and what ends them, and
    bytes spread over the chunks: a flip there reads as damage naming the file."""
    root = tmp_path / "store"
    build(root, turns=16, segment_size=4096)
    store = fsstore.open_store(root, create=False)
    store.compact()
    path = compacted_path(store)
    clean = path.read_bytes()
    members, _, tables_end = tables_of(clean)
    assert members > 1
    places = list(range(tables_end + 8)) + list(range(tables_end + 8, len(clean), 97))
    missed = []
    for at in places:
        data = bytearray(clean)
        data[at] ^= 0x40
        path.write_bytes(bytes(data))
        try:
            list(fsstore.open_store(root, create=False).read_session("s").events())
        except CorruptionError as exc:
            assert exc.path == str(path), at
            continue
        missed.append(at)
    path.write_bytes(clean)
    assert missed == []


# --- forks -------------------------------------------------------------------------


@pytest.mark.parametrize("place", [(1, -1), (1, 0), (1, 2), (2, -1), (2, 3)])
def test_a_fork_inside_a_leftover_of_an_interrupted_merge_ends_where_it_was_asked(
        tmp_path, monkeypatch, place):
    """At, just before and inside the second and third segment files, leftovers merged
    into the first: the fork holds the history up to at_seq, not the compacted file's
    frames after it."""
    store = build(tmp_path / "store", turns=40)
    before = everything(store.read_session("s"))
    interrupted(store, monkeypatch)
    names = segment_names(store)
    index, shift = place
    with store.read_session("s")._log.open_segment(int(names[0].split(".")[0])) as merged:
        assert int(names[index].split(".")[0]) in merged.members_after
    at_seq = int(names[index].split(".")[0]) + shift
    store.fork_session("s", "f", at_seq=at_seq).close()
    assert everything(store.read_session("f")) == before[:at_seq]
    with store.open_session("f") as session:
        session.append({"x": 1}, kind="note", turn=999)
    assert [e[0] for e in everything(store.read_session("f"))] == list(range(1, at_seq + 2))
    assert problems(store) == []


def test_forks_at_every_kind_of_place_in_a_merged_log_hold_their_prefix(tmp_path):
    """At a member boundary, inside a member, inside a batch, at a checkpoint, a fork of
    a fork, each then compacted again with other targets."""
    store = build(tmp_path / "store", turns=40)
    with store.open_session("s") as session:
        batches = [session.append_many([{"i": i, "pad": TEXT} for i in range(9)],
                                       kind="batch", turn=40 + k) for k in range(1, 6)]
        checkpoint = session.checkpoint("cp")
        write_turns(session, 46, 50)
    before = everything(store.read_session("s"))
    store.compact(target_bytes=20_000)
    log = store.read_session("s")._log
    files = [int(n.split(".")[0]) for n in segment_names(store)]
    members = []
    for first in files[:-1]:
        with log.open_segment(first) as segment:
            members += [m.first_seq for m in segment.tables.members] if segment.tables \
                else [first]
    seqs = sorted({members[1] - 1, members[1], members[2] + 1, members[-1] - 1,
                   files[1] - 1, files[1], len(before) - 1, len(before),
                   batches[1][4], batches[3][0], batches[4][8]})
    for at_seq in seqs:
        store.fork_session("s", f"f{at_seq}", at_seq=at_seq).close()
        store.fork_session(f"f{at_seq}", f"g{at_seq}", at_seq=max(1, at_seq - 3)).close()
    store.fork_session("s", "cp", at_checkpoint=checkpoint.id).close()
    store.compact(target_bytes=1 << 30)
    assert everything(store.read_session("cp")) == before[:checkpoint.seq]
    assert store.read_session("cp").state() == store.read_session("s").state_at(
        checkpoint.seq)
    for at_seq in seqs:
        assert everything(store.read_session(f"f{at_seq}")) == before[:at_seq], at_seq
        assert everything(store.read_session(f"g{at_seq}")) == before[:max(1, at_seq - 3)]
    assert everything(store.read_session("s")) == before
    assert problems(store) == []


# --- older formats -----------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1", "v1.1", "v1.2", "v1.2-work", "v1.3", "v1.5"])
def test_stores_of_every_older_format_read_the_same_after_compaction(tmp_path, version):
    root = tmp_path / "store"
    shutil.copytree(FIXTURES / version / "store", root)
    store = fsstore.open_store(root, create=False)
    ids = store.session_ids()
    before = {sid: picture(store.read_session(sid)) for sid in ids}
    store.compact(target_bytes=1)
    store.compact()
    assert {sid: picture(store.read_session(sid)) for sid in ids} == before
    assert problems(store) == []
    # a writer goes on over them, rolling over often; then compacted again
    small = fsstore.open_store(root, create=False, segment_size=4096)
    for sid in ids[:2]:
        with small.open_session(sid) as session:
            write_turns(session, 500, 512)
    grown = {sid: picture(small.read_session(sid)) for sid in ids}
    interrupted_store = fsstore.open_store(root, create=False)
    assert interrupted_store.compact(target_bytes=30_000).files_written > 0
    assert {sid: picture(small.read_session(sid)) for sid in ids} == grown
    fork_from = ids[0]
    head = small.read_session(fork_from).head
    small.fork_session(fork_from, "forked", at_seq=max(1, head - 5)).close()
    assert everything(small.read_session("forked")) == grown[fork_from]["events"][:head - 5]
    assert problems(small) == []


# --- a writer's clear, rollovers and edits while a compaction runs -----------------


@pytest.mark.parametrize("when", ["before_rename", "after_rename"])
def test_a_clear_while_a_compaction_writes_brings_no_cleared_record_back(
        tmp_path, monkeypatch, when):
    store = build(tmp_path / "store", turns=30)
    session = store.open_session("s")
    head = session.head
    cleared = []

    def clear() -> None:
        if not cleared:
            cleared.append(True)
            session.clear()
            session.messages.append(fsstore.Message.of_text("user", "after the clear"))
            session.append({"after": 1}, kind="note", turn=1)

    if when == "before_rename":
        real_verify = compaction._verify_written

        def verify_then_clear(*args, **kwargs):
            real_verify(*args, **kwargs)
            clear()
        monkeypatch.setattr(compaction, "_verify_written", verify_then_clear)
    else:
        real_unlink = compaction._unlink

        def clear_then_unlink(io, path):
            clear()
            real_unlink(io, path)
        monkeypatch.setattr(compaction, "_unlink", clear_then_unlink)
    store.read_session("s").compact()
    monkeypatch.undo()
    assert cleared
    reader = store.read_session("s")
    events = everything(reader)
    assert [e[0] for e in events] == [head + 1, head + 2]
    assert [m.text for m in reader.messages.last(100)] == ["after the clear"]
    assert problems(store) == []
    session.append({"after": 2}, kind="note", turn=2)
    session.roll_over() if hasattr(session, "roll_over") else None
    write_turns(session, 3, 12)
    session.close()
    after = picture(store.read_session("s"))
    store.compact()
    assert picture(store.read_session("s")) == after
    assert problems(store) == []


# --- crash states ------------------------------------------------------------------


def crash_states_of_compaction_beside_a_writer(tmp_path: Path, every: int) -> None:
    """A compaction whose steps interleave with a writer's appends, rollovers, a
    snapshot, a checkpoint and message edits and deletes (all through one crash
    simulator); each crash state opens whole: a prefix of the history holding every
    record synced before the crash, that verifies, takes appends and compacts."""
    from crashsim import VARIANTS, CrashSimIO

    root = tmp_path / "store"
    build(root, turns=12, segment_size=4096)
    io = CrashSimIO(str(root))
    store = fsstore.open_store(root, io=io, create=False, segment_size=4096)
    session = store.open_session("s", durability="fsync")
    synced_before = session.head
    steps = iter(range(1_000))

    def writer_step() -> None:
        step = next(steps)
        if step > 6:
            return
        write_turns(session, 100 + step, 100 + step)  # edits, deletes, a snapshot
        if step == 2:
            session.checkpoint(f"cp{step}")
        if step == 4:
            session.snapshot()

    states: list[str] = []
    count = iter(range(100_000))

    def crash_here() -> None:
        if next(count) % every:
            return
        for variant in VARIANTS:
            dest = str(tmp_path / f"state-{len(states)}")
            io.materialize(dest, variant)
            states.append(dest)

    real_unlink, real_verify = compaction._unlink, compaction._verify_written

    def unlink(io_: object, path: str) -> None:
        writer_step()
        real_unlink(io_, path)  # type: ignore[arg-type]

    def verify(*args: object) -> None:
        writer_step()
        real_verify(*args)  # type: ignore[arg-type]

    compaction._unlink, compaction._verify_written = unlink, verify  # type: ignore[assignment]
    io.on_op = crash_here
    try:
        store.read_session("s").compact(target_bytes=12_000)
    finally:
        compaction._unlink, compaction._verify_written = real_unlink, real_verify
        io.on_op = None
    session.close()
    expect = everything(fsstore.open_store(root, create=False).read_session("s"))
    assert len(states) > 8
    for dest in states:
        crashed = fsstore.open_store(dest, create=False)
        events = everything(crashed.read_session("s"))
        assert len(events) >= synced_before and events == expect[:len(events)], dest
        assert problems(crashed) == [], dest
        with crashed.open_session("s") as again:
            write_turns(again, 900, 901)
        grown = everything(crashed.read_session("s"))
        report = crashed.read_session("s").compact(target_bytes=1 << 20)
        assert everything(crashed.read_session("s")) == grown, dest
        assert report.segments_after <= 2
        assert problems(crashed) == [], dest
        shutil.rmtree(dest)


def test_crash_states_of_a_compaction_beside_a_writer_open_whole(tmp_path):
    crash_states_of_compaction_beside_a_writer(tmp_path, every=7)


@pytest.mark.long
def test_every_crash_state_of_a_compaction_beside_a_writer_opens_whole(tmp_path):
    crash_states_of_compaction_beside_a_writer(tmp_path, every=1)


# --- two compactions at once -------------------------------------------------------


def test_two_compactions_of_one_session_from_two_threads_lose_nothing(tmp_path):
    store = build(tmp_path / "store", turns=30)
    before = picture(store.read_session("s"))
    outcomes: list[object] = []

    def run(target: int) -> None:
        try:
            outcomes.append(store.read_session("s").compact(target_bytes=target,
                                                            lock_timeout=30))
        except SessionLocked as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=run, args=(t,)) for t in (1, 20_000, 1 << 22)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outcomes) == 3
    assert picture(store.read_session("s")) == before
    assert problems(store) == []
