"""Records and snapshots as a hand or a newer fsstore could write them *into a chained
session* (docs/FORMAT.md 3.4): whoever holds the chain's key (anyone, unkeyed) makes
frames and files the chain vouches for, so a reader's checks of what they hold must
still catch what does not fit. tests/forge.py builds the unchained frames."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import fsstore
from fsstore import chain_bindings, snapshot
from fsstore.fsio import FileIO


def append_chained(store: fsstore.Store, session_id: str, entries: list[tuple[str, Any]],
                   *, ts: float = 1795240001.5, turn: int | None = None) -> int:
    """Append one chained frame of ``entries`` to a closed session, with its chain value,
    through the log writer (which checks nothing of what the entries hold); return the
    seq of its first entry."""
    session = store.open_session(session_id)
    try:
        writer = session._writer
        assert writer.head_link is not None, "the session has no chain"
        last_turn = max((e.turn for e in store.read_session(session_id).events()),
                        default=1)
        return writer.append(entries, last_turn if turn is None else turn, ts)
    finally:
        session.close()


def rewrite_snapshot(reader: fsstore.SessionReader, path: str,
                     change: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite a snapshot (or checkpoint) file of ``reader``'s session with its body
    changed by ``change``, its checksums recomputed and, in a chained session, its MAC
    recomputed under the session's chain: a file the chain vouches for."""
    folder = reader._snapshots
    file = folder.read(path) if folder.chain is not None else snapshot.read(FileIO(), path)
    body = dict(file.body)
    change(body)
    header, meta, seal = file.header, dict(file.meta), None
    if folder.chain is not None:
        link = meta.pop(chain_bindings.CHAIN_KEY)
        del meta[chain_bindings.MAC_KEY]
        seal = chain_bindings.SnapshotSeal(folder.chain.mac,
                                           chain_bindings.uid_of(folder.identity),
                                           link or bytes(32))
    with open(path, "wb") as handle:
        handle.write(snapshot.encode(header.kind, header.seq, header.log_start,
                                     header.position, meta, body, seal))


def edit_manifest(store: fsstore.Store, session_id: str,
                  change: Callable[[dict[str, Any]], None]) -> str:
    """Edit a session's ``session.json`` with ``change`` and, in a chained session,
    recompute its ``chain.mac`` under the session's chain, as a writer of a newer minor
    would: a manifest the chain vouches for. Return its path."""
    reader = store.read_session(session_id)
    rules = reader.chain_rules
    path = os.path.join(store.path, "sessions", session_id, "session.json")
    with open(path) as handle:
        data = json.load(handle)
    change(data)
    if rules is not None:
        data["chain"][chain_bindings.MAC_KEY] = chain_bindings.manifest_mac(
            rules.mac, data).hex()
    with open(path, "w") as handle:
        json.dump(data, handle)
    return path
