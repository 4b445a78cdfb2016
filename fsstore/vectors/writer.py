"""Writing a vector collection: :class:`VectorCollection` adds upserts, deletes, seals
and merges to the reader (docs/FORMAT.md, sections 15.3 and 15.4).

Writes go to the write-ahead log first and are searched from memory; every
``SEAL_ROWS`` documents they are sealed into a new shard, and shards of a size tier are
merged ``TIER_FANOUT`` at a time. Every shard file is written whole under a temp name and
renamed in; ``collection.json`` names the live files, so a crash leaves the last state
it named, plus the log's records after it. In a shared session (several writers, one at a
time under the session's mutex) each call first catches up with what the others wrote
(:meth:`VectorCollection.catch_up`). The states it replaced stay pinned, and the
files no state names stay on disk, for ``COPY_GRACE_SECONDS``: a copy of the folder taken
meanwhile finds a whole state (section 15.8). The three sizes and the period are read
from :mod:`fsstore.vectors.tuning` at call time.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import msgspec
import numpy as np

from .. import layout, manifest
from ..aio import AsyncVectorCollectionMixin
from ..errors import WriteFailed
from ..fsio import FileIO
from ..log_writer import Durability, LogWriter
from . import tuning
from .collection_chain import CollectionChain
from .collection_file import (
    CollectionManifest,
    encode_manifest,
    pin_states,
    retire,
)
from .filters import VectorFilter
from .reader import VectorCollectionReader
from .rows import Shard, UnsealedRows
from .shard_files import ShardEntry, encode_npy, write_shard
from .types import CollectionInfo, DistanceMetric, VectorDocument, VectorSearchResult
from .validate import Row, as_list, check_id, validate_document


class VectorCollection(VectorCollectionReader, AsyncVectorCollectionMixin):
    """One vector collection of a session, open for writing (from ``Session.collection``
    or ``create_collection``): everything the reader does, and upserts, deletes, seals
    and compactions. Searches see every write that returned.

    With ``shared`` (a shared session's mutex, without the fence) the collection has
    other writers, in this process or others, each writing under that mutex: every call,
    read or write, takes the mutex and first catches up with what they wrote
    (:meth:`catch_up`), so no write of one is lost to another's view of the collection.

    Thread-safe: calls are serialised.
    """

    _wal: LogWriter

    def __init__(self, io: FileIO, path: str, *, durability: Durability | None = None,
                 guard: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
                 shared: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
                 chain: CollectionChain | None = None) -> None:
        # Each write runs inside guard(): a shared session's mutex and lease fence.
        self._guard = guard or contextlib.nullcontext
        # Each read of a shared collection runs inside shared(): the mutex alone.
        self._shared = shared
        self._durability = durability or Durability()
        self._failed: BaseException | None = None
        self._dirty: set[str] = set()  # shards with deletes not yet in a deleted file
        # Shared: collection.json as this writer last read or wrote it, held open so
        # that its inode stays this file's (a replacement, or a drop and re-create, of
        # the collection then always shows as another inode at the path).
        self._seen_fd: int | None = None
        self._stale = False  # a reopen failed: the view in memory is not the disk's
        super().__init__(io, path, chain)
        if shared is not None:
            try:
                self._remember_manifest()
            except BaseException:
                self._wal.close(sync=False)
                raise

    def _open(self, wal_path: str) -> None:
        self._read_manifest()
        self._remove_leftovers()
        self._wal = LogWriter(self.io, wal_path, self._durability, chain=None if
                              self._chain is None else self._chain.wal_rules(self._raw_manifest))
        try:
            self._open_state(self._wal.log_start, self._wal.head)
            self._check_bound(self._wal.reader, self._wal.log_start)
            self._replay(self._wal.reader)
        except BaseException:
            self._wal.close()
            raise

    def _remove_leftovers(self) -> None:
        """Unlink files no state of the manifest names: a seal or merge a crash
        interrupted, files a copy caught after the manifest it holds. Only a writer does
        this."""
        keep = self._manifest.named_files() | self._manifest.retired_names()
        removed = False
        for name in self.io.listdir(self.path):
            if name not in keep and (layout.is_shard_file(name) or
                                     name.startswith(layout.TEMP_PREFIX)):
                self.io.unlink(os.path.join(self.path, name))
                removed = True
        if removed:
            self.io.fsync_dir(self.path)

    # --- other writers (a shared session) ---

    def catch_up(self) -> None:
        """Take in what other writers of a shared session did to the collection since
        this object last looked (every call does this first; this is for a caller that
        wants to know now). Raises CollectionNotFound if another writer dropped it; a
        collection dropped and created again is read afresh. Nothing for a collection of
        an exclusive session, which has no other writer."""
        with self._fresh():
            pass

    @contextlib.contextmanager
    def _fresh(self) -> Iterator[None]:
        """A read: for a shared collection, under the mutex and caught up."""
        if self._shared is None:
            yield
            return
        with self._shared(), self._lock:
            self._check_open()
            self._catch_up()
            yield

    def _remember_manifest(self) -> None:
        fd = self.io.open(self.manifest_path, os.O_RDONLY)
        if self._seen_fd is not None:
            self.io.close(self._seen_fd)
        self._seen_fd = fd

    def _manifest_replaced(self) -> bool:
        """Whether collection.json is no longer the file this writer last read or wrote
        (a seal, merge or compaction of another writer, or a drop)."""
        assert self._seen_fd is not None
        try:
            now = os.stat(self.manifest_path)
        except FileNotFoundError:
            return True
        seen = os.fstat(self._seen_fd)
        return (now.st_dev, now.st_ino) != (seen.st_dev, seen.st_ino)

    def _catch_up(self) -> None:
        """Under the shared mutex: fold in what other writers did since this one last
        held it. Without it, this writer's next append would reuse the seqs of theirs in
        the log, its seals would leave their documents out, and searches would miss them.
        Records appended to the log (the common case) are replayed from where this view
        ended; anything else (a new collection.json, the log moved or cleared, the
        collection dropped or re-created) reopens the collection from the disk."""
        if self._shared is None:
            return
        if self._stale or self._manifest_replaced():
            self._reopen()
            return
        wal = self._wal
        head, start = wal.head, wal.log_start
        if wal.refresh() is None:
            return
        if wal.log_start != start or wal.head < head:
            self._reopen()
            return
        self._replay(wal.reader, after_seq=head)

    def _reopen(self) -> None:
        """Read the collection afresh from the disk (under the shared mutex). Every
        write of this object is already on disk: a shared session hands each to the OS
        before it lets the mutex go. Raises CollectionNotFound if it was dropped; until
        a reopen succeeds, every call tries again (and fails) rather than act on a
        stale view."""
        self._stale = True
        self._wal.close(sync=False)
        self._dirty = set()
        self._open(os.path.join(self.path, layout.WAL_DIR))
        try:
            self._remember_manifest()
        except BaseException:
            self._wal.close(sync=False)
            raise
        self._stale = False

    def get(self, ids: Iterable[str]) -> list[VectorDocument | None]:
        with self._fresh():
            return super().get(ids)

    def count(self) -> int:
        with self._fresh():
            return super().count()

    def info(self) -> CollectionInfo:
        with self._fresh():
            return super().info()

    def _search(self, queries: np.ndarray, k: int, metric: DistanceMetric | str | None,
                filter: VectorFilter | Mapping[str, Any] | None,
                min_score: float | None, max_distance: float | None,
                ) -> list[list[VectorSearchResult]]:
        with self._fresh():
            return super()._search(queries, k, metric, filter, min_score, max_distance)

    # --- writing ---

    def _check_writable(self) -> None:
        """Every write starts here, inside ``guard()`` and the lock: the collection must
        be open and unfailed, and a shared one is caught up with the other writers."""
        self._check_open()
        if self._failed is not None:
            raise WriteFailed(f"{self.path}: an earlier write failed ({self._failed}); "
                              "reopen the session")
        self._catch_up()

    def upsert(self, documents: Iterable[VectorDocument | Mapping[str, Any]]) -> int:
        """Add documents, replacing any with the same id (the last of a repeated id wins).
        All are stored or none: on a bad document nothing is written. Returns how many
        were stored. Durable as the session's durability mode says."""
        rows: dict[str, Row] = {}
        with self._guard(), self._lock:
            self._check_writable()
            for doc in as_list(documents, "documents"):
                row = validate_document(doc, self.dim, self._dtype)
                rows.pop(row.id, None)
                rows[row.id] = row
            if not rows:
                return 0
            batch = list(rows.values())
            size = sum(r.vector.nbytes + len(r.content) + len(r.metadata) + len(r.id)
                       for r in batch)
            if len(batch) >= tuning.SEAL_ROWS or size >= tuning.SEAL_BYTES:
                self._guarded(self._upsert_as_shard, batch)
            else:
                wal = self._wal
                wal.append([("upsert", {"id": r.id, "v": r.vector.tobytes(), "c": r.content,
                                        "m": r.metadata, "s": r.seq, "t": r.turn})
                            for r in batch], 0, time.time())
                for row in batch:
                    self._apply_upsert(row)
                unsealed = self._unsealed
                unsealed.log_bytes += size
                if (unsealed.size >= tuning.SEAL_ROWS
                        or unsealed.log_bytes >= tuning.SEAL_BYTES):
                    self._guarded(self._seal_and_merge)
            return len(batch)

    def delete(self, ids: Iterable[str]) -> int:
        """Delete documents by id; ids not present are ignored. Returns how many were
        deleted. Rows in shards become tombstones until a merge drops them."""
        with self._guard(), self._lock:
            self._check_writable()
            wanted = list(dict.fromkeys(check_id(i) for i in as_list(ids, "ids")))
            present = [i for i in wanted if self._locate(i) is not None]
            if not present:
                return 0
            wal = self._wal
            wal.append([("delete", {"ids": present})], 0, time.time())
            for doc_id in present:
                self._apply_delete(doc_id)
            if self._unsealed.size >= tuning.SEAL_ROWS:
                self._guarded(self._seal_and_merge)
            return len(present)

    def _apply_delete(self, doc_id: str) -> Shard | None:
        shard = super()._apply_delete(doc_id)
        if shard is not None:
            self._dirty.add(shard.name)
        return shard

    def sync(self) -> None:
        """Make every upsert and delete so far durable, whatever the durability mode."""
        with self._guard(), self._lock:
            self._check_writable()
            self._wal.sync()

    def seal(self) -> None:
        """Seal the documents in the write-ahead log into a shard now (it also happens
        every ``SEAL_ROWS`` documents or ``SEAL_BYTES`` of log) and merge shards as the
        size tiers call for. Nothing to seal is not an error. Searches and gets see the
        same documents before and after; durability is as ``sync`` makes it."""
        with self._guard(), self._lock:
            self._check_writable()
            self._guarded(self._seal_and_merge)

    def compact(self) -> None:
        """Seal, then merge every shard into one without its deleted rows."""
        with self._guard(), self._lock:
            self._check_writable()
            self._guarded(self._seal)
            if len(self._shards) > 1 or any(s.dead_count for s in self._shards):
                self._guarded(self._merge, list(self._shards))

    def _guarded(self, operation: Any, *args: Any) -> None:
        try:
            operation(*args)
        except OSError as exc:
            # Memory may now be ahead of the disk: refuse further writes until reopened.
            self._failed = exc
            raise WriteFailed(f"{self.path}: {exc}; reopen the session (the collection "
                              "keeps what was written before)") from exc

    def _shard_name(self) -> str:
        name = layout.shard_name(self._next_shard)
        self._next_shard += 1
        return name

    def _commit(self, shards: list[ShardEntry], bulk: bool = False) -> None:
        """Replace collection.json: the one step that makes a seal or merge visible.

        Then start a new log segment (so that a replay after this manifest's ``wal_seq``
        reads one seal's worth of log), and remove the files no state names any more.
        The state this manifest replaces stays pinned (its files, and the log after its
        ``wal_seq``) for a grace period when the newest pin is that old: a copy of the
        folder taken meanwhile may hold an older ``collection.json`` or miss the new
        files, and must still find a whole state (section 15.8)."""
        wal = self._wal
        before = self._manifest
        if self._state.generation != before.generation:
            # Opened on an earlier state (a copy lacking the current one's files): that
            # is the state this manifest replaces.
            before = msgspec.structs.replace(
                before, shards=self._state.shards, wal_seq=self._state.wal_seq,
                bulk=self._state.bulk,
                pinned=[p for p in before.pinned if p.generation < self._state.generation])
        now = time.time()
        pins = pin_states(before, now, tuning.COPY_GRACE_SECONDS)
        named = {name for state in [*pins] for entry in state.shards
                 for name in entry.files()}
        named |= {name for entry in shards for name in entry.files()}
        retired, expired = retire(before, named, now, tuning.COPY_GRACE_SECONDS)
        # The log may start after the oldest state's wal_seq, at a segment that begins
        # there (a seal starts one; older stores' logs may lack it: then earlier). The
        # start moves at most once a grace period: the segments before the old start go
        # when it moves again, and a copy holding a newest segment from before the first
        # move may still read them.
        oldest = min([wal.head, *(state.wal_seq for state in pins)]) + 1
        firsts = [first for first in wal.reader.list_segments() if first <= oldest]
        start = max(firsts, default=wal.log_start)
        moved = before.log_moved
        if start <= wal.log_start or 0 <= now - moved < tuning.COPY_GRACE_SECONDS:
            start = wal.log_start
        else:
            moved = now
        while True:
            data = encode_manifest(
                self._raw_manifest, shards=shards, generation=self._generation + 1,
                wal_seq=wal.head, next_shard=self._next_shard, version=manifest.VERSION,
                pinned=pins, bulk=bulk, retired=retired, log_moved=moved)
            if self._chain is not None:
                link = wal.head_link
                assert link is not None
                data = self._chain.seal(data, self.path, self.io, self._raw_manifest, link)
            if len(manifest.encode(data)) <= manifest.MAX_MANIFEST_BYTES // 2 or not (
                    retired or len(pins) > 1):
                break
            # Heavy churn: keep the manifest well within what readers take, at the cost
            # of the copy guarantee (section 15.8): the oldest retired files go now,
            # then the oldest pins.
            if retired:
                cut = max(1, len(retired) // 2)
                expired += [name for name, _since in retired[:cut]]
                retired = retired[cut:]
            else:
                dropped, pins = pins[-1], pins[:-1]
                still = {name for state in pins for entry in state.shards
                         for name in entry.files()}
                still |= {name for entry in shards for name in entry.files()}
                expired += [name for entry in dropped.shards for name in entry.files()
                            if name not in still]
        manifest.write(self.io, self.manifest_path, data)
        if self._shared is not None:
            self._remember_manifest()  # this writer's own commit is no news to it
        self._manifest = msgspec.convert(data, CollectionManifest)
        self._raw_manifest = data
        self._generation, self._wal_seq = self._generation + 1, wal.head
        self._state = self._manifest.states()[0]
        wal.roll_over(start if start > wal.log_start else None)
        self._unlink(expired)

    def _deleted_entries(self) -> dict[str, ShardEntry]:
        """Write a new deleted-rows file for each shard with new deletes."""
        updated = {}
        # In shard order: a copy's reader tells files made later by their names.
        for shard in sorted(self._shards, key=lambda shard: shard.name):
            if shard.name in self._dirty and shard.dead is not None:
                name = layout.deleted_name(shard.name, self._generation + 1)
                rows = np.flatnonzero(shard.dead).astype("<u4")
                self.io.atomic_write(os.path.join(self.path, name), encode_npy(rows))
                updated[shard.name] = msgspec.structs.replace(
                    shard.entry, deleted=name, deleted_rows=len(rows))
        return updated

    def _seal(self) -> None:
        unsealed, wal = self._unsealed, self._wal
        if wal.head == self._wal_seq:
            return
        # The log must hold what the manifest says it covers, or a crash could take back
        # records below wal_seq and later ones would reuse their seqs unseen.
        wal.sync()
        new_shard = None
        if unsealed.live:
            rows = np.array(sorted(unsealed.index.values()), dtype=np.int64)
            new_shard = write_shard(
                self.io, self.path, self._shard_name(), unsealed.vectors[rows],
                [unsealed.ids[r] for r in rows], unsealed.seq[rows], unsealed.turn[rows],
                [unsealed.contents[r] for r in rows], [unsealed.metas[r] for r in rows])
        self._commit_shards(new_shard)
        self._unsealed = UnsealedRows(self.dim, self._dtype)

    def _commit_shards(self, new_shard: ShardEntry | None, bulk: bool = False) -> None:
        """Write a deleted-rows file for each shard with new deletes, and name them (and
        ``new_shard``, a shard just written) in one manifest."""
        updated = self._deleted_entries()
        entries = [updated.get(s.name, s.entry) for s in self._shards]
        self._commit(entries if new_shard is None else [*entries, new_shard], bulk)
        for shard in self._shards:
            if shard.name in updated:
                shard.entry = updated[shard.name]
        if new_shard is not None:
            self._shards.append(Shard(self.io, self.path, new_shard, self.dim,
                                       self._dtype))
        self._dirty.clear()

    def _unlink(self, names: Iterable[str]) -> None:
        removed = False
        for name in sorted(names):
            try:
                self.io.unlink(os.path.join(self.path, name))
                removed = True
            except FileNotFoundError:
                pass
        if removed:
            self.io.fsync_dir(self.path)

    def _seal_and_merge(self) -> None:
        self._seal()
        while (group := self._merge_candidates()):
            self._merge(group)

    def _merge_candidates(self) -> list[Shard]:
        """Shards to merge next: any shard a quarter deleted (rewritten alone), else the
        oldest ``TIER_FANOUT`` shards of one size tier (tier t: live rows below
        SEAL_ROWS * 4^(t+1)), which keeps the shard count logarithmic."""
        for shard in self._shards:
            if shard.dead_count * 4 > shard.rows:
                return [shard]
        tiers: dict[int, list[Shard]] = {}
        for shard in self._shards:
            tier = 0
            while shard.live >= tuning.SEAL_ROWS * tuning.TIER_FANOUT ** (tier + 1):
                tier += 1
            tiers.setdefault(tier, []).append(shard)
            if len(tiers[tier]) == tuning.TIER_FANOUT:
                return tiers[tier]
        return []

    def _merge(self, group: list[Shard]) -> None:
        """Write the live rows of ``group`` as one shard and drop the group's files."""
        vectors, ids, seqs, turns, contents, metas = [], [], [], [], [], []
        for shard in group:
            live = (np.arange(shard.rows) if shard.dead is None
                    else np.flatnonzero(~shard.dead))
            docs = shard.docs
            vectors.append(np.asarray(shard.vectors[live]))
            seqs.append(docs.seq[live])
            turns.append(docs.turn[live])
            for row in live.tolist():
                ids.append(docs.id_of(row))
                contents.append(bytes(docs.raw("content", row)))
                metas.append(bytes(docs.raw("meta", row)))
        names = {s.name for s in group}
        entries = [s.entry for s in self._shards if s.name not in names]
        merged = None
        if ids:
            merged = write_shard(self.io, self.path, self._shard_name(),
                                 np.concatenate(vectors), ids, np.concatenate(seqs),
                                 np.concatenate(turns), contents, metas)
            entries.append(merged)
        self._commit(entries)  # removes the group's files once no state names them
        self._shards = [s for s in self._shards if s.name not in names]
        if merged is not None:
            self._shards.append(Shard(self.io, self.path, merged, self.dim, self._dtype))

    def _upsert_as_shard(self, batch: list[Row]) -> None:
        """A large upsert skips the log: seal what is pending, write the batch as a shard
        and its replacements as deleted rows, and name both in one manifest."""
        self._seal()
        replaced: list[tuple[Shard, int]] = []
        for row in batch:
            for shard in self._shards:
                found = shard.find(row.id)
                if found is not None:
                    replaced.append((shard, found))
                    break
        entry = write_shard(self.io, self.path, self._shard_name(),
                            np.stack([r.vector for r in batch]), [r.id for r in batch],
                            np.array([r.seq for r in batch]), np.array([r.turn for r in batch]),
                            [r.content for r in batch], [r.metadata for r in batch])
        # Deletes go in memory first so the deleted files can be written; a failure
        # from here on leaves the writer failed (reopen reads the disk again).
        for shard, position in replaced:
            shard.kill(position)
            self._dirty.add(shard.name)
        self._commit_shards(entry, bulk=True)
        while (group := self._merge_candidates()):
            self._merge(group)

    # --- lifecycle ---

    def close(self) -> None:
        """Close the write-ahead log (what was written stays durable as the session's
        durability mode says); later calls raise SessionClosed."""
        with self._lock:
            if self._closed:
                return
            super().close()
            if self._seen_fd is not None:
                self.io.close(self._seen_fd)
                self._seen_fd = None
            # Shared: every write already reached the OS (or the disk) when it returned,
            # and the segment held open may since have been sealed by another writer,
            # which must never be written again (not even a synced mark).
            self._wal.close(sync=self._shared is None)
