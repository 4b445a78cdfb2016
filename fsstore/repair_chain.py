"""Repair of a chained session (docs/FORMAT.md 7.6 and 3.4, "Rewrites and bridges").

A repair (``repair_log.py``) replaces each damaged segment file by one holding its
saved records and an ``fsstore.lost`` record for each lost seq. In a session with a
hash chain, this module decides what may be saved and writes the replacements so that
the chain holds:

- **What is saved** (:func:`vouch`). Every file of the log is walked run by run, oldest
  first, each frame's chain value computed from its run's start; a run starts only
  where the format starts one (a file's first frame, a compacted member's), from the
  anchor the rules give (genesis, junction, the run before's last value, or a bridge):
  another session's genuine frames spliced in, or its file put in place, fail there.
  In a **keyed** session only the frames whose values hold are saved: a frame after
  the first one of its run whose value fails (or whose bytes are damaged) is covered
  by values no one can check any more, and re-MACing it under the key would vouch for
  bytes nobody vouched for; it is lost, with a cause naming the chain. In an
  **unkeyed** session anyone can recompute the chain, so every checksum-valid frame is
  saved, as in a session without a chain; the repaired run vouches for it only from
  the repair on. A file whose chain fails (its checksums all holding) is damaged too,
  and rewritten.
- **How it is written** (:func:`install`). Each replacement is one chained run: from
  the anchor its old first frame stored, when that frame is saved and its value held;
  else from what the rules give (the genesis at the log start, else the last value of
  the file before it: the new one when that file is rewritten too). Its new values are
  bridged to the recorded ones (``chain_bridges.py``): its last value to the anchor the
  next file stores (to the old last value, when the next file anchors on a fork's
  junction), and its values at a recorded seq (the head, a checkpoint's or snapshot's,
  ``chain.at``'s) to the old value the frame ending there had, when that held.

The order, as a vacuum's: every replacement is written to a temp file in the session
folder (``.tmp-compact-``, which a vacuum removes) and read back; then ``session.json``
gets the bridges (its ``chain.at`` as it was, sealed again); then the files are renamed
over the damaged ones, oldest first, each rename made durable before the next. So a
crash leaves files before some point new and after it old: a new file links to the old
one after it through a bridge, and a damaged old file is still damaged, which a second
repair finishes. Last, ``session.json`` is sealed at the repaired log's head.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import layout, manifest
from .chain import CHAIN_SIZE, genesis
from .chain_bindings import check_manifest, manifest_at, seal_manifest
from .chain_bridges import closure, manifest_at_seq
from .chain_check import ChainRules, anchor_for, check_base
from .chain_frames import RunState
from .chain_session import read_head_hash, rules_of
from .compaction import TEMP_PREFIX
from .errors import ChainUnsupported, CorruptionError, FsStoreError
from .fsio import FileIO
from .log import LogReader
from .log_format import (
    _FRAME_HEADER,
    DEFAULT_MAX_RECORD_BYTES,
    FRAME_CHAIN_START,
    FRAME_CHAINED,
    FRAME_CHAINED_BASE,
    TRAILER_SIZE,
    Event,
    _parse_frame,
    _valid_frame_after,
)
from .salvage import (
    DamagedRange,
    LostRange,
    SalvageReport,
    SeqRange,
    _Run,
    _Seqs,
)
from .segment_file import decode_tables
from .segment_header import (
    SEGMENT_HEADER_SIZE,
    SegmentHeader,
    decode_segment_header,
    encode_segment_header,
    mark_segment_header,
)
from .turns import LOST_RECORD

if TYPE_CHECKING:
    from .repair import Gap
    from .store import Store

#: The kind of a damaged range (salvage.DamagedRange.kind) the chain found.
CHAIN = "chain"
#: Lost records per frame, as repair_log writes them.
_LOST_PER_FRAME = 10_000


def chain_rules(store: Store, path: str) -> ChainRules | None:
    """The rules of the session at ``path``'s chain, None without one. Raises
    ChainKeyRequired (ChainKeyMismatch) for a keyed chain whose key is not at hand, and
    ChainBindingBroken when ``session.json`` does not hold its MAC: a repair never seals
    a manifest it could not check. Changes nothing."""
    manifest_path = layout.session_manifest_path(path)
    try:
        raw = manifest.read(store.io, manifest_path, manifest.SESSION_FORMAT)
        record = manifest.decode_session(raw, manifest_path).chain
    except (FsStoreError, OSError):
        return None  # an unreadable manifest: the repair says what it can
    rules = rules_of(record, store.chain_key, path, manifest_path)
    if rules is None:
        return None
    check_manifest(raw, rules.mac, manifest_path)  # ChainKeyRequired first, without a key
    return rules


# --- what the chain vouches for --------------------------------------------------------------


@dataclass
class _Walked:
    """One segment image walked along its runs: the value of each frame whose value
    held from an accepted anchor, by its offset; where the first value or link failed
    (None: none did), and whether that was a link (an anchor no rule or bridge
    accepts); each frame's size, seq and count; the stored anchor of its first frame
    (held or not), and its last frame's value when it held (its link-out; computed from
    its run's stored anchor, whether that anchor was accepted or not: the file after it
    is checked against it, so that a file put in another's place loses its own records,
    not its successor's)."""

    held: dict[int, bytes] = field(default_factory=dict)
    first_failure: int | None = None
    link_failed: bool = False
    frames: dict[int, tuple[int, int, int]] = field(default_factory=dict)  # off: size, seq, n
    any_anchor: bytes | None = None
    link_out: bytes | None = None


def _accepted(rules: ChainRules, stored: bytes, link: bytes | None,
              make: Callable[[bytes], bytes | None]) -> bool:
    """Whether a run may start from the anchor ``stored``: ``make`` of ``link`` (the
    last value of the run before, None when it did not hold), directly or through a
    bridge. Nothing is accepted from a value that did not hold: the anchor is then
    all a run has to say whose it is, and another session's genuine run under the
    same key would say as much."""
    if link is None:
        return False
    return make(link) == stored or rules.anchors_on(stored, link, make)


def _walk_image(rules: ChainRules, image: bytes, *, link: bytes | None = None,
                members: Collection[int] = (), log_start: int | None = None) -> _Walked:
    """Every checksum-valid frame of ``image`` (a segment file, or a compacted one's
    decompressed image), its chain value computed from its run's start. A run starts
    only where the format starts one (FORMAT.md 3.4): a type 4 frame at byte 64, from
    the anchor the rules give (the genesis at ``log_start``, a fork's junction, else
    ``link``: the last value of the file before, when it held), or at a compacted
    member's start (``members``: their offsets after the first), from the member
    before's last value; a chained base (type 5) at byte 64, checked by its own value.
    A type 4 frame elsewhere fails there, as a type 3 frame does that does not continue
    a frame whose value held (damaged bytes between); one with another anchor fails
    there, and the values of its run are not vouched for (not in ``held``). Unkeyed, a
    file's first anchor is taken as it is when the file before has no value that held
    (anyone can recompute an unkeyed chain: it is no evidence there)."""
    mac = rules.mac
    out = _Walked()
    view, limit = memoryview(image), len(image)
    off, prev_end = SEGMENT_HEADER_SIZE, -1
    last: bytes | None = None  # the value of the frame ending at prev_end, if it held
    vouched = False  # its run's anchor was accepted: its values that hold are vouched for
    header = _header_of(image)
    uid = 0 if header is None else header.uid
    start = header.log_start if log_start is None and header is not None else log_start

    def fail(at: int, *, linking: bool = False) -> None:
        if out.first_failure is None:
            out.first_failure, out.link_failed = at, linking

    run_state: Any = None  # the running MAC after the frame ending at prev_end, if it held
    while off < limit:
        frame = _parse_frame(image, view, off, limit)
        if frame is None:
            later = _valid_frame_after(image, view, off, limit)
            if later is None:
                break
            if bytes(view[off:later.offset]).strip(b"\0"):
                fail(off)
            off, run_state, last = later.offset, None, None
            continue
        frame_type = _FRAME_HEADER.unpack_from(image, off)[4]
        end = off + frame.size
        out.frames[off] = (frame.size, frame.first_seq, frame.event_count)
        value_at = end - TRAILER_SIZE - CHAIN_SIZE
        follows = prev_end == off
        before, state = (last, run_state) if follows else (None, None)
        run_state, last, prev_end = None, None, end
        if frame_type == FRAME_CHAINED_BASE and off == SEGMENT_HEADER_SIZE:
            try:
                if header is None:
                    raise CorruptionError("a base in a file whose header does not read", path="")
                last = check_base(mac, view[off:end], "", off, header)  # its anchor
                out.held[off] = bytes(view[value_at:value_at + CHAIN_SIZE])
            except CorruptionError:
                fail(off)
            off = end
            continue
        if frame_type == FRAME_CHAIN_START:
            stored = bytes(view[value_at - CHAIN_SIZE:value_at])
            seq = frame.first_seq

            def made(value: bytes, seq: int = seq) -> bytes | None:
                return anchor_for(mac, rules.forks, uid, seq, -1, value)

            if off == SEGMENT_HEADER_SIZE:
                out.any_anchor = stored
                if seq == start:
                    vouched = stored == genesis(mac, uid, seq)
                elif link is None and not mac.keyed:
                    vouched = True  # unkeyed, nothing to check it against: as it is
                else:
                    vouched = _accepted(rules, stored, link, made)
                if not vouched:
                    fail(off, linking=True)
            elif off in members:
                vouched = _accepted(rules, stored, before, made)
                if not vouched:
                    fail(off)
            else:  # a run starts nowhere else: frames spliced in
                fail(off)
                off = end
                continue
            state = mac.frame_state()
        elif frame_type != FRAME_CHAINED or off in members or state is None:
            fail(off)  # its run's values before it failed, or it is in no run
            off = end
            continue
        state.update(view[off:value_at])
        value = state.copy().digest()
        if value == view[value_at:value_at + CHAIN_SIZE]:
            last = bytes(value)
            if vouched:
                out.held[off] = last
            state.update(view[value_at:end])
            run_state = state
        else:
            fail(off)
        off = end
    out.link_out = last
    return out


def _header_of(image: bytes) -> SegmentHeader | None:
    try:
        return decode_segment_header(image[:SEGMENT_HEADER_SIZE], "")
    except (FsStoreError, ValueError):
        return None


def _walk_log(rules: ChainRules, report: SalvageReport) -> dict[int, _Walked]:
    """Every live segment file of the log walked (:func:`_walk_image`), oldest first,
    each from the link-out of the file before it: so a file whose first frame's anchor
    no rule or bridge accepts from the file before (another session's genuine file put
    in its place) has no value that holds. A file that does not read is left out (its
    runs, if salvage saved any, stay as they are); the file after it has no link."""
    source = report.source
    if source is None:
        return {}
    io, walked = source.io, {}
    try:
        firsts = [s for s in layout.segment_seqs(io.listdir(report.log_path))
                  if s >= report.log_start]
    except (FsStoreError, OSError):
        return {}
    link: bytes | None = None
    for first in firsts:
        try:
            image = source.image(first)
            members: Collection[int] = ()
            if first in source.compacted:
                raw = source.raw(first)
                header = decode_segment_header(raw, source.path(first))
                members = {m.start for m in decode_tables(
                    raw, header, source.path(first), len(raw)).members[1:]}
        except (FsStoreError, OSError, ValueError):
            link = None
            continue
        found = _walk_image(rules, image, link=link, members=members,
                            log_start=report.log_start)
        walked[first], link = found, found.link_out
    return walked


_LINK_BROKEN = ("the chain is broken between segments: this file's first record is not "
                "anchored on what the chain gives from the file before it (whose last "
                "value must hold), nor bridged to it: a file replaced, removed, or taken "
                "from another session")


def vouch(rules: ChainRules, report: SalvageReport) -> None:
    """Make ``report`` (a chained session's salvage) say what the chain vouches for (see
    the module's docstring): keyed, the saved frames whose chain values cannot be
    checked become lost, with a cause naming the chain; both, a file whose chain fails
    is reported as damaged, so that the repair rewrites (re-chains) it."""
    source = report.source
    if source is None:
        return
    keyed = rules.mac.keyed
    runs: list[_Run] = []
    dropped: list[tuple[SeqRange, str, DamagedRange]] = []
    walked = _walk_log(rules, report)
    for run in report.runs:
        found = walked.get(run.segment)
        if found is None or not keyed:
            runs.append(run)
            continue
        runs.extend(_split(run, found, source.path(run.segment), dropped))
    for segment, found in walked.items():
        if found.first_failure is not None and not any(
                d.path == source.path(segment) for _r, _w, d in dropped):
            report.damaged.append(DamagedRange(
                source.path(segment), found.first_failure, None, CHAIN,
                (_LINK_BROKEN if found.link_failed else
                 "a record does not match the chain (its value is not the MAC of its run "
                 "up to it, or it starts a run where none starts or from another anchor)")
                + ("" if keyed else ": its records are saved by their "
                               "checksums, and the repaired chain vouches for them only "
                               "from the repair on (the chain is unkeyed)"),
                image=segment in source.compacted))
    if not dropped:
        return
    report.damaged.extend(d for _r, _w, d in dropped)
    report.keep_runs(runs)
    saved = _Seqs()
    for run in report.runs:
        saved.add(run.first_seq, run.end_seq)
    report.saved = saved.ranges()
    lost = list(report.lost) + [LostRange(r.first, r.last, (where,))
                                for r, where, _d in dropped]
    report.lost = _merged(lost)


def _split(run: _Run, found: _Walked, path: str,
           dropped: list[tuple[SeqRange, str, DamagedRange]]) -> list[_Run]:
    """``run`` less its frames whose values did not hold (keyed: they are lost)."""
    kept: list[_Run] = []
    off, start, seq, start_seq = run.start, run.start, run.first_seq, run.first_seq
    bad: tuple[int, int] | None = None  # (offset, seq) of the frames being dropped
    while off < run.end:
        size, first, count = found.frames.get(off, (run.end - off, seq, run.end_seq - seq))
        if off in found.held:
            if bad is not None:
                _drop(path, bad, off, first, dropped)
                bad, start, start_seq = None, off, first
        elif bad is None:
            if off > start:
                kept.append(_Run(run.segment, start, off, start_seq, first))
            bad = (off, first)
        off, seq = off + size, first + count
    if bad is not None:
        _drop(path, bad, run.end, run.end_seq, dropped)
    elif run.end > start:
        kept.append(_Run(run.segment, start, run.end, start_seq, run.end_seq))
    return kept


def _drop(path: str, bad: tuple[int, int], end: int, end_seq: int,
          dropped: list[tuple[SeqRange, str, DamagedRange]]) -> None:
    seqs = SeqRange(bad[1], end_seq - 1)
    reason = ("checksum-valid records the keyed chain cannot vouch for: a value before "
              "them in their run failed, or their own did, so they are not saved (a "
              "repair never MACs unverified records under the key)")
    item = DamagedRange(path, bad[0], end - bad[0], CHAIN, reason, seqs)
    dropped.append((seqs, f"{item.where()} (the chain cannot vouch for them)", item))


def _merged(lost: Iterable[LostRange]) -> list[LostRange]:
    """Lost ranges in seq order, overlapping ones joined (causes of both); the range of
    unknown length at the end last."""
    ordered = sorted((r for r in lost if r.last is not None), key=lambda r: r.first)
    out: list[LostRange] = []
    for item in ordered:
        assert item.last is not None
        if out and out[-1].last is not None and item.first <= out[-1].last + 1:
            last = out[-1]
            assert last.last is not None
            out[-1] = LostRange(last.first, max(last.last, item.last),
                                tuple(dict.fromkeys(last.causes + item.causes)))
        else:
            out.append(item)
    out.extend(r for r in lost if r.last is None)
    return out


# --- writing the replacements ----------------------------------------------------------------


@dataclass
class _Old:
    """What a damaged file held before the repair, for anchors and bridges: the stored
    anchor of its first frame (when that frame's value held), its uid, the values that
    held by the seq their frame ends at, and its last frame's value when it held."""

    anchor: bytes | None = None
    first_seq: int | None = None
    any_anchor: bytes | None = None  # the first frame's anchor, held or not
    uid: int | None = None
    values: dict[int, bytes] = field(default_factory=dict)
    link_out: bytes | None = None


def _old_file(walked: dict[int, _Walked], report: SalvageReport, first: int) -> _Old:
    """What file ``first`` held, from its walk along the log (:func:`_walk_log`)."""
    old = _Old()
    source, found = report.source, walked.get(first)
    if source is None or found is None:
        return old
    try:
        old.uid = decode_segment_header(source.raw(first)[:SEGMENT_HEADER_SIZE], "").uid
    except (FsStoreError, OSError, ValueError):
        pass
    old.any_anchor, old.link_out = found.any_anchor, found.link_out
    head = found.frames.get(SEGMENT_HEADER_SIZE)
    if head is not None and found.any_anchor is not None and SEGMENT_HEADER_SIZE in found.held:
        old.anchor, old.first_seq = found.any_anchor, head[1]
    for off, value in found.held.items():
        _size, seq, count = found.frames[off]
        old.values[seq + count - 1] = value
    return old


@dataclass
class Rewrite:
    """One damaged file to replace: its path, the seqs ``first`` to ``end - 1`` it
    stands for, and the records (saved events and lost gaps) it holds."""

    path: str
    first: int
    end: int
    records: list[Any]


def install(store: Store, path: str, rules: ChainRules, report: SalvageReport,
            rewrites: Sequence[Rewrite], log_start: int, uid: int, recorded: set[int]
            ) -> list[str]:
    """Write ``rewrites`` as chained runs, bridge them, and rename them in place (see
    the module's docstring); return the files replaced. ``recorded``: the seqs whose
    values are recorded outside the log (their values are bridged)."""
    io = store.io
    log = LogReader(io, layout.log_dir(path))
    log.chain = rules
    for item in rewrites:
        for seq, _fork in rules.forks:
            if item.first < seq + 1 < item.end:
                raise ChainUnsupported(
                    f"{item.path}: the damaged file holds a fork's junction (seq {seq + 1}), "
                    "which a repair cannot rewrite yet; nothing was changed: restore it "
                    "from a backup")
    firsts = sorted(layout.segment_seqs(io.listdir(log.path)))
    staged: list[tuple[str, str]] = []
    pairs: list[tuple[bytes, bytes]] = []
    new_links: dict[int, bytes] = {}
    walked = _walk_log(rules, report)
    try:
        for item in rewrites:
            old = _old_file(walked, report, item.first)
            link = _link_before(walked, report, firsts, item.first, new_links)
            header_uid = uid if old.uid is None else old.uid
            events = [r for r in item.records
                      if not isinstance(r, Event) or item.first <= r.seq < item.end]
            keep_anchor = (old.anchor is not None and old.first_seq == item.first and events
                           and isinstance(events[0], Event) and events[0].seq == item.first)
            anchor = old.anchor if keep_anchor else rules.anchor(
                header_uid, item.first, log_start, link)
            if anchor is None:
                raise CorruptionError("the file before the damaged one ends in no chain "
                                      "value: the repaired run would anchor on nothing; "
                                      "nothing was changed", path=item.path)
            body, values, link_out = _frames(RunState(rules.mac, anchor), events,
                                             item.first, item.end, recorded)
            new_links[item.first] = link_out
            pairs += [(values[s], old.values[s]) for s in sorted(recorded)
                      if s in values and s in old.values]
            pairs += _link_bridges(rules, walked, report, firsts, item, link_out, old,
                                   [r.first for r in rewrites])
            header = encode_segment_header(item.first, log_start, header_uid)
            data = mark_segment_header(header[:52], SEGMENT_HEADER_SIZE + len(body)
                                       if body else 0) + body
            staged.append((item.path, _stage(io, path, data)))
        _write_bridges(io, path, rules, pairs)
    except BaseException:
        for _target, temp in staged:
            io.unlink_if_there(temp)
        raise
    replaced = []
    for index, (target, temp) in enumerate(staged):  # oldest first (module docstring)
        try:
            io.rename(temp, target)
            io.fsync_dir(log.path)
        except BaseException:
            for _target, left in staged[index + 1:]:
                io.unlink_if_there(left)
            raise
        replaced.append(target)
    return replaced


def _link_before(walked: dict[int, _Walked], report: SalvageReport, firsts: list[int],
                 first: int, new_links: dict[int, bytes]) -> bytes | None:
    """The last chain value before file ``first``: the new one of the file before when
    it is rewritten, else the one its file ends with (when it held)."""
    before = [s for s in firsts if s < first]
    if not before:
        return None
    if before[-1] in new_links:
        return new_links[before[-1]]
    return _old_file(walked, report, before[-1]).link_out


def _link_bridges(rules: ChainRules, walked: dict[int, _Walked], report: SalvageReport,
                  firsts: list[int], item: Rewrite, link_out: bytes, old: _Old, rewritten: list[int]
                  ) -> list[tuple[bytes, bytes]]:
    """The bridge from the new last value of ``item`` to what the file after it (as it
    is on disk until it is replaced too) recorded: its stored anchor, or, when it
    anchors on a fork's junction, the old last value the junction was made of. Only
    when that anchor is one the old file's last value satisfied (that value held, and
    the walk of the log accepted the next file's first frame from it): an anchor that
    no rule or bridge accepted is a broken link, never bridged (the next file is then
    damaged, and rewritten from this one's new value)."""
    after = [s for s in firsts if s > item.first]
    if not after:
        return []
    nxt = _old_file(walked, report, after[0])
    pairs = []
    # its first frame held: its anchor was accepted (unkeyed: or taken as it is)
    recorded = old.link_out if rules.junction_at(after[0]) is not None else nxt.anchor
    if nxt.anchor is not None and recorded is not None and recorded != link_out:
        pairs.append((link_out, recorded))
    if old.link_out is not None and old.link_out != link_out and after[0] in rewritten:
        pairs.append((link_out, old.link_out))  # the next file keeps the anchor it had
    return pairs


def _frames(run: RunState, records: list[Any], first: int, end: int, recorded: set[int]
            ) -> tuple[bytes, dict[int, bytes], bytes]:
    """The chained frames of seqs ``first`` to ``end - 1``: each run of saved events of
    one ts and turn as a frame (ending at each recorded seq, so that its value can be
    bridged), each lost seq as an ``fsstore.lost`` record; their values by the seq each
    frame ends at, and the last value."""
    frames: list[bytes] = []
    values: dict[int, bytes] = {}
    ts, turn = 0.0, 0
    batch: list[Event] = []

    def add(frame: bytes, last: int) -> None:
        frames.append(frame)
        values[last] = run.link

    def flush() -> None:
        if batch:
            add(run.encode(batch[0].seq, batch[0].ts, batch[0].turn,
                           [(e.kind, e.data) for e in batch],
                           DEFAULT_MAX_RECORD_BYTES << 2, check=False), batch[-1].seq)
            batch.clear()

    for record in records:
        if isinstance(record, Event):
            if batch and (record.ts, record.turn) != (batch[0].ts, batch[0].turn):
                flush()
            batch.append(record)
            ts, turn = record.ts, max(turn, record.turn)
            if record.seq in recorded:
                flush()
            continue
        gap: Gap = record
        flush()
        seq = max(gap.first, first)
        while seq <= min(gap.last, end - 1):
            count = min(_LOST_PER_FRAME, min(gap.last, end - 1) - seq + 1)
            add(run.encode(seq, ts, turn, [(LOST_RECORD, {})] * count,
                           DEFAULT_MAX_RECORD_BYTES, check=False), seq + count - 1)
            seq += count
    flush()
    return b"".join(frames), values, run.link


def _stage(io: FileIO, session_path: str, data: bytes) -> str:
    """``data`` written whole to a temp file of the session folder, synced, read back."""
    temp = os.path.join(session_path, TEMP_PREFIX + secrets.token_hex(4))
    io.write_new(temp, data)
    fd = io.open(temp, os.O_RDONLY)
    try:
        back = io.pread(fd, len(data) + 1, 0)
    finally:
        io.close(fd)
    if back != data:
        io.unlink_if_there(temp)
        raise CorruptionError("a repaired segment does not read back as written; nothing "
                              "was replaced", path=temp)
    return temp


def _write_bridges(io: FileIO, path: str, rules: ChainRules,
                   pairs: list[tuple[bytes, bytes]]) -> None:
    """``session.json`` with the bridges ``pairs`` added (and those they imply), its
    ``chain.at`` as it was, sealed again."""
    added = closure(rules.bridges, pairs)
    if not added:
        return
    manifest_path = layout.session_manifest_path(path)
    data = manifest.read(io, manifest_path, manifest.SESSION_FORMAT)
    check_manifest(data, rules.mac, manifest_path)
    chain = dict(data["chain"])
    chain["bridges"] = [*chain.get("bridges", []),
                        *([new.hex(), old.hex()] for new, old in added)]
    data["chain"] = chain
    at = manifest_at(data)
    assert at is not None  # check_manifest: a chained manifest without it is refused
    seal_manifest(data, rules.mac, at[0], at[1])
    io.atomic_write(manifest_path, manifest.encode(data))
    merged = {new: set(olds) for new, olds in rules.bridges.items()}
    for new, old in added:
        merged.setdefault(new, set()).add(old)
    rules.bridges = {new: frozenset(olds) for new, olds in merged.items()}


def seal_at_head(io: FileIO, path: str, rules: ChainRules) -> str | None:
    """Seal ``session.json`` at the repaired log's head (``chain.at``), when the log's
    tail reads; return the head hash (None when it does not read)."""
    log = LogReader(io, layout.log_dir(path))
    log.chain = rules
    try:
        text = read_head_hash(log)
    except (FsStoreError, OSError):
        return None
    if text is None:
        return None
    seq, _, value = text.partition(":")
    manifest_path = layout.session_manifest_path(path)
    data = manifest.read(io, manifest_path, manifest.SESSION_FORMAT)
    check_manifest(data, rules.mac, manifest_path)
    if manifest_at(data) != (int(seq), bytes.fromhex(value)):
        seal_manifest(data, rules.mac, int(seq), bytes.fromhex(value))
        io.atomic_write(manifest_path, manifest.encode(data))
    return text


def recorded_seqs(store: Store, path: str, head: int) -> set[int]:
    """The seqs whose chain values are recorded outside the log: the head, each
    checkpoint's and snapshot's seq, ``chain.at``'s."""
    io = store.io
    seqs = {head}
    try:
        seqs.update(layout.snapshot_seqs(io.listdir(layout.state_dir(path))))
    except (FileNotFoundError, FsStoreError):
        pass
    try:
        reader = store.read_session(os.path.basename(path))
        seqs.update(c.seq for c in reader.checkpoints())
    except (FileNotFoundError, FsStoreError):
        pass
    at = manifest_at_seq(io, path)
    if at is not None:
        seqs.add(at)
    return seqs


def chain_notes(rules: ChainRules) -> list[str]:
    """What the report of a chained session's repair says about its chain."""
    if rules.mac.keyed:
        return ["the repaired files were re-chained under the key: they hold only records "
                "the chain vouched for (those it could not are lost); their new values are "
                "bridged to the recorded ones in session.json"]
    return ["the repaired files were re-chained (unkeyed): the records saved by their "
            "checksums are vouched for by the chain only from the repair on; their new "
            "values are bridged to the recorded ones in session.json"]
