"""Compare bronze with its sources: row counts and per-column checksums
computed on both sides (SQL / aggregation pipeline in the source, Arrow
compute on the Delta table), type-aware so that representations never matter:
sums of numbers, of epoch microseconds, of byte lengths, counts of true and
of nulls.

Bronze holds the source minus the records quarantined for breaking their
contract: those (still absent from bronze) are left out of the source side and
counted in the result, so a bad record never reads as a difference. Bad data in
the source never makes verify fail with a traceback: the aggregations convert
defensively, and a store error becomes the table's result."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from bson import json_util
from pymongo.errors import PyMongoError

from paylake import contracts
from paylake.extract.mongo import MongoCollectionSource
from paylake.extract.run import sources
from paylake.settings import Settings
from paylake.stores import lake, mongo, postgres


@dataclass(frozen=True)
class VerifyResult:
    table: str
    source_rows: int  # every row of the source, quarantined ones included
    bronze_rows: int
    columns: int
    result: str  # "equal" or what differs
    quarantined: int = 0  # source rows in quarantine and not in bronze: left out of the comparison


def arrow_checksum(column: pa.ChunkedArray) -> tuple:
    """(null count, checksum) of a column, by type."""
    kind = column.type
    nulls = column.null_count
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind) \
            or pa.types.is_large_binary(kind):
        total = pc.sum(pc.binary_length(column)).as_py()
    elif pa.types.is_boolean(kind):
        total = pc.sum(column.cast(pa.int64())).as_py()
    elif pa.types.is_timestamp(kind):
        total = pc.sum(_wide(column.cast(pa.timestamp("us", tz=kind.tz)))).as_py()
    elif pa.types.is_date(kind):
        total = pc.sum(column.cast(pa.int32()).cast(pa.int64())).as_py()
    elif pa.types.is_decimal(kind) or pa.types.is_integer(kind):
        total = pc.sum(column).as_py()
    elif pa.types.is_floating(kind):
        value = pc.sum(column).as_py()
        total = round(value, 2) if value is not None else None
    else:
        total = None  # nested: counted, not summed
    return nulls, _normal(total)


def _wide(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Epoch microseconds as decimal: their sum overflows int64 from about 5,000 rows."""
    return column.cast(pa.int64()).cast(pa.decimal128(38, 0))


def _normal(value):
    if value is None:
        return 0
    if isinstance(value, Decimal | float):
        return Decimal(str(value)).normalize()
    return value


def postgres_checksum_sql(column: str, typname: str) -> str:
    """The SQL aggregate matching ``arrow_checksum`` for a catalog type."""
    if typname in ("text", "varchar", "bpchar", "bytea", "name"):
        return f"sum(octet_length({column}))"
    if typname in ("json", "jsonb", "uuid", "inet"):
        return f"sum(octet_length({column}::text))"
    if typname == "bool":
        return f"count(*) filter (where {column})"
    if typname == "timestamptz":
        return f"sum((extract(epoch from {column}) * 1000000)::numeric)"
    if typname == "date":
        return f"sum({column} - date '1970-01-01')"
    if typname in ("float4", "float8"):
        return f"round(sum({column})::numeric, 2)"
    return f"sum({column})"


def verify_bronze(settings: Settings, only: list[str] | None = None) -> list[VerifyResult]:
    results = []
    for source in sources(settings, only):
        uri = contracts.bronze(source).uri(settings)
        if not lake.table_exists(settings, uri):
            results.append(VerifyResult(f"{source.kind}.{source.name}", -1, 0, 0, "no bronze table"))
            continue
        bronze = lake.read_table(settings, uri)
        table = f"{source.kind}.{source.name}"
        try:
            results.append(source.verify(settings, bronze))
        except (PyMongoError, psycopg.Error) as exc:  # the source refused the checksum query
            reason = str(exc).splitlines()[0][:200]
            results.append(VerifyResult(table, -1, bronze.num_rows, 0, f"source checksum failed: {reason}"))
    return results


def quarantined_records(settings: Settings, source, bronze: pa.Table) -> list[tuple[str, str]]:
    """(key as text, raw record) of the source's quarantined records that are not
    in bronze (a record fixed at the source and extracted since is in both)."""
    uri = contracts.quarantine(source).uri(settings)
    if not lake.table_exists(settings, uri):
        return []
    keys = lake.read_table(settings, uri, columns=["key", "raw"])
    present = set(pc.cast(bronze[source.keys[0]], pa.string()).to_pylist()) if len(source.keys) == 1 else set()
    seen, kept = set(), []
    for key, raw in zip(keys["key"].to_pylist(), keys["raw"].to_pylist()):
        if key not in present and key not in seen:
            seen.add(key)
            kept.append((key, raw))
    return kept


def verify_postgres(settings: Settings, source, bronze: pa.Table) -> VerifyResult:
    types = {c[0]: c[1] for c in source.table.columns}
    columns = source.table.extracted_columns
    aggregates = ", ".join(f"count(*) - count({c}), {postgres_checksum_sql(c, types[c])}" for c in columns)
    where, params = "", []
    if len(source.keys) == 1:  # composite keys: the database's constraints leave nothing to quarantine
        keys = [key for key, _ in quarantined_records(settings, source, bronze)]
        if keys:
            where, params = f" where {source.keys[0]}::text <> all(%s)", [keys]
    with postgres.connect(settings) as conn:
        (total,) = conn.execute(f"select count(*) from {source.table.qualified}").fetchone()
        row = conn.execute(f"select count(*), {aggregates} from {source.table.qualified}{where}", params).fetchone()
    excluded = total - row[0]
    expected = {c: (row[1 + 2 * i], _normal(row[2 + 2 * i])) for i, c in enumerate(columns)}
    actual = {c: arrow_checksum(bronze[c]) for c in columns}
    return _compare(f"postgres.{source.name}", total, bronze.num_rows, expected, actual, excluded)


def verify_mongo(settings: Settings, source: MongoCollectionSource, bronze: pa.Table) -> VerifyResult:
    schema = source.data_schema()
    scalars = [f for f in schema if f.name != "_id" and (pa.types.is_integer(f.type) or pa.types.is_string(f.type)
                                                          or pa.types.is_timestamp(f.type)
                                                          or pa.types.is_binary(f.type))]
    group: dict = {"_id": None, "rows": {"$sum": 1}}
    for i, f in enumerate(scalars):
        if pa.types.is_string(f.type):
            group[f"c{i}"] = {"$sum": {"$cond": [{"$eq": [{"$type": f"${f.name}"}, "string"]},
                                                 {"$strLenBytes": f"${f.name}"}, 0]}}
        elif pa.types.is_binary(f.type):  # sealed fields: their sizes
            group[f"c{i}"] = {"$sum": {"$cond": [{"$eq": [{"$type": f"${f.name}"}, "binData"]},
                                                 {"$binarySize": f"${f.name}"}, 0]}}
        elif pa.types.is_timestamp(f.type):  # dates only: a string is no date, whatever it says
            group[f"c{i}"] = {"$sum": {"$cond": [{"$eq": [{"$type": f"${f.name}"}, "date"]},
                                                 {"$toLong": f"${f.name}"}, 0]}}
        else:
            group[f"c{i}"] = {"$sum": f"${f.name}"}
    excluded_ids = [json_util.loads(raw)["_id"] for _, raw in quarantined_records(settings, source, bronze)]
    stages: list[dict] = [{"$match": {"_id": {"$nin": excluded_ids}}}] if excluded_ids else []
    with mongo.client(settings) as client:
        collection = mongo.database(client, settings)[source.collection]
        found = list(collection.aggregate([*stages, {"$group": group}]))
    totals = found[0] if found else {"rows": 0}
    expected, actual = {}, {}
    for i, f in enumerate(scalars):
        value = totals.get(f"c{i}", 0)
        column = bronze[f.name]
        if pa.types.is_timestamp(f.type):
            mine = pc.sum(_wide(column)).as_py() or 0
            expected[f.name], actual[f.name] = _normal(value * 1000), _normal(mine)  # ms in BSON, us in the lake
        else:
            expected[f.name], actual[f.name] = _normal(value), arrow_checksum(column)[1]
    rows = totals.get("rows", 0)
    return _compare(f"mongo.{source.name}", rows + len(excluded_ids) if excluded_ids else rows, bronze.num_rows,
                    expected, actual, len(excluded_ids))


def _compare(table: str, source_rows: int, bronze_rows: int, expected: dict, actual: dict,
             quarantined: int = 0) -> VerifyResult:
    differing = [c for c in expected if expected[c] != actual[c]]
    if source_rows - quarantined != bronze_rows:
        result = f"row count differs ({source_rows - quarantined:,} expected vs {bronze_rows:,})"
    elif differing:
        result = "checksum differs: " + ", ".join(differing)
    else:
        result = "equal"
    return VerifyResult(table, source_rows, bronze_rows, len(expected), result, quarantined)
