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
id), its log start (a ``clear``), the first seq its history holds (``retain``) and the
inode of its ``messages.idx`` (which a vacuum that redacts deleted messages replaces). When
any of them changed, the log holds less than was exported, or the record at the last
exported seq is not the one exported (a store restored from an older backup), the
session's folders are removed and it is exported again from scratch. A session that
cannot be read is left out, its folders as the last export left them, and named in
:attr:`ParquetExportReport.skipped` with why (the file and offset of the damage).

Needs pyarrow (``pip install 'fsstore[parquet]'``), imported here only when used.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import layout
from .errors import (
    CorruptionError,
    FsStoreError,
    InvalidSetting,
    MissingExtra,
    SessionNotFound,
)
from .fsio import folder_lock
from .log_format import Event
from .parquet_rows import (
    SessionRows,
    apply_calls,
    apply_messages,
    table_schemas,
)

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
            # isdir again: another export into DIR may have made the folder just now (the
            # folder's lock is taken once it exists)
            if os.path.lexists(path) and not os.path.isdir(path):
                raise InvalidSetting(f"{path} is not a folder, so the Parquet export cannot "
                                     "be written under it: give a folder's path")
            missing.append(path)
            path = os.path.dirname(path)
        for folder in reversed(missing):
            try:
                self.io.mkdir(folder)
            except OSError:
                if not os.path.isdir(folder):  # made by an export beside this one: fine
                    raise
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
            return {layout.check_session_id(key): _checked_entry(value)
                    for key, value in found["sessions"].items()}
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


def _checked_entry(value: Any) -> dict[str, Any]:
    """A session's entry of the state file, its fields of the types the export uses: a
    forged or damaged one would otherwise fail mid-export, or name parts to remove
    (a negative ``next_part`` is every part)."""
    entry = dict(value)

    def number(name: str, *, none: bool = False, low: int | None = None) -> None:
        found = entry.get(name)
        if found is None and none:
            return
        if (not isinstance(found, (int, float)) or isinstance(found, bool)
                or found != found or (low is not None and found < low)):
            raise ValueError(f"{name} of a session is {found!r}")

    for name in ("seq", "next_part", "log_start", "history_start"):
        number(name, low=0)
        if not isinstance(entry[name], int):
            raise ValueError(f"{name} of a session is {entry[name]!r}")
    number("ts", none=True)
    number("created", none=True)
    number("index", none=True)
    if not (entry.get("uid") is None or isinstance(entry["uid"], str)):
        raise ValueError(f"uid of a session is {entry['uid']!r}")
    return entry


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
    try:
        # A vacuum that redacts deleted messages (and nothing else a log's export keeps
        # up with) replaces messages.idx by a copy (docs/FORMAT.md, 20.3): a new inode.
        index: int | None = os.lstat(layout.message_index_path(reader.path)).st_ino
    except FileNotFoundError:
        index = None
    return {"uid": None if uid is None else f"{uid:016x}", "created": info.created,
            "log_start": tail.log_start, "history_start": info.history_start,
            "index": index, "head": tail.head, "last_ts": tail.last_ts}


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
    if before.get("index") is not None and before.get("index") != now["index"]:
        return ("its message index was replaced (a vacuum redacted deleted messages, or "
                "the index was made anew)")
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
    with folder_lock(folder.root):
        return _export(store, folder, ids, explicit, pa, part_events, started)


def _export(store: Store, folder: _Folder, ids: list[str], explicit: bool, pa: Any,
            part_events: int, started: float) -> ParquetExportReport:
    state = folder.load_state()
    report = ParquetExportReport(out_dir=folder.root)
    schemas = table_schemas(pa)
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
    rows = SessionRows(fork_seq)  # its messages and calls gather over the chunks
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
                                                "history_start", "index")},
                         "seq": seq, "ts": ts, "next_part": part}
    return total


def arrow_tables(store: Store, session_ids: Iterable[str] | None = None, *,
                 part_events: int = PART_EVENTS) -> dict[str, Any]:
    """The four tables of an export, built in memory from the logs (no folder), each a
    pyarrow Table with a ``session`` column first: what ``fsstore sql --direct`` queries.
    A session that cannot be read raises (there is no report to name it in)."""
    pa = require_pyarrow()
    schemas = table_schemas(pa)
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
        rows = SessionRows(parent.seq if parent is not None else 0)
        events = reader.events(reader.history_start - 1, include_internal=True)
        for chunk in _chunks(events, part_events):
            rows.next_part()
            for event in chunk:
                rows.add(event)
            events = rows.events.table(pa, schemas["events"], rows.fork_seq)
            found["events"].append(events.add_column(
                0, "session", pa.array([session_id] * len(events), pa.string())))
            add("usage", session_id, rows.usage)
        for table, apply, new in (("messages", apply_messages, rows.messages),
                                  ("tool_calls", apply_calls, rows.calls)):
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


def _read_view(folder: _Folder, pa: Any, path: str, schema: Any, key: str,
               new: dict[str, dict[str, Any]]) -> tuple[Any, dict[str, dict[str, Any]]]:
    """A session's messages or tool_calls file, read back as the rows this export's
    changes (``new``) leave as they are (an Arrow table: they never go through Python)
    and the rows they touch, by key, timestamps as microseconds."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if not os.path.exists(path):
        return schema.empty_table(), {}
    try:
        data = folder.io.read_file(path, folder.io.file_size(path))
        table = pq.read_table(pa.BufferReader(data)).cast(schema)
    except (OSError, pa.ArrowException) as exc:
        raise CorruptionError(f"the exported file cannot be read ({exc}): remove the "
                              "export folder's files of the session (or the folder) and "
                              "export again", path=path) from None
    keys = pa.array([k for k, change in new.items() if "drop" not in change], pa.string())
    touched = pc.is_in(table.column(key), value_set=keys)
    dropped = pa.array([change["drop"] for change in new.values() if "drop" in change],
                       pa.string())
    if len(dropped):  # a delete or edit takes calls or results of its message out
        for column in ("message_id", "result_message_id"):
            touched = pc.or_(touched, pc.is_in(table.column(column), value_set=dropped))
    touched = pc.fill_null(touched, False)
    rows = table.filter(touched)
    for number, column in enumerate(rows.schema):
        if pa.types.is_timestamp(column.type):
            rows = rows.set_column(number, column.name, rows.column(number).cast(pa.int64()))
    return table.filter(pc.invert(touched)), {row[key]: row for row in rows.to_pylist()}


def _write_views(folder: _Folder, session_id: str, views: SessionRows,
                 schemas: dict[str, Any], pa: Any) -> int:
    """Replace the session's messages and tool_calls files with their rows read back
    and updated by this export's records."""
    written = 0
    for table, key, apply, new in (("messages", "id", apply_messages, views.messages),
                                   ("tool_calls", "call_id", apply_calls, views.calls)):
        path = os.path.join(folder.partition(table, session_id), _VIEW_PART)
        kept, rows = _read_view(folder, pa, path, schemas[table], key, new)
        apply(rows, new)
        # The rows left as they were, then the rows changed or new. (A session with
        # messages has both files, even one without calls: a reader's glob finds them.)
        whole = pa.concat_tables([kept, _table(pa, schemas[table], list(rows.values()))])
        folder.write_part(pa, whole, path)
        written += 1
    return written
