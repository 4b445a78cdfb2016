"""Vacuum (fsstore/vacuum.py): what a session's and a store's vacuum remove, that a dry
run reports exactly that and changes nothing, who it waits for, what a crash at each of
its I/O calls leaves; and the commands ``fsstore vacuum`` and ``fsstore rm``."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from crashsim import CrashSimIO

import fsstore
from fsstore import SnapshotPolicy, snapshot
from fsstore.cli import main
from fsstore.cli._progress import progress, tracked
from fsstore.fsio import FileIO
from fsstore.log import LogPosition
from fsstore.vacuum import KINDS, LOG_RECORD_KINDS
from fsstore.vectors.collection_chain import CollectionChain

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OLD = time.time() - 10 * 24 * 3600  # older than every grace period


def age(path, when=OLD) -> None:
    os.utime(path, (when, when))


def tree(root) -> dict[str, tuple[str, int]]:
    """Every file and folder under ``root``: its content's hash (folders: "") and
    mtime, to prove nothing changed."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            path = os.path.join(folder, name)
            found[path] = ("", os.lstat(path).st_mtime_ns)
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                digest = hashlib.sha256(handle.read()).hexdigest()
            found[path] = (digest, os.lstat(path).st_mtime_ns)
    return found


def touch(path, data=b"x", when=OLD) -> str:
    with open(path, "wb") as handle:
        handle.write(data)
    age(path, when)
    return path


def read(path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def problems(store) -> list:
    return [f for f in store.verify() if f.level == "problem"]


class Littered:
    """A store whose session ``s`` holds something of every kind a vacuum removes, and
    the names of what must go and what must stay."""

    def __init__(self, root, *, vectors: bool = True, many: int = 1,
                 chain: bool | None = None) -> None:
        self.root = str(root)
        policy = SnapshotPolicy(every_events=None, every_bytes=None, keep=10)
        store = fsstore.open_store(root, segment_size=4096, snapshots=policy, chain=chain)
        store.create_workspace("w")
        path = os.path.join(self.root, "sessions", "s")
        log, state = os.path.join(path, "log"), os.path.join(path, "state")
        self.doomed: dict[str, set[str]] = {kind: set() for kind in KINDS}
        with store.create_session("s") as session:
            session.append_many([{"i": i, "pad": "p" * 300} for i in range(20)])
            cleared_seq = session.snapshot()
            cleared_path = snapshot.SnapshotDir(FileIO(), path).file_path(cleared_seq)
            old_snapshot = read(cleared_path)
            old_name = sorted(n for n in os.listdir(log) if n.endswith(".fslog"))[0]
            old_segment = read(os.path.join(log, old_name))
            session.clear()
            seqs = []
            for round_ in range(3 + many):
                session.append_many([{"r": round_, "pad": "q" * 200} for _ in range(5)])
                session.set_state("round", round_)
                seqs.append(session.snapshot())
            kept_ref = session.blobs.put(b"referenced attachment")
            session.commit([{"file": kept_ref}], state_patch={"file": kept_ref})
            session.checkpoint(checkpoint_id="c1")
            if vectors:
                memory = session.create_collection("m", dim=4)
                for batch in range(2):
                    memory.upsert([fsstore.VectorDocument(f"d{batch}-{i}", np.eye(4)[i % 4],
                                                          content=f"{batch} {i}")
                                   for i in range(6)])
                    memory.seal()
                memory.compact()  # the two shards are merged: their files are retired
            self.head = session.head
            self.identity = session.identity
        with store.open_session("s") as session:  # an orphan of a writer now gone
            orphan = session.blobs.put(b"nothing refers to this")
        blob_path = os.path.join(path, "blobs", "sha256", orphan.hex[:2], orphan.hex)
        age(blob_path)
        self.orphan_bytes = os.path.getsize(blob_path)
        self.kept_ref = kept_ref

        # snapshots: one of the log before the clear, one past the end of the log, one
        # whose position the log does not hold; the oldest usable ones beyond keep=2
        touch(cleared_path, old_snapshot)
        # a chained session's are made with its chain's MAC and the chain values the
        # files they copy recorded (as the writer makes them): only their place is wrong
        snaps = store.read_session("s")._snapshots
        newest = snaps.read(snaps.file_path(seqs[-1]))
        header = newest.header
        snaps.write(self.head + 10, header.log_start, header.position, newest.body,
                    newest.meta.get("chain"))
        middle = snaps.read(snaps.file_path(seqs[1]))
        first, offset, _crc = middle.header.position
        snaps.write(seqs[1], header.log_start, LogPosition(first, offset, 12345),
                    middle.body, middle.meta.get("chain"))
        self.doomed["snapshots"] = {snaps.file_path(s) for s in
                                    [cleared_seq, self.head + 10, *seqs[:-2]]}
        self.kept_snapshots = {snaps.file_path(s) for s in seqs[-2:]}

        # the log: a segment of before the clear, a temp file, torn tails old and young
        self.doomed["log_leftovers"] = {touch(os.path.join(log, old_name), old_segment),
                                        touch(os.path.join(log, ".tmp-seg-1234"))}
        self.doomed["torn_files"] = {touch(os.path.join(log, "00000000000000000021@64.torn"),
                                           b"torn bytes")}
        self.young = {touch(os.path.join(log, "00000000000000000021@128.torn"), b"t",
                            when=time.time())}

        # temp files everywhere, and trash; young ones stay
        for folder in (path, state, os.path.join(path, "checkpoints"),
                       os.path.join(path, "blobs")):
            self.doomed["temp_files"].add(touch(os.path.join(folder, ".tmp-x-abcd1234")))
            self.young.add(touch(os.path.join(folder, ".tmp-y-abcd1234"), when=time.time()))
        if vectors:
            vectors_dir = os.path.join(path, "vectors")
            for name, kind in ((".tmp-n-abcd1234", "temp_files"),
                               (".trash-n-abcd1234", "trash_folders")):
                folder = os.path.join(vectors_dir, name)
                os.mkdir(folder)
                touch(os.path.join(folder, "collection.json"), b"{}")
                age(folder)
                self.doomed[kind].add(folder)
            collection = os.path.join(vectors_dir, "m")
            manifest_path = os.path.join(collection, "collection.json")
            with open(manifest_path) as handle:
                data = json.load(handle)
            retired = data["retired"]
            assert retired, "the merge retired the merged shards' files"
            # as if the merge was an hour ago: past the copy grace period
            data["retired"] = [[name, since - 3600] for name, since in retired]
            if data.get("chain") is not None:  # its MAC recomputed, as its writer would
                reader = store.read_session("s")
                data["chain"]["mac"] = CollectionChain(
                    reader.chain_rules, reader.identity.uid, "m").manifest_mac(data)
            with open(manifest_path, "w") as handle:
                json.dump(data, handle, indent=2, sort_keys=True)
            self.doomed["vector_files"] = {os.path.join(collection, name)
                                           for name, _since in retired}
            self.doomed["vector_files"].add(touch(os.path.join(collection, ".tmp-s-1234")))

        # the store's own leftovers
        sessions = os.path.join(self.root, "sessions")
        self.doomed["temp_files"].add(touch(os.path.join(self.root, ".tmp-fsstore.json-ab12")))
        self.doomed["temp_files"].add(touch(os.path.join(self.root, "workspaces",
                                                         ".tmp-w.json-ab12")))
        for name, kind in ((".tmp-new-ab12cd34", "temp_files"),
                           (".trash-gone-ab12cd34", "trash_folders")):
            folder = os.path.join(sessions, name)
            os.mkdir(folder)
            touch(os.path.join(folder, "session.json"), b"{}")
            age(folder)
            self.doomed[kind].add(folder)
        young = os.path.join(sessions, ".tmp-young-ab12cd34")
        os.mkdir(young)
        self.young.add(young)

    def store(self, io=None, keep: int = 2):
        return fsstore.open_store(self.root, create=False, io=io, snapshots=SnapshotPolicy(
            every_events=None, every_bytes=None, keep=keep))

    def session_doomed(self) -> dict[str, set[str]]:
        """What a vacuum of the session alone removes (not the store's leftovers)."""
        prefix = os.path.join(self.root, "sessions", "s") + os.sep
        return {kind: {p for p in paths if p.startswith(prefix)}
                for kind, paths in self.doomed.items()}


def removed_paths(report) -> dict[str, set[str]]:
    return {kind: set(report.removed[kind].paths) for kind in KINDS}


def check_whole(store, littered: Littered, *, vectors: bool = True) -> None:
    """The session opens, verifies, and holds what it held before the vacuum."""
    reader = store.read_session("s")
    assert reader.head == littered.head
    assert reader.state()["round"] >= 3
    assert reader.blobs.get(littered.kept_ref) == b"referenced attachment"
    assert reader.load_checkpoint("c1")["file"]["fsstore.blob"] == littered.kept_ref.digest
    if vectors:
        assert reader.collection("m").count() == 12
    with store.open_session("s") as writer:
        assert writer.head == littered.head
    assert problems(store) == []


# --- what a vacuum removes -----------------------------------------------------------------


@pytest.mark.parametrize("chain", [False, True], ids=["unchained", "chained"])
def test_a_session_vacuum_removes_every_kind_it_names_and_nothing_else(tmp_path, chain):
    littered = Littered(tmp_path / "store", chain=chain)
    before = tree(littered.root)
    store = littered.store()
    with store.open_session("s") as session:
        report = session.vacuum()
    expected = littered.session_doomed()
    expected["orphaned_blobs"] = set()  # counted, not named
    assert removed_paths(report) == expected
    assert report.removed["orphaned_blobs"].count == 1
    assert report.removed["orphaned_blobs"].bytes == littered.orphan_bytes
    assert report.session_id == "s" and report.dry_run is False and report.seconds > 0
    assert report.findings == ()
    gone = {p for paths in expected.values() for p in paths}
    after = tree(littered.root)
    for path in gone:
        assert not os.path.lexists(path), path
    for path in littered.young | littered.kept_snapshots:
        assert os.path.exists(path), path
    # every file not removed is as it was (but the folders a removal touched)
    for path, (digest, _mtime) in before.items():
        if path in after and digest:
            assert after[path][0] == digest, path
    check_whole(store, littered)
    # what verify still notes in the session is what the grace periods keep
    prefix = os.path.join(littered.root, "sessions", "s") + os.sep
    notes = {f.path for f in store.verify() if f.path.startswith(prefix)}
    assert notes <= {p for p in littered.young if p.startswith(prefix)}


def test_the_bytes_reported_are_the_bytes_removed(tmp_path):
    littered = Littered(tmp_path / "store", vectors=False)
    sizes = {}
    for paths in littered.session_doomed().values():
        for path in paths:
            sizes[path] = os.path.getsize(path)
    with littered.store().open_session("s") as session:
        report = session.vacuum()
    for kind in KINDS:
        if kind != "orphaned_blobs":
            assert report.removed[kind].bytes == sum(sizes[p] for p in
                                                     report.removed[kind].paths), kind
    assert report.bytes == sum(sizes.values()) + littered.orphan_bytes
    assert report.count == len(sizes) + 1


def test_a_dry_run_reports_what_the_real_run_then_removes_and_changes_no_byte(tmp_path):
    littered = Littered(tmp_path / "store")
    store = littered.store()
    before = tree(littered.root)
    dry = store.vacuum(dry_run=True)
    assert tree(littered.root) == before  # not a byte, not an mtime
    assert dry.dry_run and dry.count > 0
    real = store.vacuum()
    assert not real.dry_run
    assert real.removed == dry.removed
    assert real.sessions["s"].removed == dry.sessions["s"].removed
    assert removed_paths(real) == {**littered.doomed, "orphaned_blobs": set()}
    assert store.vacuum(dry_run=True).count == 0  # nothing is left to remove
    check_whole(store, littered)


def test_a_store_report_adds_up_its_sessions_and_its_own_leftovers(tmp_path):
    littered = Littered(tmp_path / "store", vectors=False)
    with littered.store().create_session("t") as other:
        other.append({"a": 1})
        touch(os.path.join(other.path, ".tmp-z-1234"), b"12345")
    report = littered.store().vacuum()
    assert set(report.sessions) == {"s", "t"} and report.skipped == {}
    own = [p for p in report.paths() if os.sep + "sessions" + os.sep + "s" + os.sep not in p
           and os.sep + "sessions" + os.sep + "t" + os.sep not in p]
    assert len(own) == 4  # root temp, workspace temp, a session temp and a trash folder
    for kind in KINDS:
        parts = sum(part.removed[kind].count for part in report.sessions.values())
        assert report.removed[kind].count >= parts
    assert report.sessions["t"].removed["temp_files"].bytes == 5
    assert report.count == sum(p.count for p in report.sessions.values()) + len(own)
    data = report.to_dict()
    json.dumps(data)  # plain numbers and strings
    assert data["count"] == report.count and data["bytes"] == report.bytes
    assert data["sessions"]["t"]["removed"]["temp_files"] == {"count": 1, "bytes": 5}
    assert "paths" not in data["removed"]["snapshots"]
    assert report.to_dict(paths=True)["removed"]["snapshots"]["paths"]


def test_log_records_of_live_work_stay_and_message_tombstones_are_reported_as_zero(tmp_path):
    store = fsstore.open_store(tmp_path / "store", segment_size=4096)
    with store.create_session("s") as session:
        session.queue.enqueue("job", {"n": 1})
        session.inputs.submit({"n": 2})
        session.append_many([{"pad": "p" * 300} for _ in range(30)])  # sealed now
        report = session.vacuum()
    for kind in LOG_RECORD_KINDS:
        assert report.removed[kind].count == 0 and report.removed[kind].bytes == 0
        assert report.to_dict()["removed"][kind] == {"count": 0, "bytes": 0}


def test_a_store_vacuum_reports_the_queue_and_input_records_its_sessions_reclaimed(tmp_path):
    store = fsstore.open_store(tmp_path / "store", segment_size=4096)
    for name in ("a", "b"):
        with store.create_session(name) as session:
            session.queue.enqueue_many([("job", {"n": n}) for n in range(5)])
            for _ in range(5):
                session.queue.complete(session.queue.claim("w", 60))
            session.inputs.submit({"text": "hi"})
            session.append({"turn": 1}, turn=1)
            session.inputs.claim()
            session.finish_turn()
            session.inputs.prune(0)
            session.append_many([{"pad": "p" * 300} for _ in range(30)])
    dry = store.vacuum(dry_run=True)
    report = store.vacuum()
    for kind, records in (("queue_records", 15), ("input_records", 4)):
        assert report.sessions["a"].removed[kind].count == records, kind
        assert report.removed[kind].count == 2 * records
        assert report.removed[kind].bytes == sum(
            part.removed[kind].bytes for part in report.sessions.values())
        assert dry.removed[kind] == report.removed[kind]
    assert report.removed["queue_records"].bytes > 0
    assert store.read_session("a").queue.items() == []
    assert problems(store) == []


def test_a_clean_session_has_nothing_to_remove(tmp_path):
    with fsstore.open_store(tmp_path / "store").create_session("s") as session:
        session.append({"a": 1})
        session.snapshot()
        report = session.vacuum()
    assert report.count == 0 and report.bytes == 0 and report.findings == ()


def test_young_temp_files_and_torn_tails_stay_until_their_grace_passes(tmp_path):
    with fsstore.open_store(tmp_path / "store").create_session("s") as session:
        session.append({"a": 1})
        session.snapshot()  # makes state/
        temp = touch(os.path.join(session.path, "state", ".tmp-a-1234"), when=time.time() - 60)
        torn = touch(os.path.join(session.path, "log", "00000000000000000001@64.torn"),
                     when=time.time() - 3 * 24 * 3600)
        assert session.vacuum().count == 0
        assert session.vacuum(grace=30).paths() == [temp]
        assert session.vacuum(torn_grace=2 * 24 * 3600).paths() == [torn]


def test_a_damaged_snapshot_is_left_in_place_and_reported(tmp_path):
    with fsstore.open_store(tmp_path / "store").create_session("s") as session:
        session.append({"a": 1})
        seq = session.snapshot()
        path = os.path.join(session.path, "state", f"{seq:020d}.snap")
        with open(path, "r+b") as handle:
            handle.seek(100)
            handle.write(b"\xff\xff\xff")
        report = session.vacuum()
    assert os.path.exists(path) and report.count == 0
    assert [f.path for f in report.findings] == [path]
    assert report.findings[0].level == "problem"


def test_vector_files_of_a_collection_this_session_has_open_are_left_to_it(tmp_path):
    with fsstore.open_store(tmp_path / "store").create_session("s") as session:
        memory = session.create_collection("m", dim=2)
        memory.upsert([fsstore.VectorDocument("a", [1.0, 0.0])])
        memory.seal()
        # a seal of this writer may be writing a file its manifest does not name yet
        pending = touch(os.path.join(session.path, "vectors", "m", ".tmp-00000002.docs-1"))
        assert session.vacuum().paths() == []
        assert os.path.exists(pending)
    with fsstore.open_store(tmp_path / "store").open_session("s") as session:
        assert session.vacuum().paths() == [pending]  # no writer of it is open now


def test_bad_grace_is_refused_before_anything_is_removed(tmp_path):
    with fsstore.open_store(tmp_path / "store").create_session("s") as session:
        temp = touch(os.path.join(session.path, ".tmp-a-1234"))
        for bad in (-1, float("nan"), "1", True):
            with pytest.raises(fsstore.InvalidSetting):
                session.vacuum(grace=bad)
            with pytest.raises(fsstore.InvalidSetting):
                session.vacuum(torn_grace=bad)
        assert os.path.exists(temp)


def test_an_unknown_session_is_refused_before_anything_is_removed(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    store.create_session("s").close()
    temp = touch(os.path.join(str(tmp_path / "store"), "sessions", "s", ".tmp-a-1234"))
    with pytest.raises(fsstore.SessionNotFound):
        store.vacuum(["s", "nope"])
    assert os.path.exists(temp)


# --- who a vacuum waits for ----------------------------------------------------------------


def test_a_store_vacuum_skips_a_session_whose_writer_is_open_and_changes_nothing_of_it(
        tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    writer = store.create_session("busy")
    temp = touch(os.path.join(writer.path, ".tmp-a-1234"))
    with store.create_session("idle") as idle:
        idle_temp = touch(os.path.join(idle.path, ".tmp-a-1234"))
    report = store.vacuum()
    assert set(report.skipped) == {"busy"} and "open for writing" in report.skipped["busy"]
    assert set(report.sessions) == {"idle"}
    assert os.path.exists(temp) and not os.path.exists(idle_temp)
    # its writer may vacuum it itself, between its own writes
    assert writer.vacuum().paths() == [temp]
    writer.close()


def test_a_store_vacuum_waits_for_the_writer_lock_when_asked(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    writer = store.create_session("s")
    temp = touch(os.path.join(writer.path, ".tmp-a-1234"))
    closer = threading.Timer(0.2, writer.close)
    closer.start()
    report = store.vacuum(lock_timeout=30)
    closer.join()
    assert report.skipped == {} and report.sessions["s"].paths() == [temp]


def test_a_store_vacuum_skips_a_session_leased_to_another_owner(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    store.create_session("s").close()
    store.claim_lease("s", "worker-1", ttl=60)
    report = store.vacuum()
    assert set(report.skipped) == {"s"} and "leased" in report.skipped["s"]


def test_the_lease_holder_vacuums_its_shared_session(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    store.create_session("s").close()
    lease = store.claim_lease("s", "worker-1", ttl=60).lease
    with store.open_session("s", lease=lease) as session:
        temp = touch(os.path.join(session.path, ".tmp-a-1234"))
        assert session.vacuum().paths() == [temp]
    assert store.vacuum().skipped.keys() == {"s"}  # still leased: its holder's to vacuum


def test_the_async_twins_vacuum(tmp_path):
    import asyncio

    async def both():
        store = fsstore.open_store(tmp_path / "store")
        async with await store.acreate_session("s") as session:
            temp = touch(os.path.join(session.path, ".tmp-a-1234"))
            dry = await session.avacuum(dry_run=True)
        report = await store.avacuum(["s"])
        return temp, dry, report

    temp, dry, report = asyncio.run(both())
    assert dry.paths() == [temp] and report.paths() == [temp] and not os.path.exists(temp)


def test_a_writer_vacuuming_between_appends_of_other_threads_loses_nothing(tmp_path):
    policy = SnapshotPolicy(every_events=7, every_bytes=None, keep=1)
    store = fsstore.open_store(tmp_path / "store", segment_size=4096, snapshots=policy)
    session = store.create_session("s")
    done = threading.Event()
    appended = []

    def appender() -> None:
        for i in range(300):
            appended.append(session.append({"i": i, "pad": "p" * 100}))
        done.set()

    thread = threading.Thread(target=appender)
    thread.start()
    vacuums = 0
    while not done.is_set() or vacuums == 0:
        session.vacuum(grace=0)
        vacuums += 1
    thread.join()
    session.close()
    reader = store.read_session("s")
    assert [e.data["i"] for e in reader.events()] == list(range(300))
    assert problems(store) == []


# --- crashes -------------------------------------------------------------------------------


def crash_states_of_vacuum(tmp_path, littered: Littered) -> list[str]:
    """A vacuum of session ``s`` through a CrashSimIO: the crash state after every I/O
    call it makes, each variant."""
    io = CrashSimIO(littered.root)
    session = littered.store(io=io).open_session("s")
    states = io.record_states(tmp_path)
    report = session.vacuum()
    io.on_op = None
    session.close()
    assert report.count > 0
    return states


def check_crash_states(tmp_path, littered: Littered, *, vectors: bool) -> int:
    states = crash_states_of_vacuum(tmp_path, littered)
    doomed = [os.path.relpath(p, littered.root) for p in littered.session_doomed()["snapshots"]]
    left = set()
    for dest in states:
        littered_copy = Littered.__new__(Littered)
        littered_copy.__dict__.update(littered.__dict__, root=dest)
        store = fsstore.open_store(dest, create=False)
        events = store.read_session("s").events(include_internal=True)
        assert [e.seq for e in events][-1] == littered.head
        left.add(sum(os.path.exists(os.path.join(dest, p)) for p in doomed))
        check_whole(store, littered_copy, vectors=vectors)
        shutil.rmtree(dest)
    assert len(left) > 2  # crashes before, amid and after the snapshots' removal
    return len(states)


def test_a_crash_at_every_io_call_of_a_vacuum_leaves_a_whole_session(tmp_path):
    littered = Littered(tmp_path / "store", vectors=False)
    assert check_crash_states(tmp_path, littered, vectors=False) > 20


@pytest.mark.long
def test_a_crash_at_every_io_call_of_a_larger_vacuum_leaves_a_whole_session(tmp_path):
    littered = Littered(tmp_path / "store", vectors=True, many=6)
    assert check_crash_states(tmp_path, littered, vectors=True) > 60


# --- the commands --------------------------------------------------------------------------


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_vacuum_command_prints_the_plan_and_removes_only_with_yes(tmp_path, capsys):
    littered = Littered(tmp_path / "store", vectors=False)
    before = tree(littered.root)
    code, out, _ = run(capsys, "--store", littered.root, "vacuum")
    assert code == 1 and "would remove" in out and "--yes" in out
    assert os.path.join("sessions", "s", "log", "00000000000000000021@64.torn") in out
    assert tree(littered.root) == before
    code, out, _ = run(capsys, "--store", littered.root, "vacuum", "--dry-run")
    assert code == 0 and "would remove" in out and tree(littered.root) == before
    code, out, _ = run(capsys, "--store", littered.root, "vacuum", "--yes")
    assert code == 0 and out.startswith("removed ")
    assert not os.path.exists(os.path.join(littered.root, ".tmp-fsstore.json-ab12"))
    code, out, _ = run(capsys, "--store", littered.root, "vacuum")
    assert code == 0 and out.startswith("would remove 0 ")


def test_vacuum_command_prints_json_and_takes_sessions_and_graces(tmp_path, capsys):
    store = fsstore.open_store(tmp_path / "store")
    with store.create_session("a") as a, store.create_session("b") as b:
        touch(os.path.join(a.path, ".tmp-a-1234"), when=time.time() - 100)
        b_temp = touch(os.path.join(b.path, ".tmp-b-1234"), when=time.time() - 100)
    code, out, _ = run(capsys, "--store", str(tmp_path / "store"), "vacuum", "a", "--grace",
                       "50", "--json", "--yes")
    data = json.loads(out)
    assert code == 0 and list(data["sessions"]) == ["a"]
    assert data["removed"]["temp_files"]["count"] == 1 and os.path.exists(b_temp)
    code, _, err = run(capsys, "--store", str(tmp_path / "store"), "vacuum", "nope")
    assert code == 2 and "nope" in err


def test_rm_command_shows_the_sessions_and_deletes_only_with_yes(tmp_path, capsys):
    store = fsstore.open_store(tmp_path / "store")
    with store.create_session("a", title="first") as a:
        a.append({"x": 1})
    store.create_session("b").close()
    code, out, _ = run(capsys, "--store", str(tmp_path / "store"), "rm", "a", "b")
    assert code == 1 and "would delete session a (1 events, 'first'" in out
    assert store.session_ids() == ["a", "b"]
    code, _, err = run(capsys, "--store", str(tmp_path / "store"), "rm", "a", "nope", "--yes")
    assert code == 2 and "nope" in err and store.session_ids() == ["a", "b"]
    code, out, _ = run(capsys, "--store", str(tmp_path / "store"), "rm", "a", "b", "--yes")
    assert code == 0 and store.session_ids() == []


def test_rm_command_refuses_a_leased_session_unless_forced(tmp_path, capsys):
    store = fsstore.open_store(tmp_path / "store")
    store.create_session("a").close()
    store.claim_lease("a", "worker-1", ttl=60)
    code, _, err = run(capsys, "--store", str(tmp_path / "store"), "rm", "a", "--yes")
    assert code == 2 and "leased" in err and store.session_ids() == ["a"]
    code, _, _ = run(capsys, "--store", str(tmp_path / "store"), "rm", "a", "--yes", "--force")
    assert code == 0 and store.session_ids() == []


# --- progress bars -------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_pipe_gets_no_progress_bar(tmp_path):
    stream = io.StringIO()
    assert list(tracked(range(5), 5, "vacuum", stream=stream)) == list(range(5))
    with progress(3, "vacuum", stream=stream) as bar:
        bar.update(3)
    assert stream.getvalue() == ""
    store = fsstore.open_store(tmp_path / "store")
    store.create_session("s").close()
    result = subprocess.run([sys.executable, "-m", "fsstore", "--store", str(tmp_path / "store"),
                             "vacuum", "--yes"], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": ROOT})
    assert result.returncode == 0 and result.stderr == ""


def test_a_terminal_gets_a_progress_bar_when_tqdm_is_installed():
    pytest.importorskip("tqdm")
    stream = Terminal()
    assert list(tracked(range(4), 4, "vacuum", unit="session", stream=stream)) == [0, 1, 2, 3]
    assert "vacuum" in stream.getvalue() and "/4 " in stream.getvalue()


def test_without_tqdm_a_terminal_runs_without_a_bar(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm raises ImportError
    stream = Terminal()
    with progress(2, "vacuum", stream=stream) as bar:
        bar.update(2)
    assert stream.getvalue() == ""


def test_import_fsstore_and_short_commands_do_not_import_tqdm(tmp_path):
    code = ("import sys, fsstore, fsstore.cli\n"
            "from fsstore.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('tqdm' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"
