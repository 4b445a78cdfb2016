"""``fsstore verify --progress`` and ``fsstore stats --progress``: progress on stderr
even in a pipe, never in the output (``--json`` stays one JSON document)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import fsstore

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fsstore_cli(store, *args):
    return subprocess.run([sys.executable, "-m", "fsstore", "--store", store.path, *args],
                          capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": ROOT})


@pytest.fixture
def three(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    for number in range(3):
        with store.create_session(f"s{number}") as session:
            session.append({"n": number})
    return store


@pytest.mark.parametrize("command", [["verify"], ["stats", "--json"]])
def test_progress_goes_to_stderr_only_when_asked_in_a_pipe(three, command):
    pytest.importorskip("tqdm")
    quiet = fsstore_cli(three, *command)
    shown = fsstore_cli(three, *command, "--progress")
    assert quiet.returncode == shown.returncode == 0, shown.stderr
    assert quiet.stderr == ""
    assert command[0] in shown.stderr and "/3" in shown.stderr
    assert shown.stdout == quiet.stdout or command[0] == "stats"
    if command[0] == "stats":
        assert json.loads(shown.stdout)["sessions"] == json.loads(quiet.stdout)["sessions"]
