"""LangGraph checkpointer over fsstore: :class:`FsstoreSaver`.

Each LangGraph thread is one fsstore session (id from :func:`session_id_for`, the thread
id kept in the session's metadata); every checkpoint, channel value and pending write is
a record in that session's log (docs/INTEGRATIONS.md, "LangGraph", has the layout).
A channel value is stored once per version, and a list channel that grew by appending
(a conversation's messages) is stored as the tail it added to the parent checkpoint's
version, so a step writes what it added, not the whole state.

The log is the authority. The saver keeps an index of each thread it touched in memory
(rebuilt by one forward read of the log, then caught up with whatever other processes
appended), so reads cost no scan. Serializer output is stored as opaque bytes: fsstore
never deserializes it; only the configured serializer does.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import math
import os
import random
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    PendingWrite,
    get_checkpoint_id,
    get_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from pydantic import BaseModel

from .. import layout
from ..errors import CorruptionError, InvalidSetting, SessionExists, SessionNotFound
from ..log_writer import Durability
from ..session import Session
from ..store import Store, open_store
from ._ids import ensure_session, session_id_for

__all__ = ["FsstoreSaver", "session_id_for", "thread_session_id"]

FRAMEWORK = "langgraph"
THREAD_KIND = "lg-thread"

# Record kinds in a thread's log (docs/INTEGRATIONS.md, "LangGraph").
CHECKPOINT = "langgraph.checkpoint"
VALUE = "langgraph.value"
WRITES = "langgraph.writes"
DELETE = "langgraph.delete"

_MAX_THREADS = 64  # threads whose index (and shared session handle) stay in memory
_DECODED = 4096  # decoded list versions kept per thread (each a length into shared items)
#: Bytes of stored values a saver keeps in memory, over all its threads; the others are
#: read back from the log when needed.
_HELD_BYTES = 64 << 20


def thread_session_id(thread_id: str) -> str:
    """The id of the session that holds LangGraph thread ``thread_id``."""
    return session_id_for(THREAD_KIND, thread_id)


@dataclass
class _Checkpoint:
    seq: int
    parent: str | None
    body: tuple[str, bytes]  # the checkpoint without channel values and versions
    meta: tuple[str, bytes]
    versions: dict[str, Any]
    run: str | None


@dataclass
class _Value:
    type: str
    data: bytes | None  # None: not kept in memory; the log has it, in the record at seq
    extends: bool  # data is the tail appended to the value at version ``base``
    base: Any = None
    seq: int = 0


@dataclass
class _Write:
    task: str
    channel: str
    type: str
    data: bytes
    path: str


@dataclass
class _Thread:
    """What the saver knows of one thread: a fold of its session's log up to ``seq``."""

    thread_id: str
    session: Session
    folder: int  # the inode of the session's folder: another one under the id is news
    seq: int = 0
    checkpoints: dict[str, dict[str, _Checkpoint]] = field(default_factory=dict)
    latest: dict[str, str] = field(default_factory=dict)
    values: dict[tuple[str, str, Any], _Value] = field(default_factory=dict)
    writes: dict[tuple[str, str], dict[tuple[str, int], _Write]] = field(default_factory=dict)
    # Decoded list values: (items, length), the value being items[:length]; the
    # versions of one growing list share their items (see ``_grow``).
    decoded: OrderedDict[tuple[str, str, Any], tuple[list[Any], int]] = field(
        default_factory=OrderedDict)
    # The values whose bytes are in memory, least recently used first, with their sizes.
    held: OrderedDict[tuple[str, str, Any], int] = field(default_factory=OrderedDict)
    held_bytes: int = 0

    def fold(self, kind: str, data: Any) -> None:
        if kind == VALUE:
            key = (data["ns"], data["ch"], data["v"])
            if key in self.values:
                self.decoded.pop(key, None)  # a version stored again: the newest counts
            value = self.values[key] = _Value(data["t"], data["b"], "base" in data,
                                              data.get("base"), self.seq)
            self.hold(key, value)
        elif kind == CHECKPOINT:
            ns, cid = data["ns"], data["id"]
            self.checkpoints.setdefault(ns, {})[cid] = _Checkpoint(
                self.seq, data["parent"], (data["t"], data["b"]), (data["mt"], data["mb"]),
                data["cv"], data.get("run"))
            if cid > self.latest.get(ns, ""):
                self.latest[ns] = cid
        elif kind == WRITES:
            stored = self.writes.setdefault((data["ns"], data["cp"]), {})
            for idx, channel, type_, blob in data["w"]:
                # A repeated (task, idx) is kept once; the special channels (ERROR,
                # INTERRUPT, ...: negative idx) take the newest, as every saver does.
                if idx >= 0 and (data["task"], idx) in stored:
                    continue
                stored[(data["task"], idx)] = _Write(data["task"], channel, type_, blob,
                                                     data["path"])
        elif kind == DELETE:
            for ns, cid in data["ckpts"]:
                self.checkpoints.get(ns, {}).pop(cid, None)
                self.writes.pop((ns, cid), None)
                if self.latest.get(ns) == cid:
                    remaining = self.checkpoints.get(ns)
                    if remaining:
                        self.latest[ns] = max(remaining)
                    else:
                        self.latest.pop(ns, None)
                        self.checkpoints.pop(ns, None)

    def hold(self, key: tuple[str, str, Any], value: _Value) -> None:
        """``value``'s bytes are in memory, and the most recently used."""
        assert value.data is not None
        self.held_bytes += len(value.data) - self.held.pop(key, 0)
        self.held[key] = len(value.data)

    def release_oldest(self) -> bool:
        """Let go of the bytes of the least recently used value (they stay in the log);
        False when only the newest is left."""
        if len(self.held) <= 1:
            return False
        key, size = self.held.popitem(last=False)
        self.held_bytes -= size
        value = self.values.get(key)
        if value is not None:
            value.data = None
        return True

    def remember(self, key: tuple[str, str, Any], items: list[Any], length: int) -> None:
        self.decoded[key] = (items, length)
        self.decoded.move_to_end(key)
        while len(self.decoded) > _DECODED:
            self.decoded.popitem(last=False)


def session_title(kind: str, framework_id: str) -> str:
    """A session title for listings (``fsstore ls``): the id, cut short if long."""
    shown = framework_id if len(framework_id) <= 80 else framework_id[:77] + "..."
    return f"LangGraph {kind} {shown}"


def _starts_with(value: list[Any], items: list[Any], length: int) -> bool:
    """Whether ``value`` is ``items[:length]`` followed by more items. ``items`` are the
    saver's own decoded copies (never handed to a caller), so an item the caller changed
    in place compares unlike its stored version; :func:`_same` is strict about types."""
    if len(value) < length:
        return False
    try:
        return all(map(_same, itertools.islice(items, length), value))
    except Exception:  # items whose == raises or is not a bool (numpy arrays): store whole
        return False


_SCALARS = (str, bytes, int, bool, type(None))


def _same(a: Any, b: Any) -> bool:
    """Whether ``b`` reads back as ``a`` would: ``==`` that also tells ``True`` from
    ``1``, ``1.0`` from ``1``, ``-0.0`` from ``0.0`` and the key orders of dicts apart,
    in lists, tuples and dicts at any depth. Other objects (LangChain's messages, which
    are pydantic models, among them) must be of one type and ``==``."""
    if a is b:
        return True
    kind = type(a)
    if kind is not type(b):
        return False
    if kind in _SCALARS:
        return bool(a == b)
    if kind is float:
        return (a == b and math.copysign(1.0, a) == math.copysign(1.0, b)) or (
            a != a and b != b)
    if kind is list or kind is tuple:
        return len(a) == len(b) and all(map(_same, a, b))
    if kind is dict:
        return (len(a) == len(b) and all(map(_same, a, b))
                and all(_same(a[key], b[key]) for key in a))
    if isinstance(a, BaseModel):
        # What pydantic's == compares, without its Python-level steps: the fields (in
        # __dict__), extra and private attributes. Any difference stores the list whole,
        # which is never wrong.
        return bool(a.__dict__ == b.__dict__
                    and (a.__pydantic_extra__ or {}) == (b.__pydantic_extra__ or {})
                    and getattr(a, "__pydantic_private__", None)
                    == getattr(b, "__pydantic_private__", None))
    return bool(a == b)


def _copied(value: Any) -> Any:
    """A copy of a decoded value sharing nothing that can change with it: what
    ``copy.deepcopy`` gives, in about two thirds of its time for LangChain's messages
    (pydantic models of plain data: each copied with ``model_copy``, then its fields).
    A decoded value holds no object twice, so no memo is needed."""
    kind = type(value)
    if kind in _SCALARS or kind is float:
        return value
    if kind is list:
        return [_copied(item) for item in value]
    if kind is dict:
        return {key: _copied(item) for key, item in value.items()}
    if kind is tuple:
        return tuple(_copied(item) for item in value)
    if isinstance(value, BaseModel):
        copy_ = value.model_copy()
        fields = copy_.__dict__
        for name, item in fields.items():
            if type(item) not in _SCALARS:
                fields[name] = _copied(item)
        return copy_
    return copy.deepcopy(value)


def _grow(items: list[Any], length: int, tail: list[Any]) -> list[Any]:
    """``items[:length] + tail``, in ``items`` itself when ``length`` is its end: the
    versions of a growing list share one list, each knowing its length. A list is only
    ever appended to, so each length still reads the items it had."""
    if length == len(items):
        items.extend(tail)
        return items
    return items[:length] + tail


class FsstoreSaver(BaseCheckpointSaver[str]):
    """A LangGraph checkpointer (``BaseCheckpointSaver``) that keeps each thread in an
    fsstore session::

        from fsstore.integrations.langgraph import FsstoreSaver

        with FsstoreSaver("agent-sessions") as saver:
            graph = builder.compile(checkpointer=saver)
            graph.invoke(inputs, {"configurable": {"thread_id": "chat-1"}})

    ``store`` is a :class:`fsstore.Store` or a path (opened, and created if missing;
    closed by :meth:`close`); ``durability`` is that of the threads' sessions (default:
    the store's; README, "Durability"). The whole sync and async API is here, with the
    optional ``delete_for_runs``, ``copy_thread`` (an fsstore fork: no history is
    copied) and ``prune``. Sessions are opened shared, so several processes may use one thread;
    async methods run the sync ones in a worker thread.
    """

    def __init__(self, store: Store | str | os.PathLike[str], *,
                 serde: SerializerProtocol | None = None,
                 durability: Durability | str | None = None) -> None:
        super().__init__(serde=serde)
        self.durability = durability
        self.owns_store = not isinstance(store, Store)
        self.store: Store = open_store(store) if not isinstance(store, Store) else store
        self.lock = threading.RLock()
        self.threads: OrderedDict[str, _Thread] = OrderedDict()
        self.tails_ok: bool | None = None  # does the serializer give lists back as lists?

    # --- lifecycle ---

    def close(self) -> None:
        """Close the sessions the saver holds open (and the store, if it opened it)."""
        with self.lock:
            while self.threads:
                _, thread = self.threads.popitem()
                thread.session.close()
            if self.owns_store:
                self.store.close()

    def __enter__(self) -> FsstoreSaver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> FsstoreSaver:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.to_thread(self.close)

    # --- threads ---

    def _thread(self, thread_id: str, *, create: bool) -> _Thread | None:
        """The thread's index, caught up with its log; None when it has no session (and
        ``create`` is false). Call under ``self.lock``."""
        session_id = thread_session_id(thread_id)
        folder = self._folder(session_id)
        thread = self.threads.get(thread_id)
        if thread is not None:
            self.threads.move_to_end(thread_id)
            if thread.folder == folder:
                try:
                    self._catch_up(thread)
                    self._trim()
                    return thread
                except SessionNotFound:
                    pass
            # Deleted by another saver or process (and maybe made again): start afresh.
            self._forget(thread_id)
        session = self._open(session_id, thread_id, create=create)
        if session is None:
            return None
        thread = _Thread(thread_id, session, self._folder(session_id))
        self.threads[thread_id] = thread
        while len(self.threads) > _MAX_THREADS:
            _, evicted = self.threads.popitem(last=False)
            evicted.session.close()
        self._catch_up(thread)
        self._trim()
        return thread

    def _trim(self) -> None:
        """Keep the value bytes held in memory within ``_HELD_BYTES``: let go of those of
        the least recently used threads first, oldest values first. (They are read back
        from the log, by seq, when needed again.)"""
        total = sum(thread.held_bytes for thread in self.threads.values())
        for thread in list(self.threads.values()):  # least recently used first
            while total > _HELD_BYTES:
                before = thread.held_bytes
                if not thread.release_oldest():
                    break
                total -= before - thread.held_bytes
            if total <= _HELD_BYTES:
                return

    def _value_bytes(self, thread: _Thread, key: tuple[str, str, Any]) -> bytes:
        """The stored bytes of the value at ``key``, read back from the log if they are
        not in memory."""
        value = thread.values[key]
        if value.data is None:
            value.data = self._read_value(thread, key, value)
        thread.hold(key, value)
        return value.data

    def _read_value(self, thread: _Thread, key: tuple[str, str, Any],
                    value: _Value) -> bytes:
        for event in thread.session.events(after_seq=value.seq - 1, until_seq=value.seq):
            data = event.data
            if event.kind == VALUE and (data["ns"], data["ch"], data["v"]) == key:
                stored: bytes = data["b"]
                return stored
        raise CorruptionError(
            f"thread {thread.thread_id!r}: channel {key[1]!r} at version {key[2]!r} is no "
            f"longer the record at seq {value.seq}, where it was read before (the log "
            "was changed under the saver); fsstore verify checks the log",
            path=thread.session.path)

    def _folder(self, session_id: str) -> int:
        try:
            return os.stat(layout.session_dir(self.store.path, session_id)).st_ino
        except FileNotFoundError:
            return 0

    def _open(self, session_id: str, thread_id: str, *, create: bool) -> Session | None:
        if not self.store.has_session(session_id):
            if not create:
                return None
            ensure_session(self.store, session_id, title=session_title("thread", thread_id),
                           metadata={"framework": FRAMEWORK, "framework_id": thread_id,
                                     "kind": "thread"})
        try:
            return self.store.open_session(session_id, shared=True,
                                           durability=self.durability)
        except SessionNotFound:
            if create:
                raise
            return None

    def _forget(self, thread_id: str) -> None:
        thread = self.threads.pop(thread_id, None)
        if thread is not None:
            thread.session.close()

    def _catch_up(self, thread: _Thread) -> None:
        """Fold what the log holds past ``thread.seq`` (other processes' writes too)."""
        head = thread.session.head
        if head < thread.seq:
            # The log went back (the session was deleted and made again): read it afresh.
            fresh = _Thread(thread.thread_id, thread.session, thread.folder)
            thread.__dict__.update(fresh.__dict__)
        if head == thread.seq:
            return
        for event in thread.session.events(after_seq=thread.seq, until_seq=head):
            thread.seq = event.seq
            thread.fold(event.kind, event.data)
            while thread.held_bytes > _HELD_BYTES and thread.release_oldest():
                pass  # a long log read from the start holds no more than the budget
        thread.seq = head

    def _append(self, thread: _Thread, records: list[dict[str, Any]]) -> None:
        """Append ``records`` as one batch (all or none after a crash) and fold them."""
        seqs = thread.session.append_many(records)
        if seqs[0] != thread.seq + 1:
            self._catch_up(thread)  # another process wrote between: read it all in order
            return
        for seq, record in zip(seqs, records, strict=True):
            thread.seq = seq
            thread.fold(record["kind"], record)

    def _thread_ids(self) -> list[str]:
        """The ids of every LangGraph thread in the store, from the sessions' metadata."""
        found = []
        prefix = THREAD_KIND + "-"
        for session_id in self.store.session_ids():
            if not session_id.startswith(prefix):
                continue
            try:
                metadata = self.store.read_session(session_id).metadata
            except SessionNotFound:
                continue
            thread_id = metadata.get("framework_id")
            if metadata.get("framework") == FRAMEWORK and isinstance(thread_id, str):
                found.append(thread_id)
        return found

    # --- values ---

    def _resolve(self, thread: _Thread, ns: str, channel: str, version: Any) -> Any:
        """The value of ``channel`` at ``version``: objects of the caller's own, which it
        may change in place (LangGraph hands them to nodes) without changing what the
        saver keeps or compares the next version with."""
        key = (ns, channel, version)
        value = thread.values[key]
        if not value.extends:  # stored whole: decoded once, for the caller alone
            return self.serde.loads_typed((value.type, self._value_bytes(thread, key)))
        entry = self._decoded(thread, ns, channel, version)
        assert entry is not None  # a tail's value is a list (or _decoded raised)
        items, length = entry
        try:
            return [_copied(item) for item in itertools.islice(items, length)]
        except Exception:  # an object deepcopy cannot copy: rebuild from the log's bytes
            return self._rebuilt(thread, ns, channel, version)

    def _rebuilt(self, thread: _Thread, ns: str, channel: str, version: Any) -> list[Any]:
        """The list value at ``version`` decoded afresh from its stored tails."""
        tails = []
        key = (ns, channel, version)
        value = thread.values[key]
        while value.extends:
            tails.append((key, value))
            key = (ns, channel, value.base)
            value = thread.values[key]
        items: list[Any] = self.serde.loads_typed((value.type, self._value_bytes(thread, key)))
        for tail_key, tail in reversed(tails):
            items.extend(self.serde.loads_typed((tail.type,
                                                 self._value_bytes(thread, tail_key))))
        return items

    def _decoded(self, thread: _Thread, ns: str, channel: str,
                 version: Any) -> tuple[list[Any], int] | None:
        """The list value of ``channel`` at ``version`` as the decoded cache holds it,
        following tails back to a whole value or to one decoded before (None for a value
        that is not a list)."""
        key = (ns, channel, version)
        hit = thread.decoded.get(key)
        if hit is not None:
            thread.decoded.move_to_end(key)
            return hit
        chain: list[tuple[tuple[str, str, Any], _Value]] = []
        start: tuple[list[Any], int] | None = None
        current = key
        while True:
            value = thread.values.get(current)
            if value is None:
                raise CorruptionError(
                    f"thread {thread.thread_id!r}: channel {channel!r} at version "
                    f"{version!r} extends version {current[2]!r}, which the log does not "
                    "hold (damaged or edited); fsstore verify checks the log",
                    path=thread.session.path)
            if not value.extends:
                break
            chain.append((current, value))
            current = (ns, channel, value.base)
            start = thread.decoded.get(current)
            if start is not None:
                break
        if start is None:
            whole = self.serde.loads_typed((value.type, self._value_bytes(thread, current)))
            if not isinstance(whole, list):
                if chain:
                    raise CorruptionError(
                        f"thread {thread.thread_id!r}: channel {channel!r} at version "
                        f"{version!r} extends version {current[2]!r}, which is not a list",
                        path=thread.session.path)
                return None
            items, length = whole, len(whole)
            thread.remember(current, items, length)
        else:
            items, length = start
        for known, tail in reversed(chain):
            items = _grow(items, length, self.serde.loads_typed(
                (tail.type, self._value_bytes(thread, known))))
            length = len(items)
            thread.remember(known, items, length)
        return items, length

    def _value_record(self, thread: _Thread, ns: str, channel: str, version: Any,
                      value: Any, parent: _Checkpoint | None) -> dict[str, Any]:
        record: dict[str, Any] = {"kind": VALUE, "ns": ns, "ch": channel, "v": version}
        base = None if parent is None else parent.versions.get(channel)
        stored = None if base is None else thread.values.get((ns, channel, base))
        if (type(value) is list and stored is not None and stored.type != "empty"
                and base != version and self.tails_ok is not False):
            entry = self._decoded(thread, ns, channel, base)
            if entry is not None and _starts_with(value, *entry):
                items, length = entry
                tail = value[length:]
                type_, data = self.serde.dumps_typed(tail)
                # The saver keeps what the log will hold, decoded: never the caller's
                # objects, which it may change in place after this put.
                back = self.serde.loads_typed((type_, data))
                if self.tails_ok is None:
                    # Whether this serializer reads a list back as the same list: only
                    # then can a value be rebuilt from its tails.
                    self.tails_ok = (isinstance(back, list) and len(back) == len(tail)
                                     and _starts_with(back, tail, len(tail)))
                if self.tails_ok:
                    record.update(t=type_, b=data, base=base)
                    items = _grow(items, length, back)
                    thread.remember((ns, channel, version), items, len(items))
                    return record
        type_, data = self.serde.dumps_typed(value)
        if type(value) is list:
            back = self.serde.loads_typed((type_, data))
            if isinstance(back, list):
                thread.remember((ns, channel, version), back, len(back))
        record.update(t=type_, b=data)
        return record

    # --- reads ---

    def _tuple(self, thread: _Thread, ns: str, cid: str) -> CheckpointTuple:
        stored = thread.checkpoints[ns][cid]
        checkpoint = self.serde.loads_typed(stored.body)
        values = {}
        for channel, version in stored.versions.items():
            value = thread.values.get((ns, channel, version))
            if value is None or value.type == "empty":
                continue
            values[channel] = self._resolve(thread, ns, channel, version)
        checkpoint["channel_values"] = values
        checkpoint["channel_versions"] = dict(stored.versions)
        writes = thread.writes.get((ns, cid), {})
        ordered = sorted(writes.items(), key=lambda kv: writes_sort_key(kv[1].path, *kv[0]))
        pending: list[PendingWrite] = [
            (w.task, w.channel, self.serde.loads_typed((w.type, w.data))) for _, w in ordered]
        thread_id = thread.thread_id
        return CheckpointTuple(
            config={"configurable": {"thread_id": thread_id, "checkpoint_ns": ns,
                                     "checkpoint_id": cid}},
            checkpoint=checkpoint,
            metadata=self.serde.loads_typed(stored.meta),
            parent_config=None if stored.parent is None else {"configurable": {
                "thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": stored.parent}},
            pending_writes=pending,
        )

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint ``config`` names (its ``checkpoint_id``), or the thread's latest
        in the namespace; None if there is none."""
        configurable = config["configurable"]
        thread_id = str(configurable["thread_id"])
        ns = configurable.get("checkpoint_ns", "")
        with self.lock:
            thread = self._thread(thread_id, create=False)
            if thread is None:
                return None
            cid = get_checkpoint_id(config) or thread.latest.get(ns)
            if cid is None or cid not in thread.checkpoints.get(ns, {}):
                return None
            return self._tuple(thread, ns, cid)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first: of ``config``'s thread (and namespace and
        checkpoint id, when it names them), or of every thread for None; those whose
        metadata has every key-value pair of ``filter``, older than ``before``'s
        checkpoint, at most ``limit``."""
        configurable = config["configurable"] if config else {}
        ns_only = configurable.get("checkpoint_ns")
        cid_only = get_checkpoint_id(config) if config else None
        before_id = get_checkpoint_id(before) if before else None
        with self.lock:
            thread_ids = ([str(configurable["thread_id"])] if config
                          else self._thread_ids())
            # Newest first across threads too: checkpoint ids are time-ordered (uuid6).
            rows: list[tuple[str, str, str]] = []
            for thread_id in thread_ids:
                thread = self._thread(thread_id, create=False)
                if thread is None:
                    continue
                rows.extend((cid, thread_id, ns) for ns, by_id in thread.checkpoints.items()
                            if ns_only is None or ns == ns_only for cid in by_id
                            if not (cid_only and cid != cid_only)
                            and not (before_id and cid >= before_id))
            found: list[CheckpointTuple] = []
            for cid, thread_id, ns in sorted(rows, reverse=True):
                if limit is not None and len(found) >= limit:
                    break
                thread = self._thread(thread_id, create=False)
                if thread is None or cid not in thread.checkpoints.get(ns, {}):
                    continue  # deleted meanwhile, by another process
                if filter:
                    metadata = self.serde.loads_typed(thread.checkpoints[ns][cid].meta)
                    if not all(metadata.get(k) == v for k, v in filter.items()):
                        continue
                found.append(self._tuple(thread, ns, cid))
        yield from found

    # --- writes ---

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint with the channel values of ``new_versions`` (each once per
        version; a grown list as its tail), as one atomic batch; return its config."""
        configurable = config["configurable"]
        thread_id = str(configurable["thread_id"])
        ns = configurable.get("checkpoint_ns", "")
        parent_id = configurable.get("checkpoint_id")
        body: dict[str, Any] = dict(checkpoint)
        values = body.pop("channel_values")
        versions = dict(body.pop("channel_versions"))
        meta = self.serde.dumps_typed(get_checkpoint_metadata(config, metadata))
        type_, data = self.serde.dumps_typed(body)
        run = metadata.get("run_id")
        with self.lock:
            thread = self._thread(thread_id, create=True)
            assert thread is not None
            parent = (None if parent_id is None
                      else thread.checkpoints.get(ns, {}).get(parent_id))
            records = []
            try:
                for channel, version in new_versions.items():
                    if channel in values:
                        records.append(self._value_record(thread, ns, channel, version,
                                                          values[channel], parent))
                    else:
                        records.append({"kind": VALUE, "ns": ns, "ch": channel,
                                        "v": version, "t": "empty", "b": b""})
                records.append({
                    "kind": CHECKPOINT, "ns": ns, "id": checkpoint["id"],
                    "parent": parent_id, "t": type_, "b": data, "mt": meta[0],
                    "mb": meta[1], "cv": versions, "run": run if isinstance(run, str) else None,
                })
                self._append(thread, records)
            except BaseException:
                # Refused (a value the serializer or the log would not take): nothing was
                # written, so nothing of it may stay in the decoded cache either.
                for channel, version in new_versions.items():
                    if (ns, channel, version) not in thread.values:
                        thread.decoded.pop((ns, channel, version), None)
                raise
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns,
                                 "checkpoint_id": checkpoint["id"]}}

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's pending writes for the checkpoint ``config`` names; a
        ``(task_id, idx)`` stored before is not written again (the special channels,
        ERROR and INTERRUPT among them, are replaced)."""
        configurable = config["configurable"]
        thread_id = str(configurable["thread_id"])
        ns = configurable.get("checkpoint_ns", "")
        cid = configurable["checkpoint_id"]
        serialized = [(WRITES_IDX_MAP.get(channel, idx), channel, *self.serde.dumps_typed(value))
                      for idx, (channel, value) in enumerate(writes)]
        with self.lock:
            thread = self._thread(thread_id, create=True)
            assert thread is not None
            # The check and the append are one operation under the session's mutex: a
            # write another process stored meanwhile is seen, and not stored again.
            with thread.session.operation():
                self._catch_up(thread)
                stored = thread.writes.get((ns, cid), {})
                entries = [[index, channel, type_, data]
                           for index, channel, type_, data in serialized
                           if index < 0 or (task_id, index) not in stored]
                if entries:
                    self._append(thread, [{"kind": WRITES, "ns": ns, "cp": cid,
                                           "task": task_id, "path": task_path,
                                           "w": entries}])

    def delete_thread(self, thread_id: str) -> None:
        """Delete the thread: its whole session folder."""
        session_id = thread_session_id(str(thread_id))
        with self.lock:
            self._forget(str(thread_id))
            try:
                self.store.delete_session(session_id, lock_timeout=10.0)
            except SessionNotFound:
                pass

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete, in every thread, the checkpoints made by these runs, with their
        pending writes (a ``langgraph.delete`` record: the log keeps its history)."""
        runs = set(run_ids)
        if not runs:
            return
        with self.lock:
            for thread_id in self._thread_ids():
                thread = self._thread(thread_id, create=False)
                if thread is None:
                    continue
                doomed = [[ns, cid] for ns, by_id in thread.checkpoints.items()
                          for cid, stored in by_id.items() if stored.run in runs]
                if doomed:
                    self._append(thread, [{"kind": DELETE, "ckpts": doomed}])

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Make ``target_thread_id`` a copy of the source thread: an fsstore fork of its
        session, which shares the history instead of copying it. Nothing happens when
        the source does not exist; a target that exists is refused (SessionExists)."""
        source, target = str(source_thread_id), str(target_thread_id)
        target_id = thread_session_id(target)
        with self.lock:
            thread = self._thread(source, create=False)
            if thread is None:
                return
            if self.store.has_session(target_id):
                raise SessionExists(
                    f"thread {target!r} exists (session {target_id!r} in {self.store.path});"
                    " delete_thread it first to copy onto it")
            thread.session.fork(target_id, title=session_title("thread", target), metadata={
                "framework": FRAMEWORK, "framework_id": target, "kind": "thread",
                "copied_from": source}).close()

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """``keep_latest``: keep only each namespace's latest checkpoint (and its
        writes) of each thread, and the ancestors a DeltaChannel of it is rebuilt from
        (back to the nearest one holding a value for each); ``delete``: delete the
        threads. Pruned checkpoints are gone from every read, but their bytes stay in the
        log until the thread is deleted."""
        if strategy not in ("keep_latest", "delete"):
            raise InvalidSetting(f"prune strategy {strategy!r}: use 'keep_latest' or 'delete'")
        for thread_id in thread_ids:
            if strategy == "delete":
                self.delete_thread(thread_id)
                continue
            with self.lock:
                thread = self._thread(str(thread_id), create=False)
                if thread is None:
                    continue
                kept = {(ns, cid) for ns, latest in thread.latest.items()
                        for cid in self._delta_chain(thread, ns, latest)}
                doomed = [[ns, cid] for ns, by_id in thread.checkpoints.items()
                          for cid in by_id if (ns, cid) not in kept]
                if doomed:
                    self._append(thread, [{"kind": DELETE, "ckpts": doomed}])

    def _delta_chain(self, thread: _Thread, ns: str, cid: str) -> Sequence[str]:
        """``cid`` and the ancestors its DeltaChannels are rebuilt from: a DeltaChannel
        (named in the metadata's ``counters_since_delta_snapshot``) stores no value at
        most steps, and is rebuilt from the writes of the ancestors back to the nearest
        one that stores a value (a snapshot) for it."""
        checkpoints = thread.checkpoints.get(ns, {})
        metadata = self.serde.loads_typed(checkpoints[cid].meta)
        counters = metadata.get("counters_since_delta_snapshot") if isinstance(
            metadata, dict) else None
        chain = [cid]
        pending = set(counters) if isinstance(counters, dict) else set()
        current: str | None = cid
        while pending and current is not None:
            stored = checkpoints.get(current)
            if stored is None:
                break
            for channel in list(pending):
                value = thread.values.get((ns, channel, stored.versions.get(channel)))
                if value is not None and value.type != "empty":
                    pending.discard(channel)
            current = stored.parent
            if pending and current is not None:
                chain += [current]
        return chain

    def get_next_version(self, current: str | None, channel: None) -> str:
        """A version that sorts after ``current``, with a random part: two branches of a
        thread (time travel) never make the same version of a channel."""
        if current is None:
            number = 0
        elif isinstance(current, int):
            number = current
        else:
            number = int(str(current).split(".")[0])
        return f"{number + 1:032}.{random.random():016}"

    # --- async twins: the sync path in a worker thread ---

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        found = await asyncio.to_thread(
            lambda: list(self.list(config, filter=filter, before=before, limit=limit)))
        for item in found:
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await asyncio.to_thread(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *,
                     strategy: str = "keep_latest") -> None:
        await asyncio.to_thread(self.prune, thread_ids, strategy=strategy)
