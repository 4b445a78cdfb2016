"""What the LangChain adapters share: the mapping of a LangChain id (a chat session id,
a store namespace, a vector store name) to an fsstore session id, and the shared-mode
session each adapter object writes through.

LangChain ids are arbitrary strings: colons, slashes, ``..``, NUL bytes. None of them
reaches a path: the session id is a readable prefix, a sanitised fragment of the id and
a SHA-256 digest of the kind and the whole id, which ``layout.check_session_id`` allows;
the original id is kept in the session's metadata (``{"framework": "langchain",
"framework_kind": ..., "framework_id": ...}``) so sessions can be listed by it.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
from typing_extensions import Self

from ..errors import InvalidInput, SessionClosed
from ..log_format import refuse_msgpack_ext
from ..session import Session
from ..store import Store, open_store
from ._ids import ensure_session, session_id_for

__all__ = ["FRAMEWORK", "SessionHandle", "session_id_for"]

FRAMEWORK = "langchain"
_T = TypeVar("_T")


def as_store(store: Store | str | os.PathLike[str]) -> Store:
    """``store`` itself, or the store at that path (created if missing)."""
    return store if isinstance(store, Store) else open_store(store)


class _Shared:
    """One open session, shared by every adapter object of this process on its id."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.lock = threading.Lock()
        self.users = 0


_registry: dict[tuple[str, str], _Shared] = {}
_registry_lock = threading.Lock()


class HandleOwner:
    """What the LangChain adapters share: a ``_handle`` to their session, let go of by
    ``close`` (or a ``with`` block); the object is unusable after."""

    _handle: SessionHandle

    def close(self) -> None:
        """Let go of the session's files; the object is unusable after."""
        self._handle.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class SessionHandle:
    """One adapter object's way to its session. The session is opened shared (the lock
    is taken for each write, and each read catches up with what other processes wrote),
    and adapter objects of one process on one id use the same open session, so their
    writes (of vector collections too) go through one writer. Calls are serialised by
    the session's lock: LangChain runs sync methods in worker threads for its async
    defaults, and one Session object is not meant for concurrent calls."""

    def __init__(self, store: Store, kind: str, framework_id: str) -> None:
        self.store = store
        self.framework_id = framework_id
        self.session_id = session_id_for(kind, framework_id)
        self._key = (os.path.realpath(store.path), self.session_id)
        with _registry_lock:
            shared = _registry.get(self._key)
            if shared is None:
                shared = _Shared(self._open(kind))
                _registry[self._key] = shared
            shared.users += 1
        self._shared: _Shared | None = shared
        # An adapter dropped without close() still lets go of the session.
        self._release = weakref.finalize(self, _release, self._key)

    def _open(self, kind: str) -> Session:
        store = self.store
        ensure_session(store, self.session_id,
                       title=f"LangChain {kind[3:]} {self.framework_id[:60]}",
                       metadata={"framework": FRAMEWORK, "framework_kind": kind,
                                 "framework_id": self.framework_id})
        return store.open_session(self.session_id, shared=True)

    def run(self, call: Callable[[Session], _T]) -> _T:
        """``call(session)`` under the session's lock."""
        shared = self._shared
        if shared is None:
            raise SessionClosed(f"{self.store.path}: the LangChain adapter on session "
                                f"{self.session_id!r} was closed; make a new one")
        with shared.lock:
            return call(shared.session)

    async def arun(self, call: Callable[[Session], _T]) -> _T:
        """``run`` in a worker thread, so the event loop is never blocked on the disk."""
        return await asyncio.to_thread(self.run, call)

    def close(self) -> None:
        """Let go of the session; the last object of the process to let go closes it."""
        self._shared = None
        self._release()


def _release(key: tuple[str, str]) -> None:
    with _registry_lock:
        shared = _registry[key]
        shared.users -= 1
        if shared.users:
            return
        del _registry[key]
    with shared.lock:
        shared.session.close()


def check_keys(keys: Any, what: str) -> list[str]:
    """``keys`` as a list of strs (a bare str is refused: it would be its characters)."""
    if isinstance(keys, (str, bytes)):
        raise InvalidInput(f"{what} takes a sequence of str keys, not a single "
                           f"{type(keys).__name__}")
    result = list(keys)
    for key in result:
        if not isinstance(key, str):
            raise InvalidInput(f"{what}: keys are strs, not {type(key).__name__} ({key!r})")
    return result


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(ext_hook=refuse_msgpack_ext)


def exact_msgpack(value: Any) -> bytes | None:
    """``value`` as msgpack if it reads back equal and of the same types (a tuple would
    come back a list), else None."""
    try:
        raw = _encoder.encode(value)
        back = _decoder.decode(raw)
    except (TypeError, ValueError, OverflowError, RecursionError, msgspec.DecodeError):
        return None
    return raw if back == value and _same_types(back, value) else None


def decode(raw: bytes) -> Any:
    return _decoder.decode(raw)


def _same_types(back: Any, value: Any) -> bool:
    if type(back) is not type(value):
        return False
    if isinstance(value, list):
        return all(_same_types(b, v) for b, v in zip(back, value, strict=True))
    if isinstance(value, dict):
        return all(_same_types(back[key], item) for key, item in value.items())
    return True
