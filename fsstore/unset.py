"""``UNSET``: the default of the arguments for which "not given" differs from None (a
fork's or a metadata update's title, tags and metadata: kept unless given).

One object for the whole package, in a module of its own: a method and its async twin
(fsstore/aio.py) must share it, or the twin's default would be taken for a value."""

from __future__ import annotations

from typing import Any, Final


class _Unset:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSET"

    def __reduce__(self) -> str:
        return "UNSET"  # pickles (and copies) as the one object


#: Typed Any so that it can be the default of an argument of any type.
UNSET: Final[Any] = _Unset()
