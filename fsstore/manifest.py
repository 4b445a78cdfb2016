"""The JSON manifests of a store and of a session: small, git-diffable, atomically written.

Both carry ``"format"`` (what kind of file this is) and ``"version"`` (``"MAJOR.MINOR"``).
A reader accepts any minor version of a major it knows and keeps unknown keys as they
are; it refuses a newer major without reading further.

Every manifest is decoded in two steps: :func:`read` parses the JSON (refusing a file
over 1 MiB or nested deeper than :data:`MAX_DEPTH`) into a dict that keeps unknown
keys; :func:`decode_as` then checks the known fields against a typed schema (a msgspec
Struct, e.g. :class:`SessionManifest`) and names the field that is wrong. Writers run
:func:`check_json` on what they are given and :func:`encode` checks the result against
the same limits, so nothing a reader would refuse is ever written.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Annotated, Any, TypeVar

import msgspec

from . import identity, layout
from .chain import KEYED, UNKEYED
from .errors import CorruptionError, FormatVersionError, InvalidMetadata, InvalidSessionId
from .fsio import FileIO

FORMAT_MAJOR = 1
FORMAT_MINOR = 7
VERSION = f"{FORMAT_MAJOR}.{FORMAT_MINOR}"
#: A chained session's ``session.json`` (FORMAT.md 3.4) is of this major version, so that
#: a reader that knows no chain refuses the session rather than take its chained records
#: for damage (and a writer that knows none, cut them off as a torn tail).
CHAINED_SESSION_MAJOR = 2
CHAINED_SESSION_VERSION = f"{CHAINED_SESSION_MAJOR}.0"

STORE_FORMAT = "fsstore-store"
SESSION_FORMAT = "fsstore-session"

MAX_MANIFEST_BYTES = 1 << 20
#: The deepest nesting of arrays and objects in a manifest; the document itself is 1.
MAX_DEPTH = 64
#: Ints a manifest may hold: those msgpack can also hold (metadata goes to the log too).
MIN_INT, MAX_INT = -(2**63), 2**64 - 1

_T = TypeVar("_T")


# --- the typed schemas ----------------------------------------------------------------------


class ChainRecord(msgspec.Struct, frozen=True):
    """The ``chain`` of a chained session's manifest (FORMAT.md 3.4): its MAC (``alg``,
    ``"sha256"`` or ``"hmac-sha256"``), the ``key_id`` of its key when keyed, and its
    fork junctions (``forks``: ``[seq, uid]`` pairs, the fork of ``uid`` starting its
    own records at ``seq + 1``). ``fsstore.json`` holds one too, without forks: the
    chain new sessions get."""

    alg: str
    key_id: str | None = None
    forks: list[tuple[Annotated[int, msgspec.Meta(ge=0)], str]] = msgspec.field(
        default_factory=list)
    #: ``[NEW, OLD]`` hex pairs: the chain value NEW, which a rewrite (a vacuum, a
    #: repair) gave a frame, stands where OLD was recorded (FORMAT.md 3.4, "Bridges")
    bridges: list[tuple[str, str]] = msgspec.field(default_factory=list)


class StoreManifest(msgspec.Struct, frozen=True):
    """``fsstore.json``: only what this version reads; other keys are kept on disk."""

    format: str
    version: Any
    #: the chain new sessions get (FORMAT.md 3.4); None: none
    chain: ChainRecord | None = None


class ParentRecord(msgspec.Struct, frozen=True):
    """The ``parent`` of a forked session's manifest."""

    id: str
    seq: Annotated[int, msgspec.Meta(ge=0)]
    checkpoint: str | None = None
    forked: str | None = None


class SpawnRecord(msgspec.Struct, frozen=True):
    """The ``spawned_by`` of a spawned session's manifest (format 1.4): the session
    whose turn started it, the parent's seq it hangs from (and that record's turn), and
    the parent's uid, which tells the parent from a later session under the same id."""

    id: str
    seq: Annotated[int, msgspec.Meta(ge=0)]
    turn: Annotated[int, msgspec.Meta(ge=0)] | None = None
    uid: str | None = None
    spawned: str | None = None


class SessionManifest(msgspec.Struct, frozen=True):
    """``session.json``: the fields this version reads, typed. Unknown fields are
    ignored here and kept in the file (a reader accepts any minor version)."""

    format: str
    version: Any
    id: str | None = None
    created: str | None = None
    updated: str | None = None
    title: str | None = None
    tags: list[str] | None = None
    metadata: dict[str, Any] | None = None
    metadata_seq: Annotated[int, msgspec.Meta(ge=0)] | None = None
    parent: ParentRecord | None = None
    spawned_by: SpawnRecord | None = None
    #: the retention policy ``fsstore vacuum`` applies (``RetentionPolicy.to_manifest``)
    retention: dict[str, Any] | None = None
    #: the session's hash chain (FORMAT.md 3.4); None: it has none
    chain: ChainRecord | None = None


# --- reading --------------------------------------------------------------------------------


def depth_of(value: object) -> int:
    """The deepest nesting of lists and dicts in ``value`` (0 for a scalar), found
    without recursion, so it is safe on hostile input."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, (list, tuple)):
            level += 1
            deepest = max(deepest, level)
            stack.extend((child, level) for child in item)
    return deepest


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A key given twice would leave the first value silently unread (and a rewrite
    # would drop it for good): damage, reported.
    data = dict(pairs)
    if len(data) != len(pairs):
        keys = [key for key, _ in pairs]
        twice = next(key for index, key in enumerate(keys) if key in keys[:index])
        raise ValueError(f"key {twice!r} appears twice in one object")
    return data


def loads(raw: bytes, path: str) -> Any:
    """Parse manifest JSON, refusing nesting deeper than MAX_DEPTH and keys given twice
    in one object (CorruptionError). NaN and Infinity are read: writers before 1.1 could
    leave them (section 2)."""
    try:
        data = json.loads(raw, object_pairs_hook=_unique_keys)
    except RecursionError:
        # json's scanner gives up cleanly at the interpreter's recursion limit.
        data = None
        depth = -1
    except ValueError as exc:  # not UTF-8, not JSON, an int of over 4,300 digits
        raise CorruptionError(
            f"not valid JSON ({exc}); restore this manifest from a backup", path=path
        ) from None
    else:
        # Nothing nests deeper than it has opening brackets (counted at C speed), so the
        # walk runs only for a manifest with more of them than the limit.
        brackets = raw.count(b"[") + raw.count(b"{")
        depth = depth_of(data) if brackets > MAX_DEPTH else brackets
    if depth < 0 or depth > MAX_DEPTH:
        raise CorruptionError(
            f"JSON nested more than the {MAX_DEPTH} levels a manifest may be; restore this "
            "manifest from a backup", path=path)
    return data


def read(io: FileIO, path: str, expected_format: str) -> dict[str, Any]:
    """Read and check a manifest; return all of it (unknown keys included).

    Raises FileNotFoundError if it is missing, CorruptionError if it is not a manifest of
    ``expected_format``, FormatVersionError if a newer major version wrote it.
    """
    try:
        raw = io.read_file(path, MAX_MANIFEST_BYTES)
    except ValueError as exc:
        raise CorruptionError(str(exc), path=path) from None
    data = loads(raw, path)
    if not isinstance(data, dict) or data.get("format") != expected_format:
        raise CorruptionError(
            f"not an {expected_format} manifest (no \"format\": \"{expected_format}\")",
            path=path,
        )
    if expected_format == SESSION_FORMAT:  # a chained one is of the next major
        check_version(data.get("version"), path, major_read=CHAINED_SESSION_MAJOR,
                      current=CHAINED_SESSION_VERSION)
    else:
        check_version(data.get("version"), path)
    return data


def decode_as(data: Mapping[str, Any], schema: type[_T], path: str) -> _T:
    """Check a manifest read by :func:`read` against a typed ``schema``; raise
    CorruptionError naming the file and the field that does not fit."""
    try:
        return msgspec.convert(data, schema)
    except msgspec.ValidationError as exc:
        raise CorruptionError(
            f"a field has the wrong type or value ({_field_message(exc)}); fix it by hand "
            "or restore this manifest from a backup", path=path) from None


def _field_message(exc: msgspec.ValidationError) -> str:
    # msgspec says "Expected `str`, got `int` - at `$.tags[0]`": name the field first.
    text = str(exc)
    message, _, where = text.rpartition(" - at ")
    if not message:
        message, where = text, "$"
    where = where.strip("`").removeprefix("$").removeprefix(".")
    missing = re.match(r"Object missing required field `(.*)`\Z", message)
    if missing:
        where, message = f"{where}.{missing.group(1)}".lstrip("."), "missing"
    return f"field {where or '(the whole file)'}: {message}"


def read_store(io: FileIO, path: str) -> StoreManifest:
    """``fsstore.json``, read and decoded (see :func:`read`)."""
    return decode_as(read(io, path, STORE_FORMAT), StoreManifest, path)


def decode_session(data: Mapping[str, Any], path: str) -> SessionManifest:
    """``session.json`` as read by :func:`read`, checked field by field: CorruptionError
    names the field that is wrong (a hand edit such as ``"tags": 5``)."""
    decoded = decode_as(data, SessionManifest, path)
    for name in ("created", "updated"):
        iso_to_epoch(getattr(decoded, name), path, name)
    for name, record in (("parent", decoded.parent), ("spawned_by", decoded.spawned_by)):
        if record is None:
            continue
        try:
            layout.check_session_id(record.id)
        except InvalidSessionId:
            raise CorruptionError(
                f"field {name}.id: {record.id!r} is not a session id; fix it by hand "
                "or restore this manifest from a backup", path=path) from None
    if decoded.chain is not None:
        check_chain(decoded.chain, path, "chain")
    if decoded.spawned_by is not None and decoded.spawned_by.uid is not None:
        try:
            identity.parse(decoded.spawned_by.uid, path)
        except CorruptionError:
            raise CorruptionError(
                f"field spawned_by.uid: {decoded.spawned_by.uid[:40]!r} is not 16 lowercase "
                "hex digits; fix it by hand or restore this manifest from a backup",
                path=path) from None
    return decoded


def session_version(data: Mapping[str, Any]) -> str:
    """The version a session manifest holding ``data`` is written as: a chained one's
    is :data:`CHAINED_SESSION_VERSION`."""
    return CHAINED_SESSION_VERSION if data.get("chain") is not None else VERSION


def check_chain(record: ChainRecord, path: str, name: str) -> None:
    """CorruptionError naming the field of a ``chain`` record that is not one."""
    problem = None
    if record.alg not in (UNKEYED, KEYED):
        problem = f"{name}.alg: {record.alg[:40]!r} is no chain algorithm this fsstore knows"
    elif (record.alg == KEYED) != (record.key_id is not None):
        problem = f"{name}.key_id: a keyed chain has a key id, and only a keyed one"
    elif record.key_id is not None and not _is_hex(record.key_id, 16):
        problem = f"{name}.key_id: {record.key_id[:40]!r} is not 16 lowercase hex digits"
    for seq, uid in record.forks:
        if problem is None and not _is_hex(uid, 16):
            problem = f"{name}.forks: uid {uid[:40]!r} (at seq {seq}) is not 16 hex digits"
    for new, old in record.bridges:
        if problem is None and not (_is_hex(new, 64) and _is_hex(old, 64)):
            problem = f"{name}.bridges: [{new[:70]!r}, {old[:70]!r}] is no pair of chain values"
    if problem is not None:
        raise CorruptionError(f"field {problem}; restore this manifest from a backup",
                              path=path)


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and text.strip("0123456789abcdef") == ""


def iso_to_epoch(value: str | None, path: str, name: str) -> float:
    """Seconds since the epoch of an ISO 8601 time from a manifest (0.0 when absent);
    CorruptionError naming the field when it is not one."""
    if value is None:
        return 0.0
    try:
        return datetime.fromisoformat(value).timestamp()
    except (ValueError, OverflowError, OSError):
        raise CorruptionError(f"field {name}: {value[:40]!r} is not an ISO 8601 time; fix it "
                              "by hand or restore this manifest from a backup",
                              path=path) from None


def check_version(version: object, path: str, *, major_read: int = FORMAT_MAJOR,
                  current: str = VERSION, what: str = "format") -> None:
    """Accept ``MAJOR.MINOR`` with a major this code reads (``major_read``: the store's
    format by default, or another file's, named by ``what``); refuse a newer one."""
    try:
        major_text, minor_text = str(version).split(".")
        major, _minor = int(major_text), int(minor_text)
    except ValueError:
        raise CorruptionError(f"unreadable format version {version!r}", path=path) from None
    if major > major_read:
        raise FormatVersionError(
            f"{path}: written by {what} version {version}, newer than the {current} this "
            "fsstore reads; upgrade fsstore to open it (nothing was changed)"
        )
    if major < 1:
        raise CorruptionError(f"unknown format version {version!r}", path=path)


# --- writing --------------------------------------------------------------------------------


def check_json(value: object, name: str, depth: int = MAX_DEPTH - 1) -> None:
    """Raise InvalidMetadata unless ``value`` is what a manifest stores and gives back
    equal: None, bools, ints in msgpack's range, finite floats, strs (valid Unicode),
    lists and tuples (read back as lists), dicts with str keys; nested at most ``depth``
    levels. ``name`` says what the value is in the message."""
    stack: list[tuple[object, int, str]] = [(value, 1, name)]
    while stack:
        item, level, where = stack.pop()
        if item is None or isinstance(item, bool):
            continue
        if isinstance(item, str):
            _check_text(item, where)
        elif isinstance(item, int):
            if not MIN_INT <= item <= MAX_INT:
                raise InvalidMetadata(f"{where}: int {item} is outside {MIN_INT}..{MAX_INT}")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidMetadata(f"{where}: {item} is not a finite number (JSON has none)")
        elif isinstance(item, (dict, list, tuple)):
            if level > depth:
                raise InvalidMetadata(f"{name} is nested more than {depth} levels deep")
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str):
                        raise InvalidMetadata(
                            f"{where}: key {key!r} is a {type(key).__name__}; JSON keys are strs")
                    _check_text(key, where)
                    stack.append((child, level + 1, f"{where}[{key!r}]"))
            else:
                stack.extend((child, level + 1, f"{where}[{i}]")
                             for i, child in enumerate(item))
        else:
            raise InvalidMetadata(
                f"{where}: a {type(item).__name__} cannot be stored in a JSON manifest")


def check_metadata(title: object, tags: object, metadata: object
                   ) -> tuple[str | None, list[str], dict[str, Any]]:
    """A session's title, tags and metadata as a manifest stores them; InvalidMetadata
    for anything a reader would refuse or give back different (the manifest's size is
    checked by :func:`encode`)."""
    if title is not None:
        if not isinstance(title, str):
            raise InvalidMetadata(f"session title must be a str, not {type(title).__name__}")
        _check_text(title, "session title")
    if isinstance(tags, (str, bytes)) or not isinstance(tags, Iterable):
        raise InvalidMetadata(f"session tags must be an iterable of strs, not "
                              f"{type(tags).__name__}")
    tag_list = list(tags)
    for tag in tag_list:
        if not isinstance(tag, str):
            raise InvalidMetadata(f"session tags must all be strs, not {type(tag).__name__}")
        _check_text(tag, "session tag")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, Mapping):
        raise InvalidMetadata(f"session metadata must be a mapping, not "
                              f"{type(metadata).__name__}")
    fields = dict(metadata)
    # The metadata is one level below the manifest's top.
    check_json(fields, "session metadata", MAX_DEPTH - 1)
    return title, tag_list, fields


def _check_text(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidMetadata(f"{where}: str holds a lone surrogate, not valid Unicode") from None


def encode(data: dict[str, Any]) -> bytes:
    """Sorted keys, two-space indent, one trailing newline: stable diffs under git.

    Raises InvalidMetadata, before anything is written, for anything :func:`read` would
    refuse: a value JSON cannot hold, nesting deeper than MAX_DEPTH, over 1 MiB."""
    check_json(data, "manifest", MAX_DEPTH)
    try:
        raw = (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False,
                          allow_nan=False) + "\n").encode()
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidMetadata(f"manifest cannot be stored as JSON: {exc}") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise InvalidMetadata(
            f"manifest encodes to {len(raw)} bytes, over the {MAX_MANIFEST_BYTES} a reader "
            "accepts; keep metadata small and store large values as attachments or events")
    return raw


def write(io: FileIO, path: str, data: dict[str, Any]) -> None:
    """Replace the manifest at ``path`` atomically. Raises InvalidMetadata, writing
    nothing, for content a reader would refuse (see :func:`encode`)."""
    io.atomic_write(path, encode(data))
