"""fsstore/_chainhash.c: the writer's running SHA-256 gives hashlib's bytes, and a chained
writer writes the same frames through it as through hashlib (its fallback)."""

from __future__ import annotations

import hashlib
import hmac
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fsstore
from fsstore import chain
from fsstore.chain import Mac
from fsstore.chain_frames import RunState

Sha256 = chain.writer_sha256()
built = pytest.mark.skipif(Sha256 is None, reason="fsstore._chainhash was not built here")
KEY = bytes(range(32))
chunks = st.lists(st.binary(max_size=300), max_size=8)


@pytest.fixture
def hashlib_only(monkeypatch):
    """chain.py as where _chainhash was not built: Macs made now hash through hashlib."""
    monkeypatch.setattr(chain, "_writer_sha256", None)
    assert chain.writer_sha256() is None


@built
@settings(max_examples=60, deadline=None)
@given(start=st.binary(max_size=100), parts=chunks)
def test_its_states_give_hashlibs_digests_and_copies_go_their_own_way(start, parts):
    ours, theirs = Sha256(start), hashlib.sha256(start)
    for part in parts:
        before = ours.copy()
        ours.update(part)
        theirs.update(part)
        assert ours.digest() == theirs.digest()
        assert before.digest() != ours.digest() or not part
    assert ours.digest() == ours.digest()  # a digest leaves the state as it was
    ours.update(memoryview(b"view"))
    ours.update(bytearray(b"array"))
    theirs.update(b"viewarray")
    assert ours.digest() == theirs.digest()


@built
@settings(max_examples=60, deadline=None)
@given(message=st.binary(max_size=2000), key=st.binary(min_size=32, max_size=64))
def test_a_keyed_step_makes_rfc_2104s_hmac(message, key):
    padded = key.ljust(64, b"\0")
    inner = Sha256(bytes(b ^ 0x36 for b in padded))
    outer = Sha256(bytes(b ^ 0x5C for b in padded))
    expected = hmac.new(key, message, "sha256").digest()
    assert inner.copy().step(message, b"", b"", b"", outer) == expected
    assert inner.copy().step(b"", message, b"", b"", outer) == expected
    assert outer.digest() == Sha256(bytes(b ^ 0x5C for b in padded)).digest()  # not moved


@built
def test_an_update_of_many_bytes_hashes_as_hashlib_does():
    # from 64 KiB, the update runs with the GIL released, on a copy stored back after
    data = os.urandom(3 << 20)
    state = Sha256(b"domain")
    state.update(data)
    state.update(memoryview(data)[:70000])
    assert state.digest() == hashlib.sha256(b"domain" + data + data[:70000]).digest()


@built
@settings(max_examples=60, deadline=None)
@given(parts=st.tuples(st.binary(max_size=200), st.binary(max_size=2000),
                       st.binary(max_size=40), st.binary(max_size=8)),
       keyed=st.booleans())
def test_a_step_is_the_hashlib_step(parts, keyed):
    head, body, anchor, trailer = parts
    outer_start = bytes(b ^ 0x5C for b in KEY.ljust(64, b"\0"))
    ours, theirs = Sha256(b"x"), hashlib.sha256(b"x")
    value = Sha256.step(ours, head, body, anchor, trailer,
                        Sha256(outer_start) if keyed else None)
    assert value == chain._hashlib_step(theirs, head, body, anchor, trailer,
                                        hashlib.sha256(outer_start) if keyed else None)
    assert ours.digest() == theirs.digest()  # both went on over the value and trailer


@built
def test_a_step_refused_leaves_the_state_as_it_was():
    state = Sha256(b"domain")
    before = state.digest()
    for args in ((b"h", "text", b"", b"", None), (b"h", b"b", b"", 5, None),
                 (b"h", b"b", b"", b"", hashlib.sha256()), (b"h", b"b")):
        with pytest.raises(TypeError):
            state.step(*args)
        assert state.digest() == before
    with pytest.raises(TypeError):
        state.update("text")
    with pytest.raises(TypeError, match="positionally"):
        Sha256(data=b"x")
    assert state.digest() == before


@built
@pytest.mark.parametrize("key", [None, KEY], ids=["sha256", "hmac-sha256"])
def test_a_run_frames_the_same_bytes_through_it_and_through_hashlib(key, monkeypatch):
    fast = RunState(Mac(key), bytes(range(32)))
    monkeypatch.setattr(chain, "_writer_sha256", None)
    slow = RunState(Mac(key), bytes(range(32)))
    for seq in range(1, 40):
        payload = bytes([seq]) * (seq * 37)
        assert fast.frame(payload, seq, 1) == slow.frame(payload, seq, 1)
        assert fast.link == slow.link
    copy = fast.copy()
    assert copy.frame(b"p" * 9, 40, 1) == fast.frame(b"p" * 9, 40, 1)


@pytest.mark.parametrize("key", [None, KEY], ids=["sha256", "hmac-sha256"])
def test_a_session_written_through_hashlib_reads_and_verifies(tmp_path, hashlib_only, key):
    store = fsstore.open_store(str(tmp_path / "store"), chain_key=key, segment_size=8192)
    with store.create_session("s") as session:
        for n in range(200):
            session.append({"role": "user", "content": f"turn {n} " * 20})
    with store.open_session("s") as session:  # a writer takes up the run again
        session.append({"role": "assistant", "content": "last"})
        head = session.head_hash
    reader = store.read_session("s")
    assert [e.data["content"] for e in reader.events()][-1] == "last"
    assert reader.head_hash == head
    assert len(list((tmp_path / "store").rglob("*.fslog"))) > 2  # runs across segments
    assert reader.verify(expect_head=head, exact=True) == []
    assert store.verify(["s"]) == []
