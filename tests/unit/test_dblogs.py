"""Database log sessions, pure side: planning, csvlog parsing, log rows to Log documents."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa
import pytest

from paylake.sources.dblogs import (
    APPLICATION_PREFIX,
    CSVLOG_COLUMNS,
    CSVLOG_SCHEMA,
    MAX_APPLICATION_NAME,
    SCENARIOS,
    SessionPlan,
    parse_csvlog,
    plan_sessions,
    scenario_names,
    sessions_to_documents,
    statement_of,
)
from paylake.sources.mongo_model import validate

T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
INJECTION_APP = f"{APPLICATION_PREFIX}sql_injection:aaaa"
TRAFFIC_APP = f"{APPLICATION_PREFIX}app_traffic:bbbb"


def at(ms: int) -> dt.datetime:
    return T0 + dt.timedelta(milliseconds=ms)


def row(session_id: str, line: int, ms: int, message: str, *, app: str | None = "", user: str | None = "app_service",
        severity: str = "LOG", state: str = "00000", query: str | None = None) -> dict[str, Any]:
    return {
        "log_time": at(ms), "user_name": user, "database_name": "paylake" if user else None,
        "connection_from": "127.0.0.1:50000", "session_id": session_id, "session_line_num": str(line),
        "error_severity": severity, "sql_state_code": state, "message": message, "query": query,
        "application_name": app,
    }


def session(session_id: str, app: str, start_ms: int, body: list[tuple[str, str, str, str | None]],
            user: str = "app_service") -> list[dict[str, Any]]:
    """A whole session: connection lines (no application_name yet), ``body`` lines, disconnection."""
    rows = [
        row(session_id, 1, start_ms, "connection received: host=127.0.0.1 port=50000", user=None),
        row(session_id, 2, start_ms + 1, f"connection authorized: user={user} database=paylake", user=user),
    ]
    for offset, (severity, state, message, query) in enumerate(body, start=3):
        rows.append(row(session_id, offset, start_ms + offset, message, app=app, user=user, severity=severity,
                        state=state, query=query))
    rows.append(row(session_id, len(rows) + 1, start_ms + 50, "disconnection: session time: 0:00:00.050",
                    app=app, user=user))
    return rows


def table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist([{c: r.get(c) for c in CSVLOG_COLUMNS} for r in rows], schema=CSVLOG_SCHEMA)


INJECTION_BODY = [
    ("LOG", "00000", "statement: select * from oltp.Customer where UserName = '' or 1=1 --'", None),
    ("ERROR", "42601", 'unterminated quoted string at or near "\'"',
     "select * from oltp.Customer where CustomerID = 1'"),
]
TRAFFIC_BODY = [
    ("LOG", "00000", "execute <unnamed>: select * from oltp.Customer where CustomerID = $1", None),
    ("LOG", "00000", "statement: select 1", None),
]


def mixed_log() -> pa.Table:
    """Two seed sessions interleaved, and sessions of other applications."""
    rows = (session("s1.1", INJECTION_APP, 0, INJECTION_BODY)
            + session("s2.2", TRAFFIC_APP, 10, TRAFFIC_BODY)
            + session("s3.3", "psql", 5, [("LOG", "00000", "statement: select 2", None)], user="postgres")
            + session("s4.4", "paylake-dblogs", 7, [("LOG", "00000", "statement: select 3", None)])
            + [row("s5.5", 1, 8, "connection received: host=127.0.0.1 port=50001", user=None)])
    return table(sorted(rows, key=lambda r: r["log_time"]))


def by_scenario(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {doc["scenario"]: doc for doc in documents}


def plan(scenario: str, app: str) -> SessionPlan:
    return SessionPlan(scenario, SCENARIOS[scenario].anomalous, "app_service", app, ())


# -- sessions_to_documents ------------------------------------------------------------


def test_lines_are_grouped_by_session_including_the_unnamed_connection_lines():
    documents = by_scenario(sessions_to_documents(mixed_log()))
    injection = documents["sql_injection"]
    assert injection["sessionId"] == "s1.1"
    assert [line["message"].split(":")[0] for line in injection["lines"]] == [
        "connection received", "connection authorized", "statement", "unterminated quoted string at or near \"'\"",
        "disconnection"]
    assert injection["startedAt"] == at(0) and injection["endedAt"] == at(50)
    assert (injection["user"], injection["dbname"], injection["clientAddress"]) == (
        "app_service", "paylake", "127.0.0.1:50000")


def test_label_follows_the_scenario():
    documents = by_scenario(sessions_to_documents(mixed_log()))
    assert documents["sql_injection"]["label"] == "anomalous"
    assert documents["app_traffic"]["label"] == "normal"


def test_statement_comes_from_logged_statements_and_from_the_query_of_errors():
    documents = by_scenario(sessions_to_documents(mixed_log()))
    injection = [line["statement"] for line in documents["sql_injection"]["lines"]]
    assert injection == [None, None, "select * from oltp.Customer where UserName = '' or 1=1 --'",
                         "select * from oltp.Customer where CustomerID = 1'", None]
    traffic = [line["statement"] for line in documents["app_traffic"]["lines"]]
    assert traffic[2:4] == ["select * from oltp.Customer where CustomerID = $1", "select 1"]
    error = documents["sql_injection"]["lines"][3]
    assert (error["error_severity"], error["state_code"]) == ("ERROR", "42601")


def test_sessions_of_other_applications_are_ignored():
    documents = sessions_to_documents(mixed_log())
    assert sorted(doc["sessionId"] for doc in documents) == ["s1.1", "s2.2"]
    assert all(line["statement"] not in {"select 2", "select 3"} for doc in documents for line in doc["lines"])


def test_plans_keep_only_the_planned_sessions():
    documents = sessions_to_documents(mixed_log(), [plan("app_traffic", TRAFFIC_APP)])
    assert [doc["sessionId"] for doc in documents] == ["s2.2"]


def test_plans_decide_the_label():
    documents = sessions_to_documents(mixed_log(), [SessionPlan("app_traffic", True, "app_service", TRAFFIC_APP, ())])
    assert documents[0]["label"] == "anomalous"


def test_unknown_scenario_without_plan_is_skipped():
    rows = session("s9.9", f"{APPLICATION_PREFIX}no_such_thing:cccc", 0, TRAFFIC_BODY)
    assert sessions_to_documents(table(rows)) == []


def test_documents_follow_the_log_model():
    for document in sessions_to_documents(mixed_log()):
        assert validate("Log", document) == []


def test_empty_log_gives_no_documents():
    assert sessions_to_documents(CSVLOG_SCHEMA.empty_table()) == []


@pytest.mark.parametrize(
    ("severity", "message", "query", "expected"),
    [
        ("LOG", "statement: select 1", None, "select 1"),
        ("LOG", "execute _pg3_0: select $1", None, "select $1"),
        ("LOG", "statement: select 'a:b'\nfrom t", None, "select 'a:b'\nfrom t"),
        ("LOG", "connection received: host=127.0.0.1 port=1", None, None),
        ("ERROR", "syntax error at or near \"x\"", "select x x x", "select x x x"),
        ("ERROR", "statement: looks like one", None, None),
    ],
)
def test_statement_of(severity, message, query, expected):
    assert statement_of(severity, message, query) == expected


# -- parse_csvlog ----------------------------------------------------------------------


def test_parse_csvlog_keeps_multiline_values_quotes_and_nulls():
    fields = ["2024-05-01 12:00:00.123+00", "app_service", "paylake", "42", "127.0.0.1:5", "s1.1", "3", "idle",
              "2024-05-01 12:00:00 UTC", "3/7", "0", "LOG", "00000", '"statement: select \'a\'\nfrom ""T"""',
              "", "", "", "", "", "", "", "", '""', "client backend", "", "0"]
    data = (",".join(fields) + "\n").encode()
    parsed = parse_csvlog(data)
    assert parsed.schema == CSVLOG_SCHEMA
    (record,) = parsed.to_pylist()
    assert record["log_time"] == T0 + dt.timedelta(milliseconds=123)
    assert record["message"] == "statement: select 'a'\nfrom \"T\""
    assert record["detail"] is None
    assert record["application_name"] == ""


def test_parse_csvlog_of_nothing_is_empty():
    assert parse_csvlog(b"").num_rows == 0


# -- plan_sessions -----------------------------------------------------------------------


def test_plans_are_reproducible_for_a_seed():
    first = plan_sessions(sessions=20, anomalous_fraction=0.3, seed=7)
    again = plan_sessions(sessions=20, anomalous_fraction=0.3, seed=7)
    assert [(p.scenario, p.login_role, p.statements) for p in first] == [
        (p.scenario, p.login_role, p.statements) for p in again]


def test_anomalous_fraction_sets_the_count_and_every_kind_appears():
    plans = plan_sessions(sessions=14, anomalous_fraction=0.5, seed=1)
    assert sum(p.anomalous for p in plans) == 7
    assert {p.scenario for p in plans} == set(SCENARIOS)
    assert all(p.anomalous == SCENARIOS[p.scenario].anomalous for p in plans)


def test_application_names_are_unique_and_fit_the_server_limit():
    plans = plan_sessions(sessions=50, anomalous_fraction=0.5, seed=2)
    names = [p.application_name for p in plans]
    assert len(set(names)) == len(names)
    assert all(len(name.encode()) <= MAX_APPLICATION_NAME for name in names)
    assert all(name.startswith(f"{APPLICATION_PREFIX}{p.scenario}:") for name, p in zip(names, plans))


def test_owner_runs_maintenance_analysts_run_reports():
    for p in plan_sessions(sessions=30, anomalous_fraction=0.5, seed=3):
        runs_as = SCENARIOS[p.scenario].runs_as
        assert (p.login_role is None) == (runs_as == "owner")
        assert runs_as != "analyst" or p.login_role.startswith("analyst_")


def test_every_session_sends_a_few_statements_and_a_sweep_many_of_the_usual_one():
    for p in plan_sessions(sessions=40, anomalous_fraction=0.5, seed=4):
        if p.scenario == "lookup_sweep":
            assert 12 <= len(p.statements) <= 20 and len({s.sql for s in p.statements}) == 1
        else:
            assert 2 <= len(p.statements) <= 6


def test_known_key_anomalies_send_only_statements_of_normal_traffic():
    """lookup_sweep, app_reordered and role_replay: nothing but order, volume or role is unusual."""
    plans = plan_sessions(sessions=200, anomalous_fraction=0.5, seed=6)
    normal_sql = {s.sql for p in plans if not p.anomalous for s in p.statements}
    known = [p for p in plans if p.scenario in {"lookup_sweep", "app_reordered", "role_replay"}]
    assert {p.scenario for p in known} == {"lookup_sweep", "app_reordered", "role_replay"}
    assert all(s.sql in normal_sql for p in known for s in p.statements)
    assert all(p.login_role == "app_service" for p in known)  # role_replay: an analyst's report, by the app


def test_labels_split_the_catalog():
    assert set(scenario_names(True)) | set(scenario_names(False)) == set(SCENARIOS)
    assert not set(scenario_names(True)) & set(scenario_names(False))


@pytest.mark.parametrize(("sessions", "fraction"), [(-1, 0.5), (10, -0.1), (10, 1.5)])
def test_invalid_plan_arguments_are_refused(sessions, fraction):
    with pytest.raises(ValueError):
        plan_sessions(sessions=sessions, anomalous_fraction=fraction, seed=0)
