"""``fsstore import``: sessions recreated from an export file (docs/FORMAT.md, section
22) with the same events, seqs, turns, timestamps, state, checkpoints, blobs and vectors.

Each session is built in a temp folder inside the store (``sessions/.tmp-ID-XXXX``,
which no listing takes for a session, and which a crash leaves as scratch, as with
``create_session``) by the engine's own writers: the log writer appends each exported
frame as one frame with its seq, ts and turn; a retained log gets its base frame back as
retention writes it; checkpoints keep their ids, labels, kinds and times. Only when the
trailer has proved the file whole are the folders renamed into place, so a file that is
cut off, reordered, duplicated or edited leaves nothing behind (InvalidExport, naming
the line).

In a store whose policy chains new sessions, each session gets a fresh chain of that
policy, under the store's key, and every file is bound to it as a chained session's
writers bind them (import_chain.py); an import into a keyed store without its key is
refused before anything is written (ChainKeyRequired).

What is not kept as it was: the files that hold it (segments are written anew, in
plain segments of the default size; snapshots are replaced by one at the head; vector
documents are upserted, shards built anew), the message index and stats cache (caches,
rebuilt when read), and leases (an execution lease belongs to a running process).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import stat
import struct
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

import msgspec

from . import catalog, chain_bindings, identity, import_chain, layout, manifest
from .errors import (
    CorruptionError,
    FormatVersionError,
    FsStoreError,
    InvalidExport,
    InvalidInput,
    InvalidSetting,
    SessionExists,
    WorkspaceMemberExists,
    WorkspaceNotFound,
)
from .export_format import FORMAT_NAME, check_version, from_json, unseal
from .log import LogPosition, LogReader
from .log_format import MAX_FRAME_PAYLOAD, encode_base_frame
from .log_writer import Durability, LogWriter
from .segment_header import SEGMENT_HEADER_SIZE, encode_segment_header
from .tail_hint import write_tail_hint

if TYPE_CHECKING:
    from .snapshot import SnapshotDir
    from .store import Store
    from .vectors import VectorCollection, VectorDocument

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: The longest line an import reads (its newline included): past it the file is refused
#: naming the line, so a crafted line (or a small zstd file that expands to gigabytes)
#: cannot fill memory. The longest line an export writes is a batch of records of up to
#: MAX_FRAME_PAYLOAD bytes in JSON, where a byte can take six (``\u0000``).
MAX_LINE_BYTES = 6 * MAX_FRAME_PAYLOAD + (1 << 20)
# Compressed bytes fed to the decompressor at a time: zstd expands a byte to at most
# about 32 KiB (runs of one byte), so one call gives at most some 16 MiB.
_ZSTD_FEED = 512
_DOCUMENT_BATCH = 1024
# The order of a session's lines: each line's rank may not be below the one before it.
_RANKS = {"base": 1, "frame": 2, "state": 3, "checkpoint": 4, "blob": 5, "collection": 6,
          "document": 6, "end": 7}


@dataclass
class ImportReport:
    """What :func:`import_sessions` recreated."""

    path: str
    sessions: int = 0
    events: int = 0
    checkpoints: int = 0
    blobs: int = 0
    documents: int = 0
    workspaces: int = 0
    lines: int = 0
    seconds: float = 0.0
    #: the ids the sessions have in the store, in file order
    session_ids: list[str] = field(default_factory=list)
    #: exported id -> id in the store, for the sessions imported under another id
    renamed: dict[str, str] = field(default_factory=dict)
    #: ids whose existing session was replaced
    replaced: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = (f"imported {self.sessions} sessions ({self.events} events, "
                f"{self.checkpoints} checkpoints, {self.blobs} blobs, {self.documents} vector "
                f"documents, {self.workspaces} workspaces) from {self.path} in "
                f"{self.seconds:.2f} s")
        for old, new in self.renamed.items():
            text += f"\n  {old} -> {new}"
        for replaced in self.replaced:
            text += f"\n  replaced {replaced}"
        return text


def import_sessions(store: Store, path: str | os.PathLike[str], *,
                    rename: str | Mapping[str, str] | None = None,
                    replace: bool = False) -> ImportReport:
    """Recreate in ``store`` the sessions (and workspace memberships) of the export file
    ``path`` written by :func:`fsstore.export_sessions` (plain or zstd-compressed, told
    by its first bytes): the same events, seqs, turns, timestamps, state, checkpoints,
    blobs and vector documents.

    A session whose id the store already has is refused (SessionExists, before anything
    is written) unless ``replace`` (the existing one is deleted, once the new one is
    built whole) or ``rename`` gives it another id: a str when the file holds one
    session, else a mapping of exported id to new id. A renamed session gets a new uid.

    The whole file is checked as it is read (each line's crc and number, seqs, counts,
    the trailer's checksum): a file cut off, reordered, duplicated or edited raises
    InvalidExport naming the line, and nothing is written to the store. Returns an
    :class:`ImportReport`.
    """
    started = time.monotonic()
    path = os.fspath(path)
    if isinstance(rename, str):
        renames: Mapping[str, str] | str | None = rename
    elif rename is None:
        renames = None
    else:
        renames = dict(rename)
    # The new ids are the caller's, refused as such before the file is read.
    for new_id in [renames] if isinstance(renames, str) else (renames or {}).values():
        layout.check_session_id(new_id, new=True)
    import_chain.check_key(store)  # a keyed policy without its key: refused, nothing written
    job = _Import(store, path, renames, replace)
    try:
        with _lines(path) as lines:
            job.read(lines)
        job.finish()
    finally:
        job.clean_up()
    job.report.seconds = time.monotonic() - started
    return job.report


@contextlib.contextmanager
def _lines(path: str) -> Iterator[Iterator[bytes]]:
    with open(path, "rb") as raw:
        # Peeked, not read and sought back: the file may be a pipe (/dev/stdin).
        head = raw.peek(4)[:4]
        chunks = _unzstd_chunks(raw) if head == _ZSTD_MAGIC else _plain_chunks(raw)
        yield _split_lines(chunks, path)


def _plain_chunks(raw: IO[bytes]) -> Iterator[bytes]:
    while chunk := raw.read(1 << 20):
        yield chunk


def _unzstd_chunks(raw: IO[bytes]) -> Iterator[bytes]:
    """The bytes of a zstd-compressed export, as they decompress, a bounded amount at a
    time. A stream cut off before its frame ends gives a last line without a newline
    (refused as cut off), even where the cut fell between lines."""
    import zstandard

    decompressor = zstandard.ZstdDecompressor().decompressobj()
    while not decompressor.eof:
        chunk = raw.read(_ZSTD_FEED)
        if not chunk:
            break
        out = decompressor.decompress(chunk)
        if out:
            yield out
    if not decompressor.eof or decompressor.unused_data or raw.read(1):
        yield b"\0"  # no newline: the file was cut off, or more follows the frame


def _split_lines(chunks: Iterator[bytes], path: str) -> Iterator[bytes]:
    """The lines of ``chunks``, each with its newline (a last line without one is cut
    off); InvalidExport naming the line for one longer than MAX_LINE_BYTES, found before
    more of it is held."""
    pieces: list[bytes] = []
    held = 0
    number = 0
    for chunk in chunks:
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            if held + end + 1 - start > MAX_LINE_BYTES:
                break
            pieces.append(chunk[start:end + 1])
            number += 1
            yield b"".join(pieces)
            pieces, held, start = [], 0, end + 1
        held += len(chunk) - start
        if held > MAX_LINE_BYTES:
            raise InvalidExport(f"the line is longer than {MAX_LINE_BYTES} bytes, more than "
                                "any export writes: the file is damaged or no export",
                                path=path, line=number + 1)
        if start < len(chunk):
            pieces.append(chunk[start:])
    if pieces:
        yield b"".join(pieces)


class _Import:
    def __init__(self, store: Store, path: str, rename: Mapping[str, str] | str | None,
                 replace: bool) -> None:
        self.store = store
        self.io = store.io
        self.path = path
        self.rename = rename
        self.replace = replace
        self.report = ImportReport(path)
        self.builds: list[_SessionBuild] = []
        self.workspaces: list[tuple[dict[str, Any], int]] = []
        self.digest = hashlib.sha256()
        self.events = 0

    def fail(self, message: str, line: int | None) -> InvalidExport:
        return InvalidExport(message, path=self.path, line=line)

    def read(self, lines: Iterator[bytes]) -> None:
        number = 0
        build: _SessionBuild | None = None
        trailer = False
        try:
            for raw in lines:
                number += 1
                if trailer:
                    raise self.fail("more lines after the trailer (two exports joined?)",
                                    number)
                if not raw.endswith(b"\n"):
                    raise self.fail("the line is cut off (no newline at its end): the file "
                                    "is truncated", number)
                fields = unseal(raw[:-1], self.path, number)
                kind = fields["type"]
                if number == 1:
                    self._header(fields)
                elif kind == "trailer":
                    if build is not None:
                        raise self.fail(f"session {build.source_id!r} has no end line", number)
                    self._trailer(fields, number)
                    trailer = True
                elif kind == "session":
                    if build is not None:
                        raise self.fail(f"session {build.source_id!r} has no end line", number)
                    build = self._session(fields, number)
                elif kind == "workspace":
                    if build is not None:
                        raise self.fail("a workspace line inside a session", number)
                    self.workspaces.append((self._check_workspace(fields, number), number))
                elif build is not None and kind in _RANKS:
                    # No '"$' in the line: no value in it is in a tagged form (each tag is
                    # a key starting with "$"), so its JSON values are the values.
                    build.line(fields, number, b'"$' not in raw)
                    if kind == "end":
                        build = None
                else:
                    raise self.fail(f"a {kind!r} line where none may be", number)
                self.digest.update(raw)
        except (InvalidExport, InvalidSetting, SessionExists):
            raise
        except InvalidInput as exc:
            # The engine's own checks (ids, names, nesting, documents) refusing a value of
            # the file: said as the file's fault, at its line.
            raise self.fail(str(exc), number) from None
        except (KeyError, TypeError, AttributeError, ValueError, IndexError, OverflowError,
                RecursionError, struct.error) as exc:
            # A crafted line: a field missing, of the wrong type, too deep for Python's
            # stack, or a number too big for the on-disk fields.
            if isinstance(exc, FsStoreError):
                raise
            raise self.fail(f"a field is missing or of the wrong type "
                            f"({type(exc).__name__}: {str(exc)[:200]})", number) from None
        self.report.lines = number
        if number == 0:
            raise self.fail("the file is empty: no export header", None)
        if not trailer:
            raise self.fail(f"the file ends after line {number} without its trailer: it "
                            "was cut off", number + 1)

    def _header(self, fields: dict[str, Any]) -> None:
        if fields["type"] != "header" or fields.get("format") != FORMAT_NAME:
            raise self.fail(f"not an export file: line 1 is no {FORMAT_NAME} header", 1)
        check_version(fields.get("version"), self.path)

    def _target(self, source_id: str, number: int) -> str:
        if isinstance(self.rename, str):
            if self.builds:
                raise InvalidSetting(f"{self.path} holds more than one session: give rename "
                                     "as a mapping of exported id to new id")
            return self.rename
        if self.rename is not None:
            return self.rename.get(source_id, source_id)
        return source_id

    def _session(self, fields: dict[str, Any], number: int) -> _SessionBuild:
        source_id = fields["id"]
        try:
            layout.check_session_id(source_id)
        except FsStoreError as exc:
            raise self.fail(str(exc), number) from None
        target = self._target(source_id, number)
        layout.check_session_id(target, new=target != source_id)
        if any(b.target_id == target for b in self.builds):
            raise self.fail(f"session {target!r} appears twice", number)
        if self.store.has_session(target) and not self.replace:
            raise SessionExists(f"session {target!r} already exists in {self.store.path}: "
                                "import it under another id (rename) or replace it")
        build = _SessionBuild(self, source_id, target)
        self.builds.append(build)  # before its temp folder is made: clean_up removes it
        build.start(fields, number)
        return build

    def _check_workspace(self, fields: dict[str, Any], number: int) -> dict[str, Any]:
        """The workspace line's fields, checked as the store will take them, so that a
        refusal comes before any session is put in place: its id, name, description and
        metadata, and members that are sessions of this file (an export writes no
        other) with valid roles."""
        from .workspaces import _check_metadata, _check_text, check_role

        layout.check_workspace_id(fields["id"])
        name = fields.get("name")
        if name is not None:
            _check_text(name, "name")
        description = _check_text(fields.get("description", ""), "description")
        metadata = _check_metadata(from_json(fields.get("metadata") or {}, self.path,
                                             number))
        members = fields.get("members", {})
        if not isinstance(members, dict):
            raise self.fail("the workspace's members are no map of session id to role", number)
        exported = {b.source_id for b in self.builds}
        for member, role in members.items():
            if member not in exported:
                raise self.fail(f"workspace member {member!r} is no session of the file",
                                number)
            check_role(role)
        return {"id": fields["id"], "name": name, "description": description,
                "metadata": metadata, "members": members}

    def _trailer(self, fields: dict[str, Any], number: int) -> None:
        if fields.get("lines") != number:
            raise self.fail(f"the trailer counts {fields.get('lines')} lines, the file has "
                            f"{number}", number)
        if fields.get("sessions") != len(self.builds) or fields.get("events") != self.events:
            raise self.fail("the trailer's session or event count does not match the lines",
                            number)
        if fields.get("sha256") != self.digest.hexdigest():
            raise self.fail("the SHA-256 of the lines does not match the trailer's: the "
                            "file was changed after the export", number)

    def finish(self) -> None:
        """Put the built sessions in place, then the workspace memberships."""
        sessions = layout.sessions_dir(self.store.path)
        locks = self._lock_replaced()
        trash: list[str] = []
        try:
            for build in self.builds:
                final = layout.session_dir(self.store.path, build.target_id)
                assert build.temp is not None
                if build.target_id not in locks:
                    self.io.rename(build.temp, final)
                else:
                    # Under its writer lock, taken for every replaced session before any
                    # was touched: no writer can open it between the check and the rename.
                    old = os.path.join(sessions, layout.trash_name(build.target_id))
                    self.io.rename(final, old)
                    try:
                        self.io.rename(build.temp, final)
                    except BaseException:
                        self.io.rename(old, final)  # the old session back, as it was
                        raise
                    trash.append(old)
                    self.report.replaced.append(build.target_id)
                    locks.pop(build.target_id).release()
                self.io.fsync_dir(sessions)
                catalog.note(self.io, final)
                build.temp = None
                self._count(build)
        finally:
            for lock in locks.values():
                lock.release()
        for path in trash:
            self.io.rmtree(path)
        targets = {b.source_id: b.target_id for b in self.builds}
        for fields, number in self.workspaces:
            self._workspace(fields, number, targets)

    def _lock_replaced(self) -> dict[str, Any]:
        """The writer locks of the sessions this import replaces, all taken before any is
        replaced: one open for writing or leased (SessionLocked), or one that exists
        without ``replace`` (SessionExists), refuses the import with nothing changed."""
        from .store import _refuse_if_leased
        from .writer_access import acquire_writer_lock

        locks: dict[str, Any] = {}
        try:
            for build in self.builds:
                final = layout.session_dir(self.store.path, build.target_id)
                if not self.io.exists(final):
                    continue
                if not self.replace:
                    raise SessionExists(f"session {build.target_id!r} already exists at "
                                        f"{final} (made while this import ran)")
                locks[build.target_id] = acquire_writer_lock(final, build.target_id, 0.0)
                _refuse_if_leased(self.io, final, build.target_id)
        except BaseException:
            for lock in locks.values():
                lock.release()
            raise
        return locks

    def _count(self, build: _SessionBuild) -> None:
        report = self.report
        report.sessions += 1
        report.session_ids.append(build.target_id)
        if build.target_id != build.source_id:
            report.renamed[build.source_id] = build.target_id
        report.events += build.events
        report.checkpoints += build.checkpoints
        report.blobs += build.blobs
        report.documents += build.documents

    def _workspace(self, fields: dict[str, Any], number: int,
                   targets: dict[str, str]) -> None:
        workspace_id = fields["id"]
        try:
            self.store.workspace(workspace_id)
        except WorkspaceNotFound:
            self.store.create_workspace(
                workspace_id, name=fields["name"], description=fields["description"],
                metadata=fields["metadata"])
        for member, role in fields["members"].items():
            try:
                self.store.add_to_workspace(workspace_id, targets[member], role)
            except WorkspaceMemberExists:
                self.store.set_workspace_role(workspace_id, targets[member], role)
        self.report.workspaces += 1

    def clean_up(self) -> None:
        """Remove the temp folders of sessions not put in place (a refused file)."""
        for build in self.builds:
            build.abandon()


class _SessionBuild:
    """One session being built in its temp folder."""

    def __init__(self, job: _Import, source_id: str, target_id: str) -> None:
        self.job = job
        self.io = job.io
        self.source_id, self.target_id = source_id, target_id
        self.temp: str | None = None
        self.writer: LogWriter | None = None
        self.collection: VectorCollection | None = None

    def start(self, fields: dict[str, Any], number: int) -> None:
        """Check the session line and make the temp folder with its manifest."""
        job, io = self.job, self.io
        self.log_start = _int(fields["log_start"], 1, "log_start", job, number)
        self.head = _int(fields["head"], self.log_start - 1, "head", job, number)
        data = from_json(fields["manifest"], job.path, number)
        if not isinstance(data, dict) or data.get("id") != self.source_id:
            raise job.fail(f"the manifest is not session {self.source_id!r}'s", number)
        # The manifest as a session's reader will check it (its fields' types, a parent
        # that is a session id, title, tags and metadata), refused here at its line.
        try:
            manifest.decode_session(data, job.path)
        except CorruptionError as exc:
            raise job.fail(f"the manifest is not one a session can have ({exc})",
                           number) from None
        manifest.check_metadata(data.get("title"), data.get("tags", []), data.get("metadata"))
        if data.pop("chain", None) is not None:
            # The records are written anew: the exported chain (its junctions, its MACs)
            # is not theirs. The store's policy says whether they get one of their own.
            data["version"] = manifest.VERSION
        if self.target_id != self.source_id:
            # Another session: another uid (segments are told apart by it), same lineage.
            data["id"] = self.target_id
            old = identity.from_manifest(data, job.path)
            ancestors = [] if old is None else sorted(old.accepted - {old.uid})
            data.update(identity.Identity.of(identity.mint(), ancestors).manifest_fields())
        import_chain.declare(job.store, data)  # a fresh chain of the store's policy, if any
        sessions = layout.sessions_dir(job.store.path)
        self.temp = os.path.join(sessions, layout.temp_name(self.target_id))
        io.mkdir(self.temp)
        path = layout.session_manifest_path(self.temp)
        manifest.write(io, path, data)  # bound to the chain at the end line, its log whole
        self.data = data
        self.chain = import_chain.rules_for(job.store, data, self.temp, path)
        self.identity = identity.from_manifest(data, path)
        self.uid = identity.NO_UID if self.identity is None else self.identity.uid
        self.log_path = layout.log_dir(self.temp)
        io.mkdir(self.log_path)
        self.rank = 0
        self.turn = 0  # of the last batch: turns only go forward
        self.positions: dict[int, LogPosition] = {}
        self.folded = False  # the state line was read and checked
        self.body: dict[str, Any] = {}  # the state at the head, once folded
        self.checkpoint_paths: set[str] = set()
        self.collections: set[str] = set()
        self.fold_from = self.log_start - 1  # the first seq whose state a fold can give
        # (seq, line, _digest of its state, path) of each checkpoint the log folds to
        self.to_check: list[tuple[int, int, bytes, str]] = []
        self.pending: list[VectorDocument] = []
        self.events = self.frames = self.checkpoints = self.blobs = self.documents = 0

    def line(self, fields: dict[str, Any], number: int, plain: bool = False) -> None:
        kind = fields["type"]
        rank = _RANKS[kind]
        if rank < self.rank or (kind == "base" and self.rank > 0) or (
                kind == "document" and self.collection is None):
            raise self.job.fail(f"a {kind!r} line out of place: lines were reordered", number)
        if rank > 2 and self.writer is None:
            self._start_log(None, number)
        self.rank = rank
        if kind == "frame":
            self._frame(fields, number, plain)
        else:
            getattr(self, "_" + kind)(fields, number)

    # --- the log ---

    def _start_log(self, base: dict[str, Any] | None, number: int) -> None:
        io, start, uid = self.io, self.log_start, self.uid
        reader = LogReader(io, self.log_path, self.identity)
        first = start
        if base is not None:
            from .segment_file import encode_compacted

            last = _int(base["last"], start, "last", self.job, number)
            if base["first"] != start or last > self.head:
                raise self.job.fail("the base does not start at the log start, or ends "
                                    "after the head", number)
            image = from_json(base["image"], self.job.path, number)
            record = (_time(base["ts"], "ts", self.job, number),
                      _int(base["turn"], 0, "turn", self.job, number), str(base["kind"]))
            if self.chain is None:
                frame = encode_base_frame(start, last, image, *record)
            else:
                frame = import_chain.base_frame(self.chain, uid, start, last, image, *record)
            io.write_new(reader.segment_path(start),
                         encode_compacted(start, start, uid, [(start, frame)]))
            first = last + 1
            self.fold_from = last
            self.turn = base["turn"]
            crc = int.from_bytes(frame[:4], "little")
            self.positions[last] = LogPosition(start, SEGMENT_HEADER_SIZE + len(frame), crc)
        io.write_new(reader.segment_path(first), encode_segment_header(first, start, uid))
        write_tail_hint(io, self.log_path, first)
        # The store's segment size; any record the format allows (the exporting store's
        # limit may have been higher than this one's: its records are history).
        self.writer = LogWriter(io, self.log_path, Durability("none"),
                                segment_size=self.job.store.segment_size,
                                max_record_bytes=MAX_FRAME_PAYLOAD, identity=self.identity,
                                chain=self.chain)

    def _base(self, fields: dict[str, Any], number: int) -> None:
        self._start_log(fields, number)

    def _frame(self, fields: dict[str, Any], number: int, plain: bool) -> None:
        if self.writer is None:
            self._start_log(None, number)
        writer = self.writer
        assert writer is not None
        seq = fields["seq"]
        if seq != writer.head + 1:
            raise self.job.fail(f"the batch starts at seq {seq}, expected {writer.head + 1}: "
                                "lines were reordered, duplicated or left out", number)
        records = fields["records"]
        if not isinstance(records, list) or not records:
            raise self.job.fail("a batch without records", number)
        if plain:
            entries = [(kind, data) for kind, data in records]
        else:
            entries = [(kind, from_json(data, self.job.path, number)) for kind, data in records]
        if not all(isinstance(kind, str) for kind, _ in entries):
            raise self.job.fail("a record's kind is no str", number)
        ts = _time(fields["ts"], "ts", self.job, number)
        turn = _int(fields["turn"], 0, "turn", self.job, number)
        if turn < self.turn:
            raise self.job.fail(f"the batch is in turn {turn}, after one in turn {self.turn}: "
                                "turns only go forward", number)
        self.turn = turn
        try:
            writer.append(entries, turn, ts)
        except FsStoreError as exc:
            raise self.job.fail(f"the batch cannot be written ({exc})", number) from None
        if writer.head > self.head:
            raise self.job.fail(f"the batch goes past the head {self.head}", number)
        self.positions[writer.head] = writer.position
        self.frames += 1
        self.events += len(entries)
        self.job.events += len(entries)

    def _state(self, fields: dict[str, Any], number: int) -> None:
        writer = self.writer
        assert writer is not None
        if writer.head != self.head or fields["seq"] != self.head:
            raise self.job.fail(f"the log ends at seq {writer.head}, the session's head is "
                                f"{self.head}: batches are missing", number)
        writer.sync()
        writer.close()
        from . import state as state_module

        snapshots, reader = self._readers()
        try:
            loaded = state_module.load(self.io, reader, snapshots)
        except (FormatVersionError, CorruptionError) as exc:
            # A crafted store record (fsstore.state, .queue, .message...) the fold cannot
            # apply: the file's fault, said at this line, not as damage in a temp folder.
            reason = getattr(exc, "reason", None) or str(exc).split(": ", 1)[-1]
            raise self.job.fail(f"the batches do not fold to a state: {reason}",
                                number) from None
        body = loaded.image.body()
        expected = from_json(fields["image"], self.job.path, number)
        if _digest(body) != _digest(expected):
            raise self.job.fail("the state the batches fold to is not the exported state: "
                                "a record was edited", number)
        position = self.positions.get(self.head)
        if position is not None:
            seal = import_chain.seal_at(self.chain, self.identity, reader, position, self.head)
            snapshots.write(self.head, self.log_start, position, body,
                            None if seal is None else seal.link)
        self.body = body
        self.folded = True

    def _checkpoint(self, fields: dict[str, Any], number: int) -> None:
        from .snapshot import CHECKPOINT_KINDS, KIND_CHECKPOINT, encode, ensure_dir
        from .snapshot import read as read_snapshot
        from .state import StateImage

        assert self.temp is not None
        job = self.job
        checkpoint_id = fields["id"]
        layout.check_checkpoint_id(checkpoint_id)
        path = layout.checkpoint_path(self.temp, checkpoint_id)
        if path in self.checkpoint_paths:
            raise job.fail(f"checkpoint {checkpoint_id!r} appears twice", number)
        seq = _int(fields["seq"], 0, "seq", job, number)
        log_start = _int(fields["log_start"], 1, "log_start", job, number)
        # A checkpoint freezes a state the session had: at or before its head, and in
        # this log (from its start) or in one a clear ended (before it).
        if seq > self.head or log_start > self.log_start or seq < log_start - 1:
            raise job.fail(f"the checkpoint is at seq {seq} of the log from {log_start}, "
                           f"which the session (log from {self.log_start}, head {self.head}) "
                           "never had", number)
        if fields["kind"] not in CHECKPOINT_KINDS or not (
                fields["label"] is None or isinstance(fields["label"], str)):
            raise job.fail("the checkpoint's kind or label is not one a checkpoint has",
                           number)
        values = fields["position"]
        if not isinstance(values, list) or len(values) != 3:
            raise job.fail("the checkpoint's position is no [segment, offset, crc]", number)
        position = self.positions.get(seq) if log_start == self.log_start else None
        if position is None:
            position = LogPosition(*(_int(v, 0, "position", job, number) for v in values))
        meta: dict[str, Any] = {"id": checkpoint_id, "label": fields["label"],
                                "kind": fields["kind"],
                                "created": _time(fields["created"], "created", job, number)}
        if self.identity is not None:
            meta["uid"] = identity.to_text(self.identity.uid)
        body = from_json(fields["state"], self.job.path, number)
        if not isinstance(body, dict):
            raise job.fail("the checkpoint's state is no map", number)
        if seq == self.head and log_start == self.log_start and _digest(body) != _digest(
                self.body):
            raise job.fail("the checkpoint at the head holds another state than the head's",
                           number)
        folder = layout.checkpoints_dir(self.temp)
        ensure_dir(self.io, folder)
        self.checkpoint_paths.add(path)
        seal = import_chain.seal_at(self.chain, self.identity, self._readers()[1], position,
                                    seq)
        self.io.write_new(path,
                          encode(KIND_CHECKPOINT, seq, log_start, position, meta, body, seal))
        try:  # read back as a reader takes it: an image (its queue, inputs, usage)
            StateImage.from_file(read_snapshot(self.io, path, identity=self.identity,
                                               chain=self.chain), 1, path)
        except CorruptionError as exc:
            raise job.fail(exc.reason, number) from None
        if log_start == self.log_start and seq >= self.fold_from:
            self.to_check.append((seq, number, _digest(body["state"]), path))
        self.checkpoints += 1

    # --- blobs and vectors ---

    def _blob(self, fields: dict[str, Any], number: int) -> None:
        import base64

        from .blobs import BlobStore

        assert self.temp is not None
        digest = fields["digest"]
        if "data" in fields:
            try:
                data = base64.b64decode(fields["data"], validate=True)
            except ValueError:
                raise self.job.fail("the blob's data is no base64", number) from None
        else:
            size = _int(fields["size"], 0, "size", self.job, number)
            data = self._blob_beside(str(fields["file"]), size, number)
        if not isinstance(fields["compressed"], bool):
            raise self.job.fail("the blob's \"compressed\" is no true or false", number)
        ref = BlobStore(self.io, self.temp).put(data, compress=fields["compressed"])
        if ref.digest != digest or ref.size != fields["size"]:
            raise self.job.fail(f"the blob's bytes are not {digest}", number)
        self.blobs += 1

    def _blob_beside(self, name: str, size: int, number: int) -> bytes:
        folder = os.path.basename(self.job.path) + ".blobs"
        parts = name.split("/")
        if len(parts) != 2 or parts[1] in ("", ".", "..") or "\\" in name:
            raise self.job.fail(f"blob file {name!r} is not a file of {folder}/", number)
        path = os.path.join(os.path.dirname(os.path.abspath(self.job.path)), folder, parts[1])
        try:
            # Never through a symlink, nor a fifo or device (a crafted folder could point
            # a name anywhere), and no more bytes than the line says (memory).
            handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            with os.fdopen(handle, "rb") as file:
                info = os.fstat(file.fileno())
                if not stat.S_ISREG(info.st_mode) or info.st_size != size:
                    raise self.job.fail(f"blob file {path} is not a file of the {size} bytes "
                                        "its line says", number)
                return file.read(size + 1)
        except OSError as exc:
            raise self.job.fail(f"blob file {path} cannot be read ({exc.strerror}): copy the "
                                f"folder {folder} along with the export file", number) from None

    def _collection(self, fields: dict[str, Any], number: int) -> None:
        from .vectors import VectorCollection, create_collection

        assert self.temp is not None
        self._flush_documents()
        name = fields["name"]
        if name in self.collections:
            raise self.job.fail(f"collection {name!r} appears twice", number)
        self.collections.add(name)
        chain = import_chain.collection_chain(self.chain, self.identity, name)
        create_collection(self.io, self.temp, name, fields["dim"], fields["dtype"],
                          fields["metric"], chain)
        self.collection = VectorCollection(
            self.io, os.path.join(layout.vectors_dir(self.temp), name), chain=chain)

    def _document(self, fields: dict[str, Any], number: int) -> None:
        import base64

        import numpy as np

        from .vectors import VectorDocument

        collection = self.collection
        assert collection is not None
        if fields["collection"] != collection.name:
            raise self.job.fail(f"a document of collection {fields['collection']!r} after "
                                f"collection {collection.name!r}'s line", number)
        vector = np.frombuffer(base64.b64decode(fields["embedding"], validate=True),
                               dtype=np.dtype(collection.dtype).newbyteorder("<"))
        if vector.shape != (collection.dim,):
            raise self.job.fail(f"the embedding has {vector.size} values, not "
                                f"{collection.dim}", number)
        metadata = from_json(fields["metadata"], self.job.path, number)
        self.pending.append(VectorDocument(fields["id"], vector, fields["content"], metadata,
                                           fields["seq"], fields["turn"]))
        if len(self.pending) >= _DOCUMENT_BATCH:
            self._flush_documents()
        self.documents += 1

    def _flush_documents(self) -> None:
        if self.pending:
            assert self.collection is not None
            self.collection.upsert(self.pending)
            self.pending = []

    def _end(self, fields: dict[str, Any], number: int) -> None:
        if not self.folded:
            raise self.job.fail("the session has no state line", number)
        self._check_checkpoints()
        self._flush_documents()
        if self.collection is not None:
            self.collection.close()
            self.collection = None
        counts = {"frames": self.frames, "events": self.events,
                  "checkpoints": self.checkpoints, "blobs": self.blobs,
                  "documents": self.documents}
        for key, value in counts.items():
            if fields.get(key) != value:
                raise self.job.fail(f"the end line counts {fields.get(key)} {key}, the "
                                    f"session's lines hold {value}: lines were left out",
                                    number)
        if fields.get("session") != self.source_id:
            raise self.job.fail(f"the end line is not session {self.source_id!r}'s", number)
        assert self.temp is not None
        # session.json bound to the chain at the head, as create_session binds it
        chain_bindings.bind_new_manifest(self.io, self.temp, self.data, self.job.store.chain_key)
        for folder, _dirs, _files in os.walk(self.temp):
            self.io.fsync_dir(folder)

    def _check_checkpoints(self) -> None:
        """Refuse a checkpoint whose state is not the fold of the log at its seq: a
        reader starts ``state_at`` and forks from checkpoints, so a forged one would
        read as history. Only the state is compared: a vacuum (17.2) can leave a
        checkpoint's work and usage different from what the log folds to now. One fold
        in all: each checkpoint checked is the start of the fold to the next."""
        from . import state as state_module

        snapshots, reader = self._readers()
        bases: list[tuple[int, str]] = []
        for seq, number, digest, path in sorted(self.to_check):
            loaded = state_module.load(self.io, reader, snapshots, until_seq=seq,
                                       extra_bases=bases)
            if _digest(loaded.image.state) != digest:
                raise self.job.fail(f"the checkpoint's state is not the state the log "
                                    f"folds to at seq {seq}", number)
            bases = [(seq, path)]

    def _readers(self) -> tuple[SnapshotDir, LogReader]:
        """The session's snapshots and a reader of its log, as its own reader has them
        (a chained session's: under its chain)."""
        from .snapshot import SnapshotDir

        assert self.temp is not None
        reader = LogReader(self.io, self.log_path, self.identity)
        reader.chain = self.chain
        return SnapshotDir(self.io, self.temp, self.identity, self.chain), reader

    def abandon(self) -> None:
        if self.writer is not None and not self.writer.closed:
            self.writer.close(sync=False)
        if self.collection is not None:
            with contextlib.suppress(Exception):
                self.collection.close()
        if self.temp is not None and self.io.exists(self.temp):
            with contextlib.suppress(OSError):
                self.io.rmtree(self.temp)
            self.temp = None


def _int(value: object, least: int, name: str, job: _Import, number: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise job.fail(f"{name} is {value!r}, not an int >= {least}", number)
    return value


def _time(value: object, name: str, job: _Import, number: int) -> float:
    """A time field: a finite number (seconds since the epoch), not a str that float()
    would also take."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
            value):
        raise job.fail(f"{name} is {value!r}, not a number of seconds", number)
    return float(value)


def _digest(value: Any) -> bytes:
    """The SHA-256 of ``value`` as msgpack holds it, in a form where two values have the
    same one when they read back equal: maps in any key order, every NaN alike (an
    export writes each NaN as "nan", whatever its bits), True not 1. To compare values
    without keeping them."""
    return hashlib.sha256(msgspec.msgpack.encode(_canonical(_normal(value)))).digest()


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return ["m", sorted([msgspec.msgpack.encode(_canonical(key)), _canonical(item)]
                            for key, item in value.items())]
    if isinstance(value, list):
        return ["l", [_canonical(item) for item in value]]
    if isinstance(value, float) and math.isnan(value):
        return ["nan"]
    return msgspec.msgpack.encode(value)


def _normal(value: Any) -> Any:
    """``value`` as msgpack decodes it (tuples become lists), for comparing."""
    return msgspec.msgpack.decode(msgspec.msgpack.encode(value))


__all__ = ["ImportReport", "import_sessions"]
