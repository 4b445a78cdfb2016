"""How fast Claude Code and Codex transcripts import (``fsstore import claude-code``,
``fsstore import codex``), and how big the store is beside the transcripts.

    python3 tools/bench.py --transcripts-only           # 200,000 lines of each tool
    python3 tools/bench.py --transcripts-only --quick   # 20,000 lines of each

The transcripts are the fixtures' (fixtures/transcripts/) whole lines, repeated with
their ids renamed in each copy, over sessions of 5,000 lines: a long transcript's mix
of prompts, split assistant lines, tool calls, tool results (one of 25 KiB, to a blob),
images, compactions and raw records. Timed: the first import (every line mapped,
written and its chunk recorded), a re-run with nothing new (a stat per file), and a
re-run after every transcript grew by 1% (the prefix hashed, the new lines appended).
A program, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import os
import time

from bench import row  # type: ignore[import-not-found]

import fsstore
from fsstore.transcripts import import_source

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(HERE, "fixtures", "transcripts")
SESSION_LINES = 5_000
# The ids of the fixtures' lines, renamed in each copy so that every copy is new.
_RENAME = {"claude-code": ('"msg_', '"toolu_', '"u-0', '"n-0', '"req_', "module_"),
           "codex": ('"call_', '"rs_', '"msg_')}


def _whole_lines(path: str) -> list[str]:
    """The fixture's lines that parse (its malformed and torn lines left out)."""
    import json
    lines = []
    with open(path, encoding="utf-8") as file:
        for line in file:
            if not line.endswith("\n"):
                continue
            try:
                json.loads(line)
            except ValueError:
                continue
            lines.append(line)
    return lines


def _template(tool: str) -> list[str]:
    folder = os.path.join(FIXTURES, tool)
    lines: list[str] = []
    for path in sorted(_files(folder)):
        if tool == "codex" and "019a2d7a" not in path:
            continue  # the 0.46 rollout only: one shape of first line for every copy
        if "c5d6e7f8" in path:
            continue  # in-file sidechains (old versions): a second session of each file
        if "agent-" not in os.path.basename(path):
            lines.extend(line for line in _whole_lines(path) if '"session_meta"' not in line)
    return lines


def _files(folder: str) -> list[str]:
    return [os.path.join(where, name) for where, _dirs, names in os.walk(folder)
            for name in names if name.endswith(".jsonl")]


def _copy(lines: list[str], tool: str, number: int) -> list[str]:
    out = []
    for line in lines:
        for token in _RENAME[tool]:
            line = line.replace(token, f"{token}{number}x")
        out.append(line)
    return out


def write_transcripts(folder: str, tool: str, total: int) -> int:
    """Transcripts of ``total`` lines in all, in sessions of SESSION_LINES; their size."""
    template = _template(tool)
    size = 0
    for session in range(max(1, total // SESSION_LINES)):
        lines: list[str] = []
        copy = 0
        while len(lines) < SESSION_LINES:
            lines.extend(_copy(template, tool, copy))
            copy += 1
        name = (f"{session:08d}-0000-4000-8000-000000000000.jsonl" if tool == "claude-code"
                else f"rollout-2025-10-29T00-00-00-{session:08d}-0000-4000-8000-"
                     "000000000000.jsonl")
        sub = os.path.join(folder, "-home-bench-proj") if tool == "claude-code" else \
            os.path.join(folder, "2025", "10", "29")
        os.makedirs(sub, exist_ok=True)
        if tool == "codex":  # each rollout names itself on its first line
            lines.insert(0, '{"timestamp":"2025-10-29T00:00:00Z","type":"session_meta",'
                         f'"payload":{{"id":"{session:08d}-0000-4000-8000-000000000000",'
                         '"cwd":"/home/bench/proj","cli_version":"0.46.0"}}\n')
        data = "".join(lines[:SESSION_LINES])
        with open(os.path.join(sub, name), "w", encoding="utf-8") as file:
            file.write(data)
        size += len(data.encode())
    return size


def _grow(folder: str, tool: str) -> int:
    """Every transcript grows by 1% of its lines; the lines added."""
    template = _template(tool)
    added = 0
    for path in _files(folder):
        more = _copy(template, tool, 10_000)[:SESSION_LINES // 100]
        with open(path, "a", encoding="utf-8") as file:
            file.writelines(more)
        added += len(more)
    return added


def folder_bytes(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(where, name))
               for where, _dirs, names in os.walk(folder) for name in names)


def transcript_rows(root: str, quick: bool) -> None:
    total = 20_000 if quick else 200_000
    print(f"\nTranscript import ({total:,} lines of each tool, sessions of "
          f"{SESSION_LINES:,} lines)")
    for tool in ("claude-code", "codex"):
        folder = os.path.join(root, f"transcripts-{tool}")
        size = write_transcripts(folder, tool, total)
        store = fsstore.open_store(os.path.join(root, f"store-{tool}"))
        start = time.perf_counter()
        report = import_source(store, tool, folder)
        seconds = time.perf_counter() - start
        lines = sum(f.lines for f in report.files)
        assert lines == total and not any(f.action == "failed" for f in report.files)
        row(f"{tool}: first import", f"{lines / seconds:,.0f} lines/s",
            f"{size / seconds / 1e6:.1f} MB/s, {report.messages:,} messages in "
            f"{seconds:.2f} s")
        stored = folder_bytes(store.path)
        row(f"{tool}: store size / transcripts size", f"{stored / size:.2f}x",
            f"{stored / 1e6:.1f} MB for {size / 1e6:.1f} MB")
        start = time.perf_counter()
        again = import_source(store, tool, folder)
        seconds = time.perf_counter() - start
        assert {f.action for f in again.files} == {"unchanged"}
        row(f"{tool}: re-run, nothing new", f"{seconds * 1e3:.1f} ms",
            f"{len(again.files)} transcripts")
        added = _grow(folder, tool)
        start = time.perf_counter()
        grown = import_source(store, tool, folder)
        seconds = time.perf_counter() - start
        assert sum(f.lines for f in grown.files) == added
        row(f"{tool}: re-run after 1% growth", f"{seconds * 1e3:.1f} ms",
            f"{added:,} new lines; each transcript's prefix hashed")
