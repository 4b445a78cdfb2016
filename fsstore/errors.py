"""Every error fsstore raises, rooted at :class:`FsStoreError`.

Grouped by when they happen. Each leaf also subclasses the builtin it resembles, so
``except KeyError`` or ``except FileNotFoundError`` keep working for callers that do not
know fsstore. Every message names the path or value involved and what to do about it.
"""

from __future__ import annotations

from typing import NamedTuple


class FsStoreError(Exception):
    """Root of every error fsstore raises on purpose."""


# --- Opening a store or a session -------------------------------------------------------


class StoreNotFound(FsStoreError, FileNotFoundError):
    """Returned when a folder is not a store and creating one was not asked for."""


class NotAStore(FsStoreError, ValueError):
    """Returned when a folder holds other files but no store manifest: fsstore will not
    turn an arbitrary folder into a store."""


class FormatVersionError(FsStoreError, ValueError):
    """Returned when a file was written by a newer major format version than this
    fsstore reads. Nothing is read or changed; upgrade fsstore to open it."""


class InvalidSessionId(FsStoreError, ValueError):
    """Returned when a session id is not allowed (see ``layout.check_session_id``).
    Nothing on disk is touched."""


class SessionNotFound(FsStoreError, KeyError):
    """Returned when a session id names no session in the store."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InvalidCheckpointId(FsStoreError, ValueError):
    """Returned when a checkpoint id is not allowed (the session id rule). Nothing on disk
    is touched."""


class CheckpointNotFound(FsStoreError, KeyError):
    """Returned when a checkpoint id names no checkpoint of the session."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class CheckpointExists(FsStoreError, FileExistsError):
    """Returned when creating a checkpoint under an id the session already has."""


class InvalidBlobRef(FsStoreError, ValueError):
    """Returned when a blob reference is malformed: not ``sha256:`` and 64 lowercase hex
    digits, a bad size, or not a reference at all. Nothing is read or written."""


class BlobNotFound(FsStoreError, FileNotFoundError):
    """Returned when a well-formed blob reference names no blob of the session."""


class InvalidCollection(FsStoreError, ValueError):
    """Returned when a vector collection's name, dimension, dtype or metric is not one
    fsstore accepts, or when a reader's collection is asked to change. Nothing is
    written."""


class CollectionNotFound(FsStoreError, KeyError):
    """Returned when a session has no vector collection of that name."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class CollectionExists(FsStoreError, FileExistsError):
    """Returned when creating a vector collection whose name is taken."""


class SessionExists(FsStoreError, FileExistsError):
    """Returned when creating a session under an id that is already taken."""


class SessionLocked(FsStoreError, TimeoutError):
    """Returned when another writer (thread or process) holds the session's writer lock
    and it did not come free within the timeout the caller chose."""


class InvalidSetting(FsStoreError, ValueError):
    """Returned when a store or session setting is out of range (durability mode, segment
    size, record limit). Nothing is opened or written."""


# --- Writing ----------------------------------------------------------------------------


class InvalidEvent(FsStoreError, TypeError):
    """Returned when an event is not a msgpack-able dict, or its kind or turn is not
    allowed. Nothing is written."""


class InvalidMetadata(FsStoreError, TypeError):
    """Returned when a session's title, tags or metadata are not what a JSON manifest can
    hold (a str title, str tags, a JSON-able dict). Nothing is written."""


class RecordTooLarge(FsStoreError, ValueError):
    """Returned when a batch encodes to more bytes than the session's record limit.
    Nothing is written; store large payloads as attachments instead."""


class TurnError(FsStoreError, ValueError):
    """Returned when appending to a turn that is finished, or to a turn older than the
    current one. Nothing is written."""


class InvalidState(FsStoreError, TypeError):
    """Returned when a state change is not what a session's state can hold: a key that is
    not a str, a value msgpack cannot store, a merge patch on a non-dict. Nothing is
    written."""


class InvalidDocument(FsStoreError, ValueError):
    """Returned when a vector document is not what a collection stores: an id that is
    not a non-empty str, an embedding of the wrong dimension or with NaN or infinite
    values, metadata msgpack cannot store. Nothing of the call is written."""


class InvalidQuery(FsStoreError, ValueError):
    """Returned when a vector search is asked wrongly: a query of the wrong dimension or
    with NaN or infinite values, k < 1, an unknown metric, a zero query under cosine."""


class InvalidFilter(InvalidQuery):
    """Returned when a search filter has an unknown operator or an operand of the wrong
    type; the message names the key."""


class HeadConflict(FsStoreError, ValueError):
    """Returned when a commit's ``expected_revision`` or ``expected_head`` no longer
    holds: something the session's history or state depends on changed since (another
    commit landed, a turn finished, the log was cleared), or the expected head is from
    the future. Queued work and turn inputs never cause it. Nothing is written.
    ``expected`` and ``actual`` say which seqs; re-read the session and retry."""

    def __init__(self, message: str, *, expected: int, actual: int) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class LeaseLost(FsStoreError, PermissionError):
    """Returned when a write carries a lease that is no longer the session's current one
    (another owner took it over) or that has expired. Nothing is written. ``token`` is
    the lease's fencing token, ``current`` the session's now. Claim the lease again and
    reopen the session: what was written meanwhile may have changed it."""

    def __init__(self, message: str, *, token: int, current: int) -> None:
        super().__init__(message)
        self.token = token
        self.current = current


class ClaimLost(FsStoreError, PermissionError):
    """Returned when completing, failing or releasing a queued item whose claim is no
    longer this claim: it expired and the item was claimed again, or it is done. Nothing
    is written."""


class SeqOutOfRange(FsStoreError, ValueError):
    """Returned when a seq asked for (``state_at``, ``fork``) is after the head, or
    before the history the log still holds (it was cleared). Nothing is written."""


class SessionClosed(FsStoreError, ValueError):
    """Returned when a closed session is used."""


class WriteFailed(FsStoreError, OSError):
    """Returned when the disk refused a write or an fsync (disk full, I/O error).

    The batch was not acknowledged. The session is closed at once: after a failed fsync
    the kernel may have dropped the unwritten pages, so retrying on the same file could
    report success without the data. Reopen the session; recovery keeps the durable
    prefix and sets any partial record aside.
    """


# --- Reading ----------------------------------------------------------------------------


class CorruptionError(FsStoreError):
    """Returned when a file holds damaged bytes that are not a torn tail: a checksum
    mismatch followed by valid records, a damaged sealed segment, a broken manifest.

    ``path`` and ``offset`` say where. Nothing is repaired: restore the file from a
    backup, or copy what reads cleanly with ``fsstore cat``.
    """

    def __init__(self, message: str, *, path: str, offset: int | None = None) -> None:
        where = path if offset is None else f"{path} at byte {offset}"
        super().__init__(f"{where}: {message}")
        self.reason = message
        self.path = path
        self.offset = offset


# --- Opening a store file or folder (any operation) --------------------------------------
# Every open of a store file goes through ``fsio.FileIO.open``: it follows no symlink,
# opens nothing but a regular file, and turns each OS error into one of these.


class UnsafePath(CorruptionError):
    """Returned when a symlink stands where a store file or folder should be. fsstore
    never follows one (it could lead out of the store, or make a write land in another
    file). Nothing is read or written through it: replace the link with the file or
    folder it should be, or remove it."""


class NotARegularFile(CorruptionError):
    """Returned when something other than a regular file stands where a store file should
    be (a folder, a FIFO, a device, a socket). Nothing is read or written: remove it, or
    restore the file from a backup."""


class NotAFolder(CorruptionError):
    """Returned when a file (or anything but a folder) stands where a store folder should
    be. Nothing is read or written: remove it, or restore the folder from a backup."""


class StoreFileNotFound(FsStoreError, FileNotFoundError):
    """Returned when a store file or folder an operation needs is missing. ``errno`` and
    ``filename`` are those of the failed call."""


class StoreFileExists(FsStoreError, FileExistsError):
    """Returned when a file fsstore creates exclusively already exists."""


class StoreIOError(FsStoreError, OSError):
    """Returned when the OS refused to open a store file for any other reason (no
    permission, too many open files, an I/O error). ``errno`` and ``filename`` are those
    of the failed call."""


class Finding(NamedTuple):
    """One line of a ``verify`` report. A ``problem`` is damage; a ``note`` is something
    a crash or an interrupted operation left that readers handle (a torn tail, a temp
    file) and that a later write tidies."""

    level: str  # "problem" or "note"
    path: str
    offset: int | None
    message: str

    def __str__(self) -> str:
        where = self.path if self.offset is None else f"{self.path} at byte {self.offset}"
        message = self.message
        for named in (where + ": ", self.path + ": "):  # a message made from str(exc)
            if message.startswith(named):
                message = message[len(named):]
                break
        return f"{self.level}: {where}: {message}"
