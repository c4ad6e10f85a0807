"""The business's MongoDB queries, kept as declarative JSON in ``sql/queries/mongo/``.

A query file is one JSON object::

    {
      "description": "what the business asks",
      "collection": "Log",                       # one of mongo_model.COLLECTIONS
      "kind": "find" | "aggregate",
      "params": [{"name": "user", "bsonType": "string", "default": "paylake_admin"}],
      "filter": {...}, "projection": {...}, "sort": [["field", 1 | -1], ...], "limit": n   # find
      "pipeline": [...]                                                              # aggregate
    }

A parameter is used by writing the whole string ``"$$param:<name>"`` where
its value goes (anywhere in filter, projection, sort, limit or pipeline);
``bind`` replaces each such string by the value itself, so an int stays an
int. There is no interpolation inside longer strings. A parameter without a
``default`` must be given; values are checked against the declared
``bsonType`` (the same BSON types as the document model). Literals are plain
JSON: no extended-JSON dates or ObjectIds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pymongo.database import Database

from paylake.errors import ContractError
from paylake.sources.mongo_model import COLLECTIONS, matches_bson_type

QUERY_DIR = Path(__file__).resolve().parents[3] / "sql" / "queries" / "mongo"
PARAM_PREFIX = "$$param:"
KINDS = ("find", "aggregate")
FIND_KEYS = ("filter", "projection", "sort", "limit")

_QUERY_NAME = re.compile(r"^[A-Za-z0-9_]+$")


def available_queries() -> list[str]:
    """The names of the query files in ``sql/queries/mongo/``."""
    return sorted(path.stem for path in QUERY_DIR.glob("*.json"))


def load_query(name: str) -> dict[str, Any]:
    """The parsed and checked query ``sql/queries/mongo/<name>.json``."""
    path = QUERY_DIR / f"{name}.json"
    if not _QUERY_NAME.match(name) or not path.is_file():
        raise ContractError(
            f"No MongoDB query named {name!r} in {QUERY_DIR}: use one of {', '.join(available_queries())}"
        )
    try:
        query = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ContractError(f"MongoDB query file {path} is not valid JSON ({exc}): fix the file") from exc
    query.setdefault("name", name)
    _check_query(query, path)
    return query


def bind(query: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``query`` with every ``"$$param:<name>"`` string replaced by its value.

    Pure. Raises ContractError for an unknown, missing or mistyped parameter.
    """
    values = _param_values(query, params)
    return {key: _substitute(value, values, query) for key, value in query.items() if key != "params"}


def run_query(db: Database, name: str, **params: Any) -> list[dict[str, Any]]:
    """Run the named query with its parameters bound; the matching documents."""
    query = bind(load_query(name), params)
    collection = db[query["collection"]]
    if query["kind"] == "aggregate":
        return list(collection.aggregate(query["pipeline"]))
    cursor = collection.find(query.get("filter", {}), query.get("projection"))
    if "sort" in query:
        cursor = cursor.sort([(field, direction) for field, direction in query["sort"]])
    if "limit" in query:
        cursor = cursor.limit(query["limit"])
    return list(cursor)


def _check_query(query: Any, path: Path) -> None:
    problems = _query_problems(query)
    if problems:
        raise ContractError(f"MongoDB query file {path} is malformed ({'; '.join(problems)}): fix the file")


def _query_problems(query: Any) -> list[str]:
    if not isinstance(query, dict):
        return ["the top level is not an object"]
    problems = []
    if query.get("collection") not in COLLECTIONS:
        problems.append(f"collection must be one of {', '.join(COLLECTIONS)}")
    if query.get("kind") not in KINDS:
        problems.append(f"kind must be one of {', '.join(KINDS)}")
    if query.get("kind") == "aggregate" and not isinstance(query.get("pipeline"), list):
        problems.append("an aggregate needs a pipeline list")
    if query.get("kind") == "find" and "pipeline" in query:
        problems.append(f"a find takes {', '.join(FIND_KEYS)}, not a pipeline")
    params = query.get("params", [])
    if not isinstance(params, list) or not all(isinstance(p, dict) and {"name", "bsonType"} <= p.keys() for p in params):
        problems.append("params must be a list of {name, bsonType[, default]} objects")
    return problems


def _param_values(query: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    name = query.get("name", "<unnamed>")
    declared = {spec["name"]: spec for spec in query.get("params", [])}
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise ContractError(
            f"MongoDB query {name} has no parameter {', '.join(unknown)}: it takes {', '.join(declared) or 'none'}"
        )
    values = {}
    for param, spec in declared.items():
        if param not in params and "default" not in spec:
            raise ContractError(f"MongoDB query {name} needs the parameter {param!r}: pass {param}=<value>")
        value = params.get(param, spec.get("default"))
        if not matches_bson_type(value, spec["bsonType"]):
            raise ContractError(
                f"MongoDB query {name}: parameter {param!r} must be of BSON type {spec['bsonType']}, "
                f"got Python {type(value).__name__}"
            )
        values[param] = value
    return values


def _substitute(node: Any, values: Mapping[str, Any], query: Mapping[str, Any]) -> Any:
    if isinstance(node, dict):
        return {key: _substitute(value, values, query) for key, value in node.items()}
    if isinstance(node, list):
        return [_substitute(item, values, query) for item in node]
    if isinstance(node, str) and node.startswith(PARAM_PREFIX):
        param = node[len(PARAM_PREFIX) :]
        if param not in values:
            raise ContractError(
                f"MongoDB query {query.get('name', '<unnamed>')} uses {node!r} but declares no parameter "
                f"{param!r}: add it to the query's params"
            )
        return values[param]
    return node
