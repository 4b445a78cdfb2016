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
from fsstore import compaction, segment_file
from fsstore.cli import main
from fsstore.errors import CorruptionError, SessionLocked
from fsstore.segment_header import SEGMENT_HEADER_SIZE

TEXT = "the deploy script fails on a path with spaces; quote $1 and retry " * 4


def build(root: Path, turns: int = 120, segment_size: int = 8192, chain: bool | None = None
          ) -> fsstore.Store:
    """A session ``s`` of messages, state and queue records over many small segments."""
    store = fsstore.open_store(root, segment_size=segment_size, chain=chain)
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


@pytest.mark.parametrize("chain", [False, True], ids=["unchained", "chained"])
def test_a_compacted_file_is_plain_msgpack_frames_under_zstd(tmp_path, chain):
    """Any zstd and msgpack library reads a compacted file: the chunks are zstd frames
    of the segment's frames, whose payloads are plain msgpack."""
    store = build(tmp_path / "store", turns=40, chain=chain)
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
    seq, off, types = 1, 0, set()
    while off < len(plain):
        _, length, first_seq, count, frame_type = struct.unpack_from("<IIQII", plain, off)
        ts, turn, entries = msgpack.unpackb(plain[off + 24:off + 24 + length])
        assert first_seq == seq and len(entries) == count
        seq += count
        types.add(frame_type)
        # a chained frame holds its chain value (and a run's first, its anchor) before
        # its trailer (FORMAT.md 3.4)
        off += ((24 + length + 7) & ~7) + {1: 0, 3: 32, 4: 64}[frame_type] + 8
    assert seq > 100
    assert types == ({3, 4} if chain else {1})


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


# --- replay of compacted files: chunks read one after the other, decompressed ahead ---


def many_chunks(tmp_path: Path, monkeypatch) -> tuple[fsstore.Store, list[tuple]]:
    """A session compacted into several files of many small chunks each (chunks of about
    2 KiB instead of 1 MiB): a replay reads the files after the first ahead."""
    store = build(tmp_path / "store", turns=80)
    before = everything(store.read_session("s"))
    monkeypatch.setattr(segment_file, "CHUNK_BYTES", 2048)
    store.compact(target_bytes=12_000)
    monkeypatch.undo()
    return store, before


def chunk_entries(data: bytes) -> list[tuple[int, int, int, int, int]]:
    """(plain_start, plain_size, packed_at, packed_size, packed_crc) of each chunk."""
    members, chunks = struct.unpack_from("<II", data, 52)
    at = SEGMENT_HEADER_SIZE + 16 * members
    packed_at = SEGMENT_HEADER_SIZE + 16 * (members + chunks) + 8
    found = []
    for index in range(chunks):
        start, size, packed_size, crc = struct.unpack_from("<IIII", data, at + 16 * index)
        found.append((start, size, packed_at, packed_size, crc))
        packed_at += packed_size
    return found


@pytest.mark.parametrize("one_call", [True, False], ids=["one-call", "chunk-by-chunk"])
def test_a_replay_of_many_compacted_files_of_many_chunks_reads_every_record(
        tmp_path, monkeypatch, one_call):
    """The chunks decompressed in one call (python-zstandard's C backend) or one by one
    (its cffi backend), ahead in a thread, and walked without being joined."""
    store, before = many_chunks(tmp_path, monkeypatch)
    compacted = segment_names(store)[:-1]
    assert len(compacted) >= 3
    assert all(len(chunk_entries((Path(store.path) / "sessions" / "s" / "log" / name)
                                 .read_bytes())) > 3 for name in compacted)
    monkeypatch.setattr(segment_file, "_MULTI", one_call and segment_file._MULTI)
    ahead = []
    real = segment_file.read_ahead
    monkeypatch.setattr(segment_file, "read_ahead",
                        lambda segment: ahead.append(segment.first_seq) or real(segment))
    monkeypatch.setattr("fsstore.log.read_ahead", segment_file.read_ahead)
    reader = store.read_session("s")
    assert everything(reader) == before
    assert len(ahead) >= len(compacted) - 1
    half = len(before) // 2
    assert [e.seq for e in reader.events(after_seq=half, limit=5, include_internal=True)
            ] == list(range(half + 1, half + 6))
    assert problems(store) == []


@pytest.mark.parametrize("damage", ["checksum", "zstd"])
def test_damage_to_a_compacted_file_read_ahead_is_reported_with_its_chunk(
        tmp_path, monkeypatch, damage):
    """A chunk of the second compacted file (decompressed in the background while the
    first is read): its checksum fails, or it is no zstd frame under a checksum that
    holds. The replay raises naming the file and the chunk, as a read of that file
    alone does."""
    store, _ = many_chunks(tmp_path, monkeypatch)
    path = Path(store.path) / "sessions" / "s" / "log" / segment_names(store)[1]
    data = bytearray(path.read_bytes())
    _, size, packed_at, packed_size, _ = chunk_entries(bytes(data))[2]
    if damage == "checksum":
        data[packed_at + packed_size // 2] ^= 0x20
    else:
        # a zstd frame claiming the right size, its body garbage, its checksum made to hold
        members, chunks = struct.unpack_from("<II", data, 52)
        head = zstandard.ZstdCompressor(write_content_size=True).compress(bytes(size))[:6]
        data[packed_at:packed_at + packed_size] = head + b"\xff" * (packed_size - 6)
        entry = SEGMENT_HEADER_SIZE + 16 * (members + 2)
        struct.pack_into("<I", data, entry + 12, crc32c(bytes(
            data[packed_at:packed_at + packed_size])))
        tables_end = SEGMENT_HEADER_SIZE + 16 * (members + chunks)
        struct.pack_into("<I", data, tables_end,
                         crc32c(bytes(data[SEGMENT_HEADER_SIZE:tables_end])))
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptionError, match="compacted chunk") as caught:
        list(store.read_session("s").events())
    assert (caught.value.path, caught.value.offset) == (str(path), packed_at)
    found = problems(store)
    assert [(f.path, f.offset) for f in found] == [(str(path), packed_at)]


def test_a_chunk_that_ends_inside_a_frame_is_damage(tmp_path, monkeypatch):
    """Chunks hold whole frames (FORMAT.md 3.2): a reader walks them one after the other,
    and a frame cut between two of them is damage, reported where it starts."""
    store = build(tmp_path / "store", turns=40)
    before = everything(store.read_session("s"))
    real = segment_file._chunk_bounds
    monkeypatch.setattr(segment_file, "_chunk_bounds", lambda data: [
        (start, end) for bound in real(data) for start, end in (
            [(bound[0], bound[0] + 100), (bound[0] + 100, bound[1])]
            if bound[1] - bound[0] > 200 else [bound])])
    store.compact()
    monkeypatch.undo()
    path = Path(store.path) / "sessions" / "s" / "log" / segment_names(store)[0]
    with pytest.raises(CorruptionError, match="damaged record") as caught:
        list(store.read_session("s").events())
    assert (caught.value.path, caught.value.offset) == (str(path), SEGMENT_HEADER_SIZE)
    assert [f.path for f in problems(store)] == [str(path)]
    assert len(before) > 100


def test_a_segment_merged_into_a_compacted_file_scans_from_its_own_first_record(
        tmp_path, monkeypatch):
    """A member's view starting inside a chunk: its scan starts at the member's first
    frame and reads the members after it in the same file; a whole read of it holds
    the same bytes as the file from there."""
    store = build(tmp_path / "store", turns=80)
    before = everything(store.read_session("s"))
    monkeypatch.setattr(segment_file, "CHUNK_BYTES", 3000)
    store.compact(target_bytes=1 << 20)
    log = store.read_session("s")._log
    first_file = int(segment_names(store)[0].split(".")[0])
    with log.open_segment(first_file) as segment:
        assert segment.tables is not None
        starts = {chunk.plain_start for chunk in segment.tables.chunks}
        inside = [m for m in segment.tables.members if m.start not in starts]
        last = segment.tables.members[-1].first_seq
    member = inside[len(inside) // 2]
    scan = log.scan_segment(member.first_seq, is_last=False)
    events = [tuple(event) for event in scan]
    assert events == before[member.first_seq - 1:scan.expect_seq - 1]
    assert scan.expect_seq > last
    assert log.read_segment(member.first_seq)[SEGMENT_HEADER_SIZE:] == log.read_segment(
        first_file)[member.start:]
