"""fsstore repair: a damaged session rewritten so that it verifies (FORMAT.md 7.6)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from crashsim import CrashSimIO

import fsstore
from fsstore.cli import main
from fsstore.errors import CorruptionError, SessionLocked
from fsstore.turns import LOST_RECORD


def build(root: Path) -> tuple[fsstore.Store, list[str]]:
    """A session ``s`` of 60 turns over small segments, with state and a checkpoint."""
    store = fsstore.open_store(root, segment_size=4096)
    with store.create_session("s") as session:
        for turn in range(1, 61):
            session.append({"turn": turn, "text": "x" * 120}, kind="note", turn=turn)
            session.commit([], state_patch={"turn": turn})
            session.finish_turn(turn)
            if turn == 50:
                session.checkpoint(checkpoint_id="late")
    log = Path(root) / "sessions" / "s" / "log"
    return store, sorted(str(p) for p in log.glob("*.fslog"))


def folder_hash(path: Path) -> str:
    digest = hashlib.sha256()
    for item in sorted(path.rglob("*")):
        if item.is_file():
            digest.update(str(item).encode() + item.read_bytes())
    return digest.hexdigest()


def notes(store: fsstore.Store) -> list[int]:
    return [e.data["turn"] for e in store.read_session("s").events() if e.kind == "note"]


def problems(store: fsstore.Store) -> list:
    return [f for f in store.verify() if f.level == "problem"]


def flip(path: str, at: int) -> None:
    data = bytearray(Path(path).read_bytes())
    data[at] ^= 0x40
    Path(path).write_bytes(bytes(data))


def test_a_damaged_sealed_segment_is_repaired_keeping_every_record_that_verifies(tmp_path):
    store, files = build(tmp_path / "store")
    head = store.read_session("s").head
    flip(files[2], 200)
    with pytest.raises(CorruptionError):
        notes(store)
    folder = Path(store.path) / "sessions" / "s"
    before = folder_hash(folder)
    planned = store.repair("s", dry_run=True)
    assert planned.dry_run and planned.lost and folder_hash(folder) == before
    report = store.repair("s")
    assert report.repaired and report.replaced == [files[2]]
    assert [(r.first, r.last) for r in report.lost] == [(r.first, r.last) for r in planned.lost]
    assert problems(store) == []
    kept = notes(store)
    assert kept == sorted(kept) and 50 < len(kept) < 60
    everything = list(store.read_session("s").events(include_internal=True))
    assert [e.seq for e in everything] == list(range(1, head + 1))  # gapless, same head
    lost = {e.seq for e in everything if e.kind == LOST_RECORD}
    assert lost == {s for r in report.lost for s in range(r.first, r.last + 1)}
    copy = Path(report.aside) / "log" / os.path.basename(files[2])
    assert copy.exists()  # the damaged file, as it was
    with store.open_session("s") as session:  # a writer goes on after the lost seqs
        assert session.append({"turn": 99}, kind="note", turn=99) == head + 1
    assert store.repair("s").repaired is False  # nothing left to repair


def test_a_missing_middle_segment_becomes_lost_records_of_its_seqs(tmp_path):
    store, files = build(tmp_path / "store")
    head = store.read_session("s").head
    missing = int(os.path.basename(files[3])[:20]), int(os.path.basename(files[4])[:20]) - 1
    os.unlink(files[3])
    report = store.repair("s")
    assert [(r.first, r.last) for r in report.lost] == [missing]
    assert problems(store) == []
    assert store.read_session("s").head == head


def test_state_records_lost_leave_the_fold_of_what_survived(tmp_path):
    store, files = build(tmp_path / "store")
    with store.open_session("s") as session:
        session.snapshot()
    flip(files[1], 100)
    report = store.repair("s")
    assert report.set_aside  # the snapshot after the loss held what lost records did
    reader = store.read_session("s")
    assert reader.state() == {"turn": 60}  # later records set it again
    assert reader.load_checkpoint("late") == {"turn": 50}  # the user's checkpoint stays
    findings = store.verify()
    assert [f for f in findings if f.level == "problem"] == []


def test_a_damaged_last_segment_below_its_synced_mark_is_repaired(tmp_path):
    store, files = build(tmp_path / "store")
    head = store.read_session("s").head
    flip(files[-1], 100)
    with pytest.raises(CorruptionError):
        notes(store)
    store.repair("s")
    assert problems(store) == []
    assert store.read_session("s").head == head
    with store.open_session("s") as session:
        session.append({"turn": 61}, kind="note", turn=61)


def test_repair_refuses_while_a_writer_has_the_session(tmp_path):
    store, files = build(tmp_path / "store")
    with store.open_session("s"), pytest.raises(SessionLocked):
        store.repair("s")


def test_every_crash_state_of_a_repair_opens_and_a_second_repair_finishes_it(tmp_path):
    root = tmp_path / "store"
    store, files = build(root)
    flip(files[2], 200)
    expect = store.repair("s", dry_run=True)
    io = CrashSimIO(str(root))
    states = io.record_states(tmp_path)
    fsstore.open_store(root, io=io, create=False).repair("s")
    io.on_op = None
    assert len(states) > 10
    for dest in states[::3] + states[-4:]:  # every third state, and the last ones
        crashed = fsstore.open_store(dest, create=False)
        report = crashed.repair("s")
        assert [(r.first, r.last) for r in report.lost] in (
            [], [(r.first, r.last) for r in expect.lost]), dest
        assert problems(crashed) == [], dest
        assert notes(crashed) == notes(store), dest


def test_the_command_shows_the_plan_and_repairs_only_with_yes(tmp_path, capsys):
    store, files = build(tmp_path / "store")
    flip(files[2], 200)
    folder = Path(store.path) / "sessions" / "s"
    before = folder_hash(folder)
    assert main(["--store", store.path, "repair", "s"]) == 1
    assert "lost" in capsys.readouterr().out and folder_hash(folder) == before
    assert main(["--store", store.path, "repair", "s", "--yes", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["repaired"] and report["lost"]
    assert main(["--store", store.path, "verify"]) == 0


@pytest.mark.parametrize("dry_run", [True, False])
def test_repair_steps_once_per_segment_for_a_progress_bar(tmp_path, dry_run):
    store, files = build(tmp_path / "store")
    flip(files[2], 200)
    steps: list[int] = []
    store.repair("s", dry_run=dry_run, on_segment=steps.append)
    assert steps == [int(Path(f).name.split(".")[0]) for f in files]


def test_repair_on_a_terminal_draws_a_bar_as_long_as_the_log(tmp_path, monkeypatch, capsys):
    pytest.importorskip("tqdm")
    store, files = build(tmp_path / "store")
    flip(files[2], 200)
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    assert main(["--store", str(tmp_path / "store"), "repair", "s"]) == 1
    assert f"/{len(files)} " in capsys.readouterr().err
