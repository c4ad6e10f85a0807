"""MongoDB collections as a source: ``_id`` ranges from index bounds, reads
decoded straight into Arrow (pymongoarrow) with an explicit schema derived from
the collection's ``$jsonSchema`` (the one truth in ``mongo_model.SCHEMAS``).
Nested documents and arrays stay nested (struct, list<struct>).

Contracts are checked on the Arrow columns (required, enum, range, pattern);
a range whose documents do not even decode into the schema (a wrong type) is
split by the server's own ``$jsonSchema`` query operator. Only the invalid
documents are then fetched raw, with their reasons, for the quarantine.
"""

from __future__ import annotations

import datetime as dt
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from bson import ObjectId, json_util

from paylake.extract.plan import partitions_for, plan_ranges, plan_time_ranges
from paylake.settings import Settings
from paylake.sources.mongo_model import SCHEMAS, validate

# Collections whose documents change in place carry a change timestamp; the
# others are insert-only and their ObjectId (creation time) is the cursor.
UPDATED_AT = {"Customer": "updatedAt", "Merchant": "updatedAt"}
HEX = np.array([f"{i:02x}" for i in range(256)])


def arrow_type(spec: dict[str, Any]) -> pa.DataType:
    """The Arrow type of a ``$jsonSchema`` node (pure)."""
    kinds = spec.get("bsonType")
    kinds = [k for k in (kinds if isinstance(kinds, list) else [kinds]) if k != "null"]
    kind = kinds[0] if len(kinds) == 1 else ("long" if set(kinds) <= {"int", "long"} else "string")
    if kind == "object":
        return pa.struct([pa.field(name, arrow_type(child)) for name, child in spec.get("properties", {}).items()])
    if kind == "array":
        return pa.list_(arrow_type(spec.get("items", {"bsonType": "string"})))
    return {"string": pa.string(), "int": pa.int64(), "long": pa.int64(), "double": pa.float64(),
            "decimal": pa.float64(), "bool": pa.bool_(), "date": pa.timestamp("ms"),
            "objectId": pa.string(), "binData": pa.binary()}.get(kind, pa.string())


def bronze_schema(collection: str) -> pa.Schema:
    """The bronze columns of a collection: its fields, ``_id`` first (ObjectIds as hex)."""
    spec = SCHEMAS[collection]
    fields = [pa.field(name, _bronze_type(arrow_type(child))) for name, child in spec["properties"].items()]
    return pa.schema(fields)


def _bronze_type(kind: pa.DataType) -> pa.DataType:
    """Dates are UTC instants in the lake: timestamp[us, UTC], also inside structs and lists."""
    if pa.types.is_timestamp(kind):
        return pa.timestamp("us", tz="UTC")
    if pa.types.is_struct(kind):
        return pa.struct([pa.field(f.name, _bronze_type(f.type)) for f in kind])
    if pa.types.is_list(kind):
        return pa.list_(_bronze_type(kind.value_type))
    return kind


def _pymongoarrow():
    """pymongoarrow, imported quietly (its wheel warns about the pyarrow ABI it was built with)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        import pymongoarrow.api
        import pymongoarrow.types
    return pymongoarrow.api, pymongoarrow.types


def _read_schema(collection: str):
    """The pymongoarrow schema used to decode documents (ObjectIds as their own type)."""
    api, types = _pymongoarrow()
    Schema, ObjectIdType, BinaryType = api.Schema, types.ObjectIdType, types.BinaryType  # noqa: N806

    spec = SCHEMAS[collection]
    fields = {}
    for name, child in spec["properties"].items():
        kind = child.get("bsonType")
        fields[name] = ObjectIdType() if kind == "objectId" else BinaryType(0) if kind == "binData" \
            else arrow_type(child)
    return Schema(fields)


# ----------------------------------------------------------------------------- contracts on Arrow
def contract_violations(collection: str, table: pa.Table) -> np.ndarray:
    """Row mask of documents that break the collection's schema (vectorised)."""
    bad = np.zeros(table.num_rows, bool)
    spec = SCHEMAS[collection]
    for name, child in spec["properties"].items():
        if name not in table.column_names:
            bad[:] |= name in spec.get("required", [])
            continue
        column = table[name].combine_chunks() if table.num_rows else pa.array([], table.schema.field(name).type)
        bad |= _violations(child, column, required=name in spec.get("required", []))
    return bad


def _violations(spec: dict, column: pa.Array, *, required: bool) -> np.ndarray:
    n = len(column)
    nullable = "null" in (spec.get("bsonType") if isinstance(spec.get("bsonType"), list) else [])
    bad = column.is_null().to_numpy(zero_copy_only=False) & (required and not nullable)
    present = column.is_valid()
    if "enum" in spec:
        bad |= _masked(pc.invert(pc.is_in(column, pa.array(spec["enum"], column.type))), present)
    if "minimum" in spec:
        bad |= _masked(pc.less(column, spec["minimum"]), present)
    if "maximum" in spec:
        bad |= _masked(pc.greater(column, spec["maximum"]), present)
    if "pattern" in spec:
        bad |= _masked(pc.invert(pc.match_substring_regex(column, spec["pattern"])), present)
    if pa.types.is_struct(column.type):
        for name, child in spec.get("properties", {}).items():
            inner = pc.struct_field(column, name)
            bad |= _violations(child, inner, required=name in spec.get("required", [])) & present.to_numpy(
                zero_copy_only=False)
    if pa.types.is_list(column.type) and "items" in spec:
        values = pc.list_flatten(column)
        if len(values):
            item_bad = _violations(spec["items"], values, required=True)
            parents = pc.list_parent_indices(column).to_numpy()
            bad |= np.bincount(parents[item_bad], minlength=n).astype(bool)
    return bad


def _masked(condition: pa.Array, present: pa.Array) -> np.ndarray:
    return pc.and_(pc.fill_null(condition, False), present).to_numpy(zero_copy_only=False)


# ----------------------------------------------------------------------------- the source
@dataclass(frozen=True)
class MongoReadTask:
    collection: str
    lo: Any  # _id bound (inclusive), None = open
    hi: Any  # _id bound (exclusive), None = open
    since: dt.datetime | None  # incremental: changed since (updatedAt or ObjectId time)


class MongoCollectionSource:
    """One collection: plan ``_id`` ranges, read one range into Arrow (``extract.source.Source``)."""

    kind = "mongo"
    needs_slot = False  # deletes are not captured (collections are append-mostly; see the README)

    def __init__(self, collection: str) -> None:
        self.collection = collection
        self.name = collection
        self.keys = ["_id"]
        self.cursor_column = UPDATED_AT.get(collection, "_id")

    @property
    def source_id(self) -> str:
        return f"mongo:{self.collection}"

    def bronze_path(self) -> tuple[str, ...]:
        return ("bronze", "mongo", self.collection.lower())

    def data_schema(self) -> pa.Schema:
        return bronze_schema(self.collection)

    def changed_predicate(self) -> str | None:
        """When a matched bronze row is replaced: insert-only collections never are."""
        if self.collection in UPDATED_AT:
            return f"s.`{UPDATED_AT[self.collection]}` <> t.`{UPDATED_AT[self.collection]}`"
        return "false"

    def plan(self, handles, since: dt.datetime | None, *, rows_per_task: int, max_tasks: int) -> list[MongoReadTask]:
        coll = handles.mongo[self.collection]
        parts = partitions_for(coll.estimated_document_count(), rows_per_task, max_tasks)
        low_bound = ObjectId.from_datetime(since) if since is not None and self.cursor_column == "_id" else None
        if low_bound is not None:
            since = None  # the _id range itself is the increment
        if parts == 1:  # one task: no need to look up the key bounds
            return [MongoReadTask(self.collection, low_bound, None, since)]
        first = coll.find_one({}, {"_id": 1}, sort=[("_id", 1)])
        last = coll.find_one({}, {"_id": 1}, sort=[("_id", -1)])
        if first is None:
            return []
        low, high = first["_id"], last["_id"]
        if low_bound is not None:
            low = max(low, low_bound)
        if isinstance(low, ObjectId):
            ranges = plan_time_ranges(low.generation_time, high.generation_time, parts)
            bounds = [(ObjectId.from_datetime(a), ObjectId.from_datetime(b)) for a, b in ranges]
            bounds[0] = (low, bounds[0][1])
            bounds[-1] = (bounds[-1][0], None)
        else:
            bounds = [(a, b) for a, b in plan_ranges(int(low), int(high), parts)]
        return [MongoReadTask(self.collection, a, b, since) for a, b in bounds]

    def verify(self, settings: Settings, bronze: pa.Table):
        from paylake.extract.verify import verify_mongo

        return verify_mongo(settings, self, bronze)

    def read(self, settings: Settings, task: MongoReadTask) -> tuple[pa.Table, pa.Table]:
        """(valid rows in the bronze schema, quarantined rows with reasons)."""
        from paylake.stores import mongo

        find_arrow_all = _pymongoarrow()[0].find_arrow_all

        query = self._query(task)
        with mongo.client(settings) as client, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            coll = mongo.database(client, settings)[self.collection]
            try:
                # projection=None: the schema already selects the fields; a projection only slows the server
                table = find_arrow_all(coll, query, schema=_read_schema(self.collection), projection=None)
                bad = contract_violations(self.collection, table)
                if not bad.any():
                    return self._conform(table), _no_rejects()
                bad_ids = [_key(v) for v in table["_id"].filter(pa.array(bad)).to_pylist()]
                good = table.filter(pa.array(~bad))
            except TypeError:  # a document does not decode into the schema: let the server split the range
                good = find_arrow_all(coll, {"$and": [query, {"$jsonSchema": SCHEMAS[self.collection]}]},
                                      schema=_read_schema(self.collection))
                good = good.filter(pa.array(~contract_violations(self.collection, good)))
                good_ids = {_key(v) for v in good["_id"].to_pylist()}
                bad_ids = [d["_id"] for d in coll.find(query, {"_id": 1}) if _key(d["_id"]) not in good_ids]
            raw = list(coll.find({"_id": {"$in": bad_ids}}))
        return self._conform(good), _rejects(self.collection, raw)

    def _query(self, task: MongoReadTask) -> dict:
        bounds: dict = {}
        if task.lo is not None:
            bounds["$gte"] = task.lo
        if task.hi is not None:
            bounds["$lt"] = task.hi
        query: dict = {"_id": bounds} if bounds else {}
        if task.since is not None and self.cursor_column != "_id":
            query[self.cursor_column] = {"$gte": task.since}
        return query

    def _conform(self, table: pa.Table) -> pa.Table:
        columns = []
        schema = self.data_schema()
        for field in schema:
            column = table[field.name]
            if field.name == "_id" and pa.types.is_string(field.type):
                column = _object_id_hex(column)
            columns.append(_cast(column, field.type))
        return pa.table(columns, schema=schema)


def _key(value):
    """An ``_id`` as pymongo gives it, whether Arrow handed back bytes or an ObjectId."""
    return ObjectId(bytes(value)) if isinstance(value, bytes | bytearray) else value


def _cast(column: pa.ChunkedArray, target: pa.DataType) -> pa.ChunkedArray:
    """Cast, attaching UTC to naive BSON datetimes (also nested)."""
    if column.type == target:
        return column
    if isinstance(column.type, pa.ExtensionType):
        column = pa.chunked_array([c.storage for c in column.chunks], column.type.storage_type)
    return column.cast(_naive_like(target)).cast(target) if _has_tz(target) else column.cast(target)


def _has_tz(kind: pa.DataType) -> bool:
    if pa.types.is_timestamp(kind):
        return kind.tz is not None
    if pa.types.is_struct(kind):
        return any(_has_tz(f.type) for f in kind)
    if pa.types.is_list(kind):
        return _has_tz(kind.value_type)
    return False


def _naive_like(kind: pa.DataType) -> pa.DataType:
    if pa.types.is_timestamp(kind):
        return pa.timestamp(kind.unit)
    if pa.types.is_struct(kind):
        return pa.struct([pa.field(f.name, _naive_like(f.type)) for f in kind])
    if pa.types.is_list(kind):
        return pa.list_(_naive_like(kind.value_type))
    return kind


def _object_id_hex(column: pa.ChunkedArray) -> pa.Array:
    """ObjectIds (12 bytes) to 24-character hex strings, vectorised with numpy."""
    storage = pa.concat_arrays([c.storage if isinstance(c, pa.ExtensionArray) else c for c in column.chunks]) \
        if column.num_chunks else pa.array([], pa.binary(12))
    if len(storage) == 0:
        return pa.array([], pa.string())
    raw = np.frombuffer(storage.buffers()[1], np.uint8)[storage.offset * 12:(storage.offset + len(storage)) * 12]
    pairs = HEX[raw.reshape(-1, 12)]
    text = pairs[:, 0]
    for i in range(1, 12):
        text = np.char.add(text, pairs[:, i])
    return pa.array(text, pa.string())


QUARANTINE_SCHEMA = pa.schema([("key", pa.string()), ("reason", pa.string()), ("raw", pa.string())])


def _no_rejects() -> pa.Table:
    return QUARANTINE_SCHEMA.empty_table()


def _rejects(collection: str, docs: list[dict]) -> pa.Table:
    """The raw documents (canonical extended JSON) with every violation as the reason."""
    return pa.table({
        "key": [str(d.get("_id")) for d in docs],
        "reason": ["; ".join(validate(collection, d)) or "does not decode into the collection schema" for d in docs],
        "raw": [json_util.dumps(d) for d in docs],
    }, schema=QUARANTINE_SCHEMA)
