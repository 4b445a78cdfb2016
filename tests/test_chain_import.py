"""An import into a store whose policy chains sessions (fsstore/import_chain.py, docs/FORMAT.md
3.4 "Which sessions" and 22): each imported session gets a fresh chain of that store's
policy, under its key, with every file bound to it as a chained session's writers bind
them, and reads back as the exported one did."""

from __future__ import annotations

import json
import os
import struct

import msgspec
import pytest
from conftest import tree_snapshot
from test_chain_frames import edit_payload
from test_chain_sessions import fill, log_of, manifest_of, seqs

import fsstore
from fsstore import ChainKeyMismatch, ChainKeyRequired, CorruptionError
from fsstore.chain import ChainKey, Mac, genesis
from fsstore.fsio import FileIO
from fsstore.import_chain import import_anchor
from fsstore.log import LogReader
from fsstore.log_format import (
    FRAME_CHAIN_START,
    FRAME_CHAINED,
    FRAME_CHAINED_BASE,
    _parse_frame,
)
from fsstore.segment_header import SEGMENT_HEADER_SIZE

KEY = bytes(range(100, 132))
TARGET_KEY = bytes(range(1, 33))
SOURCES = [pytest.param(False, None, id="unchained"), pytest.param(True, None, id="unkeyed"),
           pytest.param(True, KEY, id="keyed")]
TARGETS = [pytest.param(None, id="into-unkeyed"), pytest.param(TARGET_KEY, id="into-keyed")]


def source_store(path, chained, key):
    return fsstore.open_store(path, chain=chained, chain_key=key, segment_size=4096)


def target_store(path, key):
    return fsstore.open_store(path, chain=True, chain_key=key, segment_size=4096)


def build(store):
    """A session with events over several segments, turns, state, checkpoints, blobs,
    messages and a vector collection; a fork of it."""
    with store.create_session("a", title="a", metadata={"k": 1}) as s:
        fill(s, 30)
        s.finish_turn()
        for n in range(5):
            s.commit([{"role": "assistant", "content": f"step {n}"}], state_patch={"n": n})
        s.checkpoint("mid", checkpoint_id="mid")
        s.set_state("ref", s.blobs.put(b"text " * 200, media_type="text/plain"))
        s.messages.append(fsstore.Message.of_text("user", "a message", id="m1"))
        memory = s.create_collection("memory", dim=3)
        memory.upsert([fsstore.VectorDocument(f"d{i}", [i, 0.5, -i], content=f"c{i}",
                                              metadata={"i": i}, seq=1, turn=1)
                       for i in range(4)])
        memory.seal()
        memory.upsert([fsstore.VectorDocument("d1", [9, 9, 9])])
        memory.delete(["d2"])
        s.finish_turn()
        fill(s, 10, first=30)
        s.checkpoint("end", checkpoint_id="end")
    store.fork_session("a", "fork", at_checkpoint="mid").close()
    with store.open_session("fork") as f:
        fill(f, 3, first=50)


def _bytes(value):
    return msgspec.msgpack.encode(value)


def assert_same(source, target, sid):
    a, b = source.read_session(sid), target.read_session(sid)
    assert _bytes(list(a.events(include_internal=True))) == _bytes(
        list(b.events(include_internal=True)))
    assert [(e.seq, e.turn, e.ts) for e in a.events(include_internal=True)] == [
        (e.seq, e.turn, e.ts) for e in b.events(include_internal=True)]
    assert (a.head, a.history_start, a.log_tail.log_start) == (
        b.head, b.history_start, b.log_tail.log_start)
    assert _bytes(a.state()) == _bytes(b.state())
    assert a.checkpoints() == b.checkpoints()
    for info in a.checkpoints():
        assert _bytes(a.load_checkpoint(info.id)) == _bytes(b.load_checkpoint(info.id))
    assert _bytes(list(a.messages.all())) == _bytes(list(b.messages.all()))
    digests = sorted((d, c) for d, _, c in a.blobs.digests())
    assert digests == sorted((d, c) for d, _, c in b.blobs.digests())
    for digest, _ in digests:
        ref = fsstore.BlobRef("sha256:" + digest, -1)
        assert a.blobs.get(ref) == b.blobs.get(ref)
    assert [(c.name, c.dim, c.dtype, c.metric, c.count) for c in a.collections()] == [
        (c.name, c.dim, c.dtype, c.metric, c.count) for c in b.collections()]
    for info in a.collections():
        ids = [f"d{i}" for i in range(4)]
        for x, y in zip(a.collection(info.name).get(ids), b.collection(info.name).get(ids),
                        strict=True):
            assert (x is None) == (y is None)
            if x is not None:
                assert x.embedding.tobytes() == y.embedding.tobytes()
                assert (x.id, x.content, x.metadata, x.seq, x.turn) == (
                    y.id, y.content, y.metadata, y.seq, y.turn)
    assert (a.title, a.metadata, a.parent) == (b.title, b.metadata, b.parent)
    assert b.verify() == []
    assert b.head_hash is not None


def frames_of(target, sid):
    """{first seq: [frame bytes, ...]} of the session's log files, compacted ones read as
    the plain segments they stand for."""
    path = os.path.join(target.path, "sessions", sid, "log")
    reader = LogReader(FileIO(), path)
    frames = {}
    for first in reader.list_segments():
        with reader.open_segment(first) as segment:
            data = segment.pread(segment.data_end(), 0)
        frames[first], off = [], SEGMENT_HEADER_SIZE
        while (frame := _parse_frame(data, memoryview(data), off, len(data))) is not None:
            frames[first].append(data[off:off + frame.size])
            off += frame.size
    return frames


def frame_type(frame):
    return struct.unpack_from("<I", frame, 20)[0]


def assert_chained_as_policy(target, sid, key):
    """The session's manifest declares the store's policy (no forks), every frame of its
    log is chained, and its log starts at the genesis of its own uid (or a base)."""
    data = manifest_of(target, sid)
    assert data["version"] == "2.0"
    chain = {k: v for k, v in data["chain"].items() if k not in ("at", "mac")}
    assert chain == ({"alg": "sha256"} if key is None else
                     {"alg": "hmac-sha256", "key_id": ChainKey(key).key_id})
    frames = frames_of(target, sid)
    for found in frames.values():
        assert frame_type(found[0]) in (FRAME_CHAIN_START, FRAME_CHAINED_BASE)
        assert {frame_type(f) for f in found[1:]} <= {FRAME_CHAINED}
    start = min(frames)
    if frame_type(frames[start][0]) == FRAME_CHAIN_START:
        uid = int(data["uid"], 16)
        assert frames[start][0][-72:-40] == genesis(Mac(key), uid, start)
    return frames


@pytest.mark.parametrize("target_key", TARGETS)
@pytest.mark.parametrize(("chained", "key"), SOURCES)
def test_an_import_into_a_chained_store_writes_sessions_chained_by_its_policy(
        tmp_path, chained, key, target_key):
    source = source_store(tmp_path / "s", chained, key)
    build(source)
    fsstore.export_sessions(source, tmp_path / "out.jsonl")
    target = target_store(tmp_path / "t", target_key)
    report = fsstore.import_sessions(target, tmp_path / "out.jsonl")
    assert report.sessions == 2
    for sid in ("a", "fork"):
        assert_same(source, target, sid)
        assert_chained_as_policy(target, sid, target_key)
        with target.open_session(sid) as session:  # a writer takes up its run
            session.append({"after": "import"})
        assert target.read_session(sid).verify() == []
    collection = os.path.join(target.path, "sessions", "a", "vectors", "memory",
                              "collection.json")
    with open(collection, encoding="utf-8") as handle:
        assert set(json.load(handle)["chain"]) >= {"wal", "mac"}  # bound (15.9)
    # an edit of the imported log, its checksum recomputed, is caught by the chain
    log = log_of(target, "a", target_key)
    edit_payload(log, min(log.segments), 1)
    with pytest.raises(CorruptionError, match="chain"):
        seqs(target.read_session("a"))
    assert any("chain" in f.message for f in target.read_session("a").verify()
               if f.level == "problem")


@pytest.mark.parametrize("target_key", TARGETS)
@pytest.mark.parametrize(("chained", "key"), SOURCES)
def test_a_retained_session_imports_with_a_chained_base(tmp_path, chained, key, target_key):
    source = source_store(tmp_path / "s", chained, key)
    with source.create_session("r") as s:
        for turn in range(20):
            s.commit([{"t": turn, "text": "x" * 200}], state_patch={"t": turn})
            s.finish_turn()
            if turn == 3:
                s.checkpoint(checkpoint_id="early")  # in the history retention drops
        s.retain(keep_turns=4)
        s.checkpoint(checkpoint_id="late")
    assert source.read_session("r").history_start > 1
    fsstore.export_sessions(source, tmp_path / "out.jsonl")
    target = target_store(tmp_path / "t", target_key)
    fsstore.import_sessions(target, tmp_path / "out.jsonl")
    assert_same(source, target, "r")
    frames = assert_chained_as_policy(target, "r", target_key)
    start = min(frames)
    base = frames[start][0]
    assert frame_type(base) == FRAME_CHAINED_BASE
    last = struct.unpack_from("<Q", base, 8)[0] + struct.unpack_from("<I", base, 16)[0] - 1
    uid = int(manifest_of(target, "r")["uid"], 16)
    anchor = import_anchor(Mac(target_key), uid, last)
    assert base[-72:-40] == anchor  # passed on: the next segment anchors on it
    assert frames[last + 1][0][-72:-40] == anchor
    assert anchor != genesis(Mac(target_key), uid, last + 1)
    with target.open_session("r") as session:
        session.append({"after": "import"})
    assert target.read_session("r").verify() == []


@pytest.mark.parametrize("chained", [False, True])
def test_a_cleared_session_imports_chained_with_its_checkpoint_from_before(tmp_path,
                                                                            chained):
    source = source_store(tmp_path / "s", chained, None)
    with source.create_session("c") as s:
        fill(s, 5)
        s.checkpoint(checkpoint_id="before")
        s.clear()
        fill(s, 3)
    fsstore.export_sessions(source, tmp_path / "out.jsonl")
    target = target_store(tmp_path / "t", None)
    fsstore.import_sessions(target, tmp_path / "out.jsonl")
    assert_same(source, target, "c")
    assert_chained_as_policy(target, "c", None)


def test_an_import_into_a_keyed_store_without_its_key_writes_nothing(tmp_path):
    source = source_store(tmp_path / "s", True, None)
    build(source)
    fsstore.export_sessions(source, tmp_path / "out.jsonl")
    target_store(tmp_path / "t", TARGET_KEY).create_session("x").close()
    before = tree_snapshot(tmp_path / "t")
    with pytest.raises(ChainKeyRequired):
        fsstore.import_sessions(fsstore.open_store(tmp_path / "t"), tmp_path / "out.jsonl")
    with pytest.raises(ChainKeyMismatch):
        fsstore.import_sessions(fsstore.open_store(tmp_path / "t", chain_key=KEY),
                                tmp_path / "out.jsonl")
    assert tree_snapshot(tmp_path / "t") == before
    assert not [n for n in os.listdir(tmp_path / "t" / "sessions") if n.startswith(".")]


@pytest.mark.parametrize(("chained", "key"), SOURCES)
def test_an_import_into_a_store_without_a_chain_policy_stays_unchained(tmp_path, chained,
                                                                       key):
    source = source_store(tmp_path / "s", chained, key)
    build(source)
    fsstore.export_sessions(source, tmp_path / "out.jsonl")
    target = fsstore.open_store(tmp_path / "t", segment_size=4096, chain=False)
    fsstore.import_sessions(target, tmp_path / "out.jsonl")
    for sid in ("a", "fork"):
        data = manifest_of(target, sid)
        assert "chain" not in data and data["version"] != "2.0"
        reader = target.read_session(sid)
        assert reader.head_hash is None and reader.verify() == []
        assert _bytes(list(source.read_session(sid).events(include_internal=True))) == (
            _bytes(list(reader.events(include_internal=True))))


def test_a_refused_export_writes_nothing_into_a_chained_store(tmp_path):
    source = source_store(tmp_path / "s", True, KEY)
    build(source)
    fsstore.export_sessions(source, tmp_path / "out.jsonl")
    lines = (tmp_path / "out.jsonl").read_bytes().splitlines(keepends=True)
    (tmp_path / "cut.jsonl").write_bytes(b"".join(lines[:-1]))  # no trailer
    target = target_store(tmp_path / "t", TARGET_KEY)
    before = tree_snapshot(tmp_path / "t")
    with pytest.raises(fsstore.InvalidExport, match="trailer"):
        fsstore.import_sessions(target, tmp_path / "cut.jsonl")
    assert tree_snapshot(tmp_path / "t") == before
