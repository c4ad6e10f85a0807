"""Generator throughput next to a plain COPY of the same rows.

    .venv/bin/python bench/seed.py [--scale demo|bench]

Runs in a database of its own on the local stack (``paylake stack up`` first).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from paylake.report import console, summary_table
from paylake.settings import load_settings
from paylake.sources.generator import SCALES, generate
from paylake.sources.migrate import drop_isolated_sources, isolated_sources
from paylake.sources.seed import seed
from paylake.stores import postgres

BENCH_DB = "paylake_bench_seed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", default="demo", choices=sorted(SCALES))
    args = parser.parse_args()
    main_settings = load_settings()
    settings = isolated_sources(main_settings, BENCH_DB)
    spec = dataclasses.replace(SCALES[args.scale], log_sessions=0)

    report = seed(settings, spec, progress=lambda m: console.print(f"  {m}", style="dim"))
    tx_rows = report.rows["oltp.Transaction"]
    seed_tx_seconds = report.seconds["generate"] + report.seconds["oltp.Transaction"]

    data = generate(spec)  # the same rows again, for the baseline
    with postgres.connect(settings) as conn:
        conn.execute("create table public.bench_copy (like oltp.Transaction including defaults)")
        begin = time.perf_counter()
        postgres.copy_from_arrow(conn, "public.bench_copy", data.transaction)
        conn.commit()
        copy_seconds = time.perf_counter() - begin
        conn.execute("drop table public.bench_copy")
        conn.commit()

    seed_rate, copy_rate = tx_rows / seed_tx_seconds, tx_rows / copy_seconds
    console.print(summary_table(
        f"bench/seed.py — {args.scale}: {tx_rows:,} transactions",
        ["what", "seconds", "rows/s", "ratio to plain COPY"],
        [("paylake seed: generate + load oltp.Transaction", seed_tx_seconds, seed_rate, f"{seed_rate / copy_rate:.2f}x"),
         ("  of which: generate (numpy → Arrow)", report.seconds["generate"],
          tx_rows / report.seconds["generate"], ""),
         ("  of which: COPY into oltp.Transaction (FKs validated in bulk, 4 indexes)", report.seconds["oltp.Transaction"],
          tx_rows / report.seconds["oltp.Transaction"], ""),
         ("baseline: plain COPY of the same rows (no constraints)", copy_seconds, copy_rate, "1.00x")]))
    console.print(f"whole seed (all tables, both stores): {report.seconds['total']:.1f} s")
    drop_isolated_sources(main_settings, BENCH_DB)


if __name__ == "__main__":
    main()
