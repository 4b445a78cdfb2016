"""The store catalog (fsstore/catalog.py, docs/FORMAT.md 24): a cache that answers as the
session folders would, whatever happened to it, and sees other processes' changes."""

from __future__ import annotations

import os
import shutil

import pytest
from conftest import tree_snapshot
from procs import run

from fsstore import catalog, layout


def make(store, count=6):
    for n in range(count):
        store.create_session(f"s{n}", title=f"t{n}", tags=["even"] if n % 2 == 0 else [],
                             metadata={"n": n}).close()
    return store


def answers(store):
    """What the catalog-backed listings say: a few filters and orders."""
    return (
        [(i.id, i.title, i.tags, i.metadata, i.head) for i in store.list_page(
            order="id", limit=None).sessions],
        [i.id for i in store.list_sessions(tags=["even"])],
        [i.id for i in store.list_page(order="created", limit=3).sessions],
    )


def truth(store):
    """The same, read from every session folder (no catalog)."""
    full = store.list_sessions()
    return (
        [(i.id, i.title, i.tags, i.metadata, i.head) for i in full],
        [i.id for i in full if "even" in i.tags],
        [i.id for i in sorted(full, key=lambda i: (i.created, i.id), reverse=True)][:3],
    )


def cache_files(store):
    return catalog.snapshot_path(store.path), catalog.journal_path(store.path)


def test_the_first_listing_builds_the_catalog(store):
    make(store)
    snapshot, journal = cache_files(store)
    assert not os.path.exists(snapshot)
    assert answers(store) == truth(store)
    assert os.path.exists(snapshot) and os.path.exists(journal)
    assert answers(store) == truth(store)


def _delete(path):
    os.unlink(path)


def _truncate(path):
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) // 2)


def _garble(path):
    with open(path, "r+b") as handle:
        handle.seek(max(0, os.path.getsize(path) - 20))
        handle.write(b"\xff" * 7)


@pytest.mark.parametrize("damage", [_delete, _truncate, _garble])
@pytest.mark.parametrize("which", [0, 1])
def test_damaged_cache_files_give_the_same_answers(store, damage, which):
    make(store)
    answers(store)
    # a journal with records in it, so that damage to it has something to hit
    with store.open_session("s1") as session:
        session.update_metadata(title="renamed", tags=["even"])
    store.delete_session("s4")
    store.create_session("s9", tags=["even"]).close()
    path = cache_files(store)[which]
    if os.path.getsize(path) == 0:
        pytest.skip("nothing to damage")
    damage(path)
    assert answers(store) == truth(store)
    assert answers(store) == truth(store)


def test_a_torn_last_journal_record_is_skipped(store):
    make(store)
    answers(store)
    journal = catalog.journal_path(store.path)
    with open(journal, "ab") as handle:
        handle.write(catalog.record("s2")[:-3])  # a crash cut the append short
    assert answers(store) == truth(store)
    with open(journal, "ab") as handle:  # the next append follows the torn bytes
        handle.write(catalog.record("s3"))
    assert answers(store) == truth(store)  # damage mid-journal: rebuilt


def test_a_snapshot_of_another_version_is_rebuilt(store):
    make(store)
    answers(store)
    path = catalog.snapshot_path(store.path)
    with open(path, "r+b") as handle:
        handle.seek(8)
        handle.write(b"\x63\x00\x00\x00")
    assert answers(store) == truth(store)
    snapshot = catalog.read_snapshot(store.io, store.path)
    assert snapshot is not None  # rewritten
    snapshot.close()


CHANGES = """
import sys
import fsstore
store = fsstore.open_store(sys.argv[1])
store.create_session("new", title="made elsewhere", tags=["even"]).close()
with store.open_session("s1") as session:
    session.update_metadata(title="retitled", tags=["even"], metadata={"n": 100})
store.delete_session("s2")
print("END", flush=True)
"""


def test_another_process_creating_updating_and_deleting_is_seen(store):
    make(store)
    before = answers(store)
    assert "new" not in [row[0] for row in before[0]]
    run(CHANGES, store.path)
    rows = {row[0]: row for row in answers(store)[0]}
    assert "new" in rows and "s2" not in rows
    assert rows["s1"][1:4] == ("retitled", ["even"], {"n": 100})
    assert [i.id for i in store.list_sessions(tags=["even"])] == ["new", "s0", "s1", "s4"]
    assert [i.id for i in store.list_sessions(metadata={"n": 100})] == ["s1"]
    assert answers(store) == truth(store)


def test_a_session_made_without_the_journal_appears(store):
    make(store, 3)
    answers(store)
    # An older writer: the folder appears under its name, and nothing is journaled.
    sessions = layout.sessions_dir(store.path)
    shutil.copytree(os.path.join(sessions, "s0"), os.path.join(sessions, "copied"))
    shutil.rmtree(os.path.join(sessions, "s1"))
    ids = [i.id for i in store.list_page(order="id", limit=None).sessions]
    assert ids == ["copied", "s0", "s2"]


def test_a_settled_catalog_is_read_without_listing_sessions(store, monkeypatch):
    make(store)
    answers(store)
    snapshot = catalog.read_snapshot(store.io, store.path)
    assert snapshot is not None
    # Older than the racy window: as a store looks once its writers are quiet.
    stamp = store.io.stamp(layout.sessions_dir(store.path))
    with snapshot:
        catalog.write_snapshot(store.io, store.path, list(snapshot.rows()), stamp,
                               snapshot.journal)
    monkeypatch.setattr(catalog, "SETTLE_NS", 0)
    listed = []
    real = store.io.listdir

    def listdir(path):
        listed.append(path)
        return real(path)

    monkeypatch.setattr(store.io, "listdir", listdir)
    store.list_page(limit=2)
    assert layout.sessions_dir(store.path) not in listed


def test_listing_changes_nothing_but_the_cache_files(store):
    make(store)
    with store.open_session("s3") as session:
        session.append({"x": 1})
    before = tree_snapshot(store.path)
    answers(store)
    store.list_page(limit=2, title="t")
    after = tree_snapshot(store.path)
    names = {layout.CATALOG, layout.CATALOG_JOURNAL}
    assert {k: v for k, v in before.items() if k not in names} == {
        k: v for k, v in after.items() if k not in names}
    assert names <= after.keys()


def test_a_journal_record_is_one_short_line():
    raw = catalog.record("x" * 128)
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1 and len(raw) < 512


def test_no_journal_is_made_outside_a_store(tmp_path, store):
    folder = tmp_path / "loose" / "sessions" / "s"
    folder.mkdir(parents=True)
    catalog.note(store.io, str(folder))
    assert not (tmp_path / "loose" / layout.CATALOG_JOURNAL).exists()
