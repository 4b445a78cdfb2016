"""The converters of fsstore.convert: fsstore messages out to each format and back keep
everything the format holds (hypothesis round trips, restricted as docs/CONVERTERS.md
says), and the examples of each format's documentation convert in and out unchanged
(a lone text block written back as a plain str aside: the APIs take both alike)."""

from __future__ import annotations

import base64
import copy
import os
import subprocess
import sys
from typing import Any

import pytest
from convert_strategies import (
    anthropic_conversations,
    chat_conversations,
    responses_conversations,
    ui_conversations,
)
from hypothesis import HealthCheck, given, settings
from runlength import examples

from fsstore.convert import (
    from_anthropic,
    from_anthropic_message,
    from_openai_chat,
    from_openai_chat_completion,
    from_openai_response,
    from_openai_responses,
    from_ui_messages,
    to_anthropic,
    to_openai_chat,
    to_openai_responses,
    to_ui_messages,
)
from fsstore.errors import InvalidMessage
from fsstore.message_types import (
    INLINE_FILE_LIMIT,
    DataPart,
    FilePart,
    Message,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    check_message,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = settings(max_examples=examples(50, 100), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PDF = base64.b64encode(b"%PDF-1.7 a small pdf").decode()
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n a small png").decode()
WAV = base64.b64encode(b"RIFF a small wav").decode()


def all_stored(messages: list[Message]) -> list[Message]:
    for message in messages:
        check_message(message)
    return messages


def lone_text(content: Any) -> Any:
    """A content list of one plain text block, as the plain str the converters write."""
    if isinstance(content, list) and len(content) == 1 and isinstance(content[0], dict) \
            and content[0].keys() == {"type", "text"} \
            and content[0]["type"] in ("text", "input_text"):
        return content[0]["text"]
    return content


def plain(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**m, "content": lone_text(m["content"])} if "content" in m else m
            for m in messages]


# --- round trips of random fsstore messages ---------------------------------------------


@EXAMPLES
@given(chat_conversations)
def test_openai_chat_round_trip_keeps_what_chat_holds(messages: list[Message]) -> None:
    assert all_stored(from_openai_chat(to_openai_chat(messages))) == messages


@EXAMPLES
@given(anthropic_conversations())
def test_anthropic_round_trip_keeps_what_anthropic_holds(messages: list[Message]) -> None:
    system, converted = to_anthropic(messages)
    assert all_stored(from_anthropic(converted, system=system)) == messages


@EXAMPLES
@given(responses_conversations)
def test_openai_responses_round_trip_keeps_what_responses_hold(
        messages: list[Message]) -> None:
    assert all_stored(from_openai_responses(to_openai_responses(messages))) == messages


@EXAMPLES
@given(ui_conversations)
def test_ui_message_round_trip_keeps_what_ui_messages_hold(messages: list[Message]) -> None:
    assert all_stored(from_ui_messages(to_ui_messages(messages))) == messages


# --- OpenAI Chat Completions: the documentation's examples -------------------------------

# Shapes from https://platform.openai.com/docs/api-reference/chat/create (messages,
# developer role, the chat completion object), https://platform.openai.com/docs/guides/
# function-calling (tool_calls, tool messages), https://platform.openai.com/docs/guides/
# images-vision (image_url), https://platform.openai.com/docs/guides/pdf-files (file
# parts), https://platform.openai.com/docs/guides/audio (input_audio) and
# https://platform.openai.com/docs/guides/structured-outputs (refusal).
CHAT_CASES: list[list[dict[str, Any]]] = [
    [{"role": "developer", "content": "You are a helpful assistant."},
     {"role": "user", "content": "Hello!"},
     {"role": "assistant", "content": "Hello! How can I assist you today?"}],
    [{"role": "user", "content": [
        {"type": "text", "text": "What's in this image?"},
        {"type": "image_url", "image_url": {
            "url": "https://upload.wikimedia.org/wikipedia/commons/thumb/d/dd/"
                   "Gfp-wisconsin-madison-the-nature-boardwalk.jpg", "detail": "high"}}]}],
    [{"role": "user", "content": [
        {"type": "text", "text": "what's in this image?"},
        {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{PNG}"}}]}],
    [{"role": "system", "content": "you're a helpful assistant"},
     {"role": "user", "content": "What is the weather like in Paris today?"},
     {"role": "assistant", "content": None, "tool_calls": [
         {"id": "call_12345xyz", "type": "function", "function": {
             "name": "get_weather", "arguments": "{\"location\":\"Paris, France\"}"}}]},
     {"role": "tool", "tool_call_id": "call_12345xyz", "content": "14"}],
    [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {
            "name": "get_current_weather",
            "arguments": "{\n\"location\": \"Boston, MA\"\n}"}}]}],
    [{"role": "user", "content": [
        {"type": "file", "file": {"filename": "draconomicon.pdf",
                                  "file_data": f"data:application/pdf;base64,{PDF}"}},
        {"type": "text", "text": "What is the first dragon in the book?"}]}],
    [{"role": "user", "content": [
        {"type": "text", "text": "What is in this recording?"},
        {"type": "input_audio", "input_audio": {"data": WAV, "format": "wav"}}]}],
    [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-abc123"}},
                                  {"type": "text", "text": "Summarize."}]}],
    [{"role": "assistant", "content": None,
      "refusal": "I'm sorry, I cannot assist with that request."}],
    [{"role": "user", "name": "alice", "content": "Hi"}],
]


@pytest.mark.parametrize("case", CHAT_CASES)
def test_openai_chat_documentation_examples_convert_in_and_out(
        case: list[dict[str, Any]]) -> None:
    messages = all_stored(from_openai_chat(copy.deepcopy(case)))
    assert to_openai_chat(messages) == plain(case)


def test_openai_chat_completion_gives_model_finish_reason_and_usage() -> None:
    # https://platform.openai.com/docs/api-reference/chat/object (the example object)
    response = {
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG", "object": "chat.completion",
        "created": 1741570283, "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": {
            "role": "assistant", "content": "The image shows a wooden boardwalk.",
            "refusal": None, "annotations": []}, "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1117, "completion_tokens": 46, "total_tokens": 1163,
                  "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 12, "audio_tokens": 0}},
        "service_tier": "default", "system_fingerprint": "fp_fc9f1d7035"}
    message = from_openai_chat_completion(response)
    check_message(message)
    meta = message.metadata
    assert (meta.model, meta.provider, meta.finish_reason) == (
        "gpt-4o-2024-08-06", "openai", "stop")
    assert meta.usage is not None
    assert (meta.usage.input, meta.usage.output, meta.usage.cached_input,
            meta.usage.reasoning) == (1117, 46, 1024, 12)
    assert meta.extra["openai_chat_response"]["id"] == "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG"
    assert to_openai_chat([message]) == [{"role": "assistant", "annotations": [],
                                          "content": "The image shows a wooden boardwalk."}]


def test_openai_chat_completion_with_tool_calls() -> None:
    # https://developers.qodex.ai/openai/chatgpt-api/chaptgpt-api-use-cases-chatgpt-
    # function-calling/chat-completions-with-function-calling (a recorded response)
    response = {
        "id": "chatcmpl-9b03jdpTlePrfNUed4Oih8obtOuEC", "object": "chat.completion",
        "created": 1718605391, "model": "gpt-3.5-turbo-0125",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": None,
                                             "tool_calls": [{
                                                 "id": "call_H5zLfaW6i3LWQRqUAxuSJ8qS",
                                                 "type": "function", "function": {
                                                     "name": "get_current_weather",
                                                     "arguments": "{\"location\":\"San "
                                                                  "Francisco\"}"}}]},
                     "logprobs": None, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 94, "completion_tokens": 14, "total_tokens": 108},
        "system_fingerprint": None}
    message = from_openai_chat_completion(response)
    assert message.metadata.finish_reason == "tool_calls"
    assert message.tool_calls == [ToolCallPart(call_id="call_H5zLfaW6i3LWQRqUAxuSJ8qS",
                                               name="get_current_weather",
                                               arguments={"location": "San Francisco"})]
    assert to_openai_chat([message]) == [response["choices"][0]["message"]]  # type: ignore


def test_openai_chat_tool_result_is_named_after_its_earlier_call() -> None:
    messages = from_openai_chat(CHAT_CASES[3])
    assert messages[3].tool_results[0].name == "get_weather"
    assert from_openai_chat(CHAT_CASES[3][3:])[0].tool_results[0].name is None


def test_openai_chat_arguments_keep_their_text_until_edited() -> None:
    [message] = from_openai_chat(CHAT_CASES[4])
    assert message.tool_calls[0].arguments == {"location": "Boston, MA"}
    assert to_openai_chat([message])[0]["tool_calls"][0]["function"]["arguments"] == \
        "{\n\"location\": \"Boston, MA\"\n}"
    message.tool_calls[0].arguments = {"location": "Paris"}
    assert to_openai_chat([message])[0]["tool_calls"][0]["function"]["arguments"] == \
        '{"location":"Paris"}'


def test_openai_chat_arguments_that_are_not_json_are_kept_as_text() -> None:
    case = [{"role": "assistant", "content": None, "tool_calls": [{
        "id": "c1", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]
    [message] = from_openai_chat(case)
    assert message.tool_calls[0].arguments == "{oops"
    assert to_openai_chat([message]) == case


def test_openai_chat_tool_message_of_several_results_becomes_several() -> None:
    message = Message(role="tool", parts=[ToolResultPart(call_id="a", output="1"),
                                          ToolResultPart(call_id="b", output={"x": 2})])
    assert to_openai_chat([message]) == [
        {"role": "tool", "tool_call_id": "a", "content": "1"},
        {"role": "tool", "tool_call_id": "b", "content": '{"x":2}'}]


# --- Anthropic Messages: the documentation's examples -------------------------------------

# Shapes from https://docs.anthropic.com/en/api/messages (messages, system, the Message
# object), https://docs.anthropic.com/en/docs/build-with-claude/tool-use (tool_use,
# tool_result, is_error), https://docs.anthropic.com/en/docs/build-with-claude/vision
# (image sources), https://docs.anthropic.com/en/docs/build-with-claude/pdf-support and
# .../citations (document sources), https://docs.anthropic.com/en/docs/build-with-claude/
# extended-thinking (thinking, redacted_thinking), .../prompt-caching (cache_control) and
# .../tool-use/web-search-tool (server tool blocks).
ANTHROPIC_CASES: list[tuple[Any, list[dict[str, Any]]]] = [
    (None, [{"role": "user", "content": "Hello, Claude"}]),
    ("You are a seasoned data scientist at a Fortune 500 company.",
     [{"role": "user", "content": "Hello there."},
      {"role": "assistant", "content": "Hi, I'm Claude. How can I help you?"},
      {"role": "user", "content": "Can you explain LLMs in plain English?"}]),
    ([{"type": "text", "text": "You are an AI assistant tasked with analyzing literary works."},
      {"type": "text", "text": "<the entire contents of Pride and Prejudice>",
       "cache_control": {"type": "ephemeral"}}],
     [{"role": "user", "content": "Analyze the major themes in Pride and Prejudice."}]),
    (None, [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg",
                                     "data": PNG}},
        {"type": "text", "text": "Describe this image."}]}]),
    (None, [{"role": "user", "content": [
        {"type": "image", "source": {"type": "url", "url": "https://upload.wikimedia.org/"
                                     "wikipedia/commons/a/a7/Camponotus_flavomarginatus_ant.jpg"}},
        {"type": "text", "text": "Describe this image."}]}]),
    (None, [{"role": "user", "content": [
        {"type": "document", "source": {"type": "url", "url": "https://assets.anthropic.com/"
                                        "m/1cd9d098ac3e6467/original/Claude-3-Model-Card.pdf"}},
        {"type": "text", "text": "What are the key findings in this document?"}]}]),
    (None, [{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                        "data": PDF}, "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Which model has the highest human preference win rates?"}]}]),
    (None, [{"role": "user", "content": [
        {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                        "data": "The grass is green. The sky is blue."},
         "title": "My Document", "context": "This is a trustworthy document.",
         "citations": {"enabled": True}},
        {"type": "text", "text": "What color is the grass and sky?"}]}]),
    (None, [{"role": "user", "content": "What's the weather like in San Francisco?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "<thinking>I need to use get_weather</thinking>"},
                {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9",
                 "name": "get_weather", "input": {"location": "San Francisco, CA",
                                                  "unit": "celsius"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A09q90qw90lq917835lq9",
                 "content": "15 degrees"}]}]),
    (None, [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_01A09q90qw90lq917835lq9",
         "content": [{"type": "text", "text": "15 degrees"},
                     {"type": "image", "source": {"type": "base64",
                                                  "media_type": "image/jpeg", "data": PNG}}]},
        {"type": "tool_result", "tool_use_id": "toolu_02", "content":
         "ConnectionError: the weather service API is not available (HTTP 500)",
         "is_error": True},
        {"type": "text", "text": "What should I do next?"}]}]),
    (None, [{"role": "user", "content": "What is 27 * 453?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Let me analyze this step by step...",
                 "signature": "WaUjzkypQ2mUEVM36O2TxuC06KN8xyfbJwyem2dw3URve/op91XWHOEBLLqIOMfF"
                              "G/UvLEczmEsUjavL...."},
                {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5"
                                                      "L8rLVyIwxtE3rAFBa8cr3qpPkNRj2YfWXGmKDxH4"
                                                      "mPnZ5sQ7vB9URj2pLmN3kF8/dW5hR7xJ0aP1oLs9"
                                                      "yTcMnKVf2wRpEGjH9XZaBt4UvDcPrQ..."},
                {"type": "text", "text": "27 * 453 = 12,231"}]}]),
    (None, [{"role": "assistant", "content": [
        {"type": "server_tool_use", "id": "srvtoolu_01WYG3ziw53XMcoyKL4XcZmE",
         "name": "web_search", "input": {"query": "claude shannon birth date"}},
        {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_01WYG3ziw53XMcoyKL4XcZmE",
         "content": [{"type": "web_search_result", "url": "https://en.wikipedia.org/wiki/"
                      "Claude_Shannon", "title": "Claude Shannon - Wikipedia",
                      "encrypted_content": "EqgfCioIARgBIiQ3YTAwMjY1Mi1mZjM5LTQ1NGUtODgxNC1m",
                      "page_age": "April 30, 2025"}]},
        {"type": "text", "text": "Claude Shannon was born on April 30, 1916"}]}]),
]


@pytest.mark.parametrize("case", ANTHROPIC_CASES)
def test_anthropic_documentation_examples_convert_in_and_out(
        case: tuple[Any, list[dict[str, Any]]]) -> None:
    system, messages = case
    converted = all_stored(from_anthropic(copy.deepcopy(messages), system=system))
    assert to_anthropic(converted) == (system, plain(messages))


def test_anthropic_user_message_of_tool_results_is_a_tool_message_and_back() -> None:
    messages = from_anthropic(ANTHROPIC_CASES[8][1])
    assert [m.role for m in messages] == ["user", "assistant", "tool"]
    assert messages[2].tool_results == [ToolResultPart(
        call_id="toolu_01A09q90qw90lq917835lq9", output="15 degrees", name="get_weather")]
    assert to_anthropic(messages)[1][2]["role"] == "user"


def test_anthropic_thinking_signature_is_kept_byte_for_byte() -> None:
    messages = from_anthropic(ANTHROPIC_CASES[10][1])
    thinking, redacted, _ = messages[1].parts
    assert isinstance(thinking, ReasoningPart) and isinstance(redacted, ReasoningPart)
    assert thinking.signature == ANTHROPIC_CASES[10][1][1]["content"][0]["signature"]
    assert (redacted.redacted, redacted.text) == (True, "")
    assert redacted.signature == ANTHROPIC_CASES[10][1][1]["content"][1]["data"]


def test_anthropic_message_response_gives_usage_with_cache_reads_and_writes() -> None:
    # https://docs.anthropic.com/en/api/messages (a Message; usage of prompt caching)
    response = {
        "id": "msg_0195XjbG2FGZfN7Dqkd9kyyW", "type": "message", "role": "assistant",
        "model": "claude-sonnet-4-20250514",
        "content": [{"type": "text", "text": "Let me help you check the weather in Beijing."},
                    {"type": "tool_use", "id": "toolu_012f3meaYuYj9yPPuyuRVw9U",
                     "name": "get_weather", "input": {"location": "Beijing"}}],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 478, "output_tokens": 71, "cache_read_input_tokens": 120,
                  "cache_creation_input_tokens": 30, "service_tier": "standard"}}
    message = from_anthropic_message(response)
    check_message(message)
    assert message.id == "msg_0195XjbG2FGZfN7Dqkd9kyyW"
    meta = message.metadata
    assert (meta.model, meta.provider, meta.finish_reason) == (
        "claude-sonnet-4-20250514", "anthropic", "tool_calls")
    assert meta.usage is not None
    assert (meta.usage.input, meta.usage.output, meta.usage.cached_input,
            meta.usage.cache_write) == (478 + 120 + 30, 71, 120, 30)
    assert meta.extra["anthropic_response"] == {"stop_reason": "tool_use"}
    assert to_anthropic([message]) == (None, [{"role": "assistant",
                                               "content": response["content"]}])


@pytest.mark.parametrize("stop, finish", [("end_turn", "stop"), ("stop_sequence", "stop"),
                                          ("max_tokens", "length"), ("tool_use", "tool_calls"),
                                          ("refusal", "content_filter"), ("pause_turn", "other")])
def test_anthropic_stop_reason_maps_to_finish_reason(stop: str, finish: str) -> None:
    response = {"id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
                "content": [{"type": "text", "text": "Hello!"}],
                "model": "claude-sonnet-4-20250514", "stop_reason": stop,
                "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": 6}}
    assert from_anthropic_message(response).metadata.finish_reason == finish


def test_anthropic_refuses_a_system_message_after_the_conversation_started() -> None:
    messages = [Message.of_text("user", "hi"), Message.of_text("system", "late")]
    with pytest.raises(InvalidMessage) as caught:
        to_anthropic(messages)
    assert caught.value.field == "messages[1].role"


# --- OpenAI Responses: the documentation's examples -------------------------------------

# Shapes from https://platform.openai.com/docs/api-reference/responses/create (input
# items, the Response object), https://platform.openai.com/docs/guides/function-calling
# (function_call, function_call_output), https://platform.openai.com/docs/guides/
# images-vision and .../pdf-files (input_image, input_file) and https://cookbook.openai.com/
# examples/responses_api/reasoning_items (reasoning items, encrypted_content).
RESPONSES_CASES: list[list[dict[str, Any]]] = [
    [{"role": "developer", "content": "Talk like a pirate."},
     {"role": "user", "content": "Are semicolons optional in JavaScript?"}],
    [{"role": "user", "content": [
        {"type": "input_text", "text": "what's in this image?"},
        {"type": "input_image", "image_url": "https://upload.wikimedia.org/wikipedia/"
                                             "commons/3/3b/LeBron_James_Layup.jpg"}]}],
    [{"role": "user", "content": [
        {"type": "input_file", "filename": "draconomicon.pdf",
         "file_data": f"data:application/pdf;base64,{PDF}"},
        {"type": "input_text", "text": "What is the first dragon in the book?"}]}],
    [{"role": "user", "content": [{"type": "input_file", "file_id": "file-6F2ksmvXxt4VdoqmHRw6kL"},
                                  {"type": "input_text", "text": "Summarize."}]}],
    [{"role": "user", "content": "What's the weather like in Paris today?"},
     {"type": "function_call", "id": "fc_12345xyz", "call_id": "call_12345xyz",
      "name": "get_weather", "arguments": "{\"location\":\"Paris, France\"}",
      "status": "completed"},
     {"type": "function_call_output", "call_id": "call_12345xyz", "output": "14"}],
    [{"type": "message", "role": "user", "content": "What is the weather like in Tokyo?"},
     {"id": "rs_1", "type": "reasoning", "summary": [], "encrypted_content": "ENC_OPAQUE_1"},
     {"id": "fc_1", "type": "function_call", "call_id": "call_abc123",
      "name": "get_weather", "arguments": "{\"city\":\"Tokyo\",\"units\":\"celsius\"}",
      "status": "completed"},
     {"type": "function_call_output", "call_id": "call_abc123", "output": "22"},
     {"id": "rs_2", "type": "reasoning", "summary": [
         {"type": "summary_text", "text": "**Answering the weather**"},
         {"type": "summary_text", "text": "It is 22 degrees."}]},
     {"id": "msg_67ccd2bf17f0819081ff3bb2cf6508e6", "type": "message", "status": "completed",
      "role": "assistant", "content": [{"type": "output_text", "annotations": [],
                                        "text": "It is 22°C in Tokyo."}]}],
    [{"type": "web_search_call", "id": "ws_67c9fa0502748190b7dd390736892e100be649c1a5ff9609",
      "status": "completed"},
     {"id": "msg_67c9fa077e288190af08fdffda2e34f20be649c1a5ff9609", "type": "message",
      "status": "completed", "role": "assistant", "content": [{
          "type": "output_text", "text": "On March 6, 2025, several news stories...",
          "annotations": [{"type": "url_citation", "start_index": 2606, "end_index": 2758,
                           "url": "https://www.example.com/story", "title": "A story"}]}]}],
]


@pytest.mark.parametrize("case", RESPONSES_CASES)
def test_openai_responses_documentation_examples_convert_in_and_out(
        case: list[dict[str, Any]]) -> None:
    messages = all_stored(from_openai_responses(copy.deepcopy(case)))
    assert to_openai_responses(messages) == plain(case)


def test_openai_responses_groups_items_into_messages_with_their_ids() -> None:
    messages = from_openai_responses(RESPONSES_CASES[5])
    assert [m.role for m in messages] == ["user", "assistant", "tool", "assistant"]
    assert [m.id for m in messages] == [None, "rs_1", None, "rs_2"]
    assert [type(p).__name__ for p in messages[3].parts] == ["ReasoningPart", "TextPart"]
    reasoning = messages[1].parts[0]
    assert isinstance(reasoning, ReasoningPart)
    assert (reasoning.text, reasoning.signature) == ("", "ENC_OPAQUE_1")
    assert messages[2].tool_results[0].name == "get_weather"
    summary = messages[3].parts[0]
    assert isinstance(summary, ReasoningPart)
    assert summary.text == "**Answering the weather**\n\nIt is 22 degrees."


def test_openai_response_gives_usage_with_cached_and_reasoning_tokens() -> None:
    # https://platform.openai.com/docs/api-reference/responses/object (the example)
    response = {
        "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b", "object": "response",
        "created_at": 1741476542, "status": "completed", "error": None,
        "incomplete_details": None, "model": "o4-mini-2025-04-16",
        "output": [
            {"id": "rs_6820f383d7c08191846711c5df8233bc0ac5ba57aafcbac7", "type": "reasoning",
             "summary": []},
            {"type": "message", "id": "msg_67ccd2bf17f0819081ff3bb2cf6508e6",
             "status": "completed", "role": "assistant", "content": [
                 {"type": "output_text", "text": "In a peaceful grove beneath a silver moon...",
                  "annotations": []}]}],
        "usage": {"input_tokens": 12033, "input_tokens_details": {"cached_tokens": 11904},
                  "output_tokens": 244, "output_tokens_details": {"reasoning_tokens": 192},
                  "total_tokens": 12277}}
    message = from_openai_response(response)
    check_message(message)
    assert message.id == "rs_6820f383d7c08191846711c5df8233bc0ac5ba57aafcbac7"
    meta = message.metadata
    assert (meta.model, meta.finish_reason) == ("o4-mini-2025-04-16", "stop")
    assert meta.usage is not None
    assert (meta.usage.input, meta.usage.output, meta.usage.cached_input,
            meta.usage.reasoning) == (12033, 244, 11904, 192)
    assert meta.extra["openai_response"]["id"] == response["id"]
    assert to_openai_responses([message]) == response["output"]
    response["status"], response["incomplete_details"] = "incomplete", {
        "reason": "max_output_tokens"}
    assert from_openai_response(response).metadata.finish_reason == "length"


# --- AI SDK UIMessage: the documentation's examples -------------------------------------

# Shapes from https://ai-sdk.dev/docs/reference/ai-sdk-core/ui-message (the UIMessage
# interface and its part types), https://ai-sdk.dev/docs/ai-sdk-ui/chatbot-tool-usage
# (tool parts and their states), https://ai-sdk.dev/docs/ai-sdk-ui/chatbot (file parts,
# reasoning, sources) and https://ai-sdk.dev/docs/ai-sdk-ui/streaming-data (data parts).
UI_CASES: list[list[dict[str, Any]]] = [
    [{"id": "msg-1", "role": "user", "parts": [{"type": "text", "text": "Hello!"}]},
     {"id": "msg-2", "role": "assistant", "metadata": {"createdAt": 1718605391,
                                                       "model": "gpt-4o"},
      "parts": [{"type": "step-start"},
                {"type": "text", "text": "Hi! How can I help?", "state": "done"}]}],
    [{"id": "msg-3", "role": "assistant", "parts": [
        {"type": "tool-getWeatherInformation", "toolCallId": "call_1",
         "state": "output-available", "input": {"city": "San Francisco"},
         "output": "sunny"},
        {"type": "tool-askForConfirmation", "toolCallId": "call_2",
         "state": "input-available", "input": {"message": "Check the weather?"}},
        {"type": "tool-getLocation", "toolCallId": "call_3", "state": "output-error",
         "input": {}, "errorText": "Location access denied"},
        {"type": "dynamic-tool", "toolName": "mcp_search", "toolCallId": "call_4",
         "state": "output-available", "input": {"q": "ai sdk"}, "output": {"hits": 3},
         "callProviderMetadata": {"openai": {"itemId": "fc_4"}}}]}],
    [{"id": "msg-4", "role": "user", "parts": [
        {"type": "file", "mediaType": "image/png", "filename": "screen.png",
         "url": f"data:image/png;base64,{PNG}"},
        {"type": "file", "mediaType": "application/pdf",
         "url": "https://example.com/report.pdf"},
        {"type": "text", "text": "What is in these files?"}]}],
    [{"id": "msg-5", "role": "assistant", "parts": [
        {"type": "reasoning", "text": "The user asks about the weather.", "state": "done",
         "providerMetadata": {"anthropic": {"signature": "ErUBCkYIBxgCIkD..."}}},
        {"type": "source-url", "sourceId": "src-1", "url": "https://example.com/weather",
         "title": "Weather"},
        {"type": "data-weather", "id": "weather-1",
         "data": {"city": "San Francisco", "status": "success", "weather": "sunny"}},
        {"type": "text", "text": "It is sunny."}]}],
]


@pytest.mark.parametrize("case", UI_CASES)
def test_ui_message_documentation_examples_convert_in_and_out(
        case: list[dict[str, Any]]) -> None:
    messages = all_stored(from_ui_messages(copy.deepcopy(case)))
    assert to_ui_messages(messages) == case


def test_ui_tool_part_is_a_call_and_a_result_with_the_message_id() -> None:
    [message] = from_ui_messages(UI_CASES[1])
    assert message.id == "msg-3"
    call, result = message.parts[:2]
    assert call == ToolCallPart(call_id="call_1", name="getWeatherInformation",
                                arguments={"city": "San Francisco"})
    assert result == ToolResultPart(call_id="call_1", output="sunny",
                                    name="getWeatherInformation")
    error = message.parts[4]
    assert isinstance(error, ToolResultPart) and error.is_error
    assert error.output == "Location access denied"
    data = from_ui_messages(UI_CASES[3])[0].parts[2]
    assert data == DataPart(name="weather", data=UI_CASES[3][0]["parts"][2]["data"],
                            provider_metadata={"ui_message": {"id": "weather-1"}})


def test_ui_tool_message_is_folded_into_the_part_of_its_call() -> None:
    messages = [Message(role="assistant", id="a1", parts=[
                    ToolCallPart(call_id="c1", name="search", arguments={"q": "x"})]),
                Message(role="tool", id="t1", parts=[ToolResultPart(call_id="c1",
                                                                    output=["hit"])]),
                Message(role="tool", id="t2", parts=[ToolResultPart(call_id="gone",
                                                                    output="late",
                                                                    name="lost")])]
    assert to_ui_messages(messages) == [
        {"id": "a1", "role": "assistant", "parts": [
            {"type": "tool-search", "toolCallId": "c1", "state": "output-available",
             "input": {"q": "x"}, "output": ["hit"]}]},
        {"id": "t2", "role": "assistant", "parts": [
            {"type": "dynamic-tool", "toolName": "lost", "toolCallId": "gone",
             "state": "output-available", "input": None, "output": "late"}]}]


def test_ui_metadata_holds_fsstore_fields_under_its_own_key() -> None:
    message = from_anthropic_message({"id": "msg_1", "role": "assistant", "model": "claude-x",
                                      "content": "Hi", "stop_reason": "end_turn",
                                      "usage": {"input_tokens": 3, "output_tokens": 1}})
    [ui] = to_ui_messages([message])
    assert ui["metadata"]["fsstore"]["model"] == "claude-x"
    assert ui["metadata"]["anthropic_response"] == {"stop_reason": "end_turn"}
    assert from_ui_messages([ui]) == [message]


# --- files --------------------------------------------------------------------------------


def test_data_url_over_the_inline_limit_stays_a_url() -> None:
    big = base64.b64encode(b"x" * (INLINE_FILE_LIMIT + 1)).decode()
    case = [{"role": "user", "content": [{"type": "image_url", "image_url": {
        "url": f"data:image/png;base64,{big}"}}]}]
    [message] = all_stored(from_openai_chat(case))
    part = message.parts[0]
    assert isinstance(part, FilePart) and part.data is None
    assert part.url == f"data:image/png;base64,{big}"
    assert to_openai_chat([message]) == case


@pytest.mark.parametrize("convert", [to_openai_chat, to_anthropic, to_openai_responses,
                                     to_ui_messages])
def test_file_part_holding_a_blob_is_refused_naming_it(convert: Any) -> None:
    blob = {"fsstore.blob": "sha256:" + "a" * 64, "size": 3, "media_type": "image/png"}
    message = Message(role="user", parts=[TextPart(text="see"),
                                          FilePart(media_type="image/png", blob=blob)])
    check_message(message)
    with pytest.raises(InvalidMessage) as caught:
        convert([message])
    assert caught.value.field == "messages[0].parts[1]"


# --- input that is not the format -------------------------------------------------------


@pytest.mark.parametrize("convert, given, field", [
    (from_openai_chat, "not a list", "messages"),
    (from_openai_chat, [{"role": "user", "content": 5}], "messages[0].content"),
    (from_openai_chat, [{"role": "function", "content": "x"}], "messages[0].role"),
    (from_openai_chat, [{"role": "assistant", "tool_calls": [{"id": "c", "function": {
        "arguments": "{}"}}]}], "messages[0].tool_calls[0].function.name"),
    (from_openai_chat, [{"role": "user", "content": [{"type": "input_audio", "input_audio": {
        "data": "%%%", "format": "wav"}}]}], "messages[0].content[0].input_audio.data"),
    (from_openai_chat, [{"role": "tool", "content": "x"}], "messages[0].tool_call_id"),
    (from_anthropic, [{"role": "system", "content": "x"}], "messages[0].role"),
    (from_anthropic, [{"role": "user", "content": [{"type": "image", "source": {
        "type": "base64", "media_type": "image/png", "data": "%%%"}}]}],
     "messages[0].content[0].source.data"),
    (from_anthropic, [{"role": "user", "content": [{"text": "no type"}]}],
     "messages[0].content[0].type"),
    (from_anthropic, [{"role": "assistant", "content": [{"type": "tool_use", "id": "t",
                                                         "input": {}}]}],
     "messages[0].content[0].name"),
    (from_openai_responses, [{"type": "function_call", "name": "f", "arguments": "{}"}],
     "items[0].call_id"),
    (from_openai_responses, [{"role": "user", "content": [{"type": "input_text"}]}],
     "items[0].content[0].text"),
    (from_openai_responses, [{"type": "reasoning", "summary": "no"}], "items[0].summary"),
    (from_ui_messages, [{"id": "m", "role": "user", "parts": [{"type": "tool-x",
                                                               "state": "input-available"}]}],
     "messages[0].parts[0].toolCallId"),
    (from_ui_messages, [{"id": "m", "role": "tool", "parts": []}], "messages[0].role"),
    (from_ui_messages, [{"id": "m", "role": "user", "parts": [], "metadata": {
        "fsstore": {"usage": {"input": "many"}}}}], "messages[0].metadata.fsstore"),
    (from_ui_messages, [{"id": "", "role": "user", "parts": []}], "messages[0].id"),
])
def test_input_that_is_not_the_format_is_refused_naming_the_field(
        convert: Any, given: Any, field: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        convert(given)
    assert caught.value.field == field
    assert isinstance(caught.value, ValueError)


def test_response_that_is_not_one_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidMessage) as caught:
        from_openai_chat_completion({"choices": []})
    assert caught.value.field == "response.choices"
    with pytest.raises(InvalidMessage) as caught:
        from_anthropic_message({"content": [], "usage": {"input_tokens": "3"}})
    assert caught.value.field == "response.usage.input_tokens"
    with pytest.raises(InvalidMessage) as caught:
        from_openai_response({"output": "x"})
    assert caught.value.field == "response.output"


def test_importing_fsstore_does_not_import_the_converters() -> None:
    code = "import sys, fsstore; assert 'fsstore.convert' not in sys.modules"
    env = {**os.environ, "PYTHONPATH": ROOT}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_results_in_an_assistant_message_go_after_it_where_each_format_wants_them() -> None:
    [message] = from_ui_messages([UI_CASES[1][0]])
    chat = to_openai_chat([message])
    assert [m["role"] for m in chat] == ["assistant", "tool", "tool", "tool"]
    assert [c["id"] for c in chat[0]["tool_calls"]] == ["call_1", "call_2", "call_3", "call_4"]
    assert chat[1] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
    _, anthropic = to_anthropic([message])
    assert [m["role"] for m in anthropic] == ["assistant", "user"]
    assert [b["type"] for b in anthropic[0]["content"]] == ["tool_use"] * 4
    assert [b["tool_use_id"] for b in anthropic[1]["content"]] == ["call_1", "call_3", "call_4"]
    assert anthropic[1]["content"][1]["is_error"] is True
    back = from_anthropic(anthropic)
    assert [m.role for m in back] == ["assistant", "tool"]
    assert back[1].tool_results[0].name == "getWeatherInformation"


def test_ui_metadata_that_is_not_an_object_is_kept_as_given() -> None:
    case = [{"id": "m1", "role": "user", "parts": [], "metadata": "from-a-form"}]
    assert to_ui_messages(from_ui_messages(case)) == case


def test_bytes_signature_goes_out_as_base64_text() -> None:
    message = Message(role="assistant", parts=[ReasoningPart(text="t", signature=b"\x00\xff")])
    _, [converted] = to_anthropic([message])
    assert converted["content"] == [{"type": "thinking", "thinking": "t", "signature": "AP8="}]
    [item] = to_openai_responses([message])
    assert item["encrypted_content"] == "AP8="
    assert from_ui_messages(to_ui_messages([message]))[0].parts == message.parts


def test_messages_out_may_be_dicts_of_their_fields_and_are_checked() -> None:
    assert to_openai_chat([{"role": "user", "parts": [{"type": "text", "text": "hi"}]}]) == [
        {"role": "user", "content": "hi"}]
    with pytest.raises(InvalidMessage) as caught:
        to_openai_chat([{"role": "user"}, {"role": "robot", "parts": []}])
    assert caught.value.field == "messages[1].role"


def test_ui_reasoning_signature_of_the_ai_sdk_providers_reaches_anthropic() -> None:
    [message] = from_ui_messages(UI_CASES[3])
    reasoning = message.parts[0]
    assert isinstance(reasoning, ReasoningPart) and reasoning.signature == "ErUBCkYIBxgCIkD..."
    _, [converted] = to_anthropic([message])
    assert converted["content"][0] == {"type": "thinking", "signature": "ErUBCkYIBxgCIkD...",
                                       "thinking": "The user asks about the weather."}
    redacted = [{"id": "m", "role": "assistant", "parts": [{
        "type": "reasoning", "text": "", "providerMetadata": {
            "anthropic": {"redactedData": "EmwKAhgB"}}}]}]
    [message] = from_ui_messages(redacted)
    assert message.parts == [ReasoningPart(text="", signature="EmwKAhgB", redacted=True,
                                           provider_metadata=redacted[0]["parts"][0][
                                               "providerMetadata"])]
    assert to_ui_messages([message]) == redacted
