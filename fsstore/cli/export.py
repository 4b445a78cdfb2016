"""``fsstore export`` and ``fsstore import``: sessions out to a file and back, exactly."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from . import transcripts
from ._common import add_command

if TYPE_CHECKING:
    from ..store import Store


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    command = add_command(
        commands, "export", "write sessions (or the whole store, --all) as JSON lines that "
        "fsstore import recreates exactly: events with their seqs, turns and times, state, "
        "checkpoints, blobs, vector collections, workspaces",
        "fsstore export --all -o store.jsonl.zst",
        description="Write SESSION... (or every session and workspace, --all) as an export\n"
        "file (docs/FORMAT.md, section 22) to -o FILE, or stdout. A FILE ending in .zst,\n"
        "or --zstd, is zstd-compressed. --blobs beside writes attachments as files in\n"
        "FILE.blobs/ instead of inline. --format parquet writes Parquet to the folder\n"
        "given by -o (or the first argument) instead.")
    command.add_argument("sessions", nargs="*", metavar="SESSION", help="the sessions")
    command.add_argument("--all", action="store_true", help="every session and workspace")
    command.add_argument("-o", "--output", metavar="FILE",
                         help="where to write (default: stdout; a DIR for --format parquet)")
    command.add_argument("--zstd", action="store_true", help="compress with zstandard")
    command.add_argument("--blobs", choices=("inline", "beside"), default="inline",
                         help="attachments inline in base64 (default) or as files in "
                              "FILE.blobs/")
    command.add_argument("--format", choices=("jsonl", "parquet"), default="jsonl",
                         help="jsonl (default): an export file import reads back; parquet: "
                              "hive-partitioned Parquet for DuckDB, Polars, Spark")
    command.set_defaults(run=run_export)

    imports = add_command(
        commands, "import", "recreate the sessions of an export file in the store (a new "
        "store at --store PATH if none is there): same events, seqs, state, checkpoints, "
        "blobs, vectors; or import the sessions of Claude Code or Codex",
        "fsstore --store restored import store.jsonl.zst",
        description="Recreate the sessions of FILE (written by fsstore export). The file\n"
        "is checked whole first: one cut off, reordered or edited is refused, naming the\n"
        "line, and nothing is written. A session the store already has is refused\n"
        "unless --rename-to or --replace.\n\n"
        "fsstore import claude-code [PATH] and fsstore import codex [PATH] import the\n"
        "transcripts of those tools instead (an export file named like one is given as\n"
        "./claude-code or ./codex).")
    imports.epilog = f"{imports.epilog}\n{transcripts.EXAMPLES}"
    imports.add_argument("file", metavar="FILE",
                         help="an export file (plain or .zst), or claude-code or codex")
    imports.add_argument("path", metavar="PATH", nargs="?",
                         help="claude-code, codex: the transcripts' folder or one "
                              "transcript (default: the tool's own folder)")
    imports.add_argument("--rename-to", action="append", default=[], metavar="[OLD=]NEW",
                         help="import under another id: NEW when FILE holds one session, "
                              "else OLD=NEW (repeatable)")
    imports.add_argument("--replace", action="store_true",
                         help="replace sessions the store already has")
    transcripts.add_import_source_arguments(imports)
    imports.set_defaults(run=run_import)


def run_export(args: argparse.Namespace) -> int:
    from ..errors import InvalidSetting
    from ._common import store_from

    store = store_from(args)
    if args.format == "parquet":
        return _export_parquet(store, args)
    if args.all == bool(args.sessions):
        raise InvalidSetting("name the sessions to export, or --all (not both)")
    from ..export import export_sessions

    ids = None if args.all else args.sessions
    if args.output is None:
        report = export_sessions(store, sys.stdout.buffer, ids, blobs=args.blobs,
                                 compress=args.zstd)
        sys.stdout.buffer.flush()
        print(str(report), file=sys.stderr)
    else:
        report = export_sessions(store, args.output, ids, blobs=args.blobs,
                                 compress=True if args.zstd else None)
        print(str(report))
    return 0


def _export_parquet(store: Store, args: argparse.Namespace) -> int:
    from ..errors import InvalidSetting
    from ..parquet_export import export_parquet

    sessions = list(args.sessions)
    out_dir = args.output
    if out_dir is None:
        if not sessions:
            raise InvalidSetting("--format parquet needs a folder: fsstore export --format "
                                 "parquet DIR --all")
        out_dir = sessions.pop(0)
    if out_dir == "-":
        raise InvalidSetting("--format parquet writes a folder, not standard output: "
                             "fsstore export --format parquet DIR --all")
    if args.all == bool(sessions):
        raise InvalidSetting("name the sessions to export to Parquet, or --all (not both)")
    if args.zstd or args.blobs != "inline":
        raise InvalidSetting("--zstd and --blobs are for export files, not --format parquet")
    print(str(export_parquet(store, out_dir, None if args.all else sessions)))
    return 0


def run_import(args: argparse.Namespace) -> int:
    from ..errors import InvalidSetting

    if args.file in transcripts.SOURCE_NAMES:
        if args.rename_to or args.replace:
            raise InvalidSetting(f"--rename-to and --replace are for export files, not "
                                 f"{args.file} transcripts")
        return transcripts.run_import_source(args.file, args.path, args)
    if args.path is not None:
        raise InvalidSetting(f"import of an export file takes one FILE; {args.path!r} is "
                             "one too many")
    if args.dry_run or args.follow or args.json:
        raise InvalidSetting("--dry-run, --follow and --json are for claude-code and "
                             "codex transcripts, not export files")
    from ..importer import import_sessions
    from ..store import open_store
    from ._common import store_from

    # A store this command makes is removed again if the import is refused: a refused
    # import leaves the disk as it was, with no empty store where there was none.
    made = bool(args.store) and not os.path.lexists(args.store)
    store = (open_store(args.store, create=True, chain_key=getattr(args, "key_file", None))
             if args.store else store_from(args))
    rename: str | dict[str, str] | None = None
    if len(args.rename_to) == 1 and "=" not in args.rename_to[0]:
        rename = args.rename_to[0]
    elif args.rename_to:
        rename = dict(item.split("=", 1) for item in args.rename_to)
    try:
        report = import_sessions(store, args.file, rename=rename, replace=args.replace)
    except BaseException:
        if made:
            import shutil

            shutil.rmtree(args.store, ignore_errors=True)
        raise
    print(str(report))
    return 0
