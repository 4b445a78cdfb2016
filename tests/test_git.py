"""A store committed to git: fsstore git-setup, and git diff / git show of the store as
text through fsstore textconv (README, "Git")."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_textconv import build

import fsstore
from fsstore.cli import main
from fsstore.cli._common import event_json
from fsstore.git_setup import BEGIN, END, git_setup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: What the test repositories' git runs per file: this checkout's fsstore.
COMMAND = f"{shlex.quote(sys.executable)} -m fsstore textconv"


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": ROOT, "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": os.devnull, "GIT_PAGER": "cat", "LC_ALL": "C"}
    result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                            env=env)
    assert result.returncode == 0, (args, result.stderr)
    return result.stdout


def new_repo(path: Path) -> Path:
    path.mkdir()
    git(path, "init", "-q")
    git(path, "config", "user.name", "fsstore tests")
    git(path, "config", "user.email", "tests@fsstore.invalid")
    git(path, "config", "commit.gpgsign", "false")
    return path


def setup(store: fsstore.Store, *more: str) -> int:
    return main(["--store", store.path, "git-setup", "--command", COMMAND, *more])


def commit(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


def added_and_removed(diff: str, inside: str) -> tuple[list[str], list[str]]:
    """The lines a unified diff adds and removes in the files whose path holds ``inside``."""
    added, removed, wanted = [], [], False
    for line in diff.splitlines():
        if line.startswith("diff --git "):
            wanted = inside in line
        elif not wanted or line.startswith(("+++ ", "--- ")):
            continue
        elif line.startswith("+"):
            added.append(line[1:])
        elif line.startswith("-"):
            removed.append(line[1:])
    return added, removed


def test_git_diff_and_show_print_the_new_events_as_added_json_lines(tmp_path, capsys):
    repo = new_repo(tmp_path / "repo")
    store = fsstore.open_store(repo / "agents")
    session = store.create_session("s")  # the writer stays open, as an agent's would
    session.append({"role": "user", "content": "why does deploy.sh fail?"}, kind="message")
    session.append({"tool": "read_file", "path": "deploy.sh"}, kind="tool_call")
    session.finish_turn()
    assert setup(store) == 0
    capsys.readouterr()
    # git keeps what textconv printed for each file version (notes): the three views
    # below run it once per version, as a user's repeated diffs would
    git(repo, "config", "diff.fsstore.cachetextconv", "true")
    commit(repo, "first turn")
    head = store.read_session("s").head
    session.append({"role": "assistant", "content": "line 3 quotes $1 wrongly",
                    "raw": b"\x00\x01\xfe"}, kind="message")
    session.commit([{"tool": "edit", "path": "deploy.sh"}], state_patch={"fixed": True})
    session.finish_turn()
    commit(repo, "second turn")
    expected = [event_json(e) for e in
                store.read_session("s").events(after_seq=head, include_internal=True)]
    assert len(expected) >= 4 and '"$base64": "AAH+"' in expected[0]
    for shown in (git(repo, "diff", "HEAD~1", "HEAD"), git(repo, "show", "HEAD"),
                  git(repo, "log", "-p", "-1")):
        assert "Binary files" not in shown
        added, removed = added_and_removed(shown, "/log/")
        assert (added, removed) == (expected, [])
    session.close()
    assert [f for f in store.verify() if f.level == "problem"] == []


def test_sealed_segments_blobs_and_shards_are_stored_once(tmp_path, capsys):
    repo = new_repo(tmp_path / "repo")
    store = fsstore.open_store(repo / "agents", segment_size=4096)
    with store.create_session("s") as session:
        for turn in range(1, 30):
            session.append({"n": turn, "text": "x" * 300}, kind="note")
            session.finish_turn()
        session.blobs.put(b"first attachment\n", "text/plain")
        memory = session.create_collection("memory", dim=4)
        memory.upsert([fsstore.VectorDocument(f"d{i}", np.ones(4, np.float32) * (i + 1))
                       for i in range(3)])
        memory.seal()
    assert setup(store) == 0
    capsys.readouterr()
    commit(repo, "one")
    log = repo / "agents" / "sessions" / "s" / "log"
    first = sorted(p.name for p in log.glob("*.fslog"))
    assert len(first) > 3
    with store.open_session("s") as session:
        for turn in range(30, 50):
            session.append({"n": turn, "text": "y" * 300}, kind="note")
            session.finish_turn()
        session.blobs.put(b"second attachment\n", "text/plain")
        memory = session.collection("memory")
        memory.upsert([fsstore.VectorDocument("d9", np.ones(4, np.float32))])
        memory.seal()
    commit(repo, "two")
    changes = [line.split("\t") for line in
               git(repo, "diff", "--name-status", "HEAD~1", "HEAD").splitlines()]
    modified = {path for status, path in changes if status == "M"}
    added = {path for status, path in changes if status == "A"}
    sealed = {f"agents/sessions/s/log/{name}" for name in first[:-1]}
    assert not modified & sealed
    assert f"agents/sessions/s/log/{first[-1]}" in modified  # the active one grew
    assert any(path.endswith(".fslog") for path in added)
    immutable = (".snap", ".ckpt", ".npy", ".docs")
    assert not [p for p in modified if "/blobs/" in p or p.endswith(immutable)]
    assert any("/blobs/" in p for p in added) and any(p.endswith(".docs") for p in added)


def test_git_setup_twice_changes_nothing_and_keeps_the_users_lines(tmp_path, capsys):
    repo = new_repo(tmp_path / "repo")
    store = fsstore.open_store(repo / "agents")
    attributes, ignore = Path(store.path, ".gitattributes"), Path(store.path, ".gitignore")
    attributes.write_text("*.md text\n")
    ignore.write_text("notes/")  # no final newline
    assert setup(store) == 0
    first = capsys.readouterr().out
    assert "wrote" in first and "set: git config diff.fsstore.textconv" in first
    after = (attributes.read_bytes(), ignore.read_bytes(), attributes.stat().st_mtime_ns,
             ignore.stat().st_mtime_ns, (repo / ".git" / "config").read_bytes())
    assert attributes.read_text().startswith("*.md text\n\n" + BEGIN)
    assert ignore.read_text().startswith("notes/\n\n" + BEGIN)
    assert ignore.read_text().endswith(END + "\n")
    attributes.write_text(attributes.read_text() + "*.txt text\n")  # the user adds a line
    after = (attributes.read_bytes(), *after[1:2], attributes.stat().st_mtime_ns, *after[3:])
    assert setup(store) == 0
    second = capsys.readouterr().out
    assert "wrote" not in second and "already set" in second
    assert (attributes.read_bytes(), ignore.read_bytes(), attributes.stat().st_mtime_ns,
            ignore.stat().st_mtime_ns, (repo / ".git" / "config").read_bytes()) == after
    assert git(repo, "config", "--get", "diff.fsstore.textconv").strip() == COMMAND


def test_every_kind_of_file_is_routed_and_volatile_ones_are_ignored(tmp_path, capsys):
    repo = new_repo(tmp_path / "repo")
    store = build(repo / "agents")
    (Path(store.path) / "sessions" / "s" / "state" / ".tmp-x.snap-0badcafe").write_bytes(b"")
    (Path(store.path) / "notes.json").write_text("{}\n")  # the user's, beside the store
    assert setup(store) == 0
    capsys.readouterr()
    files = sorted(str(p.relative_to(repo)) for p in Path(store.path).rglob("*")
                   if p.is_file() and not p.name.startswith(".git"))
    ignored = set(git(repo, "check-ignore", "--no-index", *files).splitlines())
    volatile = ("writer.lock", "tail.hint", "messages.idx", "workspaces/lock")
    assert ignored == {f for f in files if f.endswith(volatile) or "/.tmp-" in f}
    tracked = [f for f in files if f not in ignored and not f.endswith("notes.json")]
    assert "diff: unspecified" in git(repo, "check-attr", "diff", "--", "agents/notes.json")
    assert any(f.endswith("/lease") for f in tracked)  # it holds the fencing tokens
    attributes = git(repo, "check-attr", "diff", "merge", "text", "--", *tracked).splitlines()
    for path in tracked:
        assert f"{path}: diff: fsstore" in attributes, path
        assert f"{path}: merge: binary" in attributes, path
        assert f"{path}: text: unset" in attributes, path


def test_print_runs_no_git_and_outside_a_work_tree_nothing_is_written(tmp_path, capsys):
    store = fsstore.open_store(tmp_path / "agents")
    assert main(["--store", store.path, "git-setup"]) == 2
    err = capsys.readouterr().err
    assert "not inside a git work tree" in err and err.count("\n") == 1
    assert not Path(store.path, ".gitattributes").exists()
    with pytest.raises(fsstore.GitSetupError, match="git init"):
        git_setup(store.path)
    assert main(["--store", store.path, "git-setup", "--print"]) == 0
    out = capsys.readouterr().out
    assert "git config diff.fsstore.textconv 'fsstore textconv'" in out
    assert Path(store.path, ".gitattributes").exists() and not (tmp_path / ".git").exists()


def test_a_block_that_is_not_whole_is_refused_and_nothing_is_written(tmp_path, capsys):
    repo = new_repo(tmp_path / "repo")
    store = fsstore.open_store(repo / "agents")
    Path(store.path, ".gitignore").write_text(f"mine\n{BEGIN}\nwriter.lock\n")
    assert setup(store) == 2
    assert "not whole" in capsys.readouterr().err
    assert not Path(store.path, ".gitattributes").exists()
    assert Path(store.path, ".gitignore").read_text() == f"mine\n{BEGIN}\nwriter.lock\n"
    with pytest.raises(subprocess.CalledProcessError):
        subprocess.run(["git", "-C", str(repo), "config", "--get", "diff.fsstore.textconv"],
                       check=True, capture_output=True)


def test_a_backup_committed_to_git_shows_the_events_since_the_last_backup(tmp_path, capsys):
    """README, "What a commit captures": a backup is a consistent point to commit while
    the agent keeps writing, and a second backup into the work tree shows as added lines."""
    store = fsstore.open_store(tmp_path / "live")
    session = store.create_session("s")  # open for writing throughout
    session.append({"role": "user", "content": "hello"}, kind="message")
    session.finish_turn()
    repo = new_repo(tmp_path / "repo")
    dest = str(repo / "agents")
    fsstore.backup_store(store, dest)
    assert main(["--store", dest, "git-setup", "--command", COMMAND]) == 0
    capsys.readouterr()
    commit(repo, "first backup")
    head = store.read_session("s").head
    session.append({"role": "assistant", "content": "hi", "raw": b"\x00"}, kind="message")
    session.finish_turn()
    fsstore.backup_store(store, dest)
    expected = [event_json(e) for e in
                store.read_session("s").events(after_seq=head, include_internal=True)]
    added, removed = added_and_removed(git(repo, "diff"), "/log/")
    assert (added, removed) == (expected, []) and len(expected) == 2
    assert "Binary files" not in git(repo, "diff")
    session.close()
