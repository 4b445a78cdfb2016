"""Writing the segmented append log: the durability settings, appends, barriers and group
commit, rollover and sealing, clear, recovery of a torn tail by the next writer, following
what other shared writers appended, and the copy of a log prefix a fork makes.

The frame format is in ``log_format.py``, the reader in ``log.py``; docs/FORMAT.md has
the grammar and the damage rules. Comments here say why each step is ordered as it is
around crashes.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from . import chain_writer, layout
from .chain_check import ChainRules
from .chain_frames import RunState
from .errors import (
    ChainUnsupported,
    CorruptionError,
    InvalidSetting,
    SeqOutOfRange,
    SessionClosed,
    WriteFailed,
)
from .fsio import FileIO
from .identity import NO_UID, Identity
from .log import LogPosition, LogReader
from .log_format import (
    _PREALLOCATE_MAX,
    _PREALLOCATE_MIN,
    _U32,
    BASE_FRAMES,
    DEFAULT_MAX_RECORD_BYTES,
    DEFAULT_SEGMENT_SIZE,
    MAX_FRAME_PAYLOAD,
    MAX_SEGMENT_SIZE,
    TRAILER_SIZE,
    Event,
    SegmentScan,
    _Frame,
    _parse_frame,
    _tail_of,
    decode_payload,
    encode_frame,
    encode_payload,
)
from .segment_file import encode_compacted, file_data_end
from .segment_header import (
    MARK_AT,
    SEGMENT_HEADER_SIZE,
    decode_segment_header,
    encode_segment_header,
    mark_segment_header,
)
from .tail_hint import in_original_folder, read_tail_hint, write_tail_hint

_BUFFER_LIMIT = 64 << 10  # durability "none" hands batches to the OS in chunks this big
_FOLLOW_CHUNK = 64 << 10  # a shared writer reads what others appended this much at a time


# --- durability --------------------------------------------------------------------------

DURABILITY_MODES = ("fsync", "flush", "none")


@dataclass(frozen=True)
class Durability:
    """When appended batches reach the disk.

    ``mode``:
      - ``"fsync"``: each append call is fdatasynced before it returns;
      - ``"flush"`` (default): each append call is handed to the OS before it returns
        (survives the process being killed); fsync at ``finish_turn``, ``sync`` and close;
      - ``"none"``: batches are buffered in the process and handed to the OS in 64 KiB
        chunks, at ``finish_turn``, ``sync`` and close; never fsynced, unless with group
        commit.

    Group commit (``group_commit_ms``, ``group_commit_records``), with ``"flush"`` or
    ``"none"``: when that many milliseconds have passed since the oldest unsynced append,
    or that many records are unsynced, whatever is buffered is written and fsynced, by the
    appending thread or a background one. ``finish_turn`` then fsyncs too.
    """

    mode: str = "flush"
    group_commit_ms: float | None = None
    group_commit_records: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in DURABILITY_MODES:
            raise InvalidSetting(
                f"durability mode must be one of {DURABILITY_MODES}, not {self.mode!r}")
        grouped = self.group_commit_ms is not None or self.group_commit_records is not None
        if grouped and self.mode == "fsync":
            raise InvalidSetting("group commit goes with durability mode 'flush' or 'none', "
                                 "not 'fsync' (which already syncs every append)")
        if self.group_commit_ms is not None and not self.group_commit_ms > 0:
            raise InvalidSetting("group_commit_ms must be > 0")
        if self.group_commit_records is not None and self.group_commit_records < 1:
            raise InvalidSetting("group_commit_records must be >= 1")

    @classmethod
    def of(cls, value: Durability | str | None) -> Durability:
        if value is None:
            return cls()
        if isinstance(value, Durability):
            return value
        return cls(mode=value)

    @property
    def grouped(self) -> bool:
        return self.group_commit_ms is not None or self.group_commit_records is not None

    @property
    def syncs(self) -> bool:
        """Whether barriers (finish_turn, close) fsync: all but plain ``"none"``."""
        return self.mode != "none" or self.grouped


# --- writing -----------------------------------------------------------------------------


def create_log(io: FileIO, path: str, uid: int = NO_UID) -> None:
    """A new log at ``path``: one empty segment starting at seq 1, written by the session
    whose uid is ``uid`` (none for a collection's WAL), and its tail hint. Made inside a
    temp folder that is renamed into place only once all of it is durable (a rename
    keeps the folder's inode, which the hint names)."""
    io.mkdir(path)
    io.write_new(os.path.join(path, layout.segment_name(1)), encode_segment_header(1, 1, uid))
    write_tail_hint(io, path, 1)


def check_settings(segment_size: int, max_record_bytes: int) -> None:
    if not 0 < max_record_bytes <= MAX_FRAME_PAYLOAD:
        raise InvalidSetting(f"max_record_bytes must be in 1..{MAX_FRAME_PAYLOAD}, not "
                             f"{max_record_bytes}")
    if not 4096 <= segment_size <= MAX_SEGMENT_SIZE:
        raise InvalidSetting(f"segment_size must be from 4096 to {MAX_SEGMENT_SIZE} bytes, not "
                             f"{segment_size}")


class LogWriter:
    """The one writer of a log (the session's writer lock sees to it that there is only
    one). Thread-safe: every call takes ``self.lock``."""

    def __init__(
        self,
        io: FileIO,
        path: str,
        durability: Durability,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        neutral_kinds: frozenset[str] = frozenset(),
        identity: Identity | None = None,
        chain: ChainRules | None = None,
    ) -> None:
        check_settings(segment_size, max_record_bytes)
        # Batches ending in a neutral kind leave last_turn and last_kind as they were:
        # the session's queue and input records come from outside its turns.
        self.neutral_kinds = neutral_kinds
        self.io = io
        self.path = path
        self.reader = LogReader(io, path, identity)
        # The session's chain (FORMAT.md 3.4): the run of the active segment, and the
        # chain value after the head while that run holds no frame yet.
        self.chain = self.reader.chain = chain
        self._run: RunState | None = None
        self._head_link = b""
        # New segments carry the session's uid (none for a session from before uids).
        self._uid = NO_UID if identity is None else identity.uid
        self.durability = durability
        self.segment_size = segment_size
        self.max_record_bytes = max_record_bytes
        self.lock = threading.RLock()
        # Preallocation pays when every append fsyncs: an overwrite of space the file
        # already has needs no size change committed. Group commit syncs too rarely for
        # it to matter, and extending the file would hold up appends.
        self._mode = durability.mode
        self._preallocate = durability.mode == "fsync"
        self._grouped = durability.grouped
        self._group_interval = (durability.group_commit_ms or 0) / 1000
        self._fd: int | None = None
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._unsynced_records = 0
        self._unsynced_since = 0.0
        self._failed: BaseException | None = None
        self._closed = False
        self._syncing = False
        self.recovered_torn_tail: str | None = None
        self.bytes_appended = 0  # log bytes this writer wrote (snapshot policies use it)
        # The frames the last refresh read forward, or None when it relocated the tail.
        self.followed: list[tuple[_Frame, int]] | None = None
        self._recover()
        self._syncer: threading.Thread | None = None
        self._wake = threading.Condition(self.lock)
        if durability.group_commit_ms is not None:
            self._syncer = threading.Thread(
                target=self._group_commit_loop, name=f"fsstore-sync {path}", daemon=True)
            self._syncer.start()

    # --- state after recovery ---

    def _recover(self) -> None:
        """Find the end of the log and set aside a torn tail, reading only the end of the
        log. (Leftovers of an interrupted clear or rollover wait for the next one.)"""
        io, reader = self.io, self.reader
        first, self.log_start, found = reader.locate_tail()
        # Segments before this start are removed at the next rollover or clear; after a
        # roll_over that moves the start, only those before the start it replaced.
        self._kept_start = self.log_start
        end = found.end
        self.head = found.next_seq - 1
        self.last_turn = found.last[1] if found.last else None
        self.last_kind = found.last[2] if found.last else None
        # The seq of the last record not of a neutral kind (log_start - 1: none).
        self.significant_head = self.head if found.last else self.log_start - 1
        if self.last_kind in self.neutral_kinds:
            significant = self._last_significant(first, end)
            self.last_turn, self.last_kind, self.significant_head = (
                significant or (None, None, self.log_start - 1))
        fd = io.open(reader.segment_path(first), os.O_RDWR)
        try:
            # Only the last segment can be unfinished: a segment is sealed before its
            # successor is created.
            data_end = file_data_end(io, fd)
            if data_end > end:
                # segment_end walked the segment and found nothing valid past `end`.
                self._set_aside_torn_tail(fd, first, end, data_end)
            if self.chain is not None and self._resume(fd, first, end):
                io.close(fd)
                return self._recover()  # its last frame's chain value was torn: set aside
        except BaseException:
            io.close(fd)
            raise
        self._fd, self._end, self.segment = fd, end, first
        self._last_crc: bytes | None = None  # of the frame ending at _end; read when asked
        self._allocated = io.size(fd)
        self._written_end = end
        # The synced mark of the active segment (1.1 segments only; an older one gets
        # none until the next rollover): its fixed header bytes and the end it claims.
        header = reader.read_header(first)
        self._mark_static: bytes | None = header.static or None
        self._marked_end = header.synced_end
        # Frames past the mark may be in the page cache only (a writer killed before its
        # barrier, or one in flush mode that never had one): they count as unsynced, so
        # the next barrier fdatasyncs them before it writes a mark claiming them. Earlier
        # segments were fsynced when they were sealed.
        self.synced_head = self.head if header.synced_end >= end else first - 1
        self._mark_unsynced = False  # a mark was written since the last fdatasync
        self._take_folder(fd, first, end)

    def _resume(self, fd: int, first: int, end: int) -> bool:
        """Take up the run of the active segment, checked (``chain_writer.resume_run``:
        a writer never MACs records after a forged one). True when its last frame, past
        the synced mark, held a chain value that fails (a write torn inside it): it is
        set aside as a torn tail, and the log's end must be found again."""
        assert self.chain is not None
        path = self.reader.segment_path(first)
        frames = self.io.pread(fd, end - SEGMENT_HEADER_SIZE, SEGMENT_HEADER_SIZE)
        resumed = chain_writer.resume_run(self.chain, self.reader, self.reader.read_header(first),
                                          frames, path)
        if isinstance(resumed, int):
            self._set_aside_torn_tail(fd, first, resumed, end)
            return True
        self._run, self._head_link = resumed
        return False

    @property
    def head_link(self) -> bytes | None:
        """The chain value after the head (FORMAT.md 3.4): the last record's, the genesis
        of a log that holds none; None for a log without a chain."""
        with self.lock:
            run = self._run
            return None if run is None else run.link if run.started else self._head_link

    def _take_folder(self, fd: int, first: int, end: int) -> None:
        """Make this log folder the one its synced marks bind in, when ``tail.hint`` does
        not name it yet: a copy of a log (a restored backup, a checkout, ``cp -r``), a
        hint from before the folder line, or none. In a copy, the active segment's mark
        can claim frames the copy tool did not copy (docs/FORMAT.md, 3.1), and the
        frames it did copy were written without a sync: the frames the copy holds are
        fdatasynced and the mark is set to their end *before* the hint names this
        folder, so no reader ever holds the copy to the original's mark, nor to frames
        a power loss could still take from the copy."""
        hint = read_tail_hint(self.io, self.path)
        if (hint is not None and hint.segment == first and hint.folder_inode is not None
                and in_original_folder(self.io, self.path, hint)):
            return
        self.io.fdatasync(fd)
        self.synced_head = self.head
        on_disk = decode_segment_header(self.io.pread(fd, SEGMENT_HEADER_SIZE, 0),
                                        self.reader.segment_path(first))
        mark = max(on_disk.synced_end, SEGMENT_HEADER_SIZE)
        if self._mark_static is not None and mark != end:
            self.io.pwrite(fd, mark_segment_header(self._mark_static, end)[MARK_AT:],
                           MARK_AT)
            self.io.fdatasync(fd)
            self._marked_end = end
        write_tail_hint(self.io, self.path, first)

    def _last_significant(self, first: int, end: int) -> tuple[int, str, int] | None:
        """(turn, kind, last seq) of the last frame whose last record is not of a neutral kind,
        walking back from ``end`` of segment ``first`` frame by frame (each frame ends in
        its size) and into earlier segments."""
        reader = self.reader
        segments = [s for s in reader.live_segments()[0] if s <= first]
        for segment in reversed(segments):
            # a compacted file holds the segments merged into it after its own: read it
            # back from where the segment after it starts
            with reader.open_segment(segment) as opened:
                path = opened.path
                pos = end if segment == first else opened.data_end()
                while pos > SEGMENT_HEADER_SIZE:
                    (size,) = _U32.unpack(opened.pread(4, pos - TRAILER_SIZE))
                    start = pos - size
                    raw = opened.pread(size, start) if start >= SEGMENT_HEADER_SIZE else b""
                    frame = _parse_frame(raw, memoryview(raw), 0, len(raw)) if raw else None
                    if frame is None:
                        raise CorruptionError("damaged record in the log", path=path,
                                              offset=start)
                    _, turn, kind = _tail_of(frame._replace(offset=start), path)
                    # a base frame stands for the dropped history, state changes and all:
                    # significant whatever its last record's kind (turns.revision_of too)
                    if kind not in self.neutral_kinds or frame.frame_type in BASE_FRAMES:
                        return turn, kind, frame.first_seq + frame.event_count - 1
                    pos = start
        return None

    def _set_aside_torn_tail(self, fd: int, first_seq: int, end: int, data_end: int) -> None:
        """Copy the torn bytes to a ``.torn`` file beside the segment, then cut them off.
        Nothing is thrown away unseen: ``fsstore verify`` lists the file."""
        raw = self.io.pread(fd, data_end - end, end)
        target = os.path.join(self.path, layout.torn_tail_name(first_seq, end))
        self.io.atomic_write(target, raw)
        self.io.truncate(fd, end)
        self.io.fsync(fd)
        self.recovered_torn_tail = target

    # --- appending ---

    def append(self, entries: Sequence[tuple[str, Any]], turn: int, ts: float) -> int:
        """Write one batch as one frame; return its first seq."""
        with self.lock:
            if self._failed is not None or self._closed:
                self.check_usable()
            first = self.head + 1
            if self._run is None:
                frame = encode_frame(first, ts, turn, entries, self.max_record_bytes)
                size = len(frame)
            else:  # chained: framed once the segment it goes in (its run) is known
                frame = encode_payload(ts, turn, entries, self.max_record_bytes)
                size = self._run.size_of(len(frame))
            try:
                if self._end + size > self.segment_size and self._end > SEGMENT_HEADER_SIZE:
                    self._roll_over()
                if self._run is not None:
                    frame = self._run.frame(frame, first, len(entries))
                    size = len(frame)
                mode = self._mode
                if mode == "none":
                    self._pending.append(frame)
                    self._pending_bytes += size
                    self._end += size
                    if self._pending_bytes >= _BUFFER_LIMIT:
                        self._write_pending()
                else:
                    if self._preallocate and self._end + size > self._allocated:
                        self._extend(self._end + size)
                    self.io.pwrite(self._fd, frame, self._end)  # type: ignore[arg-type]
                    self._end = self._written_end = self._end + size
                self.head += len(entries)
                self.bytes_appended += size
                self._last_crc = frame[:4]
                #: Where the last batch went: (segment, byte offset, size).
                self.last_frame = (self.segment, self._end - size, size)
                if entries[-1][0] not in self.neutral_kinds:
                    self.last_turn, self.last_kind = turn, entries[-1][0]
                    self.significant_head = self.head
                if mode == "fsync":
                    self.io.fdatasync(self._fd)  # type: ignore[arg-type]
                    self.synced_head = self.head
                    self._mark_unsynced = False
                    self._mark_synced(self._end)
                elif self._grouped:
                    self._group_commit_after(len(entries))
            except OSError as exc:
                raise self._fail(exc) from exc
            return first

    def _write_pending(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._pending_bytes = 0
            if self._preallocate and self._written_end + len(data) > self._allocated:
                self._extend(self._written_end + len(data))
            self.io.pwrite(self._fd, data, self._written_end)  # type: ignore[arg-type]
            self._written_end += len(data)

    def _extend(self, needed: int) -> None:
        """Preallocate zeros so that later fdatasyncs overwrite space the file already has
        and need not commit a size change each time."""
        grow = min(max(self._allocated, _PREALLOCATE_MIN), _PREALLOCATE_MAX)
        target = max(needed, min(self._allocated + grow, max(self.segment_size, needed)))
        zeros = bytes(min(target - self._allocated, _PREALLOCATE_MAX))
        pos = self._allocated
        while pos < target:
            chunk = zeros[: target - pos]
            self.io.pwrite(self._fd, chunk, pos)  # type: ignore[arg-type]
            pos += len(chunk)
        self.io.fdatasync(self._fd)  # type: ignore[arg-type]
        self._allocated = target

    def _group_commit_after(self, records: int) -> None:
        first = self._unsynced_records == 0
        if first:
            self._unsynced_since = time.monotonic()
        self._unsynced_records += records
        limit_records = self.durability.group_commit_records
        if limit_records is not None and self._unsynced_records >= limit_records:
            if self._syncer is None:
                self._sync_locked()
            else:
                self._wake.notify_all()
        elif first and self._syncer is not None:
            self._wake.notify_all()
        elif self._syncer is None:
            return
        elif time.monotonic() - self._unsynced_since >= self._group_interval:
            self._wake.notify_all()  # the syncer is late (say the GIL was busy): nudge it

    def _group_commit_loop(self) -> None:
        """The group-commit thread: every ``group_commit_ms`` that has unsynced appends,
        write them out under the lock, then fdatasync *outside* it, so appends go on
        while the disk works. Whatever touches the file descriptor exclusively (seal,
        clear, close) first waits for a sync in flight."""
        assert self.durability.group_commit_ms is not None
        interval = self.durability.group_commit_ms / 1000
        limit_records = self.durability.group_commit_records
        with self.lock:
            while not self._closed and self._failed is None:
                if self._unsynced_records == 0:
                    self._wake.wait()
                    continue
                remaining = self._unsynced_since + interval - time.monotonic()
                if remaining > 0 and not (
                        limit_records is not None and self._unsynced_records >= limit_records):
                    self._wake.wait(remaining)
                    continue
                try:
                    self._write_pending()
                except OSError as exc:
                    self._fail(exc)
                    return
                target, fd, synced_end = self.head, self._fd, self._written_end
                self._unsynced_records = 0
                self._syncing = True
                error: OSError | None = None
                self.lock.release()
                try:
                    self.io.fdatasync(fd)  # type: ignore[arg-type]
                except OSError as exc:
                    error = exc
                finally:
                    self.lock.acquire()
                    self._syncing = False
                    self._wake.notify_all()
                if error is not None:
                    self._fail(error)
                    return
                self.synced_head = max(self.synced_head, target)
                if fd == self._fd:  # seal, clear and close wait for a sync in flight
                    try:
                        self._mark_synced(synced_end)
                    except OSError as exc:
                        self._fail(exc)
                        return

    def _wait_for_sync(self) -> None:
        while self._syncing:
            self._wake.wait()

    # --- barriers ---

    def flush(self) -> None:
        """Hand buffered batches (durability ``none``) to the OS."""
        with self.lock:
            self.check_usable()
            try:
                self._write_pending()
            except OSError as exc:
                raise self._fail(exc) from exc

    def sync(self) -> None:
        """Make everything appended so far durable."""
        with self.lock:
            self.check_usable()
            self._sync_locked()

    def _sync_locked(self) -> None:
        try:
            self._write_pending()
            if self.synced_head != self.head:
                self.io.fdatasync(self._fd)  # type: ignore[arg-type]
                self._mark_unsynced = False
            self.synced_head = self.head
            self._unsynced_records = 0
            self._mark_synced(self._written_end)
        except OSError as exc:
            raise self._fail(exc) from exc

    def _mark_synced(self, end: int) -> None:
        """Record in the active segment's header that its frames before ``end`` are
        durable (docs/FORMAT.md, section 3.1), so that a reader can tell them missing.

        Called only after the fdatasync that made them durable, and not synced itself:
        the mark reaches the disk with the next barrier's fdatasync (or the kernel's
        writeback). So it never claims frames a crash could take back, costs one 64-byte
        pwrite and no fsync, and lags at most one barrier behind after a power loss.
        Only the 12 bytes that change are written (the mark, its CRC, the header's CRC):
        a write that tears or persists as garbage leaves the fixed fields and their CRC
        whole, and a reader then takes the mark as absent."""
        if self._mark_static is None or end <= max(self._marked_end, SEGMENT_HEADER_SIZE):
            return
        header = mark_segment_header(self._mark_static, end)
        self.io.pwrite(self._fd, header[MARK_AT:], MARK_AT)  # type: ignore[arg-type]
        self._marked_end = end
        self._mark_unsynced = True

    def refresh(self) -> LogPosition | None:
        """Catch up with what other processes appended since this writer last wrote.
        Returns None if the log did not move, else where it ended before (the boundary
        after the old head), from which the new records can be read.

        Shared writers (docs/FORMAT.md, section 16) take the session's mutex for each
        operation and call this first: another holder of the mutex may have appended
        frames, rolled the segment over, sealed it for a fork, or cleared the log.
        Reads 8 bytes and ``tail.hint``, and looks up one name, when nothing moved."""
        with self.lock:
            self.check_usable()
            self._write_pending()
            fd = self._fd
            assert fd is not None
            try:
                probe = self.io.pread(fd, 8, self._end)
                grown = probe != bytes(len(probe))
                # Every rollover, fork seal and clear names its new segment in tail.hint
                # under the mutex. One that names another segment means this one is no
                # longer the active one, even when nothing follows it (sealed) or the
                # segment that followed it is gone again (cleared): find the log afresh,
                # never append to a segment no reader looks at or a fork shares.
                current = self.reader.hinted_segment() == self.segment
                if current and not grown and not self.io.exists(
                        self.reader.segment_path(self.head + 1)):
                    return None
                before = self.position
                self.followed = []
                if current and grown and self._follow(fd) and not self.io.exists(
                        self.reader.segment_path(self.head + 1)):
                    return before
                self._fd = None
                self.io.close(fd)
                appended = self.bytes_appended
                self._recover()
                self.bytes_appended = appended
                self.followed = None
                if self.reader.hinted_segment() != self.segment:
                    # Stale or missing (a crash after a rename, an old store): named again,
                    # so that the next operation takes the quick way.
                    write_tail_hint(self.io, self.path, self.segment)
            except OSError as exc:
                raise self._fail(exc) from exc
            return before

    def _follow(self, fd: int) -> bool:
        """Take in the frames other writers appended to this segment after our end, read
        forward from it (the common case under a shared lock: no re-listing, and no stat
        of the segment, which would slow its next fdatasync). False when what follows is
        not whole frames then zeros or the end: then ``refresh`` finds the tail afresh."""
        buf = self.io.pread(fd, _FOLLOW_CHUNK, self._end)
        view = memoryview(buf)
        path = self.reader.segment_path(self.segment)
        off, head, frames = 0, self.head, []
        while True:
            frame = _parse_frame(buf, view, off, len(buf))
            if frame is None or frame.first_seq != head + 1:
                break
            frames.append(frame)
            head += frame.event_count
            off += frame.size
        # Whole frames, then zeros or the end of the file: a frame (torn or cut off by the
        # chunk) would begin with its non-zero checksum and length.
        if not frames or buf[off:off + 8].strip(b"\0"):
            return False
        if self._run is not None and not self._run.take(view[:off]):
            return False  # they do not continue the run: refresh takes it up afresh, checked
        for frame in reversed(frames):
            _, turn, kind = _tail_of(frame._replace(offset=self._end + frame.offset), path)
            if kind not in self.neutral_kinds:
                self.last_turn, self.last_kind = turn, kind
                self.significant_head = frame.first_seq + frame.event_count - 1
                break
        self._last_crc = bytes(buf[frames[-1].offset:frames[-1].offset + 4])
        self.followed = [(frame, self._end + frame.offset) for frame in frames]
        self._end = self._written_end = self._end + off
        self._allocated = max(self._allocated, self._end)
        self.head = head
        return True

    def followed_events(self) -> Iterator[Event]:
        """The events the last ``refresh`` took in by reading forward (empty when it had
        to find the tail afresh: then read them with ``LogReader.scans_from``)."""
        path = self.reader.segment_path(self.segment)
        for frame, offset in self.followed or ():
            ts, turn, entries = decode_payload(frame.payload, frame.event_count, path, offset)
            for index, (kind, data) in enumerate(entries):
                yield Event(frame.first_seq + index, ts, turn, kind, data)

    # --- segments ---

    @property
    def position(self) -> LogPosition:
        """Where the next frame goes: the boundary right after ``head``."""
        with self.lock:
            if self._end == SEGMENT_HEADER_SIZE:
                return LogPosition(self.segment, self._end)
            if self._last_crc is None:  # the frame recovery found: read its crc field
                fd = self._fd
                assert fd is not None
                (size,) = _U32.unpack(self.io.pread(fd, 4, self._end - TRAILER_SIZE))
                self._last_crc = self.io.pread(fd, 4, self._end - size)
            return LogPosition(self.segment, self._end, _U32.unpack(self._last_crc)[0])

    def position_of_last_frame(self) -> tuple[int, int, int] | None:
        """(segment, byte offset, size) of the active segment's last frame; None while
        it has none."""
        with self.lock:
            if self._end == SEGMENT_HEADER_SIZE:
                return None
            self._write_pending()
            fd = self._fd
            assert fd is not None
            (size,) = _U32.unpack(self.io.pread(fd, 4, self._end - TRAILER_SIZE))
            return self.segment, self._end - size, size

    def roll_over(self, log_start: int | None = None) -> None:
        """Seal the active segment now, if it holds any record, and start the next one.

        ``log_start``, the first seq of a segment from the current start on (or the next
        seq), moves the start of the log there: readers skip the segments before it.
        Those stay on disk until the start moves again, because a copy of the folder
        taken meanwhile may hold a newest segment from before the move, which still
        needs them."""
        with self.lock:
            self.check_usable()
            moved = log_start is not None and log_start != self.log_start
            if moved and not (self.log_start < log_start and (  # type: ignore[operator]
                    log_start == self.head + 1 or log_start in self.reader.list_segments())):
                raise ValueError(f"{self.path}: log start {log_start} is not a segment "
                                 f"after the current start {self.log_start}")
            if moved and self.chain is not None and not self.chain.moves_start:
                raise ChainUnsupported(f"{self.path}: the start of a chained log cannot be "
                                       "moved yet (the chain would need a base to vouch for)")
            if self._end > SEGMENT_HEADER_SIZE or moved:
                try:
                    self._roll_over(log_start if moved else None)
                except OSError as exc:
                    raise self._fail(exc) from exc

    def _roll_over(self, log_start: int | None = None) -> None:
        self._seal()
        if log_start is not None:
            self._kept_start, self.log_start = self.log_start, log_start
        self._start_segment(self.head + 1, self.log_start)
        self._remove_leftovers(self._kept_start)

    def _remove_leftovers(self, log_start: int) -> None:
        """Unlink segments before ``log_start`` (an interrupted clear left them; readers
        ignore them) and temp files (an interrupted segment create left them)."""
        names = self.io.listdir(self.path)
        leftovers = [self.reader.segment_path(s) for s in layout.segment_seqs(names)
                     if s < log_start]
        leftovers += [os.path.join(self.path, name) for name in names
                      if name.startswith(layout.TEMP_PREFIX)]
        for path in leftovers:
            self.io.unlink(path)
        if leftovers:
            self.io.fsync_dir(self.path)

    def _seal(self) -> None:
        """Make the active segment final: data durable, preallocated zeros cut off. A crash
        in between leaves zeros or not; both read the same."""
        self._wait_for_sync()
        fd = self._fd
        assert fd is not None
        self._write_pending()
        if self._allocated > self._end:
            self.io.truncate(fd, self._end)
        self.io.fsync(fd)
        self.synced_head = self.head
        self._unsynced_records = 0
        self._fd = None
        self.io.close(fd)

    def _start_segment(self, first_seq: int, log_start: int) -> None:
        """Create a segment whole under a temp name, then rename it in: a segment file
        never exists with a partial header."""
        data = encode_segment_header(first_seq, log_start, self._uid)
        if self._preallocate:
            data += bytes(_PREALLOCATE_MIN)
        final = self.reader.segment_path(first_seq)
        temp = os.path.join(self.path, layout.temp_name(layout.segment_name(first_seq)))
        fd = self.io.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL)
        try:
            self.io.pwrite(fd, data, 0)
            self.io.fsync(fd)
            self.io.rename(temp, final)
        except BaseException:
            self.io.close(fd)
            raise
        self.io.fsync_dir(self.path)
        self._fd, self.segment = fd, first_seq
        self._mark_static, self._marked_end = data[:MARK_AT], SEGMENT_HEADER_SIZE
        self._last_crc = bytes(4)
        self._end = self._written_end = SEGMENT_HEADER_SIZE
        self._allocated = len(data)
        write_tail_hint(self.io, self.path, first_seq)
        if self.chain is not None:
            # a new run: on the genesis at a log start (a clear), on the junction at a
            # fork point, else on the value after the head
            link = self.head_link
            anchor = self.chain.anchor(self._uid, first_seq, log_start, link)
            assert anchor is not None and link is not None
            self._run = RunState(self.chain.mac, anchor)
            self._head_link = anchor if first_seq == log_start else link

    def clear(self) -> None:
        """Empty the log. Seqs go on from the old head: a new segment whose header says the
        log starts at ``head + 1`` is made durable first, then the old segments go."""
        with self.lock:
            self.check_usable()
            self._wait_for_sync()
            try:
                self._write_pending()
                fd, self._fd = self._fd, None
                assert fd is not None
                self.io.close(fd)
                start = self.head + 1
                self._start_segment(start, start)
                self._remove_leftovers(start)
            except OSError as exc:
                raise self._fail(exc) from exc
            self.log_start = self._kept_start = start
            self.synced_head = self.head
            self._unsynced_records = 0
            self.last_turn = self.last_kind = None
            self.significant_head = self.head

    # --- lifecycle ---

    def close(self, sync: bool = True) -> None:
        """Sync what the durability mode promises at close, and release the file. With
        ``sync`` false, the file is released with nothing written to it (a shared writer
        that could not take the session's mutex, so may hold a segment since sealed)."""
        with self.lock:
            if self._closed:
                return
            self._wait_for_sync()
            try:
                if self._failed is None and self._fd is not None and sync:
                    if self.durability.syncs:
                        self._sync_locked()
                        if self._mark_unsynced:
                            # a second fdatasync, at close only: the mark the last barrier
                            # wrote reaches the disk too, without waiting for the next one
                            self._mark_unsynced = False
                            try:
                                self.io.fdatasync(self._fd)
                            except OSError as exc:
                                raise self._fail(exc) from exc
                    else:
                        self._write_pending()
            finally:
                self._closed = True
                self._wake.notify_all()
                if self._fd is not None:
                    fd, self._fd = self._fd, None
                    self.io.close(fd)
        if self._syncer is not None and self._syncer is not threading.current_thread():
            self._syncer.join()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def failed(self) -> bool:
        """Whether a write or sync failed: the writer accepts nothing more."""
        return self._failed is not None

    def check_usable(self) -> None:
        if self._failed is not None:
            raise WriteFailed(
                f"{self.path}: an earlier write failed ({self._failed}); reopen the session")
        if self._closed:
            raise SessionClosed(f"{self.path}: the session is closed")

    def _fail(self, exc: OSError) -> WriteFailed:
        """A failed write or fsync ends this writer: the OS may have dropped the pages, so
        nothing after it could be trusted. Reopening recovers the durable prefix."""
        self._failed = exc
        self._pending.clear()
        error = WriteFailed(f"{self.path}: write failed ({exc.strerror or exc}); the batch was "
                            "not acknowledged and nothing more is accepted: reopen the session")
        error.errno = exc.errno
        return error


# --- forking -----------------------------------------------------------------------------

# Errors of os.link that mean "this filesystem will not share the file": copy it instead.
# docs/FORMAT.md section 13 lists the same names (tests/test_log.py checks it).
NO_LINK_ERRNO_NAMES = ("EXDEV", "EPERM", "EMLINK", "ENOTSUP", "EOPNOTSUPP", "ENOSYS")
NO_LINK_ERRNOS = frozenset(getattr(errno, name) for name in NO_LINK_ERRNO_NAMES
                           if hasattr(errno, name))


def copy_log_prefix(io: FileIO, source: LogReader, dest: str, at_seq: int,
                    uid: int = NO_UID) -> LogPosition:
    """Fill ``dest`` (an empty folder) with a log whose history is ``source``'s up to and
    including ``at_seq``, and return the position right after ``at_seq`` in it.

    Sealed segments that lie wholly within the history are shared by hard link (copied
    where the filesystem refuses links): a sealed segment never changes again, and a
    link keeps its bytes alive when the source is cleared or deleted. The segment holding
    ``at_seq`` is copied up to it, the batch it ends inside cut to its first events,
    under a new header carrying ``uid`` (the new session's). All of it is fsynced; the
    caller renames ``dest``'s session into place.
    """
    if source.chain is not None:
        source.chain.mac  # noqa: B018  (a fork of a keyed chain needs its key)
    segments, log_start = source.live_segments()
    base = source.base_of(log_start)
    if base is not None:
        if at_seq < base.seq:
            raise SeqOutOfRange(
                f"{source.path}: the history up to seq {base.seq} was dropped by retention; "
                f"there is no history to fork at seq {at_seq}")
        # files of the dropped history a retention left (interrupted): never linked
        segments = [s for s in segments if s == log_start or s > base.seq]
    segments = _without_leftovers(source, segments, at_seq)
    position: LogPosition | None = None
    for index, first in enumerate(segments):
        if first > at_seq:
            break
        following = segments[index + 1] if index + 1 < len(segments) else None
        target = os.path.join(dest, layout.segment_name(first))
        if following is not None and following <= at_seq + 1:
            _link_or_copy(io, source, first, target)
            continue
        if source.chain is not None:  # the fork's records start a run of their own
            position = chain_writer.copy_prefix(io, source, first, dest, at_seq, log_start,
                                                following is None, uid)
        else:
            position = _copy_segment_prefix(io, source, first, target, at_seq, log_start,
                                            is_last=following is None, uid=uid)
        break
    if position is None:
        # The history ends where a segment ends (or is empty): start a fresh one after it.
        position = LogPosition(at_seq + 1, SEGMENT_HEADER_SIZE, 0)
        io.write_new(os.path.join(dest, layout.segment_name(at_seq + 1)),
                     encode_segment_header(at_seq + 1, log_start, uid))
    write_tail_hint(io, dest, position.segment)
    io.fsync_dir(dest)
    return position


def _without_leftovers(source: LogReader, segments: list[int], at_seq: int) -> list[int]:
    """``segments`` (up to the first after ``at_seq``) without the files of segments a
    compaction merged into a compacted file before them (leftovers of a compaction
    interrupted before it unlinked them, as readers pass over them): the compacted file
    holds their frames, so the history up to ``at_seq`` ends in it when ``at_seq`` is in
    one of them, and only a copy of its prefix ends where it was asked."""
    kept: list[int] = []
    merged: set[int] = set()
    for first in segments:
        if first in merged:
            continue
        kept.append(first)
        if first > at_seq:
            break
        try:
            with source.open_segment(first) as segment:
                merged.update(segment.members_after)
        except FileNotFoundError:
            pass  # unlinked meanwhile (a compaction finishing): the copy reports it
    return kept


def _link_or_copy(io: FileIO, source: LogReader, first_seq: int, target: str) -> None:
    try:
        io.link(source.segment_path(first_seq), target)
        return
    except OSError as exc:
        if exc.errno not in NO_LINK_ERRNOS:
            raise
    io.write_new(target, source.raw_segment(first_seq))


def _copy_segment_prefix(io: FileIO, source: LogReader, first_seq: int, target: str,
                         at_seq: int, log_start: int, is_last: bool, uid: int
                         ) -> LogPosition | None:
    """The segment ``first_seq`` copied up to ``at_seq`` into ``target``; the position
    after ``at_seq`` there, or None when the copy is sealed (a compacted prefix starting
    with a base frame): the caller starts a new segment after it."""
    path = source.segment_path(first_seq)
    buf, header = source.load_segment(first_seq)
    # Walk the frames up to at_seq without decoding them (all are before after_seq).
    scan = SegmentScan(buf, path, first_seq, is_last, after_seq=at_seq, until_seq=at_seq,
                       allow_base=first_seq == log_start and header.compacted
                       and source.base_of(log_start) is not None)
    for _ in scan:
        pass
    if scan.expect_seq <= at_seq:
        raise CorruptionError(f"the log ends at seq {scan.expect_seq - 1}, before seq {at_seq}",
                              path=path, offset=scan.end)
    data = [encode_segment_header(first_seq, log_start, uid),
            buf[SEGMENT_HEADER_SIZE : scan.end]]
    if scan.expect_seq != at_seq + 1:
        # at_seq falls inside the batch at scan.end: keep that batch's first events only
        frame = _parse_frame(buf, memoryview(buf), scan.end, len(buf))
        assert frame is not None  # the scan checked it
        ts, turn, entries = decode_payload(frame.payload, frame.event_count, path, frame.offset)
        kept = [tuple(entry) for entry in entries[: at_seq - frame.first_seq + 1]]
        data.append(encode_frame(frame.first_seq, ts, turn, kept, MAX_FRAME_PAYLOAD,
                                 check=False))
    content = b"".join(data)
    if scan.base is not None:
        # A base frame lives only in a compacted file (FORMAT.md 3.3): the prefix is one,
        # sealed, and the fork's writer appends in a segment after it.
        io.write_new(target, encode_compacted(first_seq, log_start, uid,
                                              [(first_seq, content[SEGMENT_HEADER_SIZE:])]))
        return None
    io.write_new(target, content)
    (last_size,) = _U32.unpack_from(content, len(content) - TRAILER_SIZE)
    (last_crc,) = _U32.unpack_from(content, len(content) - last_size)
    return LogPosition(first_seq, len(content), last_crc)
