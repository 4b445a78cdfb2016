"""``fsstore verify``: the read-only check. Prints each problem with its file and offset,
then ``OK`` or ``N problems``; exits 1 when there are problems."""

from __future__ import annotations

import argparse

from ._common import add_command, report_findings, store_from
from ._progress import progress


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    verify = add_command(
        commands, "verify", "check every file of a store or session; changes nothing",
        "fsstore verify && echo store is sound",
        description="Read every file of the store (or of one session) and print each "
                    "problem with its file and byte offset. Notes (a torn tail left by a "
                    "crash, a temp file) are printed but are not problems. Ends with OK or "
                    "'N problems'; exits 1 if there are problems.")
    verify.add_argument("session", nargs="?", metavar="SESSION", help="only this session")
    verify.set_defaults(run=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    store = store_from(args)
    named = [args.session] if args.session else None
    total = 1 if named else len(store.session_ids())
    with progress(total, "verify", unit="session") as bar:
        findings = store.verify(named, on_session=lambda _: bar.update(1))
    return report_findings(findings)
