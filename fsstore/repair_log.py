"""Repair of a damaged session, second half: the rewrite of its log from what salvage
saved (docs/FORMAT.md, section 7.6).

:func:`repair_session` takes the session's writer lock, plans the repair (salvage, and
the copy of every damaged file aside: ``repair.plan_repair``), then replaces each damaged
segment file by one that verifies. A segment file stands for the seqs from its name to
the next file's name (the last: to the head), so a replacement covers exactly the seqs
of the file it replaces: its saved records, and for each lost seq an
``fsstore.lost`` record (a record of no turn, which no caller reads: seqs stay gapless
and a lost seq is never reused). Each replacement is written whole, fsynced and renamed
over the damaged file, so a crash between two leaves a session still damaged in the
files not yet replaced, and a second repair finishes it.

What the lost records held is gone: the state after a repair is the fold of the records
that survived. Snapshots of seqs at or after the first loss would disagree with it, and
are moved into the ``.repair-`` folder with the damaged files; checkpoints are the
user's and stay (``verify`` notes that the log before them lost records). The message
index is made again from the log.

In a session with a hash chain (docs/FORMAT.md 3.4) the replacements are re-chained and
their new chain values bridged to the recorded ones, in the order a vacuum keeps
(``repair_chain.py``); a keyed chain needs its key (ChainKeyRequired, nothing changed),
and saves only the records its values vouch for.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from . import layout, manifest
from .errors import FormatVersionError, FsStoreError, SessionNotFound
from .identity import NO_UID, from_manifest
from .log import LogReader
from .log_format import DEFAULT_MAX_RECORD_BYTES, Event, encode_frame
from .repair import Gap, RepairPlan, plan_repair
from .repair_chain import (
    Rewrite,
    chain_notes,
    chain_rules,
    install,
    recorded_seqs,
    seal_at_head,
    vouch,
)
from .salvage import LostRange, SeqRange
from .segment_header import SEGMENT_HEADER_SIZE, encode_segment_header, mark_segment_header
from .turns import LOST_RECORD
from .writer_access import acquire_writer_lock

if TYPE_CHECKING:
    from .chain_check import ChainRules
    from .store import Store

#: Lost records per frame (a frame of them stays far below the record size limit).
_LOST_PER_FRAME = 10_000


@dataclass
class RepairReport:
    """What a repair did: the seqs saved and lost, the files it replaced and set aside,
    and where the damaged files were copied. ``repaired`` is False when there was
    nothing to repair (or, with ``dry_run``, nothing was changed)."""

    session: str
    saved: list[SeqRange]
    lost: list[LostRange]
    repaired: bool = False
    dry_run: bool = False
    head: int = 0
    aside: str | None = None
    replaced: list[str] = field(default_factory=list)
    set_aside: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: A chained session's ``head_hash`` before and after the repair (None without a
    #: chain, or when it did not read): a new value when the head's file was rewritten.
    head_hash_before: str | None = None
    head_hash_after: str | None = None
    #: What a reader of the report should know (a chained session's: what the repaired
    #: chain vouches for).
    notes: list[str] = field(default_factory=list)

    @property
    def head_hash_changed(self) -> bool:
        return self.head_hash_before != self.head_hash_after

    def to_dict(self) -> dict[str, Any]:
        return {"session": self.session, "repaired": self.repaired, "dry_run": self.dry_run,
                "head": self.head, "aside": self.aside,
                "saved": [[r.first, r.last] for r in self.saved],
                "lost": [[r.first, r.last] for r in self.lost],
                "lost_causes": [list(r.causes) for r in self.lost],
                "replaced": self.replaced, "set_aside": self.set_aside,
                "head_hash_before": self.head_hash_before,
                "head_hash_after": self.head_hash_after, "notes": self.notes,
                "seconds": self.seconds}


def repair_session(store: Store, session_id: str, *, dry_run: bool = False,
                   lock_timeout: float = 0.0,
                   on_segment: Callable[[int], object] | None = None) -> RepairReport:
    """Repair session ``session_id`` (see the module docstring) and report what was saved
    and lost. With ``dry_run`` nothing is written or copied: the report says what a
    repair would save and lose. Raises SessionLocked while a writer has it open (after
    ``lock_timeout`` seconds), SessionNotFound when there is no such session.
    ``on_segment`` is called with each segment's name once salvage has read it."""
    started = time.monotonic()
    path = layout.session_dir(store.path, session_id)
    if not store.io.exists(layout.session_manifest_path(path)):
        raise SessionNotFound(f"no session {session_id!r} at {path}")
    # a chained session's rules: ChainKeyRequired without a keyed chain's key, before
    # anything is read or copied (repair_chain.py)
    rules = chain_rules(store, path)
    lock = acquire_writer_lock(path, session_id, lock_timeout)
    try:
        before = _head_hash(store, session_id) if rules is not None else None
        if dry_run:
            from .salvage import salvage_session

            salvaged = salvage_session(store.io, path, session_id, check_files=False,
                                       on_segment=on_segment, chain_key=store.chain_key)
            if rules is not None:
                vouch(rules, salvaged)
            return RepairReport(session_id, salvaged.saved, salvaged.lost, dry_run=True,
                                head=_known_head(store, path, salvaged.saved, salvaged.lost),
                                seconds=round(time.monotonic() - started, 6),
                                head_hash_before=before, head_hash_after=before)
        plan = plan_repair(store, session_id, on_segment=on_segment,
                           vouch=None if rules is None else partial(vouch, rules))
        report = RepairReport(session_id, plan.saved, plan.lost, aside=plan.aside,
                              head_hash_before=before, head_hash_after=before)
        if plan.needed:
            _rewrite(store, path, plan, report, rules)
            report.repaired = True
        else:
            report.head = plan.saved[-1].last if plan.saved else 0
    finally:
        lock.release()
    report.seconds = round(time.monotonic() - started, 6)
    return report


def _refuse_rewriting_a_base(store: Store, path: str) -> None:
    """A rewrite of the log's first file would write its saved records as events and
    lose the base frame that stands for the history retention dropped (FORMAT.md 3.3),
    and with it the state: refused, changing nothing. Damage in later files is repaired
    as in any log; the first file is kept as it is."""
    try:
        base = LogReader(store.io, layout.log_dir(path)).history_base()
    except (FsStoreError, OSError):
        return  # the base itself is damaged or missing: nothing of it to keep
    if base is not None:
        raise FormatVersionError(
            f"{base.path}: the log starts with a base record (history up to seq "
            f"{base.seq} was dropped by retention), which this fsstore's repair cannot "
            "rewrite; nothing was changed: copy the damaged files aside and restore them "
            "from a backup")


def _known_head(store: Store, path: str, saved: list[SeqRange],
                lost: list[LostRange]) -> int:
    """The highest seq the session is known to have had: its last saved or lost seq, or
    one a snapshot or checkpoint names (a lost tail of unknown length stops there, so
    no seq any file of the session names is reused)."""
    head = max([r.last for r in saved] + [r.last for r in lost if r.last is not None] + [0])
    try:
        head = max([head, *layout.snapshot_seqs(store.io.listdir(layout.state_dir(path)))])
    except (FileNotFoundError, FsStoreError):
        pass
    try:
        head = max([head, *(c.seq for c in store.read_session(
            os.path.basename(path)).checkpoints())])
    except (FileNotFoundError, FsStoreError):
        pass
    return head


def _head_hash(store: Store, session_id: str) -> str | None:
    """The session's ``head_hash``, None when it does not read (its tail damaged)."""
    try:
        return store.read_session(session_id).head_hash
    except (FsStoreError, OSError):
        return None


def _rewrite(store: Store, path: str, plan: RepairPlan, report: RepairReport,
             rules: ChainRules | None = None) -> None:
    io = store.io
    log_path = layout.log_dir(path)
    manifest_path = layout.session_manifest_path(path)
    identity = from_manifest(manifest.read(io, manifest_path, manifest.SESSION_FORMAT),
                             manifest_path)
    uid = NO_UID if identity is None else identity.uid
    head = _known_head(store, path, plan.saved, plan.lost)
    report.head = head
    log_start = plan.report.log_start
    files = sorted(s for s in layout.segment_seqs(io.listdir(log_path)) if s >= log_start)
    if not files or files[0] != log_start:
        files = [log_start, *[s for s in files if s != log_start]]
    records = list(_with_lost_tail(plan, head))
    damaged = set(plan.report.damaged_files())
    first_lost = min((r.first for r in plan.lost), default=head + 1)
    rewrites: list[tuple[str, int, int, list[Event | Gap]]] = []
    for index, first in enumerate(files):
        end = files[index + 1] if index + 1 < len(files) else head + 1
        segment_path = os.path.join(log_path, layout.segment_name(first))
        held = [r for r in records if _first(r) < end and _last(r) >= first]
        if segment_path not in damaged and not any(isinstance(r, Gap) for r in held) and (
                io.exists(segment_path)):
            continue
        if first == log_start:
            _refuse_rewriting_a_base(store, path)
        rewrites.append((segment_path, first, end, held))
    if rules is not None:
        # re-chained, bridged, then renamed in (repair_chain.py)
        report.replaced += install(store, path, rules, plan.report,
                                   [Rewrite(*item) for item in rewrites], log_start, uid,
                                   recorded_seqs(store, path, head))
        report.notes += chain_notes(rules)
    for segment_path, first, end, held in rewrites if rules is None else ():
        io.atomic_write(segment_path, _segment(first, log_start, uid, held, first, end))
        report.replaced.append(segment_path)
    hint = layout.tail_hint_path(log_path)
    if io.exists(hint):
        io.unlink(hint)  # only a hint: readers list log/ without it
    _set_aside_snapshots(store, path, plan, first_lost, report)
    index_path = layout.message_index_path(path)
    if io.exists(index_path):
        io.unlink(index_path)  # a cache: made again from the repaired log
    io.fsync_dir(path)
    if rules is not None:
        report.head_hash_after = seal_at_head(io, path, rules)


def _with_lost_tail(plan: RepairPlan, head: int) -> list[Event | Gap]:
    records = list(plan.records())
    last = max((_last(r) for r in records), default=plan.report.log_start - 1)
    if head > last:
        records.append(Gap(last + 1, head))  # lost at the end, up to the known head
    return records


def _first(record: Event | Gap) -> int:
    return record.seq if isinstance(record, Event) else record.first


def _last(record: Event | Gap) -> int:
    return record.seq if isinstance(record, Event) else record.last


def _segment(name: int, log_start: int, uid: int, records: list[Event | Gap], first: int,
             end: int) -> bytes:
    """A plain segment of seqs ``first`` to ``end - 1``: each run of saved records of one
    ts and turn as a frame, each lost seq as an ``fsstore.lost`` record (in the turn
    and at the time of the record before it, as turns never go back)."""
    frames: list[bytes] = []
    ts, turn = 0.0, 0
    batch: list[Event] = []

    def flush() -> None:
        if batch:
            frames.append(encode_frame(batch[0].seq, batch[0].ts, batch[0].turn,
                                       [(e.kind, e.data) for e in batch],
                                       DEFAULT_MAX_RECORD_BYTES << 2, check=False))
            batch.clear()

    for record in records:
        if isinstance(record, Event):
            if record.seq < first or record.seq >= end:
                continue
            if batch and (record.ts, record.turn) != (batch[0].ts, batch[0].turn):
                flush()
            batch.append(record)
            ts, turn = record.ts, max(turn, record.turn)
            continue
        flush()
        seq = max(record.first, first)
        while seq <= min(record.last, end - 1):
            count = min(_LOST_PER_FRAME, min(record.last, end - 1) - seq + 1)
            frames.append(encode_frame(seq, ts, turn, [(LOST_RECORD, {})] * count,
                                       DEFAULT_MAX_RECORD_BYTES, check=False))
            seq += count
    flush()
    body = b"".join(frames)
    header = encode_segment_header(name, log_start, uid)
    # written whole and fsynced before it gets its name: every frame in it is synced
    return mark_segment_header(header[:52], SEGMENT_HEADER_SIZE + len(body)
                               if body else 0) + body


def _set_aside_snapshots(store: Store, path: str, plan: RepairPlan, first_lost: int,
                         report: RepairReport) -> None:
    """Move the snapshots of seqs at or after the first lost one into the repair folder:
    they hold what the lost records did, which the repaired log's fold lacks."""
    io = store.io
    folder = layout.state_dir(path)
    try:
        names = io.listdir(folder)
    except (FileNotFoundError, FsStoreError):
        return
    aside = plan.aside
    for seq in layout.snapshot_seqs(names):
        if seq < first_lost:
            continue
        name = layout.snapshot_name(seq)
        source = os.path.join(folder, name)
        if aside is not None:
            target_folder = os.path.join(aside, "state")
            if not io.exists(target_folder):
                io.mkdir(target_folder)
            io.rename(source, os.path.join(target_folder, name))
            io.fsync_dir(target_folder)
        else:
            io.unlink(source)
        report.set_aside.append(source)
    io.fsync_dir(folder)
