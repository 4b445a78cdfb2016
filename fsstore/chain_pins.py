"""Pinned heads: a chained session's ``head_hash`` kept outside the store, and the check
of the session against it (docs/FORMAT.md 3.5).

A chain proves that every record up to a value is the one that value was made over,
but not that nothing came off the end: a log cut at a frame boundary, or a whole
session folder put back from an older genuine copy, reads as the genuine prefix it is
(FORMAT.md 3.4, "What it does not catch alone"). A *pin* closes that gap: the
``head_hash`` (``"SEQ:HEX"``) a session had, kept where whoever can change the store
cannot (committed to git, printed in a ticket, in a pins file elsewhere). The session
still holds the pinned history exactly when the frame ending at ``SEQ`` still carries
``HEX``: later records are fine (a note counts them), a log that ends before ``SEQ``
lost records, and a different value means the history up to ``SEQ`` is not the one
pinned (changed and re-chained, or replaced by another copy).

:func:`check_head` is that check (``SessionReader.verify(expect_head=)``, ``fsstore
verify --expect-head``); :func:`pins_of`, :func:`write_pins` and :func:`read_pins` make
and read the pins file (``fsstore pin``), and :func:`verify_pins` checks a store
against one (``fsstore verify --pins``).
"""

from __future__ import annotations

import bisect
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, NamedTuple

from .chain import CHAIN_SIZE, KEYED, genesis
from .errors import Finding, FsStoreError, InvalidPins, SessionNotFound
from .fsio import FileIO
from .log_format import CHAIN_FIELDS, TRAILER_SIZE, _parse_frame
from .segment_header import SEGMENT_HEADER_SIZE
from .session_reader import SessionReader, chain_parts

if TYPE_CHECKING:
    from .log import LogReader
    from .store import Store

#: The ``format`` and ``version`` of a pins file. A reader takes any 1.x (later minors
#: only add keys, which it ignores) and refuses a later major.
PINS_FORMAT = "fsstore-pins"
PINS_VERSION = "1.0"
#: A pins file holds a few lines per session: anything larger is not one.
MAX_PINS_FILE = 64 << 20
_HEAD_HASH = re.compile(r"(0|[1-9][0-9]{0,19}):([0-9a-f]{64})")


class Pin(NamedTuple):
    """What a pins file keeps of one session: its ``head_hash`` when pinned, its uid
    (16 hex digits; None for a session from before uids) and its chain's ``key_id``
    (None for an unkeyed chain)."""

    head_hash: str
    uid: str | None = None
    key_id: str | None = None


def parse_head_hash(text: object) -> tuple[int, bytes]:
    """``"SEQ:HEX"`` as its seq and chain value; InvalidPins for anything else."""
    match = _HEAD_HASH.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidPins(f"{text!r} is not a head hash: it is SEQ:HEX, a seq and 64 "
                          "lowercase hex digits, as head_hash and `fsstore show` print it")
    return int(match[1]), bytes.fromhex(match[2])


# --- the check of one session ----------------------------------------------------------


def chain_value_at(log: LogReader, seq: int) -> bytes | None:
    """The chain value after record ``seq`` of ``log`` (a log with a chain): the value of
    the frame ending at ``seq``, its segment's run checked first so that it vouches for
    what it was read from; the genesis for the seq before the log's start. None when no
    record of the log ends at ``seq`` (it is after the head, inside a batch, or before
    the log's start). CorruptionError for a run that does not hold; a keyed chain needs
    its key (ChainKeyRequired)."""
    rules = log.chain
    assert rules is not None
    segments, log_start = log.live_segments()
    if seq < log_start - 1:
        return None
    if seq == log_start - 1:
        return genesis(rules.mac, log.read_header(log_start).uid, log_start)
    # the segment holding seq: the last one starting at or before it (one starting at
    # seq + 1 anchors on this value, but the frame carrying it is in the one before)
    first = segments[bisect.bisect_right(segments, seq) - 1]
    scan = log.scan_segment(first, first == segments[-1])
    for _ in scan:
        pass  # the walk checks the seqs and the frames past the chain's reach
    run = scan.chain
    if run is None or not run.chained:
        return None
    base, off = scan.origin, SEGMENT_HEADER_SIZE - scan.origin
    for piece in (scan.buf, *scan.more):
        view, limit = memoryview(piece), len(piece)
        while (frame := _parse_frame(piece, view, off, limit)) is not None:
            end = off + frame.size
            if frame.first_seq > seq:
                return None
            if frame.first_seq + frame.event_count - 1 == seq:
                value_at = end - TRAILER_SIZE - CHAIN_SIZE
                # only a value the run's check reached vouches for anything (not the
                # last frame of a torn chain value, past the synced mark)
                if not CHAIN_FIELDS.get(frame.frame_type) or base + end - TRAILER_SIZE > (
                        run.covered):
                    return None
                return bytes(view[value_at:value_at + CHAIN_SIZE])
            off = end
        base, off = base + limit, 0
    return None


def check_head(log: LogReader, path: str, expected: str, *, exact: bool = False
               ) -> list[Finding]:
    """The findings of checking the session at ``path`` (its log ``log``) against the
    pinned head ``expected`` (``"SEQ:HEX"``): none when the frame ending at ``SEQ``
    carries ``HEX`` and the head is ``SEQ``; a note counting the records since when the
    head is later (a problem with ``exact``); a problem when the log ends before
    ``SEQ`` (records cut off, or the folder put back from an older copy), when the value
    differs (the history up to ``SEQ`` is not the pinned one), when the session has no
    chain, and when the check cannot be made (damage, a keyed chain without its key).
    InvalidPins, before anything is read, when ``expected`` is no head hash."""
    seq, value = parse_head_hash(expected)
    if log.chain is None:
        return [Finding("problem", path, None,
                        f"the session has no hash chain, so the pinned head {expected} "
                        "cannot be checked: a chain stripped from its manifest, or the "
                        "session replaced by one without a chain")]
    try:
        tail = log.tail()
        head = tail.head
        if head < seq:
            return [Finding(
                "problem", path, None,
                f"the log ends at seq {head}, before the pinned head {expected}: records "
                f"{head + 1} to {seq} are gone (the end of the log cut off, or the session "
                "put back from an older copy); restore it from a backup taken after the pin")]
        found = chain_value_at(log, seq)
    except Exception as exc:  # verify never raises: a failure is a finding
        from .check import finding_of

        if isinstance(exc, ImportError) and not isinstance(exc, FsStoreError):
            raise
        finding = finding_of(exc, path, "checking the pinned head")
        return [finding._replace(message=f"the pinned head {expected} cannot be checked: "
                                         f"{finding.message}")]
    cleared = tail.log_start - 1  # the log starts after a clear there (0: never cleared)
    if cleared > 0 and (seq < cleared or (seq == cleared and found != value)):
        return [Finding("problem", path, None,
                        f"the log was cleared after seq {cleared}: the pinned history up to "
                        f"seq {seq} ({expected}) is gone; restore the session from a backup "
                        "taken before the clear")]
    if found is None:
        return [Finding("problem", path, None,
                        f"no record of the log ends at seq {seq}, where the pinned head "
                        f"{expected} is (it ends inside a batch): the history up to it is "
                        "not the one pinned")]
    # a vacuum or repair that rewrote the frame's file bridged its new value to the
    # one pinned (FORMAT.md 3.4, "Rewrites and bridges"): keyed, as good as the value
    if not log.chain.links(found, value):
        return [Finding("problem", path, None,
                        f"the chain value at seq {seq} is {found.hex()}, not the pinned "
                        f"{value.hex()}: the history up to seq {seq} is not the one pinned "
                        "(records changed and the chain recomputed, or the session replaced "
                        "by another copy); restore it from a backup that matches the pin")]
    if head == seq:
        return []
    since = head - seq
    if exact:
        return [Finding("problem", path, None,
                        f"the head is seq {head}, not the pinned {seq} (exact): {since} "
                        f"record{'s' if since != 1 else ''} written since the pin")]
    seqs = f"seq {head}" if since == 1 else f"seqs {seq + 1} to {head}"
    return [Finding("note", path, None,
                    f"matches the pinned head at seq {seq}; {since} "
                    f"record{'s' if since != 1 else ''} written since ({seqs})")]


# --- pins files ---------------------------------------------------------------------------


def chain_mode(reader: SessionReader) -> str | None:
    """How ``reader``'s session is chained, as ``verify`` prints it: ``sha256``, or
    ``hmac-sha256 key KEY_ID``; None without a chain."""
    record = chain_parts(reader)[0]
    if record is None:
        return None
    return f"{record.alg} key {record.key_id}" if record.alg == KEYED else record.alg


def pin_of(reader: SessionReader) -> Pin | None:
    """The pin of ``reader``'s session as it is now; None when it has no chain. Reads
    its head hash (a keyed chain needs its key: ChainKeyRequired)."""
    head_hash = reader.head_hash
    if head_hash is None:
        return None
    record = chain_parts(reader)[0]
    uid = None if reader.identity is None else f"{reader.identity.uid:016x}"
    return Pin(head_hash, uid, None if record is None else record.key_id)


def pins_of(store: Store, session_ids: Iterable[str] | None = None
            ) -> tuple[dict[str, Pin], list[str]]:
    """The pins of the store's sessions (all, or those given), and the ids of those left
    out because they have no chain. SessionNotFound for a session id given that is not
    the store's; any error reading a head (damage, a keyed chain without its key) is
    raised: a pin is taken of sound sessions."""
    pins: dict[str, Pin] = {}
    unchained: list[str] = []
    for session_id in store.session_ids() if session_ids is None else session_ids:
        pin = pin_of(store.read_session(session_id))
        if pin is None:
            unchained.append(session_id)
        else:
            pins[session_id] = pin
    return pins, unchained


def encode_pins(pins: Mapping[str, Pin]) -> bytes:
    """The pins file of ``pins``: JSON, sessions sorted by id, one key a line (so that a
    git diff of two pins files shows the sessions that moved)."""
    sessions = {session_id: {"head_hash": pin.head_hash, "uid": pin.uid,
                             "key_id": pin.key_id}
                for session_id, pin in sorted(pins.items())}
    data = {"format": PINS_FORMAT, "version": PINS_VERSION, "sessions": sessions}
    return (json.dumps(data, indent=2) + "\n").encode()


def write_pins(path: str | os.PathLike[str], pins: Mapping[str, Pin], *,
               store_root: str | None = None, io: FileIO | None = None) -> None:
    """Write ``pins`` to the file ``path``, atomically (a crash leaves the old file or
    the new one). Refused (InvalidPins, nothing written) inside ``store_root``: a pin
    kept where the store can be changed proves nothing against whoever changes it."""
    target = os.path.abspath(os.fspath(path))
    if store_root is not None:
        root = os.path.realpath(store_root)
        real = os.path.join(os.path.realpath(os.path.dirname(target)),
                            os.path.basename(target))
        if os.path.commonpath([root, real]) == root:
            raise InvalidPins(
                f"pins file {target} is inside the store {store_root}: whoever can change "
                "the store could change the pins too; write it outside the store (commit "
                "it to git, or keep it elsewhere)")
    (io or FileIO()).atomic_write(target, encode_pins(pins))


def read_pins(path: str | os.PathLike[str], *, io: FileIO | None = None) -> dict[str, Pin]:
    """The pins a pins file holds, by session id. InvalidPins naming the file for one
    that is not a pins file (or of a later major version); OSError when it cannot be
    read."""
    name = os.fspath(path)
    try:
        raw = (io or FileIO()).read_file(os.path.realpath(name), MAX_PINS_FILE)
    except ValueError:
        raise InvalidPins(f"{name} is larger than any pins file") from None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict) or data.get("format") != PINS_FORMAT:
        raise InvalidPins(f"{name} is not an fsstore pins file (JSON with \"format\": "
                          f"\"{PINS_FORMAT}\", as `fsstore pin -o FILE` writes)")
    version = data.get("version")
    if not isinstance(version, str) or version.partition(".")[0] != "1":
        raise InvalidPins(f"{name} is a pins file of version {version!r}; this fsstore "
                          "reads version 1: upgrade fsstore")
    sessions = data.get("sessions")
    if not isinstance(sessions, dict):
        raise InvalidPins(f"{name}: \"sessions\" is not a map of session ids to pins")
    return {session_id: _pin_from(entry, f"{name}: session {session_id!r}")
            for session_id, entry in sessions.items()}


def _pin_from(entry: object, where: str) -> Pin:
    if not isinstance(entry, dict):
        raise InvalidPins(f"{where}: its pin is not a map")
    head_hash = entry.get("head_hash")
    try:
        parse_head_hash(head_hash)
    except InvalidPins as exc:
        raise InvalidPins(f"{where}: {exc}") from None
    fields: list[str | None] = []
    for key in ("uid", "key_id"):
        value = entry.get(key)
        if value is not None and not (isinstance(value, str)
                                      and re.fullmatch(r"[0-9a-f]{16}", value)):
            raise InvalidPins(f"{where}: {key} {value!r} is not 16 lowercase hex digits")
        fields.append(value)
    assert isinstance(head_hash, str)
    return Pin(head_hash, *fields)


# --- a store against a pins file ------------------------------------------------------------


def pin_findings(store: Store, session_id: str, pin: Pin, *, exact: bool = False
                 ) -> list[Finding]:
    """The findings of session ``session_id`` against its ``pin``: gone from the store,
    another session under its id (its uid differs), another key, then
    :func:`check_head`."""
    reader = _pinned_reader(store, session_id, pin.head_hash)
    if isinstance(reader, list):
        return reader
    uid = None if reader.identity is None else f"{reader.identity.uid:016x}"
    if pin.uid is not None and uid != pin.uid:
        return [Finding("problem", reader.path, None,
                        f"the session's uid is {uid}, the pin's {pin.uid}: this is not the "
                        "session that was pinned (another one put under its id)")]
    record = chain_parts(reader)[0]
    key_id = None if record is None else record.key_id
    if record is not None and key_id != pin.key_id:
        return [Finding("problem", reader.path, None,
                        f"the session's chain is {_keyed(key_id)}, the pin's "
                        f"{_keyed(pin.key_id)}: its chain is not the one pinned")]
    return check_head(chain_parts(reader)[1], reader.path, pin.head_hash, exact=exact)


def verify_head(store: Store, session_id: str, expected: str, *, exact: bool = False,
                on_session: Callable[[str], object] | None = None) -> list[Finding]:
    """``store.verify([session_id])``, then the session against the pinned head
    ``expected`` alone (:func:`check_head`: no uid or key to compare, as a pins file
    has). InvalidPins, before anything is read, for text that is no head hash."""
    parse_head_hash(expected)
    findings = store.verify([session_id], on_session=on_session)
    reader = _pinned_reader(store, session_id, expected)
    if isinstance(reader, list):
        return findings if any(f.level == "problem" for f in findings) else reader
    return findings + check_head(chain_parts(reader)[1], reader.path, expected, exact=exact)


def _pinned_reader(store: Store, session_id: str, head_hash: str
                   ) -> SessionReader | list[Finding]:
    """The reader of a pinned session, or the problem of opening it."""
    from .check import finding_of

    path = os.path.join(store.path, "sessions", session_id)
    try:
        return store.read_session(session_id)
    except SessionNotFound:
        return [Finding("problem", path, None,
                        f"pinned at {head_hash}, but the store has no such session "
                        "(deleted since the pin, or the store replaced)")]
    except Exception as exc:
        if isinstance(exc, ImportError) and not isinstance(exc, FsStoreError):
            raise
        return [finding_of(exc, path, "opening the pinned session")]


def _keyed(key_id: str | None) -> str:
    return "unkeyed" if key_id is None else f"keyed under key {key_id}"


def verify_pins(store: Store, pins: Mapping[str, Pin], session_ids: Iterable[str] | None = None,
                *, exact: bool = False, on_session: Callable[[str], object] | None = None
                ) -> list[Finding]:
    """``store.verify(session_ids)`` (all its sessions by default), then each pinned
    session among them against its pin (:func:`pin_findings`; a pinned session no longer
    in the store is a problem). A chained session the pins do not name gets a note (made
    since the pins were written?)."""
    ids = None if session_ids is None else list(session_ids)
    findings = store.verify(ids, on_session=on_session)
    present = store.session_ids()
    wanted = sorted(set(present) | set(pins)) if ids is None else ids
    for session_id in wanted:
        pin = pins.get(session_id)
        if pin is not None:
            findings.extend(pin_findings(store, session_id, pin, exact=exact))
        elif session_id in present:
            findings.extend(_unpinned(store, session_id))
    return findings


def _unpinned(store: Store, session_id: str) -> list[Finding]:
    try:
        reader = store.read_session(session_id)
    except (FsStoreError, OSError):
        return []  # verify reported it
    if chain_parts(reader)[0] is None:
        return []
    return [Finding("note", reader.path, None,
                    "not in the pins file: a chained session made since it was written? "
                    "(`fsstore pin` pins it)")]


def head_lines(store: Store, session_ids: Iterable[str]) -> list[str]:
    """A line per chained session among ``session_ids``, ``SESSION head_hash SEQ:HEX
    (MODE)``, as ``fsstore verify`` prints them; a session whose head cannot be read (its
    findings say why) is left out."""
    lines: list[str] = []
    for session_id in session_ids:
        try:
            reader = store.read_session(session_id)
            mode = chain_mode(reader)
            head_hash = None if mode is None else reader.head_hash
        except (FsStoreError, OSError):
            continue
        if head_hash is not None:
            lines.append(f"{session_id} head_hash {head_hash} ({mode})")
    return lines

