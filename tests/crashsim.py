"""A FileIO that remembers what is durable, to build what a power loss would leave.

The model is ALICE's: a file's data is durable as of its last fsync; a name (create,
rename, unlink) is durable once its folder is fsynced; nothing else is ordered. Files and
folders are tracked by inode, so a folder renamed after it was fsynced keeps its entries.

``materialize(dest, variant)`` writes one crash state into ``dest``:
  - ``"lost"``: only what was made durable;
  - ``"torn"``: that, plus every unsynced write but the last, and half of the last;
  - ``"garbage"``: that, with the last unsynced write replaced by random bytes;
  - ``"kept"``: everything written (what a killed process leaves: the OS had it all).

``materialize_unseen`` writes a state only if it was not written before with the same
context, so a test judges each distinct state once.

It can also fail the n-th mutating call with an OSError (ENOSPC, EIO), tearing a write
first, and calls ``on_op`` after every mutating call so a test can crash "there".
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import stat
from collections.abc import Callable

from fsstore.fsio import FileIO

VARIANTS = ("lost", "torn", "garbage", "kept")


class CrashSimIO(FileIO):
    def __init__(self, root: str) -> None:
        self.root = root
        self.root_ino = os.stat(root).st_ino
        self.entries: dict[int, dict[str, tuple[int, bool]]] = {}  # durable names by folder
        self.data: dict[int, bytes] = {}  # durable content by inode
        self.unsynced: dict[int, list[tuple[str, int, bytes]]] = {}  # since the last fsync
        self.fd_ino: dict[int, int] = {}
        self.ops = 0
        self.fail_at: int | None = None
        self.fail_errno = errno.ENOSPC
        self.on_op: Callable[[], None] | None = None
        self.seen: set[bytes] = set()  # states materialize_unseen wrote
        self._snapshot_existing(root)

    def _snapshot_existing(self, folder: str) -> None:
        entries = {}
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            info = os.lstat(path)
            is_dir = stat.S_ISDIR(info.st_mode)
            entries[name] = (info.st_ino, is_dir)
            if is_dir:
                self._snapshot_existing(path)
            else:
                with open(path, "rb") as handle:
                    self.data[info.st_ino] = handle.read()
        self.entries[os.stat(folder).st_ino] = entries

    # --- bookkeeping ---

    def _step(self, fd: int | None = None, data: bytes | None = None, offset: int = 0) -> None:
        self.ops += 1
        if self.fail_at is not None and self.ops == self.fail_at:
            if fd is not None and data:
                # the disk took part of the write before it failed
                half = bytes(data[: len(data) // 2])
                os.pwrite(fd, half, offset)
                self._record(fd, "write", offset, half)
            raise OSError(self.fail_errno, os.strerror(self.fail_errno))

    def _after(self) -> None:
        if self.on_op is not None:
            self.on_op()

    def _record(self, fd: int, kind: str, offset: int, data: bytes) -> None:
        ino = self.fd_ino.get(fd) or os.fstat(fd).st_ino
        self.unsynced.setdefault(ino, []).append((kind, offset, data))

    def _synced(self, fd: int) -> None:
        ino = os.fstat(fd).st_ino
        with open(f"/proc/self/fd/{fd}", "rb") as handle:  # the fd may be write-only
            self.data[ino] = handle.read()
        self.unsynced.pop(ino, None)

    # --- the seam ---

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        fd = super().open(path, flags, mode)
        self.fd_ino[fd] = os.fstat(fd).st_ino
        return fd

    def close(self, fd: int) -> None:
        self.fd_ino.pop(fd, None)
        super().close(fd)

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> None:
        data = bytes(data)
        self._step(fd, data, offset)
        super().pwrite(fd, data, offset)
        self._record(fd, "write", offset, data)
        self._after()

    def truncate(self, fd: int, size: int) -> None:
        self._step()
        super().truncate(fd, size)
        self._record(fd, "truncate", size, b"")
        self._after()

    def fsync(self, fd: int) -> None:
        self._step()
        super().fsync(fd)
        self._synced(fd)
        self._after()

    def fdatasync(self, fd: int) -> None:
        self._step()
        super().fdatasync(fd)
        self._synced(fd)
        self._after()

    def fsync_dir(self, path: str) -> None:
        self._step()
        super().fsync_dir(path)
        entries = {}
        for name in os.listdir(path):
            info = os.lstat(os.path.join(path, name))
            entries[name] = (info.st_ino, stat.S_ISDIR(info.st_mode))
        self.entries[os.stat(path).st_ino] = entries
        self._after()

    def mkdir(self, path: str) -> None:
        self._step()
        super().mkdir(path)
        self._after()

    def rename(self, src: str, dst: str) -> None:
        self._step()
        super().rename(src, dst)
        self._after()

    def unlink(self, path: str) -> None:
        self._step()
        super().unlink(path)
        self._after()

    def link(self, src: str, dst: str) -> None:
        self._step()
        super().link(src, dst)
        self._after()

    def rmtree(self, path: str) -> None:
        self._step()
        super().rmtree(path)
        self._after()

    # --- crash states ---

    def materialize(self, dest: str, variant: str, rng: random.Random | None = None) -> None:
        """Write the crash state ``variant`` of the tree under ``root`` into ``dest``."""
        _write_tree(dest, self.crash_state(variant, rng))

    def record_states(self, dest_root: str | os.PathLike[str]) -> list[str]:
        """From now on, at every I/O call, materialize each variant of the crash state
        into a new folder ``state-N`` under ``dest_root``; the answer is the list of those
        folders, filled as the I/O goes on. Set ``on_op = None`` to stop."""
        states: list[str] = []

        def crash_here() -> None:
            for variant in VARIANTS:
                dest = os.path.join(dest_root, f"state-{len(states)}")
                self.materialize(dest, variant)
                states.append(dest)

        self.on_op = crash_here
        return states

    def materialize_unseen(self, dest: str, variant: str, rng: random.Random | None = None,
                           context: object = None) -> bool:
        """Like :meth:`materialize`, unless this same state was already written with an
        equal ``context`` (what the caller's judgement of a state depends on besides its
        files): then nothing is written and the answer is False. Most I/O calls leave most
        variants as they were (a write changes no durable byte until its fsync), and a
        state judged once with the same expectations would be judged the same again."""
        state = self.crash_state(variant, rng)
        digest = hashlib.sha256(repr(context).encode())
        for path, content in sorted(state.items()):
            digest.update(b"\0%d\0%s\0" % (len(path), path.encode()))
            digest.update(b"D" if content is None else b"F%d:" % len(content))
            digest.update(content or b"")
        key = digest.digest()
        if key in self.seen:
            return False
        self.seen.add(key)
        _write_tree(dest, state)
        return True

    def crash_state(self, variant: str, rng: random.Random | None = None
                    ) -> dict[str, bytes | None]:
        """The crash state ``variant``: every path under ``root`` (relative, with ``/``)
        and its content, None for a folder."""
        state: dict[str, bytes | None] = {}
        if variant == "kept":
            _read_tree(self.root, "", state)
            return state
        rng = rng or random.Random(0)
        # The last unsynced write of the whole tree is the one torn or garbled.
        last = None
        for ino, writes in self.unsynced.items():
            for index, (kind, _, _) in enumerate(writes):
                if kind == "write":
                    last = (ino, index)
        self._build(self.root_ino, "", variant, last, rng, state)
        return state

    def _build(self, dir_ino: int, prefix: str, variant: str, last: tuple[int, int] | None,
               rng: random.Random, state: dict[str, bytes | None]) -> None:
        for name, (ino, is_dir) in self.entries.get(dir_ino, {}).items():
            path = prefix + name
            if is_dir:
                state[path] = None
                self._build(ino, path + "/", variant, last, rng, state)
                continue
            content = bytearray(self.data.get(ino, b""))
            writes = self.unsynced.get(ino, [])
            if variant in ("torn", "garbage"):
                for index, (kind, offset, data) in enumerate(writes):
                    if last == (ino, index):
                        if variant == "torn":
                            data = data[: len(data) // 2]
                        else:
                            data = rng.randbytes(len(data))
                    _apply(content, kind, offset, data)
                    if last == (ino, index):
                        break
            state[path] = bytes(content)


def _apply(content: bytearray, kind: str, offset: int, data: bytes) -> None:
    if kind == "truncate":
        del content[offset:]
        return
    if len(content) < offset:
        content.extend(bytes(offset - len(content)))
    content[offset : offset + len(data)] = data


def _read_tree(folder: str, prefix: str, state: dict[str, bytes | None]) -> None:
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if os.path.isdir(path):
            state[prefix + name] = None
            _read_tree(path, prefix + name + "/", state)
        else:
            with open(path, "rb") as source:
                state[prefix + name] = source.read()


def _write_tree(dest: str, state: dict[str, bytes | None]) -> None:
    os.makedirs(dest, exist_ok=True)
    for path, content in state.items():  # a folder comes before what it holds
        target = os.path.join(dest, *path.split("/"))
        if content is None:
            os.makedirs(target, exist_ok=True)
        else:
            with open(target, "wb") as handle:
                handle.write(content)
