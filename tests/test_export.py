"""fsstore export and import (fsstore/export.py, fsstore/importer.py, FORMAT 22): a round
trip recreates every event, seq, turn, ts, state, checkpoint, blob and vector; a damaged
file is refused naming its line, with nothing written."""

from __future__ import annotations

import datetime
import json
import os
import time

import msgspec
import pytest
from crc32c import crc32c
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fsstore
from fsstore.cli import main
from fsstore.export_format import from_json, seal, to_json


def build_rich(root) -> fsstore.Store:
    """Sessions with every kind of content: messages, tool calls, commits, checkpoints,
    a fork, blobs, vectors, work, a workspace; one retained and compacted, one cleared,
    one vacuumed (reclaimed work, a redacted message)."""
    store = fsstore.open_store(root, segment_size=4096)
    with store.create_session("rich", title="rich", metadata={"k": [1, 2]}) as s:
        s.append({"role": "user", "content": "hi", "raw": b"\x00\xff", "nan": float("inf"),
                  1: "int key", "$only": {"$base64": "not a form"},
                  "when": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)},
                 kind="message")
        s.append({"name": "read_file", "args": {"path": "x"}}, kind="tool_call")
        s.append({"output": "ok"}, kind="tool_result")
        s.finish_turn()
        for n in range(40):
            s.commit([{"role": "assistant", "content": f"step {n}" * 20}],
                     state_patch={"n": n, "blob": b"b" * n})
        s.checkpoint("mid", checkpoint_id="mid")
        ref = s.blobs.put(b"text " * 500, media_type="text/plain")
        s.blobs.put(os.urandom(300))
        s.set_state("ref", ref)
        memory = s.create_collection("memory", dim=3)
        memory.upsert([fsstore.VectorDocument(f"d{i}", [i, 0.1, -i], content=f"c{i}",
                                              metadata={"i": i, "b": b"x"}, seq=1, turn=1)
                       for i in range(5)])
        memory.seal()
        memory.upsert([fsstore.VectorDocument("d1", [9, 9, 9])])
        memory.delete(["d2"])
        s.create_collection("half", dim=2, dtype="float16", metric="euclidean").upsert(
            [fsstore.VectorDocument("h", [0.1, 0.3])])
        s.messages.append(fsstore.Message.of_text("user", "a message", id="m1"))
        s.finish_turn()
    store.fork_session("rich", "fork", at_checkpoint="mid").close()
    with store.open_session("fork") as f:
        f.append({"after": "fork"})
    with store.create_session("retained") as s:
        for turn in range(30):
            s.commit([{"t": turn, "pad": "p" * 200}], state_patch={"t": turn})
            s.finish_turn()
        s.retain(keep_turns=5)
    store.compact(["retained"])
    with store.create_session("cleared") as s:
        s.append({"gone": 1})
        s.checkpoint(checkpoint_id="before")
        s.clear()
        s.append({"kept": 2})
    with store.create_session("vacuumed") as s:
        s.queue.enqueue_many([("job", {"n": n}) for n in range(4)])
        for _ in range(4):
            s.queue.complete(s.queue.claim("w", 600))
        s.queue.enqueue("open", {"x": 1})
        s.messages.append(fsstore.Message.of_text("user", "secret", id="gone"))
        s.messages.delete("gone", ts=time.time() - 7200)
        s.finish_turn()
        for n in range(30):  # past the segment size: what vacuum rewrites is sealed
            s.append({"pad": "p" * 300, "n": n})
        s.finish_turn()
        s.vacuum(grace=0, message_grace=0)
    store.create_workspace("team", name="Team", metadata={"q": 3})
    store.add_to_workspace("team", "rich", "primary")
    store.add_to_workspace("team", "fork", "related")
    return store


def _bytes(value) -> bytes:
    return msgspec.msgpack.encode(value)  # NaN-safe equality


def assert_same(source: fsstore.Store, dest: fsstore.Store, sid: str, new_id: str | None = None):
    a, b = source.read_session(sid), dest.read_session(new_id or sid)
    assert _bytes(list(a.events(include_internal=True))) == _bytes(
        list(b.events(include_internal=True)))
    assert (a.head, a.history_start, a.log_tail.log_start) == (
        b.head, b.history_start, b.log_tail.log_start)
    assert _bytes(a.state()) == _bytes(b.state())
    assert a.checkpoints() == b.checkpoints()
    for info in a.checkpoints():
        assert _bytes(a.load_checkpoint(info.id)) == _bytes(b.load_checkpoint(info.id))
    assert _bytes([m for m in a.messages.all()]) == _bytes([m for m in b.messages.all()])
    blobs_a = sorted((d, c) for d, _, c in a.blobs.digests())
    assert blobs_a == sorted((d, c) for d, _, c in b.blobs.digests())
    for digest, _ in blobs_a:
        ref = fsstore.BlobRef("sha256:" + digest, -1)
        assert a.blobs.get(ref) == b.blobs.get(ref)
    assert [(c.name, c.dim, c.dtype, c.metric, c.count) for c in a.collections()] == [
        (c.name, c.dim, c.dtype, c.metric, c.count) for c in b.collections()]
    for info in a.collections():
        ids = [f"d{i}" for i in range(5)] + ["h"]
        pairs = zip(a.collection(info.name).get(ids), b.collection(info.name).get(ids),
                    strict=True)
        for x, y in pairs:
            assert (x is None) == (y is None)
            if x is not None:
                assert x.embedding.tobytes() == y.embedding.tobytes()
                assert (x.id, x.content, x.metadata, x.seq, x.turn) == (
                    y.id, y.content, y.metadata, y.seq, y.turn)
    assert [f for f in b.verify() if f.kind == "problem"] == []
    assert a.title == b.title and a.metadata == b.metadata and a.parent == b.parent


@pytest.fixture(scope="module")
def rich(tmp_path_factory):
    root = tmp_path_factory.mktemp("rich") / "store"
    build_rich(root)
    return root


def test_round_trip_of_a_whole_store_recreates_every_session_exactly(rich, tmp_path):
    source = fsstore.open_store(rich)
    report = fsstore.export_sessions(source, tmp_path / "all.jsonl")
    assert report.sessions == 5 and report.workspaces == 1
    dest = fsstore.open_store(tmp_path / "dest")
    imported = fsstore.import_sessions(dest, tmp_path / "all.jsonl")
    assert imported.sessions == 5 and imported.events == report.events
    assert dest.session_ids() == source.session_ids()
    for sid in source.session_ids():
        assert_same(source, dest, sid)
    team = dest.workspace("team")
    assert (team.name, team.metadata) == ("Team", {"q": 3})
    assert {(m.session_id, m.role) for m in team.members} == {("rich", "primary"),
                                                            ("fork", "related")}
    assert dest.read_session("retained").history_start > 1


def test_zstd_and_blobs_beside_round_trip(rich, tmp_path):
    source = fsstore.open_store(rich)
    out = tmp_path / "rich.jsonl.zst"
    fsstore.export_sessions(source, out, ["rich"], blobs="beside")
    assert out.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"
    assert len(os.listdir(str(out) + ".blobs")) == 2
    assert b'"data"' not in __import__("zstandard").ZstdDecompressor().decompress(
        out.read_bytes(), max_output_size=1 << 26)
    dest = fsstore.open_store(tmp_path / "dest")
    fsstore.import_sessions(dest, out)
    assert_same(source, dest, "rich")


def test_cli_export_and_import_into_a_new_store(rich, tmp_path, capsys):
    out = tmp_path / "x.jsonl"
    assert main(["--store", str(rich), "export", "fork", "cleared", "-o", str(out),
                 "--zstd"]) == 0
    assert main(["--store", str(tmp_path / "new"), "import", str(out)]) == 0
    assert "imported 2 sessions" in capsys.readouterr().out
    source, dest = fsstore.open_store(rich), fsstore.open_store(tmp_path / "new")
    assert_same(source, dest, "fork")
    assert_same(source, dest, "cleared")


def test_an_existing_session_is_refused_unless_renamed_or_replaced(rich, tmp_path):
    source = fsstore.open_store(rich)
    out = tmp_path / "one.jsonl"
    fsstore.export_sessions(source, out, ["retained"])
    dest = fsstore.open_store(tmp_path / "dest")
    fsstore.import_sessions(dest, out)
    before = _listing(dest.path)
    with pytest.raises(fsstore.SessionExists):
        fsstore.import_sessions(dest, out)
    assert _listing(dest.path) == before
    report = fsstore.import_sessions(dest, out, rename="copy")
    assert report.renamed == {"retained": "copy"}
    assert_same(source, dest, "retained", "copy")
    assert dest.read_session("copy").identity.uid != dest.read_session("retained").identity.uid
    report = fsstore.import_sessions(dest, out, replace=True)
    assert report.replaced == ["retained"]
    assert_same(source, dest, "retained")


# --- refusals -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A small export of two sessions, and an empty store to import it into."""
    base = tmp_path_factory.mktemp("small")
    store = fsstore.open_store(base / "store")
    with store.create_session("a") as s:
        s.append({"x": b"1"})
        s.commit([{"y": 2}], state_patch={"k": "v"})
        s.checkpoint(checkpoint_id="c")
        s.blobs.put(b"blob")
    with store.create_session("b") as s:
        s.append_many([{"z": n} for n in range(3)])
    fsstore.export_sessions(store, base / "small.jsonl")
    return (base / "small.jsonl").read_bytes().splitlines(keepends=True)


def _listing(root) -> list[str]:
    found = []
    for folder, dirs, files in os.walk(root):
        found += [os.path.relpath(os.path.join(folder, n), root) for n in dirs + files]
    return sorted(found)


def _refused(tmp_path, data: bytes, match: str | None = None) -> fsstore.InvalidExport:
    path = tmp_path / "damaged.jsonl"
    path.write_bytes(data)
    store = fsstore.open_store(tmp_path / "dest")
    before = _listing(store.path)
    with pytest.raises(fsstore.InvalidExport, match=match) as caught:
        fsstore.import_sessions(store, path)
    assert _listing(store.path) == before  # nothing written, no temp folder left
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, fsstore.FsStoreError)
    return caught.value


def test_a_file_cut_at_any_line_boundary_or_inside_a_line_is_refused(small, tmp_path):
    for count in range(len(small)):
        error = _refused(tmp_path, b"".join(small[:count]))
        assert error.line == (count + 1 if count else None)
    for count in range(len(small)):
        line = small[count]
        error = _refused(tmp_path, b"".join(small[:count]) + line[: len(line) // 2])
        assert error.line == count + 1


def test_reordered_and_duplicated_lines_are_refused_naming_the_line(small, tmp_path):
    swapped = [*small]
    swapped[3], swapped[4] = swapped[4], swapped[3]
    assert _refused(tmp_path, b"".join(swapped), "numbered").line == 4
    doubled = [*small[:4], small[3], *small[4:]]
    assert _refused(tmp_path, b"".join(doubled), "numbered 4 where line 5").line == 5


def test_an_edited_value_is_refused(small, tmp_path):
    edited = [*small]
    edited[3] = edited[3].replace(b'"ts":', b'"ts":1', 1)
    assert _refused(tmp_path, b"".join(edited), "crc").line == 4
    # an edit whose crc was recomputed is caught by the trailer's checksum
    fields = json.loads(small[3])
    fields.pop("crc")
    fields["ts"] += 1
    edited[3] = seal(fields)
    assert _refused(tmp_path, b"".join(edited), "SHA-256").line == len(small)


def test_a_newer_major_version_is_refused(small, tmp_path):
    fields = json.loads(small[0])
    fields.pop("crc")
    fields["version"] = "2.0"
    error = _refused(tmp_path, b"".join([seal(fields), *small[1:]]), "upgrade fsstore")
    assert error.line == 1


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_any_damage_writes_nothing(small, tmp_path_factory, data):
    tmp_path = tmp_path_factory.mktemp("damage")
    raw = bytearray(b"".join(small))
    how = data.draw(st.sampled_from(["flip", "cut", "drop", "swap"]))
    if how == "flip":
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] ^= 1 << data.draw(st.integers(0, 7))
    elif how == "cut":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    else:
        lines = [*small]
        i = data.draw(st.integers(0, len(lines) - 2))
        if how == "drop":
            del lines[i]
        else:
            lines[i], lines[i + 1] = lines[i + 1], lines[i]
        raw = bytearray(b"".join(lines))
    _refused(tmp_path, bytes(raw))


def test_values_json_cannot_hold_read_back_equal():
    value = {"b": b"\x00", "f": [float("-inf"), -0.0, 1e308], 3: None, "$k": 1,
             "d": datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc),
             "n": {"$base64": "AA=="}, "big": 2**64 - 1, "neg": -(2**63)}
    text = json.dumps(to_json(value), allow_nan=False)
    assert _bytes(from_json(json.loads(text), "f", 1)) == _bytes(value)
    with pytest.raises(fsstore.InvalidExport, match="line 7"):
        from_json({"$nope": 1}, "f", 7)
    assert crc32c(b"") == 0


def test_a_line_of_the_wrong_shape_with_a_valid_crc_is_refused(small, tmp_path):
    fields = json.loads(small[2])
    fields.pop("crc")
    assert fields["type"] == "frame"
    fields["records"] = [["event"]]
    error = _refused(tmp_path, b"".join([*small[:2], seal(fields), *small[3:]]))
    assert error.line == 3


def test_a_cut_zstd_file_is_refused_as_cut_off(small, tmp_path):
    import zstandard

    packed = zstandard.ZstdCompressor().compress(b"".join(small))
    for cut in (len(packed) // 3, len(packed) - 2):
        error = _refused(tmp_path, packed[:cut], "cut off")
        assert error.line is not None


def test_an_export_taken_while_a_writer_appends_imports_a_prefix_of_whole_batches(tmp_path):
    import threading

    store = fsstore.open_store(tmp_path / "store", segment_size=4096)
    writer = store.create_session("live")
    writer.append_many([{"n": 0}, {"n": 0}])
    stop = threading.Event()

    def append() -> None:
        n = 0
        while not stop.is_set() and n < 3000:
            n += 1
            writer.commit([{"n": n}, {"n": n}], state_patch={"n": n})

    thread = threading.Thread(target=append)
    thread.start()
    try:
        for round_ in range(3):
            out = tmp_path / f"live-{round_}.jsonl"
            fsstore.export_sessions(store, out, ["live"])
            dest = fsstore.open_store(tmp_path / f"dest-{round_}")
            fsstore.import_sessions(dest, out)
            copy = dest.read_session("live")
            records = list(copy.events(include_internal=True))
            assert [e.seq for e in records] == list(range(1, copy.head + 1))
            events = [e.data["n"] for e in copy.events()]
            assert events[::2] == events[1::2]  # whole batches
            assert copy.state().get("n", 0) == events[-1]
            assert [f for f in copy.verify() if f.kind == "problem"] == []
    finally:
        stop.set()
        thread.join()
        writer.close()


def test_empty_cleared_and_state_only_sessions_round_trip_and_take_new_writes(tmp_path):
    store = fsstore.open_store(tmp_path / "store", segment_size=4096)
    store.create_session("empty").close()
    with store.create_session("cleared") as writer:
        writer.append({"a": 1})
        writer.clear()
    with store.create_session("state-only") as writer:
        for turn in range(20):
            writer.commit([{"pad": "x" * 300}], state_patch={"t": turn})
            writer.finish_turn()
        writer.retain(keep="state")
        assert writer.history_start == writer.head + 1  # no history left, only its image
    fsstore.export_sessions(store, tmp_path / "x.jsonl")
    dest = fsstore.open_store(tmp_path / "dest")
    fsstore.import_sessions(dest, tmp_path / "x.jsonl")
    for sid in store.session_ids():
        assert_same(store, dest, sid)
        head = dest.read_session(sid).head
        with dest.open_session(sid) as writer:
            assert writer.append({"more": 1}) == head + 1


def test_a_crash_during_an_import_leaves_each_session_whole_or_absent(tmp_path):
    from crashsim import CrashSimIO

    source = fsstore.open_store(tmp_path / "source")
    with source.create_session("a") as writer:
        writer.append({"x": b"1"})
        writer.commit([{"y": 2}], state_patch={"k": "v"})
        writer.checkpoint(checkpoint_id="c")
        writer.blobs.put(b"attached")
    fsstore.export_sessions(source, tmp_path / "a.jsonl")
    root = tmp_path / "store"
    fsstore.open_store(root)
    io = CrashSimIO(str(root))
    states = io.record_states(tmp_path / "states")
    fsstore.import_sessions(fsstore.open_store(root, io=io), tmp_path / "a.jsonl")
    io.on_op = None
    whole = 0
    for dest in states:
        store = fsstore.open_store(dest, create=False)
        if "a" in store.session_ids():
            whole += 1
            assert_same(source, store, "a")
    assert 0 < whole < len(states)
