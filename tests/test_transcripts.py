"""fsstore/transcripts: Claude Code and Codex transcripts (fixtures/transcripts/) become
sessions, once; grown transcripts get only their new lines; changed ones a new session;
a crash between a chunk and its record imports each line once; nothing in a transcript
becomes a path."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import fsstore
from fsstore.blobs import BLOB_KEY
from fsstore.message_types import FilePart, ReasoningPart, ToolCallPart, ToolResultPart
from fsstore.transcripts import import_claude_code, import_codex, importer
from fsstore.transcripts.common import LineReader, session_id_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "fixtures", "transcripts")
CC_OLD = "cc-3f1c2a7e-5b0d-4e8a-9c61-2d7f4b8e1a90"
CC_NEW = "cc-8a4e0b19-7c2d-4f3e-b6a5-91d0c3e2f7b4"
CX_MAIN = "codex-019a2d7a-41c4-78b1-b7cc-a45d62a89cd5"
CX_SUB = "codex-019a9776-0a34-7842-8627-112b63d66e90"
CX_LEGACY = "codex-5973b6c0-94b8-487b-a530-2aeb6098ae0e"


@pytest.fixture
def sources(tmp_path: Any) -> str:
    """A copy of the fixtures, which tests may grow and change."""
    target = str(tmp_path / "transcripts")
    shutil.copytree(FIXTURES, target)
    return target


@pytest.fixture
def store(tmp_path: Any) -> fsstore.Store:
    return fsstore.open_store(str(tmp_path / "store"))


def raw_events(store: fsstore.Store, session: str, kind: str) -> list[dict[str, Any]]:
    return [e.data for e in store.read_session(session).events() if e.kind == kind]


def fingerprint(store: fsstore.Store) -> dict[str, Any]:
    """What an import put in a store, independent of when it ran."""
    found = {}
    for session_id in store.session_ids():
        reader = store.read_session(session_id)
        found[session_id] = (
            reader.title, reader.tags,
            [(m.id, m.role, m.turn, len(m.parts), m.metadata.usage) for m in
             reader.messages.all()],
            [(e.kind, e.data.get("line")) for e in reader.events()
             if e.kind.endswith(".raw")])
    return found


# --- Claude Code --------------------------------------------------------------------------


def test_claude_code_lines_become_messages_in_turns_with_usage_counted_once(
        store: fsstore.Store, sources: str) -> None:
    report = import_claude_code(store, os.path.join(sources, "claude-code"))
    assert {f.action for f in report.files} == {"created"}
    old = store.read_session(CC_OLD)
    assert old.title == "Fix the cart total rounding"  # the tool's own summary
    assert old.tags == ["claude-code", "project:shop", "branch:main"]
    assert old.metadata["tool_version"] == "1.0.51"
    assert old.metadata["source"].endswith("3f1c2a7e-5b0d-4e8a-9c61-2d7f4b8e1a90.jsonl")
    messages = {m.id: m for m in old.messages.all()}
    # Three lines of one response, one message: thinking, text, tool call in order.
    merged = messages["msg_01Hq8sV2"]
    assert [type(p) for p in merged.parts] == [ReasoningPart, type(merged.parts[1]),
                                               ToolCallPart]
    assert merged.metadata.usage is not None and merged.metadata.usage.output == 310
    assert merged.metadata.cost is not None and merged.metadata.cost.amount == 0.0123
    totals = old.usage()[""]
    assert totals.output == 310 + 42 and totals.messages == 2  # not 310 * 3
    assert totals.cost == {"USD": pytest.approx(0.0163)}
    result = messages["u-0006"].parts[0]
    assert isinstance(result, ToolResultPart) and result.is_error and result.name == "Bash"
    image = messages["u-0002"].parts[0]
    assert isinstance(image, FilePart) and image.blob is not None
    assert image.media_type == "image/png"
    assert old.blobs.get(image.blob)[:4] == b"\x89PNG"
    # A prompt starts a turn; the image pasted after the first prompt stays in it.
    assert [messages[i].turn for i in ("u-0001", "u-0002", "u-0009")] == [1, 1, 2]
    # Finished at the time of the turn's last line (09:01:00), not when imported.
    stats = old.stats()
    assert (stats.turns, stats.turn_seconds) == (1, 60.0)
    assert (stats.tool_calls, stats.tool_errors) == (1, 1)
    # isMeta notes and the malformed line are raw events, the latter with its error.
    raws = raw_events(store, CC_OLD, "claude_code.raw")
    assert [r["line"] for r in raws] == [7, 10]
    assert "not JSON" in raws[0]["error"] and raws[1]["record"]["isMeta"] is True
    first = next(f for f in report.files if f.session == CC_OLD)
    assert first.malformed == [7] and not first.torn


def test_claude_code_compaction_long_outputs_and_torn_line(
        store: fsstore.Store, sources: str) -> None:
    report = import_claude_code(store, os.path.join(sources, "claude-code"))
    new = store.read_session(CC_NEW)
    assert new.tags == ["claude-code", "project:shop", "branch:feature/tax"]
    summary = new.messages.get("n-0007")
    assert summary.role == "system"
    assert summary.metadata.extra["compaction"] == {"tool": "claude-code",
                                                    "trigger": "auto", "pre_tokens": 155000}
    long = new.messages.get("n-0005").parts[0]
    assert isinstance(long, ToolResultPart) and BLOB_KEY in long.output
    assert long.provider_metadata["transcript"]["bytes"] > 16 << 10
    assert new.blobs.get(long.output).startswith(b"src/shop/module_0000.py: ok")
    kinds = [r["record"].get("type") for r in raw_events(store, CC_NEW, "claude_code.raw")]
    assert kinds == ["file-history-snapshot", "system", "queue-operation"]
    entry = next(f for f in report.files if f.session == CC_NEW)
    assert entry.torn and entry.lines == 11
    size = os.path.getsize(entry.source)
    assert new.metadata["transcript"]["bytes"] < size  # the torn line is left unread


def test_claude_code_sub_agents_are_sessions_spawned_at_their_task_call(
        store: fsstore.Store, sources: str) -> None:
    import_claude_code(store, os.path.join(sources, "claude-code"))
    parent = store.read_session(CC_NEW)
    task = parent.messages.get("msg_02Kx")
    beside = store.read_session(f"{CC_NEW}-agent-5e6f7a8b")
    assert beside.spawned_by is not None
    assert (beside.spawned_by.parent, beside.spawned_by.seq) == (CC_NEW, task.seq)
    assert "sub-agent" in beside.tags and beside.metadata["agent_id"] == "5e6f7a8b"
    assert [m.role for m in beside.messages.all()] == ["user", "assistant", "tool",
                                                       "assistant"]
    # A sub-agent whose call the parent does not name: spawned at the parent's last
    # message from before its first line (14:00:04): the Task call's, here too.
    nested = store.read_session(f"{CC_NEW}-agent-a1b2c3d")
    assert nested.spawned_by is not None
    assert (nested.spawned_by.parent, nested.spawned_by.seq) == (CC_NEW, task.seq)
    lineage = store.lineage(CC_NEW)
    assert {r.session for r in lineage.children} == {f"{CC_NEW}-agent-5e6f7a8b",
                                                     f"{CC_NEW}-agent-a1b2c3d"}


def test_claude_code_sidechain_lines_in_a_session_file_are_a_spawned_session(
        store: fsstore.Store, sources: str) -> None:
    path = os.path.join(sources, "claude-code", "-home-ada-src-shop",
                        "c5d6e7f8-0a1b-4c2d-8e3f-405162738495.jsonl")
    report = import_claude_code(store, path)
    main, side = "cc-c5d6e7f8-0a1b-4c2d-8e3f-405162738495", \
        "cc-c5d6e7f8-0a1b-4c2d-8e3f-405162738495-sidechains"
    assert [(f.session, f.action) for f in report.files] == [(main, "created"),
                                                             (side, "created")]
    assert "from 1 transcripts" in report.describe()
    parent, child = store.read_session(main), store.read_session(side)
    assert [m.id for m in parent.messages.all()] == ["m-1", "msg_M1", "m-3", "msg_M2"]
    assert [m.id for m in child.messages.all()] == ["x-1", "msg_X1", "x-3", "msg_X2"]
    task = parent.messages.get("msg_M1")
    assert child.spawned_by is not None
    assert (child.spawned_by.parent, child.spawned_by.seq) == (main, task.seq)
    assert child.title == "grep for requests" and "sub-agent" in child.tags
    assert child.metadata["sidechains"] is True
    assert store.usage()[""].messages == 4  # each response counted once, in one session
    again = import_claude_code(store, path)
    assert [f.action for f in again.files] == ["unchanged", "unchanged"]


# --- Codex --------------------------------------------------------------------------------


def test_codex_rollouts_import_the_response_items_and_each_model_call_once(
        store: fsstore.Store, sources: str) -> None:
    report = import_codex(store, os.path.join(sources, "codex"))
    assert {f.action for f in report.files} == {"created"}
    main = store.read_session(CX_MAIN)
    assert main.title == "Why is the total off by a cent? See the shot."
    assert main.tags == ["codex", "project:shop", "branch:fix/rounding"]
    assert main.metadata["tool_version"] == "0.46.0" and main.metadata["model"] == "gpt-5"
    messages = main.messages.all()
    # event_msg user_message / agent_message repeat the items: not imported twice.
    assert [m.text for m in messages if m.role == "user"][1:] == [
        "Why is the total off by a cent? See the shot.", "Add a test."]
    assert sum(m.text == "Rounding per line; fixed in cart.py." for m in messages) == 1
    # Two model calls with usage, the repeated token_count left out.
    totals = main.usage(by="model")
    assert totals["gpt-5-codex"].input == 5200 + 5600
    assert totals["gpt-5-codex"].reasoning == 64 and totals["gpt-5-codex"].messages == 2
    first = next(m for m in messages if m.role == "assistant")
    assert [type(p) for p in first.parts] == [ReasoningPart, ToolCallPart]
    assert first.parts[1].arguments["command"] == ["bash", "-lc", "pytest -q"]
    failed = next(m for m in messages if m.id == "codex-L12").parts[0]
    assert isinstance(failed, ToolResultPart) and failed.is_error
    assert failed.output == "1 failed\n" and failed.name == "shell"
    patch = next(p for m in messages for p in m.parts
                 if isinstance(p, ToolCallPart) and p.name == "apply_patch")
    assert patch.arguments["input"].startswith("*** Begin Patch")
    image = messages[1].parts[1]
    assert isinstance(image, FilePart) and image.blob is not None
    compaction = next(m for m in messages if "compaction" in m.metadata.extra)
    assert compaction.role == "system" and compaction.text.startswith("Summary:")
    raws = raw_events(store, CX_MAIN, "codex.raw")
    assert {r.get("record", {}).get("type") for r in raws} >= {"turn_context", "event_msg"}
    assert any(r["line"] == 13 and "error" in r for r in raws)  # the malformed line
    entry = next(f for f in report.files if f.session == CX_MAIN)
    assert entry.malformed == [13] and entry.torn


def test_codex_legacy_rollouts_and_sub_agents(store: fsstore.Store, sources: str) -> None:
    import_codex(store, os.path.join(sources, "codex"))
    legacy = store.read_session(CX_LEGACY)
    assert legacy.title == "Rename foo to bar in util.py"
    assert [m.role for m in legacy.messages.all()] == ["user", "assistant", "tool",
                                                       "assistant"]
    sub = store.read_session(CX_SUB)
    assert sub.spawned_by is not None and sub.spawned_by.parent == CX_MAIN
    last = store.read_session(CX_MAIN).messages.last(1)[0]
    assert sub.spawned_by.seq == last.seq  # its last message from before the sub-agent
    assert sub.metadata["forked_from_session"] == CX_MAIN
    assert sub.metadata["agent_nickname"] == "reviewer"
    assert [m.role for m in sub.messages.all()] == ["system", "user", "assistant"]


# --- re-runs ------------------------------------------------------------------------------


def test_importing_again_changes_nothing(store: fsstore.Store, sources: str) -> None:
    import_claude_code(store, os.path.join(sources, "claude-code"))
    import_codex(store, os.path.join(sources, "codex"))
    before = {s: store.read_session(s).head for s in store.session_ids()}
    again = [import_claude_code(store, os.path.join(sources, "claude-code")),
             import_codex(store, os.path.join(sources, "codex"))]
    assert {f.action for r in again for f in r.files} == {"unchanged"}
    assert {s: store.read_session(s).head for s in store.session_ids()} == before


def test_a_grown_transcript_gets_its_new_lines_and_its_torn_line_once_whole(
        store: fsstore.Store, sources: str) -> None:
    path = os.path.join(sources, "claude-code", "-home-ada-src-shop",
                        "8a4e0b19-7c2d-4f3e-b6a5-91d0c3e2f7b4.jsonl")
    import_claude_code(store, path)
    with open(path, "rb") as file:
        data = file.read()
    torn_at = data.rindex(b"\n") + 1
    # The tool finishes the torn line (one more block of msg_02Kz) and writes another.
    whole = {"type": "assistant", "uuid": "n-0010", "timestamp": "2025-10-20T14:11:06.000Z",
             "sessionId": "8a4e0b19", "message": {
                 "id": "msg_02Kz", "type": "message", "role": "assistant",
                 "model": "claude-opus-4-1-20250805", "stop_reason": "end_turn",
                 "content": [{"type": "text", "text": "Done."}],
                 "usage": {"input_tokens": 3, "cache_read_input_tokens": 3000,
                           "output_tokens": 15}}}
    prompt = {"type": "user", "uuid": "n-0011", "timestamp": "2025-10-20T14:12:00.000Z",
              "message": {"role": "user", "content": "Thanks."}}
    with open(path, "wb") as file:
        file.write(data[:torn_at] + (json.dumps(whole) + "\n" + json.dumps(prompt)
                                     + "\n").encode())
    report = import_claude_code(store, path)
    assert [f.action for f in report.files] == ["appended"]
    assert report.files[0].lines == 2 and report.files[0].edits == 1
    session = store.read_session(CC_NEW)
    completed = session.messages.get("msg_02Kz")
    assert completed.text == "Moving tax into tax.py.\nDone." and completed.version == 2
    assert completed.metadata.finish_reason == "stop"
    assert session.usage()[""].output == 80 + 30 + 15  # the edit counts its usage once
    assert session.messages.get("n-0011").turn == completed.turn + 1
    # The new line names another session id: a resumed conversation, recorded.
    assert session.metadata["related_sessions"] == ["cc-8a4e0b19"]
    assert import_claude_code(store, path).files[0].action == "unchanged"


GROWN = ["claude-code/-home-ada-src-shop/3f1c2a7e-5b0d-4e8a-9c61-2d7f4b8e1a90.jsonl",
         "claude-code/-home-ada-src-shop/8a4e0b19-7c2d-4f3e-b6a5-91d0c3e2f7b4.jsonl",
         "codex/2025/10/29/rollout-2025-10-29T00-59-38-019a2d7a-41c4-78b1-b7cc-a45d62a89cd5.jsonl",
         "claude-code/-home-ada-src-shop/c5d6e7f8-0a1b-4c2d-8e3f-405162738495.jsonl"]


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(GROWN), cuts=st.lists(st.floats(0, 1), min_size=1, max_size=6))
# A first run that reads only the summary line creates the session with no output: the
# first prompt is in turn 1 all the same.
@example(name=GROWN[0], cuts=[0.0625])
def test_a_transcript_imported_as_it_grows_is_the_transcript_imported_whole(
        tmp_path_factory: pytest.TempPathFactory, name: str, cuts: list[float]) -> None:
    from fsstore.transcripts import import_source
    tool = name.split("/")[0]
    with open(os.path.join(FIXTURES, name), "rb") as file:
        data = file.read()
    root = tmp_path_factory.mktemp("grow")
    whole, grown = fsstore.open_store(str(root / "whole")), fsstore.open_store(
        str(root / "grown"))
    folder = root / "src" / os.path.dirname(name)
    folder.mkdir(parents=True)
    path = folder / os.path.basename(name)
    path.write_bytes(data)
    import_source(whole, tool, str(path))
    path.write_bytes(b"")
    # The tool writes it in pieces, cut anywhere (mid-line too); each piece imported.
    for cut in sorted(int(len(data) * c) for c in cuts) + [len(data)]:
        with open(path, "r+b") as file:
            file.seek(0, os.SEEK_END)
            file.write(data[file.tell():max(cut, file.tell())])
        import_source(grown, tool, str(path))
    assert fingerprint(grown) == fingerprint(whole)


def test_an_import_racing_another_on_the_same_transcript_imports_each_line_once(
        store: fsstore.Store, sources: str, tmp_path: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from fsstore.transcripts import import_source
    path = os.path.join(sources, GROWN[2])
    with open(path, "rb") as file:
        data = file.read()
    cut = data.index(b"\n", len(data) // 3) + 1
    with open(path, "wb") as file:
        file.write(data[:cut])
    import_source(store, "codex", path)
    with open(path, "wb") as file:
        file.write(data)
    monkeypatch.setattr(importer, "CHUNK_LINES", 2)
    real_open = importer._Run._open
    raced = []

    def open_after_another_import(self: Any) -> Any:
        if not raced:  # the other import reads the same cursor and gets the lock first
            raced.append(True)
            import_source(store, "codex", path)
        return real_open(self)

    monkeypatch.setattr(importer._Run, "_open", open_after_another_import)
    report = import_source(store, "codex", path)
    assert raced and [f.action for f in report.files] == ["unchanged"]
    clean = fsstore.open_store(str(tmp_path / "clean"))
    import_source(clean, "codex", path)
    assert fingerprint(store) == fingerprint(clean)


def test_a_changed_transcript_is_imported_whole_into_a_new_session(
        store: fsstore.Store, sources: str) -> None:
    path = os.path.join(sources, "claude-code", "-home-ada-src-shop",
                        "3f1c2a7e-5b0d-4e8a-9c61-2d7f4b8e1a90.jsonl")
    import_claude_code(store, path)
    with open(path, "rb") as file:
        data = file.read()
    with open(path, "wb") as file:
        file.write(data.replace(b"ship it", b"SHIP IT"))
    report = import_claude_code(store, path)
    entry = report.files[0]
    assert (entry.action, entry.session) == ("reimported", f"{CC_OLD}-r2")
    assert CC_OLD in (entry.note or "") and "changed" in entry.describe()
    assert store.read_session(f"{CC_OLD}-r2").messages.get("u-0009").text == \
        "Thanks, SHIP IT."
    assert store.read_session(CC_OLD).messages.get("u-0009").text == "Thanks, ship it."
    assert import_claude_code(store, path).files[0].action == "unchanged"


# (tool, the file first imported, the chunk record that crashes, lines a chunk)
CRASHES = [("codex", "2025/10", 1, 4), ("codex", "2025/10", 2, 4), ("codex", "2025/10", 3, 3),
           ("claude-code", "-home-ada-src-shop/8a4e0b19-7c2d-4f3e-b6a5-91d0c3e2f7b4.jsonl",
            2, 2),
           # A response over lines 4 to 6, a chunk a line: the crash falls in its middle.
           ("claude-code", "-home-ada-src-shop/3f1c2a7e-5b0d-4e8a-9c61-2d7f4b8e1a90.jsonl",
            5, 1)]


@pytest.mark.parametrize("tool,first,crash_at,chunk", CRASHES)
def test_a_crash_between_a_chunk_and_its_record_imports_each_line_once(
        store: fsstore.Store, sources: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
        tool: str, first: str, crash_at: int, chunk: int) -> None:
    from fsstore.transcripts import import_source
    folder = os.path.join(sources, tool)
    clean = fsstore.open_store(str(tmp_path / "clean"))
    monkeypatch.setattr(importer, "CHUNK_LINES", chunk)
    import_source(clean, tool, os.path.join(folder, first))
    real = importer._Run._record
    calls = {"n": 0}

    def crash_on_second(self: Any, last: Any, hasher: Any) -> None:
        calls["n"] += 1
        if calls["n"] == crash_at:
            if self.session is not None:
                self.session.close()
            raise OSError("power cut")  # the chunk's records are in, its end is not
        real(self, last, hasher)

    monkeypatch.setattr(importer._Run, "_record", crash_on_second)
    report = import_source(store, tool, os.path.join(folder, first))
    assert [f.action for f in report.files] == ["failed"]
    monkeypatch.setattr(importer._Run, "_record", real)
    import_source(store, tool, os.path.join(folder, first))
    assert fingerprint(store) == fingerprint(clean)


LEGACY_ROLLOUT = "codex/2025/08/14/rollout-2025-08-14T10-02-11-5973b6c0-94b8-487b-a530-" \
    "2aeb6098ae0e.jsonl"


def power_loss_states_of_an_import(tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                                   stride: int, name: str = LEGACY_ROLLOUT) -> int:
    """Import a rollout through the crash simulator; at every ``stride``-th I/O call,
    build each state a power loss could leave, import again there, and compare with an
    import that never crashed. The number of states judged."""
    import random

    from crashsim import VARIANTS, CrashSimIO

    from fsstore.transcripts import import_source
    monkeypatch.setattr(importer, "CHUNK_LINES", 3)
    tool, path = name.split("/")[0], os.path.join(FIXTURES, name)
    clean = fsstore.open_store(str(tmp_path / "clean"))
    import_source(clean, tool, path)
    expected = fingerprint(clean)
    root = tmp_path / "store"
    fsstore.open_store(str(root))
    io = CrashSimIO(str(root))
    calls, judged = [0], [0]

    def crash_here() -> None:
        calls[0] += 1
        if calls[0] % stride:
            return
        for variant in VARIANTS:
            dest = str(tmp_path / f"crash-{calls[0]}-{variant}")
            if not io.materialize_unseen(dest, variant, random.Random(calls[0])):
                continue
            judged[0] += 1
            again = fsstore.open_store(dest, create=False)
            assert_referenced_blobs_whole(again)
            report = import_source(again, tool, path)
            assert not [f for f in report.files if f.action == "failed"], report.describe()
            assert fingerprint(again) == expected, (calls[0], variant)
            shutil.rmtree(dest)

    io.on_op = crash_here
    import_source(fsstore.open_store(str(root), io=io), tool, path)
    io.on_op = None
    return judged[0]


def assert_referenced_blobs_whole(store: fsstore.Store) -> None:
    """Every blob a record of the store refers to is there, with its bytes. (An
    AssertionError: the crash simulator's callback runs inside writes that catch
    fsstore's errors.)"""
    for session_id in store.session_ids():
        reader = store.read_session(session_id)
        stack: list[Any] = [e.data for e in reader.events()]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                if BLOB_KEY in item:
                    try:
                        reader.blobs.verify_blob(item)
                    except fsstore.FsStoreError as exc:
                        raise AssertionError(f"{session_id}: {exc}") from exc
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)


def test_every_power_loss_state_of_an_import_imports_each_line_once_when_run_again(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    assert power_loss_states_of_an_import(tmp_path, monkeypatch, stride=7) > 10


def test_no_power_loss_state_of_an_import_refers_to_a_blob_it_lost(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # GROWN[0] holds a long tool output and images: blobs written in a batch per chunk.
    assert power_loss_states_of_an_import(tmp_path, monkeypatch, stride=3,
                                          name=GROWN[0]) > 10


@pytest.mark.long
@pytest.mark.parametrize("name", [LEGACY_ROLLOUT, GROWN[0], GROWN[2], GROWN[3]])
def test_every_power_loss_state_of_an_import_at_every_call(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    power_loss_states_of_an_import(tmp_path, monkeypatch, stride=1, name=name)


def test_a_dry_run_counts_and_writes_nothing(store: fsstore.Store, sources: str) -> None:
    dry = import_codex(store, os.path.join(sources, "codex"), dry_run=True)
    assert store.session_ids() == [] and dry.dry_run
    real = import_codex(store, os.path.join(sources, "codex"))
    assert [(f.session, f.messages, f.lines, f.bytes) for f in dry.files] == \
        [(f.session, f.messages, f.lines, f.bytes) for f in real.files]
    assert "would import 16 messages" in dry.describe()


# --- hostile input ------------------------------------------------------------------------


def test_ids_from_a_transcript_become_session_ids_only_through_the_allowlist(
        store: fsstore.Store, tmp_path: Any) -> None:
    folder = tmp_path / "claude"
    (folder / "proj").mkdir(parents=True)
    agent = {"type": "user", "sessionId": "../../../etc/passwd", "agentId": "../x\x00y",
             "uuid": "a\nb", "message": {"role": "user", "content": "hi"}}
    (folder / "proj" / "agent-1.jsonl").write_text(json.dumps(agent) + "\n")
    os.mkfifo(folder / "proj" / "fifo.jsonl")  # would block a read forever: skipped
    os.symlink("/etc/hostname", folder / "proj" / "link.jsonl")  # a link: skipped
    (folder / "proj" / "CON.jsonl").write_text(json.dumps(
        {"type": "user", "message": {"role": "user", "content": "\x1b[31mred"}}) + "\n")
    rollout = tmp_path / "codex" / "rollout-x.jsonl"
    rollout.parent.mkdir()
    rollout.write_text(json.dumps({"type": "session_meta", "timestamp": "x", "payload": {
        "id": "../" * 60, "cwd": "/\x00", "source": {"subagent": {"thread_spawn": {
            "parent_thread_id": "/etc"}}}}}) + "\n")
    import_claude_code(store, str(folder))
    import_codex(store, str(tmp_path / "codex"))
    sessions = os.path.join(str(store.path), "sessions")
    for session_id in store.session_ids():
        fsstore.layout.check_session_id(session_id, new=True)
        assert os.path.dirname(os.path.realpath(os.path.join(sessions, session_id))) == \
            os.path.realpath(sessions)
    assert len(store.session_ids()) == 3
    assert session_id_for("cc", "CON") == "cc-CON"
    assert session_id_for("cc", "a/b") != session_id_for("cc", "ab")
    red = store.read_session("cc-CON")
    assert red.title == "[31mred"  # the escape character is not kept


def test_odd_lines_are_kept_as_raw_events_and_never_stop_an_import(
        store: fsstore.Store, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from fsstore.transcripts import common
    monkeypatch.setattr(common, "MAX_LINE_BYTES", 2000)
    folder = tmp_path / "odd" / "p"
    folder.mkdir(parents=True)
    lines = [
        # A result whose call was on a line lost to a crash: stored as an orphan.
        {"type": "user", "uuid": "r1", "message": {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_gone", "content": "ok"}]}},
        # Usage fsstore refuses (negative): the line is a raw event with the error.
        {"type": "assistant", "uuid": "a1", "message": {
            "id": "msg_bad", "role": "assistant", "content": [{"type": "text", "text": "x"}],
            "usage": {"input_tokens": -5, "output_tokens": 1}}},
        # A number msgpack cannot hold.
        {"type": "file-history-snapshot", "size": 2 ** 70},
        {"type": "progress", "data": "y" * 5000},  # over the (patched) line limit
        [1, 2, 3],
        {"type": "user", "uuid": "u2", "message": {"role": "user", "content": "still here"}},
    ]
    (folder / "odd.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    report = import_claude_code(store, str(tmp_path / "odd"))
    entry = report.files[0]
    assert entry.action == "created" and entry.malformed == [4, 5]
    session = store.read_session("cc-odd")
    assert [m.id for m in session.messages.all()] == ["r1", "u2"]
    assert session.messages.get("r1").parts[0].orphan
    raws = {r["line"]: r for r in raw_events(store, "cc-odd", "claude_code.raw")}
    assert sorted(raws) == [2, 3, 4, 5]
    assert "not a message" in raws[2]["error"] and "not storable" in raws[3]["error"]
    assert raws[4]["bytes"] == 5000 + len('{"type": "progress", "data": ""}') + 1
    assert "a JSON list" in raws[5]["error"]
    assert import_claude_code(store, str(tmp_path / "odd")).files[0].action == "unchanged"


def test_what_an_import_keeps_between_runs_stays_small_whatever_the_transcript_says(
        store: fsstore.Store, tmp_path: Any) -> None:
    claude = tmp_path / "claude" / "p"
    claude.mkdir(parents=True)
    calls = [{"type": "assistant", "uuid": f"a{n}", "message": {
        "id": f"msg_{n}", "role": "assistant", "content": [
            {"type": "tool_use", "id": f"toolu_{n}", "name": "T" * 10_000, "input": {}}]}}
        for n in range(300)]
    (claude / "big.jsonl").write_text("".join(json.dumps(c) + "\n" for c in calls))
    rollout = tmp_path / "codex" / "rollout-x.jsonl"
    rollout.parent.mkdir()
    junk = {f"k{n}": n for n in range(50_000)}
    rollout.write_text("".join(json.dumps(line) + "\n" for line in [
        {"type": "session_meta", "payload": {"id": "x1", "cli_version": "v" * 10_000}},
        {"type": "response_item", "payload": {"type": "message", "role": "assistant",
                                              "content": [{"type": "output_text",
                                                           "text": "hi"}]}},
        {"type": "event_msg", "payload": {"type": "token_count", "info": {
            "total_token_usage": {"input_tokens": 5, **junk},
            "last_token_usage": {"input_tokens": 5}}}}]))
    assert {f.action for f in import_claude_code(store, str(tmp_path / "claude")).files} \
        == {"created"}
    assert {f.action for f in import_codex(store, str(tmp_path / "codex")).files} \
        == {"created"}
    for session_id in ("cc-big", "codex-x1"):
        manifest = os.path.join(str(store.path), "sessions", session_id, "session.json")
        assert os.path.getsize(manifest) < 64 << 10
    assert store.read_session("codex-x1").messages.all()[0].metadata.usage.input == 5


def test_the_line_reader_leaves_a_torn_line_and_skips_an_oversize_one(tmp_path: Any) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"a":1}\n' + b"x" * 50 + b"\n" + b'{"b":2}\n{"c":')
    reader = LineReader(str(path), 0, 1, hashlib.sha256(), max_line=20)
    lines = list(reader)
    assert [(line.number, line.data) for line in lines] == [(1, b'{"a":1}'), (2, None),
                                                            (3, b'{"b":2}')]
    assert lines[1].end - lines[1].start == 51
    assert reader.hasher.hexdigest() == hashlib.sha256(
        path.read_bytes()[:lines[-1].end]).hexdigest()


# --- the command line ---------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    from fsstore.cli.transcripts import add_import_source_arguments
    parser = argparse.ArgumentParser()
    parser.add_argument("--store")
    add_import_source_arguments(parser)
    return parser.parse_args(argv)


def test_import_source_options_join_a_parser_that_has_some_of_them() -> None:
    from fsstore.cli.transcripts import add_import_source_arguments
    parser = argparse.ArgumentParser()
    parser.add_argument("--dry-run", action="store_true", help="the command's own")
    add_import_source_arguments(parser)
    args = parser.parse_args(["--dry-run", "--follow"])
    assert (args.dry_run, args.follow, args.poll_interval, args.json) == (True, True, 1.0,
                                                                          False)


def test_run_import_source_prints_what_it_imports(
        tmp_path: Any, sources: str, capsys: pytest.CaptureFixture[str]) -> None:
    from fsstore.cli.transcripts import run_import_source
    target = str(tmp_path / "cli-store")
    folder = os.path.join(sources, "codex")
    assert run_import_source("codex", folder, parse(["--store", target, "--dry-run"])) == 0
    out = capsys.readouterr().out
    assert "would import 16 messages" in out and not os.path.exists(target)
    assert run_import_source("codex", folder, parse(["--store", target])) == 0
    assert f"created {CX_MAIN}" in capsys.readouterr().out
    assert run_import_source("codex", folder, parse(["--store", target, "--json"])) == 0
    rows = [json.loads(row) for row in capsys.readouterr().out.splitlines()]
    assert {row["action"] for row in rows} == {"unchanged"} and rows[0]["torn"]
    with pytest.raises(fsstore.TranscriptNotFound):
        run_import_source("claude-code", str(tmp_path / "none"), parse(["--store", target]))


def test_fsstore_import_hands_a_source_name_to_the_transcript_import(
        tmp_path: Any, sources: str, capsys: pytest.CaptureFixture[str]) -> None:
    from fsstore.cli import main
    target = str(tmp_path / "cli-store")
    folder = os.path.join(sources, "codex")
    assert main(["--store", target, "import", "codex", folder, "--dry-run"]) == 0
    assert "would import 16 messages" in capsys.readouterr().out
    assert not os.path.exists(target)
    assert main(["--store", target, "import", "codex", folder]) == 0
    assert f"created {CX_MAIN}" in capsys.readouterr().out
    # the options of one kind of import are refused on the other, naming them
    assert main(["--store", target, "import", "codex", folder, "--replace"]) == 2
    assert "--replace are for export files" in capsys.readouterr().err
    assert main(["--store", target, "import", str(tmp_path / "x.jsonl"), "--dry-run"]) == 2
    assert "--dry-run, --follow and --json are for" in capsys.readouterr().err
    assert main(["--store", target, "import", str(tmp_path / "x.jsonl"), folder]) == 2
    assert "one too many" in capsys.readouterr().err


def test_run_import_source_follows_until_interrupted(
        tmp_path: Any, sources: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import fsstore.transcripts as transcripts
    from fsstore.cli.transcripts import run_import_source
    seen: list[dict[str, Any]] = []

    def follow(store: Any, source: str, path: Any, *, poll_interval: float,
               on_report: Any) -> None:
        seen.append({"source": source, "interval": poll_interval})
        on_report(transcripts.import_source(store, source, path))
        on_report(transcripts.import_source(store, source, path))  # nothing new: quiet

    monkeypatch.setattr(transcripts, "follow", follow)
    args = parse(["--store", str(tmp_path / "s"), "--follow", "--poll-interval", "0.5"])
    assert run_import_source("codex", os.path.join(sources, "codex"), args) == 0
    assert seen == [{"source": "codex", "interval": 0.5}]
    captured = capsys.readouterr()
    assert captured.out.count("codex: imported") == 1 and "mirroring" in captured.err


# --- following a writer -------------------------------------------------------------------

WRITER = r"""
import json, sys, time
path, count = sys.argv[1], int(sys.argv[2])
for n in range(count):
    role = "user" if n % 2 == 0 else "assistant"
    record = {"type": role, "uuid": f"w-{n}", "timestamp": "2025-12-01T10:00:00Z",
              "message": {"role": role, "content": [{"type": "text", "text": f"line {n}"}]}}
    if role == "assistant":
        record["message"].update(id=f"msg_w{n}", model="m", usage={"input_tokens": 1,
                                                                   "output_tokens": 1})
    data = (json.dumps(record) + "\n").encode()
    with open(path, "ab") as file:  # each line in two writes: a torn line in between
        file.write(data[:10]); file.flush(); time.sleep(0.005)
        file.write(data[10:]); file.flush()
    time.sleep(0.002)
print("DONE", flush=True)
"""


def test_follow_mirrors_the_lines_a_writer_process_appends_exactly_once(
        store: fsstore.Store, tmp_path: Any) -> None:
    from fsstore.transcripts import follow
    folder = tmp_path / "projects" / "p"
    folder.mkdir(parents=True)
    path = folder / "5b2f.jsonl"
    path.write_bytes(b"")
    count = 60
    done = threading.Event()
    reports: list[Any] = []

    def finished() -> bool:
        return done.is_set() and reports[-1].files[0].lines == 0 and \
            store.has_session("cc-5b2f") and \
            store.read_session("cc-5b2f").messages.count() == count

    runner = threading.Thread(target=follow, args=(store, "claude-code",
                                                   str(tmp_path / "projects")),
                              kwargs={"poll_interval": 0.05, "on_report": reports.append,
                                      "stop": finished})
    runner.start()
    env = dict(os.environ, PYTHONPATH=ROOT)
    writer = subprocess.run([sys.executable, "-c", WRITER, str(path), str(count)],
                            capture_output=True, text=True, timeout=120, env=env)
    assert writer.stdout.strip() == "DONE", writer.stderr
    done.set()
    runner.join(timeout=120)
    assert not runner.is_alive()
    session = store.read_session("cc-5b2f")
    texts = [m.text for m in session.messages.all()]
    assert texts == [f"line {n}" for n in range(count)]
    assert session.usage()[""].output == count // 2
    assert sum(r.files[0].lines for r in reports if r.files) == count
    assert session.metadata["transcript"]["bytes"] == os.path.getsize(path)
    time.sleep(0)


def test_finish_turn_stamps_its_record_at_the_time_given(store: fsstore.Store) -> None:
    with store.create_session("timed") as session:
        session.messages.append({"role": "user", "parts": [{"type": "text", "text": "hi"}]},
                                ts=1_000.0)
        with pytest.raises(fsstore.InvalidEvent):
            session.finish_turn(ts=float("nan"))  # refused, nothing written
        session.finish_turn(ts=1_090.5)
    finished = [e for e in store.read_session("timed").events(include_internal=True)
                if e.kind == "fsstore.turn_finished"]
    assert [e.ts for e in finished] == [1_090.5]
    assert store.read_session("timed").stats().turn_seconds == 90.5
