"""Child processes for the multi-process tests: one way to start them (with this checkout
on PYTHONPATH), wait for their ready line, pause or kill -9 them, and collect what they
printed, with a timeout on every wait and the child always reaped.

A child is a script (``Child.script``) or a function of a test module (``Child.function``,
run as ``module.function(*args)`` with string arguments). It says it is ready by printing
a line (``READY`` by convention) and flushing. Lines a test relies on end with ``END``
(see :func:`run_and_kill`): a kill -9 can cut the last line short, and only whole lines
were acknowledged.

Output is pumped by a thread per stream into memory, so a child never blocks on a full
pipe and every read can time out: a child that hangs fails its test with what it
printed, instead of hanging the run.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import IO, Any

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)

#: How long a test waits for a child's line or exit before it fails (seconds). Generous:
#: the suite runs on busy machines; a healthy child answers in well under a second.
TIMEOUT = 120.0


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child: this checkout (and the tests folder, for function
    children) first on PYTHONPATH, then whatever the parent had."""
    path = [ROOT, TESTS, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(path), **extra)


_CALL = "import importlib, sys; " \
        "getattr(importlib.import_module(sys.argv[1]), sys.argv[2])(*sys.argv[3:])"


class ChildFailed(AssertionError):
    """A child did not print what the test waited for (it exited, or timed out)."""


class Child:
    """A running child process; use it as a context manager so it is always reaped."""

    def __init__(self, argv: list[str], *, stdin: bool = False,
                 env: dict[str, str] | None = None, name: str | None = None) -> None:
        self.argv = argv
        self.name = name or " ".join(argv)
        self.process = subprocess.Popen(
            argv, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=child_env() if env is None else env)
        self.lines: list[str] = []  # every stdout line read so far, without its newline
        self._stdout: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str | None] = []
        assert self.process.stdout is not None and self.process.stderr is not None
        self._pumps = [
            threading.Thread(target=self._pump, args=(self.process.stdout, self._stdout.put),
                             daemon=True),
            threading.Thread(target=self._pump, args=(self.process.stderr,
                                                      self._stderr.append), daemon=True),
        ]
        for pump in self._pumps:
            pump.start()
        self._eof = False

    @classmethod
    def script(cls, source: str, *args: object, stdin: bool = False) -> Child:
        """Run ``source`` (a Python program) with ``args`` as its sys.argv[1:]."""
        first = next((line for line in source.splitlines() if line.strip()), "")
        return cls([sys.executable, "-c", source, *map(str, args)], stdin=stdin,
                   name=f"script {first.strip()[:60]!r} {' '.join(map(str, args))}")

    @classmethod
    def function(cls, target: Callable[..., object], *args: object,
                 stdin: bool = False) -> Child:
        """Run ``target(*args)`` (a module-level function; args become strings)."""
        module = target.__module__
        if module == "__main__" or "." in target.__qualname__:
            raise ValueError(f"{target!r} is not a module-level function a child can import")
        return cls([sys.executable, "-c", _CALL, module, target.__name__, *map(str, args)],
                   stdin=stdin, name=f"{module}.{target.__name__}{tuple(map(str, args))}")

    @staticmethod
    def _pump(stream: IO[str], put: Callable[[Any], object]) -> None:
        try:
            for line in stream:
                put(line)
        except (OSError, ValueError):
            pass  # closed under us by close()
        put(None)

    # --- reading ------------------------------------------------------------------------

    def readline(self, timeout: float = TIMEOUT) -> str | None:
        """The next stdout line (without its newline; a last line cut short by a kill has
        none to strip), or None at the end of the output. Fails after ``timeout``."""
        if self._eof:
            return None
        try:
            line = self._stdout.get(timeout=timeout)
        except queue.Empty:
            raise ChildFailed(f"no output in {timeout} s\n{self.describe()}") from None
        if line is None:
            self._eof = True
            return None
        line = line[:-1] if line.endswith("\n") else line
        self.lines.append(line)
        return line

    def drain(self) -> list[str]:
        """The lines already read from the child and not yet returned, without waiting."""
        drained = []
        while not self._eof:
            try:
                line = self._stdout.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._eof = True
                break
            drained.append(line[:-1] if line.endswith("\n") else line)
        self.lines += drained
        return drained

    def wait_for(self, prefix: str = "READY", timeout: float = TIMEOUT) -> list[str]:
        """Read on until a line starting with ``prefix``; return it split. Fails if the
        child ends first or nothing comes for ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.readline(max(deadline - time.monotonic(), 0.001))
            if line is None:
                self.process.wait(timeout)
                raise ChildFailed(f"ended before printing {prefix!r}\n{self.describe()}")
            if line.startswith(prefix):
                return line.split()

    def send(self, line: str) -> None:
        """Write ``line`` and a newline to the child's stdin."""
        assert self.process.stdin is not None, "started without stdin=True"
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def ask(self, line: str, timeout: float = TIMEOUT) -> list[str]:
        """Send ``line`` and return the child's next line, split."""
        self.send(line)
        answer = self.readline(timeout)
        if answer is None:
            raise ChildFailed(f"ended instead of answering {line!r}\n{self.describe()}")
        return answer.split()

    def finish(self, timeout: float = TIMEOUT) -> list[str]:
        """Close stdin, wait for the child to exit, and return every line it printed."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise ChildFailed(f"still running after {timeout} s\n{self.describe()}") from None
        while self.readline(timeout) is not None:
            pass
        return self.lines

    @property
    def stderr(self) -> str:
        """What the child wrote to stderr so far (all of it once it has exited)."""
        if self.process.poll() is not None:
            self._pumps[1].join(TIMEOUT)  # the pipe's last bytes may still be on the way
        return "".join(part for part in self._stderr if part is not None)

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def describe(self) -> str:
        return (f"child {self.name} (pid {self.process.pid}, exit "
                f"{self.process.poll()}), stdout so far:\n" + "\n".join(self.lines[-20:])
                + f"\nstderr:\n{self.stderr[-4000:]}")

    # --- signals ------------------------------------------------------------------------

    def signal(self, signum: int) -> None:
        """Send ``signum`` unless the child was already reaped."""
        if self.process.returncode is None:
            self.process.send_signal(signum)

    def kill9(self) -> list[str]:
        """kill -9 the child, reap it, and return every line it printed."""
        self.signal(signal.SIGKILL)
        return self.finish()

    # --- reaping ------------------------------------------------------------------------

    def close(self) -> None:
        """Kill the child if it still runs and reap it; its pipes and threads end."""
        if self.process.poll() is None:
            self.process.kill()  # SIGKILL also ends a stopped (SIGSTOP) child
        self.process.wait(TIMEOUT)
        for pump in self._pumps:
            pump.join(TIMEOUT)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def whole_lines(lines: Iterable[str], end: str = "END") -> list[list[str]]:
    """The lines that end with ``end`` (printed whole), split, without the mark."""
    return [line.split()[:-1] for line in lines if line.endswith(" " + end)]


def run_and_kill(child: str | Callable[..., object], args: Iterable[object], delay: float,
                 ready: str = "READY") -> list[list[str]]:
    """The kill -9 harness: run a writer child (a script, or a module-level function)
    until it prints its ready line, let it work ``delay`` seconds, kill -9 it. Returns
    its whole lines (see :func:`whole_lines`)."""
    start = Child.script if isinstance(child, str) else Child.function
    with start(child, *args) as child:  # type: ignore[arg-type]
        child.wait_for(ready)
        time.sleep(delay)  # the moment of the kill: random, not a wait for anything
        return whole_lines(child.kill9())


def run(script: str, *args: object, timeout: float = TIMEOUT,
        returncode: int = 0) -> list[str]:
    """Run a child to its end; fail (with its stderr) unless it exits with ``returncode``
    (0; ``-signal.SIGKILL`` for a child that kill -9s itself at a chosen step). Its lines."""
    with Child.script(script, *args) as child:
        lines = child.finish(timeout)
        if child.returncode != returncode:
            raise ChildFailed(f"exited {child.returncode}, not {returncode}\n"
                              f"{child.describe()}")
        return lines
