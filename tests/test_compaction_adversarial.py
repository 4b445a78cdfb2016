"""Compaction under attack: damage, bombs, leftovers, forks, clears and old formats
(FORMAT.md 3.2, 5.5). Each test compares what readers return before and after."""

from __future__ import annotations

import os
import shutil
import struct
import threading
import tracemalloc
from pathlib import Path

import pytest
import zstandard
from crc32c import crc32c

import fsstore
from fsstore import compaction
from fsstore.errors import CorruptionError, SessionLocked
from fsstore.segment_header import SEGMENT_HEADER_SIZE

TEXT = "the deploy script fails on a path with spaces; quote $1 and retry " * 4
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def build(root: Path, turns: int = 60, segment_size: int = 8192,
          session_id: str = "s") -> fsstore.Store:
    """A session of messages (some edited and deleted), state, tool calls and
    snapshots over many small segments."""
    store = fsstore.open_store(root, segment_size=segment_size)
    with store.create_session(session_id) as session:
        write_turns(session, 1, turns)
    return store


def write_turns(session: fsstore.Session, start: int, end: int) -> None:
    for turn in range(start, end + 1):
        message = fsstore.Message.of_text("user", f"{turn}: {TEXT}")
        session.messages.append(message)
        session.append({"tool": "read_file", "n": turn}, kind="tool_call", turn=turn)
        session.commit([], state_patch={"turn": turn, "notes": {str(turn): TEXT[:40]}})
        if turn % 7 == 0:
            target = session.messages.last(3)[0]
            session.messages.edit(fsstore.Message.of_text("user", f"edited {turn}",
                                                          id=target.id))
        if turn % 11 == 0:
            session.messages.delete(session.messages.last(2)[0].id)
        if turn % 20 == 0:
            session.snapshot()
        session.finish_turn(turn)


def everything(reader: fsstore.SessionReader) -> list[tuple]:
    return [tuple(event) for event in reader.events(include_internal=True)]


def picture(reader: fsstore.SessionReader) -> dict:
    """What the readers of a session return, to compare before and after compaction."""
    events = everything(reader)
    head = events[-1][0] if events else 0
    out: dict = {"events": events, "head": reader.head, "state": reader.state()}
    for last in (1, 2, 5, 33, 150, 10_000):
        out[f"last{last}"] = [tuple(e) for e in reader.events(last=last,
                                                              include_internal=True)]
    for after in sorted({0, 1, 7, head // 3, head // 2, head - 3, head}):
        out[f"after{after}"] = [tuple(e) for e in reader.events(
            after_seq=after, include_internal=True)][:40]
    for at in sorted({1, head // 4, head // 2, head - 1, head}):
        if at >= 1:
            out[f"state_at{at}"] = reader.state_at(at)
    messages = reader.messages.last(10_000)
    out["messages"] = [(m.id, m.text) for m in messages]
    out["get"] = [reader.messages.get(m.id).text for m in messages[::5]]
    out["history"] = [[tuple(v) for v in reader.messages.history(m.id)]
                      for m in messages[::9]]
    out["page"] = [m.id for m in reader.messages.page(limit=7)]
    if messages:
        out["page_before"] = [m.id for m in reader.messages.page(
            before=messages[len(messages) // 2].id, limit=9)]
    out["usage"] = repr(reader.usage())
    return out


def segment_names(store: fsstore.Store, session_id: str = "s") -> list[str]:
    log = Path(store.path) / "sessions" / session_id / "log"
    return sorted(name for name in os.listdir(log) if name.endswith(".fslog"))


def problems(store: fsstore.Store, session_ids: list[str] | None = None) -> list:
    return [f for f in store.verify(session_ids) if f.level == "problem"]


def interrupted(store: fsstore.Store, monkeypatch, **kwargs) -> None:
    """A compaction that stopped after renaming its files in, before it unlinked the
    segments they merged: they stay as leftovers."""
    real = compaction._unlink
    monkeypatch.setattr(compaction, "_unlink",
                        lambda io, path: None if path.endswith(".fslog") else real(io, path))
    store.read_session(kwargs.pop("session_id", "s")).compact(**kwargs)
    monkeypatch.setattr(compaction, "_unlink", real)


def compacted_path(store: fsstore.Store, session_id: str = "s") -> Path:
    return Path(store.path) / "sessions" / session_id / "log" / segment_names(store,
                                                                              session_id)[0]


# --- damage and bombs ---------------------------------------------------------------


def tables_of(data: bytes) -> tuple[int, int, int]:
    members, chunks = struct.unpack_from("<II", data, 52)
    return members, chunks, SEGMENT_HEADER_SIZE + 16 * (members + chunks)


def rewrite_chunk(data: bytearray, index: int, packed: bytes) -> bytes:
    """``data`` with chunk ``index``'s bytes replaced by ``packed`` (of the same size),
    its table entry's checksum and the tables' checksum made to match."""
    members, chunks, tables_end = tables_of(bytes(data))
    at = SEGMENT_HEADER_SIZE + 16 * (members + index)
    plain_start, plain_size, packed_size, _ = struct.unpack_from("<IIII", data, at)
    assert len(packed) == packed_size
    packed_at = tables_end + 8 + sum(
        struct.unpack_from("<IIII", data, SEGMENT_HEADER_SIZE + 16 * (members + i))[2]
        for i in range(index))
    data[packed_at:packed_at + packed_size] = packed
    struct.pack_into("<IIII", data, at, plain_start, plain_size, packed_size, crc32c(packed))
    struct.pack_into("<I", data, tables_end,
                     crc32c(bytes(data[SEGMENT_HEADER_SIZE:tables_end])))
    return bytes(data)


@pytest.mark.parametrize("claimed", [1 << 31, 1 << 45])
def test_a_chunk_whose_zstd_header_claims_a_huge_size_is_refused_without_allocating_it(
        tmp_path, claimed):
    store = build(tmp_path / "store", turns=30)
    store.compact()
    path = compacted_path(store)
    data = bytearray(path.read_bytes())
    members, _, tables_end = tables_of(bytes(data))
    packed_size = struct.unpack_from("<IIII", data, SEGMENT_HEADER_SIZE + 16 * members)[2]
    packed_at = tables_end + 8
    packed = bytes(data[packed_at:packed_at + packed_size])
    # the zstd frame header: magic, descriptor, window / content size. Rewritten to an
    # 8-byte content size field claiming ``claimed`` bytes, the blocks kept, cut to size
    descriptor = packed[4]
    single = descriptor & 0x20
    size_field = {0: 1 if single else 0, 1: 2, 2: 4, 3: 8}[descriptor >> 6]
    head = 5 + (0 if single else 1)
    bomb = (packed[:4] + bytes([(descriptor & 0x3F) | 0xC0]) + packed[5:head]
            + struct.pack("<Q", claimed) + packed[head + size_field:])
    bomb = bomb[:packed_size].ljust(packed_size, b"\0")
    assert zstandard.frame_content_size(bomb) == claimed
    path.write_bytes(rewrite_chunk(data, 0, bomb))
    tracemalloc.start()
    try:
        with pytest.raises(CorruptionError) as caught:
            list(store.read_session("s").events())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert caught.value.path == str(path)
    assert peak < 64 << 20
    assert problems(store)[0].path == str(path)


def test_every_byte_flip_in_a_compacted_files_header_and_tables_is_reported(tmp_path):
    """Every byte of the header, the member and chunk tables and what ends them, and
    bytes spread over the chunks: a flip there reads as damage naming the file."""
    root = tmp_path / "store"
    build(root, turns=16, segment_size=4096)
    store = fsstore.open_store(root, create=False)
    store.compact()
    path = compacted_path(store)
    clean = path.read_bytes()
    members, _, tables_end = tables_of(clean)
    assert members > 1
    places = list(range(tables_end + 8)) + list(range(tables_end + 8, len(clean), 97))
    missed = []
    for at in places:
        data = bytearray(clean)
        data[at] ^= 0x40
        path.write_bytes(bytes(data))
        try:
            list(fsstore.open_store(root, create=False).read_session("s").events())
        except CorruptionError as exc:
            assert exc.path == str(path), at
            continue
        missed.append(at)
    path.write_bytes(clean)
    assert missed == []
