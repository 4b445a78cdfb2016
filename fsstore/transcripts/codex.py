"""Codex CLI transcripts ("rollouts"): ``~/.codex/sessions/YYYY/MM/DD/rollout-*.jsonl``.

Each line is ``{"timestamp", "type", "payload"}`` with a type of ``session_meta`` (the
first line: id, cwd, cli_version, git, source, forked_from_id), ``response_item`` (an
OpenAI Responses API item: the conversation as the model saw it, mapped by
``fsstore.convert.openai_responses``), ``event_msg`` (what the UI was told, repeating
much of the conversation), ``turn_context`` (model, cwd and policies of a turn) or
``compacted`` (a compaction's summary). Rollouts before 0.3x hold the bare meta object
on the first line, then bare items and ``{"record_type": "state"}`` lines.

One view of the conversation is imported: the response items. ``event_msg`` records
that repeat them (``user_message``, ``agent_message``, ``agent_reasoning``) are left
out; ``token_count`` events give the usage of the model call that just ended (its
``last_token_usage``), and one that repeats the previous totals is left out. The other
records are kept as ``codex.raw`` events. A run of model items (reasoning, message,
function and custom tool calls) is one assistant message; each tool output is a tool
message (an ``exit_code`` other than 0 marks it an error).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, NamedTuple

from ..convert.common import arguments_in
from ..convert.openai_responses import from_openai_responses
from ..errors import InvalidMessage
from ..message_types import (
    DataPart,
    Message,
    MessageMetadata,
    MessagePart,
    TextPart,
    TokenUsage,
    ToolCallPart,
    ToolResultPart,
)
from .common import (
    AddMessage,
    Blobs,
    Line,
    MapperBase,
    OpenMessage,
    Output,
    blobify,
    first_record,
    remember,
    session_id_for,
    short_text,
    timestamp,
    transcript_files,
)

NAME = "codex"
PREFIX = "codex"
RAW_KIND = "codex.raw"
#: provider_metadata / metadata.extra key of what Codex says that has no fsstore field.
EXTRA_KEY = "codex"
_ENVELOPE = {"session_meta", "response_item", "event_msg", "turn_context", "compacted"}
_REPEATS = {"user_message", "agent_message", "agent_reasoning",
            "agent_reasoning_raw_content", "agent_reasoning_section_break"}
_MODEL_ITEMS = {"reasoning", "function_call", "custom_tool_call", "local_shell_call",
                "web_search_call", "image_generation_call", "tool_search_call"}
_OUTPUTS = {"function_call_output", "custom_tool_call_output", "tool_search_output"}
_CONTEXT = ("<environment_context>", "<user_instructions>", "# AGENTS.md", "<INSTRUCTIONS>")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                   r"[0-9a-fA-F]{12}")
_MAX_DEPTH = 4  # sessions/YYYY/MM/DD/rollout.jsonl
_TOTALS = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_output_tokens",
           "total_tokens")


def default_root() -> str:
    home = os.environ.get("CODEX_HOME") or os.path.join(os.path.expanduser("~"), ".codex")
    return os.path.join(home, "sessions")


class CodexSource(NamedTuple):
    """A Codex rollout: its file, Codex's session (thread) id, the fsstore session id,
    and for a sub-agent the parent's fsstore session id and when it started."""

    path: str
    tool_id: str
    session_id: str
    parent: str | None
    spawn_key: str | None
    meta: dict[str, Any]
    started: float | None = None


def discover(root: str) -> list[str]:
    """The rollouts under ``root`` (or ``root`` itself, a file), sorted by path: the
    date folders make that the order they were started in, parents before the
    sub-agents they spawned."""
    return sorted(transcript_files(
        root, _MAX_DEPTH, lambda name: name.startswith("rollout-") and name.endswith(".jsonl"),
        f"no Codex rollouts at {root}: pass the sessions folder (~/.codex/sessions) or a "
        "rollout .jsonl file"))


def _meta_of(path: str) -> dict[str, Any]:
    first = first_record(path)
    if first.get("type") == "session_meta" and isinstance(first.get("payload"), dict):
        return dict(first["payload"])
    if "id" in first and "type" not in first:  # before 0.3x: the bare meta object
        return first
    return {}


def source_of(path: str, root: str) -> CodexSource:
    """Who a rollout is: its session id from its first line (else from its name)."""
    path = os.path.abspath(path)
    meta = _meta_of(path)
    tool_id = meta.get("id") if isinstance(meta.get("id"), str) else None
    if not tool_id:
        found = _UUID.findall(os.path.basename(path))
        tool_id = found[-1] if found else os.path.basename(path)[:-len(".jsonl")]
    parent_id = _spawned_by(meta)
    parent = session_id_for(PREFIX, parent_id) if parent_id else None
    return CodexSource(path, tool_id, session_id_for(PREFIX, tool_id), parent, None, meta,
                       timestamp(meta.get("timestamp")))


def _spawned_by(meta: dict[str, Any]) -> str | None:
    source = meta.get("source")
    sub = source.get("subagent") if isinstance(source, dict) else None
    spawn = sub.get("thread_spawn") if isinstance(sub, dict) else None
    parent = spawn.get("parent_thread_id") if isinstance(spawn, dict) else None
    return parent if isinstance(parent, str) and parent else None


def related_sources(source: CodexSource, state: dict[str, Any]) -> list[CodexSource]:
    """A rollout holds one session: none."""
    return []


def spawn_point(state: dict[str, Any], key: str) -> str | None:
    """Codex rollouts do not name the call that spawned a sub-agent: it is spawned at
    the parent's last message from before it started."""
    return None


def make_mapper(source: CodexSource, blobs: Blobs, state: dict[str, Any] | None
                ) -> CodexMapper:
    return CodexMapper(source, blobs, state)


class CodexMapper(MapperBase):
    """Codex rollout lines to outputs (see the module docstring)."""

    raw_kind = RAW_KIND

    def __init__(self, source: CodexSource, blobs: Blobs, state: dict[str, Any] | None
                 ) -> None:
        state = state or {}
        super().__init__(blobs, state)
        self.source = source
        self.model: str | None = state.get("model")
        self.total: dict[str, Any] | None = state.get("total")
        self.meta: dict[str, Any] = dict(state.get("meta") or {})
        if not self.meta:
            self._meta(source.meta)

    def state(self) -> dict[str, Any]:
        return {"names": self.names, "model": self.model, "total": self.total,
                "prompt": self.prompt, "first_prompt": self.first_prompt, "meta": self.meta,
                "open_id": self.open.message.id if self.open else self.open_id,
                "last_ts": self.last_ts, "started": self.started}

    def facts(self) -> tuple[str | None, list[str], dict[str, Any]]:
        tags = ["codex"]
        cwd = self.meta.get("cwd")
        project = short_text(os.path.basename(cwd)) if isinstance(cwd, str) else None
        if project:
            tags.append(f"project:{project}")
        if self.meta.get("branch"):
            tags.append(f"branch:{self.meta['branch']}")
        if self.source.parent:
            tags.append("sub-agent")
        metadata: dict[str, Any] = {"tool": NAME, "tool_session_id": self.source.tool_id,
                                    "source": self.source.path}
        for key in ("tool_version", "cwd", "originator", "model_provider", "forked_from",
                    "forked_from_session", "agent_nickname"):
            if self.meta.get(key):
                metadata[key] = self.meta[key]
        if self.model:
            metadata["model"] = self.model
        return self.first_prompt, tags, metadata

    def _meta(self, meta: dict[str, Any]) -> None:
        found = meta.get("git")
        git: dict[str, Any] = found if isinstance(found, dict) else {}
        source = meta.get("source")
        sub = source.get("subagent") if isinstance(source, dict) else None
        spawn = sub.get("thread_spawn") if isinstance(sub, dict) else None
        forked = short_text(meta.get("forked_from_id"), 100)
        facts = {
            "tool_version": short_text(meta.get("cli_version"), 40),
            "cwd": meta["cwd"][:1000] if isinstance(meta.get("cwd"), str) else None,
            "originator": short_text(meta.get("originator"), 60),
            "model_provider": short_text(meta.get("model_provider"), 60),
            "branch": short_text(git.get("branch"), 100),
            "forked_from": forked,
            "forked_from_session": session_id_for(PREFIX, forked) if forked else None,
            "agent_nickname": short_text(spawn.get("agent_nickname"), 60)
            if isinstance(spawn, dict) else None}
        self.meta = {key: value for key, value in facts.items() if value}

    # --- lines ---

    def _feed(self, line: Line, record: dict[str, Any] | None, error: str | None
              ) -> list[Output]:
        out: list[Output] = []
        if record is None:
            out.append(self._raw(line, None, self.last_ts, error))
            return out
        _, ts = self._clock(record)
        kind, payload = record.get("type"), record.get("payload")
        if kind not in _ENVELOPE or not isinstance(payload, dict):
            # Before 0.3x: bare items, the bare meta object, record_type lines.
            if line.number == 1 and "id" in record and "type" not in record:
                self._meta(record)
                return out
            if isinstance(kind, str) and "record_type" not in record:
                kind, payload = "response_item", record
            else:
                out.append(self._raw(line, record, ts))
                return out
        try:
            if kind == "response_item" and self._item(line, payload, ts, out):
                return out
            if kind == "event_msg" and self._event(line, payload, ts, out):
                return out
            if kind == "compacted":
                self._compacted(line, payload, ts, out)
                return out
        except InvalidMessage as exc:
            self._refused(line, record, ts, exc, out)
            return out
        if kind == "session_meta":
            self._meta(payload)
            return out
        if kind == "turn_context":
            self.model = short_text(payload.get("model"), 100) or self.model
        out.append(self._raw(line, record, ts))
        return out

    def _item(self, line: Line, item: dict[str, Any], ts: float | None,
              out: list[Output]) -> bool:
        kind = item.get("type", "message")
        role = item.get("role")
        if kind == "message" and role != "assistant":
            self._close(out)
            message = from_openai_responses([item])[0]
            message = Message(role=message.role, parts=message.parts,
                              id=message.id or f"codex-L{line.number}",
                              metadata=message.metadata)
            prompt = role == "user" and not message.text.lstrip().startswith(_CONTEXT)
            self._add(blobify(message, self.blobs), message.text, prompt, line, ts, out)
            return True
        if kind in _OUTPUTS:
            self._close(out)
            out.append(AddMessage(self._output(item, line), ts, line.number))
            self.prompt = False
            return True
        if kind != "compaction":  # encrypted compaction items: kept raw
            parts = self._model_parts(item)
            if not parts:
                return False
            self._extend(parts, item, line, ts, out)
            self.prompt = False
            return True
        return False

    def _model_parts(self, item: dict[str, Any]) -> list[MessagePart]:
        kind = item.get("type")
        call_id = item.get("call_id")
        if kind == "custom_tool_call" and isinstance(call_id, str):
            name = short_text(item.get("name"), 100) or "custom_tool"
            remember(self.names, call_id, name)
            return [ToolCallPart(call_id=call_id, name=name,
                                 arguments={"input": item.get("input")},
                                 provider_metadata={EXTRA_KEY: _rest(
                                     item, {"call_id", "name", "input"})})]
        if kind == "local_shell_call" and isinstance(call_id, str):
            remember(self.names, call_id, "local_shell")
            action = item.get("action")
            return [ToolCallPart(call_id=call_id, name="local_shell",
                                 arguments=action if isinstance(action, dict) else {},
                                 provider_metadata={EXTRA_KEY: _rest(
                                     item, {"call_id", "action"})})]
        if kind not in _MODEL_ITEMS and kind != "message":
            return [DataPart(name="openai_responses.item", data=item)]
        parts = from_openai_responses([item])[0].parts
        for part in parts:
            if isinstance(part, ToolCallPart):
                remember(self.names, part.call_id, part.name)
        return parts

    def _reopen(self, line: Line, ts: float | None) -> None:
        """The open message of the previous run, read back to go on with it."""
        if self.open is None and self.open_id is not None:
            earlier = self.blobs.message(self.open_id)
            if earlier is not None:
                self.open = OpenMessage(earlier, line.number, ts, written=True)

    def _extend(self, parts: list[MessagePart], item: dict[str, Any], line: Line,
                ts: float | None, out: list[Output]) -> None:
        if self.open is None and self.open_id is not None:
            self._reopen(line, ts)
            self.open_id = None
        if self.open is None:
            item_id = item.get("id")
            message_id = item_id if isinstance(item_id, str) and 0 < len(item_id) <= 200 \
                else f"codex-L{line.number}"
            self.open = OpenMessage(Message(role="assistant", id=message_id, metadata=(
                MessageMetadata(model=self.model, provider=self._provider()))),
                line.number, ts, written=False)
        opened = self.open
        message = blobify(Message(role="assistant", parts=parts), self.blobs)
        opened.message = Message(role="assistant", id=opened.message.id,
                                 parts=[*opened.message.parts, *message.parts],
                                 metadata=opened.message.metadata)
        opened.dirty = True

    def _provider(self) -> str:
        return str(self.meta.get("model_provider") or "openai")

    def _output(self, item: dict[str, Any], line: Line) -> Message:
        call_id = item.get("call_id")
        if not isinstance(call_id, str):
            raise InvalidMessage("a tool output without a call_id", field="call_id")
        output, is_error, kept = _output_of(item.get("output"))
        part = ToolResultPart(call_id=call_id, output=output, is_error=is_error,
                              name=self.names.get(call_id),
                              provider_metadata={EXTRA_KEY: kept} if kept else {})
        return blobify(Message(role="tool", parts=[part], id=f"codex-L{line.number}"),
                       self.blobs)

    def _event(self, line: Line, event: dict[str, Any], ts: float | None,
               out: list[Output]) -> bool:
        kind = event.get("type")
        if kind in _REPEATS:
            return True  # the response items hold the same conversation
        if kind != "token_count":
            return False
        info = event.get("info")
        if not isinstance(info, dict):
            return True  # no counts yet (rate limits only)
        total = info.get("total_token_usage")
        if isinstance(total, dict):  # its counts only: the rest is kept between runs
            total = {key: total[key] for key in _TOTALS if isinstance(total.get(key), int)}
        if isinstance(total, dict) and total == self.total:
            return True  # the previous totals again
        usage = _usage(info.get("last_token_usage"))
        if usage is None and isinstance(total, dict):
            before = self.total or {}
            if any(_count(total, key) < _count(before, key) for key in total):
                # Totals went backwards: the counter started again (a new process
                # resumed the session), so the totals are the use since that start.
                # (A difference would be negative, and the call's use lost.)
                before = {}
            usage = _usage({key: _count(total, key) - _count(before, key) for key in total})
        if isinstance(total, dict):
            self.total = total
        if usage is None:
            return True
        self._reopen(line, ts)
        if self.open is None:
            return False  # no model message to give it to: kept raw
        metadata = self.open.message.metadata
        if metadata.usage is not None:
            usage = TokenUsage(**{name: getattr(usage, name) + getattr(metadata.usage, name)
                                  for name in ("input", "output", "cached_input",
                                               "cache_write", "reasoning")})
        self.open.message = Message(
            role="assistant", id=self.open.message.id, parts=self.open.message.parts,
            metadata=MessageMetadata(model=metadata.model or self.model,
                                     provider=metadata.provider or self._provider(),
                                     finish_reason=metadata.finish_reason, usage=usage,
                                     extra=metadata.extra))
        self.open.dirty = True
        return True

    def _compacted(self, line: Line, payload: dict[str, Any], ts: float | None,
                   out: list[Output]) -> None:
        self._close(out)
        text = payload.get("message")
        compaction: dict[str, Any] = {"tool": NAME}
        history = payload.get("replacement_history")
        if isinstance(history, list):
            data = json.dumps(history, ensure_ascii=False).encode("utf-8", "replace")
            compaction["replacement_history"] = self.blobs.put(data, "application/json")
            compaction["replacement_items"] = len(history)
        parts: list[MessagePart] = [TextPart(text=text)] if isinstance(text, str) else []
        out.append(AddMessage(blobify(Message(
            role="system", parts=parts, id=f"codex-L{line.number}",
            metadata=MessageMetadata(extra={"compaction": compaction})), self.blobs),
            ts, line.number))
        self.prompt = False

    def _completing(self, opened: OpenMessage) -> None:
        message = opened.message
        if message.metadata.finish_reason is None and message.parts:
            calls = any(isinstance(p, ToolCallPart) for p in message.parts)
            message.metadata.finish_reason = "tool_calls" if calls else None


def _rest(item: dict[str, Any], used: set[str]) -> dict[str, Any]:
    return {key: value for key, value in item.items() if key not in used | {"type"}} | {
        "type": item.get("type")}


def _output_of(value: Any) -> tuple[Any, bool, dict[str, Any]]:
    """A tool output: Codex writes ``{"output": TEXT, "metadata": {"exit_code": N}}`` as
    JSON text (or, in later versions, an object with ``content`` and ``success``)."""
    if isinstance(value, str):
        parsed, kept = arguments_in(value)
        if kept or not isinstance(parsed, dict) or "output" not in parsed:
            return value, False, {}
        value = parsed
        meta = value.get("metadata") if isinstance(value.get("metadata"), dict) else {}
        code = meta.get("exit_code")
        error = isinstance(code, int) and not isinstance(code, bool) and code != 0
        rest = {key: item for key, item in value.items() if key != "output"}
        return value["output"], error, rest
    if isinstance(value, dict):
        success = value.get("success")
        content = value.get("content", value)
        rest = {key: item for key, item in value.items() if key != "content"}
        return content, success is False, rest
    return value, False, {}


def _count(values: dict[str, Any], key: str) -> int:
    value = values.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _usage(value: Any) -> TokenUsage | None:
    if not isinstance(value, dict):
        return None
    counts = {"input": _count(value, "input_tokens"), "output": _count(value, "output_tokens"),
              "cached_input": _count(value, "cached_input_tokens"),
              "reasoning": _count(value, "reasoning_output_tokens")}
    if any(count < 0 for count in counts.values()):
        return None
    counts["cached_input"] = min(counts["cached_input"], counts["input"])
    counts["reasoning"] = min(counts["reasoning"], counts["output"])
    return TokenUsage(**counts)

