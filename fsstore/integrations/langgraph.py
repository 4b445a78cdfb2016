"""fsstore for LangGraph: a checkpointer and a long-term memory store.

``FsstoreSaver`` (a ``BaseCheckpointSaver``) keeps each thread in an fsstore session;
``FsstoreStore`` (a ``BaseStore``) keeps namespaced items, with semantic search over a
vector collection. Needs the ``langgraph`` extra (``pip install 'fsstore[langgraph]'``);
``import fsstore`` never imports LangGraph. docs/INTEGRATIONS.md, "LangGraph", has the
on-disk layout.
"""

from __future__ import annotations

from .langgraph_checkpoint import FsstoreSaver, session_id_for, thread_session_id
from .langgraph_store import FsstoreStore, store_session_id

__all__ = ["FsstoreSaver", "FsstoreStore", "session_id_for", "store_session_id",
           "thread_session_id"]
