"""The filesystem seam: every call fsstore makes that matters for durability.

Store, session and log code never call ``os`` for file contents or names directly; they
call a :class:`FileIO`. Tests pass a subclass that remembers what was fsynced and can
then produce what a power loss would leave behind (drop unsynced writes, tear the last
write, lose an unsynced rename) or fail a call with ENOSPC or EIO.

The model of the disk behind this seam is ALICE's (OSDI 2014): file data is durable once
the file is fsynced; a new name (create or rename) is durable once its folder is fsynced;
nothing else is ordered.

Every store file is opened by :func:`open_regular` (``FileIO.open`` calls it): it never
follows a symlink, opens nothing but a regular file (a FIFO cannot block it, a device
cannot feed it endless bytes), and turns every OS error into a typed ``FsStoreError``
naming the path. Folders are listed and fsynced the same way. A symlink higher up in a
path is not seen by ``O_NOFOLLOW``: the code that opens a store, a session or a
collection checks its folders once with :func:`check_folder` (the store root itself may
sit under a symlink, such as ``/tmp -> /private/tmp``).
"""

from __future__ import annotations

import errno
import fcntl
import io as _io
import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

from . import layout
from .errors import (
    NotAFolder,
    NotARegularFile,
    StoreFileExists,
    StoreFileNotFound,
    StoreIOError,
    UnsafePath,
)

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
#: Reads larger than this are bounded by the file's size first (one fstat).
_CHECKED_READ = 1 << 20


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISREG(mode):
        return "a regular file"
    return "not a file"


def _unsafe(path: str) -> UnsafePath:
    return UnsafePath("is a symlink; fsstore follows none inside a store (it could lead "
                      "out of it): replace it with the file or folder itself, or remove it",
                      path=path)


def os_error(exc: OSError, path: str, *, folder: bool = False,
             classify: bool = True) -> Exception:
    """The typed error for ``exc``, raised by a call on ``path`` (a store folder when
    ``folder``): with ``classify`` (opens), a symlink or a wrong kind of file is named as
    such; anything else keeps its errno in a StoreFileNotFound, StoreFileExists or
    StoreIOError naming the path (so ``except OSError`` and errno checks still work)."""
    if classify and exc.errno in (errno.ELOOP, errno.EMLINK, errno.ENOTDIR, errno.EISDIR,
                                  errno.ENXIO, errno.EOPNOTSUPP):
        # O_NOFOLLOW reports a symlink as ELOOP (EMLINK on FreeBSD); O_DIRECTORY a file as
        # ENOTDIR; a write open of a folder is EISDIR, of a FIFO without reader ENXIO.
        try:
            info = os.lstat(path)
        except OSError:
            info = None
        if info is not None and stat.S_ISLNK(info.st_mode):
            return _unsafe(path)
        if info is not None and folder and not stat.S_ISDIR(info.st_mode):
            return NotAFolder(f"is {_kind(info.st_mode)}, where a folder should be; remove "
                              "it or restore the folder from a backup", path=path)
        if info is not None and not folder and not stat.S_ISREG(info.st_mode):
            return NotARegularFile(f"is {_kind(info.st_mode)}, where a regular file should "
                                   "be; remove it or restore the file from a backup",
                                   path=path)
        if exc.errno == errno.ENOTDIR:
            return NotAFolder("a folder on this path is a file; restore the store's folders "
                              "from a backup", path=path)
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOENT:
        error: OSError = StoreFileNotFound(exc.errno, f"{path}: no such file or folder")
    elif exc.errno == errno.EEXIST:
        error = StoreFileExists(exc.errno, f"{path}: already exists")
    else:
        error = StoreIOError(exc.errno or errno.EIO, f"{path}: {reason}; check the "
                             "permissions and the disk")
    error.filename = path
    return error


def open_regular(path: str, flags: int, mode: int = 0o644) -> int:
    """Open the store file ``path`` and return its descriptor: without following a
    symlink, without blocking on a FIFO, and only if it is a regular file. Raises
    UnsafePath, NotARegularFile, or an OSError that is also an FsStoreError."""
    try:
        fd = os.open(path, flags | _NOFOLLOW | _NONBLOCK | _CLOEXEC, mode)
    except OSError as exc:
        raise os_error(exc, path) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotARegularFile(f"is {_kind(info.st_mode)}, where a regular file should be; "
                                  "remove it or restore the file from a backup", path=path)
        if _NONBLOCK:
            # Opened non-blocking only so that a FIFO could not hang the open: a regular
            # file ignores the flag, but clear it for filesystems that might not.
            fcntl.fcntl(fd, fcntl.F_SETFL, flags & os.O_APPEND)
    except BaseException:
        os.close(fd)
        raise
    return fd


def safe_opener(path: str, flags: int) -> int:
    """``open(path, "rb", opener=safe_opener)``: a Python file object opened as
    :func:`open_regular` opens."""
    return open_regular(path, flags)


def open_folder(path: str) -> int:
    """A descriptor on the store folder ``path`` (to list it), refusing a symlink or
    anything but a folder."""
    try:
        return os.open(path, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC)
    except OSError as exc:
        raise os_error(exc, path, folder=True) from None


def check_folder(path: str) -> bool:
    """True if the store folder ``path`` is a folder, False if it is missing; raises
    UnsafePath for a symlink and NotAFolder for anything else. One lstat: cheap enough
    for every open of a store, session or collection."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise os_error(exc, path, folder=True) from None
    if stat.S_ISDIR(info.st_mode):
        return True
    if stat.S_ISLNK(info.st_mode):
        raise _unsafe(path)
    raise NotAFolder(f"is {_kind(info.st_mode)}, where a folder should be; remove it or "
                     "restore the folder from a backup", path=path)


class FolderEntry(NamedTuple):
    """A name in a folder, as :meth:`FileIO.entries` lists it."""

    name: str
    kind: str  # "file", "folder" or "other" (a symlink, FIFO, socket or device: not followed)
    size: int  # bytes of a file; 0 otherwise
    #: (device, inode) of a file with more than one name (a hard link a fork shares), so
    #: that a total counts it once; None for a file with one name, and for the rest.
    inode: tuple[int, int] | None = None


class FileIO:
    """Plain POSIX I/O. One instance may be shared by any number of stores and threads."""

    # --- file descriptors ----------------------------------------------------------------

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        """Open a store file (see :func:`open_regular`: no symlink, no FIFO, no device, no
        folder; every OS error typed and naming the path)."""
        return open_regular(path, flags, mode)

    def open_file(self, path: str) -> _io.BufferedReader:
        """A store file opened for reading as a Python file object (for ``np.load``),
        through :meth:`open`. Close it (``with``) like any file."""
        fd = self.open(path, os.O_RDONLY)
        try:
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise

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
        """Read up to ``size`` bytes at ``offset``; shorter only at the end of the file.

        A large ``size`` (often a length read from the file itself, which damage can make
        huge) is first cut to what the file holds: os.pread allocates the whole size it
        is asked for before reading."""
        if size > _CHECKED_READ:
            size = min(size, max(0, os.fstat(fd).st_size - offset))
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

    def identity(self, fd: int) -> tuple[int, int, int, int, int]:
        """(device, inode, size, mtime_ns, ctime_ns) of an open file: what was checked of
        it holds while these do (a write changes its ctime, which no one can set)."""
        info = os.fstat(fd)
        return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)

    def path_identity(self, path: str) -> tuple[int, int, int, int, int]:
        """:meth:`identity` of the file at ``path``, without opening it."""
        info = os.stat(path)
        return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)

    def path_inode(self, path: str) -> int:
        """The inode number of ``path`` (a copy of a file or folder gets another)."""
        return os.stat(path).st_ino

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

    # Errors of the calls on names keep their errno and builtin class (callers tell
    # EEXIST or EXDEV apart), typed and naming the path.

    def mkdir(self, path: str) -> None:
        try:
            os.mkdir(path)
        except OSError as exc:
            raise os_error(exc, path, classify=False) from None

    def rename(self, src: str, dst: str) -> None:
        """Atomic rename. Replaces a file; fails on a non-empty folder."""
        try:
            os.rename(src, dst)
        except OSError as exc:
            raise os_error(exc, f"{src} -> {dst}", classify=False) from None

    def unlink(self, path: str) -> None:
        try:
            os.unlink(path)
        except OSError as exc:
            raise os_error(exc, path, classify=False) from None

    def link(self, src: str, dst: str) -> None:
        """A second name for a file (a hard link). Durable once ``dst``'s folder is fsynced."""
        try:
            os.link(src, dst)
        except OSError as exc:
            raise os_error(exc, f"{src} -> {dst}", classify=False) from None

    def rmtree(self, path: str) -> None:
        """Remove a folder and what it holds. A symlink in it is removed, never followed;
        a symlink in place of ``path`` itself is refused."""
        try:
            shutil.rmtree(path)
        except OSError as exc:
            raise os_error(exc, path, classify=False) from None

    def listdir(self, path: str) -> list[str]:
        """The names in the store folder ``path``; refuses a symlink or a file there."""
        fd = open_folder(path)
        try:
            return os.listdir(fd)
        except OSError as exc:
            raise os_error(exc, path, folder=True) from None
        finally:
            os.close(fd)

    def entries(self, path: str) -> list[FolderEntry]:
        """The names in the store folder ``path`` with the kind and size of each, as
        ``lstat`` says (a symlink is reported, never followed): a listing and one stat per
        file, for totals of bytes. Refuses a symlink or a file at ``path``, as
        :meth:`listdir` does; a name removed while it is listed is left out."""
        fd = open_folder(path)
        try:
            found = []
            with os.scandir(fd) as names:
                for entry in names:
                    if entry.is_dir(follow_symlinks=False):
                        found.append(FolderEntry(entry.name, "folder", 0))
                        continue
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # removed meanwhile (a rename into place, a prune)
                    if not stat.S_ISREG(info.st_mode):
                        found.append(FolderEntry(entry.name, "other", 0))
                    else:
                        shared = (info.st_dev, info.st_ino) if info.st_nlink > 1 else None
                        found.append(FolderEntry(entry.name, "file", info.st_size, shared))
            return found
        except OSError as exc:
            raise os_error(exc, path, folder=True) from None
        finally:
            os.close(fd)

    def stamps(self, path: str) -> list[tuple[str, int, int, int, int, int]]:
        """``(name, mode, mtime_ns, size, inode, links)`` of the folder ``path`` (name
        ``""``, its device number in place of its links) and of every name under it
        (``a/b`` for a name in a subfolder), as ``lstat`` says: a symlink is stamped,
        never followed. What a cache compares to tell whether a folder changed (the
        stats cache); a name removed while it is listed is left out. Raises
        FileNotFoundError when ``path`` is gone."""
        info = os.lstat(path)
        found = [("", info.st_mode, info.st_mtime_ns, info.st_size, info.st_ino,
                  info.st_dev)]
        folders = [("", path)]
        while folders:
            prefix, folder = folders.pop()
            try:
                scan = os.scandir(folder)
            except (FileNotFoundError, NotADirectoryError):
                continue  # removed meanwhile: its parent's stamp changed too
            with scan:
                for entry in scan:
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    name = prefix + entry.name
                    found.append((name, info.st_mode, info.st_mtime_ns, info.st_size,
                                  info.st_ino, info.st_nlink))
                    if stat.S_ISDIR(info.st_mode):
                        folders.append((name + "/", entry.path))
        return found

    def stamp(self, path: str) -> tuple[int, int, int] | None:
        """``(mtime_ns, size, inode)`` of ``path`` as ``lstat`` says (a symlink is
        stamped, never followed); None when nothing has that name. What a cache compares
        to tell whether one file or folder changed (the store catalog)."""
        try:
            info = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return info.st_mtime_ns, info.st_size, info.st_ino

    def append(self, path: str, data: bytes, *, create: bool = False) -> bool:
        """Append ``data`` to ``path`` with one ``write`` on an ``O_APPEND`` descriptor
        (not fsynced): a write smaller than ``PIPE_BUF`` lands whole, after every other
        such write, on a local filesystem, whoever else appends. False when ``path``
        does not exist and ``create`` is false."""
        flags = os.O_WRONLY | os.O_APPEND | (os.O_CREAT if create else 0)
        try:
            fd = self.open(path, flags)
        except FileNotFoundError:
            return False
        try:
            if data and os.write(fd, data) != len(data):
                raise StoreIOError(errno.EIO, f"{path}: short append of {len(data)} bytes")
        finally:
            self.close(fd)
        return True

    def exists(self, path: str) -> bool:
        """True if anything has the name ``path``, a dangling symlink included (opening
        it is then refused, rather than taking the name for free)."""
        return os.path.lexists(path)

    def check_folder(self, path: str) -> bool:
        """See :func:`check_folder`."""
        return check_folder(path)

    def check_folders(self, *paths: str) -> None:
        """Refuse a symlink or a non-folder at any of ``paths`` (missing ones are fine):
        called once where a store, a session or a collection is opened, so that no path
        below it passes through a symlink (``O_NOFOLLOW`` sees only a path's last name)."""
        for path in paths:
            check_folder(path)

    def fsync_dir(self, path: str) -> None:
        """Make the names in a folder durable (creates, renames, unlinks). Follows a
        symlink: the store root and its parent may be one, and an fsync reads and
        writes nothing."""
        try:
            fd = os.open(path, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
        except OSError as exc:
            raise os_error(exc, path, folder=True) from None
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

    def file_size(self, path: str) -> int:
        """The size of file ``path``; 0 when there is none (removed meanwhile)."""
        try:
            fd = self.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return 0
        try:
            return self.size(fd)
        finally:
            self.close(fd)

    def unlink_if_there(self, path: str) -> None:
        """Unlink ``path``; nothing when it is already gone (a crash or another process
        removed it first). Any other failure raises."""
        try:
            self.unlink(path)
        except FileNotFoundError:
            pass

    def read_head(self, path: str, count: int) -> bytes:
        """The first ``count`` bytes of ``path`` (fewer when it is shorter)."""
        fd = self.open(path, os.O_RDONLY)
        try:
            return self.pread(fd, count, 0)
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


@contextmanager
def folder_lock(path: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the folder ``path`` while the block runs: for work
    two processes must not do in one folder at once (two backups into one DEST, two
    Parquet exports into one folder). The kernel lets it go when the process dies."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
