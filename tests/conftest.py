from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import IO

import pytest
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(__file__))  # tests import crashsim

import runlength  # noqa: E402

import fsstore  # noqa: E402
from fsstore import clock as clock_module  # noqa: E402


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true",
                     help="run the long torture tests (thousands of crash trials)")


def pytest_configure(config: pytest.Config) -> None:
    runlength.LONG = bool(config.getoption("--long"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--long"):
        return
    skip = pytest.mark.skip(reason="long run: pass --long")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)


#: tests/test_lint.py's mypy run (strict, cold in a fresh checkout: most of half a minute on
#: one core), started when the test is collected: a serial run (-n 0) keeps one core busy, so
#: on a machine with two the check costs the run next to nothing. The test waits for it.
#: Under pytest-xdist every worker collects every test: there the worker that runs the test
#: runs mypy itself, beside the other workers, so that mypy runs once.
_MYPY = pytest.StashKey[tuple[subprocess.Popen[bytes], IO[bytes]]]()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_collection_finish(session: pytest.Session) -> None:
    wanted = any(item.nodeid.endswith("test_lint.py::test_mypy_finds_nothing")
                 and not item.get_closest_marker("skip") for item in session.items)
    if wanted and not session.config.option.collectonly and \
            "PYTEST_XDIST_WORKER" not in os.environ:
        # A file, not a pipe: mypy never blocks on it. Closed by pytest_unconfigure.
        output = tempfile.TemporaryFile()  # noqa: SIM115
        process = subprocess.Popen([sys.executable, "-m", "mypy"], cwd=ROOT, stdout=output,
                                   stderr=subprocess.STDOUT)
        session.config.stash[_MYPY] = (process, output)


def pytest_unconfigure(config: pytest.Config) -> None:
    started = config.stash.get(_MYPY, None)
    if started is None:
        return
    process, output = started
    if process.poll() is None:  # the run stopped early (-x) or skipped the test
        process.kill()
        process.wait()
    output.close()


@pytest.fixture
def mypy_result(request: pytest.FixtureRequest) -> tuple[int, str]:
    """mypy's exit code and output for this checkout (the run started at collection)."""
    started = request.config.stash.get(_MYPY, None)
    if started is None:
        result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True,
                                text=True)
        return result.returncode, result.stdout + result.stderr
    process, output = started
    code = process.wait()
    output.seek(0)
    return code, output.read().decode(errors="replace")


@pytest.fixture
def long_run(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--long"))


class FakeClock:
    """A clock that moves only when a test moves it: ``advance`` instead of a sleep past
    a lease's or a claim's expiry. It starts at the wall time in whole seconds (so whole
    advances add up exactly), since other processes may read what it stamps."""

    def __init__(self) -> None:
        self._now = float(int(time.time()))
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        """Move on ``seconds`` (>= 0); the new time."""
        assert seconds >= 0, "a clock never goes back"
        with self._lock:
            self._now += seconds
            return self._now


@pytest.fixture(autouse=True)
def no_chain_key_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A chain key in the environment of whoever runs the tests would make the stores
    they open keyed (docs/FORMAT.md 3.4): tests that want one set it themselves, and
    none is left behind for the next (a store a module's fixture creates would be keyed)."""
    monkeypatch.delenv("FSSTORE_CHAIN_KEY", raising=False)
    monkeypatch.delenv("FSSTORE_CHAIN_KEY_FILE", raising=False)
    yield
    os.environ.pop("FSSTORE_CHAIN_KEY", None)
    os.environ.pop("FSSTORE_CHAIN_KEY_FILE", None)


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    """Lease and work-claim expiry in this process follow a :class:`FakeClock`."""
    fake = FakeClock()
    previous = clock_module.use(fake)
    try:
        yield fake
    finally:
        clock_module.use(previous)


@pytest.fixture
def store(tmp_path) -> fsstore.Store:
    return fsstore.open_store(tmp_path / "store")


@pytest.fixture
def small_store(tmp_path) -> fsstore.Store:
    """Segments of 4 KiB, so a few dozen events cross several segments."""
    return fsstore.open_store(tmp_path / "store", segment_size=4096)


def tree_snapshot(root) -> dict[str, bytes | None]:
    """Every path under root with its content (None for folders), to prove nothing changed."""
    snapshot: dict[str, bytes | None] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            snapshot[os.path.relpath(os.path.join(folder, name), root)] = None
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                snapshot[os.path.relpath(path, root)] = handle.read()
    return snapshot


#: Any value an event may hold: what msgpack stores and gives back unchanged.
msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False) | st.text() | st.binary(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=16,
)
