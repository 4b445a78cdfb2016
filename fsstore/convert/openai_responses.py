"""OpenAI Responses API input and output items, to and from fsstore messages.

Items are finer than messages: a user, system or developer message item is one fsstore
message; a run of model items in a row (reasoning, function_call, assistant message
items, and items of built-in tools) is one assistant message, each part keeping the id
and status of its item; a run of function_call_output items is one tool message. An
item's id is the message's id when the item starts its message. A reasoning item is a
ReasoningPart: its summaries are the text, its encrypted_content the signature. What the
format cannot hold is listed in docs/CONVERTERS.md.
"""

from __future__ import annotations

import mimetypes
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
    Role,
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
    rest,
    signature_text,
    stored_messages,
    usage_in,
)

KEY = "openai_responses"
#: metadata.extra key of what a response says of itself (id, status, ...).
RESPONSE_KEY = "openai_response"
_ITEM = "item"  # provider_metadata[KEY][_ITEM]: the fields of the item a part came from


# --- out --------------------------------------------------------------------------------


def to_openai_responses(messages: Iterable[Message | Mapping[str, Any]]) -> list[JsonDict]:
    """The Responses API ``input`` items of fsstore messages. Raises InvalidMessage
    naming ``messages[i].FIELD`` for a message that is not one, or a blob file part."""
    out: list[JsonDict] = []
    for index, message in enumerate(stored_messages(messages)):
        where = f"messages[{index}]"
        if message.role == "assistant":
            out.extend(_model_items(message.parts))
        elif message.role == "tool":
            for part in message.parts:
                if isinstance(part, ToolResultPart):
                    out.append(_result_out(part))
                elif isinstance(part, DataPart) and part.name == f"{KEY}.item" and \
                        isinstance(part.data, dict):
                    out.append(dict(part.data))
        else:
            extras = kept(message.metadata.extra, KEY)
            role = "developer" if (message.role == "system"
                                   and extras.pop("role", None) == "developer") else message.role
            content = [item for number, part in enumerate(message.parts)
                       if (item := _input_out(part, f"{where}.parts[{number}]")) is not None]
            plain: str | list[JsonDict] = content
            if len(content) == 1 and content[0].keys() == {"type", "text"} \
                    and content[0]["type"] == "input_text":
                plain = str(content[0]["text"])
            out.append({**extras, "role": role, "content": plain})
    return out


def _input_out(part: MessagePart, field: str) -> JsonDict | None:
    extras = kept(part.provider_metadata, KEY)
    if isinstance(part, TextPart):
        return {"type": "input_text", **extras, "text": part.text}
    if isinstance(part, FilePart):
        if part.media_type.startswith("image/"):
            return {**extras, "type": "input_image", "image_url": file_url(part, field)}
        out: JsonDict = {**extras, "type": "input_file"}
        if file_bytes(part, field) is None:
            out["file_url"] = part.url
        else:
            out["file_data"] = file_url(part, field)
        if part.name is not None:
            out["filename"] = part.name
        return out
    if isinstance(part, DataPart) and part.name == f"{KEY}.content" and \
            isinstance(part.data, dict):
        return dict(part.data)
    return None


def _model_items(parts: list[MessagePart]) -> list[JsonDict]:
    items: list[JsonDict] = []
    message: JsonDict | None = None  # the assistant message item text parts go into
    for part in parts:
        extras = kept(part.provider_metadata, KEY)
        item = extras.pop(_ITEM, {})
        item = dict(item) if isinstance(item, dict) else {}
        if isinstance(part, TextPart):
            if extras.get("type") == "refusal":
                content: JsonDict = {**extras, "refusal": part.text}
            else:
                content = {"type": "output_text", "annotations": [], **extras,
                           "text": part.text}
            if message is None or message["item"] != item:
                message = {"item": item, "content": []}
                items.append({**item, "type": "message", "role": "assistant",
                              "content": message["content"]})
            message["content"].append(content)
            continue
        message = None
        if isinstance(part, ReasoningPart):
            items.append(_reasoning_out(part, extras, item))
        elif isinstance(part, ToolCallPart):
            items.append({**item, **rest(extras, {"arguments"}), "type": "function_call",
                          "call_id": part.call_id, "name": part.name,
                          "arguments": arguments_out(part.arguments, extras)})
        elif isinstance(part, ToolResultPart):
            items.append(_result_out(part))
        elif isinstance(part, DataPart) and part.name == f"{KEY}.item" and \
                isinstance(part.data, dict):
            items.append(dict(part.data))
    return items


def _reasoning_out(part: ReasoningPart, extras: JsonDict, item: JsonDict) -> JsonDict:
    summary = extras.pop("summary", None)
    if not (isinstance(summary, list) and _summary_text(summary) == part.text):
        summary = _summary_of(part.text)
    out: JsonDict = {**item, **extras, "type": "reasoning", "summary": summary}
    signature = signature_text(part.signature)
    if signature is not None:
        out["encrypted_content"] = signature
    return out


def _summary_of(text: str) -> list[JsonDict]:
    return [] if text == "" else [{"type": "summary_text", "text": text}]


def _summary_text(summary: list[Any]) -> str | None:
    texts = [entry.get("text") for entry in summary if isinstance(entry, dict)]
    if len(texts) != len(summary) or not all(isinstance(text, str) for text in texts):
        return None
    return "\n\n".join(texts)  # type: ignore[arg-type]


def _result_out(part: ToolResultPart) -> JsonDict:
    extras = kept(part.provider_metadata, KEY)
    item = extras.pop(_ITEM, {})
    return {**(item if isinstance(item, dict) else {}), **extras,
            "type": "function_call_output", "call_id": part.call_id,
            "output": output_out(part.output)}


# --- in ---------------------------------------------------------------------------------


def from_openai_responses(items: Iterable[Mapping[str, Any]]) -> list[Message]:
    """fsstore messages of Responses API items (an ``input`` list, or a response's
    ``output``), grouped as the module docstring says. A tool result is named after its
    call when the call comes earlier. Raises InvalidMessage naming the field
    (``items[3].call_id``) of input that is not Responses items."""
    given = need_list(items, "items")
    names = CallNames()
    out: list[Message] = []
    run: list[MessagePart] = []  # the parts of the message being gathered
    run_role: Role | None = None
    run_id: str | None = None
    run_start = 0

    def close() -> None:
        if run_role is not None:
            out.append(checked(Message(role=run_role, parts=list(run), id=run_id),
                               f"items[{run_start}]"))
        run.clear()

    for index, value in enumerate(given):
        field = f"items[{index}]"
        item = need_dict(value, field)
        kind = item.get("type", "message")
        role = item.get("role")
        if kind == "message" and role != "assistant":
            close()
            run_role = None
            out.append(_input_message(item, field))
            continue
        wanted: Role = "tool" if kind == "function_call_output" else "assistant"
        if wanted != run_role:
            close()
            run_role, run_id, run_start = wanted, opt_str(item.get("id"), f"{field}.id"), index
        run.extend(_model_parts(item, field, names))
    close()
    return out


def _input_message(item: JsonDict, field: str) -> Message:
    role = need_str(item.get("role"), f"{field}.role")
    if role not in ("user", "system", "developer"):
        fail(f"{field}.role", f"expected user, system, developer or assistant, not {role!r}")
    extras = rest(item, {"role", "content"})
    if role == "developer":
        extras["role"] = "developer"
    content = item.get("content")
    if isinstance(content, str):
        parts: list[MessagePart] = [TextPart(text=content)]
    else:
        parts = [_input_part(need_dict(entry, f"{field}.content[{number}]"),
                             f"{field}.content[{number}]")
                 for number, entry in enumerate(need_list(content, f"{field}.content"))]
    return checked(Message(role="user" if role == "user" else "system", parts=parts,
                           id=opt_str(item.get("id"), f"{field}.id"),
                           metadata=MessageMetadata(extra=keep(None, KEY, extras))), field)


def _input_part(entry: JsonDict, field: str) -> MessagePart:
    kind = need_type(entry, field)
    if kind == "input_text":
        return TextPart(text=need_str(entry.get("text"), f"{field}.text"),
                        provider_metadata=keep(None, KEY, rest(entry, {"type", "text"})))
    if kind == "input_image" and isinstance(entry.get("image_url"), str):
        return file_part("image/*", url=entry["image_url"], provider_metadata=keep(
            None, KEY, rest(entry, {"type", "image_url"})))
    if kind == "input_file":
        name = opt_str(entry.get("filename"), f"{field}.filename")
        extras = keep(None, KEY, rest(entry, {"type", "file_data", "file_url", "filename"}))
        data = entry.get("file_data")
        if isinstance(data, str) and parse_data_url(data) is not None:
            return file_part("application/octet-stream", url=data, name=name,
                             provider_metadata=extras)
        url = entry.get("file_url")
        if data is None and isinstance(url, str) and "file_id" not in entry:
            return FilePart(media_type=_guess(name or url), url=url, name=name,
                            provider_metadata=extras)
    # files by id, output_text in an input message, types this converter does not know
    return DataPart(name=f"{KEY}.content", data=entry)


def _guess(name: str) -> str:
    return mimetypes.guess_type(name.split("?")[0])[0] or "application/octet-stream"


def _model_parts(item: JsonDict, field: str, names: CallNames) -> list[MessagePart]:
    kind = item.get("type", "message")
    if kind == "message":
        fields = rest(item, {"type", "role", "content"})
        content = item.get("content")
        if isinstance(content, str):
            return [TextPart(text=content, provider_metadata={KEY: {_ITEM: fields}}
                             if fields else {})]
        return [_output_part(need_dict(entry, f"{field}.content[{number}]"),
                             f"{field}.content[{number}]", fields)
                for number, entry in enumerate(need_list(content, f"{field}.content"))]
    if kind == "reasoning":
        return [_reasoning_in(item, field)]
    if kind == "function_call":
        call_id = need_str(item.get("call_id"), f"{field}.call_id")
        name = need_str(item.get("name"), f"{field}.name")
        arguments, kept_text = arguments_in(need_str(item.get("arguments"),
                                                     f"{field}.arguments"))
        names.note(call_id, name)
        return [ToolCallPart(call_id=call_id, name=name, arguments=arguments,
                             provider_metadata=_with_item(item, {
                                 "type", "call_id", "name", "arguments"}, kept_text))]
    if kind == "function_call_output":
        call_id = need_str(item.get("call_id"), f"{field}.call_id")
        output = item.get("output")
        if not isinstance(output, str):
            output = need_list(output, f"{field}.output")
        return [ToolResultPart(call_id=call_id, output=output, name=names.name(call_id),
                               provider_metadata=_with_item(item, {
                                   "type", "call_id", "output"}, {}))]
    need_type(item, field)
    return [DataPart(name=f"{KEY}.item", data=item)]  # built-in tools' items and others


def _with_item(item: JsonDict, used: set[str], extras: JsonDict) -> JsonDict:
    fields = {key: item[key] for key in ("id", "status") if key in item}
    kept_fields = {**rest(item, used | {"id", "status"}), **extras}
    if fields:
        kept_fields[_ITEM] = fields
    return keep(None, KEY, kept_fields)


def _output_part(entry: JsonDict, field: str, item: JsonDict) -> MessagePart:
    kind = need_type(entry, field)
    extras: JsonDict
    if kind == "refusal":
        text = need_str(entry.get("refusal"), f"{field}.refusal")
        extras = rest(entry, {"refusal"})
    elif kind in ("output_text", "input_text"):
        text = need_str(entry.get("text"), f"{field}.text")
        extras = rest(entry, {"type", "text"})
        if kind != "output_text":
            extras["type"] = kind
        if extras.get("annotations") == []:
            del extras["annotations"]  # written back as [] (the API wants the field)
    else:
        return DataPart(name=f"{KEY}.item", data={"type": "message", "role": "assistant",
                                                  **item, "content": [entry]})
    if item:
        extras[_ITEM] = item
    return TextPart(text=text, provider_metadata=keep(None, KEY, extras))


def _reasoning_in(item: JsonDict, field: str) -> ReasoningPart:
    summary = need_list(item.get("summary", []), f"{field}.summary")
    text = _summary_text(summary)
    if text is None:
        fail(f"{field}.summary", "expected a list of summary_text objects with a text")
    extras = _with_item(item, {"type", "summary", "encrypted_content"}, {})
    if summary != _summary_of(text):
        extras.setdefault(KEY, {})["summary"] = summary
    return ReasoningPart(text=text, signature=opt_str(item.get("encrypted_content"),
                                                      f"{field}.encrypted_content"),
                         provider_metadata=extras)


def from_openai_response(response: Mapping[str, Any]) -> Message:
    """The assistant message of a Responses API response (``responses.create``'s
    Response, as a dict): its ``output`` items as one message, with the model, finish
    reason and usage (cached input and reasoning tokens too). The response's id,
    status and incomplete_details go in ``metadata.extra["openai_response"]``."""
    body = need_dict(response, "response")
    output = need_list(body.get("output"), "response.output")
    names = CallNames()
    parts = [part for index, item in enumerate(output)
             for part in _model_parts(need_dict(item, f"response.output[{index}]"),
                                      f"response.output[{index}]", names)]
    first = need_dict(output[0], "response.output[0]") if output else {}
    info = {key: body[key] for key in ("id", "created_at", "status", "incomplete_details",
                                       "previous_response_id", "service_tier")
            if body.get(key) is not None}
    return checked(Message(role="assistant", parts=parts,
                           id=opt_str(first.get("id"), "response.output[0].id"),
                           metadata=MessageMetadata(
                               model=opt_str(body.get("model"), "response.model"),
                               provider="openai", finish_reason=_finish(body, parts),
                               usage=_usage_in(body.get("usage")),
                               extra=keep(None, RESPONSE_KEY, info))), "response")


def _finish(body: JsonDict, parts: list[MessagePart]) -> Finish | None:
    status = body.get("status")
    if status == "completed":
        return "tool_calls" if any(isinstance(p, ToolCallPart) for p in parts) else "stop"
    if status == "incomplete":
        details = body.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        if reason == "max_output_tokens":
            return "length"
        return "content_filter" if reason == "content_filter" else "other"
    if status == "failed":
        return "error"
    return None if status is None else "other"


def _usage_in(value: Any) -> TokenUsage | None:
    return usage_in(value, ("input_tokens", "output_tokens", "input_tokens_details",
                            "output_tokens_details"))
