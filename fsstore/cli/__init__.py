"""The ``fsstore`` command: a thin layer over the Python API, one module per group.

Every command finds its store the way git finds a repository: ``--store PATH``, else
``$FSSTORE_STORE``, else the current folder or its nearest parent holding a store.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import FsStoreError
from . import demo, inspect, state, vectors, verify, watch, work

GROUPS = (demo, inspect, state, vectors, work, watch, verify)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except FsStoreError as exc:
        print(f"fsstore: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `fsstore cat S | head`
        return 0
