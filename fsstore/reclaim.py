"""Reclaim: the queue and input records of done work replaced in a session's log by
``fsstore.reclaimed`` markers (docs/FORMAT.md, section 17.2).

A work item that was completed, a dead letter that was purged and a consumed input that
was pruned have left the fold, but their records stay in the log. A vacuum
(``Session.vacuum``, under the writer lock) reclaims them:

1. ``P`` is the head. The items to keep are those of the fold at ``P`` (ready, claimed,
   dead, pending, consumed), of the base frame retention wrote (3.3) and of every
   checkpoint: a fold starting from one of those images needs every record after it.
   A ``fsstore.queue`` or ``fsstore.input`` record of a sealed segment before ``P``'s
   frame is reclaimable when every item it names is none of those (an enqueue or a
   submit names itself).
2. Before the first file changes: the log is synced, a snapshot at ``P`` is written
   (unless the newest is at ``P``), and the snapshots before it are removed: a load
   that started from one would fall back to the log start (``state.load``), and
   ``verify`` would find it holds items the log no longer shows.
3. The sealed files that hold reclaimable records are rewritten, newest first, by
   compaction's crash-safe path (``compaction.write_group``: a temp file, read back and
   compared, renamed over the old name). Each record becomes a marker of the same seq,
   in the same frame, so the frame keeps its ts and turn; the frame is padded to its old
   size, so every frame of the file keeps its place (snapshot positions, message-index
   rows and readers' positions stay valid), and its checksum is new. The frame ending at
   ``P`` and each frame ending at a checkpoint's seq stay as they are: a snapshot or
   checkpoint position names them with their checksum.

Deleted messages are reclaimed in the same rewrite (``reclaim_messages.py``): the add
and edit records of a message deleted at ``P`` (its delete at least ``message_grace``
seconds old, the message live at no checkpoint) become redacted message records, in
frames of their old size too. The delete (the tombstone) stays: the id stays taken.

In a chained session (docs/FORMAT.md 3.4, "Rewrites and bridges"), a rewritten frame
keeps its chain type, anchor and size, the files' runs are hashed again
(``chain_bridges.rechain``), and the files are staged, then the bridges from their new
chain values to the recorded ones written to session.json, then the files renamed.

A marker names the items of the record it replaced (``{"queue": [ids]}`` or
``{"inputs": [ids]}``), and a fold that meets one drops those items: a reader that read
a record of an item before a rewrite and its marker after it (any mix of old and new
files) still folds to the state at ``P``. A crash between two renames leaves such a mix
on disk, which folds the same way; the next vacuum finishes it.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgspec

from .chain_bridges import as_chained, rechain, recorded_seqs
from .compaction import (
    DEFAULT_LEVEL,
    Source,
    discard_staged,
    group_members,
    install_group,
    log_folder_lock,
    sealed_sources,
    stage_group,
    write_group,
)
from .errors import CorruptionError, Finding, FormatVersionError, FsStoreError
from .fsio import FileIO
from .log import LogReader
from .log_format import (
    CHAIN_FIELDS,
    FRAME_CHAIN_START,
    FRAME_CHAINED,
    FRAME_EVENTS,
    FRAME_HEADER_SIZE,
    MAX_FRAME_PAYLOAD,
    TRAILER_SIZE,
    encode_frame,
    frame_end,
    refuse_msgpack_ext,
)
from .reclaim_messages import MESSAGE_MARKER, reclaimable_messages, redact
from .segment_file import encode_compacted
from .snapshot import CheckpointDir, SnapshotDir
from .state import StateImage, start_image
from .turns import MESSAGE_RECORD, RECLAIMED_RECORD
from .work import (
    INPUT_RECORD,
    QUEUE_RECORD,
    Enqueue,
    InputRecord,
    Purge,
    QueueRecord,
    Submit,
)

__all__ = ["RECLAIM_KINDS", "Reclaimed", "ReclaimTarget", "reclaim_records"]

#: The report kind (``VacuumReport``) of each record kind a reclaim replaces (message
#: records are redacted, and counted by message, not by record).
RECLAIM_KINDS = {QUEUE_RECORD: "queue_records", INPUT_RECORD: "input_records",
                 MESSAGE_RECORD: "message_tombstones"}
#: The key of a marker's data naming the items of the record it replaced.
_MARKER_KEY = {QUEUE_RECORD: "queue", INPUT_RECORD: "inputs"}
#: The vacuum waits this long for a compaction or fork of the session to end.
LOCK_TIMEOUT = 60.0

# The frame header of log_format.py (docs/FORMAT.md, section 3): crc, length, first
# seq, event count, frame type.
_FRAME_HEADER = struct.Struct("<IIQII")
_payload_decoder = msgspec.msgpack.Decoder(type=tuple[float, int, list[msgspec.Raw]],
                                           ext_hook=refuse_msgpack_ext)
_entry_decoder = msgspec.msgpack.Decoder(type=tuple[str, msgspec.Raw])
_queue_decoder = msgspec.msgpack.Decoder(type=QueueRecord, ext_hook=refuse_msgpack_ext)
_input_decoder = msgspec.msgpack.Decoder(type=InputRecord, ext_hook=refuse_msgpack_ext)
_encoder = msgspec.msgpack.Encoder()
_KINDS = (QUEUE_RECORD.encode(), INPUT_RECORD.encode())
#: The frames whose records a reclaim replaces: plain and chained event frames.
_REWRITTEN = frozenset({FRAME_EVENTS, FRAME_CHAINED, FRAME_CHAIN_START})


@dataclass(frozen=True)
class ReclaimTarget:
    """What a session's writer hands a reclaim, under its writer lock: the log and its
    head ``P``, the fold at ``P``, the snapshots and checkpoints, and how to sync the
    log and write a snapshot at ``P`` (returning its seq). A vacuum's target
    (``vacuum.SessionVacuum``) is one."""

    io: FileIO
    path: str
    log: LogReader
    head: int
    uid: int
    window: int
    snapshots: SnapshotDir
    checkpoints: CheckpointDir
    fold: Callable[[], StateImage]
    sync: Callable[[], None]
    snapshot: Callable[[], int]


@dataclass
class Reclaimed:
    """What a reclaim replaced (or, in a dry run, would replace): records by report
    kind (for ``message_tombstones``: the messages redacted), the bytes the log files
    shrank by (shared between the kinds by the bytes of the records each lost), the
    files rewritten, and the snapshots removed (path, size)."""

    records: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        RECLAIM_KINDS.values(), 0))
    bytes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        RECLAIM_KINDS.values(), 0))
    files: int = 0
    snapshots: list[tuple[str, int]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    messages: set[str] = field(default_factory=set)


def reclaim_records(target: ReclaimTarget, *, dry_run: bool = False,
                    level: int = DEFAULT_LEVEL, message_grace: float = 0.0,
                    now: float | None = None, bridge: Bridge | None = None) -> Reclaimed:
    """Reclaim the records of done work and of messages deleted at least
    ``message_grace`` seconds before ``now`` in the sealed files of ``target``'s log
    (see the module's docstring). Problems that stop it (a damaged checkpoint, a file
    that does not read back) are findings; whatever was rewritten before stays, whole.
    A chained log's rewritten files are re-chained, and ``bridge`` writes the bridges
    from their new values to those recorded elsewhere (chain_bridges.py)."""
    out = Reclaimed()
    try:
        queue, inputs, pinned = _kept_items(target)
    except (FsStoreError, OSError) as exc:
        out.findings.append(_finding(exc, target.path, "queue, input and message records "
                                     "left in place: what the checkpoints hold is unknown"))
        return out
    deleted_before = (time.time() if now is None else now) - message_grace
    try:
        messages = reclaimable_messages(target.log, target.head, target.checkpoints,
                                        deleted_before)
    except (FsStoreError, OSError) as exc:
        out.findings.append(_finding(exc, target.path, "deleted messages left in place: "
                                     "the messages to keep are unknown"))
        messages = frozenset()
    plan = _Keep(queue, inputs, messages, pinned)
    try:
        with log_folder_lock(target.log.path, LOCK_TIMEOUT):
            _rewrite(target, plan, out, dry_run, level, bridge)
    except (FsStoreError, OSError) as exc:
        out.findings.append(_finding(exc, target.log.path, "reclaim of queue, input and "
                                     "message records stopped"))
    out.records[RECLAIM_KINDS[MESSAGE_RECORD]] = len(out.messages)
    return out


class _Keep(NamedTuple):
    """The queue and input items to keep, the deleted messages to redact, and the seqs
    a checkpoint's position names (the frames ending there stay as they are)."""

    queue: frozenset[int]
    inputs: frozenset[int]
    messages: frozenset[str] = frozenset()
    pinned: frozenset[int] = frozenset()

    @property
    def markers(self) -> tuple[bytes, ...]:
        """The bytes a frame holding a record to replace holds."""
        return _KINDS + (MESSAGE_MARKER,) if self.messages else _KINDS


def _kept_items(target: ReclaimTarget
                ) -> tuple[frozenset[int], frozenset[int], frozenset[int]]:
    """The ids of the items a fold may hold: those of the fold at ``P``, of the base
    frame and of every checkpoint; and the checkpoints' seqs."""
    images = [target.fold()]
    _live, log_start = target.log.live_segments()
    if target.log.base_of(log_start) is not None:
        images.append(start_image(target.log, log_start, target.window))
    checkpoints = target.checkpoints
    pinned = set()
    for checkpoint_id in checkpoints.ids():
        path = checkpoints.file_path(checkpoint_id)
        try:
            file = checkpoints.read(path)
        except FileNotFoundError:
            continue  # deleted meanwhile
        images.append(StateImage.from_file(file, target.window, path))
        pinned.add(file.header.seq)
    return (frozenset(i for image in images for i in image.work.items),
            frozenset(i for image in images for i in image.inputs.items), frozenset(pinned))


#: What writes bridges ((new, old) chain values) to session.json (chain_bridges.py).
Bridge = Callable[[list[tuple[bytes, bytes]]], None]


def _rewrite(target: ReclaimTarget, keep: _Keep, out: Reclaimed, dry_run: bool,
             level: int, bridge: Bridge | None = None) -> None:
    reader = target.log
    sources, _leftovers = sealed_sources(reader)
    prepared = False
    rules = reader.chain
    # A chained log's files are staged first, the bridges written, then the files
    # renamed (chain_bridges.py says why that order).
    staged: list[tuple[Source, str]] = []
    pairs: list[tuple[bytes, bytes]] = []
    recorded: set[int] = set()
    # Newest first: a reader going forward that reads a file written by this reclaim
    # reads every later file as written by it too.
    for source in reversed(sources):
        if source.plain_bytes == 0:
            continue
        members = group_members(reader, [source])
        changed: list[tuple[int, bytes]] = []
        lost: dict[str, list[int]] = {}  # report kind: [records, their bytes]
        redacted: set[str] = set()
        for first, frames in members:
            changed.append((first, _replace(frames, keep, target.head, lost, redacted)))
        if not lost:
            continue
        if not dry_run and not prepared:
            _prepare(target, out)
            prepared = True
        elif dry_run and not prepared:
            out.snapshots = _older_snapshots(target)
            prepared = True
        if dry_run:
            header = reader.read_header(source.first)
            uid = target.uid
            if rules is not None:
                # re-chained as the real run writes them: the values a rewrite leaves
                # as zeros until then compress far better than the hashes replacing them
                changed = rechain(rules, changed, members).members
                uid = header.uid
            written = len(encode_compacted(source.first, header.log_start, uid, changed,
                                           level))
        elif rules is not None:
            if not recorded:
                recorded = recorded_seqs(target, keep.pinned)
            redo = rechain(rules, changed, members)
            changed = redo.members
            ends = recorded | {redo.link_out()}
            pairs += [(new, old) for seq, (old, new) in sorted(redo.changed.items())
                      if seq in ends]
            temp, written = stage_group(target.io, reader, target.path, [source], changed,
                                        target.uid, level)
            staged.append((source, temp))
        else:
            written = write_group(target.io, reader, target.path, [source], changed,
                                  target.uid, level)
        out.files += 1
        out.messages |= redacted
        _share(out, lost, source, written)
    if staged:
        _install(target, staged, pairs, bridge)


def _install(target: ReclaimTarget, staged: list[tuple[Source, str]],
             pairs: list[tuple[bytes, bytes]], bridge: Bridge | None) -> None:
    """Put a chained log's staged files in place: the bridges first, in session.json
    (a crash before that leaves the log as it was), then the renames, newest first."""
    try:
        if pairs:
            if bridge is None:
                raise FsStoreError(f"{target.path}: a rewrite of a chained log needs the "
                                   "session's writer to write its bridges")
            bridge(pairs)
    except BaseException:
        for _source, temp in staged:
            discard_staged(target.io, temp)
        raise
    for index, (source, temp) in enumerate(staged):
        try:
            install_group(target.io, target.log, [source], temp)
        except BaseException:
            for _source, left in staged[index + 1:]:
                discard_staged(target.io, left)
            raise


def _prepare(target: ReclaimTarget, out: Reclaimed) -> None:
    """Step 2 of the module's docstring: what must be durable before a file changes."""
    target.sync()
    older = _older_snapshots(target)
    seqs = target.snapshots.seqs()
    if not seqs or seqs[-1] < target.head:
        target.snapshot()
    removed = []
    for path, size in older:
        # gone already when the snapshot just written pruned it (SnapshotPolicy.keep)
        target.io.unlink_if_there(path)
        removed.append((path, size))
    if removed:
        target.io.fsync_dir(target.snapshots.path)
    out.snapshots = removed


def _older_snapshots(target: ReclaimTarget) -> list[tuple[str, int]]:
    """The snapshots before ``P`` (path, size). A damaged one, or one of a newer format,
    stays, as every vacuum leaves it (the snapshot step reports it; loads skip it)."""
    found = []
    for seq in target.snapshots.seqs():
        if seq < target.head:
            path = target.snapshots.file_path(seq)
            try:
                target.snapshots.read(path, with_body=False)
                found.append((path, os.path.getsize(path)))
            except (FileNotFoundError, CorruptionError, FormatVersionError):
                continue
    return found


def _share(out: Reclaimed, lost: dict[str, list[int]], source: Source, written: int
           ) -> None:
    """Count the records replaced in one file, and share the bytes it shrank by between
    the kinds, by the bytes of the records each lost."""
    saved = source.disk_bytes - written
    total = sum(nbytes for _records, nbytes in lost.values())
    kinds = sorted(lost)
    given = 0
    for index, kind in enumerate(kinds):
        records, nbytes = lost[kind]
        share = saved - given if index == len(kinds) - 1 else saved * nbytes // total
        if kind != RECLAIM_KINDS[MESSAGE_RECORD]:  # messages: counted by id
            out.records[kind] += records
        out.bytes[kind] += share
        given += share


def _replace(frames: bytes, keep: _Keep, head: int, lost: dict[str, list[int]],
             redacted: set[str]) -> bytes:
    """``frames`` (one segment's, checked) with the reclaimable records of each frame
    replaced by markers (or redacted), each frame at its old size; ``frames`` itself
    when nothing changed. Counts the records replaced, and their bytes, in ``lost``,
    and adds the ids of the messages redacted to ``redacted``."""
    markers = keep.markers
    if not any(kind in frames for kind in markers):
        return frames  # no record of a kind to replace at all: nothing to decode
    parts: list[bytes] = []
    off = done = 0
    view = memoryview(frames)
    while off + FRAME_HEADER_SIZE <= len(frames):
        _crc, length, first_seq, count, frame_type = _FRAME_HEADER.unpack_from(frames, off)
        size = frame_end(0, length, frame_type)
        start = off + FRAME_HEADER_SIZE
        payload = view[start:start + length]
        # The frame ending at P stays, and each frame ending at a checkpoint's seq: a
        # snapshot at P or the checkpoint names it (its position, with its crc).
        last = first_seq + count - 1
        if (frame_type in _REWRITTEN and last < head and last not in keep.pinned
                and any(frames.find(kind, start, start + length) != -1 for kind in markers)):
            # a chained frame is rewritten as a plain one of its size less its chain
            # fields, then given them back (chain_bridges.rechain fills its value)
            extra = CHAIN_FIELDS.get(frame_type, 0)
            frame = _frame_with_markers(payload, first_seq, count, size - extra, keep,
                                        lost, redacted)
            if frame is not None and extra:
                frame = as_chained(frame, view[off:off + size])
            if frame is not None:
                parts.append(frames[done:off])
                parts.append(frame)
                done = off + size
        off += size
    if not parts:
        return frames
    parts.append(frames[done:])
    return b"".join(parts)


def _frame_with_markers(payload: memoryview, first_seq: int, count: int, size: int,
                        keep: _Keep, lost: dict[str, list[int]], redacted: set[str]
                        ) -> bytes | None:
    """The frame of ``payload`` with its reclaimable records replaced by markers, padded
    to ``size`` bytes; None when none is reclaimable (or the markers would not fit)."""
    try:
        ts, turn, raw = _payload_decoder.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None  # the scan decodes what it reads: this frame has another shape
    if len(raw) != count:
        return None
    entries: list[Any] = list(raw)
    replaced: list[tuple[int, str, int]] = []  # (index, report kind, bytes)
    ids: list[str] = []
    for index, entry in enumerate(raw):
        seq = first_seq + index
        marker = _marker_for(entry, seq, keep)
        if marker is not None:
            entries[index] = marker[1]
            replaced.append((index, marker[0], len(entry)))
            continue
        redaction = _redaction_for(entry, keep.messages)
        if redaction is not None:
            entries[index] = redaction
            saved = len(entry) - len(_encoder.encode(redaction))
            replaced.append((index, RECLAIM_KINDS[MESSAGE_RECORD], max(saved, 1)))
            ids.append(redaction[1]["message"]["id"])
    if not replaced:
        return None
    frame = _padded_frame(first_seq, ts, turn, entries, size, replaced[0][0])
    if frame is None:
        return None  # keeping the records is always correct (section 17.2)
    for _index, kind, nbytes in replaced:
        tally = lost.setdefault(kind, [0, 0])
        tally[0] += 1
        tally[1] += nbytes
    redacted.update(ids)
    return frame


def _redaction_for(entry: msgspec.Raw, reclaimable: frozenset[str]
                   ) -> tuple[str, dict[str, Any]] | None:
    """The redacted record replacing the message record ``entry``, or None when it
    stays (``reclaim_messages.redact``)."""
    if not reclaimable:
        return None
    try:
        kind, data = _entry_decoder.decode(entry)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if kind != MESSAGE_RECORD:
        return None
    redacted = redact(data, reclaimable)
    return None if redacted is None else (MESSAGE_RECORD, redacted)


def _marker_for(entry: msgspec.Raw, seq: int, keep: _Keep
                ) -> tuple[str, tuple[str, dict[str, Any]]] | None:
    """(the report kind, the marker) replacing the record ``entry`` at ``seq``, or None
    when it stays: it is not a queue or input record, it does not decode as one (a
    newer fsstore's, or a hand's), or it names an item to keep."""
    try:
        kind, data = _entry_decoder.decode(entry)
        if kind == QUEUE_RECORD:
            record = _queue_decoder.decode(data)
            ids = ([seq] if isinstance(record, Enqueue) else list(record.ids)
                   if isinstance(record, Purge) else [record.id])
            kept = keep.queue
        elif kind == INPUT_RECORD:
            found = _input_decoder.decode(data)
            ids = [seq] if isinstance(found, Submit) else list(found.ids)
            kept = keep.inputs
        else:
            return None
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
        return None
    if any(item_id in kept for item_id in ids):
        return None
    return RECLAIM_KINDS[kind], (RECLAIMED_RECORD, {_MARKER_KEY[kind]: ids})


def _str_header(n: int) -> int:
    """The bytes of a msgpack str header for a string of ``n`` bytes."""
    return 1 if n < 32 else 2 if n < 256 else 3 if n < 65536 else 5


def _padded_frame(first_seq: int, ts: float, turn: int, entries: list[Any], size: int,
                  pad_at: int) -> bytes | None:
    """``entries`` encoded as a frame of exactly ``size`` bytes: the marker at
    ``pad_at`` gains a ``pad`` string of spaces to fill what the records left. None
    when the entries do not fit."""
    # A frame of payload length L is ((24 + L + 7) & ~7) + 8 bytes: L in [lo, hi].
    hi = size - FRAME_HEADER_SIZE - TRAILER_SIZE
    lo = hi - 7
    length = len(_encoder.encode((ts, turn, entries)))
    if length > hi:
        return None
    if length < lo:
        # "pad" (4 bytes) and the string's header and bytes; the map stays a fixmap
        need = range(lo - length, hi - length + 1)
        fill = next((n for n in range(max(need.start - 9, 0), need.stop)
                     if 4 + _str_header(n) + n in need), None)
        if fill is None:
            return None
        kind, data = entries[pad_at]
        entries = [*entries[:pad_at], (kind, {**data, "pad": " " * fill}),
                   *entries[pad_at + 1:]]
    frame = encode_frame(first_seq, ts, turn, entries, MAX_FRAME_PAYLOAD, check=False)
    return frame if len(frame) == size else None


def _finding(exc: BaseException, path: str, what: str) -> Finding:
    return Finding("problem", getattr(exc, "path", None) or path,
                   getattr(exc, "offset", None), f"{what}: {exc}")
