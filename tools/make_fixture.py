"""Write a fixture: a small store of one format version and what reading it must give.

    python3 tools/make_fixture.py v1.1

Each was written once, when its format version was made; the result is committed and
tests/test_fixtures.py proves every later fsstore reads it the same. Do not regenerate
one to make a test pass.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

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
            "events": [json.loads(event_json(e)) for e in reader.events()],
            "turns": [[t.number, len(t.events), t.finished] for t in reader.get_turns()],
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
            "events": [json.loads(event_json(e)) for e in reader.events()],
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


if __name__ == "__main__":
    {"v1": make_v1, "v1.1": make_v1_1}[sys.argv[1]]()
