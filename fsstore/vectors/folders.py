"""The ``vectors/`` folder of a session (docs/FORMAT.md, section 15.1): which
collections it holds, and creating and dropping one whole (a temp folder renamed in, or
renamed out of sight before removal), with the scratch folders a crash can leave."""

from __future__ import annotations

import os
import time

from .. import layout, manifest
from ..errors import (
    CollectionExists,
    CollectionNotFound,
    CorruptionError,
    InvalidCollection,
    WriteFailed,
)
from ..fsio import FileIO
from ..log_writer import create_log
from .collection_chain import CollectionChain
from .collection_file import COLLECTION_FORMAT
from .shard_files import DTYPES, MAX_DIM
from .types import DistanceMetric
from .validate import check_collection_name


def _vectors_names(io: FileIO, session_path: str) -> list[str]:
    folder = layout.vectors_dir(session_path)
    if not io.exists(folder):
        return []
    try:
        return io.listdir(folder)
    except NotADirectoryError:
        raise CorruptionError("a file where the session's vectors/ folder should be; "
                              "remove it or restore the folder from a backup",
                              path=folder) from None


def collection_names(io: FileIO, session_path: str) -> list[str]:
    """The collections of a session: the names in vectors/ that may name one."""
    return sorted(n for n in _vectors_names(io, session_path) if not layout.is_scratch(n)
                  and _is_collection_name(n))


def _is_collection_name(name: str) -> bool:
    try:
        check_collection_name(name)
    except InvalidCollection:
        return False
    return True


def scratch_names(io: FileIO, session_path: str) -> list[str]:
    """Folders an interrupted create (``.tmp-``) or drop (``.trash-``) left in vectors/."""
    return sorted(n for n in _vectors_names(io, session_path) if layout.is_scratch(n))


def _remove_scratch(io: FileIO, session_path: str) -> None:
    folder = layout.vectors_dir(session_path)
    for name in scratch_names(io, session_path):
        io.rmtree(os.path.join(folder, name))


def create_collection(io: FileIO, session_path: str, name: str, dim: int, dtype: str,
                      metric: DistanceMetric | str, chain: CollectionChain | None = None
                      ) -> str:
    """Build the collection folder under a temp name and rename it in whole (with a
    ``chain``, its manifest bound to it: the WAL's value before any record, the genesis)."""
    name = check_collection_name(name)
    if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= MAX_DIM:
        raise InvalidCollection(f"dim must be an int from 1 to {MAX_DIM}, not {dim!r}")
    if dtype not in DTYPES:
        raise InvalidCollection(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    chosen = DistanceMetric.of(metric, InvalidCollection)
    folder = layout.vectors_dir(session_path)
    final = os.path.join(folder, name)
    if io.exists(final):
        raise CollectionExists(f"collection {name!r} already exists at {final}")
    if not io.exists(folder):
        io.mkdir(folder)
        io.fsync_dir(session_path)
    _remove_scratch(io, session_path)
    temp = os.path.join(folder, layout.temp_name(name))
    io.mkdir(temp)
    try:
        wal = os.path.join(temp, layout.WAL_DIR)
        create_log(io, wal)
        io.fsync_dir(wal)
        data = {
            "format": COLLECTION_FORMAT, "version": manifest.VERSION, "name": name,
            "dim": dim, "dtype": dtype, "metric": chosen.value,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "generation": 0, "wal_seq": 0, "next_shard": 1, "shards": []}
        if chain is not None:
            data = chain.seal(data, temp, io, None, chain.genesis())
        io.write_new(os.path.join(temp, layout.COLLECTION_MANIFEST), manifest.encode(data))
        io.fsync_dir(temp)
        io.rename(temp, final)
    except OSError as exc:
        io.rmtree(temp)
        if io.exists(final):
            raise CollectionExists(f"collection {name!r} already exists at {final}") from None
        raise WriteFailed(f"{final}: creating the collection failed ({exc})") from exc
    io.fsync_dir(folder)
    return final


def drop_collection(io: FileIO, session_path: str, name: str) -> None:
    """Rename the folder out of sight, then remove it: a crash leaves it whole or gone
    from the list (its trash is removed by the next drop or ``remove_leftovers``)."""
    name = check_collection_name(name)
    folder = layout.vectors_dir(session_path)
    final = os.path.join(folder, name)
    if not io.exists(os.path.join(final, layout.COLLECTION_MANIFEST)):
        raise CollectionNotFound(f"no collection {name!r} in {session_path}")
    trash = os.path.join(folder, layout.trash_name(name))
    io.rename(final, trash)
    io.fsync_dir(folder)
    _remove_scratch(io, session_path)
