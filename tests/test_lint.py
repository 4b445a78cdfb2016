"""The one lint entry point: ruff over the code and tests, mypy (strict) over the package."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ruff_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "fsstore", "tests", "tools"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_nothing(mypy_result):
    # Run by conftest.py, in the background from the moment this test is collected.
    code, output = mypy_result
    assert code == 0, output


MAX_MODULE_LINES = 1000


def test_every_module_of_the_package_stays_under_a_thousand_lines():
    too_long = []
    for folder, _dirs, files in os.walk(os.path.join(ROOT, "fsstore")):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            with open(path, encoding="utf-8") as file:
                count = sum(1 for _ in file)
            if count > MAX_MODULE_LINES:
                too_long.append(f"{os.path.relpath(path, ROOT)}: {count} lines")
    assert not too_long, "split these along their seams: " + ", ".join(too_long)
