"""Checks of what callers pass in: collection names, document ids, documents, queries,
result counts and score bounds. Each refuses with the error of its kind, naming the
value, before anything is written or searched."""

from __future__ import annotations

import math
import numbers
import reprlib
from collections.abc import Mapping
from typing import Any, NamedTuple

import msgspec
import numpy as np

from .. import layout
from ..errors import InvalidCollection, InvalidDocument, InvalidQuery
from .shard_files import DTYPES, MAX_ID_BYTES, check_value
from .types import MAX_DOC_BYTES, DistanceMetric, VectorDocument

_encoder = msgspec.msgpack.Encoder()


def check_collection_name(name: object) -> str:
    """Collection names follow the session id rule (they name a folder)."""
    try:
        return layout.check_session_id(name)
    except Exception as exc:
        raise InvalidCollection(str(exc).replace("session id", "collection name")) from None


def as_vectors(value: Any, dim: int, what: str, error: type[Exception],
                dtype: np.dtype = DTYPES["float32"]) -> np.ndarray:
    """``value`` as an array of ``dtype`` of shape (dim,) or (n, dim), all finite."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise error(f"{what}: not an array of numbers ({exc})") from None
    if array.dtype.kind not in "fiu":
        raise error(f"{what}: must hold real numbers, not {array.dtype}")
    if array.ndim not in (1, 2) or array.shape[-1] != dim:
        raise error(f"{what}: has shape {array.shape}; the collection's dimension is {dim}")
    with np.errstate(over="ignore", invalid="ignore"):
        converted = np.ascontiguousarray(array, dtype=dtype)
    if not np.isfinite(converted).all():
        bad = "NaN or infinite values" if np.issubdtype(array.dtype, np.floating) and \
            not np.isfinite(array).all() else f"values too large for {dtype.name}"
        raise error(f"{what}: holds {bad}")
    return converted


class Row(NamedTuple):
    """A validated document, ready to store."""

    id: str
    vector: np.ndarray  # (dim,) in the collection's dtype
    content: bytes  # msgpack
    metadata: bytes  # msgpack map
    seq: int  # -1: none
    turn: int  # -1: none


def _check_link(value: Any, name: str, doc_id: str) -> int:
    if value is None:
        return -1
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise InvalidDocument(f"document {doc_id!r}: {name} must be an int >= 0 or None, "
                              f"not {value!r}")
    return value


def check_id(doc_id: object, error: type[Exception] = InvalidDocument) -> str:
    if not isinstance(doc_id, str) or not doc_id:
        raise error(f"document id must be a non-empty str, not {doc_id!r}")
    if len(doc_id.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        raise error(f"document id {doc_id[:40]!r}... is over {MAX_ID_BYTES} bytes")
    try:
        doc_id.encode()
    except UnicodeEncodeError:
        raise error(f"document id {doc_id!r} is not valid unicode (lone surrogate)") from None
    return doc_id


def validate_document(doc: VectorDocument | Mapping[str, Any], dim: int, dtype: np.dtype) -> Row:
    if isinstance(doc, Mapping):
        unknown = set(doc) - {"id", "embedding", "content", "metadata", "seq", "turn"}
        if unknown or "id" not in doc or "embedding" not in doc:
            raise InvalidDocument(f"a document needs 'id' and 'embedding' (and may have "
                                  f"content, metadata, seq, turn); got keys {sorted(doc)}")
        doc = VectorDocument(**doc)
    elif not isinstance(doc, VectorDocument):
        raise InvalidDocument(f"expected a VectorDocument or a mapping, not "
                              f"{type(doc).__name__}")
    doc_id = check_id(doc.id)
    vector = as_vectors(doc.embedding, dim, f"document {doc_id!r} embedding",
                         InvalidDocument, dtype)
    if vector.ndim != 1:
        raise InvalidDocument(f"document {doc_id!r}: embedding must be one vector")
    if doc.content is not None and not isinstance(doc.content, str):
        raise InvalidDocument(f"document {doc_id!r}: content must be a str or None")
    if doc.content is not None:
        check_value(doc.content, f"document {doc_id!r} content")
    metadata = doc.metadata if doc.metadata is not None else {}
    if not isinstance(metadata, Mapping):
        raise InvalidDocument(f"document {doc_id!r}: metadata must be a dict")
    for key in metadata:
        if not isinstance(key, str) or key.startswith("$"):
            raise InvalidDocument(f"document {doc_id!r}: metadata key {key!r} must be a "
                                  "str not starting with '$' (reserved for filters)")
    metadata = dict(metadata)
    # Only what reads back equal: a reader refuses extension types, msgspec.Raw would be
    # written unchecked, and nesting is bounded (shard_files.check_value).
    check_value(metadata, f"document {doc_id!r} metadata")
    try:
        content = _encoder.encode(doc.content)
        meta = _encoder.encode(metadata)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidDocument(f"document {doc_id!r}: metadata cannot be stored as msgpack "
                              f"({exc})") from None
    if len(content) + len(meta) > MAX_DOC_BYTES:
        raise InvalidDocument(f"document {doc_id!r}: content and metadata encode to "
                              f"{len(content) + len(meta)} bytes, over {MAX_DOC_BYTES}; keep "
                              "large payloads as attachments")
    return Row(doc_id, vector, content, meta, _check_link(doc.seq, "seq", doc_id),
                _check_link(doc.turn, "turn", doc_id))


def check_k(k: object) -> int:
    """``k`` if it is a result count a search takes, else InvalidQuery."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidQuery(f"k must be an int >= 1, not {k!r}")
    return k


def as_list(values: Any, what: str) -> list[Any]:
    """``values`` as a list, refusing a single str, bytes, mapping or document (a caller
    who meant a list of one)."""
    if isinstance(values, (str, bytes, Mapping, VectorDocument)):
        raise InvalidQuery(f"{what} must be a list, not a single {type(values).__name__}")
    try:
        return list(values)
    except TypeError:
        raise InvalidQuery(f"{what} must be a list, not {type(values).__name__}") from None


class ScoreBound(NamedTuple):
    """The worst score a search keeps, and which way is worse."""

    limit: float
    lower_is_better: bool

    def keeps(self, score: float) -> bool:
        """Whether ``score`` is within the bound; a score equal to it is kept."""
        return score <= self.limit if self.lower_is_better else score >= self.limit


def check_score_bound(metric: DistanceMetric, min_score: object, max_distance: object
                      ) -> ScoreBound | None:
    """The bound a search keeps results within. ``min_score`` bounds the similarities
    (cosine, dot: higher is better) from below, ``max_distance`` the euclidean distance
    (lower is better) from above; each is refused under the other kind of metric, where
    it would silently keep the wrong end."""
    for name, value in (("min_score", min_score), ("max_distance", max_distance)):
        if value is None:
            continue
        try:
            usable = not isinstance(value, bool) and isinstance(value, numbers.Real) and \
                not math.isnan(float(value))
        except OverflowError:  # an int past float's range: no score reaches it
            usable = False
        if not usable:
            raise InvalidQuery(f"{name} must be a number (not NaN) within float's range, "
                               f"or None; not {reprlib.repr(value)}")
    if min_score is not None and metric.lower_is_better:
        raise InvalidQuery(f"min_score does not apply to metric {metric.value}: its score is "
                           "a distance, lower is better; use max_distance")
    if max_distance is not None and not metric.lower_is_better:
        raise InvalidQuery(f"max_distance does not apply to metric {metric.value}: its score "
                           "is a similarity, higher is better; use min_score")
    if max_distance is not None:
        assert isinstance(max_distance, numbers.Real)
        if float(max_distance) < 0:
            raise InvalidQuery(f"max_distance must be >= 0 (a distance), not {max_distance!r}")
        return ScoreBound(float(max_distance), True)
    if min_score is not None:
        assert isinstance(min_score, numbers.Real)
        return ScoreBound(float(min_score), False)
    return None
