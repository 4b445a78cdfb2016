"""Vector collections of a session: numpy shards, searched exactly (docs/FORMAT.md,
section 15).

A collection folder::

    vectors/NAME/
      collection.json             definition and the live shards (replaced by rename)
      wal/                        a log (log.py) of the upserts and deletes not yet sealed
      SHARD.vec.npy               the vectors: a plain .npy, Fortran (column) order
      SHARD.docs                  ids, norms, event links, content and metadata
      SHARD.GEN.del.npy           the deleted rows of SHARD (sorted uint32)

The package, one concern a module:

- ``types``: the metric, a document, a search result, what ``collections()`` reports;
- ``validate``: checks of names, ids, documents, queries and score bounds;
- ``filters``: ``VectorFilter``, evaluated into a mask of rows;
- ``collection_file``: ``collection.json`` and the states it pins for copies (15.8);
- ``shard_files``: a shard's files, the stored values and the log's records;
- ``rows``: the row sources search reads (a shard, the unsealed rows);
- ``kernel``: the exact top-k search over a row source;
- ``reader``: ``VectorCollectionReader``, opening, get and search;
- ``writer``: ``VectorCollection``, the reader plus upserts, deletes, seals and merges;
- ``check``: the collection's part of ``verify``;
- ``folders``: the ``vectors/`` folder: list, create, drop.
"""

from __future__ import annotations

import sys
import types as _types
from typing import Any

from . import kernel, writer
from .check import check_collection
from .collection_file import COLLECTION_FORMAT, COPY_GRACE_SECONDS
from .filters import VectorFilter
from .folders import collection_names, create_collection, drop_collection, scratch_names
from .kernel import CHUNK_ROWS
from .reader import VectorCollectionReader
from .shard_files import DTYPES, MAX_DIM, MAX_ID_BYTES
from .types import (
    MAX_DOC_BYTES,
    CollectionInfo,
    DistanceMetric,
    VectorDocument,
    VectorSearchResult,
)
from .validate import check_collection_name, check_id, check_k, check_score_bound
from .writer import SEAL_BYTES, SEAL_ROWS, TIER_FANOUT, VectorCollection

__all__ = [
    "CHUNK_ROWS",
    "COLLECTION_FORMAT",
    "COPY_GRACE_SECONDS",
    "DTYPES",
    "MAX_DIM",
    "MAX_DOC_BYTES",
    "MAX_ID_BYTES",
    "SEAL_BYTES",
    "SEAL_ROWS",
    "TIER_FANOUT",
    "CollectionInfo",
    "DistanceMetric",
    "VectorCollection",
    "VectorCollectionReader",
    "VectorDocument",
    "VectorFilter",
    "VectorSearchResult",
    "check_collection",
    "check_collection_name",
    "check_id",
    "check_k",
    "check_score_bound",
    "collection_names",
    "create_collection",
    "drop_collection",
    "scratch_names",
]

# Tests and tools tune these on the package (``vectors.SEAL_ROWS = 8`` for small seals).
# Each is read by the module named here, so an assignment to the package is passed on
# to it; without this it would change a copy nobody reads, silently.
_TUNED_IN: dict[str, _types.ModuleType] = {
    "SEAL_ROWS": writer, "SEAL_BYTES": writer, "TIER_FANOUT": writer,
    "COPY_GRACE_SECONDS": writer, "CHUNK_ROWS": kernel,
}


class _Package(_types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        owner = _TUNED_IN.get(name)
        if owner is not None:
            setattr(owner, name, value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
