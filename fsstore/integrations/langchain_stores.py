"""``FsstoreByteStore`` and ``FsstoreStore``: LangChain key-value stores kept in the state
of an fsstore session, one session per namespace.

A key is a key of the session's state: any str, never a path (the namespace is mapped
to the session id by ``session_id_for("lc-kv", namespace)``). ``mset`` is one
``fsstore.state`` record (a merge patch setting each key), ``mdelete`` one more (a patch
setting each to None, which removes it): each call is atomic, durable as the store's
durability says, and the whole history of the values stays in the log
(``state_at(seq)``). The state is held in memory by each reader, so this suits the
caches and documents LangChain keeps in a ByteStore (embeddings caches, parent
documents), up to some hundreds of MiB per namespace.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

from langchain_core.stores import BaseStore

from ..errors import InvalidState
from ..session import Session
from ..store import Store
from .langchain_common import (
    HandleOwner,
    SessionHandle,
    as_store,
    check_keys,
    decode,
    exact_msgpack,
)

__all__ = ["FsstoreByteStore", "FsstoreStore"]

KIND = "lc-kv"


class _StateStore(HandleOwner):
    """What both stores share: keys, deletes, and values as stored (bytes) in and out.
    Listed first among the bases so that its methods win over BaseStore's defaults."""

    def __init__(self, store: Store | str | os.PathLike[str], namespace: str,
                 kind: str) -> None:
        self.namespace = namespace
        self._handle = SessionHandle(as_store(store), kind, namespace)

    @property
    def fsstore_session_id(self) -> str:
        """The id of the fsstore session that holds this namespace."""
        return self._handle.session_id

    def _get(self, keys: Sequence[str]) -> list[bytes | None]:
        keys = check_keys(keys, "mget")
        return self._handle.run(lambda session: _values(session, keys))

    async def _aget(self, keys: Sequence[str]) -> list[bytes | None]:
        keys = check_keys(keys, "amget")
        return await self._handle.arun(lambda session: _values(session, keys))

    def _set(self, patch: Mapping[str, bytes | None]) -> None:
        if patch:
            self._handle.run(lambda session: session.merge_state(patch))

    async def _aset(self, patch: Mapping[str, bytes | None]) -> None:
        if patch:
            await self._handle.arun(lambda session: session.merge_state(patch))

    def mdelete(self, keys: Sequence[str]) -> None:
        """Remove ``keys``; a missing key is no error."""
        self._set(dict.fromkeys(check_keys(keys, "mdelete")))

    async def amdelete(self, keys: Sequence[str]) -> None:
        await self._aset(dict.fromkeys(check_keys(keys, "amdelete")))

    def yield_keys(self, *, prefix: str | None = None) -> Iterator[str]:
        """The keys (those starting with ``prefix``), sorted."""
        _check_prefix(prefix)
        yield from self._handle.run(lambda session: _keys(session, prefix))

    async def ayield_keys(self, *, prefix: str | None = None) -> AsyncIterator[str]:
        _check_prefix(prefix)
        for key in await self._handle.arun(lambda session: _keys(session, prefix)):
            yield key


def _values(session: Session, keys: list[str]) -> list[bytes | None]:
    return [session.get_state(key) for key in keys]


def _keys(session: Session, prefix: str | None) -> list[str]:
    return sorted(key for key in session.state() if prefix is None or key.startswith(prefix))


def _check_prefix(prefix: object) -> None:
    if prefix is not None and not isinstance(prefix, str):
        raise InvalidState(f"yield_keys: prefix must be a str or None, not {prefix!r}")


def _pairs(key_value_pairs: Sequence[tuple[str, Any]], encode: Any) -> dict[str, Any]:
    """The merge patch of an mset: the last value of a key given twice wins."""
    pairs = list(key_value_pairs)
    check_keys([key for key, _ in pairs], "mset")
    return {key: encode(key, value) for key, value in pairs}


def _bytes(key: str, value: Any) -> bytes:
    if not isinstance(value, bytes):
        raise InvalidState(f"mset: key {key!r}: a ByteStore holds bytes, not "
                           f"{type(value).__name__} (FsstoreStore holds other values)")
    return value


class FsstoreByteStore(_StateStore, BaseStore[str, bytes]):
    """A LangChain ``ByteStore`` (str keys, bytes values) in the store ``store`` (a
    :class:`~fsstore.Store` or a path), under ``namespace`` (any str): the state of the
    session ``session_id_for("lc-kv", namespace)``. Stores on one namespace, in one
    process or several, share it."""

    def __init__(self, store: Store | str | os.PathLike[str],
                 namespace: str = "default") -> None:
        _StateStore.__init__(self, store, namespace, KIND)

    def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        return self._get(keys)

    async def amget(self, keys: Sequence[str]) -> list[bytes | None]:
        return await self._aget(keys)

    def mset(self, key_value_pairs: Sequence[tuple[str, bytes]]) -> None:
        self._set(_pairs(key_value_pairs, _bytes))

    async def amset(self, key_value_pairs: Sequence[tuple[str, bytes]]) -> None:
        await self._aset(_pairs(key_value_pairs, _bytes))


def _encoded(key: str, value: Any) -> bytes:
    """``value`` as msgpack; refused unless it reads back equal."""
    raw = exact_msgpack(value)
    if raw is None:
        raise InvalidState(f"mset: key {key!r}: the value would not read back equal from "
                           "msgpack (a tuple reads back as a list; sets, datetimes and "
                           "objects cannot be stored): use None, bool, int, float, str, "
                           "bytes, lists and dicts with str keys")
    return raw


class FsstoreStore(_StateStore, BaseStore[str, Any]):
    """A LangChain ``BaseStore[str, Any]``: like :class:`FsstoreByteStore`, for any value
    msgpack holds exactly (None, bool, int, float, str, bytes, lists, dicts with str
    keys), stored as its msgpack bytes under ``session_id_for("lc-kvany", namespace)``.
    A value that would not read back equal (a tuple, a set, an object) is refused with
    InvalidState and nothing is written."""

    def __init__(self, store: Store | str | os.PathLike[str],
                 namespace: str = "default") -> None:
        _StateStore.__init__(self, store, namespace, "lc-kvany")

    def mget(self, keys: Sequence[str]) -> list[Any]:
        return [None if raw is None else decode(raw) for raw in self._get(keys)]

    async def amget(self, keys: Sequence[str]) -> list[Any]:
        return [None if raw is None else decode(raw)
                for raw in await self._aget(keys)]

    def mset(self, key_value_pairs: Sequence[tuple[str, Any]]) -> None:
        self._set(_pairs(key_value_pairs, _encoded))

    async def amset(self, key_value_pairs: Sequence[tuple[str, Any]]) -> None:
        await self._aset(_pairs(key_value_pairs, _encoded))

