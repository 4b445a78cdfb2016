"""Workspaces: named groups of a store's sessions with roles (fsstore/workspaces.py,
docs/FORMAT.md section 19)."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import sys

import pytest
from conftest import tree_snapshot
from procs import Child
from test_crash import crash_states_of

import fsstore
from fsstore import workspaces as workspaces_module
from fsstore.cli import main


@pytest.fixture
def store(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    for session_id in ("a", "b", "c"):
        store.create_session(session_id).close()
    return store


def workspace_file(store, workspace_id):
    return os.path.join(store.path, "workspaces", workspace_id + ".json")


# --- behaviour ------------------------------------------------------------------------------


def test_a_workspace_is_created_described_updated_listed_and_deleted(store):
    made = store.create_workspace("acme", name="Acme", description="launch",
                                  metadata={"team": "web", "n": [1, 2.5, None]})
    assert (made.id, made.name, made.description, made.metadata, made.members) == (
        "acme", "Acme", "launch", {"team": "web", "n": [1, 2.5, None]}, [])
    assert made.created == made.updated > 0
    assert store.workspace("acme") == made

    updated = store.update_workspace("acme", name="Acme 2", metadata={"team": "api"})
    assert (updated.name, updated.description, updated.metadata) == ("Acme 2", "launch",
                                                                      {"team": "api"})
    assert updated.updated >= made.updated and updated.created == made.created
    assert store.update_workspace("acme", description="").description == ""

    store.create_workspace("beta")
    assert [w.id for w in store.list_workspaces()] == ["acme", "beta"]
    store.delete_workspace("acme")
    assert [w.id for w in store.list_workspaces()] == ["beta"]
    with pytest.raises(fsstore.WorkspaceNotFound):
        store.workspace("acme")
    assert store.has_session("a")  # deleting a workspace keeps its sessions


def test_a_store_without_workspaces_lists_none_and_creates_no_folder(store):
    assert store.list_workspaces() == []
    assert not os.path.exists(os.path.join(store.path, "workspaces"))


def test_a_workspace_without_an_id_gets_a_time_ordered_one_and_its_id_as_name(store):
    made = store.create_workspace()
    assert made.name == made.id and made.id[:8].isdigit()
    assert store.workspace(made.id).id == made.id


def test_sessions_are_added_with_a_role_their_role_changed_and_removed(store):
    store.create_workspace("w")
    store.add_to_workspace("w", "a", fsstore.SessionRole.PRIMARY)
    store.add_to_workspace("w", "b")  # related by default
    store.add_to_workspace("w", "c", "reviewer.v2")
    assert [(m.session_id, m.role) for m in store.workspace_sessions("w")] == [
        ("a", "primary"), ("b", "related"), ("c", "reviewer.v2")]
    assert [m.session_id for m in store.workspace_sessions("w", role="related")] == ["b"]
    assert [m.session_id for m in store.workspace_sessions(
        "w", role=fsstore.SessionRole.PRIMARY)] == ["a"]

    changed = store.set_workspace_role("w", "b", fsstore.SessionRole.REFERENCE)
    assert {m.session_id: m.role for m in changed.members}["b"] == "reference"
    removed = store.remove_from_workspace("w", "c")
    assert [m.session_id for m in removed.members] == ["a", "b"]
    assert store.session_workspaces("c") == {}


def test_the_workspaces_of_a_session_are_listed_with_its_role_in_each(store):
    store.create_workspace("x")
    store.create_workspace("y")
    store.create_workspace("z")
    store.add_to_workspace("x", "a", "primary")
    store.add_to_workspace("z", "a", "reference")
    store.add_to_workspace("y", "b")
    assert store.session_workspaces("a") == {"x": "primary", "z": "reference"}
    with pytest.raises(fsstore.SessionNotFound):
        store.session_workspaces("nope")


def test_adding_a_member_again_with_its_role_writes_nothing(store):
    store.create_workspace("w")
    store.add_to_workspace("w", "a", "primary")
    before = tree_snapshot(store.path)
    assert [m.role for m in store.add_to_workspace("w", "a", "primary").members] == ["primary"]
    assert tree_snapshot(store.path) == before


def test_the_file_is_sorted_pretty_json_and_a_rewrite_keeps_unknown_keys(store):
    store.create_workspace("w", name="W")
    store.add_to_workspace("w", "a", "primary")
    path = workspace_file(store, "w")
    with open(path) as handle:
        text = handle.read()
    data = json.loads(text)
    assert text == json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert (data["format"], data["version"], data["id"]) == ("fsstore-workspace", "1.0", "w")
    assert data["sessions"]["a"]["role"] == "primary"

    # What a newer minor version adds is kept by this one's rewrites.
    data["version"] = "1.7"
    data["color"] = "teal"
    data["sessions"]["a"]["pinned"] = True
    with open(path, "w") as handle:
        json.dump(data, handle)
    store.set_workspace_role("w", "a", "related")
    store.add_to_workspace("w", "b")
    with open(path) as handle:
        again = json.load(handle)
    assert again["color"] == "teal"
    assert again["sessions"]["a"] == {**data["sessions"]["a"], "role": "related"}
    assert sorted(again["sessions"]) == ["a", "b"]


def test_a_deleted_session_leaves_the_listings_and_verify_notes_it(store):
    store.create_workspace("w")
    store.add_to_workspace("w", "a", "primary")
    store.add_to_workspace("w", "b")
    store.delete_session("b")
    assert [m.session_id for m in store.workspace("w").members] == ["a"]
    assert [m.session_id for m in store.list_workspaces()[0].members] == ["a"]
    assert [m.session_id for m in store.workspace_sessions("w")] == ["a"]
    findings = store.verify()
    assert [(f.level, os.path.basename(f.path)) for f in findings] == [("note", "w.json")]
    assert "'b'" in findings[0].message and "fsstore workspace remove w b" in findings[0].message
    assert store.verify(["a"]) == []  # a check of some sessions leaves workspaces out

    # Made again under the same id, it is a member again; removed, the note goes.
    store.create_session("b").close()
    assert [m.session_id for m in store.workspace("w").members] == ["a", "b"]
    store.delete_session("b")
    store.remove_from_workspace("w", "b")
    assert store.verify() == []


def test_each_call_has_an_async_twin_that_works(store):
    async def run():
        await store.acreate_workspace("w", name="W")
        await store.aadd_to_workspace("w", "a", "primary")
        await store.aadd_to_workspace("w", "b")
        await store.aset_workspace_role("w", "b", "reference")
        await store.aremove_from_workspace("w", "a")
        await store.aupdate_workspace("w", description="d")
        members = await store.aworkspace_sessions("w")
        found = await store.asession_workspaces("b")
        listed = await store.alist_workspaces()
        described = await store.aworkspace("w")
        await store.adelete_workspace("w")
        return members, found, listed, described

    members, found, listed, described = asyncio.run(run())
    assert [(m.session_id, m.role) for m in members] == [("b", "reference")]
    assert found == {"w": "reference"}
    assert listed == [described] and described.description == "d"
    assert store.list_workspaces() == []


# --- bad input: a typed error naming the field, and nothing written ------------------------


def _prepare(store):
    store.create_workspace("w")
    store.add_to_workspace("w", "a", "primary")


BAD_CALLS = {
    "id with a slash": (lambda s: s.create_workspace("x/y"), fsstore.InvalidWorkspaceId, None),
    "hidden id": (lambda s: s.create_workspace(".x"), fsstore.InvalidWorkspaceId, None),
    "id not a str": (lambda s: s.create_workspace(5), fsstore.InvalidWorkspaceId, None),
    "device id": (lambda s: s.create_workspace("CON"), fsstore.InvalidWorkspaceId, None),
    "taken id": (lambda s: s.create_workspace("w"), fsstore.WorkspaceExists, None),
    "name not a str": (lambda s: s.create_workspace("n", name=3), fsstore.InvalidWorkspace,
                       "name"),
    "lone surrogate": (lambda s: s.create_workspace("n", description="\ud800"),
                       fsstore.InvalidWorkspace, "description"),
    "metadata not JSON": (lambda s: s.create_workspace("n", metadata={"k": {1, 2}}),
                          fsstore.InvalidWorkspace, "metadata"),
    "metadata NaN": (lambda s: s.update_workspace("w", metadata={"k": float("nan")}),
                     fsstore.InvalidWorkspace, "metadata"),
    "metadata not a mapping": (lambda s: s.update_workspace("w", metadata=[1]),
                               fsstore.InvalidWorkspace, "metadata"),
    "metadata too big": (lambda s: s.update_workspace("w", metadata={"k": "x" * (1 << 20)}),
                         fsstore.InvalidWorkspace, "metadata"),
    "update missing": (lambda s: s.update_workspace("nope", name="x"),
                       fsstore.WorkspaceNotFound, None),
    "delete missing": (lambda s: s.delete_workspace("nope"), fsstore.WorkspaceNotFound, None),
    "describe missing": (lambda s: s.workspace("nope"), fsstore.WorkspaceNotFound, None),
    "add to missing": (lambda s: s.add_to_workspace("nope", "a"), fsstore.WorkspaceNotFound,
                       None),
    "add missing session": (lambda s: s.add_to_workspace("w", "zz"), fsstore.SessionNotFound,
                            None),
    "add bad session id": (lambda s: s.add_to_workspace("w", "../a"),
                           fsstore.InvalidSessionId, None),
    "empty role": (lambda s: s.add_to_workspace("w", "b", ""), fsstore.InvalidWorkspace,
                   "role"),
    "role with a space": (lambda s: s.add_to_workspace("w", "b", "my role"),
                          fsstore.InvalidWorkspace, "role"),
    "role too long": (lambda s: s.add_to_workspace("w", "b", "r" * 65),
                      fsstore.InvalidWorkspace, "role"),
    "role not a str": (lambda s: s.set_workspace_role("w", "a", 1), fsstore.InvalidWorkspace,
                       "role"),
    "filter by bad role": (lambda s: s.workspace_sessions("w", role="a b"),
                           fsstore.InvalidWorkspace, "role"),
    "member under another role": (lambda s: s.add_to_workspace("w", "a", "related"),
                                  fsstore.WorkspaceMemberExists, None),
    "role of a non-member": (lambda s: s.set_workspace_role("w", "b", "primary"),
                             fsstore.WorkspaceMemberNotFound, None),
    "remove a non-member": (lambda s: s.remove_from_workspace("w", "b"),
                            fsstore.WorkspaceMemberNotFound, None),
}


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_a_refused_call_raises_a_typed_error_and_writes_nothing(store, case):
    call, error, field = BAD_CALLS[case]
    _prepare(store)
    before = tree_snapshot(store.path)
    with pytest.raises(error) as raised:
        call(store)
    assert isinstance(raised.value, fsstore.FsStoreError)
    if field is not None:
        assert raised.value.field == field and field in str(raised.value)
        assert isinstance(raised.value, fsstore.InvalidInput)
    assert tree_snapshot(store.path) == before


def test_adding_to_a_store_with_no_workspaces_creates_nothing(store):
    before = tree_snapshot(store.path)
    with pytest.raises(fsstore.WorkspaceNotFound):
        store.add_to_workspace("w", "a")
    with pytest.raises(fsstore.InvalidWorkspace):
        store.create_workspace("w", metadata={"k": object()})
    assert tree_snapshot(store.path) == before


def test_a_held_lock_makes_a_write_wait_then_refuse(store, monkeypatch):
    store.create_workspace("w")
    monkeypatch.setattr(workspaces_module, "LOCK_TIMEOUT", 0.05)
    fd = os.open(os.path.join(store.path, "workspaces", "lock"), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        before = tree_snapshot(store.path)
        with pytest.raises(fsstore.WorkspaceLocked) as raised:
            store.add_to_workspace("w", "a")
        assert isinstance(raised.value, TimeoutError)
        assert tree_snapshot(store.path) == before
        assert store.workspace("w").members == []  # readers take no lock
    finally:
        os.close(fd)
    store.add_to_workspace("w", "a")


# --- damage ---------------------------------------------------------------------------------


def _write(path, text):
    with open(path, "w") as handle:
        handle.write(text)


def _rewrite(path, change):
    with open(path) as handle:
        data = json.load(handle)
    change(data)
    with open(path, "w") as handle:
        json.dump(data, handle)


DAMAGE = {
    "not JSON": lambda p: _write(p, "{not json"),
    "not an object": lambda p: _write(p, "[1, 2]"),
    "another format": lambda p: _rewrite(p, lambda d: d.update(format="fsstore-session")),
    "name not a str": lambda p: _rewrite(p, lambda d: d.update(name=5)),
    "sessions not a map": lambda p: _rewrite(p, lambda d: d.update(sessions=["a"])),
    "id not the file's": lambda p: _rewrite(p, lambda d: d.update(id="other")),
    "member not a session id": lambda p: _rewrite(
        p, lambda d: d["sessions"].update({"../x": {"role": "primary", "added": d["created"]}})),
    "bad role": lambda p: _rewrite(p, lambda d: d["sessions"]["a"].update(role="a b")),
    "bad time": lambda p: _rewrite(p, lambda d: d.update(updated="yesterday")),
    "too big": lambda p: _write(p, " " * ((1 << 20) + 1)),
    "too deep": lambda p: _rewrite(p, lambda d: d.update(metadata={"k": json.loads(
        "[" * 70 + "]" * 70)})),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_file_raises_corruption_naming_it_and_verify_reports_it(store, case):
    _prepare(store)
    store.create_workspace("sound")
    path = workspace_file(store, "w")
    DAMAGE[case](path)
    before = tree_snapshot(store.path)
    for read in (lambda: store.workspace("w"), store.list_workspaces,
                 lambda: store.session_workspaces("a"),
                 lambda: store.add_to_workspace("w", "b")):
        with pytest.raises(fsstore.CorruptionError) as raised:
            read()
        assert raised.value.path == path and path in str(raised.value)
    assert tree_snapshot(store.path) == before  # nothing repaired
    problems = [f for f in store.verify() if f.level == "problem"]
    assert [f.path for f in problems] == [path]
    assert store.workspace("sound").id == "sound"
    store.delete_workspace("w")  # a damaged workspace can still be deleted
    assert store.verify() == []


def test_a_newer_major_version_is_refused_and_left_alone(store):
    _prepare(store)
    path = workspace_file(store, "w")
    _rewrite(path, lambda d: d.update(version="2.0"))
    before = tree_snapshot(store.path)
    with pytest.raises(fsstore.FormatVersionError, match="upgrade fsstore"):
        store.workspace("w")
    with pytest.raises(fsstore.FormatVersionError):
        store.add_to_workspace("w", "b")
    assert tree_snapshot(store.path) == before


def test_a_symlink_in_place_of_the_folder_is_refused(store, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, os.path.join(store.path, "workspaces"))
    with pytest.raises(fsstore.UnsafePath):
        store.create_workspace("w")
    with pytest.raises(fsstore.UnsafePath):
        store.list_workspaces()
    assert os.listdir(elsewhere) == []
    assert any(f.level == "problem" and f.path.endswith("workspaces")
               for f in store.verify())


def test_verify_notes_a_temp_file_a_crash_left_and_remove_leftovers_removes_it(store):
    store.create_workspace("w")
    leftover = os.path.join(store.path, "workspaces", ".tmp-w.json-0123abcd")
    with open(leftover, "w") as handle:
        handle.write("{")
    assert store.workspace("w").id == "w"
    assert [(f.level, f.path) for f in store.verify()] == [("note", leftover)]
    assert store.remove_leftovers() == [leftover]  # what verify notes, this removes
    assert store.verify() == [] and store.workspace("w").id == "w"


# --- crashes --------------------------------------------------------------------------------


def test_a_crash_while_creating_or_changing_a_workspace_leaves_the_old_file_or_the_new(
        tmp_path):
    root = tmp_path / "store"
    store = fsstore.open_store(root)
    for session_id in ("a", "b"):
        store.create_session(session_id).close()

    def work(store):
        store.create_workspace("w", name="W")
        store.add_to_workspace("w", "a", "primary")
        store.add_to_workspace("w", "b")

    states = crash_states_of(tmp_path, root, work)
    seen = set()
    for dest in states:
        crashed = fsstore.open_store(dest, create=False)
        ids = [w.id for w in crashed.list_workspaces()]
        members = tuple(m.session_id for m in crashed.workspace("w").members) if ids else None
        assert members in (None, (), ("a",), ("a", "b"))
        seen.add(members)
        assert [f for f in crashed.verify() if f.level == "problem"] == []
        if ids:  # a later write goes on from what the crash left
            crashed.add_to_workspace("w", "b", "related")
    assert seen == {None, (), ("a",), ("a", "b")}


# --- two processes at once ------------------------------------------------------------------


def child_adds_sessions(root, prefix, count):
    """Wait for GO, then add ``count`` sessions named ``prefix``N to workspace w."""
    store = fsstore.open_store(root, create=False)
    print("READY", flush=True)
    sys.stdin.readline()
    for i in range(int(count)):
        store.add_to_workspace("w", f"{prefix}{i}", "related" if i % 2 else "reference")
    print("END", flush=True)


def _two_writers(tmp_path, count):
    root = str(tmp_path / "store")
    store = fsstore.open_store(root)
    for prefix in ("p", "q"):
        for i in range(count):
            store.create_session(f"{prefix}{i}").close()
    store.create_workspace("w")
    with Child.function(child_adds_sessions, root, "p", count, stdin=True) as one, \
            Child.function(child_adds_sessions, root, "q", count, stdin=True) as two:
        one.wait_for()
        two.wait_for()
        one.send("GO")
        two.send("GO")
        seen = 0
        while one.returncode is None or two.returncode is None:
            # A reader (no lock) never sees a torn file, and members only come, never go.
            members = len(store.workspace("w").members)
            assert members >= seen
            seen = members
        assert one.finish()[-1] == "END" and two.finish()[-1] == "END"
    members = store.workspace_sessions("w")
    assert sorted(m.session_id for m in members) == sorted(
        f"{prefix}{i}" for prefix in ("p", "q") for i in range(count))
    assert store.verify() == []


def test_two_processes_adding_different_sessions_to_one_workspace_both_land(tmp_path):
    _two_writers(tmp_path, 40)


@pytest.mark.long
def test_two_processes_adding_many_sessions_to_one_workspace_all_land(tmp_path):
    _two_writers(tmp_path, 400)


# --- the command line -----------------------------------------------------------------------


def test_the_workspace_commands_create_show_update_list_add_change_and_remove(store, capsys):
    def run(*argv):
        code = main(["--store", store.path, "workspace", *argv])
        return code, capsys.readouterr()

    assert run("create", "acme", "--name", "Acme", "--metadata", '{"team": "web"}')[0] == 0
    assert run("add", "acme", "a", "--role", "primary")[0] == 0
    assert run("add", "acme", "b")[0] == 0
    assert run("role", "acme", "b", "reviewer")[0] == 0
    code, out = run("show", "acme")
    assert code == 0 and "Acme" in out.out and "primary" in out.out and "reviewer" in out.out
    code, out = run("show", "acme", "--json")
    shown = json.loads(out.out)
    assert shown["metadata"] == {"team": "web"}
    assert [(m["session"], m["role"]) for m in shown["sessions"]] == [("a", "primary"),
                                                                      ("b", "reviewer")]
    assert run("update", "acme", "--description", "Q3")[0] == 0
    assert store.workspace("acme").description == "Q3"
    code, out = run("ls")
    assert code == 0 and "acme" in out.out and "2" in out.out
    code, out = run("ls", "--session", "a")
    assert out.out.split() == ["acme", "primary"]
    assert run("remove", "acme", "b")[0] == 0
    assert [m.session_id for m in store.workspace("acme").members] == ["a"]
    assert run("rm", "acme")[0] == 0
    assert store.list_workspaces() == []
    code, out = run("ls")
    assert "no workspaces" in out.out


def test_a_refused_workspace_command_is_one_line_with_exit_2(store, capsys):
    assert main(["--store", store.path, "workspace", "add", "nope", "a"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fsstore: ") and "nope" in err and err.count("\n") == 1


@pytest.mark.parametrize("action", ["create", "show", "update", "ls", "rm", "add", "role",
                                    "remove"])
def test_each_workspace_command_has_an_example_in_its_help(action, capsys):
    with pytest.raises(SystemExit):
        main(["workspace", action, "--help"])
    assert f"fsstore workspace {action}" in capsys.readouterr().out
