from __future__ import annotations

import os
import shutil
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
    if _controller_runs_lint(config):
        _mypy_in_the_background(config)


#: The test files that take longest (most of a minute to ten seconds of one core each),
#: longest first. Under pytest-xdist they are handed out first (--dist loadfile gives each
#: worker whole files in the order collected): started last, one of them kept one worker
#: busy long after the other had finished.
LONGEST_FILES = ("test_crash.py", "test_fuzz.py", "test_maintenance_kill.py",
                 "test_messages_damage.py", "test_log.py", "test_integration_agents.py",
                 "test_vectors.py", "test_vector_files.py", "test_readme.py",
                 "test_stats_cache.py", "test_watch.py", "test_retention.py",
                 "test_parquet.py", "test_messages_abuse.py", "test_work.py",
                 "test_vector_machine.py", "test_copies_during_writes.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "PYTEST_XDIST_WORKER" in os.environ:
        first = {name: rank for rank, name in enumerate(LONGEST_FILES)}
        items.sort(key=lambda item: first.get(item.path.name, len(first)))  # stable
    if config.getoption("--long"):
        return
    skip = pytest.mark.skip(reason="long run: pass --long")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)


#: tests/test_lint.py's mypy run (strict, cold in a fresh checkout: most of a minute on one
#: core), started early and in the background, and the test waits for it: a serial run (-n 0)
#: starts it when the test is collected; under pytest-xdist the controller (idle while the
#: workers run the tests) starts it as it is configured, before the workers exist, and they
#: find its result through FSSTORE_TEST_MYPY (a folder: ``output``, then ``code``). Run at
#: the test instead, in whichever worker got test_lint.py, it was the last minute of the run.
_MYPY = pytest.StashKey[tuple[subprocess.Popen[bytes], IO[bytes]]]()
_MYPY_DIR = pytest.StashKey[tuple[str, subprocess.Popen[bytes]]]()
MYPY_ENV = "FSSTORE_TEST_MYPY"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _start_mypy(output: IO[bytes]) -> subprocess.Popen[bytes]:
    # A file, not a pipe: mypy never blocks on it.
    return subprocess.Popen([sys.executable, "-m", "mypy"], cwd=ROOT, stdout=output,
                            stderr=subprocess.STDOUT)


def _controller_runs_lint(config: pytest.Config) -> bool:
    """Whether this is pytest-xdist's controller, in a run that collects test_lint.py's
    mypy test as far as the command line tells (no -k, no -m: then a worker runs it)."""
    if "PYTEST_XDIST_WORKER" in os.environ or not getattr(config.option, "numprocesses", 0):
        return False
    if config.option.keyword or config.option.markexpr or config.option.collectonly:
        return False
    lint = os.path.join(ROOT, "tests", "test_lint.py")
    for arg in config.args or [os.path.join(ROOT, "tests")]:
        path = os.path.abspath(os.path.join(str(config.invocation_params.dir),
                                            arg.split("::")[0]))
        if path == lint or (os.path.isdir(path) and lint.startswith(path + os.sep)):
            return True
    return False


def _mypy_in_the_background(config: pytest.Config) -> None:
    folder = tempfile.mkdtemp(prefix="fsstore-test-mypy-")
    output = open(os.path.join(folder, "output"), "wb")  # noqa: SIM115 (the thread closes it)
    process = _start_mypy(output)

    def wait() -> None:
        code = process.wait()
        output.close()
        with open(os.path.join(folder, "code.new"), "w") as handle:
            handle.write(str(code))
        os.replace(os.path.join(folder, "code.new"), os.path.join(folder, "code"))

    threading.Thread(target=wait, daemon=True).start()
    config.stash[_MYPY_DIR] = (folder, process)
    os.environ[MYPY_ENV] = folder  # the workers, started after this, inherit it


def pytest_collection_finish(session: pytest.Session) -> None:
    wanted = any(item.nodeid.endswith("test_lint.py::test_mypy_finds_nothing")
                 and not item.get_closest_marker("skip") for item in session.items)
    if wanted and not session.config.option.collectonly and \
            "PYTEST_XDIST_WORKER" not in os.environ:
        output = tempfile.TemporaryFile()  # noqa: SIM115 (closed by pytest_unconfigure)
        session.config.stash[_MYPY] = (_start_mypy(output), output)


def pytest_unconfigure(config: pytest.Config) -> None:
    started = config.stash.get(_MYPY, None)
    if started is not None:
        process, output = started
        if process.poll() is None:  # the run stopped early (-x) or skipped the test
            process.kill()
            process.wait()
        output.close()
    background = config.stash.get(_MYPY_DIR, None)
    if background is not None:
        folder, process = background
        if process.poll() is None:
            process.kill()
            process.wait()
        os.environ.pop(MYPY_ENV, None)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def mypy_result(request: pytest.FixtureRequest) -> tuple[int, str]:
    """mypy's exit code and output for this checkout (from the run started early)."""
    folder = os.environ.get(MYPY_ENV)
    if folder is not None:  # started by the xdist controller
        code_file = os.path.join(folder, "code")
        deadline = time.monotonic() + 900
        while not os.path.exists(code_file):
            assert time.monotonic() < deadline, "the controller's mypy run did not finish"
            time.sleep(0.2)
        with open(code_file) as handle:
            code = int(handle.read())
        with open(os.path.join(folder, "output"), "rb") as handle:
            return code, handle.read().decode(errors="replace")
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
