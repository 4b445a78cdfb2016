"""A vector collection bound to its session's hash chain (docs/FORMAT.md 3.4 and 15.9).

A collection of a chained session is bound two ways, both under the session's MAC
(SHA-256, or HMAC-SHA256 under its key):

- its write-ahead log ``wal/`` is a chained log (:class:`WalChain`): each record carries
  a chain value, each segment anchors on the last value of the one before. The log a
  collection is created with starts on the WAL genesis, ``MAC(DOM_WAL || session uid ||
  name)``; a seal moves the log's start to a later segment (section 15.8), whose anchor
  then stays what it was written with: a reader starting there takes it as stored, unless
  ``collection.json`` records the value there (then it must be that one);
- ``collection.json`` gets a ``chain`` key: ``wal``, the WAL's chain value after the
  ``wal_seq`` of each state it names (so the records replayed over a state are the ones
  its writer logged), ``sha256``, the SHA-256 of every file a state names, and ``mac``,
  ``MAC(DOM_COLLECTION || session uid || name || canonical JSON of the manifest without
  chain.mac)``. So no field, file or log record can be changed, and no file, log or
  manifest of another collection or session copied in, without a MAC that fails.

Opening checks the MAC, the SHA-256 of the deleted-rows files (small) and the WAL value
at the state it opens; the shard files (``.vec.npy``, ``.docs``: large, memory-mapped,
read only where a search needs them) are hashed by verify only. Why the WAL is chained
itself rather than its records' digests logged in the session's log: the collection is
written under the session's lock but not through its log (a reader-only open of the
session reads it), and a chained WAL checks each record where it is replayed, with the
log code that checks the session's.
"""

from __future__ import annotations

import json
import os
import struct
from typing import TYPE_CHECKING, Any

from .. import layout
from ..chain import CHAIN_SIZE, DOM_COLLECTION, DOM_WAL, Mac
from ..chain_check import ChainRules
from ..errors import CorruptionError
from ..fsio import FileIO
from ..log_format import CHAIN_FIELDS, FRAME_CHAIN_START, TRAILER_SIZE, _parse_frame
from ..segment_header import SEGMENT_HEADER_SIZE
from .shard_files import open_regular

if TYPE_CHECKING:
    from ..log import LogReader
    from ..session_reader import SessionReader

_U64 = struct.Struct("<Q")
_NAME_LEN = struct.Struct("<H")


def broken(what: str, path: str) -> CorruptionError:
    """The error for a collection file that does not match the session's chain."""
    return CorruptionError(f"{what}: it does not match the chain (changed, or another "
                           "collection's or session's); restore the collection from a backup",
                           path=path)


class CollectionChain:
    """The chain a collection of a chained session is bound to: the session's rules
    (whose MAC raises ChainKeyRequired without a keyed chain's key), its uid, and the
    collection's name."""

    __slots__ = ("name", "rules", "session_uid")

    def __init__(self, rules: ChainRules, session_uid: int, name: str) -> None:
        self.rules, self.session_uid, self.name = rules, session_uid, name

    @property
    def mac(self) -> Mac:
        return self.rules.mac

    def genesis(self) -> bytes:
        """The anchor of the WAL's first segment (seq 1) when the collection is made."""
        name = self.name.encode()
        return self.mac.value(DOM_WAL, _U64.pack(self.session_uid),
                              _NAME_LEN.pack(len(name)), name)

    def wal_rules(self, data: dict[str, Any]) -> WalChain:
        """The rules the WAL is read and written by, given ``collection.json`` (its
        ``chain.wal`` values anchor a moved log start)."""
        return WalChain(self, known_values(data))

    def manifest_mac(self, data: dict[str, Any]) -> str:
        """The MAC of the manifest ``data`` (its ``chain.mac`` left out), hex."""
        body = dict(data)
        chain = dict(body.get("chain") or {})
        chain.pop("mac", None)
        body["chain"] = chain
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"),
                               ensure_ascii=False, allow_nan=False).encode()
        name = self.name.encode()
        return self.mac.value(DOM_COLLECTION, _U64.pack(self.session_uid),
                              _NAME_LEN.pack(len(name)), name, canonical).hex()

    def seal(self, data: dict[str, Any], folder: str, io: FileIO,
             before: dict[str, Any] | None, wal_value: bytes) -> dict[str, Any]:
        """``data`` (a manifest about to be written) with its ``chain``: the WAL value
        after its ``wal_seq`` (``wal_value``) and those of its pinned states (from
        ``before``, the manifest it replaces), every file's SHA-256 (those ``before``
        records kept, the others read from ``folder``), and the MAC over all of it."""
        old = (before or {}).get("chain") or {}
        old_wal = {str(g): v for g, v in (old.get("wal") or [])}
        old_hashes = old.get("sha256") or {}
        wal = [[data["generation"], wal_value.hex()]]
        names: set[str] = set()
        for entry in data["shards"]:
            names.update(_files(entry))
        for pin in data.get("pinned") or []:
            value = old_wal.get(str(pin["generation"]))
            if value is not None:
                wal.append([pin["generation"], value])
            for entry in pin["shards"]:
                names.update(_files(entry))
        hashes = {name: old_hashes.get(name) or file_sha256(io, os.path.join(folder, name))
                  for name in sorted(names)}
        mac = self.mac
        chain: dict[str, Any] = {"alg": mac.alg}
        if mac.key_id is not None:
            chain["key_id"] = mac.key_id
        chain.update({"wal": wal, "sha256": hashes})
        sealed = dict(data)
        sealed["chain"] = chain
        chain["mac"] = self.manifest_mac(sealed)
        return sealed

    def check_manifest(self, data: dict[str, Any], path: str) -> None:
        """CorruptionError naming the chain unless ``data`` (a read ``collection.json``)
        carries a chain whose MAC holds for this session and name."""
        chain = data.get("chain")
        if not isinstance(chain, dict) or not isinstance(chain.get("mac"), str):
            raise broken("collection.json has no chain, though its session has one (it was "
                         "stripped, or the file is from an unchained session)", path)
        if chain.get("alg") != self.mac.alg or chain.get("key_id") != self.mac.key_id:
            raise broken(f"collection.json names the chain {chain.get('alg')!r} (key "
                         f"{chain.get('key_id')}), its session {self.mac.alg!r} (key "
                         f"{self.mac.key_id})", path)
        if not _same(chain["mac"], self.manifest_mac(data)):
            key = "; or the key is not the one it was written with" if self.mac.keyed else ""
            raise broken("collection.json's MAC fails (a field changed, or the file is "
                         f"another collection's than {self.name!r} of this session{key})",
                         path)

    def check_files(self, io: FileIO, folder: str, data: dict[str, Any],
                    names: list[str]) -> None:
        """CorruptionError naming the first of ``names`` whose SHA-256 is not the one
        the (checked) manifest records."""
        hashes = (data.get("chain") or {}).get("sha256") or {}
        for name in names:
            path = os.path.join(folder, name)
            if hashes.get(name) != file_sha256(io, path):
                raise broken(f"{name}'s SHA-256 is not the one collection.json records",
                             path)

    def check_wal(self, reader: LogReader, data: dict[str, Any], generation: int,
                  wal_seq: int, log_start: int) -> None:
        """CorruptionError naming the chain unless the WAL's value after ``wal_seq`` is
        the one the manifest records for the state of ``generation`` (the records
        replayed over that state are then the ones its writer logged: the WAL's own
        checks tie every later record to that value)."""
        recorded = known_by_generation(data).get(generation)
        found = value_after(reader, wal_seq, log_start, self.wal_rules(data))
        if recorded is None or found is None or not _same(recorded.hex(), found.hex()):
            raise broken(f"the write-ahead log's chain value after seq {wal_seq} is not "
                         f"the one collection.json records for generation {generation} (the "
                         "log replaced, or records before it changed)", reader.path)


def of_session(session: SessionReader, name: str) -> CollectionChain | None:
    """The chain collection ``name`` of ``session`` is bound to; None when the session
    has no chain (its collections are as they always were)."""
    rules = session.chain_rules
    if rules is None:
        return None
    from ..identity import NO_UID

    return CollectionChain(rules, NO_UID if session.identity is None
                           else session.identity.uid, name)


def of_log(log: LogReader, name: str) -> CollectionChain | None:
    """As :func:`of_session`, from the session's log reader (its chain and identity),
    for a count that reads a session's folder without a ``SessionReader``."""
    if log.chain is None:
        return None
    from ..identity import NO_UID

    return CollectionChain(log.chain, NO_UID if log.identity is None
                           else log.identity.uid, name)


class WalChain(ChainRules):
    """The rules of a collection's WAL (module docstring): anchors continue the value
    before them, the first segment's is the WAL genesis, and the start a seal moved
    the log to anchors as stored, or on the value ``collection.json`` records there."""

    __slots__ = ("_bound", "_known")
    moves_start = True

    def __init__(self, bound: CollectionChain, known: dict[int, bytes]) -> None:
        super().__init__(bound.rules.mac)
        self._bound, self._known = bound, known

    def anchor(self, uid: int, first_seq: int, log_start: int, link: bytes | None
               ) -> bytes | None:
        if link is not None:
            return link
        if first_seq != log_start:
            return None
        if first_seq == 1:
            return self._bound.genesis()
        return self._known.get(first_seq - 1)


def _same(a: str, b: str) -> bool:
    import hmac

    return hmac.compare_digest(a.encode(), b.encode())


def _files(entry: dict[str, Any]) -> list[str]:
    names = [layout.shard_vectors_name(entry["name"]), layout.shard_docs_name(entry["name"])]
    return names if entry.get("deleted") is None else [*names, entry["deleted"]]


def known_by_generation(data: dict[str, Any]) -> dict[int, bytes]:
    """``chain.wal`` of a manifest: each state's generation and WAL value (malformed
    entries left out: the MAC check refuses such a manifest anyway)."""
    found = {}
    for item in (data.get("chain") or {}).get("wal") or []:
        try:
            generation, value = item
            raw = bytes.fromhex(value)
        except (TypeError, ValueError):
            continue
        if isinstance(generation, int) and len(raw) == CHAIN_SIZE:
            found[generation] = raw
    return found


def known_values(data: dict[str, Any]) -> dict[int, bytes]:
    """The WAL values a manifest records, by the ``wal_seq`` they are after."""
    seqs = {data.get("generation"): data.get("wal_seq")}
    seqs.update({p.get("generation"): p.get("wal_seq") for p in data.get("pinned") or []
                 if isinstance(p, dict)})
    return {seq: value for generation, value in known_by_generation(data).items()
            if isinstance(seq := seqs.get(generation), int)}


def value_after(reader: LogReader, seq: int, log_start: int, rules: ChainRules
                ) -> bytes | None:
    """The WAL's chain value after ``seq``: the value of the frame ending at it, the
    anchor of a segment starting after it, or (at the log's start) the anchor the rules
    give; None when the log holds none of those. The segments it reads have their runs
    checked (``reader.chain``)."""
    segments = [s for s in reader.list_segments() if s >= log_start]
    holding = [s for s in segments if s <= seq + 1]
    if not holding:
        return None
    first = holding[-1]
    scan = reader.scan_segment(first, first == segments[-1], after_seq=seq, until_seq=seq)
    for _ in scan:
        pass
    buf = bytes(scan.buf)
    view, off = memoryview(buf), SEGMENT_HEADER_SIZE - scan.origin
    while (frame := _parse_frame(buf, view, off, scan.end - scan.origin)) is not None:
        end = off + frame.size
        if frame.first_seq == seq + 1 and frame.frame_type == FRAME_CHAIN_START:
            at = end - TRAILER_SIZE - 2 * CHAIN_SIZE
            return buf[at:at + CHAIN_SIZE]
        if frame.first_seq + frame.event_count - 1 == seq and frame.frame_type in CHAIN_FIELDS:
            at = end - TRAILER_SIZE - CHAIN_SIZE
            return buf[at:at + CHAIN_SIZE]
        off = end
    if first == seq + 1:  # a segment without records after seq: the value before it
        if first == log_start:
            return rules.anchor(0, first, log_start, None)
        from ..chain_writer import last_link

        return last_link(reader, first)
    return None


def file_sha256(io: FileIO, path: str) -> str:
    """The SHA-256 of a whole collection file, hex (read up to its size when opened)."""
    import hashlib

    fd = open_regular(io, path)
    try:
        size, offset, digest = io.size(fd), 0, hashlib.sha256()
        while offset < size:
            chunk = io.pread(fd, min(8 << 20, size - offset), offset)
            if not chunk:
                break
            digest.update(chunk)
            offset += len(chunk)
        return digest.hexdigest()
    finally:
        io.close(fd)
