"""The JSON manifests of a store and of a session: small, git-diffable, atomically written.

Both carry ``"format"`` (what kind of file this is) and ``"version"`` (``"MAJOR.MINOR"``).
A reader accepts any minor version of a major it knows and keeps unknown keys as they
are; it refuses a newer major without reading further.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import CorruptionError, FormatVersionError
from .fsio import FileIO

FORMAT_MAJOR = 1
FORMAT_MINOR = 3
VERSION = f"{FORMAT_MAJOR}.{FORMAT_MINOR}"

STORE_FORMAT = "fsstore-store"
SESSION_FORMAT = "fsstore-session"

MAX_MANIFEST_BYTES = 1 << 20


def encode(data: dict[str, Any]) -> bytes:
    """Sorted keys, two-space indent, one trailing newline: stable diffs under git."""
    return (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def write(io: FileIO, path: str, data: dict[str, Any]) -> None:
    io.atomic_write(path, encode(data))


def read(io: FileIO, path: str, expected_format: str) -> dict[str, Any]:
    """Read and check a manifest.

    Raises FileNotFoundError if it is missing, CorruptionError if it is not a manifest of
    ``expected_format``, FormatVersionError if a newer major version wrote it.
    """
    try:
        raw = io.read_file(path, MAX_MANIFEST_BYTES)
    except ValueError as exc:
        raise CorruptionError(str(exc), path=path) from None
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptionError(
            f"not valid JSON ({exc}); restore this manifest from a backup", path=path
        ) from None
    if not isinstance(data, dict) or data.get("format") != expected_format:
        raise CorruptionError(
            f"not an {expected_format} manifest (no \"format\": \"{expected_format}\")",
            path=path,
        )
    check_version(data.get("version"), path)
    return data


def check_version(version: object, path: str) -> None:
    """Accept ``MAJOR.MINOR`` with a major this code reads; refuse a newer one."""
    try:
        major_text, minor_text = str(version).split(".")
        major, _minor = int(major_text), int(minor_text)
    except ValueError:
        raise CorruptionError(f"unreadable format version {version!r}", path=path) from None
    if major > FORMAT_MAJOR:
        raise FormatVersionError(
            f"{path}: written by format version {version}, newer than the {VERSION} this "
            "fsstore reads; upgrade fsstore to open it (nothing was changed)"
        )
    if major < 1:
        raise CorruptionError(f"unknown format version {version!r}", path=path)
