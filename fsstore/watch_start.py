"""How a store watcher (``Store.watch``, docs/FORMAT.md section 18) learns every
session's head and log start when it starts, without opening each session as a reader.

A reader's ``log_tail`` costs about half a millisecond a session: it reads and checks
``session.json``, opens the session's folders, and reads the newest segment's header
and last frame through its checks. :func:`quick_log_end` reads only ``log/tail.hint``,
the segment it names (the header and the last frame, one open) and looks up one name,
and answers only when what it read cannot differ from what ``log_tail`` would say now:

- the hint names a plain segment whose header names it, and no segment is named after
  the seq after its last frame (so it is the newest: FORMAT.md section 3, ``tail.hint``
  is only a hint, and a wrong one is caught exactly as ``LogReader.locate_tail`` catches
  it);
- the segment's data ends in a whole, checksum-valid frame exactly at its synced mark
  (FORMAT.md 3.1). A reader's tail stops before a last frame only when that frame lies
  wholly past the mark (a torn tail, or one torn inside its chain value, 3.4), so at the
  mark the reader's head is this frame's last seq, or the reader raises (damage).

Anything else (no hint, a stale one, a tail past or short of its mark, as a store
written with ``durability="none"`` leaves it, a compacted segment, any error) answers
None, and the watcher reads that session as a reader does. So a session the quick read
answers for starts with the (head, log start) its reader would give, and every later
change is compared against that. What the quick read does not check is damage that a
reader refuses outright (an unreadable ``session.json``, a segment of another session,
a broken chain, a symlinked folder): such a session counts as there from the start
(never announced as created), and, as any known session that cannot be read, is not
announced while it cannot be read.
"""

from __future__ import annotations

import os

from . import layout
from .errors import FsStoreError
from .fsio import FileIO
from .log_format import _U32, MAX_SEGMENT_FILE, TRAILER_SIZE, _parse_frame
from .segment_file import file_data_end
from .segment_header import SEGMENT_HEADER_SIZE, decode_segment_header
from .tail_hint import read_tail_hint

#: What is read of a segment's end: a small session's last frame, usually all of it.
_TAIL_READ = 4096


def quick_log_end(io: FileIO, session_path: str) -> tuple[int, int] | None:
    """(head, log start) of the session at ``session_path`` read from its newest
    segment's header and last frame alone, or None when that read cannot vouch for
    them (see the module's docstring): the caller then reads the session's tail."""
    try:
        return _log_end(io, session_path)
    except (OSError, ValueError, FsStoreError):
        return None  # gone, changing or damaged: the reader's read tells which


def _log_end(io: FileIO, session_path: str) -> tuple[int, int] | None:
    if not io.exists(layout.session_manifest_path(session_path)):
        return None  # not (or no longer) a session: the reader says SessionNotFound
    log = layout.log_dir(session_path)
    hint = read_tail_hint(io, log)
    if hint is None or hint.segment is None:
        return None
    first = hint.segment
    path = os.path.join(log, layout.segment_name(first))
    fd = io.open(path, os.O_RDONLY)
    try:
        header = decode_segment_header(io.pread(fd, SEGMENT_HEADER_SIZE, 0), path)
        size = io.size(fd)
        if (header.compacted or header.first_seq != first or size > MAX_SEGMENT_FILE
                or header.synced_end <= SEGMENT_HEADER_SIZE or header.synced_end > size):
            return None
        # The mark is where the data ends (what follows it is preallocated zeros), else a
        # frame being written, or torn, lies past it.
        end = header.synced_end
        if end % 8 or file_data_end(io, fd) != end:
            return None
        start = max(SEGMENT_HEADER_SIZE, end - _TAIL_READ)
        buf = io.pread(fd, end - start, start)
        if len(buf) != end - start:
            return None
        (frame_size,) = _U32.unpack_from(buf, len(buf) - TRAILER_SIZE)
        at = end - frame_size
        if at < SEGMENT_HEADER_SIZE or at % 8:
            return None
        if at < start:  # a frame larger than what was read
            buf, start = io.pread(fd, frame_size, at), at
            if len(buf) != frame_size:
                return None
        frame = _parse_frame(buf, memoryview(buf), at - start, len(buf))
    finally:
        io.close(fd)
    if frame is None or frame.first_seq < first:
        return None
    next_seq = frame.first_seq + frame.event_count
    if io.exists(os.path.join(log, layout.segment_name(next_seq))):
        return None  # the hint is stale: a newer segment follows this one
    return next_seq - 1, header.log_start
