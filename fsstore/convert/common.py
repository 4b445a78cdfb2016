"""What the converters share: reading a foreign dict field by field (each failure an
InvalidMessage naming the field path), data: URLs, tool arguments as JSON text, tool
outputs, and the checks every converted message passes.

Conventions every converter follows (docs/CONVERTERS.md):

- A format's fields that fsstore has no field for are kept under the format's key
  (``openai_chat``, ``openai_responses``, ``anthropic_messages``, ``ui_message``) in the
  part's ``provider_metadata`` or the message's ``metadata.extra``, and written back by
  that format's ``to_`` function; other formats ignore them.
- A block or item the converter does not map becomes a DataPart named ``KEY.block``
  (or ``.item``, ``.content``, ``.tool_call``, ``.part``) whose data is the dict as given,
  and is written back verbatim.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any, NoReturn

from ..errors import InvalidMessage
from ..message_types import (
    INLINE_FILE_LIMIT,
    FilePart,
    Message,
    TokenUsage,
    check_message,
    to_message,
)

JsonDict = dict[str, Any]

_DATA_URL = re.compile(r"data:([^,;]*)((?:;[^,;]*)*?);base64,(.*)", re.DOTALL)


def fail(field: str, text: str) -> NoReturn:
    raise InvalidMessage(f"{field}: {text}", field=field)


def need_dict(value: Any, field: str) -> JsonDict:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        fail(field, f"expected an object (a dict of str keys), not {_kind(value)}")
    return dict(value)


def need_list(value: Any, field: str) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        fail(field, f"expected a list, not {_kind(value)}")
    return list(value)


def need_str(value: Any, field: str) -> str:
    if not isinstance(value, str):
        fail(field, f"expected a str, not {_kind(value)}")
    return value


def opt_str(value: Any, field: str) -> str | None:
    return None if value is None else need_str(value, field)


def need_int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        fail(field, f"expected an int, not {_kind(value)}")
    return value


def need_type(block: JsonDict, field: str) -> str:
    return need_str(block.get("type"), f"{field}.type")


def _kind(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def rest(block: Mapping[str, Any], used: Collection[str]) -> JsonDict:
    """The fields of ``block`` a converter does not map: kept so they can be written back."""
    return {key: value for key, value in block.items() if key not in used}


def kept(holder: Mapping[str, Any], key: str) -> JsonDict:
    """What a format kept under its ``key`` of a provider_metadata or metadata.extra."""
    value = holder.get(key)
    return dict(value) if isinstance(value, Mapping) else {}


def keep(holder: Mapping[str, Any] | None, key: str, extras: Mapping[str, Any]) -> JsonDict:
    """``holder`` with ``extras`` under ``key`` (no key when there are none)."""
    out = dict(holder or {})
    if extras:
        out[key] = dict(extras)
    return out


def others(holder: Mapping[str, Any], *keys: str) -> JsonDict:
    return {key: value for key, value in holder.items() if key not in keys}


# --- files ----------------------------------------------------------------------------


def data_url(media_type: str, data: bytes) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def parse_data_url(url: str) -> tuple[str, bytes] | None:
    """The media type and bytes of a base64 ``data:`` URL; None for any other URL."""
    found = _DATA_URL.fullmatch(url)
    if found is None:
        return None
    try:
        data = base64.b64decode(found.group(3), validate=True)
    except (binascii.Error, ValueError):
        return None
    return found.group(1) or "application/octet-stream", data


def decode_base64(text: str, field: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        fail(field, "expected base64 data")


def file_part(media_type: str, *, url: str | None = None, data: bytes | None = None,
              name: str | None = None, provider_metadata: JsonDict | None = None) -> FilePart:
    """A FilePart of bytes or of a URL. A base64 data: URL is decoded into bytes (its
    media type wins over ``media_type``); bytes over INLINE_FILE_LIMIT stay a data:
    URL, which the part holds as its ``url``."""
    if url is not None:
        parsed = parse_data_url(url)
        if parsed is not None:
            media_type, data, url = parsed[0], parsed[1], None
    if data is not None and len(data) > INLINE_FILE_LIMIT:
        url = data_url(media_type, data)
        data = None
    return FilePart(media_type=media_type, url=url, data=data, name=name,
                    provider_metadata=provider_metadata or {})


def file_bytes(part: FilePart, field: str) -> bytes | None:
    """The bytes of a file part: its data, or those of its data: URL; None for a URL
    that is not a data: URL. A blob is refused: converters are pure and read no blob."""
    if part.blob is not None:
        fail(field, "the file part holds a blob, which the converters do not read: read "
             "it (session.blobs) and give its bytes as the part's data, or give a url")
    if part.data is not None:
        return part.data
    parsed = parse_data_url(part.url or "")
    return parsed[1] if parsed else None


def file_url(part: FilePart, field: str) -> str:
    """The part as one URL: its url, or a data: URL of its bytes."""
    data = file_bytes(part, field)
    if part.url is not None or data is None:
        return part.url or ""
    return data_url(part.media_type, data)


# --- tool calls and results ------------------------------------------------------------


def dump_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _refuse_constant(name: str) -> Any:
    raise ValueError(name)


def parse_json(text: str) -> tuple[bool, Any]:
    """(True, the value) for JSON text (NaN and Infinity refused), else (False, None)."""
    try:
        return True, json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return False, None


def arguments_in(text: str) -> tuple[Any, JsonDict]:
    """Tool arguments given as JSON text: the parsed JSON, and ``{"arguments": text}`` to
    keep when the text is not the compact JSON ``arguments_out`` would write (other
    spacing, or not JSON at all: then the arguments are the text itself)."""
    ok, value = parse_json(text)
    if not ok:
        return text, {"arguments": text}
    return value, ({} if _same_text(value, text) else {"arguments": text})


def arguments_out(arguments: Any, extras: Mapping[str, Any]) -> str:
    """The JSON text of tool arguments: the text they were read from while it still says
    the same (the arguments may have been edited since), else compact JSON."""
    raw = extras.get("arguments")
    if isinstance(raw, str):
        ok, value = parse_json(raw)
        if (ok and _same_json(value, arguments)) or (not ok and arguments == raw):
            return raw
    return dump_json(arguments)


def _same_text(value: Any, text: str) -> bool:
    try:
        return dump_json(value) == text
    except (TypeError, ValueError):
        return False


def _same_json(left: Any, right: Any) -> bool:
    try:
        return dump_json(left) == dump_json(right)
    except (TypeError, ValueError):
        return False


def is_block_list(value: Any) -> bool:
    """A list of typed dicts: content blocks a format takes as they are."""
    return isinstance(value, list) and all(
        isinstance(item, dict) and isinstance(item.get("type"), str) for item in value)


def output_out(output: Any) -> str | list[Any]:
    """A tool output as a format's text-or-blocks content: a str or a list of typed
    dicts as it is; None as an empty str; any other JSON as its JSON text."""
    if isinstance(output, str) or is_block_list(output):
        return output  # type: ignore[no-any-return]
    return "" if output is None else dump_json(output)


def signature_text(signature: Any) -> str | None:
    """A reasoning signature as a str: bytes are written as base64."""
    if isinstance(signature, bytes):
        return base64.b64encode(signature).decode("ascii")
    return signature if isinstance(signature, str) else None


class CallNames:
    """The names of the tool calls converted so far, to name their results (the formats
    give a result only its call id)."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def note(self, call_id: str, name: str) -> None:
        self.names[call_id] = name

    def name(self, call_id: str) -> str | None:
        return self.names.get(call_id)


# --- messages -----------------------------------------------------------------------------


def checked(message: Message, field: str) -> Message:
    """``message`` after check_message: what a converter returns can be appended."""
    try:
        check_message(message)
    except InvalidMessage as exc:
        raise InvalidMessage(f"{field} converts to a message that cannot be stored: {exc}",
                             field=f"{field}.{exc.field}") from None
    return message


def stored_messages(messages: Iterable[Message | Mapping[str, Any]]) -> list[Message]:
    """The messages to convert out, each checked (a dict of a message's fields is taken
    too); an InvalidMessage names ``messages[i].FIELD``."""
    if isinstance(messages, (str, bytes, Mapping)):
        fail("messages", "expected a list of messages")
    out = []
    for index, message in enumerate(messages):
        try:
            stored = check_message(message)
        except InvalidMessage as exc:
            raise InvalidMessage(f"messages[{index}]: {exc}",
                                 field=f"messages[{index}].{exc.field}") from None
        given = message.id if isinstance(message, Message) else message.get("id")
        out.append(to_message(stored) if given is not None else
                   Message(role=stored.role, parts=stored.parts, metadata=stored.metadata))
    return out


def plain_content(content: list[JsonDict]) -> str | list[JsonDict]:
    """A lone text block without extras, written as a plain str, as most callers do."""
    if len(content) == 1 and content[0].keys() == {"type", "text"} \
            and content[0]["type"] == "text":
        return str(content[0]["text"])
    return content


def usage_in(value: Any, keys: tuple[str, str, str, str]) -> TokenUsage | None:
    """An OpenAI response's ``usage`` (Chat Completions and Responses name the same counts
    differently: ``keys`` are its input, output, input-details and output-details keys),
    checked field by field."""
    if value is None:
        return None
    input_key, output_key, input_details, output_details = keys
    usage = need_dict(value, "response.usage")
    inputs = need_dict(usage.get(input_details) or {}, f"response.usage.{input_details}")
    outputs = need_dict(usage.get(output_details) or {}, f"response.usage.{output_details}")
    return TokenUsage(
        input=need_int(usage.get(input_key, 0), f"response.usage.{input_key}"),
        output=need_int(usage.get(output_key, 0), f"response.usage.{output_key}"),
        cached_input=need_int(inputs.get("cached_tokens") or 0,
                              f"response.usage.{input_details}.cached_tokens"),
        reasoning=need_int(outputs.get("reasoning_tokens") or 0,
                           f"response.usage.{output_details}.reasoning_tokens"))
