"""fsstore: a filesystem-native append-log store for AI agent sessions.

A store is a folder; each session is a folder inside it, whose authoritative history is
a segmented msgpack append log (docs/FORMAT.md)::

    import fsstore

    store = fsstore.open_store("agent-sessions")
    with store.create_session(title="fix the deploy script") as session:
        session.append({"role": "user", "content": "why does deploy.sh fail?"}, kind="message")
        session.append({"name": "read_file", "args": {"path": "deploy.sh"}}, kind="tool_call")
        session.finish_turn()          # the turn's close barrier: durable when it returns
        session.commit([{"role": "assistant", "content": "line 3 quotes $1"}],
                       state_patch={"plan": ["quote $1"]})   # events + state, atomically
        session.checkpoint("before the fix")
        memory = session.create_collection("memory", dim=384)      # exact vector search
        memory.upsert([fsstore.VectorDocument("m1", embedding, content="quote $1")])
    store.search("memory", query_embedding, k=5)   # across every session's "memory"
    for event in store.read_session(session.id).events():
        print(event.seq, event.turn, event.kind, event.data)
"""

# The public names are imported on first use (PEP 562), not here: a program that imports
# fsstore for one command (``fsstore cat``, run by shell loops and by git once per file)
# would otherwise pay for numpy, zstandard, watchdog and asyncio before doing anything.
#
# To export a new name: add it to _EXPORTS under the module that defines it, to the
# TYPE_CHECKING imports below (what mypy and IDEs read) and to __all__;
# tests/test_cli_start.py checks the three agree and that every name resolves.

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: module (inside fsstore) -> the public names it defines
_EXPORTS: dict[str, tuple[str, ...]] = {
    "aio": ("afind_store", "aopen_store"),
    "backup": ("BackupReport", "backup_store", "verify_backup"),
    "blobs": ("BlobRef", "BlobStat", "GcReport"),
    "errors": (
        "BlobNotFound", "ChainBindingBroken", "ChainKeyMismatch", "ChainKeyRequired",
        "ChainUnsupported",
        "CheckpointExists", "CheckpointNotFound", "ClaimLost", "CollectionExists",
        "CollectionNotFound", "CorruptionError", "Finding", "FormatVersionError", "FsStoreError",
        "GitSetupError", "HeadConflict", "InvalidBackupDest", "InvalidBlobRef",
        "InvalidCheckpointId", "InvalidCollection", "InvalidDocument", "InvalidEvent",
        "InvalidExport", "InvalidFilter", "InvalidInput", "InvalidListing", "InvalidMessage",
        "InvalidMetadata",
        "InvalidPins", "InvalidQuery", "InvalidSeq", "InvalidSessionId", "InvalidSetting",
        "InvalidSql",
        "InvalidState", "InvalidWorkspace", "InvalidWorkspaceId", "LeaseLost", "MessageExists",
        "MessageNotFound", "MissingExtra", "NotAFolder", "NotARegularFile", "NotAStore",
        "RecordTooLarge", "SeqOutOfRange", "SessionClosed", "SessionExists", "SessionLocked",
        "SessionNotFound", "SkippedSessions", "StoreFileExists", "StoreFileNotFound",
        "StoreIOError", "StoreNotFound", "TranscriptNotFound", "TurnError", "UnsafePath",
        "WorkspaceExists", "WorkspaceLocked", "WorkspaceMemberExists", "WorkspaceMemberNotFound",
        "WorkspaceNotFound", "WriteFailed",
    ),
    "export": ("ExportReport", "export_sessions"),
    "fsio": ("FileIO",),
    "importer": ("ImportReport", "import_sessions"),
    "lease": ("ClaimOutcome", "Lease", "LeaseOwner", "LeaseState"),
    "lineage": ("Lineage", "Relation", "RelationKind"),
    "listing": ("SessionPage",),
    "log_format": ("Event",),
    "log_writer": ("Durability",),
    "message_types": (
        "INLINE_FILE_LIMIT", "CostInfo", "DataPart", "FilePart", "FinishReason", "Message",
        "MessageMetadata", "MessagePart", "MessageRole", "ReasoningPart", "TextPart",
        "TokenUsage", "ToolCallPart", "ToolResultPart",
    ),
    "messages": ("MESSAGE_RECORD", "Messages", "MessagesReader", "MessageVersion"),
    "session": (
        "METADATA_RECORD", "TURN_FINISHED", "CommitResult", "ForkOrigin", "Revision", "Session",
        "SessionInfo", "SessionReader", "Turn",
    ),
    "session_reader": ("SpawnOrigin",),
    "snapshot": ("CheckpointInfo", "SnapshotPolicy"),
    "state": ("STATE_RECORD",),
    "store": ("Store", "find_store", "open_store"),
    "store_usage": ("StoreUsage",),
    "usage": ("ExecutionStats", "UsageTotals"),
    "vacuum": ("VacuumReport",),
    "vectors": (
        "CollectionInfo", "DistanceMetric", "VectorCollection", "VectorCollectionReader",
        "VectorDocument", "VectorFilter", "VectorSearchResult",
    ),
    "watch": ("LogCleared", "SessionChange", "SessionWatcher", "StoreWatcher"),
    "work": (
        "ClaimedWork", "QueuedWork", "TurnInput", "TurnInputs", "TurnInputsReader", "WorkQueue",
        "WorkQueueReader",
    ),
    "workspaces": ("SessionRole", "Workspace", "WorkspaceMember"),
}

_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

if TYPE_CHECKING:
    from .aio import afind_store, aopen_store
    from .backup import BackupReport, backup_store, verify_backup
    from .blobs import BlobRef, BlobStat, GcReport
    from .errors import (
        BlobNotFound,
        ChainBindingBroken,
        ChainKeyMismatch,
        ChainKeyRequired,
        ChainUnsupported,
        CheckpointExists,
        CheckpointNotFound,
        ClaimLost,
        CollectionExists,
        CollectionNotFound,
        CorruptionError,
        Finding,
        FormatVersionError,
        FsStoreError,
        GitSetupError,
        HeadConflict,
        InvalidBackupDest,
        InvalidBlobRef,
        InvalidCheckpointId,
        InvalidCollection,
        InvalidDocument,
        InvalidEvent,
        InvalidExport,
        InvalidFilter,
        InvalidInput,
        InvalidListing,
        InvalidMessage,
        InvalidMetadata,
        InvalidPins,
        InvalidQuery,
        InvalidSeq,
        InvalidSessionId,
        InvalidSetting,
        InvalidSql,
        InvalidState,
        InvalidWorkspace,
        InvalidWorkspaceId,
        LeaseLost,
        MessageExists,
        MessageNotFound,
        MissingExtra,
        NotAFolder,
        NotARegularFile,
        NotAStore,
        RecordTooLarge,
        SeqOutOfRange,
        SessionClosed,
        SessionExists,
        SessionLocked,
        SessionNotFound,
        SkippedSessions,
        StoreFileExists,
        StoreFileNotFound,
        StoreIOError,
        StoreNotFound,
        TranscriptNotFound,
        TurnError,
        UnsafePath,
        WorkspaceExists,
        WorkspaceLocked,
        WorkspaceMemberExists,
        WorkspaceMemberNotFound,
        WorkspaceNotFound,
        WriteFailed,
    )
    from .export import ExportReport, export_sessions
    from .fsio import FileIO
    from .importer import ImportReport, import_sessions
    from .lease import ClaimOutcome, Lease, LeaseOwner, LeaseState
    from .lineage import Lineage, Relation, RelationKind
    from .listing import SessionPage
    from .log_format import Event
    from .log_writer import Durability
    from .message_types import (
        INLINE_FILE_LIMIT,
        CostInfo,
        DataPart,
        FilePart,
        FinishReason,
        Message,
        MessageMetadata,
        MessagePart,
        MessageRole,
        ReasoningPart,
        TextPart,
        TokenUsage,
        ToolCallPart,
        ToolResultPart,
    )
    from .messages import MESSAGE_RECORD, Messages, MessagesReader, MessageVersion
    from .session import (
        METADATA_RECORD,
        TURN_FINISHED,
        CommitResult,
        ForkOrigin,
        Revision,
        Session,
        SessionInfo,
        SessionReader,
        Turn,
    )
    from .session_reader import SpawnOrigin
    from .snapshot import CheckpointInfo, SnapshotPolicy
    from .state import STATE_RECORD
    from .store import Store, find_store, open_store
    from .store_usage import StoreUsage
    from .usage import ExecutionStats, UsageTotals
    from .vacuum import VacuumReport
    from .vectors import (
        CollectionInfo,
        DistanceMetric,
        VectorCollection,
        VectorCollectionReader,
        VectorDocument,
        VectorFilter,
        VectorSearchResult,
    )
    from .watch import LogCleared, SessionChange, SessionWatcher, StoreWatcher
    from .work import (
        ClaimedWork,
        QueuedWork,
        TurnInput,
        TurnInputs,
        TurnInputsReader,
        WorkQueue,
        WorkQueueReader,
    )
    from .workspaces import SessionRole, Workspace, WorkspaceMember

else:

    def __getattr__(name: str) -> Any:
        module = _MODULE_OF.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
        globals()[name] = value  # later lookups find it without calling this function
        return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "BackupReport",
    "BlobNotFound",
    "BlobRef",
    "BlobStat",
    "ChainBindingBroken",
    "ChainKeyMismatch",
    "ChainKeyRequired",
    "ChainUnsupported",
    "CheckpointExists",
    "CheckpointInfo",
    "CheckpointNotFound",
    "ClaimLost",
    "ClaimOutcome",
    "ClaimedWork",
    "CollectionExists",
    "CollectionInfo",
    "CollectionNotFound",
    "CommitResult",
    "CorruptionError",
    "CostInfo",
    "DataPart",
    "DistanceMetric",
    "Durability",
    "Event",
    "ExecutionStats",
    "ExportReport",
    "FileIO",
    "FilePart",
    "Finding",
    "FinishReason",
    "ForkOrigin",
    "FormatVersionError",
    "FsStoreError",
    "GcReport",
    "GitSetupError",
    "HeadConflict",
    "INLINE_FILE_LIMIT",
    "ImportReport",
    "InvalidBackupDest",
    "InvalidBlobRef",
    "InvalidCheckpointId",
    "InvalidCollection",
    "InvalidDocument",
    "InvalidEvent",
    "InvalidExport",
    "InvalidFilter",
    "InvalidInput",
    "InvalidListing",
    "InvalidMessage",
    "InvalidMetadata",
    "InvalidPins",
    "InvalidQuery",
    "InvalidSeq",
    "InvalidSessionId",
    "InvalidSetting",
    "InvalidSql",
    "InvalidState",
    "InvalidWorkspace",
    "InvalidWorkspaceId",
    "Lease",
    "LeaseLost",
    "LeaseOwner",
    "LeaseState",
    "Lineage",
    "LogCleared",
    "MESSAGE_RECORD",
    "METADATA_RECORD",
    "Message",
    "MessageExists",
    "MessageMetadata",
    "MessageNotFound",
    "MessagePart",
    "MessageRole",
    "MessageVersion",
    "Messages",
    "MessagesReader",
    "MissingExtra",
    "NotAFolder",
    "NotARegularFile",
    "NotAStore",
    "QueuedWork",
    "ReasoningPart",
    "RecordTooLarge",
    "Relation",
    "RelationKind",
    "Revision",
    "STATE_RECORD",
    "SeqOutOfRange",
    "Session",
    "SessionChange",
    "SessionClosed",
    "SessionExists",
    "SessionInfo",
    "SessionPage",
    "SessionLocked",
    "SessionNotFound",
    "SessionReader",
    "SessionRole",
    "SessionWatcher",
    "SkippedSessions",
    "SnapshotPolicy",
    "SpawnOrigin",
    "Store",
    "StoreFileExists",
    "StoreFileNotFound",
    "StoreIOError",
    "StoreNotFound",
    "StoreUsage",
    "StoreWatcher",
    "TURN_FINISHED",
    "TextPart",
    "TokenUsage",
    "ToolCallPart",
    "ToolResultPart",
    "TranscriptNotFound",
    "Turn",
    "TurnError",
    "TurnInput",
    "TurnInputs",
    "TurnInputsReader",
    "UnsafePath",
    "UsageTotals",
    "VacuumReport",
    "VectorCollection",
    "VectorCollectionReader",
    "VectorDocument",
    "VectorFilter",
    "VectorSearchResult",
    "WorkQueue",
    "WorkQueueReader",
    "Workspace",
    "WorkspaceExists",
    "WorkspaceLocked",
    "WorkspaceMember",
    "WorkspaceMemberExists",
    "WorkspaceMemberNotFound",
    "WorkspaceNotFound",
    "WriteFailed",
    "afind_store",
    "aopen_store",
    "backup_store",
    "export_sessions",
    "find_store",
    "import_sessions",
    "open_store",
    "verify_backup",
]
