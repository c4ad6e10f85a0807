"""Gold: the star schema as Delta tables, with exactly the columns and types of
the Snowflake DDL (``sql/snowflake/``, read by ``warehouse.star_ddl``).

Dimensions are small and rebuilt whole (``DIM_Customer`` is slowly changing,
type 2: a change of segment or country closes the current version and opens a
new one; a member deleted at the source leaves the dimension, and the load
removes it from Snowflake once no fact refers to it). Facts are aggregated by
Ray tasks, each over a slice of dates with DuckDB, and only for the dates a
change touched since the last build, before and after: the transactions as the
last build read them (Delta time travel to the silver and ``DIM_Customer``
versions recorded in its commit) are compared with the current ones, and every
date of a row that appeared, vanished or changed is rebuilt, so a deleted sale
or one moved to another day leaves its old date too. Those dates' rows are
replaced atomically (one Delta commit per fact table, replaceWhere on
``DateKey``; a date left without rows is emptied). The input versions and the
dates replaced are kept in the commit, for the next build and for the load.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass

import pyarrow as pa
import ray

from paylake import contracts, metrics
from paylake.settings import Settings
from paylake.stores import lake
from paylake.warehouse.star_ddl import conform

log = logging.getLogger(__name__)

APP_ID = contracts.GOLD_APP
OPEN_END = dt.datetime(9999, 12, 31)
CAPTURED = "t.status not in ('failed', 'pending')"

# Deterministic 60-bit surrogate keys: the same natural key always gets the same key.
_KEY = "cast(('0x' || substr(md5({}), 1, 15)) as bigint)"

DIMENSION_SQL = {
    "DIM_Merchant": """
        select merchantid as MerchantKey, merchantid as MerchantID, name as Name, industry as Industry,
               size as Size, country as Country from merchant""",
    "DIM_Location": """
        select locationid as LocationKey, locationid as LocationID, city as City, region as Region,
               country as Country from location""",
    "DIM_Product": """
        select productid as ProductKey, productid as ProductID, category as Category, taxrate as TaxRate
        from product
        union all select -1, -1, 'Unknown', 0""",  # the member of sales without a product
    "DIM_PaymentMethod": f"""
        select distinct {_KEY.format("display_name || '|' || type")} as PaymentMethodKey, display_name as Name,
               type as Type from payment_method""",
}

FACT_SQL = {
    "FACT_Revenue": f"""
        select cast(strftime(t.transaction_date, '%Y%m%d') as integer) as DateKey, t.merchantid as MerchantKey,
               t.locationid as LocationKey, coalesce(t.productid, -1) as ProductKey,
               {_KEY.format("p.display_name || '|' || p.type")} as PaymentMethodKey,
               sum(t.amount_eur) as Amount, sum(t.tax_eur) as TaxAmount, sum(t.fee_eur) as FeeAmount,
               coalesce(sum(t.amount_eur) filter (where t.is_refunded), 0) as RefundAmount,
               count(*) as TransactionCount
        from txn t join payment_method p using (paymentmethodid)
        where {CAPTURED}
        group by all""",
    "FACT_FraudAnalysis": f"""
        select cast(strftime(t.transaction_date, '%Y%m%d') as integer) as DateKey, c.CustomerKey,
               t.merchantid as MerchantKey, t.locationid as LocationKey,
               {_KEY.format("p.display_name || '|' || p.type")} as PaymentMethodKey,
               count(*) filter (where t.is_fraud) as FraudCount,
               coalesce(sum(t.amount_eur) filter (where t.is_fraud), 0) as FraudAmount,
               count(*) as TransactionCount
        from txn t join payment_method p using (paymentmethodid)
        join dim_customer c on c.CustomerID = t.customerid and t.datetime >= c.ValidFrom and t.datetime < c.ValidTo
        group by all""",
    "FACT_CustomerSegmentation": f"""
        select cast(strftime(t.transaction_date, '%Y%m%d') as integer) as DateKey, c.CustomerKey,
               t.locationid as LocationKey, count(*) as TransactionCount, sum(t.amount_eur) as TotalSpent
        from txn t
        join dim_customer c on c.CustomerID = t.customerid and t.datetime >= c.ValidFrom and t.datetime < c.ValidTo
        where {CAPTURED}
        group by all""",
}

COMPLIANCE_SQL = """
    select cast(strftime(session_date, '%Y%m%d') as integer) as DateKey, 'db_session' as EventType,
           db_user as Role, count(*) as EventCount, sum(line_count) as AccessCount,
           sum(permission_denied_count) + count(*) filter (where label = 'anomalous') as PolicyViolationCount
    from log_session group by all
    union all
    select cast(strftime(event_date, '%Y%m%d') as integer), 'platform_' || action, actor, count(*), 0, 0
    from audit_event group by all"""


def _duckdb(settings: Settings, views: dict[str, str]):
    """A DuckDB connection with silver (and gold) tables registered as views."""
    import duckdb

    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    for view, uri in views.items():
        con.register(view, lake.dataset(settings, uri))
    return con


def _silver(settings: Settings, *names: str) -> dict[str, str]:
    return {name: contracts.silver(name).uri(settings) for name in names}


# ----------------------------------------------------------------------------- dimensions
def build_dimension(settings: Settings, name: str) -> pa.Table:
    con = _duckdb(settings, _silver(settings, "merchant", "location", "product", "payment_method"))
    try:
        return conform(name, con.sql(DIMENSION_SQL[name] + " order by 1").to_arrow_table())  # stable: no-op reruns
    finally:
        con.close()


def build_dim_customer(settings: Settings, now: dt.datetime) -> tuple[pa.Table, int]:
    """SCD type 2 over silver customers: returns (the dimension, versions opened or closed)."""
    views = _silver(settings, "customer")
    current_uri = contracts.gold("DIM_Customer").uri(settings)
    con = _duckdb(settings, views)
    try:
        if lake.table_exists(settings, current_uri):
            con.register("previous", lake.dataset(settings, current_uri))
        else:
            con.execute("create view previous as select 0::bigint as CustomerKey, 0::bigint as CustomerID,"
                        " ''::varchar as Segment, ''::varchar as Country, ''::varchar as SignupCohort,"
                        " now()::timestamp as ValidFrom, now()::timestamp as ValidTo, false as IsCurrent where false")
        con.execute("create temp table source as select customerid as CustomerID, segment as Segment,"
                    " country as Country, signup_cohort as SignupCohort, signupdate::timestamp as SignupAt"
                    " from customer")
        con.execute("set variable change_at = ?", [now.replace(tzinfo=None)])
        con.execute("create temp table cur as select * from previous where IsCurrent")
        con.execute("""create temp table changed as select s.* from source s join cur c using (CustomerID)
                       where (s.Segment, s.Country, s.SignupCohort)
                             is distinct from (c.Segment, c.Country, c.SignupCohort)""")
        con.execute("create temp table gone as select CustomerID from cur anti join source using (CustomerID)")
        con.execute("create temp table new as select * from source anti join previous using (CustomerID)")
        table = con.sql(f"""
            select CustomerKey, CustomerID, Segment, Country, SignupCohort, ValidFrom,
                   case when closing then getvariable('change_at') else ValidTo end as ValidTo,
                   IsCurrent and not closing as IsCurrent
            from (select *, IsCurrent and (CustomerID in (select CustomerID from changed)
                                           or CustomerID in (select CustomerID from gone)) as closing
                  from previous)
            union all
            select {_KEY.format("CustomerID::varchar || '|' || ValidFrom::varchar")}, CustomerID, Segment, Country,
                   SignupCohort, ValidFrom, TIMESTAMP '{OPEN_END:%Y-%m-%d %H:%M:%S}', true
            from (select *, getvariable('change_at') as ValidFrom from changed
                  union all select *, SignupAt from new)
            order by CustomerID, ValidFrom""").to_arrow_table()
        (changes,) = con.execute("select (select count(*) from changed) + (select count(*) from gone)"
                                 " + (select count(*) from new)").fetchone()
        return conform("DIM_Customer", table), int(changes)
    finally:
        con.close()


# ----------------------------------------------------------------------------- facts
@ray.remote(num_cpus=1)
def _aggregate(settings: Settings, dates: list[dt.date], dim_customer: pa.Table) -> dict[str, pa.Table]:
    """Every fact over one slice of dates: one scan of the slice, one DuckDB (a Ray task)."""
    import pyarrow.dataset as ds

    con = _duckdb(settings, _silver(settings, "payment_method"))
    try:
        transactions = lake.dataset(settings, contracts.silver("transaction").uri(settings))
        con.register("txn", transactions.to_table(filter=ds.field("transaction_date").isin(dates)))
        con.register("dim_customer", dim_customer)
        return {fact: con.sql(sql).to_arrow_table() for fact, sql in FACT_SQL.items()}
    finally:
        con.close()


# What one transaction contributes to the facts. Two versions of these rows (the
# inputs of the last build and the current ones) differ exactly on the dates
# whose fact rows may change: a deleted row marks its old date, a row moved to
# another date (or merchant, status, payment method, customer version) marks
# both its old and its new date, a new row its date.
FACT_ROWS_SQL = """
    select t.transactionid, t.transaction_date, t.datetime, t.customerid, c.CustomerKey, t.merchantid,
           t.locationid, t.productid, p.display_name, p.type, t.amount_eur, t.tax_eur, t.fee_eur, t.status,
           t.is_fraud, t.is_refunded
    from {txn} t left join {payment_method} p using (paymentmethodid)
    left join {dim_customer} c on c.CustomerID = t.customerid and t.datetime >= c.ValidFrom
                                  and t.datetime < c.ValidTo"""
FACT_INPUTS = ("transaction", "payment_method")


def fact_inputs(settings: Settings) -> dict:
    """The versions the facts are built from: the silver inputs and gold ``DIM_Customer``."""
    return {"silver": {name: lake.table_version(settings, contracts.silver(name).uri(settings)) for name in FACT_INPUTS},
            "dim_customer": lake.table_version(settings, contracts.gold("DIM_Customer").uri(settings))}


def touched_dates(settings: Settings, previous: dict | None, dim_customer: pa.Table) -> tuple[list[dt.date], bool]:
    """The dates whose fact rows may differ from the build that read ``previous``
    (the inputs recorded in the facts' last commit), and whether that is every
    date (first build, or the previous inputs can no longer be read: their
    files were vacuumed). ``dim_customer`` is the dimension the facts will join."""
    con = _duckdb(settings, {"txn": contracts.silver("transaction").uri(settings),
                             "payment_method": contracts.silver("payment_method").uri(settings)})
    try:
        con.register("dim_customer", dim_customer)
        everything = "select distinct transaction_date from txn where transaction_date is not null order by 1"
        if not previous or not previous.get("silver") or previous.get("dim_customer") is None:
            return [r[0] for r in con.execute(everything).fetchall()], True
        try:
            con.register("txn_old", lake.dataset(settings, contracts.silver("transaction").uri(settings),
                                                 previous["silver"]["transaction"]))
            con.register("payment_method_old", lake.dataset(settings, contracts.silver("payment_method").uri(settings),
                                                            previous["silver"]["payment_method"]))
            con.register("dim_customer_old", lake.dataset(settings, contracts.gold("DIM_Customer").uri(settings),
                                                          previous["dim_customer"]))
            con.execute("create temp table old_rows as " + FACT_ROWS_SQL.format(
                txn="txn_old", payment_method="payment_method_old", dim_customer="dim_customer_old"))
        except Exception as exc:  # noqa: BLE001 - any unreadable old version means: rebuild all
            log.warning("gold: the inputs of the last fact build cannot be read (%s): rebuilding every date", exc)
            return [r[0] for r in con.execute(everything).fetchall()], True
        con.execute("create temp table new_rows as " + FACT_ROWS_SQL.format(
            txn="txn", payment_method="payment_method", dim_customer="dim_customer"))
        dates = con.execute("""
            select distinct transaction_date from (
                (select * from old_rows except select * from new_rows)
                union all (select * from new_rows except select * from old_rows))
            where transaction_date is not null order by 1""").fetchall()
        return [r[0] for r in dates], False
    finally:
        con.close()


def _slices(dates: list[dt.date], parts: int) -> list[list[dt.date]]:
    size = max(1, -(-len(dates) // parts))
    return [dates[i:i + size] for i in range(0, len(dates), size)]


@dataclass(frozen=True)
class GoldReport:
    table: str
    rows: int
    state: str  # "rebuilt", "replaced N dates", "unchanged"
    seconds: float


def build_star(settings: Settings, *, parallelism: int = 4) -> list[GoldReport]:
    """Silver → gold: dimensions, then the facts of the dates touched since the last build."""
    from paylake.raycluster import init_ray
    from paylake.warehouse.calendar import build_dim_date

    init_ray(settings)
    reports: list[GoldReport] = []
    now = dt.datetime.now(dt.UTC)

    def commit(table: str, data: pa.Table, state: dict, predicate: str | None = None) -> bool:
        uri = contracts.gold(table).uri(settings)
        batch = lake.delta_state(settings, uri, APP_ID).batch + 1
        return lake.overwrite_rows(settings, uri, data, app_id=APP_ID, batch=batch, state=state,
                                   predicate=predicate)

    def changed(table: str, data: pa.Table) -> bool:
        uri = contracts.gold(table).uri(settings)
        return not lake.table_exists(settings, uri) or not lake.read_table(settings, uri).equals(data)

    # the facts commit in FACT_SQL order: the last one's inputs are those of a complete build
    fact_state = lake.delta_state(settings, contracts.gold(list(FACT_SQL)[-1]).uri(settings), APP_ID)
    first, last = _date_span(settings)
    dim_date = build_dim_date(first, last)
    for name, data in [("DIM_Date", dim_date)] + [(n, build_dimension(settings, n)) for n in DIMENSION_SQL]:
        begin = time.perf_counter()
        done = changed(name, data) and commit(name, data, {})
        reports.append(GoldReport(name, data.num_rows, "rebuilt" if done else "unchanged",
                                  time.perf_counter() - begin))
    begin = time.perf_counter()
    dim_customer, versions = build_dim_customer(settings, now)
    done = changed("DIM_Customer", dim_customer) and commit("DIM_Customer", dim_customer, {})
    reports.append(GoldReport("DIM_Customer", dim_customer.num_rows,
                              f"rebuilt ({versions} SCD2 change(s))" if done else "unchanged",
                              time.perf_counter() - begin))
    dates, full = touched_dates(settings, fact_state.state.get("inputs") if fact_state.exists else None,
                                dim_customer)
    inputs = fact_inputs(settings)

    begin = time.perf_counter()
    dim_ref = ray.put(dim_customer)
    slices = ray.get([_aggregate.options(name=f"gold facts {part[0]}..{part[-1]}").remote(settings, part, dim_ref)
                      for part in _slices(dates, parallelism)])
    aggregated = time.perf_counter() - begin
    for fact in FACT_SQL:
        begin = time.perf_counter() - aggregated / len(FACT_SQL)
        if not dates:
            reports.append(GoldReport(fact, 0, "unchanged", 0.0))
            continue
        parts = [p[fact] for p in slices if p[fact].num_rows]
        data = conform(fact, pa.concat_tables(parts) if parts else pa.table({}))
        keys = ", ".join(str(int(d.strftime("%Y%m%d"))) for d in dates)
        full = full or not lake.table_exists(settings, contracts.gold(fact).uri(settings))
        commit(fact, data, {"inputs": inputs, "dates": [int(d.strftime("%Y%m%d")) for d in dates]},
               predicate=None if full else f"DateKey in ({keys})")
        reports.append(GoldReport(fact, data.num_rows, "rebuilt" if full else f"replaced {len(dates)} date(s)",
                                  time.perf_counter() - begin))
    begin = time.perf_counter()
    compliance = _compliance(settings)
    done = changed("FACT_ComplianceAudit", compliance) and commit("FACT_ComplianceAudit", compliance, {})
    reports.append(GoldReport("FACT_ComplianceAudit", compliance.num_rows, "rebuilt" if done else "unchanged",
                              time.perf_counter() - begin))
    for report in reports:
        if report.state != "unchanged":
            metrics.rows(f"gold/{report.table}", "written", report.rows)
    return reports


def _compliance(settings: Settings) -> pa.Table:
    con = _duckdb(settings, _silver(settings, "log_session", "audit_event"))
    try:
        return conform("FACT_ComplianceAudit", con.sql(COMPLIANCE_SQL + " order by 1, 2, 3")
                              .to_arrow_table())
    finally:
        con.close()


def _date_span(settings: Settings) -> tuple[dt.date, dt.date]:
    """The calendar the star needs: every day with a transaction, whole years."""
    import duckdb

    con = duckdb.connect()
    try:
        con.register("txn", lake.dataset(settings, contracts.silver("transaction").uri(settings)))
        low, high = con.execute("select min(transaction_date), max(transaction_date) from txn").fetchone()
    finally:
        con.close()
    today = dt.date.today()
    low, high = low or today, high or today
    return dt.date(min(low, today).year, 1, 1), dt.date(max(high, today).year, 12, 31)
