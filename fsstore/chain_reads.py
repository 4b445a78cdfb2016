"""Checking the chain of frames read at known places (docs/FORMAT.md 3.4, "Reading").

A replay checks each segment's run before it yields its events (``chain_check.py``). A
read at a known place (``LogReader.read_frames``: the message index; ``frames_from``:
the index catching up, an export; the log's tail) reads a few frames in the middle of a
segment instead. Such a frame is vouched for by the run of its segment (or compacted
member) up to it: the MAC of the run from its start up to the frame's chain value must
be that value. So :func:`vouch` hashes the run from its start up to the last frame
returned, in one call, before the frames are returned.

What was checked is kept per reader (:class:`RunCache`), by the file's identity
(device, inode, size, mtime and ctime: a write changes the ctime, which no one can set
back), with the running MAC where the check ended: a later read in the same file hashes
only the bytes after what was checked, so the point reads of a sealed file hash it
once, and the active segment, whose identity each append changes, is hashed again up to
the frame read (at most a segment).

The run's first frame is checked as a replay checks it (``chain_check.check_segment``:
its type, and its anchor where the reader can tell: the genesis at the log start), and a
fork's junction inside the run is damage, as in a replay. A file's first run also has its
link-in checked, once per file identity: its anchor against the last chain value of the
live segment before it, read from that file's end (``chain_writer.last_link``, not
checked here: that file's own reads check its run), bridges and junctions included. A
later member of a compacted file has its run checked, not its link-in.

A keyed chain without its key: :func:`vouch` raises ChainKeyRequired (the reads at known
places need it); :func:`vouched_tail` reads the end of the log unchecked, as ``info``
and ``head`` of such a session always did (FORMAT.md 3.4, "Keyed sessions without their
key").
"""

from __future__ import annotations

import bisect
import collections
import threading
from typing import TYPE_CHECKING, Any, NamedTuple

from .chain import CHAIN_SIZE
from .chain_check import NOT_CHECKED, ChainRun, check_segment
from .errors import CorruptionError
from .log_format import (
    _FRAME_HEADER,
    _U32,
    FRAME_CHAINED_BASE,
    TRAILER_SIZE,
    _parse_frame,
    chain_damage,
    frame_end,
)
from .segment_header import SEGMENT_HEADER_SIZE

if TYPE_CHECKING:
    from .chain_check import ChainRules
    from .log import LogReader, SegmentEnd
    from .segment_file import SegmentFile

#: How many runs a reader keeps what it checked of (a run: a plain segment, or a member).
_KEPT_RUNS = 64


class _Checked(NamedTuple):
    """What was checked of one run: while its file's ``identity`` holds, every frame
    ending at or before ``end`` (an offset in the file's logical bytes) is vouched for;
    ``state`` is the running MAC fed up to ``end`` (None: nothing after ``end`` may be
    in the run, a chained base's member; or the run is unchained history)."""

    identity: tuple[int, ...]
    end: int
    state: Any
    first_seq: int  # the seq of the run's first frame


class RunCache:
    """The runs a reader checked (see the module's docstring), by file and run start."""

    def __init__(self) -> None:
        self._runs: collections.OrderedDict[tuple[str, int], _Checked] = (
            collections.OrderedDict())
        self._lock = threading.Lock()  # a reader may be used from several threads

    def get(self, key: tuple[str, int]) -> _Checked | None:
        with self._lock:
            return self._runs.get(key)

    def put(self, key: tuple[str, int], checked: _Checked) -> None:
        with self._lock:
            self._runs[key] = checked
            self._runs.move_to_end(key)
            while len(self._runs) > _KEPT_RUNS:
                self._runs.popitem(last=False)

    def drop(self, key: tuple[str, int]) -> None:
        with self._lock:
            self._runs.pop(key, None)


def checks(rules: ChainRules | None) -> bool:
    """Whether a reader with ``rules`` checks chain values (a session with a chain, read
    by a reader that is not one taking every chain as it is)."""
    return rules is not None and rules is not NOT_CHECKED


def vouch(log: LogReader, segment: SegmentFile, start: int, end: int, next_seq: int, *,
          torn_ok: bool = False, read: bytes | None = None) -> int:
    """Check the chain values of the whole, checksum-valid frames in bytes ``start`` to
    ``end`` of ``segment`` (a view, as ``LogReader.open_segment`` opens it), ``next_seq``
    being the seq after the last of them. Returns ``end``; with ``torn_ok`` (a read to
    the end of the log), where the read must stop instead: before a last frame of the
    log, wholly past its synced mark, whose value fails (a write torn inside its chain
    value reads so, FORMAT.md 3.4). Raises CorruptionError naming "the chain" otherwise,
    ChainKeyRequired for a keyed chain without its key. Does nothing for a log without
    a chain. ``read``: bytes ``start`` to ``end``, when the caller read them, so that a
    run starting in them is not read again for its first frame."""
    rules = log.chain
    if rules is None or rules is NOT_CHECKED or end <= start:
        return end
    known = None if read is None else (start, read)
    rules.mac  # noqa: B018  (ChainKeyRequired before anything is read)
    shift = segment.file_offset(0)
    file_start, file_end = start + shift, end + shift
    starts = [SEGMENT_HEADER_SIZE] if segment.tables is None else [
        member.start for member in segment.tables.members]
    # the frames may run across members of a compacted file: each member is a run
    index = bisect.bisect_right(starts, file_start) - 1
    piece_end = file_end
    for later in starts[index + 1:]:
        if later >= file_end:
            break
        # (a member boundary inside the range: the frames before it end that run, and
        # their last seq is not known here; the junction check needs none for them: a
        # fork's junction starts a member)
        _vouch_run(log, rules, segment, starts[index], later, None, torn_ok=False,
                   known=known)
        index += 1
    stop = _vouch_run(log, rules, segment, starts[index], piece_end, next_seq,
                      torn_ok=torn_ok, known=known)
    return end if stop is None else stop - shift


def _vouch_run(log: LogReader, rules: ChainRules, segment: SegmentFile, run_start: int,
               upto: int, next_seq: int | None, *, torn_ok: bool,
               known: tuple[int, bytes] | None = None) -> int | None:
    """Check the run starting at ``run_start`` (file-logical offsets) up to the frame
    ending at ``upto``; None when it holds, else where a torn last frame starts."""
    shift = segment.file_offset(0)
    key = (segment.path, run_start)
    identity = log.io.identity(segment.fd)
    checked = log.vouched.get(key)
    if checked is None or checked.identity != identity:
        first = _first_frame(log, rules, segment, run_start, identity, torn_ok, known)
        if first is None or isinstance(first, int):
            return first  # unchained history (before the session had a chain), or torn
        checked = first
    if next_seq is not None:
        for seq, _uid in rules.forks:
            if checked.first_seq < seq + 1 < next_seq:
                from .chain_check import _junction_inside

                raise _junction_inside(seq, segment.path, run_start)
    if upto <= checked.end:
        log.vouched.put(key, checked)
        return None
    if checked.state is None:
        raise chain_damage("record after a chained base in its member: the chain does not "
                           "go on from the base", segment.path, checked.end - shift)
    raw = segment.pread(upto - checked.end, checked.end - shift)
    at = len(raw) - TRAILER_SIZE - CHAIN_SIZE
    if len(raw) != upto - checked.end or at < 0:
        raise CorruptionError("the records read are not whole", path=segment.path,
                              offset=checked.end - shift)
    state = checked.state.copy()
    state.update(memoryview(raw)[:at])
    if state.copy().digest() != raw[at:at + CHAIN_SIZE]:
        log.vouched.drop(key)
        return _name_the_failure(log, rules, segment, run_start, checked.first_seq, upto,
                                 torn_ok)
    state.update(memoryview(raw)[at:])
    log.vouched.put(key, checked._replace(end=upto, state=state))
    return None


def _first_frame(log: LogReader, rules: ChainRules, segment: SegmentFile, run_start: int,
                 identity: tuple[int, ...], torn_ok: bool,
                 known: tuple[int, bytes] | None = None) -> _Checked | int | None:
    """The run's first frame checked as a replay checks it (its type, its anchor where
    it can be told, its value), and the running MAC after it; None for unchained history
    a session may hold before its chain (``ChainRules.chained_from``); with ``torn_ok``,
    its offset when it is the log's last frame, torn inside its value (see ``vouch``).
    ``known``: bytes of the view the caller read, and where they start."""
    shift = segment.file_offset(0)
    view_start = run_start - shift
    head = _pread(segment, _FRAME_HEADER.size, view_start, known)
    if len(head) < _FRAME_HEADER.size:
        raise chain_damage("no record where the chain's run starts", segment.path,
                           view_start)
    _, length, _first, _count, frame_type = _FRAME_HEADER.unpack_from(head)
    size = frame_end(0, length, frame_type)
    raw = _pread(segment, min(size, max(segment.size - view_start, 0)), view_start, known)
    frame = _parse_frame(raw, memoryview(raw), 0, len(raw))
    if frame is None:
        raise chain_damage("no whole record where the chain's run starts", segment.path,
                           view_start)
    header = segment.scan_header
    before = _run_before(log, segment, view_start, header)
    last = (torn_ok and segment.tables is None and len(raw) == size
            and not segment.pread(8, view_start + size).strip(b"\0"))
    try:
        run = check_segment(rules, [raw], SEGMENT_HEADER_SIZE, path=segment.path,
                            header=header, first_seq=frame.first_seq, is_last=last,
                            before=before)
        # Only a value that failed asks whether this is the log's last frame: a listing
        # of the folder, which a tail read through the tail hint otherwise never needs.
        if run.cut is not None and max(log.list_segments()) != segment.first_seq:
            run = check_segment(rules, [raw], SEGMENT_HEADER_SIZE, path=segment.path,
                                header=header, first_seq=frame.first_seq, is_last=False,
                                before=before)  # damage, not a tear: raises
    except CorruptionError as exc:
        if exc.offset is None or view_start == SEGMENT_HEADER_SIZE:
            raise
        raise CorruptionError(exc.reason, path=exc.path,
                              offset=exc.offset + view_start - SEGMENT_HEADER_SIZE) from None
    if not run.chained:
        return None
    if run.cut is not None:
        return run_start
    if run.link_out is None or run.covered != SEGMENT_HEADER_SIZE + frame.size - TRAILER_SIZE:
        raise chain_damage("the chain's run does not start with its first record (a record "
                           "of another type, or misplaced)", segment.path, view_start)
    end = run_start + frame.size
    if frame.frame_type == FRAME_CHAINED_BASE:
        return _Checked(identity, end, None, frame.first_seq)
    state = rules.mac.frame_state()
    state.update(memoryview(raw)[:frame.size])
    return _Checked(identity, end, state, frame.first_seq)


def _pread(segment: SegmentFile, size: int, offset: int,
           known: tuple[int, bytes] | None) -> bytes:
    """Bytes ``offset`` to ``offset + size`` of the view: from ``known`` (where they
    start, the bytes) when they lie in it, else read."""
    if known is not None:
        at = offset - known[0]
        if at >= 0 and at + size <= len(known[1]):
            return known[1][at:at + size]
    return segment.pread(size, offset)


def _run_before(log: LogReader, segment: SegmentFile, view_start: int,
                header: Any) -> ChainRun | None:
    """What the file's first run links in from (its anchor is checked against it as a
    replay checks it, bridges and a fork's junction included): the last chain value of
    the live segment before it, read from that file's end (its own reads check its run).
    None when the run is not the file's first, starts the log, or no segment is before
    it (the rules then need no link, or the check cannot tell)."""
    if view_start != SEGMENT_HEADER_SIZE or segment.file_offset(0) != 0 or (
            segment.first_seq == header.log_start):
        return None
    from .chain_writer import last_link, segment_before

    before = segment_before(log, segment.first_seq)
    if before is None:
        return None
    if before == header.log_start:
        base = log.base_of(header.log_start)
        if base is not None and segment.first_seq <= base.seq:
            return None  # a file of history retention dropped, still there: not linked
    return ChainRun(True, link_out=last_link(log, segment.first_seq))


def _name_the_failure(log: LogReader, rules: ChainRules, segment: SegmentFile,
                      run_start: int, first_seq: int, upto: int, torn_ok: bool) -> int:
    """The run failed up to ``upto``: walk it frame by frame to name the first frame
    whose value fails (raises), unless that is the last frame of the log, wholly past its
    synced mark, and the read may stop there (``torn_ok``): then where it starts."""
    shift = segment.file_offset(0)
    view_start = run_start - shift
    moved = view_start - SEGMENT_HEADER_SIZE  # the walk's offsets are from the run's start
    last = (torn_ok and segment.tables is None
            and max(log.list_segments()) == segment.first_seq)
    size = (segment.size if last else upto - shift) - view_start
    raw = segment.pread(size, view_start)
    try:
        run = check_segment(rules, [raw], SEGMENT_HEADER_SIZE, path=segment.path,
                            header=segment.scan_header, first_seq=first_seq,
                            is_last=last, before=None)
    except CorruptionError as exc:
        if exc.offset is None or not moved:
            raise
        # a later member of a compacted view: name the offset in this view
        raise CorruptionError(exc.reason, path=exc.path, offset=exc.offset + moved) from None
    if run.cut is not None and run.cut + moved < upto - shift:
        return run.cut + moved + shift
    # Every value the walk met held: it stopped at bytes that are no whole frame, which
    # start after the trailer of the last frame it vouched for (``covered`` ends at that
    # frame's value). Named there, where the readers' scan names the same damage.
    at = run.covered + TRAILER_SIZE if run.covered else SEGMENT_HEADER_SIZE
    raise chain_damage("record does not match the chain: its chain value is not the MAC of "
                       "its segment up to it (this record, or one before it in the "
                       "segment, was changed, moved or forged)", segment.path, at + moved)


def vouched_tail(log: LogReader, newest: int, end: SegmentEnd) -> SegmentEnd:
    """``end`` (``LogReader.locate_tail``'s, of segment ``newest``), its last frame's
    chain value checked: the run of the segment holding it hashed up to it. A last frame
    whose value fails, wholly past the synced mark, is a torn tail: the end before it,
    as a scan finds it. Without a keyed chain's key, ``end`` unchecked (see the module's
    docstring)."""
    rules = log.chain
    if (rules is None or rules is NOT_CHECKED or end.last is None
            or getattr(rules, "_mac", None) is None):
        return end
    first, upto = newest, end.end
    if upto <= SEGMENT_HEADER_SIZE:
        # the newest segment holds nothing yet: the last frame ends the one before it
        from .chain_writer import segment_before

        before = segment_before(log, newest)
        if before is None:
            return end
        first = before
        upto = log.segment_end(first).end
    checked = log.vouched.get((log.segment_path(first), SEGMENT_HEADER_SIZE))
    if checked is not None and upto <= checked.end:
        # checked before, and the file unchanged since: no need to open it (the tail
        # of a log no one writes is read often: head, info, the message index)
        try:
            if log.io.path_identity(log.segment_path(first)) == checked.identity:
                return end
        except FileNotFoundError:
            pass
    with log.open_segment(first) as segment:
        stop = vouch(log, segment, upto - 1, upto, end.next_seq, torn_ok=first == newest)
    if stop >= upto:
        return end
    return log.walked_end(first)


def vouch_read(log: LogReader, segment: SegmentFile, start: int, buf: bytes) -> None:
    """:func:`vouch` for bytes ``buf`` read at ``start`` of ``segment`` that end with a
    whole frame (the message index's read of the frames its rows name, and what lies
    between them): the run is checked up to that frame's chain value. Bytes that do not
    end in a frame are left to the caller's checks, which name them."""
    if not checks(log.chain) or len(buf) < TRAILER_SIZE:
        return
    (size,) = _U32.unpack_from(buf, len(buf) - TRAILER_SIZE)
    at = len(buf) - size
    if size < _FRAME_HEADER.size + TRAILER_SIZE or at < 0:
        return
    _, _length, first_seq, count, _type = _FRAME_HEADER.unpack_from(buf, at)
    vouch(log, segment, start + at, start + len(buf), first_seq + count)
