"""The store root: a folder of sessions.

Creating, forking, deleting and listing sessions; a session's lineage; finding a store
the way git finds a repository; and ``verify``, the read-only check of everything in it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from . import catalog, chain_bindings, chain_session, clock, identity, layout, manifest, store_setup
from .aio import AsyncStoreMixin
from .aio_maintenance import AsyncStoreMaintenanceMixin
from .aio_stats import AsyncStoreStatsMixin
from .defaults import (
    DEFAULT_GRACE_SECONDS,
    DEFAULT_LEVEL,
    DEFAULT_TARGET_BYTES,
    DEFAULT_TORN_GRACE_SECONDS,
)
from .errors import (
    Finding,
    FsStoreError,
    InvalidSetting,
    SessionExists,
    SessionLocked,
    SessionNotFound,
    StoreNotFound,
)
from .fsio import FileIO
from .lazy import LazyModule
from .listing import ListingMixin, When
from .log_format import DEFAULT_MAX_RECORD_BYTES, DEFAULT_SEGMENT_SIZE, check_seq
from .log_writer import Durability, check_settings, create_log
from .session_metadata import new_manifest
from .session_reader import SessionReader, copy_history
from .snapshot import SnapshotPolicy
from .unset import UNSET
from .workspaces import SessionRole, Workspace, WorkspaceMember, Workspaces

# Imported where used: reading a session (``fsstore cat``) needs none of these modules.
if TYPE_CHECKING:
    from . import lease as lease_module
    from . import lineage as lineage_module
    from .chain import ChainKey
    from .compaction import CompactReport
    from .lease import ClaimOutcome, Lease, LeaseFile, LeaseOwner, LeaseState, SessionMutex
    from .lineage import Lineage
    from .manifest import ChainRecord
    from .repair_log import RepairReport
    from .retention import RetainReport
    from .session import Session
    from .stats import DiskUsage, StoreStats
    from .store_usage import StoreUsage
    from .vacuum import VacuumReport
    from .vectors import DistanceMetric, VectorFilter, VectorSearchResult
    from .watch import Notifier, SessionChange, StoreWatcher
else:
    lease_module = LazyModule("fsstore.lease")
    lineage_module = LazyModule("fsstore.lineage")

_T = TypeVar("_T")


class _SessionsReport(Protocol):
    """A report summed over sessions (compaction's, retention's)."""

    skipped: dict[str, str]
    seconds: float

    def add(self, session_id: str, part: Any) -> None: ...


_ReportT = TypeVar("_ReportT", bound=_SessionsReport)

STORE_ENV = "FSSTORE_STORE"
_KEPT_MUTEXES = 16


def open_store(
    path: str | os.PathLike[str],
    *,
    create: bool = True,
    durability: Durability | str | None = None,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    snapshots: SnapshotPolicy | None = None,
    blob_compression: str = "auto",
    io: FileIO | None = None,
    chain: bool | None = None,
    chain_key: ChainKey | bytes | str | os.PathLike[str] | None = None,
) -> Store:
    """Open the store at ``path``, creating it if it does not exist (or is an empty
    folder) and ``create`` is true.

    ``durability``, ``segment_size``, ``max_record_bytes``, ``snapshots`` (when the
    state is snapshotted) and ``blob_compression`` (``"auto"``: zstd for text-like media
    types; ``"always"``; ``"never"``) are the settings of the sessions opened through
    this store; each ``open_session`` may override durability.

    ``chain``: whether new sessions get a hash chain (docs/FORMAT.md 3.4): None follows
    the store's policy (a store created now gets one: keyed when a key is at hand, else
    SHA-256; a store made before chains has none), True sets the policy when the store
    has none, False creates unchained sessions through this handle (and a store created
    by it gets no policy).
    ``chain_key`` (a ``ChainKey``, its bytes or a key file's path; default: the
    ``FSSTORE_CHAIN_KEY`` or ``FSSTORE_CHAIN_KEY_FILE`` environment variable) is the key
    of keyed chains: without it their sessions cannot be written or read.
    """
    io = io or FileIO()
    check_settings(segment_size, max_record_bytes)
    root = os.path.abspath(os.fspath(path))
    manifest_path = layout.store_manifest_path(root)
    key = chain_session.given_key(chain_key, root)
    if not io.exists(manifest_path):
        if not create:
            interrupted = os.path.isdir(root) and store_setup.unfinished_creation(
                io, root, [n for n in os.listdir(root) if not n.startswith(".")])
            raise StoreNotFound(
                f"no fsstore store at {root} (no {layout.STORE_MANIFEST})" + (
                    "; its creation was interrupted: open_store(create=True) finishes it"
                    if interrupted else ""))
        store_setup.create_store(io, root, store_setup.new_store_policy(chain, key, root))
    policy = store_setup.chain_policy(io, root, chain, key)
    # The root may sit under a symlink (/tmp -> /private/tmp); nothing below it may.
    io.check_folders(layout.sessions_dir(root))
    return Store(root, io=io, durability=Durability.of(durability), segment_size=segment_size,
                 max_record_bytes=max_record_bytes, snapshots=snapshots or SnapshotPolicy(),
                 blob_compression=blob_compression, chain=policy, chain_key=key)


def find_store(start: str | os.PathLike[str] | None = None) -> str:
    """The store a command means: ``$FSSTORE_STORE`` if set, else ``start`` (default: the
    current folder) or its nearest parent holding ``fsstore.json``."""
    if start is None and os.environ.get(STORE_ENV):
        return os.path.abspath(os.environ[STORE_ENV])
    folder = os.path.abspath(os.fspath(start) if start is not None else os.getcwd())
    while True:
        if os.path.isfile(layout.store_manifest_path(folder)):
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            raise StoreNotFound(
                f"no fsstore store in {os.path.abspath(start or os.getcwd())} or any parent; "
                f"pass --store PATH or set {STORE_ENV}")
        folder = parent


class Store(ListingMixin, AsyncStoreMixin, AsyncStoreMaintenanceMixin, AsyncStoreStatsMixin):
    """A store folder. Get one with :func:`open_store`; use it as a context manager (or
    call :meth:`close`) to close the descriptors it keeps between lease calls."""

    def __init__(
        self, path: str, *, io: FileIO, durability: Durability, segment_size: int,
        max_record_bytes: int, snapshots: SnapshotPolicy, blob_compression: str = "auto",
        chain: ChainRecord | None = None, chain_key: ChainKey | None = None,
    ) -> None:
        self.path = path
        self.chain = chain  # the chain new sessions get (None: none); FORMAT.md 3.4
        self.chain_key = chain_key  # the key given (None: the environment's, if any)
        self.io = io
        self.durability = durability
        self.segment_size = segment_size
        self.max_record_bytes = max_record_bytes
        self.snapshots = snapshots
        self.blob_compression = blob_compression
        # Per session: its mutex and lease file, kept open for the next lease call (at
        # most _KEPT_MUTEXES of them), closed by close() or when the Store is collected.
        self._mutexes: dict[str, tuple[SessionMutex, LeaseFile]] = {}
        self._mutex_guard = threading.Lock()
        self._finalizer = weakref.finalize(self, _close_kept, self._mutexes,
                                           self._mutex_guard)

    def __repr__(self) -> str:
        return f"<fsstore.Store {self.path!r}>"

    def close(self) -> None:
        """Close the descriptors the store keeps between lease calls (two per session
        leased recently, for at most 16 sessions). Sessions opened from the store are
        closed on their own. The store stays usable: a later lease call opens what it
        needs again (close the store again afterwards)."""
        _close_kept(self._mutexes, self._mutex_guard)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _session_path(self, session_id: str) -> str:
        return layout.session_dir(self.path, session_id)

    # --- sessions ---

    def create_session(
        self,
        session_id: str | None = None,
        *,
        title: str | None = None,
        tags: Iterable[str] = (),
        metadata: Mapping[str, Any] | None = None,
        durability: Durability | str | None = None,
        spawned_by: str | None = None,
        at_seq: int | None = None,
    ) -> Session:
        """Create a session (with a fresh time-ordered id if none is given) and open it
        for writing. It appears whole or not at all: it is built under a temp name and
        renamed into place.

        ``spawned_by`` names the session whose turn started this one (a sub-agent), and
        ``at_seq`` the parent's seq it starts from (default: the parent's head now). The
        new session records both, with the turn of the parent's record at ``at_seq``,
        in its own manifest; nothing is written to the parent (see :meth:`lineage`).
        Refused before anything is written: a parent that is not there
        (SessionNotFound), an ``at_seq`` without ``spawned_by`` (InvalidSetting), one
        that is not an int >= 0 (InvalidSeq) or is after the parent's head
        (SeqOutOfRange)."""
        session_id = layout.new_session_id() if session_id is None else session_id
        layout.check_session_id(session_id, new=True)
        final = self._session_path(session_id)  # checks the id before anything is touched
        data = new_manifest(session_id, title, tags, metadata)
        chain_session.declare(data, chain_session.new_session_chain(self.chain, self.chain_key,
                                                                    self.path))
        if spawned_by is not None or at_seq is not None:
            data["spawned_by"] = lineage_module.spawn_record(self.read_session, spawned_by, at_seq)
        if self.io.exists(final):
            raise SessionExists(f"session {session_id!r} already exists at {final}")

        uid = identity.parse(data["uid"], final)

        def build(temp: str) -> None:
            manifest.write(self.io, layout.session_manifest_path(temp), data)
            create_log(self.io, layout.log_dir(temp), uid)
            chain_bindings.bind_new_manifest(self.io, temp, data, self.chain_key)

        self._build_in_place(session_id, final, build)
        try:
            return self.open_session(session_id, durability=durability)
        except SessionLocked:
            raise  # another writer opened it first: it is theirs now
        except BaseException:
            # Its reader refuses what was written (a value validation let through):
            # remove it rather than leave a session nobody can open.
            with contextlib.suppress(FsStoreError, OSError):
                self.delete_session(session_id, force=True)
            raise

    def _build_in_place(self, session_id: str, final: str,
                        build: Callable[[str], None]) -> None:
        """Build a session folder whole under a temp name with ``build(temp)``, then
        rename it to ``final``: a crash leaves all of it or none (plus a temp folder)."""
        sessions = layout.sessions_dir(self.path)
        temp = os.path.join(sessions, layout.temp_name(session_id))
        self.io.mkdir(temp)
        try:
            build(temp)
            self.io.fsync_dir(temp)
            try:
                self.io.rename(temp, final)
            except OSError as exc:
                raise SessionExists(f"session {session_id!r} already exists at {final}") from exc
        except BaseException:
            # Whatever refused the session (a bad value, a full disk), it leaves nothing:
            # the caller's error is raised, not one from the clean-up.
            try:
                if self.io.exists(temp):
                    self.io.rmtree(temp)
            except OSError:
                pass  # left as a temp folder: verify notes it, remove_leftovers removes it
            raise
        self.io.fsync_dir(sessions)
        catalog.note(self.io, final)

    def open_session(
        self, session_id: str, *, durability: Durability | str | None = None,
        lock_timeout: float | None = None, lease: Lease | None = None, shared: bool = False,
    ) -> Session:
        """Open a session for writing.

        By default exclusively: the session's writer lock is held until close. Raises
        SessionLocked if another writer holds it and it did not come free within
        ``lock_timeout`` seconds (default 0), or if another owner holds a live lease on
        it.

        With ``lease`` (from :meth:`claim_lease`) or ``shared=True``, the lock is taken
        for each write instead (waiting up to ``lock_timeout``, default 10 s), so other
        processes can write between: queue workers, input submitters, the next lease
        holder. Writes of events, state and collections then need the lease: each is
        checked against the session's current lease token, and a taken-over or expired
        lease raises LeaseLost and writes nothing. Queue and input operations need no
        lease.
        """
        if lock_timeout is None:
            lock_timeout = 10.0 if lease is not None or shared else 0.0
        from .session import Session

        return Session(
            self.io, self._session_path(session_id), session_id,
            durability=self.durability if durability is None else durability,
            segment_size=self.segment_size, max_record_bytes=self.max_record_bytes,
            lock_timeout=lock_timeout, snapshots=self.snapshots, store=self,
            blob_compression=self.blob_compression, lease=lease, shared=shared,
            chain_key=self.chain_key,
        )

    # --- execution leases ---

    def _leased(self, session_id: str, lock_timeout: float,
                action: Callable[[str, LeaseFile], _T]) -> _T:
        """Run ``action(session_path)`` under the session's mutex. The mutex (an open
        descriptor on writer.lock) is kept for the next call, for the few sessions a
        runtime works on."""
        path = self._session_path(session_id)
        self.io.check_folders(path)  # its writer.lock and lease are opened through it
        with self._mutex_guard:
            kept = self._mutexes.pop(session_id, None)
            if kept is None:
                mutex = lease_module.SessionMutex(layout.writer_lock_path(path), session_id)
                kept = (mutex, lease_module.LeaseFile(self.io, path, mutex))
            self._mutexes[session_id] = kept  # most recently used last
            while len(self._mutexes) > _KEPT_MUTEXES:
                mutex, file = self._mutexes.pop(next(iter(self._mutexes)))
                mutex.close(file)
        mutex, file = kept
        try:
            try:
                mutex.acquire(lock_timeout)
            except SessionNotFound:
                raise SessionNotFound(f"no session {session_id!r} in {self.path}") from None
            try:
                if not self.io.exists(layout.session_manifest_path(path)):
                    raise SessionNotFound(f"no session {session_id!r} in {self.path}")
                return action(path, file)
            finally:
                mutex.release()
        finally:
            with self._mutex_guard:
                evicted = self._mutexes.get(session_id) is not kept
            if evicted:
                # Evicted (or the store closed) while this call used it: it may have
                # reopened its files, and nothing else will close them.
                mutex.close(file)

    def claim_lease(self, session_id: str, owner: LeaseOwner | str | None = None, *,
                    ttl: float = 30.0, lock_timeout: float = 5.0) -> ClaimOutcome:
        """Claim the execution lease of a session for ``ttl`` seconds.

        ``owner`` defaults to this process (``LeaseOwner.current``); a str is a label for
        it. Returns a :class:`ClaimOutcome`: ``acquired`` (a free lease, or already this
        owner's), ``taken_over`` (its holder's process is gone, or the lease expired), or
        ``held`` (by whom, until when). The new fencing token is durable before this
        returns, and is greater than every token handed out before.
        """
        owners = lease_module.LeaseOwner
        who = owner if isinstance(owner, owners) else owners.current(owner or "")
        span = lease_module.check_ttl(ttl)
        return self._leased(session_id, lock_timeout,
                            lambda path, file: lease_module.claim(file, session_id, who, span))

    def renew_lease(self, lease: Lease, *, ttl: float | None = None,
                    lock_timeout: float = 5.0) -> Lease:
        """Extend a lease by ``ttl`` (default: its own) from now; returns it renewed.
        Raises LeaseLost if another owner took it over."""
        return self._leased(lease.session_id, lock_timeout,
                            lambda path, file: lease_module.renew(file, lease, ttl))

    def release_lease(self, lease: Lease, *, lock_timeout: float = 5.0) -> bool:
        """Give a lease up; False if it was no longer this lease."""
        return self._leased(lease.session_id, lock_timeout,
                            lambda path, file: lease_module.release(file, lease))

    def lease_info(self, session_id: str) -> LeaseState:
        """What the session's lease file says now (no lock: a claim may follow)."""
        path = self._session_path(session_id)
        if not self.io.exists(layout.session_manifest_path(path)):
            raise SessionNotFound(f"no session {session_id!r} in {self.path}")
        self.io.check_folders(path)  # O_NOFOLLOW on the lease file sees only its own name
        return lease_module.read_lease(self.io, layout.lease_path(path))

    def reset_lease(self, session_id: str, *, lock_timeout: float = 5.0) -> int:
        """Replace a lease file neither of whose slots is valid (``lease_info`` raises
        CorruptionError), or a missing one whose last token writer.lock cannot tell
        (claims raise CorruptionError): the lease becomes free, and the next token is
        above any a counter could have reached. Returns that floor. Refuses otherwise."""
        def action(path: str, file: LeaseFile) -> int:
            if lease_module.needs_reset(self.io, path, file):
                file.close()
                return lease_module.reset(self.io, path, lease_module.LeaseOwner.current("reset"),
                                          file)
            raise InvalidSetting(f"session {session_id!r}: the lease file is readable; "
                                 "nothing to reset")
        return self._leased(session_id, lock_timeout, action)

    def read_session(self, session_id: str) -> SessionReader:
        """Open a session for reading, without a lock, alongside any writer."""
        return SessionReader(self.io, self._session_path(session_id), session_id,
                             self.snapshots, chain_key=self.chain_key)

    def fork_session(
        self, source_id: str, new_id: str | None = None, *, at_seq: int | None = None,
        at_checkpoint: str | None = None, title: str | None = UNSET,
        tags: Iterable[str] = UNSET, metadata: Mapping[str, Any] = UNSET,
        durability: Durability | str | None = None, source: Session | None = None,
    ) -> Session:
        """Create session ``new_id`` whose history is ``source_id``'s up to ``at_seq``
        (default: its head) or up to the seq checkpoint ``at_checkpoint`` froze, with the
        state it had there, and open it for writing. Its seqs go on from there; it
        records its parent (see :meth:`lineage`); title, tags and metadata are the
        parent's unless given.

        The history is not copied: the parent's sealed segments are shared by hard link
        (copied where the filesystem refuses links), so the fork costs about the same for
        a long history as for a short one, and stays whole when the parent grows, is
        cleared or is deleted. Only the segment holding the fork point is copied up to
        it; when the parent has no writer elsewhere and the fork is at its head, that
        segment is sealed first, so nothing is copied. The new session appears whole or
        not at all.

        ``source`` is the parent's open writer, when the caller holds it
        (``Session.fork`` passes it).
        """
        new_id = layout.new_session_id() if new_id is None else new_id
        layout.check_session_id(new_id, new=True)
        final = self._session_path(new_id)  # checks the id before anything is touched
        if at_seq is not None and at_checkpoint is not None:
            raise InvalidSetting("fork at_seq or at_checkpoint, not both")
        if at_checkpoint is not None:
            layout.check_checkpoint_id(at_checkpoint)
        if at_seq is not None:
            check_seq(at_seq, "at_seq")
        if self.io.exists(final):
            raise SessionExists(f"session {new_id!r} already exists at {final}")
        owner = None
        if source is None:
            try:
                source = owner = self.open_session(source_id)
            except SessionLocked:
                pass  # written elsewhere: fork from what is on disk, without a lock
        reader = source if source is not None else self.read_session(source_id)
        # The fork writes under its own uid, and accepts its ancestors' segments, which it
        # shares (a parent from before uids: segments without one).
        ancestors = [identity.NO_UID] if reader.identity is None else reader.identity.lineage()
        uid = identity.Identity.of(identity.mint(), ancestors)

        def build(temp: str) -> None:
            origin, chain = copy_history(reader, temp, at_seq=at_seq,
                                         at_checkpoint=at_checkpoint, uid=uid)
            data = new_manifest(
                new_id,
                reader.title if title is UNSET else title,
                reader.tags if tags is UNSET else tags,
                reader.metadata if metadata is UNSET else metadata,
                uid,
            )
            data["parent"] = {"id": origin.parent, "seq": origin.seq,
                              "checkpoint": origin.checkpoint,
                              "forked": datetime.now(timezone.utc).isoformat()}
            data["metadata_seq"] = origin.seq  # its metadata is not the history's
            chain_session.declare(data, chain)  # a chained parent's: continued
            manifest.write(self.io, layout.session_manifest_path(temp), data)
            chain_bindings.bind_new_manifest(self.io, temp, data, self.chain_key)

        try:
            self._build_in_place(new_id, final, build)
        finally:
            if owner is not None:
                owner.close()
        return self.open_session(new_id, durability=durability)

    def lineage(self, session_id: str) -> Lineage:
        """Where a session sits in the graph of forks and spawned sessions: its
        ancestors (its own edge first), its descendants, and the whole tree under the
        topmost ancestor, each edge a :class:`Relation` with its kind (forked or spawned)
        and the parent's seq it hangs from. Read from the manifests of the answer alone
        (found through the store catalog's children index, FORMAT 24), never a log: the
        time grows with the answer, not the store; an edge to a deleted parent is kept,
        with ``parent_exists`` False. Raises
        SessionNotFound for a session that is not there."""
        folder = self._session_path(session_id)
        path = layout.session_manifest_path(folder)
        self.io.check_folders(folder)  # a symlinked session folder is read by no one
        try:
            manifest.decode_session(manifest.read(self.io, path, manifest.SESSION_FORMAT),
                                    path)
        except FileNotFoundError:
            raise SessionNotFound(f"no session {session_id!r} in {self.path}") from None
        from .lineage_index import indexed_lineage

        return indexed_lineage(self.io, self.path, self._session_info, session_id)

    def has_session(self, session_id: str) -> bool:
        path = self._session_path(session_id)
        return self.io.exists(layout.session_manifest_path(path))

    __contains__ = has_session

    def session_ids(self) -> list[str]:
        """Ids of the sessions in the store, sorted."""
        try:
            names = self.io.listdir(layout.sessions_dir(self.path))
        except FileNotFoundError:
            return []
        ids = []
        for name in names:
            try:
                layout.check_session_id(name)
            except ValueError:
                continue  # scratch names and foreign files are not sessions
            if self.io.exists(layout.session_manifest_path(self._session_path(name))):
                ids.append(name)
        return sorted(ids)

    def search(
        self, collection: str, query: Any, k: int = 10, *,
        metric: DistanceMetric | str | None = None,
        filter: VectorFilter | Mapping[str, Any] | None = None,
        min_score: float | None = None, max_distance: float | None = None,
        sessions: Iterable[str] | None = None, tags: Iterable[str] | None = None,
        workspace: str | None = None, created_after: When = None,
        created_before: When = None, updated_after: When = None,
        updated_before: When = None,
    ) -> list[VectorSearchResult]:
        """Search the vector collection ``collection`` of every session that has one (or
        of ``sessions``), and merge: the ``k`` nearest over all of them, best first, each
        naming its ``session_id``; equal scores by session id, then document id. The
        exact answer of searching each collection and merging. Arguments as
        ``VectorCollection.search`` (the score bounds included); the collections must
        agree on the metric unless ``metric`` is given. ``tags``, ``workspace`` and the
        time bounds keep the sessions ``list_sessions`` would, answered by the store
        catalog before any vector is read. Reads without locks; sessions unchanged
        since the search cache copied them (``search/``, docs/FORMAT.md 25) are scored
        there, the others in their folders, and then copied into it."""
        from .store_search import search

        return search(self, collection, query, False, k, metric, filter, sessions,
                      {"min_score": min_score, "max_distance": max_distance},
                      {"tags": tags, "workspace": workspace, "created_after": created_after,
                       "created_before": created_before, "updated_after": updated_after,
                       "updated_before": updated_before})[0]

    def search_batch(
        self, collection: str, queries: Any, k: int = 10, *,
        metric: DistanceMetric | str | None = None,
        filter: VectorFilter | Mapping[str, Any] | None = None,
        min_score: float | None = None, max_distance: float | None = None,
        sessions: Iterable[str] | None = None, tags: Iterable[str] | None = None,
        workspace: str | None = None, created_after: When = None,
        created_before: When = None, updated_after: When = None,
        updated_before: When = None,
    ) -> list[list[VectorSearchResult]]:
        """``search`` for each row of the 2-D ``queries``: one list per query."""
        from .store_search import search

        return search(self, collection, queries, True, k, metric, filter, sessions,
                      {"min_score": min_score, "max_distance": max_distance},
                      {"tags": tags, "workspace": workspace, "created_after": created_after,
                       "created_before": created_before, "updated_after": updated_after,
                       "updated_before": updated_before})

    def watch(self, *, poll_interval: float = 1.0,
              callback: Callable[[SessionChange], object] | None = None,
              include_existing: bool = False, notifier: Notifier | None = None
              ) -> StoreWatcher:
        """Follow the store's sessions: ``SessionChange`` notifications of sessions
        created, changed (with their new head), cleared and deleted, from any process.
        Used like ``SessionReader.watch``; with ``include_existing`` the sessions already
        there are announced as created first."""
        from .watch import StoreWatcher

        watcher = StoreWatcher(self, poll_interval=poll_interval, notifier=notifier,
                               include_existing=include_existing)
        if callback is not None:
            watcher.start(callback)
        return watcher

    def delete_session(self, session_id: str, *, lock_timeout: float = 0.0,
                       force: bool = False) -> None:
        """Delete a session's whole folder. Waits up to ``lock_timeout`` for its writer to
        close; raises SessionLocked otherwise. Raises SessionLocked too while an owner
        holds a live lease on it (one not expired, whose process is not known to be
        gone), as ``open_session`` does, unless ``force`` is true; release the lease
        first. The folder is first renamed out of the way, so a crash part way through
        never leaves half a session under its id."""
        path = self._session_path(session_id)
        self.io.check_folders(path)
        from .writer_access import acquire_writer_lock

        lock = acquire_writer_lock(path, session_id, lock_timeout)
        sessions = layout.sessions_dir(self.path)
        trash = os.path.join(sessions, layout.trash_name(session_id))
        try:
            if not force:
                # Under the writer lock, which every claim holds: no claim can land
                # between this check and the rename.
                _refuse_if_leased(self.io, path, session_id)
            self.io.rename(path, trash)
            self.io.fsync_dir(sessions)
        finally:
            lock.release()
        catalog.note(self.io, path)
        self.io.rmtree(trash)

    def remove_leftovers(self) -> list[str]:
        """Remove what interrupted deletes left (``sessions/.trash-*``) and the temp
        files of interrupted workspace writes (``workspaces/.tmp-*``); return the paths.
        Safe at any time: a trash folder is no longer any session, and workspace temp
        files are removed under the lock their writers hold until they rename."""
        sessions = layout.sessions_dir(self.path)
        removed = self._workspaces().remove_leftovers()
        for name in self.io.listdir(sessions):
            if name.startswith(layout.TRASH_PREFIX):
                path = os.path.join(sessions, name)
                try:
                    self.io.rmtree(path)
                except FileNotFoundError:
                    continue  # a concurrent delete is finishing it
                removed.append(path)
        return removed

    def vacuum(self, session_ids: Iterable[str] | None = None, *, dry_run: bool = False,
               grace: float = DEFAULT_GRACE_SECONDS,
               torn_grace: float = DEFAULT_TORN_GRACE_SECONDS, lock_timeout: float = 0.0,
               on_session: Callable[[str], object] | None = None,
               message_grace: float = 0.0) -> VacuumReport:
        """Vacuum every session (or those named: SessionNotFound, before anything is
        removed, for one that is not there), then the store's leftovers; return the
        store's report, with each session's part (see ``fsstore.vacuum``). Each session
        is opened as its writer, waiting up to ``lock_timeout`` for its lock: one another
        writer holds, or another owner leases, is skipped and named in ``skipped`` (its
        writer may vacuum it with ``Session.vacuum``). ``on_session(id)`` is called after
        each session. Messages deleted at least ``message_grace`` s ago lose their
        content (FORMAT 17.2). With ``dry_run`` the same report, and nothing removed."""
        from .vacuum import vacuum_store

        return vacuum_store(self, session_ids, dry_run=dry_run, grace=grace,
                            torn_grace=torn_grace, lock_timeout=lock_timeout,
                            on_session=on_session, message_grace=message_grace)

    # --- workspaces (fsstore/workspaces.py) ---

    def _workspaces(self) -> Workspaces:
        return Workspaces(self.io, self.path, self.has_session, self.session_ids)

    def create_workspace(self, workspace_id: str | None = None, *, name: str | None = None,
                         description: str = "", metadata: Mapping[str, Any] | None = None
                         ) -> Workspace:
        """Create an empty workspace (with a fresh time-ordered id if none is given;
        ``name`` defaults to the id). Raises WorkspaceExists if the id is taken,
        InvalidWorkspaceId or InvalidWorkspace (naming the field) for a refused argument;
        nothing is written then."""
        return self._workspaces().create(workspace_id, name, description, metadata)

    def workspace(self, workspace_id: str) -> Workspace:
        """A workspace: its name, description, metadata, times and members (the sessions
        that exist, sorted by id). Raises WorkspaceNotFound, or CorruptionError naming a
        damaged file."""
        return self._workspaces().get(workspace_id)

    def update_workspace(self, workspace_id: str, *, name: str = UNSET,
                         description: str = UNSET,
                         metadata: Mapping[str, Any] = UNSET) -> Workspace:
        """Replace a workspace's name, description or metadata (those given; metadata
        whole, not merged) and return it."""
        return self._workspaces().update(workspace_id, name, description, metadata)

    def list_workspaces(self) -> list[Workspace]:
        """Every workspace of the store, sorted by id (members as :meth:`workspace`).
        A damaged workspace file raises CorruptionError naming it."""
        return self._workspaces().every()

    def delete_workspace(self, workspace_id: str) -> None:
        """Delete a workspace (its sessions are untouched). Raises WorkspaceNotFound."""
        self._workspaces().delete(workspace_id)

    def add_to_workspace(self, workspace_id: str, session_id: str,
                         role: SessionRole | str = SessionRole.RELATED) -> Workspace:
        """Add a session to a workspace with a role (a :class:`SessionRole` or a custom
        role str). Adding it again with the same role changes nothing; with another role
        raises WorkspaceMemberExists. Raises SessionNotFound for a session that does not
        exist, WorkspaceNotFound, InvalidWorkspace (field ``role``)."""
        return self._workspaces().add(workspace_id, session_id, role)

    def set_workspace_role(self, workspace_id: str, session_id: str,
                           role: SessionRole | str) -> Workspace:
        """Change a member's role. Raises WorkspaceMemberNotFound if it is no member."""
        return self._workspaces().set_role(workspace_id, session_id, role)

    def remove_from_workspace(self, workspace_id: str, session_id: str) -> Workspace:
        """Remove a member (one whose session was deleted too). Raises
        WorkspaceMemberNotFound if it is no member."""
        return self._workspaces().remove(workspace_id, session_id)

    def workspace_sessions(self, workspace_id: str, role: SessionRole | str | None = None
                           ) -> list[WorkspaceMember]:
        """The members of a workspace that exist (of ``role`` only, if given)."""
        return self._workspaces().sessions(workspace_id, role)

    def session_workspaces(self, session_id: str) -> dict[str, str]:
        """The workspaces a session is in, by id, each with its role there. Raises
        SessionNotFound for a session that does not exist."""
        return self._workspaces().of_session(session_id)

    # --- usage ---

    def usage(self, *, by: str | None = None, sessions: Iterable[str] | None = None
              ) -> StoreUsage:
        """Tokens and cost of the store's messages: each session's ``usage()`` summed,
        all under ``""``, or keyed by ``by="model"``, ``"session"`` or ``"day"`` (UTC).
        ``sessions`` limits it to those ids (SessionNotFound for one that is not
        there). Each message counts once: a fork whose parent is summed too counts only
        what came after its fork point. Costs a state load per session (the folds are
        kept in snapshots), and one more per fork. A session that cannot be read is
        left out and named, with why, in the result's ``skipped``: one damaged session
        hides no other."""
        from .store_usage import store_usage

        return store_usage(self, by, sessions)

    # --- maintenance ---

    def compact(self, session_ids: Iterable[str] | None = None, *, dry_run: bool = False,
                target_bytes: int = DEFAULT_TARGET_BYTES, level: int = DEFAULT_LEVEL,
                lock_timeout: float = 0.0,
                on_session: Callable[[str], object] | None = None) -> CompactReport:
        """Compact every session (or those given): ``SessionReader.compact`` for each,
        summed, with each session's report in ``parts``. A session that cannot be
        compacted (damage, another compaction running) is left as it is and named in
        ``skipped`` with why; one such session stops no other. ``on_session`` is called
        with each session id once it is done (a progress bar's step)."""
        from .compaction import CompactReport

        return self._each_session(
            session_ids, CompactReport(dry_run=dry_run),
            lambda session_id: self.read_session(session_id).compact(
                dry_run=dry_run, target_bytes=target_bytes, level=level,
                lock_timeout=lock_timeout),
            on_session)

    def retain(self, session_id: str, *, keep_turns: int | None = None,
               keep_since: float | None = None, keep: str = "all", dry_run: bool = False,
               lock_timeout: float = 0.0) -> RetainReport:
        """``Session.retain`` on session ``session_id``, opened for it (SessionLocked
        when its writer lock does not come free within ``lock_timeout`` seconds)."""
        with self.open_session(session_id, lock_timeout=lock_timeout) as session:
            return session.retain(keep_turns=keep_turns, keep_since=keep_since, keep=keep,
                                  dry_run=dry_run)

    def apply_retention(self, session_ids: Iterable[str] | None = None, *,
                        dry_run: bool = False, lock_timeout: float = 0.0) -> RetainReport:
        """Apply each session's retention policy (``Session.set_retention``) to every
        session that has one (or to those given), summed, with each session's report in
        ``parts``. A session that cannot be retained now (its writer is open elsewhere,
        damage) is left as it is and named in ``skipped`` with why."""
        def retain(session_id: str) -> RetainReport | None:
            policy = self.read_session(session_id).retention
            if policy is None:
                return None
            with self.open_session(session_id, lock_timeout=lock_timeout) as session:
                return session.retain(policy=policy, dry_run=dry_run)

        from .retention import RetainReport

        return self._each_session(session_ids, RetainReport(dry_run=dry_run), retain)

    def _each_session(self, session_ids: Iterable[str] | None, report: _ReportT,
                      work: Callable[[str], Any],
                      on_session: Callable[[str], object] | None = None) -> _ReportT:
        """``report`` with ``work(session_id)`` added for every session (or those given;
        a None answer adds nothing), and the seconds it took. A session deleted meanwhile
        is passed over unless it was named; one whose work raises another FsStoreError is
        left as it is and named in ``report.skipped`` with why."""
        started = time.monotonic()
        for session_id in (self.session_ids() if session_ids is None else session_ids):
            try:
                part = work(session_id)
            except SessionNotFound:
                if session_ids is not None:
                    raise
                continue  # deleted meanwhile
            except FsStoreError as exc:
                report.skipped[session_id] = str(exc)
                continue
            finally:
                if on_session is not None:
                    on_session(session_id)
            if part is not None:
                report.add(session_id, part)
        report.seconds = round(time.monotonic() - started, 6)
        return report

    def repair(self, session_id: str, *, dry_run: bool = False, lock_timeout: float = 0.0,
               on_segment: Callable[[int], object] | None = None) -> RepairReport:
        """Rewrite a damaged session so that it verifies (docs/FORMAT.md, 7.6): every
        damaged file is first copied into ``SESSION/.repair-STAMP/``, every record that
        still verifies is kept, and each lost seq becomes an ``fsstore.lost`` record, so
        seqs are never reused. Explicit, never automatic; takes the writer lock
        (SessionLocked while a writer has it open, after ``lock_timeout``). With
        ``dry_run`` nothing changes: the report says what would be saved and lost.
        ``on_segment`` is called with each segment's name (its first seq) once it is read
        (a progress bar's step)."""
        from .repair_log import repair_session  # salvage and repair: only when asked

        return repair_session(self, session_id, dry_run=dry_run, lock_timeout=lock_timeout,
                              on_segment=on_segment)

    # --- counts (fsstore/stats.py) ---

    def stats(self, *, on_session: Callable[[str], object] | None = None,
              use_cache: bool = True) -> StoreStats:
        """Counts and sizes of every session, summed, with each session's own
        (``per_session``, see ``SessionReader.session_stats``) and the sessions that
        could not be read (``damaged``, each with its path and why: one damaged session
        hides no other, and this never raises for one). ``to_dict()`` gives JSON.

        Never reads a history: each session costs a listing of its folders, a header
        read per segment, the end of its log, its state at the head (the newest
        snapshot and the log after it) and its lease file: a few hundred microseconds
        for a short session, whatever the length of its history (``tools/bench.py
        --stats-only``). Records by kind are counted per session only
        (``session_stats(events_by_kind=True)``). ``on_session`` is called with each
        session id as it is counted (a progress bar's step).

        ``use_cache``: a session unchanged since the last count is answered from the
        store's stats cache (``.stats-cache``, fsstore/stats_cache.py): the same counts,
        for a walk of its folders' stamps; False counts every session afresh."""
        if not use_cache:
            from .stats import store_stats

            return store_stats(self.io, self.path, self.session_ids(), on_session,
                               chain_key=self.chain_key)
        from .stats_cache import cached_store_stats

        return cached_store_stats(self.io, self.path, self.session_ids(), on_session,
                                  chain_key=self.chain_key)[0]

    def disk_usage(self) -> DiskUsage:
        """The bytes each session takes, by kind of file (log, snapshots, checkpoints,
        blobs, vectors, index, other), largest session first, and the store's totals:
        one listing of each folder, nothing read. A file shared by hard link (a fork's
        segments and attachments) counts once. A session whose folders cannot be listed
        is named in ``damaged``."""
        from .stats import store_disk_usage

        return store_disk_usage(self.io, self.path, self.session_ids())

    def key_count(self) -> int:
        """The keys in the states of all sessions, summed (``SessionReader.key_count``
        of each): what post-cortex's ``get_key_count`` answers. A session that cannot
        be read is left out (``stats().damaged`` names it). Costs a state load per
        session."""
        total = 0
        for session_id in self.session_ids():
            try:
                total += self.read_session(session_id).key_count()
            except (FsStoreError, OSError):
                continue  # deleted meanwhile, or damaged: stats() names it
        return total

    # --- checking ---

    def verify(self, session_ids: Iterable[str] | None = None, *,
               on_session: Callable[[str], object] | None = None) -> list[Finding]:
        """Read every file of the store (or of the given sessions) and report each
        problem with its file and offset. Changes nothing, raises only ImportError (a
        missing module): an unreadable session is a problem, and the check goes on.
        ``on_session`` is called with each session id once it is checked (a progress
        bar's step)."""
        from .check import check_store

        return check_store(self, session_ids, on_session)


def _refuse_if_leased(io: FileIO, path: str, session_id: str) -> None:
    current = lease_module.read_lease(io, layout.lease_path(path))
    if (current.held and current.owner is not None and clock.now() < current.expires_at
            and current.owner.alive() is not False):
        raise SessionLocked(
            f"session {session_id!r} is leased to {current.owner.label or current.owner.pid}"
            f" on {current.owner.host} until {current.expires_at:.3f} (token "
            f"{current.token}); release the lease first, or pass force=True to delete it "
            "anyway")


def _close_kept(kept: dict[str, tuple[SessionMutex, LeaseFile]],
                guard: threading.Lock) -> None:
    """Close a Store's kept mutexes and lease files. No reference to the Store: it also
    runs when the Store is garbage-collected."""
    with guard:
        entries = list(kept.values())
        kept.clear()
    for mutex, file in entries:
        mutex.close(file)

