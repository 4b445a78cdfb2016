"""Salvage: every record of a damaged session's log that still verifies, and exactly which
seqs are lost (docs/FORMAT.md, section 7.6).

A normal read stops at the first damaged record and raises: what it returns is always a
prefix of the history, never a history with a hole. Salvage is for after that: it reads
every segment file of ``log/`` the way a read does (the frame checks of
``log_format.py``), and where a read would stop at damage it resynchronises the way
LevelDB's log reader does: it searches forward for the next checksum-valid frame (by its
``"FSE\\n"`` trailer, at any byte offset, since a byte inserted or cut shifts every later
frame off the 8-byte grid) and goes on from there. It notes each damaged byte range (file,
offset, length, why) and, once every file is read, which seqs no valid frame holds.

It survives what a read refuses: a damaged segment header (the file's frames are still
searched for), a missing segment (a seq gap), a duplicated or stale frame (the first copy
of each seq is kept, the others reported), a checksum-valid payload that does not decode
(its seqs are lost). It never writes anything and takes no lock.

Two passes, one segment in memory at a time: :func:`salvage_log` reads every file once and
keeps only where the good frames are (runs of consecutive frames, a few per damaged
segment); :meth:`SalvageReport.events` reads those runs again, in seq order, decoding as it
goes. So the report knows every saved and lost seq before the first event is yielded,
whatever the size of the log.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from . import layout
from .chain import ChainKey
from .checksum import crc32c
from .errors import CorruptionError, Finding, FormatVersionError, FsStoreError, SessionNotFound
from .fsio import FileIO
from .identity import Identity
from .log import LogReader
from .log_format import (
    _FRAME_HEADER,
    BASE_FRAMES,
    EVENT_FRAMES,
    MAX_SEGMENT_FILE,
    Event,
    _parse_frame,
    _valid_frame_after,
    decode_payload,
)
from .segment_file import decode_tables
from .segment_header import (
    COMPACTED_MAJOR,
    SEGMENT_HEADER_SIZE,
    SEGMENT_MAGIC,
    SEGMENT_MAJOR,
    SegmentHeader,
    decode_segment_header,
)

# The kinds of damaged range a report names (DamagedRange.kind).
DAMAGED = "damaged"  # bytes that are no valid frame, in the middle of the log
TORN_TAIL = "torn tail"  # what a writer that died mid-append leaves: a note, no loss
UNDECODABLE = "undecodable"  # a checksum-valid frame whose payload does not decode
UNKNOWN_TYPE = "unknown record type"  # a checksum-valid frame of a newer fsstore
DUPLICATE = "duplicate"  # a checksum-valid frame of seqs already saved: skipped
OUT_OF_ORDER = "out of order"  # a checksum-valid frame before its place: kept
MISSING = "missing records"  # the seqs jump with no damaged bytes between (cut out whole)
HEADER = "segment header"  # a damaged segment header: its frames are searched for
FOREIGN = "another session's segment"  # refused by its uid: nothing read from it
NEWER_KIND = "newer segment kind"  # a segment this fsstore cannot read yet
UNREADABLE = "unreadable"  # cannot be opened or read (a symlink, a folder, an I/O error)
STALE = "stale segment"  # older than the log start (an interrupted clear): a note

#: Kinds that are notes: what readers handle, not damage.
NOTE_KINDS = frozenset({TORN_TAIL, STALE})


class SeqRange(NamedTuple):
    """Seqs ``first`` to ``last``, both included."""

    first: int
    last: int

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}-{self.last}"


class LostRange(NamedTuple):
    """Seqs ``first`` to ``last`` that no valid frame holds, with where they were lost
    (``causes``: "PATH at byte N" of each damaged range that could have held them; none
    when no damaged bytes are where they belong, as for a deleted segment).
    ``last`` is None for records lost at the end of the log, whose count is unknown:
    synced records gone from the end of the newest segment."""

    first: int
    last: int | None
    causes: tuple[str, ...]

    def __str__(self) -> str:
        if self.last is None:
            return f"{self.first} and after (how many is unknown)"
        return str(SeqRange(self.first, self.last))

    def explain(self) -> str:
        """Where they were lost, for people."""
        if self.causes:
            return "at " + "; ".join(self.causes)
        if self.last is None:
            return "at the end of the newest segment"
        return ("no damaged bytes where they belong: a segment file holding them is "
                f"missing ({layout.segment_name(self.first)}?), or records were cut out "
                "whole")


@dataclass(frozen=True)
class DamagedRange:
    """Bytes of a segment file that salvage could not read as records of this log.

    ``length`` is None for a whole file. ``lost`` is the seqs they account for (the lost
    seqs between the good frame before them and the one after), None when they account
    for none (a torn tail, a duplicate, a damaged header whose frames were all read).
    ``image`` is true when the offsets are in the decompressed image of a compacted
    segment rather than in the file."""

    path: str
    offset: int
    length: int | None
    kind: str
    reason: str
    lost: SeqRange | None = None
    image: bool = False

    @property
    def problem(self) -> bool:
        return self.kind not in NOTE_KINDS

    def where(self) -> str:
        if self.length is None:
            return self.path
        space = " of the decompressed image" if self.image else ""
        return f"{self.path} at byte {self.offset}{space} ({self.length} bytes)"

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "offset": self.offset, "length": self.length,
                "kind": self.kind, "reason": self.reason, "problem": self.problem,
                "lost": None if self.lost is None else list(self.lost),
                "decompressed_offsets": self.image}


@dataclass(frozen=True)
class FileFinding:
    """A damaged file of the session other than a segment (a snapshot, a checkpoint, the
    message index, the manifest), as ``verify`` found it, and what can be done."""

    path: str
    offset: int | None
    message: str
    remedy: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "offset": self.offset, "message": self.message,
                "remedy": self.remedy}


class _Run(NamedTuple):
    """Consecutive good frames of one segment image: bytes ``start`` to ``end``, seqs
    ``first_seq`` to ``end_seq - 1``."""

    segment: int  # the first seq in the file's name
    start: int
    end: int
    first_seq: int
    end_seq: int


@dataclass
class SalvageReport:
    """What :func:`salvage_log` found: the saved and lost seqs, and each damaged range.

    ``saved`` and ``lost`` cover the log exactly, from ``log_start`` to ``head``, without
    overlapping (with, when the end of the log was damaged, a last lost range without an
    end). :meth:`events` reads the saved events in seq order, one segment in memory at a
    time; it may be called more than once.
    """

    log_path: str
    log_start: int
    head: int  # the last seq the log is known to have held; log_start - 1 when none
    saved: list[SeqRange]
    lost: list[LostRange]
    damaged: list[DamagedRange]
    files: list[FileFinding] = field(default_factory=list)
    session: str | None = None
    _runs: list[_Run] = field(default_factory=list, repr=False)
    _source: _Source | None = field(default=None, repr=False)

    @property
    def source(self) -> _Source | None:
        """Where the saved records are read from (None when nothing was read)."""
        return self._source

    @property
    def runs(self) -> list[_Run]:
        """The runs of saved frames, in seq order."""
        return self._runs

    def keep_runs(self, runs: list[_Run]) -> None:
        """Narrow the saved frames to ``runs``: what a chained session's chain vouches
        for (``repair_chain.vouch``)."""
        self._runs = sorted(runs, key=lambda r: r.first_seq)

    @property
    def saved_count(self) -> int:
        return sum(r.last - r.first + 1 for r in self.saved)

    @property
    def lost_count(self) -> int:
        """Lost seqs counted (a lost range without an end counts none)."""
        return sum(r.last - r.first + 1 for r in self.lost if r.last is not None)

    @property
    def open_end(self) -> int | None:
        """The first seq of records lost at the end of the log (how many is unknown), or
        None: a rewrite of the log cannot know how many seqs to leave unused there."""
        return next((r.first for r in self.lost if r.last is None), None)

    @property
    def problems(self) -> list[DamagedRange]:
        return [d for d in self.damaged if d.problem]

    @property
    def clean(self) -> bool:
        """True when nothing was lost and no file is damaged (notes aside)."""
        return not self.lost and not self.problems and not self.files

    def damaged_files(self) -> list[str]:
        """Every file with a problem (segments and others), once each, in report order."""
        paths = [d.path for d in self.problems] + [f.path for f in self.files]
        return list(dict.fromkeys(paths))

    def events(self, after_seq: int = 0) -> Iterator[Event]:
        """The saved events with seq > ``after_seq``, in seq order, decoded as ``events()``
        decodes them. Raises CorruptionError when a segment changed since the report was
        made (a writer appended to a damaged last segment is fine; a file replaced is
        not): salvage again."""
        if self._source is None:
            return
        source = self._source
        loaded: tuple[int, bytes] | None = None
        for run in self._runs:
            if run.end_seq <= after_seq + 1:
                continue
            if loaded is None or loaded[0] != run.segment:
                loaded = None  # the previous image goes before the next is read
                loaded = (run.segment, source.image(run.segment))
            yield from _run_events(loaded[1], source.path(run.segment), run, after_seq)

    def to_dict(self, *, events: bool = False) -> dict[str, Any]:
        """The report as plain JSON values; ``events=True`` adds every saved event (all of
        them in memory: for small logs and tests)."""
        damaged: dict[str, list[dict[str, Any]]] = {}
        for item in self.damaged:
            damaged.setdefault(item.path, []).append(item.to_dict())
        out: dict[str, Any] = {
            "session": self.session, "log": self.log_path, "log_start": self.log_start,
            "head": self.head, "saved": [list(r) for r in self.saved],
            "lost": [{"first": r.first, "last": r.last, "causes": list(r.causes),
                      "explanation": r.explain()} for r in self.lost],
            "saved_count": self.saved_count, "lost_count": self.lost_count,
            "open_end": self.open_end, "damaged": damaged,
            "files": [f.to_dict() for f in self.files], "clean": self.clean,
        }
        if events:
            out["events"] = [e._asdict() for e in self.events()]
        return out

    def summary_lines(self) -> list[str]:
        """The report for people: saved and lost seqs, then each damaged range with its
        file and offset, then each other damaged file."""
        saved = ", ".join(map(str, self.saved)) or "none"
        lines = [f"salvage of {self.log_path}: {self.saved_count} record(s) saved (seqs "
                 f"{saved})"]
        if self.lost:
            lost = "; ".join(f"{r} ({r.explain()})" for r in self.lost)
            lines.append(f"lost: {self.lost_count} record(s): seq(s) {lost}")
        else:
            lines.append("lost: none")
        for item in self.damaged:
            level = "problem" if item.problem else "note"
            lost_text = f"; lost seq(s) {item.lost}" if item.lost is not None else ""
            lines.append(f"{level}: {item.where()}: {item.kind}: {item.reason}{lost_text}")
        for finding in self.files:
            where = finding.path if finding.offset is None else (
                f"{finding.path} at byte {finding.offset}")
            lines.append(f"problem: {where}: {finding.message} ({finding.remedy})")
        return lines


# --- reading the segment files -------------------------------------------------------------


class _Source:
    """Reads the segment files of one log, as salvage needs them: whole, bounded, without
    trusting their headers; a compacted segment through ``LogReader.load_segment``."""

    def __init__(self, io: FileIO, log: LogReader) -> None:
        self.io = io
        self.log = log
        self.compacted: set[int] = set()

    def path(self, first_seq: int) -> str:
        return self.log.segment_path(first_seq)

    def raw(self, first_seq: int) -> bytes:
        path = self.path(first_seq)
        fd = self.io.open(path, os.O_RDONLY)
        try:
            size = self.io.size(fd)
            if size > MAX_SEGMENT_FILE:
                raise CorruptionError(f"segment file of {size} bytes is larger than any "
                                      "writer makes; it is not read", path=path)
            return self.io.pread(fd, size, 0)
        finally:
            self.io.close(fd)

    def image(self, first_seq: int) -> bytes:
        """The bytes whose offsets the report's runs name: the file, or the decompressed
        image of a compacted segment (a damaged chunk's bytes as zeros)."""
        if first_seq in self.compacted:
            return _compacted_image(self.raw(first_seq), self.path(first_seq))[0]
        return self.raw(first_seq)


class _BadChunk(NamedTuple):
    packed_at: int
    packed_size: int
    plain_start: int
    reason: str


def _compacted_image(raw: bytes, path: str) -> tuple[bytes, SegmentHeader, list[_BadChunk]]:
    """A compacted segment's image, chunk by chunk: a chunk that fails its checksum or
    does not decompress to its size is left as zeros (the walk then resynchronises at
    the next chunk's first frame). Raises CorruptionError when the header or the tables
    are damaged: without them no chunk can be placed."""
    header = decode_segment_header(raw, path)
    tables = decode_tables(raw, header, path, len(raw))
    parts, bad = [header.raw], []
    import zstandard  # here: a log without compacted segments never needs it

    decompressor = zstandard.ZstdDecompressor()
    for chunk in tables.chunks:
        packed = raw[chunk.packed_at:chunk.packed_at + chunk.packed_size]
        reason = ""
        if crc32c(packed) != chunk.packed_crc:
            reason = "compacted chunk does not match its checksum"
        else:
            try:
                plain = decompressor.decompress(packed, max_output_size=chunk.plain_size)
            except zstandard.ZstdError as exc:
                reason = f"compacted chunk does not decompress: {exc}"
            else:
                if len(plain) != chunk.plain_size:
                    reason = "compacted chunk decompresses to another size than its table's"
        if reason:
            bad.append(_BadChunk(chunk.packed_at, chunk.packed_size, chunk.plain_start,
                                 reason))
            plain = bytes(chunk.plain_size)
        parts.append(plain)
    return b"".join(parts), header, bad


def _header_major(raw: bytes) -> int | None:
    """The major version a segment header claims (bytes 8-9), None without the magic."""
    if len(raw) < 10 or raw[:8] != SEGMENT_MAGIC:
        return None
    return int.from_bytes(raw[8:10], "little")


def _data_end(buf: bytes) -> int:
    """Offset past the last non-zero byte (at least the header's end), without copying
    the whole buffer."""
    view, end = memoryview(buf), len(buf)
    while end > SEGMENT_HEADER_SIZE:
        start = max(SEGMENT_HEADER_SIZE, end - (64 << 10))
        stripped = bytes(view[start:end]).rstrip(b"\0")
        if stripped:
            return start + len(stripped)
        end = start
    return SEGMENT_HEADER_SIZE


class _Seqs:
    """A set of seqs as sorted, disjoint, half-open ranges."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def overlaps(self, first: int, end: int) -> bool:
        index = bisect.bisect_right(self.starts, first) - 1
        if index >= 0 and self.ends[index] > first:
            return True
        return index + 1 < len(self.starts) and self.starts[index + 1] < end

    def add(self, first: int, end: int) -> None:
        if self.ends and self.ends[-1] == first:  # the common case: the next seqs
            self.ends[-1] = end
            return
        index = bisect.bisect_left(self.starts, first)
        if index > 0 and self.ends[index - 1] >= first:  # touches the range before
            index -= 1
            first = self.starts[index]
        stop = index
        while stop < len(self.starts) and self.starts[stop] <= end:
            end = max(end, self.ends[stop])
            stop += 1
        self.starts[index:stop] = [first]
        self.ends[index:stop] = [end]

    def gaps(self, first: int, end: int) -> list[tuple[int, int]]:
        found, at = [], first
        for start, stop in zip(self.starts, self.ends, strict=True):
            if start > at:
                found.append((at, min(start, end)))
            at = max(at, stop)
            if at >= end:
                break
        if at < end:
            found.append((at, end))
        return [(a, b) for a, b in found if a < b]

    def ranges(self) -> list[SeqRange]:
        return [SeqRange(a, b - 1) for a, b in zip(self.starts, self.ends, strict=True)]


class _Damage(NamedTuple):
    """A damaged range while the walk goes on: the lost seqs it may account for are those
    from ``from_seq`` to the next good frame or segment (``to_seq``, set later)."""

    item: DamagedRange
    from_seq: int


class _Walk:
    """The first pass: every segment file, frame by frame, resynchronising after damage."""

    def __init__(self) -> None:
        self.saved = _Seqs()
        self.runs: list[list[int]] = []  # _Run fields, the last one growing
        self.damage: list[tuple[_Damage, int | None]] = []  # closed: (damage, to_seq)
        self.open: list[_Damage] = []  # awaiting the next good frame
        self.expect = 0
        self.open_end = False

    # -- bookkeeping --

    def note(self, path: str, offset: int, length: int | None, kind: str, reason: str, *,
             image: bool = False, closed: bool = False) -> None:
        damage = _Damage(DamagedRange(path, offset, length, kind, reason, image=image),
                         self.expect)
        if closed:
            self.damage.append((damage, None))
        else:
            self.open.append(damage)

    def close(self, to_seq: int) -> None:
        """The next good frame (or segment) starts at ``to_seq``: the damage before it
        accounts for no seq from there on."""
        self.damage.extend((d, to_seq) for d in self.open)
        self.open = []

    def keep(self, segment: int, offset: int, size: int, first: int, count: int) -> None:
        end_seq = first + count
        last = self.runs[-1] if self.runs else None
        if last is not None and last[0] == segment and last[2] == offset and last[4] == first:
            last[2], last[4] = offset + size, end_seq
        else:
            self.runs.append([segment, offset, offset + size, first, end_seq])
        self.saved.add(first, end_seq)

    # -- one segment image --

    def walk(self, buf: bytes, path: str, segment: int, *, is_last: bool,
             synced_end: int | None, image: bool) -> None:
        """Walk one segment image. ``synced_end`` is its header's synced mark, None when
        the header is damaged (then what ends the newest segment cannot be told a torn
        append: it is reported as lost, since it may have been synced)."""
        view, limit = memoryview(buf), len(buf)
        data_end = _data_end(buf)
        off = SEGMENT_HEADER_SIZE
        while off < data_end:
            frame = _parse_frame(buf, view, off, limit)
            if frame is None:
                later = _valid_frame_after(buf, view, off, limit)
                stop = data_end if later is None else later.offset
                self._bad_bytes(path, off, stop, is_last=is_last and later is None,
                                synced_end=synced_end, image=image)
                if later is None:
                    return
                off = stop
                continue
            size = frame.size
            first, count = frame.first_seq, frame.event_count
            seqs = SeqRange(first, first + count - 1)
            frame_type = _FRAME_HEADER.unpack_from(buf, off)[4]
            # Every saved seq is before ``expect``: only an earlier frame can repeat one.
            if first < self.expect and self.saved.overlaps(first, first + count):
                self.note(path, off, size, DUPLICATE, f"a valid record of seqs {seqs}, which "
                          "an earlier record holds (duplicated or stale): the first copy "
                          "is kept", image=image, closed=True)
                off += size
                continue
            bad = None
            if (frame_type in BASE_FRAMES and image and off == SEGMENT_HEADER_SIZE
                    and first == segment):
                pass  # the base of a log retention shortened (FORMAT.md 3.3): no events
            elif frame_type not in EVENT_FRAMES:  # (a chain is taken by its checksums)
                bad = (UNKNOWN_TYPE, f"record type {frame_type} is unknown to this fsstore "
                       "(written by a newer one?); upgrade fsstore to read it")
            else:
                try:
                    decode_payload(frame.payload, count, path, off)
                except CorruptionError as exc:
                    bad = (UNDECODABLE, "a checksum-valid record that no writer writes: "
                           f"{exc.reason}")
            if first >= self.expect:
                if first > self.expect and not self.open:
                    self.note(path, off, 0, MISSING, f"record has seq {first}, expected "
                              f"{self.expect}: the records between are not here", image=image)
                self.close(first)
            if bad is not None:
                # The checksum holds, so its seqs are known: they are lost exactly here.
                item = DamagedRange(path, off, size, *bad, image=image)
                self.damage.append((_Damage(item, first), first + count))
            else:
                if first < self.expect:
                    self.note(path, off, size, OUT_OF_ORDER, f"a valid record of seqs {seqs} "
                              "after records of later seqs (reordered): kept", image=image,
                              closed=True)
                self.keep(segment, off, size, first, count)
            self.expect = max(self.expect, first + count)
            off += size
        if is_last and synced_end is not None and off < synced_end:
            self._lost_at_end(path, off, f"no record from here, but a barrier made the "
                              f"records up to byte {synced_end} durable (the segment's "
                              "synced mark): synced records are missing", image)
        elif not is_last and off < limit:
            self.note(path, off, limit - off, MISSING, "zeros where records should be (a "
                      "sealed segment ends in its last record)", image=image)

    def _bad_bytes(self, path: str, off: int, stop: int, *, is_last: bool,
                   synced_end: int | None, image: bool) -> None:
        if not is_last:
            self.note(path, off, stop - off, DAMAGED, f"{stop - off} bytes that are no valid "
                      "record", image=image)
        elif synced_end is None:
            self._lost_at_end(path, off, f"{stop - off} bytes that are no valid record at "
                              "the end of a segment whose header is damaged, so its synced "
                              "mark is unknown: a torn append, or synced records damaged",
                              image, length=stop - off)
        elif off >= synced_end:
            self.note(path, off, stop - off, TORN_TAIL, "bytes that are no whole record "
                      "after the last one (a writer stopped mid-append): never acknowledged "
                      "as durable", image=image, closed=True)
        else:
            self._lost_at_end(path, off, f"damaged records with no valid record after them, "
                              f"before the segment's synced mark (byte {synced_end}): "
                              f"{stop - off} bytes cannot be read", image, length=stop - off)

    def _lost_at_end(self, path: str, off: int, reason: str, image: bool,
                     length: int = 0) -> None:
        self.note(path, off, length, DAMAGED, reason, image=image)
        self.open_end = True

    def whole_file(self, path: str, kind: str, reason: str, *, is_last: bool) -> None:
        self.note(path, 0, None, kind, reason)
        if is_last:
            self.open_end = True


def salvage_log(io: FileIO, log_path: str, identity: Identity | None = None,
                *, session: str | None = None,
                on_segment: Callable[[int], object] | None = None) -> SalvageReport:
    """Read every segment file of the log folder ``log_path`` and report what still
    verifies (see the module docstring). ``identity`` is the session's (its manifest's
    uid and ancestors): a segment another session wrote is reported, not read.
    ``on_segment`` is called with each live segment's name (its first seq) once it is
    read (a progress bar's step). Never writes; raises nothing for damage (only for a
    log folder it cannot list)."""
    log = LogReader(io, log_path, identity)
    source = _Source(io, log)
    walk = _Walk()
    try:
        firsts = layout.segment_seqs(io.listdir(log_path))
        why = "holds no segment"
    except (FsStoreError, OSError) as exc:
        firsts, why = [], f"cannot be listed: {_why(exc)}"
    if not firsts:
        walk.whole_file(log_path, UNREADABLE, f"the log folder {why}: nothing can be "
                        "salvaged", is_last=False)
        return SalvageReport(log_path, 1, 0, [], [], [d.item for d in walk.open],
                             session=session)
    log_start = _log_start(log, firsts)
    live = [s for s in firsts if s >= log_start]
    for stale in (s for s in firsts if s < log_start):
        walk.note(log.segment_path(stale), 0, None, STALE, f"older than the log start "
                  f"{log_start} (left by an interrupted clear): not part of the log",
                  closed=True)
    walk.expect = log_start
    for position, first in enumerate(live):
        is_last = position == len(live) - 1
        if first > walk.expect:
            walk.close(first)
            walk.expect = first  # the seqs between are lost (counted at the end)
        elif first < walk.expect:
            walk.close(walk.expect)
        else:
            walk.close(first)
        _read_segment(walk, source, first, is_last=is_last)
        if on_segment is not None:
            on_segment(first)
    end = max(walk.expect, live[-1])
    walk.close(end)
    return _report(walk, source, log_path, log_start, end, session)


def _log_start(log: LogReader, firsts: list[int]) -> int:
    """Where the log starts, from the newest header that reads (a clear moves it and
    writes it in the new segment's header); the oldest segment's name if none reads."""
    for first in reversed(firsts):
        try:
            log_start = log.read_header(first).log_start
        except (FsStoreError, OSError):
            continue
        if log_start <= firsts[-1]:
            return log_start
    return firsts[0]


def _read_segment(walk: _Walk, source: _Source, first: int, *, is_last: bool) -> None:
    path = source.path(first)
    try:
        raw = source.raw(first)
    except (FsStoreError, OSError) as exc:
        walk.whole_file(path, UNREADABLE, f"cannot be read: {_why(exc)}", is_last=is_last)
        return
    major = _header_major(raw)
    if major == COMPACTED_MAJOR:
        try:
            image, header, bad = _compacted_image(raw, path)
        except CorruptionError as exc:
            # its tables place the chunks: without them nothing in it can be read
            walk.whole_file(path, DAMAGED, f"compacted segment cannot be read: "
                            f"{_why(exc)}", is_last=is_last)
            return
        source.compacted.add(first)
        for chunk in bad:
            walk.note(path, chunk.packed_at, chunk.packed_size, DAMAGED,
                      f"{chunk.reason} (its records from byte {chunk.plain_start} of the "
                      "decompressed image are read as lost)", closed=True)
        walk.walk(image, path, first, is_last=False, synced_end=header.synced_end,
                  image=True)
        return
    if major is not None and major > SEGMENT_MAJOR:
        try:
            decode_segment_header(raw, path)
        except FormatVersionError as exc:  # its checksums hold: a kind this fsstore lacks
            walk.whole_file(path, NEWER_KIND, f"cannot read: a newer segment kind "
                            f"({_why(exc)})", is_last=is_last)
            return
        except CorruptionError:
            pass  # a damaged header (a flipped version byte?): read as any damaged one
    synced_end: int | None = None
    try:
        header = decode_segment_header(raw, path)
        if header.first_seq != first:
            raise CorruptionError(f"segment header says first seq {header.first_seq}, its "
                                  "name says otherwise", path=path, offset=0)
    except (CorruptionError, FormatVersionError) as exc:
        # Its frames are checked one by one, and must fit the seqs the log expects.
        walk.note(path, 0, min(len(raw), SEGMENT_HEADER_SIZE), HEADER,
                  f"{_why(exc)}; the file's records are searched for one by one",
                  closed=True)
    else:
        try:
            source.log.checked_header(raw, first, path)  # the uid: this session's?
        except CorruptionError as exc:
            walk.whole_file(path, FOREIGN, f"{exc.reason}; nothing is read from it",
                            is_last=is_last)
            return
        synced_end = source.log.binding_mark(header, len(raw), path).synced_end
    walk.walk(raw, path, first, is_last=is_last, synced_end=synced_end, image=False)


def _why(exc: BaseException) -> str:
    if isinstance(exc, CorruptionError):
        return exc.reason
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def _report(walk: _Walk, source: _Source, log_path: str, log_start: int, end: int,
            session: str | None) -> SalvageReport:
    gaps = walk.saved.gaps(log_start, end)
    lost_seqs = _Seqs()
    for a, b in gaps:
        lost_seqs.add(a, b)
    damaged: list[DamagedRange] = []
    windows: list[tuple[int, int, str]] = []
    for damage, to_seq in walk.damage:
        item = damage.item
        lost: SeqRange | None = None
        if to_seq is not None and to_seq > damage.from_seq:
            inside = _Seqs()
            for a, b in gaps:
                if a < to_seq and b > damage.from_seq:
                    inside.add(max(a, damage.from_seq), min(b, to_seq))
            if inside.starts:
                lost = SeqRange(inside.starts[0], inside.ends[-1] - 1)
                windows.append((damage.from_seq, to_seq, item.where()))
        if lost is None and item.kind == MISSING:
            continue  # zeros or a jump that turned out to lose nothing
        damaged.append(DamagedRange(item.path, item.offset, item.length, item.kind,
                                    item.reason, lost, item.image))
    lost_ranges = []
    for a, b in gaps:
        causes = tuple(dict.fromkeys(where for lo, hi, where in windows if lo < b and hi > a))
        lost_ranges.append(LostRange(a, b - 1, causes))
    if walk.open_end:
        causes = tuple(item.where() for (d, to_seq) in walk.damage
                       if to_seq == end and d.from_seq >= end for item in (d.item,))
        lost_ranges.append(LostRange(end, None, causes))
    runs = sorted((_Run(*fields) for fields in walk.runs), key=lambda r: r.first_seq)
    return SalvageReport(log_path, log_start, end - 1, walk.saved.ranges(), lost_ranges,
                         damaged, session=session, _runs=runs, _source=source)


def _run_events(buf: bytes, path: str, run: _Run, after_seq: int) -> Iterator[Event]:
    view, off, expect = memoryview(buf), run.start, run.first_seq
    while off < run.end:
        frame = _parse_frame(buf, view, off, len(buf))
        if frame is None or frame.first_seq != expect:
            raise CorruptionError("the segment changed since it was salvaged (a writer, a "
                                  "compaction or a copy meanwhile?); salvage it again",
                                  path=path, offset=off)
        size = frame.size
        expect = frame.first_seq + frame.event_count
        if expect > after_seq + 1 and frame.frame_type not in BASE_FRAMES:  # a base: no events
            ts, turn, entries = decode_payload(frame.payload, frame.event_count, path, off)
            for index, (kind, data) in enumerate(entries):
                seq = frame.first_seq + index
                if seq > after_seq:
                    yield Event(seq, ts, turn, kind, data)
        off += size


# --- a session -------------------------------------------------------------------------------


#: What can be done about each kind of file verify reports, by the folder or name it is in.
_REMEDIES = (
    (layout.STATE_DIR, "a snapshot is a cache of the log: state loads skip a damaged one, "
     "and it can be rebuilt from the log"),
    (layout.CHECKPOINTS_DIR, "a checkpoint can be rebuilt from the log while the log holds "
     "its history up to its seq"),
    (layout.MESSAGE_INDEX, "the message index is a cache of the log, rebuilt from it"),
    (layout.SESSION_MANIFEST, "restore session.json from a backup"),
)


def salvage_session(io: FileIO, session_path: str, session_id: str, *,
                    check_files: bool = True,
                    on_segment: Callable[[int], object] | None = None,
                    chain_key: ChainKey | None = None) -> SalvageReport:
    """The salvage report of a session folder: its log as :func:`salvage_log` reads it,
    with the session's identity when its manifest reads; with ``check_files``, also every
    other damaged file ``SessionReader.verify`` finds (snapshots, checkpoints, the
    message index, blobs, ...), read with ``chain_key`` (a keyed chain's key, when
    not the environment's). ``on_segment`` as for :func:`salvage_log`. Never
    writes. Raises SessionNotFound when there is no session folder."""
    from .session_reader import SessionReader  # it imports much of the package

    if not io.check_folder(session_path):
        raise SessionNotFound(f"no session {session_id!r} at {session_path}")
    reader: SessionReader | None = None
    files: list[FileFinding] = []
    try:
        reader = SessionReader(io, session_path, session_id, chain_key=chain_key)
    except SessionNotFound:
        files.append(FileFinding(layout.session_manifest_path(session_path), None,
                                 "missing", _remedy(layout.SESSION_MANIFEST)))
    except (FsStoreError, OSError) as exc:
        path = exc.path if isinstance(exc, CorruptionError) else session_path
        offset = exc.offset if isinstance(exc, CorruptionError) else None
        files.append(FileFinding(path, offset, f"cannot be read: {_why(exc)}; the log is "
                                 "read without the session's identity check",
                                 _remedy(os.path.basename(path))))
    identity = None if reader is None else reader.identity
    log_path = layout.log_dir(session_path)
    report = salvage_log(io, log_path, identity, session=session_id, on_segment=on_segment)
    if check_files and reader is not None:
        files.extend(_other_damage(reader.verify(), log_path))
    report.files = files
    return report


def _other_damage(findings: Iterable[Finding], log_path: str) -> list[FileFinding]:
    """The problems of files other than the log's segments (those are salvage's own)."""
    found = []
    log_prefix = log_path + os.sep
    for finding in findings:
        # A log problem a later step saw again may name another file (the manifest, for
        # a read of the tail): it names the log in its message.
        if (finding.level != "problem" or finding.path == log_path
                or finding.path.startswith(log_prefix) or log_path in finding.message):
            continue
        found.append(FileFinding(finding.path, finding.offset, finding.message,
                                 _remedy(finding.path)))
    return list(dict.fromkeys(found))


def _remedy(path: str) -> str:
    parts = path.split(os.sep)
    for name, remedy in _REMEDIES:
        if name in parts:
            return remedy
    return "see `fsstore verify`"
