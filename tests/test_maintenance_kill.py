"""kill -9 of a real process in the middle of compaction, retention, vacuum and repair.

The crash simulator (tests/crashsim.py) covers power loss at every I/O call; this covers
the other crash users see: the process dies at an arbitrary instruction, its writes so far
stay in the page cache, its locks are released by the kernel. Each trial copies one
prepared store, runs the operation in a child process, kills it after a delay spread over
the operation's measured length, and then checks that the session opens, verifies, holds
what the operation keeps, and that the same operation run again finishes the job.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import fsstore
from fsstore.turns import LOST_RECORD, RECLAIMED_RECORD
from fsstore.work import INPUT_RECORD, QUEUE_RECORD

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = "the deploy script fails on a path with spaces; quote $1 and retry " * 3

#: Each operation, as the statement that runs it on ``store``.
OPERATIONS = {
    "compact": "store.compact()",
    "retain": "store.retain('s', keep_turns=5)",
    "vacuum": "store.vacuum()",
    "repair": "store.repair('s')",
}
OPS = tuple(OPERATIONS)

#: The child: prints GO, then runs the operation argv[2] on the store at argv[1].
CHILD = """
import sys
import fsstore
store = fsstore.open_store(sys.argv[1], create=False)
statement = sys.argv[2]
print("GO", flush=True)
exec(statement)
"""



def build(root: Path) -> None:
    """Session ``s``: 160 turns of messages, events, state and queue records over
    small segments, snapshots now and then (vacuum removes the superseded ones)."""
    store = fsstore.open_store(root, segment_size=8192, durability="none",
                               snapshots=fsstore.SnapshotPolicy(keep=8))
    with store.create_session("s") as session:
        for turn in range(1, 161):
            session.messages.append(fsstore.Message.of_text("user", f"{turn}: {TEXT}"))
            session.append({"tool": "read_file", "n": turn}, kind="tool_call", turn=turn)
            # about 5 MB of log in all, so that each operation lasts long enough to be
            # killed in the middle
            session.append_many([{"output": f"{turn}.{n} {TEXT}" * 4} for n in range(30)],
                                kind="tool_result", turn=turn)
            session.commit([], state_patch={"turn": turn, "note": TEXT[:40]})
            if turn % 4 == 0:
                item = session.queue.enqueue("job", {"turn": turn})
                claim = session.queue.claim("w", 60)
                assert claim is not None and claim.id == item
                session.queue.complete(claim)
            if turn % 10 == 0:
                session.snapshot()
            session.finish_turn(turn)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session every trial starts from, built once (it takes seconds)."""
    root = tmp_path_factory.mktemp("maintenance") / "built"
    build(root)
    return root


def template_for(built: Path, template: Path, op: str) -> None:
    """A copy of the built store; for repair, with a byte of a sealed segment flipped."""
    shutil.copytree(built, template)
    if op == "repair":
        segments = sorted((template / "sessions" / "s" / "log").glob("*.fslog"))
        data = bytearray(segments[3].read_bytes())
        data[300] ^= 0x40
        segments[3].write_bytes(bytes(data))


def records(store: fsstore.Store) -> list[tuple]:
    return [tuple(e) for e in store.read_session("s").events(include_internal=True)]


def folds(store: fsstore.Store) -> tuple:
    """What every operation keeps exact: the state, the queue, the inputs and the usage
    totals (retention drops old messages with the rest of old history)."""
    reader = store.read_session("s")
    return (reader.state(), [tuple(w) for w in reader.queue.items()],
            [tuple(i) for i in reader.inputs.items()], reader.usage())


def kept_by_vacuum(found: list[tuple]) -> list[tuple]:
    """The records a vacuum keeps as they were: all but the queue's and the inputs' (it
    replaces those of finished work by markers, docs/FORMAT.md 17.2)."""
    return [r for r in found if r[3] not in (QUEUE_RECORD, INPUT_RECORD, RECLAIMED_RECORD)]


def problems(store: fsstore.Store) -> list:
    return [f for f in store.verify() if f.level == "problem"]


def run_child(store_path: Path, op: str, kill_after: float) -> None:
    """Run ``op`` in a child and kill it (SIGKILL) ``kill_after`` seconds after it
    starts the operation."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(store_path), OPERATIONS[op]],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    assert child.stdout is not None
    first = child.stdout.readline()
    assert first.strip() == "GO", first + child.stdout.read()
    time.sleep(kill_after)
    child.send_signal(signal.SIGKILL)
    child.stdout.read()
    child.wait(timeout=60)


class Expect:
    """What a session must hold after ``op`` was killed at any moment, then run again."""

    def __init__(self, template: Path, op: str) -> None:
        store = fsstore.open_store(template, create=False)
        self.op = op
        self.before = records(store) if op != "repair" else None
        self.folds = folds(store) if op != "repair" else None
        if op == "repair":
            self.lost = [(r.first, r.last) for r in store.repair("s", dry_run=True).lost]
            assert self.lost

    def check_killed(self, store: fsstore.Store, where: str) -> None:
        """A session killed in the middle of the operation: opens and holds a state the
        operation allows (before, or after, or between for retention)."""
        if self.op == "repair":
            with store.open_session("s"):  # opens, recovering what the writer can
                pass
            return  # damaged until the repair completes: the next run finishes it
        assert problems(store) == [], where
        assert folds(store) == self.folds, where
        found = records(store)
        if self.op == "retain":
            start = store.read_session("s").history_start
            assert found == [r for r in self.before if r[0] >= start], where
        elif self.op == "compact":
            assert found == self.before, where
        else:
            assert kept_by_vacuum(found) == kept_by_vacuum(self.before), where

    def check_finished(self, store: fsstore.Store, where: str) -> None:
        assert problems(store) == [], where
        if self.op == "repair":
            report = store.repair("s", dry_run=True)
            assert report.lost == [], where
            lost = [e.seq for e in store.read_session("s").events(include_internal=True)
                    if e.kind == LOST_RECORD]
            assert lost == [s for first, last in self.lost for s in range(first, last + 1)], where
            return
        assert folds(store) == self.folds, where
        if self.op == "retain":
            reader = store.read_session("s")
            assert reader.history_start > 1, where
            assert records(store) == [r for r in self.before if r[0] >= reader.history_start]
        elif self.op == "compact":
            assert records(store) == self.before, where
        else:
            assert kept_by_vacuum(records(store)) == kept_by_vacuum(self.before), where


def run(store_path: Path, op: str) -> float:
    """``op`` run to its end in this process; how long it took."""
    store = fsstore.open_store(store_path, create=False)
    started = time.perf_counter()
    exec(OPERATIONS[op], {"store": store})
    return time.perf_counter() - started


def kill_trials(built: Path, tmp_path: Path, op: str, trials: int) -> None:
    template = tmp_path / "template"
    template_for(built, template, op)
    expect = Expect(template, op)
    whole = tmp_path / "whole"
    shutil.copytree(template, whole)
    length = run(whole, op)
    expect.check_finished(fsstore.open_store(whole, create=False), "uninterrupted")
    for trial in range(trials):
        folder = tmp_path / f"trial-{trial}"
        shutil.copytree(template, folder)
        # The first in the middle of the operation, the next spread over its length
        # and a little past it (a slower run)
        run_child(folder, op, length * 1.2 * ((0.42 + 0.618 * trial) % 1.0))
        store = fsstore.open_store(folder, create=False)
        where = f"{op}, killed at {trial}/{trials}"
        expect.check_killed(store, where)
        run(folder, op)  # the same operation again finishes the job
        expect.check_finished(fsstore.open_store(folder, create=False), where)
        shutil.rmtree(folder)


@pytest.mark.parametrize("op", OPS)
def test_a_maintenance_process_killed_at_any_moment_leaves_a_session_that_opens_whole(
        built, tmp_path, op):
    kill_trials(built, tmp_path, op, trials=1)


@pytest.mark.long
@pytest.mark.parametrize("op", OPS)
def test_a_maintenance_process_killed_at_many_moments_leaves_a_session_that_opens_whole(
        built, tmp_path, op):
    kill_trials(built, tmp_path, op, trials=40)

