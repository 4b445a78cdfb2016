"""``fsstore ls``, ``show`` and ``cat``: reading a store without changing it."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from ..errors import FsStoreError, SessionNotFound
from ._common import add_command, clock, event_json, plain, store_from, summarize, when

if TYPE_CHECKING:
    from ..lineage import Relation


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ls = add_command(commands, "ls", "list the sessions of a store",
                     "fsstore ls ./fsstore-demo")
    ls.add_argument("path", nargs="?", metavar="STORE", help="the store (default: see --store)")
    ls.add_argument("--tag", action="append", default=None, metavar="TAG",
                    help="only sessions with this tag (repeat: with all of them)")
    ls.add_argument("--title", metavar="TEXT", help="only titles holding TEXT (any case)")
    ls.add_argument("--since", metavar="WHEN",
                    help="only sessions updated since WHEN: an ISO date or time, or a "
                         "duration back from now (30m, 12h, 7d, 2w)")
    ls.add_argument("--until", metavar="WHEN", help="only sessions updated before WHEN")
    ls.add_argument("--workspace", metavar="ID", help="only the members of a workspace")
    ls.add_argument("--order", choices=("id", "updated", "created"), default=None,
                    help="sort by id (the default), or newest first by update or creation")
    ls.add_argument("--limit", type=int, default=None, metavar="N",
                    help="at most N sessions; the next page's cursor is printed last")
    ls.add_argument("--cursor", metavar="CURSOR", help="the page after this cursor")
    ls.add_argument("--json", action="store_true",
                    help='one JSON object per session, then {"next_cursor": ...}')
    ls.set_defaults(run=run_ls)

    show = add_command(commands, "show", "print a session's turns and events (messages with "
                       "their parts, tool calls with their results, usage and cost), the "
                       "sessions spawned in each turn, and the session's totals, for reading",
                       "fsstore --store ./fsstore-demo show 20261121T055212Z-3fa9c2d1")
    show.add_argument("session", metavar="SESSION")
    show.set_defaults(run=run_show)

    cat = add_command(commands, "cat", "print a session's events as JSON lines (for grep, jq)",
                      "fsstore cat SESSION --after 100 | jq -r .kind")
    cat.add_argument("session", metavar="SESSION")
    cat.add_argument("--after", type=int, default=0, metavar="SEQ",
                     help="only events after this seq")
    cat.add_argument("--limit", type=int, default=None, metavar="N", help="at most N events")
    cat.add_argument("--all", action="store_true", dest="all_records",
                     help="include the store's own records (fsstore.* kinds: state, queue, "
                          "input, metadata, turn_finished)")
    cat.add_argument("--salvage", action="store_true",
                     help="read a damaged session: every record that still verifies, past "
                          "the damage; what was lost and where to stderr; changes nothing")
    cat.set_defaults(run=run_cat)


def run_ls(args: argparse.Namespace) -> int:
    store = store_from(args, args.path)
    if any(value is not None for value in (
            args.tag, args.title, args.since, args.until, args.workspace, args.order,
            args.limit, args.cursor)) or args.json:
        from .listing import run_paged

        return run_paged(store, args)
    ids = store.session_ids()
    if not ids:
        print(f"no sessions in {store.path}")
        return 0
    width = max(len(session_id) for session_id in ids)
    print(f"{'SESSION':<{width}}  {'RECORDS':>7}  {'CREATED':<16}  {'UPDATED':<16}  TITLE")
    damaged = 0
    for session_id in ids:
        try:
            info = store.read_session(session_id).info()
        except SessionNotFound:
            continue  # deleted meanwhile
        except (FsStoreError, OSError) as exc:  # one damaged session hides no other
            damaged += 1
            print(f"{session_id:<{width}}  {'?':>7}  damaged: {exc}")
            continue
        print(f"{info.id:<{width}}  {info.event_count:>7}  {when(info.created):<16}  "
              f"{when(info.updated):<16}  {plain(info.title or '')}")
    if damaged:
        print(f"{damaged} damaged session(s): run `fsstore verify` for details")
    return 1 if damaged else 0


def run_show(args: argparse.Namespace) -> int:
    from ..lineage import RelationKind
    from ..turns import MESSAGE_RECORD
    from .conversation import Conversation, totals_lines, usage_line

    store = store_from(args)
    session = store.read_session(args.session)
    info = session.info()
    print(f"session {info.id}" + (f": {plain(info.title)}" if info.title else ""))
    if info.tags:
        print(f"tags: {plain(', '.join(info.tags))}")
    if info.parent is not None:
        print(f"forked from {info.parent.parent} at seq {info.parent.seq}")
    if info.spawned_by is not None:
        in_turn = "" if info.spawned_by.turn is None else f" (turn {info.spawned_by.turn})"
        print(f"spawned by {info.spawned_by.parent} at seq {info.spawned_by.seq}{in_turn}")
    print(f"{info.event_count} records, seq {info.head - info.event_count + 1}..{info.head}")
    head_hash = session.head_hash  # the hash chain's value after the head (FORMAT.md 3.4)
    if head_hash is not None:
        print(f"head_hash: {head_hash}")
    if info.history_start > session.log_tail.log_start:
        print(f"history starts at seq {info.history_start} (older history dropped by "
              "retention)")
    # The sessions this one spawned, from their manifests: each under the turn it
    # records (the turn of this session's record at the seq it was spawned at).
    spawned: dict[int | None, list[Relation]] = {}
    for child in store.lineage(args.session).children:
        if child.kind is RelationKind.SPAWNED:
            spawned.setdefault(child.turn, []).append(child)
    turns = session.get_turns()
    conversation = Conversation(event for turn in turns for event in turn.events)
    for turn in turns:
        state = "finished" if turn.finished else "not finished"
        print(f"\nturn {turn.number} ({len(turn.events)} events, {state})")
        for event in turn.events:
            if event.kind == MESSAGE_RECORD:
                print("\n".join(conversation.lines(event)))
            else:
                print(f"  #{event.seq:<6} {clock(event.ts)}  {plain(event.kind):<12} "
                      f"{summarize(event.data)}")
        spent = conversation.turn_usage(turn.events)
        if not spent.is_empty():
            print(f"  turn usage: {usage_line(spent)}")
        for child in spawned.pop(turn.number, []):
            print(f"  spawned {child.session} at seq {child.seq}")
    rest = [child for children in spawned.values() for child in children]
    if rest:
        print("\nspawned outside the turns above")
        for child in sorted(rest, key=lambda r: (r.seq, r.session)):
            print(f"  spawned {child.session} at seq {child.seq}")
    for line in totals_lines(session):
        print(line)
    return 0


def run_cat(args: argparse.Namespace) -> int:
    if args.salvage:
        from . import salvage

        return salvage.run_cat_salvage(args)
    store = store_from(args)
    write = sys.stdout.write
    session = store.read_session(args.session)
    start = session.history_start
    if start > session.log_tail.log_start and args.after < start - 1:
        # on stderr: stdout stays JSON lines
        print(f"fsstore: history starts at seq {start} (older history dropped by "
              "retention)", file=sys.stderr)
    for event in session.events(
            args.after, limit=args.limit, include_internal=args.all_records):
        write(event_json(event) + "\n")
    return 0

