"""Fraud feature build throughput (``paylake features``) next to DuckDB computing the same
features in one process over the same silver Parquet, in one run.

    .venv/bin/python bench/features.py [--runs N] [--skip-setup-check]

paylake: one Ray task per feature family (DuckDB window SQL over silver), the
families joined on the driver (what ``build_features`` does before its commit).
Baseline: the whole definition as one DuckDB statement (``features.feature_sql``)
in this process, every thread of the machine. Target: ≥ 1.0x. Runs on the
``paylake_bench`` sources (bench scale, ≥ 2 M transactions), extracted once.
"""

from __future__ import annotations

import time

import ray
from common import Result, bench_lake, bench_parser, best_of, ray_cpus, save_result

from paylake.ml.fraud import features
from paylake.ml.fraud.feature_build import _family, silver_connection
from paylake.raycluster import init_ray
from paylake.report import console, summary_table
from paylake.settings import Settings, load_settings


def paylake_families(settings: Settings) -> Result:
    import duckdb

    begin = time.perf_counter()
    names = list(features.FAMILIES)
    parts = dict(zip(names, ray.get([_family.remote(settings, f) for f in names])))
    con = duckdb.connect()
    for name, table in parts.items():
        con.register(name, table)
    rows = con.sql(features.finish_sql(features.join_sql(features.FAMILIES))).to_arrow_table().num_rows
    con.close()
    return Result(f"paylake: {len(names)} Ray tasks (one per family) + join", rows, time.perf_counter() - begin)


def duckdb_one_process(settings: Settings) -> Result:
    begin = time.perf_counter()
    con = silver_connection(settings)
    try:
        rows = con.sql(features.feature_sql(target_partitions_only=False)).to_arrow_table().num_rows
    finally:
        con.close()
    return Result("baseline: DuckDB, one statement, one process", rows, time.perf_counter() - begin)


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    settings = bench_lake(load_settings(), args.skip_setup_check)
    init_ray(settings)
    ours = best_of(args.runs, lambda: paylake_families(settings))
    base = best_of(args.runs, lambda: duckdb_one_process(settings))
    console.print(summary_table(f"bench/features.py — fraud features of {base.rows:,} transactions",
                                ["what", "rows", "seconds", "rows/s", "ratio"],
                                [(r.what, r.rows, r.seconds, f"{r.rate:,.0f}", f"{r.rate / base.rate:.2f}x")
                                 for r in (ours, base)]))
    cpus = ray_cpus()
    save_result("features", {"rows": ours.rows, "seconds": ours.seconds, "ray_cpus": cpus,
                             "rows_per_s_per_cpu": ours.rate / cpus},
                baseline={"what": base.what, "rows_per_s": base.rate})
    console.print(f"target ≥ 1.0x of the one-process DuckDB: {ours.rate / base.rate:.2f}x")


if __name__ == "__main__":
    main()
