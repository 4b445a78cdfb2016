"""The store catalog's snapshot file, ``catalog`` in the store's root (docs/FORMAT.md,
section 24): every session's catalog entry, laid out so that a page of a listing reads
a few columns and decodes only the entries of the rows it returns.

Rows are in id order. Beside the entries (each its own msgpack value with its CRC,
decoded only when a row is shown or a filter needs what only the entry holds) the file
keeps columns: the ids as one blob with end offsets, the created and updated times as
float64 arrays, the rows in created and in updated order (ascending; a descending
listing reads them backwards), the casefolded titles as one blob, and for each tag the
rows that hold it. A first page of a store of 100,000 sessions then reads one order
column and a hundred entries, not 100,000 entries decoded and sorted.

Each section has its CRC-32C in the table at the head of the file, checked the first
time the section is read (the entries one by one): a section is read with ``pread``
only when a listing needs it, so damage to one not read cannot give a wrong answer,
and damage to one read raises :class:`SnapshotDamaged`, upon which the catalog is
rebuilt. The file is never changed in place (temp file and rename), so a descriptor
opened on it reads one consistent version however many listers write a new one.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import crc32c
import msgspec

from .errors import CorruptionError, FsStoreError
from .fsio import FileIO

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

# numpy is imported where a column is made or read: the commands that list no page
# (`fsstore ls`, `cat`) start without it (README, Development).

MAGIC = b"FSCATLG\n"
#: Bumped whenever the layout or an entry's fields change: another version is rebuilt.
VERSION = 3
_HEADER = struct.Struct("<8sIIQ")  # magic, version, CRC-32C of the table, its length
_MAX_TABLE = 1 << 20
_ALIGN = 8
_CRC = struct.Struct("<I")
#: Entries decoded one ``pread`` each before the rest of the section is read at once.
_FEW = 64

#: Each section: its name and how its bytes are read (a numpy dtype, or raw bytes).
SECTIONS: tuple[tuple[str, str | None], ...] = (
    ("id_ends", "<u8"), ("ids", None), ("created", "<f8"), ("updated", "<f8"),
    ("by_created", "<u4"), ("by_updated", "<u4"), ("title_ends", "<u8"), ("titles", None),
    ("tag_names", None), ("tag_ends", "<u8"), ("tag_rows", "<u4"), ("entry_ends", "<u8"),
    ("entries", None), ("edge_ends", "<u8"), ("edge_parents", None), ("edge_rows", "<u4"),
)
#: The parent an edge is filed under for a damaged session, whose entry may not hold
#: its edges (no session id is empty): the session graph reads its manifest instead.
UNKNOWN_PARENT = ""
_DTYPES = dict(SECTIONS)
#: Sections with one value per row.
_PER_ROW = ("id_ends", "created", "updated", "by_created", "by_updated", "title_ends",
            "entry_ends")


class SnapshotDamaged(CorruptionError):
    """The catalog snapshot does not read back whole. Never reaches a caller of a
    listing: the catalog is rebuilt from the session folders instead."""


class Entry(msgspec.Struct, array_like=True):
    """One session as the catalog keeps it: ``SessionInfo``'s fields, its metadata as
    raw msgpack (decoded only when a filter or a row needs it), and its stamps."""

    id: str
    created: float
    updated: float
    event_count: int
    head: int
    history_start: int
    title: str | None
    tags: list[str]
    metadata: msgspec.Raw
    parent: tuple[str, int, str | None] | None
    spawned_by: tuple[str, int, int | None] | None
    damaged: str | None
    #: manifest (mtime_ns, size, inode), log folder (mtime_ns), newest segment name and
    #: its (mtime_ns, size); empty: unsettled or damaged, read again whenever shown.
    stamp: tuple[Any, ...]


class Row(NamedTuple):
    """What the snapshot keeps of one session: its columns' values and its entry,
    encoded (copied as they are when a snapshot is written from another)."""

    id: str
    created: float
    updated: float
    title: bytes  # casefolded, UTF-8
    tags: list[str]
    entry: bytes  # CRC-32C (u32, little-endian) then the entry's msgpack
    parents: list[str]  # of its fork and spawn edges; UNKNOWN_PARENT when damaged


class _Section(msgspec.Struct, array_like=True):
    name: str
    offset: int
    length: int
    crc: int


class _Table(msgspec.Struct, array_like=True):
    count: int
    sessions_stamp: tuple[int, int, int] | None  # None: list sessions/ at the next read
    journal: tuple[int, int]  # (inode, offset) of catalog.log this snapshot covers
    sections: list[_Section]


_ENTRY_ENCODER = msgspec.msgpack.Encoder()
_ENTRY_DECODER = msgspec.msgpack.Decoder(Entry)
_TABLE_DECODER = msgspec.msgpack.Decoder(_Table)
_NAMES_DECODER = msgspec.msgpack.Decoder(list[str])


def parents_of(entry: Entry) -> list[str]:
    """The parents the graph files ``entry`` under (its fork's, its spawner's)."""
    if entry.damaged is not None:
        return [UNKNOWN_PARENT]
    found = [edge[0] for edge in (entry.parent, entry.spawned_by) if edge is not None]
    return list(dict.fromkeys(found))


def row_of(entry: Entry) -> Row:
    try:
        body = _ENTRY_ENCODER.encode(entry)
    except UnicodeEncodeError:
        # A hand-edited manifest may hold a lone surrogate (JSON escapes one; UTF-8, and
        # so msgpack, cannot): kept with it escaped and no stamps, so that a listing that
        # shows the session reads its manifest again (as it does a damaged one's).
        entry = msgspec.structs.replace(
            entry, title=None if entry.title is None else _escaped(entry.title),
            tags=[_escaped(tag) for tag in entry.tags],
            damaged=None if entry.damaged is None else _escaped(entry.damaged), stamp=())
        body = _ENTRY_ENCODER.encode(entry)
    return Row(entry.id, entry.created, entry.updated,
               (entry.title or "").casefold().encode(), list(entry.tags),
               _CRC.pack(crc32c.crc32c(body)) + body, parents_of(entry))


def _escaped(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _ends(parts: list[bytes]) -> npt.NDArray[np.uint64]:
    import numpy as np
    return np.cumsum(np.fromiter(map(len, parts), dtype=np.uint64, count=len(parts)),
                     dtype=np.uint64)


def encode(rows: Iterable[Row], sessions_stamp: tuple[int, int, int] | None,
           journal: tuple[int, int]) -> bytes:
    """The snapshot file's bytes for ``rows`` (in any order; one per id)."""
    import numpy as np
    ordered = sorted(rows, key=lambda row: row.id)
    count = len(ordered)
    ids = [row.id.encode() for row in ordered]
    created = np.fromiter((row.created for row in ordered), dtype="<f8", count=count)
    updated = np.fromiter((row.updated for row in ordered), dtype="<f8", count=count)
    tagged: dict[str, list[int]] = {}
    for number, row in enumerate(ordered):
        for tag in dict.fromkeys(row.tags):
            tagged.setdefault(tag, []).append(number)
    names = sorted(tagged)
    titles = [row.title for row in ordered]
    entries = [row.entry for row in ordered]
    # The graph's children index: (parent, row) pairs sorted, a parent's rows together.
    edges = sorted((parent.encode(), number) for number, row in enumerate(ordered)
                   for parent in row.parents)
    edge_parents = [parent for parent, _ in edges]
    # Rows are in id order, so a stable sort by time breaks ties by id.
    values: dict[str, bytes] = {
        "id_ends": _ends(ids).tobytes(), "ids": b"".join(ids),
        "created": created.tobytes(), "updated": updated.tobytes(),
        "by_created": np.argsort(created, kind="stable").astype("<u4").tobytes(),
        "by_updated": np.argsort(updated, kind="stable").astype("<u4").tobytes(),
        "title_ends": _ends(titles).tobytes(), "titles": b"".join(titles),
        "tag_names": msgspec.msgpack.encode(names),
        "tag_ends": np.cumsum([len(tagged[name]) for name in names],
                              dtype=np.uint64).astype("<u8").tobytes(),
        "tag_rows": np.array([row for name in names for row in tagged[name]],
                             dtype="<u4").tobytes(),
        "entry_ends": _ends(entries).tobytes(), "entries": b"".join(entries),
        "edge_ends": _ends(edge_parents).tobytes(), "edge_parents": b"".join(edge_parents),
        "edge_rows": np.array([number for _, number in edges], dtype="<u4").tobytes(),
    }
    # The table's size depends on the offsets it holds: lay out from a bound of it.
    table_room = 256 + 48 * len(SECTIONS)
    offset = _HEADER.size + table_room
    sections = []
    for name, _ in SECTIONS:
        offset += -offset % _ALIGN
        data = values[name]
        crc = 0 if name == "entries" else crc32c.crc32c(data)  # entries: each its own
        sections.append(_Section(name, offset, len(data), crc))
        offset += len(data)
    table = msgspec.msgpack.encode(_Table(count, sessions_stamp, journal, sections))
    assert len(table) <= table_room, len(table)
    out = bytearray(offset)
    out[:_HEADER.size] = _HEADER.pack(MAGIC, VERSION, crc32c.crc32c(table), len(table))
    out[_HEADER.size:_HEADER.size + len(table)] = table
    for section in sections:
        out[section.offset:section.offset + section.length] = values[section.name]
    return bytes(out)


class Snapshot:
    """A snapshot file opened for reading: its table checked, its sections read and
    checked when first asked for. :meth:`close` it (or use ``with``)."""

    def __init__(self, table: _Table, size: int, read: Callable[[int, int], bytes],
                 path: str, close: Callable[[], None] | None = None) -> None:
        import numpy as np
        self.count = table.count
        self.sessions_stamp = table.sessions_stamp
        self.journal = table.journal
        self.path = path
        self._read = read
        self._close = close
        self._sections: dict[str, _Section] = {}
        self._cache: dict[str, Any] = {}
        self._entries_read = 0
        for section in table.sections:
            self._sections[section.name] = section
        for name, dtype in SECTIONS:
            found = self._sections.get(name)
            if found is None or found.offset < 0 or found.length < 0 or \
                    found.offset + found.length > size:
                raise SnapshotDamaged(f"section {name} is missing or past the end",
                                      path=path)
            if name in _PER_ROW and found.length != self.count * np.dtype(dtype).itemsize:
                raise SnapshotDamaged(f"section {name} does not hold {self.count} rows",
                                      path=path)

    @classmethod
    def parse(cls, data: bytes, path: str) -> Snapshot | None:
        """A snapshot of the file's bytes held in memory; None when it is of another
        magic or version, or its table does not check."""
        table = _table(data[:_HEADER.size], lambda length: data[_HEADER.size:
                                                                _HEADER.size + length])
        if table is None:
            return None
        view = memoryview(data)
        return cls(table, len(data), lambda offset, length: bytes(
            view[offset:offset + length]), path)

    @classmethod
    def open(cls, io: FileIO, path: str) -> Snapshot | None:
        """The snapshot file at ``path`` opened for reading; None when it is missing,
        of another magic or version, or its table does not check."""
        try:
            fd = io.open(path, os.O_RDONLY)
        except (OSError, FsStoreError):
            return None
        try:
            size = io.size(fd)
            table = _table(io.pread(fd, _HEADER.size, 0),
                           lambda length: io.pread(fd, length, _HEADER.size))
            if table is not None:
                return cls(table, size, lambda offset, length: io.pread(fd, length, offset),
                           path, lambda: io.close(fd))
        except (OSError, FsStoreError):
            pass  # unreadable: rebuilt, as a damaged one
        io.close(fd)
        return None

    def close(self) -> None:
        if self._close is not None:
            self._close()
            self._close = None

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sections(self) -> dict[str, tuple[int, int]]:
        """Each section's offset in the file and length, by name."""
        return {name: (section.offset, section.length)
                for name, section in self._sections.items()}

    def _bytes(self, name: str) -> bytes:
        section = self._sections[name]
        data = self._read(section.offset, section.length)
        if len(data) != section.length or (
                name != "entries" and crc32c.crc32c(data) != section.crc):
            raise SnapshotDamaged(f"section {name} does not match its CRC-32C",
                                  path=self.path)
        return data

    def column(self, name: str) -> Any:
        """A section, checked: a read-only numpy array, or bytes for the blobs."""
        import numpy as np
        found = self._cache.get(name)
        if found is None:
            data = self._bytes(name)
            dtype = _DTYPES[name]
            if dtype is None:
                self._cache[name] = data
                return data
            found = np.frombuffer(data, dtype=dtype)
            if name.endswith("_ends"):
                blob = {"id_ends": "ids", "title_ends": "titles", "entry_ends": "entries",
                        "tag_ends": "tag_rows", "edge_ends": "edge_parents"}[name]
                total = self._sections[blob].length // (4 if blob == "tag_rows" else 1)
                if len(found) and (int(found[-1]) != total
                                   or bool(np.any(found[1:] < found[:-1]))):
                    raise SnapshotDamaged(f"section {name} does not fit {blob}",
                                          path=self.path)
            elif name == "edge_rows" and len(found) != len(self.column("edge_ends")):
                raise SnapshotDamaged("sections edge_rows and edge_ends differ in length",
                                      path=self.path)
            if (name.startswith("by_") or name.endswith("_rows")) and len(found) and \
                    int(found.max()) >= self.count:
                raise SnapshotDamaged(f"section {name} names rows past the last",
                                      path=self.path)
            self._cache[name] = found
        return found

    def _span(self, name: str, row: int) -> tuple[int, int]:
        ends = self.column(name)
        return (int(ends[row - 1]) if row else 0), int(ends[row])

    def id(self, row: int) -> str:
        start, end = self._span("id_ends", row)
        raw: bytes = self.column("ids")[start:end]
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise SnapshotDamaged(f"row {row}'s id is not UTF-8", path=self.path) from None

    def ids(self) -> list[str]:
        """Every row's id, in row (id) order."""
        blob: bytes = self.column("ids")
        ends = self.column("id_ends").tolist()
        starts = [0, *ends][:len(ends)]
        try:
            return [blob[start:end].decode() for start, end in zip(starts, ends, strict=True)]
        except UnicodeDecodeError:
            raise SnapshotDamaged("an id is not UTF-8", path=self.path) from None

    def find(self, session_id: str) -> int | None:
        """The row of ``session_id`` (rows are in id order: a binary search)."""
        low, high = 0, self.count
        while low < high:
            middle = (low + high) // 2
            if self.id(middle) < session_id:
                low = middle + 1
            else:
                high = middle
        return low if low < self.count and self.id(low) == session_id else None

    def title(self, row: int) -> bytes:
        start, end = self._span("title_ends", row)
        found: bytes = self.column("titles")[start:end]
        return found

    def tag_rows(self, tag: str) -> Any:
        """The rows holding ``tag``, ascending (an empty array for a tag none holds)."""
        import numpy as np
        names = self._cache.get("tag_names_list")
        if names is None:
            try:
                names = _NAMES_DECODER.decode(self._bytes("tag_names"))
            except (msgspec.DecodeError, ValueError):
                raise SnapshotDamaged("section tag_names does not decode",
                                      path=self.path) from None
            if len(names) != len(self.column("tag_ends")):
                raise SnapshotDamaged("sections tag_names and tag_ends differ in length",
                                      path=self.path)
            names = self._cache["tag_names_list"] = {name: n for n, name in enumerate(names)}
        number = names.get(tag)
        if number is None:
            return np.zeros(0, dtype="<u4")
        start, end = self._span("tag_ends", number)
        return self.column("tag_rows")[start:end]

    def child_rows(self, parent: str) -> list[int]:
        """The rows of the sessions whose fork or spawn edge names ``parent`` (with
        UNKNOWN_PARENT: the damaged sessions'), ascending: a binary search in the
        ``edge_parents`` column, which is in parent order."""
        ends = self.column("edge_ends")
        blob: bytes = self.column("edge_parents")
        wanted = parent.encode()

        def at(number: int) -> bytes:
            return blob[int(ends[number - 1]) if number else 0:int(ends[number])]

        low, high = 0, len(ends)
        while low < high:
            middle = (low + high) // 2
            if at(middle) < wanted:
                low = middle + 1
            else:
                high = middle
        rows = self.column("edge_rows")
        found = []
        while low < len(ends) and at(low) == wanted:
            found.append(int(rows[low]))
            low += 1
        return found

    def raw_entry(self, row: int) -> bytes:
        """Row ``row``'s entry as stored (CRC then msgpack), its CRC checked."""
        start, end = self._span("entry_ends", row)
        blob = self._cache.get("entries")
        if blob is not None:
            data: bytes = blob[start:end]
        elif self._entries_read < _FEW:
            self._entries_read += 1
            section = self._sections["entries"]
            data = self._read(section.offset + start, end - start)
        else:
            data = self.column("entries")[start:end]
        if len(data) < _CRC.size or _CRC.unpack_from(data)[0] != crc32c.crc32c(
                memoryview(data)[_CRC.size:]):
            raise SnapshotDamaged(f"row {row}'s entry does not match its CRC-32C",
                                  path=self.path)
        return data

    def entry(self, row: int) -> Entry:
        try:
            return _ENTRY_DECODER.decode(memoryview(self.raw_entry(row))[_CRC.size:])
        except (msgspec.DecodeError, ValueError):
            raise SnapshotDamaged(f"row {row}'s entry does not decode",
                                  path=self.path) from None

    def rows(self, skip: Iterable[int] = ()) -> Iterator[Row]:
        """Every row but those in ``skip``, as stored: what a new snapshot copies of
        this one without decoding an entry."""
        skipped = set(skip)
        ids = self.ids()
        tags: list[list[str]] = [[] for _ in range(self.count)]
        names = self.column("tag_names")
        for name in _NAMES_DECODER.decode(names):
            for row in self.tag_rows(name).tolist():
                tags[row].append(name)
        parents: list[list[str]] = [[] for _ in range(self.count)]
        ends = self.column("edge_ends").tolist()
        blob: bytes = self.column("edge_parents")
        for start, end, row in zip([0, *ends], ends, self.column("edge_rows").tolist(),
                                   strict=False):
            parents[row].append(blob[start:end].decode())
        created = self.column("created").tolist()
        updated = self.column("updated").tolist()
        self.column("entries")
        for row in range(self.count):
            if row not in skipped:
                yield Row(ids[row], created[row], updated[row], self.title(row), tags[row],
                          self.raw_entry(row), parents[row])


def _table(header: bytes, read: Callable[[int], bytes]) -> _Table | None:
    if len(header) < _HEADER.size:
        return None
    magic, version, crc, length = _HEADER.unpack_from(header)
    if magic != MAGIC or version != VERSION or length > _MAX_TABLE:
        return None
    raw = read(length)
    if len(raw) != length or crc32c.crc32c(raw) != crc:
        return None
    try:
        return _TABLE_DECODER.decode(raw)
    except (msgspec.DecodeError, ValueError):
        return None
