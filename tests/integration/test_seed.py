"""The generator fills both stores consistently, PII encrypted, labels through the audit path."""

import numpy as np
import pytest
from typer.testing import CliRunner

from paylake.cli import app
from paylake.errors import PaylakeError
from paylake.sources.generator import SCALES, generate
from paylake.sources.seed import seed
from paylake.stores import mongo, postgres


@pytest.fixture(scope="module")
def world():
    return generate(SCALES["tiny"])


def test_postgres_holds_exactly_the_generated_rows(seeded, world):
    settings, report = seeded
    with postgres.connect(settings) as conn:
        for table, expected in (("oltp.customer", world.customer.num_rows),
                                ("oltp.transaction", world.transaction.num_rows),
                                ("oltp.paymentmethod", world.payment_method.num_rows),
                                ("oltp.transactionstatechanges", world.status_change.num_rows)):
            (count,) = conn.execute(f"select count(*) from {table}").fetchone()
            assert count == expected, table
        (total,) = conn.execute("select sum(amount) from oltp.transaction").fetchone()
    assert float(total) == pytest.approx(world.transaction["Amount"].to_numpy().astype(float).sum(), abs=0.01)


def test_pii_is_stored_sealed_and_opens_with_the_customers_key(seeded, world):
    from paylake.security import keys

    settings, _ = seeded
    with postgres.connect(settings) as conn:
        email, lookup, password = conn.execute(
            "select EmailEncrypted, EmailHash, Password from oltp.customer where CustomerID = 1").fetchone()
    with keys.Keyring(settings) as ring:
        pseudonym = keys.pseudonym(ring.hmac_key(), world.customer["EmailClear"][0].as_py().upper())
    clear = keys.reveal_customers(settings, [1])[1]
    expected = world.customer["EmailClear"][0].as_py()
    assert clear["email"] == expected and clear["full_name"] == world.customer["FullNameClear"][0].as_py()
    assert expected.encode() not in bytes(email) and b"@mail.example." not in bytes(email)
    assert keys.version_of(bytes(email)) == 1, "a paylake envelope, not pgcrypto's format"
    assert password.startswith("$2") and lookup == pseudonym, "the keyed hash ignores case"


def test_labels_arrived_through_the_status_change_function(seeded, world):
    settings, report = seeded
    with postgres.connect(settings) as conn:
        (labels,) = conn.execute("select count(*) from oltp.transactionstatechanges where ToStatusID in (5, 6)"
                                 ).fetchone()
        (mismatch,) = conn.execute(
            "select count(*) from oltp.transaction t join lateral (select ToStatusID from"
            " oltp.transactionstatechanges c where c.TransactionID = t.TransactionID order by ChangedAt desc,"
            " ChangeID desc limit 1) last on true where t.StatusID <> last.ToStatusID").fetchone()
    assert labels == report.stats["labelled_fraud"] > 0
    assert mismatch == 0, "every transaction's status is its last audited change"


def test_mongo_documents_reference_postgres_ids(seeded):
    settings, _ = seeded
    with postgres.connect(settings) as conn:
        customers = {r[0] for r in conn.execute("select CustomerID from oltp.customer")}
        merchants = {r[0] for r in conn.execute("select MerchantID from oltp.merchant")}
    with mongo.client(settings) as client:
        db = mongo.database(client, settings)
        assert {d["_id"] for d in db.Customer.find({}, {"_id": 1})} == customers
        assert {d["_id"] for d in db.Merchant.find({}, {"_id": 1})} == merchants
        reviews = list(db.CustomerReview.find({}, {"customerId": 1, "merchantId": 1}))
        sessions = db.UserInteractionData.count_documents({})
    assert reviews and sessions
    assert {r["customerId"] for r in reviews} <= customers
    assert {r["merchantId"] for r in reviews} <= merchants


def test_seeding_twice_without_reset_is_refused(seeded):
    settings, _ = seeded
    with pytest.raises(PaylakeError, match="--reset"):
        seed(settings, SCALES["tiny"])


def test_db_migrate_a_second_time_changes_nothing(seeded, monkeypatch):
    settings, _ = seeded
    monkeypatch.setenv("PAYLAKE_POSTGRES_DSN", settings.postgres_dsn.get_secret_value())
    monkeypatch.setenv("PAYLAKE_MONGO_DATABASE", settings.mongo_database)
    monkeypatch.setenv("PAYLAKE_MONGO_URI", settings.mongo_uri.get_secret_value())
    result = CliRunner().invoke(app, ["db", "migrate"])
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output


def test_log_sessions_carry_both_labels(seeded):
    settings, report = seeded
    with mongo.client(settings) as client:
        db = mongo.database(client, settings)
        labels = {d["label"] for d in db.Log.find({}, {"label": 1})}
        anomalous = db.Log.count_documents({"label": "anomalous"})
    assert labels == {"normal", "anomalous"}
    assert anomalous == report.stats["anomalous_log_sessions"] > 0
    total = report.rows["mongo.Log"]
    assert 0.05 <= anomalous / total <= 0.5
    assert np.isclose(anomalous / total, SCALES["tiny"].anomalous_log_fraction, atol=0.15)


def test_bulk_load_restores_validated_foreign_keys_and_triggers(seeded):
    settings, _ = seeded
    with postgres.connect(settings) as conn:
        keys = conn.execute("select count(*), bool_and(convalidated) from pg_constraint"
                            " where conrelid = 'oltp.transaction'::regclass and contype = 'f'").fetchone()
        (disabled,) = conn.execute("select count(*) from pg_trigger where tgrelid = 'oltp.transaction'::regclass"
                                   " and not tgisinternal and tgenabled = 'D'").fetchone()
    assert keys == (8, True)
    assert disabled == 0


def test_bulk_load_of_an_orphan_row_fails_and_leaves_the_table_as_it_was(seeded):
    import datetime as dt

    import psycopg
    import pyarrow as pa

    settings, _ = seeded
    orphan = pa.table({"TransactionID": [10**9], "DateTime": pa.array([dt.datetime(2026, 10, 1, tzinfo=dt.UTC)]),
                       "CustomerID": [10**9], "MerchantID": [1], "PaymentMethodID": [1], "LocationID": [1],
                       "CurrencyCode": ["EUR"], "Amount": [1.0], "StatusID": pa.array([2], pa.int16())})
    with postgres.connect(settings) as conn:
        (before,) = conn.execute("select count(*) from oltp.transaction").fetchone()
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            with postgres.bulk_load(conn, "oltp.Transaction"):
                postgres.copy_from_arrow(conn, "oltp.Transaction", orphan)
        conn.rollback()
        (after,) = conn.execute("select count(*) from oltp.transaction").fetchone()
        (fks,) = conn.execute("select count(*) from pg_constraint where conrelid = 'oltp.transaction'::regclass"
                              " and contype = 'f'").fetchone()
    assert after == before
    assert fks == 8
