"""Checking the chain of a log's segments (docs/FORMAT.md 3.4) before they are read.

A reader of a session with a chain checks each segment it reads before it yields any of
its events (:func:`check_loaded`, called by ``LogReader.scan_segment``):

- the segment's **run**, with one hash call: the MAC of the bytes from its first frame up
  to its last frame's chain value must be that value. It covers every byte before it, so
  a record changed (its checksum recomputed or not), removed, inserted, reordered or
  copied in from another log or from elsewhere in this one fails it. Only then, the
  records are walked again frame by frame to name the first whose value differs
  (``CorruptionError`` at its offset, naming "the chain");
- its **link-in**: the anchor its first frame holds must be the last chain value of the
  segment read before it (when the reader read that one), or the genesis value of the
  log when it starts the log (``chain.genesis``, the uid in its header and the log start).
  So a segment removed, replaced by another log's, or moved fails here.

A compacted segment holds one run per member, each anchored on the member before (or
on a fork's junction made of its last value: a fork's first own segment merged with the
history before it).

One frame is not damage when its value fails: the last frame of the last segment, when
it lies wholly past the segment's synced mark. A write torn inside the chain value (its
sectors persisted out of order) leaves exactly that, and a writer that died there
acknowledged nothing: readers stop before it, as before any torn tail, and ``check``
reports it as a problem, since a frame forged onto the end of the log without the key
lands there too.

A stored value may also link through a **bridge** (``ChainRules.links``,
``ChainRules.anchors_on``): after a vacuum rewrote a file, its new last value stands
where the next file's anchor recorded the old one (``chain_bridges.py``).

Which sessions have a chain, and so which rules a reader checks, the session's
manifest says (``chain_session.py``). Reads at known places (``read_frames``,
``frames_from``, the message index, the log's tail) and watchers check the run up to
what they read with ``chain_reads.py``. What is not checked yet (FORMAT.md 3.4, "Not
wired yet"): the anchors of upgraded sessions.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, NamedTuple

from .chain import CHAIN_SIZE, DOM_FRAME, Mac, genesis, junction
from .errors import CorruptionError, Finding, FsStoreError
from .log_format import (
    _U32,
    FRAME_BASE,
    FRAME_CHAIN_START,
    FRAME_CHAINED,
    FRAME_CHAINED_BASE,
    FRAME_EVENTS,
    TRAILER_SIZE,
    _parse_frame,
    chain_damage,
)
from .segment_header import SEGMENT_HEADER_SIZE, SegmentHeader

if TYPE_CHECKING:
    from concurrent.futures import Future

    from .log_format import SegmentScan
    from .segment_file import LoadedSegment, SegmentFile


class ChainRules:
    """What a session's chain is checked against and written by: its MAC (SHA-256, or
    HMAC-SHA256 under the session's key) and its fork junctions (``forks``: each
    ``(seq, uid)`` of the manifest's ``chain.forks``, the segment starting at ``seq + 1``
    anchoring on the junction of ``uid`` there).

    A keyed chain whose key is not at hand has no MAC: ``refusal`` makes the error
    (ChainKeyRequired, or ChainKeyMismatch for another key) that :attr:`mac` raises, so
    that what needs the chain (a read that checks it, a write, a fork) refuses, and
    what does not (the manifest, the tail of the log) still reads.

    Every segment must be chained, but those starting before ``chained_from``: the
    unchained history of a session that got its chain later (no writer makes one yet;
    0, the default, allows none), so that a chain cannot be stripped from a log by
    rewriting its records as unchained ones."""

    __slots__ = ("_mac", "_refusal", "bridges", "chained_from", "forks", "refresh")
    #: Whether a writer may move the log's start (a collection's WAL: its anchor there
    #: stays as written, vectors/collection_chain.py); a session's log keeps its start.
    moves_start = False

    def __init__(self, mac: Mac | None, forks: Sequence[tuple[int, int]] = (), *,
                 refusal: Callable[[], FsStoreError] | None = None,
                 chained_from: int = 0) -> None:
        if mac is None and refusal is None:
            raise ValueError("a chain without a MAC needs the refusal its reads raise")
        self._mac, self._refusal = mac, refusal
        self.forks: tuple[tuple[int, int], ...] = tuple(sorted(forks))
        self.chained_from = chained_from
        #: The manifest's ``chain.bridges`` (FORMAT.md 3.4, "Bridges"): each value a
        #: rewrite gave a frame, and the values recorded for that place before it.
        self.bridges: dict[bytes, frozenset[bytes]] = {}
        #: Reads the bridges again (session.json): a reader that opened the session
        #: before a vacuum added some meets its new files with them (chain_bridges.py).
        self.refresh: Callable[[], Mapping[bytes, frozenset[bytes]]] | None = None

    @property
    def mac(self) -> Mac:
        """The chain's MAC; raises ChainKeyRequired (or ChainKeyMismatch) when this
        process does not have the key of a keyed chain."""
        if self._mac is None:
            assert self._refusal is not None
            raise self._refusal()
        return self._mac

    def links(self, value: bytes | None, recorded: bytes | None) -> bool:
        """Whether the log's chain value ``value`` is the one recorded as ``recorded``
        elsewhere (a stored anchor, a snapshot's, checkpoint's, manifest's or pin's
        value): equal, or a bridge says ``value`` stands where ``recorded`` was."""
        if value == recorded:
            return True
        if value is None or recorded is None:
            return False
        return self.anchors_on(recorded, value, bytes)

    def anchors_on(self, stored: bytes, link: bytes | None,
                   make: Callable[[bytes], bytes | None]) -> bool:
        """Whether an anchor ``stored`` is ``make`` of a value a bridge says ``link``
        (the log's value) stands for (``make``: the anchor a link gives, a junction or
        the link itself). The bridges are read again once before saying no: a reader
        that opened before a vacuum wrote them meets its files with them."""
        if link is None:
            return False
        for fresh in (False, True):
            if fresh and not self._refreshed():
                return False
            if any(make(old) == stored for old in self.bridges.get(link, ())):
                return True
        return False

    def _refreshed(self) -> bool:
        if self.refresh is None:
            return False
        found = dict(self.refresh())
        if found == self.bridges:
            return False
        self.bridges = found
        return True

    def junction_at(self, first_seq: int) -> int | None:
        """The uid of the fork whose first own segment starts at ``first_seq``, if any."""
        for seq, uid in self.forks:
            if seq + 1 == first_seq:
                return uid
        return None

    def anchor(self, uid: int, first_seq: int, log_start: int, link: bytes | None
               ) -> bytes | None:
        """The anchor of the segment starting at ``first_seq``, whose header carries
        ``uid`` (:func:`anchor_for`)."""
        return anchor_for(self.mac, self.forks, uid, first_seq, log_start, link)


def anchor_for(mac: Mac, forks: Sequence[tuple[int, int]], uid: int, first_seq: int,
               log_start: int, link: bytes | None) -> bytes | None:
    """The anchor of the segment (or compacted member) starting at ``first_seq``:
    the genesis of ``uid`` (the uid in the header of the segment starting the log) when
    it starts the log; the junction of the fork whose first own segment it is, made of
    ``link``, when ``forks`` (``(seq, uid)`` pairs) says so; else ``link``, the last
    chain value before it. None when ``link`` is needed and not known (None)."""
    if first_seq == log_start:
        return genesis(mac, uid, first_seq)
    if link is None:
        return None
    for seq, fork_uid in forks:
        if seq + 1 == first_seq:
            return junction(mac, link, fork_uid, seq)
    return link


class ChainRun(NamedTuple):
    """What the check of one segment found: whether it is chained, the anchor its first
    frame holds (``link_in``), the chain value of its last frame that holds
    (``link_out``, what the next segment must anchor on), where a last frame whose
    value failed stops the read (``cut``, see the module's docstring), and the file
    offset before which every byte is vouched for by a value that held (``covered``:
    the end of that value; the walk of the segment does not check those frames'
    checksums and trailers again)."""

    chained: bool
    link_in: bytes | None = None
    link_out: bytes | None = None
    cut: int | None = None
    covered: int = 0


UNCHAINED = ChainRun(False)
#: What a scan is given that takes a chain as it is: its chained frames are read, their
#: checksums and trailers checked, not their chain values (see :func:`taken_as_is`).
UNCHECKED = ChainRun(True)


def _not_checked() -> FsStoreError:
    return FsStoreError("this reader takes the chain as it is: it has no MAC")


#: The rules of a reader that takes any chain as it is (``LogReader.chain``): a backup's
#: copy of a log (which a verify of the copy checks), the token records a lease looks
#: up. It reads chained and unchained logs alike, and checks no chain value.
NOT_CHECKED = ChainRules(None, refusal=_not_checked)


def taken_as_is(rules: ChainRules | None) -> ChainRun | None:
    """What a scan that does not check the chain of a log whose rules are ``rules`` is
    given (a watcher's reads, from where it stopped: FORMAT.md 3.4 says what is not
    checked yet): None for a log without a chain. A keyed chain's key is needed all
    the same (ChainKeyRequired)."""
    if rules is None:
        return None
    if rules is not NOT_CHECKED:
        rules.mac  # noqa: B018
    return UNCHECKED


def expected_anchor(rules: ChainRules, header: SegmentHeader, first_seq: int,
                    before: ChainRun | None) -> bytes | None:
    """The anchor segment ``first_seq`` must hold (:meth:`ChainRules.anchor`): the genesis
    value when it starts the log, else made of the link-out of the segment read before it
    (``before``); None when the reader cannot tell (the first segment of a read from the
    middle of the log)."""
    link = None if before is None else before.link_out
    return rules.anchor(header.uid, first_seq, header.log_start, link)


def check_loaded(rules: ChainRules | None, loaded: LoadedSegment, first_seq: int,
                 is_last: bool, before: ChainRun | None,
                 hashed: Future[tuple[bytes, int, int] | None] | None = None) -> ChainRun | None:
    """Check the chain of a segment read whole (see :func:`check_segment`); None when
    the session has no chain (``rules`` None). ``hashed``: its run, hashed ahead
    (:func:`hash_ahead`)."""
    if rules is None or rules is NOT_CHECKED:
        return None if rules is None else UNCHECKED
    return check_segment(rules, [loaded.buf, *loaded.more], loaded.origin, path=loaded.path,
                         header=loaded.header, first_seq=first_seq,
                         members=frozenset(loaded.members), is_last=is_last, before=before,
                         hashed=hashed)


def hash_ahead(rules: ChainRules | None, loaded: LoadedSegment
               ) -> Future[tuple[bytes, int, int] | None] | None:
    """Hash the run of a plain segment read whole in the prefetch thread, while the
    caller reads the segment before it (hashlib releases the GIL as it hashes): a replay
    of a chained log then costs what an unchained one does but for its first segment,
    when a core is free. None when there is nothing to hash ahead (no chain, a keyed one
    without its key, a compacted segment): :func:`check_segment` then hashes in place."""
    if (rules is None or rules is NOT_CHECKED or rules._mac is None or loaded.more
            or loaded.members or loaded.header.compacted):
        return None
    from .segment_file import prefetch_pool

    return prefetch_pool().submit(_whole_run, rules._mac, loaded.buf,
                                  SEGMENT_HEADER_SIZE - loaded.origin)


def check_segment(rules: ChainRules, pieces: Sequence[bytes | memoryview], origin: int, *,
                  path: str, header: SegmentHeader, first_seq: int,
                  members: Collection[int] = (), is_last: bool,
                  before: ChainRun | None,
                  hashed: Future[tuple[bytes, int, int] | None] | None = None) -> ChainRun:
    """Check the chain of segment ``first_seq`` (a view of it: a compacted member's view
    starts at that member), its bytes in ``pieces`` from file offset ``origin`` (at most
    64: the first frame is in them), ``members`` the first seqs of the members after
    the first. ``before`` is the check of the segment read just before it, None when
    there was none. Raises CorruptionError on a broken chain; damage that is no frame
    (a checksum, a torn tail) is left to the walk of the segment, which classifies it."""
    start = SEGMENT_HEADER_SIZE - origin
    piece = pieces[0]
    first = _parse_frame(piece, memoryview(piece), start, len(piece))
    if first is None:
        return UNCHAINED  # empty, or damaged where the walk raises or stops
    if first.frame_type in (FRAME_EVENTS, FRAME_BASE):
        if before is not None and before.chained:
            raise chain_damage("unchained segment after chained ones: the chain stops here",
                               path, SEGMENT_HEADER_SIZE)
        if first_seq < rules.chained_from:
            return UNCHAINED  # history from before the session had a chain
        raise chain_damage("unchained record in the log of a session that has a chain: "
                           "the chain was stripped, or the segment is another log's",
                           path, SEGMENT_HEADER_SIZE)
    if first.frame_type == FRAME_CHAINED_BASE:
        # a retention's base (chain_base.py): its own value checked, its anchor passed on
        return _walk(rules.mac, pieces, origin, path, members, is_last, header,
                     rules.forks, rules)
    if first.frame_type != FRAME_CHAIN_START:
        return ChainRun(True)  # misplaced, or of a type unknown here: the walk raises
    anchor = expected_anchor(rules, header, first_seq, before)
    stored = _anchor_of(piece, start, first.size)
    if anchor is not None and stored != anchor and not (
            first_seq != header.log_start and before is not None and rules.anchors_on(
                stored, before.link_out,
                lambda old: rules.anchor(header.uid, first_seq, header.log_start, old))):
        raise _link_broken(before, header, first_seq, path, rules=rules)
    if len(pieces) == 1 and not members:
        whole = _hashed(hashed) if hashed is not None else _whole_run(rules.mac, piece, start)
        if whole is not None:
            for seq, _uid in rules.forks:
                if first_seq < seq + 1 < whole[2]:
                    raise _junction_inside(seq, path, SEGMENT_HEADER_SIZE)
            return ChainRun(True, stored, whole[0], covered=origin + whole[1])
    return _walk(rules.mac, pieces, origin, path, members, is_last, header,
                 rules.forks, rules)


def cut_finding(scan: SegmentScan) -> Finding | None:
    """The problem ``check`` reports for a segment read up to a frame whose chain value
    failed (None for any other end)."""
    if scan.chain is None or scan.chain.cut is None or scan.torn_at != scan.chain.cut:
        return None
    return Finding("problem", scan.path, scan.torn_at,
                   "the last record does not match the chain: a write torn inside its "
                   "chain value, or a record added to the end of the log without the "
                   "chain (forged); readers stop before it")


def _anchor_of(buf: bytes | memoryview, off: int, size: int) -> bytes:
    """The anchor of a type 4 frame of ``size`` bytes at ``off``."""
    at = off + size - TRAILER_SIZE - 2 * CHAIN_SIZE
    return bytes(buf[at:at + CHAIN_SIZE])


def _whole_run(mac: Mac, buf: bytes | memoryview, start: int
               ) -> tuple[bytes, int, int] | None:
    """The last chain value of the segment ``buf`` (its run from ``start``), where it
    ends and the seq after its last frame, when it holds: the MAC of the run up to it,
    one hash call. None when it does not, or the data does not end in a whole chained
    frame (a torn tail): then the frames are walked one by one."""
    end = _data_end(buf, start)
    if end % 8 or end - start < TRAILER_SIZE:
        return None
    (size,) = _U32.unpack_from(buf, end - TRAILER_SIZE)
    off = end - size
    if off < start or off % 8:
        return None
    last = _parse_frame(buf, memoryview(buf), off, end)
    if last is None or last.frame_type not in (FRAME_CHAINED, FRAME_CHAIN_START):
        return None
    at = end - TRAILER_SIZE - CHAIN_SIZE
    value = mac.value(DOM_FRAME, memoryview(buf)[start:at])
    if value != buf[at:at + CHAIN_SIZE]:
        return None
    return value, at + CHAIN_SIZE, last.first_seq + last.event_count


def _hashed(hashed: Future[tuple[bytes, int, int] | None]) -> tuple[bytes, int, int] | None:
    """What :func:`hash_ahead` found; None (walk the frames one by one) when it failed."""
    try:
        return hashed.result()
    except Exception:
        return None


def _data_end(buf: bytes | memoryview, start: int) -> int:
    """The offset after the last non-zero byte of ``buf`` (not before ``start``): zeros
    after it were preallocated. Looked for backwards, in growing steps."""
    pos, step = len(buf), 4096
    while pos > start:
        low = max(start, pos - step)
        kept = len(bytes(buf[low:pos]).rstrip(b"\0"))
        if kept:
            return low + kept
        pos, step = low, step * 4
    return start


def _walk(mac: Mac, pieces: Sequence[bytes | memoryview], origin: int, path: str,
          members: Collection[int], is_last: bool, header: SegmentHeader,
          forks: Sequence[tuple[int, int]] = (), rules: ChainRules | None = None
          ) -> ChainRun:
    """Check every frame's chain value, one by one (a copy of the running MAC each): the
    slow way, to name the first frame whose value fails, and for what the one call of
    ``_whole_run`` cannot take (a compacted file's members and chunks, a torn tail).
    Stops at the first bytes that are no whole frame, and at any frame the walk of the
    segment refuses (misplaced, unchained): that walk says what they are."""
    state = None
    link_in = link_out = None
    covered = 0
    base, off = origin, SEGMENT_HEADER_SIZE - origin  # file offset of the piece, in it
    for index, piece in enumerate(pieces):
        view, limit = memoryview(piece), len(piece)
        while (frame := _parse_frame(piece, view, off, limit)) is not None:
            at, end = base + off, off + frame.size
            value_at = end - TRAILER_SIZE - CHAIN_SIZE
            for seq, _uid in forks:
                if (frame.first_seq <= seq + 1 < frame.first_seq + frame.event_count
                        and not (frame.first_seq == seq + 1
                                 and frame.frame_type == FRAME_CHAIN_START)):
                    raise _junction_inside(seq, path, at)
            if frame.frame_type == FRAME_CHAINED_BASE and at == SEGMENT_HEADER_SIZE:
                link_in = link_out = check_base(mac, view[off:end], path, at, header)
                off, covered = end, base + value_at + CHAIN_SIZE
                continue
            if link_out is not None and state is None and not (
                    frame.frame_type == FRAME_CHAIN_START and frame.first_seq in members):
                raise chain_damage("record after a chained base that starts no member's "
                                   "run: the chain does not go on from the base", path, at)
            if frame.frame_type == FRAME_CHAIN_START and (
                    at == SEGMENT_HEADER_SIZE or frame.first_seq in members):
                # (the first member's anchor was checked before the walk; a later one's
                # is the member before's last value, or a fork's junction made of it:
                # compaction merges a fork's first own segment with the history before)
                stored = bytes(view[value_at - CHAIN_SIZE:value_at])
                if link_out is not None and stored != (
                        _member_anchor(mac, forks, frame.first_seq, link_out)) and not (
                        rules is not None and rules.anchors_on(
                            stored, link_out, partial(_member_anchor, mac, forks,
                                                      frame.first_seq))):
                    raise _link_broken(None, None, frame.first_seq, path, at)
                if link_in is None:
                    link_in = bytes(view[value_at - CHAIN_SIZE:value_at])
                state = mac.frame_state()
            elif frame.frame_type != FRAME_CHAINED or state is None:
                return ChainRun(True, link_in, link_out, covered=covered)
            state.update(view[off:value_at])
            value = state.copy().digest()
            if value != view[value_at:value_at + CHAIN_SIZE]:
                last = (index == len(pieces) - 1
                        and _parse_frame(piece, view, end, limit) is None)
                if is_last and last and at >= header.synced_end:
                    return ChainRun(True, link_in, link_out, at, covered)
                raise chain_damage(
                    "record does not match the chain: its chain value is not the MAC of "
                    "its segment up to it (this record, or one before it in the "
                    f"segment, was changed, moved or forged{_or_key(mac)})", path, at)
            state.update(view[value_at:end])
            link_out, off, covered = value, end, base + value_at + CHAIN_SIZE
        if off != limit:
            break  # no whole frame here: the walk of the segment says why
        base, off = base + limit, 0
    return ChainRun(True, link_in, link_out, covered=covered)


def _junction_inside(seq: int, path: str, at: int) -> CorruptionError:
    """A fork's junction (FORMAT.md 3.4) that no run starts at: a fork's own records
    start a segment of their own at ``seq + 1``, anchored on the junction, so records
    running through it are the parent's (or another fork's) put in this fork's place."""
    return chain_damage(f"the fork's records after seq {seq} start no chain of their own "
                        "(its junction): records running through it are another "
                        "session's, put in the fork's place", path, at)


def check_base(mac: Mac, frame: bytes | memoryview, path: str, at: int,
               header: SegmentHeader) -> bytes:
    """The anchor of a chained base ``frame`` (type 5, at file offset ``at``, in the file
    of ``header``), once its value holds: the MAC of the genesis of the header's uid at
    the log start, then of the frame up to it (chain_base.base_value).
    That anchor is the chain value after the history the base stands for, which the
    next member or segment continues (FORMAT.md 3.4)."""
    value_at = len(frame) - TRAILER_SIZE - CHAIN_SIZE
    from .chain_base import base_value

    expected = base_value(mac, header.uid, header.log_start, frame[:value_at])
    if expected != frame[value_at:value_at + CHAIN_SIZE]:
        raise chain_damage("base record does not match the chain: its chain value is not "
                           f"the MAC of the record (changed or forged{_or_key(mac)})",
                           path, at)
    return bytes(frame[value_at - CHAIN_SIZE:value_at])


def _member_anchor(mac: Mac, forks: Sequence[tuple[int, int]], first_seq: int,
                   link: bytes | None) -> bytes | None:
    """The anchor of a compacted member after the first (never a log start)."""
    return link if link is None else anchor_for(mac, forks, 0, first_seq, -1, link)


def _or_key(mac: Mac) -> str:
    return "; or the key is not the one it was written with" if mac.keyed else ""


def _link_broken(before: ChainRun | None, header: SegmentHeader | None, first_seq: int,
                 path: str, offset: int = SEGMENT_HEADER_SIZE,
                 rules: ChainRules | None = None) -> CorruptionError:
    """The error for a first frame anchored on another value than the one expected."""
    fork = None if rules is None else rules.junction_at(first_seq)
    if header is None:
        what = ("the chain is broken between the members of a compacted segment: member "
                f"{first_seq} is not anchored on the last chain value of the member before")
    elif first_seq == header.log_start:
        what = (f"the chain does not start here: the log's first record is not anchored on "
                f"the genesis of uid {header.uid:016x} at seq {first_seq} (a segment of "
                "another log, or its header changed?)")
    elif fork is not None:
        what = (f"the chain is broken at the fork: this segment's first record is not "
                f"anchored on the junction of fork {fork:016x} at seq {first_seq - 1} (the "
                "segment before it, or this one, is not the one the fork was made with)")
    else:
        what = ("the chain is broken between segments: this segment's first record is not "
                "anchored on the last chain value of the segment before it (a segment "
                "replaced, removed, or taken from another log?)")
    return chain_damage(what, path, offset)


def check_view(rules: ChainRules | None, segment: SegmentFile, buf: bytes, offset: int,
               before: ChainRun | None) -> ChainRun | None:
    """Check the chain of a segment read from byte ``offset`` on (``buf``), as
    ``LogReader.scans_from`` reads it: the run starts at byte 64, so the bytes before
    ``offset`` are read too (at most a segment's). None when there is no chain."""
    if rules is None or rules is NOT_CHECKED:
        return None if rules is None else UNCHECKED
    head = (segment.pread(offset - SEGMENT_HEADER_SIZE, SEGMENT_HEADER_SIZE)
            if offset > SEGMENT_HEADER_SIZE else b"")
    return check_segment(rules, [head + buf], SEGMENT_HEADER_SIZE, path=segment.path,
                         header=segment.scan_header, first_seq=segment.first_seq,
                         members=frozenset(segment.members_after),
                         is_last=not segment.compacted, before=before)
