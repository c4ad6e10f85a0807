"""The synthetic world: reproducible, consistent, with fraud at the configured rate."""

import dataclasses
import os

import numpy as np
import pyarrow.compute as pc
import pytest

from paylake.sources.documents import customer_documents, interaction_documents, review_documents
from paylake.sources.generator import SCALES, STATUS_ID, SeedSpec, generate
from paylake.sources.mongo_model import validate
from paylake.sources.seed import seal_reviews


@pytest.fixture(scope="module")
def tiny():
    return generate(SCALES["tiny"])


@pytest.fixture(scope="module")
def demo():
    return generate(SCALES["demo"])


def test_same_seed_same_world_other_seed_other_world(tiny):
    again = generate(SCALES["tiny"])
    for name in ("customer", "merchant", "product", "device", "payment_method", "transaction", "status_change"):
        assert getattr(again, name).equals(getattr(tiny, name)), name
    other = generate(dataclasses.replace(SCALES["tiny"], seed=8))
    assert not other.transaction.equals(tiny.transaction)


def test_fraud_rate_is_within_the_configured_band(demo):
    rate = demo.stats["fraud_transactions"] / demo.stats["transactions"]
    assert 0.001 <= rate <= 0.01
    scenarios = set(np.unique(demo.scenario)) - {""}
    assert scenarios == {"card_testing", "account_takeover", "collusion", "refund_abuse"}


def test_labels_arrive_after_the_transaction_and_only_for_fraud(demo):
    changes = demo.status_change
    at = changes["ChangedAt"].to_numpy()
    when = changes["DateTime"].to_numpy()
    assert (at > when).all(), "a chargeback cannot precede its transaction"
    status = changes["ToStatusID"].to_numpy()
    fraud_label = np.isin(status, [STATUS_ID["fraudulent"], STATUS_ID["disputed"]])
    ids = changes["TransactionID"].to_numpy()
    assert (demo.scenario[ids[fraud_label] - 1] != "").all()
    assert fraud_label.sum() > 0
    end = np.datetime64(f"{demo.spec.end}T23:59:59")
    assert (at.astype("datetime64[s]") <= end).all(), "labels from the future have not arrived yet"


def test_card_testing_is_bursts_of_small_amounts_on_one_card(demo):
    rows = np.flatnonzero(demo.scenario == "card_testing")
    amounts = demo.transaction["Amount"].take(rows).to_numpy().astype(float)
    assert amounts.max() < 5 * 1.2 / 0.087  # small in EUR, whatever the merchant currency
    cards = demo.transaction["PaymentMethodID"].take(rows).to_numpy()
    merchants = demo.transaction["MerchantID"].take(rows).to_numpy()
    assert len(np.unique(merchants)) > len(np.unique(cards)) * 3, "one card tested on many merchants"


def test_account_takeover_uses_a_device_the_customer_never_used_before(demo):
    rows = np.flatnonzero(demo.scenario == "account_takeover")
    tx = demo.transaction
    for row in rows[:20]:
        customer, device = tx["CustomerID"][row].as_py(), tx["DeviceID"][row].as_py()
        earlier = pc.and_(pc.equal(tx["CustomerID"], customer), pc.equal(tx["DeviceID"], device))
        first = np.flatnonzero(earlier.to_numpy(zero_copy_only=False))[0]
        assert demo.scenario[first] == "account_takeover"


def test_ids_are_consistent_across_tables(tiny):
    tx = tiny.transaction
    assert pc.max(tx["CustomerID"]).as_py() <= tiny.customer.num_rows
    assert pc.max(tx["ProductID"]).as_py() <= tiny.product.num_rows
    assert pc.max(tx["DeviceID"]).as_py() <= tiny.device.num_rows
    # a transaction's product belongs to its merchant
    owner = tiny.product["MerchantID"].to_numpy()[tx["ProductID"].to_numpy() - 1]
    assert (owner == tx["MerchantID"].to_numpy()).all()
    # a transaction's card belongs to its customer
    holder = tiny.payment_method["CustomerID"].to_numpy()[tx["PaymentMethodID"].to_numpy() - 1]
    assert (holder == tx["CustomerID"].to_numpy()).all()
    assert (tx["DateTime"].to_numpy()[1:] >= tx["DateTime"].to_numpy()[:-1]).all(), "ids follow time"


def test_amounts_are_heavy_tailed_and_weekends_busier(demo):
    amounts = demo.transaction["Amount"].to_numpy().astype(float)
    assert np.percentile(amounts, 99) > 8 * np.median(amounts)
    days = demo.transaction["DateTime"].to_numpy().astype("datetime64[D]")
    weekday = (days.view("int64") - 4) % 7
    per_day = np.bincount(weekday, minlength=7) / np.bincount(
        (np.unique(days).view("int64") - 4) % 7, minlength=7)
    assert per_day[5:].mean() > per_day[:5].mean()


def test_documents_satisfy_the_collection_schemas(tiny):
    rng = np.random.default_rng(1)
    reviews = review_documents(tiny, rng)
    keys = {int(d["customerId"]): os.urandom(32) for d in reviews}  # sealed as paylake seed does
    for name, docs in (("Customer", customer_documents(tiny)), ("CustomerReview", seal_reviews(reviews, keys)),
                       ("UserInteractionData", interaction_documents(tiny, rng))):
        assert docs, name
        for doc in docs[:200]:
            assert validate(name, doc) == [], (name, doc)


def test_spec_dates_cover_the_requested_days():
    spec = SeedSpec(customers=10, merchants=5, days=10)
    assert (spec.end - spec.start).days == 9
