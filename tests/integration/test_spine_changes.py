"""A business day of source changes reaches Snowflake, and the business answers stay
those of PostgreSQL: deleted sales leave gold and Snowflake, sales moved to another
day or merchant leave their old group, deletes made between two pipeline runs are
captured (the first extraction created the CDC slot), and a dimension member deleted
at the source leaves the warehouse without breaking later loads.

Every test starts from the module's pipeline run and ends with the answers equal,
so each passes alone and in any order."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import uuid

import pytest

from paylake import contracts
from paylake.cdc.stream import drain
from paylake.pipeline import run_pipeline
from paylake.sources.generator import SCALES
from paylake.sources.migrate import isolated_sources
from paylake.sources.seed import seed
from paylake.stores import postgres
from paylake.stores import snowflake as snowflake_store
from paylake.transform.silver import build_silver
from paylake.transform.star import build_star
from paylake.warehouse.load import load_star
from tests.integration.business import answers_differ, source_answer, warehouse_answer

RETAIL_FR = "m.industry = 'Retail' and m.country = 'FR'"
CAPTURED = "t.statusid not in (1, 3)"  # not pending, not failed
# three captured retail sales in France vanish (their status history first)
DELETE_THREE_RETAIL_FR_SALES = f"""
    with gone as (select t.transactionid, t.datetime from oltp.transaction t join oltp.merchant m using (merchantid)
                  where {RETAIL_FR} and {CAPTURED} and t.taxamount > 0 order by t.transactionid limit 3),
         history as (delete from oltp.transactionstatechanges x using gone
                     where x.transactionid = gone.transactionid returning 1)
    delete from oltp.transaction t using gone where t.transactionid = gone.transactionid
    and t.datetime = gone.datetime returning t.transactionid, t.datetime"""


@pytest.fixture(scope="module")
def spine(settings, ray_cluster, tmp_path_factory):
    isolated = isolated_sources(settings, "paylake_spine")
    seed(isolated, dataclasses.replace(SCALES["tiny"], log_sessions=4))
    with postgres.connect(isolated) as conn:  # French retailers, small ones among them, for the questions
        conn.execute("update oltp.merchant set industry = 'Retail', country = 'FR' where merchantid in"
                     " (select merchantid from oltp.transaction group by 1 order by count(*) desc limit 4)")
    configured = isolated.model_copy(update={
        "lake_root": str(tmp_path_factory.mktemp("lake")),
        "snowflake_database": f"ANALYTICS_SPINE_{uuid.uuid4().hex[:6].upper()}"})
    run_pipeline(configured, scale="tiny", progress=lambda m: None)
    assert answers_differ(configured) == {}
    return configured


def write(settings, *statements: str) -> list[tuple]:
    """Statements in one transaction, flushed (decoding reads flushed WAL only); all rows of each."""
    with postgres.connect(settings) as conn:
        conn.execute("set local synchronous_commit = on")
        return [conn.execute(s).fetchall() for s in statements]


def cdc_build_load(settings) -> dict:
    """What a user runs after a day of changes: paylake cdc, build-star, load."""
    drain(settings)
    build_silver(settings)
    gold = {r.table: r for r in build_star(settings)}
    loads = {r.table: r for r in load_star(settings)}
    return {"gold": gold, "loads": loads}


def snowflake_rows(settings, sql: str) -> list[tuple]:
    with snowflake_store.connect(settings) as conn:
        cur = conn.cursor()
        cur.execute(sql.format(star=f"{settings.snowflake_database}.STAR"))
        return cur.fetchall()


def snowflake_day_count(settings, at: dt.datetime) -> int:
    """Captured sales of the UTC day of ``at`` in Snowflake's FACT_Revenue."""
    key = int(at.astimezone(dt.UTC).strftime("%Y%m%d"))
    (count,), = snowflake_rows(settings, f"select coalesce(sum(TransactionCount), 0) from {{star}}.FACT_REVENUE"
                                         f" where DateKey = {key}")
    return int(count)


def assert_day_count_equal(settings, at: dt.datetime) -> None:
    with postgres.connect(settings) as conn:
        (expected,) = conn.execute(f"select count(*) from oltp.transaction t where {CAPTURED} and"
                                   " (t.datetime at time zone 'UTC')::date = (%s at time zone 'UTC')::date",
                                   (at,)).fetchone()
    assert snowflake_day_count(settings, at) == expected, at


def test_deleted_moved_and_new_sales_reach_gold_and_snowflake(spine):
    before = source_answer(spine, "monthly_tax_retail_france")
    deleted, moved, remerchanted, inserted = write(
        spine,
        DELETE_THREE_RETAIL_FR_SALES,
        # one moves to a day two years earlier (another partition: a delete and an insert in the WAL)
        f"""update oltp.transaction t set datetime = t.datetime - interval '730 days', updatedat = now()
            from oltp.merchant m where m.merchantid = t.merchantid and (t.transactionid, t.datetime) =
            (select t2.transactionid, t2.datetime from oltp.transaction t2 join oltp.merchant m2 using (merchantid)
             where {RETAIL_FR.replace('m.', 'm2.')} and {CAPTURED.replace('t.', 't2.')} and t2.taxamount > 0
             and not exists (select 1 from oltp.transactionstatechanges x where x.transactionid = t2.transactionid)
             order by t2.transactionid desc limit 1)
            returning t.transactionid, t.datetime""",
        # a credit-card fraud at a small merchant moves to a large one: it leaves the small merchants' count
        """update oltp.transaction t set merchantid = (select merchantid from oltp.merchant where size = 'large'
                                                       order by merchantid limit 1), updatedat = now()
           where (t.transactionid, t.datetime) = (select t2.transactionid, t2.datetime from oltp.transaction t2
               join oltp.merchant m using (merchantid) join oltp.paymentmethod p using (paymentmethodid)
               where m.size = 'small' and p.type = 'Credit Card' and t2.statusid in (5, 6)
               order by t2.transactionid limit 1)
           returning t.transactionid""",
        # a new retail sale in France
        f"""insert into oltp.transaction (datetime, customerid, merchantid, paymentmethodid, deviceid, locationid,
                productid, currencycode, amount, taxamount, feeamount, statusid)
            select t.datetime + interval '1 second', t.customerid, t.merchantid, t.paymentmethodid, t.deviceid,
                   t.locationid, t.productid, t.currencycode, 100.00, 20.00, 1.00, 2
            from oltp.transaction t join oltp.merchant m using (merchantid) where {RETAIL_FR}
            order by t.transactionid limit 1 returning transactionid""")
    assert (len(deleted), len(moved), len(remerchanted), len(inserted)) == (3, 1, 1, 1)
    assert source_answer(spine, "monthly_tax_retail_france") != before, "the day changed the answer"

    run = cdc_build_load(spine)

    assert run["gold"]["FACT_Revenue"].state.startswith("replaced")
    assert answers_differ(spine) == {}
    assert warehouse_answer(spine, "monthly_tax_retail_france") != before
    for at in [at for _, at in deleted] + [moved[0][1]]:
        assert_day_count_equal(spine, at)
    again = cdc_build_load(spine)
    assert {r.state for r in again["loads"].values()} == {"unchanged"}


def test_a_delete_between_two_pipeline_runs_is_gone_from_snowflake(spine):
    (row,), = write(spine, f"""
        with gone as (select t.transactionid, t.datetime, t.taxamount from oltp.transaction t
                      join oltp.merchant m using (merchantid)
                      where {RETAIL_FR} and {CAPTURED} and t.taxamount > 0 order by t.transactionid desc limit 1),
             history as (delete from oltp.transactionstatechanges x using gone
                         where x.transactionid = gone.transactionid returning 1)
        delete from oltp.transaction t using gone where t.transactionid = gone.transactionid
        and t.datetime = gone.datetime returning t.transactionid, t.datetime""")
    _, at = row
    day_before = snowflake_day_count(spine, at)

    steps = {r.step: r.outcome for r in run_pipeline(spine, scale="tiny", progress=lambda m: None)}

    assert int(re.search(r"([\d,]+) deleted in bronze", steps["cdc → bronze"]).group(1)) >= 1
    assert answers_differ(spine) == {}
    assert snowflake_day_count(spine, at) == day_before - 1
    assert_day_count_equal(spine, at)


def test_dimension_members_deleted_at_the_source_leave_snowflake(spine):
    (merchant,), = write(spine, "insert into oltp.merchant (name, industry, size, country, locationid)"
                                " select 'Short-lived', 'Retail', 'small', 'FR', locationid from oltp.merchant"
                                " order by merchantid limit 1 returning merchantid")
    (product,), = write(spine, f"insert into oltp.product (merchantid, name, category, taxrate)"
                               f" values ({merchant[0]}, 'Ephemeral', 'Toys', 0.2) returning productid")
    (location,), = write(spine, "insert into oltp.location (city, region, country, latitude, longitude)"
                                " values ('Nowhere', 'Void', 'FR', 0, 0) returning locationid")
    cdc_build_load(spine)
    members = {"MERCHANT": merchant[0], "PRODUCT": product[0], "LOCATION": location[0]}
    for dim, key in members.items():
        assert snowflake_rows(spine, f"select count(*) from {{star}}.DIM_{dim} where {dim}Key = {key}") == [(1,)]

    write(spine, f"delete from oltp.product where productid = {product[0]} returning 1",
          f"delete from oltp.merchant where merchantid = {merchant[0]} returning 1",
          f"delete from oltp.location where locationid = {location[0]} returning 1")
    run = cdc_build_load(spine)

    for dim, key in members.items():
        assert snowflake_rows(spine, f"select count(*) from {{star}}.DIM_{dim} where {dim}Key = {key}") == [(0,)]
        assert run["loads"][f"DIM_{dim.title()}"].deleted == 1
    assert {r.state for r in cdc_build_load(spine)["loads"].values()} == {"unchanged"}, "later loads converge"
    assert answers_differ(spine) == {}


def test_business_answers_and_load_state_survive_a_warehouse_restart(spine, local_stack):
    answers = {name: warehouse_answer(spine, name) for name in
               ("monthly_tax_retail_france", "daily_credit_card_fraud_small_merchants", "yearly_spend_premium_france")}

    local_stack.down(["snowflake"])
    local_stack.up(["snowflake"])

    assert {name: warehouse_answer(spine, name) for name in answers} == answers
    assert answers_differ(spine) == {}
    assert {r.state for r in load_star(spine)} == {"unchanged"}, "the load state survived with the data"


def test_a_day_of_changes_through_the_users_commands_with_a_publish_between(spine, monkeypatch):
    """What a user runs after a business day: 'paylake cdc', 'features' (an online-store publish), 'extract',
    'build-star', 'load'. Snowflake answers as PostgreSQL does; the online store got the day from the change
    stream, kept it through the publish, and after the next publish its features equal the batch's."""
    import math

    from paylake.ml.fraud import features
    from paylake.ml.fraud.feature_build import build_features
    from paylake.ml.fraud.online import RedisOnlineStore, transactions_features
    from paylake.stores import lake
    from tests.conftest import run_cli

    store = RedisOnlineStore(spine)
    assert store.current() is not None, "the pipeline published the world's online store"
    deleted, new, labelled, moved = write(
        spine,
        DELETE_THREE_RETAIL_FR_SALES,
        """insert into oltp.transaction (datetime, customerid, merchantid, paymentmethodid, deviceid, locationid,
                productid, currencycode, amount, taxamount, feeamount, statusid)
           select (select max(datetime) from oltp.transaction) + make_interval(mins => g), t.customerid,
                  t.merchantid, t.paymentmethodid, t.deviceid, t.locationid, t.productid, t.currencycode,
                  10 + g, 2, 0.3, 2
           from generate_series(1, 50) g
           join lateral (select * from oltp.transaction order by transactionid desc offset g limit 1) t on true
           returning transactionid, datetime, customerid, merchantid, paymentmethodid, deviceid, locationid""",
        """with late as (select transactionid, datetime from oltp.transaction where statusid = 2
                         order by datetime desc offset 60 limit 7),
                marked as (update oltp.transaction t set statusid = 6 from late
                           where t.transactionid = late.transactionid and t.datetime = late.datetime returning 1)
           insert into oltp.transactionstatechanges (transactionid, transactiondatetime, fromstatusid, tostatusid,
                                                     reason, changedby)
           select transactionid, datetime, 2, 6, 'confirmed by the issuer', 'risk-team' from late
           returning transactionid""",
        f"""update oltp.merchant m set country = 'BE', updatedat = now() where merchantid =
            (select merchantid from oltp.merchant m where {RETAIL_FR} order by merchantid limit 1)
            returning merchantid""")
    assert (len(deleted), len(new), len(labelled), len(moved)) == (3, 50, 7, 1)

    cdc = run_cli(spine, monkeypatch, "cdc")
    assert cdc.exit_code == 0, cdc.output
    assert "online store: 50 new payment(s), 7 confirmation(s)" in " ".join(cdc.output.split())
    published = run_cli(spine, monkeypatch, "features")  # silver still holds yesterday: a publish in between
    assert published.exit_code == 0, published.output
    columns = ["transactionid", "datetime", "customerid", "merchantid", "paymentmethodid", "deviceid", "locationid"]
    sales = [dict(zip(columns, row)) for row in new]
    held = store.client.hmget(f"{store.prefix}:{store.current()}:seen", [s["transactionid"] for s in sales])
    assert None not in held, "the day's payments were kept through the publish"
    for command in ("extract", "build-star", "load"):
        result = run_cli(spine, monkeypatch, command)
        assert result.exit_code == 0, (command, result.output)

    assert answers_differ(spine) == {}
    build_features(spine)
    assert run_cli(spine, monkeypatch, "features").exit_code == 0  # the next publish, from today's silver
    batch = {r["transactionid"]: r for r in lake.read_table(spine, contracts.FRAUD_FEATURES.uri(spine)).to_pylist()
             if r["transactionid"] in {s["transactionid"] for s in sales}}
    sales = [dict(s, amount_eur=batch[s["transactionid"]]["amount_eur"]) for s in sales]
    mismatches = {}
    for sale, online in zip(sales, transactions_features(store, sales)):
        for column in features.feature_columns():
            want, got = batch[sale["transactionid"]][column], online[column]
            if not (want == got or (isinstance(want, float) and math.isclose(want, got, rel_tol=1e-9, abs_tol=1e-9))):
                mismatches.setdefault(sale["transactionid"], {})[column] = (want, got)
    assert mismatches == {}
