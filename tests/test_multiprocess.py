"""Readers and writers in separate processes, on real files and real locks."""

from __future__ import annotations

import textwrap

import pytest
from procs import Child, run

import fsstore

READER = textwrap.dedent("""
    import sys, fsstore
    store = fsstore.open_store(sys.argv[1], create=False)
    reader = store.read_session("s")
    reads, last = 0, 0
    print("READY", flush=True)
    while True:
        events = list(reader.events())
        seqs = [e.seq for e in events]
        assert seqs == list(range(1, len(seqs) + 1)), "not a prefix"
        batches = {}
        for e in events:
            assert e.data["seq"] == e.seq, "wrong data under a seq"
            batches.setdefault(e.data["first"], []).append(e)
        for members in batches.values():
            assert len(members) == members[0].data["size"], "a batch was split"
        assert len(seqs) >= last, "went backwards"
        if len(seqs) != last:
            print("SEEN", len(seqs), flush=True)
        last = len(seqs)
        reads += 1
        if last >= int(sys.argv[2]):
            print("DONE", reads, last, flush=True)
            break
""")


@pytest.mark.stress
def test_a_reader_in_another_process_always_sees_a_prefix_of_whole_batches(tmp_path):
    store = fsstore.open_store(tmp_path / "store", segment_size=16384)
    writer = store.create_session("s")
    total_batches = 400
    sizes = [1 + (index * 7) % 5 for index in range(total_batches)]
    total = sum(sizes)
    with Child.script(READER, store.path, total) as reader:
        reader.wait_for("READY")
        for index, size in enumerate(sizes):
            first = writer.head + 1
            writer.append_many([{"seq": first + j, "first": first, "size": size,
                                 "pad": "x" * 200} for j in range(size)])
            if index == total_batches // 2:
                # Wait until the reader has seen part of the log, so reads and appends
                # overlap.
                while not 0 < int(reader.wait_for("SEEN")[1]) < total:
                    pass
        writer.close()
        lines = reader.finish()
        assert reader.returncode == 0, reader.describe()
    assert lines[-1].split()[0] == "DONE"
    assert int(lines[-1].split()[2]) == total


WRITER = textwrap.dedent("""
    import sys, fsstore
    store = fsstore.open_store(sys.argv[1], create=False)
    try:
        store.open_session("s")
    except fsstore.SessionLocked as exc:
        print("LOCKED", exc)
    else:
        print("OPENED")
""")


def test_a_second_writer_process_is_refused_while_the_first_holds_the_session(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    session = store.create_session("s")
    (answer,) = run(WRITER, store.path)
    assert answer.startswith("LOCKED") and "open for writing" in answer
    session.close()
    assert run(WRITER, store.path) == ["OPENED"]
