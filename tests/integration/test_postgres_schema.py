"""The OLTP schema (sql/postgres) on the test stack's PostgreSQL: migrations,
Transaction partitions, the atomic status change, PII encryption, roles, the
append-only audit, server audit settings, CDC publication and timestamps.

Every name a test creates carries a uuid suffix and is removed afterwards, so
the suite can run again and again against the same (shared) database.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import errors, sql

from paylake.settings import Settings
from paylake.sources.migrate import discover, migrate_postgres
from paylake.stores import postgres

UTC = dt.UTC
PENDING, DISPUTED = 1, 5
OLTP_TABLES = ["Currency", "Location", "Customer", "Address", "Merchant", "Device", "PaymentMethod", "Product",
               "TransactionStatus", "Transaction", "TransactionStateChanges", "AuditLog"]


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def _dsn_as(settings: Settings, user: str, password: str) -> str:
    parts = urlsplit(settings.postgres_dsn.get_secret_value())
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.hostname}:{parts.port or 5432}"
    return urlunsplit(parts._replace(netloc=netloc))


def _drop_partitions(conn: psycopg.Connection, names: list[str]) -> None:
    """Detach then drop (a partition referenced by a foreign key cannot be dropped attached)."""
    for name in names:
        if conn.execute("select to_regclass(%s)", (f"oltp.{name}",)).fetchone()[0] is not None:
            conn.execute(sql.SQL("alter table oltp.transaction detach partition oltp.{}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("drop table oltp.{}").format(sql.Identifier(name)))


def _scram_verifier(conn: psycopg.Connection, role: str, password: str) -> str:
    """What grant_contractor is given instead of the password: the server logs every statement."""
    return conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()


@pytest.fixture(scope="module")
def admin(migrated_postgres) -> Iterator[psycopg.Connection]:
    """The owner role paylake_admin, in autocommit."""
    with postgres.connect(migrated_postgres, autocommit=True) as conn:
        yield conn


Grant = Callable[..., tuple[str, str]]


@pytest.fixture(scope="module")
def grant(admin) -> Iterator[Grant]:
    """Create a contractor login role in a group through oltp.grant_contractor; dropped afterwards."""
    created: list[str] = []

    def _grant(group: str, valid_for: dt.timedelta = dt.timedelta(days=1)) -> tuple[str, str]:
        name, password = _unique("contractor"), uuid.uuid4().hex
        created.append(name)
        admin.execute("select oltp.grant_contractor(%s, %s, %s, now() + %s)",
                      (name, _scram_verifier(admin, name, password), group, valid_for))
        return name, password

    yield _grant
    for name in created:
        admin.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def developer(migrated_postgres, grant) -> Iterator[psycopg.Connection]:
    name, password = grant("paylake_developer")
    with psycopg.connect(_dsn_as(migrated_postgres, name, password), autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="module")
def readonly(migrated_postgres, grant) -> Iterator[psycopg.Connection]:
    name, password = grant("paylake_readonly")
    with psycopg.connect(_dsn_as(migrated_postgres, name, password), autocommit=True) as conn:
        yield conn


@dataclass(frozen=True)
class Reference:
    location_id: int
    customer_id: int
    merchant_id: int
    payment_method_id: int


@dataclass(frozen=True)
class Txn:
    id: int
    at: dt.datetime
    partition: str


@pytest.fixture(scope="module")
def reference(admin) -> Iterator[Reference]:
    """One Location, Customer, Merchant and PaymentMethod (and the EUR currency) to hang Transactions on."""
    tag = uuid.uuid4().hex[:10]
    email = f"Test.{tag}@Example.com"
    # EUR is shared reference data: created when missing, never deleted (other suites may use it).
    admin.execute("insert into oltp.Currency (CurrencyCode, Name, RateToEUR) values ('EUR', 'Euro', 1)"
                  " on conflict (CurrencyCode) do nothing")
    (location_id,) = admin.execute(
        "insert into oltp.Location (City, Region, Country, Latitude, Longitude)"
        " values (%s, 'Test Region', 'FR', 48.856600, 2.352200) returning LocationID", (f"city-{tag}",)).fetchone()
    # PII arrives sealed (paylake.security.keys); the row only needs well-formed bytes here
    (customer_id,) = admin.execute(
        "insert into oltp.Customer (UserName, Password, EmailEncrypted, EmailHash, FullNameEncrypted, Segment,"
        " Country, SignupDate) values (%s, pii.hash_password(%s, 4), %s, %s, %s, 'standard', 'FR', current_date)"
        " returning CustomerID",
        (f"user-{tag}", uuid.uuid4().hex, os.urandom(40), uuid.uuid4().hex + email.lower(), os.urandom(40))).fetchone()
    (merchant_id,) = admin.execute(
        "insert into oltp.Merchant (Name, Industry, Size, Country, LocationID)"
        " values (%s, 'Retail', 'small', 'FR', %s) returning MerchantID", (f"merchant-{tag}", location_id)).fetchone()
    (payment_method_id,) = admin.execute(
        "insert into oltp.PaymentMethod (CustomerID, Type, Brand, Last4, Token)"
        " values (%s, 'Credit Card', 'Visa', '4242', %s) returning PaymentMethodID",
        (customer_id, f"tok-{tag}")).fetchone()
    yield Reference(location_id, customer_id, merchant_id, payment_method_id)
    admin.execute("delete from oltp.TransactionStateChanges where TransactionID in"
                  " (select TransactionID from oltp.Transaction where CustomerID = %s)", (customer_id,))
    admin.execute("delete from oltp.Transaction where CustomerID = %s", (customer_id,))
    admin.execute("delete from oltp.PaymentMethod where PaymentMethodID = %s", (payment_method_id,))
    admin.execute("delete from oltp.Merchant where MerchantID = %s", (merchant_id,))
    admin.execute("delete from oltp.Customer where CustomerID = %s", (customer_id,))
    admin.execute("delete from oltp.Location where LocationID = %s", (location_id,))


@pytest.fixture(scope="module")
def january_2031(admin) -> str:
    admin.execute("select oltp.create_transaction_partitions('2031-01-01', 1)")
    return "oltp.transaction_2031_01"


def _insert_transaction(conn: psycopg.Connection, ref: Reference, at: dt.datetime, amount: str = "10.00") -> Txn:
    txn_id, when = conn.execute(
        "insert into oltp.Transaction (DateTime, CustomerID, MerchantID, PaymentMethodID, LocationID, CurrencyCode,"
        " Amount, StatusID) values (%s, %s, %s, %s, %s, 'EUR', %s, %s) returning TransactionID, DateTime",
        (at, ref.customer_id, ref.merchant_id, ref.payment_method_id, ref.location_id, amount, PENDING)).fetchone()
    (partition,) = conn.execute("select tableoid::regclass::text from oltp.Transaction"
                                " where TransactionID = %s and DateTime = %s", (txn_id, when)).fetchone()
    return Txn(txn_id, when, partition)


def _status_and_changes(conn: psycopg.Connection, txn: Txn) -> tuple[str, list[tuple]]:
    (status,) = conn.execute("select s.Name from oltp.Transaction t join oltp.TransactionStatus s using (StatusID)"
                             " where t.TransactionID = %s and t.DateTime = %s", (txn.id, txn.at)).fetchone()
    changes = conn.execute("select FromStatusID, ToStatusID, Reason, ChangedBy from oltp.TransactionStateChanges"
                           " where TransactionID = %s order by ChangeID", (txn.id,)).fetchall()
    return status, changes


# --- 1. migrations ---------------------------------------------------------------------------------------------


def test_second_migrate_applies_nothing(migrated_postgres):
    assert migrate_postgres(migrated_postgres) == []


def test_schema_migration_records_each_migration_file_once_with_its_checksum(admin):
    rows = admin.execute("select version, name, checksum from public.schema_migration order by version").fetchall()

    assert rows == [(m.version, m.name, m.checksum) for m in discover()]


# --- 2. partitions ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("at", [dt.datetime(2031, 1, 1, tzinfo=UTC),
                                dt.datetime(2031, 1, 15, 12, 30, tzinfo=UTC),
                                dt.datetime(2031, 1, 31, 23, 59, 59, 999999, tzinfo=UTC)])
def test_transaction_in_a_partitioned_month_lands_in_that_month(admin, reference, january_2031, at):
    assert _insert_transaction(admin, reference, at).partition == january_2031


def test_transaction_without_a_monthly_partition_lands_in_the_default_partition(admin, reference, january_2031):
    assert admin.execute("select to_regclass('oltp.transaction_2040_06')").fetchone()[0] is None

    txn = _insert_transaction(admin, reference, dt.datetime(2040, 6, 15, 8, tzinfo=UTC))

    assert txn.partition == "oltp.transaction_default"


def test_partition_bounds_are_utc_instants(admin, reference, january_2031):
    tokyo_new_year = dt.datetime(2031, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=9)))  # 2030-12-31 15:00 UTC

    assert _insert_transaction(admin, reference, tokyo_new_year).partition != january_2031


def test_create_transaction_partitions_twice_creates_nothing_the_second_time(admin, january_2031):
    assert admin.execute("select to_regclass(%s)::text", (january_2031,)).fetchone()[0] == january_2031
    assert admin.execute("select oltp.create_transaction_partitions('2031-01-01', 1)").fetchone()[0] == 0


def test_create_transaction_partitions_creates_one_table_per_month_across_a_year_end(admin):
    year = random.randint(2200, 2999)  # noqa: S311 - a free month, not a secret
    names = [f"transaction_{year}_12", f"transaction_{year + 1}_01"]
    try:
        (created,) = admin.execute("select oltp.create_transaction_partitions(%s, 2)",
                                   (dt.date(year, 12, 17),)).fetchone()
        (again,) = admin.execute("select oltp.create_transaction_partitions(%s, 2)",
                                 (dt.date(year, 12, 1),)).fetchone()
        bounds = admin.execute(
            "select c.relname, pg_get_expr(c.relpartbound, c.oid)"
            " from pg_inherits i join pg_class c on c.oid = i.inhrelid"
            " where i.inhparent = 'oltp.transaction'::regclass and c.relname = any(%s) order by 1", (names,)).fetchall()
    finally:
        _drop_partitions(admin, names)

    assert (created, again) == (2, 0)
    assert bounds == [
        (names[0], f"FOR VALUES FROM ('{year}-12-01 00:00:00+00') TO ('{year + 1}-01-01 00:00:00+00')"),
        (names[1], f"FOR VALUES FROM ('{year + 1}-01-01 00:00:00+00') TO ('{year + 1}-02-01 00:00:00+00')"),
    ]


def test_partition_bounds_do_not_depend_on_the_session_time_zone(migrated_postgres, admin):
    year = random.randint(2200, 2999)  # noqa: S311
    name = f"transaction_{year}_05"
    dsn = migrated_postgres.postgres_dsn.get_secret_value()
    try:
        with psycopg.connect(dsn, autocommit=True, options="-c TimeZone=Asia/Tokyo") as tokyo:
            tokyo.execute("select oltp.create_transaction_partitions(%s, 1)", (dt.date(year, 5, 1),))
        (bound,) = admin.execute("select pg_get_expr(relpartbound, oid) from pg_class"
                                 " where oid = to_regclass(%s)", (f"oltp.{name}",)).fetchone()
    finally:
        _drop_partitions(admin, [name])

    assert bound == f"FOR VALUES FROM ('{year}-05-01 00:00:00+00') TO ('{year}-06-01 00:00:00+00')"


# --- 3. the atomic status change -------------------------------------------------------------------------------


def test_status_change_updates_the_transaction_and_writes_exactly_one_audit_row(admin, reference, january_2031):
    txn = _insert_transaction(admin, reference, dt.datetime(2031, 1, 10, 9, tzinfo=UTC))

    (previous,) = admin.execute("select oltp.change_transaction_status(%s, %s, 'disputed', 'chargeback', 'bank')",
                                (txn.id, txn.at)).fetchone()

    assert previous == PENDING
    assert _status_and_changes(admin, txn) == ("disputed", [(PENDING, DISPUTED, "chargeback", "bank")])


@pytest.mark.parametrize(("to_status", "reason", "error"), [
    ("disputed", "", errors.CheckViolation),  # fails on the audit insert, after the UPDATE ran
    ("no_such_status", "chargeback", errors.InvalidParameterValue),
], ids=["empty-reason", "unknown-status"])
def test_failed_status_change_leaves_neither_the_update_nor_an_audit_row(admin, reference, january_2031,
                                                                         to_status, reason, error):
    txn = _insert_transaction(admin, reference, dt.datetime(2031, 1, 11, 9, tzinfo=UTC))

    with pytest.raises(error):
        admin.execute("select oltp.change_transaction_status(%s, %s, %s, %s, 'bank')",
                      (txn.id, txn.at, to_status, reason))

    assert _status_and_changes(admin, txn) == ("pending", [])


def test_failed_status_change_rolls_back_an_earlier_change_in_the_same_transaction(admin, reference, january_2031):
    txn = _insert_transaction(admin, reference, dt.datetime(2031, 1, 12, 9, tzinfo=UTC))

    with pytest.raises(errors.CheckViolation), admin.transaction():
        admin.execute("select oltp.change_transaction_status(%s, %s, 'disputed', 'chargeback', 'bank')",
                      (txn.id, txn.at))
        admin.execute("select oltp.change_transaction_status(%s, %s, 'fraudulent', '', 'risk')", (txn.id, txn.at))

    assert _status_and_changes(admin, txn) == ("pending", [])


def test_status_change_of_a_missing_transaction_is_refused_without_an_audit_row(admin):
    missing_id = -random.randint(1, 10**12)  # noqa: S311 - identities are positive: this one cannot exist
    when = dt.datetime(2031, 1, 13, tzinfo=UTC)

    with pytest.raises(errors.NoDataFound, match="does not exist"):
        admin.execute("select oltp.change_transaction_status(%s, %s, 'disputed', 'chargeback', 'bank')",
                      (missing_id, when))

    assert admin.execute("select count(*) from oltp.TransactionStateChanges where TransactionID = %s",
                         (missing_id,)).fetchone() == (0,)


# --- 4. PII keys: sealed outside the server, no key inside it -------------------------------------------------


def test_no_pii_key_is_left_in_the_database(admin):
    assert admin.execute("select count(*) from pii.keyring").fetchone() == (0,)
    assert admin.execute("select count(*) from pg_proc where pronamespace = 'pii'::regnamespace and proname in"
                         " ('encrypt', 'decrypt', 'lookup_hash')").fetchone() == (0,)


def test_password_hash_is_bcrypt_and_checks_only_the_right_password(admin):
    (hashed,) = admin.execute("select pii.hash_password('correct horse', 4)").fetchone()

    assert hashed.startswith("$2") and len(hashed) == 60, "bcrypt's modular crypt format"
    assert "correct horse" not in hashed
    assert admin.execute("select pii.check_password('correct horse', %s)", (hashed,)).fetchone() == (True,)
    assert admin.execute("select pii.check_password('wrong horse', %s)", (hashed,)).fetchone() == (False,)


def test_customer_rows_store_a_hash_that_verifies_the_password_not_the_password(admin, reference):
    password = f"pw-{uuid.uuid4().hex}"
    admin.execute("update oltp.Customer set Password = pii.hash_password(%s, 4) where CustomerID = %s",
                  (password, reference.customer_id))

    (stored,) = admin.execute("select Password from oltp.Customer where CustomerID = %s",
                              (reference.customer_id,)).fetchone()

    assert password not in stored
    assert admin.execute("select pii.check_password(%s, %s), pii.check_password(%s, %s)",
                         (password, stored, password + "x", stored)).fetchone() == (True, False)


# --- 5. roles --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("table", OLTP_TABLES)
def test_readonly_can_select_every_oltp_table(readonly, admin, table):
    query = sql.SQL("select count(*) from (select * from oltp.{}) rows").format(sql.Identifier(table.lower()))

    (seen,) = readonly.execute(query).fetchone()

    assert seen == admin.execute(query).fetchone()[0], "readonly sees every row, no policy hides any"


@pytest.mark.parametrize("statement", [
    "insert into oltp.Location (City, Region, Country, Latitude, Longitude) values ('x', 'x', 'FR', 0, 0)",
    "update oltp.Location set City = City where LocationID = %(location_id)s",
    "delete from oltp.Location where LocationID = %(location_id)s",
    "insert into oltp.AuditLog (Action, Object) values ('test', 'readonly')",
], ids=["insert", "update", "delete", "audit-insert"])
def test_readonly_cannot_write(readonly, reference, statement):
    with pytest.raises(errors.InsufficientPrivilege), readonly.transaction(force_rollback=True):
        readonly.execute(statement, {"location_id": reference.location_id})


def test_readonly_cannot_change_a_transaction_status(readonly):
    with pytest.raises(errors.InsufficientPrivilege):
        readonly.execute("select oltp.change_transaction_status(1, now(), 'disputed', 'chargeback', 'readonly')")


@pytest.mark.parametrize("statement", ["select * from pii.keyring", "select * from keyring.datakey",
                                       "select * from keyring.subjectkey", "select * from keyring.operator"])
def test_readonly_cannot_reach_pii(readonly, statement):
    with pytest.raises(errors.InsufficientPrivilege):
        readonly.execute(statement)


def test_developer_can_insert_update_and_delete_oltp_rows(developer, admin):
    city = _unique("dev-city")

    (location_id,) = developer.execute(
        "insert into oltp.Location (City, Region, Country, Latitude, Longitude) values (%s, 'R', 'DE', 52.5, 13.4)"
        " returning LocationID", (city,)).fetchone()
    try:
        updated = developer.execute("update oltp.Location set Region = 'Berlin' where LocationID = %s",
                                    (location_id,)).rowcount
        assert updated == 1
        assert admin.execute("select Region from oltp.Location where LocationID = %s",
                             (location_id,)).fetchone() == ("Berlin",)
    finally:
        deleted = developer.execute("delete from oltp.Location where LocationID = %s", (location_id,)).rowcount
    assert deleted == 1


@pytest.mark.parametrize("statement", [
    "select * from pii.keyring",
    "select * from keyring.datakey",
    "select * from keyring.subjectkey",
    "select * from keyring.operator",
    "update keyring.subjectkey set wrapped = null",
    "select crypto.pgp_sym_encrypt('x', 'k')",
], ids=["pii.keyring", "datakey", "subjectkey", "operator", "shred", "crypto.encrypt"])
def test_developer_can_neither_read_the_keys_nor_decrypt(developer, statement):
    with pytest.raises(errors.InsufficientPrivilege):
        developer.execute(statement)


def test_a_validity_extended_after_a_session_does_not_excuse_it(migrated_postgres, admin, grant):
    """grant_contractor records each change of a contractor's access in the audit log; the rules read them
    and judge a session by the VALID UNTIL in force when it started, not by today's."""
    from paylake.ml.logs.data import to_sessions
    from paylake.security.rules import evaluate, load_catalog

    name, _ = grant("paylake_readonly", valid_for=dt.timedelta(hours=-1))  # already expired
    ((granted_at, until),) = admin.execute(
        "select At, (Details->>'valid_until')::timestamptz from oltp.AuditLog where Action = 'role.contractor' "
        "and Object = %s", (name,)).fetchall()
    session = to_sessions([{"session_id": f"late-{name}", "db_user": name, "client_key": "k",
                            "started_at": granted_at + dt.timedelta(milliseconds=1),
                            "lines": [{"message": f"connection authorized: user={name}"}]}]).sessions[0]
    assert session.started_at > until
    admin.execute("select oltp.grant_contractor(%s, %s, 'paylake_readonly', now() + interval '10 days')",
                  (name, _scram_verifier(admin, name, uuid.uuid4().hex)))
    catalog = load_catalog(migrated_postgres, [session])
    assert [c[1] for c in catalog.validity_changes[name]] == [until, catalog.valid_until[name]]
    assert catalog.valid_until[name] > session.started_at  # today's validity would excuse the session
    fired = evaluate(session, catalog)
    assert [r["rule"] for r in fired] == ["login_outside_validity"], fired


def test_developer_cannot_grant_contractor_access(developer, admin):
    name = _unique("contractor")

    with pytest.raises(errors.InsufficientPrivilege):
        developer.execute("select oltp.grant_contractor(%s, 'pw', 'paylake_developer', now() + interval '1 day')",
                          (name,))

    assert admin.execute("select count(*) from pg_roles where rolname = %s", (name,)).fetchone() == (0,)


def test_developer_cannot_create_transaction_partitions(developer):
    with pytest.raises(errors.InsufficientPrivilege):
        developer.execute("select oltp.create_transaction_partitions('2999-01-01', 1)")


def test_contractor_joins_only_the_requested_group(admin, grant):
    name, _ = grant("paylake_readonly")

    assert admin.execute(
        "select rolcanlogin, rolvaliduntil > now(), rolvaliduntil < now() + interval '2 days',"
        " pg_has_role(rolname, 'paylake_readonly', 'member'), pg_has_role(rolname, 'paylake_developer', 'member')"
        " from pg_roles where rolname = %s", (name,)).fetchone() == (True, True, True, True, False)


def test_contractor_whose_access_expired_cannot_log_in(migrated_postgres, grant):
    name, password = grant("paylake_developer", dt.timedelta(days=-1))

    with pytest.raises(psycopg.OperationalError, match="authentication failed"):
        psycopg.connect(_dsn_as(migrated_postgres, name, password), connect_timeout=5).close()


def test_contractor_logs_in_with_the_right_password_only(migrated_postgres, grant):
    name, password = grant("paylake_readonly", dt.timedelta(hours=1))

    with psycopg.connect(_dsn_as(migrated_postgres, name, password), connect_timeout=5) as conn:
        assert conn.execute("select current_user").fetchone() == (name,)
    with pytest.raises(psycopg.OperationalError, match="authentication failed"):
        psycopg.connect(_dsn_as(migrated_postgres, name, "wrong" + password), connect_timeout=5).close()


def test_contractor_access_beyond_90_days_is_refused(admin):
    name = _unique("contractor")

    with pytest.raises(errors.InvalidParameterValue, match="90 days"):
        admin.execute("select oltp.grant_contractor(%s, 'pw', 'paylake_readonly', now() + interval '91 days')",
                      (name,))

    assert admin.execute("select count(*) from pg_roles where rolname = %s", (name,)).fetchone() == (0,)


def test_contractor_cannot_join_a_group_other_than_developer_or_readonly(admin):
    name = _unique("contractor")

    with pytest.raises(errors.InsufficientPrivilege, match="contractors may join"):
        admin.execute("select oltp.grant_contractor(%s, 'pw', 'paylake_admin', now() + interval '1 day')", (name,))

    assert admin.execute("select count(*) from pg_roles where rolname = %s", (name,)).fetchone() == (0,)


def test_regranting_a_contractor_to_readonly_takes_developer_rights_away(admin, grant):
    name, password = grant("paylake_developer")

    admin.execute("select oltp.grant_contractor(%s, %s, 'paylake_readonly', now() + interval '1 day')",
                  (name, _scram_verifier(admin, name, password)))

    assert admin.execute("select pg_has_role(%s, 'paylake_developer', 'member'),"
                         " pg_has_role(%s, 'paylake_readonly', 'member')", (name, name)).fetchone() == (False, True)


def test_grant_contractor_refuses_a_clear_password(admin):
    name = _unique("contractor")
    try:
        with pytest.raises(errors.InvalidParameterValue):
            admin.execute("select oltp.grant_contractor(%s, %s, 'paylake_readonly', now() + interval '1 day')",
                          (name, "clear-text-password"))
        assert admin.execute("select count(*) from pg_roles where rolname = %s", (name,)).fetchone() == (0,)
    finally:
        admin.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(name)))


def _server_log_since(settings, since: dt.datetime, sentinel: str) -> str:
    """What the server logged since ``since`` (read through SQL, as the log ingestion does), once
    ``sentinel`` (logged last) shows up or a deadline passes."""
    from paylake.sources.dblogs import read_csvlog

    deadline = time.monotonic() + 10
    while True:
        rows = read_csvlog(settings, since)
        text = "\n".join(str(v) for column in rows.columns for v in column.to_pylist() if v is not None)
        if sentinel in text or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def test_contractor_password_never_reaches_the_server_log(migrated_postgres, admin, grant):
    (since,) = admin.execute("select now()").fetchone()
    _, password = grant("paylake_readonly")
    sentinel = _unique("sentinel")
    admin.execute(sql.SQL("select {}").format(sql.Literal(sentinel)))

    logged = _server_log_since(migrated_postgres, since, sentinel)

    assert sentinel in logged, "the server log did not catch up within 10 s"
    assert password not in logged


# --- 6. the append-only audit ----------------------------------------------------------------------------------


@pytest.fixture
def audit_row(admin) -> int:
    (audit_id,) = admin.execute("insert into oltp.AuditLog (Action, Object, Details) values ('test', %s, %s)"
                                " returning AuditID", (_unique("object"), '{"by": "tests"}')).fetchone()
    return audit_id


def test_audit_insert_records_the_acting_role(admin, audit_row):
    assert admin.execute("select Actor, Action from oltp.AuditLog where AuditID = %s",
                         (audit_row,)).fetchone() == ("paylake_admin", "test")


def test_developer_can_append_to_the_audit(developer, admin):
    obj = _unique("object")

    (audit_id,) = developer.execute("insert into oltp.AuditLog (Action, Object) values ('test', %s) returning AuditID",
                                    (obj,)).fetchone()

    (actor,) = admin.execute("select Actor from oltp.AuditLog where AuditID = %s", (audit_id,)).fetchone()
    assert actor.startswith("contractor_")


@pytest.mark.parametrize("statement", [
    "update oltp.AuditLog set Action = 'tampered' where AuditID = %(id)s",
    "delete from oltp.AuditLog where AuditID = %(id)s",
    "truncate oltp.AuditLog",
], ids=["update", "delete", "truncate"])
def test_audit_rejects_changes_even_from_the_owner(admin, audit_row, statement):
    # force_rollback: should the guard ever break, the shared audit log is left untouched.
    with pytest.raises(errors.InsufficientPrivilege, match="append-only"), admin.transaction(force_rollback=True):
        admin.execute(statement, {"id": audit_row})

    assert admin.execute("select Action from oltp.AuditLog where AuditID = %s", (audit_row,)).fetchone() == ("test",)


@pytest.mark.parametrize("statement", [
    "update oltp.AuditLog set Action = 'tampered' where AuditID = %(id)s",
    "delete from oltp.AuditLog where AuditID = %(id)s",
    "truncate oltp.AuditLog",
], ids=["update", "delete", "truncate"])
def test_developer_has_no_right_to_change_the_audit(developer, audit_row, statement):
    with pytest.raises(errors.InsufficientPrivilege, match="permission denied"), \
            developer.transaction(force_rollback=True):
        developer.execute(statement, {"id": audit_row})


# --- 7. server audit settings and CDC --------------------------------------------------------------------------


@pytest.mark.parametrize(("setting", "expected"), [
    ("log_connections", "on"), ("log_disconnections", "on"), ("log_statement", "all"),
    ("log_destination", "csvlog"), ("wal_level", "logical"),
])
def test_server_logs_every_session_and_statement_and_decodes_wal(admin, setting, expected):
    assert admin.execute(sql.SQL("show {}").format(sql.Identifier(setting))).fetchone() == (expected,)


def test_cdc_publication_covers_the_transactional_tables_through_the_partition_root(admin):
    assert admin.execute("select pubviaroot, pubinsert, pubupdate, pubdelete from pg_publication"
                         " where pubname = 'paylake_cdc'").fetchone() == (True, True, True, True)
    published = set(admin.execute("select schemaname, tablename from pg_publication_tables"
                                  " where pubname = 'paylake_cdc'").fetchall())

    assert {("oltp", "transaction"), ("oltp", "transactionstatechanges"), ("oltp", "customer")} <= published
    assert not {name for schema, name in published if name.startswith("transaction_")}
    assert not {(schema, name) for schema, name in published if schema == "pii"}


# --- 8. CreatedAt / UpdatedAt ----------------------------------------------------------------------------------


@pytest.fixture
def location(admin) -> Iterator[int]:
    (location_id,) = admin.execute(
        "insert into oltp.Location (City, Region, Country, Latitude, Longitude, UpdatedAt)"
        " values (%s, 'R', 'IT', 41.9, 12.5, '2000-01-01') returning LocationID", (_unique("city"),)).fetchone()
    yield location_id
    admin.execute("delete from oltp.Location where LocationID = %s", (location_id,))


def test_insert_sets_updated_at_whatever_the_application_sent(admin, location):
    (updated_at, recent) = admin.execute("select UpdatedAt, UpdatedAt > now() - interval '1 hour'"
                                         " from oltp.Location where LocationID = %s", (location,)).fetchone()

    assert recent, f"UpdatedAt {updated_at} was taken from the INSERT instead of the clock"


def test_update_moves_updated_at_forward_and_keeps_created_at(admin, location):
    created_before, updated_before = admin.execute(
        "select CreatedAt, UpdatedAt from oltp.Location where LocationID = %s", (location,)).fetchone()

    admin.execute("update oltp.Location set Region = 'Lazio', CreatedAt = '1999-01-01', UpdatedAt = '1999-01-01'"
                  " where LocationID = %s", (location,))

    created_after, updated_after = admin.execute(
        "select CreatedAt, UpdatedAt from oltp.Location where LocationID = %s", (location,)).fetchone()
    assert created_after == created_before
    assert updated_after > updated_before


def test_status_change_moves_the_transaction_updated_at_forward(admin, reference, january_2031):
    txn = _insert_transaction(admin, reference, dt.datetime(2031, 1, 14, 9, tzinfo=UTC))
    created_before, updated_before = admin.execute(
        "select CreatedAt, UpdatedAt from oltp.Transaction where TransactionID = %s and DateTime = %s",
        (txn.id, txn.at)).fetchone()

    admin.execute("select oltp.change_transaction_status(%s, %s, 'succeeded', 'settled', 'psp')", (txn.id, txn.at))

    created_after, updated_after = admin.execute(
        "select CreatedAt, UpdatedAt from oltp.Transaction where TransactionID = %s and DateTime = %s",
        (txn.id, txn.at)).fetchone()
    assert created_after == created_before
    assert updated_after > updated_before
