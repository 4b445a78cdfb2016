"""Pinned heads (docs/FORMAT.md 3.5): a chained session checked against a ``head_hash``
kept from before (``SessionReader.verify(expect_head=)``), pins files (``fsstore pin``)
and a store checked against one (``fsstore verify --pins``).

What a pin adds to the chain: a log cut at a frame boundary at its end (its synced mark
moved back with it), and a whole session folder put back from an older genuine copy,
read and verify clean, as the genuine prefix they are; only the pin tells."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from test_chain_frames import edit_payload, rechain
from test_chain_sessions import KEY, MODES, chained_store, fill, log_of, seqs

import fsstore
from fsstore import InvalidPins, chain
from fsstore.chain import ChainKey, Mac
from fsstore.chain_pins import (
    Pin,
    encode_pins,
    parse_head_hash,
    pin_findings,
    pins_of,
    read_pins,
    verify_pins,
    write_pins,
)
from fsstore.cli import main
from fsstore.segment_header import mark_segment_header


def problems(findings):
    return [f.message for f in findings if f.level == "problem"]


def notes(findings):
    return [f.message for f in findings if f.level == "note"]


def cut_last_records(store, session_id, count):
    """Cut the last ``count`` frames off the newest segment and move its synced mark back
    with them: the prefix reads and verifies as the genuine log it is."""
    log = log_of(store, session_id)
    newest = max(log.segments)
    off, _ = log.frame(newest, -count)
    data = log.data(newest)[:off]
    log.write(newest, mark_segment_header(bytes(data[:52]), len(data)) + data[64:])


# --- one session against a pinned head -------------------------------------------------------


@pytest.mark.parametrize("key", MODES)
def test_a_pin_holds_while_records_are_appended_and_a_note_counts_them(tmp_path, key):
    store = chained_store(tmp_path / "s", key, segment_size=4096)
    with store.create_session("a") as session:
        fill(session, 10)
        pinned = session.head_hash
        assert session.verify(pinned) == []  # a writer checks its own
        fill(session, 50, first=10)  # across rollovers
    reader = store.read_session("a")
    findings = reader.verify(pinned)
    assert problems(findings) == []
    assert notes(findings) == ["matches the pinned head at seq 10; 50 records written since "
                               "(seqs 11 to 60)"]
    assert problems(reader.verify(pinned, exact=True)) == [
        "the head is seq 60, not the pinned 10 (exact): 50 records written since the pin"]
    assert reader.verify(reader.head_hash, exact=True) == []


def test_the_pin_of_an_empty_session_is_its_genesis_and_holds_after_appends(tmp_path):
    store = chained_store(tmp_path / "s")
    with store.create_session("a") as session:
        pinned = session.head_hash
        assert pinned.startswith("0:")
        fill(session, 3)
    assert problems(store.read_session("a").verify(pinned)) == []


@pytest.mark.parametrize("key", MODES)
def test_the_end_of_the_log_cut_off_is_caught_only_against_the_pin(tmp_path, key):
    store = chained_store(tmp_path / "s", key)
    with store.create_session("a") as session:
        fill(session, 8)
        pinned = session.head_hash
    cut_last_records(store, "a", 2)
    reader = store.read_session("a")
    assert reader.head == 6 and reader.verify() == []  # a genuine prefix, marks and all
    assert problems(reader.verify(pinned)) == [
        f"the log ends at seq 6, before the pinned head {pinned}: records 7 to 8 are gone "
        "(the end of the log cut off, or the session put back from an older copy); restore "
        "it from a backup taken after the pin"]
    with store.open_session("a") as session:  # and written on past the pinned seq
        fill(session, 5)
    found = problems(store.read_session("a").verify(pinned))
    assert len(found) == 1 and found[0].startswith("the chain value at seq 8 is ")


@pytest.mark.parametrize("key", MODES)
def test_an_older_copy_of_the_whole_folder_is_caught_only_against_the_pin(tmp_path, key):
    store = chained_store(tmp_path / "s", key, segment_size=4096)
    old = tmp_path / "old-copy"
    with store.create_session("a") as session:
        fill(session, 20)
        shutil.copytree(session.path, old)  # a genuine copy, as a backup would hold
        fill(session, 30, first=20)
        pinned = session.head_hash
    path = store.read_session("a").path
    shutil.rmtree(path)
    shutil.copytree(old, path)
    reader = store.read_session("a")
    # Without a pin, nothing tells: every value of the copy is genuine (docs/FORMAT.md 3.5).
    assert reader.head == 20 and reader.verify() == []
    assert problems(reader.verify(pinned))[0].startswith(
        "the log ends at seq 20, before the pinned head")
    with store.open_session("a") as session:  # the rolled-back session goes on
        fill(session, 40)
    reader = store.read_session("a")
    assert reader.head == 60 and reader.verify() == []
    found = problems(reader.verify(pinned))
    assert len(found) == 1 and found[0].startswith("the chain value at seq 50 is ")


def test_unkeyed_an_edit_with_the_chain_recomputed_is_caught_only_against_the_pin(tmp_path):
    store = chained_store(tmp_path / "s", segment_size=4096)
    with store.create_session("a") as session:
        fill(session, 40)
        pinned = session.head_hash
    log = log_of(store, "a")
    edit_payload(log, 1, 1)
    rechain(log, Mac(), 1)
    reader = store.read_session("a")
    assert len(seqs(reader)) == 40 and reader.verify() == []
    assert reader.head_hash != pinned  # the edit reads, but moves the head
    found = problems(reader.verify(pinned))
    assert len(found) == 1 and "is not the one pinned" in found[0]


def test_a_pin_inside_a_batch_before_the_log_start_or_after_a_clear(tmp_path):
    store = chained_store(tmp_path / "s")
    with store.create_session("a") as session:
        session.append_many([{"n": n} for n in range(4)])  # seqs 1 to 4, one frame
        whole = session.head_hash
        value = whole.split(":")[1]
        found = problems(session.verify(f"2:{value}"))
        assert found == [f"no record of the log ends at seq 2, where the pinned head "
                         f"2:{value} is (it ends inside a batch): the history up to it is "
                         "not the one pinned"]
        session.clear()
        assert session.verify(session.head_hash) == []  # the genesis after the clear
        session.append({"n": 9})
        cleared = session.head_hash
        session.clear()
        session.append({"n": 10})
    reader = store.read_session("a")
    assert problems(reader.verify(whole)) == [
        f"the log was cleared after seq 5: the pinned history up to seq 4 ({whole}) is gone; "
        "restore the session from a backup taken before the clear"]
    found = problems(reader.verify(cleared))
    assert len(found) == 1 and "cleared after seq 5: the pinned history up to seq 5" in found[0]


@pytest.mark.parametrize("key", MODES)
def test_a_fork_holds_its_parents_pin_up_to_the_fork_point_and_not_after(tmp_path, key):
    store = chained_store(tmp_path / "s", key, segment_size=4096)
    with store.create_session("a") as session:
        fill(session, 30)
        at_fork = session.head_hash
        session.fork("f").close()
        fill(session, 5, first=30)
        parent_head = session.head_hash
    with store.open_session("f") as fork:
        assert fork.head_hash == at_fork  # the shared history's value
        fill(fork, 5, first=50)
    fork = store.read_session("f")
    assert problems(fork.verify(at_fork)) == []
    found = problems(fork.verify(parent_head))
    assert len(found) == 1 and "the chain value at seq 35 is " in found[0]
    pins, _ = pins_of(store)
    assert pins["f"].uid != pins["a"].uid
    assert problems(pin_findings(store, "f", pins["a"]._replace(head_hash=at_fork))) == [
        f"the session's uid is {pins['f'].uid}, the pin's {pins['a'].uid}: this is not the "
        "session that was pinned (another one put under its id)"]


def test_a_session_without_a_chain_is_a_problem_against_a_pin(tmp_path):
    store = fsstore.open_store(tmp_path / "s", chain=False)
    with store.create_session("a") as session:
        session.append({"n": 1})
        assert session.head_hash is None
    pinned = "1:" + "ab" * 32
    assert problems(store.read_session("a").verify(pinned)) == [
        f"the session has no hash chain, so the pinned head {pinned} cannot be checked: a "
        "chain stripped from its manifest, or the session replaced by one without a chain"]


def test_a_keyed_session_needs_its_key_to_be_checked_against_a_pin(tmp_path):
    store = chained_store(tmp_path / "s", KEY)
    with store.create_session("a") as session:
        fill(session, 3)
        pinned = session.head_hash
    assert store.read_session("a").verify(pinned) == []
    keyless = fsstore.open_store(tmp_path / "s").read_session("a")
    found = [m for m in problems(keyless.verify(pinned)) if "pinned head" in m]
    assert len(found) == 1 and ChainKey(KEY).key_id in found[0]
    # the same records under an unkeyed chain have other values: a pin tells them apart
    other = chained_store(tmp_path / "t")
    with other.create_session("a") as session:
        fill(session, 3)
        assert session.head_hash != pinned
        assert problems(session.verify(pinned))


@pytest.mark.parametrize("text", ["", "5", "5:", "x:" + "0" * 64, "-1:" + "0" * 64,
                                  "1:" + "0" * 63, "1:" + "A" * 64, "01:" + "0" * 64, 5, None])
def test_text_that_is_no_head_hash_is_refused_before_anything_is_read(tmp_path, text):
    store = chained_store(tmp_path / "s")
    with store.create_session("a") as session:
        session.append({"n": 1})
    with pytest.raises(InvalidPins, match="is not a head hash"):
        parse_head_hash(text)
    if isinstance(text, str) and text:
        with pytest.raises(InvalidPins):
            store.read_session("a").verify(text)


def test_the_async_twin_takes_the_pinned_head(tmp_path):
    import asyncio

    store = chained_store(tmp_path / "s")
    with store.create_session("a") as session:
        fill(session, 2)
        pinned = session.head_hash
        fill(session, 1)
    reader = store.read_session("a")
    assert asyncio.run(reader.averify(pinned, exact=True)) == reader.verify(pinned, exact=True)


# --- pins files ---------------------------------------------------------------------------------


def make_store(tmp_path, key=None):
    """Sessions ``a`` and ``b`` chained, ``plain`` unchained (made through a handle that
    chains nothing)."""
    store = chained_store(tmp_path / "s", key)
    for session_id in ("a", "b"):
        with store.create_session(session_id) as session:
            fill(session, 3)
    plain = fsstore.open_store(tmp_path / "s", chain=False, chain_key=key)
    with plain.create_session("plain") as session:
        session.append({"n": 1})
    return store


@pytest.mark.parametrize("key", MODES)
def test_pins_of_a_store_round_trip_through_a_pins_file(tmp_path, key):
    store = make_store(tmp_path, key)
    pins, unchained = pins_of(store)
    assert sorted(pins) == ["a", "b"] and unchained == ["plain"]
    key_id = None if key is None else ChainKey(KEY).key_id
    reader = store.read_session("a")
    assert pins["a"] == Pin(reader.head_hash, f"{reader.identity.uid:016x}", key_id)
    path = tmp_path / "pins.json"
    write_pins(path, pins, store_root=store.path)
    data = json.loads(path.read_text())
    assert data == {"format": "fsstore-pins", "version": "1.0", "sessions": {
        sid: {"head_hash": pin.head_hash, "uid": pin.uid, "key_id": key_id}
        for sid, pin in pins.items()}}
    assert read_pins(path) == pins
    assert verify_pins(store, read_pins(path)) == []
    assert [name for name in os.listdir(tmp_path) if name != "s"] == ["pins.json"]


def test_a_pins_file_inside_the_store_is_refused_and_nothing_is_written(tmp_path):
    store = make_store(tmp_path)
    pins, _ = pins_of(store)
    for inside in (os.path.join(store.path, "pins.json"),
                   os.path.join(store.path, "sessions", "a", "pins.json")):
        with pytest.raises(InvalidPins, match="inside the store"):
            write_pins(inside, pins, store_root=store.path)
        assert not os.path.exists(inside)
    os.symlink(store.path, tmp_path / "link")
    with pytest.raises(InvalidPins, match="inside the store"):
        write_pins(tmp_path / "link" / "pins.json", pins, store_root=store.path)


@pytest.mark.parametrize("content, match", [
    (b"not json", "is not an fsstore pins file"),
    (b'{"format": "other"}', "is not an fsstore pins file"),
    (b'["fsstore-pins"]', "is not an fsstore pins file"),
    (b'{"format": "fsstore-pins", "version": "2.0", "sessions": {}}', "version '2.0'"),
    (b'{"format": "fsstore-pins", "version": "1.0"}', "is not a map of session ids"),
    (b'{"format": "fsstore-pins", "version": "1.0", "sessions": {"a": 5}}', "not a map"),
    (b'{"format": "fsstore-pins", "version": "1.0", "sessions": {"a": {"head_hash": "5"}}}',
     "is not a head hash"),
    (b'{"format": "fsstore-pins", "version": "1.0", "sessions": {"a": {"head_hash": "1:'
     + b"0" * 64 + b'", "uid": "XYZ"}}}', "uid 'XYZ' is not 16 lowercase hex digits"),
])
def test_a_file_that_is_no_pins_file_is_refused_naming_it(tmp_path, content, match):
    path = tmp_path / "pins.json"
    path.write_bytes(content)
    with pytest.raises(InvalidPins, match=match) as caught:
        read_pins(path)
    assert str(path) in str(caught.value)


def test_a_later_minor_version_and_unknown_keys_are_read(tmp_path):
    path = tmp_path / "pins.json"
    path.write_text(json.dumps({"format": "fsstore-pins", "version": "1.7", "extra": 1,
                                "sessions": {"a": {"head_hash": "1:" + "0" * 64,
                                                   "manifest_mac": "ff"}}}))
    assert read_pins(path) == {"a": Pin("1:" + "0" * 64)}


def test_a_store_against_its_pins(tmp_path):
    store = make_store(tmp_path)
    pins, _ = pins_of(store)
    with store.open_session("a") as session:
        fill(session, 2)
    with store.create_session("new") as session:
        session.append({"n": 1})
    findings = verify_pins(store, pins)
    assert problems(findings) == []
    assert notes(findings) == [
        "matches the pinned head at seq 3; 2 records written since (seqs 4 to 5)",
        "not in the pins file: a chained session made since it was written? (`fsstore pin` "
        "pins it)"]
    assert problems(verify_pins(store, pins, exact=True)) == [
        "the head is seq 5, not the pinned 3 (exact): 2 records written since the pin"]
    assert verify_pins(store, pins, ["b"]) == []
    # b deleted, and another session made under its id
    store.delete_session("b")
    found = problems(verify_pins(store, pins))
    assert found == [f"pinned at {pins['b'].head_hash}, but the store has no such session "
                     "(deleted since the pin, or the store replaced)"]
    with store.create_session("b") as session:
        fill(session, 3)
    found = problems(verify_pins(store, pins, ["b"]))
    assert len(found) == 1 and "this is not the session that was pinned" in found[0]


def test_a_pins_file_is_stable_text_for_git():
    pins = {"b": Pin("2:" + "1" * 64, "00000000000000aa"), "a": Pin("1:" + "0" * 64)}
    text = encode_pins(pins).decode()
    assert text.endswith("}\n") and text.index('"a"') < text.index('"b"')
    assert encode_pins(dict(reversed(pins.items()))).decode() == text


# --- the command line ---------------------------------------------------------------------------


def run(capsys, *argv):
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_pin_then_verify_against_the_pins(tmp_path, capsys):
    store = make_store(tmp_path)
    pins_path = tmp_path / "pins.json"
    code, out, err = run(capsys, "--store", store.path, "pin", "-o", pins_path)
    assert code == 0 and "pinned 2 sessions" in out and "plain" in err
    assert sorted(read_pins(pins_path)) == ["a", "b"]
    code, out, _ = run(capsys, "--store", store.path, "verify", "--pins", pins_path)
    head_a = store.read_session("a").head_hash
    assert code == 0 and out.splitlines()[-1] == "OK"
    assert f"a head_hash {head_a} (sha256)" in out.splitlines()
    code, out, _ = run(capsys, "--store", store.path, "pin")  # to stdout
    assert code == 0 and json.loads(out)["sessions"]["a"]["head_hash"] == head_a
    code, out, _ = run(capsys, "--store", store.path, "pin", "a")
    assert code == 0 and list(json.loads(out)["sessions"]) == ["a"]
    code, out, err = run(capsys, "--store", store.path, "pin", "plain")
    assert code == 1 and "plain" in err and json.loads(out)["sessions"] == {}
    cut_last_records(store, "a", 1)
    code, out, _ = run(capsys, "--store", store.path, "verify")
    assert code == 0  # without the pin: a genuine prefix
    code, out, _ = run(capsys, "--store", store.path, "verify", "--pins", pins_path)
    assert code == 1 and "before the pinned head" in out and out.endswith("1 problem\n")
    code, out, _ = run(capsys, "--store", store.path, "verify", "b", "--pins", pins_path)
    assert code == 0 and "a head_hash" not in out


def test_cli_verify_expect_head(tmp_path, capsys):
    store = make_store(tmp_path)
    pinned = store.read_session("a").head_hash
    with store.open_session("a") as session:
        fill(session, 1)
    base = ["--store", store.path, "verify", "a", "--expect-head", pinned]
    code, out, _ = run(capsys, *base)
    assert code == 0 and "1 record written since" in out and out.endswith("OK\n")
    code, out, _ = run(capsys, *base, "--exact")
    assert code == 1 and "(exact)" in out
    code, out, err = run(capsys, "--store", store.path, "verify", "--expect-head", pinned)
    assert code == 2 and "--expect-head" in err and "SESSION" in err
    code, _, err = run(capsys, *base, "--pins", tmp_path / "p.json")
    assert code == 2 and "not both" in err
    code, _, err = run(capsys, "--store", store.path, "verify", "a", "--expect-head", "nope")
    assert code == 2 and "is not a head hash" in err
    code, out, _ = run(capsys, "--store", store.path, "verify", "plain", "--expect-head", pinned)
    assert code == 1 and "has no hash chain" in out
    code, out, _ = run(capsys, "--store", store.path, "verify", "gone", "--expect-head", pinned)
    assert code == 1 and "no such session" in out and out.endswith("1 problem\n")


def test_cli_pin_refuses_a_file_inside_the_store(tmp_path, capsys):
    store = make_store(tmp_path)
    inside = os.path.join(store.path, "pins.json")
    code, _, err = run(capsys, "--store", store.path, "pin", "-o", inside)
    assert code == 2 and "inside the store" in err and not os.path.exists(inside)


def test_cli_keyed_store_with_a_key_file_or_the_environment(tmp_path, capsys, monkeypatch):
    store = make_store(tmp_path, KEY)
    key_file = tmp_path / "chain.key"
    key_file.write_text(KEY.hex() + "\n")
    pins_path = tmp_path / "pins.json"
    key_id = ChainKey(KEY).key_id
    code, _, err = run(capsys, "--store", store.path, "pin", "-o", pins_path)
    assert code == 2 and key_id in err and not pins_path.exists()
    code, _, _ = run(capsys, "--store", store.path, "--key-file", key_file, "pin", "-o",
                     pins_path)
    assert code == 0 and read_pins(pins_path)["a"].key_id == key_id
    code, out, _ = run(capsys, "--store", store.path, "--key-file", key_file, "verify",
                       "--pins", pins_path)
    assert code == 0 and f"(hmac-sha256 key {key_id})" in out
    code, out, _ = run(capsys, "--store", store.path, "verify", "--pins", pins_path)
    assert code == 1 and key_id in out  # no key: the pins cannot be checked
    monkeypatch.setenv(chain.KEY_FILE_ENV, str(key_file))
    code, out, _ = run(capsys, "--store", store.path, "verify", "--pins", pins_path)
    assert code == 0
    code, out, _ = run(capsys, "--store", store.path, "show", "a")
    assert code == 0 and "head_hash: 3:" in out
