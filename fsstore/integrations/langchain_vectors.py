"""``FsstoreVectorStore``: a LangChain vector store over a vector collection of an fsstore
session (``fsstore/vectors/``), one session per vector store name.

A LangChain document is a collection document: its id is the document id (any
non-empty str: ids are never paths), its ``page_content`` the content, its metadata the
metadata, stored and given back exactly (a value that would not read back equal is
refused). Search is fsstore's exact search; ``filter=`` takes its filter operators
(``$eq``, ``$in``, ``$gte``, ``$and``, ...), the ones Chroma takes.

Several writers: vector stores on one name in one process share one open session, hence
one collection writer; in several processes, each opens the session shared, and its
collection takes in what the others wrote before every call, under the session's mutex
(``VectorCollection.catch_up``), so every process sees and keeps every document. A
collection another process dropped (``delete()`` without ids) is made again at the next
add.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from langchain_core.vectorstores.utils import maximal_marginal_relevance

from ..errors import CollectionNotFound, InvalidDocument, InvalidSetting
from ..session import Session
from ..store import Store
from ..vectors import DistanceMetric, VectorCollection, VectorDocument, VectorSearchResult
from .langchain_common import HandleOwner, SessionHandle, as_store, exact_msgpack

__all__ = ["FsstoreVectorStore"]

KIND = "lc-vectors"
#: The collection's name in its session (the session is the vector store's own).
COLLECTION = "langchain"


class FsstoreVectorStore(HandleOwner, VectorStore):
    """A LangChain vector store named ``name`` (any str) in the store ``store`` (a
    :class:`~fsstore.Store` or a path): the collection ``langchain`` of the session
    ``session_id_for("lc-vectors", name)``, embedded by ``embedding``. The collection
    is made at the first add, with the dimension of the first embeddings and ``metric``
    (``cosine``, ``dot`` or ``euclidean``).

    Scores: ``similarity_search_with_score`` gives the metric's own score (cosine
    similarity or dot product, higher is better; euclidean distance, lower is better);
    ``similarity_search_with_relevance_scores`` maps it to 0..1, higher is better.
    Vector stores on one name share the collection: in one process through one open
    session, across processes through the session's mutex, each call catching up with
    what the others wrote."""

    def __init__(self, embedding: Embeddings, store: Store | str | os.PathLike[str],
                 name: str = "default", *, metric: DistanceMetric | str = "cosine") -> None:
        self.embedding = embedding
        self.name = name
        self.metric = DistanceMetric.of(metric, InvalidSetting)
        self._handle = SessionHandle(as_store(store), KIND, name)

    @property
    def embeddings(self) -> Embeddings:
        return self.embedding

    @property
    def fsstore_session_id(self) -> str:
        """The id of the fsstore session that holds this vector store."""
        return self._handle.session_id

    # --- writes ---

    def add_texts(self, texts: Iterable[str], metadatas: list[dict[str, Any]] | None = None,
                  *, ids: Sequence[str | None] | None = None, **kwargs: Any) -> list[str]:
        """Embed and store ``texts`` (with ``metadatas`` and ``ids``; a missing id is a
        new uuid4, an existing one is replaced) in one atomic upsert; return the ids."""
        texts = list(texts)
        ids, metadatas = _prepare(texts, metadatas, ids)
        vectors = self.embedding.embed_documents(texts) if texts else []
        return self._handle.run(lambda session: self._upsert(session, texts, metadatas,
                                                             ids, vectors))

    async def aadd_texts(self, texts: Iterable[str],
                         metadatas: list[dict[str, Any]] | None = None, *,
                         ids: Sequence[str | None] | None = None, **kwargs: Any
                         ) -> list[str]:
        texts = list(texts)
        ids, metadatas = _prepare(texts, metadatas, ids)
        vectors = await self.embedding.aembed_documents(texts) if texts else []
        return await self._handle.arun(lambda session: self._upsert(session, texts,
                                                                    metadatas, ids, vectors))

    def add_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        """Store ``documents`` (their ids, or ``ids=``, or new uuid4s)."""
        texts, metadatas, ids = _unpack(documents, kwargs.pop("ids", None))
        return self.add_texts(texts, metadatas, ids=ids, **kwargs)

    async def aadd_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        texts, metadatas, ids = _unpack(documents, kwargs.pop("ids", None))
        return await self.aadd_texts(texts, metadatas, ids=ids, **kwargs)

    def _upsert(self, session: Session, texts: list[str], metadatas: list[dict[str, Any]],
                ids: list[str], vectors: Sequence[Sequence[float]]) -> list[str]:
        if not texts:
            return []
        matrix = np.asarray(vectors, dtype=np.float32)
        if matrix.ndim != 2 or len(matrix) != len(texts):
            raise InvalidDocument(f"{self.name!r}: the embeddings gave {matrix.shape} for "
                                  f"{len(texts)} texts; expected one vector per text")
        collection = self._collection(session, create_dim=matrix.shape[1])
        assert collection is not None
        collection.upsert([VectorDocument(doc_id, vector, content=text, metadata=metadata)
                           for doc_id, vector, text, metadata
                           in zip(ids, matrix, texts, metadatas, strict=True)])
        return ids

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete documents by id (ids not there are ignored); with no ids, all of them
        (the collection is dropped)."""
        return self._handle.run(lambda session: self._delete(session, ids))

    async def adelete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        return await self._handle.arun(lambda session: self._delete(session, ids))

    def _delete(self, session: Session, ids: list[str] | None) -> bool:
        if ids is None:
            with session.operation():  # no other process's drop between look and drop
                if self._collection(session) is not None:
                    session.drop_collection(COLLECTION)
            return True
        ids = _check_ids(ids)
        collection = self._collection(session)
        if collection is not None and ids:
            collection.delete(ids)
        return True

    # --- reads ---

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The documents of ``ids`` that are there, in the order of ``ids``."""
        return self._handle.run(lambda session: self._get(session, ids))

    async def aget_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        return await self._handle.arun(lambda session: self._get(session, ids))

    def _get(self, session: Session, ids: Sequence[str]) -> list[Document]:
        ids = _check_ids(ids)
        collection = self._collection(session)
        if collection is None or not ids:
            return []
        return [Document(id=found.id, page_content=found.content or "",
                         metadata=found.metadata)
                for found in collection.get(ids) if found is not None]

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return [doc for doc, _ in self.similarity_search_with_score(query, k, **kwargs)]

    async def asimilarity_search(self, query: str, k: int = 4, **kwargs: Any
                                 ) -> list[Document]:
        return [doc for doc, _ in await self.asimilarity_search_with_score(query, k, **kwargs)]

    def similarity_search_with_score(self, query: str, k: int = 4, **kwargs: Any
                                     ) -> list[tuple[Document, float]]:
        """The ``k`` documents nearest ``query``, best first, with the metric's score;
        ``filter=`` an fsstore filter on the metadata."""
        return self._scored(self.embedding.embed_query(query), k, kwargs.get("filter"))

    async def asimilarity_search_with_score(self, query: str, k: int = 4, **kwargs: Any
                                            ) -> list[tuple[Document, float]]:
        vector = await self.embedding.aembed_query(query)
        return await asyncio.to_thread(self._scored, vector, k, kwargs.get("filter"))

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4, **kwargs: Any
                                    ) -> list[Document]:
        return [doc for doc, _ in self._scored(embedding, k, kwargs.get("filter"))]

    async def asimilarity_search_by_vector(self, embedding: list[float], k: int = 4,
                                           **kwargs: Any) -> list[Document]:
        scored = await asyncio.to_thread(self._scored, embedding, k, kwargs.get("filter"))
        return [doc for doc, _ in scored]

    def similarity_search_with_score_by_vector(self, embedding: list[float], k: int = 4,
                                               **kwargs: Any) -> list[tuple[Document, float]]:
        return self._scored(embedding, k, kwargs.get("filter"))

    def _scored(self, vector: Sequence[float], k: int, filter: Any
                ) -> list[tuple[Document, float]]:
        hits = self._handle.run(lambda session: self._search(session, vector, k, filter))
        return [(_document(hit), hit.score) for hit in hits]

    def _search(self, session: Session, vector: Sequence[float], k: int, filter: Any
                ) -> list[VectorSearchResult]:
        collection = self._collection(session)
        if collection is None or collection.count() == 0:
            return []
        return collection.search(np.asarray(vector, dtype=np.float32), k=k, filter=filter,
                                 metric=self.metric)

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """Cosine similarity and dot product (of normalised vectors) from -1..1 to
        0..1; a euclidean distance as LangChain maps it."""
        if self.metric is DistanceMetric.EUCLIDEAN:
            return self._euclidean_relevance_score_fn
        return lambda score: (score + 1.0) / 2.0

    def max_marginal_relevance_search(self, query: str, k: int = 4, fetch_k: int = 20,
                                      lambda_mult: float = 0.5, **kwargs: Any
                                      ) -> list[Document]:
        """``k`` documents among the ``fetch_k`` nearest ``query``, chosen for both
        nearness and diversity (``lambda_mult`` 1: nearness only, 0: diversity only)."""
        return self.max_marginal_relevance_search_by_vector(
            self.embedding.embed_query(query), k, fetch_k, lambda_mult, **kwargs)

    async def amax_marginal_relevance_search(self, query: str, k: int = 4,
                                             fetch_k: int = 20, lambda_mult: float = 0.5,
                                             **kwargs: Any) -> list[Document]:
        vector = await self.embedding.aembed_query(query)
        return await self.amax_marginal_relevance_search_by_vector(
            vector, k, fetch_k, lambda_mult, **kwargs)

    def max_marginal_relevance_search_by_vector(
            self, embedding: list[float], k: int = 4, fetch_k: int = 20,
            lambda_mult: float = 0.5, **kwargs: Any) -> list[Document]:
        return self._handle.run(lambda session: self._mmr(
            session, embedding, k, fetch_k, lambda_mult, kwargs.get("filter")))

    async def amax_marginal_relevance_search_by_vector(
            self, embedding: list[float], k: int = 4, fetch_k: int = 20,
            lambda_mult: float = 0.5, **kwargs: Any) -> list[Document]:
        return await self._handle.arun(lambda session: self._mmr(
            session, embedding, k, fetch_k, lambda_mult, kwargs.get("filter")))

    def _mmr(self, session: Session, embedding: Sequence[float], k: int, fetch_k: int,
             lambda_mult: float, filter: Any) -> list[Document]:
        # One operation: no other process's delete between the search and the get of
        # the hits' vectors.
        with session.operation():
            return self._mmr_of(session, embedding, k, fetch_k, lambda_mult, filter)

    def _mmr_of(self, session: Session, embedding: Sequence[float], k: int, fetch_k: int,
                lambda_mult: float, filter: Any) -> list[Document]:
        hits = self._search(session, embedding, max(fetch_k, k), filter)
        if not hits:
            return []
        collection = self._collection(session)
        assert collection is not None
        stored = collection.get([hit.id for hit in hits])
        vectors = np.stack([np.asarray(doc.embedding, dtype=np.float32)
                            for doc in stored if doc is not None])
        chosen = maximal_marginal_relevance(np.asarray(embedding, dtype=np.float32),
                                            list(vectors), lambda_mult=lambda_mult, k=k)
        return [_document(hits[index]) for index in chosen]

    # --- construction ---

    @classmethod
    def from_texts(cls, texts: list[str], embedding: Embeddings,
                   metadatas: list[dict[str, Any]] | None = None, *,
                   ids: list[str] | None = None, **kwargs: Any) -> FsstoreVectorStore:
        """A vector store (``store=`` and ``name=`` as for the constructor) holding
        ``texts``."""
        if "store" not in kwargs:
            raise InvalidSetting("FsstoreVectorStore.from_texts needs store= (an "
                                 "fsstore.Store or a path)")
        vectorstore = cls(embedding, kwargs.pop("store"), kwargs.pop("name", "default"),
                          metric=kwargs.pop("metric", "cosine"))
        vectorstore.add_texts(texts, metadatas, ids=ids)
        return vectorstore

    def _collection(self, session: Session, create_dim: int | None = None
                    ) -> VectorCollection | None:
        """The collection; made with ``create_dim`` dimensions when it is not there
        and a dimension is given, else None when it is not there."""
        # One operation: another process cannot make it between the look and the make.
        with session.operation():
            try:
                return session.collection(COLLECTION)
            except CollectionNotFound:
                if create_dim is None:
                    return None
            return session.create_collection(COLLECTION, dim=create_dim, metric=self.metric)


def _document(hit: VectorSearchResult) -> Document:
    return Document(id=hit.id, page_content=hit.content or "", metadata=hit.metadata)


def _check_ids(ids: Sequence[str]) -> list[str]:
    if isinstance(ids, str):
        raise InvalidDocument("ids is a list of str ids, not a single str")
    return list(ids)


def _unpack(documents: list[Document], ids: list[str | None] | None
            ) -> tuple[list[str], list[dict[str, Any]], list[str | None]]:
    if ids is None:
        ids = [document.id for document in documents]
    return ([document.page_content for document in documents],
            [document.metadata for document in documents], list(ids))


def _prepare(texts: list[str], metadatas: list[dict[str, Any]] | None,
             ids: Sequence[str | None] | None) -> tuple[list[str], list[dict[str, Any]]]:
    """The ids (a missing one a new uuid4) and the metadata of each text, checked to
    read back exactly as given; nothing is embedded or written when one is refused."""
    count = len(texts)
    given = list(ids) if ids is not None else [None] * count
    metadata = list(metadatas) if metadatas is not None else [{} for _ in range(count)]
    if len(given) != count or len(metadata) != count:
        raise InvalidDocument(f"{count} texts, {len(given)} ids and {len(metadata)} "
                              "metadatas: give one of each per text")
    for number, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidDocument(f"texts[{number}] is a {type(text).__name__}, not a str")
        if not isinstance(metadata[number], dict) or exact_msgpack(metadata[number]) is None:
            raise InvalidDocument(
                f"metadatas[{number}] would not read back equal: give a dict of str keys "
                "to None, bool, int, float, str, bytes, lists and dicts (a tuple reads "
                "back as a list)")
    return [str(uuid.uuid4()) if doc_id is None else doc_id for doc_id in given], metadata
