"""The session graph: which session was forked or spawned from which (docs/FORMAT.md,
section 13.1).

Every edge is recorded in the child's ``session.json`` only: ``parent`` for a fork,
``spawned_by`` for a session a sub-agent started in one of the parent's turns (format
1.4). Making a child writes nothing to its parent, and deleting the parent leaves the
child whole: its edge then points at a session that is gone, and the graph says so.
The graph is read from the manifests alone (never a log), one small JSON file per
session.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from . import identity, layout, manifest
from .errors import Finding, FsStoreError, InvalidSessionId, InvalidSetting, SeqOutOfRange
from .fsio import FileIO
from .log_format import check_seq

if TYPE_CHECKING:
    from .session_reader import SessionReader


class RelationKind(str, enum.Enum):
    """How a session came from its parent."""

    FORKED = "forked"  # shares the parent's history up to ``seq`` (section 13)
    SPAWNED = "spawned"  # a new history, started at the parent's ``seq`` (section 13.1)


class Relation(NamedTuple):
    """One edge of the graph: ``session`` was forked or spawned (``kind``) from
    ``parent`` at the parent's ``seq`` (a fork: at ``checkpoint``, if given; a spawn: in
    the parent's ``turn``, if known). ``parent_exists`` is False once the parent was
    deleted (or another session took its id: a spawn records the parent's uid)."""

    session: str
    parent: str
    seq: int
    checkpoint: str | None
    parent_exists: bool
    kind: RelationKind = RelationKind.FORKED
    turn: int | None = None


class Lineage(NamedTuple):
    """A session's place in the graph. ``ancestors``: its own edge first, then its
    parent's, up to the first session with no parent (or a parent that is gone).
    ``descendants``: every session forked or spawned from it or from those, breadth
    first. ``root``: the top of the ancestors (``session`` itself when it has no parent;
    perhaps a deleted session). ``tree``: every edge below ``root``, breadth first, so
    the whole family, siblings and cousins included."""

    session: str
    ancestors: list[Relation]
    descendants: list[Relation]
    root: str
    tree: list[Relation]

    @property
    def parent(self) -> Relation | None:
        """This session's own edge (None for a session nobody forked or spawned)."""
        return self.ancestors[0] if self.ancestors else None

    @property
    def children(self) -> list[Relation]:
        """The sessions forked or spawned from this one directly."""
        return [r for r in self.descendants if r.parent == self.session]

    @property
    def forks(self) -> list[Relation]:
        """The descendants that are forks (of this session or of a descendant)."""
        return [r for r in self.descendants if r.kind is RelationKind.FORKED]

    @property
    def spawned(self) -> list[Relation]:
        """The descendants that were spawned (by this session or by a descendant)."""
        return [r for r in self.descendants if r.kind is RelationKind.SPAWNED]


Recorded = list[tuple[Relation, str | None]]  # a session's edges, and a spawn's parent uid


def session_edges(io: FileIO, root: str, session_id: str) -> tuple[str | None, Recorded] | None:
    """A session's uid and the edges its manifest records (a fork's first; each with
    ``parent_exists`` True, to be settled against the parent), or None when its
    manifest cannot be read (not there, deleted meanwhile, damaged: verify reports
    it; or an id no session can have)."""
    try:
        folder = layout.session_dir(root, session_id)
        path = layout.session_manifest_path(folder)
        io.check_folders(folder)  # a symlinked session folder is read by no one
        data = manifest.read(io, path, manifest.SESSION_FORMAT)
        meta = manifest.decode_session(data, path)
    except (FsStoreError, OSError, ValueError):
        return None
    uid = data.get("uid")
    recorded: Recorded = []
    if meta.parent is not None:
        recorded.append((Relation(session_id, meta.parent.id, meta.parent.seq,
                                  meta.parent.checkpoint, True), None))
    if meta.spawned_by is not None:
        spawn = meta.spawned_by
        recorded.append((Relation(session_id, spawn.id, spawn.seq, None, True,
                                  RelationKind.SPAWNED, spawn.turn), spawn.uid))
    return (uid if isinstance(uid, str) else None), recorded


def settle(edge: Relation, parent_uid: str | None, parent: tuple[str | None, Recorded] | None
           ) -> Relation:
    """``edge`` with ``parent_exists`` set from what its parent's manifest read
    (``parent``: None when it is not there). A spawn records its parent's uid: a
    session created later under a deleted parent's id is not taken for the parent."""
    exists = parent is not None and (parent_uid is None or parent[0] in (None, parent_uid))
    return edge._replace(parent_exists=exists)


class Graph(Protocol):
    """What a lineage reads of the graph: a session's own edges (a fork's first), and
    the edges under a session (``gone``: under the id of a parent that is gone), in
    (seq, session) order."""

    def edges(self, session_id: str) -> list[Relation]: ...

    def below(self, parent: str, gone: bool) -> list[Relation]: ...


class _Manifests:
    """Every readable session manifest of a store, as edges by child and by parent."""

    def __init__(self, io: FileIO, root: str, session_ids: Iterable[str]) -> None:
        read: dict[str, tuple[str | None, Recorded]] = {}
        for session_id in session_ids:
            found = session_edges(io, root, session_id)
            if found is not None:
                read[session_id] = found
        self.edges_by: dict[str, list[Relation]] = {}  # by child: a fork's edge first
        self.children: dict[str, list[Relation]] = {}  # by live parent, in seq order
        # By the id of a parent that is gone: edges that hang from no session now (a
        # session created later under that id is not their parent).
        self.orphans: dict[str, list[Relation]] = {}
        for _uid, recorded in read.values():
            for edge, parent_uid in recorded:
                edge = settle(edge, parent_uid, read.get(edge.parent))
                self.edges_by.setdefault(edge.session, []).append(edge)
                below = self.children if edge.parent_exists else self.orphans
                below.setdefault(edge.parent, []).append(edge)
        for by_parent in (self.children, self.orphans):
            for edges in by_parent.values():
                edges.sort(key=lambda r: (r.seq, r.session))

    def edges(self, session_id: str) -> list[Relation]:
        return self.edges_by.get(session_id, [])

    def below(self, parent: str, gone: bool) -> list[Relation]:
        return (self.orphans if gone else self.children).get(parent, [])


def read_lineage(io: FileIO, root: str, session_ids: Iterable[str],
                 session_id: str) -> Lineage:
    """The lineage of ``session_id`` among the sessions ``session_ids`` of the store at
    ``root``, from every one of their manifests (see :meth:`fsstore.Store.lineage`,
    which reads only the manifests of the answer: fsstore/lineage_index.py)."""
    return lineage_in(_Manifests(io, root, session_ids), session_id)


def lineage_in(graph: Graph, session_id: str) -> Lineage:
    """The lineage of ``session_id`` in ``graph``."""
    ancestors: list[Relation] = []
    seen = {session_id}
    current = session_id
    while True:
        edges = graph.edges(current)
        if not edges or edges[0].parent in seen:
            break  # no parent, or a cycle a hand edit made: stop where it closes
        edge = edges[0]  # a fork's edge, should a hand edit record both
        ancestors.append(edge)
        seen.add(edge.parent)
        current = edge.parent
        if not edge.parent_exists:
            break  # the parent is gone: its own parent is not known
    # A root that is gone (deleted, or its id taken by a session created later) has, as
    # its tree, the sessions that still hang from it.
    gone = bool(ancestors) and not ancestors[-1].parent_exists
    return Lineage(session_id, ancestors, _below(graph, session_id), current,
                   _below(graph, current, gone))


def _below(graph: Graph, top: str, gone: bool = False) -> list[Relation]:
    """Every edge under ``top``, breadth first, each session once; under a ``top`` that
    is ``gone``, starting from the edges that hang from its id."""
    found: list[Relation] = []
    queue, visited = [top], {top}
    for current in queue:  # grows as it is walked: breadth first
        for edge in graph.below(current, gone and current == top):
            if edge.session not in visited:
                visited.add(edge.session)
                found.append(edge)
                queue.append(edge.session)
    return found


def graph_findings(io: FileIO, root: str, session_ids: Iterable[str],
                   head_of: Callable[[str], int]) -> list[Finding]:
    """What ``verify`` reports of the graph of the sessions ``session_ids``: a session
    whose parents lead back to it (a cycle only a hand edit makes), and a spawn at a seq
    past its parent's head (``head_of``: the head of a session's log). A parent that is
    gone is no finding: deleting a parent leaves its children whole by design."""
    graph = _Manifests(io, root, session_ids)
    findings = []
    for session_id, edges in sorted(graph.edges_by.items()):
        path = layout.session_manifest_path(layout.session_dir(root, session_id))
        seen = {session_id}
        current = edges
        while current and current[0].parent_exists:
            parent = current[0].parent
            if parent == session_id:
                findings.append(Finding(
                    "problem", path, None,
                    "its parents lead back to it (a cycle: only a hand edit makes one); "
                    "fix parent or spawned_by in the manifests of the cycle"))
                break
            if parent in seen:
                break  # a cycle above this session: reported at the sessions in it
            seen.add(parent)
            current = graph.edges(parent)
        for edge in edges:
            if edge.kind is not RelationKind.SPAWNED or not edge.parent_exists:
                continue
            try:
                head = head_of(edge.parent)
            except (FsStoreError, OSError):
                continue  # the parent's own check reports it
            if edge.seq > head:
                findings.append(Finding(
                    "problem", path, None,
                    f"field spawned_by.seq: {edge.seq} is past the head ({head}) of its "
                    f"parent {edge.parent!r}; a spawn is made at a seq its parent has"))
    return findings


def spawn_record(read_session: Callable[[str], SessionReader], parent_id: object,
                 at_seq: object) -> dict[str, Any]:
    """The ``spawned_by`` of a session spawned by ``parent_id`` at its ``at_seq`` (None:
    its head now), checked against the parent: InvalidSetting for an ``at_seq`` without
    a parent, InvalidSessionId, SessionNotFound, InvalidSeq, or SeqOutOfRange for a seq
    outside the parent's log (before its start, when it was cleared, or after its
    head). Reads the parent (its manifest and the end of its log), writes nothing."""
    if parent_id is None:
        raise InvalidSetting("at_seq is the parent's seq a spawned session starts at: pass "
                             "spawned_by=PARENT_ID with it")
    if not isinstance(parent_id, str):
        raise InvalidSessionId(f"spawned_by must be a session id (a str), not "
                               f"{type(parent_id).__name__}")
    layout.check_session_id(parent_id)
    if at_seq is not None:
        check_seq(at_seq, "at_seq")
    parent = read_session(parent_id)  # SessionNotFound when it is not there
    tail = parent.log_tail
    seq = tail.head if at_seq is None else at_seq
    assert isinstance(seq, int)
    if not tail.log_start - 1 <= seq <= tail.head:
        raise SeqOutOfRange(
            f"at_seq {seq} is outside session {parent_id!r}'s log (seqs {tail.log_start - 1}"
            f"..{tail.head}, at {parent.path}); spawn at a seq in that range, or leave "
            "at_seq out to spawn at its head")
    turn = None
    if seq == tail.head:
        turn = tail.last_turn
    elif seq >= tail.log_start:
        found = next(iter(parent.events(seq - 1, seq, include_internal=True)), None)
        turn = found.turn if found is not None and found.seq == seq else None
    record: dict[str, Any] = {"id": parent_id, "seq": seq, "turn": turn,
                              "spawned": datetime.now(timezone.utc).isoformat()}
    if parent.identity is not None:
        record["uid"] = identity.to_text(parent.identity.uid)
    return record
