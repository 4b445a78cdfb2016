"""Retention: old history dropped from a session's log while what it folds to stays exact
(docs/FORMAT.md, section 5.6).

A policy says what to keep: the last N turns, what is newer than a time, or only what
the state needs (nothing of the history). The history before the first file kept is
replaced by one *base frame* (FORMAT.md 3.3): the state image at the last dropped seq
``B`` (state, commit ids, queue, inputs, usage), written as the only frame of a
compacted file named after the log start. So the log start does not move, seqs stay
gapless and are never reused, and every fold from the log start (the state, verify)
starts from that image instead of the empty state.

A chained session's base is chained (type 5, ``chain_base.py``): anchored on the chain
value after ``B``, read from the last file dropped with its run checked, so the history
kept, which already anchors on that value, is not rewritten and ``head_hash`` stays.

``B`` falls on a file boundary: ``B + 1`` is the first seq of the oldest segment file
kept, so retention keeps at most one file more than the policy asks.

Retention runs in the writer, under its lock (it reads the state at ``B`` and changes
what every later fold starts from), and under the ``log/`` folder's lock, which
compactions and forks take too. Its steps, each durable before the next:

1. roll the active segment over (policy "state"), sync the log, choose ``B``;
2. fold the state at ``B`` (the ordinary state load);
3. write the base file in the session folder as a temp file, fsync it, read it back;
4. rename it over ``log/<log start>`` and fsync ``log/``: the commit point. From here
   readers see the base; the files of seqs up to ``B`` still there are *leftovers*,
   passed over by every reader (they follow a compacted file that covers them);
5. unlink those files in seq order, fsync ``log/``;
6. unlink the snapshots at or before ``B`` (the base supersedes them).

Before step 3, the message index is replaced by an empty one (its rows point into the
files to drop), which the writer fills again from the log.

A crash before step 4 leaves the log as it was (and a temp file vacuum removes); after
it, leftovers that the next retention or compaction removes, or snapshots that loads
skip. Either way the session opens, verifies, and reads the same state.
"""

from __future__ import annotations

import dataclasses
import math
import os
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import msgspec

from .chain_base import encode_chained_base
from .chain_check import UNCHECKED
from .compaction import TEMP_PREFIX, add_part, log_folder_lock, report_dict
from .errors import CorruptionError, InvalidSetting
from .fsio import FileIO
from .log import LogReader, SegmentEnd
from .log_format import SegmentScan, encode_base_frame
from .log_writer import LogWriter
from .manifest import iso_to_epoch
from .message_index import INDEX_NAME, encode_header
from .segment_file import encode_compacted, open_compacted
from .segment_header import SEGMENT_HEADER_SIZE, decode_segment_header
from .snapshot import SnapshotDir
from .state import StateImage, load

if TYPE_CHECKING:
    from .vacuum import VacuumReport

KEEP_CHOICES = ("all", "state")


@dataclass(frozen=True)
class RetentionPolicy:
    """What retention keeps of a session's history. Each rule given keeps what it names,
    and the history kept is what any of them keeps:

    - ``keep_turns=N``: the last N turns (those numbered ``current - N + 1`` and later,
      ``current`` being the turn of the last record);
    - ``keep_since=T``: the records written at ``T`` (seconds since the epoch) or later;
    - ``keep="state"``: nothing of the history, only what the state needs (the state,
      queue, inputs and usage, which the base holds). ``keep="all"`` (the default)
      drops nothing by itself.
    """

    keep_turns: int | None = None
    keep_since: float | None = None
    keep: str = "all"

    def __post_init__(self) -> None:
        turns = self.keep_turns
        if turns is not None and (isinstance(turns, bool) or not isinstance(turns, int)
                                  or turns < 0):
            raise InvalidSetting(f"keep_turns must be an int >= 0 or None, not {turns!r}")
        since = self.keep_since
        if since is not None and (isinstance(since, bool) or not isinstance(since, (int, float))
                                  or not math.isfinite(since)):
            raise InvalidSetting(f"keep_since must be a time in seconds since the epoch or "
                                 f"None, not {since!r}")
        if self.keep not in KEEP_CHOICES:
            raise InvalidSetting(f"keep must be one of {KEEP_CHOICES}, not {self.keep!r}")

    @property
    def drops(self) -> bool:
        """Whether the policy may drop anything."""
        return self.keep_turns is not None or self.keep_since is not None or (
            self.keep == "state")

    def to_manifest(self) -> dict[str, Any]:
        """The policy as the session manifest keeps it (its ``retention`` key)."""
        out: dict[str, Any] = {"keep": self.keep}
        if self.keep_turns is not None:
            out["keep_turns"] = self.keep_turns
        if self.keep_since is not None:
            out["keep_since"] = datetime.fromtimestamp(
                float(self.keep_since), timezone.utc).isoformat(timespec="microseconds")
        return out

    @classmethod
    def from_manifest(cls, value: Any, path: str) -> RetentionPolicy:
        """The policy a manifest's ``retention`` holds (InvalidSetting when malformed)."""
        if not isinstance(value, dict):
            raise InvalidSetting(f"{path}: retention must be a map, not {value!r}")
        since = value.get("keep_since")
        return cls(keep_turns=value.get("keep_turns"),
                   keep_since=None if since is None else iso_to_epoch(since, path,
                                                                      "retention.keep_since"),
                   keep=value.get("keep", "all"))


@dataclass
class RetainReport:
    """What a retention did (or, with ``dry_run``, would do) to one session, or, summed,
    to a store (``parts`` then holds each session's)."""

    sessions: int = 0
    seqs_dropped: int = 0
    history_start_before: int = 0
    history_start: int = 0  # the first retained seq afterwards
    segments_removed: int = 0
    bytes_freed: int = 0
    snapshots_removed: int = 0
    seconds: float = 0.0
    dry_run: bool = False
    parts: dict[str, RetainReport] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def add(self, session_id: str, part: RetainReport) -> None:
        add_part(self, session_id, part,
                 ("seqs_dropped", "segments_removed", "bytes_freed", "snapshots_removed"))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return report_dict(self, (
            "sessions", "seqs_dropped", "history_start_before", "history_start",
            "segments_removed", "bytes_freed", "snapshots_removed", "seconds", "dry_run"))


@dataclass
class _File:
    first: int
    end: SegmentEnd


def _files(reader: LogReader) -> tuple[list[_File], list[int], int]:
    """The log's files in seq order (each with where it ends), the leftovers among the
    live segments (files a compacted file covers), and the log start."""
    segments, log_start = reader.live_segments()
    files: list[_File] = []
    leftovers: list[int] = []
    covered = log_start
    for first in segments:
        if files and first < covered:
            leftovers.append(first)  # of an interrupted compaction or retention
            continue
        end = reader.segment_end(first)
        files.append(_File(first, end))
        covered = max(covered, end.next_seq)
    return files, leftovers, log_start


def _cut(files: list[_File], policy: RetentionPolicy) -> int:
    """The index of the oldest file the policy keeps (0: drop nothing)."""
    active = len(files) - 1
    if policy.keep == "state":
        return active
    cuts = [0] if not (policy.keep_turns is not None or policy.keep_since is not None) else []
    lasts = [f.end.last for f in files]
    current = next((last[1] for last in reversed(lasts) if last is not None), None)
    if current is None:
        return 0  # no record at all
    if policy.keep_turns is not None:
        threshold = current - policy.keep_turns + 1
        cuts.append(next((i for i, last in enumerate(lasts)
                          if last is None or last[1] >= threshold), active))
    if policy.keep_since is not None:
        since = float(policy.keep_since)
        cuts.append(next((i for i, last in enumerate(lasts)
                          if last is None or last[0] >= since), active))
    return min(cuts)



def retain_log(io: FileIO, writer: LogWriter, snapshots: SnapshotDir, session_path: str,
               uid: int, policy: RetentionPolicy, window: int, *, dry_run: bool = False,
               lock_timeout: float = 60.0) -> RetainReport:
    """Apply ``policy`` to the log ``writer`` writes (the caller holds the writer and its
    lock) and return what it did; see the module's docstring for the steps."""
    started = time.monotonic()
    reader = writer.reader
    report = RetainReport(sessions=1, dry_run=dry_run)
    if policy.keep == "state" and not dry_run:
        writer.roll_over()  # the active segment's records become droppable
    writer.sync()
    with log_folder_lock(reader.path, lock_timeout):
        files, leftovers, log_start = _files(reader)
        base = reader.base_of(log_start)
        before = log_start if base is None else base.seq + 1
        report.history_start_before = report.history_start = before
        if not dry_run:
            # files an interrupted retention left (its base is in place): unlinked now
            stale = [s for s in leftovers if base is not None and s <= base.seq]
            for first in stale:
                io.unlink_if_there(reader.segment_path(first))
            if stale:
                io.fsync_dir(reader.path)
            leftovers = [s for s in leftovers if s not in stale]
        cut = _cut(files, policy)
        if dry_run and policy.keep == "state" and files[-1].end.next_seq > files[-1].first:
            # the roll-over a real run makes first: the active segment would go too
            files.append(_File(files[-1].end.next_seq, files[-1].end))
            cut = len(files) - 1
        if cut == 0:
            report.seconds = round(time.monotonic() - started, 6)
            return report
        last_dropped = files[cut].first - 1
        if last_dropped < before:
            report.seconds = round(time.monotonic() - started, 6)
            return report  # what the policy drops is dropped already
        doomed = [f.first for f in files[1:cut]] + [s for s in leftovers
                                                    if s <= last_dropped]
        report.history_start = last_dropped + 1
        report.seqs_dropped = last_dropped + 1 - before
        report.segments_removed = len(doomed)
        old_bytes = sum(io.file_size(reader.segment_path(s)) for s in [log_start, *doomed])
        doomed_snapshots = [s for s in snapshots.seqs() if s <= last_dropped]
        report.snapshots_removed = len(doomed_snapshots)
        if dry_run:
            report.bytes_freed = old_bytes
            report.seconds = round(time.monotonic() - started, 6)
            return report
        image = load(io, reader, snapshots, until_seq=last_dropped, window=window).image
        # Rows of the message index point into the files to drop: before they go, an
        # empty index (a new file, so that readers holding the old one start afresh),
        # which the writer fills again from the log.
        index_path = os.path.join(session_path, INDEX_NAME)
        if io.exists(index_path):
            io.atomic_write(index_path, encode_header(uid, log_start))
        record = next(f.end.last for f in reversed(files[:cut]) if f.end.last is not None)
        anchor = None if reader.chain is None else _link_after(reader, files[cut - 1].first)
        written = _write_base(io, reader, session_path, log_start, last_dropped, image,
                              record, uid, anchor)
        # The commit point passed: the files below are leftovers. Unlinked in seq order
        # (a reader that finds one gone goes on after the base: LogReader.scans).
        # The base stands for the dropped history: significant (turns.revision_of), as
        # a writer opened now finds it.
        writer.significant_head = max(writer.significant_head, last_dropped)
        for first in sorted(doomed):
            io.unlink_if_there(reader.segment_path(first))
        if doomed:
            io.fsync_dir(reader.path)
    report.bytes_freed = old_bytes - written
    for seq in doomed_snapshots:
        io.unlink_if_there(snapshots.file_path(seq))
    if doomed_snapshots:
        io.fsync_dir(snapshots.path)
    reader.forget_first_turn(log_start)
    report.seconds = round(time.monotonic() - started, 6)
    return report


def _write_base(io: FileIO, reader: LogReader, session_path: str, log_start: int,
                last_dropped: int, image: StateImage, record: tuple[float, int, str],
                uid: int, anchor: bytes | None = None) -> int:
    """Steps 3 and 4: the base file written, checked, and renamed over the log start's
    file. Returns its size. A chained log's base is chained (``anchor``: the chain
    value after ``last_dropped``; chain_base.py)."""
    ts, turn, kind = record
    body = image.body()
    if anchor is None:
        frame = encode_base_frame(log_start, last_dropped, body, ts, turn, kind)
    else:
        assert reader.chain is not None
        frame = encode_chained_base(reader.chain.mac, anchor, log_start, last_dropped,
                                    body, ts, turn, kind, uid)
    data = encode_compacted(log_start, log_start, uid, [(log_start, frame)])
    temp = os.path.join(session_path, TEMP_PREFIX + secrets.token_hex(4))
    io.write_new(temp, data)
    try:
        _verify_base(io, temp, log_start, frame, body, image.window, anchor is not None)
        io.rename(temp, reader.segment_path(log_start))
    except BaseException:
        io.unlink_if_there(temp)
        raise
    io.fsync_dir(reader.path)  # the commit point
    return len(data)


def _link_after(reader: LogReader, first: int) -> bytes:
    """The chain value after the last record of the (sealed) segment ``first``: what the
    segment after it anchors on, and so the anchor of a base standing for the history up
    to there. Its run is checked first: a base never vouches for a forged value."""
    scan = reader.scan_segment(first, False, after_seq=2**63)
    for _ in scan:
        pass
    link = None if scan.chain is None else scan.chain.link_out
    if link is None:
        raise CorruptionError("the segment before the history kept ends in no chain value: "
                              "the chain is broken there, and retention does not extend "
                              "it; nothing was dropped", path=scan.path, offset=scan.end)
    return link


def _verify_base(io: FileIO, path: str, log_start: int, frame: bytes, body: dict[str, Any],
                 window: int, chained: bool = False) -> None:
    """Read the base file back as a reader will: the frame, and the image it holds."""
    fd = io.open(path, os.O_RDONLY)
    header = decode_segment_header(io.pread(fd, SEGMENT_HEADER_SIZE, 0), path)
    with open_compacted(io, fd, path, header, log_start, None) as segment:
        plain = segment.read_all()
    # (a chained base's bytes are compared with those encoded, below)
    scan = SegmentScan(plain, path, log_start, False, allow_base=True,
                       chain=UNCHECKED if chained else None)
    for _ in scan:
        pass
    base = scan.base
    if plain[SEGMENT_HEADER_SIZE:] != frame or base is None:
        raise CorruptionError("the base file does not read back as written; nothing was "
                              "dropped", path=path)
    again = StateImage.from_base(base, log_start, window).body()
    if msgspec.msgpack.encode(again) != msgspec.msgpack.encode(body):
        raise CorruptionError("the base file's image does not read back as the state it "
                              "was made from; nothing was dropped", path=path)



def with_dropped_history(report: VacuumReport, retained: RetainReport) -> VacuumReport:
    """A session's vacuum report with what its retention policy dropped, as the kind
    ``dropped_history`` (the segment files removed, the bytes freed)."""
    from .vacuum import Removed  # vacuum imports the session, which imports this
    dropped = Removed(retained.segments_removed, retained.bytes_freed)
    return dataclasses.replace(report, removed={**report.removed, "dropped_history": dropped})


def describe(report: RetainReport) -> str:
    """One line saying what a retention dropped (or would drop)."""
    verb = "would drop" if report.dry_run else "dropped"
    if not report.seqs_dropped:
        return f"nothing to drop (history starts at seq {report.history_start})"
    return (f"{verb} seqs {report.history_start_before} to {report.history_start - 1} "
            f"({report.seqs_dropped} records, {report.segments_removed + 1} file(s) "
            f"rewritten or removed, {report.bytes_freed} bytes); history starts at seq "
            f"{report.history_start}")


__all__ = ["RetainReport", "RetentionPolicy", "describe", "retain_log"]
