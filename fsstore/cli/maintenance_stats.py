"""``fsstore stats`` and ``fsstore du``: the counts and the bytes of a store or a
session, as aligned text or JSON (``fsstore/stats.py`` counts them)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import InvalidSetting
from ._common import add_command, dumps, human_bytes, plain, store_from, when
from ._progress import progress

if TYPE_CHECKING:
    from ..stats import DamagedSession, SessionStats, StoreStats


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    stats = add_command(
        commands, "stats", "print the counts and sizes of the store (or of one session): "
                           "sessions, records, turns, messages, segments, snapshots, ...",
        "fsstore stats --json | jq .messages",
        description="Print the counts and sizes of the store, summed over its sessions, "
                    "or of SESSION: records, turns, messages, state keys, segments "
                    "(sealed, compacted) and the bytes of the log, snapshots, "
                    "checkpoints, attachments, vector collections and documents, queue "
                    "items and turn inputs by status, leases, and the times of the first "
                    "and last records. Read from folder listings, segment headers, the "
                    "end of each log and each state (the newest snapshot and the log "
                    "after it), never a whole history; a session unchanged since the last count "
                    "is answered from the store's stats cache (--no-cache: count it "
                    "afresh). A session that cannot be read is "
                    "named on stderr (exit status 1); the others are counted.")
    stats.add_argument("session", nargs="?", default=None, metavar="SESSION",
                       help="only this session (default: the whole store)")
    stats.add_argument("--kinds", action="store_true",
                       help="with SESSION: also count its records by kind and its turns "
                            "(reads its whole log)")
    stats.add_argument("--sessions", action="store_true",
                       help="without SESSION: also print one line per session")
    stats.add_argument("--no-cache", action="store_true",
                       help="without SESSION: count every session afresh, not answering "
                            "unchanged ones from the store's stats cache (.stats-cache)")
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    stats.add_argument("--progress", action="store_true",
                       help="show progress on stderr even when it is no terminal (it is "
                            "shown on a terminal anyway; never in the --json output)")
    stats.set_defaults(run=run_stats)

    du = add_command(
        commands, "du", "print the bytes of each session by kind of file (log, snapshots, "
                        "checkpoints, blobs, vectors, index, other), largest first",
        "fsstore du --top 10",
        description="Print the bytes the store takes: by kind of file, then one line per "
                    "session with its bytes by kind, the largest session first. Lists "
                    "each folder once and reads no file. A file two sessions share by "
                    "hard link (a fork's segments and attachments) counts once, for the "
                    "first session (by id) that holds it.")
    du.add_argument("--top", type=int, default=None, metavar="N",
                    help="only the N largest sessions (the totals count them all)")
    du.add_argument("--json", action="store_true", help="print JSON instead of a table")
    du.set_defaults(run=run_du)


def run_stats(args: argparse.Namespace) -> int:
    if args.kinds and args.session is None:
        raise InvalidSetting("--kinds reads a whole log, so it counts one session's records: "
                             "name the SESSION (fsstore stats SESSION --kinds)")
    store = store_from(args)
    if args.session is not None:
        found = store.read_session(args.session).session_stats(events_by_kind=args.kinds)
        if args.json:
            print(dumps(found.to_dict(), indent=2))
        else:
            for line in session_lines(found):
                print(line)
        return 0
    with progress(len(store.session_ids()), "stats", unit="session",
                  force=args.progress) as bar:
        totals = store.stats(on_session=lambda _: bar.update(1),
                             use_cache=not args.no_cache)
    if args.json:
        print(dumps(totals.to_dict(), indent=2))
    else:
        for line in store_lines(totals, each=args.sessions):
            print(line)
    _report_damaged(totals.damaged)
    return 1 if totals.damaged else 0


def run_du(args: argparse.Namespace) -> int:
    from ..stats import BYTE_KINDS

    store = store_from(args)
    found = store.disk_usage()
    rows = found.sessions if args.top is None else found.sessions[:max(args.top, 0)]
    if args.json:
        data = found.to_dict()
        data["sessions"] = [row.to_dict() for row in rows]
        print(dumps(data, indent=2))
    else:
        print(f"{plain(store.path)}: {human_bytes(found.total)} ({found.total:,} bytes)")
        for kind, size in found.bytes.largest_first():
            print(f"  {kind:<12} {human_bytes(size):>10}")
        print(f"  {'(no session)':<12} {human_bytes(found.outside_sessions):>10}")
        if rows:
            print()
            heading = ["SESSION", "TOTAL", *(kind.upper() for kind in BYTE_KINDS)]
            table = [[plain(row.id), human_bytes(row.total),
                      *(human_bytes(getattr(row.bytes, kind)) for kind in BYTE_KINDS)]
                     for row in rows]
            for line in aligned([heading, *table]):
                print(line)
    _report_damaged(found.damaged)
    return 1 if found.damaged else 0


def aligned(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows of cells as lines: the first column left-aligned, the others right-aligned,
    two spaces between."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join([row[0].ljust(widths[0]),
                       *(cell.rjust(width) for cell, width in zip(row[1:], widths[1:],
                                                                   strict=True))]).rstrip()
            for row in rows]


def _time(ts: float | None) -> str:
    return "-" if ts is None else when(ts)


def _statuses(counts: dict[str, int]) -> str:
    return ", ".join(f"{count:,} {status}" for status, count in counts.items())


def _pairs(pairs: list[tuple[str, str]]) -> list[str]:
    width = max(len(label) for label, _ in pairs)
    return [f"{label:<{width}}  {value}" for label, value in pairs]


def _counts(found: SessionStats | StoreStats) -> list[tuple[str, str]]:
    """The lines a session's counts and a store's have alike."""
    return [
        ("messages", f"{found.messages:,}"),
        ("state keys", f"{found.state_keys:,}"),
        ("segments", f"{found.segments:,} ({found.sealed_segments:,} sealed, "
                     f"{found.compressed_segments:,} compacted), {human_bytes(found.log_bytes)}"),
        ("snapshots", f"{found.snapshots:,}, {human_bytes(found.bytes.snapshots)}"),
        ("checkpoints", f"{found.checkpoints:,}, {human_bytes(found.bytes.checkpoints)}"),
        ("attachments", f"{found.blobs:,}, {human_bytes(found.blob_bytes)}"),
        ("vectors", f"{found.collections:,} collections, {found.vector_documents:,} "
                    f"documents, {human_bytes(found.bytes.vectors)}"),
        ("queue", _statuses(found.queue)),
        ("inputs", _statuses(found.inputs)),
    ]


def session_lines(found: SessionStats) -> list[str]:
    """``fsstore stats SESSION``: one line per count."""
    lease = "free"
    if found.lease_holder is not None:
        state = "until" if found.lease_live else "expired"
        lease = (f"{plain(found.lease_holder)} (token {found.lease_token}, {state} "
                 f"{_time(found.lease_expires)})")
    pairs = [
        ("session", plain(found.id) + (f"  {plain(found.title)}" if found.title else "")),
        ("records", f"{found.records:,} (seqs {found.log_start:,} to {found.head:,})"),
        ("turns", f"{found.turns:,}" + ("" if found.turn_count is None
                                         else f" ({found.turn_count:,} hold records)")),
        *_counts(found),
        ("lease", lease),
        ("first record", _time(found.oldest_event)),
        ("last record", _time(found.newest_event)),
        ("bytes", f"{human_bytes(found.bytes.total)} ({found.bytes.total:,})"),
    ]
    lines = _pairs(pairs)
    if found.events_by_kind is not None:
        lines += ["", "records by kind:"]
        lines += [f"  {line}" for line in aligned(
            [["KIND", "RECORDS"], *([plain(kind), f"{count:,}"]
                                    for kind, count in found.events_by_kind.items())])]
    return lines


def store_lines(found: StoreStats, *, each: bool = False) -> list[str]:
    """``fsstore stats``: the totals, then (``each``) one line per session."""
    pairs = [
        ("sessions", f"{found.sessions:,}" + (f" ({len(found.damaged):,} damaged)"
                                               if found.damaged else "")),
        ("records", f"{found.records:,}"),
        ("turns", f"{found.turns:,}"),
        *_counts(found),
        ("leased", f"{found.leased:,} sessions"),
        ("first record", _time(found.oldest_event)),
        ("last record", _time(found.newest_event)),
        ("bytes", f"{human_bytes(found.bytes.total)} ({found.bytes.total:,}) in sessions"),
    ]
    lines = _pairs(pairs)
    if each and found.per_session:
        heading = ["SESSION", "RECORDS", "TURNS", "MESSAGES", "KEYS", "SEGMENTS", "QUEUE",
                   "BYTES", "LEASE"]
        rows = [[plain(s.id), f"{s.records:,}", f"{s.turns:,}", f"{s.messages:,}",
                 f"{s.state_keys:,}", f"{s.segments:,}", f"{sum(s.queue.values()):,}",
                 human_bytes(s.bytes.total),
                 plain(s.lease_holder) if s.lease_live and s.lease_holder else "-"]
                for s in found.per_session]
        lines += ["", *aligned([heading, *rows])]
    return lines


def _report_damaged(damaged: list[DamagedSession]) -> None:
    for session in damaged:
        print(f"fsstore: left out session {plain(session.id)}, which cannot be read: "
              f"{plain(session.reason)} (run `fsstore verify {plain(session.id)}` for "
              "details)", file=sys.stderr)
