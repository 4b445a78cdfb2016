"""Claude Code transcripts: ``~/.claude/projects/<project>/<session>.jsonl``, with the
transcripts of sub-agents beside them (``agent-<id>.jsonl``, 2.0.x) or under
``<session>/subagents/`` (later versions).

Each line is a JSON object with a ``type``: ``user`` and ``assistant`` lines hold an
Anthropic Messages API ``message`` (mapped by ``fsstore.convert.anthropic``);
``summary`` lines name the session; ``system`` lines (a ``compact_boundary`` among
them), ``file-history-snapshot``, ``queue-operation`` and any other type are kept as
``claude_code.raw`` events. The pitfalls this module handles:

- one API response is written over several lines sharing ``message.id``, each with
  the same usage: they are one message (usage and cost counted once); a line of it
  that comes in a later run completes the message by an edit.
- ``isMeta`` user lines are the tool's notes, not prompts: raw events. A user line
  with ``isCompactSummary`` is the summary a compaction left: a system message whose
  ``metadata.extra.compaction`` says so (with the boundary's trigger and token count).
- a ``Task`` call's result names the sub-agent (``toolUseResult.agentId``): the
  sub-agent's transcript becomes a session spawned by this one at that call.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any, NamedTuple

from ..convert.anthropic import from_anthropic_message, message_in
from ..convert.common import CallNames
from ..errors import InvalidMessage
from ..message_types import CostInfo, Message, MessageMetadata, TokenUsage, ToolCallPart
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

NAME = "claude-code"
PREFIX = "cc"
RAW_KIND = "claude_code.raw"
#: metadata.extra key of what a Claude Code line says of a message (uuid, request id).
EXTRA_KEY = "claude_code"
_MAX_DEPTH = 4  # projects/<project>/<session>/subagents/agent-x.jsonl
_SMALL_RESULT = 4096


def default_root() -> str:
    return os.path.join(os.path.expanduser("~"), ".claude", "projects")


class ClaudeSource(NamedTuple):
    """A Claude Code transcript: its file, the tool's session id (``PARENT-agent-ID``
    for a sub-agent), the fsstore session id, and for a sub-agent the parent's
    fsstore session id, the agent id its Task call's result names and the time of its
    first line. ``sidechains``: the sub-agent lines (``isSidechain``) of a session file
    that holds them beside its own (versions before sub-agents had files)."""

    path: str
    tool_id: str
    session_id: str
    parent: str | None
    spawn_key: str | None
    project: str | None
    started: float | None = None
    sidechains: bool = False


def discover(root: str) -> list[str]:
    """The transcripts under ``root`` (or ``root`` itself, a file): sessions first, then
    sub-agents, each sorted by path, so a parent is imported before its sub-agents."""
    found = transcript_files(root, _MAX_DEPTH, lambda name: name.endswith(".jsonl"),
                             f"no Claude Code transcripts at {root}: pass the projects "
                             "folder (~/.claude/projects) or a .jsonl file")
    return sorted(found, key=lambda path: (_is_agent(path), path))


def _is_agent(path: str) -> bool:
    return os.path.basename(path).startswith("agent-")


def source_of(path: str, root: str) -> ClaudeSource:
    """Who a transcript is: its ids come from its name and first line, never its path
    (only through ``session_id_for``)."""
    path = os.path.abspath(path)
    stem = os.path.basename(path)[:-len(".jsonl")]
    folder = os.path.dirname(path)
    if not _is_agent(path):
        return ClaudeSource(path, stem, session_id_for(PREFIX, stem), None, None,
                            _project(folder, root))
    agent = stem[len("agent-"):]
    parent_id: str | None = None
    if os.path.basename(folder) == "subagents":
        parent_id = os.path.basename(os.path.dirname(folder))
        folder = os.path.dirname(os.path.dirname(folder))
    first = first_record(path)
    if isinstance(first.get("sessionId"), str):
        parent_id = first["sessionId"]
    if isinstance(first.get("agentId"), str):
        agent = first["agentId"]
    tool_id = f"{parent_id}-agent-{agent}" if parent_id else f"agent-{agent}"
    parent = session_id_for(PREFIX, parent_id) if parent_id else None
    return ClaudeSource(path, tool_id, session_id_for(PREFIX, tool_id), parent, agent,
                        _project(folder, root), timestamp(first.get("timestamp")))


def _project(folder: str, root: str) -> str | None:
    if os.path.abspath(folder) == os.path.abspath(root):
        return None
    return short_text(os.path.basename(folder))


def sidechain_source(source: ClaudeSource) -> ClaudeSource:
    """The session of the sub-agent lines a session file holds (``cc-ID-sidechains``),
    spawned by the file's own session: the file is read once for each, each with its
    own cursor."""
    tool_id = f"{source.tool_id}-sidechains"
    return ClaudeSource(source.path, tool_id, session_id_for(PREFIX, tool_id),
                        source.session_id, None, source.project, None, True)


def related_sources(source: ClaudeSource, state: dict[str, Any]) -> list[ClaudeSource]:
    """The sources a file's import found beside its own session: its sidechains."""
    if source.sidechains or source.spawn_key or not state.get("sidechain"):
        return []
    return [sidechain_source(source)]


def spawn_point(state: dict[str, Any], key: str) -> str | None:
    """The id of the parent's message holding the Task call whose result named sub-agent
    ``key``, from the parent's mapper state."""
    agents = state.get("agents")
    found = agents.get(key) if isinstance(agents, dict) else None
    return found if isinstance(found, str) else None


def make_mapper(source: ClaudeSource, blobs: Blobs, state: dict[str, Any] | None
                ) -> ClaudeCodeMapper:
    return ClaudeCodeMapper(source, blobs, state)


class ClaudeCodeMapper(MapperBase):
    """Claude Code lines to outputs (see the module docstring). ``state`` is what
    :meth:`state` returned at the end of the previous run. The open message's ``key``
    is the ``message.id`` its lines share."""

    raw_kind = RAW_KIND

    def __init__(self, source: ClaudeSource, blobs: Blobs,
                 state: dict[str, Any] | None) -> None:
        state = state or {}
        super().__init__(blobs, state)
        self.source = source
        self.tasks: dict[str, str] = dict(state.get("tasks") or {})
        self.agents: dict[str, str] = dict(state.get("agents") or {})
        self.summary: str | None = state.get("summary")
        self.version: str | None = state.get("version")
        self.cwd: str | None = state.get("cwd")
        self.branches: list[str] = list(state.get("branches") or [])
        self.related: list[str] = list(state.get("related") or [])
        self.boundary: dict[str, Any] | None = state.get("boundary")
        self.open_key: str | None = state.get("open_key")
        self.sidechain = bool(state.get("sidechain"))
        self.first_ts: float | None = state.get("first_ts")
        #: Lines fed that belong to the file's other session (its sidechains, or its
        #: own lines for the sidechains session): not this session's lines to report.
        self.foreign_lines = 0

    # --- the importer's side ---

    def state(self) -> dict[str, Any]:
        return {"names": self.names, "tasks": self.tasks, "agents": self.agents,
                "prompt": self.prompt, "summary": self.summary,
                "first_prompt": self.first_prompt, "version": self.version,
                "cwd": self.cwd, "branches": self.branches, "boundary": self.boundary,
                "related": self.related,
                "open_id": self.open.message.id if self.open else self.open_id,
                "open_key": self.open.key if self.open else self.open_key,
                "last_ts": self.last_ts, "started": self.started,
                "sidechain": self.sidechain, "first_ts": self.first_ts}

    def facts(self) -> tuple[str | None, list[str], dict[str, Any]]:
        tags = ["claude-code"]
        project = short_text(os.path.basename(self.cwd)) if self.cwd else None
        project = project or self.source.project
        if project:
            tags.append(f"project:{project}")
        tags.extend(f"branch:{branch}" for branch in self.branches)
        if self.source.spawn_key or self.source.sidechains:
            tags.append("sub-agent")
        metadata: dict[str, Any] = {"tool": NAME, "tool_session_id": self.source.tool_id,
                                    "source": self.source.path}
        if self.version:
            metadata["tool_version"] = self.version
        if self.cwd:
            metadata["cwd"] = self.cwd
        if self.source.spawn_key:
            metadata["agent_id"] = self.source.spawn_key
        if self.related:
            metadata["related_sessions"] = self.related
        if self.source.sidechains:
            metadata["sidechains"] = True
        return self.summary or self.first_prompt, tags, metadata

    def _feed(self, line: Line, record: dict[str, Any] | None, error: str | None
              ) -> list[Output]:
        out: list[Output] = []
        side = bool(record.get("isSidechain")) if record is not None else False
        if self.source.sidechains and not side:
            self.foreign_lines += 1
            return out  # the session's own line: its session has it
        if side and not self.source.sidechains and not self.source.spawn_key:
            self.sidechain = True
            self.foreign_lines += 1
            return out  # a sub-agent's line: the sidechains session has it
        if record is None:
            out.append(self._raw(line, None, self.last_ts, error))
            return out
        stamp, ts = self._clock(record)
        if self.first_ts is None:
            self.first_ts = stamp
        self._note(record)
        kind = record.get("type")
        try:
            if kind == "assistant" and isinstance(record.get("message"), dict):
                self._assistant(line, record, ts, out)
                return out
            if kind == "user" and isinstance(record.get("message"), dict) \
                    and not record.get("isMeta"):
                self._close(out)
                self._user(line, record, ts, out)
                return out
        except InvalidMessage as exc:
            self._refused(line, record, ts, exc, out)
            return out
        if kind == "summary":
            self.summary = short_text(record.get("summary")) or self.summary
            return out
        if kind == "system" and record.get("subtype") == "compact_boundary":
            meta = record.get("compactMetadata")
            self.boundary = {"trigger": short_text(meta.get("trigger")) if isinstance(
                meta, dict) else None, "pre_tokens": meta.get("preTokens") if isinstance(
                    meta, dict) and isinstance(meta.get("preTokens"), int) else None}
        self._close(out)
        out.append(self._raw(line, record, ts))
        return out

    # --- lines ---

    def _note(self, record: dict[str, Any]) -> None:
        version = short_text(record.get("version"), 40)
        if version:
            self.version = version
        if self.cwd is None and isinstance(record.get("cwd"), str):
            self.cwd = record["cwd"][:1000]
        other = record.get("sessionId")
        if isinstance(other, str) and other != self.source.tool_id and not (
                self.source.spawn_key or self.source.sidechains) and len(self.related) < 8:
            # Lines of another session in this file: a resumed or continued one.
            related = session_id_for(PREFIX, other)
            if related not in self.related:
                self.related.append(related)
        branch = short_text(record.get("gitBranch"), 100)
        if branch and branch not in self.branches and len(self.branches) < 8:
            self.branches.append(branch)

    def _assistant(self, line: Line, record: dict[str, Any], ts: float | None,
                   out: list[Output]) -> None:
        body = record["message"]
        key = body.get("id") if isinstance(body.get("id"), str) else None
        converted = from_anthropic_message({**body, "role": "assistant"})
        extra = {**converted.metadata.extra, EXTRA_KEY: self._line_facts(record)}
        if self.open is None and key is not None and key == self.open_key \
                and self.open_id is not None:
            earlier = self.blobs.message(self.open_id)  # written by the previous run
            if earlier is not None:
                self.open = OpenMessage(earlier, line.number, ts, written=True, key=key)
        if self.open is not None and key is not None and key == self.open.key:
            # One more line of the same response: its blocks join the message; its
            # usage is the same usage again, counted once.
            parts = blobify(Message(role="assistant", parts=converted.parts),
                            self.blobs).parts
            self._note_calls(parts, self.open.message.id or self.open.key)
            previous = self.open.message.metadata
            finish = converted.metadata.finish_reason or previous.finish_reason
            self.open.message = Message(
                role="assistant", id=self.open.message.id,
                parts=[*self.open.message.parts, *parts],
                metadata=MessageMetadata(
                    model=previous.model or converted.metadata.model,
                    provider=previous.provider, finish_reason=finish,
                    usage=_merged_usage(previous.usage, converted.metadata.usage),
                    cost=previous.cost,
                    extra={**previous.extra, **{k: v for k, v in extra.items()
                                                if k != EXTRA_KEY}}))
            self.open.dirty = True
            return
        self._close(out)
        message_id = key or _line_id(record, line)
        cost = record.get("costUSD")
        metadata = converted.metadata
        if isinstance(cost, (int, float)) and not isinstance(cost, bool) and cost >= 0:
            metadata = MessageMetadata(
                model=metadata.model, provider=metadata.provider,
                finish_reason=metadata.finish_reason, usage=metadata.usage,
                cost=CostInfo(amount=float(cost)), extra=metadata.extra)
        metadata.extra = extra
        message = blobify(Message(role="assistant", parts=converted.parts, id=message_id,
                                  metadata=metadata), self.blobs)
        self._note_calls(message.parts, message_id)
        self.open = OpenMessage(message, line.number, ts, written=False,
                                key=key or message_id)
        self.prompt = False

    def _user(self, line: Line, record: dict[str, Any], ts: float | None,
              out: list[Output]) -> None:
        names = CallNames()
        names.names.update(self.names)
        converted = message_in({"role": "user", "content": record["message"].get(
            "content")}, "message", names)
        extra = {**converted.metadata.extra, EXTRA_KEY: self._line_facts(record)}
        message_id = _line_id(record, line)
        if record.get("isCompactSummary"):
            extra["compaction"] = {"tool": NAME, **(self.boundary or {})}
            self.boundary = None
            message = Message(role="system", parts=converted.parts, id=message_id,
                              metadata=MessageMetadata(extra=extra))
            out.append(AddMessage(blobify(message, self.blobs), ts, line.number))
            self.prompt = False
            return
        result = record.get("toolUseResult")
        if converted.role == "tool":
            self._note_agent(converted, result)
            if result is not None and len(json.dumps(result)) <= _SMALL_RESULT:
                extra[EXTRA_KEY]["tool_use_result"] = result
        message = blobify(Message(role=converted.role, parts=converted.parts, id=message_id,
                                  metadata=MessageMetadata(extra=extra)), self.blobs)
        # A sub-agent's prompt is a prompt in the sub-agent's own session only.
        prompt = converted.role == "user" and (not record.get("isSidechain") or bool(
            self.source.sidechains or self.source.spawn_key))
        self._add(message, message.text, prompt, line, ts, out)

    def _line_facts(self, record: dict[str, Any]) -> dict[str, Any]:
        facts = {"uuid": record.get("uuid"), "request_id": record.get("requestId")}
        if record.get("isSidechain"):
            facts["sidechain"] = True
        return {key: value for key, value in facts.items()
                if isinstance(value, (str, bool)) and (not isinstance(value, str)
                                                       or len(value) <= 200)}

    def _note_calls(self, parts: list[Any], message_id: str) -> None:
        for part in parts:
            if isinstance(part, ToolCallPart):
                remember(self.names, part.call_id, part.name)
                if part.name in ("Task", "Agent"):
                    remember(self.tasks, part.call_id, message_id)

    def _note_agent(self, message: Message, result: Any) -> None:
        agent = result.get("agentId") if isinstance(result, dict) else None
        if not isinstance(agent, str) or len(agent) > 200:
            return
        for part in message.tool_results:
            holder = self.tasks.get(part.call_id)
            if holder is not None:
                remember(self.agents, agent, holder)

    def _close(self, out: list[Output]) -> None:
        super()._close(out)
        self.open_key = None


def _line_id(record: dict[str, Any], line: Line) -> str:
    uuid = record.get("uuid")
    if isinstance(uuid, str) and 0 < len(uuid) <= 200 and uuid.isprintable():
        return uuid
    return f"cc-L{line.number}"


def iter_sources(root: str) -> Iterator[ClaudeSource]:
    for path in discover(root):
        yield source_of(path, root if os.path.isdir(root) else os.path.dirname(root))


def _merged_usage(earlier: TokenUsage | None, later: TokenUsage | None
                  ) -> TokenUsage | None:
    """The usage of a response split over lines: each line carries the response's usage
    so far (streamed lines may carry a partial count, in any order), so each count is
    the largest a line gave; never a sum, which would count the response again."""
    if earlier is None or later is None:
        return later or earlier
    return TokenUsage(**{name: max(getattr(earlier, name), getattr(later, name))
                         for name in ("input", "output", "cached_input", "cache_write",
                                      "reasoning")})
