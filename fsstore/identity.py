"""Which session a segment or a snapshot belongs to (docs/FORMAT.md, sections 3 and 11).

A session's id is the wrong identity for its files: a fork hard-links or copies its
parent's sealed segments, and a session copied under another id keeps its files. So
each session gets a random 64-bit ``uid`` when it is created, recorded in
``session.json`` (``"uid"``) and in the header of every segment and snapshot it writes.
A fork records the uids of its ancestors (``"ancestor_uids"``) in its own manifest, so
it accepts the segments it shares with them without depending on them still existing.

A reader refuses a file whose uid the session does not accept: a segment or snapshot
of another session put in its place. Files written before uids existed (format
1.0-1.2, and sessions created then) carry none and are accepted as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import CorruptionError

#: The uid recorded by a writer of a session that has none (created before format 1.3).
NO_UID = 0


def mint() -> int:
    """A new random uid (never NO_UID)."""
    import secrets  # here: it loads OpenSSL (hashlib), which readers never need

    return secrets.randbits(64) or 1


def to_text(uid: int) -> str:
    return f"{uid:016x}"


def parse(text: object, path: str) -> int:
    """A uid from its manifest form: 16 lowercase hex digits."""
    if (not isinstance(text, str) or len(text) != 16
            or text.strip("0123456789abcdef") != ""):
        raise CorruptionError(f"session uid {text!r} is not 16 lowercase hex digits; "
                              "restore session.json from a backup", path=path)
    return int(text, 16)


@dataclass(frozen=True)
class Identity:
    """A session's uid and the uids of the files it may hold (its own, its ancestors')."""

    uid: int
    accepted: frozenset[int]

    @classmethod
    def of(cls, uid: int, ancestors: Iterable[int] = ()) -> Identity:
        return cls(uid, frozenset((uid, *ancestors)))

    def manifest_fields(self) -> dict[str, Any]:
        """The ``session.json`` keys that record this identity."""
        fields: dict[str, Any] = {"uid": to_text(self.uid)}
        ancestors = sorted(self.accepted - {self.uid})
        if ancestors:
            fields["ancestor_uids"] = [to_text(uid) for uid in ancestors]
        return fields

    def lineage(self) -> list[int]:
        """The uids a fork of this session accepts: this session's and its ancestors'."""
        return sorted(self.accepted)

    def check(self, found: int, what: str, path: str, offset: int = 0) -> None:
        if found not in self.accepted:
            owner = "a session from before uids" if found == NO_UID else f"uid {to_text(found)}"
            raise CorruptionError(
                f"{what} belongs to another session ({owner}; this session is uid "
                f"{to_text(self.uid)}): it was put here from elsewhere; restore this "
                "session's own file from a backup", path=path, offset=offset)


def from_manifest(data: Mapping[str, Any], path: str) -> Identity | None:
    """The identity ``session.json`` records, None for a session created before uids."""
    if "uid" not in data:
        return None
    uid = parse(data["uid"], path)
    ancestors = data.get("ancestor_uids", [])
    if not isinstance(ancestors, list):
        raise CorruptionError("session ancestor_uids is not a list; restore session.json "
                              "from a backup", path=path)
    return Identity.of(uid, (parse(text, path) for text in ancestors))
