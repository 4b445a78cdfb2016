"""What the chain (docs/FORMAT.md 3.4) costs: encoding chained frames, and reading a
segment with its chain checked against plain replay.

    python3 tools/bench_chain.py             # 4 MiB segments of ~950-byte frames
    python3 tools/bench_chain.py --frame 200 --segments 4
    python3 tools/bench_chain.py --appends   # where an append's chain cost goes

Every figure is the median of interleaved repetitions in one run on this machine. A
program, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import gc
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
from fsstore.chain import CHAIN_SIZE, Mac, WriterHash  # noqa: E402
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
    parser.add_argument("--appends", action="store_true",
                        help="only the in-process split of an append's chain cost")
    parser.add_argument("--rounds", type=int, default=300, help="rounds of --appends")
    args = parser.parse_args()
    if args.appends:
        for durability in ("none", "flush"):
            append_cost(durability, args.rounds)
        return

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


def _no_step(state: object, head: bytes, body: bytes, anchor: bytes, trailer: bytes,
             outer: object, /) -> bytes:
    """A frame's hash step that hashes nothing (see chain.FrameStep): a chain run through
    it costs what the chain costs besides its hashing."""
    return bytes(CHAIN_SIZE)


class _NoHash:
    """The running state :func:`_no_step` goes with: it holds nothing."""

    __slots__ = ()
    update = staticmethod(len)

    def copy(self) -> _NoHash:
        return self


def append_cost(durability: str, rounds: int, block: int = 200) -> None:
    """Where the chain's cost in an append goes: sessions without a chain, chained with
    its hashing stubbed out (the framing, joins and bookkeeping alone), SHA-256 and
    HMAC-SHA256, all open in one process and appended to in interleaved blocks of
    ``block`` events, each round starting with another configuration. Printed per
    configuration: the median over rounds of its time per append less no chain's in the
    same round, and of no chain's time over its own (paired rounds cancel the machine's
    drift, which is larger here than the cost measured)."""
    from bench import make_events  # type: ignore[import-not-found]

    import fsstore

    events = make_events(block)
    real_parts = Mac.frame_parts
    stub_parts = lambda mac: WriterHash(_NoHash(), _no_step, None)  # noqa: E731
    modes: dict[str, tuple[dict[str, object], bool]] = {
        "no chain": ({"chain": False}, False),
        "no chain again": ({"chain": False}, False),  # the noise alone
        "chain, hashing stubbed": ({"chain": True}, True),
        "sha256": ({"chain": True}, False),
        "hmac-sha256": ({"chain": True, "chain_key": KEY}, False)}
    root = tempfile.mkdtemp(prefix="fsstore-chain-appends-")
    sessions = {}
    try:
        for name, (options, stubbed) in modes.items():
            Mac.frame_parts = stub_parts if stubbed else real_parts  # type: ignore[method-assign]
            store = fsstore.open_store(os.path.join(root, str(len(sessions))),
                                       durability=durability, **options)  # type: ignore[arg-type]
            sessions[name] = store.create_session("bench")
        times: dict[str, list[float]] = {name: [] for name in modes}
        gc.disable()
        names = list(sessions)
        for turn in range(rounds):
            # each round starts with the next configuration: none keeps the first place
            for name in names[turn % len(names):] + names[:turn % len(names)]:
                session = sessions[name]
                Mac.frame_parts = stub_parts if modes[name][1] else real_parts  # type: ignore[method-assign]
                start = time.perf_counter()
                for kind, event in events:
                    session.append(event, kind=kind)
                times[name].append((time.perf_counter() - start) / block * 1e6)
    finally:
        gc.enable()
        Mac.frame_parts = real_parts  # type: ignore[method-assign]
        for session in sessions.values():
            session.close()
        shutil.rmtree(root)
    base = times["no chain"]
    print(f"\nan append's chain cost, durability {durability!r}: {rounds} interleaved rounds "
          f"of {block} appends in one process, medians over rounds")
    for name, values in times.items():
        extra = statistics.median(value - plain for value, plain in zip(values, base, strict=True))
        speed = statistics.median(plain / value for value, plain in zip(values, base, strict=True))
        print(f"  {name:26} {statistics.median(values):6.2f} us an append   {extra:+5.2f} us   "
              f"{speed:4.2f}x no chain's speed")


def chain_rows(root: str, quick: bool) -> None:
    """tools/bench.py --chain-only: appends and replay of sessions written through the
    store with no chain, an unkeyed chain (SHA-256) and a keyed one (HMAC-SHA256), beside
    SQLite (WAL) and JSONL; interleaved runs, their median rates, and as ratios to no
    chain's their paired medians and their bests (see _rows)."""
    from bench import (  # type: ignore[import-not-found]
        jsonl_append,
        jsonl_replay,
        make_events,
        sqlite_append,
        sqlite_replay,
        timed_append,
    )

    import fsstore

    count = 10_000 if quick else 50_000
    repeats = 3 if quick else 11
    events = make_events(count)
    # "no chain again" is no chain run a second time: how far it lands from 1.00x is what
    # this machine's noise alone moves a row
    modes = {"no chain": {"chain": False}, "no chain again": {"chain": False},
             "sha256": {"chain": True}, "hmac-sha256": {"chain": True, "chain_key": KEY}}

    def appender(options: dict[str, object], durability: str, keep: str | None
                 ) -> Callable[[], float]:
        def append(folder: str, batch: list) -> None:
            store = fsstore.open_store(os.path.join(folder, "store"), durability=durability,
                                       **options)  # type: ignore[arg-type]
            with store.create_session("bench") as session:
                for kind, event in batch:
                    session.append(event, kind=kind)
        return lambda: timed_append(append, events, keep, root)

    print(f"\nThe chain (FORMAT.md 3.4): {count:,} events through the store, {repeats} "
          "interleaved runs: the median rate, events/s; against no chain, the median of "
          "each round's ratio and the ratio of the bests")
    for durability in ("flush", "none"):
        runs = {name: appender(options, durability,
                               f"chain-{name.replace(' ', '-')}" if durability == "flush"
                               else None) for name, options in modes.items()}
        runs["sqlite NORMAL"] = lambda: timed_append(sqlite_append("NORMAL"), events,
                                                     "chain-sqlite", root)
        runs["jsonl flush"] = lambda: timed_append(jsonl_append("flush"), events,
                                                   "chain-jsonl", root)
        _rows(f"append, {durability}", runs, repeats)

    def replayer(name: str, options: dict[str, object]) -> Callable[[], float]:
        store = fsstore.open_store(os.path.join(root, f"chain-{name.replace(' ', '-')}",
                                                "store"), create=False,
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
    # A whole run's time varies more from run to run here than the chain costs: the same
    # appends in interleaved blocks of one process, which split it finer.
    for durability in ("none", "flush"):
        append_cost(durability, 60 if quick else 300)


def _rows(what: str, runs: dict[str, Callable[[], float]], repeats: int) -> None:
    """Each configuration run ``repeats`` times, interleaved, each round starting with
    another configuration: its median rate; as a ratio to no chain's, the median over
    rounds of its rate over no chain's in the same round (paired: the machine's drift
    between rounds cancels); and its best as a ratio to no chain's best (on a shared
    machine the best run is the closer estimate of what the work itself costs)."""
    from bench import ratio, row  # type: ignore[import-not-found]

    samples: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for turn in range(repeats):
        for name in names[turn % len(names):] + names[:turn % len(names)]:
            samples[name].append(runs[name]())
    base, best = samples["no chain"], max(samples["no chain"])
    for name, values in samples.items():
        paired = statistics.median(rate / plain for rate, plain in zip(values, base,
                                                                       strict=True))
        row(f"{what}: {name}", f"{statistics.median(values):,.0f}",
            ratio(paired, 1.0, "no chain"), f"best {max(values) / best:4.2f}x")


def _rate(replayer: Callable[[str], int], folder: str) -> float:
    start = time.perf_counter()
    done = replayer(folder)
    return done / (time.perf_counter() - start)


if __name__ == "__main__":
    main()
