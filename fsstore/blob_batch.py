"""Blobs put in a batch, made durable together: what an import that writes many small
attachments uses instead of :meth:`BlobStore.put` one by one.

``BlobStore.put`` fsyncs each blob's bytes and then its folder before it returns: two
journal commits per blob, which is most of the time of an import whose transcript holds
hundreds of long tool outputs and images. A :class:`BlobBatch` writes each blob's bytes
to a temp file at once (its BlobRef is known then), and :meth:`BlobBatch.commit` makes
them all durable together: the temp files fsynced (several at once, so the file system
commits them in one journal transaction), then each renamed to its final name, then
each folder that got a name fsynced once.

The rule for callers: commit before writing (or at least before syncing) any record
that refers to a blob of the batch. Until then a crash may leave temp files (removed
by ``fsstore vacuum`` like any other) but never a partial blob under a final name, and
no record refers to a blob that is not durable. The on-disk result is the same as
``put``'s (docs/FORMAT.md, section 14).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from . import layout
from .blobs import _ZSTD_HEADER, ALGORITHM, ZSTD_MAGIC, ZSTD_SUFFIX, BlobRef, BlobStore
from .errors import WriteFailed
from .fsio import FileIO

#: Blobs a batch holds (open temp files) before it commits by itself.
MAX_STAGED = 64
#: fsyncs issued at once: concurrent fsyncs of one file system share journal commits.
_SYNC_WORKERS = 8


class BlobBatch:
    """Blobs of one store written now and made durable by :meth:`commit` (see the
    module docstring). ``put`` returns the BlobRef at once; a batch that reaches
    MAX_STAGED blobs commits itself (so open files and memory stay bounded); ``discard``
    removes what was not committed."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs
        self.io: FileIO = blobs.io
        # digest -> (temp path, open fd, compressed)
        self._staged: dict[str, tuple[str, int, bool]] = {}

    def put(self, data: bytes, media_type: str | None = None) -> BlobRef:
        """Write ``data`` as a blob (durable only after :meth:`commit`); its BlobRef."""
        blobs = self.blobs
        hex_digest = hashlib.sha256(data).hexdigest()
        ref = BlobRef(f"{ALGORITHM}:{hex_digest}", len(data), media_type)
        # Marked pending first: a gc in another thread must not take the blob between
        # our finding it stored and the commit of the record that refers to it.
        with blobs._gc_lock:
            blobs.pending.add(hex_digest)
            if hex_digest in self._staged:
                return ref
            existing = blobs._locate(ref)
            if existing is not None:
                os.utime(existing[0])  # young again: see BlobStore._put_stream
                return ref
        compressed = blobs._compresses(media_type, None)
        if compressed:
            import zstandard

            body = zstandard.ZstdCompressor(level=blobs.level).compress(data)
            payload = _ZSTD_HEADER.pack(ZSTD_MAGIC, len(data)) + body
        else:
            payload = data
        blobs._ensure_dirs(os.path.join(blobs.path, ALGORITHM))
        blobs._real_folders()  # never write through a symlink
        temp = os.path.join(blobs.path, layout.temp_name("put"))
        try:
            fd = self.io.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except OSError as exc:
            raise WriteFailed(f"{blobs.path}: put failed ({exc.strerror or exc}); nothing "
                              "was stored") from exc
        self._staged[hex_digest] = (temp, fd, compressed)
        try:
            self.io.pwrite(fd, payload, 0)
        except OSError as exc:
            self.discard()
            raise WriteFailed(f"{blobs.path}: put failed ({exc.strerror or exc}); nothing "
                              "was stored") from exc
        if len(self._staged) >= MAX_STAGED:
            self.commit()
        return ref

    def commit(self) -> None:
        """Make every blob put since the last commit durable under its final name."""
        if not self._staged:
            return
        blobs = self.blobs
        try:
            self._sync_all([fd for _temp, fd, _c in self._staged.values()], self.io.fsync)
            top = os.path.join(blobs.path, ALGORITHM)
            synced: set[str] = set()  # folders whose names a sync makes durable
            for hex_digest, (temp, fd, compressed) in list(self._staged.items()):
                self.io.close(fd)
                del self._staged[hex_digest]
                folder = blobs._folder(hex_digest)
                try:
                    if not os.path.isdir(folder):
                        # Made durable with the others below (the sync of ``top``),
                        # before any record can refer to a blob in it.
                        try:
                            self.io.mkdir(folder)
                        except FileExistsError:
                            pass
                        synced.add(top)
                    with blobs._gc_lock:
                        if blobs._locate(BlobRef(f"{ALGORITHM}:{hex_digest}", 0)) is None:
                            # Only now, its bytes synced: a crash never leaves a partial
                            # blob under a final name.
                            name = hex_digest + (ZSTD_SUFFIX if compressed else "")
                            self.io.rename(temp, os.path.join(folder, name))
                            synced.add(folder)
                            continue
                    self.io.unlink(temp)  # another writer stored it meanwhile
                except BaseException:
                    blobs._unlink_quietly(temp)
                    raise
            self._sync_all(sorted(synced), self.io.fsync_dir)
        except OSError as exc:
            self.discard()
            raise WriteFailed(f"{blobs.path}: put failed ({exc.strerror or exc}); blobs "
                              "not yet committed were not stored") from exc
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        """Remove the temp files of blobs not committed (closing their files)."""
        staged, self._staged = self._staged, {}
        for temp, fd, _compressed in staged.values():
            try:
                self.io.close(fd)
            except OSError:
                pass
            self.blobs._unlink_quietly(temp)

    def _sync_all(self, items: list[Any], sync: Any) -> None:
        # Several at once on the plain file system; one by one, in order, under any
        # other FileIO (a crash simulator counts and orders its operations).
        if type(self.io) is not FileIO or len(items) < 2:
            for item in items:
                sync(item)
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(_SYNC_WORKERS, len(items))) as pool:
            for _ in pool.map(sync, items):
                pass
