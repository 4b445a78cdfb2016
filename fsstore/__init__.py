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

from .aio import afind_store, aopen_store
from .blobs import BlobRef, BlobStat, GcReport
from .errors import (
    BlobNotFound,
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
    InvalidBlobRef,
    InvalidCheckpointId,
    InvalidCollection,
    InvalidDocument,
    InvalidEvent,
    InvalidExport,
    InvalidFilter,
    InvalidInput,
    InvalidMessage,
    InvalidMetadata,
    InvalidQuery,
    InvalidSeq,
    InvalidSessionId,
    InvalidSetting,
    InvalidState,
    InvalidWorkspace,
    InvalidWorkspaceId,
    LeaseLost,
    MessageExists,
    MessageNotFound,
    NotAFolder,
    NotARegularFile,
    NotAStore,
    RecordTooLarge,
    SeqOutOfRange,
    SessionClosed,
    SessionExists,
    SessionLocked,
    SessionNotFound,
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

__version__ = "0.1.0"

__all__ = [
    "METADATA_RECORD",
    "STATE_RECORD",
    "TURN_FINISHED",
    "BlobNotFound",
    "BlobRef",
    "BlobStat",
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
    "DistanceMetric",
    "Durability",
    "Event",
    "FileIO",
    "Finding",
    "ForkOrigin",
    "FormatVersionError",
    "FsStoreError",
    "GitSetupError",
    "GcReport",
    "HeadConflict",
    "InvalidBlobRef",
    "InvalidCheckpointId",
    "InvalidCollection",
    "InvalidDocument",
    "InvalidEvent",
    "InvalidExport",
    "ExportReport",
    "ImportReport",
    "export_sessions",
    "import_sessions",
    "InvalidFilter",
    "InvalidInput",
    "InvalidMetadata",
    "InvalidQuery",
    "InvalidSessionId",
    "InvalidSetting",
    "InvalidState",
    "Lease",
    "LeaseLost",
    "LeaseOwner",
    "LeaseState",
    "Lineage",
    "LogCleared",
    "NotAFolder",
    "NotARegularFile",
    "NotAStore",
    "QueuedWork",
    "RecordTooLarge",
    "Relation",
    "RelationKind",
    "Revision",
    "InvalidSeq",
    "SeqOutOfRange",
    "Session",
    "SessionChange",
    "SessionClosed",
    "SessionExists",
    "SessionInfo",
    "SessionLocked",
    "SessionNotFound",
    "SessionReader",
    "SpawnOrigin",
    "SessionWatcher",
    "SnapshotPolicy",
    "Store",
    "StoreFileExists",
    "StoreFileNotFound",
    "StoreIOError",
    "StoreNotFound",
    "StoreWatcher",
    "TranscriptNotFound",
    "Turn",
    "TurnError",
    "TurnInput",
    "TurnInputs",
    "TurnInputsReader",
    "UnsafePath",
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
    "InvalidWorkspace",
    "InvalidWorkspaceId",
    "SessionRole",
    "WriteFailed",
    "find_store",
    "afind_store",
    "aopen_store",
    "open_store",
    "INLINE_FILE_LIMIT",
    "MESSAGE_RECORD",
    "CostInfo",
    "DataPart",
    "ExecutionStats",
    "FilePart",
    "FinishReason",
    "InvalidMessage",
    "Message",
    "MessageExists",
    "MessageMetadata",
    "MessageNotFound",
    "MessagePart",
    "MessageRole",
    "MessageVersion",
    "Messages",
    "MessagesReader",
    "ReasoningPart",
    "TextPart",
    "TokenUsage",
    "ToolCallPart",
    "ToolResultPart",
    "UsageTotals",
    "StoreUsage",
    "VacuumReport",
]
