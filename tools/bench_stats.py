"""How long ``Store.stats()`` (``fsstore stats``) and ``Store.disk_usage()`` (``fsstore
du``) take on a store of many sessions.

    python3 tools/bench.py --stats-only           # stores of 1,000 and 10,000 sessions
    python3 tools/bench.py --stats-only --quick   # a store of 1,000 sessions

The sessions are agents' runs of four shapes, written through the API once and copied
in turn (every fourth session is of the same shape):

- a short run: three turns of messages and tool events, a few state keys, a queued job
  and a turn input (no snapshot: its whole log is the fold);
- the same short run, once more (most sessions of a store are short);
- a longer run with a snapshot: twelve turns, a message edited and one deleted, queue
  items in every status, inputs consumed and pending, two attachments, a checkpoint,
  the snapshot taken mid-run and more records after it;
- a long run whose log was compacted: sixty turns over many small segments, merged
  into compacted ones by ``Store.compact``, a snapshot, and a few records after it in
  a plain segment.

The store's other sessions are copies of those folders under new ids (each manifest
rewritten with its id): what ``stats`` reads of each (listings, headers, the end of the
log, the state) is the same as for a session written through the API, and building
10,000 of them takes seconds, not minutes. Timed with a warm page cache, in this
process. ``Store.stats`` is timed cold (``use_cache=False``: every session counted) and
warm (every session answered from the store's stats cache, fsstore/stats_cache.py).
A program, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import json
import os
import shutil
import time

from bench import median_seconds, row  # type: ignore[import-not-found]

import fsstore
from fsstore import stats_cache


def _short_run(session: fsstore.Session, turns: int, first: int = 1) -> None:
    for turn in range(first, first + turns):
        session.messages.append({"role": "user", "content": f"step {turn}, please",
                                 "id": f"u{turn}"})
        session.append({"tool": "search", "args": {"q": f"step {turn}"}}, kind="tool_call")
        session.append({"output": "found 3 files"}, kind="tool_result")
        session.messages.append({"role": "assistant", "content": "done",
                                 "id": f"a{turn}", "metadata": {"model": "m"},
                                 "usage": {"input_tokens": 812, "output_tokens": 31}})
        session.merge_state({"plan": [f"step {k}" for k in range(turn % 5 + 2)],
                             "counters": {"turns": turn}})
        session.finish_turn()


def template_session(store: fsstore.Store) -> str:
    """A short run written through the API; its folder."""
    with store.create_session("template", title="a short agent run") as session:
        _short_run(session, 3)
        session.queue.enqueue("summarize", {"turns": 3})
        session.inputs.submit("one more thing")
    return os.path.join(store.path, "sessions", "template")


def _snapshotted_session(store: fsstore.Store) -> str:
    with store.create_session("template-snapshot", title="a run with a snapshot") as session:
        _short_run(session, 8)
        session.messages.edit({"role": "assistant", "content": "done, and checked",
                                "id": "a2"})
        session.messages.delete("u3")
        for kind in ("index", "summarize", "review", "notify", "archive"):
            session.queue.enqueue(kind, {"what": kind}, max_attempts=1)
        session.queue.complete(session.queue.claim("w1", 60))
        session.queue.claim("w2", 60)
        session.queue.fail(session.queue.claim("w3", 60), "gave up")  # dead: one attempt
        session.inputs.submit("look at the logs too")
        session.inputs.claim()
        session.blobs.put(b"screenshot " * 400, "image/png")
        session.blobs.put(b"test output\n" * 200, "text/plain")
        session.set_state("notes", {"n": list(range(40))})
        session.checkpoint("after step 8")
        session.snapshot()
        _short_run(session, 4, first=9)
        session.inputs.submit("and the docs")
    return os.path.join(store.path, "sessions", "template-snapshot")


def _compacted_session(root: str) -> str:
    """A long run in a store of small segments, compacted; its folder."""
    small = fsstore.open_store(os.path.join(root, "small-segments"), segment_size=8192)
    with small.create_session("template-compacted", title="a long compacted run") as session:
        _short_run(session, 50)
        session.queue.enqueue("summarize", {"turns": 50})
        session.snapshot()
        _short_run(session, 10, first=51)
    small.compact(["template-compacted"])
    with small.open_session("template-compacted") as session:
        _short_run(session, 2, first=61)
    return os.path.join(small.path, "sessions", "template-compacted")


def templates(store: fsstore.Store, root: str) -> list[str]:
    """The folders of one session of each shape (see the module's docstring)."""
    short = template_session(store)
    return [short, short, _snapshotted_session(store), _compacted_session(root)]


def fill(store: fsstore.Store, template: str | list[str], count: int) -> None:
    """Copies of ``template`` (of each in turn, for a list) until the store holds
    ``count`` sessions."""
    shapes = [template] if isinstance(template, str) else template
    manifests = []
    for folder in shapes:
        with open(os.path.join(folder, "session.json"), encoding="utf-8") as file:
            manifests.append(json.load(file))
    have = len(store.session_ids())
    sessions = os.path.join(store.path, "sessions")
    for number in range(have, count):
        session_id = f"s{number:06d}"
        folder = os.path.join(sessions, session_id)
        shutil.copytree(shapes[number % len(shapes)], folder)
        manifest = manifests[number % len(shapes)]
        manifest["id"] = session_id
        with open(os.path.join(folder, "session.json"), "w", encoding="utf-8") as file:
            file.write(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def stats_rows(root: str, quick: bool) -> None:
    sizes = (1_000,) if quick else (1_000, 10_000)
    store = fsstore.open_store(os.path.join(root, "stats"))
    shapes = templates(store, root)
    records = [fsstore.open_store(os.path.dirname(os.path.dirname(folder))).read_session(
        os.path.basename(folder)).head for folder in shapes]
    print("\nStore stats (fsstore stats, fsstore du), median of 3, warm cache; sessions of "
          f"{', '.join(map(str, records))} records in turn")
    for size in sizes:
        start = time.perf_counter()
        fill(store, shapes, size)
        built = time.perf_counter() - start
        store.stats(use_cache=False)  # warm the page cache
        found = store.stats(use_cache=False)
        assert found.sessions == size and not found.damaged, found.damaged
        seconds = median_seconds(lambda: store.stats(use_cache=False), 3)
        row(f"Store.stats(), {size:,} sessions, cold", f"{seconds:.3f} s",
            f"{seconds / size * 1e6:.0f} us a session, no stats cache "
            f"(built in {built:.1f} s)")
        # A session changed in the last SETTLED seconds is never cached (the racy
        # rule): wait until the sessions just written are that old.
        time.sleep(stats_cache.SETTLED / 1e9)
        start = time.perf_counter()
        stats_cache.cached_store_stats(store.io, store.path, store.session_ids())
        seconds = time.perf_counter() - start
        row(f"Store.stats(), {size:,} sessions, first", f"{seconds:.3f} s",
            f"{seconds / size * 1e6:.0f} us a session, counting each and writing the "
            "stats cache")
        cached, use = stats_cache.cached_store_stats(store.io, store.path,
                                                     store.session_ids())
        assert use.hits == size and cached == found, use
        seconds = median_seconds(store.stats, 3)
        row(f"Store.stats(), {size:,} sessions, warm", f"{seconds:.3f} s",
            f"{seconds / size * 1e6:.0f} us a session, every one answered from the stats "
            f"cache ({os.path.getsize(stats_cache.cache_path(store.path)) / 1e6:.1f} MB)")
        seconds = median_seconds(store.disk_usage, 3)
        row(f"Store.disk_usage(), {size:,} sessions", f"{seconds:.3f} s",
            f"{seconds / size * 1e6:.0f} us a session")
