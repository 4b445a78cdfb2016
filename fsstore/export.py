"""``fsstore export``: sessions written out as an export file (docs/FORMAT.md, section
22), read through the sessions' own readers; ``importer.py`` reads them back.

What a session's lines hold, in order::

    session     its manifest (all of session.json), log start, head, workspaces
    base        the base frame a retained log starts with (its state image)
    frame       one per frame of the log: one batch, every record of it (the store's
                own ``fsstore.*`` records included), with its seq, ts and turn
    state       the state image at the head (the importer checks its fold against it)
    checkpoint  one per checkpoint: its id, label, kind, created, seq and state
    blob        one per attachment: its bytes inline, or a file beside the export
    collection  one per vector collection, then a ``document`` line per document
    end         counts of the lines above

The log is exported as its records read, whatever files hold them: compacted segments
read as the frames they hold, records a vacuum reclaimed or redacted as they read now.
An export taken while a writer appends stops at the head it read first.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from . import layout
from .errors import CorruptionError, InvalidSetting
from .export_format import FORMAT_NAME, FORMAT_VERSION, seal, to_json
from .log import LogPosition
from .segment_header import SEGMENT_HEADER_SIZE

if TYPE_CHECKING:
    from .session_reader import SessionReader
    from .store import Store

BLOB_MODES = ("inline", "beside")
BLOBS_SUFFIX = ".blobs"  # the folder beside FILE: FILE.blobs/HEX
_ZSTD_SUFFIXES = (".zst", ".zstd")


@dataclass
class ExportReport:
    """What :func:`export_sessions` wrote."""

    path: str | None
    sessions: int = 0
    events: int = 0
    frames: int = 0
    checkpoints: int = 0
    blobs: int = 0
    documents: int = 0
    workspaces: int = 0
    lines: int = 0
    bytes: int = 0  # of the lines, before compression
    seconds: float = 0.0
    session_ids: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        where = self.path or "stdout"
        return (f"exported {self.sessions} sessions ({self.events} events in {self.frames} "
                f"batches, {self.checkpoints} checkpoints, {self.blobs} blobs, "
                f"{self.documents} vector documents, {self.workspaces} workspaces) to "
                f"{where}: {self.lines} lines, {self.bytes} bytes, in {self.seconds:.2f} s")


class _Lines:
    """Numbers, seals and writes lines, and keeps the SHA-256 of them for the trailer."""

    def __init__(self, out: IO[bytes], report: ExportReport) -> None:
        self.out = out
        self.report = report
        self.digest = hashlib.sha256()

    def write(self, line_type: str, /, **fields: Any) -> None:
        self.report.lines += 1
        line = seal({"n": self.report.lines, "type": line_type, **fields})
        self.digest.update(line)
        self.report.bytes += len(line)
        self.out.write(line)


def export_sessions(store: Store, out: str | os.PathLike[str] | IO[bytes],
                    session_ids: Iterable[str] | None = None, *, blobs: str = "inline",
                    compress: bool | None = None) -> ExportReport:
    """Write sessions of ``store`` (all of them, and every workspace, when
    ``session_ids`` is None) as an export file, JSON lines (docs/FORMAT.md, section 22),
    to ``out``: a path, or a binary file object.

    ``compress`` (default: a path ending in ``.zst``) compresses the lines with
    zstandard as they are written. ``blobs="beside"`` writes each attachment as a file
    ``OUT.blobs/HEX`` next to a path ``out`` instead of inline in base64. A path is
    written under a temp name and renamed when whole: a failed export leaves no file.
    Raises SessionNotFound for a session that is not there, CorruptionError for one
    whose files are damaged (``fsstore verify`` says more). Returns an
    :class:`ExportReport`. :func:`fsstore.import_sessions` reads the file back.
    """
    started = time.monotonic()
    if blobs not in BLOB_MODES:
        raise InvalidSetting(f"blobs must be one of {BLOB_MODES}, not {blobs!r}")
    whole_store = session_ids is None
    ids = store.session_ids() if session_ids is None else list(dict.fromkeys(session_ids))
    readers = [store.read_session(session_id) for session_id in ids]  # SessionNotFound first
    path = None if not isinstance(out, (str, os.PathLike)) else os.fspath(out)
    if blobs == "beside" and path is None:
        raise InvalidSetting("blobs='beside' needs a file to write beside: give a path, "
                             "not a file object (or stdout)")
    if path is not None and (os.path.isdir(path) or not os.path.isdir(
            os.path.dirname(os.path.abspath(path)))):
        # Refused before anything is written (the temp file, the blobs beside it).
        raise InvalidSetting(f"cannot write the export to {path}: it is a folder, or the "
                             "folder it would be in does not exist")
    if compress is None:
        compress = path is not None and path.endswith(_ZSTD_SUFFIXES)
    report = ExportReport(path)
    blob_dir = None if blobs == "inline" or path is None else path + BLOBS_SUFFIX
    with _output(out, path, compress) as sink:
        lines = _Lines(sink, report)
        lines.write("header", format=FORMAT_NAME, version=FORMAT_VERSION,
                    fsstore=_version(), created=time.time(), blobs=blobs,
                    whole_store=whole_store)
        for reader in readers:
            _export_session(store, reader, lines, report, blob_dir)
        workspaces = store.list_workspaces()
        exported = set(ids)
        for workspace in workspaces:
            members = {m.session_id: m.role for m in workspace.members
                       if m.session_id in exported}
            if not members and not whole_store:
                continue
            report.workspaces += 1
            lines.write("workspace", id=workspace.id, name=workspace.name,
                        description=workspace.description, metadata=to_json(workspace.metadata),
                        members=members)
        lines.write("trailer", lines=report.lines + 1, sessions=report.sessions,
                    events=report.events, sha256=lines.digest.hexdigest())
    report.seconds = time.monotonic() - started
    return report


def _version() -> str:
    from . import __version__

    return __version__


@contextlib.contextmanager
def _output(out: str | os.PathLike[str] | IO[bytes], path: str | None,
            compress: bool) -> Iterator[IO[bytes]]:
    """Where the lines go: a temp file renamed to ``path`` once whole, or ``out``;
    through a streaming zstd compressor when asked."""
    if path is None:
        sink: Any = out
        temp = None
    else:
        temp = os.path.join(os.path.dirname(os.path.abspath(path)),
                            layout.TEMP_PREFIX + os.path.basename(path) + "-"
                            + secrets.token_hex(4))
        sink = open(temp, "xb")  # noqa: SIM115 (closed below)
    try:
        if compress:
            import zstandard

            writer = zstandard.ZstdCompressor(level=3).stream_writer(sink, closefd=False)
            with writer:
                yield writer
        else:
            yield sink
        if temp is not None:
            sink.flush()
            os.fsync(sink.fileno())
            sink.close()
            os.replace(temp, path)  # type: ignore[arg-type]
        else:
            sink.flush()
    except BaseException:
        if temp is not None:
            sink.close()
            with contextlib.suppress(OSError):
                os.unlink(temp)
        raise


def _export_session(store: Store, reader: SessionReader, lines: _Lines,
                    report: ExportReport, blob_dir: str | None) -> None:
    from .session_reader import ExportView

    tail = reader.log_tail
    head, log_start = tail.head, tail.log_start
    counts = {"frames": 0, "events": 0, "checkpoints": 0, "blobs": 0, "documents": 0}
    view = ExportView(reader)
    lines.write("session", id=reader.id, manifest=to_json(view.manifest()),
                log_start=log_start, head=head, workspaces=store.session_workspaces(reader.id))
    log = view.log()
    base = log.history_base()
    if base is not None:
        lines.write("base", first=log_start, last=base.seq, ts=base.record.ts,
                    turn=base.record.turn, kind=base.record.kind,
                    image=to_json(base.image_body()))
    expect = log_start if base is None else base.seq + 1
    if head >= expect:
        for frame in log.frames_from(LogPosition(log_start, SEGMENT_HEADER_SIZE),
                                     next_seq=log_start):
            if frame.first_seq > head:
                break
            if frame.entries is None:  # the base frame, written above
                continue
            if frame.first_seq != expect:
                raise CorruptionError(f"record has seq {frame.first_seq}, expected {expect}",
                                      path=log.segment_path(frame.segment),
                                      offset=frame.offset)
            lines.write("frame", seq=frame.first_seq, ts=frame.ts, turn=frame.turn,
                        records=[[kind, to_json(data)] for kind, data in frame.entries])
            expect += frame.event_count
            counts["frames"] += 1
            counts["events"] += frame.event_count
    if expect != head + 1:
        raise CorruptionError(f"the log ends at seq {expect - 1}, its tail says {head}: run "
                              "fsstore verify", path=log.path)
    image = view.image(head)
    lines.write("state", seq=head, image=to_json(image.body()))
    for info in reader.checkpoints():
        if info.seq > head:
            continue  # made after the head this export read
        file = view.checkpoint_file(info.id)
        position = file.header.position
        lines.write("checkpoint", id=info.id, label=info.label, kind=info.kind,
                    created=info.created, seq=info.seq, log_start=file.header.log_start,
                    position=[position.segment, position.offset, position.frame_crc],
                    state=to_json(file.body))
        counts["checkpoints"] += 1
    for hex_digest, _path, compressed in reader.blobs.digests():
        from .blobs import BlobRef

        data = reader.blobs.get(BlobRef("sha256:" + hex_digest, -1))
        fields: dict[str, Any] = {"digest": "sha256:" + hex_digest, "size": len(data),
                                  "compressed": compressed}
        if blob_dir is None:
            import base64

            fields["data"] = base64.b64encode(data).decode("ascii")
        else:
            _write_beside(blob_dir, hex_digest, data)
            fields["file"] = os.path.basename(blob_dir) + "/" + hex_digest
        lines.write("blob", **fields)
        counts["blobs"] += 1
    for collection in reader.collections():
        counts["documents"] += _export_collection(reader, collection.name, lines)
    lines.write("end", session=reader.id, **counts)
    report.sessions += 1
    report.session_ids.append(reader.id)
    for key in ("frames", "events", "checkpoints", "blobs", "documents"):
        setattr(report, key, getattr(report, key) + counts[key])


def _write_beside(blob_dir: str, hex_digest: str, data: bytes) -> None:
    os.makedirs(blob_dir, exist_ok=True)
    target = os.path.join(blob_dir, hex_digest)
    # Always written anew, never kept because a file of that name and size is there:
    # a stale or edited file would make the export one no import takes.
    temp = os.path.join(blob_dir, layout.TEMP_PREFIX + hex_digest)
    with open(temp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, target)


def _export_collection(reader: SessionReader, name: str, lines: _Lines) -> int:
    import base64

    import numpy as np

    from .vectors.reader import live_documents

    collection = reader.collection(name)
    try:
        dtype = np.dtype(collection.dtype).newbyteorder("<")
        lines.write("collection", name=name, dim=collection.dim, dtype=collection.dtype,
                    metric=collection.metric.value)
        count = 0
        for doc in live_documents(collection):
            vector = np.asarray(doc.embedding).astype(dtype, copy=False)
            lines.write("document", collection=name, id=doc.id,
                        embedding=base64.b64encode(vector.tobytes()).decode("ascii"),
                        content=doc.content, metadata=to_json(doc.metadata),
                        seq=doc.seq, turn=doc.turn)
            count += 1
        return count
    finally:
        collection.close()
