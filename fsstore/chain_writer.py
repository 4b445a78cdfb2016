"""The writer's side of a session's chain (docs/FORMAT.md 3.4): taking up the run of the
active segment when a writer opens, and the chained copy a fork makes of the segment
holding its fork point.

A writer extends the run of the active segment. Before it does, it hashes that run, the
frames from byte 64 to the end of the log, and refuses to open when the last value does
not hold (:func:`resume_run`): a writer that extended a run with a forged or damaged
record in it would MAC the next records over it, and so vouch for the forgery (what
readers would then take for genuine). It costs one hash call over the active segment (at
most a segment: about 2.6 ms for 4 MiB), never over the history. The one exception is
the reader's: the last frame, wholly past the synced mark, whose value fails is a write
torn inside its chain value (or a forged append): the writer sets it aside as a torn
tail, and takes up the run before it.

New segments (rollover, clear, a fork's first own segment) start a new run, anchored
by :meth:`chain_check.ChainRules.anchor`: on the last value of the run before, on the
genesis at a log start, on the junction at a fork point.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, NamedTuple

from . import layout
from .chain import CHAIN_SIZE
from .chain_check import UNCHECKED, ChainRules, ChainRun, anchor_for, check_segment
from .chain_frames import RunState
from .errors import CorruptionError
from .fsio import FileIO
from .log import LogPosition, LogReader
from .log_format import (
    _U32,
    CHAIN_FIELDS,
    FRAME_CHAIN_START,
    FRAME_CHAINED_BASE,
    FRAME_HEADER_SIZE,
    MAX_FRAME_PAYLOAD,
    TRAILER_SIZE,
    SegmentScan,
    _parse_frame,
    chain_damage,
    decode_payload,
    encode_payload,
)
from .segment_file import encode_compacted
from .segment_header import SEGMENT_HEADER_SIZE, SegmentHeader, encode_segment_header

if TYPE_CHECKING:
    from .segment_file import SegmentFile

_FRAME_TYPE_AT = 20  # the frame type's offset in a frame header


class Resumed(NamedTuple):
    """The run a writer takes up: ``run``, at the end of the active segment's frames,
    and ``head_link``, the chain value after the log's last record (the run's last
    value; the value the run anchors on, or the genesis, while it holds no frame)."""

    run: RunState
    head_link: bytes


def resume_run(rules: ChainRules, reader: LogReader, header: SegmentHeader, frames: bytes,
               path: str) -> Resumed | int:
    """The run of the active segment (``header``), whose frames (bytes 64 to the end of
    the log) are ``frames``, checked: its first frame must hold the anchor the rules
    give (made of the last value of the segment before), its last value must be the MAC
    of the run up to it. Returns the offset of a last frame whose value fails past the
    synced mark (a torn write: the caller sets it aside and opens again); raises
    CorruptionError naming the chain for any other failure, ChainKeyRequired without
    the key."""
    mac = rules.mac
    first, log_start = header.first_seq, header.log_start
    link = None if first == log_start else last_link(reader, first)
    anchor = rules.anchor(header.uid, first, log_start, link)
    if anchor is None and first == log_start and rules.moves_start:
        anchor = stored_anchor(frames)  # a moved start: its anchor is taken as written
    if anchor is None:
        raise chain_damage("the segment before the active one ends in no chain value: the "
                           "chain is broken, and no writer extends it", path,
                           SEGMENT_HEADER_SIZE)
    stored = stored_anchor(frames)
    if (stored is not None and stored != anchor and first != log_start
            and rules.anchors_on(stored, link, lambda old: rules.anchor(
                header.uid, first, log_start, old))):
        anchor = stored  # the segment before was rewritten: its new value bridged here
    run = RunState(mac, anchor)
    if run.take(frames):
        before = anchor if link is None else link
        return Resumed(run, run.link if frames else before)
    # Name what fails: the walk raises at the first frame whose value or link is wrong,
    # and stops before a last frame whose value is torn past the mark.
    found = check_segment(rules, [bytes(SEGMENT_HEADER_SIZE) + frames], 0, path=path,
                          header=header, first_seq=first, is_last=True,
                          before=None if link is None else ChainRun(True, link_out=link))
    if found.cut is not None:
        return found.cut
    raise chain_damage("the records of the active segment do not continue the chain (a "
                       "record of another type, or the run does not start with its "
                       "anchor): no writer extends them", path, SEGMENT_HEADER_SIZE)


def stored_anchor(frames: bytes) -> bytes | None:
    """The anchor the first frame of ``frames`` (a segment's, from byte 64) holds, None
    when it is no whole first frame of a run."""
    first = _parse_frame(frames, memoryview(frames), 0, len(frames))
    if first is None or first.frame_type != FRAME_CHAIN_START:
        return None
    at = first.size - TRAILER_SIZE - 2 * CHAIN_SIZE
    return frames[at:at + CHAIN_SIZE]


def last_link(reader: LogReader, first_seq: int) -> bytes | None:
    """The chain value ending the live segment before ``first_seq`` (read from the end
    of its file, not checked: the reads of that segment check it), None when there is
    none or its last frame is not chained."""
    before = segment_before(reader, first_seq)
    if before is None:
        return None
    with reader.open_segment(before) as segment:
        return segment_link(segment)


def segment_before(reader: LogReader, first_seq: int) -> int | None:
    """The live segment before ``first_seq``, None when there is none (or when
    ``first_seq``'s own file is a leftover of a compaction, merged into the file before
    it): passing over the files of history a retention dropped that are still there (one
    interrupted before it unlinked them, FORMAT.md 5.6), whose chain is the dropped one:
    the log's first file, which holds the base, comes before the first segment after the
    base."""
    before = [s for s in reader.list_segments() if s < first_seq]
    if not before:
        return None
    with reader.open_segment(before[-1]) as segment:
        if segment.tables is not None and any(
                member.first_seq >= first_seq for member in segment.tables.members):
            # ``first_seq``'s file is a leftover of a compaction that merged it into the
            # file before (being unlinked): its records are read, and their link
            # checked, in that file; as a file of its own it links from none.
            return None
        log_start = segment.header.log_start
    if before[-1] > log_start and log_start in before:
        base = reader.base_of(log_start)
        if base is not None and before[-1] <= base.seq:
            return log_start
    return before[-1]


def segment_link(segment: SegmentFile) -> bytes | None:
    """The chain value of the last frame of ``segment``, None when it is not chained."""
    end = segment.data_end()
    if end - SEGMENT_HEADER_SIZE < FRAME_HEADER_SIZE + TRAILER_SIZE + CHAIN_SIZE:
        return None
    (size,) = _U32.unpack(segment.pread(4, end - TRAILER_SIZE))
    start = end - size
    if start < SEGMENT_HEADER_SIZE or size < FRAME_HEADER_SIZE + TRAILER_SIZE + CHAIN_SIZE:
        return None
    (frame_type,) = _U32.unpack(segment.pread(4, start + _FRAME_TYPE_AT))
    if frame_type not in CHAIN_FIELDS:
        return None
    if frame_type == FRAME_CHAINED_BASE:  # a base passes on its anchor (FORMAT.md 3.4)
        return segment.pread(CHAIN_SIZE, end - TRAILER_SIZE - 2 * CHAIN_SIZE)
    return segment.pread(CHAIN_SIZE, end - TRAILER_SIZE - CHAIN_SIZE)


def copy_prefix(io: FileIO, source: LogReader, first_seq: int, dest: str, at_seq: int,
                log_start: int, is_last: bool, uid: int) -> LogPosition:
    """The chained counterpart of ``log_writer._copy_segment_prefix``: the part of
    segment ``first_seq`` of ``source`` (a chained log) up to ``at_seq``, copied into
    the fork's log folder ``dest``, and the position after ``at_seq`` there.

    The whole frames up to ``at_seq`` are a prefix of the segment's run, so their chain
    values hold as they are: they are copied under the source's header (its uid, which
    the genesis binds when the segment starts the log), and that copy is sealed. The
    fork's own records start a new segment after them, which anchors on the fork's
    junction (FORMAT.md 3.4): at ``at_seq + 1``, empty, or, when ``at_seq`` falls
    inside a batch, at that batch's first seq, holding its first events re-encoded as
    the new run's first frame. The run is checked first (the junction is made of its
    values: a fork never vouches for forged bytes)."""
    rules = source.chain
    assert rules is not None
    mac = rules.mac
    path = source.segment_path(first_seq)
    scan = source.scan_segment(first_seq, is_last, after_seq=at_seq, until_seq=at_seq)
    for _ in scan:
        pass
    if scan.expect_seq <= at_seq:
        raise CorruptionError(f"the log ends at seq {scan.expect_seq - 1}, before seq {at_seq}",
                              path=path, offset=scan.end)
    link: bytes | None = None
    buf: bytes | memoryview
    if scan.compacted or scan.more:
        # (its chain was checked whole by the scan, every member's run and the links
        # between them)
        first_seq, buf, link, uid_of_run = _split_compacted(io, source, first_seq, dest,
                                                            at_seq, log_start)
        scan = SegmentScan(buf, path, first_seq, False, after_seq=at_seq, until_seq=at_seq,
                           chain=UNCHECKED)
        for _ in scan:
            pass
    else:
        buf, uid_of_run = scan.buf, source.read_header(first_seq).uid
    view, end = memoryview(buf), scan.end
    cut = None if scan.expect_seq == at_seq + 1 else _parse_frame(buf, view, end, len(buf))
    if end > SEGMENT_HEADER_SIZE:
        io.write_new(os.path.join(dest, layout.segment_name(first_seq)),
                     encode_segment_header(first_seq, log_start, uid_of_run)
                     + bytes(buf[SEGMENT_HEADER_SIZE:end]))
        link = bytes(buf[end - TRAILER_SIZE - CHAIN_SIZE:end - TRAILER_SIZE])
    elif link is None and first_seq != log_start:
        link = last_link(source, first_seq)  # at_seq is in the segment's first batch
    start = at_seq + 1 if cut is None else cut.first_seq
    content = encode_segment_header(start, log_start, uid)
    if cut is not None:
        ts, turn, entries = decode_payload(cut.payload, cut.event_count, path, cut.offset)
        kept = [tuple(entry) for entry in entries[:at_seq - cut.first_seq + 1]]
        anchor = anchor_for(mac, [(start - 1, uid)], uid, start, log_start, link)
        if anchor is None:
            raise chain_damage("the segment before the fork point ends in no chain value: "
                               "the chain is broken there, and a fork does not extend it",
                               source.segment_path(first_seq), SEGMENT_HEADER_SIZE)
        payload = encode_payload(ts, turn, kept, MAX_FRAME_PAYLOAD, check=False)
        content += RunState(mac, anchor).frame(payload, start, len(kept))
    io.write_new(os.path.join(dest, layout.segment_name(start)), content)
    crc = _U32.unpack_from(content, SEGMENT_HEADER_SIZE)[0] if cut is not None else 0
    return LogPosition(start, len(content), crc)


def _split_compacted(io: FileIO, source: LogReader, first_seq: int, dest: str, at_seq: int,
                     log_start: int) -> tuple[int, bytes, bytes | None, int]:
    """A fork at ``at_seq`` inside the compacted file ``first_seq`` (FORMAT.md 3.4,
    "Forks"): its members before the one holding ``at_seq`` are written into ``dest``
    byte for byte as a compacted file of their own, under the file's name and header uid
    (every member's run, and the links between them, hold as they are); the member
    holding ``at_seq`` is returned as a plain segment's bytes (its header, then its
    frames), to be copied up to ``at_seq`` as a plain segment's prefix is: its first
    seq, those bytes, the chain value it anchors on (the last of the member before it,
    or the anchor of a base that member is, which it passes on) and the file's uid. A
    base (a member of its own, flagged) stays in a compacted file: when ``at_seq`` ends
    it, the member returned is empty, at ``at_seq + 1``."""
    logical, header = source.load_segment(first_seq)
    with source.open_segment(first_seq) as segment:
        assert segment.tables is not None
        members = segment.tables.members
        base_first = segment.tables.base_first
    ends = [*(m.start for m in members[1:]), len(logical)]
    holding = max(index for index, m in enumerate(members) if m.first_seq <= at_seq)
    if holding == 0 and base_first:
        holding = 1  # the base is its member's whole run: it ends at its seq
    kept = [(m.first_seq, logical[m.start:end])
            for m, end in zip(members[:holding], ends[:holding], strict=True)]
    link = None
    if kept:
        io.write_new(os.path.join(dest, layout.segment_name(kept[0][0])),
                     encode_compacted(kept[0][0], log_start, header.uid, kept))
        last = kept[-1][1]
        value_at = len(last) - TRAILER_SIZE - CHAIN_SIZE
        if holding == 1 and base_first:  # a base passes on its anchor (FORMAT.md 3.4)
            value_at -= CHAIN_SIZE
        link = bytes(last[value_at:value_at + CHAIN_SIZE])
    if holding == len(members):
        member_first, frames = at_seq + 1, b""
    else:
        member_first = members[holding].first_seq
        frames = logical[members[holding].start:ends[holding]]
    return (member_first, encode_segment_header(member_first, log_start, header.uid) + frames,
            link, header.uid)
