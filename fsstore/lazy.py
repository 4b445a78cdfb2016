"""A module imported on its first use rather than by the module that names it.

``fsstore cat`` and ``fsstore ls`` (run per file by git, per session by shell loops) read
sessions through :class:`~fsstore.store.Store`, whose lease and lineage calls, and whose
async twins (asyncio), need modules a read never uses. Those modules are named through a
:class:`LazyModule` (and, for type checkers, through an ordinary import under
``TYPE_CHECKING``), so that the first call that uses one imports it::

    if TYPE_CHECKING:
        import asyncio
    else:
        asyncio = LazyModule("asyncio")
"""

from __future__ import annotations

import importlib
from typing import Any


class LazyModule:
    """Stands for the module ``name``: each attribute is read from the module, which the
    first read imports. Attributes are looked up afresh each time, so a test that patches
    the module's function is seen, as it would be through the module itself."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self._name), attribute)

    def __repr__(self) -> str:
        return f"<LazyModule {self._name!r}>"
