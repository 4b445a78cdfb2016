"""Search filters of vector collections: conditions on a document's metadata and on the
seq and turn of its linked event, evaluated over the columns of a set of rows.

The language is the one LangChain and LangGraph users pass to Chroma and to LangGraph's
``BaseStore.search(filter=)`` (docs/FORMAT.md, section 15.6, and :class:`VectorFilter`).
Where those two differ, the choice and the reason are written at :class:`VectorFilter`.

A filter sees rows only through :class:`~fsstore.vectors.rows.RowSource` (its
``link_column`` and ``metadata_column``): a shard or the unsealed rows hand it, per
metadata key, a column built by :func:`build_metadata_column`: the numbers as float64,
and a small int code per row for everything else (dictionary encoding: one code per
distinct str, list, ...), so every operator is a numpy comparison over the two arrays,
whatever the values' types. Nothing is decoded per row at search time.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ..errors import InvalidFilter

if TYPE_CHECKING:  # rows builds its columns with build_metadata_column
    from .rows import RowSource

__all__ = ["MAX_FILTER_DEPTH", "MetadataColumn", "ValueTable", "VectorFilter",
           "build_metadata_column", "value_key"]

MAX_FILTER_DEPTH = 32  # nested $and / $or: far past any real filter, short of the stack

FloatArray = npt.NDArray[np.float64]
CodeArray = npt.NDArray[np.int32]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
ValueKey = tuple[str, Any]

LINKS = ("$seq", "$turn")
LOGICAL = ("$and", "$or")
_EQUALITY = ("$eq", "$ne", "$in", "$nin")
_RANGE = ("$gt", "$gte", "$lt", "$lte")
_CONTAINS = ("$contains", "$not_contains")
OPERATORS = _EQUALITY + _RANGE + ("$exists",) + _CONTAINS
_LINK_OPERATORS = _EQUALITY + _RANGE + ("$exists",)
_NEGATED = {"$ne": "$eq", "$nin": "$in", "$not_contains": "$contains"}
_INT64 = (-(2**63), 2**63 - 1)

_NONE: ValueKey = ("n", None)
_OPAQUE: ValueKey = ("o", None)  # a map or bytes: present, equal to nothing a filter names
_NUMBER: ValueKey = ("f", None)  # a number held exactly by the float column
_EXACT = 2**53  # ints up to this size are exact in float64


# --- values and columns ----------------------------------------------------------------


def value_key(value: object) -> ValueKey | None:
    """The hashable form under which a metadata value is compared, or None for a value
    metadata cannot hold (the marker of an absent key).

    Numbers compare by value (``1 == 1.0``, exactly: ints are not rounded through
    float); a bool is not a number and a str is never a number; lists compare element
    by element, in order. Maps and bytes are present but equal to nothing a filter can
    name, so they all share one key."""
    if value is None:
        return _NONE
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, (int, float)):
        return ("#", value)
    if isinstance(value, str):
        return ("s", value)
    if isinstance(value, (list, tuple)):
        return ("l", tuple(map(_element_key, value)))
    if isinstance(value, (dict, bytes)):
        return _OPAQUE
    return None


def _element_key(value: object) -> ValueKey:
    # A filter names flat lists of scalars only, so a list nested in a list (or a map in
    # one) can never be matched: it needs no key of its own.
    if type(value) is str:
        return ("s", value)
    if isinstance(value, (list, tuple, dict, bytes)):
        return _OPAQUE
    key = value_key(value)
    return _OPAQUE if key is None else key


class ValueTable(dict[ValueKey, int]):
    """The codes of a column's distinct values (:data:`MetadataColumn`), with an index
    from each list element to the codes of the lists that hold it, built on first use
    (``$contains`` without a scan of the table)."""

    _members: dict[ValueKey, CodeArray] | None = None

    def containing(self, element: ValueKey) -> CodeArray:
        """The codes of the list values that hold ``element``."""
        if self._members is None:
            index: dict[ValueKey, list[int]] = {}
            for key, code in self.items():
                if key[0] == "l":
                    for item in set(key[1]):
                        index.setdefault(item, []).append(code)
            self._members = {item: np.array(codes, dtype=np.int32)
                             for item, codes in index.items()}
        return self._members.get(element, _NO_CODES)


_NO_CODES: CodeArray = np.zeros(0, dtype=np.int32)


# One metadata key over a set of rows: the numbers as float64 (NaN in the other rows),
# each row's value code (-1 where the key is absent), and the code of each distinct
# value, by value_key. Numbers share one code (_NUMBER) and are told apart by the float
# column, so that a column of distinct timestamps costs no table; only ints that float64
# cannot hold exactly get codes of their own, so that equality stays exact.
MetadataColumn = tuple[FloatArray, CodeArray, ValueTable]


def build_metadata_column(values: Iterable[Any], size: int) -> MetadataColumn:
    """The column of one metadata key from its value in each of ``size`` rows, in row
    order. A value metadata cannot hold (the caller's marker of an absent key: msgpack
    decodes to None, bool, int, float, str, bytes, list and dict only) is absent."""
    table = ValueTable()
    codes = [-1] * size
    number_rows: list[int] = []
    number_values: list[float] = []
    number = -1
    # The common types first, without value_key's tuple: this loop runs once per row of
    # a shard (the column is kept), but it is what a first filtered search waits for.
    for row, value in enumerate(values):
        kind = type(value)
        if kind is float or (kind is int and -_EXACT <= value <= _EXACT):
            number_rows.append(row)
            number_values.append(value)
            if number < 0:
                number = table.setdefault(_NUMBER, len(table))
            codes[row] = number
            continue
        key = ("s", value) if kind is str else value_key(value)
        if key is None:
            continue
        if key[0] == "#":  # an int float64 would round: equality needs its own code
            number_rows.append(row)
            number_values.append(float(value))  # ranges compare in float64
        codes[row] = table.setdefault(key, len(table))
    numbers: FloatArray = np.full(size, np.nan, dtype=np.float64)
    numbers[number_rows] = number_values
    return numbers, np.array(codes, dtype=np.int32), table


class _Wanted:
    """The values an equality names: the keys of the coded ones (strs, lists, ..., and
    every number, for the ints a column codes) and the numbers the float column holds
    exactly as floats."""

    __slots__ = ("keys", "floats")

    def __init__(self, keys: Sequence[ValueKey]) -> None:
        self.keys = tuple(dict.fromkeys(keys))
        floats = []
        for kind, value in self.keys:
            if kind == "#":
                try:
                    if float(value) == value:  # exact: no float equals 2**53 + 1
                        floats.append(float(value))
                except OverflowError:  # an int no float reaches
                    pass
        self.floats: FloatArray = np.array(floats, dtype=np.float64)

    def mask(self, numbers: FloatArray, codes: CodeArray,
             table: ValueTable) -> BoolArray:
        hit = _isin(codes, [table[key] for key in self.keys if key in table])
        number = table.get(_NUMBER)
        if number is not None and len(self.floats):
            hit |= (codes == number) & _isin(numbers, self.floats)
        return hit


# --- the filter tree -------------------------------------------------------------------


class _Node:
    def mask(self, rows: RowSource) -> BoolArray:
        raise NotImplementedError


class _All(_Node):
    def __init__(self, parts: list[_Node]) -> None:
        self.parts = parts

    def mask(self, rows: RowSource) -> BoolArray:
        result: BoolArray = np.ones(rows.size, dtype=np.bool_)
        for part in self.parts:
            result &= part.mask(rows)
            if not result.any():
                break
        return result


class _Any(_Node):
    def __init__(self, parts: list[_Node]) -> None:
        self.parts = parts

    def mask(self, rows: RowSource) -> BoolArray:
        result: BoolArray = np.zeros(rows.size, dtype=np.bool_)
        for part in self.parts:
            result |= part.mask(rows)
            if result.all():
                break
        return result


def _range_mask(op: str, column: npt.NDArray[Any], operand: float | int) -> BoolArray:
    with np.errstate(invalid="ignore"):  # NaN (no number in the row) compares False
        if op == "$gt":
            return np.asarray(column > operand, dtype=np.bool_)
        if op == "$gte":
            return np.asarray(column >= operand, dtype=np.bool_)
        if op == "$lt":
            return np.asarray(column < operand, dtype=np.bool_)
        return np.asarray(column <= operand, dtype=np.bool_)


def _isin(column: npt.NDArray[Any], wanted: Sequence[int] | npt.NDArray[Any]) -> BoolArray:
    if len(wanted) == 0:
        return np.zeros(len(column), dtype=np.bool_)
    if len(wanted) == 1:
        return np.asarray(column == wanted[0], dtype=np.bool_)
    return np.isin(column, np.asarray(wanted))


class _Metadata(_Node):
    """One operator on one metadata key. ``$ne``, ``$nin`` and ``$not_contains`` are
    the complements of ``$eq``, ``$in`` and ``$contains``, so they match a row without
    the key."""

    def __init__(self, key: str, op: str, operand: Any) -> None:
        self.key, self.op, self.operand = key, op, operand

    def mask(self, rows: RowSource) -> BoolArray:
        numbers, codes, table = rows.metadata_column(self.key)
        op = _NEGATED.get(self.op, self.op)
        if op in _RANGE:
            return _range_mask(op, numbers, self.operand)
        if op == "$exists":
            present = np.asarray(codes >= 0, dtype=np.bool_)
            return present if self.operand else ~present
        if op == "$contains":
            hit = _isin(codes, table.containing(self.operand))
        else:  # $eq, $in
            hit = self.operand.mask(numbers, codes, table)
        return ~hit if op != self.op else hit


class _Link(_Node):
    """One operator on the linked event's seq or turn (-1 in the column: no event)."""

    def __init__(self, key: str, op: str, operand: Any) -> None:
        self.name, self.op, self.operand = key[1:], op, operand

    def mask(self, rows: RowSource) -> BoolArray:
        column = rows.link_column(self.name)
        present = np.asarray(column >= 0, dtype=np.bool_)
        op = _NEGATED.get(self.op, self.op)
        if op == "$exists":
            return present if self.operand else ~present
        if op in _RANGE:
            return present & _range_mask(op, column, self.operand)
        hit = present & _isin(column, self.operand)
        return ~hit if op != self.op else hit


# --- parsing ---------------------------------------------------------------------------

_SCALARS = "a str, number, bool or None"


# Values in messages are shown cut short and a few levels deep: a hostile operand (a list
# nested thousands deep, a megabyte string) must give a short InvalidFilter, not a
# RecursionError from repr or a message the size of the filter.
_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxstring, _SHOWN.maxother = 3, 80, 80


def _shown(value: object) -> str:
    return _SHOWN.repr(value)


def _plain(operand: Any) -> Any:
    """A numpy scalar as the Python value it holds (``np.int64(3)`` is 3), in a list
    operand too: filters are often built from numpy results."""
    if isinstance(operand, np.generic):
        return operand.item()
    if isinstance(operand, (list, tuple)):
        return [item.item() if isinstance(item, np.generic) else item for item in operand]
    return operand


def _where(key: str, path: str) -> str:
    return f"filter on {_shown(key)}" + (f" (in {path})" if path else "")


def _scalar_key(value: Any, key: str, op: str, path: str, what: str) -> ValueKey:
    if isinstance(value, float) and math.isnan(value):
        raise InvalidFilter(f"{_where(key, path)}: {op} does not take NaN (it equals "
                            "nothing); use $exists, or a range")
    if value is None or isinstance(value, (bool, int, float, str)):
        found = value_key(value)
        assert found is not None
        return found
    raise InvalidFilter(f"{_where(key, path)}: {op} takes {what}, not {_shown(value)}")


def _equality_key(value: Any, key: str, op: str, path: str) -> ValueKey:
    what = f"{_SCALARS}, or a list of those"
    if isinstance(value, (list, tuple)):
        items = [_scalar_key(item, key, op, path, what) for item in value]
        return ("l", tuple(items))
    return _scalar_key(value, key, op, path, what)


def _link_value(value: Any, key: str, op: str, path: str) -> int:
    number = value if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(value, float) and value.is_integer():
        number = int(value)
    if number is None or not _INT64[0] <= number <= _INT64[1]:
        raise InvalidFilter(f"{_where(key, path)}: {op} compares the linked event's "
                            f"{key[1:]}, an int; not {_shown(value)}")
    return number


def _values(operand: Any, key: str, op: str, path: str) -> list[Any]:
    if op in ("$eq", "$ne"):
        return [operand]
    if not isinstance(operand, (list, tuple, set, frozenset)):
        raise InvalidFilter(f"{_where(key, path)}: {op} takes a list of values, not "
                            f"{_shown(operand)}")
    return list(operand)


def _number(operand: Any, key: str, op: str, path: str) -> float | int:
    if isinstance(operand, (int, float)) and not isinstance(operand, bool):
        try:
            if math.isfinite(operand):
                return operand
        except OverflowError:  # an int past float's range
            pass
    raise InvalidFilter(f"{_where(key, path)}: {op} takes a finite number (an int or a "
                        f"float, not a bool or a str), not {_shown(operand)}")


def _condition(key: str, op: Any, operand: Any, path: str) -> _Node:
    operand = _plain(operand)
    link = key in LINKS
    allowed = _LINK_OPERATORS if link else OPERATORS
    if op not in allowed:
        hint = (" ($contains tests list-valued metadata, not the linked event)"
                if link and op in _CONTAINS else "")
        raise InvalidFilter(f"{_where(key, path)}: unknown operator {_shown(op)}{hint}; use "
                            f"one of {', '.join(allowed)}")
    if op == "$exists":
        if not isinstance(operand, bool):
            raise InvalidFilter(f"{_where(key, path)}: $exists takes True or False, not "
                                f"{_shown(operand)}")
        return _Link(key, op, operand) if link else _Metadata(key, op, operand)
    if op in _RANGE:
        number = _number(operand, key, op, path)
        if link:
            in_range = isinstance(number, int) and _INT64[0] <= number <= _INT64[1]
            return _Link(key, op, number if in_range else float(number))
        return _Metadata(key, op, float(number))
    if op in _CONTAINS:
        what = f"one {_SCALARS} (an element of the list)"
        return _Metadata(key, op, _scalar_key(operand, key, op, path, what))
    values = _values(operand, key, op, path)
    if link:
        ints = [_link_value(value, key, op, path) for value in values]
        return _Link(key, op, np.array(ints, dtype=np.int64))
    return _Metadata(key, op, _Wanted([_equality_key(value, key, op, path)
                                       for value in values]))


def _parse(spec: Any, path: str, depth: int) -> _Node:
    if not isinstance(spec, Mapping):
        where = f"{path} holds" if path else "a filter is"
        raise InvalidFilter(f"{where} a {type(spec).__name__}: a filter is a mapping of "
                            "metadata keys, $seq, $turn, $and or $or to conditions")
    parts: list[_Node] = []
    for key, value in spec.items():
        if key in LOGICAL:
            at = f"{path}.{key}" if path else key
            if depth >= MAX_FILTER_DEPTH:
                raise InvalidFilter(f"filter: {at} nests $and / $or more than "
                                    f"{MAX_FILTER_DEPTH} levels deep; flatten it")
            if not isinstance(value, (list, tuple)) or not value:
                raise InvalidFilter(f"filter: {at} takes a non-empty list of filters "
                                    f"(mappings), not {_shown(value)}")
            children = [_parse(item, f"{at}[{i}]", depth + 1) for i, item in enumerate(value)]
            parts.append(_All(children) if key == "$and" else _Any(children))
            continue
        if not isinstance(key, str) or (key.startswith("$") and key not in LINKS):
            raise InvalidFilter(f"filter key {_shown(key)}{f' (in {path})' if path else ''}: "
                                "use a metadata key (a str), or one of "
                                f"{', '.join(LINKS + LOGICAL)}")
        if not isinstance(value, Mapping):
            parts.append(_condition(key, "$eq", value, path))
            continue
        if not value:
            raise InvalidFilter(f"{_where(key, path)} has no condition: give an operator "
                                f"({', '.join(OPERATORS)}) or a value to equal")
        for op, operand in value.items():
            if isinstance(op, str) and not op.startswith("$"):
                raise InvalidFilter(f"{_where(key, path)}: {_shown(op)} is not an operator "
                                    "(maps in metadata are not matched field by field); "
                                    f"use one of {', '.join(OPERATORS)}")
            parts.append(_condition(key, op, operand, path))
    return parts[0] if len(parts) == 1 else _All(parts)


class VectorFilter:
    """Conditions a document must meet to be searched. Built from a mapping whose keys
    are metadata keys, ``$seq`` / ``$turn`` (the linked event), ``$and`` or ``$or``::

        {"role": "user"}                          equality (numbers compare by value)
        {"role": {"$ne": "tool"}}                 $eq $ne
        {"tag": {"$in": ["deploy", "ci"]}}        $in $nin (a list of values)
        {"score": {"$gte": 0.5, "$lt": 2}}        $gt $gte $lt $lte (numbers)
        {"due": {"$exists": True}}                the key is there (any value, None too)
        {"tags": {"$contains": "urgent"}}         a list-valued key holds the value
        {"tags": {"$not_contains": "spam"}}       ... does not (or the key is missing)
        {"tags": ["a", "b"]}                      the whole list, in order
        {"$seq": {"$gte": 100}, "$turn": 3}       the linked event's seq or turn
        {"$or": [{"role": "user"}, {"$and": [{"role": "tool"}, {"n": {"$gt": 2}}]}]}

    Keys of one mapping, and operators on one key, must all hold (an implicit $and).
    ``$and`` and ``$or`` take non-empty lists of filters, nested at most
    ``MAX_FILTER_DEPTH`` levels.

    Values are compared as LangGraph's stores and Chroma compare them:

    - Numbers by value (1 == 1.0; ranges in float64); a bool is not a number, a str is
      never a number: ``{"n": {"$gt": 1}}`` skips ``"5"`` and ``True`` without error.
    - A scalar never equals a list: ``{"tags": "a"}`` does not match ``["a", "b"]``
      (Chroma and LangGraph alike; use ``$contains``). A list equals a list of equal
      elements in the same order (LangGraph's ``search(filter=)``).
    - A document without the key matches ``$eq``, ``$in``, the ranges, ``$contains`` and
      ``$exists: True`` never, and ``$ne``, ``$nin``, ``$not_contains`` and
      ``$exists: False`` always: the negations are exact complements, as in Chroma
      since 0.5.12 and LangGraph's in-memory store. ``None`` is a value, not an absence.
    - Maps and bytes in metadata count as present and equal nothing a filter names.

    An unknown operator, or an operand of the wrong type, raises InvalidFilter naming
    the key, the operator and what it takes.
    """

    def __init__(self, conditions: Mapping[str, Any]) -> None:
        self.conditions = conditions
        self._root = _parse(conditions, "", 0)

    def __repr__(self) -> str:
        return f"VectorFilter({self.conditions!r})"

    @classmethod
    def of(cls, value: VectorFilter | Mapping[str, Any] | None) -> VectorFilter | None:
        """``value`` as a filter: a filter as it is, a mapping parsed, None as None."""
        if value is None or isinstance(value, VectorFilter):
            return value
        return cls(value)

    def mask(self, rows: RowSource) -> BoolArray:
        """Which rows of ``rows`` match."""
        return self._root.mask(rows)
