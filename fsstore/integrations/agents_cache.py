"""The copy of the items read that FsstoreSession objects keep (fsstore.integrations.agents;
one per opened session, shared by the objects of a process on one id: agents_pool.py).

A ``Runner`` reads the session at every turn: the whole of it unless a limit is set.
Decoding whole messages each time costs far more than decoding the items' JSON texts
alone, so the copy keeps the items read as JSON text, in message order: the
newest messages of the session (all of them once it has read the whole session), with
the number of messages older than those (``base``). Before each read it brings the copy
up to date, at a cost that follows what changed:

- The session's ``revision`` first: when it has not moved since the copy was last found
  up to date, nothing was written (a message record, a clear, any record but queue,
  input and lease records moves it), and the copy serves as it is.
- Else ``messages.count()`` (one index row), then ``messages.page(after=NEWEST)``: the
  messages appended after the newest one the copy holds (that message may have been
  deleted since: a cursor may be).
- The copy is right when ``base``, its messages and the new ones add up to the count
  read first. They do not when a message was deleted (by another writer: this one drops
  what it pops), or a message came between the two reads: then the copy is read again.
  A delete after the count leaves the copy as the session was at the count, which is
  what a read then would have returned. A clear makes the cursor unknown
  (MessageNotFound): read again. A ``base`` taken while others wrote (the count and the
  read of the newest messages are two reads) fails the same sum at the next read.
- What the count does not show is an edit of a message the copy holds: FsstoreSession
  never edits, but another writer of the session's messages may. Such an edit is seen
  once the copy is read again (after any delete or clear, or by a new FsstoreSession).

A read of the last ``n`` items reads only the newest messages into the copy (eight more
than asked, twice as many while they give too few items), so a limited read of a long
session never reads all of it. Every read decodes the texts anew, so callers get
objects of their own, as from ``SQLiteSession``. A copy holds at most ``LIMIT``
messages: a longer session's whole reads are not kept.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ..errors import MessageNotFound
from ..message_types import Message
from ..session import Session
from ..turns import Revision

#: Messages a copy may hold.
LIMIT = 50_000
#: Messages beyond those asked for that a limited read puts in the copy, so that a few
#: pops do not send the next read back to the log.
_SLACK = 8


class ItemCache:
    """The newest messages' items as JSON texts, in message order, keyed by message id,
    and how many messages are older than those."""

    def __init__(self, texts_of: Callable[[Message], list[str]]) -> None:
        self._texts_of = texts_of
        self._texts: dict[str, list[str]] | None = None
        self._items = 0  # the texts the copy holds
        self._base = 0  # live messages older than the copy's first
        #: The session's revision read before the copy was last found up to date.
        self._revision: Revision | None = None
        self._lock = threading.Lock()

    def texts(self, session: Session, n: int | None) -> list[str] | None:
        """The JSON texts of every item (``n`` None) or of the last ``n``, oldest first,
        from the copy brought up to date; None when the session changed under three
        tries (read it directly)."""
        with self._lock:
            texts = self._update(session, n)
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

    def _covers(self, n: int | None) -> bool:
        return self._base == 0 or (n is not None and self._items >= n)

    def _update(self, session: Session, n: int | None) -> dict[str, list[str]] | None:
        messages = session.messages
        for _ in range(3):
            # Read first: what is written after it moves it again, so the next read
            # looks once more (a copy found up to date later than this is not harmed).
            revision = session.revision
            texts = self._texts
            if texts is not None and revision == self._revision and self._covers(n):
                return texts
            count = messages.count()
            if texts:
                newest = next(reversed(texts))
                try:
                    new = messages.page(after=newest, limit=count + 1)
                except MessageNotFound:  # cleared meanwhile
                    self._forget()
                    continue
                if self._base + len(texts) + len(new) != count:
                    self._forget()
                    continue
                for message in new:
                    self._keep(texts, str(message.id), self._texts_of(message))
                self._revision = revision
                if self._covers(n):
                    if len(texts) > LIMIT:
                        self._forget()
                    return texts
            found = self._read(session, count, n)
            if found is None:
                continue
            texts = {}
            self._texts, self._items, self._base = texts, 0, count - len(found)
            for message_id, message_texts in found:
                self._keep(texts, message_id, message_texts)
            if len(texts) > LIMIT:
                self._forget()
            else:
                self._revision = revision
            return texts
        self._forget()
        return None

    def _read(self, session: Session, count: int, n: int | None
              ) -> list[tuple[str, list[str]]] | None:
        """Every message's texts (``n`` None, or a short session), or the newest
        messages' holding ``n`` items; None when a whole read disagrees with the count
        read before it (a message came or went meanwhile)."""
        messages = session.messages
        window = n + _SLACK if n is not None else count
        if n is None or count <= window:
            everything = messages.all()
            if len(everything) != count:
                return None
            return [(str(m.id), self._texts_of(m)) for m in everything]
        while True:
            newest = messages.last(window)
            found = [(str(m.id), self._texts_of(m)) for m in newest]
            if len(newest) < window or sum(len(texts) for _, texts in found) >= n:
                return found
            window *= 2

    def _keep(self, texts: dict[str, list[str]], message_id: str,
              message_texts: list[str]) -> None:
        texts[message_id] = message_texts
        self._items += len(message_texts)

    def _forget(self) -> None:
        self._texts, self._items, self._base, self._revision = None, 0, 0, None

    def appended(self, session: Session, messages: list[Message]) -> None:
        """This writer appended ``messages`` (one batch): the copy takes them when
        nothing else was written since it was up to date, nor after them (the batch
        follows the revision's seq, and the revision is now the batch's last seq, of
        the same log start: a clear moves that and takes no seq). Else the next read
        brings the copy up to date."""
        with self._lock:
            texts, known = self._texts, self._revision
            if texts is None or known is None or not messages \
                    or messages[0].seq != known.seq + 1 or len(texts) >= LIMIT:
                return
            after = session.revision
            if after != Revision(known.log_start, messages[-1].seq or 0):
                return
            for message in messages:
                self._keep(texts, str(message.id), self._texts_of(message))
            self._revision = after

    def popped(self, message_id: str) -> None:
        """This writer deleted ``message_id``: the copy drops it."""
        with self._lock:
            if self._texts is not None:
                found = self._texts.pop(message_id, None)
                self._items -= 0 if found is None else len(found)
                self._revision = None  # the pop's record moved it

    def forget(self) -> None:
        """The session was cleared (or is closed): read it again when next asked."""
        with self._lock:
            self._forget()
