"""FsstoreSession's copy of the items it has read (fsstore.integrations.agents).

A ``Runner`` reads the whole session at every turn unless a limit is set. Decoding every
message of the session each time costs far more than decoding the items' JSON texts
alone, so an FsstoreSession keeps, once it has read the whole session, each message's
items as JSON text in message order, and brings the copy up to date before each read
through the message index, at a cost that follows what changed:

- The session's ``revision`` first: when it has not moved since the copy was last
  brought up to date, nothing was written (a message record, a clear, any record but
  queue, input and lease records moves it), and the copy serves as it is.
- Else ``messages.count()`` (one index row), then ``messages.page(after=NEWEST)``: the
  messages appended after the newest one the copy holds (that message may have been
  deleted since: a cursor may be).
- The copy is right when its messages and the new ones add up to the count read first.
  They do not when a message of the copy was deleted (by another writer: this one
  drops what it pops), or a message came between the two reads: then the whole session
  is read again. A delete after the count leaves the copy as the session was at the
  count, which is what a read then would have returned. A clear makes the cursor
  unknown (MessageNotFound): read again.
- What the count does not show is an edit of a message the copy holds: FsstoreSession
  never edits, but another writer of the session's messages may. Such an edit is seen
  once the copy is read again (after any delete or clear, or by a new FsstoreSession).

Every read decodes the texts anew, so callers get objects of their own, as from
``SQLiteSession``. Sessions of more than ``LIMIT`` messages are not copied.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ..errors import MessageNotFound
from ..message_types import Message
from ..session import Session
from ..turns import Revision

#: Messages a copy may hold: a longer session is read from the store each time.
LIMIT = 50_000


class ItemCache:
    """Each message's items as JSON texts, in message order, keyed by message id."""

    def __init__(self, texts_of: Callable[[Message], list[str]]) -> None:
        self._texts_of = texts_of
        self._texts: dict[str, list[str]] | None = None
        #: The session's revision read before the copy was last found up to date.
        self._revision: Revision | None = None
        self._lock = threading.Lock()

    def texts(self, session: Session, n: int | None) -> list[str] | None:
        """The JSON texts of every item (``n`` None) or of the last ``n``, oldest first,
        from the copy brought up to date. None when the copy cannot serve: the session
        changed under three tries, or, for ``n`` items, there is no copy yet (only a
        whole read makes one, so that a limited read of a long session never reads all
        of it)."""
        with self._lock:
            if n is not None and not self._texts:
                return None
            texts = self._update(session)
            if texts is None:
                return None
            if n is None:
                return [text for found in texts.values() for text in found]
            last: list[str] = []
            for found in reversed(texts.values()):
                last.extend(reversed(found))
                if len(last) >= n:
                    break
            last.reverse()
            return last[-n:] if n else []

    def _update(self, session: Session) -> dict[str, list[str]] | None:
        messages = session.messages
        for _ in range(3):
            # Read first: what is written after it moves it again, so the next read
            # looks once more (a copy found up to date later than this is not harmed).
            revision = session.revision
            texts = self._texts
            if texts and revision == self._revision:
                return texts
            count = messages.count()
            if texts:
                newest = next(reversed(texts))
                try:
                    new = messages.page(after=newest, limit=count + 1)
                except MessageNotFound:  # cleared meanwhile
                    self._texts = None
                    continue
                if len(texts) + len(new) == count:
                    for message in new:
                        texts[str(message.id)] = self._texts_of(message)
                    self._revision = revision
                    return texts
                self._texts = None
                continue
            everything = messages.all()
            if len(everything) != count:
                continue
            texts = {str(message.id): self._texts_of(message) for message in everything}
            if count <= LIMIT:
                self._texts, self._revision = texts, revision
            return texts
        return None

    def appended(self, session: Session, messages: list[Message]) -> None:
        """This writer appended ``messages`` (one batch): the copy takes them when
        nothing else was written since it was up to date, nor after them (the batch
        follows the revision's seq, and the revision is now the batch's last seq, of
        the same log start: a clear moves that and takes no seq). Else the next read
        brings the copy up to date."""
        with self._lock:
            texts, known = self._texts, self._revision
            if texts is None or known is None or not messages \
                    or messages[0].seq != known.seq + 1:
                return
            after = session.revision
            if after != Revision(known.log_start, messages[-1].seq or 0):
                return
            for message in messages:
                texts[str(message.id)] = self._texts_of(message)
            self._revision = after

    def popped(self, message_id: str) -> None:
        """This writer deleted ``message_id``: the copy drops it."""
        with self._lock:
            if self._texts is not None:
                self._texts.pop(message_id, None)
                self._revision = None  # the pop's record moved it

    def forget(self) -> None:
        """The session was cleared (or is closed): read it again when next asked."""
        with self._lock:
            self._texts = self._revision = None
