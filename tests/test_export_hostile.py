"""fsstore import against crafted export files (fsstore/importer.py, FORMAT 22): lines
whose crcs and trailer are valid but whose values are hostile are refused as
InvalidExport naming the line, with the store's files as they were."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import struct
from collections.abc import Callable
from typing import Any

import pytest
from conftest import tree_snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fsstore
from fsstore import importer
from fsstore.export_format import seal


def reseal(lines: list[dict[str, Any]]) -> bytes:
    """``lines`` (fields without their crc) sealed and numbered anew, with the trailer's
    line count and SHA-256 recomputed: a file only its values can betray."""
    out, digest = [], hashlib.sha256()
    for number, fields in enumerate(lines, 1):
        fields = {**fields, "n": number}
        if fields["type"] == "trailer":
            fields.update(lines=number, sha256=digest.hexdigest())
        line = seal(fields)
        digest.update(line)
        out.append(line)
    return b"".join(out)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> list[dict[str, Any]]:
    base = tmp_path_factory.mktemp("hostile")
    store = fsstore.open_store(base / "store")
    with store.create_session("a") as s:
        s.append({"x": b"1"})
        s.finish_turn()
        s.commit([{"y": 2}], state_patch={"k": "v"})
        s.checkpoint(checkpoint_id="c")
        s.blobs.put(b"blob")
        s.create_collection("m", dim=2).upsert([fsstore.VectorDocument("d", [1, 2])])
    with store.create_session("b") as s:
        s.append_many([{"z": n} for n in range(3)])
    store.create_workspace("team")
    store.add_to_workspace("team", "a", "primary")
    fsstore.export_sessions(store, base / "x.jsonl")
    lines = [json.loads(line) for line in (base / "x.jsonl").read_bytes().splitlines()]
    for fields in lines:
        fields.pop("crc")
    return lines


def _line(lines: list[dict[str, Any]], kind: str, index: int = 0) -> dict[str, Any]:
    return [fields for fields in lines if fields["type"] == kind][index]


def _refused(tmp_path, data: bytes, name: str = "crafted.jsonl",
             store: fsstore.Store | None = None) -> fsstore.InvalidExport:
    path = tmp_path / name
    path.write_bytes(data)
    store = store or fsstore.open_store(tmp_path / "dest")
    before = tree_snapshot(store.path)
    with pytest.raises(fsstore.InvalidExport) as caught:
        fsstore.import_sessions(store, path)
    assert tree_snapshot(store.path) == before  # listing and bytes, no temp folder left
    assert caught.value.path == str(path)
    return caught.value


def _crafted(exported, change: Callable[[list[dict[str, Any]]], object]) -> bytes:
    lines = json.loads(json.dumps(exported))
    change(lines)
    return reseal(lines)


def test_the_reseal_helper_makes_a_file_the_import_takes(exported, tmp_path):
    (tmp_path / "ok.jsonl").write_bytes(_crafted(exported, lambda lines: None))
    report = fsstore.import_sessions(fsstore.open_store(tmp_path / "dest"),
                                     tmp_path / "ok.jsonl")
    assert report.session_ids == ["a", "b"] and report.workspaces == 1


def _number_of(exported, kind: str) -> int:
    return _line(exported, kind)["n"]


@pytest.mark.parametrize("change", [
    {"seq": 99},  # past the head
    {"log_start": 7},  # a log the session never had
    {"created": "nan"},  # a str float() would take
    {"kind": "sneaky"},
    {"position": [1, 2]},
    {"id": "../x"},
    {"state": {"k": "forged"}},  # at the head: not the head's state
])
def test_a_checkpoint_the_session_never_had_is_refused_naming_its_line(exported, tmp_path,
                                                                        change):
    error = _refused(tmp_path, _crafted(exported,
                                        lambda lines: _line(lines, "checkpoint").update(change)))
    assert error.line == _number_of(exported, "checkpoint")


def _with_checkpoints(tmp_path) -> list[dict[str, Any]]:
    """An export of a session with checkpoints inside its log: one taken with work open
    whose records a vacuum has since reclaimed, one after, and one at the head."""
    store = fsstore.open_store(tmp_path / "ckpt-store", segment_size=4096)
    with store.create_session("s") as s:
        s.commit([{"n": 0}], state_patch={"k": 0, "nan": float("nan")})
        s.queue.enqueue("job", {"n": 1})
        claim = s.queue.claim("w", 600)
        s.checkpoint(checkpoint_id="open-work")
        s.queue.complete(claim)
        s.commit([{"n": 1}], state_patch={"k": 1})
        s.checkpoint(checkpoint_id="middle")
        for n in range(30):  # past the segment size: what vacuum rewrites is sealed
            s.commit([{"pad": "p" * 300}], state_patch={"k": n + 2})
        s.finish_turn()
        s.vacuum(grace=0)
        s.checkpoint(checkpoint_id="head")
    fsstore.export_sessions(store, tmp_path / "ckpt.jsonl")
    lines = [json.loads(line) for line in (tmp_path / "ckpt.jsonl").read_bytes().splitlines()]
    for fields in lines:
        fields.pop("crc")
    return lines


def test_checkpoints_inside_the_log_and_a_nan_in_the_state_import(tmp_path):
    lines = _with_checkpoints(tmp_path)
    (tmp_path / "ok.jsonl").write_bytes(reseal(lines))
    dest = fsstore.open_store(tmp_path / "dest")
    fsstore.import_sessions(dest, tmp_path / "ok.jsonl")
    copy = dest.read_session("s")
    assert [c.id for c in copy.checkpoints()] == ["open-work", "middle", "head"]
    assert copy.state_at(copy.checkpoint_info("middle").seq)["k"] == 1


@pytest.mark.parametrize("which", ["open-work", "middle"])
def test_a_checkpoint_whose_state_the_log_does_not_fold_to_is_refused(tmp_path, which):
    lines = _with_checkpoints(tmp_path)
    line = [f for f in lines if f["type"] == "checkpoint" and f["id"] == which][0]
    line["state"]["state"]["k"] = "forged"
    error = _refused(tmp_path, reseal(lines))
    assert error.line == line["n"] and "folds to" in error.reason


def test_a_checkpoint_whose_body_is_no_image_is_refused(tmp_path):
    lines = _with_checkpoints(tmp_path)
    line = [f for f in lines if f["type"] == "checkpoint"][0]
    line["state"]["queue"] = "not a queue"
    assert _refused(tmp_path, reseal(lines)).line == line["n"]


def test_a_checkpoint_given_twice_is_refused(exported, tmp_path):
    def twice(lines):
        at = lines.index(_line(lines, "checkpoint"))
        lines.insert(at, dict(lines[at]))
        _line(lines, "end").update(checkpoints=2)

    error = _refused(tmp_path, _crafted(exported, twice))
    assert "twice" in error.reason


@pytest.mark.parametrize("change", [
    {"members": []},
    {"members": {"a": "primary", "not-in-file": "related"}},
    {"members": {"a": "no role!"}},
    {"id": "../ws"},
    {"metadata": {"k": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[
        ]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}},
])
def test_a_bad_workspace_line_is_refused_before_any_session_is_put_in_place(
        exported, tmp_path, change):
    error = _refused(tmp_path, _crafted(exported,
                                        lambda lines: _line(lines, "workspace").update(change)))
    assert error.line == _number_of(exported, "workspace")


@pytest.mark.parametrize("change", [
    {"parent": "../../etc"},
    {"parent": {"id": "../../etc", "seq": 1}},
    {"title": 5},
    {"tags": "x"},
    {"metadata": {"deep": json.loads("[" * 70 + "]" * 70)}},
])
def test_a_manifest_no_session_can_have_is_refused_leaving_no_temp_folder(
        exported, tmp_path, change):
    error = _refused(tmp_path, _crafted(
        exported, lambda lines: _line(lines, "session")["manifest"].update(change)))
    assert error.line == 2


def _nan_embedding(lines):
    _line(lines, "document")["embedding"] = base64.b64encode(
        struct.pack("<2f", float("nan"), 1.0)).decode()


@pytest.mark.parametrize(("kind", "change"), [
    ("collection", lambda fields: fields.update(name="../../x")),
    ("document", lambda fields: fields.update(id=5)),
    ("document", lambda fields: fields.update(seq="x")),
    ("session", lambda fields: fields.update(log_start=2**70, head=2**70)),
    ("frame", lambda fields: fields.update(ts="1")),
    ("frame", lambda fields: fields.update(ts=float("inf"))),
])
def test_values_the_engine_refuses_are_invalid_export_naming_a_line(exported, tmp_path,
                                                                     kind, change):
    error = _refused(tmp_path, _crafted(exported, lambda lines: change(_line(lines, kind))))
    assert error.line is not None and error.line >= _number_of(exported, kind)


def test_a_nan_embedding_is_refused_as_invalid_export(exported, tmp_path):
    error = _refused(tmp_path, _crafted(exported, _nan_embedding))
    assert error.line is not None and "NaN" in error.reason


@pytest.mark.parametrize(("kind", "data"), [
    ("fsstore.message", {"junk": 1}),
    ("fsstore.queue", [1, 2]),
    ("fsstore.input", None),
    ("fsstore.state", "not ops"),
])
def test_a_store_record_the_fold_cannot_apply_is_refused_at_the_state_line(
        exported, tmp_path, kind, data):
    error = _refused(tmp_path, _crafted(
        exported, lambda lines: _line(lines, "frame").update(records=[[kind, data]])))
    assert error.line == _number_of(exported, "state") and ".tmp-" not in str(error)


def test_a_collection_given_twice_is_refused_naming_its_line(exported, tmp_path):
    def twice(lines):
        at = lines.index(_line(lines, "collection"))
        lines.insert(at + 2, dict(lines[at]))

    error = _refused(tmp_path, _crafted(exported, twice))
    assert "twice" in error.reason and error.line == _number_of(exported, "collection") + 2


def test_a_blob_compressed_flag_that_is_no_bool_is_refused(exported, tmp_path):
    error = _refused(tmp_path, _crafted(
        exported, lambda lines: _line(lines, "blob").update(compressed="yes")))
    assert error.line == _number_of(exported, "blob")


def _with_deep_value(exported, kind: str, depth: int) -> bytes:
    """The export with a value nested ``depth`` deep in the first ``kind`` line's map
    (its ``image``, ``state`` or ``metadata``), sealed by hand: too deep for seal()."""
    from crc32c import crc32c

    field = {"state": "image", "checkpoint": "state", "workspace": "metadata"}[kind]
    lines = json.loads(json.dumps(exported))
    _line(lines, kind)[field] = {"deep": "@DEEP@"}
    out, digest = [], hashlib.sha256()
    for number, fields in enumerate(lines, 1):
        fields = {**fields, "n": number}
        if fields["type"] == "trailer":
            fields.update(lines=number, sha256=digest.hexdigest())
        text = json.dumps(fields, separators=(",", ":")).encode().replace(
            b'"@DEEP@"', b"[" * depth + b"]" * depth)
        line = b'%s,"crc":"%08x"}\n' % (text[:-1], crc32c(text))
        digest.update(line)
        out.append(line)
    return b"".join(out)


@pytest.mark.parametrize("kind", ["state", "checkpoint", "workspace"])
@pytest.mark.parametrize("depth", [900, 300_000])
def test_deeply_nested_values_are_refused_as_invalid_export(exported, tmp_path, kind, depth):
    error = _refused(tmp_path, _with_deep_value(exported, kind, depth))
    assert error.line == _number_of(exported, kind)


def test_turns_that_go_backwards_are_refused(exported, tmp_path):
    def backwards(lines):
        frames = [fields for fields in lines if fields["type"] == "frame"]
        frames[0]["turn"] = frames[1]["turn"] + 1

    error = _refused(tmp_path, _crafted(exported, backwards))
    assert "turn" in error.reason


def test_an_over_long_line_is_refused_naming_it_before_it_is_held(exported, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setattr(importer, "MAX_LINE_BYTES", 1 << 16)
    good = _crafted(exported, lambda lines: None).splitlines(keepends=True)
    error = _refused(tmp_path, good[0] + b"x" * (1 << 20))  # no newline
    assert error.line == 2 and "longer than" in error.reason
    # a line within the limit is read as before
    error = _refused(tmp_path, good[0] + b"x" * 100 + b"\n")
    assert error.line == 2 and "longer than" not in error.reason


def test_a_zstd_bomb_is_refused_with_bounded_memory(exported, tmp_path, monkeypatch):
    import tracemalloc

    import zstandard

    monkeypatch.setattr(importer, "MAX_LINE_BYTES", 1 << 20)
    header = _crafted(exported, lambda lines: None).splitlines(keepends=True)[0]
    compressor = zstandard.ZstdCompressor(level=19).compressobj()
    bomb = compressor.compress(header)
    zeros = b"\0" * (1 << 20)
    for _ in range(256):  # 256 MiB of one line, some kilobytes compressed
        bomb += compressor.compress(zeros)
    bomb += compressor.flush()
    assert len(bomb) < 200_000
    tracemalloc.start()
    try:
        error = _refused(tmp_path, bomb, "bomb.jsonl.zst")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert error.line == 2 and "longer than" in error.reason
    assert peak < 64 << 20


def test_a_beside_blob_that_is_a_symlink_or_of_another_size_is_refused(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    with store.create_session("a") as s:
        ref = s.blobs.put(b"the blob")
    out = tmp_path / "x.jsonl"
    fsstore.export_sessions(store, out, blobs="beside")
    blob = tmp_path / "x.jsonl.blobs" / ref.digest.split(":")[1]
    secret = tmp_path / "secret"
    secret.write_bytes(b"the blob")  # the same bytes: only the link betrays it
    blob.unlink()
    blob.symlink_to(secret)
    dest = fsstore.open_store(tmp_path / "dest")
    before = tree_snapshot(dest.path)
    with pytest.raises(fsstore.InvalidExport, match="line 4"):
        fsstore.import_sessions(dest, out)
    blob.unlink()
    blob.write_bytes(b"the blob and more")
    with pytest.raises(fsstore.InvalidExport, match="line 4"):
        fsstore.import_sessions(dest, out)
    assert tree_snapshot(dest.path) == before


def test_an_export_beside_rewrites_a_stale_blob_file_of_the_same_size(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    with store.create_session("a") as s:
        ref = s.blobs.put(b"the blob")
    out = tmp_path / "x.jsonl"
    folder = tmp_path / "x.jsonl.blobs"
    folder.mkdir()
    (folder / ref.digest.split(":")[1]).write_bytes(b"XXX blob")
    fsstore.export_sessions(store, out, blobs="beside")
    dest = fsstore.open_store(tmp_path / "dest")
    fsstore.import_sessions(dest, out)
    assert dest.read_session("a").blobs.get(ref) == b"the blob"


def _export_of_two_sessions_the_store_has(tmp_path) -> fsstore.Store:
    """``x.jsonl``: an export of sessions a and b; and a store that has both already."""
    store = fsstore.open_store(tmp_path / "store")
    for sid in ("a", "b"):
        with store.create_session(sid) as s:
            s.append({"new": sid})
    fsstore.export_sessions(store, tmp_path / "x.jsonl")
    dest = fsstore.open_store(tmp_path / "dest")
    for sid in ("a", "b"):
        with dest.create_session(sid) as s:
            s.append({"old": sid})
    return dest


def test_replace_is_refused_with_nothing_changed_while_a_replaced_session_is_open(tmp_path):
    dest = _export_of_two_sessions_the_store_has(tmp_path)
    writer = dest.open_session("b")
    try:
        before = tree_snapshot(dest.path)
        with pytest.raises(fsstore.SessionLocked):
            fsstore.import_sessions(dest, tmp_path / "x.jsonl", replace=True)
        after = tree_snapshot(dest.path)
        assert after == before  # "a" not replaced either
        assert writer.append({"still": "writing"}) == 2
    finally:
        writer.close()
    report = fsstore.import_sessions(dest, tmp_path / "x.jsonl", replace=True)
    assert report.replaced == ["a", "b"]
    assert [e.data for e in dest.read_session("b").events()] == [{"new": "b"}]
    assert not [n for n in os.listdir(dest.path + "/sessions") if n.startswith(".")]


# --- the command line ----------------------------------------------------------------------


def _fsstore(*args: str, stdin: bytes = b"") -> tuple[int, bytes, str]:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "fsstore", *args], input=stdin,
                          capture_output=True, timeout=120, check=False)
    return done.returncode, done.stdout, done.stderr.decode()


def test_cli_imports_an_export_piped_to_it(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    with store.create_session("a") as s:
        s.append_many([{"n": n} for n in range(50)])
    for flags in (["--zstd"],):  # zstd: the stream the format could not seek in
        code, out, _ = _fsstore("--store", str(store.path), "export", "a", *flags)
        assert code == 0
        dest = tmp_path / f"dest{len(flags)}"
        code, _, err = _fsstore("--store", str(dest), "import", "/dev/stdin", stdin=out)
        assert (code, err) == (0, "")
        assert fsstore.open_store(dest).read_session("a").head == 50


def test_cli_export_onto_a_folder_is_refused_with_nothing_written(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    store.create_session("a").close()
    (tmp_path / "out").mkdir()
    before = sorted(os.listdir(tmp_path))
    code, _, err = _fsstore("--store", str(store.path), "export", "a", "-o",
                            str(tmp_path / "out"))
    assert code != 0 and str(tmp_path / "out") in err and len(err.splitlines()) == 1
    assert ".tmp-" not in err
    assert sorted(os.listdir(tmp_path)) == before


def test_a_bad_new_id_is_refused_as_the_callers_before_the_file_is_read(tmp_path):
    with pytest.raises(fsstore.InvalidSessionId) as caught:
        fsstore.import_sessions(fsstore.open_store(tmp_path / "dest"), tmp_path / "absent",
                                rename={"a": "../x"})
    assert not isinstance(caught.value, fsstore.InvalidExport)


# --- exactness -----------------------------------------------------------------------------

_scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
            | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8)
            | st.binary(max_size=8))
_keys = st.text(max_size=4) | st.integers(-5, 5) | st.sampled_from(["$base64", "$map", "$x"])
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    _keys, inner, max_size=3), max_leaves=6)
_operations = st.lists(st.one_of(
    st.tuples(st.just("append"), _values),
    st.tuples(st.just("commit"), st.dictionaries(st.text(min_size=1, max_size=4), _values,
                                                 max_size=2)),
    st.tuples(st.just("turn"), st.none()),
    st.tuples(st.just("checkpoint"), st.none() | st.text(max_size=6)),
    st.tuples(st.just("blob"), st.binary(max_size=300)),
    st.tuples(st.just("message"), st.text(max_size=10)),
    st.tuples(st.just("delete"), st.none()),
    st.tuples(st.just("work"), st.integers(0, 2)),
    st.tuples(st.just("input"), _values),
    st.tuples(st.just("vector"), st.lists(st.floats(-1e4, 1e4, width=16), min_size=3,
                                          max_size=3)),
    st.tuples(st.just("meta"), st.text(max_size=6)),
    st.tuples(st.just("clear"), st.none()),
), min_size=1, max_size=14)


def _build(store: fsstore.Store, operations) -> None:
    with store.create_session("p", title="t", tags=["x"]) as s:
        half = s.create_collection("half", dim=3, dtype="float16")
        full = s.create_collection("full", dim=3, metric="euclidean")
        for step, (kind, value) in enumerate(operations):
            if kind == "append":
                s.append({"v": value}, kind="event")
            elif kind == "commit":
                s.commit([{"step": step}], state_patch=value)
            elif kind == "turn":
                with contextlib.suppress(fsstore.TurnError):  # none begun since a clear
                    s.finish_turn()
            elif kind == "checkpoint":
                s.checkpoint(value, checkpoint_id=f"c{step}")
            elif kind == "blob":
                s.blobs.put(value, compress=step % 2 == 0)
            elif kind == "message":
                s.messages.append(fsstore.Message.of_text("user", value, id=f"m{step}"))
            elif kind == "delete" and s.messages.count():
                s.messages.pop()
            elif kind == "work":
                s.queue.enqueue("job", {"step": step})
                if value and (claim := s.queue.claim("w", 600)) is not None:
                    (s.queue.complete if value == 1 else s.queue.release)(claim)
            elif kind == "input":
                s.inputs.submit(value)
            elif kind == "vector":
                for collection in (half, full):
                    collection.upsert([fsstore.VectorDocument(
                        f"d{step}", value, content=str(step), metadata={"s": step},
                        seq=step, turn=step)])
            elif kind == "meta":
                s.update_metadata(title=value or None, tags=[value], metadata={"m": value})
            elif kind == "clear":
                s.clear()


def _everything(store: fsstore.Store) -> bytes:
    import msgspec

    r = store.read_session("p")
    parts: list[Any] = [list(r.events(include_internal=True)), r.head, r.history_start,
                        r.log_tail.log_start, r.state(), r.title, r.tags, r.metadata,
                        r.parent, r.checkpoints(), r.messages.all(),
                        [(q.id, q.status, q.payload) for q in r.queue.items()],
                        [(i.id, i.status, i.payload) for i in r.inputs.items()]]
    parts += [r.load_checkpoint(info.id) for info in r.checkpoints()]
    for digest, _, compressed in sorted(r.blobs.digests()):
        parts.append((digest, compressed, r.blobs.get(fsstore.BlobRef("sha256:" + digest, -1))))
    for info in r.collections():
        parts.append((info.name, info.dim, info.dtype, str(info.metric), info.count))
        from fsstore.vectors.reader import live_documents

        collection = r.collection(info.name)
        try:
            for doc in sorted(live_documents(collection), key=lambda d: d.id):
                parts.append((doc.id, doc.embedding.dtype.str, doc.embedding.tobytes(),
                               doc.content, doc.metadata, doc.seq, doc.turn))
        finally:
            collection.close()
    return msgspec.msgpack.encode(parts, enc_hook=repr)


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(operations=_operations, zstd=st.booleans(), beside=st.booleans())
def test_any_session_round_trips_exactly(tmp_path_factory, operations, zstd, beside):
    base = tmp_path_factory.mktemp("exact")
    source = fsstore.open_store(base / "source", segment_size=4096)
    _build(source, operations)
    out = base / ("p.jsonl.zst" if zstd else "p.jsonl")
    fsstore.export_sessions(source, out, blobs="beside" if beside else "inline")
    dest = fsstore.open_store(base / "dest")
    fsstore.import_sessions(dest, out)
    assert _everything(dest) == _everything(source)
    assert [f for f in dest.read_session("p").verify() if f.kind == "problem"] == []


# --- crashes -------------------------------------------------------------------------------


def _kill_during_imports(tmp_path, rounds: int) -> None:
    import random
    import subprocess
    import sys
    import time

    source = fsstore.open_store(tmp_path / "source", segment_size=8192)
    for n in range(4):
        with source.create_session(f"s{n}") as s:
            for turn in range(150):
                s.commit([{"n": n, "turn": turn, "pad": "p" * 100}], state_patch={"t": turn})
            s.checkpoint(checkpoint_id="c")
            s.blobs.put(os.urandom(2000))
    out = tmp_path / "x.jsonl"
    fsstore.export_sessions(source, out)
    expected = {sid: _session_bytes(source, sid) for sid in source.session_ids()}
    command = [sys.executable, "-m", "fsstore", "--store", "DEST", "import", str(out),
               "--replace"]
    started = time.monotonic()
    subprocess.run([*command[:4], str(tmp_path / "timing"), *command[5:]], check=True,
                   capture_output=True)
    took = time.monotonic() - started
    chance = random.Random(17)
    for round_ in range(rounds):
        dest = tmp_path / f"dest{round_}"
        old = fsstore.open_store(dest)
        for sid in ("s0", "s2"):  # some replaced, some new
            with old.create_session(sid) as s:
                s.append({"old": sid})
        olds = {sid: _session_bytes(old, sid) for sid in ("s0", "s2")}
        process = subprocess.Popen([*command[:4], str(dest), *command[5:]],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(chance.uniform(0.2, 1.0) * took)
        process.kill()
        process.wait()
        store = fsstore.open_store(dest, create=False)
        for sid in store.session_ids():  # each whole: the old or the new session
            assert _session_bytes(store, sid) in (expected[sid], olds.get(sid))
            assert [f for f in store.read_session(sid).verify() if f.kind == "problem"] == []
        assert set(store.session_ids()) <= set(expected)
        # the import runs again over what the crash left, and takes
        fsstore.import_sessions(store, out, replace=True)
        assert {sid: _session_bytes(store, sid) for sid in store.session_ids()} == expected


def _session_bytes(store: fsstore.Store, sid: str) -> bytes:
    import msgspec

    r = store.read_session(sid)
    return msgspec.msgpack.encode([list(r.events(include_internal=True)), r.state(),
                                   [c.id for c in r.checkpoints()],
                                   sorted(d for d, _, _ in r.blobs.digests())])


def test_an_import_killed_at_any_point_leaves_whole_sessions(tmp_path):
    _kill_during_imports(tmp_path, rounds=1)


@pytest.mark.long
def test_an_import_killed_at_many_points_leaves_whole_sessions(tmp_path):
    _kill_during_imports(tmp_path, rounds=25)


def test_cli_import_refused_into_a_new_store_leaves_no_store_behind(exported, tmp_path,
                                                                    capsys):
    from fsstore.cli import main

    crafted = tmp_path / "crafted.jsonl"
    crafted.write_bytes(_crafted(exported, lambda lines: _line(lines, "checkpoint").update(
        seq=99)))
    assert main(["--store", str(tmp_path / "new"), "import", str(crafted)]) != 0
    err = capsys.readouterr().err
    assert f"{crafted} line {_number_of(exported, 'checkpoint')}:" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "new").exists()
    assert main(["--store", str(tmp_path / "new"), "import", str(tmp_path / "absent")]) != 0
    assert not (tmp_path / "new").exists()


def test_replace_is_refused_with_nothing_changed_while_a_replaced_session_is_leased(
        tmp_path):
    dest = _export_of_two_sessions_the_store_has(tmp_path)
    lease = dest.claim_lease("b", "worker", ttl=600)
    before = tree_snapshot(dest.path)
    with pytest.raises(fsstore.SessionLocked, match="leased"):
        fsstore.import_sessions(dest, tmp_path / "x.jsonl", replace=True)
    assert tree_snapshot(dest.path) == before
    assert lease is not None


def test_a_replace_whose_rename_fails_puts_the_old_session_back(tmp_path, monkeypatch):
    store = fsstore.open_store(tmp_path / "store")
    with store.create_session("a") as s:
        s.append({"new": 1})
    fsstore.export_sessions(store, tmp_path / "x.jsonl")
    dest = fsstore.open_store(tmp_path / "dest")
    with dest.create_session("a") as s:
        s.append({"old": 1})
    before = tree_snapshot(dest.path)
    rename = dest.io.rename

    def failing(source: str, target: str) -> None:
        if os.path.basename(source).startswith(".tmp-"):
            raise OSError(28, "No space left on device")
        rename(source, target)

    monkeypatch.setattr(dest.io, "rename", failing)
    with pytest.raises(OSError):
        fsstore.import_sessions(dest, tmp_path / "x.jsonl", replace=True)
    assert tree_snapshot(dest.path) == before


def test_a_nan_with_its_sign_or_payload_set_round_trips_with_its_bits(tmp_path):
    import struct
    odd = [struct.unpack(">d", bytes.fromhex(bits))[0]
           for bits in ("fff8000000000000", "7ff0000000000001", "7ff8000000000000")]
    source = fsstore.open_store(tmp_path / "source")
    with source.create_session("s") as session:
        session.append({"values": odd}, kind="x")
    out = tmp_path / "nan.jsonl"
    fsstore.export_sessions(source, out)
    dest = fsstore.open_store(tmp_path / "dest")
    fsstore.import_sessions(dest, out)
    [event] = dest.read_session("s").events()
    assert [struct.pack(">d", v).hex() for v in event.data["values"]] == [
        "fff8000000000000", "7ff0000000000001", "7ff8000000000000"]
