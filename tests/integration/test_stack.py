"""Each service of the local stack answers its real client; the stack's
lifecycle (idempotent up, clean down, clear errors) holds."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from paylake.cli import app
from paylake.stack import LocalStack
from paylake.stack.process import pid_alive
from paylake.stores import lake, mongo, postgres, snowflake

ROOT = Path(__file__).resolve().parents[2]


def test_postgres_answers_psycopg_with_pgcrypto_and_logical_wal(settings):
    scratch = f"scratch_{uuid.uuid4().hex[:8]}"
    with postgres.connect(settings, autocommit=True) as conn:
        conn.execute(f"create database {scratch}")
    try:
        dsn = postgres.with_database(settings.postgres_dsn.get_secret_value(), scratch)
        with postgres.connect(settings, dsn=dsn) as conn:
            conn.execute("create extension pgcrypto")
            (hashed,) = conn.execute("select crypt('pw', gen_salt('bf'))").fetchone()
            (ok,) = conn.execute("select crypt('pw', %s) = %s", (hashed, hashed)).fetchone()
            (wal_level,) = conn.execute("show wal_level").fetchone()
    finally:
        with postgres.connect(settings, autocommit=True) as conn:
            conn.execute(f"drop database {scratch}")
    assert ok is True
    assert wal_level == "logical"


def test_postgres_runs_as_an_unprivileged_user(local_stack):
    pid = int((local_stack.state_dir / "run" / "postgres.pid").read_text())
    uid = os.stat(f"/proc/{pid}").st_uid
    assert uid != 0, "PostgreSQL must not run as root"
    if os.geteuid() == 0:
        assert pwd.getpwuid(uid).pw_name == "paylake"


def test_mongo_answers_pymongo(settings):
    with mongo.client(settings) as client:
        coll = mongo.database(client, settings)["stack_test"]
        marker = uuid.uuid4().hex
        coll.insert_one({"marker": marker, "nested": {"a": [1, 2]}})
        found = coll.find_one({"marker": marker})
    assert found["nested"] == {"a": [1, 2]}


def test_lake_on_s3_takes_delta_tables(settings):
    from deltalake import DeltaTable, write_deltalake

    assert settings.lake_is_s3
    uri = lake.table_uri(settings, "tests", f"t_{uuid.uuid4().hex[:8]}")
    options = lake.storage_options(settings)
    write_deltalake(uri, pa.table({"id": [1, 2, 3]}), storage_options=options)
    assert DeltaTable(uri, storage_options=options).to_pyarrow_table()["id"].to_pylist() == [1, 2, 3]
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    keys = [o["Key"] for o in lake.s3_client(settings).list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]
    assert any("_delta_log/" in key for key in keys)


def test_snowflake_takes_put_and_copy_into(settings, tmp_path):
    parquet = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"ID": [1, 2], "NAME": ["a", "b"]}), parquet)
    with snowflake.connect(settings, with_database=False) as conn:
        cur = conn.cursor()
        cur.execute("create database if not exists STACKTEST")
        cur.execute("create schema if not exists STACKTEST.S")
        cur.execute("use schema STACKTEST.S")
        cur.execute("create or replace table T (ID integer, NAME varchar)")
        cur.execute("create stage if not exists STG")
        cur.execute(f"put file://{parquet} @STG")
        cur.execute("copy into T from @STG file_format = (type = 'PARQUET') match_by_column_name = case_insensitive")
        cur.execute("select count(*), sum(ID) from T")
        assert cur.fetchone() == (2, 3)


def test_mlflow_tracks_a_run(settings):
    import mlflow

    from paylake.stores.mlflow import tracking

    client = tracking(settings)
    mlflow.set_experiment("stack-test")
    with mlflow.start_run() as run:
        mlflow.log_metric("auc", 0.5)
    assert client.get_run(run.info.run_id).data.metrics["auc"] == 0.5


def test_ray_job_submit_runs_the_smoke_job(settings):
    result = subprocess.run(
        [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", settings.ray_dashboard_url,
         "--working-dir", ".", "--", "python", "jobs/smoke.py"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PAYLAKE_STACK_FILE": ""},  # the job must get its settings from the cluster
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "succeeded" in result.stdout + result.stderr
    for service in ("postgres", "mongo", "lake", "snowflake", "mlflow"):
        assert service in result.stdout


def test_second_up_reuses_every_running_server(local_stack):
    before = {s.name: s.pid for s in local_stack.status()}
    again = local_stack.up()
    assert {s.state for s in again} == {"reused"}
    assert {s.name: s.pid for s in again} == before


def test_status_shows_every_service_healthy(local_stack):
    result = CliRunner().invoke(app, ["stack", "status", "--state-dir", str(local_stack.state_dir)])
    assert result.exit_code == 0, result.output
    for name in ("postgres", "mongo", "s3", "snowflake", "mlflow", "ray"):
        assert name in result.output
    assert "unhealthy" not in result.output and "stopped" not in result.output


def test_a_taken_port_gives_one_clear_line(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["stack", "up", "--state-dir", str(tmp_path), "--service", "mongo",
                                          "--port", f"mongo={port}"])
    assert result.exit_code == 1
    assert f"mongo: port 127.0.0.1:{port}" in result.output
    assert "already in use" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "run" / "mongo.pid").exists(), "nothing may start when a port is taken"


def test_down_stops_what_up_started_and_nothing_else(tmp_path, local_stack):
    sibling = LocalStack(tmp_path / "state")
    started = sibling.up(["mongo", "s3"])
    pids = [s.pid for s in started]
    assert all(pid_alive(pid) for pid in pids)
    assert {s.state for s in sibling.up(["mongo", "s3"])} == {"reused"}
    sibling.down()
    assert not any(pid_alive(pid) for pid in pids)
    assert sibling.pids() == []
    # the session's stack is untouched
    assert all(s.state == "healthy" for s in local_stack.status())


def test_a_server_that_dies_at_start_names_its_log_and_nothing_is_left_running(tmp_path):
    from paylake.errors import StackError
    from paylake.stack.services import Postgres

    stack = LocalStack(tmp_path / "state")
    stack.up(["postgres"])
    stack.down()
    conf = Postgres().data_dir(stack.context()) / "postgresql.conf"
    with open(conf, "a") as out:
        out.write("\nshared_buffers = 'plenty'\n")  # the server refuses to start on this
    with pytest.raises(StackError) as err:
        stack.up(["mongo", "postgres"])  # mongo starts fine, and must be stopped again
    message = str(err.value)
    assert message.startswith("postgres: server exited with code")
    assert str(stack.state_dir / "logs" / "postgres.log") in message
    assert stack.pids() == []


def test_the_lake_and_the_warehouse_survive_a_restart(local_stack, settings):
    """'paylake stack down' then 'up': the Delta lake on S3 and the Snowflake
    databases are read back unchanged (the README promises that data is kept)."""
    from deltalake import DeltaTable, write_deltalake

    uri = lake.table_uri(settings, "tests", f"restart_{uuid.uuid4().hex[:8]}")
    first = pa.table({"id": pa.array(range(1000), pa.int64()), "amount": pa.array([i / 4 for i in range(1000)])})
    write_deltalake(uri, first, storage_options=lake.storage_options(settings))
    write_deltalake(uri, first.slice(0, 10), mode="append", storage_options=lake.storage_options(settings))
    database = f"RESTART_{uuid.uuid4().hex[:6].upper()}"
    with snowflake.connect(settings, with_database=False) as conn:
        cur = conn.cursor()
        cur.execute(f"create database {database}")
        cur.execute(f"create schema {database}.STAR")
        cur.execute(f"create table {database}.STAR.T (ID integer primary key, NAME varchar)")
        cur.execute(f"insert into {database}.STAR.T values (1, 'kept'), (2, 'also kept')")
        conn.commit()

    stopped = {s.name for s in local_stack.down(["s3", "snowflake"])}
    assert stopped == {"s3", "snowflake"}
    states = {s.name: s.state for s in local_stack.up(["s3", "snowflake"])}
    assert states == {"s3": "started", "snowflake": "started"}

    table = DeltaTable(uri, storage_options=lake.storage_options(settings))
    assert table.version() == 1
    assert table.to_pyarrow_table().sort_by("id").equals(pa.concat_tables([first, first.slice(0, 10)]).sort_by("id"))
    with snowflake.connect(settings, with_database=False) as conn:
        cur = conn.cursor()
        cur.execute(f"select ID, NAME from {database}.STAR.T order by ID")
        assert cur.fetchall() == [(1, "kept"), (2, "also kept")]
