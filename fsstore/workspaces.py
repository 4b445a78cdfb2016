"""Workspaces: named groups of a store's sessions, each session with a role.

One small JSON file per workspace, ``workspaces/WORKSPACE_ID.json`` at the store root
(docs/FORMAT.md, section 19): pretty-printed with sorted keys so that git diffs stay
small, replaced atomically (temp file, fsync, rename, fsync of the folder), so a reader
sees the old file or the new one, never a torn one, and takes no lock.

Writers take ``workspaces/lock`` (flock) for a read, a change and a rename: two
processes adding different sessions to one workspace at the same moment both land,
one after the other. The lock covers the folder, not one file, so creating and deleting
workspaces are ordered with every other change too (a workspace write is one small file:
holding the lock for the whole folder costs nothing worth a lock per file).

A membership names a session by id and is not removed when the session is deleted
(``delete_session`` writes nothing here, so deleting a session never waits on or fails
over a workspace): every read of members keeps only the sessions that exist, so a deleted
session disappears from listings, and ``verify`` notes each dangling member.
``remove_from_workspace`` removes one; a session created again under the same id is a
member again.
"""

from __future__ import annotations

import enum
import errno
import fcntl
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, NamedTuple

import msgspec

from . import layout, manifest
from .errors import (
    CorruptionError,
    FsStoreError,
    InvalidMetadata,
    InvalidSessionId,
    InvalidWorkspace,
    SessionNotFound,
    WorkspaceExists,
    WorkspaceLocked,
    WorkspaceMemberExists,
    WorkspaceMemberNotFound,
    WorkspaceNotFound,
)
from .fsio import FileIO, open_regular, os_error
from .unset import UNSET

WORKSPACE_FORMAT = "fsstore-workspace"
WORKSPACE_MAJOR = 1
WORKSPACE_MINOR = 0
WORKSPACE_VERSION = f"{WORKSPACE_MAJOR}.{WORKSPACE_MINOR}"
#: A workspace file larger than this is refused by readers and never written.
MAX_WORKSPACE_BYTES = manifest.MAX_MANIFEST_BYTES
#: How long a write waits for ``workspaces/lock`` before WorkspaceLocked (seconds).
LOCK_TIMEOUT = 10.0
MAX_ROLE = 64
_ROLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


class SessionRole(str, enum.Enum):
    """The roles fsstore names. Any other role is a custom one: 1 to 64 of
    ``A-Z a-z 0-9 . _ -``, starting with a letter or digit."""

    PRIMARY = "primary"  # the session the workspace is about (an agent's main thread)
    RELATED = "related"  # another session of the same work
    REFERENCE = "reference"  # kept for looking things up (docs, an earlier run)

    def __str__(self) -> str:
        return self.value


class WorkspaceMember(NamedTuple):
    """A session of a workspace: its id, its role and when it was added (epoch seconds)."""

    session_id: str
    role: str
    added: float


class Workspace(NamedTuple):
    """A workspace as read from its file. ``members`` are the sessions that exist,
    sorted by id (a deleted session is left out: see the module docstring)."""

    id: str
    name: str
    description: str
    metadata: dict[str, Any]
    created: float
    updated: float
    members: list[WorkspaceMember]
    path: str


# --- the file ---------------------------------------------------------------------------------


class _MemberRecord(msgspec.Struct, frozen=True):
    role: str
    added: str


class _WorkspaceFile(msgspec.Struct, frozen=True):
    """``workspaces/ID.json``, the fields this version reads (others are kept)."""

    format: str
    version: Any
    id: str
    name: str
    description: str
    metadata: dict[str, Any]
    created: str
    updated: str
    sessions: dict[str, _MemberRecord]


def check_role(role: object) -> str:
    """The role as stored: a :class:`SessionRole` or a custom role str; InvalidWorkspace
    (field ``role``) for anything else."""
    if isinstance(role, SessionRole):
        return role.value
    if not isinstance(role, str):
        raise InvalidWorkspace(f"role must be a SessionRole or a str, not "
                               f"{type(role).__name__}", field="role")
    if not _ROLE.match(role):
        shown = role if len(role) <= 40 else role[:40] + "..."
        raise InvalidWorkspace(
            f"invalid role {shown!r}: use primary, related, reference, or a custom role of 1 "
            f"to {MAX_ROLE} characters from A-Z a-z 0-9 . _ - starting with a letter or digit",
            field="role")
    return role


def _check_text(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidWorkspace(f"workspace {field} must be a str, not "
                               f"{type(value).__name__}", field=field)
    try:
        manifest.check_json(value, f"workspace {field}")
    except InvalidMetadata as exc:
        raise InvalidWorkspace(str(exc), field=field) from None
    return value


def _check_metadata(metadata: object) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidWorkspace(f"workspace metadata must be a mapping, not "
                               f"{type(metadata).__name__}", field="metadata")
    fields = dict(metadata)
    try:
        # One level below the file's top, as a session's metadata is.
        manifest.check_json(fields, "workspace metadata", manifest.MAX_DEPTH - 1)
    except InvalidMetadata as exc:
        raise InvalidWorkspace(str(exc), field="metadata") from None
    return fields


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def read_file(io: FileIO, path: str, workspace_id: str) -> tuple[dict[str, Any],
                                                                  _WorkspaceFile]:
    """Read and check one workspace file: all of it (unknown keys kept, for a rewrite)
    and its known fields, typed. WorkspaceNotFound if it is missing; CorruptionError
    naming the file (and the field) for damage: not JSON, too big, too deep, another
    format, a field of the wrong type, a member that is no session id or no role;
    FormatVersionError for a newer major version."""
    try:
        raw = io.read_file(path, MAX_WORKSPACE_BYTES)
    except FileNotFoundError:
        raise WorkspaceNotFound(f"no workspace {workspace_id!r} (no {path})") from None
    except ValueError as exc:
        if isinstance(exc, FsStoreError):
            raise
        raise CorruptionError(f"{exc}; restore this workspace file from a backup",
                              path=path) from None
    data = manifest.loads(raw, path)
    if not isinstance(data, dict) or data.get("format") != WORKSPACE_FORMAT:
        raise CorruptionError(f'not a workspace file (no "format": "{WORKSPACE_FORMAT}"); '
                              "restore it from a backup or remove it", path=path)
    manifest.check_version(data.get("version"), path, major_read=WORKSPACE_MAJOR,
                           current=WORKSPACE_VERSION, what="workspace format")
    decoded = manifest.decode_as(data, _WorkspaceFile, path)

    def damaged(message: str) -> CorruptionError:
        return CorruptionError(f"{message}; fix it by hand or restore this workspace file "
                               "from a backup", path=path)

    if decoded.id != workspace_id:
        raise damaged(f"field id: {decoded.id[:40]!r} is not the file's name "
                      f"{workspace_id!r}")
    for name in ("created", "updated"):
        manifest.iso_to_epoch(getattr(decoded, name), path, name)
    for session_id, record in decoded.sessions.items():
        try:
            layout.check_session_id(session_id)
        except InvalidSessionId:
            raise damaged(f"field sessions: {session_id[:40]!r} is not a session id") from None
        try:
            check_role(record.role)
        except InvalidWorkspace:
            raise damaged(f"field sessions.{session_id}.role: {record.role[:40]!r} is not "
                          "a role") from None
        manifest.iso_to_epoch(record.added, path, f"sessions.{session_id}.added")
    return data, decoded


def _encode(data: dict[str, Any], field: str) -> bytes:
    """The file's bytes; InvalidWorkspace naming ``field`` (what the call changes) if a
    reader would refuse them (too big)."""
    try:
        return manifest.encode(data)
    except InvalidMetadata as exc:
        raise InvalidWorkspace(f"{field}: " + str(exc).replace("manifest", "workspace file"),
                               field=field) from None


def _workspace(path: str, decoded: _WorkspaceFile,
               exists: Callable[[str], bool]) -> Workspace:
    members = [WorkspaceMember(session_id, record.role,
                               manifest.iso_to_epoch(record.added, path, "added"))
               for session_id, record in sorted(decoded.sessions.items())
               if exists(session_id)]
    return Workspace(decoded.id, decoded.name, decoded.description, dict(decoded.metadata),
                     manifest.iso_to_epoch(decoded.created, path, "created"),
                     manifest.iso_to_epoch(decoded.updated, path, "updated"), members, path)


# --- the lock ---------------------------------------------------------------------------------


@contextmanager
def _locked(folder: str, timeout: float) -> Iterator[None]:
    """Hold ``workspaces/lock`` (flock, exclusive). The file is never removed, so a
    waiter never locks a file that is no longer the lock; its name needs no fsync (a
    lock lost with a power loss is made again, empty, by the next writer)."""
    path = os.path.join(folder, layout.WORKSPACE_LOCK)
    fd = open_regular(path, os.O_RDWR | os.O_CREAT)
    try:
        deadline = time.monotonic() + timeout
        pause = 0.0005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise os_error(exc, path, classify=False) from None
            if time.monotonic() >= deadline:
                raise WorkspaceLocked(f"another writer held {path} for over {timeout:g} s; "
                                      "retry")
            time.sleep(pause)
            pause = min(pause * 2, 0.02)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# --- the store's workspaces -------------------------------------------------------------------


class Workspaces:
    """The workspaces of the store at ``root``. ``session_exists`` and ``session_ids``
    are the store's own (``Store.has_session``, ``Store.session_ids``)."""

    def __init__(self, io: FileIO, root: str, session_exists: Callable[[str], bool],
                 session_ids: Callable[[], list[str]]) -> None:
        self.io = io
        self.root = root
        self.folder = layout.workspaces_dir(root)
        self._exists = session_exists
        self._session_ids = session_ids

    def _path(self, workspace_id: str, *, new: bool = False) -> str:
        layout.check_workspace_id(workspace_id, new=new)
        return layout.workspace_path(self.root, workspace_id)

    def _folder_exists(self) -> bool:
        return self.io.check_folder(self.folder)  # refuses a symlink or a file there

    def _read(self, workspace_id: str) -> tuple[str, dict[str, Any], _WorkspaceFile]:
        path = self._path(workspace_id)
        if not self._folder_exists():
            raise WorkspaceNotFound(f"no workspace {workspace_id!r} in {self.root} (no "
                                    f"{layout.WORKSPACES_DIR}/ folder)")
        data, decoded = read_file(self.io, path, workspace_id)
        return path, data, decoded

    # --- reads: no lock; a rename replaces a file whole ---

    def get(self, workspace_id: str) -> Workspace:
        path, _data, decoded = self._read(workspace_id)
        return _workspace(path, decoded, self._exists)

    def ids(self) -> list[str]:
        if not self._folder_exists():
            return []
        return layout.workspace_ids(self.io.listdir(self.folder))

    def every(self) -> list[Workspace]:
        sessions = set(self._session_ids())
        found = []
        for workspace_id in self.ids():
            path = layout.workspace_path(self.root, workspace_id)
            try:
                _data, decoded = read_file(self.io, path, workspace_id)
            except WorkspaceNotFound:
                continue  # deleted meanwhile
            found.append(_workspace(path, decoded, sessions.__contains__))
        return found

    def sessions(self, workspace_id: str, role: SessionRole | str | None = None
                 ) -> list[WorkspaceMember]:
        wanted = None if role is None else check_role(role)
        return [m for m in self.get(workspace_id).members if wanted in (None, m.role)]

    def of_session(self, session_id: str) -> dict[str, str]:
        layout.check_session_id(session_id)
        if not self._exists(session_id):
            raise SessionNotFound(f"no session {session_id!r} in {self.root}")
        found = {}
        for workspace_id in self.ids():
            path = layout.workspace_path(self.root, workspace_id)
            try:
                _data, decoded = read_file(self.io, path, workspace_id)
            except WorkspaceNotFound:
                continue
            record = decoded.sessions.get(session_id)
            if record is not None:
                found[workspace_id] = record.role
        return found

    # --- writes: under the lock, read, change, rename ---

    def create(self, workspace_id: str | None, name: str | None, description: str,
               metadata: Mapping[str, Any] | None) -> Workspace:
        workspace_id = layout.new_session_id() if workspace_id is None else workspace_id
        path = self._path(workspace_id, new=True)
        now = _now()
        data: dict[str, Any] = {
            "format": WORKSPACE_FORMAT, "version": WORKSPACE_VERSION, "id": workspace_id,
            "name": workspace_id if name is None else _check_text(name, "name"),
            "description": _check_text(description, "description"),
            "metadata": _check_metadata(metadata), "created": now, "updated": now,
            "sessions": {},
        }
        raw = _encode(data, "metadata")
        if self.io.exists(path):  # checked again under the lock; this one writes nothing
            raise WorkspaceExists(f"workspace {workspace_id!r} already exists at {path}")
        if not self._folder_exists():
            try:
                self.io.mkdir(self.folder)
            except FileExistsError:
                pass  # another process made it first
            self.io.fsync_dir(self.root)
        with _locked(self.folder, LOCK_TIMEOUT):
            if self.io.exists(path):
                raise WorkspaceExists(f"workspace {workspace_id!r} already exists at {path}")
            self.io.atomic_write(path, raw)
        return self.get(workspace_id)

    def _change(self, workspace_id: str, field: str,
                change: Callable[[dict[str, Any], _WorkspaceFile], bool]) -> Workspace:
        """Read the workspace under the lock, let ``change`` edit its dict (returning
        whether anything changed), and replace the file. Unknown keys are kept."""
        path = self._path(workspace_id)
        if not self._folder_exists():
            raise WorkspaceNotFound(f"no workspace {workspace_id!r} in {self.root} (no "
                                    f"{layout.WORKSPACES_DIR}/ folder)")
        with _locked(self.folder, LOCK_TIMEOUT):
            data, decoded = read_file(self.io, path, workspace_id)
            if change(data, decoded):
                data["updated"] = _now()
                self.io.atomic_write(path, _encode(data, field))
                decoded = manifest.decode_as(data, _WorkspaceFile, path)
        return _workspace(path, decoded, self._exists)

    def update(self, workspace_id: str, name: Any = UNSET, description: Any = UNSET,
               metadata: Any = UNSET) -> Workspace:
        fields: dict[str, Any] = {}
        if name is not UNSET:
            fields["name"] = _check_text(name, "name")
        if description is not UNSET:
            fields["description"] = _check_text(description, "description")
        if metadata is not UNSET:
            fields["metadata"] = _check_metadata(metadata)

        def change(data: dict[str, Any], _decoded: _WorkspaceFile) -> bool:
            data.update(fields)
            return bool(fields)

        field = "metadata" if "metadata" in fields else next(iter(fields), "name")
        return self._change(workspace_id, field, change)

    def delete(self, workspace_id: str) -> None:
        path = self._path(workspace_id)
        if not self._folder_exists():
            raise WorkspaceNotFound(f"no workspace {workspace_id!r} in {self.root}")
        with _locked(self.folder, LOCK_TIMEOUT):
            # A damaged file can be deleted too: it is not read first.
            try:
                self.io.unlink(path)
            except FileNotFoundError:
                raise WorkspaceNotFound(f"no workspace {workspace_id!r} (no {path})") from None
            self.io.fsync_dir(self.folder)

    def add(self, workspace_id: str, session_id: str, role: SessionRole | str) -> Workspace:
        self._path(workspace_id)
        layout.check_session_id(session_id)
        stored = check_role(role)
        if not self._exists(session_id):
            raise SessionNotFound(f"no session {session_id!r} in {self.root}: create it "
                                  "before adding it to a workspace")

        def change(data: dict[str, Any], decoded: _WorkspaceFile) -> bool:
            record = decoded.sessions.get(session_id)
            if record is not None:
                if record.role == stored:
                    return False  # added already, as asked: nothing to write
                raise WorkspaceMemberExists(
                    f"session {session_id!r} is already in workspace {workspace_id!r} as "
                    f"{record.role!r}; change its role with set_workspace_role")
            data["sessions"] = {**data["sessions"],
                                session_id: {"role": stored, "added": _now()}}
            return True

        return self._change(workspace_id, "sessions", change)

    def set_role(self, workspace_id: str, session_id: str, role: SessionRole | str
                 ) -> Workspace:
        self._path(workspace_id)
        layout.check_session_id(session_id)
        stored = check_role(role)

        def change(data: dict[str, Any], decoded: _WorkspaceFile) -> bool:
            record = decoded.sessions.get(session_id)
            if record is None:
                raise WorkspaceMemberNotFound(
                    f"session {session_id!r} is not in workspace {workspace_id!r}; add it "
                    "with add_to_workspace")
            if record.role == stored:
                return False
            # The member's other keys (a newer minor version's) are kept.
            data["sessions"] = {**data["sessions"],
                                session_id: {**data["sessions"][session_id], "role": stored}}
            return True

        return self._change(workspace_id, "sessions", change)

    def remove(self, workspace_id: str, session_id: str) -> Workspace:
        self._path(workspace_id)
        layout.check_session_id(session_id)

        def change(data: dict[str, Any], decoded: _WorkspaceFile) -> bool:
            # A member whose session was deleted is removed too: that is how a dangling
            # one ``verify`` notes is tidied.
            if session_id not in decoded.sessions:
                raise WorkspaceMemberNotFound(
                    f"session {session_id!r} is not in workspace {workspace_id!r}")
            data["sessions"] = {k: v for k, v in data["sessions"].items() if k != session_id}
            return True

        return self._change(workspace_id, "sessions", change)

    def remove_leftovers(self) -> list[str]:
        """Remove the temp files writes a crash interrupted left in the folder; return
        their paths. Under the lock: a temp file of a write in progress is the writer's
        until its rename, which happens under the lock too."""
        if not self._folder_exists():
            return []
        removed = []
        with _locked(self.folder, LOCK_TIMEOUT):
            for name in self.io.listdir(self.folder):
                if name.startswith(layout.TEMP_PREFIX):
                    path = os.path.join(self.folder, name)
                    self.io.unlink(path)
                    removed.append(path)
            if removed:
                self.io.fsync_dir(self.folder)
        return removed

    def dangling(self, workspace_id: str) -> tuple[str, list[str]]:
        """The path of a workspace file and its members whose session does not exist
        (for ``verify``); raises what :func:`read_file` raises."""
        path, _data, decoded = self._read(workspace_id)
        return path, sorted(s for s in decoded.sessions if not self._exists(s))
