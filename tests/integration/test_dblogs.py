"""Database log sessions produced for real against the local PostgreSQL, stored in MongoDB."""

from __future__ import annotations

from typing import Any

import pytest

from paylake.sources.dblogs import LOG_COLLECTION, generate_log_sessions
from paylake.sources.mongo_model import validate
from paylake.stores import mongo

SESSIONS = 18  # 9 anomalous: each of the 7 anomalous kinds at least once


@pytest.fixture(scope="module")
def log_db(settings):
    """A dedicated MongoDB database, dropped before and after."""
    name = settings.mongo_database + "_dblogtest"
    client = mongo.client(settings)
    client.drop_database(name)
    yield client[name]
    client.drop_database(name)
    client.close()


@pytest.fixture(scope="module")
def generated(migrated_postgres, log_db) -> tuple[dict[str, int], list[dict[str, Any]]]:
    counts = generate_log_sessions(migrated_postgres, log_db, sessions=SESSIONS, anomalous_fraction=0.5, seed=11)
    return counts, list(log_db[LOG_COLLECTION].find())


def of_scenario(documents: list[dict[str, Any]], scenario: str) -> list[dict[str, Any]]:
    found = [doc for doc in documents if doc["scenario"] == scenario]
    assert found, f"no {scenario} session among {sorted({d['scenario'] for d in documents})}"
    return found


def error_codes(document: dict[str, Any]) -> set[str]:
    return {line["state_code"] for line in document["lines"] if line["error_severity"] == "ERROR"}


def test_every_session_is_stored_as_one_log_document(generated):
    counts, documents = generated
    assert counts["sessions"] == len(documents) == SESSIONS
    assert counts["anomalous"] == sum(doc["label"] == "anomalous" for doc in documents) == SESSIONS // 2
    assert counts["lines"] == sum(len(doc["lines"]) for doc in documents)
    assert len({doc["sessionId"] for doc in documents}) == SESSIONS


def test_documents_follow_the_log_model(generated):
    _, documents = generated
    for document in documents:
        assert validate("Log", document) == []
        assert document["dbname"] == "paylake"
        assert document["startedAt"] <= document["endedAt"]


def test_both_labels_are_present(generated):
    _, documents = generated
    assert {doc["label"] for doc in documents} == {"normal", "anomalous"}


def test_injection_probing_fails_with_syntax_errors(generated):
    _, documents = generated
    for document in of_scenario(documents, "sql_injection"):
        assert "42601" in error_codes(document)
        errors = [line for line in document["lines"] if line["state_code"] == "42601"]
        assert all(line["statement"] for line in errors)


def test_escalation_attempts_are_denied(generated):
    _, documents = generated
    for document in of_scenario(documents, "priv_escalation"):
        assert document["user"].startswith("analyst_")
        assert error_codes(document) == {"42501"}


def test_bulk_export_reads_the_customer_table_by_copy(generated):
    _, documents = generated
    for document in of_scenario(documents, "bulk_export"):
        statements = [line["statement"] for line in document["lines"] if line["statement"]]
        assert "copy (select * from oltp.Customer) to stdout" in statements


def test_normal_sessions_connect_disconnect_and_never_fail(generated):
    _, documents = generated
    normal = [doc for doc in documents if doc["label"] == "normal"]
    assert normal
    for document in normal:
        messages = [line["message"] for line in document["lines"]]
        assert messages[0].startswith("connection received:")
        assert any(message.startswith("connection authorized:") for message in messages)
        assert messages[-1].startswith("disconnection:")
        assert not error_codes(document), document["scenario"]


def test_no_password_reaches_the_documents(generated):
    _, documents = generated
    text = repr(documents).lower()
    assert "password '" not in text and "scram-sha-256$" not in text
