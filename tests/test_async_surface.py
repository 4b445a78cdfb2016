"""Every blocking public call has an async twin ``aNAME`` with the same parameters
(fsstore/aio.py), and the twins run in a worker thread, never on the event loop."""

from __future__ import annotations

import asyncio
import inspect
import keyword

import pytest

import fsstore
from fsstore import SessionChange
from fsstore.blobs import BlobReader, BlobStore
from fsstore.messages import Messages, MessagesReader
from fsstore.session import Session, SessionReader
from fsstore.store import Store
from fsstore.vectors import VectorCollection, VectorCollectionReader
from fsstore.watch import SessionWatcher, StoreWatcher
from fsstore.work import TurnInputs, TurnInputsReader, WorkQueue, WorkQueueReader

#: Public methods that never block, so need no twin; each with the reason. Keyed by the
#: class that has the method (inherited ones too), so each class says why for itself.
NOT_BLOCKING = {
    "Store.close": "closes the descriptors the store keeps; takes no lock, writes nothing",
    "SessionReader.watch": "returns a watcher, itself an async iterator (`async for`)",
    "Session.watch": "returns a watcher, itself an async iterator (`async for`)",
    "SessionWatcher.start": "starts the callback thread and returns; the calls are in it",
    "StoreWatcher.start": "starts the callback thread and returns; the calls are in it",
    "MessagesReader.__iter__": "a protocol method: use aall() for the messages",
    "MessagesReader.__len__": "a protocol method: use acount()",
    "Session.operation": "returns a context manager for calls made in one thread (the "
                         "mutex is the entering thread's): async code enters it in the "
                         "worker thread that makes the calls",
}

#: Properties that read the disk or wait for a lock: each has a twin ``aNAME()``. (The
#: other properties answer from memory.)
BLOCKING_PROPERTIES = {
    "SessionReader": {"head", "revision", "log_tail"},  # read the log's tail
    "Session": {"head", "revision", "log_tail", "current_turn"},  # and wait for the mutex
}

#: Parameters an iterator's twin adds: how much it reads in one trip to a worker thread.
TWIN_ONLY_PARAMETERS = {"aevents": {"batch"}}

CLASSES = [Store, SessionReader, Session, BlobReader, BlobStore, WorkQueueReader, WorkQueue,
           TurnInputsReader, TurnInputs, VectorCollectionReader, VectorCollection,
           SessionWatcher, StoreWatcher, MessagesReader, Messages]


def twin_name(name: str) -> str:
    """``a`` + the name; ``async_`` for ``sync``, as ``async`` is a keyword."""
    twin = "a" + name
    return twin + "_" if keyword.iskeyword(twin) else twin


def is_async(function: object) -> bool:
    """A coroutine function, or a function that returns an async iterator (``aevents``
    checks its arguments at the call, then hands back its async generator)."""
    returns = getattr(function, "__annotations__", {}).get("return", "")
    return (inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function)
            or str(returns).startswith("AsyncIterator["))


def public_methods(cls: type) -> dict[str, object]:
    """Public methods of ``cls`` (inherited ones too), properties left out."""
    found = {}
    for name in dir(cls):
        if name.startswith("_") or isinstance(inspect.getattr_static(cls, name), property):
            continue
        value = getattr(cls, name)
        if callable(value):
            found[name] = value
    return found


def parameters(function: object, drop: set[str] = frozenset()) -> list[tuple]:
    """What a caller sees of a signature: each parameter's name, kind and default (the
    types are mypy's to check: fsstore/aio.py spells them out)."""
    return [(p.name, p.kind, p.default)
            for p in inspect.signature(function).parameters.values()
            if p.name != "self" and p.name not in drop]


def surface_problems(cls: type) -> list[str]:
    methods = public_methods(cls)
    problems = []
    for name, method in sorted(methods.items()):
        if is_async(method):
            continue
        if f"{cls.__name__}.{name}" in NOT_BLOCKING:
            continue
        twin = methods.get(twin_name(name))
        if twin is None or not is_async(twin):
            problems.append(f"{cls.__name__}.{name} has no async twin {twin_name(name)}")
            continue
        extra = TWIN_ONLY_PARAMETERS.get(twin_name(name), set())
        if parameters(method) != parameters(twin, drop=extra):
            problems.append(f"{cls.__name__}.{twin_name(name)}{inspect.signature(twin)} is "
                            f"not {name}{inspect.signature(method)}")
    properties = {name for name in dir(cls)
                  if isinstance(inspect.getattr_static(cls, name), property)}
    for name in sorted(BLOCKING_PROPERTIES.get(cls.__name__, set())):
        assert name in properties, f"{cls.__name__}.{name} is no longer a property"
        twin = methods.get(twin_name(name))
        if twin is None or not is_async(twin) or parameters(twin):
            problems.append(f"{cls.__name__}.{name} reads the disk: it needs a twin "
                            f"{twin_name(name)}() taking no arguments")
    for name, twin in sorted(methods.items()):
        if is_async(twin) and not any(twin_name(n) == name for n in {*methods, *properties}
                                      if n != name):
            problems.append(f"{cls.__name__}.{name} is the twin of no method")
    return problems


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_blocking_public_method_has_an_async_twin_with_its_parameters(cls):
    assert surface_problems(cls) == []


def test_the_surface_check_finds_a_method_without_a_twin_and_a_twin_that_drifted():
    class Thing(fsstore.aio.AsyncWorkQueueReaderMixin):
        def items(self, status=None, *, newest=False):
            return []

        def count(self):
            return 0

    missing, drifted = surface_problems(Thing)
    assert missing == "Thing.count has no async twin acount"
    assert drifted.startswith("Thing.aitems(") and "newest=False" in drifted


def test_open_store_has_an_async_twin_with_its_parameters():
    assert parameters(fsstore.open_store) == parameters(fsstore.aopen_store)
    assert inspect.iscoroutinefunction(fsstore.aopen_store)
    assert parameters(fsstore.find_store) == parameters(fsstore.afind_store)
    assert inspect.iscoroutinefunction(fsstore.afind_store)
    assert inspect.iscoroutinefunction(fsstore.afind_store)


def test_every_allowlisted_method_exists_and_says_why():
    for qualname, why in NOT_BLOCKING.items():
        owner, name = qualname.split(".")
        (cls,) = [c for c in CLASSES if c.__name__ == owner]
        assert not is_async(getattr(cls, name)) and why


# --- the twins at work -----------------------------------------------------------------------


def test_async_twins_open_append_read_state_blobs_queue_inputs_and_search(tmp_path):
    async def main():
        store = await fsstore.aopen_store(tmp_path / "store")
        session = await store.acreate_session("s", title="async")
        async with session:
            assert await session.aappend({"role": "user"}, kind="message") == 1
            assert await session.aappend_many([{"n": 1}, {"n": 2}], turn=1) == [2, 3]
            await session.aset_state("k", 1)
            await session.amerge_state({"m": {"x": 1}})
            ref = await session.blobs.aput(b"attached", "text/plain")
            await session.acommit([{"ref": ref}], state_patch={"k": 2})
            job = await session.queue.aenqueue("job", {"j": 1})
            claim = await session.queue.aclaim("worker", 30)
            assert claim is not None and claim.id == job
            await session.queue.acomplete(claim)
            await session.inputs.asubmit("more")
            memory = await session.acreate_collection("memory", 3)
            assert await memory.aupsert([fsstore.VectorDocument("d1", [1.0, 0.0, 0.0]),
                                         fsstore.VectorDocument("d2", [0.0, 1.0, 0.0])]) == 2
            assert await memory.acount() == 2
            await session.afinish_turn(checkpoint=True)
            await session.async_()
            await session.aupdate_metadata(tags=["t"])  # title not given: it stays
        assert session.closed
        (hit,) = await store.asearch("memory", [1.0, 0.1, 0.0], k=1)
        assert hit.id == "d1" and hit.session_id == "s"
        reader = await store.aread_session("s")
        assert (reader.title, reader.tags) == ("async", ["t"])
        assert await reader.astate() == {"k": 2, "m": {"x": 1}}
        assert await reader.blobs.aget(ref) == b"attached"
        assert await reader.queue.aitems() == []
        assert [i.payload for i in await reader.inputs.aitems("pending")] == ["more"]
        assert [c.kind for c in await reader.acheckpoints()] == ["turn"]
        assert [e.seq async for e in reader.aevents(limit=3, batch=2)] == [1, 2, 3]
        assert [e.seq async for e in reader.aevents(last=2, include_internal=True)] == [
            e.seq for e in reader.events(last=2, include_internal=True)]
        assert [i.id for i in await store.alist_sessions()] == ["s"]
        assert await reader.averify() == []
        await store.adelete_session("s")
        assert not await store.ahas_session("s")

    asyncio.run(main())


def test_a_blocked_shared_open_does_not_block_the_event_loop(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    holder = store.create_session("s")  # holds the writer lock: a shared open waits

    async def main():
        ticks = 0
        opening = asyncio.ensure_future(store.aopen_session("s", shared=True,
                                                            lock_timeout=30))
        while ticks < 3:  # the loop runs while the open waits in its thread
            await asyncio.sleep(0.01)
            ticks += 1
            assert not opening.done()
        # Only now is the lock given up: had the open blocked the loop, the ticks would
        # not have run, the lock would never come free, and the open would time out.
        await holder.aclose()
        shared = await opening
        await shared.aappend({"after": "wait"})
        await shared.aclose()

    asyncio.run(main())
    assert [e.data for e in store.read_session("s").events()] == [{"after": "wait"}]


def test_twins_run_their_method_in_a_worker_thread(tmp_path, monkeypatch):
    import threading

    store = fsstore.open_store(tmp_path / "store")
    seen = []
    real = Session.set_state

    def recording(self, *args, **kwargs):
        seen.append(threading.current_thread())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Session, "set_state", recording)

    async def main():
        async with await store.acreate_session("s") as session:
            await session.aset_state("k", 1)
            return threading.current_thread()

    loop_thread = asyncio.run(main())
    assert len(seen) == 1 and seen[0] is not loop_thread


def test_watcher_twins_wait_read_and_close_without_blocking_the_loop(store):
    store.create_session("s").close()

    async def main():
        reader = await store.aread_session("s")
        async with reader.watch(poll_interval=0.05) as events, \
                store.watch(poll_interval=0.05) as sessions:
            assert await events.apoll() == [] and await sessions.apoll() == []
            waiting = asyncio.ensure_future(events.aget(timeout=30))
            await asyncio.sleep(0)  # the get is under way in its thread
            async with await store.aopen_session("s") as session:
                await session.aappend({"n": 1})
            assert [e.data for e in await waiting] == [{"n": 1}]
            assert await sessions.aget(timeout=30) == [SessionChange("changed", "s", 1, 1)]
        assert events.closed and sessions.closed
        watcher = reader.watch(poll_interval=0.05)
        await watcher.aclose()
        assert watcher.closed

    asyncio.run(main())


def test_aevents_refuses_a_batch_below_one(store):
    with store.create_session("s") as session:
        session.append({"n": 1})
    reader = store.read_session("s")

    async def main():
        return [e async for e in reader.aevents(batch=0)]

    with pytest.raises(fsstore.InvalidSetting, match="batch"):
        asyncio.run(main())


@pytest.mark.parametrize("arguments, error", [
    ({"batch": 0}, fsstore.InvalidSetting),
    ({"last": -1}, fsstore.InvalidSetting),
    ({"limit": "3"}, fsstore.InvalidSetting),
    ({"after_seq": -1}, fsstore.InvalidSeq),
    ({"until_seq": "5"}, fsstore.InvalidSeq),
])
def test_aevents_refuses_its_arguments_at_the_call_as_events_does(store, arguments, error):
    with store.create_session("s") as session:
        session.append({"n": 1})
    reader = store.read_session("s")
    with pytest.raises(error):
        reader.aevents(**arguments)  # no ``async for`` needed to be told
    if "batch" not in arguments:
        with pytest.raises(error):
            reader.events(**arguments)


def test_a_fork_twin_takes_the_forks_named_arguments(store):
    with store.create_session("s", title="parent", tags=["t"]) as session:
        session.append({"n": 1})

        async def main():
            child = await session.afork("c", title="child")
            child.close()

        asyncio.run(main())
        with pytest.raises(TypeError):
            session.fork("d", bogus=1)  # spelled out: a misspelt option is not swallowed
    reader = store.read_session("c")
    assert (reader.title, reader.tags) == ("child", ["t"])


def test_aevents_is_one_read_and_stops_at_a_prefix_when_the_log_is_cleared(store):
    with store.create_session("s") as session:
        session.append_many([{"i": i, "pad": "x" * 40} for i in range(200)])
        reader = store.read_session("s")

        async def main():
            seen = []
            async for event in reader.aevents(batch=10):
                seen.append(event)
                if len(seen) == 10:  # between two batches
                    session.clear()
                    session.append_many([{"after": j} for j in range(3)])
            return seen

        seen = asyncio.run(main())
    assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
    assert all("i" in e.data for e in seen)  # nothing of the log the clear started


def test_properties_that_read_the_disk_have_async_twins(store):
    with store.create_session("s") as session:
        session.append({"n": 1})
        session.finish_turn()

        async def main():
            reader = store.read_session("s")
            assert (await reader.alog_tail()).head == reader.head
            return (await reader.ahead(), await reader.arevision(), await session.ahead(),
                    await session.acurrent_turn(), await fsstore.afind_store(store.path))

        head, revision, writer_head, turn, found = asyncio.run(main())
        assert turn == session.current_turn == 1
    assert (head, revision, writer_head, turn) == (store.read_session("s").head,
                                                   store.read_session("s").revision, 2, 1)
    assert found == store.path


def test_a_store_closes_at_the_end_of_async_with(tmp_path, monkeypatch):
    closed = []
    monkeypatch.setattr(fsstore.Store, "close", lambda self: closed.append(self))

    async def main():
        async with await fsstore.aopen_store(tmp_path / "s") as store:
            (await store.acreate_session("a")).close()
        return store

    assert closed == [asyncio.run(main())]


def test_a_store_watcher_starts_in_a_worker_thread(store):
    store.create_session("s").close()

    async def main():
        watcher = await store.awatch(include_existing=True, poll_interval=0.05)
        async with watcher:
            return await watcher.aget(timeout=5)

    assert [(c.kind, c.session_id) for c in asyncio.run(main())] == [("created", "s")]
