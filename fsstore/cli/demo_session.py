"""What ``fsstore demo`` records: a realistic multi-turn coding-agent session, put into a
store, and the description of what is on disk and how to look at it (``cli/demo.py``
registers the command; this module, with numpy and the engine, is imported when it runs)."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import layout
from ..message_types import (
    CostInfo,
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
from ..session import Session
from ..store import Store, open_store
from ..workspaces import SessionRole
from ._common import human_bytes
from .demo import DEFAULT_PATH
from .usage import cost_text, tokens_text

_SOURCE = '''"""Date parsing for the billing exports."""
from datetime import datetime


def parse_date(text: str) -> datetime:
    for pattern in ("%Y-%m-%d", "%d/%m/%Y"):
        try:
            return datetime.strptime(text, pattern)
        except ValueError:
            continue
    raise ValueError(f"unrecognised date: {text!r}")
'''

_FAILURE = '''============================= FAILURES =============================
________________________ test_parse_iso_week ________________________
    def test_parse_iso_week():
>       assert parse_date("2026-W47-3") == datetime(2026, 11, 18)
E       ValueError: unrecognised date: '2026-W47-3'
billing/tests/test_dates.py:14: ValueError
=================== 1 failed, 41 passed in 0.84s ===================
'''


#: The models of the demo, with their prices in USD per million tokens: input, cached
#: input, output. Illustrative: fsstore stores the cost a caller gives it.
AGENT_MODEL = ("claude-sonnet-4", "anthropic", (3.00, 0.30, 15.00))
SUB_AGENT_MODEL = ("gpt-4.1-mini", "openai", (0.40, 0.10, 1.60))


def _meta(model: tuple[str, str, tuple[float, float, float]], tokens_in: int,
          tokens_out: int, *, cached: int = 0, reasoning: int = 0, latency: float,
          finish: Finish = "stop") -> MessageMetadata:
    """An assistant message's metadata: its model, why it stopped, its tokens and what
    they cost at the model's prices."""
    name, provider, (price_in, price_cached, price_out) = model
    cost = ((tokens_in - cached) * price_in + cached * price_cached
            + tokens_out * price_out) / 1_000_000
    return MessageMetadata(
        model=name, provider=provider, finish_reason=finish,
        usage=TokenUsage(input=tokens_in, output=tokens_out, cached_input=cached,
                         reasoning=reasoning),
        cost=CostInfo(amount=round(cost, 6), currency="USD"), latency=latency)


class _Agent:
    """Writes a session's conversation through the messages API, as an agent loop would:
    the user's message, the model's replies (with tool calls, reasoning and usage), and
    each tool's result in a message of its own."""

    def __init__(self, session: Session, model: tuple[str, str, tuple[float, float, float]]
                 ) -> None:
        self.session = session
        self.model = model
        self.calls = 0

    def user(self, text: str) -> Message:
        return self.session.messages.append(Message.of_text("user", text))

    def reply(self, text: str, tokens: tuple[int, int], *, cached: int = 0,
              thinking: str | None = None, latency: float = 1.0,
              calls: Sequence[tuple[str, dict[str, Any]]] = ()) -> tuple[Message, list[str]]:
        """An assistant message: its reasoning, its text and its tool calls (it stops
        for them when it makes any); returns it and the call ids."""
        parts: list[MessagePart] = []
        if thinking:
            parts.append(ReasoningPart(text=thinking, signature=f"sig-{len(thinking)}"))
        if text:
            parts.append(TextPart(text=text))
        ids = []
        for name, arguments in calls:
            self.calls += 1
            ids.append(f"call_{self.calls:04d}")
            parts.append(ToolCallPart(call_id=ids[-1], name=name, arguments=arguments))
        metadata = _meta(self.model, *tokens, cached=cached,
                         reasoning=len(thinking or "") // 4, latency=latency,
                         finish="tool_calls" if calls else "stop")
        return self.session.messages.append(Message(role="assistant", parts=parts,
                                                    metadata=metadata)), ids

    def tool(self, call_id: str, name: str, output: str, *, ok: bool = True,
             file_name: str | None = None, media_type: str = "text/plain") -> Message:
        """A tool's result. A long output goes to an attachment (a blob), referenced by a
        file part; the result holds its first line."""
        parts: list[MessagePart] = []
        result: Any = output
        if len(output) > 200:
            ref = self.session.blobs.put(output.encode(), media_type)
            result = {"summary": output.strip().splitlines()[-1].strip("= "),
                      "lines": output.count("\n"), "attached": file_name}
            parts.append(FilePart(media_type=media_type, name=file_name, blob=ref))
        parts.insert(0, ToolResultPart(call_id=call_id, name=name, output=result,
                                       is_error=not ok))
        return self.session.messages.append(Message(role="tool", parts=parts))


def record_demo_session(session: Session) -> None:
    """Three turns of a coding agent fixing a failing test, recorded as messages."""
    agent = _Agent(session, AGENT_MODEL)
    agent.user("CI fails on the billing tests since this morning. Can you find out why?")
    _, (run,) = agent.reply(
        "I'll run the billing tests first to see the failure.", (812, 31),
        thinking="The user reports a CI failure in billing; reproduce it before reading "
                 "any code.", latency=1.4, calls=[("run_tests", {
                     "path": "billing/tests", "args": ["-x", "-q"]})])
    agent.tool(run, "run_tests", _FAILURE, ok=False, file_name="pytest-output.txt")
    _, (read,) = agent.reply("", (1604, 28), cached=812, latency=0.9, calls=[
        ("read_file", {"path": "billing/dates.py"})])
    agent.tool(read, "read_file", _SOURCE, file_name="billing/dates.py",
               media_type="text/x-python")
    agent.reply("parse_date only knows two patterns; the new export sends ISO week dates "
                "(2026-W47-3), which neither matches. Adding '%G-W%V-%u' fixes it.",
                (2210, 64), cached=1604, latency=2.1,
                thinking="%G-W%V-%u is the ISO week pattern strptime understands.")
    session.merge_state({"diagnosis": "ISO week dates are not parsed",
                         "plan": ["add the '%G-W%V-%u' pattern", "run the billing tests"]})
    session.finish_turn(checkpoint=True)  # a point to come back to, or to fork from

    agent.user("Go ahead and fix it, and keep the error message as it is.")
    patch = ('-    for pattern in ("%Y-%m-%d", "%d/%m/%Y"):\n'
             '+    for pattern in ("%Y-%m-%d", "%d/%m/%Y", "%G-W%V-%u"):\n')
    _, (fix,) = agent.reply("", (2350, 90), cached=2210, latency=1.7, calls=[
        ("apply_patch", {"path": "billing/dates.py", "patch": patch})])
    agent.tool(fix, "apply_patch", "patched 1 hunk")
    _, (test,) = agent.reply("", (2470, 25), cached=2350, latency=0.8, calls=[
        ("run_tests", {"path": "billing/tests", "args": ["-q"]})])
    agent.tool(test, "run_tests", "42 passed in 0.81s")
    # The answer is saved while it streams, then edited into its final form, with its
    # usage: an edit supersedes the message, and its usage counts once.
    draft, _ = agent.reply("Fixed: ISO week dates now", (2530, 0), cached=2470, latency=0.2)
    session.messages.edit(Message(
        id=draft.id, role="assistant", parts=[
            TextPart(text="Fixed: ISO week dates now parse, and all 42 billing tests pass."),
            DataPart(name="test_report", data={"passed": 42, "failed": 0,
                                               "path": "billing/tests"})],
        metadata=_meta(AGENT_MODEL, 2530, 22, cached=2470, latency=1.1)))
    session.merge_state({"plan": [], "files_changed": ["billing/dates.py"],
                         "tests": "42 passed"})
    session.finish_turn()

    agent.user("Thanks. Add a changelog entry too.")
    entry = "- Billing exports: accept ISO week dates such as 2026-W47-3.\n"
    _, (look,) = agent.reply("", (2610, 30), cached=2530, latency=0.7, calls=[
        ("read_file", {"path": "CHANGELOG.md", "lines": [1, 12]})])
    agent.tool(look, "read_file",
               "# Changelog\n\n## Unreleased\n\n## 3.4.0\n- Faster invoice rendering.\n")
    _, (write,) = agent.reply("", (2700, 41), cached=2610, latency=0.9, calls=[
        ("apply_patch", {"path": "CHANGELOG.md", "patch": f"+{entry}"})])
    agent.tool(write, "apply_patch", "patched 1 hunk")
    agent.reply("Added under 'Unreleased'.", (2901, 12), cached=2700, latency=0.6)
    session.merge_state({"files_changed": ["billing/dates.py", "CHANGELOG.md"]})
    session.finish_turn()


def record_sub_agent(store: Store, session: Session) -> Session:
    """A sub-agent the agent started in turn 1 to find the callers of parse_date, on
    another model: a session of its own, spawned at the seq of the message that read
    the file (nothing is written to the parent). Returned closed."""
    started_at = next(m.seq for m in session.messages.all()
                      if any(call.name == "read_file" for call in m.tool_calls))
    assert started_at is not None
    sub = store.create_session(f"{session.id}-callers", spawned_by=session.id,
                               at_seq=started_at, tags=["demo", "sub-agent"],
                               title="Sub-agent: find the callers of parse_date")
    with sub:
        agent = _Agent(sub, SUB_AGENT_MODEL)
        agent.user("List every caller of billing.dates.parse_date.")
        _, (grep,) = agent.reply("", (388, 24), latency=0.5, calls=[
            ("grep", {"pattern": "parse_date(", "path": "."})])
        agent.tool(grep, "grep", "billing/export.py:88\nbilling/import.py:41")
        agent.reply("Two callers: billing/export.py:88 and billing/import.py:41; both pass "
                    "export dates.", (455, 31), cached=388, latency=0.6)
        sub.finish_turn()
    return sub


EMBEDDING_DIM = 64


def toy_embedding(text: str) -> np.ndarray:
    """A stand-in for an embedding model (fsstore stores vectors, it does not make
    them): words hashed into 64 signed buckets, so texts sharing words point alike."""
    vector = np.zeros(EMBEDDING_DIM, dtype=np.float32)
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        digest = hashlib.blake2b(word.rstrip("s").encode(), digest_size=2).digest()
        vector[digest[0] % EMBEDDING_DIM] += 1.0 if digest[1] & 1 else -1.0
    return vector


def remember_messages(session: Session) -> int:
    """Put the text of every user and assistant message in the session's "memory"
    collection, linked to its message's seq, so the agent can recall by meaning later."""
    memory = session.create_collection("memory", EMBEDDING_DIM, metric="cosine")
    documents = [
        {"id": f"m{message.seq}", "embedding": toy_embedding(message.text),
         "content": message.text, "metadata": {"role": message.role, "message": message.id},
         "seq": message.seq, "turn": message.turn}
        for message in session.messages.all() if message.text]
    memory.upsert(documents)
    return len(documents)


def record_store(path: str | None) -> int:
    """Record the demo into the store at ``path`` (default ./fsstore-demo), print what is
    on disk; the exit status (0)."""
    path = os.path.abspath(path or DEFAULT_PATH)
    store = open_store(path)
    session = store.create_session(title="Fix the failing billing date test",
                                   tags=["demo", "coding-agent"],
                                   metadata={"agent": "fsstore demo", "cwd": "~/src/billing"})
    with session:
        record_demo_session(session)
        remembered = remember_messages(session)
        (diagnosed,) = session.checkpoints()
        # Try another approach from the diagnosis, without copying the history.
        fork = session.fork(f"{session.id}-alt", at_checkpoint=diagnosed.id,
                            title="Fix the failing billing date test: another approach")
        fork.close()
        sub = record_sub_agent(store, session)
    # One workspace groups the task's sessions, each with its part in it.
    workspace = store.create_workspace(
        "billing-date-fix", name="Fix the failing billing date test",
        description="The session, the approach tried from its diagnosis, and its sub-agent.")
    store.add_to_workspace(workspace.id, session.id, SessionRole.PRIMARY)
    store.add_to_workspace(workspace.id, fork.id, SessionRole.RELATED)
    store.add_to_workspace(workspace.id, sub.id, "sub-agent")
    # A runtime drives the session under an execution lease: work queued for it and user
    # input that arrives meanwhile wait in the log for the next turn.
    claim = store.claim_lease(session.id, "demo-runtime", ttl=60)
    assert claim.lease is not None
    with store.open_session(session.id, lease=claim.lease) as leased:
        leased.queue.enqueue("follow_up", {"task": "re-run the nightly billing export"})
        leased.inputs.submit({"role": "user", "content": "Also mention it in the docs."})
    store.release_lease(claim.lease)
    reader = store.read_session(session.id)
    info = reader.info()
    turns = reader.get_turns()
    kinds: dict[str, int] = {}
    for event in reader.events(include_internal=True):
        kinds[event.kind] = kinds.get(event.kind, 0) + 1
    log_dir = layout.log_dir(session.path)
    segments = sorted(name for name in os.listdir(log_dir) if name.endswith(layout.SEGMENT_SUFFIX))
    size = sum(os.path.getsize(os.path.join(log_dir, name)) for name in segments)

    print(f"Recorded session {info.id} in {store.path}")
    print(f"  title:    {info.title}")
    print(f"  turns:    {len(turns)}, all finished: {all(t.finished for t in turns)}")
    print(f"  events:   {info.event_count} (seq 1..{info.head}): "
          + ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items())))
    print(f"  log:      {len(segments)} segment(s), {human_bytes(size)}, in "
          f"{os.path.relpath(log_dir)}")
    print(f"  state:    {', '.join(sorted(reader.state()))} (folded from the log's state "
          "records)")
    print(f"  checkpoint {diagnosed.id} after turn 1; forked there into {fork.id}")
    blobs = list(reader.blobs.digests())
    stored = sum(os.path.getsize(path) for _, path, _ in blobs)
    print(f"  attachments: {len(blobs)} tool outputs, {human_bytes(stored)} on disk "
          "(zstd), in blobs/")
    stats = reader.stats()
    print(f"  messages: {stats.messages} ("
          + ", ".join(f"{count} {role}" for role, count in stats.messages_by_role.items())
          + f"), {stats.tool_calls} tool calls ({stats.tool_errors} failed), one edited")
    spent = store.usage(by="model")
    print(f"  usage:    {tokens_text(spent.total)}, {cost_text(spent.total.cost)}, on "
          f"{len(spent)} models ({', '.join(spent)})")
    question = "which dates does the parser fail on?"
    (best,) = store.search("memory", toy_embedding(question), 1,
                           filter={"role": "assistant"})
    recalled = (best.content or "")[:60]
    print(f"  memory:   {remembered} messages embedded in a vector collection; asked "
          f"{question!r},\n            recall finds turn {best.turn}: {recalled!r}...")
    print(f"  lease:    token {claim.lease.token} ({claim.status}, released); "
          f"{len(reader.queue.items())} work item queued, "
          f"{len(reader.inputs.items('pending'))} input pending for the next turn")
    spawned = store.read_session(sub.id).spawned_by
    assert spawned is not None
    print(f"  sub-agent: {sub.id}, spawned in turn {spawned.turn} at seq {spawned.seq}")
    print(f"  workspace: {workspace.id} groups the {len(store.workspace_sessions(workspace.id))}"
          " sessions (primary, related, sub-agent)")
    print(f"  sessions: {len(store.session_ids())} in this store")
    print("\nLook at it:")
    store_arg = f"--store {os.path.relpath(store.path)}"
    print(f"  fsstore {store_arg} ls")
    print(f"  fsstore {store_arg} show {info.id}")
    print(f"  fsstore {store_arg} cat {info.id} | head -3")
    print(f"  fsstore {store_arg} usage --by model")
    print(f"  fsstore {store_arg} state {info.id}")
    print(f"  fsstore {store_arg} lineage {info.id}")
    print(f"  fsstore {store_arg} workspace show {workspace.id}")
    print(f"  fsstore {store_arg} collections {info.id}")
    print(f"  fsstore {store_arg} queue {info.id}")
    print(f"  fsstore {store_arg} inputs {info.id}")
    print(f"  fsstore {store_arg} search memory --like {info.id}:{best.id} -k 3")
    print(f"  fsstore {store_arg} verify")
    print("\nTake it elsewhere:")
    print(f"  fsstore {store_arg} backup fsstore-demo-backup      # a consistent copy; again: "
          "only what changed")
    print(f"  fsstore {store_arg} export --all -o fsstore-demo.jsonl.zst   # fsstore import "
          "recreates it")
    return 0
