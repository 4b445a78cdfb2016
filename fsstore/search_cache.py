"""The store's search cache (``search/NAME/`` in the store folder; docs/FORMAT.md,
section 25): for a collection name, the live documents of that collection in every
session, copied into a few large shards, so that ``Store.search`` scores them in one
BLAS pass per shard instead of opening a thousand collections.

Never the source of truth. Each session's rows (a *part*) are keyed by the stamps of
its collection (``collection.json``, the ``wal/`` folder and its newest segment, as
``lstat`` gives them) taken before they were copied: a search stamps them again and
uses the part only when they still hold; every other session (changed, made, its
collection new) is searched in its own folder. Any write to a collection (an upsert or
delete appends to ``wal/``; a seal or merge replaces ``collection.json``) moves a stamp.
A stamp younger than ``SETTLE_NS`` when taken may not show a change made in the same
tick of the filesystem's clock: such a session is never cached (it is searched in its
folder until it has been still that long).

Files::

    search/NAME/index            which shards hold which session's rows, and the stamps
    search/NAME/SHARD.vec.npy    vectors, as a collection's shard (FORMAT 15.1)
    search/NAME/SHARD.docs       ids, norms, links, content and metadata, likewise
    search/NAME/lock             held (flock) by the one process that rewrites the cache

Shards are written first, then the index replaced by rename, then the shards it no
longer names removed: a reader holds the shards it mapped; one that finds a shard gone
reads the index again. Damage never gives a wrong answer: an index or shard that does
not check is dropped, the cache rebuilt, and the sessions searched in their folders.
"""

from __future__ import annotations

import fcntl
import os
import struct
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import msgspec
import numpy as np

from . import layout
from .checksum import crc32c
from .errors import CorruptionError, FsStoreError
from .fsio import FileIO, check_folder
from .vectors.rows import RowSource, Shard
from .vectors.shard_files import DTYPES, ShardEntry, write_shard

#: As the catalog's (catalog.py): a stamp younger than this (ns) is not trusted.
SETTLE_NS = 2_000_000_000
#: Bytes of vectors per cache shard: a few large shards, each one BLAS pass.
SHARD_BYTES = 512 << 20
#: A rewrite copies every part into new shards once the shards hold more rows than
#: this times the rows the index still names (rows of sessions changed since).
COMPACT_RATIO = 2
INDEX = "index"
LOCK = "lock"
_MAGIC = b"FSSRCH\n"
_HEADER = struct.Struct("<7sBII")  # magic, version, crc32c(body), len(body)
VERSION = 1

Stamp = tuple[Any, ...]


class Part(msgspec.Struct, array_like=True, frozen=True):
    """One session's rows: ``rows`` rows from ``start`` in cache shard ``shard``, copied
    from its collection (of ``metric``) when its stamps were ``stamp``."""

    session: str
    shard: str
    start: int
    rows: int
    metric: str
    stamp: list[Any]


class Index(msgspec.Struct, frozen=True):
    """``index``: the cache's dimension and dtype, its shards and its parts; ``absent``:
    sessions seen without the collection, with the stamp of their ``vectors/`` folder
    (or of the session folder when that is missing)."""

    name: str
    dim: int
    dtype: str
    next_shard: int
    shards: list[ShardEntry]
    parts: list[Part]
    absent: list[tuple[str, list[Any]]] = []


def folder_of(root: str, name: str) -> str:
    return os.path.join(root, layout.SEARCH_DIR, name)


def _real_folder(path: str) -> bool:
    try:
        return check_folder(path)
    except (FsStoreError, OSError):
        return False


def collection_stamp(io: FileIO, session: str, name: str) -> Stamp | None:
    """The stamps a part is keyed by, or None when the collection is not there."""
    vectors = os.path.join(session, layout.VECTORS_DIR)
    folder = os.path.join(vectors, name)
    # Nothing below a store passes through a symlink (fsio.check_folders): a collection
    # folder, or a vectors folder, that is none is not cached; the session's own reader
    # then refuses it, as a search of it alone does.
    if not (_real_folder(vectors) and _real_folder(folder)):
        return None
    manifest = io.stamp(os.path.join(folder, layout.COLLECTION_MANIFEST))
    wal = os.path.join(folder, layout.WAL_DIR)
    wal_stamp = io.stamp(wal)
    if manifest is None or wal_stamp is None:
        return None
    try:
        segments = [n for n in io.listdir(wal) if layout.is_segment_name(n)]
    except (OSError, FsStoreError):
        return None
    newest = max(segments, default="")
    segment = io.stamp(os.path.join(wal, newest)) if newest else (0, 0, 0)
    if segment is None:
        return None
    return (list(manifest), wal_stamp[0], newest, list(segment[:2]))


def holds(io: FileIO, session: str, name: str, stamp: Sequence[Any]) -> bool:
    """Whether a collection's stamps are still ``stamp`` (as :func:`collection_stamp`
    gives it, or as tuples): three ``lstat``s (an unchanged ``wal/`` has no newer
    segment)."""
    manifest, wal_mtime, newest, segment = stamp
    # Why three, and no fewer: an upsert or delete appends to the newest segment, which
    # moves nothing else; a roll-over puts the next record in a new segment and leaves
    # the old one as it was (log_writer.append), which only the mtime of wal/ shows; a
    # seal or merge replaces collection.json, and an edit of it in place (which a
    # chained session's check must see, FORMAT 15.9) moves that file alone.
    # Plain concatenation (the names were checked when the part was made): this runs
    # for every session of every search.
    folder = f"{session}/{layout.VECTORS_DIR}/{name}/"
    now = io.stamp(folder + layout.COLLECTION_MANIFEST)
    if now is None or now != tuple(manifest):
        return False
    wal = folder + layout.WAL_DIR
    now = io.stamp(wal)
    if now is None or now[0] != wal_mtime:
        return False
    if not newest:
        return True
    now = io.stamp(f"{wal}/{newest}")
    return now is not None and now[:2] == tuple(segment)


def absent_stamp(io: FileIO, session: str) -> list[Any] | None:
    """What tells that a session has made a collection since: its ``vectors/`` folder's
    stamp, or its own folder's while it has none."""
    found = io.stamp(os.path.join(session, layout.VECTORS_DIR))
    if found is None:
        found = io.stamp(session)
        return None if found is None else ["session", *found]
    return ["vectors", *found]


def settled(stamp: Iterable[Any], now: int | None = None) -> bool:
    """Whether every mtime in a stamp is older than ``SETTLE_NS``."""
    now = time.time_ns() if now is None else now
    times: list[int] = []

    def walk(value: Any) -> None:
        if isinstance(value, (list, tuple)):
            if value and isinstance(value[0], int) and len(value) in (2, 3):
                times.append(value[0])
            else:
                for item in value:
                    walk(item)
        elif isinstance(value, int) and value > 10**15:
            times.append(value)

    walk(list(stamp))
    return all(now - value >= SETTLE_NS for value in times if value)


def encode_index(index: Index) -> bytes:
    body = msgspec.msgpack.encode(index)
    return _HEADER.pack(_MAGIC, VERSION, crc32c(body), len(body)) + body


def decode_index(data: bytes, path: str) -> Index:
    """The index, checked; CorruptionError for anything else (the caller rebuilds)."""
    if len(data) < _HEADER.size:
        raise CorruptionError("search cache index is cut short", path=path)
    magic, version, crc, length = _HEADER.unpack(data[:_HEADER.size])
    body = data[_HEADER.size:]
    if magic != _MAGIC or version != VERSION or length != len(body) or crc != crc32c(body):
        raise CorruptionError("search cache index does not check (magic, version, length "
                              "or checksum)", path=path)
    try:
        index = msgspec.msgpack.decode(body, type=Index)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
        raise CorruptionError(f"search cache index is malformed ({exc})", path=path) from None
    if index.dtype not in DTYPES:
        raise CorruptionError(f"search cache index names dtype {index.dtype!r}", path=path)
    sizes = {entry.name: entry.rows for entry in index.shards}
    for part in index.parts:
        layout.check_session_id(part.session)
        if part.shard not in sizes or part.start < 0 or part.start + part.rows > \
                sizes[part.shard]:
            raise CorruptionError(f"search cache part of {part.session!r} lies outside its "
                                  "shard", path=path)
    return index


class Loaded:
    """A cache as read: its index, and each shard opened (memory-mapped) as a row
    source with, per row, the part it belongs to."""

    def __init__(self, io: FileIO, folder: str, index: Index, stamp: Stamp) -> None:
        self.index = index
        self.stamp = stamp
        dtype = DTYPES[index.dtype]
        self.shards: dict[str, Shard] = {}
        for entry in index.shards:
            try:
                self.shards[entry.name] = Shard(io, folder, entry, index.dim, dtype)
            except FileNotFoundError:
                raise CorruptionError("a search cache shard is missing",
                                      path=os.path.join(folder, entry.name)) from None
        self.max_norm = {name: float(shard.norms().max()) if shard.size else 0.0
                         for name, shard in self.shards.items()}
        self.parts = {part.session: part for part in index.parts}
        #: Each part's stamp as tuples, as ``FileIO.stamp`` gives them: compared as is.
        self.stamps = {part.session: (tuple(part.stamp[0]), part.stamp[1], part.stamp[2],
                                      tuple(part.stamp[3])) for part in index.parts}
        #: Per shard: part starts (sorted) and the parts, to name a row's session.
        self.starts: dict[str, tuple[np.ndarray, list[Part]]] = {}
        for name in self.shards:
            parts = sorted((p for p in index.parts if p.shard == name),
                           key=lambda p: p.start)
            self.starts[name] = (np.array([p.start for p in parts], dtype=np.int64), parts)

    def session_of(self, shard: str, row: int) -> str:
        starts, parts = self.starts[shard]
        return parts[int(np.searchsorted(starts, row, side="right")) - 1].session


def load(io: FileIO, root: str, name: str, known: Loaded | None) -> Loaded | None:
    """The cache of collection ``name`` (``known`` again when its index has not changed);
    None when there is none. A cache that does not check is removed (CorruptionError is
    never raised: the caller searches the sessions in their folders and rebuilds)."""
    folder = folder_of(root, name)
    path = os.path.join(folder, INDEX)
    stamp = io.stamp(path)
    if stamp is None:
        return None
    if known is not None and list(known.stamp) == list(stamp):
        return known
    for _attempt in range(3):
        try:
            data = io.read_file(path, 1 << 30)
            return Loaded(io, folder, decode_index(data, path), stamp)
        except FileNotFoundError:
            return None
        except (CorruptionError, ValueError):
            # A rewrite may have replaced the index and removed a shard between the
            # reads: read again before calling it damage.
            newer = io.stamp(path)
            if newer is not None and list(newer) != list(stamp):
                stamp = newer
                continue
            drop(io, root, name)
            return None
    return None


def drop(io: FileIO, root: str, name: str) -> None:
    """Remove a cache (damaged, or of another dimension): the next search rebuilds."""
    with locked(io, folder_of(root, name)) as held:
        if held:
            io.unlink_if_there(os.path.join(folder_of(root, name), INDEX))


@contextmanager
def locked(io: FileIO, folder: str) -> Iterator[bool]:
    """Try to hold the cache's ``lock`` (flock, not waiting): True when held. Only
    its holder writes shards or the index; a search that finds it held searches
    without rewriting the cache."""
    try:
        io.check_folders(folder)
        fd = io.open(os.path.join(folder, LOCK), os.O_RDWR | os.O_CREAT)
    except (OSError, FsStoreError):
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        yield True
    finally:
        io.close(fd)


class Rows:
    """Rows to copy into the cache: one session's live rows of some row sources."""

    def __init__(self, session: str, metric: str, stamp: Stamp,
                 sources: list[tuple[RowSource, np.ndarray]], dim: int, dtype: str) -> None:
        self.session, self.metric, self.stamp = session, metric, stamp
        self.dim, self.dtype = dim, dtype
        self.sources = sources
        self.count = sum(len(rows) for _source, rows in sources)


def _raw(source: RowSource, section: str, row: int) -> bytes:
    if isinstance(source, Shard):
        return bytes(source.docs.raw(section, row))
    held: list[bytes] = getattr(source, "contents" if section == "content" else "metas")
    return held[row]


def write(io: FileIO, root: str, name: str, dim: int, dtype: str,
          old: Loaded | None, fresh: list[Rows], gone: set[str],
          absent: list[tuple[str, list[Any]]]) -> None:
    """Write the cache: ``old``'s parts less those of ``gone`` and of ``fresh``'s
    sessions, plus ``fresh``'s rows in new shards (all parts copied anew when ``old``'s
    shards hold mostly rows no part names). Call with the lock held."""
    folder = folder_of(root, name)
    keep = [] if old is None else [p for p in old.index.parts
                                   if p.session not in gone
                                   and p.session not in {r.session for r in fresh}]
    next_shard = 1 if old is None else old.index.next_shard
    shards: list[ShardEntry] = []
    parts: list[Part] = []
    named = sum(p.rows for p in keep)
    held = 0 if old is None else sum(s.rows for s in old.index.shards)
    if old is not None and held > COMPACT_RATIO * max(named, 1):
        copies = [Rows(p.session, p.metric, tuple(p.stamp),
                       [(old.shards[p.shard], np.arange(p.start, p.start + p.rows))],
                       dim, dtype) for p in keep]
        fresh, keep = copies + fresh, []
    kept_shards = {p.shard for p in keep}
    if old is not None:
        shards = [s for s in old.index.shards if s.name in kept_shards]
    per_shard = max(1, SHARD_BYTES // (dim * DTYPES[dtype].itemsize))
    batch: list[Rows] = []
    size = 0
    for rows in [*fresh, None]:
        if rows is not None and (size + rows.count <= per_shard or not batch):
            batch.append(rows)
            size += rows.count
            continue
        if batch:
            entry, made = _write_shard(io, folder, layout.shard_name(next_shard), dim,
                                       dtype, batch)
            next_shard += 1
            shards.append(entry)
            parts.extend(made)
        batch, size = ([rows], rows.count) if rows is not None else ([], 0)
    index = Index(name, dim, dtype, next_shard, shards, keep + parts, absent)
    io.atomic_write(os.path.join(folder, INDEX), encode_index(index))
    named_files = {n for entry in shards for n in entry.files()}
    for file_name in io.listdir(folder):
        if layout.is_shard_file(file_name) and file_name not in named_files:
            io.unlink_if_there(os.path.join(folder, file_name))


def _write_shard(io: FileIO, folder: str, shard: str, dim: int, dtype: str,
                 batch: list[Rows]) -> tuple[ShardEntry, list[Part]]:
    vectors, ids, seqs, turns, contents, metas = [], [], [], [], [], []
    parts, start = [], 0
    for rows in batch:
        for source, picked in rows.sources:
            vectors.append(np.asarray(source.gather(picked).T, dtype=DTYPES[dtype]))
            seqs.append(source.link_column("seq")[picked])
            turns.append(source.link_column("turn")[picked])
            for row in picked.tolist():
                ids.append(source.doc_id(row))
                contents.append(_raw(source, "content", row))
                metas.append(_raw(source, "meta", row))
        parts.append(Part(rows.session, shard, start, rows.count, rows.metric,
                          list(rows.stamp)))
        start += rows.count
    matrix = np.concatenate(vectors) if vectors else np.zeros((0, dim), DTYPES[dtype])
    entry = write_shard(io, folder, shard, matrix, ids,
                        np.concatenate(seqs) if seqs else np.zeros(0, np.int64),
                        np.concatenate(turns) if turns else np.zeros(0, np.int64),
                        contents, metas)
    return entry, parts
