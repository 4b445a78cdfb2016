"""Stores committed under fixtures/ keep opening and reading the same, forever."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys

import pytest
from conftest import tree_snapshot

import fsstore
from fsstore.cli._common import event_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "fixtures", "v1")


def open_fixture(folder: str) -> tuple[dict, fsstore.Store]:
    """What reading a committed fixture must give, and its store (opened, not copied)."""
    with open(os.path.join(folder, "expected.json")) as handle:
        expected = json.load(handle)
    store = fsstore.open_store(os.path.join(folder, "store"), create=False)
    assert store.session_ids() == sorted(expected)
    return expected, store


def test_the_committed_v1_store_reads_the_same_forever():
    before = tree_snapshot(FIXTURE)
    expected, store = open_fixture(FIXTURE)
    for info in store.list_sessions():
        want = expected[info.id]
        assert (info.title, info.tags, info.metadata, info.event_count, info.head) == (
            want["title"], want["tags"], want["metadata"], want["event_count"], want["head"])
        reader = store.read_session(info.id)
        everything = reader.events(include_internal=True)
        assert [json.loads(event_json(e)) for e in everything] == want["events"]
        turns = reader.get_turns(include_internal=True)
        assert [[t.number, len(t.events), t.finished] for t in turns] == want["turns"]
    findings = store.verify()
    assert [f.level for f in findings] == ["note"]  # the torn tail of session "torn"
    assert "torn tail" in findings[0].message
    assert tree_snapshot(FIXTURE) == before  # reading changed nothing


def test_the_committed_v1_store_takes_appends_after_recovery(tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(os.path.join(FIXTURE, "store"), copy)
    store = fsstore.open_store(copy, create=False)
    for session_id in store.session_ids():
        with store.open_session(session_id) as session:
            head = session.head
            assert session.append({"new": True}, turn=99) == head + 1
    assert [f for f in store.verify() if f.level == "problem"] == []
    assert store.read_session("torn").head == 5


def test_the_committed_v1_store_has_an_empty_state_and_takes_state_changes(tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(os.path.join(FIXTURE, "store"), copy)
    store = fsstore.open_store(copy, create=False)
    assert store.read_session("chat").state() == {}
    with store.open_session("chat") as session:
        session.commit([{"new": 1}], state_patch={"k": 1}, commit_id="c")
        session.checkpoint(checkpoint_id="cp")
        session.fork("chat-fork").close()
    assert store.read_session("chat-fork").state() == {"k": 1}
    assert [f for f in store.verify() if f.level == "problem"] == []


FIXTURE_1_1 = os.path.join(ROOT, "fixtures", "v1.1")


def test_the_committed_v1_1_store_reads_the_same_forever():
    before = tree_snapshot(FIXTURE_1_1)
    expected, store = open_fixture(FIXTURE_1_1)
    for info in store.list_sessions():
        want = expected[info.id]
        assert (info.title, info.tags, info.metadata, info.head) == (
            want["title"], want["tags"], want["metadata"], want["head"])
        assert (None if info.parent is None else list(info.parent)) == want["parent"]
        reader = store.read_session(info.id)
        everything = reader.events(include_internal=True)
        assert [json.loads(event_json(e)) for e in everything] == want["events"]
        assert reader.state() == want["state"]
        assert reader.state_findings == []
        for seq, state in want["states_at"].items():
            assert reader.state_at(int(seq)) == state
        assert [[c.id, c.label, c.kind, c.seq, reader.load_checkpoint(c.id)]
                for c in reader.checkpoints()] == want["checkpoints"]
        assert {d: hashlib.sha256(reader.blobs.get(f"sha256:{d}")).hexdigest()
                for d, _, _ in reader.blobs.digests()} == want["blobs"]
    assert store.verify() == []
    assert tree_snapshot(FIXTURE_1_1) == before


def test_the_committed_v1_1_store_remembers_its_commit_ids(tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(os.path.join(FIXTURE_1_1, "store"), copy)
    store = fsstore.open_store(copy, create=False)
    for session_id in ("agent", "fork-head"):
        with store.open_session(session_id) as session:
            head = session.head
            assert session.commit([{"again": 1}], commit_id="commit-3").duplicate
            assert session.head == head


def test_the_committed_v1_1_store_collects_only_its_orphan_blob(tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(os.path.join(FIXTURE_1_1, "store"), copy)
    store = fsstore.open_store(copy, create=False)
    with store.open_session("attachments") as session:
        report = session.gc(grace=0, verify=True)
        assert (report.scanned, report.reclaimed, report.damaged) == (3, 1, [])
        (event,) = [e for e in session.events() if e.kind == "event"]
        assert session.blobs.get(event.data["image"]) == bytes(range(256)) * 40
        assert session.blobs.get(session.get_state("log")).startswith(b"a line of tool")


FIXTURE_1_2 = os.path.join(ROOT, "fixtures", "v1.2")


def same_hits(hits: list, results: list) -> None:
    """The hits of a search, as recorded: the same scores in order, up to the last bit of
    a float32 (recorded by a BLAS pass; scores are now exact, FORMAT.md 15.6), and the
    same document at each place whose score no other hit shares (equal scores come in
    document id order now, in row order then)."""
    def near(a: float, b: float) -> bool:
        return abs(a - b) <= 2e-5 * max(1.0, abs(b))

    assert len(hits) == len(results)
    assert all(near(h[1], r[1]) for h, r in zip(hits, results, strict=True)), (hits, results)
    scores = [r[1] for r in results]
    for place, (hit, result) in enumerate(zip(hits, results, strict=True)):
        tied = sum(near(score, result[1]) for score in scores) > 1
        if not tied and place < len(results) - 1:
            assert hit[0] == result[0], (hits, results)


def check_collections_1_2(store: fsstore.Store, expected: dict, same_rows: bool = True
                          ) -> None:
    """The documents and searches the fixture recorded. After a merge (``same_rows``
    false) rows are in another order, so documents with equal scores may swap places."""
    reader = store.read_session("memory")
    for name, want in expected["memory"]["collections"].items():
        collection = reader.collection(name)
        assert (collection.dim, collection.dtype, collection.metric.value,
                collection.count()) == (want["dim"], want["dtype"], want["metric"],
                                        want["count"])
        ids = [f"doc-{i}" for i in range(40)]
        got = {d.id: [d.embedding.tolist(), d.content, d.metadata, d.seq, d.turn]
               for d in collection.get(ids) if d is not None}
        assert got == want["documents"]
        for metric, query, results in want["searches"]:
            hits = [[r.id, round(r.score, 5)] for r in collection.search(query, 5,
                                                                         metric=metric)]
            same_hits(hits, results)
        filtered = [r.id for r in collection.search([1, 1, 1, 1], 10, filter={"kind": "note"})]
        if same_rows:
            assert [filtered] == want["filtered"]


def test_the_committed_v1_2_store_reads_its_collections_the_same_forever():
    before = tree_snapshot(FIXTURE_1_2)
    expected, store = open_fixture(FIXTURE_1_2)
    check_collections_1_2(store, expected)
    for name, want in expected["memory"]["collections"].items():
        info = store.read_session("memory").collection(name).info()
        assert [info.shards, info.unsealed] == want["info"]
    assert store.verify() == []
    assert tree_snapshot(FIXTURE_1_2) == before


def test_the_committed_v1_2_store_takes_upserts_and_compacts(tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(os.path.join(FIXTURE_1_2, "store"), copy)
    expected, _ = open_fixture(FIXTURE_1_2)
    store = fsstore.open_store(copy, create=False)
    with store.open_session("memory") as session:
        for name in ("notes", "half"):
            collection = session.collection(name)
            collection.compact()
            assert collection.info().shards == 1 and collection.info().deleted == 0
    check_collections_1_2(store, expected, same_rows=False)
    with store.open_session("memory") as session:
        session.collection("notes").upsert([fsstore.VectorDocument("doc-1", [0, 0, 0, 9])])
        assert session.collection("notes").get(["doc-1"])[0].embedding.tolist() == [0, 0, 0, 9]
    assert [f for f in store.verify() if f.level == "problem"] == []


FIXTURE_1_2_WORK = os.path.join(ROOT, "fixtures", "v1.2-work")


def check_work_1_2(store: fsstore.Store, expected: dict) -> None:
    want = expected["runtime"]
    reader = store.read_session("runtime")
    assert reader.head == want["head"]
    assert [json.loads(event_json(e)) for e in reader.events()
            if not e.kind.startswith("fsstore.")] == want["events"]
    assert reader.state() == want["state"]
    assert [[w.id, w.kind, json.loads(json.dumps(w.payload, default=list)), w.priority,
             w.status, w.attempts] for w in reader.queue.items()] == want["queue"]
    assert [[i.id, i.payload, i.status] for i in reader.inputs.items()] == want["inputs"]
    lease = store.lease_info("runtime")
    assert [lease.token, lease.held] == want["lease"]


def test_the_committed_v1_2_work_store_reads_its_lease_queue_and_inputs_forever():
    before = tree_snapshot(FIXTURE_1_2_WORK)
    expected, store = open_fixture(FIXTURE_1_2_WORK)
    check_work_1_2(store, expected)
    # The same from the snapshots alone: the fold of the queue and inputs they hold.
    assert store.read_session("runtime").state_at(12) == {"step": 1}
    assert store.verify() == []
    assert tree_snapshot(FIXTURE_1_2_WORK) == before


def test_the_committed_v1_2_work_store_hands_out_a_higher_token_and_claims_on(tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(os.path.join(FIXTURE_1_2_WORK, "store"), copy)
    expected, _ = open_fixture(FIXTURE_1_2_WORK)
    store = fsstore.open_store(copy, create=False)
    outcome = store.claim_lease("runtime", "runtime-2", ttl=60)
    assert outcome.lease is not None and outcome.lease.token > expected["runtime"]["lease"][0]
    with store.open_session("runtime", lease=outcome.lease) as session:
        claim = session.queue.claim("worker-4", lease_ttl=60)
        assert claim is not None and claim.kind == "late"
        assert [i.payload for i in session.inputs.claim()] == ["arrived during turn 2"]
    assert [f for f in store.verify() if f.level == "problem"] == []


FIXTURE_1_3 = os.path.join(ROOT, "fixtures", "v1.3")


def test_the_committed_v1_3_store_reads_the_same_forever():
    before = tree_snapshot(FIXTURE_1_3)
    expected, store = open_fixture(FIXTURE_1_3)
    for info in store.list_sessions():
        want = expected[info.id]
        reader = store.read_session(info.id)
        assert info.damaged is None
        assert reader.identity is not None and reader.identity.uid == want["uid"]
        assert (None if info.parent is None else list(info.parent)) == want["parent"]
        assert [json.loads(event_json(e)) for e in reader.events(include_internal=True)] == (
            want["all_records"])
        assert [[t.number, len(t.events), t.finished] for t in reader.get_turns()] == (
            want["turns"])
        assert [[c.id, c.kind, c.seq, reader.load_checkpoint(c.id)]
                for c in reader.checkpoints()] == want["checkpoints"]
        assert reader.state_findings == []
    check_work_1_2(store, expected)  # the queue, the inputs and the lease token
    assert store.verify() == []
    assert tree_snapshot(FIXTURE_1_3) == before


def test_the_committed_v1_3_store_refuses_a_segment_of_another_of_its_sessions(tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(os.path.join(FIXTURE_1_3, "store"), copy)
    store = fsstore.open_store(copy, create=False)
    last = sorted((copy / "sessions" / "child" / "log").glob("*.fslog"))[-1]
    shutil.copyfile(copy / "sessions" / "grandchild" / "log" / last.name, last)
    with pytest.raises(fsstore.CorruptionError, match="another session"):
        list(store.read_session("child").events())
    assert any(f.level == "problem" and f.path == str(last) for f in store.verify())


def test_the_committed_v1_3_store_hands_out_a_higher_token_without_its_lease_file(tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(os.path.join(FIXTURE_1_3, "store"), copy)
    expected, _ = open_fixture(FIXTURE_1_3)
    store = fsstore.open_store(copy, create=False)
    os.unlink(copy / "sessions" / "runtime" / "lease")  # the token record outlives it
    outcome = store.claim_lease("runtime", "runtime-2", ttl=60)
    assert outcome.lease is not None
    assert outcome.lease.token > expected["runtime"]["lease"][0]
    with store.open_session("runtime", lease=outcome.lease) as session:
        session.append({"after": "restore"})
    with store.open_session("grandchild") as session:
        session.append({"more": 1})
    assert [f for f in store.verify() if f.level == "problem"] == []


FIXTURE_1_5 = os.path.join(ROOT, "fixtures", "v1.5")


def test_the_committed_v1_5_store_reads_its_records_the_same_forever():
    before = tree_snapshot(FIXTURE_1_5)
    expected, store = open_fixture(FIXTURE_1_5)
    for info in store.list_sessions():
        want = expected[info.id]
        reader = store.read_session(info.id)
        assert info.damaged is None and info.head == want["head"]
        assert [json.loads(event_json(e)) for e in reader.events(include_internal=True)] == (
            want["all_records"])
        assert [[t.number, len(t.events), t.finished] for t in reader.get_turns()] == (
            want["turns"])
        assert [[c.id, c.kind, c.seq] for c in reader.checkpoints()] == want["checkpoints"]
    assert store.verify() == []
    assert tree_snapshot(FIXTURE_1_5) == before


def test_the_committed_v1_5_store_reads_its_messages_the_same_forever():
    before = tree_snapshot(FIXTURE_1_5)
    _, store = open_fixture(FIXTURE_1_5)
    chat = store.read_session("chat")
    assert chat.messages.count() == 8
    assert [m.id for m in chat.messages.last(3)] == ["a3", "t2", "u3"]
    assert [m.id for m in chat.messages.all()] == ["u1", "a1", "t1", "a2", "u2", "a3", "t2",
                                                    "u3"]
    assert [m.id for m in chat.messages.page(before="u2", limit=2)] == ["t1", "a2"]
    assert [m.id for m in chat.messages.page(after="s1", limit=1)] == ["a3"]  # a deleted cursor

    user = chat.messages.get("u1")
    assert (user.role, user.seq, user.turn, user.version, user.created) == (
        "user", 1, 1, 1, 1795280000.0)
    assert user.parts == [fsstore.TextPart(text="Why does deploy.sh fail? ✓"), fsstore.FilePart(
        media_type="image/png", name="screen.png", data=b"\x89PNG\r\n\x1a\n" + bytes(range(32)))]
    reply = chat.messages.get("a1")
    reasoning, text, read, run = reply.parts
    assert reasoning == fsstore.ReasoningPart(text="read it first", signature=b"\x00sig\xff")
    assert text.text == "Reading the script and running it."
    assert (read.call_id, read.name, read.arguments) == ("c1", "read_file", {"path": "deploy.sh"})
    assert run.provider_metadata == {"item": "fc_1"} and run.arguments == {
        "cmd": ["sh", "deploy.sh"]}
    assert reply.metadata == fsstore.MessageMetadata(
        model="model-a", provider="prov-a", finish_reason="tool_calls",
        usage=fsstore.TokenUsage(input=1000, output=50, cached_input=400, cache_write=100,
                                 reasoning=20),
        cost=fsstore.CostInfo(amount=0.25, currency="USD"), latency=1.5,
        extra={"request": "req-1"})
    results = chat.messages.get("t1")
    assert [(r.call_id, r.output, r.is_error) for r in results.tool_results] == [
        ("c1", "#!/bin/sh\ncd $1\n", False), ("c2", {"exit": 1}, True)]
    log = results.parts[2]
    assert chat.blobs.get(log.blob) == b"deploy: line 3: $1: unbound variable\n" * 40
    diagnosis = chat.messages.get("a2").parts
    assert diagnosis[1] == fsstore.DataPart(name="diagnosis", data={"line": 3, "fix": "quote"})
    assert diagnosis[2].url == "https://example.com/sh"
    assert chat.messages.get("t2").tool_results[0].orphan

    edited = chat.messages.get("a3")
    assert (edited.text, edited.version, edited.seq, edited.created, edited.updated) == (
        "Fixed: $1 is quoted and checked.", 2, 9, 1795366405.0, 1795366420.0)
    assert edited.metadata.cost == fsstore.CostInfo(amount=0.5, currency="EUR")
    assert [(v.op, v.seq, v.message.text) for v in chat.messages.history("a3")] == [
        ("add", 8, "Fixing"), ("edit", 9, "Fixed: $1 is quoted and checked.")]
    assert [(v.op, v.seq) for v in chat.messages.history("s1")] == [("add", 7), ("delete", 10)]
    with pytest.raises(fsstore.MessageNotFound, match="deleted"):
        chat.messages.get("s1")
    # as the checkpoint saw the conversation
    assert [m.id for m in chat.messages.last(10, at_seq=5)] == ["u1", "a1", "t1", "a2"]
    assert chat.messages.get("s1", at_seq=7).text == "a note, deleted"
    assert tree_snapshot(FIXTURE_1_5) == before


def test_the_committed_v1_5_store_reads_its_usage_stats_graph_and_workspace_forever(tmp_path):
    # a copy: its lineage makes the store's catalog (a cache, FORMAT.md 24), as a listing would
    copy = str(tmp_path / "v1.5")
    shutil.copytree(FIXTURE_1_5, copy)
    before = tree_snapshot(copy)
    _, store = open_fixture(copy)
    chat = store.read_session("chat")
    totals = fsstore.UsageTotals
    model_a = totals(input=2500, output=90, cached_input=400, cache_write=100, reasoning=20,
                     messages=2, cost={"USD": 0.625})
    model_b = totals(input=200, output=60, messages=1, cost={"EUR": 0.5})
    assert chat.usage(by="model") == {"model-a": model_a, "model-b": model_b}
    assert chat.usage(by="day") == {"2026-11-21": model_a, "2026-11-22": model_b}
    assert chat.usage() == {"": totals(input=2700, output=150, cached_input=400,
                                       cache_write=100, reasoning=20, messages=3,
                                       cost={"USD": 0.625, "EUR": 0.5})}
    assert chat.usage(at_seq=5) == {"": model_a}
    assert chat.stats() == fsstore.ExecutionStats(
        messages_by_role={"assistant": 3, "tool": 2, "user": 3}, tool_calls=2,
        tool_errors=1, usage=chat.usage()[""], turns=2, turn_seconds=40.0,
        longest_turn_seconds=30.0)
    helper = store.read_session("helper")
    assert helper.stats().turns == 1 and helper.stats().turn_seconds == 5.0
    fork = store.read_session("chat-fork")
    assert [m.id for m in fork.messages.all()] == ["u1", "a1", "t1", "a2", "f1"]
    assert fork.usage()[""].cost == {"USD": 0.65625}
    # the store counts the history the fork shares with chat once
    assert {sid: (t.input, t.cost) for sid, t in store.usage(by="session").items()} == {
        "chat": (2700, {"USD": 0.625, "EUR": 0.5}), "chat-fork": (100, {"USD": 0.03125}),
        "helper": (300, {"USD": 0.0625})}
    assert store.usage(by="model")["model-b"] == totals(input=500, output=90, messages=2,
                                                        cost={"EUR": 0.5, "USD": 0.0625})

    assert helper.spawned_by == fsstore.SpawnOrigin("chat", 2, 1)
    assert fork.parent == fsstore.ForkOrigin("chat", 5, "cp-diagnosed")
    lineage = store.lineage("chat")
    assert [(r.session, r.parent, r.kind.value, r.seq, r.turn, r.checkpoint)
            for r in lineage.tree] == [("helper", "chat", "spawned", 2, 1, None),
                                       ("chat-fork", "chat", "forked", 5, None, "cp-diagnosed")]
    workspace = store.workspace("deploy-fix")
    assert (workspace.name, workspace.description, workspace.metadata) == (
        "Fix deploy", "three sessions", {"team": "ops"})
    assert {m.session_id: m.role for m in store.workspace_sessions("deploy-fix")} == {
        "chat": "primary", "chat-fork": "related", "helper": "sub-agent"}
    assert store.session_workspaces("helper") == {"deploy-fix": "sub-agent"}
    assert store.verify() == []
    after = tree_snapshot(copy)
    for cache in ("store/catalog", "store/catalog.log"):
        after.pop(cache, None)  # a cache, rebuilt when missing: nothing else is written
    assert after == before


def test_the_committed_v1_5_store_takes_messages_edits_and_deletes(tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(os.path.join(FIXTURE_1_5, "store"), copy)
    store = fsstore.open_store(copy, create=False)
    with store.open_session("chat") as chat:
        with pytest.raises(fsstore.MessageExists):  # ids are never reused, deleted ones too
            chat.messages.append({"id": "s1", "role": "user"})
        chat.messages.append({"id": "t3", "role": "tool", "parts": [
            {"type": "tool_result", "call_id": "c1", "output": "again"}]})  # c1 is found
        chat.messages.edit({"id": "u3", "role": "user",
                            "parts": [{"type": "text", "text": "Thanks!"}]})
        chat.messages.delete("a2")
        assert [m.id for m in chat.messages.last(3)] == ["t2", "u3", "t3"]
        assert chat.messages.get("u3").version == 2
        assert chat.stats().messages_by_role == {"assistant": 2, "tool": 3, "user": 3}
        assert chat.usage()[""].input == 2700  # a deleted message stays spent
    assert [f for f in store.verify() if f.level == "problem"] == []


FIXTURE_1_6 = os.path.join(ROOT, "fixtures", "v1.6")


def maintained(store: fsstore.Store, session_id: str) -> dict:
    """What tools/make_fixture.py recorded of each session: read the same way."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    try:
        import make_fixture
    finally:
        sys.path.remove(os.path.join(ROOT, "tools"))
    found: dict = make_fixture.maintained_expected(store, session_id)
    return found


def test_the_committed_v1_6_store_reads_its_maintained_sessions_the_same_forever():
    before = tree_snapshot(FIXTURE_1_6)
    expected, store = open_fixture(FIXTURE_1_6)
    for session_id, want in expected.items():
        assert maintained(store, session_id) == want, session_id
    stats = store.read_session("compacted").session_stats()
    assert stats.compressed_segments >= 1 and stats.segments > stats.compressed_segments
    assert expected["retained"]["history_start"] > 1
    assert any(r["kind"] == "fsstore.lost" for r in expected["repaired"]["all_records"])
    assert [f for f in store.verify() if f.level == "problem"] == []
    assert tree_snapshot(FIXTURE_1_6) == before


def test_the_committed_v1_6_store_takes_appends_compaction_and_retention(tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(os.path.join(FIXTURE_1_6, "store"), copy)
    expected, _ = open_fixture(FIXTURE_1_6)
    store = fsstore.open_store(copy, create=False)
    for session_id in store.session_ids():
        with store.open_session(session_id) as session:
            assert session.append({"new": True}) == expected[session_id]["head"] + 1
    store.compact()
    store.retain("compacted", keep_turns=2)
    for session_id, want in expected.items():
        reader = store.read_session(session_id)
        assert reader.state() == want["state"], session_id
        assert [[i.id, i.payload, i.status] for i in reader.inputs.items()] == want["inputs"]
    assert [f for f in store.verify() if f.level == "problem"] == []


FIXTURE_1_7 = os.path.join(ROOT, "fixtures", "v1.7")
KEY_1_7 = os.path.join(FIXTURE_1_7, "chain.key")
STORES_1_7 = [("store", None), ("keyed-store", KEY_1_7)]


def chained_fixture(name: str, key: str | None, root: str = FIXTURE_1_7
                    ) -> tuple[dict, fsstore.Store]:
    with open(os.path.join(FIXTURE_1_7, "expected.json")) as handle:
        expected = json.load(handle)[name]
    store = fsstore.open_store(os.path.join(root, name), create=False, chain_key=key)
    assert store.session_ids() == sorted(expected)
    return expected, store


@pytest.mark.parametrize(("name", "key"), STORES_1_7)
def test_the_committed_v1_7_chained_stores_read_the_same_forever(name, key):
    before = tree_snapshot(FIXTURE_1_7)
    expected, store = chained_fixture(name, key)
    assert store.chain is not None and (store.chain.key_id is not None) == (key is not None)
    for session_id, want in expected.items():
        found = maintained(store, session_id)
        reader = store.read_session(session_id)
        assert reader.head_hash == want["head_hash"] is not None, session_id
        found["head_hash"] = reader.head_hash
        if "collection" in want:
            sys.path.insert(0, os.path.join(ROOT, "tools"))
            try:
                import make_fixture
            finally:
                sys.path.remove(os.path.join(ROOT, "tools"))
            found["collection"] = make_fixture.collection_contents(
                reader.collection("notes"), make_fixture.FIXTURE_IDS[:20])
        assert found == want, session_id
        assert [f for f in reader.verify(want["head_hash"], exact=True)
                if f.level == "problem"] == [], session_id
    assert [f for f in store.verify() if f.level == "problem"] == []
    assert tree_snapshot(FIXTURE_1_7) == before


@pytest.mark.parametrize(("name", "key"), STORES_1_7)
def test_the_committed_v1_7_chained_stores_take_appends_and_maintenance(tmp_path, name, key):
    shutil.copytree(os.path.join(FIXTURE_1_7, name), tmp_path / name)
    expected, store = chained_fixture(name, key, str(tmp_path))
    for session_id in store.session_ids():
        with store.open_session(session_id) as session:
            assert session.append({"new": True}) == expected[session_id]["head"] + 1
    store.compact()
    store.retain("compacted", keep_turns=2)
    with store.open_session("vacuumed") as session:
        session.vacuum()
    for session_id, want in expected.items():
        assert store.read_session(session_id).state() == want["state"], session_id
    assert [f for f in store.verify() if f.level == "problem"] == []


def test_the_committed_v1_7_keyed_store_refuses_without_its_key_and_catches_an_edit(tmp_path):
    expected, store = chained_fixture("keyed-store", None)
    with pytest.raises(fsstore.ChainKeyRequired):
        list(store.read_session("plain").events())
    shutil.copytree(os.path.join(FIXTURE_1_7, "keyed-store"), tmp_path / "keyed-store")
    store = fsstore.open_store(tmp_path / "keyed-store", create=False, chain_key=KEY_1_7)
    log = tmp_path / "keyed-store" / "sessions" / "plain" / "log"
    first = sorted(os.listdir(log))[0]
    data = bytearray((log / first).read_bytes())
    at = data.index(b"the same words")
    data[at] ^= 0x20  # an edit of one record's text, its checksum recomputed
    from fsstore.checksum import crc32c
    from fsstore.log_format import frame_end
    off = 64
    while True:
        length, frame_type = (int.from_bytes(data[off + 4:off + 8], "little"),
                              int.from_bytes(data[off + 20:off + 24], "little"))
        body_end = off + ((24 + length + 7) & ~7)
        if at < body_end:
            data[off:off + 4] = crc32c(bytes(data[off + 4:body_end])).to_bytes(4, "little")
            break
        off = frame_end(off, length, frame_type)
    (log / first).write_bytes(bytes(data))
    with pytest.raises(fsstore.CorruptionError, match="chain"):
        list(store.read_session("plain").events())
    assert expected["plain"]["head_hash"]
