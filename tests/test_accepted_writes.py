"""A write that is accepted can always be read back; a write that is refused changes nothing.

Arbitrary values (extension types, raw msgpack, deep nesting, huge strings, non-str and
bytes keys, NaN and infinities, big ints, tuples, sets, objects) are thrown at every
call that stores a caller's value: events, commits, the state, the session metadata, the
work queue, turn inputs and vector documents. Whatever a call accepts must read back
equal (by msgpack encoding, so NaN equals NaN and a tuple its list) from a store opened
afresh; whatever it refuses must raise an FsStoreError and leave every file of the store
as it was.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from conftest import tree_snapshot
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import fsstore
from fsstore.state import merge_patch

# A huge string's repr is a megabyte: hypothesis warns when it reports one.
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")


class Opaque:
    """A value no serializer knows."""

    def __repr__(self) -> str:
        return "Opaque()"


def nest(depth: int) -> Any:
    value: Any = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"d": value}
    return value


HUGE = "x" * (1 << 20) + "y"  # over a manifest's limit; under a log record's

# Values every layer either stores faithfully or refuses with a typed error today.
plain_leaves = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    | st.text(alphabet=st.characters(categories=["Cs"]), min_size=1, max_size=2)
    | st.binary(max_size=8) | st.just(HUGE) | st.builds(Opaque)
    | st.sets(st.integers(-5, 5), max_size=3) | st.frozensets(st.text(max_size=2), max_size=2)
    | st.sampled_from([2**64, -(2**63) - 1, 2**200]) | st.builds(nest, st.integers(60, 70))
)
keys = (st.text(max_size=6) | st.integers() | st.binary(max_size=4) | st.booleans()
        | st.none() | st.floats(allow_nan=False) | st.tuples(st.integers(0, 3)))


def values_from(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda children: st.lists(children, max_size=3) | st.tuples(children, children)
        | st.dictionaries(keys, children, max_size=3)
        | st.dictionaries(st.text(max_size=6), children, max_size=3),
        max_leaves=6)


plain_values = values_from(plain_leaves)
# Values that need the log's and the vectors' writers to refuse what their readers
# refuse: msgpack extension types, raw msgpack, nesting past the recursion limit.
hazard_leaves = (st.builds(msgspec.msgpack.Ext, st.integers(-128, 127), st.binary(max_size=4))
                 | st.sampled_from([msgspec.Raw(b"\xc1"), msgspec.Raw(b"\x01"),
                                    msgspec.Raw(b"\xd4\x05\x00")])
                 | st.builds(nest, st.sampled_from([200, 3000])))
hazard_values = values_from(plain_leaves | hazard_leaves).filter(
    lambda value: _has_hazard(value))


def _has_hazard(value: Any) -> bool:
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (msgspec.msgpack.Ext, msgspec.Raw)) or depth > 150:
            return True
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend((child, depth + 1) for child in item)
    return False


def same(read: Any, expected: Any) -> bool:
    """Equal as stored: NaN equals NaN, -0.0 is not 0.0, a tuple or a set reads back a
    list (msgpack has only arrays), raw msgpack reads back decoded; maps compare by key
    regardless of order (a JSON manifest sorts its keys)."""
    if isinstance(expected, msgspec.Raw) or (
            isinstance(expected, msgspec.msgpack.Ext) and expected.code == -1):
        # Raw msgpack is stored as its bytes; extension -1 is msgpack's own timestamp,
        # which reads back as a datetime (docs/FORMAT.md, section 3).
        expected = msgspec.msgpack.decode(msgspec.msgpack.encode(expected))
    if isinstance(expected, (tuple, set, frozenset)):
        expected = list(expected)
    if isinstance(read, tuple):  # a map key that was an array
        read = list(read)
    if isinstance(expected, float) and isinstance(read, float):
        if math.isnan(expected):
            return math.isnan(read)
        return read == expected and math.copysign(1, read) == math.copysign(1, expected)
    if type(read) is not type(expected):
        return False
    if isinstance(expected, list):
        return len(read) == len(expected) and all(map(same, read, expected))
    if isinstance(expected, dict):
        if len(read) != len(expected):
            return False
        for key, value in expected.items():
            matches = [k for k in read if same(k, key)]
            if len(matches) != 1 or not same(read[matches[0]], value):
                return False
        return True
    return bool(read == expected)


class NoSyncIO(fsstore.FileIO):
    """No fsyncs: durability is not what these tests are about, and they are many."""

    def fsync(self, fd: int) -> None:
        pass

    def fdatasync(self, fd: int) -> None:
        pass

    def fsync_dir(self, path: str) -> None:
        pass


IO = NoSyncIO()


# --- the calls ------------------------------------------------------------------------------
#
# Each call gets a store holding session "s" (with a collection "c") and a value; it
# writes the value and returns a reader of what it wrote: (reader, expected), where
# reader(store) gives the reader's view in a store opened afresh.

Reader = Callable[[fsstore.Store], Any]


def _last_events(n: int) -> Reader:
    return lambda store: [e.data for e in
                          store.read_session("s").events(include_internal=True)][-n:]


def append(session: fsstore.Session, value: Any) -> tuple[Reader, Any]:
    session.append({"v": value})
    return _last_events(1), [{"v": value}]


def append_many(session: fsstore.Session, value: Any) -> tuple[Reader, Any]:
    session.append_many([{"v": value}, {"w": [value]}])
    return _last_events(2), [{"v": value}, {"w": [value]}]


def commit(session: fsstore.Session, value: Any) -> tuple[Reader, Any]:
    session.commit([{"v": value}], state_patch={"k": value})
    return (lambda store: [_last_events(2)(store)[0], store.read_session("s").state()],
            [{"v": value}, merge_patch({}, {"k": value})])


def commit_events(session: fsstore.Session, value: Any) -> tuple[Reader, Any]:
    session.commit([{"v": value}, {"w": value}], commit_id="c")
    return _last_events(3), [{"v": value}, {"w": value}, {"ops": [], "commit": "c", "events": 2}]


def commit_state_only(session: fsstore.Session, value: Any) -> tuple[Reader, Any]:
    session.commit([], state_patch={"k": value, "j": [value]})
    return (lambda store: store.read_session("s").state(),
            merge_patch({}, {"k": value, "j": [value]}))


def set_state(session: fsstore.Session, value: Any) -> tuple[Reader, Any]:
    session.set_state("k", value)
    return lambda store: store.read_session("s").state(), {"k": value}


def merge_state(session: fsstore.Session, value: Any) -> tuple[Reader, Any]:
    session.merge_state({"k": value})
    return lambda store: store.read_session("s").state(), merge_patch({}, {"k": value})


def _metadata_view(session_id: str) -> Reader:
    def read(store: fsstore.Store) -> Any:
        reader = store.read_session(session_id)
        assert [i.id for i in store.list_sessions()] == sorted(store.session_ids())
        return [reader.title, reader.tags, reader.metadata]
    return read


def _title_tags(value: Any) -> tuple[Any, Any]:
    return (value, [value]) if isinstance(value, str) else ("t", ["a"])


def update_metadata(session: fsstore.Session, value: Any) -> tuple[Reader, Any]:
    title, tags = _title_tags(value)
    session.update_metadata(title=title, tags=tags, metadata={"v": value})
    return _metadata_view("s"), [title, tags, {"v": value}]


def save_metadata(session: fsstore.Session, value: Any) -> tuple[Reader, Any]:
    title, tags = _title_tags(value)
    session.save_session_with_updates([], title=title, tags=tags, metadata={"v": value})
    return _metadata_view("s"), [title, tags, {"v": value}]


def save_updates(session: fsstore.Session, value: Any) -> tuple[Reader, Any]:
    session.save_session_with_updates([{"v": value}], metadata={"m": 1})
    return ((lambda store: [_last_events(2)(store)[0], store.read_session("s").metadata]),
            [{"v": value}, {"m": 1}])


def enqueue(session: fsstore.Session, value: Any) -> tuple[Reader, Any]:
    session.queue.enqueue_many([("job", value), ("job", [value])])
    return (lambda store: [w.payload for w in store.read_session("s").queue.items()],
            [value, [value]])


def queue_cycle(session: fsstore.Session, value: Any) -> tuple[Reader, Any]:
    text = value if isinstance(value, str) else "job"
    session.queue.enqueue(text, value)
    claim = session.queue.claim(text, 60)
    assert claim is not None
    session.queue.fail(claim, text)

    def read(store: fsstore.Store) -> Any:
        (item,) = store.read_session("s").queue.items()
        return [item.kind, item.payload, item.error, item.attempts]
    return read, [text, value, text[:4096], 1]


def submit_input(session: fsstore.Session, value: Any) -> tuple[Reader, Any]:
    session.inputs.submit(value)
    return lambda store: [i.payload for i in store.read_session("s").inputs.items()], [value]


def upsert(session: fsstore.Session, value: Any) -> tuple[Reader, Any]:
    content = value if isinstance(value, str) else None
    session.collection("c").upsert([{"id": "d", "embedding": [1.0, 0.0], "content": content,
                                     "metadata": {"m": value}}])

    def read(store: fsstore.Store) -> Any:
        (document,) = store.read_session("s").collection("c").get(["d"])
        return [document.content, document.metadata]
    return read, [content, {"m": value}]


SESSION_CALLS = {f.__name__: f for f in (
    append, append_many, commit, commit_events, commit_state_only, set_state, merge_state,
    update_metadata, save_metadata, save_updates, enqueue, queue_cycle, submit_input,
    upsert)}


# Calls whose values go to a writer another part of fsstore owns: the log's (events) and
# the vectors' (documents). Until those writers refuse what their readers refuse, hazard
# values (Ext, Raw, nesting past the recursion limit) are accepted and then unreadable.
def check_session_call(name: str, value: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "store")
        store = fsstore.open_store(path, durability="none", io=IO)
        with store.create_session("s") as session:
            session.create_collection("c", 2)
            session.append({"first": True})
            before = tree_snapshot(path)
            try:
                read, expected = SESSION_CALLS[name](session, value)
            except fsstore.FsStoreError:
                assert tree_snapshot(path) == before, f"{name} refused, yet changed files"
                return
        got = read(fsstore.open_store(path, create=False, io=IO))
        assert same(got, expected), f"{name} accepted {value!r:.200} but reads {got!r:.200}"


def check_create_session(value: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "store")
        store = fsstore.open_store(path, durability="none", io=IO)
        before = tree_snapshot(path)
        title, tags = _title_tags(value)
        try:
            store.create_session("n", title=title, tags=tags, metadata={"v": value}).close()
        except fsstore.FsStoreError:
            assert tree_snapshot(path) == before, "create_session refused, yet changed files"
            return
        got = _metadata_view("n")(fsstore.open_store(path, create=False, io=IO))
        assert same(got, [title, tags, {"v": value}]), f"accepted {value!r:.200}, read {got!r:.200}"


def _examples(long_run: bool, default: int, shrink: bool = True) -> settings:
    phases = [Phase.explicit, Phase.reuse, Phase.generate] + ([Phase.shrink] if shrink else [])
    return settings(max_examples=default * 10 if long_run else default, deadline=None,
                    phases=phases, suppress_health_check=[
                        HealthCheck.too_slow, HealthCheck.data_too_large,
                        HealthCheck.filter_too_much])


@pytest.mark.parametrize("name", sorted(SESSION_CALLS))
def test_accepted_values_read_back_and_refused_ones_change_nothing(name, long_run):
    @_examples(long_run, 10)
    @given(plain_values)
    def check(value: Any) -> None:
        check_session_call(name, value)
    check()


def test_create_session_metadata_reads_back_or_changes_nothing(long_run):
    @_examples(long_run, 20)
    @given(plain_values | hazard_values)
    def check(value: Any) -> None:
        check_create_session(value)
    check()


@pytest.mark.parametrize("name", sorted(SESSION_CALLS))
def test_extension_types_raw_msgpack_and_deep_nesting_are_refused_or_read_back(
        name, long_run):
    @_examples(long_run, 5)
    @given(hazard_values)
    def check(value: Any) -> None:
        check_session_call(name, value)
    check()


@pytest.mark.parametrize("value", [
    float("nan"), {1: "a"}, {b"x": 1}, (1, 2), "\ud800", HUGE, nest(70), 2**64, {1, 2},
    Opaque(), msgspec.msgpack.Ext(1, b"x"), nest(3000),
], ids=lambda value: repr(value)[:20] if not isinstance(value, (list, dict)) else "nested")
@pytest.mark.parametrize("call", ["create_session", "update_metadata", "save_metadata"])
def test_each_metadata_call_refuses_or_reads_back_the_same(call, value):
    # The hypothesis runs above sample these; here each is pinned for every call.
    if call == "create_session":
        check_create_session(value)
    else:
        check_session_call(call, value)
