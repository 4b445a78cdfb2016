"""``fsstore demo``: the main job. Records a realistic multi-turn coding-agent session
into a store, then says what is on disk and how to look at it."""

from __future__ import annotations

import argparse
import hashlib
import os
import re

import numpy as np

from .. import layout
from ..session import Session
from ..store import Store, open_store
from ..workspaces import SessionRole
from ._common import add_command, human_bytes

DEFAULT_PATH = "fsstore-demo"

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


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = add_command(
        commands, "demo", "record a sample agent session into a store and describe it",
        "fsstore demo /tmp/agent-store && fsstore --store /tmp/agent-store ls",
        description="Record a realistic multi-turn coding-agent session (user prompts, "
                    "assistant replies, tool calls and their results, finished turns) into "
                    f"PATH (default ./{DEFAULT_PATH}), then print what is on disk.")
    demo.add_argument("path", nargs="?", default=None, metavar="PATH",
                      help=f"the store to record into (default: ./{DEFAULT_PATH})")
    demo.set_defaults(run=run_demo)


def record_demo_session(session: Session) -> None:
    """Three turns of a coding agent fixing a failing test."""
    model = {"model": "local-coder-8b", "temperature": 0.2}

    def message(role: str, content: str, **extra: object) -> None:
        session.append({"role": role, "content": content, **extra}, kind="message")

    def tool(name: str, args: dict[str, object], output: str, ok: bool = True) -> None:
        call_id = f"call_{session.head + 1:04d}"
        session.append({"id": call_id, "name": name, "args": args}, kind="tool_call")
        result: object = output
        if len(output) > 200:  # long outputs go to an attachment, referenced from the log
            result = session.blobs.put(output.encode(), "text/plain")
        session.append({"call_id": call_id, "ok": ok, "output": result}, kind="tool_result")

    message("user", "CI fails on the billing tests since this morning. Can you find out why?")
    message("assistant", "I'll run the billing tests first to see the failure.",
            usage={"input_tokens": 812, "output_tokens": 31}, **model)
    tool("run_tests", {"path": "billing/tests", "args": ["-x", "-q"]}, _FAILURE, ok=False)
    tool("read_file", {"path": "billing/dates.py"}, _SOURCE)
    # The reply and the agent's working state change commit together, or not at all.
    session.commit([{"role": "assistant", "content": (
        "parse_date only knows two patterns; the new export sends ISO week dates "
        "(2026-W47-3), which neither matches. Adding '%G-W%V-%u' fixes it."),
        "usage": {"input_tokens": 2210, "output_tokens": 64}, **model}], kind="message",
        state_patch={"diagnosis": "ISO week dates are not parsed",
                     "plan": ["add the '%G-W%V-%u' pattern", "run the billing tests"]})
    session.finish_turn(checkpoint=True)  # a point to come back to, or to fork from

    message("user", "Go ahead and fix it, and keep the error message as it is.")
    patch = ('-    for pattern in ("%Y-%m-%d", "%d/%m/%Y"):\n'
             '+    for pattern in ("%Y-%m-%d", "%d/%m/%Y", "%G-W%V-%u"):\n')
    tool("apply_patch", {"path": "billing/dates.py", "patch": patch}, "patched 1 hunk")
    tool("run_tests", {"path": "billing/tests", "args": ["-q"]}, "42 passed in 0.81s")
    session.commit([{"role": "assistant", "content": "Fixed: ISO week dates now parse, and "
                     "all 42 billing tests pass.", "usage": {"input_tokens": 2630,
                                                              "output_tokens": 22}, **model}],
                   kind="message", state_patch={"plan": [], "files_changed": [
                       "billing/dates.py"], "tests": "42 passed"})
    session.finish_turn()

    message("user", "Thanks. Add a changelog entry too.")
    entry = "- Billing exports: accept ISO week dates such as 2026-W47-3.\n"
    tool("read_file", {"path": "CHANGELOG.md", "lines": [1, 12]},
         "# Changelog\n\n## Unreleased\n\n## 3.4.0\n- Faster invoice rendering.\n")
    tool("apply_patch", {"path": "CHANGELOG.md", "patch": f"+{entry}"}, "patched 1 hunk")
    message("assistant", "Added under 'Unreleased'.",
            usage={"input_tokens": 2901, "output_tokens": 12}, **model)
    session.merge_state({"files_changed": ["billing/dates.py", "CHANGELOG.md"]})
    session.finish_turn()


def record_sub_agent(store: Store, session: Session) -> Session:
    """A sub-agent the agent started in turn 1 to find the callers of parse_date: a
    session of its own, spawned at the seq of the turn it was started in (nothing is
    written to the parent). Returned closed."""
    started_at = next(e.seq for e in session.events()
                      if e.kind == "tool_call" and e.data["name"] == "read_file")
    sub = store.create_session(f"{session.id}-callers", spawned_by=session.id,
                               at_seq=started_at, tags=["demo", "sub-agent"],
                               title="Sub-agent: find the callers of parse_date")
    with sub:
        sub.append({"role": "user", "content": "List every caller of "
                    "billing.dates.parse_date."}, kind="message")
        sub.append({"id": "call_0001", "name": "grep",
                    "args": {"pattern": "parse_date(", "path": "."}}, kind="tool_call")
        sub.append({"call_id": "call_0001", "ok": True,
                    "output": "billing/export.py:88\nbilling/import.py:41"}, kind="tool_result")
        sub.append({"role": "assistant", "content": "Two callers: billing/export.py:88 and "
                    "billing/import.py:41; both pass export dates.", "model": "local-coder-8b",
                    "usage": {"input_tokens": 388, "output_tokens": 24}}, kind="message")
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
    """Put every chat message of the session in its "memory" collection, linked to its
    event, so the agent can recall by meaning later."""
    memory = session.create_collection("memory", EMBEDDING_DIM, metric="cosine")
    documents = [
        {"id": f"m{event.seq}", "embedding": toy_embedding(event.data["content"]),
         "content": event.data["content"], "metadata": {"role": event.data["role"]},
         "seq": event.seq, "turn": event.turn}
        for event in session.events()
        if isinstance(event.data, dict) and isinstance(event.data.get("content"), str)
        and "role" in event.data]
    memory.upsert(documents)
    return len(documents)


def run_demo(args: argparse.Namespace) -> int:
    path = os.path.abspath(args.path or DEFAULT_PATH)
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
    print(f"  fsstore {store_arg} state {info.id}")
    print(f"  fsstore {store_arg} lineage {info.id}")
    print(f"  fsstore {store_arg} workspace show {workspace.id}")
    print(f"  fsstore {store_arg} collections {info.id}")
    print(f"  fsstore {store_arg} queue {info.id}")
    print(f"  fsstore {store_arg} inputs {info.id}")
    print(f"  fsstore {store_arg} search memory --like {info.id}:{best.id} -k 3")
    print(f"  fsstore {store_arg} verify")
    return 0
