"""The import of one transcript file into one session, exactly once.

A session made from a transcript keeps, in its metadata under ``transcript``, how far
the source was read: its path, the bytes and lines consumed (always whole lines), the
sha256 of those bytes, the file's mtime then, the seq of the metadata record that
wrote it, and the mapper's state (what a line may need of earlier ones). A run:

1. finds the session of the file (its id made from the tool's session id) and checks
   that the bytes it consumed are still the file's first bytes (same size and mtime:
   taken as unchanged; else hashed). If they changed, the file is imported whole into
   a new session (``-r2``, ``-r3``, ...), the old one kept, and the report says so.
2. reads the complete lines after them in chunks; each chunk is mapped, written, and
   then its end recorded with ``save_session_with_updates`` (one atomic, synced write).
   A torn last line is left for the next run.
3. Crash safety: every record a chunk writes names the chunk's end (``chunk``). If a
   crash fell between a chunk's writes and the record of its end, the next run finds
   those records after the recorded seq, maps the same chunk again from the same state
   (mapping is deterministic) and skips as many outputs as are already there. So each
   line is imported exactly once.
4. Two imports of one transcript at once (a ``--follow`` and a manual run): the
   session's writer lock orders them; the second, finding under the lock a cursor
   other than the one it read, starts again from the new one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from ..blobs import BlobBatch, BlobRef
from ..errors import FsStoreError, InvalidInput, MessageExists, SessionExists
from ..message_types import Message, ToolResultPart
from ..session import Session
from ..store import Store
from ..turns import MESSAGE_RECORD
from .common import (
    CHUNK_BYTES,
    CHUNK_LINES,
    AddMessage,
    Blobs,
    EditMessage,
    FinishTurn,
    Line,
    LineReader,
    Output,
    RawEvent,
    hash_prefix,
    parse_json_line,
)

#: The session metadata key of the import cursor (docs/CONVERTERS.md).
CURSOR_KEY = "transcript"
#: The metadata.extra key of a message's provenance: its first line, its chunk's end.
PROVENANCE_KEY = "transcript"
#: How many sessions one transcript may have been re-imported into (-r2 ... -rN).
MAX_REIMPORTS = 50


@dataclass
class FileReport:
    """What an import did (or, in a dry run, would do) with one transcript file.

    ``action``: ``created``, ``appended``, ``unchanged``, ``reimported`` (the part
    read before changed: imported whole into a new session, ``note`` naming the old),
    or ``failed`` (``note`` says why; the other files go on). ``malformed`` lists the
    numbers of lines kept as raw events because they did not parse; ``torn`` says a
    last line was incomplete and left for the next run."""

    source: str
    session: str
    action: str = "unchanged"
    lines: int = 0
    messages: int = 0
    edits: int = 0
    raw: int = 0
    bytes: int = 0
    malformed: list[int] = field(default_factory=list)
    torn: bool = False
    spawned_by: str | None = None
    note: str | None = None
    #: Sources found beside this file's own session (Claude Code's in-file
    #: sidechains), which the import takes next.
    related: list[Any] = field(default_factory=list, repr=False)

    def describe(self) -> str:
        """One line for people: what happened, counts, and anything to know."""
        text = (f"{self.action} {self.session} from {self.source}: {self.lines} lines, "
                f"{self.messages} messages, {self.raw} raw events, {self.bytes} bytes")
        if self.edits:
            text += f", {self.edits} messages completed"
        if self.spawned_by:
            text += f"; spawned by {self.spawned_by}"
        if self.malformed:
            shown = ", ".join(str(n) for n in self.malformed[:10])
            text += (f"; {len(self.malformed)} malformed line(s) kept as raw events "
                     f"(line {shown})")
        if self.torn:
            text += "; an incomplete last line is left for the next run"
        if self.note:
            text += f"; {self.note}"
        return text


@dataclass
class ImportReport:
    """What an import did, file by file (``files``), and whether it was a dry run."""

    tool: str
    root: str
    dry_run: bool = False
    files: list[FileReport] = field(default_factory=list)

    @property
    def sessions(self) -> int:
        return sum(1 for f in self.files if f.action in ("created", "reimported"))

    @property
    def messages(self) -> int:
        return sum(f.messages for f in self.files)

    @property
    def bytes(self) -> int:
        """Bytes of the lines imported (or, in a dry run, to import): a file of two
        sessions (Claude Code's in-file sidechains) counts each line in one of them."""
        return sum(f.bytes for f in self.files)

    @property
    def malformed(self) -> int:
        return sum(len(f.malformed) for f in self.files)

    def describe(self) -> str:
        """Every file's line, then a summary line."""
        lines = [f.describe() for f in self.files if f.action != "unchanged"]
        unchanged = sum(1 for f in self.files if f.action == "unchanged")
        failed = sum(1 for f in self.files if f.action == "failed")
        verb = "would import" if self.dry_run else "imported"
        lines.append(f"{self.tool}: {verb} {self.messages} messages, {self.bytes} bytes "
                     f"from {len({f.source for f in self.files})} transcripts "
                     f"({self.sessions} new sessions, "
                     f"{unchanged} unchanged, {failed} failed, {self.malformed} malformed "
                     "lines)")
        return "\n".join(lines)


class Source(Protocol):
    """A transcript as a tool module identifies it (see ``claude_code.source_of``)."""

    path: str
    tool_id: str
    session_id: str
    parent: str | None
    spawn_key: str | None
    started: float | None


class Mapper(Protocol):
    """A tool's line-by-line mapping (``claude_code.ClaudeCodeMapper``,
    ``codex.CodexMapper``): deterministic, so a chunk mapped twice gives the same
    outputs."""

    raw_kind: str

    def feed(self, line: Line, record: dict[str, Any] | None, error: str | None
             ) -> list[Output]: ...

    def flush(self) -> list[Output]: ...

    def state(self) -> dict[str, Any]: ...

    def facts(self) -> tuple[str | None, list[str], dict[str, Any]]: ...


class Tool(Protocol):
    """What the importer needs of a tool module."""

    NAME: str

    def make_mapper(self, source: Any, blobs: Blobs, state: dict[str, Any] | None
                    ) -> Mapper: ...

    def spawn_point(self, parent: dict[str, Any], key: str) -> str | None: ...

    def related_sources(self, source: Any, state: dict[str, Any]) -> list[Any]: ...


class Memo:
    """What a running ``--follow`` remembers of each file between reads: the hash of the
    bytes it consumed, so a grown file is not hashed from the start again."""

    def __init__(self) -> None:
        #: Each file's (bytes consumed, inode read, hash of those bytes). Used only for
        #: the same inode: a file replaced (renamed over) is hashed again. An in-place
        #: rewrite of the same inode is found by the next import without ``--follow``.
        self.hashers: dict[str, tuple[int, int | None, Any]] = {}
        #: Each file's (size, mtime_ns, inode) when last imported, and its session: a file
        #: that has neither grown nor been touched is not opened again.
        self.seen: dict[str, tuple[tuple[int, int, int], str]] = {}


def import_file(store: Store | None, tool: Tool, source: Any, *, dry_run: bool = False,
                memo: Memo | None = None) -> FileReport:
    """Import (or in a dry run, count) the new lines of one transcript."""
    for _attempt in range(_ATTEMPTS):
        report = FileReport(source=source.path, session=source.session_id)
        try:
            _import(store, tool, source, report, dry_run, memo)
        except (_CursorMoved, SessionExists):
            continue  # another import wrote the session meanwhile: start again from it
        except (FsStoreError, OSError) as exc:
            report.action = "failed"
            report.note = f"{type(exc).__name__}: {exc}"
        return report
    report.action = "failed"
    report.note = "another import kept writing its session: run again"
    return report


_ATTEMPTS = 3


class _CursorMoved(Exception):
    """The session's cursor is not the one the run planned from: another import wrote
    it between the read and the writer lock."""


def _candidates(source: Any) -> Iterable[str]:
    yield source.session_id
    for number in range(2, MAX_REIMPORTS + 1):
        yield f"{source.session_id[:120]}-r{number}"


def _import(store: Store | None, tool: Tool, source: Any, report: FileReport, dry_run: bool,
            memo: Memo | None) -> None:
    stat = os.stat(source.path)
    changed: list[str] = []
    target: str | None = None
    cursor: dict[str, Any] | None = None
    hasher: Any = None
    for candidate in _candidates(source):
        if store is None or not store.has_session(candidate):
            target = candidate
            break
        found = store.read_session(candidate).metadata.get(CURSOR_KEY)
        if not isinstance(found, dict) or found.get("source") != source.path:
            continue  # another transcript's session under this id
        hasher = _same_prefix(source.path, stat, found, memo)
        if hasher is None:
            changed.append(candidate)
            continue
        target, cursor = candidate, found
        break
    if target is None:
        raise FileExistsError(f"{source.path} was imported {MAX_REIMPORTS} times already "
                              "and changed each time: delete old sessions to import it again")
    report.session = target
    if changed:
        report.note = (f"the part of the transcript read before changed since it was "
                       f"imported into {changed[-1]} (kept as it was): imported whole")
    if cursor is not None and hasher is not None and stat.st_size == cursor["bytes"]:
        state = cursor.get("state")
        report.related = tool.related_sources(source, state if isinstance(state, dict)
                                              else {})
        return  # unchanged
    if store is None and not dry_run:
        raise ValueError("only a dry run goes without a store")
    run = _Run(store, tool, source, report, dry_run, target, cursor, hasher)
    run.go()
    report.related = tool.related_sources(source, run.mapper.state())
    if memo is not None and not dry_run:
        inode = run.reader.inode if run.reader is not None else stat.st_ino
        memo.hashers[source.path] = (run.consumed, inode, run.reader_hasher.copy())
    if report.lines or (cursor is None and run.consumed):
        # (A new session whose lines all went to the file's other session is still
        # made: it holds the cursor.)
        report.action = "reimported" if changed else ("appended" if cursor else "created")


def _same_prefix(path: str, stat: os.stat_result, cursor: dict[str, Any],
                 memo: Memo | None) -> Any:
    """A sha256 of the bytes the cursor consumed when they are still the file's first
    bytes; None when they changed (the file shrank, or its bytes differ)."""
    size = cursor.get("bytes")
    if not isinstance(size, int) or size < 0 or stat.st_size < size:
        return None
    if stat.st_size == size and stat.st_mtime_ns == cursor.get("mtime_ns") \
            and cursor.get("ino") in (None, stat.st_ino):
        # Untouched since: not read at all. (The inode too: a file replaced by another
        # of the same size, its mtime kept, as ``cp -p`` or ``rsync -a`` do, is hashed.
        # A cursor of an earlier version has none: taken as before, on size and mtime,
        # rather than hashing every unchanged file on every run.)
        return hashlib.sha256()
    known = memo.hashers.get(path) if memo is not None else None
    if known is not None and known[0] == size and known[1] == stat.st_ino:
        return known[2].copy()
    hasher, whole = hash_prefix(path, size)
    if not whole or hasher.hexdigest() != cursor.get("sha256"):
        return None
    return hasher


class _Run:
    """One import of a file's new lines into one session."""

    def __init__(self, store: Store | None, tool: Tool, source: Any, report: FileReport,
                 dry_run: bool, target: str, cursor: dict[str, Any] | None, hasher: Any
                 ) -> None:
        self.store, self.tool, self.source, self.report = store, tool, source, report
        self.dry_run, self.target = dry_run, target
        self.cursor = cursor
        self.session: Session | None = None
        # The chunk's blobs, made durable together before the chunk's first record.
        self.batch: BlobBatch | None = None
        self.consumed = cursor["bytes"] if cursor else 0
        self.lines = cursor.get("lines", 0) if cursor else 0
        self.reader_hasher: Any = hasher if hasher is not None else hashlib.sha256()
        state = cursor.get("state") if cursor else None
        self.mapper = tool.make_mapper(source, Blobs(self._put, self._message),
                                       state if isinstance(state, dict) else None)
        # A session is created while its first chunk is written: its first cursor (0
        # bytes read) must hold the state before that chunk, not the one mapping it.
        self.start_state = json.loads(json.dumps(self.mapper.state()))
        self.reader: LineReader | None = None
        self.skip: int = 0
        self.resume_at: int | None = None
        # Blobs put in this run, by digest: a transcript that holds the same image or
        # output again costs no second write (and fsync) of the same bytes.
        self.blob_refs: dict[str, dict[str, Any]] = {}

    # --- what the mapper may use ---

    def _put(self, data: bytes, media_type: str) -> dict[str, Any]:
        digest = hashlib.sha256(data).hexdigest()
        known = self.blob_refs.get(f"{digest} {media_type}")
        if known is not None:
            return dict(known)
        if self.dry_run:
            ref = dict(BlobRef("sha256:" + digest, len(data), media_type))
        else:
            if self.batch is None:
                self.batch = BlobBatch(self._open().blobs)
            ref = dict(self.batch.put(data, media_type))
        if len(self.blob_refs) < 4096:
            self.blob_refs[f"{digest} {media_type}"] = ref
        return dict(ref)

    def _message(self, message_id: str) -> Message | None:
        if self.dry_run or self.session is None:
            return None
        # Mapping a chunk again after a crash: the message as the cursor left it, not
        # as the chunk's own (skipped) edit made it.
        at_seq = self.cursor.get("seq") if self.resume_at is not None and self.cursor \
            else None
        try:
            return self.session.messages.get(message_id, at_seq=at_seq)
        except (FsStoreError, KeyError):
            return None

    # --- the run ---

    def go(self) -> None:
        try:
            self._go()
        finally:
            if self.batch is not None:
                self.batch.discard()  # blobs no record refers to (an error stopped it)
            if self.session is not None:
                self.session.close()

    def _go(self) -> None:
        reader = LineReader(self.source.path, self.consumed, self.lines + 1,
                            self.reader_hasher)
        self.reader = reader
        outputs: list[Output] = []
        count = size = 0
        last: Line | None = None
        for line in reader:
            if last is None and self.cursor is not None and not self.dry_run:
                # Opened (locked) only when there is a new line: a torn line alone, as
                # a --follow sees it mostly, costs no open. Under the lock the cursor
                # must be the one read before it: else another import moved it (or a
                # crash left it in the log only, which opening rolled forward).
                if self._open().metadata.get(CURSOR_KEY) != self.cursor:
                    raise _CursorMoved
                self._find_unrecorded()
            record, error = (None, "longer than the line limit") if line.data is None \
                else parse_json_line(line.data)
            foreign = getattr(self.mapper, "foreign_lines", 0)
            outputs.extend(self.mapper.feed(line, record, error))
            if getattr(self.mapper, "foreign_lines", 0) == foreign:
                # This session's line (not one the file's other session takes): what
                # its report counts, so a file's sessions add up to the file.
                self.report.lines += 1
                self.report.bytes += line.end - line.start
                if error is not None:
                    self.report.malformed.append(line.number)
            count += 1
            size += line.end - line.start
            last = line
            at_resume = self.resume_at is not None and line.end >= self.resume_at
            if at_resume or (self.resume_at is None and (
                    count >= CHUNK_LINES or size >= CHUNK_BYTES)):
                self._chunk(outputs, line, reader.hasher, count, size)
                outputs, count, size = [], 0, 0
        if count and last is not None:
            self._chunk(outputs, last, reader.hasher, count, size)
        self.reader_hasher = reader.hasher
        self.report.torn = os.path.getsize(self.source.path) > self.consumed

    def _chunk(self, outputs: list[Output], last: Line, hasher: Any, count: int,
               size: int) -> None:
        outputs = outputs + self.mapper.flush()
        if self.dry_run:
            for output in outputs:
                self._count(output)
        else:
            self._write(outputs, last.end)
            self._record(last, hasher)
        self.consumed, self.lines = last.end, last.number
        self.skip, self.resume_at = 0, None

    def _count(self, output: Output) -> None:
        if isinstance(output, AddMessage):
            self.report.messages += 1
        elif isinstance(output, EditMessage):
            self.report.edits += 1
        elif isinstance(output, RawEvent):
            self.report.raw += 1

    def _open(self) -> Session:
        assert self.store is not None and not self.dry_run
        if self.session is None:
            if self.store.has_session(self.target):
                self.session = self.store.open_session(self.target, durability="none")
            else:
                self.session = self._create()
        return self.session

    def _create(self) -> Session:
        title, tags, metadata = self.mapper.facts()
        spawned_by, at_seq = self._spawn_origin()
        empty = hashlib.sha256().hexdigest()
        metadata = {**metadata, CURSOR_KEY: self._cursor(0, 0, empty, 0,
                                                         state=self.start_state)}
        if spawned_by is None and self.source.parent is not None:
            metadata["parent_session"] = self.source.parent  # not imported (yet)
        assert self.store is not None
        session = self.store.create_session(self.target, title=title, tags=tags,
                                            metadata=metadata, durability="none",
                                            spawned_by=spawned_by, at_seq=at_seq)
        self.report.spawned_by = spawned_by
        return session

    def _spawn_origin(self) -> tuple[str | None, int | None]:
        assert self.store is not None
        parent = self.source.parent
        if parent is None or not self.store.has_session(parent):
            return None, None
        # The parent's latest import: a parent transcript that changed was imported
        # again into PARENT-r2, ... (before this one: parents are imported first).
        for number in range(2, MAX_REIMPORTS + 1):
            newer = f"{parent[:120]}-r{number}"
            if not self.store.has_session(newer):
                break
            parent = newer
        reader = self.store.read_session(parent)
        at_seq = None
        found = reader.metadata.get(CURSOR_KEY)
        key = self.source.spawn_key
        if isinstance(found, dict) and isinstance(found.get("state"), dict) and key:
            message_id = self.tool.spawn_point(found["state"], key)
            if message_id is not None:
                try:
                    at_seq = reader.messages.get(message_id).seq
                except (FsStoreError, KeyError):
                    at_seq = None
        started = self.source.started
        if started is None:
            started = getattr(self.mapper, "first_ts", None)
        if at_seq is None and started is not None:
            # No call names it: the parent's last message from before it started.
            earlier = [m.seq for m in reader.messages.all()
                       if m.created is not None and m.created <= started]
            at_seq = earlier[-1] if earlier and earlier[-1] is not None else None
        return parent, at_seq

    def _cursor(self, consumed: int, lines: int, digest: str, seq: int | None,
                mtime_ns: int | None = None, state: dict[str, Any] | None = None,
                ino: int | None = None) -> dict[str, Any]:
        return {"tool": self.tool.NAME, "source": self.source.path,
                "tool_session_id": self.source.tool_id, "bytes": consumed, "lines": lines,
                "sha256": digest, "mtime_ns": mtime_ns, "ino": ino, "seq": seq,
                "state": self.mapper.state() if state is None else state}

    def _record(self, last: Line, hasher: Any) -> None:
        """Record how far the source was read, with the session's title, tags and
        metadata as the lines so far say, in one synced write."""
        session = self._open()
        title, tags, metadata = self.mapper.facts()
        stat = os.stat(self.source.path)
        # The metadata record is the next seq: recorded in it, so a next run reads what
        # a crash may have left after it (and only that).
        seq = session.head + 1
        kept = {key: value for key, value in session.metadata.items()
                if key in ("parent_session",)}
        # The size, mtime and inode let the next run skip the hash only when they are
        # the file's that was read: one replaced meanwhile gets no mtime (hashed).
        same = stat.st_size == last.end and self.reader is not None \
            and stat.st_ino == self.reader.inode
        cursor = self._cursor(last.end, last.number, hasher.hexdigest(), seq,
                              stat.st_mtime_ns if same else None, ino=stat.st_ino)
        session.save_session_with_updates(
            [], title=title if title is not None else session.title, tags=tags,
            metadata={**metadata, **kept, CURSOR_KEY: cursor})
        self.cursor = cursor

    def _find_unrecorded(self) -> None:
        """Records a crash left after the last recorded chunk: how many, and the end of
        their chunk, which the run then maps again and skips that many outputs of."""
        assert self.session is not None and self.cursor is not None
        seq = self.cursor.get("seq")
        if not isinstance(seq, int):
            return
        count, chunk = 0, 0
        for event in self.session.events(after_seq=seq):
            value = _chunk_of(event.kind, event.data, self.mapper.raw_kind)
            if value is not None:
                count += 1
                chunk = value
        if count and chunk > self.consumed:
            self.skip, self.resume_at = count, chunk

    # --- writing ---

    def _write(self, outputs: list[Output], chunk: int) -> None:
        session = self._open()
        if self.batch is not None:
            # Every blob the chunk's records refer to is durable before the first of
            # them is written: a crash never leaves a record of a blob that is lost.
            self.batch.commit()
        skipped = 0
        batch: list[AddMessage] = []

        def add_batch() -> None:
            if batch:
                self._add(session, batch, chunk)
                batch.clear()

        for output in outputs:
            skipping = skipped < self.skip
            if isinstance(output, FinishTurn):
                if not skipping:
                    add_batch()
                    if session.current_turn is not None:
                        session.finish_turn(ts=output.ts)
                continue
            if skipping:
                skipped += 1
                continue
            self._count(output)
            if isinstance(output, AddMessage):
                if batch and batch[-1].ts != output.ts:
                    add_batch()
                batch.append(output)
                continue
            add_batch()
            if isinstance(output, EditMessage):
                message = _with_provenance(output.message, output.line, chunk)
                try:
                    session.messages.edit(message, ts=output.ts)
                except (InvalidInput, MessageExists, KeyError) as exc:
                    # One record for each output, whatever happens: what a crash
                    # recovery counts on. The line is kept, raw, with why.
                    self.report.edits -= 1
                    self.report.raw += 1
                    session.append({"line": output.line, "chunk": chunk,
                                    "error": _text(f"message {message.id} not completed: "
                                                   f"{exc}"),
                                    **_kept(session, msgspec.to_builtins(message))},
                                   kind=self.mapper.raw_kind, ts=output.ts)
            elif isinstance(output, RawEvent):
                self._raw(session, output, chunk)
        add_batch()

    def _raw(self, session: Session, output: RawEvent, chunk: int) -> None:
        try:
            session.append({**output.data, "chunk": chunk}, kind=output.kind, ts=output.ts)
        except InvalidInput as exc:
            # A record msgpack cannot hold (nesting, an int past 64 bits, a lone
            # surrogate): its place and why, so the line is not retried forever, and
            # the record itself as JSON in a blob, so it is not lost.
            session.append({"line": output.line, "chunk": chunk,
                            "error": _text(f"not storable: {exc}"),
                            **_kept(session, output.data.get("record"))},
                           kind=output.kind, ts=output.ts)

    def _add(self, session: Session, batch: list[AddMessage], chunk: int) -> None:
        messages = [_with_provenance(a.message, a.line, chunk) for a in batch]
        try:
            session.messages.append_many(messages, ts=batch[0].ts)
            return
        except (InvalidInput, MessageExists):
            pass  # one of them: appended one by one below, each mended or kept raw
        for item, message in zip(batch, messages, strict=True):
            _append_one(session, message, item, self.mapper.raw_kind, chunk, self.report)


def _append_one(session: Session, message: Message, item: AddMessage, raw_kind: str,
                chunk: int, report: FileReport) -> None:
    attempts: list[Callable[[Message], Message]] = [
        lambda m: m, _as_orphans, lambda m: _renamed(_as_orphans(m), item.line)]
    error: Exception | None = None
    for mend in attempts:
        try:
            session.messages.append(mend(message), ts=item.ts)
            return
        except (InvalidInput, MessageExists) as exc:
            error = exc
    # Never lose a line over one message the store refuses: kept as a raw event.
    report.messages -= 1
    report.raw += 1
    session.append({"line": item.line, "chunk": chunk, "error": _text(str(error)),
                    "role": message.role, **_kept(session, msgspec.to_builtins(message))},
                   kind=raw_kind, ts=item.ts)


def _text(text: str) -> str:
    """An error for a raw event: bounded, and storable (a lone surrogate of the
    transcript's replaced)."""
    return text[:400].encode("utf-8", "replace").decode("utf-8")


def _kept(session: Session, value: Any) -> dict[str, Any]:
    """``{"kept": REF}``: ``value`` (a record or message the store refused) as JSON in
    a blob (lone surrogates escaped, so it always encodes), or nothing when even that
    fails (nesting deeper than the JSON encoder goes): a refused line is not lost."""
    if value is None:
        return {}
    try:
        data = json.dumps(value, ensure_ascii=True, default=repr).encode("ascii")
    except (ValueError, TypeError, RecursionError):
        return {}
    return {"kept": dict(session.blobs.put(data, "application/json"))}


def _as_orphans(message: Message) -> Message:
    """Tool results whose call the session does not hold (it was on a line that did
    not parse, or before the part a compaction dropped) are stored as orphans."""
    fixed = []
    for part in message.parts:
        if isinstance(part, ToolResultPart) and not part.orphan:
            part = ToolResultPart(call_id=part.call_id, output=part.output,
                                  is_error=part.is_error, name=part.name, orphan=True,
                                  provider_metadata=part.provider_metadata)
        fixed.append(part)
    return Message(role=message.role, parts=fixed, id=message.id, metadata=message.metadata)


def _renamed(message: Message, line: int) -> Message:
    return Message(role=message.role, parts=message.parts,
                   id=f"{(message.id or 'message')[:200]}-L{line}", metadata=message.metadata)


def _with_provenance(message: Message, line: int, chunk: int) -> Message:
    extra = {**message.metadata.extra, PROVENANCE_KEY: {"line": line, "chunk": chunk}}
    return Message(role=message.role, parts=message.parts, id=message.id,
                   metadata=msgspec.structs.replace(message.metadata, extra=extra))


def _chunk_of(kind: str, data: Any, raw_kind: str) -> int | None:
    if not isinstance(data, dict):
        return None
    if kind == raw_kind:
        value = data.get("chunk")
    elif kind == MESSAGE_RECORD:
        message = data.get("message")
        metadata = message.get("metadata") if isinstance(message, dict) else None
        extra = metadata.get("extra") if isinstance(metadata, dict) else None
        mark = extra.get(PROVENANCE_KEY) if isinstance(extra, dict) else None
        value = mark.get("chunk") if isinstance(mark, dict) else None
    else:
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None
