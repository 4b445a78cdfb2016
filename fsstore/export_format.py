"""The export file format (docs/FORMAT.md, section 22): JSON lines, each sealed by a
CRC, numbered, and the whole sealed by a trailer; and the JSON form of stored values.

One line per record::

    {"n":LINE,"type":TYPE,...fields...,"crc":"XXXXXXXX"}

``n`` counts the lines from 1 (so a reordered, duplicated or missing line is named by
its number); ``crc`` is the CRC-32C, in hex, of the line's text without its ``crc``
field (the text up to it, then ``}``), so a hand edit is found at its line. The last
line, the trailer, counts the lines and holds the SHA-256 of every line before it:
a file cut at a line boundary lacks it.

Stored values (event data, state, metadata) are msgpack values, which JSON cannot
all hold. They are written in the forms ``fsstore cat`` prints (README, "The command
line"), made exact so that they read back equal:

- bytes: ``{"$base64": "..."}``
- a float that is NaN or infinite: ``{"$float": "nan" | "inf" | "-inf"}``; a NaN other
  than the usual one (its sign or payload bits set otherwise) as ``{"$float":
  "nan:HEX16"}``, its 64 bits in hex, so that it reads back with the same bits
- a map with a key that is not a str, or whose only key starts with ``$`` (which would
  read as one of these forms): ``{"$map": [[key, value], ...]}``
- a date and time (msgpack's timestamp): ``{"$datetime": "ISO 8601"}``
"""

from __future__ import annotations

import base64
import datetime
import json
import math
import re
import struct
from typing import Any

import msgspec
from crc32c import crc32c

from .errors import InvalidExport

FORMAT_NAME = "fsstore-export"
#: MAJOR.MINOR: a reader refuses a newer major version, and reads any minor version
#: of its own major (ignoring fields it does not know).
FORMAT_VERSION = "1.0"
FORMAT_MAJOR = 1

_CRC_TAIL = re.compile(rb',"crc":"([0-9a-f]{8})"\}\Z')
_CRC_TAIL_SIZE = len(',"crc":"00000000"}')
_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder().decode


# --- values --------------------------------------------------------------------------------


def to_json(value: Any) -> Any:
    """``value`` (a decoded msgpack value) in the exact JSON form of the module
    docstring: :func:`from_json` gives back an equal value."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        if math.isnan(value) and (bits := _float_bits(value)) != _USUAL_NAN:
            return {"$float": f"nan:{bits}"}
        return {"$float": str(value)}
    if isinstance(value, dict):
        if all(type(key) is str for key in value) and not (
                len(value) == 1 and next(iter(value)).startswith("$")):
            return {key: to_json(item) for key, item in value.items()}
        return {"$map": [[to_json(key), to_json(item)] for key, item in value.items()]}
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$base64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, datetime.datetime):
        return {"$datetime": value.isoformat()}
    raise TypeError(f"{type(value).__name__} is no msgpack value an export can hold")


def _float_bits(value: float) -> str:
    return struct.pack(">d", value).hex()


_USUAL_NAN = _float_bits(float("nan"))
_NAN_BITS = re.compile(r"nan:[0-9a-f]{16}")


def from_json(value: Any, path: str, line: int) -> Any:
    """The value :func:`to_json` wrote as ``value``; InvalidExport naming ``line`` for a
    form that is not one of the module docstring's."""
    if isinstance(value, list):
        return [from_json(item, path, line) for item in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((key, item),) = value.items()
        if key.startswith("$"):
            return _tagged(key, item, path, line)
    return {key: from_json(item, path, line) for key, item in value.items()}


def _tagged(tag: str, item: Any, path: str, line: int) -> Any:
    try:
        if tag == "$base64" and isinstance(item, str):
            return base64.b64decode(item, validate=True)
        if tag == "$float" and item in ("nan", "inf", "-inf"):
            return float(item)
        if tag == "$float" and isinstance(item, str) and _NAN_BITS.fullmatch(item):
            value = struct.unpack(">d", bytes.fromhex(item[4:]))[0]
            if math.isnan(value):
                return value
        if tag == "$datetime" and isinstance(item, str):
            return datetime.datetime.fromisoformat(item)
        if tag == "$map" and isinstance(item, list):
            pairs = [(from_json(k, path, line), from_json(v, path, line)) for k, v in item]
            return dict(pairs)
    except (ValueError, TypeError):
        pass
    raise InvalidExport(f"{json.dumps(tag)} holds {json.dumps(item)[:60]}, which is no value "
                        "of that form (section 22 of docs/FORMAT.md lists them)",
                        path=path, line=line)


# --- lines ---------------------------------------------------------------------------------


def seal(fields: dict[str, Any]) -> bytes:
    """One line of an export file: ``fields`` (its ``n`` and ``type`` first) as compact
    JSON, its CRC appended, and a newline."""
    # msgspec writes the shortest text that reads back as the same float, and UTF-8 as
    # it is; to_json has already put what JSON cannot hold in its exact forms.
    text = _json_encode(fields)
    return b'%s,"crc":"%08x"}\n' % (text[:-1], crc32c(text))


def unseal(raw: bytes, path: str, line: int) -> dict[str, Any]:
    """The fields of line number ``line`` (``raw``, without its newline), checked: its
    CRC, that it is a JSON object, and that its ``n`` is ``line``."""
    found = _CRC_TAIL.search(raw)
    if found is None:
        raise InvalidExport("the line does not end in its \"crc\" field: it was cut off or "
                            "edited", path=path, line=line)
    text = raw[:-_CRC_TAIL_SIZE] + b"}"
    if crc32c(text) != int(found.group(1), 16):
        raise InvalidExport("the line's crc does not match its text: it was edited or "
                            "damaged after the export", path=path, line=line)
    try:
        fields = _json_decode(text)
    except (msgspec.DecodeError, ValueError, RecursionError) as exc:
        raise InvalidExport(f"the line is no JSON ({exc})", path=path, line=line) from None
    if not isinstance(fields, dict) or not isinstance(fields.get("type"), str):
        raise InvalidExport("the line is no JSON object with a \"type\"", path=path, line=line)
    number = fields.get("n")
    if number != line:
        raise InvalidExport(f"the line is numbered {number!r} where line {line} belongs: "
                            "lines were reordered, duplicated or left out",
                            path=path, line=line)
    return fields


def check_version(version: object, path: str) -> None:
    """Refuse a header whose version this fsstore cannot read (a newer major)."""
    if not isinstance(version, str) or not re.fullmatch(r"[0-9]+\.[0-9]+", version):
        raise InvalidExport(f"version {version!r} is no MAJOR.MINOR version", path=path, line=1)
    if int(version.split(".")[0]) != FORMAT_MAJOR:
        raise InvalidExport(f"written by export format {version}; this fsstore reads "
                            f"{FORMAT_MAJOR}.x: upgrade fsstore to import it",
                            path=path, line=1)
