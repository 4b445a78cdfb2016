"""The commands git and shell loops run once per file start fast: ``fsstore --help``,
``textconv``, ``cat`` and ``ls`` import none of the heavy dependencies (numpy, zstandard,
watchdog, asyncio, ...), and ``import fsstore`` imports its names on first use. Nothing
here is timed (tools/bench_cli.py measures the start times): each command runs in a
fresh interpreter, which reports the modules it loaded, so a change that imports a heavy
module at the top of a module these commands load fails here, naming it."""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys

import pytest

import fsstore
from fsstore.cli import _command_in, build_parser, command_names

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "fsstore")

#: What the quick commands must not load: each costs from a few to a hundred ms to
#: import, and none of them is needed to list, print or convert a session's files.
#: ``_hashlib`` is OpenSSL (through hashlib or secrets), about 10 ms to load.
HEAVY = ("numpy", "zstandard", "watchdog", "asyncio", "concurrent.futures", "filelock",
         "pyarrow", "duckdb", "polars", "_hashlib")

#: Runs one command as ``fsstore ARGS`` in this fresh interpreter, its output thrown
#: away, then prints the exit status and the heavy modules it loaded, as JSON.
_RUN = """
import json, os, sys
heavy, argv = json.loads(sys.argv[1]), json.loads(sys.argv[2])
out = sys.stdout
sys.stdout = open(os.devnull, "w")
from fsstore.cli import main
try:
    status = main(argv)
except SystemExit as exc:  # --help
    status = exc.code
sys.stdout = out
print(json.dumps({"status": status, "loaded": sorted(m for m in heavy if m in sys.modules),
                  "engine": sorted(m for m in sys.modules if m.startswith("fsstore."))}))
"""


def run_fresh(store_path: str, *argv: str) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    env.pop("FSSTORE_STORE", None)
    done = subprocess.run([sys.executable, "-c", _RUN, json.dumps(HEAVY), json.dumps(argv)],
                          cwd=store_path, env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    found: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return found


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    """A store of one short session: a finished turn of messages and tool events, a state
    key, an attachment (so the session has blobs), and the path of its first segment.
    The session is chained, as every session of a new store is (FORMAT.md 3.4)."""
    return _small_store(tmp_path_factory, chain=None)


@pytest.fixture(scope="module")
def unchained_store(tmp_path_factory):
    """``small_store`` in a store without a chain policy: its session is unchained."""
    return _small_store(tmp_path_factory, chain=False)


def _small_store(tmp_path_factory, chain):
    root = tmp_path_factory.mktemp("quick") / "store"
    store = fsstore.open_store(root, chain=chain)
    with store.create_session("s1", title="a short run") as session:
        session.append({"role": "user", "content": "list the files"}, kind="message")
        session.append({"name": "ls", "args": {"path": "."}}, kind="tool_call")
        ref = session.blobs.put(b"a.txt\nb.txt\n" * 100, media_type="text/plain")
        session.append({"output": ref}, kind="tool_result")
        session.set_state("plan", ["read a.txt"])
        session.finish_turn()
    log = root / "sessions" / "s1" / "log"
    segment = sorted(name for name in os.listdir(log) if name.endswith(".fslog"))[0]
    return str(root), str(log / segment)


@pytest.mark.parametrize(("argv", "chain"), [
    (["--help"], True),
    (["textconv", "SEGMENT"], True),
    (["textconv", "SEGMENT"], False),
    (["cat", "s1"], True),
    (["cat", "s1"], False),
    (["ls"], True),
    (["ls"], False),
], ids=["help", "textconv", "textconv-unchained", "cat", "cat-unchained", "ls",
        "ls-unchained"])
def test_a_quick_command_imports_no_heavy_dependency(request, argv, chain):
    root, segment = request.getfixturevalue("small_store" if chain else "unchained_store")
    found = run_fresh(root, *[segment if arg == "SEGMENT" else arg for arg in argv])
    assert found["status"] == 0
    # Reading a chained session's records (cat) or its tail and manifest (ls) checks its
    # chain, SHA-256 (FORMAT.md 3.4): OpenSSL's, about 5 times as fast as Python's own
    # _sha256, which would slow every replay to spare its import. Nothing else.
    hashes = chain and argv[0] in ("cat", "ls")
    assert found["loaded"] == (["_hashlib"] if hashes else []), (
        f"`fsstore {' '.join(argv)}` imported {found['loaded']}: import it inside the "
        "function that uses it (README, Development)")


@pytest.mark.parametrize("argv", [["cat", "s1"], ["ls"]], ids=["cat", "ls"])
def test_reading_a_session_loads_neither_the_writer_nor_vectors_nor_watching(small_store,
                                                                              argv):
    root, _segment = small_store
    engine = run_fresh(root, *argv)["engine"]
    assert isinstance(engine, list)
    for module in ("fsstore.session", "fsstore.vectors", "fsstore.watch", "fsstore.check",
                   "fsstore.stats", "fsstore.messages", "fsstore.state", "fsstore.vacuum",
                   "fsstore.lease", "fsstore.lineage"):
        assert module not in engine


def test_a_quick_command_prints_what_it_printed_before(small_store, capsys):
    """The same output as through the Python API: the lazy imports change no behaviour."""
    from fsstore.cli import main
    from fsstore.cli._common import event_json

    root, _segment = small_store
    assert main(["--store", root, "cat", "s1"]) == 0
    expected = [event_json(e) for e in fsstore.open_store(root).read_session("s1").events()]
    assert capsys.readouterr().out.splitlines() == expected
    assert main(["--store", root, "ls"]) == 0
    assert "s1" in capsys.readouterr().out


def test_import_fsstore_loads_no_module_of_it_until_a_name_is_used():
    code = ("import sys, fsstore; assert fsstore.__version__;"
            "print(sorted(m for m in sys.modules if m.startswith('fsstore.')))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


def test_every_public_name_resolves_and_dir_lists_it():
    assert len(set(fsstore.__all__)) == len(fsstore.__all__)
    for name in fsstore.__all__:
        value = getattr(fsstore, name)
        assert value is not None, name
        module = getattr(value, "__module__", None)
        if module is not None and isinstance(value, type):
            assert module.startswith("fsstore."), (name, module)
    assert set(fsstore.__all__) <= set(dir(fsstore))
    assert fsstore.open_store is fsstore.store.open_store
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        _ = fsstore.no_such_name  # type: ignore[attr-defined]


def test_star_import_gives_every_public_name():
    namespace: dict[str, object] = {}
    exec("from fsstore import *", namespace)
    assert set(fsstore.__all__) <= set(namespace)


def _type_checking_imports(tree: ast.Module) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for statement in node.body:
                if isinstance(statement, ast.ImportFrom) and statement.level == 1:
                    found.setdefault(str(statement.module), set()).update(
                        alias.name for alias in statement.names)
    return found


def test_the_lazy_names_the_type_checking_imports_and_all_agree():
    """A name added to one of the three places of fsstore/__init__.py and not the
    others: mypy and IDEs would not see it, or ``fsstore.NAME`` would not resolve, or
    ``from fsstore import *`` would not give it."""
    with open(os.path.join(PACKAGE, "__init__.py"), encoding="utf-8") as file:
        tree = ast.parse(file.read())
    lazy = {module: set(names) for module, names in fsstore._EXPORTS.items()}
    assert _type_checking_imports(tree) == lazy
    assert {name for names in lazy.values() for name in names} == set(fsstore.__all__)


def test_the_version_is_the_packages():
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as file:
        assert f'version = "{fsstore.__version__}"' in file.read()


#: What a command module may import from fsstore at its top: no engine module (each is
#: imported by the run function that needs it), only these light ones.
CLI_TOP_LEVEL = {"errors", "defaults", "layout"}


def _top_level_imports(path: str) -> list[tuple[int, str]]:
    """(level, module) of each import at the top of a module (``from .. import layout``
    gives (2, "layout")); TYPE_CHECKING blocks are left out: only type checkers run them."""
    with open(path, encoding="utf-8") as file:
        tree = ast.parse(file.read())
    found = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            found.extend((0, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.module:
                found.append((node.level, node.module))
            else:
                found.extend((node.level, alias.name) for alias in node.names)
    return found


def _modules_the_parser_loads() -> list[str]:
    """fsstore/cli's command modules (``fsstore.cli.GROUPS``: ``--help`` imports them all),
    ``fsstore.cli`` itself, and the modules they import at their top: what a command loads
    to build its parser. (A helper that a run function imports, such as
    ``conversation.py`` for ``show``, is not among them.)"""
    from fsstore.cli import GROUPS
    folder = os.path.join(PACKAGE, "cli")
    found: list[str] = []
    todo = ["__init__", *GROUPS]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.append(name)
        todo.extend(module for level, module in
                    _top_level_imports(os.path.join(folder, f"{name}.py"))
                    if level == 1 and os.path.exists(os.path.join(folder, f"{module}.py")))
    return sorted(found)


def test_command_modules_import_the_engine_inside_their_run_functions():
    folder = os.path.join(PACKAGE, "cli")
    heavy = {module.split(".")[0] for module in HEAVY} | {"msgspec", "crc32c"}
    loaded = _modules_the_parser_loads()
    assert {"_common", "inspect", "git"} <= set(loaded)
    problems = []
    for name in loaded:
        for level, module in _top_level_imports(os.path.join(folder, f"{name}.py")):
            if level == 0 and module.split(".")[0] in heavy:
                problems.append(f"cli/{name}.py imports {module} at its top")
            if level == 2 and module not in CLI_TOP_LEVEL:
                problems.append(f"cli/{name}.py imports fsstore.{module} at its top")
    for level, module in _top_level_imports(os.path.join(PACKAGE, "__init__.py")):
        if level:
            problems.append(f"fsstore/__init__.py imports .{module} at its top")
    assert problems == [], "import these inside the functions that use them: " + "; ".join(
        problems)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_a_command_parser_built_alone_is_the_one_built_with_all_the_others():
    """A run builds only its command's parser: each command's help and parsing are what
    the whole parser gives."""
    full = _subparsers(build_parser())
    assert sorted(full) == command_names()
    for name, whole in full.items():
        alone = _subparsers(build_parser(name))
        assert name in alone and len(alone) < len(full), name
        assert alone[name].format_help() == whole.format_help(), name
    parsed = build_parser("cat").parse_args(["--store", "x", "cat", "s1", "--limit", "3"])
    assert parsed == build_parser().parse_args(["--store", "x", "cat", "s1", "--limit", "3"])


@pytest.mark.parametrize("argv, command", [
    (["cat", "s1"], "cat"), (["--store", "x", "ls"], "ls"), (["--store=x", "ls"], "ls"),
    (["workspace", "ls"], "workspace"), (["--help"], None), (["--sto", "x", "ls"], None),
    ([], None), (["--store"], None),
])
def test_the_command_of_a_run_is_its_first_word_after_the_global_options(argv, command):
    assert _command_in(argv) == command


def test_a_lazy_module_reads_each_attribute_from_the_module_as_it_is_now(monkeypatch):
    from fsstore import lease
    from fsstore.lazy import LazyModule

    lazy = LazyModule("fsstore.lease")
    assert lazy.read_lease is lease.read_lease

    def patched(*args: object) -> None:
        return None

    monkeypatch.setattr(lease, "read_lease", patched)
    assert lazy.read_lease is patched
    with pytest.raises(AttributeError):
        _ = lazy.no_such_name


def test_each_command_group_lists_the_commands_its_module_registers_in_order():
    """fsstore.cli.GROUPS says which module a run imports: it must name exactly what each
    module's register adds, or a command would be missing from its own run."""
    from fsstore.cli import GROUPS, group_module
    for group, names in GROUPS.items():
        parser = argparse.ArgumentParser()
        group_module(group).register(parser.add_subparsers())
        assert tuple(_subparsers(parser)) == names, group
