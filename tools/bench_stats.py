"""How long ``Store.stats()`` (``fsstore stats``) and ``Store.disk_usage()`` (``fsstore
du``) take on a store of many sessions.

    python3 tools/bench.py --stats-only           # stores of 1,000 and 10,000 sessions
    python3 tools/bench.py --stats-only --quick   # a store of 1,000 sessions

Each session is an agent's short run: three turns of messages and events, a few state
keys, a queued job and a turn input, written through the API once. The store's other
sessions are copies of that folder under new ids (its manifest rewritten with the id):
what ``stats`` reads of each (listings, headers, the end of the log, the state) is the
same as for a session written through the API, and building 10,000 of them takes
seconds, not minutes. Timed with a warm page cache, in this process. A program, not a
test: nothing here asserts a time.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time

from bench import row  # type: ignore[import-not-found]

import fsstore


def template_session(store: fsstore.Store) -> str:
    """One session written through the API; its folder."""
    with store.create_session("template", title="a short agent run") as session:
        for turn in range(1, 4):
            session.messages.append({"role": "user", "content": f"step {turn}, please",
                                     "id": f"u{turn}"})
            session.append({"tool": "search", "args": {"q": f"step {turn}"}}, kind="tool_call")
            session.append({"output": "found 3 files"}, kind="tool_result")
            session.messages.append({"role": "assistant", "content": "done",
                                     "id": f"a{turn}", "metadata": {"model": "m"},
                                     "usage": {"input_tokens": 812, "output_tokens": 31}})
            session.merge_state({"plan": [f"step {k}" for k in range(turn + 2)],
                                 "counters": {"turns": turn}})
            session.finish_turn()
        session.queue.enqueue("summarize", {"turns": 3})
        session.inputs.submit("one more thing")
    return os.path.join(store.path, "sessions", "template")


def fill(store: fsstore.Store, template: str, count: int) -> None:
    """Copies of ``template`` until the store holds ``count`` sessions."""
    with open(os.path.join(template, "session.json"), encoding="utf-8") as file:
        manifest = json.load(file)
    have = len(store.session_ids())
    sessions = os.path.dirname(template)
    for number in range(have, count):
        session_id = f"s{number:06d}"
        folder = os.path.join(sessions, session_id)
        shutil.copytree(template, folder)
        manifest["id"] = session_id
        with open(os.path.join(folder, "session.json"), "w", encoding="utf-8") as file:
            file.write(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def timed(fn: object, repeats: int) -> float:
    """The median of ``repeats`` calls, in seconds."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def stats_rows(root: str, quick: bool) -> None:
    sizes = (1_000,) if quick else (1_000, 10_000)
    store = fsstore.open_store(os.path.join(root, "stats"))
    template = template_session(store)
    print("\nStore stats (fsstore stats, fsstore du), median of 3, warm cache; sessions of "
          f"{fsstore.open_store(store.path).read_session('template').head} records each")
    for size in sizes:
        start = time.perf_counter()
        fill(store, template, size)
        built = time.perf_counter() - start
        store.stats()  # warm the page cache
        found = store.stats()
        assert found.sessions == size and not found.damaged, found.damaged
        seconds = timed(store.stats, 3)
        row(f"Store.stats(), {size:,} sessions", f"{seconds:.3f} s",
            f"{seconds / size * 1e6:.0f} us a session (built in {built:.1f} s)")
        seconds = timed(store.disk_usage, 3)
        row(f"Store.disk_usage(), {size:,} sessions", f"{seconds:.3f} s",
            f"{seconds / size * 1e6:.0f} us a session")
