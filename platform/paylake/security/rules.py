"""Rules beside the log-sequence model, for what rules catch better than a sequence model.

They read a session's log keys (``paylake.ml.logs.keys``: command, tables and
clause shape, never literals) and its lines' SQLSTATE codes, plus facts about
the roles and tables that the OLTP server knows (``Catalog``):

- ``outside_grants``: the session's role touched a table it holds no privilege
  on, or the server refused a statement for lack of privilege (SQLSTATE 42501);
- ``mass_export``: a ``COPY … TO`` of a table, or a whole-table ``select``
  (no ``where``/``limit``/``group``), of a table of more than ``export_rows``
  rows (the planner's estimate);
- ``login_outside_validity``: the session started after the role's
  ``VALID UNTIL`` (a contractor's access), or the server refused the login
  (SQLSTATE class 28, invalid authorisation).

**As of the session's time, not now.** A session is judged by the rights in
force when it started. Validity: ``oltp.grant_contractor`` records every
change of a contractor's access in the append-only audit log (migration
0004), so the ``VALID UNTIL`` that held at the session's start is the one of
the latest change before it (a validity extended afterwards does not excuse
a session that ran past the old one); a role with no recorded change is
judged by its current validity. Privileges: PostgreSQL keeps no history of
them, so every ``paylake monitor logs`` run records what it reads
(``gold/security/privilege_snapshot``: observed_at, role, table, privilege,
allowed) and a session is judged by the snapshots around its start: the last
one before it and the first one after (the current reading counts as one).
When both agree, that is the answer; when they differ the privilege changed
in between, and the rule fires with the window in its evidence (a reviewer
decides, the rule does not guess); a session older than every snapshot is
judged by the first one.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from paylake.settings import Settings
from paylake.stores import postgres

_STATEMENT_KEY = re.compile(r"^[^|]*\|[^|]*\|stmt (\w+) (\S+) \[([^\]]*)\]$")
_PRIVILEGE = {"select": "SELECT", "copy": "SELECT", "insert": "INSERT", "update": "UPDATE", "delete": "DELETE"}
DEFAULT_EXPORT_ROWS = 1_000


@dataclass(frozen=True)
class Statement:
    command: str
    tables: tuple[str, ...]
    flags: frozenset[str]


def parse_statement_key(key: str) -> Statement | None:
    """The command, tables and clause flags of a statement's key (None for other lines)."""
    match = _STATEMENT_KEY.match(key)
    if not match:
        return None
    tables = () if match[2] == "-" else tuple(match[2].split(","))
    return Statement(match[1], tables, frozenset(f for f in match[3].split(",") if f))


@dataclass
class Catalog:
    """What the server says about roles and tables (filled by ``load_catalog``)."""

    privileges: dict[tuple[str, str, str], bool] = field(default_factory=dict)  # (role, table, privilege), now
    rows: dict[str, float] = field(default_factory=dict)  # table -> estimated rows
    valid_until: dict[str, dt.datetime | None] = field(default_factory=dict)  # role -> VALID UNTIL, now
    # role -> [(changed at, VALID UNTIL from then on)] in time order (oltp.grant_contractor's audit records)
    validity_changes: dict[str, list[tuple[dt.datetime, dt.datetime | None]]] = field(default_factory=dict)
    # (role, table, privilege) -> [(observed at, allowed)] in time order (earlier monitor runs' readings)
    privilege_history: dict[tuple[str, str, str], list[tuple[dt.datetime, bool]]] = field(default_factory=dict)
    read_at: dt.datetime | None = None  # when ``privileges`` and ``valid_until`` were read

    def valid_until_at(self, role: str, at: dt.datetime | None) -> dt.datetime | None:
        """The role's VALID UNTIL in force at ``at``: the latest recorded change before it, else the current."""
        changes = self.validity_changes.get(role, [])
        before = [until for changed, until in changes if at is not None and changed <= at]
        return before[-1] if before else self.valid_until.get(role)

    def privilege_at(self, triple: tuple[str, str, str], at: dt.datetime | None) -> tuple[bool | None, str]:
        """(whether the privilege was held at ``at``, the reading's note): the snapshots around ``at`` (the
        current reading the last of them). None when unknown; when the two sides differ, False with the window
        in the note (it changed in between)."""
        readings = list(self.privilege_history.get(triple, []))
        if triple in self.privileges:
            readings.append((self.read_at or dt.datetime.max.replace(tzinfo=dt.UTC), self.privileges[triple]))
        if not readings:
            return None, ""
        if at is None:
            return readings[-1][1], ""
        before = [r for r in readings if r[0] <= at]
        after = [r for r in readings if r[0] > at]
        if not before:
            return after[0][1], f" (as first observed {after[0][0]:%Y-%m-%d %H:%M})"
        if not after or before[-1][1] == after[0][1]:
            return before[-1][1], ""
        return False, (f" (changed between {before[-1][0]:%Y-%m-%d %H:%M} and {after[0][0]:%Y-%m-%d %H:%M}: "
                       f"{'held' if before[-1][1] else 'not held'} before, {'held' if after[0][1] else 'not held'} "
                       "after)")


def needed_checks(sessions: Iterable) -> tuple[set[tuple[str, str, str]], set[str], set[str]]:
    """(role, table, privilege) triples, tables and roles the rules will ask the catalog about."""
    privileges, tables, roles = set(), set(), set()
    for session in sessions:
        roles.add(session.user)
        for key in session.keys:
            statement = parse_statement_key(key)
            if statement is None or statement.command not in _PRIVILEGE:
                continue
            for table in statement.tables:
                tables.add(table)
                privileges.add((session.user, table, _PRIVILEGE[statement.command]))
    return privileges, tables, roles


def load_catalog(settings: Settings, sessions: Sequence) -> Catalog:
    """Ask PostgreSQL (``has_table_privilege``, ``pg_class.reltuples``, ``pg_roles.rolvaliduntil``) about the
    roles and tables of ``sessions``; unknown roles or tables are left out (the rules then say nothing)."""
    privileges, tables, roles = needed_checks(sessions)
    catalog = Catalog()
    with postgres.connect(settings, autocommit=True) as conn:  # four queries, whatever the sessions
        catalog.read_at = conn.execute("select clock_timestamp()").fetchone()[0]
        for role, until in conn.execute("select rolname, rolvaliduntil from pg_roles where rolname = any(%s)",
                                        (sorted(roles),)).fetchall():
            catalog.valid_until[role] = until
        for role, at, until in conn.execute(
                "select Object, At, (Details->>'valid_until')::timestamptz from oltp.AuditLog "
                "where Action = 'role.contractor' and Object = any(%s) order by At, AuditID", (sorted(roles),)):
            catalog.validity_changes.setdefault(role, []).append((at, until))
        for table, estimate in conn.execute(
                "select t, greatest(c.reltuples, 0) from unnest(%s::text[]) t "
                "join pg_class c on c.oid = to_regclass(t)", (sorted(tables),)).fetchall():
            catalog.rows[table] = float(estimate)
        asked = [(r, t, p) for r, t, p in sorted(privileges) if r in catalog.valid_until and t in catalog.rows]
        if asked:
            roles_, tables_, privileges_ = (list(column) for column in zip(*asked))
            for role, table, privilege, allowed in conn.execute(
                    "select r, t, p, has_table_privilege(r, t, p) from unnest(%s::text[], %s::text[], %s::text[])"
                    " as a(r, t, p)", (roles_, tables_, privileges_)).fetchall():
                catalog.privileges[(role, table, privilege)] = bool(allowed)
    return catalog


def evaluate(session, catalog: Catalog, export_rows: int = DEFAULT_EXPORT_ROWS) -> list[dict]:
    """The rules that fire on one session (``paylake.ml.logs.data.LogSession``), each with its evidence."""
    fired: dict[str, list[str]] = {}
    for number, (key, line) in enumerate(zip(session.keys, session.lines)):
        state = str(line.get("state_code") or "")
        if state == "42501":
            fired.setdefault("outside_grants", []).append(f"line {number}: permission denied (42501)")
        if state.startswith("28"):
            fired.setdefault("login_outside_validity", []).append(f"line {number}: login refused ({state})")
        statement = parse_statement_key(key)
        if statement is None:
            continue
        privilege = _PRIVILEGE.get(statement.command)
        for table in statement.tables:
            held, note = catalog.privilege_at((session.user, table, privilege), session.started_at) \
                if privilege else (None, "")
            if held is False:
                fired.setdefault("outside_grants", []).append(
                    f"line {number}: {statement.command} on {table} without {privilege} privilege{note}")
            whole = statement.command == "copy" or (
                statement.command == "select" and not statement.flags & {"where", "limit", "group", "having"})
            rows = catalog.rows.get(table, 0.0)
            if whole and rows > export_rows:
                fired.setdefault("mass_export", []).append(
                    f"line {number}: {statement.command} of all of {table} (~{rows:,.0f} rows > {export_rows:,})")
    until = catalog.valid_until_at(session.user, session.started_at)
    if until is not None and session.started_at is not None and session.started_at > until:
        fired.setdefault("login_outside_validity", []).append(
            f"session started {session.started_at.isoformat()} after the role's validity then "
            f"({until.isoformat()})")
    return [{"rule": rule, "evidence": evidence[:10]} for rule, evidence in sorted(fired.items())]


def snapshot_rows(catalog: Catalog) -> list[dict]:
    """The current privilege readings of ``catalog`` as snapshot rows (observed_at, role, table, privilege,
    allowed), for ``gold/security/privilege_snapshot``."""
    return [{"observed_at": catalog.read_at, "role": role, "table_name": table, "privilege": privilege,
             "allowed": allowed} for (role, table, privilege), allowed in sorted(catalog.privileges.items())]


def with_history(catalog: Catalog, rows: Iterable[dict]) -> Catalog:
    """``catalog`` with earlier snapshot rows (any order) as its privilege history."""
    history: dict[tuple[str, str, str], list[tuple[dt.datetime, bool]]] = {}
    for row in sorted(rows, key=lambda r: r["observed_at"]):
        history.setdefault((row["role"], row["table_name"], row["privilege"]), []).append(
            (row["observed_at"], bool(row["allowed"])))
    catalog.privilege_history = history
    return catalog
