"""``fsstore sql``: a DuckDB query over the store's events, messages, tool calls and usage."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from typing import Any

_EXAMPLE = ("fsstore sql \"SELECT model, sum(output_tokens) FROM usage GROUP BY model\"")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sql = commands.add_parser(
        "sql", help="run a SQL query (DuckDB) over the store's events, messages, tool calls "
                    "and usage",
        description="Run QUERY (DuckDB's SQL) over the tables events, messages, tool_calls "
                    "and usage of every session (each with a session column; README, "
                    "'Parquet and SQL'). The tables are a Parquet export kept as a cache "
                    "($FSSTORE_SQL_CACHE, else ~/.cache/fsstore/sql), brought up to the "
                    "store before each query with the records appended since the last one. "
                    "Sessions that cannot be read are left out and named on stderr (exit "
                    "status 1). Needs: pip install 'fsstore[sql]'.",
        epilog=f"example:\n  {_EXAMPLE}", formatter_class=argparse.RawDescriptionHelpFormatter)
    sql.add_argument("query", metavar="QUERY", help="the SQL query")
    sql.add_argument("--format", choices=("table", "csv", "json"), default="table",
                     help="an aligned table (default), CSV with a header, or a JSON array "
                          "of objects")
    sql.add_argument("--cache", metavar="DIR", default=None,
                     help="keep the Parquet cache in DIR (default: see above)")
    sql.add_argument("--direct", action="store_true",
                     help="build the tables in memory from the logs for this query alone "
                          "(no cache written)")
    sql.set_defaults(run=run_sql)


def run_sql(args: argparse.Namespace) -> int:
    from .. import sql as fsql
    from ..errors import SkippedSessions
    from ._common import dumps, plain, store_from

    store = store_from(args)
    skipped: dict[str, str] = {}
    try:
        table = fsql.query(store, args.query, cache_dir=args.cache, direct=args.direct)
    except SkippedSessions as exc:
        table, skipped = exc.table, exc.skipped
    names = list(table.column_names)
    rows = _rows(table)
    if args.format == "json":
        print(dumps([dict(zip(names, map(_value, row), strict=True)) for row in rows],
                    indent=1))
    elif args.format == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(names)
        for row in rows:
            writer.writerow(["" if value is None else _cell(value) for value in row])
    else:
        cells = [[plain(_cell(value)) for value in row] for row in rows]
        widths = [max([len(name), *(len(line[i]) for line in cells)])
                  for i, name in enumerate(names)]
        for line in [names, ["-" * width for width in widths], *cells]:
            print("  ".join(cell.ljust(width) for cell, width in
                            zip(line, widths, strict=True)).rstrip())
        print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    for session_id, why in sorted(skipped.items()):
        print(f"fsstore: left out session {session_id}, which cannot be read: {why} (run "
              "`fsstore verify` for details)", file=sys.stderr)
    return 1 if skipped else 0


def _rows(table: Any) -> list[tuple[Any, ...]]:
    """The rows of a result, by position (a query may name two columns alike). A time
    Python's datetime cannot hold (past the year 9999: a record's ts far in the future)
    or date is its ISO text, where ``to_pylist`` would raise."""
    import pyarrow as pa

    columns = []
    for column in table.columns:
        try:
            columns.append(column.to_pylist())
        except (OverflowError, ValueError):
            if pa.types.is_date32(column.type):
                columns.append([_iso_day(value) for value in
                                column.cast(pa.int32()).to_pylist()])
                continue
            if not pa.types.is_timestamp(column.type):
                raise
            columns.append([_iso_time(value, column.type) for value in
                            column.cast(pa.int64()).to_pylist()])
    return list(zip(*columns, strict=True)) if columns else []


#: 400 years of the Gregorian calendar: days repeat with this period.
_CYCLE_DAYS = 146_097


def _iso_day(value: int | None) -> str | None:
    from ..usage import day_of

    return None if value is None else day_of(value * 86_400)


def _iso_time(value: int | None, kind: Any) -> str | None:
    import datetime

    if value is None:
        return None
    per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[kind.unit]
    cycles, rest = divmod(value, _CYCLE_DAYS * 86_400 * per_second)
    moment = datetime.datetime(1970, 1, 1) + datetime.timedelta(
        microseconds=rest * 1_000_000 // per_second)
    zone = "+00:00" if kind.tz is not None else ""
    return f"{moment.year + 400 * cycles}-{moment:%m-%dT%H:%M:%S.%f}{zone}"


def _value(value: Any) -> Any:
    """A DuckDB value as JSON holds it: dates and times as ISO text, decimals as floats."""
    import datetime
    import decimal

    if isinstance(value, (datetime.date, datetime.datetime, datetime.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):  # DuckDB's sum of integers is a HUGEINT
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    value = _value(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)
