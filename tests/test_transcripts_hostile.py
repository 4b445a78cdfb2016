"""fsstore/transcripts against hostile and odd transcripts: files swapped under the
import, same-size replacements, split responses whose usage differs, token totals that
go backwards, and the report of a file holding two sessions. Also the blob batch an
import writes its attachments with (fsstore/blobs.py, BlobBatch)."""

from __future__ import annotations

import json
import os
import shutil
import threading
from typing import Any

import pytest

import fsstore
from fsstore.blobs import BlobBatch
from fsstore.transcripts import claude_code, import_claude_code, import_codex, import_source

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "fixtures", "transcripts")
SIDECHAINS = "c5d6e7f8-0a1b-4c2d-8e3f-405162738495"


@pytest.fixture
def store(tmp_path: Any) -> fsstore.Store:
    return fsstore.open_store(str(tmp_path / "store"))


def claude_line(kind: str, uuid: str, ts: str, message: dict[str, Any],
                session: str = "11111111-2222-4333-8444-555555555555") -> str:
    return json.dumps({"type": kind, "uuid": uuid, "sessionId": session,
                       "timestamp": f"2025-07-01T09:00:{ts}.000Z", "isSidechain": False,
                       "message": message}) + "\n"


def write(path: Any, lines: list[str]) -> str:
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        file.writelines(lines)
    return str(path)


# --- reports ------------------------------------------------------------------------------


def test_a_file_with_sidechains_reports_each_session_its_own_lines_and_bytes(
        store: fsstore.Store, tmp_path: Any) -> None:
    source = os.path.join(FIXTURES, "claude-code", "-home-ada-src-shop", f"{SIDECHAINS}.jsonl")
    with open(source, "rb") as file:
        lines = file.read().splitlines(keepends=True)
    # A malformed line too: the session of the file keeps it, and it is counted once.
    path = str(tmp_path / "p" / f"{SIDECHAINS}.jsonl")
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as file:
        file.writelines([*lines[:2], b"{not json\n", *lines[2:]])
    side = sum(1 for line in lines if json.loads(line).get("isSidechain"))
    side_bytes = sum(len(line) for line in lines if json.loads(line).get("isSidechain"))
    report = import_claude_code(store, path)
    main, chains = report.files
    assert chains.session.endswith("-sidechains")
    assert (chains.lines, chains.bytes, chains.messages) == (side, side_bytes, 4)
    assert (main.lines, main.bytes) == (len(lines) + 1 - side,
                                       os.path.getsize(path) - side_bytes)
    assert (main.malformed, chains.malformed) == ([3], [])
    assert report.bytes == os.path.getsize(path) and report.malformed == 1
    assert f"{side} lines, 4 messages, 0 raw events, {side_bytes} bytes" in chains.describe()


def test_fsstore_import_claude_code_imports_the_fixtures_and_reports_each_session(
        tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from fsstore.cli import main
    store_path = str(tmp_path / "store")
    folder = os.path.join(FIXTURES, "claude-code")
    assert main(["--store", store_path, "import", "claude-code", folder]) in (0, None)
    out = capsys.readouterr().out.splitlines()
    created = [line for line in out if line.startswith("created ")]
    assert len(created) == 6 and out[-1].startswith("claude-code: imported 30 messages")
    files = [os.path.join(w, n) for w, _d, names in os.walk(folder) for n in names
             if n.endswith(".jsonl")]
    whole = 0  # the bytes of complete lines: a torn last line is left for later
    for name in files:
        with open(name, "rb") as file:
            data = file.read()
        whole += data.rfind(b"\n") + 1
    assert f"{whole} bytes from 5 transcripts" in out[-1]
    assert main(["--store", store_path, "import", "claude-code", folder]) in (0, None)
    again = capsys.readouterr().out.splitlines()
    assert again == ["claude-code: imported 0 messages, 0 bytes from 5 transcripts "
                     "(0 new sessions, 6 unchanged, 0 failed, 0 malformed lines)"]


# --- usage --------------------------------------------------------------------------------


def test_a_split_response_keeps_the_largest_usage_its_lines_give(
        store: fsstore.Store, tmp_path: Any) -> None:
    def part(n: int, output: int) -> str:
        return claude_line("assistant", f"a-{n}", f"0{n}", {
            "id": "msg_S", "role": "assistant", "model": "claude-sonnet-4",
            "content": [{"type": "text", "text": f"part {n}"}],
            "usage": {"input_tokens": 50, "output_tokens": output}})

    path = write(tmp_path / "p" / "11111111-2222-4333-8444-555555555555.jsonl", [
        claude_line("user", "u-1", "00", {"role": "user", "content": "hi"}),
        part(1, 40), part(2, 3)])  # a streamed line with a partial count comes last
    import_claude_code(store, path)
    reader = store.read_session("cc-11111111-2222-4333-8444-555555555555")
    message = reader.messages.get("msg_S")
    assert [p.text for p in message.parts] == ["part 1", "part 2"]  # type: ignore[union-attr]
    assert message.metadata.usage is not None
    assert (message.metadata.usage.input, message.metadata.usage.output) == (50, 40)


def codex_rollout(path: Any, totals: list[int]) -> str:
    lines = [{"timestamp": "2025-10-29T00:00:00Z", "type": "session_meta",
              "payload": {"id": "019a0000-0000-7000-8000-000000000001", "cwd": "/w",
                          "cli_version": "0.46.0"}},
             {"timestamp": "2025-10-29T00:00:01Z", "type": "response_item",
              "payload": {"type": "message", "role": "user",
                          "content": [{"type": "input_text", "text": "go"}]}}]
    for n, total in enumerate(totals):
        if n:
            lines.append({"timestamp": f"2025-10-29T00:00:1{n}Z", "type": "response_item",
                          "payload": {"type": "message", "role": "user",
                                      "content": [{"type": "input_text", "text": "more"}]}})
        lines.append({"timestamp": f"2025-10-29T00:00:1{n}Z", "type": "response_item",
                      "payload": {"type": "message", "role": "assistant",
                                  "content": [{"type": "output_text", "text": f"r{n}"}]}})
        lines.append({"timestamp": f"2025-10-29T00:00:1{n}Z", "type": "event_msg",
                      "payload": {"type": "token_count", "info": {"total_token_usage": {
                          "input_tokens": total, "output_tokens": total // 10}}}})
    return write(path, [json.dumps(line) + "\n" for line in lines])


def test_codex_totals_that_go_backwards_give_the_call_its_usage(
        store: fsstore.Store, tmp_path: Any) -> None:
    # The totals start again (a resumed session in a new process): the second call's
    # use is its totals, not a negative difference dropped.
    path = codex_rollout(tmp_path / "2025" / "10" / "29" / "rollout-2025-10-29T00-00-00-"
                         "019a0000-0000-7000-8000-000000000001.jsonl", [1000, 300, 500])
    import_codex(store, path)
    reader = store.read_session("codex-019a0000-0000-7000-8000-000000000001")
    usages = [(m.metadata.usage.input, m.metadata.usage.output) if m.metadata.usage else None
              for m in reader.messages.all() if m.role == "assistant"]
    assert usages == [(1000, 100), (300, 30), (200, 20)]


# --- files that change under the import ---------------------------------------------------


def test_a_transcript_replaced_by_another_of_the_same_size_and_mtime_is_imported_anew(
        store: fsstore.Store, tmp_path: Any) -> None:
    name = "11111111-2222-4333-8444-555555555555"
    path = write(tmp_path / "p" / f"{name}.jsonl",
                 [claude_line("user", "u-1", "00", {"role": "user", "content": "first"})])
    import_claude_code(store, path)
    stat = os.stat(path)
    # Another file of the same size, its mtime kept (cp -p, rsync -a), moved over it.
    other = write(tmp_path / "q" / f"{name}.jsonl",
                  [claude_line("user", "u-1", "00", {"role": "user", "content": "FIRST"})])
    assert os.path.getsize(other) == stat.st_size
    os.utime(other, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(other, path)
    report = import_claude_code(store, path)
    assert [(f.action, f.session) for f in report.files] == [("reimported", f"cc-{name}-r2")]
    assert store.read_session(f"cc-{name}-r2").messages.get("u-1").text == "FIRST"
    assert store.read_session(f"cc-{name}").messages.get("u-1").text == "first"


def test_a_transcript_swapped_for_a_link_after_discovery_is_not_read(
        store: fsstore.Store, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = write(tmp_path / "outside" / "secret.txt",
                   [claude_line("user", "u-1", "00", {"role": "user", "content": "secret"})])
    folder = tmp_path / "projects" / "p"
    os.makedirs(folder)
    link = str(folder / "11111111-2222-4333-8444-555555555555.jsonl")
    os.symlink(secret, link)
    assert claude_code.discover(str(tmp_path / "projects")) == []  # a link is not listed
    # ... but one put in place of a file between the listing and the read is refused.
    monkeypatch.setattr(claude_code, "discover", lambda root: [link])
    report = import_source(store, "claude-code", str(tmp_path / "projects"))
    assert [f.action for f in report.files] == ["failed"]
    assert "symlink" in (report.files[0].note or "")
    assert store.session_ids() == []


def test_a_fifo_named_like_a_transcript_is_refused_not_waited_on(
        store: fsstore.Store, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "projects" / "p"
    os.makedirs(folder)
    fifo = str(folder / "11111111-2222-4333-8444-555555555555.jsonl")
    os.mkfifo(fifo)
    monkeypatch.setattr(claude_code, "discover", lambda root: [fifo])
    done = threading.Event()

    def unblock() -> None:
        # Were the read to wait for a writer (the defect), one comes, so the test
        # fails instead of hanging.
        if not done.wait(10):
            os.close(os.open(fifo, os.O_WRONLY))

    thread = threading.Thread(target=unblock, daemon=True)
    thread.start()
    try:
        report = import_source(store, "claude-code", str(tmp_path / "projects"))
    finally:
        done.set()
        thread.join()
    assert [f.action for f in report.files] == ["failed"]
    assert "regular file" in (report.files[0].note or "")


def test_the_same_session_id_in_two_project_folders_gives_two_sessions(
        store: fsstore.Store, tmp_path: Any) -> None:
    name = "11111111-2222-4333-8444-555555555555"
    for project, text in (("a", "in a"), ("b", "in b")):
        write(tmp_path / "projects" / project / f"{name}.jsonl",
              [claude_line("user", "u-1", "00", {"role": "user", "content": text})])
    report = import_claude_code(store, str(tmp_path / "projects"))
    assert sorted(f.session for f in report.files) == [f"cc-{name}", f"cc-{name}-r2"]
    texts = {store.read_session(f.session).messages.get("u-1").text for f in report.files}
    assert texts == {"in a", "in b"}
    again = import_claude_code(store, str(tmp_path / "projects"))
    assert {f.action for f in again.files} == {"unchanged"}


# --- the blob batch -----------------------------------------------------------------------


def test_a_blob_batch_stores_its_blobs_on_commit_and_removes_them_on_discard(
        store: fsstore.Store) -> None:
    session = store.create_session("s")
    batch = BlobBatch(session.blobs)
    refs = [batch.put(f"blob {n}".encode() * 100, "text/plain") for n in range(3)]
    again = batch.put(b"blob 0" * 100, "text/plain")  # the same bytes: one blob
    assert again == refs[0]
    batch.commit()
    assert [session.blobs.get(ref) for ref in refs] == \
        [f"blob {n}".encode() * 100 for n in range(3)]
    dropped = batch.put(b"never committed", "application/octet-stream")
    batch.discard()
    assert not session.blobs.exists(dropped)
    names = [n for w, _d, ns in os.walk(session.blobs.path) for n in ns]
    assert len(names) == 3  # no temp file left
    session.close()


def test_a_blob_batch_commits_by_itself_when_it_holds_many(
        store: fsstore.Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from fsstore import blobs
    monkeypatch.setattr(blobs, "MAX_STAGED", 2)
    session = store.create_session("s")
    batch = BlobBatch(session.blobs)
    first = batch.put(b"one", None)
    second = batch.put(b"two", None)
    assert session.blobs.exists(first) and session.blobs.exists(second)
    batch.discard()
    session.close()
    shutil.rmtree(session.path, ignore_errors=True)


# --- records the store refuses --------------------------------------------------------------


def test_a_record_or_message_the_store_refuses_is_kept_whole_in_a_blob(
        store: fsstore.Store, tmp_path: Any) -> None:
    deep = json.loads('{"a":' * 300 + "1" + "}" * 300)  # JSON parses it; msgpack won't
    path = write(tmp_path / "p" / "11111111-2222-4333-8444-555555555555.jsonl", [
        claude_line("user", "u-1", "00", {"role": "user", "content": "hi"}),
        claude_line("assistant", "a-1", "01", {
            "id": "msg_D", "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "X", "input": deep}]}),
        # A lone surrogate (valid JSON escape) in a message: refused by msgpack.
        claude_line("user", "\ud800u", "02", {"role": "user", "content": "lone"}),
    ])
    report = import_claude_code(store, path)
    assert [f.action for f in report.files] == ["created"]
    reader = store.read_session("cc-11111111-2222-4333-8444-555555555555")
    raw = {e.data["line"]: e.data for e in reader.events() if e.kind == "claude_code.raw"}
    assert set(raw) == {2, 3}
    kept = {line: json.loads(reader.blobs.get(data["kept"])) for line, data in raw.items()}
    assert json.dumps(deep) in json.dumps(kept[2])
    assert "lone" in json.dumps(kept[3])


def test_a_followed_transcript_replaced_by_a_longer_one_is_imported_anew(
        store: fsstore.Store, tmp_path: Any) -> None:
    from fsstore.transcripts.importer import Memo
    name = "11111111-2222-4333-8444-555555555555"
    path = write(tmp_path / "p" / f"{name}.jsonl",
                 [claude_line("user", "u-1", "00", {"role": "user", "content": "first"})])
    memo = Memo()  # what a --follow keeps between reads
    import_source(store, "claude-code", path, memo=memo)
    other = write(tmp_path / "q" / f"{name}.jsonl", [
        claude_line("user", "u-1", "00", {"role": "user", "content": "FIRST"}),
        claude_line("user", "u-2", "01", {"role": "user", "content": "second"})])
    os.replace(other, path)
    report = import_source(store, "claude-code", path, memo=memo)
    assert [(f.action, f.session) for f in report.files] == [("reimported", f"cc-{name}-r2")]
    assert [m.text for m in store.read_session(f"cc-{name}-r2").messages.all()] == \
        ["FIRST", "second"]


def test_the_sidechains_of_a_changed_transcript_are_spawned_by_its_new_session(
        store: fsstore.Store, tmp_path: Any) -> None:
    source = os.path.join(FIXTURES, "claude-code", "-home-ada-src-shop", f"{SIDECHAINS}.jsonl")
    path = str(tmp_path / "p" / f"{SIDECHAINS}.jsonl")
    os.makedirs(os.path.dirname(path))
    shutil.copy(source, path)
    import_claude_code(store, path)
    with open(path, encoding="utf-8") as file:
        data = file.read()
    with open(path, "w", encoding="utf-8") as file:
        file.write(data.replace("Which files import requests?", "Which files import REQUESTS?"))
    report = import_claude_code(store, path)
    assert [(f.action, f.session, f.spawned_by) for f in report.files] == [
        ("reimported", f"cc-{SIDECHAINS}-r2", None),
        ("reimported", f"cc-{SIDECHAINS}-sidechains-r2", f"cc-{SIDECHAINS}-r2")]
    origin = store.read_session(f"cc-{SIDECHAINS}-sidechains-r2").spawned_by
    assert origin is not None and origin.parent == f"cc-{SIDECHAINS}-r2"


def test_a_cursor_without_an_inode_takes_an_untouched_file_as_unchanged_unread(
        store: fsstore.Store, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from fsstore.transcripts import importer
    name = "11111111-2222-4333-8444-555555555555"
    path = write(tmp_path / "p" / f"{name}.jsonl",
                 [claude_line("user", "u-1", "00", {"role": "user", "content": "first"})])
    import_claude_code(store, path)
    session = store.open_session(f"cc-{name}")
    cursor = dict(session.metadata["transcript"])
    del cursor["ino"]  # as an earlier version wrote it
    session.save_session_with_updates(
        [], metadata={**session.metadata, "transcript": cursor})
    session.close()
    hashed: list[str] = []
    real = importer.hash_prefix
    monkeypatch.setattr(importer, "hash_prefix",
                        lambda p, size: hashed.append(p) or real(p, size))
    assert [f.action for f in import_claude_code(store, path).files] == ["unchanged"]
    assert hashed == []
