"""fsstore/sql.py and ``fsstore sql``: DuckDB over a store answers what the Python API
answers, through the Parquet cache and directly; the cache follows the store."""

from __future__ import annotations

import csv
import io
import json
import os
import sys

import pytest

import fsstore
from fsstore import sql
from fsstore.cli import main
from fsstore.errors import InvalidSql, MissingExtra

pytest.importorskip("duckdb")
pytest.importorskip("pyarrow")
sys.path.insert(0, os.path.dirname(__file__))
from test_parquet import build, run_turns  # noqa: E402

BY_KIND = "SELECT session, kind, count(*) AS n FROM events GROUP BY ALL ORDER BY ALL"
BY_MODEL = ("SELECT model, sum(input_tokens) AS input, sum(output_tokens) AS output "
            "FROM usage WHERE NOT inherited GROUP BY model ORDER BY model")
ERRORS = ("SELECT session, count(*) AS calls, count(*) FILTER (WHERE is_error) AS errors "
          "FROM tool_calls WHERE NOT deleted GROUP BY session ORDER BY session")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with fsstore.open_store(str(tmp_path_factory.mktemp("sql") / "store")) as opened:
        build(opened)
        yield opened


def expected_by_kind(store):
    found = []
    for session_id in sorted(store.session_ids()):
        kinds = store.read_session(session_id).session_stats(events_by_kind=True)
        found.extend({"session": session_id, "kind": kind, "n": n}
                     for kind, n in sorted(kinds.events_by_kind.items()))
    return found


@pytest.mark.parametrize("direct", [False, True], ids=["parquet-cache", "direct"])
def test_queries_answer_what_the_python_api_answers(store, tmp_path, direct):
    cache = None if direct else tmp_path / "cache"
    assert sql.query(store, BY_KIND, cache_dir=cache, direct=direct).to_pylist() == (
        expected_by_kind(store))
    usage = store.usage(by="model")
    assert sql.query(store, BY_MODEL, cache_dir=cache, direct=direct).to_pylist() == [
        {"model": model, "input": totals.input, "output": totals.output}
        for model, totals in sorted(usage.items())]
    expected = []
    for session_id in sorted(store.session_ids()):
        stats = store.read_session(session_id).stats()
        expected.append({"session": session_id, "calls": stats.tool_calls,
                         "errors": stats.tool_errors})
    assert sql.query(store, ERRORS, cache_dir=cache, direct=direct).to_pylist() == expected
    assert cache is None or os.listdir(cache)


def test_the_cache_follows_new_records(tmp_path):
    with fsstore.open_store(str(tmp_path / "store")) as store:
        with store.create_session("one") as session:
            run_turns(session, 1, 2)
        count = "SELECT count(*) AS n FROM events"
        assert sql.query(store, count, cache_dir=tmp_path / "c").to_pylist() == [{"n": 10}]
        with store.open_session("one") as session:
            run_turns(session, 3, 1)
        with store.create_session("2026") as session:  # an id of digits stays text
            session.append({"n": 1}, kind="note")
        assert sql.query(store, count, cache_dir=tmp_path / "c").to_pylist() == [{"n": 16}]
        assert sql.query(store, "SELECT DISTINCT session FROM events ORDER BY 1",
                         cache_dir=tmp_path / "c").to_pylist() == [
            {"session": "2026"}, {"session": "one"}]


def test_an_empty_store_has_empty_tables(tmp_path):
    with fsstore.open_store(str(tmp_path / "store")) as store:
        for table in ("events", "messages", "tool_calls", "usage"):
            found = sql.query(store, f"SELECT count(*) AS n FROM {table}",
                              cache_dir=tmp_path / "c")
            assert found.to_pylist() == [{"n": 0}]


def test_a_query_duckdb_refuses_raises_invalid_sql(store, tmp_path):
    with pytest.raises(InvalidSql, match="nope"):
        sql.query(store, "SELECT * FROM nope", cache_dir=tmp_path / "c")
    assert issubclass(InvalidSql, ValueError)


def test_without_duckdb_the_error_names_the_extra(monkeypatch, store):
    monkeypatch.setitem(sys.modules, "duckdb", None)
    with pytest.raises(MissingExtra, match=r"pip install 'fsstore\[sql\]'"):
        sql.query(store, "SELECT 1")


def cli(capsys, store, cache, *argv):
    code = main(["--store", store.path, "sql", "--cache", str(cache), *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_prints_a_table_csv_and_json(store, tmp_path, capsys):
    code, out, _ = cli(capsys, store, tmp_path / "c", BY_MODEL)
    usage = store.usage(by="model")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["model", "input", "output"]
    assert lines[-1] == f"({len(usage)} rows)"
    assert lines[2].split() == ["claude-4", str(usage["claude-4"].input),
                                str(usage["claude-4"].output)]
    code, out, _ = cli(capsys, store, tmp_path / "c", BY_MODEL, "--format", "csv")
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["model", "input", "output"] and len(rows) == len(usage) + 1
    code, out, _ = cli(capsys, store, tmp_path / "c", BY_MODEL, "--format", "json")
    assert json.loads(out) == [{"model": m, "input": t.input, "output": t.output}
                               for m, t in sorted(usage.items())]


def test_cli_names_a_refused_query_on_one_line(store, tmp_path, capsys):
    code, out, err = cli(capsys, store, tmp_path / "c", "SELEC 1")
    assert code == 2 and out == "" and err.startswith("fsstore: DuckDB refused the query")
    assert len(err.splitlines()) == 1


def test_cli_names_a_session_left_out_and_exits_1(tmp_path, capsys):
    with fsstore.open_store(str(tmp_path / "store")) as store:
        for name in ("good", "bad"):
            with store.create_session(name) as session:
                run_turns(session, 1, 3)
        log = os.path.join(store.path, "sessions", "bad", "log")
        [segment] = [name for name in os.listdir(log) if name.endswith(".fslog")]
        path = os.path.join(log, segment)
        with open(path, "r+b") as handle:
            handle.seek(os.path.getsize(path) // 2)
            byte = handle.read(1)
            handle.seek(-1, os.SEEK_CUR)
            handle.write(bytes([byte[0] ^ 0xFF]))
        code, out, err = cli(capsys, store, tmp_path / "c",
                             "SELECT DISTINCT session FROM events", "--format", "csv")
        assert code == 1 and out.split() == ["session", "good"]
        assert "left out session bad" in err and segment in err
        with pytest.raises(sql.SkippedSessions) as caught:
            sql.query(store, "SELECT count(*) AS n FROM events", cache_dir=tmp_path / "c")
        assert list(caught.value.skipped) == ["bad"]
        assert caught.value.table.to_pylist() == [{"n": 15}]


@pytest.mark.parametrize("direct", [False, True], ids=["parquet-cache", "direct"])
@pytest.mark.parametrize("statement", [
    "COPY (SELECT 1) TO '{target}'", "ATTACH '{target}' AS other", "INSTALL httpfs",
    "SELECT * FROM read_csv('{store}/store.json')"])
def test_a_query_can_neither_write_files_nor_read_others(store, tmp_path, statement,
                                                         direct):
    cache = tmp_path / "c"
    for target in (str(cache / "events" / "x.parquet"), str(tmp_path / "out.db"),
                   os.path.join(store.path, "x.csv")):
        with pytest.raises(InvalidSql, match="disabled"):
            sql.query(store, statement.format(target=target, store=store.path),
                      cache_dir=cache, direct=direct)
        assert not os.path.exists(target)
    with pytest.raises(InvalidSql):
        sql.query(store, "SET enable_external_access = true", cache_dir=cache, direct=direct)


def test_a_session_id_like_hives_null_partition_keeps_its_id(tmp_path):
    with fsstore.open_store(str(tmp_path / "store")) as store:
        for name in ("__HIVE_DEFAULT_PARTITION__", "007", "2026-01-30"):
            with store.create_session(name) as session:
                session.append({"x": 1}, kind="note")
        query = "SELECT DISTINCT session FROM events ORDER BY session"
        expected = [{"session": s} for s in sorted(store.session_ids())]
        assert sql.query(store, query, cache_dir=tmp_path / "c").to_pylist() == expected
        assert sql.query(store, query, direct=True).to_pylist() == expected


def test_cli_prints_times_past_the_year_9999(tmp_path, capsys):
    with fsstore.open_store(str(tmp_path / "store")) as store:
        with store.create_session("far") as session:
            session.append({"x": 1}, kind="note", ts=1e12)
            session.append({"x": 2}, kind="note", ts=0.0)
        code, out, err = cli(capsys, store, tmp_path / "c",
                             "SELECT seq, time, 1 AS a, 2 AS a FROM events ORDER BY seq",
                             "--format", "csv")
        assert code == 0 and err == ""
        assert out.splitlines()[1:] == ["1,33658-09-27T01:46:40.000000+00:00,1,2",
                                        "2,1970-01-01T00:00:00.000000+00:00,1,2"]


def test_usage_of_messages_far_in_the_future_or_past_is_by_day_as_the_api_says(tmp_path,
                                                                              capsys):
    with fsstore.open_store(str(tmp_path / "store")) as store:
        with store.create_session("far") as session:
            for ts in (0.0, 1e12, 253402300799.0, -86400.0 * 365):
                session.messages.append(
                    {"role": "assistant", "parts": [{"type": "text", "text": "x"}],
                     "metadata": {"model": "m", "usage": {"input": 1, "output": 2}}},
                    ts=ts)
        expected = [{"d": day, "n": totals.input}
                    for day, totals in sorted(store.usage(by="day").items())]
        assert [row["d"] for row in expected] == [
            "1969-01-01", "1970-01-01", "33658-09-27", "9999-12-31"]
        query = ("SELECT day::VARCHAR AS d, sum(input_tokens)::BIGINT AS n FROM usage "
                 "GROUP BY d ORDER BY d")
        assert sql.query(store, query, cache_dir=tmp_path / "c").to_pylist() == expected
        assert sql.query(store, query, direct=True).to_pylist() == expected
        code, out, err = cli(capsys, store, tmp_path / "c",
                             "SELECT day FROM usage ORDER BY day", "--format", "csv")
        assert (code, err) == (0, "")
        assert out.split() == ["day", "1969-01-01", "1970-01-01", "9999-12-31", "33658-09-27"]


def test_the_default_cache_is_private_to_its_owner(store, tmp_path, monkeypatch):
    monkeypatch.setenv("FSSTORE_SQL_CACHE", str(tmp_path / "caches"))
    assert sql.query(store, "SELECT count(*) AS n FROM events").to_pylist()[0]["n"] > 0
    folder = sql.default_cache_dir(store)
    assert os.path.dirname(folder) == str(tmp_path / "caches")
    assert os.stat(folder).st_mode & 0o777 == 0o700
    with fsstore.open_store(str(tmp_path / "other")) as other:
        assert sql.default_cache_dir(other) != folder
