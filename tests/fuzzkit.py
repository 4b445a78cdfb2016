"""The harness of tests/test_fuzz.py: a store with every file kind, the mutations, every
public read and command, the forked child that runs them and the parent that watches it,
and the judge of what they returned.

Each case copies the store, applies one mutation to one file (or folder), and runs the
reads in a forked child under an address-space limit. The parent watches: a child the
kernel shows waiting on a FIFO is reported and released (the FIFO is opened for writing,
which gives the reader an end of file); one that reads far more than the store holds, or
runs on for long, is killed and reported. The child watches, with inotify, whether a read
opened a file outside the store through a symlink.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import hashlib
import io
import json
import logging
import os
import pickle
import random
import re
import resource
import select
import shutil
import signal
import struct
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import fsstore
from fsstore.cli import main as cli_main
from fsstore.fsio import FileIO
from fsstore.tail_hint import read_tail_hint, write_tail_hint
from fsstore.vectors import tuning

#: An operation the kernel shows waiting on a FIFO (or, where /proc does not say, still
#: running after this long while the store holds one) is blocked on it: the FIFO is then
#: opened for writing, which releases the reader.
FIFO_PATIENCE = 2.0
#: An operation still running after this long is stuck (a loop, a read of /dev/zero): the
#: child is killed. Not a speed limit: every operation here takes milliseconds.
STUCK_AFTER = 20.0
#: A read of more than this (a file symlinked to /dev/zero) is reading forever: killed.
READ_BOUND = 256 << 20
#: The address space a child may grow by; a read that needs more fails with MemoryError.
MEMORY_HEADROOM = 1 << 30

PARENT, CHILD = "p", "c"


# --- the store -------------------------------------------------------------------------------


@dataclasses.dataclass
class Pristine:
    """The store every case starts from, and what its reads return."""

    root: str  # the pristine store
    work: str  # where each case's copy goes: always the same path, as results name it
    checkpoints: dict[str, list[str]]
    blob_refs: dict[str, list[dict[str, Any]]]
    expected: dict[str, str]  # op name -> digest of its result ("" when it varies)


def build_store(root: str) -> None:
    """A store with every file kind fsstore writes."""
    seal_rows = tuning.SEAL_ROWS
    tuning.SEAL_ROWS = 8  # shards from a few documents
    try:
        store = fsstore.open_store(root, segment_size=4096)
        with store.create_session(PARENT, title="parent", tags=["a", "b"],
                                  metadata={"owner": "ada", "n": 1}) as s:
            raw = s.blobs.put(b"raw bytes " * 50, compress=False)
            zst = s.blobs.put(b"compressed text " * 200, "text/plain")
            for turn in range(10):
                s.append({"role": "user", "content": f"hello {turn} " * 20, "shot": raw})
                s.commit([{"role": "assistant", "content": "x" * 200, "log": zst}],
                         state_patch={"n": turn, "doc": zst})
                s.finish_turn(checkpoint=(turn == 2))
            s.snapshot()
            s.queue.enqueue("follow_up", {"why": "check"})
            s.queue.enqueue("other", {"why": 2}, priority=1)
            s.queue.claim("worker-1", 3600)
            s.inputs.submit({"text": "more"})
            s.inputs.submit({"text": "even more"})
            collection = s.create_collection("mem", 4)
            collection.upsert([{"id": f"d{i}", "embedding": [1.0, i, 0.5, -i],
                                "content": f"doc {i}", "metadata": {"i": i}}
                               for i in range(20)])
            collection.delete(["d1", "d9"])
            collection.seal()  # a shard, and its deleted rows
            collection.upsert([{"id": "late", "embedding": [0.1, 0.2, 0.3, 0.4]}])  # the WAL
            s.snapshot()  # with the queue and the inputs
            s.checkpoint("end")
        with store.fork_session(PARENT, CHILD, at_seq=10) as f:
            f.append({"role": "user", "content": "in the fork"})
            f.set_state("forked", True)
            f.snapshot()
            f.create_collection("mem", 4).upsert([{"id": "f1", "embedding": [1, 2, 3, 4]}])
        outcome = store.claim_lease(PARENT, "tester", ttl=3600)
        store.release_lease(outcome.lease)
        store.claim_lease(CHILD, "tester", ttl=7 * 86400)
    finally:
        tuning.SEAL_ROWS = seal_rows


#: File kinds: a name, and a test of a path relative to the store root.
KINDS: dict[str, Callable[[str], bool]] = {
    "store_manifest": lambda p: p == "fsstore.json",
    "session_manifest": lambda p: p.endswith("session.json"),
    "segment_sealed": lambda p: re.search(r"/log/\d+\.fslog$", p) is not None and p.startswith(
        f"sessions/{PARENT}/log/") and not p.endswith("33.fslog"),
    "segment_last": lambda p: p in (f"sessions/{PARENT}/log/00000000000000000033.fslog",
                                    f"sessions/{CHILD}/log/00000000000000000001.fslog"),
    "tail_hint": lambda p: p.endswith("/log/tail.hint"),
    "snapshot": lambda p: p.endswith(".snap"),
    "checkpoint": lambda p: p.endswith(".ckpt"),
    "blob_raw": lambda p: "/blobs/sha256/" in p and not p.endswith(".zst"),
    "blob_zst": lambda p: "/blobs/sha256/" in p and p.endswith(".zst"),
    "collection_manifest": lambda p: p.endswith("collection.json"),
    "shard_vectors": lambda p: p.endswith(".vec.npy"),
    "shard_docs": lambda p: p.endswith(".docs"),
    "deleted_rows": lambda p: p.endswith(".del.npy"),
    "wal_segment": lambda p: "/wal/" in p and p.endswith(".fslog"),
    "lease": lambda p: p.endswith("/lease"),
    "writer_lock": lambda p: p.endswith("writer.lock"),
}
JSON_KINDS = {"store_manifest", "session_manifest", "collection_manifest"}
#: Folder kinds: a folder missing, a file in its place, or a symlink to it moved outside.
FOLDER_KINDS: dict[str, Callable[[str], bool]] = {
    "sessions_folder": lambda p: p == "sessions",
    "session_folder": lambda p: re.fullmatch(r"sessions/[^/]+", p) is not None,
    "log_folder": lambda p: p.endswith("/log") and p.count("/") == 2,
    "state_folder": lambda p: p.endswith("/state"),
    "checkpoints_folder": lambda p: p.endswith("/checkpoints"),
    "blobs_folder": lambda p: p.endswith("/blobs") or "/blobs/sha256" in p,
    "collection_folder": lambda p: re.search(r"/vectors/[^/]+$", p) is not None,
    "wal_folder": lambda p: p.endswith("/wal"),
}
KINDS.update(FOLDER_KINDS)
FOLDER_MUTATIONS = {"remove", "file", "symlink_outside"}


def files_of(root: str, kind: str) -> list[str]:
    """The files (or, for a folder kind, the folders) of a kind, relative to root."""
    found = []
    for folder, dirs, names in os.walk(root):
        for name in dirs if kind in FOLDER_KINDS else names:
            rel = os.path.relpath(os.path.join(folder, name), root)
            if KINDS[kind](rel):
                found.append(rel)
    return sorted(found)


# --- mutations -------------------------------------------------------------------------------


class NotApplicable(Exception):
    pass


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)


def m_bitflip(rng: random.Random, ctx: Case) -> None:
    data = bytearray(_read(ctx.target))
    if not data:
        raise NotApplicable
    at = rng.randrange(len(data))
    data[at] ^= 1 << rng.randrange(8)
    _write(ctx.target, bytes(data))


def m_truncate(rng: random.Random, ctx: Case) -> None:
    size = os.path.getsize(ctx.target)
    if not size:
        raise NotApplicable
    os.truncate(ctx.target, rng.randrange(size))


def m_insert(rng: random.Random, ctx: Case) -> None:
    data = _read(ctx.target)
    at = rng.randrange(len(data) + 1)
    _write(ctx.target, data[:at] + rng.randbytes(rng.randint(1, 16)) + data[at:])


def m_delete_bytes(rng: random.Random, ctx: Case) -> None:
    data = _read(ctx.target)
    if not data:
        raise NotApplicable
    at = rng.randrange(len(data))
    _write(ctx.target, data[:at] + data[at + rng.randint(1, 16):])


def m_append_junk(rng: random.Random, ctx: Case) -> None:
    with open(ctx.target, "ab") as handle:
        handle.write(rng.randbytes(rng.randint(1, 64)))


def m_remove(rng: random.Random, ctx: Case) -> None:
    _remove_tree(ctx.target)


def m_file(rng: random.Random, ctx: Case) -> None:
    """A folder replaced by a file."""
    if not os.path.isdir(ctx.target):
        raise NotApplicable
    shutil.rmtree(ctx.target)
    _write(ctx.target, rng.randbytes(100))


WRONG_VALUES: list[Any] = [5, -1, "x", [1], {}, None, True, 1e308, "", [[]], {"a": 1}]


def _json_slots(value: Any, path: tuple = ()) -> Iterator[tuple]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*path, key)
            yield from _json_slots(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield (*path, index)
            yield from _json_slots(item, (*path, index))


def _json_set(value: Any, slot: tuple, new: Any) -> None:
    for key in slot[:-1]:
        value = value[key]
    value[slot[-1]] = new


def m_json_type(rng: random.Random, ctx: Case) -> None:
    """One value replaced by one of another JSON type."""
    if ctx.kind not in JSON_KINDS:
        raise NotApplicable
    data = json.loads(_read(ctx.target))
    slot = rng.choice(list(_json_slots(data)))
    value = data
    for key in slot:
        value = value[key]
    wrong = [v for v in WRONG_VALUES if type(v) is not type(value)]
    _json_set(data, slot, rng.choice(wrong))
    _write(ctx.target, json.dumps(data).encode())


def m_json_nest(rng: random.Random, ctx: Case) -> None:
    if ctx.kind not in JSON_KINDS:
        raise NotApplicable
    data = _read(ctx.target).rstrip()
    depth = rng.choice([1000, 50_000])
    nested = b"[" * depth + b"]" * depth
    if rng.random() < 0.5:  # a value deep inside, else a whole file of brackets
        data = json.dumps(json.loads(data)).encode()
        data = data[:-1] + b', "deep": ' + nested + b"}"
    else:
        data = nested
    _write(ctx.target, data)


def m_folder(rng: random.Random, ctx: Case) -> None:
    os.unlink(ctx.target)
    os.mkdir(ctx.target)


def m_symlink_zero(rng: random.Random, ctx: Case) -> None:
    os.unlink(ctx.target)
    os.symlink("/dev/zero", ctx.target)


def m_symlink_outside(rng: random.Random, ctx: Case) -> None:
    """The file moved out of the store and linked back: the same bytes, but read from
    outside the store (the child watches whether a read opens it)."""
    outside = os.path.join(ctx.outside, os.path.basename(ctx.target))
    shutil.move(ctx.target, outside)
    os.symlink(outside, ctx.target)
    ctx.watch = outside


def m_fifo(rng: random.Random, ctx: Case) -> None:
    os.unlink(ctx.target)
    os.mkfifo(ctx.target)
    ctx.fifos.append(ctx.target)


def m_swap(rng: random.Random, ctx: Case) -> None:
    """Replaced by another file of the same kind: the other session's, else another of
    the same session's."""
    rel = os.path.relpath(ctx.target, ctx.root)
    others = [p for p in files_of(ctx.root, ctx.kind) if p != rel]
    if not others:
        raise NotApplicable
    mine = rel.split("/")[1] if rel.startswith("sessions/") else None
    foreign = [p for p in others if mine is None or p.split("/")[1] != mine]
    source = rng.choice(foreign or others)
    data = _read(os.path.join(ctx.root, source))
    if data == _read(ctx.target):
        raise NotApplicable
    _write(ctx.target, data)


_NPY_SHAPE_FIELD = re.compile(rb"'shape': \(([0-9]+),")


#: (offset, format) of length and count fields, per kind.
LENGTH_FIELDS: dict[str, list[tuple[int, str]]] = {
    "segment_sealed": [(68, "<I")], "segment_last": [(68, "<I")], "wal_segment": [(68, "<I")],
    "snapshot": [(56, "<I"), (64, "<I")], "checkpoint": [(56, "<I"), (64, "<I")],
    "blob_zst": [(4, "<Q")],
    "shard_docs": [(8, "<Q"), (16, "<Q"), (24, "<Q"), (32, "<Q"), (40, "<Q")],
    "lease": [(48, "<I"), (512 + 48, "<I")],
}
HUGE_LENGTH_KINDS = {*LENGTH_FIELDS, "shard_vectors", "deleted_rows"}


def m_huge_length(rng: random.Random, ctx: Case) -> None:
    """A length or count field set far past the file: where each format keeps one."""
    data = bytearray(_read(ctx.target))
    kind = ctx.kind
    if kind in ("shard_vectors", "deleted_rows"):
        huge = str(rng.choice([1 << 40, 1 << 62, 10**15])).encode()
        new = _NPY_SHAPE_FIELD.sub(b"'shape': (" + huge + b",", bytes(data), count=1)
        if new == data:
            raise NotApplicable
        _write(ctx.target, new)
        return
    fields = LENGTH_FIELDS.get(kind)
    if not fields:
        raise NotApplicable
    offset, fmt = rng.choice(fields)
    if offset + struct.calcsize(fmt) > len(data):
        raise NotApplicable
    value = rng.choice([0x7FFFFFFF, 0xFFFFFFFF] if fmt == "<I" else [1 << 62, 1 << 40])
    struct.pack_into(fmt, data, offset, value)
    _write(ctx.target, bytes(data))


MUTATIONS: dict[str, Callable[[random.Random, Case], None]] = {
    "bitflip": m_bitflip, "truncate": m_truncate, "insert": m_insert,
    "delete_bytes": m_delete_bytes, "append_junk": m_append_junk, "remove": m_remove,
    "json_type": m_json_type, "json_nest": m_json_nest, "folder": m_folder,
    "symlink_zero": m_symlink_zero, "symlink_outside": m_symlink_outside, "fifo": m_fifo,
    "swap": m_swap, "huge_length": m_huge_length, "file": m_file,
}


@dataclasses.dataclass
class Case:
    kind: str
    mutation: str
    seed: int
    root: str  # the store to mutate
    outside: str  # a folder outside it
    target: str = ""
    fifos: list[str] = dataclasses.field(default_factory=list)
    watch: str | None = None

    @property
    def name(self) -> str:
        rel = os.path.relpath(self.target, self.root) if self.target else "?"
        return f"{self.kind}-{self.mutation}-{self.seed} ({rel})"


# --- the reads -------------------------------------------------------------------------------


def operations(pristine: Pristine, root: str) -> list[tuple[str, Callable[[], Any], bool]]:
    """Every public read and every command: (name, call, compared with the original).
    Writers come last, since they may tidy the store (a torn tail set aside)."""

    def store() -> fsstore.Store:
        return fsstore.open_store(root, create=False)

    ops: list[tuple[str, Callable[[], Any], bool]] = [
        ("open_store", lambda: store().path, True),
        ("list_sessions", lambda: store().list_sessions(), True),
        ("session_ids", lambda: store().session_ids(), True),
    ]
    for sid in (PARENT, CHILD):
        def reader(sid: str = sid) -> fsstore.SessionReader:
            return store().read_session(sid)

        ops += [
            (f"{sid}.info", lambda r=reader: r().info(), True),
            (f"{sid}.events", lambda r=reader: list(r().events()), True),
            (f"{sid}.get_turns", lambda r=reader: r().get_turns(), True),
            (f"{sid}.get_turn", lambda r=reader: r().get_turn(2), True),
            (f"{sid}.state", lambda r=reader: r().state(), True),
            (f"{sid}.state_at", lambda r=reader: [r().state_at(s) for s in (0, 3, 7, 12)],
             True),
            (f"{sid}.checkpoints", lambda r=reader: r().checkpoints(), True),
            (f"{sid}.queued_work", lambda r=reader: r().queue.items(), True),
            (f"{sid}.turn_inputs", lambda r=reader: r().inputs.items(), True),
            (f"{sid}.collections", lambda r=reader: [dataclasses.replace(c, bytes=0) for c in
                                                     r().collections()], True),
            (f"{sid}.search", lambda r=reader: r().collection("mem").search(
                [1.0, 0.0, 0.5, 0.0], k=4), True),
            (f"{sid}.collection_get", lambda r=reader: r().collection("mem").get(
                ["d0", "d1", "d5", "late", "f1"]), True),
            (f"{sid}.lineage", lambda sid=sid: store().lineage(sid), True),
            (f"{sid}.lease_info", lambda sid=sid: store().lease_info(sid), True),
            (f"{sid}.verify", lambda r=reader: Checked(r().verify()), False),
        ]
        for checkpoint_id in pristine.checkpoints[sid]:
            ops.append((f"{sid}.load_checkpoint.{checkpoint_id}",
                        lambda r=reader, c=checkpoint_id: r().load_checkpoint(c), True))
        for number, ref in enumerate(pristine.blob_refs[sid]):
            ops.append((f"{sid}.blob_get.{number}",
                        lambda r=reader, ref=ref: r().blobs.get(ref), True))
    ops += [
        ("store.search", lambda: store().search("mem", [1.0, 0.0, 0.5, 0.0], k=4), True),
        ("store.verify", lambda: Checked(store().verify()), False),
    ]
    checkpoint = pristine.checkpoints[PARENT][0]
    commands = [
        ["ls"], ["show", PARENT], ["show", CHILD], ["cat", PARENT], ["cat", CHILD],
        ["state", PARENT], ["state", PARENT, "--at", "5"],
        ["state", PARENT, "--checkpoint", checkpoint], ["checkpoints", PARENT],
        ["lineage", CHILD], ["collections", PARENT],
        ["search", "mem", "--vector", "[1, 0, 0.5, 0]", "-k", "3"],
        ["search", "mem", "--like", f"{PARENT}:d0"], ["lease", PARENT], ["lease", CHILD],
        ["queue", PARENT], ["inputs", PARENT], ["tail", PARENT, "-n", "5"],
        ["tail", CHILD, "--json"], ["verify"], ["verify", CHILD],
        # writers, last
        ["gc", PARENT, "--dry-run", "--verify"], ["fork", PARENT, "fuzz-fork"],
    ]
    for argv in commands:
        ops.append(("cli " + " ".join(argv), lambda argv=argv: run_cli(root, argv),
                    argv[0] not in ("verify", "gc", "collections")))
    return ops


class Checked:
    """What verify found, as ``problems/notes``: the detail a child reports for it."""

    def __init__(self, findings: list[fsstore.Finding]) -> None:
        self.problems = sum(1 for f in findings if f.level == "problem")
        self.notes = len(findings) - self.problems

    def __repr__(self) -> str:
        return f"{self.problems}/{self.notes}"


def run_cli(root: str, argv: list[str]) -> tuple[int, str]:
    """A command run in this process; an exception out of main is a traceback."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli_main(["--store", root, *argv])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    if code not in (0, 1) and not err.getvalue().startswith("fsstore: "):
        raise AssertionError(f"exit {code} without an fsstore message: {err.getvalue()!r}")
    if code == 0:
        return code, out.getvalue()
    raise CliRefused(f"exit {code}: {err.getvalue().strip()[:300]}")


class CliRefused(Exception):
    """A command that ended with an exit code and its message: a clean refusal."""


def digest(value: Any) -> str:
    return hashlib.sha256(repr(value).encode()).hexdigest()[:16]


# --- the child -------------------------------------------------------------------------------


class _Inotify:
    """Whether a file was opened (IN_OPEN), by inotify through libc."""

    def __init__(self, path: str) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        self.libc.inotify_add_watch(self.fd, path.encode(), 0x20)

    def opened(self) -> bool:
        try:
            return bool(os.read(self.fd, 4096))
        except BlockingIOError:
            return False


def _child(ops: list[tuple[str, Callable[[], Any], bool]], start: int, write_fd: int,
           watch: str | None) -> None:
    """Run ops[start:], reporting each as a line: ``S name`` then ``R name outcome detail``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as handle:
        size = int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (size + MEMORY_HEADROOM, hard))
    logging.disable(logging.CRITICAL)  # skipped snapshots are logged: not the report
    inotify = _Inotify(watch) if watch else None
    out = os.fdopen(write_fd, "w", buffering=1)
    for index in range(start, len(ops)):
        name, call, _ = ops[index]
        out.write(f"S\t{index}\n")
        try:
            result = call()
            outcome, detail = "ok", repr(result) if isinstance(result, Checked) else digest(
                result)
        except (fsstore.FsStoreError, CliRefused) as exc:
            outcome, detail = "typed", f"{type(exc).__name__}: {exc}"
        except BaseException as exc:  # noqa: BLE001 (everything else is the finding)
            frames = traceback.extract_tb(exc.__traceback__)
            where = next((f"{os.path.basename(f.filename)}:{f.lineno}" for f in reversed(frames)
                          if "/fsstore/" in f.filename), "?")
            outcome, detail = "raw", f"{type(exc).__name__} at {where}: {exc}"
        if inotify is not None and inotify.opened():
            outcome, detail = "outside", f"opened the symlinked file outside the store; {detail}"
        detail = " ".join(detail.split())[:400]
        out.write(f"R\t{index}\t{outcome}\t{detail}\n")
    out.flush()


def run_ops(ops: list[tuple[str, Callable[[], Any], bool]], fifos: list[str],
            watch: str | None) -> dict[str, tuple[str, str]]:
    """Each op's (outcome, detail), from forked children watched by this process."""
    results: dict[str, tuple[str, str]] = {}
    start = 0
    while start < len(ops):
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            code = 0
            try:
                os.close(read_fd)
                _child(ops, start, write_fd, watch)
            except BaseException:  # noqa: BLE001
                code = 3
            finally:
                os._exit(code)
        os.close(write_fd)
        current, since, buffer, blocked = None, time.monotonic(), b"", False
        rchar: int | None = None
        reader = os.fdopen(read_fd, "rb", buffering=0)
        try:
            while True:
                ready, _, _ = select.select([reader], [], [], 0.005 if fifos else 0.05)
                if ready:
                    chunk = reader.read(65536)
                    if not chunk:
                        break  # the child is done (or died)
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        fields = line.decode().split("\t")
                        if fields[0] == "S":
                            current, since, blocked = int(fields[1]), time.monotonic(), False
                            rchar = None
                        else:
                            outcome, detail = fields[2], fields[3]
                            if blocked:
                                outcome, detail = "fifo", f"blocked on a FIFO; then {detail}"
                            results[ops[int(fields[1])][0]] = (outcome, detail)
                            current = None
                    continue
                if current is None:
                    continue
                elapsed = time.monotonic() - since
                if fifos and (waits_on_a_pipe(pid) or elapsed > FIFO_PATIENCE):
                    blocked = release_fifos(fifos) or blocked
                if rchar is None:
                    rchar = bytes_read(pid)
                read = bytes_read(pid) - rchar
                stuck = None
                if read > READ_BOUND:
                    stuck = f"read {read >> 20} MiB from a store of a few hundred KiB; killed"
                elif elapsed > STUCK_AFTER:
                    stuck = f"still running after {STUCK_AFTER:.0f} s; killed"
                if stuck:
                    os.kill(pid, signal.SIGKILL)
                    results[ops[current][0]] = ("stuck", stuck)
                    break
        finally:
            reader.close()
            _, status = os.waitpid(pid, 0)
        if current is not None and ops[current][0] not in results:
            why = (f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                   else f"exit {os.WEXITSTATUS(status)}")
            results[ops[current][0]] = ("crash", f"the child died ({why})")
        done = [i for i, op in enumerate(ops) if op[0] in results]
        if not done or max(done) + 1 <= start:
            for name, _, _ in ops[start:]:  # no progress: the child could not start
                results.setdefault(name, ("crash", "the child ended before this op"))
            break
        start = max(done) + 1
    return results


def waits_on_a_pipe(pid: int) -> bool:
    """Whether the child sleeps opening or reading a FIFO (its only pipe is the one it
    writes its results to)."""
    try:
        with open(f"/proc/{pid}/wchan") as handle:
            return handle.read().strip() in ("wait_for_partner", "pipe_read", "pipe_wait",
                                             "pipe_wait_readable")
    except OSError:
        return False


def bytes_read(pid: int) -> int:
    """What the child has read so far (``rchar``, any file), 0 if unknown."""
    try:
        with open(f"/proc/{pid}/io") as handle:
            for line in handle:
                if line.startswith("rchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def release_fifos(fifos: list[str]) -> bool:
    """Open each FIFO for writing without blocking: that succeeds only when a reader has
    it open (or is blocked opening it), and closing it gives that reader an end of file."""
    released = False
    for path in fifos:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            continue
        os.close(fd)
        released = True
    return released


# --- judging ---------------------------------------------------------------------------------


#: Reads that may legitimately give other data after this damage, because the format
#: says so: a torn lease write falls back to the other slot (FORMAT.md 16.3); a damaged
#: checkpoint is left out of the list and reported by verify (11.2). Only when verify
#: reports the damage (a problem, or for a torn lease slot a note).
FALLBACKS = {("lease", ""), ("checkpoint", "checkpoints"), ("checkpoint", "cli checkpoints")}
#: Removing these is what a legitimate delete or prune does: nothing to detect.
REMOVABLE = {"checkpoint", "snapshot", "tail_hint", "writer_lock", "session_folder",
             "checkpoints_folder", "collection_folder"}
#: session.json is for people to read and edit (FORMAT.md section 2): bytes changed into
#: other valid JSON of the right types are an edit, not damage a reader could detect.
HAND_EDITS = {"bitflip", "truncate", "insert", "delete_bytes", "append_junk"}
#: Writers may refuse a store that reads well (a folder where a hint is replaced).
WRITERS = {"cli gc p --dry-run --verify", "cli fork p fuzz-fork"}
#: Store-wide reads may skip a damaged session (issue 12, item 5); the session's own reads
#: say what is wrong with it.
STORE_WIDE = {"list_sessions", "session_ids", "store.search", "p.lineage", "c.lineage",
              "cli ls", "cli lineage c", "cli search mem --vector [1, 0, 0.5, 0] -k 3",
              f"cli search mem --like {PARENT}:d0"}


def judge(case: Case, pristine: Pristine, results: dict[str, tuple[str, str]],
          ops: list[tuple[str, Callable[[], Any], bool]]) -> list[tuple[str, str, str]]:
    """The failures of a case: (op, outcome, detail)."""
    verify_outcome, verify_detail = results.get("store.verify", ("", ""))
    verify_ok = verify_outcome == "ok" and verify_detail.startswith("0/")
    verify_silent = verify_detail == "0/0"

    def differs(name: str) -> bool:
        outcome, detail = results.get(name, ("", ""))
        return (outcome == "ok" and bool(pristine.expected.get(name))
                and detail != pristine.expected[name])

    def excused(name: str) -> bool:
        if case.mutation == "remove" and case.kind in REMOVABLE:
            return True
        if (case.kind, case.mutation) == ("session_folder", "file"):
            return True  # a deleted session, and a stray file verify notes
        if case.kind == "session_manifest" and case.mutation in HAND_EDITS:
            return True
        if name in STORE_WIDE:
            return True
        op = name.split(".")[1] if name[:2] in ("p.", "c.") else name.rsplit(" ", 1)[0]
        fallback = (case.kind, "") in FALLBACKS or (case.kind, op) in FALLBACKS
        return fallback and not verify_silent

    failures = []
    compared = [name for name, _, check in ops if check]
    for name, _, _ in ops:
        outcome, detail = results.get(name, ("missing", "not run"))
        if name in compared and differs(name) and not excused(name):
            failures.append((name, "differs", "returned other data than was written"))
        elif outcome in ("raw", "stuck", "crash", "fifo", "outside", "missing"):
            failures.append((name, outcome, detail))
    read_failed = [name for name in compared if name not in WRITERS and not excused(name) and (
        differs(name) or results.get(name, ("", ""))[0] == "typed")]
    if read_failed and verify_outcome == "ok" and verify_ok:
        failures.append(("store.verify", "verify-ok", "says OK while reads fail: "
                         + ", ".join(sorted(read_failed)[:4])))
    return failures


def failure_class(case: Case, failure: tuple[str, str, str]) -> str:
    """What a failure is, without the instance: kind, mutation, outcome and where."""
    op, outcome, detail = failure
    if outcome == "raw":
        outcome = detail.split(":")[0]  # the exception and where fsstore raised it
    return f"{case.kind}/{case.mutation}: {outcome}"


def _session_of(name: str) -> str | None:
    """The session an op reads (None: the store, or both)."""
    if name[:2] in (f"{PARENT}.", f"{CHILD}."):
        return name[0]
    if name.startswith("cli "):
        words = name.split()
        if words[1] in ("search", "verify", "ls"):
            return None
        return next((w for w in words[2:] if w in (PARENT, CHILD)), None)
    return None


def applies(kind: str, mutation: str) -> bool:
    """Whether a mutation can be made to a kind at all (some seeds may still not apply)."""
    if kind in FOLDER_KINDS:
        return mutation in FOLDER_MUTATIONS
    if mutation in ("json_type", "json_nest"):
        return kind in JSON_KINDS
    if mutation == "huge_length":
        return kind in HUGE_LENGTH_KINDS
    return mutation != "file"


def copy_as_original(source: str, dest: str) -> None:
    """Copy a store and name each copied log folder in its tail hint, as a writer opening
    the copy would: the damage done to the copy then stands for damage to a store in the
    folders its writers wrote, where every synced mark binds (docs/FORMAT.md, 3.1)."""
    shutil.copytree(source, dest, symlinks=True)
    io = FileIO()
    for folder, _dirs, files in os.walk(dest):
        if "tail.hint" in files:
            hint = read_tail_hint(io, folder)
            if hint is not None and hint.segment is not None:
                write_tail_hint(io, folder, hint.segment)


def run_case(pristine: Pristine, kind: str, mutation: str, seed: int
             ) -> tuple[Case, list[tuple[str, str, str]]] | None:
    """Copy the store, mutate one file, run everything; None when the mutation does not
    apply to this kind."""
    if not applies(kind, mutation):
        return None
    root = os.path.join(pristine.work, "store")
    outside = os.path.join(pristine.work, "outside")
    for path in (root, outside):
        if os.path.lexists(path):
            _remove_tree(path)
    copy_as_original(pristine.root, root)
    os.mkdir(outside)
    rng = random.Random(f"{kind}/{mutation}/{seed}")
    candidates = files_of(root, kind)
    if not candidates:
        return None
    case = Case(kind, mutation, seed, root, outside)
    case.target = os.path.join(root, rng.choice(candidates))
    try:
        MUTATIONS[mutation](rng, case)
    except NotApplicable:
        return None
    rel = os.path.relpath(case.target, root).split(os.sep)
    session = rel[1] if rel[0] == "sessions" and len(rel) > 1 else None
    # The other session's reads would only show that it is untouched: skipped, for time.
    ops = [op for op in operations(pristine, root)
           if session is None or _session_of(op[0]) in (None, session)]
    results = run_ops(ops, case.fifos, case.watch)
    return case, judge(case, pristine, results, ops)


def _remove_tree(path: str) -> None:
    if os.path.islink(path) or not os.path.isdir(path):
        os.unlink(path)
    else:
        shutil.rmtree(path)


def make_pristine(base: str) -> Pristine:
    root = os.path.join(base, "pristine")
    build_store(root)
    store = fsstore.open_store(root, create=False)
    checkpoints = {sid: [c.id for c in store.read_session(sid).checkpoints()]
                   for sid in (PARENT, CHILD)}
    refs: dict[str, list[dict[str, Any]]] = {}
    for sid in (PARENT, CHILD):
        found: dict[str, dict[str, Any]] = {}
        for event in store.read_session(sid).events():
            for value in event.data.values():
                if isinstance(value, dict) and "fsstore.blob" in value:
                    found[value["fsstore.blob"]] = value
        refs[sid] = list(found.values())
    work = os.path.join(base, "work")
    os.mkdir(work)
    pristine = Pristine(root, work, checkpoints, refs, {})
    _expect(pristine)
    return pristine


def _expect(pristine: Pristine) -> None:
    """What each read returns from the untouched store copied to the work folder, run
    twice: what varies is not compared."""
    runs = []
    for _ in range(2):
        copy = os.path.join(pristine.work, "store")
        if os.path.lexists(copy):
            _remove_tree(copy)
        copy_as_original(pristine.root, copy)
        runs.append(run_ops(operations(pristine, copy), [], None))
    for name, (outcome, detail) in runs[0].items():
        assert outcome == "ok", f"{name} fails on the untouched store: {detail}"
        pristine.expected[name] = detail if runs[1][name] == (outcome, detail) else ""


def with_work(pristine: Pristine, work: str) -> Pristine:
    """The same pristine store with its cases copied to another folder, ``work`` (made
    here), and what its reads return there (a read may return its path)."""
    os.mkdir(work)
    other = Pristine(pristine.root, work, pristine.checkpoints, pristine.blob_refs, {})
    _expect(other)
    return other


CaseKey = tuple[str, str, int]  # kind, mutation, seed
Outcome = tuple[Case, list[tuple[str, str, str]]] | None  # what run_case returns


def run_cases(pristines: list[Pristine], keys: list[CaseKey]) -> dict[CaseKey, Outcome]:
    """:func:`run_case` for every key, ``len(pristines)`` cases at a time (each pristine
    has its own work folder): the first share here, each other in a forked worker. A
    case a worker did not report (it died) is missing from the answer."""
    shares = [keys[index::len(pristines)] for index in range(len(pristines))]
    workers = []
    for pristine, share in zip(pristines[1:], shares[1:], strict=True):
        report = tempfile.TemporaryFile()  # noqa: SIM115 (read and closed below)
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                found = {key: run_case(pristine, *key) for key in share}
                pickle.dump(found, report)
                report.flush()
            except BaseException:  # noqa: BLE001 (the parent sees the cases missing)
                code = 3
            finally:
                os._exit(code)
        workers.append((pid, report))
    results = {key: run_case(pristines[0], *key) for key in shares[0]}
    for pid, report in workers:
        os.waitpid(pid, 0)
        with report:
            report.seek(0)
            with contextlib.suppress(EOFError, pickle.UnpicklingError):
                results.update(pickle.load(report))
    return results


# --- by hand ---------------------------------------------------------------------------------


def by_hand(argv: list[str]) -> None:
    """``python tests/test_fuzz.py KIND|all MUTATION|all [SEEDS]``: every failure, grouped."""
    kinds = list(KINDS) if argv[0] == "all" else [argv[0]]
    mutations = list(MUTATIONS) if argv[1] == "all" else [argv[1]]
    seeds = range(int(argv[2]) if len(argv) > 2 else 1)
    base = tempfile.mkdtemp(prefix="fsstore-fuzz-")
    try:
        pristine = make_pristine(base)
        cases = 0
        classes: dict[str, set[str]] = {}
        for kind in kinds:
            for mutation in mutations:
                for seed in seeds:
                    outcome = run_case(pristine, kind, mutation, seed)
                    if outcome is None:
                        continue
                    cases += 1
                    case, failures = outcome
                    for failure in failures:
                        print(f"{case.name}: {': '.join(failure)}", flush=True)
                        classes.setdefault(failure_class(case, failure), set()).add(
                            failure[0])
        print(f"{cases} cases; failure classes (kind/mutation: outcome: operations):")
        for name, names in sorted(classes.items()):
            print(f"  {name}: {', '.join(sorted(names))}")
    finally:
        for folder, dirs, _ in os.walk(base):
            for name in dirs:
                os.chmod(os.path.join(folder, name), 0o755)
        shutil.rmtree(base, ignore_errors=True)
