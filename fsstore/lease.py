"""Execution leases with fencing tokens: which owner drives a session, and until when.

Two things make one mechanism (docs/FORMAT.md, section 16):

- ``writer.lock`` is the session's one mutex. Every write to the session's files holds
  it: an exclusive ``Session`` for as long as it is open, a shared one (a lease holder,
  a queue worker) for each operation. :class:`SessionMutex` takes it per operation.
- The ``lease`` file says which owner may take that mutex to write events and state,
  with what fencing token, until when. It is read and written only under the mutex,
  so a claim and a fenced write never interleave: a write happens exactly when, under
  the mutex, its token is the lease's current one and the lease has not expired.

The lease file holds two 512-byte slots, written alternately in place; a claim is
fdatasynced before it returns (renewals and releases need not be: see ``renew``). A
write torn by a crash damages only the slot being written; readers take the valid slot
with the higher generation.

Fencing must outlive the lease file: a lease file deleted, or restored from an older
backup, must not make a claim hand out a token again. So before a claim writes a new
token into the lease file, it writes it into ``writer.lock`` too (a token record of two
alternating 32-byte slots, fdatasynced), a lease holder records its token in the log
before its first write (``LEASE_RECORD``), and a claim issues a token above all of them.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import struct
import threading
import time
from dataclasses import dataclass
from typing import Annotated, Any, NamedTuple

import msgspec

from . import clock, layout
from .chain_session import unchecked_reader
from .checksum import crc32c
from .errors import (
    CorruptionError,
    Finding,
    FormatVersionError,
    InvalidSetting,
    LeaseLost,
    SessionLocked,
    SessionNotFound,
)
from .fsio import FileIO, open_regular, os_error
from .turns import LEASE_RECORD as LEASE_RECORD  # the record a claim writes (FORMAT 4)

SLOT_SIZE = 512
_SLOT = struct.Struct("<8sHHQQB3xddI")  # magic major minor generation token state expires
_MAGIC = b"FSLEASE1"  # acquired owner_len; then the owner as JSON; crc32c at the end
LEASE_MAJOR, LEASE_MINOR = 1, 0
MAX_OWNER_BYTES = SLOT_SIZE - _SLOT.size - 4
HELD, RELEASED = 1, 2
MAX_TTL = 7 * 24 * 3600.0


# --- owners and liveness --------------------------------------------------------------------


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            return handle.read().strip()
    except OSError:
        return None


def _process_start(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: split after its end.
    fields = raw[raw.rfind(b")") + 2:].split()
    if fields and fields[0] == b"Z":
        return -1  # a zombie: dead, not yet reaped
    return int(fields[19]) if len(fields) > 19 else None


# A claim reads both slots and writes one: the same few owners, encoded again and again.
_ENCODED: dict[LeaseOwner, bytes] = {}
_DECODED: dict[bytes, LeaseOwner] = {}


def _remember(cache: dict[Any, Any], key: object, value: object) -> None:
    if len(cache) >= 64:
        cache.clear()
    cache[key] = value


class OwnerRecord(msgspec.Struct, frozen=True):
    """The typed decoder of a lease slot's owner JSON; unknown keys are ignored."""

    host: str
    pid: Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]  # a pid os.kill can be asked of
    started: str | None = None
    label: str = ""


_owner_decoder = msgspec.json.Decoder(OwnerRecord)


@dataclass(frozen=True)
class LeaseOwner:
    """Who holds (or wants) a lease: a host, a process (its pid and start time, so a
    reused pid is told apart) and a label naming the worker."""

    host: str
    pid: int
    started: str | None  # boot id and start ticks, where the OS tells them
    label: str = ""

    @classmethod
    def current(cls, label: str = "") -> LeaseOwner:
        """This process, under ``label``."""
        start, boot = _process_start(os.getpid()), _boot_id()
        started = f"{boot}:{start}" if start is not None and boot is not None else None
        import socket  # here: readers of a store never name a host

        return cls(socket.gethostname(), os.getpid(), started, str(label))

    def to_json(self) -> bytes:
        """The owner as a lease slot holds it; InvalidSetting for an owner a reader would
        refuse (see :class:`OwnerRecord`)."""
        raw = _ENCODED.get(self)
        if raw is None:
            try:
                msgspec.convert({"host": self.host, "pid": self.pid, "started": self.started,
                                 "label": self.label}, OwnerRecord)
            except msgspec.ValidationError as exc:
                raise InvalidSetting(f"lease owner is not valid: {exc}") from None
            raw = json.dumps({"host": self.host, "pid": self.pid, "started": self.started,
                              "label": self.label}, ensure_ascii=False,
                             separators=(",", ":")).encode()
            _remember(_ENCODED, self, raw)
        return raw

    @classmethod
    def from_json(cls, raw: bytes) -> LeaseOwner:
        """Decode an owner through :class:`OwnerRecord`; ValueError naming the field when
        it does not fit."""
        owner = _DECODED.get(raw)
        if owner is None:
            try:
                record = _owner_decoder.decode(raw)
            except (msgspec.DecodeError, RecursionError) as exc:
                raise ValueError(str(exc)) from None
            owner = cls(record.host, record.pid, record.started, record.label)
            _remember(_DECODED, bytes(raw), owner)
        return owner

    def alive(self) -> bool | None:
        """True or False when this host can tell (same host: is that very process still
        running); None for another host, where only the lease's expiry counts."""
        import socket

        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # another user's process: it exists
        start = _process_start(self.pid)
        if start == -1:
            return False
        if self.started is not None and start is not None:
            boot, _, ticks = self.started.rpartition(":")
            return boot == _boot_id() and ticks == str(start)
        return True


# --- the lease file -------------------------------------------------------------------------


class LeaseState(NamedTuple):
    """What the lease file says: the newest valid slot."""

    generation: int
    token: int
    held: bool
    expires_at: float
    acquired_at: float
    owner: LeaseOwner | None
    damaged_slot: int | None  # a slot that failed its checks (a torn write, or damage)


NO_LEASE = LeaseState(0, 0, False, 0.0, 0.0, None, None)


def encoded_owner(owner: LeaseOwner) -> bytes:
    """The owner as a slot holds it; InvalidSetting for one a reader would refuse."""
    owner_raw = owner.to_json()
    if len(owner_raw) > MAX_OWNER_BYTES:
        raise InvalidSetting(f"lease owner encodes to {len(owner_raw)} bytes, over "
                             f"{MAX_OWNER_BYTES}; use a shorter label")
    return owner_raw


def encode_slot(generation: int, token: int, held: bool, expires_at: float,
                acquired_at: float, owner: LeaseOwner) -> bytes:
    owner_raw = encoded_owner(owner)
    head = _SLOT.pack(_MAGIC, LEASE_MAJOR, LEASE_MINOR, generation, token,
                      HELD if held else RELEASED, expires_at, acquired_at, len(owner_raw))
    body = (head + owner_raw).ljust(SLOT_SIZE - 4, b"\0")
    return body + struct.pack("<I", crc32c(body))


def _decode_slot(raw: bytes, path: str, offset: int) -> LeaseState:
    if len(raw) != SLOT_SIZE or raw[:8] != _MAGIC:
        raise CorruptionError("lease slot has no magic", path=path, offset=offset)
    (crc,) = struct.unpack("<I", raw[-4:])
    if crc != crc32c(raw[:-4]):
        raise CorruptionError("lease slot checksum mismatch", path=path, offset=offset)
    _, major, _, generation, token, state, expires, acquired, owner_len = _SLOT.unpack(
        raw[:_SLOT.size])
    if major > LEASE_MAJOR:
        raise FormatVersionError(f"{path}: lease format {major} is newer than this fsstore "
                                 f"reads ({LEASE_MAJOR}); upgrade fsstore")
    if state not in (HELD, RELEASED) or owner_len > MAX_OWNER_BYTES:
        raise CorruptionError("lease slot is malformed", path=path, offset=offset)
    try:
        owner = LeaseOwner.from_json(raw[_SLOT.size:_SLOT.size + owner_len])
    except ValueError as exc:
        raise CorruptionError(f"lease owner is not readable ({exc})", path=path,
                              offset=offset) from None
    return LeaseState(generation, token, state == HELD, expires, acquired, owner, None)


def read_lease(io: FileIO, path: str, fd: int | None = None) -> LeaseState:
    """The lease file's newest valid slot; NO_LEASE when there is no file yet. Raises
    CorruptionError when neither slot is valid (see ``Store.reset_lease``). ``fd``: the
    file, open already (see :class:`LeaseFile`)."""
    try:
        raw = (io.read_file(path, 2 * SLOT_SIZE) if fd is None
               else io.pread(fd, 2 * SLOT_SIZE + 1, 0))
    except FileNotFoundError:
        return NO_LEASE
    except ValueError:
        raw = b"-" * (2 * SLOT_SIZE + 1)
    if len(raw) != 2 * SLOT_SIZE:
        # The first claim creates the file whole (by rename) and slots are rewritten in
        # place, so a file of any other size was cut or padded after it was written: a
        # cut-off slot must not read as "never written" and hand back an older lease.
        raise CorruptionError(f"lease file is {'larger' if len(raw) > 2 * SLOT_SIZE else 'smaller'}"
                              f" than the {2 * SLOT_SIZE} bytes of its two slots", path=path)
    found: list[LeaseState] = []
    damaged = None
    why = ""
    for slot in (0, 1):
        chunk = raw[slot * SLOT_SIZE:(slot + 1) * SLOT_SIZE]
        if not chunk.strip(b"\0"):
            continue  # never written
        try:
            found.append(_decode_slot(chunk, path, slot * SLOT_SIZE))
        except CorruptionError as exc:
            damaged, why = slot, f" ({exc.reason})"
    if not found:
        raise CorruptionError(
            f"neither lease slot is valid{why}, so the last fencing token is unknown; restore the "
            "file from a backup, or reset the lease (Store.reset_lease, `fsstore lease "
            "--reset`), which issues tokens above any a counter could have reached",
            path=path, offset=0 if damaged is None else damaged * SLOT_SIZE)
    best = max(found, key=lambda s: s.generation)
    return best._replace(damaged_slot=damaged)


def write_lease(io: FileIO, path: str, current: LeaseState, token: int, held: bool,
                expires_at: float, acquired_at: float, owner: LeaseOwner,
                durable: bool = True, fd: int | None = None) -> LeaseState:
    """Write the next generation into the slot the current one is not in, fdatasynced
    when ``durable``. The first write creates the file whole (by rename)."""
    generation = current.generation + 1
    slot = encode_slot(generation, token, held, expires_at, acquired_at, owner)
    offset = (generation % 2) * SLOT_SIZE
    if current.generation == 0 and fd is None and not io.exists(path):
        data = bytearray(2 * SLOT_SIZE)
        data[offset:offset + SLOT_SIZE] = slot
        io.atomic_write(path, bytes(data))
    else:
        handle = io.open(path, os.O_WRONLY) if fd is None else fd
        try:
            io.pwrite(handle, slot, offset)
            if durable:
                io.fdatasync(handle)
        finally:
            if fd is None:
                io.close(handle)
    return LeaseState(generation, token, held, expires_at, acquired_at, owner, None)


class LeaseFile:
    """A session's lease file kept open between operations, used under the session's
    mutex. The file is replaced only when the first claim creates it, when a reset
    replaces an unreadable one, and when the session is deleted and made again (the
    mutex then reopens its lock file too: ``SessionMutex.epoch``). It is never
    stat'ed on the way to a write: a stat of the file just before its fdatasync makes
    that fdatasync about 40% slower on ext4."""

    def __init__(self, io: FileIO, session_path: str, mutex: SessionMutex) -> None:
        self.io = io
        self.path = layout.lease_path(session_path)
        self.mutex = mutex
        self._fd: int | None = None
        self._epoch = -1

    def fd(self) -> int | None:
        """The open file, or None when there is none (yet, or any more)."""
        if self._fd is not None and os.fstat(self._fd).st_nlink == 0:
            # Deleted, or replaced by a rename (a reset, a restore): what the open file
            # says is no longer the lease. One fstat, no path lookup.
            self.close()
        if self._fd is None or self._epoch != self.mutex.epoch:
            self.close()
            try:
                self._fd = self.io.open(self.path, os.O_RDWR)
            except FileNotFoundError:
                return None
            self._epoch = self.mutex.epoch
        return self._fd

    def read(self) -> LeaseState:
        """The lease state; reopens once when what the open file holds is unreadable
        (another process may have reset the lease, replacing the file)."""
        fd = self.fd()
        if fd is None:
            return NO_LEASE  # no file when fd() looked: not looked up a second time
        try:
            return read_lease(self.io, self.path, fd)
        except CorruptionError:
            self.close()
            return read_lease(self.io, self.path, self.fd())

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            self.io.close(fd)


# --- the token record in writer.lock -------------------------------------------------------

_TOKEN = struct.Struct("<8sHHQQ")  # magic major minor generation token; then crc32c
_TOKEN_MAGIC = b"FSTOKEN1"
TOKEN_SLOT_SIZE = _TOKEN.size + 4  # 32
TOKEN_RECORD_SIZE = 2 * TOKEN_SLOT_SIZE  # generations alternate slots, as in the lease


class TokenRecord(NamedTuple):
    """What ``writer.lock`` says of the fencing tokens issued: the highest one (None when
    it holds none: no claim recorded one yet), the generation it was written under, and
    a slot that failed its checks. One damaged slot costs a token: a torn write is the
    newest, of a claim that never got to write the lease file, so the other slot holds
    the last token issued, or the damaged one held one more; claims skip it. With both
    damaged, the last token is ``unknown``."""

    token: int | None
    generation: int = 0
    damaged_slot: int | None = None
    unknown: bool = False


def encode_token_slot(generation: int, token: int) -> bytes:
    body = _TOKEN.pack(_TOKEN_MAGIC, LEASE_MAJOR, LEASE_MINOR, generation, token)
    return body + struct.pack("<I", crc32c(body))


def decode_token_record(raw: bytes, path: str) -> TokenRecord:
    found: list[tuple[int, int]] = []
    damaged: list[int] = []
    for slot in (0, 1):
        chunk = raw[slot * TOKEN_SLOT_SIZE:(slot + 1) * TOKEN_SLOT_SIZE]
        if not chunk.strip(b"\0"):
            continue  # never written (an empty lock file has no record yet)
        if len(chunk) < TOKEN_SLOT_SIZE or chunk[:8] != _TOKEN_MAGIC or struct.unpack(
                "<I", chunk[-4:])[0] != crc32c(chunk[:-4]):
            damaged.append(slot)
            continue
        _, major, _, generation, token = _TOKEN.unpack(chunk[:_TOKEN.size])
        if major > LEASE_MAJOR:
            raise FormatVersionError(f"{path}: token record format {major} is newer than "
                                     f"this fsstore reads ({LEASE_MAJOR}); upgrade fsstore")
        found.append((generation, token))
    damaged_slot = damaged[0] if damaged else None
    if not found:
        # Both slots damaged: the last token is unknown. One damaged and the other never
        # written: the first record's write was torn, by a claim that never completed.
        return TokenRecord(None, 0, damaged_slot, unknown=len(damaged) == 2)
    generation, token = max(found)
    return TokenRecord(token, generation, damaged_slot)


def read_token_record(io: FileIO, lock_path: str, fd: int | None = None) -> TokenRecord:
    """The token record of ``writer.lock`` (``fd``: the file, open already)."""
    if fd is not None:
        return decode_token_record(io.pread(fd, TOKEN_RECORD_SIZE, 0), lock_path)
    try:
        handle = io.open(lock_path, os.O_RDONLY)
    except FileNotFoundError:
        return TokenRecord(None)
    try:
        return decode_token_record(io.pread(handle, TOKEN_RECORD_SIZE, 0), lock_path)
    finally:
        io.close(handle)


def tokens_in_log(io: FileIO, session_path: str, after_seq: int = 0) -> int:
    """The highest token the session's lease records after ``after_seq`` name (0: none).
    Reads the whole log, but decodes only the frames holding a lease record."""
    best = 0
    reader = unchecked_reader(io, layout.log_dir(session_path))  # chained or not
    for scan in reader.scans(after_seq, math.inf, LEASE_RECORD.encode()):
        for event in scan:
            if (event.seq > after_seq and event.kind == LEASE_RECORD
                    and isinstance(event.data, dict)):
                token = event.data.get("token")
                if isinstance(token, int) and not isinstance(token, bool):
                    best = max(best, token)
    return best


def _record_token(file: LeaseFile, record: TokenRecord, token: int) -> None:
    """Write ``token`` into writer.lock, in the slot ``record``'s newest is not in, and
    fdatasync it, before the lease file says it: then no later claim can issue it again,
    whatever becomes of the lease file. A crash in between leaves the record ahead of
    the lease file, which only skips a token."""
    fd = file.mutex.fd
    generation = record.generation + 1
    file.io.pwrite(fd, encode_token_slot(generation, token), (generation % 2) * TOKEN_SLOT_SIZE)
    file.io.fdatasync(fd)


# --- the per-operation mutex -----------------------------------------------------------------


class SessionMutex:
    """``writer.lock`` taken for one operation at a time: flock(2) on a descriptor kept
    open (1 µs, where opening the file each time costs 60 µs), re-entrant within a
    thread, serialised between threads. The same flock an exclusive writer holds, so the
    two exclude each other."""

    def __init__(self, path: str, session_id: str) -> None:
        self.path = path
        self.session_id = session_id
        self._fd: int | None = None
        self._threads = threading.RLock()
        self._depth = 0
        self.epoch = 0  # counts reopenings of the lock file (a re-created session)

    def acquire(self, timeout: float) -> None:
        if not self._threads.acquire(timeout=max(timeout, 0) if timeout >= 0 else -1):
            raise SessionLocked(f"session {self.session_id!r} is busy in another thread")
        if self._depth:
            self._depth += 1
            return
        try:
            self._lock_file(timeout)
        except BaseException:
            self._threads.release()
            raise
        self._depth = 1

    def _lock_file(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout if timeout >= 0 else math.inf
        # Holders keep it for about one fdatasync (100-200 us): poll about that often.
        pause = 0.00001
        while True:
            if self._fd is None:
                self.epoch += 1
                self._fd = _open_lock_file(self.path, self.session_id)
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise os_error(exc, self.path, classify=False) from None
                if time.monotonic() >= deadline:
                    raise SessionLocked(
                        f"session {self.session_id!r} is being written by another writer "
                        f"(waited {timeout:g} s for {self.path})") from None
                time.sleep(pause)
                pause = min(pause * 2, 0.0001)
                continue
            # A deleted and re-created session has a new lock file: lock that one.
            if _same_file(self._fd, self.path):
                return
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
            if not os.path.exists(os.path.dirname(self.path)):
                raise SessionNotFound(f"session {self.session_id!r} was deleted")

    @property
    def fd(self) -> int:
        """The lock file's descriptor; only while the mutex is held."""
        assert self._fd is not None and self._depth
        return self._fd

    @property
    def depth(self) -> int:
        """How many nested acquires the holding thread has made (0: not held)."""
        return self._depth

    def release(self) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._threads.release()

    def close(self, lease_file: LeaseFile | None = None) -> None:
        """Close the lock file (and ``lease_file``, kept with it) once no thread of this
        process is inside an operation; another process's flock is not waited for."""
        with self._threads:
            if lease_file is not None:
                lease_file.close()
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> SessionMutex:
        self.acquire(-1)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _open_lock_file(path: str, session_id: str) -> int:
    """Open (creating) a session's ``writer.lock`` as every store file is opened: never
    through a symlink (a dangling one would otherwise create its target outside the
    store), never a FIFO or a folder."""
    try:
        fd = open_regular(path, os.O_RDWR)
    except FileNotFoundError:
        try:
            fd = open_regular(path, os.O_RDWR | os.O_CREAT)
        except FileNotFoundError:
            raise SessionNotFound(f"session {session_id!r} was deleted (no folder for "
                                  f"{path})") from None
        # Its name must outlive a power loss: the token record (16.4) is kept in it.
        FileIO().fsync_dir(os.path.dirname(path))
    return fd


def _same_file(fd: int, path: str) -> bool:
    """Whether the open ``fd`` is still the file named ``path`` (lstat: a symlink put in
    its place is another file)."""
    held = os.fstat(fd)
    try:
        current = os.lstat(path)
    except FileNotFoundError:
        return False
    return (held.st_dev, held.st_ino) == (current.st_dev, current.st_ino)


class WriterLock:
    """``writer.lock`` held by one exclusive writer from :meth:`acquire` to
    :meth:`release`, which may run on another thread (``Session.aclose``). The same
    flock(2) :class:`SessionMutex` takes, so the two exclude each other."""

    def __init__(self, path: str, session_id: str) -> None:
        self.path = path
        self.session_id = session_id
        self._fd: int | None = None
        self._locked = False

    def acquire(self, timeout: float) -> None:
        """Take the lock, waiting up to ``timeout`` seconds (forever if negative); raises
        SessionLocked if it did not come free, SessionNotFound if the session is gone."""
        deadline = time.monotonic() + timeout if timeout >= 0 else math.inf
        pause = 0.0005
        while True:
            if self._fd is None:
                self._fd = _open_lock_file(self.path, self.session_id)
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    self.release()
                    raise os_error(exc, self.path, classify=False) from None
                if time.monotonic() >= deadline:
                    self.release()
                    raise SessionLocked(
                        f"session {self.session_id!r} is being written by another writer "
                        f"(waited {timeout:g} s for {self.path})") from None
                time.sleep(pause)  # an exclusive writer may hold it for hours: poll gently
                pause = min(pause * 2, 0.02)
                continue
            # A delete renames the session folder away while holding this lock. A writer
            # that opened the lock file before the rename and waited would now hold a lock
            # on the deleted session: refuse it, or two writers could run (one on a new
            # session of the same id).
            self._locked = True
            if _same_file(self._fd, self.path):
                return
            self.release()
            if not os.path.isdir(os.path.dirname(self.path)):
                raise SessionNotFound(f"session {self.session_id!r} was deleted")
            raise SessionNotFound(f"session {self.session_id!r} was deleted and made again")

    @property
    def is_locked(self) -> bool:
        return self._locked

    def release(self) -> None:
        """Unlock and close. Unlocked explicitly: a child forked meanwhile shares the
        descriptor, and closing ours alone would leave the flock held."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                if self._locked:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                self._locked = False
                os.close(fd)


# --- leases ---------------------------------------------------------------------------------


class Lease(NamedTuple):
    """A held lease: present it (``Store.open_session(id, lease=...)``) to write."""

    session_id: str
    owner: LeaseOwner
    token: int
    expires_at: float
    ttl: float


class ClaimOutcome(NamedTuple):
    """What a claim found.

    - ``status == "acquired"``: the lease was free (or already this owner's); ``lease``.
    - ``status == "taken_over"``: its holder was dead or its lease expired; ``lease``
      with a new token, and the ``previous`` holder.
    - ``status == "held"``: another owner holds it; ``holder`` and ``expires_at``.
    """

    status: str
    lease: Lease | None = None
    holder: LeaseOwner | None = None
    expires_at: float | None = None
    previous: LeaseOwner | None = None


def check_ttl(ttl: object) -> float:
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl <= MAX_TTL:
        raise InvalidSetting(f"a lease ttl is a number of seconds in (0, {MAX_TTL:g}], "
                             f"not {ttl!r}")
    return float(ttl)


def claim(file: LeaseFile, session_id: str, owner: LeaseOwner, ttl: float) -> ClaimOutcome:
    """Claim the lease; call with the session's mutex held.

    The new token is above the lease file's and above the token record in writer.lock,
    so a lease file deleted or restored from an older backup never makes a token come
    back. With no lease file and a damaged token record, the last token is unknown:
    CorruptionError, until ``reset`` (``Store.reset_lease``)."""
    io, path = file.io, file.path
    encoded_owner(owner)  # refuse an owner no reader could read before writing anything
    current = file.read()
    fd = file.fd()
    record = read_token_record(io, file.mutex.path, file.mutex.fd)
    if record.unknown and fd is None:
        raise CorruptionError(
            "the lease file is missing and the token record in writer.lock is damaged, so "
            "the last fencing token is unknown; restore the lease file from a backup, or "
            "reset the lease (Store.reset_lease, `fsstore lease --reset`)",
            path=file.mutex.path, offset=0)
    # A damaged slot may have held one token more than the valid one (as in 16.3): skip it.
    issued = (record.token or 0) + (1 if record.damaged_slot is not None else 0)
    if fd is None:
        # No lease file: new, deleted, or left out of a restore. The token record (or,
        # without one, the log's lease records) says which tokens were issued.
        issued = max(issued, tokens_in_log(io, os.path.dirname(path)))
    if issued > current.token:
        # The lease file is missing or older than the tokens issued: what it says of the
        # holder is lost or stale. Fence everyone: a new token above all of them.
        current = current._replace(held=False, owner=None)
    now = clock.now()
    holder = current.owner
    if current.held and holder is not None and holder != owner:
        alive = holder.alive()
        if alive is not False and now < current.expires_at:
            return ClaimOutcome("held", holder=holder, expires_at=current.expires_at)
        previous: LeaseOwner | None = holder
    else:
        previous = None
    if current.held and holder == owner:
        token = current.token  # claimed again by its holder: a renewal
    else:
        # A slot that failed its checks may have held a token one above the valid one:
        # skip it, so that no token is ever handed out twice.
        token = max(current.token + (2 if current.damaged_slot is not None else 1),
                    issued + 1)
    if token > issued:
        _record_token(file, record, token)
    expires = now + ttl
    write_lease(io, path, current, token, True, expires,
                current.acquired_at if token == current.token else now, owner, fd=fd)
    lease = Lease(session_id, owner, token, expires, ttl)
    return ClaimOutcome("taken_over" if previous is not None else "acquired", lease=lease,
                        previous=previous)


def check_current(file: LeaseFile, lease: Lease) -> LeaseState:
    """Raise LeaseLost unless ``lease`` is the session's current, unexpired lease. Call
    with the session's mutex held: then nothing can change it before the write."""
    state = file.read()
    record = read_token_record(file.io, file.mutex.path, file.mutex.fd)
    if record.token is not None and record.token > state.token:
        # The lease file is older than the tokens issued (restored from a backup): the
        # holder it names may be long gone, or paused. Nobody passes until a new claim.
        state = state._replace(held=False)
    if not state.held or state.token != lease.token:
        who = (f"{state.owner.label or 'pid ' + str(state.owner.pid)} (token {state.token})"
               if state.held and state.owner else "nobody")
        raise LeaseLost(f"session {lease.session_id!r}: lease token {lease.token} is no "
                        f"longer current (held by {who}); nothing was written: claim the "
                        "lease again and reopen the session", token=lease.token,
                        current=state.token)
    if clock.now() >= state.expires_at:
        raise LeaseLost(f"session {lease.session_id!r}: lease token {lease.token} expired "
                        f"{clock.now() - state.expires_at:.3f} s ago; nothing was written: "
                        "renew it (if nobody took it over) and retry", token=lease.token,
                        current=state.token)
    return state


def renew(file: LeaseFile, lease: Lease, ttl: float | None) -> Lease:
    """Extend ``lease``; call with the mutex held. An expired lease nobody took over is
    renewed too; a lease another owner took over raises LeaseLost."""
    io, path = file.io, file.path
    state = file.read()
    fd = file.fd()
    if not state.held or state.token != lease.token:
        check_current(file, lease)  # raises, saying who holds it
    span = lease.ttl if ttl is None else check_ttl(ttl)
    expires = clock.now() + span
    # Not fsynced: only a power loss or an OS crash could take a renewal back, and either
    # ends every process on this host that could hold the lease. A lost renewal at worst
    # lets the lease expire sooner; it never lets a token be handed out twice.
    write_lease(io, path, state, state.token, True, expires, state.acquired_at, lease.owner,
                durable=False, fd=fd)
    return lease._replace(expires_at=expires, ttl=span)


def release(file: LeaseFile, lease: Lease) -> bool:
    """Give the lease up; call with the mutex held. False if it was no longer ours."""
    io, path = file.io, file.path
    state = file.read()
    fd = file.fd()
    if not state.held or state.token != lease.token:
        return False
    # Not fsynced either: a release a crash takes back leaves a lease held by a process
    # that is gone (taken over at once on this host) or one that expires.
    write_lease(io, path, state, state.token, False, clock.now(), state.acquired_at,
                lease.owner, durable=False, fd=fd)
    return True


def reset(io: FileIO, session_path: str, owner: LeaseOwner,
          file: LeaseFile | None = None) -> int:
    """Replace a lease file neither of whose slots is valid (or a missing one, when the
    token record in writer.lock is damaged). The new token is the time in microseconds,
    above any token a counter starting at 1 could have reached; ``file`` (under the
    mutex) records it in writer.lock too."""
    path = layout.lease_path(session_path)
    token = int(time.time() * 1_000_000)
    if file is not None:  # a fresh token record: the new token, and the other slot empty
        fd = file.mutex.fd
        io.pwrite(fd, bytes(TOKEN_SLOT_SIZE) + encode_token_slot(1, token), 0)
        io.fdatasync(fd)
    slot = encode_slot(2, token, False, time.time(), time.time(), owner)
    data = bytearray(2 * SLOT_SIZE)
    data[0:SLOT_SIZE] = slot
    io.atomic_write(path, bytes(data))
    return token


def needs_reset(io: FileIO, session_path: str, file: LeaseFile) -> bool:
    """Whether the last fencing token is unknown (see ``reset``); call under the mutex."""
    try:
        current = read_lease(io, layout.lease_path(session_path))
    except CorruptionError:
        return True
    record = read_token_record(io, file.mutex.path, file.mutex.fd)
    return record.unknown and current.generation == 0


def check(io: FileIO, session_path: str, forked_at: int = 0) -> list[Finding]:
    """What ``verify`` reports of a session's lease file and the token record in its
    writer.lock. Reads only; takes no lock. A fork's history up to ``forked_at`` holds
    its parent's lease records, which say nothing of the fork's own lease file."""
    path = layout.lease_path(session_path)
    lock_path = layout.writer_lock_path(session_path)
    findings: list[Finding] = []
    try:
        record = read_token_record(io, lock_path)
    except FormatVersionError as exc:
        return [Finding("problem", lock_path, 0, str(exc))]
    try:
        current = read_lease(io, path)
    except (CorruptionError, FormatVersionError) as exc:
        reason = exc.reason if isinstance(exc, CorruptionError) else str(exc)
        return [Finding("problem", path, getattr(exc, "offset", None), reason)]
    missing = current.generation == 0 and not io.exists(path)
    try:
        logged = tokens_in_log(io, session_path, forked_at)
    except (CorruptionError, FormatVersionError, OSError):
        logged = 0  # the log's own check reports it
    issued = max(record.token or 0, logged)
    if current.damaged_slot is not None:
        findings.append(Finding(
            "note", path, current.damaged_slot * SLOT_SIZE,
            "one lease slot is damaged (a torn write); the other is used, and the next "
            "claim skips a token"))
    if record.unknown:
        findings.append(Finding(
            "problem" if missing else "note", lock_path, 0,
            "both slots of the fencing token record are damaged; "
            + ("with the lease file missing, the last token is unknown: claims are refused "
               "until the lease is reset (`fsstore lease --reset`)" if missing else
               "the lease file's token is used, and the next claim rewrites the record")))
    elif record.damaged_slot is not None:
        findings.append(Finding(
            "note", lock_path, record.damaged_slot * TOKEN_SLOT_SIZE,
            "one slot of the fencing token record is damaged (a torn write); the other is "
            "used, and the next claim rewrites it"))
    if issued and missing and not record.unknown:
        findings.append(Finding(
            "problem", path, None,
            f"the lease file is missing, though leases with tokens up to {issued} were "
            "issued (the log or writer.lock records it): who holds the lease, and until "
            f"when, is lost; holders are fenced, and the next claim issues token "
            f"{issued + 1}"))
    elif issued > current.token and not missing:
        findings.append(Finding(
            "problem", path, None,
            f"the lease file says token {current.token}, but tokens up to {issued} were "
            "issued (the log or writer.lock records it): it is older than the lease "
            "(restored from a backup?); holders are fenced, and the next claim issues a "
            "token above them"))
    return findings
