"""OpenAI Chat Completions messages, to and from fsstore messages.

One Chat message is one fsstore message, except that an fsstore tool message of several
results becomes one Chat tool message per result. ``developer`` messages are system
messages that remember their role. What Chat cannot hold (reasoning, usage and the
other metadata, tool errors, files in assistant messages) is listed in docs/CONVERTERS.md.
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
    TextPart,
    TokenUsage,
    ToolCallPart,
    ToolResultPart,
)
from .common import (
    CallNames,
    JsonDict,
    arguments_in,
    arguments_out,
    checked,
    data_url,
    decode_base64,
    fail,
    file_bytes,
    file_part,
    file_url,
    keep,
    kept,
    need_dict,
    need_list,
    need_str,
    need_type,
    opt_str,
    output_out,
    parse_data_url,
    plain_content,
    rest,
    stored_messages,
    usage_in,
)

KEY = "openai_chat"
#: metadata.extra key of what a chat completion says of itself (id, created, ...).
RESPONSE_KEY = "openai_chat_response"
_AUDIO = {"wav": "audio/wav", "mp3": "audio/mpeg"}
_AUDIO_FORMATS = {media: name for name, media in _AUDIO.items()}
FINISH_REASONS: dict[str, Finish] = {
    "stop": "stop", "length": "length", "tool_calls": "tool_calls",
    "function_call": "tool_calls", "content_filter": "content_filter"}


# --- out --------------------------------------------------------------------------------


def to_openai_chat(messages: Iterable[Message | Mapping[str, Any]]) -> list[JsonDict]:
    """The Chat Completions ``messages`` of fsstore messages. A system message written
    from a ``developer`` message is one again; a tool message becomes one ``tool``
    message per result. Raises InvalidMessage naming ``messages[i].FIELD`` for a message
    that is not one (or a file part that holds a blob)."""
    out: list[JsonDict] = []
    for index, message in enumerate(stored_messages(messages)):
        where = f"messages[{index}]"
        extras = kept(message.metadata.extra, KEY)
        if message.role == "tool":
            out.extend(_results_out(message.parts, extras))
        elif message.role == "assistant":
            out.append(_assistant_out(message, extras, where))
            # Results an assistant message holds (as a UIMessage's tool parts do) go
            # after it, as the tool messages Chat wants.
            out.extend(_results_out(message.parts, {}))
        else:
            role = "developer" if (message.role == "system"
                                   and extras.get("role") == "developer") else message.role
            content = [_part_out(part, f"{where}.parts[{number}]")
                       for number, part in enumerate(message.parts)]
            out.append({**extras, "role": role,
                        "content": plain_content([c for c in content if c is not None])})
    return out


def _results_out(parts: list[MessagePart], extras: JsonDict) -> list[JsonDict]:
    return [{**extras, **kept(part.provider_metadata, KEY), "role": "tool",
             "tool_call_id": part.call_id, "content": output_out(part.output)}
            for part in parts if isinstance(part, ToolResultPart)]


def _part_out(part: MessagePart, field: str) -> JsonDict | None:
    extras = kept(part.provider_metadata, KEY)
    if isinstance(part, TextPart):
        return {**extras, "type": "text", "text": part.text}
    if isinstance(part, FilePart):
        return _file_out(part, extras, field)
    if isinstance(part, DataPart) and part.name == f"{KEY}.content" \
            and isinstance(part.data, dict):
        return dict(part.data)
    return None  # Chat user and system messages hold text and files only


def _file_out(part: FilePart, extras: JsonDict, field: str) -> JsonDict | None:
    media = part.media_type
    if media.startswith("image/"):
        return {"type": "image_url", "image_url": {**extras, "url": file_url(part, field)}}
    data = file_bytes(part, field)
    if data is None:
        return None  # a file by http URL: Chat takes only images by URL
    if media in _AUDIO_FORMATS:
        return {"type": "input_audio", "input_audio": {
            **extras, "data": base64.b64encode(data).decode("ascii"),
            "format": _AUDIO_FORMATS[media]}}
    file: JsonDict = {**extras, "file_data": data_url(media, data)}
    if part.name is not None:
        file["filename"] = part.name
    return {"type": "file", "file": file}


def _assistant_out(message: Message, extras: JsonDict, where: str) -> JsonDict:
    content: list[JsonDict] = []
    refusals: list[str] = []
    calls: list[JsonDict] = []
    for part in message.parts:
        part_extras = kept(part.provider_metadata, KEY)
        if isinstance(part, TextPart):
            if part_extras.get("refusal") is True:
                refusals.append(part.text)
            else:
                content.append({**part_extras, "type": "text", "text": part.text})
        elif isinstance(part, ToolCallPart):
            calls.append({**rest(part_extras, {"arguments"}), "id": part.call_id,
                          "type": "function", "function": {
                              "name": part.name,
                              "arguments": arguments_out(part.arguments, part_extras)}})
        elif isinstance(part, DataPart) and isinstance(part.data, dict):
            if part.name == f"{KEY}.content":
                content.append(dict(part.data))
            elif part.name == f"{KEY}.tool_call":
                calls.append(dict(part.data))
    out: JsonDict = {**extras, "role": "assistant",
                     "content": plain_content(content) if content else None}
    if refusals:
        out["refusal"] = "\n".join(refusals)
    if calls:
        out["tool_calls"] = calls
    return out


# --- in ---------------------------------------------------------------------------------


def from_openai_chat(messages: Iterable[Mapping[str, Any]]) -> list[Message]:
    """fsstore messages of Chat Completions ``messages`` (request messages, or the
    ``message`` of a choice), one each. A tool result is named after its call when the
    call comes earlier in ``messages``. Raises InvalidMessage naming the field
    (``messages[2].tool_calls[0].function.name``) of input that is not Chat messages."""
    items = need_list(messages, "messages")
    names = CallNames()
    return [message_in(item, f"messages[{index}]", names) for index, item in enumerate(items)]


def message_in(value: Any, where: str, names: CallNames) -> Message:
    """The fsstore message of one Chat message (``where`` names it in errors)."""
    msg = need_dict(value, where)
    role = need_str(msg.get("role"), f"{where}.role")
    if role == "tool":
        call_id = need_str(msg.get("tool_call_id"), f"{where}.tool_call_id")
        content = msg.get("content")
        if not isinstance(content, str):
            content = need_list(content, f"{where}.content")
        part = ToolResultPart(call_id=call_id, output=content, name=names.name(call_id))
        extras = rest(msg, {"role", "tool_call_id", "content"})
        return checked(Message(role="tool", parts=[part],
                               metadata=MessageMetadata(extra=keep(None, KEY, extras))), where)
    if role == "assistant":
        parts = _assistant_in(msg, where, names)
        extras = rest(msg, {"role", "content", "refusal", "tool_calls"})
        return checked(Message(role="assistant", parts=parts,
                               metadata=MessageMetadata(extra=keep(None, KEY, extras))), where)
    if role not in ("system", "developer", "user"):
        fail(f"{where}.role", f"expected system, developer, user, assistant or tool, not "
             f"{role!r} (the deprecated function role is not converted)")
    extras = rest(msg, {"role", "content"})
    if role == "developer":
        extras["role"] = "developer"
    parts = _content_in(msg.get("content"), f"{where}.content")
    return checked(Message(role="user" if role == "user" else "system", parts=parts,
                           metadata=MessageMetadata(extra=keep(None, KEY, extras))), where)


def _content_in(content: Any, field: str) -> list[MessagePart]:
    if isinstance(content, str):
        return [TextPart(text=content)]
    return [_part_in(need_dict(item, f"{field}[{index}]"), f"{field}[{index}]")
            for index, item in enumerate(need_list(content, field))]


def _part_in(part: JsonDict, field: str) -> MessagePart:
    kind = need_type(part, field)
    if kind == "text":
        return TextPart(text=need_str(part.get("text"), f"{field}.text"),
                        provider_metadata=keep(None, KEY, rest(part, {"type", "text"})))
    if kind == "image_url":
        image = need_dict(part.get("image_url"), f"{field}.image_url")
        url = need_str(image.get("url"), f"{field}.image_url.url")
        return file_part("image/*", url=url,
                         provider_metadata=keep(None, KEY, rest(image, {"url"})))
    if kind == "input_audio":
        audio = need_dict(part.get("input_audio"), f"{field}.input_audio")
        data = decode_base64(need_str(audio.get("data"), f"{field}.input_audio.data"),
                             f"{field}.input_audio.data")
        form = need_str(audio.get("format"), f"{field}.input_audio.format")
        return file_part(_AUDIO.get(form, f"audio/{form}"), data=data,
                         provider_metadata=keep(None, KEY, rest(audio, {"data", "format"})))
    if kind == "file":
        file = need_dict(part.get("file"), f"{field}.file")
        name = opt_str(file.get("filename"), f"{field}.file.filename")
        given = file.get("file_data")
        if isinstance(given, str) and parse_data_url(given) is not None:
            return file_part("application/octet-stream", url=given, name=name,
                             provider_metadata=keep(None, KEY, rest(
                                 file, {"file_data", "filename"})))
    # A file by id, a refusal part, or a type this converter does not know: kept whole.
    return DataPart(name=f"{KEY}.content", data=part)


def _assistant_in(msg: JsonDict, where: str, names: CallNames) -> list[MessagePart]:
    content = msg.get("content")
    parts: list[MessagePart] = [] if content is None else _content_in(content, f"{where}.content")
    refusal = opt_str(msg.get("refusal"), f"{where}.refusal")
    if refusal is not None:
        parts.append(TextPart(text=refusal, provider_metadata={KEY: {"refusal": True}}))
    calls = msg.get("tool_calls")
    for index, value in enumerate([] if calls is None else need_list(calls, f"{where}.tool_calls")):
        field = f"{where}.tool_calls[{index}]"
        call = need_dict(value, field)
        if call.get("type", "function") != "function":
            parts.append(DataPart(name=f"{KEY}.tool_call", data=call))
            continue
        call_id = need_str(call.get("id"), f"{field}.id")
        function = need_dict(call.get("function"), f"{field}.function")
        name = need_str(function.get("name"), f"{field}.function.name")
        arguments, kept_text = arguments_in(
            need_str(function.get("arguments"), f"{field}.function.arguments"))
        names.note(call_id, name)
        parts.append(ToolCallPart(call_id=call_id, name=name, arguments=arguments,
                                  provider_metadata=keep(None, KEY, {
                                      **rest(call, {"id", "type", "function"}), **kept_text})))
    return parts


def from_openai_chat_completion(response: Mapping[str, Any], *, choice: int = 0) -> Message:
    """The assistant message of a chat completion (the response of
    ``chat.completions.create``, as a dict): choice ``choice``'s message, with the
    model, finish reason and usage; the completion's id, created and
    system_fingerprint go in ``metadata.extra["openai_chat_response"]``."""
    body = need_dict(response, "response")
    choices = need_list(body.get("choices"), "response.choices")
    if not 0 <= choice < len(choices):
        fail("response.choices", f"has no choice {choice} (it has {len(choices)})")
    where = f"response.choices[{choice}]"
    picked = need_dict(choices[choice], where)
    message = message_in(picked.get("message"), f"{where}.message", CallNames())
    finish = opt_str(picked.get("finish_reason"), f"{where}.finish_reason")
    info: JsonDict = {key: body[key] for key in ("id", "created", "system_fingerprint",
                                                 "service_tier") if body.get(key) is not None}
    if finish is not None and finish not in FINISH_REASONS:
        info["finish_reason"] = finish
    message.metadata = MessageMetadata(
        model=opt_str(body.get("model"), "response.model"), provider="openai",
        finish_reason=None if finish is None else FINISH_REASONS.get(finish, "other"),
        usage=_usage_in(body.get("usage")),
        extra={**message.metadata.extra, **({RESPONSE_KEY: info} if info else {})})
    return checked(message, "response")


def _usage_in(value: Any) -> TokenUsage | None:
    return usage_in(value, ("prompt_tokens", "completion_tokens", "prompt_tokens_details",
                            "completion_tokens_details"))
