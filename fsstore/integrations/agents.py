"""fsstore as the OpenAI Agents SDK's session memory: :class:`FsstoreSession`.

``pip install 'fsstore[agents]'``, then give ``Runner.run(..., session=...)`` an
``FsstoreSession(session_id, store)`` where it took a ``SQLiteSession``. It implements
the SDK's ``Session`` protocol (``get_items``, ``add_items``, ``pop_item``,
``clear_session``, all async; ``session_settings.limit`` as ``SQLiteSession`` reads it)
over the messages of one fsstore session (docs/INTEGRATIONS.md, "OpenAI Agents SDK"):

- **One item, one message.** Each item the SDK adds is one fsstore message. The item
  itself is kept as the JSON text ``SQLiteSession`` would store (``json.dumps`` of it) in
  the message's ``metadata.extra["openai_agents_item"]``, and a read gives back
  ``json.loads`` of that text: the dict the SDK gave, equal to what ``SQLiteSession``
  returns. The message's role and parts are the item made readable by
  ``fsstore.convert.from_openai_responses`` (text, tool calls, tool results), so
  ``fsstore show``, the usage counts and ``to_openai_responses`` see the conversation.
  One ``add_items`` call is one batch: after a crash all of its items are there or none.
- **pop_item** deletes the newest message with a tombstone (``Messages.pop``): the
  history keeps it (``messages.history``, ``at_seq`` reads, checkpoints), reads do not
  return it.
- **clear_session** empties the session's log (``Session.clear``), as ``SQLiteSession``
  deletes its rows: reads cost nothing more for what was cleared, and the space comes
  back. The session, its metadata and its checkpoints stay: take a checkpoint first to
  keep the conversation that was cleared.
- **Ids.** The SDK's session id is any str; the fsstore session id is
  :func:`session_id_for` ``("agents", id)``: a readable prefix and a SHA-256 digest, so
  no id the SDK is given ever reaches a path. The SDK's id is kept in the session's
  metadata (``{"framework": "openai-agents", "framework_id": id}``);
  :func:`agent_sessions` lists them.
- **Several writers.** The fsstore session is opened shared (``open_session(...,
  shared=True)``): processes write in turn, each write one operation under the
  session's mutex. Within a process, the objects on one id share one opened session,
  its copy of the items read and its queue of writes, which writes concurrent
  ``add_items`` calls as one batch (``agents_pool.py``).
- **Reads.** The items read are kept as JSON texts and brought up to date before each
  read through the session's revision and message index (``agents_cache.py``): a
  ``Runner`` reads the session at every turn.
- **The event loop.** Each call runs its blocking part in a worker thread; a write
  that was started finishes even if the caller is cancelled, and the cancellation is
  raised after it (as ``SQLiteSession`` does).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import msgspec
from agents.items import TResponseInputItem
from agents.memory.session_settings import (
    SessionSettings,
    coerce_session_settings,
    resolve_session_limit,
)

from ..convert import from_openai_responses, to_openai_responses
from ..errors import InvalidMessage, SessionClosed, SessionNotFound, WriteFailed
from ..log_writer import Durability
from ..message_types import (
    Message,
    MessageMetadata,
    MessagePart,
    Role,
    ToolResultPart,
)
from ..session import Session
from ..store import Store, open_store
from . import agents_pool
from ._ids import ensure_session, session_id_for
from .agents_pool import Opened

__all__ = ["FRAMEWORK", "ITEM_KEY", "KIND", "FsstoreSession", "agent_sessions",
           "item_message", "items_of", "message_items", "session_id_for"]

#: The kind of framework id :func:`session_id_for` maps here: the prefix of the fsstore
#: session ids of the SDK's sessions.
KIND = "agents"
#: ``metadata["framework"]`` of those sessions.
FRAMEWORK = "openai-agents"
#: The ``metadata.extra`` key of a message that holds its item's JSON text.
ITEM_KEY = "openai_agents_item"

_T = TypeVar("_T")
_json_decode = msgspec.json.Decoder().decode


def agent_sessions(store: Store) -> dict[str, str]:
    """The SDK session ids the store holds sessions for, each with its fsstore session
    id (from each session's metadata; sessions that cannot be read are left out)."""
    found = {}
    for info in store.list_sessions():
        metadata = info.metadata
        if metadata.get("framework") == FRAMEWORK and isinstance(
                metadata.get("framework_id"), str):
            found[metadata["framework_id"]] = info.id
    return found


# --- items and messages -----------------------------------------------------------------


def item_message(item: Any, position: int = 0) -> Message:
    """The fsstore message of one SDK item: the item's JSON text (``json.dumps``, as
    ``SQLiteSession`` stores it) under ``metadata.extra[ITEM_KEY]``, and the item made
    readable (role, parts and the converter's kept fields, from
    ``from_openai_responses``). The message has no id: the store makes one, since the
    SDK's item ids repeat (a placeholder id, an item popped and added again). Raises
    InvalidMessage naming ``items[position]`` for an item JSON cannot hold."""
    try:
        raw = json.dumps(item)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidMessage(
            f"items[{position}] cannot be stored as JSON ({exc}): a session item is a "
            "JSON dict, as the SDK's to_input_item() makes it", field=f"items[{position}]"
        ) from None
    try:
        converted = from_openai_responses([item])
    except InvalidMessage:
        converted = []
    if len(converted) == 1:
        readable = converted[0]
        return Message(role=readable.role, parts=readable.parts,
                       metadata=msgspec.structs.replace(
                           readable.metadata, extra={**readable.metadata.extra,
                                                     ITEM_KEY: raw}))
    # An item the converter does not take: still one message, of no parts.
    return Message(role=_role_of(item), metadata=MessageMetadata(extra={ITEM_KEY: raw}))


def _role_of(item: Any) -> Role:
    if not isinstance(item, Mapping):
        return "user"
    role, kind = item.get("role"), item.get("type")
    if role in ("system", "developer"):
        return "system"
    if role == "user":
        return "user"
    if isinstance(kind, str) and kind.endswith("_output"):
        return "tool"
    return "assistant"


def message_items(message: Message) -> list[Any]:
    """The SDK items of one message: the item it holds, as the SDK gave it; for a
    message written another way (no item kept), its Responses API items
    (``to_openai_responses``), or none when it converts to none."""
    raw = message.metadata.extra.get(ITEM_KEY)
    if isinstance(raw, str):
        try:
            return [_decode_text(raw)]
        except ValueError:
            pass  # not JSON: read the message itself, as for one written another way
    try:
        return to_openai_responses([message])
    except InvalidMessage:
        return []  # a blob file part, which the converter does not read


def _decode_text(text: str) -> Any:
    """An item's JSON text read back: msgspec reads JSON about twice as fast as json
    and gives the same values; what it refuses (NaN, a lone surrogate, which json.dumps
    writes) json reads. ValueError for text that is not JSON."""
    try:
        return _json_decode(text)
    except (msgspec.DecodeError, UnicodeEncodeError):
        return json.loads(text)


def _item_texts(message: Message) -> list[str]:
    """The JSON texts of a message's items (:func:`message_items`), for the copy."""
    raw = message.metadata.extra.get(ITEM_KEY)
    if isinstance(raw, str):
        try:
            _decode_text(raw)
        except ValueError:
            pass
        else:
            return [raw]
    return [json.dumps(item) for item in message_items(message)]


def items_of(messages: list[Message]) -> list[Any]:
    """The items of ``messages``, in order, as :func:`message_items` gives them."""
    return [item for message in messages for item in message_items(message)]


def _as_orphans(message: Message) -> Message:
    parts: list[MessagePart] = [
        msgspec.structs.replace(part, orphan=True) if isinstance(part, ToolResultPart)
        else part for part in message.parts]
    return msgspec.structs.replace(message, parts=parts)


# --- the session ------------------------------------------------------------------------


class FsstoreSession:
    """The OpenAI Agents SDK's ``Session`` protocol over an fsstore session's messages.

    ``session_id`` is the SDK's id (any str); ``store`` an open :class:`~fsstore.Store`
    or the path of one (created if missing). The fsstore session
    (:func:`session_id_for` ``("agents", session_id)``) is created by the first
    ``add_items`` (reads of an id that has none create nothing), and opened shared:
    other processes write in turn, waiting up to ``lock_timeout`` seconds (default 10)
    for each other, and the FsstoreSession objects of one process on one id share one
    opened session, its copy of the items read and its queue of writes
    (``agents_pool.py``). ``shared=False`` opens it exclusively instead, for one writer
    that holds it until :meth:`close`. ``durability`` as for ``open_session`` (a shared
    session takes ``"flush"`` or ``"fsync"``); ``session_settings`` (a
    ``SessionSettings`` or a dict of its fields) gives the default ``limit`` of
    :meth:`get_items`, as for ``SQLiteSession``.

    Nothing is opened until the first call, in a worker thread: building one blocks
    nothing. Close it with :meth:`close` (or ``with``); one that is collected unclosed
    lets go of its session then."""

    session_settings: SessionSettings | None = None

    def __init__(
        self, session_id: str, store: Store | str | os.PathLike[str], *,
        session_settings: SessionSettings | dict[str, Any] | None = None,
        shared: bool = True, durability: Durability | str | None = None,
        lock_timeout: float | None = None,
    ) -> None:
        #: The SDK's session id.
        self.session_id = session_id
        #: The fsstore session id it maps to.
        self.fsstore_id = session_id_for(KIND, session_id)
        self.session_settings = (coerce_session_settings(session_settings)
                                 if session_settings is not None else SessionSettings())
        self._store = store
        # Objects given one store path share what they open, as those given one Store.
        self._store_key: Any = (None if isinstance(store, Store)
                                else os.path.realpath(os.fspath(store)))
        self._shared = shared
        self._durability = durability
        self._lock_timeout = lock_timeout
        self._held: Opened | None = None
        self._let_go: weakref.finalize[Any, FsstoreSession] | None = None
        self._open_lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"<fsstore FsstoreSession {self.session_id!r} -> {self.fsstore_id!r}>"

    # --- the Session protocol ---

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The session's items, oldest first: the last ``limit`` of them (default: the
        ``session_settings`` limit; None for all, as is a negative limit; 0 for none)."""
        wanted = resolve_session_limit(limit, self.session_settings)
        return await asyncio.to_thread(self._get_items, wanted)

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Append ``items`` as one batch, each kept exactly as given. Raises
        InvalidMessage naming ``items[i]`` for an item JSON cannot hold, with nothing
        written."""
        self._check_open()
        if not items:
            return
        batch = list(items)  # the caller's list may change once this returns

        def prepare() -> list[Message]:
            return [item_message(item, position) for position, item in enumerate(batch)]

        await self._write(_add, prepare)

    async def pop_item(self) -> TResponseInputItem | None:
        """Delete the newest item (a tombstone: the history keeps it) and return it;
        None when the session is empty."""
        return await self._write(_pop, create=False)

    async def clear_session(self) -> None:
        """Remove every item: the session's log is cleared (``Session.clear``)."""
        await self._write(_clear, create=False)

    # --- the rest ---

    def session(self) -> Session:
        """The fsstore session the items are in, opened (and created) if need be. It
        blocks: call it from a worker thread in async code."""
        opened = self._opened(create=True)
        assert opened is not None
        return opened.session

    def close(self) -> None:
        """Let go of the fsstore session: an exclusive one is closed; a shared one is
        kept open a while for the next FsstoreSession on this id in this process
        (``agents_pool.py``). A store given by the caller stays open. Later calls raise
        SessionClosed."""
        with self._open_lock:
            self._closed = True
            self._held, let_go, self._let_go = None, self._let_go, None
        if let_go is not None:
            let_go()

    def __enter__(self) -> FsstoreSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- how ---

    def _check_open(self) -> None:
        if self._closed:
            raise SessionClosed(f"FsstoreSession {self.session_id!r} (fsstore session "
                                f"{self.fsstore_id!r}) is closed: make a new one")

    def _current(self) -> Opened | None:
        """The opened session this object holds, unless it was opened by another process
        (this one was made by fork): its descriptors and locks are the parent's, so it
        is left to the parent, and opened afresh here."""
        opened = self._held
        if opened is not None and opened.pid != os.getpid():
            with self._open_lock:
                if self._held is opened:
                    self._held, let_go, self._let_go = None, self._let_go, None
                    if let_go is not None:
                        let_go.detach()
            return None
        return opened

    def _opened(self, *, create: bool) -> Opened | None:
        """The opened session, taken if need be (blocks); when the fsstore session does
        not exist yet, created (``create``: a write) or None (a read creates nothing)."""
        self._current()
        with self._open_lock:
            self._check_open()
            if self._held is None:
                store = self._store_object()
                if not create and not store.has_session(self.fsstore_id):
                    return None
                self._held = self._take(store)
            return self._held

    def _store_object(self) -> Store:
        if not isinstance(self._store, Store):
            self._store = open_store(self._store)
        return self._store

    def _take(self, store: Store) -> Opened:
        def open_session() -> Session:
            ensure_session(store, self.fsstore_id, metadata={
                "framework": FRAMEWORK, "framework_id": self.session_id})
            return store.open_session(self.fsstore_id, durability=self._durability,
                                      lock_timeout=self._lock_timeout, shared=self._shared)

        if self._shared:
            key = (self._store_key or store, self.fsstore_id, self._durability,
                   self._lock_timeout)
            opened = agents_pool.take(key, open_session, _item_texts)
            self._let_go = weakref.finalize(self, agents_pool.give_back, opened)
        else:
            opened = Opened(None, open_session(), _item_texts)
            self._let_go = weakref.finalize(self, opened.session.close)
        return opened

    def _forget(self, opened: Opened) -> None:
        """``opened`` names a session that was deleted: the next call opens afresh."""
        agents_pool.discard(opened)
        with self._open_lock:
            if self._held is opened:
                self._held, let_go, self._let_go = None, self._let_go, None
            else:
                let_go = None
        if let_go is not None:
            let_go()

    async def _write(self, run: Callable[[Opened, list[Message] | None], _T],
                     prepare: Callable[[], list[Message]] | None = None, *,
                     create: bool = True) -> _T:
        """Queue one write on the opened session (opened first in a worker thread, the
        first time) and await it; a session deleted meanwhile is opened afresh once."""
        for attempt in range(2):
            opened = self._current()
            if opened is None:
                opened = await asyncio.to_thread(self._opened, create=create)
                if opened is None:
                    return None  # type: ignore[return-value]  # no session: nothing to pop
            future = opened.submit(functools.partial(run, opened), prepare)
            try:
                return await _finish(asyncio.wrap_future(future))
            except (SessionNotFound, WriteFailed) as exc:
                if not self._retries(opened, exc, attempt):
                    raise
        raise AssertionError("unreachable")

    def _get_items(self, limit: int | None) -> list[Any]:
        for attempt in range(2):
            opened = self._opened(create=False)
            if opened is None or limit == 0:
                return []
            try:
                return _read_items(opened, limit)
            except (SessionNotFound, WriteFailed) as exc:
                if not self._retries(opened, exc, attempt):
                    raise
        raise AssertionError("unreachable")

    def _retries(self, opened: Opened, exc: Exception, attempt: int) -> bool:
        """A call through ``opened`` failed with ``exc``: let go of it, so that the next
        call (of any object) opens the session afresh; whether to retry now. A deleted
        session is retried once (a read finds nothing, a write makes it again); a write
        the disk refused (WriteFailed) is not acknowledged and not retried (recovery at
        the next open keeps the durable prefix)."""
        self._forget(opened)
        return isinstance(exc, SessionNotFound) and attempt == 0


def _read_items(opened: Opened, limit: int | None) -> list[Any]:
    if limit is not None and limit < 0:  # SQLite's LIMIT takes a negative one as none
        limit = None
    session = opened.session
    with session.operation():  # one catch-up with other writers for all the copy reads
        texts = opened.cache.texts(session, limit)
    if texts is not None:
        return [_decode_text(text) for text in texts]
    messages = session.messages
    if limit is None:
        return items_of(messages.all())
    # Each message holds one item, unless it was written another way: read more
    # messages while those give too few.
    window = limit
    while True:
        found = messages.last(window)
        items = items_of(found)
        if len(items) >= limit or len(found) < window:
            return items[-limit:]
        window *= 2


def _add(opened: Opened, batch: list[Message] | None) -> None:
    assert batch is not None
    session = opened.session
    # One operation: the copy learns of the batch with nothing of another writer's
    # between them, and without a catch-up of its own.
    with session.operation():
        try:
            stored = session.messages.append_many(batch)
        except InvalidMessage as exc:
            if not exc.field.endswith("call_id"):
                raise
            # A tool result whose call the session does not hold (popped, cleared, or
            # never added): the SDK stores it anyway, so it is stored as an orphan.
            stored = session.messages.append_many([_as_orphans(message) for message in batch])
        opened.cache.appended(session, stored)


def _pop(opened: Opened, _: list[Message] | None) -> Any:
    messages = opened.session.messages
    while True:
        popped = messages.pop()
        if popped is None:
            return None
        opened.cache.popped(str(popped.id))
        items = message_items(popped)
        if items:  # a message written another way may convert to no item
            return items[-1]


def _clear(opened: Opened, _: list[Message] | None) -> None:
    opened.session.clear()
    opened.cache.forget()


async def _finish(future: asyncio.Future[_T]) -> _T:
    """Await a write to its end even when the caller is cancelled meanwhile (its worker
    thread goes on regardless), then raise the cancellation: the caller never sees a
    cancelled write that then lands."""
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            try:
                await asyncio.wait({future})
            except asyncio.CancelledError:
                pass
        if not future.cancelled():
            future.exception()  # retrieved, so that it is not reported as never retrieved
        raise
