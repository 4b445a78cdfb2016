"""The message index: where each message record of a session's log is.

``messages.idx`` in a session folder is a cache of the log, never its authority: a
header, then one fixed-size row per message record (and per tool call a message
holds), in seq order. A row names the record's seq, the frame holding it (segment,
offset, size), a 64-bit hash of the message id (or call id), the row of the message's
first version and the number of live messages after it. So reading the last N
messages reads the last rows and their frames, whatever the length of the history, and
a message is found by id through a sorted array of the hashes, not by a scan
(docs/FORMAT.md, section 20.3).

The writer appends a frame's rows right after the frame is in its segment file, in one
write, the last row flagged: a crash leaves rows for a prefix of the message records,
the last group whole or cut (a cut group is dropped when read). The rows are not
synced: after a power loss the index may be behind the log (it is caught up by reading
the log after its last row) or ahead of it (rows whose frames the log does not hold are
found by checking the last row against its frame, and dropped). Every read checks the
record a row points at: its seq, its kind and its id hash. A header that does not match
the log (another session, a log start moved by a clear) makes the writer write the
index anew from the log.
"""

from __future__ import annotations

import functools
import hashlib
import os
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import msgspec

from . import layout
from .chain_reads import vouch_read
from .checksum import crc32c
from .errors import CorruptionError, Finding
from .frame_reads import Frame
from .fsio import FileIO
from .log import LogPosition, LogReader
from .log_format import (
    _FRAME_HEADER as _FRAME_FIELDS,
)
from .log_format import (
    _TRAILER,
    CHAIN_FIELDS,
    FRAME_HEADER_SIZE,
    TRAILER_MAGIC,
    TRAILER_SIZE,
    frame_end,
    refuse_msgpack_ext,
)
from .message_types import MessageRecord, ToolCallPart
from .segment_header import SEGMENT_HEADER_SIZE
from .turns import MESSAGE_RECORD

if TYPE_CHECKING:
    import numpy as np

#: The bytes every message record's payload holds: frames without them are not decoded.
MESSAGE_MARKER = MESSAGE_RECORD.encode()
INDEX_NAME = layout.MESSAGE_INDEX

MAGIC = b"\x89FSMIDX\n"
HEADER = struct.Struct("<8sHHIQQI4x")  # magic major minor row_size uid log_start crc
ROW = struct.Struct("<QQQQQIIB3xI")  # seq segment hash target live offset size op crc
ROW_CHECKED = ROW.size - 4
VERSION = (1, 0)

ADD, EDIT, DELETE, CALL, MARK = 1, 2, 3, 4, 5
#: Set on the last row a frame gives: rows after the last flagged one were cut by a crash.
GROUP_END = 0x80

_entries_decoder = msgspec.msgpack.Decoder(
    tuple[float, int, list[tuple[str, msgspec.Raw]]], ext_hook=refuse_msgpack_ext)
_record_decoder = msgspec.msgpack.Decoder(MessageRecord, ext_hook=refuse_msgpack_ext)
_messages_decoder = msgspec.msgpack.Decoder(
    tuple[float, int, list[tuple[Literal["fsstore.message"], MessageRecord]]],
    ext_hook=refuse_msgpack_ext)


@functools.cache
def _row_dtype() -> np.dtype[Any]:
    """A row as numpy reads a table of them (numpy is imported by the first lookup by id,
    not by every reader of a session)."""
    import numpy as np

    found: np.dtype[Any] = np.dtype([
        ("seq", "<u8"), ("segment", "<u8"), ("hash", "<u8"), ("target", "<u8"),
        ("live", "<u8"), ("offset", "<u4"), ("size", "<u4"), ("op", "u1"), ("pad", "V3"),
        ("crc", "<u4")])
    assert found.itemsize == ROW.size
    return found


#: Rows an exclusive writer holds before it writes them (see ``MessageIndex.add_rows``).
DEFERRED_ROWS = 256
#: Tool call ids an index remembers as indexed, without a lookup.
_RECENT_CALLS = 4096
#: Message records a process keeps decoded, per session (the oldest go first).
_CACHED_RECORDS = 2048
#: Rows appended since the sorted hashes were built, kept in a dict until this many.
_UNSORTED_LIMIT = 50_000


class Row(NamedTuple):
    """One index row. ``op`` is ADD, EDIT, DELETE, CALL or MARK (without GROUP_END)."""

    seq: int
    segment: int
    hash: int
    target: int
    live: int
    offset: int
    size: int
    op: int
    group_end: bool = True

    def pack(self) -> bytes:
        body = ROW.pack(self.seq, self.segment, self.hash, self.target, self.live,
                        self.offset, self.size, self.op | (GROUP_END if self.group_end else 0),
                        0)[:ROW_CHECKED]
        return body + struct.pack("<I", crc32c(body))


def message_hash(message_id: str) -> int:
    """The 64-bit hash a row keeps of a message id."""
    return int.from_bytes(hashlib.blake2b(message_id.encode(), digest_size=8).digest(),
                          "little")


def call_hash(call_id: str) -> int:
    """The 64-bit hash a row keeps of a tool call id (another hash than a message id's,
    so that the two never meet)."""
    return int.from_bytes(hashlib.blake2b(call_id.encode(), digest_size=8,
                                          person=b"fsstore.call").digest(), "little")


def encode_header(uid: int, log_start: int) -> bytes:
    body = HEADER.pack(MAGIC, *VERSION, ROW.size, uid, log_start, 0)
    return body[:32] + struct.pack("<I", crc32c(body[:32])) + bytes(4)


def _unpack_row(raw: bytes | memoryview, path: str, offset: int) -> Row:
    fields = ROW.unpack(raw)
    if crc32c(raw[:ROW_CHECKED]) != fields[-1]:
        raise CorruptionError("message index row fails its checksum", path=path, offset=offset)
    seq, segment, hashed, target, live, offset, size, op, _ = fields
    return Row(seq, segment, hashed, target, live, offset, size, op & ~GROUP_END,
               bool(op & GROUP_END))


#: A frame's ts, turn, first seq and (kind, data) entries: data decoded as a message
#: record, or left as msgspec.Raw.
_SplitFrame = tuple[float, int, int, list[tuple[str, Any]]]


class MessageIndex:
    """One session's message index, as a reader or the writer sees it.

    ``refresh`` brings it up to the log: it (re)opens the file when it was replaced,
    drops rows the log does not hold, and indexes message records the rows do not cover
    yet (the writer writes their rows to the file; a reader keeps them in memory).
    ``find`` turns a hash into rows, ``records`` reads the records rows name; the
    messages API (``messages.py``) is built on them."""

    def __init__(self, io: FileIO, session_path: str, log: LogReader, uid: int, *,
                 use_file: bool = True, writable: bool = False) -> None:
        self.io = io
        self.path = layout.message_index_path(session_path)
        #: False: index the log in memory only, never opening the file (``check``).
        self.use_file = use_file
        #: The writer's index opens the file for writing; a reader's only reads it (a
        #: store on read-only media reads as well as any).
        self.writable = writable
        #: An exclusive writer's: no one else writes or replaces the file while it holds
        #: the writer lock, so it need not look whether the file was replaced.
        self.owned = False
        self.log = log
        self.uid = uid
        self._fd: int | None = None
        self._file_key: tuple[int, int] | None = None
        self._log_start: int | None = None
        self._file_rows = 0  # checked rows in the file
        # Rows not in the file: a reader's, made from the log; the writer's, not written
        # yet (``add_rows``).
        self._extra: list[Row] = []
        # The log is indexed up to this frame boundary: message records before it have
        # rows; ``_covered_seq`` is the last seq before it.
        self._covered: LogPosition | None = None
        self._covered_seq = 0
        self._needs_file = False  # the writer makes the file at its first write
        self._passed_size = -1  # a file size whose new rows a reader found not to hold
        self._cut_to: int | None = None  # the writer cuts the file there at its next write
        self._covered_next: int | None = None
        self._last: Row | None = None
        self._lookup: _Lookup | None = None
        # Records read lately, by the row that found them (its place, seq and hash): a
        # record once written never changes while its segment and row exist, and a
        # cleared or replaced log or index drops them all (``_reset``).
        self._cache: dict[Row, tuple[MessageRecord, float, int]] = {}
        #: Tool call ids of records this process indexed lately: a tool result that
        #: answers one needs no lookup (the index has its CALL row).
        self.recent_calls: dict[str, None] = {}

    # --- the file ---

    def close(self) -> None:
        if self._fd is not None:
            self.io.close(self._fd)
        self._fd = self._file_key = None

    def forget(self) -> None:
        """Drop what is known, so that the next refresh reads the file and the log
        afresh (a read found a row the log does not hold)."""
        self.close()
        self._log_start = None

    def renew(self, redacted: bool) -> None:
        """The writer, after a vacuum: drop what is known (its records read lately may
        be ones the vacuum redacted). When it ``redacted`` records, also write the rows
        it holds and replace the file by a copy of it (a rename): a reader in another
        process then sees a new file and drops the records it holds too (20.3)."""
        if redacted and self.use_file and self.writable:
            self.write_rows()
            try:
                raw = self.io.read_file(self.path, 1 << 40)
            except FileNotFoundError:
                raw = None  # no file yet: no reader holds one
            if raw is not None:
                self.io.atomic_write(self.path, raw)
        self.forget()

    def _open(self) -> bool:
        """Open the file if it exists; True when it is another file than before."""
        if not self.use_file:
            return self._log_start is None
        if self.owned and self._fd is not None:
            return False
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            if self._fd is not None:
                self.close()
                return True
            return self._file_key is None and self._log_start is None
        key = (st.st_dev, st.st_ino)
        if key == self._file_key:
            return False
        self.close()
        try:
            self._fd = self.io.open(self.path, os.O_RDWR if self.writable else os.O_RDONLY)
        except FileNotFoundError:
            return True
        self._file_key = key
        return True

    def _header_ok(self, log_start: int) -> bool:
        fd = self._fd
        if fd is None:
            return False
        raw = self.io.pread(fd, HEADER.size, 0)
        if len(raw) != HEADER.size:
            return False
        magic, major, _minor, row_size, uid, start, crc = HEADER.unpack(raw)
        return bool(magic == MAGIC and crc32c(raw[:32]) == crc and major == VERSION[0]
                and row_size == ROW.size and uid == self.uid and start == log_start)

    def _reset(self, log_start: int) -> None:
        self._log_start = log_start
        self._needs_file = False
        self._passed_size = -1
        self._cut_to = None
        self._file_rows = 0
        self._extra = []
        self._covered = None
        self._covered_next = None
        self._covered_seq = log_start - 1
        self._last = None
        self._lookup = None
        self._cache = {}
        self.recent_calls = {}

    def _make_file(self) -> None:
        """Write an empty index for the log (the writer, when the file is missing,
        damaged or of another log), to hold the rows it has. Replaced by a rename, so a
        reader holding the old file reads it whole, then sees the new one."""
        assert self._log_start is not None
        self.io.atomic_write(self.path, encode_header(self.uid, self._log_start))
        self.close()
        self._open()
        self._file_rows = 0
        self._needs_file = False

    @property
    def file_size(self) -> int:
        return 0 if self._fd is None else self.io.size(self._fd)

    # --- bringing it up to the log ---

    def refresh(self, head: int | None = None, log_start: int | None = None, *,
                writer: bool) -> None:
        """Bring the index up to the log: rows for every message record up to ``head``.

        The writer knows its head and log start. A reader passes neither: it reads the
        log's tail when it first reads (or the index was replaced), and after that only
        looks for frames after the ones it has covered, which costs a few small reads
        however long the log; a covered segment gone means the log was cleared, and
        the index is read afresh."""
        replaced = self._open()
        if not replaced and self._log_start is not None and head is None:
            segment = self._log_start if self._covered is None else self._covered.segment
            if not self.log.holds_segment(segment):
                replaced = True  # cleared meanwhile: its segments are gone
        if replaced or self._log_start is None or (
                log_start is not None and self._log_start != log_start):
            if log_start is None:
                tail = self.log.tail()
                head, log_start = tail.head, tail.log_start
            self._reset(log_start)
            if not self._header_ok(log_start):
                # The writer makes the file when it first has rows to write: a refused
                # write changes nothing on disk.
                self.close()
                self._needs_file = writer
            else:
                self._load_file_rows(writer)
        elif self._fd is not None and not self.owned:
            self._read_new_file_rows()
        if head is None or self._covered_seq < head:
            self._catch_up(head, writer)

    def _load_file_rows(self, writer: bool) -> None:
        """Take the file's rows: up to the last flagged one whose record the log holds."""
        count = max(self.file_size - HEADER.size, 0) // ROW.size
        while count > 0:
            last = self._row_or_none(count - 1)
            if last is None:
                count -= 1  # a row cut by a crash mid-write (or damaged: verify says)
                continue
            if last.group_end and self._holds(last):
                break
            # A cut group, or rows past what the log holds (a power loss took back its
            # tail, or the log was copied before the index): keep the longest prefix
            # that ends a group the log holds.
            count = self._good_prefix(count)
        if writer and self.file_size != HEADER.size + count * ROW.size:
            # Rows the log does not hold are cut off at the writer's next write (not
            # now: a refused write changes nothing on disk).
            self._cut_to = HEADER.size + count * ROW.size
        self._file_rows = count
        if count:
            self._take_last(self._read_row(count - 1))

    def _good_prefix(self, count: int) -> int:
        """The longest prefix of the first ``count`` rows that ends with a flagged row
        the log holds (rows are in seq order, so those the log holds are a prefix)."""
        low, high = 0, count - 1  # the answer is a row count in [low, high]
        while low < high:
            middle = (low + high + 1) // 2
            row = self._row_or_none(middle - 1)
            if row is not None and self._holds(row):
                low = middle
            else:
                high = middle - 1
        while low > 0:
            row = self._row_or_none(low - 1)
            if row is not None and row.group_end:
                break
            low -= 1
        return low

    def _row_or_none(self, number: int) -> Row | None:
        try:
            return self._read_row(number)
        except CorruptionError:
            return None

    def _read_new_file_rows(self) -> None:
        """Take the rows a writer added to the file since, once whole and once the log
        holds the last of them: rows past what the log holds (dropped when the file was
        loaded) are not taken back in, until the writer has written over them."""
        size = self.file_size
        count = max(size - HEADER.size, 0) // ROW.size
        if count <= self._file_rows or size == self._passed_size:
            return
        assert self._fd is not None
        offset = HEADER.size + self._file_rows * ROW.size
        raw = self.io.pread(self._fd, (count - self._file_rows) * ROW.size, offset)
        rows = []
        for at in range(0, len(raw) - ROW.size + 1, ROW.size):
            # A group being written may be read half written: its rows are taken once
            # whole (their checksums pass) and flagged at the end.
            try:
                rows.append(_unpack_row(raw[at : at + ROW.size], self.path, offset + at))
            except CorruptionError:
                break
        while rows and not rows[-1].group_end:  # a group being written: not yet
            rows.pop()
        if not rows:
            return
        before = self._row_or_none(self._file_rows - 1) if self._file_rows else None
        if (before is not None and rows[0].seq < before.seq) or not self._holds(rows[-1]):
            self._passed_size = size  # not (yet) rows of this log: the log has the truth
            return
        if self._lookup is not None:
            if self._extra:
                self._lookup.rebuild_needed = True
            else:
                self._lookup.note(rows, self._file_rows)
        self._file_rows += len(rows)
        if self._extra:
            # The writer wrote rows for what this reader indexed itself: take the file's,
            # and read the log after them again in case they do not cover all of it.
            self._extra = []
            self._covered_seq = 0
        self._take_last(rows[-1])

    def _take_last(self, row: Row) -> None:
        self._last = row
        self._covered = LogPosition(row.segment, row.offset + row.size)
        self._covered_next = None  # the seq after the row's frame, learnt when needed
        # The frame may hold records after the row's: they are not messages (a frame's
        # message records all get rows), and the seq only bounds what is covered.
        self._covered_seq = max(self._covered_seq, row.seq)

    def _catch_up(self, head: int | None, writer: bool) -> None:
        """Index the message records after the covered position, up to the log's end."""
        assert self._log_start is not None
        start = self._covered or LogPosition(self._log_start, SEGMENT_HEADER_SIZE)
        if self._covered is not None and self._covered_next is None and self._last is not None:
            # Where the log goes on when the covered frame ends its segment: the segment
            # named after the seq past that frame.
            last = self._last
            frame = self.log.read_frames(last.segment, last.offset, last.offset + last.size,
                                         decode=False)[0]
            self._covered_next = frame.first_seq + frame.event_count
        made: list[Row] = []
        last_frame: Frame | None = None
        for frame in self.log.frames_from(start, MESSAGE_MARKER, self._covered_next):
            last_frame = frame
            if frame.entries is None:
                continue
            for index, (kind, data) in enumerate(frame.entries):
                if kind != MESSAGE_RECORD:
                    continue
                seq = frame.first_seq + index
                try:
                    made.extend(self.rows_for(seq, data, frame, pending=made))
                except (KeyError, TypeError, ValueError, AttributeError) as exc:
                    raise CorruptionError(
                        f"message record at seq {seq} cannot be indexed ({exc!r}): it was "
                        "written by a newer fsstore, or by hand",
                        path=self.log.segment_path(frame.segment), offset=frame.offset) from None
            if made and not made[-1].group_end:
                made[-1] = made[-1]._replace(group_end=True)
        if made:
            self.add_rows(made, write=writer)
        if last_frame is not None:
            self._covered = LogPosition(last_frame.segment, last_frame.offset + last_frame.size)
            self._covered_seq = last_frame.first_seq + last_frame.event_count - 1
            self._covered_next = self._covered_seq + 1
        if head is not None:
            self._covered_seq = max(self._covered_seq, head)

    # --- rows ---

    @property
    def row_count(self) -> int:
        return self._file_rows + len(self._extra)

    @property
    def last_seq(self) -> int:
        """The seq of the last row (0 when there is none)."""
        return 0 if self._last is None else self._last.seq

    @property
    def live(self) -> int:
        """Live messages at the end of the index."""
        return 0 if self._last is None else self._last.live

    def read_rows(self, start: int, stop: int) -> list[Row]:
        """Rows ``start`` to ``stop`` (file rows and a reader's own), checked."""
        stop = min(stop, self.row_count)
        if start >= stop:
            return []
        rows: list[Row] = []
        file_stop = min(stop, self._file_rows)
        if start < file_stop:
            assert self._fd is not None
            offset = HEADER.size + start * ROW.size
            raw = self.io.pread(self._fd, (file_stop - start) * ROW.size, offset)
            if len(raw) != (file_stop - start) * ROW.size:
                raise CorruptionError("message index is shorter than it was", path=self.path,
                                      offset=offset + len(raw))
            # The hot loop of every read: the row checks inlined, no call per row. A row
            # with a good checksum must also be in its place: in seq order, and an ADD
            # row names itself as its message's first row (any other row an earlier one).
            view, size, checked, make = memoryview(raw), ROW.size, ROW_CHECKED, tuple.__new__
            previous = 0
            for index, fields in enumerate(ROW.iter_unpack(raw)):
                at = index * size
                if crc32c(view[at : at + checked]) != fields[8]:
                    raise CorruptionError("message index row fails its checksum",
                                          path=self.path, offset=offset + at)
                op, number, target, seq = fields[7] & ~GROUP_END, start + index, fields[3], \
                    fields[0]
                if (seq < previous or (target != number if op == ADD
                                       else op != MARK and target >= number)):
                    raise CorruptionError(
                        f"message index row {number} is out of place (seq {seq}, first row "
                        f"{target}): the index is damaged; delete {INDEX_NAME} and the "
                        "writer makes it again", path=self.path, offset=offset + at)
                previous = seq
                rows.append(make(Row, (*fields[:7], op, fields[7] >= GROUP_END)))
        if stop > self._file_rows:
            rows.extend(self._extra[max(start - self._file_rows, 0) : stop - self._file_rows])
        return rows

    def _read_row(self, number: int) -> Row:
        assert self._fd is not None
        offset = HEADER.size + number * ROW.size
        raw = self.io.pread(self._fd, ROW.size, offset)
        if len(raw) != ROW.size:
            raise CorruptionError("message index row is cut short", path=self.path,
                                  offset=offset)
        return _unpack_row(raw, self.path, offset)

    def row(self, number: int) -> Row:
        return self.read_rows(number, number + 1)[0]

    def rows_through(self, seq: int) -> int:
        """How many rows have a seq <= ``seq`` (rows are in seq order)."""
        low, high = 0, self.row_count
        while low < high:
            middle = (low + high) // 2
            if self.row(middle).seq <= seq:
                low = middle + 1
            else:
                high = middle
        return low

    def add_rows(self, rows: Sequence[Row], *, write: bool, defer: bool = False) -> None:
        """Take rows made for records now in the log. A reader keeps them in memory. The
        writer writes them to the file in one write (so a crash cuts at most the last
        group); with ``defer`` (an exclusive writer, the only one to write the file) it
        keeps them until ``DEFERRED_ROWS`` wait, or ``write_rows``: one write of the
        index per many appends. Rows not written yet are what a reader, or the next
        writer after a crash, makes from the log after the last row."""
        if not rows:
            return
        self._extra.extend(rows)
        if self._lookup is not None:
            self._lookup.note(rows, self.row_count - len(rows))
        self._take_last(rows[-1])
        if write and (not defer or len(self._extra) >= DEFERRED_ROWS):
            self.write_rows()

    def write_rows(self) -> None:
        """The writer: write the rows it holds to the file (making the file first, or
        cutting off rows the log does not hold, when a refresh found that needed)."""
        if not self._extra:
            return
        if self._needs_file:
            self._make_file()
        if self._fd is None:
            return
        if self._cut_to is not None:
            self.io.truncate(self._fd, self._cut_to)
            self._cut_to = None
        rows, self._extra = self._extra, []
        self.io.pwrite(self._fd, b"".join(row.pack() for row in rows),
                       HEADER.size + self._file_rows * ROW.size)
        self._file_rows += len(rows)

    def rows_for(self, seq: int, data: Any, frame: Frame | None,
                 pending: Sequence[Row] = ()) -> list[Row]:
        """The rows a message record at ``seq`` adds (``frame`` where it is), none of
        them flagged: the caller flags the last row of the frame's rows. ``pending`` are
        rows made before it that are not added yet. Raises ValueError for a record that
        is not a message record's shape."""
        op_name = data["op"]
        live = pending[-1].live if pending else self.live
        number = self.row_count + len(pending)
        segment, offset, size = (frame.segment, frame.offset, frame.size) if frame else (0, 0, 0)
        rows: list[Row] = []
        if op_name == "add":
            message = data["message"]
            live += 1
            rows.append(Row(seq, segment, message_hash(message["id"]), number, live, offset,
                            size, ADD, False))
            target = number
        elif op_name in ("edit", "delete"):
            message_id = data["message"]["id"] if op_name == "edit" else data["id"]
            hashed = message_hash(message_id)
            try:
                target = self.first_row(hashed, pending)
            except KeyError:
                # A message added in history retention dropped (FORMAT.md 5.6), or whose
                # add a repair lost (an fsstore.lost record, 7.6; FORMAT.md 20.3): its
                # edit starts it afresh, as its first version; its delete leaves nothing.
                if op_name == "delete":
                    return []
                return self.rows_for(seq, {**data, "op": "add"}, frame, pending)
            if op_name == "delete":
                live -= 1
            rows.append(Row(seq, segment, hashed, target, live, offset, size,
                            EDIT if op_name == "edit" else DELETE, False))
            message = data.get("message")
        else:
            raise ValueError(f"unknown message op {op_name!r}")
        for part in (message or {}).get("parts", ()):
            if isinstance(part, dict) and part.get("type") == "tool_call":
                rows.append(Row(seq, segment, call_hash(part["call_id"]), target, live,
                                offset, size, CALL, False))
                self.recent_calls[part["call_id"]] = None
        while len(self.recent_calls) > _RECENT_CALLS:
            del self.recent_calls[next(iter(self.recent_calls))]
        return rows

    def first_row(self, hashed: int, pending: Sequence[Row] = ()) -> int:
        """The ADD row of the message whose id hashes to ``hashed`` (the first: a
        writer never adds an id twice)."""
        for index, row in enumerate(pending):
            if row.hash == hashed and row.op == ADD:
                return self.row_count + index
        for number in self.find(hashed):
            if self.row(number).op == ADD:
                return number
        raise KeyError(hashed)

    # --- finding by hash ---

    def find(self, hashed: int) -> list[int]:
        """Numbers of the rows with hash ``hashed``, ascending (message rows and call rows
        have hashes apart)."""
        lookup = self._lookup
        if lookup is None or lookup.rebuild_needed:
            lookup = self._lookup = _Lookup.build(self)
        return lookup.find(hashed)

    # --- records ---

    def records(self, rows: Sequence[Row]) -> list[tuple[MessageRecord, float, int]]:
        """The message records ``rows`` point at, with their frames' ts and turn: the
        reads' fast path. The frames are read in one read per run of nearby frames of a
        segment, and each is checked where the row says it is: its checksum, its seq
        range and its size, then the record (kind, schema, id hash) as ``record``
        checks it."""
        if self.log.chain is not None:
            self.log.chain.mac  # noqa: B018  (a keyed chain's records need its key)
        found: list[tuple[MessageRecord, float, int] | None] = [None] * len(rows)
        cache = self._cache
        missing = []
        for number, row in enumerate(rows):
            hit = cache.get(row)
            if hit is None:
                missing.append(number)
            else:
                found[number] = hit
        order = sorted(missing, key=lambda n: (rows[n].segment, rows[n].offset))
        start = 0
        while start < len(order):
            first = rows[order[start]]
            stop, end = start + 1, first.offset + first.size
            while stop < len(order):
                row = rows[order[stop]]
                if row.segment != first.segment or row.offset > end + 65536:
                    break
                end = max(end, row.offset + row.size)
                stop += 1
            with self.log.open_segment(first.segment) as segment:
                path = segment.path
                buf = segment.pread(end - first.offset, first.offset)
                vouch_read(self.log, segment, first.offset, buf)  # (FORMAT.md 3.4)
            view = memoryview(buf)
            decoded: dict[int, _SplitFrame] = {}
            for number in order[start:stop]:
                row = rows[number]
                at = row.offset - first.offset
                frame = decoded.get(at)
                if frame is None:
                    frame = decoded[at] = self._frame_at(row, buf, view, at, path)
                ts, turn, first_seq, entries = frame
                found[number] = cache[row] = (
                    self._decode_record(row, entries[row.seq - first_seq], path, row.offset),
                    ts, turn)
            start = stop
        while len(cache) > _CACHED_RECORDS:
            del cache[next(iter(cache))]
        return [item for item in found if item is not None]

    def _frame_at(self, row: Row, buf: bytes, view: memoryview, at: int, path: str
                  ) -> _SplitFrame:
        """The frame a row names, at ``at`` in ``buf``, checked and split."""
        if at + row.size > len(buf) or row.size < FRAME_HEADER_SIZE + TRAILER_SIZE:
            raise self._stale(row, "is past the end of the segment")
        crc, length, first_seq, count, frame_type = _FRAME_FIELDS.unpack_from(buf, at)
        end = at + row.size
        # a chained frame's checksum stops before its chain fields (FORMAT.md 3.4)
        chained = frame_type in CHAIN_FIELDS
        body_end = at + ((FRAME_HEADER_SIZE + length + 7) & ~7) if chained else end
        if crc32c(view[at + 4 : min(body_end, end)]) != crc:
            frame_size, magic = _TRAILER.unpack_from(buf, end - TRAILER_SIZE)
            if magic == TRAILER_MAGIC and frame_size == row.size:
                # A frame's bounds where the row says, its checksum wrong: the log's
                # record is damaged, not the index.
                raise CorruptionError(f"damaged record (seq {row.seq}'s frame fails its "
                                      "checksum); restore the segment from a backup",
                                      path=path, offset=row.offset)
            raise self._stale(row, "is not a whole record of that size")
        if frame_end(0, length, frame_type) != row.size:
            raise self._stale(row, "is not a whole record of that size")
        if not first_seq <= row.seq < first_seq + count:
            raise self._stale(row, "holds no such seq")
        payload = view[at + FRAME_HEADER_SIZE : at + FRAME_HEADER_SIZE + length]
        entries: list[tuple[str, Any]]
        try:
            # Most frames that hold messages hold only messages: decode them in one go;
            # a frame with other records too is split first, each record decoded alone.
            ts, turn, entries = _messages_decoder.decode(payload)  # type: ignore[assignment]
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
            try:
                ts, turn, entries = _entries_decoder.decode(payload)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise CorruptionError(f"record payload does not decode: {exc}", path=path,
                                      offset=row.offset) from None
        if len(entries) != count:
            raise CorruptionError(f"record holds {len(entries)} events, its header says "
                                  f"{count}", path=path, offset=row.offset)
        return ts, turn, first_seq, entries

    def _decode_record(self, row: Row, entry: tuple[str, Any], path: str,
                       offset: int) -> MessageRecord:
        kind, raw = entry
        if kind != MESSAGE_RECORD:
            raise self._stale(row, f"is a {kind!r} record, not a message record")
        if isinstance(raw, MessageRecord):
            record = raw
        else:
            try:
                record = _record_decoder.decode(raw)
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                raise CorruptionError(
                    f"message record at seq {row.seq} does not fit the message schema "
                    f"({exc}): written by a newer fsstore, or by hand", path=path,
                    offset=offset) from None
        if row.op == CALL:
            found = record.message is not None and any(
                isinstance(part, ToolCallPart) and call_hash(part.call_id) == row.hash
                for part in record.message.parts)
        else:
            found = message_hash(record.message_id) == row.hash
        if not found:
            raise self._stale(row, "holds another message")
        return record

    def _holds(self, row: Row) -> bool:
        """Whether the log holds the record ``row`` names, where it says."""
        try:
            if row.op != MARK:
                self.records([row])
                return True
            frame = self.log.read_frames(row.segment, row.offset, row.offset + row.size,
                                         decode=False)[0]
            return frame.first_seq <= row.seq < frame.first_seq + frame.event_count
        except (CorruptionError, OSError):
            return False

    def _stale(self, row: Row, what: str) -> CorruptionError:
        return CorruptionError(
            f"message index row for seq {row.seq} points at segment "
            f"{layout.segment_name(row.segment)} byte {row.offset}, which {what}: the index "
            f"is damaged or stale; delete {INDEX_NAME} and the session's writer makes it "
            "again from the log", path=self.path)

    def mark(self, head: int, frame: Frame) -> None:
        """The writer, closing: write the rows it holds, and record that the log is
        indexed up to ``head`` (a MARK row at the frame holding it), so that a reader
        need not read the log after the last message to know it holds no message."""
        if (self._last is not None and head > self._last.seq and self._fd is not None
                and frame.segment <= head):
            row = Row(head, frame.segment, 0, 0, self.live, frame.offset, frame.size, MARK)
            self.add_rows([row], write=False)
        self.write_rows()


def check_index(index: MessageIndex, head: int, log_start: int) -> list[Finding]:
    """What is wrong with a session's message index (``verify``): compared with the
    rows the log gives. Rows that disagree with the log are problems (reads would
    refuse them); an index behind or ahead of the log, or of another log, is a note
    (the writer makes it good when it next writes messages)."""
    findings: list[Finding] = []
    path = index.path
    if not os.path.lexists(path):
        return findings
    built = MessageIndex(index.io, os.path.dirname(path), index.log, index.uid,
                         use_file=False)
    built.refresh(head, log_start, writer=False)
    expected = [row for row in built.read_rows(0, built.row_count) if row.op != MARK]
    for row in expected:
        try:
            built.records([row])
        except CorruptionError as exc:
            findings.append(Finding("problem", exc.path, exc.offset, exc.reason))
    raw = index.io.read_file(path, 1 << 40)
    if len(raw) < HEADER.size:
        findings.append(Finding("problem", path, 0, "message index is shorter than its "
                                "header; the session's writer makes it again"))
        return findings
    magic, major, _minor, row_size, uid, start, crc = HEADER.unpack(raw[:HEADER.size])
    if magic != MAGIC or crc32c(raw[:32]) != crc or row_size != ROW.size:
        findings.append(Finding("problem", path, 0, "message index header is damaged; the "
                                "session's writer makes the index again from the log"))
        return findings
    if major != VERSION[0]:
        findings.append(Finding("problem", path, 0, f"message index of major version "
                                f"{major}, which this fsstore does not read"))
        return findings
    if uid != index.uid or start != log_start:
        findings.append(Finding("note", path, 0, "message index is of another log (a clear, "
                                "or a copy of another session): unused; the writer makes "
                                "it again"))
        return findings
    files: dict[int, tuple[int, int]] = {}  # segment -> (its file, offset shift)
    rows: list[Row] = []
    place: dict[int, int] = {}  # a file row's number -> its number among the non-MARK rows
    count = (len(raw) - HEADER.size) // ROW.size
    for number in range(count):
        at = HEADER.size + number * ROW.size
        try:
            row = _unpack_row(raw[at : at + ROW.size], path, at)
        except CorruptionError as exc:
            later = any(_intact(raw, HEADER.size + n * ROW.size) for n in range(number + 1,
                                                                               count))
            if later:
                findings.append(Finding("problem", path, at, exc.reason))
                return findings
            else:
                findings.append(Finding("note", path, at, "message index ends in rows a "
                                        "crash cut while they were written: unused"))
            break
        if row.op != MARK:
            place[number] = len(rows)
            rows.append(row)
        elif row.seq > head:
            findings.append(Finding("note", path, at, f"message index says the log holds "
                                    f"seq {row.seq}, past its head {head}: unused"))
    for number, (row, want) in enumerate(zip(rows, expected, strict=False)):
        # MARK rows take row numbers in the file but not in the rows made from the log;
        # the group flags say where a write ended, not what a record is.
        found = row._replace(target=place.get(row.target, -1), group_end=True)
        want = want._replace(group_end=True)
        if found != want and _placed(index.log, found, files) != _placed(index.log, want,
                                                                         files):
            findings.append(Finding(
                "problem", path, None, f"message index row {number} says {_describe(row)}, "
                f"the log says {_describe(want)}; delete {INDEX_NAME} and the writer makes "
                "it again"))
            return findings
    if len(rows) < len(expected):
        findings.append(Finding("note", path, None, f"message index has rows for "
                                f"{len(rows)} of the log's {len(expected)} message rows; "
                                "reads index the rest from the log, the writer writes them"))
    elif len(rows) > len(expected):
        extra = len(rows) - len(expected)
        findings.append(Finding("note", path, None, f"message index has {extra} row(s) past "
                                "what the log holds (a crash took back the log's tail): "
                                "unused"))
    return findings


def _placed(log: LogReader, row: Row, files: dict[int, tuple[int, int]]) -> Row:
    """``row`` with its place in the file that holds its frame: a row written before a
    compaction names the segment merged into a compacted file, one made after it the
    compacted file (FORMAT.md 3.2). Both name the same frame."""
    if row.segment not in files:
        files[row.segment] = log.file_place(row.segment)
    segment, shift = files[row.segment]
    return row._replace(segment=segment, offset=row.offset + shift)


def _intact(raw: bytes, at: int) -> bool:
    try:
        _unpack_row(raw[at : at + ROW.size], "", at)
    except CorruptionError:
        return False
    return True


def _describe(row: Row) -> str:
    return (f"seq {row.seq} op {row.op} at segment {row.segment} byte {row.offset} "
            f"(hash {row.hash:016x}, first row {row.target}, {row.live} live)")


class _Lookup:
    """The rows' hashes, sorted, for finding a row by hash in O(log n); rows added
    since are kept in a dict until there are many."""

    def __init__(self, hashes: np.ndarray, order: np.ndarray, covered: int) -> None:
        self.hashes = hashes
        self.order = order
        self.covered = covered
        self.recent: dict[int, list[int]] = {}
        #: How many row numbers ``recent`` holds: counted as they come, since summing the
        #: lists on every append made each append cost O(rows appended since the build).
        self.recent_rows = 0
        self.rebuild_needed = False

    @classmethod
    def build(cls, index: MessageIndex) -> _Lookup:
        import numpy as np

        count = index._file_rows
        if count and index._fd is not None:
            raw = index.io.pread(index._fd, count * ROW.size, HEADER.size)
            if len(raw) != count * ROW.size:
                raise CorruptionError("message index is shorter than it was",
                                      path=index.path, offset=HEADER.size + len(raw))
            table = np.frombuffer(raw, dtype=_row_dtype())
            _check_rows(raw, table["crc"], index.path)
            hashes = table["hash"].copy()
            ops = table["op"] & ~np.uint8(GROUP_END)
            _check_places(table, ops, index.path)
            hashes[ops == MARK] = 0  # a MARK row names no message
        else:
            hashes = np.zeros(0, dtype=np.uint64)
        order = np.argsort(hashes, kind="stable")
        lookup = cls(hashes[order], order, count)
        lookup.note(index._extra, count)
        return lookup

    def note(self, rows: Sequence[Row], first_number: int) -> None:
        for offset, row in enumerate(rows):
            if row.op != MARK:
                self.recent.setdefault(row.hash, []).append(first_number + offset)
                self.recent_rows += 1
        if self.recent_rows > _UNSORTED_LIMIT:
            self.rebuild_needed = True

    def find(self, hashed: int) -> list[int]:
        import numpy as np

        key = np.uint64(hashed)
        low = int(np.searchsorted(self.hashes, key, "left"))
        high = int(np.searchsorted(self.hashes, key, "right"))
        found = sorted(int(number) for number in self.order[low:high])
        return found + self.recent.get(hashed, [])


def _check_places(table: np.ndarray, ops: np.ndarray, path: str) -> None:
    """Rows with good checksums must be in their places, as ``read_rows`` checks them:
    in seq order, each ADD row naming itself as its message's first row, every other
    row but MARK an earlier one."""
    import numpy as np

    numbers = np.arange(len(table), dtype=np.uint64)
    seqs, targets = table["seq"], table["target"]
    wrong = np.zeros(len(table), dtype=bool)
    wrong[1:] |= seqs[1:] < seqs[:-1]
    wrong |= (ops == ADD) & (targets != numbers)
    wrong |= (ops != ADD) & (ops != MARK) & (targets >= numbers)
    if wrong.any():
        number = int(np.argmax(wrong))
        raise CorruptionError(
            f"message index row {number} is out of place (seq {int(seqs[number])}, first "
            f"row {int(targets[number])}): the index is damaged; delete {INDEX_NAME} and "
            "the writer makes it again", path=path, offset=HEADER.size + number * ROW.size)


def _check_rows(raw: bytes, crcs: np.ndarray, path: str) -> None:
    view = memoryview(raw)
    size, checked = ROW.size, ROW_CHECKED
    for number, crc in enumerate(crcs.tolist()):
        at = number * size
        if crc32c(view[at : at + checked]) != crc:
            raise CorruptionError("message index row fails its checksum", path=path,
                                  offset=HEADER.size + at)
