"""A session's lineage read through the store catalog's children index
(fsstore/lineage_index.py): the same answer as a reading of every manifest, on random
graphs of forks and spawns, after changes the catalog has not seen, from this process
or another, and with damaged sessions and catalogs."""

from __future__ import annotations

import json
import os
import random
import shutil

import pytest
from procs import run

import fsstore
from fsstore import catalog, layout, lineage
from fsstore.catalog_snapshot import UNKNOWN_PARENT
from fsstore.lineage import read_lineage


def full_scan(store, session_id):
    return read_lineage(store.io, store.path, store.session_ids(), session_id)


def assert_same(store):
    for session_id in store.session_ids():
        assert store.lineage(session_id) == full_scan(store, session_id), session_id


def grow(store, rng, count, prefix="n"):
    """``count`` sessions, each a fork or a spawn of a random session, or a new root."""
    ids = store.session_ids()
    for number in range(count):
        new_id = f"{prefix}{number}"
        way = rng.random()
        if not ids or way < 0.15:
            with store.create_session(new_id) as session:
                session.append({"n": 1})
        elif way < 0.6:
            store.fork_session(rng.choice(ids), new_id).close()
        else:
            with store.create_session(new_id, spawned_by=rng.choice(ids)) as session:
                session.append({"n": 2})
        ids.append(new_id)


@pytest.mark.parametrize("seed", range(3))
def test_lineage_is_the_full_scan_answer_on_random_graphs(tmp_path, seed):
    rng = random.Random(seed)
    store = fsstore.open_store(tmp_path / "store", durability="none")
    grow(store, rng, 12)
    assert_same(store)  # the first lineage builds the catalog
    assert os.path.exists(catalog.snapshot_path(store.path))
    grow(store, rng, 6, prefix="m")  # journaled since the snapshot
    doomed = rng.choice(store.session_ids())
    store.delete_session(doomed)  # its children hang from a parent that is gone
    assert_same(store)


GROW = """
import random, sys
import fsstore
from test_lineage_index import grow
store = fsstore.open_store(sys.argv[1], durability="none")
grow(store, random.Random(int(sys.argv[2])), 8, prefix="x")
print("END", flush=True)
"""


def test_forks_made_by_another_process_appear(tmp_path):
    store = fsstore.open_store(tmp_path / "store", durability="none")
    grow(store, random.Random(7), 6)
    trees = {i: store.lineage(i).tree for i in store.session_ids()}  # catalog built
    run(GROW, store.path, 8)
    grown = [i for i in store.session_ids() if trees.get(i) != full_scan(store, i).tree]
    assert grown  # the other process's sessions hang from these
    assert_same(store)


def test_a_fork_copied_in_by_hand_appears(tmp_path):
    # A writer that does not journal: only the stamp of sessions/ tells.
    store = fsstore.open_store(tmp_path / "store", durability="none")
    store.create_session("root").close()
    store.fork_session("root", "child").close()
    assert [r.session for r in store.lineage("root").descendants] == ["child"]
    sessions = layout.sessions_dir(store.path)
    shutil.copytree(os.path.join(sessions, "child"), os.path.join(sessions, "copy"))
    path = os.path.join(sessions, "copy", "session.json")
    with open(path) as handle:
        data = json.load(handle)
    data["id"] = "copy"
    with open(path, "w") as handle:
        json.dump(data, handle)
    assert [r.session for r in store.lineage("root").descendants] == ["child", "copy"]
    assert_same(store)


def test_a_damaged_session_keeps_its_edges(tmp_path):
    store = fsstore.open_store(tmp_path / "store", durability="none")
    with store.create_session("root") as session:
        session.append({"n": 1})
    store.fork_session("root", "child").close()
    log = layout.log_dir(layout.session_dir(store.path, "child"))
    for name in os.listdir(log):
        if layout.is_segment_name(name):
            path = os.path.join(log, name)
            with open(path, "rb") as handle:
                data = handle.read()
            os.unlink(path)  # a fork may share its parent's segment (a hard link)
            with open(path, "wb") as handle:
                handle.write(b"\xff" * 16 + data[16:])  # its log no longer reads
    assert [i.damaged is not None for i in store.list_sessions()] == [True, False]
    assert [r.session for r in store.lineage("root").descendants] == ["child"]
    snapshot = catalog.read_snapshot(store.io, store.path)
    assert snapshot is not None
    with snapshot:
        assert [snapshot.id(row) for row in snapshot.child_rows(UNKNOWN_PARENT)] == ["child"]
    assert_same(store)


def test_a_spawn_parent_whose_id_was_taken_again_is_gone(tmp_path):
    store = fsstore.open_store(tmp_path / "store", durability="none")
    with store.create_session("p") as session:
        session.append({"n": 1})
    store.create_session("kid", spawned_by="p").close()
    assert store.lineage("kid").parent.parent_exists
    store.delete_session("p")
    store.create_session("p").close()  # a new session under the old id
    lineage = store.lineage("kid")
    assert not lineage.parent.parent_exists
    assert store.lineage("p").descendants == []
    assert_same(store)


def test_a_damaged_children_index_is_rebuilt(tmp_path):
    store = fsstore.open_store(tmp_path / "store", durability="none")
    grow(store, random.Random(3), 8)
    assert_same(store)
    path = catalog.snapshot_path(store.path)
    snapshot = catalog.read_snapshot(store.io, store.path)
    assert snapshot is not None
    with snapshot:
        offset, length = snapshot.sections()["edge_parents"]
    assert length > 0
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(b"\x00")
    assert_same(store)


def test_lineage_reads_only_the_manifests_of_its_answer(tmp_path, monkeypatch):
    store = fsstore.open_store(tmp_path / "store", durability="none")
    for number in range(20):
        store.create_session(f"other{number}").close()
    store.create_session("a").close()
    store.fork_session("a", "b").close()
    store.fork_session("b", "c").close()
    store.lineage("c")  # builds the catalog
    read = []
    original = lineage.session_edges

    def counted(io, root, session_id):
        read.append(session_id)
        return original(io, root, session_id)

    monkeypatch.setattr("fsstore.lineage_index.session_edges", counted)
    found = store.lineage("c")
    assert [r.session for r in found.ancestors] == ["c", "b"]
    assert set(read) == {"a", "b", "c"}
