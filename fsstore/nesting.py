"""How deep msgpack values may nest (docs/FORMAT.md, section 9).

msgspec decodes nested arrays and maps recursively, so a deep enough value raises
``RecursionError``, at a depth that depends on how deep the caller's stack already is
(about 1,000 levels less the caller's). Readers turn that into CorruptionError. Writers
refuse values deeper than MAX_NESTING, far below it, so that what they write reads back
in any reader; snapshot readers check the same bound (a snapshot is read rarely).

The check costs one ``bytes.translate`` per value (C speed): a value cannot nest
deeper than the number of bytes in it that could open an array or a map. Only a
value with more such bytes than the bound is walked, after it was decoded.
"""

from __future__ import annotations

from typing import Any

#: The deepest a frame payload or a snapshot's meta or body may nest arrays and maps
#: (the payload's own array is level 1; an event's data is at level 4).
MAX_NESTING = 128

# msgpack type bytes that open an array or a map: fixmap, fixarray, array 16/32, map 16/32
_CONTAINER_BYTES = bytes(range(0x80, 0xA0)) + b"\xdc\xdd\xde\xdf"


def may_nest_deeper(raw: bytes | memoryview, limit: int = MAX_NESTING) -> bool:
    """Whether the msgpack bytes ``raw`` could nest deeper than ``limit`` (a cheap upper
    bound: False proves they do not)."""
    if len(raw) <= limit:
        return False
    data = raw if isinstance(raw, bytes) else bytes(raw)
    return len(data) - len(data.translate(None, _CONTAINER_BYTES)) > limit


def depth(value: Any, limit: int = MAX_NESTING) -> int:
    """How deep ``value`` (as decoded from msgpack: lists, dicts, tuples as map keys)
    nests arrays and maps, counting up to ``limit + 1`` only. Iterative, so a deep value
    cannot exhaust the stack."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    containers = (list, dict, tuple)
    while stack:
        item, level = stack.pop()
        if type(item) not in containers:
            continue
        if level > deepest:
            deepest = level
            if deepest > limit:
                return deepest
        if type(item) is dict:
            for key, child in item.items():
                if type(child) in containers:
                    stack.append((child, level + 1))
                if type(key) is tuple:
                    stack.append((key, level + 1))
        else:
            for child in item:
                if type(child) in containers:
                    stack.append((child, level + 1))
    return deepest


def too_deep(raw: bytes | memoryview, value: Any, limit: int = MAX_NESTING) -> bool:
    """Whether ``value``, decoded from ``raw``, nests deeper than ``limit``."""
    return may_nest_deeper(raw, limit) and depth(value, limit) > limit
