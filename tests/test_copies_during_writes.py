"""A plain copy of a store (cp -r, tar, rsync -a, a file-by-file copy) taken while a writer works at
full speed (appends, rollovers, commits, checkpoints, forks) opens, verifies, and holds
in each session a prefix of whole batches whose state agrees with it.

Each batch is one ``commit``: its events and its state change land together, so a copy
that holds batch ``n`` whole holds ``{"batches": n}`` as its state, and none holds part
of a batch. Forks are made at a batch's end and never written again.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from procs import Child

import fsstore

BATCH = 3
#: under a second of commits on a quiet machine: the later copies are of a store that
#: stopped growing, and the check of each copy (every record, state and checkpoint) stays
#: near a second
MAX_COMMITS = 1000

WRITER = """
import os, sys, time, fsstore
store = fsstore.open_store(sys.argv[1], segment_size=4096)
session = store.open_session("s")
print("READY", flush=True)
n = 0
# At most MAX_COMMITS (then it waits for the stop file): on a busy machine the copies and
# their checks slow down while this process does not, and a store growing without bound
# made each next copy slower still (4 s for the short test became 60).
while not os.path.exists(sys.argv[2]) and n < MAX_COMMITS:
    n += 1
    session.commit([{"batch": n, "i": i, "pad": "p" * 150} for i in range(BATCH)],
                   state_patch={"batches": n})
    # checkpoints and forks early on only: the store, and the time a copy of it and
    # its check take, stay bounded
    if n % 7 == 0 and n <= 350:
        session.checkpoint(checkpoint_id=f"c{n}")
    if n % 25 == 0 and n <= 200:
        session.fork(f"f{n}").close()
while not os.path.exists(sys.argv[2]):
    time.sleep(0.01)
session.close()
""".replace("BATCH", str(BATCH)).replace("MAX_COMMITS", str(MAX_COMMITS))


def copy_store(kind: str, source: Path, dest: Path) -> None:
    """Copy ``source`` to ``dest`` as a user's backup would; files that vanish
    mid-copy (temp files renamed or removed meanwhile) are skipped, as the tools do."""
    if kind == "cp":
        subprocess.run(["cp", "-r", str(source), str(dest)], stderr=subprocess.DEVNULL)
    elif kind == "rsync":
        # exit 24: some files vanished while rsync read the folder (temp files renamed)
        subprocess.run(["rsync", "-a", f"{source}/", f"{dest}/"], stderr=subprocess.DEVNULL)
    elif kind == "tar":
        archive = dest.with_suffix(".tar")
        # GNU tar warns of files that changed or vanished while it read them, and goes on
        subprocess.run(["tar", "-cf", str(archive), "-C", str(source.parent), source.name],
                       stderr=subprocess.DEVNULL)
        dest.mkdir()
        subprocess.run(["tar", "-xf", str(archive), "-C", str(dest), "--strip-components=1"],
                       check=True)
        archive.unlink()
    else:
        try:
            shutil.copytree(source, dest)
        except shutil.Error:
            pass


def check_copy(dest: Path) -> int:
    """The copy opens and verifies, and each session holds whole batches 1..n with
    state ``{"batches": n}``; the batches the main session holds."""
    store = fsstore.open_store(dest, create=False)
    assert [f for f in store.verify() if f.level == "problem"] == [], dest
    held = 0
    for session_id in store.session_ids():
        reader = store.read_session(session_id)
        batches = [e.data["batch"] for e in reader.events() if "batch" in e.data]
        count = len(batches) // BATCH
        assert batches == [b for b in range(1, count + 1) for _ in range(BATCH)], (
            dest, session_id)
        state = reader.state()
        assert state.get("batches", 0) == count, (dest, session_id, state)
        for checkpoint in reader.checkpoints():
            assert reader.load_checkpoint(checkpoint.id)["batches"] == int(
                checkpoint.id[1:]), (dest, checkpoint.id)
        if session_id == "s":
            held = count
    return held


def copies_during_writes(tmp_path: Path, copies: int,
                         kinds: tuple[str, ...] = ("cp", "tar", "copytree")) -> None:
    root = tmp_path / "store"
    fsstore.open_store(root, segment_size=4096).create_session("s").close()
    stop = tmp_path / "stop"
    seen = []
    with Child.script(WRITER, root, stop) as writer:
        writer.wait_for("READY")
        try:
            for index in range(copies):
                kind = kinds[index % len(kinds)]
                dest = tmp_path / f"copy-{index}"
                copy_store(kind, root, dest)
                seen.append(check_copy(dest))
                shutil.rmtree(dest)
        finally:
            stop.touch()
        writer.finish()
        assert writer.returncode == 0, writer.describe()
    assert seen[-1] > 0 and seen == sorted(seen)  # copies of a growing session


def test_copies_taken_during_commits_checkpoints_and_forks_hold_whole_batches(tmp_path):
    copies_during_writes(tmp_path, 9)


@pytest.mark.long
def test_many_copies_taken_during_commits_checkpoints_and_forks_hold_whole_batches(tmp_path):
    copies_during_writes(tmp_path, 40)


needs_rsync = pytest.mark.skipif(shutil.which("rsync") is None,
                                 reason="rsync is not installed (apt-get install rsync)")


@needs_rsync
def test_rsync_copies_taken_during_commits_checkpoints_and_forks_hold_whole_batches(tmp_path):
    copies_during_writes(tmp_path, 4, ("rsync",))


@needs_rsync
@pytest.mark.long
def test_many_rsync_copies_taken_during_writes_hold_whole_batches(tmp_path):
    copies_during_writes(tmp_path, 30, ("rsync",))
