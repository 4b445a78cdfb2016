"""How long the property tests run: a short run by default, the full one with ``--long``.

conftest.py sets :data:`LONG` from ``--long`` before any test module is imported, so a
module-level ``@settings(max_examples=examples(30, 60))`` sees it.
"""

from __future__ import annotations

#: Whether this run was given ``--long`` (set by conftest.py's pytest_configure).
LONG = False


def examples(default: int, long: int) -> int:
    """How many hypothesis examples to try: ``default`` in the default run, ``long`` with
    ``--long``."""
    return long if LONG else default
