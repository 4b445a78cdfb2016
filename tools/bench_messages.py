"""fsstore's messages side by side with the OpenAI Agents SDK's SQLiteSession.

    python3 tools/bench.py --messages-only           # 100k appends; reads at 1k, 100k, 1M
    python3 tools/bench.py --messages-only --quick   # 10k appends; reads at 1k, 10k, 100k

SQLiteSession (``pip install 'fsstore[bench]'``) keeps a conversation in SQLite in WAL
mode, synchronous FULL (its default): every ``add_items`` call is a durable commit. The
two get the same conversation: an fsstore message and the Responses API item the SDK
stores for it. Appends are compared at the same durability (fsstore ``fsync``). A
program, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import statistics
import tempfile
import time
from typing import Any

from bench import median_ms, ratio, row  # type: ignore[import-not-found]

import fsstore

WORDS = ("the build fails when deploy runs with an empty cache so we retry the step and "  # noqa: SIM905
         "read config files from disk before parsing every line of output").split()


def conversation(count: int, seed: int = 7) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``count`` messages as (fsstore message, Responses API item) pairs: a user asks, the
    assistant calls a tool, the tool answers, the assistant replies with its usage."""
    rng = random.Random(seed)

    def text(low: int, high: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))

    pairs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for number in range(count):
        step = number % 4
        if step == 0:
            body = text(10, 40)
            pairs.append(({"role": "user", "parts": [{"type": "text", "text": body}]},
                          {"role": "user", "content": body}))
        elif step == 1:
            call = f"call_{number}"
            arguments = {"path": f"src/{rng.choice(WORDS)}.py", "pattern": rng.choice(WORDS)}
            pairs.append((
                {"role": "assistant", "parts": [{"type": "tool_call", "call_id": call,
                                                 "name": "grep", "arguments": arguments}]},
                {"type": "function_call", "call_id": call, "name": "grep",
                 "arguments": str(arguments).replace("'", '"')}))
        elif step == 2:
            call, output = f"call_{number - 1}", text(20, 80)
            pairs.append(({"role": "tool", "parts": [{"type": "tool_result", "call_id": call,
                                                      "output": output}]},
                          {"type": "function_call_output", "call_id": call,
                           "output": output}))
        else:
            body = text(20, 60)
            pairs.append((
                {"role": "assistant", "parts": [{"type": "text", "text": body}],
                 "metadata": {"model": "gpt-5-mini", "finish_reason": "stop",
                              "usage": {"input": rng.randint(500, 5000),
                                        "output": rng.randint(20, 400)},
                              "cost": {"amount": 0.0004}}},
                {"type": "message", "role": "assistant", "status": "completed",
                 "content": [{"type": "output_text", "text": body, "annotations": []}]}))
    return pairs


def _sqlite_session(folder: str) -> Any:
    from agents.memory import SQLiteSession  # the benchmark-only extra

    return SQLiteSession("bench", os.path.join(folder, "agents.db"))


def _fsstore_session(folder: str, durability: str) -> fsstore.Session:
    store = fsstore.open_store(os.path.join(folder, "fsstore"), durability=durability)
    return store.create_session("bench")


def append_rate(contender: str, pairs: list, root: str) -> float:
    """Messages per second, one per call, durable when each call returns."""
    folder = tempfile.mkdtemp(dir=root)
    gc.collect()
    if contender == "fsstore":
        session = _fsstore_session(folder, "fsync")
        append = session.messages.append
        start = time.perf_counter()
        for message, _ in pairs:
            append(message)
        elapsed = time.perf_counter() - start
        session.close()
    elif contender == "fsstore async":
        session = _fsstore_session(folder, "fsync")

        async def run_async() -> float:
            begin = time.perf_counter()
            for message, _ in pairs:
                await session.messages.aappend(message)
            return time.perf_counter() - begin
        elapsed = asyncio.run(run_async())
        session.close()
    else:
        agents = _sqlite_session(folder)

        async def run_sqlite() -> float:
            begin = time.perf_counter()
            for _, item in pairs:
                await agents.add_items([item])
            return time.perf_counter() - begin
        elapsed = asyncio.run(run_sqlite())
        agents.close()
    return len(pairs) / elapsed


def build(size: int, pairs: list, root: str) -> tuple[fsstore.Store, Any, list[str]]:
    """A conversation of ``size`` messages in each: fsstore appended one message per
    call (as an agent appends them), the SDK's in batches (its rows do not depend on
    how they came)."""
    folder = os.path.join(root, f"read-{size}")
    os.makedirs(folder)
    store = fsstore.open_store(os.path.join(folder, "fsstore"), durability="flush")
    ids = []
    with store.create_session("bench") as session:
        append = session.messages.append
        for number in range(size):
            message = pairs[number % len(pairs)][0]
            if number >= len(pairs) and message["role"] in ("assistant", "tool"):
                # tool results answer calls of this lap: rename the ids per lap
                message = _relabel(message, number // len(pairs))
            ids.append(append(message).id)
    agents = _sqlite_session(folder)

    async def fill() -> None:
        for start in range(0, size, 1000):
            await agents.add_items([pairs[n % len(pairs)][1]
                                    for n in range(start, min(start + 1000, size))])
    asyncio.run(fill())
    return store, agents, ids


def _relabel(message: dict[str, Any], lap: int) -> dict[str, Any]:
    parts = [dict(part, call_id=f"{part['call_id']}_{lap}") if "call_id" in part else part
             for part in message["parts"]]
    return {**message, "parts": parts}


def message_rows(root: str, quick: bool) -> None:
    try:
        import agents  # noqa: F401
    except ImportError:
        print("\nMessages: skipped (pip install 'fsstore[bench]' for SQLiteSession)")
        return
    count = 10_000 if quick else 100_000
    sizes = (1_000, 10_000, 100_000) if quick else (1_000, 100_000, 1_000_000)
    pairs = conversation(4_000)
    appended = (pairs * (count // len(pairs) + 1))[:count]
    appended = [(_relabel(m, n // len(pairs)) if n >= len(pairs) and m["role"] != "user"
                 else m, item) for n, (m, item) in enumerate(appended)]
    print(f"\nMessages beside the OpenAI Agents SDK's SQLiteSession (WAL, synchronous "
          f"FULL); {count:,} appends, one message per call")
    rates: dict[str, list[float]] = {"fsstore": [], "fsstore async": [], "sqlite": []}
    laps = 1 if count >= 100_000 else 3
    for _ in range(laps):
        for name in rates:
            rates[name].append(append_rate(name, appended, root))
    rate = {name: statistics.median(values) for name, values in rates.items()}
    row("fsstore messages.append, fsync each", f"{rate['fsstore']:,.0f}/s",
        ratio(rate["fsstore"], rate["sqlite"], "SQLiteSession"))
    row("fsstore await messages.aappend, fsync each", f"{rate['fsstore async']:,.0f}/s",
        ratio(rate["fsstore async"], rate["sqlite"], "SQLiteSession"))
    row("  SQLiteSession await add_items([item])", f"{rate['sqlite']:,.0f}/s")

    print("\nReading the last 50 messages, median ms (warm: the same reader again; cold: "
          "a reader opened for the call)")
    last: dict[int, float] = {}
    for size in sizes:
        store, agents, ids = build(size, pairs, root)
        reader = store.read_session("bench")
        reader.messages.last(50)
        last[size] = median_ms(lambda reader=reader: reader.messages.last(50), 300)
        cold = median_ms(lambda store=store: store.read_session("bench").messages.last(50),
                         30)
        loop = asyncio.new_event_loop()
        theirs = median_ms(lambda agents=agents, loop=loop: loop.run_until_complete(
            agents.get_items(limit=50)), 300)
        ours_async = median_ms(lambda reader=reader, loop=loop: loop.run_until_complete(
            reader.messages.alast(50)), 300)
        row(f"{size:>9,} messages: fsstore last(50)", f"{last[size]:.3f} ms",
            ratio(last[size], theirs, "SQLiteSession's time"),
            ratio(last[size], last[sizes[0]], f"the {sizes[0]:,}-message read"))
        row("    fsstore await alast(50)", f"{ours_async:.3f} ms",
            ratio(ours_async, theirs, "SQLiteSession's time"))
        row("    fsstore last(50), cold", f"{cold:.3f} ms")
        row("    SQLiteSession await get_items(limit=50)", f"{theirs:.3f} ms")
        if size == sizes[-1]:
            start = time.perf_counter()
            reader.messages.get(ids[0])
            first = (time.perf_counter() - start) * 1000
            pick = random.Random(1).choice
            get = median_ms(lambda r=reader, i=ids, p=pick: r.messages.get(p(i)),
                            1000)
            count_ms = median_ms(reader.messages.count, 300)
            row(f"{size:>9,} messages: fsstore get(id)", f"{get:.3f} ms",
                f"(the first get of a process: {first:.0f} ms, loading the index's hashes)")
            row("    fsstore count()", f"{count_ms:.3f} ms")
            index = os.path.getsize(os.path.join(reader.path, "messages.idx"))
            row("    messages.idx", f"{index / 2**20:.1f} MiB", f"({index / size:.0f} B a "
                "message)")
        loop.close()
        agents.close()
