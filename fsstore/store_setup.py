"""``fsstore.json``: making a folder a store, and the store's settings kept in it (the
hash chain new sessions get, docs/FORMAT.md 3.4). ``store.open_store`` calls these."""

from __future__ import annotations

import os

from . import layout, manifest
from .chain import KEYED, UNKEYED, ChainKey
from .errors import FsStoreError, NotAStore
from .fsio import FileIO
from .manifest import ChainRecord


def create_store(io: FileIO, root: str, chain: ChainRecord | None = None) -> None:
    """Make ``root`` a store: ``sessions/``, then ``fsstore.json`` renamed into place,
    holding ``chain``, the chain policy of its sessions (None: they get none).

    Until that rename the folder is no store. A crash (or kill -9) before it leaves a
    folder holding only an empty ``sessions/`` (and perhaps a hidden temp file): nothing
    else can make that, since no session can be created before the manifest exists, so
    the next creation recognises it as its own leftover and finishes it.
    """
    if os.path.lexists(root) and not os.path.isdir(root):
        raise NotAStore(f"{root} is a file, not a folder; choose another path for the store")
    if os.path.isdir(root):
        # The root itself may be a symlink: list it by name.
        names = [n for n in os.listdir(root) if not n.startswith(".")]
        if names and not unfinished_creation(io, root, names):
            raise NotAStore(
                f"{root} holds files but is not an fsstore store; choose an empty or new "
                "folder")
    else:
        os.makedirs(os.path.dirname(root), exist_ok=True)
        try:
            io.mkdir(root)
        except FileExistsError:
            pass  # another process is creating the same store
    try:
        io.mkdir(layout.sessions_dir(root))
    except FileExistsError:
        pass  # another process is creating the same store, or one was interrupted
    data: dict[str, object] = {"format": manifest.STORE_FORMAT, "version": manifest.VERSION}
    if chain is not None:
        data["chain"] = _policy_json(chain)
    manifest.write(io, layout.store_manifest_path(root), data)
    io.fsync_dir(os.path.dirname(root) or ".")


def unfinished_creation(io: FileIO, root: str, names: list[str]) -> bool:
    """Whether ``root`` (no manifest, visible ``names``) is what an interrupted
    ``open_store`` leaves: nothing but an empty ``sessions/`` folder."""
    if names != [layout.SESSIONS_DIR]:
        return False
    sessions = layout.sessions_dir(root)
    try:
        return io.check_folder(sessions) and not io.listdir(sessions)
    except FsStoreError:
        return False


def new_store_policy(wanted: bool | None, key: ChainKey | None, root: str
                     ) -> ChainRecord | None:
    """The chain policy a store created now gets: a hash chain over every session
    (FORMAT.md 3.4), keyed under ``key`` (or the environment's key) when there is one,
    SHA-256 when not; none when ``open_store(chain=False)`` asked for none."""
    if wanted is False:
        return None
    key = key if key is not None else ChainKey.from_env(store_root=root)
    return ChainRecord(UNKEYED) if key is None else ChainRecord(KEYED, key.key_id)


def _policy_json(policy: ChainRecord) -> dict[str, str]:
    return {"alg": policy.alg, **({} if policy.key_id is None else {"key_id": policy.key_id})}


def chain_policy(io: FileIO, root: str, wanted: bool | None, key: ChainKey | None
                 ) -> ChainRecord | None:
    """The chain new sessions of the store at ``root`` get (None: none), as
    ``open_store(chain=wanted)`` asks: None follows the store's policy (``fsstore.json``'s
    ``chain``; a store made before chains, or with ``chain=False``, has none and chains
    nothing), False chains nothing through this handle, True chains new sessions, by the
    store's policy when it has one, else by a policy written now (as
    :func:`new_store_policy` makes one)."""
    path = layout.store_manifest_path(root)
    current = manifest.read_store(io, path).chain
    if wanted is None or wanted is False:
        return None if wanted is False else current
    if current is not None:
        return current
    policy = new_store_policy(True, key, root)
    assert policy is not None
    data = manifest.read(io, path, manifest.STORE_FORMAT)
    data["chain"] = _policy_json(policy)
    manifest.write(io, path, data)  # atomic: another process writing the same is harmless
    return policy
