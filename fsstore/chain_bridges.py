"""Bridges: how a rewrite of a chained session's sealed files keeps the chain
(docs/FORMAT.md 3.4, "Rewrites and bridges").

A vacuum (its reclaim of records, ``reclaim.py``) and a repair rewrite sealed files. In
a chained session the frames of a rewritten file get new chain values: each member's
run is hashed again over the new bytes (:func:`rechain`), the first member from the
anchor its first frame already holds (what the file before it ends with: unchanged),
each later member anchored on the new last value of the member before (or on a fork's
junction made of it). Frame sizes stay, so every place in the log stays valid. The
file then verifies by the ordinary check of its runs; only values others recorded
differ: the anchor the next file's first frame stores (the file's old last value), a
checkpoint's or snapshot's ``chain``, ``session.json``'s ``chain.at``, a pin.

For those, ``session.json``'s ``chain`` gains ``bridges``: ``[[NEW, OLD], ...]`` (hex),
each saying "the chain value NEW stands where OLD was recorded". ``chain.mac`` covers
them, so a keyed bridge cannot be made without the key. Every check that compares a
recorded value with the log's takes equality or a bridge (``ChainRules.links``,
``ChainRules.anchors_on``). A bridge added for a value that is itself bridged gets the
older recorded values too (:func:`closure`), so repeated rewrites need no chains of
bridges.

The order of a rewrite (crash safety, and readers racing it): every file is computed
and written to a temp file and read back first; then ``session.json`` is written with
the bridges (atomically, sealed like every manifest a writer writes); then the files
are renamed over the old ones. A crash before the manifest write changes nothing;
after it, unused bridges are harmless; between two renames, old files link by
equality and new ones through the bridges. A reader that opened the session before
the bridges were written reads them again once (``ChainRules.refresh``,
:func:`bridges_reader`) before it reports a broken link.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import layout, manifest
from .chain import CHAIN_SIZE
from .checksum import crc32c
from .fsio import FileIO
from .log_format import (
    _U32,
    FRAME_CHAIN_START,
    FRAME_CHAINED,
    FRAME_CHAINED_BASE,
    FRAME_HEADER_SIZE,
    TRAILER_MAGIC,
    TRAILER_SIZE,
    frame_end,
)

if TYPE_CHECKING:
    from .chain_check import ChainRules
    from .session_metadata import ManifestFile

__all__ = ["Rechained", "as_chained", "bridge_map", "bridge_writer", "bridges_reader",
           "closure", "rechain"]

_HEADER = struct.Struct("<IIQII")  # crc length first_seq count type


def bridge_map(pairs: Iterable[Sequence[str]]) -> dict[bytes, frozenset[bytes]]:
    """The manifest's ``chain.bridges`` (hex pairs, checked by ``manifest.check_chain``)
    as NEW value: the OLD values it stands for."""
    found: dict[bytes, set[bytes]] = {}
    for new, old in pairs:
        found.setdefault(bytes.fromhex(new), set()).add(bytes.fromhex(old))
    return {new: frozenset(olds) for new, olds in found.items()}


def closure(bridges: Mapping[bytes, frozenset[bytes]], pairs: Iterable[tuple[bytes, bytes]]
            ) -> list[tuple[bytes, bytes]]:
    """The bridges to add for ``pairs`` ((NEW, OLD): NEW replaces OLD in the log), not
    yet in ``bridges``: each pair, and NEW for every value OLD already stood for (what a
    file or checkpoint written before an earlier rewrite recorded)."""
    added: list[tuple[bytes, bytes]] = []
    for new, old in pairs:
        if new == old:
            continue
        for recorded in (old, *sorted(bridges.get(old, ()))):
            pair = (new, recorded)
            if recorded != new and recorded not in bridges.get(new, ()) and pair not in added:
                added.append(pair)
    return added


def bridges_reader(rules: ChainRules, manifest_path: str, io: FileIO | None = None
                   ) -> Callable[[], Mapping[bytes, frozenset[bytes]]]:
    """What reads ``session.json``'s bridges again for ``rules`` (``ChainRules.refresh``):
    the file checked against the chain's MAC when it is at hand; the bridges ``rules``
    has when the file does not read or does not hold (then a link still fails, and the
    reader reports the damage it found)."""
    reader_io = FileIO() if io is None else io

    def refresh() -> Mapping[bytes, frozenset[bytes]]:
        from .chain_bindings import check_manifest
        from .errors import FsStoreError

        try:
            raw = manifest.read(reader_io, manifest_path, manifest.SESSION_FORMAT)
            record = manifest.decode_session(raw, manifest_path).chain
            if record is None:
                return rules.bridges
            check_manifest(raw, rules.mac, manifest_path)
            return bridge_map(record.bridges)
        except (FsStoreError, OSError, ValueError):
            return rules.bridges

    return refresh


def bridge_writer(file: ManifestFile, rules: ChainRules | None
                  ) -> Callable[[list[tuple[bytes, bytes]]], None] | None:
    """What adds bridges to ``session.json`` (``file``, the session writer's) and to
    ``rules``; None for a session without a chain. Called under the writer lock."""
    if rules is None:
        return None

    def add(pairs: list[tuple[bytes, bytes]]) -> None:
        added = closure(rules.bridges, pairs)
        if not added:
            return
        file.reload()  # another writer of a shared session may have written it
        updated = dict(file.raw)
        chain = dict(updated["chain"])
        chain["bridges"] = [*chain.get("bridges", []),
                            *([new.hex(), old.hex()] for new, old in added)]
        updated["chain"] = chain
        assert file.sealer is not None
        file.sealer(updated)
        data = manifest.encode(updated)
        file.io.atomic_write(file.path, data)
        file.raw = json.loads(data)
        file.meta = manifest.decode_session(file.raw, file.path)
        merged = {new: set(olds) for new, olds in rules.bridges.items()}
        for new, old in added:
            merged.setdefault(new, set()).add(old)
        rules.bridges = {new: frozenset(olds) for new, olds in merged.items()}

    return add


def as_chained(frame: bytes, original: bytes | memoryview) -> bytes:
    """The plain frame ``frame`` (type 1, its payload padded like ``original``'s) as a
    chained frame of the type and size of ``original`` (a type 3 or 4 frame, whose
    anchor it keeps), its chain value left as zeros for :func:`rechain` to fill."""
    (frame_type,) = _U32.unpack_from(original, 20)
    body = bytearray(frame[4:len(frame) - TRAILER_SIZE])
    _U32.pack_into(body, 16, frame_type)
    size = len(original)
    anchor = b""
    if frame_type == FRAME_CHAIN_START:
        at = size - TRAILER_SIZE - 2 * CHAIN_SIZE
        anchor = bytes(original[at:at + CHAIN_SIZE])
    out = b"".join((_U32.pack(crc32c(bytes(body))), bytes(body), anchor,
                    bytes(CHAIN_SIZE), _U32.pack(size), TRAILER_MAGIC))
    if len(out) != size:
        raise ValueError("the rewritten frame's size is not the original's")
    return out


class Rechained:
    """A file's members re-chained (:func:`rechain`): ``members`` (first seq, frames),
    and for each frame whose value changed, the seq it ends with: (old, new value)."""

    __slots__ = ("changed", "members")

    def __init__(self) -> None:
        self.members: list[tuple[int, bytes]] = []
        self.changed: dict[int, tuple[bytes, bytes]] = {}

    def link_out(self) -> int | None:
        """The seq the file's last frame ends with (None: no frame)."""
        if not self.members:
            return None
        frames = self.members[-1][1]
        (size,) = _U32.unpack_from(frames, len(frames) - TRAILER_SIZE)
        _crc, _length, first, count, _type = _HEADER.unpack_from(frames, len(frames) - size)
        return int(first + count - 1)


def rechain(rules: ChainRules, members: Sequence[tuple[int, bytes]],
            before: Sequence[tuple[int, bytes]], anchor: bytes | None = None) -> Rechained:
    """``members`` (a sealed file's frames, member by member, some rewritten, each frame
    of the size it had in ``before``, the file as it was) with every chain value
    computed again: the first member's run from the anchor its first frame holds (or
    ``anchor``, put in its place), each later member's from the new last value of the
    member before (its junction, for a fork's first own segment). A chained base (type
    5) does not depend on what is before it and stays."""
    from .chain_check import anchor_for

    mac = rules.mac
    out = Rechained()
    link: bytes | None = None
    for index, ((first, frames), (_same, old)) in enumerate(zip(members, before, strict=True)):
        buf = bytearray(frames)
        off, state = 0, None
        while off + FRAME_HEADER_SIZE <= len(buf):
            _crc, length, first_seq, count, frame_type = _HEADER.unpack_from(buf, off)
            end = frame_end(off, length, frame_type)
            value_at = end - TRAILER_SIZE - CHAIN_SIZE
            if frame_type == FRAME_CHAINED_BASE:
                link = bytes(buf[value_at - CHAIN_SIZE:value_at])  # it passes its anchor on
                off = end
                continue
            if frame_type == FRAME_CHAIN_START:
                if index == 0 and off == 0:
                    if anchor is not None:
                        buf[value_at - CHAIN_SIZE:value_at] = anchor
                elif link is not None:
                    made = anchor_for(mac, rules.forks, 0, first, -1, link)
                    assert made is not None
                    buf[value_at - CHAIN_SIZE:value_at] = made
                state = mac.frame_state()
            elif frame_type != FRAME_CHAINED or state is None:
                raise ValueError(f"frame of type {frame_type} in a chained run at seq "
                                 f"{first_seq}")
            state.update(memoryview(buf)[off:value_at])
            value = state.copy().digest()
            was = bytes(old[value_at:value_at + CHAIN_SIZE])
            buf[value_at:value_at + CHAIN_SIZE] = value
            if value != was:
                out.changed[first_seq + count - 1] = (was, value)
            state.update(memoryview(buf)[value_at:end])
            link, off = value, end
        out.members.append((first, bytes(buf)))
    return out


def recorded_seqs(target: Any, pinned: Iterable[int]) -> set[int]:
    """The seqs whose chain values are recorded outside the log, which a rewrite must
    bridge when their values change: the head (a snapshot at it), each checkpoint's
    seq, each snapshot's, and ``session.json``'s ``chain.at``."""
    seqs = {target.head, *pinned, *target.snapshots.seqs()}
    at = manifest_at_seq(target.io, target.path)
    if at is not None:
        seqs.add(at)
    return seqs


def manifest_at_seq(io: FileIO, session_path: str) -> int | None:
    """The seq of ``chain.at`` in the session's ``session.json`` (a value recorded there,
    which a rewrite bridges), None when it holds none or cannot be read."""
    from .chain_bindings import manifest_at
    from .errors import FsStoreError

    try:
        raw = manifest.read(io, layout.session_manifest_path(session_path),
                            manifest.SESSION_FORMAT)
        at = manifest_at(raw)
    except (FsStoreError, OSError, ValueError):
        return None
    return None if at is None else at[0]
