"""Reclaim of deleted messages: which messages a vacuum redacts, and the redacted
record that replaces each of their versions (docs/FORMAT.md, sections 17.2 and 20.1).

A deleted message's add and edit records stay in the log after its delete (the
tombstone), so its content stays on disk. A vacuum with ``message_grace`` redacts them:
a message is *reclaimable* when it is deleted at the head ``P``, its delete is at least
``message_grace`` seconds old, and it is live at no checkpoint's seq (a checkpoint reads
exactly as before). ``reclaim.py`` rewrites its records, in the sealed files and
before ``P``'s frame, as :func:`redact` makes them, in frames of their old size.

A redacted record is a message record of the same op and version, its ``was`` (the
usage fold's) kept, ``"redacted": true`` added, and of its message only what a fold or
the message index reads: the id, the role, the metadata's ``model``, ``provider``,
``usage`` and ``cost``, and of its parts the tool calls (``call_id`` only, ``name``
empty) and the tool results that were errors (``call_id`` and ``is_error``). So the
usage fold (tokens, cost, roles, tool calls and errors) folds exactly as before, the
index rows of the record (its id hash, its call hashes) still match it, and a later
tool result may still answer one of its calls. Reads give a redacted version with no
parts and ``redacted=True`` (``messages.py``).
"""

from __future__ import annotations

import itertools
from typing import Any

import msgspec

from .log import LogReader
from .log_format import refuse_msgpack_ext
from .message_types import MessageRecord
from .snapshot import CheckpointDir
from .turns import MESSAGE_RECORD

__all__ = ["MESSAGE_MARKER", "reclaimable_messages", "redact"]

#: The bytes every message record's payload holds.
MESSAGE_MARKER = MESSAGE_RECORD.encode()
#: The metadata a redacted record keeps: what the usage fold reads, and the provider.
KEPT_METADATA = ("model", "provider", "usage", "cost")

_data_decoder = msgspec.msgpack.Decoder(ext_hook=refuse_msgpack_ext)
_record_decoder = msgspec.msgpack.Decoder(MessageRecord, ext_hook=refuse_msgpack_ext)


def reclaimable_messages(log: LogReader, head: int, checkpoints: CheckpointDir,
                         deleted_before: float) -> frozenset[str]:
    """The ids of the messages deleted at ``head`` whose delete's ts is at most
    ``deleted_before`` and that are live at no checkpoint's seq. Reads the frames of
    the log that hold message records."""
    first_seen: dict[str, int | None] = {}  # id -> seq of its add (None: before the log)
    deleted: dict[str, tuple[int, float]] = {}  # id -> (seq, ts) of its delete
    scans = log.scans(0, head, marker=MESSAGE_MARKER)
    for event in itertools.chain.from_iterable(scans):
        if event.kind != MESSAGE_RECORD or event.seq > head:
            continue
        data = event.data
        if not isinstance(data, dict):
            continue
        op = data.get("op")
        message = data.get("message")
        message_id = data.get("id") if op == "delete" else (
            message.get("id") if isinstance(message, dict) else None)
        if not isinstance(message_id, str):
            continue
        if message_id not in first_seen:
            # An edit or a delete first: the message was added in history a retention
            # dropped, so it was live before the log start.
            first_seen[message_id] = event.seq if op == "add" else None
        if op == "delete":
            deleted[message_id] = (event.seq, event.ts)
    if not deleted:
        return frozenset()
    seqs = _checkpoint_seqs(checkpoints)
    found = set()
    for message_id, (seq, ts) in deleted.items():
        if ts > deleted_before:
            continue
        start = first_seen.get(message_id)
        # Live from its add's seq up to (not at) its delete's seq.
        if any((start is None or start <= at) and at < seq for at in seqs):
            continue
        found.add(message_id)
    return frozenset(found)


def _checkpoint_seqs(checkpoints: CheckpointDir) -> list[int]:
    """The seq of every checkpoint; a damaged one raises (the caller then redacts
    nothing: which messages it holds is unknown)."""
    seqs = []
    for checkpoint_id in checkpoints.ids():
        try:
            file = checkpoints.read(checkpoints.file_path(checkpoint_id), with_body=False)
        except FileNotFoundError:
            continue  # deleted meanwhile
        seqs.append(file.header.seq)
    return seqs


def redact(raw: msgspec.Raw | bytes, reclaimable: frozenset[str]) -> dict[str, Any] | None:
    """The data of the redacted record replacing the message record data ``raw``, or
    None when it stays: not an add or edit of a reclaimable message, redacted already,
    or not of the message schema (a newer fsstore's, or a hand's)."""
    try:
        record = _record_decoder.decode(raw)
        data = _data_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
        return None
    if (record.op == "delete" or record.redacted or not isinstance(data, dict)
            or record.message_id not in reclaimable):
        return None
    message = data["message"]
    stored: dict[str, Any] = {"id": message["id"], "role": message["role"]}
    parts = []
    for part in message.get("parts") or ():
        kind = part.get("type")
        if kind == "tool_call":
            parts.append({"type": "tool_call", "call_id": part["call_id"], "name": ""})
        elif kind == "tool_result" and part.get("is_error"):
            parts.append({"type": "tool_result", "call_id": part["call_id"],
                          "is_error": True})
    if parts:
        stored["parts"] = parts
    metadata = message.get("metadata") or {}
    kept = {key: metadata[key] for key in KEPT_METADATA if metadata.get(key) is not None}
    if kept:
        stored["metadata"] = kept
    out = {key: value for key, value in data.items() if key not in ("message", "pad")}
    out["message"] = stored
    out["redacted"] = True
    return out
