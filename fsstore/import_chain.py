"""The hash chain of a session imported into a store whose policy chains new sessions
(docs/FORMAT.md 3.4, "Which sessions", and 22).

An import writes the exported history anew, whole: each session gets a fresh chain of
the store's policy (under the store's key when it is keyed), as ``Store.create_session``
gives a new session, whatever chain the exported session had (or none). The chain
starts at its own genesis, from the session's uid and log start, and has no fork
junctions (``chain.forks`` empty): an imported fork holds its whole history, parent's
part included, and shares nothing with its parent. Each file is written as a chained
session's own writers write it:

- ``session.json``: version 2.0 with the policy's ``chain``, bound (``chain.at``,
  ``chain.mac``) to the log once it is written (``chain_bindings.bind_new_manifest``);
- the log: by the log writer under the chain's rules (``chain_session.rules_of``);
- a retained log's base: a chained base (``chain_base.py``). It stands for history
  the import does not hold, so the chain value after ``B`` that it passes on is made
  for it (:func:`import_anchor`), never a genesis: a base dropped and the next
  segment's header rewritten to start the log at ``B + 1`` fails the link;
- the snapshot at the head and every checkpoint: bound to the chain (the chain value
  the log holds at their position, and their MAC: :func:`seal_at`);
- vector collections: a chained write-ahead log and a bound ``collection.json``
  (FORMAT.md 15.9), through :func:`collection_chain`.

A store without a chain policy gets its sessions unchained, as before.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from . import chain_bindings, chain_session, identity, manifest
from .chain import CHAIN_SIZE, DOM_IMPORT, Mac
from .chain_base import encode_chained_base

if TYPE_CHECKING:
    from .chain_check import ChainRules
    from .log import LogPosition, LogReader
    from .store import Store
    from .vectors.collection_chain import CollectionChain

_U64 = struct.Struct("<Q")


def check_key(store: Store) -> None:
    """Refuse an import into ``store`` whose keyed policy's key is not at hand
    (ChainKeyRequired; ChainKeyMismatch for another key), before anything is read or
    written; nothing for a store without a policy or with an unkeyed one."""
    chain_session.new_session_chain(store.chain, store.chain_key, store.path)


def declare(store: Store, data: dict[str, Any]) -> bool:
    """Make ``data``, the manifest of a session being imported into ``store`` (its
    exported ``chain`` already dropped), declare the chain the store's policy gives a
    new session, at the version of a chained manifest. A manifest without a uid (from
    before uids) gets one: the genesis binds it. False for a store without a policy
    (nothing changed)."""
    chain = chain_session.new_session_chain(store.chain, store.chain_key, store.path)
    if chain is None:
        return False
    if data.get("uid") is None:
        data.update(identity.Identity.of(identity.mint()).manifest_fields())
    chain_session.declare(data, chain)
    return True


def rules_for(store: Store, data: dict[str, Any], session_path: str,
              manifest_path: str) -> ChainRules | None:
    """The rules the log of the session being built in ``session_path`` (a folder in
    ``store``'s ``sessions/``) is written and read by: its manifest ``data``'s chain,
    under the store's key; None for a manifest without a chain."""
    if data.get("chain") is None:
        return None
    record = manifest.decode_as(data["chain"], manifest.ChainRecord, manifest_path)
    return chain_session.rules_of(record, store.chain_key, session_path, manifest_path)


def import_anchor(mac: Mac, uid: int, last_seq: int) -> bytes:
    """The anchor of the base of an imported retained log, standing for seqs up to
    ``last_seq``: ``MAC(DOM_IMPORT || uid || last_seq)``, the chain value after a
    history the import does not hold. The base's value vouches for it (chain_base.py)."""
    return mac.value(DOM_IMPORT, _U64.pack(uid), _U64.pack(last_seq))


def base_frame(rules: ChainRules, uid: int, first_seq: int, last_seq: int,
               image: dict[str, Any], ts: float, turn: int, kind: str) -> bytes:
    """The chained base frame of an imported retained log (see :func:`import_anchor`),
    in the file whose header names ``uid``."""
    mac = rules.mac
    return encode_chained_base(mac, import_anchor(mac, uid, last_seq), first_seq, last_seq,
                               image, ts, turn, kind, uid)


def seal_at(rules: ChainRules | None, ident: identity.Identity | None, reader: LogReader,
            position: LogPosition, seq: int) -> chain_bindings.SnapshotSeal | None:
    """What binds a snapshot or checkpoint at ``position`` (after ``seq``) of the log
    ``reader`` reads (written whole): the chain value the log holds there, as a state
    load and verify compare it (a base's value at the base's end). A checkpoint of
    history the imported log does not hold (before a clear, inside a base) records 32
    zero bytes, no value any log has: nothing compares it (its position does not hold),
    its MAC binds it. None for a session without a chain."""
    if rules is None:
        return None
    link = None
    if reader.position_holds(position, seq):
        link = chain_bindings.link_at(reader, position)
    return chain_bindings.SnapshotSeal(rules.mac, chain_bindings.uid_of(ident),
                                       bytes(CHAIN_SIZE) if link is None else link)


def collection_chain(rules: ChainRules | None, ident: identity.Identity | None,
                     name: str) -> CollectionChain | None:
    """The chain the imported collection ``name`` is bound to; None for a session
    without a chain."""
    if rules is None:
        return None
    from .vectors.collection_chain import CollectionChain

    return CollectionChain(rules, chain_bindings.uid_of(ident), name)
