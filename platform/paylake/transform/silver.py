"""Silver: one clean Delta table per business entity, from bronze.

Each entity is one SQL statement (DuckDB, over the bronze Delta tables scanned
as Arrow datasets) and one Ray task. Types are conformed, duplicates removed
(latest version per key), soft-deleted rows excluded, amounts normalised to the
reporting currency (EUR) with the currency table, and PII pseudonymised: no
name, email, street, card token or device fingerprint is copied; customers are
joined by their internal id and the keyed email hash; database client addresses
become keyed hashes. Mongo-derived entities are flattened for analytics; the
log sessions keep their nested lines (without statement text) for the ML jobs.

A silver table is rebuilt only when one of its bronze inputs moved (their
versions are kept in the silver commit): a re-run with nothing new commits
nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pyarrow as pa
import ray

from paylake import contracts, metrics
from paylake.settings import Settings
from paylake.stores import lake

APP_ID = contracts.SILVER_APP
REPORTING_CURRENCY = "EUR"


@dataclass(frozen=True)
class Entity:
    name: str
    inputs: tuple[str, ...]  # bronze tables, as "postgres/transaction" or "mongo/customer"
    sql: str  # over views named like the inputs' last part (mongo ones prefixed m_)


def _latest(table: str, key: str, order: str = "updatedat") -> str:
    """Deduplicate a bronze table to its latest version per key."""
    return f"(select * from {table} qualify row_number() over (partition by {key} order by {order} desc) = 1)"


ENTITIES: tuple[Entity, ...] = (
    Entity("customer", ("postgres/customer", "mongo/customer", "postgres/address"), f"""
        select c.customerid, c.segment, c.country, c.signupdate, strftime(c.signupdate, '%Y-%m') as signup_cohort,
               h.locationid as home_locationid,
               c.consentgdprprocessing as consent_gdpr_processing, c.ccpadonotsell as ccpa_do_not_sell,
               c.emailhash as email_key,
               m.preferences.device as preferred_device, m.preferences.paymentMethod as preferred_payment_method,
               m.preferences.currency as preferred_currency, c.updatedat
        from {_latest('customer', 'customerid')} c
        left join {_latest('m_customer', '_id', '"updatedAt"')} m on m._id = c.customerid
        left join (select customerid, locationid from {_latest('address', 'addressid')} where isprimary
                   qualify row_number() over (partition by customerid order by addressid) = 1) h
               using (customerid)
        where not c.isdeleted"""),
    Entity("merchant", ("postgres/merchant",), f"""
        select merchantid, name, industry, size, country, locationid, updatedat
        from {_latest('merchant', 'merchantid')}"""),
    Entity("location", ("postgres/location",), f"""
        select locationid, city, region, country, latitude, longitude, updatedat
        from {_latest('location', 'locationid')}"""),
    Entity("product", ("postgres/product",), f"""
        select productid, merchantid, name, category, taxrate, updatedat from {_latest('product', 'productid')}"""),
    Entity("payment_method", ("postgres/paymentmethod",), f"""
        select paymentmethodid, customerid, type, brand, coalesce(brand, type) as display_name, updatedat
        from {_latest('paymentmethod', 'paymentmethodid')}"""),
    Entity("device", ("postgres/device",), f"""
        select deviceid, customerid, devicetype as device_type, os, createdat as first_seen_at, updatedat
        from {_latest('device', 'deviceid')}"""),
    Entity("currency", ("postgres/currency",), f"""
        select currencycode, name, ratetoeur as rate_to_eur, updatedat
        from {_latest('currency', 'currencycode')}"""),
    Entity("transaction", ("postgres/transaction", "postgres/currency", "postgres/transactionstatus"), f"""
        select t.transactionid, t.datetime, cast(timezone('UTC', t.datetime) as date) as transaction_date,
               t.customerid, t.merchantid, t.paymentmethodid, t.deviceid, t.locationid, t.productid,
               t.currencycode, t.amount, t.taxamount, t.feeamount,
               cast(round(t.amount * c.ratetoeur, 2) as decimal(18, 2)) as amount_eur,
               cast(round(t.taxamount * c.ratetoeur, 2) as decimal(18, 2)) as tax_eur,
               cast(round(t.feeamount * c.ratetoeur, 2) as decimal(18, 2)) as fee_eur,
               t.statusid, s.name as status, s.name in ('fraudulent', 'disputed') as is_fraud,
               s.name = 'refunded' as is_refunded, t.createdat, t.updatedat
        from {_latest('transaction', 'transactionid')} t
        join {_latest('currency', 'currencycode')} c using (currencycode)
        join transactionstatus s using (statusid)"""),
    Entity("status_change", ("postgres/transactionstatechanges", "postgres/transactionstatus"), f"""
        select x.changeid, x.transactionid, x.transactiondatetime, f.name as from_status, t.name as to_status,
               x.reason, x.changedby as changed_by, x.changedat as changed_at, x.updatedat
        from {_latest('transactionstatechanges', 'changeid')} x
        join transactionstatus f on f.statusid = x.fromstatusid
        join transactionstatus t on t.statusid = x.tostatusid"""),
    Entity("audit_event", ("postgres/auditlog",), """
        select auditid, "at" as event_at, cast(timezone('UTC', "at") as date) as event_date, actor, action,
               object
        from auditlog qualify row_number() over (partition by auditid order by _batch_id desc) = 1"""),
    Entity("review", ("mongo/customerreview",), """
        select _id as review_id, "customerId" as customerid, "merchantId" as merchantid, rating,
               octet_length(message) - 31 as message_length, "timestamp" as reviewed_at
        from m_customerreview"""),
    Entity("interaction_session", ("mongo/userinteractiondata",), """
        select "sessionId" as session_id, "customerId" as customerid, device.os as os, device.type as device_type,
               "startedAt" as started_at, len(events) as event_count,
               len(list_filter(events, lambda e: e.type = 'checkout')) as checkout_count
        from m_userinteractiondata"""),
    Entity("log_session", ("mongo/log",), """
        select "sessionId" as session_id, dbname, "user" as db_user,
               sha256(getvariable('hash_key') || '|' || "clientAddress") as client_key,
               "startedAt" as started_at, "endedAt" as ended_at, cast(timezone('UTC', "startedAt") as date)
               as session_date, label, scenario, len(lines) as line_count,
               len(list_filter(lines, lambda l: l.error_severity in ('ERROR', 'FATAL'))) as error_count,
               len(list_filter(lines, lambda l: l.state_code = '42501')) as permission_denied_count,
               list_transform(lines, lambda l: {'timestamp': l."timestamp", 'error_severity': l.error_severity,
                                           'state_code': l.state_code, 'message': l.message}) as lines
        from m_log"""),
)


def _view_name(name: str) -> str:
    kind, table = name.split("/")
    return f"m_{table}" if kind == "mongo" else table


@ray.remote(num_cpus=1)
def _build(settings: Settings, entity: Entity, versions: dict[str, int]) -> tuple[str, int, bool]:
    table = build_entity(settings, entity)
    uri = contracts.silver(entity.name).uri(settings)
    batch = lake.delta_state(settings, uri, APP_ID).batch + 1
    committed = lake.overwrite_rows(settings, uri, table, app_id=APP_ID, batch=batch, state={"bronze": versions})
    return entity.name, table.num_rows, committed


def build_entity(settings: Settings, entity: Entity) -> pa.Table:
    """Run one entity's SQL over its bronze inputs (pure given the inputs)."""
    import duckdb

    con = duckdb.connect()
    try:
        con.execute("set TimeZone = 'UTC'")
        con.execute("set variable hash_key = ?", [_hash_key(settings)])
        for name in entity.inputs:
            con.register(_view_name(name), lake.dataset(settings, contracts.bronze_table(*name.split("/")).uri(settings)))
        return con.sql(entity.sql).to_arrow_table()
    finally:
        con.close()


def _hash_key(settings: Settings) -> str:
    """The pseudonym key, unwrapped by the KMS for this build only (paylake.security.keys)."""
    from paylake.security.keys import Keyring

    with Keyring(settings) as ring:
        return ring.hmac_key().decode()


@dataclass(frozen=True)
class SilverReport:
    entity: str
    rows: int
    state: str  # "rebuilt" or "unchanged"


def build_silver(settings: Settings, only: list[str] | None = None) -> tuple[list[SilverReport], float]:
    """Rebuild, in parallel, every silver entity whose bronze inputs moved."""
    from paylake.errors import PaylakeError
    from paylake.raycluster import init_ray

    init_ray(settings)
    started = time.perf_counter()
    entities = [e for e in ENTITIES if not only or e.name in only]
    refs, reports = [], []
    for entity in entities:
        versions = {}
        for name in entity.inputs:
            version = lake.table_version(settings, contracts.bronze_table(*name.split("/")).uri(settings))
            if version is None:
                raise PaylakeError(f"bronze table {name} does not exist: run 'paylake extract' first")
            versions[name] = version
        state = lake.delta_state(settings, contracts.silver(entity.name).uri(settings), APP_ID)
        if state.exists and state.state.get("bronze") == versions:
            reports.append(SilverReport(entity.name, -1, "unchanged"))
            continue
        refs.append(_build.options(name=f"silver {entity.name}").remote(settings, entity, versions))
    for name, rows, committed in ray.get(refs):
        reports.append(SilverReport(name, rows, "rebuilt" if committed else "unchanged"))
    for report in reports:
        if report.state == "rebuilt":
            metrics.rows(f"silver/{report.entity}", "written", report.rows)
    order = [e.name for e in entities]
    return sorted(reports, key=lambda r: order.index(r.entity)), time.perf_counter() - started
