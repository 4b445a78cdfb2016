"""What the commands share: finding the store, and printing events for people and tools."""

from __future__ import annotations

import argparse
import base64
import datetime
import json
from typing import Any

from ..blobs import BLOB_KEY
from ..log import Event
from ..store import Store, find_store, open_store


def add_command(
    commands: Any, name: str, help: str, example: str, description: str | None = None
) -> argparse.ArgumentParser:
    return commands.add_parser(
        name, help=help, description=description or help,
        epilog=f"example:\n  {example}", formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def store_from(args: argparse.Namespace, explicit: str | None = None) -> Store:
    """The store a command means (see the module docstring of fsstore.cli)."""
    path = explicit or args.store
    return open_store(path if path else find_store(), create=False)


def json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$base64": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    return repr(value)


def event_json(event: Event) -> str:
    """One event as a JSON line: bytes become ``{"$base64": ...}``."""
    return json.dumps(
        {"seq": event.seq, "ts": event.ts, "turn": event.turn, "kind": event.kind,
         "data": event.data},
        default=json_default, ensure_ascii=False,
    )


def clock(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts).strftime("%H:%M:%S")


def when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def summarize(data: Any, width: int = 100) -> str:
    """A one-line reading of an event: chat messages and tool calls by their usual keys,
    anything else as compact JSON."""
    text: str
    if isinstance(data, dict):
        if "role" in data and "content" in data:
            content = data["content"]
            text = f"{data['role']}: {content if isinstance(content, str) else _compact(content)}"
        elif "name" in data and ("args" in data or "arguments" in data):
            arguments = data.get("args", data.get("arguments"))
            text = f"{data['name']}({_compact(arguments)})"
        elif "output" in data:
            text = f"-> {_compact(data['output'])}"
        else:
            text = _compact(data)
    else:
        text = _compact(data)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _compact(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and BLOB_KEY in value:
        return (f"[attachment {value.get('media_type') or ''} {value.get('size')} B "
                f"{str(value[BLOB_KEY])[7:19]}]")
    return json.dumps(value, default=json_default, ensure_ascii=False, separators=(",", ":"))


def human_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
