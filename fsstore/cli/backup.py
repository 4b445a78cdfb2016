"""``fsstore backup``: a consistent, incremental copy of a store taken beside its writers,
and ``fsstore backup --verify`` to check one."""

from __future__ import annotations

import argparse
import json

from ._common import add_command, report_findings


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    backup = add_command(
        commands, "backup", "copy the store (or some sessions) into a backup folder while "
        "writers keep appending; incremental; --verify checks a backup",
        "fsstore backup /backups/agents-$(date +%F) --link-dest /backups/agents-latest",
        description="Copy the store, or the sessions named, into DEST: a store folder that\n"
        "opens like any other (restore by copying it back). Each session's copy is a\n"
        "prefix of whole batches of its log, with the state, checkpoints, blobs and\n"
        "vector collections that go with it. Files unchanged since the copy already in\n"
        "DEST (or in --link-dest PREV, an earlier backup) are hard-linked, not copied.\n"
        "A whole-store backup also removes from DEST the sessions the store no longer\n"
        "holds. Exits 1 when a session could not be copied (DEST keeps its previous\n"
        "copy of it).\n\n"
        "fsstore backup --verify DEST checks a backup instead: that the last backup\n"
        "into it completed, that each session ends at the seq recorded, and everything\n"
        "fsstore verify checks; prints each problem with its file and byte offset,\n"
        "then OK or 'N problems'; exits 1 on problems.")
    backup.add_argument("dest", metavar="DEST", help="the backup folder (new, empty, or an "
                        "earlier backup)")
    backup.add_argument("sessions", nargs="*", metavar="SESSION",
                        help="only these sessions (default: the whole store)")
    backup.add_argument("--link-dest", metavar="PREV",
                        help="an earlier backup: files it holds unchanged are hard-linked "
                             "from it (as rsync --link-dest)")
    backup.add_argument("--verify", action="store_true",
                        help="check the backup in DEST instead of making one")
    backup.add_argument("--verify-copies", action="store_true",
                        help="verify each session's copy whole before it replaces the "
                             "previous one (reads every byte it copied)")
    backup.add_argument("--json", action="store_true", help="print the report as JSON")
    backup.set_defaults(run=run_backup)


def run_backup(args: argparse.Namespace) -> int:
    from ..backup import backup_store, verify_backup
    from ..errors import InvalidSetting
    if args.verify:
        if args.sessions or args.link_dest or args.verify_copies or args.json:
            raise InvalidSetting("backup --verify takes DEST alone: no SESSION, --link-dest, "
                                 "--verify-copies or --json")
        return report_findings(verify_backup(
            args.dest, chain_key=getattr(args, "key_file", None)))
    from ._common import store_from
    store = store_from(args)
    report = backup_store(store, args.dest, args.sessions or None,
                          link_dest=args.link_dest, verify=args.verify_copies)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    else:
        mib = 1 << 20
        print(f"backed up {report.sessions} session{'s' if report.sessions != 1 else ''} "
              f"into {report.dest}: {report.files_copied} files copied "
              f"({report.bytes_copied / mib:.1f} MiB), {report.files_linked} linked "
              f"({report.bytes_linked / mib:.1f} MiB), {report.unchanged} sessions "
              f"unchanged, in {report.seconds:.2f} s")
        for session_id in report.removed:
            print(f"removed {session_id} (no longer in the store)")
        for session_id, why in sorted(report.failed.items()):
            print(f"not backed up: {session_id}: {why}")
    return 1 if report.failed else 0
