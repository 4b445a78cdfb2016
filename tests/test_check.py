"""verify: it checks everything a read would, reports each problem once, and never raises."""

from __future__ import annotations

import hashlib
import json
import os
import time

import pytest

import fsstore
from fsstore import snapshot
from fsstore.chain import Mac
from fsstore.chain_bindings import SnapshotSeal
from fsstore.cli import main


def problems(findings) -> list:
    return [f for f in findings if f.level == "problem"]


def blob_path(session, ref) -> str:
    return session.blobs.stat(ref).path


# --- what reads would refuse ----------------------------------------------------------------

def test_verify_reports_a_blob_the_log_refers_to_that_is_missing(store):
    with store.create_session("s") as session:
        kept = session.blobs.put(b"still here")
        lost = session.blobs.put(b"will be lost")
        session.commit([{"shot": kept}, {"tool": {"output": [lost]}}])
        os.unlink(blob_path(session, lost))
    reader = store.read_session("s")
    with pytest.raises(fsstore.BlobNotFound):
        reader.blobs.get(lost)
    (problem,) = problems(store.verify())
    assert lost.digest in problem.message and "seq 2" in problem.message
    assert problem.path.endswith(".fslog")


def test_verify_reports_a_blob_a_checkpoint_refers_to_that_is_missing(store):
    with store.create_session("s") as session:
        ref = session.blobs.put(b"in the checkpoint only")
        session.set_state("doc", ref)
        checkpoint = session.checkpoint("with doc")
        session.clear()  # the log no longer refers to it; the checkpoint still does
        os.unlink(blob_path(session, ref))
    (problem,) = problems(store.verify())
    assert ref.digest in problem.message and checkpoint.id in problem.message


def test_verify_reports_a_reference_whose_size_is_not_the_blobs(store):
    with store.create_session("s") as session:
        ref = session.blobs.put(b"twelve bytes")
        session.append({"f": fsstore.BlobRef(ref.digest, 13)})
        with pytest.raises(fsstore.CorruptionError):
            session.blobs.get(fsstore.BlobRef(ref.digest, 13))
    (problem,) = problems(store.verify())
    assert "size 13" in problem.message


def test_a_digest_string_alone_is_no_reference_and_a_malformed_ref_is_a_note(store):
    digest = "sha256:" + hashlib.sha256(b"never put").hexdigest()
    with store.create_session("s") as session:
        session.append({"text": f"see {digest}", "raw": digest})
        session.append({"fsstore.blob": "not a digest"})
    (note,) = store.verify()
    assert note.level == "note" and "not a blob reference" in note.message


def test_verify_reports_a_state_record_with_an_unknown_op(store):
    with store.create_session("s") as session:
        session.set_state("k", 1)
        # checksum-valid, as a newer fsstore (or a hand) would write it
        session._writer.append([(fsstore.STATE_RECORD, {"ops": [["frobnicate", "k"]]})],
                               session.current_turn or 0, time.time())
    reader = store.read_session("s")
    with pytest.raises(fsstore.FsStoreError):
        reader.state()
    (problem,) = problems(store.verify())
    assert "seq 2" in problem.message and "cannot be applied" in problem.message


def test_verify_reports_an_unknown_op_hidden_behind_a_snapshot(store):
    with store.create_session("s") as session:
        session.set_state("k", 1)
        session._writer.append([(fsstore.STATE_RECORD, {"ops": [["frobnicate", "k"]]})],
                               0, time.time())
        session.set_state("k", 2)
        session.snapshot()  # the writer's own image never folded the record
    reader = store.read_session("s")
    assert reader.state() == {"k": 2}  # reads at the head start from the snapshot
    with pytest.raises(fsstore.FsStoreError):
        reader.state_at(2)
    (problem,) = problems(store.verify())
    assert "seq 2" in problem.message


@pytest.mark.parametrize("chain", [False, True], ids=["unchained", "chained"])
def test_verify_reports_a_snapshot_that_differs_from_the_fold_of_the_log(tmp_path, chain):
    store = fsstore.open_store(tmp_path / "store", chain=chain)
    with store.create_session("s") as session:
        session.set_state("balance", 10)
        session.set_state("owner", "ada")
        seq = session.snapshot()
        path = os.path.join(session.path, "state", f"{seq:020d}.snap")
    reader = store.read_session("s")
    file = snapshot.read(store.io, path, identity=reader.identity, chain=reader.chain_rules)
    body = dict(file.body, state={"balance": 1_000_000, "owner": "ada"})
    seal = None
    if chain:  # an unkeyed MAC anyone can recompute: the file alone does not tell
        meta = {k: v for k, v in file.meta.items() if k not in ("chain", "mac")}
        seal = SnapshotSeal(Mac(), int(file.meta["uid"], 16), file.meta["chain"])
    else:
        meta = file.meta
    forged = snapshot.encode(file.header.kind, file.header.seq, file.header.log_start,
                             file.header.position, meta, body, seal)
    with open(path, "wb") as handle:
        handle.write(forged)
    assert store.read_session("s").state()["balance"] == 1_000_000  # reads trust it
    (problem,) = problems(store.verify())
    assert problem.path == path and "differs from the fold" in problem.message


def test_verify_reports_a_snapshot_named_after_another_seq(store):
    with store.create_session("s") as session:
        session.set_state("a", 1)
        session.set_state("a", 2)
        seq = session.snapshot()
    state_dir = os.path.join(store.read_session("s").path, "state")
    os.rename(os.path.join(state_dir, f"{seq:020d}.snap"),
              os.path.join(state_dir, f"{seq - 1:020d}.snap"))
    (problem,) = problems(store.verify())
    assert "named after seq" in problem.message


# --- never raises ---------------------------------------------------------------------------

def test_verify_reports_a_malformed_collection_manifest_instead_of_raising(store):
    with store.create_session("s") as session:
        session.create_collection("notes", 3).upsert(
            [{"id": "a", "embedding": [1.0, 0.0, 0.0]}])
    manifest = os.path.join(store.read_session("s").path, "vectors", "notes",
                            "collection.json")
    with open(manifest) as handle:
        data = json.load(handle)
    data["shards"] = "x"
    with open(manifest, "w") as handle:
        json.dump(data, handle)
    found = problems(store.verify())
    assert found and all(f.path.startswith(os.path.dirname(manifest)) for f in found)


def test_verify_goes_on_after_an_unexpected_error(store, monkeypatch):
    with store.create_session("a") as session:
        session.append({"x": 1})
    with store.create_session("b") as session:
        ref = session.blobs.put(b"b's blob")
        session.append({"f": ref})
        os.unlink(blob_path(session, ref))

    def broken(*args, **kwargs):
        raise AttributeError("a bug")

    monkeypatch.setattr(fsstore.lease, "read_lease", broken)
    found = problems(store.verify())
    assert [f.message for f in found if "AttributeError" in f.message]  # both sessions
    assert len([f for f in found if "fsstore bug" in f.message]) == 2
    assert [f for f in found if "b's" not in f.message and "sha256:" in f.message]


def test_verify_reports_a_session_whose_manifest_is_damaged_and_checks_the_rest(store):
    with store.create_session("a") as session:
        session.append({"x": 1})
    with store.create_session("b") as session:
        session.append({"x": 1})
    with open(os.path.join(store.read_session("a").path, "session.json"), "w") as handle:
        handle.write("{not json")
    (problem,) = problems(store.verify())
    assert problem.path.endswith(os.path.join("a", "session.json"))


# --- rendering ------------------------------------------------------------------------------

def test_verify_output_names_each_path_once(store, capsys):
    with store.create_session("s") as session:
        ref = session.blobs.put(os.urandom(1000))
        session.append({"f": ref})
        path = blob_path(session, ref)
    with open(path, "r+b") as handle:
        handle.write(b"\0\0\0\0")
    manifest = os.path.join(store.read_session("s").path, "session.json")
    with open(manifest, "w") as handle:
        handle.write("{not json")
    assert main(["--store", store.path, "verify"]) == 1
    problem_lines = [line for line in capsys.readouterr().out.splitlines()
                     if line.startswith("problem")]
    assert problem_lines
    for line in problem_lines:
        where = line.split(": ")[1].split(" at byte ")[0]
        assert line.count(where) == 1, line


def test_a_finding_made_from_an_error_message_shows_its_path_once():
    finding = fsstore.Finding("problem", "/s/x", 8, "/s/x at byte 8: damaged")
    assert str(finding) == "problem: /s/x at byte 8: damaged"
    finding = fsstore.Finding("problem", "/s/x", None, "/s/x: damaged")
    assert str(finding) == "problem: /s/x: damaged"


def test_verify_reports_a_session_folder_that_lost_its_manifest(store):
    with store.create_session("a") as session:
        session.append({"x": 1})
    os.unlink(os.path.join(store.read_session("a").path, "session.json"))
    assert store.session_ids() == []  # no read lists it any more
    (problem,) = problems(store.verify())
    assert problem.path.endswith(os.path.join("a", "session.json"))
    assert "missing" in problem.message


def test_verify_reports_a_manifest_copied_from_another_session(store):
    for session_id in ("a", "b"):
        with store.create_session(session_id, title=session_id):
            pass
    folder_a = store.read_session("a").path
    folder_b = store.read_session("b").path
    with open(os.path.join(folder_a, "session.json"), "rb") as handle:
        copied = handle.read()
    with open(os.path.join(folder_b, "session.json"), "wb") as handle:
        handle.write(copied)
    found = problems(store.verify())
    (problem,) = [p for p in found if p.path == os.path.join(folder_b, "session.json")]
    assert "'a'" in problem.message
    # The copied manifest carries a's uid too, so b's own segment reads as a stranger's.
    assert [p.path for p in found if p is not problem] == [
        os.path.join(folder_b, "log", "00000000000000000001.fslog")]


def test_verify_reports_a_damaged_snapshot_once_without_logging_it(store, caplog):
    with store.create_session("s") as session:
        session.set_state("a", 1)
        seq = session.snapshot()
        path = os.path.join(session.path, "state", f"{seq:020d}.snap")
    with open(path, "r+b") as handle:
        handle.seek(100)
        handle.write(b"\xff\xff")
    (problem,) = problems(store.verify())
    assert problem.path == path
    assert not [r for r in caplog.records if r.name == "fsstore"]


@pytest.mark.parametrize("replacement", ["file", "symlink"])
def test_verify_notes_a_file_and_reports_a_symlink_where_a_session_folder_should_be(
    store, tmp_path, replacement
):
    store.create_session("a").close()
    store.create_session("b").close()
    folder = store.read_session("b").path
    os.rename(folder, tmp_path / "elsewhere")
    if replacement == "file":
        with open(folder, "wb") as handle:
            handle.write(b"not a session")
    else:
        os.symlink(tmp_path / "elsewhere", folder)
    findings = store.verify()
    if replacement == "symlink":
        (problem,) = problems(findings)
        assert problem.path == folder and "symlink" in problem.message
    else:
        assert problems(findings) == []
        (note,) = findings
        assert note.path == folder and "not a folder" in note.message
