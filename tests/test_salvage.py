"""Salvage of a damaged log, ``fsstore cat --salvage``, and the first half of repair: the
plan and the copy of the damaged files aside.

Damage is made with real files of a real session. The oracle of every damage test: a
frame whose exact bytes still appear in some segment file is intact, every other frame
is damaged; salvage must save every intact frame's events (equal to what was written)
and report every damaged frame's seqs lost, the two covering the log exactly."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import struct
from pathlib import Path

import msgspec
import pytest
from conftest import tree_snapshot
from crashsim import VARIANTS, CrashSimIO
from crc32c import crc32c

import fsstore
from fsstore import FileIO, layout
from fsstore.cli import main
from fsstore.cli._common import event_json
from fsstore.log_format import _parse_frame
from fsstore.repair import Gap, plan_repair
from fsstore.salvage import (
    DUPLICATE,
    FOREIGN,
    HEADER,
    NEWER_KIND,
    OUT_OF_ORDER,
    TORN_TAIL,
    UNDECODABLE,
    SalvageReport,
    SeqRange,
    salvage_session,
)
from fsstore.segment_header import SEGMENT_HEADER_SIZE

BATCHES = 60


@pytest.fixture(params=[False, True], ids=["unchained", "chained"])
def small_store(request, tmp_path) -> fsstore.Store:
    """Segments of 4 KiB, of a session without a chain and of one with a chain: salvage
    reads chained records by their checksums, as unchained ones (FORMAT.md 3.4)."""
    return fsstore.open_store(tmp_path / "store", segment_size=4096, chain=request.param)


class FrameAt:
    """A frame of the undamaged log: its file, offset, bytes and seqs."""

    def __init__(self, path: str, offset: int, raw: bytes, first: int, count: int) -> None:
        self.path, self.offset, self.raw = path, offset, raw
        self.seqs = range(first, first + count)

    def intact_in(self, files: bytes) -> bool:
        """Whether the bytes its checksum covers, and its trailer, appear in ``files`` as
        they were: every byte of an unchained frame; a chained frame's but its chain
        fields (its anchor, its value), which salvage does not check (FORMAT.md 3.4)."""
        (length,) = struct.unpack_from("<I", self.raw, 4)
        checked = (24 + length + 7) & ~7
        if checked + 8 == len(self.raw):
            return self.raw in files
        at = files.find(self.raw[:checked])
        while at != -1:
            if files[at + len(self.raw) - 8:at + len(self.raw)] == self.raw[-8:]:
                return True
            at = files.find(self.raw[:checked], at + 1)
        return False


def build(store: fsstore.Store, session_id: str = "s", seed: int = 7):
    """A closed session over several 4 KiB segments, batches of 1 to 3 events; its
    path, segment files, frames, and every event as written."""
    rng = random.Random(seed)
    with store.create_session(session_id) as session:
        for index in range(BATCHES):
            size = rng.randint(1, 3)
            session.append_many([{"i": index, "j": j, "text": "x" * rng.randint(10, 90)}
                                 for j in range(size)], kind="note")
            if index % 9 == 8:
                session.finish_turn()
    path = layout.session_dir(store.path, session_id)
    events = list(store.read_session(session_id).events(include_internal=True))
    return path, segments(path), frames_of(path), events


def segments(path: str) -> list[str]:
    log = layout.log_dir(path)
    return [os.path.join(log, n) for n in sorted(os.listdir(log)) if n.endswith(".fslog")]


def frames_of(path: str) -> list[FrameAt]:
    found = []
    for segment in segments(path):
        data = Path(segment).read_bytes()
        view, off = memoryview(data), SEGMENT_HEADER_SIZE
        while (frame := _parse_frame(data, view, off, len(data))) is not None:
            size = frame.size  # a chained frame's chain fields included (FORMAT.md 3.4)
            found.append(FrameAt(segment, off, data[off:off + size], frame.first_seq,
                                 frame.event_count))
            off += size
    return found


def salvage(store: fsstore.Store, session_id: str = "s") -> SalvageReport:
    return salvage_session(store.io, layout.session_dir(store.path, session_id), session_id)


def seqs_of(ranges) -> set[int]:
    return {s for r in ranges for s in range(r.first, r.last + 1)}


def check_against_oracle(report: SalvageReport, path: str, frames: list[FrameAt],
                         events) -> set[int]:
    """Salvage saved every intact frame, exactly, and lost the others; the lost seqs."""
    files = b"".join(Path(p).read_bytes() for p in segments(path))
    intact = {s for f in frames if f.intact_in(files) for s in f.seqs}
    every = {e.seq for e in events}
    expected_lost = every - intact
    saved = seqs_of(report.saved)
    closed = seqs_of(r for r in report.lost if r.last is not None)
    assert saved == intact
    assert not saved & closed
    if report.open_end is None:
        assert closed == expected_lost
        assert report.head == max(every)
    else:
        # records lost at the end of the log: how many is unknown, all from there are lost
        assert closed | set(range(report.open_end, max(every) + 1)) == expected_lost
        assert report.head == report.open_end - 1
    assert saved | closed == set(range(report.log_start, report.head + 1))
    by_seq = {e.seq: e for e in events}
    assert list(report.events()) == [by_seq[s] for s in sorted(saved)]
    return expected_lost


def flip(path: str, at: int) -> None:
    data = bytearray(Path(path).read_bytes())
    data[at] ^= 0x41
    Path(path).write_bytes(bytes(data))


def middle(frames: list[FrameAt], segment: str) -> FrameAt:
    inside = [f for f in frames if f.path == segment]
    return inside[len(inside) // 2]


# --- each kind of damage ---------------------------------------------------------------------


def test_an_undamaged_log_is_saved_whole_and_reported_clean(small_store):
    path, files, frames, events = build(small_store)
    assert len(files) >= 4
    report = salvage(small_store)
    assert report.clean and not report.lost and report.damaged == []
    assert check_against_oracle(report, path, frames, events) == set()
    assert report.to_dict()["saved"] == [[1, events[-1].seq]]


def test_a_flipped_byte_in_a_sealed_segment_loses_that_record_only(small_store):
    path, files, frames, events = build(small_store)
    frame = middle(frames, files[1])
    flip(files[1], frame.offset + 30)
    report = salvage(small_store)
    assert check_against_oracle(report, path, frames, events) == set(frame.seqs)
    [damage] = report.problems
    assert (damage.path, damage.offset) == (files[1], frame.offset)
    assert damage.length == len(frame.raw)
    assert damage.lost is not None and set(range(damage.lost.first, damage.lost.last + 1)
                                           ) == set(frame.seqs)
    assert report.lost[0].causes == (damage.where(),)


def test_a_flipped_byte_in_the_last_segment_reads_the_records_after_it(small_store):
    path, files, frames, events = build(small_store)
    inside = [f for f in frames if f.path == files[-1]]
    flip(files[-1], inside[0].offset + 26)
    report = salvage(small_store)
    assert check_against_oracle(report, path, frames, events) == set(inside[0].seqs)
    assert report.open_end is None


def test_a_zeroed_range_loses_the_records_it_touches(small_store):
    path, files, frames, events = build(small_store)
    inside = [f for f in frames if f.path == files[2]]
    start, stop = inside[1].offset + 5, inside[3].offset + 12
    data = bytearray(Path(files[2]).read_bytes())
    data[start:stop] = bytes(stop - start)
    Path(files[2]).write_bytes(bytes(data))
    lost = check_against_oracle(salvage(small_store), path, frames, events)
    assert lost == {s for f in inside[1:4] for s in f.seqs}


def test_a_sealed_segment_cut_short_loses_its_records_after_the_cut(small_store):
    path, files, frames, events = build(small_store)
    frame = middle(frames, files[1])
    os.truncate(files[1], frame.offset + 10)
    report = salvage(small_store)
    lost = check_against_oracle(report, path, frames, events)
    assert min(lost) == frame.seqs[0] and report.open_end is None


def test_the_last_segment_cut_short_loses_an_unknown_number_of_records_at_the_end(small_store):
    path, files, frames, events = build(small_store)
    frame = middle(frames, files[-1])
    os.truncate(files[-1], frame.offset + 10)
    report = salvage(small_store)
    check_against_oracle(report, path, frames, events)
    assert report.open_end == frame.seqs[0]
    assert "unknown" in str(report.lost[-1])


def test_an_inserted_byte_shifts_the_grid_and_the_records_after_it_are_found(small_store):
    path, files, frames, events = build(small_store)
    frame = middle(frames, files[1])
    data = Path(files[1]).read_bytes()
    at = frame.offset + 40
    Path(files[1]).write_bytes(data[:at] + b"\x5a" + data[at:])
    lost = check_against_oracle(salvage(small_store), path, frames, events)
    assert lost == set(frame.seqs)


def test_a_byte_inserted_between_records_loses_nothing(small_store):
    path, files, frames, events = build(small_store)
    frame = middle(frames, files[1])
    data = Path(files[1]).read_bytes()
    Path(files[1]).write_bytes(data[:frame.offset] + b"\x5a" + data[frame.offset:])
    report = salvage(small_store)
    assert check_against_oracle(report, path, frames, events) == set()
    [damage] = report.problems
    assert (damage.offset, damage.length, damage.lost) == (frame.offset, 1, None)


def test_a_deleted_middle_segment_is_a_seq_gap(small_store):
    path, files, frames, events = build(small_store)
    os.unlink(files[2])
    report = salvage(small_store)
    lost = check_against_oracle(report, path, frames, events)
    assert lost == {s for f in frames if f.path == files[2] for s in f.seqs}
    [gap] = report.lost
    assert gap.causes == () and "missing" in gap.explain()
    assert os.path.basename(files[2]) in gap.explain()


def test_a_damaged_segment_header_skips_the_header_and_reads_its_records(small_store):
    path, files, frames, events = build(small_store)
    flip(files[1], 20)
    report = salvage(small_store)
    assert check_against_oracle(report, path, frames, events) == set()
    assert [(d.kind, d.path, d.offset) for d in report.problems] == [(HEADER, files[1], 0)]


def test_swapped_records_are_both_kept_in_seq_order(small_store):
    path, files, frames, events = build(small_store)
    inside = [f for f in frames if f.path == files[1]]
    a, b = inside[2], inside[3]
    data = Path(files[1]).read_bytes()
    end = b.offset + len(b.raw)
    Path(files[1]).write_bytes(data[:a.offset] + b.raw + a.raw + data[end:])
    report = salvage(small_store)
    assert check_against_oracle(report, path, frames, events) == set()
    assert [d.kind for d in report.problems] == [OUT_OF_ORDER]


def test_a_duplicated_record_keeps_the_first_copy_and_reports_the_other(small_store):
    path, files, frames, events = build(small_store)
    inside = [f for f in frames if f.path == files[1]]
    a = inside[2]
    data = Path(files[1]).read_bytes()
    at = inside[4].offset
    Path(files[1]).write_bytes(data[:at] + a.raw + data[at:])
    report = salvage(small_store)
    assert check_against_oracle(report, path, frames, events) == set()
    [dup] = report.problems
    assert (dup.kind, dup.offset, dup.lost) == (DUPLICATE, at, None)


def _forged(first: int, count: int, payload: bytes, frame_type: int = 1) -> bytes:
    pad = -(24 + len(payload)) & 7
    body = (struct.pack("<IQII", len(payload), first, count, frame_type) + payload
            + b"\0" * pad + struct.pack("<I", 24 + len(payload) + pad + 8) + b"FSE\n")
    return struct.pack("<I", crc32c(body)) + body


@pytest.mark.parametrize("bad", ["payload", "type"])
def test_a_checksum_valid_record_that_cannot_be_read_loses_exactly_its_seqs(small_store, bad):
    path, files, frames, events = build(small_store)
    frame = middle(frames, files[1])
    count = len(frame.seqs)
    forged = (_forged(frame.seqs[0], count, msgspec.msgpack.encode([1.0, -1, []]))
              if bad == "payload" else
              _forged(frame.seqs[0], count, frame.raw[24:24 + 8], frame_type=9))
    data = Path(files[1]).read_bytes()
    end = frame.offset + len(frame.raw)
    Path(files[1]).write_bytes(data[:frame.offset] + forged + data[end:])
    report = salvage(small_store)
    assert check_against_oracle(report, path, frames, events) == set(frame.seqs)
    [damage] = report.problems
    assert damage.kind == (UNDECODABLE if bad == "payload" else "unknown record type")


def test_another_sessions_segment_in_its_place_is_reported_and_not_read(small_store):
    path, files, frames, events = build(small_store)
    _, other_files, _, _ = build(small_store, "other")
    Path(files[1]).write_bytes(Path(other_files[1]).read_bytes())
    report = salvage(small_store)
    lost = check_against_oracle(report, path, frames, events)
    assert lost == {s for f in frames if f.path == files[1] for s in f.seqs}
    assert [(d.kind, d.path) for d in report.problems] == [(FOREIGN, files[1])]


def as_major(segment: bytes, major: int) -> bytes:
    """The segment with a header of another major version, checksums made to hold."""
    data = bytearray(segment)
    data[8:10] = major.to_bytes(2, "little")
    data[48:52] = struct.pack("<I", crc32c(bytes(data[:48])))  # static_crc
    data[56:60] = struct.pack("<I", crc32c(bytes(data[48:56])))  # mark_crc
    data[60:64] = struct.pack("<I", crc32c(bytes(data[:60])))  # header_crc
    return bytes(data)


def test_a_segment_of_a_newer_kind_is_reported_as_unreadable_until_fsstore_reads_it(
        small_store):
    path, files, frames, events = build(small_store)
    Path(files[1]).write_bytes(as_major(Path(files[1]).read_bytes(), 3))
    report = salvage(small_store)
    kinds = [d.kind for d in report.problems]
    assert kinds == [NEWER_KIND], report.summary_lines()
    unread = {s for f in frames if f.path == files[1] for s in f.seqs}
    assert seqs_of(report.lost) == unread
    assert [e.seq for e in report.events()] == [e.seq for e in events if e.seq not in unread]


def test_a_torn_tail_is_a_note_and_loses_nothing(small_store):
    path, files, frames, events = build(small_store)
    with open(files[-1], "ab") as handle:
        handle.write(frames[-1].raw[:30])  # half an append past the synced mark
    report = salvage(small_store)
    assert check_against_oracle(report, path, frames, events) == set()
    assert [d.kind for d in report.damaged] == [TORN_TAIL] and report.clean


def test_segments_before_the_log_start_are_notes_and_not_read(small_store):
    with small_store.create_session("s") as session:
        session.append_many([{"i": i} for i in range(40)])
        session.clear()
        session.append({"after": 1})
    log = layout.log_dir(layout.session_dir(small_store.path, "s"))
    current = sorted(os.listdir(log))
    stale = os.path.join(log, layout.segment_name(1))
    Path(stale).write_bytes(b"\x89FSLOG\r\n" + bytes(200))  # an interrupted clear's leftover
    report = salvage(small_store)
    assert report.clean, report.summary_lines()
    assert [d.path for d in report.damaged] == [stale] and current
    assert [e.data for e in report.events()] == [{"after": 1}]


# --- random damage ---------------------------------------------------------------------------


def random_damage(rng: random.Random, files: list[str], frames: list[FrameAt]) -> str:
    kind = rng.choice(["flip", "zero", "cut", "insert", "delete", "unlink", "header",
                       "swap", "duplicate"])
    present = [f for f in files if os.path.exists(f)]
    target = rng.choice(present[:-1] if kind in ("cut", "unlink") else present)
    data = Path(target).read_bytes()
    if kind == "unlink":
        os.unlink(target)
        return kind
    if kind == "header":
        flip(target, rng.randrange(0, 48))
        return kind
    at = rng.randrange(SEGMENT_HEADER_SIZE, len(data))
    if kind == "flip":
        flip(target, at)
    elif kind == "zero":
        stop = min(len(data), at + rng.randint(1, 300))
        Path(target).write_bytes(data[:at] + bytes(stop - at) + data[stop:])
    elif kind == "cut":
        os.truncate(target, at)
    elif kind == "insert":
        Path(target).write_bytes(data[:at] + rng.randbytes(rng.randint(1, 9)) + data[at:])
    elif kind == "delete":
        Path(target).write_bytes(data[:at] + data[at + rng.randint(1, 9):])
    else:
        inside = [f for f in frames if f.path == target]
        if len(inside) < 3:
            return kind
        index = rng.randrange(len(inside) - 2)
        a, b = inside[index], inside[index + 1]
        end = b.offset + len(b.raw)
        middle_part = b.raw + a.raw if kind == "swap" else a.raw + a.raw + b.raw
        Path(target).write_bytes(data[:a.offset] + middle_part + data[end:])
    return kind


def run_random_damage(tmp_path, trials: int, seed: int, chain: bool) -> None:
    rng = random.Random(seed)
    for trial in range(trials):
        store = fsstore.open_store(tmp_path / f"store{trial}", segment_size=4096, chain=chain)
        path, files, frames, events = build(store, seed=trial)
        kinds = [random_damage(rng, files, frames) for _ in range(rng.randint(1, 3))]
        report = salvage(store)
        try:
            check_against_oracle(report, path, frames, events)
        except AssertionError:
            print(trial, kinds, *report.summary_lines(), sep="\n")
            raise


@pytest.mark.parametrize("chain", [False, True], ids=["unchained", "chained"])
def test_random_damage_saves_every_intact_record_and_loses_exactly_the_damaged_ones(tmp_path,
                                                                                     chain):
    run_random_damage(tmp_path, 30, seed=16, chain=chain)


@pytest.mark.long
@pytest.mark.parametrize("chain", [False, True], ids=["unchained", "chained"])
def test_random_damage_at_length(tmp_path, chain):
    run_random_damage(tmp_path, 1500, seed=1616, chain=chain)


# --- read-only -------------------------------------------------------------------------------


class NoWrites(FileIO):
    """Fails any call that would change a file or a name."""

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        assert not flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC), path
        return super().open(path, flags, mode)

    def _refuse(self, *args: object, **kwargs: object) -> None:
        raise AssertionError(f"salvage wrote: {args}")

    pwrite = truncate = mkdir = rename = unlink = link = rmtree = _refuse  # type: ignore
    fsync = fdatasync = fsync_dir = write_new = atomic_write = _refuse  # type: ignore


def test_salvage_never_writes(small_store):
    path, files, frames, _ = build(small_store)
    flip(files[1], middle(frames, files[1]).offset + 30)
    report = salvage_session(NoWrites(), path, "s")
    assert report.lost and list(report.events())


def folder_hash(root: str) -> str:
    digest = hashlib.sha256()
    for name, content in sorted(tree_snapshot(root).items()):
        digest.update(name.encode() + b"\0" + (b"<dir>" if content is None else content))
    return digest.hexdigest()


def test_cat_salvage_prints_every_record_that_verifies_and_changes_nothing(
        small_store, capsys):
    path, files, frames, events = build(small_store, seed=2)  # many records in the last
    damaged = [middle(frames, files[1]), middle(frames, files[-1])]
    for frame in damaged:
        flip(frame.path, frame.offset + 33)
    before = folder_hash(small_store.path)
    status = main(["--store", small_store.path, "cat", "s", "--salvage", "--all"])
    out, err = capsys.readouterr()
    assert folder_hash(small_store.path) == before
    assert status == 1
    lost = {s for f in damaged for s in f.seqs}
    assert out.splitlines() == [event_json(e) for e in events if e.seq not in lost]
    assert max(damaged[1].seqs) < events[-1].seq  # records after the damage are printed
    for frame in damaged:
        assert f"{frame.path} at byte {frame.offset}" in err
    assert "lost: 2 record(s)" in err or f"lost: {len(lost)} record(s)" in err

    status = main(["--store", small_store.path, "cat", "s", "--salvage", "--after", "20",
                   "--limit", "3"])
    out, _ = capsys.readouterr()
    callers = [e for e in events if e.seq > 20 and e.seq not in lost
               and not e.kind.startswith("fsstore.")][:3]
    assert out.splitlines() == [event_json(e) for e in callers]


def test_cat_salvage_of_a_sound_session_prints_what_cat_prints(small_store, capsys):
    build(small_store)
    assert main(["--store", small_store.path, "cat", "s"]) == 0
    plain_out = capsys.readouterr().out
    assert main(["--store", small_store.path, "cat", "s", "--salvage"]) == 0
    out, err = capsys.readouterr()
    assert out == plain_out and "lost: none" in err


# --- other files, and the first half of repair ----------------------------------------------


def test_a_damaged_snapshot_and_checkpoint_are_listed_as_rebuildable(small_store):
    with small_store.create_session("s") as session:
        session.append_many([{"i": i} for i in range(30)])
        session.set_state("k", 1)
        session.snapshot()
        session.checkpoint("c1", checkpoint_id="c1")
    path = layout.session_dir(small_store.path, "s")
    snap = os.path.join(layout.state_dir(path), os.listdir(layout.state_dir(path))[0])
    ckpt = layout.checkpoint_path(path, "c1")
    for damaged in (snap, ckpt):
        flip(damaged, os.path.getsize(damaged) - 3)
    report = salvage(small_store)
    assert not report.lost and not report.problems
    remedies = {f.path: f.remedy for f in report.files}
    assert set(remedies) == {snap, ckpt}
    assert "rebuilt from the log" in remedies[snap] and "rebuilt" in remedies[ckpt]
    assert not report.clean and set(report.damaged_files()) == {snap, ckpt}


def test_plan_repair_copies_each_damaged_file_aside_and_changes_nothing_else(small_store):
    path, files, frames, events = build(small_store)
    frame = middle(frames, files[1])
    flip(files[1], frame.offset + 30)
    flip(files[2], 12)  # a damaged header: its records are all saved
    before = tree_snapshot(path)
    findings_before = small_store.verify(["s"])
    plan = plan_repair(small_store, "s", now=1796083200.0)
    assert plan.aside == os.path.join(path, ".repair-20261201T000000Z")
    after = tree_snapshot(path)
    added = {name for name in after if name not in before}
    assert {name: after[name] for name in before} == before  # the session is unchanged
    assert added == {".repair-20261201T000000Z", ".repair-20261201T000000Z/log",
                     f".repair-20261201T000000Z/log/{os.path.basename(files[1])}",
                     f".repair-20261201T000000Z/log/{os.path.basename(files[2])}",
                     ".repair-20261201T000000Z/repair.json"}
    for copied in plan.copied:
        assert Path(copied.copy).read_bytes() == Path(copied.source).read_bytes()
        assert copied.sha256 == hashlib.sha256(Path(copied.source).read_bytes()).hexdigest()
    record = json.loads(Path(plan.aside, "repair.json").read_text())
    assert record["format"] == "fsstore.repair" and record["report"]["lost"][0]["first"] == (
        frame.seqs[0])
    # verify and every read ignore the folder
    assert small_store.verify(["s"]) == findings_before
    assert seqs_of(plan.lost) == set(frame.seqs)
    # what the rewrite will write: every seq once, in order, lost ones as gaps
    covered = []
    for item in plan.records():
        if isinstance(item, Gap):
            covered.extend(range(item.first, item.last + 1))
        else:
            covered.append(item.seq)
    assert covered == list(range(1, events[-1].seq + 1))
    again = plan_repair(small_store, "s", now=1796083200.0)  # the same second: a new folder
    assert again.aside == plan.aside + "-2"


def test_plan_repair_of_a_sound_session_copies_nothing(small_store):
    path, _, _, _ = build(small_store)
    before = tree_snapshot(path)
    plan = plan_repair(small_store, "s")
    assert not plan.needed and plan.aside is None and plan.copied == []
    assert tree_snapshot(path) == before


class Crash(Exception):
    pass


def test_a_crash_during_the_copy_aside_leaves_the_session_whole_and_no_partial_copy(tmp_path):
    root = tmp_path / "root"
    store = fsstore.open_store(root / "store", segment_size=4096)
    path, files, frames, _ = build(store)
    flip(files[1], middle(frames, files[1]).offset + 30)
    flip(files[3], middle(frames, files[3]).offset + 30)
    session_files = tree_snapshot(path)
    shutil.copytree(root, tmp_path / "pristine")
    probe = CrashSimIO(str(root))
    plan_repair(fsstore.open_store(root / "store", io=probe), "s", now=1.0)
    total = probe.ops
    assert total > 8
    for crash_at in range(1, total + 1):
        for variant in VARIANTS:
            work = tmp_path / f"w{crash_at}{variant}"
            shutil.copytree(tmp_path / "pristine", work / "root")
            io = CrashSimIO(str(work / "root"))

            def crash(io: CrashSimIO = io, at: int = crash_at) -> None:
                if io.ops == at:
                    raise Crash

            io.on_op = crash
            with pytest.raises(Crash):
                plan_repair(fsstore.open_store(work / "root" / "store", io=io), "s", now=1.0)
            io.on_op = None
            io.materialize(str(work / "after"), variant)
            session = work / "after" / "store" / "sessions" / "s"
            state = tree_snapshot(str(session))
            assert {k: state.get(k, b"gone") for k in session_files} == session_files
            asides = [n for n in os.listdir(session) if n.startswith(".repair-")]
            for aside in asides:  # whole, or not there at all
                record = json.loads((session / aside / "repair.json").read_text())
                assert len(record["copied"]) == 2
                for copied in record["copied"]:
                    content = (session / aside / copied["path"]).read_bytes()
                    assert content == session_files[copied["path"]]
                    assert hashlib.sha256(content).hexdigest() == copied["sha256"]


def test_a_compacted_segment_is_salvaged_chunk_by_chunk(small_store):
    path, files, frames, events = build(small_store)
    small_store.compact(target_bytes=1 << 30)  # every sealed segment into one file
    report = salvage(small_store)
    assert report.clean and report.saved == [SeqRange(1, events[-1].seq)]
    assert list(report.events()) == events
    # a damaged chunk: its records are lost, every other record saved
    compacted = os.path.join(path, "log", sorted(os.listdir(os.path.join(path, "log")))[0])
    data = bytearray(Path(compacted).read_bytes())
    members, chunks = struct.unpack_from("<II", data, 52)
    data[SEGMENT_HEADER_SIZE + 16 * (members + chunks) + 8 + 20] ^= 1  # in the first chunk
    Path(compacted).write_bytes(bytes(data))
    report = salvage(small_store)
    assert report.problems and all(d.path == compacted for d in report.problems)
    assert report.lost and report.lost[0].first == 1
    saved = list(report.events())
    assert saved and saved == [e for e in events if e.seq in {s.seq for s in saved}]
    assert saved[-1] == events[-1]



def test_a_damaged_manifest_still_salvages_the_log_and_is_listed(small_store):
    path, files, frames, events = build(small_store)
    Path(path, "session.json").write_text("{not json")
    report = salvage(small_store)
    assert [e.seq for e in report.events()] == [e.seq for e in events]
    [finding] = report.files
    assert finding.path == os.path.join(path, "session.json") and "backup" in finding.remedy


def test_a_session_without_a_log_folder_salvages_nothing_and_says_so(small_store):
    path, files, _, _ = build(small_store)
    for file in files:
        os.unlink(file)
    os.unlink(os.path.join(layout.log_dir(path), "tail.hint"))
    os.rmdir(layout.log_dir(path))
    report = salvage(small_store)
    assert report.saved == [] and not report.clean
    assert report.problems[0].path == layout.log_dir(path)
    assert list(report.events()) == []
    json.dumps(report.to_dict(events=True))
