"""The work queue and pending turn inputs: folds of the log, claimed across processes."""

from __future__ import annotations

import contextlib
import os
import random
import textwrap
import time

import pytest
from conftest import tree_snapshot
from procs import Child

import fsstore
from fsstore import ClaimLost

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def session(store):
    with store.create_session("s") as session:
        yield session


# --- the queue ----------------------------------------------------------------------------


def test_items_are_claimed_by_priority_then_oldest_first(session):
    queue = session.queue
    low = queue.enqueue("job", "low")
    ids = queue.enqueue_many([("job", "a"), ("job", "b")], priority=5)
    urgent = queue.enqueue("job", "urgent", priority=9)
    order = []
    while (claim := queue.claim("w", 30)) is not None:
        order.append(claim.id)
        queue.complete(claim)
    assert order == [urgent, *ids, low]
    assert queue.items() == []


def test_a_claim_names_its_item_and_is_unique(session):
    item = session.queue.enqueue("wake", {"at": 5})
    claim = session.queue.claim("worker-1", 30)
    assert (claim.id, claim.kind, claim.payload, claim.worker, claim.attempt) == (
        item, "wake", {"at": 5}, "worker-1", 1)
    assert claim.token > item and claim.expires_at > time.time() + 29
    assert session.queue.claim("worker-2", 30) is None  # nothing else is claimable
    (view,) = session.queue.items()
    assert (view.status, view.worker, view.attempts) == ("claimed", "worker-1", 1)


def test_complete_and_claim_settles_and_takes_the_next_in_one_batch(session):
    first, second = session.queue.enqueue_many([("job", 1), ("job", 2)])
    claim = session.queue.claim("w", 30)
    head = session.head
    following = session.queue.complete_and_claim(claim, 30)
    assert following.id == second and following.worker == "w"
    assert session.head == head + 2  # two records, one batch
    assert session.queue.complete_and_claim(following, 30) is None
    assert session.queue.items() == []
    with pytest.raises(ClaimLost):
        session.queue.complete_and_claim(following, 30)
    del first


def test_kinds_select_what_a_worker_takes(session):
    session.queue.enqueue_many([("email", 1), ("build", 2), ("email", 3)])
    claim = session.queue.claim("builder", 30, kinds=["build"])
    assert claim.payload == 2
    assert session.queue.claim("builder", 30, kinds=["build"]) is None
    assert session.queue.claim("mailer", 30, kinds={"email"}).payload == 1


def test_an_expired_claim_is_claimable_again_and_the_old_claim_is_lost(session, clock):
    session.queue.enqueue("job", "x")
    first = session.queue.claim("slow", 5)
    assert first.expires_at == clock() + 5
    clock.advance(4)
    assert session.queue.claim("fast", 30) is None  # not expired yet
    clock.advance(1)
    second = session.queue.claim("fast", 30)
    assert second.id == first.id and second.attempt == 2
    before = tree_snapshot(session.path)
    for settle in (session.queue.complete, session.queue.release,
                   lambda c: session.queue.fail(c, "late")):
        with pytest.raises(ClaimLost, match="claimed again"):
            settle(first)
    assert tree_snapshot(session.path) == before
    session.queue.complete(second)
    with pytest.raises(ClaimLost, match="done"):
        session.queue.complete(second)


def test_failures_retry_until_the_limit_then_the_item_is_dead(session):
    item = session.queue.enqueue("job", "flaky", max_attempts=3)
    for attempt in (1, 2):
        claim = session.queue.claim("w", 30)
        assert claim.attempt == attempt
        assert session.queue.fail(claim, f"boom {attempt}") == "ready"
    claim = session.queue.claim("w", 30)
    assert session.queue.fail(claim, "boom 3") == "dead"
    assert session.queue.claim("w", 30) is None
    (dead,) = session.queue.items("dead")
    assert (dead.id, dead.error, dead.attempts) == (item, "boom 3", 3)
    assert session.queue.purge() == 1 and session.queue.items() == []


def test_claims_that_keep_expiring_end_in_the_dead_letters(session, clock):
    session.queue.enqueue("job", "kills its worker", max_attempts=2)
    session.queue.claim("w1", 1)
    clock.advance(1)
    session.queue.claim("w2", 1)
    clock.advance(1)
    assert session.queue.claim("w3", 30) is None
    (dead,) = session.queue.items()
    assert dead.status == "dead" and "expired 2 times" in dead.error


def test_a_retry_can_wait_and_a_release_does_not_count(session, clock):
    session.queue.enqueue("job", "later")
    claim = session.queue.claim("w", 30)
    session.queue.release(claim)
    claim = session.queue.claim("w", 30)
    assert claim.attempt == 1
    assert session.queue.fail(claim, "not yet", retry_after=20) == "ready"
    assert session.queue.claim("w", 30) is None
    clock.advance(19)
    assert session.queue.claim("w", 30) is None
    clock.advance(1)
    assert session.queue.claim("w", 30).attempt == 2


@pytest.mark.parametrize("call", [
    lambda q: q.enqueue("", 1), lambda q: q.enqueue(7, 1), lambda q: q.enqueue("x" * 300),
    lambda q: q.enqueue("k", object()), lambda q: q.enqueue("k", priority=1.5),
    lambda q: q.enqueue("k", max_attempts=0), lambda q: q.claim("", 5),
    lambda q: q.claim("w", 0), lambda q: q.claim("w", "5"), lambda q: q.complete("token"),
])
def test_bad_queue_calls_raise_typed_errors_and_write_nothing(session, call):
    before = tree_snapshot(session.path)
    with pytest.raises(fsstore.FsStoreError):
        call(session.queue)
    assert tree_snapshot(session.path) == before


def test_the_queue_survives_reopen_snapshots_and_is_in_the_log(store):
    policy = fsstore.SnapshotPolicy(every_events=5)
    store = fsstore.open_store(store.path, snapshots=policy)
    with store.create_session("s") as session:
        ids = [session.queue.enqueue("job", i) for i in range(12)]
        claim = session.queue.claim("w", 300)
        session.queue.complete(claim)
        held = session.queue.claim("w", 300)
        assert session._snapshots.seqs()  # the queue went into snapshots
    with store.open_session("s") as session:
        assert [i.id for i in session.queue.items()] == ids[1:]
        assert session.queue.items()[0].status == "claimed"
        with pytest.raises(ClaimLost):
            session.queue.complete(held._replace(token=held.token + 1))
        session.queue.complete(held)
        assert session.queue.claim("w", 30).id == ids[2]
    kinds = [e.kind for e in store.read_session("s").events(include_internal=True)]
    assert set(kinds) == {"fsstore.queue"}


def test_records_from_outside_do_not_move_the_turn(session):
    session.append({"role": "user"})
    session.finish_turn()
    session.queue.enqueue("wake")
    session.inputs.submit("more")
    assert session.current_turn == 1
    assert session.append({"role": "assistant"}) and session.current_turn == 2
    session.close()
    # and recovery, reading back over the neutral records, agrees
    store = fsstore.open_store(os.path.dirname(os.path.dirname(session.path)))
    with store.open_session("s") as again:
        again.finish_turn()
        again.queue.enqueue("wake again")
        assert again.current_turn == 2
    with store.open_session("s") as again:
        assert again.current_turn == 2 and again.append({"x": 1}) and again.current_turn == 3


# --- turn inputs --------------------------------------------------------------------------


def test_inputs_are_claimed_in_arrival_order_and_consumed_by_the_turn(session):
    session.append({"role": "user", "content": "start"})
    first = session.inputs.submit({"text": "also this"})
    second = session.inputs.submit({"text": "and this"})
    claimed = session.inputs.claim()
    assert [i.id for i in claimed] == [first, second]
    assert {i.status for i in claimed} == {"claimed"} and claimed[0].turn == 1
    third = session.inputs.submit({"text": "late"})
    session.finish_turn()
    views = {i.id: i for i in session.inputs.items()}
    assert (views[first].status, views[first].turn) == ("consumed", 1)
    assert views[third].status == "pending"
    assert [i.id for i in session.inputs.claim()] == [third]  # the next turn's claim
    assert session.inputs.claim()[0].turn == 2


def test_inputs_a_crashed_turn_claimed_are_claimed_again(store):
    with store.create_session("s") as session:
        session.append({"turn": 1})
        item = session.inputs.submit("hello")
        assert session.inputs.claim()[0].id == item
    # the process ended without finishing the turn: its claim was not consumed
    with store.open_session("s") as session:
        again = session.inputs.claim()
        assert [i.id for i in again] == [item]
        session.finish_turn()
        assert session.inputs.items()[0].status == "consumed"


def test_consumed_inputs_are_pruned_after_their_retention(session, clock):
    session.append({"x": 1})
    session.inputs.submit("old")
    session.inputs.claim()
    session.finish_turn()
    session.inputs.submit("pending")
    assert session.inputs.prune(retention=3600) == 0
    # A turn's records are stamped with the wall time; the fake clock started at the wall
    # time (in whole seconds) and stood still since.
    clock.advance(3660)
    assert session.inputs.prune(retention=3600) == 1
    assert [i.payload for i in session.inputs.items()] == ["pending"]


def test_claiming_inputs_needs_the_lease_but_submitting_does_not(store):
    store.create_session("s").close()
    other = fsstore.LeaseOwner("elsewhere", 1, None, "runner")
    store.claim_lease("s", other, ttl=30)
    with store.open_session("s", shared=True) as shared:
        shared.inputs.submit("from the user")
        with pytest.raises(fsstore.SessionLocked):
            shared.inputs.claim()


def test_a_fork_and_a_clear_take_the_queue_with_the_history(store):
    with store.create_session("s") as session:
        session.queue.enqueue("job", "before the fork")
        session.inputs.submit("pending input")
        fork = session.fork("f")
        fork.queue.enqueue("job", "in the fork")
        assert [i.payload for i in fork.queue.items()] == ["before the fork", "in the fork"]
        assert [i.payload for i in fork.inputs.items()] == ["pending input"]
        fork.close()
        session.clear()
        assert session.queue.items() == [] and session.inputs.items() == []


# --- many workers, some killed ----------------------------------------------------------

WORKER = textwrap.dedent("""
    import random, sys, time, fsstore
    store = fsstore.open_store(sys.argv[1], create=False)
    name = sys.argv[2]
    session = store.open_session("s", shared=True, lock_timeout=30, durability="fsync")
    rng = random.Random(name)
    print("READY", flush=True)
    idle = 0
    while idle < 150:
        claim = session.queue.claim(name, float(sys.argv[3]))
        if claim is None:
            idle += 1
            time.sleep(0.01)
            continue
        idle = 0
        print("CLAIMED", claim.id, claim.token, "END", flush=True)
        time.sleep(rng.random() * 0.003)
        try:
            session.queue.complete(claim)
        except fsstore.ClaimLost:
            print("LOST", claim.id, claim.token, "END", flush=True)
            continue
        print("DONE", claim.id, claim.token, "END", flush=True)
    print("IDLE", flush=True)
""")


def start_worker(workers: contextlib.ExitStack, root, name: str,
                 claim_ttl: float) -> Child:
    worker = workers.enter_context(Child.script(WORKER, root, name, claim_ttl))
    worker.wait_for("READY")
    return worker


def completions_in_log(store) -> list[tuple[int, int]]:
    """(item, token) of every complete record, each checked against the item's claim
    at that point of the log: a completion by a claim that was no longer current would
    show here as a mismatch."""
    claims: dict[int, int] = {}
    done = []
    for event in store.read_session("s").events(include_internal=True):
        if event.kind != "fsstore.queue":
            continue
        data = event.data
        if data["op"] == "claim":
            claims[data["id"]] = event.seq
        elif data["op"] == "complete":
            assert claims.get(data["id"]) == data["token"], (event, claims.get(data["id"]))
            done.append((data["id"], data["token"]))
    return done


def queue_workers_trial(tmp_path, items: int, kills: int, seed: int) -> None:
    root = tmp_path / f"store-{seed}"
    store = fsstore.open_store(root)
    with store.create_session("s") as session:
        ids = session.queue.enqueue_many([("job", n) for n in range(items)], max_attempts=100)
    rng = random.Random(seed)
    # Claims of 0.5 s on the wall clock, as the workers are other processes: a killed
    # worker's items go to the others when its claims expire.
    with contextlib.ExitStack() as reaper:
        workers = {f"w{n}": start_worker(reaper, root, f"w{n}", 0.5) for n in range(4)}
        for kill in range(kills):
            time.sleep(rng.uniform(0.05, 0.3))  # the moment of the kill: random
            name = rng.choice(sorted(workers))
            workers.pop(name).kill9()
            workers[f"{name}-{kill}"] = start_worker(reaper, root, f"{name}-{kill}", 0.5)
        for worker in workers.values():
            worker.finish(timeout=300)
    done = completions_in_log(store)
    # every item completed, by a claim that held it; and nothing left in the queue
    assert sorted({item for item, _ in done}) == ids
    with store.open_session("s") as session:
        assert session.queue.items() == []
    if kills == 0:
        assert len(done) == items  # exactly once
    assert [f for f in store.verify() if f.level == "problem"] == []


@pytest.mark.stress
def test_four_worker_processes_complete_every_item_exactly_once(tmp_path):
    queue_workers_trial(tmp_path, items=300, kills=0, seed=1)


@pytest.mark.stress
def test_workers_killed_at_random_lose_no_item(tmp_path):
    queue_workers_trial(tmp_path, items=300, kills=3, seed=2)


@pytest.mark.stress
@pytest.mark.long
@pytest.mark.parametrize("seed", range(3, 23))
def test_workers_killed_at_random_many_times_lose_no_item(tmp_path, seed):
    queue_workers_trial(tmp_path, items=1000, kills=10, seed=seed)


# --- records a hand or a newer fsstore wrote, and payloads ------------------------------------


@pytest.mark.parametrize("kind, data, field", [
    ("fsstore.queue", {"op": "claim", "id": "1", "worker": "w", "expires": 1.0}, "id"),
    ("fsstore.queue", {"op": "enqueue", "kind": 5}, "kind"),
    ("fsstore.queue", {"op": "enqueue", "kind": "k", "priority": True}, "priority"),
    ("fsstore.queue", {"op": "fail", "id": 1, "token": 2, "error": {"x": 1}}, "error"),
    ("fsstore.queue", {"op": "purge", "ids": 1}, "ids"),
    ("fsstore.queue", {"op": "explode", "id": 1}, "op"),
    ("fsstore.queue", ["enqueue"], "object"),
    ("fsstore.input", {"op": "consume", "ids": [1], "turn": 1.5}, "turn"),
    ("fsstore.input", {"op": "claim", "ids": ["1"], "turn": 1}, "ids[0]"),
    ("fsstore.input", {"op": "prune"}, "ids"),
])
@pytest.mark.parametrize("chain", [False, True], ids=["unchained", "chained"])
def test_a_queue_or_input_record_that_does_not_fit_its_type_is_a_typed_error(
        tmp_path, kind, data, field, chain):
    from chained_forge import append_chained
    from forge import append_raw

    store = fsstore.open_store(tmp_path / "store", chain=chain)
    with store.create_session("s") as session:
        session.queue.enqueue("job", 1)
    # chained: the record carries a valid chain value, as its key's holder could write it
    (append_chained if chain else append_raw)(store, "s", [(kind, data)])
    with pytest.raises(fsstore.FormatVersionError) as caught:
        store.read_session("s").queue.items()
    assert field in str(caught.value) and "seq 2" in str(caught.value)


def test_payloads_read_back_as_the_log_gives_them_before_and_after_reopen(store):
    with store.create_session("s") as session:
        session.queue.enqueue("job", (1, (2, 3)))
        session.inputs.submit({"t": (4,)})
        assert session.queue.items()[0].payload == [1, [2, 3]]
        assert session.inputs.items()[0].payload == {"t": [4]}
    reader = store.read_session("s")
    assert reader.queue.items()[0].payload == [1, [2, 3]]
    assert reader.inputs.items()[0].payload == {"t": [4]}


def test_payloads_msgpack_cannot_give_back_are_refused_and_nothing_is_written(session):
    import msgspec

    before = tree_snapshot(session.path)
    for payload in (msgspec.msgpack.Ext(5, b"abc"), {"x": [msgspec.msgpack.Ext(1, b"")]},
                    msgspec.Raw(b"\xc1"), object(), 2**64):
        with pytest.raises(fsstore.InvalidEvent):
            session.queue.enqueue("job", payload)
        with pytest.raises(fsstore.InvalidEvent):
            session.inputs.submit(payload)
    assert tree_snapshot(session.path) == before


def test_the_snapshot_body_of_a_queue_and_inputs_is_the_worked_example_of_the_format():
    import re

    import msgspec

    from fsstore.state import StateImage

    with open(os.path.join(ROOT, "docs", "FORMAT.md")) as handle:
        spec = handle.read()
    section = spec[spec.index("### 17.1"):spec.index("## 18.")]
    dump = section[section.index("Worked example"):]
    dump = dump[dump.index("```") + 3:]
    dump = dump[:dump.index("```")]
    expected = bytes.fromhex("".join(re.findall(r"^[0-9a-f]{8}  ((?:[0-9a-f]{2} ?)+)", dump,
                                                re.MULTILINE)))
    image = StateImage(3, 1)
    image.work.apply(2, 1795240001.5, {"op": "enqueue", "kind": "wake"})
    image.inputs.apply(3, 1795240002.0, {"op": "submit", "payload": "hi"})
    assert msgspec.msgpack.encode(image.body()) == expected
    body = msgspec.msgpack.decode(expected)
    assert fsstore.work.WorkState.from_body(body["queue"]).view(2).kind == "wake"
    assert fsstore.work.InputState.from_body(body["inputs"]).view(3).payload == "hi"
