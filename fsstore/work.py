"""Queued work and pending turn inputs: two folds of a session's log.

Both are records in the session's log (docs/FORMAT.md, section 17), so they commit,
survive crashes, snapshot, fork and clear exactly like the session's state: the
in-memory state here is the fold of those records, held in the same image as the state
(``state.StateImage``). Writers append the records under the session's mutex after
catching up with the log, so several processes can enqueue and claim at once.

- ``fsstore.queue`` records: ``enqueue`` (the item's id is the record's seq), ``claim``
  (the claim token is the record's seq), ``complete``, ``fail``, ``release``,
  ``dead``, ``purge``.
- ``fsstore.input`` records: ``submit``, ``claim`` (by a turn), ``consume`` (when that
  turn finishes), ``prune``.
"""

from __future__ import annotations

import functools
import heapq
import math
from collections.abc import Callable, Iterable
from typing import Any, Literal, NamedTuple, Protocol, TypeVar

import msgspec

from . import clock
from .aio import (
    AsyncTurnInputsMixin,
    AsyncTurnInputsReaderMixin,
    AsyncWorkQueueMixin,
    AsyncWorkQueueReaderMixin,
)
from .errors import ClaimLost, InvalidEvent, InvalidSetting
from .log_format import refuse_msgpack_ext
from .turns import INPUT_RECORD as INPUT_RECORD  # the kinds of work's records (FORMAT 12)
from .turns import QUEUE_RECORD as QUEUE_RECORD

READY, CLAIMED, DEAD = "ready", "claimed", "dead"
PENDING, CONSUMED = "pending", "consumed"
DEFAULT_MAX_ATTEMPTS = 3


class QueuedWork(NamedTuple):
    """An item of a session's work queue, as the log has it now."""

    id: int  # the seq of its enqueue record
    kind: str
    payload: Any
    priority: int
    status: str  # "ready", "claimed" or "dead" (done items leave the queue)
    attempts: int  # claims so far
    max_attempts: int
    worker: str | None  # the current claim's worker
    claim_expires_at: float | None
    not_before: float | None  # a retry's earliest time
    error: str | None  # the last failure
    enqueued_at: float


class ClaimedWork(NamedTuple):
    """A claim on one item: pass it to ``complete``, ``fail`` or ``release``."""

    id: int
    kind: str
    payload: Any
    token: int  # the seq of the claim record; unique to this claim
    worker: str
    expires_at: float
    attempt: int


class TurnInput(NamedTuple):
    """User input that arrived for a session, and what became of it."""

    id: int  # the seq of its submit record
    payload: Any
    status: str  # "pending", "claimed" or "consumed"
    turn: int | None  # the turn that claimed (or consumed) it
    submitted_at: float
    consumed_at: float | None


def _finite_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


# --- the typed decoders: one per kind of record and of folded item ---------------------------
#
# Records come from the log and items from snapshot bodies, so both may hold anything a
# newer fsstore or a hand wrote: they are converted to these types before they are folded,
# and a mismatch names the field (``RecordError``). Unknown keys are ignored, so a newer
# minor version may add some.

_Id = int


class _QueueOp(msgspec.Struct, tag_field="op", frozen=True):
    pass


class Enqueue(_QueueOp, tag="enqueue", frozen=True):
    kind: str
    payload: Any = None
    priority: int = 0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS


class Claim(_QueueOp, tag="claim", frozen=True):
    id: _Id
    worker: str
    expires: float


class Complete(_QueueOp, tag="complete", frozen=True):
    id: _Id
    token: _Id | None = None


class Release(_QueueOp, tag="release", frozen=True):
    id: _Id
    token: _Id | None = None


class Fail(_QueueOp, tag="fail", frozen=True):
    id: _Id
    token: _Id | None = None
    error: str | None = None
    retry_at: float | None = None


class Dead(_QueueOp, tag="dead", frozen=True):
    id: _Id
    reason: str | None = None


class Purge(_QueueOp, tag="purge", frozen=True):
    ids: list[_Id]


QueueRecord = Enqueue | Claim | Complete | Release | Fail | Dead | Purge


class _InputOp(msgspec.Struct, tag_field="op", frozen=True):
    pass


class Submit(_InputOp, tag="submit", frozen=True):
    payload: Any = None


class InputClaim(_InputOp, tag="claim", frozen=True):
    ids: list[_Id]
    turn: int


class Consume(_InputOp, tag="consume", frozen=True):
    ids: list[_Id]
    turn: int


class Prune(_InputOp, tag="prune", frozen=True):
    ids: list[_Id]


InputRecord = Submit | InputClaim | Consume | Prune


class QueueItem(msgspec.Struct, frozen=True):
    """A work item as a snapshot body holds it (docs/FORMAT.md, section 17.1)."""

    kind: str
    payload: Any
    priority: int
    max_attempts: int
    attempts: int
    status: Literal["ready", "claimed", "dead"]
    worker: str | None
    token: _Id | None
    expires: float | None
    not_before: float | None
    error: str | None
    enqueued: float

    def __post_init__(self) -> None:
        if self.status == CLAIMED and (self.expires is None or self.token is None
                                       or self.worker is None):
            raise ValueError("a claimed item lacks its claim's token, worker or expiry")


class InputItem(msgspec.Struct, frozen=True):
    """A turn input as a snapshot body holds it (docs/FORMAT.md, section 17.1)."""

    payload: Any
    status: Literal["pending", "claimed", "consumed"]
    turn: int | None
    submitted: float
    consumed: float | None

    def __post_init__(self) -> None:
        if self.status != PENDING and self.turn is None:
            raise ValueError("a claimed or consumed input lacks its turn")
        if self.status == CONSUMED and self.consumed is None:
            raise ValueError("a consumed input lacks its time")


class RecordError(ValueError):
    """A record or folded item that does not fit its type; the message names the field."""


def decode_record(data: Any, schema: Any) -> Any:
    """``data`` (a record's data, or a body) converted to ``schema``, or RecordError."""
    if isinstance(schema, type) and issubclass(schema, msgspec.Struct):
        try:
            return msgspec.convert(data, schema)
        except msgspec.ValidationError as exc:
            raise RecordError(str(exc).replace("`$.", "`").replace("`$", "`")) from None
    try:
        return msgspec.convert({"value": data}, _holder(schema)).value
    except msgspec.ValidationError as exc:
        raise RecordError(str(exc).replace("`$.value.", "`").replace("`$.value", "`")
                          ) from None


@functools.cache
def _holder(schema: Any) -> Any:
    """A Struct holding one ``schema`` value: msgspec keeps what it learned of a Struct's
    types, but works a union or a generic out again on every convert (6 us against
    0.2 us for a queue record)."""
    return msgspec.defstruct("Holder", [("value", schema)])


_FoldT = TypeVar("_FoldT", bound="_Fold")


class _Fold:
    """Items by id, folded from records; in a snapshot body as ``[[id, item], ...]``."""

    body_type: Any = None  # list[tuple[int, the item's Struct]]

    def __init__(self, items: dict[int, dict[str, Any]] | None = None) -> None:
        self.items: dict[int, dict[str, Any]] = items or {}

    def body(self) -> list[list[Any]]:
        return [[item_id, item] for item_id, item in self.items.items()]

    @classmethod
    def from_body(cls: type[_FoldT], body: Any) -> _FoldT:
        """The fold a snapshot body holds; RecordError naming the field if it is not a
        list of ``[id, item]`` pairs of this fold's item type."""
        if body is None:
            return cls()
        pairs = decode_record(body, cls.body_type)
        return cls({item_id: msgspec.structs.asdict(item) for item_id, item in pairs})


class WorkState(_Fold):
    """The fold of ``fsstore.queue`` records: items by id, and indexes for claiming."""

    body_type = list[tuple[_Id, QueueItem]]

    def __init__(self, items: dict[int, dict[str, Any]] | None = None) -> None:
        super().__init__(items)
        # Claim order: (-priority, id). Entries go stale when an item is claimed, done or
        # dead, and are dropped when they reach the top; claimed and delayed items wait in
        # their own heaps until their claim expires or their retry time comes.
        self._order: list[tuple[int, int]] = []
        self._claimed: list[tuple[float, int]] = []
        self._delayed: list[tuple[float, int]] = []
        for item_id, item in self.items.items():
            self._index(item_id, item)

    def _index(self, item_id: int, item: dict[str, Any]) -> None:
        if item["status"] == READY:
            heapq.heappush(self._order, (-item["priority"], item_id))
        elif item["status"] == CLAIMED:
            heapq.heappush(self._claimed, (item["expires"], item_id))

    def apply(self, seq: int, ts: float, data: Any) -> None:
        """Fold one ``fsstore.queue`` record; RecordError if it does not fit its type."""
        record = decode_record(data, QueueRecord)
        if isinstance(record, Enqueue):
            item: dict[str, Any] = {
                "kind": record.kind, "payload": record.payload, "priority": record.priority,
                "max_attempts": record.max_attempts, "attempts": 0, "status": READY,
                "worker": None, "token": None, "expires": None, "not_before": None,
                "error": None, "enqueued": ts}
            self.items[seq] = item
            self._index(seq, item)
            return
        if isinstance(record, Purge):
            for item_id in record.ids:
                if self.items.get(item_id, {}).get("status") == DEAD:
                    del self.items[item_id]
            return
        found = self.items.get(record.id)
        if found is None:
            return  # done or purged already: a record a replay need not apply
        item = found
        if isinstance(record, Claim):
            item.update(status=CLAIMED, token=seq, worker=record.worker,
                        expires=record.expires, attempts=item["attempts"] + 1,
                        not_before=None)
            heapq.heappush(self._claimed, (item["expires"], record.id))
        elif isinstance(record, Dead):
            item.update(status=DEAD, token=None, worker=None, expires=None,
                        error=record.reason)
        elif record.token != item["token"]:
            return  # of an earlier claim: writers refuse these, a replay ignores them
        elif isinstance(record, Complete):
            del self.items[record.id]
        elif isinstance(record, Fail):
            exhausted = item["attempts"] >= item["max_attempts"]
            item.update(status=DEAD if exhausted else READY, token=None, worker=None,
                        expires=None, error=record.error,
                        not_before=None if exhausted else _finite_or_none(record.retry_at))
            if not exhausted:
                self._requeue(record.id, item)
        else:
            item.update(status=READY, token=None, worker=None, expires=None,
                        attempts=max(item["attempts"] - 1, 0))
            self._requeue(record.id, item)

    def _requeue(self, item_id: int, item: dict[str, Any]) -> None:
        if item["not_before"] is not None:
            heapq.heappush(self._delayed, (item["not_before"], item_id))
        else:
            heapq.heappush(self._order, (-item["priority"], item_id))

    def next_claimable(self, now: float, kinds: frozenset[str] | None
                       ) -> tuple[int, dict[str, Any]] | None:
        """The item a claim at ``now`` takes: highest priority, then oldest; ready, or
        claimed under a claim that has expired."""
        items = self.items
        for heap in (self._claimed, self._delayed):
            while heap and heap[0][0] <= now:
                due, item_id = heapq.heappop(heap)
                item = items.get(item_id)
                if item is None:
                    continue
                if (item["status"] == CLAIMED and item["expires"] == due) or (
                        item["status"] == READY and item["not_before"] == due):
                    heapq.heappush(self._order, (-item["priority"], item_id))
        skipped = []
        found = None
        while self._order:
            entry = self._order[0]
            item = items.get(entry[1])
            claimable = item is not None and (
                (item["status"] == READY and (item["not_before"] or 0) <= now)
                or (item["status"] == CLAIMED and item["expires"] <= now))
            if not claimable:
                heapq.heappop(self._order)
                if item is not None and item["status"] == READY:
                    heapq.heappush(self._delayed, (item["not_before"], entry[1]))
                continue
            assert item is not None
            if kinds is not None and item["kind"] not in kinds:
                skipped.append(heapq.heappop(self._order))
                continue
            found = (entry[1], item)
            break
        for entry in skipped:
            heapq.heappush(self._order, entry)
        return found

    def view(self, item_id: int) -> QueuedWork:
        item = self.items[item_id]
        return QueuedWork(item_id, item["kind"], item["payload"], item["priority"],
                          item["status"], item["attempts"], item["max_attempts"],
                          item["worker"], item["expires"], item["not_before"], item["error"],
                          item["enqueued"])


class InputState(_Fold):
    """The fold of ``fsstore.input`` records: inputs by id, in arrival order."""

    body_type = list[tuple[_Id, InputItem]]

    def apply(self, seq: int, ts: float, data: Any) -> None:
        """Fold one ``fsstore.input`` record; RecordError if it does not fit its type."""
        record = decode_record(data, InputRecord)
        if isinstance(record, Submit):
            self.items[seq] = {"payload": record.payload, "status": PENDING,
                               "turn": None, "submitted": ts, "consumed": None}
            return
        for item_id in record.ids:
            item = self.items.get(item_id)
            if item is None:
                continue
            if isinstance(record, InputClaim):
                item.update(status=CLAIMED, turn=record.turn)
            elif isinstance(record, Consume):
                item.update(status=CONSUMED, turn=record.turn, consumed=ts)
            elif item["status"] == CONSUMED:  # prune
                del self.items[item_id]

    def claimable(self, turn: int) -> list[int]:
        """What turn ``turn`` claims: every pending input, and every input an earlier (or
        this) turn claimed and never consumed, because that turn ended without finishing,
        in arrival order."""
        return [item_id for item_id, item in self.items.items()
                if item["status"] == PENDING
                or (item["status"] == CLAIMED and item["turn"] <= turn)]

    def view(self, item_id: int) -> TurnInput:
        item = self.items[item_id]
        return TurnInput(item_id, item["payload"], item["status"], item["turn"],
                         item["submitted"], item["consumed"])


# --- the API, bound to a session ------------------------------------------------------------

MAX_KIND = 256
_payload_encoder = msgspec.msgpack.Encoder()
_payload_decoder = msgspec.msgpack.Decoder(ext_hook=refuse_msgpack_ext)


class Folds(Protocol):
    """The fold the queue and the inputs read and change (``state.StateImage`` is one)."""

    @property
    def work(self) -> WorkState: ...

    @property
    def inputs(self) -> InputState: ...


_T = TypeVar("_T")
Records = list[tuple[str, Any]]

#: What an operation hands :meth:`Ingress.run`: given the fold caught up with the log
#: and the time now, the records to append (or raise), and what turns the first seq of
#: the appended batch (0 when there are no records) into the operation's answer.
Build = Callable[[Folds, float], tuple[Records, Callable[[int], _T]]]


class FoldSource(Protocol):
    """What a listing (:class:`WorkQueueReader`, :class:`TurnInputsReader`) needs of a
    session: the fold, caught up with the log (a reader loads it afresh)."""

    def view(self) -> Folds:
        """The fold, caught up with the log."""


class Ingress(FoldSource, Protocol):
    """What :class:`WorkQueue` and :class:`TurnInputs` need of a session writer: its
    writes of queue and input records. A ``Session`` hands them one of its own
    (``session.SessionIngress``)."""

    def run(self, build: Build[_T], *, fenced: bool) -> _T:
        """One queue or input operation, as one write of the session: ``build``'s records
        appended as one batch under the session's mutex, made durable (fsynced) and
        folded before it returns. ``fenced``: a lease held elsewhere refuses it."""

    def running_turn(self) -> int:
        """The turn the session is running: the current turn, or the next one if the
        current one is finished."""

    def inputs_claimed(self, turn: int, ids: list[int]) -> None:
        """``turn`` claimed the inputs ``ids``: finishing it consumes them."""


def _claim_next(work: WorkState, entries: list[tuple[str, Any]], now: float, worker: str,
                ttl: float, kinds: frozenset[str] | None
                ) -> Callable[[int], ClaimedWork | None]:
    """Add to ``entries`` the records of claiming the next item (and of dead-lettering
    items whose claims kept expiring); return what turns the batch's first seq into the
    claim (None when nothing was claimable)."""
    while True:
        found = work.next_claimable(now, kinds)
        if found is None:
            return lambda first: None
        item_id, item = found
        if item["status"] == CLAIMED and item["attempts"] >= item["max_attempts"]:
            # Its claims keep expiring: a worker dies on it. Stop handing it out.
            record = {"op": "dead", "id": item_id,
                      "reason": f"claim expired {item['attempts']} times"}
            work.apply(0, now, record)
            entries.append((QUEUE_RECORD, record))
            continue
        entries.append((QUEUE_RECORD, {"op": "claim", "id": item_id, "worker": worker,
                                       "expires": now + ttl}))
        return functools.partial(_claimed, work, item_id, len(entries) - 1, worker)


def _claimed(work: WorkState, item_id: int, position: int, worker: str,
             first: int) -> ClaimedWork:
    """The claim the record at ``first + position`` made, once folded."""
    item = work.items[item_id]
    return ClaimedWork(item_id, item["kind"], item["payload"], first + position, worker,
                       item["expires"], item["attempts"])


def _stored(payload: Any, what: str) -> Any:
    """``payload`` as the log will give it back (tuples become lists), so the fold in
    memory is what a reader folds; InvalidEvent if msgpack cannot store it."""
    try:
        return _payload_decoder.decode(_payload_encoder.encode(payload))
    except (TypeError, ValueError, OverflowError, RecursionError, msgspec.DecodeError) as exc:
        raise InvalidEvent(f"{what} cannot be stored as msgpack: {exc}") from None


def _check_int(value: Any, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidEvent(f"{name} must be an int >= {low}, not {value!r}")
    return value


def _check_seconds(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            0 < value < 10**9):
        raise InvalidSetting(f"{name} must be a positive number of seconds, not {value!r}")
    return float(value)


class WorkQueueReader(AsyncWorkQueueReaderMixin):
    """A session's queue of work as its log has it: what ``SessionReader.queue`` lists
    (a writer's ``queue`` is a :class:`WorkQueue`, which also changes it)."""

    def __init__(self, source: FoldSource) -> None:
        self._source = source

    def items(self, status: str | None = None) -> list[QueuedWork]:
        """The items in the queue (ready, claimed, dead; or those of ``status``), oldest
        first."""
        work: WorkState = self._source.view().work
        return [work.view(i) for i in sorted(work.items)
                if status is None or work.items[i]["status"] == status]


class WorkQueue(WorkQueueReader, AsyncWorkQueueMixin):
    """A session's queue of work (wake-ups, commands), shared by every process that
    opens the session: the records are in its log, and every operation is durable
    (fsynced) when it returns.

    Items are claimed highest ``priority`` first, then oldest first. A claim lasts
    ``lease_ttl`` seconds: an item whose claim expires can be claimed again, and the old
    claim can no longer complete, fail or release it (``ClaimLost``). An item failed or
    expired ``max_attempts`` times becomes ``dead`` (kept until ``purge``).
    """

    def __init__(self, ingress: Ingress) -> None:
        super().__init__(ingress)
        self._ingress = ingress

    def enqueue(self, kind: str, payload: Any = None, *, priority: int = 0,
                max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> int:
        """Add one item; return its id."""
        return self.enqueue_many([(kind, payload)], priority=priority,
                                 max_attempts=max_attempts)[0]

    def enqueue_many(self, items: Iterable[tuple[str, Any]], *, priority: int = 0,
                     max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> list[int]:
        """Add ``(kind, payload)`` items as one batch (one fsync); return their ids."""
        _check_int(priority, "priority", -(2**31))
        _check_int(max_attempts, "max_attempts", 1)
        records = []
        for kind, payload in items:
            if not isinstance(kind, str) or not 0 < len(kind) <= MAX_KIND:
                raise InvalidEvent(f"a work item's kind is a str of 1 to {MAX_KIND} "
                                   f"characters, not {kind!r}")
            records.append((QUEUE_RECORD, {"op": "enqueue", "kind": kind,
                                           "payload": _stored(payload, "a work item's payload"),
                                           "priority": priority,
                                           "max_attempts": max_attempts}))
        if not records:
            return []

        def build(image: Folds, now: float) -> tuple[Records, Callable[[int], list[int]]]:
            return records, lambda first: list(range(first, first + len(records)))
        return self._ingress.run(build, fenced=False)

    def claim(self, worker: str, lease_ttl: float, *,
              kinds: Iterable[str] | None = None) -> ClaimedWork | None:
        """Claim the next item (of one of ``kinds``, if given) for ``lease_ttl`` seconds;
        None when nothing is claimable."""
        if not isinstance(worker, str) or not worker:
            raise InvalidEvent(f"worker must be a non-empty str, not {worker!r}")
        ttl = _check_seconds(lease_ttl, "lease_ttl")
        wanted = None if kinds is None else frozenset(kinds)

        def build(image: Folds, now: float) -> tuple[Records, Callable[[int], ClaimedWork | None]]:
            entries: list[tuple[str, Any]] = []
            return entries, _claim_next(image.work, entries, now, worker, ttl, wanted)
        return self._ingress.run(build, fenced=False)

    def _settle(self, claim: ClaimedWork, record: dict[str, Any],
                then: tuple[float, frozenset[str] | None] | None = None
                ) -> str | ClaimedWork | None:
        """Settle ``claim`` with ``record``; return the item's status after it, or with
        ``then`` (a claim's ttl and kinds), the claim that follows in the same batch."""
        if not isinstance(claim, ClaimedWork):
            raise InvalidEvent(f"expected a ClaimedWork, not {type(claim).__name__}")

        def build(image: Folds, now: float
                  ) -> tuple[Records, Callable[[int], str | ClaimedWork | None]]:
            work: WorkState = image.work
            item = work.items.get(claim.id)
            if item is None or item["token"] != claim.token:
                state = "done" if item is None else (
                    f"claimed again (token {item['token']})" if item["token"] else item["status"])
                raise ClaimLost(f"work item {claim.id}: claim {claim.token} is no longer "
                                f"current (the item is {state}); nothing was written")
            settle = {**record, "id": claim.id, "token": claim.token}
            entries: list[tuple[str, Any]] = [(QUEUE_RECORD, settle)]
            if then is None:
                return entries, lambda first: str(work.items.get(claim.id, {}).get("status",
                                                                                    "done"))
            # Settled in the image now, so that the claim in the same batch sees it; the
            # fold of the appended batch settles it again, which changes nothing.
            work.apply(0, now, settle)
            return entries, _claim_next(work, entries, now, claim.worker, then[0], then[1])
        return self._ingress.run(build, fenced=False)

    def complete(self, claim: ClaimedWork) -> None:
        """The item is done: it leaves the queue."""
        self._settle(claim, {"op": "complete"})

    def complete_and_claim(self, claim: ClaimedWork, lease_ttl: float, *,
                           kinds: Iterable[str] | None = None) -> ClaimedWork | None:
        """``complete`` this claim and ``claim`` the next item for the same worker, in
        one durable step (one batch, one fsync): what a worker's loop does."""
        ttl = _check_seconds(lease_ttl, "lease_ttl")
        claimed = self._settle(claim, {"op": "complete"},
                               (ttl, None if kinds is None else frozenset(kinds)))
        assert not isinstance(claimed, str)  # with ``then``, _settle returns the next claim
        return claimed

    def fail(self, claim: ClaimedWork, error: str = "", *,
             retry_after: float | None = None) -> str:
        """The attempt failed: the item is claimable again (after ``retry_after``
        seconds, if given), or ``dead`` once it had ``max_attempts`` claims. Returns the
        item's status now."""
        record: dict[str, Any] = {"op": "fail", "error": str(error)[:4096]}
        if retry_after is not None:
            record["retry_at"] = clock.now() + _check_seconds(retry_after, "retry_after")
        return str(self._settle(claim, record))

    def release(self, claim: ClaimedWork) -> None:
        """Give the item back unworked: claimable again, the attempt not counted."""
        self._settle(claim, {"op": "release"})

    def purge(self) -> int:
        """Remove the dead items; return how many."""
        def build(image: Folds, now: float) -> tuple[Records, Callable[[int], int]]:
            dead = [i for i, item in image.work.items.items() if item["status"] == DEAD]
            if not dead:
                return [], lambda first: 0
            return [(QUEUE_RECORD, {"op": "purge", "ids": dead})], lambda first: len(dead)
        return self._ingress.run(build, fenced=False)


class TurnInputsReader(AsyncTurnInputsReaderMixin):
    """A session's turn inputs as its log has them: what ``SessionReader.inputs`` lists
    (a writer's ``inputs`` are :class:`TurnInputs`, which also change them)."""

    def __init__(self, source: FoldSource) -> None:
        self._source = source

    def items(self, status: str | None = None) -> list[TurnInput]:
        """The inputs the log holds (pending, claimed, consumed; or those of
        ``status``), in arrival order."""
        inputs: InputState = self._source.view().inputs
        return [inputs.view(i) for i in inputs.items
                if status is None or inputs.items[i]["status"] == status]


class TurnInputs(TurnInputsReader, AsyncTurnInputsMixin):
    """User input that arrives while a turn runs: ``submit`` stores it durably as
    pending; the next turn's ``claim`` takes every pending input in arrival order;
    finishing that turn marks them consumed by it. Inputs a turn claimed but never
    consumed (it crashed, or ended unfinished) are claimed again by the next claim."""

    def __init__(self, ingress: Ingress) -> None:
        super().__init__(ingress)
        self._ingress = ingress

    def submit(self, payload: Any) -> int:
        """Store ``payload`` as pending input; return its id. Durable when it returns."""
        record = {"op": "submit", "payload": _stored(payload, "a turn input")}

        def build(image: Folds, now: float) -> tuple[Records, Callable[[int], int]]:
            return [(INPUT_RECORD, record)], lambda first: first
        return self._ingress.run(build, fenced=False)

    def claim(self) -> list[TurnInput]:
        """Claim every pending input for the turn this session is running (the current
        turn, or the next one if it is finished), in arrival order."""
        ingress = self._ingress

        def build(image: Folds, now: float) -> tuple[Records, Callable[[int], list[TurnInput]]]:
            turn = ingress.running_turn()
            ids = image.inputs.claimable(turn)
            if not ids:
                return [], lambda first: []

            def finish(first: int) -> list[TurnInput]:
                ingress.inputs_claimed(turn, ids)  # finish_turn consumes them
                return [image.inputs.view(i) for i in ids]
            return [(INPUT_RECORD, {"op": "claim", "ids": ids, "turn": turn})], finish
        return ingress.run(build, fenced=True)

    def prune(self, retention: float = 7 * 24 * 3600.0) -> int:
        """Drop consumed inputs older than ``retention`` seconds from the session's
        inputs (the log keeps their records until a clear); return how many."""
        keep = _check_seconds(retention, "retention") if retention else 0.0

        def build(image: Folds, now: float) -> tuple[Records, Callable[[int], int]]:
            old = [i for i, item in image.inputs.items.items()
                   if item["status"] == CONSUMED and item["consumed"] <= now - keep]
            if not old:
                return [], lambda first: 0
            return [(INPUT_RECORD, {"op": "prune", "ids": old})], lambda first: len(old)
        return self._ingress.run(build, fenced=False)
