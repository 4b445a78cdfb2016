"""Every file and folder name of a store, built and parsed in one place.

A store on disk (see docs/FORMAT.md)::

    STORE/
      fsstore.json                    store manifest
      workspaces/
        WORKSPACE_ID.json             a workspace: name, metadata, member sessions by role
        lock                          the workspace writers' lock (flock; left on disk)
      sessions/
        SESSION_ID/
          session.json                session manifest: title, tags, metadata
          writer.lock                 the writer lock (flock; left on disk)
          lease                       the execution lease: owner, fencing token, expiry
          messages.idx                where each message record is (a cache of the log)
          log/
            00000000000000000001.fslog   segments, named by their first seq
            00000000000000004711.fslog
            tail.hint                    names the newest segment (checked, never trusted)
          state/
            00000000000000004711.snap    state snapshots, named by the seq they cover
          checkpoints/
            CHECKPOINT_ID.ckpt           named states, one file each
          blobs/sha256/AB/DIGEST[.zst]   attachments, named by the SHA-256 of their bytes
          vectors/
            NAME/                        one vector collection
              collection.json              definition and live shards
              wal/                         a log of upserts and deletes not yet sealed
              00000001.vec.npy             a shard's vectors
              00000001.docs                its ids, norms, links, content, metadata
              00000001.00000007.del.npy    its deleted rows, as of manifest generation 7
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable

from .errors import InvalidCheckpointId, InvalidSessionId, InvalidWorkspaceId

STORE_MANIFEST = "fsstore.json"
STATS_CACHE = ".stats-cache"  # a cache, deleted at any time (FORMAT 7.7)
CATALOG = "catalog"  # the store catalog: a cache of listings (FORMAT 24)
CATALOG_JOURNAL = "catalog.log"  # what changed since the catalog was written
SEARCH_DIR = "search"  # the search cache: shards of every session's collection (FORMAT 25)
SESSIONS_DIR = "sessions"
SESSION_MANIFEST = "session.json"
WRITER_LOCK = "writer.lock"
LEASE_FILE = "lease"
MESSAGE_INDEX = "messages.idx"
LOG_DIR = "log"
SEGMENT_SUFFIX = ".fslog"
TORN_SUFFIX = ".torn"
TAIL_HINT = "tail.hint"
STATE_DIR = "state"
SNAPSHOT_SUFFIX = ".snap"
CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_SUFFIX = ".ckpt"
BLOBS_DIR = "blobs"
VECTORS_DIR = "vectors"
COLLECTION_MANIFEST = "collection.json"
WAL_DIR = "wal"
SHARD_DIGITS = 8
VECTORS_SUFFIX = ".vec.npy"
DOCS_SUFFIX = ".docs"
DELETED_SUFFIX = ".del.npy"
SEQ_DIGITS = 20  # enough for any u64 seq, so names sort in log order
WORKSPACES_DIR = "workspaces"
WORKSPACE_SUFFIX = ".json"
WORKSPACE_LOCK = "lock"

# Names that start with a dot are fsstore's own scratch space: temp files awaiting a
# rename, sessions being created or deleted. No session id can start with one.
TEMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
# Not scratch: where a repair copies a session's damaged files before it changes them,
# kept until someone removes it (docs/FORMAT.md, sections 1 and 7.5).
REPAIR_PREFIX = ".repair-"
REPAIR_RECORD = "repair.json"

MAX_SESSION_ID = 128
_SESSION_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}\Z")
# Names Windows reserves for devices, in any case and with any extension ("con.txt"):
# a store copied there could not hold a folder or file of that name.
_RESERVED = re.compile(r"(CON|PRN|AUX|NUL|COM[0-9]|LPT[0-9])(\..*)?\Z", re.IGNORECASE)


def check_session_id(session_id: object, *, new: bool = False) -> str:
    """Return ``session_id`` if it may name a session folder, else raise InvalidSessionId.

    Any id: 1 to 128 of ``A-Z a-z 0-9 . _ -``, not starting with a dot. This rules out
    ``.``, ``..``, path separators, NUL bytes and hidden names, so an id can never reach
    outside ``sessions/``. Existing folders are read under this rule.

    A ``new`` id (creating a session, a fork or a checkpoint) must also be a name every
    platform a store may be copied to can hold: not one Windows reserves for devices
    (``CON``, ``PRN``, ``AUX``, ``NUL``, ``COM0``-``COM9``, ``LPT0``-``LPT9``, in any case,
    alone or before a dot, as in ``nul.txt``), and not ending in a dot (Windows drops
    it). A leading ``-`` is allowed: on the command line, name such an id after ``--``
    (``fsstore show -- -draft``).
    """
    if not isinstance(session_id, str):
        raise InvalidSessionId(f"session id must be a str, not {type(session_id).__name__}")
    shown = session_id if len(session_id) <= 40 else session_id[:40] + "..."
    if not _SESSION_ID.match(session_id):
        raise InvalidSessionId(
            f"invalid session id {shown!r}: use 1 to {MAX_SESSION_ID} characters from "
            "A-Z a-z 0-9 . _ - and do not start with a dot"
        )
    if new and unsafe_on_windows(session_id):
        raise InvalidSessionId(
            f"invalid session id {shown!r}: Windows reserves device names (CON, PRN, AUX, "
            "NUL, COM0-9, LPT0-9, with or without an extension) and drops a final dot, so a "
            "copy of the store there would break; choose another id"
        )
    return session_id


def unsafe_on_windows(name: str) -> bool:
    """True for a name Windows cannot hold as a file or folder: a device name, alone or
    before a dot, in any case; or a name ending in a dot or a space."""
    return bool(_RESERVED.match(name)) or name.endswith((".", " "))


def check_checkpoint_id(checkpoint_id: object, *, new: bool = False) -> str:
    """Return ``checkpoint_id`` if it may name a checkpoint file, else raise
    InvalidCheckpointId. The same rule as session ids."""
    try:
        return check_session_id(checkpoint_id, new=new)
    except InvalidSessionId as exc:
        raise InvalidCheckpointId(str(exc).replace("session id", "checkpoint id")) from None


def check_workspace_id(workspace_id: object, *, new: bool = False) -> str:
    """Return ``workspace_id`` if it may name a workspace file, else raise
    InvalidWorkspaceId. The same rule as session ids."""
    try:
        return check_session_id(workspace_id, new=new)
    except InvalidSessionId as exc:
        raise InvalidWorkspaceId(str(exc).replace("session id", "workspace id")) from None


def new_session_id() -> str:
    """A fresh id that sorts by creation time: ``20261121T055212Z-3fa9c2d1``."""
    import secrets  # here: it loads OpenSSL (hashlib), which readers never need

    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(4)


new_checkpoint_id = new_session_id


def workspaces_dir(root: str) -> str:
    return os.path.join(root, WORKSPACES_DIR)


def workspace_path(root: str, workspace_id: str) -> str:
    """The file of a workspace; the id is checked before it becomes a path."""
    check_workspace_id(workspace_id)
    return os.path.join(root, WORKSPACES_DIR, workspace_id + WORKSPACE_SUFFIX)


def workspace_ids(names: Iterable[str]) -> list[str]:
    """The workspace ids of the file names among ``names``, sorted (temp files, the
    lock and foreign names are none)."""
    ids = []
    for name in names:
        if name.endswith(WORKSPACE_SUFFIX):
            stem = name[: -len(WORKSPACE_SUFFIX)]
            if _SESSION_ID.match(stem):
                ids.append(stem)
    return sorted(ids)


def store_manifest_path(root: str) -> str:
    return os.path.join(root, STORE_MANIFEST)


def sessions_dir(root: str) -> str:
    return os.path.join(root, SESSIONS_DIR)


def session_dir(root: str, session_id: str) -> str:
    return os.path.join(root, SESSIONS_DIR, check_session_id(session_id))


def session_manifest_path(session_path: str) -> str:
    return os.path.join(session_path, SESSION_MANIFEST)


def message_index_path(session_path: str) -> str:
    return os.path.join(session_path, MESSAGE_INDEX)


def writer_lock_path(session_path: str) -> str:
    return os.path.join(session_path, WRITER_LOCK)


def lease_path(session_path: str) -> str:
    return os.path.join(session_path, LEASE_FILE)


def log_dir(session_path: str) -> str:
    return os.path.join(session_path, LOG_DIR)


def tail_hint_path(log_path: str) -> str:
    return os.path.join(log_path, TAIL_HINT)


def state_dir(session_path: str) -> str:
    return os.path.join(session_path, STATE_DIR)


def snapshot_name(seq: int) -> str:
    return f"{seq:0{SEQ_DIGITS}d}{SNAPSHOT_SUFFIX}"


def snapshot_seqs(names: Iterable[str]) -> list[int]:
    """The seqs of the snapshot file names among ``names``, sorted."""
    return sorted(int(name[:SEQ_DIGITS]) for name in names
                  if _is_seq_name(name, SNAPSHOT_SUFFIX))


def blobs_dir(session_path: str) -> str:
    return os.path.join(session_path, BLOBS_DIR)


def vectors_dir(session_path: str) -> str:
    return os.path.join(session_path, VECTORS_DIR)


def shard_name(number: int) -> str:
    return f"{number:0{SHARD_DIGITS}d}"


def check_shard_name(name: object) -> str:
    if not isinstance(name, str) or len(name) != SHARD_DIGITS or not (
            name.isascii() and name.isdigit()):
        raise ValueError(f"bad shard name {name!r}")
    return name


def shard_vectors_name(shard: str) -> str:
    return shard + VECTORS_SUFFIX


def shard_docs_name(shard: str) -> str:
    return shard + DOCS_SUFFIX


def deleted_name(shard: str, generation: int) -> str:
    return f"{shard}.{generation:0{SHARD_DIGITS}d}{DELETED_SUFFIX}"


def check_deleted_name(name: object) -> str:
    """A deleted-rows file name as a manifest gives it: never a path."""
    if not (isinstance(name, str) and name.endswith(DELETED_SUFFIX)
            and len(name) == 2 * SHARD_DIGITS + 1 + len(DELETED_SUFFIX)
            and name[:SHARD_DIGITS].isdigit() and name[SHARD_DIGITS] == "."
            and name[SHARD_DIGITS + 1:2 * SHARD_DIGITS + 1].isdigit() and name.isascii()):
        raise ValueError(f"bad deleted-rows file name {name!r}")
    return name


def is_shard_file(name: str) -> bool:
    """True for the names of shard files (vectors, docs, deleted rows)."""
    return name[:SHARD_DIGITS].isdigit() and name.endswith(
        (VECTORS_SUFFIX, DOCS_SUFFIX, DELETED_SUFFIX))


def checkpoints_dir(session_path: str) -> str:
    return os.path.join(session_path, CHECKPOINTS_DIR)


def session_folders(session_path: str) -> tuple[str, ...]:
    """The session folder and the folders fsstore keeps in it (some may not exist yet)."""
    return (session_path, log_dir(session_path), state_dir(session_path),
            checkpoints_dir(session_path), blobs_dir(session_path),
            vectors_dir(session_path))


def checkpoint_path(session_path: str, checkpoint_id: str) -> str:
    """The file of a checkpoint; the id is checked before it becomes a path."""
    check_checkpoint_id(checkpoint_id)
    return os.path.join(session_path, CHECKPOINTS_DIR, checkpoint_id + CHECKPOINT_SUFFIX)


def checkpoint_ids(names: Iterable[str]) -> list[str]:
    """The checkpoint ids of the file names among ``names``, sorted."""
    ids = []
    for name in names:
        if name.endswith(CHECKPOINT_SUFFIX):
            stem = name[: -len(CHECKPOINT_SUFFIX)]
            if _SESSION_ID.match(stem):
                ids.append(stem)
    return sorted(ids)


def segment_name(first_seq: int) -> str:
    return f"{first_seq:0{SEQ_DIGITS}d}{SEGMENT_SUFFIX}"


def is_segment_name(name: str) -> bool:
    """True if ``name`` is a segment file name: 20 ASCII digits and ``.fslog``."""
    return _is_seq_name(name, SEGMENT_SUFFIX)


def _is_seq_name(name: str, suffix: str) -> bool:
    # String tests, not a regex: opening a log tests every name in it.
    if len(name) != SEQ_DIGITS + len(suffix) or not name.endswith(suffix):
        return False
    digits = name[:SEQ_DIGITS]
    return digits.isascii() and digits.isdigit()


def parse_segment_name(name: str) -> int | None:
    """The first seq a segment file name stands for, or None if it is not a segment."""
    return int(name[:SEQ_DIGITS]) if is_segment_name(name) else None


def segment_seqs(names: Iterable[str]) -> list[int]:
    """The first seqs of the segment file names among ``names``, sorted."""
    return sorted(int(name[:SEQ_DIGITS]) for name in names
                  if _is_seq_name(name, SEGMENT_SUFFIX))


def torn_tail_name(first_seq: int, offset: int) -> str:
    """Where a writer sets aside the bytes of a torn tail it cut off a segment."""
    return f"{first_seq:0{SEQ_DIGITS}d}@{offset}{TORN_SUFFIX}"


def temp_name(final_name: str) -> str:
    import secrets

    return f"{TEMP_PREFIX}{final_name}-{secrets.token_hex(4)}"


def repair_dir_name(when: float, attempt: int = 1) -> str:
    """The folder in a session where a repair started at ``when`` (seconds since the
    epoch) copies the damaged files: ``.repair-YYYYmmddTHHMMSSZ``, with ``-N`` after it
    for the Nth repair of the same second."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when))
    return f"{REPAIR_PREFIX}{stamp}" + (f"-{attempt}" if attempt > 1 else "")


def trash_name(session_id: str) -> str:
    import secrets

    return f"{TRASH_PREFIX}{session_id}-{secrets.token_hex(4)}"


def is_scratch(name: str) -> bool:
    """True for fsstore's temp and trash names: leftovers of an interrupted operation."""
    return name.startswith((TEMP_PREFIX, TRASH_PREFIX))
