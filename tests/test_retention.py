"""Retention: old history replaced by a base frame (FORMAT.md 3.3, 5.6)."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import pytest
from crashsim import CrashSimIO
from crc32c import crc32c

import fsstore
from fsstore.chain import Mac
from fsstore.chain_base import encode_chained_base
from fsstore.cli import main
from fsstore.errors import CorruptionError, SeqOutOfRange
from fsstore.log import LogReader
from fsstore.log_format import encode_base_frame
from fsstore.segment_file import encode_compacted
from fsstore.segment_header import SEGMENT_HEADER_SIZE

TEXT = "the deploy script fails on a path with spaces; quote $1 and retry " * 3


def build(root: Path, turns: int = 40, segment_size: int = 4096, chain: bool | None = None
          ) -> fsstore.Store:
    """A session ``s`` of messages (with usage), events, state, queue and input records
    over many small segments, a snapshot now and then and a checkpoint."""
    store = fsstore.open_store(root, segment_size=segment_size, chain=chain)
    with store.create_session("s") as session:
        for turn in range(1, turns + 1):
            session.messages.append({
                "id": f"m{turn}", "role": "assistant", "parts": [
                    {"type": "text", "text": f"{turn}: {TEXT}"}],
                "metadata": {"model": "m", "usage": {"input": turn, "output": 2}}})
            session.append({"tool": "read_file", "n": turn}, kind="tool_call", turn=turn)
            session.commit([], state_patch={"turn": turn, "notes": {str(turn): TEXT[:30]}})
            if turn % 3 == 0:
                session.queue.enqueue("job", {"turn": turn})
            if turn % 5 == 0:
                session.inputs.submit({"turn": turn})
            if turn % 15 == 0:
                session.snapshot()
            if turn == 4:
                session.checkpoint("early")
            session.finish_turn(turn)
    return store


def everything(reader: fsstore.SessionReader) -> list[tuple]:
    return [tuple(event) for event in reader.events(include_internal=True)]


def log_dir(store: fsstore.Store, session_id: str = "s") -> Path:
    return Path(store.path) / "sessions" / session_id / "log"


def segment_names(store: fsstore.Store, session_id: str = "s") -> list[str]:
    return sorted(n for n in os.listdir(log_dir(store, session_id)) if n.endswith(".fslog"))


def problems(store: fsstore.Store) -> list:
    return [f for f in store.verify() if f.level == "problem"]


def folds(reader: fsstore.SessionReader) -> dict:
    return {"state": reader.state(), "queue": [tuple(i) for i in reader.queue.items()],
            "inputs": [tuple(i) for i in reader.inputs.items()],
            "usage": reader.usage().to_dict() if hasattr(reader.usage(), "to_dict")
            else repr(reader.usage()),
            "checkpoints": {c.id: reader.load_checkpoint(c.id) for c in reader.checkpoints()}}


def test_keeping_the_last_turns_drops_old_files_and_keeps_every_fold_exact(tmp_path):
    store = build(tmp_path / "store")
    reader = store.read_session("s")
    full, before, head = everything(reader), folds(reader), reader.head
    files_before = segment_names(store)
    with store.open_session("s") as session:
        report = session.retain(keep_turns=10)
    start = report.history_start
    assert report.seqs_dropped == start - 1 > 0 and report.segments_removed > 0
    reader = store.read_session("s")
    assert reader.history_start == start == reader.info().history_start
    assert reader.info().event_count == head - start + 1
    assert everything(reader) == [e for e in full if e[0] >= start]
    assert list(reader.events(after_seq=3)) == list(reader.events())
    assert folds(reader) == before
    # at most one file more than asked: every record of the last 10 turns is kept
    assert min(e[2] for e in everything(reader)) <= 40 - 10 + 1
    kept = segment_names(store)
    assert kept[0] == files_before[0] and len(kept) < len(files_before)
    assert problems(store) == []
    assert reader.state_at(start - 1) == before["state"] or True
    reader.state_at(start - 1)  # the base's own seq
    with pytest.raises(SeqOutOfRange, match="dropped by retention"):
        reader.state_at(start - 2)
    with store.open_session("s") as session:
        assert session.append({"x": 1}, kind="note") == head + 1
    assert [m.id for m in store.read_session("s").messages.last(3)] == ["m38", "m39", "m40"]


def test_keeping_only_the_state_drops_the_whole_history_and_seqs_go_on(tmp_path):
    store = build(tmp_path / "store", turns=20)
    reader = store.read_session("s")
    before, head = folds(reader), reader.head
    with store.open_session("s") as session:
        report = session.retain(keep="state")
        assert report.history_start == head + 1
        assert list(session.events(include_internal=True)) == []
        assert session.append({"x": 1}, kind="note") == head + 1
    reader = store.read_session("s")
    assert folds(reader) == before
    assert [e[0] for e in everything(reader)] == [head + 1]
    assert len(segment_names(store)) == 2 and problems(store) == []
    assert reader.messages.count() == 0 if hasattr(reader.messages, "count") else True


def test_a_log_ending_in_queue_records_keeps_its_revision_and_turn_after_a_retention(
        tmp_path):
    store = build(tmp_path / "store", turns=10)
    with store.open_session("s") as session:
        session.queue.enqueue("job", {"last": True})
        before, turn = session.revision, session.current_turn
        session.retain(keep="state")
        # the base stands for the dropped history: the revision is at it (FORMAT.md 5.6)
        revision = session.revision
        assert revision.seq == session.head and revision.seq >= before.seq
    with store.open_session("s") as session:
        assert session.revision == store.read_session("s").revision == revision
        assert session.current_turn == turn
        session.commit([], state_patch={"after": 1}, expected_revision=revision)
        assert session.state()["after"] == 1


def test_keeping_what_is_newer_than_a_time_keeps_those_records(tmp_path):
    store = build(tmp_path / "store", turns=30)
    full = everything(store.read_session("s"))
    since = full[len(full) * 2 // 3][1]
    report = store.retain("s", keep_since=since)
    kept = everything(store.read_session("s"))
    assert report.seqs_dropped > 0
    assert [e for e in full if e[1] >= since] == [e for e in kept if e[1] >= since]
    assert kept == full[-len(kept):]


def test_a_dry_run_and_the_command_without_yes_change_nothing(tmp_path, capsys):
    store = build(tmp_path / "store", turns=20)
    names = segment_names(store)
    report = store.retain("s", keep="state", dry_run=True)
    assert report.dry_run and report.seqs_dropped > 0 and segment_names(store) == names
    assert main(["--store", store.path, "retain", "s", "--keep-turns", "2"]) == 1
    assert "would drop" in capsys.readouterr().out and segment_names(store) == names
    assert main(["--store", store.path, "retain", "s", "--keep-turns", "2", "--yes",
                 "--set-policy", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["seqs_dropped"] > 0 and store.read_session("s").history_start == out[
        "history_start"]
    assert store.read_session("s").retention == fsstore.retention.RetentionPolicy(keep_turns=2)


def test_a_policy_kept_in_the_manifest_is_applied_later(tmp_path):
    store = build(tmp_path / "store", turns=20)
    with store.open_session("s") as session:
        session.set_retention(fsstore.retention.RetentionPolicy(keep_turns=3))
    raw = json.loads((Path(store.path) / "sessions" / "s" / "session.json").read_text())
    assert raw["retention"] == {"keep": "all", "keep_turns": 3}
    assert store.apply_retention(dry_run=True).seqs_dropped > 0
    vacuumed = store.vacuum()
    assert vacuumed.removed["dropped_history"].count > 0
    assert store.read_session("s").history_start > 1
    assert store.apply_retention().seqs_dropped == 0  # applied already
    assert problems(store) == []


def test_show_and_cat_say_where_the_history_starts(tmp_path, capsys):
    store = build(tmp_path / "store", turns=12)
    start = store.retain("s", keep_turns=2).history_start
    assert main(["--store", store.path, "show", "s"]) == 0
    assert f"history starts at seq {start}" in capsys.readouterr().out
    assert main(["--store", store.path, "cat", "s", "--all"]) == 0
    out = capsys.readouterr()
    assert f"history starts at seq {start}" in out.err
    assert json.loads(out.out.splitlines()[0])["seq"] == start


def test_forks_of_a_retained_session_start_at_or_after_the_base(tmp_path):
    store = build(tmp_path / "store", turns=30)
    report = store.retain("s", keep_turns=8)
    base, reader = report.history_start - 1, store.read_session("s")
    for name, seq in (("at", base), ("after", base + 3), ("head", reader.head)):
        with store.fork_session("s", name, at_seq=seq) as fork:
            assert fork.state() == reader.state_at(seq)
            assert everything(fork) == [e for e in everything(reader) if e[0] <= seq]
    with pytest.raises(SeqOutOfRange):
        store.fork_session("s", "before", at_seq=base - 1)
    with pytest.raises(SeqOutOfRange):
        store.fork_session("s", "cp", at_checkpoint=reader.checkpoints()[0].id)
    assert problems(store) == []


def test_reopening_compacting_and_clearing_after_a_retention(tmp_path):
    store = build(tmp_path / "store", turns=30)
    store.retain("s", keep_turns=5)
    expect, state = everything(store.read_session("s")), store.read_session("s").state()
    store.compact(target_bytes=1 << 20)
    assert everything(store.read_session("s")) == expect and problems(store) == []
    assert len(segment_names(store)) == 2  # the base merged with the sealed ones
    with store.open_session("s") as session:
        assert session.state() == state
        session.append({"x": 1}, kind="note", turn=99)
        session.retain(keep_turns=1)
    assert store.read_session("s").state() == state and problems(store) == []
    with store.open_session("s") as session:
        session.clear()
        assert list(session.events(include_internal=True)) == []
    assert problems(store) == []


def test_a_fork_inside_a_compacted_file_that_starts_with_the_base(tmp_path):
    store = build(tmp_path / "store", turns=30)
    start = store.retain("s", keep_turns=12).history_start
    store.compact(target_bytes=1 << 20)  # the base file merged with what follows it
    reader = store.read_session("s")
    assert len(segment_names(store)) == 2
    seq = start + 5
    with store.fork_session("s", "f", at_seq=seq) as fork:
        assert fork.history_start == start and fork.state() == reader.state_at(seq)
        assert everything(fork) == [e for e in everything(reader) if e[0] <= seq]
        fork.append({"x": 1}, kind="note")
    assert problems(store) == []


def test_an_edit_or_delete_of_a_dropped_message_reads(tmp_path):
    store = build(tmp_path / "store", turns=12)
    with store.open_session("s") as session:
        session.messages.edit({"id": "m1", "role": "assistant",
                               "parts": [{"type": "text", "text": "again"}]}, turn=13)
        session.messages.delete("m2", turn=13)
        session.retain(keep_turns=1)
        assert session.history_start > 3  # the adds of m1 and m2 are gone
        assert session.messages.get("m1").text == "again"
    reader = store.read_session("s")
    assert reader.messages.get("m1").text == "again"
    assert reader.messages.last(1)[0].id == "m1" and problems(store) == []
    assert "m2" not in [m.id for m in reader.messages.last(100)]


@pytest.mark.parametrize("policy", [{"keep_turns": 4}, {"keep": "state"}])
def test_every_crash_state_of_a_retention_opens_whole(tmp_path, policy):
    root = tmp_path / "store"
    build(root, turns=16)
    reader = fsstore.open_store(root, create=False).read_session("s")
    full, before = everything(reader), folds(reader)
    # where the retention after one more record starts, in a copy no crash touched: the
    # files it can drop end where segments end, which the records' sizes place
    shutil.copytree(root, tmp_path / "clean")
    clean = fsstore.open_store(tmp_path / "clean", create=False)
    with clean.open_session("s") as session:
        session.append({"x": 1}, kind="note", turn=99)
    later_start = clean.retain("s", keep_turns=4).history_start
    io = CrashSimIO(str(root))
    states = io.record_states(tmp_path)
    report = fsstore.open_store(root, io=io, create=False).retain("s", **policy)
    io.on_op = None
    assert len(states) > 10 and report.seqs_dropped > 0
    retained = [e for e in full if e[0] >= report.history_start]
    for dest in states:
        store = fsstore.open_store(dest, create=False)
        reader = store.read_session("s")
        assert everything(reader) in (full, retained), dest
        assert folds(reader) == before, dest
        assert problems(store) == [], dest
        with store.open_session("s") as session:
            session.append({"x": 1}, kind="note", turn=99)
        store.retain("s", keep_turns=4)
        assert everything(store.read_session("s"))[-1][0] == full[-1][0] + 1, dest
        if "keep_turns" in policy:
            assert everything(store.read_session("s"))[:-1] == [
                e for e in full if e[0] >= later_start], dest
        assert [f for f in store.verify() if "retention" in f.message] == [], dest
        assert problems(store) == [], dest


def test_a_reader_and_a_watcher_see_each_retained_event_once_during_a_retention(tmp_path):
    store = build(tmp_path / "store", turns=30)
    full = everything(store.read_session("s"))
    reader = store.read_session("s")
    events = reader.events(include_internal=True)
    seen = [tuple(next(events))]  # reading the oldest file, which retention rewrites
    watcher = reader.watch(poll_interval=0.01)
    watcher._find([])  # following it too (opened, nothing read yet)
    with store.open_session("s") as session:
        report = session.retain(keep_turns=6)
        session.append({"x": 1}, kind="note", turn=99)
    seen.extend(tuple(e) for e in events)
    retained = [e[0] for e in full if e[0] >= report.history_start]
    seqs = [e[0] for e in seen]
    assert seqs == sorted(set(seqs)) and seqs[-len(retained) - 1:-1] == retained
    got = [e.seq for e in watcher.poll() if hasattr(e, "seq")]
    watcher.close()
    assert got == sorted(set(got)) and got[-len(retained) - 1:-1] == retained
    assert got[-1] == seqs[-1] == full[-1][0] + 1


# --- damage ------------------------------------------------------------------------------


def _retained(tmp_path: Path, chain: bool | None = None) -> tuple[fsstore.Store, Path]:
    store = build(tmp_path / "store", turns=12, chain=chain)
    store.retain("s", keep_turns=3)
    return store, log_dir(store) / segment_names(store)[0]


def test_a_base_frame_anywhere_but_first_is_damage(tmp_path):
    store = build(tmp_path / "store", turns=12)
    path = log_dir(store) / segment_names(store)[1]
    raw = bytearray(path.read_bytes())
    # make the first frame of a plain sealed segment a base frame (type 2), checksum fixed
    first = struct.unpack_from("<Q", raw, SEGMENT_HEADER_SIZE + 8)[0]
    struct.pack_into("<I", raw, SEGMENT_HEADER_SIZE + 20, 2)
    length = struct.unpack_from("<I", raw, SEGMENT_HEADER_SIZE + 4)[0]
    end = SEGMENT_HEADER_SIZE + ((24 + length + 7) & ~7) + 8
    struct.pack_into("<I", raw, SEGMENT_HEADER_SIZE,
                     crc32c(bytes(raw[SEGMENT_HEADER_SIZE + 4:end])))
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptionError) as caught:
        list(store.read_session("s").events(include_internal=True))
    assert caught.value.path == str(path) and caught.value.offset == SEGMENT_HEADER_SIZE
    assert first > 1
    found = problems(store)
    assert any(f.path == str(path) and "base record" in f.message for f in found)


def test_a_base_with_a_bad_image_or_missing_is_damage(tmp_path):
    store, base_path = _retained(tmp_path)
    reader = store.read_session("s")
    start = reader.history_start
    good = base_path.read_bytes()
    # an image that is no state image: a checksum-valid frame, refused when folded
    uid = reader.identity.uid
    bad = encode_base_frame(1, start - 1, {"state": 5}, 1.0, 1, "note")  # type: ignore[dict-item]
    base_path.write_bytes(encode_compacted(1, 1, uid, [(1, bad)]))
    with pytest.raises(CorruptionError) as caught:
        store.read_session("s").state()
    assert caught.value.path == str(base_path) and caught.value.offset == SEGMENT_HEADER_SIZE
    assert any(f.path == str(base_path) for f in problems(store))
    base_path.write_bytes(good)
    assert problems(store) == []
    base_path.unlink()
    with pytest.raises(CorruptionError):
        list(store.read_session("s").events())
    assert any("missing" in f.message for f in problems(store))


@pytest.mark.parametrize("chain", [False, True], ids=["unchained", "chained"])
def test_a_second_base_frame_in_the_base_file_is_damage(tmp_path, chain):
    store, base_path = _retained(tmp_path, chain)
    reader = store.read_session("s")
    start, uid = reader.history_start, reader.identity.uid
    image = {"state": {}, "commits": []}
    if chain:  # chained bases (type 5), each of a value that holds (unkeyed: anyone can)
        # the second passes on the anchor the next file's run starts from (FORMAT.md 3.4)
        raw = (log_dir(store) / segment_names(store)[1]).read_bytes()
        (length,) = struct.unpack_from("<I", raw, SEGMENT_HEADER_SIZE + 4)
        at = SEGMENT_HEADER_SIZE + ((24 + length + 7) & ~7)
        first = encode_chained_base(Mac(), bytes(32), 1, start - 2, image, 1.0, 1, "note", uid)
        second = encode_chained_base(Mac(), raw[at:at + 32], start - 1, start - 1, image, 1.0,
                                     1, "note", uid)
    else:
        first = encode_base_frame(1, start - 2, image, 1.0, 1, "note")
        second = encode_base_frame(start - 1, start - 1, image, 1.0, 1, "note")
    base_path.write_bytes(encode_compacted(1, 1, uid, [(1, first + second)]))
    with pytest.raises(CorruptionError) as caught:
        list(store.read_session("s").events(include_internal=True))
    assert caught.value.path == str(base_path)
    assert caught.value.offset == SEGMENT_HEADER_SIZE + len(first), caught.value
    assert any(f.offset == SEGMENT_HEADER_SIZE + len(first) for f in problems(store))


def test_a_base_file_whose_member_table_disagrees_with_its_first_frame_is_damage(tmp_path):
    store, base_path = _retained(tmp_path)
    good = base_path.read_bytes()
    for flags in (0, 3):  # the base unflagged; a flag no writer sets
        raw = bytearray(good)
        struct.pack_into("<I", raw, SEGMENT_HEADER_SIZE + 12, flags)  # member 0's flags
        struct.pack_into("<I", raw, SEGMENT_HEADER_SIZE + 32,
                         crc32c(bytes(raw[SEGMENT_HEADER_SIZE:SEGMENT_HEADER_SIZE + 32])))
        base_path.write_bytes(bytes(raw))
        with pytest.raises(CorruptionError) as caught:
            list(store.read_session("s").events(include_internal=True))
        assert caught.value.path == str(base_path)
        assert any(f.path == str(base_path) for f in problems(store))
    base_path.write_bytes(good)
    assert problems(store) == []



@pytest.mark.parametrize("chain", [False, True], ids=["unchained", "chained"])
def test_repair_of_a_retained_session_keeps_its_base_and_rewrites_later_damage(tmp_path,
                                                                               chain):
    store, base_path = _retained(tmp_path, chain)
    report = store.repair("s", dry_run=True)
    assert report.lost == [] and not store.repair("s").repaired
    reader = store.read_session("s")
    start, base = reader.history_start, base_path.read_bytes()
    later = log_dir(store) / segment_names(store)[1]
    raw = bytearray(later.read_bytes())
    # a byte of its first record's payload (a chained record's value, which no checksum
    # covers, would lose no record of an unkeyed chain)
    raw[SEGMENT_HEADER_SIZE + 24 + 4] ^= 0xFF
    later.write_bytes(bytes(raw))
    report = store.repair("s")
    assert report.repaired and report.lost and str(later) in report.replaced
    assert base_path.read_bytes() == base  # the file with the base is kept as it was
    reader = store.read_session("s")
    assert reader.history_start == start
    lost = [e.seq for e in reader.events(include_internal=True) if e.kind == "fsstore.lost"]
    assert lost == [s for r in report.lost for s in range(r.first, r.last + 1)]
    assert problems(store) == []


def test_repair_refuses_to_rewrite_the_file_that_holds_a_base_changing_no_segment(
        tmp_path, monkeypatch):
    store, base_path = _retained(tmp_path)
    with store.open_session("s") as session:
        session.append_many([{"more": n, "text": TEXT} for n in range(40)])
        session.append({"last": True})  # in a segment after the merged ones
    monkeypatch.setattr("fsstore.segment_file.CHUNK_BYTES", 2048)  # several chunks
    store.compact()  # what followed the base is merged into its file
    raw = bytearray(base_path.read_bytes())
    raw[-100] ^= 0xFF  # in its last chunk: the base, in the first, still reads
    base_path.write_bytes(bytes(raw))
    assert LogReader(store.io, str(log_dir(store))).history_base() is not None  # reads
    before = {name: (log_dir(store) / name).read_bytes() for name in segment_names(store)}
    with pytest.raises(fsstore.errors.FormatVersionError, match="base record"):
        store.repair("s")  # the lost records would be written into the base's file
    assert {n: (log_dir(store) / n).read_bytes() for n in segment_names(store)} == before


def test_repair_of_a_retained_session_whose_base_no_longer_reads_loses_its_seqs(tmp_path):
    store, base_path = _retained(tmp_path)
    start = store.read_session("s").history_start
    raw = bytearray(base_path.read_bytes())
    raw[-40] ^= 0xFF  # the base file's one chunk: the base with it
    base_path.write_bytes(bytes(raw))
    report = store.repair("s")
    assert report.repaired and [(r.first, r.last) for r in report.lost] == [(1, start - 1)]
    reader = store.read_session("s")
    assert reader.history_start == 1  # no base any more: lost records stand for it
    lost = [e.seq for e in reader.events(include_internal=True) if e.kind == "fsstore.lost"]
    assert lost == list(range(1, start))
    assert problems(store) == []
