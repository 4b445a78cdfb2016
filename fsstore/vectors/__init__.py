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
- ``exact``: the search: candidates by BLAS, then exact scores and a deterministic order;
- ``tuning``: the seal and merge sizes, the copy grace period and the search block size,
  read at call time (tests and tools patch them there);
- ``reader``: ``VectorCollectionReader``, opening, get and search;
- ``writer``: ``VectorCollection``, the reader plus upserts, deletes, seals and merges;
- ``check``: the collection's part of ``verify``;
- ``folders``: the ``vectors/`` folder: list, create, drop.
"""

from __future__ import annotations

from . import tuning
from .check import check_collection
from .collection_chain import of_session as chain_of
from .collection_file import COLLECTION_FORMAT
from .filters import VectorFilter
from .folders import collection_names, create_collection, drop_collection, scratch_names
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
from .writer import VectorCollection

__all__ = [
    "COLLECTION_FORMAT",
    "DTYPES",
    "MAX_DIM",
    "MAX_DOC_BYTES",
    "MAX_ID_BYTES",
    "CollectionInfo",
    "DistanceMetric",
    "VectorCollection",
    "VectorCollectionReader",
    "VectorDocument",
    "VectorFilter",
    "VectorSearchResult",
    "chain_of",
    "check_collection",
    "check_collection_name",
    "check_id",
    "check_k",
    "check_score_bound",
    "collection_names",
    "create_collection",
    "drop_collection",
    "scratch_names",
    "tuning",
]
