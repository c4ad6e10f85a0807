"""``paylake train fraud|logs``, ``paylake drift``: the models."""

from __future__ import annotations

from typing import Annotated

import typer

from paylake.cli.base import app, expected_failures, needs
from paylake.report import console, summary_table

train_app = typer.Typer(help="Train the models on the lake (Ray Train), track and register them (MLflow).",
                        no_args_is_help=True)
app.add_typer(train_app, name="train")


@train_app.command("fraud")
@expected_failures
@needs('s3', 'mlflow', 'ray')
def train_fraud_command(
    workers: Annotated[int, typer.Option(help="Ray Train workers training one model.")] = 2,
    maturity_days: Annotated[int, typer.Option(help="Label maturity: payments younger than this at the label "
                                               "snapshot leave every window (their label is not known).")] = 30,
    test_fraction: Annotated[float, typer.Option(help="Share of the labelled days in the test window (the last "
                                                 "ones).")] = 0.15,
    valid_fraction: Annotated[float, typer.Option(help="Share of the days before it for validation.")] = 0.15,
    max_fpr: Annotated[float, typer.Option(help="Threshold rule: at most this share of legitimate payments "
                                           "flagged (on validation).")] = 0.01,
    min_frauds: Annotated[int, typer.Option(help="Each window (train, validation, test) holds at least this "
                                            "many frauds, or training stops.")] = 10,
    min_legitimate: Annotated[int, typer.Option(help="... and at least this many legitimate payments.")] = 100,
) -> None:
    """LightGBM fraud model on Ray Train: time split, MLflow tracking, registry alias moved only on improvement."""
    import datetime as dt

    from paylake.ml.fraud.training import TrainOptions, train_fraud
    from paylake.settings import load_settings

    options = TrainOptions(num_workers=workers, maturity=dt.timedelta(days=maturity_days),
                           test_fraction=test_fraction, valid_fraction=valid_fraction, max_fpr=max_fpr,
                           min_window_frauds=min_frauds, min_window_legitimate=min_legitimate)
    with console.status("training") as status:
        report = train_fraud(load_settings(), options, progress=lambda m: status.update(m))
    names = ["auc_pr", "roc_auc", "recall_at_1pct_fpr", "precision_at_threshold", "recall_at_threshold",
             "fpr_at_threshold", "ece"]
    test = report.windows["test"]
    models = (("model", f"LightGBM, {options.num_workers} workers"), ("logistic", "logistic regression"),
              ("rules", "amount/velocity rules"))
    console.print(summary_table(
        f"fraud model on the test window {test.first}..{test.last} ({test.frauds:,} frauds, {test.legitimate:,} "
        f"legitimate)", ["metric", *[label for _, label in models]],
        [(n, *[f"{report.metrics[key][n]:.4f}" for key, _ in models]) for n in names]))
    low, high = report.auc_pr_interval
    console.print(f"labels as of {report.labels_as_of:%Y-%m-%d %H:%M} (the newest status change extracted), "
                  f"{options.maturity.days}-day maturity; " + "; ".join(str(w) for w in report.windows.values()),
                  highlight=False)
    console.print(f"test AUC-PR {report.metrics['model']['auc_pr']:.4f} [{low:.4f}, {high:.4f}] (day-block "
                  f"bootstrap, 95 %); calibrated on validation: ECE {report.metrics['model']['ece_uncalibrated']:.4f}"
                  f" -> {report.metrics['model']['ece']:.4f} on the test window", highlight=False)
    console.print(f"{report.model_name} v{report.version} → alias {report.alias} ({report.alias_reason}); "
                  f"threshold {report.threshold:.4f} (≤ {max_fpr:.1%} of legitimate payments on validation); "
                  f"feature table version {report.feature_version}; best round {report.best_iteration}; "
                  f"Ray Train {report.train_seconds:.1f} s; MLflow run {report.run_id}", highlight=False)


@train_app.command("logs")
@expected_failures
@needs('s3', 'mlflow', 'ray')
def train_logs_command(
    workers: Annotated[int, typer.Option(help="Ray Train (TorchTrainer, DDP) workers.")] = 2,
    window: Annotated[list[int] | None, typer.Option(help="Window h to try (repeat the option); the best on "
                                                   "validation is kept.")] = None,
    epochs: Annotated[int, typer.Option(help="Training epochs per window.")] = 30,
    checkpoints_in_lake: Annotated[bool, typer.Option(help="Ray Train checkpoints under <lake_root>/checkpoints/ "
                                                      "(the lake's object store) instead of a local folder.")] = False,
    false_alert_budget: Annotated[float, typer.Option(help="False alerts per 1,000 normal sessions the choice of g, "
                                                      "the end threshold and min lines may spend.")] = 10.0,
    production_mix: Annotated[float, typer.Option(help="Anomalous share of real sessions, for the precision "
                                                  "reported.")] = 0.001,
    ignore_labels: Annotated[bool, typer.Option("--ignore-labels", help="Treat the sessions as real logs (no "
                                                "label): chosen and promoted on false alerts alone.")] = False,
) -> None:
    """Log-sequence anomaly model (LSTM next-key, DeepLog) on the normal database sessions of silver."""
    from paylake.ml.logs.model import LogTrainOptions, train_logs
    from paylake.settings import load_settings

    options = LogTrainOptions(num_workers=workers, epochs=epochs, checkpoints_in_lake=checkpoints_in_lake,
                              false_alert_budget=false_alert_budget, production_mix=production_mix,
                              ignore_labels=ignore_labels, **({"windows": tuple(window)} if window else {}))
    settings = load_settings()
    with console.status("training") as status:
        report = train_logs(settings, options, progress=lambda m: status.update(m))
    names = ["false_alerts_per_1000", "false_alerts_per_1000_high", "recall", "precision_at_mix",
             "precision_at_mix_low", "sessions", "anomalous"]
    console.print(summary_table(
        f"log-sequence model, h={report.window}, g={report.top_g}, min lines {report.min_lines} (chosen on "
        f"validation within {false_alert_budget:g} false alerts per 1,000 normal sessions; precision at "
        f"{production_mix:g} anomalous), {report.vocabulary_size} keys"
        + ("" if report.labelled else "; no labels: false alerts only"), ["metric", "validation", "test (held out)"],
        [(n, f"{report.valid[n]:.4f}", f"{report.test[n]:.4f}") for n in names]))
    if report.labelled:
        console.print(summary_table(
            "test sessions flagged, per scenario", ["scenario", "flagged", "sessions", "without an unknown key"],
            [(k, hit, total, "{}/{}".format(*report.per_scenario_known.get(k, (0, 0))))
             for k, (hit, total) in sorted(report.per_scenario.items())]))
    skipped = ", ".join(f"{v} {k}" for k, v in report.skipped.items()) or "none"
    console.print(f"{report.model_name} v{report.version} → alias {report.alias} ({report.alias_reason}); "
                  f"sessions train/valid/test {report.sessions['train']}/{report.sessions['valid']}/"
                  f"{report.sessions['test']}; skipped: {skipped}; Ray Train {report.train_seconds:.1f} s; "
                  f"MLflow run {report.run_id}", highlight=False)
    print(f"sessions (test): {report.test['false_alerts_per_1000']:.1f} false alerts per 1,000 normal sessions, "
          f"recall {report.test['recall']:.4f}, precision at {production_mix:g} anomalous "
          f"{report.test['precision_at_mix']:.4f} (at worst {report.test['precision_at_mix_low']:.4f}, from the "
          "false-alert rate's upper bound)")


@app.command("drift")
@expected_failures
@needs('s3', 'mlflow', 'ray')
def drift_command(
    window_days: Annotated[int, typer.Option(help="The current window: the last N days of the feature "
                                             "table.")] = 7,
    drift_share: Annotated[float, typer.Option(help="Share of drifted feature columns that advises "
                                               "retraining.")] = 0.3,
    served_days: Annotated[float, typer.Option(help="Served scores of the last N days (wall time) are compared "
                                               "with the reference.")] = 7,
    served_since: Annotated[str | None, typer.Option(help="Instead: served scores since this ISO time (UTC), e.g. "
                                                     "the last promotion.")] = None,
) -> None:
    """Evidently drift of the latest features, the champion's scores (offline and served) and matured labels vs the
    training reference."""
    import datetime as dt

    from paylake.ml.fraud.drift import DriftOptions, run_drift
    from paylake.settings import load_settings

    since = None
    if served_since:
        try:
            since = dt.datetime.fromisoformat(served_since)
        except ValueError:
            raise typer.BadParameter(f"not an ISO time: {served_since!r}", param_hint="--served-since") from None
        since = since if since.tzinfo else since.replace(tzinfo=dt.UTC)
    options = DriftOptions(window=dt.timedelta(days=window_days), drift_share=drift_share,
                           served_window=dt.timedelta(days=served_days), served_since=since)
    with console.status("comparing the latest window with the training reference"):
        report = run_drift(load_settings(), options)
    rows = [(column, "drifted" if d["drifted"] else "-", d["method"], f"{d['score']:.3f}")
            for column, d in sorted(report.columns.items(), key=lambda item: -item[1]["score"])]
    console.print(summary_table(f"feature drift: {report.current_rows:,} current vs {report.reference_rows:,} "
                                "reference rows", ["column", "decision", "method", "score"], rows))
    scores = {None: "no champion to score with", True: "drifted", False: "stable"}[report.score_drifted]
    labels = ("no matured window yet" if report.label_drift is None else
              f"{'drifted' if report.label_drift.get('drifted') else 'stable'} (fraud share "
              f"{report.label_drift['matured_rate']:.4f} vs {report.label_drift['reference_rate']:.4f}, "
              f"p = {report.label_drift['p_value']:.3g})")
    perf = report.performance
    performance = ("not measured (no champion, or no matured window with both classes)" if perf is None else
                   f"{'dropped' if perf['dropped'] else 'held'}: matured AUC-PR {perf['auc_pr']:.3f} "
                   f"[{perf['auc_pr_interval'][0]:.3f}, {perf['auc_pr_interval'][1]:.3f}] vs "
                   f"{perf['tested_auc_pr'] if perf['tested_auc_pr'] is not None else float('nan'):.3f} tested; "
                   f"recall at threshold {perf['recall_at_threshold']:.3f} [{perf['recall_interval'][0]:.3f}, "
                   f"{perf['recall_interval'][1]:.3f}] ({perf['frauds']} frauds)")
    console.print(f"drifted feature columns: {report.drifted_share:.0%} (threshold {drift_share:.0%}); scores: "
                  f"{scores}; labels: {labels}; performance: {performance}; served scores: "
                  f"{_served_verdict(report.served)}; report: {report.location}", highlight=False)
    if report.retrain_advised:
        console.print("[bold yellow]verdict: retraining advised[/] (paylake train fraud)")
        raise typer.Exit(3)
    console.print("[green]verdict: no retraining needed[/]")


def _served_verdict(served: dict | None) -> str:
    if served is None:
        return "none served by the champion's version in the window"
    state = {None: "too few to compare", True: "drifted", False: "stable"}[served.get("drifted")]
    skew = served["skew"]
    skew_text = ("no served payment in the feature table yet" if not skew["matched"] else
                 f"skew on {skew['matched']:,} payment(s) also in the feature table: max |served - batch| "
                 f"{skew['max_abs_diff']:.2g}" + (f", [bold red]{skew['over_tolerance']} over tolerance[/]"
                                                   if skew["over_tolerance"] else ""))
    return (f"{state} ({served['rows']:,} from v{served['model_version']}, mean {served['mean_score']:.4f} vs "
            f"{served['reference_mean_score']:.4f} on the reference; {skew_text})")
