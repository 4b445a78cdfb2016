"""The store's stats cache (``.stats-cache`` in the store's root; docs/FORMAT.md, section
7.7): what ``Store.stats`` counted of each session, kept so that the next count of a
session nothing has changed in since costs a walk of its folders' stamps, not a count.

It is a cache, never the source of truth: any session whose stamps differ from those
the entry was counted with is counted again, a damaged session is never cached, a file
that does not read back whole (a torn, truncated, garbage or newer file: its magic,
version and CRC-32 are checked) is ignored and replaced, and deleting it at any time
changes nothing but the time the next count takes.

What tells a changed session (its *fingerprint*): the ``lstat`` of its folder and of
every name under it (``FileIO.stamps``: mode, mtime in ns, size, inode, links), hashed.
A file written in place (a segment appended within its preallocated size, the lease
file, the message index, a vector collection's write-ahead log) changes its mtime; a
name added, removed or renamed changes its folder's mtime and the names; a hard link
made by a fork changes the links. What an mtime cannot tell is a change made within the
same tick of the clock as the one it stamps (git's "racy git" problem): so an entry is
kept only when every stamp of its session is older than ``SETTLED`` before the count
began, and a session changed more recently is counted afresh at every call until it has
been quiet that long.

Time-dependent fields are not cached as they were: ``lease_live`` is worked out at each
call from the cached holder and expiry. A file shared by hard link between sessions
counts once in a store's bytes, for the first session (by id) holding it: each entry
keeps the shared files its session's count found, and they are summed in id order as
the uncached count sums them.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
import zlib
from collections.abc import Callable, Iterable
from typing import NamedTuple

import msgspec

from . import layout
from .chain import ChainKey
from .errors import FsStoreError
from .fsio import FileIO
from .stats import (
    DamagedSession,
    SessionStats,
    SharedFile,
    StoreStats,
    count_session,
    summed,
)

#: The cache file's name in the store's root folder.
CACHE_NAME = layout.STATS_CACHE
_MAGIC = b"FSSTATC\n"
#: Bumped whenever what a session's count reports changes: an older cache is ignored.
VERSION = 1
_HEADER = struct.Struct("<8sIIQ")  # magic, version, CRC-32 of the body, body length
#: A session changed less than this long before a count (ns) is not cached: a change
#: in the same tick of a coarse clock (2 s on FAT, a jiffy on ext4) leaves its stamps
#: as they were.
SETTLED = 3_000_000_000
_MAX_CACHE = 1 << 30


class _Entry(msgspec.Struct, array_like=True, frozen=True):
    fingerprint: bytes
    stats: SessionStats
    shared: list[tuple[tuple[int, int], str, int, bool]]


class _CacheFile(msgspec.Struct, frozen=True):
    version: int
    #: SessionStats' fields when it was written: a cache of another shape is ignored.
    fields: list[str]
    entries: dict[str, _Entry]


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(_CacheFile)
_FIELDS = list(SessionStats.__struct_fields__)


class CacheUse(NamedTuple):
    """What a cached count did (for tests and benchmarks)."""

    hits: int  # sessions answered from the cache
    counted: int  # sessions counted afresh
    written: bool  # the cache file was replaced


def cache_path(root: str) -> str:
    return os.path.join(root, CACHE_NAME)


def fingerprint(io: FileIO, path: str) -> tuple[bytes, int]:
    """The hash of the stamps of the session folder ``path``, and the newest mtime
    among them (ns). FileNotFoundError when the folder is gone."""
    stamps = sorted(io.stamps(path))
    newest = max(stamp[2] for stamp in stamps)
    return hashlib.blake2b(_ENCODER.encode(stamps), digest_size=16).digest(), newest


def read_cache(io: FileIO, root: str) -> dict[str, _Entry]:
    """The entries of the store's cache file; none when it is missing, unreadable,
    damaged, or of another version (then it is rebuilt, never trusted)."""
    try:
        data = io.read_file(cache_path(root), _MAX_CACHE)
    except (OSError, ValueError, FsStoreError):
        return {}
    if len(data) < _HEADER.size:
        return {}
    magic, version, crc, length = _HEADER.unpack_from(data)
    body = data[_HEADER.size:]
    if (magic != _MAGIC or version != VERSION or length != len(body)
            or zlib.crc32(body) != crc):
        return {}
    try:
        found = _DECODER.decode(body)
    except (msgspec.DecodeError, ValueError, TypeError):
        return {}
    if found.version != VERSION or found.fields != _FIELDS:
        return {}
    return found.entries


def write_cache(io: FileIO, root: str, entries: dict[str, _Entry]) -> bool:
    """Replace the cache file by rename (a reader sees the old file or the new one);
    not fsynced: a crash may leave it torn, and the CRC then tells. False when it could
    not be written (a read-only store): the count was answered anyway."""
    body = _ENCODER.encode(_CacheFile(VERSION, _FIELDS, entries))
    data = _HEADER.pack(_MAGIC, VERSION, zlib.crc32(body), len(body)) + body
    path = cache_path(root)
    temp = os.path.join(root, layout.temp_name(CACHE_NAME))
    try:
        fd = io.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except (OSError, FsStoreError):
        return False
    try:
        try:
            io.pwrite(fd, data, 0)
        finally:
            io.close(fd)
        io.rename(temp, path)
    except (OSError, FsStoreError):
        try:
            io.unlink(temp)
        except (OSError, FsStoreError):
            pass
        return False
    return True


def cached_store_stats(io: FileIO, root: str, session_ids: Iterable[str],
                       on_session: Callable[[str], object] | None = None, *,
                       chain_key: ChainKey | None = None) -> tuple[StoreStats, CacheUse]:
    """``Store.stats`` with the cache: equal to the uncached count (``store_stats``)."""
    old = read_cache(io, root)
    new: dict[str, _Entry] = {}
    seen: set[tuple[int, int]] = set()
    found: list[SessionStats] = []
    damaged: list[DamagedSession] = []
    hits = counted = 0
    now = time.time()
    for session_id in session_ids:
        if on_session is not None:
            on_session(session_id)
        path = layout.session_dir(root, session_id)
        started = time.time_ns()
        try:
            stamp, newest = fingerprint(io, path)
        except OSError:
            stamp, newest = b"", started  # gone, or unreadable: counted as before
        entry = old.get(session_id)
        if stamp and entry is not None and entry.fingerprint == stamp:
            hits += 1
            found.append(_shared_once(_as_now(entry.stats, path, now), entry.shared, seen))
            new[session_id] = entry
            continue
        counted += 1
        shared: list[SharedFile] = []
        result = count_session(io, root, session_id, set(), shared, chain_key=chain_key)
        if not isinstance(result, SessionStats):
            # Damaged or gone: counted again as the uncached count does, with the
            # store's shared files, so that what it leaves in ``seen`` is the same.
            result = count_session(io, root, session_id, seen, chain_key=chain_key)
            if isinstance(result, DamagedSession):
                damaged.append(result)
            elif result is not None:
                found.append(result)  # mended meanwhile; not cached this time
            continue
        kept = [(f.inode, f.kind, f.size, f.blob) for f in shared]
        found.append(_shared_once(result, kept, seen))
        if stamp and newest < started - SETTLED:
            new[session_id] = _Entry(stamp, result, kept)
    written = False
    if new.keys() != old.keys() or any(old[key] is not new[key] for key in new):
        written = write_cache(io, root, new)
    return summed(found, damaged), CacheUse(hits, counted, written)


def _as_now(stats: SessionStats, path: str, now: float) -> SessionStats:
    """A cached count as counted now: at this store's path, the lease live or not by the
    clock of now."""
    live = stats.lease_holder is not None and now < (stats.lease_expires or 0.0)
    if stats.path == path and stats.lease_live == live:
        return stats
    return msgspec.structs.replace(stats, path=path, lease_live=live)


def _shared_once(stats: SessionStats, shared: list[tuple[tuple[int, int], str, int, bool]],
                 seen: set[tuple[int, int]]) -> SessionStats:
    """``stats`` (counted alone) with the files it shares with sessions summed before it
    taken out, as the store's uncached count leaves them out."""
    taken: dict[str, int] = {}
    blob_bytes = 0
    for inode, kind, size, blob in shared:
        if inode in seen:
            taken[kind] = taken.get(kind, 0) + size
            if blob:
                blob_bytes += size
        else:
            seen.add(inode)
    if not taken:
        return stats
    sizes = msgspec.structs.replace(
        stats.bytes, **{kind: getattr(stats.bytes, kind) - size
                        for kind, size in taken.items()})
    return msgspec.structs.replace(stats, bytes=sizes,
                                   log_bytes=stats.log_bytes - taken.get("log", 0),
                                   blob_bytes=stats.blob_bytes - blob_bytes)
