"""``fsstore textconv`` and ``fsstore git-setup``: a store committed to git, diffed as text."""

from __future__ import annotations

import argparse
import shutil
import sys

from ..defaults import TEXTCONV_COMMAND
from ._common import add_command, store_from


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    command = add_command(
        commands, "textconv", "print any fsstore file as stable, readable text: a segment "
        "as JSON lines (one event per line), a snapshot, checkpoint or manifest as sorted "
        "JSON, a vector shard or blob as a summary; what git diff shows (see "
        "fsstore git-setup)",
        "fsstore textconv sessions/S/log/00000000000000000001.fslog | jq -c .data",
        description="Print the fsstore file FILE as text (docs/FORMAT.md, section 21).\n"
        "Damage is printed as {\"damage\": ...} lines naming the file and byte offset,\n"
        "and the exit status is still 0 (git diff must not stop at a damaged file);\n"
        "2 when FILE cannot be opened. Reads only.")
    command.add_argument("file", metavar="FILE", help="a file of a store (any kind)")
    command.set_defaults(run=run_textconv)

    setup = add_command(
        commands, "git-setup", "set up a store inside a git work tree so that git diff, "
        "git log -p and git show print its files as text: writes .gitattributes and "
        ".gitignore in the store folder and sets git config diff.fsstore.textconv",
        "cd my-repo && fsstore --store agent-sessions git-setup",
        description="Write .gitattributes (every fsstore file through diff=fsstore,\n"
        "merge=binary, -text) and .gitignore (lock files, the tail hint, the message\n"
        "index, scratch files) in the store folder, and set\n"
        f"  git config diff.fsstore.textconv \"{TEXTCONV_COMMAND}\"\n"
        "in its repository. Lines outside fsstore's block in those files are kept;\n"
        "running it again changes nothing.")
    setup.add_argument("--print", action="store_true", dest="print_only",
                       help="do not run git: print the git config line to run instead")
    setup.add_argument("--command", default=TEXTCONV_COMMAND, metavar="CMD",
                       help=f"what git runs per file (default: {TEXTCONV_COMMAND!r}; for "
                            "example 'python3 -m fsstore textconv' when fsstore is not on "
                            "PATH)")
    setup.set_defaults(run=run_git_setup)


def run_textconv(args: argparse.Namespace) -> int:
    from .. import textconv

    out = sys.stdout.buffer
    # UTF-8 whatever the locale, so that git compares the same bytes on every machine; a
    # str no valid UTF-8 holds (a lone surrogate in a hand-edited manifest) is escaped.
    for line in textconv.lines(args.file):
        out.write(line.encode("utf-8", "backslashreplace") + b"\n")
    out.flush()
    return 0


def run_git_setup(args: argparse.Namespace) -> int:
    from ..git_setup import git_setup  # runs git: not imported by every command's start

    store = store_from(args)
    report = git_setup(store.path, command=args.command, configure=not args.print_only)
    for line in report.lines():
        print(line)
    program = args.command.split()[0] if args.command.split() else ""
    if shutil.which(program) is None:
        print(f"note: {program!r} is not on PATH here, and git runs the command through "
              "the shell: pass --command 'python3 -m fsstore textconv' (or a full path)",
              file=sys.stderr)
    return 0
