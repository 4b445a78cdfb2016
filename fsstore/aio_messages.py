"""The async twins of the messages API and of a session's usage reads (see ``aio.py``):
each runs its blocking call in a worker thread, with the same parameters."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from .lazy import LazyModule

if TYPE_CHECKING:
    import asyncio

    from .message_types import Message
    from .messages import MessageVersion
    from .usage import ExecutionStats, UsageTotals
else:
    asyncio = LazyModule("asyncio")  # imported by the first twin that runs (aio.py)


class _UsageLike(Protocol):
    def usage(self, *, by: str | None = ..., at_seq: int | None = ...
              ) -> dict[str, UsageTotals]: ...
    def stats(self, *, at_seq: int | None = ...) -> ExecutionStats: ...


class AsyncUsageMixin:
    """``SessionReader.usage`` and ``stats``' twins."""

    async def ausage(self: _UsageLike, *, by: str | None = None, at_seq: int | None = None
                     ) -> dict[str, UsageTotals]:
        return await asyncio.to_thread(lambda: self.usage(by=by, at_seq=at_seq))

    async def astats(self: _UsageLike, *, at_seq: int | None = None) -> ExecutionStats:
        return await asyncio.to_thread(lambda: self.stats(at_seq=at_seq))


class _ReaderLike(Protocol):
    def count(self, *, at_seq: int | None = ...) -> int: ...
    def last(self, n: int = ..., *, at_seq: int | None = ...) -> list[Message]: ...
    def get(self, message_id: str, *, at_seq: int | None = ...) -> Message: ...
    def exists(self, message_id: str, *, at_seq: int | None = ...) -> bool: ...
    def history(self, message_id: str) -> list[MessageVersion]: ...
    def page(self, *, before: str | None = ..., after: str | None = ..., limit: int = ...,
             at_seq: int | None = ...) -> list[Message]: ...
    def all(self, *, at_seq: int | None = ...) -> list[Message]: ...


class AsyncMessagesReaderMixin:
    """``MessagesReader``'s twins."""

    async def acount(self: _ReaderLike, *, at_seq: int | None = None) -> int:
        return await asyncio.to_thread(lambda: self.count(at_seq=at_seq))

    async def alast(self: _ReaderLike, n: int = 50, *, at_seq: int | None = None
                    ) -> list[Message]:
        return await asyncio.to_thread(lambda: self.last(n, at_seq=at_seq))

    async def aget(self: _ReaderLike, message_id: str, *, at_seq: int | None = None
                   ) -> Message:
        return await asyncio.to_thread(lambda: self.get(message_id, at_seq=at_seq))

    async def aexists(self: _ReaderLike, message_id: str, *, at_seq: int | None = None
                      ) -> bool:
        return await asyncio.to_thread(lambda: self.exists(message_id, at_seq=at_seq))

    async def ahistory(self: _ReaderLike, message_id: str) -> list[MessageVersion]:
        return await asyncio.to_thread(self.history, message_id)

    async def apage(self: _ReaderLike, *, before: str | None = None, after: str | None = None,
                    limit: int = 50, at_seq: int | None = None) -> list[Message]:
        return await asyncio.to_thread(
            lambda: self.page(before=before, after=after, limit=limit, at_seq=at_seq))

    async def aall(self: _ReaderLike, *, at_seq: int | None = None) -> list[Message]:
        return await asyncio.to_thread(lambda: self.all(at_seq=at_seq))


class _WriterLike(Protocol):
    def append(self, message: Message | Mapping[str, Any], *, turn: int | None = ...,
               ts: float | None = ...) -> Message: ...
    def append_many(self, messages: Iterable[Message | Mapping[str, Any]], *,
                    turn: int | None = ..., ts: float | None = ...) -> list[Message]: ...
    def edit(self, message: Message | Mapping[str, Any], *, turn: int | None = ...,
             ts: float | None = ...) -> Message: ...
    def delete(self, message_id: str, *, turn: int | None = ...,
               ts: float | None = ...) -> int: ...
    def pop(self, *, turn: int | None = ..., ts: float | None = ...) -> Message | None: ...


class AsyncMessagesMixin:
    """``Messages``' twins for its writes."""

    async def aappend(self: _WriterLike, message: Message | Mapping[str, Any], *,
                      turn: int | None = None, ts: float | None = None) -> Message:
        return await asyncio.to_thread(lambda: self.append(message, turn=turn, ts=ts))

    async def aappend_many(self: _WriterLike,
                           messages: Iterable[Message | Mapping[str, Any]], *,
                           turn: int | None = None, ts: float | None = None) -> list[Message]:
        batch = list(messages)  # an iterator is read here, not in the worker thread
        return await asyncio.to_thread(lambda: self.append_many(batch, turn=turn, ts=ts))

    async def aedit(self: _WriterLike, message: Message | Mapping[str, Any], *,
                    turn: int | None = None, ts: float | None = None) -> Message:
        return await asyncio.to_thread(lambda: self.edit(message, turn=turn, ts=ts))

    async def adelete(self: _WriterLike, message_id: str, *, turn: int | None = None,
                      ts: float | None = None) -> int:
        return await asyncio.to_thread(lambda: self.delete(message_id, turn=turn, ts=ts))

    async def apop(self: _WriterLike, *, turn: int | None = None, ts: float | None = None
                   ) -> Message | None:
        return await asyncio.to_thread(lambda: self.pop(turn=turn, ts=ts))
