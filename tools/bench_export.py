"""Export and import events/s (``fsstore export`` / ``fsstore import``) of one session of
100,000 events (10,000 with --quick), beside SQLite holding the same events: its
``.dump`` (``Connection.iterdump``, what the ``sqlite3`` shell's ``.dump`` prints) and
the restore of that dump into a new database (``executescript``).

    python3 tools/bench.py --export-only [--quick]

The session is an agent's run: turns of a user message, a tool call, its result, an
assistant message with usage and a state commit, finished turn by turn. SQLite gets the
same records, one row each (seq, ts, turn, kind, data as JSON), committed per turn.
Timed once, warm page cache, in this process; the export files are plain JSON lines
(the zstd row compresses them as they stream). A program, not a test: nothing here
asserts a time.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time

from bench import ratio, row  # type: ignore[import-not-found]

import fsstore


def _fill(store: fsstore.Store, events: int) -> fsstore.SessionReader:
    with store.create_session("run", title="an agent run") as session:
        turn = 0
        while session.head < events:
            turn += 1
            session.append({"role": "user", "content": f"step {turn}: fix the test"},
                           kind="message")
            session.append({"name": "run_tests", "args": {"path": "tests/"}},
                           kind="tool_call")
            session.append({"output": "2 failed, 40 passed", "raw": b"\x1b[31m"},
                           kind="tool_result")
            session.commit([{"role": "assistant", "content": "the fixture was stale",
                             "usage": {"input": 812, "output": 31}}],
                           state_patch={"turn": turn, "failing": turn % 3})
            session.finish_turn()
    return store.read_session("run")


def _sqlite(path: str, reader: fsstore.SessionReader) -> sqlite3.Connection:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, ts REAL, turn INTEGER, "
               "kind TEXT, data TEXT)")
    rows = [(e.seq, e.ts, e.turn, e.kind, json.dumps(e.data, default=lambda b: b.hex()))
            for e in reader.events(include_internal=True)]
    with db:
        db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)", rows)
    return db


def export_rows(root: str, quick: bool) -> None:
    events = 10_000 if quick else 100_000
    store = fsstore.open_store(os.path.join(root, "export-src"))
    reader = _fill(store, events)
    count = reader.head
    print(f"\nExport and import (fsstore export / import), one session of {count:,} events; "
          "SQLite's .dump (iterdump) and its restore of the same rows as the reference")
    out = os.path.join(root, "run.jsonl")
    start = time.perf_counter()
    report = fsstore.export_sessions(store, out, ["run"])
    exported = time.perf_counter() - start
    start = time.perf_counter()
    fsstore.export_sessions(store, out + ".zst", ["run"])
    zstd = time.perf_counter() - start
    dest = fsstore.open_store(os.path.join(root, "export-dst"))
    start = time.perf_counter()
    fsstore.import_sessions(dest, out)
    imported = time.perf_counter() - start

    db = _sqlite(os.path.join(root, "events.db"), reader)
    start = time.perf_counter()
    dump = "\n".join(db.iterdump())
    dumped = time.perf_counter() - start
    restored_db = sqlite3.connect(os.path.join(root, "restored.db"))
    start = time.perf_counter()
    restored_db.executescript(dump)
    restored_db.commit()
    restored = time.perf_counter() - start
    assert restored_db.execute("SELECT count(*) FROM events").fetchone()[0] == count

    def rate(seconds: float) -> float:
        return count / seconds

    row("export, events/s", f"{rate(exported):,.0f}",
        ratio(rate(exported), rate(dumped), "sqlite3 .dump"),
        f"{report.bytes / count:.0f} B an event")
    row("export, zstd, events/s", f"{rate(zstd):,.0f}",
        f"{os.path.getsize(out + '.zst') / count:.0f} B an event")
    row("import (verified fold, snapshot), events/s", f"{rate(imported):,.0f}",
        ratio(rate(imported), rate(restored), "sqlite3 restore"))
    row("sqlite3 .dump, events/s", f"{rate(dumped):,.0f}",
        f"{len(dump) / count:.0f} B an event")
    row("sqlite3 restore (executescript), events/s", f"{rate(restored):,.0f}")
    db.close()
    restored_db.close()
