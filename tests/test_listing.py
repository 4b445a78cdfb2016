"""Store.list_sessions' filters, orders and Store.list_page's cursors."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

import pytest

import fsstore
from fsstore.errors import InvalidListing


@pytest.fixture
def listed(store):
    """Five sessions with known tags, titles, metadata and distinct created times."""
    specs = [
        ("s1", "Alpha report", ["red", "blue"], {"team": "a", "n": 1}),
        ("s2", "beta notes", ["red"], {"team": "b", "n": 2}),
        ("s3", "Gamma REPORT", ["blue"], {"team": "a", "n": 3}),
        ("s4", None, [], {}),
        ("s5", "delta", ["red", "blue", "green"], {"team": "a", "n": 5}),
    ]
    for session_id, title, tags, metadata in specs:
        store.create_session(session_id, title=title, tags=tags, metadata=metadata).close()
    return store


def ids(infos):
    return [info.id for info in infos]


def test_without_arguments_it_lists_every_session_by_id(listed):
    assert ids(listed.list_sessions()) == ["s1", "s2", "s3", "s4", "s5"]


def test_each_filter_alone(listed):
    assert ids(listed.list_sessions(tags=["red"])) == ["s1", "s2", "s5"]
    assert ids(listed.list_sessions(tags=["red", "blue"])) == ["s1", "s5"]
    assert ids(listed.list_sessions(title="report")) == ["s1", "s3"]
    assert ids(listed.list_sessions(metadata={"team": "a"})) == ["s1", "s3", "s5"]
    assert ids(listed.list_sessions(metadata={"missing": None})) == []
    created = {info.id: info.created for info in listed.list_sessions()}
    middle = datetime.fromtimestamp(created["s3"], timezone.utc)
    assert set(ids(listed.list_sessions(created_after=middle))) == {"s4", "s5"}
    assert set(ids(listed.list_sessions(created_before=middle.isoformat()))) == {"s1", "s2"}
    assert ids(listed.list_sessions(updated_after=middle - timedelta(days=1))) == [
        "s1", "s2", "s3", "s4", "s5"]
    assert ids(listed.list_sessions(updated_before="2000-01-01")) == []


def test_filters_combined(listed):
    assert ids(listed.list_sessions(tags=["blue"], title="REPORT",
                                    metadata={"team": "a"})) == ["s1", "s3"]
    assert ids(listed.list_sessions(tags=["green"], metadata={"team": "b"})) == []


def test_workspace_and_collection_filters(listed):
    listed.create_workspace("w")
    listed.add_to_workspace("w", "s2")
    listed.add_to_workspace("w", "s4")
    assert ids(listed.list_sessions(workspace="w")) == ["s2", "s4"]
    with listed.open_session("s3") as session:
        session.create_collection("docs", 2)
    assert ids(listed.list_sessions(has_collection=True)) == ["s3"]
    assert ids(listed.list_sessions(has_collection="docs")) == ["s3"]
    assert ids(listed.list_sessions(has_collection="other")) == []
    assert ids(listed.list_sessions(has_collection=False)) == ["s1", "s2", "s4", "s5"]


def test_orders(listed):
    by_created = sorted(listed.list_sessions(), key=lambda i: (i.created, i.id))
    assert ids(listed.list_sessions(order="created", descending=False)) == ids(by_created)
    assert ids(listed.list_sessions(order="created")) == ids(by_created)[::-1]
    assert ids(listed.list_sessions(order="id", descending=True)) == [
        "s5", "s4", "s3", "s2", "s1"]
    with listed.open_session("s1") as session:
        session.append({"note": 1})
    assert ids(listed.list_page(order="updated", limit=1).sessions) == ["s1"]


def test_rows_are_those_of_the_full_listing(listed):
    full = {info.id: info for info in listed.list_sessions()}
    for info in listed.list_page(limit=10).sessions:
        assert info == full[info.id]


def all_pages(store, limit, between=None, **kwargs):
    seen, cursor = [], None
    while True:
        page = store.list_page(limit=limit, cursor=cursor, **kwargs)
        seen += ids(page.sessions)
        cursor = page.next_cursor
        if cursor is None:
            return seen
        if between is not None:
            between()


@pytest.mark.parametrize("order", ["updated", "created", "id"])
@pytest.mark.parametrize("limit", [1, 2, 3, 5, 6])
def test_pages_cover_the_ordered_list_exactly(listed, order, limit):
    expected = ids(listed.list_sessions(order=order, descending=order != "id"))
    assert all_pages(listed, limit, order=order) == expected


def test_sessions_added_between_pages_shift_nothing(listed):
    before = ids(listed.list_sessions(order="id"))
    added = iter(f"s{n}" for n in (0, 35, 9, 10))

    def add():
        listed.create_session(next(added)).close()

    seen = all_pages(listed, 2, between=add, order="id")
    assert len(seen) == len(set(seen))
    assert [i for i in seen if i in before] == before  # none skipped, none twice
    assert "s0" not in seen  # added before the position already passed


def test_a_cursor_of_another_order_is_refused(listed):
    cursor = listed.list_page(order="created", limit=2).next_cursor
    assert cursor is not None
    with pytest.raises(InvalidListing, match="made for order 'created'"):
        listed.list_page(order="updated", cursor=cursor)
    with pytest.raises(InvalidListing, match="ascending|descending"):
        listed.list_page(order="created", descending=False, cursor=cursor)


@pytest.mark.parametrize("kwargs, named", [
    ({"order": "size"}, "order 'size'"),
    ({"cursor": "not a cursor"}, "cursor"),
    ({"order": "id", "descending": False,
      "cursor": base64.urlsafe_b64encode(json.dumps(["id", False, 3, "x"]).encode()).decode()},
     "key"),
    ({"created_after": "yesterday"}, "created_after"),
    ({"updated_before": 12j}, "updated_before"),
    ({"limit": 0}, "limit"),
    ({"tags": [1]}, "tags"),
    ({"metadata": ["a"]}, "metadata"),
    ({"has_collection": 3}, "has_collection"),
])
def test_bad_arguments_are_refused_by_name(listed, kwargs, named):
    with pytest.raises(InvalidListing, match=named) as caught:
        listed.list_page(**kwargs)
    assert isinstance(caught.value, fsstore.FsStoreError)
    assert isinstance(caught.value, ValueError)


def test_a_damaged_session_is_listed_with_why(listed):
    path = f"{listed.path}/sessions/s2/session.json"
    with open(path, "w") as handle:
        handle.write("{broken")
    rows = {info.id: info for info in listed.list_page(limit=10, order="id").sessions}
    assert rows["s2"].damaged is not None
    assert rows["s1"].damaged is None


def test_ls_pages_as_json_lines(listed, capsys):
    from fsstore.cli import main

    main(["--store", listed.path, "ls", "--tag", "red", "--limit", "2", "--json"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["id"] for line in lines[:-1]] == ["s1", "s2"]
    cursor = lines[-1]["next_cursor"]
    assert cursor
    main(["--store", listed.path, "ls", "--tag", "red", "--limit", "2", "--json",
          "--cursor", cursor])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["id"] for line in lines[:-1]] == ["s5"]
    assert lines[-1] == {"next_cursor": None}


def test_ls_filters_by_title_since_and_order(listed, capsys):
    from fsstore.cli import main

    main(["--store", listed.path, "ls", "--title", "REPORT", "--since", "1h",
          "--order", "created"])
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out[1:]] == ["s3", "s1"]
    main(["--store", listed.path, "ls", "--until", "2000-01-01"])
    assert capsys.readouterr().out.splitlines()[1:] == []


def test_ls_refuses_a_bad_cursor(listed, capsys):
    from fsstore.cli import main

    code = main(["--store", listed.path, "ls", "--cursor", "zzz"])
    assert code != 0
    assert "cursor" in capsys.readouterr().err
