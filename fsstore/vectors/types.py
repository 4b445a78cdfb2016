"""The values a vector collection takes and gives back: the metric, a document, a search
result, what ``collections()`` reports, and the size limits of a document."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..errors import InvalidQuery

MAX_DOC_BYTES = 4 << 20  # content and metadata of one document, encoded


class DistanceMetric(str, enum.Enum):
    """How a query and a document are compared. Results come best first:

    - ``cosine``: the cosine similarity, from -1 to 1, higher is better. A stored zero
      vector scores 0; a zero query is refused (it has no direction).
    - ``dot``: the dot product, higher is better.
    - ``euclidean``: the euclidean distance, lower is better.

    A search bounds the first two with ``min_score=`` and the distance with
    ``max_distance=``.
    """

    COSINE = "cosine"
    DOT = "dot"
    EUCLIDEAN = "euclidean"

    @classmethod
    def of(cls, value: DistanceMetric | str, error: type[Exception] = InvalidQuery
           ) -> DistanceMetric:
        try:
            return cls(value)
        except ValueError:
            names = ", ".join(m.value for m in cls)
            raise error(f"unknown metric {value!r}: use one of {names}") from None

    @property
    def lower_is_better(self) -> bool:
        """Whether the score is a distance (euclidean) rather than a similarity."""
        return self is DistanceMetric.EUCLIDEAN


@dataclass
class VectorDocument:
    """A document to store: an ``id`` (str), its ``embedding`` (a sequence of numbers or
    a 1-D numpy array of the collection's dimension), optional text ``content``, a
    ``metadata`` dict (msgpack values; keys may not start with ``$``) and optionally the
    ``seq`` and ``turn`` of the event it comes from."""

    id: str
    embedding: Any
    content: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    seq: int | None = None
    turn: int | None = None


class VectorSearchResult(NamedTuple):
    """One hit. ``score`` is as :class:`DistanceMetric` says; ``session_id`` is set by
    ``Store.search``."""

    id: str
    score: float
    content: str | None
    metadata: dict[str, Any]
    seq: int | None
    turn: int | None
    session_id: str | None = None


@dataclass(frozen=True)
class CollectionInfo:
    """What ``collections()`` reports of one collection."""

    name: str
    dim: int
    dtype: str
    metric: str
    count: int  # live documents
    bytes: int  # on disk, all its files
    shards: int
    deleted: int  # deleted rows still in shards, until a merge drops them
    unsealed: int  # documents in the log, not yet in a shard
