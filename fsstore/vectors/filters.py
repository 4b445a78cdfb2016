"""Filters on a document's metadata and linked event, evaluated over a whole row source
at once into a mask of the rows that match (docs/FORMAT.md, section 15.6)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidFilter

if TYPE_CHECKING:
    from .rows import _RowSource

# --- filters -------------------------------------------------------------------------------

_RANGE_OPS = {"$gt": np.greater, "$gte": np.greater_equal, "$lt": np.less,
              "$lte": np.less_equal}
_LINKS = ("$seq", "$turn")


def _scalar_key(value: Any) -> tuple[str, Any] | None:
    """How a non-numeric scalar is told apart: True is not 1, "1" is not 1."""
    if value is None:
        return ("n", None)
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, str):
        return ("s", value)
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class VectorFilter:
    """Conditions on a document, all of which must hold. Built from a mapping::

        {"role": "user"}                          equality (numbers compare by value)
        {"tag": {"$in": ["deploy", "ci"]}}        membership
        {"score": {"$gte": 0.5, "$lt": 2}}        numeric range ($gt $gte $lt $lte)
        {"$seq": {"$gte": 100}, "$turn": 3}       the linked event's seq or turn

    A document without the key (or without a linked event) matches no condition on it.
    Equality and membership match scalars (str, number, bool, None); lists and maps in
    metadata match nothing.
    """

    def __init__(self, conditions: Mapping[str, Any]) -> None:
        if not isinstance(conditions, Mapping):
            raise InvalidFilter(f"a filter is a mapping, not {type(conditions).__name__}")
        self.conditions: list[tuple[str, str, Any]] = []
        for key, spec in conditions.items():
            if not isinstance(key, str) or (key.startswith("$") and key not in _LINKS):
                raise InvalidFilter(f"filter key {key!r}: use a metadata key or one of "
                                    f"{', '.join(_LINKS)}")
            ops = spec if isinstance(spec, Mapping) else {"$eq": spec}
            if not ops:
                raise InvalidFilter(f"filter on {key!r} has no condition")
            for op, operand in ops.items():
                self.conditions.append((key, op, self._check(key, op, operand)))

    @staticmethod
    def _check(key: str, op: Any, operand: Any) -> Any:
        link = key in _LINKS
        if op == "$eq":
            values = [operand]
        elif op == "$in":
            if not isinstance(operand, (list, tuple, set, frozenset)):
                raise InvalidFilter(f"filter on {key!r}: $in takes a list, not {operand!r}")
            values = list(operand)
        elif op in _RANGE_OPS:
            if not _is_number(operand) or not math.isfinite(operand):
                raise InvalidFilter(f"filter on {key!r}: {op} takes a finite number, not "
                                    f"{operand!r}")
            return operand
        else:
            raise InvalidFilter(f"filter on {key!r}: unknown operator {op!r}; use $eq, $in, "
                                f"{', '.join(_RANGE_OPS)}")
        for value in values:
            if link and (not _is_number(value) or value != int(value)):
                raise InvalidFilter(f"filter on {key!r}: seqs and turns are ints, not "
                                    f"{value!r}")
            if not _is_number(value) and _scalar_key(value) is None:
                raise InvalidFilter(f"filter on {key!r}: {op} compares scalars (str, "
                                    f"number, bool, None), not {value!r}")
        return values

    @classmethod
    def of(cls, value: VectorFilter | Mapping[str, Any] | None) -> VectorFilter | None:
        if value is None or isinstance(value, VectorFilter):
            return value
        return cls(value)

    def mask(self, rows: _RowSource) -> np.ndarray:
        """Which rows of ``rows`` match."""
        result = np.ones(rows.size, dtype=bool)
        for key, op, operand in self.conditions:
            if key in _LINKS:
                column = rows.link_column(key[1:])
                present = column >= 0
                if op in _RANGE_OPS:
                    result &= present & _RANGE_OPS[op](column, operand)
                else:
                    result &= present & np.isin(column, np.array(operand, dtype=np.int64))
                continue
            numbers, codes, table = rows.metadata_column(key)
            if op in _RANGE_OPS:
                with np.errstate(invalid="ignore"):
                    result &= _RANGE_OPS[op](numbers, operand)  # NaN (absent) is False
                continue
            wanted_numbers = [v for v in operand if _is_number(v)]
            wanted_codes = [table[k] for k in map(_scalar_key, operand) if k in table]
            hit = np.isin(numbers, np.array(wanted_numbers, dtype=np.float64))
            if wanted_codes:
                hit |= np.isin(codes, np.array(wanted_codes, dtype=np.int32))
            result &= hit
        return result


def _metadata_column(values: Iterable[Any], size: int
                     ) -> tuple[np.ndarray, np.ndarray, dict[tuple[str, Any], int]]:
    """One metadata key of every row: numbers as float64 (NaN elsewhere), other scalars as
    codes into ``table`` (-1 elsewhere)."""
    numbers = np.full(size, np.nan)
    codes = np.full(size, -1, dtype=np.int32)
    table: dict[tuple[str, Any], int] = {}
    for row, value in enumerate(values):
        if _is_number(value):
            numbers[row] = value
        else:
            key = _scalar_key(value)
            if key is not None:
                codes[row] = table.setdefault(key, len(table))
    return numbers, codes, table
