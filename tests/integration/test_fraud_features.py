"""Fraud features on the real stack: point-in-time correct (a prefix of the data gives the
same features), batch equal to online (the Redis tile store moved forward payment by
payment and confirmation by confirmation), defaults for unknown entities, a clear error
for a bad amount."""

from __future__ import annotations

import datetime as dt
import math
import uuid

import pyarrow.compute as pc
import pytest

from paylake import contracts
from paylake.errors import ContractError
from paylake.ml.fraud import features
from paylake.ml.fraud.feature_build import build_features, silver_connection
from paylake.ml.fraud.labels import CONFIRMATIONS_SQL
from paylake.ml.fraud.online import RedisOnlineStore, publish_state, transaction_features, transactions_features
from paylake.stores import lake


@pytest.fixture(scope="module")
def silver(fraud_lake):
    return fraud_lake


@pytest.fixture(scope="module")
def batch(fraud_lake):
    table = lake.read_table(fraud_lake, contracts.FRAUD_FEATURES.uri(fraud_lake))
    return {row["transactionid"]: row for row in table.to_pylist()}


def same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def differences(expected: dict, actual: dict) -> dict:
    return {k: (expected[k], actual.get(k)) for k in features.feature_columns() if not same(expected[k], actual.get(k))}


def test_every_transaction_gets_every_feature_once(silver, batch):
    con = silver_connection(silver)
    try:
        (transactions,) = con.execute("select count(*) from txn").fetchone()
    finally:
        con.close()
    assert len(batch) == transactions
    row = next(iter(batch.values()))
    assert set(features.feature_columns()) <= set(row)
    again = build_features(silver)
    assert again.state == "unchanged", "unchanged silver commits no new feature version"


def test_features_of_a_prefix_of_the_data_are_the_same(silver, batch):
    """The leak test: features computed from only what happened before T equal those computed
    from everything, for every transaction before T (a feature reading the future would differ)."""
    con = silver_connection(silver)
    try:
        ((cut,),) = con.execute("select quantile_disc(datetime, 0.6) from txn").fetchall()
        con.execute("set variable cut = ?", [cut])
        con.execute("create table events_prefix as select * from events where datetime < getvariable('cut')")
        con.execute("create table tally_prefix as select * from merchant_tally where tally_at < getvariable('cut')")
        con.execute("create table first_seen_prefix as select * from first_seen where seen_at < getvariable('cut')")
        batch_sql = features.feature_sql(target_partitions_only=False)
        prefix = con.sql(batch_sql.replace("from events", "from events_prefix")
                         .replace("from merchant_tally", "from tally_prefix")
                         .replace("from first_seen", "from first_seen_prefix")).to_arrow_table()
        (later_confirmations,) = con.execute(f"select count(*) from ({CONFIRMATIONS_SQL}) c join txn t using"
                                             " (transactionid) where t.datetime < getvariable('cut') and"
                                             " c.confirmed_at >= getvariable('cut')").fetchone()
    finally:
        con.close()
    assert prefix.num_rows > 100 and later_confirmations > 0, "the prefix has rows and labels still to come"
    leaks = {}
    for row in prefix.to_pylist():
        diff = differences(batch[row["transactionid"]], row)
        if diff:
            leaks[row["transactionid"]] = diff
    assert leaks == {}


def test_a_future_event_moved_into_the_past_changes_the_features(silver, batch):
    """The same check the other way round: the features do read the past, so moving one later
    event of the same card just before a transaction changes that transaction's features."""
    con = silver_connection(silver)
    try:
        target, moved, at = con.execute("""
            select a.transactionid, b.transactionid, a.datetime from events a join events b
            on a.paymentmethodid = b.paymentmethodid and b.datetime > a.datetime + interval 2 day
            order by a.datetime limit 1""").fetchall()[0]
        con.execute("create table shifted as select * replace (case when transactionid = ? then ?::timestamptz"
                    " - interval 10 minute else datetime end as datetime) from events", [moved, at])
        shifted = con.sql(features.feature_sql(target_partitions_only=False).replace("from events", "from shifted")
                          ).to_arrow_table()
    finally:
        con.close()
    row = shifted.filter(pc.equal(shifted["transactionid"], target)).to_pylist()[0]
    before = batch[target]
    assert (row["pm_n_1h"], row["pm_n_24h"]) == (before["pm_n_1h"] + 1, before["pm_n_24h"] + 1)


def test_online_features_equal_batch_features_payment_by_payment(silver, batch):
    """Payments and confirmations replayed as the change stream delivers them after a publish: each payment
    scored online (recorded and read in one call, one at a time and in scoring batches: earlier payments of a
    batch are history for later ones) has the batch's features. The day spans hour and day boundaries, so
    reads merge whole tiles with the raw events of the partial hours. (A store of its own: a publish keeps
    what a store recorded after its snapshot.)"""
    store = RedisOnlineStore(silver, prefix=f"replay{uuid.uuid4().hex[:8]}")
    con = silver_connection(silver)
    try:
        ((cut,),) = con.execute("select quantile_disc(datetime, 0.85) from txn").fetchall()
        stream = con.sql(f"""
            select 'txn' as kind, datetime as happened, transactionid, customerid, merchantid, paymentmethodid,
                   deviceid, locationid, amount_eur from events where datetime >= ?::timestamptz
            union all
            select 'fraud', c.confirmed_at, c.transactionid, null, t.merchantid, null, null, null, null
            from ({CONFIRMATIONS_SQL}) c join txn t using (transactionid) where c.confirmed_at >= ?::timestamptz
            order by happened, kind desc limit 400""", params=[cut, cut]).to_arrow_table().to_pylist()
    finally:
        con.close()
    publish_state(silver, store, cut)
    compared, mismatches, pending, sizes = 0, {}, [], []

    def score_pending():
        nonlocal compared
        if not pending:
            return
        for txn, online in zip(pending, transactions_features(store, pending, record=True)):
            diff = differences(batch[txn["transactionid"]], online)
            if diff:
                mismatches[txn["transactionid"]] = diff
            compared += 1
        sizes.append(len(pending))
        pending.clear()

    confirmed = 0
    for number, event in enumerate(stream):
        if event["kind"] == "fraud":
            score_pending()
            confirmed += store.record_confirmations([(event["transactionid"], event["merchantid"],
                                                      event["happened"])])
            continue
        pending.append(dict(event, datetime=event["happened"]))
        if number < 20 or len(pending) == 6:  # the first ones one by one, then batches
            score_pending()
    score_pending()
    assert compared >= 300 and max(sizes) > 1 and min(sizes) == 1
    assert stream[-1]["happened"] - stream[0]["happened"] > dt.timedelta(hours=2)
    assert confirmed > 0, "confirmations were interleaved"
    assert mismatches == {}
    # a retried payment is not counted twice: its features read as before
    again = transactions_features(store, [dict(e, datetime=e["happened"]) for e in stream[-5:]
                                          if e["kind"] == "txn"], record=True)
    assert all(row["record_seq"] is None for row in again)


def test_unknown_entities_get_defaults_and_say_so(silver, batch):
    store = RedisOnlineStore(silver)
    publish_state(silver, store)
    txn = {"transactionid": 10**12, "datetime": dt.datetime.now(dt.UTC), "customerid": 10**9,
           "merchantid": 10**9, "paymentmethodid": 10**9, "deviceid": None, "locationid": None,
           "amount_eur": 12.5}
    row = transaction_features(store, txn)
    assert row["industry"] == "unknown" and row["segment"] == "unknown" and row["pm_type"] == "unknown"
    assert (row["dev_n_24h"], row["new_device"], row["tenure_days"], row["home_distance_km"]) == (0, 0, -1, -1)
    assert set(row["defaulted"]) == {"merchant", "payment_method", "customer", "location", "device"}
    assert row["merch_fraud_rate"] == pytest.approx(features.FRAUD_PRIOR)
    for bad, message in ((-3, "must be positive"), (None, "amount_eur is missing"), ("abc", "must be a number")):
        with pytest.raises(ContractError, match=message):
            transaction_features(store, dict(txn, amount_eur=bad))
