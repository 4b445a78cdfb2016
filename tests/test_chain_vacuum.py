"""A vacuum of a chained session (fsstore/chain_bridges.py, reclaim.py): its rewritten
files re-chained, bridges in session.json for the values others recorded; it reclaims
and redacts what an unchained vacuum does, and the chain still catches edits after it
(docs/FORMAT.md 3.4, "Rewrites and bridges")."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import pytest
from crashsim import CrashSimIO
from test_reclaim_messages import POLICY, SECRET, fill, log_bytes, view
from test_reclaim_messages import build as build_messages

import fsstore
from fsstore import layout
from fsstore.checksum import crc32c
from fsstore.errors import ChainBindingBroken, CorruptionError
from fsstore.fsio import FileIO
from fsstore.segment_file import encode_compacted, open_compacted
from fsstore.segment_header import SEGMENT_HEADER_SIZE, decode_segment_header

KEY = bytes(range(100, 132))
MODES = [pytest.param(None, id="unkeyed"), pytest.param(KEY, id="keyed")]


@pytest.fixture
def keyed(monkeypatch):
    """Sets the chain key of the environment for a keyed mode (readers find it there)."""
    def use(key):
        if key is not None:
            monkeypatch.setenv("FSSTORE_CHAIN_KEY", key.hex())
    return use


def open_store(root, io=None) -> fsstore.Store:
    return fsstore.open_store(root, create=False, io=io, snapshots=POLICY)


def build(root, chain: bool, key=None) -> fsstore.Store:
    """Session ``s`` (chained or not): deleted messages, a checkpoint, and queue work
    and inputs done and live, sealed in several files."""
    fsstore.open_store(root, chain=chain, chain_key=key, segment_size=4096,
                       snapshots=POLICY)
    build_messages(root, checkpoint=True)
    store = fsstore.open_store(root, create=False, segment_size=4096, snapshots=POLICY)
    with store.open_session("s") as session:
        for r in range(2):
            session.queue.enqueue_many([("job", {"r": r, "n": n}) for n in range(6)])
            for _ in range(6):
                session.queue.complete(session.queue.claim("w", 600))
            session.inputs.submit({"r": r})
            session.inputs.claim()
            session.finish_turn()
            session.inputs.prune(0)
            fill(session)
        session.queue.enqueue("ready", {"x": 1})
        fill(session, 16)
    return store


def fold(root) -> tuple:
    reader = open_store(root).read_session("s")
    return (reader.state(), [tuple(q) for q in reader.queue.items()],
            [tuple(i) for i in reader.inputs.items()], reader.load_checkpoint("c1"))


def shape(folded: tuple) -> tuple:
    """A fold without its times (a twin session's differ)."""
    return folded[0], [q[:3] for q in folded[1]], [i[:2] for i in folded[2]], folded[3]


def vacuum(root, io=None) -> fsstore.VacuumReport:
    with open_store(root, io).open_session("s") as session:
        return session.vacuum()


def problems(root) -> list:
    return [f for f in open_store(root).verify() if f.level == "problem"]


def kinds_of(root) -> list:
    return [(e.seq, e.kind) for e in open_store(root).read_session("s").events(
        include_internal=True)]


def manifest_path(root) -> str:
    return layout.session_manifest_path(os.path.join(str(root), "sessions", "s"))


def bridges(root) -> list:
    with open(manifest_path(root), encoding="utf-8") as handle:
        return json.load(handle)["chain"].get("bridges", [])


def log_dir(root) -> Path:
    return Path(root) / "sessions" / "s" / "log"


def compacted_files(root) -> list[Path]:
    return [p for p in sorted(log_dir(root).glob("*.fslog"))
            if decode_segment_header(p.read_bytes()[:SEGMENT_HEADER_SIZE], str(p)).compacted]


@pytest.mark.parametrize("key", MODES)
def test_a_chained_vacuum_reclaims_and_redacts_what_an_unchained_one_does(
        tmp_path, key, keyed):
    keyed(key)
    plain, chained = tmp_path / "plain", tmp_path / "chained"
    build(plain, False)
    build(chained, True, key)
    before = fold(chained)
    assert shape(before) == shape(fold(plain))
    views = view(chained)
    head_hash = open_store(chained).read_session("s").head_hash
    reports = [vacuum(plain), vacuum(chained)]
    for report in reports:
        assert report.findings == ()
    counts = [{kind: r.removed[kind].count for kind in
               ("queue_records", "input_records", "message_tombstones")} for r in reports]
    assert counts[0] == counts[1] and counts[1]["queue_records"] > 0
    assert counts[1]["message_tombstones"] == 4
    assert kinds_of(plain) == kinds_of(chained)
    assert bridges(chained)  # the link-outs of the files rewritten
    assert SECRET.format(0).encode() not in log_bytes(chained)
    # every read works, and reads what it did
    assert problems(chained) == []
    assert fold(chained) == before
    assert view(chained)[2:] == views[2:]
    reader = open_store(chained).read_session("s")
    assert reader.head_hash == head_hash  # the head's frame is in the active file
    turns = [(t.number, [(e.seq, e.kind) for e in t.events]) for t in reader.get_turns()]
    assert turns == [(t.number, [(e.seq, e.kind) for e in t.events])
                     for t in open_store(plain).read_session("s").get_turns()]
    # the writer appends; a compaction, a second vacuum, a retention and a fork after it
    with open_store(chained).open_session("s") as session:
        session.append({"after": 1})
        fill(session, 16)
        session.queue.complete(session.queue.claim("w", 600))
        fill(session, 16)
        assert session.vacuum().removed["queue_records"].count > 0
        session.compact()
        session.vacuum()
    assert problems(chained) == []
    store = open_store(chained)
    with store.fork_session("s", "f") as fork:
        fork.append({"in": "fork"})
        fork.vacuum()
    assert [f for f in store.read_session("f").verify() if f.level == "problem"] == []
    store.retain("s", keep_turns=1)
    assert problems(chained) == []
    assert open_store(chained).read_session("s").state() == before[0]


def edit_compacted(path: Path, at: int = 0) -> None:
    """Change one payload byte of the ``at``-th frame of the compacted file ``path``,
    its crc recomputed, the file encoded again (every checksum of it holds)."""
    io = FileIO()
    fd = io.open(str(path), os.O_RDONLY)
    header = decode_segment_header(io.pread(fd, SEGMENT_HEADER_SIZE, 0), str(path))
    with open_compacted(io, fd, str(path), header, header.first_seq, None) as segment:
        logical = bytearray(segment.read_all())
        starts = [(m.first_seq, m.start) for m in segment.tables.members]
    off = SEGMENT_HEADER_SIZE
    for _ in range(at):
        length, = struct.unpack_from("<I", logical, off + 4)
        frame_type, = struct.unpack_from("<I", logical, off + 20)
        off += ((24 + length + 7) & ~7) + (64 if frame_type == 4 else 32) + 8
    length, = struct.unpack_from("<I", logical, off + 4)
    logical[off + 30] ^= 0x01
    body_end = off + ((24 + length + 7) & ~7)
    struct.pack_into("<I", logical, off, crc32c(bytes(logical[off + 4:body_end])))
    members = []
    for index, (first, start) in enumerate(starts):
        end = starts[index + 1][1] if index + 1 < len(starts) else len(logical)
        members.append((first, bytes(logical[start:end])))
    path.write_bytes(encode_compacted(header.first_seq, header.log_start, header.uid,
                                      members, 3))


@pytest.mark.parametrize("key", MODES)
def test_an_edit_of_a_rewritten_file_is_caught(tmp_path, key, keyed):
    keyed(key)
    root = tmp_path / "s"
    build(root, True, key)
    vacuum(root)
    files = compacted_files(root)
    assert files
    edit_compacted(files[0], at=1)
    found = problems(root)
    assert found and any("chain" in f.message for f in found)
    with pytest.raises(CorruptionError, match="chain"):
        list(open_store(root).read_session("s").events())


def test_a_bridge_added_without_the_key_breaks_the_manifest_binding(tmp_path, keyed):
    keyed(KEY)
    root = tmp_path / "s"
    build(root, True, KEY)
    vacuum(root)
    with open(manifest_path(root), encoding="utf-8") as handle:
        data = json.load(handle)
    data["chain"]["bridges"].append(["ab" * 32, "cd" * 32])
    Path(manifest_path(root)).write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ChainBindingBroken, match="session.json"):
        open_store(root).read_session("s")


@pytest.mark.parametrize("key", MODES)
def test_an_old_copy_of_a_rewritten_file_put_back_is_genuine(tmp_path, key, keyed):
    # the file is the one the chain was made with: its successor links to it by equality
    keyed(key)
    root = tmp_path / "s"
    build(root, True, key)
    before = fold(root)
    saved = {p.name: p.read_bytes() for p in log_dir(root).glob("*.fslog")}
    vacuum(root)
    rewritten = [p for p in log_dir(root).glob("*.fslog") if p.read_bytes() != saved[p.name]]
    assert rewritten
    rewritten[0].write_bytes(saved[rewritten[0].name])
    assert problems(root) == []
    assert fold(root) == before


@pytest.mark.parametrize("key", MODES)
def test_a_rewritten_file_of_another_session_put_in_place_is_caught(tmp_path, key, keyed):
    keyed(key)
    one, two = tmp_path / "one", tmp_path / "two"
    build(one, True, key)
    build(two, True, key)
    vacuum(one)
    vacuum(two)
    theirs = compacted_files(two)
    name = theirs[len(theirs) // 2].name
    assert (log_dir(one) / name).exists()
    shutil.copyfile(log_dir(two) / name, log_dir(one) / name)
    assert problems(one)


@pytest.mark.parametrize("key", MODES)
def test_a_reader_opened_before_the_vacuum_reads_its_files_through_the_new_bridges(
        tmp_path, key, keyed):
    keyed(key)
    root = tmp_path / "s"
    build(root, True, key)
    before = fold(root)
    reader = open_store(root).read_session("s")
    seqs = [e.seq for e in reader.events(include_internal=True)]
    assert reader.chain_rules.bridges == {}
    vacuum(root)
    assert [e.seq for e in reader.events(include_internal=True)] == seqs
    assert reader.chain_rules.bridges  # read again once a link failed
    assert reader.verify() == [] or all(f.level != "problem" for f in reader.verify())
    assert reader.load_checkpoint("c1") == before[3]


def check_crash_states(tmp_path, key, every: int) -> None:
    root = tmp_path / "store"
    build(root, True, key)
    before = fold(root)
    io = CrashSimIO(str(root))
    states = io.record_states(tmp_path / "states")
    report = vacuum(root, io)
    io.on_op = None
    assert report.removed["queue_records"].count > 0 and len(states) > 10
    seen = set()
    for index, dest in enumerate(states):
        if index % every and index != len(states) - 1:
            shutil.rmtree(dest)
            continue
        assert problems(dest) == [], dest
        assert fold(dest) == before, dest
        seen.add(len(bridges(dest)))
        with open_store(dest).open_session("s") as session:  # a later vacuum finishes it
            session.append({"after": "crash"})
            session.vacuum()
        assert problems(dest) == [], dest
        shutil.rmtree(dest)
    assert len(seen) > 1  # crashes before and after the bridges were written


def test_crash_states_of_a_chained_vacuum_open_verify_and_fold_the_same(tmp_path, keyed):
    keyed(KEY)
    check_crash_states(tmp_path, KEY, every=7)


@pytest.mark.long
@pytest.mark.parametrize("key", MODES)
def test_every_crash_state_of_a_chained_vacuum_opens_verifies_and_folds_the_same(
        tmp_path, key, keyed):
    keyed(key)
    check_crash_states(tmp_path, key, every=1)


class ReadingBetweenRenames(FileIO):
    """Runs ``between`` after each rename of a log file: what a reader racing the
    vacuum meets (some files new, some old; the bridges written before)."""

    def __init__(self, between) -> None:
        super().__init__()
        self.between = between

    def rename(self, src: str, dst: str) -> None:
        super().rename(src, dst)
        if dst.endswith(".fslog"):
            self.between()


@pytest.mark.parametrize("key", MODES)
def test_readers_racing_the_renames_of_a_vacuum_read_no_damage(tmp_path, key, keyed):
    keyed(key)
    root = tmp_path / "s"
    build(root, True, key)
    before = fold(root)
    early = open_store(root).read_session("s")  # opened before the bridges were written
    seqs = [e.seq for e in early.events(include_internal=True)]
    seen = []

    def between() -> None:
        assert [e.seq for e in early.events(include_internal=True)] == seqs
        assert fold(root) == before
        assert problems(root) == []
        seen.append(len(bridges(root)))

    vacuum(root, ReadingBetweenRenames(between))
    assert len(seen) > 1 and all(seen)


@pytest.mark.parametrize("key", MODES)
def test_a_pin_at_a_rewritten_file_s_last_frame_matches_through_its_bridge(
        tmp_path, key, keyed):
    from fsstore.chain_pins import chain_value_at

    keyed(key)
    root = tmp_path / "s"
    build(root, True, key)
    reader = open_store(root).read_session("s")
    values = {seq: chain_value_at(reader._log, seq) for seq in range(1, reader.head + 1)}
    vacuum(root)
    after = open_store(root).read_session("s")
    changed = {seq: chain_value_at(after._log, seq) for seq in values}
    changed = {seq: value for seq, value in changed.items()
               if value is not None and value != values[seq]}
    bridged = [seq for seq, value in changed.items()
               if [value.hex(), values[seq].hex()] in bridges(root)]
    assert bridged and len(bridged) < len(changed)

    def pin_problems(seq, value):
        return [f for f in after.verify(expect_head=f"{seq}:{value.hex()}")
                if f.level == "problem"]

    assert pin_problems(bridged[0], values[bridged[0]]) == []
    assert pin_problems(bridged[0], changed[bridged[0]]) == []  # the new value itself
    # a changed value no bridge stands for is reported (FORMAT.md 3.4 says so)
    unbridged = next(seq for seq in changed if seq not in bridged)
    assert pin_problems(unbridged, values[unbridged])
