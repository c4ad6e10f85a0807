"""What the benchmarks share: results, best-of-N, and the ``bench`` source databases
(``paylake_bench``: seeded once at the ``bench`` scale, ≥ 2 M transactions, then reused)."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from paylake import contracts
from paylake.report import console
from paylake.settings import Settings
from paylake.sources.generator import SCALES
from paylake.sources.migrate import isolated_sources
from paylake.sources.seed import seed
from paylake.stores import mongo, postgres

BENCH_DB = "paylake_bench"
MIN_TRANSACTIONS = 2_000_000
COLLECTION = "UserInteractionData"


@dataclass(frozen=True)
class Result:
    what: str
    rows: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.rows / self.seconds


RESULTS = Path(__file__).resolve().parent / "results"


def save_result(name: str, figures: dict, *, baseline: dict | None = None) -> Path:
    """``bench/results/<name>.json``: the figures of this run (and its baseline's), with the date and the machine.
    ``paylake capacity`` plans from these files, never from typed-in numbers."""
    import datetime as dt
    import json
    import os
    import platform

    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                                "machine": {"cpus": os.cpu_count(), "processor": platform.machine()},
                                "figures": figures, "baseline": baseline or {}}, indent=2) + "\n")
    console.print(f"figures saved to {path.relative_to(path.parents[1])}", style="dim")
    return path


def ray_cpus() -> float:
    """CPUs of the Ray cluster the benchmark ran on (the caller has initialised Ray)."""
    import ray

    return float(ray.cluster_resources().get("CPU", 0))


def best_of(runs: int, measure: Callable[[], Result]) -> Result:
    results = [measure() for _ in range(runs)]
    for r in results:
        console.print(f"  {r.what}: {r.rows:,} rows in {r.seconds:.2f} s", style="dim")
    return min(results, key=lambda r: r.seconds)


# ----------------------------------------------------------------------------- setup
def bench_settings(main: Settings) -> Settings:
    """Settings for the ``paylake_bench`` databases, built the way ``isolated_sources`` builds them."""
    dsn = postgres.with_database(main.postgres_dsn.get_secret_value(), BENCH_DB)
    return main.model_copy(update={"postgres_dsn": SecretStr(dsn), "mongo_database": BENCH_DB})


def seeded_rows(main: Settings, settings: Settings) -> tuple[int, int]:
    """(transactions, interaction documents) already in the bench databases (0, 0 when absent)."""
    with postgres.connect(main, autocommit=True) as conn:
        if conn.execute("select 1 from pg_database where datname = %s", (BENCH_DB,)).fetchone() is None:
            return 0, 0
    with postgres.connect(settings, autocommit=True) as conn:
        if conn.execute("select to_regclass('oltp.transaction')").fetchone()[0] is None:
            return 0, 0
        (transactions,) = conn.execute("select count(*) from oltp.transaction").fetchone()
    with mongo.client(settings) as client:
        documents = mongo.database(client, settings)[COLLECTION].count_documents({})
    return transactions, documents


def prepare_sources(main: Settings, skip_check: bool) -> Settings:
    """The bench databases, seeded at ``bench`` scale once (a few minutes), then reused."""
    settings = bench_settings(main)
    if skip_check:
        return settings
    transactions, documents = seeded_rows(main, settings)
    if transactions >= MIN_TRANSACTIONS and documents:
        console.print(f"reusing database {BENCH_DB}: {transactions:,} transactions, "
                      f"{documents:,} {COLLECTION} documents", style="dim")
        return settings
    console.print(f"seeding database {BENCH_DB} at scale 'bench' (once; a few minutes)")
    settings = isolated_sources(main, BENCH_DB)
    report = seed(settings, dataclasses.replace(SCALES["bench"], log_sessions=0),
                  progress=lambda m: console.print(f"  {m}", style="dim"))
    console.print(f"  seeded in {report.seconds['total']:.0f} s: {report.rows['oltp.Transaction']:,} transactions",
                  style="dim")
    return settings


def bench_lake(main: Settings, skip_check: bool = False) -> Settings:
    """The ``paylake_bench`` sources extracted into a lake of their own (``<lake_root>-bench``) with
    silver built, once; later runs reuse it."""
    from paylake.extract.run import extract
    from paylake.stores import lake
    from paylake.transform.silver import build_silver

    sources = prepare_sources(main, skip_check)
    settings = sources.model_copy(update={"lake_root": main.lake_root.rstrip("/") + "-bench"})
    if lake.table_exists(settings, contracts.silver("status_change").uri(settings)):
        console.print(f"reusing the bench lake {settings.lake_root}", style="dim")
        return settings
    console.print(f"extracting {BENCH_DB} into {settings.lake_root} and building silver (once)")
    extract(settings)
    build_silver(settings)
    return settings


def bench_parser(doc: str | None) -> argparse.ArgumentParser:
    """The arguments every bench on the ``paylake_bench`` world takes."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-setup-check", action="store_true",
                        help=f"assume {BENCH_DB} is seeded (skip the row counts)")
    return parser
