"""The fraud model on the real stack: Ray Train with 2 workers learns as well as 1, the
job logs and registers in MLflow, and the champion alias moves only on improvement."""

from __future__ import annotations

import dataclasses
import uuid

import numpy as np
import pytest
from mlflow import MlflowClient
from sklearn.metrics import average_precision_score
from startup import PHASES, startup_phases

from paylake.ml.fraud.training import (
    Encoding,
    TrainOptions,
    fit_lightgbm,
    threshold_at_fpr,
    time_split,
    train_fraud,
    training_table,
)

OPTIONS = TrainOptions()  # the production defaults: 30-day maturity, both classes in every window


@pytest.fixture(scope="module")
def split(fraud_lake):
    table, version, snapshot = training_table(fraud_lake, OPTIONS)
    parts = time_split(table, OPTIONS.valid_fraction, OPTIONS.test_fraction, OPTIONS.min_window_frauds,
                       OPTIONS.min_window_legitimate)
    return parts, Encoding.fit(parts["train"]), snapshot


def test_the_split_is_by_time_over_matured_days_and_every_window_holds_both_classes(split):
    parts, _, snapshot = split
    assert parts["train"]["datetime"][-1].as_py() < parts["valid"]["datetime"][0].as_py()
    assert parts["valid"]["datetime"][-1].as_py() < parts["test"]["datetime"][0].as_py()
    assert parts["test"]["datetime"][-1].as_py() <= snapshot - OPTIONS.maturity
    for part in parts.values():
        frauds = int(np.sum(part["label"].to_numpy()))
        assert frauds >= OPTIONS.min_window_frauds and part.num_rows - frauds >= OPTIONS.min_window_legitimate


def test_two_hash_sharded_workers_train_a_model_as_good_as_one(fraud_lake, split, trained_fraud):
    """The session's model (``trained_fraud``: 2 Ray Train workers, rows dealt by a hash of the transaction id,
    the same options and split) next to one worker holding every row."""
    parts, encoding, _ = split
    labels = parts["test"]["label"].to_numpy()
    booster, metrics, _ = fit_lightgbm(fraud_lake, parts, encoding, dataclasses.replace(OPTIONS, num_workers=1),
                                       f"test-1-{uuid.uuid4().hex[:6]}")
    assert metrics["best_iteration"] >= 1
    assert metrics["train_rows_on_worker"] == parts["train"].num_rows  # one worker: every training row
    # where the fixed start-up went, from Ray's task events: every phase found, none longer than the whole
    phases = dict(startup_phases(metrics["fit_started_at"], metrics["loop_started_at"],
                                 fraud_lake.ray_dashboard_url))
    assert {p for p, _ in PHASES} <= set(phases), phases
    assert all(0 <= s <= metrics["seconds_startup"] + 0.5 for s in phases.values()), phases
    one = average_precision_score(labels, booster.predict(encoding.matrix(parts["test"])))
    two = trained_fraud.metrics["model"]["auc_pr"]
    assert trained_fraud.rows["test"] == len(labels)  # the same test window
    assert 0 < trained_fraud.metrics["model"]["auc_pr"] < 1 and 0 < trained_fraud.metrics["model"]["roc_auc"] < 1
    base_rate = labels.mean()
    assert one > 3 * base_rate, "the model finds fraud far above chance"
    low, high = trained_fraud.auc_pr_interval
    assert abs(two - one) <= max(0.1, (high - low) / 2), (one, two, low, high)


def test_the_threshold_keeps_false_positives_within_the_rule():
    rng = np.random.default_rng(3)
    scores, labels = rng.random(10_000), (rng.random(10_000) < 0.02).astype(int)
    threshold = threshold_at_fpr(scores, labels, 0.01)
    flagged_legit = ((scores >= threshold) & (labels == 0)).sum() / (labels == 0).sum()
    assert 0.009 <= flagged_legit <= 0.01


def test_the_report_names_its_matured_windows_and_scores_are_calibrated(fraud_lake, trained_fraud):
    report = trained_fraud
    test = report.windows["test"]
    assert test.frauds >= OPTIONS.min_window_frauds and test.legitimate >= OPTIONS.min_window_legitimate
    assert test.last <= (report.labels_as_of - OPTIONS.maturity).date()
    model = report.metrics["model"]
    assert model["ece"] < model["ece_uncalibrated"]  # the Platt map fitted on validation helps on test
    assert 0 < report.threshold < 1
    run = MlflowClient(fraud_lake.mlflow_tracking_uri).get_run(report.run_id)
    assert run.data.params["labels_as_of"] == report.labels_as_of.isoformat()
    assert run.data.metrics["test_frauds"] == test.frauds and run.data.params["shards"] == "hash(transactionid)"
    assert run.data.metrics["test_model_auc_pr_low"] <= model["auc_pr"] <= run.data.metrics["test_model_auc_pr_high"]


def test_the_champion_moves_for_a_better_model_and_stays_for_an_equal_or_a_worse_one(fraud_lake):
    """A weak first version is champion (none yet); a truly better one replaces it; a weak one and an equal
    retrain of the champion (same data, same parameters: a tie) do not."""
    name = f"paylake-fraud-promote-{uuid.uuid4().hex[:6]}"
    weak = dataclasses.replace(OPTIONS, model_name=name, experiment=name, max_rounds=2, num_leaves=2,
                               learning_rate=0.01, early_stopping_rounds=1)
    strong = dataclasses.replace(OPTIONS, model_name=name, experiment=name)
    client = MlflowClient(fraud_lake.mlflow_tracking_uri)

    first = train_fraud(fraud_lake, weak)
    assert (first.version, first.alias, first.alias_reason) == ("1", "champion", "no champion yet")
    better = train_fraud(fraud_lake, strong)
    assert better.alias == "champion", better.alias_reason
    assert "promoted" in better.alias_reason and "day-block bootstrap" in better.alias_reason
    worse = train_fraud(fraud_lake, weak)
    assert worse.alias == "challenger" and "champion stays" in worse.alias_reason, worse.alias_reason
    equal = train_fraud(fraud_lake, strong)
    assert equal.alias == "challenger" and "within noise" in equal.alias_reason, equal.alias_reason
    assert client.get_model_version_by_alias(name, "champion").version == better.version == "2"
    assert client.get_model_version_by_alias(name, "challenger").version == "4"
    run = client.get_run(first.run_id)
    assert run.data.params["feature_table_version"] == str(first.feature_version)
    assert "test_model_auc_pr" in run.data.metrics and "test_logistic_auc_pr" in run.data.metrics
