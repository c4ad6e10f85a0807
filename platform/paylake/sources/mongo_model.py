"""The MongoDB document model of the source systems.

Five collections hold the semi-structured side of the payments company:
``Customer`` and ``Merchant`` (profiles keyed by their PostgreSQL ids),
``CustomerReview``, ``UserInteractionData`` (one document per web/app session)
and ``Log`` (one document per database session with its log lines).

``SCHEMAS`` is the one truth about their shape: each entry is a MongoDB
``$jsonSchema`` used twice, as the server-side validator installed by
``migrate_mongo`` and by the pure-Python ``validate`` that the data generator
runs before inserting and the extractor runs to quarantine invalid documents.
``validate`` understands exactly the keywords the schemas use (``bsonType``,
``required``, ``properties``, ``items``, ``enum``, ``minimum``, ``maximum``,
``pattern``) with MongoDB's semantics: a keyword applies only to values of
its kind (``pattern`` to strings, ``minimum`` to numbers, ...), and a Python
value has the BSON type pymongo encodes it as (an ``int`` is ``int`` when it
fits 32 bits, else ``long``; a ``float`` is ``double``, never ``int``).
Violation messages name the field and the rule, never the offending string
value (it may be PII).

Collections whose ``_id`` is an ObjectId do not require ``_id``: pymongo
assigns it at insert, so a document is valid before and after that.

What SecantusDB (checked with secantusdb 0.7.0b3, which reports MongoDB
8.2.11) supports, all of it used here:

- ``create_collection(validator=..., validationLevel=..., validationAction=...)``
  and ``listCollections`` returning those options;
- ``$jsonSchema`` validators are enforced on insert and update, nested
  ``properties``/``items``, ``pattern``, ``enum``, ``minimum``/``maximum`` and
  ``bsonType`` lists included: a bad document fails with ``WriteError`` code
  121 "Document failed validation", and ``insert_many(ordered=False)`` keeps
  the valid documents and reports the indexes of the rejected ones;
- ``collMod`` replaces the validator of an existing collection;
- ``create_indexes`` with compound and dotted (multikey) keys,
  ``index_information``; an index whose name exists with other keys fails
  with code 86 (IndexKeySpecsConflict).

A server without ``collMod`` (code 59) is tolerated: the stale validator is
kept and a warning logged.
"""

from __future__ import annotations

import datetime
import functools
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from bson import Decimal128, ObjectId
from bson.int64 import Int64
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import CollectionInvalid, OperationFailure, PyMongoError

from paylake.errors import ContractError, StoreUnavailable

log = logging.getLogger(__name__)

CUSTOMER_SEGMENTS = ["premium", "standard", "basic"]
LOG_LABELS = ["normal", "anomalous"]
RATING_RANGE = (1, 5)

VALIDATION_LEVEL = "strict"
VALIDATION_ACTION = "error"
COMMAND_NOT_FOUND = 59


# -- schema building blocks (each call returns a fresh dict) -----------------


def _string(**rules: Any) -> dict[str, Any]:
    return {"bsonType": "string", **rules}


def _date() -> dict[str, Any]:
    return {"bsonType": "date"}


def _integer_id() -> dict[str, Any]:
    """An integer key copied from PostgreSQL (int or long once encoded)."""
    return {"bsonType": ["int", "long"]}


def _object_id() -> dict[str, Any]:
    return {"bsonType": "objectId"}


def _array(items: dict[str, Any]) -> dict[str, Any]:
    return {"bsonType": "array", "items": items}


def _object(properties: dict[str, dict[str, Any]], *, optional: Sequence[str] = ()) -> dict[str, Any]:
    """An object whose properties are all required except those named in ``optional``."""
    required = [name for name in properties if name not in optional]
    return {"bsonType": "object", "required": required, "properties": properties}


# -- the five collections -----------------------------------------------------

SCHEMAS: dict[str, dict[str, Any]] = {
    "Customer": _object(
        {
            "_id": _integer_id(),  # PostgreSQL CustomerID
            "segment": _string(enum=CUSTOMER_SEGMENTS),
            "preferences": _object(
                {
                    "device": _string(),
                    "paymentMethod": _string(),
                    "currency": _string(pattern="^[A-Z]{3}$"),
                }
            ),
            "segments": _array(_string()),
            "updatedAt": _date(),
        }
    ),
    "Merchant": _object(
        {
            "_id": _integer_id(),  # PostgreSQL MerchantID
            "name": _string(),
            "industry": _string(),
            "size": _string(),
            "country": _string(),
            "tags": _array(_string()),
            "updatedAt": _date(),
        }
    ),
    "CustomerReview": _object(
        {
            "_id": _object_id(),
            "customerId": _integer_id(),
            "merchantId": _integer_id(),
            "rating": {"bsonType": "int", "minimum": RATING_RANGE[0], "maximum": RATING_RANGE[1]},
            "message": {"bsonType": "binData"},  # sealed under the customer's key (paylake.security.keys)
            "timestamp": _date(),
        },
        optional=["_id"],
    ),
    "UserInteractionData": _object(
        {
            "_id": _object_id(),
            "customerId": _integer_id(),
            "sessionId": _string(),
            "device": _object({"os": _string(), "type": _string()}),
            "startedAt": _date(),
            "events": _array(_object({"type": _string(), "at": _date(), "page": _string()})),
        },
        optional=["_id"],
    ),
    "Log": _object(
        {
            "_id": _object_id(),
            "sessionId": _string(),
            "dbname": _string(),
            "user": _string(),
            "clientAddress": _string(),
            "startedAt": _date(),
            "endedAt": _date(),
            "label": _string(enum=LOG_LABELS),
            "scenario": _string(),
            "lines": _array(
                _object(
                    {
                        "timestamp": _date(),
                        "error_severity": _string(),
                        "state_code": _string(),
                        "message": _string(),
                        "statement": {"bsonType": ["string", "null"]},
                    }
                )
            ),
        },
        optional=["_id"],
    ),
}

INDEXES: dict[str, list[IndexModel]] = {
    "Customer": [
        IndexModel(
            [
                ("preferences.device", ASCENDING),
                ("preferences.paymentMethod", ASCENDING),
                ("preferences.currency", ASCENDING),
            ]
        )
    ],
    "Merchant": [],
    # The equality prefix of customer_reviews_for_merchant plus its newest-first sort.
    "CustomerReview": [IndexModel([("customerId", ASCENDING), ("merchantId", ASCENDING), ("timestamp", DESCENDING)])],
    "UserInteractionData": [IndexModel([("customerId", ASCENDING)])],
    "Log": [IndexModel([("user", ASCENDING)]), IndexModel([("lines.error_severity", ASCENDING)])],
}

COLLECTIONS: tuple[str, ...] = tuple(SCHEMAS)


def validator(collection_name: str) -> dict[str, Any]:
    """The server-side validator document of one collection."""
    return {"$jsonSchema": _schema(collection_name)}


# -- pure validation ------------------------------------------------------------

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_NUMBER_TYPES = frozenset({"int", "long", "double", "decimal"})
_TYPE_ALIASES = {"number": _NUMBER_TYPES}


def validate(collection_name: str, document: Any) -> list[str]:
    """The violations of ``document`` against the collection's schema; empty when valid."""
    return list(_violations(_schema(collection_name), document, ""))


def bson_type_of(value: Any) -> str | None:
    """The BSON type pymongo encodes ``value`` as, or None when it cannot encode it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, Int64):
        return "long"
    if isinstance(value, int):
        return _integer_type(value)
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes | bytearray):  # bson.Binary is a bytes subclass
        return "binData"
    if isinstance(value, datetime.datetime):
        return "date"
    if isinstance(value, ObjectId):
        return "objectId"
    if isinstance(value, Decimal128):
        return "decimal"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    return None


def matches_bson_type(value: Any, bson_type: str | Sequence[str]) -> bool:
    """Whether ``value`` encodes as one of the named BSON types (aliases such as 'number' allowed)."""
    return bson_type_of(value) in _allowed_types(bson_type)


def _schema(collection_name: str) -> dict[str, Any]:
    try:
        return SCHEMAS[collection_name]
    except KeyError:
        raise ContractError(
            f"No document model for MongoDB collection {collection_name!r}: "
            f"use one of {', '.join(COLLECTIONS)} or add it to paylake.sources.mongo_model.SCHEMAS"
        ) from None


def _integer_type(value: int) -> str | None:
    if _INT32[0] <= value <= _INT32[1]:
        return "int"
    if _INT64[0] <= value <= _INT64[1]:
        return "long"
    return None


def _allowed_types(bson_type: str | Sequence[str]) -> frozenset[str]:
    names = [bson_type] if isinstance(bson_type, str) else list(bson_type)
    return frozenset().union(*(_TYPE_ALIASES.get(name, {name}) for name in names))


def _violations(schema: Mapping[str, Any], value: Any, path: str) -> Iterator[str]:
    where = path or "document"
    if "bsonType" in schema and not matches_bson_type(value, schema["bsonType"]):
        actual = bson_type_of(value) or f"unencodable Python {type(value).__name__}"
        yield f"{where}: expected {_describe(schema['bsonType'])}, got {actual}"
        return
    if "enum" in schema and not _in_enum(value, schema["enum"]):
        yield f"{where}: not one of {', '.join(map(str, schema['enum']))}"
    yield from _number_violations(schema, value, where)
    yield from _string_violations(schema, value, where)
    if bson_type_of(value) == "object":
        yield from _object_violations(schema, value, path)
    if bson_type_of(value) == "array" and "items" in schema:
        for index, item in enumerate(value):
            yield from _violations(schema["items"], item, f"{path}[{index}]")


def _object_violations(schema: Mapping[str, Any], value: Mapping[Any, Any], path: str) -> Iterator[str]:
    prefix = f"{path}." if path else ""
    for name in schema.get("required", ()):
        if name not in value:
            yield f"{prefix}{name}: missing"
    for name, sub_schema in schema.get("properties", {}).items():
        if name in value:
            yield from _violations(sub_schema, value[name], f"{prefix}{name}")


def _number_violations(schema: Mapping[str, Any], value: Any, where: str) -> Iterator[str]:
    if bson_type_of(value) not in {"int", "long", "double"}:
        return
    if "minimum" in schema and value < schema["minimum"]:
        yield f"{where}: {value} is below the minimum {schema['minimum']}"
    if "maximum" in schema and value > schema["maximum"]:
        yield f"{where}: {value} is above the maximum {schema['maximum']}"


def _string_violations(schema: Mapping[str, Any], value: Any, where: str) -> Iterator[str]:
    if "pattern" in schema and isinstance(value, str) and not _pattern(schema["pattern"]).search(value):
        yield f"{where}: does not match the pattern {schema['pattern']}"


def _in_enum(value: Any, allowed: Sequence[Any]) -> bool:
    kind = bson_type_of(value)
    return any(bson_type_of(option) == kind and option == value for option in allowed)


def _describe(bson_type: str | Sequence[str]) -> str:
    return bson_type if isinstance(bson_type, str) else " or ".join(bson_type)


@functools.cache
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


# -- migration ------------------------------------------------------------------


def migrate_mongo(db: Database) -> list[str]:
    """Bring ``db`` to the document model: collections, validators, indexes.

    Idempotent: returns the actions taken, an empty list when nothing changed.
    Raises StoreUnavailable when the server refuses a step.
    """
    existing = _collection_options(db)
    actions: list[str] = []
    for name in COLLECTIONS:
        actions += _ensure_collection(db, name, existing.get(name))
        actions += _ensure_indexes(db[name], INDEXES[name])
    if actions:
        log.info("migrated MongoDB database %s: %s", db.name, "; ".join(actions))
    return actions


def _collection_options(db: Database) -> dict[str, dict[str, Any]]:
    try:
        return {info["name"]: info.get("options", {}) for info in db.list_collections()}
    except PyMongoError as exc:
        raise _refused(db.name, "list the collections", exc) from exc


def _ensure_collection(db: Database, name: str, options: dict[str, Any] | None) -> list[str]:
    if options is None:
        try:
            db.create_collection(
                name,
                validator=validator(name),
                validationLevel=VALIDATION_LEVEL,
                validationAction=VALIDATION_ACTION,
            )
            return [f"created collection {name} with its $jsonSchema validator"]
        except CollectionInvalid:  # created meanwhile by a concurrent migration
            options = _collection_options(db).get(name, {})
        except PyMongoError as exc:
            raise _refused(db.name, f"create collection {name}", exc) from exc
    if _validator_is_current(name, options):
        return []
    return _update_validator(db, name)


def _validator_is_current(name: str, options: Mapping[str, Any]) -> bool:
    return (
        options.get("validator") == validator(name)
        and options.get("validationLevel", "strict") == VALIDATION_LEVEL
        and options.get("validationAction", "error") == VALIDATION_ACTION
    )


def _update_validator(db: Database, name: str) -> list[str]:
    try:
        db.command(
            "collMod",
            name,
            validator=validator(name),
            validationLevel=VALIDATION_LEVEL,
            validationAction=VALIDATION_ACTION,
        )
    except OperationFailure as exc:
        if exc.code != COMMAND_NOT_FOUND:
            raise _refused(db.name, f"update the validator of {name}", exc) from exc
        log.warning("MongoDB has no collMod: the validator of %s.%s stays as it was", db.name, name)
        return []
    except PyMongoError as exc:
        raise _refused(db.name, f"update the validator of {name}", exc) from exc
    return [f"updated the $jsonSchema validator of {name}"]


def _ensure_indexes(collection: Collection, wanted: Sequence[IndexModel]) -> list[str]:
    try:
        present = set(collection.index_information())
        missing = [model for model in wanted if model.document["name"] not in present]
        if missing:
            collection.create_indexes(missing)
    except PyMongoError as exc:
        raise _refused(collection.database.name, f"index {collection.name}", exc) from exc
    return [f"created index {model.document['name']} on {collection.name}" for model in missing]


def _refused(database_name: str, step: str, exc: PyMongoError) -> StoreUnavailable:
    return StoreUnavailable(
        f"MongoDB refused to {step} in database {database_name} ({type(exc).__name__}: {exc}): "
        "check that the server is up ('paylake stack status') and that no index or validator "
        "there conflicts with paylake.sources.mongo_model"
    )
