"""``fsstore repair SESSION``: rewrite a damaged session so that it verifies, keeping
every record that still verifies (docs/FORMAT.md, section 7.6)."""

from __future__ import annotations

import argparse
import json
import os
from typing import TYPE_CHECKING

from .. import layout
from ._common import add_command, store_from
from ._progress import progress

if TYPE_CHECKING:
    from ..repair_log import RepairReport


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    repair = add_command(
        commands, "repair", "rewrite a damaged session so that it verifies: every record "
        "that still verifies is kept, each lost seq reported; damaged files are copied "
        "aside first", "fsstore repair 20261121T055212Z-3fa9c2d1 --yes")
    repair.add_argument("session", metavar="SESSION")
    repair.add_argument("--yes", action="store_true",
                        help="repair it (without: print what would be saved and lost, "
                             "change nothing, exit 1 when a repair is needed)")
    repair.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="wait this long for the session's writer to close (default 0)")
    repair.add_argument("--json", action="store_true", help="print the report as JSON")
    repair.set_defaults(run=run_repair)


def run_repair(args: argparse.Namespace) -> int:
    store = store_from(args)
    with progress(_segment_count(store.path, args.session), "repair", unit="segment") as bar:
        report = store.repair(args.session, dry_run=not args.yes, lock_timeout=args.wait,
                              on_segment=lambda _first: bar.update(1))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    else:
        _print(report)
    if report.dry_run:
        return 1 if report.lost else 0
    return 0


def _segment_count(store_path: str, session_id: str) -> int | None:
    """The segment files of the session's log (the bar's length); None (a bar without a
    length) when its log folder cannot be listed: repair says why."""
    try:
        names = os.listdir(layout.log_dir(layout.session_dir(store_path, session_id)))
    except (OSError, ValueError):
        return None
    return len(layout.segment_seqs(names))


def _print(report: RepairReport) -> None:
    saved = ", ".join(f"{r.first}-{r.last}" for r in report.saved) or "none"
    lost = ", ".join(str(r) for r in report.lost) or "none"
    print(f"session {report.session}: seqs saved {saved}; lost {lost}")
    if report.dry_run:
        print("nothing was changed: run again with --yes to repair it" if report.lost else
              "nothing to repair")
        return
    if not report.repaired:
        print("nothing to repair")
        return
    print(f"damaged files copied to {report.aside}")
    for path in report.replaced:
        print(f"rewrote {path}")
    for path in report.set_aside:
        print(f"set aside {path} (it held what lost records did)")
    print(f"the session verifies; its head is seq {report.head}")
