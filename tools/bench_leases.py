"""tools/bench.py's lease and work queue rows, beside the same done with SQLite in WAL mode.

    python3 tools/bench.py --leases-only [--quick]
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

from bench import median_rate, ratio, row  # type: ignore[import-not-found]

import fsstore

# --- leases and the work queue ----------------------------------------------------------

SQLITE_QUEUE = """
CREATE TABLE IF NOT EXISTS queue (id INTEGER PRIMARY KEY, kind TEXT, payload BLOB,
    status TEXT, worker TEXT, expires REAL, attempts INTEGER DEFAULT 0);
CREATE INDEX IF NOT EXISTS ready ON queue (status, id);
CREATE TABLE IF NOT EXISTS lease (session TEXT PRIMARY KEY, owner TEXT, token INTEGER,
    expires REAL, held INTEGER);
"""


def sqlite_connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, timeout=60)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(SQLITE_QUEUE)
    return db


def sqlite_lease_cycle(db: sqlite3.Connection) -> None:
    """The same claim (a token bump) and release, as SQLite transactions."""
    db.execute("BEGIN IMMEDIATE")
    row = db.execute("SELECT token, held, expires FROM lease WHERE session='s'").fetchone()
    token = (row[0] if row else 0) + 1
    db.execute("INSERT OR REPLACE INTO lease VALUES ('s', 'me', ?, ?, 1)",
               (token, time.time() + 30))
    db.execute("COMMIT")
    db.execute("UPDATE lease SET held=0 WHERE session='s' AND token=?", (token,))


QUEUE_WORKER = """
import sqlite3, sys, time
sys.path.insert(0, sys.argv[4])
import fsstore
kind, path, name = sys.argv[1], sys.argv[2], sys.argv[3]
done = 0
if kind == "fsstore":
    session = fsstore.open_store(path, create=False).open_session(
        "s", shared=True, lock_timeout=60, durability="fsync")
    print("READY", flush=True)
    claim = None
    while True:
        if claim is None:
            claim = session.queue.claim(name, 30)
            if claim is None:
                time.sleep(0.001)
                continue
        if claim.kind == "stop":
            session.queue.complete(claim)
            break
        done += 1
        claim = session.queue.complete_and_claim(claim, 30)  # one durable step
else:
    db = sqlite3.connect(path, isolation_level=None, timeout=60)
    db.execute("PRAGMA synchronous=FULL")
    print("READY", flush=True)
    while True:
        db.execute("BEGIN IMMEDIATE")
        row = db.execute("SELECT id, kind FROM queue WHERE status='ready' ORDER BY id "
                         "LIMIT 1").fetchone()
        if row is None:
            db.execute("COMMIT")
            time.sleep(0.001)
            continue
        db.execute("UPDATE queue SET status='claimed', worker=?, expires=?, "
                   "attempts=attempts+1 WHERE id=?", (name, time.time() + 30, row[0]))
        db.execute("COMMIT")
        db.execute("UPDATE queue SET status='done' WHERE id=? AND worker=?", (row[0], name))
        if row[1] == "stop":
            break
        done += 1
print("DONE", done, flush=True)
"""


def queue_run(kind: str, root: str, items: int, workers: int) -> float:
    """Items per second, end to end: from the first enqueue (batches of 100, each
    durable) until ``workers`` processes have claimed and completed every item."""
    folder = tempfile.mkdtemp(dir=root)
    tools = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if kind == "fsstore":
        store = fsstore.open_store(folder, durability="fsync")
        store.create_session("s").close()
        path = folder
    else:
        path = os.path.join(folder, "queue.db")
        sqlite_connect(path).close()
    procs = [subprocess.Popen([sys.executable, "-c", QUEUE_WORKER, kind, path, f"w{n}",
                               tools], stdout=subprocess.PIPE, text=True)
             for n in range(workers)]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"
    start = time.perf_counter()
    batches = [[("job", {"n": n}) for n in range(start_, min(start_ + 100, items))]
               for start_ in range(0, items, 100)]
    stops = [("stop", None)] * workers
    if kind == "fsstore":
        with store.open_session("s", shared=True, durability="fsync") as session:
            for batch in batches:
                session.queue.enqueue_many(batch)
            session.queue.enqueue_many(stops, priority=-1)
    else:
        db = sqlite_connect(path)
        for batch in [*batches, stops]:
            db.execute("BEGIN")
            db.executemany("INSERT INTO queue (kind, payload, status) VALUES (?, ?, 'ready')",
                           [(k, json.dumps(p)) for k, p in batch])
            db.execute("COMMIT")
        db.close()
    total = 0
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        total += int(out.split()[-1])
    elapsed = time.perf_counter() - start
    assert total == items, (kind, total, items)
    shutil.rmtree(folder)
    return items / elapsed


def lease_and_queue_rows(root: str, quick: bool) -> None:
    store = fsstore.open_store(os.path.join(root, "leases"))
    store.create_session("s").close()
    owner = fsstore.LeaseOwner.current("bench")
    db = sqlite_connect(os.path.join(root, "leases.db"))

    def fsstore_cycle() -> None:
        store.release_lease(store.claim_lease("s", owner, ttl=30).lease)

    cycles = 300 if quick else 1000
    for _ in range(20):
        fsstore_cycle()
        sqlite_lease_cycle(db)
    samples: dict[str, list[float]] = {"fsstore": [], "sqlite": []}
    # Interleaved in blocks of 50: each store's fsyncs follow its own, as in a runtime
    # that claims and releases, rather than the other's.
    for _ in range(cycles // 50):
        for name, run in (("fsstore", fsstore_cycle), ("sqlite", lambda: sqlite_lease_cycle(db))):
            for _ in range(50):
                start = time.perf_counter()
                run()
                samples[name].append(time.perf_counter() - start)
    medians = {k: statistics.median(v) * 1e6 for k, v in samples.items()}
    p99 = {k: sorted(v)[int(len(v) * 0.99)] * 1e6 for k, v in samples.items()}
    print(f"\nExecution lease, claim + release, uncontended (the claim fdatasynced), "
          f"{cycles} cycles")
    row("fsstore claim_lease + release_lease", f"{medians['fsstore']:.0f} us",
        f"p99 {p99['fsstore']:.0f} us",
        ratio(medians["fsstore"], medians["sqlite"], "SQLite's time"))
    row("  SQLite WAL FULL: token bump + release", f"{medians['sqlite']:.0f} us",
        f"p99 {p99['sqlite']:.0f} us")

    items = 2000 if quick else 10_000
    rates = median_rate({"fsstore": lambda: queue_run("fsstore", root, items, 4),
                         "sqlite": lambda: queue_run("sqlite", root, items, 4)},
                        1 if quick else 3)
    print(f"\nWork queue, 4 worker processes, {items:,} items enqueued in batches of 100; "
          "each claim and each completion durable")
    row("fsstore complete_and_claim, durability fsync", f"{rates['fsstore']:,.0f} items/s",
        ratio(rates["fsstore"], rates["sqlite"], "SQLite"))
    row("  SQLite WAL FULL: claim, then complete", f"{rates['sqlite']:,.0f} items/s")
