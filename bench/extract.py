"""Extraction throughput (``paylake extract``) next to the server's own limit
and two plain ways of reading the same rows, all in one run.

    .venv/bin/python bench/extract.py [--runs N] [--skip-setup-check]

PostgreSQL: the same ``oltp.Transaction`` (≥ 2 M rows, ``bench`` scale) read by
- paylake: ``extract(only=["postgres.transaction"], full=True)`` into a Delta
  table on a local lake root, on the S3 lake root (the stack's disk-backed
  localbucket server) and on an in-memory moto S3 server started for the run
  (the stack's S3 server before localbucket: what durability costs);
- (a) ``psql \\copy (select * ...) to /dev/null (format binary)``: one
  connection, no client work at all: what the server can send;
- (b) Ray Data ``read_sql`` (psycopg) + ``Dataset.write_delta`` (local): the
  plain call, without shard keys, reads in one task;
- (c) a psycopg server-side cursor, ``for row in cursor`` (per-row Python).
MongoDB: ``UserInteractionData`` (nested) by paylake vs a plain pymongo scan.

Runs in a database of its own (``paylake_bench``) on the local stack
(``paylake stack up`` first), seeded once and reused by later runs.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable

import psycopg
from common import BENCH_DB, COLLECTION, Result, best_of, prepare_sources, ray_cpus, save_result

from paylake.extract.run import ExtractOptions, extract
from paylake.raycluster import init_ray
from paylake.report import console, summary_table
from paylake.settings import Settings, load_settings, redact_url
from paylake.stores import lake, mongo, postgres

QUERY = "select * from oltp.transaction"
PSQL = "/usr/bin/psql"
TARGET_VS_A, TARGET_VS_B = 0.6, 3.0


def warm_up(settings: Settings) -> None:
    """Read the table once (page cache) and start the Ray workers with paylake imported,
    so that no measurement pays for a cold cache or for worker start-up."""
    import ray

    with postgres.connect(settings) as conn:
        conn.execute("select count(*) from (select * from oltp.transaction) t").fetchone()

    @ray.remote(num_cpus=1)
    def imports() -> None:
        import warnings

        import adbc_driver_postgresql.dbapi  # noqa: F401
        import deltalake  # noqa: F401

        import paylake.extract.run  # noqa: F401

        with warnings.catch_warnings():  # pymongoarrow warns about the pyarrow ABI it was built with
            warnings.simplefilter("ignore", RuntimeWarning)
            import pymongoarrow.api  # noqa: F401

    ray.get([imports.remote() for _ in range(int(ray.cluster_resources().get("CPU", 1)))])


# ----------------------------------------------------------------------------- PostgreSQL
def paylake_postgres(settings: Settings, lake_root: str, label: str) -> Result:
    """paylake extract of oltp.Transaction (full load) into a fresh lake root."""
    on = settings.model_copy(update={"lake_root": lake_root})
    begin = time.perf_counter()
    report = extract(on, only=["postgres.transaction"], options=ExtractOptions(full=True))
    seconds = time.perf_counter() - begin
    (table,) = report.tables
    return Result(f"paylake extract → Delta ({label}, {table.tasks} tasks)", table.rows_written, seconds)


def psql_binary_copy(settings: Settings) -> Result:
    """(a) psql \\copy ... (format binary) to /dev/null: the server's own limit on one connection."""
    dsn = settings.postgres_dsn.get_secret_value()
    command = [PSQL, "-X", "-v", "ON_ERROR_STOP=1", "-d", dsn,
               "-c", f"\\copy ({QUERY}) to '/dev/null' with (format binary)"]
    begin = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - begin
    if done.returncode != 0:
        raise SystemExit(f"psql against {redact_url(dsn)} failed: {done.stderr.replace(dsn, redact_url(dsn))}")
    match = re.search(r"COPY (\d+)", done.stdout)
    if match is None:
        raise SystemExit(f"psql printed no row count: {done.stdout!r}")
    return Result("(a) psql \\copy … (format binary) to /dev/null", int(match[1]), seconds)


def ray_data_read_sql(settings: Settings) -> Result:
    """(b) Ray Data read_sql (psycopg) + write_delta into a local folder. The session time
    zone is set to ``UTC``: with the server's ``Etc/UTC`` Delta refuses the timestamp columns."""
    import functools

    import ray.data
    from deltalake import DeltaTable

    ray.data.DataContext.get_current().enable_progress_bars = False
    dsn = settings.postgres_dsn.get_secret_value()
    target = tempfile.mkdtemp(prefix="paylake-bench-raydata-")
    try:
        begin = time.perf_counter()
        ray.data.read_sql(QUERY, functools.partial(psycopg.connect, dsn, options="-c TimeZone=UTC")).write_delta(target)
        seconds = time.perf_counter() - begin
        rows = DeltaTable(target).to_pyarrow_dataset().count_rows()
    finally:
        shutil.rmtree(target, ignore_errors=True)
    return Result("(b) Ray Data read_sql (no shard keys: 1 task) + write_delta (local)", rows, seconds)


def psycopg_row_loop(settings: Settings) -> Result:
    """(c) ``for row in cursor`` over a server-side cursor: the per-row Python baseline."""
    rows = 0
    begin = time.perf_counter()
    with postgres.connect(settings) as conn, conn.cursor(name="bench_rows") as cur:
        cur.itersize = 10_000
        cur.execute(QUERY)
        for _ in cur:
            rows += 1
    seconds = time.perf_counter() - begin
    return Result("(c) psycopg server-side cursor, for row in cursor", rows, seconds)


# ----------------------------------------------------------------------------- MongoDB
def paylake_mongo(settings: Settings, lake_root: str) -> Result:
    """paylake extract of the nested UserInteractionData collection (full load), local lake."""
    on = settings.model_copy(update={"lake_root": lake_root})
    begin = time.perf_counter()
    report = extract(on, only=[f"mongo.{COLLECTION}"], options=ExtractOptions(full=True))
    seconds = time.perf_counter() - begin
    (table,) = report.tables
    return Result(f"paylake extract → Delta (local, {table.tasks} tasks)", table.rows_written, seconds)


def pymongo_scan(settings: Settings) -> Result:
    """A plain pymongo cursor over the whole collection (documents decoded to dicts, nothing kept)."""
    rows = 0
    begin = time.perf_counter()
    with mongo.client(settings) as client:
        for _ in mongo.database(client, settings)[COLLECTION].find({}):
            rows += 1
    seconds = time.perf_counter() - begin
    return Result("baseline: pymongo find({}), for doc in cursor", rows, seconds)


# ----------------------------------------------------------------------------- lake roots
def local_root() -> str:
    return tempfile.mkdtemp(prefix="paylake-bench-lake-")


def s3_root(settings: Settings) -> str:
    bucket = settings.lake_root.removeprefix("s3://").split("/", 1)[0] if settings.lake_is_s3 else "paylake-lake"
    return f"s3://{bucket}/bench/{uuid.uuid4().hex}"


def drop_root(settings: Settings, root: str) -> None:
    if not root.startswith("s3://"):
        shutil.rmtree(root, ignore_errors=True)
        return
    bucket, _, prefix = root.removeprefix("s3://").partition("/")
    client = lake.s3_client(settings)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
    parent = prefix.rsplit("/", 1)[0] + "/"  # the "bench/" folder marker, once nothing else is under it
    left = client.list_objects_v2(Bucket=bucket, Prefix=parent, MaxKeys=2).get("Contents", [])
    if [o["Key"] for o in left] == [parent]:
        client.delete_object(Bucket=bucket, Key=parent)


def in_fresh_root(settings: Settings, make_root: Callable[[], str], measure: Callable[[str], Result]) -> Result:
    root = make_root()
    try:
        return measure(root)
    finally:
        drop_root(settings, root)


@contextlib.contextmanager
def moto_lake(settings: Settings):
    """Settings whose lake is a bucket of an in-memory moto server started for this run."""
    from paylake.stack.process import free_port, wait_until

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        endpoint = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            try:
                with urllib.request.urlopen(endpoint + "/moto-api/", timeout=2):  # noqa: S310 - loopback
                    return True
            except OSError:
                return False

        if not wait_until(answers, deadline_s=30, alive=lambda: server.poll() is None):
            raise SystemExit("moto server did not start (is moto[server] installed? make setup)")
        on = settings.model_copy(update={"s3_endpoint_url": endpoint, "lake_root": "s3://moto-bench/lake"})
        lake.s3_client(on).create_bucket(Bucket="moto-bench")
        yield on
    finally:
        server.terminate()
        server.wait(timeout=30)


# ----------------------------------------------------------------------------- report
def rows_of(results: list[Result], baseline: Result) -> list[tuple]:
    return [(r.what, r.rows, r.seconds, f"{r.rate:,.0f}", f"{r.rate / baseline.rate:.2f}x") for r in results]


def verdict(result: Result, a: Result, b: Result) -> str:
    vs_a, vs_b = result.rate / a.rate, result.rate / b.rate
    ok = vs_a >= TARGET_VS_A and vs_b >= TARGET_VS_B
    return (f"{result.what}: {vs_a:.2f}x of (a), {vs_b:.2f}x of (b) — "
            f"{'[green]meets[/]' if ok else '[red]misses[/]'} the target")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1, help="measure each thing N times, keep the best")
    parser.add_argument("--skip-setup-check", action="store_true",
                        help=f"assume {BENCH_DB} is seeded (skip the row counts)")
    args = parser.parse_args()
    main_settings = load_settings()
    settings = prepare_sources(main_settings, args.skip_setup_check)
    init_ray(settings)
    warm_up(settings)

    console.print("measuring (PostgreSQL oltp.Transaction)")
    a = best_of(args.runs, lambda: psql_binary_copy(settings))
    local = best_of(args.runs, lambda: in_fresh_root(
        settings, local_root, lambda root: paylake_postgres(settings, root, "local lake")))
    s3 = best_of(args.runs, lambda: in_fresh_root(
        settings, lambda: s3_root(settings), lambda root: paylake_postgres(settings, root,
                                                                           "S3 lake, localbucket on disk")))
    with moto_lake(settings) as on_moto:
        moto = best_of(args.runs, lambda: in_fresh_root(
            on_moto, lambda: s3_root(on_moto), lambda root: paylake_postgres(on_moto, root,
                                                                            "S3 lake, moto in memory")))
    b = best_of(args.runs, lambda: ray_data_read_sql(settings))
    c = best_of(args.runs, lambda: psycopg_row_loop(settings))
    console.print(f"measuring (MongoDB {COLLECTION})")
    scan = best_of(args.runs, lambda: pymongo_scan(settings))
    nested = best_of(args.runs, lambda: in_fresh_root(settings, local_root, lambda root: paylake_mongo(settings,
                                                                                                     root)))

    columns = ["what", "rows", "seconds", "rows/s", "ratio to (a)"]
    console.print(summary_table(f"bench/extract.py — PostgreSQL oltp.Transaction, {a.rows:,} rows "
                                f"(best of {args.runs})", columns, rows_of([local, s3, moto, a, b, c], a)))
    console.print(f"target: ≥ {TARGET_VS_A}x of (a), ≥ {TARGET_VS_B:g}x of (b)")
    for result in (local, s3):
        console.print("  " + verdict(result, a, b))
    console.print(f"  durable S3 lake (localbucket) vs in-memory moto: {s3.rate / moto.rate:.2f}x")
    console.print(summary_table(f"bench/extract.py — MongoDB {COLLECTION} (nested), {scan.rows:,} documents "
                                f"(best of {args.runs})", ["what", "rows", "seconds", "rows/s", "ratio to scan"],
                                rows_of([nested, scan], scan)))
    cpus = ray_cpus()
    save_result("extract", {"rows": s3.rows, "seconds": s3.seconds, "rows_per_s": s3.rate, "ray_cpus": cpus,
                            "rows_per_s_per_cpu": s3.rate / cpus, "mongo_documents_per_s": nested.rate},
                baseline={"what": a.what, "rows_per_s": a.rate})
    for r in (local, s3, moto, b, c, nested):
        expected = scan.rows if r is nested else a.rows
        if r.rows != expected:
            console.print(f"[red]{r.what} moved {r.rows:,} rows, expected {expected:,}[/]")


if __name__ == "__main__":
    main()
