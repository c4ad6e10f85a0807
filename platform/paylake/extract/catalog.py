"""The Arrow schema of a PostgreSQL table, derived from its catalog types, so
that every block of every task has exactly the same types."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from paylake.errors import ContractError

METADATA_FIELDS = [
    pa.field("_source", pa.string(), nullable=False),
    pa.field("_extracted_at", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("_batch_id", pa.int64(), nullable=False),
]

SIMPLE_TYPES = {
    "int2": pa.int16(), "int4": pa.int32(), "int8": pa.int64(), "bool": pa.bool_(),
    "float4": pa.float32(), "float8": pa.float64(),
    "text": pa.string(), "varchar": pa.string(), "bpchar": pa.string(), "name": pa.string(),
    "json": pa.string(), "jsonb": pa.string(), "uuid": pa.string(), "inet": pa.string(),
    "bytea": pa.binary(), "date": pa.date32(),
    "timestamptz": pa.timestamp("us", tz="UTC"), "timestamp": pa.timestamp("us"),
}
# Columns that never leave the OLTP system, whatever the table's grants say.
NEVER_EXTRACTED = {"customer": {"password"}}
CURSOR_COLUMNS = ("updatedat", "at")


def arrow_type(typname: str, typmod: int) -> pa.DataType:
    """The Arrow type of a PostgreSQL column type (numeric keeps its declared precision)."""
    if typname == "numeric":
        if typmod < 4:
            return pa.decimal128(38, 10)
        precision, scale = ((typmod - 4) >> 16) & 0xFFFF, (typmod - 4) & 0xFFFF
        return pa.decimal128(precision, scale)
    if typname in SIMPLE_TYPES:
        return SIMPLE_TYPES[typname]
    raise ContractError(f"PostgreSQL type {typname!r} has no Arrow mapping: add it to paylake.extract.catalog")


@dataclass(frozen=True)
class PgTable:
    """What extraction needs to know about one OLTP table."""

    schema_name: str
    name: str  # as in the catalog (lower case)
    columns: tuple[tuple[str, str, int, bool], ...]  # (name, typname, typmod, not null)
    primary_key: tuple[str, ...]
    partitions: tuple[tuple[str, float], ...]  # (child table, estimated rows) for partitioned tables
    estimated_rows: float

    @property
    def qualified(self) -> str:
        return f"{self.schema_name}.{self.name}"

    @property
    def extracted_columns(self) -> list[str]:
        hidden = NEVER_EXTRACTED.get(self.name, set())
        return [c[0] for c in self.columns if c[0] not in hidden]

    @property
    def cursor_column(self) -> str | None:
        names = {c[0] for c in self.columns}
        return next((c for c in CURSOR_COLUMNS if c in names), None)

    @property
    def split_key(self) -> str | None:
        """The integer key column used to split reads into ranges."""
        for name in self.primary_key:
            typname = next(c[1] for c in self.columns if c[0] == name)
            if typname in ("int2", "int4", "int8"):
                return name
        return None

    def arrow_schema(self) -> pa.Schema:
        by_name = {c[0]: c for c in self.columns}
        fields = [pa.field(n, arrow_type(by_name[n][1], by_name[n][2]), nullable=not by_name[n][3])
                  for n in self.extracted_columns]
        return pa.schema(fields)

    def bronze_schema(self) -> pa.Schema:
        return pa.schema(list(self.arrow_schema()) + METADATA_FIELDS)


def read_pg_table(conn, qualified: str) -> PgTable:
    """Read a table's columns, primary key, partitions and row estimate from the catalog."""
    schema_name, _, name = qualified.lower().partition(".")
    oid_row = conn.execute("select to_regclass(%s)::oid", (qualified.lower(),)).fetchone()
    if oid_row is None or oid_row[0] is None:
        raise ContractError(f"table {qualified} does not exist: run 'paylake db migrate'")
    oid = oid_row[0]
    columns = conn.execute(
        "select a.attname, t.typname, a.atttypmod, a.attnotnull from pg_attribute a"
        " join pg_type t on t.oid = a.atttypid where a.attrelid = %s and a.attnum > 0 and not a.attisdropped"
        " order by a.attnum", (oid,)).fetchall()
    key = conn.execute(
        "select a.attname from pg_index i cross join lateral unnest(i.indkey) with ordinality k(attnum, pos)"
        " join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum"
        " where i.indrelid = %s and i.indisprimary order by k.pos", (oid,)).fetchall()
    partitions = conn.execute(
        "select n.nspname || '.' || c.relname, greatest(c.reltuples, 0) from pg_inherits i"
        " join pg_class c on c.oid = i.inhrelid join pg_namespace n on n.oid = c.relnamespace"
        " where i.inhparent = %s order by c.relname", (oid,)).fetchall()
    (estimate,) = conn.execute("select greatest(reltuples, 0) from pg_class where oid = %s", (oid,)).fetchone()
    if partitions:
        estimate = sum(p[1] for p in partitions)
    return PgTable(schema_name, name, tuple(tuple(c) for c in columns), tuple(k[0] for k in key),
                   tuple((p[0], float(p[1])) for p in partitions), float(estimate))


def list_pg_tables(conn, schema_name: str = "oltp") -> list[str]:
    """Every ordinary or partitioned table of the schema with a primary key (not partitions)."""
    rows = conn.execute(
        "select n.nspname || '.' || c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = %s and c.relkind in ('r', 'p') and not c.relispartition"
        " and exists (select 1 from pg_index i where i.indrelid = c.oid and i.indisprimary)"
        " order by c.relname", (schema_name,)).fetchall()
    return [r[0] for r in rows]
