"""The real-time fraud path on the real stack: payments committed in PostgreSQL reach bronze, the online
store and Snowflake's REALTIME_FraudScore exactly once, across a kill -9 between the sinks and the slot's
advance and across a kill -9 from outside at an arbitrary moment."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow.compute as pc
import pytest

from paylake import contracts
from paylake.cdc.stream import lag
from paylake.extract.run import sources
from paylake.ml.fraud.online import RedisOnlineStore
from paylake.pipeline import run_pipeline
from paylake.realtime import FAULT_ENV, stream
from paylake.sources.generator import SCALES
from paylake.sources.migrate import isolated_sources
from paylake.sources.seed import seed
from paylake.stores import lake, postgres
from paylake.stores import snowflake as snowflake_store
from tests.conftest import FRAUD_MODEL


@pytest.fixture(scope="module")
def world(settings, ray_cluster, tmp_path_factory, trained_fraud):
    """Sources of their own, run once through the pipeline: bronze, the slot, a published online store (the
    champion is the test fraud model: a tiny world has too few frauds to train one)."""
    isolated = isolated_sources(settings, "paylake_stream")
    seed(isolated, dataclasses.replace(SCALES["tiny"], log_sessions=4))
    configured = isolated.model_copy(update={
        "lake_root": str(tmp_path_factory.mktemp("lake")),
        "snowflake_database": f"ANALYTICS_STREAM_{uuid.uuid4().hex[:6].upper()}"})
    run_pipeline(configured, scale="tiny", progress=lambda m: None)
    return configured


def insert_payments(settings, n: int, *, commits: int = 1, pause_s: float = 0.0) -> list[int]:
    """``n`` new payments (copies of recent ones, one minute apart after the newest), in ``commits`` transactions."""
    ids = []
    per = -(-n // commits)
    for at in range(0, n, per):
        with postgres.connect(settings) as conn:
            conn.execute("set local synchronous_commit = on")
            rows = conn.execute(f"""
                insert into oltp.transaction (datetime, customerid, merchantid, paymentmethodid, deviceid, locationid,
                    productid, currencycode, amount, taxamount, feeamount, statusid)
                select (select max(datetime) from oltp.transaction) + make_interval(mins => g), t.customerid,
                       t.merchantid, t.paymentmethodid, t.deviceid, t.locationid, t.productid, t.currencycode,
                       20 + g, 1, 0.2, 2
                from generate_series(1, {min(per, n - at)}) g
                join lateral (select * from oltp.transaction order by transactionid desc offset g + 5 limit 1) t on true
                returning transactionid""").fetchall()
        ids += [r[0] for r in rows]
        time.sleep(pause_s)
    return ids


def realtime_rows(settings, ids: list[int]) -> dict[int, int]:
    """TransactionID → rows in REALTIME_FraudScore, for ``ids``."""
    with snowflake_store.connect(settings) as conn:
        cur = conn.cursor()
        cur.execute(f"select TransactionID, count(*) from {settings.snowflake_database}.STAR.REALTIME_FRAUDSCORE"
                    f" where TransactionID in ({', '.join(map(str, ids))}) group by 1")
        return {int(t): int(n) for t, n in cur.fetchall()}


def bronze_counts(settings, ids: list[int]) -> dict[int, int]:
    table = lake.read_table(settings, contracts.bronze(sources(settings, ["postgres.transaction"])[0]).uri(settings))
    picked = table.filter(pc.is_in(table["transactionid"], value_set=pc.cast(ids, table["transactionid"].type)))
    counts: dict[int, int] = {}
    for t in picked["transactionid"].to_pylist():
        counts[t] = counts.get(t, 0) + 1
    return counts


def merchant_totals(settings) -> int:
    store = RedisOnlineStore(settings)
    generation = store.current()
    return sum(int(v) for v in (store.client.hget(key, "txns") or 0
                                for key in store.client.scan_iter(match=f"{store.prefix}:{generation}:mt:*")))


def stream_process(settings, *, fault: str | None = None) -> subprocess.Popen:
    env = dict(os.environ, PAYLAKE_POSTGRES_DSN=settings.postgres_dsn.get_secret_value(),
               PAYLAKE_MONGO_DATABASE=settings.mongo_database, PAYLAKE_LAKE_ROOT=settings.lake_root,
               PAYLAKE_SNOWFLAKE_DATABASE=settings.snowflake_database,
               PAYLAKE_ONLINE_STORE_PREFIX=settings.online_store_prefix)
    if fault:
        env[FAULT_ENV] = fault
    return subprocess.Popen([str(Path(sys.executable).parent / "paylake"), "stream", "--seconds", "120",
                             "--model", FRAUD_MODEL], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def assert_exactly_once(settings, ids: list[int], tally_before: int) -> None:
    assert realtime_rows(settings, ids) == dict.fromkeys(ids, 1)
    assert bronze_counts(settings, ids) == dict.fromkeys(ids, 1)
    assert merchant_totals(settings) == tally_before + len(ids), "each payment counted once online"
    assert lag(settings)[1] == 0.0


def test_a_kill_between_the_sinks_and_the_slot_advance_replays_exactly_once(world):
    tally = merchant_totals(world)
    ids = insert_payments(world, 12)
    process = stream_process(world, fault="kill-after-sinks")
    output, _ = process.communicate(timeout=180)
    assert process.returncode == -signal.SIGKILL, output
    assert realtime_rows(world, ids) == dict.fromkeys(ids, 1), "the sinks committed before the kill"
    assert lag(world)[0] > 0, "the slot did not move"

    report = stream(world, stop_after_s=3, model=FRAUD_MODEL)  # the restart replays the micro-batch

    assert report.payments_scored == 12
    assert_exactly_once(world, ids, tally)


def test_a_kill_from_outside_at_any_moment_loses_and_doubles_nothing(world):
    tally = merchant_totals(world)
    process = stream_process(world)
    try:
        time.sleep(6)  # the process has started and is draining
        ids = insert_payments(world, 30, commits=6, pause_s=0.3)
        time.sleep(0.4)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    stream(world, stop_after_s=4, model=FRAUD_MODEL)
    assert_exactly_once(world, ids, tally)
    with snowflake_store.connect(world) as conn:
        cur = conn.cursor()
        cur.execute(f"select count(*), min(FraudProbability), max(FraudProbability) from "
                    f"{world.snowflake_database}.STAR.REALTIME_FRAUDSCORE")
        count, low, high = cur.fetchone()
    assert count >= 42 and 0.0 <= low <= high <= 1.0
