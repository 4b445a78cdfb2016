"""The session graph: sessions spawned by another, and lineage over forks and spawns."""

from __future__ import annotations

import asyncio
import json
import os
import shutil

import pytest
from conftest import tree_snapshot

import fsstore
from fsstore import RelationKind, SpawnOrigin
from fsstore.cli import main

FORKED, SPAWNED = RelationKind.FORKED, RelationKind.SPAWNED
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def two_turns(session) -> None:
    """Seqs 1 (turn 1), 2 (its turn_finished), 3 (turn 2, not finished)."""
    session.append({"ask": "plan"})
    session.finish_turn()
    session.append({"ask": "build"})


def manifest_of(store, session_id) -> dict:
    with open(os.path.join(store.path, "sessions", session_id, "session.json")) as handle:
        return json.load(handle)


def edges(relations) -> list[tuple[str, str, str, int]]:
    return [(r.session, r.parent, r.kind.value, r.seq) for r in relations]


@pytest.mark.parametrize("chain", [False, True], ids=["unchained", "chained"])
def test_a_spawned_session_records_its_parent_and_writes_nothing_to_the_parent(
        tmp_path, chain):
    store = fsstore.open_store(tmp_path / "store", chain=chain)
    with store.create_session("p") as parent:
        two_turns(parent)
    before = tree_snapshot(os.path.join(store.path, "sessions", "p"))
    with store.create_session("c", spawned_by="p", title="sub-agent") as child:
        assert child.spawned_by == SpawnOrigin("p", 3, 2)
        assert child.parent is None and child.head == 0
        child.append({"step": 1})
    assert tree_snapshot(os.path.join(store.path, "sessions", "p")) == before
    record = manifest_of(store, "c")
    assert record["version"] == ("2.0" if chain else "1.7")  # 2.0: a chained session's
    assert {k: record["spawned_by"][k] for k in ("id", "seq", "turn", "uid")} == {
        "id": "p", "seq": 3, "turn": 2, "uid": manifest_of(store, "p")["uid"]}
    infos = {info.id: info for info in store.list_sessions()}
    assert infos["c"].spawned_by == SpawnOrigin("p", 3, 2)
    assert infos["p"].spawned_by is None
    assert store.read_session("c").spawned_by == SpawnOrigin("p", 3, 2)


def test_a_spawn_at_a_seq_records_the_turn_of_the_parents_record_there(store):
    with store.create_session("p") as parent:
        two_turns(parent)
        # Spawned while the parent's writer is open: the parent is only read.
        assert store.create_session("c1", spawned_by="p", at_seq=1).spawned_by == (
            SpawnOrigin("p", 1, 1))
        assert store.create_session("c2", spawned_by="p", at_seq=2).spawned_by == (
            SpawnOrigin("p", 2, 1))  # the turn_finished record of turn 1
        assert store.create_session("c0", spawned_by="p", at_seq=0).spawned_by == (
            SpawnOrigin("p", 0, None))
        parent.append({"more": True})
    assert store.read_session("c1").spawned_by == SpawnOrigin("p", 1, 1)


def test_an_empty_parent_spawns_at_seq_zero_with_no_turn(store):
    store.create_session("p").close()
    with store.create_session("c", spawned_by="p") as child:
        assert child.spawned_by == SpawnOrigin("p", 0, None)


def family(store) -> None:
    """root -spawned-> a -forked-> a-fork -spawned-> deep; root -forked-> f;
    f -spawned-> g; root -spawned-> b (all at various seqs)."""
    with store.create_session("root") as root:
        two_turns(root)
    with store.create_session("a", spawned_by="root", at_seq=1) as a:
        a.append({"x": 1})
        a.append({"x": 2})
    store.create_session("b", spawned_by="root").close()
    with store.fork_session("root", "f", at_seq=2) as f:
        f.append({"y": 1})
    store.create_session("g", spawned_by="f").close()
    with store.fork_session("a", "a-fork", at_seq=1) as a_fork:
        a_fork.append({"z": 1})
    store.create_session("deep", spawned_by="a-fork", at_seq=2).close()


def test_lineage_mixes_forks_and_spawns_over_several_levels(store):
    family(store)
    whole = [("a", "root", "spawned", 1), ("f", "root", "forked", 2),
             ("b", "root", "spawned", 3), ("a-fork", "a", "forked", 1),
             ("g", "f", "spawned", 3), ("deep", "a-fork", "spawned", 2)]
    top = store.lineage("root")
    assert (top.root, top.ancestors, top.parent) == ("root", [], None)
    assert edges(top.descendants) == whole
    assert edges(top.tree) == whole
    assert edges(top.children) == whole[:3]
    assert [r.session for r in top.forks] == ["f", "a-fork"]
    assert [r.session for r in top.spawned] == ["a", "b", "g", "deep"]

    deep = store.lineage("deep")
    assert edges(deep.ancestors) == [("deep", "a-fork", "spawned", 2),
                                     ("a-fork", "a", "forked", 1),
                                     ("a", "root", "spawned", 1)]
    assert all(r.parent_exists for r in deep.ancestors)
    assert deep.root == "root" and edges(deep.tree) == whole and deep.descendants == []
    assert edges(store.lineage("a").descendants) == [("a-fork", "a", "forked", 1),
                                                     ("deep", "a-fork", "spawned", 2)]
    assert [r.turn for r in deep.ancestors] == [1, None, 1]
    assert store.lineage("f").parent == fsstore.Relation(
        "f", "root", 2, None, True, FORKED, None)


def test_lineage_reads_the_manifests_and_no_log(store):
    family(store)
    sessions = os.path.join(store.path, "sessions")
    for session_id in os.listdir(sessions):
        shutil.rmtree(os.path.join(sessions, session_id, "log"))  # any log read would fail
    assert [r.session for r in store.lineage("deep").tree] == [
        "a", "f", "b", "a-fork", "g", "deep"]


def test_deleting_a_parent_leaves_its_children_whole_and_the_edge_marked(store):
    family(store)
    before = tree_snapshot(os.path.join(store.path, "sessions", "a-fork"))
    store.delete_session("a")
    assert tree_snapshot(os.path.join(store.path, "sessions", "a-fork")) == before
    assert [e.data for e in store.read_session("a-fork").events()] == [{"x": 1}, {"z": 1}]
    lineage = store.lineage("deep")
    assert [(r.session, r.parent, r.parent_exists) for r in lineage.ancestors] == [
        ("deep", "a-fork", True), ("a-fork", "a", False)]
    assert lineage.root == "a"  # gone: its own parent is not known any more
    assert edges(lineage.tree) == [("a-fork", "a", "forked", 1),
                                   ("deep", "a-fork", "spawned", 2)]
    assert [r.session for r in store.lineage("root").descendants] == ["f", "b", "g"]
    store.delete_session("root")
    assert store.lineage("g").ancestors[-1] == fsstore.Relation(
        "f", "root", 2, None, False, FORKED, None)
    with store.open_session("b") as b:  # a spawned child of a deleted parent writes on
        assert b.spawned_by == SpawnOrigin("root", 3, 2) and b.append({"on": 1}) == 1
    assert store.lineage("b").parent.parent_exists is False


def test_a_session_created_later_under_a_deleted_parents_id_is_not_taken_for_it(store):
    store.create_session("p").close()
    store.create_session("c", spawned_by="p").close()
    store.delete_session("p")
    store.create_session("p").close()  # a new session, a new uid
    assert store.lineage("c").parent.parent_exists is False
    # Nor are the old session's children the new one's; they still hang from the id.
    new = store.lineage("p")
    assert (new.children, new.descendants, new.tree) == ([], [], [])
    assert [r.session for r in store.lineage("c").tree] == ["c"]


@pytest.mark.parametrize("spawned_by, at_seq, error", [
    ("nobody", None, fsstore.SessionNotFound),
    ("p", 4, fsstore.SeqOutOfRange),
    ("p", -1, fsstore.InvalidSeq),
    ("p", True, fsstore.InvalidSeq),
    ("p", "1", fsstore.InvalidSeq),
    ("p", 1.0, fsstore.InvalidSeq),
    (None, 1, fsstore.InvalidSetting),
    (7, None, fsstore.InvalidSessionId),
    ("../p", None, fsstore.InvalidSessionId),
])
def test_a_refused_spawn_writes_nothing(store, spawned_by, at_seq, error):
    with store.create_session("p") as parent:
        two_turns(parent)
    before = tree_snapshot(store.path)
    with pytest.raises(error) as caught:
        store.create_session("c", spawned_by=spawned_by, at_seq=at_seq)
    assert isinstance(caught.value, fsstore.FsStoreError)
    assert tree_snapshot(store.path) == before


def test_a_spawn_before_a_cleared_parents_log_start_is_refused(store):
    with store.create_session("p") as parent:
        two_turns(parent)
        parent.clear()
        parent.append({"after": "clear"})
        head = parent.head
    before = tree_snapshot(store.path)
    with pytest.raises(fsstore.SeqOutOfRange, match="outside session 'p'"):
        store.create_session("c", spawned_by="p", at_seq=1)
    assert tree_snapshot(store.path) == before
    assert store.create_session("c", spawned_by="p", at_seq=head - 1).spawned_by.turn is None


def test_spawning_by_a_session_with_a_damaged_manifest_is_refused(store):
    store.create_session("p").close()
    path = os.path.join(store.path, "sessions", "p", "session.json")
    with open(path, "w") as handle:
        handle.write("{not json")
    before = tree_snapshot(store.path)
    with pytest.raises(fsstore.CorruptionError, match="session.json"):
        store.create_session("c", spawned_by="p")
    assert tree_snapshot(store.path) == before


def write_manifest(store, session_id, **changes) -> None:
    data = manifest_of(store, session_id)
    data.update(changes)
    with open(os.path.join(store.path, "sessions", session_id, "session.json"), "w") as handle:
        json.dump(data, handle)


@pytest.mark.parametrize("chain", [False, True], ids=["unchained", "chained"])
def test_a_1_4_manifest_from_a_newer_minor_keeps_the_keys_this_reader_does_not_know(
        tmp_path, chain):
    from chained_forge import edit_manifest

    store = fsstore.open_store(tmp_path / "store", chain=chain)
    store.create_session("p").close()
    store.create_session("c").close()
    spawn = {"id": "p", "seq": 0, "turn": None, "via": "tool call 7"}
    # chained: a 2.x manifest, its chain.mac recomputed as a writer of that minor would
    edit_manifest(store, "c", lambda d: d.update(
        version="2.9" if chain else "1.9", spawned_by=spawn, future={"k": 1}))
    assert store.read_session("c").spawned_by == SpawnOrigin("p", 0, None)
    with store.open_session("c") as child:
        child.save_session_with_updates([{"e": 1}], title="renamed")
    data = manifest_of(store, "c")
    assert data["spawned_by"] == spawn and data["future"] == {"k": 1}
    assert store.lineage("p").children[0].session == "c"


@pytest.mark.parametrize("spawn, field", [
    ({"id": "p", "seq": "x"}, "spawned_by.seq"),
    ({"id": "p", "seq": -1}, "spawned_by.seq"),
    ({"seq": 1}, "spawned_by.id"),
    ({"id": "../p", "seq": 1}, "spawned_by.id"),
    ({"id": "p", "seq": 1, "uid": "zz"}, "spawned_by.uid"),
    ({"id": "p", "seq": 1, "turn": "one"}, "spawned_by.turn"),
    ("p", "spawned_by"),
])
def test_a_hand_edited_spawn_record_is_reported_naming_the_field(store, spawn, field):
    store.create_session("c").close()
    write_manifest(store, "c", spawned_by=spawn)
    with pytest.raises(fsstore.CorruptionError, match=f"field {field}"):
        store.read_session("c")
    assert store.list_sessions()[0].damaged is not None
    store.create_session("other").close()  # the other sessions are still drawn
    assert store.lineage("other").tree == []


@pytest.mark.parametrize("folder", ["v1", "v1.1", "v1.2", "v1.2-work", "v1.3"])
def test_the_committed_fixtures_have_a_lineage_of_forks_only(folder, tmp_path):
    root = str(tmp_path / folder)  # a copy: lineage makes the catalog, as a listing would
    shutil.copytree(os.path.join(ROOT, "fixtures", folder), root, symlinks=True)
    before = tree_snapshot(root)
    store = fsstore.open_store(os.path.join(root, "store"), create=False)
    for session_id in store.session_ids():
        lineage = store.lineage(session_id)
        assert all(r.kind is FORKED for r in lineage.tree)
        assert store.read_session(session_id).spawned_by is None
    after = tree_snapshot(root)
    for cache in ("store/catalog", "store/catalog.log"):
        after.pop(cache, None)  # a cache, rebuilt when missing: nothing else is written
    assert after == before


def test_the_async_twin_spawns_too(store):
    store.create_session("p").close()

    async def spawn() -> fsstore.SpawnOrigin | None:
        child = await store.acreate_session("c", spawned_by="p", at_seq=0)
        child.close()
        lineage = await store.alineage("p")
        assert edges(lineage.children) == [("c", "p", "spawned", 0)]
        return child.spawned_by

    assert asyncio.run(spawn()) == SpawnOrigin("p", 0, None)


def run(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    out, _ = capsys.readouterr()
    return code, out


def test_the_lineage_command_draws_the_tree_with_the_edge_kinds(store, capsys):
    family(store)
    code, out = run(capsys, "--store", store.path, "lineage", "a-fork")
    assert code == 0
    assert out.splitlines() == [
        "root",
        "|-- a (spawned at seq 1, turn 1)",
        "|   `-- a-fork (forked at seq 1)  <- this session",
        "|       `-- deep (spawned at seq 2, turn 1)",
        "|-- f (forked at seq 2)",
        "|   `-- g (spawned at seq 3, turn 2)",
        "`-- b (spawned at seq 3, turn 2)",
    ]
    store.delete_session("root")
    code, out = run(capsys, "--store", store.path, "lineage", "g")
    assert out.splitlines() == [
        "root (deleted)",
        "|-- a (spawned at seq 1, turn 1)",
        "|   `-- a-fork (forked at seq 1)",
        "|       `-- deep (spawned at seq 2, turn 1)",
        "|-- f (forked at seq 2)",
        "|   `-- g (spawned at seq 3, turn 2)  <- this session",
        "`-- b (spawned at seq 3, turn 2)",
    ]
    store.create_session("alone").close()
    code, out = run(capsys, "--store", store.path, "lineage", "alone")
    assert out.splitlines() == ["alone  <- this session",
                                "  no parent, no forks and no spawned sessions"]


def test_show_lists_the_sessions_spawned_in_each_turn(store, capsys):
    family(store)
    store.create_session("early", spawned_by="root", at_seq=0).close()
    code, out = run(capsys, "--store", store.path, "show", "root")
    assert code == 0
    lines = out.splitlines()
    turn_1, turn_2 = lines.index("turn 1 (1 events, finished)"), lines.index(
        "turn 2 (1 events, not finished)")
    assert lines[turn_1 + 2:turn_2] == ["  spawned a at seq 1", ""]
    assert lines[turn_2 + 2:] == ["  spawned b at seq 3", "",
                                  "spawned outside the turns above",
                                  "  spawned early at seq 0"]
    assert "spawned f" not in out  # a fork is not spawned
    code, out = run(capsys, "--store", store.path, "show", "g")
    assert "spawned by f at seq 3 (turn 2)" in out


def test_lineage_reads_no_manifest_through_a_symlinked_session_folder(store, tmp_path):
    store.create_session("p").close()
    outside = tmp_path / "outside"
    shutil.copytree(os.path.join(store.path, "sessions", "p"), outside)
    record = json.loads((outside / "session.json").read_text())
    record.update(id="c", spawned_by={"id": "p", "seq": 0})
    (outside / "session.json").write_text(json.dumps(record))
    os.symlink(outside, os.path.join(store.path, "sessions", "c"))
    with pytest.raises(fsstore.CorruptionError):
        store.lineage("c")
    assert store.lineage("p").tree == []  # the symlinked child is not taken for a session


def _edit_manifest(store, session_id, change):
    path = os.path.join(store.path, "sessions", session_id, "session.json")
    with open(path) as handle:
        data = json.load(handle)
    change(data)
    with open(path, "w") as handle:
        json.dump(data, handle)
    return path


@pytest.mark.parametrize("chain", [False, True], ids=["unchained", "chained"])
def test_verify_reports_a_hand_made_cycle_and_a_spawn_past_its_parents_head(tmp_path, chain):
    store = fsstore.open_store(tmp_path / "store", chain=chain)
    with store.create_session("p") as parent:
        parent.append({"n": 1})
    store.create_session("a", spawned_by="p").close()
    store.create_session("b", spawned_by="a").close()
    store.create_session("c", spawned_by="p").close()
    assert [f for f in store.verify() if f.level == "problem"] == []
    cycle = _edit_manifest(store, "a", lambda d: d["spawned_by"].update(id="b", uid=None, seq=0))
    late = _edit_manifest(store, "c", lambda d: d["spawned_by"].update(seq=10**9))
    problems = {(f.path, f.message.split(":")[0]) for f in store.verify()
                if f.level == "problem"}
    assert (cycle, "its parents lead back to it (a cycle") in problems
    assert (late, "field spawned_by.seq") in problems
    # a and b are each in the cycle; c is past p's head; chained, the edits of a's and
    # c's session.json are also caught by their chain.mac
    mac_fails = "session.json does not match the chain (chain.mac fails)"
    assert {(path, mac_fails) for path in (cycle, late)} <= problems if chain else True
    assert len(problems) == (5 if chain else 3)
    assert [r.parent for r in store.lineage("b").ancestors] == ["a"]  # stops at the cycle


def test_a_deleted_parent_is_no_finding(store):
    store.create_session("p").close()
    store.create_session("c", spawned_by="p").close()
    store.delete_session("p")
    assert store.verify() == []
