"""Reclaim (fsstore/reclaim.py): a vacuum replaces the queue and input records of done
work in sealed segments by ``fsstore.reclaimed`` markers, and every fold of the session
(state, queue, inputs, usage) stays what it was: from the new snapshot, from an older
one, from the log start, in a reader that read part of the log before the rewrite, and
after a crash at any I/O call. Items a checkpoint or a retention base holds, and forks
sharing a file, keep their records."""

from __future__ import annotations

import copy
import os
import random
import shutil
from pathlib import Path

import pytest
from crashsim import CrashSimIO
from procs import Child

import fsstore
from fsstore import SnapshotPolicy, compaction, reclaim, state
from fsstore.fsio import FileIO
from fsstore.log import LogReader
from fsstore.snapshot import SnapshotDir
from fsstore.turns import RECLAIMED_RECORD

POLICY = SnapshotPolicy(every_events=None, every_bytes=None, keep=3)
PAD = "filler that pushes the work into sealed segments " * 4


def open_store(root, io=None) -> fsstore.Store:
    return fsstore.open_store(root, create=False, io=io, snapshots=POLICY)


def fill(session, n: int = 8) -> None:
    session.append_many([{"pad": PAD, "i": i} for i in range(n)])


def build(root, *, rounds: int = 3, segment_size: int = 4096,
          chain: bool | None = None) -> fsstore.Store:
    """A session ``s`` with queue items and inputs in every status, state and messages:
    completed items, purged dead letters and pruned inputs (done work) and ready,
    claimed, retrying, dead, pending, claimed and consumed ones (live work)."""
    store = fsstore.open_store(root, segment_size=segment_size, snapshots=POLICY,
                               chain=chain)
    with store.create_session("s") as session:
        for r in range(rounds):
            session.set_state("round", r)
            session.messages.append(fsstore.Message.of_text("user", f"round {r}"))
            session.queue.enqueue_many([("job", {"r": r, "n": n}) for n in range(6)])
            for _ in range(6):
                session.queue.complete(session.queue.claim("w", 600))
            session.queue.enqueue("doomed", {"r": r}, max_attempts=1)
            session.queue.fail(session.queue.claim("w", 600), "boom")
            session.queue.purge()
            session.inputs.submit({"r": r})
            session.inputs.claim()
            session.finish_turn()
            session.inputs.prune(0)
            fill(session)
        # live work of every status
        session.queue.enqueue("ready", {"x": 1})
        session.queue.enqueue("claimed", {"x": 2})
        session.queue.claim("w", 600, kinds=["claimed"])
        session.queue.enqueue("retry", {"x": 3})
        session.queue.fail(session.queue.claim("w", 600, kinds=["retry"]), "again")
        session.queue.enqueue("dead", {"x": 4}, max_attempts=1)
        session.queue.fail(session.queue.claim("w", 600, kinds=["dead"]), "gone")
        session.inputs.submit({"consumed": True})
        session.inputs.claim()
        session.finish_turn()
        session.inputs.submit({"claimed": True})
        session.inputs.claim()
        session.inputs.submit({"pending": True})
        session.set_state("done", True)
        fill(session, 12)
    return store


def fold(root, until_seq=None, *, snapshots: bool = True) -> tuple:
    """The whole fold of session ``s`` as a fresh load reads it: state, queue, inputs,
    usage (and the seq it is at)."""
    log, snaps = log_and_snapshots(root, snapshots=snapshots)
    image = state.load(FileIO(), log, snaps, until_seq=until_seq).image
    return image_parts(image)


def log_and_snapshots(root, *, snapshots: bool = True) -> tuple[LogReader, SnapshotDir]:
    """Session ``s``'s log and snapshots (an empty folder's unless ``snapshots``), read
    as its reader reads them: a chained session's under its chain."""
    path = os.path.join(str(root), "sessions", "s")
    io = FileIO()
    session = open_store(root).read_session("s")
    rules, identity = session.chain_rules, session.identity
    folder = path if snapshots else os.path.join(path, "no-snapshots")
    log = LogReader(io, os.path.join(path, "log"))
    log.chain = rules
    return log, SnapshotDir(io, folder, identity, rules)


def image_parts(image: state.StateImage) -> tuple:
    return copy.deepcopy((image.state, image.work.items, image.inputs.items,
                          image.usage.body()))


def records(store, kind: str) -> list:
    return [e for e in store.read_session("s").events(include_internal=True) if e.kind == kind]


def problems(store) -> list:
    return [f for f in store.verify() if f.level == "problem"]


@pytest.mark.parametrize("chain", [False, True], ids=["unchained", "chained"])
def test_vacuum_reclaims_done_work_and_every_fold_stays_the_same(tmp_path, chain):
    store = build(tmp_path / "store", chain=chain)
    before = fold(store.path)
    seqs = [e.seq for e in store.read_session("s").events(include_internal=True)]
    queue_before = len(records(store, "fsstore.queue"))
    with open_store(store.path).open_session("s") as session:
        report = session.vacuum()
        # the writer's own image, and what it lists
        assert image_parts(session._loaded()) == before
        assert [q.kind for q in session.queue.items()] == ["ready", "claimed", "retry", "dead"]
    assert report.findings == ()
    reclaimed = report.removed["queue_records"].count + report.removed["input_records"].count
    assert report.removed["queue_records"].count > 20
    assert report.removed["input_records"].count >= 6
    assert report.removed["queue_records"].bytes > 0
    assert reclaimed == len(records(store, RECLAIMED_RECORD))
    assert len(records(store, "fsstore.queue")) == queue_before - (
        report.removed["queue_records"].count)
    # seqs stay gapless, and every fold gives what it gave before
    assert [e.seq for e in store.read_session("s").events(include_internal=True)] == seqs
    assert fold(store.path) == before
    assert fold(store.path, snapshots=False) == before  # from the log start
    assert problems(store) == []
    # the live items keep every record; the markers name only done items
    work, inputs = before[1], before[2]
    for marker in records(store, RECLAIMED_RECORD):
        assert not set(marker.data.get("queue", [])) & set(work)
        assert not set(marker.data.get("inputs", [])) & set(inputs)
    kept = {e.seq for e in records(store, "fsstore.queue")}
    assert set(work) <= kept
    # events() of the caller's history does not show them; turns are unchanged
    assert all(e.kind != RECLAIMED_RECORD for e in store.read_session("s").events())
    # a second vacuum has nothing left to reclaim, and writes no log file
    log = Path(store.path) / "sessions" / "s" / "log"
    files = {p.name: p.stat().st_ino for p in log.iterdir()}
    with open_store(store.path).open_session("s") as session:
        again = session.vacuum()
    assert again.removed["queue_records"].count == again.removed["input_records"].count == 0
    assert {p.name: p.stat().st_ino for p in log.iterdir()} == files


def test_a_reclaimed_frame_keeps_its_size_so_messages_and_positions_still_read(tmp_path):
    store = build(tmp_path / "store")
    reader = store.read_session("s")
    texts = [m.text for m in reader.messages.last(100)]
    sizes = {e.seq: None for e in reader.events(include_internal=True)}
    with open_store(store.path).open_session("s") as session:
        session.vacuum()
    reader = open_store(store.path).read_session("s")
    assert [m.text for m in reader.messages.last(100)] == texts
    assert [e.seq for e in reader.events(include_internal=True)] == list(sizes)
    # a marker keeps the frame's ts and turn; the frame's padding is in the first one
    markers = records(store, RECLAIMED_RECORD)
    assert all(set(m.data) <= {"queue", "inputs", "pad"} for m in markers)


@pytest.mark.parametrize("chain", [False, True], ids=["unchained", "chained"])
def test_a_dry_run_reports_what_the_vacuum_then_reclaims_and_changes_no_byte(tmp_path,
                                                                           chain):
    store = build(tmp_path / "store", chain=chain)
    with open_store(store.path).open_session("s") as session:
        session.snapshot()
        session.append({"after": 1})
        session.snapshot()
    root = Path(store.path)

    def tree():
        return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()
                and p.name != "writer.lock"}
    files = tree()
    with open_store(store.path).open_session("s") as session:
        dry = session.vacuum(dry_run=True)
    assert tree() == files
    with open_store(store.path).open_session("s") as session:
        real = session.vacuum()
    for kind in ("queue_records", "input_records", "snapshots"):
        assert dry.removed[kind] == real.removed[kind], kind
    # the snapshot at the head stays; the one before it goes
    assert real.removed["snapshots"].count == 1


def test_a_load_from_a_snapshot_older_than_the_reclaim_falls_back_and_folds_the_same(
        tmp_path):
    """Another process that chose an older snapshot just before the rewrite (or one that
    the vacuum could not remove) must not keep work whose finishing records are now
    markers."""
    root = tmp_path / "store"
    store = fsstore.open_store(root, segment_size=4096, snapshots=POLICY)
    with store.create_session("s") as session:
        ids = session.queue.enqueue_many([("job", {"n": n}) for n in range(8)])
        claims = [session.queue.claim("w", 600) for _ in range(8)]
        session.set_state("at", "snapshot")  # the snapshot's frame: a state record
        old = session.snapshot()
        for claim in claims:
            session.queue.complete(claim)
        fill(session, 20)
    _log, snaps = log_and_snapshots(root)
    old_path = snaps.file_path(old)
    old_bytes = Path(old_path).read_bytes()
    before = fold(root)
    assert before[1] == {}
    with open_store(root).open_session("s") as session:
        assert session.vacuum().removed["queue_records"].count >= 16
    assert not os.path.exists(old_path)  # removed: older than the reclaim
    Path(old_path).write_bytes(old_bytes)  # as a process that read it before
    held = state.StateImage.from_file(snaps.read(old_path), 10_000, old_path)
    assert set(held.work.items) == set(ids)  # the snapshot holds the done items
    assert fold(root) == before  # from the newer snapshot
    # inside the reclaimed range, where the items were still open, a read is refused
    # (not from the old snapshot, which holds them: from the log start, which lacks them)
    with pytest.raises(fsstore.SeqOutOfRange, match="reclaimed"):
        fold(root, until_seq=old + 1)
    for seq in snaps.seqs():
        if seq != old:
            os.unlink(snaps.file_path(seq))
    assert fold(root) == before  # from the log start
    reader = open_store(root).read_session("s")
    assert reader.queue.items() == [] and reader.state()["at"] == "snapshot"


def test_a_fold_that_read_records_before_the_rewrite_drops_the_items_markers_name(tmp_path):
    """An image folded up to a seq before the reclaim (a shared writer's, a reader's)
    that catches up over the rewritten log drops the done items it held."""
    root = tmp_path / "store"
    store = fsstore.open_store(root, segment_size=4096, snapshots=POLICY)
    with store.create_session("s") as session:
        session.queue.enqueue_many([("job", {"n": n}) for n in range(8)])
        claims = [session.queue.claim("w", 600) for _ in range(8)]
        session.set_state("at", "image")
        log, snaps = log_and_snapshots(root)
        image = state.load(FileIO(), log, snaps).image
        session._writer.flush()
        position, seq = session._writer.position, image.seq
        for claim in claims:
            session.queue.complete(claim)
        fill(session, 20)
    with open_store(root).open_session("s") as session:
        session.vacuum()
    assert len(image.work.items) == 8
    log, _snaps = log_and_snapshots(root)
    state.catch_up(log, image, position, seq, log.tail().head)
    assert image_parts(image) == fold(root)
    assert image.work.items == {}


def test_items_a_checkpoint_or_a_retention_base_holds_keep_their_records(tmp_path):
    root = tmp_path / "store"
    store = fsstore.open_store(root, segment_size=4096, snapshots=POLICY)
    with store.create_session("s") as session:
        first = session.queue.enqueue("in-base", {})
        fill(session, 12)
        session.retain(keep="state")  # the base holds "in-base" as ready
        second = session.queue.enqueue("in-checkpoint", {})
        session.checkpoint(checkpoint_id="c1")
        third = session.queue.enqueue("plain", {})
        for _ in range(3):
            session.queue.complete(session.queue.claim("w", 600))
        fill(session, 20)
        before = image_parts(session._loaded())
        session.vacuum()
    names = {e.data.get("queue", [None])[0] for e in records(store, RECLAIMED_RECORD)}
    assert third in names and first not in names and second not in names
    assert fold(root) == before and fold(root, snapshots=False) == before
    assert problems(store) == []
    reader = store.read_session("s")
    assert reader.load_checkpoint("c1") == {}
    assert [q.kind for q in reader.queue.items()] == []


def test_a_fork_sharing_a_file_keeps_its_own_records(tmp_path):
    store = build(tmp_path / "store")
    store.fork_session("s", "f")
    fork_events = [tuple(e) for e in store.read_session("f").events(include_internal=True)]
    fork_queue = store.read_session("f").queue.items()
    with open_store(store.path).open_session("s") as session:
        assert session.vacuum().removed["queue_records"].count > 0
    again = open_store(store.path).read_session("f")
    assert [tuple(e) for e in again.events(include_internal=True)] == fork_events
    assert again.queue.items() == fork_queue
    assert problems(store) == []


@pytest.mark.parametrize("chain", [pytest.param(False, marks=pytest.mark.long), True],
                         ids=["unchained", "chained"])
def test_every_crash_state_of_a_reclaiming_vacuum_opens_and_folds_the_same(tmp_path, chain):
    root = tmp_path / "store"
    build(root, rounds=2, chain=chain)
    before = fold(root)
    head = open_store(root).read_session("s").head
    io = CrashSimIO(str(root))
    states = io.record_states(tmp_path / "states")
    with open_store(root, io=io).open_session("s") as session:
        report = session.vacuum()
    io.on_op = None
    assert report.removed["queue_records"].count > 0 and len(states) > 20
    markers = set()
    for dest in states:
        assert fold(dest) == before, dest
        assert fold(dest, snapshots=False) == before, dest
        store = open_store(dest)
        assert store.read_session("s").head == head
        assert problems(store) == [], dest
        markers.add(len(records(store, RECLAIMED_RECORD)))
        with store.open_session("s") as session:  # a later vacuum finishes the work
            session.vacuum()
        assert fold(dest) == before
        shutil.rmtree(dest)
    assert len(markers) > 2  # crashes before, amid and after the rewrites


def reading_child(root: str) -> None:
    """A reader in another process: loads the fold over and over while vacuums rewrite
    the log, and prints it each time it differs from the first (work of the kind
    "transient" comes and goes meanwhile, and is left out)."""
    store = fsstore.open_store(root, create=False)
    first = None
    print("READY", flush=True)
    loads = 0
    while not os.path.exists(os.path.join(root, "stop")):
        reader = store.read_session("s")
        seen = (reader.state(), [tuple(q) for q in reader.queue.items()
                                 if q.kind != "transient"],
                [tuple(i) for i in reader.inputs.items()])
        first = seen if first is None else first
        if seen != first:
            print("DIFFERS", seen, flush=True)
        loads += 1
    print(f"LOADS {loads} END", flush=True)


def test_a_reader_in_another_process_folds_the_same_during_reclaims(tmp_path):
    root = tmp_path / "store"
    build(root, rounds=4)
    with Child.function(reading_child, str(root)) as child:
        child.wait_for("READY")
        with open_store(root).open_session("s") as session:
            reclaimed = 0
            for _ in range(6):
                session.queue.enqueue_many([("transient", {"n": n}) for n in range(10)])
                for _ in range(10):
                    session.queue.complete(session.queue.claim("w", 600,
                                                               kinds=["transient"]))
                fill(session)
                reclaimed += session.vacuum().removed["queue_records"].count
        Path(root, "stop").write_text("")
        out = child.finish()
    assert not any("DIFFERS" in line for line in out), out
    assert any(line.startswith("LOADS") for line in out), out
    assert reclaimed > 50


def log_files(root) -> dict[str, bytes]:
    log = Path(root) / "sessions" / "s" / "log"
    return {p.name: p.read_bytes() for p in log.iterdir() if p.name.endswith(".fslog")}


def test_a_compaction_holding_the_log_folder_stops_the_reclaim_and_changes_no_file(
        tmp_path, monkeypatch):
    store = build(tmp_path / "store", rounds=2)
    files = log_files(store.path)
    monkeypatch.setattr(reclaim, "LOCK_TIMEOUT", 0.05)
    log = os.path.join(store.path, "sessions", "s", "log")
    with compaction.log_folder_lock(log, 0), open_store(store.path).open_session(
            "s") as session:
        report = session.vacuum()
    assert report.removed["queue_records"].count == 0
    assert [f.message for f in report.findings if "compaction" in f.message]
    assert log_files(store.path) == files


def test_a_damaged_checkpoint_stops_the_reclaim_and_changes_no_file(tmp_path):
    store = build(tmp_path / "store", rounds=2)
    with open_store(store.path).open_session("s") as session:
        session.checkpoint(checkpoint_id="c1")
    files = log_files(store.path)
    path = os.path.join(store.path, "sessions", "s", "checkpoints")
    (name,) = [n for n in os.listdir(path) if not n.startswith(".")]
    data = bytearray(Path(path, name).read_bytes())
    data[-3] ^= 0xFF
    Path(path, name).write_bytes(bytes(data))
    with open_store(store.path).open_session("s") as session:
        report = session.vacuum()
    assert report.removed["queue_records"].count == 0
    assert any("what the checkpoints hold is unknown" in f.message for f in report.findings)
    assert log_files(store.path) == files


def random_work(session, rng: random.Random, claims: list) -> None:
    """One random queue, input, state or filler operation."""
    op = rng.randrange(10)
    if op == 0:
        session.queue.enqueue_many([("job", {"n": rng.randrange(100)})
                                    for _ in range(rng.randrange(1, 6))],
                                   max_attempts=rng.choice([1, 2, 3]))
    elif op in (1, 2):
        claim = session.queue.claim("w", 600)
        if claim is not None:
            claims.append(claim)
    elif op in (3, 4) and claims:
        claim = claims.pop(rng.randrange(len(claims)))
        action = rng.choice(["complete", "complete", "fail", "release"])
        try:
            if action == "fail":
                session.queue.fail(claim, "no")
            else:
                getattr(session.queue, action)(claim)
        except fsstore.errors.ClaimLost:
            pass
    elif op == 5:
        session.queue.purge()
    elif op == 6:
        session.inputs.submit({"n": rng.randrange(100)})
    elif op == 7:
        session.inputs.claim()
        if rng.random() < 0.7:
            session.finish_turn()
    elif op == 8:
        session.inputs.prune(0)
        session.set_state(f"k{rng.randrange(5)}", rng.randrange(100))
    else:
        fill(session, rng.randrange(1, 6))


def check_random_vacuums(root, seed: int, steps: int, chain: bool | None = None) -> None:
    rng = random.Random(seed)
    store = fsstore.open_store(root, segment_size=4096, snapshots=SnapshotPolicy(
        every_events=rng.choice([None, 50]), every_bytes=None, keep=2), chain=chain)
    reclaimed = 0
    with store.create_session("s") as session:
        session.set_state("k0", 0)
        claims: list = []
        for step in range(steps):
            random_work(session, rng, claims)
            if step % 40 == 39:
                before = fold(root)
                report = session.vacuum()
                assert report.findings == ()
                reclaimed += report.removed["queue_records"].count
                assert image_parts(session._loaded()) == before, (seed, step)
                assert fold(root) == before, (seed, step)
                assert fold(root, snapshots=False) == before, (seed, step)
    assert problems(store) == []
    assert reclaimed > 0


@pytest.mark.parametrize("chain", [False, True], ids=["unchained", "chained"])
def test_random_work_between_vacuums_folds_the_same_after_each(tmp_path, chain):
    check_random_vacuums(tmp_path / "store", 1, 240, chain)


@pytest.mark.long
@pytest.mark.parametrize("seed", range(2, 22))
def test_random_work_between_vacuums_folds_the_same_after_each_long(tmp_path, seed):
    check_random_vacuums(tmp_path / "store", seed, 1200)


def test_a_damaged_older_snapshot_stays_and_is_reported_while_the_others_go(tmp_path):
    store = build(tmp_path / "store", rounds=2)
    with open_store(store.path).open_session("s") as session:
        older = [session.snapshot()]
        session.append({"more": 1})
        older.append(session.snapshot())
        session.append({"more": 2})
    snaps = SnapshotDir(FileIO(), os.path.join(store.path, "sessions", "s"))
    damaged = Path(snaps.file_path(older[0]))
    data = bytearray(damaged.read_bytes())
    data[10] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with open_store(store.path).open_session("s") as session:
        report = session.vacuum()
    assert report.removed["queue_records"].count > 0
    assert damaged.exists() and any(f.path == str(damaged) for f in report.findings)
    assert not os.path.exists(snaps.file_path(older[1]))
    assert fold(store.path)[1:3] == fold(store.path, snapshots=False)[1:3]


VACUUM_ON_SIGNAL = """
import os, sys, time, fsstore
store = fsstore.open_store(sys.argv[1], create=False)
session = store.open_session("s")
print("READY", flush=True)
while not os.path.exists(sys.argv[2]):
    time.sleep(0.01)
report = session.vacuum()
print("VACUUMED", report.removed["queue_records"].count, flush=True)
session.close()
"""


def test_a_fork_racing_a_vacuum_in_another_process_folds_the_files_it_links(
        tmp_path, monkeypatch):
    """A fork by a reader (the writer is open in another process) folds its snapshot
    from the very files it links: a vacuum that rewrites them between the two is held
    off by the log folder lock, so the fork never gets a snapshot its log contradicts."""

    root = tmp_path / "store"
    store = fsstore.open_store(root, segment_size=4096,
                               snapshots=SnapshotPolicy(every_events=None, every_bytes=None))
    with store.create_session("s") as session:
        session.queue.enqueue("job", {"n": 1})
        session.append_many([{"pad": "filler " * 40, "i": i} for i in range(10)])
        fork_at = session.head
        claim = session.queue.claim("w", 600)
        assert claim is not None
        session.queue.complete(claim)
        session.append_many([{"pad": "filler " * 40, "i": i} for i in range(30)])
    go = tmp_path / "go"
    with Child.script(VACUUM_ON_SIGNAL, root, go) as writer:
        writer.wait_for("READY")
        real = compaction.log_folder_lock

        def vacuum_first(path, timeout):  # the vacuum runs just before the fork links
            go.touch()
            writer.wait_for("VACUUMED")
            return real(path, timeout)

        monkeypatch.setattr(compaction, "log_folder_lock", vacuum_first)
        # folded from the files the vacuum wrote: the job was open at the fork's seq and
        # its records are reclaimed, so the fork is refused (not made with a snapshot
        # its own log contradicts)
        with pytest.raises(fsstore.SeqOutOfRange, match="reclaimed"):
            store.fork_session("s", "f", at_seq=fork_at)
        writer.finish()
    assert not store.has_session("f")
    assert [f for f in store.verify() if f.level == "problem"] == []


def test_a_checkpoint_taken_right_after_done_work_keeps_its_position(tmp_path):
    """The frame ending at a checkpoint's seq is named by the checkpoint's position (with
    its crc): a vacuum leaves it as it is, so loading at the checkpoint still starts
    from it, with no note of a log that no longer holds its record."""
    store = fsstore.open_store(tmp_path / "store", segment_size=4096,
                               snapshots=SnapshotPolicy(every_events=None, every_bytes=None))
    with store.create_session("s") as session:
        session.set_state("k", 1)
        session.queue.enqueue("job", {"x": 1})
        claim = session.queue.claim("w", 600)
        assert claim is not None
        session.queue.complete(claim)  # the frame ending at the checkpoint's seq
        session.checkpoint(checkpoint_id="c1")
        at = session.head
        session.append_many([{"pad": "filler " * 40, "i": i} for i in range(30)])
        report = session.vacuum()
    assert report.removed["queue_records"].count == 2  # the enqueue and the claim
    reader = store.read_session("s")
    assert reader.state_at(at) == {"k": 1} and reader.state_findings == []
    assert store.verify() == [] or all(f.level == "note" and "skipped" not in f.message
                                       for f in store.verify())


def test_a_state_or_fork_inside_reclaimed_open_work_is_refused_elsewhere_it_reads(tmp_path):
    """A past state folded from the log start would miss work a vacuum reclaimed that
    was still open at that seq: refused (SeqOutOfRange), changing nothing; before the
    work began, after it ended and at a checkpoint it reads as before the vacuum."""
    store = fsstore.open_store(tmp_path / "store", segment_size=4096,
                               snapshots=SnapshotPolicy(every_events=None, every_bytes=None))
    pad = [{"pad": "filler " * 40, "i": i} for i in range(10)]
    with store.create_session("s") as session:
        session.set_state("k", 1)
        before_work = session.head
        session.queue.enqueue("job", {"x": 1})
        session.inputs.submit({"in": 1})
        session.append_many(pad)
        session.checkpoint(checkpoint_id="c1")  # holds the job: its records stay
        session.queue.enqueue("later", {"x": 2})
        session.append_many(pad)
        open_work = session.head  # "later" is open here
        for _ in range(2):
            claim = session.queue.claim("w", 600)
            assert claim is not None
            session.queue.complete(claim)
        session.set_state("k", 2)
        after_work = session.head
        session.append_many(pad * 3)
    reader = store.read_session("s")
    expect = {seq: reader.state_at(seq) for seq in (before_work, after_work)}
    with store.open_session("s") as session:
        assert session.vacuum().removed["queue_records"].count > 0
    reader = store.read_session("s")
    with pytest.raises(fsstore.SeqOutOfRange, match="reclaimed"):
        reader.state_at(open_work)
    with pytest.raises(fsstore.SeqOutOfRange, match="reclaimed"):
        store.fork_session("s", "f", at_seq=open_work)
    assert not store.has_session("f")
    assert {seq: reader.state_at(seq) for seq in expect} == expect == {
        before_work: {"k": 1}, after_work: {"k": 2}}
    store.fork_session("s", "at-checkpoint", at_checkpoint="c1").close()
    fork = store.read_session("at-checkpoint")
    assert [w.kind for w in fork.queue.items()] == ["job"]
    assert [f for f in store.verify() if f.level == "problem"] == []
