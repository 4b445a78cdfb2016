"""The rows of the Parquet export (``parquet_export.py``): what each table holds, built
from a session's records. README, "Parquet and SQL", describes the tables.

``events`` and ``usage`` rows are made per record, for the part being written;
``messages`` and ``tool_calls`` are the conversation as it is, so a record changes rows
made before: a :class:`SessionRows` gathers the newest change of each message and call,
and :func:`apply_messages` / :func:`apply_calls` apply them to the rows read back from
the session's file, each only when newer than the row (a redo applies nothing twice).
"""

from __future__ import annotations

import datetime
import json
import math
from typing import Any

import msgspec

from .log_format import Event
from .turns import MESSAGE_RECORD
from .usage import TOKEN_FIELDS, account, day_of

_COMPACT = (",", ":")
_encode_json = msgspec.json.Encoder().encode
_TOKEN_COLUMNS = tuple(f"{name}_tokens" for name in TOKEN_FIELDS)
_USAGE_COLUMNS = (*_TOKEN_COLUMNS, "cost", "currency")
#: printable's depth (fsstore.cli._common.MAX_PRINT_DEPTH), not imported at start.
_MAX_DEPTH = 100


# --- JSON text of stored values -----------------------------------------------------------


def _json(value: Any) -> str:
    """JSON text of a stored value in the forms `fsstore cat` prints (bytes as
    ``{"$base64": ...}``, a map with keys that are not str as ``{"$map": ...}``): one
    encoding of stored values for every way out of the store."""
    if _plain(value, 0):
        # The common case, which printable would leave as it is: msgspec writes the same
        # JSON (a float's exponent may be spelled 1e300 for 1e+300) ten times faster.
        return _msgspec_json(value)
    from .cli._common import printable

    return json.dumps(printable(value), ensure_ascii=False, allow_nan=False,
                      separators=_COMPACT)


def _plain(value: Any, depth: int) -> bool:
    """Whether ``value`` is JSON as it is: str keys, no bytes, finite floats, and not
    nested deeper than printable cuts (``{"$deep": N}``)."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return True
    if kind is float:
        return math.isfinite(value)
    if depth >= _MAX_DEPTH:
        return False
    if kind is dict:
        return all(type(key) is str and _plain(item, depth + 1)
                   for key, item in value.items())
    if kind is list:
        return all(_plain(item, depth + 1) for item in value)
    return False


def _parts_json(parts: Any) -> str:
    """JSON of a message's parts, which the writer checked (message_types.check_message):
    JSON values and finite numbers but for a file part's ``data`` and a reasoning part's
    ``signature``, which may be bytes. Without those, msgspec encodes them the same as
    :func:`_json`, ten times faster; with them, :func:`_json`."""
    if isinstance(parts, list) and not any(
            isinstance(part, dict) and (isinstance(part.get("data"), bytes)
                                        or isinstance(part.get("signature"), bytes))
            for part in parts):
        try:
            return _msgspec_json(parts)
        except (TypeError, ValueError, OverflowError):
            pass
    return _json(parts)


def _record_json(data: dict[str, Any]) -> str:
    """JSON of a message record's data (as :func:`_parts_json`)."""
    message = data.get("message")
    parts = message.get("parts") if isinstance(message, dict) else None
    if parts is None or isinstance(parts, list) and not any(
            isinstance(part, dict) and (isinstance(part.get("data"), bytes)
                                        or isinstance(part.get("signature"), bytes))
            for part in parts):
        try:
            return _msgspec_json(data)
        except (TypeError, ValueError, OverflowError):
            pass
    return _json(data)


def _msgspec_json(value: Any) -> str:
    return _encode_json(value).decode()


# --- the schemas --------------------------------------------------------------------------


def table_schemas(pa: Any) -> dict[str, Any]:
    ts = pa.timestamp("us", tz="UTC")
    tokens = [pa.field(name, pa.int64()) for name in _TOKEN_COLUMNS]
    return {
        "events": pa.schema([
            pa.field("seq", pa.int64(), nullable=False), pa.field("ts", pa.float64()),
            pa.field("time", ts), pa.field("turn", pa.int64()), pa.field("kind", pa.string()),
            pa.field("data", pa.string()), pa.field("inherited", pa.bool_()),
            pa.field("op", pa.string()), pa.field("message_id", pa.string()),
            pa.field("role", pa.string()), pa.field("text", pa.string()),
            pa.field("model", pa.string()), *tokens,
            pa.field("cost", pa.float64()), pa.field("currency", pa.string())]),
        "usage": pa.schema([
            pa.field("seq", pa.int64(), nullable=False), pa.field("ts", pa.float64()),
            pa.field("time", ts), pa.field("day", pa.date32()), pa.field("turn", pa.int64()),
            pa.field("message_id", pa.string()), pa.field("op", pa.string()),
            pa.field("model", pa.string()), *tokens, pa.field("messages", pa.int64()),
            pa.field("cost", pa.float64()), pa.field("currency", pa.string()),
            pa.field("inherited", pa.bool_())]),
        "messages": pa.schema([
            pa.field("id", pa.string(), nullable=False), pa.field("role", pa.string()),
            pa.field("text", pa.string()), pa.field("content", pa.string()),
            pa.field("model", pa.string()), pa.field("provider", pa.string()),
            pa.field("finish_reason", pa.string()), *tokens,
            pa.field("cost", pa.float64()), pa.field("currency", pa.string()),
            pa.field("version", pa.int64()), pa.field("first_seq", pa.int64()),
            pa.field("seq", pa.int64()), pa.field("turn", pa.int64()),
            pa.field("created", ts), pa.field("updated", ts),
            pa.field("deleted", pa.bool_()), pa.field("redacted", pa.bool_()),
            pa.field("inherited", pa.bool_())]),
        "tool_calls": pa.schema([
            pa.field("call_id", pa.string(), nullable=False), pa.field("name", pa.string()),
            pa.field("arguments", pa.string()), pa.field("message_id", pa.string()),
            pa.field("seq", pa.int64()), pa.field("ts", pa.float64()),
            pa.field("time", ts), pa.field("turn", pa.int64()),
            pa.field("result", pa.string()), pa.field("is_error", pa.bool_()),
            pa.field("result_message_id", pa.string()), pa.field("result_seq", pa.int64()),
            pa.field("result_ts", pa.float64()), pa.field("deleted", pa.bool_()),
            pa.field("inherited", pa.bool_())]),
    }


def micros(ts: Any) -> int | None:
    """Microseconds since the epoch, None for what is no time (NaN, out of range)."""
    if not isinstance(ts, (int, float)) or not math.isfinite(ts) or abs(ts) > 2**52:
        return None
    return int(round(ts * 1_000_000))


def _date(day: str) -> int | None:
    """The days since the epoch of a usage fold's ``YYYY-MM-DD`` (a year past 9999, or
    before 1, as usage.day_of writes it: Parquet's date holds it, Python's does not)."""
    if len(day) < 7 or day[-6] != "-" or day[-3] != "-":
        return None
    try:
        number, month, date = int(day[:-6]), int(day[-5:-3]), int(day[-2:])
        # Counted in a year of the same place in the 400-year cycle (146,097 days).
        base = 2000 + (number - 2000) % 400
        days = (datetime.date(base, month, date) - datetime.date(1970, 1, 1)).days
    except ValueError:
        return None
    return days + (number - base) // 400 * 146_097


# --- building rows ------------------------------------------------------------------------


def _text(parts: Any) -> str:
    return "\n".join(str(part.get("text", "")) for part in parts or ()
                     if isinstance(part, dict) and part.get("type") == "text")


def _usage_columns(metadata: dict[str, Any]) -> dict[str, Any]:
    usage = metadata.get("usage") or {}
    cost = metadata.get("cost")
    columns: dict[str, Any] = {column: usage.get(name) if usage else None
                               for name, column in zip(TOKEN_FIELDS, _TOKEN_COLUMNS,
                                                       strict=True)}
    if usage:
        columns.update({column: int(usage.get(name, 0)) for name, column in
                        zip(TOKEN_FIELDS, _TOKEN_COLUMNS, strict=True)})
    columns["cost"] = None if cost is None else float(cost.get("amount", 0.0))
    columns["currency"] = None if cost is None else str(cost.get("currency", "USD"))
    return columns


class EventColumns:
    """The events of one part, column by column (a dict per row costs twice as much):
    the columns every record has, and the message columns of the message records."""

    def __init__(self) -> None:
        self.seq: list[int] = []
        self.ts: list[float] = []
        self.turn: list[int] = []
        self.kind: list[str] = []
        self.data: list[str] = []
        self.messages: list[tuple[int, dict[str, Any]]] = []  # (row, its message columns)

    def __len__(self) -> int:
        return len(self.seq)

    def table(self, pa: Any, schema: Any, fork_seq: int) -> Any:
        import pyarrow.compute as pc

        seq = pa.array(self.seq, pa.int64())
        ts = pa.array(self.ts, pa.float64())
        # NaN, infinite or out-of-range times have no timestamp: null.
        usable = pc.and_(pc.is_finite(ts), pc.less(pc.abs(ts), 2.0**52))
        micros = pc.round(pc.multiply(pc.if_else(usable, ts, pa.scalar(None, pa.float64())),
                                      1_000_000.0))
        columns: dict[str, Any] = {
            "seq": seq, "ts": ts, "time": pc.cast(micros, pa.int64()).cast(schema.field(
                "time").type), "turn": pa.array(self.turn, pa.int64()),
            "kind": pa.array(self.kind, pa.string()),
            "data": pa.array(self.data, pa.string()),
            "inherited": pc.less_equal(seq, pa.scalar(fork_seq, pa.int64()))}
        count = len(self.seq)
        for name in schema.names:
            if name not in columns:
                values: list[Any] = [None] * count
                for number, row in self.messages:
                    values[number] = row.get(name)
                columns[name] = pa.array(values, schema.field(name).type)
        return pa.Table.from_arrays([columns[name] for name in schema.names], schema=schema)


class SessionRows:
    """The rows one export of one session builds: event and usage rows for the parts
    being written, and the updates of its messages and tool calls."""

    def __init__(self, fork_seq: int) -> None:
        self.fork_seq = fork_seq
        self.events = EventColumns()
        self.usage: list[dict[str, Any]] = []
        self.messages: dict[str, dict[str, Any]] = {}
        self.calls: dict[str, dict[str, Any]] = {}
        self.views_changed = False

    def next_part(self) -> None:
        self.events, self.usage = EventColumns(), []

    def add(self, event: Event) -> None:
        events = self.events
        events.seq.append(event.seq)
        events.ts.append(event.ts)
        events.turn.append(event.turn)
        events.kind.append(event.kind)
        if event.kind == MESSAGE_RECORD and isinstance(event.data, dict):
            events.data.append(_record_json(event.data))
            row: dict[str, Any] = {}
            events.messages.append((len(events.seq) - 1, row))
            self._message(event, row, event.seq <= self.fork_seq)
        else:
            events.data.append(_json(event.data))

    def _message(self, event: Event, row: dict[str, Any], inherited: bool) -> None:
        data = event.data
        op = data.get("op")
        message = data.get("message")
        row["op"] = op
        row["message_id"] = message.get("id") if isinstance(message, dict) else data.get("id")
        self.views_changed = True
        if isinstance(message, dict):
            metadata = message.get("metadata") or {}
            row.update(role=message.get("role"), text=_text(message.get("parts")),
                       model=metadata.get("model"), **_usage_columns(metadata))
        self._ledger(event, data, inherited)
        self._view(event, data, inherited, row)

    def _ledger(self, event: Event, data: dict[str, Any], inherited: bool) -> None:
        """What the record books in the usage fold (usage.py): an add its usage; an edit
        minus what the version it replaces counted (on that version's model and day)
        and plus its own; a delete nothing (the call was paid for)."""
        base = {"seq": event.seq, "ts": event.ts, "time": micros(event.ts),
                "turn": event.turn, "message_id": row_id(data), "op": data.get("op"),
                "inherited": inherited}
        day = day_of(event.ts)
        if data.get("op") == "edit" and isinstance(data.get("was"), dict):
            was = data["was"]
            usage = was.get("usage") or {}
            tokens = {column: -int(usage.get(name, 0)) for name, column in
                      zip(TOKEN_FIELDS, _TOKEN_COLUMNS, strict=True)}
            costs = sorted((usage.get("cost") or {}).items()) or [(None, None)]
            if any(tokens.values()) or usage.get("messages") or costs[0][0] is not None:
                for number, (currency, amount) in enumerate(costs):
                    self.usage.append({
                        **base, "day": _date(str(was.get("day") or day)),
                        "model": str(was.get("model") or ""),
                        **(tokens if number == 0 else dict.fromkeys(tokens, 0)),
                        "messages": -int(usage.get("messages", 0)) if number == 0 else 0,
                        "cost": None if amount is None else -float(amount),
                        "currency": currency})
        message = data.get("message")
        if data.get("op") in ("add", "edit") and isinstance(message, dict):
            acct = account(message)
            if acct.usage.is_empty():
                return
            costs = sorted(acct.usage.cost.items()) or [(None, None)]
            for number, (currency, amount) in enumerate(costs):
                self.usage.append({
                    **base, "day": _date(day), "model": acct.model,
                    **{column: getattr(acct.usage, name) if number == 0 else 0
                       for name, column in zip(TOKEN_FIELDS, _TOKEN_COLUMNS, strict=True)},
                    "messages": acct.usage.messages if number == 0 else 0,
                    "cost": amount, "currency": currency})

    def _view(self, event: Event, data: dict[str, Any], inherited: bool,
              columns: dict[str, Any]) -> None:
        """Update the session's messages and calls by a message record (``columns``: its
        event row's message columns, made once)."""
        op, message = data.get("op"), data.get("message")
        message_id = row_id(data)
        if message_id is None:
            return
        stamp = micros(event.ts)
        prior = self.messages.get(message_id)
        if op == "delete":
            if prior is not None and prior["op"] != "delete":
                prior.update(deleted=True, seq=event.seq, updated=stamp)
            else:
                self.messages[message_id] = {"op": "delete", "seq": event.seq,
                                             "updated": stamp}
            self._drop(message_id, set(), event.seq)
            return
        if not isinstance(message, dict):
            return
        if op == "edit":
            self._drop(message_id, {part.get("call_id") for part in message.get("parts") or ()
                                    if isinstance(part, dict)}, event.seq)
        if prior is not None and prior.get("first_seq") is not None:
            created, first = prior["created"], prior["first_seq"]
        else:
            created, first = (stamp, event.seq) if op == "add" else (None, None)
        metadata = message.get("metadata") or {}
        parts = message.get("parts") or []
        self.messages[message_id] = {
            "op": op, "id": message_id, "role": columns["role"], "text": columns["text"],
            "content": _parts_json(parts), "model": metadata.get("model"),
            "provider": metadata.get("provider"),
            "finish_reason": metadata.get("finish_reason"),
            **{name: columns[name] for name in _USAGE_COLUMNS},
            "version": int(data.get("version", 1)), "first_seq": first, "seq": event.seq,
            "turn": event.turn, "created": created, "updated": stamp, "deleted": False,
            "redacted": bool(data.get("redacted")),
            "inherited": None if first is None else first <= self.fork_seq}
        for part in parts:
            if not isinstance(part, dict) or not isinstance(part.get("call_id"), str):
                continue
            call_id = part["call_id"]
            if part.get("type") == "tool_call":
                self.calls.setdefault(call_id, {}).update(
                    call_id=call_id, name=part.get("name"),
                    arguments=_json(part.get("arguments")), message_id=message_id,
                    seq=event.seq, ts=event.ts, time=stamp, turn=event.turn,
                    deleted=False, inherited=inherited)
            elif part.get("type") == "tool_result":
                self.calls.setdefault(call_id, {"call_id": call_id}).update(
                    result=_json(part.get("output")), is_error=bool(part.get("is_error")),
                    result_message_id=message_id, result_seq=event.seq,
                    result_ts=event.ts)


    def _drop(self, message_id: str, keep: set[Any], seq: int) -> None:
        """A delete or edit at ``seq``: the calls and results of the message's older
        version that are not in ``keep`` leave the conversation. The rows of earlier
        exports get the same when they are read back (the marker)."""
        marker = {"drop": message_id, "keep": keep, "seq": seq}
        _drop_calls(self.calls, marker)
        self.calls[f"\0{message_id}\0{seq}"] = marker


def _drop_calls(rows: dict[str, dict[str, Any]], marker: dict[str, Any]) -> None:
    """Mark the calls a delete or edit took out of the conversation ``deleted``, and clear
    the results it took out (as the usage fold takes them out of ``stats()``)."""
    for key, row in rows.items():
        if "drop" in row or key in marker["keep"]:
            continue
        if row.get("message_id") == marker["drop"] and (row.get("seq") or 0) < marker["seq"]:
            row["deleted"] = True
        if (row.get("result_message_id") == marker["drop"]
                and (row.get("result_seq") or 0) < marker["seq"]):
            row.update(dict.fromkeys(_RESULT_COLUMNS))


_RESULT_COLUMNS = ("result", "is_error", "result_message_id", "result_seq", "result_ts")


def row_id(data: dict[str, Any]) -> str | None:
    message = data.get("message")
    found = message.get("id") if isinstance(message, dict) else data.get("id")
    return found if isinstance(found, str) else None


def apply_messages(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> None:
    """Apply the newest record of each message seen in this export to the rows read
    back: only a record newer than the row (a redo after a crash applies nothing twice)."""
    for message_id, change in new.items():
        row = old.get(message_id)
        if row is not None and row["seq"] >= change["seq"]:
            continue
        if change["op"] == "delete":
            if row is not None:
                row.update(deleted=True, seq=change["seq"], updated=change["updated"])
            continue
        fields = {key: value for key, value in change.items() if key != "op"}
        if fields["first_seq"] is None and row is not None:
            for key in ("created", "first_seq", "inherited"):
                fields[key] = row[key]
        old[message_id] = fields


def apply_calls(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> None:
    """As :func:`apply_messages`, for the calls: each side of a row (the call, its
    result) is taken from a record newer than the one it holds; then the deletes and
    edits of this export take calls and results out."""
    for key, change in new.items():
        if "drop" in change:
            continue
        row = old.setdefault(key, {"call_id": key})
        if change.get("seq") is not None and (row.get("seq") or 0) < change["seq"]:
            row.update({k: v for k, v in change.items() if k not in _RESULT_COLUMNS})
            row.setdefault("deleted", False)
        if (change.get("result_seq") is not None
                and (row.get("result_seq") or 0) < change["result_seq"]):
            row.update({k: v for k, v in change.items() if k in _RESULT_COLUMNS})
        if change.get("deleted"):
            row["deleted"] = True
    for change in new.values():
        if "drop" in change:
            _drop_calls(old, change)
