"""``fsstore verify``: the read-only check. Prints each problem with its file and offset,
each chained session's head_hash, then ``OK`` or ``N problems``; exits 1 when there are
problems. Its options for pinned heads are in ``chain.py``."""

from __future__ import annotations

import argparse
import sys

from . import chain
from ._common import add_command, report_findings


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    verify = add_command(
        commands, "verify", "check every file of a store or session; changes nothing",
        "fsstore verify && echo store is sound",
        description="Read every file of the store (or of one session) and print each "
                    "problem with its file and byte offset. Notes (a torn tail left by a "
                    "crash, a temp file) are printed but are not problems. Chained "
                    "sessions' head hashes are printed (SESSION head_hash SEQ:HEX (MODE)); "
                    "--expect-head and --pins check them against ones kept from before "
                    "(see `fsstore pin`). Ends with OK or 'N problems'; exits 1 if there "
                    "are problems.")
    verify.add_argument("session", nargs="?", metavar="SESSION", help="only this session")
    chain.add_verify_options(verify)
    verify.add_argument("--progress", action="store_true",
                        help="show progress on stderr even when it is no terminal (it is "
                             "shown on a terminal anyway)")
    verify.set_defaults(run=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    problem = chain.usage_problem(args)
    if problem is not None:
        print(f"fsstore verify: {problem} (see fsstore verify --help)", file=sys.stderr)
        return 2
    store, findings = chain.verify_findings(args)
    chain.print_heads(store, args.session)
    return report_findings(findings)
