"""A session's title, tags and metadata: ``session.json``, rewritten atomically.

``Session.save_session_with_updates`` commits new metadata in the log first (an
``fsstore.metadata`` record ending its batch) and rewrites ``session.json`` right after;
a crash (or a failed manifest write) in between leaves the manifest behind the log, and
the next write rolls it forward from that record (docs/FORMAT.md, section 12.3).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from . import catalog, identity, layout, manifest
from .errors import CorruptionError, InvalidMetadata, SessionNotFound
from .fsio import FileIO
from .log_writer import LogWriter
from .unset import UNSET

#: The record ``save_session_with_updates`` ends its batch with: the new title, tags and
#: metadata, so that they commit with the updates (session.json follows it).
METADATA_RECORD = "fsstore.metadata"
METADATA_FIELDS = ("title", "tags", "metadata")



def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def new_manifest(
    session_id: str, title: str | None, tags: Iterable[str], metadata: Mapping[str, Any] | None,
    uid: identity.Identity | None = None,
) -> dict[str, Any]:
    """A new session's manifest. Raises InvalidMetadata, before anything is written, for
    a title, tags or metadata a reader would refuse (wrong types, not JSON, too deep, or
    a manifest over 1 MiB)."""
    title, tags, metadata = manifest.check_metadata(title, tags, metadata)
    now = now_iso()
    data = {
        "format": manifest.SESSION_FORMAT,
        "version": manifest.VERSION,
        "id": session_id,
        "created": now,
        "updated": now,
        "title": title,
        "tags": tags,
        "metadata": metadata,
        **(uid or identity.Identity.of(identity.mint())).manifest_fields(),
    }
    decoded: dict[str, Any] = json.loads(manifest.encode(data))
    return decoded  # what a reader gets back: checked, as JSON


class ManifestFile:
    """A session's ``session.json`` as this handle last read or wrote it: ``raw`` (all
    of it, keys this version does not know included) and ``meta`` (checked, decoded)."""

    def __init__(self, io: FileIO, session_path: str, session_id: str) -> None:
        self.io = io
        self.session_id = session_id
        self.path = layout.session_manifest_path(session_path)
        try:
            self.raw = manifest.read(io, self.path, manifest.SESSION_FORMAT)
        except FileNotFoundError:
            raise SessionNotFound(f"no session {session_id!r} at {session_path}") from None
        self.meta = manifest.decode_session(self.raw, self.path)
        #: A chained session's (chain_bindings.py): what checks each manifest read
        #: against the chain, and what binds each one written to it.
        self.checker: Callable[[Mapping[str, Any]], None] | None = None
        self.sealer: Callable[[dict[str, Any]], None] | None = None

    def reload(self) -> None:
        path = self.path
        raw = manifest.read(self.io, path, manifest.SESSION_FORMAT)
        meta = manifest.decode_session(raw, path)
        if self.checker is not None:
            self.checker(raw)
        self.raw, self.meta = raw, meta

    def fields(self, title: Any, tags: Any, metadata: Any, *, reload: bool) -> dict[str, Any]:
        """The metadata fields after an update giving ``title``, ``tags`` and
        ``metadata`` (each :data:`UNSET` to keep it), checked. With ``reload`` (a shared
        session: other writers may have changed session.json since this one read it),
        the fields not given keep their current values, not this handle's copy."""
        if reload:
            self.reload()
        meta = self.meta
        return new_manifest(
            self.session_id,
            meta.title if title is UNSET else title,
            list(meta.tags or []) if tags is UNSET else tags,
            (meta.metadata or {}) if metadata is UNSET else metadata,
        )

    def encode(self, fields: Mapping[str, Any], metadata_seq: int | None = None
               ) -> tuple[dict[str, Any], bytes]:
        """The manifest with ``fields`` replaced, and its bytes; InvalidMetadata if a
        reader would refuse it. Keys this version does not know are kept."""
        updated = dict(self.raw)
        for key in (*METADATA_FIELDS, "updated"):
            if key in fields:
                updated[key] = fields[key]
        if "retention" in fields:  # None removes the policy
            updated["retention"] = fields["retention"]
            if fields["retention"] is None:
                del updated["retention"]
        if metadata_seq is not None:
            updated["metadata_seq"] = metadata_seq
        updated["version"] = manifest.session_version(updated)
        if self.sealer is not None:
            self.sealer(updated)
        return updated, manifest.encode(updated)

    def write(self, fields: Mapping[str, Any], metadata_seq: int | None = None) -> None:
        _, raw = self.encode(fields, metadata_seq)
        path = self.path
        self.io.atomic_write(path, raw)
        catalog.note(self.io, os.path.dirname(path))
        self.raw = json.loads(raw)  # exactly what a reader gets back
        self.meta = manifest.decode_session(self.raw, path)

    def roll_forward(self, writer: LogWriter) -> None:
        """Finish a ``save_session_with_updates`` cut off between its log write and its
        manifest write (by a crash, or a manifest write that failed): its metadata record
        is then the log's last record that is not a queue, input or lease record (those
        come from outside the turns and may follow it), and its seq is after
        ``metadata_seq``. Runs at open and at the start of each write operation, after a
        shared writer caught up (``WriterAccess.writing``), so that no append lands before
        it: a writer already open, or the one whose manifest write failed, rolls it
        forward too (section 12.3 of docs/FORMAT.md)."""
        log = writer.reader
        with writer.lock:
            if writer.last_kind != METADATA_RECORD or writer.closed or writer.failed:
                return  # the common case: one comparison
            seq = writer.significant_head
            if (self.meta.metadata_seq or 0) >= seq:
                return
            # Another writer may have rewritten session.json since this one read it (a
            # shared session): only a manifest still behind the record is rolled forward.
            self.reload()
            if (self.meta.metadata_seq or 0) >= seq:
                return
            writer.flush()
            record = next(iter(log.events(after_seq=seq - 1, until_seq=seq)), None)
            if record is None or record.seq != seq or record.kind != METADATA_RECORD:
                raise CorruptionError(f"the log's {METADATA_RECORD} record at seq {seq} "
                                      "cannot be read back", path=log.path)
            if not isinstance(record.data, dict):
                raise CorruptionError(f"{METADATA_RECORD} record at seq {seq} holds "
                                      f"{type(record.data).__name__}, not a map of the "
                                      "metadata fields", path=log.path)
            data = record.data
            try:
                title, tags, metadata = manifest.check_metadata(
                    data.get("title"), data.get("tags", ()), data.get("metadata"))
            except InvalidMetadata as exc:
                raise CorruptionError(f"{METADATA_RECORD} record at seq {seq} holds "
                                      f"metadata a manifest cannot: {exc}",
                                      path=log.path) from None
            fields = {"title": title, "tags": tags, "metadata": metadata,
                      "updated": now_iso()}
            self.write(fields, metadata_seq=seq)
