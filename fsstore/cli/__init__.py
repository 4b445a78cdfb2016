"""The ``fsstore`` command: a thin layer over the Python API, one module per group.

Every command finds its store the way git finds a repository: ``--store PATH``, else
``$FSSTORE_STORE``, else the current folder or its nearest parent holding a store; and
the key of keyed hash chains in ``--key-file PATH``, else the environment (``chain.py``).

A command module imports only argparse-light modules at its top, and fsstore's engine
inside its run functions (see ``_common.py``); a run imports only its own command's
module (``GROUPS``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import io
import os
import sys
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import NoReturn

from ..errors import FsStoreError

#: The command modules (``fsstore/cli/NAME.py``), each with the commands its ``register``
#: adds, in the order ``--help`` lists them. A run imports only its command's module
#: (``fsstore cat`` imports ``inspect``); ``--help`` imports them all. A new group is one
#: more entry; tests/test_cli_start.py checks each entry names what its module registers.
GROUPS: dict[str, tuple[str, ...]] = {
    "demo": ("demo",),
    "inspect": ("ls", "show", "cat"),
    "state": ("state", "checkpoints", "fork", "lineage", "gc"),
    "usage": ("usage",),
    "vectors": ("collections", "search"),
    "work": ("lease", "queue", "inputs"),
    "watch": ("tail", "watch"),
    "workspace": ("workspace",),
    "verify": ("verify",),
    "chain": ("pin",),
    "compact": ("compact",),
    "maintenance": ("vacuum", "rm"),
    "maintenance_stats": ("stats", "du"),
    "repair": ("repair",),
    "retain": ("retain",),
    "git": ("textconv", "git-setup"),
    "export": ("export", "import"),
    "backup": ("backup",),
    "sql": ("sql",),
}


def group_module(group: str) -> ModuleType:
    """The command module ``group`` (a key of :data:`GROUPS`), imported."""
    return importlib.import_module(f"{__name__}.{group}")


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; with ``command``, of that command alone when one group
    defines it (a run needs no other's arguments: ``fsstore cat`` builds ``cat``'s)."""
    parser = _Parser(
        prog="fsstore",
        description="A filesystem-native append-log store for AI agent sessions.",
        epilog="Start with: fsstore demo   (records a sample session into ./fsstore-demo)",
    )
    parser.add_argument("--store", metavar="PATH",
                        help="the store folder (default: $FSSTORE_STORE, else the current "
                             "folder or its nearest parent that is a store)")
    parser.add_argument("--key-file", metavar="PATH",
                        help="the key of a store whose hash chains are keyed, in a file "
                             "outside the store (default: $FSSTORE_CHAIN_KEY, else "
                             "$FSSTORE_CHAIN_KEY_FILE)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    owners = [group for group, names in GROUPS.items() if command in names]
    with _translations_cached():
        for group in owners or GROUPS:
            group_module(group).register(commands)
    return parser


#: The options before the command, each taking a value.
_GLOBAL_OPTIONS = ("--store", "--key-file")


def _command_in(argv: Sequence[str]) -> str | None:
    """The command ``argv`` runs: its first word after the global options; None when in
    doubt (``--help``, an abbreviated option), and then every command's parser is built."""
    words = iter(argv)
    for word in words:
        if word in _GLOBAL_OPTIONS:
            next(words, None)
        elif not word.startswith(tuple(f"{option}=" for option in _GLOBAL_OPTIONS)):
            return None if word.startswith("-") else word
    return None


@contextlib.contextmanager
def _translations_cached() -> Iterator[None]:
    """argparse looks each of its messages up in the locale's message catalogs as it
    builds a parser, a few stat calls per message and more than a hundred messages for
    fsstore's commands: about half the cost of building them, paid by every run. While
    they are built, each message is looked up once (the same translations)."""
    namespace = vars(argparse)
    lookup = namespace["_"]
    namespace["_"] = functools.lru_cache(maxsize=None)(lookup)
    try:
        yield
    finally:
        namespace["_"] = lookup


def command_names() -> list[str]:
    """Every command ``fsstore --help`` lists (the docs test checks each is documented)."""
    commands = next(a for a in build_parser()._actions
                    if isinstance(a, argparse._SubParsersAction))
    return sorted(commands.choices)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit status.

    Every failure is one line on stderr, never a traceback: ``fsstore: MESSAGE`` and exit
    status 2 for fsstore's own errors and the operating system's (a path that cannot be
    read) and for a module fsstore needs that is not installed (numpy, zstandard and
    watchdog are imported by the commands that use them, not at start); ``fsstore:
    internal error: TYPE: MESSAGE`` and status 3 for anything else (a bug: set
    ``FSSTORE_TRACEBACK=1`` to see where). An id that starts with ``-`` is named
    after ``--``: ``fsstore show -- -draft``.
    """
    for stream in (sys.stdout, sys.stderr):
        # A str a terminal cannot encode (a lone surrogate a hand put in a manifest, a
        # title on an ASCII console) is printed escaped, never a crash.
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    words = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_command_in(words)).parse_args(words)
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
        missing = _missing_module(exc)
        if missing is not None:
            print(f"fsstore: {_one_line(exc)}: this command needs the module {missing!r}, "
                  "which is not installed; install it (or reinstall fsstore with its "
                  "dependencies)", file=sys.stderr)
            return 2
        print(f"fsstore: internal error: {type(exc).__name__}: {_one_line(exc)}",
              file=sys.stderr)
        return 3


def _missing_module(exc: BaseException) -> str | None:
    """The top-level module ``exc`` says is not installed; None when it says nothing of
    the kind, or names a module of fsstore's own (a bug, not a missing install)."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    top = exc.name.partition(".")[0]
    return None if top == "fsstore" else top


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
