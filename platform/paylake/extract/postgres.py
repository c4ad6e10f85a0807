"""PostgreSQL tables as a source: key ranges (by partition for partitioned
tables), each read with ``COPY ... TO STDOUT (FORMAT binary)`` through the ADBC
PostgreSQL driver straight into Arrow, then cast to the schema derived from
the catalog (numeric → decimal with its declared precision, timestamptz →
timestamp[us, UTC]) so that types never drift between blocks."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from paylake.extract.catalog import PgTable
from paylake.extract.plan import partitions_for, plan_ranges
from paylake.settings import Settings

QUARANTINE_SCHEMA = pa.schema([("key", pa.string()), ("reason", pa.string()), ("raw", pa.string())])


@dataclass(frozen=True)
class PgReadTask:
    relation: str  # the table, or one of its partitions
    key: str | None
    lo: int | None
    hi: int | None
    cursor_column: str | None
    since: dt.datetime | None


class PostgresTableSource:
    """One OLTP table: plan key ranges, read one range into Arrow (``extract.source.Source``)."""

    kind = "postgres"
    needs_slot = True  # deletes reach bronze through the database's replication slot

    def __init__(self, table: PgTable) -> None:
        self.table = table
        self.name = table.name
        self.keys = list(table.primary_key)
        self.cursor_column = table.cursor_column

    @property
    def source_id(self) -> str:
        return f"postgres:{self.table.qualified}"

    def bronze_path(self) -> tuple[str, ...]:
        return ("bronze", "postgres", self.table.name)

    def data_schema(self) -> pa.Schema:
        return self.table.arrow_schema()

    def changed_predicate(self) -> str | None:
        """When a matched bronze row is replaced: its change timestamp moved, or
        (no such column) any column differs."""
        if self.cursor_column == "updatedat":
            return "s.`updatedat` <> t.`updatedat`"
        others = [c for c in self.table.extracted_columns if c not in self.keys]
        if not others:
            return "false"
        return " or ".join(f"not (s.`{c}` <=> t.`{c}`)" for c in others)

    def plan(self, handles, since: dt.datetime | None, *, rows_per_task: int, max_tasks: int) -> list[PgReadTask]:
        """Read tasks for a full load (``since`` None) or the rows changed since ``since``."""
        conn = handles.postgres
        key, cursor = self.table.split_key, self.cursor_column
        if since is not None and cursor is None:
            since = None  # no change column: re-read and let the merge find the differences
        relations = [(self.table.qualified, self.table.estimated_rows)]
        if since is None and self.table.partitions:
            relations = list(self.table.partitions)
        tasks: list[PgReadTask] = []
        for relation, estimate in relations:
            where, params = ("", ())
            if since is not None:
                where, params = (f" where {cursor} >= %s", (since,))
                (estimate,) = conn.execute(f"select count(*) from {relation}{where}", params).fetchone()
                if not estimate:
                    continue
            if key is None:
                tasks.append(PgReadTask(relation, None, None, None, cursor, since))
                continue
            low, high = conn.execute(f"select min({key}), max({key}) from {relation}{where}", params).fetchone()
            if low is None:
                continue
            parts = partitions_for(int(estimate), rows_per_task, max_tasks)
            tasks += [PgReadTask(relation, key, lo, hi, cursor, since) for lo, hi in plan_ranges(low, high, parts)]
        return tasks

    def verify(self, settings: Settings, bronze: pa.Table):
        from paylake.extract.verify import verify_postgres

        return verify_postgres(settings, self, bronze)

    def read(self, settings: Settings, task: PgReadTask) -> tuple[pa.Table, pa.Table]:
        """(rows in the bronze data schema, quarantined rows with reasons)."""
        import adbc_driver_postgresql.dbapi as adbc

        # numeric travels as text: ADBC's numeric decoding costs twice the rest of the row; conform casts it
        types = {c[0]: c[1] for c in self.table.columns}
        columns = ", ".join(f"{c}::text as {c}" if types[c] == "numeric" else c for c in self.table.extracted_columns)
        conditions = []
        if task.key is not None:
            conditions.append(f"{task.key} >= {int(task.lo)} and {task.key} < {int(task.hi)}")
        if task.since is not None:
            conditions.append(f"{task.cursor_column} >= '{task.since.isoformat()}'::timestamptz")
        query = f"select {columns} from {task.relation}" + (" where " + " and ".join(conditions) if conditions
                                                           else "")
        with adbc.connect(settings.postgres_dsn.get_secret_value()) as conn, conn.cursor() as cur:
            cur.execute(query)
            table = cur.fetch_arrow_table()
        return conform(table, self.data_schema(), self.keys)


def conform(table: pa.Table, schema: pa.Schema, keys: list[str]) -> tuple[pa.Table, pa.Table]:
    """Cast every column to the catalog-derived type. The whole table is cast in
    one go; only when that fails are rows tested one by one to find the culprits."""
    columns = [_storage(table[f.name]) for f in schema]
    try:
        return pa.table([c.cast(f.type) for c, f in zip(columns, schema)], schema=schema), \
            QUARANTINE_SCHEMA.empty_table()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    bad = [False] * table.num_rows
    reasons = [""] * table.num_rows
    for column, field in zip(columns, schema):
        try:
            column.cast(field.type)
            continue
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        for i, value in enumerate(column.to_pylist()):  # slow path: only for a column that failed
            try:
                pa.array([value], column.type).cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                bad[i] = True
                reasons[i] = (reasons[i] + "; " if reasons[i] else "") + f"{field.name}: {exc}"
    mask = pa.array(bad)
    good = pa.table([c.filter(pc.invert(mask)).cast(f.type) for c, f in zip(columns, schema)], schema=schema)
    rejected = table.filter(mask)
    raw = [json.dumps(row, default=str) for row in rejected.to_pylist()]
    keys_text = ["/".join(str(row[k]) for k in keys) for row in rejected.to_pylist()]
    return good, pa.table({"key": keys_text, "reason": [r for r, b in zip(reasons, bad) if b], "raw": raw},
                          schema=QUARANTINE_SCHEMA)


def _storage(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """ADBC returns numeric as an opaque extension over strings: use the storage."""
    if isinstance(column.type, pa.ExtensionType):
        return pa.chunked_array([c.storage for c in column.chunks], column.type.storage_type)
    return column
