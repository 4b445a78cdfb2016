"""Import and mirror the sessions of Claude Code and the Codex CLI.

Each transcript (a JSONL file the tool writes as it works) becomes one fsstore session:
messages with their parts, in turns, with model, usage and cost where the transcript
has them; images and long tool outputs as blobs; records fsstore has no place for as
raw events (``claude_code.raw``, ``codex.raw``); sub-agents as spawned sessions.
Re-running an import appends only what the transcripts gained (docs/CONVERTERS.md,
"Claude Code and Codex transcripts")::

    import fsstore
    from fsstore.transcripts import import_claude_code, import_codex

    store = fsstore.open_store("agent-sessions")
    report = import_claude_code(store)             # ~/.claude/projects
    print(report.describe())
    import_codex(store, "~/.codex/sessions", dry_run=True)

``import fsstore`` does not load this package.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

from ..errors import InvalidSetting
from ..store import Store
from . import claude_code, codex
from .importer import FileReport, ImportReport, Memo, import_file

__all__ = ["FileReport", "ImportReport", "SOURCES", "follow", "import_claude_code",
           "import_codex", "import_source"]

#: The tools an import reads, by the name the command line gives them.
SOURCES: dict[str, ModuleType] = {"claude-code": claude_code, "codex": codex}


def _tool(source: str) -> ModuleType:
    module = SOURCES.get(source)
    if module is None:
        raise InvalidSetting(f"unknown transcript source {source!r}: use one of "
                             f"{', '.join(sorted(SOURCES))}")
    return module


def import_source(store: Store | None, source: str, path: str | os.PathLike[str] | None = None,
                  *, dry_run: bool = False, memo: Memo | None = None) -> ImportReport:
    """Import the transcripts of tool ``source`` (``claude-code`` or ``codex``) under
    ``path`` (a folder, or one ``.jsonl`` file; default: the tool's own folder) into
    ``store``. With ``dry_run``, nothing is written: the report says what would be
    (``store`` may then be None: a store that does not exist yet).
    A file that cannot be imported is reported (``action="failed"``), never stops
    the others. Raises TranscriptNotFound when ``path`` holds no transcript folder or
    file, InvalidSetting for an unknown source."""
    tool = _tool(source)
    root = os.path.expanduser(os.fspath(path)) if path is not None else tool.default_root()
    files = tool.discover(root)
    base = root if os.path.isdir(root) else os.path.dirname(os.path.abspath(root))
    report = ImportReport(tool=source, root=os.path.abspath(root), dry_run=dry_run)
    for file in files:
        try:
            stat = os.stat(file)
            key = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
            known = memo.seen.get(file) if memo is not None else None
            if known is not None and known[0] == key:
                report.files.append(FileReport(source=file, session=known[1]))
                continue
            found = tool.source_of(file, base)
        except OSError as exc:
            report.files.append(FileReport(source=file, session="", action="failed",
                                           note=f"{type(exc).__name__}: {exc}"))
            continue
        entry = import_file(store, tool, found, dry_run=dry_run, memo=memo)
        report.files.append(entry)
        for related in entry.related:
            report.files.append(import_file(store, tool, related, dry_run=dry_run,
                                            memo=memo))
        if memo is not None and entry.action != "failed" and not dry_run:
            memo.seen[file] = (key, entry.session)
    return report


def import_claude_code(store: Store, path: str | os.PathLike[str] | None = None, *,
                       dry_run: bool = False) -> ImportReport:
    """Import Claude Code sessions (default folder ``~/.claude/projects``): see
    :func:`import_source`."""
    return import_source(store, "claude-code", path, dry_run=dry_run)


def import_codex(store: Store, path: str | os.PathLike[str] | None = None, *,
                 dry_run: bool = False) -> ImportReport:
    """Import Codex CLI sessions (default folder ``$CODEX_HOME/sessions``, else
    ``~/.codex/sessions``): see :func:`import_source`."""
    return import_source(store, "codex", path, dry_run=dry_run)


def follow(store: Store, source: str, path: str | os.PathLike[str] | None = None, *,
           poll_interval: float = 1.0, on_report: Callable[[ImportReport], Any] | None = None,
           stop: Callable[[], bool] | None = None) -> None:
    """Keep ``store`` a live mirror of a tool's sessions: import, then watch the folder
    (watchdog; a re-scan every ``poll_interval`` seconds when hints cannot be had or
    are lost) and import again on each change. Each line is appended exactly once (the
    same rule as :func:`import_source`); a line being written is taken once whole.
    ``on_report`` gets each import's report; returns when ``stop()`` is true (checked
    after each wait), or on KeyboardInterrupt."""
    from ..watch import PollingNotifier, WatchdogNotifier

    tool = _tool(source)
    root = os.path.expanduser(os.fspath(path)) if path is not None else tool.default_root()
    folder = root if os.path.isdir(root) else os.path.dirname(os.path.abspath(root))
    if not os.path.isdir(folder):
        tool.discover(root)  # raises TranscriptNotFound naming the path
    memo = Memo()
    notifier: Any
    try:
        notifier = WatchdogNotifier([folder], recursive=True, directories=True)
    except OSError:
        notifier = PollingNotifier()
    try:
        while True:
            report = import_source(store, source, root, memo=memo)
            if on_report is not None:
                on_report(report)
            if stop is not None and stop():
                return
            notifier.wait(poll_interval)
    except KeyboardInterrupt:
        return
    finally:
        notifier.close()
