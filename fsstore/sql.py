"""SQL over a store with DuckDB: ``query(store, "SELECT ...")``, ``fsstore sql``.

The tables are the Parquet export's (``parquet_export.py``, README "Parquet and SQL"):
``events``, ``messages``, ``tool_calls`` and ``usage``, each with a ``session`` column.
A query runs over a Parquet export kept as a cache: before each query the cache is
brought up to the store incrementally (only the records appended since the last query
are exported), then DuckDB reads its files. That was measured against building Arrow
tables from the logs for every query (``direct=True``, kept for a one-off query of a
store whose cache cannot be written): the first query costs about the same either way
(both decode every record once), every later one costs the new records plus DuckDB's
scan of Parquet, not a re-read of the whole history (tools/bench_parquet.py; figures in
README).

The cache is ``$FSSTORE_SQL_CACHE``, else ``$XDG_CACHE_HOME/fsstore/sql`` (or
``~/.cache/fsstore/sql``), a folder per store (named after a hash of the store's real
path), or ``cache_dir`` given. It is only a cache: deleting it costs one full export.
The default one's folder is made readable by its owner alone (mode 0700): it holds
the sessions' content.
Queries of one store serialise their cache update on the export's ``flock`` of it.

The cache's files are registered with DuckDB as pyarrow datasets, then DuckDB's file
access is turned off and its configuration locked: a query reads the tables but cannot
write the store or the cache (``COPY ... TO``, ``ATTACH``), read other files, or install
or load extensions.

Needs duckdb and pyarrow (``pip install 'fsstore[sql]'``), imported here only when used.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .errors import InvalidSql, MissingExtra, SkippedSessions
from .parquet_export import TABLES, ParquetExportReport, export_parquet, require_pyarrow

if TYPE_CHECKING:
    from .store import Store

def require_duckdb() -> Any:
    """The duckdb module; MissingExtra naming the extra when it is not installed."""
    try:
        import duckdb
    except ImportError as exc:
        raise MissingExtra(f"fsstore sql needs duckdb, which is not installed ({exc}): "
                           "pip install 'fsstore[sql]'") from None
    require_pyarrow()
    return duckdb


def default_cache_dir(store: Store) -> str:
    """Where the Parquet cache of ``store`` is kept (module docstring)."""
    base = os.environ.get("FSSTORE_SQL_CACHE")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"),
                                                               ".cache")
        base = os.path.join(xdg, "fsstore", "sql")
    digest = hashlib.sha256(os.path.realpath(store.path).encode()).hexdigest()[:16]
    return os.path.join(base, digest)


class Catalog:
    """A DuckDB connection with the store's tables as views. ``refresh`` (the cache) or
    ``direct`` (Arrow tables from the logs) says where they come from; ``report`` is
    the cache update's (None for ``direct``). Use as a context manager, or ``close``."""

    def __init__(self, store: Store, *, cache_dir: str | os.PathLike[str] | None = None,
                 direct: bool = False, sessions: Iterable[str] | None = None) -> None:
        duckdb = require_duckdb()
        self.connection = duckdb.connect()
        self.report: ParquetExportReport | None = None
        try:
            if direct:
                from .parquet_export import arrow_tables

                for table, data in arrow_tables(store, sessions).items():
                    self.connection.register(table, data)
            else:
                if cache_dir is not None:
                    folder = os.fspath(cache_dir)
                else:
                    folder = default_cache_dir(store)
                    # The cache holds the sessions' content, under a folder other users
                    # may read (~/.cache): only its owner may enter it, as a private
                    # store's own folder would allow.
                    os.makedirs(folder, mode=0o700, exist_ok=True)
                self.report = export_parquet(store, folder, sessions)
                self._views(folder)
            # The tables are registered: the query reads them through this process and
            # needs no file of its own. It cannot write the store or the cache (COPY TO,
            # ATTACH, an extension's INSTALL or LOAD), read other files, or turn this
            # back on (README, "Parquet and SQL").
            self.connection.execute("SET enable_external_access = false")
            self.connection.execute("SET lock_configuration = true")
        except BaseException:
            self.connection.close()
            raise

    def _views(self, folder: str) -> None:
        import glob

        import pyarrow.dataset as ds

        from .parquet_rows import table_schemas

        pa = require_pyarrow()
        # The session is the partition's text as it is: never a number or date guessed
        # from it, nor NULL for a session named like Hive's null partition.
        partitioning = ds.HivePartitioning(pa.schema([pa.field("session", pa.string())]),
                                           null_fallback="\0", segment_encoding="none")
        for table in TABLES:
            root = os.path.join(folder, table)
            schema = table_schemas(pa)[table].insert(0, pa.field("session", pa.string()))
            # Only the parts: a temp file a concurrent export is writing is no table's.
            files = sorted(glob.glob(os.path.join(glob.escape(root), "session=*",
                                                  "part-*.parquet")))
            if not files:
                self.connection.register(table, schema.empty_table())
                continue
            self.connection.register(table, ds.dataset(
                files, schema=schema, format="parquet", partitioning=partitioning,
                partition_base_dir=root))

    def query(self, sql: str) -> Any:
        """Run ``sql``; its rows as a pyarrow Table. InvalidSql when DuckDB refuses it."""
        duckdb = require_duckdb()
        try:
            relation = self.connection.sql(sql)
            if relation is None:  # a statement that returns no rows (SET, CREATE ...)
                return require_pyarrow().table({})
            # duckdb 1.x calls it arrow(); 2.0 to_arrow_table()
            convert = getattr(relation, "to_arrow_table", None) or relation.arrow
            return convert()
        except duckdb.Error as exc:
            raise InvalidSql(f"DuckDB refused the query: {' '.join(str(exc).split())}"
                             ) from None

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def query(store: Store, sql: str, *, cache_dir: str | os.PathLike[str] | None = None,
          direct: bool = False) -> Any:
    """Run ``sql`` (DuckDB's dialect) over the store's tables ``events``, ``messages``,
    ``tool_calls`` and ``usage``; its rows as a pyarrow Table (``.to_pylist()`` gives
    dicts). Through the incremental Parquet cache (module docstring), or, with
    ``direct``, Arrow tables built from the logs for this query alone.

    Sessions that cannot be read are left out of the cache's tables: this raises
    SkippedSessions naming them (with the result in ``.table``), so no answer is short
    without saying so. InvalidSql for a query DuckDB refuses; MissingExtra without
    duckdb or pyarrow (``pip install 'fsstore[sql]'``)."""
    with Catalog(store, cache_dir=cache_dir, direct=direct) as catalog:
        table = catalog.query(sql)
        if catalog.report is not None and catalog.report.skipped:
            raise SkippedSessions(catalog.report.skipped, table)
        return table
