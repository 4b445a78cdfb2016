"""A hypothesis state machine: random commits, state changes, snapshots, checkpoints,
forks, clears and reopens against a plain-dict model, checking state and history after
every step."""

from __future__ import annotations

import copy
import shutil
import tempfile

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import fsstore

KEYS = st.sampled_from(["a", "b", "c"])
LEAVES = st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=2)
VALUES = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=2)
                      | st.dictionaries(KEYS, inner, max_size=2), max_leaves=5)
PATCHES = st.dictionaries(KEYS, VALUES, max_size=3)
EVENTS = st.lists(st.dictionaries(st.just("v"), LEAVES, min_size=1), max_size=3)


def model_merge(target, patch):
    """RFC 7386, written without sharing code with fsstore."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = model_merge(result.get(key), value)
    return result


class Model:
    """One session: the user events by seq, the state after every seq, checkpoints."""

    def __init__(self) -> None:
        self.log_start = 1
        self.head = 0
        self.user: dict[int, dict] = {}
        self.states: dict[int, dict] = {0: {}}
        self.checkpoints: dict[str, tuple[int, dict, int]] = {}  # seq, state, log start
        self.commits: dict[str, tuple[list[int], int]] = {}

    @property
    def state(self) -> dict:
        return self.states[self.head]

    def write(self, events: list[dict], new_state: dict | None) -> None:
        for event in events:
            state = self.state
            self.head += 1
            self.user[self.head] = event
            self.states[self.head] = state
        if new_state is not None:
            self.head += 1
            self.states[self.head] = new_state

    def forked(self, seq: int) -> Model:
        child = Model()
        child.log_start, child.head = self.log_start, seq
        child.user = {s: e for s, e in self.user.items() if s <= seq}
        child.states = {s: v for s, v in self.states.items() if s <= seq}
        child.commits = {c: r for c, r in self.commits.items() if r[1] <= seq}
        return child


class StateMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = tempfile.mkdtemp()
        self.store = fsstore.open_store(self.root, segment_size=4096, snapshots=(
            fsstore.SnapshotPolicy(every_events=5, keep=2, commit_ids=1000)))
        self.sessions = {"s0": self.store.create_session("s0")}
        self.models = {"s0": Model()}
        self.current = "s0"
        self.forks = 0

    def teardown(self) -> None:
        for session in self.sessions.values():
            session.close()
        shutil.rmtree(self.root)

    @property
    def session(self) -> fsstore.Session:
        return self.sessions[self.current]

    @property
    def model(self) -> Model:
        return self.models[self.current]

    @rule(events=EVENTS, patch=st.none() | PATCHES, commit_id=st.none() | st.sampled_from(
        ["x", "y", "z"]), head=st.sampled_from(["none", "current", "stale"]))
    def commit(self, events, patch, commit_id, head):
        model = self.model
        expected = {"none": None, "current": model.head, "stale": model.head + 1}[head]
        if commit_id is not None and commit_id in model.commits:
            result = self.session.commit(events, state_patch=patch, commit_id=commit_id,
                                         expected_head=expected)
            seqs, last = model.commits[commit_id]
            assert (result.seqs, result.head, result.duplicate) == (seqs, last, True)
            return
        if head == "stale":
            with pytest.raises(fsstore.HeadConflict):
                self.session.commit(events, state_patch=patch, commit_id=commit_id,
                                    expected_head=expected)
            return
        result = self.session.commit(events, state_patch=patch, commit_id=commit_id,
                                     expected_head=expected)
        has_record = patch is not None or commit_id is not None
        first = model.head + 1
        model.write(events, model_merge(model.state, patch or {}) if has_record else None)
        assert result.seqs == list(range(first, first + len(events)))
        assert result.head == model.head
        if commit_id is not None:
            model.commits[commit_id] = (result.seqs, result.head)

    @rule(key=KEYS, value=VALUES)
    def set_state(self, key, value):
        self.session.set_state(key, value)
        state = dict(self.model.state)
        state[key] = copy.deepcopy(value)
        self.model.write([], state)

    @rule(key=KEYS)
    def delete_state(self, key):
        self.session.delete_state(key)
        state = dict(self.model.state)
        state.pop(key, None)
        self.model.write([], state)

    @rule()
    def snapshot(self):
        assert self.session.snapshot() == self.model.head

    @rule()
    def checkpoint(self):
        info = self.session.checkpoint("cp")
        self.model.checkpoints[info.id] = (self.model.head, self.model.state,
                                           self.model.log_start)

    @rule()
    def clear(self):
        self.session.clear()
        model = self.model
        model.log_start = model.head + 1
        model.states = {model.head: {}}
        model.user = {}
        model.commits = {}  # the commit ids were in the cleared log

    @precondition(lambda self: len(self.sessions) < 5)
    @rule(where=st.floats(0, 1), at_checkpoint=st.booleans(), switch=st.booleans())
    def fork(self, where, at_checkpoint, switch):
        model = self.model
        name = f"f{self.forks}"
        self.forks += 1
        usable = [(cid, seq) for cid, (seq, _, log_start) in sorted(model.checkpoints.items())
                  if log_start == model.log_start]
        if at_checkpoint and usable:
            checkpoint_id, seq = usable[int(where * (len(usable) - 1))]
            session = self.session.fork(name, at_checkpoint=checkpoint_id)
        else:
            seq = model.log_start - 1 + int(where * (model.head - model.log_start + 1))
            session = self.session.fork(name, at_seq=seq)
        self.sessions[name] = session
        self.models[name] = model.forked(seq)
        if switch:
            self.current = name

    @rule(name=st.sampled_from(["s0", "f0", "f1", "f2", "f3"]))
    def switch(self, name):
        if name in self.sessions:
            self.current = name

    @rule(store_too=st.booleans())
    def reopen(self, store_too):
        for session in self.sessions.values():
            session.close()
        if store_too:
            self.store = fsstore.open_store(self.root, create=False, segment_size=4096,
                                            snapshots=self.store.snapshots)
        self.sessions = {name: self.store.open_session(name) for name in self.sessions}

    @invariant()
    def state_and_history_match_the_model(self):
        model, session = self.model, self.session
        assert session.head == model.head
        assert session.state() == model.state
        user = {e.seq: e.data for e in session.events() if not e.kind.startswith("fsstore.")}
        assert user == model.user
        reader = self.store.read_session(self.current)
        assert reader.state() == model.state
        assert reader.state_findings == []
        for seq in (model.log_start - 1, (model.log_start + model.head) // 2, model.head):
            if seq in model.states or seq >= model.log_start - 1:
                expected = model.states.get(seq)
                if expected is None:
                    expected = model.states[max(s for s in model.states if s <= seq)]
                assert reader.state_at(seq) == expected, seq
        for checkpoint_id, (_, state, _) in model.checkpoints.items():
            assert reader.load_checkpoint(checkpoint_id) == state


StateMachine.TestCase.settings = settings(max_examples=25, stateful_step_count=30,
                                          deadline=None)
test_state_machine = StateMachine.TestCase


class LongStateMachine(StateMachine):
    pass


LongStateMachine.TestCase.settings = settings(max_examples=400, stateful_step_count=40,
                                              deadline=None)
test_state_machine_long = pytest.mark.long(LongStateMachine.TestCase)
