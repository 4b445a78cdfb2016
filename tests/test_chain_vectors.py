"""Vector collections of chained sessions (docs/FORMAT.md 3.4 and 15.9): the WAL is a
chained log, ``collection.json`` records each file's SHA-256 and the WAL's value at each
state and carries a MAC over all of it, the session uid and the collection name. Every
edit below is caught on open or by verify, naming the file and "the chain"; an unkeyed
chain recomputed after the edit is not (the documented limit)."""

from __future__ import annotations

import json
import os
import shutil
import struct

import pytest

import fsstore
from fsstore import ChainKeyRequired, CorruptionError, chain
from fsstore.chain import DOM_COLLECTION, Mac
from fsstore.checksum import crc32c
from fsstore.log_format import FRAME_CHAIN_START, FRAME_CHAINED, FRAME_EVENTS
from fsstore.vectors import tuning
from fsstore.vectors.collection_chain import file_sha256

KEY = bytes(range(100, 132))
MODES = [pytest.param(None, id="unkeyed"), pytest.param(KEY, id="keyed")]


@pytest.fixture(autouse=True)
def small_seals(monkeypatch):
    monkeypatch.setattr(tuning, "SEAL_ROWS", 4)


def doc(i, content="xxxxxxxx"):
    return {"id": f"d{i}", "embedding": [1.0, float(i), 2.0], "content": content}


def build(path, key, *, chained=True, sessions=("a",), names=("c",)):
    """A store whose sessions each hold collections with two shards (one with deleted
    rows) and records in the WAL after the last seal."""
    store = fsstore.open_store(path, chain=chained, chain_key=key)
    for session_id in sessions:
        with store.create_session(session_id) as session:
            for name in names:
                collection = session.create_collection(name, dim=3)
                collection.upsert([doc(i) for i in range(4)])
                collection.upsert([doc(i) for i in range(4, 8)])
                collection.delete(["d1"])
                collection.seal()
                collection.upsert([doc(8), doc(9)])
    return store


def folder(store, session_id="a", name="c"):
    return os.path.join(store.path, "sessions", session_id, "vectors", name)


def manifest_of(store, session_id="a", name="c"):
    with open(os.path.join(folder(store, session_id, name), "collection.json")) as handle:
        return json.load(handle)


def write_manifest(store, data, session_id="a", name="c"):
    with open(os.path.join(folder(store, session_id, name), "collection.json"), "w") as out:
        out.write(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def read(path):
    with open(path, "rb") as handle:
        return handle.read()


def write(path, data):
    with open(path, "wb") as handle:
        handle.write(data)


def flip(path, at):
    with open(path, "r+b") as handle:
        handle.seek(at)
        byte = handle.read(1)
        handle.seek(at)
        handle.write(bytes([byte[0] ^ 1]))


def problems(store, session_id="a"):
    return [f for f in store.read_session(session_id).verify() if f.level == "problem"]


def assert_caught_by_verify(store, path):
    found = problems(store)
    assert any(f.path == path and "the chain" in f.message for f in found), found


def open_fails(store, path, session_id="a"):
    with pytest.raises(CorruptionError) as caught:
        store.read_session(session_id).collection("c")
    assert caught.value.path == path and "the chain" in str(caught.value)
    with pytest.raises(CorruptionError, match="the chain"):
        store.open_session(session_id).collection("c")


def wal_frames(path):
    """(file, offset, frame type) of each frame of each WAL segment."""
    wal = os.path.join(path, "wal")
    found = []
    for name in sorted(n for n in os.listdir(wal) if n.endswith(".fslog")):
        data = read(os.path.join(wal, name))
        off = 64
        while off + 24 <= len(data) and data[off:off + 24] != bytes(24):
            frame_type = struct.unpack_from("<I", data, off + 20)[0]
            found.append((os.path.join(wal, name), off, frame_type))
            size = struct.unpack_from("<I", data, off + 4)[0]
            off += ((24 + size + 7) & ~7) + {FRAME_CHAINED: 32, FRAME_CHAIN_START: 64}.get(
                frame_type, 0) + 8
    return found


# --- what is written ------------------------------------------------------------------------


@pytest.mark.parametrize("key", MODES)
def test_a_chained_sessions_collection_reads_back_verifies_and_records_its_chain(
        tmp_path, key):
    store = build(tmp_path / "s", key)
    reader = store.read_session("a").collection("c")
    assert reader.count() == 9
    assert problems(store) == []
    data = manifest_of(store)
    names = {n for e in data["shards"] for n in
             [f"{e['name']}.vec.npy", f"{e['name']}.docs", e["deleted"]] if n}
    assert set(data["chain"]["sha256"]) == names
    assert {g for g, _v in data["chain"]["wal"]} >= {data["generation"]}
    assert data["chain"]["alg"] == ("sha256" if key is None else "hmac-sha256")
    types = [t for _f, _o, t in wal_frames(folder(store))]
    assert types and set(types) <= {FRAME_CHAINED, FRAME_CHAIN_START}
    with store.open_session("a") as session:  # the writer takes up the WAL's run
        session.collection("c").upsert([doc(10)])
        session.collection("c").compact()
    assert store.read_session("a").collection("c").count() == 10
    assert problems(store) == []


def test_an_unchained_sessions_collection_is_as_before(tmp_path):
    store = build(tmp_path / "s", None, chained=False)
    data = manifest_of(store)
    assert "chain" not in data
    assert {t for _f, _o, t in wal_frames(folder(store))} == {FRAME_EVENTS}
    assert problems(store) == []


@pytest.mark.parametrize("key", MODES)
def test_the_wal_start_a_seal_moves_still_opens_and_verifies(tmp_path, key, monkeypatch):
    monkeypatch.setattr(tuning, "COPY_GRACE_SECONDS", 0)
    store = build(tmp_path / "s", key)
    for n in range(3):
        with store.open_session("a") as session:
            collection = session.collection("c")
            collection.upsert([doc(20 + n)])
            collection.seal()
            collection.upsert([doc(30 + n)])
    segments = sorted(os.listdir(os.path.join(folder(store), "wal")))
    assert segments[0] != "00000000000000000001.fslog"  # the start moved
    assert store.read_session("a").collection("c").count() == 15
    assert problems(store) == []


def test_a_keyed_collection_needs_the_key(tmp_path):
    build(tmp_path / "s", KEY)
    with pytest.raises(ChainKeyRequired):
        fsstore.open_store(tmp_path / "s").read_session("a").collection("c")


# --- edits -----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", MODES)
def test_a_shard_byte_edited_is_caught_by_verify(tmp_path, key):
    store = build(tmp_path / "s", key)
    path = os.path.join(folder(store), "00000001.vec.npy")
    flip(path, os.path.getsize(path) - 3)
    assert_caught_by_verify(store, path)


@pytest.mark.parametrize("key", MODES)
def test_a_shard_edited_with_its_crc_updated_in_collection_json_fails_the_mac(
        tmp_path, key):
    store = build(tmp_path / "s", key)
    path = os.path.join(folder(store), "00000001.vec.npy")
    flip(path, os.path.getsize(path) - 3)
    data = manifest_of(store)
    entry = next(e for e in data["shards"] if e["name"] == "00000001")
    entry["vectors_crc"] = crc32c(read(path))
    write_manifest(store, data)
    manifest_path = os.path.join(folder(store), "collection.json")
    open_fails(store, manifest_path)
    assert_caught_by_verify(store, manifest_path)


@pytest.mark.parametrize("key", MODES)
def test_a_docs_entry_edited_is_caught_by_verify(tmp_path, key):
    store = build(tmp_path / "s", key)
    path = os.path.join(folder(store), "00000001.docs")
    data = bytearray(read(path))
    data[data.index(b"xxxxxxxx") + 3] = ord("y")
    write(path, data)
    assert_caught_by_verify(store, path)


@pytest.mark.parametrize("key", MODES)
def test_a_deleted_rows_file_edited_is_caught_on_open(tmp_path, key):
    store = build(tmp_path / "s", key)
    entry = next(e for e in manifest_of(store)["shards"] if e["deleted"])
    path = os.path.join(folder(store), entry["deleted"])
    flip(path, os.path.getsize(path) - 4)  # another row deleted: still well-formed
    open_fails(store, path)
    assert_caught_by_verify(store, path)


@pytest.mark.parametrize("key", MODES)
def test_a_wal_record_edited_with_its_crc_recomputed_is_caught(tmp_path, key):
    store = build(tmp_path / "s", key)
    path, off, _type = wal_frames(folder(store))[-1]
    data = bytearray(read(path))
    at = data.index(b"xxxxxxxx", off) + 2
    data[at] = ord("y")
    length = struct.unpack_from("<I", data, off + 4)[0]
    body_end = off + ((24 + length + 7) & ~7)
    struct.pack_into("<I", data, off, crc32c(bytes(data[off + 4:body_end])))
    write(path, data)
    with pytest.raises(CorruptionError, match="the chain") as caught:
        store.read_session("a").collection("c")
    assert caught.value.path == path
    assert any(f.path == path and "the chain" in f.message for f in problems(store))


@pytest.mark.parametrize("key", MODES)
@pytest.mark.parametrize("field, value", [("metric", "dot"), ("next_shard", 50),
                                          ("created", "2000-01-01T00:00:00Z")])
def test_a_collection_json_field_edited_fails_the_mac(tmp_path, key, field, value):
    store = build(tmp_path / "s", key)
    data = manifest_of(store)
    data[field] = value
    write_manifest(store, data)
    manifest_path = os.path.join(folder(store), "collection.json")
    open_fails(store, manifest_path)
    assert_caught_by_verify(store, manifest_path)


@pytest.mark.parametrize("key", MODES)
def test_the_chain_stripped_from_collection_json_is_caught(tmp_path, key):
    store = build(tmp_path / "s", key)
    data = manifest_of(store)
    del data["chain"]
    write_manifest(store, data)
    open_fails(store, os.path.join(folder(store), "collection.json"))


@pytest.mark.parametrize("key", MODES)
@pytest.mark.parametrize("source", [("a", "other"), ("b", "c")],
                         ids=["another_collection", "another_session"])
def test_a_shard_copied_from_another_collection_is_caught_by_verify(tmp_path, key, source):
    store = build(tmp_path / "s", key, sessions=("a", "b"), names=("c", "other"))
    with store.open_session(source[0]) as session:  # same rows, other vectors
        session.collection(source[1]).upsert([{**doc(i), "embedding": [3.0, 1.0, float(i)]}
                                              for i in range(4)])
        session.collection(source[1]).compact()
    name = manifest_of(store, *source)["shards"][0]["name"]
    path = os.path.join(folder(store), "00000001.vec.npy")
    shutil.copyfile(os.path.join(folder(store, *source), f"{name}.vec.npy"), path)
    assert_caught_by_verify(store, path)


@pytest.mark.parametrize("key", MODES)
def test_a_whole_collection_copied_from_another_session_fails_the_mac(tmp_path, key):
    store = build(tmp_path / "s", key, sessions=("a", "b"))
    shutil.rmtree(folder(store, "a"))
    shutil.copytree(folder(store, "b"), folder(store, "a"))
    manifest_path = os.path.join(folder(store), "collection.json")
    open_fails(store, manifest_path)
    assert_caught_by_verify(store, manifest_path)


@pytest.mark.parametrize("key", MODES)
def test_a_wal_copied_from_another_session_is_caught(tmp_path, key):
    store = build(tmp_path / "s", key, sessions=("a", "b"))
    shutil.rmtree(os.path.join(folder(store, "a"), "wal"))
    shutil.copytree(os.path.join(folder(store, "b"), "wal"), os.path.join(folder(store), "wal"))
    with pytest.raises(CorruptionError, match="the chain"):
        store.read_session("a").collection("c")
    assert any("the chain" in f.message for f in problems(store))


# --- what a chain recomputed after an edit hides --------------------------------------------


def recompute(store, path, mac):
    """Make collection.json vouch for the edited ``path`` again, as anyone can for an
    unkeyed chain: its SHA-256 and crc32c, then the MAC (SHA-256 over what the key-free
    MAC covers)."""
    from fsstore.vectors.collection_chain import CollectionChain

    data = manifest_of(store)
    name = os.path.basename(path)
    data["chain"]["sha256"][name] = file_sha256(fsstore.fsio.FileIO(), path)
    entry = next(e for e in data["shards"] if name.startswith(e["name"]))
    entry["docs_crc"] = crc32c(read(path))
    uid = int(json.loads(read(os.path.join(store.path, "sessions", "a", "session.json")))
              ["uid"], 16)
    bound = CollectionChain(fsstore.chain_check.ChainRules(mac), uid, "c")
    data["chain"]["mac"] = bound.manifest_mac(data)
    write_manifest(store, data)


def edit_docs(store):
    path = os.path.join(folder(store), "00000001.docs")
    data = bytearray(read(path))
    data[data.index(b"xxxxxxxx") + 3] = ord("y")
    write(path, data)
    return path


def test_unkeyed_an_edit_with_collection_json_recomputed_is_not_seen(tmp_path):
    store = build(tmp_path / "s", None)
    path = edit_docs(store)
    recompute(store, path, Mac())
    assert problems(store) == []  # only a pin kept elsewhere would show it (FORMAT.md 3.4)
    assert "y" in "".join(r.content for r in
                          store.read_session("a").collection("c").search([1, 0, 2], 10))


def test_keyed_an_edit_with_collection_json_recomputed_without_the_key_is_caught(tmp_path):
    store = build(tmp_path / "s", KEY)
    path = edit_docs(store)
    recompute(store, path, Mac())  # no key: the best anyone can do is SHA-256
    manifest_path = os.path.join(folder(store), "collection.json")
    open_fails(store, manifest_path)
    assert DOM_COLLECTION != chain.DOM_WAL
