"""Forks: a new session sharing its parent's history up to a point, and lineage."""

from __future__ import annotations

import errno
import os

import pytest
from conftest import tree_snapshot
from procs import Child

import fsstore
from fsstore.fsio import FileIO


def history(reader) -> list[tuple[int, int, str, object]]:
    return [(e.seq, e.turn, e.kind, e.data) for e in reader.events(include_internal=True)]


def fill(session, batches: int = 30) -> None:
    for i in range(batches):
        session.commit([{"i": i, "pad": "p" * 150}, {"j": i}], state_patch={"last": i})
        if i % 7 == 6:
            session.finish_turn()


def log_files(store, session_id) -> dict[str, os.stat_result]:
    folder = os.path.join(store.path, "sessions", session_id, "log")
    return {name: os.stat(os.path.join(folder, name)) for name in os.listdir(folder)}


def test_a_fork_at_the_head_has_the_same_history_and_state(small_store):
    with small_store.create_session("a", title="parent", tags=["t"]) as parent:
        fill(parent)
        with parent.fork("b") as child:
            assert history(child) == history(parent)
            assert child.state() == parent.state() == {"last": 29}
            assert child.head == parent.head
            assert child.parent == fsstore.ForkOrigin("a", parent.head, None)
            assert (child.title, child.tags) == ("parent", ["t"])
            assert child.current_turn == parent.current_turn


def test_a_fork_shares_sealed_segments_by_hard_link(small_store):
    with small_store.create_session("a") as parent:
        fill(parent, 60)
        with parent.fork("b"):
            pass
    parent_files, child_files = log_files(small_store, "a"), log_files(small_store, "b")
    shared = [n for n in child_files if n.endswith(".fslog") and n in parent_files
              and child_files[n].st_ino == parent_files[n].st_ino]
    assert len(shared) >= 5
    own = [n for n in child_files if n.endswith(".fslog") and n not in shared]
    assert all(child_files[n].st_size <= 4096 for n in own)


def test_the_fork_and_its_parent_then_go_their_own_ways(small_store):
    with small_store.create_session("a") as parent:
        fill(parent)
        head = parent.head
        before = history(parent)
        child = parent.fork("b")
        parent.commit([{"parent": 1}], state_patch={"who": "parent"})
        child.commit([{"child": 1}], state_patch={"who": "child"})
        assert [e.data for e in parent.events(after_seq=head)][0] == {"parent": 1}
        assert [e.data for e in child.events(after_seq=head)][0] == {"child": 1}
        assert parent.get_state("who") == "parent" and child.get_state("who") == "child"
        child.close()
    assert history(small_store.read_session("b"))[: len(before)] == before


def test_a_fork_survives_its_parent_growing_being_cleared_and_deleted(small_store):
    with small_store.create_session("a") as parent:
        fill(parent)
        parent.fork("b").close()
        expected = history(small_store.read_session("b"))
        fill(parent, 20)
        parent.clear()
    assert history(small_store.read_session("b")) == expected
    small_store.delete_session("a")
    reader = small_store.read_session("b")
    assert history(reader) == expected
    assert reader.state() == {"last": 29}
    assert [f for f in small_store.verify() if f.level == "problem"] == []


@pytest.mark.parametrize("at_seq", [0, 1, 2, 3, 17, 18, 44, 45])
def test_a_fork_at_an_earlier_seq_has_exactly_the_history_up_to_it(small_store, at_seq):
    with small_store.create_session("a") as parent:
        fill(parent)
        states = {seq: parent.state_at(seq) for seq in (at_seq,)}
        with parent.fork("b", at_seq=at_seq) as child:
            assert history(child) == history(parent)[:at_seq]
            assert child.head == at_seq
            assert child.state() == states[at_seq]
            assert child.append({"next": 1}) == at_seq + 1
    assert [f for f in small_store.verify() if f.level == "problem"] == []


def test_a_fork_at_a_checkpoint_starts_from_its_state(small_store):
    with small_store.create_session("a") as parent:
        fill(parent, 10)
        info = parent.checkpoint("here")
        fill(parent, 10)
        with parent.fork("b", at_checkpoint=info.id) as child:
            assert child.head == info.seq
            assert child.state() == parent.load_checkpoint(info.id)
            assert child.parent == fsstore.ForkOrigin("a", info.seq, info.id)


def test_a_fork_after_a_clear_has_the_history_since_the_clear(small_store):
    with small_store.create_session("a") as parent:
        fill(parent, 5)
        info = parent.checkpoint("before")
        parent.clear()
        fill(parent, 5)
        with parent.fork("b") as child:
            assert history(child) == history(parent)
            assert child.state() == parent.state()
        with pytest.raises(fsstore.SeqOutOfRange, match="cleared"):
            parent.fork("c", at_checkpoint=info.id)
        with pytest.raises(fsstore.SeqOutOfRange):
            parent.fork("c", at_seq=3)


def test_commit_ids_before_the_fork_point_stay_idempotent_in_the_fork(store):
    with store.create_session("a") as parent:
        first = parent.commit([{"x": 1}], commit_id="c1")
        with parent.fork("b") as child:
            assert child.commit([{"x": 1}], commit_id="c1") == first._replace(duplicate=True)


def test_forks_of_forks_and_lineage(store):
    with store.create_session("root") as root:
        fill(root, 3)
        root.fork("left", at_seq=3).close()
        with root.fork("right") as right:
            right.append({"r": 1})
            right.fork("right-child").close()
    lineage = store.lineage("right-child")
    assert [(r.session, r.parent, r.parent_exists) for r in lineage.ancestors] == [
        ("right-child", "right", True), ("right", "root", True)]
    assert [(r.session, r.parent, r.seq) for r in store.lineage("root").forks] == [
        ("left", "root", 3), ("right", "root", 9), ("right-child", "right", 10)]
    assert store.lineage("left").forks == []
    store.delete_session("right")
    ancestors = store.lineage("right-child").ancestors
    assert [(r.parent, r.parent_exists) for r in ancestors] == [("right", False)]
    assert store.read_session("right-child").info().parent.parent == "right"


def test_a_fork_without_a_writer_in_hand_opens_the_parent_itself(store):
    with store.create_session("a") as parent:
        fill(parent, 5)
    with store.fork_session("a", "b") as child:
        assert history(child) == history(store.read_session("a"))


HOLDER = """
import sys, fsstore
session = fsstore.open_store(sys.argv[1]).open_session("a")
print("HOLDING", flush=True)
sys.stdin.read()
"""


def test_a_fork_of_a_session_written_by_another_process_copies_the_open_segment(tmp_path):
    root = tmp_path / "store"
    store = fsstore.open_store(root, segment_size=4096)
    with store.create_session("a") as parent:
        fill(parent, 10)
    with Child.script(HOLDER, root, stdin=True) as holder:
        holder.wait_for("HOLDING")
        with store.fork_session("a", "b") as child:
            assert history(child) == history(store.read_session("a"))
            assert child.state() == {"last": 9}
        holder.finish()  # stdin closed: the holder exits, its session left open
        assert holder.returncode == 0, holder.describe()
    assert [f for f in store.verify() if f.level == "problem"] == []


class NoLinkIO(FileIO):
    def link(self, src: str, dst: str) -> None:
        raise OSError(errno.EXDEV, "cross-device link")


def test_a_fork_copies_segments_where_links_are_refused(tmp_path):
    store = fsstore.open_store(tmp_path / "store", segment_size=4096, io=NoLinkIO())
    with store.create_session("a") as parent:
        fill(parent)
        ref = parent.blobs.put(b"an attachment")
        parent.commit([{"f": ref}])
        with parent.fork("b") as child:
            assert history(child) == history(parent)
            assert child.blobs.get(ref) == b"an attachment"
            assert os.stat(child.blobs.stat(ref).path).st_ino != os.stat(
                parent.blobs.stat(ref).path).st_ino
    parent_files, child_files = log_files(store, "a"), log_files(store, "b")
    assert [n for n in child_files
            if n in parent_files and child_files[n].st_ino == parent_files[n].st_ino] == []


@pytest.mark.parametrize(("options", "error"), [
    ({"new_id": "a"}, fsstore.SessionExists),
    ({"new_id": "../evil"}, fsstore.InvalidSessionId),
    ({"new_id": ".tmp-x"}, fsstore.InvalidSessionId),
    ({"new_id": "b", "at_seq": 999}, fsstore.SeqOutOfRange),
    ({"new_id": "b", "at_seq": -1}, fsstore.SeqOutOfRange),
    ({"new_id": "b", "at_checkpoint": "nope"}, fsstore.CheckpointNotFound),
    ({"new_id": "b", "at_checkpoint": "../x"}, fsstore.InvalidCheckpointId),
    ({"new_id": "b", "at_seq": 1, "at_checkpoint": "x"}, fsstore.InvalidSetting),
])
def test_bad_forks_raise_typed_errors_and_change_nothing(store, options, error):
    with store.create_session("a") as parent:
        fill(parent, 3)
        parent.checkpoint(checkpoint_id="x")
        parent.sync()
        before = tree_snapshot(store.path)
        with pytest.raises(error):
            store.fork_session("a", **options)
        assert tree_snapshot(store.path) == before


def test_forking_a_missing_session_raises_session_not_found(store):
    with pytest.raises(fsstore.SessionNotFound):
        store.fork_session("ghost", "b")
    assert store.session_ids() == []
