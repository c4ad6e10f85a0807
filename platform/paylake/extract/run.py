"""``paylake extract``: every OLTP table and Mongo collection into bronze.

Per table and run, one batch:
1. the lake tells the last committed batch of this app and its cursor (both in
   the Delta log: they move in the same commit as the data);
2. the source plans read tasks: everything (first run, ``--full``) or what
   changed since the cursor minus a safety overlap;
3. Ray tasks read in parallel; on a full load each task also writes its
   Parquet data file into the table folder;
4. contract violations go to ``quarantine/<source>/<table>`` (merged, so a
   replay adds nothing); above the threshold the job stops before committing;
5. the batch is committed once: the files as one Delta commit (full load) or a
   MERGE on the primary key (increment), tagged with the batch number as a
   Delta transaction identifier. A batch that is already committed is skipped,
   a merge that changes nothing commits nothing.
A crash anywhere leaves the table at its previous batch; a re-run converges.

Before reading PostgreSQL, the CDC replication slot of the database is created
if missing (``stores.replication``): deletes never show in an increment, only in the
slot's stream, so the stream must start before the snapshot. Each PostgreSQL
bronze table records the slot it was reconciled with (its consistent LSN); a
table that has none or another one (the slot was made again, or the lake is
older than it) reloads in full: the changes in between are unknown.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import ray

from paylake import contracts, metrics
from paylake.errors import ContractError, PaylakeError
from paylake.extract.catalog import METADATA_FIELDS, list_pg_tables, read_pg_table
from paylake.extract.mongo import MongoCollectionSource
from paylake.extract.postgres import PostgresTableSource
from paylake.extract.source import Handles, Source
from paylake.settings import Settings
from paylake.sources.mongo_model import SCHEMAS
from paylake.stores import lake, postgres
from paylake.stores.replication import Slot, ensure_slot

log = logging.getLogger(__name__)

APP_ID = contracts.EXTRACT_APP
QUARANTINE_APP_ID = contracts.QUARANTINE_APP


@dataclass(frozen=True)
class ExtractOptions:
    full: bool = False  # reload everything (overwrite) instead of the increment
    overlap: dt.timedelta = dt.timedelta(minutes=5)  # re-read window before the cursor
    quarantine_threshold: float = 0.05  # fail when more than this share of a table's rows is invalid
    rows_per_task: int = 500_000
    max_tasks_per_table: int = 8
    crash_after_write: str | None = None  # tests: fail after the data write, before the commit of this table
    capture_changes: bool = True  # create the CDC slot (if missing) before reading PostgreSQL


@dataclass
class TableReport:
    table: str
    mode: str  # "full", "incremental", "unchanged"
    rows_read: int = 0
    rows_written: int = 0
    quarantined: int = 0
    seconds: float = 0.0
    batch: int | None = None
    tasks: int = 0


@dataclass
class ExtractReport:
    tables: list[TableReport] = field(default_factory=list)
    seconds: float = 0.0
    slot: Slot | None = None  # the CDC slot of the PostgreSQL sources (None: not asked for)

    @property
    def rows_read(self) -> int:
        return sum(t.rows_read for t in self.tables)


@dataclass(frozen=True)
class TaskResult:
    rows: int
    cursor: str | None
    rejects: pa.Table
    file: lake.DataFile | None = None
    data: pa.Table | None = None


def sources(settings: Settings, only: list[str] | None = None) -> list[Source]:
    """Every source of the platform (optionally only those named, e.g. ``postgres.transaction``, ``mongo.Log``)."""
    with postgres.connect(settings) as conn:
        found = [PostgresTableSource(read_pg_table(conn, name)) for name in list_pg_tables(conn)]
    found += [MongoCollectionSource(name) for name in SCHEMAS]
    if not only:
        return found
    wanted = {w.lower() for w in only}
    chosen = [s for s in found if f"{s.kind}.{s.name}".lower() in wanted or s.name.lower() in wanted]
    unknown = wanted - {f"{s.kind}.{s.name}".lower() for s in chosen} - {s.name.lower() for s in chosen}
    if unknown:
        names = ", ".join(f"{s.kind}.{s.name}" for s in found)
        raise PaylakeError(f"unknown source(s) {', '.join(sorted(unknown))}: choose from {names}")
    return chosen


@ray.remote(num_cpus=1, max_retries=2)
def _read(source, settings: Settings, task, write_to: str | None, batch: int, extracted_at: dt.datetime) -> TaskResult:
    data, rejects = source.read(settings, task)
    data = with_load_metadata(data, source.source_id, extracted_at, batch)
    cursor = max_cursor(data, source.cursor_column)
    if write_to is not None:
        file = lake.write_data_file(settings, write_to, data) if data.num_rows else None
        return TaskResult(data.num_rows, cursor, rejects, file=file)
    return TaskResult(data.num_rows, cursor, rejects, data=data)


def with_load_metadata(data: pa.Table, source_id: str, extracted_at: dt.datetime, batch: int) -> pa.Table:
    """Append ``_source``, ``_extracted_at``, ``_batch_id`` (the load metadata of every bronze row)."""
    n = data.num_rows
    values = [pa.repeat(pa.scalar(source_id, pa.string()), n),
              pa.repeat(pa.scalar(extracted_at, pa.timestamp("us", tz="UTC")), n),
              pa.repeat(pa.scalar(batch, pa.int64()), n)]
    for f, v in zip(METADATA_FIELDS, values):
        data = data.append_column(f, v)
    return data


def max_cursor(data: pa.Table, column: str | None) -> str | None:
    """The cursor reached by a block, as ISO text (ObjectIds: their creation time)."""
    if column is None or data.num_rows == 0:
        return None
    if column == "_id":
        from bson import ObjectId

        top = pc.max(data["_id"]).as_py()
        return ObjectId(top).generation_time.isoformat() if top else None
    top = pc.max(data[column]).as_py()
    return top.isoformat() if top is not None else None


def extract(settings: Settings, *, only: list[str] | None = None, options: ExtractOptions = ExtractOptions(),
            progress=None) -> ExtractReport:
    """Move the sources into bronze (see the module docstring)."""
    from paylake.raycluster import init_ray

    init_ray(settings)
    started = time.perf_counter()
    extracted_at = dt.datetime.now(dt.UTC)
    plans = []
    chosen = sources(settings, only)
    slot = None
    if options.capture_changes and any(s.needs_slot for s in chosen):
        slot = ensure_slot(settings)  # before any read: nothing committed from now on can be missed
        if slot.created:
            log.info("replication slot %s created at %s: postgres bronze tables are reloaded in full",
                     slot.name, slot.consistent_lsn)
    with Handles(settings) as handles:
        for source in chosen:
            uri = contracts.bronze(source).uri(settings)
            state = lake.delta_state(settings, uri, APP_ID)
            # reconciled with another slot (or none): the deletes in between are unknown, take the table whole
            incremental = state.exists and not options.full and not (
                source.needs_slot and slot is not None
                and state.state.get("cdc_slot") != slot.consistent_lsn)
            since = None
            if incremental and state.state.get("cursor"):
                since = dt.datetime.fromisoformat(state.state["cursor"]) - options.overlap
            tasks = source.plan(handles, since, rows_per_task=options.rows_per_task,
                                max_tasks=options.max_tasks_per_table)
            plans.append((source, uri, state, incremental, tasks))

    refs: dict = {}
    for index, (source, uri, state, incremental, tasks) in enumerate(plans):
        write_to = None if incremental else uri
        for number, task in enumerate(tasks, 1):  # named on the dashboard: "extract postgres:oltp.x range 3/8"
            named = _read.options(name=f"extract {source.source_id} range {number}/{len(tasks)}")
            refs[named.remote(source, settings, task, write_to, state.batch + 1, extracted_at)] = index
    results: dict[int, list[TaskResult]] = defaultdict(list)
    read_until: dict[int, float] = {}
    pending = list(refs)
    tick = progress or (lambda *_: None)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        index = refs[done[0]]
        results[index].append(ray.get(done[0]))
        read_until[index] = time.perf_counter()
        source, _, _, _, tasks = plans[index]
        tick(f"{source.kind}.{source.name}", len(results[index]), len(tasks))

    report = ExtractReport(slot=slot)
    for index, (source, uri, state, incremental, tasks) in enumerate(plans):
        begin = time.perf_counter()
        table = finish_table(settings, source, uri, state, incremental, results.get(index, []), options,
                             extracted_at, slot if source.needs_slot else None)
        table.tasks = len(tasks)
        table.seconds = read_until.get(index, begin) - started + time.perf_counter() - begin
        report.tables.append(table)
        metrics.rows(f"{source.source_id}", "read", table.rows_read)
        metrics.rows("/".join(source.bronze_path()), "written", table.rows_written)
    report.seconds = time.perf_counter() - started
    return report


def finish_table(settings: Settings, source, uri: str, state: lake.DeltaState, incremental: bool,
                 results: list[TaskResult], options: ExtractOptions, extracted_at: dt.datetime,
                 slot: Slot | None = None) -> TableReport:
    """Quarantine, threshold, then the one commit of this table's batch."""
    name = f"{source.kind}.{source.name}"
    batch = state.batch + 1
    rows = sum(r.rows for r in results)
    rejects = [r.rejects for r in results if r.rejects.num_rows]
    quarantined = sum(r.num_rows for r in rejects)
    report = TableReport(name, "incremental" if incremental else "full", rows + quarantined, 0, quarantined)
    if rejects:
        quarantine(settings, source, pa.concat_tables(rejects), extracted_at, batch)
    if report.rows_read and quarantined / report.rows_read > options.quarantine_threshold:
        raise ContractError(
            f"{name}: {quarantined:,} of {report.rows_read:,} rows ({quarantined / report.rows_read:.1%}) broke the "
            f"contract, above the threshold of {options.quarantine_threshold:.1%}: nothing was committed; read "
            f"{contracts.quarantine(source).uri(settings)}, fix the source, and run again")
    cursors = [c for c in (r.cursor for r in results) if c] + ([state.state["cursor"]] if state.state.get(
        "cursor") else [])
    new_state = {"cursor": max(cursors, key=dt.datetime.fromisoformat) if cursors else None, "rows": rows}
    if slot is not None:  # the slot whose stream this table is now reconciled with
        new_state["cdc_slot"] = slot.consistent_lsn
    elif "cdc_slot" in state.state:
        new_state["cdc_slot"] = state.state["cdc_slot"]
    if options.crash_after_write and options.crash_after_write.lower() in (name.lower(), source.name.lower()):
        raise PaylakeError(f"{name}: crash injected after the data write, before the commit (test)")
    if not incremental:
        files = [r.file for r in results if r.file is not None]
        schema = pa.schema(list(source.data_schema()) + METADATA_FIELDS)
        if lake.commit_files(settings, uri, files, schema, app_id=APP_ID, batch=batch, state=new_state,
                             mode="overwrite" if state.exists else "append"):
            report.rows_written, report.batch = rows, batch
        return report
    if rows == 0:
        report.mode = "unchanged"
        return report
    data = pa.concat_tables([r.data for r in results if r.data is not None and r.data.num_rows])
    merged = lake.merge_rows(settings, uri, data, keys=source.keys, app_id=APP_ID, batch=batch, state=new_state,
                             changed=source.changed_predicate())
    report.rows_written = merged.get("num_target_rows_inserted", 0) + merged.get("num_target_rows_updated", 0)
    if report.rows_written:
        report.batch = batch
    else:
        report.mode = "unchanged"
    return report


def quarantine(settings: Settings, source, rejects: pa.Table, extracted_at: dt.datetime, batch: int) -> None:
    """Keep invalid records with their reason; a replay of the same records adds nothing."""
    n = rejects.num_rows
    rows = rejects.append_column("_source", pa.array([source.source_id] * n)) \
        .append_column("_extracted_at", pa.array([extracted_at] * n, pa.timestamp("us", tz="UTC"))) \
        .append_column("_batch_id", pa.array([batch] * n, pa.int64()))
    uri = contracts.quarantine(source).uri(settings)
    version = lake.delta_state(settings, uri, QUARANTINE_APP_ID).batch + 1
    lake.merge_rows(settings, uri, rows, keys=["key", "raw"], app_id=QUARANTINE_APP_ID, batch=version,
                    state={"source": source.source_id}, changed="false")
