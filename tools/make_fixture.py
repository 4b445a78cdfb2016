"""Write a fixture: a small store of one format version and what reading it must give.

    python3 tools/make_fixture.py v1.2

Each was written once, when its format version was made; the result is committed and
tests/test_fixtures.py proves every later fsstore reads it the same. Do not regenerate
one to make a test pass.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import msgspec  # noqa: E402

import fsstore  # noqa: E402
from fsstore.cli._common import event_json  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")
HERE = os.path.join(FIXTURES, "v1")


def make_v1() -> None:
    store_path = os.path.join(HERE, "store")
    if os.path.exists(HERE):
        shutil.rmtree(HERE)
    store = fsstore.open_store(store_path, segment_size=4096)
    ts = 1795240000.0

    with store.create_session("chat", title="Ünïcode title ✓", tags=["a", "b"],
                              metadata={"model": "m", "n": 1}) as chat:
        for turn in range(1, 6):
            chat.append({"role": "user", "content": f"question {turn} " + "q" * 300},
                        kind="message", ts=ts + turn)
            chat.append_many([
                {"name": "read_file", "args": {"path": f"f{turn}.py"}},
                {"output": bytes(range(256)) * 2, "ok": True, "nested": {"k": [1, 2.5, None]}},
            ], kind="tool", ts=ts + turn + 0.5)
            chat.append({"role": "assistant", "content": "answer " * 40}, ts=ts + turn + 0.9)
            if turn != 5:
                chat.finish_turn()

    with store.create_session("cleared") as cleared:
        cleared.append_many([{"i": i} for i in range(5)], ts=ts)
        cleared.clear()
        cleared.append({"after": "clear"}, ts=ts + 1)

    with store.create_session("fsync-mode", durability="fsync") as durable:
        for i in range(3):
            durable.append({"i": i, "big": -(2**63), "huge": 2**64 - 1}, ts=ts + i)

    with store.create_session("torn") as torn:
        torn.append_many([{"i": i} for i in range(3)], ts=ts)
        torn.append({"i": 3}, ts=ts + 1)
    segment = os.path.join(store_path, "sessions", "torn", "log", "00000000000000000001.fslog")
    with open(segment, "rb") as handle:
        data = handle.read()
    with open(segment, "ab") as handle:  # half of a copy of the last record: a torn append
        handle.write(data[-48:-20])

    expected = {}
    for info in store.list_sessions():
        reader = store.read_session(info.id)
        expected[info.id] = {
            "title": info.title, "tags": info.tags, "metadata": info.metadata,
            "event_count": info.event_count, "head": info.head,
            "events": [json.loads(event_json(e)) for e in reader.events(include_internal=True)],
            "turns": [[t.number, len(t.events), t.finished]
                      for t in reader.get_turns(include_internal=True)],
        }
    for folder, _, files in os.walk(store_path):
        for name in files:
            if name == "writer.lock":
                os.unlink(os.path.join(folder, name))
    with open(os.path.join(HERE, "expected.json"), "w") as handle:
        json.dump(expected, handle, indent=1, sort_keys=True)
        handle.write("\n")


def make_v1_1() -> None:
    """Version 1.1: state records, snapshots, checkpoints, commit ids, a metadata record
    and forks."""
    here = os.path.join(FIXTURES, "v1.1")
    store_path = os.path.join(here, "store")
    if os.path.exists(here):
        shutil.rmtree(here)
    store = fsstore.open_store(store_path, segment_size=4096, snapshots=fsstore.SnapshotPolicy(
        every_events=10, keep=2))
    ts = 1795250000.0
    with store.create_session("agent", title="state", tags=["v1.1"]) as agent:
        for turn in range(1, 5):
            agent.commit([{"role": "user", "content": f"step {turn} " + "s" * 200}],
                         state_patch={"plan": [f"step {k}" for k in range(turn)],
                                      "turn": turn, "scratch": None},
                         commit_id=f"commit-{turn}", turn=turn, ts=ts + turn)
            agent.commit([{"tool": "grep", "n": turn}, {"out": bytes([turn]) * 50}],
                         state_patch={"tools": {"grep": turn}, "scratch": "x" * turn},
                         turn=turn, ts=ts + turn + 0.5)
            if turn == 2:
                agent.checkpoint("after two", checkpoint_id="cp-two")
            agent.finish_turn(checkpoint=turn == 3)
        agent.save_session_with_updates([{"summary": "four steps"}], title="state (saved)",
                                        metadata={"saved": True})
        agent.commit([{"a": 1}, {"b": 2}, {"c": 3}], state_patch={"last": "abc"}, ts=ts + 9)
        fork_inside_batch = agent.head - 2
        with agent.fork("fork-head") as fork:
            fork.commit([{"fork": "head"}], state_patch={"forked": True}, ts=ts + 10)
        agent.fork("fork-mid", at_seq=fork_inside_batch).close()
        agent.fork("fork-checkpoint", at_checkpoint="cp-two").close()

    with store.create_session("attachments", title="blobs") as session:
        raw = session.blobs.put(bytes(range(256)) * 40, "image/png")
        text = session.blobs.put(b"a line of tool output\n" * 500, "text/plain")
        session.commit([{"tool": "screenshot", "image": raw}], state_patch={"log": text},
                       ts=ts + 20)
        session.blobs.put(b"an orphan: put, never committed")

    expected = {}
    for info in store.list_sessions():
        reader = store.read_session(info.id)
        expected[info.id] = {
            "title": info.title, "tags": info.tags, "metadata": info.metadata,
            "head": info.head, "parent": None if info.parent is None else list(info.parent),
            "events": [json.loads(event_json(e)) for e in reader.events(include_internal=True)],
            "state": json.loads(json.dumps(reader.state(), default=list)),
            "states_at": {seq: reader.state_at(seq) for seq in range(0, info.head + 1, 5)},
            "checkpoints": [[c.id, c.label, c.kind, c.seq, reader.load_checkpoint(c.id)]
                            for c in reader.checkpoints()],
            "blobs": {digest: hashlib.sha256(reader.blobs.get(f"sha256:{digest}")).hexdigest()
                      for digest, _, _ in reader.blobs.digests()},
        }
    for folder, _, files in os.walk(store_path):
        for name in files:
            if name == "writer.lock":
                os.unlink(os.path.join(folder, name))
    with open(os.path.join(here, "expected.json"), "w") as handle:
        json.dump(expected, handle, indent=1, sort_keys=True, default=lambda b: list(b))
        handle.write("\n")


def collection_contents(collection: fsstore.VectorCollection, ids: list[str]) -> dict:
    """What a collection must read as: its settings, every document, and searches."""
    docs = [d for d in collection.get(ids) if d is not None]
    queries = [[1, 0, 0, 0], [0.5, -1, 2, 0.25]]
    return {
        "dim": collection.dim, "dtype": collection.dtype, "metric": collection.metric.value,
        "count": collection.count(),
        "documents": {d.id: [d.embedding.tolist(), d.content, d.metadata, d.seq, d.turn]
                      for d in docs},
        "searches": [
            [metric, query, [[r.id, round(r.score, 5)] for r in
                             collection.search(query, 5, metric=metric)]]
            for metric in ("cosine", "dot", "euclidean") for query in queries],
        "filtered": [[r.id for r in collection.search([1, 1, 1, 1], 10,
                                                      filter={"kind": "note"})]],
    }


FIXTURE_IDS = [f"doc-{i}" for i in range(40)]


def make_v1_2() -> None:
    """Version 1.2: vector collections with shards, deleted rows, a merge and documents
    still in the write-ahead log; float32 and float16."""
    from fsstore.vectors import tuning

    here = os.path.join(FIXTURES, "v1.2")
    store_path = os.path.join(here, "store")
    if os.path.exists(here):
        shutil.rmtree(here)
    tuning.SEAL_ROWS = 8  # small seals and merges; the format does not depend on it
    store = fsstore.open_store(store_path)
    with store.create_session("memory", title="vectors") as session:
        session.commit([{"role": "user", "content": "remember this"}])
        notes = session.create_collection("notes", 4)
        notes.upsert([fsstore.VectorDocument(
            f"doc-{i}", [i % 5, (i * 7) % 3 - 1, i / 10, 1], content=f"note {i} ✓",
            metadata={"kind": "note" if i % 2 else "fact", "n": i}, seq=1 if i < 3 else None,
            turn=1 if i < 3 else None) for i in range(10)])
        for i in range(10, 38):
            notes.upsert([fsstore.VectorDocument(f"doc-{i}", [1, i % 4, -i / 7, 0.5],
                                                 metadata={"kind": "note", "n": i})])
        notes.delete(["doc-3", "doc-12", "doc-30"])
        notes.upsert([fsstore.VectorDocument("doc-4", [0, 0, 0, 0], content="zero")])
        half = session.create_collection("half", 4, dtype="float16", metric="dot")
        half.upsert([fsstore.VectorDocument(f"doc-{i}", [i, -i, 0.125, 3.5])
                     for i in range(12)])
        half.delete(["doc-0"])
        half.seal()  # the delete goes to a deleted-rows file
        half.upsert([fsstore.VectorDocument("doc-20", [2, 2, 2, 2], content="in the log")])
    collections = {}
    reader = store.read_session("memory")
    for name in ("notes", "half"):
        collections[name] = collection_contents(reader.collection(name), FIXTURE_IDS)
        collections[name]["info"] = [reader.collection(name).info().shards,
                                     reader.collection(name).info().unsealed]
    expected = {"memory": {"collections": collections}}
    for folder, _, files in os.walk(store_path):
        for name in files:
            if name == "writer.lock":
                os.unlink(os.path.join(folder, name))
    with open(os.path.join(here, "expected.json"), "w") as handle:
        json.dump(expected, handle, indent=1, sort_keys=True, ensure_ascii=False)
        handle.write("\n")


def write_work_session(store: fsstore.Store, session_id: str, ts: float) -> None:
    """What a multi-process session leaves: an execution lease (released: its token stays
    in the lease file), queue and turn-input records (claimed, completed, failed,
    consumed), and snapshots whose bodies hold the queue and the inputs."""
    store.create_session(session_id, title="work").close()
    outcome = store.claim_lease(session_id, fsstore.LeaseOwner("host-a", 4242, "boot:1",
                                                               "runtime-1"), ttl=3600)
    assert outcome.lease is not None
    with store.open_session(session_id, shared=True) as ingress:
        for i in range(4):
            ingress.queue.enqueue("job", {"n": i, "blob": bytes([i]) * 8}, priority=i % 2)
        ingress.inputs.submit("first input")
        ingress.inputs.submit({"text": "second", "files": ["a.py"]})
    with store.open_session(session_id, lease=outcome.lease) as session:
        claimed = session.inputs.claim()
        session.commit([{"role": "user", "content": [i.payload for i in claimed]}],
                       state_patch={"step": 1}, turn=1, ts=ts)
        session.finish_turn()
        first = session.queue.claim("worker-1", lease_ttl=3600)
        second = session.queue.claim("worker-2", lease_ttl=3600)
        session.queue.complete(first)
        session.queue.fail(second, "flaky", retry_after=0.001)
        session.queue.claim("worker-3", lease_ttl=3600)
        session.inputs.submit("arrived during turn 2")
        session.commit([{"role": "assistant", "content": "working"}],
                       state_patch={"step": 2}, turn=2, ts=ts + 1)
        session.snapshot()
        session.queue.enqueue("late", None, priority=9)
    store.release_lease(outcome.lease)


def work_expected(store: fsstore.Store, session_id: str) -> dict:
    reader = store.read_session(session_id)
    lease = store.lease_info(session_id)
    return {
        "head": reader.head,
        "events": [json.loads(event_json(e)) for e in reader.events()
                   if not e.kind.startswith("fsstore.")],
        "state": reader.state(),
        "queue": [[w.id, w.kind, json.loads(json.dumps(w.payload, default=list)),
                   w.priority, w.status, w.attempts] for w in reader.queue.items()],
        "inputs": [[i.id, i.payload, i.status] for i in reader.inputs.items()],
        "lease": [lease.token, lease.held],
    }


def remove_lock_files(store_path: str) -> None:
    for folder, _, files in os.walk(store_path):
        for name in files:
            if name == "writer.lock":
                os.unlink(os.path.join(folder, name))


def make_v1_2_work() -> None:
    """Version 1.2 with a lease file, queue and input records, and snapshots that hold
    them (see ``write_work_session``)."""
    here = os.path.join(FIXTURES, "v1.2-work")
    store_path = os.path.join(here, "store")
    if os.path.exists(here):
        shutil.rmtree(here)
    store = fsstore.open_store(store_path, snapshots=fsstore.SnapshotPolicy(every_events=12))
    write_work_session(store, "runtime", 1795260000.0)
    expected = {info.id: work_expected(store, info.id) for info in store.list_sessions()}
    remove_lock_files(store_path)
    with open(os.path.join(here, "expected.json"), "w") as handle:
        json.dump(expected, handle, indent=1, sort_keys=True, ensure_ascii=False)
        handle.write("\n")


def make_v1_3() -> None:
    """Version 1.3: sessions with a uid named by every segment and snapshot, synced marks
    in segment headers, a fork of a fork (ancestor uids), a checkpoint and a blob, the
    token record in writer.lock beside the lease file, and the records of no turn."""
    here = os.path.join(FIXTURES, "v1.3")
    store_path = os.path.join(here, "store")
    if os.path.exists(here):
        shutil.rmtree(here)
    store = fsstore.open_store(store_path, segment_size=4096,
                               snapshots=fsstore.SnapshotPolicy(every_events=12))
    ts = 1795270000.0
    write_work_session(store, "runtime", ts)
    with store.open_session("runtime") as session:
        image = session.blobs.put(b"a screenshot\n" * 300, "image/png")
        for turn in range(3, 7):
            session.commit([{"role": "user", "content": f"step {turn} " + "s" * 400},
                            {"tool": "shot", "image": image}],
                           state_patch={"step": turn}, turn=turn, ts=ts + turn)
            session.finish_turn(checkpoint=turn == 4)
        fork_at = session.head - 3
    store.fork_session("runtime", "child", at_seq=fork_at).close()
    with store.fork_session("child", "grandchild") as grandchild:
        grandchild.append({"own": "grandchild"}, ts=ts + 20)
        grandchild.finish_turn()
    expected = {}
    for info in store.list_sessions():
        reader = store.read_session(info.id)
        expected[info.id] = {
            **work_expected(store, info.id),
            "uid": reader.identity.uid if reader.identity else None,
            "parent": None if info.parent is None else list(info.parent),
            "turns": [[t.number, len(t.events), t.finished] for t in reader.get_turns()],
            "all_records": [json.loads(event_json(e))
                            for e in reader.events(include_internal=True)],
            "checkpoints": [[c.id, c.kind, c.seq, reader.load_checkpoint(c.id)]
                            for c in reader.checkpoints()],
        }
    # writer.lock stays: the runtime session's holds the token record (FORMAT 16.4).
    with open(os.path.join(here, "expected.json"), "w") as handle:
        json.dump(expected, handle, indent=1, sort_keys=True, ensure_ascii=False)
        handle.write("\n")


#: The modules that stamp manifests and workspace files with ``datetime.now``.
_DATETIME_USERS = ("lineage", "session_metadata", "store", "workspaces")


class FixedClock:
    """Wall time for what a fixture writes. The messages API and ``finish_turn`` stamp
    records with ``time.time()`` and take no ts, segment headers and snapshots carry
    ``time.time_ns()``, manifests and workspace files ``datetime.now``: the fixture sets
    the time before each write, so its records, usage by day, turn wall times and file
    times are the same each time it is made. Session uids, random otherwise, are counted
    up from a fixed number: the files come out the same byte for byte."""

    def __init__(self, now: float) -> None:
        self.now = now
        self._real = time.time, time.time_ns
        self._datetimes: dict[str, type] = {}
        self._mint = fsstore.identity.mint
        self._uids = iter(range(0x5EED_0000_0000_0001, 0x5EED_0000_0000_1000))

    def __enter__(self) -> FixedClock:
        clock = self

        class FixedDatetime(datetime.datetime):
            @classmethod
            def now(cls, tz=None):  # type: ignore[no-untyped-def, override]
                return datetime.datetime.fromtimestamp(clock.now, tz)

        time.time = lambda: self.now
        time.time_ns = lambda: round(self.now * 1e9)
        fsstore.identity.mint = lambda: next(self._uids)
        for name in _DATETIME_USERS:
            module = importlib.import_module(f"fsstore.{name}")
            self._datetimes[name] = module.datetime
            module.datetime = FixedDatetime
        return self

    def __exit__(self, *exc_info: object) -> None:
        time.time, time.time_ns = self._real
        fsstore.identity.mint = self._mint
        for name, real in self._datetimes.items():
            importlib.import_module(f"fsstore.{name}").datetime = real


def _assistant(model: str, provider: str, parts: list, tokens: dict, cost: float,
               currency: str = "USD", **fields: object) -> dict:
    return {"role": "assistant", "parts": parts, "metadata": {
        "model": model, "provider": provider, "usage": tokens,
        "cost": {"amount": cost, "currency": currency}, **fields}}


def write_message_sessions(store: fsstore.Store, ts: float) -> None:
    """A conversation with every kind of part, an edit, a delete, an orphan result, usage
    and cost on two models and two days, two finished turns and an open one, a
    checkpoint and a snapshot; a sub-agent spawned in its first turn; a fork at the
    checkpoint; a workspace of the three."""
    text = fsstore.TextPart
    with FixedClock(ts) as clock, store.create_session(
            "chat", title="messages ✓", tags=["v1.5"]) as chat:
        chat.messages.append({"id": "u1", "role": "user", "parts": [
            {"type": "text", "text": "Why does deploy.sh fail? ✓"},
            {"type": "file", "media_type": "image/png", "name": "screen.png",
             "data": b"\x89PNG\r\n\x1a\n" + bytes(range(32))}]})
        clock.now = ts + 1
        chat.messages.append(_assistant("model-a", "prov-a", [
            {"type": "reasoning", "text": "read it first", "signature": b"\x00sig\xff"},
            {"type": "text", "text": "Reading the script and running it."},
            {"type": "tool_call", "call_id": "c1", "name": "read_file",
             "arguments": {"path": "deploy.sh"}},
            {"type": "tool_call", "call_id": "c2", "name": "run", "arguments": {
                "cmd": ["sh", "deploy.sh"]}, "provider_metadata": {"item": "fc_1"}},
        ], {"input": 1000, "output": 50, "cached_input": 400, "cache_write": 100,
            "reasoning": 20}, 0.25, finish_reason="tool_calls", latency=1.5,
            extra={"request": "req-1"}) | {"id": "a1"})
        clock.now = ts + 2
        log = chat.blobs.put(b"deploy: line 3: $1: unbound variable\n" * 40, "text/plain")
        chat.messages.append({"id": "t1", "role": "tool", "parts": [
            {"type": "tool_result", "call_id": "c1", "name": "read_file",
             "output": "#!/bin/sh\ncd $1\n"},
            {"type": "tool_result", "call_id": "c2", "name": "run", "output": {"exit": 1},
             "is_error": True},
            {"type": "file", "media_type": "text/plain", "name": "run.log", "blob": log}]})
        clock.now = ts + 4
        chat.messages.append(_assistant("model-a", "prov-a", [
            text(text="Line 3 uses $1 unquoted and unset."),
            {"type": "data", "name": "diagnosis", "data": {"line": 3, "fix": "quote"}},
            {"type": "file", "media_type": "text/html", "url": "https://example.com/sh"},
        ], {"input": 1500, "output": 40}, 0.375, finish_reason="stop") | {"id": "a2"})
        clock.now = ts + 10
        chat.finish_turn()
        chat.checkpoint("diagnosed", checkpoint_id="cp-diagnosed")

        day2 = ts + 86400
        clock.now = day2
        chat.messages.append({"id": "u2", "role": "user",
                              "parts": [{"type": "text", "text": "Fix it."}]})
        chat.messages.append({"id": "s1", "role": "system",
                              "parts": [{"type": "text", "text": "a note, deleted"}]})
        clock.now = day2 + 5
        chat.messages.append(_assistant("model-b", "prov-b", [text(text="Fixing")],
                                        {"input": 200}, 0.125, "EUR") | {"id": "a3"})
        clock.now = day2 + 20
        chat.messages.edit(_assistant("model-b", "prov-b", [
            text(text="Fixed: $1 is quoted and checked.")],
            {"input": 200, "output": 60}, 0.5, "EUR", finish_reason="stop") | {"id": "a3"})
        chat.messages.delete("s1")
        chat.messages.append({"id": "t2", "role": "tool", "parts": [
            {"type": "tool_result", "call_id": "gone", "output": "late", "orphan": True}]})
        clock.now = day2 + 30
        chat.finish_turn()
        chat.snapshot()
        clock.now = day2 + 40
        chat.messages.append({"id": "u3", "role": "user",
                              "parts": [{"type": "text", "text": "Thanks."}]})  # turn 3, open
        spawn_at = chat.messages.get("a1").seq

        clock.now = ts + 3
        with store.create_session("helper", spawned_by="chat", at_seq=spawn_at,
                                  title="sub-agent") as helper:
            helper.messages.append({"id": "h1", "role": "user", "parts": [
                {"type": "text", "text": "Find the callers of deploy.sh."}]})
            clock.now = ts + 6
            helper.messages.append(_assistant("model-b", "prov-b", [
                text(text="One: ci.yml.")], {"input": 300, "output": 30}, 0.0625,
                finish_reason="stop") | {"id": "h2"})
            clock.now = ts + 8
            helper.finish_turn()

        clock.now = day2 + 50
        with store.fork_session("chat", "chat-fork", at_checkpoint="cp-diagnosed") as fork:
            fork.messages.append(_assistant("model-a", "prov-a", [text(text="Or: set -u.")],
                                            {"input": 100, "output": 10}, 0.03125)
                                 | {"id": "f1"})
            clock.now = day2 + 55
            fork.finish_turn()
        clock.now = day2 + 60
        store.create_workspace("deploy-fix", name="Fix deploy", description="three sessions",
                               metadata={"team": "ops"})
        store.add_to_workspace("deploy-fix", "chat", fsstore.SessionRole.PRIMARY)
        store.add_to_workspace("deploy-fix", "helper", "sub-agent")
        store.add_to_workspace("deploy-fix", "chat-fork", fsstore.SessionRole.RELATED)


def make_v1_5() -> None:
    """Version 1.5: messages (every part kind, an edit, a delete, usage and cost on two
    models) with their index and usage fold in a snapshot and a checkpoint, a spawned
    session (1.4), a fork, and a workspace (see ``write_message_sessions``)."""
    here = os.path.join(FIXTURES, "v1.5")
    store_path = os.path.join(here, "store")
    if os.path.exists(here):
        shutil.rmtree(here)
    store = fsstore.open_store(store_path)
    write_message_sessions(store, 1795280000.0)
    expected = {}
    for info in store.list_sessions():
        reader = store.read_session(info.id)
        expected[info.id] = {
            "head": info.head,
            "all_records": [json.loads(event_json(e))
                            for e in reader.events(include_internal=True)],
            "turns": [[t.number, len(t.events), t.finished] for t in reader.get_turns()],
            "checkpoints": [[c.id, c.kind, c.seq] for c in reader.checkpoints()],
        }
    remove_lock_files(store_path)
    with open(os.path.join(here, "expected.json"), "w") as handle:
        json.dump(expected, handle, indent=1, sort_keys=True, ensure_ascii=False)
        handle.write("\n")



def maintained_expected(store: fsstore.Store, session_id: str) -> dict:
    reader = store.read_session(session_id)
    return {
        "head": reader.head,
        "history_start": reader.history_start,
        "all_records": [json.loads(event_json(e)) for e in reader.events(include_internal=True)],
        "turns": [[t.number, len(t.events), t.finished] for t in reader.get_turns()],
        "checkpoints": [[c.id, c.kind, c.seq] for c in reader.checkpoints()],
        "state": reader.state(),
        "queue": [[w.id, w.kind, w.payload, w.status, w.attempts] for w in reader.queue.items()],
        "inputs": [[i.id, i.payload, i.status] for i in reader.inputs.items()],
        "messages": [m.id for m in reader.messages.all()],
        "usage": json.loads(json.dumps(msgspec.to_builtins(reader.usage()))),
    }


def _maintained_turns(session: fsstore.Session, turns: int, ts: float) -> None:
    """Turns of messages with usage, tool events, state, queue work done and pending,
    inputs, a snapshot now and then and a checkpoint."""
    for turn in range(1, turns + 1):
        at = ts + turn * 10
        session.messages.append({
            "id": f"m{turn}", "role": "assistant", "created": at,
            "parts": [{"type": "text", "text": f"step {turn}: " + "the same words " * 12}],
            "metadata": {"model": "model-a", "usage": {"input": 100 * turn, "output": 7}}},
            turn=turn, ts=at)
        session.append({"tool": "read_file", "args": {"path": f"f{turn}.py"},
                        "output": bytes(range(64)) * 4}, kind="tool", turn=turn, ts=at + 1)
        session.commit([], state_patch={"turn": turn, "notes": {str(turn): "n" * 30}},
                       turn=turn, ts=at + 2)
        if turn % 3 == 0:
            session.queue.enqueue("job", {"turn": turn})
            claim = session.queue.claim("worker", 3600)
            if claim is not None and turn % 2 == 0:
                session.queue.complete(claim)
        if turn % 5 == 0:
            session.inputs.submit({"turn": turn})
        if turn % 8 == 0:
            session.snapshot()
        if turn == 6:
            session.checkpoint(checkpoint_id="six")
        session.finish_turn(turn)


def _repaired_session(store: fsstore.Store, ts: float) -> None:
    """Session ``repaired``: 60 records over small segments, a bit of its third segment
    flipped, then repaired (its lost records become ``fsstore.lost`` ones)."""
    with store.create_session("repaired", title="repaired") as session:
        for n in range(60):
            session.append({"n": n, "text": "x" * 120}, turn=n // 6 + 1, ts=ts + n)
    log = os.path.join(store.path, "sessions", "repaired", "log")
    segment = os.path.join(log, sorted(os.listdir(log))[2])
    with open(segment, "r+b") as handle:
        handle.seek(200)
        byte = handle.read(1)
        handle.seek(200)
        handle.write(bytes([byte[0] ^ 0x40]))
    assert store.repair("repaired").lost


def make_v1_6() -> None:
    """Version 1.6: compacted segments (merged members, zstd chunks) with plain segments
    written after them, a fork of a compacted session, a retained session that starts
    with a base frame, a repaired session holding ``fsstore.lost`` records, and a
    vacuumed session whose done work's records are ``fsstore.reclaimed`` markers and
    whose deleted message is redacted."""
    here = os.path.join(FIXTURES, "v1.6")
    store_path = os.path.join(here, "store")
    if os.path.exists(here):
        shutil.rmtree(here)
    ts = 1795300000.0
    store = fsstore.open_store(store_path, segment_size=4096)
    with store.create_session("compacted", title="compacted") as session:
        _maintained_turns(session, 30, ts)
    report = store.compact(["compacted"])
    assert report.segments_after < report.segments_before
    with store.open_session("compacted") as session:
        session.append({"after": "compaction"}, turn=31, ts=ts + 400)
        session.fork("compacted-fork", at_seq=40).close()
    with store.create_session("retained", title="retained") as session:
        _maintained_turns(session, 30, ts)
        assert session.retain(keep_turns=4).seqs_dropped > 0
    _repaired_session(store, ts)
    with store.create_session("reclaimed", title="reclaimed") as session:
        _maintained_turns(session, 30, ts)
        session.messages.delete("m8", turn=31, ts=ts + 399)  # after the checkpoint
        session.append({"after": "the work"}, turn=31, ts=ts + 400)  # seals the rest
        report = session.vacuum()
        assert report.removed["queue_records"].count > 0
        assert report.removed["message_tombstones"].count == 1
    expected = {info.id: maintained_expected(store, info.id) for info in store.list_sessions()}
    remove_lock_files(store_path)
    with open(os.path.join(here, "expected.json"), "w") as handle:
        json.dump(expected, handle, indent=1, sort_keys=True, ensure_ascii=False)
        handle.write("\n")


#: The key of the keyed store of fixtures/v1.7, kept beside it (never inside a store).
V1_7_KEY = bytes(range(0x40, 0x60))


def _chained_sessions(store: fsstore.Store, ts: float) -> None:
    """The sessions each store of fixtures/v1.7 holds: plain, forked (a junction), a
    fork of the fork, compacted, retained (a chained base), vacuumed, repaired, and one
    with a vector collection (a chained write-ahead log and a bound collection.json)."""
    from fsstore.vectors import tuning

    with store.create_session("plain", title="chained ✓", tags=["x"],
                              metadata={"model": "m"}) as session:
        _maintained_turns(session, 12, ts)
        session.fork("fork", at_seq=20).close()
    with store.open_session("fork") as session:
        for turn in range(13, 16):
            session.messages.append({"id": f"fork-m{turn}", "role": "user",
                                     "parts": [{"type": "text", "text": f"fork {turn}"}]},
                                    turn=turn, ts=ts + 500 + turn)
            session.commit([], state_patch={"fork": turn}, turn=turn, ts=ts + 501 + turn)
            session.finish_turn(turn)
        session.fork("fork-of-fork").close()
    with store.create_session("compacted", title="compacted") as session:
        _maintained_turns(session, 30, ts)
    assert store.compact(["compacted"]).segments_after >= 1
    with store.open_session("compacted") as session:
        session.append({"after": "compaction"}, turn=31, ts=ts + 400)
    with store.create_session("retained", title="retained") as session:
        _maintained_turns(session, 30, ts)
        assert session.retain(keep_turns=4).seqs_dropped > 0
    with store.create_session("vacuumed", title="vacuumed") as session:
        _maintained_turns(session, 30, ts)
        session.messages.delete("m8", turn=31, ts=ts + 399)
        session.append({"after": "the work"}, turn=31, ts=ts + 400)
        assert session.vacuum().removed["queue_records"].count > 0
    _repaired_session(store, ts)
    seal_rows = tuning.SEAL_ROWS
    tuning.SEAL_ROWS = 8  # a shard and a write-ahead log; the format does not depend on it
    try:
        with store.create_session("memory", title="vectors") as session:
            session.commit([{"role": "user", "content": "remember this"}], ts=ts)
            notes = session.create_collection("notes", 4)
            for i in range(20):
                notes.upsert([fsstore.VectorDocument(
                    f"doc-{i}", [i % 5, (i * 7) % 3 - 1, i / 10, 1], content=f"note {i}",
                    metadata={"kind": "note" if i % 2 else "fact", "n": i})])
            notes.delete(["doc-3"])
    finally:
        tuning.SEAL_ROWS = seal_rows


def _chained_expected(store: fsstore.Store) -> dict:
    expected = {}
    for info in store.list_sessions():
        found = maintained_expected(store, info.id)
        reader = store.read_session(info.id)
        found["head_hash"] = reader.head_hash
        if info.id == "memory":
            found["collection"] = collection_contents(reader.collection("notes"),
                                                      FIXTURE_IDS[:20])
        expected[info.id] = found
    return expected


def make_v1_7() -> None:
    """Version 1.7: hash chains by default. Two stores of the same sessions: ``store``
    (SHA-256, the policy a store gets with no key) and ``keyed-store`` (HMAC-SHA256
    under the key in ``chain.key`` beside it), each with every maintenance a chained
    session goes through, and ``pins.json``, the heads each store's sessions were
    pinned at."""
    here = os.path.join(FIXTURES, "v1.7")
    if os.path.exists(here):
        shutil.rmtree(here)
    os.makedirs(here)
    key_path = os.path.join(here, "chain.key")
    with open(key_path, "w") as handle:
        handle.write(V1_7_KEY.hex() + "\n")
    ts = 1795400000.0
    expected = {}
    for name, key in (("store", None), ("keyed-store", key_path)):
        store_path = os.path.join(here, name)
        store = fsstore.open_store(store_path, segment_size=4096, chain_key=key)
        assert store.chain is not None and (store.chain.key_id is not None) == (key is not None)
        _chained_sessions(store, ts)
        expected[name] = _chained_expected(store)
        remove_lock_files(store_path)
    with open(os.path.join(here, "expected.json"), "w") as handle:
        json.dump(expected, handle, indent=1, sort_keys=True, ensure_ascii=False)
        handle.write("\n")


if __name__ == "__main__":
    {"v1": make_v1, "v1.1": make_v1_1, "v1.2": make_v1_2,
     "v1.2-work": make_v1_2_work, "v1.3": make_v1_3, "v1.5": make_v1_5,
     "v1.6": make_v1_6, "v1.7": make_v1_7}[sys.argv[1]]()
