"""FsstoreSession (fsstore.integrations.agents) beside the OpenAI Agents SDK's SQLiteSession.

    python3 tools/bench.py --agents-only           # 1,000 adds, 10 laps; reads at 10k items
    python3 tools/bench.py --agents-only --quick   # 300 adds, 3 laps

Each session holds the same conversation (bench_messages.conversation's items) of 10,000
items; each reads its last 50 (``get_items(limit=50)``), then adds one item per
``add_items`` call, through the SDK's own async calls. SQLiteSession runs in WAL mode,
synchronous FULL (its default): every ``add_items`` is a durable commit, so FsstoreSession
is compared at the same durability (``fsync``), and also shown at the store's default
(``flush``: survives a killed process, not a power loss). FsstoreSession opens its session
shared by default (any number of objects and processes on one id); ``shared=False`` is the
one-writer mode. A program, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import tempfile
import time
from typing import Any

from bench import ratio, row  # type: ignore[import-not-found]
from bench_messages import (  # type: ignore[import-not-found]
    _sqlite_session,
    conversation,
    median_ms,
)

import fsstore

#: Items in each session before the adds and reads are measured.
SIZE = 10_000

#: (label, FsstoreSession settings): durability, shared.
CONTENDERS = {
    "FsstoreSession, fsync": ("fsync", True),
    "FsstoreSession, flush": ("flush", True),
    "FsstoreSession shared=False, fsync": ("fsync", False),
    "FsstoreSession shared=False, flush": ("flush", False),
}


def fill(session: Any, items: list[dict[str, Any]], loop: asyncio.AbstractEventLoop) -> None:
    """The conversation, added four items a call, as a Runner's turns add them (a batch
    is one frame of the log, and reads decode whole frames)."""
    for start in range(0, len(items), 4):
        loop.run_until_complete(session.add_items(items[start:start + 4]))


def open_contender(name: str, folder: str, items: list[dict[str, Any]],
                   loop: asyncio.AbstractEventLoop) -> Any:
    """Contender ``name``'s session, holding ``items`` (fsstore's added at durability
    flush, then reopened at the contender's: the rows are the same)."""
    if name == "SQLiteSession":
        session = _sqlite_session(folder)
        fill(session, items, loop)
        return session
    from fsstore.integrations.agents import FsstoreSession

    durability, shared = CONTENDERS[name]
    path = os.path.join(folder, "fsstore")
    with FsstoreSession("bench", fsstore.open_store(path), shared=False) as filling:
        fill(filling, items, loop)
    return FsstoreSession("bench", fsstore.open_store(path, durability=durability),
                          shared=shared)


def add_rate(session: Any, items: list[dict[str, Any]],
             loop: asyncio.AbstractEventLoop) -> float:
    """Items a second, one per ``add_items`` call, each durable when the call returns
    (at the session's durability)."""
    gc.collect()
    start = time.perf_counter()
    for item in items:
        loop.run_until_complete(session.add_items([item]))
    return len(items) / (time.perf_counter() - start)


def first_read(name: str, folder: str, loop: asyncio.AbstractEventLoop, times: int,
               store: Any = None) -> float:
    """Median ms of the first ``get_items(limit=50)`` of a session object just made on
    contender ``name``'s session (made and closed untimed): FsstoreSession's on
    ``store`` (an open Store, as a server keeps one: the objects made before it left
    their opened session and copy for the next), or on a Store object of its own each
    time (as a new process does: opened and read afresh)."""
    from fsstore.integrations import agents_pool

    samples = []
    for _ in range(times):
        if name == "SQLiteSession":
            session = _sqlite_session(folder)
        else:
            from fsstore.integrations.agents import FsstoreSession

            durability, shared = CONTENDERS[name]
            if store is None:
                agents_pool.close_idle()  # nothing kept from the object before
            own = store or fsstore.open_store(os.path.join(folder, "fsstore"),
                                              durability=durability)
            session = FsstoreSession("bench", own, shared=shared)
        start = time.perf_counter()
        loop.run_until_complete(session.get_items(limit=50))
        samples.append(time.perf_counter() - start)
        session.close()
    return statistics.median(samples) * 1000


def concurrent_rate(session: Any, items: list[dict[str, Any]],
                    loop: asyncio.AbstractEventLoop, width: int) -> float:
    """Items a second, added by ``width`` concurrent ``add_items([item])`` calls at a
    time (``asyncio.gather``), as the tasks of one process writing one session do."""
    async def crowd(some: list[dict[str, Any]]) -> None:
        await asyncio.gather(*(session.add_items([item]) for item in some))

    gc.collect()
    start = time.perf_counter()
    for begin in range(0, len(items), width):
        loop.run_until_complete(crowd(items[begin:begin + width]))
    return len(items) / (time.perf_counter() - start)


def read_after_adds(session: Any, items: list[dict[str, Any]],
                    loop: asyncio.AbstractEventLoop) -> float:
    """Median ms of ``get_items(limit=50)`` run right after each ``add_items([item])``
    (the adds not timed)."""
    samples = []
    for item in items:
        loop.run_until_complete(session.add_items([item]))
        start = time.perf_counter()
        loop.run_until_complete(session.get_items(limit=50))
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def agents_rows(root: str, quick: bool) -> None:
    try:
        import agents  # noqa: F401
    except ImportError:
        print("\nAgents SDK sessions: skipped (pip install 'fsstore[agents]')")
        return
    adds, laps, reads, whole, fresh = ((300, 3, 200, 5, 15) if quick
                                       else (1_000, 10, 1_000, 15, 50))
    items = [item for _, item in conversation(SIZE + adds)]
    held, added = items[:SIZE], items[SIZE:]
    names = ["SQLiteSession", *CONTENDERS]
    print("\nThe OpenAI Agents SDK's session memory: FsstoreSession beside SQLiteSession "
          "(WAL, synchronous FULL)")
    loop = asyncio.new_event_loop()
    sessions: dict[str, Any] = {}
    folders: dict[str, str] = {}
    try:
        for name in names:
            folders[name] = folder = tempfile.mkdtemp(dir=root)
            sessions[name] = open_contender(name, folder, held, loop)
        print(f"\nget_items(limit=50) at {SIZE:,} items, the first call of a session object "
              f"just made, median ms of {fresh} objects; FsstoreSession on a Store of its "
              "own each time (a new process: opening, then reading the newest messages)")
        first = {name: first_read(name, folders[name], loop, fresh) for name in names}
        for name in CONTENDERS:
            row(f"{name}: first get_items(limit=50)", f"{first[name]:.3f} ms",
                ratio(first[name], first["SQLiteSession"], "SQLiteSession's time"))
        row("  SQLiteSession: first get_items(limit=50)", f"{first['SQLiteSession']:.3f} ms")
        print("\nThe same, each FsstoreSession made on one open Store (a server's object per "
              "request: the session its predecessor opened is kept open for it)")
        for name in CONTENDERS:
            durability = CONTENDERS[name][0]
            kept = fsstore.open_store(os.path.join(folders[name], "fsstore"),
                                      durability=durability)
            warm = first_read(name, folders[name], loop, fresh, kept)
            row(f"{name}: first get_items(limit=50)", f"{warm:.3f} ms",
                ratio(warm, first["SQLiteSession"], "SQLiteSession's time"))
        row("  SQLiteSession: first get_items(limit=50)", f"{first['SQLiteSession']:.3f} ms")

        print(f"\nget_items(limit=50) at {SIZE:,} items, median ms of {reads} calls (the "
              "first made FsstoreSession's copy of the newest messages)")
        read_ms = {}
        for name in names:
            session = sessions[name]
            assert len(loop.run_until_complete(session.get_items(limit=50))) == 50
            read_ms[name] = median_ms(lambda s=session: loop.run_until_complete(
                s.get_items(limit=50)), reads)
        for name in CONTENDERS:
            row(f"{name}: get_items(limit=50)", f"{read_ms[name]:.3f} ms",
                ratio(read_ms[name], read_ms["SQLiteSession"], "SQLiteSession's time"))
        row("  SQLiteSession: get_items(limit=50)", f"{read_ms['SQLiteSession']:.3f} ms")

        # What a Runner reads each turn when no limit is set: the whole conversation.
        print(f"\nget_items() (every item) at {SIZE:,} items, median ms of {whole} calls")
        all_ms = {name: median_ms(lambda s=sessions[name]: loop.run_until_complete(
            s.get_items()), whole) for name in names}
        for name in CONTENDERS:
            row(f"{name}: get_items()", f"{all_ms[name]:.1f} ms",
                ratio(all_ms[name], all_ms["SQLiteSession"], "SQLiteSession's time"))
        row("  SQLiteSession: get_items()", f"{all_ms['SQLiteSession']:.1f} ms")

        # An FsstoreSession that has read the whole session keeps the items' texts, and
        # brings them up to date through the message index before each read.
        print(f"\nget_items(limit=50) again, after those whole reads, median ms of {reads} "
              "calls")
        again = {name: median_ms(lambda s=sessions[name]: loop.run_until_complete(
            s.get_items(limit=50)), reads) for name in names}
        for name in CONTENDERS:
            row(f"{name}: get_items(limit=50)", f"{again[name]:.3f} ms",
                ratio(again[name], again["SQLiteSession"], "SQLiteSession's time"))
        row("  SQLiteSession: get_items(limit=50)", f"{again['SQLiteSession']:.3f} ms")

        print(f"\nadd_items([item]) to those sessions, {adds:,} calls a lap, median of {laps} "
              "laps")
        rates: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(laps):  # laps interleaved, so a busy moment hits every contender
            for name in names:
                rates[name].append(add_rate(sessions[name], added, loop))
        rate = {name: statistics.median(values) for name, values in rates.items()}
        sqlite = rate["SQLiteSession"]
        for name in CONTENDERS:
            row(f"{name}: add_items([item])", f"{rate[name]:,.0f}/s",
                ratio(rate[name], sqlite, "SQLiteSession"))
        row("  SQLiteSession: add_items([item])", f"{sqlite:,.0f}/s")

        width = 20
        print(f"\nadd_items([item]) by {width} concurrent calls at a time, {adds:,} items a "
              f"lap, median of {laps} laps (FsstoreSession writes the calls queued behind "
              "one write as one batch: one fdatasync)")
        crowd: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(laps):
            for name in names:
                crowd[name].append(concurrent_rate(sessions[name], added, loop, width))
        together = {name: statistics.median(values) for name, values in crowd.items()}
        for name in CONTENDERS:
            row(f"{name}: {width} concurrent add_items", f"{together[name]:,.0f}/s",
                ratio(together[name], together["SQLiteSession"], "SQLiteSession"))
        row(f"  SQLiteSession: {width} concurrent add_items",
            f"{together['SQLiteSession']:,.0f}/s")

        # As a Runner with a limit reads: the read right after each add.
        print(f"\nget_items(limit=50) right after an add_items([item]), median ms of {adds} "
              "reads")
        after = {name: read_after_adds(sessions[name], added, loop) for name in names}
        for name in CONTENDERS:
            row(f"{name}: get_items(limit=50)", f"{after[name]:.3f} ms",
                ratio(after[name], after["SQLiteSession"], "SQLiteSession's time"))
        row("  SQLiteSession: get_items(limit=50)", f"{after['SQLiteSession']:.3f} ms")
    finally:
        for session in sessions.values():
            session.close()
        loop.close()
