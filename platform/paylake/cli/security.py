"""``paylake monitor logs``: security monitoring of the sources."""

from __future__ import annotations

from typing import Annotated

import typer

from paylake import contracts
from paylake.cli.base import app, expected_failures, needs
from paylake.report import console

monitor_app = typer.Typer(help="Security monitoring of the sources.", no_args_is_help=True)
app.add_typer(monitor_app, name="monitor")


@monitor_app.command("logs")
@expected_failures
@needs('postgres', 's3', 'snowflake', 'mlflow', 'ray')
def monitor_logs_command(
    export_rows: Annotated[int, typer.Option(help="Rule: a whole-table read or COPY of a table larger than this "
                                             "is a mass export.")] = 1_000,
    warehouse: Annotated[bool, typer.Option(help="Also load the alerts into Snowflake.")] = True,
    review_days: Annotated[float, typer.Option(help="A new log key stops alerting once seen for this many days "
                                               "...")] = 7.0,
    review_sessions: Annotated[int, typer.Option(help="... in at least this many sessions, none of which made a "
                                                 "rule fire.")] = 5,
) -> None:
    """Score the database sessions that arrived since the last run; alerts as JSON lines, to the lake and Snowflake."""
    import datetime as dt
    import json

    from paylake.security.alerts import MonitorOptions, monitor_logs
    from paylake.security.key_review import ReviewOptions
    from paylake.settings import load_settings

    settings = load_settings()
    with console.status("monitoring") as status:
        review = ReviewOptions(dt.timedelta(days=review_days), review_sessions)
        report = monitor_logs(settings, MonitorOptions(export_rows=export_rows, load_warehouse=warehouse,
                                                       review=review), progress=lambda m: status.update(m))
    for alert in report.alerts:
        print(json.dumps({**alert, "Evidence": json.loads(alert["Evidence"])}, default=str, sort_keys=True))
    skipped = ", ".join(f"{v} {k}" for k, v in report.skipped.items()) or "none"
    sources = ", ".join(f"{v} by {k}" for k, v in sorted(report.by_source.items())) or "none"
    console.print(f"{report.new_sessions} new session(s) scored with paylake-logseq v{report.model_version}: "
                  f"{len(report.alerts)} alert(s) ({sources}); skipped: {skipped}; alerts in {contracts.SECURITY_ALERTS.uri(settings)}"
                  + (f" and Snowflake SECURITY_Alert ({report.warehouse_rows} rows)"
                     if report.warehouse_rows is not None else "") + f"; new keys under review "
                  f"{report.keys_in_review}, admitted {len(report.keys_admitted)}; {report.seconds:.1f} s",
                  highlight=False)
