"""Sessions as Parquet, for DuckDB, Polars, Spark or Trino: ``export_parquet``.

The folder is hive-partitioned by session, one folder per table::

    DIR/_fsstore_parquet.json                    what was exported (see below)
    DIR/events/session=ID/part-00000.parquet     every record of the log, in seq order
    DIR/usage/session=ID/part-00000.parquet      the usage ledger: what each record booked
    DIR/messages/session=ID/part-00000.parquet   every message, its newest version
    DIR/tool_calls/session=ID/part-00000.parquet every tool call, with its result

``events`` and ``usage`` only grow: an export appends parts with the records after the
last seq it exported (``part-00001``, ...). ``messages`` and ``tool_calls`` are one file
per session, the conversation as it is: an edit or delete changes a message exported
before, so a session whose log gained message records gets that file replaced whole
(read back, updated, written under a temp name, renamed over the old one).

Crashes: each file is written under a temp name, fsynced and renamed in; the state file
is replaced the same way after the files it describes. Parts numbered at or past the
state's ``next_part`` of a session are a crashed export's and are removed before the
next one writes; updates of the two per-session files are idempotent (a record is
applied only when newer than the row it changes), so a crash costs a redo, never a row
counted twice.

The state file names, per session, the last seq exported with its ts, and the session's
identity: its uid and creation time (a session deleted and created again under the same
id), its log start (a ``clear``) and the first seq its history holds (``retain``). When
any of them changed, the log holds less than was exported, or the record at the last
exported seq is not the one exported (a store restored from an older backup), the
session's folders are removed and it is exported again from scratch. A session that
cannot be read is left out, its folders as the last export left them, and named in
:attr:`ParquetExportReport.skipped` with why (the file and offset of the damage).

Needs pyarrow (``pip install 'fsstore[parquet]'``), imported here only when used.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from . import layout
from .errors import CorruptionError, FsStoreError, MissingExtra, SessionNotFound
from .log_format import Event
from .turns import MESSAGE_RECORD
from .usage import TOKEN_FIELDS, account, day_of

if TYPE_CHECKING:
    from .session_reader import SessionReader
    from .store import Store

STATE_NAME = "_fsstore_parquet.json"
STATE_FORMAT = "fsstore-parquet"
STATE_VERSION = 1
#: The tables, each a folder of DIR.
TABLES = ("events", "messages", "tool_calls", "usage")
#: The records of one part file at most: a part is built in memory before it is written.
PART_EVENTS = 100_000
#: The state file is read back bounded (one entry per session, a few hundred bytes each).
_MAX_STATE_BYTES = 1 << 30
_PART = "part-{:05d}.parquet"
#: The one file of a session's messages and tool_calls.
_VIEW_PART = _PART.format(0)

_COMPACT = (",", ":")
_USAGE_COLUMNS = (*(f"{name}_tokens" for name in TOKEN_FIELDS), "cost", "currency")
_encode_json = msgspec.json.Encoder().encode

_TOKEN_COLUMNS = tuple(f"{name}_tokens" for name in TOKEN_FIELDS)


def require_pyarrow() -> Any:
    """The pyarrow module; MissingExtra naming the extra when it is not installed."""
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError as exc:
        raise MissingExtra(f"the Parquet export needs pyarrow, which is not installed "
                           f"({exc}): pip install 'fsstore[parquet]'") from None
    return pyarrow


@dataclass
class ParquetExportReport:
    """What ``export_parquet`` did: per session exported, the records written (0 when
    nothing was new); the sessions exported from scratch with why; the sessions removed
    from DIR (gone from the store, for an export of all sessions); the sessions left out
    with why (damage: ``fsstore verify`` says more); the part files written."""

    out_dir: str
    exported: dict[str, int] = field(default_factory=dict)
    rebuilt: dict[str, str] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    files: int = 0
    seconds: float = 0.0

    @property
    def events(self) -> int:
        """Records written, all sessions summed."""
        return sum(self.exported.values())

    def __str__(self) -> str:
        changed = sum(1 for count in self.exported.values() if count)
        text = (f"exported {self.events} new records of {changed} of "
                f"{len(self.exported)} sessions to {self.out_dir} as Parquet "
                f"({self.files} files written, {self.seconds:.2f} s)")
        if self.rebuilt:
            text += "; exported again from scratch: " + ", ".join(
                f"{sid} ({why})" for sid, why in sorted(self.rebuilt.items()))
        if self.removed:
            text += "; removed (no longer in the store): " + ", ".join(sorted(self.removed))
        if self.skipped:
            text += "; LEFT OUT, cannot be read (run `fsstore verify`): " + "; ".join(
                f"{sid}: {why}" for sid, why in sorted(self.skipped.items()))
        return text + "."


# --- JSON text of stored values -----------------------------------------------------------


def _json(value: Any) -> str:
    """JSON text of a stored value in the forms `fsstore cat` prints (bytes as
    ``{"$base64": ...}``, a map with keys that are not str as ``{"$map": ...}``): one
    encoding of stored values for every way out of the store."""
    from .cli._common import printable

    return json.dumps(printable(value), ensure_ascii=False, allow_nan=False,
                      separators=_COMPACT)


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


def _schemas(pa: Any) -> dict[str, Any]:
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


def _time(ts: Any) -> int | None:
    """Microseconds since the epoch, None for what is no time (NaN, out of range)."""
    if not isinstance(ts, (int, float)) or not math.isfinite(ts) or abs(ts) > 2**52:
        return None
    return int(round(ts * 1_000_000))


def _date(day: str) -> datetime.date | None:
    try:
        return datetime.date.fromisoformat(day)
    except ValueError:
        return None


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


class _EventColumns:
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


class _SessionRows:
    """The rows one export of one session builds: event and usage rows for the parts
    being written, and the updates of its messages and tool calls."""

    def __init__(self, fork_seq: int) -> None:
        self.fork_seq = fork_seq
        self.events = _EventColumns()
        self.usage: list[dict[str, Any]] = []
        self.messages: dict[str, dict[str, Any]] = {}
        self.calls: dict[str, dict[str, Any]] = {}
        self.views_changed = False

    def next_part(self) -> None:
        self.events, self.usage = _EventColumns(), []

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
        base = {"seq": event.seq, "ts": event.ts, "time": _time(event.ts),
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
        stamp = _time(event.ts)
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


def _apply_messages(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> None:
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


def _apply_calls(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> None:
    """As :func:`_apply_messages`, for the calls: each side of a row (the call, its
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


# --- the folder ---------------------------------------------------------------------------


class _Folder:
    """DIR: its table folders, part files and state file, all through the store's
    FileIO (the crash simulator sees every write)."""

    def __init__(self, store: Store, out_dir: str | os.PathLike[str]) -> None:
        self.io = store.io
        self.root = os.path.abspath(os.fspath(out_dir))
        self.state_path = os.path.join(self.root, STATE_NAME)

    def partition(self, table: str, session_id: str) -> str:
        return os.path.join(self.root, table, f"session={session_id}")

    def ensure(self, path: str) -> None:
        missing = []
        while not os.path.isdir(path):
            missing.append(path)
            path = os.path.dirname(path)
        for folder in reversed(missing):
            self.io.mkdir(folder)
            self.io.fsync_dir(os.path.dirname(folder))

    def load_state(self) -> dict[str, dict[str, Any]]:
        if not os.path.exists(self.state_path):
            return {}
        raw = self.io.read_file(self.state_path, _MAX_STATE_BYTES)
        try:
            found = json.loads(raw)
            if found.get("format") != STATE_FORMAT or not isinstance(found["sessions"], dict):
                raise ValueError("not an fsstore Parquet export state")
            if int(found.get("version", 0)) > STATE_VERSION:
                raise ValueError(f"version {found.get('version')} is newer than this "
                                 f"fsstore's {STATE_VERSION}")
            return {str(key): dict(value) for key, value in found["sessions"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CorruptionError(
                f"the export state cannot be read ({exc}): export into a new folder, or "
                f"remove {self.root} to export everything again", path=self.state_path
            ) from None

    def save_state(self, sessions: dict[str, dict[str, Any]]) -> None:
        body = {"format": STATE_FORMAT, "version": STATE_VERSION,
                "sessions": dict(sorted(sessions.items()))}
        self.ensure(self.root)
        self.io.atomic_write(self.state_path,
                             (json.dumps(body, indent=1, sort_keys=True) + "\n").encode())

    def write_part(self, pa: Any, table: Any, path: str) -> None:
        import pyarrow.parquet as pq

        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        self.ensure(os.path.dirname(path))
        self.io.atomic_write(path, sink.getvalue().to_pybytes())

    def parts(self, table: str, session_id: str) -> list[str]:
        folder = self.partition(table, session_id)
        if not os.path.isdir(folder):
            return []
        return sorted(self.io.listdir(folder))

    def remove_session(self, session_id: str) -> None:
        for table in TABLES:
            folder = self.partition(table, session_id)
            if os.path.isdir(folder):
                self.io.rmtree(folder)
                self.io.fsync_dir(os.path.dirname(folder))

    def remove_leftovers(self, session_id: str, next_part: int) -> None:
        """Parts a crashed export wrote after the state it saved, and its temp files."""
        for table in ("events", "usage"):
            for name in self.parts(table, session_id):
                number = _part_number(name)
                if number is None or number >= next_part:
                    self.io.unlink(os.path.join(self.partition(table, session_id), name))

    def partitioned_sessions(self) -> set[str]:
        found: set[str] = set()
        for table in TABLES:
            folder = os.path.join(self.root, table)
            if os.path.isdir(folder):
                found.update(name.partition("=")[2] for name in self.io.listdir(folder)
                             if name.startswith("session="))
        return found


def _part_number(name: str) -> int | None:
    if name.startswith("part-") and name.endswith(".parquet"):
        digits = name[5:-8]
        if digits.isdigit():
            return int(digits)
    return None


# --- the export ---------------------------------------------------------------------------


def _identity(reader: SessionReader) -> dict[str, Any]:
    info = reader.info()
    uid = reader.identity.uid if reader.identity is not None else None
    tail = reader.log_tail
    return {"uid": None if uid is None else f"{uid:016x}", "created": info.created,
            "log_start": tail.log_start, "history_start": info.history_start,
            "head": tail.head, "last_ts": tail.last_ts}


def _why_again(before: dict[str, Any], now: dict[str, Any]) -> str | None:
    """Why the session must be exported from scratch, as far as its manifest and the end
    of its log tell; None when it can go on. (When the log grew, the record at the last
    exported seq is checked as the export reads it.)"""
    if before.get("uid") != now["uid"] or before.get("created") != now["created"]:
        return "the session was deleted and created again"
    if before.get("log_start") != now["log_start"]:
        return "its log was cleared"
    if before.get("history_start") != now["history_start"]:
        return "retention dropped older history"
    seq = int(before.get("seq", 0))
    if now["head"] < seq:
        return f"its log ends at seq {now['head']}, before the {seq} exported"
    if now["head"] == seq >= now["history_start"] and now["last_ts"] != before.get("ts"):
        return _NOT_THE_ONE.format(seq)
    return None


_NOT_THE_ONE = "its record at seq {} is not the one exported"


def export_parquet(store: Store, out_dir: str | os.PathLike[str],
                   session_ids: Iterable[str] | None = None, *,
                   part_events: int = PART_EVENTS) -> ParquetExportReport:
    """Export sessions (``None``: every session of the store) as hive-partitioned
    Parquet under ``out_dir`` (module docstring): the records after the last seq a
    previous export into the same folder wrote, or all of a session's history when it
    is new there or was replaced, cleared, retained or restored since. Returns a
    :class:`ParquetExportReport` (``str()`` of it is a one-paragraph summary).

    A session that cannot be read is left out and named in ``skipped``; an explicit
    session id the store does not hold raises SessionNotFound before anything is
    written. An export of all sessions removes the folders of sessions no longer in
    the store. MissingExtra when pyarrow is not installed."""
    pa = require_pyarrow()
    started = time.perf_counter()
    explicit = session_ids is not None
    if isinstance(session_ids, str):
        session_ids = [session_ids]
    ids = list(dict.fromkeys(session_ids)) if session_ids is not None else store.session_ids()
    for session_id in ids:
        layout.check_session_id(session_id)
        if explicit and not store.has_session(session_id):
            raise SessionNotFound(f"{layout.session_dir(store.path, session_id)}: no "
                                  f"session {session_id!r} in the store to export")
    folder = _Folder(store, out_dir)
    folder.ensure(folder.root)
    with _folder_lock(folder.root):
        return _export(store, folder, ids, explicit, pa, part_events, started)


@contextlib.contextmanager
def _folder_lock(path: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the export folder: two exports into one folder
    (two ``fsstore sql`` of one store) would write the same parts. The kernel releases
    it when the process dies."""
    import fcntl

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _export(store: Store, folder: _Folder, ids: list[str], explicit: bool, pa: Any,
            part_events: int, started: float) -> ParquetExportReport:
    state = folder.load_state()
    report = ParquetExportReport(out_dir=folder.root)
    schemas = _schemas(pa)
    partitioned = folder.partitioned_sessions()
    if not explicit:
        gone = (set(state) | partitioned) - set(ids)
        if gone:
            for session_id in gone:
                state.pop(session_id, None)
            folder.save_state(state)
            for session_id in sorted(gone):
                folder.remove_session(session_id)
            report.removed = sorted(gone)
    for session_id in ids:
        try:
            written = _export_session(store, folder, state, session_id, schemas, pa,
                                      report, part_events, partitioned)
        except SessionNotFound:
            if explicit:
                raise
            continue  # deleted meanwhile
        except (FsStoreError, OSError, OverflowError, pa.ArrowException) as exc:
            # Damage (or a number Parquet's int64 cannot hold): left out and named, the
            # session's files as the last export left them.
            report.skipped[session_id] = " ".join(str(exc).split()) or type(exc).__name__
            continue
        report.exported[session_id] = written
    folder.save_state(state)
    report.files += 1
    report.seconds = time.perf_counter() - started
    return report


def _export_session(store: Store, folder: _Folder, state: dict[str, dict[str, Any]],
                    session_id: str, schemas: dict[str, Any], pa: Any,
                    report: ParquetExportReport, part_events: int,
                    partitioned: set[str]) -> int:
    reader = store.read_session(session_id)
    now = _identity(reader)
    before = state.get(session_id)
    why = None if before is None else _why_again(before, now)
    events: Iterator[Event] = iter(())
    if before is not None and why is None:
        seq = int(before["seq"])
        if seq < now["history_start"]:
            events = reader.events(seq, now["head"], include_internal=True)
        elif now["head"] > seq:
            # Read from the last exported record: it must still be the one exported.
            events = reader.events(seq - 1, now["head"], include_internal=True)
            first = next(events, None)
            if first is None or first.seq != seq or first.ts != before.get("ts"):
                why = _NOT_THE_ONE.format(seq)
    if why is not None or (before is None and session_id in partitioned):
        # Forget the session in the state before its files go: a crash in between
        # leaves a state that makes the next export start it from scratch too.
        report.rebuilt[session_id] = why or "no export state for its files"
        state.pop(session_id, None)
        folder.save_state(state)
        folder.remove_session(session_id)
        before = None
    if before is None:
        entry: dict[str, Any] = {"seq": now["history_start"] - 1, "ts": None, "next_part": 0}
        events = reader.events(entry["seq"], now["head"], include_internal=True)
    else:
        entry = before
        folder.remove_leftovers(session_id, int(entry["next_part"]))
    parent = reader.parent
    fork_seq = parent.seq if parent is not None else 0
    seq, ts, part = int(entry["seq"]), entry.get("ts"), int(entry["next_part"])
    total = 0
    rows = _SessionRows(fork_seq)  # its messages and calls gather over the chunks
    for chunk in _chunks(events, part_events):
        rows.next_part()
        for event in chunk:
            rows.add(event)
        name = _PART.format(part)
        folder.write_part(pa, rows.events.table(pa, schemas["events"], fork_seq),
                          os.path.join(folder.partition("events", session_id), name))
        report.files += 1
        if rows.usage:
            folder.write_part(pa, _table(pa, schemas["usage"], rows.usage),
                              os.path.join(folder.partition("usage", session_id), name))
            report.files += 1
        part += 1
        total += len(chunk)
        seq, ts = chunk[-1].seq, chunk[-1].ts
    if rows.views_changed:
        report.files += _write_views(folder, session_id, rows, schemas, pa)
    state[session_id] = {**{k: now[k] for k in ("uid", "created", "log_start",
                                                "history_start")},
                         "seq": seq, "ts": ts, "next_part": part}
    return total


def arrow_tables(store: Store, session_ids: Iterable[str] | None = None, *,
                 part_events: int = PART_EVENTS) -> dict[str, Any]:
    """The four tables of an export, built in memory from the logs (no folder), each a
    pyarrow Table with a ``session`` column first: what ``fsstore sql --direct`` queries.
    A session that cannot be read raises (there is no report to name it in)."""
    pa = require_pyarrow()
    schemas = _schemas(pa)
    ids = list(session_ids) if session_ids is not None else store.session_ids()
    found: dict[str, list[Any]] = {table: [] for table in TABLES}

    def add(table: str, session_id: str, rows: list[dict[str, Any]]) -> None:
        if rows:
            built = _table(pa, schemas[table], rows)
            found[table].append(built.add_column(
                0, "session", pa.array([session_id] * len(rows), pa.string())))

    for session_id in ids:
        reader = store.read_session(session_id)
        parent = reader.parent
        rows = _SessionRows(parent.seq if parent is not None else 0)
        events = reader.events(reader.history_start - 1, include_internal=True)
        for chunk in _chunks(events, part_events):
            rows.next_part()
            for event in chunk:
                rows.add(event)
            events = rows.events.table(pa, schemas["events"], rows.fork_seq)
            found["events"].append(events.add_column(
                0, "session", pa.array([session_id] * len(events), pa.string())))
            add("usage", session_id, rows.usage)
        for table, apply, new in (("messages", _apply_messages, rows.messages),
                                  ("tool_calls", _apply_calls, rows.calls)):
            view: dict[str, dict[str, Any]] = {}
            apply(view, new)
            add(table, session_id, list(view.values()))
    tables = {}
    for table in TABLES:
        empty = schemas[table].insert(0, pa.field("session", pa.string()))
        tables[table] = (pa.concat_tables(found[table]) if found[table]
                         else empty.empty_table())
    return tables


def _chunks(events: Iterator[Event], size: int) -> Iterator[list[Event]]:
    chunk: list[Event] = []
    for event in events:
        chunk.append(event)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _table(pa: Any, schema: Any, rows: list[dict[str, Any]]) -> Any:
    return pa.Table.from_pylist(rows, schema=schema)


def _read_view(folder: _Folder, pa: Any, path: str, key: str) -> dict[str, dict[str, Any]]:
    """The rows of a session's messages or tool_calls file, by key; timestamps as
    microseconds (a datetime per row would cost more than the rest of the read)."""
    import pyarrow.parquet as pq

    if not os.path.exists(path):
        return {}
    try:
        data = folder.io.read_file(path, folder.io.file_size(path))
        table = pq.read_table(pa.BufferReader(data))
        for number, column in enumerate(table.schema):
            if pa.types.is_timestamp(column.type):
                table = table.set_column(number, column.name,
                                         table.column(number).cast(pa.int64()))
        rows = table.to_pylist()
    except (OSError, pa.ArrowException) as exc:
        raise CorruptionError(f"the exported file cannot be read ({exc}): remove the "
                              "export folder's files of the session (or the folder) and "
                              "export again", path=path) from None
    return {row[key]: row for row in rows}


def _write_views(folder: _Folder, session_id: str, views: _SessionRows,
                 schemas: dict[str, Any], pa: Any) -> int:
    """Replace the session's messages and tool_calls files with their rows read back
    and updated by this export's records."""
    written = 0
    for table, key, apply, new in (("messages", "id", _apply_messages, views.messages),
                                   ("tool_calls", "call_id", _apply_calls, views.calls)):
        path = os.path.join(folder.partition(table, session_id), _VIEW_PART)
        rows = _read_view(folder, pa, path, key)
        apply(rows, new)
        # In the order each message or call first came: the file's rows, then the new.
        ordered = list(rows.values())
        if not ordered and not os.path.exists(path):
            continue
        folder.write_part(pa, _table(pa, schemas[table], ordered), path)
        written += 1
    return written
