"""A store in a git work tree, set up so that git shows its files as text (README, "Git";
docs/FORMAT.md, section 21).

``git_setup(root)`` writes two files in the store's root folder and sets one git setting:

- ``.gitattributes``: every kind of fsstore file goes through the ``fsstore`` diff driver
  (``diff=fsstore``), is never merged line by line (``merge=binary``: two histories of a
  session cannot be merged by lines) and is never converted (``-text``: fsstore's files
  are byte-exact, CRLF conversion would damage them);
- ``.gitignore``: the files that change without carrying history (lock files, the tail
  hint, the message index, scratch files);
- ``git config diff.fsstore.textconv "fsstore textconv"`` in the repository.

Each file holds fsstore's lines in one block between two marker lines; lines outside
it are the user's and are kept as they are. Running it again changes nothing: a file
whose block is already right is not rewritten, and a setting already right is not set.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from typing import NamedTuple

from .errors import CorruptionError, GitSetupError
from .fsio import FileIO
from .textconv import TEXTCONV_COMMAND

CONFIG_KEY = "diff.fsstore.textconv"
BEGIN = "# >>> fsstore git-setup: fsstore's lines, kept by `fsstore git-setup`; yours go " \
        "outside this block"
END = "# <<< fsstore git-setup"

_ROUTED = "diff=fsstore merge=binary -text"
# Patterns are anchored in the store folder (a pattern with a slash is), so that files
# beside a store, when its folder holds more than the store, are left alone.
#: (pattern, why): every file an fsstore store holds, by kind (docs/FORMAT.md, section 1).
ATTRIBUTES = (
    ("sessions/**/*.fslog", "log and write-ahead log segments: JSON lines, one event a line"),
    ("sessions/**/*.torn", "bytes a writer set aside from a torn tail"),
    ("sessions/**/*.snap", "state snapshots: sorted JSON"),
    ("sessions/**/*.ckpt", "checkpoints: sorted JSON"),
    ("sessions/**/*.npy", "vector shards and their deleted rows: a summary"),
    ("sessions/**/*.docs", "the documents of a vector shard: one a line"),
    ("sessions/**/blobs/**", "attachments: digest, media type, and the text of text ones"),
    ("sessions/**/lease", "execution leases: sorted JSON"),
    ("/fsstore.json", "the store manifest: sorted JSON"),
    ("/workspaces/*.json", "workspaces: sorted JSON"),
    ("sessions/**/*.json", "session and collection manifests, repair records: sorted JSON"),
    ("sessions/**/messages.idx", "the message index (ignored below), should you track it"),
    ("sessions/**/tail.hint", "the tail hint (ignored below)"),
    ("sessions/**/writer.lock", "the writer lock (ignored below)"),
)
#: (pattern, why): files that change without carrying history; a clone does without them.
IGNORED = (
    ("/sessions/*/writer.lock", "the writer lock: a file to lock (its token record is kept "
     "in the lease file and the log too)"),
    ("/workspaces/lock", "the workspace writers' lock"),
    ("/sessions/**/tail.hint", "names the newest segment: a hint, checked before use, "
     "rewritten at each new segment"),
    ("/sessions/*/messages.idx", "a cache of the log, rewritten as it grows; rebuilt when "
     "missing"),
    ("/.stats-cache", "what the last `fsstore stats` counted: a cache, rebuilt when "
     "missing"),
    ("/catalog", "the store catalog: a cache of listings, rebuilt when missing"),
    ("/catalog.log", "what changed since the catalog was written: part of that cache"),
    ("/catalog.log.new", "(the same, while a rebuild replaces it)"),
    ("/search/", "the search cache: copies of every session's collections, rebuilt when "
     "missing"),
    ("/.tmp-*", "writes awaiting their rename (a crash may leave them)"),
    ("/workspaces/.tmp-*", "(the same)"),
    ("/sessions/**/.tmp-*", "(the same)"),
    ("/sessions/**/.trash-*", "sessions and collections being deleted"),
)


class GitSetupReport(NamedTuple):
    """What :func:`git_setup` did: the files it wrote (or found right), and the setting."""

    root: str
    written: list[str]  # files created or updated
    unchanged: list[str]  # files whose block was already right
    config_line: str  # the git config command that routes diffs through textconv
    config_set: bool | None  # True: set now; False: already set; None: not run (print)

    def lines(self) -> list[str]:
        """The report for people."""
        found = [f"wrote {path}" for path in self.written]
        found += [f"unchanged {path}" for path in self.unchanged]
        if self.config_set is None:
            found.append(f"run this in the repository: {self.config_line}")
        elif self.config_set:
            found.append(f"set: {self.config_line}")
        else:
            found.append(f"already set: {self.config_line}")
        return found


def block(entries: tuple[tuple[str, str], ...], suffix: str = "") -> str:
    """fsstore's block of a .gitattributes or .gitignore file."""
    lines = [BEGIN]
    for pattern, why in entries:
        lines.append(f"# {why}")
        lines.append(f"{pattern} {suffix}".rstrip())
    lines.append(END)
    return "\n".join(lines) + "\n"


def with_block(current: str, new_block: str, path: str) -> str:
    """``current`` (a file's text) with fsstore's block replaced by ``new_block``, or
    ``new_block`` appended when there is none. The user's lines are kept as they are.
    CorruptionError (nothing written) when a marker is there without the other."""
    lines = current.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.rstrip("\r\n") == BEGIN]
    ends = [i for i, line in enumerate(lines) if line.rstrip("\r\n") == END]
    if not starts and not ends:
        if current and not current.endswith("\n"):
            current += "\n"
        return current + ("\n" if current else "") + new_block
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise CorruptionError(f"fsstore's block is not whole (one line {BEGIN!r}, then one "
                              f"line {END!r}); fix the file by hand, then run "
                              "`fsstore git-setup` again", path=path)
    return "".join(lines[:starts[0]]) + new_block + "".join(lines[ends[0] + 1:])


def git_setup(root: str, *, command: str = TEXTCONV_COMMAND, configure: bool = True,
              io: FileIO | None = None) -> GitSetupReport:
    """Set up the store at ``root`` for git (see the module docstring). With
    ``configure`` false, git is not run: the report's ``config_line`` says what to run.

    Raises GitSetupError when ``configure`` is true and ``root`` is not inside a git
    work tree (or git is not installed), before anything is written; CorruptionError when
    a file's block is not whole (nothing written)."""
    io = io or FileIO()
    root = os.path.abspath(root)
    config_line = f"git config {CONFIG_KEY} {shlex.quote(command)}"
    if configure:
        _check_work_tree(root)
    planned = []
    for name, entries, suffix in ((".gitattributes", ATTRIBUTES, _ROUTED),
                                  (".gitignore", IGNORED, "")):
        path = os.path.join(root, name)
        try:
            raw = io.read_file(path, 1 << 20)
        except FileNotFoundError:
            raw = b""
        current = raw.decode("utf-8", "surrogateescape")
        planned.append((path, raw, with_block(current, block(entries, suffix), path)))
    written, unchanged = [], []
    for path, raw, text in planned:
        data = text.encode("utf-8", "surrogateescape")
        if data == raw:
            unchanged.append(path)
        else:
            io.atomic_write(path, data)
            written.append(path)
    config_set: bool | None = None
    if configure:
        config_set = _set_config(root, command)
    return GitSetupReport(root, written, unchanged, config_line, config_set)


def _git(root: str, *args: str) -> subprocess.CompletedProcess[str]:
    git = shutil.which("git")
    if git is None:
        raise GitSetupError("git is not installed (not on PATH); install it, or run "
                                "`fsstore git-setup --print` and set the line it prints")
    return subprocess.run([git, "-C", root, *args], capture_output=True, text=True,
                          check=False)


def _check_work_tree(root: str) -> None:
    found = _git(root, "rev-parse", "--is-inside-work-tree")
    if found.returncode != 0 or found.stdout.strip() != "true":
        raise GitSetupError(f"{root} is not inside a git work tree; run `git init` "
                                "there (or in a folder above it) first")


def _set_config(root: str, command: str) -> bool:
    current = _git(root, "config", "--local", "--get", CONFIG_KEY)
    if current.returncode == 0 and current.stdout.rstrip("\n") == command:
        return False
    done = _git(root, "config", "--local", CONFIG_KEY, command)
    if done.returncode != 0:
        raise GitSetupError(f"git config {CONFIG_KEY} failed in {root}: "
                      f"{done.stderr.strip() or done.returncode}")
    return True


__all__ = ["ATTRIBUTES", "CONFIG_KEY", "IGNORED", "TEXTCONV_COMMAND", "GitSetupReport",
           "git_setup"]
