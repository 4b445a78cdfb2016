"""``verify``: the read-only check of a session or a store, composed of each artifact's
own check (docs/FORMAT.md, section 7.4).

A check reads what every read would read, the way that read would read it, and turns
each failure into a :class:`Finding`: the log's framing and every event decoded; the
state, the work queue and the turn inputs folded from the whole log and compared with
every snapshot and checkpoint that claims to hold the same fold; every blob reference
of the log and of the checkpoints resolved; every blob hashed as a stream; every
vector collection opened; the lease read. It never writes and never raises: a typed
error is a problem of the file it names, and any other exception (a bug in fsstore) is
reported as one too, so that one damaged file never hides the rest. The one exception
raised is ImportError for a module fsstore needs that is not installed (numpy and
zstandard are imported where they are first used): that is no damage of any file.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from . import chain_bindings, layout, vectors
from . import lease as lease_module
from .blobs import BLOB_KEY, BlobRef
from .errors import CorruptionError, Finding, FsStoreError, InvalidBlobRef
from .log import LogReader, LogTail
from .message_index import MessageIndex, check_index
from .state import FOLDED_KINDS, RECORD_MARKER, StateImage, start_image
from .turns import LOST_RECORD
from .workspaces import Workspaces

if TYPE_CHECKING:
    from .session_reader import SessionReader
    from .snapshot import CheckpointDir, SnapshotDir
    from .store import Store

_encoder = msgspec.msgpack.Encoder()


class Report:
    """Findings gathered step by step; :meth:`step` turns whatever a step raises into a
    finding of the path it was reading, so the check goes on with the next step."""

    def __init__(self) -> None:
        self.findings: list[Finding] = []

    def add(self, level: str, path: str, offset: int | None, message: str) -> None:
        self.findings.append(Finding(level, path, offset, message))

    def problems(self) -> set[tuple[str, int | None]]:
        return {(f.path, f.offset) for f in self.findings if f.level == "problem"}

    @contextlib.contextmanager
    def step(self, path: str, what: str, *, known: set[tuple[str, int | None]] | None = None
             ) -> Iterator[None]:
        """Run a step; an error becomes a problem of ``path`` (or of the file the error
        names), unless ``known`` already holds a problem at that place (the same damage
        seen again by a later step)."""
        try:
            yield
        except Exception as exc:  # verify never raises: every failure is a finding
            if _missing_module(exc):
                raise
            finding = finding_of(exc, path, what)
            if known is None or (finding.path, finding.offset) not in known:
                self.findings.append(finding)


def _missing_module(exc: BaseException) -> bool:
    """Whether ``exc`` says a module fsstore imports where it first uses it (numpy,
    zstandard, ...) is not installed: raised as it is, never a finding, since the files
    are not at fault (MissingExtra, fsstore's own error, stays a finding)."""
    return isinstance(exc, ImportError) and not isinstance(exc, FsStoreError)


def finding_of(exc: BaseException, path: str, what: str) -> Finding:
    """The problem an exception raised while ``what`` (reading ``path``) stands for. The
    message never repeats the path the finding already names."""
    if isinstance(exc, CorruptionError):
        return Finding("problem", exc.path, exc.offset, exc.reason)
    if isinstance(exc, FsStoreError):
        return Finding("problem", path, getattr(exc, "offset", None),
                       strip_path(str(exc), path))
    if isinstance(exc, OSError):
        where = exc.filename if isinstance(exc.filename, str) else path
        return Finding("problem", where, None,
                       f"{what}: {exc.strerror or type(exc).__name__}")
    if isinstance(exc, RecursionError):
        return Finding("problem", path, None, f"{what}: nested too deeply to read")
    if isinstance(exc, MemoryError):
        return Finding("problem", path, None, f"{what}: needs more memory than there is")
    # Not an error fsstore raises on purpose: a bug to fix where it was raised. It is
    # still only a finding, so one bad file never stops the check of the others.
    return Finding("problem", path, None, f"{what} failed with {type(exc).__name__}: "
                   f"{strip_path(str(exc), path)} (an fsstore bug: please report it)")


def strip_path(message: str, path: str) -> str:
    """``message`` without a leading ``path:`` or ``path at byte N:``."""
    if message.startswith(path):
        rest = message[len(path):]
        if rest.startswith(": "):
            return rest[2:]
        if rest.startswith(" at byte "):
            head, sep, tail = rest.partition(": ")
            if sep and head[len(" at byte "):].isdigit():
                return tail
    return message


# --- a session -------------------------------------------------------------------------


class _Base(NamedTuple):
    """A snapshot or checkpoint that claims to hold the fold of the log up to ``seq``."""

    seq: int
    path: str
    image: StateImage


class SessionParts(NamedTuple):
    """The parts of a session a check reads below its public reads, as the
    ``SessionReader`` it checks holds them (``SessionReader.verify`` builds this)."""

    manifest: Mapping[str, Any]  # session.json, as the reader read it
    log: LogReader
    snapshots: SnapshotDir
    checkpoints: CheckpointDir
    commit_ids: int  # the snapshot policy's window of remembered commit ids
    messages: MessageIndex


def check_session(reader: SessionReader, parts: SessionParts) -> list[Finding]:
    """Everything wrong with one session, read as every read would read it: through
    ``reader``'s public reads, and ``parts``, the reader's own files."""
    with _quiet():
        return _check_session(reader, parts)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Reads log what they skip (a damaged snapshot); verify reports it as a finding, so
    its own reads do not log it again. Only this thread's records are dropped."""
    thread = threading.get_ident()

    def other_threads(record: logging.LogRecord) -> bool:
        return record.thread != thread

    logger = logging.getLogger("fsstore")
    logger.addFilter(other_threads)
    try:
        yield
    finally:
        logger.removeFilter(other_threads)


def _check_session(reader: SessionReader, parts: SessionParts) -> list[Finding]:
    report = Report()
    manifest_path = layout.session_manifest_path(reader.path)
    with report.step(manifest_path, "reading the session manifest"):
        named = parts.manifest.get("id")
        if named is not None and named != reader.id:
            report.add("problem", manifest_path, None, f"the manifest is session {named!r}'s, "
                       f"in the folder of session {reader.id!r} (copied over it?); reads "
                       "would show the other session's title, tags and metadata")
    log = parts.log
    with report.step(log.path, "checking the log"):
        report.findings.extend(log.check())
    # After the log's check: the manifest's check reads the log's tail, whose damage the
    # log's check has reported already (reported once, not again as the manifest's step).
    with report.step(manifest_path, "checking the manifest against the chain",
                     known=report.problems()):
        report.findings.extend(chain_bindings.manifest_findings(log, parts.manifest,
                                                                manifest_path))
    with report.step(manifest_path, "reading the session info", known=report.problems()):
        reader.info()  # title, tags, metadata, parent and the log's tail
    refs: dict[str, tuple[BlobRef, str, str]] = {}
    with report.step(log.path, "reading the events", known=report.problems()):
        _read_events(log, refs, report)
    try:
        tail: LogTail | None = log.tail()
    except Exception as exc:  # the log's own check reported it
        if _missing_module(exc):
            raise
        tail = None
    if tail is not None:
        with report.step(parts.messages.path, "checking the message index",
                         known=report.problems()):
            report.findings.extend(check_index(parts.messages, tail.head, tail.log_start))
    bases = _check_snapshots(parts, report, tail)
    bases += _check_checkpoints(parts, report, refs, tail)
    with report.step(log.path, "folding the state", known=report.problems()):
        _check_fold(parts, bases, report)
    with report.step(log.path, "loading the state", known=report.problems()):
        reader.state()
        reader.queue.items()
        reader.inputs.items()
    blobs_path = layout.blobs_dir(reader.path)
    with report.step(blobs_path, "resolving blob references"):
        _check_refs(reader, refs, report)
    with report.step(blobs_path, "checking the blobs"):
        report.findings.extend(reader.blobs.check(verify=True))
    _check_collections(reader, report)
    _check_lease(reader, report)
    _check_leftovers(reader, parts, report)
    return report.findings


def _read_events(log: LogReader, refs: dict[str, tuple[BlobRef, str, str]],
                 report: Report) -> None:
    """Decode every event as ``events()`` does, and gather its blob references."""
    for scan in log.scans(0, math.inf):
        for event in scan:
            _gather_refs(event.data, f"the event at seq {event.seq}", scan.path, refs,
                         report)


def _gather_refs(value: Any, where: str, path: str,
                 refs: dict[str, tuple[BlobRef, str, str]], report: Report) -> None:
    """Every map holding the key ``fsstore.blob``, at any depth (as gc finds them): a
    well-formed one is a reference to resolve, the first per digest and size kept."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if BLOB_KEY in item:
                try:
                    ref = BlobRef.parse(item)
                except InvalidBlobRef as exc:
                    report.add("note", path, None, f"{where} holds a map with the key "
                               f"{BLOB_KEY!r} that is not a blob reference ({exc}); reads of "
                               "it as one fail, gc ignores it")
                else:
                    refs.setdefault(f"{ref.digest}/{ref.size}", (ref, where, path))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _check_refs(reader: SessionReader, refs: dict[str, tuple[BlobRef, str, str]],
                report: Report) -> None:
    """Each referenced blob must be there, with the size its reference gives."""
    for ref, where, path in refs.values():
        with report.step(path, f"resolving {ref.digest}"):
            if not reader.blobs.exists(ref):
                folder = os.path.join(layout.blobs_dir(reader.path), "sha256", ref.hex[:2])
                report.add("problem", path, None, f"{where} refers to blob {ref.digest}, "
                           f"which the session does not hold (no {ref.hex} or "
                           f"{ref.hex}.zst in {folder}); reads of it raise BlobNotFound")
                continue
            stat = reader.blobs.stat(ref)
            if ref.size >= 0 and stat.ref.size != ref.size:
                report.add("problem", stat.path, None, f"blob holds {stat.ref.size} bytes; "
                           f"{where} in {path} refers to it with size {ref.size}, so reads "
                           "of it raise")


def _check_snapshots(parts: SessionParts, report: Report, tail: LogTail | None
                     ) -> list[_Base]:
    """Each snapshot decoded as a state load decodes it; those a load would use are
    returned, to be compared with the fold of the log."""
    bases: list[_Base] = []
    snapshots = parts.snapshots
    seqs: list[int] = []
    with report.step(snapshots.path, "listing the snapshots"):
        seqs = snapshots.seqs()
    for seq in seqs:
        path = snapshots.file_path(seq)
        with report.step(path, "reading the snapshot"):
            try:
                file = snapshots.read(path)
            except FileNotFoundError:
                continue  # pruned meanwhile
            try:
                image = StateImage.from_file(file, parts.commit_ids, path)
            except FsStoreError as exc:
                report.findings.append(finding_of(exc, path, "reading the snapshot"))
                continue
            header = file.header
            if header.seq != seq:
                report.add("problem", path, 0, f"the file is named after seq {seq} but holds "
                           f"the state at seq {header.seq}; state loads would return the "
                           "wrong state")
            elif tail is not None and header.log_start != tail.log_start:
                report.add("note", path, None, "snapshot of the log before a clear; skipped, "
                           "and pruned by the next snapshot")
            elif tail is not None and header.seq > tail.head:
                report.add("note", path, None, f"snapshot covers seq {header.seq}, past the "
                           f"end of the log ({tail.head}): a crash took back records that "
                           "were not yet synced; state loads do not use it")
            elif tail is not None and not parts.log.position_holds(header.position,
                                                                   header.seq):
                report.add("note", path, None, "snapshot of records a crash took back "
                           "(others were written since); state loads skip it, and the next "
                           "snapshot prunes it")
            elif tail is not None and (problem := chain_bindings.link_problem(
                    parts.log, header.position, header.seq, file.meta)) is not None:
                report.add("problem", path, None, f"snapshot not trusted: {problem}")
            elif tail is not None:
                bases.append(_Base(header.seq, path, image))
    return bases


def _check_checkpoints(parts: SessionParts, report: Report,
                       refs: dict[str, tuple[BlobRef, str, str]], tail: LogTail | None
                       ) -> list[_Base]:
    """Each checkpoint read as ``checkpoints()`` and ``load_checkpoint`` read it; its
    blob references gathered; those of the current log returned for the comparison."""
    bases: list[_Base] = []
    checkpoints = parts.checkpoints
    ids: list[str] = []
    with report.step(checkpoints.path, "listing the checkpoints"):
        ids = checkpoints.ids()
    for checkpoint_id in ids:
        path = checkpoints.file_path(checkpoint_id)
        with report.step(path, "reading the checkpoint"):
            try:
                checkpoints.info(checkpoint_id)  # its meta matches its name
                file = checkpoints.read(path)
            except FileNotFoundError:
                continue  # deleted meanwhile
            image = StateImage.from_file(file, parts.commit_ids, path)
            _gather_refs(file.body, f"checkpoint {checkpoint_id!r}", path, refs, report)
            header = file.header
            chain_bindings.check_checkpoint_link(parts.log, header, file.meta, path)
            if (tail is not None and header.log_start == tail.log_start
                    and header.seq <= tail.head
                    and parts.log.position_holds(header.position, header.seq)):
                bases.append(_Base(header.seq, path, image))
    return bases


def _check_fold(parts: SessionParts, bases: list[_Base], report: Report) -> None:
    """Fold every state, queue and input record of the log from its start, as a read with
    no snapshot would, and compare the fold with each snapshot and checkpoint at its seq:
    one that differs would make reads return other data than the log holds."""
    log = parts.log
    _, log_start, end = log.locate_tail()
    head = end.next_seq - 1
    image = start_image(log, log_start, parts.commit_ids)
    lost = False  # a repair replaced lost records before this point (FORMAT 7.6)
    for base in sorted(bases, key=lambda b: b.seq):
        if base.seq < image.seq:
            continue
        lost = _fold(log, image, base.seq) or lost
        for what, folded, stored in (
                ("state", image.state, base.image.state),
                ("work queue", image.work.body(), base.image.work.body()),
                ("turn inputs", image.inputs.body(), base.image.inputs.body())):
            if _same(folded, stored):
                continue
            if lost:
                report.add("note", base.path, None, f"its {what} differs from the fold of "
                           f"the log up to seq {base.seq}, which lost records before it (a "
                           "repair): it holds what they did; the log does not")
            else:
                report.add("problem", base.path, None, f"its {what} differs from the fold "
                           f"of the log up to seq {base.seq}: reads that start from it would "
                           "return other data than the log holds")
    _fold(log, image, head)


def _fold(log: LogReader, image: StateImage, target: int) -> bool:
    """Fold the log into ``image`` up to ``target``; whether it met a lost record."""
    if image.seq >= target:
        return False
    reached, lost = image.seq, False
    for scan in log.scans(image.seq, target, RECORD_MARKER):
        for event in scan:
            if event.kind in FOLDED_KINDS:
                image.apply(event, scan.path)
            elif event.kind == LOST_RECORD:
                lost = True
        reached = scan.expect_seq - 1
    if reached < target:
        raise CorruptionError(f"the log ends at seq {reached}, before seq {target} that its "
                              "tail or a snapshot names: a segment is missing", path=log.path)
    image.seq = target
    return lost


def _same(a: Any, b: Any) -> bool:
    if a == b:
        return True
    try:  # NaN is not equal to itself, but is the same stored value
        return bool(_encoder.encode(a) == _encoder.encode(b))
    except (TypeError, ValueError, OverflowError):
        return False


def _check_collections(reader: SessionReader, report: Report) -> None:
    """Each vector collection's files by its own check, then opened as a read opens it."""
    folder = layout.vectors_dir(reader.path)
    names: list[str] = []
    with report.step(folder, "listing the vector collections"):
        names = vectors.collection_names(reader.io, reader.path)
        for name in vectors.scratch_names(reader.io, reader.path):
            report.add("note", os.path.join(folder, name), None, "left by an interrupted "
                       "create or drop of a collection; the next create or drop removes it")
    for name in names:
        path = os.path.join(folder, name)
        with report.step(path, "checking the collection"):
            report.findings.extend(vectors.check_collection(
                reader.io, path, vectors.chain_of(reader, name)))
        with report.step(path, "opening the collection", known=report.problems()):
            collection = reader.collection(name)
            try:
                collection.info()
            finally:
                close = getattr(collection, "close", None)
                if close is not None:
                    close()


def _check_lease(reader: SessionReader, report: Report) -> None:
    path = layout.lease_path(reader.path)
    with report.step(path, "reading the lease"):
        parent = reader.parent
        report.findings.extend(lease_module.check(reader.io, reader.path,
                                                  parent.seq if parent is not None else 0))


def _check_leftovers(reader: SessionReader, parts: SessionParts, report: Report) -> None:
    for folder in (parts.snapshots.path, parts.checkpoints.path):
        with report.step(folder, "listing the folder"):
            if reader.io.exists(folder):
                for name in sorted(reader.io.listdir(folder)):
                    if name.startswith(layout.TEMP_PREFIX):
                        report.add("note", os.path.join(folder, name), None,
                                   "temp file of an interrupted write")


# --- a store ---------------------------------------------------------------------------


def check_store(store: Store, session_ids: Iterable[str] | None = None,
                on_session: Callable[[str], object] | None = None) -> list[Finding]:
    """Everything wrong with the store's sessions (all, or those given), one session
    after the other: a session that cannot be opened is a problem, and the check goes on
    with the next. ``on_session`` is called with each session id once it is checked."""
    report = Report()
    sessions = layout.sessions_dir(store.path)
    not_folders: set[str] = set()
    whole_store = session_ids is None  # workspaces are checked with the whole store only
    if session_ids is None:
        with report.step(sessions, "listing the sessions"):
            if not store.io.exists(sessions):
                return [Finding("problem", sessions, None, "the sessions folder is missing")]
            for name in sorted(store.io.listdir(sessions)):
                path = os.path.join(sessions, name)
                if layout.is_scratch(name):
                    what = ("an interrupted delete" if name.startswith(layout.TRASH_PREFIX)
                            else "an interrupted create")
                    report.add("note", path, None, f"left by {what}; safe to remove")
                elif os.path.islink(path):
                    not_folders.add(name)
                    report.add("problem", path, None,
                               "a symlink: fsstore never follows one inside a store, so no "
                               "read opens it; put the session folder itself here")
                elif _is_session_id(name) and not os.path.isdir(path):
                    # Sync tools leave files here (desktop.ini, Thumbs.db): worth a note,
                    # not a problem, as FORMAT section 1 says such names are no session.
                    report.add("note", path, None, "not a folder, so not a session: ignored "
                               "(a session folder replaced by a file would look the same)")
                elif (_is_session_id(name)
                      and not store.io.exists(layout.session_manifest_path(path))):
                    # Sessions appear by the rename of a whole folder: one under a session
                    # id without its manifest lost it afterwards, and no read lists it.
                    report.add("problem", layout.session_manifest_path(path), None,
                               "missing: the folder is a session's, but without its manifest "
                               "no read lists or opens it; restore session.json from a backup")
            session_ids = [s for s in store.session_ids() if s not in not_folders]
    for session_id in session_ids or ():
        path = os.path.join(sessions, str(session_id))
        with report.step(layout.session_manifest_path(path), "opening the session"):
            try:
                reader = store.read_session(session_id)
            except KeyError:  # SessionNotFound
                report.add("problem", path, None, "no such session")
                continue
            report.findings.extend(reader.verify())
        if on_session is not None:
            on_session(str(session_id))
    if whole_store:
        from .lineage import graph_findings  # it imports session_reader, which imports this

        with report.step(sessions, "reading the session graph"):
            report.findings.extend(graph_findings(
                store.io, store.path, session_ids or (),
                lambda parent: store.read_session(parent).head))
        _check_workspaces(store, report)
    return report.findings


def _check_workspaces(store: Store, report: Report) -> None:
    """Each workspace file read as every read reads it (damage is a problem); a member
    whose session does not exist is a note: reads leave it out, and
    ``remove_from_workspace`` removes it (docs/FORMAT.md, section 19)."""
    folder = layout.workspaces_dir(store.path)
    workspaces = Workspaces(store.io, store.path, store.has_session, store.session_ids)
    with report.step(folder, "listing the workspaces"):
        if not store.io.check_folder(folder):
            return  # no workspace was ever made
        names = sorted(store.io.listdir(folder))
        ids = set(layout.workspace_ids(names))
        for name in names:
            path = os.path.join(folder, name)
            if layout.is_scratch(name):
                report.add("note", path, None, "left by an interrupted workspace write; "
                           "safe to remove")
            elif name == layout.WORKSPACE_LOCK:
                continue
            elif name[: -len(layout.WORKSPACE_SUFFIX)] not in ids:
                report.add("note", path, None, "not a workspace file name: ignored")
            else:
                workspace_id = name[: -len(layout.WORKSPACE_SUFFIX)]
                with report.step(path, "reading the workspace"):
                    _path, missing = workspaces.dangling(workspace_id)
                    for session_id in missing:
                        report.add("note", path, None,
                                   f"member {session_id!r} names no session (deleted?): "
                                   "workspace reads leave it out; remove it with `fsstore "
                                   f"workspace remove {workspace_id} {session_id}`")


def _is_session_id(name: str) -> bool:
    try:
        layout.check_session_id(name)
    except ValueError:
        return False
    return True
