"""Point-in-time fraud features: one definition (DuckDB SQL), two paths.

The features of a transaction use only what happened strictly before it:
window frames end at the rows *before* the transaction's own timestamp
(``range … and current row exclude group``: the transaction and its peers at
the same instant are left out), a customer's devices and countries count as
seen only from their first use before it, and a merchant's fraud rate counts
only the frauds *confirmed* before it (labels arrive days later).

The definition is a set of SQL statements, one per feature family (customer,
payment method, device and merchant windows, and the context: merchant,
payment method, customer and location attributes, new device / new country,
distance from home), over four small relations:

``events``
    transactions: ``transactionid, datetime, customerid, merchantid,
    paymentmethodid, deviceid, locationid, country, amount_eur, is_target``;
    features are computed for the rows with ``is_target``.
``first_seen``
    ``customerid, kind ('device' | 'country'), value, seen_at``: first use.
``merchant_tally``
    ``merchantid, tally_at, txns, frauds``: +1 transaction / +1 confirmed fraud
    increments (a compacted prefix is one row with totals).
``dims``
    ``customer(customerid, segment, signupdate, home_lat, home_lon, country)``,
    ``merchant(merchantid, industry, size)``,
    ``payment_method(paymentmethodid, type)``, ``location(locationid, country,
    latitude, longitude)``.

**Batch** (``paylake.ml.fraud.feature_build``) fills them with all of silver and runs
each family as a Ray task; **online** (``paylake.ml.fraud.online``) fills them with
the state of the transaction's entities read from the online store (their
recent events, first-seen records, tally) plus the incoming transaction, and
runs the *same* statements in-process. Every window is at most
``HISTORY[entity]`` long, which is all the history the store keeps.

Defaults, never a crash, for what is unknown: an unknown merchant, payment
method, customer or location gets ``'unknown'`` categories and ``-1``
numbers, a missing device gets 0 device activity and ``new_device = 0``;
``defaulted`` lists what was defaulted. A negative or missing amount is a
contract error (``validate_transaction``).
"""

from __future__ import annotations

import datetime as dt

from paylake.errors import ContractError

# The windows of the definition: the batch runs them as SQL frames, the online store as tiles
# (paylake.ml.fraud.online); both read these spans.
WINDOW_SPANS = {"1h": dt.timedelta(hours=1), "24h": dt.timedelta(hours=24), "7d": dt.timedelta(days=7)}
MEDIAN_SPAN = dt.timedelta(days=30)  # the customer's median amount
DISTINCT_WINDOW = "24h"  # the payment method's distinct merchants and countries


def _sql_interval(span: dt.timedelta) -> str:
    return f"{int(span.total_seconds())} seconds"


def window_span(name: str) -> dt.timedelta:
    """A window of the definition by name (``median``: the customer's median amount)."""
    return MEDIAN_SPAN if name == "median" else WINDOW_SPANS[name]


WINDOWS = {name: _sql_interval(span) for name, span in WINDOW_SPANS.items()}
MEDIAN_WINDOW = _sql_interval(MEDIAN_SPAN)
# how much history each entity's windows read (the online store keeps exactly this)
HISTORY = {"customer": dt.timedelta(days=30), "payment_method": dt.timedelta(days=7),
           "device": dt.timedelta(days=7), "merchant": dt.timedelta(days=7)}
FRAUD_PRIOR, PRIOR_WEIGHT = 0.005, 20.0  # the merchant rate's smoothing: (frauds + a·p) / (txns + a)

ENTITY_KEYS = {"customer": ("cust", "customerid"), "payment_method": ("pm", "paymentmethodid"),
               "device": ("dev", "deviceid"), "merchant": ("merch", "merchantid")}

EVENT_COLUMNS = ("transactionid", "datetime", "customerid", "merchantid", "paymentmethodid", "deviceid",
                 "locationid", "country", "amount_eur", "is_target")

CATEGORICAL = ("industry", "merchant_size", "pm_type", "segment")


def _window_features(prefix: str, key: str) -> tuple[list[str], list[str]]:
    """Count and sum over each window of one entity; (select expressions, window clauses)."""
    select, windows = [], []
    for name, span in WINDOWS.items():
        windows.append(f"w_{name} as (partition by {key} order by datetime range between interval {span} "
                       "preceding and current row exclude group)")
        select += [f"count(*) over w_{name} as {prefix}_n_{name}",
                   f"coalesce(sum(amount_eur) over w_{name}, 0) as {prefix}_sum_{name}"]
    return select, windows


def entity_sql(entity: str, target_partitions_only: bool = False) -> str:
    """The windowed features of one entity family, for the target rows of ``events``.

    ``target_partitions_only``: the windows run only over the partitions (this family's entities) that hold
    a target, which changes no result (a window never looks outside its partition). Online, ``events`` is
    the union of every family's history for a few targets (mostly their merchants' busy 7 days): each
    family's windows then skip the other families' rows. In the batch every row is a target, and the
    filter would only cost a semi-join."""
    prefix, key = ENTITY_KEYS[entity]
    select, windows = _window_features(prefix, key)
    if entity == "customer":
        windows.append(f"w_median as (partition by customerid order by datetime range between interval "
                       f"{MEDIAN_WINDOW} preceding and current row exclude group)")
        select += ["median(amount_eur) over w_median as cust_median_30d"]
    if entity == "payment_method":
        select += [f"count(distinct merchantid) over w_{DISTINCT_WINDOW} as pm_distinct_merchants_24h",
                   f"count(distinct country) over w_{DISTINCT_WINDOW} as pm_distinct_countries_24h"]
    body = ",\n               ".join(select)
    where = "where is_target" + (" and deviceid is not null" if entity == "device" else "")
    source = (f"(select * from events where {key} in (select {key} from events where is_target)) as events"
              if target_partitions_only else "events")
    return f"""
        select transactionid, {body}
        from {source}
        window {", ".join(windows)}
        qualify {where.removeprefix("where ")}"""


MERCHANT_RATE_SQL = f"""
    with tally as (
        select merchantid, tally_at, txns, frauds, false as is_target, null::bigint as transactionid
        from merchant_tally
        union all
        select merchantid, datetime, 0, 0, true, transactionid from events where is_target)
    select transactionid,
           coalesce(sum(txns) over w, 0) as merch_txns_before,
           coalesce(sum(frauds) over w, 0) as merch_frauds_before,
           (coalesce(sum(frauds) over w, 0) + {PRIOR_WEIGHT * FRAUD_PRIOR})
             / (coalesce(sum(txns) over w, 0) + {PRIOR_WEIGHT}) as merch_fraud_rate
    from tally
    window w as (partition by merchantid order by tally_at range between unbounded preceding and current row
                 exclude group)
    qualify is_target"""

CONTEXT_SQL = """
    select e.transactionid, e.datetime, e.customerid, e.amount_eur,
           hour(e.datetime) as hour, isodow(e.datetime) as weekday,
           coalesce(m.industry, 'unknown') as industry, coalesce(m.size, 'unknown') as merchant_size,
           coalesce(p.type, 'unknown') as pm_type, coalesce(c.segment, 'unknown') as segment,
           coalesce(date_diff('day', c.signupdate, cast(e.datetime as date)), -1) as tenure_days,
           coalesce(2 * 6371.0 * asin(sqrt(
               pow(sin(radians(l.latitude - c.home_lat) / 2), 2)
               + cos(radians(c.home_lat)) * cos(radians(l.latitude)) * pow(sin(radians(l.longitude - c.home_lon) / 2), 2)
           )), -1) as home_distance_km,
           (c.country is not null and e.country is not null and e.country <> c.country)::integer as foreign_country,
           (e.deviceid is not null and not exists (
               select 1 from first_seen f where f.customerid = e.customerid and f.kind = 'device'
               and f.value = cast(e.deviceid as varchar) and f.seen_at < e.datetime))::integer as new_device,
           (e.country is not null and not exists (
               select 1 from first_seen f where f.customerid = e.customerid and f.kind = 'country'
               and f.value = e.country and f.seen_at < e.datetime))::integer as new_country,
           list_filter([
               case when m.merchantid is null then 'merchant' end,
               case when p.paymentmethodid is null then 'payment_method' end,
               case when c.customerid is null then 'customer' end,
               case when l.locationid is null then 'location' end,
               case when e.deviceid is null then 'device' end], lambda x: x is not null) as defaulted
    from events e
    left join merchant m using (merchantid)
    left join payment_method p using (paymentmethodid)
    left join customer c using (customerid)
    left join location l on l.locationid = e.locationid
    where e.is_target"""

# (named apart from the dimension relations they read: in one statement they are CTEs beside them)
ENTITY_FAMILIES = {"customer_activity": "customer", "payment_method_activity": "payment_method",
                   "device_activity": "device", "merchant_activity": "merchant"}


def families(target_partitions_only: bool = False) -> dict[str, str]:
    """Every family's SQL by name (``target_partitions_only``: see ``entity_sql``)."""
    return {**{name: entity_sql(entity, target_partitions_only) for name, entity in ENTITY_FAMILIES.items()},
            "merchant_rate": MERCHANT_RATE_SQL, "context": CONTEXT_SQL}


FAMILIES = families()

# the join of the families: zero activity where a family has no row (a missing device)
_ZERO = ("dev_n_1h", "dev_sum_1h", "dev_n_24h", "dev_sum_24h", "dev_n_7d", "dev_sum_7d")


def join_sql(families: dict[str, str]) -> str:
    """One row per target: the context joined with every family (relations named as the families)."""
    columns = ["x.*"]
    for family in families:
        if family != "context":
            columns.append(f"{family}.* exclude (transactionid)")
    joins = " ".join(f"left join {f} using (transactionid)" for f in families if f != "context")
    select = ", ".join(columns)
    return f"select {select} from context x {joins}"


def finish_sql(joined: str) -> str:
    """Derived columns and defaults over the joined families."""
    zero = ", ".join(f"coalesce({c}, 0) as {c}" for c in _ZERO)
    return f"""
        select * exclude ({", ".join(_ZERO)}, cust_median_30d), {zero},
               coalesce(cust_median_30d, -1) as cust_median_30d,
               case when cust_median_30d > 0 then amount_eur / cust_median_30d else 1.0 end as amount_to_median
        from ({joined})"""


def feature_sql(target_partitions_only: bool = True) -> str:
    """The whole definition as one statement over the four relations (what online runs, its windows over
    the targets' partitions only)."""
    sqls = families(target_partitions_only)
    ctes = ",\n".join(f"{name} as ({sql})" for name, sql in sqls.items())
    return f"with {ctes}\n" + finish_sql(join_sql(sqls))


def feature_columns() -> list[str]:
    """The model's inputs, in a fixed order (everything but the id and bookkeeping)."""
    names = ["amount_eur", "hour", "weekday", *CATEGORICAL, "tenure_days", "home_distance_km", "foreign_country",
             "new_device", "new_country", "merch_txns_before", "merch_frauds_before", "merch_fraud_rate",
             "cust_median_30d", "amount_to_median", "pm_distinct_merchants_24h", "pm_distinct_countries_24h"]
    for prefix in ("cust", "pm", "dev", "merch"):
        for window in WINDOWS:
            names += [f"{prefix}_n_{window}", f"{prefix}_sum_{window}"]
    return names


def validate_transaction(txn: dict) -> None:
    """Refuse what no default can fix: a transaction must have an id, a time, a customer and a positive amount."""
    problems = []
    for field in ("transactionid", "datetime", "customerid", "merchantid", "paymentmethodid"):
        if txn.get(field) is None:
            problems.append(f"{field} is missing")
    amount = txn.get("amount_eur")
    if amount is None:
        problems.append("amount_eur is missing")
    else:
        try:
            if float(amount) <= 0:
                problems.append(f"amount_eur must be positive, not {amount}")
        except (TypeError, ValueError):
            problems.append(f"amount_eur must be a number, not {amount!r}")
    when = txn.get("datetime")
    if when is not None and (not isinstance(when, dt.datetime) or when.tzinfo is None):
        problems.append("datetime must be a timezone-aware datetime")
    if problems:
        raise ContractError("transaction refused: " + "; ".join(problems))
