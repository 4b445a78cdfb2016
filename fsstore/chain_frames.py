"""Encoding chained frames (docs/FORMAT.md 3.4): the run of one segment.

A chained frame carries, after its padding, the *chain value*: the MAC (``chain.Mac``,
frame domain) of every byte of its segment from the first frame (byte 64, or a compacted
member's start) up to that value. The first frame of a segment is of type 4 and holds,
before its value, the *anchor*: the link value the segment continues (the last chain value
of the segment before, or the genesis or junction value where a chain starts). Later
frames are of type 3. So one hash call over a segment, up to its last frame's value,
verifies that frame and with it every byte before it; and the links between segments are
byte compares.

A :class:`RunState` feeds each frame to a running MAC as it encodes it, and copies that
MAC to finalise the frame's value: a frame costs the hashing of its own bytes only, never
of what came before it.

The frame's checksum covers the bytes from its length field to its padding, not the chain
fields: the value covers the frame's checksum, so the checksum cannot cover the value
(FORMAT.md 3.4 says why it was not the other way round).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

from .chain import CHAIN_SIZE, FrameStep, HashState, Mac
from .checksum import crc32c
from .log_format import (
    FRAME_CHAIN_START,
    FRAME_CHAINED,
    FRAME_HEADER_SIZE,
    TRAILER_MAGIC,
    TRAILER_SIZE,
    encode_payload,
    frame_end,
)

_U32 = struct.Struct("<I")
_FIELDS = struct.Struct("<IQII")  # a frame's header after its crc (log_format)
_TRAILER = struct.Struct("<I4s")  # frame size, trailer magic (after the chain value)
_ZEROS = bytes(8)


class RunState:
    """The chain of one segment (or compacted member) being written, from its anchor.

    ``link`` is the chain value after the last frame encoded (the anchor before the
    first): what the next segment anchors on. The state moves on as each frame is
    encoded, so a frame that is not written must not be followed by another from the
    same state: :meth:`copy` before encoding, to go back."""

    __slots__ = ("_first", "_outer", "_state", "_step", "anchor", "link", "mac")

    def __init__(self, mac: Mac, anchor: bytes) -> None:
        if len(anchor) != CHAIN_SIZE:
            raise ValueError(f"an anchor is {CHAIN_SIZE} bytes, not {len(anchor)}")
        self.mac = mac
        self.anchor = bytes(anchor)
        self.link = self.anchor
        # The running SHA-256 of the run (keyed: HMAC's inner one), HMAC's outer hash
        # (None unkeyed), and the step that hashes a frame with them in one call: every
        # append finalises a value, and a wrapper's calls would cost as much as the hash.
        parts = mac.frame_parts()
        self._state: HashState = parts.state
        self._step: FrameStep = parts.step
        self._outer: HashState | None = parts.outer
        self._first = True

    def copy(self) -> RunState:
        """An independent copy of this run as it stands."""
        other = RunState.__new__(RunState)
        other.mac, other.anchor, other.link = self.mac, self.anchor, self.link
        other._state, other._step, other._outer = self._state.copy(), self._step, self._outer
        other._first = self._first
        return other

    @property
    def started(self) -> bool:
        """Whether a frame was encoded: the next one is then of type 3, not 4."""
        return not self._first

    def size_of(self, payload_length: int) -> int:
        """The size of the next frame, its payload ``payload_length`` bytes."""
        return ((payload_length + 31) & ~7) + (72 if self._first else 40)

    def take(self, frames: bytes | memoryview) -> bool:
        """Move on over ``frames``: whole chained frames another writer of this run
        wrote after those this state holds (or, for a state not started, from the run's
        start: the first must then hold this run's anchor). The last one's chain value
        must be the MAC of the run up to it, one hash call; False, and nothing moved,
        when it is not, or the frames do not continue this run."""
        if not frames:
            return True
        view = memoryview(frames)
        (frame_type,) = _U32.unpack_from(view, 20)
        if frame_type != (FRAME_CHAINED if self.started else FRAME_CHAIN_START):
            return False
        if not self.started:
            (length,) = _U32.unpack_from(view, 4)
            at = frame_end(0, length, FRAME_CHAIN_START) - TRAILER_SIZE - 2 * CHAIN_SIZE
            if view[at:at + CHAIN_SIZE] != self.anchor:
                return False
        value_at = len(view) - TRAILER_SIZE - CHAIN_SIZE
        if value_at < 0:
            return False
        state = self._state.copy()
        state.update(view[:value_at])
        # the value of what the state holds: a step feeding nothing, on a copy
        value = self._step(state.copy(), b"", b"", b"", b"", self._outer)
        if value != view[value_at:value_at + CHAIN_SIZE]:
            return False
        state.update(view[value_at:])
        self._state, self._first, self.link = state, False, value
        return True

    def encode(self, first_seq: int, ts: float, turn: int, entries: Sequence[tuple[str, Any]],
               max_bytes: int, *, check: bool = True) -> bytes:
        """The chained frame holding ``entries`` as seqs ``first_seq ..``, refused as
        ``log_format.encode_frame`` refuses (nothing moves on then)."""
        payload = encode_payload(ts, turn, entries, max_bytes, check=check)
        return self.frame(payload, first_seq, len(entries))

    def frame(self, payload: bytes, first_seq: int, count: int) -> bytes:
        """The chained frame of an encoded ``payload`` of ``count`` events."""
        # Every append runs this: three packs, two joins, one checksum and one hash step,
        # nothing else (tools/bench_chain.py --appends).
        length = len(payload)
        body = b"".join((_FIELDS.pack(length, first_seq, count,
                                      FRAME_CHAIN_START if self._first else FRAME_CHAINED),
                         payload, _ZEROS[:-(length + FRAME_HEADER_SIZE) & 7]))
        head = _U32.pack(crc32c(body))
        anchor = self.anchor if self._first else b""
        # the value covers the frame up to it; the next one covers this value, and this
        # frame's size and trailer magic (the step feeds them after making the value)
        trailer = _TRAILER.pack(len(body) + len(anchor) + 4 + CHAIN_SIZE + TRAILER_SIZE,
                                TRAILER_MAGIC)
        value = self._step(self._state, head, body, anchor, trailer, self._outer)
        self._first, self.link = False, value
        return b"".join((head, body, anchor, value, trailer))
