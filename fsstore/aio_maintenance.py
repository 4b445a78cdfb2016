"""Async twins of the maintenance calls (compaction), run in a worker thread like every
other twin in ``aio.py``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

from .lazy import LazyModule

if TYPE_CHECKING:
    import asyncio

    from .compaction import CompactReport
    from .repair_log import RepairReport
    from .retention import RetainReport, RetentionPolicy
else:
    asyncio = LazyModule("asyncio")  # imported by the first twin that runs (aio.py)


class _CompactingReader(Protocol):
    def compact(self, *, dry_run: bool = ..., target_bytes: int = ..., level: int = ...,
                lock_timeout: float = ...) -> CompactReport: ...


class _CompactingStore(Protocol):
    def compact(self, session_ids: Iterable[str] | None = ..., *, dry_run: bool = ...,
                target_bytes: int = ..., level: int = ..., lock_timeout: float = ...,
                on_session: Callable[[str], object] | None = ...) -> CompactReport: ...
    def repair(self, session_id: str, *, dry_run: bool = ..., lock_timeout: float = ...,
               on_segment: Callable[[int], object] | None = ...) -> RepairReport: ...


class _RetainingSession(Protocol):
    def retain(self, *, keep_turns: int | None = ..., keep_since: float | None = ...,
               keep: str = ..., dry_run: bool = ...,
               policy: RetentionPolicy | None = ...) -> RetainReport: ...

    def set_retention(self, policy: RetentionPolicy | None) -> None: ...


class _RetainingStore(Protocol):
    def retain(self, session_id: str, *, keep_turns: int | None = ...,
               keep_since: float | None = ..., keep: str = ..., dry_run: bool = ...,
               lock_timeout: float = ...) -> RetainReport: ...

    def apply_retention(self, session_ids: Iterable[str] | None = ..., *,
                        dry_run: bool = ..., lock_timeout: float = ...) -> RetainReport: ...


class AsyncSessionMaintenanceMixin:
    """``Session``'s maintenance twins (retention)."""

    async def aretain(self: _RetainingSession, *, keep_turns: int | None = None,
                      keep_since: float | None = None, keep: str = "all",
                      dry_run: bool = False, policy: RetentionPolicy | None = None
                      ) -> RetainReport:
        return await asyncio.to_thread(lambda: self.retain(
            keep_turns=keep_turns, keep_since=keep_since, keep=keep, dry_run=dry_run,
            policy=policy))

    async def aset_retention(self: _RetainingSession, policy: RetentionPolicy | None
                             ) -> None:
        await asyncio.to_thread(self.set_retention, policy)


class _HistoryReader(Protocol):
    @property
    def history_start(self) -> int: ...


class AsyncReaderMaintenanceMixin:
    """``SessionReader``'s maintenance twins."""

    async def ahistory_start(self: _HistoryReader) -> int:
        return await asyncio.to_thread(lambda: self.history_start)

    async def acompact(self: _CompactingReader, *, dry_run: bool = False,
                       target_bytes: int = 4 << 20, level: int = 3,
                       lock_timeout: float = 0.0) -> CompactReport:
        return await asyncio.to_thread(lambda: self.compact(
            dry_run=dry_run, target_bytes=target_bytes, level=level,
            lock_timeout=lock_timeout))


class AsyncStoreMaintenanceMixin:
    """``Store``'s maintenance twins."""

    async def acompact(self: _CompactingStore, session_ids: Iterable[str] | None = None, *,
                       dry_run: bool = False, target_bytes: int = 4 << 20, level: int = 3,
                       lock_timeout: float = 0.0,
                       on_session: Callable[[str], object] | None = None) -> CompactReport:
        return await asyncio.to_thread(lambda: self.compact(
            session_ids, dry_run=dry_run, target_bytes=target_bytes, level=level,
            lock_timeout=lock_timeout, on_session=on_session))

    async def aretain(self: _RetainingStore, session_id: str, *,
                      keep_turns: int | None = None, keep_since: float | None = None,
                      keep: str = "all", dry_run: bool = False,
                      lock_timeout: float = 0.0) -> RetainReport:
        return await asyncio.to_thread(lambda: self.retain(
            session_id, keep_turns=keep_turns, keep_since=keep_since, keep=keep,
            dry_run=dry_run, lock_timeout=lock_timeout))

    async def aapply_retention(self: _RetainingStore,
                               session_ids: Iterable[str] | None = None, *,
                               dry_run: bool = False, lock_timeout: float = 0.0
                               ) -> RetainReport:
        return await asyncio.to_thread(lambda: self.apply_retention(
            session_ids, dry_run=dry_run, lock_timeout=lock_timeout))

    async def arepair(self: _CompactingStore, session_id: str, *, dry_run: bool = False,
                      lock_timeout: float = 0.0,
                      on_segment: Callable[[int], object] | None = None) -> RepairReport:
        return await asyncio.to_thread(lambda: self.repair(
            session_id, dry_run=dry_run, lock_timeout=lock_timeout, on_segment=on_segment))
