"""``paylake drift``: is the fraud model still looking at the world it was trained on?

The latest ``window`` of the feature table (*current*) is compared with the
training reference (the feature rows before the champion's validation window,
after the first ``warm_up`` days whose windows lack history; a deterministic
sample), with Evidently (0.7 API): ``DataDriftPreset`` with its tests, one
drift decision per column (Wasserstein distance for numbers, Jensen-Shannon for
categories). Three checks:

- **feature drift**: the monitored feature columns (cumulative counters such as
  a merchant's transactions so far grow by construction and are left out);
- **prediction drift**: the champion's score distribution on both windows;
- **label drift**: the fraud share of the latest *matured* window (the
  ``window`` of payments ending ``maturity`` before the label snapshot, the
  newest status change extracted: ``paylake.ml.fraud.labels``) against the
  reference, by a two-sided two-proportion z-test (significant below
  ``rate_alpha``), once such a window exists;
- **performance** on that matured window, when it holds both classes: the
  champion's AUC-PR with a day-block bootstrap interval and its recall at its
  stored threshold with a Wilson interval, beside the figures it was promoted
  on (its test window, from its MLflow run). A drop is significant when the
  matured window's interval lies wholly below the test figure;
- **served scores** (``gold/serving/fraud_score``, what Ray Serve answered): the
  scores the champion's version served since ``served_since`` (default: the
  last ``served_window`` of wall time) against its scores on the reference, and
  the training-serving skew: for served payments that the feature table now
  holds, the served score against the batch model's score on the batch features
  of the same payment (they differ only when the online features do).

The HTML report and a JSON summary (share of drifted columns, per-column
decision, method and score, the verdict) go to the lake under
``reports/drift/<date>/`` and to MLflow (experiment ``paylake-drift``).
Retraining is advised when the share of drifted feature columns reaches
``drift_share``, the scores (offline or served) drifted, or performance on the
matured window dropped significantly. Skew beyond
``skew_tolerance`` is reported, not a retraining matter: it is a serving bug.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from paylake import contracts
from paylake.errors import PaylakeError
from paylake.ml import registry
from paylake.ml.evaluation import OneClassWindow, recall_at, two_proportions, wilson
from paylake.ml.fraud import features
from paylake.ml.fraud.labels import CONFIRMATIONS_SQL, DEFAULT_MATURITY, SNAPSHOT_SQL
from paylake.ml.fraud.scorer import FraudScorer
from paylake.settings import Settings
from paylake.stores import lake

EXPERIMENT = "paylake-drift"
CUMULATIVE = ("merch_txns_before", "merch_frauds_before", "tenure_days")  # grow with time by construction


@dataclass(frozen=True)
class DriftOptions:
    window: dt.timedelta = dt.timedelta(days=7)
    warm_up: dt.timedelta = dt.timedelta(days=30)  # the longest feature window: no full history before
    drift_share: float = 0.3  # share of drifted feature columns that advises retraining
    reference_rows: int = 50_000
    min_current_rows: int = 200  # fewer payments in the current window tell nothing
    maturity: dt.timedelta = DEFAULT_MATURITY
    model_name: str = "paylake-fraud"
    served_window: dt.timedelta = dt.timedelta(days=7)  # wall time: served records are stamped when scored
    served_since: dt.datetime | None = None  # overrides served_window (e.g. since the last promotion)
    min_served_rows: int = 100  # fewer served scores tell nothing about their distribution
    skew_tolerance: float = 1e-6
    rate_alpha: float = 0.01  # the fraud-rate test's significance level
    bootstrap_resamples: int = 1000


@dataclass
class DriftReport:
    as_of: dt.datetime
    reference_rows: int
    current_rows: int
    drifted_share: float
    columns: dict[str, dict] = field(default_factory=dict)  # column -> {drifted, method, score}
    score_drifted: bool | None = None  # None: no champion model to score with
    label_drift: dict | None = None  # None: no matured window yet
    performance: dict | None = None  # None: no champion, no matured window, or one class in it
    served: dict | None = None  # None: no champion, or no scores served by its version since served_since
    retrain_advised: bool = False
    location: str = ""
    seconds: float = 0.0


def monitored_columns() -> tuple[list[str], list[str]]:
    """(numerical, categorical) feature columns under watch."""
    numerical = [c for c in features.feature_columns() if c not in features.CATEGORICAL and c not in CUMULATIVE]
    return numerical, list(features.CATEGORICAL)


@dataclass(frozen=True)
class Champion:
    scorer: FraudScorer
    version: str
    train_until: dt.datetime | None  # where its training reference ends
    tested: dict[str, float]  # the figures it was registered with (its test window): auc_pr, recall_at_threshold


def _champion(settings: Settings, name: str) -> Champion | None:
    """The champion (scorer, version, training reference end, test figures), or None when there is none."""
    from mlflow import MlflowClient

    version = registry.champion_version(settings, name)
    if version is None:
        return None
    scorer = FraudScorer.load(settings, name, version)
    client = MlflowClient(settings.mlflow_tracking_uri)
    run = client.get_run(client.get_model_version(name, version).run_id)
    until = run.data.params.get("train_until")
    tested = {k: run.data.metrics[f"test_model_{k}"] for k in ("auc_pr", "recall_at_threshold")
              if f"test_model_{k}" in run.data.metrics}
    return Champion(scorer, version, dt.datetime.fromisoformat(until) if until else None, tested)


def _windows(settings: Settings, options: DriftOptions, reference_end: dt.datetime | None):
    import duckdb

    uri = contracts.FRAUD_FEATURES.uri(settings)
    if lake.table_version(settings, uri) is None:
        raise PaylakeError("the feature table gold/features/fraud does not exist: run 'paylake features' first")
    con = duckdb.connect()
    try:
        con.execute("set TimeZone = 'UTC'")
        con.register("feature_rows", lake.dataset(settings, uri))
        con.register("status_change", lake.dataset(settings, contracts.silver("status_change").uri(settings)))
        ((first, as_of),) = con.execute("select min(datetime), max(datetime) from feature_rows").fetchall()
        if as_of is None:
            raise PaylakeError("the feature table is empty")
        ((snapshot,),) = con.execute(SNAPSHOT_SQL).fetchall()
        snapshot = snapshot or first  # no status change yet: no label known
        current_from = as_of - options.window
        reference_from = first + options.warm_up
        reference_to = min(reference_end or current_from, current_from)
        if reference_to - reference_from < options.window:
            raise PaylakeError(f"too little history for a drift reference: {first:%Y-%m-%d} to {as_of:%Y-%m-%d} "
                               f"leaves less than {options.window.days} day(s) after the {options.warm_up.days}-day "
                               "warm-up and before the current window")
        con.execute(f"create view confirmations as {CONFIRMATIONS_SQL}")
        labelled = ("select f.*, (c.confirmed_at is not null and c.confirmed_at <= ?::timestamptz)::integer as label"
                    " from feature_rows f left join confirmations c using (transactionid)")
        reference = con.sql(f"select * from ({labelled}) where datetime >= ?::timestamptz and datetime < "
                            f"?::timestamptz using sample reservoir({int(options.reference_rows)} rows) repeatable (7)",
                            params=[snapshot, reference_from, reference_to]).to_arrow_table()
        current = con.sql(f"select * from ({labelled}) where datetime >= ?::timestamptz",
                          params=[snapshot, current_from]).to_arrow_table()
        matured_to = snapshot - options.maturity
        matured = None
        if matured_to - options.window >= reference_to:
            matured = con.sql(f"select * from ({labelled}) where datetime >= ?::timestamptz and datetime < "
                              "?::timestamptz", params=[snapshot, matured_to - options.window, matured_to]
                              ).to_arrow_table()
    finally:
        con.close()
    return reference, current, matured, as_of


def _served(settings: Settings, options: DriftOptions, scorer: FraudScorer, version: str,
            reference_scores) -> dict | None:
    """The served-score check: distribution against the reference, and training-serving skew."""
    import duckdb
    import numpy as np
    import pandas as pd

    uri = contracts.SERVED_FRAUD_SCORES.uri(settings)
    if lake.table_version(settings, uri) is None:
        return None
    since = options.served_since or dt.datetime.now(dt.UTC) - options.served_window
    # read whole, filtered here: files committed before lake._stats wrote bounds for string columns are
    # dropped by any pushed-down filter on them (see paylake.stores.lake._stats)
    served = lake.dataset(settings, uri).to_table(columns=["transactionid", "model_name", "model_version", "score",
                                                           "scored_at"])
    served = served.filter(pc.and_(pc.equal(served["model_name"], options.model_name), pc.greater_equal(
        served["scored_at"], pa.scalar(since, pa.timestamp("us", tz="UTC")))))
    counts = served.group_by("model_version").aggregate([("score", "count")])
    versions = dict(zip(counts["model_version"].to_pylist(), counts["score_count"].to_pylist()))
    rows = served.filter(pc.equal(served["model_version"], version)).select(["transactionid", "score"])
    if not rows.num_rows:
        return None
    con = duckdb.connect()
    try:
        con.register("served_rows", rows)
        con.register("feature_rows", lake.dataset(settings, contracts.FRAUD_FEATURES.uri(settings)))
        # every served score beside the batch features of its payment (a payment scored twice: both)
        batch = con.sql("select s.score as served_score, f.* from served_rows s join feature_rows f "
                        "using (transactionid)").to_arrow_table()
    finally:
        con.close()
    result = {"since": since.isoformat(), "model_version": version, "rows": rows.num_rows,
              "rows_by_version": {str(k): int(v) for k, v in versions.items()},
              "mean_score": float(pc.mean(rows["score"]).as_py()), "reference_mean_score":
              float(np.mean(reference_scores)), "drifted": None}
    if rows.num_rows >= options.min_served_rows:
        _, decision = _evidently(pd.DataFrame({"score": np.asarray(reference_scores)}),
                                 pd.DataFrame({"score": rows["score"].to_numpy()}), ["score"], [], 1.0)
        result.update(decision.get("score", {}))
    skew = {"matched": 0, "max_abs_diff": None, "over_tolerance": 0}
    if batch.num_rows:
        diffs = np.abs(batch["served_score"].to_numpy() - scorer.scores(batch))
        skew = {"matched": batch.num_rows, "max_abs_diff": float(diffs.max()),
                "over_tolerance": int((diffs > options.skew_tolerance).sum())}
    result["skew"] = skew
    return result


def _label_drift(reference: pa.Table, matured: pa.Table, alpha: float) -> dict:
    """The matured window's fraud rate against the reference's: two-proportion z-test."""
    ref_frauds, mat_frauds = int(pc.sum(reference["label"]).as_py() or 0), int(pc.sum(matured["label"]).as_py() or 0)
    p_value = two_proportions(mat_frauds, matured.num_rows, ref_frauds, reference.num_rows)
    return {"reference_rate": ref_frauds / max(reference.num_rows, 1), "matured_rate": mat_frauds / matured.num_rows,
            "matured_frauds": mat_frauds, "matured_rows": matured.num_rows,
            "matured_rate_interval": list(wilson(mat_frauds, matured.num_rows)), "p_value": p_value,
            "drifted": bool(p_value < alpha)}


def _performance(champion: Champion, matured: pa.Table, options: DriftOptions) -> dict | None:
    """The champion's AUC-PR and recall at its threshold on the matured window, with intervals, against the
    figures it was registered with; None when the window holds one class."""
    import numpy as np

    from paylake.ml.fraud.training import auc_pr_interval, days_of

    labels = matured["label"].to_numpy()
    scores = champion.scorer.scores(matured)
    try:
        auc_pr = auc_pr_interval(labels, scores, days_of(matured), options.bootstrap_resamples)
    except OneClassWindow:
        return None
    frauds = int(np.sum(labels))
    caught = int(np.sum((scores >= champion.scorer.threshold) & (labels == 1)))
    recall_low, recall_high = wilson(caught, frauds)
    tested_auc, tested_recall = champion.tested.get("auc_pr"), champion.tested.get("recall_at_threshold")
    auc_dropped = tested_auc is not None and auc_pr.high < tested_auc
    recall_dropped = tested_recall is not None and recall_high < tested_recall
    return {"frauds": frauds, "rows": matured.num_rows, "auc_pr": auc_pr.estimate,
            "auc_pr_interval": [auc_pr.low, auc_pr.high], "recall_at_threshold": recall_at(
                labels, scores, champion.scorer.threshold), "recall_interval": [recall_low, recall_high],
            "tested_auc_pr": tested_auc, "tested_recall_at_threshold": tested_recall,
            "auc_pr_dropped": auc_dropped, "recall_dropped": recall_dropped, "dropped": auc_dropped or recall_dropped}


def _evidently(reference, current, numerical: list[str], categorical: list[str], drift_share: float):
    """Run Evidently's drift preset with tests; returns (snapshot, {column: decision})."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    columns = numerical + categorical
    report = Report([DataDriftPreset(columns=columns, drift_share=drift_share)], include_tests=True)
    snapshot = report.run(current_data=Dataset.from_pandas(current[columns], data_definition=definition),
                          reference_data=Dataset.from_pandas(reference[columns], data_definition=definition))
    raw = snapshot.json()
    summary = json.loads(raw) if isinstance(raw, str) else raw
    scores = {m["config"].get("column"): (m["config"].get("method"), m["value"]) for m in summary["metrics"]
              if m["config"].get("type", "").endswith("ValueDrift")}
    decisions = {}
    for test in summary.get("tests", []):
        column = test.get("metric_config", {}).get("params", {}).get("column")
        if column in scores:
            method, score = scores[column]
            decisions[column] = {"drifted": test.get("status") != "SUCCESS", "method": method, "score": float(score)}
    return snapshot, decisions


def _frame(table: pa.Table, numerical: list[str], categorical: list[str]):
    frame = table.select([c for c in numerical + categorical if c in table.column_names]).to_pandas()
    for column in categorical:
        frame[column] = frame[column].astype(str)
    return frame


def run_drift(settings: Settings, options: DriftOptions = DriftOptions()) -> DriftReport:
    """The three checks, the report in the lake and MLflow, and the verdict."""
    import mlflow

    begin = time.perf_counter()
    champion = _champion(settings, options.model_name)
    reference, current, matured, as_of = _windows(settings, options, champion.train_until if champion else None)
    if current.num_rows < options.min_current_rows or reference.num_rows < options.min_current_rows:
        raise PaylakeError(f"too few payments to compare: {current.num_rows:,} in the current window (the "
                           f"{options.window.days} day(s) up to {as_of:%Y-%m-%d %H:%M}), {reference.num_rows:,} in the "
                           f"reference; at least {options.min_current_rows:,} each are needed: widen --window-days")
    numerical, categorical = monitored_columns()
    ref_frame, cur_frame = _frame(reference, numerical, categorical), _frame(current, numerical, categorical)
    watched = list(numerical)
    if champion is not None:
        ref_frame["score"] = champion.scorer.scores(reference)
        cur_frame["score"] = champion.scorer.scores(current)
        watched.append("score")
    snapshot, decisions = _evidently(ref_frame, cur_frame, watched, categorical, options.drift_share)
    feature_columns = [c for c in decisions if c != "score"]
    drifted = sum(decisions[c]["drifted"] for c in feature_columns) / max(len(feature_columns), 1)
    report = DriftReport(as_of, reference.num_rows, current.num_rows, drifted,
                         {c: decisions[c] for c in feature_columns})
    if champion is not None and "score" in decisions:
        report.score_drifted = decisions["score"]["drifted"]
    if matured is not None and matured.num_rows:
        report.label_drift = _label_drift(reference, matured, options.rate_alpha)
        if champion is not None:
            report.performance = _performance(champion, matured, options)
    if champion is not None:
        report.served = _served(settings, options, champion.scorer, champion.version, ref_frame["score"])
    served_drifted = bool(report.served and report.served.get("drifted"))
    dropped = bool(report.performance and report.performance["dropped"])
    report.retrain_advised = (drifted >= options.drift_share or bool(report.score_drifted) or served_drifted
                              or dropped)
    report.seconds = time.perf_counter() - begin
    summary = {"as_of": as_of.isoformat(), "reference_rows": report.reference_rows,
               "current_rows": report.current_rows, "drifted_share": drifted, "drift_share_threshold":
               options.drift_share, "columns": report.columns, "score_drifted": report.score_drifted,
               "label_drift": report.label_drift, "performance": report.performance, "served": report.served,
               "retrain_advised": report.retrain_advised}
    report.location = _store(settings, snapshot, summary, as_of)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name=f"drift-{as_of:%Y%m%d}"):
        metrics = {"drifted_share": drifted, "retrain_advised": float(report.retrain_advised)}
        if report.performance:
            metrics.update({"matured_auc_pr": report.performance["auc_pr"],
                            "matured_recall_at_threshold": report.performance["recall_at_threshold"]})
        if report.served:
            metrics["served_rows"] = report.served["rows"]
            if report.served["skew"]["matched"]:
                metrics["served_skew_max_abs_diff"] = report.served["skew"]["max_abs_diff"]
        mlflow.log_metrics(metrics)
        mlflow.log_dict(summary, "drift_summary.json")
        with tempfile.TemporaryDirectory() as folder:
            html = Path(folder, "drift_report.html")
            snapshot.save_html(str(html))
            mlflow.log_artifact(str(html))
    return report


def _store(settings: Settings, snapshot, summary: dict, as_of: dt.datetime) -> str:
    """The HTML report and the JSON summary under ``<lake_root>/reports/drift/<date>/``."""
    base = lake.table_uri(settings, "reports", "drift", f"{as_of:%Y-%m-%d}")
    fs = lake.filesystem(settings)
    path = base.removeprefix("s3://")
    if not settings.lake_is_s3:
        fs.create_dir(path, recursive=True)
    with tempfile.TemporaryDirectory() as folder:
        html = Path(folder, "report.html")
        snapshot.save_html(str(html))
        with fs.open_output_stream(f"{path}/report.html") as sink:
            sink.write(html.read_bytes())
    with fs.open_output_stream(f"{path}/summary.json") as sink:
        sink.write(json.dumps(summary, indent=2, default=str).encode())
    return base
