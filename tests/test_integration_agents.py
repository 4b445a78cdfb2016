"""fsstore.integrations.agents: FsstoreSession, the OpenAI Agents SDK's Session protocol
over an fsstore session's messages, held to what the SDK's own SQLiteSession does."""

from __future__ import annotations

import asyncio
import errno
import gc
import json
import os
import random
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("agents")

from agents import Agent, RunConfig, Runner, function_tool  # noqa: E402
from agents.memory import Session, SessionSettings, SQLiteSession  # noqa: E402
from agents.testing import ScriptedModel, assistant_message, function_call  # noqa: E402
from procs import Child, child_env  # noqa: E402

import fsstore  # noqa: E402
from fsstore import layout  # noqa: E402
from fsstore.errors import (  # noqa: E402
    InvalidMessage,
    InvalidMetadata,
    RecordTooLarge,
    SessionClosed,
    WriteFailed,
)
from fsstore.integrations import agents as agents_module  # noqa: E402
from fsstore.integrations import agents_pool  # noqa: E402
from fsstore.integrations.agents import (  # noqa: E402
    ITEM_KEY,
    FsstoreSession,
    agent_sessions,
    item_message,
    session_id_for,
)

# Items of the shapes the SDK stores: input messages, model output items (with the ids a
# model gives, repeated ones and the SDK's placeholder), tool calls and their outputs,
# reasoning, an item of a built-in tool, and JSON the converters have no field for.
ITEMS = [
    {"role": "user", "content": "Weather in Paris? Et à Zürich ✓"},
    {"role": "developer", "content": [{"type": "input_text", "text": "be terse"}]},
    {"id": "rs_1", "type": "reasoning", "summary": [{"type": "summary_text", "text": "look"}],
     "encrypted_content": "gAAA=="},
    {"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": "weather",
     "arguments": '{"city":  "Paris"}', "status": "completed"},
    {"type": "function_call_output", "call_id": "call_1", "output": "14 C"},
    {"id": "__fake_id__", "type": "message", "role": "assistant", "status": "completed",
     "content": [{"type": "output_text", "text": "14 C", "annotations": [],
                  "logprobs": []}]},
    {"id": "__fake_id__", "type": "message", "role": "assistant", "status": "completed",
     "content": [{"type": "refusal", "refusal": "no"}]},
    {"id": "ws_1", "type": "web_search_call", "status": "completed",
     "action": {"type": "search", "query": "paris"}},
    {"type": "item_reference", "id": "msg_0"},
    {"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png",
                                  "detail": "low"}]},
    {"type": "mystery", "ratio": 0.1, "big": 2**70, "nested": {"a": [1, None, True]}},
]


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def store(tmp_path):
    yield fsstore.open_store(tmp_path / "store")
    agents_pool.close_idle()


def other_writer(store):
    """A Store object of its own on ``store``'s folder: FsstoreSession objects made on
    it share nothing in this process with those made on ``store``, as if in another."""
    return fsstore.open_store(store.path)


@pytest.fixture
def sessions(store, tmp_path):
    """An FsstoreSession and a SQLiteSession (on a file, as it is used) with one id."""
    ours = FsstoreSession("chat 1", store)
    theirs = SQLiteSession("chat 1", str(tmp_path / "agents.db"))
    yield ours, theirs
    ours.close()
    theirs.close()


def test_importing_fsstore_imports_no_framework():
    code = ("import sys, fsstore, fsstore.convert, fsstore.integrations; "
            "print(sorted(m for m in ('agents', 'openai') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=child_env(), timeout=120)
    assert done.stdout.strip() == "[]", done.stderr


# --- the protocol -----------------------------------------------------------------------


def test_fsstore_session_is_an_sdk_session(store):
    with FsstoreSession("x", store) as session:
        assert isinstance(session, Session)
        assert session.session_id == "x"
        assert session.session_settings == SessionSettings()


def test_items_read_back_as_the_sdk_gave_them_and_as_sqlite_session_returns_them(sessions):
    ours, theirs = sessions

    async def both():
        for session in (ours, theirs):
            await session.add_items(ITEMS[:4])
            await session.add_items(ITEMS[4:])
        return await ours.get_items(), await theirs.get_items()

    mine, reference = run(both())
    assert mine == reference == json.loads(json.dumps(ITEMS))


def test_each_item_is_one_readable_message_that_keeps_the_items_json(sessions, store):
    ours, _ = sessions
    run(ours.add_items(ITEMS))
    messages = store.read_session(ours.fsstore_id).messages.all()
    assert [m.metadata.extra[ITEM_KEY] for m in messages] == [json.dumps(i) for i in ITEMS]
    assert [m.role for m in messages[:6]] == ["user", "system", "assistant", "assistant",
                                             "tool", "assistant"]
    assert messages[0].text == ITEMS[0]["content"]
    assert messages[3].tool_calls[0].arguments == {"city": "Paris"}
    assert messages[4].tool_results[0].output == "14 C"
    assert messages[5].text == "14 C"
    assert len({m.id for m in messages}) == len(ITEMS)  # the items' repeated ids aside


@pytest.mark.parametrize("limit", [None, 0, 1, 3, 11, 50, -1])
def test_get_items_limit_is_read_as_sqlite_session_reads_it(sessions, limit):
    ours, theirs = sessions

    async def both():
        for session in (ours, theirs):
            await session.add_items(ITEMS)
        return await ours.get_items(limit), await theirs.get_items(limit)

    mine, reference = run(both())
    assert mine == reference


def test_session_settings_give_the_default_limit_and_an_argument_overrides_it(store):
    async def check():
        with FsstoreSession("s", store, session_settings={"limit": 2}) as session:
            await session.add_items(ITEMS[:5])
            assert await session.get_items() == ITEMS[3:5]
            assert await session.get_items(limit=4) == ITEMS[1:5]
            session.session_settings = None
            assert len(await session.get_items()) == 5
    run(check())


def test_an_empty_session_reads_empty_pops_none_and_reads_create_nothing(store):
    async def check():
        with FsstoreSession("empty", store) as session:
            assert await session.get_items() == []
            assert await session.get_items(5) == []
            assert await session.pop_item() is None
            await session.clear_session()
            await session.add_items([])
            assert store.session_ids() == []
            await session.add_items(ITEMS[:1])
            assert store.session_ids() == [session.fsstore_id]
            assert await session.pop_item() == ITEMS[0]
            assert await session.get_items() == []
    run(check())


def test_a_store_path_is_opened_on_first_use(tmp_path):
    async def check():
        with FsstoreSession("by path", str(tmp_path / "new-store")) as session:
            assert not (tmp_path / "new-store").exists()  # building it touches nothing
            await session.add_items(ITEMS[:2])
            assert await session.get_items() == ITEMS[:2]
    run(check())
    store = fsstore.open_store(tmp_path / "new-store", create=False)
    assert agent_sessions(store) == {"by path": session_id_for("agents", "by path")}


def test_an_item_json_cannot_hold_is_refused_and_nothing_is_written(store):
    async def check():
        with FsstoreSession("bad", store) as session:
            await session.add_items(ITEMS[:1])
            with pytest.raises(InvalidMessage) as caught:
                await session.add_items([ITEMS[0], {"role": "user", "content": object()}])
            assert caught.value.field == "items[1]"
            assert await session.get_items() == ITEMS[:1]
    run(check())


def test_a_tool_output_whose_call_is_not_in_the_session_is_stored(store):
    async def check():
        with FsstoreSession("orphan", store) as session:
            output = {"type": "function_call_output", "call_id": "elsewhere", "output": "x"}
            await session.add_items([ITEMS[0], output, ITEMS[3], ITEMS[4]])
            assert await session.get_items() == [ITEMS[0], output, ITEMS[3], ITEMS[4]]
            results = [m.tool_results[0] for m in session.session().messages.all()
                       if m.tool_results]
            assert [r.call_id for r in results] == ["elsewhere", "call_1"]
            assert results[0].orphan
    run(check())


# --- pop and clear ----------------------------------------------------------------------


def test_pop_item_is_a_tombstone_the_history_keeps(store):
    async def check():
        with FsstoreSession("pop", store) as session:
            await session.add_items(ITEMS[:3])
            newest = session.session().messages.last(1)[0]
            assert await session.pop_item() == ITEMS[2]
            assert await session.get_items() == ITEMS[:2]
            versions = session.session().messages.history(str(newest.id))
            assert [v.op for v in versions] == ["add", "delete"]
            assert await session.pop_item() == ITEMS[1]
            assert await session.pop_item() == ITEMS[0]
            assert await session.pop_item() is None
            # A popped item can be added again (its id is not the message's).
            await session.add_items(ITEMS[:3])
            assert await session.get_items() == ITEMS[:3]
    run(check())


def test_messages_pop_returns_the_newest_message_and_none_when_empty(store):
    with store.create_session("plain") as session:
        first = session.messages.append({"role": "user", "parts": [{"type": "text",
                                                                    "text": "a"}]})
        second = session.messages.append({"role": "user", "parts": [{"type": "text",
                                                                     "text": "b"}]})
        assert session.messages.pop().id == second.id
        assert [m.id for m in session.messages.all()] == [first.id]
        assert session.messages.pop().id == first.id
        head = session.head
        assert session.messages.pop() is None
        assert session.head == head  # nothing written for an empty pop


def test_clear_session_empties_the_log_and_the_session_goes_on(store):
    async def check():
        with FsstoreSession("clear", store) as session:
            await session.add_items(ITEMS)
            await session.clear_session()
            assert await session.get_items() == []
            assert await session.pop_item() is None
            assert list(store.read_session(session.fsstore_id).events()) == []
            await session.add_items(ITEMS[:2])
            assert await session.get_items() == ITEMS[:2]
        with FsstoreSession("clear", store) as again:
            assert await again.get_items() == ITEMS[:2]
    run(check())


def test_messages_written_another_way_read_as_their_responses_items(store):
    async def check():
        with FsstoreSession("mixed", store) as session:
            await session.add_items(ITEMS[:1])
            session.session().messages.append(
                {"role": "assistant", "parts": [{"type": "text", "text": "hello"}]})
            items = await session.get_items()
            assert items[0] == ITEMS[0]
            assert items[1]["content"][0]["text"] == "hello"
            assert await session.get_items(1) == items[1:]
            assert (await session.pop_item())["content"][0]["text"] == "hello"
            assert await session.get_items() == ITEMS[:1]
    run(check())


def test_random_calls_from_two_sessions_on_one_id_read_as_sqlite_session_does(
        store, tmp_path):
    """Two FsstoreSessions on one id (each keeps a copy of what it read, brought up to
    date before each read) against one SQLiteSession given the same calls."""
    rng = random.Random(15)
    model = SQLiteSession("model", str(tmp_path / "model.db"))

    async def check():
        with FsstoreSession("random", store) as one, FsstoreSession("random", store) as two:
            counter = 0
            for step in range(300):
                ours = rng.choice((one, two))
                action = rng.random()
                if action < 0.35:
                    items = []
                    for _ in range(rng.randint(1, 4)):
                        items.append(dict(rng.choice(ITEMS)))
                        items[-1]["n"] = counter  # every item told apart
                        counter += 1
                    await ours.add_items(items)
                    await model.add_items(items)
                elif action < 0.5:
                    assert await ours.pop_item() == await model.pop_item(), step
                elif action < 0.53:
                    await ours.clear_session()
                    await model.clear_session()
                else:
                    limit = rng.choice((None, None, 1, 3, 50))
                    assert await ours.get_items(limit) == await model.get_items(limit), step
            assert await one.get_items() == await two.get_items() == await model.get_items()
    run(check())
    model.close()


def test_a_session_that_read_everything_sees_what_another_writer_did_since(store):
    async def check():
        with FsstoreSession("copy", store) as reader, \
                FsstoreSession("copy", other_writer(store)) as other:
            await other.add_items(ITEMS[:4])
            assert await reader.get_items() == ITEMS[:4]   # makes its copy
            await other.add_items(ITEMS[4:6])
            assert await reader.get_items(limit=3) == ITEMS[3:6]
            assert await other.pop_item() == ITEMS[5]
            await other.add_items(ITEMS[6:7])  # as many messages as before the pop
            assert await reader.get_items() == ITEMS[:5] + ITEMS[6:7]
            other.session().messages.append(
                {"role": "assistant", "parts": [{"type": "text", "text": "by hand"}]})
            assert (await reader.get_items(limit=1))[0]["content"][0]["text"] == "by hand"
            await other.clear_session()
            assert await reader.get_items() == []
            await other.add_items(ITEMS[:2])
            assert await reader.get_items() == ITEMS[:2]
            assert await reader.pop_item() == ITEMS[1]
            assert await reader.get_items() == await other.get_items() == ITEMS[:1]
    run(check())


def test_a_copy_takes_its_own_adds_and_sees_what_another_writer_did_after_them(store):
    async def check():
        with FsstoreSession("own", store) as one, \
                FsstoreSession("own", other_writer(store)) as two:
            await one.add_items(ITEMS[:3])
            assert await one.get_items() == ITEMS[:3]  # one has a copy now
            await one.add_items(ITEMS[3:4])            # taken into the copy
            assert await one.get_items() == ITEMS[:4]
            await two.clear_session()                  # a clear takes no seq
            await one.add_items(ITEMS[4:5])
            assert await one.get_items() == ITEMS[4:5]
            await one.add_items(ITEMS[5:6])
            # Another writer adds right after one's batch, before one looks again.
            two.session().messages.append_many([item_message(ITEMS[6])])
            assert await one.get_items() == ITEMS[4:7]
            assert await one.get_items(limit=2) == ITEMS[5:7]
    run(check())


def test_a_limited_read_copies_only_the_newest_messages_and_sees_every_change(store):
    items = [{"role": "user", "content": str(number)} for number in range(400)]
    model = list(items)

    async def check():
        with FsstoreSession("long", store) as reader, \
                FsstoreSession("long", other_writer(store)) as other:
            await other.add_items(items)
            assert await reader.get_items(limit=10) == model[-10:]
            # The newest messages, eight more than asked for, not all 400.
            assert len(reader._held.cache._texts) == 18
            for _ in range(3):
                assert await other.pop_item() == model.pop()
            await other.add_items([{"role": "user", "content": "a"}])
            model.append({"role": "user", "content": "a"})
            assert await reader.get_items(limit=10) == model[-10:]
            # A delete of an old message, by hand: the count no longer adds up.
            oldest = other.session().messages.page(limit=1)[0]
            other.session().messages.delete(str(oldest.id))
            del model[0]
            assert await reader.get_items(limit=200) == model[-200:]
            assert await reader.get_items() == model
            assert await reader.get_items(limit=3) == model[-3:]
    run(check())


def test_items_read_twice_are_objects_of_their_own(store):
    async def check():
        with FsstoreSession("fresh", store) as session:
            await session.add_items(ITEMS[:2])
            first = await session.get_items()
            first[0]["content"] = "changed by the caller"
            assert await session.get_items() == ITEMS[:2]
            assert (await session.get_items(limit=1))[0] is not first[1]
    run(check())


# --- ids --------------------------------------------------------------------------------


@pytest.mark.parametrize("hostile", ["../../etc/passwd", "", ".", "..", "CON", "nul.txt",
                                     "a/b\\c:d", "\x00\n\t", "x" * 5000, "é漢字🙂",
                                     "\ud800", "-rf", "ends with a dot."])
def test_any_sdk_id_maps_to_a_session_inside_the_store(store, hostile):
    session_id = session_id_for("agents", hostile)
    assert layout.check_session_id(session_id, new=True) == session_id
    assert session_id.startswith("agents-")

    async def check():
        with FsstoreSession(hostile, store) as session:
            await session.add_items(ITEMS[:1])
            assert session.fsstore_id == session_id
    if hostile == "\ud800":  # a lone surrogate: mapped, but the metadata cannot hold it
        with pytest.raises(InvalidMetadata, match="framework_id"):
            run(check())
        assert store.session_ids() == []
        return
    run(check())
    assert os.path.isdir(os.path.join(store.path, "sessions", session_id))
    assert agent_sessions(store) == {hostile: session_id}


def test_ids_that_read_the_same_map_to_different_sessions():
    ids = {session_id_for("agents", name) for name in ["a/b", "a:b", "a b", "a_b", "A_b"]}
    assert len(ids) == 5
    assert session_id_for("agents", "a/b") == session_id_for("agents", "a/b")
    assert session_id_for("agents", "a") != session_id_for("other", "a")


# --- several sessions, threads and processes --------------------------------------------


def test_two_sessions_on_one_id_in_one_process_both_work(store):
    async def check():
        with FsstoreSession("twin", store) as one, FsstoreSession("twin", store) as two:
            await one.add_items(ITEMS[:2])
            await two.add_items(ITEMS[2:4])
            await one.add_items(ITEMS[4:5])
            assert await one.get_items() == await two.get_items() == ITEMS[:5]
            assert await two.pop_item() == ITEMS[4]
            assert await one.get_items() == ITEMS[:4]
            await one.clear_session()
            assert await two.get_items() == []
            await two.add_items(ITEMS[:1])
            assert await one.get_items() == ITEMS[:1]
    run(check())


def test_sessions_on_one_store_and_id_share_one_opened_session(store):
    async def check():
        with FsstoreSession("twin", store) as one, FsstoreSession("twin", store) as two, \
                FsstoreSession("twin", other_writer(store)) as apart:
            await one.add_items(ITEMS[:1])
            assert await two.get_items() == await apart.get_items() == ITEMS[:1]
            assert one.session() is two.session()
            assert apart.session() is not one.session()
    run(check())


def test_a_session_let_go_is_kept_open_for_the_next_object_on_its_id(store):
    async def check():
        with FsstoreSession("again", store) as first:
            await first.add_items(ITEMS[:2])
            assert await first.get_items() == ITEMS[:2]
            opened = first.session()
        assert not opened.closed
        with FsstoreSession("again", store) as second:
            assert await second.get_items() == ITEMS[:2]
            assert second.session() is opened
        # Beyond IDLE sessions let go, the least recently used is closed.
        for number in range(agents_pool.IDLE):
            with FsstoreSession(f"other {number}", store) as other:
                await other.add_items(ITEMS[:1])
        assert opened.closed
        with FsstoreSession("again", store) as third:
            assert await third.get_items() == ITEMS[:2]
    run(check())


def test_a_session_collected_unclosed_lets_go(store):
    async def use():
        session = FsstoreSession("dropped", store)
        await session.add_items(ITEMS[:1])
        return session.session()
    opened = run(use())
    gc.collect()
    assert not any(held.session is opened for held in agents_pool._in_use.values())
    agents_pool.close_idle()
    assert opened.closed


def test_a_session_deleted_meanwhile_is_opened_afresh(store):
    async def check():
        with FsstoreSession("gone", store) as session:
            await session.add_items(ITEMS[:2])
            assert await session.get_items() == ITEMS[:2]
            store.delete_session(session.fsstore_id)
            assert await session.get_items() == []
            await session.add_items(ITEMS[2:3])
            assert await session.get_items() == ITEMS[2:3]
            kept = session.session()
        # Let go, then deleted and made again elsewhere: the idle one is not used.
        store.delete_session(session.fsstore_id)
        with FsstoreSession("gone", other_writer(store)) as elsewhere:
            await elsewhere.add_items(ITEMS[3:4])
        with FsstoreSession("gone", store) as later:
            assert await later.get_items() == ITEMS[3:4]
            await later.add_items(ITEMS[4:5])
            assert later.session() is not kept
        with FsstoreSession("gone", other_writer(store)) as check:
            assert await check.get_items() == ITEMS[3:5]
    run(check())


def test_concurrent_add_items_go_to_the_log_as_one_batch(store, monkeypatch):
    gate = threading.Event()
    original = agents_module._add
    batches = []

    def first_waits(opened, messages):
        gate.wait(30)
        original(opened, messages)

    async def check():
        with FsstoreSession("group", store) as session:
            await session.add_items(ITEMS[:1])  # opened
            monkeypatch.setattr(agents_module, "_add", first_waits)
            messages = session.session().messages
            append_many = messages.append_many

            def counted(batch, **kwargs):
                batches.append(len(batch))
                return append_many(batch, **kwargs)
            monkeypatch.setattr(messages, "append_many", counted)
            first = asyncio.ensure_future(session.add_items(batch("first", 0)))
            await asyncio.sleep(0.05)  # its write waits at the gate
            rest = asyncio.gather(*(session.add_items(batch(f"w{number}", 0))
                                    for number in range(20)))
            await asyncio.sleep(0.05)
            gate.set()
            await first
            await rest
            items = await session.get_items()
        check_batches(items[1:], {"first": 1, **{f"w{number}": 1 for number in range(20)}})
    run(check())
    assert batches == [2, 40]  # the first alone, then the twenty queued behind it


def test_a_refused_call_among_concurrent_ones_is_the_only_one_refused(tmp_path, monkeypatch):
    store = fsstore.open_store(tmp_path / "small", max_record_bytes=4096)
    gate = threading.Event()
    original = agents_module._add

    def first_waits(opened, messages):
        gate.wait(30)
        original(opened, messages)

    async def check():
        with FsstoreSession("refused", store) as session:
            await session.add_items(ITEMS[:1])
            monkeypatch.setattr(agents_module, "_add", first_waits)
            first = asyncio.ensure_future(session.add_items(batch("first", 0)))
            await asyncio.sleep(0.05)
            calls = [batch("a", 0), [{"role": "user", "content": "x" * 10_000}],
                     [{"role": "user", "content": object()}], batch("b", 0)]
            rest = asyncio.gather(*(session.add_items(items) for items in calls),
                                  return_exceptions=True)
            await asyncio.sleep(0.05)
            gate.set()
            await first
            results = await rest
            assert results[0] is None and results[3] is None
            assert isinstance(results[1], RecordTooLarge)
            assert isinstance(results[2], InvalidMessage)
            items = await session.get_items()
        check_batches(items[1:], {"first": 1, "a": 1, "b": 1})
    run(check())
    agents_pool.close_idle()


def test_objects_on_one_store_path_share_one_opened_session(tmp_path):
    path = str(tmp_path / "by-path")

    async def check():
        with FsstoreSession("p", path) as one, FsstoreSession("p", path + "/.") as two:
            await one.add_items(ITEMS[:1])
            assert await two.get_items() == ITEMS[:1]
            assert one.session() is two.session()
    run(check())


def test_objects_sharing_a_session_deleted_elsewhere_both_write_to_the_new_one(store):
    async def check():
        with FsstoreSession("split", store) as one, FsstoreSession("split", store) as two:
            await one.add_items(batch("one", 0))
            assert await two.get_items() == batch("one", 0)
            other_writer(store).delete_session(one.fsstore_id)
            await one.add_items(batch("one", 1))  # makes the session again
            await two.add_items(batch("two", 0))  # its opened session is the old one
            await one.add_items(batch("one", 2))
            expected = batch("one", 1) + batch("two", 0) + batch("one", 2)
            assert await one.get_items() == await two.get_items() == expected
        with FsstoreSession("split", other_writer(store)) as fresh:
            assert await fresh.get_items() == expected
    run(check())


class SegmentFullIO(fsstore.FileIO):
    """Plain I/O whose next write to a log segment, once armed, fails with ENOSPC."""

    armed = False

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> None:
        if self.armed and os.readlink(f"/proc/self/fd/{fd}").endswith(".fslog"):
            self.armed = False
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        super().pwrite(fd, data, offset)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names descriptors by /proc")
def test_a_write_the_disk_refused_leaves_no_broken_session_for_the_next_call(tmp_path):
    io = SegmentFullIO()
    store = fsstore.open_store(tmp_path / "full", io=io)

    async def check():
        with FsstoreSession("full", store) as session:
            await session.add_items(ITEMS[:1])
            io.armed = True
            with pytest.raises(WriteFailed):
                await session.add_items(ITEMS[1:2])
            assert await session.get_items() == ITEMS[:1]  # opened afresh
            await session.add_items(ITEMS[2:3])
        with FsstoreSession("full", store) as later:
            assert await later.get_items() == [ITEMS[0], ITEMS[2]]
    run(check())


def add_after_fork(store) -> None:
    async def main() -> None:
        with FsstoreSession("forked", store) as session:
            await session.add_items(batch("child", 0))
    asyncio.run(main())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_opens_the_session_for_itself(store):
    async def parent_adds(number):
        with FsstoreSession("forked", store) as session:
            await session.add_items(batch("parent", number))
    run(parent_adds(0))  # the parent holds the session open, idle
    made_before = FsstoreSession("forked", store)
    run(made_before.get_items())  # holds the parent's opened session
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            add_after_fork(store)

            async def with_the_parents_object():
                await made_before.add_items(batch("child", 1))
            asyncio.run(with_the_parents_object())
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.01)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the child hung")
    assert os.waitstatus_to_exitcode(status) == 0
    run(parent_adds(1))
    made_before.close()

    async def read():
        with FsstoreSession("forked", other_writer(store)) as session:
            return await session.get_items()
    check_batches(run(read()), {"parent": 2, "child": 2})


def batch(writer: str, number: int, size: int = 2) -> list[dict]:
    return [{"role": "user", "content": f"{writer}:{number}:{k}"} for k in range(size)]


def check_batches(items: list[dict], expected: dict[str, int], size: int = 2) -> None:
    """Every batch is there once, whole and in one piece, and each writer's batches in
    the order it added them."""
    texts = [item["content"] for item in items]
    assert len(texts) == sum(expected.values()) * size
    order: dict[str, list[int]] = {}
    for start in range(0, len(texts), size):
        writer, number, _ = texts[start].split(":")
        assert texts[start:start + size] == [f"{writer}:{number}:{k}" for k in range(size)]
        order.setdefault(writer, []).append(int(number))
    assert order == {writer: list(range(count)) for writer, count in expected.items()}


def test_twenty_concurrent_add_items_lose_nothing(store):
    async def check():
        with FsstoreSession("busy", store) as one, FsstoreSession("busy", store) as two:
            await asyncio.gather(*(
                (one if number % 2 else two).add_items(batch(f"w{number}", 0))
                for number in range(20)))
            items = await one.get_items()
            check_batches(items, {f"w{number}": 1 for number in range(20)})
            assert await two.get_items() == items
    run(check())


def test_concurrent_pops_never_return_one_item_twice(store):
    async def check():
        with FsstoreSession("pops", store) as one, FsstoreSession("pops", store) as two:
            await one.add_items(batch("w", 0, size=20))
            popped = await asyncio.gather(*((one, two)[n % 2].pop_item() for n in range(24)))
            texts = [item["content"] for item in popped if item is not None]
            assert sorted(texts) == sorted(f"w:0:{k}" for k in range(20))
            assert popped.count(None) == 4
    run(check())


def add_batches_child(store_path: str, writer: str, count: str) -> None:
    """A child process: add ``count`` batches to the SDK session "shared" as ``writer``."""
    store = fsstore.open_store(store_path)

    async def main() -> None:
        with FsstoreSession("shared", store) as session:
            print("READY", flush=True)
            for number in range(int(count)):
                await session.add_items(batch(writer, number))
    asyncio.run(main())
    print("DONE END", flush=True)


def test_two_processes_on_one_id_lose_nothing(store):
    count = 40
    with Child.function(add_batches_child, store.path, "p1", count) as one, \
            Child.function(add_batches_child, store.path, "p2", count) as two:
        one.wait_for("READY")
        two.wait_for("READY")
        extra = {"here": 0}

        async def meanwhile() -> None:  # this process adds too, while they run
            with FsstoreSession("shared", store) as session:
                for number in range(10):
                    await session.add_items(batch("here", number))
                    extra["here"] += 1
        run(meanwhile())
        one.wait_for("DONE")
        two.wait_for("DONE")
        one.finish()
        two.finish()

    async def read() -> list:
        with FsstoreSession("shared", store) as session:
            return await session.get_items()
    check_batches(run(read()), {"p1": count, "p2": count, "here": 10})


def add_and_pop_child(store_path: str, writer: str, count: str) -> None:
    """A child process: ``count`` times, add a batch of two to "popping" as ``writer``,
    and every other time pop an item; print what it popped."""
    store = fsstore.open_store(store_path)

    async def main() -> None:
        with FsstoreSession("popping", store) as session:
            print("READY", flush=True)
            for number in range(int(count)):
                await session.add_items(batch(writer, number))
                if number % 2:
                    popped = await session.pop_item()
                    print("POPPED", popped["content"] if popped else "-", flush=True)
    asyncio.run(main())
    print("DONE END", flush=True)


def test_two_processes_adding_and_popping_never_pop_one_item_twice(store):
    count = 30
    with Child.function(add_and_pop_child, store.path, "p1", count) as one, \
            Child.function(add_and_pop_child, store.path, "p2", count) as two:
        one.wait_for("READY")
        two.wait_for("READY")
        lines = one.finish() + two.finish()
    popped = [line.split()[1] for line in lines if line.startswith("POPPED")]
    assert len(popped) == count and "-" not in popped

    async def read() -> list:
        with FsstoreSession("popping", store) as session:
            return [item["content"] for item in await session.get_items()]
    left = run(read())
    added = [item["content"] for writer in ("p1", "p2") for number in range(count)
             for item in batch(writer, number)]
    assert sorted(left + popped) == sorted(added)  # each item popped once or left, once
    assert len(set(popped)) == len(popped)


@pytest.mark.long
@pytest.mark.parametrize("seed", range(5))
def test_long_random_calls_from_two_sessions_read_as_sqlite_session_does(
        store, tmp_path, seed):
    rng = random.Random(seed)
    model = SQLiteSession("model", str(tmp_path / "model.db"))

    async def check():
        with FsstoreSession("long", store) as one, FsstoreSession("long", store) as two:
            counter = 0
            for step in range(3000):
                ours = rng.choice((one, two))
                action = rng.random()
                if action < 0.4:
                    items = [{"role": "user", "content": str(counter + k)}
                             for k in range(rng.randint(1, 6))]
                    counter += len(items)
                    await ours.add_items(items)
                    await model.add_items(items)
                elif action < 0.55:
                    assert await ours.pop_item() == await model.pop_item(), step
                elif action < 0.56:
                    await ours.clear_session()
                    await model.clear_session()
                else:
                    limit = rng.choice((None, 1, 7, 50, -1, 0))
                    assert await ours.get_items(limit) == await model.get_items(limit), step
    run(check())
    model.close()


# --- the event loop ---------------------------------------------------------------------


def test_every_call_runs_its_blocking_part_off_the_event_loop(store, monkeypatch):
    loop_thread = threading.get_ident()
    seen = []
    for name in ("_read_items", "_add", "_pop", "_clear"):
        function = getattr(agents_module, name)

        def spy(*args, function=function, name=name):
            seen.append((name, threading.get_ident() != loop_thread))
            return function(*args)
        monkeypatch.setattr(agents_module, name, spy)

    async def check():
        with FsstoreSession("loop", store) as session:
            await session.add_items(ITEMS[:2])
            await session.get_items()
            await session.pop_item()
            await session.clear_session()
    run(check())
    assert seen == [("_add", True), ("_read_items", True), ("_pop", True),
                    ("_clear", True)]


def test_a_cancelled_add_items_finishes_its_write_before_raising(store, monkeypatch):
    gate, writing = threading.Event(), threading.Event()
    original = agents_module._add

    def slow(opened, batch):
        writing.set()
        gate.wait(30)
        original(opened, batch)
    monkeypatch.setattr(agents_module, "_add", slow)

    async def check():
        with FsstoreSession("cancel", store) as session:
            task = asyncio.ensure_future(session.add_items(ITEMS[:1]))
            while not writing.is_set():  # cancelled once its write is under way
                await asyncio.sleep(0.001)
            task.cancel()
            await asyncio.sleep(0.01)
            assert not task.done()  # it waits for the write
            gate.set()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await session.get_items() == ITEMS[:1]
    run(check())


def test_a_closed_session_refuses_calls(store):
    session = FsstoreSession("closed", store)
    run(session.add_items(ITEMS[:1]))
    session.close()
    for call in (session.get_items(), session.add_items(ITEMS[:1]), session.pop_item(),
                 session.clear_session()):
        with pytest.raises(SessionClosed):
            run(call)


# --- the SDK's Runner, end to end -------------------------------------------------------


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return {"Paris": "14 C, cloudy", "Oslo": "-3 C, snow"}.get(city, "unknown")


@function_tool
def add(a: int, b: int) -> int:
    """a + b."""
    return a + b


def script() -> ScriptedModel:
    """Three turns: one tool call, two tool calls at once then another, no tool."""
    return ScriptedModel([
        [function_call("get_weather", {"city": "Paris"}, call_id="call_1")],
        [assistant_message("Paris: 14 C, cloudy.")],
        [function_call("get_weather", {"city": "Oslo"}, call_id="call_2"),
         function_call("add", {"a": 2, "b": 40}, call_id="call_3")],
        [function_call("add", {"a": 1, "b": 1}, call_id="call_4")],
        [assistant_message("Oslo: -3 C; 2 + 40 = 42; 1 + 1 = 2.")],
        [assistant_message("You asked about Paris and Oslo.")],
    ])


async def converse(session) -> list:
    model = script()
    agent = Agent(name="helper", instructions="Help.", model=model,
                  tools=[get_weather, add])
    config = RunConfig(tracing_disabled=True)
    outputs = []
    for question in ("Weather in Paris?", "Oslo, and 2 + 40, then 1 + 1?",
                     "What did I ask?"):
        result = await Runner.run(agent, question, session=session, run_config=config)
        outputs.append(result.final_output)
    model.assert_complete()
    # The model saw the history the session gave back: the whole conversation.
    assert len(model.last_call.input) > 10
    return outputs


def test_runner_stores_the_same_items_in_fsstore_as_in_sqlite_session(sessions, store):
    ours, theirs = sessions

    async def both():
        return await converse(ours), await converse(theirs)

    mine, reference = run(both())
    assert mine == reference == ["Paris: 14 C, cloudy.", "Oslo: -3 C; 2 + 40 = 42; 1 + 1 = 2.",
                                 "You asked about Paris and Oslo."]
    items, expected = run(ours.get_items()), run(theirs.get_items())
    assert items == expected
    kinds = [item.get("type", "message") for item in items]
    assert kinds.count("function_call") == kinds.count("function_call_output") == 4
    # The conversation reads as messages too, tool calls paired with their results.
    messages = store.read_session(ours.fsstore_id).messages.all()
    assert len(messages) == len(items)
    assert sorted(c.call_id for m in messages for c in m.tool_calls) == [
        "call_1", "call_2", "call_3", "call_4"]
    assert not any(r.orphan for m in messages for r in m.tool_results)
