"""The Python examples of README.md and docs/*.md run as they are written, so that the
documentation cannot drift from the API.

How a file's examples run: every ```python block of one file, in order, in one fresh
interpreter (a subprocess, with this checkout first on PYTHONPATH) whose working folder
is a fresh temporary folder (holding only READER_FILES below), each block executed in the
namespace the blocks before it left. A README reads as one story: later sections use the
store and the session the first example made, as a reader trying them one after another
would, so a later block may use the names of earlier ones; one interpreter per file
keeps that without a marker on every block. A block may ``await`` at its top level (it
then runs in ``asyncio.run``), as the async API's examples do. The first block that
raises fails the test, naming FILE:LINE of its opening fence, with a traceback that
points into the file's own lines; the blocks after it do not run.

Two HTML comments, invisible on a rendered page, say more about the block after them:

- ``<!-- not-run: REASON -->`` before a ```python block: the block is not run (it needs
  a framework, a model or a network). The reason is required.
- ``<!-- output -->`` before a ```text block that follows a ```python block: what that
  block prints, checked line by line; ``...`` in a line stands for any text.

A marker anywhere else is an error, so that none is left behind when a block moves.
"""

from __future__ import annotations

import glob
import json
import os
import pathlib
import re
import subprocess
import sys
from dataclasses import dataclass

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FENCE = re.compile(r"^```\s*([\w-]*)\s*$")
MARKER = re.compile(r"^<!--\s*([\w-]+)\s*(?::(.*?))?\s*-->\s*$")

# Files the examples read as if they were the reader's own.
READER_FILES = {"screen.png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4}

RUNNER = r"""
import ast, asyncio, contextlib, inspect, io, json, sys, traceback
path, blocks, report = json.load(sys.stdin)
namespace = {"__name__": "__main__"}
results = []
for line, code in blocks:
    print("running", line, file=sys.stderr, flush=True)
    out = io.StringIO()
    try:
        # Padded so that the code's line numbers are the file's.
        compiled = compile("\n" * line + code, path, "exec",
                           flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        with contextlib.redirect_stdout(out):
            result = eval(compiled, namespace)
            if inspect.iscoroutine(result):  # the block awaits at its top level
                asyncio.run(result)
    except BaseException as error:
        shown = traceback.format_exception(type(error), error, error.__traceback__.tb_next)
        results.append({"line": line, "stdout": out.getvalue(), "error": "".join(shown)})
        break
    results.append({"line": line, "stdout": out.getvalue()})
# To a file: an example's child processes may write to the stdout this one inherited.
with open(report, "w") as handle:
    json.dump(results, handle)
# Watchers or stores an example left open must not hold the interpreter at exit.
import os
os._exit(0)
"""


class ExampleError(Exception):
    """A marker or fence of a documentation file that the rules above refuse."""


@dataclass
class Block:
    line: int  # of the opening fence, 1-based
    code: str
    not_run: str | None = None  # the reason given
    output: str | None = None  # what the file says the block prints


def python_blocks(path: str, text: str) -> list[Block]:
    """The ```python blocks of ``text`` (the file at ``path``), with their markers."""
    blocks: list[Block] = []
    marker: tuple[str, str | None, int] | None = None  # waiting for its fence
    last_fence = ""  # the language of the last block, while only blank lines follow it
    lines = text.splitlines()
    number = 0
    while number < len(lines):
        line = lines[number]
        number += 1
        found = MARKER.match(line)
        fence = FENCE.match(line)
        if found and found.group(1) in ("not-run", "output"):
            if marker is not None:
                raise ExampleError(f"{path}:{marker[2]}: <!-- {marker[0]} --> is not followed "
                                   "by a fenced block")
            marker = (found.group(1), (found.group(2) or "").strip() or None, number)
            if marker[0] == "not-run" and marker[1] is None:
                raise ExampleError(f"{path}:{number}: <!-- not-run --> needs a reason: "
                                   "<!-- not-run: why the block cannot run -->")
            continue
        if fence is None:
            if line.strip():
                if marker is not None:
                    raise ExampleError(f"{path}:{marker[2]}: <!-- {marker[0]} --> must come "
                                       "right before a fenced block")
                last_fence = ""
            continue
        start, language = number, fence.group(1)
        body = []
        while number < len(lines) and not lines[number].startswith("```"):
            body.append(lines[number])
            number += 1
        if number == len(lines):
            raise ExampleError(f"{path}:{start}: the block is never closed")
        number += 1  # the closing fence
        code = "\n".join(body) + "\n"
        kind, reason, at = marker or (None, None, 0)
        marker = None
        if kind == "not-run" and language != "python":
            raise ExampleError(f"{path}:{at}: <!-- not-run --> is for ```python blocks")
        if kind == "output":
            if language != "text" or last_fence != "python":
                raise ExampleError(f"{path}:{at}: <!-- output --> must be on a ```text block "
                                   "right after a ```python block")
            blocks[-1].output = code
        if language == "python":
            blocks.append(Block(start, code, not_run=reason if kind == "not-run" else None))
        last_fence = language
    if marker is not None:
        raise ExampleError(f"{path}:{marker[2]}: <!-- {marker[0]} --> is not followed by a "
                           "fenced block")
    return blocks


def output_matches(expected: str, actual: str) -> bool:
    """Line by line, trailing spaces aside; ``...`` in an expected line matches any text."""
    want, got = expected.rstrip("\n").split("\n"), actual.rstrip("\n").split("\n")
    if len(want) != len(got):
        return False
    for pattern, line in zip(want, got, strict=True):
        regex = ".*".join(re.escape(part) for part in pattern.rstrip().split("..."))
        if not re.fullmatch(regex, line.rstrip()):
            return False
    return True


def documented_files() -> list[str]:
    paths = [os.path.join(ROOT, "README.md"), *sorted(glob.glob(os.path.join(ROOT, "docs",
                                                                              "*.md")))]
    return [os.path.relpath(p, ROOT) for p in paths
            if "```python" in open(p, encoding="utf-8").read()]


def run_examples(name: str, path: str, tmp_path: pathlib.Path) -> str | None:
    """Run the Python examples of the file at ``path`` (called ``name`` in messages) as
    the module docstring says; what went wrong, or None."""
    with open(path, encoding="utf-8") as handle:
        blocks = python_blocks(name, handle.read())
    folder, report = tmp_path / "examples", tmp_path / "report.json"
    folder.mkdir()
    for file_name, data in READER_FILES.items():
        (folder / file_name).write_bytes(data)
    run = [b for b in blocks if b.not_run is None]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)}
    env.pop("FSSTORE_STORE", None)
    try:
        result = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps(
            [path, [(b.line, b.code) for b in run], str(report)]), cwd=folder, env=env,
            capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as timeout:
        started = re.findall(r"running (\d+)", str(timeout.stderr or ""))
        return f"{name}:{started[-1] if started else '?'}: the example did not finish in 120 s"
    if result.returncode != 0 or not report.exists():
        return f"{name}: the examples' interpreter failed:\n{result.stderr}"
    outcomes = json.loads(report.read_text())
    for block, outcome in zip(run, outcomes, strict=False):  # up to the first failure
        if "error" in outcome:
            return (f"{name}:{block.line}: the example raised:\n{outcome['error']}"
                    f"its output:\n{outcome['stdout']}")
        if block.output is not None and not output_matches(block.output, outcome["stdout"]):
            return (f"{name}:{block.line}: the example printed\n{outcome['stdout']}\n"
                    f"where the file shows\n{block.output}")
    assert len(outcomes) == len(run)
    return None


@pytest.mark.parametrize("name", documented_files())
def test_documented_python_examples_run(name: str, tmp_path: pathlib.Path) -> None:
    failure = run_examples(name, os.path.join(ROOT, name), tmp_path)
    if failure:
        pytest.fail(failure, pytrace=False)


def examples_of(text: str, tmp_path: pathlib.Path) -> str | None:
    path = tmp_path / "X.md"
    path.write_text(text)
    return run_examples("X.md", str(path), tmp_path)


def test_later_blocks_use_what_earlier_ones_made_in_a_fresh_folder(
        tmp_path: pathlib.Path) -> None:
    text = ("```python\nimport os\nfound = os.listdir('.')\nopen('a', 'w').close()\n```\n"
            "prose\n```python\nassert found == ['screen.png'], found\n"
            "assert os.path.exists('a')\n```\n")
    assert examples_of(text, tmp_path) is None


def test_failing_example_is_named_by_its_line_and_later_ones_do_not_run(
        tmp_path: pathlib.Path) -> None:
    text = ("```python\nx = 1\n```\n\n```python\nx = 2\nraise KeyError('boom')\n```\n"
            "```python\nraise SystemExit('never')\n```\n")
    failure = examples_of(text, tmp_path)
    assert failure is not None and failure.startswith("X.md:5: the example raised")
    assert 'X.md", line 7' in failure and "raise KeyError('boom')" in failure
    assert "never" not in failure


def test_top_level_await_runs_and_not_run_blocks_do_not(tmp_path: pathlib.Path) -> None:
    text = ("```python\nimport asyncio\nawait asyncio.sleep(0)\nprint('awaited')\n```\n"
            "<!-- output -->\n```text\nawaited\n```\n"
            "<!-- not-run: shows a failure -->\n```python\nraise SystemExit(1)\n```\n")
    assert examples_of(text, tmp_path) is None


def test_output_that_differs_fails(tmp_path: pathlib.Path) -> None:
    text = "```python\nprint('one')\n```\n<!-- output -->\n```text\ntwo\n```\n"
    failure = examples_of(text, tmp_path)
    assert failure is not None and failure.startswith("X.md:1: the example printed\none")


# --- the rules of the markers ------------------------------------------------------------

def test_not_run_block_is_skipped_with_its_reason() -> None:
    text = "intro\n\n<!-- not-run: needs LangGraph -->\n```python\nimport langgraph\n```\n"
    [block] = python_blocks("X.md", text)
    assert (block.line, block.not_run, block.code) == (4, "needs LangGraph", "import langgraph\n")


def test_not_run_marker_without_a_reason_is_refused() -> None:
    with pytest.raises(ExampleError, match=r"X.md:1: .*needs a reason"):
        python_blocks("X.md", "<!-- not-run -->\n```python\npass\n```\n")
    with pytest.raises(ExampleError, match="needs a reason"):
        python_blocks("X.md", "<!-- not-run:   -->\n```python\npass\n```\n")


def test_marker_not_before_a_block_is_refused() -> None:
    with pytest.raises(ExampleError, match=r"X.md:1: .*right before"):
        python_blocks("X.md", "<!-- not-run: why -->\nprose\n```python\npass\n```\n")
    with pytest.raises(ExampleError, match="not followed"):
        python_blocks("X.md", "```python\npass\n```\n<!-- not-run: why -->\n")
    with pytest.raises(ExampleError, match="for ```python blocks"):
        python_blocks("X.md", "<!-- not-run: why -->\n```sh\nls\n```\n")


def test_output_block_belongs_to_the_python_block_before_it() -> None:
    text = "```python\nprint(1)\n```\n\n<!-- output -->\n```text\n1\n```\n"
    [block] = python_blocks("X.md", text)
    assert block.output == "1\n"
    with pytest.raises(ExampleError, match="right after a ```python block"):
        python_blocks("X.md", "```python\nprint(1)\n```\nprose\n<!-- output -->\n```text\n1\n```\n")


def test_output_matches_line_by_line_with_ellipses() -> None:
    assert output_matches("1 ... x\n[...]\n", "1 anything x\n['a', 'b']\n")
    assert not output_matches("1 ... x\n", "1 anything y\n")
    assert not output_matches("1\n", "1\n2\n")
