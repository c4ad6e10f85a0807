"""``paylake db migrate``: ordered, idempotent migrations of the source systems.

PostgreSQL migrations are the files ``sql/postgres/NNNN_name.sql``, applied in
order, each in its own transaction, recorded with a checksum in
``public.schema_migration``. A second run applies nothing and reports nothing.
MongoDB collections, validators and indexes come from ``mongo_model``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from paylake.errors import PaylakeError
from paylake.settings import Settings
from paylake.stores import postgres

SQL_DIR = Path(__file__).resolve().parents[3] / "sql" / "postgres"
MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
LOCK_ID = 0x7061796C  # advisory lock: one migrate at a time
PARTITION_MONTHS_AHEAD = 3


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path
    checksum: str


def discover(folder: Path = SQL_DIR) -> list[Migration]:
    """The migration files of ``folder`` in version order."""
    found = []
    for path in sorted(folder.glob("*.sql")):
        match = MIGRATION_FILE.match(path.name)
        if not match:
            raise PaylakeError(f"{path} is not named NNNN_name.sql: rename it so migrations keep their order")
        found.append(Migration(match[1], match[2], path, hashlib.sha256(path.read_bytes()).hexdigest()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise PaylakeError(f"two migrations in {folder} share a version number: renumber one")
    return found


def pending(migrations: list[Migration], applied: dict[str, str]) -> list[Migration]:
    """Migrations not applied yet; an applied one whose file changed is an error."""
    changed = [m for m in migrations if m.version in applied and applied[m.version] != m.checksum]
    if changed:
        names = ", ".join(m.path.name for m in changed)
        raise PaylakeError(f"applied migration(s) {names} were edited afterwards: add a new migration instead")
    return [m for m in migrations if m.version not in applied]


def migrate_postgres(settings: Settings, folder: Path = SQL_DIR) -> list[str]:
    """Apply what is missing; return the actions taken (empty when up to date)."""
    actions: list[str] = []
    with postgres.connect(settings, autocommit=True) as conn:
        conn.execute("select pg_advisory_lock(%s)", (LOCK_ID,))
        try:
            conn.execute(
                "create table if not exists public.schema_migration (version text primary key, name text not null,"
                " checksum text not null, applied_at timestamptz not null default now())"
            )
            applied = dict(conn.execute("select version, checksum from public.schema_migration").fetchall())
            for migration in pending(discover(folder), applied):
                with conn.transaction():
                    conn.execute(migration.path.read_text())
                    conn.execute("insert into public.schema_migration (version, name, checksum) values (%s, %s, %s)",
                                 (migration.version, migration.name, migration.checksum))
                actions.append(f"applied {migration.path.name}")
            actions += _load_keys(conn, settings)
            first = dt.date.today().replace(day=1)
            (created,) = conn.execute("select oltp.create_transaction_partitions(%s, %s)",
                                      (first, PARTITION_MONTHS_AHEAD + 1)).fetchone()
            if created:
                actions.append(f"created {created} Transaction partition(s) up to {PARTITION_MONTHS_AHEAD} months ahead")
        finally:
            conn.execute("select pg_advisory_unlock(%s)", (LOCK_ID,))
    return actions


def _load_keys(conn, settings: Settings) -> list[str]:
    """The keyring's data keys (created by the KMS when missing), and the retirement of pgcrypto's single key:
    values sealed with it are re-sealed under per-customer keys, then the key and its functions are dropped."""
    from paylake.security import keys

    actions = []
    with keys.Keyring(settings, conn) as ring:
        legacy = dict(conn.execute("select Name, KeyValue from pii.Keyring").fetchall())
        actions += keys.import_legacy_hmac(conn, ring, legacy.get("hmac") or (
            settings.pii_hmac_key.get_secret_value() if settings.pii_hmac_key else None))
        for name in keys.DATA_KEYS:
            if not conn.execute("select 1 from keyring.DataKey where KeyName = %s", (name,)).fetchone():
                ring.new_version(name)
                actions.append(f"created data key {name}")
        if "pii" in legacy:
            actions += _retire_pgcrypto(conn, ring)
        elif conn.execute("select 1 from pg_proc where proname = 'encrypt' and pronamespace = 'pii'::regnamespace"
                          ).fetchone():
            conn.execute("drop function pii.encrypt(text), pii.decrypt(bytea), pii.lookup_hash(text)")
            conn.execute("delete from pii.Keyring")
    return actions


def _retire_pgcrypto(conn, ring) -> list[str]:
    from paylake.security import keys

    with conn.transaction():
        customers = conn.execute("select CustomerID, pii.decrypt(EmailEncrypted), pii.decrypt(FullNameEncrypted)"
                                 " from oltp.Customer").fetchall()
        addresses = conn.execute("select AddressID, CustomerID, pii.decrypt(StreetEncrypted) from oltp.Address"
                                 ).fetchall()
        subject = ring.subject_keys([c[0] for c in customers], create=True)
        cursor = conn.cursor()
        cursor.executemany(
            "update oltp.Customer set EmailEncrypted = %s, FullNameEncrypted = %s where CustomerID = %s",
            [(*keys.seal_pii(subject, "oltp.customer", "EmailEncrypted", [cid], [email]),
              *keys.seal_pii(subject, "oltp.customer", "FullNameEncrypted", [cid], [name]), cid)
             for cid, email, name in customers])
        cursor.executemany(
            "update oltp.Address set StreetEncrypted = %s where AddressID = %s",
            [(*keys.seal_pii(subject, "oltp.address", "StreetEncrypted", [cid], [street]), address_id)
             for address_id, cid, street in addresses])
        conn.execute("drop function pii.encrypt(text), pii.decrypt(bytea), pii.lookup_hash(text)")
        conn.execute("delete from pii.Keyring")
    return [f"re-sealed {len(customers)} customer(s) and {len(addresses)} address(es) under per-customer keys; "
            "dropped pgcrypto's single PII key"]


def migrate(settings: Settings) -> list[str]:
    """Migrate both source systems; the actions taken, prefixed by store."""
    from paylake.sources.mongo_model import migrate_mongo
    from paylake.stores import mongo

    actions = [f"postgres: {a}" for a in migrate_postgres(settings)]
    with mongo.client(settings) as client:
        db = mongo.database(client, settings)
        actions += [f"mongo: {a}" for a in migrate_mongo(db)]
        actions += [f"mongo: {a}" for a in _seal_legacy_reviews(settings, db)]
    return actions


def _seal_legacy_reviews(settings: Settings, db, batch: int = 5_000) -> list[str]:
    """Review texts stored in clear before client-side field encryption: sealed under their author's key, in
    batches (a re-run after a failure seals what is left)."""
    from pymongo import UpdateOne

    from paylake.security import keys
    from paylake.sources.seed import seal_reviews

    sealed = 0
    with keys.Keyring(settings) as ring:
        while True:
            docs = list(db.CustomerReview.find({"message": {"$type": "string"}}, {"customerId": 1, "message": 1}
                                               ).limit(batch))
            if not docs:
                break
            subject = ring.subject_keys([d["customerId"] for d in docs], create=True)
            seal_reviews(docs, subject)
            db.CustomerReview.bulk_write([UpdateOne({"_id": d["_id"]}, {"$set": {"message": d["message"]}})
                                          for d in docs], ordered=False, bypass_document_validation=True)
            sealed += len(docs)
    return [f"sealed {sealed} review text(s) stored in clear under their authors' keys"] if sealed else []


def isolated_sources(settings: Settings, name: str) -> Settings:
    """Settings for a new, migrated PostgreSQL database and Mongo database called
    ``name`` beside the configured ones (dropped first if they exist): for
    tests and benchmarks that must not touch the main sources."""
    from pydantic import SecretStr

    from paylake.stores import mongo, online

    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise PaylakeError(f"{name!r} is not a plain lower-case database name")
    from paylake.stores.replication import drop_database_slots

    with postgres.connect(settings, autocommit=True) as conn:
        drop_database_slots(conn, name)  # a database with a replication slot cannot be dropped
        conn.execute(f"drop database if exists {name} with (force)")
        conn.execute(f"create database {name}")
    dsn = postgres.with_database(settings.postgres_dsn.get_secret_value(), name)
    isolated = settings.model_copy(update={"postgres_dsn": SecretStr(dsn), "mongo_database": name,
                                           "online_store_prefix": name})
    with mongo.client(isolated) as client:
        client.drop_database(name)
    online.drop_prefix(settings, name)  # its online store too
    migrate(isolated)
    return isolated


def drop_isolated_sources(settings: Settings, name: str) -> None:
    """Drop what ``isolated_sources`` created (``settings`` are the main ones)."""
    from paylake.stores import mongo
    from paylake.stores.replication import drop_database_slots

    with postgres.connect(settings, autocommit=True) as conn:
        drop_database_slots(conn, name)
        conn.execute(f"drop database if exists {name} with (force)")
    with mongo.client(settings) as client:
        client.drop_database(name)
