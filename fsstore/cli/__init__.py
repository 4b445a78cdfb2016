"""The ``fsstore`` command: a thin layer over the Python API, one module per group.

Every command finds its store the way git finds a repository: ``--store PATH``, else
``$FSSTORE_STORE``, else the current folder or its nearest parent holding a store.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from ..errors import FsStoreError
from . import (
    compact,
    demo,
    git,
    inspect,
    maintenance,
    maintenance_stats,
    repair,
    retain,
    sql,
    state,
    usage,
    vectors,
    verify,
    watch,
    work,
    workspace,
)

GROUPS = (demo, inspect, state, usage, vectors, work, watch, workspace, verify, compact,
          maintenance, maintenance_stats, repair, retain, git, sql)


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fsstore",
        description="A filesystem-native append-log store for AI agent sessions.",
        epilog="Start with: fsstore demo   (records a sample session into ./fsstore-demo)",
    )
    parser.add_argument("--store", metavar="PATH",
                        help="the store folder (default: $FSSTORE_STORE, else the current "
                             "folder or its nearest parent that is a store)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for group in GROUPS:
        group.register(commands)
    return parser


def command_names() -> list[str]:
    """Every command ``fsstore --help`` lists (the docs test checks each is documented)."""
    commands = next(a for a in build_parser()._actions
                    if isinstance(a, argparse._SubParsersAction))
    return sorted(commands.choices)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit status.

    Every failure is one line on stderr, never a traceback: ``fsstore: MESSAGE`` and exit
    status 2 for fsstore's own errors and the operating system's (a path that cannot be
    read); ``fsstore: internal error: TYPE: MESSAGE`` and status 3 for anything else (a
    bug: set ``FSSTORE_TRACEBACK=1`` to see where). An id that starts with ``-`` is named
    after ``--``: ``fsstore show -- -draft``.
    """
    for stream in (sys.stdout, sys.stderr):
        # A str a terminal cannot encode (a lone surrogate a hand put in a manifest, a
        # title on an ASCII console) is printed escaped, never a crash.
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except BrokenPipeError:  # `fsstore cat S | head`
        return 0
    except KeyboardInterrupt:
        return 130
    except (FsStoreError, OSError) as exc:
        print(f"fsstore: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:
        if os.environ.get("FSSTORE_TRACEBACK"):
            raise
        print(f"fsstore: internal error: {type(exc).__name__}: {_one_line(exc)}",
              file=sys.stderr)
        return 3


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
