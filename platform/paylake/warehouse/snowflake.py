"""Load the gold star tables into Snowflake, and prove they arrived.

``apply_ddl`` creates the database, schema and tables of the star DDL
(``sql/snowflake/``) when missing. ``load_table`` loads one table:

1. conform the Arrow data to the DDL (``star_ddl.conform``: column order,
   types, not-null; a zoned timestamp becomes UTC wall time, TIMESTAMP_NTZ has
   no zone) and check its primary and unique keys are unique. These are the
   only casts: COPY's Parquet reader maps pyarrow's int64, decimal128(p,s),
   date32, timestamp[us], bool, string and float64 onto NUMBER(38,0),
   NUMBER(p,s), DATE, TIMESTAMP_NTZ, BOOLEAN, VARCHAR and FLOAT as they are
   (checked against fakesnow);
2. write it as one Parquet file and ``PUT`` it (``AUTO_COMPRESS = FALSE``: the
   Parquet is zstd-compressed inside) to the named internal stage
   ``@<db>.<schema>.PAYLAKE_STAGE/<table>/<load_id>/`` under a name unique to
   this attempt;
3. (re)create ``<table>_STAGING`` empty, ``like`` the target, and ``COPY INTO`` it
   with ``MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE`` (``FORCE``: a file is
   loaded even if Snowflake's load history has seen it; ``PURGE``: the staged
   file is removed once loaded); the rows loaded must equal the rows sent;
4. check every foreign key of the staged rows against its dimension, and that
   no staged row would change the natural (unique) key of a surrogate key;
5. in one transaction (BEGIN … COMMIT, ROLLBACK on error): ``MERGE`` on the
   primary key — update the other columns of rows where any differs, insert
   the new ones — and, for ``replace_dates``, delete the target rows of those
   DateKeys that are not in the data.

A re-run with the same data changes nothing (0 inserted, 0 updated, 0
deleted). Unique (natural-key) columns are never rewritten by the MERGE: they
are fixed for a surrogate key (step 4 refuses data that would change them).
One loader per table at a time: the staging table is shared.

``reconcile`` compares the row count and the sum of every numeric column of
the data with Snowflake's table (restricted to ``replace_dates`` when given).

Local stack notes (fakesnow, which runs the SQL on DuckDB): the session runs
with AUTOCOMMIT off, because fakesnow can run a MERGE inside BEGIN … COMMIT
only then; DuckDB enforces the declared keys (Snowflake does not), which is why
the checks above run before the MERGE rather than letting a statement fail.
"""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from snowflake.connector.errors import Error as SnowflakeError

from paylake.errors import ConfigError, ContractError, PaylakeError
from paylake.settings import Settings
from paylake.stores import snowflake as snowflake_store
from paylake.warehouse import star_ddl

log = logging.getLogger(__name__)

STAGE_NAME = "PAYLAKE_STAGE"
STAGING_SUFFIX = "_STAGING"
DATE_KEY = "DateKey"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
_LOAD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class WarehouseError(PaylakeError):
    """A statement against the warehouse failed (the target is left as it was)."""


class ReconciliationError(ContractError):
    """The table in Snowflake does not hold what was loaded."""


@dataclass(frozen=True)
class LoadResult:
    """What one ``load_table`` changed."""

    table: str
    load_id: str
    rows_staged: int
    inserted: int
    updated: int
    deleted: int
    seconds: float


# ----------------------------------------------------------------------------- names
def _identifier(value: str, what: str) -> str:
    if not _IDENTIFIER.match(value):
        raise ConfigError(f"{what} {value!r} is not a plain Snowflake identifier: fix PAYLAKE_SNOWFLAKE_*")
    return value.upper()


def schema_name(settings: Settings) -> str:
    """``<database>.<schema>`` of the star, from the settings."""
    return (f"{_identifier(settings.snowflake_database, 'Snowflake database')}."
            f"{_identifier(settings.snowflake_schema, 'Snowflake schema')}")


def qualified(settings: Settings, table: str) -> str:
    """``<database>.<schema>.<TABLE>`` of a star table."""
    return f"{schema_name(settings)}.{table.upper()}"


# ----------------------------------------------------------------------------- SQL text (pure)
def merge_sql(table: star_ddl.StarTable, target: str, staging: str) -> str:
    """MERGE of ``staging`` into ``target`` on the primary key: update the
    updatable columns when any differs, insert rows not matched."""
    keys = list(table.primary_key)
    fixed = {c.lower() for c in keys} | {c.lower() for u in table.unique for c in u}
    updatable = [c for c in table.column_names if c.lower() not in fixed]
    columns = table.column_names
    lines = [f"merge into {target} as t using {staging} as s",
             "on " + " and ".join(f"t.{k} = s.{k}" for k in keys)]
    if updatable:
        changed = " or ".join(f"t.{c} is distinct from s.{c}" for c in updatable)
        lines.append(f"when matched and ({changed}) then update set "
                     + ", ".join(f"{c} = s.{c}" for c in updatable))
    lines.append(f"when not matched then insert ({', '.join(columns)}) "
                 f"values ({', '.join(f's.{c}' for c in columns)})")
    return "\n".join(lines)


def delete_replaced_sql(table: star_ddl.StarTable, target: str, staging: str, date_keys: Sequence[int]) -> str:
    """DELETE of the target rows of ``date_keys`` whose key is not in ``staging``."""
    name = target.split(".")[-1]
    match = " and ".join(f"s.{k} = {name}.{k}" for k in table.primary_key)
    dates = ", ".join(str(int(d)) for d in date_keys)
    return (f"delete from {target} where {DATE_KEY} in ({dates}) "
            f"and not exists (select 1 from {staging} s where {match})")


def delete_missing_sql(table: star_ddl.StarTable, target: str, staging: str) -> str:
    """DELETE of the target rows whose primary key is not in ``staging`` (a whole-table load)."""
    name = target.split(".")[-1]
    match = " and ".join(f"s.{k} = {name}.{k}" for k in table.primary_key)
    return f"delete from {target} where not exists (select 1 from {staging} s where {match})"


def referencing_sql(table: star_ddl.StarTable, schema: str, staging: str) -> str | None:
    """One query counting the rows of other star tables that refer to a row of
    ``table`` whose key is not in ``staging`` (what a prune would orphan)."""
    counts = []
    for other in star_ddl.star_tables().values():
        for fk in other.foreign_keys:
            if fk.table.upper() != table.name.upper():
                continue
            refers = " and ".join(f"d.{r} = f.{c}" for c, r in zip(fk.columns, fk.references))
            kept = " and ".join(f"s.{r} = f.{c}" for c, r in zip(fk.columns, fk.references))
            counts.append(f"(select count(*) from {schema}.{other.name.upper()} f where exists (select 1 from "
                          f"{schema}.{table.name.upper()} d where {refers}) and not exists (select 1 from "
                          f"{staging} s where {kept}))")
    return ("select " + " + ".join(counts)) if counts else None


def integrity_sql(table: star_ddl.StarTable, schema: str, staging: str) -> tuple[str, list[str]] | None:
    """One query counting the staged rows that break a foreign key or would
    change the natural key of an existing surrogate key; with the label of each count."""
    checks, labels = [], []
    for fk in table.foreign_keys:
        match = " and ".join(f"d.{r} = s.{c}" for c, r in zip(fk.columns, fk.references))
        checks.append(f"(select count(*) from {staging} s where not exists "
                      f"(select 1 from {schema}.{fk.table.upper()} d where {match}))")
        labels.append(f"{', '.join(fk.columns)} not in {fk.table}")
    if table.unique:
        on = " and ".join(f"t.{k} = s.{k}" for k in table.primary_key)
        differs = " or ".join(f"t.{c} is distinct from s.{c}" for u in table.unique for c in u)
        checks.append(f"(select count(*) from {staging} s join {schema}.{table.name.upper()} t on {on} "
                      f"where {differs})")
        labels.append(f"a natural key ({'; '.join(', '.join(u) for u in table.unique)}) changing for an "
                      f"existing {', '.join(table.primary_key)}")
    if not checks:
        return None
    return "select " + ", ".join(f"{check} as c{i}" for i, check in enumerate(checks)), labels


def numeric_columns(schema: pa.Schema) -> list[str]:
    """Columns whose sum reconciliation compares (integers, decimals, floats)."""
    return [f.name for f in schema
            if pa.types.is_integer(f.type) or pa.types.is_decimal(f.type) or pa.types.is_floating(f.type)]


def sum_sql(column: str, kind: pa.DataType) -> str:
    """The SQL sum of a column, exact for integers and decimals: summed as
    NUMBER(38, scale) (also keeps fakesnow, which sums other numbers as DOUBLE, exact)."""
    if pa.types.is_floating(kind):
        return f"sum({column})"
    scale = kind.scale if pa.types.is_decimal(kind) else 0
    return f"sum(cast({column} as number(38, {scale})))"


def arrow_totals(data: pa.Table, columns: Sequence[str]) -> dict[str, object]:
    """Row count and exact sums (integers and decimals as Decimal, floats as float) of ``data``."""
    totals: dict[str, object] = {"rows": data.num_rows}
    for name in columns:
        column = data[name]
        if pa.types.is_integer(column.type):
            column = column.cast(pa.decimal128(38, 0))
        value = pc.sum(column).as_py()
        totals[name] = value if value is not None else 0
    return totals


def totals_differ(expected: object, actual: object) -> bool:
    """Whether two totals differ: exactly for integers and decimals, within rounding for floats."""
    if isinstance(expected, float) or isinstance(actual, float):
        a, b = float(expected), float(actual)
        return abs(a - b) > 1e-6 + 1e-9 * max(abs(a), abs(b))
    return Decimal(str(expected)) != Decimal(str(actual))


# ----------------------------------------------------------------------------- statements
def _run(cursor, sql: str, *, what: str) -> list[tuple]:
    """Execute one statement; a Snowflake error becomes a WarehouseError saying what failed."""
    try:
        cursor.execute(sql)
        return cursor.fetchall()
    except SnowflakeError as exc:
        raise WarehouseError(f"Snowflake failed to {what} ({exc.msg or type(exc).__name__}): "
                             "fix the cause and re-run the load (it is idempotent)") from exc


def _named_row(cursor, row: Sequence) -> dict[str, object]:
    return {d.name.lower(): value for d, value in zip(cursor.description, row)}


def _use_schema(cursor, settings: Settings) -> None:
    schema = schema_name(settings)
    try:
        cursor.execute(f"use schema {schema}")
    except SnowflakeError as exc:
        raise ConfigError(f"Snowflake schema {schema} is not there ({exc.msg}): apply the star DDL first "
                          "(paylake.warehouse.snowflake.apply_ddl)") from exc


def _names_in(cursor, sql: str, *, what: str) -> set[str]:
    rows = _run(cursor, sql, what=what)
    index = [d.name.lower() for d in cursor.description].index("name") if cursor.description else 0
    return {str(row[index]).upper() for row in rows}


# ----------------------------------------------------------------------------- DDL
def apply_ddl(settings: Settings, tables: dict[str, star_ddl.StarTable] | None = None) -> list[str]:
    """Create the star's database, schema and tables (or ``tables``) when missing (idempotent).
    Returns what was created (nothing on a second run). A table that exists
    with other columns than the DDL's is refused."""
    database = _identifier(settings.snowflake_database, "Snowflake database")
    schema = schema_name(settings)
    tables = star_ddl.star_tables() if tables is None else tables
    actions: list[str] = []
    with snowflake_store.connect(settings, with_database=False) as conn:
        cursor = conn.cursor()
        if database not in _names_in(cursor, f"show databases like '{database}'", what="list databases"):
            _run(cursor, f"create database if not exists {database}", what=f"create database {database}")
            actions.append(f"created database {database}")
        schemas = _names_in(cursor, f"show schemas like '{settings.snowflake_schema.upper()}' in database {database}",
                            what=f"list the schemas of {database}")
        if settings.snowflake_schema.upper() not in schemas:
            _run(cursor, f"create schema if not exists {schema}", what=f"create schema {schema}")
            actions.append(f"created schema {schema}")
        _use_schema(cursor, settings)
        existing = _existing_columns(cursor, settings)
        for name, table in tables.items():
            if name.upper() in existing:
                _check_columns(table, existing[name.upper()], schema)
                continue
            _run(cursor, table.statement, what=f"create table {schema}.{name.upper()}")
            actions.append(f"created table {schema}.{name.upper()}")
    for action in actions:
        log.info("star DDL: %s", action)
    return actions


def _existing_columns(cursor, settings: Settings) -> dict[str, set[str]]:
    database = settings.snowflake_database.upper()
    rows = _run(cursor, f"select table_name, column_name from {database}.information_schema.columns "
                        f"where table_schema = '{settings.snowflake_schema.upper()}'",
                what=f"list the tables of {schema_name(settings)}")
    existing: dict[str, set[str]] = {}
    for table_name, column_name in rows:
        existing.setdefault(str(table_name).upper(), set()).add(str(column_name).upper())
    return existing


def _check_columns(table: star_ddl.StarTable, columns: set[str], schema: str) -> None:
    expected = {c.upper() for c in table.column_names}
    if columns != expected:
        missing, extra = sorted(expected - columns), sorted(columns - expected)
        raise ConfigError(f"{schema}.{table.name.upper()} exists with other columns than sql/snowflake "
                          f"(missing: {', '.join(missing) or '-'}; extra: {', '.join(extra) or '-'}): "
                          "migrate the table (ALTER TABLE) or drop it, then apply the DDL again")


# ----------------------------------------------------------------------------- load
def load_table(settings: Settings, table_name: str, data: pa.Table, *, load_id: str,
               replace_dates: Sequence[int] | None = None) -> LoadResult:
    """Load ``data`` into the star table ``table_name`` (see the module docstring).

    ``load_id`` names the load in the stage path (letters, digits, ``_.-``).
    ``replace_dates`` (DateKeys, fact tables) also deletes, in the same
    transaction, the target rows of those dates that are not in ``data``."""
    began = time.perf_counter()
    table = star_ddl.star_table(table_name)
    if not _LOAD_ID.match(load_id):
        raise ConfigError(f"load id {load_id!r}: use letters, digits, '_', '.' or '-' (starting with a letter or "
                          "digit)")
    if replace_dates is not None and DATE_KEY.lower() not in {c.lower() for c in table.column_names}:
        raise ConfigError(f"{table.name} has no {DATE_KEY}: replace_dates applies to fact tables only")
    data = star_ddl.conform(table.name, data)
    _check_unique(table, data)
    schema, target = schema_name(settings), qualified(settings, table.name)
    staging = f"{target}{STAGING_SUFFIX}"
    with _session(settings) as (conn, cursor):
        _run(cursor, f"create stage if not exists {schema}.{STAGE_NAME}", what=f"create stage {STAGE_NAME}")
        _run(cursor, f"create or replace table {staging} like {target}", what=f"create {staging}")
        staged = _stage(cursor, settings, table, data, staging, load_id)
        _check_integrity(cursor, table, schema, staging)
        inserted, updated, deleted = _merge(cursor, conn, table, target, staging, replace_dates)
    result = LoadResult(table.name, load_id, staged, inserted, updated, deleted, time.perf_counter() - began)
    log.info("loaded %s (load %s): %d staged, %d inserted, %d updated, %d deleted in %.2f s", table.name,
             load_id, staged, inserted, updated, deleted, result.seconds)
    return result


def _check_unique(table: star_ddl.StarTable, data: pa.Table) -> None:
    for columns in (table.primary_key, *table.unique):
        count, sample = star_ddl.duplicates(data, list(columns))
        if count:
            raise ContractError(f"{table.name}: {count} value(s) of ({', '.join(columns)}) occur more than once "
                                f"in the data, e.g. {sample}: fix the gold builder (keys must be unique)")


def _stage(cursor, settings: Settings, table: star_ddl.StarTable, data: pa.Table, staging: str,
           load_id: str) -> int:
    """PUT the data as Parquet and COPY it into the (new, empty) staging table; returns the rows loaded."""
    stage_path = f"@{schema_name(settings)}.{STAGE_NAME}/{table.name}/{load_id}/"
    file_name = f"{table.name}-{uuid.uuid4().hex[:12]}.parquet"
    with tempfile.TemporaryDirectory(prefix="paylake-load-") as folder:
        local = Path(folder) / file_name
        pq.write_table(data, local, compression="zstd")
        _run(cursor, f"put 'file://{local.as_posix()}' {stage_path} auto_compress = false overwrite = true",
             what=f"PUT {file_name} to {stage_path}")
    rows = _run(cursor, f"copy into {staging} from {stage_path}{file_name} "
                        "file_format = (type = parquet) match_by_column_name = case_insensitive "
                        "force = true purge = true", what=f"COPY {stage_path}{file_name} into {staging}")
    loaded = sum(int(_named_row(cursor, row).get("rows_loaded") or 0) for row in rows)
    _run(cursor, "commit", what=f"commit {staging}")
    if loaded != data.num_rows:
        raise WarehouseError(f"COPY INTO {staging} loaded {loaded} row(s) of {data.num_rows} sent "
                             f"({stage_path}{file_name}): the target is unchanged; re-run the load")
    return loaded


def _check_integrity(cursor, table: star_ddl.StarTable, schema: str, staging: str) -> None:
    query = integrity_sql(table, schema, staging)
    if query is None:
        return
    sql, labels = query
    (counts,) = _run(cursor, sql, what=f"check the keys of {staging}")
    problems = [f"{count} row(s) with {label}" for count, label in zip(counts, labels) if count]
    if problems:
        raise ContractError(f"{table.name}: {'; '.join(problems)}: load the dimensions first (in DDL order) "
                            "and keep surrogate keys stable; the target is unchanged")


@contextlib.contextmanager
def _session(settings: Settings):
    """A cursor in the star's schema, AUTOCOMMIT off (see the module docstring)."""
    with snowflake_store.connect(settings) as conn:
        cursor = conn.cursor()
        _use_schema(cursor, settings)
        conn.autocommit(False)
        yield conn, cursor


@contextlib.contextmanager
def _transaction(cursor, conn, what: str):
    """BEGIN … COMMIT around the block, ROLLBACK when it fails."""
    _run(cursor, "begin", what=f"begin {what}")
    try:
        yield
        _run(cursor, "commit", what=f"commit {what}")
    except BaseException:
        try:
            conn.rollback()
        except SnowflakeError:
            log.warning("rollback of %s failed; Snowflake rolls back when the session ends", what)
        raise


def _merge(cursor, conn, table: star_ddl.StarTable, target: str, staging: str,
           replace_dates: Sequence[int] | None) -> tuple[int, int, int]:
    """MERGE (and the DELETE of replaced dates) in one transaction; returns (inserted, updated, deleted)."""
    deleted = 0
    with _transaction(cursor, conn, f"the load of {target}"):
        (row,) = _run(cursor, merge_sql(table, target, staging), what=f"MERGE {staging} into {target}")
        counts = _named_row(cursor, row)
        if replace_dates:
            _run(cursor, delete_replaced_sql(table, target, staging, replace_dates),
                 what=f"delete the replaced dates of {target}")
            deleted = cursor.rowcount or 0
    return (int(counts.get("number of rows inserted") or 0), int(counts.get("number of rows updated") or 0),
            int(deleted))


def prune_table(settings: Settings, table_name: str, data: pa.Table) -> int:
    """Delete the rows of ``table_name`` whose primary key is not in ``data``
    (members deleted at the source), after ``load_table`` staged ``data`` and
    the facts were loaded: a member some fact still refers to is refused with
    the count. One transaction; returns the rows deleted."""
    table = star_ddl.star_table(table_name)
    schema, target = schema_name(settings), qualified(settings, table.name)
    staging = f"{target}{STAGING_SUFFIX}"
    with _session(settings) as (conn, cursor):
        (staged,) = _run(cursor, f"select count(*) from {staging}", what=f"count {staging}")
        if int(staged[0]) != data.num_rows:
            raise WarehouseError(f"{staging} holds {staged[0]} row(s), not the {data.num_rows} of this load "
                                 f"(another loader ran?): the target is unchanged; re-run the load")
        query = referencing_sql(table, schema, staging)
        if query is not None:
            ((orphans,),) = _run(cursor, query, what=f"count the facts referring to vanished {table.name} rows")
            if orphans:
                raise ContractError(f"{table.name}: {orphans} fact row(s) still refer to members deleted at the "
                                    "source: rebuild the facts ('paylake build-star') and load again")
        with _transaction(cursor, conn, f"the prune of {target}"):
            _run(cursor, delete_missing_sql(table, target, staging), what=f"delete the vanished rows of {target}")
            deleted = int(cursor.rowcount or 0)
    if deleted:
        log.info("pruned %s: %d row(s) deleted at the source", target, deleted)
    return deleted


# ----------------------------------------------------------------------------- reconcile
def reconcile(settings: Settings, table_name: str, data: pa.Table, *,
              replace_dates: Sequence[int] | None = None) -> None:
    """Check Snowflake's ``table_name`` holds ``data``: same row count and the
    same sum of every numeric column. With ``replace_dates`` only the rows of
    those DateKeys are compared (on both sides); otherwise the whole table
    (a full load). Raises ReconciliationError with the figures on a mismatch."""
    table = star_ddl.star_table(table_name)
    data = star_ddl.conform(table.name, data)
    columns = numeric_columns(data.schema)
    where = ""
    if replace_dates is not None:
        dates = pa.array([int(d) for d in replace_dates], pa.int64())
        data = data.filter(pc.is_in(data[DATE_KEY], value_set=dates))
        where = f" where {DATE_KEY} in ({', '.join(str(int(d)) for d in replace_dates) or 'null'})"
    expected = arrow_totals(data, columns)
    target = qualified(settings, table.name)
    sums = "".join(f", {sum_sql(c, data.schema.field(c).type)}" for c in columns)
    with snowflake_store.connect(settings) as conn:
        (row,) = _run(conn.cursor(), f"select count(*){sums} from {target}{where}", what=f"sum {target}")
    actual = dict(zip(["rows", *columns], [value if value is not None else 0 for value in row]))
    differences = [f"{'rows' if name == 'rows' else f'sum({name})'} {expected[name]} in the data vs "
                   f"{actual[name]} in Snowflake" for name in expected if totals_differ(expected[name], actual[name])]
    if differences:
        scope = f"DateKey in {len(replace_dates)} date(s)" if replace_dates is not None else "whole table"
        raise ReconciliationError(f"{target} ({scope}) does not match the loaded data: {'; '.join(differences)}: "
                                  "re-run the load, and check nothing else writes to the table")
    log.info("reconciled %s: %d row(s)", target, expected["rows"])
