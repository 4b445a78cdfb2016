"""The clock that decides when leases and work claims expire.

Wall time (``time.time()``: expiry times are stored on disk and compared across
processes, so they are seconds since the epoch, not a monotonic clock of one process).
Tests replace it with :func:`use` to move time on without sleeping: only in their own
process, so a test with several processes keeps wall time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

_source: Callable[[], float] = time.time
_replacing = threading.Lock()


def now() -> float:
    """Seconds since the epoch: ``time.time()``, unless a test replaced the clock."""
    # One read of a module global: atomic, so no lock on this path (a queue claim takes
    # it on every call), and a replacement seen half-made is impossible.
    return _source()


def use(source: Callable[[], float] | None) -> Callable[[], float]:
    """Make ``source`` the clock of this process (None: wall time again), for every
    thread at once. Returns the clock it replaced, to put back."""
    global _source
    with _replacing:
        previous, _source = _source, time.time if source is None else source
    return previous
