"""``fsstore backup`` against a damaged source, hostile backup folders and rewrites of
sealed files under the names an earlier copy holds (fsstore/backup.py, FORMAT 23)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from test_backup import fill, flip_byte

import fsstore
from fsstore.backup import BACKUP_MANIFEST


def problems(dest: Path) -> list[str]:
    return [str(f) for f in fsstore.verify_backup(dest) if f.level == "problem"]


def log_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix == ".fslog"}


def test_a_damaged_sealed_segment_in_the_source_fails_its_session_and_keeps_its_copy(
        tmp_path):
    store = fsstore.open_store(tmp_path / "store", segment_size=4096)
    fill(store, "s", 10)
    fill(store, "t", 10)
    dest = tmp_path / "backup"
    first = fsstore.backup_store(store, dest)
    before = log_files(dest / "sessions/s/log")
    fill(store, "s", 40, start=10)
    fill(store, "t", 5, start=10)
    log = tmp_path / "store/sessions/s/log"
    damaged = sorted(log_files(log))[-2]  # sealed since the first backup: copied anew
    flip_byte(log / damaged, 100)

    report = fsstore.backup_store(store, dest)
    assert set(report.failed) == {"s"} and report.heads["t"] > first.heads["t"]
    assert f"{log / damaged} at byte " in report.failed["s"]
    assert "damaged" in report.failed["s"]
    assert log_files(dest / "sessions/s/log") == before  # the previous copy, whole
    assert [p for p in problems(dest) if "did not complete" not in p] == []


def test_damage_before_the_end_of_the_active_segment_is_named_not_copied(tmp_path):
    store = fsstore.open_store(tmp_path / "store", segment_size=1 << 20)
    fill(store, "s", 5)
    log = tmp_path / "store/sessions/s/log"
    active = log / sorted(log_files(log))[-1]
    flip_byte(active, 100)  # the first frame: valid frames follow it
    report = fsstore.backup_store(store, tmp_path / "backup")
    assert f"{active} at byte 64" in report.failed["s"]
    assert not (tmp_path / "backup/sessions/s").exists()


def test_a_torn_tail_of_the_active_segment_is_cut_and_the_copy_verifies(tmp_path):
    store = fsstore.open_store(tmp_path / "store", segment_size=1 << 20)
    fill(store, "s", 5)
    log = tmp_path / "store/sessions/s/log"
    with open(log / sorted(log_files(log))[-1], "ab") as handle:
        handle.write(b"\x07" * 40)  # a writer that died mid-append
    report = fsstore.backup_store(store, tmp_path / "backup")
    assert report.complete and report.heads["s"] == store.read_session("s").head
    assert problems(tmp_path / "backup") == []


def test_a_blob_whose_bytes_do_not_match_its_digest_fails_its_session(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    fill(store, "s", 10)
    blob = next((tmp_path / "store/sessions/s/blobs/sha256").glob("*/*"))
    flip_byte(blob, blob.stat().st_size // 2)
    report = fsstore.backup_store(store, tmp_path / "backup")
    assert report.failed["s"].startswith(str(blob))


def test_link_dest_must_be_a_backup_outside_the_store(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    fill(store, "s", 3)
    with pytest.raises(fsstore.InvalidBackupDest, match="inside the store"):
        fsstore.backup_store(store, tmp_path / "b", link_dest=tmp_path / "store")
    other = fsstore.open_store(tmp_path / "other")  # a store, not a backup
    fill(other, "s", 3)
    with pytest.raises(fsstore.InvalidBackupDest, match="not a backup"):
        fsstore.backup_store(store, tmp_path / "b", link_dest=tmp_path / "other")
    assert not (tmp_path / "b").exists()
    fsstore.backup_store(store, tmp_path / "b")
    assert fsstore.backup_store(store, tmp_path / "c", link_dest=tmp_path / "b").complete


def test_a_forged_backup_manifest_entry_is_reported_and_dropped(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    fill(store, "s", 3)
    dest = tmp_path / "backup"
    fsstore.backup_store(store, dest, ["s"])
    path = dest / BACKUP_MANIFEST
    record = json.loads(path.read_text())
    record["sessions"]["../../etc"] = {"head": 1}
    record["sessions"]["s"]["head"] = "3"
    path.write_text(json.dumps(record))
    found = problems(dest)
    assert any("'../../etc'" in p for p in found) and any("'s'" in p for p in found)
    assert fsstore.backup_store(store, dest, ["s"]).complete
    assert set(json.loads(path.read_text())["sessions"]) == {"s"}
    assert problems(dest) == []


def test_sealed_files_rewritten_under_their_names_are_copied_again_not_linked(tmp_path):
    """A compaction (and a vacuum's reclaim, by the same path) replaces sealed files by
    new ones under names the last copy holds: the copy must hold the new bytes."""
    store = fsstore.open_store(tmp_path / "store", segment_size=4096)
    fill(store, "s", 40)
    dest = tmp_path / "backup"
    fsstore.backup_store(store, dest)
    store.compact()
    fill(store, "s", 3, start=40)
    fsstore.backup_store(store, dest)
    source = log_files(tmp_path / "store/sessions/s/log")
    copy = log_files(dest / "sessions/s/log")
    newest = sorted(source)[-1]
    assert {n: b for n, b in copy.items() if n != newest} == {
        n: b for n, b in source.items() if n != newest}
    assert problems(dest) == []


def test_a_session_deleted_and_created_again_while_copied_is_copied_again_whole(
        tmp_path, monkeypatch):
    store = fsstore.open_store(tmp_path / "store", segment_size=4096)
    fill(store, "s", 20)
    collections = fsstore.backup._SessionCopy.collections
    swapped: list[int] = []

    def swap_midway(self: fsstore.backup._SessionCopy) -> None:
        collections(self)
        if not swapped:  # after the copy read session.json, before it lists the log
            swapped.append(1)
            store.delete_session("s")
            fill(store, "s", 2)
    monkeypatch.setattr(fsstore.backup._SessionCopy, "collections", swap_midway)
    dest = tmp_path / "backup"
    report = fsstore.backup_store(store, dest)
    assert report.complete and swapped
    assert problems(dest) == []
    copy = fsstore.open_store(dest).read_session("s")
    assert copy.head == report.heads["s"] == store.read_session("s").head
    assert (dest / "sessions/s/session.json").read_bytes() == (
        tmp_path / "store/sessions/s/session.json").read_bytes()


def snapshot_of(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every file of a store but its locks: mode and bytes."""
    found = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            if name.endswith(".lock"):
                continue
            path = Path(folder) / name
            found[str(path.relative_to(root))] = (path.stat().st_mode, path.read_bytes())
    return found


def test_a_backup_changes_nothing_in_the_store_and_a_restored_fork_reads_its_history(
        tmp_path):
    store = fsstore.open_store(tmp_path / "store", segment_size=4096)
    fill(store, "s", 30)
    with store.open_session("s") as session:
        session.fork("f").close()
    fill(store, "f", 5, start=30)
    before = snapshot_of(tmp_path / "store")
    dest = tmp_path / "backup"
    fsstore.backup_store(store, dest)
    fsstore.backup_store(store, dest, verify=True)
    assert snapshot_of(tmp_path / "store") == before
    restored = tmp_path / "restored"
    shutil.copytree(dest, restored, symlinks=True)
    again = fsstore.open_store(restored)
    assert [f for f in again.verify() if f.level == "problem"] == []
    fork = again.read_session("f")
    assert [e.data["batch"] for e in fork.events() if "batch" in e.data][:3] == [1, 1, 1]
    head = fork.head
    fill(again, "f", 2, start=35)
    assert again.read_session("f").head > head


def make_collection(store: fsstore.Store, x: float) -> None:
    with store.create_session("s") as session:
        session.commit([{"a": 1}])
        memory = session.create_collection("memory", dim=2)
        memory.upsert([fsstore.VectorDocument(f"d{k}", [x, float(k)]) for k in range(10)])
        memory.seal()


def test_shards_of_a_session_made_again_under_its_id_are_copied_not_linked(tmp_path):
    """Shard numbers start again in a new collection: same names, same sizes."""
    store = fsstore.open_store(tmp_path / "store")
    make_collection(store, 1.0)
    dest = tmp_path / "backup"
    fsstore.backup_store(store, dest)
    store.delete_session("s")
    make_collection(store, 5.0)
    fsstore.backup_store(store, dest)
    source = tmp_path / "store/sessions/s/vectors/memory"
    shards = [p for p in source.iterdir() if p.name.endswith((".npy", ".docs"))]
    assert shards
    for path in shards:
        assert (dest / "sessions/s/vectors/memory" / path.name).read_bytes() == \
            path.read_bytes()
    assert problems(dest) == []


def test_a_damaged_shard_in_the_source_fails_its_session(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    make_collection(store, 1.0)
    shard = next((tmp_path / "store/sessions/s/vectors/memory").glob("*.vec.npy"))
    flip_byte(shard, shard.stat().st_size - 3)
    report = fsstore.backup_store(store, tmp_path / "backup")
    assert report.failed["s"].startswith(str(shard)) and "crc32c" in report.failed["s"]


def test_verify_finds_a_checkpoint_or_snapshot_removed_from_a_backup(tmp_path):
    store = fsstore.open_store(tmp_path / "store", segment_size=4096)
    fill(store, "s", 60)  # a checkpoint at batch 50
    with store.open_session("s") as session:
        session.snapshot()
    dest = tmp_path / "backup"
    fsstore.backup_store(store, dest)
    assert problems(dest) == []
    for kind in ("checkpoints", "state"):
        path = next((dest / "sessions/s" / kind).iterdir())
        data = path.read_bytes()
        path.unlink()
        found = problems(dest)
        assert any(p.startswith(f"problem: {dest / 'sessions/s' / kind}: holds 0 files")
                   for p in found), found
        path.write_bytes(data)
    assert problems(dest) == []


def test_a_backup_folder_under_a_file_is_refused_naming_the_file(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    fill(store, "s", 2)
    (tmp_path / "file").write_text("mine")
    with pytest.raises(fsstore.InvalidBackupDest, match="file is not a folder"):
        fsstore.backup_store(store, tmp_path / "file" / "deeper" / "backup")
    assert (tmp_path / "file").read_text() == "mine"


def test_a_session_deleted_while_a_whole_store_backup_runs_is_removed_not_failed(
        tmp_path, monkeypatch):
    store = fsstore.open_store(tmp_path / "store")
    for session_id in ("a", "b", "c"):
        fill(store, session_id, 3)
    dest = tmp_path / "backup"
    fsstore.backup_store(store, dest)
    run = fsstore.backup._SessionCopy.run

    def delete_b_first(self: fsstore.backup._SessionCopy) -> None:
        if self.source.endswith(os.sep + "b") and store.has_session("b"):
            store.delete_session("b")
        run(self)
    monkeypatch.setattr(fsstore.backup._SessionCopy, "run", delete_b_first)
    fill(store, "c", 2, start=3)
    report = fsstore.backup_store(store, dest)
    assert report.complete and report.removed == ["b"]
    assert report.heads["c"] == store.read_session("c").head  # the one after it too
    assert sorted(p.name for p in (dest / "sessions").iterdir()) == ["a", "c"]
    assert problems(dest) == []


def test_a_first_backup_killed_before_its_manifest_leaves_a_store_the_next_one_fills(
        tmp_path, monkeypatch):
    store = fsstore.open_store(tmp_path / "store")
    fill(store, "s", 3)
    dest = tmp_path / "backup"

    def killed(*_args: object) -> None:
        raise KeyboardInterrupt  # as a kill at the first write of the backup manifest
    with monkeypatch.context() as patch:
        patch.setattr(fsstore.backup, "_write_backup_manifest", killed)
        with pytest.raises(KeyboardInterrupt):
            fsstore.backup_store(store, dest)
    assert fsstore.open_store(dest, create=False).session_ids() == []
    assert any("missing" in p for p in problems(dest))  # not a backup: not one that verifies
    assert fsstore.backup_store(store, dest).complete
    assert problems(dest) == []


def test_a_backup_after_a_reclaim_holds_the_reclaimed_files_not_the_earlier_copy(
        tmp_path):
    """A vacuum's reclaim rewrites sealed files under their own names, each frame padded
    to its old size: the next backup must not keep the earlier copy of them."""
    from test_reclaim import build
    store = build(tmp_path / "store")
    store.compact()  # compacted files: a reclaim gives them the same names again
    dest = tmp_path / "backup"
    fsstore.backup_store(store, dest)
    before = log_files(dest / "sessions/s/log")
    with store.open_session("s") as session:
        assert session.vacuum().removed["queue_records"].count > 0
    report = fsstore.backup_store(store, dest)
    source = log_files(tmp_path / "store/sessions/s/log")
    copy = log_files(dest / "sessions/s/log")
    newest = sorted(source)[-1]
    rewritten = [n for n in source if n != newest and before.get(n) != source[n]]
    assert rewritten and set(rewritten) <= set(before)  # same names, new bytes
    assert all(copy[n] == source[n] for n in source if n != newest)
    assert report.complete and problems(dest) == []
    copied = fsstore.open_store(dest).read_session("s")
    assert copied.state() == store.read_session("s").state()


def test_an_event_whose_blob_the_source_lost_fails_its_session(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    fill(store, "s", 10)  # batch 10 refers to a blob
    blob = next((tmp_path / "store/sessions/s/blobs/sha256").glob("*/*"))
    blob.unlink()
    report = fsstore.backup_store(store, tmp_path / "backup")
    assert "refers to blob sha256:" + blob.name.split(".")[0] in report.failed["s"]
    assert str(tmp_path / "store/sessions/s/log") in report.failed["s"]


def test_a_torn_file_of_a_session_made_again_is_copied_not_linked(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    torn = "00000000000000000001@200.torn"
    copies = []
    for content in (b"a" * 50, b"b" * 50):
        if store.has_session("s"):
            store.delete_session("s")
        fill(store, "s", 3)
        (tmp_path / "store/sessions/s/log" / torn).write_bytes(content)
        fsstore.backup_store(store, tmp_path / "backup")
        copies.append((tmp_path / "backup/sessions/s/log" / torn).read_bytes())
    assert copies == [b"a" * 50, b"b" * 50]


def test_a_backup_folder_whose_copies_are_symlinks_into_the_store_never_links_its_files(
        tmp_path):
    store = fsstore.open_store(tmp_path / "store", segment_size=4096)
    fill(store, "s", 30)
    fill(store, "t", 5)
    dest = tmp_path / "backup"
    fsstore.backup_store(store, dest)
    before = snapshot_of(tmp_path / "store")
    # a previous copy, and a copy an interrupted backup set aside, made symlinks to the
    # store's own sessions
    shutil.rmtree(dest / "sessions/s")
    os.symlink(tmp_path / "store/sessions/s", dest / "sessions/s")
    os.symlink(tmp_path / "store/sessions/t", dest / "sessions/.trash-t-12345678")
    report = fsstore.backup_store(store, dest)
    assert report.complete, report.failed
    assert snapshot_of(tmp_path / "store") == before
    store_inodes = {p.stat().st_ino for p in (tmp_path / "store").rglob("*") if p.is_file()}
    copies = [p for p in (dest / "sessions").rglob("*") if p.is_file() or p.is_symlink()]
    assert not any(p.is_symlink() for p in copies)
    assert not {p.stat().st_ino for p in copies} & store_inodes
    assert problems(dest) == []
