"""``fsstore vacuum`` and ``fsstore rm``: the commands that remove things.

Each shows what it would remove and removes it only with ``--yes``; without it, it
prints the plan, changes nothing and exits 1 (0 when there is nothing to remove).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from .. import layout
from ..defaults import DEFAULT_GRACE_SECONDS, DEFAULT_TORN_GRACE_SECONDS
from ..errors import FsStoreError, SessionNotFound
from ._common import add_command, dumps, human_bytes, plain, store_from
from ._progress import progress

if TYPE_CHECKING:
    from ..store import Store
    from ..vacuum import VacuumReport


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    vacuum = add_command(
        commands, "vacuum", "remove what sessions no longer need (shows it; --yes removes)",
        "fsstore vacuum --dry-run   # then: fsstore vacuum --yes",
        description="Remove what the sessions (every one, or those named) and the store no "
                    "longer need: superseded snapshots, leftovers of interrupted writes, "
                    "clears and deletes, torn tails set aside more than a week ago, vector "
                    "files no manifest needs and attachments nothing refers to. Prints "
                    "what it would remove, by kind; removes it only with --yes (without "
                    "it, exits 1 when there is something to remove). A session another "
                    "writer has open is skipped and named.")
    vacuum.add_argument("sessions", nargs="*", metavar="SESSION",
                        help="only these sessions (default: all, and the store's leftovers)")
    vacuum.add_argument("--dry-run", action="store_true",
                        help="print what would be removed and exit 0; remove nothing")
    vacuum.add_argument("--yes", action="store_true", help="remove it")
    vacuum.add_argument("--grace", type=float, default=DEFAULT_GRACE_SECONDS,
                        metavar="SECONDS", help="keep temp files, trash and unreferenced "
                        "attachments younger than this (default: an hour)")
    vacuum.add_argument("--torn-grace", type=float, default=DEFAULT_TORN_GRACE_SECONDS,
                        metavar="SECONDS", help="keep .torn files younger than this "
                        "(default: a week)")
    vacuum.add_argument("--message-grace", type=float, default=0.0, metavar="SECONDS",
                        help="redact the content of messages deleted at least this long "
                        "ago (default 0: every message deleted before the vacuum)")
    vacuum.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="wait this long for each session's writer lock (default 0)")
    vacuum.add_argument("--json", action="store_true",
                        help="print the report as JSON (VacuumReport.to_dict)")
    vacuum.set_defaults(run=run_vacuum)

    rm = add_command(
        commands, "rm", "delete sessions (shows them; --yes deletes)",
        "fsstore rm 20261121T055212Z-3fa9c2d1 --yes",
        description="Delete whole sessions. Prints what would be deleted; deletes only "
                    "with --yes (without it, exits 1). A session whose writer is open is "
                    "refused; so is one leased to a live owner, unless --force.")
    rm.add_argument("sessions", nargs="+", metavar="SESSION")
    rm.add_argument("--yes", action="store_true", help="delete them")
    rm.add_argument("--force", action="store_true",
                    help="delete a session even while an owner holds a live lease on it")
    rm.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                    help="wait this long for a session's writer to close (default 0)")
    rm.set_defaults(run=run_rm)


def run_vacuum(args: argparse.Namespace) -> int:
    store = store_from(args)
    named = list(args.sessions) or None
    total = len(named) if named is not None else len(store.session_ids())
    dry_run = args.dry_run or not args.yes
    with progress(total, "vacuum", unit="session") as bar:
        report = store.vacuum(named, dry_run=dry_run, grace=args.grace,
                              torn_grace=args.torn_grace, lock_timeout=args.wait,
                              on_session=lambda _session_id: bar.update(1),
                              message_grace=args.message_grace)
    if args.json:
        print(dumps(report.to_dict(paths=True), indent=2))
    else:
        _print_report(report, store.path)
    problems = any(f.level == "problem" for f in report.findings)
    if not args.yes and not args.dry_run and report.count:
        if not args.json:
            print("nothing was removed: run again with --yes to remove it")
        return 1
    return 1 if problems else 0


def _print_report(report: VacuumReport, root: str) -> None:
    verb = "would remove" if report.dry_run else "removed"
    print(f"{verb} {report.count} files, folders and log records, {human_bytes(report.bytes)}"
          f" ({report.seconds:.2f} s)")
    from ..vacuum import KINDS

    for kind in KINDS:
        item = report.removed[kind]
        if item.count:
            print(f"  {kind:<18} {item.count:>7,} {human_bytes(item.bytes):>10}")
    for path in report.paths():
        print(f"    {plain(os.path.relpath(path, root))}")
    for session_id, why in report.skipped.items():
        print(f"skipped {plain(session_id)}: {plain(why)}")
    for finding in report.findings:
        print(finding)


def run_rm(args: argparse.Namespace) -> int:
    store = store_from(args)
    ids = list(dict.fromkeys(args.sessions))
    for session_id in ids:  # every id is checked before anything is deleted
        if not store.has_session(session_id):
            raise SessionNotFound(f"no session {session_id!r} in the store {store.path}")
    if not args.yes:
        for session_id in ids:
            print(f"would delete session {plain(session_id)} ({_describe(store, session_id)})")
        print("nothing was deleted: run again with --yes to delete")
        return 1
    failed = 0
    for session_id in ids:
        try:
            store.delete_session(session_id, lock_timeout=args.wait, force=args.force)
        except (FsStoreError, OSError) as exc:
            print(f"fsstore: {' '.join(str(exc).split())}", file=sys.stderr)
            failed += 1
            continue
        print(f"deleted session {plain(session_id)}")
    return 2 if failed else 0


def _describe(store: Store, session_id: str) -> str:
    """A session's event count, title and bytes on disk, for the plan of ``rm``."""
    from ..vacuum import tree_bytes

    size = tree_bytes(layout.session_dir(store.path, session_id))
    try:
        info = store.read_session(session_id).info()
        what = f"{info.event_count:,} events"
        if info.title:
            what += f", {plain(info.title)!r}"
    except FsStoreError as exc:
        what = f"damaged: {' '.join(str(exc).split())}"
    return f"{what}, {human_bytes(size)}"
