"""tools/bench.py's maintenance rows: compaction (throughput, compression ratio, replay of
a compacted session) beside the sizes and replay of the same events in SQLite and JSONL;
vacuum of a session whose queue holds 100k records of consumed work.

    python3 tools/bench.py --maintenance-only [--quick]
"""

from __future__ import annotations

import os
import shutil
import statistics
import time

from bench import (
    fsstore_append,
    jsonl_append,
    jsonl_replay,
    make_events,
    ratio,
    row,
    sqlite_append,
    sqlite_replay,
)

import fsstore
from fsstore import Durability
from fsstore.compaction import CompactReport


def _folder_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(top, name))
               for top, _, names in os.walk(path) for name in names)


def _replay(folder: str) -> int:
    reader = fsstore.open_store(os.path.join(folder, "store"), create=False).read_session(
        "bench")
    count = 0
    for _ in reader.events():
        count += 1
    return count


def compaction_rows(root: str, quick: bool) -> None:
    count = 10_000 if quick else 100_000
    events = make_events(count)
    plain, packed = os.path.join(root, "plain"), os.path.join(root, "compacted")
    for folder in (plain, packed):
        os.makedirs(folder)
        fsstore_append(Durability("flush"))(folder, events)
    sqlite_append("NORMAL")(plain, events)
    jsonl_append("none")(plain, events)
    log = os.path.join(packed, "store", "sessions", "bench", "log")
    before = _folder_bytes(log)
    started = time.perf_counter()
    report: CompactReport = fsstore.open_store(os.path.join(packed, "store"),
                                               create=False).compact()
    seconds = time.perf_counter() - started
    after = _folder_bytes(log)
    sqlite_bytes = os.path.getsize(os.path.join(plain, "events.db"))
    jsonl_bytes = os.path.getsize(os.path.join(plain, "events.jsonl"))
    print(f"\ncompaction: {count} events of the append rows, one session, 4 MiB segments")
    row("log bytes, before -> after", f"{before / 1e6:.1f} -> {after / 1e6:.1f} MB",
        ratio(before, after, "smaller"))
    row("compacted log vs the same events", f"{after / 1e6:.1f} MB",
        ratio(sqlite_bytes, after, "smaller than SQLite"),
        ratio(jsonl_bytes, after, "smaller than JSONL"))
    row("compaction throughput", f"{report.plain_bytes / seconds / 1e6:.0f} MB/s",
        f"{report.segments_before} -> {report.segments_after} files")
    samples: dict[str, list[float]] = {name: [] for name in ("plain", "compacted", "sqlite",
                                                              "jsonl")}
    runs = {"plain": lambda: _replay(plain), "compacted": lambda: _replay(packed),
            "sqlite": lambda: sqlite_replay(plain), "jsonl": lambda: jsonl_replay(
                __import__("json").loads)(plain)}
    for _ in range(5):  # interleaved, the median of each: a busy machine skews single runs
        for name, run in runs.items():
            start = time.perf_counter()
            assert run() == count
            samples[name].append(count / (time.perf_counter() - start))
    rates = {name: statistics.median(values) for name, values in samples.items()}
    row("replay, compacted session", f"{rates['compacted']:,.0f} ev/s",
        ratio(rates["compacted"], rates["plain"], "uncompacted"),
        ratio(rates["compacted"], rates["sqlite"], "SQLite"),
        ratio(rates["compacted"], rates["jsonl"], "JSONL"))
    row("replay, uncompacted session", f"{rates['plain']:,.0f} ev/s")
    shutil.rmtree(plain, ignore_errors=True)
    shutil.rmtree(packed, ignore_errors=True)


def _consumed_queue(session: fsstore.Session, items: int, batch: int) -> None:
    """``items`` work items enqueued, claimed and completed: three records each, written
    a batch (one frame) of each kind at a time through the session's own ingress, so the
    log is what workers would leave, built in seconds rather than an fsync per call."""
    for start in range(0, items, batch):
        count = min(batch, items - start)

        def enqueue(image, now, count=count):
            return [("fsstore.queue", {"op": "enqueue", "kind": "job", "payload": {"n": n},
                                       "priority": 0, "max_attempts": 3})
                    for n in range(count)], lambda seq: seq
        first = session._ingress(enqueue, fenced=False)

        def claim(image, now, first=first, count=count):
            return [("fsstore.queue", {"op": "claim", "id": first + n, "worker": "w",
                                       "expires": now + 600}) for n in range(count)], (
                lambda seq: seq)
        token = session._ingress(claim, fenced=False)

        def complete(image, now, first=first, token=token, count=count):
            return [("fsstore.queue", {"op": "complete", "id": first + n, "token": token + n})
                    for n in range(count)], lambda seq: seq
        session._ingress(complete, fenced=False)


def vacuum_rows(root: str, quick: bool) -> None:
    records = 10_000 if quick else 100_000
    store = fsstore.open_store(os.path.join(root, "vacuum"), segment_size=256 << 10)
    with store.create_session("queue") as session:
        _consumed_queue(session, records // 3 + 1, 1000)
        session.queue.enqueue("live", {"still": "ready"})  # one item stays
        head = session.head
    log = os.path.join(store.path, "sessions", "queue", "log")
    before = _folder_bytes(log)
    with store.open_session("queue") as session:  # the state loaded by the vacuum
        started = time.perf_counter()
        report = session.vacuum()
        seconds = time.perf_counter() - started
        assert [item.kind for item in session.queue.items()] == ["live"]
    after = _folder_bytes(log)
    reclaimed = report.removed["queue_records"].count
    print(f"\nvacuum: a session of {head:,} queue records of consumed work "
          "(enqueue, claim, complete), 256 KiB segments")
    row("records reclaimed", f"{reclaimed:,}", f"{reclaimed / seconds:,.0f} records/s")
    row("log bytes, before -> after", f"{before / 1e6:.2f} -> {after / 1e6:.2f} MB",
        ratio(before, after, "smaller"))
    row("Session.vacuum()", f"{seconds:.2f} s", "opened afresh: loads the state first")
    shutil.rmtree(os.path.join(root, "vacuum"), ignore_errors=True)


def maintenance_rows(root: str, quick: bool) -> None:
    compaction_rows(root, quick)
    vacuum_rows(root, quick)
