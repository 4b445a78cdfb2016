"""fsstore textconv: every file of a store as stable, readable text; damage printed, never
fatal (docs/FORMAT.md, section 21)."""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fsstore
from fsstore import textconv
from fsstore.cli import main
from fsstore.cli._common import event_json
from fsstore.fsio import FileIO

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(root: Path) -> fsstore.Store:
    """A store holding every kind of file: plain, compacted and retained segments (with a
    base frame), snapshots, checkpoints, blobs (plain and zstd), a vector shard with
    deleted rows and its write-ahead log, the message index, a lease, a workspace."""
    store = fsstore.open_store(root, segment_size=4096)
    with store.create_session("s") as session:
        for turn in range(1, 25):
            session.messages.append(fsstore.Message.of_text("user", f"turn {turn}: " + "x" * 200))
            session.append({"raw": bytes(range(turn)), "nan": float("nan"), "n": turn,
                            "ints": {1: "one"}}, kind="tool_call")
            session.commit([], state_patch={"turn": turn, "blob": b"\x00\xff"})
            session.finish_turn()
        session.snapshot()
        session.checkpoint("cp")
        text = session.blobs.put(b"hello\nworld\n", "text/plain")
        png = session.blobs.put(b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "image/png")
        session.append({"text": text, "png": png}, kind="attach")
        memory = session.create_collection("memory", dim=4)
        memory.upsert([fsstore.VectorDocument(f"d{i}", np.arange(4, dtype=np.float32) + i,
                                              content=f"doc {i}", metadata={"i": i},
                                              seq=3, turn=1) for i in range(5)])
        memory.seal()
        memory.delete(["d1"])
        memory.seal()
    store.compact(["s"])
    with store.create_session("r") as session:
        for turn in range(1, 40):
            session.append({"n": turn, "pad": "y" * 300}, kind="note")
            session.commit([], state_patch={"turn": turn})
            session.finish_turn()
        session.retain(keep_turns=5)
    store.claim_lease("s", "worker")
    store.create_workspace("ws", name="w")
    torn = root / "sessions" / "s" / "log" / "00000000000000000077@4000.torn"
    torn.write_bytes(b"\x12\x34" * 20)
    return store


@pytest.fixture(scope="module")
def rich(tmp_path_factory: pytest.TempPathFactory) -> fsstore.Store:
    return build(tmp_path_factory.mktemp("rich") / "store")


def files_of(store: fsstore.Store) -> list[Path]:
    return sorted(p for p in Path(store.path).rglob("*") if p.is_file())


def text(path: Path | str) -> list[str]:
    return list(textconv.lines(str(path)))


def segments(store: fsstore.Store, session_id: str) -> list[Path]:
    return sorted((Path(store.path) / "sessions" / session_id / "log").glob("*.fslog"))


def events_of(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith('{"seq": ')]


def damage_of(lines: list[str]) -> list[dict]:
    return [json.loads(line)["damage"] for line in lines if line.startswith('{"damage": ')]


# --- what each kind of file prints ---------------------------------------------------------


def test_segments_print_every_event_as_the_json_line_of_fsstore_cat(rich):
    reader = rich.read_session("s")
    printed = [line for path in segments(rich, "s") for line in text(path)]
    assert events_of(printed) == [event_json(e) for e in reader.events(include_internal=True)]
    headers = [json.loads(line) for line in printed if line.startswith('{"chunks"')
               or '"fsstore": "segment"' in line]
    assert [h["first_seq"] for h in headers] == [int(p.stem) for p in segments(rich, "s")]
    assert not damage_of(printed)


def test_bytes_are_printed_losslessly_as_base64(rich):
    printed = [json.loads(line) for path in segments(rich, "s") for line in
               events_of(text(path))]
    raws = [e["data"]["raw"] for e in printed if e["kind"] == "tool_call"]
    assert [base64.b64decode(r["$base64"]) for r in raws] == [bytes(range(n))
                                                               for n in range(1, 25)]
    first = next(e for e in printed if e["kind"] == "tool_call")
    assert first["data"]["nan"] == {"$float": "nan"}
    assert first["data"]["ints"] == {"$map": [[1, "one"]]}


def test_compacted_segment_names_its_members_and_prints_their_events(rich):
    first = text(segments(rich, "s")[0])
    header = json.loads(first[0])
    assert header["compacted"] is True and header["version"] == "2.0"
    assert len(header["members"]) > 1 and header["members"][0] == 1
    seqs = [json.loads(line)["seq"] for line in events_of(first)]
    assert seqs == list(range(1, len(seqs) + 1))


def test_retained_log_prints_its_base_frame_with_the_state_image(rich):
    reader = rich.read_session("r")
    first = text(segments(rich, "r")[0])
    base = json.loads(first[1])["base"]
    assert base["first_seq"] == 1 and base["last_seq"] == reader.history_start - 1
    assert base["image"]["state"] == {"turn": base["turn"]}
    assert not damage_of(first)
    rest = [line for path in segments(rich, "r") for line in events_of(text(path))]
    assert rest == [event_json(e) for e in reader.events(include_internal=True)]


def test_snapshot_and_checkpoint_print_as_sorted_json(rich):
    session = Path(rich.path) / "sessions" / "s"
    state = rich.read_session("s").state()
    for path, kind in ((next((session / "state").glob("*.snap")), "snapshot"),
                       (next((session / "checkpoints").glob("*.ckpt")), "checkpoint")):
        printed = "\n".join(text(path))
        document = json.loads(printed)
        assert document["fsstore"] == kind
        assert document["body"]["state"]["turn"] == state["turn"]
        assert document["body"]["state"]["blob"] == {"$base64": "AP8="}
        assert printed == json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False)
    checkpoint = json.loads("\n".join(text(next((session / "checkpoints").glob("*.ckpt")))))
    assert checkpoint["meta"]["label"] == "cp"


def test_vector_shard_prints_its_summary_and_documents(rich):
    folder = Path(rich.path) / "sessions" / "s" / "vectors" / "memory"
    vectors = json.loads(text(folder / "00000001.vec.npy")[0])
    manifest = json.loads((folder / "collection.json").read_text())["shards"][0]
    assert (vectors["rows"], vectors["dim"]) == (5, 4)
    assert vectors["crc32c"] == manifest["vectors_crc"]
    docs = text(folder / "00000001.docs")
    assert json.loads(docs[0])["crc32c"] == manifest["docs_crc"]
    rows = [json.loads(line) for line in docs[1:]]
    assert [(r["id"], r["metadata"], r["content"], r["seq"]) for r in rows] == [
        (f"d{i}", {"i": i}, f"doc {i}", 3) for i in range(5)]
    deleted = text(next(folder.glob("*.del.npy")))
    assert json.loads(deleted[0])["count"] == 1 and deleted[1:] == ["1"]


def test_blobs_print_their_digest_media_type_and_the_text_of_text_ones(rich):
    blobs = sorted((Path(rich.path) / "sessions" / "s" / "blobs").rglob("*"))
    by_stored = {}
    for path in (p for p in blobs if p.is_file()):
        printed = text(path)
        by_stored[json.loads(printed[0])["stored"]] = (json.loads(printed[0]), printed[1:])
    info, rest = by_stored["zstd"]
    assert info["media_type"] == "text/plain" and info["size"] == 12
    assert rest == ["hello", "world"]
    info, rest = by_stored["plain"]
    assert info["media_type"] == "image/png" and rest == []
    assert info["digest"].startswith("sha256:") and info["size"] == 264


def test_manifests_print_as_sorted_json(rich):
    root = Path(rich.path)
    for path in (root / "fsstore.json", root / "sessions" / "s" / "session.json",
                 root / "sessions" / "s" / "vectors" / "memory" / "collection.json",
                 root / "workspaces" / "ws.json"):
        printed = "\n".join(text(path))
        assert printed == json.dumps(json.loads(path.read_text()), indent=2, sort_keys=True,
                                     ensure_ascii=False)


def test_small_files_print_what_they_hold(rich):
    session = Path(rich.path) / "sessions" / "s"
    assert json.loads(text(session / "log" / "tail.hint")[0]) == {
        "fsstore": "tail hint", "names": segments(rich, "s")[-1].name,
        "folder": os.stat(session / "log").st_ino}
    lease = json.loads("\n".join(text(session / "lease")))
    held = [slot for slot in lease["slots"] if slot]
    assert held[0]["token"] == 1 and held[0]["owner"]["label"] == "worker"
    assert json.loads(text(session / "writer.lock")[0])["token"] == 1
    assert json.loads(text(Path(rich.path) / "workspaces" / "lock")[0])["fsstore"] == "lock"
    index = text(session / "messages.idx")
    rows = [json.loads(line) for line in index[1:]]
    assert [r["seq"] for r in rows if r["op"] == "add"] == [
        m.seq for m in rich.read_session("s").messages.last(100)]
    torn = json.loads(text(next(session.glob("log/*.torn")))[0])
    assert (torn["segment"], torn["offset"], torn["bytes"]) == (77, 4000, 40)


def test_a_git_temporary_copy_is_recognised_by_its_name_and_a_renamed_one_by_magic(
        rich, tmp_path):
    for path in files_of(rich):
        expected = text(path)
        copy = tmp_path / f"Xy12Ab_{path.name}"
        shutil.copyfile(path, copy)
        assert text(copy) == expected, path
    for path in [*segments(rich, "s"), *(Path(rich.path) / "sessions" / "s").rglob("*.snap")]:
        renamed = tmp_path / "mystery.bin"
        shutil.copyfile(path, renamed)
        assert text(renamed) == text(path)


def test_textconv_never_writes(rich):
    class ReadOnly(FileIO):
        def open(self, path: str, flags: int, mode: int = 0o644) -> int:
            assert not flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC), path
            return super().open(path, flags, mode)

        def pwrite(self, *args: object) -> None:
            raise AssertionError("textconv wrote")

        def atomic_write(self, *args: object) -> None:
            raise AssertionError("textconv wrote")

    def tree() -> list[tuple[str, int, int]]:
        return [(str(p), p.stat().st_size, p.stat().st_mtime_ns)
                for p in sorted(Path(rich.path).rglob("*"))]

    before = tree()
    for path in files_of(rich):
        list(textconv.lines(str(path), io=ReadOnly()))
    assert tree() == before


def test_the_same_bytes_print_the_same_text(rich, tmp_path):
    for path in files_of(rich):
        assert text(path) == text(path)


def test_cli_prints_utf8_lines_and_a_missing_file_is_an_error(rich, capsys, tmp_path):
    path = segments(rich, "s")[-1]
    assert main(["textconv", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == text(path)
    assert main(["textconv", str(tmp_path / "nowhere.fslog")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fsstore: ") and err.count("\n") == 1


def test_the_committed_fixtures_of_every_format_version_print_without_damage():
    fixtures = Path(ROOT) / "fixtures"
    for path in sorted(p for p in fixtures.rglob("*") if p.is_file()):
        found = damage_of(text(path))
        if path.parts[-3:-1] == ("torn", "log") and path.suffix == ".fslog":  # v1's, torn
            assert [d["kind"] for d in found] == ["torn tail"], path
        elif any(part.startswith(".repair-") for part in path.parts):
            # a repaired session's files its repair copied aside: the damaged ones (and,
            # in a keyed chained session, v1.7, the file after one, which it rewrote too
            # since its link could not be checked: FORMAT.md 7.6), printed either way
            assert path.name == "repair.json" or found or "v1.7" in path.parts, path
        else:
            assert found == [], path
    for store_path in sorted(fixtures.glob("*/store")):
        store = fsstore.open_store(store_path, create=False)
        for session_id in store.session_ids():
            printed = [line for path in segments(store, session_id) for line in text(path)]
            reader = store.read_session(session_id)
            assert events_of(printed) == [event_json(e) for e in
                                          reader.events(include_internal=True)], session_id


# --- damage --------------------------------------------------------------------------------


def test_damage_in_a_segment_prints_the_records_around_it_and_names_file_and_offset(
        rich, tmp_path):
    source = segments(rich, "r")[1]  # a sealed plain segment of several records
    whole = text(source)
    data = bytearray(source.read_bytes())
    at = 64 + 300  # inside the first or second frame
    data[at] ^= 0xFF
    damaged = tmp_path / source.name
    damaged.write_bytes(bytes(data))
    printed = text(damaged)
    (found,) = damage_of(printed)
    assert found["file"] == str(damaged) and 64 <= found["offset"] <= at
    assert found["kind"] == "damaged"
    kept = events_of(printed)
    assert kept and set(kept) < set(events_of(whole))
    assert kept[-1] == events_of(whole)[-1]  # the records after the damage are printed


def test_a_cut_active_segment_prints_a_prefix_and_a_torn_tail_line(rich, tmp_path):
    source = segments(rich, "r")[-1]
    whole = events_of(text(source))
    data = source.read_bytes()
    cut = tmp_path / source.name
    cut.write_bytes(data[:len(data) - 20])
    printed = text(cut)
    assert events_of(printed) == whole[:len(events_of(printed))] and events_of(printed)
    (found,) = damage_of(printed)
    assert found["kind"] in ("torn tail", "damaged") and found["offset"] > 64


def test_a_damaged_compacted_chunk_is_named_by_its_file_offset(rich, tmp_path):
    source = segments(rich, "s")[0]
    data = bytearray(source.read_bytes())
    data[-10] ^= 0x55  # inside the (last) chunk's compressed bytes
    damaged = tmp_path / source.name
    damaged.write_bytes(bytes(data))
    printed = text(damaged)
    found = damage_of(printed)
    assert found and found[0]["offset"] > 64 and "chunk" in found[0]["reason"]
    assert json.loads(printed[0])["compacted"] is True


def test_a_damaged_snapshot_prints_its_header_and_says_where(rich, tmp_path):
    source = next((Path(rich.path) / "sessions" / "s" / "state").glob("*.snap"))
    data = bytearray(source.read_bytes())
    data[-3] ^= 0x01
    damaged = tmp_path / source.name
    damaged.write_bytes(bytes(data))
    printed = text(damaged)
    document = json.loads("\n".join(line for line in printed if not line.startswith(
        '{"damage"')))
    assert "body" not in document and "meta" in document
    (found,) = damage_of(printed)
    assert found["offset"] == 80 + len(source.read_bytes()) - 80 - _body_len(source)


def _body_len(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[64:68], "little")


def test_a_blob_that_does_not_match_its_name_says_so(rich, tmp_path):
    blobs = Path(rich.path) / "sessions" / "s" / "blobs"
    plain = next(p for p in blobs.rglob("*") if p.is_file() and p.suffix != ".zst")
    damaged = tmp_path / plain.name
    damaged.write_bytes(plain.read_bytes()[:-1] + b"!")
    (found,) = damage_of(text(damaged))
    assert "digest" in found["reason"] and found["file"] == str(damaged)


def test_a_hand_broken_manifest_prints_its_text_and_where_it_stops_parsing(tmp_path):
    path = tmp_path / "session.json"
    path.write_text('{\n  "format": "fsstore-session",\n  "title": oops\n}\n')
    printed = text(path)
    assert printed[:3] == ['{', '  "format": "fsstore-session",', '  "title": oops']
    (found,) = damage_of(printed)
    assert found["offset"] == path.read_text().index("oops")


def test_a_manifest_its_reader_refuses_is_printed_with_the_reason(rich, tmp_path):
    data = json.loads((Path(rich.path) / "sessions" / "s" / "session.json").read_text())
    data["tags"] = 5
    path = tmp_path / "session.json"
    path.write_text(json.dumps(data))
    printed = text(path)
    assert json.loads("\n".join(printed[:-1]))["tags"] == 5
    assert "tags" in damage_of(printed)[0]["reason"]


def mutations(data: bytes, rng: random.Random, count: int) -> list[bytes]:
    """Cuts at the places that matter (inside headers, at their ends, mid-file) and
    single-byte changes of every kind (a bit, a byte, zeros) at random places."""
    cuts = {0, 1, 7, 8, 9, 31, 40, 63, 64, 65, 79, 80, 81, 512, len(data) // 2,
            len(data) - 1, len(data) - 8}
    found = [data[:n] for n in sorted(cuts) if n < len(data)]
    for _ in range(count):
        if not data:
            break
        at = rng.randrange(len(data))
        changed = bytearray(data)
        how = rng.randrange(4)
        if how == 0:
            changed[at] ^= 1 << rng.randrange(8)
        elif how == 1:
            changed[at] = rng.randrange(256)
        elif how == 2:
            changed[at:at + 8] = bytes(len(changed[at:at + 8]))
        else:
            changed[at:at] = b"\x00"  # a byte inserted: everything after it shifts
        found.append(bytes(changed))
    return found


def fuzz(store: fsstore.Store, folder: Path, per_file: int) -> int:
    """Each file of ``store`` damaged many ways, printed: ``lines`` raises only when a
    file cannot be opened, so `fsstore textconv` (which only writes what it yields) ends
    in status 0 for each."""
    rng = random.Random(17)
    runs = 0
    for source in files_of(store):
        target = folder / source.name  # the name says what it is: a git temp copy's too
        for data in mutations(source.read_bytes(), rng, per_file):
            target.write_bytes(data)
            printed = list(textconv.lines(str(target)))
            assert all("\n" not in line for line in printed), source
            runs += 1
        target.unlink()
    return runs


def test_damaged_files_of_every_kind_print_without_crashing(rich, tmp_path):
    assert fuzz(rich, tmp_path, 6) > 500


@pytest.mark.long
def test_damaged_files_of_every_kind_print_without_crashing_long(rich, tmp_path):
    assert fuzz(rich, tmp_path, 400) > 10000


def test_a_damaged_file_in_a_real_process_ends_in_status_0_without_a_traceback(
        rich, tmp_path):
    source = segments(rich, "s")[0]  # compacted: its header and tables damaged
    data = bytearray(source.read_bytes())
    data[70:90] = bytes(20)
    damaged = tmp_path / source.name
    damaged.write_bytes(bytes(data))
    result = subprocess.run([sys.executable, "-m", "fsstore", "textconv", str(damaged)],
                            capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": ROOT})
    assert result.returncode == 0 and result.stderr == "", result.stderr
    (found,) = damage_of(result.stdout.splitlines())
    assert found["file"] == str(damaged) and found["offset"] == 64


@pytest.mark.parametrize("folder", ["\u00b2", "\u0663", "12a"])
def test_a_hint_whose_folder_line_is_not_an_inode_prints_its_segment_and_damage(
        tmp_path, folder):
    """Digits beyond ASCII ("²", "٣") are no inode number: the hint still prints what it
    names, then the damage, as for any other hint that is not one."""
    hint = tmp_path / "tail.hint"
    hint.write_bytes(f"00000000000000000001.fslog\nfolder {folder}\n".encode())
    printed = text(hint)
    assert json.loads(printed[0]) == {"fsstore": "tail hint",
                                      "names": "00000000000000000001.fslog"}
    (damage,) = damage_of(printed)
    assert "not a segment name, a folder line" in damage["reason"]
