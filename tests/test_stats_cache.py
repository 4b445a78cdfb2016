"""The store's stats cache (fsstore/stats_cache.py): a store's count answered from it
equals the uncached count after every kind of change, and a cache that cannot be
trusted (damaged, of another version, racy) is never used."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
from procs import child_env
from test_stats import _agent_turns, built, varied_store

import fsstore
from fsstore import layout, stats_cache
from fsstore.stats_cache import CacheUse, cached_store_stats


class Settler:
    """Sets the mtime of every recent file and folder of a store into the past, a new
    past at each call: what a store looks like once it has been quiet for a while, so
    that the cache keeps its sessions (a session changed in the last seconds is never
    kept: the racy rule)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.base = time.time() - 1000.0
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        past = self.base + self.calls
        for folder, folders, files in os.walk(self.root):
            for name in [*files, *folders, ""]:
                path = os.path.join(folder, name) if name else folder
                if os.lstat(path).st_mtime > self.base + 500:
                    os.utime(path, (past, past), follow_symlinks=False)


def counted(store: fsstore.Store) -> tuple[fsstore.StoreStats, CacheUse]:
    return cached_store_stats(store.io, store.path, store.session_ids())


def assert_cached_equals_fresh(store: fsstore.Store) -> CacheUse:
    cached, use = counted(store)
    fresh = store.stats(use_cache=False)
    assert cached == fresh
    return use


def rich_store(path: object) -> fsstore.Store:
    store = varied_store(path)
    with store.create_session("live") as session:
        _agent_turns(session, range(1, 4))
        session.blobs.put(b"picture" * 50, "image/png")
        memory = session.create_collection("memory", 2)
        memory.upsert([fsstore.VectorDocument("a", [1.0, 0.0]),
                       fsstore.VectorDocument("b", [0.0, 1.0])])
    store.fork_session("live", "forked").close()  # shares segments by hard link
    return store


def _with(session_id: str, act: Callable[[fsstore.Session], object]
          ) -> Callable[[fsstore.Store], None]:
    def change(store: fsstore.Store) -> None:
        with store.open_session(session_id) as session:
            act(session)
    return change


def _lease(store: fsstore.Store) -> None:
    outcome = store.claim_lease("compacted", "worker", ttl=600)
    assert outcome.lease is not None


def _release(store: fsstore.Store) -> None:
    outcome = store.claim_lease("plain", "worker", ttl=600)
    assert outcome.lease is not None
    store.release_lease(outcome.lease)


def _other_process(store: fsstore.Store) -> None:
    code = ("import fsstore, sys; s = fsstore.open_store(sys.argv[1]); "
            "w = s.open_session('plain'); w.append({'from': 'child'}); w.close()")
    subprocess.run([sys.executable, "-c", code, store.path], check=True, env=child_env())


def _upsert(session: fsstore.Session) -> None:
    session.collection("memory").upsert([fsstore.VectorDocument("c", [0.5, 0.5])])


def _seal(session: fsstore.Session) -> None:
    collection = session.collection("memory")
    collection.delete(["a"])
    collection.seal()


def _queue(session: fsstore.Session) -> None:
    session.queue.enqueue("more")
    session.queue.complete(session.queue.claim("w", 60))


def _inputs(session: fsstore.Session) -> None:
    session.inputs.submit("again")
    session.inputs.claim()


def _messages(session: fsstore.Session) -> None:
    session.messages.append({"id": "n1", "role": "user", "content": "new"})
    session.messages.edit({"id": "n1", "role": "user", "content": "edited"})
    session.messages.delete("u1")


def _retain(session: fsstore.Session) -> None:
    session.snapshot()
    session.retain(keep_turns=2)


CHANGES: dict[str, Callable[[fsstore.Store], None]] = {
    "append": _with("plain", lambda s: s.append({"x": 1}, kind="tool_call")),
    "finish_turn": _with("live", lambda s: (s.append({"t": 1}), s.finish_turn())),
    "state change": _with("compacted", lambda s: s.set_state("k", 2)),
    "commit": _with("live", lambda s: s.merge_state({"m": {"n": 1}})),
    "snapshot": _with("plain", lambda s: s.snapshot()),
    "checkpoint": _with("live", lambda s: s.checkpoint("cp")),
    "blob add": _with("live", lambda s: s.blobs.put(b"fresh" * 30, "text/plain")),
    "gc": _with("live", lambda s: s.gc(grace=0)),
    "vector upsert": _with("live", _upsert),
    "vector delete and seal": _with("live", _seal),
    "queue": _with("live", _queue),
    "inputs": _with("built", _inputs),
    "lease claim": _lease,
    "lease release": _release,
    "messages": _with("live", _messages),
    "compact": lambda store: store.compact(["plain"]) and None,
    "retain": _with("retained", _retain),
    "vacuum": lambda store: store.vacuum(grace=0) and None,
    "clear": _with("cleared", lambda s: s.clear()),
    "fork": lambda store: store.fork_session("plain", "fork2").close(),
    "delete session": lambda store: store.delete_session("forked", force=True),
    "create session": lambda store: store.create_session("newcomer").close(),
    "title": _with("empty", lambda s: s.update_metadata(title="renamed")),
    "metadata": _with("plain", lambda s: s.update_metadata(metadata={"a": 1})),
    "another process": _other_process,
}


def test_cached_count_equals_the_fresh_count_after_each_kind_of_change(tmp_path):
    store = rich_store(tmp_path / "store")
    settle = Settler(store.path)
    for name, change in CHANGES.items():
        settle()
        assert_cached_equals_fresh(store)
        before = store.stats(use_cache=False)
        use = assert_cached_equals_fresh(store)
        assert use.counted == 0 and use.hits == len(store.session_ids()), name
        change(store)
        settle()  # the change is old by now: only the stamps can tell it
        use = assert_cached_equals_fresh(store)
        assert use.counted >= 1 or store.stats(use_cache=False) == before, name


def test_an_expired_lease_is_not_live_when_answered_from_the_cache(tmp_path, monkeypatch):
    store = rich_store(tmp_path / "store")
    store.claim_lease("live", "worker", ttl=600)
    Settler(store.path)()
    first, _ = counted(store)
    assert first.leased == 1
    later = time.time() + 3600
    monkeypatch.setattr(stats_cache.time, "time", lambda: later)
    monkeypatch.setattr("fsstore.stats.time.time", lambda: later)
    found, use = counted(store)
    assert use.counted == 0 and found.leased == 0
    assert found == store.stats(use_cache=False)


def _same_tick_retitle(path: str, old: str, new: str) -> None:
    """Change the title in a session's manifest in place, to one of the same length,
    and put its mtime back: a write made within the clock tick of the one before it."""
    manifest = os.path.join(path, layout.SESSION_MANIFEST)
    before = os.stat(manifest)
    with open(manifest, "r+b") as file:
        data = file.read()
        file.seek(0)
        file.write(data.replace(old.encode(), new.encode()))
    os.utime(manifest, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_a_same_tick_change_is_recounted_by_the_racy_rule(tmp_path, monkeypatch):
    store = fsstore.open_store(tmp_path / "store")
    store.create_session("s", title="aaaa").close()
    path = os.path.join(store.path, "sessions", "s")
    first, use = counted(store)  # its stamps as new as the count: not kept
    assert first.per_session[0].title == "aaaa"
    _same_tick_retitle(path, "aaaa", "bbbb")
    found, use = counted(store)
    assert use.counted == 1 and found.per_session[0].title == "bbbb"
    assert found == store.stats(use_cache=False)
    # Without the rule the cache would answer with the count made before the write.
    monkeypatch.setattr(stats_cache, "SETTLED", -10**18)
    counted(store)
    _same_tick_retitle(path, "bbbb", "cccc")
    stale, use = counted(store)
    assert use.hits == 1 and stale.per_session[0].title == "bbbb"


def test_a_recent_session_is_never_kept_and_a_quiet_one_is(tmp_path):
    store = fsstore.open_store(tmp_path / "store")
    built(store, "a").close()
    built(store, "b").close()
    assert counted(store)[1].counted == 2
    assert counted(store)[1].counted == 2  # both changed within SETTLED: counted again
    Settler(store.path)()
    assert counted(store)[1] == CacheUse(hits=0, counted=2, written=True)
    assert counted(store)[1] == CacheUse(hits=2, counted=0, written=False)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "flipped", "version", "empty"])
def test_a_damaged_cache_is_ignored_and_rebuilt(tmp_path, damage):
    store = rich_store(tmp_path / "store")
    Settler(store.path)()
    counted(store)
    path = stats_cache.cache_path(store.path)
    with open(path, "rb") as file:
        data = bytearray(file.read())
    if damage == "truncated":
        data = data[:len(data) // 2]
    elif damage == "garbage":
        data = bytearray(os.urandom(len(data)))
    elif damage == "flipped":
        data[-10] ^= 0xFF
    elif damage == "version":
        data[8] += 1
    else:
        data = bytearray()
    with open(path, "wb") as file:
        file.write(data)
    found, use = counted(store)
    assert use.hits == 0 and use.written and found == store.stats(use_cache=False)
    assert counted(store)[1].counted == 0


def test_a_count_answers_when_the_cache_cannot_be_written(tmp_path, monkeypatch):
    store = rich_store(tmp_path / "store")
    Settler(store.path)()

    def refuse(path: str, flags: int, mode: int = 0o644) -> int:
        if stats_cache.CACHE_NAME in path:
            raise PermissionError(13, "read-only store", path)
        return fsstore.fsio.FileIO.open(store.io, path, flags, mode)

    monkeypatch.setattr(store.io, "open", refuse)
    found, use = counted(store)
    assert not use.written and found == store.stats(use_cache=False)
    assert not os.path.exists(stats_cache.cache_path(store.path))
    assert not [n for n in os.listdir(store.path) if n.startswith(layout.TEMP_PREFIX)]


def test_a_damaged_session_is_never_cached_and_always_named(tmp_path):
    store = rich_store(tmp_path / "store")
    segment = os.path.join(store.path, "sessions", "plain", "log", layout.segment_name(1))
    with open(segment, "r+b") as file:
        file.seek(200)
        file.write(b"\xff" * 64)
    Settler(store.path)()
    for _ in range(2):
        found, use = counted(store)
        assert [d.id for d in found.damaged] == ["plain"]
        assert found == store.stats(use_cache=False)
    assert use.counted == 1


def test_the_cache_follows_a_store_moved_to_another_path(tmp_path):
    store = rich_store(tmp_path / "store")
    Settler(store.path)()
    counted(store)
    os.rename(store.path, tmp_path / "moved")
    moved = fsstore.open_store(tmp_path / "moved")
    found, use = counted(moved)
    assert use.hits == len(moved.session_ids())
    assert found == moved.stats(use_cache=False)


def test_stats_command_answers_from_the_cache_and_without_it(tmp_path, capsys):
    from fsstore.cli import main

    store = rich_store(tmp_path / "store")
    Settler(store.path)()
    for flags in ([], ["--no-cache"], []):
        assert main(["--store", store.path, "stats", "--json", *flags]) == 0
    assert os.path.exists(stats_cache.cache_path(store.path))


def _random_change(store: fsstore.Store, rng: random.Random) -> None:
    name = rng.choice(sorted(CHANGES))
    if name in ("fork", "create session"):
        suffix = rng.randrange(10**6)
        source = rng.choice(store.session_ids())
        if name == "fork":
            store.fork_session(source, f"f{suffix}").close()
        else:
            store.create_session(f"n{suffix}").close()
        return
    if name == "delete session":
        ids = [i for i in store.session_ids() if i not in ("live", "plain", "retained",
                                                            "cleared", "empty", "built",
                                                            "compacted")]
        if ids:
            store.delete_session(rng.choice(ids), force=True)
        return
    try:
        CHANGES[name](store)
    except fsstore.FsStoreError:
        pass  # a change that does not apply in this state (a lease held, ...)


def _random_run(tmp_path: object, steps: int, seed: int) -> None:
    store = rich_store(os.path.join(str(tmp_path), "store"))
    settle = Settler(store.path)
    rng = random.Random(seed)
    for _ in range(steps):
        for _ in range(rng.randrange(1, 3)):
            _random_change(store, rng)
        if rng.random() < 0.8:
            settle()
        assert_cached_equals_fresh(store)


def test_random_changes_keep_the_cached_count_exact(tmp_path):
    _random_run(tmp_path, 6, 16)


@pytest.mark.long
@pytest.mark.parametrize("seed", range(5))
def test_random_changes_keep_the_cached_count_exact_long(tmp_path, seed):
    _random_run(tmp_path, 60, seed)


def test_git_setup_ignores_the_cache(tmp_path):
    from fsstore.git_setup import IGNORED

    assert ("/" + layout.STATS_CACHE) in [pattern for pattern, _ in IGNORED]


def test_stamps_cover_every_name_under_a_folder_and_follow_no_symlink(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f").write_bytes(b"xyz")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_bytes(b"s")
    os.symlink(tmp_path / "outside", tmp_path / "a" / "link")
    stamps = {stamp[0]: stamp for stamp in fsstore.fsio.FileIO().stamps(str(tmp_path / "a"))}
    assert sorted(stamps) == ["", "b", "b/f", "link"]
    assert stamps["b/f"][3] == 3
