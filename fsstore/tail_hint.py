"""``log/tail.hint``: the name of a log's newest segment, and which folder wrote it.

The first line names the newest segment, so that opening a log need not list ``log/``
(only a hint: ``LogReader.locate_tail`` checks it). The second line, ``folder INODE``,
is the inode number of the ``log/`` folder the hint was written in. A copy of the folder
(``cp -r``, ``rsync``, ``tar``, a git checkout, a backup) is a new folder with another
inode, and that is how a reader tells a copy from the folder its writer wrote: a copy
tool that sized a segment before it read the segment's header can hold a synced mark
newer than the frames it copied (docs/FORMAT.md, section 3.1), and only in the
original does such a mark mean that synced records were lost.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from . import layout
from .errors import FsStoreError
from .fsio import FileIO
from .segment_header import SEGMENT_HEADER_SIZE, decode_segment_header

#: A hint is two short lines; anything longer is not one.
_MAX_HINT = 128
_FOLDER = "folder "


@dataclass(frozen=True)
class TailHint:
    segment: int | None  # the first seq of the segment it names; None: names none
    folder_inode: int | None  # the inode of the log folder it was written in; None: unsaid


def write_tail_hint(io: FileIO, log_path: str, first_seq: int) -> None:
    """Name the newest segment ``first_seq`` in ``tail.hint``, with the inode of
    ``log_path``, replacing the hint atomically (a crash leaves the old hint or the new
    one, both whole)."""
    text = f"{layout.segment_name(first_seq)}\n{_FOLDER}{io.path_inode(log_path)}\n"
    io.atomic_write(layout.tail_hint_path(log_path), text.encode())


def read_tail_hint(io: FileIO, log_path: str) -> TailHint | None:
    """The hint of the log at ``log_path``; None when there is none (missing, unreadable).
    A hint of a version before the folder line has ``folder_inode`` None."""
    try:
        raw = io.read_file(layout.tail_hint_path(log_path), _MAX_HINT)
    except (OSError, ValueError):
        return None
    lines = raw.decode("ascii", "replace").split("\n")
    segment = layout.parse_segment_name(lines[0].strip())
    folder_inode = None
    if len(lines) > 1 and lines[1].startswith(_FOLDER) and lines[1][len(_FOLDER):].isdigit():
        folder_inode = int(lines[1][len(_FOLDER):])
    return TailHint(segment, folder_inode)


def in_original_folder(io: FileIO, log_path: str, hint: TailHint | None = None) -> bool:
    """Whether the log at ``log_path`` is in the folder its writer wrote: its hint names
    that folder's inode, or is a hint from before the folder line (which claims what
    every earlier reader assumed). A missing hint, or one naming another folder, marks a
    copy: copies leave the hint behind (git and backups do) or carry the original's."""
    hint = read_tail_hint(io, log_path) if hint is None else hint
    if hint is None:
        return False
    if hint.folder_inode is None:
        return hint.segment is not None
    try:
        return hint.folder_inode == io.path_inode(log_path)
    except OSError:
        return False


def mark_binds(io: FileIO, log_path: str, segment_path: str) -> bool:
    """Whether a synced mark past the end of the segment at ``segment_path``, read
    before this call, binds: the log at ``log_path`` is in its writer's folder, and the
    segment's header read again now still has a mark past the end of its file.

    The second read is for a copy a writer takes meanwhile. It fixes the copy's mark
    before its hint names the folder (``LogWriter._take_folder``), so a reader can read
    the copy's header (the original's mark) and then a hint naming the folder: a header
    read after that hint has the fixed mark, within the file. In the writer's folder a
    mark never runs ahead of the file it is in, so there both reads agree."""
    if not in_original_folder(io, log_path):
        return False
    try:
        fd = io.open(segment_path, os.O_RDONLY)
        try:
            raw = io.pread(fd, SEGMENT_HEADER_SIZE, 0)
            size = io.size(fd)  # after the header: a mark read first claims no more
        finally:
            io.close(fd)
        return decode_segment_header(raw, segment_path).synced_end > size
    except (OSError, FsStoreError):
        return True  # gone or unreadable now: hold it to the mark as it was read
