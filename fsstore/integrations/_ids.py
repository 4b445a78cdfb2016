"""Framework ids to fsstore session ids, and their sessions made, for every adapter.

A framework's ids (LangGraph thread ids, Agents SDK session ids, LangChain session ids,
namespaces and names) are arbitrary strs: colons, slashes, ``..``, control characters.
None of them ever reaches a path. Each maps to ``KIND-READABLE-DIGEST``: the adapter's
kind (``lg-thread``, ``agents``, ``lc-chat``, ...), up to 40 characters of the id with
every run of characters a session id cannot hold made ``_`` (for a person reading
``fsstore ls``), and the first 32 hex digits of SHA-256 over the kind, a NUL and the id
(UTF-8), so two ids, or one id of two kinds, never share a session unless their
digests collide. The id itself is kept in the session's metadata, ``{"framework": ...,
"framework_id": ...}``, which is how listings find it (docs/INTEGRATIONS.md). An id
holding a lone surrogate (not text UTF-8 can hold) still maps to a digest, but metadata
cannot keep it: making its session raises InvalidMetadata, and nothing is written.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import InvalidSessionId, SessionExists, SessionLocked
from ..layout import check_session_id

if TYPE_CHECKING:
    from ..store import Store

_KIND = re.compile(r"[a-z][a-z0-9-]{0,30}")
_UNSAFE = re.compile(r"[^A-Za-z0-9_]+")
_READABLE = 40


def session_id_for(kind: str, framework_id: str) -> str:
    """The fsstore session id of the framework id ``framework_id`` of ``kind``."""
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise InvalidSessionId(f"kind must be 1 to 31 of a-z 0-9 -, starting with a letter, "
                               f"not {kind!r}")
    if not isinstance(framework_id, str):
        raise InvalidSessionId(f"a {kind} id must be a str, not "
                               f"{type(framework_id).__name__}")
    digest = hashlib.sha256(f"{kind}\x00{framework_id}".encode("utf-8", "surrogatepass"))
    readable = _UNSAFE.sub("_", framework_id)[:_READABLE].strip("_")
    return check_session_id("-".join(filter(None, (kind, readable,
                                                   digest.hexdigest()[:32]))), new=True)


def ensure_session(store: Store, session_id: str, *, metadata: Mapping[str, Any],
                   title: str | None = None) -> None:
    """Make session ``session_id`` unless it is there; the adapters then open it
    shared. ``create_session`` opens what it makes exclusively: another process that
    made it first (SessionExists), or opened it shared between its making and that open
    (SessionLocked), leaves the same session there, which is all that is asked."""
    if store.has_session(session_id):
        return
    try:
        store.create_session(session_id, title=title, metadata=metadata).close()
    except (SessionExists, SessionLocked):
        pass
