"""Listing a store's sessions with filters, an order and pages (``Store.list_page``,
``Store.list_sessions`` with arguments), answered from the store catalog
(fsstore/catalog.py) so that a page costs the same in a store of 100,000 sessions as in
one of 100.

A cursor is opaque to callers: urlsafe base64 of the JSON ``[order, descending, key,
id]`` of the last row of a page. The next page starts after that position in the
order, not at a row number, so sessions added or removed between two pages never
shift it: no row is shown twice and none that was there throughout is skipped (a
session whose ``updated`` changes between pages moves in that order, and may be seen
twice or not at all, as in any listing by a changing key).
"""

from __future__ import annotations

import base64
import functools
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from . import layout
from .catalog import Catalog, Entry, SnapshotDamaged, View, info_of, metadata_of
from .errors import FsStoreError, InvalidListing, SessionNotFound
from .session_reader import SessionInfo, SessionReader

if TYPE_CHECKING:
    from .fsio import FileIO
    from .workspaces import Workspace

ORDERS = ("updated", "created", "id")
#: A time bound of a listing: a datetime (naive: UTC), ISO 8601 text or epoch seconds.
When = datetime | str | float | None


@dataclass(frozen=True)
class SessionPage:
    """One page of a listing: its sessions, and the cursor of the next page (None when
    this is the last)."""

    sessions: list[SessionInfo]
    next_cursor: str | None = None


@dataclass
class Filters:
    """What a listing keeps, checked: see ``Store.list_sessions``."""

    tags: frozenset[str] = frozenset()
    title: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    created_after: float | None = None
    created_before: float | None = None
    updated_after: float | None = None
    updated_before: float | None = None
    members: frozenset[str] | None = None
    has_collection: bool | str | None = None

    def keeps(self, entry: Entry) -> bool:
        if self.tags and not self.tags.issubset(entry.tags):
            return False
        if self.title is not None and self.title not in (entry.title or "").casefold():
            return False
        if self.members is not None and entry.id not in self.members:
            return False
        for bound, value, after in ((self.created_after, entry.created, True),
                                    (self.created_before, entry.created, False),
                                    (self.updated_after, entry.updated, True),
                                    (self.updated_before, entry.updated, False)):
            if bound is not None and (value <= bound if after else value >= bound):
                return False
        if self.metadata:
            held = metadata_of(entry)
            if any(key not in held or held[key] != want for key, want in self.metadata.items()):
                return False
        return True


def check_filters(*, tags: Iterable[str] | str | None, title: str | None,
                  metadata: Mapping[str, Any] | None, created_after: Any, created_before: Any,
                  updated_after: Any, updated_before: Any, has_collection: bool | str | None,
                  ) -> Filters:
    """The filters, checked; InvalidListing naming the first one refused."""
    if isinstance(tags, str):
        tags = [tags]
    found = Filters()
    if tags is not None:
        tags = list(tags)
        if not all(isinstance(tag, str) for tag in tags):
            raise InvalidListing(f"tags must be strs, got {tags!r}")
        found.tags = frozenset(tags)
    if title is not None:
        if not isinstance(title, str):
            raise InvalidListing(f"title must be a str, got {type(title).__name__}")
        found.title = title.casefold()
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            raise InvalidListing(f"metadata must be a mapping of keys to the values "
                                 f"wanted, got {type(metadata).__name__}")
        found.metadata = dict(metadata)
    found.created_after = epoch(created_after, "created_after")
    found.created_before = epoch(created_before, "created_before")
    found.updated_after = epoch(updated_after, "updated_after")
    found.updated_before = epoch(updated_before, "updated_before")
    if has_collection is not None and not isinstance(has_collection, (bool, str)):
        raise InvalidListing("has_collection must be a bool or a collection name, got "
                             f"{type(has_collection).__name__}")
    found.has_collection = has_collection
    return found


def epoch(value: Any, name: str) -> float | None:
    """Seconds since the epoch of a datetime (naive: UTC), an ISO 8601 str or a number
    of seconds; InvalidListing naming ``name`` for anything else."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise InvalidListing(f"{name}: {value!r} is no time")
        return float(value)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidListing(f"{name}: {value!r} is not an ISO 8601 date or time "
                                 "(such as 2026-11-21 or 2026-11-21T05:52:12Z)") from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return float(value.timestamp())
    raise InvalidListing(f"{name} must be a datetime or an ISO 8601 str, got "
                         f"{type(value).__name__}")


def order_of(order: str, descending: bool | None) -> tuple[str, bool]:
    if order not in ORDERS:
        raise InvalidListing(f"order {order!r} is unknown: use one of {', '.join(ORDERS)}")
    if descending is None:
        descending = order != "id"  # newest first; ids as today
    if not isinstance(descending, bool):
        raise InvalidListing(f"descending must be a bool, got {type(descending).__name__}")
    return order, descending


def encode_cursor(order: str, descending: bool, key: float | str, session_id: str) -> str:
    raw = json.dumps([order, descending, key, session_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, order: str, descending: bool) -> tuple[float | str, str]:
    """The position a cursor stands for; InvalidListing when it is malformed or was
    made for another order or direction."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        made_order, made_descending, key, session_id = json.loads(raw)
        layout.check_session_id(session_id)
    except (TypeError, ValueError, UnicodeDecodeError):
        raise InvalidListing(f"cursor {cursor[:40]!r} is malformed: pass the next_cursor "
                             "of a page as it was given") from None
    if made_order != order or made_descending != descending:
        way = "descending" if made_descending else "ascending"
        raise InvalidListing(f"cursor was made for order {made_order!r} ({way}), not "
                             f"{order!r}: list with the order it was made for, or start "
                             "without a cursor")
    if not isinstance(key, (str if order == "id" else (int, float))) or isinstance(key, bool):
        raise InvalidListing(f"cursor {cursor[:40]!r} is malformed: its key {key!r} is no "
                             f"{order} key")
    return key, session_id


def _key(order: str) -> Callable[[Entry], tuple[Any, str]]:
    if order == "updated":
        return lambda entry: (entry.updated, entry.id)
    if order == "created":
        return lambda entry: (entry.created, entry.id)
    return lambda entry: (entry.id, entry.id)


def list_page(store: ListingMixin, filters: Filters, *, workspace: str | None, order: str,
              descending: bool | None, limit: int | None, cursor: str | None) -> SessionPage:
    """See ``Store.list_page``."""
    order, descending = order_of(order, descending)
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)
                              or limit < 1):
        raise InvalidListing(f"limit must be an int of at least 1, got {limit!r}")
    after = None if cursor is None else decode_cursor(cursor, order, descending)
    if workspace is not None:
        filters.members = frozenset(
            member.session_id for member in store.workspace(workspace).members)
    catalog = Catalog(store.io, store.path, store._session_info)
    try:
        try:
            view = catalog.view()
            page = _Page(store, catalog, view, filters, order, descending, after)
            return page.take(limit)
        except SnapshotDamaged:
            # A section read does not check: never a partial answer, the whole again.
            view = catalog.rebuild()
            return _Page(store, catalog, view, filters, order, descending, after).take(limit)
    finally:
        catalog.close()


class _Page:
    """One listing's walk: the snapshot's rows in the order asked, narrowed by what
    its columns can answer (tags, times, members, titles), merged with the entries
    read again since; each entry decoded only when its row comes up."""

    def __init__(self, store: ListingMixin, catalog: Catalog, view: View, filters: Filters,
                 order: str, descending: bool, after: tuple[float | str, str] | None) -> None:
        self.store = store
        self.catalog = catalog
        self.view = view
        self.snapshot = view.snapshot
        self.filters = filters
        self.order = order
        self.descending = descending
        self.after = after
        self.key = _key(order)
        self.times = None if order == "id" else order
        self.rows = self._rows()
        self.position = 0 if after is None else self._start(after)
        extra = [entry for entry in view.extra.values() if filters.keeps(entry)]
        extra.sort(key=self.key, reverse=descending)
        if after is not None:
            extra = [entry for entry in extra
                     if (self.key(entry) < after) == descending and self.key(entry) != after]
        self.extra = extra

    def _rows(self) -> Any:
        """The snapshot's rows in the order asked, less those the columns rule out."""
        import numpy as np
        snapshot, filters = self.snapshot, self.filters
        count = snapshot.count
        if self.order == "id":
            rows = np.arange(count, dtype=np.int64)
        else:
            rows = snapshot.column(f"by_{self.order}")
        if self.descending:
            rows = rows[::-1]
        keep = None

        def narrow(mask: Any) -> None:
            nonlocal keep
            keep = mask if keep is None else keep & mask

        for tag in filters.tags:
            mask = np.zeros(count, dtype=bool)
            mask[snapshot.tag_rows(tag)] = True
            narrow(mask)
        for name, bound, after in (("created", filters.created_after, True),
                                   ("created", filters.created_before, False),
                                   ("updated", filters.updated_after, True),
                                   ("updated", filters.updated_before, False)):
            if bound is not None:
                column = snapshot.column(name)
                narrow(column > bound if after else column < bound)
        if filters.members is not None:
            mask = np.zeros(count, dtype=bool)
            found = [snapshot.find(member) for member in filters.members]
            mask[[row for row in found if row is not None]] = True
            narrow(mask)
        self.title: bytes | None = None  # checked row by row, in the titles' column
        if filters.title:
            titled = self._titled(filters.title.encode())
            if titled is None:
                self.title = filters.title.encode()
            else:
                narrow(titled)
        if self.view.hidden:
            mask = np.ones(count, dtype=bool)
            mask[list(self.view.hidden)] = False
            narrow(mask)
        return rows if keep is None else rows[keep[rows]]

    def _titled(self, wanted: bytes) -> Any:
        """The rows whose casefolded title holds ``wanted``, found in the titles' blob;
        None when it is in so many that checking each row as it comes up is cheaper
        (a page then stops early)."""
        import numpy as np
        blob: bytes = self.snapshot.column("titles")
        count = self.snapshot.count
        if blob.count(wanted) > max(64, count // 4):
            return None
        found = []
        at = blob.find(wanted)
        while at >= 0:
            found.append(at)
            at = blob.find(wanted, at + 1)
        starts = np.array(found, dtype=np.int64)
        ends = self.snapshot.column("title_ends")
        rows = np.searchsorted(ends, starts, side="right")
        whole = starts + len(wanted) <= ends[rows].astype(np.int64)  # not across two
        mask = np.zeros(count, dtype=bool)
        mask[rows[whole]] = True
        return mask

    def _row_key(self, row: int) -> tuple[Any, str]:
        session_id = self.snapshot.id(row)
        if self.times is None:
            return session_id, session_id
        return float(self.snapshot.column(self.times)[row]), session_id

    def _start(self, after: tuple[float | str, str]) -> int:
        """The first place in ``rows`` past the cursor's position: a binary search, as
        the rows are in the order's key."""
        low, high = 0, len(self.rows)
        while low < high:
            middle = (low + high) // 2
            key = self._row_key(int(self.rows[middle]))
            if key < after if self.descending else key > after:
                high = middle
            else:
                low = middle + 1
        return low

    def _next(self) -> tuple[Entry, int | None] | None:
        """The next candidate in order (an entry, and its snapshot row or None for one
        read again), or None past the last."""
        row = None
        while self.position < len(self.rows):
            row = int(self.rows[self.position])
            if self.title is None or self.title in self.snapshot.title(row):
                break
            self.position += 1
            row = None
        if self.extra and (row is None or (self.key(self.extra[0]) < self._row_key(row))
                           != self.descending):
            return self.extra.pop(0), None
        if row is None:
            return None
        self.position += 1
        return self.snapshot.entry(row), row

    def take(self, limit: int | None) -> SessionPage:
        store, filters = self.store, self.filters
        found: list[SessionInfo] = []
        last: Entry | None = None
        more = False
        while True:
            candidate = self._next()
            if candidate is None:
                break
            entry, row = candidate
            if limit is not None and len(found) == limit:
                more = True
                break
            if row is not None and not filters.keeps(entry):
                continue  # a filter the columns could not answer (metadata, a title)
            fresh = self.catalog.fresh(entry, row)
            if fresh is None or not filters.keeps(fresh):
                continue  # deleted or changed since the catalog was written
            if not _has_collection(store, fresh.id, filters.has_collection):
                continue
            found.append(info_of(fresh, store.path))
            last = entry  # the position is the one it was sorted by
        self.catalog.flush()  # rows read again are kept for the next listing
        next_cursor = None
        if more and last is not None:
            position = self.key(last)
            next_cursor = encode_cursor(self.order, self.descending, position[0], last.id)
        return SessionPage(found, next_cursor)


class ListingMixin:
    """``Store``'s listings: every session, or filtered, ordered and paged."""

    if TYPE_CHECKING:
        io: FileIO
        path: str

        def session_ids(self) -> list[str]: ...
        def read_session(self, session_id: str) -> SessionReader: ...
        def workspace(self, workspace_id: str) -> Workspace: ...
        def _session_path(self, session_id: str) -> str: ...

    def list_sessions(
        self, *, tags: Iterable[str] | None = None, title: str | None = None,
        metadata: Mapping[str, Any] | None = None, created_after: When = None,
        created_before: When = None,
        updated_after: When = None,
        updated_before: When = None, workspace: str | None = None,
        has_collection: bool | str | None = None, order: str = "id",
        descending: bool | None = None, limit: int | None = None, cursor: str | None = None,
    ) -> list[SessionInfo]:
        """Id, times, event count and title of each session, from each session's manifest
        and the end of its log: the cost does not grow with history.

        A session that cannot be read is listed anyway, with ``damaged`` saying why and
        zeros where nothing could be read (its title, tags and times where its manifest
        could be): one damaged session never hides the others.

        Without arguments every session is read, by id. With any, the listing is
        :meth:`list_page`'s rows (all pages when no ``limit``), in ``order`` ("id"
        ascending unless ``descending``): ``tags`` all present, ``title`` a
        case-insensitive substring, ``metadata`` each key equal, times after/before
        (datetimes, naive ones UTC, ISO 8601 strs or seconds since the epoch),
        ``workspace`` members of it, ``has_collection`` a collection name or any (True)
        or none (False)."""
        if (tags, title, metadata, created_after, created_before, updated_after,
                updated_before, workspace, has_collection, limit, cursor) == (None,) * 11 \
                and order == "id" and not descending:
            return [info for info in map(self._session_info, self.session_ids())
                    if info is not None]
        return self.list_page(
            tags=tags, title=title, metadata=metadata, created_after=created_after,
            created_before=created_before, updated_after=updated_after,
            updated_before=updated_before, workspace=workspace,
            has_collection=has_collection, order=order, descending=descending,
            limit=limit, cursor=cursor).sessions

    def list_page(
        self, *, tags: Iterable[str] | None = None, title: str | None = None,
        metadata: Mapping[str, Any] | None = None, created_after: When = None,
        created_before: When = None,
        updated_after: When = None,
        updated_before: When = None, workspace: str | None = None,
        has_collection: bool | str | None = None, order: str = "updated",
        descending: bool | None = None, limit: int | None = 100, cursor: str | None = None,
    ) -> SessionPage:
        """A page of the sessions :meth:`list_sessions`' filters keep, in ``order``
        ("updated", "created" or "id"; newest first for times, unless ``descending`` is
        False), at most ``limit``, after ``cursor`` (the ``next_cursor`` of the page
        before, made for the same order; sessions added meanwhile shift nothing).

        Answered from the store catalog (``catalog``, ``catalog.log``: docs/FORMAT.md
        24), a cache rebuilt from the session folders when missing or damaged: a page
        of a store of 100,000 sessions reads two files and three stamps per row shown.
        Rows are as fresh as ``list_sessions()``; the order and filters use what the
        catalog last read of each session, which every writer of a manifest, and every
        session closed, journals. Raises InvalidListing naming a refused argument."""
        filters = check_filters(
            tags=tags, title=title, metadata=metadata, created_after=created_after,
            created_before=created_before, updated_after=updated_after,
            updated_before=updated_before, has_collection=has_collection)
        return list_page(self, filters, workspace=workspace, order=order,
                         descending=descending, limit=limit, cursor=cursor)

    async def alist_sessions(
        self, *, tags: Iterable[str] | None = None, title: str | None = None,
        metadata: Mapping[str, Any] | None = None, created_after: When = None,
        created_before: When = None,
        updated_after: When = None,
        updated_before: When = None, workspace: str | None = None,
        has_collection: bool | str | None = None, order: str = "id",
        descending: bool | None = None, limit: int | None = None, cursor: str | None = None,
    ) -> list[SessionInfo]:
        """:meth:`list_sessions` in a worker thread."""
        import asyncio

        return await asyncio.to_thread(functools.partial(
            self.list_sessions, tags=tags, title=title, metadata=metadata,
            created_after=created_after, created_before=created_before,
            updated_after=updated_after, updated_before=updated_before,
            workspace=workspace, has_collection=has_collection, order=order,
            descending=descending, limit=limit, cursor=cursor))

    async def alist_page(
        self, *, tags: Iterable[str] | None = None, title: str | None = None,
        metadata: Mapping[str, Any] | None = None, created_after: When = None,
        created_before: When = None,
        updated_after: When = None,
        updated_before: When = None, workspace: str | None = None,
        has_collection: bool | str | None = None, order: str = "updated",
        descending: bool | None = None, limit: int | None = 100, cursor: str | None = None,
    ) -> SessionPage:
        """:meth:`list_page` in a worker thread."""
        import asyncio

        return await asyncio.to_thread(functools.partial(
            self.list_page, tags=tags, title=title, metadata=metadata,
            created_after=created_after, created_before=created_before,
            updated_after=updated_after, updated_before=updated_before,
            workspace=workspace, has_collection=has_collection, order=order,
            descending=descending, limit=limit, cursor=cursor))

    def _session_info(self, session_id: str) -> SessionInfo | None:
        """What a listing says of one session; None when it is not there."""
        reader = None
        try:
            reader = self.read_session(session_id)
            return reader.info()
        except SessionNotFound:
            return None  # deleted meanwhile
        except FsStoreError as exc:
            return _damaged_info(session_id, self._session_path(session_id), reader, exc)


def _damaged_info(session_id: str, path: str, reader: SessionReader | None,
                  exc: FsStoreError) -> SessionInfo:
    """What ``list_sessions`` says of a session it could not read: why, and what its
    manifest says if it could be read."""
    title, tags, metadata = None, [], {}
    if reader is not None:
        try:
            title, tags, metadata = reader.title, reader.tags, reader.metadata
        except (FsStoreError, TypeError, ValueError):
            pass  # a wrong-typed field: the manifest says nothing usable
    return SessionInfo(id=session_id, path=path, created=0.0, updated=0.0, event_count=0,
                       head=0, title=title if isinstance(title, str) else None, tags=tags,
                       metadata=metadata, damaged=str(exc))


def _has_collection(store: ListingMixin, session_id: str, wanted: bool | str | None) -> bool:
    """Whether a session has the collection ``wanted`` (a name) or any (True) or none
    (False): looked up in its folder, never cached (a collection is made without a
    manifest write)."""
    if wanted is None:
        return True
    vectors = layout.vectors_dir(layout.session_dir(store.path, session_id))
    if isinstance(wanted, str):
        return store.io.exists(os.path.join(vectors, wanted, layout.COLLECTION_MANIFEST))
    try:
        names = store.io.listdir(vectors)
    except (OSError, FsStoreError):
        names = []
    found = any(store.io.exists(os.path.join(vectors, name, layout.COLLECTION_MANIFEST))
                for name in names if not layout.is_scratch(name))
    return found is wanted
