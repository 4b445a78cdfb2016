"""``fsstore lease``, ``fsstore queue`` and ``fsstore inputs``: who drives a session,
the work queued for it, and the input waiting for its next turn."""

from __future__ import annotations

import argparse
import time

from ._common import add_command, dumps, store_from, summarize, when


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lease = add_command(commands, "lease", "show who holds a session's execution lease",
                        "fsstore lease SESSION")
    lease.add_argument("session", metavar="SESSION")
    lease.add_argument("--reset", action="store_true",
                       help="replace a lease file neither of whose slots is readable")
    lease.set_defaults(run=run_lease)

    queue = add_command(commands, "queue", "list a session's queued work",
                        "fsstore queue SESSION --status dead")
    queue.add_argument("session", metavar="SESSION")
    queue.add_argument("--status", choices=("ready", "claimed", "dead"), default=None)
    queue.set_defaults(run=run_queue)

    inputs = add_command(commands, "inputs", "list the input waiting for a session's turns",
                         "fsstore inputs SESSION --status pending")
    inputs.add_argument("session", metavar="SESSION")
    inputs.add_argument("--status", choices=("pending", "claimed", "consumed"), default=None)
    inputs.set_defaults(run=run_inputs)


def run_lease(args: argparse.Namespace) -> int:
    store = store_from(args)
    if args.reset:
        floor = store.reset_lease(args.session)
        print(f"lease of {args.session} reset; tokens now start above {floor}")
        return 0
    info = store.lease_info(args.session)
    if info.owner is None:
        print(f"{args.session}: never leased")
        return 0
    owner = info.owner
    who = f"{owner.label or '-'} (pid {owner.pid} on {owner.host})"
    if not info.held:
        print(f"{args.session}: free; last held by {who}, token {info.token}")
        return 0
    left = info.expires_at - time.time()
    alive = {True: "running", False: "gone", None: "on another host"}[owner.alive()]
    state = f"expires in {left:.1f} s" if left > 0 else f"expired {-left:.1f} s ago"
    print(f"{args.session}: held by {who}, process {alive}; token {info.token}; {state}")
    return 0


def run_queue(args: argparse.Namespace) -> int:
    items = store_from(args).read_session(args.session).queue.items(args.status)
    if not items:
        print(f"{args.session}: no queued work" + (f" {args.status}" if args.status else ""))
        return 0
    print(f"{'ID':>8} {'STATUS':<8} {'PRIO':>4} {'TRIES':>5} {'ENQUEUED':<16} {'KIND':<16} "
          "PAYLOAD / WORKER / ERROR")
    for item in items:
        detail = dumps(item.payload)[:40]
        if item.status == "claimed":
            detail += f"  by {item.worker}"
        if item.error:
            detail += f"  ({summarize(item.error, 40)})"
        print(f"{item.id:>8} {item.status:<8} {item.priority:>4} "
              f"{item.attempts}/{item.max_attempts:<3} {when(item.enqueued_at):<16} "
              f"{item.kind[:16]:<16} {detail}")
    return 0


def run_inputs(args: argparse.Namespace) -> int:
    items = store_from(args).read_session(args.session).inputs.items(args.status)
    if not items:
        print(f"{args.session}: no turn inputs" + (f" {args.status}" if args.status else ""))
        return 0
    print(f"{'ID':>8} {'STATUS':<9} {'TURN':>5} {'SUBMITTED':<16} PAYLOAD")
    for item in items:
        payload = dumps(item.payload)[:60]
        turn = "-" if item.turn is None else str(item.turn)
        print(f"{item.id:>8} {item.status:<9} {turn:>5} {when(item.submitted_at):<16} "
              f"{payload}")
    return 0
