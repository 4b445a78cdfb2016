"""Write fixtures/v1: a small format-v1 store and what reading it must give.

Run once, when format v1 was made; the result is committed and tests/test_fixtures.py
proves every later fsstore reads it the same. Do not regenerate it to make a test pass.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fsstore  # noqa: E402
from fsstore.cli._common import event_json  # noqa: E402

HERE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "v1")


def main() -> None:
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


if __name__ == "__main__":
    main()
