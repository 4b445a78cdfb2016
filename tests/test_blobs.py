"""Attachments: content-addressed blobs, references from the log, and garbage collection."""

from __future__ import annotations

import hashlib
import io
import os
import struct

import pytest
from conftest import tree_snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fsstore
from fsstore import BlobRef
from fsstore.blobs import ZSTD_MAGIC


def blob_files(session) -> dict[str, str]:
    """Blob file names (digest[.zst]) to paths."""
    found = {}
    for folder, _, files in os.walk(os.path.join(session.path, "blobs")):
        for name in files:
            found[name] = os.path.join(folder, name)
    return found


# --- put and get ---------------------------------------------------------------------------

@pytest.mark.parametrize("media_type", [None, "image/png", "text/plain", "application/json"])
def test_put_returns_a_sha256_ref_and_get_gives_the_bytes_back(store, media_type):
    data = os.urandom(5000) + b"x" * 5000
    with store.create_session("s") as session:
        ref = session.blobs.put(data, media_type)
        assert ref.digest == "sha256:" + hashlib.sha256(data).hexdigest()
        assert (ref.size, ref.media_type) == (len(data), media_type)
        assert session.blobs.get(ref) == data
        assert session.blobs.exists(ref)
        info = session.blobs.stat(ref)
        assert info.ref.size == len(data)
        assert info.compressed == (media_type in ("text/plain", "application/json"))
    assert store.read_session("s").blobs.get(ref) == data


def test_the_same_content_is_stored_once(store):
    with store.create_session("s") as session:
        first = session.blobs.put(b"same bytes")
        second = session.blobs.put(io.BytesIO(b"same bytes"))
        assert first.digest == second.digest
        assert len(blob_files(session)) == 1


def test_put_streams_from_a_file_path_and_a_file_object(store, tmp_path):
    path = tmp_path / "big.bin"
    data = os.urandom(3 * (1 << 20) + 17)
    path.write_bytes(data)
    with store.create_session("s") as session:
        by_path = session.blobs.put(str(path), "application/octet-stream")
        with open(path, "rb") as handle:
            by_handle = session.blobs.put(handle)
        assert by_path.digest == by_handle.digest
        with session.blobs.open(by_path) as reader:
            chunks = []
            while chunk := reader.read(1 << 16):
                chunks.append(chunk)
        assert b"".join(chunks) == data


@pytest.mark.parametrize("compression", ["always", "never"])
def test_compression_can_be_forced_either_way_and_the_digest_is_of_the_original(
        tmp_path, compression):
    store = fsstore.open_store(tmp_path / "store", blob_compression=compression)
    data = b"compressible " * 10_000
    with store.create_session("s") as session:
        ref = session.blobs.put(data, "image/png")
        assert ref.digest == "sha256:" + hashlib.sha256(data).hexdigest()
        info = session.blobs.stat(ref)
        assert info.compressed == (compression == "always")
        if info.compressed:
            assert info.stored_size < len(data) // 10
        assert session.blobs.get(ref) == data
        assert session.blobs.put(b"x", compress=compression != "always") is not None


def test_refs_go_into_events_state_and_checkpoints_and_parse_back(store):
    with store.create_session("s") as session:
        ref = session.blobs.put(b"screenshot", "image/png")
        session.commit([{"shot": ref, "nested": [{"again": ref}]}], state_patch={"last": ref})
        session.checkpoint("with a blob")
        (event,) = [e for e in session.events() if e.kind == "event"]
        stored = event.data["shot"]
        assert BlobRef.parse(stored) == ref and type(stored) is dict
        assert session.blobs.get(stored) == b"screenshot"
        assert BlobRef.parse(session.get_state("last")).media_type == "image/png"


# --- bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [
    "sha256:" + "0" * 63, "sha256:" + "G" * 64, "sha256:" + "A" * 64, "md5:" + "0" * 64,
    "sha256:../../../../etc/passwd", "sha256:" + "0" * 64 + "/x", "", 5, None,
    {"digest": "sha256:" + "0" * 64}, {"fsstore.blob": "sha256:" + "0" * 64, "size": -5},
    {"fsstore.blob": "sha256:" + "0" * 64, "size": "1"},
])
def test_malformed_refs_raise_invalid_blob_ref_and_touch_nothing(store, bad):
    with store.create_session("s") as session:
        before = tree_snapshot(store.path)
        for call in (session.blobs.get, session.blobs.exists, session.blobs.stat,
                     session.blobs.open):
            with pytest.raises(fsstore.InvalidBlobRef):
                call(bad)
        assert tree_snapshot(store.path) == before


def test_a_missing_blob_raises_blob_not_found(store):
    with store.create_session("s") as session:
        ref = "sha256:" + "ab" * 32
        assert not session.blobs.exists(ref)
        with pytest.raises(fsstore.BlobNotFound):
            session.blobs.get(ref)
        with pytest.raises(FileNotFoundError):
            session.blobs.stat(ref)


def test_bad_put_sources_are_refused(store):
    with store.create_session("s") as session:
        with pytest.raises(fsstore.InvalidBlobRef):
            session.blobs.put(12345)
        with pytest.raises(fsstore.InvalidBlobRef):
            session.blobs.put(io.StringIO("text mode"))
        with pytest.raises(fsstore.InvalidBlobRef):
            session.blobs.put(b"x", media_type=5)
        assert blob_files(session) == {}
        assert [n for n in os.listdir(os.path.join(session.path, "blobs"))
                if n.startswith(".tmp-")] == []


def test_a_symlink_in_the_blobs_folder_is_not_followed(store, tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"outside the session")
    digest = hashlib.sha256(b"outside the session").hexdigest()
    with store.create_session("s") as session:
        session.blobs.put(b"make the folders")
        folder = os.path.join(session.path, "blobs", "sha256", digest[:2])
        os.makedirs(folder, exist_ok=True)
        os.symlink(secret, os.path.join(folder, digest))
        with pytest.raises(fsstore.CorruptionError, match="not followed"):
            session.blobs.get("sha256:" + digest)
        outside = tmp_path / "outside"
        outside.mkdir()
        other = hashlib.sha256(b"y").hexdigest()
        os.symlink(outside, os.path.join(session.path, "blobs", "sha256", other[:2]))
        with pytest.raises(fsstore.CorruptionError, match="not a folder"):
            session.blobs.get("sha256:" + other)
    problems = [f for f in store.verify() if f.level == "problem"]
    assert len(problems) == 2


# --- damage --------------------------------------------------------------------------------

def test_a_damaged_blob_raises_instead_of_returning_wrong_bytes(store):
    with store.create_session("s") as session:
        ref = session.blobs.put(os.urandom(100_000))
        path = next(iter(blob_files(session).values()))
        with open(path, "r+b") as handle:
            handle.seek(50_000)
            byte = handle.read(1)[0]
            handle.seek(50_000)
            handle.write(bytes([byte ^ 0xFF]))  # random bytes: flip one, never rewrite it
        with pytest.raises(fsstore.CorruptionError, match="does not match its digest"):
            session.blobs.get(ref)
        with session.blobs.open(ref) as reader:
            reader.read(1000)  # the start reads; the end proves the damage
            with pytest.raises(fsstore.CorruptionError):
                reader.read()
    (problem,) = [f for f in store.verify() if f.level == "problem"]
    assert problem.path == path


def test_a_truncated_blob_is_refused(store):
    with store.create_session("s") as session:
        ref = session.blobs.put(b"z" * 10_000)
        path = next(iter(blob_files(session).values()))
        os.truncate(path, 5000)
        with pytest.raises(fsstore.CorruptionError):
            session.blobs.get(ref)


def test_a_decompression_bomb_is_refused_before_it_inflates(store):
    import zstandard
    with store.create_session("s") as session:
        ref = session.blobs.put(b"small text", "text/plain")
        path = next(iter(blob_files(session).values()))
        bomb = zstandard.ZstdCompressor(level=19).compress(b"\x00" * (256 << 20))
        with open(path, "wb") as handle:  # claims 10 bytes, inflates to 256 MiB
            handle.write(struct.pack("<4sQ", ZSTD_MAGIC, 10) + bomb)
        with pytest.raises(fsstore.CorruptionError, match="decompression bomb"):
            session.blobs.get(ref)
        with open(path, "wb") as handle:  # claims its true size, above the reference's
            handle.write(struct.pack("<4sQ", ZSTD_MAGIC, 256 << 20) + bomb)
        with pytest.raises(fsstore.CorruptionError, match="its reference says"):
            session.blobs.get(ref)


# --- garbage collection --------------------------------------------------------------------

def test_gc_keeps_referenced_blobs_and_reclaims_old_orphans(store):
    with store.create_session("s") as session:
        in_event = session.blobs.put(b"in an event")
        in_state = session.blobs.put(b"in the state")
        in_checkpoint = session.blobs.put(b"in a checkpoint")
        orphan = session.blobs.put(b"never committed")
        session.commit([{"file": in_event}], state_patch={"doc": in_state})
        session.set_state("cp", in_checkpoint)
        session.checkpoint("keeps it")
        session.delete_state("cp")
    with store.open_session("s") as session:  # a new writer: the puts are no longer its own
        report = session.gc(grace=0, dry_run=True)
        assert (report.scanned, report.kept, report.reclaimed, report.dry_run) == (4, 3, 1, True)
        assert session.blobs.exists(orphan)
        report = session.gc(grace=0)
        assert (report.reclaimed, report.reclaimed_bytes) == (1, len(b"never committed"))
        assert not session.blobs.exists(orphan)
        for ref in (in_event, in_state, in_checkpoint):
            assert session.blobs.exists(ref)


def test_gc_leaves_young_orphans_and_this_writers_puts_alone(store):
    with store.create_session("s") as session:
        mine = session.blobs.put(b"put by this writer, commit still to come")
        assert session.gc(grace=0).reclaimed == 0
        assert session.blobs.exists(mine)
    with store.open_session("s") as session:
        report = session.gc()  # the default grace: an hour
        assert (report.reclaimed, report.young) == (0, 1)
        assert session.gc(grace=0).reclaimed == 1


def test_a_put_of_stored_content_makes_it_young_again(store):
    with store.create_session("s") as session:
        ref = session.blobs.put(b"old")
        path = next(iter(blob_files(session).values()))
        os.utime(path, (1, 1))
    with store.open_session("s") as session:
        session.blobs.put(b"old")  # about to be committed again
        session.blobs.pending.clear()
        assert session.gc(grace=60).young == 1
        assert session.blobs.exists(ref)


def test_gc_after_a_clear_keeps_only_what_checkpoints_and_the_new_log_hold(store):
    with store.create_session("s") as session:
        old = session.blobs.put(b"old log")
        session.commit([{"f": old}])
        session.clear()
        new = session.blobs.put(b"new log")
        session.commit([{"f": new}])
    with store.open_session("s") as session:
        assert session.gc(grace=0).reclaimed == 1
        assert session.blobs.exists(new) and not session.blobs.exists(old)


def test_gc_reports_damage_when_asked_to_verify(store):
    with store.create_session("s") as session:
        ref = session.blobs.put(b"will rot")
        session.commit([{"f": ref}])
        path = next(iter(blob_files(session).values()))
        with open(path, "r+b") as handle:
            handle.write(b"W")
        report = session.gc(grace=0, verify=True)
        assert [f.path for f in report.damaged] == [path]
        assert session.blobs.exists(ref)  # damaged, but referenced: kept


def test_gc_removes_old_temp_files_of_interrupted_puts(store):
    with store.create_session("s") as session:
        session.blobs.put(b"make the folder")
        temp = os.path.join(session.path, "blobs", ".tmp-put-deadbeef")
        with open(temp, "wb") as handle:
            handle.write(b"half a blob")
        os.utime(temp, (1, 1))
        (note,) = store.read_session("s").verify()
        assert (note.level, note.path) == ("note", temp)
        session.gc(grace=60)
        assert not os.path.exists(temp)


def test_forks_share_blobs_and_each_keeps_its_own(store):
    with store.create_session("a") as parent:
        shared = parent.blobs.put(b"shared by the fork")
        parent.commit([{"f": shared}])
        with parent.fork("b") as child:
            assert child.blobs.get(shared) == b"shared by the fork"
            path_a = parent.blobs.stat(shared).path
            assert os.stat(path_a).st_ino == os.stat(child.blobs.stat(shared).path).st_ino
        parent.clear()
    with store.open_session("a") as parent:
        assert parent.gc(grace=0).reclaimed == 1  # the parent no longer refers to it
    store.delete_session("a")
    assert store.read_session("b").blobs.get(shared) == b"shared by the fork"
    with store.open_session("b") as child:
        assert child.gc(grace=0).reclaimed == 0


def test_gc_stops_on_a_damaged_log_rather_than_miss_references(small_store):
    with small_store.create_session("s") as session:
        ref = session.blobs.put(b"referenced from a sealed segment")
        session.commit([{"f": ref, "pad": "p" * 3000}])
        for _ in range(5):
            session.append({"pad": "p" * 3000})
    log = os.path.join(small_store.path, "sessions", "s", "log", "00000000000000000001.fslog")
    with open(log, "r+b") as handle:
        handle.seek(100)
        handle.write(b"\xff\xff")
    with small_store.open_session("s") as session:
        with pytest.raises(fsstore.CorruptionError):
            session.gc(grace=0)
        assert session.blobs.exists(ref)


# --- random interleavings ------------------------------------------------------------------

STEPS = st.lists(st.tuples(st.sampled_from(["put", "commit", "crash", "gc"]),
                           st.integers(0, 5)), min_size=1, max_size=25)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS)
def test_random_puts_commits_crashes_and_gcs_never_lose_a_referenced_blob(tmp_path_factory,
                                                                         steps):
    root = tmp_path_factory.mktemp("interleave")
    store = fsstore.open_store(root)
    session = store.create_session("s")
    put: list[BlobRef] = []
    committed: set[str] = set()
    for action, n in steps:
        if action == "put":
            put.append(session.blobs.put(f"blob {n}".encode() * (n + 1)))
        elif action == "commit" and put:
            ref = put[n % len(put)]
            session.commit([{"f": ref}])
            committed.add(ref.digest)
        elif action == "crash":
            # a killed writer: nothing it held in memory survives, its refs included
            session._writer.close()
            session._access.lock.release()
            session = store.open_session("s")
            put = []
        elif action == "gc":
            session.gc(grace=0)
        for digest in committed:
            assert session.blobs.exists(digest)
        for ref in put:  # put by this writer: committed or not, still there
            assert session.blobs.exists(ref)
    session.close()
    with store.open_session("s") as session:
        session.gc(grace=0)
        assert {f"sha256:{d}" for d, _, _ in session.blobs.digests()} == committed


def test_a_symlinked_blobs_folder_is_never_written_listed_or_collected_through(store,
                                                                              tmp_path):
    outside = tmp_path / "outside"
    (outside / "sha256" / "ab").mkdir(parents=True)
    victim = outside / "sha256" / "ab" / ("ab" * 32)
    victim.write_bytes(b"not the session's")
    os.utime(victim, (1, 1))
    with store.create_session("s") as session:
        os.symlink(outside, os.path.join(session.path, "blobs"))
        with pytest.raises(fsstore.CorruptionError, match="not a folder"):
            session.blobs.put(b"data")
        with pytest.raises(fsstore.CorruptionError):
            session.gc(grace=0)
        with pytest.raises(fsstore.CorruptionError):
            session.blobs.get("sha256:" + "ab" * 32)
    assert victim.read_bytes() == b"not the session's"
    assert sorted(os.listdir(outside)) == ["sha256"]
    assert [f.level for f in store.verify()] == ["problem"]


# --- verify --------------------------------------------------------------------------------

def _verify_peak(store) -> tuple[list, int]:
    import tracemalloc
    tracemalloc.start()
    try:
        findings = store.verify()
        return findings, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_verify_streams_a_compressed_blob_in_bounded_memory(store):
    size = 48 << 20  # compresses to a few KiB: what a forged header would claim costs memory
    with store.create_session("s") as session:
        ref = session.blobs.put(b"\x00" * size, "text/plain")
        session.commit([{"f": ref}])
        path = session.blobs.stat(ref).path
    findings, peak = _verify_peak(store)
    assert findings == []
    assert peak < 8 << 20
    with open(path, "r+b") as handle:  # the header claims 4 GiB; the frame holds 48 MiB
        handle.write(struct.pack("<4sQ", ZSTD_MAGIC, 4 << 30))
    findings, peak = _verify_peak(store)
    assert {(f.level, f.path) for f in findings} == {("problem", path)}
    assert peak < 8 << 20


def test_verify_streams_a_stored_blob_in_bounded_memory(store):
    with store.create_session("s") as session:
        ref = session.blobs.put(os.urandom(24 << 20), compress=False)
        session.commit([{"f": ref}])
    findings, peak = _verify_peak(store)
    assert findings == []
    assert peak < 8 << 20


def test_a_fork_refuses_a_blob_that_is_not_a_regular_file(store):
    with store.create_session("s") as session:
        ref = session.blobs.put(b"will be a folder")
        session.append({"f": ref})
        path = session.blobs.stat(ref).path
    os.unlink(path)
    os.mkdir(path)
    with pytest.raises(fsstore.CorruptionError, match="not a regular file"):
        store.fork_session("s", "f")
    assert not store.has_session("f")
