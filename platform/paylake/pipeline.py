"""The whole DAG, step after step; every step is idempotent, so a failed run
is simply run again. ``jobs/pipeline.py`` submits it to Ray."""

from __future__ import annotations

import time
from dataclasses import dataclass

from paylake.settings import Settings


@dataclass(frozen=True)
class StepResult:
    step: str
    outcome: str
    seconds: float


def run_pipeline(settings: Settings, *, scale: str = "demo", progress=print) -> list[StepResult]:
    """migrate → seed (once) → extract into bronze (creating the CDC slot first) → drain the CDC slot into
    bronze (deletes) → silver + gold star → Snowflake → fraud features + online store → fraud model (once per
    feature version) → drift report → log-sequence model (once per silver/log_session version) → security
    alerts → business queries → smoke checks."""
    from paylake.raycluster import init_ray
    from paylake.smoke import run_smoke
    from paylake.sources.generator import SCALES
    from paylake.sources.migrate import migrate
    from paylake.sources.seed import seed
    from paylake.stores import lake, postgres

    results = []

    def step(name: str, action) -> None:
        progress(f"[pipeline] {name} ...")
        begin = time.perf_counter()
        outcome = action()
        results.append(StepResult(name, outcome, time.perf_counter() - begin))
        progress(f"[pipeline] {name}: {outcome}")

    step("migrate", lambda: f"{len(migrate(settings))} change(s) applied")

    def seed_once() -> str:
        with postgres.connect(settings) as conn:
            (customers,) = conn.execute("select count(*) from oltp.Customer").fetchone()
        if customers:
            return f"already seeded ({customers:,} customers): kept"
        report = seed(settings, SCALES[scale], progress=lambda m: progress(f"[seed] {m}"))
        return (f"{report.rows['oltp.Transaction']:,} transactions, "
                f"{report.stats['fraud_transactions']:,} fraudulent, {report.rows.get('mongo.Log', 0)} log sessions")

    step(f"seed --scale {scale}", seed_once)

    def extract_bronze() -> str:
        from paylake.extract.run import extract

        report = extract(settings)
        changed = [t for t in report.tables if t.mode != "unchanged"]
        quarantined = sum(t.quarantined for t in report.tables)
        return (f"{report.rows_read:,} rows read from {len(report.tables)} sources, {len(changed)} table(s) "
                f"committed, {quarantined} quarantined, {report.rows_read / max(report.seconds, 1e-9):,.0f} rows/s")

    step("extract → bronze", extract_bronze)

    def cdc_drain() -> str:
        from paylake.cdc.stream import catch_up
        from paylake.ml.fraud.online_feed import online_sink

        sink = online_sink(settings)  # the online store, once a first run published it
        total = catch_up(settings, sink=sink)  # until the slot reaches the WAL position of now
        deleted = sum(t.deleted for t in total.tables.values())
        upserted = sum(t.inserted + t.updated for t in total.tables.values())
        return (f"{total.transactions:,} transaction(s), {total.changes:,} change(s): {upserted:,} upserted, "
                f"{deleted:,} deleted in bronze")

    step("cdc → bronze", cdc_drain)

    def star() -> str:
        from paylake.transform.silver import build_silver
        from paylake.transform.star import build_star

        silver, _ = build_silver(settings)
        gold = build_star(settings)
        moved = ", ".join(f"{r.table} {r.state}" for r in gold if r.state != "unchanged") or "unchanged"
        return f"silver: {sum(r.state == 'rebuilt' for r in silver)} of {len(silver)} entities rebuilt; gold: {moved}"

    step("build-star (silver, gold)", star)

    def load() -> str:
        from paylake.warehouse.load import load_star

        results = load_star(settings)
        moved = [r for r in results if r.state != "unchanged"]
        return (f"{len(moved)} table(s) loaded, {sum(r.inserted for r in results):,} inserted, "
                f"{sum(r.updated for r in results):,} updated, reconciled") if moved else "nothing to load"

    step("load → Snowflake", load)

    def fraud_features() -> str:
        from paylake.ml.fraud.feature_build import build_features
        from paylake.ml.fraud.online import RedisOnlineStore, publish_state

        report = build_features(settings)
        as_of = publish_state(settings, RedisOnlineStore(settings))
        built = (f"{report.rows:,} rows, version {report.version}" if report.state == "built"
                 else f"unchanged (version {report.version})")
        return f"gold/features/fraud {built}; online store as of {as_of:%Y-%m-%d %H:%M}"

    step("fraud features + online store", fraud_features)

    def train_once(model: str, param: str, table: str, fit, describe) -> str:
        """Train ``model`` unless a registered version was trained on this version of ``table``."""
        from paylake.errors import PaylakeError
        from paylake.ml.registry import trained_version

        version = lake.table_version(settings, table)
        done = trained_version(settings, model, param, version)
        if done is not None:
            return f"{model} v{done} already trained on version {version} of its training table: kept"
        try:
            return describe(fit())
        except PaylakeError as exc:  # too little history or too few sessions (e.g. a tiny world): say so, go on
            return f"not trained: {exc}"

    def train() -> str:
        from paylake.ml.fraud.feature_build import feature_uri
        from paylake.ml.fraud.training import MODEL_NAME, TrainOptions, train_fraud

        def describe(report) -> str:
            model, logistic, test = report.metrics["model"], report.metrics["logistic"], report.windows["test"]
            low, high = report.auc_pr_interval
            return (f"{MODEL_NAME} v{report.version} ({report.alias}): test AUC-PR {model['auc_pr']:.3f} "
                    f"[{low:.3f}, {high:.3f}] (logistic {logistic['auc_pr']:.3f}, rules "
                    f"{report.metrics['rules']['auc_pr']:.3f}), recall at 1% FPR {model['recall_at_1pct_fpr']:.3f}; "
                    f"test window {test.first}..{test.last}: {test.frauds:,} frauds, {test.legitimate:,} legitimate")

        return train_once(MODEL_NAME, "feature_table_version", feature_uri(settings),
                          lambda: train_fraud(settings, TrainOptions(), progress=lambda m: progress(f"[train] {m}")),
                          describe)

    step("train fraud (Ray Train, MLflow)", train)

    def drift() -> str:
        from paylake.errors import PaylakeError
        from paylake.ml.fraud.drift import run_drift

        try:
            report = run_drift(settings)
        except PaylakeError as exc:  # too little history for a reference: say so, go on
            return f"not measured: {exc}"
        verdict = "retraining advised" if report.retrain_advised else "no retraining needed"
        return (f"{report.drifted_share:.0%} of feature columns drifted over the last 7 days; {verdict}; "
                f"report in {report.location}")

    step("drift (Evidently)", drift)

    def train_logs() -> str:
        from paylake.ml.logs.model import MODEL_NAME, LogTrainOptions, train_logs

        def describe(report) -> str:
            test = report.test
            return (f"{MODEL_NAME} v{report.version} ({report.alias}), h={report.window} g={report.top_g} "
                    f"min lines {report.min_lines} (chosen within {LogTrainOptions().false_alert_budget:g} false "
                    f"alerts per 1,000): held-out {test['false_alerts_per_1000']:.0f} false alerts per 1,000 normal "
                    f"sessions (at most {test['false_alerts_per_1000_high']:.0f}), recall {test['recall']:.3f}, "
                    f"precision at 1 anomalous in 1,000 {test['precision_at_mix']:.3f} (at worst "
                    f"{test['precision_at_mix_low']:.3f}: {test['sessions'] - test['anomalous']:.0f} normal "
                    "sessions bound the false-alert rate only that far)")

        return train_once(MODEL_NAME, "silver_log_session_version", lake.table_uri(settings, "silver", "log_session"),
                          lambda: train_logs(settings, LogTrainOptions(),
                                             progress=lambda m: progress(f"[train logs] {m}")), describe)

    step("train logs (Ray Train, MLflow)", train_logs)

    def monitor_logs() -> str:
        from paylake.errors import PaylakeError
        from paylake.security.alerts import alert_uri, monitor_logs

        try:
            report = monitor_logs(settings)
        except PaylakeError as exc:  # no model yet: say so, go on
            return f"not run: {exc}"
        return (f"{report.new_sessions} new session(s) scored, {len(report.alerts)} alert(s) → "
                f"{alert_uri(settings)} and Snowflake SECURITY_Alert (paylake monitor logs prints them)")

    step("monitor logs (security alerts)", monitor_logs)

    def queries() -> str:
        from paylake.warehouse.queries import list_queries, run_query

        return "; ".join(f"{name}: {run_query(settings, name).num_rows} row(s)" for name in list_queries())

    step("business queries", queries)

    def smoke() -> str:
        init_ray(settings)
        checks = run_smoke(settings)
        failed = [c.service for c in checks if not c.ok]
        if failed:
            from paylake.errors import PaylakeError

            raise PaylakeError("smoke checks failed for " + ", ".join(failed) + ": " +
                               "; ".join(c.detail for c in checks if not c.ok))
        return "postgres, mongo, lake, snowflake, mlflow answered"

    step("smoke", smoke)
    return results
