"""``fsstore retain``: drop a session's old history by a retention policy."""

from __future__ import annotations

import argparse
import json
from datetime import datetime

from ..errors import InvalidSetting
from ._common import add_command, store_from


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    retain = add_command(
        commands, "retain", "drop a session's old history, keeping its state, queue, "
        "inputs, usage and checkpoints exact (destructive: needs --yes)",
        "fsstore retain 20261121T055212Z-3fa9c2d1 --keep-turns 20 --yes")
    retain.add_argument("session", metavar="SESSION")
    rules = retain.add_mutually_exclusive_group(required=True)
    rules.add_argument("--keep-turns", type=int, metavar="N",
                       help="keep the last N turns")
    rules.add_argument("--keep-since", metavar="ISO-TIME",
                       help="keep what was written at or after this time")
    rules.add_argument("--keep-state", action="store_true",
                       help="keep no history, only what the state needs")
    retain.add_argument("--dry-run", action="store_true", help="change nothing; show what "
                        "would be dropped")
    retain.add_argument("--set-policy", action="store_true", help="also keep the policy in "
                        "the session manifest, for later vacuums")
    retain.add_argument("--yes", action="store_true", help="drop it (without it, the "
                        "command shows what it would drop and changes nothing)")
    retain.add_argument("--json", action="store_true", help="print the report as JSON")
    retain.set_defaults(run=run_retain)


def run_retain(args: argparse.Namespace) -> int:
    from ..retention import RetentionPolicy, describe

    since = None
    if args.keep_since is not None:
        try:
            since = datetime.fromisoformat(args.keep_since).timestamp()
        except ValueError:
            raise InvalidSetting(f"--keep-since {args.keep_since!r} is not an ISO 8601 "
                                 "time (such as 2026-11-21T05:52:12+00:00)") from None
    policy = RetentionPolicy(args.keep_turns, since, "state" if args.keep_state else "all")
    store = store_from(args)
    dry_run = args.dry_run or not args.yes
    with store.open_session(args.session) as session:
        report = session.retain(policy=policy, dry_run=dry_run)
        if args.set_policy and not dry_run:
            session.set_retention(policy)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    else:
        print(f"{args.session}: {describe(report)}")
        if dry_run and not args.dry_run and report.seqs_dropped:
            print("nothing was changed: add --yes to drop it")
    return 1 if dry_run and not args.dry_run and report.seqs_dropped else 0
