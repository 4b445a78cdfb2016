"""A hypothesis state machine: random upserts (one at a time and in bulk), deletes,
seals, compactions and reopens of a vector collection against a plain-dict model,
checking after every step that search agrees with a reference computation for every
metric and several filters, from the writer and from a fresh reader."""

from __future__ import annotations

import shutil
import tempfile

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from test_vectors import METRICS, assert_agrees

import fsstore
from fsstore import VectorDocument
from fsstore.vectors import tuning

DIM = 4
IDS = st.sampled_from([f"d{i}" for i in range(40)])
VECTORS = st.lists(st.integers(-3, 3), min_size=DIM, max_size=DIM)
DOCUMENTS = st.builds(
    VectorDocument, IDS, VECTORS,
    content=st.none() | st.text(max_size=3),
    metadata=st.fixed_dictionaries({}, optional={
        "color": st.sampled_from(["red", "blue", None, True, 1]),
        "n": st.integers(0, 9)}),
    seq=st.none() | st.integers(0, 30), turn=st.none() | st.integers(0, 4))
FILTERS = [None, {"color": "red"}, {"n": {"$gte": 4}}, {"$turn": {"$in": [1, 2]}},
           {"color": {"$in": [True, None]}, "$seq": {"$lt": 15}},
           {"color": {"$ne": "red"}, "n": {"$exists": True}},
           {"$or": [{"color": {"$nin": ["blue", None]}}, {"$turn": {"$exists": False}}]}]


class VectorMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.saved = (tuning.SEAL_ROWS, tuning.CHUNK_ROWS)
        tuning.SEAL_ROWS, tuning.CHUNK_ROWS = 6, 8
        self.root = tempfile.mkdtemp()
        self.store = fsstore.open_store(self.root)
        self.session = self.store.create_session("s")
        self.collection = self.session.create_collection("c", DIM)
        self.model: dict[str, VectorDocument] = {}

    def teardown(self) -> None:
        self.session.close()
        tuning.SEAL_ROWS, tuning.CHUNK_ROWS = self.saved
        shutil.rmtree(self.root)

    @rule(doc=DOCUMENTS)
    def upsert_one(self, doc):
        self.collection.upsert([doc])
        self.model[doc.id] = doc

    @rule(docs=st.lists(DOCUMENTS, min_size=6, max_size=14))
    def upsert_bulk(self, docs):  # at least SEAL_ROWS: written as a shard of its own
        self.collection.upsert(docs)
        for doc in docs:
            self.model[doc.id] = doc

    @rule(ids=st.lists(IDS, max_size=5))
    def delete(self, ids):
        expected = len({i for i in ids if i in self.model})
        assert self.collection.delete(ids) == expected
        for doc_id in ids:
            self.model.pop(doc_id, None)

    @rule()
    def seal(self):
        self.collection.seal()

    @rule()
    def compact(self):
        self.collection.compact()
        assert self.collection.info().deleted == 0

    @rule()
    def reopen(self):
        self.session.close()
        self.session = self.store.open_session("s")
        self.collection = self.session.collection("c")

    @invariant()
    def agrees_with_the_model(self):
        assert self.collection.count() == len(self.model)
        got = self.collection.get(sorted(self.model))
        for doc in got:
            expected = self.model[doc.id]
            assert doc.embedding.tolist() == expected.embedding
            assert (doc.content, doc.metadata, doc.seq, doc.turn) == (
                expected.content, expected.metadata, expected.seq, expected.turn)
        reader = self.store.read_session("s").collection("c")
        assert reader.count() == len(self.model)
        query = [1, -2, 0, 3]
        for metric in METRICS:
            for conditions in FILTERS:
                for source in (self.collection, reader):
                    assert_agrees(source.search(query, 5, metric=metric, filter=conditions),
                                  self.model, query, 5, metric, conditions)


VectorMachine.TestCase.settings = settings(max_examples=12, stateful_step_count=25,
                                           deadline=None)
test_vector_machine = VectorMachine.TestCase


class LongVectorMachine(VectorMachine):
    pass


LongVectorMachine.TestCase.settings = settings(max_examples=400, stateful_step_count=40,
                                               deadline=None)
test_vector_machine_long = pytest.mark.long(LongVectorMachine.TestCase)
