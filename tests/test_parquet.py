"""fsstore/parquet_export.py: the Parquet folder answers what the Python API answers, an
incremental export equals a fresh one, and replaced or damaged sessions are handled as
documented (README, "Parquet and SQL")."""

from __future__ import annotations

import glob
import os
import sys

import pytest
import runlength
from crashsim import CrashSimIO

import fsstore
from fsstore.errors import MissingExtra, SessionNotFound
from fsstore.parquet_export import STATE_NAME, export_parquet, require_pyarrow

duckdb = pytest.importorskip("duckdb")
pytest.importorskip("pyarrow")

DAY = 86400.0
#: 2026-01-30, 12:00 UTC: the runs below cross a month's end.
T0 = 1_769_774_400.0
MODELS = ("gpt-5", "claude-4", "local")


def run_turns(session: fsstore.Session, first: int, count: int, *, start: float = T0,
              tag: str = "") -> None:
    """Agent turns: a user message, an assistant message with a tool call, usage and
    cost, the tool's result (every third an error), a plain tool event, turn_finished."""
    for turn in range(first, first + count):
        ts = start + turn * DAY / 2
        call = f"c{tag}{turn}"
        session.messages.append_many([
            {"role": "user", "id": f"u{tag}{turn}",
             "parts": [{"type": "text", "text": f"step {turn}"}]},
            {"role": "assistant", "id": f"a{tag}{turn}",
             "parts": [{"type": "text", "text": "calling"},
                       {"type": "tool_call", "call_id": call, "name": f"tool{turn % 2}",
                        "arguments": {"q": turn}}],
             "metadata": {"model": MODELS[turn % 3],
                          "usage": {"input": 100 + turn, "output": 10 + turn,
                                    "cached_input": turn},
                          "cost": {"amount": 0.25 * turn}}},
            {"role": "tool", "id": f"t{tag}{turn}",
             "parts": [{"type": "tool_result", "call_id": call, "output": {"n": turn},
                        "is_error": turn % 3 == 0}]},
        ], ts=ts)
        session.append({"tool": "grep", "blob": b"\x00\xff", "codes": {7: "seven"}},
                       kind="tool_event", ts=ts)
        session.finish_turn()


def build(store: fsstore.Store) -> None:
    with store.create_session("alpha") as session:
        run_turns(session, 1, 6)
        session.messages.edit({"id": "a2", "role": "assistant",
                               "parts": [{"type": "text", "text": "redone"}],
                               "metadata": {"model": "gpt-5",
                                            "usage": {"input": 500, "output": 50}}},
                              ts=T0 + 4 * DAY)
        session.messages.delete("u3", ts=T0 + 4 * DAY)
        session.set_state("plan", ["a", "b"])
    with store.create_session("beta") as session:
        run_turns(session, 1, 4, start=T0 + 3 * DAY)
    with store.fork_session("alpha", "alpha-fork") as session:
        run_turns(session, 20, 2, tag="f", start=T0 + 5 * DAY)


@pytest.fixture
def store(tmp_path):
    with fsstore.open_store(str(tmp_path / "store")) as opened:
        build(opened)
        yield opened


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A store and its export, for the tests that only read them."""
    folder = tmp_path_factory.mktemp("shared")
    with fsstore.open_store(str(folder / "store")) as opened:
        build(opened)
        export_parquet(opened, folder / "out")
        yield opened, folder / "out"


def sql(folder, query, *, rows=True):
    """Run ``query`` with each table a view over the folder (DuckDB, as README shows)."""
    con = duckdb.connect()
    for table in ("events", "messages", "tool_calls", "usage"):
        pattern = os.path.join(str(folder), table, "*", "*.parquet")
        if not glob.glob(pattern):
            continue
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{pattern}', "
                    "hive_partitioning = true, hive_types = {'session': VARCHAR})")
    result = con.sql(query)
    return result.fetchall() if rows else result.to_arrow_table().to_pylist()


def all_rows(folder, table):
    """Every row of ``table``, as dicts (through Arrow: DuckDB's own Python rows of a
    TIMESTAMPTZ need pytz)."""
    order = {"events": "session, seq", "usage": "session, seq, cost NULLS FIRST",
             "messages": "session, id", "tool_calls": "session, call_id"}[table]
    return sql(folder, f"SELECT * FROM {table} ORDER BY {order}", rows=False)


# --- the answers ---------------------------------------------------------------------------


def test_events_per_kind_match_the_session_stats(shared):
    store, out = shared
    found = {(s, k): n for s, k, n in sql(
        out, "SELECT session, kind, count(*) FROM events GROUP BY ALL")}
    expected = {}
    for session_id in store.session_ids():
        kinds = store.read_session(session_id).session_stats(events_by_kind=True)
        expected.update({(session_id, kind): n for kind, n in kinds.events_by_kind.items()})
    assert found == expected


def test_every_record_is_exported_as_the_log_holds_it(shared):
    store, out = shared
    rows = sql(out, "SELECT seq, ts, turn, kind, data FROM events "
               "WHERE session = 'beta' ORDER BY seq")
    events = list(store.read_session("beta").events(include_internal=True))
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        (e.seq, e.ts, e.turn, e.kind) for e in events]
    blob = next(r[4] for r in rows if r[3] == "tool_event")
    # What JSON has no form for, in the forms `fsstore cat` prints.
    assert '"blob":{"$base64":"AP8="}' in blob and '"codes":{"$map":[[7,"seven"]]}' in blob


def test_tokens_and_cost_by_model_match_store_usage(shared):
    store, out = shared
    # A fork's history up to its fork point is its parent's: counted once, as Store.usage.
    found = sql(out, """
        SELECT model, sum(input_tokens), sum(output_tokens), sum(cached_input_tokens),
               sum(messages), sum(cost)
        FROM usage WHERE NOT inherited GROUP BY model ORDER BY model""")
    expected = store.usage(by="model")
    assert [row[0] for row in found] == sorted(expected)
    for model, tokens_in, tokens_out, cached, messages, cost in found:
        totals = expected[model]
        assert (tokens_in, tokens_out, cached, messages) == (
            totals.input, totals.output, totals.cached_input, totals.messages)
        assert cost == pytest.approx(totals.cost.get("USD", 0.0))


def test_cost_by_month_matches_store_usage_by_day(shared):
    store, out = shared
    found = dict(sql(out, """
        SELECT strftime(day, '%Y-%m') AS month, sum(cost) FROM usage
        WHERE NOT inherited GROUP BY month"""))
    expected: dict[str, float] = {}
    for day, totals in store.usage(by="day").items():
        expected[day[:7]] = expected.get(day[:7], 0.0) + totals.cost.get("USD", 0.0)
    assert sorted(found) == sorted(expected) == ["2026-01", "2026-02"]
    for month, cost in found.items():
        assert cost == pytest.approx(expected[month])


def test_tool_error_rates_match_the_session_stats(shared):
    store, out = shared
    found = {s: (calls, errors) for s, calls, errors in sql(out, """
        SELECT session, count(*), count(*) FILTER (WHERE is_error) FROM tool_calls
        WHERE NOT deleted GROUP BY session""")}
    for session_id in store.session_ids():
        stats = store.read_session(session_id).stats()
        assert found[session_id] == (stats.tool_calls, stats.tool_errors), session_id


def test_messages_are_the_messages_api_view(shared):
    store, out = shared
    for session_id in store.session_ids():
        live = sql(out, f"""
            SELECT id, role, text, version, epoch(created), epoch(updated) FROM messages
            WHERE session = '{session_id}' AND NOT deleted ORDER BY first_seq""")
        messages = store.read_session(session_id).messages.all()
        assert [(r[0], r[1], r[2], r[3]) for r in live] == [
            (m.id, m.role, m.text, m.version) for m in messages]
        assert [(r[4], r[5]) for r in live] == [
            pytest.approx((m.created, m.updated)) for m in messages]
    [(deleted, text)] = sql(out, "SELECT id, text FROM messages WHERE deleted "
                            "AND session = 'alpha'")
    assert (deleted, text) == ("u3", "step 3")


def test_polars_reads_the_same_folder_as_duckdb(shared):
    store, out = shared
    polars = pytest.importorskip("polars")
    frame = polars.scan_parquet(str(out / "usage"), hive_partitioning=True)
    by_model = (frame.filter(~polars.col("inherited")).group_by("model")
                .agg(polars.col("output_tokens").sum()).sort("model").collect())
    assert list(by_model.iter_rows()) == sql(
        out, "SELECT model, sum(output_tokens) FROM usage WHERE NOT inherited "
        "GROUP BY model ORDER BY model")
    events = polars.scan_parquet(str(out / "events"), hive_partitioning=True)
    assert events.select(polars.len()).collect().item() == sql(
        out, "SELECT count(*) FROM events")[0][0]


# --- incremental ---------------------------------------------------------------------------


def test_incremental_export_equals_a_fresh_export(store, tmp_path):
    first = export_parquet(store, tmp_path / "inc")
    assert first.events == sum(store.read_session(s).head for s in store.session_ids())
    with store.open_session("beta") as session:
        run_turns(session, 5, 2, start=T0 + 3 * DAY)
        session.messages.edit({"id": "a1", "role": "assistant",
                               "parts": [{"type": "text", "text": "later"}]})
        session.messages.delete("t2")  # a tool result exported before
    with store.open_session("alpha") as session:
        session.messages.append({"role": "tool", "id": "late",
                                 "parts": [{"type": "tool_result", "call_id": "c4",
                                            "output": "again"}]})
    second = export_parquet(store, tmp_path / "inc", part_events=7)
    assert second.exported["alpha-fork"] == 0
    assert second.events == 2 * 5 + 2 + 1
    assert os.path.exists(tmp_path / "inc" / "events" / "session=beta" / "part-00001.parquet")
    export_parquet(store, tmp_path / "fresh")
    for table in ("events", "messages", "tool_calls", "usage"):
        assert all_rows(tmp_path / "inc", table) == all_rows(tmp_path / "fresh", table), table


def test_an_export_with_nothing_new_writes_no_part(store, tmp_path):
    export_parquet(store, tmp_path / "out")
    before = sorted(os.walk(tmp_path / "out"))
    report = export_parquet(store, tmp_path / "out")
    assert report.events == 0 and report.files == 1  # the state file
    assert sorted(os.walk(tmp_path / "out")) == before
    assert "exported 0 new records of 0 of 3 sessions" in str(report)


def test_parts_a_crashed_export_left_are_removed_before_the_next(store, tmp_path):
    export_parquet(store, tmp_path / "out")
    # A crash after a part was renamed in, before the state named it: its records are
    # exported again, and the part does not count them twice.
    partition = tmp_path / "out" / "events" / "session=beta"
    stray = partition / "part-00001.parquet"
    stray.write_bytes((partition / "part-00000.parquet").read_bytes())
    (partition / ".tmp-part-00002.parquet-1234abcd").write_bytes(b"torn")
    with store.open_session("beta") as session:
        run_turns(session, 5, 1, start=T0 + 3 * DAY)
    export_parquet(store, tmp_path / "out")
    export_parquet(store, tmp_path / "fresh")
    assert all_rows(tmp_path / "out", "events") == all_rows(tmp_path / "fresh", "events")
    assert sorted(os.listdir(partition)) == ["part-00000.parquet", "part-00001.parquet"]


def test_a_redo_after_a_crash_updates_messages_once(store, tmp_path):
    export_parquet(store, tmp_path / "out")
    state = (tmp_path / "out" / STATE_NAME).read_bytes()
    with store.open_session("beta") as session:
        session.messages.edit({"id": "u1", "role": "user",
                               "parts": [{"type": "text", "text": "edited"}]})
    export_parquet(store, tmp_path / "out")
    # As if the export crashed after its files were renamed in, before its state was.
    (tmp_path / "out" / STATE_NAME).write_bytes(state)
    export_parquet(store, tmp_path / "out")
    export_parquet(store, tmp_path / "fresh")
    for table in ("events", "messages", "tool_calls", "usage"):
        assert all_rows(tmp_path / "out", table) == all_rows(tmp_path / "fresh", table), table


# --- replaced, removed and damaged sessions ----------------------------------------------------


def test_a_session_created_again_is_exported_again_from_scratch(store, tmp_path):
    export_parquet(store, tmp_path / "out")
    store.delete_session("beta")
    with store.create_session("beta") as session:
        session.append({"n": 1}, kind="note")
    report = export_parquet(store, tmp_path / "out")
    assert "deleted and created again" in report.rebuilt["beta"]
    assert sql(tmp_path / "out", "SELECT seq, kind FROM events WHERE session = 'beta'") == [
        (1, "note")]
    assert sql(tmp_path / "out", "SELECT count(*) FROM messages WHERE session = 'beta'") == [
        (0,)]


def test_a_cleared_session_is_exported_again_from_scratch(store, tmp_path):
    export_parquet(store, tmp_path / "out")
    with store.open_session("beta") as session:
        session.clear()
        session.append({"n": 1}, kind="note")
    report = export_parquet(store, tmp_path / "out")
    assert report.rebuilt["beta"] == "its log was cleared"
    head = store.read_session("beta").head
    assert sql(tmp_path / "out", "SELECT seq, kind FROM events WHERE session = 'beta'") == [
        (head, "note")]


@pytest.mark.parametrize("grown", [False, True], ids=["same-head", "grown-since"])
def test_a_log_restored_to_an_older_copy_is_exported_again(store, tmp_path, grown):
    export_parquet(store, tmp_path / "out")
    state = tmp_path / "out" / STATE_NAME
    # The record at the last exported seq is not the one exported (a different ts).
    state.write_text(state.read_text().replace('"ts": ', '"ts": 1', 1))
    if grown:
        with store.open_session("alpha") as session:
            session.append({"n": 1}, kind="note")
    report = export_parquet(store, tmp_path / "out")
    assert len(report.rebuilt) == 1 and "is not the one exported" in next(
        iter(report.rebuilt.values()))
    export_parquet(store, tmp_path / "fresh")
    assert all_rows(tmp_path / "out", "events") == all_rows(tmp_path / "fresh", "events")


def test_an_export_of_all_sessions_removes_deleted_ones(store, tmp_path):
    export_parquet(store, tmp_path / "out")
    store.delete_session("alpha-fork")
    report = export_parquet(store, tmp_path / "out")
    assert report.removed == ["alpha-fork"]
    assert sql(tmp_path / "out", "SELECT DISTINCT session FROM events ORDER BY 1") == [
        ("alpha",), ("beta",)]


def test_named_sessions_are_exported_alone(store, tmp_path):
    report = export_parquet(store, tmp_path / "out", ["beta"])
    assert list(report.exported) == ["beta"]
    assert sorted(os.listdir(tmp_path / "out" / "events")) == ["session=beta"]


def test_an_unknown_session_is_refused_before_anything_is_written(store, tmp_path):
    with pytest.raises(SessionNotFound, match="nope"):
        export_parquet(store, tmp_path / "out", ["beta", "nope"])
    assert not os.path.exists(tmp_path / "out")


def test_a_damaged_session_is_left_out_and_named_with_where(store, tmp_path):
    export_parquet(store, tmp_path / "out")
    exported = all_rows(tmp_path / "out", "events")
    with store.open_session("beta") as session:
        run_turns(session, 5, 3, start=T0 + 3 * DAY)
    [segment] = [name for name in os.listdir(os.path.join(store.path, "sessions", "beta",
                                                         "log")) if name.endswith(".fslog")]
    path = os.path.join(store.path, "sessions", "beta", "log", segment)
    with open(path, "r+b") as handle:  # a flipped byte in the middle of the log
        handle.seek(os.path.getsize(path) // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with store.open_session("alpha") as session:
        session.append({"n": 1}, kind="note")
    report = export_parquet(store, tmp_path / "out")
    assert list(report.skipped) == ["beta"] and segment in report.skipped["beta"]
    assert "byte" in report.skipped["beta"] and "LEFT OUT" in str(report)
    # beta's files are as the last export left them; the other sessions went on.
    after = all_rows(tmp_path / "out", "events")
    assert [row for row in after if row["session"] == "beta"] == [
        row for row in exported if row["session"] == "beta"]
    assert len(after) == len(exported) + 1


def test_a_damaged_state_file_is_refused_naming_it(store, tmp_path):
    export_parquet(store, tmp_path / "out")
    (tmp_path / "out" / STATE_NAME).write_text("{not json")
    with pytest.raises(fsstore.CorruptionError, match=STATE_NAME):
        export_parquet(store, tmp_path / "out")


def test_without_pyarrow_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(MissingExtra, match=r"pip install 'fsstore\[parquet\]'"):
        require_pyarrow()
    assert issubclass(MissingExtra, ImportError)


def test_times_are_utc_timestamps_and_days_dates(shared):
    store, out = shared
    [(time, day)] = sql(out, "SELECT epoch(time), strftime(day, '%Y-%m-%d') "
                        "FROM usage WHERE session = 'beta' AND message_id = 'a1'")
    assert (time, day) == (T0 + 3.5 * DAY, "2026-02-03")


# --- crashes ---------------------------------------------------------------------------------


def test_every_crash_state_of_an_export_is_made_good_by_the_next(tmp_path):
    """A crash at any I/O call of an incremental export (what was not fsynced lost, torn,
    garbled or kept) leaves a folder the next export turns into what a fresh one writes."""
    root = tmp_path / "root"
    with fsstore.open_store(str(root / "store")) as store:
        build(store)
        export_parquet(store, root / "out")
        with store.open_session("beta") as session:
            run_turns(session, 5, 1, start=T0 + 3 * DAY)
            session.messages.delete("a1")
        export_parquet(store, tmp_path / "fresh")
    expected = {table: all_rows(tmp_path / "fresh", table) for table in
                ("events", "messages", "tool_calls", "usage")}
    io = CrashSimIO(str(root))
    states = io.record_states(tmp_path / "states")
    export_parquet(fsstore.open_store(str(root / "store"), io=io, create=False), root / "out")
    io.on_op = None
    assert len(states) > 20
    # Every state with --long; a spread of them (each variant) in the default run.
    for dest in states if runlength.LONG else states[::7]:
        with fsstore.open_store(os.path.join(dest, "store"), create=False) as copy:
            export_parquet(copy, os.path.join(dest, "out"))
        for table, rows in expected.items():
            assert all_rows(os.path.join(dest, "out"), table) == rows, (dest, table)


def test_a_vacuum_that_redacts_deleted_messages_makes_the_export_start_again(tmp_path):
    with fsstore.open_store(str(tmp_path / "store"), segment_size=4096) as store:
        with store.create_session("s") as session:
            session.messages.append({"role": "user", "id": "secret",
                                     "parts": [{"type": "text", "text": "my password"}]})
            session.messages.delete("secret")
            for number in range(40):  # seal the segments holding them
                session.append({"pad": "x" * 200, "n": number}, kind="note")
        export_parquet(store, tmp_path / "out")
        assert "my password" in str(all_rows(tmp_path / "out", "messages"))
        assert store.vacuum().removed["message_tombstones"].count == 1
        report = export_parquet(store, tmp_path / "out")
        assert "message index was replaced" in report.rebuilt["s"]
        for table in ("events", "messages"):
            assert "my password" not in str(all_rows(tmp_path / "out", table)), table
        [row] = all_rows(tmp_path / "out", "messages")
        assert (row["id"], row["deleted"], row["redacted"]) == ("secret", True, True)


def test_the_export_command_writes_parquet_for_all_or_named_sessions(store, tmp_path, capsys):
    from fsstore.cli import main
    folder = str(tmp_path / "cli-parquet")
    assert main(["--store", store.path, "export", "--format", "parquet", folder,
                 "beta"]) == 0
    assert "of 1 of 1 sessions" in capsys.readouterr().out
    assert sorted(os.listdir(os.path.join(folder, "events"))) == ["session=beta"]
    assert main(["--store", store.path, "export", "--format", "parquet", "-o", folder,
                 "--all"]) == 0
    capsys.readouterr()
    assert sorted(os.listdir(os.path.join(folder, "events"))) == [
        "session=alpha", "session=alpha-fork", "session=beta"]
    # neither sessions nor --all, or options of export files: refused, nothing written
    before = sorted(os.walk(folder))
    for argv in (["export", "--format", "parquet", folder],
                 ["export", "--format", "parquet", folder, "--all", "--zstd"],
                 ["export", "--format", "parquet"]):
        assert main(["--store", store.path, *argv]) == 2
        assert "fsstore: " in capsys.readouterr().err
    assert sorted(os.walk(folder)) == before


@pytest.mark.parametrize("change", [{"next_part": -5}, {"seq": "7"}, {"seq": None},
                                    {"ts": "x"}, {"uid": 5}], ids=str)
def test_a_forged_state_entry_is_refused_and_nothing_is_removed(store, tmp_path, change):
    import json

    export_parquet(store, tmp_path / "out")
    state_path = tmp_path / "out" / STATE_NAME
    body = json.loads(state_path.read_text())
    body["sessions"]["alpha"].update(change)
    state_path.write_text(json.dumps(body))
    before = sorted(glob.glob(str(tmp_path / "out" / "**"), recursive=True))
    with pytest.raises(fsstore.CorruptionError, match=STATE_NAME):
        export_parquet(store, tmp_path / "out")
    assert sorted(glob.glob(str(tmp_path / "out" / "**"), recursive=True)) == before


def test_a_state_naming_a_path_for_a_session_is_refused(store, tmp_path):
    import json

    export_parquet(store, tmp_path / "out")
    state_path = tmp_path / "out" / STATE_NAME
    body = json.loads(state_path.read_text())
    body["sessions"]["../../elsewhere"] = body["sessions"]["alpha"]
    state_path.write_text(json.dumps(body))
    with pytest.raises(fsstore.CorruptionError, match="elsewhere"):
        export_parquet(store, tmp_path / "out")


def test_event_data_json_is_the_printable_form_of_every_value():
    import json

    from fsstore.cli._common import printable
    from fsstore.parquet_rows import _json

    deep: dict = {}
    node = deep
    for _ in range(120):
        node["a"] = {}
        node = node["a"]
    for value in ({"a": "\x00\u2028é", "b": [1, 2.5, True, None, {"c": -3}]},
                  {"big": 2**64 - 1, "neg": -2**63, "f": 1e300, "g": -0.0},
                  {"nan": float("nan"), "inf": [float("-inf")]}, {"b": b"\x00\xff"},
                  {"m": {1: "one", b"k": 2}}, deep, [], {}, "text", 5, None):
        assert json.loads(_json(value)) == printable(value)


def test_an_export_under_a_file_is_refused_naming_it(store, tmp_path):
    (tmp_path / "afile").write_text("x")
    for target in (tmp_path / "afile", tmp_path / "afile" / "out"):
        with pytest.raises(fsstore.InvalidSetting, match="afile is not a folder"):
            export_parquet(store, target)
    assert (tmp_path / "afile").read_text() == "x"


def test_two_processes_exporting_into_one_folder_take_turns(store, tmp_path):
    import subprocess

    command = [sys.executable, "-m", "fsstore", "--store", store.path, "export",
               "--format", "parquet", str(tmp_path / "out"), "--all"]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    # One wrote everything, the other found nothing new: no record twice.
    assert sorted(int(out.split()[1]) for out, _ in outputs) == [
        0, sum(store.read_session(s).head for s in store.session_ids())]
    export_parquet(store, tmp_path / "fresh")
    for table in ("events", "messages", "tool_calls", "usage"):
        assert all_rows(tmp_path / "out", table) == all_rows(tmp_path / "fresh", table)


def test_the_export_command_refuses_standard_output_for_parquet(store, tmp_path, capsys,
                                                                monkeypatch):
    from fsstore.cli import main

    monkeypatch.chdir(tmp_path)
    for argv in (["-", "--all"], ["-o", "-", "--all"]):
        assert main(["--store", store.path, "export", "--format", "parquet", *argv]) == 2
        assert "not standard output" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "-")


def test_a_folder_another_export_makes_at_the_same_moment_is_taken_as_made(
        store, tmp_path, monkeypatch):
    """Two exports into a new DIR: the one that finds DIR gone and then there (the other
    made it between its two looks, or before its mkdir) goes on, not 'not a folder'."""
    out = tmp_path / "out"
    out.mkdir()  # made "beside" this export
    real_isdir = os.path.isdir
    looks: list[str] = []

    def isdir(path):  # the first look at DIR misses it, as before the other's mkdir
        if os.fspath(path) == str(out) and not looks:
            looks.append(str(path))
            return False
        return real_isdir(path)

    monkeypatch.setattr(os.path, "isdir", isdir)
    report = export_parquet(store, out)
    assert looks and report.exported
