"""How fast ``fsstore backup`` copies a store: a first backup, and an incremental one
after about 1% more was appended, next to ``cp -r`` of the same store.

    python3 tools/bench.py --backup-only           # a store of about 100 MB
    python3 tools/bench.py --backup-only --quick   # about 10 MB

The store: 20 sessions of 1 KiB events in 4 MiB segments (sealed, and one active each)
with a checkpoint, a snapshot and ten 64 KiB attachments each. MB/s is the store's size
over the time taken (so an incremental backup's figure is how fast a store of that size
is brought up to date); a ratio above 1 means the backup took less time than the
reference (``cp -r``, and ``cp -r`` then ``sync -f``, since a backup's copy is durable
when it returns). Warm page cache, one run each, in this process for the backups
and a child for ``cp -r``. A program, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

from bench import ratio, row  # type: ignore[import-not-found]

import fsstore
import fsstore.backup

SESSIONS = 20
EVENT = 1024


def _folder_bytes(path: str) -> int:
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            total += os.lstat(os.path.join(folder, name)).st_size
    return total


def _append(store: fsstore.Store, session_id: str, events: int, first: int) -> None:
    session = (store.open_session(session_id) if store.has_session(session_id)
               else store.create_session(session_id))
    with session:
        pad = os.urandom(EVENT // 2).hex()
        for start in range(first, first + events, 100):
            session.commit([{"n": n, "text": pad} for n in range(start, start + 100)],
                           state_patch={"last": start + 99})
        if first == 0:
            for _ in range(10):
                ref = session.blobs.put(os.urandom(64 << 10))
                session.append({"attachment": ref}, kind="file")
            session.checkpoint(checkpoint_id="start")
            session.snapshot()


def _cp(source: str, dest: str) -> tuple[float, float]:
    """Seconds ``cp -r`` took, and with a ``sync -f`` of the copy after it (the
    backup makes its copy durable; cp alone leaves it in the page cache)."""
    started = time.perf_counter()
    subprocess.run(["cp", "-r", source, dest], check=True)
    copied = time.perf_counter() - started
    subprocess.run(["sync", "-f", dest], check=True)
    return copied, time.perf_counter() - started


def backup_rows(root: str, quick: bool) -> None:
    per_session = (10_000 if quick else 100_000) // SESSIONS
    store_path = os.path.join(root, "backup-store")
    store = fsstore.open_store(store_path, durability="none")
    for index in range(SESSIONS):
        _append(store, f"s{index:02d}", per_session, 0)
    size = _folder_bytes(store_path)
    mb = size / 1e6
    print(f"\nBackups (fsstore backup), a store of {SESSIONS} sessions, {mb:.0f} MB; "
          "beside cp -r of the same store, warm cache")

    cp_first = _cp(store_path, os.path.join(root, "cp-1"))
    started = time.perf_counter()
    first = fsstore.backup_store(store, os.path.join(root, "backup"))
    seconds = time.perf_counter() - started
    assert first.complete, first.failed
    row("backup, first (into an empty folder)", f"{mb / seconds:,.0f} MB/s",
        ratio(cp_first[0], seconds, "cp -r"), ratio(cp_first[1], seconds, "cp -r + sync"),
        f"{first.bytes_copied / 1e6:.0f} MB copied")

    for index in range(SESSIONS):  # about 1% more
        _append(store, f"s{index:02d}", max(per_session // 100, 100), per_session)
    cp_again = _cp(store_path, os.path.join(root, "cp-2"))
    started = time.perf_counter()
    again = fsstore.backup_store(store, os.path.join(root, "backup"))
    seconds = time.perf_counter() - started
    assert again.complete, again.failed
    row("backup, incremental (after 1% more)", f"{mb / seconds:,.0f} MB/s",
        ratio(cp_again[0], seconds, "cp -r"), ratio(cp_again[1], seconds, "cp -r + sync"),
        f"{again.bytes_copied / 1e6:.1f} MB copied, {again.files_linked} files linked")

    # A store that did not change since (the common case of a daily backup of many
    # idle sessions): once its files are quiet (backup.QUIET_NS), the backup records
    # each session's fingerprint, and the next one leaves the copies as they are.
    time.sleep(fsstore.backup.QUIET_NS / 1e9)
    fsstore.backup_store(store, os.path.join(root, "backup"))
    started = time.perf_counter()
    idle = fsstore.backup_store(store, os.path.join(root, "backup"))
    seconds = time.perf_counter() - started
    row("backup, nothing changed since", f"{mb / seconds:,.0f} MB/s",
        ratio(cp_again[0], seconds, "cp -r"), ratio(cp_again[1], seconds, "cp -r + sync"),
        f"{idle.unchanged} of {idle.sessions} sessions unchanged")

    started = time.perf_counter()
    linked = fsstore.backup_store(store, os.path.join(root, "backup-next"),
                                  link_dest=os.path.join(root, "backup"))
    seconds = time.perf_counter() - started
    row("backup, into a new folder --link-dest the last", f"{mb / seconds:,.0f} MB/s",
        ratio(cp_again[0], seconds, "cp -r"), ratio(cp_again[1], seconds, "cp -r + sync"),
        f"{linked.bytes_copied / 1e6:.1f} MB copied, {linked.files_linked} files linked")
    started = time.perf_counter()
    findings = fsstore.verify_backup(os.path.join(root, "backup"))
    seconds = time.perf_counter() - started
    assert not [f for f in findings if f.level == "problem"], findings
    row("backup --verify", f"{mb / seconds:,.0f} MB/s", "reads and checks every byte")
    for name in ("cp-1", "cp-2", "backup", "backup-next", "backup-store"):
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)
