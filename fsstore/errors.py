"""Every error fsstore raises, rooted at :class:`FsStoreError`.

Grouped by when they happen. Each leaf also subclasses the builtin it resembles, so
``except KeyError`` or ``except FileNotFoundError`` keep working for callers that do not
know fsstore. Every message names the path or value involved and what to do about it.

Arguments fsstore refuses form one family, :class:`InvalidInput`, and it is a
``ValueError``, all of it. Some of those refusals are of a wrong type (an event that is
not a dict) and some of a wrong value (a kind that is too long, an embedding of the
wrong dimension), and the same check often finds either (a title that is not a str, or
not valid Unicode): split between ``TypeError`` and ``ValueError`` by class, a caller
could not know which ``except`` catches a refused argument. What the family shares is
what the caller does about it: nothing was read or written, and the same call fails the
same way until the argument changes. ``ValueError`` is what most of the family already
was, and what the standard library raises for a value its callee cannot take. Refusals
that depend on the session as it is, not on the argument alone (``TurnError``,
``SeqOutOfRange``, ``HeadConflict``), are not in the family: the same call may succeed
once the session has moved on.
"""

from __future__ import annotations

from typing import NamedTuple


class FsStoreError(Exception):
    """Root of every error fsstore raises on purpose: ``except fsstore.FsStoreError``
    catches each of the classes below, and nothing fsstore did not mean to raise."""


class InvalidInput(FsStoreError, ValueError):
    """Raised when an argument is refused before anything is read or written: its type,
    its value or its size is not what the call takes. The subclasses say which argument;
    the message names it. Nothing changed: fix the argument (retrying the same call fails
    the same way)."""


# --- Opening a store or a session -------------------------------------------------------


class StoreNotFound(FsStoreError, FileNotFoundError):
    """Raised when a folder is not a store and creating one was not asked for
    (``open_store(path, create=False)``). Nothing is created: check the path, or open it
    with ``create=True``; the message says when an interrupted creation can be finished."""


class NotAStore(FsStoreError, ValueError):
    """Raised when a folder holds other files but no store manifest: fsstore will not
    turn an arbitrary folder into a store. Nothing is written: point at the store's own
    folder, or at an empty or new one to create a store there."""


class FormatVersionError(FsStoreError, ValueError):
    """Raised when a file was written by a newer major format version than this
    fsstore reads. Nothing is read or changed; upgrade fsstore to open it."""


class InvalidSessionId(InvalidInput):
    """Raised when a session id is not allowed (see ``layout.check_session_id``).
    Nothing on disk is touched: use 1 to 128 of ``A-Z a-z 0-9 . _ -``, not starting with
    a dot."""


class SessionNotFound(FsStoreError, KeyError):
    """Raised when a session id names no session in the store (it was never created,
    or was deleted). Check ``Store.has_session`` or ``list_sessions``, or create it."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InvalidCheckpointId(InvalidInput):
    """Raised when a checkpoint id is not allowed (the session id rule). Nothing on disk
    is touched: choose an id by that rule, or let ``checkpoint`` make one."""


class CheckpointNotFound(FsStoreError, KeyError):
    """Raised when a checkpoint id names no checkpoint of the session (never made, or
    deleted). ``checkpoints()`` lists those it has."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class CheckpointExists(FsStoreError, FileExistsError):
    """Raised when creating a checkpoint under an id the session already has. Nothing is
    written: choose another id, or delete the old checkpoint first."""


class InvalidBlobRef(InvalidInput):
    """Raised when a blob reference is malformed: not ``sha256:`` and 64 lowercase hex
    digits, a bad size, or not a reference at all. Nothing is read or written: pass the
    ``BlobRef`` (or its ``sha256:`` string) that ``blobs.put`` returned."""


class BlobNotFound(FsStoreError, FileNotFoundError):
    """Raised when a well-formed blob reference names no blob of the session: it was put
    in another session, or collected by ``gc`` once no event referred to it."""


class InvalidCollection(InvalidInput):
    """Raised when a vector collection's name, dimension, dtype or metric is not one
    fsstore accepts. Nothing is written: fix the argument. (A reader's collection has
    no write methods: asking one for ``upsert`` raises AttributeError.)"""


class CollectionNotFound(FsStoreError, KeyError):
    """Raised when a session has no vector collection of that name. ``collections()``
    lists those it has; ``create_collection`` makes one."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class CollectionExists(FsStoreError, FileExistsError):
    """Raised when creating a vector collection whose name is taken. Nothing is written:
    open it with ``collection(name)``, or drop it first."""


class SessionExists(FsStoreError, FileExistsError):
    """Raised when creating (or forking to) a session under an id that is already taken.
    Nothing is written: open that session, or choose another id."""


class SessionLocked(FsStoreError, TimeoutError):
    """Raised when another writer (thread or process) holds the session's writer lock
    and it did not come free within the timeout the caller chose, or another owner holds
    a live lease on it. Nothing is written: retry later, wait longer (``lock_timeout=``),
    or share the session (``shared=True``, a lease)."""


class InvalidSetting(InvalidInput):
    """Raised when a store or session setting is out of range (durability mode, segment
    size, record limit, poll interval, a lease that is not the session's), or an option
    of a read is (``events(last=)`` below 0 or with ``limit``, ``aevents``' ``batch``).
    Nothing is opened or written: fix the setting."""


# --- Writing ----------------------------------------------------------------------------


class InvalidEvent(InvalidInput):
    """Raised when an event is not a msgpack-able dict, or its kind or turn is not
    allowed (and for a queued item's or a turn input's payload, kind or numbers that are
    not). Nothing is written: fix the event."""


class InvalidMetadata(InvalidInput):
    """Raised when a session's title, tags or metadata are not what a JSON manifest can
    hold (a str title, str tags, a JSON-able dict). Nothing is written: convert the value
    to JSON types first."""


class RecordTooLarge(InvalidInput):
    """Raised when a batch encodes to more bytes than the session's record limit.
    Nothing is written; store large payloads as attachments instead."""


class TurnError(FsStoreError, ValueError):
    """Raised when appending to a turn that is finished, or to a turn older than the
    current one. Nothing is written: append to the current turn (``turn=None``) or a
    later one; turns only go forward."""


class InvalidState(InvalidInput):
    """Raised when a state change is not what a session's state can hold: a key that is
    not a str, a value msgpack cannot store, a merge patch on a non-dict. Nothing is
    written: fix the value."""


class InvalidDocument(InvalidInput):
    """Raised when a vector document is not what a collection stores: an id that is
    not a non-empty str, an embedding of the wrong dimension or with NaN or infinite
    values, metadata msgpack cannot store. Nothing of the call is written: fix the
    document and upsert again."""


class InvalidQuery(InvalidInput):
    """Raised when a vector search is asked wrongly: a query of the wrong dimension or
    with NaN or infinite values, k < 1, an unknown metric, a zero query under cosine.
    Nothing is searched: fix the query."""


class InvalidFilter(InvalidQuery):
    """Raised when a search filter has an unknown operator or an operand of the wrong
    type; the message names the key. Nothing is searched: fix the filter."""


class InvalidListing(InvalidInput):
    """Raised when a session listing is asked wrongly: an unknown order, a malformed
    cursor or one made for another order, a date that is not one, a limit below 1, a
    filter of the wrong type; the message names the argument. Nothing is read or
    written: fix the argument."""


class InvalidSql(InvalidInput):
    """Raised when ``fsstore sql`` (``fsstore.sql.query``) is given a query DuckDB
    refuses (a syntax error, an unknown table or column); the message is DuckDB's.
    Nothing is written: the tables are ``events``, ``messages``, ``tool_calls`` and
    ``usage`` (README, "Parquet and SQL")."""


class MissingExtra(FsStoreError, ImportError):
    """Raised when a feature needs an optional dependency that is not installed
    (pyarrow for the Parquet export, duckdb for ``fsstore sql``); the message names
    the extra to install, ``pip install 'fsstore[parquet]'``. Nothing was written."""


class SkippedSessions(FsStoreError):
    """Raised when sessions that cannot be read were left out of the tables
    ``fsstore.sql.query`` queried: ``skipped`` maps each to why (``fsstore verify`` says more),
    ``table`` is the answer without them, so no answer is short without saying so.
    Nothing was written to the store."""

    def __init__(self, skipped: dict[str, str], table: object) -> None:
        names = "; ".join(f"{sid}: {why}" for sid, why in sorted(skipped.items()))
        super().__init__(f"{len(skipped)} sessions cannot be read and were left out of "
                         f"the tables (run `fsstore verify`): {names}")
        self.skipped = skipped
        self.table = table


class HeadConflict(FsStoreError, ValueError):
    """Raised when a commit's ``expected_revision`` or ``expected_head`` no longer
    holds: something the session's history or state depends on changed since (another
    commit landed, a turn finished, the log was cleared), or the expected head is from
    the future. Queued work and turn inputs never cause it. Nothing is written.
    ``expected`` and ``actual`` say which seqs; re-read the session and retry."""

    def __init__(self, message: str, *, expected: int, actual: int) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class LeaseLost(FsStoreError, PermissionError):
    """Raised when a write carries a lease that is no longer the session's current one
    (another owner took it over) or that has expired. Nothing is written. ``token`` is
    the lease's fencing token, ``current`` the session's now. Claim the lease again and
    reopen the session: what was written meanwhile may have changed it."""

    def __init__(self, message: str, *, token: int, current: int) -> None:
        super().__init__(message)
        self.token = token
        self.current = current


class ClaimLost(FsStoreError, PermissionError):
    """Raised when completing, failing or releasing a queued item whose claim is no
    longer this claim: it expired and the item was claimed again, or it is done. Nothing
    is written."""


class SeqOutOfRange(FsStoreError, ValueError):
    """Raised when a seq asked for (``state_at``, ``fork``) is after the head, or
    before the history the log still holds (it was cleared). Nothing is written: ask for
    a seq between the log's start and its head (``info()`` says both)."""


class InvalidSeq(InvalidInput, SeqOutOfRange):
    """Raised when a seq argument (``state_at``, ``events``, ``fork``'s ``at_seq``,
    ``expected_head``) is not an int >= 0: no session has it. A refused argument, and
    still a :class:`SeqOutOfRange` for callers that catch that. Pass an int >= 0."""


class SessionClosed(FsStoreError, ValueError):
    """Raised when a closed session is used (after ``close``, or after a failed write
    closed it). Open the session again."""


class WriteFailed(FsStoreError, OSError):
    """Raised when the disk refused a write or an fsync (disk full, I/O error).

    The batch was not acknowledged. The session is closed at once: after a failed fsync
    the kernel may have dropped the unwritten pages, so retrying on the same file could
    report success without the data. Reopen the session; recovery keeps the durable
    prefix and sets any partial record aside.
    """


# --- Messages ---------------------------------------------------------------------------


class InvalidMessage(InvalidInput):
    """Raised when a message is not what the messages API stores: an unknown role or
    part type, a field of the wrong type, metadata that is not JSON, an inline file over
    ``INLINE_FILE_LIMIT`` (put it in a blob and give its ``BlobRef``), or a tool result
    whose call id no earlier tool call has (pass ``orphan=True`` on the part to store it
    anyway). ``field`` names the field (``parts[2].call_id``). Nothing is written: fix
    the message."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class MessageNotFound(FsStoreError, KeyError):
    """Raised when a message id names no message of the session (never appended, or
    deleted; ``history(id)`` still lists a deleted one's versions). Nothing was
    written."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class TranscriptNotFound(FsStoreError, FileNotFoundError):
    """Raised when an import of Claude Code or Codex sessions (``fsstore.transcripts``)
    is given a path that is neither a transcript file nor a folder holding any. Nothing
    is written: pass the tool's sessions folder (``~/.claude/projects``,
    ``~/.codex/sessions``) or one ``.jsonl`` transcript."""


class MessageExists(FsStoreError, FileExistsError):
    """Raised when appending a message under an id the session already has (or had:
    ids are never reused, not even after a delete). Nothing is written: edit that
    message, or leave the id out and let the store make one."""


# --- Workspaces -------------------------------------------------------------------------


class InvalidWorkspaceId(InvalidInput):
    """Raised when a workspace id is not allowed (the session id rule, see
    ``layout.check_workspace_id``). Nothing on disk is touched: use 1 to 128 of
    ``A-Z a-z 0-9 . _ -``, not starting with a dot."""


class InvalidWorkspace(InvalidInput):
    """Raised when a workspace's name, description, metadata or a member's role is not
    what a workspace file holds (a str name, JSON metadata, a role that is a known
    ``SessionRole`` or a short custom name), or the change would make the file larger
    than a reader accepts. ``field`` names the argument. Nothing is written: fix it."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class WorkspaceNotFound(FsStoreError, KeyError):
    """Raised when a workspace id names no workspace of the store (never created, or
    deleted). ``Store.list_workspaces`` lists those it has; nothing was written."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class WorkspaceExists(FsStoreError, FileExistsError):
    """Raised when creating a workspace under an id the store already has. Nothing is
    written: update that workspace, or choose another id."""


class WorkspaceMemberNotFound(FsStoreError, KeyError):
    """Raised when changing the role of, or removing, a session that is not a member of
    the workspace. Nothing is written: ``Store.workspace_sessions`` lists its members."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class WorkspaceMemberExists(FsStoreError, FileExistsError):
    """Raised when adding a session to a workspace it is already a member of under
    another role. Nothing is written: change its role with ``set_workspace_role``.
    (Adding it again with the role it has changes nothing and is no error.)"""


class WorkspaceLocked(FsStoreError, TimeoutError):
    """Raised when another process (or thread) held the store's workspace lock
    (``workspaces/lock``) longer than the call's ``lock_timeout``. Workspace writes hold
    it only for a read, a change and a rename: retry, or wait longer. Nothing is
    written."""


# --- Reading ----------------------------------------------------------------------------


class CorruptionError(FsStoreError):
    """Raised when a file holds damaged bytes that are not a torn tail: a checksum
    mismatch followed by valid records, a damaged sealed segment, a broken manifest.

    ``path`` and ``offset`` say where. Nothing is repaired: restore the file from a
    backup, or read what still verifies with ``fsstore cat --salvage``.
    """

    def __init__(self, message: str, *, path: str, offset: int | None = None) -> None:
        where = path if offset is None else f"{path} at byte {offset}"
        super().__init__(f"{where}: {message}")
        self.reason = message
        self.path = path
        self.offset = offset


# --- A keyed chain (docs/FORMAT.md 3.4; any operation on a chained session) ---------------
# A broken link of the chain is damage: a CorruptionError whose message names "the chain".


class ChainKeyRequired(FsStoreError, PermissionError):
    """Raised when a session's chain is keyed (HMAC-SHA256) and no key was given: its
    records cannot be written, and not read with the chain verified. Nothing is read or
    written: set ``FSSTORE_CHAIN_KEY`` (hex) or ``FSSTORE_CHAIN_KEY_FILE`` to the key
    the message names by its id."""


class ChainKeyMismatch(FsStoreError, PermissionError):
    """Raised when the key given is not the one a session's chain was made with (their
    key ids differ; the message names both). Nothing is read or written: give the key
    this store was written with."""


class ChainBindingBroken(CorruptionError):
    """Raised when a file a chained session binds to its hash chain (a snapshot, a
    checkpoint, ``session.json``) does not match it: its MAC fails (the file was edited,
    or made for another session) or the chain value it recorded is not the one the log
    holds at its position (docs/FORMAT.md 3.4). Nothing is read from it: restore the file
    from a backup (a snapshot may simply be deleted: the log holds its state)."""


class ChainUnsupported(FsStoreError, NotImplementedError):
    """Raised when an operation cannot keep a chained session's hash chain yet: the
    rewriters of a log (compaction, retention, vacuum, repair), a log start moved by a
    rollover, a fork inside a compacted segment. Nothing is changed: the session stays
    as it is and reads as before (a later fsstore rewrites chained logs)."""


class InvalidPins(InvalidInput):
    """Raised when a pinned head (``"SEQ:HEX"``, as ``head_hash`` prints it) or a pins
    file (``fsstore pin``, docs/FORMAT.md 3.5) is not well formed, is of a later major
    version, or would be written inside the store it pins. Nothing is read or written:
    pass the head hash as it was printed, or a file ``fsstore pin -o`` wrote."""


# --- Opening a store file or folder (any operation) --------------------------------------
# Every open of a store file goes through ``fsio.FileIO.open``: it follows no symlink,
# opens nothing but a regular file, and turns each OS error into one of these.


class UnsafePath(CorruptionError):
    """Raised when a symlink stands where a store file or folder should be. fsstore
    never follows one (it could lead out of the store, or make a write land in another
    file). Nothing is read or written through it: replace the link with the file or
    folder it should be, or remove it."""


class NotARegularFile(CorruptionError):
    """Raised when something other than a regular file stands where a store file should
    be (a folder, a FIFO, a device, a socket). Nothing is read or written: remove it, or
    restore the file from a backup."""


class NotAFolder(CorruptionError):
    """Raised when a file (or anything but a folder) stands where a store folder should
    be. Nothing is read or written: remove it, or restore the folder from a backup."""


class StoreFileNotFound(FsStoreError, FileNotFoundError):
    """Raised when a store file or folder an operation needs is missing (removed from
    outside, or by a concurrent delete). ``errno`` and ``filename`` are those of the
    failed call: restore the file, or run ``fsstore verify`` to see what else is gone."""


class StoreFileExists(FsStoreError, FileExistsError):
    """Raised when a file fsstore creates exclusively already exists (another process
    made it first, or a crash left it). The message names it: retry, or remove a file
    ``fsstore verify`` reports as left over."""


class InvalidBackupDest(InvalidInput):
    """Raised when a backup's destination cannot hold one: it is inside the store, the
    store is inside it, or it is a folder that is neither empty nor an earlier backup
    (no ``.fsstore-backup.json``). Nothing is written: choose a new or empty folder, or
    an earlier backup of the store."""


class GitSetupError(FsStoreError, OSError):
    """Raised when ``fsstore git-setup`` cannot use git: git is not installed, the store
    is not inside a git work tree (checked before anything is written), or ``git
    config`` failed. The message says which: install git, run ``git init``, or set the
    line ``fsstore git-setup --print`` prints by hand."""


class StoreIOError(FsStoreError, OSError):
    """Raised when the OS refused to open a store file for any other reason (no
    permission, too many open files, an I/O error). ``errno`` and ``filename`` are those
    of the failed call: fix what the OS reports and retry."""


# --- Importing an export file --------------------------------------------------------------


class InvalidExport(InvalidInput):
    """Raised when ``fsstore import`` reads a file that is not a whole, unchanged export
    (docs/FORMAT.md, section 22): cut off, lines reordered, duplicated or missing, a
    value edited by hand, a newer major version. ``path`` and ``line`` say where (line 1
    is the header). Nothing was written to the store: export the sessions again, or
    restore the file from where it was copied."""

    def __init__(self, message: str, *, path: str, line: int | None = None) -> None:
        where = path if line is None else f"{path} line {line}"
        super().__init__(f"{where}: {message}")
        self.reason = message
        self.path = path
        self.line = line


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
