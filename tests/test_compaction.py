"""Compaction: sealed segments rewritten zstd-compressed and merged (FORMAT.md 3.2, 5.5)."""

from __future__ import annotations

import json
import os
import struct
import threading
from pathlib import Path

import msgpack
import pytest
import zstandard
from crashsim import CrashSimIO
from crc32c import crc32c
from procs import Child

import fsstore
from fsstore import compaction
from fsstore.cli import main
from fsstore.errors import CorruptionError, SessionLocked
from fsstore.segment_header import SEGMENT_HEADER_SIZE

TEXT = "the deploy script fails on a path with spaces; quote $1 and retry " * 4


def build(root: Path, turns: int = 120, segment_size: int = 8192) -> fsstore.Store:
    """A session ``s`` of messages, state and queue records over many small segments."""
    store = fsstore.open_store(root, segment_size=segment_size)
    with store.create_session("s") as session:
        for turn in range(1, turns + 1):
            session.messages.append(fsstore.Message.of_text("user", f"{turn}: {TEXT}"))
            session.append({"tool": "read_file", "n": turn}, kind="tool_call", turn=turn)
            session.commit([], state_patch={"turn": turn, "notes": {str(turn): TEXT[:40]}})
            if turn % 40 == 0:
                session.snapshot()
            session.finish_turn(turn)
    return store


def everything(reader: fsstore.SessionReader) -> list[tuple]:
    return [tuple(event) for event in reader.events(include_internal=True)]


def segment_names(store: fsstore.Store, session_id: str = "s") -> list[str]:
    log = Path(store.path) / "sessions" / session_id / "log"
    return sorted(name for name in os.listdir(log) if name.endswith(".fslog"))


def problems(store: fsstore.Store) -> list:
    return [f for f in store.verify() if f.level == "problem"]


def test_compaction_keeps_every_record_and_shrinks_the_log(tmp_path):
    store = build(tmp_path / "store")
    reader = store.read_session("s")
    before, state = everything(reader), reader.state()
    messages = [m.text for m in reader.messages.last(500)]
    files_before = segment_names(store)
    report = store.compact()
    assert report.bytes_before > 3 * report.bytes_after
    assert report.segments_before == len(files_before) > report.segments_after
    assert len(segment_names(store)) == report.segments_after
    reader = store.read_session("s")
    assert everything(reader) == before
    assert reader.state() == state and reader.state_findings == []
    assert [m.text for m in reader.messages.last(500)] == messages
    assert [tuple(e) for e in reader.events(last=7, include_internal=True)] == before[-7:]
    assert problems(store) == []
    # a second compaction has nothing left to do
    again = store.compact()
    assert again.files_written == 0 and again.bytes_after == again.bytes_before


def test_a_writer_goes_on_after_compaction_and_its_next_open_finds_the_tail(tmp_path):
    store = build(tmp_path / "store", turns=60)
    with store.open_session("s") as session:
        store.compact()
        head = session.head
        session.append({"after": 1}, kind="note", turn=61)
        session.finish_turn(61)
    with store.open_session("s") as session:
        assert session.head == head + 2
        assert session.revision.seq == head + 2
    events = everything(store.read_session("s"))
    assert [e[0] for e in events] == list(range(1, head + 3))


def test_state_loads_from_snapshots_whose_segments_were_merged(tmp_path):
    store = build(tmp_path / "store")
    store.compact()
    reader = store.read_session("s")
    assert reader.state_at(400)["turn"] == 100  # four records a turn
    assert reader.state()["turn"] == 120
    assert reader.state_findings == []  # the snapshots' positions still hold
    names = segment_names(store)
    snap_positions = sorted(os.listdir(Path(store.path) / "sessions/s/state"))
    assert snap_positions and names


def test_messages_are_found_by_id_through_positions_recorded_before_the_merge(tmp_path):
    store = build(tmp_path / "store", turns=50)
    reader = store.read_session("s")
    ids = [m.id for m in reader.messages.last(50)]
    first = reader.messages.get(ids[3]).text
    store.compact()
    fresh = store.read_session("s")
    assert fresh.messages.get(ids[3]).text == first
    assert [m.id for m in fresh.messages.last(50)] == ids
    assert reader.messages.get(ids[3]).text == first  # a reader that held old rows


def test_forks_share_compacted_files_and_keep_links_made_before(tmp_path):
    store = build(tmp_path / "store", turns=60)
    store.fork_session("s", "early", at_seq=150).close()
    expect_early = everything(store.read_session("early"))
    store.compact()
    assert everything(store.read_session("early")) == expect_early  # its links kept
    store.fork_session("s", "late", at_seq=200).close()
    assert everything(store.read_session("late")) == everything(store.read_session("s"))[:200]
    store.compact()  # the forks too
    assert everything(store.read_session("early")) == expect_early
    assert everything(store.read_session("late"))[-1][0] == 200
    with store.open_session("late") as session:
        session.append({"x": 1}, kind="note", turn=999)
    assert problems(store) == []


def interrupted(store: fsstore.Store, monkeypatch) -> None:
    """A compaction that stopped after renaming its files in, before it unlinked the
    segments they merged: they stay as leftovers."""
    real = compaction._unlink
    monkeypatch.setattr(compaction, "_unlink",
                        lambda io, path: None if path.endswith(".fslog") else real(io, path))
    store.compact()
    monkeypatch.setattr(compaction, "_unlink", real)


def test_leftovers_of_an_interrupted_merge_are_passed_over_then_removed(tmp_path, monkeypatch):
    store = build(tmp_path / "store", turns=60)
    before = everything(store.read_session("s"))
    count = len(segment_names(store))
    interrupted(store, monkeypatch)
    assert len(segment_names(store)) == count  # nothing unlinked
    reader = store.read_session("s")
    assert everything(reader) == before
    assert [tuple(e) for e in reader.events(last=300, include_internal=True)] == before[-300:]
    assert [tuple(e) for e in reader.events(after_seq=17, include_internal=True)] == before[17:]
    findings = store.verify()
    assert [f for f in findings if f.level == "problem"] == []
    assert any("merged" in f.message for f in findings if f.level == "note")
    with store.open_session("s") as session:
        session.append({"x": 1}, kind="note", turn=999)
    report = store.compact()
    assert report.leftovers_removed > 0
    assert everything(store.read_session("s"))[:-1] == before
    assert store.verify() == []


def test_a_watcher_following_the_log_sees_every_event_once_across_compactions(tmp_path):
    store = build(tmp_path / "store", turns=30)
    watcher = store.read_session("s").watch(poll_interval=0.05)
    seen: list[int] = []
    stop = threading.Event()

    def write() -> None:
        with store.open_session("s") as session:
            for turn in range(31, 91):
                session.append({"t": turn, "pad": TEXT}, kind="note", turn=turn)
                session.finish_turn(turn)
        stop.set()

    writer = threading.Thread(target=write)
    writer.start()
    while not stop.is_set():
        store.compact()
        seen.extend(e.seq for e in watcher.get(timeout=0.01) if hasattr(e, "seq"))
    writer.join()
    head = store.read_session("s").head
    while not seen or seen[-1] < head:
        seen.extend(e.seq for e in watcher.get(timeout=0.5) if hasattr(e, "seq"))
    watcher.close()
    assert seen == list(range(1, head + 1))  # every record, once, in order


def test_a_second_compaction_of_a_session_waits_then_is_refused(tmp_path):
    store = build(tmp_path / "store", turns=20)
    log = os.path.join(store.path, "sessions", "s", "log")
    with compaction.log_folder_lock(log, 0):
        with pytest.raises(SessionLocked, match="another compaction"):
            store.read_session("s").compact()
        report = store.compact()
        assert list(report.skipped) == ["s"]


def test_dry_run_changes_nothing(tmp_path):
    store = build(tmp_path / "store", turns=40)
    folder = Path(store.path) / "sessions" / "s"
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    report = store.compact(dry_run=True)
    assert report.dry_run and report.files_written > 0
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before


def compacted_file(store: fsstore.Store) -> Path:
    store.compact()
    return Path(store.path) / "sessions" / "s" / "log" / segment_names(store)[0]


@pytest.mark.parametrize("where", ["chunk", "tables", "header", "cut"])
def test_damage_to_a_compacted_file_is_reported_with_its_file_and_offset(tmp_path, where):
    store = build(tmp_path / "store", turns=40)
    path = compacted_file(store)
    data = bytearray(path.read_bytes())
    members, chunks = struct.unpack_from("<II", data, 52)
    tables_end = SEGMENT_HEADER_SIZE + 16 * (members + chunks) + 8
    if where == "chunk":
        data[tables_end + 40] ^= 0x10
    elif where == "tables":
        data[SEGMENT_HEADER_SIZE + 3] ^= 0x01
    elif where == "header":
        data[20] ^= 0x01
    else:
        del data[-100:]
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptionError) as caught:
        list(store.read_session("s").events())
    assert caught.value.path == str(path)
    found = problems(store)
    assert found and found[0].path == str(path)


def test_a_chunk_that_decompresses_to_more_than_its_table_says_is_refused(tmp_path):
    store = build(tmp_path / "store", turns=40)
    path = compacted_file(store)
    data = bytearray(path.read_bytes())
    members, chunks = struct.unpack_from("<II", data, 52)
    tables_end = SEGMENT_HEADER_SIZE + 16 * (members + chunks)
    # a bomb: the first chunk's bytes replaced by a frame of far more zeros, its table
    # entry's size and crc made to match
    at = SEGMENT_HEADER_SIZE + 16 * members
    plain_start, plain_size, packed_size, _ = struct.unpack_from("<IIII", data, at)
    bomb = zstandard.ZstdCompressor().compress(bytes(64 << 20))[:packed_size]
    bomb = bomb.ljust(packed_size, b"\0")
    packed_at = tables_end + 8
    data[packed_at:packed_at + packed_size] = bomb
    struct.pack_into("<IIII", data, at, plain_start, plain_size, packed_size, crc32c(bomb))
    tables = bytes(data[SEGMENT_HEADER_SIZE:tables_end])
    struct.pack_into("<I", data, tables_end, crc32c(tables))
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptionError, match="compacted chunk"):
        list(store.read_session("s").events())


def test_a_compacted_file_is_plain_msgpack_frames_under_zstd(tmp_path):
    """Any zstd and msgpack library reads a compacted file: the chunks are zstd frames
    of the segment's frames, whose payloads are plain msgpack."""
    store = build(tmp_path / "store", turns=40)
    path = compacted_file(store)
    data = path.read_bytes()
    members, chunks = struct.unpack_from("<II", data, 52)
    at = SEGMENT_HEADER_SIZE + 16 * members
    packed_at = SEGMENT_HEADER_SIZE + 16 * (members + chunks) + 8
    plain = b""
    for index in range(chunks):
        _, _, packed_size, _ = struct.unpack_from("<IIII", data, at + 16 * index)
        plain += zstandard.ZstdDecompressor().decompress(data[packed_at:packed_at + packed_size])
        packed_at += packed_size
    seq, off = 1, 0
    while off < len(plain):
        _, length, first_seq, count, _ = struct.unpack_from("<IIQII", plain, off)
        ts, turn, entries = msgpack.unpackb(plain[off + 24:off + 24 + length])
        assert first_seq == seq and len(entries) == count
        seq += count
        off += ((24 + length + 7) & ~7) + 8
    assert seq > 100


def test_every_crash_state_of_a_compaction_opens_whole(tmp_path):
    root = tmp_path / "store"
    build(root, turns=24)
    expect = everything(fsstore.open_store(root, create=False).read_session("s"))
    io = CrashSimIO(str(root))
    states = io.record_states(tmp_path)
    fsstore.open_store(root, io=io, create=False).compact()
    io.on_op = None
    assert len(states) > 20
    for dest in states:
        store = fsstore.open_store(dest, create=False)
        assert everything(store.read_session("s")) == expect, dest
        assert problems(store) == [], dest
        with store.open_session("s") as session:
            session.append({"x": 1}, kind="note", turn=999)
        store.compact()
        assert everything(store.read_session("s"))[:-1] == expect


def test_the_command_compacts_and_reports_bytes(tmp_path, capsys):
    store = build(tmp_path / "store", turns=40)
    assert main(["--store", store.path, "compact", "--dry-run"]) == 0
    assert "would write" in capsys.readouterr().out
    assert main(["--store", store.path, "compact", "s", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["bytes_after"] < report["bytes_before"] and report["sessions"] == 1
    assert main(["--store", store.path, "compact"]) == 0
    assert "->" in capsys.readouterr().out


def writing_child(root: str, count: str) -> None:
    """A writer in another process: appends ``count`` records, rolling over often."""
    store = fsstore.open_store(root, create=False, segment_size=8192)
    with store.open_session("s") as session:
        print("READY", flush=True)
        for index in range(int(count)):
            session.append({"i": index, "pad": TEXT}, kind="note", turn=1000 + index)
    print("DONE END", flush=True)


def test_compaction_beside_a_writer_in_another_process_loses_and_repeats_nothing(tmp_path):
    root = tmp_path / "store"
    build(root, turns=10)
    store = fsstore.open_store(root, create=False)
    start = store.read_session("s").head
    with Child.function(writing_child, str(root), 400) as child:
        child.wait_for("READY")
        compactions = 0
        while child.process.poll() is None:
            store.compact()
            compactions += 1
            seqs = [e.seq for e in store.read_session("s").events(include_internal=True)]
            assert seqs == list(range(1, len(seqs) + 1))  # a prefix, without a hole
        assert "DONE END" in child.finish()
    store.compact()
    notes = [e.data["i"] for e in store.read_session("s").events() if e.kind == "note"]
    assert notes == list(range(400)) and compactions > 1
    assert store.read_session("s").head == start + 400
    assert problems(store) == []
