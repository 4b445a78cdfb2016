"""How listing a store's sessions grows with the store: stores of 1,000, 10,000 and
100,000 small sessions, each listed through the store catalog (fsstore/catalog.py).

    python3 tools/bench.py --store-scale-only           # 1,000, 10,000 and 100,000
    python3 tools/bench.py --store-scale-only --quick   # 1,000 and 10,000

Four sessions are written through the API (a title, tags, metadata and a few events
each); the store's other sessions are copies of their folders under new ids, each
manifest rewritten with its id, title, tags (one session in a hundred is tagged
``rare``) and times: what a listing reads of each (its manifest, the end of its log)
is the same as for a session written through the API. Each copy is a few ``mkdir`` and
``copyfile`` calls of files under a KiB, so 100,000 are built in a minute or two,
where the API takes about 25 ms a session (its fsyncs and lock files).
Stores are built once and kept for the next run, in ``fsstore-store-scale-2/SIZE`` next
to the run's temp folder (under ``--dir``, else the system's temp folder); delete that
folder to build them again. Each store also holds a chain of 100 forks (``chain000``
to ``chain099``), made through the API once, for the lineage row. Timed with a warm
page cache, in this process; the 100,000 rows are also given as a ratio to the 1,000
ones. A program, not a test.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable

from bench import median_seconds, row  # type: ignore[import-not-found]
from bench_store_checks import check_rows  # type: ignore[import-not-found]
from bench_store_watch import watch_rows  # type: ignore[import-not-found]

import fsstore
from fsstore import catalog
from fsstore.chain import Mac
from fsstore.chain_bindings import MAC_KEY, manifest_mac

_SHAPES = 4


def _templates(folder: str) -> list[str]:
    # The default durability: each template's log ends at its synced mark, as a session
    # written through the API does (a store watcher's start reads no more of it then).
    store = fsstore.open_store(folder)
    found = []
    for number in range(_SHAPES):
        session_id = f"template{number}"
        if not store.has_session(session_id):
            with store.create_session(session_id, title=f"template {number}",
                                      tags=["bench"], metadata={"shape": number}) as session:
                for event in range(3 + number * 5):
                    session.append({"type": "note", "n": event})
        found.append(os.path.join(folder, "sessions", session_id))
    return found


def build(path: str, count: int) -> float:
    """The store at ``path`` filled to ``count`` sessions; the seconds it took (0 when it
    was already built)."""
    done = os.path.join(path, "built")
    if os.path.exists(done):
        return 0.0
    start = time.perf_counter()
    shutil.rmtree(path, ignore_errors=True)
    shapes = _templates(path + "-templates")
    store = fsstore.open_store(path, durability="none")
    manifests = []
    for folder in shapes:
        with open(os.path.join(folder, "session.json"), encoding="utf-8") as file:
            manifests.append(json.load(file))
    sessions = os.path.join(store.path, "sessions")
    files = [_files(folder) for folder in shapes]
    base = time.time() - count  # one second apart, the newest now
    for number in range(count):
        session_id = f"s{number:06d}"
        _copy(files[number % _SHAPES], os.path.join(sessions, session_id))
        data = dict(manifests[number % _SHAPES])
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(base + number))
        data.update(id=session_id, title=f"session {number}", created=stamp, updated=stamp,
                    tags=["bench", "rare"] if number % 100 == 7 else ["bench"])
        if data.get("chain") is not None:
            # the manifest's MAC covers the title and tags: sealed again, as a writer does
            data["chain"] = dict(data["chain"])
            data["chain"][MAC_KEY] = manifest_mac(Mac(), data).hex()
        with open(os.path.join(sessions, session_id, "session.json"), "w",
                  encoding="utf-8") as file:
            file.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
    with open(done, "w") as file:
        file.write(f"{count}\n")
    return time.perf_counter() - start


def _files(folder: str) -> list[tuple[str, str | None]]:
    """A template session's folders (source None) and small files, relative, parents
    first; its ``session.json`` is left out (each copy writes its own)."""
    found: list[tuple[str, str | None]] = []
    for parent, folders, names in os.walk(folder):
        relative = os.path.relpath(parent, folder)
        if relative != ".":
            found.append((relative, None))
        for name in sorted(names):
            if relative != "." or name != "session.json":
                found.append((os.path.normpath(os.path.join(relative, name)),
                              os.path.join(parent, name)))
        folders.sort()
    return found


def _copy(files: list[tuple[str, str | None]], folder: str) -> None:
    """A copy of a template session at ``folder``: its folders made and its files
    copied byte for byte (``copyfile``: no metadata calls, a few small files each)."""
    os.mkdir(folder)
    for relative, source in files:
        target = os.path.join(folder, relative)
        if source is None:
            os.mkdir(target)
        else:
            shutil.copyfile(source, target)


#: How deep the fork chain a lineage is timed on goes.
CHAIN = 100


def chain(path: str, depth: int = CHAIN) -> str:
    """A chain of ``depth`` forks in the store at ``path`` (``chain000`` a new session,
    each next one a fork of the one before), made once; the deepest one's id."""
    store = fsstore.open_store(path, durability="none")
    last = f"chain{depth - 1:03d}"
    if store.has_session(last):
        return last
    if not store.has_session("chain000"):
        with store.create_session("chain000", title="chain") as session:
            session.append({"type": "note"})
    for number in range(1, depth):
        session_id = f"chain{number:03d}"
        if not store.has_session(session_id):
            store.fork_session(f"chain{number - 1:03d}", session_id).close()
    return last


def store_scale_rows(root: str, quick: bool) -> None:
    sizes = (1_000, 10_000) if quick else (1_000, 10_000, 100_000)
    cache = os.path.join(os.path.dirname(os.path.abspath(root)), "fsstore-store-scale-2")
    print("\nListing stores of many sessions (the store catalog), median of 5 unless "
          "said, warm page cache")
    first: dict[str, float] = {}
    checks: dict[str, float] = {}
    watched: dict[str, float] = {}
    for size in sizes:
        path = os.path.join(cache, str(size))
        built = build(path, size)
        deepest = chain(path)
        print(f"  {size:,} sessions in {path}" + (
            f" (built in {built:.1f} s)" if built else " (built before)"))
        time.sleep(catalog.SETTLE_NS / 1e9)  # a quiet store: no racy stamps
        for name in (catalog.snapshot_path(path), catalog.journal_path(path)):
            if os.path.exists(name):
                os.unlink(name)
        _size_rows(path, size, sizes[0], first, deepest)
        watch_rows(path, size, watched, sizes[0])
        if size <= 10_000:
            check_rows(path, size, checks, sizes[0])


def _size_rows(path: str, size: int, smallest: int, first: dict[str, float],
               deepest: str) -> None:
    store = fsstore.open_store(path)
    start = time.perf_counter()
    store.list_page(limit=100)
    rebuild = time.perf_counter() - start
    row(f"{size:,}: catalog rebuild (first listing)", f"{rebuild * 1e3:,.0f} ms",
        f"{rebuild / size * 1e6:.0f} us a session; catalog of "
        f"{os.path.getsize(catalog.snapshot_path(path)):,} B")
    ids = store.session_ids()
    rare = [i.id for i in store.list_sessions(tags=["rare"])]
    assert len(rare) == size // 100, len(rare)
    assert len(store.lineage(deepest).ancestors) == CHAIN - 1
    cases: list[tuple[str, str, Callable[[], object], int]] = [
        ("open_store", "open", lambda: fsstore.open_store(path), 5),
        ("first page (limit 100, order updated)", "page",
         lambda: store.list_page(limit=100, order="updated"), 5),
        ("filtered page (tag held by 1%, limit 10)", "filtered-page",
         lambda: store.list_page(tags=["rare"], limit=10), 5),
        ("filtered, every match (tag held by 1%)", "filtered",
         lambda: store.list_sessions(tags=["rare"]), 5),
        ("title page (title held by ~11%, limit 10)", "title",
         lambda: store.list_page(title="session 7", limit=10), 5),
        ("has_session (1,000 calls)", "has",
         lambda: [store.has_session(i) for i in ids[:1000]], 5),
        ("session_ids", "ids", store.session_ids, 5),
        (f"lineage of a fork {CHAIN - 1} deep (its ancestors and tree)", "lineage",
         lambda: store.lineage(deepest), 5),
        ("list_sessions() (every session read)", "full", store.list_sessions,
         1 if size >= 100_000 else 3),
    ]
    for label, key, fn, repeats in cases:
        seconds = median_seconds(fn, repeats)
        ratio = ""
        if size == smallest:
            first[key] = seconds
        elif key in first:
            ratio = f"{seconds / first[key]:.1f}x the {smallest:,} store"
        row(f"{size:,}: {label}", f"{seconds * 1e3:,.1f} ms", ratio)
    page = store.list_page(limit=100)
    assert len(page.sessions) == 100 and page.next_cursor is not None
