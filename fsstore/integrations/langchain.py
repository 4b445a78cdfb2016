"""fsstore for LangChain: a chat message history, key-value stores and a vector store.

Install with ``pip install 'fsstore[langchain]'``; ``import fsstore`` never imports
LangChain, this module does::

    from fsstore.integrations.langchain import (
        FsstoreByteStore, FsstoreChatMessageHistory, FsstoreVectorStore)

    history = FsstoreChatMessageHistory("user-42:chat/1", "agent-sessions")
    cache = FsstoreByteStore("agent-sessions", namespace="embeddings-cache")
    docs = FsstoreVectorStore(embeddings, "agent-sessions", name="docs")

Each LangChain id (a chat session id, a namespace, a vector store name: any str) gets a
session of its own, ``session_id_for(kind, id)``, with the id kept in the session's
metadata (docs/INTEGRATIONS.md, "LangChain").
"""

from __future__ import annotations

from .langchain_common import session_id_for
from .langchain_history import FsstoreChatMessageHistory
from .langchain_messages import from_fsstore, to_fsstore
from .langchain_stores import FsstoreByteStore, FsstoreStore
from .langchain_vectors import FsstoreVectorStore

__all__ = [
    "FsstoreByteStore",
    "FsstoreChatMessageHistory",
    "FsstoreStore",
    "FsstoreVectorStore",
    "from_fsstore",
    "session_id_for",
    "to_fsstore",
]
