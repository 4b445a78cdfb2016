"""fsstore for LangGraph: a checkpointer and a long-term memory store.

``FsstoreSaver`` (a ``BaseCheckpointSaver``) keeps each thread in an fsstore session;
``FsstoreStore`` (a ``BaseStore``) keeps namespaced items, with semantic search over a
vector collection. Needs the ``langgraph`` extra (``pip install 'fsstore[langgraph]'``);
``import fsstore`` never imports LangGraph. docs/INTEGRATIONS.md, "LangGraph", has the
on-disk layout.
"""

from __future__ import annotations

from .langgraph_checkpoint import FsstoreSaver, session_id_for, thread_session_id

__all__ = ["FsstoreSaver", "session_id_for", "thread_session_id"]
