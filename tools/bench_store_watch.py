"""How ``Store.watch`` grows with the store: the inotify watches it holds, the time to
start it (every session's head and log start read once, fsstore/watch_start.py), and the
time from an append in one session to the store watcher's notification (min and
median), in the stores of tools/bench_store_scale.py; at the larger stores, also as a
ratio to the smallest. A program, not a test."""

from __future__ import annotations

import statistics
import threading
import time

from bench import row  # type: ignore[import-not-found]

import fsstore
from fsstore import store_watch

APPENDS = 20


def watch_rows(path: str, size: int, first: dict[str, float] | None = None,
               smallest: int = 0) -> None:
    """The rows of the store at ``path`` (``size`` sessions); ``first`` keeps the
    smallest store's figures (``smallest`` sessions) for the ratios of the others."""
    store = fsstore.open_store(path)  # appends written at once (not buffered)
    if not store.has_session("watched"):
        store.create_session("watched", title="watched").close()
    start = time.perf_counter()
    seen: dict[int, float] = {}
    arrived = threading.Event()

    def note(change: fsstore.SessionChange) -> None:
        if change.session_id == "watched" and change.head is not None:
            seen[change.head] = time.perf_counter()
            arrived.set()

    watcher = store.watch(poll_interval=1.0)
    started = time.perf_counter() - start
    notifier = watcher._notifier
    watches = notifier.watches if isinstance(notifier, store_watch.SessionsNotifier) else None
    watcher.start(note)
    delays = []
    try:
        with store.open_session("watched") as session:
            for _ in range(APPENDS):
                arrived.clear()
                appended = time.perf_counter()
                session.append({"type": "note"})
                head = session.head
                deadline = time.monotonic() + 30
                while head not in seen and time.monotonic() < deadline:
                    arrived.wait(0.5)
                delays.append(seen[head] - appended)
                time.sleep(0.02)
    finally:
        watcher.close()
    median = statistics.median(delays)
    ratio = ""
    if first is not None:
        if size == smallest:
            first["watch-median"] = median
        elif "watch-median" in first:
            ratio = f"; {median / first['watch-median']:.1f}x the {smallest:,} store"
    row(f"{size:,}: Store.watch(): start (every head read once)", f"{started * 1e3:,.0f} ms",
        f"{started / size * 1e6:.0f} us a session; inotify watches held: "
        f"{watches if watches is not None else 'none (polling)'}")
    row(f"{size:,}: append to notification, min / median of {APPENDS}",
        f"{min(delays) * 1e3:,.2f} / {median * 1e3:,.2f} ms",
        f"max {max(delays) * 1e3:,.2f} ms{ratio}")
