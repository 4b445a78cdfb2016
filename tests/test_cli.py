from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import fsstore
from fsstore.cli import build_parser, command_names, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_demo_records_a_multi_turn_session_and_describes_it(tmp_path, capsys):
    code, out, _ = run(capsys, "demo", str(tmp_path / "demo"))
    assert code == 0
    store = fsstore.open_store(tmp_path / "demo", create=False)
    session_id, fork_id, sub_id = store.session_ids()
    assert f"Recorded session {session_id}" in out and "turns:    3, all finished: True" in out
    reader = store.read_session(session_id)
    turns = reader.get_turns()
    assert len(turns) == 3 and all(t.finished for t in turns)
    assert {e.kind for t in turns for e in t.events} == {fsstore.MESSAGE_RECORD}
    # The queue item and the input arrived after the last turn finished: in no turn.
    kinds = {e.kind for t in reader.get_turns(include_internal=True) for e in t.events}
    assert kinds == {fsstore.MESSAGE_RECORD, fsstore.STATE_RECORD}
    assert [w.kind for w in reader.queue.items()] == ["follow_up"]
    assert [i.status for i in reader.inputs.items()] == ["pending"]
    assert not store.lease_info(session_id).held
    assert [c.name for c in reader.collections()] == ["memory"]
    assert reader.state()["files_changed"] == ["billing/dates.py", "CHANGELOG.md"]
    (checkpoint,) = reader.checkpoints()
    fork = store.read_session(fork_id)
    assert fork.parent == fsstore.ForkOrigin(session_id, checkpoint.seq, checkpoint.id)
    assert fork.state() == reader.load_checkpoint(checkpoint.id)
    assert fork.get_turns() == reader.get_turns()[:1]
    files = [part for m in reader.messages.all() for part in m.parts
             if isinstance(part, fsstore.FilePart)]
    attached = [fsstore.BlobRef.parse(part.blob) for part in files]
    assert len(attached) == 2 and b"FAILURES" in reader.blobs.get(attached[0])
    assert "attachments: 2 tool outputs" in out
    # A sub-agent spawned in turn 1, and a workspace holding the three sessions.
    spawned = store.read_session(sub_id).spawned_by
    assert (spawned.parent, spawned.turn) == (session_id, 1)
    assert [e.kind for e in store.read_session(sub_id).events()][-1] == fsstore.MESSAGE_RECORD
    assert [r.session for r in store.lineage(session_id).children] == [sub_id, fork_id]
    assert {m.session_id: m.role for m in store.workspace_sessions("billing-date-fix")} == {
        session_id: "primary", fork_id: "related", sub_id: "sub-agent"}
    assert f"sub-agent: {sub_id}, spawned in turn 1" in out
    assert store.verify() == []


def test_ls_show_cat_and_verify_read_a_store(tmp_path, capsys, monkeypatch):
    run(capsys, "demo", str(tmp_path / "demo"))
    store_path = str(tmp_path / "demo")
    session_id, fork_id, _sub_id = fsstore.open_store(store_path).session_ids()

    code, out, _ = run(capsys, "ls", store_path)
    assert code == 0 and session_id in out and "Fix the failing billing date test" in out

    code, out, _ = run(capsys, "--store", store_path, "show", session_id)
    assert code == 0 and "turn 1 (6 events, finished)" in out  # its state record is not shown
    assert "run_tests(" in out
    code, out, _ = run(capsys, "--store", store_path, "show", fork_id)
    (checkpoint,) = fsstore.open_store(store_path).read_session(session_id).checkpoints()
    assert f"forked from {session_id} at seq {checkpoint.seq}" in out

    code, out, _ = run(capsys, "--store", store_path, "cat", session_id, "--after", "2",
                       "--limit", "3")
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["seq"] for line in lines] == [3, 4, 5]
    assert set(lines[0]) == {"seq", "ts", "turn", "kind", "data"}
    code, out, _ = run(capsys, "--store", store_path, "cat", session_id)
    kinds = {json.loads(line)["kind"] for line in out.splitlines()}
    assert kinds == {fsstore.MESSAGE_RECORD}  # the store's own records only with --all
    code, out, _ = run(capsys, "--store", store_path, "cat", session_id, "--all")
    kinds = {json.loads(line)["kind"] for line in out.splitlines()}
    assert {fsstore.TURN_FINISHED, fsstore.STATE_RECORD, "fsstore.queue"} <= kinds

    monkeypatch.chdir(os.path.join(store_path, "sessions"))  # found by walking up
    code, out, _ = run(capsys, "verify")
    assert code == 0 and out.strip().endswith("OK")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FSSTORE_STORE", store_path)  # found through the environment
    code, out, _ = run(capsys, "verify", session_id)
    assert code == 0


def test_cat_writes_bytes_as_base64(tmp_path, capsys):
    store = fsstore.open_store(tmp_path / "s")
    with store.create_session("b") as session:
        session.append({"png": b"\x89PNG"})
    _, out, _ = run(capsys, "--store", str(tmp_path / "s"), "cat", "b")
    assert json.loads(out)["data"] == {"png": {"$base64": "iVBORw=="}}


def test_verify_prints_each_problem_with_file_and_offset_and_exits_1(tmp_path, capsys):
    store = fsstore.open_store(tmp_path / "s")
    with store.create_session("x") as session:
        for index in range(4):
            session.append({"i": index})
    log = os.path.join(store.path, "sessions", "x", "log")
    segment = os.path.join(log, sorted(os.listdir(log))[0])
    with open(segment, "r+b") as handle:  # flip a byte (a constant could equal it)
        handle.seek(64 + 30)
        byte = handle.read(1)[0]
        handle.seek(64 + 30)
        handle.write(bytes([byte ^ 0xFF]))
    code, out, _ = run(capsys, "--store", store.path, "verify")
    assert code == 1
    assert f"problem: {segment} at byte 64:" in out and out.strip().endswith("1 problem")


def test_ls_lists_the_sound_sessions_beside_a_damaged_one(tmp_path, capsys):
    store = fsstore.open_store(tmp_path / "s")
    store.create_session("good", title="fine").close()
    store.create_session("bad").close()
    with open(os.path.join(store.path, "sessions", "bad", "session.json"), "w") as handle:
        handle.write("{not json")
    code, out, _ = run(capsys, "ls", store.path)
    assert code == 1 and "fine" in out and "damaged" in out and "fsstore verify" in out


def test_errors_are_one_line_on_stderr_with_exit_2(tmp_path, capsys):
    code, out, err = run(capsys, "--store", str(tmp_path / "nowhere"), "ls")
    assert code == 2 and err.startswith("fsstore: ") and "no fsstore store" in err
    fsstore.open_store(tmp_path / "s")
    code, _, err = run(capsys, "--store", str(tmp_path / "s"), "show", "../etc")
    assert code == 2 and "invalid session id" in err


def test_every_command_has_an_example_and_is_in_the_readme():
    with open(os.path.join(ROOT, "README.md")) as handle:
        readme = handle.read()
    commands = next(a for a in build_parser()._actions if hasattr(a, "choices") and a.choices)
    for name in command_names():
        assert "example:" in commands.choices[name].epilog, name
        assert f"fsstore {name}" in readme, f"README.md does not show `fsstore {name}`"


def test_the_console_script_runs(tmp_path):
    result = subprocess.run([sys.executable, "-m", "fsstore", "--help"], capture_output=True,
                            text=True, cwd=ROOT)
    assert result.returncode == 0 and "demo" in result.stdout


@pytest.mark.parametrize("command", ["ls", "show", "cat", "verify", "demo"])
def test_each_command_help_works(command, capsys):
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    assert "example:" in capsys.readouterr().out


def test_state_checkpoints_fork_and_lineage_commands(tmp_path, capsys):
    store = fsstore.open_store(tmp_path / "store")
    with store.create_session("s") as session:
        session.commit([{"a": 1}], state_patch={"plan": ["x"], "blob": b"\x00"})
        session.checkpoint("first", checkpoint_id="cp")
        session.merge_state({"plan": ["x", "y"]})
    where = ("--store", str(tmp_path / "store"))
    code, out, _ = run(capsys, *where, "state", "s")
    assert code == 0 and json.loads(out) == {"plan": ["x", "y"], "blob": {"$base64": "AA=="}}
    code, out, _ = run(capsys, *where, "state", "s", "--at", "1")
    assert json.loads(out) == {}
    code, out, _ = run(capsys, *where, "state", "s", "--checkpoint", "cp")
    assert json.loads(out)["plan"] == ["x"]
    code, out, _ = run(capsys, *where, "checkpoints", "s")
    assert code == 0 and "cp" in out and "manual" in out and "first" in out
    code, out, _ = run(capsys, *where, "fork", "s", "t", "--at-checkpoint", "cp", "--title", "T")
    assert code == 0 and "forked s at seq 2 into t" in out
    assert store.read_session("t").title == "T"
    code, out, _ = run(capsys, *where, "lineage", "t")
    assert out.splitlines() == ["s", "`-- t (forked at seq 2, checkpoint cp)  <- this session"]
    code, out, _ = run(capsys, *where, "lineage", "s")
    assert out.splitlines() == ["s  <- this session", "`-- t (forked at seq 2, checkpoint cp)"]
    code, _, err = run(capsys, *where, "fork", "s", "t")
    assert code == 2 and "already exists" in err
    code, _, err = run(capsys, *where, "state", "s", "--at", "99")
    assert code == 2 and "outside the history" in err
    code, _, err = run(capsys, *where, "state", "s", "--checkpoint", "nope")
    assert code == 2 and "no checkpoint" in err


def test_gc_command_reports_and_reclaims(tmp_path, capsys):
    store = fsstore.open_store(tmp_path / "store")
    with store.create_session("s") as session:
        session.commit([{"f": session.blobs.put(b"kept")}])
        session.blobs.put(b"orphan")
    where = ("--store", str(tmp_path / "store"))
    code, out, _ = run(capsys, *where, "gc", "s", "--dry-run", "--grace", "0")
    assert code == 0 and "would reclaim 1" in out
    code, out, _ = run(capsys, *where, "gc", "s", "--grace", "0", "--verify")
    assert code == 0 and "reclaimed 1" in out and "scanned 2 blobs" in out


def test_tail_prints_the_last_events(tmp_path, capsys):
    store = fsstore.open_store(tmp_path / "store")
    with store.create_session("s") as session:
        session.append_many([{"role": "user", "content": f"m{n}"} for n in range(5)])
        session.clear()
        session.append({"role": "user", "content": "after"})
    code, out, _ = run(capsys, "--store", str(tmp_path / "store"), "tail", "s", "-n", "3")
    assert code == 0 and out.splitlines()[-1].endswith("user: after")
    code, out, _ = run(capsys, "--store", str(tmp_path / "store"), "tail", "s", "--after",
                       "2", "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0] == {"cleared": True, "log_start": 6} and lines[1]["seq"] == 6


def _hostile_store(tmp_path, chain):
    """A store whose session ``odd`` holds checksum-valid records that JSON cannot print
    as they are: NaN and infinite timestamps, bytes keys, int keys, NaN values, and a
    state with a non-str key nested in a value. With ``chain``, its sessions are chained
    (unkeyed) and the records forged with their chain values, as anyone can forge them."""
    import forge

    append_raw = forge.append_raw_chained if chain else forge.append_raw
    store = fsstore.open_store(tmp_path / "s", chain=chain)
    with store.create_session("odd", title="odd") as session:
        session.append({"x": 1}, turn=1)
    append_raw(store, "odd", [("event", {"x": 1})], ts=float("nan"))
    append_raw(store, "odd", [("message", {"role": "user", "content": "hi"})],
               ts=float("inf"))
    append_raw(store, "odd", [("event", {b"k": 1, "y": {2: 3}, "z": float("nan")})],
               ts=-1e300)
    append_raw(store, "odd", [("event", [1, 2]), ("event", "text")], ts=1e20)
    append_raw(store, "odd", [(fsstore.STATE_RECORD,
                               {"ops": [["set", "k", {1: b"x", "n": float("-inf")}]]})])
    append_raw(store, "odd", [
        ("fsstore.queue", {"op": "enqueue", "kind": "k", "payload": {b"k": float("nan")},
                           "priority": 0, "max_attempts": 3}),
        ("fsstore.input", {"op": "submit", "payload": {1: b"x"}})])
    store.create_session("far").close()
    append_raw(store, "far", [("event", {})], ts=1e20)  # after the year 9999
    return store


@pytest.mark.parametrize("argv", [["ls"], ["show", "odd"], ["tail", "odd"],
                                  ["tail", "odd", "--json"], ["cat", "odd"],
                                  ["state", "odd"], ["queue", "odd"], ["inputs", "odd"]])
@pytest.mark.parametrize("chain", [False, True])
def test_commands_print_every_checksum_valid_record(tmp_path, capsys, argv, chain):
    store = _hostile_store(tmp_path, chain)
    code, out, err = run(capsys, "--store", store.path, *argv)
    assert code == 0 and err == ""
    if argv[0] in ("cat", "state") or "--json" in argv:
        text = "[" + ",".join(out.splitlines()) + "]" if argv[0] != "state" else out
        json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))


@pytest.mark.parametrize("chain", [False, True])
def test_cat_prints_what_json_cannot_hold_in_its_documented_form(tmp_path, capsys, chain):
    store = _hostile_store(tmp_path, chain)
    code, out, _ = run(capsys, "--store", store.path, "cat", "odd")
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[1]["ts"] == {"$float": "nan"} and lines[2]["ts"] == {"$float": "inf"}
    assert lines[3]["data"] == {"$map": [[{"$base64": "aw=="}, 1], ["y", {"$map": [[2, 3]]}],
                                         ["z", {"$float": "nan"}]]}
    code, out, _ = run(capsys, "--store", store.path, "state", "odd")
    assert json.loads(out) == {"k": {"$map": [[1, {"$base64": "eA=="}],
                                              ["n", {"$float": "-inf"}]]}}


def test_an_unexpected_failure_is_one_typed_line_not_a_traceback(tmp_path, capsys,
                                                                 monkeypatch):
    store = fsstore.open_store(tmp_path / "s")
    store.create_session("a").close()

    def broken(self):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(fsstore.SessionReader, "info", broken)
    code, out, err = run(capsys, "--store", store.path, "show", "a")
    assert code == 3 and err == "fsstore: internal error: RuntimeError: boom second line\n"
    monkeypatch.setenv("FSSTORE_TRACEBACK", "1")
    with pytest.raises(RuntimeError):
        main(["--store", store.path, "show", "a"])


def test_an_os_error_is_one_line_with_exit_2(tmp_path, capsys, monkeypatch):
    store = fsstore.open_store(tmp_path / "s")
    store.create_session("a").close()

    def denied(self):
        raise PermissionError(13, "Permission denied", "/x/session.json")

    monkeypatch.setattr(fsstore.SessionReader, "info", denied)
    code, _, err = run(capsys, "--store", store.path, "show", "a")
    assert code == 2 and err.startswith("fsstore: ") and "Permission denied" in err
    assert len(err.splitlines()) == 1


def test_a_session_id_starting_with_a_dash_is_named_after_double_dash(tmp_path, capsys):
    store = fsstore.open_store(tmp_path / "s")
    with store.create_session("-draft", title="dash") as session:
        session.append({"x": 1})
    code, out, _ = run(capsys, "--store", store.path, "show", "--", "-draft")
    assert code == 0 and "session -draft: dash" in out
    code, out, _ = run(capsys, "--store", store.path, "cat", "--after", "0", "--", "-draft")
    assert code == 0 and json.loads(out)["data"] == {"x": 1}
    code, out, _ = run(capsys, "--store", store.path, "fork", "--", "-draft", "-copy")
    assert code == 0 and "-copy" in fsstore.open_store(store.path).session_ids()


def test_ls_shows_a_session_with_a_wrong_typed_manifest_as_damaged(tmp_path, capsys):
    store = fsstore.open_store(tmp_path / "s")
    store.create_session("good", title="fine").close()
    store.create_session("bad").close()
    path = os.path.join(store.path, "sessions", "bad", "session.json")
    with open(path) as handle:
        data = json.load(handle)
    data["tags"] = 5
    with open(path, "w") as handle:
        json.dump(data, handle)
    code, out, _ = run(capsys, "ls", store.path)
    assert code == 1 and "fine" in out and "damaged" in out and "tags" in out
    code, _, err = run(capsys, "--store", store.path, "show", "bad")
    assert code == 2 and "tags" in err and path in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("chain", [False, True])
def test_a_title_no_encoding_can_print_is_printed_escaped(tmp_path, chain):
    store = fsstore.open_store(tmp_path / "s", chain=chain)
    store.create_session("a", title="ok").close()
    store.create_session("b", title="\u00e9 written").close()
    path = os.path.join(store.path, "sessions", "a", "session.json")
    with open(path) as handle:
        text = handle.read()
    with open(path, "w") as handle:  # a hand edit: JSON may escape a lone surrogate
        handle.write(text.replace('"title": "ok"', '"title": "\\ud800 \\u00e9"'))
    env = dict(os.environ, PYTHONPATH=ROOT, PYTHONIOENCODING="ascii")

    def cli(*command):
        return subprocess.run([sys.executable, "-m", "fsstore", "--store", store.path,
                               *command], capture_output=True, text=True, env=env)

    done = cli("show", "b")
    assert done.returncode == 0 and done.stderr == "" and "\\xe9 written" in done.stdout
    if not chain:
        for command in (["ls"], ["show", "a"]):
            done = cli(*command)
            assert done.returncode == 0 and done.stderr == ""
            assert "\\ud800 \\xe9" in done.stdout
        return
    # A chained session's manifest is bound to its chain (FORMAT.md 3.4): the hand edit
    # is damage, named as such, not a crash of the encoding of its MAC.
    done = cli("ls")
    assert done.returncode == 1 and done.stderr == ""
    assert "chain.mac fails" in done.stdout and "\\xe9 written" in done.stdout
    done = cli("show", "a")
    assert done.returncode == 2 and done.stdout == "" and len(done.stderr.splitlines()) == 1
    assert f"{path}: session.json does not match the chain" in done.stderr


def test_a_usage_error_is_one_line_with_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--store", str(tmp_path), "cat", "s", "--after", "x"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "invalid int value" in err and "--help" in err


def test_search_keeps_results_within_a_score_bound(tmp_path, capsys):
    store = fsstore.open_store(tmp_path / "s")
    with store.create_session("a") as session:
        session.create_collection("c", 2, metric="dot").upsert(
            [fsstore.VectorDocument("x", [1, 0]), fsstore.VectorDocument("y", [0.5, 0])])
    code, out, _ = run(capsys, "--store", str(tmp_path / "s"), "search", "c", "--vector",
                       "[1, 0]", "--min-score", "0.75")
    assert code == 0 and "a:x" in out and "a:y" not in out
    code, _, err = run(capsys, "--store", str(tmp_path / "s"), "search", "c", "--vector",
                       "[1, 0]", "--max-distance", "0.5")
    assert code == 2 and "max_distance does not apply to metric dot" in err


def test_search_refuses_a_filter_too_deep_to_read_in_one_line(tmp_path, capsys):
    store = fsstore.open_store(tmp_path / "s")
    with store.create_session("a") as session:
        session.create_collection("c", 2).upsert([fsstore.VectorDocument("x", [1, 0])])
    deep = "[" * 100_000 + "]" * 100_000
    code, _, err = run(capsys, "--store", str(tmp_path / "s"), "search", "c", "--vector",
                       "[1, 0]", "--filter", deep)
    assert code == 2 and "--filter nests too deep" in err


def test_control_characters_a_store_holds_print_escaped_not_raw(tmp_path, capsys):
    # An escape sequence or a newline in a title, a name or an event must neither drive
    # the terminal nor fake a line of a listing.
    store = fsstore.open_store(tmp_path / "s")
    evil = "evil\x1b[31mRED\nfake-row  99"
    with store.create_session("a", title=evil, tags=["t\x07"]) as session:
        session.append({"role": "user", "content": evil}, kind="message")
    store.create_workspace("w", name=evil, description=evil)
    outputs = []
    for argv in (["ls"], ["show", "a"], ["workspace", "show", "w"], ["workspace", "ls"]):
        code, out, _ = run(capsys, "--store", str(tmp_path / "s"), *argv)
        assert code == 0
        outputs.append(out)
    printed = "".join(outputs)
    assert "\x1b" not in printed and "\x07" not in printed and "fake-row" in printed
    assert not any(line.startswith("fake-row") for line in printed.splitlines())
    assert "\\x1b[31mRED\\nfake-row" in outputs[0]
