"""Write the transcript fixtures under fixtures/transcripts/ (Claude Code and Codex CLI
sessions, in the shapes fixtures/transcripts/README.md names the sources of).

    python3 tools/make_transcript_fixtures.py [ROOT]

The files are committed; this script says how they were made and remakes them the same
(every id and time is fixed). Run it only to change them, then rerun the tests.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from typing import Any

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(64))).decode()


def line(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n"


def write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as file:
        file.write(text)


# --- Claude Code ----------------------------------------------------------------------

CC_PROJECT = "-home-ada-src-shop"
CC_OLD = "3f1c2a7e-5b0d-4e8a-9c61-2d7f4b8e1a90"   # 1.0.x: costUSD, split lines, error
CC_NEW = "8a4e0b19-7c2d-4f3e-b6a5-91d0c3e2f7b4"   # 2.0.x: Task sub-agents, compaction
CC_SIDE = "c5d6e7f8-0a1b-4c2d-8e3f-405162738495"  # 1.0.x: a Task's sidechain in the file


def cc_base(session: str, version: str, uuid: str, parent: str | None, ts: str,
            **extra: Any) -> dict[str, Any]:
    return {"parentUuid": parent, "isSidechain": False, "userType": "external",
            "cwd": "/home/ada/src/shop", "sessionId": session, "version": version,
            "gitBranch": "main", **extra, "uuid": uuid, "timestamp": ts}


def claude_old() -> str:
    s, v = CC_OLD, "1.0.51"
    usage = {"input_tokens": 4, "cache_creation_input_tokens": 1200,
             "cache_read_input_tokens": 9000, "output_tokens": 310,
             "service_tier": "standard"}
    msg = {"id": "msg_01Hq8sV2", "type": "message", "role": "assistant",
           "model": "claude-sonnet-4-20250514", "stop_reason": None,
           "stop_sequence": None, "usage": usage}
    out = [
        line({"type": "summary", "summary": "Fix the cart total rounding",
              "leafUuid": "u-0009"}),
        line({**cc_base(s, v, "u-0001", None, "2025-07-01T09:00:00.000Z", type="user"),
              "message": {"role": "user", "content": "The cart total is off by a cent. "
                          "Here is a screenshot."}}),
        line({**cc_base(s, v, "u-0002", "u-0001", "2025-07-01T09:00:01.000Z", type="user"),
              "message": {"role": "user", "content": [
                  {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                               "data": PNG}}]}}),
        # One API response over three lines sharing message.id, each with the same usage.
        line({**cc_base(s, v, "u-0003", "u-0002", "2025-07-01T09:00:04.000Z",
                        type="assistant"), "requestId": "req_011A",
              "message": {**msg, "content": [{"type": "thinking", "thinking":
                          "Rounding happens per line.", "signature": "c2lnMQ=="}]},
              "costUSD": 0.0123}),
        line({**cc_base(s, v, "u-0004", "u-0003", "2025-07-01T09:00:05.000Z",
                        type="assistant"), "requestId": "req_011A",
              "message": {**msg, "content": [{"type": "text", "text":
                          "Let me run the tests."}]}, "costUSD": 0.0123}),
        line({**cc_base(s, v, "u-0005", "u-0004", "2025-07-01T09:00:05.500Z",
                        type="assistant"), "requestId": "req_011A",
              "message": {**msg, "stop_reason": "tool_use", "content": [
                  {"type": "tool_use", "id": "toolu_01A", "name": "Bash",
                   "input": {"command": "pytest -q tests/test_cart.py"}}]},
              "costUSD": 0.0123}),
        # A malformed line in the middle (a crash of an old version mid-write, then more).
        '{"parentUuid":"u-0005","type":"user","message":{"role":"user","content":[{"tool\n',
        line({**cc_base(s, v, "u-0006", "u-0005", "2025-07-01T09:00:09.000Z", type="user"),
              "message": {"role": "user", "content": [
                  {"type": "tool_result", "tool_use_id": "toolu_01A", "is_error": True,
                   "content": "FAILED tests/test_cart.py::test_total - assert 10.01 == "
                              "10.0"}]},
              "toolUseResult": "Error: FAILED tests/test_cart.py::test_total"}),
        line({**cc_base(s, v, "u-0007", "u-0006", "2025-07-01T09:00:12.000Z",
                        type="assistant"), "requestId": "req_011B",
              "message": {"id": "msg_01Hq8sV3", "type": "message", "role": "assistant",
                          "model": "claude-sonnet-4-20250514", "stop_reason": "end_turn",
                          "stop_sequence": None, "content": [
                              {"type": "text", "text": "Round once, at the end."}],
                          "usage": {"input_tokens": 6, "cache_read_input_tokens": 10200,
                                    "output_tokens": 42}},
              "costUSD": 0.004}),
        line({**cc_base(s, v, "u-0008", "u-0007", "2025-07-01T09:01:00.000Z", type="user",
                        isMeta=True),
              "message": {"role": "user", "content": "Caveat: the messages below were "
                          "generated by the user while running local commands."}}),
        line({**cc_base(s, v, "u-0009", "u-0008", "2025-07-01T09:01:02.000Z", type="user"),
              "message": {"role": "user", "content": "Thanks, ship it."}}),
    ]
    return "".join(out)


def claude_new() -> str:
    s, v = CC_NEW, "2.0.14"
    big = "".join(f"src/shop/module_{n:04d}.py: ok\n" for n in range(900))  # > 16 KiB
    out = [
        line({"type": "file-history-snapshot", "messageId": "n-0001",
              "snapshot": {"messageId": "n-0001", "trackedFileBackups": {},
                           "timestamp": "2025-10-20T14:00:00.000Z"},
              "isSnapshotUpdate": False}),
        line({**cc_base(s, v, "n-0001", None, "2025-10-20T14:00:00.000Z", type="user",
                        gitBranch="feature/tax"),
              "message": {"role": "user", "content": "Find every place tax is computed."},
              "thinkingMetadata": {"level": "high", "disabled": False, "triggers": []}}),
        line({**cc_base(s, v, "n-0002", "n-0001", "2025-10-20T14:00:03.000Z",
                        type="assistant", gitBranch="feature/tax"), "requestId": "req_02A",
              "message": {"id": "msg_02Kx", "type": "message", "role": "assistant",
                          "model": "claude-opus-4-1-20250805", "stop_reason": "tool_use",
                          "stop_sequence": None, "content": [
                              {"type": "tool_use", "id": "toolu_02T", "name": "Task",
                               "input": {"description": "Search tax code",
                                         "prompt": "List files computing tax",
                                         "subagent_type": "Explore"}}],
                          "usage": {"input_tokens": 10, "cache_creation_input_tokens": 500,
                                    "cache_read_input_tokens": 12000,
                                    "output_tokens": 80}}}),
        line({**cc_base(s, v, "n-0003", "n-0002", "2025-10-20T14:00:40.000Z", type="user",
                        gitBranch="feature/tax"),
              "message": {"role": "user", "content": [
                  {"type": "tool_result", "tool_use_id": "toolu_02T", "content": [
                      {"type": "text", "text": "tax is computed in cart.py and invoice.py"}
                  ]}]},
              "toolUseResult": {"status": "completed", "agentId": "5e6f7a8b",
                                "totalDurationMs": 36000, "totalTokens": 4100}}),
        line({**cc_base(s, v, "n-0004", "n-0003", "2025-10-20T14:00:45.000Z",
                        type="assistant", gitBranch="feature/tax"), "requestId": "req_02B",
              "message": {"id": "msg_02Ky", "type": "message", "role": "assistant",
                          "model": "claude-opus-4-1-20250805", "stop_reason": "tool_use",
                          "stop_sequence": None, "content": [
                              {"type": "tool_use", "id": "toolu_02L", "name": "Bash",
                               "input": {"command": "python -m shop.check --all"}}],
                          "usage": {"input_tokens": 12, "cache_read_input_tokens": 12600,
                                    "output_tokens": 30}}}),
        line({**cc_base(s, v, "n-0005", "n-0004", "2025-10-20T14:00:50.000Z", type="user",
                        gitBranch="feature/tax"),
              "message": {"role": "user", "content": [
                  {"type": "tool_result", "tool_use_id": "toolu_02L", "content": big}]},
              "toolUseResult": {"stdout": "(long)", "stderr": "", "interrupted": False}}),
        line({"parentUuid": "n-0005", "isSidechain": False, "userType": "external",
              "cwd": "/home/ada/src/shop", "sessionId": s, "version": v,
              "gitBranch": "feature/tax", "type": "system", "subtype": "compact_boundary",
              "content": "Conversation compacted", "isMeta": False,
              "timestamp": "2025-10-20T14:10:00.000Z", "uuid": "n-0006", "level": "info",
              "compactMetadata": {"trigger": "auto", "preTokens": 155000}}),
        line({**cc_base(s, v, "n-0007", "n-0006", "2025-10-20T14:10:00.100Z", type="user",
                        gitBranch="feature/tax", isCompactSummary=True,
                        isVisibleInTranscriptOnly=True),
              "message": {"role": "user", "content": "This session is being continued from "
                          "a previous conversation. Summary: tax lives in cart.py and "
                          "invoice.py; the check passes."}}),
        line({**cc_base(s, v, "n-0008", "n-0007", "2025-10-20T14:11:00.000Z", type="user",
                        gitBranch="feature/tax"),
              "message": {"role": "user", "content": "Now unify them."}}),
        line({"type": "queue-operation", "operation": "enqueue",
              "timestamp": "2025-10-20T14:11:01.000Z", "sessionId": s,
              "content": "also update the docs"}),
        line({**cc_base(s, v, "n-0009", "n-0008", "2025-10-20T14:11:05.000Z",
                        type="assistant", gitBranch="feature/tax"), "requestId": "req_02C",
              "message": {"id": "msg_02Kz", "type": "message", "role": "assistant",
                          "model": "claude-opus-4-1-20250805", "stop_reason": None,
                          "stop_sequence": None, "content": [
                              {"type": "text", "text": "Moving tax into tax.py."}],
                          "usage": {"input_tokens": 3, "cache_read_input_tokens": 3000,
                                    "output_tokens": 15}}}),
    ]
    # The tool was writing when the copy was taken: a torn last line.
    torn = line({**cc_base(s, v, "n-0010", "n-0009", "2025-10-20T14:11:06.000Z",
                           type="assistant"), "message": {"id": "msg_02Kz"}})
    return "".join(out) + torn[:70]


def claude_sidechain() -> str:
    """A 1.0.x session whose Task sub-agent wrote its lines into the same file, marked
    ``isSidechain`` (before sub-agents had files of their own)."""
    s, v = CC_SIDE, "1.0.24"

    def assistant(uuid: str, parent: str, ts: str, mid: str, content: list[Any],
                  side: bool = False, stop: str = "tool_use") -> str:
        return line({**cc_base(s, v, uuid, parent, ts, type="assistant", isSidechain=side),
                     "requestId": f"req_{mid}", "message": {
                         "id": mid, "type": "message", "role": "assistant",
                         "model": "claude-sonnet-4-20250514", "stop_reason": stop,
                         "content": content,
                         "usage": {"input_tokens": 100, "output_tokens": 10}}})

    def user(uuid: str, parent: str | None, ts: str, content: Any,
             side: bool = False) -> str:
        return line({**cc_base(s, v, uuid, parent, ts, type="user", isSidechain=side),
                     "message": {"role": "user", "content": content}})

    t = "2025-06-12T08:00:"
    return "".join([
        user("m-1", None, t + "00.000Z", "Which files import requests?"),
        assistant("m-2", "m-1", t + "02.000Z", "msg_M1", [
            {"type": "tool_use", "id": "toolu_T1", "name": "Task",
             "input": {"description": "find imports", "prompt": "grep for requests"}}]),
        user("x-1", None, t + "03.000Z", "grep for requests", side=True),
        assistant("x-2", "x-1", t + "04.000Z", "msg_X1", [
            {"type": "tool_use", "id": "toolu_X1", "name": "Grep",
             "input": {"pattern": "import requests"}}], side=True),
        user("x-3", "x-2", t + "05.000Z", [{"type": "tool_result", "tool_use_id": "toolu_X1",
                                            "content": "api.py"}], side=True),
        assistant("x-4", "x-3", t + "06.000Z", "msg_X2", [
            {"type": "text", "text": "Only api.py."}], side=True, stop="end_turn"),
        user("m-3", "m-2", t + "07.000Z", [{"type": "tool_result", "tool_use_id": "toolu_T1",
                                            "content": "Only api.py."}]),
        assistant("m-4", "m-3", t + "08.000Z", "msg_M2", [
            {"type": "text", "text": "api.py imports requests."}], stop="end_turn"),
    ])


def claude_agent(agent: str, session: str, version: str) -> str:
    base = {"isSidechain": True, "agentId": agent}
    return "".join([
        line({**cc_base(session, version, "s-0001", None, "2025-10-20T14:00:04.000Z",
                        type="user"), **base,
              "message": {"role": "user", "content": "List files computing tax"}}),
        line({**cc_base(session, version, "s-0002", "s-0001", "2025-10-20T14:00:06.000Z",
                        type="assistant"), **base, "requestId": "req_S1",
              "message": {"id": "msg_S1", "type": "message", "role": "assistant",
                          "model": "claude-haiku-4-5-20251001", "stop_reason": "tool_use",
                          "content": [{"type": "tool_use", "id": "toolu_S1", "name": "Grep",
                                       "input": {"pattern": "tax"}}],
                          "usage": {"input_tokens": 900, "output_tokens": 20}}}),
        line({**cc_base(session, version, "s-0003", "s-0002", "2025-10-20T14:00:07.000Z",
                        type="user"), **base,
              "message": {"role": "user", "content": [
                  {"type": "tool_result", "tool_use_id": "toolu_S1",
                   "content": "cart.py\ninvoice.py"}]}}),
        line({**cc_base(session, version, "s-0004", "s-0003", "2025-10-20T14:00:39.000Z",
                        type="assistant"), **base, "requestId": "req_S2",
              "message": {"id": "msg_S2", "type": "message", "role": "assistant",
                          "model": "claude-haiku-4-5-20251001", "stop_reason": "end_turn",
                          "content": [{"type": "text",
                                       "text": "tax is computed in cart.py and invoice.py"}],
                          "usage": {"input_tokens": 950, "output_tokens": 18}}}),
    ])


# --- Codex CLI ------------------------------------------------------------------------

CX_LEGACY = "5973b6c0-94b8-487b-a530-2aeb6098ae0e"  # 0.2x: bare records, record_type
CX_MAIN = "019a2d7a-41c4-78b1-b7cc-a45d62a89cd5"    # 0.46: session_meta, event_msg, ...
CX_SUB = "019a9776-0a34-7842-8627-112b63d66e90"     # 0.58: sub-agent, forked


def cx(ts: str, kind: str, payload: dict[str, Any]) -> str:
    return line({"timestamp": ts, "type": kind, "payload": payload})


def codex_legacy() -> str:
    return "".join([
        line({"id": CX_LEGACY, "timestamp": "2025-08-14T10:02:11.120Z",
              "instructions": None, "git": {"commit_hash": "9f2c1e0", "branch": "main",
                                            "repository_url": "git@example.com:a/b.git"}}),
        line({"record_type": "state"}),
        line({"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "Rename foo to bar in util.py"}]}),
        line({"type": "reasoning", "id": "rs_1", "summary": [
            {"type": "summary_text", "text": "Find foo."}], "encrypted_content": None}),
        line({"type": "function_call", "id": "fc_1", "name": "shell",
              "arguments": "{\"command\":[\"bash\",\"-lc\",\"grep -n foo util.py\"]}",
              "call_id": "call_L1"}),
        line({"record_type": "state"}),
        line({"type": "function_call_output", "call_id": "call_L1",
              "output": "{\"output\":\"3:def foo():\\n\",\"metadata\":{\"exit_code\":0,"
                        "\"duration_seconds\":0.1}}"}),
        line({"type": "message", "role": "assistant", "id": "msg_L1", "content": [
            {"type": "output_text", "text": "foo is defined on line 3."}]}),
    ])


def codex_main() -> str:
    meta = {"id": CX_MAIN, "timestamp": "2025-10-29T00:59:38.308Z",
            "cwd": "/home/ada/src/shop", "originator": "codex_cli_rs",
            "cli_version": "0.46.0", "instructions": None, "source": "cli",
            "model_provider": "openai",
            "git": {"commit_hash": "4be1d0a", "branch": "fix/rounding",
                    "repository_url": "git@example.com:ada/shop.git"}}
    ctx = {"cwd": "/home/ada/src/shop", "approval_policy": "on-request",
           "sandbox_policy": {"mode": "workspace-write"}, "model": "gpt-5-codex",
           "effort": "medium", "summary": "auto"}
    tok1 = {"input_tokens": 5200, "cached_input_tokens": 4000, "output_tokens": 120,
            "reasoning_output_tokens": 64, "total_tokens": 5320}
    tok2 = {"input_tokens": 5600, "cached_input_tokens": 5100, "output_tokens": 60,
            "reasoning_output_tokens": 0, "total_tokens": 5660}
    total1 = tok1
    total2 = {key: tok1[key] + tok2[key] for key in tok1}
    limits = {"primary": {"used_percent": 7.0, "window_minutes": 300}}
    env = ("<environment_context>\n  <cwd>/home/ada/src/shop</cwd>\n  <approval_policy>"
           "on-request</approval_policy>\n</environment_context>")
    t = "2025-10-29T00:59:"
    return "".join([
        cx(t + "38.317Z", "session_meta", meta),
        cx(t + "38.317Z", "response_item", {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": env}]}),
        cx(t + "38.317Z", "response_item", {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "Why is the total off by a cent? See the shot."},
            {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"}]}),
        cx(t + "38.317Z", "event_msg", {"type": "user_message", "message":
                                        "Why is the total off by a cent? See the shot.",
                                        "images": [f"data:image/png;base64,{PNG}"],
                                        "kind": "plain"}),
        cx(t + "38.318Z", "turn_context", ctx),
        cx(t + "39.000Z", "event_msg", {"type": "token_count", "info": None,
                                        "rate_limits": limits}),
        cx(t + "39.522Z", "event_msg", {"type": "agent_reasoning",
                                        "text": "**Checking rounding**"}),
        cx(t + "39.523Z", "response_item", {"type": "reasoning", "summary": [
            {"type": "summary_text", "text": "**Checking rounding**"}], "content": None,
            "encrypted_content": "gAAAAABo_enc1"}),
        cx(t + "39.600Z", "response_item", {"type": "function_call", "name": "shell",
                                            "arguments": "{\"command\":[\"bash\",\"-lc\","
                                                         "\"pytest -q\"],\"timeout_ms\":"
                                                         "120000}",
                                            "call_id": "call_M1"}),
        cx(t + "39.601Z", "event_msg", {"type": "token_count", "info": {
            "total_token_usage": total1, "last_token_usage": tok1,
            "model_context_window": 272000}, "rate_limits": limits}),
        # The same totals again (Codex repeats token_count after a tool call).
        cx(t + "39.602Z", "event_msg", {"type": "token_count", "info": {
            "total_token_usage": total1, "last_token_usage": tok1,
            "model_context_window": 272000}, "rate_limits": limits}),
        cx(t + "41.000Z", "response_item", {"type": "function_call_output",
                                            "call_id": "call_M1", "output":
                                            "{\"output\":\"1 failed\\n\",\"metadata\":"
                                            "{\"exit_code\":1,\"duration_seconds\":1.2}}"}),
        "{\"timestamp\":\"2025-10-29T00:59:41.100Z\",\"type\":\"event_msg\",\"payl\n",
        cx(t + "42.000Z", "response_item", {"type": "custom_tool_call", "status":
                                            "completed", "call_id": "call_M2", "name":
                                            "apply_patch", "input": "*** Begin Patch\n"
                                            "*** Update File: cart.py\n@@\n-round(x)\n"
                                            "+x\n*** End Patch\n"}),
        cx(t + "42.500Z", "response_item", {"type": "custom_tool_call_output",
                                            "call_id": "call_M2", "output":
                                            "{\"output\":\"Success. Updated: M cart.py\\n\","
                                            "\"metadata\":{\"exit_code\":0}}"}),
        cx(t + "43.000Z", "event_msg", {"type": "agent_message",
                                        "message": "Rounding per line; fixed in cart.py."}),
        cx(t + "43.001Z", "response_item", {"type": "message", "role": "assistant",
                                            "content": [{"type": "output_text", "text":
                                                         "Rounding per line; fixed in "
                                                         "cart.py."}]}),
        cx(t + "43.100Z", "event_msg", {"type": "token_count", "info": {
            "total_token_usage": total2, "last_token_usage": tok2,
            "model_context_window": 272000}, "rate_limits": limits}),
        cx(t + "43.200Z", "event_msg", {"type": "task_complete",
                                        "last_agent_message": "Rounding per line."}),
        cx("2025-10-29T01:20:00.000Z", "compacted", {
            "message": "Summary: the cart rounded per line; now rounds once in cart.py."}),
        cx("2025-10-29T01:20:00.001Z", "event_msg", {"type": "context_compacted"}),
        cx("2025-10-29T01:21:00.000Z", "response_item", {"type": "message", "role": "user",
                                                         "content": [{"type": "input_text",
                                                                      "text": "Add a test."}]}),
        cx("2025-10-29T01:21:00.000Z", "event_msg", {"type": "user_message",
                                                     "message": "Add a test.",
                                                     "kind": "plain"}),
        cx("2025-10-29T01:21:00.001Z", "turn_context", {**ctx, "model": "gpt-5"}),
        cx("2025-10-29T01:21:01.000Z", "event_msg", {"type": "future_event_kind",
                                                     "detail": {"x": 1}}),
    ]) + cx("2025-10-29T01:21:02.000Z", "response_item", {
        "type": "message", "role": "assistant", "content": [
            {"type": "output_text", "text": "Adding tests/test_cart.py"}]})[:60]


def codex_sub() -> str:
    meta = {"id": CX_SUB, "forked_from_id": CX_MAIN, "timestamp": "2025-11-18T21:55:50.000Z",
            "cwd": "/home/ada/src/shop", "originator": "codex_cli_rs",
            "cli_version": "0.58.0", "source": {"subagent": {"thread_spawn": {
                "parent_thread_id": CX_MAIN, "depth": 1, "agent_nickname": "reviewer"}}},
            "model_provider": "openai"}
    tok = {"input_tokens": 800, "cached_input_tokens": 0, "output_tokens": 40,
           "reasoning_output_tokens": 8, "total_tokens": 840}
    return "".join([
        cx("2025-11-18T21:55:50.010Z", "session_meta", meta),
        cx("2025-11-18T21:55:50.020Z", "response_item", {
            "type": "message", "role": "developer", "content": [
                {"type": "input_text", "text": "You review diffs."}]}),
        cx("2025-11-18T21:55:50.030Z", "response_item", {
            "type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "Review the cart.py change."}]}),
        cx("2025-11-18T21:55:50.040Z", "turn_context", {"cwd": "/home/ada/src/shop",
                                                        "model": "gpt-5.1-codex"}),
        cx("2025-11-18T21:55:52.000Z", "response_item", {
            "type": "message", "role": "assistant", "content": [
                {"type": "output_text", "text": "Looks right."}]}),
        cx("2025-11-18T21:55:52.100Z", "event_msg", {"type": "token_count", "info": {
            "total_token_usage": tok, "last_token_usage": tok}}),
    ])


def main(root: str) -> None:
    base = os.path.join(root, "claude-code", CC_PROJECT)
    write(os.path.join(base, f"{CC_OLD}.jsonl"), claude_old())
    write(os.path.join(base, f"{CC_NEW}.jsonl"), claude_new())
    write(os.path.join(base, f"{CC_SIDE}.jsonl"), claude_sidechain())
    # 2.0.x wrote agent files beside the session; later versions in <session>/subagents/.
    write(os.path.join(base, "agent-5e6f7a8b.jsonl"), claude_agent("5e6f7a8b", CC_NEW,
                                                                    "2.0.14"))
    write(os.path.join(base, CC_NEW, "subagents", "agent-a1b2c3d.jsonl"),
          claude_agent("a1b2c3d", CC_NEW, "2.1.3"))
    codex = os.path.join(root, "codex")
    write(os.path.join(codex, "2025", "08", "14",
                       f"rollout-2025-08-14T10-02-11-{CX_LEGACY}.jsonl"), codex_legacy())
    write(os.path.join(codex, "2025", "10", "29",
                       f"rollout-2025-10-29T00-59-38-{CX_MAIN}.jsonl"), codex_main())
    write(os.path.join(codex, "2025", "11", "18",
                       f"rollout-2025-11-18T21-55-50-{CX_SUB}.jsonl"), codex_sub())


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "fixtures", "transcripts"))
