"""A store's usage: the usage folds of its sessions (docs/FORMAT.md, section 20.4),
summed.

Each session's fold is kept in its snapshots, so summing a store costs a state load per
session, never a read of the histories. A fork shares its parent's history up to its
fork point, and its fold counts that history's messages too: so that the store counts
each message once, a fork whose parent is summed too counts only what came after the
fork point (its fold, less its fold at that seq). A spawned session has a history of
its own and counts whole. One damaged session hides no other: it is left out of the
sums and named, with why, in :attr:`StoreUsage.skipped`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from .errors import FsStoreError, InvalidSetting, SessionNotFound
from .usage import UsageTotals, check_usage_by

if TYPE_CHECKING:
    from .store import Store

#: What ``Store.usage`` can group by: a session's groupings, and ``"session"``.
STORE_USAGE_GROUPINGS = (None, "model", "session", "day")


class StoreUsage(dict[str, UsageTotals]):
    """The totals of ``Store.usage``: a dict like a session's ``usage()`` (all under
    ``""``, or keyed by model, session id or day), and ``skipped``: the sessions that
    could not be read, each id with why (``fsstore verify`` says more). A store without
    usage gives an empty dict."""

    def __init__(self, totals: dict[str, UsageTotals] | None = None,
                 skipped: dict[str, str] | None = None) -> None:
        super().__init__(totals or {})
        self.skipped: dict[str, str] = dict(skipped or {})

    def __repr__(self) -> str:
        return f"StoreUsage({dict(self)!r}, skipped={self.skipped!r})"

    @property
    def total(self) -> UsageTotals:
        """Every group summed."""
        return UsageTotals.summed(self.values())


def store_usage(store: Store, by: str | None = None,
                sessions: Iterable[str] | None = None) -> StoreUsage:
    """See ``Store.usage``."""
    if by not in STORE_USAGE_GROUPINGS:
        raise InvalidSetting(f"by must be None, 'model', 'session' or 'day', not {by!r}")
    if isinstance(sessions, str):
        raise InvalidSetting("sessions must be an iterable of session ids, not one str: "
                             f"pass [{sessions!r}]")
    explicit = sessions is not None
    ids = list(dict.fromkeys(sessions)) if sessions is not None else store.session_ids()
    summed = set(ids)
    result = StoreUsage()
    for session_id in ids:
        try:
            reader = store.read_session(session_id)
            grouping = None if by == "session" else by
            check_usage_by(grouping)
            found = reader.usage(by=grouping)
            origin = reader.parent
            if found and origin is not None and origin.parent in summed:
                found = _after(found, reader.usage(by=grouping, at_seq=origin.seq))
        except SessionNotFound:
            if explicit:
                raise
            continue  # deleted meanwhile: it is no longer in the store
        except (FsStoreError, OSError) as exc:
            # A damaged session is left out of the sums and named with why, so that the
            # caller (and `fsstore usage`) can say the totals are short.
            result.skipped[session_id] = " ".join(str(exc).split()) or type(exc).__name__
            continue
        for key, totals in found.items():
            group = session_id if by == "session" else key
            result.setdefault(group, UsageTotals()).add(totals)
    return result


def _after(total: dict[str, UsageTotals], inherited: dict[str, UsageTotals]
           ) -> dict[str, UsageTotals]:
    """What a fork spent after its fork point: its totals less the inherited ones, the
    groups that come to nothing left out."""
    own: dict[str, UsageTotals] = {}
    for key, totals in total.items():
        left = UsageTotals()
        left.add(totals)
        if key in inherited:
            left.add(inherited[key], -1)
        # Float costs subtracted may leave a residue of rounding where nothing was spent.
        left.cost = {currency: amount for currency, amount in left.cost.items()
                     if abs(amount) > 1e-12}
        if not left.is_empty():
            own[key] = left
    return own
