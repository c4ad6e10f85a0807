"""``paylake seed``: fill both source systems with the generated world.

PostgreSQL gets everything by COPY; clear PII never reaches a server: each
customer's email, name and street are sealed (AES-256-GCM) under that
customer's own key (``paylake.security.keys``) and the email is keyed-hashed
before COPY; passwords are bcrypt-ed by the server. Review texts in MongoDB are
sealed under the same per-customer keys (client-side field encryption). Labels and
refunds go through ``oltp.change_transaction_status`` (the audit path), in the
order they arrive. MongoDB gets documents with ``insert_many`` (the server
enforces the collections' validators; rejected documents are counted). Log
sessions come from real SQL sessions against the server (``dblogs``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from pymongo.errors import BulkWriteError

from paylake.errors import PaylakeError
from paylake.settings import Settings
from paylake.sources import documents
from paylake.sources.generator import SeedData, SeedSpec, generate
from paylake.stores import mongo, postgres

log = logging.getLogger(__name__)

# Loading order (foreign keys) and the identity column of each table.
PG_TABLES = (
    ("oltp.Currency", None), ("oltp.Location", "LocationID"), ("oltp.Customer", "CustomerID"),
    ("oltp.Address", "AddressID"), ("oltp.Merchant", "MerchantID"), ("oltp.Product", "ProductID"),
    ("oltp.Device", "DeviceID"), ("oltp.PaymentMethod", "PaymentMethodID"),
    ("oltp.Transaction", "TransactionID"),
)
MONGO_COLLECTIONS = ("Customer", "Merchant", "CustomerReview", "UserInteractionData", "Log")
PASSWORD_COST = 4  # bcrypt cost for synthetic accounts (applications use pii.hash_password's default)


@dataclass
class SeedReport:
    rows: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    stats: dict = field(default_factory=dict)


def seed(settings: Settings, spec: SeedSpec, *, reset: bool = False, progress=lambda message: None) -> SeedReport:
    """Generate ``spec`` and load it into PostgreSQL and MongoDB."""
    report = SeedReport()
    started = time.perf_counter()
    progress("generating the synthetic world")
    data = generate(spec)
    report.seconds["generate"] = time.perf_counter() - started
    report.stats = data.stats
    from paylake.security.keys import Keyring

    with postgres.connect(settings) as conn, Keyring(settings, conn) as ring:  # one transaction
        _prepare_postgres(conn, data, reset)
        progress("sealing PII under per-customer keys")
        begin = time.perf_counter()
        sealed = _seal_pii(ring, data, reset)
        report.seconds["seal PII"] = time.perf_counter() - begin
        for table, _ in PG_TABLES:
            progress(f"loading {table}")
            begin = time.perf_counter()
            report.rows[table] = _load_table(conn, table, data, sealed)
            report.seconds[table] = time.perf_counter() - begin
        for table, identity in PG_TABLES:
            if identity:
                conn.execute(f"select setval(pg_get_serial_sequence('{table.lower()}', '{identity.lower()}'),"
                             f" (select coalesce(max({identity}), 1) from {table}))")
        progress("applying status changes (labels, refunds)")
        begin = time.perf_counter()
        report.rows["oltp.TransactionStateChanges"] = apply_status_changes(conn, data.status_change)
        report.seconds["oltp.TransactionStateChanges"] = time.perf_counter() - begin
        conn.execute("insert into oltp.AuditLog (Action, Object, Details) values ('seed', 'oltp', %s)",
                     (f'{{"seed": {spec.seed}, "customers": {spec.customers}, "days": {spec.days}}}',))
        conn.commit()
    with mongo.client(settings) as client:
        db = mongo.database(client, settings)
        rng = np.random.default_rng(spec.seed + 1)
        builders = {
            "Customer": lambda: documents.customer_documents(data),
            "Merchant": lambda: documents.merchant_documents(data),
            "CustomerReview": lambda: seal_reviews(documents.review_documents(data, rng), sealed["keys"]),
            "UserInteractionData": lambda: documents.interaction_documents(data, rng),
        }
        if reset:
            for name in MONGO_COLLECTIONS:
                db[name].delete_many({})
        for name, build in builders.items():
            progress(f"loading mongo {name}")
            begin = time.perf_counter()
            report.rows[f"mongo.{name}"], report.rejected[f"mongo.{name}"] = insert_documents(db[name], build())
            report.seconds[f"mongo.{name}"] = time.perf_counter() - begin
        if spec.log_sessions:
            from paylake.sources.dblogs import generate_log_sessions

            progress(f"running {spec.log_sessions} real database sessions for the Log collection")
            begin = time.perf_counter()
            counts = generate_log_sessions(settings, db, sessions=spec.log_sessions,
                                           anomalous_fraction=spec.anomalous_log_fraction, seed=spec.seed)
            report.rows["mongo.Log"] = counts["sessions"]
            report.stats["anomalous_log_sessions"] = counts["anomalous"]
            report.seconds["mongo.Log"] = time.perf_counter() - begin
    report.seconds["total"] = time.perf_counter() - started
    return report


def _prepare_postgres(conn, data: SeedData, reset: bool) -> None:
    (existing,) = conn.execute("select count(*) from oltp.Customer").fetchone()
    if existing and not reset:
        raise PaylakeError(f"the OLTP database already holds {existing} customers: "
                           "run 'paylake seed --reset' to replace them")
    if reset:
        names = ", ".join(t for t, _ in reversed(PG_TABLES))
        conn.execute(f"truncate oltp.TransactionStateChanges, {names} restart identity cascade")
    first = data.spec.start.replace(day=1)
    months = (data.spec.end.year - first.year) * 12 + data.spec.end.month - first.month + 1
    conn.execute("select oltp.create_transaction_partitions(%s, %s)", (first, months))


def _seal_pii(ring, data: SeedData, reset: bool) -> dict:
    """Per-customer keys (new ones; a reset destroys the old ones first) and the sealed PII columns."""
    from paylake.security import keys

    customer_ids = data.customer["CustomerID"].to_pylist()
    if reset:
        ring.conn.execute("delete from keyring.SubjectKey")
    subject = ring.subject_keys(customer_ids, create=True)
    hmac_key = ring.hmac_key()
    address_owner = data.address["CustomerID"].to_pylist()
    return {
        "keys": subject,
        "EmailEncrypted": keys.seal_pii(subject, "oltp.customer", "EmailEncrypted", customer_ids,
                                        data.customer["EmailClear"].to_pylist()),
        "EmailHash": [keys.pseudonym(hmac_key, e) for e in data.customer["EmailClear"].to_pylist()],
        "FullNameEncrypted": keys.seal_pii(subject, "oltp.customer", "FullNameEncrypted", customer_ids,
                                           data.customer["FullNameClear"].to_pylist()),
        "StreetEncrypted": keys.seal_pii(subject, "oltp.address", "StreetEncrypted", address_owner,
                                         data.address["StreetClear"].to_pylist()),
    }


def seal_reviews(docs: list[dict], subject: dict[int, bytes]) -> list[dict]:
    """Review texts sealed under their author's key (client-side field encryption, the envelope of
    paylake.security.keys: the same per-customer key as their PostgreSQL PII, so one destroyed key erases both)."""
    from paylake.security import keys

    sealed = keys.seal_pii(subject, "mongo.customerreview", "message", [d["customerId"] for d in docs],
                           [d["message"] for d in docs])
    for doc, value in zip(docs, sealed, strict=True):
        doc["message"] = value
    return docs


def _load_table(conn, table: str, data: SeedData, sealed: dict) -> int:
    if table == "oltp.Customer":
        return _load_customers(conn, data.customer, sealed)
    if table == "oltp.Address":
        return _load_addresses(conn, data.address, sealed)
    source = {
        "oltp.Currency": data.currency, "oltp.Location": data.location, "oltp.Merchant": data.merchant,
        "oltp.Product": data.product, "oltp.Device": data.device, "oltp.PaymentMethod": data.payment_method,
        "oltp.Transaction": data.transaction,
    }[table]
    if table == "oltp.Transaction":  # the big one: load like pg_restore, keys validated in bulk
        with postgres.bulk_load(conn, table):
            return postgres.copy_from_arrow(conn, table, source)
    return postgres.copy_from_arrow(conn, table, source)


def _load_customers(conn, customer: pa.Table, sealed: dict) -> int:
    """PII arrives sealed; only the password is clear on the way in (bcrypt needs it), in a temporary table
    of this session only."""
    rows = customer.drop_columns(["EmailClear", "FullNameClear"]).append_column(
        "EmailEncrypted", pa.array(sealed["EmailEncrypted"], pa.binary())).append_column(
        "EmailHash", pa.array(sealed["EmailHash"])).append_column(
        "FullNameEncrypted", pa.array(sealed["FullNameEncrypted"], pa.binary()))
    conn.execute("create temp table seed_customer (CustomerID bigint, UserName text, PasswordClear text,"
                 " EmailEncrypted bytea, EmailHash text, FullNameEncrypted bytea, Segment text, Country text,"
                 " SignupDate date, ConsentGDPRProcessing boolean, CCPADoNotSell boolean) on commit drop")
    _copy_binary(conn, "seed_customer", rows)
    cur = conn.execute(
        "insert into oltp.Customer (CustomerID, UserName, Password, EmailEncrypted, EmailHash, FullNameEncrypted,"
        " Segment, Country, SignupDate, ConsentGDPRProcessing, CCPADoNotSell, CreatedAt)"
        " select CustomerID, UserName, pii.hash_password(PasswordClear, %s), EmailEncrypted, EmailHash,"
        " FullNameEncrypted, Segment, Country, SignupDate, ConsentGDPRProcessing, CCPADoNotSell,"
        " SignupDate::timestamptz from seed_customer",
        (PASSWORD_COST,))
    return cur.rowcount


def _load_addresses(conn, address: pa.Table, sealed: dict) -> int:
    rows = address.drop_columns(["StreetClear"]).append_column(
        "StreetEncrypted", pa.array(sealed["StreetEncrypted"], pa.binary()))
    _copy_binary(conn, "oltp.Address", rows)
    return rows.num_rows


def _copy_binary(conn, table: str, rows: pa.Table) -> None:
    """COPY rows holding bytea columns (psycopg adapts each value; PII tables are small)."""
    from psycopg import sql

    columns = sql.SQL(", ").join(sql.Identifier(n.lower()) for n in rows.column_names)
    target = sql.SQL(".").join(sql.Identifier(p) for p in table.lower().split("."))
    with conn.cursor().copy(sql.SQL("copy {} ({}) from stdin").format(target, columns)) as copy:
        for row in zip(*(rows[n].to_pylist() for n in rows.column_names), strict=True):
            copy.write_row(row)


def apply_status_changes(conn, changes: pa.Table) -> int:
    """Apply status changes in arrival order through the one audited function."""
    if changes.num_rows == 0:
        return 0
    conn.execute("create temp table seed_status_change (Seq bigint, TransactionID bigint, DateTime timestamptz,"
                 " ToStatusID smallint, Reason text, ChangedBy text, ChangedAt timestamptz) on commit drop")
    numbered = changes.add_column(0, "Seq", pa.array(np.arange(changes.num_rows, dtype=np.int64)))
    postgres.copy_from_arrow(conn, "seed_status_change", numbered)
    conn.execute(
        "do $$ declare c record; begin"
        " for c in select s.*, t.Name from seed_status_change s join oltp.TransactionStatus t"
        "   on t.StatusID = s.ToStatusID order by s.Seq loop"
        "   perform oltp.change_transaction_status(c.TransactionID, c.DateTime, c.Name, c.Reason, c.ChangedBy,"
        "                                          c.ChangedAt);"
        " end loop; end $$")
    return changes.num_rows


def insert_documents(collection, docs: list[dict], batch: int = 5_000) -> tuple[int, int]:
    """insert_many in batches; returns (inserted, rejected by the validator)."""
    inserted = rejected = 0
    for offset in range(0, len(docs), batch):
        chunk = docs[offset: offset + batch]
        try:
            inserted += len(collection.insert_many(chunk, ordered=False).inserted_ids)
        except BulkWriteError as exc:
            failed = len(exc.details.get("writeErrors", []))
            inserted += len(chunk) - failed
            rejected += failed
            log.warning("%s: %d document(s) rejected by the validator", collection.name, failed)
    return inserted, rejected

