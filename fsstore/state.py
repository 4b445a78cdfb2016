"""A session's state: a dict folded from the log's ``fsstore.state`` records.

The log is the authority. Every state change is a record in it, in the same batch as
the events it was committed with, so the state at any seq is the fold of the records up
to that seq. Snapshot files (``snapshot.py``) are a cache of that fold: loading the state
is the newest snapshot that holds up plus a replay of the records after it.

A state record's data (docs/FORMAT.md, section 11)::

    {"ops": [op, ...], "commit": COMMIT_ID?, "events": N?}
    op = ["set", KEY, VALUE] | ["delete", KEY] | ["merge", PATCH]

``merge`` applies a JSON merge patch (RFC 7386) to the whole state. ``commit`` and
``events`` make a commit idempotent: the N events before the record belong to it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, NamedTuple

import msgspec

from . import chain_bindings
from .errors import CorruptionError, Finding, FormatVersionError, InvalidState, SeqOutOfRange
from .fsio import FileIO
from .log import LogPosition, LogReader
from .log_format import Base, Event, refuse_msgpack_ext
from .snapshot import SnapshotDir, SnapshotFile
from .turns import MESSAGE_RECORD, RECLAIMED_RECORD, TURN_FINISHED
from .usage import UsageBody, UsageFold
from .work import INPUT_RECORD, QUEUE_RECORD, InputState, RecordError, WorkState, decode_record

logger = logging.getLogger("fsstore")

STATE_RECORD = "fsstore.state"
#: Frames holding none of the store's own records are skipped unread by a state replay.
RECORD_MARKER = b"fsstore."
#: The record kinds an image folds: the state, the work queue, the turn inputs, the
#: usage of messages and turns, and the markers of reclaimed queue and input records.
FOLDED_KINDS = frozenset((STATE_RECORD, QUEUE_RECORD, INPUT_RECORD, MESSAGE_RECORD,
                          TURN_FINISHED, RECLAIMED_RECORD))
DEFAULT_COMMIT_ID_WINDOW = 10_000

_encoder = msgspec.msgpack.Encoder()
# No extension types: a reader refuses them (docs/FORMAT.md, section 3).
_decoder = msgspec.msgpack.Decoder(ext_hook=refuse_msgpack_ext)


def copy_value(value: Any) -> Any:
    """A deep copy of a stored value, as the log would give it back (tuples become lists)."""
    return _decoder.decode(_encoder.encode(value))


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: dicts merge key by key, ``None`` deletes a key, any
    other value replaces. Returns the result; ``target`` is changed in place when it is a
    dict."""
    if not isinstance(patch, dict):
        return patch
    if not isinstance(target, dict):
        target = {}
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = merge_patch(target.get(key), value)
    return target


def normalize_ops(ops: list[list[Any]]) -> list[list[Any]]:
    """Check state operations and return them as the log will give them back. Raises
    InvalidState for anything a replay could not apply the same way."""
    for op in ops:
        name = op[0]
        if name in ("set", "delete") and not isinstance(op[1], str):
            raise InvalidState(f"state keys must be strs, not {type(op[1]).__name__}")
        if name == "merge" and not isinstance(op[1], dict):
            raise InvalidState(f"a state merge patch must be a dict, not {type(op[1]).__name__}")
        if name == "merge" and not all(isinstance(k, str) for k in op[1]):
            raise InvalidState("state keys must be strs")
    try:
        normalized: list[list[Any]] = _decoder.decode(_encoder.encode(ops))
        return normalized
    except (TypeError, ValueError, OverflowError, RecursionError, msgspec.DecodeError) as exc:
        raise InvalidState(f"state value cannot be stored as msgpack: {exc}") from None


# --- the typed decoders of state records and snapshot bodies --------------------------------


class SetOp(msgspec.Struct, array_like=True, tag="set", frozen=True):
    key: str
    value: Any


class DeleteOp(msgspec.Struct, array_like=True, tag="delete", frozen=True):
    key: str


class MergeOp(msgspec.Struct, array_like=True, tag="merge", frozen=True):
    patch: dict[str, Any]


class StateRecord(msgspec.Struct, frozen=True):
    """An ``fsstore.state`` record's data; unknown keys are ignored."""

    ops: list[SetOp | DeleteOp | MergeOp]
    commit: str | None = None
    events: int = 0


class ImageBody(msgspec.Struct, frozen=True):
    """What a snapshot or checkpoint body holds (docs/FORMAT.md, sections 11.1 and 17.1);
    ``queue`` and ``inputs`` are decoded by their folds."""

    state: dict[str, Any]
    commits: list[tuple[str, int, int]] = []
    queue: Any = None
    inputs: Any = None
    usage: UsageBody | None = None


class ReclaimedRecord(msgspec.Struct, frozen=True):
    """An ``fsstore.reclaimed`` marker's data (docs/FORMAT.md, section 17.2): the ids of
    the done queue items or turn inputs the record it replaced named. Other keys (the
    ``pad`` that keeps the frame's size) are ignored."""

    queue: list[int] = []
    inputs: list[int] = []


class CommitRecord(NamedTuple):
    first_seq: int
    last_seq: int


class StateImage:
    """The fold of a log's records up to ``seq``: the state, the ids of the last
    ``window`` commits, the work queue, the turn inputs and the messages' usage."""

    def __init__(self, seq: int, log_start: int, window: int = DEFAULT_COMMIT_ID_WINDOW,
                 state: dict[str, Any] | None = None,
                 commits: Iterable[tuple[str, int, int]] = (),
                 work: WorkState | None = None, inputs: InputState | None = None,
                 usage: UsageFold | None = None) -> None:
        self.seq = seq
        self.log_start = log_start
        self.window = window
        self.state: dict[str, Any] = {} if state is None else state
        self.commits: OrderedDict[str, CommitRecord] = OrderedDict(
            (cid, CommitRecord(first, last)) for cid, first, last in commits)
        self.work = work or WorkState()
        self.inputs = inputs or InputState()
        self.usage = usage or UsageFold()

    def apply_ops(self, ops: list[list[Any]]) -> None:
        """Apply normalised ops (see :func:`normalize_ops`)."""
        state = self.state
        for op in ops:
            name = op[0]
            if name == "set":
                state[op[1]] = op[2]
            elif name == "delete":
                state.pop(op[1], None)
            elif name == "merge":
                merge_patch(state, op[1])
            else:
                raise ValueError(f"unknown state operation {name!r}")

    def remember_commit(self, commit_id: str, first_seq: int, last_seq: int) -> None:
        self.commits[commit_id] = CommitRecord(first_seq, last_seq)
        self.commits.move_to_end(commit_id)
        while len(self.commits) > self.window:
            self.commits.popitem(last=False)

    def apply(self, event: Event, path: str) -> None:
        """Fold one record read from the log (one of ``FOLDED_KINDS``)."""
        data = event.data
        try:
            if event.kind == QUEUE_RECORD:
                self.work.apply(event.seq, event.ts, data)
                return
            if event.kind == INPUT_RECORD:
                self.inputs.apply(event.seq, event.ts, data)
                return
            if event.kind == MESSAGE_RECORD:
                self.usage.apply(event.ts, event.turn, data)
                return
            if event.kind == TURN_FINISHED:
                self.usage.turn_finished(event.ts, event.turn)
                return
            if event.kind == RECLAIMED_RECORD:
                self.retire(decode_record(data, ReclaimedRecord))
                return
            record = decode_record(data, StateRecord)
            self.apply_ops([[op.__struct_config__.tag, *msgspec.structs.astuple(op)]
                            for op in record.ops])
            if record.commit is not None:
                self.remember_commit(record.commit, event.seq - record.events, event.seq)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            # A checksum-valid record a writer wrote, that this fsstore cannot apply.
            raise FormatVersionError(
                f"{path}: {event.kind} record at seq {event.seq} cannot be applied ({exc}); "
                "it was written by a newer fsstore, or by hand") from None

    def retire(self, marker: ReclaimedRecord) -> None:
        """Drop the items a reclaimed record named: they were done (gone from the fold)
        when a vacuum reclaimed it. A fold that still holds one read a record of it
        from before the rewrite (a reader racing the vacuum, or an image older than
        it), and would miss the record that finished it (section 17.2)."""
        for item_id in marker.queue:
            self.work.items.pop(item_id, None)
        for item_id in marker.inputs:
            self.inputs.items.pop(item_id, None)

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "state": self.state,
            "commits": [[cid, r.first_seq, r.last_seq] for cid, r in self.commits.items()]}
        if self.work.items:
            body["queue"] = self.work.body()
        if self.inputs.items:
            body["inputs"] = self.inputs.body()
        if not self.usage.is_empty():
            body["usage"] = self.usage.body()
        return body

    @classmethod
    def from_file(cls, file: SnapshotFile, window: int, path: str) -> StateImage:
        return cls._from_body(file.body, file.header.seq, file.header.log_start, window,
                              "snapshot", "body", path=path)

    @classmethod
    def from_base(cls, base: Base, log_start: int, window: int) -> StateImage:
        """The image a base frame holds: the state at ``base.seq`` (FORMAT.md 3.3)."""
        return cls._from_body(base.image_body(), base.seq, log_start, window,
                              "base record's", "image", path=base.path,
                              offset=base.offset)

    @classmethod
    def _from_body(cls, data: Any, seq: int, log_start: int, window: int, what: str,
                   part: str, *, path: str, offset: int | None = None) -> StateImage:
        """The image ``data`` (a snapshot's body, a base frame's image) holds;
        CorruptionError naming the part of ``what`` that is malformed."""
        try:
            body = decode_record(data, ImageBody)
            part = "queue"
            work = WorkState.from_body(body.queue)
            part = "inputs"
            inputs = InputState.from_body(body.inputs)
            usage = UsageFold.from_body(body.usage)
        except RecordError as exc:
            raise CorruptionError(f"{what} {part} is malformed: {exc}", path=path,
                                  offset=offset) from None
        return cls(seq, log_start, window, body.state, body.commits, work, inputs, usage)


def start_image(reader: LogReader, log_start: int, window: int) -> StateImage:
    """The image a fold from the log start starts from: the empty state before the log
    start, or the image of the base frame the log starts with when retention dropped
    the history before it."""
    base = reader.base_of(log_start)
    if base is None:
        return StateImage(log_start - 1, log_start, window)
    return StateImage.from_base(base, log_start, window)


def dropped_before(reader: LogReader, log_start: int, seq: int) -> None:
    """Raise SeqOutOfRange when the state at ``seq`` is in history retention dropped."""
    base = reader.base_of(log_start)
    if base is not None and seq < base.seq:
        raise SeqOutOfRange(
            f"{reader.path}: the history up to seq {base.seq} was dropped by retention "
            f"(it starts at seq {base.seq + 1}); the state at seq {seq} is gone")

class Loaded(NamedTuple):
    image: StateImage
    findings: list[Finding]  # the snapshots skipped, and why


def load(
    io: FileIO, reader: LogReader, snapshots: SnapshotDir, *, until_seq: int | None = None,
    window: int = DEFAULT_COMMIT_ID_WINDOW, extra_bases: Iterable[tuple[int, str]] = (),
) -> Loaded:
    """The state at ``until_seq`` (default: the head): the newest snapshot at or before it
    that holds up, plus a replay of the state records after it.

    A snapshot holds up when its checksums match and the log still holds what it was
    folded from: the same log start, and the frame at its position (seq, offset and the
    frame's crc). One that does not is reported in the findings (and logged) and
    skipped, never trusted. ``extra_bases`` are more files to start from, as (seq, path):
    checkpoints, for a state in the past.
    """
    bases = list(extra_bases)
    moves = 0
    newer_than: int | None = None
    while True:
        try:
            return _load_once(io, reader, snapshots, until_seq, window, bases, newer_than)
        except _LogMoved as moved:
            # The log ended before its tail said: a writer cleared it meanwhile (a
            # reader takes no lock), or a segment is missing. Look again.
            short = moved
            moves += 1
            if moves == 3:
                break
        except _TooOld as too_old:
            # A vacuum reclaimed records after the image started from (section 17.2):
            # only a newer image, or the log start, folds to what the log says. Each
            # retry starts later, and the fold from the log start never raises this.
            newer_than = too_old.seq
    raise CorruptionError(
        f"the log ends at seq {short.reached} while its tail says {short.target}: a "
        "segment is missing", path=short.path)


class _TooOld(Exception):
    """A fold from the snapshot or checkpoint at ``seq`` met an ``fsstore.reclaimed``
    marker after it: the image may hold work whose finishing record was reclaimed."""

    def __init__(self, seq: int) -> None:
        super().__init__(seq)
        self.seq = seq


class _LogMoved(Exception):
    def __init__(self, reached: int, target: int, path: str) -> None:
        super().__init__(reached, target, path)
        self.reached, self.target, self.path = reached, target, path


def _load_once(
    io: FileIO, reader: LogReader, snapshots: SnapshotDir, until_seq: int | None,
    window: int, extra_bases: list[tuple[int, str]], newer_than: int | None = None,
) -> Loaded:
    _, log_start, end = reader.locate_tail()
    head = end.next_seq - 1
    target = head if until_seq is None else until_seq
    if not log_start - 1 <= target <= head:
        raise SeqOutOfRange(
            f"{reader.path}: seq {target} is outside the history the log holds "
            f"({log_start - 1} to {head}); seqs before {log_start} were cleared")
    dropped_before(reader, log_start, target)
    base = reader.base_of(log_start)
    floor = log_start - 1 if base is None else base.seq  # no image before it is usable
    if newer_than is not None:
        floor = max(floor, newer_than + 1)  # those up to it are older than a reclaim
    findings: list[Finding] = []
    bases = [(seq, snapshots.file_path(seq)) for seq in snapshots.seqs()
             if floor <= seq <= target]
    bases += [(seq, path) for seq, path in extra_bases if floor <= seq <= target]
    for _, path in sorted(bases, reverse=True):
        try:
            file = snapshots.read(path)
            image = StateImage.from_file(file, window, path)
        except FileNotFoundError:
            continue  # pruned meanwhile
        except (CorruptionError, FormatVersionError) as exc:
            findings.append(Finding("problem", path, getattr(exc, "offset", None),
                                    f"snapshot skipped, not trusted: {_reason(exc)}"))
            continue
        if image.log_start != log_start:
            findings.append(Finding(
                "note", path, None, f"snapshot skipped: it is of the log before a clear (log "
                f"start {image.log_start}, now {log_start})"))
            continue
        position = file.header.position
        if image.seq < log_start - 1 or not reader.position_holds(position, image.seq):
            findings.append(Finding(
                "note", path, None, f"snapshot skipped: the log no longer holds the record at "
                f"seq {image.seq} it was folded up to (a crash took back records that were "
                "not yet synced, and others were written since)"))
            continue
        problem = chain_bindings.link_problem(reader, position, image.seq, file.meta)
        if problem is not None:
            findings.append(Finding("problem", path, None,
                                    f"snapshot skipped, not trusted: {problem}"))
            continue
        _replay(reader, image, position, target, started_at=image.seq)
        return Loaded(image, _logged(findings))
    image = start_image(reader, log_start, window)
    if target < head:
        refuse_inside_reclaimed_work(reader, image.seq, target, head)
    _replay(reader, image, None, target)
    return Loaded(image, _logged(findings))


def refuse_inside_reclaimed_work(reader: LogReader, start: int, target: int,
                                 head: int) -> None:
    """Raise SeqOutOfRange when the state at ``target`` (folded from the log start, whose
    image is at ``start``) would miss work a vacuum reclaimed that was still open at
    ``target``: an item named by a reclaimed marker up to ``target`` and by a record
    after it (section 17.2). A fold from a snapshot or a checkpoint never meets this:
    the checkpoints' items keep their records, and the snapshots before a reclaim's
    head are removed."""
    named: set[tuple[str, int]] = set()
    for scan in reader.scans(start, target, RECLAIMED_RECORD.encode()):
        for event in scan:
            if event.kind == RECLAIMED_RECORD and event.seq <= target:
                try:
                    marker = decode_record(event.data, ReclaimedRecord)
                except RecordError:
                    continue  # the fold reports it
                named.update((QUEUE_RECORD, item) for item in marker.queue)
                named.update((INPUT_RECORD, item) for item in marker.inputs)
    if not named:
        return
    for scan in reader.scans(target, head, RECORD_MARKER):
        for event in scan:
            if event.seq <= target or event.kind not in _WORK_KINDS:
                continue
            for found in _items_named(event):
                if found in named:
                    raise SeqOutOfRange(
                        f"{reader.path}: the state at seq {target} is gone: a vacuum "
                        f"reclaimed the records of work still open there ({found[0]} item "
                        f"{found[1]}, finished later); read it at a checkpoint, or at a "
                        "seq where that work had not begun or had ended")


_WORK_KINDS = frozenset((QUEUE_RECORD, INPUT_RECORD, RECLAIMED_RECORD))


def _items_named(event: Event) -> list[tuple[str, int]]:
    """The queue items or turn inputs a record of work (or a marker) names."""
    data = event.data
    if event.kind == RECLAIMED_RECORD:
        try:
            marker = decode_record(data, ReclaimedRecord)
        except RecordError:
            return []  # the fold reports it
        return ([(QUEUE_RECORD, i) for i in marker.queue]
                + [(INPUT_RECORD, i) for i in marker.inputs])
    if not isinstance(data, dict):
        return []
    ids = data.get("ids")
    if isinstance(ids, list):
        return [(event.kind, i) for i in ids if isinstance(i, int)]
    item = data.get("id")
    return [(event.kind, item)] if isinstance(item, int) else []


def catch_up(reader: LogReader, image: StateImage, position: LogPosition, seq: int,
             target: int) -> None:
    """Fold into ``image`` (folded up to ``seq``, whose boundary is ``position``) the
    records other writers appended after it, up to ``target``."""
    image.seq = seq
    _replay(reader, image, position, target)


def _replay(reader: LogReader, image: StateImage, position: LogPosition | None,
            target: int, started_at: int | None = None) -> None:
    """Fold the state records after ``image.seq`` up to ``target`` into ``image``, reading
    from ``position`` (the boundary after ``image.seq``) when given, else by seq.
    ``started_at``: the seq of the snapshot or checkpoint the image was read from; a
    reclaimed marker after it raises _TooOld (a load then starts from a newer one)."""
    if image.seq == target:
        return
    if position is not None:
        scans = reader.scans_from(position, image.seq, target, RECORD_MARKER)
    else:
        scans = reader.scans(image.seq, target, RECORD_MARKER)
    reached, path = image.seq, reader.path
    for scan in scans:
        for event in scan:
            if event.kind in FOLDED_KINDS:
                if started_at is not None and event.kind == RECLAIMED_RECORD:
                    raise _TooOld(started_at)
                image.apply(event, scan.path)
        reached, path = scan.expect_seq - 1, scan.path
    if reached < target:
        raise _LogMoved(reached, target, path)
    image.seq = target


def _reason(exc: Exception) -> str:
    return exc.reason if isinstance(exc, CorruptionError) else str(exc)


def _logged(findings: list[Finding]) -> list[Finding]:
    for finding in findings:
        logger.warning("%s", finding)
    return findings
