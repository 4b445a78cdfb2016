"""Turns and revisions: how a session's log is read as the caller's history.

A log holds the caller's events and the store's own records (``fsstore.*`` kinds). Turn
and event reads return the caller's events unless asked for everything. Records of the
kinds in :data:`NEUTRAL_KINDS` (queued work, turn inputs, lease records) arrive from
outside the turns: they belong to no turn, whatever turn their frame carries, and do
not move the :class:`Revision` a commit is checked against (docs/FORMAT.md, sections 4
and 12).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import NamedTuple

from .errors import HeadConflict, InvalidEvent, SeqOutOfRange
from .log import LogReader
from .log_format import Event

#: Kinds starting with this are the store's own records; callers cannot append them.
RESERVED_KIND_PREFIX = "fsstore."
#: The kind of an event that names none (no ``kind`` or ``type`` key, no ``kind=``).
DEFAULT_KIND = "event"
#: The record ``finish_turn`` appends: the turn's close barrier, visible in the log.
TURN_FINISHED = "fsstore.turn_finished"
#: A message of the messages API (``messages.py``): the store writes it, so that it
#: always fits its schema, but it is the caller's content, and reads return it.
MESSAGE_RECORD = "fsstore.message"


def is_callers(kind: str) -> bool:
    """Whether a record of ``kind`` is the caller's: an event it appended, or a
    message; not one of the store's own records."""
    return not kind.startswith(RESERVED_KIND_PREFIX) or kind == MESSAGE_RECORD
#: The records of queued work and of turn inputs (``work.py``, docs/FORMAT.md 12).
QUEUE_RECORD = "fsstore.queue"
INPUT_RECORD = "fsstore.input"
#: The log record a lease holder writes before its first write to a log with a token:
#: ``{"token": TOKEN}``. It belongs to no turn; claims and ``verify`` read it back when the
#: lease file is gone (``lease.py``). These three are defined here with the other kinds,
#: so that reading a log's turns imports neither module.
LEASE_RECORD = "fsstore.lease"
#: Record kinds from outside the session's turns: they belong to no turn, do not move
#: its current turn, and do not move the revision a commit is checked against.
#: The record a repair writes for each seq it found lost (docs/FORMAT.md 7.6): of no turn.
LOST_RECORD = "fsstore.lost"
#: The record a vacuum puts in place of a queue or input record of done work
#: (docs/FORMAT.md 17.2): of no turn, like the record it replaces.
RECLAIMED_RECORD = "fsstore.reclaimed"
NEUTRAL_KINDS = frozenset((QUEUE_RECORD, INPUT_RECORD, LEASE_RECORD, LOST_RECORD,
                           RECLAIMED_RECORD))


class Turn(NamedTuple):
    """A turn's events and whether it was finished. ``events`` holds what the caller
    appended in the turn; with ``include_internal`` it also holds the store's own records
    of the turn (state and metadata records), never its ``fsstore.turn_finished`` record
    and never queue, input or lease records, which belong to no turn (docs/FORMAT.md,
    section 4)."""

    number: int
    events: list[Event]
    finished: bool


class Revision(NamedTuple):
    """What a session's history and state depend on, as of now: the log start and the
    seq of the last record that is not a queue, input or lease record (``log_start - 1``
    when there is none since the log start). It moves with every caller event, state
    record, commit, finished turn and metadata record, and with a clear; queue items, turn
    inputs and lease records do not move it. Pass it to ``commit(expected_revision=...)``."""

    log_start: int
    seq: int


def callers_events(events: Iterable[Event], limit: int | None) -> Iterator[Event]:
    """The events whose kind is not the store's own, at most ``limit`` of them."""
    found = (event for event in events if is_callers(event.kind))
    return found if limit is None else itertools.islice(found, max(limit, 0))


def read_turn(log: LogReader, number: int, include_internal: bool) -> Turn | None:
    """Turn ``number`` of ``log``, None if no record belongs to it. Turns never go
    backwards in a log, so the turn is found by a binary search over the first turn of
    each segment, then read from there."""
    segments, _ = log.live_segments()
    low, high = 0, len(segments)
    while low < high:
        middle = (low + high) // 2
        first_turn = log.first_turn(segments[middle])
        if first_turn is not None and first_turn < number:
            low = middle + 1
        else:
            high = middle
    start = segments[max(low - 1, 0)] - 1
    events: list[Event] = []
    finished = found = False
    for event in log.events(after_seq=start):
        if event.turn < number:
            continue
        if event.turn > number:
            break
        kind = event.kind
        if kind in NEUTRAL_KINDS:
            continue  # arrived during the turn, or after it, but is not of it
        found = True
        if kind == TURN_FINISHED:
            finished = True
        elif include_internal or is_callers(kind):
            events.append(event)
    return Turn(number, events, finished) if found else None


def read_turns(events: Iterable[Event], include_internal: bool) -> list[Turn]:
    """The turns of ``events`` (every record of a log, in order)."""
    turns: list[Turn] = []
    for event in events:
        kind = event.kind
        if kind in NEUTRAL_KINDS:
            continue
        if not turns or turns[-1].number != event.turn:
            turns.append(Turn(event.turn, [], False))
        if kind == TURN_FINISHED:
            turns[-1] = turns[-1]._replace(finished=True)
        elif include_internal or is_callers(kind):
            turns[-1].events.append(event)
    return turns


def revision_of(log: LogReader) -> Revision:
    """The revision of ``log``, from its tail; when the log ends in records of no turn,
    the segments before are read back to the last record of another kind."""
    tail = log.tail()
    if tail.last_kind not in NEUTRAL_KINDS:
        return Revision(tail.log_start, tail.head)
    segments, log_start = log.live_segments()
    bound = tail.head
    for first in reversed(segments):
        found = None
        for event in log.events(first - 1, bound):
            if event.kind not in NEUTRAL_KINDS:
                found = event.seq
        if found is not None:
            return Revision(log_start, found)
        bound = first - 1
    base = log.base_of(log_start)  # the dropped history it stands for counts (5.6)
    return Revision(log_start, log_start - 1 if base is None else base.seq)


def check_revision_arg(expected: object) -> None:
    if not (isinstance(expected, tuple) and len(expected) == 2
            and all(not isinstance(n, bool) and isinstance(n, int) for n in expected)):
        raise SeqOutOfRange(f"expected_revision must be a Revision (session.revision), not "
                            f"{expected!r}")


def check_expected(session_id: str, current: Revision, head: int,
                   expected_head: int | None, expected_revision: Revision | None) -> None:
    """Raise HeadConflict unless nothing the history and state depend on changed since
    the caller read ``expected_head`` or ``expected_revision``; ``current`` and
    ``head`` are the session's now (docs/FORMAT.md, section 12.1)."""
    significant = current.seq
    if expected_revision is not None and tuple(expected_revision) != current:
        what = ("the log was cleared" if expected_revision[0] != current.log_start
                else f"the history or state changed at seq {significant}")
        raise HeadConflict(
            f"session {session_id!r}: expected revision {tuple(expected_revision)} is not "
            f"the revision {tuple(current)} ({what}); nothing was written: re-read the "
            "session and retry", expected=expected_revision[1], actual=significant)
    if expected_head is not None and not significant <= expected_head <= head:
        if expected_head > head:
            message, actual = f"expected head {expected_head} is ahead of the head {head}", head
        else:
            message = (f"expected head {expected_head} is behind: the history or state "
                       f"changed at seq {significant} (head {head})")
            actual = significant
        raise HeadConflict(f"session {session_id!r}: {message}; nothing was written: "
                           "re-read the session and retry", expected=expected_head,
                           actual=actual)


def event_kind(event: object, kind: str | None) -> str:
    """The kind a caller's ``event`` is appended as: ``kind``, else its own ``kind`` or
    ``type`` key, else :data:`DEFAULT_KIND`. InvalidEvent for an event that is no dict,
    and a kind that is no str, is empty, or is one of the store's own."""
    if type(event) is not dict and not isinstance(event, Mapping):  # dict first: it is fast
        raise InvalidEvent(f"an event must be a dict, not {type(event).__name__}")
    if kind is None:
        found = event.get("kind") or event.get("type")
        kind = found if isinstance(found, str) else DEFAULT_KIND
    elif not isinstance(kind, str):
        raise InvalidEvent(f"kind must be a str, not {type(kind).__name__}")
    if not kind or kind.startswith(RESERVED_KIND_PREFIX):
        raise InvalidEvent(
            f"kind {kind!r} is not allowed: kinds must be non-empty and not start with "
            f"{RESERVED_KIND_PREFIX!r} (reserved for the store's own records)")
    return kind


def check_ts(ts: object) -> float:
    """A caller's timestamp as a float; InvalidEvent unless a finite number."""
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
        raise InvalidEvent(f"ts must be a finite number of seconds since the epoch, not {ts!r}")
    return float(ts)
