"""``fsstore pin``: the heads of chained sessions written to a pins file; and what
``fsstore verify`` does with pins (``--pins``, ``--expect-head``) and head hashes
(docs/FORMAT.md 3.5)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from ._common import add_command, store_from

if TYPE_CHECKING:
    from ..errors import Finding
    from ..store import Store


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pin = add_command(
        commands, "pin", "write the head_hash of chained sessions to a pins file",
        "fsstore pin -o ../pins.json && git -C .. commit -m pins pins.json",
        description="Write each chained session's head_hash (the hash chain's value "
                    "after its head: it vouches for the whole history up to it), uid and "
                    "key id to a small JSON file, for `fsstore verify --pins FILE` to "
                    "check later that the sessions still hold that history: it catches "
                    "the end of a log cut off and a session folder put back from an older "
                    "copy, which a chain alone cannot tell from the genuine shorter log. "
                    "Keep the file where whoever can change the store cannot (commit it "
                    "to git, keep it elsewhere): a file inside the store is refused. "
                    "Sessions without a chain are left out (named on stderr; exit 1 when "
                    "one was named). A keyed chain needs its key (--key-file, or "
                    "FSSTORE_CHAIN_KEY / FSSTORE_CHAIN_KEY_FILE).")
    pin.add_argument("sessions", nargs="*", metavar="SESSION",
                     help="only these sessions (default: every chained session)")
    pin.add_argument("-o", "--output", metavar="FILE",
                     help="the pins file, replaced atomically (default: print it)")
    pin.set_defaults(run=run_pin)


def run_pin(args: argparse.Namespace) -> int:
    from ..chain_pins import encode_pins, pins_of, write_pins

    store = store_from(args)
    named = args.sessions or None
    pins, unchained = pins_of(store, named)
    for session_id in unchained:
        print(f"fsstore: session {session_id} has no hash chain: not pinned",
              file=sys.stderr)
    if args.output in (None, "-"):
        sys.stdout.write(encode_pins(pins).decode())
    else:
        write_pins(args.output, pins, store_root=store.path)
        print(f"pinned {len(pins)} session{'s' if len(pins) != 1 else ''} to {args.output}")
    return 1 if named and unchained else 0


def add_verify_options(verify: argparse.ArgumentParser) -> None:
    """``fsstore verify``'s options for pins and head hashes."""
    verify.add_argument("--expect-head", metavar="SEQ:HEX",
                        help="with SESSION: check that the session still holds the history "
                             "this head_hash (kept from before) vouched for; later records "
                             "get a note")
    verify.add_argument("--pins", metavar="FILE",
                        help="check each pinned session against its pin in FILE (written "
                             "by `fsstore pin`)")
    verify.add_argument("--exact", action="store_true",
                        help="with --expect-head or --pins: the head must be the pinned one "
                             "(records written since are a problem)")


def usage_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with how ``fsstore verify``'s pins options were combined, if
    anything."""
    if args.expect_head is not None and args.pins is not None:
        return "give --expect-head or --pins, not both"
    if args.expect_head is not None and not args.session:
        return "--expect-head needs the SESSION it was pinned from"
    if args.exact and args.expect_head is None and args.pins is None:
        return "--exact goes with --expect-head or --pins"
    return None


def verify_findings(args: argparse.Namespace) -> tuple[Store, list[Finding]]:
    """What ``fsstore verify`` finds, with its pins options (combined as
    :func:`usage_problem` allows). A head hash or pins file that is not one is refused
    (InvalidPins) before the store is read."""
    from ..chain_pins import parse_head_hash, read_pins, verify_head, verify_pins
    from ._progress import progress

    if args.expect_head is not None:
        parse_head_hash(args.expect_head)
    pins = None if args.pins is None else read_pins(args.pins)
    store = store_from(args)
    named = [args.session] if args.session else None
    total = 1 if named else len(store.session_ids())
    with progress(total, "verify", unit="session",
                  force=getattr(args, "progress", False)) as bar:
        def step(_: str) -> None:
            bar.update(1)

        if pins is not None:
            findings = verify_pins(store, pins, named, exact=args.exact, on_session=step)
        elif args.expect_head is not None:
            findings = verify_head(store, args.session, args.expect_head, exact=args.exact,
                                   on_session=step)
        else:
            findings = store.verify(named, on_session=step)
    return store, findings


def print_heads(store: Store, session_id: str | None) -> None:
    """A line per chained session (or for ``session_id``): its head_hash and mode."""
    from ..chain_pins import head_lines

    ids = [session_id] if session_id else store.session_ids()
    for line in head_lines(store, ids):
        print(line)

