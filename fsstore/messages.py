"""The messages API: a session's conversation as messages, kept in its log.

A message is an ``fsstore.message`` record of the session's log, so every reader of
the log sees it (``events``, ``fsstore cat``, watch), a fork has the messages up to its
point and a checkpoint the ones before it. Appending is one batch (atomic, like
``append_many``); an edit is a new record that supersedes the message (reads give the
newest version, ``history`` all of them); a delete is a tombstone record. The message
index (``message_index.py``) says where each record is, so reading the last N messages
and finding one by id cost the same in a short session as in a long one.

``session.messages`` is a :class:`Messages` on a writer, a :class:`MessagesReader` on
a reader (docs/FORMAT.md, section 20).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, Protocol, TypeVar

import msgspec

from .aio_messages import AsyncMessagesMixin, AsyncMessagesReaderMixin
from .errors import (
    CorruptionError,
    InvalidMessage,
    MessageExists,
    MessageNotFound,
    SeqOutOfRange,
)
from .frame_reads import Frame
from .log_format import check_seq
from .message_index import (
    ADD,
    CALL,
    DELETE,
    EDIT,
    MARK,
    MessageIndex,
    Row,
    call_hash,
    message_hash,
)
from .message_types import (
    Message,
    StoredMessage,
    ToolCallPart,
    ToolResultPart,
    check_id,
    check_message,
    to_message,
)
from .turns import MESSAGE_RECORD
from .usage import account_record

__all__ = ["MESSAGE_RECORD", "MessageVersion", "Messages", "MessagesReader"]

_T = TypeVar("_T")
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()
#: How many rows a backwards walk reads at first; it doubles while it needs more.
_FIRST_CHUNK = 64


class MessageVersion(NamedTuple):
    """One version of a message: ``op`` is ``"add"``, ``"edit"`` or ``"delete"``;
    ``message`` is None for a delete. A version of a deleted message a vacuum
    reclaimed has a ``message`` with ``redacted=True`` and no parts."""

    op: str
    seq: int
    ts: float
    turn: int
    message: Message | None


class MessageHost(Protocol):
    """What the messages API needs of its session: the message index, brought up to the
    log and held for one read (a reader's ``session_reader.ReaderMessages``, a
    writer's ``session.SessionMessages``)."""

    def index(self) -> contextlib.AbstractContextManager[MessageIndex]: ...


class MessageWriterHost(MessageHost, Protocol):
    """And for a writer: append the records ``build`` makes from the fresh index as one
    batch, with their index rows; return the first seq, the batch's ts and its turn."""

    def append_records(
        self, build: Callable[[MessageIndex], list[dict[str, Any]]], turn: int | None,
        ts: float | None,
    ) -> tuple[int, float, int]: ...


_OPS = {ADD: "add", EDIT: "edit", DELETE: "delete"}


class _Found(NamedTuple):
    """A message found through the index: its first row (number and row) and the row
    of its newest version as of the read."""

    number: int
    first: Row
    latest: Row


class MessagesReader(AsyncMessagesReaderMixin):
    """A session's messages, read-only. Every read takes ``at_seq`` to read the
    messages as they were after that seq (as ``state_at`` reads the state)."""

    def __init__(self, host: MessageHost) -> None:
        self._host = host

    # --- reads ---

    def count(self, *, at_seq: int | None = None) -> int:
        """How many messages the session holds (deleted ones not counted), in O(1)."""
        with self._reading() as index:
            total = self._rows(index, at_seq)
            return index.read_rows(total - 1, total)[0].live if total else 0

    def last(self, n: int = 50, *, at_seq: int | None = None) -> list[Message]:
        """The last ``n`` messages, oldest first. Reads the index from its end: the cost
        follows ``n`` (and the edits and deletes among the last messages), not the
        length of the conversation."""
        n = _check_count(n, "n")
        return self._retrying(lambda index: self._last(index, n, at_seq))

    def get(self, message_id: str, *, at_seq: int | None = None) -> Message:
        """The newest version of message ``message_id``; MessageNotFound when the session
        has no such message, or it was deleted."""
        check_id(message_id)

        def read(index: MessageIndex) -> Message:
            found = self._find(index, message_id, self._rows(index, at_seq))
            if found is None or found.latest.op == DELETE:
                raise MessageNotFound(f"session has no message {message_id!r}"
                                      + ("" if found is None else " (it was deleted)"))
            return self._build(index, [found])[0]
        return self._retrying(read)

    def exists(self, message_id: str, *, at_seq: int | None = None) -> bool:
        try:
            self.get(message_id, at_seq=at_seq)
        except MessageNotFound:
            return False
        return True

    def history(self, message_id: str) -> list[MessageVersion]:
        """Every version of message ``message_id``, oldest first, its delete included;
        MessageNotFound when the session never had it."""
        check_id(message_id)

        def read(index: MessageIndex) -> list[MessageVersion]:
            total = index.row_count
            found = self._find(index, message_id, total)
            if found is None:
                raise MessageNotFound(f"session has no message {message_id!r}")
            rows = self._versions(index, found.first.hash, found.number, total)
            versions = []
            for row, (record, ts, turn) in zip(rows, index.records(rows), strict=True):
                message = None
                if record.message is not None:
                    message = to_message(record.message, seq=row.seq, turn=turn, created=ts,
                                         updated=ts, version=record.version,
                                         redacted=record.redacted)
                versions.append(MessageVersion(_OPS[row.op], row.seq, ts, turn, message))
            return versions
        return self._retrying(read)

    def page(self, *, before: str | None = None, after: str | None = None, limit: int = 50,
             at_seq: int | None = None) -> list[Message]:
        """Up to ``limit`` messages right before (or after) message ``before`` (``after``),
        oldest first: a cursor for paging through a conversation. The cursor may be a
        deleted message; with neither, the first ``limit`` messages."""
        limit = _check_count(limit, "limit")
        if before is not None and after is not None:
            raise InvalidMessage("pass before or after, not both", field="before")
        cursor = before if before is not None else after
        if cursor is not None:
            check_id(cursor, "before" if before is not None else "after")

        def read(index: MessageIndex) -> list[Message]:
            total = self._rows(index, at_seq)
            if cursor is None:
                return self._walk(index, 0, total, 1, limit, total)
            found = self._find(index, cursor, total)
            if found is None:
                raise MessageNotFound(f"session has no message {cursor!r}")
            if before is not None:
                return self._walk(index, found.number - 1, -1, -1, limit, total)
            return self._walk(index, found.number + 1, total, 1, limit, total)
        return self._retrying(read)

    def all(self, *, at_seq: int | None = None) -> list[Message]:
        """Every message, oldest first."""
        return self._retrying(lambda index: self._all(index, at_seq))

    def __iter__(self) -> Iterator[Message]:
        return iter(self.all())

    def __len__(self) -> int:
        return self.count()

    # --- how ---

    def _reading(self) -> contextlib.AbstractContextManager[MessageIndex]:
        return self._host.index()

    def _retrying(self, read: Callable[[MessageIndex], _T]) -> _T:
        """Run ``read`` on the fresh index; when a row points at a record the log does
        not hold (the index was replaced or went stale meanwhile), read once more from a
        reloaded index, then let the damage out."""
        for attempt in range(2):
            with self._reading() as index:
                try:
                    return read(index)
                except (CorruptionError, FileNotFoundError):
                    if attempt:
                        raise
                    index.forget()
        raise AssertionError("unreachable")

    @staticmethod
    def _rows(index: MessageIndex, at_seq: int | None) -> int:
        """How many rows a read as of ``at_seq`` uses; SeqOutOfRange for a seq outside
        the history the log holds (as ``state_at``)."""
        if at_seq is None:
            return index.row_count
        check_seq(at_seq, "at_seq")
        tail = index.log.tail()
        if not tail.log_start - 1 <= at_seq <= tail.head:
            raise SeqOutOfRange(
                f"{index.log.path}: seq {at_seq} is outside the history the log holds "
                f"({tail.log_start - 1} to {tail.head}); seqs before {tail.log_start} were "
                "cleared")
        return index.rows_through(at_seq)

    def _find(self, index: MessageIndex, message_id: str, total: int) -> _Found | None:
        hashed = message_hash(message_id)
        numbers = [number for number in index.find(hashed) if number < total]
        rows = {number: index.row(number) for number in numbers}
        for number in numbers:
            first = rows[number]
            if first.op != ADD:
                continue
            record = index.records([first])[0][0]
            if record.message_id != message_id:
                continue  # another id with the same 64-bit hash
            latest = max((row for n, row in rows.items() if row.target == number
                          and row.op in (ADD, EDIT, DELETE)), key=lambda row: row.seq)
            return _Found(number, first, latest)
        return None

    def _versions(self, index: MessageIndex, hashed: int, number: int, total: int
                  ) -> list[Row]:
        rows = (index.row(n) for n in index.find(hashed) if n < total)
        return [row for row in rows if row.target == number and row.op in (ADD, EDIT, DELETE)]

    def _latest(self, index: MessageIndex, number: int, first: Row, total: int) -> Row:
        versions = self._versions(index, first.hash, number, total)
        return versions[-1] if versions else first

    def _last(self, index: MessageIndex, n: int, at_seq: int | None) -> list[Message]:
        """Walk the rows back from the end: an edit or delete is met before the first
        version of its message, so each message's newest version is known when its
        first row comes."""
        total = self._rows(index, at_seq)
        newest: dict[int, Row] = {}  # first row number -> newest version's row
        found: list[_Found] = []
        stop, chunk = total, _FIRST_CHUNK
        while stop > 0 and len(found) < n:
            start = max(stop - chunk, 0)
            rows = index.read_rows(start, stop)
            for number in range(stop - 1, start - 1, -1):
                row = rows[number - start]
                if row.op in (EDIT, DELETE):
                    newest.setdefault(row.target, row)
                elif row.op == ADD:
                    latest = newest.get(number, row)
                    if latest.op != DELETE:
                        found.append(_Found(number, row, latest))
                        if len(found) == n:
                            break
            stop, chunk = start, chunk * 2
        found.reverse()
        return self._build(index, found)

    def _walk(self, index: MessageIndex, start: int, stop: int, step: int, limit: int,
              total: int) -> list[Message]:
        found: list[_Found] = []
        number = start
        while number != stop and len(found) < limit:
            low, high = (number, min(number + 256, stop)) if step > 0 else (
                max(number - 255, stop + 1), number + 1)
            rows = index.read_rows(low, high)
            order = range(len(rows)) if step > 0 else range(len(rows) - 1, -1, -1)
            for offset in order:
                row = rows[offset]
                if row.op == ADD:
                    latest = self._latest(index, low + offset, row, total)
                    if latest.op != DELETE:
                        found.append(_Found(low + offset, row, latest))
                        if len(found) == limit:
                            break
            number = high if step > 0 else low - 1
        if step < 0:
            found.reverse()
        return self._build(index, found)

    def _all(self, index: MessageIndex, at_seq: int | None) -> list[Message]:
        total = self._rows(index, at_seq)
        rows = index.read_rows(0, total)
        newest: dict[int, Row] = {}
        for row in rows:
            if row.op in (ADD, EDIT, DELETE):
                newest[row.target] = row
        found = [_Found(number, row, newest[number]) for number, row in enumerate(rows)
                 if row.op == ADD and newest[number].op != DELETE]
        messages: list[Message] = []
        for start in range(0, len(found), 512):
            messages.extend(self._build(index, found[start : start + 512]))
        return messages

    def _build(self, index: MessageIndex, found: Sequence[_Found]) -> list[Message]:
        edited = [item.first for item in found if item.latest is not item.first]
        read = index.records([item.latest for item in found] + edited)
        created = iter(read[len(found):])
        messages = []
        for item, (record, ts, turn) in zip(found, read, strict=False):
            first_ts = next(created)[1] if item.latest is not item.first else ts
            assert record.message is not None  # a deleted message is not built
            messages.append(to_message(record.message, seq=item.latest.seq, turn=turn,
                                       created=first_ts, updated=ts, version=record.version,
                                       redacted=record.redacted))
        return messages


class Messages(MessagesReader, AsyncMessagesMixin):
    """A session's messages, for its writer: append, edit, delete, and every read."""

    def __init__(self, host: MessageWriterHost) -> None:
        super().__init__(host)
        self._writer_host = host

    def append(self, message: Message | Mapping[str, Any], *, turn: int | None = None,
               ts: float | None = None) -> Message:
        """Append one message (a Message, or a dict of its fields); return it as stored
        (its id made when it had none, its seq and turn). ``turn`` and ``ts`` as for
        ``Session.append``. Refused with nothing written: InvalidMessage (a field named),
        MessageExists."""
        return self.append_many([message], turn=turn, ts=ts)[0]

    def append_many(self, messages: Iterable[Message | Mapping[str, Any]], *,
                    turn: int | None = None, ts: float | None = None) -> list[Message]:
        """Append messages as one batch: after a crash all of them are there or none.
        A tool result may answer a tool call earlier in the batch."""
        prepared = [(check_message(message), _given_id(message)) for message in messages]
        if not prepared:
            return []

        def build(index: MessageIndex) -> list[dict[str, Any]]:
            records: list[dict[str, Any]] = []
            ids: set[str] = set()
            calls: set[str] = set()
            for position, (stored, given) in enumerate(prepared):
                where = f"messages[{position}]" if len(prepared) > 1 else "message"
                if stored.id in ids or (given and self._find(
                        index, stored.id, index.row_count) is not None):
                    raise MessageExists(
                        f"{where}: the session already has a message {stored.id!r} (ids are "
                        "never reused, not even after a delete): edit it, or leave the id "
                        "out")
                ids.add(stored.id)
                _check_results(index, stored, calls, where)
                records.append({"op": "add", "message": _plain(stored)})
            return records

        first, stamp, used_turn = self._writer_host.append_records(build, turn, ts)
        return [to_message(stored, seq=first + offset, turn=used_turn, created=stamp,
                           updated=stamp, version=1)
                for offset, (stored, _) in enumerate(prepared)]

    def edit(self, message: Message | Mapping[str, Any], *, turn: int | None = None,
             ts: float | None = None) -> Message:
        """Replace message ``message.id`` by a new version (role, parts and metadata as
        given); both stay in the history. MessageNotFound when there is no such message
        (or it was deleted)."""
        given = message.id if isinstance(message, Message) else (
            message.get("id") if isinstance(message, Mapping) else None)
        if given is None:
            raise InvalidMessage("an edit names the message to replace: give its id",
                                 field="id")
        stored = check_message(message)
        version = 0

        def build(index: MessageIndex) -> list[dict[str, Any]]:
            nonlocal version
            old, version, old_ts = self._current(index, stored.id)
            _check_results(index, stored, set(), "message")
            return [{"op": "edit", "message": _plain(stored), "version": version + 1,
                     "was": account_record(old, old_ts)}]

        first, stamp, used_turn = self._writer_host.append_records(build, turn, ts)
        return to_message(stored, seq=first, turn=used_turn, created=None, updated=stamp,
                          version=version + 1)

    def delete(self, message_id: str, *, turn: int | None = None,
               ts: float | None = None) -> int:
        """Delete message ``message_id`` (a tombstone record; its versions stay in the
        history); return the record's seq. MessageNotFound when there is no such
        message, or it was deleted already."""
        check_id(message_id)

        def build(index: MessageIndex) -> list[dict[str, Any]]:
            old, _, old_ts = self._current(index, message_id)
            return [{"op": "delete", "id": message_id, "was": account_record(old, old_ts)}]

        return self._writer_host.append_records(build, turn, ts)[0]

    def pop(self, *, turn: int | None = None, ts: float | None = None) -> Message | None:
        """Delete the newest message (a tombstone, as :meth:`delete`) and return it as it
        was; None when the session holds none. The read and the delete are one write
        operation, so two callers, in any threads or processes, never pop the same
        message, and none pops a message appended after the one it read."""
        popped: list[Message] = []

        def build(index: MessageIndex) -> list[dict[str, Any]]:
            newest = self._last(index, 1, None)
            if not newest:
                raise _NothingToPop
            popped.append(newest[0])
            old, _, old_ts = self._current(index, str(newest[0].id))
            return [{"op": "delete", "id": newest[0].id,
                     "was": account_record(old, old_ts)}]

        try:
            self._writer_host.append_records(build, turn, ts)
        except _NothingToPop:
            return None
        return popped[0]

    def _current(self, index: MessageIndex, message_id: str
                 ) -> tuple[dict[str, Any], int, float]:
        """The stored map of the newest version of ``message_id``, its version and
        when it was written."""
        found = self._find(index, message_id, index.row_count)
        if found is None or found.latest.op == DELETE:
            raise MessageNotFound(f"session has no message {message_id!r}"
                                  + ("" if found is None else " (it was deleted)"))
        latest = found.latest
        record, ts, _ = index.records([latest])[0]
        assert record.message is not None
        return _plain(record.message), record.version, ts


class _NothingToPop(Exception):
    """Raised by ``pop``'s build, under the lock, when there is no message: nothing is
    written."""


def message_rows(index: MessageIndex, first: int, entries: Sequence[tuple[str, Any]],
                 frame: Frame) -> list[Row]:
    """The index rows of a batch just written as ``frame`` (its message records)."""
    rows: list[Row] = []
    for offset, (kind, data) in enumerate(entries):
        if kind == MESSAGE_RECORD:
            rows.extend(index.rows_for(first + offset, data, frame, pending=rows))
    if rows:
        # One flag, on the frame's last row: rows cut after it are a group a crash cut.
        rows[-1] = rows[-1]._replace(group_end=True)
    return rows


def _check_results(index: MessageIndex, stored: StoredMessage, calls: set[str],
                   where: str) -> None:
    """Each tool result answers a tool call earlier in the session, in the batch or in
    the message, unless it says it is an orphan."""
    for number, part in enumerate(stored.parts):
        if isinstance(part, ToolCallPart):
            calls.add(part.call_id)
        elif (isinstance(part, ToolResultPart) and not part.orphan
              and part.call_id not in calls and not _call_exists(index, part.call_id)):
            raise InvalidMessage(
                f"{where}.parts[{number}].call_id: no tool call {part.call_id!r} comes "
                "before this result in the session; append the call first, or set "
                "orphan=True on the part to store the result anyway",
                field=f"parts[{number}].call_id")


def _call_exists(index: MessageIndex, call_id: str) -> bool:
    if call_id in index.recent_calls:
        return True
    hashed = call_hash(call_id)
    for number in index.find(hashed):
        row = index.row(number)
        if row.op != CALL:
            continue
        record = index.records([row])[0][0]
        if record.message is not None and any(
                isinstance(part, ToolCallPart) and part.call_id == call_id
                for part in record.message.parts):
            return True
    return False


def _plain(stored: StoredMessage) -> dict[str, Any]:
    """The msgpack map a stored message is written as (bytes stay bytes)."""
    result: dict[str, Any] = _decoder.decode(_encoder.encode(stored))
    return result


def _given_id(message: object) -> bool:
    if isinstance(message, Message):
        return message.id is not None
    return isinstance(message, Mapping) and message.get("id") is not None


def _check_count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidMessage(f"{name} must be an int >= 0, not {value!r}", field=name)
    return value


assert MARK not in _OPS
