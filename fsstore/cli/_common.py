"""What the commands share: finding the store, and printing events for people and tools.

Fast start: ``fsstore`` builds its parser from every command module on each run, and git
runs ``fsstore textconv`` once per file, so the modules of this package import only
argparse-light standard modules at their top. fsstore's engine (and through it msgspec,
numpy, zstandard, watchdog) is imported inside the functions that run a command;
tests/test_cli_start.py checks that the quick commands load none of the heavy ones.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..errors import Finding
    from ..log_format import Event
    from ..store import Store


def add_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help: str,
    example: str, description: str | None = None,
) -> argparse.ArgumentParser:
    return commands.add_parser(
        name, help=help, description=description or help,
        epilog=f"example:\n  {example}", formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def store_from(args: argparse.Namespace, explicit: str | None = None) -> Store:
    """The store a command means (see the module docstring of fsstore.cli)."""
    from ..store import find_store, open_store

    path = explicit or args.store
    # --key-file: a keyed chain's key (a file outside the store); else the environment's
    key_file = getattr(args, "key_file", None)
    return open_store(path if path else find_store(), create=False, chain_key=key_file)


#: Nesting deeper than this is printed as ``{"$deep": N}`` (N: the levels cut off).
MAX_PRINT_DEPTH = 100


def report_findings(findings: list[Finding]) -> int:
    """Print each finding, then ``OK`` or ``N problems``; the exit status: 1 on problems."""
    for finding in findings:
        print(finding)
    problems = sum(1 for f in findings if f.level == "problem")
    if problems:
        print(f"{problems} problem{'s' if problems != 1 else ''}")
        return 1
    print("OK")
    return 0


def printable(value: Any, depth: int = 0) -> Any:
    """``value`` as plain JSON can hold it, so that printing it never fails. What JSON
    has no form for is printed in a documented form (README, "The command line"):

    - bytes: ``{"$base64": "..."}``
    - a float that is NaN or infinite: ``{"$float": "nan" | "inf" | "-inf"}``
    - a map with a key that is not a str: ``{"$map": [[key, value], ...]}``
    - a date or time: its ISO 8601 text
    - nesting deeper than 100 levels: ``{"$deep": levels cut off}``
    - anything else: ``{"$repr": "..."}``
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": str(value)}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$base64": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (dict, list, tuple)):
        if depth >= MAX_PRINT_DEPTH:
            return {"$deep": _depth(value)}
        if isinstance(value, dict):
            if all(isinstance(key, str) for key in value):
                return {key: printable(item, depth + 1) for key, item in value.items()}
            return {"$map": [[printable(key, depth + 2), printable(item, depth + 2)]
                             for key, item in value.items()]}
        return [printable(item, depth + 1) for item in value]
    return {"$repr": _short_repr(value)}


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = [*item.keys(), *item.values()]
        if isinstance(item, (list, tuple)):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in item)
    return deepest


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # a hostile __repr__ must not stop a listing
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 200 else text[:197] + "..."


def dumps(value: Any, **options: Any) -> str:
    """JSON text of ``value`` through :func:`printable`: never fails."""
    return json.dumps(printable(value), ensure_ascii=False, allow_nan=False, **options)


def event_json(event: Event) -> str:
    """One event as a JSON line, in the forms of :func:`printable`."""
    return dumps({"seq": event.seq, "ts": event.ts, "turn": event.turn, "kind": event.kind,
                  "data": event.data})


def _time(ts: float, pattern: str) -> str:
    try:
        return datetime.datetime.fromtimestamp(ts).strftime(pattern)
    except (ValueError, OverflowError, OSError, TypeError):
        return str(ts)  # NaN, infinite or out of the platform's range: the number itself


def clock(ts: float) -> str:
    """``HH:MM:SS`` of a timestamp; the number itself when it is no time (NaN, inf)."""
    return _time(ts, "%H:%M:%S")


def when(ts: float) -> str:
    """``YYYY-MM-DD HH:MM`` of a timestamp; the number itself when it is no time."""
    return _time(ts, "%Y-%m-%d %H:%M")


def plain(text: object) -> str:
    """``text`` safe to print on a terminal: control and other non-printing characters
    (an escape sequence, a newline in a title) shown escaped (``\\x1b``, ``\\n``), so
    that what a store holds can neither fake lines of a listing nor drive the terminal."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


def summarize(data: Any, width: int = 100) -> str:
    """A one-line reading of an event: chat messages and tool calls by their usual keys,
    anything else as compact JSON."""
    text: str
    if isinstance(data, dict) and all(isinstance(key, str) for key in data):
        if "role" in data and "content" in data:
            content = data["content"]
            text = f"{_compact(data['role'])}: {_compact(content)}"
        elif "name" in data and ("args" in data or "arguments" in data):
            arguments = data.get("args", data.get("arguments"))
            text = f"{_compact(data['name'])}({_compact(arguments)})"
        elif "output" in data:
            text = f"-> {_compact(data['output'])}"
        else:
            text = _compact(data)
    else:
        text = _compact(data)
    text = plain(" ".join(text.split()))
    return text if len(text) <= width else text[: width - 3] + "..."


def _compact(value: Any) -> str:
    if isinstance(value, str):
        return value
    from ..blobs import BLOB_KEY

    if isinstance(value, dict) and BLOB_KEY in value:
        return (f"[attachment {_compact(value.get('media_type') or '')} "
                f"{_compact(value.get('size'))} B {_compact(value[BLOB_KEY])[7:19]}]")
    return dumps(value, separators=(",", ":"))


def human_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
