"""``fsstore usage``: the tokens and cost of a store's (or a session's) messages."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from ._common import add_command, dumps, plain, store_from

if TYPE_CHECKING:
    from ..usage import UsageTotals

#: The table's columns: a heading and the UsageTotals field it shows.
COLUMNS = (("INPUT", "input"), ("OUTPUT", "output"), ("CACHED", "cached_input"),
           ("CACHE-WRITE", "cache_write"), ("REASONING", "reasoning"),
           ("MESSAGES", "messages"))
_FIRST = {None: "USAGE", "model": "MODEL", "session": "SESSION", "day": "DAY (UTC)"}


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    usage = add_command(
        commands, "usage", "print the tokens and cost of the store's messages (or of one "
        "session's), in total or by model, session or day",
        "fsstore usage --by model",
        description="Print the tokens (input, output, cached input, cache write, "
                    "reasoning), the messages with a usage and the cost per currency of "
                    "the store's messages, or of SESSION's: summed from each session's "
                    "usage fold (kept in its snapshots), as a table or as JSON. A session "
                    "that cannot be read is left out and named on stderr (exit status 1).")
    usage.add_argument("session", nargs="?", default=None, metavar="SESSION",
                       help="only this session (default: every session of the store)")
    usage.add_argument("--by", choices=("model", "session", "day"), default=None,
                       help="one row per model, session or day (UTC); default: one total")
    usage.add_argument("--json", action="store_true", help="print JSON instead of a table")
    usage.set_defaults(run=run_usage)


def run_usage(args: argparse.Namespace) -> int:
    store = store_from(args)
    chosen = None if args.session is None else [args.session]
    found = store.usage(by=args.by, sessions=chosen)
    if args.json:
        print(dumps({"by": args.by, "session": args.session,
                     "groups": {key: totals_json(t) for key, t in found.items()},
                     "total": totals_json(found.total), "skipped": found.skipped},
                    indent=2))
    elif not found:
        where = f"session {args.session}" if args.session else str(store.path)
        print(f"no usage recorded in {plain(where)}")
    else:
        scope = args.session or "all sessions"
        for line in usage_table(found, args.by, scope):
            print(line)
    for session_id, why in found.skipped.items():
        print(f"fsstore: left out session {session_id}, which cannot be read: {why} (run "
              "`fsstore verify` for details)", file=sys.stderr)
    return 1 if found.skipped else 0


def totals_json(totals: UsageTotals) -> dict[str, Any]:
    """A UsageTotals as JSON: every token count, the total tokens, messages, cost."""
    from ..usage import TOKEN_FIELDS

    found: dict[str, Any] = {name: getattr(totals, name) for name in TOKEN_FIELDS}
    found.update(total_tokens=totals.total_tokens, messages=totals.messages,
                 cost=dict(sorted(totals.cost.items())))
    return found


def usage_table(groups: dict[str, UsageTotals], by: str | None, scope: str) -> list[str]:
    """The aligned table of ``groups``: one row each (``scope`` names the one row of
    ``by=None``), and a total row when there are several."""
    from ..usage import UsageTotals

    rows = [[_label(key, by, scope), *_cells(totals)] for key, totals in groups.items()]
    if len(rows) > 1:
        rows.append(["total", *_cells(UsageTotals.summed(groups.values()))])
    heading = [_FIRST[by], *(name for name, _ in COLUMNS), "COST"]
    widths = [max(len(row[i]) for row in [heading, *rows]) for i in range(len(heading) - 1)]
    lines = []
    for row in [heading, *rows]:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in
                                             zip(row[1:-1], widths[1:], strict=True)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return lines


def _label(key: str, by: str | None, scope: str) -> str:
    if by is None:
        return plain(scope)
    if by == "model" and not key:
        return "(no model)"
    return plain(key)


def _cells(totals: UsageTotals) -> list[str]:
    return [f"{getattr(totals, field):,}" for _, field in COLUMNS] + [cost_text(totals.cost)]


def cost_text(cost: dict[str, float]) -> str:
    """``0.0042 USD, 1.50 EUR``; ``-`` for no cost."""
    shown = [f"{money(amount)} {plain(currency)}" for currency, amount in sorted(cost.items())
             if amount]
    return ", ".join(shown) or "-"


def money(amount: float) -> str:
    """An amount with 2 decimals, or as many as it needs up to 6: ``2.25``, ``0.0042``."""
    text = f"{amount:,.6f}".rstrip("0")
    whole, _, decimals = text.partition(".")
    return f"{whole}.{decimals.ljust(2, '0')}"


def tokens_text(totals: UsageTotals | Any) -> str:
    """``812 in / 31 out`` and the cached input, cache writes and reasoning when not 0;
    of a UsageTotals or a TokenUsage."""
    text = f"{totals.input:,} in / {totals.output:,} out"
    extra = [f"{label} {getattr(totals, name):,}" for label, name in (
        ("cached", "cached_input"), ("cache write", "cache_write"),
        ("reasoning", "reasoning")) if getattr(totals, name)]
    return text + (f" ({', '.join(extra)})" if extra else "")
