"""``fsstore ls`` with filters, an order or a page: ``Store.list_page`` printed."""

from __future__ import annotations

import argparse
import json
import re
import time
from typing import TYPE_CHECKING, Any

from ..errors import InvalidListing
from ..session_reader import SessionInfo
from ._common import plain, when

if TYPE_CHECKING:
    from ..store import Store

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])\Z")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def since(value: str | None, name: str) -> float | str | None:
    """A ``--since``/``--until`` value: a duration back from now (``7d``) as seconds
    since the epoch, else the ISO text itself (``Store.list_page`` checks it)."""
    if value is None:
        return None
    match = _DURATION.match(value.strip())
    if match:
        return time.time() - float(match.group(1)) * _SECONDS[match.group(2)]
    if not value.strip():
        raise InvalidListing(f"{name}: give an ISO date or a duration such as 7d")
    return value


def row(info: SessionInfo) -> dict[str, Any]:
    """A session as ``fsstore ls --json`` prints it."""
    return {
        "id": info.id, "title": info.title, "tags": info.tags, "metadata": info.metadata,
        "created": info.created, "updated": info.updated, "event_count": info.event_count,
        "head": info.head,
        "parent": None if info.parent is None else info.parent._asdict(),
        "spawned_by": None if info.spawned_by is None else info.spawned_by._asdict(),
        "damaged": info.damaged,
    }


def run_paged(store: Store, args: argparse.Namespace) -> int:
    page = store.list_page(
        tags=args.tag, title=args.title, updated_after=since(args.since, "--since"),
        updated_before=since(args.until, "--until"), workspace=args.workspace,
        order=args.order or "id", limit=args.limit, cursor=args.cursor)
    if args.json:
        for info in page.sessions:
            print(json.dumps(row(info), ensure_ascii=False, default=str))
        print(json.dumps({"next_cursor": page.next_cursor}))
    else:
        width = max([len(info.id) for info in page.sessions] + [7])
        print(f"{'SESSION':<{width}}  {'RECORDS':>7}  {'CREATED':<16}  {'UPDATED':<16}  TITLE")
        for info in page.sessions:
            records = "?" if info.damaged else str(info.event_count)
            print(f"{info.id:<{width}}  {records:>7}  {when(info.created):<16}  "
                  f"{when(info.updated):<16}  "
                  + (f"damaged: {info.damaged}" if info.damaged else plain(info.title or "")))
        if page.next_cursor is not None:
            print(f"next page: --cursor {page.next_cursor}")
    return 1 if any(info.damaged for info in page.sessions) else 0
