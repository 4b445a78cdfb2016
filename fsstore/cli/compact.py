"""``fsstore compact``: rewrite sealed log segments compressed, merging small ones."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from ..defaults import DEFAULT_LEVEL, DEFAULT_TARGET_BYTES
from ._common import add_command, store_from
from ._progress import progress

if TYPE_CHECKING:
    from ..compaction import CompactReport


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    compact = add_command(
        commands, "compact", "compress the sealed log segments of a session (or of every "
        "session), merging small ones; prints the bytes before and after",
        "fsstore compact 20261121T055212Z-3fa9c2d1 --dry-run")
    compact.add_argument("sessions", nargs="*", metavar="SESSION",
                         help="the sessions (default: every session of the store)")
    compact.add_argument("--dry-run", action="store_true",
                         help="change nothing; show what would be compacted")
    compact.add_argument("--target-bytes", type=int, default=DEFAULT_TARGET_BYTES,
                         metavar="N", help="merge sealed segments into files of about N bytes "
                         f"of records (default {DEFAULT_TARGET_BYTES})")
    compact.add_argument("--level", type=int, default=DEFAULT_LEVEL,
                         help=f"zstd level (default {DEFAULT_LEVEL})")
    compact.add_argument("--json", action="store_true", help="print the report as JSON")
    compact.set_defaults(run=run_compact)


def run_compact(args: argparse.Namespace) -> int:
    store = store_from(args)
    named = list(args.sessions) or None
    total = len(named) if named is not None else len(store.session_ids())
    with progress(total, "compact", unit="session") as bar:
        report = store.compact(named, dry_run=args.dry_run, target_bytes=args.target_bytes,
                               level=args.level, on_session=lambda _: bar.update(1))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    else:
        for session_id, part in report.parts.items():
            print(_line(session_id, part))
        for session_id, why in report.skipped.items():
            print(f"{session_id}: not compacted: {why}")
        print(_line(f"total ({report.sessions} sessions)", report))
    return 1 if report.skipped else 0


def _line(name: str, report: CompactReport) -> str:
    if report.dry_run:
        return (f"{name}: would write {report.files_written} compacted file(s) holding "
                f"{report.plain_bytes} bytes of records; {report.segments_before} segment "
                f"files, {report.bytes_before} bytes now")
    return (f"{name}: {report.bytes_before} -> {report.bytes_after} bytes "
            f"({report.ratio:.2f}x), {report.segments_before} -> {report.segments_after} "
            f"segment files, {report.seconds:.2f} s")
