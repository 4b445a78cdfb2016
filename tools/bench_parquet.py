"""The Parquet export (``export_parquet``, ``fsstore export --format parquet``) and a
DuckDB query through ``fsstore sql``'s path, over a store of 1M events (100k quick).

    python3 tools/bench.py --parquet-only           # 1M events
    python3 tools/bench.py --parquet-only --quick   # 100k events

The store: 100 sessions (10 quick) of agent runs, each turn a user message, an
assistant message with a tool call, usage and cost (one of four models), the tool's
result message (one in ten an error), two plain tool events and a turn_finished record;
written through the API. Measured:

- a fresh export (every record) and an incremental one after 1% more records were
  appended to every tenth session (records/s of what was written), and an export with
  nothing new (the cost of checking every session);
- the query ``tokens and cost by model`` over ``usage`` and ``records by kind`` over
  ``events``, through ``fsstore.sql.query`` with an up-to-date cache (the cache check
  included), and the first with ``direct=True`` (Arrow tables built from the logs for
  the query);
- the same two queries in SQLite over the same rows (an ``events`` table of the export's
  columns, indexed by nothing), as the reference for an embedded SQL engine.

A program, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import os
import sqlite3
import time

from bench import row  # type: ignore[import-not-found]

import fsstore
from fsstore import sql as fsql
from fsstore.parquet_export import export_parquet

MODELS = ("gpt-5", "claude-4", "gemini-3", "local")
_BY_MODEL = ("SELECT model, sum(input_tokens) AS input, sum(output_tokens) AS output, "
             "sum(cost) AS cost FROM usage GROUP BY model ORDER BY model")
_BY_KIND = "SELECT kind, count(*) AS n FROM events GROUP BY kind ORDER BY kind"


def _turns(session: fsstore.Session, first: int, count: int) -> int:
    written = 0
    for turn in range(first, first + count):
        call = f"c{turn}"
        session.messages.append_many([
            {"role": "user", "id": f"u{turn}", "parts": [{"type": "text",
                                                         "text": f"step {turn}, please"}]},
            {"role": "assistant", "id": f"a{turn}",
             "parts": [{"type": "tool_call", "call_id": call, "name": "search",
                        "arguments": {"q": f"step {turn}"}}],
             "metadata": {"model": MODELS[turn % 4], "usage": {"input": 800 + turn % 50,
                                                                "output": 30 + turn % 7},
                          "cost": {"amount": 0.001 * (turn % 5 + 1)}}},
            {"role": "tool", "id": f"t{turn}",
             "parts": [{"type": "tool_result", "call_id": call, "output": "found 3 files",
                        "is_error": turn % 10 == 0}]}])
        session.append_many([{"tool": "grep", "args": {"q": f"x{turn}"}},
                             {"output": "ok", "lines": turn % 13}], kind="tool_event")
        session.finish_turn()
        written += 6
    return written


def build_store(root: str, events: int, sessions: int) -> tuple[fsstore.Store, int]:
    store = fsstore.open_store(os.path.join(root, "store"), durability="none")
    turns = max(events // sessions // 6, 1)
    total = 0
    for number in range(sessions):
        with store.create_session(f"run-{number:04d}") as session:
            total += _turns(session, 1, turns)
    return store, total


def _sqlite_reference(root: str, store: fsstore.Store) -> tuple[float, float]:
    """The two queries in SQLite over the same rows: (by model, by kind) seconds."""
    folder = os.path.join(root, "ref-export")
    export_parquet(store, folder)
    path = os.path.join(root, "ref.sqlite")
    db = sqlite3.connect(path)
    with fsql.Catalog(store, cache_dir=folder) as catalog:
        for table in ("events", "usage"):
            data = catalog.query(f"SELECT * EXCLUDE (time{', day' if table == 'usage' else ''})"
                                 f" FROM {table}")
            names = data.column_names
            db.execute(f"CREATE TABLE {table} ({', '.join(names)})")
            for batch in data.to_batches(50_000):
                columns = [column.to_pylist() for column in batch.columns]
                db.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(names))})",
                               zip(*columns, strict=True))
    db.commit()
    timings = []
    for query in (_BY_MODEL, _BY_KIND):
        started = time.perf_counter()
        db.execute(query).fetchall()
        timings.append(time.perf_counter() - started)
    db.close()
    return timings[0], timings[1]


def parquet_rows(root: str, quick: bool) -> None:
    events = 100_000 if quick else 1_000_000
    sessions = 10 if quick else 100
    print(f"\nParquet export and SQL: {events:,} records in {sessions} sessions "
          "(messages with usage and tool calls, tool events, turn records)")
    store, total = build_store(root, events, sessions)
    out = os.path.join(root, "parquet")
    started = time.perf_counter()
    report = export_parquet(store, out)
    fresh = time.perf_counter() - started
    assert report.events == total, (report.events, total)
    row(f"export, fresh ({total:,} records)", f"{total / fresh:,.0f} rec/s",
        f"{fresh:.2f} s")

    added = 0
    per_session = max(total // sessions // 100 // 6, 1)
    for number in range(0, sessions, 10):
        with store.open_session(f"run-{number:04d}") as session:
            added += _turns(session, 10_000, per_session)
    started = time.perf_counter()
    report = export_parquet(store, out)
    incremental = time.perf_counter() - started
    assert report.events == added, (report.events, added)
    row(f"export, incremental (+{added:,} records in {sessions // 10} sessions)",
        f"{added / incremental:,.0f} rec/s", f"{incremental * 1000:,.0f} ms")
    started = time.perf_counter()
    report = export_parquet(store, out)
    idle = time.perf_counter() - started
    assert report.events == 0
    row(f"export, nothing new ({sessions} sessions checked)", f"{idle * 1000:,.0f} ms")

    cache = os.path.join(root, "sql-cache")
    started = time.perf_counter()
    fsql.query(store, _BY_KIND, cache_dir=cache)
    first = time.perf_counter() - started
    row("fsstore sql, first query (cache built)", f"{first:,.2f} s")
    timings = {}
    for name, query in (("by model", _BY_MODEL), ("by kind", _BY_KIND)):
        started = time.perf_counter()
        fsql.query(store, query, cache_dir=cache)
        timings[name] = time.perf_counter() - started
    # The direct path builds every table from the logs for each query: the query itself
    # is a small part of it, so it is timed once.
    started = time.perf_counter()
    fsql.query(store, _BY_MODEL, direct=True)
    direct = time.perf_counter() - started
    reference = _sqlite_reference(root, store)
    for (name, seconds), ref in zip(timings.items(), reference, strict=True):
        row(f"fsstore sql, {name} (cache up to date)", f"{seconds * 1000:,.0f} ms",
            f"SQLite, same rows: {ref * 1000:,.0f} ms")
    row("fsstore sql --direct, by model (Arrow from the logs)", f"{direct:,.2f} s")
