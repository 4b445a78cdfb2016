"""The chained base frame (type 5, docs/FORMAT.md 3.3 and 3.4): what retention writes in
place of the history it drops from a chained session.

A base stands for seqs ``L`` (the log start) to ``B``. Chained, it carries two values
after its padding, as a segment's first frame does:

- its **anchor**: ``c_B``, the chain value after ``B`` (the last value of the dropped
  history), which the segment after the base already anchors on, so no record after
  the base is rewritten and every later chain value, and ``head_hash``, stay as they
  were;
- its **value**: the MAC of the frame up to it (the base is its member's whole run),
  which vouches for the image, the seqs and the anchor.

After a base, the next run anchors on the base's anchor (or on a fork's junction made
of it), not on its value: the base *passes on* its anchor. The genesis of the history
it stands for is gone, so the base's value binds the session in its place: it is the
MAC of the genesis of the file's header uid, then of the frame, which binds the base
to the session and the key (keyed) or to its bytes (unkeyed; see FORMAT.md 3.4 for
what an unkeyed chain cannot tell about a base rewritten with its value recomputed).
"""

from __future__ import annotations

import struct
from typing import Any

from .chain import CHAIN_SIZE, DOM_FRAME, Mac, genesis
from .checksum import crc32c
from .log_format import (
    FRAME_CHAINED_BASE,
    TRAILER_MAGIC,
    TRAILER_SIZE,
    base_payload,
    frame_body,
)

_U32 = struct.Struct("<I")


def encode_chained_base(mac: Mac, anchor: bytes, first_seq: int, last_seq: int,
                        image: dict[str, Any], ts: float, turn: int, kind: str,
                        uid: int) -> bytes:
    """The chained base frame standing for seqs ``first_seq`` to ``last_seq``, anchored
    on ``anchor`` (the chain value after ``last_seq``), in the file whose header names
    ``uid`` (what :func:`base_value` binds)."""
    if len(anchor) != CHAIN_SIZE:
        raise ValueError(f"an anchor is {CHAIN_SIZE} bytes, not {len(anchor)}")
    body = frame_body(base_payload(image, ts, turn, kind), first_seq,
                      last_seq - first_seq + 1, FRAME_CHAINED_BASE)
    head = _U32.pack(crc32c(body)) + body  # (the checksum stops before the chain fields)
    value = base_value(mac, uid, first_seq, head, anchor)
    size = len(head) + 2 * CHAIN_SIZE + TRAILER_SIZE
    return b"".join((head, anchor, value, _U32.pack(size), TRAILER_MAGIC))


def base_value(mac: Mac, uid: int, log_start: int, *frame: bytes | memoryview) -> bytes:
    """A chained base's value: the MAC of the genesis of its file's header ``uid`` at the
    log start, then of the frame up to its value. The genesis ties the base, and so the
    history after it, to the session, as it ties the first segment of a log no retention
    shortened: another session's log (its headers' uid rewritten, which takes no key)
    fails it."""
    return mac.value(DOM_FRAME, genesis(mac, uid, log_start), *frame)
