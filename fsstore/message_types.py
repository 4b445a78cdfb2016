"""The types of the messages API: a message, its parts and its metadata.

A message is what a chat model reads and writes: a role, an ordered list of parts
(text, reasoning, tool calls, tool results, files, typed data) and metadata (the model
that wrote it, why it stopped, the tokens it used and what they cost). The shapes follow
the AI SDK's UIMessage and enact's MessageStore; ``fsstore.convert`` turns them into and
out of the OpenAI, Anthropic and AI SDK formats.

Every type is a msgspec Struct: constructing one does not check it, appending it does
(:func:`check_message`), so a message built from a dict and one built from the classes
are refused or stored alike. On disk a message is the msgpack map of its stored fields
(docs/FORMAT.md, section 20).
"""

from __future__ import annotations

import enum
import math
import re
import secrets
import threading
import time
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from .blobs import BlobRef
from .errors import InvalidBlobRef, InvalidMessage
from .log_format import refuse_msgpack_ext

#: Inline file bytes a message may hold (64 KiB). Larger files go in a blob
#: (``session.blobs.put``) and the part holds its ``BlobRef``.
INLINE_FILE_LIMIT = 64 * 1024
#: Longest message or call id, in characters.
MAX_ID_LENGTH = 256
#: Most tokens one count of a message's usage may say (a trillion): the usage fold sums
#: them in msgpack's 64-bit integers, which this keeps far from overflowing.
MAX_TOKENS = 10**12
#: Largest cost of one message, either way.
MAX_COST = 1e12

Role = Literal["system", "user", "assistant", "tool"]
Finish = Literal["stop", "length", "tool_calls", "content_filter", "error", "other"]


class MessageRole(str, enum.Enum):
    """Who wrote a message. The values are the strs a message's ``role`` holds."""

    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


class FinishReason(str, enum.Enum):
    """Why a model stopped writing a message."""

    STOP = "stop"
    LENGTH = "length"
    TOOL_CALLS = "tool_calls"
    CONTENT_FILTER = "content_filter"
    ERROR = "error"
    OTHER = "other"


class TokenUsage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Tokens a model call used. ``input`` counts every input token, cached ones
    included (``cached_input`` of them read from a cache, ``cache_write`` written to
    one); ``output`` counts every output token, ``reasoning`` of them spent thinking."""

    input: int = 0
    output: int = 0
    cached_input: int = 0
    cache_write: int = 0
    reasoning: int = 0

    @property
    def total(self) -> int:
        return self.input + self.output


class CostInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What a model call cost, in ``currency`` (an ISO 4217 code, or any short name)."""

    amount: float
    currency: str = "USD"


class MessageMetadata(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Who wrote a message and what it took. ``latency`` is in seconds; ``extra`` is
    free JSON (a map of str to JSON values) for everything else."""

    model: str | None = None
    provider: str | None = None
    finish_reason: Finish | None = None
    usage: TokenUsage | None = None
    cost: CostInfo | None = None
    latency: float | None = None
    extra: dict[str, Any] = msgspec.field(default_factory=dict)


class _Part(msgspec.Struct, kw_only=True, omit_defaults=True, tag_field="type"):
    #: Provider-specific JSON kept with the part (the AI SDK's providerMetadata, an
    #: OpenAI item id): what a converter needs to give the part back as it came.
    provider_metadata: dict[str, Any] = msgspec.field(default_factory=dict)


class TextPart(_Part, tag="text"):
    """Text the model reads or wrote."""

    text: str


class ReasoningPart(_Part, tag="reasoning"):
    """A model's thinking. ``signature`` is the provider's proof of it (Anthropic's
    thinking signature, OpenAI's encrypted content), kept byte for byte: str or bytes,
    as given. ``redacted`` marks thinking the provider hid: its ``signature`` holds
    the opaque data, ``text`` is empty."""

    text: str
    signature: Any = None  # str | bytes | None: msgspec types no union of the two
    redacted: bool = False


class ToolCallPart(_Part, tag="tool_call"):
    """A call of tool ``name`` with JSON ``arguments``; ``call_id`` pairs it with its
    result."""

    call_id: str
    name: str
    arguments: Any = msgspec.field(default_factory=dict)


class ToolResultPart(_Part, tag="tool_result"):
    """The result of the tool call ``call_id``: JSON ``output``, or an error
    (``is_error``). The call must come earlier in the session (or in the same batch);
    ``orphan=True`` stores a result whose call the session does not hold."""

    call_id: str
    output: Any = None
    is_error: bool = False
    name: str | None = None
    orphan: bool = False


class FilePart(_Part, tag="file"):
    """A file: exactly one of ``blob`` (a :class:`~fsstore.BlobRef` of the session's
    blobs), ``data`` (inline bytes, at most ``INLINE_FILE_LIMIT``) or ``url``."""

    media_type: str
    name: str | None = None
    blob: dict[str, Any] | None = None
    data: bytes | None = None
    url: str | None = None


class DataPart(_Part, tag="data"):
    """Typed JSON for everything else: ``name`` says what ``data`` is."""

    name: str
    data: Any = None


MessagePart = TextPart | ReasoningPart | ToolCallPart | ToolResultPart | FilePart | DataPart


class Message(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One message of a session's conversation.

    Give ``role`` and ``parts`` (and ``metadata``); ``id`` is made when left out. The
    fields after ``metadata`` are filled by reads and ignored when appending: the seq
    and turn of the message's latest version, when it was first appended and when last
    changed (seconds since the epoch), and its version (1, then one more per edit).
    ``redacted`` is True for a version of a deleted message whose content a vacuum
    reclaimed (docs/FORMAT.md, section 20.1): its parts are gone (empty), its id, role
    and the metadata usage needs (model, provider, usage, cost) stay."""

    role: Role
    parts: list[MessagePart] = msgspec.field(default_factory=list)
    id: str | None = None
    metadata: MessageMetadata = msgspec.field(default_factory=MessageMetadata)
    seq: int | None = None
    turn: int | None = None
    created: float | None = None
    updated: float | None = None
    version: int | None = None
    redacted: bool = False

    @property
    def text(self) -> str:
        """The text parts, joined by newlines."""
        return "\n".join(part.text for part in self.parts if isinstance(part, TextPart))

    @property
    def tool_calls(self) -> list[ToolCallPart]:
        return [part for part in self.parts if isinstance(part, ToolCallPart)]

    @property
    def tool_results(self) -> list[ToolResultPart]:
        return [part for part in self.parts if isinstance(part, ToolResultPart)]

    @classmethod
    def of_text(cls, role: str, text: str, *, id: str | None = None,
                metadata: MessageMetadata | None = None) -> Message:
        """A message of one text part."""
        return cls(role=role, parts=[TextPart(text=text)], id=id,  # type: ignore[arg-type]
                   metadata=metadata or MessageMetadata())


class StoredMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A message as the log holds it (docs/FORMAT.md, section 20)."""

    id: str
    role: Role
    parts: list[MessagePart] = msgspec.field(default_factory=list)
    metadata: MessageMetadata = msgspec.field(default_factory=MessageMetadata)


class MessageRecord(msgspec.Struct):
    """An ``fsstore.message`` record's data, as reads decode it (docs/FORMAT.md, section
    20.1); ``was`` is left to the usage fold, unknown keys are ignored. ``redacted``
    marks a record a vacuum rewrote without the message's content (``reclaim_messages``)."""

    op: Literal["add", "edit", "delete"]
    message: StoredMessage | None = None
    id: str | None = None
    version: int = 1
    redacted: bool = False

    @property
    def message_id(self) -> str:
        if self.message is not None:
            return self.message.id
        if self.id is None:
            raise ValueError(f"a {self.op} record names no message")
        return self.id

    def __post_init__(self) -> None:
        if (self.message is None) != (self.op == "delete"):
            raise ValueError(f"a {self.op} record holds "
                             f"{'no' if self.message is None else 'a'} message")
        if self.op == "delete" and self.id is None:
            raise ValueError("a delete record names no message id")


_encoder = msgspec.msgpack.Encoder()
_stored_decoder = msgspec.msgpack.Decoder(StoredMessage, ext_hook=refuse_msgpack_ext)
# No C0 or C1 control characters (U+0000-U+001F, U+007F-U+009F): an id is printed by
# listings, and C1 holds the 8-bit terminal escape (U+009B).
_ID = re.compile(r"[^\x00-\x1f\x7f-\x9f]{1," + str(MAX_ID_LENGTH) + "}")
# msgspec names the place "at `$.a.b`", or for a map key "at `key` in `$.a.b`".
_PATH = re.compile(r"at `(?:key` in `)?\$\.?([^`]*)`$")


_id_lock = threading.Lock()
_last_stamp = 0


def new_message_id() -> str:
    """A fresh id: ``msg_``, 15 hex digits of time (milliseconds, times 4096, plus a
    counter within the millisecond) and 12 random hex digits; in a process, ids made
    later sort later."""
    global _last_stamp
    with _id_lock:
        _last_stamp = stamp = max((time.time_ns() // 1_000_000) << 12, _last_stamp + 1)
    return f"msg_{stamp:015x}{secrets.token_hex(6)}"


def check_id(value: object, field: str = "id") -> str:
    """A message or call id: a str of 1 to 256 characters, no control characters."""
    if (not isinstance(value, str) or not _ID.fullmatch(value)
            or not value.isprintable() and _has_surrogate(value)):
        raise InvalidMessage(
            f"{field} must be a str of 1 to {MAX_ID_LENGTH} characters without control "
            f"characters or lone surrogates, not {_short(value)}", field=field)
    return value


def _has_surrogate(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_message(message: Message | Mapping[str, Any], *, given_id: bool = True
                  ) -> StoredMessage:
    """The stored form of ``message`` (a Message or a dict of its fields), checked: the
    role and part types are known, every field has its type, JSON fields hold JSON,
    inline files are within the limit, numbers are finite and counts not negative.
    Raises InvalidMessage naming the field; the id is made when left out."""
    if isinstance(message, Message):
        fields: dict[str, Any] = {"id": message.id, "role": message.role,
                                  "parts": message.parts, "metadata": message.metadata}
    elif isinstance(message, Mapping):
        fields = {key: message[key] for key in ("id", "role", "parts", "metadata")
                  if key in message}
    else:
        raise InvalidMessage(f"a message is a Message or a dict, not {_short(message)}",
                             field="message")
    if fields.get("id") is None:
        fields["id"] = new_message_id()
    else:
        check_id(fields["id"])
    if fields.get("metadata") is None:
        fields.pop("metadata", None)
    try:
        raw = _encoder.encode(fields)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise InvalidMessage(f"message cannot be stored as msgpack: {exc}",
                             field="message") from None
    try:
        stored = _stored_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        text = str(exc)
        found = _PATH.search(text)
        field = found.group(1) if found else "message"
        raise InvalidMessage(f"message field {field or 'message'}: {text}",
                             field=field or "message") from None
    except (msgspec.DecodeError, ValueError) as exc:
        raise InvalidMessage(f"message cannot be stored: {exc}", field="message") from None
    _check_parts(stored)
    _check_metadata(stored.metadata)
    return stored


def to_message(stored: StoredMessage, **store_fields: Any) -> Message:
    """The Message a read returns for a stored message. A redacted one
    (``redacted=True`` given) has no parts: the tool-call stubs its record keeps for
    the usage fold and the index are not content."""
    parts = [] if store_fields.get("redacted") else stored.parts
    return Message(id=stored.id, role=stored.role, parts=parts,
                   metadata=stored.metadata, **store_fields)


def _check_parts(stored: StoredMessage) -> None:
    for index, part in enumerate(stored.parts):
        where = f"parts[{index}]"
        _check_json(part.provider_metadata, f"{where}.provider_metadata")
        if isinstance(part, ToolCallPart):
            check_id(part.call_id, f"{where}.call_id")
            _check_json(part.arguments, f"{where}.arguments")
        elif isinstance(part, ToolResultPart):
            check_id(part.call_id, f"{where}.call_id")
            _check_json(part.output, f"{where}.output")
        elif isinstance(part, DataPart):
            _check_json(part.data, f"{where}.data")
        elif isinstance(part, ReasoningPart):
            if part.signature is not None and not isinstance(part.signature, (str, bytes)):
                raise InvalidMessage(f"{where}.signature must be a str, bytes or None, not "
                                     f"{_short(part.signature)}", field=f"{where}.signature")
        elif isinstance(part, FilePart):
            _check_file(part, where)


def _check_file(part: FilePart, where: str) -> None:
    sources = [name for name in ("blob", "data", "url") if getattr(part, name) is not None]
    if len(sources) != 1:
        raise InvalidMessage(
            f"{where}: a file part holds exactly one of blob, data and url, not "
            f"{' and '.join(sources) or 'none'}", field=where)
    if part.data is not None and len(part.data) > INLINE_FILE_LIMIT:
        raise InvalidMessage(
            f"{where}.data: {len(part.data)} bytes of inline file, over the limit of "
            f"{INLINE_FILE_LIMIT}: put the file in a blob (session.blobs.put) and give "
            "its BlobRef as the part's blob", field=f"{where}.data")
    if part.blob is not None:
        try:
            BlobRef.parse(part.blob)
        except InvalidBlobRef as exc:
            raise InvalidMessage(f"{where}.blob: {exc}", field=f"{where}.blob") from None


def _check_metadata(metadata: MessageMetadata) -> None:
    _check_json(metadata.extra, "metadata.extra")
    usage = metadata.usage
    if usage is not None:
        for name in ("input", "output", "cached_input", "cache_write", "reasoning"):
            count = getattr(usage, name)
            if not 0 <= count <= MAX_TOKENS:
                raise InvalidMessage(
                    f"metadata.usage.{name} must be from 0 to {MAX_TOKENS}, not {count}",
                    field=f"metadata.usage.{name}")
    cost = metadata.cost
    if cost is not None and not (math.isfinite(cost.amount) and abs(cost.amount) <= MAX_COST):
        raise InvalidMessage(f"metadata.cost.amount must be a finite number of at most "
                             f"{MAX_COST:g} either way, not {cost.amount}",
                             field="metadata.cost.amount")
    latency = metadata.latency
    if latency is not None and not (math.isfinite(latency) and latency >= 0):
        raise InvalidMessage(f"metadata.latency must be a finite number of seconds >= 0, "
                             f"not {latency}", field="metadata.latency")


def _check_json(value: Any, field: str, depth: int = 0) -> None:
    """JSON values only: None, bool, int, finite float, str, lists and str-keyed maps."""
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidMessage(f"{field} holds {value}, which JSON cannot hold",
                                 field=field)
        return
    if depth > 64:
        raise InvalidMessage(f"{field} nests deeper than 64 levels", field=field)
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_json(item, f"{field}[{index}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidMessage(f"{field} has the key {_short(key)}: JSON keys are str",
                                     field=field)
            _check_json(item, f"{field}.{key}", depth + 1)
        return
    raise InvalidMessage(f"{field} holds {_short(value)}, which is not JSON (bytes go in a "
                         "file part)", field=field)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
