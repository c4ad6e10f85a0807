"""The document model's pure side: schema validation and query binding."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from bson import ObjectId
from bson.int64 import Int64
from hypothesis import given
from hypothesis import strategies as st

from paylake.errors import ContractError, PaylakeError
from paylake.sources.mongo_model import COLLECTIONS, INDEXES, SCHEMAS, bson_type_of, validate
from paylake.sources.mongo_queries import available_queries, bind, load_query

NOW = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


def good_documents() -> dict[str, dict[str, Any]]:
    return {
        "Customer": {
            "_id": 42,
            "segment": "premium",
            "preferences": {"device": "mobile", "paymentMethod": "card", "currency": "EUR"},
            "segments": ["frequent", "high_value"],
            "updatedAt": NOW,
        },
        "Merchant": {
            "_id": 7,
            "name": "Corner Shop",
            "industry": "retail",
            "size": "small",
            "country": "DE",
            "tags": ["groceries"],
            "updatedAt": NOW,
        },
        "CustomerReview": {
            "customerId": 42,
            "merchantId": 7,
            "rating": 5,
            "message": b"sealed review text",
            "timestamp": NOW,
        },
        "UserInteractionData": {
            "_id": ObjectId(),
            "customerId": 42,
            "sessionId": "s-1",
            "device": {"os": "iOS", "type": "mobile"},
            "startedAt": NOW,
            "events": [{"type": "view", "at": NOW, "page": "/checkout"}],
        },
        "Log": {
            "sessionId": "664f1a2b.1f4",
            "dbname": "paylake",
            "user": "paylake_admin",
            "clientAddress": "10.0.0.5:51234",
            "startedAt": NOW,
            "endedAt": NOW + dt.timedelta(minutes=1),
            "label": "normal",
            "scenario": "checkout",
            "lines": [
                {
                    "timestamp": NOW,
                    "error_severity": "LOG",
                    "state_code": "00000",
                    "message": "statement executed",
                    "statement": "select 1",
                },
                {
                    "timestamp": NOW,
                    "error_severity": "ERROR",
                    "state_code": "23505",
                    "message": "duplicate key",
                    "statement": None,
                },
            ],
        },
    }


@pytest.mark.parametrize("collection", COLLECTIONS)
def test_good_document_has_no_violations(collection):
    assert validate(collection, good_documents()[collection]) == []


def test_long_ids_are_accepted_as_postgres_bigint_keys():
    customer = good_documents()["Customer"] | {"_id": 2**40}
    assert validate("Customer", customer) == []
    assert validate("Customer", good_documents()["Customer"] | {"_id": Int64(3)}) == []


def test_missing_required_field_is_reported():
    customer = good_documents()["Customer"]
    del customer["segments"]
    assert validate("Customer", customer) == ["segments: missing"]


def test_missing_nested_field_is_reported_with_its_path():
    customer = good_documents()["Customer"]
    del customer["preferences"]["currency"]
    assert validate("Customer", customer) == ["preferences.currency: missing"]


def test_wrong_bson_type_is_reported():
    merchant = good_documents()["Merchant"] | {"_id": "7", "updatedAt": "2024-05-01"}
    assert validate("Merchant", merchant) == [
        "_id: expected int or long, got string",
        "updatedAt: expected date, got string",
    ]


def test_float_rating_is_not_an_int():
    review = good_documents()["CustomerReview"] | {"rating": 4.0}
    assert validate("CustomerReview", review) == ["rating: expected int, got double"]


def test_bool_is_not_an_int():
    review = good_documents()["CustomerReview"] | {"rating": True}
    assert validate("CustomerReview", review) == ["rating: expected int, got bool"]


def test_value_outside_enum_is_reported():
    customer = good_documents()["Customer"] | {"segment": "vip"}
    assert validate("Customer", customer) == ["segment: not one of premium, standard, basic"]
    log = good_documents()["Log"] | {"label": "weird"}
    assert validate("Log", log) == ["label: not one of normal, anomalous"]


@pytest.mark.parametrize(
    ("rating", "violation"),
    [(0, "rating: 0 is below the minimum 1"), (6, "rating: 6 is above the maximum 5")],
)
def test_rating_out_of_range_is_reported(rating, violation):
    review = good_documents()["CustomerReview"] | {"rating": rating}
    assert validate("CustomerReview", review) == [violation]


def test_currency_must_be_three_capital_letters():
    customer = good_documents()["Customer"]
    customer["preferences"]["currency"] = "euro"
    assert validate("Customer", customer) == ["preferences.currency: does not match the pattern ^[A-Z]{3}$"]


def test_array_items_are_checked_with_their_index():
    log = good_documents()["Log"]
    log["lines"][1]["statement"] = 3
    del log["lines"][0]["state_code"]
    assert validate("Log", log) == [
        "lines[0].state_code: missing",
        "lines[1].statement: expected string or null, got int",
    ]


def test_object_id_must_be_an_object_id_when_present():
    review = good_documents()["CustomerReview"] | {"_id": "not-an-oid"}
    assert validate("CustomerReview", review) == ["_id: expected objectId, got string"]


def test_violation_messages_do_not_echo_string_values():
    customer = good_documents()["Customer"] | {"segment": "secret-jane@example.com"}
    customer["preferences"]["currency"] = "jane@example.com"
    assert not any("jane" in violation for violation in validate("Customer", customer))


def test_non_object_document_is_one_violation():
    assert validate("Log", ["not", "a", "document"]) == ["document: expected object, got array"]


def test_unknown_collection_raises_contract_error():
    with pytest.raises(ContractError, match="Customer, Merchant"):
        validate("Payments", {})


def test_python_values_map_to_the_bson_type_pymongo_encodes():
    assert bson_type_of(1) == "int"
    assert bson_type_of(2**31) == "long"
    assert bson_type_of(2**63) is None
    assert bson_type_of(dt.date(2024, 1, 1)) is None
    assert bson_type_of(NOW) == "date"


SUPPORTED_KEYWORDS = {"bsonType", "required", "properties", "items", "enum", "minimum", "maximum", "pattern"}


def _keywords(schema: dict[str, Any]) -> set[str]:
    found = set(schema)
    for sub in schema.get("properties", {}).values():
        found |= _keywords(sub)
    if "items" in schema:
        found |= _keywords(schema["items"])
    return found


@pytest.mark.parametrize("collection", COLLECTIONS)
def test_schemas_use_only_keywords_validate_understands(collection):
    assert _keywords(SCHEMAS[collection]) <= SUPPORTED_KEYWORDS


def test_every_collection_has_an_index_list():
    assert set(INDEXES) == set(SCHEMAS)


bson_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=8),
    st.datetimes(timezones=st.just(dt.UTC)),
    st.dates(),
    st.builds(ObjectId),
    st.binary(max_size=4),
)
documents = st.dictionaries(
    st.sampled_from(["_id", "segment", "preferences", "currency", "rating", "lines", "events", "x"]) | st.text(max_size=5),
    st.recursive(
        bson_scalars,
        lambda children: st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["device", "currency", "error_severity", "statement", "os", "at"]) | st.text(max_size=5),
            children,
            max_size=4,
        ),
        max_leaves=12,
    ),
    max_size=8,
)


@given(collection=st.sampled_from(COLLECTIONS), document=documents)
def test_validate_never_raises_on_arbitrary_dicts(collection, document):
    violations = validate(collection, document)
    assert isinstance(violations, list)
    assert all(isinstance(violation, str) for violation in violations)


# -- queries ------------------------------------------------------------------------


def test_the_three_dossier_queries_are_available():
    assert {"admin_error_logs", "top_operating_systems", "customer_reviews_for_merchant"} <= set(available_queries())


def test_bind_substitutes_named_params_keeping_their_type():
    bound = bind(load_query("customer_reviews_for_merchant"), {"customerId": 42, "merchantId": 7})
    assert bound["filter"] == {"customerId": 42, "merchantId": 7}
    assert "params" not in bound


def test_bind_uses_defaults_and_overrides():
    query = load_query("admin_error_logs")
    assert bind(query, {})["filter"]["user"] == "paylake_admin"
    assert bind(query, {"user": "reporting"})["filter"]["user"] == "reporting"
    assert bind(load_query("top_operating_systems"), {})["pipeline"][2] == {"$limit": 5}


def test_bind_is_pure():
    query = load_query("customer_reviews_for_merchant")
    before = repr(query)
    bind(query, {"customerId": 1, "merchantId": 2})
    assert repr(query) == before


def test_bind_rejects_missing_unknown_and_mistyped_params():
    query = load_query("customer_reviews_for_merchant")
    with pytest.raises(ContractError, match="needs the parameter 'merchantId'"):
        bind(query, {"customerId": 1})
    with pytest.raises(ContractError, match="no parameter rating"):
        bind(query, {"customerId": 1, "merchantId": 2, "rating": 5})
    with pytest.raises(ContractError, match="'customerId' must be of BSON type"):
        bind(query, {"customerId": "1", "merchantId": 2})


def test_bind_rejects_a_placeholder_without_declared_param():
    query = {"name": "q", "collection": "Log", "kind": "find", "params": [], "filter": {"user": "$$param:user"}}
    with pytest.raises(ContractError, match="declares no parameter 'user'"):
        bind(query, {})


def test_unknown_query_name_is_a_paylake_error():
    with pytest.raises(PaylakeError, match="admin_error_logs"):
        load_query("../secrets")
