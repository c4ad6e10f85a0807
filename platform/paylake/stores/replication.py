"""The logical replication slot of a source database (below both extract and cdc): its name, creation and removal.

The slot is what makes change data capture lose nothing: every change
committed after its creation is kept in the WAL until ``drain`` consumes it.
So it is created *before* the first full extraction (``extract`` calls
``ensure_slot``), and a slot created while bronze already exists means the
changes in between are unknown: the extraction then reloads those tables in
full. Replaying a change the extraction already read is harmless (bronze
merges are idempotent and the last version per key wins).

One slot per source database, ``paylake_cdc_<database>`` by default: slot
names are cluster-wide, and a database with a slot cannot be dropped until the
slot is (``drop_database_slots``).

A slot's identity is its consistent point (the LSN its stream starts at),
recorded at creation in ``public.paylake_cdc_slot`` (PostgreSQL does not keep
it). Each PostgreSQL bronze table records the identity of the slot it was
reconciled with; a table whose record differs from the current slot's (the
slot was dropped and made again, even by an extraction of other tables) is
reloaded whole.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import psycopg
from psycopg.conninfo import conninfo_to_dict

from paylake.errors import PaylakeError, StoreUnavailable
from paylake.settings import Settings
from paylake.stores import postgres

log = logging.getLogger(__name__)

PLUGIN = "test_decoding"
PREFIX = "paylake_cdc_"


@dataclass(frozen=True)
class Slot:
    """A replication slot as ``ensure_slot`` found or made it."""

    name: str
    created: bool  # made by this call
    consistent_lsn: str | None  # where its stream starts: the slot's identity (None: made before it was recorded)


def default_slot(settings: Settings) -> str:
    """``paylake_cdc_<database>`` for the configured OLTP database (at most 63 characters)."""
    database = conninfo_to_dict(settings.postgres_dsn.get_secret_value()).get("dbname") or "postgres"
    return (PREFIX + re.sub(r"[^a-z0-9_]", "_", str(database).lower()))[:63]


def check_slot_name(slot: str) -> None:
    if not re.fullmatch(r"[a-z0-9_]{1,63}", slot):
        raise PaylakeError(f"replication slot name {slot!r} is invalid: use 1 to 63 lower-case letters, digits "
                           "or underscores")


def missing_slot(slot: str) -> PaylakeError:
    return PaylakeError(f"replication slot {slot} does not exist: run 'paylake extract' (it creates the slot, "
                        "then extracts what came before)")


def slot_error(exc: psycopg.Error, slot: str) -> PaylakeError:
    """An expected PostgreSQL failure about a slot, as a message saying what to do
    (an unexpected one is re-raised as it is)."""
    state = exc.sqlstate or ""
    if state == "42704":
        return missing_slot(slot)
    if state == "55006":
        return PaylakeError(f"replication slot {slot} is in use by another consumer: stop it, or use another --slot")
    if state == "53400":
        return StoreUnavailable(f"no free replication slot for {slot}: drop unused slots "
                                "(select pg_drop_replication_slot(name)) or raise max_replication_slots")
    if state == "42501":
        return PaylakeError(f"the role of PAYLAKE_POSTGRES_DSN may not use replication slot {slot}: it needs "
                            "the REPLICATION attribute")
    if state == "55000":
        return PaylakeError(f"replication slot {slot} cannot be used here ({exc.diag.message_primary}): check "
                            "wal_level=logical, or choose another --slot (slot names are cluster-wide)")
    raise exc


def find_slot(conn: psycopg.Connection, slot: str) -> tuple[str, str, str] | None:
    """(plugin, database, confirmed_flush_lsn) of the slot, or None."""
    row = conn.execute("select plugin, database, confirmed_flush_lsn::text from pg_replication_slots"
                       " where slot_name = %s", (slot,)).fetchone()
    return tuple(row) if row else None


REGISTRY = "public.paylake_cdc_slot"


def _registry(conn: psycopg.Connection) -> None:
    conn.execute(f"create table if not exists {REGISTRY} (slot_name text primary key, consistent_lsn pg_lsn not null,"
                 " created_at timestamptz not null default now())")


def ensure_slot(settings: Settings, slot: str | None = None) -> Slot:
    """Create the logical replication slot unless it exists (``Slot.created``).

    Call it before a full extraction: every change committed after it is kept
    for ``drain``, so nothing falls between the two."""
    slot = slot or default_slot(settings)
    check_slot_name(slot)
    with postgres.connect(settings, autocommit=True) as conn:
        database = conn.execute("select current_database()").fetchone()[0]
        _registry(conn)
        found = find_slot(conn, slot)
        if found is None:
            try:
                (lsn,) = conn.execute("select lsn::text from pg_create_logical_replication_slot(%s, %s)",
                                      (slot, PLUGIN)).fetchone()
                conn.execute(f"insert into {REGISTRY} (slot_name, consistent_lsn) values (%s, %s) on conflict"
                             " (slot_name) do update set consistent_lsn = excluded.consistent_lsn, created_at = now()",
                             (slot, lsn))
                log.info("created replication slot %s (%s) in %s at %s", slot, PLUGIN, database, lsn)
                return Slot(slot, True, lsn)
            except psycopg.errors.DuplicateObject:  # created concurrently
                found = find_slot(conn, slot)
            except psycopg.Error as exc:
                raise slot_error(exc, slot) from None
    plugin, slot_database, _ = found
    if plugin != PLUGIN or slot_database != database:
        raise PaylakeError(f"replication slot {slot} exists for database {slot_database} with plugin {plugin}: "
                           f"slot names are cluster-wide, choose another --slot (e.g. paylake_cdc_{database})")
    with postgres.connect(settings) as conn:
        row = conn.execute(f"select consistent_lsn::text from {REGISTRY} where slot_name = %s", (slot,)).fetchone()
    return Slot(slot, False, row[0] if row else None)


def drop_slot(settings: Settings, slot: str | None = None) -> bool:
    """Drop the slot (True when it existed). A forgotten slot holds WAL forever."""
    slot = slot or default_slot(settings)
    with postgres.connect(settings, autocommit=True) as conn:
        if find_slot(conn, slot) is None:
            return False
        try:
            conn.execute("select pg_drop_replication_slot(%s)", (slot,))
        except psycopg.Error as exc:
            raise slot_error(exc, slot) from None
        return True


def drop_database_slots(conn: psycopg.Connection, database: str) -> list[str]:
    """Drop every logical slot of ``database`` (before dropping the database itself)."""
    rows = conn.execute("select slot_name from pg_replication_slots where database = %s", (database,)).fetchall()
    for (name,) in rows:
        conn.execute("select pg_drop_replication_slot(%s)", (name,))
    return [name for (name,) in rows]
