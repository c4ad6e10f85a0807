"""``paylake db migrate``, ``seed``, ``extract``, ``cdc``, ``stream``, ``build-star``, ``load``, ``query``, ``features``, ``pipeline``: the data."""

from __future__ import annotations

from typing import Annotated

import typer

from paylake import contracts
from paylake.cli.base import app, db_app, expected_failures, needs
from paylake.errors import PaylakeError
from paylake.report import console, summary_table


@app.command("pipeline")
@expected_failures
@needs('postgres', 'mongo', 'online', 's3', 'snowflake', 'mlflow', 'ray')
def pipeline(
    scale: Annotated[str, typer.Option(help="Seed preset when the sources are empty: tiny, demo, bench.")] = "demo",
    only: Annotated[list[str] | None, typer.Option("--only", help="Only these steps (repeatable or comma "
                    "list): migrate, seed, extract, cdc, star, load, features, train-fraud, train-logs, drift, "
                    "promote, monitor-logs, queries, smoke.")] = None,
    start: Annotated[str | None, typer.Option("--from", help="Every step from this one on.")] = None,
    resume: Annotated[str | None, typer.Option("--resume", help="A run's id ('paylake runs'): start it again "
                      "at its first step not done.")] = None,
) -> None:
    """Run the whole DAG, or some of its steps (what 'make demo' submits as a Ray job); each run is recorded
    ('paylake runs')."""
    from paylake.pipeline import run_pipeline
    from paylake.settings import load_settings

    run = run_pipeline(load_settings(), scale=scale, only=only, start=start, resume=resume,
                       progress=lambda m: console.print(m, highlight=False, markup=False))
    console.print(summary_table(f"pipeline run {run.run_id}", ["step", "state", "outcome", "seconds"],
                                [(r.name, r.state, r.outcome, r.seconds) for r in run.results]))


@app.command("runs")
@expected_failures
@needs('s3')
def runs_command(
    run_id: Annotated[str | None, typer.Argument(help="One run: its steps.")] = None,
    limit: Annotated[int, typer.Option(help="How many runs to list, newest first.")] = 10,
) -> None:
    """The pipeline's runs (runs/pipeline_step in the lake), or one run's steps."""
    from paylake import runs
    from paylake.settings import load_settings

    settings = load_settings()
    if run_id is None:
        summaries = runs.summarize(runs.read_records(settings))[:limit]
        if not summaries:
            console.print("no pipeline run recorded yet ('paylake pipeline' records one)")
            return
        console.print(summary_table("pipeline runs", ["run", "started", "state", "steps done", "failed"],
                                    [(r.run_id, f"{r.started_at:%Y-%m-%d %H:%M:%S}", r.state,
                                      f"{r.done}/{r.steps}", ", ".join(r.failed) or "-") for r in summaries]))
        return
    records = runs.require_run(settings, run_id)
    steps = sorted(runs.latest_by_step(records).values(), key=lambda r: r.position)
    console.print(summary_table(f"pipeline run {run_id}", ["step", "attempt", "state", "seconds", "rows",
                                                           "summary or error"],
                                [(r.step, r.attempt, r.state, "-" if r.seconds is None else f"{r.seconds:.1f}",
                                  "-" if r.rows is None else f"{r.rows:,}", r.error or r.summary or "-")
                                 for r in steps]))


@app.command("extract")
@expected_failures
@needs('postgres', 'mongo', 's3', 'ray')
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


@db_app.command("migrate")
@expected_failures
@needs('postgres')
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
@needs('postgres', 'mongo')
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
@needs('postgres', 's3')
def cdc_command(
    follow: Annotated[bool, typer.Option("--follow", help="Keep draining (Ctrl-C stops after the batch in "
                                         "flight).")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between drains with --follow when nothing is "
                                            "pending.")] = 5.0,
    max_changes: Annotated[int, typer.Option(help="Changes read per micro-batch (whole transactions).")] = 50_000,
    max_seconds: Annotated[float | None, typer.Option(help="Without --follow: stop (exit 1) after this long if the "
                                                      "slot has not caught up yet (default: drain to the end).")
                           ] = None,
    slot: Annotated[str | None, typer.Option(help="Logical replication slot (default paylake_cdc_<database>; "
                                             "'paylake extract' creates it; names are cluster-wide).")] = None,
    online: Annotated[bool, typer.Option("--online/--no-online", help="Feed the online feature store too "
                                         "(payments, fraud confirmations, attributes; idempotent).")] = True,
) -> None:
    """Apply PostgreSQL changes (logical decoding) to the bronze tables, exactly once in effect.

    Without --follow it drains micro-batch after micro-batch until the slot has caught up with the WAL position
    of its start, or exits non-zero saying why it stopped early."""
    from paylake.cdc.decoding import int_to_lsn
    from paylake.cdc.stream import catch_up, lag
    from paylake.cdc.stream import follow as follow_slot
    from paylake.settings import load_settings
    from paylake.stores.replication import default_slot, ensure_slot

    settings = load_settings()
    slot = slot or default_slot(settings)
    if ensure_slot(settings, slot).created:
        console.print(f"created replication slot {slot}: changes from now on are captured; run 'paylake extract "
                      "--full' for what came before", highlight=False)
    sink = None
    if online:
        from paylake.ml.fraud.online_feed import online_sink

        sink = online_sink(settings, progress=lambda m: console.print(f"[yellow]{m}[/]", highlight=False))

    def show(batch) -> None:
        if batch.transactions:
            console.print(f"LSN {int_to_lsn(batch.batch)}: {batch.transactions:,} transaction(s), {batch.changes:,} "
                          f"change(s) in {batch.seconds:.2f} s", highlight=False)

    if follow:
        report = follow_slot(settings, slot=slot, interval_s=interval, max_changes=max_changes, on_batch=show,
                             sink=sink)
    else:
        report = catch_up(settings, slot=slot, max_changes=max_changes, max_seconds=max_seconds, on_batch=show,
                          sink=sink)
    bytes_behind, seconds_behind = lag(settings, slot)
    rows = [(t.table, t.changes, t.inserted, t.updated, t.deleted, t.quarantined, t.truncates,
             "replayed" if t.replayed else "applied") for t in sorted(report.tables.values(), key=lambda t: t.table)]
    console.print(summary_table(f"cdc {slot} → {settings.lake_root}/bronze",
                                ["table", "changes", "inserted", "updated", "deleted", "quarantined", "truncated",
                                 "outcome"], rows))
    console.print(f"{report.drains:,} micro-batch(es), {report.transactions:,} transaction(s), {report.changes:,} "
                  f"change(s) ({report.skipped:,} of "
                  f"tables outside the publication) in {report.seconds:.1f} s; slot at {report.advanced_to or '-'}; "
                  f"lag {bytes_behind:,} bytes, {seconds_behind:.1f} s", highlight=False)
    if sink is not None:
        fed = sink.report
        console.print(f"online store: {fed.payments:,} new payment(s), {fed.confirmations:,} confirmation(s), "
                      f"{fed.dimensions:,} attribute update(s)", highlight=False)
    truncated = [t.table for t in report.tables.values() if t.truncates]
    if truncated:
        console.print(f"[yellow]truncated at the source, not applied:[/] {', '.join(truncated)}: run 'paylake "
                      f"extract --full' for them", highlight=False)


@app.command("stream")
@expected_failures
@needs('postgres', 'online', 's3', 'snowflake', 'mlflow')
def stream_command(
    seconds: Annotated[float | None, typer.Option(help="Stop after this long (default: until Ctrl-C).")] = None,
    interval: Annotated[float, typer.Option(help="Seconds between drains when nothing is pending.")] = 0.2,
    max_changes: Annotated[int, typer.Option(help="Changes read per micro-batch (whole transactions).")] = 5_000,
    model: Annotated[str, typer.Option(help="Registered fraud model.")] = "paylake-fraud",
    alias: Annotated[str, typer.Option(help="Its alias to score with (looked up every 30 s).")] = "champion",
) -> None:
    """The real-time fraud path: each committed payment to bronze, the online store, the champion's score and
    Snowflake's REALTIME_FraudScore (alerts in REALTIME_FraudAlert), exactly once across a kill -9."""
    from paylake.cdc.decoding import int_to_lsn
    from paylake.realtime import stream
    from paylake.settings import load_settings

    settings = load_settings()

    def show(batch, report) -> None:
        if batch.transactions:
            console.print(f"LSN {int_to_lsn(batch.batch)}: {batch.changes:,} change(s) in {batch.seconds:.2f} s; "
                          f"{report.payments_scored:,} payment(s) scored, {report.alerts:,} alert(s) so far",
                          highlight=False)

    console.print(f"streaming {settings.lake_root}/bronze, the online store and Snowflake's REALTIME_FraudScore "
                  "(Ctrl-C stops after the micro-batch in flight)", highlight=False)
    report = stream(settings, interval_s=interval, stop_after_s=seconds, max_changes=max_changes, model=model,
                    alias=alias, on_batch=show)
    console.print(f"{report.batches:,} micro-batch(es), {report.payments_scored:,} payment(s) scored, "
                  f"{report.alerts:,} alert(s)", highlight=False)


@app.command("query")
@expected_failures
@needs('snowflake')
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
@needs('s3', 'ray')
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
@needs('s3', 'online', 'ray')
def features_command(
    publish: Annotated[bool, typer.Option("--publish/--no-publish", help="Also publish the entities' state to the "
                                          "online store (Redis tiles; built aside, swapped, later events kept)."
                                          )] = True,
) -> None:
    """Silver → gold/features/fraud: point-in-time fraud features of every transaction (Ray tasks, DuckDB)."""
    from paylake.ml.fraud.feature_build import build_features
    from paylake.ml.fraud.online import RedisOnlineStore, publish_state
    from paylake.settings import load_settings

    settings = load_settings()
    with console.status("computing the fraud features"):
        report = build_features(settings)
    console.print(summary_table(f"features → {contracts.FRAUD_FEATURES.uri(settings)}", ["rows", "version", "state", "seconds",
                                                                          "rows/s"],
                                [(report.rows if report.rows >= 0 else "-", report.version, report.state,
                                  report.seconds, report.rows / report.seconds if report.rows > 0 else "-")]))
    if publish:
        with console.status("publishing the online store"):
            as_of = publish_state(settings, RedisOnlineStore(settings))
        console.print(f"online store published as of {as_of.isoformat()}", highlight=False)


@app.command("load")
@expected_failures
@needs('s3', 'snowflake')
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
