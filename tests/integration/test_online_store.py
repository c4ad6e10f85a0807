"""The online store on the stack's Redis server: records idempotent by transaction id, deletes undone,
a publish built aside and swapped without blocking reads or erasing later events, concurrent scorers of
one card that never read state without each other, and data kept across a restart of the server."""

from __future__ import annotations

import datetime as dt
import threading
import uuid

import pytest

from paylake.ml.fraud.feature_build import silver_connection
from paylake.ml.fraud.online import RedisOnlineStore, publish_state, transactions_features
from paylake.stores.online import drop_prefix


@pytest.fixture
def store(fraud_lake):
    """A published store of its own (its own key prefix on the stack's server), dropped after the test."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    store = RedisOnlineStore(fraud_lake, prefix=prefix)
    as_of = publish_state(fraud_lake, store)
    store.as_of = as_of
    yield store
    store.close()
    drop_prefix(fraud_lake, prefix)


def card(fraud_lake) -> dict:
    """The busiest payment method of the last week of the world, with one of its payments."""
    con = silver_connection(fraud_lake)
    try:
        row = con.sql("""select transactionid, datetime, customerid, merchantid, paymentmethodid, deviceid,
                                locationid, amount_eur from events
                         where paymentmethodid = (select paymentmethodid from events group by 1
                                                  order by count(*) desc limit 1)
                         order by datetime desc limit 1""").to_arrow_table().to_pylist()[0]
    finally:
        con.close()
    return row


def burst(base: dict, n: int, start: dt.datetime, first_id: int) -> list[dict]:
    return [dict(base, transactionid=first_id + i, datetime=start + dt.timedelta(seconds=7 * i),
                 amount_eur=round(1.0 + i * 0.5, 2)) for i in range(n)]


def test_records_are_idempotent_and_a_delete_is_undone(store, fraud_lake):
    base = card(fraud_lake)
    payments = burst(base, 3, store.as_of + dt.timedelta(minutes=5), 10**12)
    probe = dict(payments[-1], transactionid=10**12 + 99, datetime=payments[-1]["datetime"] + dt.timedelta(minutes=1))
    (before,) = transactions_features(store, [probe])
    assert store.record_transactions(payments) == 3
    assert store.record_transactions(payments) == 0, "a payment delivered twice counts once"
    (after,) = transactions_features(store, [probe])
    assert after["pm_n_1h"] == before["pm_n_1h"] + 3
    assert after["pm_sum_1h"] == pytest.approx(before["pm_sum_1h"] + sum(p["amount_eur"] for p in payments))
    assert after["merch_txns_before"] == before["merch_txns_before"] + 3

    assert store.record_confirmations([(payments[0]["transactionid"], base["merchantid"], payments[1]["datetime"])]) == 1
    assert store.record_confirmations([(payments[0]["transactionid"], base["merchantid"], payments[1]["datetime"])]) == 0
    (confirmed,) = transactions_features(store, [probe])
    assert confirmed["merch_frauds_before"] == before["merch_frauds_before"] + 1

    assert store.forget_transactions([payments[1]["transactionid"]]) == 1
    assert store.forget_transactions([payments[1]["transactionid"]]) == 0, "a delete replayed is undone once"
    (forgotten,) = transactions_features(store, [probe])
    assert forgotten["pm_n_1h"] == before["pm_n_1h"] + 2
    assert forgotten["pm_sum_1h"] == pytest.approx(before["pm_sum_1h"] + payments[0]["amount_eur"]
                                                   + payments[2]["amount_eur"])
    assert forgotten["merch_txns_before"] == before["merch_txns_before"] + 2


def test_a_publish_is_swapped_in_without_blocking_reads_or_erasing_later_events(store, fraud_lake):
    base = card(fraud_lake)
    later = burst(base, 4, store.as_of + dt.timedelta(minutes=1), 2 * 10**12)
    store.record_transactions(later)  # after the snapshot: only the live generation has them
    probe = dict(later[-1], transactionid=2 * 10**12 + 99, datetime=later[-1]["datetime"] + dt.timedelta(seconds=1))
    (expected,) = transactions_features(store, [probe])
    old = store.current()

    reads, errors, stop = [], [], threading.Event()

    def reader():
        reader_store = RedisOnlineStore(fraud_lake, prefix=store.prefix)
        while not stop.is_set():
            try:
                reads.append(transactions_features(reader_store, [probe])[0]["pm_n_1h"])
            except Exception as exc:  # noqa: BLE001 - what the test looks for
                errors.append(exc)
        reader_store.close()

    late = burst(base, 1, later[-1]["datetime"] - dt.timedelta(seconds=3), 2 * 10**12 + 50)
    load, during = store._load, []

    def load_then_record(ns, state):  # a payment recorded while the new generation is being built
        load(ns, state)
        during.append(store.record_transactions(late))

    store._load = load_then_record
    thread = threading.Thread(target=reader)
    thread.start()
    try:
        publish_state(fraud_lake, store, store.as_of)  # a backfill: the same snapshot, built aside
    finally:
        stop.set()
        thread.join()
        store._load = load
    during = during[0]

    assert errors == [] and len(reads) > 5, "reads went on while the new generation was built"
    assert during == 1 and set(reads) <= {expected["pm_n_1h"], expected["pm_n_1h"] + 1}, \
        "every read saw a whole generation with the later events"
    assert store.current() != old
    assert not list(store.client.scan_iter(match=f"{store.prefix}:{old}:*", count=1000)), "the old one is dropped"
    (now,) = transactions_features(store, [probe])
    assert now["pm_n_1h"] == expected["pm_n_1h"] + during, "events recorded after the snapshot were kept"


def test_two_scorers_of_one_card_never_read_state_without_each_other(store, fraud_lake):
    """20 payments of one card scored by 2 scorers at once (their own connections: two replicas): each one's
    features equal those of recording the burst one payment at a time in the store's order of recording."""
    base = card(fraud_lake)
    payments = burst(base, 20, store.as_of + dt.timedelta(minutes=10), 3 * 10**12)
    results: dict[int, dict] = {}
    barrier = threading.Barrier(2)

    def scorer(mine: list[dict]) -> None:
        own = RedisOnlineStore(fraud_lake, prefix=store.prefix)
        barrier.wait()
        for txn in mine:
            results[txn["transactionid"]] = transactions_features(own, [txn], record=True)[0]
        own.close()

    threads = [threading.Thread(target=scorer, args=(payments[i::2],)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seqs = sorted(results[p["transactionid"]]["record_seq"] for p in payments)
    assert len(set(seqs)) == 20, "each payment recorded once"

    serial = RedisOnlineStore(fraud_lake, prefix=f"t{uuid.uuid4().hex[:10]}")
    try:
        publish_state(fraud_lake, serial, store.as_of)
        for txn in sorted(payments, key=lambda p: results[p["transactionid"]]["record_seq"]):
            (alone,) = transactions_features(serial, [txn], record=True)
            concurrent = results[txn["transactionid"]]
            for column in ("pm_n_1h", "pm_sum_1h", "pm_n_24h", "cust_n_1h", "dev_n_1h", "merch_txns_before",
                           "pm_distinct_merchants_24h", "new_device"):
                assert concurrent[column] == pytest.approx(alone[column]), (column, txn["transactionid"])
    finally:
        serial.close()
        drop_prefix(fraud_lake, serial.prefix)


def test_the_store_keeps_its_data_across_a_restart(store, fraud_lake, local_stack):
    generation = store.current()
    local_stack.down(["online"])
    local_stack.up(["online"])
    again = RedisOnlineStore(fraud_lake, prefix=store.prefix)
    try:
        assert again.current() == generation
        assert transactions_features(again, [card(fraud_lake)])[0]["cust_n_7d"] >= 0
    finally:
        again.close()
