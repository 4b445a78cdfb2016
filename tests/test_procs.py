"""The child-process harness of the multi-process tests: a child that fails says why,
and every child is reaped, however its test ends."""

from __future__ import annotations

import os
import signal

import pytest
from procs import Child, ChildFailed, run_and_kill

import fsstore


def child_prints_its_arguments(*args: str) -> None:
    print("READY", *args, flush=True)


def test_a_function_child_runs_with_this_checkout_and_its_arguments():
    with Child.function(child_prints_its_arguments, "a", 2) as child:
        assert child.wait_for("READY") == ["READY", "a", "2"]
        assert child.finish() == ["READY a 2"] and child.returncode == 0
    with Child.script("import fsstore, sys; print(fsstore.__file__)") as child:
        (path,) = child.finish()
    assert os.path.samefile(path, fsstore.__file__)


def test_a_child_that_ends_before_its_ready_line_fails_with_its_stderr():
    with Child.script("import sys; sys.exit('no store here')") as child, \
            pytest.raises(ChildFailed, match="no store here"):
        child.wait_for("READY")


def test_a_silent_child_times_out_and_is_killed_and_reaped_on_close():
    with Child.script("import time; print('READY', flush=True); time.sleep(3600)") as child:
        child.wait_for("READY")
        with pytest.raises(ChildFailed, match="no output"):
            child.readline(timeout=0.1)
        child.signal(signal.SIGSTOP)  # even a stopped child
    assert child.process.returncode == -signal.SIGKILL


def test_kill_9_keeps_only_the_lines_printed_whole():
    script = ("import sys\nprint('READY', flush=True)\nn = 0\nwhile True:\n"
              "    n += 1\n    sys.stdout.write(f'ACK {n} END\\n'); sys.stdout.flush()\n")
    lines = run_and_kill(script, [], delay=0.05)
    assert lines and [int(line[1]) for line in lines] == list(range(1, len(lines) + 1))
