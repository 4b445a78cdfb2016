"""Async twins of every blocking public call.

The rule: each public method that can block (disk I/O, an fsync, a lock wait: a shared
open waits up to 10 s) has a twin named ``a`` + its name, with the same parameters and
defaults, that runs it in a worker thread (``asyncio.to_thread``), so an event loop
never waits on the disk or a lock. ``sync`` is the one exception to the name: ``async``
is a keyword, so its twin is ``async_``. An iterator's twin is an async iterator
(``aevents``, ``adigests``). ``aopen_store`` is the twin of ``open_store``.

The twins live here as mixins, one per class, so that they are written once with their
signatures spelled out. Each mixin's methods take ``self`` as a protocol that spells out
the synchronous methods they call: mypy checks every call against it, and
``_conformance`` below checks that each class has those methods as the protocol says.
``tests/test_async_surface.py`` checks that no blocking public method lacks its twin, and
that the twin's parameters are the method's.
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import IO, TYPE_CHECKING, Any, Protocol, TypeVar

from .errors import InvalidSetting
from .lazy import LazyModule
from .unset import UNSET
from .workspaces import SessionRole

if TYPE_CHECKING:
    import asyncio
    import io as _io
    from typing import TypeAlias

    from .blobs import BlobReader, BlobRef, BlobStat, BlobStore, GcReport
    from .chain import ChainKey
    from .errors import Finding
    from .fsio import FileIO
    from .lease import ClaimOutcome, Lease, LeaseOwner, LeaseState
    from .lineage import Lineage
    from .listing import When
    from .log import LogTail
    from .log_format import Event
    from .log_writer import Durability
    from .session import CommitResult, Session, SessionInfo, SessionReader
    from .snapshot import CheckpointInfo, SnapshotPolicy
    from .store import Store
    from .store_usage import StoreUsage
    from .turns import Revision, Turn
    from .vacuum import VacuumReport
    from .vectors import (
        CollectionInfo,
        DistanceMetric,
        VectorCollection,
        VectorCollectionReader,
        VectorDocument,
        VectorFilter,
        VectorSearchResult,
    )
    from .watch import Notifier, SessionChange, StoreWatcher
    from .work import (
        ClaimedWork,
        QueuedWork,
        TurnInput,
        TurnInputs,
        TurnInputsReader,
        WorkQueue,
        WorkQueueReader,
    )
    from .workspaces import Workspace, WorkspaceMember
else:
    # Imported by the first twin that runs, not with fsstore: a command run once per file
    # (``fsstore cat``) must not pay for asyncio, and a coroutine runs where it is loaded.
    asyncio = LazyModule("asyncio")

#: How many events ``aevents`` reads in one trip to a worker thread.
DEFAULT_BATCH = 1000

if TYPE_CHECKING:
    _Source: TypeAlias = "bytes | bytearray | memoryview | str | os.PathLike[str] | IO[bytes]"
    _Filter: TypeAlias = "VectorFilter | Mapping[str, Any] | None"


# --- the store ------------------------------------------------------------------------------


async def aopen_store(
    path: str | os.PathLike[str],
    *,
    create: bool = True,
    durability: Durability | str | None = None,
    segment_size: int = 4 << 20,
    max_record_bytes: int = 16 << 20,
    snapshots: SnapshotPolicy | None = None,
    blob_compression: str = "auto",
    io: FileIO | None = None,
    chain: bool | None = None,
    chain_key: ChainKey | bytes | str | os.PathLike[str] | None = None,
) -> Store:
    """:func:`fsstore.open_store` in a worker thread."""
    from .store import open_store  # the store module imports this one

    return await asyncio.to_thread(
        open_store, path, create=create, durability=durability, segment_size=segment_size,
        max_record_bytes=max_record_bytes, snapshots=snapshots,
        blob_compression=blob_compression, io=io, chain=chain, chain_key=chain_key)


async def afind_store(start: str | os.PathLike[str] | None = None) -> str:
    """:func:`fsstore.find_store` in a worker thread (it walks up the folders)."""
    from .store import find_store  # the store module imports this one

    return await asyncio.to_thread(find_store, start)


class _StoreLike(Protocol):
    def close(self) -> None: ...
    def watch(self, *, poll_interval: float = ...,
              callback: Callable[[SessionChange], object] | None = ...,
              include_existing: bool = ..., notifier: Notifier | None = ...
              ) -> StoreWatcher: ...
    def claim_lease(self, session_id: str, owner: LeaseOwner | str | None = ..., *,
                    ttl: float = ..., lock_timeout: float = ...) -> ClaimOutcome: ...
    def create_session(self, session_id: str | None = ..., *, title: str | None = ...,
                       tags: Iterable[str] = ..., metadata: Mapping[str, Any] | None = ...,
                       durability: Durability | str | None = ...,
                       spawned_by: str | None = ..., at_seq: int | None = ...) -> Session: ...
    def delete_session(self, session_id: str, *, lock_timeout: float = ...,
                       force: bool = ...) -> None: ...
    def fork_session(self, source_id: str, new_id: str | None = ..., *,
                     at_seq: int | None = ..., at_checkpoint: str | None = ...,
                     title: str | None = ..., tags: Iterable[str] = ...,
                     metadata: Mapping[str, Any] = ...,
                     durability: Durability | str | None = ...,
                     source: Session | None = ...) -> Session: ...
    def has_session(self, session_id: str) -> bool: ...
    def lease_info(self, session_id: str) -> LeaseState: ...
    def lineage(self, session_id: str) -> Lineage: ...
    def list_sessions(self) -> list[SessionInfo]: ...
    def open_session(self, session_id: str, *, durability: Durability | str | None = ...,
                     lock_timeout: float | None = ..., lease: Lease | None = ...,
                     shared: bool = ...) -> Session: ...
    def read_session(self, session_id: str) -> SessionReader: ...
    def release_lease(self, lease: Lease, *, lock_timeout: float = ...) -> bool: ...
    def remove_leftovers(self) -> list[str]: ...
    def renew_lease(self, lease: Lease, *, ttl: float | None = ...,
                    lock_timeout: float = ...) -> Lease: ...
    def reset_lease(self, session_id: str, *, lock_timeout: float = ...) -> int: ...
    def search(self, collection: str, query: Any, k: int = ..., *,
               metric: DistanceMetric | str | None = ..., filter: _Filter = ...,
               min_score: float | None = ..., max_distance: float | None = ...,
               sessions: Iterable[str] | None = ..., tags: Iterable[str] | None = ...,
               workspace: str | None = ..., created_after: When = ...,
               created_before: When = ..., updated_after: When = ...,
               updated_before: When = ...) -> list[VectorSearchResult]: ...
    def search_batch(self, collection: str, queries: Any, k: int = ..., *,
                     metric: DistanceMetric | str | None = ..., filter: _Filter = ...,
                     min_score: float | None = ..., max_distance: float | None = ...,
                     sessions: Iterable[str] | None = ...,
                     tags: Iterable[str] | None = ..., workspace: str | None = ...,
                     created_after: When = ..., created_before: When = ...,
                     updated_after: When = ..., updated_before: When = ...
                     ) -> list[list[VectorSearchResult]]: ...
    def session_ids(self) -> list[str]: ...
    def verify(self, session_ids: Iterable[str] | None = ..., *,
               on_session: Callable[[str], object] | None = ...) -> list[Finding]: ...
    def create_workspace(self, workspace_id: str | None = ..., *, name: str | None = ...,
                         description: str = ..., metadata: Mapping[str, Any] | None = ...
                         ) -> Workspace: ...
    def workspace(self, workspace_id: str) -> Workspace: ...
    def update_workspace(self, workspace_id: str, *, name: str = ..., description: str = ...,
                         metadata: Mapping[str, Any] = ...) -> Workspace: ...
    def list_workspaces(self) -> list[Workspace]: ...
    def delete_workspace(self, workspace_id: str) -> None: ...
    def add_to_workspace(self, workspace_id: str, session_id: str,
                         role: SessionRole | str = ...) -> Workspace: ...
    def set_workspace_role(self, workspace_id: str, session_id: str,
                           role: SessionRole | str) -> Workspace: ...
    def remove_from_workspace(self, workspace_id: str, session_id: str) -> Workspace: ...
    def workspace_sessions(self, workspace_id: str, role: SessionRole | str | None = ...
                           ) -> list[WorkspaceMember]: ...
    def session_workspaces(self, session_id: str) -> dict[str, str]: ...
    def usage(self, *, by: str | None = ..., sessions: Iterable[str] | None = ...
              ) -> StoreUsage: ...
    def vacuum(self, session_ids: Iterable[str] | None = ..., *, dry_run: bool = ...,
               grace: float = ..., torn_grace: float = ..., lock_timeout: float = ...,
               on_session: Callable[[str], object] | None = ...,
               message_grace: float = ...) -> VacuumReport: ...


_StoreT = TypeVar("_StoreT", bound=_StoreLike)


class AsyncStoreMixin:
    """``Store``'s async twins: each ``aNAME`` runs ``NAME`` in a worker thread.
    ``async with store`` closes it, as ``with`` does."""

    async def __aenter__(self: _StoreT) -> _StoreT:
        return self

    async def __aexit__(self: _StoreLike, *exc_info: object) -> None:
        self.close()  # closes handles, does no I/O that waits

    async def awatch(self: _StoreLike, *, poll_interval: float = 1.0,
                     callback: Callable[[SessionChange], object] | None = None,
                     include_existing: bool = False, notifier: Notifier | None = None
                     ) -> StoreWatcher:
        """The twin of ``watch``, which reads the head of every session as it starts."""
        return await asyncio.to_thread(self.watch, poll_interval=poll_interval,
                                       callback=callback, include_existing=include_existing,
                                       notifier=notifier)

    async def aclaim_lease(self: _StoreLike, session_id: str,
                           owner: LeaseOwner | str | None = None, *, ttl: float = 30.0,
                           lock_timeout: float = 5.0) -> ClaimOutcome:
        return await asyncio.to_thread(self.claim_lease, session_id, owner, ttl=ttl,
                                       lock_timeout=lock_timeout)

    async def acreate_session(
        self: _StoreLike, session_id: str | None = None, *, title: str | None = None,
        tags: Iterable[str] = (), metadata: Mapping[str, Any] | None = None,
        durability: Durability | str | None = None, spawned_by: str | None = None,
        at_seq: int | None = None,
    ) -> Session:
        return await asyncio.to_thread(self.create_session, session_id, title=title,
                                       tags=tags, metadata=metadata, durability=durability,
                                       spawned_by=spawned_by, at_seq=at_seq)

    async def adelete_session(self: _StoreLike, session_id: str, *, lock_timeout: float = 0.0,
                              force: bool = False) -> None:
        await asyncio.to_thread(self.delete_session, session_id, lock_timeout=lock_timeout,
                                force=force)

    async def afork_session(
        self: _StoreLike, source_id: str, new_id: str | None = None, *,
        at_seq: int | None = None, at_checkpoint: str | None = None,
        title: str | None = UNSET, tags: Iterable[str] = UNSET,
        metadata: Mapping[str, Any] = UNSET, durability: Durability | str | None = None,
        source: Session | None = None,
    ) -> Session:
        return await asyncio.to_thread(
            self.fork_session, source_id, new_id, at_seq=at_seq, at_checkpoint=at_checkpoint,
            title=title, tags=tags, metadata=metadata, durability=durability, source=source)

    # --- workspaces ---

    async def acreate_workspace(
        self: _StoreLike, workspace_id: str | None = None, *, name: str | None = None,
        description: str = "", metadata: Mapping[str, Any] | None = None,
    ) -> Workspace:
        return await asyncio.to_thread(self.create_workspace, workspace_id, name=name,
                                       description=description, metadata=metadata)

    async def aworkspace(self: _StoreLike, workspace_id: str) -> Workspace:
        return await asyncio.to_thread(self.workspace, workspace_id)

    async def aupdate_workspace(self: _StoreLike, workspace_id: str, *, name: str = UNSET,
                                description: str = UNSET,
                                metadata: Mapping[str, Any] = UNSET) -> Workspace:
        return await asyncio.to_thread(self.update_workspace, workspace_id, name=name,
                                       description=description, metadata=metadata)

    async def alist_workspaces(self: _StoreLike) -> list[Workspace]:
        return await asyncio.to_thread(self.list_workspaces)

    async def adelete_workspace(self: _StoreLike, workspace_id: str) -> None:
        await asyncio.to_thread(self.delete_workspace, workspace_id)

    async def aadd_to_workspace(self: _StoreLike, workspace_id: str, session_id: str,
                                role: SessionRole | str = SessionRole.RELATED) -> Workspace:
        return await asyncio.to_thread(self.add_to_workspace, workspace_id, session_id, role)

    async def aset_workspace_role(self: _StoreLike, workspace_id: str, session_id: str,
                                  role: SessionRole | str) -> Workspace:
        return await asyncio.to_thread(self.set_workspace_role, workspace_id, session_id,
                                       role)

    async def aremove_from_workspace(self: _StoreLike, workspace_id: str,
                                     session_id: str) -> Workspace:
        return await asyncio.to_thread(self.remove_from_workspace, workspace_id, session_id)

    async def aworkspace_sessions(self: _StoreLike, workspace_id: str,
                                  role: SessionRole | str | None = None
                                  ) -> list[WorkspaceMember]:
        return await asyncio.to_thread(self.workspace_sessions, workspace_id, role)

    async def asession_workspaces(self: _StoreLike, session_id: str) -> dict[str, str]:
        return await asyncio.to_thread(self.session_workspaces, session_id)

    async def ahas_session(self: _StoreLike, session_id: str) -> bool:
        return await asyncio.to_thread(self.has_session, session_id)

    async def alease_info(self: _StoreLike, session_id: str) -> LeaseState:
        return await asyncio.to_thread(self.lease_info, session_id)

    async def alineage(self: _StoreLike, session_id: str) -> Lineage:
        return await asyncio.to_thread(self.lineage, session_id)

    async def aopen_session(
        self: _StoreLike, session_id: str, *, durability: Durability | str | None = None,
        lock_timeout: float | None = None, lease: Lease | None = None, shared: bool = False,
    ) -> Session:
        return await asyncio.to_thread(self.open_session, session_id, durability=durability,
                                       lock_timeout=lock_timeout, lease=lease, shared=shared)

    async def aread_session(self: _StoreLike, session_id: str) -> SessionReader:
        return await asyncio.to_thread(self.read_session, session_id)

    async def arelease_lease(self: _StoreLike, lease: Lease, *,
                             lock_timeout: float = 5.0) -> bool:
        return await asyncio.to_thread(self.release_lease, lease, lock_timeout=lock_timeout)

    async def aremove_leftovers(self: _StoreLike) -> list[str]:
        return await asyncio.to_thread(self.remove_leftovers)

    async def avacuum(self: _StoreLike, session_ids: Iterable[str] | None = None, *,
                      dry_run: bool = False, grace: float = 3600.0,
                      torn_grace: float = 604800.0, lock_timeout: float = 0.0,
                      on_session: Callable[[str], object] | None = None,
                      message_grace: float = 0.0) -> VacuumReport:
        return await asyncio.to_thread(self.vacuum, session_ids, dry_run=dry_run, grace=grace,
                                       torn_grace=torn_grace, lock_timeout=lock_timeout,
                                       on_session=on_session, message_grace=message_grace)

    async def arenew_lease(self: _StoreLike, lease: Lease, *, ttl: float | None = None,
                           lock_timeout: float = 5.0) -> Lease:
        return await asyncio.to_thread(self.renew_lease, lease, ttl=ttl,
                                       lock_timeout=lock_timeout)

    async def areset_lease(self: _StoreLike, session_id: str, *,
                           lock_timeout: float = 5.0) -> int:
        return await asyncio.to_thread(self.reset_lease, session_id, lock_timeout=lock_timeout)

    async def asearch(
        self: _StoreLike, collection: str, query: Any, k: int = 10, *,
        metric: DistanceMetric | str | None = None, filter: _Filter = None,
        min_score: float | None = None, max_distance: float | None = None,
        sessions: Iterable[str] | None = None, tags: Iterable[str] | None = None,
        workspace: str | None = None, created_after: When = None,
        created_before: When = None, updated_after: When = None,
        updated_before: When = None,
    ) -> list[VectorSearchResult]:
        return await asyncio.to_thread(functools.partial(
            self.search, collection, query, k, metric=metric, filter=filter,
            min_score=min_score, max_distance=max_distance, sessions=sessions, tags=tags,
            workspace=workspace, created_after=created_after, created_before=created_before,
            updated_after=updated_after, updated_before=updated_before))

    async def asearch_batch(
        self: _StoreLike, collection: str, queries: Any, k: int = 10, *,
        metric: DistanceMetric | str | None = None, filter: _Filter = None,
        min_score: float | None = None, max_distance: float | None = None,
        sessions: Iterable[str] | None = None, tags: Iterable[str] | None = None,
        workspace: str | None = None, created_after: When = None,
        created_before: When = None, updated_after: When = None,
        updated_before: When = None,
    ) -> list[list[VectorSearchResult]]:
        return await asyncio.to_thread(functools.partial(
            self.search_batch, collection, queries, k, metric=metric, filter=filter,
            min_score=min_score, max_distance=max_distance, sessions=sessions, tags=tags,
            workspace=workspace, created_after=created_after, created_before=created_before,
            updated_after=updated_after, updated_before=updated_before))

    async def asession_ids(self: _StoreLike) -> list[str]:
        return await asyncio.to_thread(self.session_ids)

    async def averify(self: _StoreLike, session_ids: Iterable[str] | None = None, *,
                      on_session: Callable[[str], object] | None = None) -> list[Finding]:
        return await asyncio.to_thread(
            lambda: self.verify(session_ids, on_session=on_session))

    async def ausage(self: _StoreLike, *, by: str | None = None,
                     sessions: Iterable[str] | None = None) -> StoreUsage:
        chosen = None if sessions is None else list(sessions)  # read here, not in a thread
        return await asyncio.to_thread(lambda: self.usage(by=by, sessions=chosen))


# --- sessions -------------------------------------------------------------------------------


class _SessionReaderLike(Protocol):
    @property
    def head(self) -> int: ...
    @property
    def log_tail(self) -> LogTail: ...
    @property
    def revision(self) -> Revision: ...
    @property
    def head_hash(self) -> str | None: ...
    def info(self) -> SessionInfo: ...
    def events(self, after_seq: int = ..., until_seq: int | None = ...,
               limit: int | None = ..., *, last: int | None = ...,
               include_internal: bool = ...) -> Iterator[Event]: ...
    def get_turn(self, number: int, *, include_internal: bool = ...) -> Turn | None: ...
    def get_turns(self, *, include_internal: bool = ...) -> list[Turn]: ...
    def verify(self, expect_head: str | None = ..., *, exact: bool = ...
               ) -> list[Finding]: ...
    def collections(self) -> list[CollectionInfo]: ...
    def collection(self, name: str) -> VectorCollectionReader: ...
    def state(self) -> dict[str, Any]: ...
    def get_state(self, key: str, default: Any = ...) -> Any: ...
    def state_at(self, seq: int) -> dict[str, Any]: ...
    def checkpoints(self) -> list[CheckpointInfo]: ...
    def checkpoint_info(self, checkpoint_id: str) -> CheckpointInfo: ...
    def load_checkpoint(self, checkpoint_id: str) -> dict[str, Any]: ...


async def _read_events(reader: _SessionReaderLike, after_seq: int, until_seq: int | None,
                       limit: int | None, last: int | None, include_internal: bool,
                       batch: int) -> AsyncIterator[Event]:
    """``aevents``' iterator, its arguments checked: the one iterator ``events`` returns,
    advanced ``batch`` events at a time in a worker thread. One iterator, not a new read
    per batch: what it yields is what ``events`` yields (a prefix of the log as it was,
    never a jump into a log a clear started meanwhile)."""
    events = await asyncio.to_thread(reader.events, after_seq, until_seq, limit, last=last,
                                     include_internal=include_internal)
    while True:
        chunk = await asyncio.to_thread(lambda: list(itertools.islice(events, batch)))
        for event in chunk:
            yield event
        if len(chunk) < batch:
            return


class AsyncSessionReaderMixin:
    """``SessionReader``'s async twins (a ``Session`` has them too)."""

    async def ahead(self: _SessionReaderLike) -> int:
        """The twin of the ``head`` property: it reads the log's tail (and a shared
        writer's waits for the session's mutex)."""
        return await asyncio.to_thread(lambda: self.head)

    async def alog_tail(self: _SessionReaderLike) -> LogTail:
        """The twin of the ``log_tail`` property, which reads the log's last segment."""
        return await asyncio.to_thread(lambda: self.log_tail)

    async def arevision(self: _SessionReaderLike) -> Revision:
        """The twin of the ``revision`` property, which reads the log like ``head``."""
        return await asyncio.to_thread(lambda: self.revision)

    async def ahead_hash(self: _SessionReaderLike) -> str | None:
        """The twin of the ``head_hash`` property, which reads (and hashes) the log's
        last segment."""
        return await asyncio.to_thread(lambda: self.head_hash)

    async def ainfo(self: _SessionReaderLike) -> SessionInfo:
        return await asyncio.to_thread(self.info)

    def aevents(
        self: _SessionReaderLike, after_seq: int = 0, until_seq: int | None = None,
        limit: int | None = None, *, last: int | None = None, include_internal: bool = False,
        batch: int = DEFAULT_BATCH,
    ) -> AsyncIterator[Event]:
        """Like ``events``, as an async iterator: it reads ``batch`` events at a time in a
        worker thread (all ``last`` of them at once), so one segment at most is held. Its
        arguments are refused at the call, as ``events`` refuses them, not at the first
        ``async for``."""
        from .session_reader import check_events_args  # imports this module

        check_events_args(after_seq, until_seq, limit, last)
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise InvalidSetting(f"batch must be an int >= 1, not {batch!r}")
        return _read_events(self, after_seq, until_seq, limit, last, include_internal, batch)

    async def aget_turn(self: _SessionReaderLike, number: int, *,
                        include_internal: bool = False) -> Turn | None:
        return await asyncio.to_thread(self.get_turn, number,
                                       include_internal=include_internal)

    async def aget_turns(self: _SessionReaderLike, *,
                         include_internal: bool = False) -> list[Turn]:
        return await asyncio.to_thread(self.get_turns, include_internal=include_internal)

    async def averify(self: _SessionReaderLike, expect_head: str | None = None, *,
                      exact: bool = False) -> list[Finding]:
        return await asyncio.to_thread(lambda: self.verify(expect_head, exact=exact))

    async def acollections(self: _SessionReaderLike) -> list[CollectionInfo]:
        return await asyncio.to_thread(self.collections)

    async def acollection(self: _SessionReaderLike, name: str) -> VectorCollectionReader:
        return await asyncio.to_thread(self.collection, name)

    async def astate(self: _SessionReaderLike) -> dict[str, Any]:
        return await asyncio.to_thread(self.state)

    async def aget_state(self: _SessionReaderLike, key: str, default: Any = None) -> Any:
        return await asyncio.to_thread(self.get_state, key, default)

    async def astate_at(self: _SessionReaderLike, seq: int) -> dict[str, Any]:
        return await asyncio.to_thread(self.state_at, seq)

    async def acheckpoints(self: _SessionReaderLike) -> list[CheckpointInfo]:
        return await asyncio.to_thread(self.checkpoints)

    async def acheckpoint_info(self: _SessionReaderLike, checkpoint_id: str) -> CheckpointInfo:
        return await asyncio.to_thread(self.checkpoint_info, checkpoint_id)

    async def aload_checkpoint(self: _SessionReaderLike, checkpoint_id: str) -> dict[str, Any]:
        return await asyncio.to_thread(self.load_checkpoint, checkpoint_id)


class _SessionLike(_SessionReaderLike, Protocol):
    @property
    def current_turn(self) -> int | None: ...
    def collection(self, name: str) -> VectorCollection: ...
    def append(self, event: Mapping[str, Any], *, turn: int | None = ...,
               kind: str | None = ..., ts: float | None = ...) -> int: ...
    def append_many(self, events: Iterable[Mapping[str, Any]], *, turn: int | None = ...,
                    kind: str | None = ..., ts: float | None = ...) -> list[int]: ...
    def finish_turn(self, turn: int | None = ..., *, checkpoint: bool = ...,
                    ts: float | None = ...) -> None: ...
    def sync(self) -> None: ...
    def clear(self) -> None: ...
    def update_metadata(self, *, title: str | None = ..., tags: Iterable[str] = ...,
                        metadata: Mapping[str, Any] = ...) -> None: ...
    def save_session_with_updates(
        self, updates: Iterable[Mapping[str, Any]] = ..., *, title: str | None = ...,
        tags: Iterable[str] = ..., metadata: Mapping[str, Any] = ...,
        turn: int | None = ..., kind: str | None = ...) -> list[int]: ...
    def set_state(self, key: str, value: Any, *, turn: int | None = ...) -> int: ...
    def delete_state(self, key: str, *, turn: int | None = ...) -> int: ...
    def merge_state(self, patch: Mapping[str, Any], *, key: str | None = ...,
                    turn: int | None = ...) -> int: ...
    def commit(self, events: Iterable[Mapping[str, Any]] = ..., *,
               state_patch: Mapping[str, Any] | None = ..., expected_head: int | None = ...,
               commit_id: str | None = ..., turn: int | None = ..., kind: str | None = ...,
               ts: float | None = ...,
               expected_revision: Revision | None = ...) -> CommitResult: ...
    def snapshot(self) -> int: ...
    def checkpoint(self, label: str | None = ..., *, kind: str = ...,
                   checkpoint_id: str | None = ...) -> CheckpointInfo: ...
    def delete_checkpoint(self, checkpoint_id: str) -> None: ...
    def gc(self, *, grace: float = ..., dry_run: bool = ..., verify: bool = ...
           ) -> GcReport: ...
    def vacuum(self, *, dry_run: bool = ..., grace: float = ..., torn_grace: float = ...,
               message_grace: float = ...) -> VacuumReport: ...
    def create_collection(self, name: str, dim: int, *, dtype: str = ...,
                          metric: DistanceMetric | str = ...) -> VectorCollection: ...
    def drop_collection(self, name: str) -> None: ...
    def fork(self, new_id: str | None = ..., *, at_seq: int | None = ...,
             at_checkpoint: str | None = ..., title: str | None = ...,
             tags: Iterable[str] = ..., metadata: Mapping[str, Any] = ...,
             durability: Durability | str | None = ...) -> Session: ...
    def close(self) -> None: ...


_Closing = TypeVar("_Closing", bound=_SessionLike)


class AsyncSessionMixin(AsyncSessionReaderMixin):
    """``Session``'s async twins, the reader's included; ``async with`` closes it."""

    async def acurrent_turn(self: _SessionLike) -> int | None:
        """The twin of the ``current_turn`` property (a shared writer's waits for the
        session's mutex and catches up with the log)."""
        return await asyncio.to_thread(lambda: self.current_turn)

    async def acollection(self: _SessionLike, name: str) -> VectorCollection:
        return await asyncio.to_thread(self.collection, name)

    async def aappend(self: _SessionLike, event: Mapping[str, Any], *, turn: int | None = None,
                      kind: str | None = None, ts: float | None = None) -> int:
        return await asyncio.to_thread(self.append, event, turn=turn, kind=kind, ts=ts)

    async def aappend_many(self: _SessionLike, events: Iterable[Mapping[str, Any]], *,
                           turn: int | None = None, kind: str | None = None,
                           ts: float | None = None) -> list[int]:
        events = list(events)  # a generator is drained here, not in the worker thread
        return await asyncio.to_thread(self.append_many, events, turn=turn, kind=kind, ts=ts)

    async def afinish_turn(self: _SessionLike, turn: int | None = None, *,
                           checkpoint: bool = False, ts: float | None = None) -> None:
        await asyncio.to_thread(self.finish_turn, turn, checkpoint=checkpoint, ts=ts)

    async def async_(self: _SessionLike) -> None:
        """The twin of ``sync`` (``async`` is a keyword)."""
        await asyncio.to_thread(self.sync)

    async def aclear(self: _SessionLike) -> None:
        await asyncio.to_thread(self.clear)

    async def aupdate_metadata(self: _SessionLike, *, title: str | None = UNSET,
                               tags: Iterable[str] = UNSET,
                               metadata: Mapping[str, Any] = UNSET) -> None:
        await asyncio.to_thread(self.update_metadata, title=title, tags=tags, metadata=metadata)

    async def asave_session_with_updates(
        self: _SessionLike, updates: Iterable[Mapping[str, Any]] = (), *,
        title: str | None = UNSET, tags: Iterable[str] = UNSET,
        metadata: Mapping[str, Any] = UNSET, turn: int | None = None, kind: str | None = None,
    ) -> list[int]:
        updates = list(updates)
        return await asyncio.to_thread(self.save_session_with_updates, updates, title=title,
                                       tags=tags, metadata=metadata, turn=turn, kind=kind)

    async def aset_state(self: _SessionLike, key: str, value: Any, *,
                         turn: int | None = None) -> int:
        return await asyncio.to_thread(self.set_state, key, value, turn=turn)

    async def adelete_state(self: _SessionLike, key: str, *, turn: int | None = None) -> int:
        return await asyncio.to_thread(self.delete_state, key, turn=turn)

    async def amerge_state(self: _SessionLike, patch: Mapping[str, Any], *,
                           key: str | None = None, turn: int | None = None) -> int:
        return await asyncio.to_thread(self.merge_state, patch, key=key, turn=turn)

    async def acommit(
        self: _SessionLike, events: Iterable[Mapping[str, Any]] = (), *,
        state_patch: Mapping[str, Any] | None = None, expected_head: int | None = None,
        commit_id: str | None = None, turn: int | None = None, kind: str | None = None,
        ts: float | None = None, expected_revision: Revision | None = None,
    ) -> CommitResult:
        events = list(events)
        return await asyncio.to_thread(
            self.commit, events, state_patch=state_patch, expected_head=expected_head,
            commit_id=commit_id, turn=turn, kind=kind, ts=ts,
            expected_revision=expected_revision)

    async def asnapshot(self: _SessionLike) -> int:
        return await asyncio.to_thread(self.snapshot)

    async def acheckpoint(self: _SessionLike, label: str | None = None, *,
                          kind: str = "manual",
                          checkpoint_id: str | None = None) -> CheckpointInfo:
        return await asyncio.to_thread(self.checkpoint, label, kind=kind,
                                       checkpoint_id=checkpoint_id)

    async def adelete_checkpoint(self: _SessionLike, checkpoint_id: str) -> None:
        await asyncio.to_thread(self.delete_checkpoint, checkpoint_id)

    async def agc(self: _SessionLike, *, grace: float = 3600.0, dry_run: bool = False,
                  verify: bool = False) -> GcReport:
        return await asyncio.to_thread(self.gc, grace=grace, dry_run=dry_run, verify=verify)

    async def avacuum(self: _SessionLike, *, dry_run: bool = False, grace: float = 3600.0,
                      torn_grace: float = 604800.0, message_grace: float = 0.0
                      ) -> VacuumReport:
        return await asyncio.to_thread(self.vacuum, dry_run=dry_run, grace=grace,
                                       torn_grace=torn_grace, message_grace=message_grace)

    async def acreate_collection(self: _SessionLike, name: str, dim: int, *,
                                 dtype: str = "float32",
                                 metric: DistanceMetric | str = "cosine") -> VectorCollection:
        return await asyncio.to_thread(self.create_collection, name, dim, dtype=dtype,
                                       metric=metric)

    async def adrop_collection(self: _SessionLike, name: str) -> None:
        await asyncio.to_thread(self.drop_collection, name)

    async def afork(self: _SessionLike, new_id: str | None = None, *,
                    at_seq: int | None = None, at_checkpoint: str | None = None,
                    title: str | None = UNSET, tags: Iterable[str] = UNSET,
                    metadata: Mapping[str, Any] = UNSET,
                    durability: Durability | str | None = None) -> Session:
        return await asyncio.to_thread(self.fork, new_id, at_seq=at_seq,
                                       at_checkpoint=at_checkpoint, title=title, tags=tags,
                                       metadata=metadata, durability=durability)

    async def aclose(self: _SessionLike) -> None:
        await asyncio.to_thread(self.close)

    async def __aenter__(self: _Closing) -> _Closing:
        return self

    async def __aexit__(self: _SessionLike, *exc_info: object) -> None:
        await asyncio.to_thread(self.close)


# --- attachments ----------------------------------------------------------------------------


class _BlobReaderLike(Protocol):
    def exists(self, ref: object) -> bool: ...
    def stat(self, ref: object) -> BlobStat: ...
    def open(self, ref: object) -> _io.RawIOBase: ...
    def get(self, ref: object) -> bytes: ...
    def digests(self) -> Iterator[tuple[str, str, bool]]: ...
    def check(self, verify: bool = ...) -> list[Finding]: ...
    def verify_blob(self, ref: object) -> int: ...


class AsyncBlobReaderMixin:
    """``BlobReader``'s async twins (a session's ``blobs``)."""

    async def aexists(self: _BlobReaderLike, ref: object) -> bool:
        return await asyncio.to_thread(self.exists, ref)

    async def astat(self: _BlobReaderLike, ref: object) -> BlobStat:
        return await asyncio.to_thread(self.stat, ref)

    async def aopen(self: _BlobReaderLike, ref: object) -> _io.RawIOBase:
        """The opened file; its reads block (read it with ``asyncio.to_thread``, or use
        ``aget`` for a small blob)."""
        return await asyncio.to_thread(self.open, ref)

    async def aget(self: _BlobReaderLike, ref: object) -> bytes:
        return await asyncio.to_thread(self.get, ref)

    async def adigests(self: _BlobReaderLike) -> AsyncIterator[tuple[str, str, bool]]:
        """Like ``digests``; the folder is listed in a worker thread."""
        for found in await asyncio.to_thread(lambda: list(self.digests())):
            yield found

    async def acheck(self: _BlobReaderLike, verify: bool = True) -> list[Finding]:
        return await asyncio.to_thread(self.check, verify)

    async def averify_blob(self: _BlobReaderLike, ref: object) -> int:
        return await asyncio.to_thread(self.verify_blob, ref)


class _BlobStoreLike(_BlobReaderLike, Protocol):
    def put(self, source: _Source, media_type: str | None = ..., *,
            compress: bool | None = ...) -> BlobRef: ...
    def gc(self, referenced: Iterable[str], *, grace: float = ..., dry_run: bool = ...,
           verify: bool = ...) -> GcReport: ...


class AsyncBlobStoreMixin(AsyncBlobReaderMixin):
    """``BlobStore``'s async twins (a writer's ``blobs``), the reader's included."""

    async def aput(self: _BlobStoreLike, source: _Source, media_type: str | None = None, *,
                   compress: bool | None = None) -> BlobRef:
        return await asyncio.to_thread(self.put, source, media_type, compress=compress)

    async def agc(self: _BlobStoreLike, referenced: Iterable[str], *, grace: float = 3600.0,
                  dry_run: bool = False, verify: bool = False) -> GcReport:
        referenced = list(referenced)
        return await asyncio.to_thread(self.gc, referenced, grace=grace, dry_run=dry_run,
                                       verify=verify)


# --- queued work and turn inputs ------------------------------------------------------------


class _WorkQueueReaderLike(Protocol):
    def items(self, status: str | None = ...) -> list[QueuedWork]: ...


class AsyncWorkQueueReaderMixin:
    """The async twin of a session's ``queue.items``."""

    async def aitems(self: _WorkQueueReaderLike, status: str | None = None) -> list[QueuedWork]:
        return await asyncio.to_thread(self.items, status)


class _WorkQueueLike(_WorkQueueReaderLike, Protocol):
    def enqueue(self, kind: str, payload: Any = ..., *, priority: int = ...,
                max_attempts: int = ...) -> int: ...
    def enqueue_many(self, items: Iterable[tuple[str, Any]], *, priority: int = ...,
                     max_attempts: int = ...) -> list[int]: ...
    def claim(self, worker: str, lease_ttl: float, *,
              kinds: Iterable[str] | None = ...) -> ClaimedWork | None: ...
    def complete(self, claim: ClaimedWork) -> None: ...
    def complete_and_claim(self, claim: ClaimedWork, lease_ttl: float, *,
                           kinds: Iterable[str] | None = ...) -> ClaimedWork | None: ...
    def fail(self, claim: ClaimedWork, error: str = ..., *,
             retry_after: float | None = ...) -> str: ...
    def release(self, claim: ClaimedWork) -> None: ...
    def purge(self) -> int: ...


class AsyncWorkQueueMixin(AsyncWorkQueueReaderMixin):
    """``WorkQueue``'s async twins (a writer's ``queue``)."""

    async def aenqueue(self: _WorkQueueLike, kind: str, payload: Any = None, *,
                       priority: int = 0, max_attempts: int = 3) -> int:
        return await asyncio.to_thread(self.enqueue, kind, payload, priority=priority,
                                       max_attempts=max_attempts)

    async def aenqueue_many(self: _WorkQueueLike, items: Iterable[tuple[str, Any]], *,
                            priority: int = 0, max_attempts: int = 3) -> list[int]:
        items = list(items)
        return await asyncio.to_thread(self.enqueue_many, items, priority=priority,
                                       max_attempts=max_attempts)

    async def aclaim(self: _WorkQueueLike, worker: str, lease_ttl: float, *,
                     kinds: Iterable[str] | None = None) -> ClaimedWork | None:
        return await asyncio.to_thread(self.claim, worker, lease_ttl, kinds=kinds)

    async def acomplete(self: _WorkQueueLike, claim: ClaimedWork) -> None:
        await asyncio.to_thread(self.complete, claim)

    async def acomplete_and_claim(self: _WorkQueueLike, claim: ClaimedWork, lease_ttl: float,
                                  *, kinds: Iterable[str] | None = None) -> ClaimedWork | None:
        return await asyncio.to_thread(self.complete_and_claim, claim, lease_ttl, kinds=kinds)

    async def afail(self: _WorkQueueLike, claim: ClaimedWork, error: str = "", *,
                    retry_after: float | None = None) -> str:
        return await asyncio.to_thread(self.fail, claim, error, retry_after=retry_after)

    async def arelease(self: _WorkQueueLike, claim: ClaimedWork) -> None:
        await asyncio.to_thread(self.release, claim)

    async def apurge(self: _WorkQueueLike) -> int:
        return await asyncio.to_thread(self.purge)


class _TurnInputsReaderLike(Protocol):
    def items(self, status: str | None = ...) -> list[TurnInput]: ...


class AsyncTurnInputsReaderMixin:
    """The async twin of a session's ``inputs.items``."""

    async def aitems(self: _TurnInputsReaderLike, status: str | None = None) -> list[TurnInput]:
        return await asyncio.to_thread(self.items, status)


class _TurnInputsLike(_TurnInputsReaderLike, Protocol):
    def submit(self, payload: Any) -> int: ...
    def claim(self) -> list[TurnInput]: ...
    def prune(self, retention: float = ...) -> int: ...


class AsyncTurnInputsMixin(AsyncTurnInputsReaderMixin):
    """``TurnInputs``' async twins (a writer's ``inputs``)."""

    async def asubmit(self: _TurnInputsLike, payload: Any) -> int:
        return await asyncio.to_thread(self.submit, payload)

    async def aclaim(self: _TurnInputsLike) -> list[TurnInput]:
        return await asyncio.to_thread(self.claim)

    async def aprune(self: _TurnInputsLike, retention: float = 7 * 24 * 3600.0) -> int:
        return await asyncio.to_thread(self.prune, retention)


# --- vector collections ---------------------------------------------------------------------


class _VectorCollectionReaderLike(Protocol):
    def search(self, query: Any, k: int = ..., *, metric: DistanceMetric | str | None = ...,
               filter: _Filter = ..., min_score: float | None = ...,
               max_distance: float | None = ...) -> list[VectorSearchResult]: ...
    def search_batch(self, queries: Any, k: int = ..., *,
                     metric: DistanceMetric | str | None = ..., filter: _Filter = ...,
                     min_score: float | None = ..., max_distance: float | None = ...
                     ) -> list[list[VectorSearchResult]]: ...
    def get(self, ids: Iterable[str]) -> list[VectorDocument | None]: ...
    def count(self) -> int: ...
    def info(self) -> CollectionInfo: ...
    def close(self) -> None: ...


class AsyncVectorCollectionReaderMixin:
    """A vector collection's async twins for reading: searches and gets."""

    async def asearch(
        self: _VectorCollectionReaderLike, query: Any, k: int = 10, *,
        metric: DistanceMetric | str | None = None, filter: _Filter = None,
        min_score: float | None = None, max_distance: float | None = None,
    ) -> list[VectorSearchResult]:
        return await asyncio.to_thread(self.search, query, k, metric=metric, filter=filter,
                                       min_score=min_score, max_distance=max_distance)

    async def asearch_batch(
        self: _VectorCollectionReaderLike, queries: Any, k: int = 10, *,
        metric: DistanceMetric | str | None = None, filter: _Filter = None,
        min_score: float | None = None, max_distance: float | None = None,
    ) -> list[list[VectorSearchResult]]:
        return await asyncio.to_thread(self.search_batch, queries, k, metric=metric,
                                       filter=filter, min_score=min_score,
                                       max_distance=max_distance)

    async def aget(self: _VectorCollectionReaderLike, ids: Iterable[str]
                   ) -> list[VectorDocument | None]:
        ids = list(ids)
        return await asyncio.to_thread(self.get, ids)

    async def acount(self: _VectorCollectionReaderLike) -> int:
        return await asyncio.to_thread(self.count)

    async def ainfo(self: _VectorCollectionReaderLike) -> CollectionInfo:
        return await asyncio.to_thread(self.info)

    async def aclose(self: _VectorCollectionReaderLike) -> None:
        await asyncio.to_thread(self.close)


class _VectorCollectionLike(_VectorCollectionReaderLike, Protocol):
    def upsert(self, documents: Iterable[VectorDocument | Mapping[str, Any]]) -> int: ...
    def delete(self, ids: Iterable[str]) -> int: ...
    def sync(self) -> None: ...
    def compact(self) -> None: ...
    def seal(self) -> None: ...
    def catch_up(self) -> None: ...


class AsyncVectorCollectionMixin(AsyncVectorCollectionReaderMixin):
    """A writer's vector collection's async twins, the reader's included."""

    async def aupsert(self: _VectorCollectionLike,
                      documents: Iterable[VectorDocument | Mapping[str, Any]]) -> int:
        documents = list(documents)
        return await asyncio.to_thread(self.upsert, documents)

    async def adelete(self: _VectorCollectionLike, ids: Iterable[str]) -> int:
        ids = list(ids)
        return await asyncio.to_thread(self.delete, ids)

    async def async_(self: _VectorCollectionLike) -> None:
        """The twin of ``sync`` (``async`` is a keyword)."""
        await asyncio.to_thread(self.sync)

    async def acompact(self: _VectorCollectionLike) -> None:
        await asyncio.to_thread(self.compact)

    async def aseal(self: _VectorCollectionLike) -> None:
        await asyncio.to_thread(self.seal)

    async def acatch_up(self: _VectorCollectionLike) -> None:
        await asyncio.to_thread(self.catch_up)


if TYPE_CHECKING:
    def _conformance(store: Store, reader: SessionReader, session: Session,
                     blob_reader: BlobReader, blobs: BlobStore, queue_reader: WorkQueueReader,
                     queue: WorkQueue, inputs_reader: TurnInputsReader,
                     inputs: TurnInputs, collection_reader: VectorCollectionReader,
                     collection: VectorCollection) -> None:
        """Never called: mypy checks here that each class has, as its protocol spells
        them, the methods its mixin's twins call."""
        checked: tuple[_StoreLike, _SessionReaderLike, _SessionLike, _BlobReaderLike,
                       _BlobStoreLike, _WorkQueueReaderLike, _WorkQueueLike,
                       _TurnInputsReaderLike, _TurnInputsLike, _VectorCollectionReaderLike,
                       _VectorCollectionLike] = (
            store, reader, session, blob_reader, blobs, queue_reader, queue, inputs_reader,
            inputs, collection_reader, collection)
        del checked


# --- watchers -------------------------------------------------------------------------------


class _WatcherLike(Protocol):
    def get(self, timeout: float | None = ...) -> list[Any]: ...
    def poll(self) -> list[Any]: ...
    def close(self) -> None: ...


_Watching = TypeVar("_Watching", bound=_WatcherLike)


class AsyncWatcherMixin:
    """A watcher's async twins (``SessionWatcher``, ``StoreWatcher``): ``get`` waits for
    hints, ``poll`` reads the log or lists the sessions, ``close`` joins the callback
    thread; ``async with`` closes it. ``async for`` is the watcher's own ``__aiter__``."""

    async def aget(self: _WatcherLike, timeout: float | None = None) -> list[Any]:
        return await asyncio.to_thread(self.get, timeout)

    async def apoll(self: _WatcherLike) -> list[Any]:
        return await asyncio.to_thread(self.poll)

    async def aclose(self: _WatcherLike) -> None:
        await asyncio.to_thread(self.close)

    async def __aenter__(self: _Watching) -> _Watching:
        return self

    async def __aexit__(self: _WatcherLike, *exc_info: object) -> None:
        await asyncio.to_thread(self.close)


if TYPE_CHECKING:
    from .watch import SessionWatcher

    def _watcher_conformance(session_watcher: SessionWatcher,
                             store_watcher: StoreWatcher) -> None:
        """Never called: mypy checks here that both watchers have, as ``_WatcherLike``
        spells them, the methods their twins call."""
        checked: tuple[_WatcherLike, _WatcherLike] = (session_watcher, store_watcher)
        del checked
