"""Usage accounting: the tokens and cost of a session's messages, and its execution
statistics, folded from the log like the state (docs/FORMAT.md, section 20.4).

The fold is kept in snapshots and checkpoints (the body key ``usage``), so reading it
costs a snapshot load and the records after it, not the history. It counts:

- tokens and cost by model and by day (UTC) of the record: what was spent. An edit
  replaces the old version's usage (taken back from the day it was booked on) with
  the new one's (a message saved while it streamed and edited when done counts once);
  a delete keeps it (the call was paid for).
- the live messages by role, their tool calls and tool results with errors: the
  conversation as it is, so an edit and a delete change them.
- finished turns and their wall time: from the first message of a turn to its
  ``fsstore.turn_finished`` record.
"""

from __future__ import annotations

import datetime as _dt
import functools
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import msgspec

from .errors import InvalidSetting

TOKEN_FIELDS = ("input", "output", "cached_input", "cache_write", "reasoning")


class UsageTotals(msgspec.Struct, kw_only=True):
    """Tokens and cost summed over messages. ``messages`` counts the messages whose
    usage or cost was recorded; ``cost`` maps a currency to an amount."""

    input: int = 0
    output: int = 0
    cached_input: int = 0
    cache_write: int = 0
    reasoning: int = 0
    messages: int = 0
    cost: dict[str, float] = msgspec.field(default_factory=dict)

    @property
    def total_tokens(self) -> int:
        return self.input + self.output

    def add(self, other: UsageTotals, sign: int = 1) -> None:
        for name in TOKEN_FIELDS:
            setattr(self, name, getattr(self, name) + sign * getattr(other, name))
        self.messages += sign * other.messages
        for currency, amount in other.cost.items():
            total = self.cost.get(currency, 0.0) + sign * amount
            self.cost[currency] = total

    def is_empty(self) -> bool:
        return (not self.messages and not any(getattr(self, n) for n in TOKEN_FIELDS)
                and not any(self.cost.values()))

    @classmethod
    def summed(cls, parts: Iterable[UsageTotals]) -> UsageTotals:
        total = cls()
        for part in parts:
            total.add(part)
        return total


class ExecutionStats(NamedTuple):
    """What a session did: its live messages by role, their tool calls and the tool
    results that were errors, the tokens and cost of its messages, and its finished
    turns with their wall time in seconds (total and longest)."""

    messages_by_role: dict[str, int]
    tool_calls: int
    tool_errors: int
    usage: UsageTotals
    turns: int
    turn_seconds: float
    longest_turn_seconds: float

    @property
    def messages(self) -> int:
        return sum(self.messages_by_role.values())


class _Account(NamedTuple):
    """What one message version counts for."""

    role: str
    model: str
    usage: UsageTotals
    tool_calls: int
    tool_errors: int


USAGE_GROUPINGS = (None, "model", "day")


def check_usage_by(by: object) -> None:
    if by not in USAGE_GROUPINGS:
        raise InvalidSetting(f"by must be None, 'model' or 'day', not {by!r}")


def day_of(ts: float) -> str:
    """The UTC date of ``ts``, ``YYYY-MM-DD``."""
    return _day_of_epoch_day(int(ts // 86400))


@functools.lru_cache(maxsize=64)
def _day_of_epoch_day(day: int) -> str:
    try:
        return (_dt.date(1970, 1, 1) + _dt.timedelta(days=day)).isoformat()
    except OverflowError:
        # A ts past the year 9999 (or before 1), which the log holds: the fold must not
        # fail on it. The calendar repeats every 400 years (146,097 days).
        cycles, rest = divmod(day, 146_097)
        date = _dt.date(1970, 1, 1) + _dt.timedelta(days=rest)
        return f"{date.year + 400 * cycles}-{date:%m-%d}"


def account(message: Mapping[str, Any]) -> _Account:
    """What a stored message (its msgpack map) counts for."""
    metadata = message.get("metadata") or {}
    usage = metadata.get("usage") or {}
    cost = metadata.get("cost")
    totals = _tokens(usage)
    if cost is not None:
        totals.cost[str(cost.get("currency", "USD"))] = float(cost["amount"])
    if usage or cost is not None:
        totals.messages = 1
    calls = errors = 0
    for part in message.get("parts") or ():
        kind = part.get("type")
        if kind == "tool_call":
            calls += 1
        elif kind == "tool_result" and part.get("is_error"):
            errors += 1
    return _Account(str(message["role"]), str(metadata.get("model") or ""), totals, calls,
                    errors)


def account_record(message: Mapping[str, Any], ts: float) -> dict[str, Any]:
    """The ``was`` map an edit or delete record holds: what the version it replaces
    (written at ``ts``) counted for, and on which day (docs/FORMAT.md, section 20.1)."""
    acct = account(message)
    return {"role": acct.role, "model": acct.model,
            "usage": msgspec.structs.asdict(acct.usage),
            "tool_calls": acct.tool_calls, "tool_errors": acct.tool_errors,
            "day": day_of(ts)}


def _tokens(usage: Mapping[str, Any]) -> UsageTotals:
    get = usage.get
    return UsageTotals(input=int(get("input", 0)), output=int(get("output", 0)),
                       cached_input=int(get("cached_input", 0)),
                       cache_write=int(get("cache_write", 0)),
                       reasoning=int(get("reasoning", 0)))


def _from_was(was: Mapping[str, Any]) -> _Account:
    usage = was.get("usage") or {}
    totals = _tokens(usage)
    totals.messages = int(usage.get("messages", 0))
    totals.cost = {str(k): float(v) for k, v in (usage.get("cost") or {}).items()}
    return _Account(str(was["role"]), str(was.get("model") or ""), totals,
                    int(was.get("tool_calls", 0)), int(was.get("tool_errors", 0)))


class UsageFold:
    """The fold of message and turn_finished records (see the module docstring)."""

    def __init__(self) -> None:
        self.usage: dict[tuple[str, str], UsageTotals] = {}  # (model, day) -> totals
        self.roles: dict[str, int] = {}
        self.tool_calls = 0
        self.tool_errors = 0
        self.turns = 0
        self.turn_seconds = 0.0
        self.longest_turn = 0.0
        self.open_turn: tuple[int, float] | None = None  # (turn, first message ts)

    def _book(self, acct: _Account, day: str, sign: int, *, spend: bool = True) -> None:
        if spend and not acct.usage.is_empty():
            totals = self.usage.setdefault((acct.model, day), UsageTotals())
            totals.add(acct.usage, sign)
        self.roles[acct.role] = self.roles.get(acct.role, 0) + sign
        if not self.roles[acct.role]:
            del self.roles[acct.role]
        self.tool_calls += sign * acct.tool_calls
        self.tool_errors += sign * acct.tool_errors

    def apply(self, ts: float, turn: int, data: Mapping[str, Any]) -> None:
        """Fold one ``fsstore.message`` record."""
        op, day = data["op"], day_of(ts)
        if op == "add":
            self._book(account(data["message"]), day, 1)
        elif op == "edit":
            # The old version's usage is taken back from the day it was booked on (a
            # record from before "day" was kept: the edit's day).
            was = data["was"]
            self._book(_from_was(was), str(was.get("day") or day), -1)
            self._book(account(data["message"]), day, 1)
        elif op == "delete":
            self._book(_from_was(data["was"]), day, -1, spend=False)
        else:
            raise ValueError(f"unknown message op {op!r}")
        if self.open_turn is None or self.open_turn[0] != turn:
            self.open_turn = (turn, ts)

    def turn_finished(self, ts: float, turn: int) -> None:
        if self.open_turn is not None and self.open_turn[0] == turn:
            seconds = max(ts - self.open_turn[1], 0.0)
            self.turns += 1
            self.turn_seconds += seconds
            self.longest_turn = max(self.longest_turn, seconds)
            self.open_turn = None

    def is_empty(self) -> bool:
        return not (self.usage or self.roles or self.turns or self.open_turn)

    def totals(self, by: str | None = None) -> dict[str, UsageTotals]:
        """Totals keyed by model, by day, or all under ``""`` (``by=None``)."""
        found: dict[str, UsageTotals] = {}
        for (model, day), totals in sorted(self.usage.items()):
            key = {"model": model, "day": day, None: ""}[by]
            found.setdefault(key, UsageTotals()).add(totals)
        return found

    def stats(self) -> ExecutionStats:
        return ExecutionStats(dict(sorted(self.roles.items())), self.tool_calls,
                              self.tool_errors, UsageTotals.summed(self.usage.values()),
                              self.turns, self.turn_seconds, self.longest_turn)

    # --- in a snapshot body ---

    def body(self) -> dict[str, Any]:
        return {
            "totals": [[model, day, *(getattr(t, n) for n in TOKEN_FIELDS), t.messages,
                        t.cost] for (model, day), t in sorted(self.usage.items())],
            "roles": self.roles, "tool_calls": self.tool_calls,
            "tool_errors": self.tool_errors, "turns": self.turns,
            "turn_seconds": self.turn_seconds, "longest_turn": self.longest_turn,
            "open_turn": None if self.open_turn is None else list(self.open_turn)}

    @classmethod
    def from_body(cls, body: UsageBody | None) -> UsageFold:
        fold = cls()
        if body is None:
            return fold
        for row in body.totals:
            model, day, *counts, messages, cost = row
            totals = _tokens(dict(zip(TOKEN_FIELDS, counts, strict=True)))
            totals.messages, totals.cost = messages, dict(cost)
            fold.usage[(model, day)] = totals
        fold.roles = dict(body.roles)
        fold.tool_calls, fold.tool_errors = body.tool_calls, body.tool_errors
        fold.turns, fold.turn_seconds = body.turns, body.turn_seconds
        fold.longest_turn = body.longest_turn
        fold.open_turn = None if body.open_turn is None else (
            int(body.open_turn[0]), float(body.open_turn[1]))
        return fold


class UsageBody(msgspec.Struct):
    """The ``usage`` key of a snapshot body, decoded (docs/FORMAT.md, section 20.4)."""

    totals: list[tuple[str, str, int, int, int, int, int, int, dict[str, float]]]
    roles: dict[str, int]
    tool_calls: int
    tool_errors: int
    turns: int
    turn_seconds: float
    longest_turn: float
    open_turn: tuple[int, float] | None = None
