"""Fraud figures judged honestly (pure logic): labels as of the snapshot with one maturity cut for every
window, both classes in every window, one-class windows refused, a promotion rule that can move, calibrated
probabilities."""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import average_precision_score

from paylake.errors import PaylakeError
from paylake.ml.evaluation import (
    OneClassWindow,
    average_precision,
    day_block_bootstrap,
    two_proportions,
    wilson,
)
from paylake.ml.fraud.labels import CONFIRMATIONS_SQL, DEFAULT_MATURITY, SNAPSHOT_SQL, labelled_sql
from paylake.ml.fraud.scorer import Calibration
from paylake.ml.fraud.training import (
    TrainOptions,
    evaluate,
    expected_calibration_error,
    promotion_decision,
    threshold_at_fpr,
    time_split,
    window_of,
)

START = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)


def world(days: int = 120, per_day: int = 60, fraud_every: int = 40, seed: int = 3):
    """Payments over ``days``; every ``fraud_every``-th is a fraud confirmed 2-30 days later (a confirmation
    after the world's end has not arrived); a few legitimate payments are refunded (status changes too)."""
    rng = np.random.default_rng(seed)
    n = days * per_day
    times = [START + dt.timedelta(seconds=int(s)) for s in np.sort(rng.integers(0, days * 86_400, n))]
    ids = np.arange(1, n + 1)
    fraud = ids % fraud_every == 0
    end = START + dt.timedelta(days=days)
    changes = []
    for i in np.flatnonzero(fraud):
        at = times[i] + dt.timedelta(days=float(rng.uniform(2, 30)))
        if at < end:
            changes.append((int(ids[i]), "fraudulent", "card testing reported by issuer", at))
    for i in np.flatnonzero(~fraud)[::50]:
        at = times[i] + dt.timedelta(days=1)
        if at < end:
            changes.append((int(ids[i]), "refunded", "customer return", at))
    features = pa.table({"transactionid": ids, "datetime": pa.array(times, pa.timestamp("us", tz="UTC")),
                         "amount_eur": rng.random(n)})
    status_change = pa.table({"transactionid": [c[0] for c in changes], "to_status": [c[1] for c in changes],
                              "reason": [c[2] for c in changes],
                              "changed_at": pa.array([c[3] for c in changes], pa.timestamp("us", tz="UTC"))})
    return features, status_change, fraud, end


def labelled(features: pa.Table, status_change: pa.Table, maturity=DEFAULT_MATURITY):
    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    con.register("feature_rows", features)
    con.register("status_change", status_change)
    ((snapshot,),) = con.execute(SNAPSHOT_SQL).fetchall()
    con.execute(f"create view confirmations as {CONFIRMATIONS_SQL}")
    table = con.sql(labelled_sql("feature_rows", "confirmations") + " order by datetime, transactionid",
                    params={"snapshot": snapshot, "cutoff": snapshot - maturity}).to_arrow_table()
    return table, snapshot


def test_immature_days_leave_every_window_and_the_test_window_holds_both_classes():
    features, status_change, fraud, end = world()
    table, snapshot = labelled(features, status_change)
    assert end - dt.timedelta(days=1) < snapshot < end  # the newest status change, not the newest payment
    newest = table["datetime"][-1].as_py()
    assert newest <= snapshot - DEFAULT_MATURITY  # frauds already confirmed in the last 30 days left too
    # every matured row carries its true class: its fraud was confirmed within 30 days, before the snapshot
    truth = fraud[table["transactionid"].to_numpy() - 1]
    assert (table["label"].to_numpy() == truth).all()
    options = TrainOptions()
    parts = time_split(table, options.valid_fraction, options.test_fraction, options.min_window_frauds,
                       options.min_window_legitimate)
    for name, part in parts.items():
        window = window_of(name, part)
        assert window.frauds >= options.min_window_frauds and window.legitimate >= options.min_window_legitimate
    test = window_of("test", parts["test"])
    assert test.last <= (snapshot - DEFAULT_MATURITY).date()
    assert "frauds" in str(test) and f"{test.first:%Y-%m-%d}" in str(test)


def test_the_old_rule_would_have_left_a_test_window_of_frauds_only():
    """The regression: keeping confirmed frauds younger than the maturity fills the last days with them."""
    features, status_change, _, end = world()
    young = features.filter(pa.compute.greater(features["datetime"], pa.scalar(end - dt.timedelta(days=15),
                                                                             pa.timestamp("us", tz="UTC"))))
    table, _ = labelled(young, status_change)
    assert table.num_rows == 0  # the new rule keeps none of them, frauds included


def test_a_window_with_too_few_of_a_class_stops_training_with_its_dates_and_counts():
    features, status_change, _, _ = world(fraud_every=400)
    table, _ = labelled(features, status_change)
    with pytest.raises(PaylakeError, match=r"the (train|valid|test) window \d{4}-\d\d-\d\d\.\.\d{4}-\d\d-\d\d "
                                           r"\(\d+ frauds, [\d,]+ legitimate\) holds too few"):
        time_split(table, 0.15, 0.15, min_frauds=10, min_legitimate=100)


def test_evaluate_and_the_threshold_refuse_a_window_of_one_class():
    scores = np.linspace(0, 1, 50)
    with pytest.raises(OneClassWindow, match="50 fraud"):
        evaluate(scores, np.ones(50, int), 0.5)
    with pytest.raises(OneClassWindow, match="0 fraud"):
        evaluate(scores, np.zeros(50, int), 0.5)
    with pytest.raises(PaylakeError, match="no legitimate"):
        threshold_at_fpr(scores, np.ones(50, int), 0.01)


def test_average_precision_is_scikit_learns_with_ties():
    rng = np.random.default_rng(1)
    for _ in range(20):
        labels = (rng.random(500) < 0.1).astype(int)
        scores = np.round(rng.random(500) + labels * rng.random(), 1)  # many ties
        assert average_precision(labels, scores) == pytest.approx(average_precision_score(labels, scores))


def scored_window(days: int = 20, per_day: int = 300, rate: float = 0.02, seed: int = 5):
    rng = np.random.default_rng(seed)
    labels = (rng.random(days * per_day) < rate).astype(int)
    day = np.repeat(np.arange(days), per_day)
    signal = labels * 1.0
    return labels, day, rng, signal


def test_a_truly_better_model_is_promoted():
    labels, days, rng, signal = scored_window()
    champion = signal * 1.0 + rng.normal(0, 1.0, len(labels))
    challenger = signal * 3.0 + rng.normal(0, 1.0, len(labels))
    t_champ, t_chal = np.quantile(champion[labels == 0], 0.99), np.quantile(challenger[labels == 0], 0.99)
    decision = promotion_decision(labels, days, challenger, champion, t_chal, t_champ, resamples=300)
    assert decision.promote, decision.reason
    assert "promoted" in decision.reason and "day-block bootstrap" in decision.reason


def test_an_equal_model_is_not_promoted_nor_one_within_noise():
    labels, days, rng, signal = scored_window()
    champion = signal * 2.0 + rng.normal(0, 1.0, len(labels))
    threshold = np.quantile(champion[labels == 0], 0.99)
    same = promotion_decision(labels, days, champion.copy(), champion, threshold, threshold, resamples=300)
    assert not same.promote and "within noise" in same.reason
    jitter = champion + rng.normal(0, 0.05, len(labels))  # a retrain that differs by noise only
    noisy = promotion_decision(labels, days, jitter, champion, threshold, threshold, resamples=300)
    assert not noisy.promote, noisy.reason


def test_a_worse_model_is_not_promoted():
    labels, days, rng, signal = scored_window()
    champion = signal * 3.0 + rng.normal(0, 1.0, len(labels))
    worse = signal * 0.5 + rng.normal(0, 1.0, len(labels))
    decision = promotion_decision(labels, days, worse, champion, 0.0, 0.0, resamples=300)
    assert not decision.promote and "-" in decision.reason.split("gain ")[1][:2]


def test_a_better_ranking_whose_recall_at_its_threshold_falls_is_not_promoted():
    labels, days, rng, signal = scored_window()
    champion = signal * 1.0 + rng.normal(0, 1.0, len(labels))
    challenger = signal * 3.0 + rng.normal(0, 1.0, len(labels))
    decision = promotion_decision(labels, days, challenger, champion, np.inf, -np.inf, resamples=300)
    assert not decision.promote and "recall at the threshold falls" in decision.reason


def test_the_bootstrap_resamples_whole_days_and_skips_one_class_draws():
    labels, days, _, _ = scored_window(days=10)
    seen_sizes = set()

    def statistic(rows):
        seen_sizes.add(len(rows) % 300)
        return float(np.mean(labels[rows]))

    low, high = day_block_bootstrap(statistic, labels, days, resamples=200)
    assert seen_sizes == {0}  # every resample is made of whole days
    assert low <= labels.mean() <= high
    with pytest.raises(PaylakeError, match="at least 2 days"):
        day_block_bootstrap(statistic, labels, np.zeros(len(labels)), resamples=10)


def test_calibration_on_validation_lowers_the_error_and_keeps_the_ranking():
    rng = np.random.default_rng(9)
    labels = (rng.random(20_000) < 0.01).astype(int)
    true_p = np.clip(0.002 + 0.5 * labels * rng.random(20_000) + 0.01 * rng.random(20_000), 0, 1)
    raw = np.clip(true_p * 40, 0, 0.999)  # over-stated, as scale_pos_weight makes them
    valid, test = slice(0, 10_000), slice(10_000, None)
    calibration = Calibration.fit(raw[valid], labels[valid])
    calibrated = calibration.apply(raw[test])
    assert expected_calibration_error(calibrated, labels[test]) < expected_calibration_error(raw[test], labels[test]) / 3
    assert np.array_equal(np.argsort(calibrated, kind="stable"), np.argsort(raw[test], kind="stable"))
    assert Calibration.from_json(calibration.to_json()) == calibration
    assert Calibration.from_json(None).apply(np.array([0.3]))[0] == pytest.approx(0.3)


def test_wilson_and_the_two_proportion_test():
    low, high = wilson(0, 50)
    assert low == 0 and 0.05 < high < 0.09
    assert two_proportions(10, 1000, 10, 1000) == pytest.approx(1.0)
    assert two_proportions(40, 1000, 10, 1000) < 0.001
