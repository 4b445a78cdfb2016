"""fsstore/stats.py: the counts and sizes of a session and of a store (``session_stats``,
``Store.stats``, ``Store.disk_usage``, ``key_count``), and ``fsstore stats`` / ``du``."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import struct
import sys
import threading

import pytest

import fsstore
from fsstore import layout
from fsstore.cli import main
from fsstore.fsio import FileIO
from fsstore.stats import BYTE_KINDS, _segments


def built(store: fsstore.Store, session_id: str = "s") -> fsstore.Session:
    """A session written through the API, whose counts the tests know exactly."""
    session = store.create_session(session_id, title="counted")
    session.append({"n": 1}, kind="tool_call")
    session.append_many([{"n": 2}, {"n": 3}], kind="tool_result")
    session.messages.append({"id": "m1", "role": "user", "content": "hi"})
    session.messages.append({"id": "m2", "role": "assistant", "content": "hello"})
    session.messages.append({"id": "m3", "role": "assistant", "content": "scratch"})
    session.messages.delete("m3")
    session.set_state("plan", ["a"])
    session.merge_state({"counters": {"n": 1}, "gone": 1})
    session.delete_state("gone")
    session.queue.enqueue("ready-one")
    session.queue.enqueue("to-claim", priority=5)
    session.queue.enqueue("to-kill", priority=3, max_attempts=1)
    session.queue.enqueue("to-complete", priority=1)
    assert session.queue.claim("w", 60).kind == "to-claim"
    doomed = session.queue.claim("w", 60)
    assert doomed.kind == "to-kill"
    session.queue.fail(doomed, "boom")  # its one attempt: dead
    session.queue.complete(session.queue.claim("w", 60))  # to-complete leaves the queue
    session.inputs.submit("first")
    session.inputs.submit("second")
    session.inputs.claim()
    session.finish_turn(1)  # consumes both
    session.inputs.submit("later")
    session.blobs.put(b"one" * 100, "application/octet-stream")
    session.blobs.put(b"two" * 100, "application/octet-stream")
    memory = session.create_collection("memory", 3)
    memory.upsert([fsstore.VectorDocument("d1", [1.0, 0.0, 0.0]),
                   fsstore.VectorDocument("d2", [0.0, 1.0, 0.0]),
                   fsstore.VectorDocument("d3", [0.0, 0.0, 1.0])])
    memory.delete(["d2"])
    session.create_collection("empty", 2)
    session.append({"n": 4}, kind="tool_call")  # turn 2
    session.checkpoint("kept")
    session.snapshot()
    return session


def test_session_stats_count_exactly_what_the_api_wrote(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    with built(store) as session:
        live = session.session_stats()
    found = store.read_session("s").session_stats()
    records = list(store.read_session("s").events(include_internal=True))
    # The writer's counts are the reader's; only its bytes move at close (the message
    # index's rows, written then).
    assert {**found.to_dict(), "bytes": None} == {**live.to_dict(), "bytes": None}
    assert (found.id, found.title, found.head, found.log_start) == ("s", "counted",
                                                                    records[-1].seq, 1)
    assert found.records == len(records)
    assert found.turns == 2
    assert found.messages == 2  # m3 deleted
    assert found.state_keys == 2  # plan, counters
    assert found.queue == {"ready": 1, "claimed": 1, "dead": 1}
    assert found.inputs == {"pending": 1, "claimed": 0, "consumed": 2}
    assert (found.blobs, found.blob_bytes) == (2, found.bytes.blobs)
    assert found.blob_bytes > 0
    assert (found.collections, found.vector_documents) == (2, 2)
    assert (found.snapshots, found.checkpoints) == (1, 1)
    assert (found.segments, found.sealed_segments, found.compressed_segments) == (1, 0, 0)
    assert found.oldest_event == records[0].ts and found.newest_event == records[-1].ts
    assert (found.lease_holder, found.lease_live, found.lease_expires) == (None, False, None)
    assert found.events_by_kind is None and found.turn_count is None
    assert found.log_bytes == found.bytes.log == sum(
        os.path.getsize(os.path.join(session.path, "log", name))
        for name in os.listdir(os.path.join(session.path, "log")))
    on_disk = sum(os.path.getsize(os.path.join(folder, name))
                  for folder, _, names in os.walk(session.path) for name in names)
    assert found.bytes.total == on_disk


def test_records_by_kind_and_turns_are_counted_when_asked(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    built(store).close()
    found = store.read_session("s").session_stats(events_by_kind=True)
    kinds = collections.Counter(e.kind for e in store.read_session("s").events(
        include_internal=True))
    assert found.events_by_kind == dict(sorted(kinds.items()))
    assert found.events_by_kind["fsstore.queue"] == 9  # 4 enqueues, 3 claims, fail, complete
    assert found.turn_count == 2


def test_key_count_is_the_keys_of_the_state_summed_over_sessions(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    with built(store, "a") as session:
        assert session.key_count() == 2
    with store.create_session("b") as other:
        other.merge_state({"x": 1, "y": 2, "z": 3})
        other.delete_state("z")
    assert store.read_session("b").key_count() == 2
    assert store.key_count() == 4 == store.stats().key_count


def test_store_stats_sum_the_sessions_and_keep_each(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    built(store, "a").close()
    built(store, "b").close()
    with store.create_session("empty"):
        pass
    claim = store.claim_lease("b", "worker-7", ttl=300)
    found = store.stats()
    each = {s.id: s for s in found.per_session}
    assert found.sessions == 3 and found.damaged == []
    assert found.records == each["a"].records * 2 == each["a"].records + each["b"].records
    assert (found.messages, found.state_keys, found.turns) == (4, 4, 4)
    assert found.queue == {"ready": 2, "claimed": 2, "dead": 2}
    assert found.inputs == {"pending": 2, "claimed": 0, "consumed": 4}
    assert (found.blobs, found.collections, found.vector_documents) == (4, 4, 4)
    assert found.leased == 1 and each["b"].lease_holder == "worker-7"
    assert each["b"].lease_live and each["b"].lease_token == claim.lease.token
    assert each["empty"].records == 0 and each["empty"].oldest_event is None
    assert found.oldest_event == min(each["a"].oldest_event, each["b"].oldest_event)
    assert found.bytes.total == sum(s.bytes.total for s in found.per_session)
    assert json.loads(json.dumps(found.to_dict()))["per_session"][0]["id"] == "a"


def damage(store: fsstore.Store) -> None:
    """Sessions ``bad-manifest`` (session.json is not JSON) and ``bad-log`` (its segment
    header is overwritten), beside the readable ``good``."""
    built(store, "good").close()
    with store.create_session("bad-manifest") as session:
        session.append({"n": 1})
    with open(os.path.join(session.path, "session.json"), "w") as file:
        file.write("{not json")
    with store.create_session("bad-log") as session:
        session.append({"n": 1})
    with open(os.path.join(session.path, "log", layout.segment_name(1)), "r+b") as file:
        file.write(b"\xff" * 64)


def test_store_stats_name_each_damaged_session_and_count_the_others(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    damage(store)
    found = store.stats()
    assert found.sessions == 3
    assert [s.id for s in found.per_session] == ["good"]
    assert [d.id for d in found.damaged] == ["bad-log", "bad-manifest"]
    bad_log, bad_manifest = found.damaged
    assert bad_log.path.endswith(layout.segment_name(1)) and "segment" in bad_log.reason
    assert bad_manifest.path.endswith("session.json")
    assert found.records == found.per_session[0].records
    assert store.key_count() == 2  # the good session's keys
    usage = store.disk_usage()
    assert {row.id for row in usage.sessions} == {"good", "bad-log", "bad-manifest"}


def test_a_symlink_in_place_of_a_sessions_folder_is_damage_not_followed(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    with store.create_session("s") as session:
        session.append({"n": 1})
    os.makedirs(tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", os.path.join(session.path, "state"))
    (damaged,) = store.stats().damaged
    assert damaged.path.endswith("state") and "symlink" in damaged.reason


class CountingIO(FileIO):
    """Remembers the bytes read from each file."""

    def __init__(self) -> None:
        self.read: collections.Counter[str] = collections.Counter()
        self.paths: dict[int, str] = {}

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        fd = super().open(path, flags, mode)
        self.paths[fd] = path
        return fd

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        data = super().pread(fd, size, offset)
        self.read[self.paths[fd]] += len(data)
        return data


def long_session(store: fsstore.Store) -> tuple[fsstore.SessionReader, list[str]]:
    """A session of several sealed segments, snapshotted near its head; and the paths of
    its sealed segments."""
    with store.create_session("long") as session:
        for turn in range(1, 41):
            session.append_many([{"text": "x" * 300, "n": n} for n in range(4)], turn=turn)
            session.set_state(f"k{turn % 5}", turn)
            session.queue.enqueue("job", turn)
            session.finish_turn(turn)
        session.snapshot()
        session.append({"after": "the snapshot"})
    log = os.path.join(session.path, "log")
    segments = sorted(name for name in os.listdir(log) if layout.is_segment_name(name))
    assert len(segments) > 3
    return store.read_session("long"), [os.path.join(log, name) for name in segments[:-1]]


def test_store_stats_read_a_header_and_no_more_of_a_sealed_segment(tmp_path):
    fsstore.open_store(tmp_path / "store", segment_size=16384)
    io = CountingIO()
    store = fsstore.open_store(tmp_path / "store", segment_size=16384, io=io)
    reader, sealed = long_session(store)
    io.read.clear()
    found = store.stats().per_session[0]
    assert (found.segments, found.sealed_segments) == (len(sealed) + 1, len(sealed))
    with open(sealed[0], "rb") as file:
        first_frame = struct.unpack_from("<I", file.read(72), 68)[0]
    assert io.read[sealed[0]] <= 2 * (64 + 24 + first_frame + 16)  # header, first frame
    for path in sealed[1:-1]:
        assert io.read[path] <= 64 + 24  # a header read
    # the segment before the active one: its header, and the end that holds its last
    # chain value, which the active segment's first record links in from (FORMAT.md 3.4)
    assert io.read[sealed[-1]] <= 64 + 8192


def test_store_stats_answer_when_the_sealed_segments_bodies_are_zeroed(tmp_path):
    store = fsstore.open_store(tmp_path / "store", segment_size=16384)
    reader, sealed = long_session(store)
    expected = reader.session_stats()
    for number, path in enumerate(sealed):
        with open(path, "r+b") as file:
            data = file.read()
            keep = 64
            if number == 0:  # the oldest segment: its first frame gives the first time
                keep += struct.unpack_from("<I", data, data.index(b"FSE\n") - 4)[0]
            file.seek(keep)
            file.write(bytes(len(data) - keep))
    assert any(f.level == "problem" for f in store.verify())  # the history is gone...
    (found,) = store.stats().per_session  # ...yet the counts need none of it
    assert found == expected
    assert (found.state_keys, found.queue["ready"]) == (5, 40)


def test_a_compacted_segment_is_counted_by_its_header_major_version():
    def head(major: int) -> tuple[bytes, None]:
        return (b"\x89FSLOG\r\n" + struct.pack("<H", major) + bytes(78), None)

    counted = _segments(None, {1: head(2), 9: head(2), 20: head(1), 30: head(1)},
                        log_start=9, head=8)  # an empty log since seq 9: no first frame
    assert (counted.live, counted.compressed, counted.oldest_ts) == (3, 1, None)


def test_disk_usage_lists_sessions_largest_first_and_counts_shared_files_once(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    for session_id, size in (("small", 10), ("large", 30000), ("medium", 3000)):
        with store.create_session(session_id) as session:
            session.append({"text": "x" * 10})
            session.blobs.put(os.urandom(size), "application/octet-stream")
    store.fork_session("large", "fork").close()
    usage = store.disk_usage()
    order = [row.id for row in usage.sessions]
    # The fork holds the parent's history and blob by hard link: both count for "fork",
    # the first id, and not again for "large".
    assert order[0] == "fork" and order.index("medium") < order.index("small")
    assert [row.total for row in usage.sessions] == sorted(
        (row.total for row in usage.sessions), reverse=True)
    rows = {row.id: row for row in usage.sessions}
    assert rows["fork"].bytes.blobs >= 30000 and rows["large"].bytes.blobs == 0
    alone = store.read_session("large").session_stats()
    assert alone.bytes.blobs == rows["fork"].bytes.blobs  # one session: its own files
    assert usage.total == usage.bytes.total + usage.outside_sessions
    assert usage.outside_sessions >= os.path.getsize(tmp_path / "store" / "fsstore.json")
    assert [kind for kind, _ in usage.bytes.largest_first()][0] == "blobs"
    assert set(usage.bytes.to_dict()) == set(BYTE_KINDS)


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def test_stats_command_prints_a_table_and_json(tmp_path, capsys):
    store = fsstore.open_store(tmp_path / "store")
    built(store, "a").close()
    where = ["--store", str(tmp_path / "store")]
    status, out, _ = run_cli(capsys, *where, "stats")
    lines = dict(line.split(None, 1) if not line.startswith(("state", "first", "last"))
                 else line.rsplit("  ", 1) for line in out.splitlines())
    assert status == 0
    assert lines["sessions"] == "1" and lines["messages"] == "2"
    assert lines["queue"] == "1 ready, 1 claimed, 1 dead"
    status, out, _ = run_cli(capsys, *where, "stats", "--json")
    assert json.loads(out) == store.stats().to_dict()
    status, out, _ = run_cli(capsys, *where, "stats", "--sessions")
    assert out.splitlines()[-2].split()[:2] == ["SESSION", "RECORDS"]
    assert out.splitlines()[-1].split()[0] == "a"
    status, out, _ = run_cli(capsys, *where, "stats", "a", "--kinds")
    assert "records by kind:" in out and "fsstore.queue" in out and "tool_call" in out
    status, out, _ = run_cli(capsys, *where, "stats", "a", "--json")
    assert json.loads(out) == store.read_session("a").session_stats().to_dict()
    status, out, err = run_cli(capsys, *where, "stats", "--kinds")
    assert status == 2 and "name the SESSION" in err and not out


def test_stats_and_du_commands_name_a_damaged_session_and_exit_1(tmp_path, capsys):
    store = fsstore.open_store(tmp_path / "store")
    damage(store)
    where = ["--store", str(tmp_path / "store")]
    status, out, err = run_cli(capsys, *where, "stats")
    assert status == 1 and "sessions      3 (2 damaged)" in out
    assert "left out session bad-log" in err and "left out session bad-manifest" in err
    status, out, err = run_cli(capsys, *where, "stats", "--json")
    assert status == 1 and len(json.loads(out)["damaged"]) == 2


def test_du_command_prints_sessions_largest_first(tmp_path, capsys):
    store = fsstore.open_store(tmp_path / "store")
    for session_id, size in (("small", 10), ("large", 30000), ("medium", 3000)):
        with store.create_session(session_id) as session:
            session.append({"text": "x" * size})
    where = ["--store", str(tmp_path / "store")]
    status, out, _ = run_cli(capsys, *where, "du")
    table = out.split("\n\n")[1].splitlines()
    assert status == 0 and table[0].split() == ["SESSION", "TOTAL", *(
        kind.upper() for kind in BYTE_KINDS)]
    assert [line.split()[0] for line in table[1:]] == ["large", "medium", "small"]
    kinds = [line.split()[0] for line in out.split("\n\n")[0].splitlines()[1:-1]]
    assert kinds[0] == "log" and len(kinds) == len(BYTE_KINDS)
    status, out, _ = run_cli(capsys, *where, "du", "--json", "--top", "2")
    data = json.loads(out)
    assert [row["id"] for row in data["sessions"]] == ["large", "medium"]
    assert data["total"] == store.disk_usage().total


def test_async_twins_give_the_same_counts(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    built(store).close()
    reader = store.read_session("s")

    async def main_() -> None:
        assert await reader.asession_stats() == reader.session_stats()
        assert (await reader.asession_stats(events_by_kind=True)).turn_count == 2
        assert await reader.akey_count() == 2 == await store.akey_count()
        assert await store.astats() == store.stats()
        assert await store.adisk_usage() == store.disk_usage()

    asyncio.run(main_())


def test_store_stats_beside_a_writer_that_rolls_over_snapshots_and_clears(tmp_path):
    store = fsstore.open_store(tmp_path / "store", segment_size=4096)
    session = store.create_session("busy")
    stop = threading.Event()
    written = [0]

    def write() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            written[0] = n
            session.append({"text": "y" * 200, "n": n})
            if n % 7 == 0:
                session.set_state(f"k{n % 5}", n)
            if n % 40 == 0:
                session.snapshot()
            if n % 250 == 0:
                session.clear()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        rounds = 0
        while rounds < 20 or (written[0] < 600 and rounds < 5000):  # two clears, at least
            rounds += 1
            found = store.stats()
            assert found.damaged == [] and found.sessions == 1
            (busy,) = found.per_session
            assert busy.records == busy.head - busy.log_start + 1
            assert busy.state_keys <= 5
    finally:
        stop.set()
        writer.join()
        session.close()


def test_the_benchmarks_copied_sessions_count_as_the_ones_written_through_the_api(tmp_path):
    tools = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")
    sys.path.insert(0, tools)
    try:
        import bench_stats
    finally:
        sys.path.remove(tools)
    store = fsstore.open_store(tmp_path / "store")
    shapes = bench_stats.templates(store, str(tmp_path))
    bench_stats.fill(store, shapes, 2 + len(shapes))  # two of the shapes are in the store
    found = store.stats()
    assert found.sessions == 6 and found.damaged == []
    counted = {s.id: s for s in found.per_session}
    for number in range(2, 6):
        copy, folder = counted[f"s{number:06d}"], shapes[number % len(shapes)]
        written = fsstore.open_store(os.path.dirname(os.path.dirname(folder))).read_session(
            os.path.basename(folder)).session_stats()
        # All but the manifest's bytes (a shorter id) are the written session's.
        assert {**copy.to_dict(), "bytes": copy.bytes.log} == {
            **written.to_dict(), "id": copy.id, "path": copy.path, "bytes": written.bytes.log}
        assert store.read_session(copy.id).verify() == []
    assert counted["s000003"].compressed_segments == 1 and counted["s000002"].snapshots == 1


def _agent_turns(session: fsstore.Session, turns: range) -> None:
    for turn in turns:
        session.messages.append({"id": f"u{turn}", "role": "user", "content": "x" * 200})
        session.append({"tool": "grep", "n": turn}, kind="tool_call")
        session.messages.append({"id": f"a{turn}", "role": "assistant", "content": "done",
                                 "metadata": {"model": "m", "usage": {"input": 9}}})
        session.merge_state({f"k{turn % 7}": turn, "counters": {"turn": turn}})
        session.finish_turn(turn)


def varied_store(path: object) -> fsstore.Store:
    """Sessions of every shape a count meets: snapshots, queue items in every status,
    inputs, deleted messages, several sealed segments with no snapshot, compacted
    segments, a retained log, a cleared one, an empty one, one ending in a torn tail, and
    one whose writer is open (its newest segment preallocated)."""
    store = fsstore.open_store(path, segment_size=8192, durability="fsync")
    built(store, "built").close()
    with store.create_session("plain") as session:  # sealed segments, no snapshot
        _agent_turns(session, range(1, 40))
        session.messages.delete("u3")
        session.queue.enqueue("job")
    with store.create_session("compacted") as session:
        _agent_turns(session, range(1, 40))
        session.snapshot()
        _agent_turns(session, range(40, 50))
        session.messages.delete("a41")
    store.compact(["compacted"])
    with store.open_session("compacted") as session:
        _agent_turns(session, range(50, 53))
    with store.create_session("retained") as session:
        _agent_turns(session, range(1, 40))
        session.inputs.submit("later")
        session.snapshot()
        assert session.retain(keep_turns=5).seqs_dropped > 0
        _agent_turns(session, range(40, 42))
    with store.create_session("cleared") as session:
        _agent_turns(session, range(1, 5))
        session.clear()
        _agent_turns(session, range(5, 7))
    store.create_session("empty").close()
    with store.create_session("torn") as session:
        _agent_turns(session, range(1, 3))
        segment = os.path.join(session.path, "log", layout.segment_name(1))
    with open(segment, "ab") as file:  # a writer killed mid-append: a torn tail
        file.write(struct.pack("<IIQII", 0, 500, 99, 1, 1) + b"partial")
    return store


def test_store_stats_count_each_session_as_its_own_full_count_does(tmp_path):
    store = varied_store(tmp_path / "store")
    with store.create_session("open") as writing:
        _agent_turns(writing, range(1, 6))
        writing.queue.enqueue("job")
        found = store.stats()
        assert found.damaged == []
        assert [s.id for s in found.per_session] == sorted(store.session_ids())
        for counted in found.per_session:
            alone = store.read_session(counted.id).session_stats()
            assert counted == alone, counted.id
    by_id = {s.id: s for s in found.per_session}
    assert by_id["compacted"].compressed_segments >= 1
    assert by_id["plain"].sealed_segments >= 2 and by_id["plain"].snapshots == 0
    assert store.read_session("retained").history_start > 1
    assert by_id["cleared"].log_start > 1 and by_id["empty"].records == 0
    assert by_id["torn"].records == by_id["torn"].head == 10
    assert by_id["built"].queue == {"ready": 1, "claimed": 1, "dead": 1}


class OpeningIO(FileIO):
    """Counts the opens of each file."""

    def __init__(self) -> None:
        self.opened: collections.Counter[str] = collections.Counter()

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        self.opened[path] += 1
        return super().open(path, flags, mode)


def test_store_stats_open_each_file_of_a_session_once(tmp_path):
    varied_store(tmp_path / "store")
    io = OpeningIO()
    store = fsstore.open_store(tmp_path / "store", io=io)
    io.opened.clear()
    found = store.stats()
    assert found.damaged == [] and found.sessions == 7
    # (a vector collection is opened as its reader opens it: not counted here)
    opened = {path: n for path, n in io.opened.items() if "/vectors/" not in path}
    assert opened and max(opened.values()) == 1, opened

