"""The online store: Redis tiles vs a PostgreSQL database of its own, reads of a batch of entity keys, same run.

    .venv/bin/python bench/online_store.py [--batch 32] [--seconds 6]

On the stack of ``.paylake/stack.env`` (``make demo`` first: silver and a published online store). Both
stores hold the same state (silver as of its last payment: 30 days of events, first-seen, tallies,
dimensions); the payments read are real ones of silver's last day, in batches of ``--batch``.

* **Redis (paylake's store)**: one server-side script per batch merges each payment's hour and day tiles
  with the raw events of the partial hours; the client turns the aggregates into feature rows.
* **PostgreSQL, a database of its own** (``paylake_bench_online``, what the store was before, moved out of
  the OLTP database): one indexed range query per relation returns the entities' raw events, first-seen
  records, tallies and dimensions; the client windows them with the feature SQL in DuckDB.

Prints, per store, batches/s and payments/s of the read alone and of read + features, and the ratio.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time

import pyarrow as pa

from paylake.ml.fraud import features
from paylake.ml.fraud.online import KEEP, RedisOnlineStore, from_aggregates, state_as_of
from paylake.report import console, summary_table
from paylake.serving.sample import generated_world_sample
from paylake.settings import load_settings
from paylake.stores import postgres

PG_DB = "paylake_bench_online"
DDL = """
create table event (transactionid bigint primary key, datetime timestamptz not null, customerid bigint not null,
    merchantid bigint not null, paymentmethodid bigint not null, deviceid bigint, locationid bigint, country text,
    amount_eur double precision not null);
create index on event (customerid, datetime); create index on event (paymentmethodid, datetime);
create index on event (deviceid, datetime); create index on event (merchantid, datetime);
create table first_seen (customerid bigint, kind text, value text, seen_at timestamptz,
    primary key (customerid, kind, value));
create table merchant_tally (merchantid bigint primary key, txns bigint, frauds bigint);
create table customer (customerid bigint primary key, segment text, signupdate date, country text,
    home_lat double precision, home_lon double precision);
create table merchant (merchantid bigint primary key, industry text, size text);
create table payment_method (paymentmethodid bigint primary key, type text);
create table location (locationid bigint primary key, country text, latitude double precision,
    longitude double precision);
"""


def pg_settings(settings):
    from pydantic import SecretStr

    dsn = postgres.with_database(settings.postgres_dsn.get_secret_value(), PG_DB)
    return settings.model_copy(update={"postgres_dsn": SecretStr(dsn)})


def load_postgres(settings, state: dict[str, pa.Table]) -> None:
    with postgres.connect(settings, autocommit=True) as conn:
        conn.execute(f"drop database if exists {PG_DB}")
        conn.execute(f"create database {PG_DB}")
    own = pg_settings(settings)
    with postgres.connect(own) as conn:
        conn.execute(DDL)
        for name in ("event", "first_seen", "merchant_tally", "customer", "merchant", "payment_method", "location"):
            if state[name].num_rows:
                postgres.copy_from_arrow(conn, name, state[name])
        conn.commit()
        conn.execute("analyze")


def pg_read(conn, txns: list[dict]) -> dict[str, pa.Table]:
    earliest = min(t["datetime"] for t in txns)
    spans = {entity: earliest - span for entity, span in features.HISTORY.items()}

    def ids(field: str) -> list[int]:
        return sorted({int(t[field]) for t in txns if t.get(field) is not None})

    def table(cur) -> pa.Table:
        names = [d.name for d in cur.description]
        rows = cur.fetchall()
        return pa.table({n: [r[i] for r in rows] for i, n in enumerate(names)}) if rows else pa.table(
            {n: pa.array([], pa.null()) for n in names})

    out = {}
    with conn.cursor() as cur:
        cur.execute("""select * from event where (customerid = any(%(c)s) and datetime >= %(cs)s)
                       or (paymentmethodid = any(%(p)s) and datetime >= %(ps)s)
                       or (deviceid = any(%(d)s) and datetime >= %(ds)s)
                       or (merchantid = any(%(m)s) and datetime >= %(ms)s)""",
                    {"c": ids("customerid"), "cs": spans["customer"], "p": ids("paymentmethodid"),
                     "ps": spans["payment_method"], "d": ids("deviceid"), "ds": spans["device"],
                     "m": ids("merchantid"), "ms": spans["merchant"]})
        out["events"] = table(cur)
        for name, key, field in (("first_seen", "customerid", "customerid"), ("merchant_tally", "merchantid", "merchantid"),
                                 ("customer", "customerid", "customerid"), ("merchant", "merchantid", "merchantid"),
                                 ("payment_method", "paymentmethodid", "paymentmethodid"),
                                 ("location", "locationid", "locationid")):
            cur.execute(f"select * from {name} where {key} = any(%s)", (ids(field),))
            out[name] = table(cur)
    return out


def pg_features(con, read: dict[str, pa.Table], txns: list[dict], sql: str) -> int:
    """The old online path: the batch's feature SQL over the read rows plus the targets (DuckDB)."""
    targets = pa.Table.from_pylist([{**{k: t.get(k) for k in ("transactionid", "datetime", "customerid", "merchantid",
                                                                "paymentmethodid", "deviceid", "locationid")},
                                     "country": None, "amount_eur": float(t["amount_eur"]), "is_target": True}
                                    for t in txns])
    con.register("targets", targets)
    con.register("history", read["events"])
    con.execute("create or replace temp view events as select *, false as is_target from history"
                " union all by name select * from targets")
    tally = read["merchant_tally"]
    con.register("merchant_tally_raw", tally)
    con.execute("create or replace temp view merchant_tally as select merchantid, timestamptz '1970-01-01' as tally_at,"
                " txns, frauds from merchant_tally_raw")
    for name in ("first_seen", "customer", "merchant", "payment_method", "location"):
        con.register(name, read[name])
    return len(con.sql(sql).fetchall())


def measure(what: str, batches: list[list[dict]], seconds: float, one) -> tuple[str, float, float]:
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        one(batches[done % len(batches)])
        done += 1
    elapsed = time.perf_counter() - start
    size = len(batches[0])
    console.print(f"  {what}: {done} batches of {size} in {elapsed:.1f} s", style="dim")
    return what, done / elapsed, done * size / elapsed


def main() -> None:
    import duckdb

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    settings = load_settings()
    txns = [dict(t, datetime=dt.datetime.fromisoformat(t["datetime"])) for t in
            generated_world_sample(settings, 3200)]
    batches = [txns[i:i + args.batch] for i in range(0, len(txns) - args.batch + 1, args.batch)]
    as_of = max(t["datetime"] for t in txns) + dt.timedelta(microseconds=1)
    console.print(f"state as of {as_of:%Y-%m-%d %H:%M} (the last {KEEP.days} days of events), "
                  f"{len(batches)} batches of {args.batch} real payments")
    state = state_as_of(settings, as_of)
    state["merchant_tally"] = state["merchant_tally"].select(["merchantid", "txns", "frauds"])
    state["event"] = state["event"].select(["transactionid", "datetime", "customerid", "merchantid", "paymentmethodid",
                                            "deviceid", "locationid", "country", "amount_eur"])
    load_postgres(settings, state)
    redis_store = RedisOnlineStore(settings)
    if redis_store.current() is None:
        raise SystemExit("the online store holds no state: run 'paylake features' first")

    results = [measure("redis: read", batches, args.seconds, lambda b: redis_store.read(b)),
               measure("redis: read + features", batches, args.seconds,
                       lambda b: [from_aggregates(t, v) for t, v in zip(b, redis_store.read(b))])]
    con = duckdb.connect(config={"threads": 1})
    con.execute("set TimeZone = 'UTC'")
    sql = features.feature_sql()
    with postgres.connect(pg_settings(settings)) as conn:
        results += [measure("postgres (own database): read", batches, args.seconds, lambda b: pg_read(conn, b)),
                    measure("postgres (own database): read + features", batches, args.seconds,
                            lambda b: pg_features(con, pg_read(conn, b), b, sql))]
    by = {what: (bps, pps) for what, bps, pps in results}
    rows = [(what, f"{bps:,.1f}", f"{pps:,.0f}",
             f"{pps / by[what.replace('redis', 'postgres (own database)')][1]:.1f}x" if what.startswith("redis")
             else "1.0x") for what, bps, pps in results]
    console.print(summary_table(f"online store reads, batches of {args.batch} payments", ["store", "batches/s",
                                                                                          "payments/s", "vs postgres"],
                                rows))
    with postgres.connect(settings, autocommit=True) as conn:
        conn.execute(f"drop database if exists {PG_DB}")


if __name__ == "__main__":
    main()
