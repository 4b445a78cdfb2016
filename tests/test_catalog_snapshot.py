"""The catalog snapshot laid out for pages (fsstore/catalog_snapshot.py, docs/FORMAT.md
24): orders, tags and titles answered from its columns, sessions read again merged
into the order, and damage to any section a listing reads making it rebuild."""

from __future__ import annotations

import os

import pytest

from fsstore import catalog, catalog_snapshot


def make(store, count=30):
    for n in range(count):
        title = "rare one" if n % 10 == 3 else f"common {n:02d}"
        store.create_session(f"s{n:02d}", title=title,
                             tags=["tenth"] if n % 10 == 7 else ["all"],
                             metadata={"n": n}).close()
    return store


def by(infos, order, descending):
    key = {"updated": lambda i: (i.updated, i.id), "created": lambda i: (i.created, i.id),
           "id": lambda i: (i.id, i.id)}[order]
    return [i.id for i in sorted(infos, key=key, reverse=descending)]


def paged(store, limit, **kwargs):
    """Every page's ids, following cursors."""
    found, cursor = [], None
    while True:
        page = store.list_page(limit=limit, cursor=cursor, **kwargs)
        found.extend(i.id for i in page.sessions)
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor


CASES = [
    ("updated", True, 7, {}),
    ("created", False, 5, {}),
    ("id", True, 6, {}),
    ("updated", True, 4, {"tags": ["tenth"]}),
    ("id", False, 3, {"title": "rare"}),       # in few titles: found in the blob
    ("created", True, 4, {"title": "COMMON"}),  # in most: checked row by row
    ("updated", False, 5, {"metadata": {"n": 11}}),
]


def truth(store, kwargs, order, descending):
    full = store.list_sessions()
    keep = {
        "tags": lambda i, v: set(v) <= set(i.tags),
        "title": lambda i, v: v.casefold() in (i.title or "").casefold(),
        "metadata": lambda i, v: all(i.metadata.get(k) == w for k, w in v.items()),
    }
    return by([i for i in full if all(keep[k](i, v) for k, v in kwargs.items())],
              order, descending)


@pytest.mark.parametrize(("order", "descending", "limit", "kwargs"), CASES)
def test_pages_merge_sessions_read_again_into_the_order(store, order, descending, limit,
                                                        kwargs):
    make(store)
    store.list_page(limit=1)  # the catalog is built
    for n in (4, 11, 17, 23):  # journaled: read again, set aside from their rows
        with store.open_session(f"s{n:02d}") as session:
            session.update_metadata(title=f"rare retitled {n}", tags=["tenth"])
            session.append({"n": n})
    store.delete_session("s05")
    store.delete_session("s13")
    store.create_session("s99", title="common new", tags=["all"]).close()
    store.create_session("a00", title="rare new", tags=["tenth"]).close()
    want = truth(store, kwargs, order, descending)
    assert paged(store, limit, order=order, descending=descending, **kwargs) == want
    # Once more from the snapshot those reads rewrote.
    assert paged(store, limit, order=order, descending=descending, **kwargs) == want


def test_a_title_match_across_two_titles_is_none(store):
    store.create_session("a", title="xxab").close()
    store.create_session("b", title="cdxx").close()
    assert [i.id for i in store.list_sessions(title="abcd")] == []
    assert [i.id for i in store.list_sessions(title="ab")] == ["a"]
    assert [i.id for i in store.list_sessions(title="dx")] == ["b"]


def _garble_at(path, offset, length):
    with open(path, "r+b") as handle:
        handle.seek(offset + length // 2)
        byte = handle.read(1)
        handle.seek(offset + length // 2)
        handle.write(bytes([byte[0] ^ 0x5A]))


@pytest.mark.parametrize("section", [
    "id_ends", "ids", "created", "updated", "by_updated", "by_created", "title_ends", "titles",
    "tag_names", "tag_ends", "tag_rows", "entry_ends", "entries"])
def test_damage_to_a_section_a_listing_reads_rebuilds(store, section):
    make(store, 12)
    want = [(i.id, i.title, i.tags) for i in store.list_sessions()]
    store.list_page(limit=1)
    path = catalog.snapshot_path(store.path)
    snapshot = catalog.read_snapshot(store.io, store.path)
    assert snapshot is not None
    with snapshot:
        offset, length = snapshot.sections()[section]
    _garble_at(path, offset, length)
    for kwargs in ({"order": "id"}, {"tags": ["all"], "order": "id"},
                   {"title": "rare", "order": "id"}, {"order": "updated"},
                   {"order": "created", "created_after": 0}):
        page = store.list_page(limit=None, **kwargs)
        rows = [(i.id, i.title, i.tags) for i in page.sessions]
        expected = [row for row in want
                    if ("tags" not in kwargs or "all" in row[2])
                    and ("title" not in kwargs or "rare" in row[1])]
        if kwargs["order"] != "id":
            rows.sort()
        assert rows == expected, kwargs
    rebuilt = catalog.read_snapshot(store.io, store.path)
    assert rebuilt is not None
    with rebuilt:
        assert len(rebuilt.ids()) == 12  # the damage rebuilt it


def test_a_snapshot_copied_row_by_row_reads_back_the_same(store):
    make(store, 8)
    store.list_page(limit=1)
    path = catalog.snapshot_path(store.path)
    with open(path, "rb") as handle:
        data = handle.read()
    first = catalog_snapshot.Snapshot.parse(data, path)
    assert first is not None
    rows = list(first.rows())
    again = catalog_snapshot.Snapshot.parse(
        catalog_snapshot.encode(rows, first.sessions_stamp, first.journal), path)
    assert again is not None
    assert list(again.rows()) == rows
    assert [again.entry(row).id for row in range(again.count)] == again.ids()
    assert again.find("s03") == 3 and again.find("s99") is None
    assert again.tag_rows("tenth").tolist() == [7]
    assert again.tag_rows("none").tolist() == []


def test_a_snapshot_of_the_first_layout_is_rebuilt(store):
    make(store, 3)
    store.list_page(limit=1)
    path = catalog.snapshot_path(store.path)
    with open(path, "r+b") as handle:  # version 1: one msgpack body
        handle.seek(8)
        handle.write(b"\x01\x00\x00\x00")
    assert catalog.read_snapshot(store.io, store.path) is None
    assert [i.id for i in store.list_page(order="id", limit=None).sessions] == [
        "s00", "s01", "s02"]
    assert os.path.getsize(path) > 0
    rebuilt = catalog.read_snapshot(store.io, store.path)
    assert rebuilt is not None
    rebuilt.close()
