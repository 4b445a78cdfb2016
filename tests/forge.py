"""Forge checksum-valid records, as a hand or a newer fsstore could write them.

The frame is built from docs/FORMAT.md (section 3), not with fsstore's writer, so that
the writer's own checks (which refuse such values) do not stand in the way: readers must
cope with whatever a valid frame holds.
"""

from __future__ import annotations

import os
import struct
from typing import Any

import msgspec
from crc32c import crc32c

import fsstore
from fsstore import layout


def frame(first_seq: int, ts: float, turn: int, entries: list[tuple[str, Any]]) -> bytes:
    payload = msgspec.msgpack.encode([ts, turn, [list(entry) for entry in entries]])
    pad = -(24 + len(payload)) & 7
    body = (struct.pack("<IQII", len(payload), first_seq, len(entries), 1) + payload
            + b"\0" * pad + struct.pack("<I", 24 + len(payload) + pad + 8) + b"FSE\n")
    return struct.pack("<I", crc32c(body)) + body


def append_raw(store: fsstore.Store, session_id: str, entries: list[tuple[str, Any]], *,
               ts: float = 1795240001.5, turn: int | None = None) -> int:
    """Append one frame of ``entries`` to a closed session's last segment; return the seq
    of its first entry."""
    head, last_turn, last, data, end = _log_end(store, session_id)
    with open(last, "r+b") as handle:
        handle.seek(end)
        handle.write(frame(head + 1, ts, last_turn if turn is None else turn, entries))
    return head + 1


def _log_end(store: fsstore.Store, session_id: str) -> tuple[int, int, str, bytes, int]:
    """A closed session's head and last turn, its last segment's path and bytes, and
    where its frames end in them."""
    reader = store.read_session(session_id)
    head = reader.head
    last_turn = max((event.turn for event in reader.events()), default=1)
    log = layout.log_dir(os.path.join(store.path, "sessions", session_id))
    last = os.path.join(log, layout.segment_name(max(layout.segment_seqs(os.listdir(log)))))
    with open(last, "rb") as handle:
        data = handle.read()
    return head, last_turn, last, data, max(64, len(data.rstrip(b"\0")))


def chained_frame(run: bytes, mac: Any, anchor: bytes | None, first_seq: int, ts: float,
                  turn: int, entries: list[tuple[str, Any]]) -> bytes:
    """A chained frame (FORMAT.md 3.4) continuing ``run``, the bytes of its segment's run
    before it (from byte 64): of type 4 holding ``anchor`` when the run is empty, else of
    type 3; its chain value the MAC ``mac`` of the run up to it."""
    payload = msgspec.msgpack.encode([ts, turn, [list(entry) for entry in entries]])
    pad = -(24 + len(payload)) & 7
    ctype, anchor_bytes = (3, b"") if anchor is None else (4, anchor)
    size = 24 + len(payload) + pad + len(anchor_bytes) + 32 + 8
    body = struct.pack("<IQII", len(payload), first_seq, len(entries), ctype) + payload
    head = struct.pack("<I", crc32c(body + b"\0" * pad)) + body + b"\0" * pad + anchor_bytes
    state = mac.frame_state()
    state.update(run + head)
    return head + state.digest() + struct.pack("<I", size) + b"FSE\n"


def append_raw_chained(store: fsstore.Store, session_id: str,
                       entries: list[tuple[str, Any]], *, ts: float = 1795240001.5,
                       turn: int | None = None) -> int:
    """``append_raw`` for a session with an unkeyed (SHA-256) chain: the frame chained
    as its writer would chain it, as anyone can recompute an unkeyed chain (FORMAT.md 3.4,
    "What it does not catch alone"). Return the seq of its first entry."""
    from fsstore.chain import Mac, genesis
    from fsstore.segment_header import decode_segment_header

    head, last_turn, last, data, end = _log_end(store, session_id)
    header = decode_segment_header(data[:64], last)
    mac = Mac(None)
    anchor = None if end > 64 else genesis(mac, header.uid, header.log_start)
    assert end > 64 or header.first_seq == header.log_start  # (a genesis run only)
    with open(last, "r+b") as handle:
        handle.seek(end)
        handle.write(chained_frame(data[64:end], mac, anchor, head + 1, ts,
                                   last_turn if turn is None else turn, entries))
    return head + 1
