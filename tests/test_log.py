from __future__ import annotations

import os
import struct
import tracemalloc
from pathlib import Path

import msgpack
import pytest
from conftest import msgpack_values
from crc32c import crc32c
from hypothesis import given, settings
from hypothesis import strategies as st

import fsstore
from fsstore import CorruptionError, FileIO, FormatVersionError, layout
from fsstore.log import (
    SEGMENT_HEADER_SIZE,
    LogReader,
    SegmentScan,
    decode_segment_header,
    encode_frame,
    encode_segment_header,
    mark_segment_header,
)


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


def test_truncating_the_segment_at_every_offset_reads_an_exact_prefix_of_batches(store):
    session, batches = write_batches(store, [1, 3, 1, 2, 5, 1, 1, 4, 1, 2])
    (path,) = segment_files(session)
    full = without_mark(path)  # what a crash can cut off was never marked synced
    reader = LogReader(FileIO(), os.path.dirname(path))
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
    store = fsstore.open_store(tmp_path / "store", segment_size=4096)
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
    store,
):
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


def test_damage_in_the_middle_is_reported_with_file_and_offset_everywhere(store):
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


def test_a_valid_record_with_the_wrong_seq_is_corruption(store):
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
    struct.pack_into("<H", data, 8, 2)
    body = data[: SEGMENT_HEADER_SIZE - 4]
    struct.pack_into("<I", data, SEGMENT_HEADER_SIZE - 4, crc32c(body))
    Path(path).write_bytes(bytes(data))
    with pytest.raises(FormatVersionError, match="upgrade fsstore"):
        list(store.read_session("s").events())
    with pytest.raises(FormatVersionError):
        store.open_session("s")


def test_unknown_extension_types_in_a_record_are_refused(store):
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


@settings(max_examples=150, deadline=None)
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
