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
    session_id, fork_id = store.session_ids()
    assert f"Recorded session {session_id}" in out and "turns:    3, all finished: True" in out
    reader = store.read_session(session_id)
    turns = reader.get_turns()
    assert len(turns) == 3 and all(t.finished for t in turns)
    assert {e.kind for t in turns for e in t.events} == {"message", "tool_call",
                                                         "tool_result"}
    # The queue item and the input arrived after the last turn finished: in no turn.
    kinds = {e.kind for t in reader.get_turns(include_internal=True) for e in t.events}
    assert kinds == {"message", "tool_call", "tool_result", fsstore.STATE_RECORD}
    assert [w.kind for w in reader.queued_work()] == ["follow_up"]
    assert [i.status for i in reader.turn_inputs()] == ["pending"]
    assert not store.lease_info(session_id).held
    assert [c.name for c in reader.collections()] == ["memory"]
    assert reader.state()["files_changed"] == ["billing/dates.py", "CHANGELOG.md"]
    (checkpoint,) = reader.checkpoints()
    fork = store.read_session(fork_id)
    assert fork.parent == fsstore.ForkOrigin(session_id, checkpoint.seq, checkpoint.id)
    assert fork.state() == reader.load_checkpoint(checkpoint.id)
    assert fork.get_turns() == reader.get_turns()[:1]
    outputs = [e.data["output"] for e in reader.events() if e.kind == "tool_result"]
    attached = [fsstore.BlobRef.parse(o) for o in outputs if isinstance(o, dict)]
    assert len(attached) == 2 and b"FAILURES" in reader.blobs.get(attached[0])
    assert "attachments: 2 tool outputs" in out


def test_ls_show_cat_and_verify_read_a_store(tmp_path, capsys, monkeypatch):
    run(capsys, "demo", str(tmp_path / "demo"))
    store_path = str(tmp_path / "demo")
    session_id, fork_id = fsstore.open_store(store_path).session_ids()

    code, out, _ = run(capsys, "ls", store_path)
    assert code == 0 and session_id in out and "Fix the failing billing date test" in out

    code, out, _ = run(capsys, "--store", store_path, "show", session_id)
    assert code == 0 and "turn 1 (7 events, finished)" in out  # its state record is not shown
    assert "run_tests(" in out
    code, out, _ = run(capsys, "--store", store_path, "show", fork_id)
    assert f"forked from {session_id} at seq 9" in out

    code, out, _ = run(capsys, "--store", store_path, "cat", session_id, "--after", "2",
                       "--limit", "3")
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["seq"] for line in lines] == [3, 4, 5]
    assert set(lines[0]) == {"seq", "ts", "turn", "kind", "data"}
    code, out, _ = run(capsys, "--store", store_path, "cat", session_id)
    assert not [line for line in out.splitlines() if '"kind": "fsstore.' in line]
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
    assert "t was forked from s at seq 2" in out
    code, out, _ = run(capsys, *where, "lineage", "s")
    assert "fork t (from s at seq 2)" in out
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

