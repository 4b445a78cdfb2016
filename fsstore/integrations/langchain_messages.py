"""LangChain messages to fsstore messages and back, exactly.

A LangChain message becomes one fsstore message (docs/INTEGRATIONS.md, "LangChain"):

- its type gives the role (human: user, ai: assistant, system: system, tool and
  function: tool, chat: its role when it is one of the four, else user);
- its content gives the parts: a str is one text part; a list gives one part per block
  (text blocks text parts, ``reasoning`` and ``thinking`` blocks reasoning parts, any
  other block a data part named ``langchain.<type>`` holding the block); an AI message's
  tool calls are tool-call parts; a tool (or function) message is one tool-result part
  whose output is the content;
- an AI message's ``usage_metadata`` gives the token usage, its ``response_metadata``
  the model, provider and finish reason, so ``usage()``, ``stats()`` and ``fsstore
  show`` count LangChain conversations like any other.

What that mapping does not carry (``additional_kwargs``, ``response_metadata``, a name,
an id that is None or repeats, invalid tool calls, an artifact, ...) is kept in the
message's ``metadata.extra["langchain"]``: ``{"type": ..., "fields": {...}}`` holds each
field the parts and metadata do not rebuild exactly. Before a message is written its
read-back is computed from the encoded form and compared with it: a message that would
not read back equal (a tuple, bytes or a datetime in ``additional_kwargs``) is refused
with InvalidMessage naming the field, and nothing is written.

Messages that other code appended (no ``langchain`` extra) read back by their role.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    ChatMessageChunk,
    FunctionMessage,
    FunctionMessageChunk,
    HumanMessage,
    HumanMessageChunk,
    SystemMessage,
    SystemMessageChunk,
    ToolMessage,
    ToolMessageChunk,
)

from ..errors import InvalidMessage
from ..message_types import (
    DataPart,
    Message,
    MessageMetadata,
    MessagePart,
    ReasoningPart,
    TextPart,
    TokenUsage,
    ToolCallPart,
    ToolResultPart,
    check_id,
    check_message,
    new_message_id,
    to_message,
)

__all__ = ["from_fsstore", "history_messages", "to_fsstore"]

#: The key of ``metadata.extra`` that holds what the mapping does not carry.
EXTRA_KEY = "langchain"

_CLASSES: dict[str, type[BaseMessage]] = {
    cls.model_fields["type"].default: cls
    for cls in (HumanMessage, AIMessage, SystemMessage, ToolMessage, FunctionMessage,
                ChatMessage, HumanMessageChunk, AIMessageChunk, SystemMessageChunk,
                ToolMessageChunk, FunctionMessageChunk, ChatMessageChunk)
}
_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool",
          "function": "tool", "chat": "user"}
_TYPES = {"user": "human", "assistant": "ai", "system": "system", "tool": "tool"}
_CHAT_ROLES = {"user": "user", "human": "user", "assistant": "assistant", "ai": "assistant",
               "system": "system", "tool": "tool"}
_FINISH = {"stop": "stop", "end_turn": "stop", "stop_sequence": "stop", "STOP": "stop",
           "length": "length", "max_tokens": "length", "MAX_TOKENS": "length",
           "tool_calls": "tool_calls", "tool_use": "tool_calls", "function_call": "tool_calls",
           "content_filter": "content_filter", "SAFETY": "content_filter"}
#: Markers in a part's provider_metadata that say which LangChain block it was.
_BLOCK = "langchain_block"  # the block's other keys
_STR = "langchain_str"  # the item was a bare str
_KEY = "langchain_key"  # a reasoning part: the key that held its text


def _base_type(message_type: str) -> str:
    """``human`` for ``human`` and ``HumanMessageChunk``."""
    if message_type.endswith("MessageChunk"):
        name = message_type[: -len("MessageChunk")]
        return {"Human": "human", "AI": "ai", "System": "system", "Tool": "tool",
                "Function": "function", "Chat": "chat"}.get(name, name.lower())
    return message_type


# --- LangChain to fsstore ---------------------------------------------------------------


def _block_part(block: Any) -> MessagePart:
    if isinstance(block, str):
        return TextPart(text=block, provider_metadata={_STR: True})
    if isinstance(block, Mapping):
        kind = block.get("type")
        rest = {key: value for key, value in block.items() if key != "type"}
        if kind == "text" and isinstance(block.get("text"), str):
            del rest["text"]
            return TextPart(text=block["text"], provider_metadata={_BLOCK: rest})
        for key in ("reasoning", "thinking"):
            if kind == key and isinstance(block.get(key), str):
                del rest[key]
                signature = rest.pop("signature", None) if isinstance(
                    rest.get("signature"), str) else None
                return ReasoningPart(text=block[key], signature=signature,
                                     provider_metadata={_BLOCK: rest, _KEY: key})
        name = f"langchain.{kind}" if isinstance(kind, str) else "langchain"
        return DataPart(name=name, data=dict(block))
    return DataPart(name="langchain", data=block)


def _content_parts(content: Any) -> list[MessagePart]:
    if isinstance(content, str):
        return [TextPart(text=content)] if content else []
    if isinstance(content, list):
        return [_block_part(block) for block in content]
    return []


def _usage(value: Any) -> TokenUsage | None:
    if not isinstance(value, Mapping):
        return None

    def count(mapping: Any, key: str) -> int:
        number = mapping.get(key) if isinstance(mapping, Mapping) else None
        return number if isinstance(number, int) and not isinstance(number, bool) \
            and 0 <= number < 2**63 else 0
    return TokenUsage(
        input=count(value, "input_tokens"), output=count(value, "output_tokens"),
        cached_input=count(value.get("input_token_details"), "cache_read"),
        cache_write=count(value.get("input_token_details"), "cache_creation"),
        reasoning=count(value.get("output_token_details"), "reasoning"))


def _metadata(message: BaseMessage, kind: str) -> MessageMetadata:
    if kind != "ai":
        return MessageMetadata()
    response = message.response_metadata if isinstance(
        message.response_metadata, Mapping) else {}
    model = response.get("model_name", response.get("model"))
    provider = response.get("model_provider")
    finish = response.get("finish_reason", response.get("stop_reason"))
    return MessageMetadata(
        model=model if isinstance(model, str) else None,
        provider=provider if isinstance(provider, str) else None,
        finish_reason=_FINISH.get(finish) if isinstance(finish, str) else None,  # type: ignore[arg-type]
        usage=_usage(getattr(message, "usage_metadata", None)))


def _parts(message: BaseMessage, kind: str) -> list[MessagePart]:
    if kind in ("tool", "function"):
        given = getattr(message, "tool_call_id", None)
        call_id = given if kind == "tool" and isinstance(given, str) and _valid_id(given) \
            else "call_" + secrets.token_hex(8)
        return [ToolResultPart(call_id=call_id, output=message.content,
                               is_error=getattr(message, "status", None) == "error",
                               name=message.name)]
    parts = _content_parts(message.content)
    for call in getattr(message, "tool_calls", None) or []:
        call_id = call.get("id")
        parts.append(ToolCallPart(
            call_id=call_id if _valid_id(call_id) else "call_" + secrets.token_hex(8),
            name=call.get("name") if isinstance(call.get("name"), str) else "",
            arguments=call.get("args")))
    return parts


def _valid_id(value: object) -> bool:
    try:
        check_id(value)
    except InvalidMessage:
        return False
    return True


def to_fsstore(message: BaseMessage, message_id: str | None = None) -> Message:
    """The fsstore message that stores LangChain ``message``, under ``message_id`` (by
    default the LangChain id when it is a valid message id, else a new one).
    InvalidMessage when it would not read back equal."""
    if not isinstance(message, BaseMessage):
        raise InvalidMessage(f"a LangChain message is a BaseMessage, not "
                             f"{type(message).__name__}", field="message")
    message_type = message.type
    if message_type not in _CLASSES:
        raise InvalidMessage(f"LangChain message type {message_type!r} is not a message a "
                             "chat history holds (human, ai, system, tool, function, chat "
                             "and their chunks)", field="type")
    kind = _base_type(message_type)
    if message_id is None:
        message_id = message.id if _valid_id(message.id) else new_message_id()
    role = _ROLES[kind]
    if kind == "chat":
        role = _CHAT_ROLES.get(getattr(message, "role", ""), "user")
    parts = _parts(message, kind)
    metadata = _metadata(message, kind)
    draft = Message(id=message_id, role=role, parts=parts,  # type: ignore[arg-type]
                    metadata=metadata)
    rebuilt = _fields(draft, message_type, {})
    original = dict(message)
    fields = {name: value for name, value in original.items()
              if name != "type" and rebuilt.get(name) != value}
    extra: dict[str, Any] = {"type": message_type}
    if isinstance(message.content, list):
        extra["list"] = True
        rebuilt = _fields(draft, message_type, extra)
        fields = {name: value for name, value in original.items()
                  if name != "type" and rebuilt.get(name) != value}
    if fields:
        extra["fields"] = fields
    metadata.extra = {EXTRA_KEY: extra}
    stored = Message(id=message_id, role=role, parts=parts,  # type: ignore[arg-type]
                     metadata=metadata)
    _check_reads_back(stored, message)
    return stored


def _check_reads_back(stored: Message, message: BaseMessage) -> None:
    """Refuse ``message`` unless what the log would give back equals it: the stored form
    is encoded and decoded as a write and a read would."""
    encoded = check_message(stored)
    back = from_fsstore(to_message(encoded))
    if back == message:
        return
    names = [name for name, value in dict(message).items()
             if dict(back).get(name) != value] or ["message"]
    raise InvalidMessage(
        f"LangChain {message.type} message {message.id!r}: field {names[0]} would not read "
        "back equal (JSON holds no tuples, sets, bytes, datetimes or objects): give it "
        "JSON values (dicts with str keys, lists, str, int, float, bool, None)",
        field=names[0])


# --- fsstore to LangChain ---------------------------------------------------------------


def _block(part: MessagePart) -> Any:
    meta = part.provider_metadata
    if isinstance(part, TextPart):
        if meta.get(_STR) is True:
            return part.text
        return {"type": "text", "text": part.text, **meta.get(_BLOCK, {})}
    if isinstance(part, ReasoningPart):
        key = meta.get(_KEY, "reasoning")
        block = {"type": key, key: part.text, **meta.get(_BLOCK, {})}
        if part.signature is not None:
            block["signature"] = part.signature
        return block
    if isinstance(part, DataPart):
        return part.data
    return None


def _content(message: Message, extra: Mapping[str, Any]) -> Any:
    parts = [part for part in message.parts
             if not isinstance(part, (ToolCallPart, ToolResultPart))]
    if extra.get("list"):
        return [_block(part) for part in parts]
    return "\n".join(part.text for part in parts if isinstance(part, TextPart))


def _usage_metadata(usage: TokenUsage | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    result: dict[str, Any] = {"input_tokens": usage.input, "output_tokens": usage.output,
                              "total_tokens": usage.input + usage.output}
    details = {key: value for key, value in (("cache_read", usage.cached_input),
                                             ("cache_creation", usage.cache_write)) if value}
    if details:
        result["input_token_details"] = details
    if usage.reasoning:
        result["output_token_details"] = {"reasoning": usage.reasoning}
    return result


def _fields(message: Message, message_type: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    """The LangChain fields the parts and metadata of ``message`` give."""
    kind = _base_type(message_type)
    fields: dict[str, Any] = {"content": _content(message, extra), "additional_kwargs": {},
                              "response_metadata": {}, "name": None, "id": message.id}
    result = next(iter(message.tool_results), None)
    if kind in ("tool", "function") and result is not None:
        output = result.output
        fields["content"] = output if isinstance(output, (str, list)) else (
            "" if output is None else str(output))
        fields["name"] = result.name
    if kind == "ai":
        fields["tool_calls"] = [{"name": call.name, "args": call.arguments,
                                 "id": call.call_id, "type": "tool_call"}
                                for call in message.tool_calls]
        fields["invalid_tool_calls"] = []
        fields["usage_metadata"] = _usage_metadata(message.metadata.usage)
    elif kind == "tool":
        fields["tool_call_id"] = result.call_id if result is not None else ""
        fields["artifact"] = None
        fields["status"] = "error" if result is not None and result.is_error else "success"
    elif kind == "chat":
        fields["role"] = message.role
    if message_type == "AIMessageChunk":
        fields["tool_call_chunks"] = []
        fields["chunk_position"] = None
    return fields


def from_fsstore(message: Message) -> BaseMessage:
    """The LangChain message an fsstore message stands for: exactly the one stored by
    :func:`to_fsstore`, or, for a message other code appended, one of its role's type."""
    extra = message.metadata.extra.get(EXTRA_KEY)
    if not isinstance(extra, Mapping) or extra.get("type") not in _CLASSES:
        extra = {"type": _TYPES[message.role]}
    message_type = extra["type"]
    fields = _fields(message, message_type, extra)
    overrides = extra.get("fields")
    if isinstance(overrides, Mapping):
        fields.update(overrides)
    cls = _CLASSES[message_type]
    built = cls(**fields)
    if overrides is not None and any(value != fields[name] for name, value in built
                                     if name in fields):
        # The fields are those of a message LangChain validated already, but some
        # validators are not idempotent (a chunk rebuilds its tool calls from its
        # tool call chunks, dropping an invalid call's error): take them as they are.
        return cls.model_construct(**fields)
    return built


def history_messages(messages: list[Message]) -> list[BaseMessage]:
    """The LangChain history of fsstore ``messages``: each as :func:`from_fsstore`
    gives it, except that a tool message other code appended with several tool results
    (as the converters make of an Anthropic user turn) becomes one ``ToolMessage`` per
    result, as LangChain keeps them."""
    history: list[BaseMessage] = []
    for message in messages:
        results = message.tool_results
        if (message.role == "tool" and len(results) > 1
                and EXTRA_KEY not in message.metadata.extra):
            history.extend(from_fsstore(Message(id=message.id, role="tool", parts=[result],
                                                metadata=message.metadata))
                           for result in results)
        else:
            history.append(from_fsstore(message))
    return history
