"""LangChain's own standard test suites (langchain-tests), run against fsstore's
LangChain adapters: the key-value stores (sync and async) and the vector store."""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")

from langchain_tests.integration_tests import (  # noqa: E402
    BaseStoreAsyncTests,
    BaseStoreSyncTests,
    VectorStoreIntegrationTests,
)

from fsstore.integrations.langchain import (  # noqa: E402
    FsstoreByteStore,
    FsstoreStore,
    FsstoreVectorStore,
)


def _mark_async_tests(*suites: type) -> None:
    """The suites' async tests are plain ``async def``s, which LangChain runs under
    pytest-asyncio's auto mode: mark them (the functions themselves, so the suites'
    check that no standard test is overridden still holds) rather than change the
    project's asyncio mode."""
    for suite in suites:
        for name in dir(suite):
            test = getattr(suite, name)
            if name.startswith("test_") and inspect.iscoroutinefunction(test):
                pytest.mark.asyncio(test)


_mark_async_tests(BaseStoreAsyncTests, VectorStoreIntegrationTests)


@pytest.fixture
def byte_store(tmp_path) -> Iterator[FsstoreByteStore]:
    with FsstoreByteStore(tmp_path / "store", namespace="cache:v1/../x") as kv:
        yield kv


@pytest.fixture
def any_store(tmp_path) -> Iterator[FsstoreStore]:
    with FsstoreStore(tmp_path / "store", namespace="docs") as kv:
        yield kv


class TestByteStoreSync(BaseStoreSyncTests[bytes]):
    @pytest.fixture
    def kv_store(self, byte_store: FsstoreByteStore) -> FsstoreByteStore:
        return byte_store

    @pytest.fixture
    def three_values(self) -> tuple[bytes, bytes, bytes]:
        return b"foo", b"\x00bar\xff", b""


class TestByteStoreAsync(BaseStoreAsyncTests[bytes]):
    @pytest.fixture
    def kv_store(self, byte_store: FsstoreByteStore) -> FsstoreByteStore:
        return byte_store

    @pytest.fixture
    def three_values(self) -> tuple[bytes, bytes, bytes]:
        return b"foo", b"\x00bar\xff", b""


class TestStoreSync(BaseStoreSyncTests[object]):
    @pytest.fixture
    def kv_store(self, any_store: FsstoreStore) -> FsstoreStore:
        return any_store

    @pytest.fixture
    def three_values(self) -> tuple[object, object, object]:
        return {"a": [1, 2.5, None]}, "bar", b"\x01"


class TestStoreAsync(BaseStoreAsyncTests[object]):
    @pytest.fixture
    def kv_store(self, any_store: FsstoreStore) -> FsstoreStore:
        return any_store

    @pytest.fixture
    def three_values(self) -> tuple[object, object, object]:
        return {"a": [1, 2.5, None]}, "bar", b"\x01"


class TestVectorStore(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, tmp_path) -> Iterator[FsstoreVectorStore]:
        with FsstoreVectorStore(self.get_embeddings(), tmp_path / "store",
                                name="kb/main") as vectors:
            yield vectors
