"""The CDC stream: a logical replication slot drained into bronze, micro-batch by micro-batch.

One ``drain``:

1. pins the decoding session's output settings (UTC, ISO dates, hex bytea) and
   takes an advisory lock, so that one consumer at a time drains a slot;
2. notes the flushed WAL position, then *peeks* (reads without consuming) up
   to ``max_changes`` decoded rows up to it. The output of logical decoding
   holds whole committed transactions only, so the window ends on a
   transaction boundary;
3. maps partitions to their root table (``pg_inherits``), keeps the tables of
   publication ``paylake_cdc`` in schema ``oltp``, types every value with the
   table's bronze schema and keeps the last change per primary key;
4. merges each table's batch into its bronze table with ``lake.merge_rows``:
   the commit LSN of the window's last transaction is the Delta transaction
   id and ``_batch_id``, deletes delete, the rest upserts. Contract breaks go
   to quarantine;
5. hands the table's changes (the last per key, ``_op`` I, U or D: a delete carries its key) to the
   ``sink`` (the online store, the stream's scoring);
6. only then advances the slot: to the flushed position noted in 2 when the
   window was not cut by ``max_changes`` (so that a slot on a quiet database
   does not hold the WAL of busy ones), else to the last commit read.

A crash before 6 replays the same changes at the next drain: a table whose
batch is already committed is skipped (its Delta transaction id), and a merge
of the same last-per-key rows is idempotent anyway. The sink therefore sees
rows at least once and must be idempotent (scores keyed by transaction id).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
import pyarrow as pa

from paylake import contracts, metrics
from paylake.cdc import decoding
from paylake.errors import ContractError, PaylakeError
from paylake.extract.catalog import read_pg_table
from paylake.extract.postgres import PostgresTableSource
from paylake.extract.run import quarantine, with_load_metadata
from paylake.settings import Settings
from paylake.stores import lake, postgres
from paylake.stores.replication import check_slot_name, default_slot, missing_slot, slot_error

log = logging.getLogger(__name__)

PUBLICATION = "paylake_cdc"
SCHEMA = "oltp"
DECODING_OPTIONS = ("include-xids", "on", "include-timestamp", "on", "skip-empty-xacts", "on")
SESSION_SETTINGS = {"TimeZone": "UTC", "DateStyle": "ISO, YMD", "bytea_output": "hex", "extra_float_digits": "1"}

Sink = Callable[[str, pa.Table], None]


@dataclass
class TableChanges:
    """What a drain did to one bronze table."""

    table: str
    changes: int = 0  # decoded changes, before keeping the last per key
    inserted: int = 0  # applied to bronze (merge metrics)
    updated: int = 0
    deleted: int = 0
    quarantined: int = 0
    truncates: int = 0  # TRUNCATEs seen: not applied, bronze needs a full extract
    replayed: bool = False  # the batch was already committed (replay after a crash)

    def absorb(self, other: TableChanges) -> None:
        for name in ("changes", "inserted", "updated", "deleted", "quarantined", "truncates"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class CdcBatchReport:
    """One drain (or, from ``follow``, the sum of several)."""

    slot: str
    drains: int = 0
    transactions: int = 0
    changes: int = 0  # decoded changes of every table, captured or not
    skipped: int = 0  # changes of tables outside the publication (e.g. oltp.auditlog)
    batch: int | None = None  # commit LSN of the last transaction applied: the Delta transaction id
    advanced_to: str | None = None  # where the slot was advanced (None: not moved)
    more_pending: bool = False  # the window was cut at max_changes
    tables: dict[str, TableChanges] = field(default_factory=dict)
    seconds: float = 0.0

    def absorb(self, other: CdcBatchReport) -> None:
        self.drains += other.drains
        self.transactions += other.transactions
        self.changes += other.changes
        self.skipped += other.skipped
        self.batch = other.batch or self.batch
        self.advanced_to = other.advanced_to or self.advanced_to
        self.more_pending = other.more_pending
        self.seconds += other.seconds
        for name, table in other.tables.items():
            self.tables.setdefault(name, TableChanges(name)).absorb(table)


# ----------------------------------------------------------------------------- sessions
def _connect(settings: Settings) -> psycopg.Connection:
    """An autocommit session whose output settings the decoder relies on."""
    conn = postgres.connect(settings, autocommit=True)
    for name, value in SESSION_SETTINGS.items():
        conn.execute("select set_config(%s, %s, false)", (name, value))
    return conn


# ----------------------------------------------------------------------------- the catalog of a batch
def _captured_tables(conn: psycopg.Connection) -> set[str]:
    """The tables of schema oltp in the CDC publication (partitioned ones by their root)."""
    if conn.execute("select 1 from pg_publication where pubname = %s", (PUBLICATION,)).fetchone() is None:
        raise ContractError(f"publication {PUBLICATION} does not exist: run 'paylake db migrate'")
    rows = conn.execute("select schemaname || '.' || tablename from pg_publication_tables"
                        " where pubname = %s and schemaname = %s", (PUBLICATION, SCHEMA)).fetchall()
    return {r[0] for r in rows}


def _partition_roots(conn: psycopg.Connection) -> dict[str, str]:
    edges = conn.execute(
        "select cn.nspname || '.' || c.relname, pn.nspname || '.' || p.relname from pg_inherits i"
        " join pg_class c on c.oid = i.inhrelid join pg_namespace cn on cn.oid = c.relnamespace"
        " join pg_class p on p.oid = i.inhparent join pg_namespace pn on pn.oid = p.relnamespace"
        " where cn.nspname = %s", (SCHEMA,)).fetchall()
    return decoding.partition_roots((child, parent) for child, parent in edges)


# ----------------------------------------------------------------------------- drain
def _peek(conn: psycopg.Connection, slot: str, upto_lsn: str | None, max_changes: int) -> list[tuple]:
    options = ", ".join(["%s"] * len(DECODING_OPTIONS))
    try:
        return conn.execute(f"select lsn::text, xid::text, data from pg_logical_slot_peek_changes("
                            f"%s, %s::pg_lsn, %s, {options})", (slot, upto_lsn, max_changes,
                                                                *DECODING_OPTIONS)).fetchall()
    except psycopg.Error as exc:
        raise slot_error(exc, slot) from None


def _lock(conn: psycopg.Connection, slot: str) -> None:
    (locked,) = conn.execute("select pg_try_advisory_lock(hashtextextended(%s, 0))",
                             (f"paylake.cdc:{slot}",)).fetchone()
    if not locked:
        raise PaylakeError(f"another 'paylake cdc' is draining slot {slot}: wait for it, or stop it")


def _advance(conn: psycopg.Connection, slot: str, lsn: int) -> str | None:
    """Move the slot's confirmed position forward to ``lsn`` (never backwards)."""
    target = decoding.int_to_lsn(lsn)
    row = conn.execute("select pg_replication_slot_advance(slot_name, %s::pg_lsn) from pg_replication_slots"
                       " where slot_name = %s and confirmed_flush_lsn < %s::pg_lsn", (target, slot, target)).fetchone()
    return target if row else None


def apply_table(settings: Settings, batch: decoding.TableBatch, *, slot: str, lsn: int, extracted_at: dt.datetime,
                sink: Sink | None = None) -> TableChanges:
    """Merge one table's micro-batch into its bronze table, quarantine its rejects, feed the sink."""
    source = PostgresTableSource(batch.table)
    report = TableChanges(source.name, changes=sum(n for op, n in batch.decoded.items() if op != "T"),
                          quarantined=batch.rejects.num_rows, truncates=batch.decoded["T"])
    if batch.rejects.num_rows:
        quarantine(settings, source, batch.rejects, extracted_at, lsn)
    if report.truncates:
        log.warning("%s was truncated: bronze keeps its rows; run 'paylake extract --full --only postgres.%s'",
                    source.table.qualified, source.name)
    if batch.rows.num_rows:
        data = with_load_metadata(batch.rows, source.source_id, extracted_at, lsn)
        merged = lake.merge_rows(settings, contracts.bronze(source).uri(settings), data, keys=source.keys,
                                 app_id=f"paylake.cdc:{slot}", batch=lsn, state={"lsn": decoding.int_to_lsn(lsn)},
                                 changed=None, delete_when="s._op = 'D'", extra_columns=("_op", "_lsn"))
        report.replayed = not merged
        report.inserted = merged.get("num_target_rows_inserted", 0)
        report.updated = merged.get("num_target_rows_updated", 0)
        report.deleted = merged.get("num_target_rows_deleted", 0)
        if sink is not None:
            sink(source.name, with_load_metadata(batch.rows, source.source_id, extracted_at, lsn))
    return report


def _require_bronze(settings: Settings, batches: dict[str, decoding.TableBatch]) -> None:
    missing = [b.table.name for b in batches.values()
               if not lake.table_exists(settings, contracts.bronze(PostgresTableSource(b.table)).uri(settings))]
    if missing:
        only = " ".join(f"--only postgres.{name}" for name in sorted(missing))
        raise PaylakeError(f"bronze table(s) {', '.join(sorted(missing))} do not exist yet under "
                           f"{settings.lake_root}: run 'paylake extract {only}' first (the slot keeps the changes)")


def drain(settings: Settings, *, slot: str | None = None, max_changes: int = 50_000, sink: Sink | None = None,
          crash_after_commit: bool = False) -> CdcBatchReport:
    """Apply the changes pending in ``slot`` to bronze, then consume them (see the module docstring).

    ``crash_after_commit`` (tests) fails after the Delta commits and the sink,
    before the slot advances."""
    slot = slot or default_slot(settings)
    check_slot_name(slot)
    if max_changes < 1:
        raise PaylakeError(f"--max-changes must be at least 1, not {max_changes}")
    started = time.perf_counter()
    report = CdcBatchReport(slot, drains=1)
    with _connect(settings) as conn:
        _lock(conn, slot)
        (flushed,) = conn.execute("select pg_current_wal_flush_lsn()::text").fetchone()
        rows = _peek(conn, slot, flushed, max_changes)
        transactions = decoding.read_transactions(rows)
        report.more_pending = len(rows) >= max_changes or bool(rows and not rows[-1][2].startswith("COMMIT"))
        report.transactions = len(transactions)
        report.changes = sum(len(t.changes) for t in transactions)
        if transactions:
            report.batch = transactions[-1].commit_lsn
            batches = _batches(conn, transactions)
            report.skipped = report.changes - sum(sum(b.decoded.values()) for b in batches.values())
            _require_bronze(settings, batches)
            extracted_at = dt.datetime.now(dt.UTC)
            for name in sorted(batches):
                table = apply_table(settings, batches[name], slot=slot, lsn=report.batch,
                                    extracted_at=extracted_at, sink=sink)
                report.tables[table.table] = table
        if crash_after_commit:
            raise PaylakeError(f"slot {slot}: crash injected after the Delta commit, before the slot advance (test)")
        target = report.batch or 0
        if not report.more_pending:
            target = max(target, decoding.lsn_to_int(flushed))
        if target:
            report.advanced_to = _advance(conn, slot, target)
    report.seconds = time.perf_counter() - started
    log.info("cdc %s: %d transaction(s), %d change(s), batch %s, slot at %s", slot, report.transactions,
             report.changes, report.batch, report.advanced_to)
    return report


def _batches(conn: psycopg.Connection, transactions: list[decoding.Transaction]) -> dict[str, decoding.TableBatch]:
    """The window's changes per captured table, typed with each table's bronze schema."""
    roots = _partition_roots(conn)
    touched = decoding.touched_tables(transactions, roots) & _captured_tables(conn)
    tables = {name: read_pg_table(conn, name) for name in sorted(touched)}
    return decoding.build_batches(transactions, tables, roots)


def follow(settings: Settings, *, slot: str | None = None, interval_s: float = 5.0, stop_after_s: float | None = None,
           sink: Sink | None = None, max_changes: int = 50_000,
           on_batch: Callable[[CdcBatchReport], None] | None = None) -> CdcBatchReport:
    """Drain continuously: at once while more is pending, else every ``interval_s``
    seconds, until ``stop_after_s`` (or Ctrl-C, after the batch in flight).
    Returns the sum of every drain."""
    slot = slot or default_slot(settings)
    total = CdcBatchReport(slot)
    started = time.monotonic()
    deadline = None if stop_after_s is None else started + stop_after_s
    try:
        while True:
            batch = drain(settings, slot=slot, max_changes=max_changes, sink=sink)
            total.absorb(batch)
            if on_batch is not None:
                on_batch(batch)
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            if not batch.more_pending:
                time.sleep(interval_s if remaining is None else min(interval_s, remaining))
    except KeyboardInterrupt:
        log.info("cdc %s: stopped", slot)
    total.seconds = time.monotonic() - started
    return total


def _confirmed(conn: psycopg.Connection, slot: str) -> int:
    row = conn.execute("select confirmed_flush_lsn::text from pg_replication_slots where slot_name = %s",
                       (slot,)).fetchone()
    if row is None:
        raise missing_slot(slot)
    return decoding.lsn_to_int(row[0])


def catch_up(settings: Settings, *, slot: str | None = None, max_changes: int = 50_000, sink: Sink | None = None,
             max_seconds: float | None = None,
             on_batch: Callable[[CdcBatchReport], None] | None = None) -> CdcBatchReport:
    """Drain micro-batch after micro-batch until the slot has caught up with the WAL position flushed when
    this call began (what a user means by 'apply the changes': one drain holds at most ``max_changes``).

    Raises ``PaylakeError`` (the command exits non-zero) when it stops early: ``max_seconds`` ran out, or a
    drain did not move the slot (it would loop forever). What was applied stays applied; a re-run goes on."""
    slot = slot or default_slot(settings)
    check_slot_name(slot)
    started = time.monotonic()
    with _connect(settings) as conn:
        target = decoding.lsn_to_int(conn.execute("select pg_current_wal_flush_lsn()::text").fetchone()[0])
        position = _confirmed(conn, slot)
    total = CdcBatchReport(slot)
    while position < target:
        batch = drain(settings, slot=slot, max_changes=max_changes, sink=sink)
        total.absorb(batch)
        if on_batch is not None:
            on_batch(batch)
        with _connect(settings) as conn:
            moved_to = _confirmed(conn, slot)
        left = target - moved_to
        if left > 0 and moved_to <= position:
            raise PaylakeError(f"slot {slot} did not move past {decoding.int_to_lsn(position)} "
                               f"({left:,} bytes short of {decoding.int_to_lsn(target)}): stopped; see the log")
        position = moved_to
        if left > 0 and max_seconds is not None and time.monotonic() - started > max_seconds:
            raise PaylakeError(f"slot {slot}: stopped after {max_seconds:g} s with {left:,} bytes of WAL short of "
                               f"{decoding.int_to_lsn(target)} (the position at the start); what was drained is "
                               "applied: run 'paylake cdc' again to go on")
    total.seconds = time.monotonic() - started
    for table in total.tables.values():
        metrics.rows(f"bronze/{table.table}", "written", table.inserted + table.updated + table.deleted)
    return total


# ----------------------------------------------------------------------------- lag
def lag(settings: Settings, slot: str | None = None) -> tuple[int, float]:
    """(bytes of WAL the slot has not confirmed, seconds since the commit of the
    oldest pending transaction; 0 when nothing is pending). The bytes also go to the
    ``paylake_cdc_lag_bytes`` gauge."""
    slot = slot or default_slot(settings)
    check_slot_name(slot)
    with _connect(settings) as conn:
        row = conn.execute("select pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint"
                           " from pg_replication_slots where slot_name = %s", (slot,)).fetchone()
        if row is None:
            raise missing_slot(slot)
        bytes_behind = max(0, int(row[0] or 0))
        metrics.cdc_lag(slot, bytes_behind)
        oldest = [data for _, _, data in _peek(conn, slot, None, 1) if data.startswith("COMMIT")]
        committed_at = decoding.commit_time(oldest[0]) if oldest else None
        if committed_at is None:
            return bytes_behind, 0.0
        (seconds,) = conn.execute("select greatest(0, extract(epoch from clock_timestamp() - %s))::float8",
                                  (committed_at,)).fetchone()
        return bytes_behind, float(seconds)

