"""``FsstoreChatMessageHistory``: a LangChain chat message history kept as the messages
of an fsstore session (``session.messages``), one session per LangChain session id."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage

from ..errors import InvalidMessage, MessageExists
from ..message_types import Message, ToolResultPart, new_message_id
from ..session import Session
from ..store import Store
from .langchain_common import HandleOwner, SessionHandle, as_store
from .langchain_messages import history_messages, to_fsstore

__all__ = ["FsstoreChatMessageHistory"]

KIND = "lc-chat"
_WHERE = re.compile(r"^messages\[(\d+)\]")


class FsstoreChatMessageHistory(HandleOwner, BaseChatMessageHistory):
    """The chat history of LangChain session ``session_id`` (any str), kept in the store
    ``store`` (a :class:`~fsstore.Store` or a path) as the messages of the session
    ``session_id_for("lc-chat", session_id)``. Every message reads back equal to the
    one added; ``fsstore show``, ``usage()`` and ``stats()`` see the conversation as
    typed messages (docs/INTEGRATIONS.md, "LangChain").

    Any number of histories on one id, in one process or several, share the session.
    ``clear()`` empties the session's log. Use it as a context manager, or ``close()``
    it, to let go of the session's files."""

    def __init__(self, session_id: str, store: Store | str | os.PathLike[str]) -> None:
        self.session_id = session_id
        self._handle = SessionHandle(as_store(store), KIND, session_id)

    @property
    def fsstore_session_id(self) -> str:
        """The id of the fsstore session that holds this history."""
        return self._handle.session_id

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """Every message of the history, oldest first."""
        stored = self._handle.run(lambda session: session.messages.all())
        return history_messages(stored)

    async def aget_messages(self) -> list[BaseMessage]:
        stored = await self._handle.arun(lambda session: session.messages.all())
        return history_messages(stored)

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append ``messages`` as one batch (all of them or, after a crash, none).
        InvalidMessage, with nothing written, for a message that would not read back
        equal."""
        converted = _convert(messages)
        if converted:
            self._handle.run(lambda session: _append(session, converted))

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        converted = _convert(messages)
        if converted:
            await self._handle.arun(lambda session: _append(session, converted))

    def clear(self) -> None:
        """Empty the history (the session's log; seqs are never reused)."""
        self._handle.run(lambda session: session.clear())

    async def aclear(self) -> None:
        await self._handle.arun(lambda session: session.clear())


def _convert(messages: Sequence[BaseMessage]) -> list[tuple[BaseMessage, Message]]:
    """Each message with its fsstore form; a LangChain id repeated in the batch keeps
    its first fsstore id, the others get new ones (the LangChain id stays exact)."""
    seen: set[str] = set()
    result = []
    for message in list(messages):
        stored = to_fsstore(message)
        assert stored.id is not None
        if stored.id in seen:
            stored = to_fsstore(message, new_message_id())
        seen.add(stored.id or "")
        result.append((message, stored))
    return result


def _append(session: Session, batch: list[tuple[BaseMessage, Message]]) -> None:
    """Append the batch. A LangChain id the session already had (fsstore never reuses a
    message id) moves to a new fsstore id; a tool result whose call the session does
    not hold is stored as an orphan, as LangChain allows."""
    messages = [stored for _, stored in batch]
    for _ in range(2 * len(messages) + 1):
        try:
            session.messages.append_many(messages)
            return
        except MessageExists:
            messages = [to_fsstore(original, new_message_id())
                        if session.messages.exists(stored.id or "") else stored
                        for (original, _), stored in zip(batch, messages, strict=True)]
        except InvalidMessage as exc:
            if not exc.field.endswith(".call_id") or "no tool call" not in str(exc):
                raise
            found = _WHERE.match(str(exc))
            position = int(found.group(1)) if found else 0
            for part in messages[position].parts:
                if isinstance(part, ToolResultPart):
                    part.orphan = True
    session.messages.append_many(messages)
