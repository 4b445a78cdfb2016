"""Snapshot and checkpoint files: a session's state frozen at a seq, checksummed.

Format (docs/FORMAT.md, section 11)::

    file   = header(80 bytes) meta(meta_len bytes) body(body_len bytes)
    header = magic "\\x89FSSNAP\\n" major:u16 minor:u16 kind:u32 seq:u64 log_start:u64
             segment:u64 offset:u64 created_ns:u64 meta_len:u32 meta_crc:u32
             body_len:u32 body_crc:u32 frame_crc:u32 header_crc:u32

``meta`` is a small msgpack map (a checkpoint's id, label and kind), read alone when
checkpoints are listed. ``body`` is the msgpack image: the state and the recent commit
ids. (segment, offset, frame_crc) is the log position right after ``seq``: loading
reads only the log after it, once the frame ending there proves to be the one the state
was folded up to.

Snapshots live in ``state/`` and are a cache: a missing, torn or damaged one is skipped
for an older one or a replay of the log. Checkpoints live in ``checkpoints/`` and are
kept until deleted. Both are written whole under a temp name, fsynced and renamed in.

A chained session's snapshots and checkpoints (minor 2) are bound to its hash chain: their
meta holds ``chain`` (the chain value at their position) and ``mac``
(``chain_bindings.py``, FORMAT.md 3.4). Those of a session without a chain are as before.
"""

from __future__ import annotations

import os
import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from . import chain_bindings, layout
from .checksum import crc32c
from .errors import CorruptionError, FormatVersionError, InvalidSetting, InvalidState
from .fsio import FileIO
from .identity import NO_UID, Identity
from .identity import parse as parse_uid
from .identity import to_text as uid_text
from .log import LogPosition
from .log_format import refuse_msgpack_ext
from .nesting import MAX_NESTING, too_deep

if TYPE_CHECKING:
    from .chain_bindings import SnapshotSeal
    from .chain_check import ChainRules

SNAPSHOT_MAGIC = b"\x89FSSNAP\n"
SNAPSHOT_MAJOR = 1
SNAPSHOT_MINOR = 1  # 1.1: meta names the session ("uid")
CHAINED_MINOR = 2  # 1.2: a chained session's, bound to its chain ("chain", "mac")
KIND_SNAPSHOT = 1
KIND_CHECKPOINT = 2
_HEADER = struct.Struct("<8sHHIQQQQQIIIIII")
HEADER_SIZE = _HEADER.size  # 80
MAX_META_BYTES = 1 << 20
#: A snapshot body larger than this is not read (the whole state is held in memory).
MAX_BODY_BYTES = (1 << 32) - 1

_encoder = msgspec.msgpack.Encoder()


_decoder = msgspec.msgpack.Decoder(ext_hook=refuse_msgpack_ext)
#: A snapshot's meta and body nest at most this deep: the state's values come from
#: records (at most MAX_NESTING deep, the values 6 levels down) and sit 2 levels down.
MAX_SNAPSHOT_NESTING = MAX_NESTING + 8


@dataclass(frozen=True)
class SnapshotPolicy:
    """When a session's writer snapshots its state, and what it keeps.

    A snapshot is taken when ``every_events`` events or ``every_bytes`` bytes of log
    were written since the last one (None: never by that measure), on ``snapshot()``,
    and never more often than that. The newest ``keep`` snapshots are kept. The ids of
    the last ``commit_ids`` commits are remembered, to make commits with a commit id
    idempotent.
    """

    every_events: int | None = 50_000
    every_bytes: int | None = 16 << 20
    keep: int = 3
    commit_ids: int = 10_000

    def __post_init__(self) -> None:
        for name in ("every_events", "every_bytes"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise InvalidSetting(f"snapshot {name} must be an int >= 1 or None, not "
                                     f"{value!r}")
        for name in ("keep", "commit_ids"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidSetting(f"snapshot {name} must be an int >= 1, not {value!r}")


class SnapshotHeader(NamedTuple):
    minor: int
    kind: int
    seq: int  # the last seq the state covers
    log_start: int  # the log start of the history it was folded from
    position: LogPosition  # the log position right after seq
    created_ns: int
    meta_len: int
    meta_crc: int
    body_len: int
    body_crc: int


class SnapshotFile(NamedTuple):
    """A decoded, checksum-verified snapshot or checkpoint file."""

    header: SnapshotHeader
    meta: dict[str, Any]
    body: dict[str, Any]


def encode(
    kind: int, seq: int, log_start: int, position: LogPosition, meta: dict[str, Any],
    body: dict[str, Any], seal: SnapshotSeal | None = None,
) -> bytes:
    """The file of a snapshot (``kind``) or checkpoint; ``seal`` binds it to a chained
    session's chain (minor 2), None for a session without a chain."""
    body_raw = _encoder.encode(body)
    if len(body_raw) > MAX_BODY_BYTES:
        raise InvalidState(f"the state encodes to {len(body_raw)} bytes, over the "
                           f"{MAX_BODY_BYTES} a snapshot holds; keep large values as "
                           "attachments")
    minor = SNAPSHOT_MINOR
    if seal is not None:
        minor = CHAINED_MINOR
        meta = {**meta, chain_bindings.CHAIN_KEY: chain_bindings.recorded_link(position,
                                                                             seal.link)}
        tag = chain_bindings.snapshot_mac(seal.mac, kind, seq, log_start, position,
                                          seal.uid, _encoder.encode(meta), body_raw)
        meta[chain_bindings.MAC_KEY] = tag
    meta_raw = _encoder.encode(meta)
    fields = _HEADER.pack(
        SNAPSHOT_MAGIC, SNAPSHOT_MAJOR, minor, kind, seq, log_start,
        position.segment, position.offset, time.time_ns(), len(meta_raw), crc32c(meta_raw),
        len(body_raw), crc32c(body_raw), position.frame_crc, 0,
    )[:-4]
    return b"".join((fields, struct.pack("<I", crc32c(fields)), meta_raw, body_raw))


def decode_header(raw: bytes, path: str) -> SnapshotHeader:
    if len(raw) < HEADER_SIZE:
        raise CorruptionError("snapshot header is cut short", path=path, offset=0)
    (magic, major, minor, kind, seq, log_start, segment, offset, created_ns, meta_len,
     meta_crc, body_len, body_crc, frame_crc, header_crc) = _HEADER.unpack_from(raw)
    if magic != SNAPSHOT_MAGIC:
        raise CorruptionError("not an fsstore snapshot (bad magic)", path=path, offset=0)
    if crc32c(raw[: HEADER_SIZE - 4]) != header_crc:
        raise CorruptionError("snapshot header checksum mismatch", path=path, offset=0)
    if major > SNAPSHOT_MAJOR:
        raise FormatVersionError(
            f"{path}: snapshot format {major}.{minor} is newer than the "
            f"{SNAPSHOT_MAJOR}.{SNAPSHOT_MINOR} this fsstore reads; upgrade fsstore to read it")
    if meta_len > MAX_META_BYTES:
        raise CorruptionError(f"snapshot meta length {meta_len} is over the limit", path=path,
                              offset=0)
    return SnapshotHeader(minor, kind, seq, log_start,
                          LogPosition(segment, offset, frame_crc), created_ns, meta_len,
                          meta_crc, body_len, body_crc)


def _decode_map(raw: bytes, what: str, path: str, offset: int) -> dict[str, Any]:
    try:
        value = _decoder.decode(raw)
    except (msgspec.DecodeError, ValueError, RecursionError) as exc:
        reason = (f"nests deeper than {MAX_SNAPSHOT_NESTING} levels"
                  if isinstance(exc, RecursionError) else f"does not decode: {exc}")
        raise CorruptionError(f"snapshot {what} {reason}", path=path, offset=offset) from None
    if not isinstance(value, dict):
        raise CorruptionError(f"snapshot {what} is not a map", path=path, offset=offset)
    if too_deep(raw, value, MAX_SNAPSHOT_NESTING):
        raise CorruptionError(f"snapshot {what} nests deeper than {MAX_SNAPSHOT_NESTING} "
                              "levels", path=path, offset=offset)
    return value


def _check_place(header: SnapshotHeader, path: str) -> None:
    """A snapshot's header must agree with its file's name and folder: ``state/SEQ20.snap``
    holds a snapshot of seq SEQ20, ``checkpoints/ID.ckpt`` a checkpoint (whose meta names
    ID, checked where checkpoints are listed)."""
    folder, name = os.path.split(path)
    folder = os.path.basename(folder)
    if folder == layout.STATE_DIR and layout.snapshot_seqs([name]):
        (seq,) = layout.snapshot_seqs([name])
        if header.kind != KIND_SNAPSHOT or header.seq != seq:
            raise CorruptionError(
                f"the file is named after seq {seq}, but its header says a "
                f"{'snapshot' if header.kind == KIND_SNAPSHOT else 'non-snapshot'} of seq "
                f"{header.seq}: it was renamed or put here from elsewhere", path=path,
                offset=0)
    elif folder == layout.CHECKPOINTS_DIR and header.kind != KIND_CHECKPOINT:
        raise CorruptionError("a file in checkpoints/ whose header is not a checkpoint's",
                              path=path, offset=0)


def _check_identity(header: SnapshotHeader, meta: dict[str, Any], path: str,
                    identity: Identity | None) -> None:
    """A 1.1 snapshot's meta names the session that wrote it; 1.0 ones carry nothing."""
    if identity is None or header.minor < 1:
        return
    uid = parse_uid(meta["uid"], path) if "uid" in meta else NO_UID
    identity.check(uid, "snapshot", path, HEADER_SIZE)


def read(io: FileIO, path: str, *, with_body: bool = True,
         identity: Identity | None = None, chain: ChainRules | None = None) -> SnapshotFile:
    """Read and verify a snapshot or checkpoint file (only its header and meta when
    ``with_body`` is False): its checksums, that its header agrees with its file name
    and folder, and (given the session's ``identity``) that the session wrote it; given
    the session's ``chain``, its MAC (with the body only: a listing hashes no body).
    Raises CorruptionError naming the file and offset (ChainBindingBroken for the MAC),
    or FileNotFoundError."""
    fd = io.open(path, os.O_RDONLY)
    try:
        size = io.size(fd)
        header = decode_header(io.pread(fd, HEADER_SIZE, 0), path)
        _check_place(header, path)
        # Lengths are checked against the file's size before anything is allocated.
        expected = HEADER_SIZE + header.meta_len + header.body_len
        if size != expected:
            raise CorruptionError(f"snapshot file is {size} bytes, its header says {expected} "
                                  "(torn or damaged)", path=path, offset=0)
        meta_raw = io.pread(fd, header.meta_len, HEADER_SIZE)
        body_raw = (io.pread(fd, header.body_len, HEADER_SIZE + header.meta_len)
                    if with_body else b"")
    finally:
        io.close(fd)
    if crc32c(meta_raw) != header.meta_crc:
        raise CorruptionError("snapshot meta checksum mismatch", path=path, offset=HEADER_SIZE)
    meta = _decode_map(meta_raw, "meta", path, HEADER_SIZE)
    _check_identity(header, meta, path, identity)
    chain_bindings.check_snapshot_meta(chain is not None, header.minor, meta, path,
                                       HEADER_SIZE)
    body: dict[str, Any] = {}
    if with_body:
        body_offset = HEADER_SIZE + header.meta_len
        if crc32c(body_raw) != header.body_crc:
            raise CorruptionError("snapshot body checksum mismatch", path=path,
                                  offset=body_offset)
        if chain is not None:
            # the meta as it was MAC'd: without its mac (a map keeps its order)
            core = _encoder.encode({k: v for k, v in meta.items()
                                    if k != chain_bindings.MAC_KEY})
            chain_bindings.check_snapshot_mac(
                chain_bindings.snapshot_mac(
                    chain.mac, header.kind, header.seq, header.log_start, header.position,
                    chain_bindings.uid_of(identity), core, body_raw),
                meta, path, HEADER_SIZE)
        body = _decode_map(body_raw, "body", path, body_offset)
    return SnapshotFile(header, meta, body)


# --- the state/ folder -------------------------------------------------------------------


class SnapshotDir:
    """The ``state/`` folder of a session: snapshots named by the seq they cover."""

    def __init__(self, io: FileIO, session_path: str, identity: Identity | None = None,
                 chain: ChainRules | None = None) -> None:
        self.io = io
        self.session_path = session_path
        self.path = layout.state_dir(session_path)
        #: the session's identity: written into each snapshot, checked on reads
        self.identity = identity
        #: the session's chain (FORMAT.md 3.4): each snapshot is bound to it
        self.chain = chain

    def read(self, path: str, *, with_body: bool = True) -> SnapshotFile:
        """Read and verify one of the session's snapshot or checkpoint files."""
        return read(self.io, path, with_body=with_body, identity=self.identity,
                    chain=self.chain)

    def file_path(self, seq: int) -> str:
        return os.path.join(self.path, layout.snapshot_name(seq))

    def seqs(self) -> list[int]:
        """Seqs of the snapshot files present, oldest first (not yet verified)."""
        try:
            return layout.snapshot_seqs(self.io.listdir(self.path))
        except FileNotFoundError:
            return []

    def write(self, seq: int, log_start: int, position: LogPosition,
              body: dict[str, Any], link: bytes | None = None) -> str:
        """Write a snapshot atomically (temp file, fsync, rename, fsync of the folder).
        ``link``: the chain value after ``seq`` (a chained session's writer's head
        link)."""
        ensure_dir(self.io, self.path)
        path = self.file_path(seq)
        meta = _identity_meta(self.identity)
        self.io.atomic_write(path, encode(KIND_SNAPSHOT, seq, log_start, position, meta, body,
                                          _seal(self.chain, self.identity, link)))
        return path

    def prune(self, keep: int) -> None:
        """Remove all but the newest ``keep`` snapshots, and temp files an interrupted
        write left. Removing never loses history: the log holds it."""
        try:
            names = self.io.listdir(self.path)
        except FileNotFoundError:
            return
        seqs = layout.snapshot_seqs(names)
        doomed = [self.file_path(seq) for seq in seqs[: max(len(seqs) - keep, 0)]]
        doomed += [os.path.join(self.path, name) for name in names
                   if name.startswith(layout.TEMP_PREFIX)]
        for path in doomed:
            try:
                self.io.unlink(path)
            except FileNotFoundError:
                pass
        if doomed:
            self.io.fsync_dir(self.path)


def ensure_dir(io: FileIO, path: str) -> None:
    """Create a session's ``state/`` or ``checkpoints/`` folder if it is missing, durably
    (a session made before either existed has neither)."""
    if not io.exists(path):
        try:
            io.mkdir(path)
        except FileExistsError:
            return
        io.fsync_dir(os.path.dirname(path))


# --- the checkpoints/ folder -------------------------------------------------------------

CHECKPOINT_KINDS = ("manual", "turn", "automatic")


class CheckpointInfo(NamedTuple):
    """What ``checkpoints()`` says of one checkpoint."""

    id: str
    label: str | None
    kind: str  # "manual", "turn" or "automatic"
    seq: int  # the head it froze
    created: float  # seconds since the epoch


class CheckpointDir:
    """The ``checkpoints/`` folder of a session: one file per checkpoint, named by id."""

    def __init__(self, io: FileIO, session_path: str, identity: Identity | None = None,
                 chain: ChainRules | None = None) -> None:
        self.io = io
        self.path = layout.checkpoints_dir(session_path)
        self.session_path = session_path
        self.identity = identity
        self.chain = chain

    def file_path(self, checkpoint_id: str) -> str:
        return layout.checkpoint_path(self.session_path, checkpoint_id)

    def ids(self) -> list[str]:
        try:
            return layout.checkpoint_ids(self.io.listdir(self.path))
        except FileNotFoundError:
            return []

    def info(self, checkpoint_id: str) -> CheckpointInfo:
        """Read one checkpoint's header and meta (not its state)."""
        path = self.file_path(checkpoint_id)
        return _checkpoint_info(checkpoint_id, self.read(path, with_body=False), path)

    def read(self, path: str, *, with_body: bool = True) -> SnapshotFile:
        """Read and verify one of the session's checkpoint files."""
        return read(self.io, path, with_body=with_body, identity=self.identity,
                    chain=self.chain)

    def write(self, checkpoint_id: str, label: str | None, kind: str, seq: int, log_start: int,
              position: LogPosition, body: dict[str, Any],
              link: bytes | None = None) -> CheckpointInfo:
        ensure_dir(self.io, self.path)
        created = time.time()
        meta = {"id": checkpoint_id, "label": label, "kind": kind, "created": created,
                **_identity_meta(self.identity)}
        data = encode(KIND_CHECKPOINT, seq, log_start, position, meta, body,
                      _seal(self.chain, self.identity, link))
        self.io.atomic_write(self.file_path(checkpoint_id), data)
        return CheckpointInfo(checkpoint_id, label, kind, seq, created)

    def delete(self, checkpoint_id: str) -> None:
        self.io.unlink(self.file_path(checkpoint_id))
        self.io.fsync_dir(self.path)


def _seal(chain: ChainRules | None, identity: Identity | None,
          link: bytes | None) -> SnapshotSeal | None:
    """What binds a new file of a session with ``chain`` (None: nothing)."""
    if chain is None:
        return None
    if link is None:
        raise ValueError("a chained session's snapshot needs the chain value at its seq")
    return chain_bindings.SnapshotSeal(chain.mac, chain_bindings.uid_of(identity), link)


def _identity_meta(identity: Identity | None) -> dict[str, Any]:
    return {} if identity is None else {"uid": uid_text(identity.uid)}


def _checkpoint_info(checkpoint_id: str, file: SnapshotFile, path: str) -> CheckpointInfo:
    meta = file.meta
    label, kind, created = meta.get("label"), meta.get("kind"), meta.get("created")
    if (file.header.kind != KIND_CHECKPOINT or meta.get("id") != checkpoint_id
            or not isinstance(kind, str) or not isinstance(created, (int, float))
            or not (label is None or isinstance(label, str))):
        raise CorruptionError("checkpoint meta does not match its file name", path=path,
                              offset=HEADER_SIZE)
    return CheckpointInfo(checkpoint_id, label, kind, file.header.seq, float(created))
