"""What binds a chained session's files outside its log to its hash chain (docs/FORMAT.md
3.4, "Files bound to the chain"): snapshots, checkpoints and ``session.json``.

A chained log vouches for its own records only. The files made from it (a snapshot or a
checkpoint: a state folded up to a seq; ``session.json``: the title, tags, metadata and
origins of the session) would otherwise be trusted as they are, and an edit of one would
change what reads return without touching the chain. So each carries a MAC under the
chain's own MAC (SHA-256, or HMAC-SHA256 under the session's key) and its own domain tag,
and the chain value it was made at:

- a **snapshot or checkpoint** (snapshot format minor 2) records in its meta ``chain``,
  the chain value of the frame ending at its log position (empty when the position is the
  start of a segment), and ``mac``: the MAC of its header's fields, the session's uid,
  its meta without ``mac`` and its body (:func:`snapshot_mac`). Its MAC failing (an edit,
  a file of another session) or its chain value not being the one the log holds at its
  position (a forged state at a genuine position, a file of another history) is
  :class:`~fsstore.errors.ChainBindingBroken`. A load skips such a snapshot (a finding);
  a checkpoint raises.
- **session.json** of a chained session has ``chain.at``, ``[seq, hex]``: the head and the
  chain value after it when the file was written, and ``chain.mac`` over the fields that
  matter (:data:`MANIFEST_FIELDS`, and ``chain`` without ``mac``; not ``id``, ``created``
  or ``updated``). Readers check it when they have the MAC (a keyed session read without
  its key reads its manifest unchecked, and nothing of its log), verify also checks that
  the log holds ``at``.
- **blobs** need nothing: they are named by the SHA-256 of their bytes, and the chained
  events that refer to them carry those names; every read hashes what it returns.

What a MAC does not give, unkeyed: anyone can recompute it, so an edit whose MAC was
recomputed is not caught by that file alone (a snapshot's chain value is still checked
against the log, which anyone can read too). Keyed, no one without the key can make a
file that verifies, except an older genuine one (FORMAT.md 3.4 says what that allows).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from . import identity, layout
from .chain import CHAIN_SIZE, DOM_MANIFEST, DOM_SNAPSHOT, Mac, genesis
from .errors import ChainBindingBroken, ChainKeyMismatch, ChainKeyRequired, Finding
from .fsio import FileIO
from .log_format import FRAME_CHAINED_BASE, TRAILER_SIZE
from .segment_header import SEGMENT_HEADER_SIZE

if TYPE_CHECKING:
    from .chain import ChainKey
    from .chain_check import ChainRules
    from .log import LogPosition, LogReader
    from .log_writer import LogWriter
    from .snapshot import SnapshotHeader

# kind seq log_start segment offset frame_crc uid meta_len body_len
_SNAPSHOT_FIELDS = struct.Struct("<IQQQQIQII")
#: The keys of a snapshot's meta that bind it (snapshot format minor 2).
CHAIN_KEY, MAC_KEY = "chain", "mac"

#: The fields of ``session.json`` its MAC covers, besides ``chain``: what a reader of the
#: session acts on or shows as the session's own (its timing is not covered).
MANIFEST_FIELDS = ("title", "tags", "metadata", "metadata_seq", "parent", "spawned_by",
                   "uid", "ancestor_uids", "retention")


class SnapshotSeal(NamedTuple):
    """What a writer binds a snapshot or checkpoint with: the chain's ``mac``, the
    session's ``uid`` and ``link``, the chain value of the frame ending at the file's
    log position (the writer's head link)."""

    mac: Mac
    uid: int
    link: bytes


def snapshot_mac(mac: Mac, kind: int, seq: int, log_start: int, position: LogPosition,
                 uid: int, meta: bytes, body: bytes) -> bytes:
    """``MAC(DOM_SNAPSHOT || kind seq log_start segment offset frame_crc uid meta_len
    body_len || meta || body)``, ``meta`` being the encoded meta without ``mac`` (it
    holds ``chain``), ``body`` the encoded body."""
    fields = _SNAPSHOT_FIELDS.pack(kind, seq, log_start, position.segment, position.offset,
                                   position.frame_crc, uid, len(meta), len(body))
    return mac.value(DOM_SNAPSHOT, fields, meta, body)


def recorded_link(position: LogPosition, link: bytes) -> bytes:
    """The chain value a snapshot at ``position`` records: the writer's head link, or
    nothing at the start of a segment (no frame ends there)."""
    if position.offset == SEGMENT_HEADER_SIZE:
        return b""
    if len(link) != CHAIN_SIZE:
        raise ValueError(f"a chain value is {CHAIN_SIZE} bytes")
    return link


def check_snapshot_meta(chained: bool, minor: int, meta: Mapping[str, Any], path: str,
                        offset: int) -> None:
    """That a snapshot's meta is bound as its session's chain says: a chained session's
    snapshot has ``chain`` and ``mac`` (else it was made for a session without a chain,
    or the binding was stripped); a snapshot of a session without a chain has neither
    (else the session's chain was stripped from its manifest)."""
    bound = MAC_KEY in meta or CHAIN_KEY in meta or minor >= 2
    if chained and not bound:
        raise ChainBindingBroken(
            "snapshot of a chained session without the chain's MAC: made for a session "
            "without a chain, or its binding was stripped; the chain does not vouch for "
            "it", path=path, offset=offset)
    if not chained and bound:
        raise ChainBindingBroken(
            "snapshot bound to a hash chain, in a session whose manifest has no chain: "
            "the chain was stripped from session.json, or the file is another session's",
            path=path, offset=offset)
    if chained:
        link, tag = meta.get(CHAIN_KEY), meta.get(MAC_KEY)
        if (not isinstance(link, bytes) or len(link) not in (0, CHAIN_SIZE)
                or not isinstance(tag, bytes) or len(tag) != CHAIN_SIZE):
            raise ChainBindingBroken("snapshot meta's chain or mac is not a chain value",
                                     path=path, offset=offset)


def check_snapshot_mac(expected: bytes, meta: Mapping[str, Any], path: str,
                       offset: int) -> None:
    """ChainBindingBroken unless the snapshot's ``mac`` is ``expected``."""
    import hmac

    if not hmac.compare_digest(expected, meta[MAC_KEY]):
        raise ChainBindingBroken(
            "snapshot does not match the chain (its MAC fails): it was edited, renamed, or "
            "made for another session; it is not used", path=path, offset=offset)


def link_at(reader: LogReader, position: LogPosition) -> bytes | None:
    """The chain value of the frame ending at ``position`` in ``reader``'s log (as
    stored, one small read; the reads of that segment check it), b"" at the start of a
    segment, None when the log has no such segment."""
    if position.offset == SEGMENT_HEADER_SIZE:
        return b""
    try:
        segment = reader.open_segment(position.segment)
    except FileNotFoundError:
        return None
    with segment:
        start = position.offset - TRAILER_SIZE - CHAIN_SIZE
        if start < SEGMENT_HEADER_SIZE or position.offset > segment.size:
            return None
        return segment.pread(CHAIN_SIZE, start)


def link_problem(reader: LogReader, position: LogPosition, seq: int,
                 meta: Mapping[str, Any]) -> str | None:
    """What is wrong with the chain value a snapshot or checkpoint at ``position``
    (after ``seq``) recorded, read in ``reader``'s log, whose frame there is known to
    end with ``seq`` (``LogReader.position_holds``); None when it is the log's, or the
    log has no chain."""
    if reader.chain is None:
        return None
    if reader.chain.links(link_at(reader, position), meta.get(CHAIN_KEY)):
        return None
    return (f"its chain value at seq {seq} is not the one the log holds there: it was made "
            "from another history (a forged or restored state at a genuine position); "
            "the chain does not vouch for it")


def check_checkpoint_link(log: LogReader, header: SnapshotHeader, meta: Mapping[str, Any],
                          path: str) -> None:
    """ChainBindingBroken when a checkpoint's chain value is not the one ``log`` holds at
    its position, while the log still holds that position (the same log start, the
    frame there ending with its seq and having its crc); nothing when it does not (a
    checkpoint outlives a clear), or the log has no chain."""
    if log.chain is None or header.log_start != log.tail().log_start:
        return
    if not log.position_holds(header.position, header.seq):
        return
    problem = link_problem(log, header.position, header.seq, meta)
    if problem is not None:
        raise ChainBindingBroken(f"checkpoint {problem}", path=path)


# --- session.json ---------------------------------------------------------------------------


def manifest_mac(mac: Mac, data: Mapping[str, Any]) -> bytes:
    """The MAC of ``session.json`` holding ``data``: ``MAC(DOM_MANIFEST || canonical
    JSON)`` of :data:`MANIFEST_FIELDS` (absent ones as null) and ``chain`` without
    ``mac``. Canonical JSON: sorted keys, no spaces, UTF-8."""
    covered = {name: data.get(name) for name in MANIFEST_FIELDS}
    covered["chain"] = {k: v for k, v in data["chain"].items() if k != MAC_KEY}
    text = json.dumps(covered, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)
    return mac.value(DOM_MANIFEST, text.encode())


def seal_manifest(data: dict[str, Any], mac: Mac, head: int, link: bytes) -> None:
    """Bind ``data``, a chained session's manifest about to be written, to the chain:
    ``chain.at`` = ``[head, link]`` (the writer's head and the chain value after it),
    ``chain.mac`` its MAC. Nothing for a manifest without a chain."""
    if data.get("chain") is None:
        return
    chain = {k: v for k, v in data["chain"].items() if k not in ("at", MAC_KEY)}
    chain["at"] = [head, link.hex()]
    data["chain"] = chain
    chain[MAC_KEY] = manifest_mac(mac, data).hex()


def check_manifest(data: Mapping[str, Any], mac: Mac, path: str) -> None:
    """ChainBindingBroken unless ``data``, a chained session's ``session.json``, has
    its chain's MAC, ``mac``, over the fields it covers."""
    chain = data.get("chain")
    tag = chain.get(MAC_KEY) if isinstance(chain, dict) else None
    if not isinstance(tag, str) or manifest_at(data) is None:
        raise ChainBindingBroken(
            "session.json of a chained session has no chain.mac and chain.at: it was not "
            "written by fsstore, or its binding to the chain was stripped; restore it from "
            "a backup", path=path)
    import hmac

    try:
        found = manifest_mac(mac, data).hex()
    except UnicodeEncodeError:
        # a lone surrogate (JSON may escape one), which no writer writes: a hand edit
        found = ""
    if not hmac.compare_digest(found, tag):
        raise ChainBindingBroken(
            "session.json does not match the chain (chain.mac fails): a field it covers "
            "(title, tags, metadata, parent, spawned_by, uid, retention, chain) was edited "
            "by hand, or the file is another session's; restore it from a backup",
            path=path)


def manifest_at(data: Mapping[str, Any]) -> tuple[int, bytes] | None:
    """A chained manifest's ``chain.at`` as (seq, value); None when it has none."""
    chain = data.get("chain")
    at = chain.get("at") if isinstance(chain, dict) else None
    if (not isinstance(at, list) or len(at) != 2 or not isinstance(at[0], int)
            or isinstance(at[0], bool) or at[0] < 0 or not isinstance(at[1], str)
            or len(at[1]) != 2 * CHAIN_SIZE):
        return None
    try:
        return at[0], bytes.fromhex(at[1])
    except ValueError:
        return None


def link_after(log: LogReader, seq: int) -> bytes | None:
    """The chain value after ``seq`` in ``log`` (a chained one), read and checked: the
    genesis of an empty log, else the value of the frame ending with ``seq``. None when
    the log does not hold ``seq`` (past its end, before its start) or no frame ends with
    it."""
    rules = log.chain
    assert rules is not None
    newest, log_start, end = log.locate_tail()
    if not log_start - 1 <= seq < end.next_seq:
        return None
    if seq == log_start - 1:
        return genesis(rules.mac, log.read_header(log_start).uid, log_start)
    first = max(s for s in log.list_segments() if log_start <= s <= seq)
    scan = log.scan_segment(first, first == newest, after_seq=seq, until_seq=seq)
    for _ in scan:
        pass  # (nothing decoded: every frame is before after_seq)
    if scan.expect_seq != seq + 1:
        return None
    # ``end`` is an offset in the file's (logical) bytes, which the scan holds from
    # ``origin`` on, in pieces when the file is compacted (a compaction's merged history)
    held = b"".join([bytes(scan.buf), *map(bytes, scan.more)]) if scan.more else scan.buf
    at = scan.end - scan.origin
    value_at = at - TRAILER_SIZE - CHAIN_SIZE
    (size,) = struct.unpack_from("<I", held, at - TRAILER_SIZE)
    if struct.unpack_from("<I", held, at - size + 20)[0] == FRAME_CHAINED_BASE:
        value_at -= CHAIN_SIZE  # a base passes on its anchor (FORMAT.md 3.4): a fork there
    return bytes(held[value_at:value_at + CHAIN_SIZE])


def manifest_at_problem(log: LogReader, data: Mapping[str, Any]) -> str | None:
    """What is wrong with a chained manifest's ``chain.at`` against the log (verify's
    check): written after the log's end (the log was rolled back, or the manifest is of
    a later copy), or its value is not the log's at that seq."""
    at = manifest_at(data)
    if at is None:
        return "session.json has no chain.at"
    seq, value = at
    tail = log.tail()
    head = tail.head
    if seq < tail.log_start - 1:
        return None  # written before a clear: the history it names is gone, nothing to check
    if seq > head:
        return (f"session.json was written at seq {seq}, after the end of the log (seq "
                f"{head}): the log was rolled back to an older copy, or the manifest is of "
                "a later one (the chain)")
    found = link_after(log, seq)
    rules = log.chain
    if found is None or rules is None or not rules.links(found, value):
        return (f"session.json's chain.at (seq {seq}) is not the chain value the log holds "
                "there: the manifest is of another history (the chain)")
    return None


def manifest_findings(log: LogReader, data: Mapping[str, Any], path: str) -> list[Finding]:
    """Verify's check of a chained session's ``session.json`` (``data``) against its
    chain: its MAC (raises ChainBindingBroken) and its ``chain.at`` against ``log``.
    Nothing for a session without a chain, or a keyed one whose key is not at hand
    (the log's check reports the missing key)."""
    rules = log.chain
    if rules is None:
        return []
    try:
        mac = rules.mac
    except (ChainKeyRequired, ChainKeyMismatch):
        return []
    check_manifest(data, mac, path)
    problem = manifest_at_problem(log, data)
    return [] if problem is None else [Finding("problem", path, None, problem)]


def seal_new_manifest(data: dict[str, Any], mac: Mac, log: LogReader) -> None:
    """Bind the manifest ``data`` of a session being made (created, forked) to the log
    just written for it, at its head (read from the log: its newest run checked)."""
    from .chain_session import read_head_hash

    if data.get("chain") is None:
        return
    text = read_head_hash(log)
    assert text is not None
    seq, _, value = text.partition(":")
    seal_manifest(data, mac, int(seq), bytes.fromhex(value))


def bind_new_manifest(io: FileIO, folder: str, data: dict[str, Any],
                      given: ChainKey | None) -> None:
    """Write again the manifest ``data`` of the session being made in ``folder`` (a
    temp folder in the store's ``sessions/``, its log written), bound to its chain at
    its head; nothing for a session without a chain. ``given``: the store's key."""
    if data.get("chain") is None:
        return
    from . import manifest
    from .chain_session import rules_of
    from .log import LogReader

    path = layout.session_manifest_path(folder)
    rules = rules_of(manifest.decode_as(data["chain"], manifest.ChainRecord, path), given,
                     folder, path)
    assert rules is not None
    log = LogReader(io, layout.log_dir(folder))
    log.chain = rules
    seal_new_manifest(data, rules.mac, log)
    manifest.write(io, path, data)


def manifest_sealer(writer: LogWriter) -> Callable[[dict[str, Any]], None] | None:
    """What binds each ``session.json`` a session's writer writes to its chain, at the
    writer's head (called under its lock); None for a session without a chain."""
    rules = writer.chain
    if rules is None:
        return None

    def seal(data: dict[str, Any]) -> None:
        link = writer.head_link
        assert link is not None
        seal_manifest(data, rules.mac, writer.head, link)

    return seal


def manifest_checker(rules: ChainRules | None, path: str
                     ) -> Callable[[Mapping[str, Any]], None] | None:
    """What checks each ``session.json`` a session's reader reads against its chain
    (:func:`check_manifest`); None for a session without a chain, and for a keyed one
    whose key is not at hand: its manifest then reads unchecked (so that its title and
    the end of its log still show), while everything of its log refuses."""
    if rules is None:
        return None
    try:
        mac = rules.mac
    except (ChainKeyRequired, ChainKeyMismatch):
        return None
    return lambda data: check_manifest(data, mac, path)


def uid_of(ident: identity.Identity | None) -> int:
    return identity.NO_UID if ident is None else ident.uid
