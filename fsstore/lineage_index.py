"""A session's lineage read through the store catalog (docs/FORMAT.md, sections 13.1
and 24): in time that grows with the answer (its ancestors, its tree), not the store.

The catalog's snapshot keeps a children index (sections ``edge_ends``,
``edge_parents``, ``edge_rows``: the rows of the sessions whose fork or spawn edge
names each parent), and the entries read again since it was written (the journal,
``sessions/`` listed again when its stamp moved) are merged in as a listing merges
them. That index only says where to look: every edge of the answer is read from the
manifests themselves (the child's, and its parent's for ``parent_exists``), so a row
the catalog has not caught up with (a session deleted since, a spawn parent's id taken
by a later session) never gives a wrong edge, and the answer is the one a reading of
every manifest gives (:func:`fsstore.lineage.read_lineage`). A session's edges are
written when it is made and never changed, so the index misses nothing the journal or
the stamp of ``sessions/`` announced. A damaged session's entry may not hold its edges:
such rows are filed under no parent (``UNKNOWN_PARENT``) and their manifests read at
every lineage.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .catalog import Catalog, View
from .catalog_snapshot import UNKNOWN_PARENT, SnapshotDamaged, parents_of
from .fsio import FileIO
from .lineage import Lineage, Recorded, Relation, lineage_in, session_edges, settle

if TYPE_CHECKING:
    from .session_reader import SessionInfo


class IndexedGraph:
    """The graph as :func:`fsstore.lineage.lineage_in` reads it, answered from the
    catalog's children index and the manifests of the sessions it names, each read
    once."""

    def __init__(self, io: FileIO, root: str, view: View) -> None:
        self.io = io
        self.root = root
        self.view = view
        self._read: dict[str, tuple[str | None, Recorded] | None] = {}
        self._extra: dict[str, list[str]] = {}  # children of each parent, read since
        for entry in view.extra.values():
            for parent in parents_of(entry):
                self._extra.setdefault(parent, []).append(entry.id)
        # Damaged sessions' edges, from their manifests: looked at under every parent.
        self._unknown: dict[str, list[str]] = {}
        unknown: dict[str, list[str]] = {}
        for child in self._candidates(UNKNOWN_PARENT):
            found = self._load(child)
            for edge, _uid in [] if found is None else found[1]:
                unknown.setdefault(edge.parent, []).append(child)
        self._unknown = unknown

    def _load(self, session_id: str) -> tuple[str | None, Recorded] | None:
        if session_id not in self._read:
            self._read[session_id] = session_edges(self.io, self.root, session_id)
        return self._read[session_id]

    def _candidates(self, parent: str) -> list[str]:
        snapshot = self.view.snapshot
        found = [snapshot.id(row) for row in snapshot.child_rows(parent)]
        found.extend(self._extra.get(parent, ()))
        found.extend(self._unknown.get(parent, ()))
        return list(dict.fromkeys(found))

    def edges(self, session_id: str) -> list[Relation]:
        found = self._load(session_id)
        if found is None:
            return []
        return [settle(edge, parent_uid, self._load(edge.parent))
                for edge, parent_uid in found[1]]

    def below(self, parent: str, gone: bool) -> list[Relation]:
        found = [edge for child in self._candidates(parent) for edge in self.edges(child)
                 if edge.parent == parent and edge.parent_exists is not gone]
        found.sort(key=lambda r: (r.seq, r.session))
        return found


def indexed_lineage(io: FileIO, root: str, read: Callable[[str], SessionInfo | None],
                    session_id: str) -> Lineage:
    """The lineage of ``session_id`` in the store at ``root`` (``read``: the store's
    reading of one session, for the catalog; see :meth:`fsstore.Store.lineage`)."""
    catalog = Catalog(io, root, read)
    try:
        try:
            return lineage_in(IndexedGraph(io, root, catalog.view()), session_id)
        except SnapshotDamaged:
            # A section read does not check: the whole again, from a rebuilt catalog.
            return lineage_in(IndexedGraph(io, root, catalog.rebuild()), session_id)
    finally:
        catalog.close()
