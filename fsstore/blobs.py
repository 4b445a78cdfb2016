"""Content-addressed attachments: a session's ``blobs/`` folder, and its garbage collection.

Layout (docs/FORMAT.md, section 14)::

    blobs/sha256/AB/DIGEST        the bytes as put (DIGEST: 64 hex digits, AB its first two)
    blobs/sha256/AB/DIGEST.zst    "FSZ1" size:u64 (the original bytes' count), then zstd

A blob's name is the SHA-256 of its original bytes, so the same content is stored once
and every read can prove it got what was put. A blob reaches its name by rename, after
its bytes are fsynced, so a crash never leaves a partial blob under a final name.

Events, state and checkpoints refer to blobs with a :class:`BlobRef`: a map holding the
reserved key ``"fsstore.blob"``, which is how garbage collection finds every reference
without knowing the caller's schema.
"""

from __future__ import annotations

import hashlib
import io as _io
import os
import re
import stat
import struct
import threading
import time
from collections.abc import Iterable, Iterator
from typing import IO, TYPE_CHECKING, Any, NamedTuple

from . import layout
from .aio import AsyncBlobReaderMixin, AsyncBlobStoreMixin
from .defaults import DEFAULT_GRACE_SECONDS as DEFAULT_GRACE_SECONDS  # re-exported
from .errors import (
    BlobNotFound,
    CorruptionError,
    Finding,
    InvalidBlobRef,
    InvalidSetting,
    WriteFailed,
)
from .fsio import FileIO, safe_opener
from .log_writer import NO_LINK_ERRNOS

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

BLOB_KEY = "fsstore.blob"
#: The bytes a frame holding a BlobRef contains, so scans can skip frames without one.
BLOB_MARKER = BLOB_KEY.encode()
ALGORITHM = "sha256"
_DIGEST = re.compile(r"sha256:([0-9a-f]{64})\Z")
CHUNK = 1 << 20
ZSTD_SUFFIX = ".zst"
ZSTD_MAGIC = b"FSZ1"
_ZSTD_HEADER = struct.Struct("<4sQ")
#: Media types compressed when compression is "auto": text, and structured text.
COMPRESSIBLE = ("text/", "application/json", "application/xml", "application/x-ndjson",
                "application/javascript", "application/x-yaml", "application/yaml",
                "image/svg+xml", "application/csv")


class BlobRef(dict[str, Any]):
    """A reference to a blob: ``{"fsstore.blob": "sha256:HEX", "size": N, "media_type": T}``.

    It is a dict, so it goes into events, state and checkpoints as it is, and reads back
    as a plain dict: :meth:`parse` turns that back into a BlobRef.
    """

    def __init__(self, digest: str, size: int, media_type: str | None = None) -> None:
        super().__init__({BLOB_KEY: digest, "size": size, "media_type": media_type})

    @property
    def digest(self) -> str:
        return str(self[BLOB_KEY])

    @property
    def size(self) -> int:
        return int(self["size"])

    @property
    def media_type(self) -> str | None:
        return self.get("media_type")

    @property
    def hex(self) -> str:
        return self.digest.split(":", 1)[1]

    @classmethod
    def parse(cls, value: object) -> BlobRef:
        """The BlobRef a stored value stands for; InvalidBlobRef if it is not one."""
        size: Any
        if isinstance(value, str):
            digest, size, media_type = value, -1, None
        elif isinstance(value, dict) and BLOB_KEY in value:
            digest, size, media_type = value[BLOB_KEY], value.get("size"), value.get(
                "media_type")
        else:
            raise InvalidBlobRef(f"not a blob reference: {_shown(value)}; expected a BlobRef "
                                 f"or a map with the key {BLOB_KEY!r}")
        if not isinstance(digest, str) or not _DIGEST.match(digest):
            raise InvalidBlobRef(f"malformed blob digest {_shown(digest)}: expected 'sha256:' "
                                 "and 64 lowercase hex digits")
        if isinstance(size, bool) or not isinstance(size, int) or size < -1:
            raise InvalidBlobRef(f"malformed blob size {size!r}")
        if media_type is not None and not isinstance(media_type, str):
            raise InvalidBlobRef(f"malformed media type {media_type!r}")
        return cls(digest, size, media_type)

    def __repr__(self) -> str:
        return f"BlobRef({self.digest!r}, size={self.size}, media_type={self.media_type!r})"


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def find_refs(value: Any, found: set[str]) -> None:
    """Add the digest of every BlobRef inside ``value`` (any depth) to ``found``."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            digest = item.get(BLOB_KEY)
            if isinstance(digest, str):
                found.add(digest)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


class BlobStat(NamedTuple):
    ref: BlobRef  # without the media type, which is not stored with the bytes
    stored_size: int  # bytes on disk
    compressed: bool
    path: str
    mtime: float


class GcReport(NamedTuple):
    """What a garbage collection found and did (or would do, with ``dry_run``)."""

    scanned: int
    scanned_bytes: int
    kept: int
    kept_bytes: int
    reclaimed: int
    reclaimed_bytes: int
    young: int  # unreferenced, but within the grace period: kept for now
    damaged: list[Finding]
    dry_run: bool


class BlobReader(AsyncBlobReaderMixin):
    """Reads a session's blobs; every read verifies the digest. Takes no lock."""

    def __init__(self, io: FileIO, session_path: str) -> None:
        self.io = io
        self.session_path = session_path
        self.path = layout.blobs_dir(session_path)

    # --- names -------------------------------------------------------------------------

    def _folder(self, hex_digest: str) -> str:
        return os.path.join(self.path, ALGORITHM, hex_digest[:2])

    def _locate(self, ref: BlobRef) -> tuple[str, bool] | None:
        """The path of a blob and whether it is compressed, or None. Refuses a symlink
        anywhere on the way: nothing is read outside the session folder."""
        folder = self._folder(ref.hex)
        if not self._real_folders() or not _real_folder(folder):
            return None
        for name, compressed in ((ref.hex, False), (ref.hex + ZSTD_SUFFIX, True)):
            path = os.path.join(folder, name)
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(info.st_mode):
                raise CorruptionError("not a regular file (a symlink?): not followed",
                                      path=path)
            return path, compressed
        return None

    def exists(self, ref: object) -> bool:
        return self._locate(BlobRef.parse(ref)) is not None

    def stat(self, ref: object) -> BlobStat:
        blob = BlobRef.parse(ref)
        found = self._locate(blob)
        if found is None:
            raise _not_found(blob, self.path)
        path, compressed = found
        info = os.lstat(path)
        size = _content_size(path) if compressed else info.st_size
        return BlobStat(BlobRef(blob.digest, size, blob.media_type), info.st_size,
                        compressed, path, info.st_mtime)

    def open(self, ref: object) -> _io.RawIOBase:
        """A file-like reader of the blob's original bytes, verified as they stream: a
        read that reaches the end raises CorruptionError if the digest or size is wrong,
        and a compressed blob that would produce more than its recorded size is refused
        before more is produced."""
        blob = BlobRef.parse(ref)
        found = self._locate(blob)
        if found is None:
            raise _not_found(blob, self.path)
        path, compressed = found
        handle = open(path, "rb", opener=_no_follow)  # noqa: SIM115 (returned, closed by caller)
        try:
            if compressed:
                size = _content_size(path)
                handle.seek(_ZSTD_HEADER.size)
                import zstandard  # here: a store whose blobs are plain never loads it

                raw: IO[bytes] = zstandard.ZstdDecompressor().stream_reader(
                    handle, read_across_frames=False, closefd=True)
            else:
                size = os.fstat(handle.fileno()).st_size
                raw = handle
            if blob.size >= 0 and size != blob.size:
                raise CorruptionError(f"blob holds {size} bytes, its reference says {blob.size}",
                                      path=path)
        except BaseException:
            handle.close()
            raise
        return _VerifyingReader(raw, blob.hex, size, path)

    def get(self, ref: object) -> bytes:
        """The blob's bytes, verified."""
        blob = BlobRef.parse(ref)
        found = self._locate(blob)
        if found is not None and not found[1]:
            # Stored as is: one read, one hash (the streaming reader would copy twice).
            path = found[0]
            with open(path, "rb", opener=_no_follow) as handle:
                data = handle.read()
            _verify(data, blob, path)
            return data
        with self.open(blob) as reader:
            return reader.read()

    def _real_folders(self) -> bool:
        """Whether ``blobs/`` and ``blobs/sha256/`` exist; CorruptionError if either is a
        symlink or a file: nothing is listed, written or removed through one."""
        return _real_folder(self.path) and _real_folder(os.path.join(self.path, ALGORITHM))

    def digests(self) -> Iterator[tuple[str, str, bool]]:
        """(hex digest, path, compressed) of every file under ``blobs/sha256``; names that
        are not blob names are reported by ``check``."""
        if not self._real_folders():
            return
        root = os.path.join(self.path, ALGORITHM)
        prefixes = sorted(os.listdir(root))
        for prefix in prefixes:
            folder = os.path.join(root, prefix)
            if not os.path.isdir(folder) or os.path.islink(folder):
                continue
            for name in sorted(os.listdir(folder)):
                hex_digest = _blob_digest(name, prefix)
                if hex_digest is not None:
                    yield hex_digest, os.path.join(folder, name), name.endswith(ZSTD_SUFFIX)

    def check(self, verify: bool = True) -> list[Finding]:
        """Every blob file's problems: a foreign name, a symlink, and with ``verify`` a
        digest or size that does not match."""
        findings: list[Finding] = []
        root = os.path.join(self.path, ALGORITHM)
        try:
            if not self._real_folders():
                return findings
        except CorruptionError as exc:
            return [Finding("problem", exc.path, None, exc.reason)]
        for name in sorted(os.listdir(self.path)):  # puts write their temp files here
            if name.startswith(layout.TEMP_PREFIX):
                findings.append(Finding("note", os.path.join(self.path, name), None,
                                        "temp file of an interrupted put; a gc removes it "
                                        "once it is older than the grace period"))
        for prefix in sorted(os.listdir(root)):
            folder = os.path.join(root, prefix)
            if os.path.islink(folder) or not os.path.isdir(folder):
                findings.append(Finding("problem", folder, None, "not a blob folder (a "
                                        "symlink or a file); blobs are never read through it"))
                continue
            for name in sorted(os.listdir(folder)):
                path = os.path.join(folder, name)
                hex_digest = _blob_digest(name, prefix)
                if hex_digest is None:
                    findings.append(Finding("problem", path, None, "not a blob name"))
                elif os.path.islink(path) or not os.path.isfile(path):
                    findings.append(Finding("problem", path, None, "not a regular file"))
                elif verify:
                    try:
                        self.verify_blob(f"sha256:{hex_digest}")
                    except CorruptionError as exc:
                        findings.append(Finding("problem", exc.path, exc.offset,
                                                f"damaged blob: {exc.reason}"))
                    except BlobNotFound:
                        continue  # removed meanwhile (a gc in the writer)
                    except OSError as exc:
                        findings.append(Finding("problem", path, None, "unreadable blob: "
                                                f"{exc.strerror or exc}"))
        return findings

    def verify_blob(self, ref: object) -> int:
        """Hash the whole blob as it streams and return its size; CorruptionError if the
        digest, the size or a compressed frame is wrong. Memory stays at one chunk
        whatever the blob's size or the size its header claims: ``verify`` checks
        every blob this way, so a forged or huge one costs time, never memory."""
        buffer = bytearray(CHUNK)
        size = 0
        with self.open(ref) as reader:
            while True:
                count = reader.readinto(buffer)
                if not count:
                    return size
                size += count


class BlobStore(BlobReader, AsyncBlobStoreMixin):
    """A session writer's blobs: :meth:`put` and :meth:`gc` besides the reads.

    The writer remembers the blobs it put that no commit may have referenced yet; gc
    never removes those, whatever their age.
    """

    def __init__(self, io: FileIO, session_path: str, compression: str = "auto",
                 level: int = 3) -> None:
        super().__init__(io, session_path)
        if compression not in ("auto", "always", "never"):
            raise InvalidSetting(f"compression must be 'auto', 'always' or 'never', not "
                                 f"{compression!r}")
        self.compression = compression
        self.level = level
        self.pending: set[str] = set()  # digests put by this writer
        self._gc_lock = threading.Lock()

    def _compresses(self, media_type: str | None, compress: bool | None) -> bool:
        if compress is not None:
            return compress
        if self.compression != "auto":
            return self.compression == "always"
        return media_type is not None and media_type.lower().startswith(COMPRESSIBLE)

    def put(self, source: bytes | bytearray | memoryview | str | os.PathLike[str] | IO[bytes],
            media_type: str | None = None, *, compress: bool | None = None) -> BlobRef:
        """Store bytes, a file (by path) or a binary file-like object; return its
        BlobRef. Streams in 1 MiB chunks. The same content is stored once. The bytes are
        durable, under their final name, when it returns."""
        if media_type is not None and not isinstance(media_type, str):
            raise InvalidBlobRef(f"media_type must be a str, not {type(media_type).__name__}")
        stream: Any
        if isinstance(source, (bytes, bytearray, memoryview)):
            stream = _io.BytesIO(source)
            close = False
        elif isinstance(source, (str, os.PathLike)):
            stream, close = open(source, "rb"), True  # noqa: SIM115
        elif hasattr(source, "read"):
            stream, close = source, False
        else:
            raise InvalidBlobRef(f"cannot put a {type(source).__name__}: give bytes, a path "
                                 "or a binary file")
        try:
            return self._put_stream(stream, media_type, self._compresses(media_type, compress))
        finally:
            if close:
                stream.close()

    def _put_stream(self, stream: IO[bytes], media_type: str | None,
                    compressed: bool) -> BlobRef:
        self._ensure_dirs(os.path.join(self.path, ALGORITHM))
        self._real_folders()  # never write through a symlink
        temp = os.path.join(self.path, layout.temp_name("put"))
        hasher = _BackgroundHash()
        size = 0
        fd = self.io.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            # A compressed blob starts with the size of the original bytes, written last
            # (it is known only at the end of the stream): reads bound decompression by it.
            offset = _ZSTD_HEADER.size if compressed else 0
            import zstandard

            compressor = (zstandard.ZstdCompressor(level=self.level).compressobj()
                          if compressed else None)
            while True:
                chunk = stream.read(CHUNK)
                if not chunk:
                    break
                if not isinstance(chunk, (bytes, bytearray, memoryview)):
                    raise InvalidBlobRef("the file-like object must be opened in binary mode")
                hasher.update(chunk)
                size += len(chunk)
                data = compressor.compress(chunk) if compressor else chunk
                if data:
                    self.io.pwrite(fd, data, offset)
                    offset += len(data)
            if compressor is not None:
                self.io.pwrite(fd, compressor.flush(), offset)
                self.io.pwrite(fd, _ZSTD_HEADER.pack(ZSTD_MAGIC, size), 0)
            self.io.fsync(fd)
        except OSError as exc:
            self.io.close(fd)
            self._unlink_quietly(temp)
            raise WriteFailed(f"{self.path}: put failed ({exc.strerror or exc}); nothing was "
                              "stored") from exc
        except BaseException:
            self.io.close(fd)
            self._unlink_quietly(temp)
            raise
        self.io.close(fd)
        hex_digest = hasher.hexdigest()
        ref = BlobRef(f"sha256:{hex_digest}", size, media_type)
        # Under the gc lock: a gc in another thread must not decide on this blob between
        # our finding it stored and our marking it pending.
        with self._gc_lock:
            self.pending.add(hex_digest)
            try:
                existing = self._locate(ref)
                if existing is not None:
                    # Stored already: keep that copy, and make it young again, so a later
                    # writer's gc does not take it before the commit that refers to it.
                    self.io.unlink(temp)
                    os.utime(existing[0])
                else:
                    folder = self._folder(hex_digest)
                    self._ensure_dirs(folder)
                    name = hex_digest + (ZSTD_SUFFIX if compressed else "")
                    self.io.rename(temp, os.path.join(folder, name))
                    self.io.fsync_dir(folder)
            except OSError as exc:
                self._unlink_quietly(temp)
                raise WriteFailed(f"{self.path}: put failed ({exc.strerror or exc}); nothing "
                                  "was stored") from exc
        return ref

    def _ensure_dirs(self, folder: str) -> None:
        """Create ``folder`` and its parents up to the session folder, durably."""
        missing = []
        current = folder
        while not os.path.isdir(current):
            missing.append(current)
            current = os.path.dirname(current)
        for path in reversed(missing):
            try:
                self.io.mkdir(path)
            except FileExistsError:
                continue
            self.io.fsync_dir(os.path.dirname(path))

    def _unlink_quietly(self, path: str) -> None:
        try:
            self.io.unlink(path)
        except OSError:
            pass

    def gc(self, referenced: Iterable[str], *, grace: float = DEFAULT_GRACE_SECONDS,
           dry_run: bool = False, verify: bool = False) -> GcReport:
        """Remove every blob whose digest is not in ``referenced``, not put by this
        writer, and older than ``grace`` seconds; and temp files of interrupted puts
        older than that. With ``verify``, also hash every blob and report damage."""
        with self._gc_lock:
            return self._gc(referenced, grace, dry_run, verify)

    def _gc(self, referenced: Iterable[str], grace: float, dry_run: bool,
            verify: bool) -> GcReport:
        referenced_hex = {digest.split(":", 1)[-1] for digest in referenced}
        self.pending -= referenced_hex  # committed: the references keep them now
        keep = referenced_hex | self.pending
        cutoff = time.time() - grace
        scanned = scanned_bytes = kept = kept_bytes = reclaimed = reclaimed_bytes = young = 0
        damaged = self.check(verify=verify)
        doomed: list[tuple[str, int]] = []
        for hex_digest, path, _ in self.digests():
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                continue
            scanned += 1
            scanned_bytes += info.st_size
            if hex_digest in keep:
                kept += 1
                kept_bytes += info.st_size
            elif info.st_mtime > cutoff:
                young += 1
                kept += 1
                kept_bytes += info.st_size
            else:
                doomed.append((path, info.st_size))
        for name in os.listdir(self.path) if os.path.isdir(self.path) else ():
            path = os.path.join(self.path, name)
            if name.startswith(layout.TEMP_PREFIX) and os.lstat(path).st_mtime <= cutoff:
                doomed.append((path, 0))
        folders = set()
        for path, size in doomed:
            if size or not os.path.basename(path).startswith(layout.TEMP_PREFIX):
                reclaimed += 1
                reclaimed_bytes += size
            if not dry_run:
                self._unlink_quietly(path)
                folders.add(os.path.dirname(path))
        for folder in folders:
            self.io.fsync_dir(folder)
        return GcReport(scanned, scanned_bytes, kept, kept_bytes, reclaimed, reclaimed_bytes,
                        young, damaged, dry_run)


_hash_workers: ThreadPoolExecutor | None = None
_hash_workers_lock = threading.Lock()


def _hash_pool() -> ThreadPoolExecutor:
    """The threads that hash large puts, started by the first one (not at import: a
    program that only reads needs neither them nor concurrent.futures)."""
    global _hash_workers
    with _hash_workers_lock:
        if _hash_workers is None:
            from concurrent.futures import ThreadPoolExecutor

            _hash_workers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fsstore-hash")
        return _hash_workers

_INLINE_HASH = 64 << 10


class _BackgroundHash:
    """SHA-256 of a put's chunks, computed on a worker thread while the putting thread
    writes: hashlib and file writes both release the GIL, so on two cores a put runs at
    about the speed of the slower of the two rather than of their sum. At most one chunk
    is in flight, so chunks are hashed in order."""

    def __init__(self) -> None:
        self._hasher = hashlib.sha256()
        self._pending: Future[None] | None = None

    def update(self, chunk: bytes) -> None:
        if self._pending is not None:
            self._pending.result()
            self._pending = None
        if len(chunk) < _INLINE_HASH:
            self._hasher.update(chunk)
        else:
            self._pending = _hash_pool().submit(self._hasher.update, chunk)

    def hexdigest(self) -> str:
        if self._pending is not None:
            self._pending.result()
            self._pending = None
        return self._hasher.hexdigest()


_HEX64 = re.compile(r"[0-9a-f]{64}\Z")


def _blob_digest(name: str, prefix: str) -> str | None:
    """The hex digest a file name in ``sha256/PREFIX/`` stands for, or None."""
    hex_digest = name[: -len(ZSTD_SUFFIX)] if name.endswith(ZSTD_SUFFIX) else name
    if _HEX64.match(hex_digest) and hex_digest[:2] == prefix:
        return hex_digest
    return None


def _real_folder(path: str) -> bool:
    """Whether the folder ``path`` exists; CorruptionError if it is a symlink or a file."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(info.st_mode):
        raise CorruptionError("not a folder (a symlink or a file): blobs are read, written "
                              "and removed only in the session's own folders", path=path)
    return True


def _no_follow(path: str, flags: int) -> int:
    return safe_opener(path, flags)  # no symlink, no FIFO or device: a regular file


def _content_size(path: str) -> int:
    """The size of a compressed blob's original bytes, from its header."""
    with open(path, "rb", opener=_no_follow) as handle:
        header = handle.read(_ZSTD_HEADER.size)
    if len(header) < _ZSTD_HEADER.size or header[:4] != ZSTD_MAGIC:
        raise CorruptionError("compressed blob without its FSZ1 header", path=path, offset=0)
    return int(_ZSTD_HEADER.unpack(header)[1])


def _verify(data: bytes, ref: BlobRef, path: str) -> None:
    if ref.size >= 0 and len(data) != ref.size:
        raise CorruptionError(f"blob holds {len(data)} bytes, its reference says {ref.size}",
                              path=path)
    if hashlib.sha256(data).hexdigest() != ref.hex:
        raise CorruptionError("blob content does not match its digest (damaged)", path=path)


def _not_found(ref: BlobRef, folder: str) -> BlobNotFound:
    return BlobNotFound(f"no blob {ref.digest} in {folder}")


class _VerifyingReader(_io.RawIOBase):
    """Streams a blob's bytes, counting and hashing them; at the end, or past the
    recorded size, a mismatch raises CorruptionError."""

    def __init__(self, raw: IO[bytes], hex_digest: str, size: int, path: str) -> None:
        self._raw = raw
        self._hex = hex_digest
        self._size = size
        self._path = path
        self._hasher = hashlib.sha256()
        self._read = 0
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._done:
            return 0
        view = memoryview(buffer).cast("B")
        # Never ask for more than one byte past the recorded size: a decompression bomb
        # is stopped there, before it produces more.
        want = min(len(view), self._size - self._read + 1)
        import zstandard  # loaded already: this reader's stream is zstandard's

        try:
            chunk = self._raw.read(want)
        except zstandard.ZstdError as exc:
            raise CorruptionError(f"compressed blob does not decode: {exc}",
                                  path=self._path) from None
        if self._read + len(chunk) > self._size:
            raise CorruptionError(f"blob produces more than its recorded {self._size} bytes "
                                  "(a decompression bomb, or damage); refused", path=self._path)
        self._hasher.update(chunk)
        self._read += len(chunk)
        view[: len(chunk)] = chunk
        if not chunk:
            self._finish()
        return len(chunk)

    def _finish(self) -> None:
        self._done = True
        if self._read != self._size:
            raise CorruptionError(f"blob ends after {self._read} of {self._size} bytes",
                                  path=self._path)
        if self._hasher.hexdigest() != self._hex:
            raise CorruptionError("blob content does not match its digest (damaged)",
                                  path=self._path)

    def readall(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            chunk = self.read(CHUNK)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


def link_blobs(io: FileIO, source_session: str, dest_session: str) -> None:
    """Give a new session (a fork) every blob of ``source_session``: by hard link (a copy
    where the filesystem refuses links), so their bytes stay while any session has them."""
    source = BlobReader(io, source_session)
    made: set[str] = set()
    root = os.path.join(layout.blobs_dir(dest_session), ALGORITHM)
    for hex_digest, path, _ in source.digests():
        folder = os.path.join(root, hex_digest[:2])
        if folder not in made:
            for directory in (os.path.dirname(root), root, folder):
                if not io.exists(directory):
                    io.mkdir(directory)
            made.add(folder)
        target = os.path.join(folder, os.path.basename(path))
        if not stat.S_ISREG(os.lstat(path).st_mode):
            # link() would link a symlink itself, and a folder cannot be linked or read:
            # the fork would hold what no read of the parent accepts.
            raise CorruptionError("not a regular file (a symlink or a folder): a fork does "
                                  "not take it; fix or remove it first", path=path)
        try:
            io.link(path, target)
        except OSError as exc:
            if exc.errno not in NO_LINK_ERRNOS:
                raise
            with open(path, "rb", opener=_no_follow) as handle:
                io.write_new(target, handle.read())
    for folder in sorted(made):
        io.fsync_dir(folder)
    if made:
        io.fsync_dir(os.path.join(layout.blobs_dir(dest_session), ALGORITHM))
        io.fsync_dir(layout.blobs_dir(dest_session))
        io.fsync_dir(dest_session)


# --- blobs put in a batch --------------------------------------------------------------

#: Blobs a batch holds (open temp files) before it commits by itself.
MAX_STAGED = 64
#: fsyncs issued at once: concurrent fsyncs of one file system share journal commits.
_SYNC_WORKERS = 8


class BlobBatch:
    """Blobs of one session written now and made durable together by :meth:`commit`:
    what an import that writes many attachments uses instead of :meth:`BlobStore.put`
    one by one (which fsyncs each blob's bytes and then its folder: two journal commits
    per blob, most of the time of an import of a transcript holding hundreds of long
    tool outputs and images).

    ``put`` writes the bytes to a temp file and returns the BlobRef at once; ``commit``
    fsyncs the temp files (several at once, so the file system shares journal commits),
    renames each to its final name, then fsyncs once each folder that got a name. The
    caller commits before writing any record that refers to a blob of the batch: until
    then a crash leaves temp files only (removed by ``fsstore vacuum``), never a partial
    blob under a final name nor a record of a blob that is not durable. The result on
    disk is ``put``'s (docs/FORMAT.md, section 14). A batch holding MAX_STAGED blobs
    commits by itself (open files and memory stay bounded); ``discard`` removes what
    was not committed."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs
        self.io: FileIO = blobs.io
        # digest -> (temp path, open fd, compressed)
        self._staged: dict[str, tuple[str, int, bool]] = {}

    def put(self, data: bytes, media_type: str | None = None) -> BlobRef:
        """Write ``data`` as a blob (durable only after :meth:`commit`); its BlobRef."""
        blobs = self.blobs
        hex_digest = hashlib.sha256(data).hexdigest()
        ref = BlobRef(f"{ALGORITHM}:{hex_digest}", len(data), media_type)
        # Marked pending first: a gc in another thread must not take the blob between
        # our finding it stored and the commit of the record that refers to it.
        with blobs._gc_lock:
            blobs.pending.add(hex_digest)
            if hex_digest in self._staged:
                return ref
            existing = blobs._locate(ref)
            if existing is not None:
                os.utime(existing[0])  # young again: see BlobStore._put_stream
                return ref
        compressed = blobs._compresses(media_type, None)
        if compressed:
            import zstandard  # here, not at the top: fsstore cat and ls never compress

            body = zstandard.ZstdCompressor(level=blobs.level).compress(data)
            payload = _ZSTD_HEADER.pack(ZSTD_MAGIC, len(data)) + body
        else:
            payload = data
        blobs._ensure_dirs(os.path.join(blobs.path, ALGORITHM))
        blobs._real_folders()  # never write through a symlink
        temp = os.path.join(blobs.path, layout.temp_name("put"))
        try:
            fd = self.io.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except OSError as exc:
            raise WriteFailed(f"{blobs.path}: put failed ({exc.strerror or exc}); nothing "
                              "was stored") from exc
        self._staged[hex_digest] = (temp, fd, compressed)
        try:
            self.io.pwrite(fd, payload, 0)
        except OSError as exc:
            self.discard()
            raise WriteFailed(f"{blobs.path}: put failed ({exc.strerror or exc}); nothing "
                              "was stored") from exc
        if len(self._staged) >= MAX_STAGED:
            self.commit()
        return ref

    def commit(self) -> None:
        """Make every blob put since the last commit durable under its final name."""
        if not self._staged:
            return
        blobs = self.blobs
        try:
            self._sync_all([fd for _temp, fd, _c in self._staged.values()], self.io.fsync)
            top = os.path.join(blobs.path, ALGORITHM)
            synced: set[str] = set()  # folders whose names a sync makes durable
            for hex_digest, (temp, fd, compressed) in list(self._staged.items()):
                self.io.close(fd)
                del self._staged[hex_digest]
                folder = blobs._folder(hex_digest)
                try:
                    if not os.path.isdir(folder):
                        # Made durable with the others below (the sync of ``top``),
                        # before any record can refer to a blob in it.
                        try:
                            self.io.mkdir(folder)
                        except FileExistsError:
                            pass
                        synced.add(top)
                    with blobs._gc_lock:
                        if blobs._locate(BlobRef(f"{ALGORITHM}:{hex_digest}", 0)) is None:
                            # Only now, its bytes synced: a crash never leaves a partial
                            # blob under a final name.
                            name = hex_digest + (ZSTD_SUFFIX if compressed else "")
                            self.io.rename(temp, os.path.join(folder, name))
                            synced.add(folder)
                            continue
                    self.io.unlink(temp)  # another writer stored it meanwhile
                except BaseException:
                    blobs._unlink_quietly(temp)
                    raise
            self._sync_all(sorted(synced), self.io.fsync_dir)
        except OSError as exc:
            self.discard()
            raise WriteFailed(f"{blobs.path}: put failed ({exc.strerror or exc}); blobs "
                              "not yet committed were not stored") from exc
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        """Remove the temp files of blobs not committed (closing their files)."""
        staged, self._staged = self._staged, {}
        for temp, fd, _compressed in staged.values():
            try:
                self.io.close(fd)
            except OSError:
                pass
            self.blobs._unlink_quietly(temp)

    def _sync_all(self, items: list[Any], sync: Any) -> None:
        # Several at once on the plain file system; one by one, in order, under any
        # other FileIO (a crash simulator counts and orders its operations).
        if type(self.io) is not FileIO or len(items) < 2:
            for item in items:
                sync(item)
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(_SYNC_WORKERS, len(items))) as pool:
            for _ in pool.map(sync, items):
                pass
