"""Vector search filters: every operator, their combinations, list-valued metadata,
missing keys, type mismatches and malformed filters; and, by hypothesis, agreement with a
plain-Python evaluator over random documents and random filter trees, on a collection
read from shards and the log, after compaction and from a reader."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fsstore
from fsstore import InvalidFilter, VectorDocument, VectorFilter
from fsstore.vectors import tuning
from fsstore.vectors.filters import MAX_FILTER_DEPTH, build_metadata_column

# --- a reference evaluator, written without fsstore's code ------------------------------

NEGATIONS = {"$ne": "$eq", "$nin": "$in", "$not_contains": "$contains"}


def reference_match(doc, conditions):
    """Whether ``doc`` meets ``conditions``, one document at a time, as the README says."""
    for key, spec in (conditions or {}).items():
        if key == "$and":
            if not all(reference_match(doc, part) for part in spec):
                return False
        elif key == "$or":
            if not any(reference_match(doc, part) for part in spec):
                return False
        else:
            ops = spec if isinstance(spec, dict) else {"$eq": spec}
            if not all(reference_condition(doc, key, op, operand)
                       for op, operand in ops.items()):
                return False
    return True


def reference_condition(doc, key, op, operand):
    if key in ("$seq", "$turn"):
        value = doc.seq if key == "$seq" else doc.turn
        present = value is not None
    else:
        present = key in doc.metadata
        value = doc.metadata.get(key)
    if op == "$exists":
        return present == operand
    if op in NEGATIONS:
        return not reference_condition(doc, key, NEGATIONS[op], operand)
    if not present:
        return False
    if op == "$eq":
        return same_value(value, operand)
    if op == "$in":
        return any(same_value(value, wanted) for wanted in operand)
    if op == "$contains":
        return isinstance(value, list) and any(same_value(item, operand) for item in value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    value, operand = float(value), float(operand)
    return {"$gt": value > operand, "$gte": value >= operand, "$lt": value < operand,
            "$lte": value <= operand}[op]


def same_value(stored, wanted):
    """A stored metadata value against a filter's value (a scalar, or a list of them)."""
    if isinstance(wanted, (list, tuple)):
        return (isinstance(stored, list) and len(stored) == len(wanted)
                and all(same_value(a, b) for a, b in zip(stored, wanted, strict=True)))
    if isinstance(stored, (list, dict, bytes)):
        return False
    if stored is None or wanted is None:
        return stored is None and wanted is None
    if isinstance(stored, (bool, str)) or isinstance(wanted, (bool, str)):
        return type(stored) is type(wanted) and stored == wanted
    return stored == wanted  # two numbers: by value, exactly


# --- helpers ----------------------------------------------------------------------------


@pytest.fixture
def small_shards(monkeypatch):
    monkeypatch.setattr(tuning, "SEAL_ROWS", 8)
    monkeypatch.setattr(tuning, "CHUNK_ROWS", 16)


def matching(source, conditions):
    """The ids ``search`` lets through ``conditions``: every match, since k is large."""
    return sorted(r.id for r in source.search([1, 0], 10_000, filter=conditions))


def expected(documents, conditions):
    return sorted(d.id for d in documents if reference_match(d, conditions))


def build(store, documents, split):
    """A collection holding ``documents[:split]`` in a shard and the rest in the log."""
    session = store.create_session("s")
    collection = session.create_collection("c", 2)
    if split:
        collection.upsert(documents[:split])
        collection.seal()
    if documents[split:]:
        collection.upsert(documents[split:])
    return session, collection


BIG = 2**53 + 1  # not a float: equality is exact, not through float64
DOCS = [
    VectorDocument("a", [1, 0], metadata={"role": "user", "n": 1, "tags": ["x", "y"],
                                          "flag": True}, seq=5, turn=1),
    VectorDocument("b", [1, 0.1], metadata={"role": "tool", "n": 2.5, "tags": ["y"],
                                            "flag": 1}, seq=9, turn=2),
    VectorDocument("c", [1, 0.2], metadata={"role": "user", "n": "3", "tags": [],
                                            "flag": None}, turn=2),
    VectorDocument("d", [1, 0.3], metadata={"role": ["user"], "n": 4,
                                            "tags": ["x", 1, True, None]}, seq=20, turn=3),
    VectorDocument("e", [1, 0.4], metadata={}, seq=21),
    VectorDocument("f", [1, 0.5], metadata={"role": {"nested": "user"}, "n": float("nan"),
                                            "tags": "x", "blob": b"x"}),
    VectorDocument("g", [1, 0.6], metadata={"role": "assistant", "n": BIG,
                                            "tags": [["x"]]}),
]
ALL = list("abcdefg")

CASES = [
    # equality and its complement; a document without the key is "not equal"
    ({"role": "user"}, ["a", "c"]),
    ({"role": {"$eq": "user"}}, ["a", "c"]),
    ({"role": {"$ne": "user"}}, ["b", "d", "e", "f", "g"]),
    ({"role": {"$in": ["tool", "assistant"]}}, ["b", "g"]),
    ({"role": {"$nin": ["tool", "user"]}}, ["d", "e", "f", "g"]),
    ({"role": {"$in": []}}, []),
    ({"role": {"$nin": []}}, ALL),
    ({"missing": {"$ne": 1}}, ALL),
    ({"missing": {"$eq": None}}, []),
    ({"flag": None}, ["c"]),
    ({"flag": {"$ne": None}}, ["a", "b", "d", "e", "f", "g"]),
    # numbers by value, exactly; bools and strs are not numbers
    ({"n": 1.0}, ["a"]),
    ({"n": "3"}, ["c"]),
    ({"n": 3}, []),
    ({"flag": 1}, ["b"]),
    ({"flag": True}, ["a"]),
    ({"flag": {"$in": [True, None]}}, ["a", "c"]),
    ({"n": BIG}, ["g"]),
    ({"n": BIG - 1}, []),
    ({"n": float(BIG - 1)}, []),
    # ranges: numbers only, NaN never in range
    ({"n": {"$gt": 2}}, ["b", "d", "g"]),
    ({"n": {"$gte": 2.5}}, ["b", "d", "g"]),
    ({"n": {"$lt": 2.5}}, ["a"]),
    ({"n": {"$lte": 2.5}}, ["a", "b"]),
    ({"n": {"$gt": 1, "$lt": 5}}, ["b", "d"]),
    ({"flag": {"$gte": 0}}, ["b"]),  # True is not a number
    ({"tags": {"$gte": 0}}, []),
    # $exists: None and NaN are there; a key that is not is not
    ({"flag": {"$exists": True}}, ["a", "b", "c"]),
    ({"flag": {"$exists": False}}, ["d", "e", "f", "g"]),
    ({"n": {"$exists": True}}, ["a", "b", "c", "d", "f", "g"]),
    ({"blob": {"$exists": True}}, ["f"]),
    # list-valued metadata: $contains an element; equality with a whole list, in order
    ({"tags": {"$contains": "x"}}, ["a", "d"]),
    ({"tags": {"$contains": "y"}}, ["a", "b"]),
    ({"tags": {"$contains": 1}}, ["d"]),
    ({"tags": {"$contains": 1.0}}, ["d"]),
    ({"tags": {"$contains": True}}, ["d"]),
    ({"tags": {"$contains": None}}, ["d"]),
    ({"tags": {"$contains": "z"}}, []),
    ({"role": {"$contains": "user"}}, ["d"]),
    ({"tags": {"$not_contains": "x"}}, ["b", "c", "e", "f", "g"]),
    ({"tags": ["x", "y"]}, ["a"]),
    ({"tags": ("x", "y")}, ["a"]),
    ({"tags": ["y", "x"]}, []),
    ({"tags": []}, ["c"]),
    ({"tags": "x"}, ["f"]),
    ({"role": ["user"]}, ["d"]),
    ({"tags": {"$in": [["y"], []]}}, ["b", "c"]),
    ({"tags": {"$ne": ["x", "y"]}}, ["b", "c", "d", "e", "f", "g"]),
    ({"tags": {"$eq": ["x", 1.0, True, None]}}, ["d"]),
    # maps and bytes are present and equal to nothing a filter names
    ({"blob": {"$ne": "x"}}, ALL),
    # the linked event; a document without one is "not equal" too
    ({"$seq": 5}, ["a"]),
    ({"$seq": {"$ne": 5}}, ["b", "c", "d", "e", "f", "g"]),
    ({"$seq": {"$gte": 9}}, ["b", "d", "e"]),
    ({"$seq": {"$gt": 8.5, "$lt": 20}}, ["b"]),
    ({"$seq": {"$exists": False}}, ["c", "f", "g"]),
    ({"$turn": {"$in": [2, 3]}}, ["b", "c", "d"]),
    ({"$turn": {"$nin": [1, 2]}}, ["d", "e", "f", "g"]),
    ({"$turn": {"$exists": True}}, ["a", "b", "c", "d"]),
    ({"$seq": {"$in": [-1]}}, []),
    # combinations
    ({"$turn": 2, "role": "user"}, ["c"]),
    ({"$and": [{"role": "user"}, {"n": {"$lt": 2}}]}, ["a"]),
    ({"$or": [{"role": "tool"}, {"tags": {"$contains": True}}]}, ["b", "d"]),
    ({"$or": [{"$and": [{"role": "user"}, {"$turn": 2}]}, {"$seq": {"$gte": 20}}]},
     ["c", "d", "e"]),
    ({"role": "user", "$or": [{"n": 1}, {"n": "3"}]}, ["a", "c"]),
    ({"$and": [{"$or": [{"flag": {"$exists": False}}, {"flag": None}]},
               {"$or": [{"n": {"$gte": 4}}, {"tags": []}]}]}, ["c", "d", "g"]),
    ({"$or": [{"missing": 1}]}, []),
    ({"$and": [{"role": {"$ne": "user"}}, {"role": {"$nin": ["tool"]}}]},
     ["d", "e", "f", "g"]),
    ({}, ALL),
]


@pytest.mark.parametrize("conditions, ids", CASES)
def test_every_operator_selects_as_documented(store, conditions, ids):
    assert expected(DOCS, conditions) == ids  # the reference reads the rules the same way
    session, collection = build(store, DOCS, 3)
    with session:
        assert matching(collection, conditions) == ids
        assert matching(collection, VectorFilter(conditions)) == ids
        collection.compact()
        assert matching(collection, conditions) == ids
    assert matching(store.read_session("s").collection("c"), conditions) == ids


def test_a_filter_is_parsed_once_and_used_on_every_source(store):
    session, collection = build(store, DOCS, 4)
    with session:
        conditions = VectorFilter({"tags": {"$contains": "y"}, "$seq": {"$exists": True}})
        assert matching(collection, conditions) == ["a", "b"]
        collection.upsert([VectorDocument("h", [0, 1], metadata={"tags": ["y"]}, seq=1)])
        assert matching(collection, conditions) == ["a", "b", "h"]  # the log's rows too
        assert "tags" in repr(conditions)


def test_a_narrow_contains_filter_over_a_large_shard_finds_its_rows(store):
    matrix = np.random.default_rng(3).standard_normal((3000, 2)).astype(np.float32)
    docs = [VectorDocument(f"d{i}", row, metadata={"tags": [f"t{i % 500}", "all"]})
            for i, row in enumerate(matrix)]
    with store.create_session("s") as session:
        collection = session.create_collection("c", 2)
        collection.upsert(docs)
        collection.seal()
        assert collection.info().shards == 1
        wanted = sorted(f"d{i}" for i in range(7, 3000, 500))
        assert matching(collection, {"tags": {"$contains": "t7"}}) == wanted
        assert len(matching(collection, {"tags": {"$contains": "all"}})) == 3000
        assert matching(collection, {"$and": [{"tags": {"$contains": "t7"}},
                                              {"tags": {"$not_contains": "all"}}]}) == []


def test_a_column_counts_only_metadata_values_as_present():
    absent = object()  # how a row source marks a row without the key
    values = [1, absent, "1", True, None, [1], {"a": 1}, b"x", 1.0, float("nan"), BIG, BIG]
    numbers, codes, table = build_metadata_column(values, len(values))
    assert codes[1] == -1 and (np.delete(codes, 1) >= 0).all()
    assert codes[0] == codes[8] == codes[9]  # numbers float64 holds: told apart by value
    assert len({codes[0], codes[2], codes[3], codes[4], codes[5], codes[6], codes[10]}) == 7
    assert codes[6] == codes[7]  # a map and bytes: equal to nothing named, one code
    assert codes[10] == codes[11]  # an int float64 would round: a code of its own
    assert (numbers[[0, 8]] == 1).all() and numbers[10] == float(BIG)
    assert np.isnan(numbers[[1, 2, 3, 4, 5, 6, 7, 9]]).all()
    assert len(table) == 7


def test_a_column_of_distinct_numbers_needs_one_table_entry():
    values = [i / 7 for i in range(1000)]
    numbers, codes, table = build_metadata_column(values, len(values))
    assert len(table) == 1 and (codes == 0).all()
    assert numbers.tolist() == values


# --- malformed filters --------------------------------------------------------------------


def nested(depth):
    conditions = {"role": "user"}
    for _ in range(depth):
        conditions = {"$and": [conditions]}
    return conditions


BAD = [
    ({"role": {"$regex": "u"}}, ["'role'", "$regex", "$contains", "$exists"]),
    ({"role": {"$not": "u"}}, ["'role'", "$not", "$nin"]),
    ({"$id": "a"}, ["'$id'", "$seq", "$and", "$or"]),
    ({3: 1}, ["3", "metadata key"]),
    ("role", ["a filter is a str", "mapping"]),
    ({"role": {}}, ["'role'", "no condition"]),
    ({"role": {"nested": "user"}}, ["'role'", "'nested' is not an operator"]),
    ({"$and": {"role": "user"}}, ["$and", "non-empty list"]),
    ({"$or": []}, ["$or", "non-empty list"]),
    ({"$or": "role"}, ["$or", "non-empty list"]),
    ({"$and": ["role"]}, ["$and[0]", "str", "mapping"]),
    ({"$or": [{"role": "user"}, {"$and": [{"n": {"$gt": "x"}}]}]},
     ["'n'", "$or[1].$and[0]", "$gt", "finite number"]),
    (nested(MAX_FILTER_DEPTH + 1), ["$and", f"more than {MAX_FILTER_DEPTH}"]),
    ({"n": {"$gt": "3"}}, ["'n'", "$gt", "finite number"]),
    ({"n": {"$lte": True}}, ["'n'", "$lte", "not a bool"]),
    ({"n": {"$gt": float("nan")}}, ["'n'", "$gt"]),
    ({"n": {"$lt": float("inf")}}, ["'n'", "$lt"]),
    ({"n": {"$gt": 10**400}}, ["'n'", "$gt", "finite number"]),
    ({"n": {"$gte": None}}, ["'n'", "$gte"]),
    ({"n": float("nan")}, ["'n'", "$eq", "NaN"]),
    ({"n": {"$in": [1, float("nan")]}}, ["'n'", "$in", "NaN"]),
    ({"n": {"$in": "abc"}}, ["'n'", "$in", "list of values"]),
    ({"n": {"$nin": 5}}, ["'n'", "$nin", "list of values"]),
    ({"n": {"$in": [[[1]]]}}, ["'n'", "$in", "or a list of those"]),
    ({"n": [{"a": 1}]}, ["'n'", "$eq", "or a list of those"]),
    ({"n": {"$ne": b"x"}}, ["'n'", "$ne", "str, number, bool or None"]),
    ({"n": {"$eq": {1, 2}}}, ["'n'", "$eq"]),
    ({"n": {"$exists": 1}}, ["'n'", "$exists", "True or False"]),
    ({"n": {"$exists": "yes"}}, ["'n'", "$exists", "True or False"]),
    ({"tags": {"$contains": ["x"]}}, ["'tags'", "$contains", "an element of the list"]),
    ({"tags": {"$not_contains": {"a": 1}}}, ["'tags'", "$not_contains"]),
    ({"$seq": {"$contains": 1}}, ["'$seq'", "$contains", "list-valued metadata"]),
    ({"$seq": "5"}, ["'$seq'", "$eq", "an int"]),
    ({"$seq": float("inf")}, ["'$seq'", "an int"]),
    ({"$seq": 2**70}, ["'$seq'", "an int"]),
    ({"$turn": {"$in": [1.5]}}, ["'$turn'", "$in", "an int"]),
    ({"$turn": {"$nin": [True]}}, ["'$turn'", "$nin", "an int"]),
    ({"$turn": {"$gt": "1"}}, ["'$turn'", "$gt", "finite number"]),
]


@pytest.mark.parametrize("conditions, fragments", BAD)
def test_a_malformed_filter_raises_invalid_filter_naming_key_and_operator(
        store, conditions, fragments):
    with pytest.raises(InvalidFilter) as caught:
        VectorFilter(conditions)
    for fragment in fragments:
        assert fragment in str(caught.value), (fragment, str(caught.value))
    with store.create_session("s") as session:
        collection = session.create_collection("c", 2)
        collection.upsert(DOCS)
        with pytest.raises(InvalidFilter):
            collection.search([1, 0], 3, filter=conditions)


def test_an_invalid_filter_is_a_value_error_and_a_query_error():
    with pytest.raises(ValueError):
        VectorFilter({"n": {"$bogus": 1}})
    with pytest.raises(fsstore.InvalidQuery):
        VectorFilter({"n": {"$bogus": 1}})


def test_the_deepest_allowed_nesting_is_accepted(store):
    session, collection = build(store, DOCS, 0)
    with session:
        assert matching(collection, nested(MAX_FILTER_DEPTH)) == ["a", "c"]


# --- agreement with the reference, by hypothesis ------------------------------------------

KEYS = ["k", "tags", "missing"]
COMMON = st.sampled_from(["x", "y", None, True, False, 0, 1, 2.5])
RARE = st.sampled_from(["", -0.0, 1.0, -1, 2**53, 2**53 + 1, float(2**53), 2**63,
                        float("inf")])
SCALARS = st.one_of(COMMON, COMMON, COMMON, RARE)
STORED = st.one_of(
    SCALARS, SCALARS, st.lists(SCALARS, max_size=3), st.lists(SCALARS, max_size=3),
    st.sampled_from([float("nan"), {"x": 1}, b"x", [{"x": 1}], [b"x"], [["x"]], [[]]]))
OPERANDS = SCALARS
LIST_OPERANDS = st.lists(OPERANDS, max_size=3)
RANGE_OPERANDS = st.sampled_from([-1, 0, 0.5, 1, 2.5, 2**53, float(2**53), 2**63])


@st.composite
def documents(draw):
    count = draw(st.integers(0, 30))
    return [VectorDocument(
        f"d{i}", [1, draw(st.integers(-3, 3))],
        metadata=draw(st.fixed_dictionaries({}, optional={"k": STORED, "tags": STORED})),
        seq=draw(st.none() | st.integers(0, 20)), turn=draw(st.none() | st.integers(0, 3)))
        for i in range(count)]


def metadata_condition(op):
    if op in ("$eq", "$ne"):
        return OPERANDS | OPERANDS | LIST_OPERANDS
    if op in ("$in", "$nin"):
        return st.lists(OPERANDS | OPERANDS | LIST_OPERANDS, max_size=3)
    if op in ("$gt", "$gte", "$lt", "$lte"):
        return RANGE_OPERANDS
    if op == "$exists":
        return st.booleans()
    return OPERANDS  # $contains, $not_contains


def link_condition(op):
    if op in ("$eq", "$ne"):
        return st.integers(-1, 22)
    if op in ("$in", "$nin"):
        return st.lists(st.integers(-1, 22), max_size=3)
    if op == "$exists":
        return st.booleans()
    return st.integers(-1, 22) | st.sampled_from([2.5, 10.0])


METADATA_OPS = ["$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$exists",
                "$contains", "$not_contains"]
LINK_OPS = METADATA_OPS[:9]


@st.composite
def leaves(draw):
    key = draw(st.sampled_from(KEYS + ["$seq", "$turn"]))
    link = key.startswith("$")
    ops = draw(st.lists(st.sampled_from(LINK_OPS if link else METADATA_OPS), min_size=1,
                        max_size=2, unique=True))
    spec = {op: draw(link_condition(op) if link else metadata_condition(op)) for op in ops}
    if list(spec) == ["$eq"] and draw(st.booleans()):
        return {key: spec["$eq"]}  # the shorthand
    return {key: spec}


def merged(parts):
    result = {}
    for part in parts:
        result.update(part)
    return result


FILTERS = st.recursive(
    leaves(),
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=3).map(lambda parts: {"$and": parts}),
        st.lists(children, min_size=1, max_size=3).map(lambda parts: {"$or": parts}),
        st.lists(children, min_size=1, max_size=3).map(merged)),
    max_leaves=5)


def agreement(docs, deletes, filters, tmp_path_factory):
    root = tmp_path_factory.mktemp("filters")
    store = fsstore.open_store(root)
    live = {d.id: d for d in docs}
    with store.create_session("s") as session:
        collection = session.create_collection("c", 2)
        collection.upsert(docs[: len(docs) // 2])  # a shard when it has SEAL_ROWS or more
        for doc in docs[len(docs) // 2:]:
            collection.upsert([doc])  # a seal every SEAL_ROWS, the rest in the log
        gone = [doc.id for doc in docs[::3]][:deletes]
        collection.delete(gone)
        for doc_id in gone:
            live.pop(doc_id)
        for conditions in filters:
            assert matching(collection, conditions) == expected(live.values(), conditions), \
                conditions
        collection.compact()
        for conditions in filters:
            assert matching(collection, conditions) == expected(live.values(), conditions), \
                conditions
    reader = store.read_session("s").collection("c")
    for conditions in filters:
        assert matching(reader, conditions) == expected(live.values(), conditions), \
            conditions
    shutil.rmtree(root)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(docs=documents(), deletes=st.integers(0, 4),
       filters=st.lists(FILTERS, min_size=1, max_size=6))
def test_filters_agree_with_the_reference_evaluator(tmp_path_factory, small_shards, docs,
                                                    deletes, filters):
    agreement(docs, deletes, filters, tmp_path_factory)


@pytest.mark.long
@settings(max_examples=1500, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(docs=documents(), deletes=st.integers(0, 4),
       filters=st.lists(FILTERS, min_size=1, max_size=12))
def test_filters_agree_with_the_reference_evaluator_long(tmp_path_factory, small_shards,
                                                         docs, deletes, filters):
    agreement(docs, deletes, filters, tmp_path_factory)


def test_numpy_scalars_in_a_filter_are_the_numbers_they_hold(store):
    with store.create_session("s") as session:
        collection = session.create_collection("c", 2)
        collection.upsert([VectorDocument("x", [1, 0], metadata={"n": 3, "t": ["a"]}),
                           VectorDocument("y", [0, 1], metadata={"n": 4, "t": ["b"]})])
        for conditions in ({"n": np.int64(3)}, {"n": {"$lt": np.float32(3.5)}},
                           {"n": {"$in": [np.int32(3), np.int8(9)]}},
                           {"t": {"$contains": np.str_("a")}},
                           {"n": {"$exists": np.bool_(True)}, "t": ["a"]}):
            assert [r.id for r in collection.search([1, 0], 5, filter=conditions)] == ["x"]


@pytest.mark.parametrize("op", ["$eq", "$in", "$gt", "$exists", "$contains"])
def test_an_operand_nested_thousands_deep_is_refused_in_a_short_message(op):
    deep: list = []
    inner = deep
    for _ in range(5000):
        inner.append([])
        inner = inner[0]
    with pytest.raises(InvalidFilter) as caught:
        VectorFilter({"n": {op: deep}})
    assert len(str(caught.value)) < 300
