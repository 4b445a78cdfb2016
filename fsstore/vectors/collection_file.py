"""``collection.json`` of a vector collection (docs/FORMAT.md, sections 15.1 and 15.8):
the collection's definition, its live shards and the earlier states it keeps pinned for
copies of the folder, decoded through one typed schema (msgspec Structs) and checked;
and the rules that decide which states and files a seal or merge keeps."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

import msgspec

from .. import layout, manifest
from ..errors import CorruptionError, FormatVersionError
from ..fsio import FileIO
from .shard_files import MAX_DIM, ShardEntry

COLLECTION_FORMAT = "fsstore-collection"
MAX_PINNED = 64  # earlier states named in collection.json
MAX_RETIRED = 8192  # files kept for copies after no state names them

_U63 = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


def _check_shards(shards: list[ShardEntry]) -> None:
    names = [s.name for s in shards]
    if len(set(names)) != len(names):
        raise ValueError("a shard is named twice")


class PinnedState(msgspec.Struct, frozen=True):
    """An earlier state of the collection, kept whole on disk (its files, and the log
    records after its ``wal_seq``) from ``pinned`` until ``keep_until`` (unix seconds),
    for copies of the folder taken meanwhile (section 15.8). ``bulk``: the commit that
    made this state added documents the log before it lacks (an upsert written straight
    to a shard)."""

    generation: _U63
    wal_seq: _U63
    pinned: float
    keep_until: float
    shards: list[ShardEntry]
    bulk: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.pinned) and math.isfinite(self.keep_until)):
            raise ValueError("pinned and keep_until must be finite times")
        _check_shards(self.shards)


class CollectionManifest(msgspec.Struct, frozen=True):
    """``collection.json``: the fields this version reads, typed and checked. Unknown
    top-level keys are kept in the file by writers (a reader accepts any minor version)."""

    format: str
    version: Any
    name: str
    dim: Annotated[int, msgspec.Meta(ge=1, le=MAX_DIM)]
    dtype: Literal["float32", "float16"]
    metric: Literal["cosine", "dot", "euclidean"]
    generation: _U63
    wal_seq: _U63
    next_shard: Annotated[int, msgspec.Meta(ge=1, le=10**layout.SHARD_DIGITS)]
    shards: list[ShardEntry]
    created: str | None = None
    pinned: list[PinnedState] = []
    bulk: bool = False  # as PinnedState.bulk, for the current state
    retired: list[tuple[str, float]] = []  # files no state names, and since when
    log_moved: float = 0.0  # when a commit last moved the start of wal/

    def retired_names(self) -> set[str]:
        return {name for name, _since in self.retired}

    def __post_init__(self) -> None:
        layout.check_session_id(self.name)
        _check_shards(self.shards)
        if len(self.pinned) > MAX_PINNED:
            raise ValueError(f"more than {MAX_PINNED} pinned states")
        newer = self.generation
        for state in self.pinned:
            if state.generation >= newer or state.wal_seq > self.wal_seq:
                raise ValueError("pinned states are not older than the manifest, newest "
                                 "first")
            newer = state.generation
        if len(self.retired) > MAX_RETIRED:
            raise ValueError(f"more than {MAX_RETIRED} retired files")
        if not math.isfinite(self.log_moved):
            raise ValueError("log_moved is not a finite time")
        for name, since in self.retired:
            check_file_name(name)
            if not math.isfinite(since):
                raise ValueError(f"retired file {name!r}: time is not finite")
        top = max((int(s.name) for s in self.shards), default=0)
        if top >= self.next_shard:
            raise ValueError(f"shard {top:08d} is not below next_shard {self.next_shard}")

    def states(self) -> list[PinnedState]:
        """The current state first, then the pinned ones, newest first."""
        return [PinnedState(self.generation, self.wal_seq, 0.0, 0.0, self.shards,
                            self.bulk), *self.pinned]

    def named_files(self) -> set[str]:
        """Every file a state of this manifest names (its shards and deleted rows)."""
        return {name for state in self.states() for entry in state.shards
                for name in entry.files()}


def check_file_name(name: str) -> str:
    """``name`` if it is a shard file or deleted-rows file name (section 15.1), else
    ValueError: never a path."""
    if name.endswith(layout.DELETED_SUFFIX):
        return layout.check_deleted_name(name)
    for suffix in (layout.VECTORS_SUFFIX, layout.DOCS_SUFFIX):
        if name.endswith(suffix):
            layout.check_shard_name(name[:-len(suffix)])
            return name
    raise ValueError(f"bad shard file name {name!r}")


def retire(before: CollectionManifest, after: set[str], now: float, grace: float
           ) -> tuple[list[tuple[str, float]], list[str]]:
    """The retired files of the manifest that replaces ``before`` (whose states name
    ``after``), and the files to unlink now. A file no state names any more is kept
    ``grace`` seconds more: a copy that took an older ``collection.json`` may still be
    about to copy it."""
    kept: dict[str, float] = {}
    expired = []
    for name, since in before.retired:
        if 0 <= now - since < grace or name in after:
            kept[name] = since
        else:
            expired.append(name)
    for name in before.named_files() - after:
        kept.setdefault(name, now)
    retired = sorted(kept.items(), key=lambda item: (item[1], item[0]))
    if len(retired) > MAX_RETIRED:  # the oldest go early
        expired += [name for name, _since in retired[:len(retired) - MAX_RETIRED]]
        retired = retired[len(retired) - MAX_RETIRED:]
    return retired, sorted(set(expired) - after)


def read_manifest(io: FileIO, path: str) -> tuple[CollectionManifest, dict[str, Any]]:
    """``collection.json`` decoded and checked, with the raw mapping (whose unknown keys a
    writer keeps). Raises FileNotFoundError if it is missing, FormatVersionError if a newer
    major wrote it, CorruptionError naming the file for anything else."""
    try:
        data = manifest.read(io, path, COLLECTION_FORMAT)
    except RecursionError:
        raise CorruptionError("JSON nested too deep to be a collection manifest; restore it "
                              "from a backup", path=path) from None
    except FileNotFoundError:
        if os.path.lexists(path):  # a dangling symlink
            raise CorruptionError("not a readable file (a dangling symlink?)",
                                  path=path) from None
        raise
    except (FormatVersionError, CorruptionError):
        raise
    except OSError as exc:  # a folder, or a file the OS will not read
        raise CorruptionError(f"cannot be read ({exc.strerror or exc}); restore it from a "
                              "backup", path=path) from None
    try:
        decoded = msgspec.convert(data, CollectionManifest)
    except (msgspec.ValidationError, RecursionError) as exc:
        raise CorruptionError(f"malformed collection manifest ({exc}); restore it from a "
                              "backup", path=path) from None
    return decoded, data


def encode_manifest(base: Mapping[str, Any], **fields: Any) -> dict[str, Any]:
    """``base`` (the raw manifest: unknown keys kept) with ``fields`` replaced, as plain
    JSON values, checked against the schema so nothing a reader refuses is written."""
    data = dict(base)
    data.update(msgspec.to_builtins(fields))
    msgspec.convert(data, CollectionManifest)  # a bug, not the caller's: let it raise
    return data


def pin_states(current: CollectionManifest, now: float, grace: float) -> list[PinnedState]:
    """The pinned states of the manifest that replaces ``current`` at time ``now``.

    A copy started at time s needs a state whose files existed at s and that holds every
    document acknowledged by then once the log after it is replayed: the state current
    at s, or an earlier one linked to it by seals and merges only (which move documents
    from the log into shards, never add any). So when a state is replaced, it is pinned
    for ``grace`` seconds, or, when the newest pin is younger than ``grace`` and stands for
    it (no bulk upsert since), that pin's time is extended instead: a pin lives at most
    about twice ``grace``, which bounds the log it keeps (section 15.8)."""
    pins = [pin for pin in current.pinned if pin.keep_until >= now]
    newest = pins[0] if pins else None
    if current.bulk or newest is None or not 0 <= now - newest.pinned < grace:
        pins.insert(0, PinnedState(current.generation, current.wal_seq, now, now + grace,
                                   current.shards, current.bulk))
    else:
        pins[0] = msgspec.structs.replace(newest, keep_until=now + grace)
    return pins[:MAX_PINNED]


def newer_than(manifest: CollectionManifest, names: Iterable[str]) -> list[str]:
    """The shard files among ``names`` that no writer of ``manifest`` could have made yet:
    a shard number above ``next_shard`` or a deleted-rows generation above the next
    generation. Beside them, ``collection.json`` is older than the folder (restored from
    an older backup, or another collection's): reading it would drop documents."""
    found = []
    for name in names:
        try:
            check_file_name(name)
        except ValueError:
            continue
        if int(name[:layout.SHARD_DIGITS]) > manifest.next_shard or (
                name.endswith(layout.DELETED_SUFFIX) and int(
                    name[layout.SHARD_DIGITS + 1:2 * layout.SHARD_DIGITS + 1])
                > manifest.generation + 1):
            found.append(name)
    return sorted(found)


def missing_are_newest(present: Iterable[str], missing: Iterable[str]) -> bool:
    """Whether every file in ``missing`` was made after every shard file in ``present``,
    so that it is in a copy of the folder taken during a seal or merge: such a copy lists
    the folder first and misses only files made later. Files are made in the order of
    their names: shard numbers grow, a shard's ``.vec.npy`` comes before its ``.docs``,
    deleted-rows generations grow, and within one the shards' files come in shard order.
    A file lost to damage is rarely the newest: then this is False."""
    def order(name: str) -> tuple[int, int, int] | None:
        try:
            if name.endswith(layout.DELETED_SUFFIX):
                layout.check_deleted_name(name)
                generation = int(name[layout.SHARD_DIGITS + 1:2 * layout.SHARD_DIGITS + 1])
                return 1, generation, int(name[:layout.SHARD_DIGITS])
            number = int(layout.check_shard_name(name[:layout.SHARD_DIGITS]))
            return 0, number, 0 if name.endswith(layout.VECTORS_SUFFIX) else 1
        except ValueError:
            return None
    missing_orders = [o for o in map(order, missing) if o is not None]
    for name in present:
        found = order(name) if layout.is_shard_file(name) else None
        if found and any(found[0] == m[0] and found >= m for m in missing_orders):
            return False
    return True
