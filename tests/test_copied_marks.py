"""The synced mark in a copy (docs/FORMAT.md, section 3.1): a copy tool that sizes a
segment before it reads the segment's header (tar, rsync, git add) can copy a mark past
the frames it copied. Such a copy reads as the prefix it holds; the same file in the
folder its writer wrote is synced records gone missing."""

import os
import shutil
from pathlib import Path

import pytest

import fsstore
from fsstore import layout
from fsstore.fsio import FileIO
from fsstore.log import LogReader
from fsstore.salvage import salvage_session
from fsstore.tail_hint import in_original_folder, read_tail_hint


def _session_with_synced_turns(store, turns=3) -> tuple[str, list[int]]:
    """A session whose active segment's mark claims its last turn, and the file sizes
    after each turn (what a copy tool could have sized the file at)."""
    sizes = []
    with store.create_session("s") as session:
        for turn in range(1, turns + 1):
            session.append_many([{"turn": turn, "pad": "p" * 100}] * 2, turn=turn)
            session.finish_turn(turn)
            sizes.append(_active(store).stat().st_size)
    return os.path.join(store.path, "sessions", "s"), sizes


def _active(store, session_id="s") -> Path:
    log = Path(store.path) / "sessions" / session_id / "log"
    return sorted(log.glob("*.fslog"))[-1]


def _cut(path: Path, size: int) -> None:
    """What tar copies of a file it sized at ``size`` and read after the writer synced
    more: the header as it is now (its mark past ``size``), the frames up to ``size``."""
    data = path.read_bytes()
    path.write_bytes(data[:size])


def _seqs(store_path) -> list[int]:
    reader = fsstore.open_store(store_path, create=False).read_session("s")
    return [event.seq for event in reader.events()]


def test_a_copy_cut_before_its_mark_reads_as_the_prefix_it_holds(store, tmp_path):
    _path, sizes = _session_with_synced_turns(store)
    copy = tmp_path / "copy"
    shutil.copytree(store.path, copy)
    _cut(_active(fsstore.open_store(copy, create=False)), sizes[0])
    assert _seqs(copy) == [1, 2]
    findings = fsstore.open_store(copy, create=False).verify()
    assert not [f for f in findings if f.level == "problem"], findings
    report = salvage_session(FileIO(), str(copy / "sessions" / "s"), "s")
    assert not report.problems, report


def test_salvage_holds_the_writers_folder_to_its_mark(store):
    path, sizes = _session_with_synced_turns(store)
    _cut(_active(store), sizes[0])
    assert salvage_session(FileIO(), path, "s").problems


def test_the_same_cut_in_the_writers_folder_is_synced_records_gone(store):
    _path, sizes = _session_with_synced_turns(store)
    _cut(_active(store), sizes[0])
    with pytest.raises(fsstore.CorruptionError, match="made them durable up to byte"):
        _seqs(store.path)
    assert any(f.level == "problem" and "durable" in f.message for f in store.verify())


@pytest.mark.parametrize("hint", ["missing", "another folder"])
def test_a_folder_its_hint_does_not_name_is_a_copy(store, hint):
    path, sizes = _session_with_synced_turns(store)
    hint_path = Path(layout.tail_hint_path(layout.log_dir(path)))
    if hint == "missing":
        hint_path.unlink()
    else:
        name = hint_path.read_text().split("\n")[0]
        hint_path.write_text(f"{name}\nfolder {os.stat(hint_path.parent).st_ino + 1}\n")
    _cut(_active(store), sizes[1])
    assert _seqs(store.path) == [1, 2, 4, 5]  # 3, 6: turn_finished


def test_a_hint_of_an_earlier_version_names_the_folder_it_is_in(store):
    """Hints written before the folder line: the mark binds, as it always did there."""
    path, sizes = _session_with_synced_turns(store)
    hint_path = Path(layout.tail_hint_path(layout.log_dir(path)))
    hint_path.write_text(hint_path.read_text().split("\n")[0] + "\n")
    assert in_original_folder(FileIO(), str(hint_path.parent))
    _cut(_active(store), sizes[0])
    with pytest.raises(fsstore.CorruptionError, match="made them durable"):
        _seqs(store.path)


def test_a_mark_within_a_copied_file_binds_in_the_copy(store, tmp_path):
    """Frames zeroed before the mark are damage in a copy as in the original: only a
    mark past the end of the file is what a copy tool can make."""
    _path, sizes = _session_with_synced_turns(store)
    copy = tmp_path / "copy"
    shutil.copytree(store.path, copy)
    segment = _active(fsstore.open_store(copy, create=False))
    data = bytearray(segment.read_bytes())
    data[sizes[0]:] = bytes(len(data) - sizes[0])
    segment.write_bytes(bytes(data))
    with pytest.raises(fsstore.CorruptionError, match="made them durable"):
        _seqs(copy)


def test_a_writer_opening_a_copy_makes_its_mark_bind_there(store, tmp_path):
    _path, sizes = _session_with_synced_turns(store)
    copy = tmp_path / "copy"
    shutil.copytree(store.path, copy)
    copied = fsstore.open_store(copy, create=False)
    segment = _active(copied)
    _cut(segment, sizes[1])
    log = str(segment.parent)
    assert not in_original_folder(FileIO(), log)
    with copied.open_session("s") as session:
        assert session.head == 6
        hint = read_tail_hint(FileIO(), log)
        assert hint is not None and hint.folder_inode == os.stat(log).st_ino
        # the mark now claims what the copy holds, no more: it reads, and binds
        assert _seqs(copy) == [1, 2, 4, 5]
        session.append_many([{"after": 1}], turn=3)
        session.finish_turn(3)
    assert _seqs(copy) == [1, 2, 4, 5, 7]
    _cut(segment, sizes[1])
    with pytest.raises(fsstore.CorruptionError, match="made them durable"):
        _seqs(copy)


class _TakenWhileRead(FileIO):
    """Lets a writer open the copy the ``at``-th time a reader reads its tail hint: a
    writer that takes the copy between the reader's read of a segment header and its look
    at the hint, whichever read that is."""

    def __init__(self, copy: Path, at: int) -> None:
        super().__init__()
        self.copy = copy
        self.at = at

    def read_file(self, path: str, max_bytes: int) -> bytes:
        if path.endswith(layout.TAIL_HINT):
            self.at -= 1
            if self.at == 0:
                fsstore.open_store(self.copy, create=False).open_session("s").close()
        return super().read_file(path, max_bytes)


@pytest.mark.parametrize("read", ["load_segment", "read_header", "events", "salvage"])
def test_a_reader_racing_the_writer_that_takes_a_copy_holds_it_to_no_mark(
        store, tmp_path, read):
    """The writer fixes the copy's mark before its hint names the folder; a reader that
    read the copy's header before the fix and the hint after it must not hold the
    frames it read to the original's mark."""
    _path, sizes = _session_with_synced_turns(store)
    for at in range(1, 5):
        copy = tmp_path / f"copy-{at}"
        shutil.copytree(store.path, copy)
        segment = _active(fsstore.open_store(copy, create=False))
        _cut(segment, sizes[0])
        io = _TakenWhileRead(copy, at)
        log = LogReader(io, str(segment.parent))
        if read == "load_segment":
            buf, header = log.load_segment(1)
            assert header.synced_end <= len(buf), at
        elif read == "read_header":
            assert log.read_header(1).synced_end <= sizes[0], at
        elif read == "events":
            reader = fsstore.open_store(copy, create=False, io=io).read_session("s")
            assert [event.seq for event in reader.events()] == [1, 2], at
        else:
            report = salvage_session(io, str(copy / "sessions" / "s"), "s")
            assert not report.problems, (at, report)
        assert _seqs(copy) == [1, 2]


class _SyncSpy(FileIO):
    """Records, in order, each fdatasync or fsync of a segment and each new tail hint."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.paths: dict[int, str] = {}

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        fd = super().open(path, flags, mode)
        self.paths[fd] = path
        return fd

    def fdatasync(self, fd: int) -> None:
        if self.paths.get(fd, "").endswith(".fslog"):
            self.calls.append("sync segment")
        super().fdatasync(fd)

    def fsync(self, fd: int) -> None:
        if self.paths.get(fd, "").endswith(".fslog"):
            self.calls.append("sync segment")
        super().fsync(fd)

    def rename(self, src: str, dst: str) -> None:
        if dst.endswith(layout.TAIL_HINT):
            self.calls.append("hint")
        super().rename(src, dst)


def test_a_writer_taking_a_copy_makes_its_frames_durable_before_its_mark_binds(
        store, tmp_path):
    """A copy tool writes without syncing: the frames the copied mark claims are durable
    in the copy only once the writer that takes it syncs them, and that must come before
    the hint that makes the mark bind there (else a power loss after it reads as synced
    records lost, and ``sync`` after opening the copy would sync nothing)."""
    _session_with_synced_turns(store)
    copy = tmp_path / "copy"
    shutil.copytree(store.path, copy)  # a consistent copy: its mark is within its file
    spy = _SyncSpy()
    with fsstore.open_store(copy, create=False, io=spy).open_session("s") as session:
        session.sync()
    assert "hint" in spy.calls and "sync segment" in spy.calls[:spy.calls.index("hint")], (
        spy.calls)
