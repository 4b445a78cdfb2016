"""Hypothesis strategies of fsstore conversations restricted to what one format holds
(docs/CONVERTERS.md says what each format cannot hold): converted out to the format and
back, such a conversation must come back equal."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from fsstore.message_types import (
    CostInfo,
    DataPart,
    FilePart,
    Message,
    MessageMetadata,
    ReasoningPart,
    TextPart,
    TokenUsage,
    ToolCallPart,
    ToolResultPart,
)

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
ident = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FF,
                                       blacklist_categories=("Cc",)), min_size=1,
                max_size=8)
json_scalar = (st.none() | st.booleans() | st.integers(-2**53, 2**53)
               | st.floats(allow_nan=False, allow_infinity=False) | text)
json_value = st.recursive(json_scalar, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(text, inner, max_size=3), max_leaves=6)
json_object = st.dictionaries(text, json_value, max_size=3)
small_bytes = st.binary(max_size=24)
http_url = st.builds(lambda path: f"https://example.com/{path}",
                     st.text(alphabet="abc123/", max_size=8))

texts = st.builds(TextPart, text=text)
image_data = st.builds(lambda media, data: FilePart(media_type=media, data=data),
                       st.sampled_from(["image/png", "image/jpeg", "image/webp"]), small_bytes)
# Formats give no media type with an image URL: it comes back as image/*.
image_url = st.builds(lambda url: FilePart(media_type="image/*", url=url), http_url)


def documents(media: list[str], names: st.SearchStrategy[str | None]) -> st.SearchStrategy[
        FilePart]:
    return st.builds(lambda m, data, name: FilePart(media_type=m, data=data, name=name),
                     st.sampled_from(media), small_bytes, names)


class Calls:
    """The tool calls drawn so far, so that results name their calls as from_ does."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def call(self, draw: st.DrawFn, arguments: st.SearchStrategy[Any] = json_value
             ) -> ToolCallPart:
        call_id = f"call_{len(self.names)}_{draw(ident)}"
        part = ToolCallPart(call_id=call_id, name=draw(ident), arguments=draw(arguments))
        self.names[call_id] = part.name
        return part

    def result(self, draw: st.DrawFn, output: st.SearchStrategy[Any] = text,
               errors: bool = False) -> ToolResultPart:
        known = sorted(self.names)
        if known and draw(st.booleans()):
            call_id = draw(st.sampled_from(known))
        else:
            call_id = f"elsewhere_{draw(ident)}"  # a call not in the list: no name
        return ToolResultPart(call_id=call_id, output=draw(output),
                              is_error=draw(st.booleans()) if errors else False,
                              name=self.names.get(call_id))


def conversation(message: Callable[[st.DrawFn, Calls, str], Message],
                 roles: list[str], repeats: bool = True) -> st.SearchStrategy[list[Message]]:
    @st.composite
    def build(draw: st.DrawFn) -> list[Message]:
        calls = Calls()
        drawn = draw(st.lists(st.sampled_from(roles), max_size=6))
        if not repeats:  # the format joins two messages of these roles in a row
            drawn = [r for i, r in enumerate(drawn) if i == 0 or r != drawn[i - 1]
                     or r not in ("assistant", "tool")]
        return [message(draw, calls, role) for role in drawn]
    return build()


# --- OpenAI Chat Completions ------------------------------------------------------------

def _chat_message(draw: st.DrawFn, calls: Calls, role: str) -> Message:
    if role == "system":
        developer = draw(st.booleans())
        return Message(role="system", parts=draw(st.lists(texts, max_size=3)),
                       metadata=MessageMetadata(extra={"openai_chat": {"role": "developer"}}
                                                if developer else {}))
    if role == "user":
        parts = st.one_of(texts, image_data, image_url,
                          documents(["audio/wav", "audio/mpeg"], st.none()),
                          documents(["application/pdf", "text/csv"], st.none() | ident))
        return Message(role="user", parts=draw(st.lists(parts, max_size=3)))
    if role == "assistant":
        parts: list[Any] = draw(st.lists(texts, max_size=2))
        if draw(st.booleans()):
            parts.append(TextPart(text=draw(text), provider_metadata={
                "openai_chat": {"refusal": True}}))
        parts += [calls.call(draw) for _ in range(draw(st.integers(0, 2)))]
        return Message(role="assistant", parts=parts)
    return Message(role="tool", parts=[calls.result(draw)])


chat_conversations = conversation(_chat_message, ["system", "user", "assistant", "tool"])


# --- Anthropic Messages -----------------------------------------------------------------

def _anthropic_message(draw: st.DrawFn, calls: Calls, role: str) -> Message:
    if role == "user":
        parts = st.one_of(texts, image_data, image_url,
                          documents(["application/pdf", "text/plain", "audio/wav"],
                                    st.none() | ident),
                          st.builds(lambda url, name: FilePart(media_type="application/pdf",
                                                               url=url, name=name),
                                    http_url, st.none() | ident))
        return Message(role="user", parts=draw(st.lists(parts, max_size=3)))
    if role == "assistant":
        reasoning = st.builds(ReasoningPart, text=text, signature=st.none() | text) | \
            st.builds(lambda s: ReasoningPart(text="", signature=s, redacted=True), text)
        return Message(role="assistant", parts=[
            calls.call(draw, json_object) if kind == "call" else draw(kind)
            for kind in draw(st.lists(st.sampled_from([texts, reasoning, "call"]),
                                      max_size=4))])
    blocks = st.lists(st.builds(lambda t: {"type": "text", "text": t}, text), max_size=2)
    parts = [calls.result(draw, st.none() | text | blocks, errors=True)
             for _ in range(draw(st.integers(1, 3)))]
    return Message(role="tool", parts=parts + draw(st.lists(texts, max_size=1)))


@st.composite
def anthropic_conversations(draw: st.DrawFn) -> list[Message]:
    system = draw(st.lists(texts, min_size=1, max_size=2) | st.none())
    rest = draw(conversation(_anthropic_message, ["user", "assistant", "tool"]))
    return ([Message(role="system", parts=system)] if system else []) + rest


# --- OpenAI Responses -------------------------------------------------------------------

def _responses_message(draw: st.DrawFn, calls: Calls, role: str) -> Message:
    if role in ("system", "user"):
        parts = st.one_of(texts, image_data, image_url,
                          documents(["application/pdf", "text/csv"], st.none() | ident))
        return Message(role=role, parts=draw(st.lists(parts, max_size=3)))  # type: ignore
    if role == "assistant":
        reasoning = st.builds(ReasoningPart, text=text, signature=st.none() | text)
        return Message(role="assistant", parts=[
            calls.call(draw) if kind == "call" else draw(kind)
            for kind in draw(st.lists(st.sampled_from([texts, reasoning, "call"]),
                                      min_size=1, max_size=4))])
    return Message(role="tool", parts=[calls.result(draw)
                                       for _ in range(draw(st.integers(1, 3)))])


responses_conversations = conversation(_responses_message,
                                       ["system", "user", "assistant", "tool"], repeats=False)


# --- AI SDK UIMessage -------------------------------------------------------------------

provider_metadata = st.dictionaries(
    ident.filter(lambda key: key not in ("ui_message", "fsstore")), json_object, max_size=2)
metadata = st.builds(
    MessageMetadata, model=st.none() | text, provider=st.none() | text,
    finish_reason=st.none() | st.sampled_from(["stop", "length", "tool_calls",
                                               "content_filter", "error", "other"]),
    usage=st.none() | st.builds(TokenUsage, input=st.integers(0, 10**6),
                                output=st.integers(0, 10**6),
                                cached_input=st.integers(0, 10**6),
                                reasoning=st.integers(0, 10**6)),
    cost=st.none() | st.builds(CostInfo, amount=st.floats(0, 100), currency=st.just("USD")),
    latency=st.none() | st.floats(0, 100),
    extra=st.dictionaries(ident.filter(lambda key: key not in ("ui_message", "fsstore")),
                          json_value, max_size=2))


def _ui_message(draw: st.DrawFn, calls: Calls, role: str) -> Message:
    one = st.one_of(
        st.builds(TextPart, text=text, provider_metadata=provider_metadata),
        st.builds(ReasoningPart, text=text, signature=st.none() | text | small_bytes,
                  redacted=st.booleans(), provider_metadata=provider_metadata),
        st.builds(lambda media, data, name, pm: FilePart(media_type=media, data=data,
                                                         name=name, provider_metadata=pm),
                  st.sampled_from(["image/png", "application/pdf"]), small_bytes,
                  st.none() | text, provider_metadata),
        st.builds(lambda url, pm: FilePart(media_type="text/html", url=url,
                                           provider_metadata=pm), http_url, provider_metadata),
        st.builds(DataPart, name=text.filter(lambda n: not n.startswith("ui_message.")),
                  data=json_value),
        st.just("tool"))
    parts: list[Any] = []
    for kind in draw(st.lists(one, max_size=4)):
        if kind != "tool":
            parts.append(kind)
            continue
        call = calls.call(draw)
        call.provider_metadata = draw(provider_metadata)
        parts.append(call)
        if draw(st.booleans()):
            error = draw(st.booleans())
            parts.append(ToolResultPart(call_id=call.call_id, name=call.name, is_error=error,
                                        output=draw(text if error else json_value),
                                        provider_metadata=draw(provider_metadata)))
    return Message(role=role, id=draw(ident), parts=parts,  # type: ignore[arg-type]
                   metadata=draw(metadata))


ui_conversations = conversation(_ui_message, ["system", "user", "assistant"])
