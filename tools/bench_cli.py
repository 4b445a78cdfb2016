"""How long the commands git and shell loops run once per file take to start and finish:
``fsstore --help``, ``fsstore textconv SEGMENT``, ``fsstore cat SESSION`` and ``fsstore ls``
of a small store, next to ``python -c pass`` (the floor: the interpreter's own start) and
``python -c "import fsstore"``.

    python3 tools/bench.py --cli-only           # the median of 30 starts of each
    python3 tools/bench.py --cli-only --quick   # of 10

Each is a new process (``python -m fsstore ...``: an installed ``fsstore`` script runs the
same code; a pyenv shim in front of it adds a shell's start of its own), the commands
taken in turn so that a busy moment of the machine falls on all of them alike. Measured
twice: with fsstore's bytecode cached (``__pycache__`` written first, as an installed
package has it), and without (a copy of the package with no ``__pycache__``, run with
PYTHONDONTWRITEBYTECODE=1, as a source checkout is under that setting: every start
compiles fsstore's modules again). The standard library and the other dependencies keep
their caches in both. Wall time, median, in ms. A program, not a test: nothing here
asserts a time.
"""

from __future__ import annotations

import compileall
import os
import shutil
import statistics
import subprocess
import sys
import time

from bench import ratio, row  # type: ignore[import-not-found]

import fsstore


def small_store(root: str) -> tuple[str, str, str]:
    """A store of one short session (a finished turn of messages and tool events, a state
    key): the store's path, the session's id and the path of its first segment."""
    path = os.path.join(root, "cli-store")
    store = fsstore.open_store(path)
    with store.create_session("s1", title="a short agent run") as session:
        for turn in range(3):
            session.append({"role": "user", "content": f"step {turn}, please"}, kind="message")
            session.append({"name": "grep", "args": {"pattern": "TODO"}}, kind="tool_call")
            session.append({"output": "3 matches"}, kind="tool_result")
            session.append({"role": "assistant", "content": "done"}, kind="message")
            session.set_state("turns", turn + 1)
            session.finish_turn()
    log = os.path.join(path, "sessions", "s1", "log")
    segment = sorted(name for name in os.listdir(log) if name.endswith(".fslog"))[0]
    return path, "s1", os.path.join(log, segment)


def commands(store: str, session: str, segment: str) -> list[tuple[str, list[str]]]:
    """(label, arguments after the interpreter) of each process measured."""
    return [
        ("python -c pass (the floor)", ["-c", "pass"]),
        ("python -c 'import fsstore'", ["-c", "import fsstore"]),
        ("fsstore --help", ["-m", "fsstore", "--help"]),
        ("fsstore textconv SEGMENT", ["-m", "fsstore", "textconv", segment]),
        ("fsstore cat SESSION", ["-m", "fsstore", "--store", store, "cat", session]),
        ("fsstore ls (1 session)", ["-m", "fsstore", "--store", store, "ls"]),
    ]


def start_times(argvs: list[list[str]], env: dict[str, str], cwd: str,
                repeats: int) -> list[float]:
    """The median wall time, in ms, of ``repeats`` runs of each command line, in turn."""
    samples: list[list[float]] = [[] for _ in argvs]
    for _ in range(repeats):
        for index, argv in enumerate(argvs):
            start = time.perf_counter()
            subprocess.run(argv, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
            samples[index].append((time.perf_counter() - start) * 1000)
    return [statistics.median(found) for found in samples]


def package_copy(root: str) -> str:
    """A copy of the fsstore package without bytecode caches; the folder holding it."""
    folder = os.path.join(root, "cli-uncached")
    source = os.path.dirname(os.path.abspath(fsstore.__file__))
    shutil.copytree(source, os.path.join(folder, "fsstore"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def cli_rows(root: str, quick: bool) -> None:
    repeats = 10 if quick else 30
    store, session, segment = small_store(root)
    measured = commands(store, session, segment)
    argvs = [argv for _label, argv in measured]
    package = os.path.dirname(os.path.dirname(os.path.abspath(fsstore.__file__)))
    compileall.compile_dir(os.path.join(package, "fsstore"), quiet=1)  # as installed
    cached_env = {**os.environ, "PYTHONPATH": package}
    cached_env.pop("PYTHONDONTWRITEBYTECODE", None)
    cached_env.pop("FSSTORE_STORE", None)
    uncached_env = {**cached_env, "PYTHONPATH": package_copy(root),
                    "PYTHONDONTWRITEBYTECODE": "1"}
    here = [[sys.executable, *argv] for argv in argvs]
    cached = start_times(here, cached_env, root, repeats)
    uncached = start_times(here, uncached_env, root, repeats)
    print(f"\nCommand line start (a new process each; median of {repeats}, wall time; "
          "ms with fsstore's bytecode cached, and without)")
    floor = cached[0]
    for (label, _argv), with_cache, without in zip(measured, cached, uncached, strict=True):
        row(label, f"{with_cache:.1f} ms", ratio(with_cache, floor, "the floor"),
            f"{without:.1f} ms without bytecode caches")
    installed_rows(root, measured, repeats)


def installed_rows(root: str, measured: list[tuple[str, list[str]]], repeats: int) -> None:
    """The same commands as a user runs them: this checkout installed by pip (``pip
    install .``, as the README's quick start does) into a new venv holding only fsstore's
    runtime dependencies, run through its ``fsstore`` console script. The rows above run
    in this Python, whose site-packages may add start costs of their own (``.pth`` hooks,
    the test extras' typing_extensions, which msgspec imports when it is there)."""
    venv = os.path.join(root, "cli-venv")
    python = os.path.join(venv, "bin", "python")
    package = os.path.dirname(os.path.dirname(os.path.abspath(fsstore.__file__)))
    made = subprocess.run([sys.executable, "-m", "venv", venv], capture_output=True)
    if made.returncode == 0:
        made = subprocess.run([python, "-m", "pip", "install", "-q", package],
                              capture_output=True)
    if made.returncode != 0:
        print(f"  (installed rows left out: no venv with fsstore: "
              f"{made.stderr.decode(errors='replace').strip()[-200:]})")
        return
    script = os.path.join(venv, "bin", "fsstore")
    argvs = [[script, *argv[2:]] if argv[:2] == ["-m", "fsstore"] else [python, *argv]
             for _label, argv in measured]
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "FSSTORE_STORE")}
    start_times(argvs, env, root, 1)  # the venv's first starts write its bytecode caches
    times = start_times(argvs, env, root, repeats)
    print(f"\nThe same, installed by pip into a new venv with only fsstore's runtime "
          f"dependencies, through its fsstore script (median of {repeats})")
    for (label, _argv), found in zip(measured, times, strict=True):
        row(label, f"{found:.1f} ms", ratio(found, times[0], "the floor"))
