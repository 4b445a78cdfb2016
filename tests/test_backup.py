"""``fsstore backup`` (fsstore/backup.py): consistent copies of a store taken while a
writer appends, rolls over, commits, checkpoints, forks and puts blobs at full speed and a
compaction runs beside it; incremental backups that copy only what changed; restores by
copying the folder back; damage found by ``backup --verify``; a backup killed midway
leaves its folder usable.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from procs import Child
from test_copies_during_writes import BATCH, check_copy

import fsstore
import fsstore.backup
from fsstore.backup import BACKUP_MANIFEST
from fsstore.cli import main

WRITER = """
import os, sys, fsstore
store = fsstore.open_store(sys.argv[1], segment_size=4096)
session = store.open_session("s")
memory = session.collection("memory")
print("READY", flush=True)
n = 0
while not os.path.exists(sys.argv[2]):
    n += 1
    events = [{"batch": n, "i": i, "pad": "p" * 150} for i in range(BATCH)]
    if n % 5 == 0:  # a blob put before the commit that refers to it
        events[0]["blob"] = session.blobs.put(b"blob %d " % n * 40, media_type="text/plain")
    session.commit(events, state_patch={"batches": n})
    if n % 3 == 0 and n <= 3000:
        memory.upsert([fsstore.VectorDocument(f"d{n}", [1.0, float(n)], seq=session.head)])
    if n % 7 == 0 and n <= 700:
        session.checkpoint(checkpoint_id=f"c{n}")
    if n % 25 == 0 and n <= 400:
        try:
            session.fork(f"f{n}").close()
        except fsstore.SessionLocked:
            pass  # made, but the vacuum beside it held the new fork when fork opened it
session.close()
""".replace("BATCH", str(BATCH))

# A compaction of every session, again and again, beside the writer (it takes no writer
# lock); forks, which no writer holds, are vacuumed too.
COMPACTOR = """
import os, sys, time, fsstore
store = fsstore.open_store(sys.argv[1])
print("READY", flush=True)
while not os.path.exists(sys.argv[2]):
    store.compact(lock_timeout=5.0)
    store.vacuum([i for i in store.session_ids() if i != "s"])
    time.sleep(0.05)
"""


def make_store(root: Path) -> fsstore.Store:
    store = fsstore.open_store(root, segment_size=4096)
    with store.create_session("s") as session:
        session.create_collection("memory", dim=2)
    return store


def check_backup(dest: Path) -> int:
    """The backup opens, verifies, is complete, and each session holds whole batches
    whose state, checkpoints, blobs and collection agree; the batches of session ``s``."""
    held = check_copy(dest)  # Store.verify, and the batches and states of every session
    manifest = json.loads((dest / BACKUP_MANIFEST).read_text())
    assert manifest["complete"], manifest
    # the collection holds the upserts of a prefix of the batches, each linked to an
    # event the copied log holds (it is copied before the log)
    reader = fsstore.open_store(dest, create=False).read_session("s")
    memory = reader.collection("memory")
    count = memory.count()
    documents = memory.get([f"d{3 * k}" for k in range(1, count + 1)])
    assert all(d is not None and d.seq is not None and d.seq <= reader.head
               for d in documents), (dest, count)
    return held


def backups_during_writes(tmp_path: Path, backups: int) -> None:
    root = tmp_path / "store"
    store = make_store(root)
    stop = tmp_path / "stop"
    dest = tmp_path / "backup"
    seen = []
    with Child.script(WRITER, root, stop) as writer, \
            Child.script(COMPACTOR, root, stop) as compactor:
        writer.wait_for("READY")
        compactor.wait_for("READY")
        try:
            for index in range(backups):
                # every other one into a new folder linked to the last: both kinds of
                # incremental backup
                target = dest if index % 2 == 0 else tmp_path / f"backup-{index}"
                report = fsstore.backup_store(store, target,
                                              link_dest=dest if index % 2 else None)
                assert report.failed == {}, report.failed
                seen.append(check_backup(target))
                assert report.heads["s"] >= seen[-1] * BATCH
        finally:
            stop.touch()
        writer.finish()
        compactor.finish()
        assert writer.returncode == 0, writer.describe()
        assert compactor.returncode == 0, compactor.describe()
    assert seen[-1] > 0 and seen == sorted(seen)


def test_backups_taken_during_writes_and_compactions_hold_whole_batches(tmp_path):
    backups_during_writes(tmp_path, 4)


@pytest.mark.long
def test_many_backups_taken_during_writes_and_compactions_hold_whole_batches(tmp_path):
    backups_during_writes(tmp_path, 12)


def fill(store: fsstore.Store, session_id: str, batches: int, start: int = 0) -> None:
    session = (store.open_session(session_id) if store.has_session(session_id)
               else store.create_session(session_id))
    with session:
        for n in range(start + 1, start + batches + 1):
            events = [{"batch": n, "i": i, "pad": "p" * 300} for i in range(BATCH)]
            if n % 10 == 0:
                events[0]["blob"] = session.blobs.put(os.urandom(2000))
            session.commit(events, state_patch={"batches": n})
            if n % 50 == 0:
                session.checkpoint(checkpoint_id=f"c{n}")


def test_a_second_backup_copies_only_what_changed_and_links_the_rest(tmp_path):
    store = fsstore.open_store(tmp_path / "store", segment_size=8192)
    fill(store, "s", 200)
    fill(store, "t", 50)
    dest = tmp_path / "backup"
    first = fsstore.backup_store(store, dest)
    assert first.files_linked == 0 and first.bytes_copied > 200 * 900
    sealed = dest / "sessions" / "s" / "log" / "00000000000000000001.fslog"
    inode = sealed.stat().st_ino

    fill(store, "s", 2, start=200)  # 1% more, in one session
    second = fsstore.backup_store(store, dest)
    assert second.bytes_copied < first.bytes_copied / 10, second
    assert second.bytes_linked > first.bytes_copied * 0.8, second
    assert sealed.stat().st_ino == inode  # the same file, not a copy of it
    assert check_copy(dest) == 202

    # into a new folder, linked to the last backup (rsync --link-dest)
    third = fsstore.backup_store(store, tmp_path / "next", link_dest=dest)
    assert third.bytes_copied < first.bytes_copied / 10, third
    assert (tmp_path / "next" / sealed.relative_to(dest)).stat().st_ino == inode
    assert check_copy(tmp_path / "next") == 202


def test_a_fork_and_its_parent_share_their_copied_files_as_in_the_store(tmp_path):
    store = fsstore.open_store(tmp_path / "store", segment_size=4096)
    fill(store, "s", 100)
    store.fork_session("s", "f").close()
    report = fsstore.backup_store(store, tmp_path / "backup")
    segment = "log/00000000000000000001.fslog"
    assert (tmp_path / "backup/sessions/f" / segment).stat().st_ino == \
        (tmp_path / "backup/sessions/s" / segment).stat().st_ino
    assert report.files_linked > 0


def test_a_backup_restored_by_copying_it_back_opens_verifies_and_takes_writes(tmp_path):
    store = fsstore.open_store(tmp_path / "store", segment_size=4096)
    fill(store, "s", 120)
    with store.open_session("s") as session:
        memory = session.create_collection("memory", dim=2)
        memory.upsert([fsstore.VectorDocument("a", [1.0, 0.0], content="hello")])
    store.create_workspace("w")
    store.add_to_workspace("w", "s")
    fsstore.backup_store(store, tmp_path / "backup")
    # restore: copy the folder back (here to a new place) and open it
    shutil.copytree(tmp_path / "backup", tmp_path / "restored", symlinks=True)
    restored = fsstore.open_store(tmp_path / "restored", create=False)
    assert [f for f in restored.verify() if f.level == "problem"] == []
    assert check_copy(tmp_path / "restored") == 120
    assert [m.session_id for m in restored.workspace_sessions("w")] == ["s"]
    with restored.open_session("s") as session:
        assert session.load_checkpoint("c100")["batches"] == 100
        session.commit([{"batch": 121, "i": i, "pad": ""} for i in range(BATCH)],
                       state_patch={"batches": 121})
        hits = session.collection("memory").search([1.0, 0.0], k=1)
        assert hits[0].id == "a"
    assert check_copy(tmp_path / "restored") == 121
    assert [f for f in restored.verify() if f.level == "problem"] == []


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x40]))


def test_damage_in_a_backup_is_found_by_verify_with_its_file_and_offset(tmp_path, capsys):
    store = fsstore.open_store(tmp_path / "store", segment_size=4096)
    fill(store, "s", 60)
    dest = tmp_path / "backup"
    fsstore.backup_store(store, dest)
    assert main(["backup", "--verify", str(dest)]) == 0
    assert capsys.readouterr().out.strip().endswith("OK")

    sealed = dest / "sessions/s/log/00000000000000000001.fslog"
    flip_byte(sealed, 200)
    assert main(["backup", "--verify", str(dest)]) == 1
    out = capsys.readouterr().out
    assert f"problem: {sealed} at byte " in out and "problem" in out.splitlines()[-1]

    # the newest segment cut at a frame boundary: only the manifest's head tells
    shutil.rmtree(dest)
    fsstore.backup_store(store, dest)
    log = dest / "sessions/s/log"
    newest = sorted(log.iterdir())[-1]
    newest.unlink()
    findings = fsstore.verify_backup(dest)
    assert any(f.level == "problem" and "backup copied it up to seq" in f.message
               for f in findings), findings


def test_a_backup_folder_inside_the_store_or_holding_it_is_refused(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    fill(store, "s", 3)
    before = sorted(p.name for p in (tmp_path / "store").iterdir())
    with pytest.raises(fsstore.InvalidBackupDest, match="inside the store"):
        fsstore.backup_store(store, tmp_path / "store" / "backup")
    with pytest.raises(fsstore.InvalidBackupDest, match="is inside the backup folder"):
        fsstore.backup_store(store, tmp_path)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(fsstore.InvalidBackupDest, match="neither empty nor a backup"):
        fsstore.backup_store(store, tmp_path / "other")
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == before
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == ["notes.txt"]
    with pytest.raises(fsstore.SessionNotFound):
        fsstore.backup_store(store, tmp_path / "b", ["nope"])
    with pytest.raises(fsstore.InvalidBackupDest, match="--link-dest is not a backup"):
        fsstore.backup_store(store, tmp_path / "b", link_dest=tmp_path / "typo")
    assert not (tmp_path / "b").exists()


def test_a_backup_of_named_sessions_keeps_the_others_and_a_whole_one_mirrors(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    fill(store, "s", 5)
    fill(store, "t", 5)
    dest = tmp_path / "backup"
    fsstore.backup_store(store, dest)
    fill(store, "s", 2, start=5)
    store.delete_session("t")
    report = fsstore.backup_store(store, dest, ["s"])
    assert report.heads == {"s": 7 * (BATCH + 1)} and report.removed == []
    assert fsstore.open_store(dest).session_ids() == ["s", "t"]
    report = fsstore.backup_store(store, dest)
    assert report.removed == ["t"]
    assert fsstore.open_store(dest).session_ids() == ["s"]
    manifest = json.loads((dest / BACKUP_MANIFEST).read_text())
    assert manifest["complete"] and set(manifest["sessions"]) == {"s"}
    assert [f for f in fsstore.verify_backup(dest) if f.level == "problem"] == []


# A backup that stops for good at a chosen step, for the test to kill -9 it there.
INTERRUPTED = """
import sys, time, fsstore, fsstore.backup as backup
step = sys.argv[3]
if step == "mid-copy":
    take, calls = backup._Copier.take, []
    def slow_take(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 20:
            print("STOPPED", flush=True)
            time.sleep(600)
        return take(self, *args, **kwargs)
    backup._Copier.take = slow_take
else:  # between the two renames that put a session's copy in place
    def half_put(io, sessions_dir, session_id, temp):
        import os
        io.rename(os.path.join(sessions_dir, session_id),
                  os.path.join(sessions_dir, ".trash-" + session_id + "-00000000"))
        print("STOPPED", flush=True)
        time.sleep(600)
    backup._put_in_place = half_put
store = fsstore.open_store(sys.argv[1])
fsstore.backup_store(store, sys.argv[2])
"""


@pytest.mark.parametrize("step", ["mid-copy", "between-renames"])
def test_a_backup_killed_midway_leaves_a_usable_backup_marked_incomplete(tmp_path, step):
    store = fsstore.open_store(tmp_path / "store", segment_size=4096)
    fill(store, "s", 80)
    fill(store, "t", 3)
    dest = tmp_path / "backup"
    fsstore.backup_store(store, dest)
    fill(store, "s", 20, start=80)
    with Child.script(INTERRUPTED, tmp_path / "store", dest, step) as child:
        child.wait_for("STOPPED")
        child.signal(signal.SIGKILL)
        child.finish()
    # DEST still opens; what it holds of each session is a whole copy (the previous one,
    # under its .trash- name when the kill fell between the renames)
    backup = fsstore.open_store(dest, create=False)
    assert [f for f in backup.verify() if f.level == "problem"] == []
    findings = fsstore.verify_backup(dest)
    assert any("did not complete" in f.message for f in findings if f.level == "problem")
    if step == "mid-copy":
        assert check_copy(dest) == 80
    else:
        trash = next((dest / "sessions").glob(".trash-s-*"))
        assert (trash / "session.json").exists() and not (dest / "sessions/s").exists()
        # any next backup, even of another session, puts the previous copy back
        assert fsstore.backup_store(store, dest, ["t"]).failed == {}
        assert check_copy(dest) == 80
    # the next backup finishes the job, taking what it can from what is there
    report = fsstore.backup_store(store, dest)
    assert report.failed == {} and report.files_linked > 0
    assert [f for f in fsstore.verify_backup(dest) if f.level == "problem"] == []
    assert check_copy(dest) == 100
    assert list((dest / "sessions").glob(".*")) == []


def test_the_backup_command_reports_and_exits_zero(tmp_path, capsys):
    store = fsstore.open_store(tmp_path / "store")
    fill(store, "s", 3)
    assert main(["--store", str(tmp_path / "store"), "backup", str(tmp_path / "b")]) == 0
    assert "backed up 1 session into" in capsys.readouterr().out
    assert main(["--store", str(tmp_path / "store"), "backup", str(tmp_path / "b"), "s",
                 "--json", "--verify-copies"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["heads"] == {"s": 3 * (BATCH + 1)} and report["complete"]
    assert main(["backup", "--verify", str(tmp_path / "b")]) == 0
    assert capsys.readouterr().out == "OK\n"
    # --verify checks a backup and takes nothing else: refused in one line, exit 2
    assert main(["backup", "--verify", str(tmp_path / "b"), "s"]) == 2
    assert "backup --verify takes DEST alone" in capsys.readouterr().err


def test_a_collection_with_sealed_shards_is_backed_up_whole_and_its_shards_linked_again(
        tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    with store.create_session("s") as session:
        memory = session.create_collection("memory", dim=2)
        for start in range(0, 30, 10):  # three shards, then documents in the log only
            memory.upsert([fsstore.VectorDocument(f"d{k}", [1.0, float(k)])
                           for k in range(start, start + 10)])
            memory.seal()
        memory.delete(["d3"])
        memory.upsert([fsstore.VectorDocument("late", [0.0, 1.0])])
    dest = tmp_path / "backup"
    fsstore.backup_store(store, dest)
    assert [f for f in fsstore.verify_backup(dest) if f.level == "problem"] == []
    copy = fsstore.open_store(dest).read_session("s").collection("memory")
    original = store.read_session("s").collection("memory")
    assert copy.count() == original.count() == 30
    assert copy.get(["d3", "late", "d29"])[0] is None
    assert [h.id for h in copy.search([1.0, 0.5], k=5)] == \
        [h.id for h in original.search([1.0, 0.5], k=5)]
    shards = sorted(p.name for p in (dest / "sessions/s/vectors/memory").iterdir()
                    if p.name.endswith((".npy", ".docs")))
    assert shards  # sealed shard files were copied
    again = fsstore.backup_store(store, dest)
    assert again.files_linked >= len(shards)


def test_a_session_unchanged_since_the_last_backup_is_left_as_it_is(tmp_path, monkeypatch):
    # No quiet time needed before the fingerprint is trusted (it guards against a change
    # in the same tick as the stamp before it; the test waits between writes instead).
    monkeypatch.setattr(fsstore.backup, "QUIET_NS", 0)
    store = fsstore.open_store(tmp_path / "store", segment_size=4096)
    fill(store, "idle", 60)
    fill(store, "busy", 10)
    dest = tmp_path / "backup"
    time.sleep(0.05)
    fsstore.backup_store(store, dest)
    copy = dest / "sessions" / "idle"
    inode = copy.stat().st_ino
    time.sleep(0.05)
    fill(store, "busy", 2, start=10)
    report = fsstore.backup_store(store, dest)
    assert report.unchanged == 1 and report.heads == {"idle": 60 * (BATCH + 1),
                                                      "busy": 12 * (BATCH + 1)}
    assert copy.stat().st_ino == inode  # not rebuilt
    assert check_copy(dest) == 0 and [
        f for f in fsstore.verify_backup(dest) if f.level == "problem"] == []
    # a copy changed by hand is made again
    (copy / "checkpoints" / "c50.ckpt").unlink()
    report = fsstore.backup_store(store, dest)
    assert report.unchanged == 1  # busy, this time
    assert (copy / "checkpoints" / "c50.ckpt").exists()


def test_backups_started_together_into_one_folder_take_turns_and_both_complete(tmp_path):
    """A nightly backup still running when the next starts: each waits for the other
    (before, the second removed the first's copies in progress as an interrupted
    backup's leftovers)."""
    import subprocess
    import sys

    store = fsstore.open_store(tmp_path / "store")
    for index in range(6):
        fill(store, f"s{index}", 4)
    dest = tmp_path / "nightly"
    command = [sys.executable, "-m", "fsstore", "--store", store.path, "backup", str(dest)]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(3)]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0], outputs
    assert [f for f in fsstore.verify_backup(dest) if f.level == "problem"] == []
    copy = fsstore.open_store(dest)
    assert copy.session_ids() == store.session_ids()
    for session_id in store.session_ids():
        assert [e.seq for e in copy.read_session(session_id).events()] == [
            e.seq for e in store.read_session(session_id).events()]
