"""Progress bars for the long commands: compact, vacuum, verify, stats, repair.

A bar is drawn on stderr when stderr is a terminal and ``tqdm`` is installed (the
``progress`` extra: ``pip install fsstore[progress]``); in a pipe, a log file or without
tqdm the command runs the same, silently. tqdm is imported here, inside :func:`progress`,
and only when a bar is drawn: ``import fsstore`` and the short commands never load it.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator
from typing import IO, Protocol, TypeVar

_T = TypeVar("_T")


class Bar(Protocol):
    """What a command calls on a bar: a step done (tqdm's bars are such)."""

    def update(self, n: int = 1) -> object: ...


class _Quiet:
    """No bar: every step is nothing."""

    def update(self, n: int = 1) -> None:
        return None


def _draws(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream
        return False


@contextlib.contextmanager
def progress(total: int | None, what: str, *, unit: str = "it",
             stream: IO[str] | None = None, force: bool = False) -> Iterator[Bar]:
    """A bar of ``total`` steps labelled ``what`` on ``stream`` (stderr), for the
    ``with`` block; removed from the screen when the block ends. Yields an object
    whose ``update(n)`` counts steps, a silent one when no bar is drawn. ``force``
    (a command's ``--progress``): drawn on a stream that is no terminal too (a log
    file: tqdm writes a line at most every few seconds there)."""
    out = sys.stderr if stream is None else stream
    if not force and not _draws(out):
        yield _Quiet()
        return
    try:
        from tqdm import tqdm
    except ImportError:
        yield _Quiet()
        return
    bar = tqdm(total=total, desc=what, unit=unit, file=out, leave=False,
               dynamic_ncols=True, mininterval=0.1 if _draws(out) else 5.0)
    try:
        yield bar
    finally:
        bar.close()


def tracked(items: Iterable[_T], total: int | None, what: str, *, unit: str = "it",
            stream: IO[str] | None = None) -> Iterator[_T]:
    """``items``, one at a time, with a bar that steps as each is taken."""
    with progress(total, what, unit=unit, stream=stream) as bar:
        for item in items:
            yield item
            bar.update(1)
