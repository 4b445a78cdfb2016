"""The filesystem seam: every call fsstore makes that matters for durability.

Store, session and log code never call ``os`` for file contents or names directly; they
call a :class:`FileIO`. Tests pass a subclass that remembers what was fsynced and can
then produce what a power loss would leave behind (drop unsynced writes, tear the last
write, lose an unsynced rename) or fail a call with ENOSPC or EIO.

The model of the disk behind this seam is ALICE's (OSDI 2014): file data is durable once
the file is fsynced; a new name (create or rename) is durable once its folder is fsynced;
nothing else is ordered.
"""

from __future__ import annotations

import os
import shutil

from . import layout


class FileIO:
    """Plain POSIX I/O. One instance may be shared by any number of stores and threads."""

    # --- file descriptors ----------------------------------------------------------------

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        return os.open(path, flags | getattr(os, "O_CLOEXEC", 0), mode)

    def close(self, fd: int) -> None:
        os.close(fd)

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> None:
        """Write all of ``data`` at ``offset`` (a short write is continued, not returned)."""
        view = memoryview(data)
        while view:
            written = os.pwrite(fd, view, offset)
            view = view[written:]
            offset += written

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        """Read up to ``size`` bytes at ``offset``; shorter only at the end of the file."""
        chunks = []
        while size > 0:
            chunk = os.pread(fd, size, offset)
            if not chunk:
                break
            chunks.append(chunk)
            size -= len(chunk)
            offset += len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def size(self, fd: int) -> int:
        return os.fstat(fd).st_size

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def fdatasync(self, fd: int) -> None:
        """Flush file data, and metadata only where it is needed to read the data back
        (a size change). Overwriting preallocated space needs no metadata update."""
        if hasattr(os, "fdatasync"):
            os.fdatasync(fd)
        else:  # macOS
            os.fsync(fd)

    def truncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    # --- names ---------------------------------------------------------------------------

    def mkdir(self, path: str) -> None:
        os.mkdir(path)

    def rename(self, src: str, dst: str) -> None:
        """Atomic rename. Replaces a file; fails on a non-empty folder."""
        os.rename(src, dst)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def link(self, src: str, dst: str) -> None:
        """A second name for a file (a hard link). Durable once ``dst``'s folder is fsynced."""
        os.link(src, dst)

    def rmtree(self, path: str) -> None:
        shutil.rmtree(path)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def fsync_dir(self, path: str) -> None:
        """Make the names in a folder durable (creates, renames, unlinks)."""
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # --- whole files, built on the calls above so a test seam sees every step -------------

    def read_file(self, path: str, max_bytes: int) -> bytes:
        """Read a small file whole; refuse one larger than ``max_bytes``."""
        fd = self.open(path, os.O_RDONLY)
        try:
            size = self.size(fd)
            if size > max_bytes:
                raise ValueError(f"{path} is {size} bytes, more than the {max_bytes} allowed")
            return self.pread(fd, size, 0)
        finally:
            self.close(fd)

    def write_new(self, path: str, data: bytes) -> None:
        """Create ``path`` (it must not exist) holding ``data``, fsynced. Its name is
        durable once its folder is fsynced. A failure removes what it created."""
        fd = self.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            self.pwrite(fd, data, 0)
            self.fsync(fd)
        except BaseException:
            self.close(fd)
            self._unlink_quietly(path)
            raise
        self.close(fd)

    def atomic_write(self, path: str, data: bytes) -> None:
        """Replace ``path`` with ``data`` so that a crash leaves the old or the new file,
        never a mix: temp file in the same folder, write, fsync, rename, fsync the folder."""
        folder, name = os.path.split(path)
        temp = os.path.join(folder, layout.temp_name(name))
        self.write_new(temp, data)
        try:
            self.rename(temp, path)
        except BaseException:
            self._unlink_quietly(temp)
            raise
        self.fsync_dir(folder)

    def _unlink_quietly(self, path: str) -> None:
        try:
            self.unlink(path)
        except OSError:
            pass
