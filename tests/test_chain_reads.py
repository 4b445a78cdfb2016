"""Every read of a chained session checks the chain (docs/FORMAT.md 3.4, "Reading"):
reads at known places (``read_frames``, ``frames_from``: the message index; the log's
tail: ``head``), ``state_at``, watchers, ``verify_backup``; and forks at a seq inside a
compacted file. An edit whose checksum was recomputed is caught on each path, naming the
file, the offset and "the chain"; a genuine log reads as before."""

from __future__ import annotations

import os
import struct
import threading

import pytest
from test_chain_frames import recrc
from test_chain_rewriters import compacted_members, log_dir, segment_names
from test_chain_sessions import KEY, MODES, chained_store, fill, log_of, manifest_of

import fsstore
from fsstore import ChainKeyRequired, CorruptionError
from fsstore.cli import main
from fsstore.log import LogPosition
from fsstore.segment_header import SEGMENT_HEADER_SIZE, mark_segment_header


def message(n):
    return {"role": "user", "parts": [{"type": "text", "text": f"m{n:03d}" + "x" * 60}]}


def with_messages(tmp_path, key, count=40):
    """A chained store whose session "a" holds ``count`` messages over several segments;
    returns the store and the messages' ids in order."""
    store = chained_store(tmp_path / "s", key, segment_size=4096)
    with store.create_session("a") as session:
        ids = [session.messages.append(message(n)).id for n in range(count)]
    return store, ids


def edit_where(store, marker: bytes, key=None):
    """Change one byte of the record holding ``marker``, its checksum recomputed (its
    chain value kept); return its file and offset."""
    log = log_of(store, "a", key)
    for first, offsets in sorted(log.segments.items()):
        for index in range(len(offsets)):
            off, frame = log.frame(first, index)
            if marker in frame:
                edited = bytearray(frame)
                at = edited.index(marker) + len(marker) + 2
                edited[at] ^= 1
                data = log.data(first)
                data[off:off + len(frame)] = recrc(edited)
                log.write(first, data)
                return log.file(first), off
    raise AssertionError(f"no record holds {marker!r}")


def reopened(tmp_path, key):
    return fsstore.open_store(tmp_path / "s", chain_key=key)


def assert_caught(caught, path, offset):
    assert "the chain" in str(caught.value)
    assert (caught.value.path, caught.value.offset) == (path, offset)


# --- reads at known places: the message index, read_frames, frames_from ------------------


@pytest.mark.parametrize("key", MODES)
@pytest.mark.parametrize("where", ["sealed", "active"])
def test_a_message_read_at_its_place_is_checked_against_the_chain(tmp_path, key, where):
    store, ids = with_messages(tmp_path, key)
    reader = store.read_session("a")
    genuine = [reader.messages.get(i) for i in ids]
    assert [m.parts[0].text[:4] for m in genuine] == [f"m{n:03d}" for n in range(len(ids))]
    assert reader.messages.all() == genuine  # (the index is built: rows to read at)
    n = 2 if where == "sealed" else len(ids) - 2
    path, offset = edit_where(store, f"m{n:03d}".encode(), key)
    assert path.endswith(segment_names(store, "a")[-1 if where == "active" else 0])
    reader = reopened(tmp_path, key).read_session("a")
    with pytest.raises(CorruptionError) as caught:
        reader.messages.get(ids[n])
    assert_caught(caught, path, offset)
    with pytest.raises(CorruptionError, match="the chain"):
        reader.messages.get(ids[n + 1])  # after it in its segment: its run fails too
    with pytest.raises(CorruptionError, match="the chain"):
        reader.messages.all()


@pytest.mark.parametrize("key", MODES)
def test_read_frames_and_frames_from_check_the_run_up_to_what_they_return(tmp_path, key):
    store, _ids = with_messages(tmp_path, key)
    log = store.read_session("a")._log
    frames = list(log.frames_from(LogPosition(1, SEGMENT_HEADER_SIZE)))
    assert [f.first_seq for f in frames] == list(range(1, len(frames) + 1))
    again = [log.read_frames(f.segment, f.offset, f.offset + f.size)[0] for f in frames]
    assert again == frames  # a genuine log reads as before
    assert [f.first_seq for f in log.read_frames(frames[0].segment, frames[0].offset,
                                                 frames[2].offset + frames[2].size)] == [1, 2, 3]
    path, offset = edit_where(store, b"m005", key)
    edited = next(f for f in frames if f.offset == offset and path.endswith(
        f"{f.segment:020d}.fslog"))
    later = next(f for f in frames if f.segment == edited.segment and f.offset > offset)
    log = reopened(tmp_path, key).read_session("a")._log
    for frame in (edited, later):
        with pytest.raises(CorruptionError) as caught:
            log.read_frames(frame.segment, frame.offset, frame.offset + frame.size)
        assert_caught(caught, path, offset)
    before = next(f for f in frames if f.segment == edited.segment)
    assert log.read_frames(before.segment, before.offset, before.offset + before.size)
    with pytest.raises(CorruptionError) as caught:
        list(log.frames_from(LogPosition(1, SEGMENT_HEADER_SIZE)))
    assert_caught(caught, path, offset)
    with pytest.raises(CorruptionError, match="the chain"):  # from inside the segment
        list(log.frames_from(LogPosition(later.segment, later.offset)))


def test_a_keyed_chain_recomputed_without_the_key_is_caught_at_a_known_place(tmp_path):
    from test_chain_frames import rechain

    from fsstore.chain import Mac

    store, ids = with_messages(tmp_path, KEY)
    store.read_session("a").messages.all()
    edit_where(store, b"m003", KEY)
    log = log_of(store, "a", KEY)
    rechain(log, Mac(), min(log.segments))  # SHA-256 over all of it, without the key
    reader = reopened(tmp_path, KEY).read_session("a")
    with pytest.raises(CorruptionError, match="the chain"):
        reader.messages.get(ids[3])


def test_repeated_reads_of_a_sealed_file_hash_it_once(tmp_path, monkeypatch):
    store, _ids = with_messages(tmp_path, None)
    log = store.read_session("a")._log
    frames = [f for f in log.frames_from(LogPosition(1, SEGMENT_HEADER_SIZE))
              if f.segment == 1]
    log = reopened(tmp_path, None).read_session("a")._log
    from fsstore import chain_reads

    started, hashed = [], []
    real_first, real_vouch = chain_reads._first_frame, chain_reads._vouch_run

    def first_frame(*args, **kwargs):
        started.append(args[3])
        return real_first(*args, **kwargs)

    def vouch_run(log, rules, segment, run_start, upto, *args, **kwargs):
        checked = log.vouched.get((segment.path, run_start))
        hashed.append(upto - (checked.end if checked else run_start))
        return real_vouch(log, rules, segment, run_start, upto, *args, **kwargs)

    monkeypatch.setattr(chain_reads, "_first_frame", first_frame)
    monkeypatch.setattr(chain_reads, "_vouch_run", vouch_run)
    for frame in [*frames, *reversed(frames), *frames]:
        assert log.read_frames(frame.segment, frame.offset, frame.offset + frame.size)
    assert started == [SEGMENT_HEADER_SIZE]  # the run's start checked once
    # each byte of the file hashed once: each read hashed only what no read before it did
    assert sum(n for n in hashed if n > 0) == frames[-1].offset + frames[-1].size - 64


# --- the tail: head, state_at ---------------------------------------------------------------


@pytest.mark.parametrize("key", MODES)
def test_the_tail_is_checked_against_the_chain(tmp_path, key):
    store, ids = with_messages(tmp_path, key)
    head = store.read_session("a").head
    assert reopened(tmp_path, key).read_session("a").head == head  # as before
    path, offset = edit_where(store, f"m{len(ids) - 1:03d}".encode(), key)
    with pytest.raises(CorruptionError) as caught:
        reopened(tmp_path, key).read_session("a").head  # noqa: B018
    assert_caught(caught, path, offset)


@pytest.mark.parametrize("key", MODES)
def test_a_last_record_torn_inside_its_chain_value_is_a_torn_tail_for_the_tail(tmp_path, key):
    store = chained_store(tmp_path / "s", key)
    with store.create_session("a") as session:
        fill(session, 5)
    log = log_of(store, "a", key)
    off, frame = log.frame(1, -1)
    data = log.data(1)
    data[off + len(frame) - 40:off + len(frame) - 8] = bytes(32)  # sectors out of order
    data[:SEGMENT_HEADER_SIZE] = mark_segment_header(bytes(data[:52]), off)  # never synced
    log.write(1, data)
    reader = reopened(tmp_path, key).read_session("a")
    assert reader.head == 4
    assert [e.seq for e in reader.events()] == [1, 2, 3, 4]
    assert [f.first_seq for f in reader._log.frames_from(
        LogPosition(1, SEGMENT_HEADER_SIZE))] == [1, 2, 3, 4]


def test_the_tail_of_a_keyed_session_reads_without_its_key(tmp_path):
    store, _ids = with_messages(tmp_path, KEY)
    head = store.read_session("a").head
    assert fsstore.open_store(tmp_path / "s").read_session("a").head == head


def edit_content(log, first: int) -> int:
    """Flip a bit of the text of the second frame of segment ``first``, its checksum
    recomputed (what only the chain catches); its offset."""
    off, frame = log.frame(first, 1)
    edited = bytearray(frame)
    edited[edited.index(b"xxxx") + 2] ^= 1
    data = log.data(first)
    data[off:off + len(frame)] = recrc(edited)
    log.write(first, data)
    return off


@pytest.mark.parametrize("key", MODES)
def test_state_at_is_checked_against_the_chain(tmp_path, key):
    store = chained_store(tmp_path / "s", key, segment_size=4096)
    with store.create_session("a") as session:
        for n in range(30):
            session.append({"n": n, "text": "x" * 60}, kind="state.set")
    genuine = store.read_session("a").state_at(20)
    assert reopened(tmp_path, key).read_session("a").state_at(20) == genuine
    log = log_of(store, "a", key)
    first = min(log.segments)
    off = edit_content(log, first)
    with pytest.raises(CorruptionError) as caught:
        reopened(tmp_path, key).read_session("a").state_at(20)
    assert_caught(caught, log.file(first), off)


# --- watchers -----------------------------------------------------------------------------


@pytest.mark.parametrize("key", MODES)
def test_a_watcher_delivers_only_what_the_chain_vouches_for(tmp_path, key):
    store, ids = with_messages(tmp_path, key)
    path, offset = edit_where(store, b"m004", key)
    reader = reopened(tmp_path, key).read_session("a")
    with reader.watch() as watcher, pytest.raises(CorruptionError) as caught:
        watcher.get(timeout=5)
    assert_caught(caught, path, offset)


@pytest.mark.parametrize("key", MODES)
def test_a_callback_watcher_surfaces_what_stopped_its_thread(tmp_path, key):
    store, ids = with_messages(tmp_path, key)
    path, offset = edit_where(store, b"m004", key)
    reader = reopened(tmp_path, key).read_session("a")
    delivered, stopped = [], threading.Event()
    watcher = reader.watch(callback=delivered.append, poll_interval=0.05)
    for _ in range(200):
        if watcher.closed:
            break
        stopped.wait(0.05)
    assert watcher.closed and isinstance(watcher.error, CorruptionError)
    with pytest.raises(CorruptionError) as caught:
        watcher.close()
    assert_caught(caught, path, offset)
    watcher.close()  # raised once
    # nothing past the records the chain vouches for was delivered
    assert all(event.seq < 5 for event in delivered)


def test_a_callback_watcher_of_a_keyed_session_without_its_key_is_refused_at_the_call(
        tmp_path):
    store, _ids = with_messages(tmp_path, KEY)
    reader = fsstore.open_store(tmp_path / "s").read_session("a")
    with pytest.raises(ChainKeyRequired):
        reader.watch(callback=print)
    with pytest.raises(ChainKeyRequired):
        reader.watch()


def test_a_callback_that_raises_stops_the_watcher_and_its_error_is_raised(tmp_path):
    store, _ids = with_messages(tmp_path, None)

    def failing(event):
        raise ValueError("the callback failed")

    watcher = store.read_session("a").watch(callback=failing, poll_interval=0.05)
    for _ in range(200):
        if watcher.closed:
            break
        threading.Event().wait(0.05)
    with pytest.raises(ValueError, match="the callback failed"):
        watcher.close()


# --- verify_backup ------------------------------------------------------------------------


def test_verify_backup_takes_the_chain_key(tmp_path, capsys):
    store, _ids = with_messages(tmp_path, KEY)
    report = fsstore.backup_store(store, tmp_path / "backup", verify=True)
    assert not report.failed
    without = fsstore.verify_backup(tmp_path / "backup")
    assert any(f.level == "problem" and "key" in f.message for f in without)
    assert [f for f in fsstore.verify_backup(tmp_path / "backup", chain_key=KEY)
            if f.level == "problem"] == []
    key_file = tmp_path / "key"
    key_file.write_text(KEY.hex())
    assert main(["--key-file", str(key_file), "backup", "--verify",
                 str(tmp_path / "backup")]) == 0
    assert main(["backup", "--verify", str(tmp_path / "backup")]) == 1
    # an edit in the copy, its checksum recomputed, is a problem naming the chain
    copy = fsstore.open_store(tmp_path / "backup", chain_key=KEY)
    path, offset = edit_where(copy, b"m002", KEY)
    problems = [f for f in fsstore.verify_backup(tmp_path / "backup", chain_key=KEY)
                if f.level == "problem"]
    assert any("the chain" in f.message and f.path == path for f in problems), problems
    capsys.readouterr()


# --- forks at a seq inside a compacted file --------------------------------------------


def compacted_parent(tmp_path, key):
    """A chained session "p" whose first file is a compacted one of several members
    (and a segment or two after it), with a batch of five events inside it."""
    store = chained_store(tmp_path / "s", key, segment_size=4096)
    with store.create_session("p") as parent:
        fill(parent, 30)
        parent.append_many([{"n": n, "text": "batch"} for n in range(5)])  # seqs 31..35
        fill(parent, 120, first=40)
    store.read_session("p").compact()
    return store


@pytest.mark.parametrize("key", MODES)
@pytest.mark.parametrize("where", ["first-member", "later-member", "inside-a-batch",
                                   "a-members-end"])
def test_a_fork_inside_a_compacted_chained_file(tmp_path, key, where):
    store = compacted_parent(tmp_path, key)
    names = segment_names(store, "p")
    _header, members = compacted_members(os.path.join(log_dir(store, "p"), names[0]))
    assert len(members) > 3
    firsts = [first for first, _ in members]
    at_seq = {"first-member": 5, "later-member": firsts[3] + 2, "inside-a-batch": 33,
              "a-members-end": firsts[2] - 1}[where]
    parent = store.read_session("p")
    before = ([e.data for e in parent.events()], parent.head_hash, parent.state())
    with store.fork_session("p", "f", at_seq=at_seq) as fork:
        assert fork.head == at_seq
        fill(fork, 4, first=90)
    reader = store.read_session("f")
    assert [e.seq for e in reader.events()] == list(range(1, at_seq + 5))
    assert [e.data for e in reader.events()][:at_seq] == before[0][:at_seq]
    assert [e.data["n"] for e in reader.events()][at_seq:] == [90, 91, 92, 93]
    assert reader.verify() == []
    [(junction, _uid)] = manifest_of(store, "f")["chain"]["forks"]
    assert junction == (30 if where == "inside-a-batch" else at_seq)
    # the members before the one holding the fork point are kept, byte for byte
    fork_names = segment_names(store, "f")
    holding = max(i for i, first in enumerate(firsts) if first <= at_seq)
    if holding:
        _h, kept = compacted_members(os.path.join(log_dir(store, "f"), fork_names[0]))
        assert kept == members[:holding]
    parent = store.read_session("p")  # unaffected
    assert ([e.data for e in parent.events()], parent.head_hash, parent.state()) == before
    assert parent.verify() == []
    # a fork of the fork, before and after its junction
    for name, seq in (("g", at_seq - 1), ("h", at_seq + 2)):
        with store.fork_session("f", name, at_seq=seq) as grandchild:
            fill(grandchild, 2, first=95)
        reader = store.read_session(name)
        assert [e.seq for e in reader.events()] == list(range(1, seq + 3))
        assert reader.verify() == [], name
    # an edit in the fork's copy of the member, its checksum recomputed, is caught
    own = sorted(int(n[:20]) for n in fork_names)
    copied = [first for first in own if first <= at_seq and first != own[0] or (
        first == own[0] and not holding)]
    if copied and where != "inside-a-batch" or where == "first-member":
        log = log_of(store, "f", key)
        first = copied[-1]
        off = edit_content(log, first)
        with pytest.raises(CorruptionError) as caught:
            [e.seq for e in store.read_session("f").events()]
        assert_caught(caught, log.file(first), off)


@pytest.mark.parametrize("key", MODES)
def test_a_fork_at_and_after_the_base_of_a_retained_compacted_chained_session(tmp_path, key):
    store = chained_store(tmp_path / "s", key, segment_size=4096)
    with store.create_session("p") as parent:
        for turn in range(10):
            fill(parent, 15, first=turn * 15)
            parent.finish_turn()
    store.retain("p", keep_turns=3)
    store.read_session("p").compact()  # the base and what follows in one file
    _header, members = compacted_members(
        os.path.join(log_dir(store, "p"), segment_names(store, "p")[0]))
    assert len(members) > 2 and struct.unpack_from("<I", members[0][1], 20)[0] == 5
    reader = store.read_session("p")
    base_seq = reader.history_start - 1
    for name, at_seq in (("at-base", base_seq), ("after", members[1][0] + 3)):
        with store.fork_session("p", name, at_seq=at_seq) as fork:
            fill(fork, 3, first=90)
        forked = store.read_session(name)
        assert [e.seq for e in forked.events()] == list(range(base_seq + 1, at_seq + 4))
        assert forked.verify() == [], name
    assert store.read_session("p").verify() == []


def test_a_file_of_another_session_put_in_place_fails_the_point_reads_of_messages(
        tmp_path, monkeypatch):
    # the whole genuine file of a fork (same key, same size, its header's uid made this
    # session's) in place of a sealed file: its run holds, its link-in does not
    from fsstore.segment_header import decode_segment_header, encode_segment_header

    monkeypatch.setenv("FSSTORE_CHAIN_KEY", KEY.hex())
    root = tmp_path / "store"
    store = fsstore.open_store(root, chain=True, segment_size=4096)

    def roll(session):
        with session._writer.lock:
            session._writer.roll_over()

    with store.create_session("a") as session:
        for n in range(1, 7):
            session.messages.append(fsstore.Message.of_text("user", f"a{n}", id=f"m{n}"))
            if n in (3, 6):
                roll(session)
        session.messages.append(fsstore.Message.of_text("user", "a-last", id="m9"))
    with store.fork_session("a", "c", at_seq=3) as fork:
        for n in range(4, 7):
            fork.messages.append(fsstore.Message.of_text("user", f"c{n}", id=f"m{n}"))
        roll(fork)
    ours, theirs = root / "sessions" / "a" / "log", root / "sessions" / "c" / "log"
    first, second = sorted(ours.glob("*.fslog"))[:2]
    assert fsstore.open_store(root).read_session("a").messages.get("m5").text == "a5"
    data = (theirs / second.name).read_bytes()
    uid = decode_segment_header(first.read_bytes()[:64], str(first)).uid
    head = decode_segment_header(data[:64], "x")
    swapped = mark_segment_header(encode_segment_header(head.first_seq, head.log_start,
                                                        uid)[:52], len(data)) + data[64:]
    assert len(swapped) == second.stat().st_size
    second.unlink()
    second.write_bytes(swapped)
    reader = fsstore.open_store(root).read_session("a")
    with pytest.raises(CorruptionError, match="chain"):
        reader.messages.get("m5")
    with pytest.raises(CorruptionError, match="chain"):
        fsstore.open_store(root).read_session("a").messages.all()
