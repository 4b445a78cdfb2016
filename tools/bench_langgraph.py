"""fsstore's LangGraph checkpointer side by side with SqliteSaver and InMemorySaver.

    python3 tools/bench.py --langgraph-only           # 200 steps, 100 -> 500 messages
    python3 tools/bench.py --langgraph-only --quick   # the same conversation, fewer repeats

The three savers get the same work: a conversation of 100 messages of about 1 KiB that
grows by 2 messages per step, checkpointed 200 times as LangGraph's loop does (the whole
state in ``channel_values``, the changed channel in ``new_versions``); then the latest
``get_tuple``; then full graph ``invoke`` calls (3 puts, 2 put_writes, 1 get_tuple each).
SqliteSaver runs with its defaults: WAL, and SQLite's synchronous FULL, so each put is
fsynced; fsstore runs with its default durability (``flush``: a put reaches the OS) and
with ``fsync``, the same promise as SqliteSaver's. Bytes written are what the process handed to
write() (``wchar`` in /proc/self/io), so SQLite's WAL frames count as fsstore's log does.
A program, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import gc
import os
import sqlite3
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from bench import ratio, row  # type: ignore[import-not-found]

STEPS = 200
START_MESSAGES = 100
MESSAGE_BYTES = 1024


def _written() -> int:
    """Bytes this process has passed to write() so far (Linux), else 0."""
    try:
        with open("/proc/self/io", encoding="ascii") as file:
            for line in file:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _message(number: int) -> Any:
    from langchain_core.messages import AIMessage, HumanMessage

    kind = HumanMessage if number % 2 == 0 else AIMessage
    text = (f"message {number}: " + "the deploy script quotes its first argument " * 30)
    return kind(content=text[:MESSAGE_BYTES], id=f"msg-{number:06d}")


def _savers(folder: str) -> list[tuple[str, Callable[[], Any]]]:
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.checkpoint.sqlite import SqliteSaver

    from fsstore.integrations.langgraph import FsstoreSaver

    def sqlite_saver() -> Any:
        path = os.path.join(folder, f"sqlite-{time.monotonic_ns()}.db")
        return SqliteSaver(sqlite3.connect(path, check_same_thread=False))

    def fsstore_saver(durability: str) -> Callable[[], Any]:
        return lambda: FsstoreSaver(os.path.join(folder, f"fsstore-{time.monotonic_ns()}"),
                                    durability=durability)

    return [("fsstore", fsstore_saver("flush")),
            ("fsstore fsync", fsstore_saver("fsync")),
            ("SqliteSaver", sqlite_saver), ("InMemorySaver", InMemorySaver)]


def _conversation_puts(saver: Any, thread: str) -> tuple[list[float], list[int]]:
    """Checkpoint the growing conversation STEPS times as the Pregel loop does; the
    seconds and bytes written of each put."""
    from langgraph.checkpoint.base.id import uuid6

    messages = [_message(n) for n in range(START_MESSAGES)]
    config: dict[str, Any] = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    version = None
    seconds, written = [], []
    for step in range(STEPS):
        messages = messages + [_message(len(messages)), _message(len(messages) + 1)]
        seen = version
        version = saver.get_next_version(version, None)
        checkpoint = {
            "v": 4, "id": str(uuid6(clock_seq=step)),
            "ts": datetime.now(timezone.utc).isoformat(),
            "channel_values": {"messages": messages},
            "channel_versions": {"messages": version},
            "versions_seen": {"agent": {"messages": seen}} if seen else {},
            "updated_channels": ["messages"],
        }
        metadata = {"source": "loop", "step": step, "parents": {}}
        before, start = _written(), time.perf_counter()
        config = saver.put(config, checkpoint, metadata, {"messages": version})
        seconds.append(time.perf_counter() - start)
        written.append(_written() - before)
    return seconds, written


def _graph(saver: Any) -> Any:
    from typing import Annotated, TypedDict

    from langchain_core.messages import AIMessage, AnyMessage
    from langgraph.graph import END, START, StateGraph
    from langgraph.graph.message import add_messages

    # The functional form: this module's annotations are strings, which LangGraph could
    # not resolve for a class defined inside a function.
    State = TypedDict(  # noqa: UP013
        "State", {"messages": Annotated[list[AnyMessage], add_messages]})

    def agent(state: Any) -> dict[str, Any]:
        return {"messages": [AIMessage(content="ok " * 300)]}

    builder = StateGraph(State)
    builder.add_node("agent", agent)
    builder.add_edge(START, "agent")
    builder.add_edge("agent", END)
    return builder.compile(checkpointer=saver)


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def langgraph_rows(root: str, quick: bool) -> None:
    """Print the LangGraph rows: put at step 200, latest get_tuple, bytes per step and a
    full invoke, for fsstore's saver, SqliteSaver and InMemorySaver."""
    try:
        from langchain_core.messages import HumanMessage
        from langgraph.checkpoint.sqlite import SqliteSaver  # noqa: F401
    except ImportError:
        print("\nLangGraph: skipped (pip install 'fsstore[langgraph]')")
        return
    from fsstore.integrations.langgraph import FsstoreSaver

    folder = os.path.join(root, "langgraph")
    os.makedirs(folder, exist_ok=True)
    reads, invokes = (50, 20) if quick else (200, 100)
    print(f"\nLangGraph checkpointer: {START_MESSAGES} -> {START_MESSAGES + 2 * STEPS} "
          f"messages of ~1 KiB, {STEPS} steps")
    put_at: dict[str, float] = {}
    per_step: dict[str, float] = {}
    latest: dict[str, float] = {}
    invoke: dict[str, float] = {}
    cold = 0.0
    for name, make in _savers(folder):
        gc.collect()
        saver = make()
        seconds, written = _conversation_puts(saver, "bench")
        put_at[name] = _median_ms(seconds[-10:])  # steps 191-200
        per_step[name] = statistics.mean(written[-10:])
        config = {"configurable": {"thread_id": "bench", "checkpoint_ns": ""}}
        samples = []
        for _ in range(reads):
            start = time.perf_counter()
            saver.get_tuple(config)
            samples.append(time.perf_counter() - start)
        latest[name] = _median_ms(samples)
        if name == "fsstore":
            path = saver.store.path
            start = time.perf_counter()
            with FsstoreSaver(path) as fresh:  # opens the store, replays the thread's log
                fresh.get_tuple(config)
            cold = (time.perf_counter() - start) * 1000
        graph = _graph(saver)
        thread = {"configurable": {"thread_id": "invoke"}}
        graph.invoke({"messages": [_message(n) for n in range(START_MESSAGES)]}, thread)
        samples = []
        for turn in range(invokes):
            start = time.perf_counter()
            graph.invoke({"messages": [HumanMessage(content=f"turn {turn} " * 100)]}, thread)
            samples.append(time.perf_counter() - start)
        invoke[name] = _median_ms(samples)
        if hasattr(saver, "close"):
            saver.close()
        elif hasattr(saver, "conn"):
            saver.conn.close()
    others = [n for n in put_at if not n.startswith("fsstore")]
    for label, table, unit in (("put, step 200", put_at, "ms"),
                               ("get_tuple latest, step 200", latest, "ms"),
                               ("bytes written/step, 191-200", per_step, "B"),
                               (f"invoke x{invokes}, 1 node", invoke, "ms")):
        for name in table:
            value = table[name]
            shown = f"{value:,.0f} {unit}" if unit == "B" else f"{value:.3f} {unit}"
            extra = ([ratio(table[other], value, f"faster than {other}") if unit == "ms"
                      else ratio(table[other], value, f"fewer than {other}") for other in others
                      if table[other] > 0]
                     if name.startswith("fsstore") else [])
            row(f"{label}, {name}", shown, *extra)
    row("get_tuple latest, new saver (reads the log)", f"{cold:.3f} ms")
