"""Reclaim of deleted messages (fsstore/reclaim_messages.py, through reclaim.py): a
vacuum rewrites the add and edit records of messages deleted past ``message_grace`` as
redacted records, so their content leaves the log's bytes while every read of the live
messages, the usage fold, the stats, each checkpoint's view, the message index and the
ids a delete took stay what they were, in every crash state of the vacuum too."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from crashsim import CrashSimIO

import fsstore
from fsstore import SnapshotPolicy, layout
from fsstore.errors import MessageExists
from fsstore.fsio import FileIO
from fsstore.log import LogReader
from fsstore.message_types import MessageMetadata, TokenUsage
from fsstore.vacuum import Removed

POLICY = SnapshotPolicy(every_events=None, every_bytes=None, keep=3)
PAD = "filler that pushes the messages into sealed segments " * 4
SECRET = "zq-secret-{}-content"


def open_store(root, io=None) -> fsstore.Store:
    return fsstore.open_store(root, create=False, io=io, snapshots=POLICY)


def fill(session, n: int = 12) -> None:
    session.append_many([{"pad": PAD, "i": i} for i in range(n)])


def spent(tokens: int) -> MessageMetadata:
    return MessageMetadata(model="m1", provider="p", usage=TokenUsage(input=tokens,
                           output=tokens // 2), extra={"note": SECRET.format("extra")})


def build(root, *, checkpoint: bool = False) -> fsstore.Store:
    """Session ``s``: messages ``keep-N`` stay; ``gone-N`` are deleted (``gone-1`` edited
    first, ``gone-2`` holding a tool call and an error result); with ``checkpoint``, a
    checkpoint ``c1`` while ``held`` (deleted later) is live. Filler seals the records."""
    store = fsstore.open_store(root, segment_size=4096, snapshots=POLICY)
    with store.create_session("s") as session:
        msgs = session.messages
        for n in range(3):
            msgs.append(fsstore.Message.of_text("user", f"keep {n}", id=f"keep-{n}"))
            msgs.append(fsstore.Message.of_text("assistant", SECRET.format(n), id=f"gone-{n}",
                                                metadata=spent(100 + n)))
        msgs.edit(fsstore.Message.of_text("assistant", SECRET.format("edited"), id="gone-1",
                                          metadata=spent(7)))
        msgs.append({"id": "gone-2b", "role": "assistant", "parts": [
            {"type": "tool_call", "call_id": "call-1", "name": "search",
             "arguments": {"q": SECRET.format("args")}},
            {"type": "tool_result", "call_id": "call-1", "is_error": True,
             "output": SECRET.format("output")}], "metadata": {"model": "m2"}})
        fill(session)
        for gone in ("gone-0", "gone-1", "gone-2", "gone-2b"):
            msgs.delete(gone)
        if checkpoint:
            msgs.append(fsstore.Message.of_text("user", SECRET.format("held"), id="held"))
            session.checkpoint(checkpoint_id="c1")
            fill(session)
            msgs.delete("held")
        msgs.append(fsstore.Message.of_text("user", "after", id="after"))
        fill(session, 20)
    return store


def session_path(root) -> str:
    return os.path.join(str(root), "sessions", "s")


def log_bytes(root) -> bytes:
    """Every byte of the session's folder, and the logical (decompressed) bytes of each
    segment file, compacted ones included."""
    path = session_path(root)
    raw = b"".join(p.read_bytes() for p in sorted(Path(path).rglob("*")) if p.is_file())
    reader = LogReader(FileIO(), os.path.join(path, "log"))
    names = os.listdir(reader.path)
    return raw + b"".join(reader.read_segment(first) for first in layout.segment_seqs(names))


def view(root) -> tuple:
    """What reads of the session give (every version of every message, reads as of each
    seq of the history, usage and stats)."""
    reader = open_store(root).read_session("s")
    msgs = reader.messages
    ids = ["keep-0", "keep-1", "keep-2", "gone-0", "gone-1", "gone-2", "gone-2b", "after"]
    live = [m for m in msgs.all()]
    histories = {i: [(v.op, v.seq, v.ts, v.turn) for v in msgs.history(i)] for i in ids}
    return (live, msgs.last(3), msgs.count(), histories, reader.usage(),
            reader.usage(by="model"), reader.stats(), reader.head)


def vacuum(root, **kwargs) -> fsstore.VacuumReport:
    with open_store(root).open_session("s") as session:
        return session.vacuum(**kwargs)


def problems(root) -> list:
    return [f for f in open_store(root).verify() if f.level == "problem"]


def test_vacuum_removes_the_content_of_deleted_messages_from_the_log_bytes(tmp_path):
    root = tmp_path / "store"
    build(root)
    before = log_bytes(root)
    for secret in ("0", "1", "2", "edited", "args", "output", "extra"):
        assert SECRET.format(secret).encode() in before, secret
    report = vacuum(root)
    assert report.findings == ()
    after = log_bytes(root)
    assert b"zq-secret" not in after
    removed = report.removed["message_tombstones"]
    assert removed.count == 4 and removed.bytes > 0
    assert b"keep 1" in after and b"after" in after
    assert problems(root) == []


def test_live_messages_usage_and_stats_read_exactly_as_before(tmp_path):
    root = tmp_path / "store"
    build(root)
    before = view(root)
    vacuum(root)
    assert view(root) == before
    reader = open_store(root).read_session("s")
    assert reader.usage()[""].input == 100 + 7 + 102  # gone-0, gone-1 edited, gone-2
    # the usage fold from the log start (no snapshot) folds the same too
    for snapshot in Path(session_path(root), "state").glob("*"):
        snapshot.unlink()
    assert view(root)[4:] == before[4:]


def test_history_and_reads_at_a_seq_give_a_reclaimed_message_redacted(tmp_path):
    root = tmp_path / "store"
    build(root)
    reader = open_store(root).read_session("s")
    old = reader.messages.history("gone-1")
    at = old[1].seq  # gone-1's edit: live then
    vacuum(root)
    reader = open_store(root).read_session("s")
    versions = reader.messages.history("gone-1")
    assert [(v.op, v.seq, v.ts) for v in versions] == [(v.op, v.seq, v.ts) for v in old]
    for version in versions[:2]:
        message = version.message
        assert message is not None and message.redacted and message.parts == []
        assert message.id == "gone-1" and message.role == "assistant"
        assert message.metadata.model == "m1" and message.metadata.usage is not None
        assert message.metadata.extra == {}
    assert versions[2].message is None  # the tombstone
    got = reader.messages.get("gone-1", at_seq=at)
    assert got.redacted and got.text == "" and got.version == 2
    assert got.metadata.usage == TokenUsage(input=7, output=3)
    assert [m.id for m in reader.messages.all(at_seq=at)][:3] == ["keep-0", "gone-0", "keep-1"]
    assert not reader.messages.get("keep-1", at_seq=at).redacted
    # a later tool result may still answer the call of a reclaimed message
    with open_store(root).open_session("s") as session:
        session.messages.append({"role": "tool", "parts": [
            {"type": "tool_result", "call_id": "call-1", "output": "late"}]})
    events = [e for e in open_store(root).read_session("s").events()
              if e.kind == "fsstore.message" and e.data.get("redacted")]
    assert {e.data["message"]["id"] for e in events} == {"gone-0", "gone-1", "gone-2",
                                                         "gone-2b"}


def test_the_writer_that_vacuumed_reads_the_redacted_versions(tmp_path):
    root = tmp_path / "store"
    build(root)
    with open_store(root).open_session("s") as session:
        assert session.messages.history("gone-1")[0].message.text == SECRET.format(1)
        session.vacuum()
        first = session.messages.history("gone-1")[0].message
        assert first.redacted and first.text == ""
        session.messages.append(fsstore.Message.of_text("user", "more", id="more"))
    assert [m.id for m in open_store(root).read_session("s").messages.last(2)] == [
        "after", "more"]


def test_a_reader_that_read_a_message_before_the_vacuum_reads_it_redacted_after(tmp_path):
    root = tmp_path / "store"
    build(root)
    reader = open_store(root).read_session("s")
    assert reader.messages.history("gone-1")[0].message.text == SECRET.format(1)
    vacuum(root)
    first = reader.messages.history("gone-1")[0].message
    assert first.redacted and first.text == ""
    assert [m.id for m in reader.messages.last(2)] == ["keep-2", "after"]


def test_ids_of_reclaimed_messages_are_never_reused(tmp_path):
    root = tmp_path / "store"
    build(root)
    vacuum(root)
    with open_store(root).open_session("s") as session:
        with pytest.raises(MessageExists):
            session.messages.append(fsstore.Message.of_text("user", "again", id="gone-0"))
        with pytest.raises(fsstore.MessageNotFound):
            session.messages.get("gone-0")


def test_the_message_index_rebuilt_from_the_redacted_log_reads_the_same(tmp_path):
    root = tmp_path / "store"
    build(root)
    vacuum(root)
    before = view(root)
    os.unlink(os.path.join(session_path(root), layout.MESSAGE_INDEX))
    with open_store(root).open_session("s"):
        pass  # the writer writes the index anew from the log
    assert view(root) == before
    assert problems(root) == []


def test_a_message_live_at_a_checkpoint_keeps_its_content(tmp_path):
    root = tmp_path / "store"
    store = build(root, checkpoint=True)
    reader = store.read_session("s")
    seq = reader.checkpoint_info("c1").seq
    at_checkpoint = (reader.messages.all(at_seq=seq), reader.usage(at_seq=seq))
    report = vacuum(root)
    assert report.removed["message_tombstones"].count == 4
    reader = open_store(root).read_session("s")
    assert (reader.messages.all(at_seq=seq), reader.usage(at_seq=seq)) == at_checkpoint
    assert SECRET.format("held").encode() in log_bytes(root)
    assert SECRET.format("0").encode() not in log_bytes(root)


def test_message_grace_keeps_messages_deleted_more_recently(tmp_path):
    root = tmp_path / "store"
    build(root)
    report = vacuum(root, message_grace=3600.0)
    assert report.removed["message_tombstones"] == Removed()
    assert SECRET.format("0").encode() in log_bytes(root)
    with pytest.raises(fsstore.InvalidSetting):
        vacuum(root, message_grace=-1.0)
    # deletes an hour old (a caller's ts) are past the grace
    root2 = tmp_path / "store2"
    store = fsstore.open_store(root2, segment_size=4096, snapshots=POLICY)
    with store.create_session("s") as session:
        session.messages.append(fsstore.Message.of_text("user", SECRET.format("old"),
                                                        id="old"))
        session.messages.append(fsstore.Message.of_text("user", SECRET.format("new"),
                                                        id="new"))
        session.messages.delete("old", ts=time.time() - 7200)
        session.messages.delete("new")
        fill(session, 30)
    report = vacuum(root2, message_grace=3600.0)
    assert report.removed["message_tombstones"].count == 1
    data = log_bytes(root2)
    assert SECRET.format("old").encode() not in data
    assert SECRET.format("new").encode() in data


def test_a_dry_run_reports_the_same_figures_and_changes_no_byte(tmp_path):
    root = tmp_path / "store"
    build(root)

    def tree():
        return {p: p.read_bytes() for p in Path(root).rglob("*") if p.is_file()
                and p.name != "writer.lock"}
    files = tree()
    dry = vacuum(root, dry_run=True)
    assert tree() == files
    real = vacuum(root)
    assert dry.removed["message_tombstones"] == real.removed["message_tombstones"]
    assert real.removed["message_tombstones"].count == 4
    again = vacuum(root)  # nothing left to redact
    assert again.removed["message_tombstones"] == Removed()


def test_store_vacuum_and_the_cli_pass_message_grace(tmp_path, capsys):
    root = tmp_path / "store"
    build(root)
    from fsstore.cli import main
    assert main(["--store", str(root), "vacuum", "--message-grace", "3600", "--yes",
                 "--json"]) == 0
    assert '"message_tombstones"' in capsys.readouterr().out
    assert SECRET.format("0").encode() in log_bytes(root)
    report = open_store(root).vacuum(message_grace=0.0)
    assert report.removed["message_tombstones"].count == 4


def test_every_crash_state_of_a_redacting_vacuum_opens_and_reads_the_same(tmp_path):
    root = tmp_path / "store"
    build(root)
    before = view(root)
    io = CrashSimIO(str(root))
    states = io.record_states(tmp_path / "states")
    with open_store(root, io=io).open_session("s") as session:
        report = session.vacuum()
    io.on_op = None
    assert report.removed["message_tombstones"].count == 4 and len(states) > 10
    redacted = set()
    for dest in states:
        assert view(dest) == before, dest
        assert problems(dest) == [], dest
        redacted.add(log_bytes(dest).count(b"zq-secret"))
        vacuum(dest)  # a later vacuum finishes the work
        assert b"zq-secret" not in log_bytes(dest)
        assert view(dest) == before
        shutil.rmtree(dest)
    assert len(redacted) > 1  # crashes before and after the rewrites


def test_a_fork_made_before_the_vacuum_keeps_the_content(tmp_path):
    root = tmp_path / "store"
    store = build(root)
    store.fork_session("s", "f")
    history = store.read_session("f").messages.history("gone-1")
    report = vacuum(root)
    assert report.removed["message_tombstones"].count == 4
    again = open_store(root).read_session("f").messages.history("gone-1")
    assert again == history and again[0].message.text == SECRET.format(1)
    assert problems(root) == []
