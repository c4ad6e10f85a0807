"""Snowflake load throughput: paylake's PUT + COPY INTO staging + MERGE next to
Ray Data's ``write_snowflake`` (row inserts through the connector) on the same
rows of the same table, in one run.

    .venv/bin/python bench/load.py [--rows N]

Needs the gold tables of bench/star.py (.paylake/bench-lake) and the local
Snowflake server; loads into a database of its own (ANALYTICS_BENCH).
"""

from __future__ import annotations

import argparse
import time

import pyarrow.compute as pc
from common import Result, prepare_sources, save_result
from star import LAKE

from paylake import contracts
from paylake.raycluster import init_ray
from paylake.report import console, summary_table
from paylake.settings import load_settings
from paylake.stores import lake
from paylake.stores import snowflake as snowflake_store
from paylake.warehouse.snowflake import apply_ddl, load_table, qualified

TABLE = "FACT_CustomerSegmentation"
DIMENSIONS = ("DIM_Date", "DIM_Customer", "DIM_Location")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000, help="rows of the fact table to load")
    args = parser.parse_args()
    sources = prepare_sources(load_settings(), True)
    settings = sources.model_copy(update={"lake_root": str(LAKE), "snowflake_database": "ANALYTICS_BENCH"})
    if not lake.table_exists(settings, contracts.gold(TABLE).uri(settings)):
        raise SystemExit("run bench/star.py first: it builds the gold tables this benchmark loads")
    apply_ddl(settings)
    for dimension in DIMENSIONS:  # facts reference them (setup, not measured)
        load_table(settings, dimension, lake.read_table(settings, contracts.gold(dimension).uri(settings)), load_id="setup")
    fact = lake.read_table(settings, contracts.gold(TABLE).uri(settings))
    data = fact.slice(0, args.rows)
    with snowflake_store.connect(settings) as conn:
        cur = conn.cursor()
        cur.execute(f"delete from {qualified(settings, TABLE)}")
        cur.execute(f"create or replace table {qualified(settings, TABLE)}_RAY like {qualified(settings, TABLE)}")

    begin = time.perf_counter()
    result = load_table(settings, TABLE, data, load_id=f"bench-{time.time_ns()}")
    ours = Result("paylake: PUT + COPY INTO staging + MERGE (one transaction)", result.inserted,
                  time.perf_counter() - begin)

    init_ray(settings)
    import ray.data

    begin = time.perf_counter()
    parameters = snowflake_store.connection_args(settings)
    ray.data.from_arrow(data).write_snowflake(f"{qualified(settings, TABLE)}_RAY", parameters)
    baseline = Result("baseline: Ray Data write_snowflake (row INSERTs)", data.num_rows,
                      time.perf_counter() - begin)
    with snowflake_store.connect(settings) as conn:
        cur = conn.cursor()
        cur.execute(f"select count(*) from {qualified(settings, TABLE)}_RAY")
        (landed,) = cur.fetchone()
    assert landed == data.num_rows == ours.rows, (landed, data.num_rows, ours.rows)
    save_result("load", {"rows": ours.rows, "seconds": ours.seconds, "rows_per_s": ours.rate, "loaders": 1},
                baseline={"what": baseline.what, "rows_per_s": baseline.rate})
    console.print(summary_table(
        f"bench/load.py — {data.num_rows:,} rows of {TABLE} (total spent {pc.sum(data['TotalSpent']).as_py()})",
        ["what", "rows", "seconds", "rows/s", "ratio to baseline"],
        [(ours.what, ours.rows, ours.seconds, ours.rate, f"{ours.rate / baseline.rate:.1f}x"),
         (baseline.what, baseline.rows, baseline.seconds, baseline.rate, "1.0x")]))


if __name__ == "__main__":
    main()
