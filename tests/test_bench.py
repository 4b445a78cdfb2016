"""tools/bench.py's vector rows (tools/bench_vectors.py): the parts that decide what is
measured (the timings themselves are never asserted)."""

from __future__ import annotations

import importlib
import os
import sys

import pytest

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, TOOLS)  # bench_vectors imports bench's helpers
    try:
        return importlib.import_module("bench_vectors")
    finally:
        sys.path.remove(TOOLS)


@pytest.mark.parametrize("threads", [None, 1, 2, 8])
def test_every_vector_search_contender_has_a_name_of_its_own(bench, threads):
    names = bench.search_contenders(threads)
    assert names[0] == "fsstore"
    assert len(set(names)) == len(names)
    assert len(names) == (1 if threads is None else min(threads, 2) + 1)


def test_faiss_on_one_core_is_measured_once(bench):
    assert bench.search_contenders(1) == ["fsstore", "faiss 1"]
