"""The smoke job: touch every service of the stack through its real client.

Until the pipeline exists this is what ``make demo`` submits to Ray: a row in
PostgreSQL, a document in MongoDB, a Delta table in the lake, a table in
Snowflake and a run in MLflow, each written by a Ray task."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import ray

from paylake import contracts
from paylake.settings import Settings


@dataclass(frozen=True)
class Check:
    service: str
    what: str
    seconds: float
    ok: bool
    detail: str


def _timed(service: str, what: str, action) -> Check:
    start = time.perf_counter()
    try:
        detail = action()
        return Check(service, what, time.perf_counter() - start, True, detail)
    except Exception as exc:  # noqa: BLE001 - reported in the summary, job fails below
        return Check(service, what, time.perf_counter() - start, False, f"{type(exc).__name__}: {exc}")


def check_postgres(settings: Settings, run_id: str) -> Check:
    from paylake.stores import postgres

    def action() -> str:
        with postgres.connect(settings) as conn:
            conn.execute("create schema if not exists ops")
            conn.execute(
                "create table if not exists ops.smoke_check (run_id text primary key, at timestamptz not null)"
            )
            conn.execute("insert into ops.smoke_check values (%s, now())", (run_id,))
            (count,) = conn.execute("select count(*) from ops.smoke_check").fetchone()
        return f"ops.smoke_check has {count} row(s)"

    return _timed("postgres", "insert a row", action)


def check_mongo(settings: Settings, run_id: str) -> Check:
    from paylake.stores import mongo

    def action() -> str:
        with mongo.client(settings) as client:
            coll = mongo.database(client, settings)["smoke_check"]
            coll.insert_one({"run_id": run_id, "at": time.time()})
            return f"smoke_check has {coll.count_documents({})} document(s)"

    return _timed("mongo", "insert a document", action)


def check_lake(settings: Settings, run_id: str) -> Check:
    import pyarrow as pa

    from paylake.stores import lake

    def action() -> str:
        uri = contracts.SMOKE_CHECKS.uri(settings)
        rows = pa.table({"run_id": [run_id], "at": pa.array([time.time()], pa.float64())})
        batch = lake.delta_state(settings, uri, "paylake.smoke").batch + 1
        lake.append_rows(settings, uri, rows, app_id="paylake.smoke", batch=batch, state={"run_id": run_id})
        return f"{uri} at version {lake.table_version(settings, uri)}"

    return _timed("lake", "append to a Delta table", action)


def check_snowflake(settings: Settings, run_id: str) -> Check:
    from paylake.stores import snowflake

    def action() -> str:
        with snowflake.connect(settings, with_database=False) as conn:
            cur = conn.cursor()
            cur.execute(f"create database if not exists {settings.snowflake_database}")
            cur.execute(f"create schema if not exists {settings.snowflake_database}.OPS")
            cur.execute(f"create table if not exists {settings.snowflake_database}.OPS.SMOKE_CHECK "
                        "(RUN_ID varchar, CHECKED_AT timestamp_ntz)")
            cur.execute(f"insert into {settings.snowflake_database}.OPS.SMOKE_CHECK "
                        "select %s, current_timestamp()", (run_id,))
            cur.execute(f"select count(*) from {settings.snowflake_database}.OPS.SMOKE_CHECK")
            (count,) = cur.fetchone()
        return f"{settings.snowflake_database}.OPS.SMOKE_CHECK has {count} row(s)"

    return _timed("snowflake", "create + insert", action)


def check_mlflow(settings: Settings, run_id: str) -> Check:
    from paylake.stores import mlflow as mlflow_store

    def action() -> str:
        import mlflow

        mlflow_store.tracking(settings)
        mlflow.set_experiment("paylake-smoke")
        with mlflow.start_run(run_name=f"smoke-{run_id[:8]}") as run:
            mlflow.log_param("smoke_run_id", run_id)
            mlflow.log_metric("ok", 1.0)
        return f"run {run.info.run_id} in experiment paylake-smoke"

    return _timed("mlflow", "log a run", action)


CHECKS = (check_postgres, check_mongo, check_lake, check_snowflake, check_mlflow)


@ray.remote(num_cpus=0.25)
def _run_check(check, settings: Settings, run_id: str) -> Check:
    return check(settings, run_id)


def run_smoke(settings: Settings) -> list[Check]:
    """Run every check as a Ray task (the caller has initialised Ray)."""
    run_id = uuid.uuid4().hex
    return ray.get([_run_check.options(name=f"smoke {check.__name__.removeprefix('check_')}").remote(
        check, settings, run_id) for check in CHECKS])
