"""``fsstore tail`` and ``fsstore watch``: follow a session's events, or a store's
sessions, as they are written."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from ._common import add_command, clock, dumps, event_json, store_from, summarize

if TYPE_CHECKING:
    from ..log_format import Event
    from ..watch import LogCleared


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tail = add_command(commands, "tail", "print a session's last events; with -f, follow it",
                       "fsstore tail SESSION -f --json | jq .kind")
    tail.add_argument("session", metavar="SESSION")
    tail.add_argument("-n", "--lines", type=int, default=10, metavar="N",
                      help="start with the last N events (default 10)")
    tail.add_argument("-f", "--follow", action="store_true",
                      help="keep printing events as they are written (Ctrl-C to stop)")
    tail.add_argument("--after", type=int, default=None, metavar="SEQ",
                      help="start after this seq instead of the last N")
    tail.add_argument("--json", action="store_true", help="JSON lines, as `fsstore cat`")
    tail.set_defaults(run=run_tail)

    watch = add_command(commands, "watch", "print sessions created, changed and deleted",
                        "fsstore watch --store ./fsstore-demo")
    watch.add_argument("path", nargs="?", metavar="STORE", help="the store (default: see --store)")
    watch.add_argument("--json", action="store_true", help="one JSON object per change")
    watch.set_defaults(run=run_watch)


def _print(item: Event | LogCleared, as_json: bool) -> None:
    from ..watch import LogCleared

    if isinstance(item, LogCleared):
        if as_json:
            print(json.dumps({"cleared": True, "log_start": item.log_start}), flush=True)
        else:
            print(f"-- log cleared; it now starts at seq {item.log_start}", flush=True)
    elif as_json:
        print(event_json(item), flush=True)
    else:
        print(f"#{item.seq:<6} {clock(item.ts)}  t{item.turn:<3} {item.kind:<14} "
              f"{summarize(item.data)}", flush=True)


def run_tail(args: argparse.Namespace) -> int:
    reader = store_from(args).read_session(args.session)
    if args.after is not None:
        after = args.after
    else:
        # The last N records (the store's own too, as the watcher delivers them), read
        # from the end of the log; then everything after them.
        after = reader.head
        for event in reader.events(until_seq=after, last=max(args.lines, 0),
                                   include_internal=True):
            _print(event, args.json)
    watcher = reader.watch(after_seq=after, poll_interval=0.5)
    try:
        for item in watcher.poll():
            _print(item, args.json)
        if args.follow:
            for item in watcher:
                _print(item, args.json)
    except KeyboardInterrupt:
        pass
    finally:
        watcher.close()
    sys.stdout.flush()
    return 0


def run_watch(args: argparse.Namespace) -> int:
    store = store_from(args, args.path)
    watcher = store.watch(poll_interval=0.5, include_existing=True)
    try:
        for change in watcher:
            if args.json:
                print(dumps(change._asdict()), flush=True)
            else:
                head = "" if change.head is None else f" head {change.head}"
                print(f"{change.kind:<8} {change.session_id}{head}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        watcher.close()
    return 0
