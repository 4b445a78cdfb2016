"""Crash tests: simulated power loss at every I/O call, and real kill -9 of a writer.

The default run keeps each short; ``--long`` runs many more seeds and trials.
"""

from __future__ import annotations

import copy
import json
import os
import random
import shutil
import textwrap

import pytest
from crashsim import VARIANTS, CrashSimIO
from procs import run_and_kill

import fsstore
from fsstore import TURN_FINISHED
from fsstore.blobs import find_refs
from fsstore.state import merge_patch


class Expectation:
    """What a workload wrote, so a crash state can be judged: which data each seq must
    hold, where batches end, and what was acknowledged at the moment of the crash."""

    def __init__(self) -> None:
        self.data: dict[int, object] = {}
        self.batch_ends = {0}
        self.completed = 0  # last seq of the last append call that returned

    def check(self, dest: str, variant: str, synced: int, handed_to_os: bool) -> None:
        store = fsstore.open_store(dest, create=False)
        events = list(store.read_session("s").events(include_internal=True))
        seqs = [e.seq for e in events]
        assert seqs == list(range(1, len(seqs) + 1)), (variant, seqs)
        for event in events:
            assert event.data == self.data[event.seq], (variant, event.seq)
        head = len(seqs)
        assert head in self.batch_ends, (variant, head, "a batch was split")
        assert head >= synced, (variant, head, synced, "an fsynced batch was lost")
        if variant == "kept" and handed_to_os:  # a killed process: the OS kept it all
            assert head >= self.completed, (variant, head, self.completed)
        with store.open_session("s") as writer:  # opens, recovers, takes appends
            assert writer.head == head
            assert writer.append({"after": "crash"}) == head + 1
        assert [f for f in store.verify() if f.level == "problem"] == []


DURABILITIES = {
    "fsync": fsstore.Durability("fsync"),
    "flush": fsstore.Durability("flush"),
    "none+group": fsstore.Durability("none", group_commit_records=5),
}


def power_loss_workload(tmp_path, durability: str, seed: int, batches: int) -> int:
    root = tmp_path / "store"
    fsstore.open_store(root).create_session("s").close()
    io = CrashSimIO(str(root))
    setting = DURABILITIES[durability]
    session = fsstore.open_store(root, io=io, segment_size=4096,
                                 durability=setting).open_session("s")
    expect = Expectation()
    crashes = [0]

    def crash_here() -> None:
        for variant in VARIANTS:
            dest = str(tmp_path / f"crash-{crashes[0]}")
            crashes[0] += 1
            # A state already judged with the same expectations is judged the same (the
            # seqs it holds keep their data and batch ends only grow): not again.
            judged_by = (session.synced_head, expect.completed if variant == "kept" else None)
            if io.materialize_unseen(dest, variant, random.Random(crashes[0] - 1), judged_by):
                expect.check(dest, variant, session.synced_head, setting.mode != "none")
                shutil.rmtree(dest)

    rng = random.Random(seed)
    io.on_op = crash_here
    for index in range(batches):
        size = rng.randint(1, 4)
        first = session.head + 1
        events = [{"i": index, "j": j, "pad": "p" * rng.randint(0, 600)} for j in range(size)]
        for offset, event in enumerate(events):
            expect.data[first + offset] = event
        expect.batch_ends.add(first + size - 1)
        session.append_many(events)
        expect.completed = session.head
        if rng.random() < 0.25:
            expect.data[session.head + 1] = {}
            expect.batch_ends.add(session.head + 1)
            session.finish_turn()
            expect.completed = session.head
    session.close()
    return crashes[0]


@pytest.mark.parametrize("durability", sorted(DURABILITIES))
def test_every_power_loss_state_of_a_workload_opens_as_a_prefix(tmp_path, durability):
    states = power_loss_workload(tmp_path, durability, seed=1, batches=20)
    assert states > 60


@pytest.mark.long
@pytest.mark.parametrize("seed", range(2, 22))
@pytest.mark.parametrize("durability", sorted(DURABILITIES))
def test_every_power_loss_state_of_many_workloads_opens_as_a_prefix(tmp_path, durability, seed):
    power_loss_workload(tmp_path, durability, seed=seed, batches=120)


def crash_states_of(tmp_path, root, action) -> list[str]:
    """Run ``action(store)`` through a CrashSimIO and return a crash state after every
    I/O call (all variants), each as a folder to inspect."""
    io = CrashSimIO(str(root))
    states = io.record_states(tmp_path)
    action(fsstore.open_store(root, io=io))
    return states


def test_a_crash_while_creating_a_session_leaves_none_or_all_of_it(tmp_path):
    root = tmp_path / "store"
    fsstore.open_store(root)
    states = crash_states_of(tmp_path, root, lambda s: s.create_session(
        "new", title="t", metadata={"k": 1}).close())
    whole = 0
    for dest in states:
        store = fsstore.open_store(dest, create=False)
        if "new" in store.session_ids():
            whole += 1
            info = store.read_session("new").info()
            assert (info.title, info.metadata, info.event_count) == ("t", {"k": 1}, 0)
            store.open_session("new").close()
        assert [f for f in store.verify() if f.level == "problem"] == []
    assert 0 < whole < len(states)


def test_a_crash_while_deleting_a_session_leaves_none_or_all_of_it(tmp_path):
    root = tmp_path / "store"
    with fsstore.open_store(root, segment_size=4096).create_session("s") as session:
        session.append_many([{"i": i, "pad": "p" * 200} for i in range(40)])
    states = crash_states_of(tmp_path, root, lambda s: s.delete_session("s"))
    for dest in states:
        store = fsstore.open_store(dest, create=False)
        if "s" in store.session_ids():
            reader = store.read_session("s")
            assert [e.data["i"] for e in reader.events(include_internal=True)] == list(range(40))
        store.remove_leftovers()
        assert [f for f in store.verify() if f.level == "problem"] == []
    assert "s" not in fsstore.open_store(states[-1], create=False).session_ids()


def test_a_crash_while_clearing_leaves_the_old_log_or_an_empty_one(tmp_path):
    root = tmp_path / "store"
    with fsstore.open_store(root, segment_size=4096).create_session("s") as session:
        for i in range(30):
            session.append({"i": i, "pad": "p" * 300})

    def clear(store):
        with store.open_session("s") as session:
            session.clear()

    outcomes = set()
    for dest in crash_states_of(tmp_path, root, clear):
        store = fsstore.open_store(dest, create=False)
        seqs = [e.seq for e in store.read_session("s").events(include_internal=True)]
        assert seqs in (list(range(1, 31)), [])
        outcomes.add(len(seqs))
        with store.open_session("s") as session:
            assert session.append({"next": 1}) == 31
    assert outcomes == {0, 30}


# --- kill -9 ------------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import random, sys
    import fsstore
    store = fsstore.open_store(sys.argv[1], segment_size=int(sys.argv[2]), durability="fsync")
    session = store.open_session("s", lock_timeout=30)
    rng = random.Random(int(sys.argv[3]))
    print("READY", session.head, flush=True)
    while True:
        first = session.head + 1
        batch = [{"seq": first + i, "pad": "x" * rng.randint(0, 700)}
                 for i in range(rng.randint(1, 4))]
        seqs = session.append_many(batch)
        if rng.random() < 0.1:
            session.finish_turn()
        sys.stdout.write(f"ACK {session.head} END\\n")
        sys.stdout.flush()
""")


def kill_9_trials(tmp_path, trials: int) -> None:
    root = tmp_path / "store"
    fsstore.open_store(root).create_session("s").close()
    rng = random.Random(7)
    checked = 0
    for trial in range(trials):
        lines = run_and_kill(CHILD, [str(root), "65536", str(trial)], rng.uniform(0, 0.15))
        acked = [int(line[1]) for line in lines if line[0] == "ACK"]
        store = fsstore.open_store(root)
        with store.open_session("s") as session:  # opens, and recovers the tail
            head = session.head
        assert head >= max(acked, default=0), "an acknowledged (fsynced) batch was lost"
        events = list(store.read_session("s").events(after_seq=max(checked - 5, 0),
                                                     include_internal=True))
        assert [e.seq for e in events] == list(range(max(checked - 5, 0) + 1, head + 1))
        for event in events:
            assert event.kind == TURN_FINISHED or event.data["seq"] == event.seq
        checked = head
    assert checked > 0
    assert [f for f in fsstore.open_store(root).verify() if f.level == "problem"] == []


@pytest.mark.stress
def test_kill_9_at_random_moments_loses_nothing_acknowledged(tmp_path):
    kill_9_trials(tmp_path, trials=4)


@pytest.mark.stress
@pytest.mark.long
def test_kill_9_thousands_of_times_loses_nothing_acknowledged(tmp_path):
    kill_9_trials(tmp_path, trials=1000)


# --- state, commits, snapshots, checkpoints and forks -----------------------------------

def state_fold(events, state: dict | None = None) -> dict:
    """The state computed straight from a list of events, independently of the loader."""
    state = {} if state is None else copy.deepcopy(state)
    for event in events:
        if event.kind == fsstore.STATE_RECORD:
            for op in event.data["ops"]:
                if op[0] == "set":
                    state[op[1]] = op[2]
                else:
                    state = merge_patch(state, op[1])
    return state


def check_state_of(store, session_id: str, after_seq: int = 0) -> list:
    """The session opens; its state is the fold of its log, whatever snapshot it loads
    from; every checkpoint taken after ``after_seq`` holds the fold up to its seq; every
    commit id after ``after_seq`` is remembered. Returns the events."""
    reader = store.read_session(session_id)
    events = list(reader.events(include_internal=True))
    checkpoints = sorted((info.seq, info.id) for info in reader.checkpoints()
                         if info.seq > after_seq)
    assert all(seq <= reader.head for seq, _ in checkpoints)
    folded: dict = {}
    for event in [None, *events]:  # one fold, checked at every checkpoint on the way
        if event is not None:
            folded = state_fold([event], folded)
        seq = 0 if event is None else event.seq
        while checkpoints and checkpoints[0][0] == seq:
            assert reader.load_checkpoint(checkpoints.pop(0)[1]) == folded
    assert reader.state() == folded
    with store.open_session(session_id) as writer:
        assert writer.state() == folded
        for event in events:
            commit_id = event.data.get("commit") if event.kind == fsstore.STATE_RECORD else None
            if commit_id is not None and event.seq > after_seq:
                assert writer.commit([], commit_id=commit_id).duplicate
        assert writer.head == reader.head
    return events


def state_workload(tmp_path, durability: str, seed: int, steps: int) -> int:
    root = tmp_path / "store"
    fsstore.open_store(root).create_session("s").close()
    io = CrashSimIO(str(root))
    policy = fsstore.SnapshotPolicy(every_events=7, keep=2)
    session = fsstore.open_store(root, io=io, segment_size=4096, snapshots=policy,
                                 durability=DURABILITIES[durability]).open_session("s")
    expect = Expectation()
    crashes = [0]

    def crash_here() -> None:
        for variant in VARIANTS:
            dest = str(tmp_path / f"crash-{crashes[0]}")
            crashes[0] += 1
            # A state already judged with the same synced head is judged the same: not again.
            if not io.materialize_unseen(dest, variant, random.Random(crashes[0] - 1),
                                         session.synced_head):
                continue
            store = fsstore.open_store(dest, create=False)
            events = check_state_of(store, "s")
            head = len(events)
            assert head in expect.batch_ends, (variant, head, "a commit was split")
            assert head >= session.synced_head, (variant, "an fsynced commit was lost")
            for event in events:
                assert event.data == expect.data[event.seq]
            shutil.rmtree(dest)

    rng = random.Random(seed)
    io.on_op = crash_here
    for index in range(steps):
        choice = rng.random()
        first = session.head + 1
        if choice < 0.6:
            events = [{"i": index, "pad": "p" * rng.randint(0, 400)}
                      for _ in range(rng.randint(0, 3))]
            patch = {f"k{rng.randint(0, 3)}": index, "gone": None}
            commit_id = f"c{index}" if rng.random() < 0.5 else None
            record: dict = {"ops": [["merge", patch]]}
            if commit_id is not None:
                record.update(commit=commit_id, events=len(events))
            for offset, event in enumerate([*events, record]):
                expect.data[first + offset] = event
            expect.batch_ends.add(first + len(events))
            session.commit(events, state_patch=patch, commit_id=commit_id)
        elif choice < 0.75:
            key = f"s{rng.randint(0, 2)}"
            expect.data[first] = {"ops": [["set", key, index]]}
            expect.batch_ends.add(first)
            session.set_state(key, index)
        elif choice < 0.85:
            session.snapshot()
        else:
            session.checkpoint(f"c{index}")
    session.close()
    return crashes[0]


@pytest.mark.parametrize("durability", sorted(DURABILITIES))
def test_every_power_loss_state_of_commits_snapshots_and_checkpoints_is_whole(
        tmp_path, durability):
    assert state_workload(tmp_path, durability, seed=1, steps=16) > 60


@pytest.mark.long
@pytest.mark.parametrize("seed", range(2, 12))
@pytest.mark.parametrize("durability", sorted(DURABILITIES))
def test_every_power_loss_state_of_many_state_workloads_is_whole(tmp_path, durability, seed):
    state_workload(tmp_path, durability, seed=seed, steps=80)


@pytest.mark.parametrize("at", ["head", "inside a batch", "checkpoint"])
def test_a_crash_while_forking_leaves_no_fork_or_a_whole_one(tmp_path, at):
    root = tmp_path / "store"
    store = fsstore.open_store(root, segment_size=4096)
    with store.create_session("s") as session:
        for i in range(30):
            session.commit([{"i": i, "pad": "p" * 200}, {"j": i}], state_patch={"k": i})
        session.checkpoint(checkpoint_id="cp")
        session.commit([{"after": 1}], state_patch={"k": "after"})
    parent_events = list(store.read_session("s").events(include_internal=True))
    options = {"head": {}, "inside a batch": {"at_seq": 47},
               "checkpoint": {"at_checkpoint": "cp"}}[at]

    def fork(store):
        store.fork_session("s", "f", **options).close()

    whole = 0
    for dest in crash_states_of(tmp_path, root, fork):
        crashed = fsstore.open_store(dest, create=False)
        assert list(crashed.read_session("s").events(include_internal=True)) == parent_events
        check_state_of(crashed, "s")
        if "f" in crashed.session_ids():
            whole += 1
            events = check_state_of(crashed, "f")
            assert events == parent_events[: len(events)]
            assert len(events) == {"head": 92, "inside a batch": 47, "checkpoint": 90}[at]
        assert [f for f in crashed.verify() if f.level == "problem"] == []
    assert whole > 0


CHILD_STATE = textwrap.dedent("""
    import random, sys
    import fsstore
    store = fsstore.open_store(sys.argv[1], segment_size=int(sys.argv[2]), durability="fsync",
                               snapshots=fsstore.SnapshotPolicy(every_events=25, keep=2))
    session = store.open_session("s", lock_timeout=30)
    rng = random.Random(int(sys.argv[3]))
    print("READY", session.head, flush=True)
    step = 0
    while True:
        step += 1
        choice = rng.random()
        if choice < 0.85:
            commit_id = f"{sys.argv[3]}-{step}"
            events = [{"pad": "x" * rng.randint(0, 500)} for _ in range(rng.randint(0, 3))]
            result = session.commit(events, state_patch={f"k{step % 5}": step},
                                    commit_id=commit_id)
            print("ACK", result.head, commit_id, "END", flush=True)
        elif choice < 0.93:
            info = session.checkpoint(f"step {step}")
            print("CHECKPOINT", info.id, "END", flush=True)
        else:
            name = f"fork-{sys.argv[3]}-{step}"
            session.fork(name).close()
            print("FORK", name, "END", flush=True)
""")


def kill_9_state_trials(tmp_path, trials: int) -> None:
    root = tmp_path / "store"
    fsstore.open_store(root).create_session("s").close()
    rng = random.Random(11)
    checked = 0
    for trial in range(trials):
        lines = run_and_kill(CHILD_STATE, [str(root), "16384", str(trial)],
                             rng.uniform(0, 0.3))
        store = fsstore.open_store(root)
        events = check_state_of(store, "s", after_seq=max(checked - 50, 0))
        checked = len(events)
        heads = [int(line[1]) for line in lines if line[0] == "ACK"]
        assert len(events) >= max(heads, default=0), "an acknowledged commit was lost"
        with store.open_session("s") as session:
            for line in lines:
                if line[0] == "ACK":
                    assert session.commit([], commit_id=line[2]).duplicate
        checkpoints = {info.id for info in store.read_session("s").checkpoints()}
        assert {line[1] for line in lines if line[0] == "CHECKPOINT"} <= checkpoints
        forks = {line[1] for line in lines if line[0] == "FORK"}
        assert forks <= set(store.session_ids())
        for fork in store.session_ids():
            if fork.startswith(f"fork-{trial}-"):  # acknowledged or not: whole
                fork_events = check_state_of(store, fork, after_seq=max(checked - 50, 0))
                assert fork_events == events[: len(fork_events)]
                store.delete_session(fork)  # the parent goes on without it
    assert [f for f in fsstore.open_store(root).verify() if f.level == "problem"] == []


@pytest.mark.stress
def test_kill_9_during_commits_checkpoints_and_forks_loses_nothing_acknowledged(tmp_path):
    kill_9_state_trials(tmp_path, trials=3)


@pytest.mark.stress
@pytest.mark.long
def test_kill_9_hundreds_of_times_during_commits_checkpoints_and_forks(tmp_path):
    kill_9_state_trials(tmp_path, trials=300)


# --- attachments ------------------------------------------------------------------------

def check_blobs_of(store, session_id: str) -> set[str]:
    """Every blob under a final name is whole (its bytes hash to its name), and every
    blob the log refers to is there. Returns the referenced digests."""
    reader = store.read_session(session_id)
    for hex_digest, _, _ in reader.blobs.digests():
        assert reader.blobs.get(f"sha256:{hex_digest}")  # verifies the digest
    referenced: set[str] = set()
    for event in reader.events(include_internal=True):
        find_refs(event.data, referenced)
    for digest in referenced:
        assert reader.blobs.exists(digest), digest
    return referenced


def test_every_power_loss_state_of_puts_commits_and_gcs_is_whole(tmp_path):
    root = tmp_path / "store"
    with fsstore.open_store(root).create_session("s") as session:
        old = session.blobs.put(b"an orphan of an earlier writer", "text/plain")
        kept = session.blobs.put(b"committed earlier")
        session.commit([{"f": kept}])
    blob_dir = os.path.join(root, "sessions", "s", "blobs", "sha256", old.hex[:2])
    os.utime(os.path.join(blob_dir, old.hex + ".zst"), (1, 1))

    def work(store):
        with store.open_session("s") as session:
            text = session.blobs.put(b"log line\n" * 5000, "text/plain")  # compressed
            raw = session.blobs.put(os.urandom(20_000), "image/png")
            session.commit([{"text": text, "raw": raw}])
            session.blobs.put(b"put, never committed")
            session.gc(grace=60)

    states = crash_states_of(tmp_path, root, work)
    reclaimed = 0
    for dest in states:
        store = fsstore.open_store(dest, create=False)
        referenced = check_blobs_of(store, "s")
        assert kept.digest in referenced
        reclaimed += not store.read_session("s").blobs.exists(old)
    assert 0 < reclaimed < len(states)


CHILD_BLOBS = textwrap.dedent("""
    import os, random, sys
    import fsstore
    store = fsstore.open_store(sys.argv[1], durability="fsync")
    session = store.open_session("s", lock_timeout=30)
    rng = random.Random(int(sys.argv[2]))
    print("READY", flush=True)
    step = 0
    while True:
        step += 1
        size = rng.choice([10, 5000, 300_000])
        media = rng.choice(["text/plain", "image/png"])
        ref = session.blobs.put(os.urandom(size // 2) * 2, media)
        if rng.random() < 0.7:
            session.commit([{"f": ref, "step": step}])
            print("ACK", ref.digest, "END", flush=True)
        if rng.random() < 0.2:
            session.gc(grace=0)
""")


def kill_9_blob_trials(tmp_path, trials: int) -> None:
    root = tmp_path / "store"
    fsstore.open_store(root).create_session("s").close()
    rng = random.Random(5)
    acknowledged: set[str] = set()
    for trial in range(trials):
        lines = run_and_kill(CHILD_BLOBS, [str(root), str(trial)], rng.uniform(0, 0.25))
        acknowledged |= {line[1] for line in lines if line[0] == "ACK"}
        store = fsstore.open_store(root)
        referenced = check_blobs_of(store, "s")
        assert acknowledged <= referenced
        if trial % 5 == 4:
            with store.open_session("s") as session:  # the killed writers' orphans go
                session.gc(grace=0)
                digests = {f"sha256:{d}" for d, _, _ in session.blobs.digests()}
                assert digests == referenced
    assert [f for f in fsstore.open_store(root).verify() if f.level == "problem"] == []


@pytest.mark.stress
def test_kill_9_during_puts_and_gcs_never_loses_a_referenced_blob(tmp_path):
    kill_9_blob_trials(tmp_path, trials=3)


@pytest.mark.stress
@pytest.mark.long
def test_kill_9_hundreds_of_times_during_puts_and_gcs(tmp_path):
    kill_9_blob_trials(tmp_path, trials=300)


# --- vector collections ---------------------------------------------------------------

VECTOR_IDS = [f"v{i}" for i in range(30)]


def vector_contents(collection) -> dict:
    """What a collection holds: id -> (vector, content, metadata)."""
    found = collection.get(VECTOR_IDS)
    return {doc.id: (tuple(doc.embedding.tolist()), doc.content, doc.metadata)
            for doc in found if doc is not None}


def apply_vector_op(model: dict, op: list) -> dict:
    model = dict(model)
    if op[0] == "upsert":
        for doc_id, vector, content, metadata in op[1]:
            model[doc_id] = (tuple(float(x) for x in vector), content, metadata)
    elif op[0] == "delete":
        for doc_id in op[1]:
            model.pop(doc_id, None)
    return model


def random_vector_op(rng: random.Random, index: int) -> list:
    choice = rng.random()
    if choice < 0.55:
        size = rng.choice([1, 1, 2, 10])  # 10 >= SEAL_ROWS below: a shard of its own
        return ["upsert", [[rng.choice(VECTOR_IDS), [rng.randint(-3, 3) for _ in range(3)],
                            f"c{index}", {"i": index}] for _ in range(size)]]
    if choice < 0.8:
        return ["delete", rng.sample(VECTOR_IDS, rng.randint(1, 3))]
    return [rng.choice(["seal", "compact", "sync"])]


def run_vector_op(collection, op: list) -> None:
    if op[0] == "upsert":
        collection.upsert([fsstore.VectorDocument(i, v, content=c, metadata=m)
                           for i, v, c, m in op[1]])
    elif op[0] == "delete":
        collection.delete(op[1])
    else:
        getattr(collection, op[0])()


@pytest.fixture
def vector_seals(monkeypatch):
    from fsstore.vectors import tuning
    monkeypatch.setattr(tuning, "SEAL_ROWS", 4)


def vector_workload(tmp_path, durability: str, seed: int, steps: int) -> int:
    root = tmp_path / "store"
    with fsstore.open_store(root).create_session("s") as session:
        session.create_collection("c", 3)
    io = CrashSimIO(str(root))
    session = fsstore.open_store(root, io=io, durability=DURABILITIES[durability]
                                 ).open_session("s")
    collection = session.collection("c")
    history = [{}]
    progress = {"done": 0, "durable": 0}
    crashes = [0]

    def crash_here() -> None:
        for variant in VARIANTS:
            dest = str(tmp_path / f"crash-{crashes[0]}")
            crashes[0] += 1
            # A state already judged against the same candidates is judged the same.
            if not io.materialize_unseen(dest, variant, random.Random(crashes[0] - 1),
                                         (progress["durable"], progress["done"])):
                continue
            store = fsstore.open_store(dest, create=False)
            with store.open_session("s") as writer:  # recovers, removes leftovers
                found = vector_contents(writer.collection("c"))
            # A state the collection had whole at some moment: at least the last durable
            # one, at most the one the operation under way would have made.
            candidates = history[progress["durable"]: progress["done"] + 2]
            assert found in candidates, (variant, crashes[0], found, candidates[-1])
            reader = store.read_session("s").collection("c")
            assert vector_contents(reader) == found
            assert [f for f in store.verify() if f.level == "problem"] == []
            shutil.rmtree(dest)

    rng = random.Random(seed)
    ops = [random_vector_op(rng, index) for index in range(steps)]
    for op in ops:
        history.append(apply_vector_op(history[-1], op))
    io.on_op = crash_here
    for index, op in enumerate(ops):
        run_vector_op(collection, op)
        progress["done"] = index + 1
        if durability == "fsync" or op[0] in ("seal", "compact", "sync") or (
                op[0] == "upsert" and len(op[1]) >= 4):
            progress["durable"] = index + 1
    io.on_op = None
    session.close()
    return crashes[0]


@pytest.mark.parametrize("durability", sorted(DURABILITIES))
def test_every_power_loss_state_of_upserts_seals_and_merges_is_a_whole_state(
        tmp_path, vector_seals, durability):
    assert vector_workload(tmp_path, durability, seed=3, steps=10) > 30


@pytest.mark.long
@pytest.mark.parametrize("seed", range(4, 24))
@pytest.mark.parametrize("durability", sorted(DURABILITIES))
def test_every_power_loss_state_of_many_vector_workloads_is_a_whole_state(
        tmp_path, vector_seals, durability, seed):
    vector_workload(tmp_path, durability, seed=seed, steps=80)


def vector_child(root: str, seed: str) -> None:
    """A child process's loop: random vector operations, each announced before it runs
    and acknowledged after, until it is killed."""
    from fsstore.vectors import tuning
    tuning.SEAL_ROWS = 4
    store = fsstore.open_store(root)
    session = store.open_session("s", lock_timeout=30)
    collection = session.collection("c")
    rng = random.Random(int(seed))
    print("READY", flush=True)
    for index in range(10**9):
        op = random_vector_op(rng, index)
        print("DO", json.dumps(op, separators=(",", ":")), "END", flush=True)
        run_vector_op(collection, op)
        print("ACK", index, "END", flush=True)


def kill_9_vector_trials(tmp_path, trials: int) -> None:
    root = tmp_path / "store"
    with fsstore.open_store(root).create_session("s") as session:
        session.create_collection("c", 3)
    rng = random.Random(11)
    model: dict = {}
    for trial in range(trials):
        lines = run_and_kill(vector_child, [root, trial], rng.uniform(0.05, 0.3))
        ops = [json.loads(line[1]) for line in lines if line[0] == "DO"]
        acked = sum(1 for line in lines if line[0] == "ACK")
        for op in ops[:acked]:
            model = apply_vector_op(model, op)
        store = fsstore.open_store(root)
        with store.open_session("s", lock_timeout=10) as session:
            found = vector_contents(session.collection("c"))
        # kill -9 loses nothing handed to the OS: every acknowledged operation is there,
        # and the one under way is there whole or not at all.
        if len(ops) > acked and found != model:
            model = apply_vector_op(model, ops[acked])
        assert found == model, trial
    assert [f for f in fsstore.open_store(root).verify() if f.level == "problem"] == []


@pytest.mark.stress
def test_kill_9_during_upserts_and_compactions_leaves_a_whole_collection(tmp_path):
    kill_9_vector_trials(tmp_path, trials=3)


@pytest.mark.stress
@pytest.mark.long
def test_kill_9_hundreds_of_times_during_upserts_and_compactions(tmp_path):
    kill_9_vector_trials(tmp_path, trials=300)


def test_a_crash_while_creating_or_dropping_a_collection_leaves_none_or_all_of_it(tmp_path):
    root = tmp_path / "store"
    with fsstore.open_store(root).create_session("s") as session:
        session.create_collection("old", 2).upsert([fsstore.VectorDocument("a", [1, 2])])

    def work(store):
        with store.open_session("s") as session:
            session.create_collection("new", 3, metric="dot").upsert(
                [fsstore.VectorDocument("b", [1, 2, 3])])
            session.drop_collection("old")

    seen = set()
    for dest in crash_states_of(tmp_path, root, work):
        store = fsstore.open_store(dest, create=False)
        with store.open_session("s") as session:
            names = [info.name for info in session.collections()]
            seen.add(tuple(names))
            if "old" in names:
                assert session.collection("old").count() == 1
            if "new" in names:
                assert session.collection("new").dim == 3
                session.drop_collection("new")  # and tidies what a crash left
            session.create_collection("again", 2)
        assert [f for f in store.verify() if f.level == "problem"] == []
        assert [f for f in store.verify() if "interrupted create" in f.message] == []
    assert {("old",), ("new", "old"), ("new",)} <= seen


# --- leases and the work queue ------------------------------------------------------------


def test_every_power_loss_state_of_lease_claims_hands_out_rising_tokens(tmp_path, clock):
    root = tmp_path / "store"
    fsstore.open_store(root).create_session("s").close()
    io = CrashSimIO(str(root))
    store = fsstore.open_store(root, io=io)
    acknowledged = {"token": 0}
    crashes = [0]

    def crash_here() -> None:
        clock.advance(1)  # the copy is opened after the crashed holder's lease ended
        for variant in VARIANTS:
            dest = str(tmp_path / f"crash-{crashes[0]}")
            io.materialize(dest, variant, random.Random(crashes[0]))
            copy = fsstore.open_store(dest, create=False)
            copy.lease_info("s")  # a torn in-place write spoils one slot, never both
            outcome = copy.claim_lease("s", fsstore.LeaseOwner("far", 9, None, "next"),
                                       ttl=60)
            assert outcome.status in ("acquired", "taken_over"), outcome
            assert outcome.lease.token > acknowledged["token"], (variant, outcome)
            assert [f for f in copy.verify() if f.level == "problem"] == []
            shutil.rmtree(dest)
            crashes[0] += 1

    io.on_op = crash_here
    for index in range(6):
        owner = fsstore.LeaseOwner("far", 1, None, f"w{index}")
        lease = store.claim_lease("s", owner, ttl=1).lease
        acknowledged["token"] = lease.token
        if index % 2:
            store.release_lease(lease)
        else:
            store.renew_lease(lease, ttl=1)
        clock.advance(1)  # expired: the next owner takes it over
    io.on_op = None
    assert crashes[0] > 20


def test_every_power_loss_state_of_queue_operations_is_one_they_made(tmp_path):
    root = tmp_path / "store"
    fsstore.open_store(root).create_session("s").close()
    io = CrashSimIO(str(root))
    session = fsstore.open_store(root, io=io, segment_size=4096).open_session(
        "s", shared=True)

    def queue_view(reader) -> list:
        return [(w.id, w.status, w.attempts) for w in reader.queue.items()]

    seen: list[tuple[str, list]] = []
    crashes = [0]

    def crash_here() -> None:
        for variant in VARIANTS:
            dest = str(tmp_path / f"crash-{crashes[0]}")
            io.materialize(dest, variant, random.Random(crashes[0]))
            copy = fsstore.open_store(dest, create=False)
            with copy.open_session("s") as writer:  # recovers
                seen.append((variant, queue_view(writer)))
            assert [f for f in copy.verify() if f.level == "problem"] == []
            shutil.rmtree(dest)
            crashes[0] += 1

    def run(operation) -> object:
        """Every operation is durable when it returns: a crash during one leaves the
        queue as it was before it, or as it is after."""
        before = queue_view(session)
        seen.clear()
        io.on_op = crash_here
        result = operation()
        io.on_op = None
        after = queue_view(session)
        for variant, found in seen:
            assert found in (before, after), (variant, found, before, after)
        return result

    rng = random.Random(4)
    for step in range(14):
        if rng.random() < 0.4:
            run(lambda step=step: session.queue.enqueue_many(
                [("job", {"step": step, "pad": "p" * 300})] * rng.randint(1, 3),
                max_attempts=2))
            continue
        claim = run(lambda: session.queue.claim("w", 60))
        if claim is not None:
            settle = rng.choice(["complete", "fail", "release"])
            if settle == "fail":
                run(lambda claim=claim: session.queue.fail(claim, "boom"))
            else:
                run(lambda claim=claim, settle=settle: getattr(session.queue, settle)(claim))
    session.close()
    assert crashes[0] > 50
