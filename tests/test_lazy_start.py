"""What the fast start (names, members and heavy modules imported on first use) must not
change: a reader shared by threads holds one of each member, a missing module is an
ImportError (never damage), the crc32c loaded directly is the package's function, every
public name and every command's help work from a fresh start, and the async twins still
reach asyncio as it is patched."""

from __future__ import annotations

import asyncio
import functools
import importlib.machinery
import os
import random
import subprocess
import sys
import threading
from typing import Any

import crc32c as crc32c_package
import pytest

import fsstore
from fsstore import checksum
from fsstore.cli import GROUPS, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_NOT_FOUND = object()


def _run(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)


# --- a reader shared by threads ------------------------------------------------------------


def _lockless_get(self: Any, instance: Any, owner: type | None = None) -> Any:
    """functools.cached_property.__get__ as Python 3.12 and later have it: no lock."""
    if instance is None:
        return self
    cache = instance.__dict__
    value = cache.get(self.attrname, _NOT_FOUND)
    if value is _NOT_FOUND:
        value = self.func(instance)
        cache[self.attrname] = value
    return value


MEMBERS = {
    "blobs": ("fsstore.blobs", "BlobReader"),
    "queue": ("fsstore.work", "WorkQueueReader"),
    "inputs": ("fsstore.work", "TurnInputsReader"),
    "messages": ("fsstore.messages", "MessagesReader"),
    "_message_index_file": ("fsstore.message_index", "MessageIndex"),
}


@pytest.mark.parametrize("member", sorted(MEMBERS))
def test_threads_racing_a_readers_first_use_of_a_member_share_one(store, monkeypatch, member):
    """Two threads read a member of one reader for the first time at once (their
    constructors meet at a barrier when both run), with cached_property as Python 3.12
    has it: both get the one object the reader keeps, made once."""
    store.create_session("s").close()
    if sys.version_info < (3, 12):
        monkeypatch.setattr(functools.cached_property, "__get__", _lockless_get)
    module, name = MEMBERS[member]
    cls = getattr(importlib.import_module(module), name)
    real = cls.__init__
    barrier = threading.Barrier(2)
    made = []

    def meeting(self: Any, *args: Any, **kwargs: Any) -> None:
        made.append(self)
        try:
            barrier.wait(timeout=0.2)  # the other thread is here too, unless it waits
        except threading.BrokenBarrierError:
            pass  # made one at a time: nothing to race
        real(self, *args, **kwargs)

    monkeypatch.setattr(cls, "__init__", meeting)
    reader = store.read_session("s")
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(getattr(reader, member)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 2 and got[0] is got[1] is getattr(reader, member)
    assert len(made) == 1


def test_a_writers_members_are_its_own_from_the_start(store):
    """A writer sets its blobs, queue, inputs, messages and index in __init__: closing it
    closes the index it writes through, and nothing is made afresh to be closed."""
    session = store.create_session("s")
    members = {name: session.__dict__[name] for name in MEMBERS}
    assert type(members["blobs"]).__name__ == "BlobStore"
    assert type(members["messages"]).__name__ == "Messages"
    assert members["_message_index_file"].writable
    session.close()
    assert {name: session.__dict__[name] for name in MEMBERS} == members


# --- a missing module ------------------------------------------------------------------------


def _compacted_session(tmp_path: Any) -> fsstore.Store:
    store = fsstore.open_store(tmp_path / "compacted", segment_size=64 << 10)
    with store.create_session("s") as session:
        for number in range(120):
            session.append({"n": number, "pad": "x" * 2000})
        session.messages.append(fsstore.Message(role="user", parts=[fsstore.TextPart("hi")]))
        session.blobs.put(b"compressible " * 500, "text/plain")
        session.finish_turn()
    store.read_session("s").compact()
    assert store.verify() == []
    return store


def test_verify_raises_a_missing_zstandard_instead_of_reporting_damage(tmp_path):
    """zstandard is imported where a compacted segment or blob is first read: without
    it, verify must not report the session's files as damaged (nor blame a bug)."""
    store = _compacted_session(tmp_path)
    done = _run("import sys; sys.modules['zstandard'] = None\n"
                "import fsstore\n"
                f"store = fsstore.open_store({store.path!r}, create=False)\n"
                "try:\n"
                "    print('findings', store.verify())\n"
                "except ModuleNotFoundError as exc:\n"
                "    print('missing', exc.name)\n")
    assert done.stdout.strip() == "missing zstandard", done.stdout + done.stderr


def test_a_command_names_a_missing_module_on_one_line(tmp_path):
    store = _compacted_session(tmp_path)
    done = _run("import sys; sys.modules['zstandard'] = None\n"
                "from fsstore.cli import main\n"
                f"sys.exit(main(['--store', {store.path!r}, 'cat', 's']))\n")
    assert done.returncode == 2, done.stderr
    line, = done.stderr.strip().splitlines()
    assert line.startswith("fsstore: ") and "'zstandard'" in line and "not installed" in line
    assert "internal error" not in line


# --- crc32c ------------------------------------------------------------------------------


def test_the_crc32c_loaded_directly_is_the_packages_function():
    assert checksum.crc32c is crc32c_package.crc32c
    rng = random.Random(17)
    for size in (0, 1, 7, 64, 1000, 65_537):
        data = rng.randbytes(size)
        start = rng.getrandbits(32)
        assert checksum.crc32c(data) == crc32c_package.crc32c(data)
        assert checksum.crc32c(data, start) == crc32c_package.crc32c(data, start)
        assert checksum.crc32c(memoryview(data), 0, 0) == crc32c_package.crc32c(data)
        cut = size // 3
        assert checksum.crc32c(data[cut:], checksum.crc32c(data[:cut])) == \
            crc32c_package.crc32c(data)
    assert checksum.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value


@pytest.mark.parametrize("failure", ["no-extension-file", "load-fails", "no-spec"])
def test_crc32c_comes_from_the_package_when_the_direct_load_fails(monkeypatch, failure):
    monkeypatch.delitem(sys.modules, "crc32c._crc32c", raising=False)
    if failure == "no-extension-file":
        monkeypatch.setattr(importlib.machinery, "EXTENSION_SUFFIXES", [".no-such-suffix"])
    elif failure == "load-fails":
        def refuse(self: Any, module: Any) -> None:
            raise ImportError("cannot load")
        monkeypatch.setattr(importlib.machinery.ExtensionFileLoader, "exec_module", refuse)
    else:  # a crc32c module put in sys.modules by hand: find_spec raises ValueError
        stand_in = type(sys)("crc32c")
        stand_in.__spec__ = None
        stand_in.crc32c = crc32c_package.crc32c  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "crc32c", stand_in)
    function = checksum._load()
    assert function is crc32c_package.crc32c
    assert function(b"123456789") == 0xE3069283


# --- names and commands from a fresh start ---------------------------------------------------


def test_every_public_name_resolves_first_in_a_fresh_package():
    """Each module's names are used first with no fsstore module loaded yet (the order
    in which modules import each other differs with the first name used)."""
    done = _run("import sys\n"
                "import fsstore\n"
                "exports = fsstore._EXPORTS\n"
                "for module, names in exports.items():\n"
                "    for loaded in [m for m in sys.modules if m.split('.')[0] == 'fsstore']:\n"
                "        del sys.modules[loaded]\n"
                "    import fsstore\n"
                "    for name in names:\n"
                "        assert getattr(fsstore, name) is not None, name\n"
                "        assert getattr(fsstore, name) is getattr(sys.modules['fsstore.' + module],"
                " name), name\n"
                "print('ok', len(exports))\n")
    assert done.stdout.startswith("ok"), done.stderr


def test_every_commands_help_works_from_a_fresh_start():
    """``fsstore COMMAND --help`` for each command of GROUPS, each with no fsstore module
    loaded before it (a run imports its command's module alone)."""
    commands = [name for names in GROUPS.values() for name in names]
    done = _run("import io, sys, contextlib\n"
                f"for command in {commands!r}:\n"
                "    for loaded in [m for m in sys.modules if m.split('.')[0] == 'fsstore']:\n"
                "        del sys.modules[loaded]\n"
                "    from fsstore.cli import main\n"
                "    out = io.StringIO()\n"
                "    try:\n"
                "        with contextlib.redirect_stdout(out):\n"
                "            main([command, '--help'])\n"
                "    except SystemExit as exc:\n"
                "        assert exc.code == 0, (command, exc.code)\n"
                "    assert out.getvalue().startswith('usage: fsstore ' + command), command\n"
                "print('ok', len(" + repr(commands) + "))\n")
    assert done.stdout.startswith("ok"), done.stderr
    module = subprocess.run([sys.executable, "-m", "fsstore", "import", "--help"],
                            env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True,
                            text=True, timeout=60)
    assert module.returncode == 0 and module.stdout.startswith("usage: fsstore import")


def test_help_of_a_command_in_process_exits_zero(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["verify", "--help"])
    assert exit_.value.code == 0 and "usage: fsstore verify" in capsys.readouterr().out


# --- async twins -----------------------------------------------------------------------------


def test_async_twins_call_asyncio_to_thread_as_patched(store, monkeypatch):
    store.create_session("s").close()
    reader = store.read_session("s")
    calls = []
    real = asyncio.to_thread

    async def counting(function: Any, /, *args: Any, **kwargs: Any) -> Any:
        calls.append(getattr(function, "__name__", function))
        return await real(function, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", counting)

    async def twins() -> tuple[Any, Any]:
        return await reader.ainfo(), await reader.messages.alast(5)

    info, last = asyncio.run(twins())
    assert info.id == "s" and last == []
    assert len(calls) == 2 and calls[0] == "info"  # the second: the lambda alast runs
