"""``paylake train fraud``: LightGBM on Ray Train over the feature table, tracked and registered in MLflow.

1. **Data.** One version of ``gold/features/fraud`` (its number is logged), with
   labels as known at the label snapshot (``paylake.ml.fraud.labels``: the
   newest status change extracted; every payment younger than the maturity at
   the snapshot is left out, frauds included), split by *time* into train /
   validation / test (the last matured days are the test window; never a
   random split). Every window holds at least ``min_window_frauds`` frauds and
   ``min_window_legitimate`` legitimate payments, or training stops with one
   line naming the window, its dates and its counts: early stopping, the
   threshold, calibration and promotion all need both classes.
2. **Training.** ``LightGBMTrainer`` (Ray Train V2): N workers train one model
   on their shards of the training set (``tree_learner=data_parallel``,
   ``pre_partition``, LightGBM's network from ``get_network_params``): the
   driver deals the in-memory training rows to the workers by a hash of the
   transaction id (dataset ``train_<rank>``, read with ``get_dataset_shard``;
   Ray Train's streaming split cost 3-5.5 s per fit here), so every worker's
   rows, and the histogram bins LightGBM finds on them, span the whole
   training period rather than one slice of it; the validation set is not split,
   so every worker sees the same early-stopping metric (``average_precision``)
   and stops at the same round. Class imbalance: ``scale_pos_weight`` =
   negatives / positives of the training set. Metrics and the model are
   reported once, at the end (a report is a barrier of every worker).
3. **Calibration and threshold.** A Platt map fitted on the validation window
   makes the output a probability (``paylake.ml.fraud.scorer``; expected
   calibration error on the test window reported before and after). The
   threshold is chosen on validation for the business rule "at most
   ``max_fpr`` of legitimate payments flagged", on the calibrated scale, and
   stored with the model.
4. **Evaluation** on the test window, next to two baselines fitted on the same
   rows: logistic regression on the same features and an amount/velocity rule
   set. AUC-PR (with a day-block bootstrap interval), ROC-AUC, recall at 1 %
   FPR, precision and recall at the threshold, expected calibration error.
   ``evaluate`` refuses a window with one class.
5. **Registry.** The model (signature, input example, its encoding,
   calibration and threshold) is registered as ``paylake-fraud``. Alias
   ``champion`` moves to it only when, on the same matured test window, its
   AUC-PR gain over the champion is above noise (the day-block bootstrap
   interval of the gain lies above 0) *and* its recall at its stored threshold
   is not below the champion's at the champion's; ties and noise keep the
   champion, and the new version becomes ``challenger``.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from paylake import contracts
from paylake.errors import PaylakeError
from paylake.ml import registry
from paylake.ml.evaluation import average_precision, day_block_bootstrap, recall_at, require_both_classes
from paylake.ml.fraud.encoding import Encoding
from paylake.ml.fraud.labels import CONFIRMATIONS_SQL, DEFAULT_MATURITY, SNAPSHOT_SQL, labelled_sql
from paylake.ml.fraud.scorer import Calibration, FraudScorer
from paylake.settings import Settings
from paylake.stores import lake

MODEL_NAME = "paylake-fraud"
EXPERIMENT = "paylake-fraud"


@dataclass(frozen=True)
class TrainOptions:
    num_workers: int = 2
    cpus_per_worker: int = 1  # LightGBM threads of each worker (a worker's CPUs)
    maturity: dt.timedelta = DEFAULT_MATURITY
    valid_fraction: float = 0.15  # of the labelled days, before the test window
    test_fraction: float = 0.15  # the last days
    max_rounds: int = 500
    early_stopping_rounds: int = 40  # 0: no early stopping, every round kept
    learning_rate: float = 0.05
    num_leaves: int = 31
    max_fpr: float = 0.01  # the business rule of the threshold
    min_window_frauds: int = 10  # each of train / validation / test, or training stops
    min_window_legitimate: int = 100
    promotion_resamples: int = 1000  # day-block bootstrap of the AUC-PR gain over the champion
    promotion_level: float = 0.95
    tree_learner: str = "data_parallel"  # with several workers: data_parallel or voting (less network per split)
    model_name: str = MODEL_NAME
    experiment: str = EXPERIMENT


# ----------------------------------------------------------------------------- data
def training_table(settings: Settings, options: TrainOptions) -> tuple[pa.Table, int, dt.datetime]:
    """(matured, labelled feature rows in time order, feature-table version, the label snapshot)."""
    import duckdb

    uri = contracts.FRAUD_FEATURES.uri(settings)
    version = lake.table_version(settings, uri)
    if version is None:
        raise PaylakeError("the feature table gold/features/fraud does not exist: run 'paylake features' first")
    con = duckdb.connect()
    try:
        con.execute("set TimeZone = 'UTC'")
        con.register("feature_rows", lake.dataset(settings, uri, version))
        con.register("status_change", lake.dataset(settings, contracts.silver("status_change").uri(settings)))
        ((snapshot,),) = con.execute(SNAPSHOT_SQL).fetchall()
        if snapshot is None:
            raise PaylakeError("silver holds no status change: no label is known yet (extract and build silver)")
        con.execute(f"create view confirmations as {CONFIRMATIONS_SQL}")
        table = con.sql(labelled_sql("feature_rows", "confirmations") + " order by datetime, transactionid",
                        params={"snapshot": snapshot, "cutoff": snapshot - options.maturity}).to_arrow_table()
    finally:
        con.close()
    if table.num_rows == 0:
        raise PaylakeError(f"no payment is older than the {options.maturity.days}-day label maturity at the label "
                           f"snapshot {snapshot:%Y-%m-%d %H:%M}: seed or extract more history")
    return table, version, snapshot


@dataclass(frozen=True)
class Window:
    """One window of the time split: its first and last day and its class counts."""

    name: str
    first: dt.date
    last: dt.date
    frauds: int
    legitimate: int

    def __str__(self) -> str:
        return (f"{self.name} window {self.first:%Y-%m-%d}..{self.last:%Y-%m-%d} "
                f"({self.frauds:,} frauds, {self.legitimate:,} legitimate)")


def window_of(name: str, table: pa.Table) -> Window:
    import pyarrow.compute as pc

    if table.num_rows == 0:
        return Window(name, dt.date.min, dt.date.min, 0, 0)
    frauds = int(pc.sum(table["label"]).as_py() or 0)
    days = pc.cast(table["datetime"], pa.date32())
    return Window(name, pc.min(days).as_py(), pc.max(days).as_py(), frauds, table.num_rows - frauds)


def time_split(table: pa.Table, valid_fraction: float, test_fraction: float, min_frauds: int = 1,
               min_legitimate: int = 1) -> dict[str, pa.Table]:
    """Train / validation / test by date: the test window is the last days, validation the days before.
    Every window must hold at least ``min_frauds`` frauds and ``min_legitimate`` legitimate payments."""
    import pyarrow.compute as pc

    days = pc.unique(pc.cast(table["datetime"], pa.date32())).sort()
    if len(days) < 5:
        raise PaylakeError(f"{len(days)} day(s) of matured, labelled data: a time split needs at least 5 (seed more "
                           "days, or wait for labels to mature)")
    test_from = days[int(len(days) * (1 - test_fraction))].as_py()
    valid_from = days[int(len(days) * (1 - test_fraction - valid_fraction))].as_py()
    date = pc.cast(table["datetime"], pa.date32())
    parts = {"train": table.filter(pc.less(date, pa.scalar(valid_from, pa.date32()))),
             "valid": table.filter(pc.and_(pc.greater_equal(date, pa.scalar(valid_from, pa.date32())),
                                           pc.less(date, pa.scalar(test_from, pa.date32())))),
             "test": table.filter(pc.greater_equal(date, pa.scalar(test_from, pa.date32())))}
    for name, part in parts.items():
        window = window_of(name, part)
        if window.frauds < max(min_frauds, 1) or window.legitimate < max(min_legitimate, 1):
            raise PaylakeError(f"the {window} holds too few of a class: at least {min_frauds:,} frauds and "
                               f"{min_legitimate:,} legitimate payments are needed; seed more days, or change "
                               "--test-fraction / --valid-fraction / --maturity-days")
    return parts


# ----------------------------------------------------------------------------- Ray Train
def _read_shard(name: str) -> pa.Table:
    import ray.train

    return pa.concat_tables(list(ray.train.get_dataset_shard(name).iter_batches(batch_size=None,
                                                                                batch_format="pyarrow")))


def shard_of(keys: np.ndarray, workers: int) -> np.ndarray:
    """The worker of each row: a 64-bit mix (splitmix64's finaliser) of its integer key, modulo ``workers``.
    Deterministic across runs and machines, and unrelated to time: consecutive ids spread evenly."""
    z = np.asarray(keys).astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        z += np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return (z % np.uint64(workers)).astype(np.int64)


def train_shards(table: pa.Table, workers: int, key: str = "transactionid") -> dict[str, pa.Table]:
    """``table`` dealt to ``workers`` by a hash of ``key`` (the row number when the table has no such column):
    ``train_<rank>``, each in the table's order. Contiguous time slices would give each worker the histogram
    bins of one period only."""
    import pyarrow.compute as pc

    keys = table[key].to_numpy() if key in table.column_names else np.arange(table.num_rows)
    rank = pa.array(shard_of(keys, workers))
    return {f"train_{r}": table.filter(pc.equal(rank, r)) for r in range(workers)}


def _train_loop(config: dict) -> None:
    """One worker: its shard of the training set, the whole validation set, one model for all."""
    import lightgbm as lgb
    import ray.train
    from ray.train import Checkpoint
    from ray.train.lightgbm import get_network_params

    started, started_wall = time.perf_counter(), time.time()
    encoding = Encoding.from_json(config["encoding"])
    context = ray.train.get_context()
    train_table = _read_shard(f"train_{context.get_world_rank()}")  # this worker's rows (see fit_lightgbm)
    valid_table = _read_shard("valid")  # the whole validation set on every worker
    categorical = [c for c in encoding.columns if c in encoding.categories]
    dtrain = lgb.Dataset(encoding.matrix(train_table), label=train_table["label"].to_numpy(),
                         categorical_feature=categorical, free_raw_data=False)
    dvalid = lgb.Dataset(encoding.matrix(valid_table), label=valid_table["label"].to_numpy(),
                         categorical_feature=categorical, reference=dtrain)
    loaded = time.perf_counter()  # shards read and encoded (LightGBM bins them inside train: networked)
    params = dict(config["params"])
    if context.get_world_size() > 1:
        params.update({"tree_learner": config["tree_learner"], "pre_partition": True, **get_network_params()})
    params["num_threads"] = int(config["threads"])
    history: dict = {}
    callbacks = [lgb.record_evaluation(history)]
    if config["early_stopping_rounds"] > 0:  # 0: every round is kept (a plain model, for comparisons)
        callbacks.append(lgb.early_stopping(config["early_stopping_rounds"], verbose=False))
    booster = lgb.train(params, dtrain, num_boost_round=config["max_rounds"], valid_sets=[dvalid],
                        valid_names=["valid"],
                        callbacks=callbacks)
    best = booster.best_iteration if config["early_stopping_rounds"] > 0 else booster.current_iteration()
    metrics = {"best_iteration": best, "seconds_data": loaded - started,
               "seconds_train": time.perf_counter() - loaded,
               "valid_average_precision": float(history["valid"]["average_precision"][best - 1]),
               "train_rows_on_worker": train_table.num_rows, "loop_started_at": started_wall,
               "loop_finished_at": time.time()}
    if context.get_world_rank() == 0:
        with tempfile.TemporaryDirectory() as folder:
            booster.save_model(str(Path(folder, "model.txt")), num_iteration=best)
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(folder))
    else:
        ray.train.report(metrics)


def fit_lightgbm(settings: Settings, parts: dict[str, pa.Table], encoding: Encoding, options: TrainOptions,
                 run_name: str, extra_params: dict | None = None):
    """Train on ``parts['train']`` with early stopping on ``parts['valid']`` through Ray Train; returns
    (booster, metrics of rank 0, seconds). ``extra_params`` override LightGBM's parameters."""
    import lightgbm as lgb
    import ray.data
    from ray.train import DataConfig, RunConfig, ScalingConfig
    from ray.train.lightgbm import LightGBMTrainer

    from paylake.raycluster import init_ray

    if parts["train"].num_rows < 20 * options.num_workers:
        raise PaylakeError(f"{parts['train'].num_rows} training row(s) for {options.num_workers} workers: every "
                           "worker needs rows of its own, at least 20 (fewer workers, or more data)")
    init_ray(settings)
    ray.data.DataContext.get_current().enable_progress_bars = False
    positives = int(np.sum(parts["train"]["label"].to_numpy()))
    negatives = parts["train"].num_rows - positives
    params = {"objective": "binary", "metric": "average_precision", "learning_rate": options.learning_rate,
              "num_leaves": options.num_leaves, "min_data_in_leaf": 40, "feature_fraction": 0.9,
              "lambda_l2": 1.0, "scale_pos_weight": negatives / max(positives, 1), "verbose": -1,
              "seed": 7, "deterministic": True, **(extra_params or {})}
    columns = ["label", *encoding.columns]
    # The rows are already in memory: the driver deals the training set to the workers by hash and each
    # worker reads its own (``train_<rank>``) and the whole validation set, so every worker stops at the same
    # round. Ray Train's own split (``DataConfig(datasets_to_split=["train"])``: a split-coordinator actor and
    # a streaming split) cost 3-5.5 s of every fit here, before the first row (bench/README.md).
    datasets = {name: ray.data.from_arrow(shard.select(columns)) for name, shard in
                train_shards(parts["train"], options.num_workers).items()}
    datasets["valid"] = ray.data.from_arrow(parts["valid"].select(columns))
    trainer = LightGBMTrainer(
        _train_loop,
        train_loop_config={"encoding": encoding.to_json(), "params": params, "threads": options.cpus_per_worker,
                           "max_rounds": options.max_rounds, "early_stopping_rounds": options.early_stopping_rounds,
                           "tree_learner": options.tree_learner},
        scaling_config=ScalingConfig(num_workers=options.num_workers,
                                     resources_per_worker={"CPU": options.cpus_per_worker}),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=[]),  # each worker names its own slice
        run_config=RunConfig(name=run_name, storage_path=str(Path(tempfile.gettempdir()) / "paylake-train")),
    )
    begin, begin_wall = time.perf_counter(), time.time()
    result = trainer.fit()
    seconds = time.perf_counter() - begin
    with result.checkpoint.as_directory() as folder:
        booster = lgb.Booster(model_file=str(Path(folder, "model.txt")))
    metrics = dict(result.metrics)  # + where the fixed cost goes: before the loop runs, after it reports
    metrics["seconds_startup"] = metrics["loop_started_at"] - begin_wall
    metrics["seconds_teardown"] = begin_wall + seconds - metrics.pop("loop_finished_at")
    metrics["fit_started_at"] = begin_wall  # with loop_started_at: startup's breakdown
    return booster, metrics, seconds


# ----------------------------------------------------------------------------- evaluation (pure)
def threshold_at_fpr(scores: np.ndarray, labels: np.ndarray, max_fpr: float) -> float:
    """The lowest threshold flagging at most ``max_fpr`` of the legitimate rows (score >= threshold flags)."""
    legit = np.sort(scores[labels == 0])
    if len(legit) == 0:
        raise PaylakeError("no legitimate payment to set a threshold on: the window holds frauds only")
    allowed = int(np.floor(max_fpr * len(legit)))  # legitimate rows that may be flagged
    if allowed == 0:
        return float(np.nextafter(legit[-1], np.inf))
    return float(np.nextafter(legit[len(legit) - allowed - 1], np.inf))


def expected_calibration_error(scores: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    edges = np.linspace(0, 1, bins + 1)
    index = np.clip(np.digitize(scores, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            total += mask.sum() / len(scores) * abs(scores[mask].mean() - labels[mask].mean())
    return float(total)


def evaluate(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """The test figures of ``scores``; a window with one class is refused (``OneClassWindow``)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    require_both_classes(labels, "the evaluation window")
    flagged = scores >= threshold
    positives = max(int(labels.sum()), 1)
    recall_at_1 = float(((scores >= threshold_at_fpr(scores, labels, 0.01)) & (labels == 1)).sum() / positives)
    true_flags = int((flagged & (labels == 1)).sum())
    return {"auc_pr": float(average_precision_score(labels, scores)), "roc_auc": float(roc_auc_score(labels, scores)),
            "recall_at_1pct_fpr": recall_at_1,
            "precision_at_threshold": float(true_flags / max(int(flagged.sum()), 1)),
            "recall_at_threshold": float(true_flags / positives),
            "fpr_at_threshold": float((flagged & (labels == 0)).sum() / max(int((labels == 0).sum()), 1)),
            "ece": expected_calibration_error(scores, labels)}


def rule_scores(table: pa.Table) -> np.ndarray:
    """The amount/velocity rule set a risk team starts with: one point per rule hit."""
    def column(name):
        return table[name].to_numpy(zero_copy_only=False).astype("float64")

    return ((column("amount_to_median") > 5).astype(float) + (column("pm_n_1h") >= 5)
            + (column("pm_distinct_merchants_24h") >= 5) + (column("new_device") * column("foreign_country"))
            + (column("amount_eur") > 1000) + (column("cust_n_24h") >= 10)).astype(float)


def logistic_scores(parts: dict[str, pa.Table], encoding: Encoding) -> np.ndarray:
    """Logistic regression on the same features (one-hot categories, standardised), fitted on train."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def frame(table):
        import pandas as pd

        matrix = encoding.matrix(table)
        dummies = [pd.get_dummies(matrix[c].astype(int).astype("category").cat.set_categories(
            list(range(-1, len(encoding.categories[c])))), prefix=c) for c in encoding.categories]
        numeric = matrix.drop(columns=list(encoding.categories))
        numeric = np.sign(numeric) * np.log1p(np.abs(numeric))
        return pd.concat([numeric, *dummies], axis=1).astype(float).fillna(0.0)

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced", C=0.5))
    model.fit(frame(parts["train"]), parts["train"]["label"].to_numpy())
    return model.predict_proba(frame(parts["test"]))[:, 1]


# ----------------------------------------------------------------------------- promotion (pure)
def days_of(table: pa.Table) -> np.ndarray:
    """Each row's day number (UTC): the blocks of the day-block bootstrap."""
    import pyarrow.compute as pc

    return pc.cast(pc.cast(table["datetime"], pa.date32()), pa.int32()).to_numpy()


def auc_pr_interval(labels: np.ndarray, scores: np.ndarray, days: np.ndarray, resamples: int = 1000,
                    level: float = 0.95):
    """AUC-PR of ``scores`` with its day-block bootstrap interval."""
    from paylake.ml.evaluation import Interval

    low, high = day_block_bootstrap(lambda rows: average_precision(labels[rows], scores[rows]), labels, days,
                                    resamples, level)
    return Interval(average_precision(labels, scores), low, high)


def promotion_decision(labels: np.ndarray, days: np.ndarray, ours: np.ndarray, theirs: np.ndarray,
                       our_threshold: float, their_threshold: float, champion: str = "the champion",
                       resamples: int = 1000, level: float = 0.95) -> registry.Decision:
    """Whether a challenger (``ours``) replaces the champion (``theirs``), both scored on the same matured
    window: its AUC-PR gain must be above noise (the day-block bootstrap interval of the gain lies above 0) and
    its recall at its stored threshold must not fall below the champion's at the champion's."""
    require_both_classes(labels, "the promotion window")
    gain = average_precision(labels, ours) - average_precision(labels, theirs)
    low, high = day_block_bootstrap(
        lambda rows: average_precision(labels[rows], ours[rows]) - average_precision(labels[rows], theirs[rows]),
        labels, days, resamples, level)
    our_recall, their_recall = recall_at(labels, ours, our_threshold), recall_at(labels, theirs, their_threshold)
    figures = (f"AUC-PR gain {gain:+.4f} [{low:+.4f}, {high:+.4f}] over {champion} (day-block bootstrap, "
               f"{level:.0%}), recall at threshold {our_recall:.3f} vs {their_recall:.3f}")
    if low <= 0:
        return registry.Decision(False, f"{figures}: the gain is within noise, the champion stays")
    if our_recall < their_recall:
        return registry.Decision(False, f"{figures}: recall at the threshold falls, the champion stays")
    return registry.Decision(True, f"{figures}: promoted")


# ----------------------------------------------------------------------------- the job
@dataclass
class TrainReport:
    model_name: str
    version: str
    alias: str  # "champion" or "challenger"
    alias_reason: str
    feature_version: int
    labels_as_of: dt.datetime  # the label snapshot
    windows: dict[str, Window]  # train / valid / test: dates and class counts
    threshold: float
    metrics: dict[str, dict[str, float]]  # model / logistic / rules -> metrics on the test window
    auc_pr_interval: tuple[float, float]  # the model's test AUC-PR, day-block bootstrap 95 %
    train_seconds: float
    best_iteration: int
    run_id: str

    @property
    def rows(self) -> dict[str, int]:
        return {k: w.frauds + w.legitimate for k, w in self.windows.items()}

    @property
    def frauds(self) -> dict[str, int]:
        return {k: w.frauds for k, w in self.windows.items()}


def train_fraud(settings: Settings, options: TrainOptions = TrainOptions(), progress=lambda m: None,
                promote_now: bool = True) -> TrainReport:
    """The whole job (see the module docstring). ``promote_now`` False (the pipeline): the version is aliased
    ``candidate`` and its test window logged; the pipeline's promote step decides (``promote_candidate``)."""
    import mlflow
    from mlflow.models import infer_signature

    progress("reading the feature table and the labels")
    table, feature_version, snapshot = training_table(settings, options)
    parts = time_split(table, options.valid_fraction, options.test_fraction, options.min_window_frauds,
                       options.min_window_legitimate)
    windows = {name: window_of(name, part) for name, part in parts.items()}
    encoding = Encoding.fit(parts["train"])
    run_name = f"fraud-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}"
    progress(f"training on {parts['train'].num_rows:,} rows with {options.num_workers} Ray Train worker(s)")
    booster, worker_metrics, seconds = fit_lightgbm(settings, parts, encoding, options, run_name)

    valid_labels = parts["valid"]["label"].to_numpy()
    valid_raw = booster.predict(encoding.matrix(parts["valid"]))
    calibration = Calibration.fit(valid_raw, valid_labels)
    threshold = threshold_at_fpr(calibration.apply(valid_raw), valid_labels, options.max_fpr)
    scorer = FraudScorer(booster, encoding, threshold, calibration, options.model_name)
    test_labels = parts["test"]["label"].to_numpy()
    test_x = encoding.matrix(parts["test"])
    raw = booster.predict(test_x)
    scores = calibration.apply(raw)
    progress("evaluating against logistic regression and the rule set")
    metrics = {"model": {**evaluate(scores, test_labels, threshold),
                         "ece_uncalibrated": expected_calibration_error(raw, test_labels)},
               "logistic": evaluate(logistic_scores(parts, encoding), test_labels, 0.5),
               "rules": evaluate(rule_scores(parts["test"]), test_labels, 2.0)}
    interval = auc_pr_interval(test_labels, scores, days_of(parts["test"]), options.promotion_resamples,
                               options.promotion_level)

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_experiment(options.experiment)
    with mlflow.start_run(run_name=run_name) as run:
        mlflow.log_params({"num_workers": options.num_workers, "cpus_per_worker": options.cpus_per_worker,
                           "learning_rate": options.learning_rate,
                           "num_leaves": options.num_leaves, "max_rounds": options.max_rounds,
                           "best_iteration": worker_metrics.get("best_iteration"), "threshold": threshold,
                           "max_fpr": options.max_fpr, "maturity_days": options.maturity.days,
                           "feature_table": "gold/features/fraud", "feature_table_version": feature_version,
                           "labels_as_of": snapshot.isoformat(), "features": len(encoding.columns),
                           "calibration": calibration.to_json(), "shards": "hash(transactionid)",
                           "train_until": parts["valid"]["datetime"][0].as_py().isoformat(),
                           **{f"{name}_window": f"{w.first}..{w.last}" for name, w in windows.items()}})
        for name, values in metrics.items():
            mlflow.log_metrics({f"test_{name}_{k}": v for k, v in values.items()})
        mlflow.log_metrics({f"{name}_{kind}": getattr(w, kind) for name, w in windows.items()
                            for kind in ("frauds", "legitimate")})
        mlflow.log_metrics({"test_model_auc_pr_low": interval.low, "test_model_auc_pr_high": interval.high})
        mlflow.log_metric("valid_average_precision", worker_metrics.get("valid_average_precision", 0.0))
        mlflow.log_metric("train_seconds", seconds)
        importance = dict(zip(encoding.columns, booster.feature_importance("gain").tolist()))
        mlflow.log_dict(importance, "feature_importance.json")
        mlflow.log_dict({"features": list(encoding.columns), "encoding": json.loads(encoding.to_json()),
                         "threshold": threshold, "calibration": json.loads(calibration.to_json()),
                         "windows": {name: str(w) for name, w in windows.items()},
                         "labels_as_of": snapshot.isoformat()}, "model_card.json")
        with tempfile.TemporaryDirectory() as folder:  # what the promote step scores both versions on
            pq.write_table(parts["test"], f"{folder}/test_window.parquet")
            mlflow.log_artifact(f"{folder}/test_window.parquet", registry.PROMOTION_ARTIFACT)
        example = test_x.head(5)
        info = mlflow.lightgbm.log_model(
            booster, name="model", signature=infer_signature(example, booster.predict(example)),
            input_example=example, registered_model_name=options.model_name,
            metadata={"threshold": threshold, "encoding": encoding.to_json(), "calibration": calibration.to_json(),
                      "feature_table_version": feature_version})
    version = str(info.registered_model_version)
    if promote_now:
        alias, reason = promote(settings, options, version, parts["test"], scorer)
    else:
        registry.set_candidate(settings, options.model_name, version)
        alias, reason = registry.CANDIDATE, "the pipeline's promote step decides"
    return TrainReport(options.model_name, version, alias, reason, feature_version, snapshot, windows, threshold,
                       metrics, (interval.low, interval.high), seconds, int(worker_metrics.get("best_iteration", 0)),
                       run.info.run_id)


def promote_candidate(settings: Settings, options: TrainOptions = TrainOptions()) -> tuple[str, str, str] | None:
    """Decide the ``candidate`` version (champion or challenger) on the test window its training logged, the
    champion scored on the same rows; None when there is no candidate. Returns (version, alias, why)."""
    version = registry.alias_version(settings, options.model_name, registry.CANDIDATE)
    if version is None:
        return None
    window = pq.read_table(registry.promotion_inputs(settings, options.model_name, version, "test_window.parquet"))
    scorer = FraudScorer.load(settings, options.model_name, version)
    alias, reason = promote(settings, options, version, window, scorer)
    registry.clear_candidate(settings, options.model_name)
    return version, alias, reason


def trained_version(settings: Settings, name: str, feature_version: int) -> str | None:
    """The registered version of ``name`` already trained on ``feature_version`` of the feature table, if any."""
    return registry.trained_version(settings, name, "feature_table_version", feature_version)


def promote(settings: Settings, options: TrainOptions, version: str, window: pa.Table,
            ours: FraudScorer) -> tuple[str, str]:
    """Alias ``version``: ``champion`` when ``promotion_decision`` says so on ``window`` (the champion loaded and
    scored there, with its own calibration and threshold), else ``challenger``. Returns (alias, why)."""
    labels, days = window["label"].to_numpy(), days_of(window)

    def decide(_uri: str, current: str) -> registry.Decision:
        theirs = FraudScorer.load(settings, options.model_name, current)
        return promotion_decision(labels, days, ours.scores(window), theirs.scores(window), ours.threshold,
                                  theirs.threshold, f"champion v{current}", options.promotion_resamples,
                                  options.promotion_level)

    return registry.promote(settings, options.model_name, version, decide)
