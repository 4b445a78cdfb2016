"""``fsstore state``, ``checkpoints``, ``fork``, ``lineage`` and ``gc``: a session's state,
its checkpoints, its forks and its attachments."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from ..defaults import DEFAULT_GRACE_SECONDS
from ._common import add_command, dumps, human_bytes, store_from, when

if TYPE_CHECKING:
    from ..lineage import Lineage, Relation


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    state = add_command(commands, "state", "print a session's state as JSON (now, or at a seq)",
                        "fsstore state SESSION --at 120 | jq .plan")
    state.add_argument("session", metavar="SESSION")
    state.add_argument("--at", type=int, default=None, metavar="SEQ",
                       help="the state right after this seq (default: the head)")
    state.add_argument("--checkpoint", default=None, metavar="ID",
                       help="the state a checkpoint froze")
    state.set_defaults(run=run_state)

    checkpoints = add_command(commands, "checkpoints", "list a session's checkpoints",
                              "fsstore checkpoints SESSION")
    checkpoints.add_argument("session", metavar="SESSION")
    checkpoints.set_defaults(run=run_checkpoints)

    fork = add_command(commands, "fork", "fork a session: a new one sharing its history up to "
                       "a point", "fsstore fork SESSION NEW --at-checkpoint 20261121T0552Z-ab12")
    fork.add_argument("session", metavar="SESSION")
    fork.add_argument("new", metavar="NEW", help="the new session's id")
    where = fork.add_mutually_exclusive_group()
    where.add_argument("--at-seq", type=int, default=None, metavar="SEQ",
                       help="end the history at this seq (default: the head)")
    where.add_argument("--at-checkpoint", default=None, metavar="ID",
                       help="end the history where this checkpoint was taken")
    fork.add_argument("--title", default=None, help="the new session's title")
    fork.set_defaults(run=run_fork)

    lineage = add_command(commands, "lineage", "draw the tree of sessions forked or spawned "
                          "from one another that a session belongs to",
                          "fsstore lineage SESSION")
    lineage.add_argument("session", metavar="SESSION")
    lineage.set_defaults(run=run_lineage)
    register_gc(commands)


def run_state(args: argparse.Namespace) -> int:
    reader = store_from(args).read_session(args.session)
    if args.checkpoint is not None:
        state = reader.load_checkpoint(args.checkpoint)
    elif args.at is not None:
        state = reader.state_at(args.at)
    else:
        state = reader.state()
    print(dumps(state, indent=2, sort_keys=True))
    for finding in reader.state_findings:
        print(f"fsstore: {finding}", file=sys.stderr)
    return 0


def run_checkpoints(args: argparse.Namespace) -> int:
    infos = store_from(args).read_session(args.session).checkpoints()
    if not infos:
        print(f"session {args.session} has no checkpoints")
        return 0
    width = max(len(info.id) for info in infos)
    print(f"{'CHECKPOINT':<{width}}  {'KIND':<9}  {'SEQ':>7}  {'CREATED':<16}  LABEL")
    for info in infos:
        print(f"{info.id:<{width}}  {info.kind:<9}  {info.seq:>7}  {when(info.created):<16}  "
              f"{info.label or ''}")
    return 0


def run_fork(args: argparse.Namespace) -> int:
    store = store_from(args)
    options = {} if args.title is None else {"title": args.title}
    with store.fork_session(args.session, args.new, at_seq=args.at_seq,
                            at_checkpoint=args.at_checkpoint, **options) as fork:
        origin = fork.parent
        assert origin is not None
        print(f"forked {origin.parent} at seq {origin.seq} into {fork.id} ({fork.head} events "
              "of history, shared with the parent)")
    return 0


def run_lineage(args: argparse.Namespace) -> int:
    lineage = store_from(args).lineage(args.session)
    for line in draw_lineage(lineage):
        print(line)
    return 0


def draw_lineage(lineage: Lineage) -> list[str]:
    """The tree of ``lineage`` from its root, one line per session: how each came from
    its parent (forked or spawned), at which of the parent's seqs (and turn, or
    checkpoint), the asked-for session marked."""
    root_gone = bool(lineage.ancestors) and not lineage.ancestors[-1].parent_exists
    lines = [lineage.root + (" (deleted)" if root_gone else "")
             + ("  <- this session" if lineage.root == lineage.session else "")]
    below: dict[str, list[Relation]] = {}
    for relation in lineage.tree:
        below.setdefault(relation.parent, []).append(relation)

    def draw(parent: str, prefix: str) -> None:
        edges = below.get(parent, [])
        for number, edge in enumerate(edges):
            last = number == len(edges) - 1
            where = f"at seq {edge.seq}"
            if edge.turn is not None:
                where += f", turn {edge.turn}"
            if edge.checkpoint is not None:
                where += f", checkpoint {edge.checkpoint}"
            mark = "  <- this session" if edge.session == lineage.session else ""
            lines.append(f"{prefix}{'`-- ' if last else '|-- '}{edge.session} "
                         f"({edge.kind.value} {where}){mark}")
            draw(edge.session, prefix + ("    " if last else "|   "))

    draw(lineage.root, "")
    if len(lines) == 1:
        lines.append("  no parent, no forks and no spawned sessions")
    return lines


def register_gc(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gc = add_command(commands, "gc", "remove a session's attachments that nothing refers to",
                     "fsstore gc SESSION --dry-run")
    gc.add_argument("session", metavar="SESSION")
    gc.add_argument("--dry-run", action="store_true", help="report, remove nothing")
    gc.add_argument("--grace", type=float, default=DEFAULT_GRACE_SECONDS, metavar="SECONDS",
                    help="keep unreferenced blobs younger than this (default: an hour)")
    gc.add_argument("--verify", action="store_true", help="also hash every blob")
    gc.set_defaults(run=run_gc)


def run_gc(args: argparse.Namespace) -> int:
    with store_from(args).open_session(args.session) as session:
        report = session.gc(grace=args.grace, dry_run=args.dry_run, verify=args.verify)
    verb = "would reclaim" if report.dry_run else "reclaimed"
    print(f"scanned {report.scanned} blobs ({human_bytes(report.scanned_bytes)}); kept "
          f"{report.kept} ({human_bytes(report.kept_bytes)}, {report.young} young); {verb} "
          f"{report.reclaimed} ({human_bytes(report.reclaimed_bytes)})")
    for finding in report.damaged:
        print(finding)
    return 1 if any(f.level == "problem" for f in report.damaged) else 0
