"""``fsstore collections`` and ``fsstore search``: a session's vector collections, and
exact search across the sessions of a store."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import InvalidQuery
from ._common import add_command, dumps, human_bytes, store_from, summarize


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    collections = add_command(
        commands, "collections", "list a session's vector collections",
        "fsstore collections SESSION")
    collections.add_argument("session", metavar="SESSION")
    collections.set_defaults(run=run_collections)

    search = add_command(
        commands, "search", "search a vector collection across sessions, nearest first",
        "fsstore search memory --like SESSION:m5 -k 3 --filter '{\"role\": \"user\"}'",
        description="Search the collection NAME of every session that has one (or of the "
                    "--session ones), exactly, and print the nearest documents. The query "
                    "is a vector given as JSON, or the embedding of a stored document.")
    search.add_argument("collection", metavar="NAME")
    query = search.add_mutually_exclusive_group(required=True)
    query.add_argument("--vector", metavar="JSON", help="the query vector, e.g. '[0.1, 0.2]'")
    query.add_argument("--like", metavar="SESSION:ID",
                       help="use the embedding of document ID of SESSION's collection")
    search.add_argument("-k", type=int, default=10, help="how many results (default 10)")
    search.add_argument("--metric", choices=("cosine", "dot", "euclidean"), default=None,
                        help="default: the collection's")
    search.add_argument("--filter", metavar="JSON", default=None,
                        help='conditions on metadata, "$seq" or "$turn" (see VectorFilter)')
    bound = search.add_mutually_exclusive_group()
    bound.add_argument("--min-score", type=float, default=None, metavar="SCORE",
                       help="keep results scoring at least SCORE (cosine, dot)")
    bound.add_argument("--max-distance", type=float, default=None, metavar="DISTANCE",
                       help="keep results at most DISTANCE away (euclidean)")
    search.add_argument("--session", action="append", default=None, metavar="SESSION",
                        help="search only this session (repeatable)")
    search.add_argument("--json", action="store_true", help="one JSON object per result")
    search.set_defaults(run=run_search)


def run_collections(args: argparse.Namespace) -> int:
    infos = store_from(args).read_session(args.session).collections()
    if not infos:
        print(f"session {args.session} has no vector collections")
        return 0
    print(f"{'NAME':<20} {'DIM':>5} {'DTYPE':<8} {'METRIC':<10} {'COUNT':>9} {'SHARDS':>6} "
          f"{'DELETED':>7} {'UNSEALED':>8} {'SIZE':>10}")
    for info in infos:
        print(f"{info.name:<20} {info.dim:>5} {info.dtype:<8} {info.metric:<10} "
              f"{info.count:>9,} {info.shards:>6} {info.deleted:>7} {info.unsealed:>8} "
              f"{human_bytes(info.bytes):>10}")
    return 0


def _json_arg(text: str, what: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidQuery(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidQuery(f"{what} nests too deep to read: flatten it") from None


def run_search(args: argparse.Namespace) -> int:
    store = store_from(args)
    if args.like is not None:
        session_id, _, doc_id = args.like.partition(":")
        if not doc_id:
            raise InvalidQuery(f"--like takes SESSION:ID, not {args.like!r}")
        (document,) = store.read_session(session_id).collection(args.collection).get([doc_id])
        if document is None:
            raise InvalidQuery(f"no document {doc_id!r} in {session_id}/{args.collection}")
        query = document.embedding
    else:
        query = _json_arg(args.vector, "--vector")
    conditions: Any = None if args.filter is None else _json_arg(args.filter, "--filter")
    results = store.search(args.collection, query, args.k, metric=args.metric,
                           filter=conditions, min_score=args.min_score,
                           max_distance=args.max_distance, sessions=args.session)
    for result in results:
        if args.json:
            print(dumps(result._asdict()))
            continue
        content = summarize(result.content or "", 70)
        print(f"{result.score:9.4f}  {result.session_id}:{result.id}  {content}")
    return 0
