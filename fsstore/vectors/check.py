"""``verify`` of a vector collection: read every file of it whole and report each problem
as a Finding. It changes nothing and never raises: whatever the files hold, every
failure becomes a finding naming the file (docs/FORMAT.md, section 15.7)."""

from __future__ import annotations

import os
from typing import Any

from .. import layout
from ..errors import CorruptionError, Finding, FormatVersionError, FsStoreError
from ..fsio import FileIO
from ..log import LogReader
from .collection_chain import CollectionChain
from .collection_file import (
    CollectionManifest,
    PinnedState,
    missing_are_newest,
    newer_than,
    read_manifest,
)
from .shard_files import (
    DTYPES,
    DocsFile,
    decode_record,
    file_crc,
    open_vectors,
    read_deleted,
)

_ROWS_CHECKED = 1 << 22  # rows of a shard whose ids, content and metadata are decoded


def check_collection(io: FileIO, path: str, chain: CollectionChain | None = None
                     ) -> list[Finding]:
    """Read every file of the collection at ``path`` whole and report each problem:
    a manifest that does not decode, shard files missing, damaged (size or crc32c
    differs from the manifest's record) or malformed, rows that do not decode, a damaged
    log or one whose records do not decode, files no state names. With ``chain`` (a
    chained session's), also the manifest's MAC, every file of the state against its
    SHA-256 and the WAL's chain. Changes nothing."""
    try:
        return _check(io, path, chain)
    except (FsStoreError, OSError, ValueError) as exc:  # a safety net: report, go on
        return [Finding("problem", getattr(exc, "path", None) or path, None,
                        f"cannot be checked ({type(exc).__name__}: {exc})")]


def _problem(exc: Exception, path: str) -> Finding:
    return Finding("problem", getattr(exc, "path", None) or path,
                   getattr(exc, "offset", None), _reason(exc))


def _reason(exc: Exception) -> str:
    # A CorruptionError's str() starts with its path, which a Finding prints already.
    reason = getattr(exc, "reason", None)
    return reason if isinstance(reason, str) else str(exc)


def _check(io: FileIO, path: str, chain: CollectionChain | None) -> list[Finding]:
    manifest_path = os.path.join(path, layout.COLLECTION_MANIFEST)
    try:  # as a reader does: nothing is read through a symlinked folder
        io.check_folders(path, os.path.join(path, layout.WAL_DIR))
    except FsStoreError as exc:
        return [_problem(exc, path)]
    try:
        decoded, raw = read_manifest(io, manifest_path)
    except FileNotFoundError:
        return [Finding("problem", manifest_path, None, "missing: without it the folder is "
                        "not a collection; restore it from a backup or drop the collection")]
    except (FsStoreError, OSError) as exc:
        return [_problem(exc, manifest_path)]
    findings: list[Finding] = []
    try:
        newer = newer_than(decoded, io.listdir(path))
    except (FsStoreError, OSError) as exc:
        return [_problem(exc, path)]
    if newer:
        return [Finding("problem", manifest_path, None, f"older than the files beside it "
                        f"({', '.join(newer[:3])} and others its writer had not made yet): "
                        "a restored or foreign collection.json; restore the matching one "
                        "from a backup")]
    wal_path = os.path.join(path, layout.WAL_DIR)
    reader = LogReader(io, wal_path)
    if chain is not None:
        try:
            chain.check_manifest(raw, manifest_path)
        except CorruptionError as exc:
            findings.append(_problem(exc, manifest_path))
        reader.chain = chain.wal_rules(raw)
    try:
        tail = reader.tail()
        log_start, head = tail.log_start, tail.head
    except (FsStoreError, OSError) as exc:
        findings.append(_problem(exc, wal_path))
        log_start, head = 1, None
    state, notes = _readable_state(io, path, decoded, log_start, head)
    findings.extend(notes)
    findings.extend(_check_state(io, path, decoded, state))
    if chain is not None:
        findings = _one_a_file(findings, _check_bound(io, path, chain, raw, state, reader,
                                                      log_start, head))
    if head is not None:
        if state.wal_seq + 1 < log_start or state.wal_seq > head:
            findings.append(Finding(
                "problem", wal_path, None, f"holds seqs {log_start} to {head}, but the "
                f"manifest's shards hold everything up to {state.wal_seq}: records are "
                "missing"))
        try:
            findings.extend(reader.check())
            for event in reader.events(after_seq=state.wal_seq):
                try:
                    decode_record(event.kind, event.data,
                                  decoded.dim * DTYPES[decoded.dtype].itemsize)
                except ValueError as exc:
                    findings.append(Finding("problem", wal_path, None, f"log record "
                                            f"{event.seq} is malformed ({exc})"))
        except (FsStoreError, OSError) as exc:
            if not any(f.level == "problem" for f in findings):
                findings.append(_problem(exc, wal_path))
    live = decoded.named_files() | decoded.retired_names() | {layout.COLLECTION_MANIFEST,
                                                              layout.WAL_DIR}
    try:
        names = sorted(io.listdir(path))
    except (FsStoreError, OSError) as exc:
        return [*findings, _problem(exc, path)]
    for name in names:
        if name not in live:
            findings.append(Finding("note", os.path.join(path, name), None,
                                    "not named by the manifest (left by an interrupted seal "
                                    "or merge); the next writer removes it"))
    return findings


def _check_bound(io: FileIO, path: str, chain: CollectionChain, raw: dict[str, Any],
                 state: PinnedState, reader: LogReader, log_start: int, head: int | None
                 ) -> list[Finding]:
    """A chained session's collection: each file of ``state`` against the SHA-256 the
    manifest records (the one pass that hashes the shards: readers do not), and the
    WAL's value after the state's ``wal_seq``."""
    findings = []
    for entry in state.shards:
        for name in entry.files():
            try:
                chain.check_files(io, path, raw, [name])
            except FileNotFoundError:
                pass  # reported missing already
            except (FsStoreError, OSError) as exc:
                findings.append(_problem(exc, os.path.join(path, name)))
    if head is not None:
        try:
            chain.check_wal(reader, raw, state.generation, state.wal_seq, log_start)
        except (FsStoreError, OSError) as exc:
            findings.append(_problem(exc, reader.path))
    return findings


def _one_a_file(findings: list[Finding], bound: list[Finding]) -> list[Finding]:
    """``findings`` and the chain's ``bound`` ones, one problem a file: a file found
    damaged already (which also fails its SHA-256, as any changed file does) gets the
    chain's verdict added to its finding, not a second finding."""
    out = list(findings)
    at = {f.path: index for index, f in enumerate(out) if f.level == "problem"}
    for finding in bound:
        index = at.get(finding.path)
        if index is None:
            out.append(finding)
        else:
            out[index] = out[index]._replace(
                message=f"{out[index].message}; and {finding.message}")
    return out


def _whole(io: FileIO, path: str, state: PinnedState) -> bool:
    """Whether every file of ``state`` is there with the size and crc32c recorded."""
    for entry in state.shards:
        expected = [(entry.vectors_bytes, entry.vectors_crc), (entry.docs_bytes,
                                                               entry.docs_crc)]
        for name, record in zip(entry.files(), expected, strict=False):
            try:
                if file_crc(io, os.path.join(path, name)) != record:
                    return False
            except (FsStoreError, OSError):
                return False
        if entry.deleted is not None:
            try:
                read_deleted(io, os.path.join(path, entry.deleted), entry.rows)
            except (FsStoreError, OSError):
                return False
    return True


def _readable_state(io: FileIO, path: str, decoded: CollectionManifest, log_start: int,
                    head: int | None) -> tuple[PinnedState, list[Finding]]:
    """The state a reader opens (section 15.8): the current one, unless files of it are
    missing, or the log ends before its ``wal_seq``, and a pinned earlier state is whole,
    as in a copy taken during a seal."""
    states = decoded.states()
    current = states[0]
    names = io.listdir(path)
    missing = [name for entry in current.shards for name in entry.files()
               if name not in names]
    # A copy may take wal/ before collection.json: its log then ends before the current
    # state's wal_seq. A seal whose documents were all deleted again before it ran makes
    # no file, so nothing of the state is missing: readers still take the pinned state
    # (as they do for any state the log does not reach), and so does verify.
    log_short = head is not None and current.wal_seq > head
    if head is None or not (log_short or (missing and missing_are_newest(names, missing))):
        return current, []
    for index, state in enumerate(states[1:], 1):
        if state.wal_seq + 1 >= log_start and state.wal_seq <= head and \
                _whole(io, path, state):
            if any(s.bulk for s in states[:index]):
                break  # readers refuse: the documents of a bulk upsert are missing
            notes = [Finding(
                "note", os.path.join(path, name), None,
                f"missing, as in a copy taken while a seal or merge wrote it: readers use "
                f"the pinned state of generation {state.generation}, which holds the same "
                "documents; the next seal rewrites the manifest") for name in missing]
            if log_short:
                notes.append(Finding(
                    "note", os.path.join(path, layout.WAL_DIR), None,
                    f"ends at seq {head}, before the {current.wal_seq} the manifest's "
                    "shards hold, as in a copy that took wal/ before collection.json: "
                    f"readers use the pinned state of generation {state.generation} and "
                    "the log after it; the next seal rewrites the manifest"))
            return state, notes
    return current, []


def _check_state(io: FileIO, path: str, decoded: CollectionManifest,
                 state: PinnedState) -> list[Finding]:
    findings: list[Finding] = []
    dtype = DTYPES[decoded.dtype]
    for entry in state.shards:
        damaged = False
        vec_name, docs_name = entry.files()[:2]
        for name, size_expected, crc_expected in (
                (vec_name, entry.vectors_bytes, entry.vectors_crc),
                (docs_name, entry.docs_bytes, entry.docs_crc)):
            file_path = os.path.join(path, name)
            try:
                size, crc = file_crc(io, file_path)
            except FileNotFoundError:
                findings.append(Finding("problem", file_path, None, "missing, though the "
                                        "manifest names it; restore it from a backup"))
                damaged = True
                continue
            except (FsStoreError, OSError) as exc:
                findings.append(_problem(exc, file_path))
                damaged = True
                continue
            if (size, crc) != (size_expected, crc_expected):
                findings.append(Finding("problem", file_path, None, f"{size} bytes with "
                                        f"crc32c {crc:#010x}; the manifest recorded "
                                        f"{size_expected} bytes, crc32c {crc_expected:#010x}: "
                                        "damaged; restore it from a backup"))
                damaged = True
        if entry.deleted is not None:
            deleted_path = os.path.join(path, entry.deleted)
            try:
                rows = read_deleted(io, deleted_path, entry.rows)
                if len(rows) != entry.deleted_rows:
                    findings.append(Finding("problem", deleted_path, None, f"holds "
                                            f"{len(rows)} rows; the manifest recorded "
                                            f"{entry.deleted_rows}"))
            except FileNotFoundError:
                findings.append(Finding("problem", deleted_path, None, "missing, though the "
                                        "manifest names it; restore it from a backup"))
            except (FsStoreError, OSError) as exc:
                findings.append(_problem(exc, deleted_path))
        if damaged:
            continue
        docs_path = os.path.join(path, docs_name)
        try:
            open_vectors(io, os.path.join(path, vec_name), entry.rows, decoded.dim, dtype)
            docs = DocsFile(io, docs_path, entry.rows)
            problems = docs.check()
            findings.extend(Finding("problem", docs_path, None, p) for p in problems)
            if not problems:
                for row in range(min(entry.rows, _ROWS_CHECKED)):
                    docs.id_of(row)
                    docs.decoded("content", row)
                    docs.decoded("meta", row)
        except (CorruptionError, FormatVersionError) as exc:
            findings.append(_problem(exc, docs_path))
        except (FsStoreError, OSError) as exc:
            findings.append(_problem(exc, docs_path))
    return findings
