from __future__ import annotations

import os

import pytest
from crashsim import VARIANTS, CrashSimIO

from fsstore import FileIO


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
