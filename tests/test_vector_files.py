"""The files of a vector collection against damage and hostile bytes (every read ends in
the right data or a typed error naming the file, and verify never crashes), and the
writer's refusal of every value a reader would refuse."""

from __future__ import annotations

import datetime
import json
import math
import os
import struct

import msgspec
import pytest
from conftest import tree_snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runlength import examples

import fsstore
from fsstore import (
    CollectionNotFound,
    CorruptionError,
    FsStoreError,
    InvalidDocument,
    VectorDocument,
)
from fsstore.fsio import FileIO
from fsstore.log_writer import Durability, LogWriter
from fsstore.vectors.collection_chain import CollectionChain

IDS = [f"d{i}" for i in range(12)]


def folder_of(store, name="c"):
    return os.path.join(store.path, "sessions", "s", "vectors", name)


def contents(collection) -> dict:
    return {doc.id: (doc.embedding.tolist(), doc.content, doc.metadata)
            for doc in collection.get(IDS) if doc is not None}


@pytest.fixture
def damaged(store):
    """A collection of one sealed shard with deleted rows, and two documents in its log."""
    return with_collection(store)


def with_collection(store):
    """``store`` with the collection of :func:`damaged`."""
    with store.create_session("s") as session:
        collection = session.create_collection("c", 3)
        collection.upsert([VectorDocument(i, [n, 1, 2], content=f"t{n}", metadata={"n": n})
                           for n, i in enumerate(IDS[:10])])
        collection.seal()
        collection.delete(["d1", "d2"])
        collection.seal()
        collection.upsert([VectorDocument("d10", [1, 1, 1]), VectorDocument("d11", [2, 2, 2])])
    return store


def expected_of(store) -> dict:
    return contents(store.read_session("s").collection("c"))


def outcome(store) -> dict | FsStoreError:
    """What a reader gets: the documents, or the typed error (anything else raises)."""
    try:
        return contents(store.read_session("s").collection("c"))
    except FsStoreError as exc:
        return exc


def problems(store) -> list:
    return [f for f in store.verify() if f.level == "problem"]


def named(folder, suffix):
    return sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(suffix))


def edit_manifest(store, change) -> str:
    path = os.path.join(folder_of(store), "collection.json")
    with open(path) as handle:
        data = json.load(handle)
    change(data)
    with open(path, "w") as handle:
        handle.write(data if isinstance(data, str) else json.dumps(data))
    return path


# --- hostile files --------------------------------------------------------------------


def test_a_flipped_bit_anywhere_in_a_npy_header_reads_right_or_names_the_file(damaged, long_run):
    expected = expected_of(damaged)
    vec = named(folder_of(damaged), ".vec.npy")[0]
    with open(vec, "rb") as handle:
        original = handle.read()
    header_end = original.index(b"\n") + 1
    for position in range(header_end):
        # Every bit of every header byte with --long; else one bit a byte, each byte a
        # different one, so that every bit position is flipped somewhere.
        for bit in range(8) if long_run else ((position * 3) % 8,):
            data = bytearray(original)
            data[position] ^= 1 << bit
            with open(vec, "wb") as handle:
                handle.write(data)
            found = outcome(damaged)
            if isinstance(found, FsStoreError):
                assert isinstance(found, CorruptionError) and found.path == vec, found
                assert any(f.path == vec for f in problems(damaged))
            else:
                assert found == expected, (position, bit)
    with open(vec, "wb") as handle:
        handle.write(original)
    assert outcome(damaged) == expected


def test_a_deleted_rows_file_claiming_a_huge_shape_is_refused_unread(damaged):
    deleted = named(folder_of(damaged), ".del.npy")[0]
    with open(deleted, "rb") as handle:
        data = handle.read()
    forged = data.replace(b"(2,)", b"(1099511627776,)")  # 4 TiB of rows
    header_len = struct.unpack("<H", forged[8:10])[0] + len(forged) - len(data)
    forged = forged[:8] + struct.pack("<H", header_len) + forged[10:]
    with open(deleted, "wb") as handle:
        handle.write(forged)
    with pytest.raises(CorruptionError) as raised:
        damaged.read_session("s").collection("c")
    assert raised.value.path == deleted
    assert [f.path for f in problems(damaged)] == [deleted]


@pytest.mark.parametrize("change", [
    lambda m: m["shards"][0].update(deleted=m["shards"][0]["deleted"].replace("0", "\x10", 1)),
    lambda m: m["shards"][0].update(deleted=m["shards"][0]["deleted"].replace("1", "3", 1)),
    lambda m: m["shards"][0].update(deleted="../../../../etc/passwd.del.npy"),
    lambda m: m["shards"][0].update(deleted="/tmp/00000001.00000001.del.npy"),
    lambda m: m["shards"][0].update(deleted=5),
    lambda m: m["shards"][0].update(name="../x"),
    lambda m: m["shards"][0].update(rows="x"),
    lambda m: m["shards"][0].update(rows=-1),
    lambda m: m["shards"][0].update(vectors_crc=2**40),
    lambda m: m.update(shards="x"),
    lambda m: m.update(shards=[1]),
    lambda m: m.update(shards=[m["shards"][0], m["shards"][0]]),
    lambda m: m.update(dim="3"),
    lambda m: m.update(dim=10**9),
    lambda m: m.update(dtype="float64"),
    lambda m: m.update(metric=None),
    lambda m: m.update(wal_seq=-1),
    lambda m: m.update(next_shard=1),
    lambda m: m.update(name=".."),
    lambda m: m.update(pinned="x"),
    lambda m: m.update(pinned=[{"generation": 99, "wal_seq": 0, "pinned": 0,
                                "keep_until": 0, "shards": []}]),
    lambda m: m.update(extra=[[[[[]]]]] * 3, created=5),
    lambda m: m.update(deep=None),  # replaced by 5,000 nested arrays below
    lambda m: m.pop("dim"),
], ids=lambda _: "")
def test_a_hostile_collection_manifest_is_a_corruption_error_naming_it(damaged, change):
    expected = expected_of(damaged)
    path = os.path.join(folder_of(damaged), "collection.json")
    with open(path) as handle:
        data = json.load(handle)
    try:
        change(data)
    except (IndexError, AttributeError):
        pytest.skip("not applicable")
    if "deep" in data:  # json.dumps would recurse too: write the nesting by hand
        text = json.dumps({k: v for k, v in data.items() if k != "deep"})
        text = text[:-1] + ', "deep": ' + "[" * 5000 + "]" * 5000 + "}"
    else:
        text = json.dumps(data)
    with open(path, "w") as handle:
        handle.write(text)
    found = outcome(damaged)
    if not isinstance(found, FsStoreError):
        assert found == expected  # an unknown key or one the reader does not need
        return
    assert isinstance(found, CorruptionError) and found.path == path, found
    assert [f.path for f in problems(damaged)] == [path]
    with pytest.raises(CorruptionError):
        damaged.open_session("s").collection("c")


def test_a_missing_or_folder_collection_manifest_is_typed_and_verified(damaged):
    path = os.path.join(folder_of(damaged), "collection.json")
    os.rename(path, path + ".away")
    with pytest.raises(CollectionNotFound):
        damaged.read_session("s").collection("c")
    assert path in [f.path for f in problems(damaged)]
    os.mkdir(path)
    with pytest.raises(CorruptionError) as raised:
        damaged.read_session("s").collection("c")
    assert raised.value.path == path
    assert [f.path for f in problems(damaged)] == [path]


@pytest.mark.parametrize("record", [
    ("delete", {"ids": [5]}),
    ("delete", {"ids": "d1"}),
    ("delete", {"ids": [""]}),
    ("delete", {}),
    ("upsert", {"id": 7, "v": b"\0" * 12, "c": b"\xc0", "m": b"\x80", "s": -1, "t": -1}),
    ("upsert", {"id": "x", "v": b"\0" * 8, "c": b"\xc0", "m": b"\x80", "s": -1, "t": -1}),
    ("upsert", {"id": "x", "v": b"\0" * 12, "c": b"\x05", "m": b"\x80", "s": -1, "t": -1}),
    ("upsert", {"id": "x", "v": b"\0" * 12, "c": b"\xc0", "m": b"\x91\x01", "s": -1,
                "t": -1}),
    ("upsert", {"id": "x", "v": b"\0" * 12, "c": b"\xc0", "m": b"\x81\x01\x02", "s": -1,
                "t": -1}),
    ("upsert", {"id": "x", "v": b"\0" * 12, "c": b"\xc0", "m": b"\x81\xa1a" + b"\x91" * 5000
                + b"\x90", "s": -1, "t": -1}),
    ("upsert", {"id": "x", "v": b"\0" * 12, "c": b"\xc0", "m": b"\x80", "s": "1", "t": -1}),
    ("upsert", {"id": "x", "v": b"\0" * 12, "c": b"\xc0", "m": b"\x80", "s": -2, "t": -1}),
    ("rename", {"from": "a"}),
], ids=lambda _: "")
@pytest.mark.parametrize("chain", [False, True], ids=["unchained", "chained"])
def test_a_checksum_valid_log_record_of_the_wrong_shape_is_corruption(tmp_path, record, chain):
    damaged = with_collection(fsstore.open_store(tmp_path / "store", chain=chain))
    wal = os.path.join(folder_of(damaged), "wal")
    rules = None
    if chain:  # the record carries its chain value, as the key's holder could write it
        reader = damaged.read_session("s")
        with open(os.path.join(folder_of(damaged), "collection.json")) as handle:
            manifest = json.load(handle)
        rules = CollectionChain(reader.chain_rules, reader.identity.uid, "c").wal_rules(
            manifest)
    writer = LogWriter(FileIO(), wal, Durability(), chain=rules)
    writer.append([record], 0, 0.0)
    writer.close()
    with pytest.raises(CorruptionError) as raised:
        damaged.read_session("s").collection("c")
    assert raised.value.path == wal
    with pytest.raises(CorruptionError):
        damaged.open_session("s").collection("c")
    assert [f.path for f in problems(damaged)] == [wal]


@pytest.mark.parametrize("kind", ["fifo", "folder", "symlink", "zero"])
@pytest.mark.parametrize("suffix", [".vec.npy", ".docs", ".del.npy"])
def test_a_fifo_folder_or_symlink_in_place_of_a_shard_file_never_blocks(damaged, kind,
                                                                        suffix):
    path = named(folder_of(damaged), suffix)[0]
    os.unlink(path)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        os.mkdir(path)
    elif kind == "symlink":
        os.symlink(named(folder_of(damaged), ".docs" if suffix != ".docs" else ".vec.npy")[0],
                   path)
    else:
        os.symlink("/dev/zero", path)
    with pytest.raises(CorruptionError) as raised:
        damaged.read_session("s").collection("c")
    assert raised.value.path == path
    assert path in [f.path for f in problems(damaged)]


def test_verify_survives_any_truncation_of_every_collection_file(damaged):
    folder = folder_of(damaged)
    expected = expected_of(damaged)
    files = [os.path.join(folder, n) for n in sorted(os.listdir(folder)) if n != "wal"]
    for path in files:
        with open(path, "rb") as handle:
            original = handle.read()
        for size in sorted({0, 1, 7, 64, 100, len(original) // 2, len(original) - 1}):
            with open(path, "wb") as handle:
                handle.write(original[:size])
            found = outcome(damaged)
            assert found == expected or isinstance(found, FsStoreError), (path, size)
            found_problems = problems(damaged)
            if isinstance(found, FsStoreError):
                assert found_problems, (path, size)
        with open(path, "wb") as handle:
            handle.write(original)
    assert outcome(damaged) == expected and problems(damaged) == []


# --- what the writer accepts reads back --------------------------------------------------


@pytest.fixture
def collection(store):
    session = store.create_session("s")
    yield session.create_collection("c", 2)
    session.close()


def deep(levels: int) -> dict:
    value: dict = {}
    for _ in range(levels - 1):
        value = {"k": value}
    return value


@pytest.mark.parametrize("metadata", [
    {"x": msgspec.msgpack.Ext(5, b"abc")},
    {"x": [msgspec.msgpack.Ext(1, b"")]},
    {"x": msgspec.Raw(b"\xc1")},
    {"x": {1: "a"}},
    {"x": {(1, 2): "a"}},
    {"x": {b"k": 1}},
    {"x": datetime.datetime(2026, 1, 1)},
    {"x": {1, 2}},
    {"x": 2**64},
    {"x": -(2**63) - 1},
    {"x": "\ud800"},
    {"\ud800": 1},
    {"x": object()},
    {"x": bytearray(b"a")},
    deep(65),
], ids=lambda _: "")
def test_upsert_refuses_metadata_a_reader_would_refuse_and_writes_nothing(store, collection,
                                                                         metadata):
    before = tree_snapshot(store.path)
    with pytest.raises(InvalidDocument):
        collection.upsert([VectorDocument("a", [1, 0], metadata=metadata)])
    with pytest.raises(InvalidDocument):  # the bulk path, straight to a shard, too
        collection.upsert([VectorDocument(f"b{i}", [1, 0], metadata=metadata if i == 5 else {})
                           for i in range(5000)])
    assert tree_snapshot(store.path) == before
    assert collection.count() == 0


def test_upsert_refuses_content_that_is_not_valid_unicode(store, collection):
    with pytest.raises(InvalidDocument):
        collection.upsert([VectorDocument("a", [1, 0], content="\udc80")])


def normal(value):
    """A value as msgpack gives it back: tuples as lists."""
    if isinstance(value, (list, tuple)):
        return [normal(v) for v in value]
    if isinstance(value, dict):
        return {k: normal(v) for k, v in value.items()}
    return value


def same(a, b) -> bool:
    """Equality where NaN equals NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


hostile_scalars = (st.none() | st.booleans() | st.integers(-(2**65), 2**65)
                   | st.floats() | st.text() | st.binary()
                   | st.builds(msgspec.msgpack.Ext, st.integers(-128, 127), st.binary())
                   | st.builds(msgspec.Raw, st.binary()) | st.datetimes())
hostile_values = st.recursive(
    hostile_scalars,
    lambda children: st.lists(children, max_size=3) | st.tuples(children, children)
    | st.dictionaries(st.text(max_size=4) | st.integers(0, 3), children, max_size=3),
    max_leaves=12)


@settings(max_examples=examples(30, 60), deadline=None, suppress_health_check=list(HealthCheck))
@given(metadata=st.dictionaries(st.text(max_size=5).filter(lambda k: not k.startswith("$")),
                                hostile_values, max_size=3),
       content=st.none() | st.text(), depth=st.integers(1, 70))
def test_whatever_upsert_accepts_reads_back_equal_after_reopening(tmp_path_factory,
                                                                 metadata, content, depth):
    root = tmp_path_factory.mktemp("store")
    store = fsstore.open_store(root)
    if depth > 60:
        metadata = {"deep": deep(depth)}
    with store.create_session("s") as session:
        collection = session.create_collection("c", 2)
        before = tree_snapshot(root)
        try:
            collection.upsert([VectorDocument("a", [1, 0], content=content,
                                              metadata=metadata)])
        except InvalidDocument:
            assert tree_snapshot(root) == before
            return
        collection.seal()
    for reopened in (store.read_session("s").collection("c"),
                     store.open_session("s").collection("c")):
        [doc] = reopened.get(["a"])
        assert doc.content == content
        assert same(doc.metadata, normal(metadata))
    assert problems(store) == []


def test_a_file_in_place_of_the_vectors_folder_is_a_typed_error(store):
    with store.create_session("s") as session:
        session.create_collection("c", 2)
    folder = os.path.join(store.path, "sessions", "s", "vectors")
    os.rename(folder, folder + ".away")
    with open(folder, "w") as handle:
        handle.write("x")
    with pytest.raises(CorruptionError) as raised:
        store.read_session("s").collections()
    assert raised.value.path == folder
