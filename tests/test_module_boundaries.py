"""The modules of the package meet through public names: no module reaches into the
private attributes of another module's classes (``reader._log``), and no Protocol (the
interface one module states of what it needs of another) is made of private names
(``def _log_tail``), which would only move the reaching in behind a type. A module that
needs something of another gets it through an interface of public names (a Protocol, a
callback, a public function), so either can change its insides alone.

Imports of private module-level names between modules (``log_writer`` from ``log``,
``vectors.reader`` from ``vectors.rows``) are not checked here: they are the seams of
modules that were split apart, and are left to those splits."""

from __future__ import annotations

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "fsstore")


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def modules() -> dict[str, ast.Module]:
    found = {}
    for folder, _dirs, files in os.walk(PACKAGE):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as file:
                    found[os.path.relpath(path, ROOT)] = ast.parse(file.read(), path)
    return found


def private_members(tree: ast.Module) -> set[str]:
    """The private names a module's classes define: methods, class attributes, and
    attributes their methods set on ``self``."""
    names: set[str] = set()
    for cls in (node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)):
        for node in cls.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names.add(node.name)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
            elif isinstance(node, ast.Assign):
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        for node in ast.walk(cls):
            targets = (node.targets if isinstance(node, ast.Assign) else
                       [node.target] if isinstance(node, ast.AnnAssign) else [])
            for target in targets:
                if (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
                        and target.value.id == "self"):
                    names.add(target.attr)
    return {name for name in names if is_private(name)}


def on_itself(node: ast.Attribute) -> bool:
    """``self._x``, ``cls._x`` or ``super()._x``: a class using its own insides."""
    value = node.value
    if isinstance(value, ast.Name):
        return value.id in ("self", "cls")
    return (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
            and value.func.id == "super")


def is_protocol(cls: ast.ClassDef) -> bool:
    return any((isinstance(base, ast.Name) and base.id == "Protocol")
               or (isinstance(base, ast.Attribute) and base.attr == "Protocol")
               for base in cls.bases)


def crossings(trees: dict[str, ast.Module]) -> list[str]:
    """Each place where a module uses a private name that only other modules' classes
    define, on an object other than ``self``; and each private member of a Protocol."""
    members = {path: private_members(tree) for path, tree in trees.items()}
    found = []
    for path, tree in trees.items():
        others = set().union(*(names for other, names in members.items() if other != path))
        foreign = others - members[path]
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr in foreign
                    and not on_itself(node)):
                found.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
            elif isinstance(node, ast.ClassDef) and is_protocol(node):
                found += [f"{path}:{node.lineno}: Protocol {node.name} declares {name}"
                          for name in sorted(private_members(ast.Module([node], [])))]
    return found


def test_no_module_reaches_into_the_private_attributes_of_another_modules_classes():
    found = crossings(modules())
    assert not found, ("give these an interface their defining module offers:\n"
                       + "\n".join(found))


def test_the_boundary_check_sees_a_private_reached_through_another_object():
    trees = {
        "fsstore/a.py": ast.parse("class Reader:\n"
                                  "    def __init__(self):\n        self._log = 1\n"
                                  "    def _tail(self):\n        return self._log\n"),
        "fsstore/b.py": ast.parse("def check(reader):\n    return reader._log, reader._tail()\n"
                                  "class Watcher:\n"
                                  "    def __init__(self, store):\n        self._store = store\n"
                                  "    def poll(self):\n        return self._store._tail()\n"
                                  "    def mine(self):\n        return self._store\n"),
        "fsstore/c.py": ast.parse("from typing import Protocol\n"
                                  "class Host(Protocol):\n"
                                  "    def _tail(self): ...\n    def tail(self): ...\n"
                                  "def poll(host):\n    return host._tail()\n"),
    }
    assert crossings(trees) == [
        "fsstore/b.py:2: reader._log", "fsstore/b.py:2: reader._tail",
        "fsstore/b.py:7: self._store._tail", "fsstore/c.py:2: Protocol Host declares _tail"]
