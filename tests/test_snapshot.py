"""Snapshot and checkpoint files: the format, damage detection, and checkpoints."""

from __future__ import annotations

import os
import struct

import msgpack
import pytest
from conftest import tree_snapshot
from crc32c import crc32c

import fsstore
from fsstore import snapshot
from fsstore.chain import Mac
from fsstore.chain_bindings import SnapshotSeal
from fsstore.fsio import FileIO
from fsstore.log import LogPosition

BODY = {"state": {"plan": ["a", "b"], "n": 3, "blob": b"\x00\x01"}, "commits": [["c", 1, 2]]}


def write_file(tmp_path, data: bytes) -> str:
    path = str(tmp_path / "file.snap")
    with open(path, "wb") as handle:
        handle.write(data)
    return path


def test_the_header_is_80_bytes():
    assert snapshot.HEADER_SIZE == 80


def test_a_snapshot_file_round_trips(tmp_path):
    data = snapshot.encode(snapshot.KIND_CHECKPOINT, 42, 7, LogPosition(40, 128),
                           {"id": "x", "label": "l"}, BODY)
    file = snapshot.read(FileIO(), write_file(tmp_path, data))
    header = file.header
    assert (header.kind, header.seq, header.log_start, header.position) == (
        snapshot.KIND_CHECKPOINT, 42, 7, LogPosition(40, 128))
    assert file.meta == {"id": "x", "label": "l"} and file.body == BODY
    assert data[:8] == snapshot.SNAPSHOT_MAGIC and len(data) > snapshot.HEADER_SIZE


def test_the_body_is_plain_msgpack(tmp_path):
    data = snapshot.encode(snapshot.KIND_SNAPSHOT, 1, 1, LogPosition(1, 64), {}, BODY)
    header = snapshot.decode_header(data, "x")
    body = data[snapshot.HEADER_SIZE + header.meta_len:]
    assert msgpack.unpackb(body, raw=False) == BODY


def test_every_bit_flip_is_detected(tmp_path):
    data = snapshot.encode(snapshot.KIND_SNAPSHOT, 9, 1, LogPosition(1, 64), {"k": 1}, BODY)
    for offset in range(len(data)):
        for bit in (0x01, 0x80):
            damaged = bytearray(data)
            damaged[offset] ^= bit
            path = write_file(tmp_path, bytes(damaged))
            with pytest.raises((fsstore.CorruptionError, fsstore.FormatVersionError)):
                snapshot.read(FileIO(), path)


def test_every_truncation_is_detected(tmp_path):
    data = snapshot.encode(snapshot.KIND_SNAPSHOT, 9, 1, LogPosition(1, 64), {}, BODY)
    for size in range(len(data)):
        with pytest.raises(fsstore.CorruptionError) as caught:
            snapshot.read(FileIO(), write_file(tmp_path, data[:size]))
        assert caught.value.path.endswith("file.snap")


def test_a_header_claiming_a_huge_body_is_refused_before_reading_it(tmp_path):
    fields = struct.pack("<8sHHIQQQQQIIIII", snapshot.SNAPSHOT_MAGIC, 1, 0, 1, 1, 1, 1, 64, 0,
                         0, 0, (1 << 32) - 1, 0, 0)
    from crc32c import crc32c
    data = fields + struct.pack("<I", crc32c(fields))
    with pytest.raises(fsstore.CorruptionError, match="its header says"):
        snapshot.read(FileIO(), write_file(tmp_path, data))


def test_a_newer_major_version_is_refused(tmp_path):
    data = bytearray(snapshot.encode(snapshot.KIND_SNAPSHOT, 1, 1, LogPosition(1, 64), {}, BODY))
    struct.pack_into("<H", data, 8, snapshot.SNAPSHOT_MAJOR + 1)
    from crc32c import crc32c
    struct.pack_into("<I", data, snapshot.HEADER_SIZE - 4,
                     crc32c(bytes(data[: snapshot.HEADER_SIZE - 4])))
    with pytest.raises(fsstore.FormatVersionError, match="upgrade fsstore"):
        snapshot.read(FileIO(), write_file(tmp_path, bytes(data)))


def test_msgpack_extension_types_are_refused(tmp_path):
    body = msgpack.packb({"state": msgpack.ExtType(1, b"pickle?"), "commits": []})
    meta = msgpack.packb({})
    from crc32c import crc32c
    fields = struct.pack("<8sHHIQQQQQIIIII", snapshot.SNAPSHOT_MAGIC, 1, 0, 1, 1, 1, 1, 64, 0,
                         len(meta), crc32c(meta), len(body), crc32c(body), 0)
    data = fields + struct.pack("<I", crc32c(fields)) + meta + body
    with pytest.raises(fsstore.CorruptionError, match="extension type"):
        snapshot.read(FileIO(), write_file(tmp_path, data))


def test_pruning_keeps_the_newest_and_removes_temp_files(tmp_path):
    folder = snapshot.SnapshotDir(FileIO(), str(tmp_path))
    for seq in (5, 10, 15, 20):
        folder.write(seq, 1, LogPosition(1, 64), BODY)
    open(os.path.join(folder.path, ".tmp-00000000000000000025.snap-abcd1234"), "wb").close()
    folder.prune(2)
    assert sorted(os.listdir(folder.path)) == [f"{seq:020d}.snap" for seq in (15, 20)]


# --- checkpoints ---------------------------------------------------------------------------

def test_checkpoints_are_created_listed_loaded_and_deleted(store):
    with store.create_session("s") as session:
        session.set_state("step", 1)
        first = session.checkpoint("one")
        session.append({"x": 1})
        session.set_state("step", 2)
        second = session.checkpoint("two", kind="automatic", checkpoint_id="cp-2")
        session.set_state("step", 3)
        assert [(c.label, c.kind, c.seq) for c in session.checkpoints()] == [
            ("one", "manual", 1), ("two", "automatic", 3)]
        assert second.id == "cp-2" and first.created <= second.created
        assert session.load_checkpoint(first.id) == {"step": 1}
        assert store.read_session("s").load_checkpoint("cp-2") == {"step": 2}
        session.delete_checkpoint(first.id)
        assert [c.id for c in session.checkpoints()] == ["cp-2"]
        with pytest.raises(fsstore.CheckpointNotFound):
            session.load_checkpoint(first.id)
        with pytest.raises(fsstore.CheckpointNotFound):
            session.delete_checkpoint(first.id)


def test_finish_turn_can_checkpoint_the_turn(store):
    with store.create_session("s") as session:
        session.set_state("answer", 42)
        session.finish_turn(checkpoint=True)
        (info,) = session.checkpoints()
        assert (info.kind, info.label, info.seq) == ("turn", "turn 1", 2)


def test_a_checkpoint_stays_valid_as_the_log_grows_and_after_a_clear(small_store):
    with small_store.create_session("s") as session:
        session.merge_state({"a": 1, "b": [1, 2]})
        info = session.checkpoint("early")
        for i in range(100):
            session.commit([{"i": i, "pad": "p" * 100}], state_patch={"a": i})
        assert session.load_checkpoint(info.id) == {"a": 1, "b": [1, 2]}
        session.clear()
        assert session.load_checkpoint(info.id) == {"a": 1, "b": [1, 2]}
        assert session.checkpoints() == [info]


@pytest.mark.parametrize("bad_id", ["", ".hidden", "a/b", "..", "x" * 200, 7, "a\x00"])
def test_hostile_checkpoint_ids_are_refused_and_touch_nothing(store, bad_id):
    with store.create_session("s") as session:
        before = tree_snapshot(store.path)
        with pytest.raises(fsstore.InvalidCheckpointId):
            session.checkpoint(checkpoint_id=bad_id)
        with pytest.raises(fsstore.InvalidCheckpointId):
            session.load_checkpoint(bad_id)
        with pytest.raises(fsstore.InvalidCheckpointId):
            session.delete_checkpoint(bad_id)
        assert tree_snapshot(store.path) == before


def test_a_checkpoint_id_is_not_reused(store):
    with store.create_session("s") as session:
        session.checkpoint(checkpoint_id="x")
        with pytest.raises(fsstore.CheckpointExists):
            session.checkpoint(checkpoint_id="x")


@pytest.mark.parametrize(("options", "error"), [
    ({"kind": "weekly"}, fsstore.InvalidSetting),
    ({"label": 5}, fsstore.InvalidMetadata),
])
def test_bad_checkpoint_settings_are_refused(store, options, error):
    with store.create_session("s") as session:
        with pytest.raises(error):
            session.checkpoint(**options)
        assert session.checkpoints() == []


def test_a_damaged_checkpoint_is_rebuilt_from_the_log_and_reported(store):
    with store.create_session("s") as session:
        session.set_state("k", "v")
        info = session.checkpoint("c")
        session.set_state("k", "later")
    path = os.path.join(store.path, "sessions", "s", "checkpoints", info.id + ".ckpt")
    with open(path, "r+b") as handle:
        handle.seek(-1, os.SEEK_END)
        handle.write(b"\xff")
    reader = store.read_session("s")
    assert reader.load_checkpoint(info.id) == {"k": "v"}
    assert reader.state_findings[-1].path == path
    assert [f.path for f in store.verify() if f.level == "problem"] == [path]


def test_a_damaged_checkpoint_without_its_history_raises(store):
    with store.create_session("s") as session:
        session.set_state("k", "v")
        info = session.checkpoint("c")
        session.clear()
    path = os.path.join(store.path, "sessions", "s", "checkpoints", info.id + ".ckpt")
    with open(path, "r+b") as handle:
        handle.seek(-1, os.SEEK_END)
        handle.write(b"\xff")
    with pytest.raises(fsstore.CorruptionError) as caught:
        store.read_session("s").load_checkpoint(info.id)
    assert caught.value.path == path


def test_a_checkpoint_renamed_by_hand_is_left_out_and_reported(store):
    with store.create_session("s") as session:
        session.checkpoint(checkpoint_id="real")
    folder = os.path.join(store.path, "sessions", "s", "checkpoints")
    os.rename(os.path.join(folder, "real.ckpt"), os.path.join(folder, "other.ckpt"))
    assert store.read_session("s").checkpoints() == []
    (finding,) = store.verify()
    assert finding.level == "problem" and finding.path.endswith("other.ckpt")


# --- a snapshot names its seq and its session ---------------------------------------------


def session_with_snapshots(store):
    """A session with snapshots after seq 4 and seq 8; returns (states by seq, paths)."""
    with store.create_session("s") as session:
        for n in range(1, 9):
            session.set_state("n", n)
            if n in (4, 8):
                session.snapshot()
        path = session.path
    state_dir = os.path.join(path, "state")
    return {n: {"n": n} for n in range(1, 9)}, {
        n: os.path.join(state_dir, fsstore.layout.snapshot_name(n)) for n in (4, 8)}


def test_a_snapshot_whose_name_and_header_disagree_is_refused(store):
    states, paths = session_with_snapshots(store)
    with open(paths[8], "rb") as handle:
        eight = handle.read()
    with open(paths[4], "wb") as handle:  # the state at 8 under the name of seq 4
        handle.write(eight)
    with pytest.raises(fsstore.CorruptionError, match="named after seq 4"):
        snapshot.read(FileIO(), paths[4])
    reader = store.read_session("s")
    assert reader.state_at(4) == states[4]  # not the state at 8: the log is replayed
    (finding,) = reader.state_findings
    assert finding.level == "problem" and finding.path == paths[4]
    assert [f.path for f in store.verify() if f.level == "problem"] == [paths[4]]


@pytest.mark.parametrize("chain", [False, True], ids=["unchained", "chained"])
def test_a_snapshot_of_another_session_is_refused(tmp_path, chain):
    store = fsstore.open_store(tmp_path / "store", chain=chain)
    states, paths = session_with_snapshots(store)
    reader = store.read_session("s")
    file = snapshot.read(FileIO(), paths[8], identity=reader.identity, chain=reader.chain_rules)
    other_uid = fsstore.identity.mint()
    other = fsstore.identity.to_text(other_uid)
    # A chained session's snapshot is bound to its own chain: the other session's file
    # carries a MAC made under its uid (unkeyed: anyone can make it)
    seal = SnapshotSeal(Mac(), other_uid, file.meta["chain"]) if chain else None
    forged = snapshot.encode(snapshot.KIND_SNAPSHOT, 8, 1, file.header.position,
                             {"uid": other}, {"state": {"forged": True}, "commits": []},
                             seal)
    with open(paths[8], "wb") as handle:
        handle.write(forged)
    with pytest.raises(fsstore.CorruptionError, match="belongs to another session"):
        snapshot.read(FileIO(), paths[8], identity=reader.identity)
    assert reader.state() == states[8]
    (finding,) = reader.state_findings
    assert finding.level == "problem" and "another session" in finding.message
    assert [f.path for f in store.verify() if f.level == "problem"] == [paths[8]]


def test_deeply_nested_snapshot_bodies_are_corruption_not_a_recursion_error(tmp_path):
    for depth in (snapshot.MAX_SNAPSHOT_NESTING + 1, 100_000):
        body = b"\x82\xa5state\x81\xa1k" + b"\x91" * depth + b"\xc0" + b"\xa7commits\x90"
        data = snapshot.encode(snapshot.KIND_SNAPSHOT, 3, 1, LogPosition(1, 64), {}, {})
        header = bytearray(data[:snapshot.HEADER_SIZE])
        meta = data[snapshot.HEADER_SIZE:snapshot.HEADER_SIZE + 1]
        struct.pack_into("<II", header, 64, len(body), crc32c(body))
        struct.pack_into("<I", header, 76, crc32c(bytes(header[:76])))
        path = write_file(tmp_path, bytes(header) + meta + body)
        with pytest.raises(fsstore.CorruptionError, match="nests deeper"):
            snapshot.read(FileIO(), path)
