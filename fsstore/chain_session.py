"""Which sessions have a hash chain, under which key, and where it stands
(docs/FORMAT.md 3.4).

A session has a chain when its ``session.json`` has a ``chain`` key: ``{alg, key_id?,
forks?}`` (``manifest.ChainRecord``), written when the session is created in a store
whose policy chains new sessions (``fsstore.json``'s ``chain``, ``open_store(chain=)``),
or when it is forked from a chained session: a fork continues its parent's chain, its
own records anchored on a junction (``forks`` lists every junction of its history).
Such a manifest is of version 2.0, which fsstore before chains refuses.

:func:`rules_of` turns the record into the ``ChainRules`` a session's log reader
checks and its writer writes by. A keyed chain needs its key (``ChainKey``: given to
``open_store(chain_key=)``, else from ``FSSTORE_CHAIN_KEY`` or
``FSSTORE_CHAIN_KEY_FILE``); without it, or with another key, the rules have no MAC:
whatever needs the chain (a read of the records, a write, a fork) raises
ChainKeyRequired (ChainKeyMismatch), and the manifest and the end of the log still
read.

``head_hash`` (:func:`read_head_hash`, :func:`writer_head_hash`) is ``"SEQ:HEX"``: the
chain value after the head, which vouches for the whole history before it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from . import identity, manifest
from .chain import KEYED, ChainKey, Mac, genesis, mac_for
from .chain_check import NOT_CHECKED, UNCHECKED, ChainRules
from .errors import FsStoreError
from .fsio import FileIO
from .log_format import SegmentScan

if TYPE_CHECKING:
    from .log import LogReader
    from .log_writer import LogWriter
    from .manifest import ChainRecord


def given_key(value: ChainKey | bytes | str | os.PathLike[str] | None,
              store_root: str) -> ChainKey | None:
    """The key ``open_store(chain_key=)`` was given: a ChainKey, the key's bytes, or the
    path of a key file (refused inside the store); None when none was given (then the
    environment's is looked up when a keyed chain needs it)."""
    if value is None or isinstance(value, ChainKey):
        return value
    if isinstance(value, (bytes, bytearray)):
        return ChainKey(bytes(value))
    return ChainKey.from_file(os.fspath(value), store_root=store_root)


def key_for(given: ChainKey | None, store_root: str) -> ChainKey | None:
    """The key at hand: the one given, else the environment's (InvalidSetting for a key
    the environment names that is no key)."""
    return given if given is not None else ChainKey.from_env(store_root=store_root)


def store_root_of(session_path: str) -> str:
    """The store a session folder (``ROOT/sessions/ID``) is in."""
    return os.path.dirname(os.path.dirname(os.path.abspath(session_path)))


def rules_of(record: ChainRecord | None, given: ChainKey | None, session_path: str,
             manifest_path: str) -> ChainRules | None:
    """The rules a session's chain (its manifest's ``record``) is read and written by;
    None for a session without a chain. A keyed chain whose key is not at hand gets
    rules whose MAC raises (see the module's docstring)."""
    if record is None:
        return None
    forks = [(seq, identity.parse(uid, manifest_path)) for seq, uid in record.forks]
    if record.alg != KEYED:
        rules = ChainRules(Mac(), forks)
    else:
        try:
            mac = mac_for(record.alg, record.key_id,
                          key_for(given, store_root_of(session_path)))
        except FsStoreError as exc:
            kind, message = type(exc), f"{manifest_path}: {exc}"
            return ChainRules(None, forks, refusal=lambda: kind(message))
        rules = ChainRules(mac, forks)
    from .chain_bridges import bridge_map, bridges_reader

    rules.bridges = bridge_map(record.bridges)
    rules.refresh = bridges_reader(rules, manifest_path)
    return rules


def record_fields(record: ChainRecord) -> dict[str, Any]:
    """``record`` as the JSON of a manifest's ``chain``."""
    fields: dict[str, Any] = {"alg": record.alg}
    if record.key_id is not None:
        fields["key_id"] = record.key_id
    if record.forks:
        fields["forks"] = [[seq, uid] for seq, uid in record.forks]
    if record.bridges:
        fields["bridges"] = [[new, old] for new, old in record.bridges]
    return fields


def declare(data: dict[str, Any], chain: dict[str, Any] | None) -> None:
    """Make the new session manifest ``data`` declare the chain ``chain`` (its JSON),
    at the version a chained session's manifest has; nothing for None."""
    if chain is not None:
        data["chain"] = chain
        data["version"] = manifest.session_version(data)


def new_session_chain(policy: ChainRecord | None, given: ChainKey | None,
                      store_root: str) -> dict[str, Any] | None:
    """The ``chain`` of a new session of a store whose policy is ``policy`` (None: no
    chain). A keyed policy needs its key here: ChainKeyRequired without it,
    ChainKeyMismatch with another (before anything is written)."""
    if policy is None:
        return None
    if policy.alg == KEYED:
        mac_for(policy.alg, policy.key_id, key_for(given, store_root))
    return record_fields(manifest.ChainRecord(policy.alg, policy.key_id))


def fork_chain(parent: ChainRecord | None, junction_seq: int, uid: int
               ) -> dict[str, Any] | None:
    """The ``chain`` of a fork of a session whose chain is ``parent`` (None: a fork of
    an unchained session has none), the fork's own records starting at
    ``junction_seq + 1``: the parent's junctions before it, and its own."""
    if parent is None:
        return None
    forks = [(seq, uid_text) for seq, uid_text in parent.forks if seq < junction_seq]
    forks.append((junction_seq, identity.to_text(uid)))
    # the bridges too: the fork shares the parent's files, rewritten ones among them
    return record_fields(manifest.ChainRecord(parent.alg, parent.key_id, forks,
                                              list(parent.bridges)))


def unchecked_reader(io: FileIO, log_path: str) -> LogReader:
    """A reader of the log at ``log_path`` that takes its chain, if it has one, as it is
    (``chain_check.NOT_CHECKED``): for what reads a log without its session (a backup's
    copy, whose verify checks the chain; a lease's token records), chained or not."""
    from .log import LogReader

    reader = LogReader(io, log_path)
    reader.chain = NOT_CHECKED
    return reader


def unchecked_scan(buf: bytes, path: str, first_seq: int, **options: Any) -> SegmentScan:
    """A scan of the newest segment ``buf`` (``first_seq``), chained or not, its chain
    taken as it is (see :func:`unchecked_reader`)."""
    return SegmentScan(buf, path, first_seq, True, chain=UNCHECKED, **options)


def head_hash_text(seq: int, value: bytes) -> str:
    return f"{seq}:{value.hex()}"


def read_head_hash(log: LogReader) -> str | None:
    """The chain value after the head of ``log`` as ``"SEQ:HEX"`` (None without a chain),
    read from the end of the log: the run of the segment it is in is checked first (one
    hash call over at most a segment), so the value vouches for what was read. An empty
    log (new, or cleared) gives its genesis."""
    rules = log.chain
    if rules is None:
        return None
    newest, log_start, end = log.locate_tail()
    segment = newest
    while True:
        scan = log.scan_segment(segment, segment == newest, after_seq=end.next_seq)
        for _ in scan:
            pass  # (nothing decoded: every frame is before after_seq)
        run = scan.chain
        if run is not None and run.link_out is not None:
            return head_hash_text(scan.expect_seq - 1, run.link_out)
        if segment == log_start:
            header = log.read_header(segment)
            return head_hash_text(log_start - 1, genesis(rules.mac, header.uid, log_start))
        # the newest segment holds no record yet (after a rollover, a fork): the value
        # after the head ends the segment before
        segment = [s for s in log.list_segments() if s < segment][-1]


def writer_head_hash(writer: LogWriter,
                     fresh: Callable[[], AbstractContextManager[None]]) -> str | None:
    """:func:`read_head_hash` as a session's writer knows it (checked when it took up
    the run, kept since), read after ``fresh`` caught up with other writers."""
    with fresh(), writer.lock:
        link = writer.head_link
        return None if link is None else head_hash_text(writer.head, link)
