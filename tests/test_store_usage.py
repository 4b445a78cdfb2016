"""A store's usage: its sessions' usage folds summed, by model, session or day, with a
damaged session left out and named (fsstore/store_usage.py)."""

from __future__ import annotations

import asyncio
import os

import pytest

import fsstore
from fsstore import UsageTotals


def assistant(model: str, tokens_in: int, tokens_out: int, cost: float,
              currency: str = "USD") -> dict:
    return {"role": "assistant", "parts": [{"type": "text", "text": "ok"}],
            "metadata": {"model": model, "usage": {"input": tokens_in, "output": tokens_out},
                         "cost": {"amount": cost, "currency": currency}}}


@pytest.fixture
def store(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    with store.create_session("a") as session:
        session.messages.append({"role": "user", "parts": [{"type": "text", "text": "hi"}]})
        session.messages.append(assistant("big", 100, 10, 0.5))
        session.messages.append(assistant("small", 20, 2, 0.25))
    with store.create_session("b") as session:
        session.messages.append(assistant("big", 300, 30, 1.5))
        session.messages.append(assistant("small", 5, 1, 3.0, currency="EUR"))
    store.create_session("empty").close()
    return store


def test_store_usage_sums_every_session(store):
    usage = store.usage()
    assert list(usage) == [""] and usage.skipped == {}
    total = usage[""]
    assert (total.input, total.output, total.messages) == (425, 43, 4)
    assert total.cost == {"USD": 2.25, "EUR": 3.0}
    assert usage.total == total


def test_store_usage_groups_by_model_session_and_day(store):
    by_model = store.usage(by="model")
    assert {model: (t.input, t.output, t.messages) for model, t in by_model.items()} == {
        "big": (400, 40, 2), "small": (25, 3, 2)}
    assert by_model["small"].cost == {"USD": 0.25, "EUR": 3.0}
    by_session = store.usage(by="session")
    assert {sid: t.input for sid, t in by_session.items()} == {"a": 120, "b": 305}
    assert by_session["a"] == store.read_session("a").usage()[""]
    by_day = store.usage(by="day")
    assert len(by_day) == 1 and next(iter(by_day.values())).input == 425


def test_store_usage_of_chosen_sessions_only(store):
    assert store.usage(sessions=["b"])[""].input == 305
    assert store.usage(sessions=["empty"]) == {}
    with pytest.raises(fsstore.SessionNotFound):
        store.usage(sessions=["nowhere"])
    with pytest.raises(fsstore.InvalidSetting, match="iterable of session ids"):
        store.usage(sessions="b")


def test_store_usage_refuses_an_unknown_grouping(store):
    with pytest.raises(fsstore.InvalidSetting, match="'model', 'session' or 'day'"):
        store.usage(by="week")


def test_a_damaged_session_is_left_out_of_store_usage_and_named(store):
    with open(os.path.join(store.path, "sessions", "b", "session.json"), "w") as handle:
        handle.write("{not json")
    usage = store.usage(by="session")
    assert list(usage) == ["a"]
    assert list(usage.skipped) == ["b"] and "session.json" in usage.skipped["b"]
    assert store.usage(sessions=["b"]).skipped.keys() == {"b"}  # named, not raised


def test_store_usage_counts_an_edit_once_and_keeps_a_deleted_message_spent(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    with store.create_session("s") as session:
        first = session.messages.append(assistant("m", 10, 1, 0.1))
        session.messages.edit({**assistant("m", 40, 4, 0.4), "id": first.id})
        doomed = session.messages.append(assistant("m", 5, 5, 0.05))
        session.messages.delete(doomed.id)
    total = store.usage()[""]
    assert (total.input, total.output, total.messages) == (45, 9, 2)


def test_store_ausage_is_the_twin_of_usage(store):
    async def main() -> fsstore.StoreUsage:
        return await store.ausage(by="model", sessions=iter(["a"]))

    usage = asyncio.run(main())
    assert isinstance(usage["big"], UsageTotals) and usage["big"].input == 100
    assert usage == store.usage(by="model", sessions=["a"])


def test_a_fork_counts_only_what_came_after_its_fork_point(store):
    with store.open_session("a") as session:
        fork = session.fork("a-fork")
    with fork:
        fork.messages.append(assistant("big", 1000, 100, 2.0))
    by_session = store.usage(by="session")
    assert by_session["a"].input == 120 and by_session["a-fork"].input == 1000
    assert by_session["a-fork"].cost == {"USD": 2.0}
    assert store.usage()[""].input == 425 + 1000  # the shared history counted once
    by_model = store.usage(by="model")
    assert (by_model["big"].input, by_model["small"].input) == (1400, 25)
    # Alone, or with its parent left out, a fork counts its whole history.
    assert store.usage(sessions=["a-fork"])[""].input == 1120


def test_a_fork_without_spend_of_its_own_adds_nothing(store):
    store.fork_session("b", "b-fork").close()
    assert "b-fork" not in store.usage(by="session")
    assert store.usage()[""].input == 425
    store.delete_session("b")
    assert store.usage(by="session")["b-fork"].input == 305  # its history is only there
