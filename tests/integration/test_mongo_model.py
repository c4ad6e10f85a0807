"""The document model against the local MongoDB-wire server (SecantusDB):
migration, validators, indexes and the three dossier queries."""

from __future__ import annotations

import datetime as dt

import pytest
from bson import ObjectId
from pymongo.errors import WriteError

from paylake.sources.mongo_model import COLLECTIONS, migrate_mongo, validate
from paylake.sources.mongo_queries import run_query
from paylake.stores import mongo
from tests.unit.test_mongo_model import good_documents

T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


def at(minutes: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


@pytest.fixture(scope="module")
def model_db(settings):
    """A dedicated database, migrated once, dropped at the end."""
    test_settings = settings.model_copy(update={"mongo_database": settings.mongo_database + "_modeltest"})
    client = mongo.client(test_settings)
    client.drop_database(test_settings.mongo_database)
    db = mongo.database(client, test_settings)
    first_run = migrate_mongo(db)
    yield db, first_run
    client.drop_database(test_settings.mongo_database)
    client.close()


def test_first_migration_creates_every_collection_and_index(model_db):
    db, first_run = model_db
    assert {f"created collection {name} with its $jsonSchema validator" for name in COLLECTIONS} <= set(first_run)
    assert set(COLLECTIONS) <= set(db.list_collection_names())


def test_second_migration_changes_nothing(model_db):
    db, _ = model_db
    assert migrate_mongo(db) == []


def test_migration_restores_a_changed_validator(model_db):
    db, _ = model_db
    db.command("collMod", "Merchant", validator={"$jsonSchema": {"bsonType": "object"}})
    assert migrate_mongo(db) == ["updated the $jsonSchema validator of Merchant"]
    assert migrate_mongo(db) == []


def test_migration_recreates_a_dropped_index(model_db):
    db, _ = model_db
    db["Log"].drop_index("user_1")
    assert migrate_mongo(db) == ["created index user_1 on Log"]


def index_keys(db, collection: str) -> list[list[tuple[str, int]]]:
    return [[tuple(key) for key in info["key"]] for info in db[collection].index_information().values()]


def test_indexes_exist(model_db):
    db, _ = model_db
    preferences = [("preferences.device", 1), ("preferences.paymentMethod", 1), ("preferences.currency", 1)]
    assert preferences in index_keys(db, "Customer")
    assert [("customerId", 1), ("merchantId", 1), ("timestamp", -1)] in index_keys(db, "CustomerReview")
    assert [("customerId", 1)] in index_keys(db, "UserInteractionData")
    assert [("user", 1)] in index_keys(db, "Log")
    assert [("lines.error_severity", 1)] in index_keys(db, "Log")


def bad_documents() -> list[tuple[str, dict]]:
    good = good_documents()
    review = good["CustomerReview"]
    customer = good["Customer"]
    log = good["Log"]
    return [
        ("CustomerReview", review | {"rating": 9}),
        ("CustomerReview", review | {"rating": 4.0}),
        ("CustomerReview", {k: v for k, v in review.items() if k != "message"}),
        ("Customer", customer | {"_id": 1001, "segment": "vip"}),
        ("Customer", customer | {"_id": 1002, "preferences": customer["preferences"] | {"currency": "eur"}}),
        ("Log", log | {"lines": [log["lines"][0] | {"statement": 3}]}),
        ("Log", log | {"label": "weird"}),
        ("Merchant", good["Merchant"] | {"updatedAt": "yesterday"}),
    ]


@pytest.mark.parametrize("index", range(len(bad_documents())))
def test_server_validator_rejects_what_validate_reports(model_db, index):
    db, _ = model_db
    collection, document = bad_documents()[index]
    assert validate(collection, document) != []
    with pytest.raises(WriteError) as rejected:
        db[collection].insert_one(document)
    assert rejected.value.code == 121


def test_server_validator_accepts_what_validate_accepts(model_db):
    db, _ = model_db
    for collection, document in good_documents().items():
        document = document | ({"_id": 5000 + len(collection)} if collection in {"Customer", "Merchant"} else {})
        assert validate(collection, document) == []
        db[collection].insert_one(document)
        db[collection].delete_one({"_id": document["_id"]})


# -- the three queries on a hand-made dataset -------------------------------------------


def log_session(user: str, severities: list[str], minute: int) -> dict:
    return {
        "_id": ObjectId(),
        "sessionId": f"{user}-{minute}",
        "dbname": "paylake",
        "user": user,
        "clientAddress": "127.0.0.1:5000",
        "startedAt": at(minute),
        "endedAt": at(minute + 1),
        "label": "anomalous" if "ERROR" in severities else "normal",
        "scenario": "test",
        "lines": [
            {"timestamp": at(minute), "error_severity": s, "state_code": "00000", "message": "m", "statement": None}
            for s in severities
        ],
    }


def session(os_name: str, number: int) -> dict:
    return {
        "_id": ObjectId(),
        "customerId": number,
        "sessionId": f"{os_name}-{number}",
        "device": {"os": os_name, "type": "mobile"},
        "startedAt": at(number),
        "events": [],
    }


def review(customer_id: int, merchant_id: int, minute: int) -> dict:
    return {
        "_id": ObjectId(),
        "customerId": customer_id,
        "merchantId": merchant_id,
        "rating": 1 + minute % 5,
        "message": b"sealed",
        "timestamp": at(minute),
    }


def insert_valid(db, collection: str, documents: list[dict]) -> None:
    assert [validate(collection, d) for d in documents] == [[] for _ in documents]
    db[collection].delete_many({})
    db[collection].insert_many(documents)


def test_admin_error_logs_finds_the_admin_sessions_with_an_error_line(model_db):
    db, _ = model_db
    late_error = log_session("paylake_admin", ["LOG", "ERROR"], 30)
    early_error = log_session("paylake_admin", ["ERROR"], 10)
    others = [
        log_session("paylake_admin", ["LOG", "WARNING"], 20),
        log_session("reporting", ["ERROR"], 5),
    ]
    insert_valid(db, "Log", [late_error, *others, early_error])

    assert [d["_id"] for d in run_query(db, "admin_error_logs")] == [early_error["_id"], late_error["_id"]]
    assert [d["_id"] for d in run_query(db, "admin_error_logs", user="reporting")] == [others[1]["_id"]]


def test_top_operating_systems_counts_sessions_per_os(model_db):
    db, _ = model_db
    counts = {"Android": 7, "iOS": 6, "Windows": 5, "macOS": 4, "Linux": 3, "ChromeOS": 2, "FreeBSD": 1}
    insert_valid(
        db,
        "UserInteractionData",
        [session(os_name, n) for os_name, count in counts.items() for n in range(count)],
    )

    assert run_query(db, "top_operating_systems") == [
        {"os": "Android", "sessions": 7},
        {"os": "iOS", "sessions": 6},
        {"os": "Windows", "sessions": 5},
        {"os": "macOS", "sessions": 4},
        {"os": "Linux", "sessions": 3},
    ]
    assert [row["os"] for row in run_query(db, "top_operating_systems", limit=2)] == ["Android", "iOS"]


def test_customer_reviews_for_merchant_returns_newest_first(model_db):
    db, _ = model_db
    wanted = [review(1, 10, 5), review(1, 10, 50), review(1, 10, 20)]
    insert_valid(db, "CustomerReview", [*wanted, review(1, 11, 30), review(2, 10, 40), review(10, 1, 60)])

    found = run_query(db, "customer_reviews_for_merchant", customerId=1, merchantId=10)

    assert [d["_id"] for d in found] == [wanted[1]["_id"], wanted[2]["_id"], wanted[0]["_id"]]
    assert found[0]["timestamp"] == at(50)
