"""Checks of backups (docs/FORMAT.md, section 23): the backup manifest read and written,
the checks a backup makes of the files it copied from the source (named with the
source's file and offset), when a shard file may be taken from an earlier copy, the
per-part file counts a backup records, and :func:`verify_backup`."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import layout
from .errors import CorruptionError, Finding, FsStoreError, InvalidBackupDest
from .fsio import FileIO

if TYPE_CHECKING:
    from .chain import ChainKey

BACKUP_MANIFEST = ".fsstore-backup.json"
BACKUP_FORMAT = "fsstore-backup"
BACKUP_VERSION = "1.0"


def _within(inner: str, outer: str) -> bool:
    return inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep)


def _check_dest(io: FileIO, store_root: str, dest: str) -> dict[str, Any] | None:
    """Refuse a DEST that cannot hold a backup of the store (InvalidBackupDest, nothing
    written); return its backup manifest when it holds one."""
    real_dest = os.path.realpath(dest)
    real_store = os.path.realpath(store_root)
    if _within(real_dest, real_store):
        raise InvalidBackupDest(f"{dest}: the backup folder is inside the store "
                                f"{store_root} (it would copy itself); choose a folder "
                                "outside it")
    if _within(real_store, real_dest):
        raise InvalidBackupDest(f"{dest}: the store {store_root} is inside the backup "
                                "folder; choose a folder outside the store")
    if not os.path.lexists(dest):
        above = os.path.dirname(dest)
        while not os.path.lexists(above):
            above = os.path.dirname(above)
        if not os.path.isdir(above):
            raise InvalidBackupDest(f"{dest}: {above} is not a folder, so the backup "
                                    "folder cannot be made under it; choose another path")
        return None
    if not os.path.isdir(dest):
        raise InvalidBackupDest(f"{dest}: not a folder; choose a new or empty folder, or "
                                "an earlier backup")
    manifest = _read_backup_manifest(io, dest)
    if manifest is None and any(not name.startswith(".") for name in io.listdir(dest)
                                if not _first_backup_began(dest, name)):
        raise InvalidBackupDest(f"{dest}: neither empty nor a backup (it holds no "
                                f"{BACKUP_MANIFEST}); choose a new or empty folder, or an "
                                "earlier backup")
    return manifest


def _first_backup_began(dest: str, name: str) -> bool:
    """Whether ``name`` in ``dest`` (which holds no backup manifest) is what a first
    backup killed before it wrote its manifest leaves: ``fsstore.json``, an empty
    ``sessions/``. Such a folder holds no data; it is taken for an empty one."""
    if name == layout.STORE_MANIFEST:
        return os.path.isfile(os.path.join(dest, name))
    if name == layout.SESSIONS_DIR:
        try:
            return not os.listdir(os.path.join(dest, name))
        except OSError:
            return False
    return False


def _check_link_dest(io: FileIO, store_root: str, root: str) -> None:
    """Refuse a ``--link-dest`` that is not an earlier backup outside the store
    (InvalidBackupDest). Linking from the store itself would give DEST the store's own
    files (an inode a writer or a repair of the store may change); a store holds a
    sessions folder too, so the backup manifest is what tells a backup."""
    real = os.path.realpath(root)
    if _within(real, os.path.realpath(store_root)) or _within(
            os.path.realpath(store_root), real):
        raise InvalidBackupDest(f"{root}: --link-dest is inside the store "
                                f"{store_root} (or holds it); name an earlier backup")
    try:
        known = os.path.isdir(root) and _read_backup_manifest(io, root) is not None
    except FsStoreError:
        known = False
    if not known or not os.path.isdir(layout.sessions_dir(root)):
        raise InvalidBackupDest(f"{root}: --link-dest is not a backup (no readable "
                                f"{BACKUP_MANIFEST}); name an earlier backup, or "
                                "leave it out")


def _real_folder(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _discard(io: FileIO, path: str) -> None:
    """Remove a folder of DEST's ``sessions/`` (a trash or build folder) or, when a
    hostile or damaged DEST has a symlink or a file there, that name alone: nothing is
    removed through a link."""
    if _real_folder(path):
        io.rmtree(path)
    else:
        io.unlink_if_there(path)


def _read_backup_manifest(io: FileIO, dest: str) -> dict[str, Any] | None:
    """DEST's backup manifest, None when there is none; CorruptionError if unreadable."""
    path = os.path.join(dest, BACKUP_MANIFEST)
    try:
        raw = io.read_file(path, 64 << 20)
    except FileNotFoundError:
        return None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise CorruptionError(f"not JSON ({exc}); run the backup again into a new folder",
                              path=path) from None
    if not isinstance(data, dict) or data.get("format") != BACKUP_FORMAT or not isinstance(
            data.get("sessions"), dict):
        raise CorruptionError(f"not an {BACKUP_FORMAT} manifest", path=path)
    major = str(data.get("version", "")).split(".")[0]
    if major != BACKUP_VERSION.split(".")[0]:
        from .errors import FormatVersionError
        raise FormatVersionError(f"{path}: backup manifest version {data.get('version')!r} "
                                 "is not one this fsstore reads; upgrade fsstore")
    return data


def _write_backup_manifest(io: FileIO, dest: str, data: dict[str, Any]) -> None:
    io.atomic_write(os.path.join(dest, BACKUP_MANIFEST),
                    (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def _never(_root: str) -> bool:
    return False


def _shard_entries(raw: bytes | None) -> dict[str, object] | None:
    """Each file a state of the collection manifest ``raw`` names, with the shard entry
    that describes it (None when the manifest is missing or damaged)."""
    import msgspec

    from .vectors.collection_file import CollectionManifest
    try:
        manifest = msgspec.convert(json.loads(raw or b""), CollectionManifest)
    except (ValueError, TypeError, msgspec.ValidationError):
        return None
    return {name: entry for state in manifest.states() for entry in state.shards
            for name in entry.files()}


def _recorded(entry: Any, name: str) -> tuple[int, int] | None:
    """The (size, crc32c) the shard entry records for its file ``name`` (None for its
    deleted-rows file, which it records no checksum of)."""
    if name.endswith(layout.VECTORS_SUFFIX):
        return int(entry.vectors_bytes), int(entry.vectors_crc)
    if name.endswith(layout.DOCS_SUFFIX):
        return int(entry.docs_bytes), int(entry.docs_crc)
    return None


def _reference_entries(io: FileIO, folder: str) -> dict[str, object]:
    """:func:`_shard_entries` of the collection manifest in ``folder`` ({} without one)."""
    try:
        raw = io.read_file(os.path.join(folder, layout.COLLECTION_MANIFEST), 4 << 20)
    except (OSError, FsStoreError):
        return {}
    return _shard_entries(raw) or {}


def _uid(manifest: bytes) -> object:
    """The uid a session manifest names (the bytes themselves when it is not JSON)."""
    try:
        data = json.loads(manifest)
    except ValueError:
        return manifest
    return data.get("uid", manifest) if isinstance(data, dict) else manifest


def _source_damage(exc: FsStoreError, source: str, copy: str | None = None
                   ) -> CorruptionError:
    """Damage found in a file read from the source session (the copy ``copy`` holds its
    bytes at the same offsets): named with the source's file and offset."""
    path = getattr(exc, "path", None) or source
    reason = getattr(exc, "reason", None) or str(exc)
    if copy is not None:
        path = path.replace(copy, source)
        reason = reason.replace(copy, source)
    return CorruptionError(f"{reason}; the session is not backed up (DEST keeps its "
                           "previous copy): run fsstore verify, and repair the session",
                           path=path, offset=getattr(exc, "offset", None))


def _valid_entry(session_id: object, entry: object) -> bool:
    """Whether a backup manifest's entry names a session id and records its head."""
    try:
        layout.check_session_id(session_id)
    except FsStoreError:
        return False
    return isinstance(entry, dict) and type(entry.get("head")) is int


# Files a reader of a backup may write or rewrite (caches, a lock): not counted.
_UNCOUNTED = frozenset({layout.WRITER_LOCK, layout.TAIL_HINT, layout.MESSAGE_INDEX})


def _tally(io: FileIO, folder: str) -> dict[str, list[int]]:
    """How many files, and how many bytes, each part of a session's copy holds (``log``,
    ``blobs``, ``checkpoints``, ...; a file at the top under its own name): recorded
    when the copy is made, so that ``verify_backup`` finds a file removed, added,
    truncated or extended since, which no checksum of the session tells (a checkpoint
    or snapshot gone, the newest segment cut at a frame boundary)."""
    found: dict[str, list[int]] = {}

    def walk(path: str, part: str | None) -> None:
        for entry in io.entries(path):
            if entry.name in _UNCOUNTED or (entry.name.startswith(".") and not (
                    part is None and entry.name.startswith(layout.REPAIR_PREFIX))):
                continue
            inner = os.path.join(path, entry.name)
            if entry.kind == "folder":
                walk(inner, entry.name if part is None else part)
            else:  # a symlink put in a copy counts too: a backup makes none
                tally = found.setdefault(entry.name if part is None else part, [0, 0])
                tally[0] += 1
                tally[1] += entry.size

    walk(folder, None)
    return found


def _tally_findings(io: FileIO, folder: str, recorded: object) -> list[Finding]:
    """Where the copy in ``folder`` no longer holds the files ``_tally`` recorded."""
    if not isinstance(recorded, dict):
        return []  # recorded by an earlier fsstore: nothing to compare
    try:
        now = _tally(io, folder)
    except (FsStoreError, OSError) as exc:
        return [Finding("problem", folder, None, f"cannot be listed: {exc}")]
    findings = []
    for part in sorted(set(now) | set(recorded)):
        had = recorded.get(part)
        has = now.get(part, [0, 0])
        if had != has:
            findings.append(Finding(
                "problem", os.path.join(folder, part), None,
                f"holds {has[0]} files of {has[1]} bytes, but the backup wrote "
                f"{had[0] if isinstance(had, list) else 0} files of "
                f"{had[1] if isinstance(had, list) else 0} bytes: a file was removed, "
                "added, cut or extended since; run the backup again (or restore the "
                "session from another backup)"))
    return findings


# --- checking a backup ----------------------------------------------------------------


def verify_backup(dest: str | os.PathLike[str], *,
                  on_session: Callable[[str], object] | None = None,
                  chain_key: ChainKey | bytes | str | os.PathLike[str] | None = None
                  ) -> list[Finding]:
    """Check the backup in ``dest``: that the last backup into it completed, that every
    session it recorded is there and ends at the recorded seq, and everything
    ``Store.verify`` checks (every session's files, every blob's digest, the chain of
    each chained session). Returns the findings (``problem`` for damage, naming the file
    and offset); never raises for damage. ``chain_key``: the key of keyed chained
    sessions, as ``open_store`` takes it (else the environment's; without it, each such
    session's chain is reported unchecked, as ``verify`` does)."""
    from .store import open_store
    dest = os.path.abspath(os.fspath(dest))
    io = FileIO()
    findings: list[Finding] = []
    manifest_path = os.path.join(dest, BACKUP_MANIFEST)
    try:
        record = _read_backup_manifest(io, dest)
    except FsStoreError as exc:
        return [Finding("problem", manifest_path, None, str(exc))]
    if record is None:
        return [Finding("problem", manifest_path, None,
                        "missing: the folder is not a backup fsstore made")]
    try:
        store = open_store(dest, create=False, chain_key=chain_key)
    except (FsStoreError, OSError) as exc:
        return [Finding("problem", dest, None, f"does not open as a store: {exc}")]
    if not record.get("complete"):
        findings.append(Finding("problem", manifest_path, None,
                                f"the backup started {record.get('started')} did not "
                                "complete (interrupted, or some session could not be "
                                "copied): run it again"))
    present = set(store.session_ids())
    from .chain_session import unchecked_reader
    for session_id, entry in sorted(record["sessions"].items()):
        if not _valid_entry(session_id, entry):
            findings.append(Finding("problem", manifest_path, None,
                                    f"the entry {str(session_id)[:80]!r} names no session "
                                    "id, or records no head seq: the manifest was edited; "
                                    "run the backup again"))
            continue
        folder = layout.session_dir(dest, session_id)
        if session_id not in present:
            findings.append(Finding("problem", folder, None, "recorded in the backup "
                                    "manifest but missing from the backup"))
            continue
        findings.extend(_tally_findings(io, folder, entry.get("files")))
        expected = entry.get("head") if isinstance(entry, dict) else None
        try:
            reader = unchecked_reader(io, layout.log_dir(folder))
            first, _start, end = reader.locate_tail()
            head = end.next_seq - 1
        except (FsStoreError, OSError):
            continue  # damage: verify below names it
        if head != expected:
            findings.append(Finding(
                "problem", reader.segment_path(first), end.end,
                f"the log ends at seq {head}, but the backup copied it up to seq "
                f"{expected}: records are missing (or were added) since; restore the "
                "session from another backup"))
    for session_id in sorted(present - set(record["sessions"])):
        findings.append(Finding("note", layout.session_dir(dest, session_id), None,
                                "not recorded in the backup manifest (added by hand?)"))
    findings.extend(store.verify(on_session=on_session))
    return findings
