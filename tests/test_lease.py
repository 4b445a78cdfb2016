"""Execution leases: claim outcomes, liveness, fencing tokens, the lease file's damage,
and how leases and the writer lock work as one mechanism."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from conftest import tree_snapshot
from procs import Child, run

import fsstore
from fsstore import CorruptionError, LeaseLost, LeaseOwner, SessionLocked
from fsstore import lease as lease_module

ELSEWHERE = LeaseOwner("another-host", 4242, None, "remote")


@pytest.fixture
def session_store(store):
    store.create_session("s").close()
    return store


def lease_file(store, session_id="s") -> Path:
    return Path(store.path) / "sessions" / session_id / "lease"


def dead_owner(label: str = "dead") -> LeaseOwner:
    """An owner on this host whose process has exited."""
    (pid,) = run("import os; print(os.getpid())")
    return LeaseOwner(LeaseOwner.current().host, int(pid), None, label)


# --- claims -------------------------------------------------------------------------------


def test_a_free_lease_is_acquired_with_token_1(session_store):
    outcome = session_store.claim_lease("s", "worker", ttl=10)
    assert outcome.status == "acquired"
    lease = outcome.lease
    assert (lease.token, lease.session_id, lease.owner.label) == (1, "s", "worker")
    assert lease.owner.pid == os.getpid() and lease.expires_at > time.time() + 9
    info = session_store.lease_info("s")
    assert (info.held, info.token, info.owner) == (True, 1, lease.owner)


def test_a_live_holders_lease_is_reported_held(session_store):
    first = session_store.claim_lease("s", ELSEWHERE, ttl=10)
    outcome = session_store.claim_lease("s", "me", ttl=10)
    assert outcome.status == "held"
    assert outcome.holder == ELSEWHERE and outcome.expires_at == first.lease.expires_at
    assert outcome.lease is None


def test_an_expired_lease_is_taken_over_with_a_higher_token(session_store, clock):
    session_store.claim_lease("s", ELSEWHERE, ttl=5)
    clock.advance(5)
    outcome = session_store.claim_lease("s", "me", ttl=10)
    assert outcome.status == "taken_over"
    assert outcome.previous == ELSEWHERE and outcome.lease.token == 2


def test_a_lease_is_held_until_the_clock_reaches_its_expiry_and_fences_from_then(
        session_store, clock):
    lease = session_store.claim_lease("s", ELSEWHERE, ttl=10).lease
    assert lease.expires_at == clock() + 10
    session = session_store.open_session("s", lease=lease)
    clock.advance(9)
    assert session_store.claim_lease("s", "me", ttl=10).status == "held"
    session.append({"n": 1})
    with session_store.open_session("s", shared=True) as shared, \
            pytest.raises(SessionLocked, match="leased"):
        shared.append({"no": "lease"})
    clock.advance(1)
    with pytest.raises(LeaseLost, match="expired"):
        session.append({"n": 2})
    session.close()
    with session_store.open_session("s", shared=True) as shared:
        shared.append({"after": "expiry"})  # nobody holds a lease now
    assert session_store.claim_lease("s", "me", ttl=10).status == "taken_over"


def test_a_dead_holders_lease_is_taken_over_before_it_expires(session_store):
    session_store.claim_lease("s", dead_owner(), ttl=3600)
    outcome = session_store.claim_lease("s", "me", ttl=10)
    assert outcome.status == "taken_over" and outcome.previous.label == "dead"


def test_a_reused_pid_is_not_taken_for_the_holder():
    me = LeaseOwner.current()
    if me.started is None:
        pytest.skip("this OS does not tell process start times")
    assert me.alive() is True
    boot, _, ticks = me.started.rpartition(":")
    assert LeaseOwner(me.host, me.pid, f"{boot}:{int(ticks) + 1}").alive() is False
    assert LeaseOwner("another-host", me.pid, None).alive() is None


def test_claiming_again_renews_with_the_same_token(session_store):
    owner = LeaseOwner.current("w")
    first = session_store.claim_lease("s", owner, ttl=1).lease
    again = session_store.claim_lease("s", owner, ttl=50)
    assert again.status == "acquired" and again.lease.token == first.token
    assert again.lease.expires_at > first.expires_at


def test_renew_extends_and_release_frees(session_store, clock):
    lease = session_store.claim_lease("s", "w", ttl=5).lease
    clock.advance(6)  # expired, but nobody took it: it can be renewed
    renewed = session_store.renew_lease(lease, ttl=20)
    assert renewed.token == lease.token and renewed.expires_at == clock() + 20
    assert session_store.release_lease(renewed) is True
    assert session_store.release_lease(renewed) is False
    assert not session_store.lease_info("s").held
    assert session_store.claim_lease("s", ELSEWHERE, ttl=5).lease.token == 2


def test_renewing_a_lease_taken_over_raises_lease_lost(session_store, clock):
    lease = session_store.claim_lease("s", ELSEWHERE, ttl=5).lease
    clock.advance(5)
    session_store.claim_lease("s", "me", ttl=10)
    with pytest.raises(LeaseLost) as raised:
        session_store.renew_lease(lease)
    assert (raised.value.token, raised.value.current) == (1, 2)


def test_tokens_only_go_up_across_reopens_and_many_claims(tmp_path):
    tokens = []
    for _ in range(30):
        store = fsstore.open_store(tmp_path / "store")
        if "s" not in store:
            store.create_session("s").close()
        lease = store.claim_lease("s", f"w{len(tokens)}", ttl=30).lease
        tokens.append(lease.token)
        store.release_lease(lease)
    assert tokens == list(range(1, 31))


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), "5", True, 10**9])
def test_a_bad_ttl_is_refused(session_store, ttl):
    before = tree_snapshot(session_store.path)
    with pytest.raises(fsstore.InvalidSetting):
        session_store.claim_lease("s", "w", ttl=ttl)
    assert tree_snapshot(session_store.path) == before


def test_a_lease_on_a_missing_session_raises(store):
    with pytest.raises(fsstore.SessionNotFound):
        store.claim_lease("nope", "w")


# --- the lease file ----------------------------------------------------------------------


def test_a_torn_newest_slot_falls_back_and_never_reuses_a_token(session_store, clock):
    session_store.claim_lease("s", ELSEWHERE, ttl=1)
    clock.advance(1)
    second = session_store.claim_lease("s", "me", ttl=1).lease  # generation 2: slot 0
    path = lease_file(session_store)
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0xFF  # tear the newest slot
    path.write_bytes(bytes(raw))
    info = session_store.lease_info("s")
    assert info.damaged_slot == 0 and info.token == 1
    clock.advance(1)
    third = session_store.claim_lease("s", "me", ttl=10).lease
    # The damaged slot might have held token 2 (it did): skip it.
    assert third.token == second.token + 1 == 3
    assert session_store.lease_info("s").damaged_slot is None  # the slot was rewritten


@pytest.mark.parametrize("damage", ["garbage", "zeros", "short", "long"])
def test_a_lease_file_with_no_valid_slot_raises_and_reset_recovers(session_store, damage):
    session_store.claim_lease("s", "w", ttl=10)
    path = lease_file(session_store)
    raw = path.read_bytes()
    broken = {"garbage": bytes((b ^ 0x5A) for b in raw), "zeros": bytes(len(raw)),
              "short": raw[:300], "long": raw + b"x"}[damage]
    path.write_bytes(broken)
    before = tree_snapshot(session_store.path)
    with pytest.raises(CorruptionError) as raised:
        session_store.claim_lease("s", "other", ttl=10)
    assert raised.value.path == str(path)
    with pytest.raises(CorruptionError):
        session_store.open_session("s")  # no writer can tell whether a lease is live
    assert tree_snapshot(session_store.path) == before
    floor = session_store.reset_lease("s")
    assert floor > 10**15
    lease = session_store.claim_lease("s", "other", ttl=10).lease
    assert lease.token == floor + 1
    with pytest.raises(fsstore.InvalidSetting):
        session_store.reset_lease("s")  # a readable file is never reset


def test_a_newer_lease_format_is_refused(session_store):
    session_store.claim_lease("s", "w", ttl=10)
    path = lease_file(session_store)
    raw = bytearray(path.read_bytes())
    slot = 1 * lease_module.SLOT_SIZE  # generation 1 is in slot 1
    raw[slot + 8:slot + 10] = (9).to_bytes(2, "little")
    from crc32c import crc32c
    body = bytes(raw[slot:slot + lease_module.SLOT_SIZE - 4])
    raw[slot + lease_module.SLOT_SIZE - 4:slot + lease_module.SLOT_SIZE] = \
        crc32c(body).to_bytes(4, "little")
    path.write_bytes(bytes(raw))
    with pytest.raises(fsstore.FormatVersionError):
        session_store.lease_info("s")


# --- the lease file lost or restored --------------------------------------------------

HOLDER_ON_CUE = """
import sys, fsstore
store = fsstore.open_store(sys.argv[1], create=False)
outcome = store.claim_lease("s", "first-holder", ttl=3600)
session = store.open_session("s", lease=outcome.lease, lock_timeout=30)
print("READY", outcome.lease.token, flush=True)
for line in sys.stdin:
    try:
        session.append({"by": "first-holder"})
        print("WROTE", flush=True)
    except fsstore.LeaseLost as exc:
        print("FENCED", exc.token, exc.current, flush=True)
"""


def test_deleting_the_lease_file_never_hands_out_a_token_again(session_store):
    with Child.script(HOLDER_ON_CUE, session_store.path, stdin=True) as holder:
        assert holder.wait_for("READY") == ["READY", "1"]
        assert holder.ask("write") == ["WROTE"]
        lease_file(session_store).unlink()
        (finding,) = session_store.verify()
        assert (finding.level, finding.path) == ("problem", str(lease_file(session_store)))
        assert "missing" in finding.message and "up to 1" in finding.message
        second = session_store.claim_lease("s", "second", ttl=30)
        assert second.status == "acquired" and second.lease.token == 2
        assert holder.ask("write") == ["FENCED", "1", "2"]
        with session_store.open_session("s", lease=second.lease) as session:
            session.append({"by": "second"})
        assert holder.ask("write") == ["FENCED", "1", "2"]
        holder.finish()
    assert session_store.verify() == []
    events = session_store.read_session("s").events()
    assert [e.data["by"] for e in events] == ["first-holder", "second"]


def test_a_lease_file_restored_from_an_older_backup_never_hands_out_a_token_again(
        session_store, clock):
    first = session_store.claim_lease("s", ELSEWHERE, ttl=5).lease
    backup = lease_file(session_store).read_bytes()
    clock.advance(5)
    second = session_store.claim_lease("s", "me", ttl=30).lease
    assert second.token == 2
    with session_store.open_session("s", lease=second) as session:
        session.append({"by": "second"})
        restored = lease_file(session_store).with_name("restored")
        restored.write_bytes(backup)
        os.replace(restored, lease_file(session_store))  # a restore renames a file in
        (finding,) = session_store.verify()
        assert finding.level == "problem" and "older" in finding.message
        before = tree_snapshot(session_store.path)
        with pytest.raises(LeaseLost):
            session.append({"by": "second, after the restore"})
        assert tree_snapshot(session_store.path) == before
    with pytest.raises(LeaseLost):
        session_store.open_session("s", lease=first)  # the token the backup names
    third = session_store.claim_lease("s", "third", ttl=30)
    assert third.status == "acquired" and third.lease.token == 3
    assert session_store.verify() == []


def test_a_restore_without_the_lease_file_or_the_token_record_goes_on_from_the_log(
        session_store):
    for owner in ("first", "second"):
        lease = session_store.claim_lease("s", owner, ttl=30).lease
        with session_store.open_session("s", lease=lease) as session:
            session.append({"by": owner})
            session.append({"by": owner})  # one lease record per handle, not per write
        session_store.release_lease(lease)
    kinds = [e.kind for e in session_store.read_session("s").events(include_internal=True)]
    assert kinds.count(lease_module.LEASE_RECORD) == 2
    lease_file(session_store).unlink()
    lease_file(session_store).with_name("writer.lock").write_bytes(b"")  # a fresh one
    (finding,) = session_store.verify()
    assert finding.path == str(lease_file(session_store)) and "up to 2" in finding.message
    assert session_store.claim_lease("s", "third", ttl=30).lease.token == 3
    assert session_store.verify() == []


def test_a_lost_lease_file_and_a_damaged_token_record_refuse_claims_until_reset(
        session_store):
    for owner in ("v", "w"):  # two claims: both slots of the token record written
        session_store.release_lease(session_store.claim_lease("s", owner, ttl=30).lease)
    lock = lease_file(session_store).with_name("writer.lock")
    raw = bytearray(lock.read_bytes())
    assert len(raw) == lease_module.TOKEN_RECORD_SIZE
    raw[20] ^= 0xFF  # the newest slot's token: a torn write is harmless
    lock.write_bytes(bytes(raw))
    (note,) = session_store.verify()
    assert (note.level, note.path, note.offset) == ("note", str(lock), 0)
    lease_file(session_store).unlink()
    third = session_store.claim_lease("s", "x", ttl=30).lease
    assert third.token == 3  # not 2 again: the damaged slot may have held it
    session_store.release_lease(third)
    lease_file(session_store).unlink()
    raw = bytearray(lock.read_bytes())
    raw[20] ^= 0xFF
    raw[lease_module.TOKEN_SLOT_SIZE + 20] ^= 0xFF  # both slots now
    lock.write_bytes(bytes(raw))
    before = tree_snapshot(session_store.path)
    with pytest.raises(CorruptionError, match="unknown") as raised:
        session_store.claim_lease("s", "w", ttl=30)
    assert raised.value.path == str(lock)
    assert tree_snapshot(session_store.path) == before
    (finding,) = session_store.verify()
    assert (finding.level, finding.path) == ("problem", str(lock))
    floor = session_store.reset_lease("s")
    assert floor > 10**15
    assert session_store.claim_lease("s", "w", ttl=30).lease.token == floor + 1
    assert session_store.verify() == []


# --- fencing ------------------------------------------------------------------------------


def test_writes_carry_the_lease_and_a_taken_over_one_writes_nothing(session_store, clock):
    lease = session_store.claim_lease("s", ELSEWHERE, ttl=30).lease
    session = session_store.open_session("s", lease=lease)
    session.append({"by": "first"})
    memory = session.create_collection("memory", 2)
    memory.upsert([fsstore.VectorDocument("a", [1, 0])])
    clock.advance(30)
    with pytest.raises(LeaseLost, match="expired"):
        session.append({"by": "first, expired"})
    taken = session_store.claim_lease("s", "second", ttl=10)
    assert taken.status == "taken_over"
    with session_store.open_session("s", lease=taken.lease) as second:
        second.commit([{"by": "second"}], state_patch={"owner": "second"})
    before = tree_snapshot(session_store.path)
    for write in (lambda: session.append({"by": "first, fenced"}),
                  lambda: session.commit([{"x": 1}], state_patch={"owner": "first"}),
                  lambda: session.set_state("owner", "first"),
                  lambda: session.finish_turn(),
                  lambda: session.checkpoint("mine"),
                  lambda: memory.upsert([fsstore.VectorDocument("b", [0, 1])]),
                  lambda: memory.delete(["a"]),
                  lambda: memory.compact(),
                  lambda: session.clear()):
        with pytest.raises(LeaseLost) as raised:
            write()
        assert (raised.value.token, raised.value.current) == (1, 2)
    assert tree_snapshot(session_store.path) == before
    session.close()
    reader = session_store.read_session("s")
    assert [e.data.get("by") for e in reader.events() if e.kind == "event"] == [
        "first", "second"]
    assert reader.state() == {"owner": "second"}


def test_a_lease_holder_sees_what_others_wrote_between_its_writes(session_store):
    lease = session_store.claim_lease("s", "runner", ttl=30).lease
    with session_store.open_session("s", lease=lease) as runner:
        runner.commit([{"n": 1}], state_patch={"count": 1})
        with session_store.open_session("s", shared=True) as ingress:
            ingress.queue.enqueue("wake", {"why": "timer"})
            ingress.inputs.submit("are you there?")
        runner.commit([{"n": 2}], state_patch={"count": 2})
        # seq 1 is the lease record its first write left (section 16.4)
        assert runner.head == 7 and runner.state() == {"count": 2}
        assert [w.kind for w in runner.queue.items()] == ["wake"]
        assert [i.payload for i in runner.inputs.claim()] == ["are you there?"]
    everything = session_store.read_session("s").events(include_internal=True)
    assert [e.kind for e in everything] == [
        lease_module.LEASE_RECORD, "event", fsstore.STATE_RECORD, "fsstore.queue",
        "fsstore.input", "event", fsstore.STATE_RECORD, "fsstore.input"]  # the claim


def test_an_exclusive_writer_and_a_lease_exclude_each_other(session_store):
    with session_store.open_session("s"), pytest.raises(SessionLocked):
        session_store.claim_lease("s", "w", ttl=5, lock_timeout=0.05)
    lease = session_store.claim_lease("s", ELSEWHERE, ttl=5).lease
    with pytest.raises(SessionLocked, match="leased to remote"):
        session_store.open_session("s")
    with session_store.open_session("s", shared=True) as shared:
        with pytest.raises(SessionLocked, match="leased"):
            shared.append({"no": "lease"})
        shared.queue.enqueue("ok")  # ingress needs no lease
    session_store.release_lease(lease)
    with session_store.open_session("s") as session:
        session.append({"now": "free"})


def test_a_lease_for_another_session_or_mode_none_is_refused(session_store):
    session_store.create_session("t").close()
    lease = session_store.claim_lease("t", "w", ttl=5).lease
    with pytest.raises(fsstore.InvalidSetting, match="for session 't'"):
        session_store.open_session("s", lease=lease)
    with pytest.raises(fsstore.InvalidSetting, match="flush"):
        session_store.open_session("t", lease=lease, durability="none")


def test_a_stale_lease_cannot_open_the_session(session_store, clock):
    lease = session_store.claim_lease("s", ELSEWHERE, ttl=5).lease
    clock.advance(5)
    session_store.claim_lease("s", "me", ttl=5)
    with pytest.raises(LeaseLost):
        session_store.open_session("s", lease=lease)


# --- across processes: a paused holder comes back --------------------------------------

HOLDER = """
import signal, sys, time, fsstore
resumed = 0  # SIGCONTs so far: each WROTE line says how many came before it


def count_resume(signum, frame):
    global resumed
    resumed += 1


signal.signal(signal.SIGCONT, count_resume)
store = fsstore.open_store(sys.argv[1], create=False)
outcome = store.claim_lease("s", "paused-holder", ttl=float(sys.argv[2]))
assert outcome.status in ("acquired", "taken_over"), outcome
session = store.open_session("s", lease=outcome.lease, lock_timeout=30)
print("READY", outcome.lease.token, flush=True)
n = 0
while True:
    n += 1
    try:
        session.append({"by": "holder", "n": n})
    except fsstore.LeaseLost as exc:
        print("FENCED", exc.token, exc.current, n, flush=True)
        break
    print("WROTE", n, resumed, flush=True)
    time.sleep(0.002)
"""


def sigstop_trial(tmp_path, clock, trial: int) -> None:
    root = tmp_path / f"store-{trial}"
    store = fsstore.open_store(root)
    store.create_session("s").close()
    # The holder's lease is long on the wall clock, so it cannot expire before the holder
    # has even started (as a short one did on a busy machine); this process's clock, the
    # successor's, is moved past its end instead of sleeping.
    ttl = 3600
    with Child.script(HOLDER, root, ttl) as holder:
        holder.wait_for("READY")
        holder.wait_for("WROTE")
        clock.advance(max(store.lease_info("s").expires_at - clock(), 0) + 1)
        resumes = 0
        for _ in range(20):
            holder.signal(signal.SIGSTOP)  # paused between writes, or inside one
            try:
                outcome = store.claim_lease("s", "successor", ttl=30, lock_timeout=0.5)
                break
            except SessionLocked:
                # Paused inside a write, holding the session's mutex: nobody can claim
                # until that write (begun under a valid lease) ends. Let it run on past
                # it, and try again. A WROTE line counting this SIGCONT was printed after
                # the resume, so after that write ended; lines printed before the pause
                # count fewer, and are passed over.
                resumes += 1
                holder.signal(signal.SIGCONT)
                while int(holder.wait_for("WROTE")[2]) < resumes:
                    pass
        assert outcome.status == "taken_over", outcome
        with store.open_session("s", lease=outcome.lease, lock_timeout=5) as successor:
            successor.append({"by": "successor"})
            holder.signal(signal.SIGCONT)
            out = holder.finish()
            successor.append({"by": "successor", "last": True})
    fenced = [line.split() for line in out if line.startswith("FENCED")]
    assert fenced and int(fenced[0][1]) < int(fenced[0][2]), out
    events = [e for e in store.read_session("s").events() if e.kind == "event"]
    first_successor = next(i for i, e in enumerate(events) if e.data["by"] == "successor")
    # Nothing the paused holder tried after the takeover is in the log.
    assert all(e.data["by"] == "successor" for e in events[first_successor:]), events
    assert events[-1].data.get("last") is True


@pytest.mark.stress
def test_a_paused_holder_is_fenced_when_it_resumes(tmp_path, clock):
    for trial in range(3):
        sigstop_trial(tmp_path, clock, trial)


@pytest.mark.stress
@pytest.mark.long
def test_a_paused_holder_is_fenced_hundreds_of_times(tmp_path, clock):
    for trial in range(200):
        sigstop_trial(tmp_path, clock, trial)


def _slot_with_owner(owner_raw: bytes, generation: int = 1, token: int = 1) -> bytes:
    import struct

    from crc32c import crc32c

    from fsstore.lease import _MAGIC, _SLOT, HELD, SLOT_SIZE

    head = _SLOT.pack(_MAGIC, 1, 0, generation, token, HELD, time.time() + 60, time.time(),
                      len(owner_raw))
    body = (head + owner_raw).ljust(SLOT_SIZE - 4, b"\0")
    return body + struct.pack("<I", crc32c(body))


@pytest.mark.parametrize("owner, field", [
    (b'{"host": "h", "pid": 1, "started": 5}', "started"),
    (b'{"host": "h", "pid": "1"}', "pid"),
    (b'{"host": "h", "pid": -1}', "pid"),
    (b'{"host": "h", "pid": 99999999999999}', "pid"),
    (b'{"host": ["h"], "pid": 1}', "host"),
    (b'{"pid": 1}', "host"),
    (b'{"host": "h", "pid": 1, "label": {"a": 1}}', "label"),
    (b'["h", 1]', "object"),
    (b"[" * 200 + b"]" * 200, "object"),
])
def test_a_lease_owner_that_does_not_fit_its_type_is_corruption_naming_the_field(
        tmp_path, owner, field):
    store = fsstore.open_store(tmp_path / "s")
    store.create_session("a").close()
    path = os.path.join(store.path, "sessions", "a", "lease")
    with open(path, "wb") as handle:
        handle.write(b"\0" * lease_module.SLOT_SIZE + _slot_with_owner(owner))
    with pytest.raises(fsstore.CorruptionError) as caught:
        store.lease_info("a")
    assert caught.value.path == path and field in str(caught.value)


def test_an_owner_a_reader_would_refuse_is_refused_at_claim(tmp_path):
    store = fsstore.open_store(tmp_path / "s")
    store.create_session("a").close()
    before = tree_snapshot(store.path)
    for owner in (LeaseOwner("h", 0, None), LeaseOwner("h", 2**40, None),
                  LeaseOwner("h", 1, 5), LeaseOwner(5, 1, None)):  # type: ignore[arg-type]
        with pytest.raises(fsstore.InvalidSetting):
            store.claim_lease("a", owner=owner)
    assert tree_snapshot(store.path) == before


def test_a_fork_of_a_leased_session_holds_its_parents_lease_records_without_a_problem(store):
    store.create_session("a").close()
    lease = store.claim_lease("a", "runtime-1", ttl=60).lease
    assert lease is not None
    with store.open_session("a", lease=lease) as session:
        session.append({"leased": True})
    store.release_lease(lease)
    store.fork_session("a", "b").close()
    assert [f for f in store.verify() if f.level == "problem"] == []
    os.unlink(os.path.join(store.read_session("a").path, "lease"))
    assert [f.path for f in store.verify() if f.level == "problem"] == [
        os.path.join(store.read_session("a").path, "lease")]
    claimed = store.claim_lease("b", "runtime-2", ttl=60).lease
    assert claimed is not None and claimed.token > lease.token


@pytest.mark.parametrize("size", [512, 600, 1023, 1025])
def test_a_lease_file_cut_or_padded_is_corruption_not_an_older_lease(store, size):
    store.create_session("a").close()
    for label in ("one", "two", "three"):  # generations 1..3: slot 1 holds the newest
        lease = store.claim_lease("a", label, ttl=60).lease
        assert lease is not None
        store.release_lease(lease)
    path = os.path.join(store.read_session("a").path, "lease")
    with open(path, "r+b") as handle:
        handle.truncate(size)
    with pytest.raises(fsstore.CorruptionError, match="two slots"):
        store.lease_info("a")
    assert any(f.level == "problem" and f.path == path for f in store.verify())


@pytest.mark.parametrize("sealer", ["fork", "rollover", "clear"])
def test_a_shared_writer_closing_after_another_sealed_its_segment_leaves_that_segment_alone(
        tmp_path, sealer):
    store = fsstore.open_store(tmp_path / "store", durability="flush", segment_size=4096)
    store.create_session("s").close()
    log = os.path.join(store.path, "sessions", "s", "log")
    segment = os.path.join(log, "00000000000000000001.fslog")
    kept = str(tmp_path / "kept.fslog")
    os.link(segment, kept)  # as a fork's link would: it outlives a clear too
    first = store.open_session("s", shared=True)
    first.append({"x": 1})
    first.append({"x": 2})  # handed to the OS, not synced: close would sync them
    if sealer == "fork":
        store.fork_session("s", "f").close()  # seals the segment, links it into the fork
    else:
        with store.open_session("s", shared=True) as second:
            if sealer == "rollover":
                second.append({"pad": "x" * 2000})
                second.append({"pad": "x" * 3000})  # starts the next segment
            else:
                second.clear()
    sealed = Path(kept).read_bytes()
    first.close()
    assert Path(kept).read_bytes() == sealed  # a sealed segment is never written again
    assert [f for f in store.verify() if f.level == "problem"] == []
    reopened = store.open_session("s")
    assert reopened.synced_head == reopened.head  # close synced the active segment
    reopened.close()


def test_a_shared_writer_that_cannot_take_the_mutex_closes_without_writing(session_store):
    shared = session_store.open_session("s", shared=True, lock_timeout=0.05)
    shared.append({"x": 1})
    segment = os.path.join(session_store.path, "sessions", "s", "log",
                           "00000000000000000001.fslog")
    before = Path(segment).read_bytes()
    with session_store.open_session("s"):  # an exclusive writer holds the mutex
        with pytest.raises(SessionLocked):
            shared.close()
        assert shared.closed and Path(segment).read_bytes() == before
    shared.close()  # closed already: nothing more to do


def test_ingress_without_the_lease_takes_its_automatic_snapshots_unfenced(tmp_path, caplog):
    store = fsstore.open_store(tmp_path / "store",
                               snapshots=fsstore.SnapshotPolicy(every_events=3))
    store.create_session("s").close()
    assert store.claim_lease("s", "agent-1", ttl=60).status == "acquired"
    with store.open_session("s", shared=True) as ingress, caplog.at_level("WARNING"):
        for index in range(5):
            ingress.queue.enqueue("job", {"i": index})
        assert not [r for r in caplog.records if "snapshot failed" in r.getMessage()]
        assert os.listdir(os.path.join(store.path, "sessions", "s", "state")) == [
            "00000000000000000003.snap"]
        # explicit writes of events, state and snapshots stay fenced
        for write in (lambda: ingress.append({"no": "lease"}),
                      lambda: ingress.set_state("k", 1), ingress.snapshot):
            with pytest.raises(SessionLocked, match="leased"):
                write()
    assert [w.payload["i"] for w in store.read_session("s").queue.items()] == [0, 1, 2, 3, 4]
