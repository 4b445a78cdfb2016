"""Chained frames (docs/FORMAT.md 3.4): fsstore/chain_frames.py writes them,
fsstore/chain_check.py and the log reader check them.

The logs here are built with the encoder (``RunState``) straight into segment files:
no writer makes chained sessions yet. Each edit an attacker or a fault could make is
made by hand, checksums recomputed, and must be caught, in keyed and unkeyed mode; what
the chain alone cannot catch (an unkeyed chain recomputed after the edit, a log cut at a
frame boundary at its end) is shown too, as the limits FORMAT.md states."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

import pytest
from crc32c import crc32c

from fsstore import CorruptionError, FileIO, chain
from fsstore.chain import Mac
from fsstore.chain_check import ChainRules, ChainRun
from fsstore.chain_frames import RunState
from fsstore.log import LogPosition, LogReader
from fsstore.log_format import (
    FRAME_CHAIN_START,
    FRAME_CHAINED,
    FRAME_EVENTS,
    SegmentScan,
    _parse_frame,
    encode_frame,
    frame_end,
)
from fsstore.segment_file import encode_compacted
from fsstore.segment_header import SEGMENT_HEADER_SIZE, encode_segment_header, mark_segment_header

KEY = bytes(range(100, 132))
UID = 0x3FA9C2D15E7B0A64
OTHER_UID = 0x1122334455667788
MODES = [pytest.param(None, id="unkeyed"), pytest.param(KEY, id="keyed")]


@dataclass
class Log:
    """A log folder built with the encoder: ``segments`` maps each segment's first seq to
    the offsets of its frames."""

    path: str
    mac: Mac
    uid: int
    segments: dict[int, list[int]] = field(default_factory=dict)

    def file(self, first: int) -> str:
        return os.path.join(self.path, f"{first:020d}.fslog")

    def data(self, first: int) -> bytearray:
        with open(self.file(first), "rb") as handle:
            return bytearray(handle.read())

    def write(self, first: int, data: bytes | bytearray) -> None:
        with open(self.file(first), "wb") as handle:
            handle.write(data)

    def frame(self, first: int, index: int) -> tuple[int, bytes]:
        data = self.data(first)
        off = self.segments[first][index]
        size = struct.unpack_from("<I", data, off + 4)[0]
        end = frame_end(off, size, struct.unpack_from("<I", data, off + 20)[0])
        return off, bytes(data[off:end])

    def reader(self, mac: Mac | None = None) -> LogReader:
        reader = LogReader(FileIO(), self.path)
        reader.chain = ChainRules(mac or self.mac)
        return reader


def events_of(count: int, first: int, size: int = 60) -> list[tuple[str, dict]]:
    return [("event", {"n": first + i, "text": "x" * size}) for i in range(count)]


def build(tmp_path, key: bytes | None, layout: list[list[int]], *, uid: int = UID,
          name: str = "log", synced: bool = True, size: int = 60) -> Log:
    """A chained log of ``layout``: one list per segment, one batch size per frame. Every
    segment's synced mark covers its frames (``synced``: the last one's too)."""
    path = os.path.join(str(tmp_path), name)
    os.makedirs(path)
    mac = Mac(key)
    log = Log(path, mac, uid)
    link = chain.genesis(mac, uid, 1)
    seq = 1
    for position, batches in enumerate(layout):
        first = seq
        run = RunState(mac, link)
        body, offsets = bytearray(), []
        for count in batches:
            offsets.append(SEGMENT_HEADER_SIZE + len(body))
            body += run.encode(seq, 1795240001.5, 1, events_of(count, seq, size), 1 << 20)
            seq += count
        header = encode_segment_header(first, 1, uid)
        last = position == len(layout) - 1
        mark = SEGMENT_HEADER_SIZE + len(body) if synced or not last else 0
        log.write(first, mark_segment_header(header[:52], mark) + body)
        log.segments[first] = offsets
        link = run.link
    return log


def seqs(reader: LogReader) -> list[int]:
    return [event.seq for event in reader.events()]


def recrc(frame: bytes | bytearray) -> bytes:
    """The frame with its checksum recomputed over length .. pad (a chained frame's)."""
    frame = bytearray(frame)
    length, frame_type = struct.unpack_from("<I", frame, 4)[0], struct.unpack_from(
        "<I", frame, 20)[0]
    assert frame_type in (FRAME_CHAINED, FRAME_CHAIN_START)
    body_end = (24 + length + 7) & ~7
    frame[:4] = struct.pack("<I", crc32c(bytes(frame[4:body_end])))
    return bytes(frame)


def rechain(log: Log, mac: Mac, from_segment: int) -> None:
    """Recompute every chain value (and the anchors) from segment ``from_segment`` to the
    end of the log with ``mac``: what anyone can do to an unkeyed chain."""
    firsts = sorted(log.segments)
    index = firsts.index(from_segment)
    link = None
    if index > 0:
        link = log.frame(firsts[index - 1], -1)[1][-40:-8]
    for first in firsts[index:]:
        data = log.data(first)
        view = memoryview(data)
        state = mac.frame_state()
        off = SEGMENT_HEADER_SIZE
        while (frame := _parse_frame(bytes(data), view, off, len(data))) is not None:
            end = off + frame.size
            at = end - 40
            if frame.frame_type == FRAME_CHAIN_START:
                if link is None:
                    link = chain.genesis(mac, log.uid, first)
                data[at - 32:at] = link
            state.update(bytes(data[off:at]))
            data[at:at + 32] = state.copy().digest()
            state.update(bytes(data[at:end]))
            link = bytes(data[at:at + 32])
            off = end
        log.write(first, data)



def edit_payload(log: Log, first: int, index: int) -> int:
    """Change one byte of the content of frame ``index`` of segment ``first``, its
    checksum recomputed; return its offset."""
    off, frame = log.frame(first, index)
    edited = bytearray(frame)
    at = edited.index(b"xxxx") + 2
    edited[at] = ord("y")
    data = log.data(first)
    data[off:off + len(frame)] = recrc(edited)
    log.write(first, data)
    return off


# --- the format ------------------------------------------------------------------------


@pytest.mark.parametrize("key", MODES)
def test_a_chained_log_reads_back_every_event_and_checks_clean(tmp_path, key):
    log = build(tmp_path, key, [[1, 3, 2], [1], [2, 2, 1, 4]])
    reader = log.reader()
    assert seqs(reader) == list(range(1, 17))
    assert [event.data["n"] for event in reader.events(after_seq=3, until_seq=9)] == list(
        range(4, 10))
    assert reader.check() == []
    assert reader.tail().head == 16


def test_frame_layout_types_sizes_and_what_the_checksum_and_the_value_cover():
    mac = Mac()
    anchor = chain.genesis(mac, UID, 1)
    run = RunState(mac, anchor)
    first = run.encode(1, 1.0, 1, events_of(1, 1), 1 << 20)
    second = run.encode(2, 1.0, 1, events_of(2, 2), 1 << 20)
    plain = encode_frame(1, 1.0, 1, events_of(1, 1), 1 << 20)
    assert struct.unpack_from("<I", first, 20)[0] == FRAME_CHAIN_START
    assert struct.unpack_from("<I", second, 20)[0] == FRAME_CHAINED
    assert struct.unpack_from("<I", plain, 20)[0] == FRAME_EVENTS
    # the same body as an unchained frame but for its type, then anchor, value,
    # frame_size, "FSE\n"
    body_end = len(plain) - 8
    assert first[4:20] + first[24:body_end] == plain[4:20] + plain[24:body_end]
    assert len(first) == len(plain) + 64 and len(first) % 8 == 0
    assert first[body_end:body_end + 32] == anchor
    assert struct.unpack("<I4s", first[-8:]) == (len(first), b"FSE\n")
    assert len(second) == frame_end(0, struct.unpack_from("<I", second, 4)[0], 3)
    # the checksum stops at the padding
    assert struct.unpack_from("<I", first)[0] == crc32c(first[4:body_end])
    # each value is the MAC of the run up to it: one call over the bytes from the first frame
    assert first[-40:-8] == mac.value(chain.DOM_FRAME, first[:-40])
    assert second[-40:-8] == mac.value(chain.DOM_FRAME, first + second[:-40])
    assert run.link == second[-40:-8]
    assert run.started


def test_a_copy_of_a_run_goes_on_independently():
    run = RunState(Mac(KEY), bytes(32))
    run.encode(1, 1.0, 1, events_of(1, 1), 1 << 20)
    spare = run.copy()
    a = run.encode(2, 1.0, 1, events_of(1, 2), 1 << 20)
    b = spare.encode(2, 1.0, 1, events_of(1, 2), 1 << 20)
    assert a == b and run.link == spare.link
    with pytest.raises(ValueError):
        RunState(Mac(), b"short")


def test_a_chained_frame_in_a_log_without_a_chain_is_damage(tmp_path):
    log = build(tmp_path, None, [[1, 2]])
    reader = LogReader(FileIO(), log.path)  # no chain declared
    with pytest.raises(CorruptionError, match="chained record in a log that has no chain"):
        seqs(reader)


def test_unchained_segments_read_as_before_in_a_log_with_a_chain(tmp_path):
    path = tmp_path / "log"
    path.mkdir()
    frames = encode_frame(1, 1.0, 1, events_of(2, 1), 1 << 20)
    header = encode_segment_header(1, 1, UID)
    (path / f"{1:020d}.fslog").write_bytes(
        mark_segment_header(header[:52], 64 + len(frames)) + frames)
    reader = LogReader(FileIO(), str(path))
    reader.chain = ChainRules(Mac(), chained_from=3)  # the chain starts after them
    assert seqs(reader) == [1, 2]
    assert reader.check() == []
    # where the chain covers them, records made unchained are records stripped of it
    reader.chain = ChainRules(Mac())
    with pytest.raises(CorruptionError, match="unchained record in the log of a session "
                                              "that has a chain"):
        seqs(reader)


@pytest.mark.parametrize("key", MODES)
def test_an_unchained_frame_after_chained_ones_stops_the_chain(tmp_path, key):
    log = build(tmp_path, key, [[1, 1]])
    data = log.data(1)
    data += encode_frame(3, 1.0, 1, events_of(1, 3), 1 << 20)
    log.write(1, mark_segment_header(bytes(data[:52]), len(data)) + data[64:])
    with pytest.raises(CorruptionError, match="unchained record after chained ones: the chain"):
        seqs(log.reader())


@pytest.mark.parametrize("key", MODES)
def test_an_unchained_segment_after_a_chained_one_stops_the_chain(tmp_path, key):
    log = build(tmp_path, key, [[1, 1], [1]])
    frames = encode_frame(3, 1.0, 1, events_of(1, 3), 1 << 20)
    header = encode_segment_header(3, 1, UID)
    log.write(3, mark_segment_header(header[:52], 64 + len(frames)) + frames)
    with pytest.raises(CorruptionError, match="unchained segment after chained ones"):
        seqs(log.reader())


# --- each edit is caught, keyed and unkeyed ------------------------------------------------


@pytest.mark.parametrize("key", MODES)
def test_one_byte_of_a_records_content_changed_with_its_checksum_recomputed(tmp_path, key):
    log = build(tmp_path, key, [[1, 2, 1], [2, 1]])
    off = edit_payload(log, 1, 1)
    with pytest.raises(CorruptionError, match="does not match the chain") as caught:
        seqs(log.reader())
    assert (caught.value.path, caught.value.offset) == (log.file(1), off)
    [problem] = log.reader().check()
    assert (problem.path, problem.offset) == (log.file(1), off)


@pytest.mark.parametrize("key", MODES)
def test_a_record_deleted(tmp_path, key):
    log = build(tmp_path, key, [[1, 2, 1, 3]])
    off, frame = log.frame(1, 1)
    data = log.data(1)
    del data[off:off + len(frame)]
    log.write(1, mark_segment_header(bytes(data[:52]), len(data)) + data[64:])
    with pytest.raises(CorruptionError, match="does not match the chain") as caught:
        seqs(log.reader())
    assert caught.value.offset == off  # the record that now stands there


@pytest.mark.parametrize("key", MODES)
def test_the_last_two_records_of_a_segment_deleted(tmp_path, key):
    log = build(tmp_path, key, [[1, 2, 1, 3], [2]])
    off, _ = log.frame(1, 2)
    data = log.data(1)[:off]
    log.write(1, mark_segment_header(bytes(data[:52]), len(data)) + data[64:])
    with pytest.raises(CorruptionError, match="ends at seq 3"):  # caught by the seqs first
        seqs(log.reader())
    # the next segment renamed and its records renumbered to close the gap (their chain
    # recomputed from the anchor they hold): its anchor is not where the chain ends now
    renumbered, run = bytearray(log.data(8)[:64]), RunState(log.mac, log.frame(8, 0)[1][-72:-40])
    renumbered[:64] = mark_segment_header(encode_segment_header(4, 1, UID)[:52], 0)
    renumbered += run.encode(4, 1.0, 1, events_of(2, 4), 1 << 20)
    os.unlink(log.file(8))
    log.write(4, mark_segment_header(bytes(renumbered[:52]), len(renumbered))
              + renumbered[64:])
    with pytest.raises(CorruptionError, match="the chain is broken between segments"):
        seqs(log.reader())


@pytest.mark.parametrize("key", MODES)
def test_the_last_two_records_of_the_log_deleted_is_a_prefix_the_chain_cannot_tell(
        tmp_path, key):
    # The chain of what is left holds: a log cut at a frame boundary reads as the
    # genuine prefix it is. The synced mark catches it when it covered the records (and
    # is not rewritten too); a pinned head catches it otherwise (FORMAT.md 3.4).
    log = build(tmp_path, key, [[1, 2], [2, 1, 3]])
    off, _ = log.frame(4, 1)
    data = log.data(4)
    log.write(4, data[:off] + bytes(len(data) - off))  # zeroed: the mark binds
    with pytest.raises(CorruptionError, match="synced"):
        seqs(log.reader())
    data = data[:off]
    log.write(4, mark_segment_header(bytes(data[:52]), len(data)) + data[64:])
    assert seqs(log.reader()) == [1, 2, 3, 4, 5]
    assert log.reader().check() == []


@pytest.mark.parametrize("key", MODES)
def test_two_records_swapped(tmp_path, key):
    log = build(tmp_path, key, [[1, 2, 1, 3, 1]])
    (a, frame_a), (b, frame_b) = log.frame(1, 1), log.frame(1, 2)
    data = log.data(1)
    data[a:b + len(frame_b)] = frame_b + frame_a
    log.write(1, data)
    with pytest.raises(CorruptionError, match="does not match the chain") as caught:
        seqs(log.reader())
    assert caught.value.offset == a


@pytest.mark.parametrize("key", MODES)
def test_the_first_record_of_a_segment_swapped_with_another(tmp_path, key):
    log = build(tmp_path, key, [[1, 1, 1]])
    (a, frame_a), (b, frame_b) = log.frame(1, 0), log.frame(1, 1)
    data = log.data(1)
    data[a:b + len(frame_b)] = frame_b + frame_a
    log.write(1, data)
    with pytest.raises(CorruptionError, match="the chain does not start here"):
        seqs(log.reader())


@pytest.mark.parametrize("key", MODES)
@pytest.mark.parametrize("synced", [True, False], ids=["mark-moved", "unsynced"])
def test_a_forged_record_after_the_last(tmp_path, key, synced):
    log = build(tmp_path, key, [[1, 2], [2, 1]])
    # A checksum-valid record whose chain value the forger cannot make: random in
    # unkeyed mode stands for any mistake; keyed, it is made with another key.
    forger = RunState(Mac(os.urandom(32) if key else None), os.urandom(32))
    forger.encode(1, 1.0, 1, events_of(1, 1), 1 << 20)
    forged = forger.encode(7, 1.0, 1, events_of(1, 7), 1 << 20)
    data = log.data(4)
    end = len(data)
    data += forged
    if synced:  # the header's checksums are no secret: anyone can move the mark
        data[:64] = mark_segment_header(bytes(data[:52]), len(data))
    log.write(4, data)
    if synced:
        with pytest.raises(CorruptionError, match="does not match the chain") as caught:
            seqs(log.reader())
        assert caught.value.offset == end
        return
    # past the synced mark, a value that fails may be a torn write: readers stop before
    # it, as before any torn tail, and check reports it as a problem
    assert seqs(log.reader()) == [1, 2, 3, 4, 5, 6]
    [problem] = log.reader().check()
    assert (problem.level, problem.offset) == ("problem", end)
    assert "does not match the chain" in problem.message


@pytest.mark.parametrize("key", MODES)
def test_a_forged_record_after_the_last_of_a_sealed_segment(tmp_path, key):
    log = build(tmp_path, key, [[1, 2], [2, 1]])
    forged = RunState(Mac(key), os.urandom(32)).encode(4, 1.0, 1, events_of(1, 4), 1 << 20)
    data = log.data(1)
    log.write(1, data + forged)
    with pytest.raises(CorruptionError, match="the chain"):
        seqs(log.reader())


@pytest.mark.parametrize("key", MODES)
def test_a_genuine_record_of_another_session_copied_over_one_of_this_sessions(tmp_path, key):
    ours = build(tmp_path, key, [[1, 2, 1, 2]])
    theirs = build(tmp_path, key, [[1, 2, 1, 2]], uid=OTHER_UID, name="other")
    off, frame = theirs.frame(1, 2)
    assert (off, len(frame)) == (ours.frame(1, 2)[0], len(ours.frame(1, 2)[1]))
    data = ours.data(1)
    data[off:off + len(frame)] = frame
    ours.write(1, data)
    with pytest.raises(CorruptionError, match="does not match the chain") as caught:
        seqs(ours.reader())
    assert caught.value.offset == off


@pytest.mark.parametrize("key", MODES)
def test_another_sessions_segment_in_place_of_one_of_this_sessions(tmp_path, key):
    ours = build(tmp_path, key, [[1, 2], [1, 2], [2]])
    theirs = build(tmp_path, key, [[1, 2], [1, 2], [2]], uid=OTHER_UID, name="other")
    ours.write(4, theirs.data(4))
    with pytest.raises(CorruptionError, match="the chain is broken between segments") as caught:
        seqs(ours.reader())
    assert caught.value.path == ours.file(4)
    # the first segment too: it starts another chain (the genesis binds the header's uid,
    # which the reader of a session checks against its own: section 3.1)
    ours.write(4, build(tmp_path, key, [[1, 2], [1, 2], [2]], name="again").data(4))
    ours.write(1, theirs.data(1))
    with pytest.raises(CorruptionError, match="the chain is broken between segments"):
        seqs(ours.reader())


@pytest.mark.parametrize("key", MODES)
def test_an_older_record_of_the_same_session_copied_over_the_newest(tmp_path, key):
    log = build(tmp_path, key, [[1, 2], [1, 1, 1]])
    old_off, old = log.frame(4, 0)
    off, newest = log.frame(4, 2)
    data = log.data(4)
    del data[off:]
    data += old  # same size: the frames hold one event each
    log.write(4, data)
    with pytest.raises(CorruptionError, match="the chain") as caught:
        seqs(log.reader())
    assert caught.value.offset == off


@pytest.mark.parametrize("key", MODES)
def test_the_wrong_key_or_none_fails_at_the_first_record(tmp_path, key):
    log = build(tmp_path, key, [[1, 2], [1]])
    wrong = Mac(None if key else KEY)
    with pytest.raises(CorruptionError, match="the chain does not start here"):
        seqs(log.reader(wrong))


@pytest.mark.parametrize("key", MODES)
def test_every_byte_of_the_records_changed_alone_is_caught(tmp_path, key):
    log = build(tmp_path, key, [[1, 2], [1, 1]], size=4)
    for first in (1, 4):
        genuine = log.data(first)
        for at in range(SEGMENT_HEADER_SIZE, len(genuine)):
            changed = bytearray(genuine)
            changed[at] ^= 0x20
            log.write(first, changed)
            with pytest.raises(CorruptionError):
                seqs(log.reader())
        log.write(first, genuine)
    assert seqs(log.reader()) == [1, 2, 3, 4, 5]


# --- what the chain alone cannot tell, and what the key adds ----------------------------


def test_unkeyed_an_edit_followed_by_a_recomputed_chain_is_not_seen_in_the_log_alone(tmp_path):
    # Anyone can recompute SHA-256: an edit followed by the chain recomputed from it to
    # the end of the log reads as genuine. Only a head value kept where the editor cannot
    # reach it (a pin, FORMAT.md 3.4) tells.
    log = build(tmp_path, None, [[1, 2, 1], [2, 1]])
    head_before = log.frame(5, -1)[1][-40:-8]
    edit_payload(log, 1, 1)
    rechain(log, Mac(), 1)
    reader = log.reader()
    assert [event.data["text"].count("y") for event in reader.events()] == [0, 1, 0, 0, 0, 0, 0]
    assert reader.check() == []
    assert log.frame(5, -1)[1][-40:-8] != head_before  # what a pin of the head would catch


def test_keyed_an_edit_followed_by_a_chain_recomputed_without_the_key_is_caught(tmp_path):
    log = build(tmp_path, KEY, [[1, 2, 1], [2, 1]])
    edit_payload(log, 1, 1)
    for guess in (Mac(), Mac(os.urandom(32))):  # SHA-256, or HMAC under a key of one's own
        rechain(log, guess, 1)
        with pytest.raises(CorruptionError, match="the chain"):
            seqs(log.reader())


def test_keyed_an_edit_in_a_later_segment_rechained_from_there_breaks_the_link(tmp_path):
    # Rechained from the edited segment on, keeping the genuine anchor of the segment
    # before: its first values then cannot be made without the key.
    log = build(tmp_path, KEY, [[1, 2], [2, 1], [1]])
    edit_payload(log, 4, 1)
    rechain(log, Mac(), 4)
    with pytest.raises(CorruptionError, match="does not match the chain") as caught:
        seqs(log.reader())
    assert caught.value.path == log.file(4)


# --- reads from a place, compacted segments, torn tails ---------------------------------


@pytest.mark.parametrize("key", MODES)
def test_a_read_from_a_place_checks_the_run_from_the_segments_start(tmp_path, key):
    log = build(tmp_path, key, [[1, 2, 1], [2, 1]])
    off, frame = log.frame(1, 1)
    position = LogPosition(1, off + len(frame), struct.unpack_from("<I", frame)[0])
    reader = log.reader()
    read = [e.seq for scan in reader.scans_from(position, 3) for e in scan]
    assert read == [4, 5, 6, 7]
    edit_payload(log, 1, 0)  # before the place: the run up to the end of the segment fails
    with pytest.raises(CorruptionError, match="does not match the chain"):
        [e.seq for scan in reader.scans_from(position, 3) for e in scan]


@pytest.mark.parametrize("key", MODES)
def test_a_torn_tail_after_chained_records_is_a_torn_tail(tmp_path, key):
    log = build(tmp_path, key, [[1, 2], [2, 1]], synced=False)
    _, frame = log.frame(4, 1)
    data = log.data(4)
    log.write(4, data + frame[:len(frame) // 2])
    reader = log.reader()
    assert seqs(reader) == [1, 2, 3, 4, 5, 6]
    [note] = reader.check()
    assert note.level == "note" and "torn tail" in note.message


def test_a_value_torn_in_the_last_unsynced_record_is_read_as_a_torn_tail(tmp_path):
    log = build(tmp_path, KEY, [[1, 2], [2, 1]], synced=False)
    off, frame = log.frame(4, 1)
    data = log.data(4)
    data[off + len(frame) - 40:off + len(frame) - 8] = bytes(32)  # sectors out of order
    log.write(4, data)
    assert seqs(log.reader()) == [1, 2, 3, 4, 5]
    assert log.reader().check()[0].level == "problem"
    # the same tear where the mark says the record was synced is damage
    log.write(4, mark_segment_header(bytes(data[:52]), len(data)) + data[64:])
    with pytest.raises(CorruptionError, match="does not match the chain"):
        seqs(log.reader())


@pytest.mark.parametrize("key", MODES)
def test_a_compacted_segment_checks_each_members_run_and_the_links_between(tmp_path, key):
    log = build(tmp_path, key, [[1, 2], [2, 1], [1]])
    members = [(first, bytes(log.data(first)[64:])) for first in (1, 4)]
    os.unlink(log.file(4))
    log.write(1, encode_compacted(1, 1, UID, members))
    reader = log.reader()
    assert seqs(reader) == list(range(1, 8))
    assert reader.check() == []
    # a member's record edited (checksum recomputed)
    edited = bytearray(members[1][1])
    at = edited.index(b"xxxx")
    edited[at] = ord("y")
    length = struct.unpack_from("<I", edited, 4)[0]
    edited[:4] = struct.pack("<I", crc32c(bytes(edited[4:(24 + length + 7) & ~7])))
    log.write(1, encode_compacted(1, 1, UID, [members[0], (4, bytes(edited))]))
    with pytest.raises(CorruptionError, match="does not match the chain"):
        seqs(log.reader())
    # a member of another log, its own run whole
    theirs = build(tmp_path, key, [[1, 2], [2, 1]], uid=OTHER_UID, name="other")
    log.write(1, encode_compacted(1, 1, UID, [members[0], (4, bytes(theirs.data(4)[64:]))]))
    with pytest.raises(CorruptionError, match="between the members of a compacted segment"):
        seqs(log.reader())


def test_a_scan_without_a_chain_check_refuses_a_misplaced_start_of_chain():
    mac = Mac()
    frames = b"".join(RunState(mac, bytes(32)).encode(s, 1.0, 1, events_of(1, s), 1 << 20)
                      for s in (1, 2))  # two runs in one segment: the second type 4 misplaced
    header = encode_segment_header(1, 1, UID)
    buf = mark_segment_header(header[:52], 64 + len(frames)) + frames
    with pytest.raises(CorruptionError, match="no chain"):
        list(SegmentScan(buf, "seg", 1, True, synced_end=len(buf)))
    scan = SegmentScan(buf, "seg", 1, True, synced_end=len(buf), chain=ChainRun(True))
    with pytest.raises(CorruptionError, match="type 4.*where none starts") as caught:
        list(scan)
    assert caught.value.offset == 64 + len(frames) // 2
