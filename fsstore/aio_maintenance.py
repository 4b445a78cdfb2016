"""Async twins of the maintenance calls (compaction), run in a worker thread like every
other twin in ``aio.py``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .compaction import CompactReport
    from .repair_log import RepairReport


class _CompactingReader(Protocol):
    def compact(self, *, dry_run: bool = ..., target_bytes: int = ..., level: int = ...,
                lock_timeout: float = ...) -> CompactReport: ...


class _CompactingStore(Protocol):
    def compact(self, session_ids: Iterable[str] | None = ..., *, dry_run: bool = ...,
                target_bytes: int = ..., level: int = ..., lock_timeout: float = ...,
                on_session: Callable[[str], object] | None = ...) -> CompactReport: ...
    def repair(self, session_id: str, *, dry_run: bool = ...,
               lock_timeout: float = ...) -> RepairReport: ...


class AsyncReaderMaintenanceMixin:
    """``SessionReader``'s maintenance twins."""

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

    async def arepair(self: _CompactingStore, session_id: str, *, dry_run: bool = False,
                      lock_timeout: float = 0.0) -> RepairReport:
        return await asyncio.to_thread(lambda: self.repair(
            session_id, dry_run=dry_run, lock_timeout=lock_timeout))
