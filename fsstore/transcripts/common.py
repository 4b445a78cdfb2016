"""What the importers of Claude Code and Codex transcripts share: finding transcripts
and reading a JSONL file line by line (a torn last line left for later, an oversized
line skipped with its size), session ids made from a tool's ids through the session-id
allowlist, bounded text, the outputs a mapper gives the importer, and the base of both
mappers (:class:`MapperBase`: a line's time, turns, the assistant message gathered over
several lines, a line refused as a message) (docs/CONVERTERS.md, "Claude Code and Codex
transcripts").

Transcripts come from outside: nothing in them becomes a path (ids pass
``layout.check_session_id`` or are replaced by a hash), every text kept in a manifest
is cut to a bound, and a line that does not parse is kept as a raw event, never fatal.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import errno
import hashlib
import json
import os
import re
import stat
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import msgspec

from .. import layout
from ..convert.common import parse_data_url
from ..errors import InvalidMessage, InvalidSessionId, TranscriptNotFound
from ..message_types import FilePart, Message, MessagePart, TextPart, ToolResultPart

#: A line longer than this is not parsed: it becomes a raw event of its size and hash.
MAX_LINE_BYTES = 32 << 20
#: A tool output (or a text) longer than this many bytes goes to a blob.
LONG_OUTPUT_BYTES = 16 << 10
#: A raw record whose JSON is longer than this goes to a blob, the event keeping its type.
LONG_RAW_BYTES = 64 << 10
#: Titles, tags and short texts kept in a manifest are cut to this many characters.
MAX_TEXT = 200
#: How many entries the maps a mapper keeps between runs (tool names by call id, ...)
#: hold at most: the manifest that keeps them is bounded.
MAX_REMEMBERED = 256
#: Lines read before the importer writes what it has and records how far it read.
CHUNK_LINES = 4096
CHUNK_BYTES = 16 << 20

_READ_SIZE = 1 << 20
_UNSAFE_ID = re.compile(r"[^A-Za-z0-9._-]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class Line(NamedTuple):
    """One complete line of a transcript: its 1-based ``number``, the byte offsets of
    its ``start`` and of its ``end`` (after the newline), and its bytes without the
    newline (None for a line over MAX_LINE_BYTES, skipped unread)."""

    number: int
    start: int
    end: int
    data: bytes | None


class LineReader:
    """The complete lines of a file from a byte offset, each byte of them fed to
    ``hasher`` (so that it holds the hash of the prefix read so far). A last line
    without its newline is torn (the tool is writing it): it is not given, and not
    hashed, so the next run reads it whole. A line over ``max_line`` bytes is given with
    ``data=None``, never held in memory."""

    def __init__(self, path: str, start: int, number: int, hasher: Any,
                 max_line: int | None = None) -> None:
        self.path, self.start, self.number = path, start, number
        self.hasher = hasher
        self.max_line = MAX_LINE_BYTES if max_line is None else max_line
        #: The inode of the file read (set when the reading starts).
        self.inode: int | None = None

    def __iter__(self) -> Iterator[Line]:
        with open_transcript(self.path) as file:
            self.inode = os.fstat(file.fileno()).st_ino
            file.seek(self.start)
            pending = bytearray()
            line_start = self.start
            skipping: Any = None  # the hash of an oversize line's bytes dropped so far
            dropped = 0
            while chunk := file.read(_READ_SIZE):
                begin = 0
                while (cut := chunk.find(b"\n", begin)) >= 0:
                    piece = chunk[begin:cut + 1]
                    begin = cut + 1
                    if skipping is not None:
                        skipping.update(piece)
                        self.hasher = skipping
                        data = None
                        length = dropped + len(piece)
                    else:
                        self.hasher.update(pending)
                        self.hasher.update(piece)
                        length = len(pending) + len(piece)
                        data = bytes(pending) + piece[:-1] if length <= self.max_line else None
                    end = line_start + length
                    yield Line(self.number, line_start, end, data)
                    self.number += 1
                    line_start = end
                    pending.clear()
                    skipping, dropped = None, 0
                rest = chunk[begin:]
                if skipping is None and len(pending) + len(rest) > self.max_line:
                    # Hashed on a copy: if the line never ends, the prefix hash must not
                    # hold its bytes.
                    skipping = self.hasher.copy()
                    skipping.update(pending)
                    dropped = len(pending)
                    pending.clear()
                if skipping is not None:
                    skipping.update(rest)
                    dropped += len(rest)
                else:
                    pending += rest


def is_plain_file(path: str) -> bool:
    """A regular file, not a link: a FIFO named ``x.jsonl`` would block a read forever,
    and a link could lead anywhere."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def open_transcript(path: str) -> Any:
    """``path`` opened for reading in binary, refusing what discovery would have: a
    symlink (it could lead anywhere) and anything but a regular file (a FIFO would block
    a read forever). Checked on the open file itself, so a file swapped for a link
    between discovery and the read is refused (OSError naming the path)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) \
        | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(exc.errno, "a symlink, not followed: a transcript must be a "
                          "regular file", path) from exc
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file: a transcript must be one", path)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def transcript_files(root: str, max_depth: int, wanted: Callable[[str], bool],
                     missing: str) -> list[str]:
    """``root`` itself when it is a file, else the plain files below it (at most
    ``max_depth`` folders down) whose name is ``wanted``, in no set order;
    TranscriptNotFound saying ``missing`` when ``root`` is neither."""
    if os.path.isfile(root):
        # A file named by the user may be a link (read where it leads); one found in a
        # folder may not (see is_plain_file).
        return [os.path.realpath(root) if os.path.islink(root) else os.path.abspath(root)]
    if not os.path.isdir(root):
        raise TranscriptNotFound(missing)
    found: list[str] = []
    base = os.path.abspath(root)
    for folder, dirs, files in os.walk(base):
        if folder[len(base):].count(os.sep) >= max_depth:
            dirs[:] = []
        dirs.sort()
        found.extend(os.path.join(folder, name) for name in files
                     if wanted(name) and is_plain_file(os.path.join(folder, name)))
    return found


def first_record(path: str) -> dict[str, Any]:
    """The JSON object on the first line of a transcript (read up to 1 MiB), or an
    empty dict when that line is not one."""
    with open_transcript(path) as file:
        head = file.readline(1 << 20)
    try:
        value = json.loads(head)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def hash_prefix(path: str, size: int) -> tuple[Any, bool]:
    """A sha256 fed with the first ``size`` bytes of ``path``, and False when the file
    is shorter than that now."""
    hasher = hashlib.sha256()
    left = size
    with open_transcript(path) as file:
        while left:
            chunk = file.read(min(_READ_SIZE, left))
            if not chunk:
                return hasher, False
            hasher.update(chunk)
            left -= len(chunk)
    return hasher, True


def parse_json_line(data: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """The JSON object of a line, or None and why it is not one."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as exc:
        return None, f"not JSON: {str(exc)[:MAX_TEXT]}"
    if not isinstance(value, dict):
        return None, f"a JSON {type(value).__name__}, not an object"
    return value, None


def session_id_for(prefix: str, tool_id: str, suffix: str = "") -> str:
    """The fsstore session id of a tool's session id: ``PREFIX-ID`` when ``ID`` is made of
    the allowed characters and short enough, else ``PREFIX-`` and the allowed part with
    a hash of the whole, so that two different tool ids never meet (the allowlist of
    ``layout.check_session_id`` is the only way from a transcript to a path)."""
    clean = _UNSAFE_ID.sub("", tool_id)
    room = layout.MAX_SESSION_ID - len(prefix) - len(suffix) - 1
    if clean != tool_id or not clean or len(clean) > room:
        digest = hashlib.sha256(tool_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        clean = f"{clean[:max(0, room - 17)]}-{digest}".lstrip("-")
    session_id = f"{prefix}-{clean}{suffix}"
    try:
        return layout.check_session_id(session_id, new=True)
    except InvalidSessionId:
        digest = hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()
        return f"{prefix}-{digest[:32]}{suffix}"


def short_text(value: object, limit: int = MAX_TEXT) -> str | None:
    """A str safe for a title or a tag: control characters as spaces, lone surrogates
    replaced, whitespace collapsed, at most ``limit`` characters; None for no text."""
    if not isinstance(value, str):
        return None
    text = value.encode("utf-8", "replace").decode("utf-8")
    text = " ".join(_CONTROL.sub(" ", text).split())
    if not text:
        return None
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


def timestamp(value: object) -> float | None:
    """Seconds since the epoch of an ISO 8601 time (``2025-07-01T09:00:00.000Z``)."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        stamp = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.timezone.utc)
    return stamp.timestamp()


def remember(mapping: dict[str, Any], key: str, value: Any) -> None:
    """Put ``key`` in a bounded map kept between runs, forgetting the oldest entry. A
    key or str value over 256 characters is not kept: the manifest that keeps the map
    must stay far below its 1 MiB."""
    if len(key) > 256 or (isinstance(value, str) and len(value) > 256):
        return
    mapping.pop(key, None)
    mapping[key] = value
    while len(mapping) > MAX_REMEMBERED:
        del mapping[next(iter(mapping))]


# --- what a mapper gives the importer ---------------------------------------------------


class AddMessage(NamedTuple):
    """Append ``message`` (its id set); ``prompt`` when it is a user prompt, which
    starts a turn."""

    message: Message
    ts: float | None
    line: int
    prompt: bool = False


class EditMessage(NamedTuple):
    """Replace message ``message.id`` (an earlier output added it) with this version."""

    message: Message
    ts: float | None
    line: int


class RawEvent(NamedTuple):
    """Append an event of ``kind`` (``claude_code.raw``, ``codex.raw``) holding ``data``."""

    kind: str
    data: dict[str, Any]
    ts: float | None
    line: int


class FinishTurn(NamedTuple):
    """Close the current turn (a user prompt follows) at ``ts``: the time of the
    turn's last line."""

    ts: float | None = None


Output = AddMessage | EditMessage | RawEvent | FinishTurn


class Blobs(NamedTuple):
    """What a mapper may do besides giving outputs: put bytes in a blob (returns the
    BlobRef dict; in a dry run, the ref without writing) and read a message it added
    in an earlier run (None when there is none, or in a dry run)."""

    put: Callable[[bytes, str], dict[str, Any]]
    message: Callable[[str], Message | None]


def raw_record(kind: str, line: Line, record: dict[str, Any] | None, ts: float | None,
               blobs: Blobs, error: str | None = None) -> RawEvent:
    """A raw event of a line: the record as it is (or, over LONG_RAW_BYTES, a blob of
    the line and the record's type); a line that is not a JSON object keeps the error
    and the first bytes of the line."""
    data: dict[str, Any] = {"line": line.number, "offset": line.start}
    if error is not None:
        data["error"] = error
        if line.data is None:
            data["bytes"] = line.end - line.start
        else:
            data["text"] = line.data[:MAX_TEXT * 8].decode("utf-8", "replace")
        return RawEvent(kind, data, ts, line.number)
    assert line.data is not None
    if len(line.data) > LONG_RAW_BYTES:
        data["type"] = short_text(record.get("type")) if record else None
        data["blob"] = blobs.put(line.data, "application/json")
    else:
        data["record"] = record
    return RawEvent(kind, data, ts, line.number)


# --- blobs of long outputs and files ----------------------------------------------------

#: A text part longer than this many bytes becomes a text/plain file part in a blob.
LONG_TEXT_BYTES = 1 << 20
_PREVIEW = 400


def blobify(message: Message, blobs: Blobs) -> Message:
    """``message`` with its files in blobs (inline bytes and base64 ``data:`` URLs), its
    tool outputs over LONG_OUTPUT_BYTES in a blob (the output is then the BlobRef, and
    the part's ``provider_metadata.transcript`` keeps a preview and the size), and texts
    over LONG_TEXT_BYTES as text/plain file parts: records stay small, and a transcript's
    images and logs are stored once, verified, and collected like any attachment."""
    parts: list[MessagePart] = []
    for part in message.parts:
        if isinstance(part, FilePart) and part.blob is None:
            data = part.data
            if data is None and part.url is not None:
                parsed = parse_data_url(part.url)
                data = parsed[1] if parsed else None
            if data is not None:
                part = FilePart(media_type=part.media_type, name=part.name,
                                blob=blobs.put(data, part.media_type),
                                provider_metadata=part.provider_metadata)
        elif isinstance(part, ToolResultPart):
            part = _result_blobs(part, blobs)
        elif isinstance(part, TextPart) and len(part.text) > LONG_TEXT_BYTES // 4:
            data = part.text.encode("utf-8", "surrogatepass")
            if len(data) > LONG_TEXT_BYTES:
                part = FilePart(media_type="text/plain", blob=blobs.put(data, "text/plain"),
                                provider_metadata=part.provider_metadata)
        parts.append(part)
    return Message(role=message.role, parts=parts, id=message.id, metadata=message.metadata)


def _result_blobs(part: ToolResultPart, blobs: Blobs) -> ToolResultPart:
    output = part.output
    if isinstance(output, list):
        output = [_block_blobs(block, blobs) for block in output]
        data = json.dumps(output, ensure_ascii=False).encode("utf-8", "surrogatepass")
        if len(data) <= LONG_OUTPUT_BYTES:
            return msgspec.structs.replace(part, output=output)
        preview, media = data[:_PREVIEW].decode("utf-8", "replace"), "application/json"
    elif isinstance(output, str) and len(output) > LONG_OUTPUT_BYTES // 4:
        data = output.encode("utf-8", "surrogatepass")
        if len(data) <= LONG_OUTPUT_BYTES:
            return part
        preview, media = output[:_PREVIEW], "text/plain"
    else:
        return part
    kept = {**part.provider_metadata,
            "transcript": {"preview": preview, "bytes": len(data), "media_type": media}}
    return msgspec.structs.replace(part, output=blobs.put(data, media),
                                   provider_metadata=kept)


def _block_blobs(block: Any, blobs: Blobs) -> Any:
    """An Anthropic image block of a tool result, its base64 data in a blob."""
    if not (isinstance(block, dict) and block.get("type") == "image"):
        return block
    source = block.get("source")
    if not (isinstance(source, dict) and source.get("type") == "base64"
            and isinstance(source.get("data"), str)):
        return block
    given = source.get("media_type")
    media = given if isinstance(given, str) else "application/octet-stream"
    try:
        data = base64.b64decode(source["data"], validate=True)
    except (binascii.Error, ValueError):
        return block
    return {**block, "source": {"type": "blob", "media_type": media,
                                "blob": blobs.put(data, media)}}


# --- the base of the mappers --------------------------------------------------------------


class OpenMessage:
    """The assistant message a mapper gathers from several lines: ``written`` once an
    output added it (a later line then edits it), ``dirty`` while it holds what no
    output gave yet. ``key``: what the lines of one message share (Claude Code's
    ``message.id``; empty where the lines do not say)."""

    def __init__(self, message: Message, line: int, ts: float | None, written: bool,
                 key: str = "") -> None:
        self.message, self.key, self.line, self.ts = message, key, line, ts
        self.written, self.dirty = written, not written


class MapperBase:
    """What the Claude Code and Codex mappers share: the state both keep between runs
    (tool names by call id, the turn, the first prompt, the open message, the last
    time seen), a line's time, a user prompt closing the turn before it, the open
    assistant message given as an add or an edit, and a line refused as a message kept
    raw. A mapper gives its lines in :meth:`_feed`."""

    raw_kind: str

    def __init__(self, blobs: Blobs, state: dict[str, Any]) -> None:
        self.blobs = blobs
        self.names: dict[str, str] = dict(state.get("names") or {})
        self.prompt = bool(state.get("prompt"))
        self.first_prompt: str | None = state.get("first_prompt")
        self.open: OpenMessage | None = None
        self.open_id: str | None = state.get("open_id")
        self.last_ts: float | None = state.get("last_ts")
        self.turn_end: float | None = None
        self.started = bool(state.get("started"))

    def flush(self) -> list[Output]:
        out: list[Output] = []
        self._emit_open(out)
        return out

    def feed(self, line: Line, record: dict[str, Any] | None, error: str | None
             ) -> list[Output]:
        out = self._feed(line, record, error)
        # A turn is closed only once the session holds something: a session created
        # by a chunk of no output (its metadata record is in turn 1) starts the same.
        self.started = self.started or bool(out)
        return out

    def _feed(self, line: Line, record: dict[str, Any] | None, error: str | None
              ) -> list[Output]:
        raise NotImplementedError

    def _raw(self, line: Line, record: dict[str, Any] | None, ts: float | None,
             error: str | None = None) -> RawEvent:
        return raw_record(self.raw_kind, line, record, ts, self.blobs, error)

    def _clock(self, record: dict[str, Any]) -> tuple[float | None, float | None]:
        """The time a record gives (or None) and the time of its line: a line without
        a time (a snapshot, a note) takes the last one before it."""
        stamp = timestamp(record.get("timestamp"))
        self.turn_end, ts = self.last_ts, stamp if stamp is not None else self.last_ts
        if stamp is not None:
            self.last_ts = stamp
        return stamp, ts

    def _refused(self, line: Line, record: dict[str, Any], ts: float | None,
                 exc: InvalidMessage, out: list[Output]) -> None:
        """A line that does not make a message fsstore stores: kept raw, saying why."""
        self._close(out)
        event = self._raw(line, record, ts)
        event.data["error"] = f"not a message fsstore stores: {exc}"[:400]
        out.append(event)

    def _add(self, message: Message, text: str, prompt: bool, line: Line,
             ts: float | None, out: list[Output]) -> None:
        """Add ``message`` (its blobs made); a prompt (``text`` is its text) after what
        was not a prompt ends the turn before it at that turn's last line."""
        if prompt and not self.prompt and (self.started or out):
            out.append(FinishTurn(self.turn_end if self.turn_end is not None else ts))
        if prompt and self.first_prompt is None:
            self.first_prompt = short_text(text)
        out.append(AddMessage(message, ts, line.number, prompt))
        self.prompt = prompt

    def _completing(self, opened: OpenMessage) -> None:
        """What a mapper sets on the open message before it is given."""

    def _emit_open(self, out: list[Output]) -> None:
        opened = self.open
        if opened is None or not opened.dirty:
            return
        self._completing(opened)
        if opened.written:
            out.append(EditMessage(opened.message, opened.ts, opened.line))
        else:
            out.append(AddMessage(opened.message, opened.ts, opened.line))
        opened.written, opened.dirty = True, False

    def _close(self, out: list[Output]) -> None:
        self._emit_open(out)
        self.open = None
        self.open_id = None
