"""What the chain (docs/FORMAT.md 3.4) costs: encoding chained frames, and reading a
segment with its chain checked against plain replay.

    python3 tools/bench_chain.py             # 4 MiB segments of ~950-byte frames
    python3 tools/bench_chain.py --frame 200 --segments 4

Every figure is the median of interleaved repetitions in one run on this machine. A
program, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fsstore import chain  # noqa: E402
from fsstore.chain import Mac  # noqa: E402
from fsstore.chain_check import ChainRules, ChainRun, check_segment  # noqa: E402
from fsstore.chain_frames import RunState  # noqa: E402
from fsstore.fsio import FileIO  # noqa: E402
from fsstore.log import LogReader  # noqa: E402
from fsstore.log_format import SegmentScan, encode_frame  # noqa: E402
from fsstore.segment_header import (  # noqa: E402
    SEGMENT_HEADER_SIZE,
    SegmentHeader,
    decode_segment_header,
    encode_segment_header,
    mark_segment_header,
)

UID = 0x3FA9C2D15E7B0A64
SEGMENT = 4 << 20
KEY = bytes(range(32))


def entries(seq: int, frame: int) -> list[tuple[str, dict[str, object]]]:
    # msgpack overhead of the payload and the frame: about 60 bytes
    return [("message", {"role": "user", "n": seq, "content": "x" * max(frame - 60, 1)})]


def segment(first: int, frame: int, mac: Mac | None, anchor: bytes
            ) -> tuple[bytes, bytes, int]:
    """A sealed segment of about 4 MiB from seq ``first`` (chained under ``mac``, or
    plain when None), its last chain value (the anchor when plain) and the seq after it."""
    run = None if mac is None else RunState(mac, anchor)
    body, seq = bytearray(), first
    while SEGMENT_HEADER_SIZE + len(body) < SEGMENT:
        batch = entries(seq, frame)
        body += (encode_frame(seq, 1.0, 1, batch, 1 << 20) if run is None
                 else run.encode(seq, 1.0, 1, batch, 1 << 20))
        seq += 1
    header = encode_segment_header(first, 1, UID)
    data = mark_segment_header(header[:52], SEGMENT_HEADER_SIZE + len(body)) + bytes(body)
    return data, anchor if run is None else run.link, seq


def timed_ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def replay(buf: bytes, chain_run: ChainRun | None = None) -> int:
    """Read every event of a segment image, as a replay does; return how many."""
    scan = SegmentScan(buf, "seg", 1, False, synced_end=len(buf), chain=chain_run)
    count = 0
    for _ in scan:
        count += 1
    return count


def measure(cases: dict[str, Callable[[], object]], repeat: int) -> dict[str, list[float]]:
    """Each case timed ``repeat`` times, the cases interleaved."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeat):
        for name, fn in cases.items():
            samples[name].append(timed_ms(fn))
    return samples


def report(samples: dict[str, list[float]], base: str, per: int, unit: str) -> None:
    """min and median of each case, per ``per`` items, and against case ``base``: on a
    shared machine the minimum is the better estimate of what the work itself costs."""
    low = min(samples[base])
    for name, values in samples.items():
        best, middle = min(values), statistics.median(values)
        print(f"  {name:30} {best / per * 1000:7.2f} {unit} (median {middle / per * 1000:7.2f})"
              f"  {best / low * 100:4.0f}% of {base}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frame", type=int, default=950, help="bytes per frame (about)")
    parser.add_argument("--segments", type=int, default=8, help="segments in the log read")
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()

    macs = {"plain": None, "sha256": Mac(), "hmac-sha256": Mac(KEY)}
    images = {name: segment(1, args.frame, mac, chain.genesis(mac or Mac(), UID, 1))[0]
              for name, mac in macs.items()}
    frames = replay(images["plain"], None)
    print(f"one segment: {len(images['plain'])} bytes, {frames} frames of "
          f"~{len(images['plain']) // frames} bytes (chained: +40 each, the first +72)")

    batch = entries(1, args.frame)

    def encoder(mac: Mac | None) -> Callable[[], object]:
        def encode() -> None:
            run = None if mac is None else RunState(mac, bytes(32))
            for seq in range(1, 1001):
                if run is None:
                    encode_frame(seq, 1.0, 1, batch, 1 << 20)
                else:
                    run.encode(seq, 1.0, 1, batch, 1 << 20)
        return encode

    print("\nencoding a frame, us:")
    report(measure({f"encode {name}": encoder(mac) for name, mac in macs.items()},
                   args.repeat), "encode plain", 1000, "us")

    cases: dict[str, Callable[[], object]] = {
        "replay plain": lambda: replay(images["plain"])}
    for name, mac in macs.items():
        if mac is None:
            continue
        buf, rules = images[name], ChainRules(mac)
        header = decode_segment_header(buf, "seg")

        def check(buf: bytes = buf, rules: ChainRules = rules,
                  header: SegmentHeader = header) -> ChainRun:
            return check_segment(rules, [buf], 0, path="seg", header=header, first_seq=1,
                                 is_last=False, before=None)

        cases[f"check {name} (one hash)"] = check
        cases[f"check + replay {name}"] = lambda buf=buf, check=check: replay(buf, check())
    print("\none segment in memory, us per frame (against plain replay):")
    report(measure(cases, args.repeat), "replay plain", frames, "us")

    print(f"\na log of {args.segments} segments through LogReader.events (page cache), "
          "us per frame:")
    root = tempfile.mkdtemp(prefix="fsstore-chain-bench-")
    try:
        logs: dict[str, Callable[[], object]] = {}
        for name, mac in macs.items():
            folder = os.path.join(root, name)
            os.makedirs(folder)
            link, first = chain.genesis(mac or Mac(), UID, 1), 1
            for _ in range(args.segments):
                data, link, next_seq = segment(first, args.frame, mac, link)
                with open(os.path.join(folder, f"{first:020d}.fslog"), "wb") as handle:
                    handle.write(data)
                first = next_seq
            reader = LogReader(FileIO(), folder)
            reader.chain = None if mac is None else ChainRules(mac)
            logs[f"events {name}"] = lambda reader=reader: sum(1 for _ in reader.events())
        report(measure(logs, args.repeat), "events plain", frames * args.segments, "us")
    finally:
        shutil.rmtree(root)


def chain_rows(root: str, quick: bool) -> None:
    """tools/bench.py --chain-only: appends and replay of sessions written through the
    store with no chain, an unkeyed chain (SHA-256) and a keyed one (HMAC-SHA256), beside
    SQLite (WAL) and JSONL; interleaved runs, their medians and bests as ratios to no
    chain's."""
    from bench import (  # type: ignore[import-not-found]
        jsonl_append,
        jsonl_replay,
        make_events,
        sqlite_append,
        sqlite_replay,
        timed_append,
    )

    import fsstore

    count = 10_000 if quick else 100_000
    repeats = 3 if quick else 7
    events = make_events(count)
    modes = {"no chain": {"chain": False}, "sha256": {"chain": True},
             "hmac-sha256": {"chain": True, "chain_key": KEY}}

    def appender(options: dict[str, object], durability: str, keep: str | None
                 ) -> Callable[[], float]:
        def append(folder: str, batch: list) -> None:
            store = fsstore.open_store(os.path.join(folder, "store"), durability=durability,
                                       **options)  # type: ignore[arg-type]
            with store.create_session("bench") as session:
                for kind, event in batch:
                    session.append(event, kind=kind)
        return lambda: timed_append(append, events, keep, root)

    print(f"\nThe chain (FORMAT.md 3.4): {count:,} events through the store, median (and "
          f"best) of {repeats} interleaved runs, events/s")
    for durability in ("flush", "none"):
        runs = {name: appender(options, durability, f"chain-{name}" if durability == "flush"
                               else None) for name, options in modes.items()}
        runs["sqlite NORMAL"] = lambda: timed_append(sqlite_append("NORMAL"), events,
                                                     "chain-sqlite", root)
        runs["jsonl flush"] = lambda: timed_append(jsonl_append("flush"), events,
                                                   "chain-jsonl", root)
        _rows(f"append, {durability}", runs, repeats)

    def replayer(name: str, options: dict[str, object]) -> Callable[[], float]:
        store = fsstore.open_store(os.path.join(root, f"chain-{name}", "store"), create=False,
                                   **options)  # type: ignore[arg-type]

        def replay_all() -> float:
            start = time.perf_counter()
            done = sum(1 for _ in store.read_session("bench").events())
            return done / (time.perf_counter() - start)
        return replay_all

    runs = {name: replayer(name, options) for name, options in modes.items()}
    runs["sqlite"] = lambda: _rate(sqlite_replay, os.path.join(root, "chain-sqlite"))
    runs["jsonl json"] = lambda: _rate(jsonl_replay(json.loads),
                                       os.path.join(root, "chain-jsonl"))
    _rows("replay", runs, repeats)


def _rows(what: str, runs: dict[str, Callable[[], float]], repeats: int) -> None:
    """Each configuration run ``repeats`` times, interleaved: its median rate as a ratio
    to no chain's, and its best as a ratio to no chain's best (on a shared machine the
    best run is the closer estimate of what the work itself costs)."""
    from bench import ratio, row  # type: ignore[import-not-found]

    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            samples[name].append(run())
    base, best = statistics.median(samples["no chain"]), max(samples["no chain"])
    for name, values in samples.items():
        rate = statistics.median(values)
        row(f"{what}: {name}", f"{rate:,.0f}", ratio(rate, base, "no chain"),
            f"best {max(values) / best:4.2f}x")


def _rate(replayer: Callable[[str], int], folder: str) -> float:
    start = time.perf_counter()
    done = replayer(folder)
    return done / (time.perf_counter() - start)


if __name__ == "__main__":
    main()
