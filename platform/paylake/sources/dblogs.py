"""Database log sessions produced for real: the log-anomaly model's data.

Instead of inventing log lines, ``generate_log_sessions`` runs short SQL
sessions against the OLTP PostgreSQL as different login roles (an application
service, analysts, the owner), some of them normal traffic and some of them
attacks (SQL-injection probing, privilege escalation, bulk export, repeated
full scans). The server logs them itself (``log_statement = 'all'``,
connections and disconnections, ``csvlog``); the log is read back through SQL,
grouped by session and stored as one ``Log`` document per session.

Every seed session connects with ``application_name =
'paylake-seed:<scenario>:<uuid hex>'``. The "connection received" line of a
session carries no application name: lines are linked by ``session_id``.

Reading the log needs nothing but SQL, as on a managed server: the owner role
has ``pg_monitor`` (``pg_ls_logdir``) and ``pg_read_server_files``. The latter
does *not* grant EXECUTE on ``pg_read_file`` (only superusers have it unless
granted explicitly); it does allow ``COPY ... FROM '<file>'``, which is the
documented way to load a csvlog: the server loads its log files into a
temporary table and streams the rows newer than ``since`` back as CSV, parsed
with ``pyarrow.csv``.
"""

from __future__ import annotations

import io
import json
import logging
import random
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from psycopg import sql
from pymongo.database import Database

from paylake.errors import ConfigError, StoreUnavailable
from paylake.settings import Settings
from paylake.stores import postgres

log = logging.getLogger(__name__)

APPLICATION_PREFIX = "paylake-seed:"
TOOL_APPLICATION_NAME = "paylake-dblogs"  # role set-up and log reading: never mistaken for a seed session
MAX_APPLICATION_NAME = 63  # NAMEDATALEN - 1: the server truncates longer names silently
LOG_COLLECTION = "Log"

APP_SERVICE = "app_service"
ANALYSTS = ("analyst_1", "analyst_2", "analyst_3")
LOGIN_ROLES: dict[str, str] = {APP_SERVICE: "paylake_developer", **{name: "paylake_readonly" for name in ANALYSTS}}
ROLE_VALIDITY = "30 days"
LOG_WAIT_DEADLINE_S = 30.0
LOG_POLL_INTERVAL_S = 0.25

# The csvlog columns of PostgreSQL 15 (PostgreSQL 17 writes the same 26).
CSVLOG_COLUMNS: tuple[str, ...] = (
    "log_time", "user_name", "database_name", "process_id", "connection_from", "session_id",
    "session_line_num", "command_tag", "session_start_time", "virtual_transaction_id", "transaction_id",
    "error_severity", "sql_state_code", "message", "detail", "hint", "internal_query", "internal_query_pos",
    "context", "query", "query_pos", "location", "application_name", "backend_type", "leader_pid", "query_id",
)
CSVLOG_SCHEMA = pa.schema(
    [pa.field("log_time", pa.timestamp("ms", tz="UTC"))]
    + [pa.field(name, pa.string()) for name in CSVLOG_COLUMNS[1:]]
)

# A statement logged by log_statement: simple protocol, or extended protocol (named or unnamed).
_LOGGED_STATEMENT = re.compile(r"^(?:statement|execute [^:]+): (.*)$", re.DOTALL)


# -- plans: which sessions to run (pure) ---------------------------------------------


@dataclass(frozen=True)
class Statement:
    """One SQL statement of a seed session; ``copy_out`` reads a ``COPY ... TO STDOUT`` fully."""

    sql: str
    params: tuple[Any, ...] | None = None
    copy_out: bool = False


@dataclass(frozen=True)
class SessionPlan:
    """One database session to run: who connects, under which name, and what it sends.

    ``login_role`` None means the role of the settings DSN itself (the owner).
    """

    scenario: str
    anomalous: bool
    login_role: str | None
    application_name: str
    statements: tuple[Statement, ...]


@dataclass(frozen=True)
class Scenario:
    """A kind of session: normal or anomalous, who runs it, how its statements are drawn."""

    name: str
    anomalous: bool
    runs_as: str  # "app", "analyst" or "owner"
    statements: Callable[[random.Random], tuple[Statement, ...]]


def _customer_id(rng: random.Random) -> int:
    return rng.randint(1, 5_000)


def _application_traffic(rng: random.Random) -> tuple[Statement, ...]:
    customer = _customer_id(rng)
    return (
        Statement("select CustomerID, UserName, Segment, Country from oltp.Customer"
                  " where CustomerID = %s and not IsDeleted", (customer,)),
        Statement("insert into oltp.AuditLog (Action, Object, Details) values (%s, %s, %s::jsonb)",
                  ("customer.view", f"oltp.Customer/{customer}", json.dumps({"channel": rng.choice(["web", "app"])}))),
        Statement("select TransactionID, DateTime, Amount, CurrencyCode, StatusID from oltp.Transaction"
                  " where CustomerID = %s order by DateTime desc limit 20", (customer,)),
    )


def _analyst_report(rng: random.Random) -> tuple[Statement, ...]:
    days = rng.choice([7, 30, 90])
    return (
        Statement("select MerchantID, date_trunc('day', DateTime) as Day, count(*) as Transactions,"
                  " sum(Amount) as Revenue from oltp.Transaction"
                  f" where DateTime >= now() - interval '{days} days'"
                  " group by MerchantID, Day order by Day, MerchantID"),
        Statement("select m.Industry, count(*) as Transactions, avg(t.Amount) as AverageAmount"
                  " from oltp.Transaction t join oltp.Merchant m using (MerchantID)"
                  " group by m.Industry order by Transactions desc"),
        Statement("select StatusID, count(*) from oltp.Transaction group by StatusID order by StatusID"),
    )


def _admin_maintenance(rng: random.Random) -> tuple[Statement, ...]:
    table = rng.choice(["Customer", "Merchant", "Transaction", "AuditLog"])
    return (
        Statement("select pid, usename, application_name, state, backend_type from pg_stat_activity"
                  " where datname = current_database()"),
        Statement(f"analyze oltp.{table}"),
        Statement("select relname, n_live_tup, last_analyze from pg_stat_user_tables"
                  " where schemaname = 'oltp' order by n_live_tup desc limit 10"),
    )


_PROBE = "select CustomerID, UserName from oltp.Customer where "
# Injection strings pasted into SQL text by a vulnerable application; these fail with 42601 (syntax error).
_SYNTAX_ERROR_PROBES = (
    _PROBE + "CustomerID = 1'",
    _PROBE + "CustomerID = 1 union select null --",
    _PROBE + "CustomerID = 1 union select table_name, column_name, data_type from information_schema.columns --",
    _PROBE + "UserName = '' or 1=1 --' and Password = ''",
)
# Probes that succeed or fail otherwise (type mismatch, bad ORDER BY position, error-based, time-based).
_OTHER_PROBES = (
    _PROBE + "UserName = '' or 1=1 --'",
    _PROBE + "UserName = 'admin'' --'",
    _PROBE + "UserName = '' or '1'='1' order by 3 --'",
    _PROBE + "UserName = '' union select UserName, Password from oltp.Customer --'",
    _PROBE + "CustomerID = 1 and 1 = cast((select version()) as int) --",
    _PROBE + "CustomerID = 1; select pg_sleep(0.05) --",
)


def _sql_injection(rng: random.Random) -> tuple[Statement, ...]:
    probes = rng.sample(_SYNTAX_ERROR_PROBES, 2) + rng.sample(_OTHER_PROBES, 2)
    rng.shuffle(probes)
    return tuple(Statement(text) for text in probes)


def _privilege_escalation(rng: random.Random) -> tuple[Statement, ...]:
    attempts = [
        f"update oltp.Customer set Segment = 'premium' where CustomerID = {_customer_id(rng)}",
        "select * from pii.Keyring",
        "alter role current_user superuser",
        f"create role backdoor_{rng.getrandbits(32):08x} login superuser",
        "set role paylake_admin",
        "grant paylake_developer to current_user",
        "select pg_read_file('/etc/passwd')",
    ]
    return tuple(Statement(text) for text in rng.sample(attempts, 4))


def _bulk_export(rng: random.Random) -> tuple[Statement, ...]:
    extra = rng.sample(["Address", "PaymentMethod", "Transaction", "Device"], rng.randint(1, 2))
    tables = ["Customer", *extra]
    return tuple(Statement(f"copy (select * from oltp.{table}) to stdout", copy_out=True) for table in tables)


def _repeated_scan(rng: random.Random) -> tuple[Statement, ...]:
    return tuple(Statement("select * from oltp.Customer") for _ in range(rng.randint(4, 6)))


# Anomalies made only of statements seen in normal traffic: nothing but their order, volume or role is
# unusual, so the unknown-key rule cannot give them away (what the sequence model must earn). The hour of a
# session is the server's wall clock when the seed runs, so "at night" is not something a seed can stage.
def _lookup_sweep(rng: random.Random) -> tuple[Statement, ...]:
    """The app's own customer lookup, for customer after customer: a sweep of the table one row at a time."""
    first = _customer_id(rng)
    lookup = _application_traffic(rng)[0].sql
    return tuple(Statement(lookup, (first + i,)) for i in range(rng.randint(12, 20)))


def _shuffled_app_traffic(rng: random.Random) -> tuple[Statement, ...]:
    """The app's three statements out of their order, the audit record skipped: the history before the lookup."""
    normal = _application_traffic(rng)
    return (normal[2], normal[0], normal[2])


def _role_replay(rng: random.Random) -> tuple[Statement, ...]:
    """An analyst's report, run by the application's role (``runs_as`` app): the keys of a normal session."""
    return _analyst_report(rng)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("app_traffic", False, "app", _application_traffic),
        Scenario("analyst_report", False, "analyst", _analyst_report),
        Scenario("admin_maintenance", False, "owner", _admin_maintenance),
        Scenario("sql_injection", True, "app", _sql_injection),
        Scenario("priv_escalation", True, "analyst", _privilege_escalation),
        Scenario("bulk_export", True, "analyst", _bulk_export),
        Scenario("repeated_scan", True, "app", _repeated_scan),
        Scenario("lookup_sweep", True, "app", _lookup_sweep),
        Scenario("app_reordered", True, "app", _shuffled_app_traffic),
        Scenario("role_replay", True, "app", _role_replay),
    )
}


def scenario_names(anomalous: bool) -> list[str]:
    """The scenarios of one label, in catalog order."""
    return [s.name for s in SCENARIOS.values() if s.anomalous == anomalous]


def application_name(scenario: str) -> str:
    """The application_name of one seed session (unique, within the server's 63-byte limit)."""
    name = f"{APPLICATION_PREFIX}{scenario}:{uuid.uuid4().hex}"
    if len(name.encode()) > MAX_APPLICATION_NAME:
        raise ValueError(f"application_name {name!r} exceeds {MAX_APPLICATION_NAME} bytes: "
                         "the server would truncate it; shorten the scenario name")
    return name


def plan_sessions(*, sessions: int, anomalous_fraction: float, seed: int) -> list[SessionPlan]:
    """Which sessions to run, drawn from ``random.Random(seed)``.

    ``round(sessions * anomalous_fraction)`` sessions are anomalous. Within each
    label the scenarios take turns (in a seeded order), so every kind appears
    once there are enough sessions; the sessions are then shuffled.
    """
    if sessions < 0:
        raise ValueError(f"sessions must be >= 0, got {sessions}")
    if not 0.0 <= anomalous_fraction <= 1.0:
        raise ValueError(f"anomalous_fraction must be within [0, 1], got {anomalous_fraction}")
    rng = random.Random(seed)
    anomalous = round(sessions * anomalous_fraction)
    chosen = _take_turns(rng, scenario_names(True), anomalous) + _take_turns(
        rng, scenario_names(False), sessions - anomalous)
    rng.shuffle(chosen)
    return [_plan(rng, SCENARIOS[name]) for name in chosen]


def _take_turns(rng: random.Random, names: list[str], count: int) -> list[str]:
    order = rng.sample(names, len(names))
    return [order[i % len(order)] for i in range(count)]


def _plan(rng: random.Random, scenario: Scenario) -> SessionPlan:
    login_role = {"app": APP_SERVICE, "analyst": rng.choice(ANALYSTS), "owner": None}[scenario.runs_as]
    return SessionPlan(scenario.name, scenario.anomalous, login_role, application_name(scenario.name),
                       scenario.statements(rng))


# -- running the sessions (I/O) --------------------------------------------------------


def run_sessions(settings: Settings, *, sessions: int, anomalous_fraction: float, seed: int,
                 plans: Sequence[SessionPlan] | None = None) -> list[SessionPlan]:
    """Run real SQL sessions against the OLTP PostgreSQL (``plans``, or as many drawn by ``plan_sessions``);
    return what was run.

    The login roles are (re)created first with fresh random passwords, valid
    for 30 days. Statements that fail (most anomalous ones do) are expected:
    each runs in autocommit and its error is swallowed.
    """
    plans = list(plans) if plans is not None else plan_sessions(sessions=sessions,
                                                                 anomalous_fraction=anomalous_fraction, seed=seed)
    passwords = ensure_login_roles(settings)
    for plan in plans:
        _run_session(settings, plan, passwords)
    log.info("ran %d seed sessions against Postgres at %s (%d anomalous)", len(plans),
             postgres.where(settings.postgres_dsn.get_secret_value()), sum(p.anomalous for p in plans))
    return plans


def ensure_login_roles(settings: Settings) -> dict[str, str]:
    """Create or refresh the seed login roles through ``oltp.grant_contractor``; their passwords.

    Only a SCRAM verifier travels to the server: with ``log_statement = 'all'``
    a clear password would be written to the server log.
    """
    passwords = {role: secrets.token_urlsafe(24) for role in LOGIN_ROLES}
    with postgres.connect(settings, autocommit=True, application_name=TOOL_APPLICATION_NAME) as conn:
        for role, group in LOGIN_ROLES.items():
            verifier = conn.pgconn.encrypt_password(passwords[role].encode(), role.encode(), b"scram-sha-256")
            conn.execute(f"select oltp.grant_contractor(%s, %s, %s, now() + interval '{ROLE_VALIDITY}')",
                         (role, verifier.decode(), group))
    return passwords


def _run_session(settings: Settings, plan: SessionPlan, passwords: dict[str, str]) -> None:
    credentials = {} if plan.login_role is None else {
        "user": plan.login_role, "password": passwords[plan.login_role]}
    with postgres.connect(settings, autocommit=True, application_name=plan.application_name, **credentials) as conn:
        for statement in plan.statements:
            _run_statement(conn, statement)


def _run_statement(conn: psycopg.Connection, statement: Statement) -> None:
    try:
        with conn.cursor() as cursor:
            if statement.copy_out:
                with cursor.copy(statement.sql) as copy:
                    for _ in copy:
                        pass
                return
            cursor.execute(statement.sql, statement.params)
            while cursor.description is not None and cursor.fetchmany(1_000):
                pass
    except psycopg.Error as exc:
        log.debug("seed statement failed with SQLSTATE %s (expected for anomalous scenarios)", exc.sqlstate)


# -- reading the server's csvlog ---------------------------------------------------------


def read_csvlog(settings: Settings, since: datetime) -> pa.Table:
    """The rows of the server's csvlog files logged at or after ``since`` (``CSVLOG_SCHEMA``).

    Needs ``pg_monitor`` and ``pg_read_server_files`` for the settings' role;
    an empty table when the server writes no csvlog.
    """
    try:
        with postgres.connect(settings, application_name=TOOL_APPLICATION_NAME) as conn, conn.transaction():
            conn.execute("set local timezone to 'UTC'")
            files = _log_files_since(conn, since)
            if not files:
                return CSVLOG_SCHEMA.empty_table()
            _load_into_temp_table(conn, files)
            return parse_csvlog(_rows_since(conn, since))
    except psycopg.errors.InsufficientPrivilege as exc:
        raise ConfigError(
            f"cannot read the server log of Postgres at {postgres.where(settings.postgres_dsn.get_secret_value())}"
            f" ({exc.diag.message_primary}): grant pg_monitor, pg_read_server_files to the role of PAYLAKE_POSTGRES_DSN"
        ) from exc


def _log_files_since(conn: psycopg.Connection, since: datetime) -> list[str]:
    rows = conn.execute(
        "select current_setting('log_directory') || '/' || name from pg_ls_logdir()"
        " where name like '%%.csv' and modification >= %s order by modification, name", (since,)).fetchall()
    return [path for (path,) in rows]


def _load_into_temp_table(conn: psycopg.Connection, files: Sequence[str]) -> None:
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL("timestamptz" if name == "log_time" else "text"))
        for name in CSVLOG_COLUMNS)
    conn.execute(sql.SQL("create temp table paylake_csvlog ({}) on commit drop").format(columns))
    for path in files:
        conn.execute(sql.SQL("copy paylake_csvlog from {} with (format csv)").format(sql.Literal(path)))


def _rows_since(conn: psycopg.Connection, since: datetime) -> bytes:
    query = sql.SQL("copy (select * from paylake_csvlog where log_time >= {} order by log_time)"
                    " to stdout with (format csv)").format(sql.Literal(since))
    buffer = io.BytesIO()
    with conn.cursor() as cursor, cursor.copy(query) as copy:
        for block in copy:
            buffer.write(block)
    return buffer.getvalue()


def parse_csvlog(data: bytes) -> pa.Table:
    """Parse csvlog-format bytes (26 columns, no header) into a ``CSVLOG_SCHEMA`` table.

    Values may span lines; an unquoted empty field is null, a quoted one an empty string.
    """
    if not data.strip():
        return CSVLOG_SCHEMA.empty_table()
    return pacsv.read_csv(
        io.BytesIO(data),
        read_options=pacsv.ReadOptions(column_names=list(CSVLOG_COLUMNS)),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types=CSVLOG_SCHEMA, null_values=[""], strings_can_be_null=True,
            quoted_strings_can_be_null=False, timestamp_parsers=[pacsv.ISO8601]),
    )


# -- log rows to Log documents (pure) -----------------------------------------------------


def sessions_to_documents(log_rows: pa.Table, plans: Iterable[SessionPlan] | None = None) -> list[dict[str, Any]]:
    """One ``Log`` document per seed session found in ``log_rows``, oldest first.

    A seed session is one whose application_name starts with ``paylake-seed:``
    (on any of its lines; lines are linked by session_id). When ``plans`` is
    given, only the sessions it names are kept (a log also holds earlier runs).
    The label and scenario come from the plan, else from the application name.
    """
    wanted = None if plans is None else {plan.application_name: plan for plan in plans}
    sessions = _seed_session_rows(log_rows)
    documents = []
    for session_id, rows in sessions.items():
        scenario, anomalous = _scenario_of(rows, wanted)
        if scenario is not None:
            documents.append(_document(session_id, rows, scenario, anomalous))
    return sorted(documents, key=lambda doc: doc["startedAt"])


def _seed_session_rows(log_rows: pa.Table) -> dict[str, list[dict[str, Any]]]:
    session_ids = pc.unique(log_rows.filter(_is_seed(log_rows)).column("session_id"))
    rows = log_rows.filter(pc.is_in(log_rows.column("session_id"), value_set=session_ids))
    rows = rows.append_column("_line", pc.cast(rows.column("session_line_num"), pa.int64()))
    rows = rows.sort_by([("session_id", "ascending"), ("_line", "ascending")])
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in rows.to_pylist():
        grouped.setdefault(row["session_id"], []).append(row)
    return grouped


def _scenario_of(rows: list[dict[str, Any]], wanted: dict[str, SessionPlan] | None) -> tuple[str | None, bool]:
    name = next(r["application_name"] for r in rows if (r["application_name"] or "").startswith(APPLICATION_PREFIX))
    if wanted is not None:
        plan = wanted.get(name)
        return (None, False) if plan is None else (plan.scenario, plan.anomalous)
    scenario = name[len(APPLICATION_PREFIX):].rpartition(":")[0]
    if scenario not in SCENARIOS:
        log.warning("seed session with unknown scenario %r skipped", scenario)
        return None, False
    return scenario, SCENARIOS[scenario].anomalous


def _document(session_id: str, rows: list[dict[str, Any]], scenario: str, anomalous: bool) -> dict[str, Any]:
    return {
        "sessionId": session_id,
        "dbname": _first(rows, "database_name"),
        "user": _first(rows, "user_name"),
        "clientAddress": _first(rows, "connection_from"),
        "startedAt": rows[0]["log_time"],
        "endedAt": rows[-1]["log_time"],
        "label": "anomalous" if anomalous else "normal",
        "scenario": scenario,
        "lines": [_line(row) for row in rows],
    }


def _first(rows: list[dict[str, Any]], column: str) -> str:
    return next((r[column] for r in rows if r[column]), "")


def _line(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "timestamp": row["log_time"],
        "error_severity": row["error_severity"] or "",
        "state_code": row["sql_state_code"] or "",
        "message": row["message"] or "",
        "statement": statement_of(row["error_severity"], row["message"], row["query"]),
    }


def statement_of(severity: str | None, message: str | None, query: str | None) -> str | None:
    """The SQL a log line is about: the text of a ``statement:``/``execute ...:`` LOG line, else ``query``."""
    if severity == "LOG" and message:
        match = _LOGGED_STATEMENT.match(message)
        if match:
            return match[1]
    return query


# -- the whole thing ------------------------------------------------------------------------


def generate_log_sessions(settings: Settings, db: Database, *, sessions: int, anomalous_fraction: float,
                          seed: int, plans: Sequence[SessionPlan] | None = None) -> dict[str, int]:
    """Run seed sessions (``plans``, or drawn), read their lines back from the server's csvlog, store them in
    ``db["Log"]``.

    Returns ``{"sessions", "anomalous", "lines"}`` counts of the documents inserted.
    """
    since = _server_now(settings)
    plans = run_sessions(settings, sessions=sessions, anomalous_fraction=anomalous_fraction, seed=seed, plans=plans)
    log_rows = wait_for_sessions(settings, since, plans)
    documents = sessions_to_documents(log_rows, plans)
    if documents:
        db[LOG_COLLECTION].insert_many(documents)
    counts = {
        "sessions": len(documents),
        "anomalous": sum(doc["label"] == "anomalous" for doc in documents),
        "lines": sum(len(doc["lines"]) for doc in documents),
    }
    log.info("stored %(sessions)d Log sessions (%(anomalous)d anomalous, %(lines)d lines)", counts)
    return counts


def wait_for_sessions(settings: Settings, since: datetime, plans: Sequence[SessionPlan], *,
                      deadline_s: float = LOG_WAIT_DEADLINE_S) -> pa.Table:
    """The csvlog since ``since`` once every planned session's disconnection line is in it."""
    deadline = time.monotonic() + deadline_s
    expected = {plan.application_name for plan in plans}
    while True:
        try:
            log_rows = read_csvlog(settings, since)
            missing = expected - _disconnected_sessions(log_rows)
        except psycopg.errors.BadCopyFileFormat:  # the collector is mid-way through a multi-line record
            missing = expected
        if not missing:
            return log_rows
        if time.monotonic() > deadline:
            raise StoreUnavailable(
                f"the csvlog of Postgres at {postgres.where(settings.postgres_dsn.get_secret_value())} lacks the "
                f"disconnection line of {len(missing)} of {len(expected)} seed sessions after {deadline_s:.0f} s: "
                "check logging_collector = on, log_destination includes csvlog, log_disconnections = on")
        time.sleep(LOG_POLL_INTERVAL_S)


def _disconnected_sessions(log_rows: pa.Table) -> set[str]:
    """Application names of the seed sessions whose disconnection line is logged (linked by session_id)."""
    seed = log_rows.filter(_is_seed(log_rows))
    disconnections = log_rows.filter(pc.fill_null(pc.starts_with(log_rows.column("message"), "disconnection:"), False))
    ended = seed.filter(pc.is_in(seed.column("session_id"), value_set=disconnections.column("session_id")))
    return set(pc.unique(ended.column("application_name")).to_pylist())


def _is_seed(log_rows: pa.Table) -> pa.ChunkedArray:
    """Whether each row's application_name marks a seed session (null names: no)."""
    return pc.fill_null(pc.starts_with(log_rows.column("application_name"), APPLICATION_PREFIX), False)


def _server_now(settings: Settings) -> datetime:
    with postgres.connect(settings, application_name=TOOL_APPLICATION_NAME) as conn:
        (now,) = conn.execute("select now()").fetchone()
    return now
