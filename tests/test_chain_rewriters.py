"""The rewriters of a chained session (docs/FORMAT.md 3.4, 5.5, 5.6, 7.5): each keeps the
chain verifiable, and an edit of what it wrote is still caught."""

from __future__ import annotations

import os
import struct

import pytest
from crc32c import crc32c
from test_chain_sessions import MODES, chained_store, fill, log_of, manifest_of, seqs

from fsstore import CorruptionError, chain
from fsstore.chain_base import base_value
from fsstore.fsio import FileIO
from fsstore.segment_file import encode_compacted, open_compacted
from fsstore.segment_header import (
    MARK_AT,
    SEGMENT_HEADER_SIZE,
    decode_segment_header,
    encode_segment_header,
    mark_segment_header,
)


def log_dir(store, session_id):
    return os.path.join(store.path, "sessions", session_id, "log")


def segment_names(store, session_id):
    return sorted(name for name in os.listdir(log_dir(store, session_id))
                  if name.endswith(".fslog"))


def compacted_members(path):
    """The header and the (first seq, frames) members of the compacted file ``path``."""
    io = FileIO()
    fd = io.open(path, os.O_RDONLY)
    header = decode_segment_header(io.pread(fd, SEGMENT_HEADER_SIZE, 0), path)
    with open_compacted(io, fd, path, header, header.first_seq, None) as segment:
        plain = segment.read_all()
        assert segment.tables is not None
        starts = [m.start for m in segment.tables.members]
        firsts = [m.first_seq for m in segment.tables.members]
    ends = [*starts[1:], len(plain)]
    return header, [(first, plain[start:end])
                    for first, start, end in zip(firsts, starts, ends, strict=True)]


def edit_first_record(frames: bytes) -> bytes:
    """``frames`` with a byte of the first record's payload changed and its checksum
    recomputed (a chained frame's: over length .. pad)."""
    edited = bytearray(frames)
    at = edited.index(b"xxxx")
    edited[at] = ord("y")
    length = struct.unpack_from("<I", edited, 4)[0]
    edited[:4] = struct.pack("<I", crc32c(bytes(edited[4:(24 + length + 7) & ~7])))
    return bytes(edited)


def written(store, session_id, count, **settings):
    with store.create_session(session_id, **settings) as session:
        fill(session, count)
        session.finish_turn()


# --- compaction ----------------------------------------------------------------------------


@pytest.mark.parametrize("key", MODES)
def test_a_compacted_chained_session_reads_and_verifies_as_before(tmp_path, key):
    store = chained_store(tmp_path / "s", key, segment_size=4096)
    written(store, "a", 150)
    reader = store.read_session("a")
    before = (seqs(reader), reader.head_hash, reader.state())
    assert len(segment_names(store, "a")) > 4
    report = reader.compact()
    assert report.files_written == 1 and report.segments_after == 2
    reader = store.read_session("a")
    assert (seqs(reader), reader.head_hash, reader.state()) == before
    assert reader.verify() == []
    # the file keeps the header uid the genesis binds, and every member's run
    first = os.path.join(log_dir(store, "a"), segment_names(store, "a")[0])
    header, members = compacted_members(first)
    assert header.uid == int(manifest_of(store, "a")["uid"], 16)
    assert len(members) > 3
    # the writer takes up after it, and the chain goes on
    with store.open_session("a") as session:
        fill(session, 3)
    reader = store.read_session("a")
    assert seqs(reader)[:-3] == before[0] and reader.verify() == []


@pytest.mark.parametrize("key", MODES)
def test_an_edit_in_a_compacted_member_is_caught(tmp_path, key):
    store = chained_store(tmp_path / "s", key, segment_size=4096)
    written(store, "a", 150)
    store.read_session("a").compact()
    path = os.path.join(log_dir(store, "a"), segment_names(store, "a")[0])
    header, members = compacted_members(path)
    members[2] = (members[2][0], edit_first_record(members[2][1]))
    with open(path, "wb") as handle:
        handle.write(encode_compacted(header.first_seq, header.log_start, header.uid,
                                      members))
    reader = store.read_session("a")
    with pytest.raises(CorruptionError, match="does not match the chain"):
        seqs(reader)
    assert any("does not match the chain" in finding.message
               for finding in reader.verify())


def test_a_compaction_of_a_forks_history_keeps_the_parents_header_uid(tmp_path):
    store = chained_store(tmp_path / "s", segment_size=4096)
    with store.create_session("a") as parent:
        fill(parent, 100)
        with parent.fork("b", at_seq=parent.head - 5) as session:
            fill(session, 100)
    reader = store.read_session("b")
    before = (seqs(reader), reader.head_hash)
    reader.compact()
    reader = store.read_session("b")
    assert (seqs(reader), reader.head_hash) == before and reader.verify() == []
    first = os.path.join(log_dir(store, "b"), segment_names(store, "b")[0])
    header, _ = compacted_members(first)
    assert header.uid == int(manifest_of(store, "a")["uid"], 16)


def test_a_compaction_refuses_a_sealed_segment_whose_chain_fails(tmp_path):
    store = chained_store(tmp_path / "s", segment_size=4096)
    written(store, "a", 150)
    log = log_of(store, "a")
    second = sorted(log.segments)[1]
    data = log.data(second)
    off, frame = log.frame(second, 1)
    data[off:off + len(frame)] = edit_first_record(frame)
    log.write(second, data)
    names = segment_names(store, "a")
    with pytest.raises(CorruptionError, match="does not match the chain"):
        store.read_session("a").compact()
    assert segment_names(store, "a") == names


def test_a_keyed_session_compacts_without_its_key_and_keeps_its_chain(tmp_path):
    key = bytes(range(100, 132))
    store = chained_store(tmp_path / "s", key, segment_size=4096)
    written(store, "a", 150)
    head, events = store.read_session("a").head_hash, seqs(store.read_session("a"))
    keyless = chained_store(tmp_path / "s")
    keyless.read_session("a").compact()
    assert len(segment_names(store, "a")) == 2
    reader = chained_store(tmp_path / "s", key).read_session("a")
    assert reader.head_hash == head and reader.verify() == [] and seqs(reader) == events


# --- retention -----------------------------------------------------------------------------


def turns_written(store, session_id, turns, per_turn=15, key=None):
    with store.create_session(session_id) as session:
        for _ in range(turns):
            fill(session, per_turn)
            session.finish_turn()


def base_file(store, session_id):
    return os.path.join(log_dir(store, session_id), segment_names(store, session_id)[0])


@pytest.mark.parametrize("key", MODES)
@pytest.mark.parametrize("keep", ["turns", "state"])
def test_a_retained_chained_session_keeps_its_chain(tmp_path, key, keep):
    store = chained_store(tmp_path / "s", key, segment_size=4096)
    turns_written(store, "a", 10)
    reader = store.read_session("a")
    head, state, events = reader.head_hash, reader.state(), seqs(reader)
    if keep == "turns":
        report = store.retain("a", keep_turns=3)
    else:
        report = store.retain("a", keep="state")
    assert report.seqs_dropped > 0 and report.segments_removed > 0
    reader = store.read_session("a")
    assert reader.head_hash == head and reader.state() == state
    assert seqs(reader) == [seq for seq in events if seq >= report.history_start]
    assert reader.verify() == []
    # the base is a chained one (type 5) anchored on the value after the dropped history
    _, members = compacted_members(base_file(store, "a"))
    assert struct.unpack_from("<I", members[0][1], 20)[0] == 5
    # the writer takes up after it; compaction merges it with what follows
    with store.open_session("a") as session:
        fill(session, 20)
        session.finish_turn()
    reader = store.read_session("a")
    head = reader.head_hash
    reader.compact()
    reader = store.read_session("a")
    assert reader.head_hash == head and reader.verify() == []
    # and a second retention chains its base on the first
    store.retain("a", keep_turns=1)
    reader = store.read_session("a")
    assert reader.head_hash == head and reader.verify() == [] and reader.state() is not None


@pytest.mark.parametrize("key", MODES)
def test_an_edit_of_a_chained_base_is_caught(tmp_path, key):
    store = chained_store(tmp_path / "s", key, segment_size=4096)
    turns_written(store, "a", 10)
    store.retain("a", keep_turns=3)
    path = base_file(store, "a")
    header, [(first, frame)] = compacted_members(path)
    edited = bytearray(frame)
    length = struct.unpack_from("<I", edited, 4)[0]
    at = edited.index(b"turn", 24)  # in the payload: the base record's "turn" key
    edited[at] = ord("T")
    edited[:4] = struct.pack("<I", crc32c(bytes(edited[4:(24 + length + 7) & ~7])))
    with open(path, "wb") as handle:
        handle.write(encode_compacted(header.first_seq, header.log_start, header.uid,
                                      [(first, bytes(edited))]))
    reader = store.read_session("a")
    with pytest.raises(CorruptionError, match="base record does not match the chain"):
        seqs(reader)
    assert reader.verify() != []


def test_a_chained_base_with_another_anchor_breaks_the_link(tmp_path):
    store = chained_store(tmp_path / "s", segment_size=4096)
    turns_written(store, "a", 10)
    store.retain("a", keep_turns=3)
    path = base_file(store, "a")
    header, [(first, frame)] = compacted_members(path)
    # a base forged with its value recomputed over another anchor (what anyone can do
    # to an unkeyed chain) no longer links to the history kept after it
    edited = bytearray(frame)
    value_at = len(edited) - 8 - 32
    edited[value_at - 32:value_at] = bytes(32)
    edited[value_at:value_at + 32] = base_value(chain.Mac(), header.uid, header.log_start,
                                                bytes(edited[:value_at]))
    with open(path, "wb") as handle:
        handle.write(encode_compacted(header.first_seq, header.log_start, header.uid,
                                      [(first, bytes(edited))]))
    with pytest.raises(CorruptionError, match="the chain is broken between segments"):
        seqs(store.read_session("a"))


@pytest.mark.parametrize("key", MODES)
def test_snapshots_checkpoints_and_the_manifest_stay_bound_after_a_compaction(tmp_path, key):
    """Their chain values are looked up in the compacted file that holds their position
    now (its logical bytes, in pieces)."""
    store = chained_store(tmp_path / "s", key, segment_size=4096)
    with store.create_session("a") as session:
        for turn in range(1, 9):
            fill(session, 12, first=turn * 12)
            session.commit(state_patch={f"k{turn}": turn})
            if turn in (3, 6):
                session.snapshot()
                session.checkpoint(f"c{turn}")
    reader = store.read_session("a")
    before = (reader.state(), [reader.load_checkpoint(c.id) for c in reader.checkpoints()])
    reader.compact()
    reader = store.read_session("a")
    assert segment_names(store, "a")[0] != segment_names(store, "a")[-1]
    assert (reader.state(), [reader.load_checkpoint(c.id) for c in reader.checkpoints()]
            ) == before
    assert reader.verify() == []


def _take_over(store, source_id, target_id):
    """Put ``source_id``'s log files in place of ``target_id``'s, their headers' uid
    rewritten to the target's (their checksums recomputed: no key needed)."""
    uid = int(manifest_of(store, target_id)["uid"], 16)
    target = log_dir(store, target_id)
    for name in segment_names(store, target_id):
        os.unlink(os.path.join(target, name))
    for name in segment_names(store, source_id):
        with open(os.path.join(log_dir(store, source_id), name), "rb") as handle:
            data = handle.read()
        header = decode_segment_header(data, name)
        if header.compacted:
            _, members = compacted_members(os.path.join(log_dir(store, source_id), name))
            data = encode_compacted(header.first_seq, header.log_start, uid, members)
        else:
            static = encode_segment_header(header.first_seq, header.log_start, uid)[:MARK_AT]
            data = mark_segment_header(static, header.synced_end) + data[SEGMENT_HEADER_SIZE:]
        with open(os.path.join(target, name), "wb") as handle:
            handle.write(data)


@pytest.mark.parametrize("key", MODES)
def test_a_retained_log_put_in_place_of_another_sessions_fails_the_base(tmp_path, key):
    """A base stands in for the genesis it dropped: its value binds the session's uid, so
    another session's retained log, its headers' uid rewritten, does not read as this
    one's."""
    store = chained_store(tmp_path / "s", key, segment_size=4096)
    for session_id in ("x", "y"):
        turns_written(store, session_id, 10)
        store.retain(session_id, keep_turns=3)
    _take_over(store, "x", "y")
    with pytest.raises(CorruptionError, match="base record does not match the chain"):
        seqs(store.read_session("y"))
