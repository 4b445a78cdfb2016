"""Readers and writers in separate processes, on real files and real locks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import fsstore

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))

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


def test_a_reader_in_another_process_always_sees_a_prefix_of_whole_batches(tmp_path):
    store = fsstore.open_store(tmp_path / "store", segment_size=16384)
    writer = store.create_session("s")
    total_batches = 400
    sizes = [1 + (index * 7) % 5 for index in range(total_batches)]
    total = sum(sizes)
    reader = subprocess.Popen([sys.executable, "-c", READER, store.path, str(total)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    assert reader.stdout is not None and reader.stdout.readline().strip() == "READY"
    for index, size in enumerate(sizes):
        first = writer.head + 1
        writer.append_many([{"seq": first + j, "first": first, "size": size, "pad": "x" * 200}
                            for j in range(size)])
        if index == total_batches // 2:
            # Wait until the reader has seen part of the log, so reads and appends overlap.
            while True:
                line = reader.stdout.readline()
                assert line, reader.communicate()[1]
                if 0 < int(line.split()[1]) < total:
                    break
    writer.close()
    out, err = reader.communicate(timeout=120)
    assert reader.returncode == 0, err
    assert out.splitlines()[-1].split()[0] == "DONE"
    assert int(out.splitlines()[-1].split()[2]) == total


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
    result = subprocess.run([sys.executable, "-c", WRITER, store.path], capture_output=True,
                            text=True, env=ENV, timeout=60)
    assert result.stdout.startswith("LOCKED") and "open for writing" in result.stdout
    session.close()
    result = subprocess.run([sys.executable, "-c", WRITER, store.path], capture_output=True,
                            text=True, env=ENV, timeout=60)
    assert result.stdout.startswith("OPENED")
