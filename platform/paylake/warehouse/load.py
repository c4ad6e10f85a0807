"""``paylake load``: the gold star into Snowflake, changed tables only.

For each gold table (dimensions first, in DDL order, then facts) the gold
Delta version last loaded is kept in ``PAYLAKE_LOAD_STATE`` beside the star.
A table whose version did not move is skipped. A fact table whose newer gold
commits all name the dates they replaced is loaded for those dates only
(PUT + COPY INTO staging + MERGE, and the rows of those dates that vanished
are deleted in the same transaction); otherwise the whole table is loaded.
Dimensions are loaded first (upserts), facts next, and only then are the
dimension members that vanished from gold (deleted at the source) removed, so
no fact ever refers to a missing member; a dimension is reconciled and recorded
after that prune. Every load is reconciled (row count and numeric sums) before its state is
recorded, so a failed or interrupted load is simply run again; the MERGE makes
a repeated load change nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from paylake import contracts, metrics
from paylake.settings import Settings
from paylake.stores import lake
from paylake.stores import snowflake as snowflake_store
from paylake.warehouse import star_ddl
from paylake.warehouse.snowflake import apply_ddl, load_table, prune_table, qualified, reconcile, schema_name

STATE_TABLE = "PAYLAKE_LOAD_STATE"


@dataclass(frozen=True)
class TableLoad:
    table: str
    state: str  # "loaded", "loaded N date(s)", "unchanged"
    rows_sent: int
    inserted: int
    updated: int
    deleted: int
    seconds: float


def _ensure_state_table(cur, target: str) -> None:
    cur.execute(f"create table if not exists {target} (TABLE_NAME varchar primary key, GOLD_VERSION integer,"
                " LOAD_ID varchar, LOADED_AT timestamp_ntz)")


def loaded_versions(settings: Settings) -> dict[str, int]:
    target = f"{schema_name(settings)}.{STATE_TABLE}"
    with snowflake_store.connect(settings) as conn:
        cur = conn.cursor()
        _ensure_state_table(cur, target)
        cur.execute(f"select TABLE_NAME, GOLD_VERSION from {target}")
        return {name: int(version) for name, version in cur.fetchall()}


def record_load(settings: Settings, table: str, version: int, load_id: str) -> None:
    target = f"{schema_name(settings)}.{STATE_TABLE}"
    with snowflake_store.connect(settings) as conn:
        cur = conn.cursor()
        _ensure_state_table(cur, target)
        cur.execute(f"delete from {target} where TABLE_NAME = %s", (table,))
        cur.execute(f"insert into {target} values (%s, %s, %s, %s)",
                    (table, version, load_id, dt.datetime.now(dt.UTC).replace(tzinfo=None)))
        conn.commit()


def load_star(settings: Settings, *, progress=lambda message: None) -> list[TableLoad]:
    """Load every gold table that changed since its last load: dimensions
    (upserts), then facts, then the dimension members deleted at the source are
    removed (no fact refers to them any more) and the dimensions reconciled."""
    apply_ddl(settings)
    loaded = loaded_versions(settings)
    load_id = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S") + "-" + str(time.time_ns() % 10**6)
    results: dict[str, TableLoad] = {}
    pruning: list[tuple[str, int, pa.Table, TableLoad]] = []
    tables = star_ddl.table_names()
    for table in [t for t in tables if not t.startswith("FACT_")] + [t for t in tables if t.startswith("FACT_")]:
        begin = time.perf_counter()
        uri = contracts.gold(table).uri(settings)
        version = lake.table_version(settings, uri)
        if version is None:
            from paylake.errors import PaylakeError

            raise PaylakeError(f"gold table {table} does not exist: run 'paylake build-star' first")
        if loaded.get(table.upper()) == version:
            results[table] = TableLoad(table, "unchanged", 0, 0, 0, 0, 0.0)
            continue
        progress(f"loading {table}")
        data = lake.read_table(settings, uri)
        fact = table.startswith("FACT_")
        dates = _replaced_dates(settings, table, uri, loaded.get(table.upper()))
        if dates is not None:
            data = data.filter(pc.is_in(data["DateKey"], value_set=pa.array(dates, pa.int64())))
        elif "DateKey" in data.column_names and fact:
            dates = sorted(set(data["DateKey"].to_pylist()) | _target_dates(settings, table))
        result = load_table(settings, table, data, load_id=load_id, replace_dates=dates if fact else None)
        state = "loaded" if dates is None or not fact else f"loaded {len(dates)} date(s)"
        done = TableLoad(table, state, data.num_rows, result.inserted, result.updated, result.deleted,
                         time.perf_counter() - begin)
        if not fact:  # reconciled and recorded once its vanished members are gone
            pruning.append((table, version, data, done))
            continue
        reconcile(settings, table, data, replace_dates=dates)
        record_load(settings, table.upper(), version, load_id)
        results[table] = done
    for table, version, data, done in reversed(pruning):  # DDL order reversed: referring dimensions first
        begin = time.perf_counter()
        deleted = prune_table(settings, table, data)
        reconcile(settings, table, data)
        record_load(settings, table.upper(), version, load_id)
        results[table] = dataclasses.replace(done, deleted=done.deleted + deleted,
                                             seconds=done.seconds + time.perf_counter() - begin)
    for result in results.values():
        metrics.rows(f"snowflake/{result.table}", "written", result.inserted + result.updated)
    return [results[t] for t in tables]


def _replaced_dates(settings: Settings, table: str, uri: str, loaded_version: int | None) -> list[int] | None:
    """The DateKeys replaced by the gold commits since the loaded version, or
    None when the whole table must be loaded."""
    if loaded_version is None or not table.startswith("FACT_"):
        return None
    states = lake.commit_states(settings, uri, contracts.GOLD_APP, loaded_version)
    if states is None or any("dates" not in s for s in states):
        return None
    return sorted({d for s in states for d in s["dates"]})


def _target_dates(settings: Settings, table: str) -> set[int]:
    """DateKeys present in Snowflake (a full reload also removes dates that vanished)."""
    with snowflake_store.connect(settings) as conn:
        cur = conn.cursor()
        cur.execute(f"select distinct DateKey from {qualified(settings, table)}")
        return {int(r[0]) for r in cur.fetchall()}
