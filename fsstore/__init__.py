"""fsstore: a filesystem-native append-log store for AI agent sessions.

A store is a folder; each session is a folder inside it, whose authoritative history is
a segmented msgpack append log (docs/FORMAT.md)::

    import fsstore

    store = fsstore.open_store("agent-sessions")
    with store.create_session(title="fix the deploy script") as session:
        session.append({"role": "user", "content": "why does deploy.sh fail?"}, kind="message")
        session.append({"name": "read_file", "args": {"path": "deploy.sh"}}, kind="tool_call")
        session.finish_turn()          # the turn's close barrier: durable when it returns
    for event in store.read_session(session.id).events():
        print(event.seq, event.turn, event.kind, event.data)
"""

from .errors import (
    CorruptionError,
    Finding,
    FormatVersionError,
    FsStoreError,
    InvalidEvent,
    InvalidMetadata,
    InvalidSessionId,
    InvalidSetting,
    NotAStore,
    RecordTooLarge,
    SessionClosed,
    SessionExists,
    SessionLocked,
    SessionNotFound,
    StoreNotFound,
    TurnError,
    WriteFailed,
)
from .fsio import FileIO
from .log import Durability, Event
from .session import TURN_FINISHED, Session, SessionInfo, SessionReader, Turn
from .store import Store, find_store, open_store

__version__ = "0.1.0"

__all__ = [
    "CorruptionError",
    "Durability",
    "Event",
    "FileIO",
    "Finding",
    "FormatVersionError",
    "FsStoreError",
    "InvalidEvent",
    "InvalidMetadata",
    "InvalidSessionId",
    "InvalidSetting",
    "NotAStore",
    "RecordTooLarge",
    "Session",
    "SessionClosed",
    "SessionExists",
    "SessionInfo",
    "SessionLocked",
    "SessionNotFound",
    "SessionReader",
    "Store",
    "StoreNotFound",
    "TURN_FINISHED",
    "Turn",
    "TurnError",
    "WriteFailed",
    "find_store",
    "open_store",
]
