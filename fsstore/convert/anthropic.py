"""Anthropic Messages, to and from fsstore messages.

The system prompt is a separate parameter: ``to_anthropic`` returns it beside the
messages and ``from_anthropic`` takes it as ``system``. Tool results live in user
messages: an fsstore tool message is a user message of tool_result blocks, and a user
message holding a tool_result block reads back as a tool message. Thinking signatures
are kept byte for byte; redacted thinking is a redacted ReasoningPart whose signature
holds the data. What the format cannot hold is listed in docs/CONVERTERS.md.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from typing import Any

from ..message_types import (
    DataPart,
    FilePart,
    Finish,
    Message,
    MessageMetadata,
    MessagePart,
    ReasoningPart,
    TextPart,
    TokenUsage,
    ToolCallPart,
    ToolResultPart,
)
from .common import (
    CallNames,
    JsonDict,
    checked,
    decode_base64,
    fail,
    file_bytes,
    file_part,
    keep,
    kept,
    need_dict,
    need_int,
    need_list,
    need_str,
    need_type,
    opt_str,
    output_out,
    parse_data_url,
    plain_content,
    rest,
    signature_text,
    stored_messages,
)

KEY = "anthropic_messages"
#: metadata.extra key of what a Message response says of itself (stop_reason, ...).
RESPONSE_KEY = "anthropic_response"
FINISH_REASONS: dict[str, Finish] = {
    "end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
    "model_context_window_exceeded": "length", "tool_use": "tool_calls",
    "refusal": "content_filter", "pause_turn": "other"}

System = str | list[JsonDict] | None


# --- out --------------------------------------------------------------------------------


def to_anthropic(messages: Iterable[Message | Mapping[str, Any]]
                 ) -> tuple[System, list[JsonDict]]:
    """``(system, messages)`` for the Messages API: the leading system messages as the
    ``system`` parameter (a str for one plain text part, else a list of text blocks;
    None when there is none), and the other messages. Raises InvalidMessage naming
    ``messages[i].FIELD`` for a system message after the first other message (the API
    has none there), a system message holding more than text, or a blob file part."""
    blocks: list[JsonDict] = []
    out: list[JsonDict] = []
    for index, message in enumerate(stored_messages(messages)):
        where = f"messages[{index}]"
        if message.role == "system":
            if out:
                fail(f"{where}.role", "Anthropic Messages take system text only before "
                     "the first message: move it first, or make it a user message")
            for number, part in enumerate(message.parts):
                if not isinstance(part, TextPart):
                    fail(f"{where}.parts[{number}]", "an Anthropic system prompt holds "
                         "text only")
                blocks.append({**kept(part.provider_metadata, KEY), "type": "text",
                               "text": part.text})
            continue
        content = [block for number, part in enumerate(message.parts)
                   if (block := _block_out(part, f"{where}.parts[{number}]")) is not None]
        extras = kept(message.metadata.extra, KEY)
        if message.role != "assistant":
            out.append({**extras, "role": "user", "content": plain_content(content)})
            continue
        # Results an assistant message holds (as a UIMessage's tool parts do) go in a
        # user message after it, where the API wants tool_result blocks.
        results = [block for block in content if block["type"] == "tool_result"]
        content = [block for block in content if block["type"] != "tool_result"]
        out.append({**extras, "role": "assistant", "content": plain_content(content)})
        if results:
            out.append({"role": "user", "content": results})
    system: System = None
    if blocks:
        system = blocks[0]["text"] if len(blocks) == 1 and blocks[0].keys() == {
            "type", "text"} else blocks
    return system, out


def _block_out(part: MessagePart, field: str) -> JsonDict | None:
    extras = kept(part.provider_metadata, KEY)
    if isinstance(part, TextPart):
        return {**extras, "type": "text", "text": part.text}
    if isinstance(part, ReasoningPart):
        signature = signature_text(part.signature)
        if part.redacted:
            return {**extras, "type": "redacted_thinking", "data": signature or ""}
        block = {**extras, "type": "thinking", "thinking": part.text}
        if signature is not None:
            block["signature"] = signature
        return block
    if isinstance(part, ToolCallPart):
        return {**extras, "type": "tool_use", "id": part.call_id, "name": part.name,
                "input": part.arguments}
    if isinstance(part, ToolResultPart):
        block = {**extras, "type": "tool_result", "tool_use_id": part.call_id}
        if part.output is not None:
            block["content"] = output_out(part.output)
        if part.is_error:
            block["is_error"] = True
        return block
    if isinstance(part, FilePart):
        return _file_out(part, extras, field)
    if part.name == f"{KEY}.block" and isinstance(part.data, dict):
        return dict(part.data)
    return None  # the format has no typed data: other DataParts are left out


def _file_out(part: FilePart, extras: JsonDict, field: str) -> JsonDict:
    media = part.media_type
    kind = "image" if media.startswith("image/") else "document"
    data = file_bytes(part, field)
    source: JsonDict
    if data is None:
        source = {"type": "url", "url": part.url}
    elif media == "text/plain" and _utf8(data) is not None:
        source = {"type": "text", "media_type": media, "data": _utf8(data)}
    else:
        source = {"type": "base64", "media_type": media,
                  "data": base64.b64encode(data).decode("ascii")}
    block: JsonDict = {**extras, "type": kind, "source": source}
    if kind == "document" and part.name is not None:
        block["title"] = part.name
    return block


def _utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


# --- in ---------------------------------------------------------------------------------


def from_anthropic(messages: Iterable[Mapping[str, Any]], system: Any = None
                   ) -> list[Message]:
    """fsstore messages of Messages API ``messages`` and its ``system`` parameter (a str
    or a list of text blocks; one system message first). A user message holding a
    tool_result block becomes a tool message; a tool result is named after its call
    when the call comes earlier. Raises InvalidMessage naming the field
    (``messages[1].content[0].source.data``) of input that is not Anthropic Messages."""
    items = need_list(messages, "messages")
    out: list[Message] = []
    if system is not None:
        if isinstance(system, str):
            parts: list[MessagePart] = [TextPart(text=system)]
        else:
            parts = [_text_in(need_dict(block, f"system[{index}]"), f"system[{index}]")
                     for index, block in enumerate(need_list(system, "system"))]
        out.append(checked(Message(role="system", parts=parts), "system"))
    names = CallNames()
    out.extend(message_in(item, f"messages[{index}]", names)
               for index, item in enumerate(items))
    return out


def _text_in(block: JsonDict, field: str) -> TextPart:
    if need_type(block, field) != "text":
        fail(f"{field}.type", "a system prompt holds text blocks only")
    return TextPart(text=need_str(block.get("text"), f"{field}.text"),
                    provider_metadata=keep(None, KEY, rest(block, {"type", "text"})))


def message_in(value: Any, where: str, names: CallNames) -> Message:
    """The fsstore message of one Anthropic message (``where`` names it in errors)."""
    msg = need_dict(value, where)
    role = need_str(msg.get("role"), f"{where}.role")
    if role not in ("user", "assistant"):
        fail(f"{where}.role", f"expected user or assistant, not {role!r} (the system "
             "prompt is the separate system parameter)")
    content = msg.get("content")
    if isinstance(content, str):
        parts: list[MessagePart] = [TextPart(text=content)]
    else:
        parts = [_block_in(need_dict(block, f"{where}.content[{index}]"),
                           f"{where}.content[{index}]", names)
                 for index, block in enumerate(need_list(content, f"{where}.content"))]
    if role == "user" and any(isinstance(part, ToolResultPart) for part in parts):
        role = "tool"
    extras = rest(msg, {"role", "content"})
    return checked(Message(role=role, parts=parts,  # type: ignore[arg-type]
                           metadata=MessageMetadata(extra=keep(None, KEY, extras))), where)


def _block_in(block: JsonDict, field: str, names: CallNames) -> MessagePart:
    kind = need_type(block, field)
    if kind == "text":
        return _text_in(block, field)
    if kind == "thinking":
        signature = opt_str(block.get("signature"), f"{field}.signature")
        return ReasoningPart(text=need_str(block.get("thinking"), f"{field}.thinking"),
                             signature=signature, provider_metadata=keep(
                                 None, KEY, rest(block, {"type", "thinking", "signature"})))
    if kind == "redacted_thinking":
        return ReasoningPart(text="", redacted=True,
                             signature=need_str(block.get("data"), f"{field}.data"),
                             provider_metadata=keep(None, KEY, rest(block, {"type", "data"})))
    if kind == "tool_use":
        call_id = need_str(block.get("id"), f"{field}.id")
        name = need_str(block.get("name"), f"{field}.name")
        names.note(call_id, name)
        return ToolCallPart(call_id=call_id, name=name, arguments=block.get("input"),
                            provider_metadata=keep(None, KEY, rest(
                                block, {"type", "id", "name", "input"})))
    if kind == "tool_result":
        call_id = need_str(block.get("tool_use_id"), f"{field}.tool_use_id")
        content = block.get("content")
        if content is not None and not isinstance(content, str):
            content = need_list(content, f"{field}.content")
        is_error = block.get("is_error", False)
        if not isinstance(is_error, bool):
            fail(f"{field}.is_error", "expected true or false")
        return ToolResultPart(call_id=call_id, output=content, is_error=is_error,
                              name=names.name(call_id), provider_metadata=keep(
                                  None, KEY, rest(block, {"type", "tool_use_id", "content",
                                                          "is_error"})))
    if kind in ("image", "document"):
        part = _file_in(block, field, kind)
        if part is not None:
            return part
    # server tools, search results, files by id, types this converter does not know
    return DataPart(name=f"{KEY}.block", data=block)


def _file_in(block: JsonDict, field: str, kind: str) -> FilePart | None:
    source = need_dict(block.get("source"), f"{field}.source")
    source_kind = need_type(source, f"{field}.source")
    extras = rest(block, {"type", "source", "title"} if kind == "document" else
                  {"type", "source"})
    name = opt_str(block.get("title"), f"{field}.title") if kind == "document" else None
    metadata = keep(None, KEY, extras)
    if source_kind == "base64":
        media = need_str(source.get("media_type"), f"{field}.source.media_type")
        data = decode_base64(need_str(source.get("data"), f"{field}.source.data"),
                             f"{field}.source.data")
        return file_part(media, data=data, name=name, provider_metadata=metadata)
    if source_kind == "text":
        text = need_str(source.get("data"), f"{field}.source.data")
        media = need_str(source.get("media_type", "text/plain"), f"{field}.source.media_type")
        return file_part(media, data=text.encode("utf-8"), name=name,
                         provider_metadata=metadata)
    if source_kind == "url":
        url = need_str(source.get("url"), f"{field}.source.url")
        media = "image/*" if kind == "image" else "application/pdf"
        if parse_data_url(url) is not None:
            return None  # a data: URL in a url source: kept whole, as given
        return file_part(media, url=url, name=name, provider_metadata=metadata)
    return None


def from_anthropic_message(response: Mapping[str, Any]) -> Message:
    """The assistant message of a Messages API response (``messages.create``'s Message,
    as a dict), with its id, model, finish reason (``stop_reason``: end_turn and
    stop_sequence are stop, max_tokens is length, tool_use is tool_calls, refusal is
    content_filter) and usage (input counts cache reads and writes too). The raw
    stop_reason and stop_sequence go in ``metadata.extra["anthropic_response"]``."""
    body = need_dict(response, "response")
    message = message_in({"role": body.get("role", "assistant"), "content":
                          body.get("content")}, "response", CallNames())
    stop = opt_str(body.get("stop_reason"), "response.stop_reason")
    info = rest(body, {"id", "type", "role", "content", "model", "usage"})
    info = {key: value for key, value in info.items() if value is not None}
    message.id = opt_str(body.get("id"), "response.id")
    message.metadata = MessageMetadata(
        model=opt_str(body.get("model"), "response.model"), provider="anthropic",
        finish_reason=None if stop is None else FINISH_REASONS.get(stop, "other"),
        usage=_usage_in(body.get("usage")), extra=keep(None, RESPONSE_KEY, info))
    return checked(message, "response")


def _usage_in(value: Any) -> TokenUsage | None:
    if value is None:
        return None
    usage = need_dict(value, "response.usage")

    def count(name: str) -> int:
        return need_int(usage.get(name) or 0, f"response.usage.{name}")

    read, write = count("cache_read_input_tokens"), count("cache_creation_input_tokens")
    # Anthropic's input_tokens leaves out the tokens read from or written to the cache;
    # fsstore's input counts every input token.
    return TokenUsage(input=count("input_tokens") + read + write,
                      output=count("output_tokens"), cached_input=read, cache_write=write)
