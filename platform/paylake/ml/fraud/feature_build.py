"""Batch fraud features for all history: silver → ``gold/features/fraud`` (Delta, versioned).

The feature definition (``paylake.ml.fraud.features``) is run over the whole of
silver: the four input relations are views over the silver Delta tables
(``events`` every transaction with its location's country, ``first_seen``
the first use of each device and country per customer, ``merchant_tally`` one
increment per transaction and per confirmed fraud at its confirmation time,
and the dimensions), each feature family is one Ray task (DuckDB, window SQL
partitioned by its entity), and the driver joins the families on
``transactionid`` and commits the table once. The silver versions read are
kept in the commit: a build with unchanged silver commits nothing, and a
training run names the feature-table version it read, so it can be repeated.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pyarrow as pa
import ray

from paylake import contracts
from paylake.ml.fraud import features
from paylake.ml.fraud.labels import CONFIRMATIONS_SQL
from paylake.settings import Settings
from paylake.stores import lake

APP_ID = contracts.FEATURES_APP
SILVER_INPUTS = ("transaction", "location", "customer", "merchant", "payment_method", "status_change")

EVENTS_SQL = """
    select t.transactionid, t.datetime, t.customerid, t.merchantid, t.paymentmethodid, t.deviceid, t.locationid,
           l.country, cast(t.amount_eur as double) as amount_eur, true as is_target
    from txn t left join location l using (locationid)"""

FIRST_SEEN_SQL = """
    select customerid, 'device' as kind, cast(deviceid as varchar) as value, min(datetime) as seen_at
    from events where deviceid is not null group by all
    union all
    select customerid, 'country', country, min(datetime) from events where country is not null group by all"""

TALLY_SQL = f"""
    select merchantid, datetime as tally_at, 1::bigint as txns, 0::bigint as frauds from events
    union all
    select t.merchantid, c.confirmed_at, 0, 1 from ({CONFIRMATIONS_SQL}) c join txn t using (transactionid)"""

DIMENSION_SQL = {
    "customer": """select c.customerid, c.segment, c.signupdate, c.country, h.latitude as home_lat,
                          h.longitude as home_lon
                   from silver_customer c left join location h on h.locationid = c.home_locationid""",
    "merchant": "select merchantid, industry, size from silver_merchant",
    "payment_method": "select paymentmethodid, type from silver_payment_method",
}


def silver_connection(settings: Settings):
    """DuckDB over silver with the feature definition's relations as views."""
    import duckdb

    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    names = {"transaction": "txn", "location": "location", "customer": "silver_customer",
             "merchant": "silver_merchant", "payment_method": "silver_payment_method",
             "status_change": "status_change"}
    for entity, view in names.items():
        con.register(view, lake.dataset(settings, contracts.silver(entity).uri(settings)))
    con.execute(f"create view events as {EVENTS_SQL}")
    con.execute(f"create view first_seen as {FIRST_SEEN_SQL}")
    con.execute(f"create view merchant_tally as {TALLY_SQL}")
    for name, sql in DIMENSION_SQL.items():
        con.execute(f"create view {name} as {sql}")
    return con


@ray.remote(num_cpus=1)
def _family(settings: Settings, family: str) -> pa.Table:
    """One feature family over all of silver (a Ray task)."""
    con = silver_connection(settings)
    try:
        con.execute("set threads = 1")  # one CPU per task, as Ray scheduled it
        return con.sql(features.FAMILIES[family]).to_arrow_table()
    finally:
        con.close()


@dataclass(frozen=True)
class FeatureReport:
    rows: int
    version: int | None
    state: str  # "built" or "unchanged"
    seconds: float


def silver_versions(settings: Settings) -> dict[str, int]:
    from paylake.errors import PaylakeError

    versions = {}
    for name in SILVER_INPUTS:
        version = lake.table_version(settings, contracts.silver(name).uri(settings))
        if version is None:
            raise PaylakeError(f"silver table {name} does not exist: run 'paylake build-star' first")
        versions[name] = version
    return versions


def build_features(settings: Settings) -> FeatureReport:
    """Compute every transaction's features and commit them as one version of ``gold/features/fraud``."""
    import duckdb

    from paylake.raycluster import init_ray

    init_ray(settings)
    begin = time.perf_counter()
    uri = contracts.FRAUD_FEATURES.uri(settings)
    versions = silver_versions(settings)
    state = lake.delta_state(settings, uri, APP_ID)
    if state.exists and state.state.get("silver") == versions:
        return FeatureReport(-1, state.version, "unchanged", time.perf_counter() - begin)
    names = list(features.FAMILIES)
    parts = dict(zip(names, ray.get([_family.options(name=f"features {f} windows").remote(settings, f)
                                     for f in names])))
    con = duckdb.connect()
    try:
        con.execute("set TimeZone = 'UTC'")
        for name, table in parts.items():
            con.register(name, table)
        table = con.sql(features.finish_sql(features.join_sql(features.FAMILIES)) + " order by datetime, "
                        "transactionid").to_arrow_table()
    finally:
        con.close()
    lake.overwrite_rows(settings, uri, table, app_id=APP_ID, batch=state.batch + 1, state={"silver": versions})
    return FeatureReport(table.num_rows, lake.table_version(settings, uri), "built", time.perf_counter() - begin)
