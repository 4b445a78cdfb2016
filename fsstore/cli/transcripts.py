"""``fsstore import claude-code [PATH]`` and ``fsstore import codex [PATH]``: import (or
mirror, with ``--follow``) the sessions of Claude Code and the Codex CLI.

This module registers no command of its own: the ``import`` command (which also imports
fsstore's own export files) dispatches to :func:`run_import_source` when its first
positional argument names a transcript source (:data:`SOURCE_NAMES`), after adding
:func:`add_import_source_arguments` to its parser. The engine is imported inside the
run function, so that ``fsstore --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

#: The first positional arguments of ``fsstore import`` this module handles.
SOURCE_NAMES = ("claude-code", "codex")

#: Examples for the ``import`` command's help epilog (the command shows them at merge).
EXAMPLES = """\
examples:
  fsstore import claude-code                  # ~/.claude/projects, every session
  fsstore import codex ~/.codex/sessions/2025/10 --dry-run
  fsstore import claude-code --follow         # keep mirroring until Ctrl-C
"""


def add_import_source_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of a transcript import to ``parser``: ``--dry-run``,
    ``--follow``, ``--poll-interval`` and ``--json``. An option the parser has already
    (the ``import`` command's own ``--dry-run`` or ``--json``) is left as it is:
    :func:`run_import_source` reads them by their names (``dry_run``, ``json``,
    ``follow``, ``poll_interval``), each optional."""
    def add_argument(flag: str, **options: Any) -> None:
        try:
            parser.add_argument(flag, **options)
        except argparse.ArgumentError:
            pass  # the command has this option of its own

    add_argument("--dry-run", action="store_true",
                 help="print what would be imported (sessions, messages, bytes) "
                      "and write nothing")
    add_argument("--follow", action="store_true",
                 help="after importing, keep watching the folder and append new "
                      "lines as the tool writes them, each exactly once, until "
                      "interrupted (Ctrl-C)")
    add_argument("--poll-interval", type=float, default=1.0, metavar="SECONDS",
                 help="with --follow: re-scan at least this often when no change "
                      "was notified (default: 1)")
    add_argument("--json", action="store_true",
                 help="print each transcript's result as one JSON line")


def run_import_source(source: str, path: str | None, args: argparse.Namespace) -> int:
    """Import the transcripts of ``source`` (``claude-code`` or ``codex``) under ``path``
    (default: the tool's own folder) into the store ``args`` names (``--store``, else
    the one found from the current folder; ``--store`` creates it if need be, except in
    a dry run). Prints one line per transcript that changed, then a summary. Exit
    status 0, or 1 when a transcript could not be imported (the others were)."""
    from ..layout import STORE_MANIFEST
    from ..store import open_store
    from ..transcripts import follow, import_source
    from ._common import store_from

    explicit = getattr(args, "store", None)
    dry_run = bool(getattr(args, "dry_run", False))
    as_json = bool(getattr(args, "json", False))
    store: Any
    if explicit and dry_run and not os.path.exists(os.path.join(explicit, STORE_MANIFEST)):
        store = None  # a dry run into a store not made yet: everything would be new
    else:
        store = (open_store(explicit, create=not dry_run,
                            chain_key=getattr(args, "key_file", None))
                 if explicit else store_from(args))
    failed = False

    def show(report: Any) -> None:
        nonlocal failed
        failed = failed or any(f.action == "failed" for f in report.files)
        if as_json:
            import json
            for found in report.files:
                if found.action != "unchanged" or found.torn:
                    row = {key: value for key, value in vars(found).items()
                           if key != "related"}
                    print(json.dumps({**row, "tool": report.tool, "dry_run": report.dry_run}),
                          flush=True)
        else:
            print(report.describe(), flush=True)

    if getattr(args, "follow", False) and not dry_run:
        first = True

        def on_report(report: Any) -> None:
            nonlocal first
            if first or any(f.action != "unchanged" for f in report.files):
                show(report)
            first = False

        print(f"fsstore: mirroring {source} sessions into {store.path} (Ctrl-C stops)",
              file=sys.stderr, flush=True)
        follow(store, source, path, poll_interval=getattr(args, "poll_interval", 1.0),
               on_report=on_report)
        return 1 if failed else 0
    show(import_source(store, source, path, dry_run=dry_run))
    return 1 if failed else 0
