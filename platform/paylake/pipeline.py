"""The pipeline as steps: a typed list (``STEPS``) run by one small runner, each run recorded in the lake.

    migrate → seed (once, local stack only) → extract → cdc → star (silver, gold) → load → features
    → train-fraud → train-logs → drift → promote → monitor-logs → queries → smoke

Each ``Step`` names what it reads and writes (sources, lake layers, the
warehouse, the registry), what it needs of the cluster (``num_cpus``,
``memory_gb``: checked against the Ray cluster before the run starts) and
whether it is ``optional`` (a failure is recorded and the run goes on). Every
step is idempotent, so a step run again converges to the same state.

``run_pipeline`` writes a record per step to ``runs/pipeline_step``
(``paylake.runs``): ``--only`` / ``--from`` select steps, ``--resume RUN_ID``
starts a run again at its first step not done. A failed step that is not
optional stops the run with its error (``PipelineFailed``: the CLI exits 1 and
names the command that resumes). The training steps register ``candidate`` versions
with the held-out data of their evaluation; the promote step makes each champion or challenger.
``jobs/pipeline.py`` submits it to Ray.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from paylake import contracts, metrics
from paylake.errors import PaylakeError
from paylake.settings import Settings


@dataclass(frozen=True)
class StepOutcome:
    summary: str
    rows: int | None = None  # the step's main row count (read, changed, loaded ...), when it has one
    skipped: bool = False  # nothing to do here (e.g. a tiny world too small to train on): said in the summary


@dataclass
class StepContext:
    settings: Settings
    scale: str
    progress: Callable[[str], None]


@dataclass(frozen=True)
class Step:
    name: str  # what --only / --from take
    title: str
    action: Callable[[StepContext], StepOutcome]
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    num_cpus: float = 1.0  # the cluster must have this many CPUs for the step's Ray work
    memory_gb: float = 1.0
    optional: bool = False  # a failure is recorded and the run goes on
    local_only: bool = False  # only on the local stack (seeding generated data)


@dataclass(frozen=True)
class StepResult:
    step: str  # the step's title
    outcome: str
    seconds: float
    name: str = ""
    state: str = "done"  # done, skipped, failed (optional steps only: a required one raises)
    rows: int | None = None


@dataclass(frozen=True)
class PipelineRun:
    run_id: str
    results: list[StepResult] = field(default_factory=list)

    def __iter__(self):  # a run reads as its step results
        return iter(self.results)


class PipelineFailed(PaylakeError):
    def __init__(self, run_id: str, step: Step, error: BaseException) -> None:
        self.run_id, self.step = run_id, step.name
        super().__init__(f"pipeline run {run_id}: step {step.name} failed: {type(error).__name__}: {error}; "
                         f"once fixed, 'paylake pipeline --resume {run_id}' starts again there")


# ----------------------------------------------------------------------------- the steps
def _migrate(ctx: StepContext) -> StepOutcome:
    from paylake.sources.migrate import migrate

    changes = migrate(ctx.settings)
    return StepOutcome(f"{len(changes)} change(s) applied", len(changes))


def _seed(ctx: StepContext) -> StepOutcome:
    from paylake.sources.generator import SCALES
    from paylake.sources.seed import seed
    from paylake.stores import postgres

    with postgres.connect(ctx.settings) as conn:
        (customers,) = conn.execute("select count(*) from oltp.Customer").fetchone()
    if customers:
        return StepOutcome(f"already seeded ({customers:,} customers): kept", 0)
    report = seed(ctx.settings, SCALES[ctx.scale], progress=lambda m: ctx.progress(f"[seed] {m}"))
    transactions = report.rows["oltp.Transaction"]
    return StepOutcome(f"{transactions:,} transactions, {report.stats['fraud_transactions']:,} fraudulent, "
                       f"{report.rows.get('mongo.Log', 0)} log sessions", transactions)


def _extract(ctx: StepContext) -> StepOutcome:
    from paylake.extract.run import extract

    report = extract(ctx.settings)
    changed = [t for t in report.tables if t.mode != "unchanged"]
    quarantined = sum(t.quarantined for t in report.tables)
    return StepOutcome(f"{report.rows_read:,} rows read from {len(report.tables)} sources, {len(changed)} table(s) "
                       f"committed, {quarantined} quarantined, "
                       f"{report.rows_read / max(report.seconds, 1e-9):,.0f} rows/s", report.rows_read)


def _cdc(ctx: StepContext) -> StepOutcome:
    from paylake.cdc.stream import catch_up, lag
    from paylake.ml.fraud.online_feed import online_sink

    sink = online_sink(ctx.settings)  # the online store, once a first run published it
    total = catch_up(ctx.settings, sink=sink)  # until the slot reaches the WAL position of now
    deleted = sum(t.deleted for t in total.tables.values())
    upserted = sum(t.inserted + t.updated for t in total.tables.values())
    behind, _ = lag(ctx.settings, total.slot)
    return StepOutcome(f"{total.transactions:,} transaction(s), {total.changes:,} change(s): {upserted:,} "
                       f"upserted, {deleted:,} deleted in bronze; slot {behind:,} bytes behind", total.changes)


def _star(ctx: StepContext) -> StepOutcome:
    from paylake.transform.silver import build_silver
    from paylake.transform.star import build_star

    silver, _ = build_silver(ctx.settings)
    gold = build_star(ctx.settings)
    moved = ", ".join(f"{r.table} {r.state}" for r in gold if r.state != "unchanged") or "unchanged"
    return StepOutcome(f"silver: {sum(r.state == 'rebuilt' for r in silver)} of {len(silver)} entities rebuilt; "
                       f"gold: {moved}", sum(r.rows for r in gold if r.state != "unchanged"))


def _load(ctx: StepContext) -> StepOutcome:
    from paylake.warehouse.load import load_star

    results = load_star(ctx.settings)
    moved = [r for r in results if r.state != "unchanged"]
    changed = sum(r.inserted + r.updated for r in results)
    if not moved:
        return StepOutcome("nothing to load", 0)
    return StepOutcome(f"{len(moved)} table(s) loaded, {sum(r.inserted for r in results):,} inserted, "
                       f"{sum(r.updated for r in results):,} updated, reconciled", changed)


def _features(ctx: StepContext) -> StepOutcome:
    from paylake.ml.fraud.feature_build import build_features
    from paylake.ml.fraud.online import RedisOnlineStore, publish_state

    report = build_features(ctx.settings)
    as_of = publish_state(ctx.settings, RedisOnlineStore(ctx.settings))
    built = (f"{report.rows:,} rows, version {report.version}" if report.state == "built"
             else f"unchanged (version {report.version})")
    return StepOutcome(f"gold/features/fraud {built}; online store as of {as_of:%Y-%m-%d %H:%M}",
                       report.rows if report.state == "built" else 0)


def _train_once(ctx: StepContext, model: str, param: str, table: str, fit, describe) -> StepOutcome:
    """Train ``model`` unless a registered version was trained on this version of ``table``."""
    from paylake.ml.registry import trained_version
    from paylake.stores import lake

    version = lake.table_version(ctx.settings, table)
    done = trained_version(ctx.settings, model, param, version)
    if done is not None:
        return StepOutcome(f"{model} v{done} already trained on version {version} of its training table: kept",
                           skipped=True)
    try:
        return StepOutcome(describe(fit()))
    except PaylakeError as exc:  # too little history or too few sessions (e.g. a tiny world): say so, go on
        return StepOutcome(f"not trained: {exc}", skipped=True)


def _train_fraud(ctx: StepContext) -> StepOutcome:

    from paylake.ml.fraud.training import MODEL_NAME, TrainOptions, train_fraud

    def describe(report) -> str:
        model, logistic, test = report.metrics["model"], report.metrics["logistic"], report.windows["test"]
        low, high = report.auc_pr_interval
        return (f"{MODEL_NAME} v{report.version} ({report.alias}): test AUC-PR {model['auc_pr']:.3f} "
                f"[{low:.3f}, {high:.3f}] (logistic {logistic['auc_pr']:.3f}, rules "
                f"{report.metrics['rules']['auc_pr']:.3f}), recall at 1% FPR {model['recall_at_1pct_fpr']:.3f}; "
                f"test window {test.first}..{test.last}: {test.frauds:,} frauds, {test.legitimate:,} legitimate")

    return _train_once(ctx, MODEL_NAME, "feature_table_version", contracts.FRAUD_FEATURES.uri(ctx.settings),
                       lambda: train_fraud(ctx.settings, TrainOptions(),
                                           progress=lambda m: ctx.progress(f"[train] {m}"), promote_now=False),
                       describe)


def _drift(ctx: StepContext) -> StepOutcome:
    from paylake.ml.fraud.drift import run_drift

    try:
        report = run_drift(ctx.settings)
    except PaylakeError as exc:  # too little history for a reference: say so, go on
        return StepOutcome(f"not measured: {exc}", skipped=True)
    verdict = "retraining advised" if report.retrain_advised else "no retraining needed"
    return StepOutcome(f"{report.drifted_share:.0%} of feature columns drifted over the last 7 days; {verdict}; "
                       f"report in {report.location}")


def _train_logs(ctx: StepContext) -> StepOutcome:
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

    return _train_once(ctx, MODEL_NAME, "silver_log_session_version",
                       contracts.LOG_SESSIONS.uri(ctx.settings),
                       lambda: train_logs(ctx.settings, LogTrainOptions(),
                                          progress=lambda m: ctx.progress(f"[train logs] {m}"), promote_now=False),
                       describe)


def _promote(ctx: StepContext) -> StepOutcome:
    """Each model's ``candidate`` (registered by this run's training step, or by an earlier run that stopped
    before this step) becomes champion or challenger on the held-out data its training logged."""
    from paylake.ml.fraud import training as fraud
    from paylake.ml.logs import model as logs

    said = []
    for name, decide in ((fraud.TrainOptions().model_name, lambda: fraud.promote_candidate(ctx.settings)),
                         (logs.LogTrainOptions().model_name, lambda: logs.promote_candidate(ctx.settings))):
        result = decide()
        said.append(f"{name}: no candidate" if result is None else f"{name} v{result[0]} → {result[1]}: {result[2]}")
    return StepOutcome("; ".join(said), skipped=all(s.endswith("no candidate") for s in said))


def _monitor_logs(ctx: StepContext) -> StepOutcome:
    from paylake.security.alerts import monitor_logs

    try:
        report = monitor_logs(ctx.settings)
    except PaylakeError as exc:  # no model yet: say so, go on
        return StepOutcome(f"not run: {exc}", skipped=True)
    return StepOutcome(f"{report.new_sessions} new session(s) scored, {len(report.alerts)} alert(s) → "
                       f"{contracts.SECURITY_ALERTS.uri(ctx.settings)} and Snowflake SECURITY_Alert (paylake monitor logs prints them)",
                       report.new_sessions)


def _queries(ctx: StepContext) -> StepOutcome:
    from paylake.warehouse.queries import list_queries, run_query

    answers = {name: run_query(ctx.settings, name).num_rows for name in list_queries()}
    return StepOutcome("; ".join(f"{name}: {rows} row(s)" for name, rows in answers.items()), sum(answers.values()))


def _smoke(ctx: StepContext) -> StepOutcome:
    from paylake.raycluster import init_ray
    from paylake.smoke import run_smoke

    init_ray(ctx.settings)
    checks = run_smoke(ctx.settings)
    failed = [c.service for c in checks if not c.ok]
    if failed:
        raise PaylakeError("smoke checks failed for " + ", ".join(failed) + ": " +
                           "; ".join(c.detail for c in checks if not c.ok))
    return StepOutcome("postgres, mongo, lake, snowflake, mlflow answered")


STEPS: tuple[Step, ...] = (
    Step("migrate", "migrate", _migrate, reads=("postgres",), writes=("postgres: schema",), num_cpus=0,
         memory_gb=0.2),
    Step("seed", "seed", _seed, writes=("postgres", "mongo"), num_cpus=1, local_only=True),
    Step("extract", "extract → bronze", _extract, reads=("postgres", "mongo"), writes=("lake: bronze",),
         num_cpus=2, memory_gb=2),
    Step("cdc", "cdc → bronze", _cdc, reads=("postgres: replication slot",),
         writes=("lake: bronze", "online store"), num_cpus=0, memory_gb=1),
    Step("star", "build-star (silver, gold)", _star, reads=("lake: bronze",), writes=("lake: silver", "lake: gold"),
         num_cpus=2, memory_gb=3),
    Step("load", "load → Snowflake", _load, reads=("lake: gold",), writes=("snowflake: star",), num_cpus=0,
         memory_gb=1),
    Step("features", "fraud features + online store", _features, reads=("lake: silver",),
         writes=(contracts.FRAUD_FEATURES.path, "online store"), num_cpus=1, memory_gb=2),
    Step("train-fraud", "train fraud (Ray Train, MLflow)", _train_fraud, reads=(contracts.FRAUD_FEATURES.path,),
         writes=("mlflow: paylake-fraud",), num_cpus=2, memory_gb=3),
    Step("train-logs", "train logs (Ray Train, MLflow)", _train_logs, reads=(contracts.LOG_SESSIONS.path,),
         writes=("mlflow: paylake-logseq",), num_cpus=2, memory_gb=2),
    Step("drift", "drift (Evidently)", _drift, reads=(contracts.FRAUD_FEATURES.path, contracts.SERVED_FRAUD_SCORES.path,
                                                      "mlflow: paylake-fraud"),
         writes=("reports/drift/<date>", "mlflow: drift run"), num_cpus=1, memory_gb=2, optional=True),
    Step("promote", "promote (champion or challenger)", _promote, reads=("mlflow: candidates",),
         writes=("mlflow: aliases",), num_cpus=0, memory_gb=1),
    Step("monitor-logs", "monitor logs (security alerts)", _monitor_logs,
         reads=(contracts.LOG_SESSIONS.path, "mlflow: paylake-logseq"),
         writes=(contracts.SECURITY_ALERTS.path, contracts.SCORED_SESSIONS.path, "snowflake: SECURITY_Alert"), num_cpus=1, memory_gb=1),
    Step("queries", "business queries", _queries, reads=("snowflake: star",), num_cpus=0, memory_gb=0.5),
    Step("smoke", "smoke", _smoke, reads=("postgres", "mongo", "lake", "snowflake", "mlflow", "ray"), num_cpus=0,
         memory_gb=0.2),
)
STEP_NAMES = tuple(s.name for s in STEPS)


def select_steps(only: list[str] | None = None, start: str | None = None) -> list[Step]:
    """The steps to run, in pipeline order: ``only`` these, or all ``start``-ing at one (names as in
    ``STEP_NAMES``; comma lists accepted)."""
    wanted = [n.strip() for item in only or [] for n in item.split(",") if n.strip()]
    unknown = [n for n in [*wanted, *([start] if start else [])] if n not in STEP_NAMES]
    if unknown:
        raise PaylakeError(f"unknown pipeline step(s) {', '.join(unknown)}: choose from {', '.join(STEP_NAMES)}")
    if wanted and start:
        raise PaylakeError("choose --only or --from, not both")
    if wanted:
        return [s for s in STEPS if s.name in wanted]
    if start:
        return list(STEPS[STEP_NAMES.index(start):])
    return list(STEPS)


def check_capacity(steps: list[Step], cpus: float, memory_gb: float) -> None:
    """Refuse, before anything runs, a step the cluster cannot hold."""
    short = [f"{s.name} needs {s.num_cpus:g} CPU(s) and {s.memory_gb:g} GB" for s in steps
             if s.num_cpus > cpus or s.memory_gb > memory_gb]
    if short:
        raise PaylakeError(f"the Ray cluster has {cpus:g} CPU(s) and {memory_gb:.1f} GB of memory: "
                           + "; ".join(short) + " (add workers, or see cluster/CAPACITY.md)")


def _cluster_capacity(settings: Settings) -> tuple[float, float]:
    import ray

    from paylake.raycluster import init_ray, quiet_output

    init_ray(settings, log_to_driver=False)  # the workers' lines stay in their log files: the run prints its steps
    quiet_output()
    resources = ray.cluster_resources()
    return float(resources.get("CPU", 0)), float(resources.get("memory", 0)) / 1024**3


def run_pipeline(settings: Settings, *, scale: str = "demo", only: list[str] | None = None,
                 start: str | None = None, resume: str | None = None, progress=print,
                 capacity: tuple[float, float] | None = None) -> PipelineRun:
    """Run the selected steps (all by default), recording each in ``runs/pipeline_step``. ``resume``: the id
    of an earlier run, started again at its first step not done (its selection kept). ``capacity``: (CPUs, GB)
    to check the steps against; default the Ray cluster's."""
    from paylake import runs
    from paylake.settings import find_stack_file

    if resume:
        if only or start:
            raise PaylakeError("--resume continues a run with its own steps: drop --only / --from")
        records = runs.require_run(settings, resume)
        plan = records[0].plan.split(",") if records[0].plan else list(STEP_NAMES)
        states = runs.latest_by_step(records)
        selected = [s for s in STEPS if s.name in plan]
        pending = [s for s in selected if s.name not in states or states[s.name].state not in runs.FINISHED]
        if not pending:
            progress(f"[pipeline] run {resume}: every step is done; nothing to resume")
            return PipelineRun(resume)
        run_id, attempts = resume, {s.step: s.attempt for s in records}
        progress(f"[pipeline] resuming run {run_id} at {pending[0].name} "
                 f"({len(selected) - len(pending)} of {len(selected)} step(s) done)")
    else:
        selected = select_steps(only, start)
        pending, run_id, attempts = selected, runs.new_run_id(), {}
        plan = [s.name for s in selected]
        progress(f"[pipeline] run {run_id}: {', '.join(plan)}")
    check_capacity(pending, *(capacity or _cluster_capacity(settings)))
    log = runs.RunLog(settings, run_id, plan)
    local = find_stack_file() is not None
    ctx = StepContext(settings, scale, progress)
    out = PipelineRun(run_id)
    for position, step in ((STEP_NAMES.index(s.name) + 1, s) for s in pending):
        attempt = attempts.get(step.name, 0) + 1
        started = dt.datetime.now(dt.UTC)
        record = dict(run_id=run_id, step=step.name, position=position, attempt=attempt, optional=step.optional,
                      started_at=started)
        if step.local_only and not local:
            log.write(runs.StepRecord(**record, state="skipped", ended_at=started, seconds=0.0, rows=None,
                                      summary="not a local stack: nothing generated", error=None))
            out.results.append(StepResult(step.title, "skipped: not a local stack", 0.0, step.name, "skipped"))
            continue
        progress(f"[pipeline] {step.title} ...")
        log.write(runs.StepRecord(**record, state="running", ended_at=None, seconds=None, rows=None, summary=None,
                                  error=None))
        begin = time.perf_counter()
        try:
            outcome = step.action(ctx)
        except BaseException as exc:  # noqa: BLE001 - recorded, then raised (or, optional, reported)
            seconds = time.perf_counter() - begin
            metrics.step_seconds(step.name, "failed", seconds)
            log.write(runs.StepRecord(**record, state="failed", ended_at=dt.datetime.now(dt.UTC), seconds=seconds,
                                      rows=None, summary=None, error=f"{type(exc).__name__}: {exc}"))
            if step.optional and isinstance(exc, Exception):
                progress(f"[pipeline] {step.title}: failed (optional, the run goes on): {type(exc).__name__}: "
                         f"{runs.scrub(str(exc), settings)}")
                out.results.append(StepResult(step.title, f"failed: {type(exc).__name__}", seconds, step.name,
                                              "failed"))
                continue
            if isinstance(exc, Exception):
                raise PipelineFailed(run_id, step, exc) from exc
            raise
        seconds = time.perf_counter() - begin
        state = "skipped" if outcome.skipped else "done"
        metrics.step_seconds(step.name, state, seconds)
        log.write(runs.StepRecord(**record, state=state, ended_at=dt.datetime.now(dt.UTC), seconds=seconds,
                                  rows=outcome.rows, summary=outcome.summary, error=None))
        out.results.append(StepResult(step.title, outcome.summary, seconds, step.name, state, outcome.rows))
        progress(f"[pipeline] {step.title}: {outcome.summary}")
    return out
