"""Converters between fsstore messages and the message formats of model APIs: pure
functions (no network, no SDK), one module per format. ``import fsstore`` does not load
them; ``import fsstore.convert`` does.

Each format has a ``to_`` function (fsstore messages to the format's dicts, as the
format's JSON API takes them) and a ``from_`` function (the format's dicts to fsstore
messages, each passing ``check_message``), plus a function for a whole model response
where the format has one. Input that is not the format raises ``InvalidMessage`` naming
the field path. What each format cannot hold is listed in docs/CONVERTERS.md.

    >>> from fsstore.convert import from_openai_chat, to_anthropic
    >>> messages = from_openai_chat([{"role": "system", "content": "Be brief."},
    ...                              {"role": "user", "content": "Hi"}])
    >>> to_anthropic(messages)
    ('Be brief.', [{'role': 'user', 'content': 'Hi'}])
"""

from __future__ import annotations

from .anthropic import from_anthropic, from_anthropic_message, to_anthropic
from .openai_chat import from_openai_chat, from_openai_chat_completion, to_openai_chat
from .openai_responses import from_openai_response, from_openai_responses, to_openai_responses
from .ui_message import from_ui_messages, to_ui_messages

__all__ = [
    "from_anthropic",
    "from_anthropic_message",
    "from_openai_chat",
    "from_openai_chat_completion",
    "from_openai_response",
    "from_openai_responses",
    "from_ui_messages",
    "to_anthropic",
    "to_openai_chat",
    "to_openai_responses",
    "to_ui_messages",
]
