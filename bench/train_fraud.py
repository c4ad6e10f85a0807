"""Fraud model training through Ray Train next to plain single-process ``lightgbm.train``
with the same parameters on the same rows, in one run.

    .venv/bin/python bench/train_fraud.py [--workers 2] [--cpus-per-worker 1] [--skip-setup-check]

Rows: the labelled feature rows of the ``paylake_bench`` world (bench scale, ≥ 1 M
training rows), time split as ``paylake train fraud`` does. Ray Train's wall time
is split into start-up (controller, worker group, placement), data (shards read
and encoded on the workers) and training proper (LightGBM, binning included);
the plain run into data (encoding) and training. The start-up is broken down from Ray's task
events (``startup``: controller, worker group, train context, datasets). Target: training proper
≤ 1.3x of the plain run's. Early stopping is off in both (a fixed number of
rounds) so both grow the same number of trees.
"""

from __future__ import annotations

import dataclasses
import time

from common import bench_lake, bench_parser, save_result
from startup import startup_phases

from paylake.ml.fraud.feature_build import build_features
from paylake.ml.fraud.training import Encoding, TrainOptions, fit_lightgbm, time_split, training_table
from paylake.report import console, summary_table
from paylake.settings import load_settings

ROUNDS = 200


def main() -> None:
    import lightgbm as lgb
    import numpy as np

    parser = bench_parser(__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cpus-per-worker", type=int, default=1, help="LightGBM threads of each worker")
    parser.add_argument("--tree-learner", default="data_parallel", choices=["data_parallel", "voting"])
    args = parser.parse_args()
    settings = bench_lake(load_settings(), args.skip_setup_check)
    built = build_features(settings)
    console.print(f"feature table: {built.state} ({built.seconds:.1f} s)", style="dim")
    options = dataclasses.replace(TrainOptions(), num_workers=args.workers, cpus_per_worker=args.cpus_per_worker, max_rounds=ROUNDS,
                                  early_stopping_rounds=ROUNDS + 1, tree_learner=args.tree_learner)
    table, version, _ = training_table(settings, options)
    parts = time_split(table, options.valid_fraction, options.test_fraction)
    encoding = Encoding.fit(parts["train"])
    console.print(f"{parts['train'].num_rows:,} training rows, {parts['valid'].num_rows:,} validation rows")

    booster, metrics, total = fit_lightgbm(settings, parts, encoding, options, "bench-train")
    ray_data, ray_train = metrics["seconds_data"], metrics["seconds_train"]
    ray_startup, ray_teardown = metrics["seconds_startup"], metrics["seconds_teardown"]

    begin = time.perf_counter()
    x_train, x_valid = encoding.matrix(parts["train"]), encoding.matrix(parts["valid"])
    y_train = parts["train"]["label"].to_numpy()
    plain_data = time.perf_counter() - begin
    positives = int(np.sum(y_train))
    params = {"objective": "binary", "metric": "average_precision", "learning_rate": options.learning_rate,
              "num_leaves": options.num_leaves, "min_data_in_leaf": 40, "feature_fraction": 0.9, "lambda_l2": 1.0,
              "scale_pos_weight": (len(y_train) - positives) / max(positives, 1), "verbose": -1, "seed": 7,
              "deterministic": True, "num_threads": args.workers * args.cpus_per_worker}
    categorical = list(encoding.categories)
    begin = time.perf_counter()
    lgb.train(params, lgb.Dataset(x_train, label=y_train, categorical_feature=categorical), num_boost_round=ROUNDS,
              valid_sets=[lgb.Dataset(x_valid, label=parts["valid"]["label"].to_numpy(),
                                      categorical_feature=categorical)])
    plain_train = time.perf_counter() - begin

    phases = startup_phases(metrics["fit_started_at"], metrics["loop_started_at"], settings.ray_dashboard_url)
    rows = [("start-up (controller, worker group, until the loop runs)", f"{ray_startup:.1f}", "-", "-"),
            *[(f"  of which {phase}", f"{seconds:.1f}", "-", "-") for phase, seconds in phases],
            ("after the loop (checkpoint, result, worker group stop)", f"{ray_teardown:.1f}", "-", "-"),
            ("data (read shards, encode)", f"{ray_data:.1f}", f"{plain_data:.1f}", f"{ray_data / plain_data:.2f}x"),
            (f"training proper ({ROUNDS} rounds)", f"{ray_train:.1f}", f"{plain_train:.1f}",
             f"{ray_train / plain_train:.2f}x"),
            ("total", f"{total:.1f}", f"{plain_data + plain_train:.1f}",
             f"{total / (plain_data + plain_train):.2f}x")]
    console.print(summary_table(f"bench/train_fraud.py — {parts['train'].num_rows:,} rows, feature version {version}",
                                ["phase", f"Ray Train ({args.workers} × {args.cpus_per_worker} CPU) s",
                                 f"plain lightgbm ({args.workers * args.cpus_per_worker} threads) s", "ratio"], rows))
    console.print(f"rows per worker: {metrics.get('train_rows_on_worker'):,} (rank 0); tree learner "
                  f"{args.tree_learner}")
    rows_trained = parts["train"].num_rows
    save_result("train_fraud", {"train_rows": rows_trained, "rounds": ROUNDS, "seconds": total,
                                "cpus": args.workers * args.cpus_per_worker,
                                "cpu_seconds_per_million_rows": total * args.workers * args.cpus_per_worker
                                / (rows_trained / 1e6)},
                baseline={"what": "plain lightgbm, same threads", "seconds": plain_data + plain_train})
    console.print(f"target: training proper ≤ 1.3x of plain: {ray_train / plain_train:.2f}x")


if __name__ == "__main__":
    main()
