"""The star schema's DDL (``sql/snowflake/*.sql``) read as data: the one truth.

Pure functions: parse the ``create table`` statements into tables, columns,
Snowflake types, nullability, primary, unique and foreign keys, and map each
Snowflake type to the Arrow type of the gold Delta tables:

==========================================  =======================
Snowflake                                   Arrow
==========================================  =======================
INTEGER (INT, BIGINT, ...), NUMBER(38,0),   int64
NUMBER
NUMBER(p,s) (DECIMAL, NUMERIC)              decimal128(p, s)
VARCHAR (VARCHAR(n), STRING, TEXT)          string
DATE                                        date32
TIMESTAMP_NTZ                               timestamp[us] (no zone)
BOOLEAN                                     bool
FLOAT (DOUBLE, REAL)                        float64
==========================================  =======================

Columns declared ``not null`` are non-nullable Arrow fields. Field names keep
the DDL's PascalCase spelling (Snowflake stores them upper-case; lookups here
are case-insensitive).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from paylake.errors import ConfigError, ContractError

DDL_DIR = Path(__file__).resolve().parents[3] / "sql" / "snowflake"
SECURITY_DDL_DIR = DDL_DIR / "security"
REALTIME_DDL_DIR = DDL_DIR / "realtime"

_INTEGER_TYPES = {"INT", "INTEGER", "BIGINT", "SMALLINT", "TINYINT", "BYTEINT"}
_DECIMAL_TYPES = {"NUMBER", "DECIMAL", "NUMERIC"}
_STRING_TYPES = {"VARCHAR", "STRING", "TEXT", "CHAR", "CHARACTER"}
_FLOAT_TYPES = {"FLOAT", "FLOAT4", "FLOAT8", "DOUBLE", "DOUBLE PRECISION", "REAL"}

_CREATE_TABLE = re.compile(r"^create\s+(?:or\s+replace\s+)?table\s+(?:if\s+not\s+exists\s+)?([\w.]+)\s*\(",
                           re.IGNORECASE)
_COLUMN = re.compile(r"^(\w+)\s+((?:double\s+precision)|\w+)\s*(\(\s*\d+\s*(?:,\s*\d+\s*)?\))?(.*)$",
                     re.IGNORECASE | re.DOTALL)
_PRIMARY_KEY = re.compile(r"^(?:constraint\s+\w+\s+)?primary\s+key\s*\(([^)]*)\)", re.IGNORECASE)
_UNIQUE = re.compile(r"^(?:constraint\s+\w+\s+)?unique\s*\(([^)]*)\)", re.IGNORECASE)
_FOREIGN_KEY = re.compile(r"^(?:constraint\s+\w+\s+)?foreign\s+key\s*\(([^)]*)\)\s*references\s+([\w.]+)\s*"
                          r"\(([^)]*)\)", re.IGNORECASE)
_TABLE_COMMENT = re.compile(r"^\s*comment\s*=\s*'((?:[^']|'')*)'", re.IGNORECASE)


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str  # normalised, e.g. "NUMBER(18,2)", "VARCHAR", "TIMESTAMP_NTZ"
    nullable: bool


@dataclass(frozen=True)
class ForeignKey:
    columns: tuple[str, ...]
    table: str  # the referenced table
    references: tuple[str, ...]  # its columns


@dataclass(frozen=True)
class StarTable:
    """One table of the star as declared in the DDL."""

    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    unique: tuple[tuple[str, ...], ...]
    foreign_keys: tuple[ForeignKey, ...]
    comment: str
    statement: str  # the create statement, as written

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


# ----------------------------------------------------------------------------- parsing (pure)
def split_statements(text: str) -> list[str]:
    """The SQL statements of ``text``, ``--`` comments removed, split on ``;``
    outside string literals."""
    statements, current, in_string, i = [], [], False, 0
    while i < len(text):
        char = text[i]
        if in_string:
            current.append(char)
            if char == "'":
                in_string = False
        elif char == "'":
            in_string = True
            current.append(char)
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        elif char == ";":
            statements.append("".join(current).strip())
            current = []
        else:
            current.append(char)
        i += 1
    statements.append("".join(current).strip())
    return [s for s in statements if s]


def _split_top_level(body: str) -> list[str]:
    """Split a parenthesised list on commas outside parentheses and strings."""
    parts, current, depth, in_string = [], [], 0, False
    for char in body:
        if in_string:
            in_string = char != "'"
        elif char == "'":
            in_string = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    parts.append("".join(current).strip())
    return [p for p in parts if p]


def _closing_paren(text: str, start: int) -> int:
    """Index of the parenthesis closing the one at ``start``."""
    depth, in_string = 0, False
    for i in range(start, len(text)):
        char = text[i]
        if in_string:
            in_string = char != "'"
        elif char == "'":
            in_string = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return i
    raise ConfigError(f"unbalanced parentheses in star DDL statement: {text[:80]!r}...: fix sql/snowflake")


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _normalise_type(base: str, args: str | None) -> str:
    base = " ".join(base.upper().split())
    args = re.sub(r"\s+", "", args or "")
    return f"{base}{args}"


def _strip_column_comment(rest: str) -> str:
    return re.sub(r"\bcomment\s+'(?:[^']|'')*'", "", rest, flags=re.IGNORECASE)


def parse_create_table(statement: str) -> StarTable:
    """One ``create table`` statement as a StarTable."""
    match = _CREATE_TABLE.match(statement)
    if not match:
        raise ConfigError(f"not a create table statement: {statement[:80]!r}...: fix sql/snowflake")
    name = match.group(1).split(".")[-1]
    open_at = match.end() - 1
    close_at = _closing_paren(statement, open_at)
    columns: list[Column] = []
    primary_key: tuple[str, ...] = ()
    unique: list[tuple[str, ...]] = []
    foreign_keys: list[ForeignKey] = []
    for item in _split_top_level(statement[open_at + 1:close_at]):
        if found := _PRIMARY_KEY.match(item):
            primary_key = _names(found.group(1))
        elif found := _UNIQUE.match(item):
            unique.append(_names(found.group(1)))
        elif found := _FOREIGN_KEY.match(item):
            foreign_keys.append(ForeignKey(_names(found.group(1)), found.group(2).split(".")[-1],
                                           _names(found.group(3))))
        elif found := _COLUMN.match(item):
            rest = _strip_column_comment(found.group(4))
            if re.search(r"\bprimary\s+key\b|\breferences\b", rest, re.IGNORECASE):
                raise ConfigError(f"{name}.{found.group(1)}: declare keys as table constraints "
                                  "(constraint ... primary key / foreign key): fix sql/snowflake")
            nullable = not re.search(r"\bnot\s+null\b", rest, re.IGNORECASE)
            columns.append(Column(found.group(1), _normalise_type(found.group(2), found.group(3)), nullable))
        else:
            raise ConfigError(f"{name}: cannot read {item!r} in the star DDL: fix sql/snowflake")
    comment = _TABLE_COMMENT.match(statement[close_at + 1:])
    table = StarTable(name, tuple(columns), primary_key, tuple(unique), tuple(foreign_keys),
                      comment.group(1).replace("''", "'") if comment else "", statement)
    _check_keys(table)
    return table


def _check_keys(table: StarTable) -> None:
    known = {c.lower() for c in table.column_names}
    keys = [*table.primary_key, *(c for u in table.unique for c in u),
            *(c for fk in table.foreign_keys for c in fk.columns)]
    unknown = [k for k in keys if k.lower() not in known]
    if unknown:
        raise ConfigError(f"{table.name}: key column(s) {', '.join(unknown)} are not columns of the table: "
                          "fix sql/snowflake")
    if not table.primary_key:
        raise ConfigError(f"{table.name} has no primary key: declare one in sql/snowflake")


def parse_tables(text: str) -> dict[str, StarTable]:
    """Every ``create table`` statement of a DDL text, by table name, in file order."""
    tables = {}
    for statement in split_statements(text):
        if _CREATE_TABLE.match(statement):
            table = parse_create_table(statement)
            tables[table.name] = table
    return tables


def parse_ddl(text: str) -> dict[str, list[tuple[str, str]]]:
    """``{table_name: [(column, snowflake_type)]}`` of a DDL text."""
    return {name: [(c.name, c.sql_type) for c in table.columns] for name, table in parse_tables(text).items()}


# ----------------------------------------------------------------------------- types (pure)
def arrow_type(sql_type: str) -> pa.DataType:
    """The Arrow type of a Snowflake column type (see the module docstring)."""
    match = re.fullmatch(r"\s*([A-Za-z_0-9 ]+?)\s*(?:\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\))?\s*", sql_type)
    if not match:
        raise ConfigError(f"unknown Snowflake type {sql_type!r} in the star DDL: fix sql/snowflake")
    base = " ".join(match.group(1).upper().split())
    precision = int(match.group(2)) if match.group(2) else None
    scale = int(match.group(3)) if match.group(3) else 0
    if base in _INTEGER_TYPES:
        return pa.int64()
    if base in _DECIMAL_TYPES:
        if precision is None or (precision == 38 and scale == 0):
            return pa.int64()
        return pa.decimal128(precision, scale)
    if base in _STRING_TYPES:
        return pa.string()
    if base == "DATE":
        return pa.date32()
    if base in {"TIMESTAMP_NTZ", "DATETIME"}:
        return pa.timestamp("us")
    if base == "BOOLEAN":
        return pa.bool_()
    if base in _FLOAT_TYPES:
        return pa.float64()
    raise ConfigError(f"Snowflake type {sql_type!r} has no Arrow mapping in paylake.warehouse.star_ddl: "
                      "use INTEGER, NUMBER(p,s), VARCHAR, DATE, TIMESTAMP_NTZ, BOOLEAN or FLOAT")


def table_arrow_schema(table: StarTable) -> pa.Schema:
    """The Arrow schema of a parsed table (DDL column order and names)."""
    fields = [pa.field(c.name, arrow_type(c.sql_type), nullable=c.nullable) for c in table.columns]
    return pa.schema(fields)


# ----------------------------------------------------------------------------- the star (the DDL files)
@functools.cache
def star_tables(folder: Path = DDL_DIR) -> dict[str, StarTable]:
    """Every table of the star, parsed from ``sql/snowflake/*.sql`` (in file order)."""
    files = sorted(folder.glob("*.sql"))
    if not files:
        raise ConfigError(f"no star-schema DDL in {folder}: restore sql/snowflake/")
    tables: dict[str, StarTable] = {}
    for path in files:
        tables.update(parse_tables(path.read_text(encoding="utf-8")))
    return tables


def security_tables() -> dict[str, StarTable]:
    """The warehouse tables beside the star (``sql/snowflake/security/``: security alerts)."""
    return star_tables(SECURITY_DDL_DIR)


def realtime_tables() -> dict[str, StarTable]:
    """The real-time fraud tables beside the star (``sql/snowflake/realtime/``: ``paylake stream``)."""
    return star_tables(REALTIME_DDL_DIR)


def star_table(name: str) -> StarTable:
    """One table of the warehouse (the star, or the tables beside it) by name (case-insensitive)."""
    tables = {**star_tables(), **security_tables(), **realtime_tables()}
    by_lower = {key.lower(): table for key, table in tables.items()}
    table = by_lower.get(name.lower())
    if table is None:
        raise ConfigError(f"{name!r} is not a table of the star schema: use one of {', '.join(tables)}")
    return table


def table_names() -> list[str]:
    """The star's tables in DDL order (dimensions before the facts referencing them)."""
    return list(star_tables())


def arrow_schema(table: str) -> pa.Schema:
    """The Arrow schema the gold Delta table ``table`` must have."""
    return table_arrow_schema(star_table(table))


def primary_key(table: str) -> list[str]:
    """The primary-key columns of ``table``."""
    return list(star_table(table).primary_key)


def foreign_keys(table: str) -> list[ForeignKey]:
    """The foreign keys of ``table`` (facts to dimensions)."""
    return list(star_table(table).foreign_keys)


# ----------------------------------------------------------------------------- conforming data (pure)
def conform(table: str, data: pa.Table) -> pa.Table:
    """``data`` with exactly the columns of ``table``, in DDL order, names and
    Arrow types (names matched case-insensitively; extra columns dropped).

    A timestamp with a zone is converted to UTC wall time. Raises
    ContractError for a missing column, a value that does not fit its type,
    or a null in a ``not null`` column."""
    schema = arrow_schema(table)
    by_lower = {name.lower(): name for name in data.column_names}
    missing = [f.name for f in schema if f.name.lower() not in by_lower]
    if missing:
        raise ContractError(f"{table}: the data lacks column(s) {', '.join(missing)} of the star DDL: "
                            "align the gold builder with sql/snowflake")
    columns = []
    for field in schema:
        column = data[by_lower[field.name.lower()]]
        if field.nullable is False and column.null_count:
            raise ContractError(f"{table}.{field.name} is declared not null but {column.null_count} row(s) are "
                                "null: fix the gold builder (or use an 'unknown' member key)")
        if pa.types.is_timestamp(column.type) and column.type.tz is not None:
            column = column.cast(pa.timestamp(column.type.unit))  # the UTC instant, without its zone
        try:
            columns.append(column.cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ContractError(f"{table}.{field.name}: {column.type} values do not fit {field.type} ({exc}): "
                                "fix the gold builder") from exc
    return pa.Table.from_arrays(columns, schema=schema)


def duplicates(data: pa.Table, columns: list[str], *, sample: int = 3) -> tuple[int, list[dict]]:
    """How many values of ``columns`` occur more than once in ``data``, and a few of them."""
    counted = data.select(columns).group_by(columns).aggregate([([], "count_all")])
    repeated = counted.filter(pc.greater(counted["count_all"], 1))
    return repeated.num_rows, repeated.slice(0, sample).drop_columns(["count_all"]).to_pylist()
