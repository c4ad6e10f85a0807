"""Drift on the real stack: Evidently imports on the locked pandas, a shifted period
(``seed --drift-days``) is flagged with a retraining advice, a same-distribution window
is not, and the report lands in the lake."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid

import pytest

from paylake import contracts
from paylake.extract.run import extract
from paylake.ml.fraud.drift import DriftOptions, run_drift
from paylake.ml.fraud.feature_build import build_features
from paylake.sources.migrate import isolated_sources
from paylake.sources.seed import seed
from paylake.stores import lake
from paylake.transform.silver import build_silver
from tests.conftest import FRAUD_MODEL, fraud_world

OPTIONS = DriftOptions(window=dt.timedelta(days=10), min_current_rows=100)


def test_evidently_imports_on_the_locked_pandas():
    import evidently
    import pandas
    from evidently import Report  # noqa: F401
    from evidently.presets import DataDriftPreset  # noqa: F401

    assert evidently.__version__.startswith("0.7") and pandas.__version__.startswith("2.")


@pytest.fixture(scope="module")
def shifted(settings, ray_cluster, tmp_path_factory):
    """The same world as ``fraud_lake`` with its last 10 days shifted."""
    isolated = isolated_sources(settings, "paylake_drifted")
    seed(isolated, fraud_world(drift_days=10))
    here = isolated.model_copy(update={"lake_root": str(tmp_path_factory.mktemp("drift-lake"))})
    extract(here)
    build_silver(here)
    build_features(here)
    return here


def options_without_model() -> DriftOptions:
    return dataclasses.replace(OPTIONS, model_name=f"no-such-model-{uuid.uuid4().hex[:6]}")


def test_a_stable_window_is_not_flagged(fraud_lake):
    report = run_drift(fraud_lake, options_without_model())
    assert report.current_rows >= 100 and report.reference_rows >= 100
    assert not report.retrain_advised, {c: d for c, d in report.columns.items() if d["drifted"]}
    assert report.drifted_share < OPTIONS.drift_share


def test_a_shifted_window_is_flagged_and_reported_in_the_lake(shifted):
    report = run_drift(shifted, options_without_model())
    assert report.retrain_advised and report.drifted_share >= OPTIONS.drift_share
    assert report.columns["amount_eur"]["drifted"] and report.columns["foreign_country"]["drifted"]
    fs = lake.filesystem(shifted)
    path = report.location.removeprefix("s3://")
    with fs.open_input_stream(f"{path}/summary.json") as source:
        summary = json.loads(source.read())
    assert summary["retrain_advised"] is True and summary["columns"]["amount_eur"]["drifted"] is True
    with fs.open_input_stream(f"{path}/report.html") as source:
        assert b"<html" in source.read(2000).lower()


def _serve_current_window(settings, shift: float = 0.0) -> int:
    """Record what Ray Serve answers for the current window's payments (the champion's scores on their features,
    ``shift`` added), through the service's own recorder; returns the number of records."""
    import duckdb
    import numpy as np

    from paylake.ml.fraud.drift import _champion
    from paylake.serving.records import ScoreRecorder, record

    champion = _champion(settings, FRAUD_MODEL)
    con = duckdb.connect()
    con.register("feature_rows", lake.dataset(settings, contracts.FRAUD_FEATURES.uri(settings)))
    rows = con.sql(f"select * from feature_rows where datetime >= (select max(datetime) from feature_rows) - "
                   f"interval {OPTIONS.window.days} day").to_arrow_table()
    con.close()
    scores = np.clip(champion.scorer.scores(rows) + shift, 0.0, 1.0)
    recorder = ScoreRecorder(settings, every_s=3600)
    for tid, score in zip(rows["transactionid"].to_pylist(), scores.tolist()):
        recorder.add(record(f"drift-test-{tid}", tid, FRAUD_MODEL, champion.version,
                            {"fraud_probability": score, "decision": "review" if score > 0.5 else "approve"}, 0, 1.0))
    recorder.close()
    assert recorder.written == rows.num_rows and recorder.last_error is None
    return rows.num_rows


def test_served_scores_are_compared_with_the_reference_and_skew_is_measured(fraud_lake, trained_fraud):
    options = dataclasses.replace(OPTIONS, model_name=FRAUD_MODEL)
    since = dt.datetime.now(dt.UTC)
    served = _serve_current_window(fraud_lake)
    report = run_drift(fraud_lake, dataclasses.replace(options, served_since=since))
    assert report.served["rows"] == served >= options.min_served_rows
    assert report.served["rows_by_version"] == {report.served["model_version"]: served}
    # served == the batch model on the batch features: the same distribution as the offline check, no skew
    assert report.served["drifted"] is report.score_drifted is False
    assert report.served["skew"]["matched"] == served and report.served["skew"]["over_tolerance"] == 0
    assert report.served["skew"]["max_abs_diff"] < 1e-9

    since = dt.datetime.now(dt.UTC)
    _serve_current_window(fraud_lake, shift=0.4)  # a service whose online features went wrong
    report = run_drift(fraud_lake, dataclasses.replace(options, served_since=since))
    assert report.served["drifted"] is True and report.retrain_advised
    assert report.served["skew"]["over_tolerance"] == report.served["skew"]["matched"] == served
    fs = lake.filesystem(fraud_lake)
    with fs.open_input_stream(f"{report.location.removeprefix('s3://')}/summary.json") as source:
        assert json.loads(source.read())["served"]["skew"]["over_tolerance"] == served


def test_drift_watches_the_champions_performance_on_the_matured_window(fraud_lake, trained_fraud):
    """On the latest matured window: AUC-PR and recall at the threshold with intervals beside the figures the
    champion was registered with, and a two-proportion test of the fraud rate; a scorer that lost its signal is
    a significant drop and advises retraining."""
    import numpy as np

    from paylake.ml.fraud.drift import _champion, _label_drift, _performance, _windows

    options = dataclasses.replace(OPTIONS, model_name=FRAUD_MODEL)
    report = run_drift(fraud_lake, options)
    perf, labels = report.performance, report.label_drift
    assert perf is not None and labels is not None, "the fraud world has a matured window with both classes"
    assert perf["frauds"] >= 1 and perf["auc_pr_interval"][0] <= perf["auc_pr"] <= perf["auc_pr_interval"][1]
    assert perf["tested_auc_pr"] == pytest.approx(trained_fraud.metrics["model"]["auc_pr"])
    assert 0 <= labels["p_value"] <= 1 and labels["matured_rows"] > 0

    champion = _champion(fraud_lake, FRAUD_MODEL)
    reference, _, matured, _ = _windows(fraud_lake, options, champion.train_until)

    class Blind:  # the champion's threshold, scores that no longer rank frauds first
        threshold = champion.scorer.threshold

        @staticmethod
        def scores(table):
            return np.random.default_rng(1).random(table.num_rows) * 1e-3

    blind = dataclasses.replace(champion, scorer=Blind())
    dropped = _performance(blind, matured, options)
    assert dropped["dropped"] and dropped["auc_pr_dropped"] and dropped["recall_at_threshold"] == 0
    # the fraud rate of a window against itself: no change
    assert not _label_drift(reference, reference, options.rate_alpha)["drifted"]
