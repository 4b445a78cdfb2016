"""Chained sessions (docs/FORMAT.md 3.4) written by the store itself: a store whose policy
chains new sessions, their writer (appends, rollover, clear, reopen, shared writers),
forks that continue a chain, ``head_hash``, keys, and the rewriters that refuse a chained
session until they can keep its chain.

The edits of tests/test_chain_frames.py (made there on logs built with the encoder) are
made here on logs the writer wrote, with its helpers, and must be caught the same way."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import struct

import pytest
from procs import Child
from test_chain_frames import Log, edit_payload, events_of, rechain

import fsstore
from fsstore import (
    ChainKeyMismatch,
    ChainKeyRequired,
    CorruptionError,
    chain,
)
from fsstore.chain import ChainKey, Mac
from fsstore.chain_frames import RunState
from fsstore.cli import main
from fsstore.log_format import FRAME_CHAIN_START, FRAME_CHAINED, _parse_frame
from fsstore.segment_header import (
    SEGMENT_HEADER_SIZE,
    decode_segment_header,
    encode_segment_header,
    mark_segment_header,
)

KEY = bytes(range(100, 132))
OTHER_KEY = bytes(range(1, 33))
MODES = [pytest.param(None, id="unkeyed"), pytest.param(KEY, id="keyed")]


def chained_store(path, key=None, **settings):
    return fsstore.open_store(path, chain=True, chain_key=key, **settings)


def fill(session, count, first=0, size=60):
    """``count`` events of the same size (their numbers below 128 keep them so)."""
    for n in range(first, first + count):
        session.append({"n": n % 100, "text": "x" * size})


def manifest_of(store, session_id):
    path = os.path.join(store.path, "sessions", session_id, "session.json")
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def log_of(store, session_id, key=None):
    """The session's log as tests/test_chain_frames.py's ``Log``: its segments and the
    offsets of their frames, walked from the files."""
    path = os.path.join(store.path, "sessions", session_id, "log")
    log = Log(path, Mac(key), int(manifest_of(store, session_id)["uid"], 16))
    for name in sorted(os.listdir(path)):
        if not name.endswith(".fslog"):
            continue
        with open(os.path.join(path, name), "rb") as handle:
            data = handle.read()
        offsets, off = [], SEGMENT_HEADER_SIZE
        while (frame := _parse_frame(data, memoryview(data), off, len(data))) is not None:
            offsets.append(off)
            off += frame.size
        log.segments[int(name[:20])] = offsets
    return log


def frame_types(log, first):
    data = log.data(first)
    return [struct.unpack_from("<I", data, off + 20)[0] for off in log.segments[first]]


def anchor_of(log, first):
    """The anchor the first frame of segment ``first`` holds."""
    return log.frame(first, 0)[1][-72:-40]


def value_of(log, first, index=-1):
    return log.frame(first, index)[1][-40:-8]


def seqs(reader):
    return [event.seq for event in reader.events()]


# --- writing chained sessions ----------------------------------------------------------------


@pytest.mark.parametrize("key", MODES)
def test_a_chained_store_writes_sessions_that_read_back_and_verify(tmp_path, key):
    store = chained_store(tmp_path / "s", key, segment_size=4096)
    with store.create_session("a") as session:
        fill(session, 120)
        session.finish_turn()
        session.append_many([{"n": 1}, {"n": 2}, {"n": 3}])
    data = manifest_of(store, "a")
    assert data["version"] == "2.0"
    # (chain.at and chain.mac bind the manifest: tests/test_chain_bindings.py)
    assert {k: v for k, v in data["chain"].items() if k not in ("at", "mac")} == (
        {"alg": "sha256"} if key is None else
        {"alg": "hmac-sha256", "key_id": ChainKey(key).key_id})
    log = log_of(store, "a", key)
    assert len(log.segments) > 3  # rolled over
    for first in log.segments:
        types = frame_types(log, first)
        assert types[0] == FRAME_CHAIN_START and set(types[1:]) <= {FRAME_CHAINED}
    firsts = sorted(log.segments)
    for before, after in itertools.pairwise(firsts):
        assert anchor_of(log, after) == value_of(log, before)  # each segment links on
    assert anchor_of(log, 1) == chain.genesis(Mac(key), log.uid, 1)
    reader = store.read_session("a")
    assert [e.data["n"] for e in reader.events()][-3:] == [1, 2, 3]
    assert reader.verify() == []
    with store.open_session("a") as session:  # reopened: the run is taken up
        session.append({"n": 4})
        session.update_metadata(title="kept chained")
    assert seqs(store.read_session("a"))[-1] == 125  # (the metadata record is internal)
    assert store.read_session("a").verify() == []
    assert manifest_of(store, "a")["version"] == "2.0" and manifest_of(store, "a")["chain"]


def test_a_new_store_chains_every_session_by_default(tmp_path, monkeypatch):
    monkeypatch.delenv("FSSTORE_CHAIN_KEY", raising=False)
    monkeypatch.delenv("FSSTORE_CHAIN_KEY_FILE", raising=False)
    store = fsstore.open_store(tmp_path / "s")  # no key at hand: SHA-256
    with store.create_session("a") as session:
        session.append({"n": 1})
        assert session.head_hash is not None and session.head_hash.startswith("1:")
    assert manifest_of(store, "a")["chain"]["alg"] == "sha256"
    assert manifest_of(store, "a")["version"] == "2.0"
    assert store.read_session("a").head_hash == session.head_hash
    with open(tmp_path / "s" / "fsstore.json", encoding="utf-8") as handle:
        assert json.load(handle) == {"format": "fsstore-store", "version": "1.7",
                                     "chain": {"alg": "sha256"}}
    # a key at hand when the store is created, given or from the environment: keyed
    keyed = fsstore.open_store(tmp_path / "k", chain_key=KEY)
    keyed.create_session("a").close()
    assert manifest_of(keyed, "a")["chain"]["key_id"] == ChainKey(KEY).key_id
    monkeypatch.setenv("FSSTORE_CHAIN_KEY", KEY.hex())
    fsstore.open_store(tmp_path / "e").close()
    with open(tmp_path / "e" / "fsstore.json", encoding="utf-8") as handle:
        assert json.load(handle)["chain"] == {"alg": "hmac-sha256",
                                              "key_id": ChainKey(KEY).key_id}


def test_a_store_created_without_a_chain_chains_nothing(tmp_path):
    fsstore.open_store(tmp_path / "s", chain=False).close()
    store = fsstore.open_store(tmp_path / "s")  # the store's policy: none
    with store.create_session("a") as session:
        session.append({"n": 1})
        assert session.head_hash is None
    assert "chain" not in manifest_of(store, "a")
    assert manifest_of(store, "a")["version"] == "1.7"
    assert store.read_session("a").head_hash is None
    with open(tmp_path / "s" / "fsstore.json", encoding="utf-8") as handle:
        assert "chain" not in json.load(handle)


def test_the_store_policy_is_kept_in_fsstore_json(tmp_path):
    chained_store(tmp_path / "s").close()
    with open(tmp_path / "s" / "fsstore.json", encoding="utf-8") as handle:
        assert json.load(handle)["chain"] == {"alg": "sha256"}
    store = fsstore.open_store(tmp_path / "s")  # the policy, without asking again
    store.create_session("a").close()
    assert manifest_of(store, "a")["chain"]["alg"] == "sha256"
    fsstore.open_store(tmp_path / "s", chain=False).create_session("b").close()
    assert "chain" not in manifest_of(store, "b")
    # a store created keyed keeps its key's id, never the key
    keyed = chained_store(tmp_path / "k", KEY)
    with open(tmp_path / "k" / "fsstore.json", encoding="utf-8") as handle:
        text = handle.read()
    assert json.loads(text)["chain"] == {"alg": "hmac-sha256", "key_id": ChainKey(KEY).key_id}
    assert KEY.hex() not in text
    keyed.create_session("a").close()


def test_the_environments_key_makes_and_reads_a_keyed_store(tmp_path, monkeypatch):
    monkeypatch.setenv(chain.KEY_ENV, KEY.hex())
    store = chained_store(tmp_path / "s")
    with store.create_session("a") as session:
        session.append({"n": 1})
    assert manifest_of(store, "a")["chain"]["key_id"] == ChainKey(KEY).key_id
    assert seqs(fsstore.open_store(tmp_path / "s").read_session("a")) == [1]
    monkeypatch.delenv(chain.KEY_ENV)
    with pytest.raises(ChainKeyRequired):
        seqs(fsstore.open_store(tmp_path / "s").read_session("a"))


@pytest.mark.parametrize("key", MODES)
def test_head_hash_moves_with_each_append_and_holds_across_reopen(tmp_path, key):
    store = chained_store(tmp_path / "s", key, segment_size=4096)
    seen = set()
    with store.create_session("a") as session:
        empty = session.head_hash
        assert empty == f"0:{chain.genesis(Mac(key), log_of(store, 'a').uid, 1).hex()}"
        assert store.read_session("a").head_hash == empty
        for n in range(60):  # across rollovers
            session.append({"n": n, "text": "x" * 90})
            head_hash = session.head_hash
            seq, value = head_hash.split(":")
            assert int(seq) == n + 1 and len(value) == 64 and head_hash not in seen
            seen.add(head_hash)
            if n % 7 == 0:
                assert store.read_session("a").head_hash == head_hash
        last = session.head_hash
    log = log_of(store, "a")
    assert last == f"60:{value_of(log, max(log.segments)).hex()}"
    assert store.read_session("a").head_hash == last
    with store.open_session("a") as session:
        assert session.head_hash == last
        session.fork("f").close()  # seals the active segment: it stays empty
        assert session.head_hash == last
    assert store.read_session("a").head_hash == last
    with store.open_session("a") as session:
        assert session.head_hash == last  # taken up from the segment before the empty one


def test_head_hash_has_an_async_twin(tmp_path):
    async def main():
        store = await fsstore.aopen_store(tmp_path / "s", chain=True)
        with store.create_session("a") as session:
            session.append({"n": 1})
            return await session.ahead_hash(), await store.read_session("a").ahead_hash()

    writer, reader = asyncio.run(main())
    assert writer == reader and writer.startswith("1:")


def test_the_cli_show_prints_the_head_hash(tmp_path, capsys):
    store = chained_store(tmp_path / "s")
    with store.create_session("a") as session:
        session.append({"n": 1})
        head_hash = session.head_hash
    assert main(["--store", store.path, "show", "a"]) == 0
    assert f"head_hash: {head_hash}\n" in capsys.readouterr().out


@pytest.mark.parametrize("key", MODES)
def test_clear_starts_a_new_chain_on_the_genesis(tmp_path, key):
    store = chained_store(tmp_path / "s", key)
    with store.create_session("a") as session:
        fill(session, 5)
        session.clear()
        uid = log_of(store, "a").uid
        genesis = chain.genesis(Mac(key), uid, 6)
        assert session.head_hash == f"5:{genesis.hex()}"
        assert store.read_session("a").head_hash == session.head_hash
        fill(session, 3)
    log = log_of(store, "a")
    assert sorted(log.segments) == [6]
    assert anchor_of(log, 6) == genesis
    reader = store.read_session("a")
    assert seqs(reader) == [6, 7, 8] and reader.verify() == []


# --- forks ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", MODES)
@pytest.mark.parametrize("where", ["head", "boundary", "inside-a-batch", "first-of-a-segment"])
def test_a_fork_continues_its_parents_chain_from_the_fork_point(tmp_path, key, where):
    store = chained_store(tmp_path / "s", key, segment_size=4096)
    with store.create_session("p") as parent:
        fill(parent, 30)
        parent.append_many([{"n": n, "text": "batch"} for n in range(5)])  # seqs 31..35
        fill(parent, 30, first=40)
        parent_log = log_of(store, "p")
        at_seq = {"head": None, "boundary": 20, "inside-a-batch": 33,
                  "first-of-a-segment": sorted(parent_log.segments)[2] - 1}[where]
        fork = parent.fork("f", at_seq=at_seq)
        head = parent.head if at_seq is None else at_seq
        with fork:
            assert fork.head == head
            fill(fork, 3, first=90)
    reader = store.read_session("f")
    assert seqs(reader) == list(range(1, head + 4))
    assert reader.verify() == []
    uid = int(manifest_of(store, "f")["uid"], 16)
    [(junction_seq, fork_uid)] = manifest_of(store, "f")["chain"]["forks"]
    assert fork_uid == f"{uid:016x}"
    # its own records start a segment anchored on the junction of the parent's value there
    log = log_of(store, "f", key)
    own = junction_seq + 1
    assert own in log.segments and frame_types(log, own)[0] == FRAME_CHAIN_START
    firsts = sorted(log.segments)
    link = value_of(log, firsts[firsts.index(own) - 1])
    assert anchor_of(log, own) == chain.junction(Mac(key), link, uid, junction_seq)
    assert junction_seq == (30 if where == "inside-a-batch" else head)  # before the batch
    assert store.read_session("p").verify() == []  # the parent is untouched


def test_forks_of_forks_and_two_forks_at_one_seq(tmp_path):
    store = chained_store(tmp_path / "s", segment_size=4096)
    with store.create_session("p") as parent:
        fill(parent, 40)
    one = store.fork_session("p", "one", at_seq=25)
    two = store.fork_session("p", "two", at_seq=25)
    for session in (one, two):
        with session:
            fill(session, 20, first=50)
    # the same records after the same history: the junctions keep the chains apart
    assert store.read_session("one").head_hash != store.read_session("two").head_hash
    grandchild = store.fork_session("one", "g", at_seq=35)  # after one's junction
    with grandchild:
        fill(grandchild, 5)
    early = store.fork_session("one", "e", at_seq=10)  # before one's junction
    early.close()
    forks = {name: manifest_of(store, name)["chain"]["forks"] for name in ("one", "g", "e")}
    assert [seq for seq, _ in forks["g"]] == [25, 35]
    assert forks["g"][0] == forks["one"][0]
    assert [seq for seq, _ in forks["e"]] == [10]
    for name in ("p", "one", "two", "g", "e"):
        assert store.read_session(name).verify() == [], name
    assert seqs(store.read_session("g")) == list(range(1, 41))
    # a segment of one fork in the place of the other's breaks the chain at the junction
    log_one, log_two = log_of(store, "one"), log_of(store, "two")
    data = log_one.data(26)  # under a header naming "two" (a header's checksums are no secret)
    header = encode_segment_header(26, 1, log_two.uid)
    log_two.write(26, mark_segment_header(header[:52], len(data)) + data[64:])
    with pytest.raises(CorruptionError, match="the chain is broken at the fork"):
        seqs(store.read_session("two"))


def test_a_fork_of_an_unchained_session_in_a_chained_store_stays_unchained(tmp_path):
    fsstore.open_store(tmp_path / "s", chain=False).create_session("plain").close()
    store = chained_store(tmp_path / "s")
    with store.open_session("plain") as session:
        session.append({"n": 1})
    store.fork_session("plain", "f").close()
    assert "chain" not in manifest_of(store, "f") and "chain" not in manifest_of(store, "plain")
    assert store.read_session("f").head_hash is None
    assert store.read_session("f").verify() == []


def test_a_fork_of_a_keyed_session_needs_the_key(tmp_path):
    store = chained_store(tmp_path / "s", KEY)
    with store.create_session("p") as parent:
        fill(parent, 5)
    keyless = fsstore.open_store(tmp_path / "s")
    with pytest.raises(ChainKeyRequired):
        keyless.fork_session("p", "f", at_seq=5)
    assert not keyless.has_session("f")


# --- shared writers ---------------------------------------------------------------------------


def test_shared_writers_take_up_each_others_chained_records(tmp_path):
    store = chained_store(tmp_path / "s", segment_size=4096)
    store.create_session("a").close()
    one = store.open_session("a", shared=True)
    two = store.open_session("a", shared=True)
    with one, two:
        for n in range(40):  # across rollovers, each writer after the other
            (one if n % 3 else two).append({"n": n, "text": "y" * 80})
        assert one.head_hash == two.head_hash
    reader = store.read_session("a")
    assert [e.data["n"] for e in reader.events()] == list(range(40))
    assert reader.verify() == []


def append_shared(root: str, count: str) -> None:
    """A child: appends ``count`` events to session ``a`` as a shared writer."""
    store = fsstore.open_store(root)
    with store.open_session("a", shared=True) as session:
        print("READY", flush=True)
        for n in range(int(count)):
            session.append({"child": n, "text": "z" * 70})
    print("END", flush=True)


def test_shared_writers_in_two_processes(tmp_path):
    store = chained_store(tmp_path / "s", segment_size=4096)
    store.create_session("a").close()
    with store.open_session("a", shared=True) as session, \
            Child.function(append_shared, store.path, 60) as child:
        child.wait_for("READY")
        for n in range(60):
            session.append({"parent": n, "text": "p" * 70})
        child.wait_for("END")
        child.finish()
        session.append({"last": True})
    reader = store.read_session("a")
    events = list(reader.events())
    assert len(events) == 121 and events[-1].data == {"last": True}
    assert [e.data["child"] for e in events if "child" in e.data] == list(range(60))
    assert reader.verify() == []


# --- recovery ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", MODES)
def test_a_writer_refuses_to_extend_a_forged_active_segment(tmp_path, key):
    store = chained_store(tmp_path / "s", key)
    with store.create_session("a") as session:
        fill(session, 6)
    log = log_of(store, "a", key)
    edit_payload(log, 1, 2)
    with pytest.raises(CorruptionError, match="does not match the chain"):
        store.open_session("a")
    with pytest.raises(CorruptionError, match="does not match the chain"):
        seqs(store.read_session("a"))


def test_a_torn_chain_value_past_the_mark_is_set_aside_by_the_next_writer(tmp_path):
    store = chained_store(tmp_path / "s")
    with store.create_session("a") as session:
        fill(session, 4)
        before = session.head_hash
        session.append({"n": 4})
    log = log_of(store, "a")
    off, frame = log.frame(1, -1)
    data = log.data(1)
    data[off + len(frame) - 40:off + len(frame) - 8] = bytes(32)  # sectors out of order
    data[:SEGMENT_HEADER_SIZE] = mark_segment_header(bytes(data[:52]), off)  # never synced
    log.write(1, data)
    assert seqs(store.read_session("a")) == [1, 2, 3, 4]
    with store.open_session("a") as session:
        assert session.recovered_torn_tail is not None
        assert session.head == 4 and session.head_hash == before
        session.append({"n": 5})
    assert [f.level for f in store.read_session("a").verify()] == ["note"]  # the .torn file


# --- every edit is caught, on logs the writer wrote --------------------------------------


def _change_a_byte(store, log, key):
    edit_payload(log, 1, 1)


def _delete_one(store, log, key):
    off, frame = log.frame(1, 1)
    data = log.data(1)
    del data[off:off + len(frame)]
    log.write(1, mark_segment_header(bytes(data[:52]), len(data)) + data[64:])


def _swap_two(store, log, key):
    (a, frame_a), (b, frame_b) = log.frame(1, 1), log.frame(1, 2)
    data = log.data(1)
    data[a:b + len(frame_b)] = frame_b + frame_a
    log.write(1, data)


def _forge_after_the_last(store, log, key):
    last = max(log.segments)
    forger = RunState(Mac(os.urandom(32) if key else None), os.urandom(32))
    forger.encode(1, 1.0, 1, events_of(1, 1), 1 << 20)
    head = sum(len(offsets) for offsets in log.segments.values())
    data = log.data(last) + forger.encode(head + 1, 1.0, 1, events_of(1, head + 1), 1 << 20)
    log.write(last, mark_segment_header(bytes(data[:52]), len(data)) + data[64:])


def _copy_in_another_sessions_record(store, log, key):
    with store.create_session("other") as other:
        fill(other, 12)
    theirs = log_of(store, "other", key)
    off, frame = theirs.frame(1, 3)
    ours_off, ours = log.frame(1, 3)
    assert (ours_off, len(ours)) == (off, len(frame))  # the same events: the same place
    data = log.data(1)
    data[off:off + len(frame)] = frame
    log.write(1, data)


def _copy_an_older_record_over_the_newest(store, log, key):
    last = max(log.segments)
    _, old = log.frame(last, 1)
    off, newest = log.frame(last, -1)
    assert len(old) == len(newest)  # events of one size
    data = log.data(last)
    data[off:] = old
    log.write(last, data)


def _delete_the_last_two_of_a_segment_and_renumber_the_next(store, log, key):
    first, second = sorted(log.segments)[:2]
    off, _ = log.frame(first, -2)
    data = log.data(first)[:off]
    log.write(first, mark_segment_header(bytes(data[:52]), len(data)) + data[64:])
    # the next segment renamed and renumbered to close the gap, its chain recomputed from
    # the anchor it holds: that anchor is not where the chain ends now
    count = len(log.segments[second])
    renumbered = bytearray(encode_segment_header(second - 2, 1, log.uid))
    run = RunState(log.mac, anchor_of(log, second))
    for n in range(count):
        renumbered += run.encode(second - 2 + n, 1.0, 1, events_of(1, second - 2 + n), 1 << 20)
    os.unlink(log.file(second))
    log.write(second - 2, mark_segment_header(bytes(renumbered[:52]), len(renumbered))
              + renumbered[64:])
    for later in sorted(log.segments)[2:]:
        os.unlink(log.file(later))  # (the log ends there)


EDITS = [_change_a_byte, _delete_one, _swap_two, _forge_after_the_last,
         _copy_in_another_sessions_record, _copy_an_older_record_over_the_newest,
         _delete_the_last_two_of_a_segment_and_renumber_the_next]


@pytest.mark.parametrize("key", MODES)
@pytest.mark.parametrize("edit", EDITS, ids=[edit.__name__[1:] for edit in EDITS])
def test_each_edit_of_a_written_log_is_caught_on_read(tmp_path, key, edit):
    store = chained_store(tmp_path / "s", key, segment_size=4096)
    with store.create_session("a") as session:
        fill(session, 12 if edit is not _delete_the_last_two_of_a_segment_and_renumber_the_next
             else 60)
    log = log_of(store, "a", key)
    edit(store, log, key)
    with pytest.raises(CorruptionError, match="chain"):
        seqs(store.read_session("a"))
    problems = [f for f in store.read_session("a").verify() if f.level == "problem"]
    assert problems and any("chain" in f.message for f in problems)


def test_keyed_a_chain_recomputed_without_the_key_is_caught(tmp_path):
    store = chained_store(tmp_path / "s", KEY, segment_size=4096)
    with store.create_session("a") as session:
        fill(session, 40)
    log = log_of(store, "a", KEY)
    edit_payload(log, 1, 1)
    rechain(log, Mac(), 1)  # all of it, from the genesis, without the key
    with pytest.raises(CorruptionError, match="chain"):
        seqs(store.read_session("a"))


def test_the_last_records_of_the_log_cut_off_read_as_a_prefix_but_move_the_head_hash(
        tmp_path):
    store = chained_store(tmp_path / "s")
    with store.create_session("a") as session:
        fill(session, 8)
        pinned = session.head_hash
    log = log_of(store, "a")
    off, _ = log.frame(1, -2)
    data = log.data(1)[:off]
    log.write(1, mark_segment_header(bytes(data[:52]), len(data)) + data[64:])
    reader = store.read_session("a")
    assert seqs(reader) == list(range(1, 7))
    assert reader.head_hash != pinned and reader.head_hash.startswith("6:")


def test_a_chain_stripped_from_the_manifest_leaves_records_no_reader_takes(tmp_path):
    store = chained_store(tmp_path / "s")
    with store.create_session("a") as session:
        fill(session, 3)
    path = os.path.join(store.path, "sessions", "a", "session.json")
    data = manifest_of(store, "a")
    del data["chain"]
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(dict(data, version="1.6"), handle)
    with pytest.raises(CorruptionError, match="chained record in a log that has no chain"):
        seqs(store.read_session("a"))


# --- keys -----------------------------------------------------------------------------


def test_a_keyed_session_without_its_key_or_with_another_is_refused(tmp_path):
    store = chained_store(tmp_path / "s", KEY)
    with store.create_session("a") as session:
        fill(session, 3)
    key_id, other_id = ChainKey(KEY).key_id, ChainKey(OTHER_KEY).key_id
    keyless = fsstore.open_store(tmp_path / "s")
    reader = keyless.read_session("a")  # the manifest and the tail still read
    assert reader.head == 3 and reader.title is None
    for refused in (lambda: seqs(reader), lambda: reader.head_hash, reader.state,
                    lambda: keyless.open_session("a"), lambda: keyless.create_session("b"),
                    lambda: reader.messages.last(5)):
        with pytest.raises(ChainKeyRequired, match=key_id):
            refused()
    assert not keyless.has_session("b")
    assert any(key_id in f.message for f in reader.verify() if f.level == "problem")
    wrong = fsstore.open_store(tmp_path / "s", chain_key=OTHER_KEY)
    for refused in (lambda: seqs(wrong.read_session("a")), lambda: wrong.open_session("a")):
        with pytest.raises(ChainKeyMismatch) as caught:
            refused()
        assert key_id in str(caught.value) and other_id in str(caught.value)
    assert seqs(fsstore.open_store(tmp_path / "s", chain_key=ChainKey(KEY)).read_session(
        "a")) == [1, 2, 3]


def test_a_key_file_given_to_open_store(tmp_path):
    key_file = tmp_path / "chain.key"
    key_file.write_text(KEY.hex() + "\n")
    store = chained_store(tmp_path / "s", str(key_file))
    with store.create_session("a") as session:
        session.append({"n": 1})
    assert manifest_of(store, "a")["chain"]["key_id"] == ChainKey(KEY).key_id
    inside = tmp_path / "s" / "chain.key"
    inside.write_text(KEY.hex())
    with pytest.raises(fsstore.InvalidSetting, match="inside the store"):
        fsstore.open_store(tmp_path / "s", chain_key=str(inside))


# --- the store's other readers read chained sessions ---------------------------------------


@pytest.mark.parametrize("key", MODES)
def test_stats_watch_backup_and_lease_tokens_read_chained_sessions(tmp_path, key):
    store = chained_store(tmp_path / "s", key, segment_size=4096)
    with store.create_session("a") as session:
        fill(session, 30)
        session.finish_turn()
    stats = store.stats(use_cache=False)
    assert stats.damaged == [] and stats.per_session[0].head == 31
    assert store.read_session("a").session_stats(events_by_kind=True).events_by_kind
    with store.read_session("a").watch(after_seq=28) as watcher:
        assert [event.seq for event in watcher.get(timeout=30)] == [29, 30, 31]
        with store.open_session("a") as session:
            session.append({"n": 99})
        assert [event.seq for event in watcher.get(timeout=30)] == [32]
    lease = store.claim_lease("a", "worker").lease
    with store.open_session("a", lease=lease) as session:
        session.append({"n": 100})  # after the lease's token record
    from fsstore.lease import tokens_in_log

    assert tokens_in_log(store.io, os.path.join(store.path, "sessions", "a")) == lease.token
    store.release_lease(lease)
    report = fsstore.backup_store(store, tmp_path / "backup", verify=True)
    assert not report.failed
    assert [f for f in fsstore.verify_backup(tmp_path / "backup", chain_key=key)
            if f.level == "problem"] == []


def test_textconv_and_salvage_read_chained_records_as_events(tmp_path, capsys):
    store = chained_store(tmp_path / "s")
    with store.create_session("a") as session:
        fill(session, 3)
    log = log_of(store, "a")
    assert main(["textconv", log.file(1)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["seq"] for line in lines[1:]] == [1, 2, 3]
    assert main(["--store", store.path, "cat", "a", "--salvage"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3


# --- imports, headers, forks and keys ---------------------------------------------------


def test_a_chained_session_imported_into_a_store_without_a_policy_is_unchained(tmp_path):
    store = chained_store(tmp_path / "s")
    with store.create_session("a") as session:
        fill(session, 5)
    fsstore.export_sessions(store, tmp_path / "out.jsonl")
    target = fsstore.open_store(tmp_path / "t", chain=False)
    fsstore.import_sessions(target, tmp_path / "out.jsonl")
    assert "chain" not in manifest_of(target, "a")
    assert manifest_of(target, "a")["version"] == "1.7"
    reader = target.read_session("a")
    assert len(seqs(reader)) == 5 and reader.head_hash is None and reader.verify() == []


def test_the_first_segment_keeps_a_header_uid_the_genesis_binds(tmp_path):
    # (a check of the format's promise that segment headers are what FORMAT.md says)
    store = chained_store(tmp_path / "s")
    with store.create_session("a") as session:
        fill(session, 2)
    log = log_of(store, "a")
    header = decode_segment_header(bytes(log.data(1)[:64]), log.file(1))
    assert header.uid == log.uid
    assert anchor_of(log, 1) == chain.genesis(Mac(), header.uid, header.log_start)


@pytest.mark.parametrize("key", MODES)
def test_a_segment_hashed_ahead_is_checked_before_any_of_its_records_is_read(tmp_path, key):
    """A replay hashes the next segment's run in a thread while it reads the one before:
    an edit there still stops the read before that segment's first record."""
    store = chained_store(tmp_path / "s", key, segment_size=4096)
    with store.create_session("a") as session:
        fill(session, 200)
    log = log_of(store, "a", key)
    firsts = sorted(log.segments)
    assert len(firsts) >= 4
    edit_payload(log, firsts[2], 1)
    reader = store.read_session("a")
    read = []
    with pytest.raises(CorruptionError, match="chain") as caught:
        for event in reader.events():
            read.append(event.seq)
    assert read == list(range(1, firsts[2]))
    assert caught.value.path.endswith(f"{firsts[2]:020d}.fslog")


@pytest.mark.parametrize("key", MODES)
def test_a_forks_log_replaced_by_its_parents_files_fails_the_junction(tmp_path, key):
    """The parent's segments need no header edit to pass in a fork (its uid is among the
    fork's ancestors'), and their chain is genuine: only the junction tells that the
    fork's own records do not start a run of their own after the fork point."""
    store = chained_store(tmp_path / "s", key, segment_size=4096)
    with store.create_session("p") as parent:
        fill(parent, 60)
        first_of_second = sorted(log_of(store, "p").segments)[1]
        with parent.fork("f", at_seq=first_of_second + 3) as fork:
            fill(fork, 5, first=90)
        fill(parent, 10, first=70)
    parent_log = os.path.join(store.path, "sessions", "p", "log")
    fork_log = os.path.join(store.path, "sessions", "f", "log")
    for name in os.listdir(fork_log):
        if name.endswith(".fslog"):
            os.unlink(os.path.join(fork_log, name))
    for name in os.listdir(parent_log):
        if name.endswith(".fslog"):
            shutil.copyfile(os.path.join(parent_log, name), os.path.join(fork_log, name))
    with pytest.raises(CorruptionError, match="junction"):
        seqs(store.read_session("f"))
    problems = [f for f in store.read_session("f").verify() if f.level == "problem"]
    assert any("junction" in f.message for f in problems), problems


def test_messages_of_a_keyed_session_need_the_key_in_an_unfinished_turn_too(tmp_path):
    """Messages read through the message index (its rows point at records, read where
    they are) need the key as every other read of records does."""
    store = chained_store(tmp_path / "s", KEY)
    with store.create_session("a") as session:
        session.messages.append({"role": "user", "parts": [{"type": "text", "text": "s"}]})
    reader = fsstore.open_store(tmp_path / "s").read_session("a")
    for refused in (reader.messages.all, reader.messages.count, lambda: reader.messages.last(1)):
        with pytest.raises(ChainKeyRequired):
            refused()
