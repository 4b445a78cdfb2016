"""The AI SDK's UIMessage, to and from fsstore messages.

A UIMessage keeps a tool call and its result in one part (``tool-NAME`` or
``dynamic-tool``, with a ``state``); fsstore keeps a ToolCallPart and, right after it in
the same message, a ToolResultPart. A fsstore tool message has no UIMessage of its own:
its results are folded into the parts of their calls, as the AI SDK does. The message
metadata is free JSON: fsstore's own fields (model, usage, cost, ...) go under its
``fsstore`` key, ``metadata.extra`` is the rest. What the format cannot hold is listed in
docs/CONVERTERS.md.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from ..message_types import (
    DataPart,
    FilePart,
    Message,
    MessageMetadata,
    MessagePart,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    new_message_id,
)
from .common import (
    JsonDict,
    checked,
    decode_base64,
    dump_json,
    fail,
    file_part,
    file_url,
    keep,
    kept,
    need_dict,
    need_list,
    need_str,
    need_type,
    opt_str,
    others,
    rest,
    stored_messages,
)

KEY = "ui_message"
#: The key of a UIMessage's metadata and of a part's providerMetadata that holds what
#: fsstore has and the UIMessage has no field for.
OWN = "fsstore"
_RESULT_STATES = ("output-available", "output-error")
_TOOL_FIELDS = {"type", "toolName", "toolCallId", "state", "input", "output", "errorText",
                "callProviderMetadata", "resultProviderMetadata", "preliminary"}


# --- out --------------------------------------------------------------------------------


def to_ui_messages(messages: Iterable[Message | Mapping[str, Any]]) -> list[JsonDict]:
    """UIMessages of fsstore messages. A message without an id gets a new one. A tool
    result goes into the part of its call (in its own message or an earlier one); a
    result whose call is not there becomes a ``dynamic-tool`` part of its own. Raises
    InvalidMessage naming ``messages[i].FIELD`` for a message that is not one, or a
    blob file part."""
    out: list[JsonDict] = []
    calls: dict[str, JsonDict] = {}  # call id -> the UI tool part of that call
    for index, message in enumerate(stored_messages(messages)):
        where = f"messages[{index}]"
        parts: list[JsonDict] = []
        for number, part in enumerate(message.parts):
            if isinstance(part, ToolResultPart):
                target = calls.get(part.call_id)
                if target is None or target["state"] in _RESULT_STATES:
                    target = {"type": "dynamic-tool", "toolName": part.name or "",
                              "toolCallId": part.call_id, "state": "input-available",
                              "input": None}
                    parts.append(target)
                _fold(target, part)
                continue
            converted = _part_out(part, f"{where}.parts[{number}]")
            if converted is not None:
                parts.append(converted)
                if isinstance(part, ToolCallPart):
                    calls[part.call_id] = converted
        if message.role == "tool" and not parts:
            continue  # every result went into the part of its call
        ui: JsonDict = {"id": message.id or new_message_id(),
                        "role": "assistant" if message.role == "tool" else message.role,
                        "parts": parts}
        metadata = _metadata_out(message.metadata)
        if metadata is not None:
            ui["metadata"] = metadata
        out.append(ui)
    return out


def _provider(part: MessagePart, **own: Any) -> JsonDict:
    metadata = others(part.provider_metadata, KEY)
    if own:
        metadata[OWN] = own
    return {"providerMetadata": metadata} if metadata else {}


def _part_out(part: MessagePart, field: str) -> JsonDict | None:
    extras = kept(part.provider_metadata, KEY)
    if isinstance(part, TextPart):
        return {**extras, "type": "text", "text": part.text, **_provider(part)}
    if isinstance(part, ReasoningPart):
        own: JsonDict = {}
        if (part.signature, part.redacted) != _sdk_signature(part.provider_metadata):
            if isinstance(part.signature, bytes):
                own["signatureBase64"] = base64.b64encode(part.signature).decode("ascii")
            else:
                own["signature"] = part.signature
            if part.redacted:
                own["redacted"] = True
        return {**extras, "type": "reasoning", "text": part.text, **_provider(part, **own)}
    if isinstance(part, FilePart):
        out = {**extras, "type": "file", "mediaType": part.media_type,
               "url": file_url(part, field), **_provider(part)}
        if part.name is not None:
            out["filename"] = part.name
        return out
    if isinstance(part, ToolCallPart):
        dynamic = extras.pop("dynamic", False) is True
        out = {**extras, "type": "dynamic-tool" if dynamic else f"tool-{part.name}",
               "toolCallId": part.call_id, "state": extras.get("state", "input-available"),
               "input": part.arguments}
        if dynamic:
            out["toolName"] = part.name
        metadata = others(part.provider_metadata, KEY)
        if metadata:
            out["callProviderMetadata"] = metadata
        return out
    if isinstance(part, DataPart):
        if part.name.startswith(f"{KEY}.") and isinstance(part.data, dict) and \
                part.data.get("type") == part.name[len(KEY) + 1:]:
            return dict(part.data)
        return {**extras, "type": f"data-{part.name}", "data": part.data}
    return None


def _fold(target: JsonDict, result: ToolResultPart) -> None:
    """Put ``result`` into the UI tool part of its call."""
    if result.is_error:
        target["state"] = "output-error"
        output = result.output
        target["errorText"] = output if isinstance(output, str) else dump_json(output)
    else:
        target["state"] = "output-available"
        target["output"] = result.output
    target.update(kept(result.provider_metadata, KEY))
    metadata = others(result.provider_metadata, KEY)
    if metadata:
        target["resultProviderMetadata"] = metadata


def _metadata_out(metadata: MessageMetadata) -> Any:
    fields = msgspec.to_builtins(metadata)
    extra = fields.pop("extra", {})
    given = kept(extra, KEY)
    if "metadata" in given:
        return given["metadata"]  # a UIMessage's metadata that was not an object
    out = others(extra, KEY)
    if fields:
        out[OWN] = fields
    return out or None


# --- in ---------------------------------------------------------------------------------


def from_ui_messages(messages: Iterable[Mapping[str, Any]]) -> list[Message]:
    """fsstore messages of AI SDK UIMessages, one each, with their ids. A tool part
    with a result becomes a ToolCallPart and, right after it, a ToolResultPart; data-NAME
    parts become DataParts named NAME; source and step parts become DataParts named
    ``ui_message.TYPE`` that hold the part. Raises InvalidMessage naming the field
    (``messages[0].parts[2].toolCallId``) of input that is not UIMessages."""
    items = need_list(messages, "messages")
    return [_message_in(item, f"messages[{index}]") for index, item in enumerate(items)]


def _message_in(value: Any, where: str) -> Message:
    msg = need_dict(value, where)
    role = need_str(msg.get("role"), f"{where}.role")
    if role not in ("system", "user", "assistant"):
        fail(f"{where}.role", f"expected system, user or assistant, not {role!r}")
    parts: list[MessagePart] = []
    for index, part in enumerate(need_list(msg.get("parts"), f"{where}.parts")):
        parts.extend(_part_in(need_dict(part, f"{where}.parts[{index}]"),
                              f"{where}.parts[{index}]"))
    return checked(Message(role=role, parts=parts,  # type: ignore[arg-type]
                           id=opt_str(msg.get("id"), f"{where}.id"),
                           metadata=_metadata_in(msg.get("metadata"), f"{where}.metadata")),
                   where)


def _metadata_in(value: Any, field: str) -> MessageMetadata:
    if value is None:
        return MessageMetadata()
    if not isinstance(value, dict):
        return MessageMetadata(extra={KEY: {"metadata": value}})
    extra = others(value, OWN)
    own = value.get(OWN)
    if own is None:
        return MessageMetadata(extra=extra)
    fields = others(need_dict(own, f"{field}.{OWN}"), "extra")
    try:
        return msgspec.convert({**fields, "extra": extra}, MessageMetadata)
    except msgspec.ValidationError as exc:
        fail(f"{field}.{OWN}", f"not fsstore message metadata: {exc}")


def _provider_in(part: JsonDict, key: str, field: str) -> tuple[JsonDict, JsonDict]:
    """(the part's provider metadata without fsstore's key, what that key held)."""
    metadata = need_dict(part.get(key) or {}, f"{field}.{key}")
    own = need_dict(metadata.pop(OWN, None) or {}, f"{field}.{key}.{OWN}")
    return metadata, own


def _part_in(part: JsonDict, field: str) -> list[MessagePart]:
    kind = need_type(part, field)
    if kind == "text":
        metadata, _ = _provider_in(part, "providerMetadata", field)
        return [TextPart(text=need_str(part.get("text"), f"{field}.text"), provider_metadata=keep(
            metadata, KEY, rest(part, {"type", "text", "providerMetadata"})))]
    if kind == "reasoning":
        metadata, own = _provider_in(part, "providerMetadata", field)
        signature: Any = opt_str(own.get("signature"), f"{field}.providerMetadata.{OWN}")
        if isinstance(own.get("signatureBase64"), str):
            signature = decode_base64(own["signatureBase64"],
                                      f"{field}.providerMetadata.{OWN}.signatureBase64")
        redacted = own.get("redacted") is True
        if not own:
            signature, redacted = _sdk_signature(metadata)
        return [ReasoningPart(text=need_str(part.get("text"), f"{field}.text"),
                              signature=signature, redacted=redacted,
                              provider_metadata=keep(metadata, KEY, rest(
                                  part, {"type", "text", "providerMetadata"})))]
    if kind == "file":
        metadata, _ = _provider_in(part, "providerMetadata", field)
        return [file_part(need_str(part.get("mediaType"), f"{field}.mediaType"),
                          url=need_str(part.get("url"), f"{field}.url"),
                          name=opt_str(part.get("filename"), f"{field}.filename"),
                          provider_metadata=keep(metadata, KEY, rest(part, {
                              "type", "mediaType", "url", "filename", "providerMetadata"})))]
    if kind == "dynamic-tool" or kind.startswith("tool-"):
        return _tool_in(part, field, kind)
    if kind.startswith("data-"):
        return [DataPart(name=kind[len("data-"):], data=part.get("data"),
                         provider_metadata=keep(None, KEY, rest(part, {"type", "data"})))]
    return [DataPart(name=f"{KEY}.{kind}", data=part)]  # source-url, step-start, ...


def _sdk_signature(metadata: Mapping[str, Any]) -> tuple[str | None, bool]:
    """The reasoning signature the AI SDK's providers keep in a part's providerMetadata
    (Anthropic's signature or redactedData, OpenAI's reasoningEncryptedContent), and
    whether it is redacted thinking: a reasoning part read from an AI SDK app keeps its
    signature when written to Anthropic or the Responses API."""
    anthropic = metadata.get("anthropic")
    if isinstance(anthropic, Mapping):
        if isinstance(anthropic.get("signature"), str):
            return anthropic["signature"], False
        if isinstance(anthropic.get("redactedData"), str):
            return anthropic["redactedData"], True
    openai = metadata.get("openai")
    if isinstance(openai, Mapping) and isinstance(openai.get("reasoningEncryptedContent"), str):
        return openai["reasoningEncryptedContent"], False
    return None, False


def _tool_in(part: JsonDict, field: str, kind: str) -> list[MessagePart]:
    dynamic = kind == "dynamic-tool"
    name = need_str(part.get("toolName"), f"{field}.toolName") if dynamic else kind[5:]
    call_id = need_str(part.get("toolCallId"), f"{field}.toolCallId")
    state = need_str(part.get("state"), f"{field}.state")
    call_metadata, _ = _provider_in(part, "callProviderMetadata", field)
    extras = rest(part, _TOOL_FIELDS)
    if dynamic:
        extras["dynamic"] = True
    if state not in _RESULT_STATES and state != "input-available":
        extras["state"] = state
    parts: list[MessagePart] = [ToolCallPart(call_id=call_id, name=name,
                                             arguments=part.get("input"),
                                             provider_metadata=keep(call_metadata, KEY, extras))]
    if state in _RESULT_STATES:
        result_metadata, _ = _provider_in(part, "resultProviderMetadata", field)
        result_extras = {key: part[key] for key in ("preliminary",) if key in part}
        error = state == "output-error"
        output = need_str(part.get("errorText"), f"{field}.errorText") if error \
            else part.get("output")
        parts.append(ToolResultPart(call_id=call_id, output=output, is_error=error, name=name,
                                    provider_metadata=keep(result_metadata, KEY,
                                                           result_extras)))
    return parts
