"""fsstore side by side with what agents use today: SQLite in WAL mode and JSONL.

    python3 tools/bench.py            # 100k events (20k for the per-append fsync rows)
    python3 tools/bench.py --quick    # a smaller run, for a quick look

Every figure is the median of interleaved repetitions in one run on this machine; the
ratios between rows are what carries over to another machine, not the absolute numbers.
Vector search contenders (fsstore, faiss on 1 and on all threads) are each measured in a
process of their own, so that OpenMP and BLAS threads one leaves spinning do not slow the
next; this process never loads faiss. A program, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import msgpack  # noqa: E402
import msgspec  # noqa: E402

import fsstore  # noqa: E402
from fsstore import Durability  # noqa: E402
from fsstore.vacuum import KINDS as VACUUM_KINDS  # noqa: E402

GROUP_MS = 10
WORDS = (  # noqa: SIM905
    "the build fails when deploy runs with an empty cache so we retry the step and read "
    "config files from disk before parsing every line of output into tokens"
).split(" ")


def make_events(count: int) -> list[tuple[str, dict]]:
    """Realistic agent events of about 1 KiB each as msgpack: messages, tool calls and
    tool results in turn."""
    rng = random.Random(42)

    def text(low: int, high: int) -> str:
        words, size = [], 0
        limit = rng.randint(low, high)
        while size < limit:
            word = rng.choice(WORDS)
            words.append(word)
            size += len(word) + 1
        return " ".join(words)

    events = []
    for index in range(count):
        if index % 3 == 0:
            events.append(("message", {
                "role": rng.choice(("user", "assistant")), "content": text(700, 1000),
                "model": "local-coder-8b", "usage": {"input_tokens": rng.randint(100, 9000),
                                                      "output_tokens": rng.randint(5, 900)}}))
        elif index % 3 == 1:
            events.append(("tool_call", {
                "id": f"call_{index:07d}", "name": rng.choice(("read_file", "grep", "run_tests")),
                "args": {"path": f"src/module_{index % 97}.py", "pattern": text(600, 900)}}))
        else:
            events.append(("tool_result", {
                "call_id": f"call_{index - 1:07d}", "ok": rng.random() < 0.9,
                "output": text(750, 1000)}))
    return events


# --- appenders -----------------------------------------------------------------------------

def fsstore_append(durability: Durability) -> Callable[[str, list], None]:
    def run(folder: str, events: list) -> None:
        store = fsstore.open_store(os.path.join(folder, "store"), durability=durability)
        with store.create_session("bench") as session:
            append = session.append
            for kind, event in events:
                append(event, kind=kind)
    return run


def sqlite_append(synchronous: str, group: str | None = None) -> Callable[[str, list], None]:
    """One transaction per append, or with ``group``: ``"per-append"`` commits each append
    with synchronous=NORMAL and one every 10 ms with FULL (fsyncing the WAL); ``"batched"``
    keeps one transaction open for 10 ms at a time."""
    def run(folder: str, events: list) -> None:
        connection = sqlite3.connect(os.path.join(folder, "events.db"), isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA synchronous={synchronous}")
        connection.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, ts REAL, turn INTEGER, "
                           "kind TEXT, payload BLOB)")
        insert = "INSERT INTO events VALUES (?, ?, ?, ?, ?)"
        execute, pack = connection.execute, msgpack.packb
        last = time.monotonic()
        if group == "batched":
            execute("BEGIN")
        for seq, (kind, event) in enumerate(events, 1):
            due = group is not None and (time.monotonic() - last) * 1000 >= GROUP_MS
            if due and group == "per-append":
                execute("PRAGMA synchronous=FULL")
            execute(insert, (seq, time.time(), 1, kind, pack(event)))
            if due:
                if group == "per-append":
                    execute("PRAGMA synchronous=NORMAL")
                else:
                    execute("COMMIT")
                    execute("BEGIN")
                last = time.monotonic()
        if group == "batched":
            execute("COMMIT")
        elif group == "per-append":
            execute("PRAGMA synchronous=FULL")
            execute("BEGIN")
            execute("COMMIT")
        connection.close()
    return run


def jsonl_append(policy: str) -> Callable[[str, list], None]:
    """``flush`` each line, ``fsync`` each line, ``group``: flush each line and fsync every
    10 ms, ``buffered-group``: write and fsync every 10 ms, ``none``: buffered."""
    def run(folder: str, events: list) -> None:
        with open(os.path.join(folder, "events.jsonl"), "a") as handle:
            write, dumps, flush, fd = handle.write, json.dumps, handle.flush, handle.fileno()
            last = time.monotonic()
            for seq, (kind, event) in enumerate(events, 1):
                write(dumps({"seq": seq, "ts": time.time(), "turn": 1, "kind": kind,
                             "data": event}) + "\n")
                if policy == "none":
                    continue
                due = (time.monotonic() - last) * 1000 >= GROUP_MS
                if policy != "buffered-group" or due:
                    flush()
                if policy == "fsync" or (due and policy in ("group", "buffered-group")):
                    os.fsync(fd)
                    last = time.monotonic()
            flush()
            if policy != "none":
                os.fsync(fd)
    return run


# --- replayers -----------------------------------------------------------------------------

def fsstore_replay(folder: str) -> int:
    reader = fsstore.open_store(os.path.join(folder, "store"), create=False).read_session("bench")
    count = 0
    for _ in reader.events():
        count += 1
    return count


def sqlite_replay(folder: str) -> int:
    connection = sqlite3.connect(os.path.join(folder, "events.db"))
    unpack, count = msgpack.unpackb, 0
    for _seq, _ts, _turn, _kind, payload in connection.execute(
            "SELECT seq, ts, turn, kind, payload FROM events ORDER BY seq"):
        unpack(payload)
        count += 1
    connection.close()
    return count


def jsonl_replay(loads: Callable[[bytes], object]) -> Callable[[str], int]:
    def run(folder: str) -> int:
        count = 0
        with open(os.path.join(folder, "events.jsonl"), "rb") as handle:
            for line in handle:
                loads(line)
                count += 1
        return count
    return run


REPLAYERS: dict[str, Callable[[str], int]] = {
    "fsstore": fsstore_replay,
    "sqlite": sqlite_replay,
    "jsonl json": jsonl_replay(json.loads),
}


def replay_peak_rss(name: str, folder: str) -> int:
    """KiB by which a fresh process's peak RSS grows while it replays ``folder``."""
    result = subprocess.run([sys.executable, __file__, "--replay-child", name, folder],
                            capture_output=True, text=True, check=True)
    return int(result.stdout)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # not Linux: peak only


def replay_child(name: str, folder: str) -> None:
    """Print how far the peak RSS rises above the RSS the process had before replaying."""
    gc.collect()
    before = _status_kib("VmRSS")
    REPLAYERS[name](folder)
    print(_status_kib("VmHWM") - before)


# --- measuring -----------------------------------------------------------------------------

def median_rate(runs: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Run each configuration ``repeats`` times, interleaved; median events per second."""
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            samples[name].append(run())
    return {name: statistics.median(values) for name, values in samples.items()}


def timed_append(appender: Callable[[str, list], None], events: list, keep: str | None,
                 root: str) -> float:
    folder = tempfile.mkdtemp(dir=root)
    gc.collect()
    # the runs before left dirty pages: written back during this run, they would slow it
    # by what they cost, whichever contender it is
    os.sync()
    start = time.perf_counter()
    appender(folder, events)
    elapsed = time.perf_counter() - start
    if keep:
        target = os.path.join(root, keep)
        shutil.rmtree(target, ignore_errors=True)
        os.rename(folder, target)
    else:
        shutil.rmtree(folder)
    return len(events) / elapsed


def row(label: str, value: str, *ratios: str) -> None:
    print(f"  {label:<44} {value:>14}   {'   '.join(r for r in ratios if r)}")


def ratio(value: float, other: float, name: str) -> str:
    return f"{value / other:5.2f}x {name}"


# --- state, commits and forks ------------------------------------------------------------

def agent_state(events: list, index: int) -> dict:
    """A working state of about 20 KiB: the last 20 messages, a plan, counters."""
    return {"messages": [events[(index - k) % len(events)][1] for k in range(20)],
            "plan": [f"step {k}" for k in range(index % 7 + 3)],
            "counters": {"events": index + 1, "turns": index // 40}}


def median_seconds(fn: Callable[[], object], times: int) -> float:
    """The median of ``times`` calls of ``fn``, in seconds."""
    samples = []
    for _ in range(times):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def median_ms(fn: Callable[[], object], times: int) -> float:
    return median_seconds(fn, times) * 1000


def own_bytes(folder: str, shared_with: str) -> int:
    """Bytes on disk of the files under ``folder`` that are not hard links of files under
    ``shared_with``."""
    theirs = {os.stat(os.path.join(d, f)).st_ino
              for d, _, files in os.walk(shared_with) for f in files}
    total = 0
    for directory, _, files in os.walk(folder):
        for name in files:
            info = os.stat(os.path.join(directory, name))
            if info.st_ino not in theirs:
                total += info.st_blocks * 512
    return total


def state_rows(root: str, big_store: fsstore.Store, big: int, events: list) -> None:
    print("\nState, commits and forks (medians)")
    with big_store.create_session("state-small") as session:
        for kind, event in events[:99]:
            session.append(event, kind=kind)
        session.merge_state(agent_state(events, 99))
    state_size = len(msgpack.packb(big_store.read_session("big").state()))
    load_big = median_ms(lambda: big_store.read_session("big").state(), 30)
    load_small = median_ms(lambda: big_store.read_session("state-small").state(), 30)
    row(f"load state, {big:,} events + snapshot", f"{load_big:.3f} ms",
        ratio(load_big, load_small, "the 100-event session"), f"(state {state_size:,} B)")
    row("load state, 100 events, no snapshot", f"{load_small:.3f} ms")

    # one commit = events + a 10 KiB state patch, durable, against one durable append
    patch = {"scratch": "x" * 10_240}
    event = events[0][1]
    store = fsstore.open_store(os.path.join(root, "commit"), durability="fsync")
    samples: dict[str, list[float]] = {"commit": [], "append": [], "sqlite": []}
    database = sqlite3.connect(os.path.join(root, "commit.sqlite"), isolation_level=None)
    database.execute("PRAGMA journal_mode=WAL")
    database.execute("PRAGMA synchronous=FULL")
    database.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, data BLOB)")
    database.execute("CREATE TABLE state (key TEXT PRIMARY KEY, value BLOB)")
    packed_event, packed_patch = msgpack.packb(event), msgpack.packb(patch["scratch"])

    def sqlite_commit() -> None:
        database.execute("BEGIN")
        database.execute("INSERT INTO events (data) VALUES (?)", (packed_event,))
        database.execute("INSERT INTO state VALUES ('scratch', ?) ON CONFLICT(key) DO UPDATE "
                         "SET value = excluded.value", (packed_patch,))
        database.execute("COMMIT")

    with store.create_session("c") as session:
        for _ in range(200):
            for name, fn in (("commit", lambda: session.commit([event], state_patch=patch)),
                             ("append", lambda: session.append(event)),
                             ("sqlite", sqlite_commit)):
                start = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - start)
    database.close()
    commit, append, sqlite_time = (statistics.median(samples[n]) * 1000
                                   for n in ("commit", "append", "sqlite"))
    row("commit: 1 event + 10 KiB state patch, fsync", f"{commit:.3f} ms",
        ratio(commit, append, "the time of one fsync append"),
        ratio(commit, sqlite_time, "the time of SQLite's"))
    row("  append: 1 event, fsync", f"{append:.3f} ms")
    row("  SQLite FULL: insert + upsert in one txn", f"{sqlite_time:.3f} ms")

    # fork at the head of the big session, against copying its folder
    parent = os.path.join(big_store.path, "sessions", "big")
    fork_times, fork_bytes = [], []
    with big_store.open_session("big") as session:
        for index in range(5):
            start = time.perf_counter()
            session.fork(f"fork-{index}").close()
            fork_times.append(time.perf_counter() - start)
            fork_bytes.append(own_bytes(
                os.path.join(big_store.path, "sessions", f"fork-{index}"), parent))
            session.append(events[index][1])  # the parent goes on between forks
    start = time.perf_counter()
    shutil.copytree(parent, os.path.join(root, "copied"))
    copy_time = (time.perf_counter() - start) * 1000
    fork_ms = statistics.median(fork_times) * 1000
    parent_bytes = sum(os.path.getsize(os.path.join(d, f))
                       for d, _, files in os.walk(parent) for f in files)
    row(f"fork at the head, {big:,} events", f"{fork_ms:.1f} ms",
        f"{statistics.median(fork_bytes) / 1024:.0f} KiB new on disk",
        ratio(copy_time, fork_ms, "faster than copying the folder"))
    row(f"  copy the session folder ({parent_bytes / 2**20:,.0f} MiB)", f"{copy_time:.1f} ms")


# --- attachments -------------------------------------------------------------------------

def attachment_rows(root: str, events: list, quick: bool) -> None:
    print("\nAttachments (medians of interleaved runs; incompressible bytes)")
    store = fsstore.open_store(os.path.join(root, "blobs"))
    folder = os.path.join(root, "plain")
    os.makedirs(folder)
    with store.create_session("b") as session:
        for size in (1 << 20, 64 << 20):
            data = bytearray(os.urandom(size))
            repeats = 15 if size < (8 << 20) else (3 if quick else 5)
            times: dict[str, list[float]] = {"put": [], "write": [], "get": [], "read": []}
            refs = []
            for index in range(repeats):
                data[:8] = index.to_bytes(8, "little")  # new content each time: no dedup
                payload = bytes(data)
                path = os.path.join(folder, f"{size}-{index}")
                start = time.perf_counter()
                with open(path, "wb") as handle:
                    handle.write(payload)
                    handle.flush()
                    os.fsync(handle.fileno())
                times["write"].append(time.perf_counter() - start)
                start = time.perf_counter()
                refs.append(session.blobs.put(payload, "application/octet-stream"))
                times["put"].append(time.perf_counter() - start)
            for index in range(repeats):
                path = os.path.join(folder, f"{size}-{index}")
                start = time.perf_counter()
                with open(path, "rb") as handle:
                    handle.read()
                times["read"].append(time.perf_counter() - start)
                start = time.perf_counter()
                session.blobs.get(refs[index])
                times["get"].append(time.perf_counter() - start)
            rate = {name: size / statistics.median(values) / 2**20
                    for name, values in times.items()}
            label = f"{size >> 20} MiB"
            row(f"put {label} (sha256, temp, fsync, rename)", f"{rate['put']:,.0f} MiB/s",
                ratio(rate["put"], rate["write"], "of plain write + fsync"))
            row(f"  plain file write + fsync, {label}", f"{rate['write']:,.0f} MiB/s")
            row(f"get {label} (sha256 verified)", f"{rate['get']:,.0f} MiB/s",
                ratio(rate["get"], rate["read"], "of a plain read (warm)"))
            row(f"  plain file read, {label} (warm)", f"{rate['read']:,.0f} MiB/s")

    # gc over a session of 100k events and 10k referenced blobs (plus orphans)
    gc_events = 10_000 if quick else 100_000
    with store.create_session("gc") as session:
        refs = [session.blobs.put(os.urandom(512) + bytes([i % 256]) * 512, "image/png")
                for i in range(gc_events // 10)]
        orphans = [session.blobs.put(os.urandom(1024)) for _ in range(gc_events // 100)]
        for index in range(gc_events):
            kind, event = events[index % len(events)]
            if index % 10 == 0:
                event = {**event, "attachment": refs[index // 10]}
            session.append(event, kind=kind)
    for path in (p for d, _, f in os.walk(os.path.join(store.path, "sessions", "gc", "blobs"))
                 for p in (os.path.join(d, n) for n in f)):
        os.utime(path, (1, 1))  # old enough for any grace period
    with store.open_session("gc") as session:
        start = time.perf_counter()
        report = session.gc(dry_run=True)
        dry = time.perf_counter() - start
        start = time.perf_counter()
        report = session.gc()
        real = time.perf_counter() - start
    assert report.reclaimed == len(orphans)
    row(f"gc: {gc_events:,} events, {len(refs):,} blobs kept, {report.reclaimed} reclaimed",
        f"{real * 1000:,.0f} ms", f"(dry run {dry * 1000:,.0f} ms)")


# --- change notifications ----------------------------------------------------------------

def watch_child(folder: str, mode: str, seconds: str) -> None:
    """Follow session "s" of ``folder`` for ``seconds``, by watcher or by a 100 ms polling
    loop; print each event's delay (now minus its "t"), progress, and the CPU it took."""
    store = fsstore.open_store(folder, create=False)
    reader = store.read_session("s")
    stop = time.time() + float(seconds)
    delays, next_report = [], 0.0
    last = reader.head  # follow what comes next
    watcher = reader.watch(after_seq=last) if mode == "watch" else None
    usage = resource.getrusage(resource.RUSAGE_SELF)
    start_cpu = usage.ru_utime + usage.ru_stime  # the run's, not the interpreter start's
    print("READY", flush=True)
    while time.time() < stop:
        if watcher is not None:
            found = watcher.get(timeout=0.2)
        else:
            time.sleep(0.1)
            found = list(reader.events(after_seq=last))
        now = time.time()
        for event in found:
            delays.append(now - event.data["t"])
            last = event.seq
        if now >= next_report:
            print("PROGRESS", now, last, reader.head, flush=True)
            next_report = now + 0.5
    if watcher is not None:
        watcher.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    delays.sort()
    quantiles = [delays[int(len(delays) * q)] if delays else 0.0 for q in (0.5, 0.99)]
    print("DONE", last, usage.ru_utime + usage.ru_stime - start_cpu, json.dumps(quantiles),
          flush=True)


def start_watch_child(folder: str, mode: str, seconds: float) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, __file__, "--watch-child", folder, mode,
                              str(seconds)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "READY"
    return child


def finish_watch_child(child: subprocess.Popen) -> tuple[list[int], int, float, list[float]]:
    """The follower's lag (the log's head minus its last delivered seq) every half
    second, its last seq, its CPU seconds, and the median and p99 delivery delay."""
    out, _ = child.communicate(timeout=600)
    lags = [int(head) - int(seq) for _, _, seq, head in
            (line.split() for line in out.splitlines() if line.startswith("PROGRESS"))]
    done = next(line for line in out.splitlines() if line.startswith("DONE")).split(" ", 3)
    return lags, int(done[1]), float(done[2]), json.loads(done[3])


def watch_rows(root: str, quick: bool) -> None:
    history = 10_000
    print("\nChange notifications: a writer appends in this process, a follower in another "
          "delivers (latency: delivery time minus the append's time); the session has "
          f"{history:,} events of history, as an agent's does")
    count, gap = (100, 0.02) if quick else (300, 0.02)
    results = {}
    for mode in ("watch", "poll"):
        folder = os.path.join(root, f"watch-{mode}")
        store = fsstore.open_store(folder)
        with store.create_session("s") as session:
            for start in range(0, history, 1000):
                session.append_many([{"t": 0, "n": n, "pad": "h" * 200}
                                     for n in range(start, start + 1000)])
        seconds = count * gap + 1.5
        child = start_watch_child(folder, mode, seconds)
        with store.open_session("s") as session:
            for n in range(count):
                session.append({"n": n, "t": time.time()})
                time.sleep(gap)
        _, last, cpu, (median, p99) = finish_watch_child(child)
        assert last == history + count, (mode, last)
        results[mode] = (median * 1000, p99 * 1000, cpu)
    watch, poll = results["watch"], results["poll"]
    row(f"session.watch(), {count} appends {gap * 1000:.0f} ms apart: median",
        f"{watch[0]:.2f} ms", ratio(poll[0], watch[0], "lower than polling every 100 ms"))
    row("  p99", f"{watch[1]:.2f} ms")
    row("  follower CPU over the run", f"{watch[2]:.2f} s", ratio(watch[2], poll[2],
                                                                 "the polling loop's"))
    row("polling every 100 ms: median", f"{poll[0]:.2f} ms", f"p99 {poll[1]:.2f} ms",
        f"CPU {poll[2]:.2f} s")

    # Full speed: does the follower keep up, or does its lag grow?
    seconds = 5 if quick else 60
    folder = os.path.join(root, "watch-full")
    store = fsstore.open_store(folder)
    store.create_session("s").close()
    child = start_watch_child(folder, "watch", seconds + 3)
    with store.open_session("s") as session:
        stop = time.time() + seconds
        while time.time() < stop:
            for _ in range(100):
                session.append({"t": time.time(), "pad": "x" * 200})
        total = session.head
    lags, last, _, (median, p99) = finish_watch_child(child)
    assert last == total, (last, total)
    lags = lags[1:seconds * 2]  # while the writer ran
    third = max(len(lags) // 3, 1)
    early, late = statistics.mean(lags[:third]), statistics.mean(lags[-third:])
    row(f"full speed for {seconds} s: appended", f"{total / seconds:,.0f} events/s",
        f"all {total:,} delivered")
    row("  follower lag, first third / last third", f"{early:,.0f} / {late:,.0f} events",
        f"delay median {median * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms")


def vacuum_rows(root: str, quick: bool) -> None:
    """Vacuum: one session littered with what a vacuum removes, then a store of many small
    sessions with nothing to remove (the fixed cost per session)."""
    snapshots, temps, orphans, stale = (300, 300, 300, 100) if quick else (2000, 2000, 2000, 500)
    print(f"\nVacuum: one session holding {snapshots:,} superseded snapshots, {temps:,} temp "
          f"files, {orphans:,} orphaned blobs, {stale} segments before its log start and "
          f"{stale} old torn tails")
    folder = os.path.join(root, "vacuum")
    policy = fsstore.SnapshotPolicy(every_events=None, every_bytes=None, keep=10**6)
    store = fsstore.open_store(folder, segment_size=4096, snapshots=policy)
    old = time.time() - 30 * 24 * 3600
    with store.create_session("s") as session:
        log = os.path.join(session.path, "log")
        for n in range(stale * 2):  # a segment of 4 KiB holds about two batches
            session.append_many([{"n": n, "i": i, "pad": "p" * 400} for i in range(4)])
        aside = {name: open(os.path.join(log, name), "rb").read()  # noqa: SIM115
                 for name in os.listdir(log) if name.endswith(".fslog")}
        session.clear()
        for n in range(snapshots):
            session.append({"n": n})
            session.snapshot()
    with store.open_session("s") as session:  # orphans of a writer now gone
        refs = [session.blobs.put(f"orphan {n}".encode()) for n in range(orphans)]
    for name, data in sorted(aside.items())[:stale]:
        with open(os.path.join(log, name), "wb") as handle:
            handle.write(data)
    for n in range(stale):
        path = os.path.join(log, f"{n + 1:020d}@64.torn")
        with open(path, "wb") as handle:
            handle.write(b"t" * 100)
        os.utime(path, (old, old))
    spots = [session.path, *(os.path.join(session.path, d) for d in ("state", "blobs"))]
    for n in range(temps):
        path = os.path.join(spots[n % len(spots)], f".tmp-leftover-{n:08x}")
        with open(path, "wb") as handle:
            handle.write(b"x" * 100)
        os.utime(path, (old, old))
    for ref in refs:
        path = os.path.join(session.path, "blobs", "sha256", ref.hex[:2], ref.hex)
        os.utime(path, (old, old))
    store = fsstore.open_store(folder, snapshots=fsstore.SnapshotPolicy(
        every_events=None, every_bytes=None))
    with store.open_session("s") as session:
        dry = median_ms(lambda: session.vacuum(dry_run=True), 3)
        started = time.perf_counter()
        report = session.vacuum()
        real = (time.perf_counter() - started) * 1000
        clean = median_ms(session.vacuum, 3)
    row("dry run (plan only)", f"{dry:,.0f} ms", f"{report.count:,} files and folders, "
        f"{report.bytes / 2**20:.1f} MiB")
    row("vacuum", f"{real:,.0f} ms", f"{report.count / real * 1000:,.0f} removals/s")
    for kind in VACUUM_KINDS:
        if report.removed[kind].count:
            row(f"  {kind}", f"{report.removed[kind].count:,}")
    row("vacuum again (nothing left)", f"{clean:,.1f} ms")

    sessions = 200 if quick else 1000
    folder = os.path.join(root, "vacuum-store")
    store = fsstore.open_store(folder)
    for n in range(sessions):
        with store.create_session(f"s{n:05d}") as session:
            session.append_many([{"n": i, "pad": "p" * 200} for i in range(100)])
    started = time.perf_counter()
    report = store.vacuum()
    seconds = time.perf_counter() - started
    assert len(report.sessions) == sessions and report.count == 0
    row(f"store vacuum, {sessions:,} sessions of 100 events, nothing to remove",
        f"{seconds * 1000:,.0f} ms", f"{sessions / seconds:,.0f} sessions/s")


def main() -> None:
    # The sections' modules import this module's helpers, so they are imported here.
    from bench_agents import agents_rows
    from bench_backup import backup_rows
    from bench_chain import chain_rows
    from bench_cli import cli_rows
    from bench_export import export_rows
    from bench_langgraph import langgraph_rows
    from bench_leases import lease_and_queue_rows
    from bench_maintenance import maintenance_rows
    from bench_messages import message_rows
    from bench_parquet import parquet_rows
    from bench_stats import stats_rows
    from bench_store_scale import store_scale_rows
    from bench_store_search import store_search_rows
    from bench_transcripts import transcript_rows
    from bench_vectors import vector_rows

    # (flag, rows, what the flag's help names)
    sections: list[tuple[str, Callable[[str, bool], None], str]] = [
        ("vectors", vector_rows, "the vector search rows"),
        ("leases", lease_and_queue_rows, "the lease and work queue rows"),
        ("watch", watch_rows, "the change notification rows"),
        ("messages", message_rows, "the messages rows (beside the Agents SDK's SQLiteSession)"),
        ("langgraph", langgraph_rows, "the LangGraph checkpointer rows (beside SqliteSaver)"),
        ("agents", agents_rows, "the Agents SDK session rows (FsstoreSession, SQLiteSession)"),
        ("maintenance", maintenance_rows, "the maintenance rows (compaction)"),
        ("vacuum", vacuum_rows, "the vacuum rows"),
        ("stats", stats_rows, "the store stats rows (stores of 1,000 and 10,000 sessions)"),
        ("export", export_rows, "the export and import rows (beside sqlite3's .dump)"),
        ("transcripts", transcript_rows, "the Claude Code and Codex transcript import rows"),
        ("cli", cli_rows, "the command line start rows (fsstore --help, textconv, cat, ls)"),
        ("backup", backup_rows, "the backup rows (first and incremental, beside cp -r)"),
        ("parquet", parquet_rows, "the Parquet export and fsstore sql rows (1M events)"),
        ("chain", chain_rows, "the hash chain rows (appends and replay, chain off and on)"),
        ("store-scale", store_scale_rows,
         "the listing rows (stores of 1,000, 10,000 and 100,000 sessions; --quick: 10,000)"),
        ("store-search", store_search_rows,
         "the store-wide vector search rows (100 and 1,000 sessions of 1,000 vectors)"),
    ]

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k events, fewer repeats")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--open-events", type=int, default=None,
                        help="events in the big session whose open time is measured (1M)")
    parser.add_argument("--dir", default=None, help="where to write (default: a temp folder)")
    parser.add_argument("--replay-child", nargs=2, metavar=("NAME", "FOLDER"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--watch-child", nargs=3, help=argparse.SUPPRESS)
    for flag, _rows, what in sections:
        parser.add_argument(f"--{flag}-only", action="store_true", help=f"only {what}")
    args = parser.parse_args()
    if args.replay_child:
        replay_child(*args.replay_child)
        return
    if args.watch_child:
        watch_child(*args.watch_child)
        return
    chosen = [rows for flag, rows, _what in sections
              if getattr(args, f"{flag.replace('-', '_')}_only")]
    if chosen:
        root = tempfile.mkdtemp(prefix="fsstore-bench-", dir=args.dir)
        try:
            for rows in chosen:
                rows(root, args.quick)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        return
    count = args.events or (10_000 if args.quick else 100_000)
    durable_count = max(count // 5, 1000)
    repeats = 3
    big = args.open_events or (100_000 if args.quick else 1_000_000)
    root = tempfile.mkdtemp(prefix="fsstore-bench-", dir=args.dir)
    events = make_events(count)
    size = statistics.mean(len(msgpack.packb(e)) for _, e in events[:3000])
    print(f"fsstore {fsstore.__version__} bench: {count} events of {size:.0f} B (msgpack) mean, "
          f"{durable_count} for the fsync-each rows; median of {repeats} interleaved runs; "
          f"python {sys.version.split()[0]}, {os.cpu_count()} cores; in {root}")

    try:
        # --- appends ---
        buffered = median_rate({
            "fsstore flush": lambda: timed_append(
                fsstore_append(Durability("flush")), events, "fsstore", root),
            "fsstore none": lambda: timed_append(fsstore_append(Durability("none")), events,
                                                 None, root),
            "sqlite NORMAL": lambda: timed_append(sqlite_append("NORMAL"), events, "sqlite", root),
            "jsonl flush": lambda: timed_append(jsonl_append("flush"), events, "jsonl", root),
            "jsonl none": lambda: timed_append(jsonl_append("none"), events, None, root),
        }, repeats)
        grouped = median_rate({
            "fsstore group": lambda: timed_append(
                fsstore_append(Durability("flush", group_commit_ms=GROUP_MS)), events, None,
                root),
            "sqlite group": lambda: timed_append(sqlite_append("NORMAL", "per-append"), events,
                                                 None, root),
            "jsonl group": lambda: timed_append(jsonl_append("group"), events, None, root),
            "fsstore buffered group": lambda: timed_append(
                fsstore_append(Durability("none", group_commit_ms=GROUP_MS)), events, None,
                root),
            "sqlite batched": lambda: timed_append(sqlite_append("FULL", "batched"), events,
                                                   None, root),
            "jsonl buffered group": lambda: timed_append(jsonl_append("buffered-group"), events,
                                                         None, root),
        }, repeats)
        durable_events = events[:durable_count]
        durable = median_rate({
            "fsstore fsync": lambda: timed_append(
                fsstore_append(Durability("fsync")), durable_events, None, root),
            "sqlite FULL": lambda: timed_append(sqlite_append("FULL"), durable_events, None, root),
            "jsonl fsync": lambda: timed_append(jsonl_append("fsync"), durable_events, None, root),
        }, repeats)

        rates = {**buffered, **grouped, **durable}
        # (label, configuration, [(baseline configuration, how the ratio names it), ...]);
        # a label without a configuration is a heading
        report = [
            ("buffered: fsstore 'flush' (handed to the OS)", "fsstore flush",
             [("sqlite NORMAL", "SQLite NORMAL"), ("jsonl flush", "JSONL flush")]),
            ("  SQLite WAL synchronous=NORMAL", "sqlite NORMAL", []),
            ("  JSONL write + flush", "jsonl flush", []),
            ("in-process buffer: fsstore 'none'", "fsstore none",
             [("jsonl none", "JSONL buffered")]),
            ("  JSONL buffered write", "jsonl none", []),
            ("durable: fsstore 'fsync' each", "fsstore fsync",
             [("sqlite FULL", "SQLite FULL"), ("jsonl fsync", "JSONL fsync")]),
            ("  SQLite WAL synchronous=FULL", "sqlite FULL", []),
            ("  JSONL write + fsync", "jsonl fsync", []),
            ("group commit, fsync every 10 ms; each append visible at once, kept if killed:",
             None, []),
            ("  fsstore Durability('flush', group_commit_ms=10)", "fsstore group",
             [("sqlite group", "SQLite"), ("jsonl group", "JSONL")]),
            ("    SQLite NORMAL commit each, FULL every 10 ms", "sqlite group", []),
            ("    JSONL flush each, fsync every 10 ms", "jsonl group", []),
            ("group commit, write + fsync every 10 ms; appends wait in the process:", None, []),
            ("  fsstore Durability('none', group_commit_ms=10)", "fsstore buffered group",
             [("sqlite batched", "SQLite"), ("jsonl buffered group", "JSONL")]),
            ("    SQLite FULL, one transaction per 10 ms", "sqlite batched", []),
            ("    JSONL buffered, flush + fsync every 10 ms", "jsonl buffered group", []),
        ]
        print("\nAppends per second, one event per call")
        for label, name, baselines in report:
            if name is None:
                print(f"  {label}")
                continue
            row(label, f"{rates[name]:,.0f}",
                *(ratio(rates[name], rates[other], said) for other, said in baselines))

        # --- replay ---
        def replay(reader: Callable[[str], int], folder: str) -> Callable[[], float]:
            def run() -> float:
                gc.collect()
                start = time.perf_counter()
                read = reader(os.path.join(root, folder))
                elapsed = time.perf_counter() - start
                assert read == count, (folder, read)
                return read / elapsed
            return run

        replays = median_rate({
            "fsstore": replay(fsstore_replay, "fsstore"),
            "sqlite": replay(sqlite_replay, "sqlite"),
            "jsonl json": replay(jsonl_replay(json.loads), "jsonl"),
            "jsonl msgspec": replay(jsonl_replay(msgspec.json.decode), "jsonl"),
        }, repeats + 2)
        peaks = {name: replay_peak_rss(name, os.path.join(root, folder))
                 for name, folder in (("fsstore", "fsstore"), ("sqlite", "sqlite"),
                                      ("jsonl json", "jsonl"))}
        print("\nReplay, events per second (warm cache; every event decoded); growth of the "
              "reading process's peak RSS")
        row("fsstore events() (checksums checked)", f"{replays['fsstore']:,.0f}",
            ratio(replays["fsstore"], replays["jsonl json"], "JSONL json.loads"),
            ratio(replays["fsstore"], replays["sqlite"], "SQLite+msgpack"),
            f"+{peaks['fsstore'] / 1024:.1f} MiB")
        row("  SQLite SELECT + msgpack.unpackb", f"{replays['sqlite']:,.0f}",
            f"+{peaks['sqlite'] / 1024:.1f} MiB")
        row("  JSONL json.loads", f"{replays['jsonl json']:,.0f}",
            f"+{peaks['jsonl json'] / 1024:.1f} MiB")
        row("  JSONL msgspec.json", f"{replays['jsonl msgspec']:,.0f}",
            ratio(replays["fsstore"], replays["jsonl msgspec"], "(fsstore vs this)"))

        # --- open time ---
        print(f"\nOpening a session ({big:,} events vs 10), median of 30; each open re-reads "
              "the manifest and the end of the log")
        big_store = fsstore.open_store(os.path.join(root, "open"))
        with big_store.create_session("big") as session:
            append = session.append
            for index in range(big):
                kind, event = events[index % count]
                append(event, kind=kind)
                if index % 1000 == 999:  # the agent's working state moves on now and then
                    session.merge_state(agent_state(events, index))
            session.snapshot()
            for kind, event in events[:100]:  # and the log goes on after the snapshot
                session.append(event, kind=kind)
        with big_store.create_session("small") as session:
            for kind, event in events[:10]:
                session.append(event, kind=kind)

        def open_time(fn: Callable[[], object]) -> float:
            times = []
            for _ in range(30):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            return statistics.median(times) * 1000

        def open_reader(session_id: str) -> Callable[[], object]:
            return lambda: big_store.read_session(session_id).head

        def open_writer(session_id: str) -> Callable[[], object]:
            return lambda: big_store.open_session(session_id).close()

        segments = len(os.listdir(os.path.join(big_store.path, "sessions", "big", "log")))
        reader_big, reader_small = open_time(open_reader("big")), open_time(open_reader("small"))
        writer_big, writer_small = open_time(open_writer("big")), open_time(open_writer("small"))
        listing = open_time(big_store.list_sessions)
        row(f"read_session + head, {big:,} events", f"{reader_big:.3f} ms",
            f"({segments} segments)", ratio(reader_big, reader_small, "the 10-event session"))
        row("read_session + head, 10 events", f"{reader_small:.3f} ms")
        row(f"open_session (lock, recover) + close, {big:,}", f"{writer_big:.3f} ms",
            ratio(writer_big, writer_small, "the 10-event session"))
        row("open_session (lock, recover) + close, 10", f"{writer_small:.3f} ms")
        row("list_sessions (both)", f"{listing:.3f} ms")

        state_rows(root, big_store, big, events)
        attachment_rows(root, events, quick=args.quick)
        vector_rows(root, quick=args.quick)
        lease_and_queue_rows(root, quick=args.quick)
        watch_rows(root, quick=args.quick)
        message_rows(root, quick=args.quick)
        langgraph_rows(root, quick=args.quick)
        agents_rows(root, quick=args.quick)
        maintenance_rows(root, quick=args.quick)
        vacuum_rows(root, quick=args.quick)
        stats_rows(root, quick=args.quick)
        cli_rows(root, quick=args.quick)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
