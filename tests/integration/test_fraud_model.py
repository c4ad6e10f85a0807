"""The fraud model on the real stack: Ray Train with 2 workers learns as well as 1, the
job logs and registers in MLflow, and the champion alias moves only on improvement."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

import numpy as np
import pytest
from mlflow import MlflowClient
from sklearn.metrics import average_precision_score

from paylake.ml.fraud import (
    Encoding,
    TrainOptions,
    fit_lightgbm,
    threshold_at_fpr,
    time_split,
    train_fraud,
    training_table,
)
from paylake.ml.startup import PHASES, startup_phases

OPTIONS = TrainOptions(maturity=dt.timedelta(days=10), max_rounds=200, early_stopping_rounds=30)


@pytest.fixture(scope="module")
def split(fraud_lake):
    table, version, as_of = training_table(fraud_lake, OPTIONS)
    parts = time_split(table, OPTIONS.valid_fraction, OPTIONS.test_fraction)
    return parts, Encoding.fit(parts["train"])


def test_the_split_is_by_time_and_every_window_holds_frauds(split):
    parts, _ = split
    assert parts["train"]["datetime"][-1].as_py() < parts["valid"]["datetime"][0].as_py()
    assert parts["valid"]["datetime"][-1].as_py() < parts["test"]["datetime"][0].as_py()
    assert all(int(np.sum(p["label"].to_numpy())) > 0 for p in parts.values())


def test_two_workers_train_a_model_as_good_as_one(fraud_lake, split, trained_fraud):
    """The session's model (``trained_fraud``: 2 Ray Train workers, same options and split) next to one worker."""
    parts, encoding = split
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
    base_rate = labels.mean()
    assert one > 3 * base_rate, "the model finds fraud far above chance"
    assert abs(two - one) <= 0.1, (one, two)


def test_the_threshold_keeps_false_positives_within_the_rule():
    rng = np.random.default_rng(3)
    scores, labels = rng.random(10_000), (rng.random(10_000) < 0.02).astype(int)
    threshold = threshold_at_fpr(scores, labels, 0.01)
    flagged_legit = ((scores >= threshold) & (labels == 0)).sum() / (labels == 0).sum()
    assert 0.009 <= flagged_legit <= 0.01


def test_training_registers_and_moves_the_champion_only_on_improvement(fraud_lake, trained_fraud):
    first, name = trained_fraud, trained_fraud.model_name
    assert (first.version, first.alias) == ("1", "champion")
    assert first.metrics["model"]["auc_pr"] > first.metrics["rules"]["auc_pr"] * 0.5
    assert set(first.metrics) == {"model", "logistic", "rules"}

    worse = train_fraud(fraud_lake, dataclasses.replace(OPTIONS, model_name=name, experiment=name, max_rounds=1,
                                                        num_leaves=2, learning_rate=0.01))
    client = MlflowClient(fraud_lake.mlflow_tracking_uri)
    assert worse.alias == "challenger", worse.alias_reason
    assert client.get_model_version_by_alias(name, "champion").version == "1"
    assert client.get_model_version_by_alias(name, "challenger").version == "2"
    run = client.get_run(first.run_id)
    assert run.data.params["feature_table_version"] == str(first.feature_version)
    assert "test_model_auc_pr" in run.data.metrics and "test_logistic_auc_pr" in run.data.metrics
