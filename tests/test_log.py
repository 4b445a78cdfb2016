from __future__ import annotations

import ast
import errno
import os
import re
import shutil
import struct
import subprocess
import threading
import time
import tracemalloc
from pathlib import Path

import msgpack
import msgspec
import pytest
from conftest import msgpack_values
from crc32c import crc32c
from hypothesis import given, settings
from hypothesis import strategies as st
from procs import Child, run
from runlength import examples

import fsstore
from fsstore import CorruptionError, FileIO, FormatVersionError, identity, layout
from fsstore.log import LogReader
from fsstore.log_format import SegmentScan, encode_frame
from fsstore.segment_header import (
    SEGMENT_HEADER_SIZE,
    decode_segment_header,
    encode_segment_header,
    mark_segment_header,
)


@pytest.fixture
def plain_store(tmp_path) -> fsstore.Store:
    """A store of sessions without a chain: their frames are of type 1 (FORMAT.md 3), the
    bytes the tests of the frame itself write and patch by hand."""
    return fsstore.open_store(tmp_path / "store", chain=False)


def segment_files(session) -> list[str]:
    log = layout.log_dir(session.path)
    return [os.path.join(log, n) for n in sorted(os.listdir(log)) if n.endswith(".fslog")]


def write_batches(store, sizes, session_id="s", payload=40):
    """Append one batch per size; return (session path, [(seqs, end offset in file)])."""
    session = store.create_session(session_id)
    batches = []
    for index, size in enumerate(sizes):
        events = [{"i": index, "j": j, "text": "x" * (payload + index % 7)} for j in range(size)]
        seqs = session.append_many(events, turn=1)
        batches.append((seqs, os.path.getsize(segment_files(session)[-1])))
    session.close()
    return session, batches


def without_mark(path: str) -> bytes:
    """Take the synced mark out of a segment's header, as if the barrier that wrote it
    had not reached the disk (what a power loss can leave); return the new image."""
    data = bytearray(Path(path).read_bytes())
    header = decode_segment_header(bytes(data), path)
    data[:SEGMENT_HEADER_SIZE] = mark_segment_header(header.static, 0)
    Path(path).write_bytes(bytes(data))
    return bytes(data)


def read_image(buf: bytes, path="seg", first=1, is_last=True) -> list[int]:
    """Read a segment image the way LogReader does; return the seqs it holds."""
    header = decode_segment_header(buf, path)
    return [event.seq for event in SegmentScan(buf, path, header.first_seq, is_last,
                                               synced_end=header.synced_end)]


@pytest.mark.parametrize("chain", [False, True], ids=["unchained", "chained"])
def test_truncating_the_segment_at_every_offset_reads_an_exact_prefix_of_batches(tmp_path,
                                                                                 chain):
    store = fsstore.open_store(tmp_path / "store", chain=chain)
    session, batches = write_batches(store, [1, 3, 1, 2, 5, 1, 1, 4, 1, 2])
    (path,) = segment_files(session)
    full = without_mark(path)  # what a crash can cut off was never marked synced
    reader = LogReader(FileIO(), os.path.dirname(path))
    reader.chain = store.read_session("s").chain_rules  # (a cut in a chain value: a tear)
    for cut in range(SEGMENT_HEADER_SIZE, len(full) + 1):
        with open(path, "wb") as handle:
            handle.write(full[:cut])
        expected = [seq for seqs, end in batches if end <= cut for seq in seqs]
        assert [event.seq for event in reader.events()] == expected, cut
        assert reader.tail().head == (expected[-1] if expected else 0)


def test_a_torn_header_is_a_typed_error(store):
    session, _ = write_batches(store, [1])
    (path,) = segment_files(session)
    full = Path(path).read_bytes()
    for cut in (0, 10, SEGMENT_HEADER_SIZE - 1):
        with open(path, "wb") as handle:
            handle.write(full[:cut])
        with pytest.raises(CorruptionError) as caught:
            list(store.read_session("s").events())
        assert caught.value.path == path and caught.value.offset == 0


def test_the_next_writer_sets_a_torn_tail_aside_and_appends_after_the_prefix(store):
    session, batches = write_batches(store, [2, 3, 1])
    (path,) = segment_files(session)
    full = without_mark(path)
    cut = batches[1][1] + 13  # inside the third batch
    with open(path, "wb") as handle:
        handle.write(full[:cut])
    with store.open_session("s") as writer:
        assert writer.head == 5
        torn = writer.recovered_torn_tail
        assert torn is not None
        assert Path(torn).read_bytes() == full[batches[1][1]:cut].rstrip(b"\0")
        assert writer.append({"after": "crash"}) == 6
    assert [e.seq for e in store.read_session("s").events()] == [1, 2, 3, 4, 5, 6]
    findings = store.verify()
    assert [f.level for f in findings] == ["note"] and torn in findings[0].path


def test_every_single_bit_flip_in_a_sealed_segment_is_detected(tmp_path):
    store = fsstore.open_store(tmp_path / "store", segment_size=4096, chain=False)
    session, _ = write_batches(store, [1, 2, 1, 3, 1] * 6, payload=60)
    first, *_ = segment_files(session)
    sealed = Path(first).read_bytes()
    assert len(segment_files(session)) > 1
    whole = read_image(sealed, is_last=False)
    for bit in range(len(sealed) * 8):
        damaged = bytearray(sealed)
        damaged[bit // 8] ^= 1 << (bit % 8)
        if 52 <= bit // 8 < SEGMENT_HEADER_SIZE:
            # the synced mark and the header CRC: a flip reads as a mark torn by a crash
            # (taken as absent), which changes no record
            try:
                assert read_image(bytes(damaged), is_last=False) == whole
            except CorruptionError:
                pass
            continue
        with pytest.raises((CorruptionError, FormatVersionError)):
            read_image(bytes(damaged), is_last=False)


def test_every_single_bit_flip_in_the_last_segment_is_detected_or_reads_as_a_torn_last_batch(
    plain_store,
):
    store = plain_store
    session, batches = write_batches(store, [1, 2, 1, 3, 1], payload=20)
    (path,) = segment_files(session)
    image = without_mark(path)  # with the mark, damage to the last batch is detected too
    last_batch_start = batches[-2][1]
    before_last = [seq for seqs, _ in batches[:-1] for seq in seqs]
    for bit in range(len(image) * 8):
        damaged = bytearray(image)
        damaged[bit // 8] ^= 1 << (bit % 8)
        if 52 <= bit // 8 < SEGMENT_HEADER_SIZE:  # the (absent) mark and the header CRC
            try:
                assert read_image(bytes(damaged)) == before_last + [before_last[-1] + 1]
            except CorruptionError:
                pass
        elif bit // 8 < last_batch_start:
            with pytest.raises(CorruptionError):
                read_image(bytes(damaged))
        else:
            # Damage to the last record cannot be told from a torn write: the reader
            # stops before it, verify names it, the next writer sets its bytes aside.
            assert read_image(bytes(damaged)) == before_last


@pytest.mark.parametrize("chain", [False, True], ids=["unchained", "chained"])
def test_damage_in_the_middle_is_reported_with_file_and_offset_everywhere(tmp_path, chain):
    store = fsstore.open_store(tmp_path / "store", chain=chain)
    session, batches = write_batches(store, [1, 1, 1, 1])
    (path,) = segment_files(session)
    offset = batches[0][1]  # the second record starts where the first ended
    with open(path, "r+b") as handle:  # flip a byte of the timestamp (a constant could equal it)
        handle.seek(offset + 30)
        byte = handle.read(1)[0]
        handle.seek(offset + 30)
        handle.write(bytes([byte ^ 0xFF]))
    with pytest.raises(CorruptionError) as caught:
        list(store.read_session("s").events())
    assert (caught.value.path, caught.value.offset) == (path, offset)
    assert f"{path} at byte {offset}" in str(caught.value)
    if chain:
        # A writer takes up the active segment's run only when it holds (FORMAT.md 3.4,
        # "Writing"): it would otherwise vouch for the damage with its next value.
        with pytest.raises(CorruptionError, match="chain") as refused:
            store.open_session("s")
        assert refused.value.path == path
        (problem,) = store.verify()
        assert (problem.level, problem.path, problem.offset) == ("problem", path, offset)
        return
    # The writer opens from the end of the log (O(1)), cuts nothing, and appends after
    # the last valid record; readers still stop at the damage and name it.
    with store.open_session("s") as writer:
        assert writer.head == 4 and writer.recovered_torn_tail is None
        writer.append({"more": 1})
    with pytest.raises(CorruptionError) as again:
        list(store.read_session("s").events())
    assert (again.value.path, again.value.offset) == (path, offset)
    (problem,) = store.verify()
    assert (problem.level, problem.path, problem.offset) == ("problem", path, offset)


def test_a_valid_record_with_the_wrong_seq_is_corruption(plain_store):
    store = plain_store
    session, batches = write_batches(store, [1, 1])
    (path,) = segment_files(session)
    data = Path(path).read_bytes()
    second = data[batches[0][1]:batches[1][1]]
    with open(path, "ab") as handle:
        handle.write(second)  # a replayed (duplicated) frame
    with pytest.raises(CorruptionError, match="expected 3"):
        list(store.read_session("s").events())


def test_a_corrupt_length_never_makes_the_reader_allocate_it(store):
    session, batches = write_batches(store, [1, 1, 1])
    (path,) = segment_files(session)
    with open(path, "r+b") as handle:
        handle.seek(batches[0][1] + 4)  # length field of the second record
        handle.write(struct.pack("<I", 0xFFFFFFF0))
    tracemalloc.start()
    with pytest.raises(CorruptionError):
        list(store.read_session("s").events())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 4 << 20


def test_a_segment_file_larger_than_any_writer_makes_is_not_read(store, monkeypatch):
    session, _ = write_batches(store, [1])
    monkeypatch.setattr("fsstore.log.MAX_SEGMENT_FILE", 100)
    with pytest.raises(CorruptionError, match="larger than any writer makes"):
        list(store.read_session("s").events())


def test_a_segment_of_a_newer_major_version_is_refused(store):
    session, _ = write_batches(store, [1])
    (path,) = segment_files(session)
    data = bytearray(Path(path).read_bytes())
    struct.pack_into("<H", data, 8, 3)  # 2 is a compacted segment
    body = data[: SEGMENT_HEADER_SIZE - 4]
    struct.pack_into("<I", data, SEGMENT_HEADER_SIZE - 4, crc32c(body))
    Path(path).write_bytes(bytes(data))
    with pytest.raises(FormatVersionError, match="upgrade fsstore"):
        list(store.read_session("s").events())
    with pytest.raises(FormatVersionError):
        store.open_session("s")


def test_unknown_extension_types_in_a_record_are_refused(plain_store):
    store = plain_store
    session = store.create_session("s")
    session.close()
    (path,) = segment_files(session)
    payload = msgpack.packb([1.0, 1, [["event", msgpack.ExtType(42, b"boom")]]])
    frame = _frame_with_payload(1, payload)
    with open(path, "ab") as handle:
        handle.write(frame)
    with pytest.raises(CorruptionError, match="extension type 42"):
        list(store.read_session("s").events())


def _frame_with_payload(first_seq: int, payload: bytes) -> bytes:
    pad = -(24 + len(payload)) & 7
    size = 24 + len(payload) + pad + 8
    fields = struct.pack("<IQII", len(payload), first_seq, 1, 1)
    body = fields + payload + bytes(pad) + struct.pack("<I", size) + b"FSE\n"
    return struct.pack("<I", crc32c(body)) + body


def test_rollover_makes_segments_named_by_first_seq_that_read_back_in_order(small_store):
    with small_store.create_session("s") as session:
        for index in range(300):
            session.append({"i": index, "pad": "p" * 50}, turn=1 + index // 10)
    files = segment_files(session)
    assert len(files) > 5
    firsts = [layout.parse_segment_name(os.path.basename(f)) for f in files]
    reader = small_store.read_session("s")
    events = list(reader.events())
    assert [e.seq for e in events] == list(range(1, 301))
    assert [e.data["i"] for e in events] == list(range(300))
    starts = {e.seq for e in events}
    assert set(firsts) <= starts
    assert all(os.path.getsize(f) <= 4096 for f in files)
    assert list(reader.events(after_seq=123, limit=3)) == events[123:126]
    assert [e.seq for e in reader.events(after_seq=290, until_seq=295)] == [291, 292, 293, 294, 295]


def test_fsync_mode_preallocates_and_sealing_cuts_the_zeros(tmp_path):
    store = fsstore.open_store(tmp_path / "store", segment_size=128 << 10, durability="fsync")
    with store.create_session("s") as session:
        session.append({"x": 1})
        (path,) = segment_files(session)
        assert os.path.getsize(path) >= 64 << 10  # zeros preallocated past the record
        assert [e.seq for e in store.read_session("s").events()] == [1]
        for index in range(200):
            session.append({"i": index, "pad": "p" * 1000})
        sealed = segment_files(session)[0]
    reader = LogReader(FileIO(), os.path.dirname(sealed))
    image = reader.read_segment(1)
    assert not image.endswith(b"\0")  # no zeros after a sealed segment's last record
    assert [e.seq for e in store.read_session("s").events()] == list(range(1, 202))


def test_clear_keeps_seqs_going_and_leftovers_of_an_interrupted_clear_are_ignored(small_store):
    with small_store.create_session("s") as session:
        session.append_many([{"i": i, "pad": "p" * 300} for i in range(3)])
        session.append_many([{"i": i, "pad": "p" * 300} for i in range(30)])
        old = {f: Path(f).read_bytes() for f in segment_files(session)}
        session.clear()
        assert list(session.events()) == [] and session.head == 33
        assert session.append({"after": True}) == 34
    for path, content in old.items():  # as if the clear crashed before deleting these
        Path(path).write_bytes(content)
    reader = small_store.read_session("s")
    assert [e.seq for e in reader.events()] == [34]
    assert reader.info().event_count == 1
    notes = small_store.verify()
    assert {f.level for f in notes} == {"note"} and len(notes) == len(old)
    with small_store.open_session("s") as session:  # its next rollover finishes the clear
        session.append_many([{"pad": "p" * 300}] * 20)
    assert small_store.verify() == []
    assert [e.seq for e in reader.events()][0] == 34


def test_clear_of_an_empty_log_and_twice_in_a_row(store):
    with store.create_session("s") as session:
        session.clear()
        session.clear()
        assert session.append({"x": 1}) == 1
        session.clear()
        session.clear()
        assert session.append({"x": 2}) == 2
    assert [e.seq for e in store.read_session("s").events()] == [2]


def test_segments_are_plain_msgpack_for_any_reader(store):
    session, batches = write_batches(store, [2, 1])
    (path,) = segment_files(session)
    data = Path(path).read_bytes()
    start = SEGMENT_HEADER_SIZE
    length = struct.unpack_from("<I", data, start + 4)[0]
    ts, turn, entries = msgpack.unpackb(data[start + 24 : start + 24 + length])
    assert turn == 1 and [kind for kind, _ in entries] == ["event", "event"]
    assert entries[0][1]["i"] == 0


@settings(max_examples=examples(75, 150), deadline=None)
@given(st.lists(st.lists(st.tuples(st.text(min_size=1, max_size=6), msgpack_values), min_size=1,
                         max_size=4), min_size=1, max_size=6))
def test_frames_round_trip_through_the_scanner(batches):
    image = encode_segment_header(1, 1)
    seq = 1
    for entries in batches:
        image += encode_frame(seq, 1.5, 3, entries, 1 << 20)
        seq += len(entries)
    events = list(SegmentScan(image, "seg", 1, is_last=False))
    assert all((event.ts, event.turn) == (1.5, 3) for event in events)
    assert [e.seq for e in events] == list(range(1, seq))
    assert [(e.kind, e.data) for e in events] == [tuple(entry) for b in batches for entry in b]


def test_opening_a_log_lists_no_folder_when_the_tail_hint_holds(small_store, monkeypatch):
    with small_store.create_session("s") as session:
        session.append_many([{"pad": "p" * 300}] * 40)
    listed = []
    real = FileIO.listdir
    monkeypatch.setattr(FileIO, "listdir",
                        lambda self, path: listed.append(path) or real(self, path))
    assert small_store.read_session("s").head == 40
    with small_store.open_session("s") as session:
        assert session.head == 40
    assert [p for p in listed if p.endswith("log")] == []


@pytest.mark.parametrize("hint", [None, b"", b"garbage\n", b"00000000000000000001.fslog\n",
                                  b"00000000000000999999.fslog\n", b"\xff" * 100])
def test_a_missing_stale_or_bad_tail_hint_only_costs_a_listing(small_store, hint):
    with small_store.create_session("s") as session:
        for turn in (1, 2, 3):
            session.append_many([{"pad": "p" * 300}] * 15, turn=turn)
    path = os.path.join(small_store.path, "sessions", "s", "log", layout.TAIL_HINT)
    if hint is None:
        os.unlink(path)
    else:
        Path(path).write_bytes(hint)
    reader = small_store.read_session("s")
    assert (reader.head, reader.info().event_count) == (45, 45)
    with small_store.open_session("s") as session:
        assert (session.head, session.current_turn) == (45, 3)
        assert session.append({"x": 1}) == 46
    assert [e.seq for e in reader.events()] == list(range(1, 47))


# --- damage must never read as a clean end or as another session's data ------------------


def multi_segment_session(small_store, session_id="s", turns=6):
    """A finished multi-segment session (4 KiB segments): (session path, segment paths,
    the events it holds). After turn 2 the segment is rolled over and the state
    snapshotted, so a snapshot's position is the start of the sealed segment
    ``SNAPSHOT_SEGMENT`` of the list (state loads read from there)."""
    with small_store.create_session(session_id) as session:
        for turn in range(1, turns + 1):
            session.append_many([{"turn": turn, "pad": "p" * 700}] * 2, turn=turn)
            session.set_state("turn", turn)
            session.finish_turn(turn)
            if turn == 2:
                session._writer.roll_over()
                session.snapshot()
        path = session.path
    files = segment_files_at(path)
    assert len(files) > SNAPSHOT_SEGMENT + 1
    return path, files, list(
        small_store.read_session(session_id).events(include_internal=True))


SNAPSHOT_SEGMENT = 1  # the index of the segment that starts at the snapshot's position


def segment_files_at(session_path) -> list[str]:
    log = layout.log_dir(session_path)
    return [os.path.join(log, n) for n in sorted(os.listdir(log)) if n.endswith(".fslog")]


@pytest.mark.parametrize("shift", ["insert", "delete"])
def test_a_byte_inserted_or_removed_before_later_batches_is_corruption_not_a_torn_tail(
    store, shift
):
    session, batches = write_batches(store, [1, 2, 1, 3, 1, 2])
    (path,) = segment_files(session)
    image = without_mark(path)  # no synced mark: only the frames after it can tell
    last_start = batches[-2][1]
    for offset in (batches[0][1] + 3, batches[1][1] + 17, batches[2][1] + 40, last_start - 5):
        damaged = (image[:offset] + b"\x7f" + image[offset:] if shift == "insert"
                   else image[:offset] + image[offset + 1:])
        Path(path).write_bytes(damaged)
        with pytest.raises(CorruptionError, match="followed by a valid one") as caught:
            list(store.read_session("s").events())
        assert caught.value.path == path and caught.value.offset <= offset
        assert [f.level for f in store.verify()] == ["problem"]
    # damage inside the last batch, with nothing valid after it, is still a torn tail
    Path(path).write_bytes(image[:last_start + 9] + b"\x7f" + image[last_start + 9:])
    assert [e.seq for e in store.read_session("s").events()] == list(range(1, 9))


def test_synced_records_zeroed_after_finish_turn_are_corruption_not_a_clean_end(small_store):
    path, files, _ = multi_segment_session(small_store)
    last = files[-1]
    data = bytearray(Path(last).read_bytes())
    assert len(data) > SEGMENT_HEADER_SIZE
    data[SEGMENT_HEADER_SIZE:] = bytes(len(data) - SEGMENT_HEADER_SIZE)
    Path(last).write_bytes(bytes(data))
    reader = small_store.read_session("s")
    for read in (lambda: list(reader.events()), lambda: reader.head, reader.state,
                 lambda: small_store.open_session("s")):
        with pytest.raises(CorruptionError, match="made them durable") as caught:
            read()
        assert caught.value.path == last
    (problem,) = [f for f in small_store.verify() if f.level == "problem"]
    assert problem.path == last and "durable" in problem.message


def test_an_fsync_append_is_marked_synced_and_a_flush_append_is_not(plain_store):
    store = plain_store
    for mode, detected in (("fsync", True), ("flush", False)):
        # the process dies after its second append, before any barrier
        code = (
            "import os, fsstore\n"
            f"store = fsstore.open_store({store.path!r})\n"
            f"session = store.create_session({mode!r}, durability={mode!r})\n"
            "session.append({'a': 1})\n"
            "session.append({'b': 2})\n"
            "os._exit(0)\n"
        )
        run(code)
        (path,) = segment_files_at(os.path.join(store.path, "sessions", mode))
        image = Path(path).read_bytes().rstrip(b"\0")
        second = len(image) - (len(image) - SEGMENT_HEADER_SIZE) // 2
        Path(path).write_bytes(image[:second])  # the second frame lost, as a power loss may
        if detected:
            with pytest.raises(CorruptionError, match="made them durable"):
                list(store.read_session(mode).events())
        else:  # nothing synced it: losing it is what a power loss may do
            assert [e.seq for e in store.read_session(mode).events()] == [1]


class MarkSpyIO(FileIO):
    """Records each fdatasync and each rewrite of a synced mark, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def fdatasync(self, fd: int) -> None:
        self.calls.append("fdatasync")
        super().fdatasync(fd)

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        if offset == 52:  # MARK_AT: the synced mark, its crc and the header crc
            self.calls.append("mark")
        super().pwrite(fd, data, offset)


@pytest.mark.parametrize("how", ["sync", "checkpoint", "shared refresh"])
def test_frames_a_killed_writer_left_unsynced_are_fdatasynced_before_a_mark_claims_them(
        tmp_path, how):
    root = str(tmp_path / "store")
    if how == "shared refresh":
        store = fsstore.open_store(root, durability="flush", io=(spy := MarkSpyIO()))
        store.create_session("s").close()
        reopened = store.open_session("s", shared=True)
        assert reopened.synced_head == reopened.head == 0
    # a flush-mode writer appends after its last barrier, then is killed
    # (the shared one rolls over, so the other writer has to find the tail again)
    code = (
        "import os, fsstore\n"
        f"store = fsstore.open_store({root!r}, durability='flush', segment_size=4096)\n"
        "session = store.open_session('s', shared=True) if "
        f"{how == 'shared refresh'} else store.create_session('s')\n"
        "session.sync()\n"
        "session.append({'a': 'x' * 3000}); session.append({'b': 'x' * 3000})\n"
        "os._exit(0)\n"
    )
    run(code)
    if how != "shared refresh":
        store = fsstore.open_store(root, durability="flush", io=(spy := MarkSpyIO()))
        reopened = store.open_session("s")
        assert reopened.synced_head < reopened.head  # nothing says they reached the disk
    spy.calls.clear()
    if how == "checkpoint":
        reopened.checkpoint()
    else:
        reopened.sync()  # a shared writer first catches up: it finds the tail again
    assert reopened.head == reopened.synced_head == 2
    # the frames are made durable first; only then does a mark claim them
    assert spy.calls[:2] == ["fdatasync", "mark"]
    reopened.close()
    assert spy.calls[-1] == "fdatasync"  # close makes the mark durable too


def test_a_torn_or_garbage_rewrite_of_the_synced_mark_only_drops_the_mark(store):
    session, _ = write_batches(store, [1, 2])
    (path,) = segment_files(session)
    image = Path(path).read_bytes()
    assert decode_segment_header(image, path).synced_end == len(image)
    for junk in (bytes(12), b"\xa5" * 12, image[52:58] + b"\x01" * 6):
        Path(path).write_bytes(image[:52] + junk + image[64:])
        header = decode_segment_header(Path(path).read_bytes(), path)
        assert header.synced_end == 0 and header.first_seq == 1
        assert [e.seq for e in store.read_session("s").events()] == [1, 2, 3]


def test_a_segment_of_another_session_in_its_place_is_refused(small_store):
    _, files, _ = multi_segment_session(small_store, "a")
    _, other_files, _ = multi_segment_session(small_store, "b")
    assert [os.path.basename(f) for f in files] == [os.path.basename(f) for f in other_files]
    for index in (0, 1, len(files) - 1):
        original = Path(files[index]).read_bytes()
        Path(files[index]).write_bytes(Path(other_files[index]).read_bytes())
        reader = small_store.read_session("a")
        with pytest.raises(CorruptionError, match="belongs to another session") as caught:
            list(reader.events())
        assert caught.value.path == files[index]
        assert any(f.level == "problem" and f.path == files[index]
                   for f in small_store.verify())
        Path(files[index]).write_bytes(original)
    assert len(list(small_store.read_session("a").events())) > 0


def test_a_fork_reads_the_segments_it_shares_with_its_deleted_ancestors(small_store):
    _, files, events = multi_segment_session(small_store, "a")
    small_store.fork_session("a", "b").close()
    with small_store.fork_session("b", "c") as fork:
        fork.append({"own": 1})
    small_store.delete_session("a")
    small_store.delete_session("b")
    read = list(small_store.read_session("c").events(include_internal=True))
    assert read[:-1] == events and read[-1].data == {"own": 1}
    assert [f for f in small_store.verify() if f.level == "problem"] == []


def test_the_oldest_segment_deleted_is_corruption_not_a_shorter_log(small_store):
    _, files, _ = multi_segment_session(small_store)
    os.unlink(files[0])
    reader = small_store.read_session("s")
    with pytest.raises(CorruptionError, match="are missing") as caught:
        list(reader.events())
    assert caught.value.path == files[1]
    with pytest.raises(CorruptionError, match="are missing"):
        reader.get_turns()
    assert any(f.level == "problem" and "are missing" in f.message
               for f in small_store.verify())


@pytest.mark.parametrize("marked", [True, False], ids=["synced mark", "no mark (1.2)"])
def test_a_sealed_segment_cut_to_its_header_ends_in_an_error_not_a_loop(small_store, marked):
    path, files, _ = multi_segment_session(small_store)
    with small_store.open_session("s") as session:
        session.queue.enqueue("job", {"x": 1})
        session.inputs.submit({"y": 2})
    if not marked:  # as a segment written before marks: only the seq chain can tell
        for file in segment_files_at(path):
            without_mark(file)
    # the segment a snapshot starts from (the reads start there, not at the log start)
    os.truncate(files[SNAPSHOT_SEGMENT], SEGMENT_HEADER_SIZE)
    code = (
        "import sys, fsstore\n"
        "from fsstore.cli import main\n"
        f"store = fsstore.open_store({small_store.path!r}, create=False)\n"
        "reader = store.read_session('s')\n"
        "for read in (reader.state, reader.queue.items, reader.inputs.items):\n"
        "    try:\n"
        "        read()\n"
        "    except fsstore.CorruptionError:\n"
        "        pass\n"
        "    else:\n"
        "        sys.exit('no error from ' + read.__qualname__)\n"
        "for command in ('state', 'queue', 'inputs'):\n"
        f"    assert main(['--store', {small_store.path!r}, command, 's']) != 0, command\n"
    )
    run(code)  # fails with the child's stderr unless it exits 0, and ends a loop in time


def test_a_header_whose_log_start_is_after_its_first_seq_is_corruption(small_store):
    _, files, _ = multi_segment_session(small_store)
    data = bytearray(Path(files[-1]).read_bytes())
    first = struct.unpack_from("<Q", data, 16)[0]
    struct.pack_into("<Q", data, 24, first + 5)  # log_start
    struct.pack_into("<I", data, 60, crc32c(bytes(data[:60])))
    Path(files[-1]).write_bytes(bytes(data))
    reader = small_store.read_session("s")
    for read in (lambda: list(reader.events()), lambda: reader.head, reader.state):
        with pytest.raises(CorruptionError, match="after its own first seq"):
            read()
    assert any(f.level == "problem" for f in small_store.verify())


def rewrite_first_frame(path: str, payload: bytes) -> None:
    """Replace a one-frame segment's frame by a checksum-valid one holding ``payload``."""
    data = Path(path).read_bytes()
    header = data[:SEGMENT_HEADER_SIZE]
    length = len(payload)
    pad = -(24 + length) & 7
    body = struct.pack("<IQII", length, 1, 1, 1) + payload + bytes(pad)
    body += struct.pack("<I", 24 + length + pad + 8) + b"FSE\n"
    frame = struct.pack("<I", crc32c(body)) + body
    Path(path).write_bytes(header[:52] + bytes(12) + header[64:] + frame)


@pytest.mark.parametrize("payload", [
    msgpack.packb([1.0, -1, [["message", {"a": 1}]]]),
    b"\x93\xcb" + struct.pack(">d", 1.0) + b"\x01\x91\x92\xa7message" + b"\x91" * 100_000
    + b"\xc0",
], ids=["turn -1", "nested 100000"])
def test_a_checksum_valid_record_no_writer_writes_is_corruption(store, payload):
    with store.create_session("s"):
        pass
    (path,) = segment_files_at(os.path.join(store.path, "sessions", "s"))
    rewrite_first_frame(path, payload)
    with pytest.raises(CorruptionError) as caught:
        list(store.read_session("s").events())
    assert caught.value.path == path and caught.value.offset == SEGMENT_HEADER_SIZE
    assert [f.level for f in store.verify()] == ["problem"]


def deep(levels: int):
    value: object = 1
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize("value", [
    msgspec.msgpack.Ext(5, b"abc"),
    msgspec.Raw(b"\xc1"),
    msgspec.Raw(b"\x01\x02"),
    deep(200),
    deep(5000),
], ids=["ext", "raw junk", "raw two values", "nested 200", "nested 5000"])
def test_the_writer_refuses_what_readers_would_refuse_and_writes_nothing(store, value):
    with store.create_session("s") as session:
        session.append({"ok": 1})
        session.sync()
        (path,) = segment_files_at(session.path)
        before = Path(path).read_bytes()
        for write in (lambda: session.append({"x": value}),
                      lambda: session.set_state("k", value),
                      lambda: session.commit([{"x": 1}], state_patch={"k": value}),
                      lambda: session.queue.enqueue("job", value),
                      lambda: session.inputs.submit(value)):
            with pytest.raises((fsstore.InvalidEvent, fsstore.InvalidState)):
                write()
            assert session.head == 1
        assert Path(path).read_bytes() == before
        session.append({"still": "writable"})
    assert [e.data for e in store.read_session("s").events()] == [{"ok": 1},
                                                                 {"still": "writable"}]


def test_deep_but_allowed_nesting_reads_back(store):
    with store.create_session("s") as session:
        session.append({"x": deep(120)})
    ((event),) = list(store.read_session("s").events())
    assert event.data == {"x": deep(120)}


def test_the_errnos_a_fork_copies_on_are_the_ones_format_md_names():
    text = (Path(__file__).parent.parent / "docs" / "FORMAT.md").read_text()
    section = text[text.index("## 13. Forks"):text.index("## 14.")]
    named = set(re.findall(r"`(E[A-Z]+)`", section))
    assert named == set(fsstore.log_writer.NO_LINK_ERRNO_NAMES)
    numbers = {getattr(errno, name) for name in named if hasattr(errno, name)}
    assert numbers == fsstore.log_writer.NO_LINK_ERRNOS


def _package_imports(module: str) -> set[str]:
    """The fsstore modules ``module`` imports, anywhere in its source."""
    path = Path(fsstore.__file__).parent / f"{module}.py"
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            imported.update([node.module] if node.module else [a.name for a in node.names])
    return imported


def test_the_log_format_knows_nothing_of_the_reader_and_the_reader_nothing_of_the_writer():
    assert not _package_imports("log_format") & {"log", "log_writer"}
    assert "log_writer" not in _package_imports("log")
    assert "log_format" in _package_imports("log")


# --- every mutation of a real log reads as the original prefix or raises ------------------


def _insert(data: bytes, at: int) -> bytes:
    return data[:at] + b"\x5a" + data[at:]


def _delete(data: bytes, at: int) -> bytes:
    return data[:at] + data[at + 1:]


def _mutate(kind: str, files: list[str], other_files: list[str]) -> None:
    last, sealed = files[-1], files[0]
    if kind.startswith(("insert:", "delete:")):
        action, where, fraction = kind.split(":")
        path = last if where == "last" else sealed
        data = Path(path).read_bytes()
        at = SEGMENT_HEADER_SIZE + int((len(data) - SEGMENT_HEADER_SIZE) * float(fraction))
        Path(path).write_bytes(_insert(data, at) if action == "insert" else _delete(data, at))
    elif kind == "zero last frames":
        data = Path(last).read_bytes()
        Path(last).write_bytes(data[:SEGMENT_HEADER_SIZE] + bytes(len(data) - SEGMENT_HEADER_SIZE))
    elif kind.startswith("swap"):
        index = 0 if kind.endswith("oldest") else -1
        Path(files[index]).write_bytes(Path(other_files[index]).read_bytes())
    elif kind == "delete oldest":
        os.unlink(sealed)
    elif kind == "cut sealed to header":
        os.truncate(files[SNAPSHOT_SEGMENT], SEGMENT_HEADER_SIZE)
    else:
        raise AssertionError(kind)


MUTATIONS = [f"{a}:{w}:{f}" for a in ("insert", "delete") for w in ("last", "sealed")
             for f in ("0", "0.13", "0.5", "0.77", "0.999")] + [
    "zero last frames", "swap oldest", "swap newest", "delete oldest", "cut sealed to header"]


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_every_mutation_of_a_real_log_reads_as_the_original_prefix_or_raises(
    small_store, mutation
):
    path, files, events = multi_segment_session(small_store, "s")
    _, other_files, _ = multi_segment_session(small_store, "other")
    original = small_store.read_session("s")
    states = {seq: original.state_at(seq) for seq in range(0, events[-1].seq + 1)}
    turns = original.get_turns()
    _mutate(mutation, files, other_files)

    outcomes: dict[str, object] = {}

    def read_all() -> None:
        reader = small_store.read_session("s")
        reads = {
            "events": lambda: list(reader.events(include_internal=True)),
            "head": lambda: reader.head,
            "state": lambda: (reader.head, reader.state()),
            "turns": reader.get_turns,
            "queue": reader.queue.items,
            "inputs": reader.inputs.items,
        }
        for name, read in reads.items():
            try:
                outcomes[name] = read()
            except CorruptionError as exc:
                outcomes[name] = exc
        outcomes["verify"] = small_store.verify()

    worker = threading.Thread(target=read_all, daemon=True)
    worker.start()
    worker.join(120)
    assert not worker.is_alive(), f"{mutation}: a read did not end"
    assert "verify" in outcomes, f"{mutation}: a read raised something untyped"
    damaged = False
    for name, outcome in outcomes.items():
        if isinstance(outcome, CorruptionError):
            damaged = True
            continue
        # Every mutation here damages records a barrier made durable (the session was
        # closed): a read must return all of them or raise, never a shorter history.
        if name == "events":
            assert outcome == events, mutation
        elif name == "head":
            assert outcome == events[-1].seq, mutation
        elif name == "state":
            head, state = outcome  # type: ignore[misc]
            assert state == states[head], mutation
        elif name == "turns":
            read_turns = outcome
            assert all(t == o or (t.number == o.number and t.events == o.events[:len(t.events)])
                       for t, o in zip(read_turns, turns, strict=False)), mutation  # type: ignore
    problems = [f for f in outcomes["verify"] if f.level == "problem"]  # type: ignore
    if damaged:
        assert problems, f"{mutation}: reads raised but verify found no problem"


def test_a_session_keeps_its_uid_through_metadata_updates_and_names_it_in_new_files(small_store):
    with small_store.create_session("s") as session:
        uid = session.identity.uid
        session.update_metadata(title="renamed")
        for turn in range(1, 4):
            session.append_many([{"pad": "p" * 900}] * 3, turn=turn)
        session.snapshot()
    reader = small_store.read_session("s")
    assert reader.identity.uid == uid and reader.title == "renamed"
    for path in segment_files_at(reader.path):
        assert decode_segment_header(Path(path).read_bytes(), path).uid == uid
    (snap,) = os.listdir(os.path.join(reader.path, "state"))
    meta = fsstore.snapshot.read(FileIO(), os.path.join(reader.path, "state", snap),
                                 identity=reader.identity, chain=reader.chain_rules).meta
    assert meta["uid"] == fsstore.identity.to_text(uid)


def test_a_session_from_before_uids_reads_writes_and_forks_as_before(tmp_path):
    """A 1.1 store: its sessions have no uid and 1.0 segment headers. New segments and
    forks of them work, and the fork accepts the segments it shares."""
    root = tmp_path / "store"
    shutil.copytree(Path(__file__).parent.parent / "fixtures" / "v1.1" / "store", root)
    store = fsstore.open_store(root, create=False, segment_size=4096)
    session_id = "agent"
    before = list(store.read_session(session_id).events())
    with store.open_session(session_id) as session:
        assert session.identity is None
        for _ in range(3):
            session.append_many([{"pad": "p" * 900}] * 3)
        session._writer.roll_over()  # a 1.1 segment header with no uid
        session.append({"after": "rollover"})
    with store.fork_session(session_id, "child") as child:
        assert child.identity is not None and identity.NO_UID in child.identity.accepted
        child.append({"own": 1})
    store.delete_session(session_id)
    read = list(store.read_session("child").events())
    assert read[:len(before)] == before and read[-1].data == {"own": 1}
    assert [f for f in store.verify() if f.level == "problem"] == []


@pytest.mark.long
def test_a_byte_inserted_or_removed_anywhere_in_a_synced_log_is_reported(small_store):
    """The long version of the mutation test above: every byte offset of the last and of
    a sealed segment, a byte inserted and a byte removed."""
    _, files, events = multi_segment_session(small_store, "s")
    for path in (files[-1], files[0]):
        image = Path(path).read_bytes()
        for at in range(SEGMENT_HEADER_SIZE, len(image)):
            for damaged in (_insert(image, at), _delete(image, at)):
                Path(path).write_bytes(damaged)
                with pytest.raises(CorruptionError) as caught:
                    list(small_store.read_session("s").events())
                assert caught.value.path == path, at
        Path(path).write_bytes(image)
    assert list(small_store.read_session("s").events(include_internal=True)) == events


def test_records_an_older_writer_nested_deeper_read_and_fork_as_before(plain_store):
    # (an older writer wrote no chain: its sessions are unchained)
    store = plain_store
    with store.create_session("s"):
        pass
    (path,) = segment_files_at(os.path.join(store.path, "sessions", "s"))
    deep_data = {"x": deep(200)}  # accepted by writers before format 1.3
    with pytest.raises(fsstore.InvalidEvent, match="deeper than 128"):
        encode_frame(1, 1.0, 1, [("message", deep_data)], 1 << 20)
    frame = encode_frame(1, 1.0, 1, [("message", deep_data), ("message", {"y": 1})], 1 << 20,
                         check=False)
    without_mark(path)
    with open(path, "ab") as handle:
        handle.write(frame)
    assert [e.data for e in store.read_session("s").events()] == [deep_data, {"y": 1}]
    with store.fork_session("s", "f", at_seq=1) as fork:  # re-encodes the batch's first event
        assert [e.data for e in fork.events()] == [deep_data]


TURN_WRITER = """
import os, sys, fsstore
store = fsstore.open_store(sys.argv[1], segment_size=4096)
session = store.open_session("s")
print("READY", flush=True)
turn = 0
while not os.path.exists(sys.argv[2]):
    turn += 1
    session.append_many([{"pad": "p" * 300}] * 2, turn=turn)
    session.finish_turn(turn)
    if turn % 40 == 0:
        session.clear()
session.close()
"""


def _removed_by_a_clear(exc: fsstore.CorruptionError, root) -> None:
    """A copy tool lists a folder, then copies its files: segments a clear unlinks in
    between are not in the copy (docs/FORMAT.md, section 6, "Copies"). The copy then
    reads as missing segments, never as another history; and the clear did happen: the
    log now starts after them."""
    found = re.search(r"the segments holding seqs (\d+) to (\d+) are missing", str(exc))
    assert found, exc
    live = fsstore.open_store(root, create=False).read_session("s")
    assert live.history_start > int(found[2]), exc


def _copies_during_writes(tmp_path, copies: int) -> None:
    root = tmp_path / "store"
    store = fsstore.open_store(root, segment_size=4096)
    store.create_session("s").close()
    stop = tmp_path / "stop"
    with Child.script(TURN_WRITER, root, stop) as writer:
        writer.wait_for("READY")
        try:
            for index in range(copies):
                dest = tmp_path / f"copy-{index}"
                # Temp files may vanish mid-copy; the copy tools then skip them, as
                # backups do.
                if index % 2:
                    subprocess.run(["cp", "-r", str(root), str(dest)],
                                   stderr=subprocess.DEVNULL)
                else:
                    try:
                        shutil.copytree(root, dest)
                    except shutil.Error:
                        pass
                reader = fsstore.open_store(dest, create=False).read_session("s")
                try:
                    seqs = [event.seq for event in reader.events(include_internal=True)]
                except fsstore.CorruptionError as exc:
                    _removed_by_a_clear(exc, root)
                else:
                    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) if seqs else True
                    assert reader.state() is not None
                shutil.rmtree(dest)
        finally:
            stop.touch()
        writer.finish()
        assert writer.returncode == 0, writer.describe()


def test_copies_taken_while_a_writer_syncs_turns_read_as_a_prefix(tmp_path):
    """The synced mark is read before the frames it claims, in a copy as in a reader:
    a copy taken mid-write reads as a prefix, never as synced records gone missing."""
    _copies_during_writes(tmp_path, 12)


@pytest.mark.long
def test_many_copies_taken_while_a_writer_syncs_turns_read_as_a_prefix(tmp_path):
    _copies_during_writes(tmp_path, 300)


@pytest.mark.parametrize("durability", [
    fsstore.Durability("flush", group_commit_ms=5),
    fsstore.Durability("none", group_commit_records=2),
    fsstore.Durability("fsync"),
], ids=["group ms", "group records", "fsync"])
def test_every_kind_of_barrier_moves_the_synced_mark(store, durability):
    with store.create_session("s", durability=durability) as session:
        session.append_many([{"a": 1}, {"b": 2}])
        session.append_many([{"c": 3}, {"d": 4}])
        writer = session._writer
        for _ in range(2000):  # the group-commit thread syncs on its own time
            with writer.lock:
                if writer.synced_head == writer.head:
                    break
            time.sleep(0.005)
        (path,) = segment_files_at(session.path)
        with writer.lock:
            data = Path(path).read_bytes()
        assert writer.synced_head == writer.head == 4
        end = len(data.rstrip(b"\0"))
        assert decode_segment_header(data, path).synced_end == end
