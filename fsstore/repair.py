"""Repair of a damaged session, first half: the plan, and the copy of every damaged file
aside before anything is changed (docs/FORMAT.md, section 7.6).

A repair is explicit, never automatic. :func:`plan_repair` salvages the session
(``salvage.py``), copies each file the report names as damaged into
``SESSION/.repair-YYYYmmddTHHMMSSZ/`` under the same relative path, with a
``repair.json`` holding the report, and returns a :class:`RepairPlan`: which seqs are
saved and which are lost. It changes no file of the session: the copies appear all at
once (built under a ``.tmp-`` name, fsynced, renamed in), so a crash leaves either no
copy or a whole one, and the session as it was.

The second half, the rewrite of the log, consumes :meth:`RepairPlan.records`: the saved
events in seq order with a :class:`Gap` for each lost range, which it writes into the
compacted segment kind (whose gap records keep seqs gapless, so that a lost seq is never
reused). It takes the writer lock, and first checks that each damaged file still has the
size and hash the plan copied (else it plans again).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from . import layout
from .errors import FsStoreError
from .fsio import FileIO
from .log_format import Event
from .salvage import LostRange, SalvageReport, SeqRange, salvage_session

if TYPE_CHECKING:
    from .store import Store

_CHUNK = 1 << 20
REPAIR_FORMAT = "fsstore.repair"
REPAIR_VERSION = 1


class Gap(NamedTuple):
    """Seqs ``first`` to ``last`` (both included) that a repair found lost: the rewrite
    writes a gap record for them, so they are never reused."""

    first: int
    last: int


@dataclass(frozen=True)
class CopiedFile:
    """A damaged file of the session and its copy aside, with the copy's size and
    SHA-256 (the rewrite checks the file still matches before it replaces it)."""

    source: str
    copy: str
    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "copy": self.copy, "size": self.size,
                "sha256": self.sha256}


@dataclass
class RepairPlan:
    """What a repair of ``session`` will keep and lose, and where its damaged files were
    copied (``aside``; None when nothing was damaged, and nothing was copied)."""

    session: str
    path: str
    report: SalvageReport
    aside: str | None = None
    copied: list[CopiedFile] = field(default_factory=list)
    #: Damaged files that could not be copied (not a regular file, unreadable), and why.
    not_copied: list[tuple[str, str]] = field(default_factory=list)

    @property
    def saved(self) -> list[SeqRange]:
        return self.report.saved

    @property
    def lost(self) -> list[LostRange]:
        return self.report.lost

    @property
    def needed(self) -> bool:
        """False when the session has nothing to repair (notes aside)."""
        return not self.report.clean

    def records(self) -> Iterator[Event | Gap]:
        """What the rewrite writes, in seq order from the log start to the head: each
        saved event, and a :class:`Gap` for each lost range. Records lost at the end of
        the log in unknown number (``report.open_end``) give no gap: the rewrite decides
        how many seqs to leave unused there."""
        gaps = [Gap(r.first, r.last) for r in self.report.lost if r.last is not None]
        index = 0
        for event in self.report.events():
            while index < len(gaps) and gaps[index].first < event.seq:
                yield gaps[index]
                index += 1
            yield event
        yield from gaps[index:]

    def to_dict(self) -> dict[str, Any]:
        return {"session": self.session, "path": self.path, "aside": self.aside,
                "copied": [c.to_dict() for c in self.copied],
                "not_copied": [{"path": p, "reason": r} for p, r in self.not_copied],
                "report": self.report.to_dict()}


def plan_repair(store: Store, session_id: str, *, now: float | None = None,
                on_segment: Callable[[int], object] | None = None,
                vouch: Callable[[SalvageReport], None] | None = None) -> RepairPlan:
    """Salvage session ``session_id`` and copy every damaged file it names aside, into
    ``SESSION/.repair-YYYYmmddTHHMMSSZ/`` (``now``, default the current time, names it);
    return the plan. Changes no file of the session and takes no lock: a writer may go
    on meanwhile, and the rewrite checks the copies still match. Raises SessionNotFound
    when there is no such session folder. ``on_segment`` is called with each segment's
    name once salvage has read it. ``vouch`` adjusts the report to what a chained
    session's chain vouches for (``repair_chain.vouch``) before anything is copied."""
    path = layout.session_dir(store.path, session_id)
    report = salvage_session(store.io, path, session_id, on_segment=on_segment,
                             chain_key=store.chain_key)
    if vouch is not None:
        vouch(report)
    plan = RepairPlan(session_id, path, report)
    if report.clean:
        return plan
    plan.aside, plan.copied, plan.not_copied = copy_aside(
        store.io, path, report.damaged_files(), time.time() if now is None else now, plan)
    return plan


def copy_aside(io: FileIO, session_path: str, sources: list[str], when: float,
               plan: RepairPlan) -> tuple[str, list[CopiedFile], list[tuple[str, str]]]:
    """Copy each of ``sources`` (files of the session folder) to the same relative path
    in a new ``.repair-`` folder of the session, with ``repair.json`` (the plan), and
    return that folder, the copies, and what could not be copied. All or nothing: built
    under a temp name, each file and folder fsynced, then renamed in."""
    attempt = 1
    while io.exists(os.path.join(session_path, layout.repair_dir_name(when, attempt))):
        attempt += 1
    name = layout.repair_dir_name(when, attempt)
    final = os.path.join(session_path, name)
    temp = os.path.join(session_path, layout.temp_name(name))
    io.mkdir(temp)
    copied: list[CopiedFile] = []
    skipped: list[tuple[str, str]] = []
    try:
        folders = [temp]
        for source in sources:
            relative = os.path.relpath(source, session_path)
            if relative.startswith(os.pardir):
                skipped.append((source, "not a file of the session folder"))
                continue
            target = os.path.join(temp, relative)
            for folder in _parents(temp, relative):
                if not io.exists(folder):
                    io.mkdir(folder)
                    folders.append(folder)
            try:
                size, digest = _copy_file(io, source, target)
            except (FsStoreError, OSError) as exc:
                skipped.append((source, str(exc)))  # a folder, a symlink, a read error
                if io.exists(target):
                    io.unlink(target)
                continue
            copied.append(CopiedFile(source, os.path.join(final, relative), size, digest))
        record = {"format": REPAIR_FORMAT, "version": REPAIR_VERSION,
                  "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when)),
                  **plan.to_dict(), "aside": final,
                  # relative to the session folder, so that a copy of it stays whole
                  "copied": [{"path": os.path.relpath(c.source, session_path),
                              "size": c.size, "sha256": c.sha256} for c in copied],
                  "not_copied": [{"path": p, "reason": r} for p, r in skipped]}
        io.write_new(os.path.join(temp, layout.REPAIR_RECORD),
                     json.dumps(record, indent=2, ensure_ascii=False,
                                default=str).encode("utf-8"))
        for folder in reversed(folders):  # the deepest first: each name made durable
            io.fsync_dir(folder)
        io.rename(temp, final)
        io.fsync_dir(session_path)
    except BaseException:
        try:
            io.rmtree(temp)
        except OSError:
            pass  # a `.tmp-` leftover: vacuum removes it
        raise
    return final, copied, skipped


def _parents(root: str, relative: str) -> list[str]:
    """The folders between ``root`` and the file ``relative`` to it, outermost first."""
    parts = relative.split(os.sep)[:-1]
    return [os.path.join(root, *parts[:n]) for n in range(1, len(parts) + 1)]


def _copy_file(io: FileIO, source: str, target: str) -> tuple[int, str]:
    """Copy ``source`` to the new file ``target``, fsynced; its size and SHA-256. Reads
    in chunks: a segment may be large."""
    digest = hashlib.sha256()
    fd = io.open(source, os.O_RDONLY)
    try:
        out = io.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            offset = 0
            while True:
                chunk = io.pread(fd, _CHUNK, offset)
                if not chunk:
                    break
                digest.update(chunk)
                io.pwrite(out, chunk, offset)
                offset += len(chunk)
            io.fsync(out)
        finally:
            io.close(out)
    finally:
        io.close(fd)
    return offset, digest.hexdigest()
