from __future__ import annotations

import errno
import os
import shutil
import signal

import pytest
from conftest import tree_snapshot
from crashsim import VARIANTS, CrashSimIO

import fsstore
from fsstore import (
    FileIO,
    FsStoreError,
    NotAFolder,
    NotARegularFile,
    StoreFileExists,
    StoreFileNotFound,
    StoreIOError,
    UnsafePath,
    VectorDocument,
)
from fsstore.fsio import safe_opener


def test_pwrite_continues_after_a_short_write(tmp_path, monkeypatch):
    real = os.pwrite
    monkeypatch.setattr(os, "pwrite", lambda fd, data, offset: real(fd, bytes(data[:3]), offset))
    io = FileIO()
    fd = io.open(str(tmp_path / "f"), os.O_RDWR | os.O_CREAT)
    io.pwrite(fd, b"0123456789", 5)
    assert io.pread(fd, 100, 0) == bytes(5) + b"0123456789"
    io.close(fd)


def test_atomic_write_leaves_the_old_or_the_new_file_at_every_crash_point(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "state").write_bytes(b"old contents")
    io = CrashSimIO(str(root))
    states = []

    def crash_here():
        for variant in VARIANTS:
            dest = tmp_path / f"crash{len(states)}"
            io.materialize(str(dest), variant)
            states.append((dest / "state").read_bytes())

    io.on_op = crash_here
    io.atomic_write(str(root / "state"), b"new contents, longer")
    assert set(states) == {b"old contents", b"new contents, longer"}
    assert states[-1] == b"new contents, longer"  # durable once atomic_write returned


def test_failed_atomic_write_leaves_the_old_file_and_no_temp(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "state").write_bytes(b"old")
    io = CrashSimIO(str(root))
    io.fail_at = 2  # the fsync of the temp file
    with pytest.raises(OSError):
        io.atomic_write(str(root / "state"), b"new")
    assert os.listdir(root) == ["state"]
    assert (root / "state").read_bytes() == b"old"


def test_read_file_refuses_a_file_over_the_limit(tmp_path):
    (tmp_path / "big").write_bytes(b"x" * 100)
    with pytest.raises(ValueError, match="more than the 10 allowed"):
        FileIO().read_file(str(tmp_path / "big"), 10)


# --- opening store files: no symlink, nothing but a regular file, typed errors ----------------


@pytest.fixture
def no_hang():
    """Fails a test that blocks (a FIFO opened for reading waits for a writer forever)
    instead of hanging the suite. Not a time limit on anything that completes."""
    def hung(signum, frame):
        raise AssertionError("blocked: a store file open waited forever")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_open_refuses_a_symlink_and_names_it(tmp_path):
    (tmp_path / "target").write_bytes(b"outside")
    os.symlink(tmp_path / "target", tmp_path / "link")
    for flags in (os.O_RDONLY, os.O_RDWR, os.O_WRONLY | os.O_CREAT):
        with pytest.raises(UnsafePath, match="link: is a symlink") as caught:
            FileIO().open(str(tmp_path / "link"), flags)
        assert caught.value.path == str(tmp_path / "link")
    assert (tmp_path / "target").read_bytes() == b"outside"


def test_open_of_a_dangling_symlink_creates_nothing(tmp_path):
    os.symlink(tmp_path / "nowhere", tmp_path / "link")
    with pytest.raises(UnsafePath):
        FileIO().open(str(tmp_path / "link"), os.O_RDWR | os.O_CREAT)
    assert not (tmp_path / "nowhere").exists()


def test_open_refuses_a_fifo_without_blocking(tmp_path, no_hang):
    os.mkfifo(tmp_path / "fifo")
    for flags in (os.O_RDONLY, os.O_RDWR, os.O_WRONLY):
        with pytest.raises(NotARegularFile, match="is a FIFO"):
            FileIO().open(str(tmp_path / "fifo"), flags)
    with pytest.raises(NotARegularFile):
        FileIO().read_file(str(tmp_path / "fifo"), 100)


def test_open_refuses_a_folder_and_a_device(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(NotARegularFile, match="is a folder"):
        FileIO().open(str(tmp_path / "folder"), os.O_RDONLY)
    with pytest.raises(NotARegularFile, match="is a folder"):
        FileIO().open(str(tmp_path / "folder"), os.O_RDWR)
    with pytest.raises(NotARegularFile, match="is a device"):
        FileIO().read_file("/dev/zero", 100)


def test_open_errors_are_typed_keep_their_errno_and_name_the_path(tmp_path):
    io = FileIO()
    missing = str(tmp_path / "missing")
    with pytest.raises(StoreFileNotFound, match="missing") as caught:
        io.open(missing, os.O_RDONLY)
    assert isinstance(caught.value, FileNotFoundError)
    assert caught.value.errno == errno.ENOENT and caught.value.filename == missing
    (tmp_path / "there").write_bytes(b"")
    with pytest.raises(StoreFileExists) as exists:
        io.open(str(tmp_path / "there"), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    assert isinstance(exists.value, FileExistsError)
    with pytest.raises(NotAFolder, match="a folder on this path is a file"):
        io.open(str(tmp_path / "there" / "below"), os.O_RDONLY)
    for error in (UnsafePath, NotARegularFile, NotAFolder, StoreFileNotFound,
                  StoreFileExists, StoreIOError):
        assert issubclass(error, FsStoreError)


def test_open_failing_for_any_other_reason_is_a_store_io_error(tmp_path, monkeypatch):
    def refuse(path, flags, mode=0o777):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(StoreIOError, match="Too many open files") as caught:
        FileIO().open(str(tmp_path / "f"), os.O_RDONLY)
    assert caught.value.errno == errno.EMFILE and str(tmp_path / "f") in str(caught.value)


def test_store_folders_are_listed_only_if_real(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a").write_bytes(b"")
    os.symlink(tmp_path / "real", tmp_path / "link")
    (tmp_path / "file").write_bytes(b"")
    io = FileIO()
    assert io.listdir(str(tmp_path / "real")) == ["a"]
    with pytest.raises(UnsafePath):
        io.listdir(str(tmp_path / "link"))
    with pytest.raises(NotAFolder):
        io.listdir(str(tmp_path / "file"))
    with pytest.raises(StoreFileNotFound):
        io.listdir(str(tmp_path / "missing"))
    assert io.check_folder(str(tmp_path / "real"))
    assert not io.check_folder(str(tmp_path / "missing"))
    with pytest.raises(UnsafePath):
        io.check_folders(str(tmp_path / "real"), str(tmp_path / "link"))
    with pytest.raises(NotAFolder):
        io.check_folders(str(tmp_path / "file"))


def test_a_dangling_symlink_is_a_name_that_exists(tmp_path):
    os.symlink(tmp_path / "nowhere", tmp_path / "link")
    assert FileIO().exists(str(tmp_path / "link"))


def test_python_file_objects_open_through_the_helper(tmp_path):
    (tmp_path / "f").write_bytes(b"data")
    os.symlink(tmp_path / "f", tmp_path / "link")
    with FileIO().open_file(str(tmp_path / "f")) as handle:
        assert handle.read() == b"data"
    with pytest.raises(UnsafePath):
        FileIO().open_file(str(tmp_path / "link"))
    with pytest.raises(UnsafePath), open(tmp_path / "link", "rb", opener=safe_opener):
        pass


def test_the_crash_simulation_io_opens_through_the_helper(tmp_path):
    (tmp_path / "f").write_bytes(b"data")
    os.symlink(tmp_path / "f", tmp_path / "link")
    io = CrashSimIO(str(tmp_path))
    with pytest.raises(UnsafePath):
        io.open(str(tmp_path / "link"), os.O_RDONLY)


# --- a whole store: nothing is read or written outside it ------------------------------------


def _rich_store(root):
    """A store whose session "s" has every file kind: segments, a tail hint, a snapshot,
    a checkpoint, a blob, a lease, a vector collection with a shard and a log."""
    store = fsstore.open_store(root)
    with store.create_session("s", title="t") as session:
        for i in range(5):
            session.append({"kind": "m", "i": i})
        session.set_state("k", 1)
        session.finish_turn()
        session.snapshot()
        session.checkpoint("c1")
        session.append({"kind": "m", "ref": session.blobs.put(b"hello" * 100)})
        collection = session.create_collection("v", 4)
        collection.upsert([VectorDocument(f"d{i}", [i, 1, 2, 3]) for i in range(3)])
        collection.compact()
        collection.upsert([VectorDocument("e", [1, 2, 3, 4])])
    store.create_session("other").close()
    store.release_lease(store.claim_lease("s").lease)
    store.close()
    return store


def _read_everything(root):
    """Every public read of the store, each ending in a result or an FsStoreError."""
    store = fsstore.open_store(root, create=False)
    reader = store.read_session("s")
    reads = [
        reader.info, lambda: list(reader.events()), reader.state, reader.get_turns,
        lambda: [reader.load_checkpoint(c.id) for c in reader.checkpoints()],
        lambda: reader.collection("v").search([1, 2, 3, 4], 2),
        reader.queue.items, store.list_sessions, lambda: store.lease_info("s"),
        lambda: store.search("v", [1, 2, 3, 4], 2),
    ]
    for read in reads:
        try:
            read()
        except FsStoreError:
            pass
    assert all(isinstance(f, fsstore.Finding) for f in store.verify())


@pytest.mark.parametrize("kind", ["fifo", "symlink", "dev-zero", "folder"])
def test_any_store_file_replaced_by_another_kind_gives_typed_errors_never_a_hang(
        tmp_path, kind, no_hang):
    base = tmp_path / "base"
    _rich_store(base)
    files = sorted(os.path.relpath(os.path.join(folder, name), base)
                   for folder, _, names in os.walk(base) for name in names)
    assert len(files) > 15
    outside = tmp_path / "outside"
    for index, name in enumerate(files):
        root = tmp_path / f"case{index}"
        shutil.copytree(base, root)
        path = root / name
        original = path.read_bytes()
        path.unlink()
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "symlink":
            outside.write_bytes(original)
            os.symlink(outside, path)
        elif kind == "dev-zero":
            os.symlink("/dev/zero", path)
        else:
            path.mkdir()
        try:
            _read_everything(root)
        except FsStoreError:
            pass  # open_store or read_session refused: typed, naming the file
        if kind == "symlink":
            assert outside.read_bytes() == original
        shutil.rmtree(root)


def _segments(session_path):
    log = os.path.join(session_path, "log")
    return sorted(os.path.join(log, n) for n in os.listdir(log) if n.endswith(".fslog"))


def _move_out(path, outside):
    """Replace ``path`` by a symlink to a copy of it at ``outside``."""
    os.rename(path, outside)
    os.symlink(outside, path)
    return outside.read_bytes()


def test_a_symlinked_last_segment_is_never_appended_to(store, tmp_path):
    with store.create_session("s") as session:
        session.append({"kind": "m"})
    segment = _segments(store._session_path("s"))[-1]
    before = _move_out(segment, tmp_path / "outside")
    with pytest.raises(UnsafePath, match="is a symlink"), store.open_session("s") as session:
        session.append({"kind": "m"})
    assert (tmp_path / "outside").read_bytes() == before


def test_a_symlinked_lease_file_is_never_rewritten(store, tmp_path):
    store.create_session("s").close()
    store.release_lease(store.claim_lease("s").lease)
    store.close()
    before = _move_out(os.path.join(store._session_path("s"), "lease"), tmp_path / "outside")
    with pytest.raises(UnsafePath):
        store.claim_lease("s")
    with pytest.raises(UnsafePath):
        store.lease_info("s")
    assert (tmp_path / "outside").read_bytes() == before


def test_a_dangling_writer_lock_symlink_creates_nothing(store, tmp_path):
    store.create_session("s").close()
    lock = os.path.join(store._session_path("s"), "writer.lock")
    os.unlink(lock)
    os.symlink(tmp_path / "created", lock)
    for shared in (True, False):
        with pytest.raises(UnsafePath):
            store.open_session("s", shared=shared)
    with pytest.raises(UnsafePath):
        store.claim_lease("s")
    with pytest.raises(UnsafePath):
        store.delete_session("s")
    assert not (tmp_path / "created").exists()


def test_a_symlinked_writer_lock_is_a_typed_error(store, tmp_path):
    store.create_session("s").close()
    before = _move_out(os.path.join(store._session_path("s"), "writer.lock"),
                       tmp_path / "outside")
    with pytest.raises(UnsafePath, match="writer.lock: is a symlink"):
        store.open_session("s")
    assert (tmp_path / "outside").read_bytes() == before


def test_a_symlinked_session_folder_is_refused_by_readers_and_writers(store, tmp_path):
    with store.create_session("a") as session:
        session.append({"kind": "m"})
    shutil.copytree(store._session_path("a"), tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", store._session_path("b"))
    before = tree_snapshot(tmp_path / "elsewhere")
    with pytest.raises(UnsafePath, match="b: is a symlink"):
        store.read_session("b")
    with pytest.raises(UnsafePath):
        store.open_session("b")
    with pytest.raises(UnsafePath):
        store.open_session("b", shared=True)
    with pytest.raises(UnsafePath):
        store.claim_lease("b")
    with pytest.raises(UnsafePath):
        store.delete_session("b")
    assert tree_snapshot(tmp_path / "elsewhere") == before


@pytest.mark.parametrize("folder", ["log", "state", "checkpoints", "blobs", "vectors"])
def test_a_symlinked_folder_inside_a_session_is_refused(store, tmp_path, folder):
    with store.create_session("s") as session:
        session.append({"kind": "m"})
        session.snapshot()
        session.checkpoint("c")
        session.blobs.put(b"x")
        session.create_collection("v", 2)
    path = os.path.join(store._session_path("s"), folder)
    os.rename(path, tmp_path / "moved")
    os.symlink(tmp_path / "moved", path)
    with pytest.raises(UnsafePath, match=f"{folder}: is a symlink"):
        store.read_session("s")
    with pytest.raises(UnsafePath):
        store.open_session("s")


def test_a_symlinked_collection_folder_is_refused(store, tmp_path):
    with store.create_session("s") as session:
        session.create_collection("v", 2).upsert([VectorDocument("a", [1, 2])])
    path = os.path.join(store._session_path("s"), "vectors", "v")
    os.rename(path, tmp_path / "moved")
    os.symlink(tmp_path / "moved", path)
    with pytest.raises(UnsafePath):
        store.read_session("s").collection("v")
    with store.open_session("s") as session, pytest.raises(UnsafePath):
        session.collection("v")


def test_a_symlinked_sessions_folder_is_refused(tmp_path):
    fsstore.open_store(tmp_path / "store").create_session("s").close()
    os.rename(tmp_path / "store" / "sessions", tmp_path / "moved")
    os.symlink(tmp_path / "moved", tmp_path / "store" / "sessions")
    with pytest.raises(UnsafePath):
        fsstore.open_store(tmp_path / "store")


def test_a_store_root_under_a_symlink_works(tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "alias")
    store = fsstore.open_store(tmp_path / "alias" / "store")
    with store.create_session("s") as session:
        session.append({"kind": "m"})
    os.symlink(tmp_path / "real" / "store", tmp_path / "direct")
    again = fsstore.open_store(tmp_path / "direct")
    assert [e.data for e in again.read_session("s").events()] == [{"kind": "m"}]
    store.release_lease(again.claim_lease("s").lease)
    again.delete_session("s")
    assert again.verify() == []


def test_a_read_asked_for_more_than_the_file_holds_allocates_only_what_is_there(
        tmp_path, monkeypatch):
    (tmp_path / "f").write_bytes(b"x" * 100)
    asked = []
    real = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, at: asked.append(n) or real(fd, n, at))
    io = FileIO()
    fd = io.open(str(tmp_path / "f"), os.O_RDONLY)
    try:
        assert io.pread(fd, 4 << 30, 10) == b"x" * 90  # a forged 4 GiB length
    finally:
        io.close(fd)
    assert max(asked) <= 90


def test_errors_of_calls_on_names_are_typed_keep_their_errno_and_name_the_path(tmp_path):
    io = FileIO()
    (tmp_path / "d").mkdir()
    with pytest.raises(StoreFileExists, match="d: already exists") as exists:
        io.mkdir(str(tmp_path / "d"))
    assert exists.value.errno == errno.EEXIST
    with pytest.raises(StoreFileNotFound, match="missing -> ") as missing:
        io.rename(str(tmp_path / "missing"), str(tmp_path / "other"))
    assert isinstance(missing.value, FileNotFoundError)
    with pytest.raises(StoreFileNotFound):
        io.unlink(str(tmp_path / "missing"))
    with pytest.raises(StoreIOError) as not_empty:
        (tmp_path / "e").mkdir()
        (tmp_path / "e" / "f").write_bytes(b"")
        io.rename(str(tmp_path / "d"), str(tmp_path / "e"))
    assert not_empty.value.errno == errno.ENOTEMPTY


def test_lease_info_refuses_a_symlinked_session_folder(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    store.create_session("s").close()
    store.release_lease(store.claim_lease("s", "runtime-1").lease)
    folder = store.read_session("s").path
    os.rename(folder, tmp_path / "outside")
    os.symlink(tmp_path / "outside", folder)
    with pytest.raises(UnsafePath):
        store.lease_info("s")
