"""Gold build time (``paylake build-star``: Ray tasks, DuckDB per slice of
dates, Delta commits) next to DuckDB running the same aggregation SQL over the
same silver Parquet files in one process (the single-node reference).

    .venv/bin/python bench/star.py [--skip-setup-check] [--runs N]

Uses the ``bench`` sources of bench/extract.py (seeded once, ≥ 2 M
transactions) and a local lake under .paylake/bench-lake (extracted and built to
silver once; only the gold build is measured).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from common import Result, best_of, prepare_sources, ray_cpus, save_result

from paylake import contracts
from paylake.extract.run import extract
from paylake.report import console, summary_table
from paylake.settings import load_settings
from paylake.stores import lake
from paylake.transform import star
from paylake.transform.silver import build_silver

LAKE = Path(__file__).resolve().parents[1] / ".paylake" / "bench-lake"


def paylake_gold(settings) -> Result:
    shutil.rmtree(LAKE / "gold", ignore_errors=True)
    begin = time.perf_counter()
    reports = star.build_star(settings)
    seconds = time.perf_counter() - begin
    return Result("paylake build-star (gold: dims + 3 facts + compliance, Delta commits)",
                  sum(r.rows for r in reports), seconds)


def duckdb_single_process(settings) -> Result:
    """The same SQL in one DuckDB over the silver tables' Parquet files, results as Arrow."""
    import duckdb
    from deltalake import DeltaTable

    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    begin = time.perf_counter()
    for view in ("merchant", "location", "product", "payment_method", "customer", "transaction"):
        files = ", ".join(f"'{f}'" for f in DeltaTable(contracts.silver(view).uri(settings)).file_uris())
        con.execute(f"create view {'txn' if view == 'transaction' else view} as select * from read_parquet([{files}])")
    rows = 0
    for sql in star.DIMENSION_SQL.values():
        rows += con.sql(sql).to_arrow_table().num_rows
    con.execute(f"""create table dim_customer as select {star._KEY.format("customerid::varchar")} as CustomerKey,
                    customerid as CustomerID, signupdate::timestamp as ValidFrom,
                    TIMESTAMP '9999-12-31' as ValidTo from customer""")
    for sql in star.FACT_SQL.values():
        rows += con.sql(sql).to_arrow_table().num_rows
    return Result("baseline: DuckDB, same SQL, one process, same silver Parquet files", rows,
                  time.perf_counter() - begin)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-setup-check", action="store_true")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    sources = prepare_sources(load_settings(), args.skip_setup_check)
    settings = sources.model_copy(update={"lake_root": str(LAKE)})
    if not lake.table_exists(settings, contracts.silver("transaction").uri(settings)):
        console.print("setup: extracting the bench sources and building silver (not measured)")
        extract(settings)
        build_silver(settings)
    (transactions,) = [lake.dataset(settings, contracts.silver("transaction").uri(settings)).count_rows()]
    ours = best_of(args.runs, lambda: paylake_gold(settings))
    baseline = best_of(args.runs, lambda: duckdb_single_process(settings))
    console.print(summary_table(
        f"bench/star.py — gold build over {transactions:,} silver transactions (best of {args.runs})",
        ["what", "rows out", "seconds", "speed vs baseline"],
        [(ours.what, ours.rows, ours.seconds, f"{baseline.seconds / ours.seconds:.2f}x"),
         (baseline.what, baseline.rows, baseline.seconds, "1.00x")]))
    cpus = ray_cpus()
    save_result("star", {"input_rows": transactions, "output_rows": ours.rows, "seconds": ours.seconds,
                         "ray_cpus": cpus, "input_rows_per_s_per_cpu": transactions / ours.seconds / cpus},
                baseline={"what": baseline.what, "seconds": baseline.seconds})
    console.print("paylake's figure includes the Delta writes and commits of 10 tables and the SCD2 merge; "
                  "the baseline only materialises Arrow results in memory.")


if __name__ == "__main__":
    main()
