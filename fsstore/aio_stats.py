"""The async twins of the counts of a session and of a store (``stats.py``; see
``aio.py``): each runs its blocking call in a worker thread, with the same parameters."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from .lazy import LazyModule

if TYPE_CHECKING:
    import asyncio

    from .stats import DiskUsage, SessionStats, StoreStats
else:
    asyncio = LazyModule("asyncio")  # imported by the first twin that runs (aio.py)


class _SessionLike(Protocol):
    def session_stats(self, *, events_by_kind: bool = ...) -> SessionStats: ...
    def key_count(self) -> int: ...


class AsyncSessionStatsMixin:
    """``SessionReader.session_stats`` and ``key_count``'s twins."""

    async def asession_stats(self: _SessionLike, *, events_by_kind: bool = False
                             ) -> SessionStats:
        return await asyncio.to_thread(lambda: self.session_stats(events_by_kind=events_by_kind))

    async def akey_count(self: _SessionLike) -> int:
        return await asyncio.to_thread(self.key_count)


class _StoreLike(Protocol):
    def stats(self, *, on_session: Callable[[str], object] | None = ...,
              use_cache: bool = ...) -> StoreStats: ...
    def disk_usage(self) -> DiskUsage: ...
    def key_count(self) -> int: ...


class AsyncStoreStatsMixin:
    """``Store.stats``, ``disk_usage`` and ``key_count``'s twins."""

    async def astats(self: _StoreLike, *, on_session: Callable[[str], object] | None = None,
                     use_cache: bool = True) -> StoreStats:
        return await asyncio.to_thread(lambda: self.stats(on_session=on_session,
                                                          use_cache=use_cache))

    async def adisk_usage(self: _StoreLike) -> DiskUsage:
        return await asyncio.to_thread(self.disk_usage)

    async def akey_count(self: _StoreLike) -> int:
        return await asyncio.to_thread(self.key_count)
