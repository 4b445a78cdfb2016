"""How ``fsstore show`` reads a session's message records: each message's role, its
parts (text shortened, reasoning marked, tool calls with their results under them,
files, data), the model, usage and cost of each message that has them, a usage line
per turn and the session's totals. Plain text; every str from the store goes through
``plain`` so that it can neither fake lines nor drive the terminal."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from ..log_format import Event
from ..message_types import (
    DataPart,
    FilePart,
    MessageMetadata,
    MessagePart,
    ReasoningPart,
    StoredMessage,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from ..session_reader import SessionReader
from ..turns import MESSAGE_RECORD
from ..usage import UsageTotals, account
from ._common import clock, dumps, human_bytes, plain, summarize
from .usage import cost_text, tokens_text

#: Where a message's lines start: under the kind column of the event lines.
INDENT = " " * 20
TEXT_WIDTH = 160
VALUE_WIDTH = 120


def short(text: str, width: int = TEXT_WIDTH) -> str:
    """``text`` on one line (whitespace runs as one space), escaped, at most ``width``
    characters."""
    flat = plain(" ".join(text.split()))
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def compact(value: Any, width: int = VALUE_WIDTH) -> str:
    """A JSON value as short compact JSON (a str as it is)."""
    text = value if isinstance(value, str) else dumps(value, separators=(",", ":"))
    return short(text, width)


class Conversation:
    """The message records of one session, read once so that each tool call can show
    its result, wherever in the session the result came."""

    def __init__(self, events: Iterable[Event]) -> None:
        self.results: dict[str, ToolResultPart] = {}
        self.calls: set[str] = set()
        for event in events:
            stored = _message_of(event)
            if stored is None:
                continue
            for part in stored.parts:
                if isinstance(part, ToolCallPart):
                    self.calls.add(part.call_id)
                elif isinstance(part, ToolResultPart):
                    self.results[part.call_id] = part  # an edit's result replaces

    def lines(self, event: Event) -> list[str]:
        """The lines of one ``fsstore.message`` record."""
        head = f"  #{event.seq:<6} {clock(event.ts)}  "
        data = event.data
        op = data.get("op") if isinstance(data, dict) else None
        if op == "delete":
            was = data.get("was") if isinstance(data.get("was"), dict) else {}
            role = plain(was.get("role", "?"))
            return [f"{head}{'deleted':<12} {plain(data.get('id'))} (a {role} message)"]
        stored = _message_of(event)
        if stored is None:
            return [f"{head}{'message?':<12} {summarize(data)} (does not fit the message "
                    "schema: run `fsstore verify`)"]
        title = plain(stored.id)
        if op == "edit":
            title += f" edited (version {data.get('version', '?')})"
        about = metadata_text(stored.metadata)
        lines = [f"{head}{stored.role:<12} {title}" + (f"  {about}" if about else "")]
        shown_elsewhere = [part.call_id for part in stored.parts
                           if isinstance(part, ToolResultPart) and part.call_id in self.calls]
        if shown_elsewhere:
            calls = ", ".join(plain(call) for call in shown_elsewhere)
            lines.append(f"{INDENT}results of {calls}: under the calls above")
        for part in stored.parts:
            if isinstance(part, ToolResultPart) and part.call_id in self.calls:
                continue
            lines.extend(self.part_lines(part))
        return lines

    def part_lines(self, part: MessagePart) -> list[str]:
        if isinstance(part, TextPart):
            return [INDENT + short(part.text)]
        if isinstance(part, ReasoningPart):
            marks = ["reasoning"] + (["redacted"] if part.redacted else []) + (
                ["signed"] if part.signature is not None else [])
            return [f"{INDENT}[{', '.join(marks)}] {short(part.text)}".rstrip()]
        if isinstance(part, ToolCallPart):
            lines = [f"{INDENT}call {plain(part.name)}({compact(part.arguments)})  "
                     f"[{plain(part.call_id)}]"]
            result = self.results.get(part.call_id)
            lines.append(f"{INDENT}  -> " + ("no result in this session" if result is None
                                             else result_text(result)))
            return lines
        if isinstance(part, ToolResultPart):
            orphan = ", orphan" if part.orphan else ""
            return [f"{INDENT}result of {plain(part.call_id)}{orphan} -> "
                    f"{result_text(part)}"]
        if isinstance(part, FilePart):
            return [INDENT + file_text(part)]
        if isinstance(part, DataPart):
            return [f"{INDENT}[data {plain(part.name)}] {compact(part.data)}"]
        return [INDENT + compact(msgspec.to_builtins(part))]

    def turn_usage(self, events: Iterable[Event]) -> UsageTotals:
        """What the turn's message records spent: an add its usage, an edit the change
        from the version it replaced (as the session's usage fold counts them)."""
        spent = UsageTotals()
        for event in events:
            data = event.data
            if event.kind != MESSAGE_RECORD or not isinstance(data, dict):
                continue
            try:
                if data.get("op") in ("add", "edit"):
                    spent.add(account(data["message"]).usage)
                if data.get("op") == "edit":
                    spent.add(msgspec.convert(data["was"]["usage"], UsageTotals), -1)
            except (KeyError, TypeError, ValueError, AttributeError, msgspec.ValidationError):
                continue  # a record that does not fit: `fsstore verify` reports it
        return spent


def _message_of(event: Event) -> StoredMessage | None:
    data = event.data
    if event.kind != MESSAGE_RECORD or not isinstance(data, dict) or "message" not in data:
        return None
    try:
        return msgspec.convert(data["message"], StoredMessage)
    except msgspec.ValidationError:
        return None


def result_text(result: ToolResultPart) -> str:
    return f"{'error' if result.is_error else 'ok'}: {compact(result.output)}"


def file_text(part: FilePart) -> str:
    name = f" {plain(part.name)}" if part.name else ""
    if part.blob is not None:
        size = part.blob.get("size")
        digest = str(part.blob.get("fsstore.blob", ""))
        where = (f"{human_bytes(size)}, " if isinstance(size, int) and size >= 0 else "") + (
            f"blob {plain(digest[7:19])}")
    elif part.data is not None:
        where = f"{human_bytes(len(part.data))} inline"
    else:
        where = f"url {short(part.url or '', VALUE_WIDTH)}"
    return f"[file {plain(part.media_type)}{name}, {where}]"


def metadata_text(metadata: MessageMetadata) -> str:
    """``model (provider), finish, tokens, cost, latency``: what is there of them."""
    shown = []
    if metadata.model:
        shown.append(plain(metadata.model) + (f" ({plain(metadata.provider)})"
                                              if metadata.provider else ""))
    elif metadata.provider:
        shown.append(plain(metadata.provider))
    if metadata.finish_reason:
        shown.append(plain(metadata.finish_reason))
    if metadata.usage is not None:
        shown.append(tokens_text(metadata.usage))
    if metadata.cost is not None:
        shown.append(cost_text({metadata.cost.currency: metadata.cost.amount}))
    if metadata.latency is not None:
        shown.append(f"{metadata.latency:.2f} s")
    return ", ".join(shown)


def usage_line(totals: UsageTotals) -> str:
    return (f"{tokens_text(totals)}, {totals.messages} message(s) with usage, "
            f"cost {cost_text(totals.cost)}")


def totals_lines(reader: SessionReader) -> list[str]:
    """The session's totals: its usage fold and execution statistics (none when it has
    no messages)."""
    stats = reader.stats()
    if not stats.messages and stats.usage.is_empty():
        return []
    roles = ", ".join(f"{plain(role)} {count}" for role, count in
                      stats.messages_by_role.items())
    lines = ["", f"totals: {stats.messages} messages ({roles}), {stats.tool_calls} tool "
             f"calls ({stats.tool_errors} failed), {stats.turns} finished turns "
             f"({stats.turn_seconds:.1f} s, the longest {stats.longest_turn_seconds:.1f} s)",
             f"  usage: {usage_line(stats.usage)}"]
    by_model: Mapping[str, UsageTotals] = reader.usage(by="model")
    for model, totals in by_model.items():
        lines.append(f"  model {plain(model) or '(none)'}: {tokens_text(totals)}, "
                     f"{totals.messages} message(s), cost {cost_text(totals.cost)}")
    return lines
