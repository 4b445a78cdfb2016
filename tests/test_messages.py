"""The messages API: a session's conversation as typed messages in its log
(docs/FORMAT.md, section 20)."""

from __future__ import annotations

import os
import struct

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runlength import examples

import fsstore
from fsstore import (
    CostInfo,
    DataPart,
    FilePart,
    InvalidMessage,
    Message,
    MessageExists,
    MessageMetadata,
    MessageNotFound,
    ReasoningPart,
    TextPart,
    TokenUsage,
    ToolCallPart,
    ToolResultPart,
)
from fsstore.message_index import ROW, message_hash


@pytest.fixture
def store(tmp_path):
    return fsstore.open_store(tmp_path / "store", create=True)


def text(role: str, body: str, **fields) -> dict:
    return {"role": role, "parts": [{"type": "text", "text": body}], **fields}


def folder_bytes(path) -> dict[str, bytes]:
    found = {}
    for root, _, files in os.walk(path):
        for name in files:
            if name == "writer.lock":
                continue
            full = os.path.join(root, name)
            with open(full, "rb") as file:
                found[os.path.relpath(full, path)] = file.read()
    return found


def test_a_message_reads_back_with_every_kind_of_part_and_its_metadata(store):
    with store.create_session("s") as session:
        ref = session.blobs.put(b"%PDF-1.7 ...", media_type="application/pdf")
        message = Message(role="assistant", id="m1", parts=[
            ReasoningPart(text="look first", signature=b"\x00\xffsig"),
            TextPart(text="Calling grep."),
            ToolCallPart(call_id="c1", name="grep", arguments={"pattern": "due_date"}),
            FilePart(media_type="application/pdf", name="spec.pdf", blob=ref),
            FilePart(media_type="image/png", data=b"\x89PNG"),
            FilePart(media_type="image/png", url="https://example.com/a.png"),
            DataPart(name="plan", data={"steps": ["grep", "fix"]}),
        ], metadata=MessageMetadata(
            model="claude-x", provider="anthropic", finish_reason="tool_calls",
            usage=TokenUsage(input=1200, output=80, cached_input=1000, cache_write=50,
                             reasoning=30),
            cost=CostInfo(amount=0.0042, currency="USD"), latency=1.25,
            extra={"request": "req_1"}))
        stored = session.messages.append(message)
        assert (stored.id, stored.seq, stored.turn, stored.version) == ("m1", 1, 1, 1)
    reader = store.read_session("s")
    back = reader.messages.get("m1")
    assert back.parts == message.parts
    assert back.metadata == message.metadata
    assert back.parts[0].signature == b"\x00\xffsig"  # byte for byte
    assert (back.seq, back.turn, back.version) == (1, 1, 1)
    assert back.created == back.updated


def test_a_message_may_be_given_its_time(store):
    with store.create_session("s") as session:
        first = session.messages.append(text("user", "then"), ts=1_700_000_000.5)
        assert first.created == 1_700_000_000.5
        session.messages.edit(text("user", "later", id=first.id), ts=1_700_000_100.0)
    back = store.read_session("s").messages.get(first.id)
    assert (back.created, back.updated) == (1_700_000_000.5, 1_700_000_100.0)


def test_ids_are_made_when_left_out_and_sort_in_the_order_they_were_made(store):
    with store.create_session("s") as session:
        made = session.messages.append_many([text("user", "a"), text("assistant", "b")])
    assert [m.id for m in made] == sorted(m.id for m in made)
    assert all(m.id.startswith("msg_") for m in made)
    assert [m.seq for m in made] == [1, 2]


def test_last_page_count_and_all_read_the_conversation_in_order(store):
    with store.create_session("s") as session:
        for number in range(30):
            session.messages.append(text("user" if number % 2 else "assistant", f"m{number}",
                                         id=f"id{number}"))
        session.append({"note": "not a message"})
        reader = store.read_session("s")
        assert reader.messages.count() == len(reader.messages) == 30
        assert [m.text for m in reader.messages.last(3)] == ["m27", "m28", "m29"]
        assert [m.text for m in reader.messages.last(0)] == []
        assert len(reader.messages.last(100)) == 30
        assert [m.id for m in reader.messages.page(before="id10", limit=3)] == [
            "id7", "id8", "id9"]
        assert [m.id for m in reader.messages.page(after="id10", limit=2)] == ["id11", "id12"]
        assert [m.id for m in reader.messages.page(limit=2)] == ["id0", "id1"]
        assert [m.id for m in reader.messages.page(after="id29")] == []
        assert [m.text for m in reader.messages.all()] == [f"m{n}" for n in range(30)]
        assert [m.text for m in session.messages.last(2)] == ["m28", "m29"]


def test_an_edit_supersedes_and_a_delete_hides_while_history_keeps_every_version(store):
    with store.create_session("s") as session:
        session.messages.append_many([text("user", "one", id="a"), text("user", "two", id="b"),
                                      text("user", "three", id="c")])
        edited = session.messages.edit(text("user", "TWO", id="b"))
        assert edited.version == 2
        deleted_at = session.messages.delete("c")
        assert session.messages.get("b").text == "TWO"
        assert session.messages.get("b").version == 2
        assert session.messages.get("b").created < session.messages.get("b").updated
        with pytest.raises(MessageNotFound, match="deleted"):
            session.messages.get("c")
        assert not session.messages.exists("c")
        assert [m.text for m in session.messages.last(5)] == ["one", "TWO"]
        assert session.messages.count() == 2
        assert [(v.op, v.message and v.message.text) for v in session.messages.history("b")] \
            == [("add", "two"), ("edit", "TWO")]
        assert [v.op for v in session.messages.history("c")] == ["add", "delete"]
        assert session.messages.history("c")[-1].seq == deleted_at
        # as they were before the edit and the delete
        assert [m.text for m in session.messages.last(5, at_seq=3)] == ["one", "two", "three"]
        assert session.messages.get("b", at_seq=3).text == "two"
        assert session.messages.count(at_seq=3) == 3
        assert session.messages.count(at_seq=0) == 0
        with pytest.raises(fsstore.SeqOutOfRange):
            session.messages.last(5, at_seq=session.head + 1)
        with pytest.raises(fsstore.InvalidSeq):
            session.messages.get("b", at_seq=-1)
        with pytest.raises(MessageNotFound):
            session.messages.edit(text("user", "x", id="c"))
        with pytest.raises(MessageNotFound):
            session.messages.delete("c")
        with pytest.raises(MessageExists):
            session.messages.append(text("user", "again", id="c"))  # ids are never reused


@pytest.mark.parametrize("chain", [False, True], ids=["unchained", "chained"])
def test_message_records_are_events_every_reader_sees_and_msgpack_python_decodes(tmp_path,
                                                                                chain):
    store = fsstore.open_store(tmp_path / "store", chain=chain)
    with store.create_session("s") as session:
        session.append({"kind": "plain"})
        session.messages.append(text("user", "hi", id="m1"))
        session.finish_turn()
    reader = store.read_session("s")
    events = list(reader.events())
    assert [e.kind for e in events] == ["plain", fsstore.MESSAGE_RECORD]
    assert events[1].data["message"]["parts"] == [{"type": "text", "text": "hi"}]
    assert [e.kind for e in reader.get_turn(1).events] == ["plain", fsstore.MESSAGE_RECORD]
    segment = os.path.join(reader.path, "log", sorted(os.listdir(os.path.join(
        reader.path, "log")))[0])
    with open(segment, "rb") as file:
        raw = file.read()
    payloads, offset = [], 64
    while offset + 24 <= len(raw):
        _, length, _, count, frame_type = struct.unpack_from("<IIQII", raw, offset)
        if not count:
            break
        payloads.append(msgpack.unpackb(raw[offset + 24 : offset + 24 + length]))
        # a chained frame (FORMAT.md 3.4) carries its chain value, the first of a run its
        # anchor too, between its padding and its trailer
        assert frame_type == (1 if not chain else 4 if offset == 64 else 3)
        offset += ((24 + length + 7) & ~7) + {1: 0, 3: 32, 4: 64}[frame_type] + 8
    kinds = [entry[0] for _, _, entries in payloads for entry in entries]
    assert kinds == ["plain", fsstore.MESSAGE_RECORD, fsstore.TURN_FINISHED]
    record = payloads[1][2][0][1]
    assert record == {"op": "add", "message": {"id": "m1", "role": "user", "parts": [
        {"type": "text", "text": "hi"}], "metadata": {}}}


def test_bad_messages_are_refused_naming_the_field_and_nothing_is_written(store):
    session = store.create_session("s")
    session.messages.append(text("user", "hi", id="m1"))
    before = folder_bytes(session.path)
    cases = [
        ({"role": "robot", "parts": []}, "role"),
        ({"role": "user", "parts": [{"type": "video"}]}, "parts[0].type"),
        ({"role": "user", "parts": [{"type": "text", "text": 3}]}, "parts[0].text"),
        ({"role": "tool", "parts": [{"type": "tool_result", "call_id": "nope"}]},
         "parts[0].call_id"),
        ({"role": "user", "parts": [{"type": "file", "media_type": "image/png",
                                     "data": b"x" * (fsstore.INLINE_FILE_LIMIT + 1)}]},
         "parts[0].data"),
        ({"role": "user", "parts": [{"type": "file", "media_type": "image/png"}]},
         "parts[0]"),
        ({"role": "user", "metadata": {"extra": {"when": b"bytes"}}}, "metadata.extra.when"),
        ({"role": "user", "metadata": {"extra": {"x": float("nan")}}}, "metadata.extra.x"),
        ({"role": "user", "metadata": {"usage": {"input": -1}}}, "metadata.usage.input"),
        ({"role": "user", "metadata": {"finish_reason": "bored"}}, "metadata.finish_reason"),
        ({"role": "user", "id": "bad\nid"}, "id"),
        ({"role": "user", "id": "x" * 257}, "id"),
        ({"role": "user", "parts": [{"type": "tool_call", "call_id": "c", "name": "f",
                                     "arguments": {1: 2}}]}, "parts[0].arguments"),
    ]
    for bad, field in cases:
        with pytest.raises(InvalidMessage) as caught:
            session.messages.append(bad)
        assert caught.value.field == field, (bad, caught.value)
        assert field.split(".")[0].split("[")[0] in str(caught.value)
    with pytest.raises(MessageExists):
        session.messages.append(text("user", "again", id="m1"))
    with pytest.raises(MessageExists):  # twice in one batch
        session.messages.append_many([text("user", "a", id="d"), text("user", "b", id="d")])
    with pytest.raises(InvalidMessage):  # one bad message refuses the whole batch
        session.messages.append_many([text("user", "fine"), {"role": "robot"}])
    with pytest.raises(InvalidMessage):
        session.messages.edit(text("user", "no id"))
    with pytest.raises(InvalidMessage):
        session.messages.last(-1)
    with pytest.raises(fsstore.InvalidEvent):
        session.messages.append(text("user", "when?"), ts=float("nan"))
    assert folder_bytes(session.path) == before
    assert session.messages.count() == 1
    session.close()


def test_a_tool_result_answers_a_call_earlier_in_the_session_batch_or_message(store):
    with store.create_session("s") as session:
        session.messages.append({"role": "assistant", "parts": [
            {"type": "tool_call", "call_id": "c1", "name": "ls"}]})
        session.messages.append({"role": "tool", "parts": [
            {"type": "tool_result", "call_id": "c1", "output": ["a.py"]}]})
        session.messages.append_many([
            {"role": "assistant", "parts": [{"type": "tool_call", "call_id": "c2",
                                             "name": "cat"}]},
            {"role": "tool", "parts": [{"type": "tool_result", "call_id": "c2",
                                        "output": "x", "is_error": True}]}])
        session.messages.append({"role": "assistant", "parts": [
            {"type": "tool_call", "call_id": "c3", "name": "web"},
            {"type": "tool_result", "call_id": "c3", "output": "done"}]})
        orphan = session.messages.append({"role": "tool", "parts": [
            {"type": "tool_result", "call_id": "lost", "output": None, "orphan": True}]})
        assert orphan.parts[0].orphan
    reader = store.read_session("s")  # a reader finds calls through the index too
    assert reader.messages.count() == 6
    with store.open_session("s") as again:  # and a writer opened afresh
        again.messages.append({"role": "tool", "parts": [
            {"type": "tool_result", "call_id": "c1", "output": "again"}]})
    assert store.read_session("s").stats().tool_errors == 1


def test_usage_and_stats_are_folded_by_model_and_day_and_survive_snapshots(tmp_path):
    store = fsstore.open_store(tmp_path, create=True,
                               snapshots=fsstore.SnapshotPolicy(every_events=3))
    with store.create_session("s") as session:
        def answer(model, tokens_in, tokens_out, cost, **fields):
            return {"role": "assistant", "parts": [{"type": "text", "text": "ok"}],
                    "metadata": {"model": model, "usage": {"input": tokens_in,
                                                           "output": tokens_out},
                                 "cost": {"amount": cost}}, **fields}
        session.messages.append(text("user", "q1"))
        session.messages.append(answer("small", 100, 10, 0.001))
        session.messages.append(answer("big", 1000, 50, 0.02, id="streamed"))
        session.finish_turn()
        session.messages.append(text("user", "q2"))
        # the streamed answer, finalised: counts once, at its final usage
        session.messages.edit(answer("big", 1200, 60, 0.025, id="streamed"))
        doomed = session.messages.append(answer("small", 10, 1, 0.0001))
        session.messages.delete(doomed.id)  # spent is spent
        session.finish_turn()
        totals = session.usage()[""]
        assert (totals.input, totals.output) == (1310, 71)
        assert totals.cost["USD"] == pytest.approx(0.0261)
        by_model = session.usage(by="model")
        assert set(by_model) == {"small", "big"}
        assert (by_model["big"].input, by_model["big"].messages) == (1200, 1)
        assert list(session.usage(by="day")) == [fsstore.usage.day_of(doomed.created)]
        stats = session.stats()
        assert stats.messages_by_role == {"assistant": 2, "user": 2}
        assert stats.turns == 2 and stats.turn_seconds >= 0
    reader = store.read_session("s")
    assert os.listdir(os.path.join(reader.path, "state"))  # snapshots were written
    assert reader.usage() == {"": totals}
    assert reader.stats() == stats
    assert reader.usage(at_seq=2)[""].input == 100
    with pytest.raises(fsstore.InvalidSetting):
        reader.usage(by="week")


def test_a_fork_a_checkpoint_and_a_clear_see_the_messages_of_their_point(store):
    with store.create_session("s") as session:
        session.messages.append_many([text("user", f"m{n}", id=f"m{n}") for n in range(5)])
        point = session.head
        checkpoint = session.checkpoint("five")
        session.messages.append(text("user", "m5", id="m5"))
        child = session.fork("child", at_seq=point)
        with child:
            assert [m.id for m in child.messages.last(10)] == [f"m{n}" for n in range(5)]
            child.messages.append(text("user", "other", id="m5"))  # its own history
            assert child.messages.get("m5").text == "other"
        assert session.messages.get("m5").text == "m5"
        assert [m.id for m in session.messages.last(10, at_seq=checkpoint.seq)] == [
            f"m{n}" for n in range(5)]
        session.clear()
        assert session.messages.count() == 0
        assert session.messages.last(3) == []
        session.messages.append(text("user", "after", id="m0"))  # a new log, new ids
        assert [m.text for m in session.messages.last(3)] == ["after"]
    assert [m.text for m in store.read_session("s").messages.all()] == ["after"]
    assert store.read_session("child").messages.count() == 6


def test_a_reader_sees_what_the_writer_appends_after_it_first_read(store):
    with store.create_session("s") as session:
        reader = store.read_session("s")
        assert reader.messages.count() == 0
        session.messages.append(text("user", "one", id="a"))
        assert [m.id for m in reader.messages.last(5)] == ["a"]
        session.messages.append(text("user", "two", id="b"))
        session.messages.edit(text("user", "ONE", id="a"))
        assert reader.messages.get("a").text == "ONE"
        assert [m.text for m in reader.messages.last(5)] == ["ONE", "two"]


@pytest.mark.parametrize("durability", [
    "none", "flush", "fsync", fsstore.Durability(mode="none", group_commit_ms=2)],
    ids=["none", "flush", "fsync", "group"])
def test_every_durability_keeps_the_index_on_frames_in_the_file(store, durability):
    with store.create_session("s", durability=durability) as session:
        for number in range(20):
            session.messages.append(text("user", f"m{number}"))
        reader = store.read_session("s")  # another handle, reading the files
        assert [m.text for m in reader.messages.last(2)] == ["m18", "m19"]
    assert store.read_session("s").verify() == []


def test_the_index_is_made_from_the_log_when_it_is_missing(store):
    with store.create_session("s") as session:
        session.messages.append_many([text("user", f"m{n}", id=f"m{n}") for n in range(10)])
        session.messages.delete("m3")
    index = os.path.join(store.read_session("s").path, "messages.idx")
    os.unlink(index)
    reader = store.read_session("s")
    assert reader.messages.count() == 9
    assert reader.messages.get("m7").text == "m7"
    assert not os.path.exists(index)  # a reader writes nothing
    with store.open_session("s") as session:
        assert session.messages.count() == 9
    assert os.path.exists(index)
    assert store.read_session("s").verify() == []


class CountingIO(fsstore.FileIO):
    """The I/O seam, counting the bytes each read returns (in ``read``, shared)."""

    read: list[int] = []

    def pread(self, fd, size, offset):
        data = super().pread(fd, size, offset)
        self.read.append(len(data))
        return data


def test_reading_the_last_messages_reads_as_much_of_a_long_session_as_of_a_short_one(
        tmp_path):
    """The cost of last(50) follows 50, not the history (FORMAT.md 20.3): count the bytes
    read through the I/O seam."""
    read = CountingIO.read

    counts = {}
    for size in (200, 4000):
        root = tmp_path / f"s{size}"
        built = fsstore.open_store(root, create=True, segment_size=1 << 20)
        with built.create_session("s") as session:
            batch = [text("user", "x" * 40) for _ in range(size)]
            for start in range(0, size, 100):
                session.messages.append_many(batch[start : start + 100])
        reader = fsstore.open_store(root, io=CountingIO()).read_session("s")
        reader.messages.last(50)  # the first read opens and checks the index
        read.clear()
        reader.messages.last(50)
        counts[size] = sum(read)
    assert counts[4000] <= counts[200] * 1.5, counts


def test_get_by_id_does_not_read_the_log_beyond_the_message(store):
    read = CountingIO.read

    with store.create_session("s") as session:
        for start in range(0, 3000, 10):
            session.messages.append_many([text("user", f"m{n}", id=f"m{n}")
                                          for n in range(start, start + 10)])
    reader = fsstore.open_store(store.path, io=CountingIO()).read_session("s")
    assert reader.messages.get("m10").text == "m10"  # loads the index's hashes once
    read.clear()
    assert reader.messages.get("m2999").text == "m2999"
    log_size = sum(os.path.getsize(os.path.join(reader.path, "log", name))
                   for name in os.listdir(os.path.join(reader.path, "log")))
    assert sum(read) < log_size / 10, (sum(read), log_size)


def test_index_rows_are_fixed_size_and_hash_the_id(store):
    with store.create_session("s") as session:
        session.messages.append(text("user", "hi", id="m1"))
        path = os.path.join(session.path, "messages.idx")
    with open(path, "rb") as file:
        raw = file.read()
    assert raw[:8] == b"\x89FSMIDX\n"
    assert (len(raw) - 40) % ROW.size == 0
    fields = ROW.unpack(raw[40 : 40 + ROW.size])
    assert fields[0] == 1 and fields[2] == message_hash("m1")


# --- random messages through the store ------------------------------------------------

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**53, 2**53),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8)
json_map = st.dictionaries(st.text(max_size=8), json_value, max_size=3)
ids = st.text(st.characters(min_codepoint=0x20, blacklist_categories=("Cs", "Cc")), min_size=1,
              max_size=12).filter(lambda t: "\x7f" not in t)
parts = st.one_of(
    st.builds(TextPart, text=st.text(max_size=40), provider_metadata=json_map),
    st.builds(ReasoningPart, text=st.text(max_size=40),
              signature=st.one_of(st.none(), st.text(max_size=20), st.binary(max_size=20)),
              redacted=st.booleans()),
    st.builds(ToolCallPart, call_id=ids, name=st.text(max_size=10), arguments=json_value),
    st.builds(ToolResultPart, call_id=ids, output=json_value, is_error=st.booleans(),
              name=st.one_of(st.none(), st.text(max_size=10)), orphan=st.just(True)),
    st.builds(FilePart, media_type=st.sampled_from(["image/png", "text/plain"]),
              name=st.one_of(st.none(), st.text(max_size=10)),
              data=st.binary(max_size=64)),
    st.builds(FilePart, media_type=st.just("image/png"), url=st.text(min_size=1, max_size=30)),
    st.builds(DataPart, name=st.text(max_size=10), data=json_value),
)
metadata = st.builds(
    MessageMetadata, model=st.one_of(st.none(), st.sampled_from(["a", "b"])),
    provider=st.one_of(st.none(), st.text(max_size=8)),
    finish_reason=st.one_of(st.none(), st.sampled_from(
        ["stop", "length", "tool_calls", "content_filter", "error", "other"])),
    usage=st.one_of(st.none(), st.builds(TokenUsage, input=st.integers(0, 10**6),
                                         output=st.integers(0, 10**6),
                                         reasoning=st.integers(0, 1000))),
    cost=st.one_of(st.none(), st.builds(CostInfo, amount=st.floats(0, 10),
                                        currency=st.sampled_from(["USD", "EUR"]))),
    latency=st.one_of(st.none(), st.floats(0, 100)), extra=json_map)
messages = st.builds(Message, role=st.sampled_from(["system", "user", "assistant", "tool"]),
                     parts=st.lists(parts, max_size=4), metadata=metadata)


def content(message: Message) -> tuple:
    return (message.id, message.role, message.parts, message.metadata)


@settings(max_examples=examples(20, 40), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(messages, min_size=1, max_size=3), min_size=1, max_size=4),
       edits=st.lists(st.tuples(st.integers(0, 100), messages), max_size=2),
       delete=st.one_of(st.none(), st.integers(0, 100)))
def test_random_messages_read_back_after_reopen_fork_and_checkpoint(tmp_path_factory, batches,
                                                                      edits, delete):
    root = tmp_path_factory.mktemp("store")
    store = fsstore.open_store(root, create=True)
    expected: dict[str, Message] = {}
    order: list[str] = []
    with store.create_session("s") as session:
        for batch in batches:
            for stored in session.messages.append_many(batch):
                expected[stored.id] = stored
                order.append(stored.id)
        checkpoint = session.checkpoint()
        at_checkpoint = [content(expected[i]) for i in order]
        for position, message in edits:
            target = order[position % len(order)]
            message.id = target
            expected[target] = session.messages.edit(message)
        if delete is not None:
            gone = order[delete % len(order)]
            session.messages.delete(gone)
            order.remove(gone)
        session.fork("child")
    for reader in (store.read_session("s"), store.read_session("child")):
        assert [content(m) for m in reader.messages.all()] == [
            content(expected[i]) for i in order]
        assert [content(m) for m in reader.messages.last(2)] == [
            content(expected[i]) for i in order[-2:]]
        assert reader.messages.count() == len(order)
        for message_id in order:
            assert content(reader.messages.get(message_id)) == content(expected[message_id])
        assert [content(m) for m in reader.messages.all(at_seq=checkpoint.seq)] == \
            at_checkpoint
        assert reader.verify() == []


@pytest.mark.parametrize("cut", ["half a row", "a torn last row", "the last group cut"])
def test_an_index_cut_by_a_crash_reads_as_the_log_says(store, cut):
    with store.create_session("s") as session:
        for number in range(6):
            session.messages.append({"role": "assistant", "id": f"m{number}", "parts": [
                {"type": "tool_call", "call_id": f"c{number}", "name": "ls"}]})
    path = os.path.join(store.read_session("s").path, "messages.idx")
    with open(path, "r+b") as file:
        size = os.path.getsize(path)
        if cut == "half a row":
            file.truncate(size - ROW.size // 2)
        elif cut == "a torn last row":
            file.seek(size - 10)
            file.write(b"\xff" * 10)
        else:  # the message row of the last group kept, its call row lost
            file.truncate(size - ROW.size)
    reader = store.read_session("s")
    assert [m.id for m in reader.messages.last(10)] == [f"m{n}" for n in range(6)]
    assert reader.messages.get("m5").tool_calls[0].call_id == "c5"
    with store.open_session("s") as session:  # the writer makes the index good again
        session.messages.append({"role": "tool", "parts": [
            {"type": "tool_result", "call_id": "c5", "output": "ok"}]})
    assert store.read_session("s").verify() == []
    assert store.read_session("s").messages.count() == 7


def test_a_reader_that_has_seen_no_message_sees_the_messages_after_a_clear(store):
    with store.create_session("s") as session:
        session.append({"plain": 1})
        reader = store.read_session("s")
        assert reader.messages.count() == 0
        session.clear()
        session.messages.append(text("user", "after the clear", id="a"))
        assert [m.text for m in reader.messages.last(5)] == ["after the clear"]
        session.messages.append(text("user", "more", id="b"))
        assert reader.messages.count() == 2
        session.clear()
        assert reader.messages.count() == 0
        assert reader.messages.last(5) == []
