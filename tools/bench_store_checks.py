"""``fsstore verify`` and ``fsstore stats`` of the stores of tools/bench_store_scale.py:
the whole store read, so the figure to watch is the time per session, which must not
grow with the store (no per-session work that lists or reads every session).
A program, not a test."""

from __future__ import annotations

import time

from bench import row  # type: ignore[import-not-found]

import fsstore


def check_rows(path: str, size: int, first: dict[str, float], smallest: int) -> None:
    store = fsstore.open_store(path)
    count = len(store.session_ids())
    for key, label, fn in (
            ("verify", "Store.verify() (fsstore verify)", store.verify),
            ("stats", "Store.stats(use_cache=False) (fsstore stats --no-cache)",
             lambda: store.stats(use_cache=False)),
            ("stats-cached", "Store.stats() (cache warm)", store.stats)):
        if key == "stats-cached":
            store.stats()  # the cache filled
        start = time.perf_counter()
        fn()
        seconds = time.perf_counter() - start
        each = seconds / count
        ratio = ""
        if size == smallest:
            first[key] = each
        elif key in first:
            ratio = f"{each / first[key]:.1f}x the {smallest:,} store's per session"
        row(f"{size:,}: {label}", f"{seconds:,.1f} s",
            f"{each * 1e3:.2f} ms a session; {ratio}".rstrip("; "))
