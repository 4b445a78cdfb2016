"""tools/bench.py: the parts that decide what is measured (the timings themselves are
never asserted)."""

from __future__ import annotations

import importlib.util
import os

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                     "tools", "bench.py")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("fsstore_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("threads", [None, 1, 2, 8])
def test_every_vector_search_contender_has_a_name_of_its_own(bench, threads):
    names = bench.search_contenders(threads)
    assert names[0] == "fsstore"
    assert len(set(names)) == len(names)
    assert len(names) == (1 if threads is None else min(threads, 2) + 1)


def test_faiss_on_one_core_is_measured_once(bench):
    assert bench.search_contenders(1) == ["fsstore", "faiss 1"]
