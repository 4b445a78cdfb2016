"""A repair of a chained session (fsstore/repair_chain.py): its replacements re-chained
and bridged; keyed, only what the chain vouches for is saved (docs/FORMAT.md 7.6, 3.4)."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import pytest
from crashsim import CrashSimIO

import fsstore
from fsstore.errors import ChainKeyRequired, CorruptionError
from fsstore.turns import LOST_RECORD

KEY = bytes(range(100, 132))
MODES = [pytest.param(None, id="unkeyed"), pytest.param(KEY, id="keyed")]


@pytest.fixture
def keyed(monkeypatch):
    """Sets the chain key of the environment for a keyed mode (every handle finds it)."""
    monkeypatch.delenv("FSSTORE_CHAIN_KEY", raising=False)

    def use(key):
        if key is not None:
            monkeypatch.setenv("FSSTORE_CHAIN_KEY", key.hex())
    return use


def open_store(root, io=None) -> fsstore.Store:
    return fsstore.open_store(root, create=False, io=io)


def build(root: Path, compact: bool = False) -> list[str]:
    """A chained session ``s`` of 60 turns over small segments, with state and a
    checkpoint at turn 50; its segment files."""
    store = fsstore.open_store(root, chain=True, segment_size=4096)
    with store.create_session("s") as session:
        for turn in range(1, 61):
            session.append({"turn": turn, "text": "x" * 120}, kind="note", turn=turn)
            session.commit([], state_patch={"turn": turn})
            session.finish_turn(turn)
            if turn == 50:
                session.checkpoint(checkpoint_id="late")
        if compact:
            session.compact()
    return sorted(str(p) for p in (Path(root) / "sessions" / "s" / "log").glob("*.fslog"))


def events(root) -> dict[int, tuple]:
    return {e.seq: (e.kind, e.data, e.turn, e.ts) for e in open_store(root).read_session(
        "s").events(include_internal=True)}


def problems(root) -> list:
    return [f for f in open_store(root).verify() if f.level == "problem"]


def frames_of(path: str) -> list[tuple[int, int, int, int]]:
    """(offset, size, first seq, count) of each frame of the plain segment ``path``."""
    data = Path(path).read_bytes()
    out, off = [], 64
    while off + 24 <= len(data):
        _crc, length, first, count, frame_type = struct.unpack_from("<IIQII", data, off)
        if length == 0 and first == 0:
            break
        size = ((24 + length + 7) & ~7) + (64 if frame_type == 4 else 32) + 8
        out.append((off, size, first, count))
        off += size
    return out


def flip(path: str, at: int) -> None:
    data = bytearray(Path(path).read_bytes())
    data[at] ^= 0x40
    Path(path).write_bytes(bytes(data))


def damage_frame(path: str, index: int) -> tuple[int, int]:
    """Flip a payload byte of frame ``index`` of ``path``; its seqs (first, end)."""
    off, _size, first, count = frames_of(path)[index]
    flip(path, off + 30)
    return first, first + count


def bridges(root) -> list:
    path = Path(root) / "sessions" / "s" / "session.json"
    return json.loads(path.read_text(encoding="utf-8"))["chain"].get("bridges", [])


def tree(path) -> dict[str, bytes]:
    found = {}
    for folder, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(folder, name)
            with open(full, "rb") as handle:
                found[os.path.relpath(full, path)] = handle.read()
    return found


def lost_seqs(report) -> set[int]:
    return {s for r in report.lost for s in range(r.first, r.last + 1)}


def check_repaired(root, before: dict[int, tuple], report) -> None:
    """verify() is clean, reads give every saved record as it was and fsstore.lost for
    each lost seq, and the writer appends after it."""
    assert problems(root) == []
    after = events(root)
    head = max(before)
    assert sorted(after) == list(range(1, head + 1))  # gapless, same head
    lost = lost_seqs(report)
    assert {s for s, e in after.items() if e[0] == LOST_RECORD} == lost
    for seq, event in after.items():
        if seq not in lost:
            assert event == before[seq], seq
    with open_store(root).open_session("s") as session:
        assert session.append({"turn": 99}, kind="note", turn=99) == head + 1
    assert problems(root) == []
    assert open_store(root).repair("s").repaired is False


@pytest.mark.parametrize("key", MODES)
def test_a_damaged_sealed_file_is_repaired_and_its_chain_holds(tmp_path, key, keyed):
    keyed(key)
    root = tmp_path / "store"
    files = build(root)
    before = events(root)
    head_hash = open_store(root).read_session("s").head_hash
    target = files[2]
    assert len(files) > 5
    end_of_next = int(Path(files[4]).name[:20])
    first, end = damage_frame(target, 2)
    with pytest.raises(CorruptionError):
        events(root)
    report = open_store(root).repair("s")
    if key is None:  # unkeyed: every checksum-valid record is saved
        assert report.repaired and report.replaced == [target]
        assert lost_seqs(report) == set(range(first, end))
        assert any("from the repair on" in note for note in report.notes)
    else:  # keyed: what the chain can no longer vouch for is lost, with why: the rest
        # of the file, and the next file, whose anchor no value that held vouches for
        assert report.repaired and report.replaced == [target, files[3]]
        assert lost_seqs(report) == set(range(first, end_of_next))
        assert any("chain" in cause for r in report.lost for cause in r.causes)
    assert report.head_hash_before == report.head_hash_after == head_hash
    check_repaired(root, before, report)
    copy = Path(report.aside) / "log" / Path(target).name
    assert copy.exists()


def test_without_the_key_a_repair_of_a_keyed_session_raises_and_changes_nothing(
        tmp_path, keyed):
    keyed(KEY)
    root = tmp_path / "store"
    files = build(root)
    damage_frame(files[2], 2)
    keyed(None)
    os.environ.pop("FSSTORE_CHAIN_KEY")
    folder = root / "sessions" / "s"
    was = tree(folder)
    with pytest.raises(ChainKeyRequired):
        open_store(root).repair("s")
    with pytest.raises(ChainKeyRequired):
        open_store(root).repair("s", dry_run=True)
    assert tree(folder) == was


@pytest.mark.parametrize("key", MODES)
def test_a_damaged_active_segment_is_repaired_and_the_writer_takes_up_its_run(
        tmp_path, key, keyed):
    keyed(key)
    root = tmp_path / "store"
    files = build(root)
    before = events(root)
    damage_frame(files[-1], 1)
    report = open_store(root).repair("s")
    assert report.replaced == [files[-1]]
    assert report.head_hash_after is not None
    assert report.head_hash_after != report.head_hash_before  # the head's file rewritten
    assert open_store(root).read_session("s").head_hash == report.head_hash_after
    check_repaired(root, before, report)
    with open_store(root).open_session("s") as session:  # and again, after a rollover
        for turn in range(100, 140):
            session.append({"turn": turn, "text": "y" * 120}, kind="note", turn=turn)
    assert problems(root) == []


@pytest.mark.parametrize("key", MODES)
def test_a_damaged_compacted_file_is_repaired(tmp_path, key, keyed):
    keyed(key)
    root = tmp_path / "store"
    files = build(root, compact=True)
    before = events(root)
    compacted = files[0]
    data = Path(compacted).read_bytes()
    flip(compacted, len(data) - 40)  # inside its last chunk
    report = open_store(root).repair("s")
    # keyed, the file after it is lost too: its anchor is a value that no longer holds
    assert report.replaced == ([compacted] if key is None else files[:2]) and report.lost
    check_repaired(root, before, report)


@pytest.mark.parametrize("key", MODES)
def test_a_fork_of_a_repaired_session_verifies_and_appends(tmp_path, key, keyed):
    keyed(key)
    root = tmp_path / "store"
    files = build(root)
    damage_frame(files[1], 1)
    open_store(root).repair("s")
    store = open_store(root)
    head = store.read_session("s").head
    with store.fork_session("s", "f", at_seq=head - 5) as fork:
        fork.append({"in": "fork"})
    with store.fork_session("s", "g") as fork:
        fork.append({"in": "fork"})
    for name in ("f", "g"):
        assert [f for f in store.read_session(name).verify() if f.level == "problem"] == []
    assert store.read_session("g").state() == {"turn": 60}


@pytest.mark.parametrize("key", MODES)
def test_a_checkpoint_in_a_repaired_file_loads(tmp_path, key, keyed):
    keyed(key)
    root = tmp_path / "store"
    files = build(root)
    seq = next(c.seq for c in open_store(root).read_session("s").checkpoints())
    holder = max(f for f in files if int(Path(f).name[:20]) <= seq)
    index = next(i for i, fr in enumerate(frames_of(holder)) if fr[2] >= seq - 4) - 1
    damage_frame(holder, max(index, 0))
    report = open_store(root).repair("s")
    after = files[files.index(holder) + 1:][:1]
    assert report.replaced == [holder] + ([] if key is None else after)
    reader = open_store(root).read_session("s")
    assert reader.load_checkpoint("late") == {"turn": 50}
    if key is None:
        assert reader.state() == {"turn": 60}
    assert problems(root) == []


def check_crash_states(tmp_path, every: int) -> None:
    root = tmp_path / "store"
    files = build(root)
    damage_frame(files[2], 2)
    damage_frame(files[-1], 1)
    expect = open_store(root).repair("s", dry_run=True)
    io = CrashSimIO(str(root))
    states = io.record_states(tmp_path / "states")
    open_store(root, io).repair("s")
    io.on_op = None
    assert len(states) > 10
    good = events(root)
    seen = set()
    for index, dest in enumerate(states):
        if index % every and index != len(states) - 1:
            shutil.rmtree(dest)
            continue
        open_store(dest).read_session("s")  # opens, perhaps still damaged
        seen.add(len(bridges(dest)))
        report = open_store(dest).repair("s")  # a second repair finishes it
        assert lost_seqs(report) <= lost_seqs(expect), dest
        assert problems(dest) == [], dest
        assert events(dest) == good, dest
        with open_store(dest).open_session("s") as session:
            session.append({"after": "crash"})
        assert problems(dest) == [], dest
        shutil.rmtree(dest)
    assert len(seen) > 1  # crashes before and after the bridges were written


def test_crash_states_of_a_chained_repair_open_and_a_second_repair_finishes(
        tmp_path, keyed):
    keyed(KEY)
    check_crash_states(tmp_path, every=9)


@pytest.mark.long
@pytest.mark.parametrize("key", MODES)
def test_every_crash_state_of_a_chained_repair_is_finished_by_a_second_repair(
        tmp_path, key, keyed):
    keyed(key)
    check_crash_states(tmp_path, every=1)


@pytest.mark.parametrize("key", MODES)
def test_a_pin_of_the_old_head_reports_a_repair_of_the_records_before_it(
        tmp_path, key, keyed):
    # the head's frame followed the damage in its run: its old value could not be
    # checked, so no bridge stands for it, and the pin tells (FORMAT.md 7.6)
    keyed(key)
    root = tmp_path / "store"
    files = build(root)
    pin = open_store(root).read_session("s").head_hash
    damage_frame(files[-1], 0)
    report = open_store(root).repair("s")
    assert report.head_hash_before is None  # the damaged tail did not read
    assert report.head_hash_after != pin
    reader = open_store(root).read_session("s")
    assert [f for f in reader.verify() if f.level == "problem"] == []
    found = [f for f in reader.verify(expect_head=pin) if f.level == "problem"]
    assert found and "pin" in found[0].message


@pytest.mark.parametrize("key", MODES)
def test_an_edit_with_its_checksum_recomputed_is_repaired_by_the_chain(tmp_path, key, keyed):
    # salvage alone takes the edited frame by its checksum; the chain catches it
    from fsstore.checksum import crc32c

    keyed(key)
    root = tmp_path / "store"
    files = build(root)
    before = events(root)
    off, size, first, _count = frames_of(files[2])[2]
    data = bytearray(Path(files[2]).read_bytes())
    length, = struct.unpack_from("<I", data, off + 4)
    data[off + 30] ^= 0x01
    body_end = off + ((24 + length + 7) & ~7)
    struct.pack_into("<I", data, off, crc32c(bytes(data[off + 4:body_end])))
    Path(files[2]).write_bytes(bytes(data))
    assert problems(root)
    report = open_store(root).repair("s")
    assert report.replaced == [files[2]] + ([] if key is None else [files[3]])
    assert problems(root) == []
    if key is None:  # saved by its checksum: the repaired chain vouches from now on
        assert report.lost == []
        assert events(root)[first] != before[first]
    else:  # the keyed chain cannot vouch for it, nor for what follows in its run
        assert first in lost_seqs(report)
        assert max(lost_seqs(report)) == int(Path(files[4]).name[:20]) - 1


# --- another session's genuine records put in (same key) ------------------------------------


def forked(root: Path, records: int = 10, fork_at: int = 5, roll: bool = True):
    """Session ``s`` of ``records`` records (``who: s``), a rollover after ``fork_at``
    when ``roll``; a fork ``f`` of it at ``fork_at`` with its own records after
    (``who: f``); the log folders of both."""
    store = fsstore.open_store(root, chain=True, segment_size=4096)
    with store.create_session("s") as session:
        for seq in range(1, records + 1):
            session.append({"who": "s", "seq": seq})
            if roll and seq == fork_at:
                with session._writer.lock:
                    session._writer.roll_over()
    with store.fork_session("s", "f", at_seq=fork_at) as fork:
        for seq in range(fork_at + 1, records + 1):
            fork.append({"who": "f", "seq": seq})
    return root / "sessions" / "s" / "log", root / "sessions" / "f" / "log"


def as_uid_of(data: bytes, other: Path) -> bytes:
    """``data`` (a segment file) with the header uid of the segment file ``other``."""
    from fsstore.segment_header import (
        decode_segment_header,
        encode_segment_header,
        mark_segment_header,
    )

    uid = decode_segment_header(other.read_bytes()[:64], str(other)).uid
    head = decode_segment_header(data[:64], "x")
    return mark_segment_header(encode_segment_header(head.first_seq, head.log_start, uid)[:52],
                               len(data)) + data[64:]


def s_problems(root) -> list:
    """verify's problems of session ``s`` (its fork shares its sealed files, which the
    tests below change in place)."""
    return [f for f in open_store(root).read_session("s").verify() if f.level == "problem"]


def whose(root) -> list[str]:
    return [e.data["who"] for e in open_store(root).read_session("s").events()
            if isinstance(e.data, dict) and "who" in e.data]


def test_a_keyed_repair_never_bridges_to_another_sessions_file_put_in_place(
        tmp_path, keyed):
    keyed(KEY)
    root = tmp_path / "store"
    log, fork_log = forked(root)
    first, second = sorted(log.glob("*.fslog"))
    second.write_bytes(as_uid_of((fork_log / second.name).read_bytes(), first))
    with open(first, "ab") as handle:
        handle.write(b"\x07junk!!!")  # a little damage elsewhere, so that it repairs
    report = open_store(root).repair("s")
    assert lost_seqs(report) == set(range(6, 11))
    assert any("chain" in cause for r in report.lost for cause in r.causes)
    assert s_problems(root) == []
    assert whose(root) == ["s"] * 5


def test_a_broken_link_between_files_is_chain_damage_in_salvage_and_repair(tmp_path, keyed):
    keyed(KEY)
    root = tmp_path / "store"
    log, fork_log = forked(root)
    first, second = sorted(log.glob("*.fslog"))
    second.write_bytes(as_uid_of((fork_log / second.name).read_bytes(), first))
    report = open_store(root).repair("s", dry_run=True)
    assert lost_seqs(report) == set(range(6, 11))
    report = open_store(root).repair("s")
    assert report.replaced == [str(second)]
    assert s_problems(root) == [] and whose(root) == ["s"] * 5


@pytest.mark.parametrize("key", MODES)
def test_frames_of_another_session_spliced_into_a_file_are_not_saved_keyed(
        tmp_path, key, keyed):
    keyed(key)
    root = tmp_path / "store"
    store = fsstore.open_store(root, chain=True, segment_size=4096)
    with store.create_session("s") as session:
        for seq in range(1, 15):
            session.append({"who": "s", "seq": seq})
    with store.fork_session("s", "f", at_seq=4) as fork:
        for seq in range(5, 10):
            fork.append({"who": "f", "seq": seq})
    (path,) = (root / "sessions" / "s" / "log").glob("*.fslog")
    (own,) = [p for p in (root / "sessions" / "f" / "log").glob("*.fslog")
              if p.name.startswith("00000000000000000005")]
    mine, theirs = frames_of(str(path)), frames_of(str(own))
    data, other = path.read_bytes(), own.read_bytes()
    cut = next(o + s for o, s, f, n in mine if f + n - 1 == 4)
    resume = next(o + s for o, s, f, n in mine if f + n - 1 == 9)
    spliced = b"".join(other[o:o + s] for o, s, f, _n in theirs if 5 <= f <= 9)
    path.write_bytes(data[:cut] + spliced + data[resume:])
    report = open_store(root).repair("s")
    assert s_problems(root) == []
    if key is None:  # unkeyed: checksums decide, the repaired chain vouches from now on
        assert report.replaced == [str(path)]
    else:
        assert lost_seqs(report) == set(range(5, 15))
        assert whose(root) == ["s"] * 4


def test_a_member_of_another_session_swapped_into_a_compacted_file_is_lost(
        tmp_path, keyed):
    from fsstore.segment_file import encode_compacted
    from fsstore.segment_header import decode_segment_header

    keyed(KEY)
    root = tmp_path / "store"
    store = fsstore.open_store(root, chain=True, segment_size=4096)
    with store.create_session("s") as session:
        for seq in range(1, 16):
            session.append({"who": "s", "seq": seq})
            if seq in (5, 10):
                with session._writer.lock:
                    session._writer.roll_over()
    with store.fork_session("s", "f", at_seq=5) as fork:
        for seq in range(6, 11):
            fork.append({"who": "f", "seq": seq})
        with fork._writer.lock:
            fork._writer.roll_over()
    log, fork_log = root / "sessions" / "s" / "log", root / "sessions" / "f" / "log"
    one, two, three = sorted(log.glob("*.fslog"))

    def body(path: Path) -> bytes:
        off, size, _f, _n = frames_of(str(path))[-1]
        return path.read_bytes()[64:off + size]

    header = decode_segment_header(one.read_bytes()[:64], str(one))
    members = [(1, body(one)), (6, body(fork_log / two.name)), (11, body(three))]
    for path in (two, three):
        path.unlink()
    one.write_bytes(encode_compacted(1, header.log_start, header.uid, members))
    # (the last member anchors on the swapped one's value: lost too, but still read
    # as the active segment is gone: the repair writes the seqs as lost records)
    report = open_store(root).repair("s")
    assert set(range(6, 11)) <= lost_seqs(report)
    assert s_problems(root) == []
    assert "f" not in whose(root)
