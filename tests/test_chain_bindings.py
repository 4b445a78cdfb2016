"""Files of a chained session bound to its hash chain (docs/FORMAT.md 3.4, "Files bound to
the chain"): snapshots, checkpoints, session.json and blobs. Each edit is made as an
attacker without the key would make it (checksums recomputed), keyed and unkeyed; what an
unkeyed MAC recomputed by the attacker hides is shown too."""

from __future__ import annotations

import json
import os
import shutil
import struct

import pytest

import fsstore
from fsstore import ChainBindingBroken, CorruptionError, chain, chain_bindings, snapshot
from fsstore.chain import ChainKey, Mac
from fsstore.chain_bindings import SnapshotSeal
from fsstore.checksum import crc32c

KEY = bytes(range(100, 132))
MODES = [pytest.param(None, id="unkeyed"), pytest.param(KEY, id="keyed")]
_encoder_pack = snapshot._encoder.encode


def chained_store(path, key=None):
    return fsstore.open_store(path, chain=True, chain_key=key)


def session_dir(store, session_id):
    return os.path.join(store.path, "sessions", session_id)


def snap_path(store, session_id, seq):
    return os.path.join(session_dir(store, session_id), "state", f"{seq:020d}.snap")


def ckpt_path(store, session_id, checkpoint_id):
    return os.path.join(session_dir(store, session_id), "checkpoints",
                        f"{checkpoint_id}.ckpt")


def parts(path):
    """(header, meta, body) of a snapshot or checkpoint file, unchecked."""
    with open(path, "rb") as handle:
        data = handle.read()
    header = snapshot.decode_header(data, path)
    meta_end = snapshot.HEADER_SIZE + header.meta_len
    return (header, snapshot._decoder.decode(data[snapshot.HEADER_SIZE:meta_end]),
            snapshot._decoder.decode(data[meta_end:]))


def rewrite(path, header, meta, body, *, seq=None):
    """Write the file again from ``header`` (its seq replaced by ``seq``), ``meta`` and
    ``body`` with every checksum recomputed, as an editor that knows the format does."""
    meta_raw, body_raw = _encoder_pack(meta), _encoder_pack(body)
    fields = snapshot._HEADER.pack(
        snapshot.SNAPSHOT_MAGIC, snapshot.SNAPSHOT_MAJOR, header.minor, header.kind,
        header.seq if seq is None else seq, header.log_start, header.position.segment,
        header.position.offset, header.created_ns, len(meta_raw), crc32c(meta_raw),
        len(body_raw), crc32c(body_raw), header.position.frame_crc, 0)[:-4]
    with open(path, "wb") as handle:
        handle.write(fields + struct.pack("<I", crc32c(fields)) + meta_raw + body_raw)


def forge(path, header, meta, body, uid, link, *, mac=None):
    """The file an attacker makes with the unkeyed MAC recomputed: anyone can."""
    meta = {k: v for k, v in meta.items() if k not in ("chain", "mac")}
    data = snapshot.encode(header.kind, header.seq, header.log_start, header.position, meta,
                           body, SnapshotSeal(mac or Mac(), uid, link))
    with open(path, "wb") as handle:
        handle.write(data)


def uid_of(store, session_id):
    with open(os.path.join(session_dir(store, session_id), "session.json")) as handle:
        return int(json.load(handle)["uid"], 16)


def with_snapshot(store, session_id="a", count=3):
    """A session whose state is set ``count`` times, a snapshot at its head; its seq."""
    with store.create_session(session_id) as session:
        for n in range(count):
            session.set_state("n", n)
        return session.snapshot()


def findings_of(reader):
    return [f.message for f in reader.state_findings]


# --- snapshots ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", MODES)
def test_a_chained_snapshot_records_the_chain_value_at_its_position_and_a_mac(tmp_path, key):
    store = chained_store(tmp_path / "s", key)
    seq = with_snapshot(store)
    header, meta, body = parts(snap_path(store, "a", seq))
    assert header.minor == snapshot.CHAINED_MINOR
    assert set(meta) == {"uid", "chain", "mac"} and len(meta["mac"]) == 32
    reader = store.read_session("a")
    assert meta["chain"].hex() == reader.head_hash.split(":")[1]  # the value after its seq
    assert reader.state() == {"n": 2} and findings_of(reader) == []


def test_an_unchained_sessions_snapshot_is_as_before(tmp_path):
    store = fsstore.open_store(tmp_path / "s", chain=False)
    seq = with_snapshot(store)
    header, meta, _ = parts(snap_path(store, "a", seq))
    assert header.minor == snapshot.SNAPSHOT_MINOR == 1 and set(meta) == {"uid"}


@pytest.mark.parametrize("key", MODES)
@pytest.mark.parametrize("edit", ["body", "meta chain", "uid", "seq and name"])
def test_an_edited_snapshot_is_skipped_for_the_log(tmp_path, key, edit):
    store = chained_store(tmp_path / "s", key)
    seq = with_snapshot(store)
    path = snap_path(store, "a", seq)
    header, meta, body = parts(path)
    if edit == "body":
        body["state"]["n"] = 99
        rewrite(path, header, meta, body)
    elif edit == "meta chain":
        rewrite(path, header, dict(meta, chain=bytes(32)), body)
    elif edit == "uid":
        rewrite(path, header, dict(meta, uid="0123456789abcdef"), body)
    else:  # an older snapshot put under a newer name, its header's seq to match
        with store.open_session("a") as session:
            session.set_state("n", 3)
        rewrite(snap_path(store, "a", seq + 1), header, meta, body, seq=seq + 1)
        os.unlink(path)
    reader = store.read_session("a")
    assert reader.state() == {"n": 2 if edit != "seq and name" else 3}
    assert len(findings_of(reader)) == 1
    if edit != "uid":  # (the uid check of every snapshot refuses it first)
        assert "the chain" in findings_of(reader)[0]
    assert any("snapshot" in f.message for f in reader.verify() if f.level == "problem")


def transplant_snapshot(source, source_id, target, target_id, seq):
    """Copy ``source_id``'s snapshot at ``seq`` into ``target_id``'s state folder, its
    meta's uid changed to the target session's (what the uid check alone would catch)."""
    path = snap_path(target, target_id, seq)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    header, meta, body = parts(snap_path(source, source_id, seq))
    rewrite(path, header, dict(meta, uid=f"{uid_of(target, target_id):016x}"), body)


@pytest.mark.parametrize("key", MODES)
def test_a_snapshot_copied_from_another_session_is_skipped(tmp_path, key):
    store = chained_store(tmp_path / "s", key)
    seq = with_snapshot(store, "a")
    with store.create_session("b") as session:
        for n in range(3):
            session.set_state("n", n + 10)
    transplant_snapshot(store, "a", store, "b", seq)  # only the chain can tell
    reader = store.read_session("b")
    assert reader.state() == {"n": 12}
    assert any("the chain" in m for m in findings_of(reader))


@pytest.mark.parametrize("key", MODES)
def test_an_older_genuine_copy_of_a_snapshot_at_a_position_the_log_holds_is_used(tmp_path,
                                                                                key):
    store = chained_store(tmp_path / "s", key)
    seq = with_snapshot(store)
    path = snap_path(store, "a", seq)
    saved = tmp_path / "saved.snap"
    shutil.copy(path, saved)
    with store.open_session("a") as session:
        session.set_state("m", 1)
    os.unlink(path)
    shutil.copy(saved, path)  # put back: genuine, and the log still holds its position
    reader = store.read_session("a")
    assert reader.state() == {"n": 2, "m": 1} and findings_of(reader) == []
    assert [f for f in reader.verify() if f.level == "problem"] == []


def test_unkeyed_a_recomputed_mac_over_a_forged_state_is_not_caught_by_the_file_alone(
        tmp_path):
    """The limit of an unkeyed chain (FORMAT.md 3.4): the chain value a snapshot records
    is in the log for anyone to read, and the MAC is SHA-256, so a forged state at a
    genuine position verifies; only the chain value is checked against the log."""
    store = chained_store(tmp_path / "s")
    seq = with_snapshot(store)
    path = snap_path(store, "a", seq)
    header, meta, body = parts(path)
    body["state"]["n"] = 99
    forge(path, header, meta, body, uid_of(store, "a"), meta["chain"])
    reader = store.read_session("a")
    assert reader.state() == {"n": 99}  # not caught: a pin of the head does not cover it
    forge(path, header, meta, body, uid_of(store, "a"), bytes(32))  # another value
    reader = store.read_session("a")
    assert reader.state() == {"n": 2}
    assert any("chain value at seq" in m for m in findings_of(reader))


def test_keyed_a_mac_recomputed_without_the_key_is_caught(tmp_path):
    store = chained_store(tmp_path / "s", KEY)
    seq = with_snapshot(store)
    path = snap_path(store, "a", seq)
    header, meta, body = parts(path)
    body["state"]["n"] = 99
    forge(path, header, meta, body, uid_of(store, "a"), meta["chain"])
    reader = store.read_session("a")
    assert reader.state() == {"n": 2}
    assert any("its MAC fails" in m for m in findings_of(reader))


def test_a_bound_snapshot_in_a_session_without_a_chain_is_refused(tmp_path):
    chained = chained_store(tmp_path / "c")
    seq = with_snapshot(chained)
    plain = fsstore.open_store(tmp_path / "p", chain=False)
    with plain.create_session("a") as session:
        for n in range(3):
            session.set_state("n", n + 5)
    transplant_snapshot(chained, "a", plain, "a", seq)
    reader = plain.read_session("a")
    assert reader.state() == {"n": 7}
    assert any("no chain" in m for m in findings_of(reader))


def test_a_forks_snapshot_is_bound_to_the_forks_chain(tmp_path):
    store = chained_store(tmp_path / "s", KEY)
    with store.create_session("a") as session:
        for n in range(5):
            session.set_state("n", n)
    with store.fork_session("a", "f", at_seq=3) as fork:
        assert fork.state() == {"n": 2}
    header, meta, _ = parts(snap_path(store, "f", 3))
    assert header.minor == snapshot.CHAINED_MINOR and "mac" in meta
    reader = store.read_session("f")
    assert reader.state() == {"n": 2} and findings_of(reader) == []


# --- checkpoints ----------------------------------------------------------------------------


def with_checkpoint(store, session_id="a"):
    with store.create_session(session_id) as session:
        for n in range(3):
            session.set_state("n", n)
        info = session.checkpoint("c")
        session.set_state("n", 3)
    return info.id


@pytest.mark.parametrize("key", MODES)
def test_a_checkpoint_is_bound_and_loads(tmp_path, key):
    store = chained_store(tmp_path / "s", key)
    checkpoint_id = with_checkpoint(store)
    header, meta, _ = parts(ckpt_path(store, "a", checkpoint_id))
    assert header.minor == snapshot.CHAINED_MINOR and {"chain", "mac"} <= set(meta)
    assert store.read_session("a").load_checkpoint(checkpoint_id) == {"n": 2}


@pytest.mark.parametrize("key", MODES)
@pytest.mark.parametrize("edit", ["body", "label", "meta chain", "other session"])
def test_an_edited_checkpoint_raises_naming_the_chain(tmp_path, key, edit):
    store = chained_store(tmp_path / "s", key)
    checkpoint_id = with_checkpoint(store)
    path = ckpt_path(store, "a", checkpoint_id)
    header, meta, body = parts(path)
    if edit == "body":
        body["state"]["n"] = 99
    elif edit == "label":
        meta["label"] = "edited"
    elif edit == "meta chain":
        meta["chain"] = bytes(32)
    else:  # b's checkpoint (same seq, made the same way) under a's id and uid
        other_id = with_checkpoint(store, "b")
        header, meta, body = parts(ckpt_path(store, "b", other_id))
        meta = dict(meta, id=checkpoint_id, uid=f"{uid_of(store, 'a'):016x}")
    rewrite(path, header, meta, body)
    reader = store.read_session("a")
    with pytest.raises(ChainBindingBroken, match="the chain") as caught:
        reader.load_checkpoint(checkpoint_id)
    assert caught.value.path == path
    assert any(f.path == path for f in reader.verify() if f.level == "problem")


def test_unkeyed_a_forged_checkpoint_at_another_chain_value_is_caught(tmp_path):
    store = chained_store(tmp_path / "s")
    checkpoint_id = with_checkpoint(store)
    path = ckpt_path(store, "a", checkpoint_id)
    header, meta, body = parts(path)
    body["state"]["n"] = 99
    forge(path, header, meta, body, uid_of(store, "a"), meta["chain"])
    assert store.read_session("a").load_checkpoint(checkpoint_id) == {"n": 99}  # the limit
    forge(path, header, meta, body, uid_of(store, "a"), bytes(32))
    with pytest.raises(ChainBindingBroken, match="chain value at seq"):
        store.read_session("a").load_checkpoint(checkpoint_id)


def test_an_older_checkpoint_under_a_newer_id_is_caught(tmp_path):
    store = chained_store(tmp_path / "s", KEY)
    with store.create_session("a") as session:
        session.set_state("n", 1)
        old = session.checkpoint("old")
        session.set_state("n", 2)
        new = session.checkpoint("new")
    old_path, new_path = ckpt_path(store, "a", old.id), ckpt_path(store, "a", new.id)
    header, meta, body = parts(old_path)
    rewrite(new_path, header, dict(meta, id=new.id), body)  # the name check passes
    with pytest.raises(ChainBindingBroken, match="the chain"):
        store.read_session("a").load_checkpoint(new.id)
    with pytest.raises(CorruptionError), store.open_session("a") as session:
        session.gc(dry_run=True)  # a checkpoint the chain disowns stops a gc


def test_a_keyed_checkpoint_without_the_key_is_refused(tmp_path):
    store = chained_store(tmp_path / "s", KEY)
    checkpoint_id = with_checkpoint(store)
    reader = fsstore.open_store(tmp_path / "s").read_session("a")
    assert [c.id for c in reader.checkpoints()] == [checkpoint_id]  # listing reads meta
    with pytest.raises(fsstore.ChainKeyRequired):
        reader.load_checkpoint(checkpoint_id)


def test_the_bindings_use_their_own_domain_tags():
    tags = chain.DOMAINS + chain.BINDING_DOMAINS
    assert len(set(tags)) == len(tags) and all(len(t) == 16 for t in tags)


# --- session.json ---------------------------------------------------------------------------


def manifest_path(store, session_id):
    return os.path.join(session_dir(store, session_id), "session.json")


def load_manifest(store, session_id):
    with open(manifest_path(store, session_id), encoding="utf-8") as handle:
        return json.load(handle)


def save_manifest(store, session_id, data, *, remac=None):
    """Write ``data`` as the session's manifest; with ``remac`` (a Mac), its chain.mac
    recomputed under it first, as an attacker with that MAC would."""
    if remac is not None:
        data["chain"]["mac"] = chain_bindings.manifest_mac(remac, data).hex()
    with open(manifest_path(store, session_id), "w", encoding="utf-8") as handle:
        json.dump(data, handle)


def problems(store):
    return [f for f in store.verify() if f.level == "problem"]


@pytest.mark.parametrize("key", MODES)
def test_session_json_records_the_head_and_chain_value_it_was_written_at(tmp_path, key):
    store = chained_store(tmp_path / "s", key)
    with store.create_session("a") as session:
        created = load_manifest(store, "a")["chain"]
        assert created["at"][0] == 0 and len(created["mac"]) == 64
        session.append_many([{"n": 1}, {"n": 2}])
        session.update_metadata(title="t")
        head_hash = session.head_hash
    at = load_manifest(store, "a")["chain"]["at"]
    assert f"{at[0]}:{at[1]}" == head_hash  # the metadata record is the head
    assert store.read_session("a").title == "t" and problems(store) == []


def test_an_unchained_sessions_manifest_is_as_before(tmp_path):
    store = fsstore.open_store(tmp_path / "s", chain=False)
    with store.create_session("a", title="t") as session:
        session.update_metadata(tags=["x"])
    assert "chain" not in load_manifest(store, "a")


EDITS = {
    "title": lambda data: data.update(title="edited"),
    "tags": lambda data: data.update(tags=["forged"]),
    "metadata": lambda data: data.update(metadata={"owner": "mallory"}),
    "parent": lambda data: data["parent"].update(seq=1),
    "retention": lambda data: data.update(retention={"keep_events": 1}),
    "ancestor_uids": lambda data: data.update(ancestor_uids=["0123456789abcdef"]),
    "chain.at": lambda data: data["chain"].update(at=[1, "00" * 32]),
}


@pytest.mark.parametrize("key", MODES)
@pytest.mark.parametrize("field", sorted(EDITS))
def test_a_manifest_edited_by_hand_is_caught(tmp_path, key, field):
    store = chained_store(tmp_path / "s", key)
    with store.create_session("p", title="t", tags=["a"], metadata={"k": 1}) as session:
        session.append_many([{"n": n} for n in range(4)])
    store.fork_session("p", "a", at_seq=2).close()
    data = load_manifest(store, "a")
    EDITS[field](data)
    save_manifest(store, "a", data)
    with pytest.raises(ChainBindingBroken, match="the chain") as caught:
        store.read_session("a")
    assert caught.value.path == manifest_path(store, "a")
    with pytest.raises(ChainBindingBroken):
        store.open_session("a")
    found = problems(store)
    assert [f.path for f in found] == [manifest_path(store, "a")]
    assert "the chain" in found[0].message


@pytest.mark.parametrize("key", MODES)
def test_a_manifest_whose_binding_was_stripped_is_caught(tmp_path, key):
    store = chained_store(tmp_path / "s", key)
    store.create_session("a").close()
    data = load_manifest(store, "a")
    del data["chain"]["mac"]
    save_manifest(store, "a", data)
    with pytest.raises(ChainBindingBroken, match="no chain.mac"):
        store.read_session("a")


def test_unkeyed_a_recomputed_manifest_mac_is_not_caught_by_the_file_alone(tmp_path):
    """The limit of an unkeyed chain: anyone can recompute the SHA-256 MAC of an edited
    manifest. Its chain.at is still checked against the log by verify."""
    store = chained_store(tmp_path / "s")
    with store.create_session("a", title="t") as session:
        session.append_many([{"n": 1}, {"n": 2}])
    data = load_manifest(store, "a")
    data["title"] = "edited"
    save_manifest(store, "a", data, remac=Mac())
    assert store.read_session("a").title == "edited" and problems(store) == []
    data["chain"]["at"] = [9, data["chain"]["at"][1]]  # written after the log's end
    save_manifest(store, "a", data, remac=Mac())
    assert "after the end of the log" in problems(store)[0].message
    data["chain"]["at"] = [0, "00" * 32]  # another value than the log's there
    save_manifest(store, "a", data, remac=Mac())
    assert "not the chain value the log holds" in problems(store)[0].message


def test_keyed_a_manifest_mac_recomputed_without_the_key_is_caught(tmp_path):
    store = chained_store(tmp_path / "s", KEY)
    store.create_session("a", title="t").close()
    data = load_manifest(store, "a")
    data["title"] = "edited"
    for mac in (Mac(), Mac(bytes(32))):  # SHA-256, or HMAC under a key of one's own
        save_manifest(store, "a", data, remac=mac)
        with pytest.raises(ChainBindingBroken, match="chain.mac fails"):
            store.read_session("a")


def test_keyed_an_older_genuine_manifest_is_not_caught_by_the_file_alone(tmp_path):
    """FORMAT.md 3.4: an older genuine session.json of the same session verifies (its
    chain.at is a value the log holds); only a pin of its MAC tells."""
    store = chained_store(tmp_path / "s", KEY)
    with store.create_session("a", title="old") as session:
        older = load_manifest(store, "a")
        session.update_metadata(title="new")
    save_manifest(store, "a", older)
    assert store.read_session("a").title == "old" and problems(store) == []


def test_a_keyed_manifest_without_the_key_reads_unchecked_and_its_log_refuses(tmp_path):
    store = chained_store(tmp_path / "s", KEY)
    with store.create_session("a", title="t") as session:
        session.append({"n": 1})
    data = load_manifest(store, "a")
    data["title"] = "edited"
    save_manifest(store, "a", data)
    keyless = fsstore.open_store(tmp_path / "s")
    reader = keyless.read_session("a")
    assert reader.title == "edited"  # unchecked without the key ...
    with pytest.raises(fsstore.ChainKeyRequired):
        list(reader.events())  # ... and nothing of the log reads
    assert any(ChainKey(KEY).key_id in f.message for f in problems(keyless))
    with pytest.raises(ChainBindingBroken):  # with the key, caught
        store.read_session("a")


def test_a_metadata_update_of_a_shared_writer_checks_the_manifest_it_reloads(tmp_path):
    store = chained_store(tmp_path / "s", KEY)
    store.create_session("a", title="t").close()
    with store.open_session("a", shared=True) as session:
        data = load_manifest(store, "a")
        data["tags"] = ["forged"]
        save_manifest(store, "a", data)
        with pytest.raises(ChainBindingBroken):
            session.update_metadata(title="u")


# --- blobs ----------------------------------------------------------------------------------


def blob_session(store):
    """A session with two blobs, the first referred to by a chained event; its refs as
    the event holds them (the digest the chain vouches for)."""
    with store.create_session("a") as session:
        first = session.blobs.put(os.urandom(4000))
        second = session.blobs.put(os.urandom(4000))
        session.append({"file": first})
        return session.blobs.stat(first).path, session.blobs.stat(second).path


def referred(store):
    reader = store.read_session("a")
    (event,) = list(reader.events())
    return reader, event.data["file"]


@pytest.mark.parametrize("key", MODES)
def test_an_edited_blob_is_caught_on_read_and_by_verify(tmp_path, key):
    store = chained_store(tmp_path / "s", key)
    path, _ = blob_session(store)
    with open(path, "r+b") as handle:
        byte = handle.read(1)[0]
        handle.seek(0)
        handle.write(bytes([byte ^ 0xFF]))
    reader, ref = referred(store)
    with pytest.raises(CorruptionError, match="does not match its digest"):
        reader.blobs.get(ref)
    assert [f.path for f in problems(store)] == [path]


@pytest.mark.parametrize("key", MODES)
def test_a_blob_swapped_for_another_genuine_blob_is_caught(tmp_path, key):
    """The event names its blob by digest, under the chain: another genuine blob of the
    store put under that name has another digest."""
    store = chained_store(tmp_path / "s", key)
    path, other = blob_session(store)
    shutil.copy(other, path)
    reader, ref = referred(store)
    with pytest.raises(CorruptionError, match="does not match its digest"):
        reader.blobs.get(ref)
    assert path in [f.path for f in problems(store)]


def test_stats_of_a_chained_session_use_its_bound_snapshots(tmp_path, caplog):
    store = chained_store(tmp_path / "s", KEY)
    with_snapshot(store)
    stats = store.stats(use_cache=False)
    assert stats.damaged == [] and stats.per_session[0].head == 3
    assert "snapshot skipped" not in caplog.text  # (a skipped one is logged)
